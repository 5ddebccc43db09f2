//! TLS over TCP with rustls: the `tls://` scheme on both sides.
//!
//! * Listening ([`ServerTls`]): the certificate chain and key come from `--cert`/`--key`
//!   (PEM), or a fresh self-signed certificate is made at start for the listen host,
//!   `localhost`, `127.0.0.1` and `::1`; either way its SHA-256 fingerprint is shown so a
//!   client can check it. The handshake runs in the connection's own task, under a
//!   timeout ([`ServerTls::accept`]), never in the accept loop.
//! * Connecting ([`ClientTls`]): the server's certificate is checked against the system's
//!   trusted roots (loaded once through `rustls-native-certs`) or against `--ca FILE`; SNI
//!   carries the host name (an IP literal is checked against the certificate's IP
//!   addresses and sends no SNI, as RFC 6066 says). `--insecure` skips the check and says
//!   so loudly.
//!
//! Every handshake or certificate failure becomes one sentence ([`explain`]): expired,
//! wrong name, unknown issuer, not TLS at all… with what to do about it, and exit code 7.
//!
//! The crypto provider is rustls' `ring` back end, passed explicitly to every config, so
//! nothing depends on a process-wide default being installed.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig};
use tokio::net::TcpStream;
use tokio_rustls::{TlsAcceptor, TlsConnector};

use super::PeerAddr;
use super::stream::Stream;
use crate::endpoint::{Endpoint, Host, HostPort};
use crate::error::{Error, Result};

/// How long a server waits for a client to complete its TLS handshake: long enough for a
/// slow network, short enough that a client that connects and says nothing frees its
/// task (its only cost, since the handshake never blocks the accept loop).
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The crypto back end every config uses.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The SHA-256 digest of a certificate (DER), the value people compare by eye.
#[derive(Clone, PartialEq, Eq)]
pub struct Fingerprint([u8; 32]);

impl Fingerprint {
    /// The fingerprint of a DER-encoded certificate.
    pub fn of(cert: &CertificateDer<'_>) -> Fingerprint {
        let digest = ring::digest::digest(&ring::digest::SHA256, cert.as_ref());
        let mut bytes = [0u8; 32];
        bytes.copy_from_slice(digest.as_ref());
        Fingerprint(bytes)
    }
}

/// `AB:CD:…`, uppercase with colons: the form `openssl x509 -fingerprint -sha256` prints,
/// so the two can be compared directly.
impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, byte) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(":")?;
            }
            write!(f, "{byte:02X}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Where a server's certificate came from: the user's files or made at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertSource {
    /// `--cert FILE` / `--key FILE`.
    Files {
        /// The certificate chain file.
        cert: PathBuf,
    },
    /// Generated at start; valid for these names and addresses.
    SelfSigned {
        /// The subject alternative names it carries.
        names: Vec<String>,
    },
}

/// The listening side of TLS: a ready acceptor and the certificate it presents.
#[derive(Clone)]
pub struct ServerTls {
    /// Shared by every connection; cheap to clone.
    acceptor: TlsAcceptor,
    /// SHA-256 of the leaf certificate, shown at start.
    fingerprint: Fingerprint,
    /// Files or self-signed, for the start-up message.
    source: CertSource,
    /// The leaf certificate (DER), so callers can pin or inspect it.
    leaf: CertificateDer<'static>,
}

impl fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerTls")
            .field("fingerprint", &self.fingerprint)
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

impl ServerTls {
    /// Loads `--cert`/`--key` PEM files.
    ///
    /// # Errors
    /// [`Error::TlsSetup`] naming the file and what is wrong with it (unreadable, no
    /// certificate or key inside, key not matching the certificate).
    pub fn from_files(cert: &Path, key: &Path) -> Result<ServerTls> {
        let chain = read_certificates(cert, "--cert")?;
        let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| Error::TlsSetup {
            what: format!("--key {}", key.display()),
            reason: format!(
                "{}; it must be a PEM private key (BEGIN PRIVATE KEY, BEGIN EC/RSA PRIVATE KEY)",
                pem_error(&e)
            ),
        })?;
        let leaf = chain[0].clone();
        let fingerprint = Fingerprint::of(&leaf);
        let config = server_config(chain, key_der).map_err(|e| Error::TlsSetup {
            what: format!("--cert {} with --key {}", cert.display(), key.display()),
            reason: match e {
                rustls::Error::InconsistentKeys(_) => {
                    "the key does not belong to the certificate; pass the key it was issued for"
                        .into()
                }
                other => other.to_string(),
            },
        })?;
        Ok(ServerTls {
            acceptor: TlsAcceptor::from(Arc::new(config)),
            fingerprint,
            source: CertSource::Files {
                cert: cert.to_path_buf(),
            },
            leaf,
        })
    }

    /// Makes a self-signed certificate for the listen host, `localhost`, `127.0.0.1` and
    /// `::1`, valid from yesterday for 30 days (a fresh one at every start).
    ///
    /// # Errors
    /// [`Error::TlsSetup`] if key generation fails (it should not).
    pub fn self_signed(listen: &HostPort) -> Result<ServerTls> {
        let names = self_signed_names(listen);
        let fail = |reason: String| Error::TlsSetup {
            what: "a self-signed certificate".into(),
            reason,
        };
        let key_pair = rcgen::KeyPair::generate().map_err(|e| fail(e.to_string()))?;
        let mut params =
            rcgen::CertificateParams::new(names.clone()).map_err(|e| fail(e.to_string()))?;
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "sockit self-signed");
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::days(1);
        params.not_after = now + time::Duration::days(30);
        let cert = params
            .self_signed(&key_pair)
            .map_err(|e| fail(e.to_string()))?;
        let leaf = cert.der().clone();
        let key = PrivateKeyDer::Pkcs8(key_pair.serialize_der().into());
        let config = server_config(vec![leaf.clone()], key).map_err(|e| fail(e.to_string()))?;
        Ok(ServerTls {
            acceptor: TlsAcceptor::from(Arc::new(config)),
            fingerprint: Fingerprint::of(&leaf),
            source: CertSource::SelfSigned { names },
            leaf,
        })
    }

    /// `--cert`/`--key` when given, otherwise a self-signed certificate for `listen`.
    ///
    /// # Errors
    /// As [`ServerTls::from_files`] and [`ServerTls::self_signed`].
    pub fn load(files: Option<(&Path, &Path)>, listen: &HostPort) -> Result<ServerTls> {
        match files {
            Some((cert, key)) => ServerTls::from_files(cert, key),
            None => ServerTls::self_signed(listen),
        }
    }

    /// SHA-256 of the certificate presented to clients.
    pub fn fingerprint(&self) -> &Fingerprint {
        &self.fingerprint
    }

    /// Where the certificate came from.
    pub fn source(&self) -> &CertSource {
        &self.source
    }

    /// The leaf certificate presented to clients (DER).
    pub fn certificate(&self) -> &CertificateDer<'static> {
        &self.leaf
    }

    /// The one-line start-up notice: which certificate, and its fingerprint.
    pub fn notice(&self) -> String {
        match &self.source {
            CertSource::Files { cert } => format!(
                "tls: certificate {}; SHA-256 fingerprint {}",
                cert.display(),
                self.fingerprint
            ),
            CertSource::SelfSigned { names } => format!(
                "tls: self-signed certificate for {}; SHA-256 fingerprint {} (clients need --insecure, or check this fingerprint)",
                names.join(", "),
                self.fingerprint
            ),
        }
    }

    /// Runs the server side of the handshake on an accepted TCP connection, within
    /// `timeout`.
    ///
    /// # Errors
    /// [`Error::Tls`] with the cause in words, or [`Error::Timeout`].
    pub async fn accept(
        &self,
        stream: Stream,
        peer: &PeerAddr,
        timeout: Duration,
    ) -> Result<Stream> {
        let Stream::Tcp(tcp) = stream else {
            return Err(Error::Usage(
                "TLS is only offered over TCP (tls://HOST:PORT)".into(),
            ));
        };
        let handshake = self.acceptor.accept(tcp);
        match tokio::time::timeout(timeout, handshake).await {
            Ok(Ok(tls)) => Ok(Stream::Tls(Box::new(tls.into()))),
            Ok(Err(e)) => Err(Error::Tls {
                peer: peer.to_string(),
                reason: explain(&e, Side::Server),
            }),
            Err(_) => Err(Error::Timeout {
                doing: format!("waiting for {peer} to complete the TLS handshake"),
                after: timeout,
            }),
        }
    }
}

/// The names a self-signed certificate is valid for: the listen host (unless it is a
/// wildcard address), then the loopback names.
fn self_signed_names(listen: &HostPort) -> Vec<String> {
    let mut names = Vec::new();
    match &listen.host {
        Host::Ip(ip) if !ip.is_unspecified() => names.push(ip.to_string()),
        Host::Name(name) => names.push(name.clone()),
        Host::Ip(_) => {}
    }
    for name in ["localhost", "127.0.0.1", "::1"] {
        if !names.iter().any(|n| n == name) {
            names.push(name.to_string());
        }
    }
    names
}

/// A server config with our provider, safe protocol versions, and no client certificates.
fn server_config(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<ServerConfig, rustls::Error> {
    ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)
}

/// Every certificate in a PEM file, or an error naming the flag and the file.
fn read_certificates(path: &Path, flag: &str) -> Result<Vec<CertificateDer<'static>>> {
    let fail = |reason: String| Error::TlsSetup {
        what: format!("{flag} {}", path.display()),
        reason,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| fail(pem_error(&e)))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| fail(pem_error(&e)))?;
    if certs.is_empty() {
        return Err(fail(
            "no certificate in it; it must hold PEM blocks starting with -----BEGIN CERTIFICATE-----"
                .into(),
        ));
    }
    Ok(certs)
}

/// A PEM reading error in words (the file error's own text for I/O problems).
fn pem_error(e: &rustls::pki_types::pem::Error) -> String {
    use rustls::pki_types::pem::Error as PemError;
    match e {
        PemError::Io(io) => io.to_string(),
        PemError::NoItemsFound => "no PEM item of the expected kind in it".into(),
        other => format!("it is not valid PEM ({other:?})"),
    }
}

/// What a client checks the server's certificate against (and how its rejections are
/// worded: each names the remedy that fits).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trust {
    /// The system's trusted roots (`/etc/ssl/certs`, or `SSL_CERT_FILE`/`SSL_CERT_DIR`).
    System,
    /// Only the CA certificates in this PEM file (`--ca FILE`).
    CaFile(PathBuf),
    /// No check at all (`--insecure`): encryption without authentication.
    Insecure,
}

/// The connecting side of TLS: a ready connector (roots loaded once) and the name to
/// verify, shared by every connection a command makes.
#[derive(Clone)]
pub struct ClientTls {
    /// Shared by every connection; cheap to clone.
    connector: TlsConnector,
    /// What the certificate is checked against, for messages.
    trust: Trust,
    /// `--server-name`: the name sent as SNI and checked in the certificate, when it is
    /// not the endpoint's host (connecting by IP to a server known by name).
    server_name: Option<String>,
}

impl fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientTls")
            .field("trust", &self.trust)
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

impl ClientTls {
    /// Builds the connector: loads the roots (system or `--ca`) or the no-check verifier.
    ///
    /// `--insecure` prints its warning here, once per command.
    ///
    /// # Errors
    /// [`Error::TlsSetup`] when the CA file is unreadable or empty, or the system has no
    /// trusted roots; [`Error::Usage`] for a malformed `--server-name`.
    pub fn new(trust: Trust, server_name: Option<String>) -> Result<ClientTls> {
        if let Some(name) = &server_name {
            ServerName::try_from(name.as_str()).map_err(|_| {
                Error::Usage(format!(
                    "--server-name {name:?} is not a host name or IP address"
                ))
            })?;
        }
        let builder = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::TlsSetup {
                what: "the TLS client".into(),
                reason: e.to_string(),
            })?;
        let config = match &trust {
            Trust::System => builder
                .with_root_certificates(system_roots()?)
                .with_no_client_auth(),
            Trust::CaFile(path) => {
                let mut roots = RootCertStore::empty();
                let (added, _ignored) =
                    roots.add_parsable_certificates(read_certificates(path, "--ca")?);
                if added == 0 {
                    return Err(Error::TlsSetup {
                        what: format!("--ca {}", path.display()),
                        reason: "none of its certificates can be used as a trust anchor".into(),
                    });
                }
                builder.with_root_certificates(roots).with_no_client_auth()
            }
            Trust::Insecure => {
                tracing::warn!(
                    "--insecure: the server's certificate is NOT checked; anyone on the path can read and change this traffic"
                );
                builder
                    .dangerous()
                    .with_custom_certificate_verifier(Arc::new(NoVerification(provider())))
                    .with_no_client_auth()
            }
        };
        Ok(ClientTls {
            connector: TlsConnector::from(Arc::new(config)),
            trust,
            server_name,
        })
    }

    /// The client for `tls://` with the system roots: what a plain `tls://` target gets.
    ///
    /// # Errors
    /// As [`ClientTls::new`].
    pub fn system() -> Result<ClientTls> {
        ClientTls::new(Trust::System, None)
    }

    /// What certificates are checked against.
    pub fn trust(&self) -> &Trust {
        &self.trust
    }

    /// Runs the client side of the handshake on a connected TCP stream.
    ///
    /// The caller bounds the time (the connect timeout covers TCP and TLS together).
    ///
    /// # Errors
    /// [`Error::Tls`] with the cause in words (wrong name, unknown issuer, expired…).
    pub async fn handshake(
        &self,
        tcp: TcpStream,
        endpoint: &Endpoint,
        hp: &HostPort,
    ) -> Result<Stream> {
        let name = self.server_name_for(hp)?;
        let shown = name.to_str().into_owned();
        match self.connector.connect(name, tcp).await {
            Ok(tls) => {
                let stream = tokio_rustls::TlsStream::from(tls);
                if let Some(leaf) = stream
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|c| c.first())
                {
                    let fingerprint = Fingerprint::of(leaf);
                    match self.trust {
                        Trust::Insecure => tracing::info!(
                            "{endpoint}: certificate SHA-256 fingerprint {fingerprint} (NOT verified: --insecure)"
                        ),
                        _ => tracing::debug!(
                            "{endpoint}: certificate for {shown} verified, SHA-256 fingerprint {fingerprint}"
                        ),
                    }
                }
                Ok(Stream::Tls(Box::new(stream)))
            }
            Err(e) => Err(Error::Tls {
                peer: endpoint.to_string(),
                reason: explain(&e, Side::Client(&self.trust)),
            }),
        }
    }

    /// The name to send as SNI and verify: `--server-name`, else the endpoint's host.
    fn server_name_for(&self, hp: &HostPort) -> Result<ServerName<'static>> {
        let text = match (&self.server_name, &hp.host) {
            (Some(name), _) => name.clone(),
            (None, Host::Name(name)) => name.clone(),
            (None, Host::Ip(ip)) => return Ok(ServerName::IpAddress((*ip).into())),
        };
        ServerName::try_from(text.clone())
            .map_err(|_| Error::Usage(format!("{text:?} cannot be used as a TLS server name")))
    }
}

/// The system's trusted roots, or a clear error when there are none.
fn system_roots() -> Result<RootCertStore> {
    let loaded = rustls_native_certs::load_native_certs();
    for e in &loaded.errors {
        tracing::debug!("reading the system's trusted certificates: {e}");
    }
    let mut roots = RootCertStore::empty();
    roots.add_parsable_certificates(loaded.certs);
    if roots.is_empty() {
        return Err(Error::TlsSetup {
            what: "the system's trusted certificates".into(),
            reason: "none found; install the ca-certificates package, set SSL_CERT_FILE, or pass --ca FILE".into(),
        });
    }
    Ok(roots)
}

/// `--insecure`: accepts any certificate, but still checks the handshake signatures, so
/// the session keys really belong to whoever presented the certificate.
#[derive(Debug)]
struct NoVerification(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Which end of the handshake we are, for wording the errors.
#[derive(Debug, Clone, Copy)]
pub enum Side<'a> {
    /// We accepted; the peer is a client.
    Server,
    /// We connected and checked the server's certificate against this.
    Client(&'a Trust),
}

/// One sentence for a failed handshake: the cause and, where there is one, the remedy.
pub fn explain(e: &io::Error, side: Side<'_>) -> String {
    if let Some(tls) = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    {
        return explain_tls(tls, side);
    }
    match (e.kind(), side) {
        (io::ErrorKind::UnexpectedEof, Side::Client(_)) => {
            "the server closed the connection during the handshake; is it a TLS server? (use tcp:// for plain TCP)".into()
        }
        (io::ErrorKind::UnexpectedEof, Side::Server) => {
            "the client closed the connection during the handshake (it may have rejected our certificate)".into()
        }
        (io::ErrorKind::ConnectionReset, _) => "the connection was reset during the handshake".into(),
        _ => e.to_string(),
    }
}

/// The rustls error in words.
fn explain_tls(e: &rustls::Error, side: Side<'_>) -> String {
    use rustls::Error as E;
    match e {
        E::InvalidCertificate(cert) => explain_certificate(cert, side),
        E::InvalidMessage(_)
        | E::InappropriateMessage { .. }
        | E::InappropriateHandshakeMessage { .. } => match side {
            Side::Client(_) => {
                "the server does not speak TLS (is it a plain TCP server? use tcp:// for it)".into()
            }
            Side::Server => {
                "the client does not speak TLS (a plain TCP client on a tls:// port?)".into()
            }
        },
        E::AlertReceived(alert) => match side {
            Side::Server => format!(
                "the client refused the handshake ({}); a self-signed certificate needs --insecure or --ca on the client",
                alert_words(*alert)
            ),
            Side::Client(_) => {
                format!("the server refused the handshake ({})", alert_words(*alert))
            }
        },
        E::PeerIncompatible(why) => {
            format!("no TLS version or cipher in common with the peer ({why:?})")
        }
        E::NoCertificatesPresented => "the peer presented no certificate".into(),
        other => other.to_string(),
    }
}

/// A certificate rejection in words, with the fix.
fn explain_certificate(e: &CertificateError, side: Side<'_>) -> String {
    let skip = match side {
        Side::Client(Trust::CaFile(path)) => format!(
            "it is not signed by a CA in --ca {}; pass the CA that issued it",
            path.display()
        ),
        Side::Client(Trust::System) => {
            "it is not signed by a CA this system trusts (self-signed?); pass --ca FILE with its CA, or --insecure to skip the check".into()
        }
        Side::Client(Trust::Insecure) | Side::Server => "it is not signed by a trusted CA".into(),
    };
    match e {
        CertificateError::UnknownIssuer => format!("unknown issuer: {skip}"),
        CertificateError::Expired => "the certificate has expired".into(),
        CertificateError::ExpiredContext { not_after, .. } => format!(
            "the certificate expired on {}",
            format_unix(*not_after)
        ),
        CertificateError::NotValidYet => "the certificate is not valid yet (check the clocks)".into(),
        CertificateError::NotValidYetContext { not_before, .. } => format!(
            "the certificate is not valid before {} (check the clocks)",
            format_unix(*not_before)
        ),
        CertificateError::NotValidForName => {
            "wrong name: the certificate is not valid for this host; connect by a name it lists or pass --server-name".into()
        }
        CertificateError::NotValidForNameContext { expected, presented } => format!(
            "wrong name: the certificate is for {} but we asked for {}; connect by a name it lists or pass --server-name",
            if presented.is_empty() { "no name at all".into() } else { presented.join(", ") },
            expected.to_str()
        ),
        CertificateError::BadSignature => "the certificate's signature is invalid".into(),
        CertificateError::Revoked => "the certificate has been revoked".into(),
        CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. } => {
            "the certificate is not meant for TLS servers (extended key usage)".into()
        }
        CertificateError::BadEncoding => "the certificate is malformed".into(),
        other => format!("certificate rejected: {other}"),
    }
}

/// A TLS alert, as its lowercase protocol name (`bad_certificate`, `unknown_ca`).
fn alert_words(alert: rustls::AlertDescription) -> String {
    let debug = format!("{alert:?}");
    let mut words = String::new();
    let mut previous_lower = false;
    for c in debug.chars() {
        if c.is_ascii_uppercase() && previous_lower {
            words.push('_');
        }
        previous_lower = c.is_ascii_lowercase() || c.is_ascii_digit();
        words.push(c.to_ascii_lowercase());
    }
    format!("{words} alert")
}

/// A UNIX time as an RFC 3339 date.
fn format_unix(time: UnixTime) -> String {
    let at = SystemTime::UNIX_EPOCH + Duration::from_secs(time.as_secs());
    humantime::format_rfc3339_seconds(at).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hp(text: &str) -> HostPort {
        match format!("tcp://{text}").parse::<Endpoint>() {
            Ok(Endpoint::Tcp(hp)) => hp,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn fingerprint_prints_like_openssl() {
        let fp = Fingerprint([0xab; 32]);
        let text = fp.to_string();
        assert_eq!(text.len(), 32 * 3 - 1);
        assert!(text.starts_with("AB:AB:"));
    }

    #[test]
    fn self_signed_names_skip_wildcards_and_keep_the_host() {
        assert_eq!(
            self_signed_names(&hp("0.0.0.0:1")),
            ["localhost", "127.0.0.1", "::1"]
        );
        assert_eq!(
            self_signed_names(&hp("example.test:1")),
            ["example.test", "localhost", "127.0.0.1", "::1"]
        );
        assert_eq!(
            self_signed_names(&hp("127.0.0.1:1")),
            ["127.0.0.1", "localhost", "::1"]
        );
    }

    #[test]
    fn self_signed_certificate_is_announced_with_its_fingerprint() -> Result<()> {
        let tls = ServerTls::self_signed(&hp("127.0.0.1:0"))?;
        assert_eq!(&Fingerprint::of(tls.certificate()), tls.fingerprint());
        assert!(tls.notice().contains(&tls.fingerprint().to_string()));
        Ok(())
    }

    #[test]
    fn certificate_errors_read_as_one_sentence_with_a_fix() {
        let system = Trust::System;
        let unknown = explain_certificate(&CertificateError::UnknownIssuer, Side::Client(&system));
        assert!(
            unknown.contains("unknown issuer") && unknown.contains("--ca"),
            "{unknown}"
        );
        let alert = explain_tls(
            &rustls::Error::AlertReceived(rustls::AlertDescription::BadCertificate),
            Side::Server,
        );
        assert!(alert.contains("bad_certificate alert"), "{alert}");
        assert_eq!(
            alert_words(rustls::AlertDescription::UnknownCA),
            "unknown_ca alert"
        );
        for text in [unknown, alert] {
            assert!(!text.contains('\n'));
        }
    }
}

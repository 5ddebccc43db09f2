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
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig};
use tokio::net::TcpStream;
use tokio_rustls::{TlsAcceptor, TlsConnector};

use super::PeerAddr;
pub use super::certs::{Fingerprint, FingerprintError};
use super::certs::{check_validity, provider, read_certificates, read_private_key};
use super::client_cert::{ClientAuth, ClientCertFiles, client_verifier};
use super::stream::Stream;
use super::tls_sessions::SessionStore;
use crate::endpoint::{Endpoint, Host, HostPort};
use crate::error::{Error, Result};
use crate::error::{alert_words, debug_words, explain_server_alert};

/// How long a server waits for a client to complete its TLS handshake: long enough for a
/// slow network, short enough that a client that connects and says nothing frees its
/// task (its only cost, since the handshake never blocks the accept loop).
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

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
    /// Whether clients are asked for certificates (`--client-ca`), for the start-up
    /// message.
    clients: ClientAuth,
}

impl fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerTls")
            .field("fingerprint", &self.fingerprint)
            .field("source", &self.source)
            .field("clients", &self.clients)
            .finish_non_exhaustive()
    }
}

impl ServerTls {
    /// Loads `--cert`/`--key` PEM files; `clients` says whether clients must present
    /// certificates of their own.
    ///
    /// # Errors
    /// [`Error::TlsSetup`] naming the file and what is wrong with it (unreadable, no
    /// certificate or key inside, key not matching the certificate, no CA in
    /// `--client-ca`).
    pub fn from_files(cert: &Path, key: &Path, clients: &ClientAuth) -> Result<ServerTls> {
        let chain = read_certificates(cert, "--cert")?;
        let key_der = read_private_key(key, "--key")?;
        let leaf = chain[0].clone();
        let fingerprint = Fingerprint::of(&leaf);
        let config = server_config(chain, key_der, clients)?.map_err(|e| Error::TlsSetup {
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
            clients: clients.clone(),
        })
    }

    /// Makes a self-signed certificate for the listen host, `localhost`, `127.0.0.1` and
    /// `::1`, valid from yesterday for 30 days (a fresh one at every start).
    ///
    /// # Errors
    /// [`Error::TlsSetup`] if key generation fails (it should not), or `--client-ca`
    /// cannot be used.
    pub fn self_signed(listen: &HostPort, clients: &ClientAuth) -> Result<ServerTls> {
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
        let config =
            server_config(vec![leaf.clone()], key, clients)?.map_err(|e| fail(e.to_string()))?;
        Ok(ServerTls {
            acceptor: TlsAcceptor::from(Arc::new(config)),
            fingerprint: Fingerprint::of(&leaf),
            source: CertSource::SelfSigned { names },
            leaf,
            clients: clients.clone(),
        })
    }

    /// `--cert`/`--key` when given, otherwise a self-signed certificate for `listen`; clients
    /// are not asked for certificates.
    ///
    /// # Errors
    /// As [`ServerTls::from_files`] and [`ServerTls::self_signed`].
    pub fn load(files: Option<(&Path, &Path)>, listen: &HostPort) -> Result<ServerTls> {
        ServerTls::load_with(files, listen, &ClientAuth::None)
    }

    /// [`ServerTls::load`], asking clients for certificates as `clients` says
    /// (`--client-ca`).
    ///
    /// # Errors
    /// As [`ServerTls::from_files`] and [`ServerTls::self_signed`].
    pub fn load_with(
        files: Option<(&Path, &Path)>,
        listen: &HostPort,
        clients: &ClientAuth,
    ) -> Result<ServerTls> {
        match files {
            Some((cert, key)) => ServerTls::from_files(cert, key, clients),
            None => ServerTls::self_signed(listen, clients),
        }
    }

    /// Whether clients are asked for certificates.
    pub fn client_auth(&self) -> &ClientAuth {
        &self.clients
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

    /// The one-line start-up notice: which certificate, its fingerprint, and which
    /// client certificates are asked for.
    pub fn notice(&self) -> String {
        let clients = match &self.clients {
            ClientAuth::None => String::new(),
            ClientAuth::Required(path) => format!(
                "; clients must present a certificate issued by a CA in --client-ca {}",
                path.display()
            ),
            ClientAuth::Optional(path) => format!(
                "; clients may present a certificate issued by a CA in --client-ca {}",
                path.display()
            ),
        };
        let certificate = match &self.source {
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
        };
        certificate + &clients
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
            Err(_) => Err(Error::ClientTimeout {
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
        Host::ScopedV6 { ip, .. } => names.push(ip.to_string()),
        Host::Ip(_) => {}
    }
    for name in ["localhost", "127.0.0.1", "::1"] {
        if !names.iter().any(|n| n == name) {
            names.push(name.to_string());
        }
    }
    names
}

/// A server config with our provider, safe protocol versions, client certificates as
/// `clients` says, stateless session tickets (TLS 1.3, and TLS 1.2 clients that ask for
/// them) and rustls' default session cache for TLS 1.2 session IDs (256 sessions).
///
/// The outer error is a `--client-ca` that cannot be used; the inner one the rustls
/// error for the certificate and key, for the caller to word.
fn server_config(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    clients: &ClientAuth,
) -> Result<Result<ServerConfig, rustls::Error>> {
    let verifier = client_verifier(clients)?;
    let builder = match ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
    {
        Ok(builder) => builder,
        Err(e) => return Ok(Err(e)),
    };
    let config = match verifier {
        Some(verifier) => builder
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, key),
        None => builder.with_no_client_auth().with_single_cert(chain, key),
    };
    Ok(config.and_then(|mut config| {
        config.ticketer = super::certs::ticketer()?;
        Ok(config)
    }))
}

/// What a client checks the server's certificate against (and how its rejections are
/// worded: each names the remedy that fits).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trust {
    /// The system's trusted roots (`/etc/ssl/certs`, or `SSL_CERT_FILE`/`SSL_CERT_DIR`).
    System,
    /// Only the certificates in this PEM file (`--ca FILE`): CAs that issued the server's
    /// certificate, or the server's own (self-signed) certificate.
    CaFile(PathBuf),
    /// Only certificates whose SHA-256 fingerprint was given with `--pin`.
    Pinned,
    /// No check at all (`--insecure`): encryption without authentication.
    Insecure,
}

impl fmt::Display for Trust {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Trust::System => f.write_str("the system's trusted roots"),
            Trust::CaFile(path) => write!(f, "--ca {}", path.display()),
            Trust::Pinned => f.write_str("--pin fingerprints"),
            Trust::Insecure => f.write_str("--insecure (no check)"),
        }
    }
}

/// Whether a client offers to resume an earlier TLS session with the same server
/// (TLS 1.3 tickets, TLS 1.2 session IDs), which skips the certificate exchange and its
/// signature on every connection after the first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Resumption {
    /// Resume when the server allows it: the default.
    #[default]
    On,
    /// A full handshake every time (`--no-resume`), to measure handshakes.
    Off,
}

/// How many handshakes a [`ClientTls`] completed, by kind: what `bench` reports to show
/// that resumption works.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HandshakeCounts {
    /// Full handshakes (certificate sent and checked).
    pub full: u64,
    /// Resumed sessions (TLS 1.3 tickets, TLS 1.2 session IDs or tickets).
    pub resumed: u64,
}

/// The shared counters behind [`HandshakeCounts`].
#[derive(Debug, Default)]
struct HandshakeCounters {
    /// Full handshakes.
    full: AtomicU64,
    /// Resumed ones.
    resumed: AtomicU64,
}

/// Everything that decides how a client checks servers, as the command line gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientTlsOptions {
    /// What certificates are checked against.
    pub trust: Trust,
    /// `--pin`: certificates accepted by their SHA-256 fingerprint, besides `trust`.
    pub pins: Vec<Fingerprint>,
    /// `--server-name`: the name sent as SNI and checked in the certificate, when it is
    /// not the endpoint's host (connecting by IP to a server known by name).
    pub server_name: Option<String>,
    /// `--no-resume` turns session resumption off.
    pub resumption: Resumption,
    /// `--cert`/`--key`: the certificate presented when a server asks for one (mutual
    /// TLS), and the flags that named them (`relay` calls them `--target-cert`…).
    pub client_cert: Option<(ClientCertFiles, CertFlags)>,
}

/// The flag names a client certificate came from, for error messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CertFlags {
    /// The certificate's flag (`--cert`).
    pub cert: &'static str,
    /// The key's flag (`--key`).
    pub key: &'static str,
}

impl ClientTlsOptions {
    /// Checks against `trust` only, with the endpoint's own name and resumption on.
    pub fn new(trust: Trust) -> ClientTlsOptions {
        ClientTlsOptions {
            trust,
            pins: Vec::new(),
            server_name: None,
            resumption: Resumption::On,
            client_cert: None,
        }
    }
}

/// The connecting side of TLS: one client configuration (roots loaded, `--ca` and pins
/// read, the resumption cache) built once per command and shared by every connection it
/// makes; cloning is an `Arc` clone.
#[derive(Clone)]
pub struct ClientTls {
    /// The parts every connection reads.
    shared: Arc<SharedClient>,
}

/// What a [`ClientTls`] shares between its clones.
struct SharedClient {
    /// Holds the one `ClientConfig` (and its session cache).
    connector: TlsConnector,
    /// The session store inside the config (none with `--no-resume`), told the size of
    /// each server's certificate chain so it charges its tickets what they hold.
    sessions: Option<Arc<SessionStore>>,
    /// Handshakes completed, full and resumed, for reports.
    handshakes: HandshakeCounters,
    /// What the certificate is checked against, for messages.
    trust: Trust,
    /// `--server-name`, already checked to be a valid name.
    server_name: Option<ServerName<'static>>,
    /// Under `--insecure`, the unverified certificates already announced: each is said
    /// once per command, not once per connection (`bench` opens thousands).
    announced: Mutex<Vec<Fingerprint>>,
}

/// How many distinct unverified certificates are announced at info level; a server that
/// shows a new one on every connection is then logged at debug level only.
const MAX_ANNOUNCED: usize = 16;

impl fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientTls")
            .field("trust", &self.shared.trust)
            .field("server_name", &self.shared.server_name)
            .finish_non_exhaustive()
    }
}

impl ClientTls {
    /// Builds a client that checks against `trust`, with the endpoint's name or
    /// `server_name`; see [`ClientTls::with_options`].
    ///
    /// # Errors
    /// As [`ClientTls::with_options`].
    pub fn new(trust: Trust, server_name: Option<String>) -> Result<ClientTls> {
        ClientTls::with_options(ClientTlsOptions {
            server_name,
            ..ClientTlsOptions::new(trust)
        })
    }

    /// Builds the client configuration: loads the roots (system or `--ca`), the pins, or
    /// the no-check verifier. Call it once per command and clone the result.
    ///
    /// `--insecure` prints its warning here, once per command.
    ///
    /// # Errors
    /// [`Error::TlsSetup`] when the CA file is unreadable or empty, or the system has no
    /// trusted roots; [`Error::Usage`] for a malformed `--server-name`.
    pub fn with_options(options: ClientTlsOptions) -> Result<ClientTls> {
        ClientTls::build(options, SessionStore::DEFAULT_BUDGET)
    }

    /// [`ClientTls::with_options`], with a session store of `session_budget` bytes.
    fn build(options: ClientTlsOptions, session_budget: usize) -> Result<ClientTls> {
        let server_name = options
            .server_name
            .as_deref()
            .map(|name| {
                ServerName::try_from(name.to_string()).map_err(|_| {
                    Error::Usage(format!(
                        "--server-name {name:?} is not a host name or IP address"
                    ))
                })
            })
            .transpose()?;
        let verifier = verifier_for(&options)?;
        let builder = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::TlsSetup {
                what: "the TLS client".into(),
                reason: e.to_string(),
            })?
            .dangerous()
            .with_custom_certificate_verifier(verifier);
        let mut config = match &options.client_cert {
            None => builder.with_no_client_auth(),
            Some((files, flags)) => {
                let (chain, key) = files.load(flags.cert, flags.key)?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| Error::TlsSetup {
                        what: format!(
                            "{} {} with {} {}",
                            flags.cert,
                            files.cert.display(),
                            flags.key,
                            files.key.display()
                        ),
                        reason: match e {
                            rustls::Error::InconsistentKeys(_) => {
                                "the key does not belong to the certificate; pass the key it was issued for".into()
                            }
                            other => other.to_string(),
                        },
                    })?
            }
        };
        let sessions = match options.resumption {
            Resumption::Off => {
                config.resumption = rustls::client::Resumption::disabled();
                None
            }
            Resumption::On => {
                let store = Arc::new(SessionStore::new(session_budget));
                config.resumption = rustls::client::Resumption::store(store.clone());
                Some(store)
            }
        };
        tracing::debug!(
            "tls: client configuration built (trust: {}, {} pins, resumption {:?}, client certificate: {})",
            options.trust,
            options.pins.len(),
            options.resumption,
            if options.client_cert.is_some() {
                "yes"
            } else {
                "no"
            }
        );
        Ok(ClientTls {
            shared: Arc::new(SharedClient {
                connector: TlsConnector::from(Arc::new(config)),
                sessions,
                handshakes: HandshakeCounters::default(),
                trust: options.trust,
                server_name,
                announced: Mutex::new(Vec::new()),
            }),
        })
    }

    /// The client for `tls://` with the system roots: what a plain `tls://` target gets.
    /// Built once per process, on first use.
    ///
    /// # Errors
    /// As [`ClientTls::new`].
    pub fn system() -> Result<ClientTls> {
        static SYSTEM: std::sync::OnceLock<ClientTls> = std::sync::OnceLock::new();
        if let Some(client) = SYSTEM.get() {
            return Ok(client.clone());
        }
        let client = ClientTls::new(Trust::System, None)?;
        Ok(SYSTEM.get_or_init(|| client).clone())
    }

    /// What certificates are checked against.
    pub fn trust(&self) -> &Trust {
        &self.shared.trust
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
        match self.shared.connector.connect(name.clone(), tcp).await {
            Ok(tls) => {
                self.count_session(&name, tls.get_ref().1);
                self.log_session(endpoint, tls.get_ref().1);
                Ok(Stream::Tls(Box::new(tls.into())))
            }
            Err(e) => Err(Error::Tls {
                peer: endpoint.to_string(),
                reason: explain(&e, Side::Client(&self.shared.trust)),
            }),
        }
    }

    /// The handshakes this client (and its clones) completed so far, full and resumed.
    pub fn handshakes(&self) -> HandshakeCounts {
        HandshakeCounts {
            full: self.shared.handshakes.full.load(Ordering::Relaxed),
            resumed: self.shared.handshakes.resumed.load(Ordering::Relaxed),
        }
    }

    /// Counts a completed handshake by kind, and after a full one tells the session store
    /// how large the server's certificate chain is.
    fn count_session(&self, name: &ServerName<'static>, session: &rustls::ClientConnection) {
        let counters = &self.shared.handshakes;
        if session.handshake_kind() == Some(rustls::HandshakeKind::Resumed) {
            counters.resumed.fetch_add(1, Ordering::Relaxed);
            return;
        }
        counters.full.fetch_add(1, Ordering::Relaxed);
        if let (Some(store), Some(chain)) = (&self.shared.sessions, session.peer_certificates()) {
            store.note_chain(name, chain.iter().map(|cert| cert.len()).sum());
        }
    }

    /// Logs the certificate's fingerprint (loudly under `--insecure`) and whether the
    /// session was resumed.
    fn log_session(&self, endpoint: &Endpoint, session: &rustls::ClientConnection) {
        if session.handshake_kind() == Some(rustls::HandshakeKind::Resumed) {
            tracing::debug!("{endpoint}: TLS session resumed");
            return;
        }
        let Some(leaf) = session.peer_certificates().and_then(|c| c.first()) else {
            return;
        };
        let fingerprint = Fingerprint::of(leaf);
        match self.shared.trust {
            Trust::Insecure if self.first_announcement(&fingerprint) => tracing::info!(
                "{endpoint}: certificate SHA-256 fingerprint {fingerprint} (NOT verified: --insecure)"
            ),
            Trust::Insecure => tracing::debug!(
                "{endpoint}: full TLS handshake, certificate NOT verified, SHA-256 fingerprint {fingerprint}"
            ),
            _ => tracing::debug!(
                "{endpoint}: full TLS handshake, certificate verified, SHA-256 fingerprint {fingerprint}"
            ),
        }
    }

    /// Whether `fingerprint` is an unverified certificate not yet announced (and there is
    /// room to remember it).
    fn first_announcement(&self, fingerprint: &Fingerprint) -> bool {
        let Ok(mut announced) = self.shared.announced.lock() else {
            return true;
        };
        if announced.contains(fingerprint) || announced.len() >= MAX_ANNOUNCED {
            return false;
        }
        announced.push(fingerprint.clone());
        true
    }

    /// The name to send as SNI and verify: `--server-name`, else the endpoint's host.
    fn server_name_for(&self, hp: &HostPort) -> Result<ServerName<'static>> {
        if let Some(name) = &self.shared.server_name {
            return Ok(name.clone());
        }
        match &hp.host {
            Host::Ip(ip) => Ok(ServerName::IpAddress((*ip).into())),
            Host::ScopedV6 { ip, .. } => Ok(ServerName::IpAddress(IpAddr::V6(*ip).into())),
            Host::Name(name) => ServerName::try_from(name.clone())
                .map_err(|_| Error::Usage(format!("{name:?} cannot be used as a TLS server name"))),
        }
    }
}

/// The certificate verifier for `options`: no check for `--insecure`, otherwise
/// [`CheckedTrust`] over the system roots, the `--ca` file and the pins.
fn verifier_for(options: &ClientTlsOptions) -> Result<Arc<dyn ServerCertVerifier>> {
    let chain_roots = match &options.trust {
        Trust::Insecure => {
            tracing::warn!(
                "--insecure: the server's certificate is NOT checked; anyone on the path can read and change this traffic"
            );
            return Ok(Arc::new(NoVerification(provider())));
        }
        Trust::Pinned => None,
        Trust::System => Some((system_roots()?, Vec::new())),
        Trust::CaFile(path) => Some(ca_roots(path)?),
    };
    let (chain, exact) = match chain_roots {
        Some((roots, exact)) => {
            let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
                Arc::new(roots),
                provider(),
            )
            .build()
            .map_err(|e| Error::TlsSetup {
                what: options.trust.to_string(),
                reason: e.to_string(),
            })?;
            (Some(verifier), exact)
        }
        None => (None, Vec::new()),
    };
    Ok(Arc::new(CheckedTrust {
        chain,
        exact,
        pins: options.pins.clone(),
        provider: provider(),
    }))
}

/// The certificates of a `--ca` file: as trust anchors for chains, and as they are, so a
/// self-signed server certificate given as its own CA is accepted when presented.
fn ca_roots(path: &Path) -> Result<(RootCertStore, Vec<CertificateDer<'static>>)> {
    let certs = read_certificates(path, "--ca")?;
    let mut roots = RootCertStore::empty();
    let (added, _ignored) = roots.add_parsable_certificates(certs.iter().cloned());
    if added == 0 {
        return Err(Error::TlsSetup {
            what: format!("--ca {}", path.display()),
            reason: "none of its certificates can be used as a trust anchor".into(),
        });
    }
    Ok((roots, certs))
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

/// The server certificate check for every mode but `--insecure`, in this order:
/// 1. a certificate whose fingerprint is pinned (`--pin`) is accepted as it is: the
///    fingerprint names that one certificate;
/// 2. a certificate byte-identical to one in `--ca` (a self-signed server certificate
///    given as its own CA, as `curl --cacert` users do) is accepted if it is valid for
///    the name and today's date;
/// 3. otherwise the chain must lead to a trusted root (webpki), unless only pins were
///    given.
///
/// The handshake signature is always checked against the presented certificate.
#[derive(Debug)]
struct CheckedTrust {
    /// Chain verification against the system roots or `--ca`; `None` with pins only.
    chain: Option<Arc<rustls::client::WebPkiServerVerifier>>,
    /// The `--ca` certificates, accepted when a server presents one of them itself.
    exact: Vec<CertificateDer<'static>>,
    /// `--pin` fingerprints.
    pins: Vec<Fingerprint>,
    /// The signature algorithms for the handshake signature.
    provider: Arc<CryptoProvider>,
}

/// A presented certificate whose fingerprint matches no `--pin`.
#[derive(Debug, thiserror::Error)]
#[error("its SHA-256 fingerprint {0} matches no --pin")]
struct PinMismatch(Fingerprint);

impl CheckedTrust {
    /// Step 2: a certificate trusted as it is must still name the server and be in date.
    fn check_exact(
        end_entity: &CertificateDer<'_>,
        server_name: &ServerName<'_>,
        now: UnixTime,
    ) -> Result<(), rustls::Error> {
        let parsed = rustls::server::ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_name(&parsed, server_name)?;
        check_validity(end_entity, now)
    }
}

impl ServerCertVerifier for CheckedTrust {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let fingerprint = Fingerprint::of(end_entity);
        if self.pins.contains(&fingerprint) {
            return Ok(ServerCertVerified::assertion());
        }
        if self.exact.iter().any(|c| c.as_ref() == end_entity.as_ref()) {
            CheckedTrust::check_exact(end_entity, server_name, now)?;
            return Ok(ServerCertVerified::assertion());
        }
        match &self.chain {
            Some(chain) => {
                chain.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
            }
            None => Err(rustls::Error::InvalidCertificate(CertificateError::Other(
                rustls::OtherError(Arc::new(PinMismatch(fingerprint))),
            ))),
        }
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
            &self.provider.signature_verification_algorithms,
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
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
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
            Side::Client(_) => explain_server_alert(*alert)
                .unwrap_or_else(|| format!("the server refused the handshake ({})", alert_words(*alert))),
        },
        E::PeerIncompatible(why) => format!(
            "no TLS version or cipher in common with the peer ({})",
            debug_words(why)
        ),
        E::NoCertificatesPresented => match side {
            Side::Server => {
                "the client presented no certificate and this server requires one (--client-ca); the client must give --cert and --key".into()
            }
            Side::Client(_) => "the server presented no certificate".into(),
        },
        E::General(text) => text.clone(),
        other => format!("the handshake failed ({})", debug_words(other)),
    }
}

/// What a client with this trust should do about a certificate it does not trust.
fn remedy(side: Side<'_>) -> String {
    match side {
        Side::Client(Trust::CaFile(path)) => format!(
            "it is not signed by a CA in --ca {}, nor is it one of that file's certificates; pass the CA that issued it, or the server's own certificate",
            path.display()
        ),
        Side::Client(Trust::System) => "it is not signed by a CA this system trusts (self-signed?); pass --ca FILE with its CA or the certificate itself, --pin with its SHA-256 fingerprint, or --insecure to skip the check".into(),
        Side::Client(Trust::Pinned) => "pass --pin with the fingerprint the server prints, or --ca with its certificate".into(),
        Side::Client(Trust::Insecure) => "it is not signed by a trusted CA".into(),
        Side::Server => "the client's certificate is not issued by a CA in --client-ca; give the client a certificate that CA issued (or add its CA to the file)".into(),
    }
}

/// A certificate rejection in words, with the fix.
fn explain_certificate(e: &CertificateError, side: Side<'_>) -> String {
    match e {
        CertificateError::UnknownIssuer => format!("unknown issuer: {}", remedy(side)),
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
            if presented.is_empty() { "no name at all".into() } else { presented_names(presented) },
            expected.to_str()
        ),
        CertificateError::BadSignature => "the certificate's signature is invalid".into(),
        CertificateError::Revoked => "the certificate has been revoked".into(),
        CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. } => {
            match side {
                Side::Server => "the client's certificate is not meant for TLS clients (extended key usage)".into(),
                Side::Client(_) => "the certificate is not meant for TLS servers (extended key usage)".into(),
            }
        }
        CertificateError::BadEncoding => "the certificate is malformed".into(),
        CertificateError::Other(other) => explain_other_certificate(other, side),
        other => format!("the certificate was rejected ({})", debug_words(other)),
    }
}

/// The names rustls lists for a certificate (`DnsName("localhost")`, `IpAddress(…)`) as
/// plain text: `localhost, 127.0.0.1`.
fn presented_names(presented: &[String]) -> String {
    presented
        .iter()
        .map(|name| match name.split_once('(') {
            Some((_, inner)) => inner.trim_end_matches(')').trim_matches('"').to_string(),
            None => name.clone(),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// A rejection rustls passes on from webpki or from our own verifier.
fn explain_other_certificate(other: &rustls::OtherError, side: Side<'_>) -> String {
    if let Some(PinMismatch(fingerprint)) = other.0.downcast_ref::<PinMismatch>() {
        return format!(
            "the certificate's SHA-256 fingerprint {fingerprint} matches no --pin; check that this is the server you meant, then pin this fingerprint or pass --ca with its certificate"
        );
    }
    match other.0.downcast_ref::<webpki::Error>() {
        Some(webpki::Error::CaUsedAsEndEntity) => match side {
            Side::Server => "the client presented a CA certificate as its own (self-signed?) and it is not in --client-ca; add that exact certificate to the --client-ca file".into(),
            Side::Client(Trust::CaFile(path)) => format!(
                "the server presented a CA certificate as its own (self-signed?) and it is not in --ca {}; pass that exact certificate with --ca, or its SHA-256 fingerprint with --pin",
                path.display()
            ),
            _ => "the server presented a self-signed CA certificate that nothing here trusts; pass that certificate with --ca FILE, its SHA-256 fingerprint with --pin, or --insecure to skip the check".into(),
        },
        Some(webpki::Error::EndEntityUsedAsCa) => {
            "a certificate in the chain that is not a CA signed another; the server's chain is wrong".into()
        }
        Some(e) => format!("the certificate was rejected ({})", debug_words(e)),
        None => format!("the certificate was rejected ({})", other.0),
    }
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
        let tls = ServerTls::self_signed(&hp("127.0.0.1:0"), &ClientAuth::None)?;
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

    /// A self-signed certificate trusted as it is must still be in date and name the host.
    #[test]
    fn a_certificate_trusted_as_it_is_is_still_checked_for_dates_and_name() {
        let key = rcgen::KeyPair::generate().unwrap_or_else(|e| panic!("{e}"));
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()])
            .unwrap_or_else(|e| panic!("{e}"));
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = rcgen::date_time_ymd(2021, 1, 1);
        let cert = params.self_signed(&key).unwrap_or_else(|e| panic!("{e}"));
        let localhost = ServerName::try_from("localhost").unwrap_or_else(|e| panic!("{e}"));
        let now = UnixTime::now();
        let expired = CheckedTrust::check_exact(cert.der(), &localhost, now);
        assert!(
            matches!(
                expired,
                Err(rustls::Error::InvalidCertificate(
                    CertificateError::ExpiredContext { .. }
                ))
            ),
            "{expired:?}"
        );
        let in_2020 = UnixTime::since_unix_epoch(Duration::from_secs(1_600_000_000));
        assert!(CheckedTrust::check_exact(cert.der(), &localhost, in_2020).is_ok());
        let other = ServerName::try_from("example.org").unwrap_or_else(|e| panic!("{e}"));
        assert!(CheckedTrust::check_exact(cert.der(), &other, in_2020).is_err());
    }

    /// Issue 19 item 4: what a server says about our client certificate, in words,
    /// during the handshake (TLS 1.2) or at the first read after it (TLS 1.3).
    #[test]
    fn client_certificate_alerts_read_as_one_sentence_with_a_fix() {
        let trust = Trust::System;
        let required = explain_tls(
            &rustls::Error::AlertReceived(rustls::AlertDescription::CertificateRequired),
            Side::Client(&trust),
        );
        assert_eq!(
            required,
            "the server requires a client certificate; give --cert and --key"
        );
        let after = io::Error::new(
            io::ErrorKind::InvalidData,
            rustls::Error::AlertReceived(rustls::AlertDescription::UnknownCA),
        );
        let rejected = crate::error::explain_after_handshake(&after).unwrap_or_default();
        assert!(
            rejected.contains("rejected our client certificate (unknown_ca alert)"),
            "{rejected}"
        );
        assert!(
            crate::error::explain_after_handshake(&io::ErrorKind::ConnectionReset.into()).is_none()
        );
        let no_cert = explain_tls(&rustls::Error::NoCertificatesPresented, Side::Server);
        assert!(no_cert.contains("--cert and --key"), "{no_cert}");
    }

    #[test]
    fn webpki_rejections_read_as_words() {
        let ca_as_leaf = CertificateError::Other(rustls::OtherError(Arc::new(
            webpki::Error::CaUsedAsEndEntity,
        )));
        let text = explain_certificate(&ca_as_leaf, Side::Client(&Trust::System));
        assert!(
            text.contains("self-signed") && text.contains("--pin"),
            "{text}"
        );
        assert!(!text.contains("Other"), "{text}");
        assert_eq!(
            debug_words(&webpki::Error::UnsupportedCriticalExtension),
            "unsupported critical extension"
        );
    }

    /// A loopback TLS server (self-signed) that writes one byte on every connection
    /// after its handshake, so a client that reads it has also read the session tickets
    /// sent before it.
    async fn ticket_server() -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
        use tokio::io::AsyncWriteExt;
        let tls = ServerTls::self_signed(&hp("127.0.0.1:0"), &ClientAuth::None)
            .unwrap_or_else(|e| panic!("{e}"));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
        let task = tokio::spawn(async move {
            while let Ok((tcp, peer)) = listener.accept().await {
                let tls = tls.clone();
                tokio::spawn(async move {
                    let peer = PeerAddr::Ip(peer);
                    if let Ok(mut stream) =
                        tls.accept(Stream::Tcp(tcp), &peer, HANDSHAKE_TIMEOUT).await
                    {
                        let _ = stream.write_all(b"x").await;
                        let _ = stream.shutdown().await;
                    }
                });
            }
        });
        (addr, task)
    }

    /// One exchange as `bench --pattern hello` makes it: connect, handshake, read the
    /// server's byte, close.
    async fn one_exchange(client: &ClientTls, addr: std::net::SocketAddr) {
        use tokio::io::AsyncReadExt;
        let tcp = TcpStream::connect(addr)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let endpoint = Endpoint::Tls(hp(&addr.to_string()));
        let mut stream = client
            .handshake(tcp, &endpoint, &hp(&addr.to_string()))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let mut byte = [0u8; 1];
        stream
            .read_exact(&mut byte)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }

    /// Issue 23: many connections starting their handshakes at the same moment each find
    /// a ticket, round after round; only the very first round is full.
    #[tokio::test]
    async fn concurrent_handshakes_all_resume_after_the_first_round() {
        const CONNECTIONS: usize = 20;
        const ROUNDS: u64 = 4;
        let (addr, server) = ticket_server().await;
        let client = ClientTls::new(Trust::Insecure, None).unwrap_or_else(|e| panic!("{e}"));
        for _ in 0..ROUNDS {
            // Every ClientHello of a round is built before any ticket of it arrives.
            let round = (0..CONNECTIONS).map(|_| one_exchange(&client, addr));
            tokio::time::timeout(
                Duration::from_secs(20),
                futures_util::future::join_all(round),
            )
            .await
            .unwrap_or_else(|_| panic!("a round of handshakes took over 20 s"));
        }
        server.abort();
        let counts = client.handshakes();
        assert_eq!(
            counts,
            HandshakeCounts {
                full: CONNECTIONS as u64,
                resumed: CONNECTIONS as u64 * (ROUNDS - 1),
            }
        );
    }

    /// More clients than a server session cache holds (256, two tickets each) all resume:
    /// the server's tickets are stateless.
    #[tokio::test]
    async fn a_server_resumes_more_clients_than_a_session_cache_would_hold() {
        const CLIENTS: usize = 200;
        let (addr, server) = ticket_server().await;
        let clients: Vec<ClientTls> = (0..CLIENTS)
            .map(|_| ClientTls::new(Trust::Insecure, None).unwrap_or_else(|e| panic!("{e}")))
            .collect();
        for _ in 0..2 {
            for client in &clients {
                tokio::time::timeout(Duration::from_secs(20), one_exchange(client, addr))
                    .await
                    .unwrap_or_else(|_| panic!("an exchange took over 20 s"));
            }
        }
        server.abort();
        let resumed: u64 = clients.iter().map(|c| c.handshakes().resumed).sum();
        assert_eq!(resumed, CLIENTS as u64, "second handshakes that resumed");
    }

    /// The session store holds no more than its budget, and no more tickets than the
    /// handshakes have needed at once.
    #[tokio::test]
    async fn the_session_store_keeps_to_its_budget_and_to_what_is_needed() {
        let (addr, server) = ticket_server().await;
        let name = ServerName::IpAddress(addr.ip().into());
        let roomy = ClientTls::new(Trust::Insecure, None).unwrap_or_else(|e| panic!("{e}"));
        let small = ClientTls::build(ClientTlsOptions::new(Trust::Insecure), 4096)
            .unwrap_or_else(|e| panic!("{e}"));
        for _ in 0..12 {
            let both = async {
                one_exchange(&roomy, addr).await;
                one_exchange(&small, addr).await;
            };
            tokio::time::timeout(Duration::from_secs(20), both)
                .await
                .unwrap_or_else(|_| panic!("an exchange took over 20 s"));
            let small_store = small
                .shared
                .sessions
                .as_ref()
                .unwrap_or_else(|| panic!("no store"));
            assert!(small_store.bytes() <= 4096, "{}", small_store.bytes());
        }
        server.abort();
        let roomy_store = roomy
            .shared
            .sessions
            .as_ref()
            .unwrap_or_else(|| panic!("no store"));
        // One connection at a time: 2 tickets arrive per handshake and 1 is used; the
        // store keeps 8 plus the one handshake that found none.
        assert_eq!(roomy_store.tickets_for(&name), 9);
        assert_eq!(
            roomy.handshakes(),
            HandshakeCounts {
                full: 1,
                resumed: 11
            }
        );
        // A small budget still resumes: it keeps the newest tickets.
        let small_store = small
            .shared
            .sessions
            .as_ref()
            .unwrap_or_else(|| panic!("no store"));
        assert!(small_store.tickets_for(&name) >= 1);
        assert_eq!(
            small.handshakes(),
            HandshakeCounts {
                full: 1,
                resumed: 11
            }
        );
    }
}

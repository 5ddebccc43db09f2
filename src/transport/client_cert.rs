//! Mutual TLS: client certificates on both sides.
//!
//! * A server with `--client-ca FILE` asks every client for a certificate and checks it
//!   against the CAs in FILE ([`ClientAuth`]); a client certificate that is itself in FILE
//!   (a self-signed one, trusted as it is) is accepted while it is in date, as `--ca`
//!   does for servers. `--client-ca-optional` asks but lets clients without one in.
//! * A client with `--cert FILE --key FILE` presents that certificate when asked
//!   ([`ClientCertFiles`]).
//! * Once a client is verified, who it is ([`ClientIdentity`]: subject, common name,
//!   subject alternative names, fingerprint) goes to the logs, the JSON events and the
//!   environment of `--exec` programs.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore};

use super::certs::{Fingerprint, check_validity, provider, read_certificates, read_private_key};
use super::stream::Stream;
use crate::error::{Error, Result};

/// Whether a TLS server asks its clients for a certificate, and which it accepts.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ClientAuth {
    /// Clients are not asked for a certificate: the default.
    #[default]
    None,
    /// `--client-ca FILE`: every client must present a certificate issued by a CA in FILE
    /// (or one of FILE's own certificates).
    Required(PathBuf),
    /// `--client-ca FILE --client-ca-optional`: clients are asked; one that presents a
    /// certificate must pass the same check, one that presents none is let in unnamed.
    Optional(PathBuf),
}

impl ClientAuth {
    /// The `--client-ca` file, when clients are asked at all.
    pub fn ca_file(&self) -> Option<&Path> {
        match self {
            ClientAuth::None => None,
            ClientAuth::Required(path) | ClientAuth::Optional(path) => Some(path),
        }
    }
}

/// The verifier a server config needs for `auth`; `None` when clients are not asked.
///
/// # Errors
/// [`Error::TlsSetup`] naming `--client-ca` when the file is unreadable or holds no
/// usable CA certificate.
pub(super) fn client_verifier(auth: &ClientAuth) -> Result<Option<Arc<dyn ClientCertVerifier>>> {
    let Some(path) = auth.ca_file() else {
        return Ok(None);
    };
    let fail = |reason: String| Error::TlsSetup {
        what: format!("--client-ca {}", path.display()),
        reason,
    };
    let certs = read_certificates(path, "--client-ca")?;
    let mut roots = RootCertStore::empty();
    let (added, _ignored) = roots.add_parsable_certificates(certs.iter().cloned());
    if added == 0 {
        return Err(fail(
            "none of its certificates can be used as a trust anchor".into(),
        ));
    }
    let builder = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider());
    let builder = match auth {
        ClientAuth::Optional(_) => builder.allow_unauthenticated(),
        _ => builder,
    };
    let chain = builder.build().map_err(|e| fail(e.to_string()))?;
    Ok(Some(Arc::new(ClientCheck {
        chain,
        exact: certs,
    })))
}

/// The client certificate check: a certificate byte-identical to one in `--client-ca` is
/// accepted while in date (a self-signed client certificate given as its own CA);
/// otherwise the chain must lead to a CA in the file (webpki, which also checks dates and
/// the client-auth key usage). The handshake signature is always checked.
#[derive(Debug)]
struct ClientCheck {
    /// webpki's verifier over the `--client-ca` roots; it also says whether a
    /// certificate is mandatory and which CAs to hint.
    chain: Arc<dyn ClientCertVerifier>,
    /// The `--client-ca` certificates as they are.
    exact: Vec<CertificateDer<'static>>,
}

impl ClientCertVerifier for ClientCheck {
    fn offer_client_auth(&self) -> bool {
        self.chain.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.chain.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.chain.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        if self.exact.iter().any(|c| c.as_ref() == end_entity.as_ref()) {
            check_validity(end_entity, now)?;
            return Ok(ClientCertVerified::assertion());
        }
        self.chain
            .verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.chain.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.chain.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.chain.supported_verify_schemes()
    }
}

/// `--cert FILE --key FILE` on a connecting command: the certificate a client presents
/// when a server asks for one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCertFiles {
    /// The certificate chain (PEM), leaf first.
    pub cert: PathBuf,
    /// Its private key (PEM).
    pub key: PathBuf,
}

impl ClientCertFiles {
    /// Reads both files.
    ///
    /// # Errors
    /// [`Error::TlsSetup`] naming the flag and file that cannot be used.
    pub(super) fn load(
        &self,
        cert_flag: &str,
        key_flag: &str,
    ) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)> {
        let chain = read_certificates(&self.cert, cert_flag)?;
        let key = read_private_key(&self.key, key_flag)?;
        Ok((chain, key))
    }
}

/// Who a verified TLS client is, from its certificate. Every text is escaped (control
/// characters as `\n`, `\u{1b}`…), so a certificate cannot forge log lines or
/// environment values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientIdentity {
    /// The subject's distinguished name, `CN=alice, O=Example`.
    pub subject: String,
    /// The subject's common name, when it has one.
    pub common_name: Option<String>,
    /// The subject alternative names as openssl prints them: `DNS:alice.example`,
    /// `IP:127.0.0.1`, `email:alice@example.com`, `URI:spiffe://…`.
    pub sans: Vec<String>,
    /// SHA-256 of the certificate.
    pub fingerprint: Fingerprint,
}

impl ClientIdentity {
    /// The identity of the client on an accepted TLS stream, when it presented a
    /// certificate (which the handshake has verified); `None` for other streams.
    pub fn of(stream: &Stream) -> Option<ClientIdentity> {
        let Stream::Tls(tls) = stream else {
            return None;
        };
        let tokio_rustls::TlsStream::Server(server) = tls.as_ref() else {
            return None;
        };
        let leaf = server.get_ref().1.peer_certificates()?.first()?;
        ClientIdentity::from_der(leaf)
    }

    /// Reads the names out of a DER certificate; `None` if it does not parse (it would not
    /// have passed verification).
    pub fn from_der(cert: &CertificateDer<'_>) -> Option<ClientIdentity> {
        let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
        let subject = parsed.subject();
        let common_name = subject
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .map(escape);
        let sans = match parsed.subject_alternative_name() {
            Ok(Some(extension)) => extension
                .value
                .general_names
                .iter()
                .filter_map(san_text)
                .collect(),
            _ => Vec::new(),
        };
        Some(ClientIdentity {
            subject: escape(&subject.to_string()),
            common_name,
            sans,
            fingerprint: Fingerprint::of(cert),
        })
    }

    /// The `--exec` environment that names the client: `SOCKIT_TLS_CLIENT_SUBJECT`,
    /// `SOCKIT_TLS_CLIENT_CN` (when there is one), `SOCKIT_TLS_CLIENT_SANS` (comma
    /// separated) and `SOCKIT_TLS_CLIENT_SHA256`.
    pub fn environment(&self) -> Vec<(&'static str, String)> {
        let mut vars = vec![("SOCKIT_TLS_CLIENT_SUBJECT", self.subject.clone())];
        if let Some(cn) = &self.common_name {
            vars.push(("SOCKIT_TLS_CLIENT_CN", cn.clone()));
        }
        vars.push(("SOCKIT_TLS_CLIENT_SANS", self.sans.join(",")));
        vars.push(("SOCKIT_TLS_CLIENT_SHA256", self.fingerprint.to_string()));
        vars
    }
}

/// `subject "CN=alice", SANs DNS:alice.example, email:alice@example.com`.
impl fmt::Display for ClientIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "subject \"{}\"", self.subject)?;
        if !self.sans.is_empty() {
            write!(f, ", SANs {}", self.sans.join(", "))?;
        }
        Ok(())
    }
}

/// One subject alternative name as openssl prints it; names of kinds nobody matches on
/// (X.400, EDI party, registered ids) are left out.
fn san_text(name: &x509_parser::extensions::GeneralName<'_>) -> Option<String> {
    use x509_parser::extensions::GeneralName as G;
    match name {
        G::DNSName(dns) => Some(format!("DNS:{}", escape(dns))),
        G::RFC822Name(email) => Some(format!("email:{}", escape(email))),
        G::URI(uri) => Some(format!("URI:{}", escape(uri))),
        G::IPAddress(bytes) => ip_text(bytes).map(|ip| format!("IP:{ip}")),
        G::DirectoryName(dn) => Some(format!("DirName:{}", escape(&dn.to_string()))),
        _ => None,
    }
}

/// An IP address SAN (4 or 16 bytes) as text.
fn ip_text(bytes: &[u8]) -> Option<std::net::IpAddr> {
    match bytes.len() {
        4 => <[u8; 4]>::try_from(bytes).ok().map(std::net::IpAddr::from),
        16 => <[u8; 16]>::try_from(bytes).ok().map(std::net::IpAddr::from),
        _ => None,
    }
}

/// Text from a certificate, safe to print and to put in an environment variable.
fn escape(text: &str) -> String {
    crate::escape::escaped(text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client_certificate(cn: &str, sans: &[&str]) -> CertificateDer<'static> {
        let key = rcgen::KeyPair::generate().unwrap_or_else(|e| panic!("{e}"));
        let names = sans.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let mut params = rcgen::CertificateParams::new(names).unwrap_or_else(|e| panic!("{e}"));
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        let cert = params.self_signed(&key).unwrap_or_else(|e| panic!("{e}"));
        cert.der().clone()
    }

    #[test]
    fn identity_names_the_subject_and_every_alternative_name() {
        let der = client_certificate("alice", &["alice.test", "127.0.0.1"]);
        let identity = ClientIdentity::from_der(&der).unwrap_or_else(|| panic!("no identity"));
        assert_eq!(identity.subject, "CN=alice");
        assert_eq!(identity.common_name.as_deref(), Some("alice"));
        assert_eq!(identity.sans, ["DNS:alice.test", "IP:127.0.0.1"]);
        assert_eq!(
            identity.to_string(),
            "subject \"CN=alice\", SANs DNS:alice.test, IP:127.0.0.1"
        );
        let env = identity.environment();
        assert!(env.contains(&(
            "SOCKIT_TLS_CLIENT_SANS",
            "DNS:alice.test,IP:127.0.0.1".into()
        )));
        assert!(env.contains(&("SOCKIT_TLS_CLIENT_CN", "alice".into())));
    }

    #[test]
    fn control_characters_in_a_certificate_cannot_forge_lines() {
        let der = client_certificate("eve\ninjected", &[]);
        let identity = ClientIdentity::from_der(&der).unwrap_or_else(|| panic!("no identity"));
        assert!(!identity.subject.contains('\n'), "{}", identity.subject);
        assert!(identity.subject.contains("\\n"), "{}", identity.subject);
    }

    #[test]
    fn an_unreadable_client_ca_names_the_flag() {
        let missing = ClientAuth::Required("/nonexistent/ca.pem".into());
        let e = client_verifier(&missing).err().map(|e| e.to_string());
        assert!(
            e.as_deref().is_some_and(|e| e.contains("--client-ca")),
            "{e:?}"
        );
        assert!(client_verifier(&ClientAuth::None).is_ok_and(|v| v.is_none()));
    }
}

//! Certificates and keys as both TLS sides read and check them: the crypto back end,
//! PEM files (`--cert`, `--key`, `--ca`, `--client-ca`), a certificate's SHA-256
//! [`Fingerprint`] and its validity dates. Below [`super::tls`] and
//! [`super::client_cert`], which both build on it.

use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::CertificateError;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};

use crate::error::debug_words;
use crate::error::{Error, Result};

/// The crypto back end every config uses: ring, or aws-lc-rs with the `aws-lc` feature.
#[cfg(not(feature = "aws-lc"))]
pub(super) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The crypto back end every config uses: aws-lc-rs, chosen by the `aws-lc` feature.
#[cfg(feature = "aws-lc")]
pub(super) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Stateless session tickets from the same crypto back end: the server keeps nothing per
/// session, so every client it has seen can resume however many there are (a session
/// cache holds 256 and turns the rest to full handshakes), as HAProxy and nginx do by
/// default. The ticket keys are random and replaced every 6 hours.
#[cfg(not(feature = "aws-lc"))]
pub(super) fn ticketer() -> Result<Arc<dyn rustls::server::ProducesTickets>, rustls::Error> {
    rustls::crypto::ring::Ticketer::new()
}

/// Stateless session tickets from the same crypto back end: the server keeps nothing per
/// session, so every client it has seen can resume however many there are (a session
/// cache holds 256 and turns the rest to full handshakes), as HAProxy and nginx do by
/// default. The ticket keys are random and replaced every 6 hours.
#[cfg(feature = "aws-lc")]
pub(super) fn ticketer() -> Result<Arc<dyn rustls::server::ProducesTickets>, rustls::Error> {
    rustls::crypto::aws_lc_rs::Ticketer::new()
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

/// Why a fingerprint given with `--pin` does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{0:?} is not a SHA-256 fingerprint; write the 64 hex digits, with or without colons, as sockit and `openssl x509 -fingerprint -sha256` print them"
)]
pub struct FingerprintError(String);

impl std::str::FromStr for Fingerprint {
    type Err = FingerprintError;

    /// `8A:92:…` (as sockit and openssl print it) or 64 hex digits in either case.
    fn from_str(text: &str) -> Result<Fingerprint, FingerprintError> {
        let fail = || FingerprintError(text.to_string());
        let trimmed = text.trim();
        let digits = trimmed
            .strip_prefix("sha256 Fingerprint=")
            .or_else(|| trimmed.strip_prefix("SHA256 Fingerprint="))
            .unwrap_or(trimmed);
        let hex: Vec<u8> = digits.bytes().filter(|b| *b != b':').collect();
        if hex.len() != 64 {
            return Err(fail());
        }
        let mut bytes = [0u8; 32];
        for (byte, pair) in bytes.iter_mut().zip(hex.chunks_exact(2)) {
            let pair = std::str::from_utf8(pair).map_err(|_| fail())?;
            *byte = u8::from_str_radix(pair, 16).map_err(|_| fail())?;
        }
        Ok(Fingerprint(bytes))
    }
}

/// Every certificate in a PEM file, or an error naming the flag and the file.
pub(super) fn read_certificates(path: &Path, flag: &str) -> Result<Vec<CertificateDer<'static>>> {
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
pub(super) fn pem_error(e: &rustls::pki_types::pem::Error) -> String {
    use rustls::pki_types::pem::Error as PemError;
    match e {
        PemError::Io(io) => io.to_string(),
        PemError::NoItemsFound => "no PEM item of the expected kind in it".into(),
        other => format!("it is not valid PEM ({})", debug_words(other)),
    }
}

/// The private key in a PEM file, or an error naming the flag and the file.
///
/// # Errors
/// [`Error::TlsSetup`] when the file is unreadable or holds no private key.
pub(super) fn read_private_key(path: &Path, flag: &str) -> Result<PrivateKeyDer<'static>> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| Error::TlsSetup {
        what: format!("{flag} {}", path.display()),
        reason: format!(
            "{}; it must be a PEM private key (BEGIN PRIVATE KEY, BEGIN EC/RSA PRIVATE KEY)",
            pem_error(&e)
        ),
    })
}

/// A certificate trusted as it is (given in `--ca` or `--client-ca`) must still be in
/// date.
///
/// # Errors
/// The rustls error for a certificate that is expired, not yet valid, or malformed.
pub(super) fn check_validity(
    end_entity: &CertificateDer<'_>,
    now: UnixTime,
) -> Result<(), rustls::Error> {
    let (_, cert) = x509_parser::parse_x509_certificate(end_entity.as_ref())
        .map_err(|_| rustls::Error::InvalidCertificate(CertificateError::BadEncoding))?;
    let validity = cert.validity();
    let now_secs = i64::try_from(now.as_secs()).unwrap_or(i64::MAX);
    let unix = |t: i64| UnixTime::since_unix_epoch(Duration::from_secs(t.max(0).unsigned_abs()));
    if now_secs < validity.not_before.timestamp() {
        return Err(rustls::Error::InvalidCertificate(
            CertificateError::NotValidYetContext {
                time: now,
                not_before: unix(validity.not_before.timestamp()),
            },
        ));
    }
    if now_secs > validity.not_after.timestamp() {
        return Err(rustls::Error::InvalidCertificate(
            CertificateError::ExpiredContext {
                time: now,
                not_after: unix(validity.not_after.timestamp()),
            },
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_prints_like_openssl() {
        let fp = Fingerprint([0xab; 32]);
        let text = fp.to_string();
        assert_eq!(text.len(), 32 * 3 - 1);
        assert!(text.starts_with("AB:AB:"));
    }

    #[test]
    fn fingerprints_parse_as_printed_or_as_lowercase_hex() {
        let fp = Fingerprint([0x8a; 32]);
        let printed = fp.to_string();
        assert_eq!(printed.parse::<Fingerprint>().ok(), Some(fp.clone()));
        assert_eq!("8a".repeat(32).parse::<Fingerprint>().ok(), Some(fp));
        assert!("8A:92".parse::<Fingerprint>().is_err());
        assert!("zz".repeat(32).parse::<Fingerprint>().is_err());
    }
}

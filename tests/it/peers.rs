//! Helpers for the programs nobody here wrote (ncat, socat, nc, openssl) and for test
//! certificates.
//!
//! Every wait polls a real condition (a line printed, a port listening) under the
//! suite's [`TIMEOUT`]; nothing sleeps for readiness.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use crate::util::{Proc, TIMEOUT};

/// Polls `check` every 10 ms until it returns `Some`, or panics with `what` and `report()`.
pub fn poll_until<T>(
    what: &str,
    report: impl Fn() -> String,
    mut check: impl FnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        if let Some(found) = check() {
            return found;
        }
        if Instant::now() >= deadline {
            panic!("timed out waiting for {what}\n{}", report());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Waits until the process's stderr contains `needle` and returns all of stderr.
pub fn wait_for_stderr(proc: &Proc, needle: &str) -> String {
    poll_until(
        &format!("{needle:?} on stderr"),
        || proc.report(),
        || {
            let stderr = proc.stderr();
            stderr.contains(needle).then_some(stderr)
        },
    )
}

/// The TCP port a process listens on, read from /proc (for peers such as ncat that do
/// not print the port the kernel chose for port 0). Polls until the socket exists.
pub fn listening_port(proc: &Proc) -> u16 {
    let pid = proc.pid();
    poll_until(
        "the peer to listen",
        || proc.report(),
        || find_listening_port(pid),
    )
}

/// Looks up a listening TCP socket (IPv4 or IPv6) owned by `pid`.
fn find_listening_port(pid: u32) -> Option<u16> {
    let inodes: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .ok()?
        .filter_map(|entry| std::fs::read_link(entry.ok()?.path()).ok())
        .filter_map(|link| {
            let text = link.to_string_lossy().into_owned();
            text.strip_prefix("socket:[")
                .and_then(|rest| rest.strip_suffix(']'))
                .map(str::to_string)
        })
        .collect();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // local_address is fields[1] (ADDR:PORT in hex), st is fields[3] (0A = LISTEN),
            // inode is fields[9].
            if fields.len() > 9 && fields[3] == "0A" && inodes.iter().any(|i| i == fields[9]) {
                let port = fields[1].rsplit(':').next()?;
                return u16::from_str_radix(port, 16).ok();
            }
        }
    }
    None
}

/// Runs an external program to completion with `input` on stdin, killed after
/// [`TIMEOUT`].
pub fn run_peer(program: &str, args: &[&str], input: &[u8]) -> Output {
    let mut cmd = assert_cmd::Command::new(program);
    cmd.args(args).timeout(TIMEOUT).write_stdin(input.to_vec());
    match cmd.output() {
        Ok(output) => output,
        Err(e) => {
            panic!("could not run {program} {args:?} (is it installed? .ci/run installs it): {e}")
        }
    }
}

/// A background external program.
pub fn spawn_peer(program: &str, args: &[&str], with_stdin: bool) -> Proc {
    let mut cmd = Command::new(program);
    cmd.args(args);
    Proc::spawn(cmd, with_stdin)
}

/// Test certificates, written as PEM files in a temporary directory.
pub struct Pki {
    /// Keeps the files alive.
    pub dir: tempfile::TempDir,
    /// The CA that signed `leaf`.
    pub ca: PathBuf,
    /// A leaf for `localhost` only (no IP address), signed by `ca`.
    pub leaf: PathBuf,
    /// The leaf's private key.
    pub leaf_key: PathBuf,
    /// A CA that signed nothing here: trusting it must not let `leaf` through.
    pub other_ca: PathBuf,
    /// A leaf for `localhost` signed by `ca` that expired years ago.
    pub expired: PathBuf,
    /// The expired leaf's key.
    pub expired_key: PathBuf,
}

/// A CA certificate (self-signed) and its issuer.
fn make_ca(name: &str) -> (rcgen::Certificate, rcgen::Issuer<'static, rcgen::KeyPair>) {
    let key = rcgen::KeyPair::generate().unwrap_or_else(|e| panic!("{e}"));
    let mut params =
        rcgen::CertificateParams::new(Vec::<String>::new()).unwrap_or_else(|e| panic!("{e}"));
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    let cert = params.self_signed(&key).unwrap_or_else(|e| panic!("{e}"));
    (cert, rcgen::Issuer::new(params, key))
}

/// A `localhost` leaf signed by `issuer`, valid until `not_after`.
fn make_leaf(
    issuer: &rcgen::Issuer<'static, rcgen::KeyPair>,
    not_after: (i32, u8, u8),
) -> (rcgen::Certificate, rcgen::KeyPair) {
    let key = rcgen::KeyPair::generate().unwrap_or_else(|e| panic!("{e}"));
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()])
        .unwrap_or_else(|e| panic!("{e}"));
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "localhost");
    params.not_before = rcgen::date_time_ymd(2020, 1, 1);
    params.not_after = rcgen::date_time_ymd(not_after.0, not_after.1, not_after.2);
    let cert = params
        .signed_by(&key, issuer)
        .unwrap_or_else(|e| panic!("{e}"));
    (cert, key)
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    path
}

impl Pki {
    /// Generates a CA, a leaf it signed, another CA, and an expired leaf.
    pub fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let (ca_cert, issuer) = make_ca("sockit test CA");
        let (other_cert, _) = make_ca("some other CA");
        let (leaf, leaf_key) = make_leaf(&issuer, (2099, 1, 1));
        let (expired, expired_key) = make_leaf(&issuer, (2021, 1, 1));
        let d = dir.path();
        Pki {
            ca: write(d, "ca.pem", &ca_cert.pem()),
            leaf: write(d, "leaf.pem", &leaf.pem()),
            leaf_key: write(d, "leaf.key", &leaf_key.serialize_pem()),
            other_ca: write(d, "other-ca.pem", &other_cert.pem()),
            expired: write(d, "expired.pem", &expired.pem()),
            expired_key: write(d, "expired.key", &expired_key.serialize_pem()),
            dir,
        }
    }

    /// A path inside the PKI directory as a `&str` argument.
    pub fn arg(path: &Path) -> &str {
        path.to_str()
            .unwrap_or_else(|| panic!("non-UTF-8 temp path {}", path.display()))
    }
}

/// The `error:` lines of a run's stderr.
pub fn error_lines(output: &Output) -> Vec<String> {
    String::from_utf8_lossy(&output.stderr)
        .lines()
        .filter(|l| l.starts_with("error: "))
        .map(str::to_string)
        .collect()
}

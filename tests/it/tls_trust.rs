//! Trusting a certificate on every client path, from one set of flags:
//! * issue 15 item 4: `bench tls://` against the default self-signed `serve tls://` with
//!   `--insecure`, `--pin` and `--ca`, as `send` and `connect` take them;
//! * issue 19 item 5: `--ca` with a self-signed certificate made by `openssl req -x509`
//!   (as `curl --cacert` users do) against `openssl s_server`, `--pin` with the fingerprint
//!   as sockit or openssl print it, and every rejection as one sentence;
//! * issue 23 item 1: the TLS client configuration is built once per command, however
//!   many connections it opens, and later connections resume the session.

use std::path::{Path, PathBuf};
use std::process::Output;

use sockit::bench::Report;
use sockit::bench::report::TlsHandshakes;

use crate::peers::{Pki, error_lines, run_peer, spawn_peer, wait_for_stderr};
use crate::util::{Proc, code, describe, run_sockit};

/// The fingerprint a sockit TLS server printed on stderr.
fn printed_fingerprint(server: &Proc) -> String {
    let stderr = wait_for_stderr(server, "SHA-256 fingerprint ");
    stderr
        .split("SHA-256 fingerprint ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .map(str::to_string)
        .unwrap_or_else(|| panic!("no fingerprint in\n{stderr}"))
}

/// Runs a short closed-loop `bench` and returns its output and JSON report.
fn bench(target: &str, extra: &[&str]) -> (Output, Option<Report>) {
    let mut args = vec![
        "bench",
        target,
        // Long enough that a debug build's handshakes on a loaded test machine still
        // leave exchanges in the window; the timeout likewise, so slowness is no error.
        "-d",
        "2s",
        "--timeout",
        "10s",
        "--warmup",
        "0",
        "-c",
        "2",
        "--threads",
        "1",
        "--json",
        "-",
    ];
    args.extend_from_slice(extra);
    let output = run_sockit(&args, None);
    let report = Report::from_json(&String::from_utf8_lossy(&output.stdout)).ok();
    (output, report)
}

/// Asserts a bench run succeeded with exchanges and no error.
fn assert_clean_run(output: &Output, report: Option<&Report>) -> u64 {
    assert_eq!(code(output), 0, "{}", describe(output));
    let report = report.unwrap_or_else(|| panic!("no JSON report\n{}", describe(output)));
    assert!(report.exchanges > 0, "{}", describe(output));
    assert_eq!(report.errors.total, 0, "{}", describe(output));
    report.exchanges
}

/// Asserts a bench run (its JSON report on stdout) succeeded with exchanges and no error;
/// returns its exchanges and its TLS handshake counts.
fn clean_run_handshakes(output: &Output) -> (u64, TlsHandshakes) {
    let report = Report::from_json(&String::from_utf8_lossy(&output.stdout)).ok();
    let exchanges = assert_clean_run(output, report.as_ref());
    let tls = report
        .and_then(|r| r.tls_handshakes)
        .unwrap_or_else(|| panic!("no tls_handshakes in the report\n{}", describe(output)));
    (exchanges, tls)
}

/// Stderr contains no Rust `Debug` output.
fn assert_plain_words(output: &Output) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    for debug in ["Other(", "OtherError", "DnsName(", "IpAddress(", "panicked"] {
        assert!(!stderr.contains(debug), "{debug} in\n{stderr}");
    }
}

#[test]
fn bench_trusts_the_self_signed_server_with_insecure_or_its_pinned_fingerprint() {
    let mut server = Proc::sockit(&["serve", "tls://127.0.0.1:0", "--echo", "-q"]);
    let target = format!("tls://{}", server.listening());
    let fingerprint = printed_fingerprint(&server);

    let (output, report) = bench(&target, &["-p", "echo", "--insecure"]);
    assert_clean_run(&output, report.as_ref());
    let (output, report) = bench(&target, &["-p", "echo", "--pin", &fingerprint]);
    assert_clean_run(&output, report.as_ref());

    // Without a way to trust it: the first failure says which flags help, and they exist.
    let (output, _) = bench(&target, &["-p", "echo"]);
    assert_eq!(code(&output), 7, "{}", describe(&output));
    let lines = error_lines(&output);
    assert!(
        lines
            .iter()
            .any(|l| l.contains("--pin") && l.contains("--insecure")),
        "{}",
        describe(&output)
    );
}

/// `bench --insecure` opens a connection per exchange: the unverified certificate is
/// announced once for the run, not once per handshake.
#[test]
fn bench_insecure_announces_the_unverified_certificate_once() {
    let mut server = Proc::sockit(&["serve", "tls://127.0.0.1:0", "-q"]);
    let target = format!("tls://{}", server.listening());
    let (output, report) = bench(&target, &["-p", "hello", "--insecure", "--no-resume"]);
    let exchanges = assert_clean_run(&output, report.as_ref());
    assert!(exchanges > 2, "{}", describe(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    let announced = stderr.matches("NOT verified: --insecure").count();
    assert_eq!(
        announced,
        1,
        "{exchanges} full handshakes, {announced} announcements\n{}",
        describe(&output)
    );
}

#[test]
fn bench_trusts_a_ca_signed_server_with_ca() {
    let pki = Pki::new();
    let mut server = Proc::sockit(&[
        "serve",
        "tls://127.0.0.1:0",
        "--cert",
        Pki::arg(&pki.leaf),
        "--key",
        Pki::arg(&pki.leaf_key),
        "-q",
    ]);
    let port = server
        .listening()
        .rsplit(':')
        .next()
        .unwrap_or_default()
        .to_string();
    let (output, report) = bench(
        &format!("tls://localhost:{port}"),
        &["--ca", Pki::arg(&pki.ca)],
    );
    assert_clean_run(&output, report.as_ref());
}

/// Issue 23 item 1: one client configuration for the whole run, and the session cache it
/// carries lets later connections resume (the hello pattern opens one per exchange).
#[test]
fn bench_builds_the_tls_client_once_and_resumes_sessions() {
    let mut server = Proc::sockit(&["serve", "tls://127.0.0.1:0", "-q"]);
    let target = format!("tls://{}", server.listening());
    let (output, report) = bench(&target, &["--insecure", "--log-level", "debug"]);
    let exchanges = assert_clean_run(&output, report.as_ref());
    assert!(exchanges >= 2, "{}", describe(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    let built = stderr.matches("client configuration built").count();
    assert_eq!(built, 1, "{exchanges} connections\n{stderr}");
    assert!(stderr.contains("TLS session resumed"), "{stderr}");

    // --no-resume: a full handshake every time, for handshake measurements.
    let (output, report) = bench(
        &target,
        &["--insecure", "--no-resume", "--log-level", "debug"],
    );
    assert_clean_run(&output, report.as_ref());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains("TLS session resumed"), "{stderr}");
}

/// Issue 23: 20 connections, each opening a new TLS connection per exchange, resume
/// nearly every handshake (rustls' own store keeps 8 tickets per server, and resumed
/// about a third); the report counts full and resumed handshakes.
#[test]
fn bench_with_many_connections_resumes_nearly_every_handshake() {
    const CONNECTIONS: u64 = 20;
    let mut server = Proc::sockit(&["serve", "tls://127.0.0.1:0", "-q"]);
    let target = format!("tls://{}", server.listening());
    let connections = CONNECTIONS.to_string();
    let output = run_sockit(
        &[
            "bench",
            &target,
            "-d",
            "2s",
            "--timeout",
            "10s",
            "--warmup",
            "0",
            "-c",
            &connections,
            "--insecure",
            "--json",
            "-",
        ],
        None,
    );
    let (exchanges, tls) = clean_run_handshakes(&output);
    assert!(
        tls.full + tls.resumed >= exchanges,
        "{tls:?}, {exchanges} exchanges"
    );
    // Each connection's first handshake is full; while those first ones run, a newcomer
    // may take a ticket another connection then misses: at most one more per connection.
    assert!(
        tls.full <= 2 * CONNECTIONS,
        "{tls:?}, {exchanges} exchanges\n{}",
        describe(&output)
    );
}

/// Issue 23: against a TLS 1.2-only server without tickets (`openssl s_server -tls1_2
/// -no_ticket`), every connection reuses the session ID of the first full handshake.
#[test]
fn bench_resumes_tls12_session_ids_with_openssl_s_server() {
    const CONNECTIONS: u64 = 4;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let (cert, key) = openssl_self_signed(dir.path());
    let mut server = spawn_peer(
        "openssl",
        &[
            "s_server",
            "-rev",
            "-tls1_2",
            "-no_ticket",
            "-cert",
            &cert.to_string_lossy(),
            "-key",
            &key.to_string_lossy(),
            "-accept",
            "127.0.0.1:0",
        ],
        false,
    );
    let line = server.wait_for_line("ACCEPT", |l| l.starts_with("ACCEPT "));
    let port = line.rsplit(':').next().unwrap_or_default().to_string();
    let connections = CONNECTIONS.to_string();
    let output = run_sockit(
        &[
            "bench",
            &format!("tls://localhost:{port}"),
            "-d",
            "2s",
            "--timeout",
            "10s",
            "--warmup",
            "0",
            "-c",
            &connections,
            // s_server -rev answers each line with the line reversed.
            "--message",
            "hello\n",
            "--reply-until",
            "\\n",
            "--ca",
            &cert.to_string_lossy(),
            "--json",
            "-",
        ],
        None,
    );
    let (exchanges, tls) = clean_run_handshakes(&output);
    // Only the handshakes started before the first one finished are full.
    assert!(
        tls.full <= CONNECTIONS && tls.resumed >= 1,
        "{tls:?}, {exchanges} exchanges\n{}\n{}",
        describe(&output),
        server.report()
    );
}

/// The certificate of issue 19, made as its text says.
fn openssl_self_signed(dir: &Path) -> (PathBuf, PathBuf) {
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    let made = run_peer(
        "openssl",
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost",
            "-days",
            "2",
            "-keyout",
            Pki::arg(&key),
            "-out",
            Pki::arg(&cert),
        ],
        b"",
    );
    assert!(made.status.success(), "{}", describe(&made));
    (cert, key)
}

/// `openssl x509 -fingerprint -sha256` of a certificate file: `AB:CD:…`.
fn openssl_fingerprint(cert: &Path) -> String {
    let shown = run_peer(
        "openssl",
        &[
            "x509",
            "-in",
            Pki::arg(cert),
            "-noout",
            "-fingerprint",
            "-sha256",
        ],
        b"",
    );
    let text = String::from_utf8_lossy(&shown.stdout);
    text.trim()
        .split_once('=')
        .map(|(_, fp)| fp.to_string())
        .unwrap_or_else(|| panic!("no fingerprint: {}", describe(&shown)))
}

/// `openssl s_server -www` with the certificate; returns it and its port.
fn s_server(cert: &Path, key: &Path) -> (Proc, String) {
    let mut server = spawn_peer(
        "openssl",
        &[
            "s_server",
            "-cert",
            Pki::arg(cert),
            "-key",
            Pki::arg(key),
            "-accept",
            "127.0.0.1:0",
            "-www",
        ],
        false,
    );
    let line = server.wait_for_line("ACCEPT", |l| l.starts_with("ACCEPT "));
    let port = line.rsplit(':').next().unwrap_or_default().to_string();
    (server, port)
}

const REQUEST: &[u8] = b"GET / HTTP/1.0\r\n\r\n";

/// Asserts the HTTP page of `s_server -www` came back.
fn assert_page(output: &Output, server: &Proc) {
    assert_eq!(code(output), 0, "{}\n{}", describe(output), server.report());
    assert!(
        output.stdout.starts_with(b"HTTP/1.0 200 ok"),
        "{}",
        describe(output)
    );
    assert_plain_words(output);
}

/// Exactly one `error:` line, exit 7, containing every needle, in plain words.
fn assert_tls_error(output: &Output, needles: &[&str]) {
    assert_eq!(code(output), 7, "{}", describe(output));
    let lines = error_lines(output);
    assert_eq!(lines.len(), 1, "{}", describe(output));
    for needle in needles {
        assert!(
            lines[0].contains(needle),
            "{needle:?} not in {:?}",
            lines[0]
        );
    }
    assert_plain_words(output);
}

#[test]
fn a_self_signed_openssl_certificate_given_as_ca_is_trusted() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let (cert, key) = openssl_self_signed(dir.path());
    let (server, port) = s_server(&cert, &key);
    let by_name = format!("tls://localhost:{port}");
    let ca = Pki::arg(&cert);

    let output = run_sockit(&["connect", &by_name, "--ca", ca], Some(REQUEST));
    assert_page(&output, &server);

    // Still checked: by IP the certificate's name does not match.
    let by_ip = format!("tls://127.0.0.1:{port}");
    let output = run_sockit(&["connect", &by_ip, "--ca", ca], Some(REQUEST));
    assert_tls_error(&output, &["wrong name", "localhost", "127.0.0.1"]);

    // Without --ca: what is wrong and the three ways out, in one sentence.
    let output = run_sockit(&["connect", &by_name], Some(REQUEST));
    assert_tls_error(&output, &["self-signed", "--ca", "--pin", "--insecure"]);

    // Another certificate in --ca does not let it through.
    let pki = Pki::new();
    let output = run_sockit(
        &["connect", &by_name, "--ca", Pki::arg(&pki.ca)],
        Some(REQUEST),
    );
    assert_tls_error(&output, &["ca.pem", "--pin"]);
}

#[test]
fn pin_accepts_the_fingerprint_as_sockit_or_openssl_print_it() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let (cert, key) = openssl_self_signed(dir.path());
    let (server, port) = s_server(&cert, &key);
    let by_ip = format!("tls://127.0.0.1:{port}");
    let fingerprint = openssl_fingerprint(&cert);
    let lowercase_hex = fingerprint.replace(':', "").to_lowercase();

    for pin in [fingerprint.as_str(), lowercase_hex.as_str()] {
        let output = run_sockit(&["connect", &by_ip, "--pin", pin], Some(REQUEST));
        assert_page(&output, &server);
    }

    // A pin that does not match names the fingerprint the server has.
    let mut wrong = lowercase_hex.clone().into_bytes();
    wrong[0] = if wrong[0] == b'0' { b'1' } else { b'0' };
    let wrong = String::from_utf8(wrong).unwrap_or_default();
    let output = run_sockit(&["connect", &by_ip, "--pin", &wrong], Some(REQUEST));
    assert_tls_error(&output, &["matches no --pin", &fingerprint]);

    // A malformed pin is a usage error that says what a fingerprint looks like.
    let output = run_sockit(&["connect", &by_ip, "--pin", "8A:92"], Some(REQUEST));
    assert_eq!(code(&output), 2, "{}", describe(&output));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("64 hex digits"),
        "{}",
        describe(&output)
    );
}

#[test]
fn send_takes_the_same_trust_flags() {
    let mut server = Proc::sockit(&["serve", "tls://127.0.0.1:0", "--echo", "-q"]);
    let target = format!("tls://{}", server.listening());
    let fingerprint = printed_fingerprint(&server);
    let output = run_sockit(&["send", &target, "hi", "--pin", &fingerprint], None);
    assert_eq!(code(&output), 0, "{}", describe(&output));
    assert!(String::from_utf8_lossy(&output.stdout).contains("receive: hi"));
    // TLS flags on a plain endpoint are refused by every command alike.
    for command in ["send", "connect", "bench"] {
        let output = run_sockit(&[command, "tcp://127.0.0.1:9", "--pin", &fingerprint], None);
        assert_eq!(code(&output), 2, "{}", describe(&output));
        assert!(
            String::from_utf8_lossy(&output.stderr).contains("are for tls:// endpoints"),
            "{}",
            describe(&output)
        );
    }
}

//! Issue 19, item 4: mutual TLS. A server with `--client-ca` lets in only clients whose
//! certificate a CA in that file issued, names them in its events and in `--exec`'s
//! environment, and says in one sentence why a client was refused; sockit's client
//! presents `--cert`/`--key` to servers that ask. The peers are OpenSSL (`s_client -cert`,
//! `s_server -Verify 1`) and curl (`--cert`).
//!
//! Issue 23, point 1's small items: TLS 1.2 session IDs resume against sockit's server.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Output;

use crate::peers::{error_lines, poll_until, run_peer, spawn_peer, wait_for_stderr};
use crate::util::{Proc, code, describe, run_sockit};

/// A CA, a server certificate it issued (`localhost`, `127.0.0.1`), a client certificate
/// it issued (`CN=alice`), and a client certificate another CA issued (`CN=mallory`).
struct Mtls {
    _dir: tempfile::TempDir,
    ca: PathBuf,
    server: PathBuf,
    server_key: PathBuf,
    alice: PathBuf,
    alice_key: PathBuf,
    mallory: PathBuf,
    mallory_key: PathBuf,
}

fn ca(name: &str) -> (rcgen::Certificate, rcgen::Issuer<'static, rcgen::KeyPair>) {
    let key = rcgen::KeyPair::generate().unwrap_or_else(|e| panic!("{e}"));
    let mut params =
        rcgen::CertificateParams::new(Vec::<String>::new()).unwrap_or_else(|e| panic!("{e}"));
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    let cert = params.self_signed(&key).unwrap_or_else(|e| panic!("{e}"));
    (cert, rcgen::Issuer::new(params, key))
}

fn leaf(
    issuer: &rcgen::Issuer<'static, rcgen::KeyPair>,
    cn: &str,
    names: &[&str],
    usage: rcgen::ExtendedKeyUsagePurpose,
) -> (rcgen::Certificate, rcgen::KeyPair) {
    let key = rcgen::KeyPair::generate().unwrap_or_else(|e| panic!("{e}"));
    let names = names.iter().map(|n| n.to_string()).collect::<Vec<_>>();
    let mut params = rcgen::CertificateParams::new(names).unwrap_or_else(|e| panic!("{e}"));
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, cn);
    params.extended_key_usages = vec![usage];
    let cert = params
        .signed_by(&key, issuer)
        .unwrap_or_else(|e| panic!("{e}"));
    (cert, key)
}

impl Mtls {
    fn new() -> Mtls {
        use rcgen::ExtendedKeyUsagePurpose::{ClientAuth, ServerAuth};
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let (ca_cert, issuer) = ca("mtls test CA");
        let (_, other) = ca("some other CA");
        let (server, server_key) = leaf(
            &issuer,
            "localhost",
            &["localhost", "127.0.0.1"],
            ServerAuth,
        );
        let (alice, alice_key) = leaf(&issuer, "alice", &["alice.test", "127.0.0.1"], ClientAuth);
        let (mallory, mallory_key) = leaf(&other, "mallory", &["mallory.test"], ClientAuth);
        let write = |name: &str, text: String| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).unwrap_or_else(|e| panic!("{e}"));
            path
        };
        Mtls {
            ca: write("ca.pem", ca_cert.pem()),
            server: write("server.pem", server.pem()),
            server_key: write("server.key", server_key.serialize_pem()),
            alice: write("alice.pem", alice.pem()),
            alice_key: write("alice.key", alice_key.serialize_pem()),
            mallory: write("mallory.pem", mallory.pem()),
            mallory_key: write("mallory.key", mallory_key.serialize_pem()),
            _dir: dir,
        }
    }
}

fn arg(path: &Path) -> &str {
    path.to_str()
        .unwrap_or_else(|| panic!("non-UTF-8 temp path {}", path.display()))
}

/// `sockit serve tls://127.0.0.1:0 --cert … --key … --client-ca CA EXTRA…` with JSON
/// events; returns it and its port.
fn mtls_server(pki: &Mtls, extra: &[&str]) -> (Proc, String) {
    let mut args = vec![
        "serve",
        "tls://127.0.0.1:0",
        "--cert",
        arg(&pki.server),
        "--key",
        arg(&pki.server_key),
        "--client-ca",
        arg(&pki.ca),
        "--log",
        "json",
    ];
    args.extend_from_slice(extra);
    let mut server = Proc::sockit(&args);
    let line = server.wait_for_line("the listening event", |l| l.contains("\"listening\""));
    let port = line
        .split("127.0.0.1:")
        .nth(1)
        .map(|rest| {
            rest.chars()
                .take_while(char::is_ascii_digit)
                .collect::<String>()
        })
        .unwrap_or_else(|| panic!("no port in {line}"));
    (server, port)
}

/// The program every exec test runs: who the server says the client is.
const WHO: &str = "echo \"cn=$SOCKIT_TLS_CLIENT_CN sans=$SOCKIT_TLS_CLIENT_SANS subject=$SOCKIT_TLS_CLIENT_SUBJECT\"";

/// Exactly one `error:` line, exit 7, containing `needle`.
fn assert_one_tls_error(output: &Output, needle: &str) {
    assert_eq!(code(output), 7, "{}", describe(output));
    let lines = error_lines(output);
    assert_eq!(lines.len(), 1, "{}", describe(output));
    assert!(
        lines[0].contains(needle),
        "{needle:?} not in {:?}",
        lines[0]
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !stderr.contains("panicked") && !stderr.contains("Other("),
        "{stderr}"
    );
}

#[test]
fn s_client_with_a_certificate_the_ca_issued_is_named_to_the_program_and_in_events() {
    let pki = Mtls::new();
    let (mut server, port) = mtls_server(&pki, &["--sh-exec", WHO]);
    let connect = format!("127.0.0.1:{port}");
    let shown = run_peer(
        "openssl",
        &[
            "s_client",
            "-connect",
            &connect,
            "-cert",
            arg(&pki.alice),
            "-key",
            arg(&pki.alice_key),
            "-CAfile",
            arg(&pki.ca),
            "-quiet",
            "-verify_return_error",
        ],
        b"",
    );
    let stdout = String::from_utf8_lossy(&shown.stdout);
    assert!(
        stdout.contains("cn=alice sans=DNS:alice.test,IP:127.0.0.1 subject=CN=alice"),
        "{}\n{}",
        describe(&shown),
        server.report()
    );
    let event = server.wait_for_line("the client_certificate event", |l| {
        l.contains("\"client_certificate\"")
    });
    let event: serde_json::Value = serde_json::from_str(&event).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(event["subject"], "CN=alice");
    assert_eq!(event["sans"][0], "DNS:alice.test");
    assert!(event["sha256"].as_str().is_some_and(|fp| fp.len() == 95));
}

#[test]
fn curl_with_cert_gets_the_reply_and_without_one_is_refused_in_one_sentence() {
    let pki = Mtls::new();
    let (server, port) = mtls_server(
        &pki,
        &["--reply", "HTTP/1.0 200 OK\r\n\r\nhi from mtls", "--close"],
    );
    let url = format!("https://localhost:{port}/");
    let with_cert = run_peer(
        "curl",
        &[
            "-sS",
            "--max-time",
            "20",
            "--cacert",
            arg(&pki.ca),
            "--cert",
            arg(&pki.alice),
            "--key",
            arg(&pki.alice_key),
            &url,
        ],
        b"",
    );
    assert_eq!(
        String::from_utf8_lossy(&with_cert.stdout),
        "hi from mtls",
        "{}\n{}",
        describe(&with_cert),
        server.report()
    );
    let without = run_peer(
        "curl",
        &["-sS", "--max-time", "20", "--cacert", arg(&pki.ca), &url],
        b"",
    );
    assert_ne!(code(&without), 0, "{}", describe(&without));
    let stderr = wait_for_stderr(&server, "presented no certificate");
    let line = stderr
        .lines()
        .find(|l| l.contains("presented no certificate"))
        .unwrap_or_default();
    assert!(line.contains("--cert and --key"), "{line}");
}

#[test]
fn sockit_without_a_certificate_or_with_an_untrusted_one_is_refused_on_both_sides() {
    let pki = Mtls::new();
    let (server, port) = mtls_server(&pki, &["--echo"]);
    let target = format!("tls://localhost:{port}");
    let ca = arg(&pki.ca);
    let without = run_sockit(&["send", &target, "hi", "--ca", ca], None);
    assert_one_tls_error(
        &without,
        "the server requires a client certificate; give --cert and --key",
    );
    wait_for_stderr(&server, "the client presented no certificate");
    let mallory = run_sockit(
        &[
            "send",
            &target,
            "hi",
            "--ca",
            ca,
            "--cert",
            arg(&pki.mallory),
            "--key",
            arg(&pki.mallory_key),
        ],
        None,
    );
    assert_one_tls_error(&mallory, "the server rejected our client certificate");
    wait_for_stderr(&server, "is not issued by a CA in --client-ca");
    let alice = run_sockit(
        &[
            "send",
            &target,
            "hi",
            "--ca",
            ca,
            "--cert",
            arg(&pki.alice),
            "--key",
            arg(&pki.alice_key),
        ],
        None,
    );
    assert_eq!(code(&alice), 0, "{}\n{}", describe(&alice), server.report());
    assert!(String::from_utf8_lossy(&alice.stdout).contains("receive: hi"));
}

#[test]
fn client_ca_optional_lets_clients_without_a_certificate_in_unnamed() {
    let pki = Mtls::new();
    let (server, port) = mtls_server(&pki, &["--client-ca-optional", "--sh-exec", WHO]);
    let target = format!("tls://localhost:{port}");
    let ca = arg(&pki.ca);
    let anonymous = run_sockit(&["send", &target, "hi", "--ca", ca], None);
    assert_eq!(
        code(&anonymous),
        0,
        "{}\n{}",
        describe(&anonymous),
        server.report()
    );
    assert!(
        String::from_utf8_lossy(&anonymous.stdout).contains("cn= sans= subject="),
        "{}",
        describe(&anonymous)
    );
    let named = run_sockit(
        &[
            "send",
            &target,
            "hi",
            "--ca",
            ca,
            "--cert",
            arg(&pki.alice),
            "--key",
            arg(&pki.alice_key),
        ],
        None,
    );
    assert!(
        String::from_utf8_lossy(&named.stdout).contains("cn=alice"),
        "{}",
        describe(&named)
    );
    let untrusted = run_sockit(
        &[
            "send",
            &target,
            "hi",
            "--ca",
            ca,
            "--cert",
            arg(&pki.mallory),
            "--key",
            arg(&pki.mallory_key),
        ],
        None,
    );
    assert_one_tls_error(&untrusted, "the server rejected our client certificate");
}

/// `openssl s_server -www` asking for a client certificate (`-Verify 1`).
fn s_server_verifying(pki: &Mtls) -> (Proc, String) {
    let mut server = spawn_peer(
        "openssl",
        &[
            "s_server",
            "-cert",
            arg(&pki.server),
            "-key",
            arg(&pki.server_key),
            "-CAfile",
            arg(&pki.ca),
            "-Verify",
            "1",
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

#[test]
fn sockit_presents_its_certificate_to_openssl_s_server_and_relay_to_its_target() {
    let pki = Mtls::new();
    let (server, port) = s_server_verifying(&pki);
    let target = format!("tls://localhost:{port}");
    let request = "GET / HTTP/1.0\r\n\r\n";
    let ca = arg(&pki.ca);
    let cert = ["--cert", arg(&pki.alice), "--key", arg(&pki.alice_key)];
    let mut args = vec!["send", &target, request, "--ca", ca];
    args.extend_from_slice(&cert);
    let page = run_sockit(&args, None);
    assert_eq!(code(&page), 0, "{}\n{}", describe(&page), server.report());
    assert!(
        String::from_utf8_lossy(&page.stdout).contains("HTTP/1.0 200 ok"),
        "{}",
        describe(&page)
    );
    let mut args = vec!["connect", &target, "--ca", ca];
    args.extend_from_slice(&cert);
    let interactive = run_sockit(&args, Some(request.as_bytes()));
    assert!(
        String::from_utf8_lossy(&interactive.stdout).contains("HTTP/1.0 200 ok"),
        "{}\n{}",
        describe(&interactive),
        server.report()
    );
    let without = run_sockit(&["send", &target, request, "--ca", ca], None);
    assert_one_tls_error(
        &without,
        "the server requires a client certificate; give --cert and --key",
    );
    // The relay presents --target-cert to its tls:// target.
    let mut relay = Proc::sockit(&[
        "relay",
        "tcp://127.0.0.1:0",
        &target,
        "--ca",
        ca,
        "--target-cert",
        arg(&pki.alice),
        "--target-key",
        arg(&pki.alice_key),
    ]);
    let relay_addr = relay.listening();
    let through = run_sockit(&["send", &format!("tcp://{relay_addr}"), request], None);
    assert!(
        String::from_utf8_lossy(&through.stdout).contains("HTTP/1.0 200 ok"),
        "{}\n{}\n{}",
        describe(&through),
        relay.report(),
        server.report()
    );
}

#[test]
fn relay_and_listen_take_client_ca_too() {
    let pki = Mtls::new();
    let mut backend = Proc::sockit(&["serve", "tcp://127.0.0.1:0", "--echo"]);
    let backend_addr = backend.listening();
    let mut relay = Proc::sockit(&[
        "relay",
        "tls://127.0.0.1:0",
        &format!("tcp://{backend_addr}"),
        "--client-ca",
        arg(&pki.ca),
        "--log",
        "text",
    ]);
    let line = relay.wait_for_line("the listening event", |l| l.contains(" listening "));
    let port = line.rsplit(':').next().unwrap_or_default().to_string();
    let target = format!("tls://127.0.0.1:{port}");
    let insecure_alice = [
        "--insecure",
        "--cert",
        arg(&pki.alice),
        "--key",
        arg(&pki.alice_key),
    ];
    let mut args = vec!["send", &target, "through"];
    args.extend_from_slice(&insecure_alice);
    let through = run_sockit(&args, None);
    assert_eq!(
        code(&through),
        0,
        "{}\n{}",
        describe(&through),
        relay.report()
    );
    relay.wait_for_line("the client_certificate event", |l| {
        l.contains(" client_certificate ") && l.contains("subject=\"CN=alice\"")
    });
    let refused = run_sockit(&["send", &target, "through", "--insecure"], None);
    assert_one_tls_error(&refused, "give --cert and --key");

    let mut listen = spawn_peer(
        crate::util::sockit_bin().to_str().unwrap_or_default(),
        &["listen", "tls://127.0.0.1:0", "--client-ca", arg(&pki.ca)],
        true,
    );
    let stderr = wait_for_stderr(&listen, "listening on ");
    let endpoint = stderr
        .lines()
        .find_map(|l| l.strip_prefix("listening on "))
        .unwrap_or_default()
        .to_string();
    let connect = endpoint.trim_start_matches("tls://").to_string();
    let mut client = spawn_peer(
        "openssl",
        &[
            "s_client",
            "-connect",
            &connect,
            "-cert",
            arg(&pki.alice),
            "-key",
            arg(&pki.alice_key),
            "-quiet",
        ],
        true,
    );
    client
        .stdin()
        .write_all(b"hello listener\n")
        .unwrap_or_else(|e| panic!("{e}"));
    listen.wait_for_line("the client's line", |l| l == "hello listener");
    let stderr = wait_for_stderr(&listen, "client certificate");
    assert!(
        stderr.contains("client certificate subject \"CN=alice\""),
        "{stderr}"
    );
}

// Issue 23, point 1: TLS 1.2 session IDs (no tickets) resume against sockit's server,
// as OpenSSL's client sees it.
#[test]
fn a_tls12_session_id_resumes() {
    let mut server = Proc::sockit(&["serve", "tls://127.0.0.1:0", "--echo"]);
    let addr = server.listening();
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let session = dir.path().join("session.pem");
    let session = arg(&session).to_string();
    let run = |flag: &str| {
        let mut client = spawn_peer(
            "openssl",
            &[
                "s_client",
                "-connect",
                &addr,
                "-tls1_2",
                "-no_ticket",
                flag,
                &session,
            ],
            true,
        );
        client
            .stdin()
            .write_all(b"resume-check\n")
            .unwrap_or_else(|e| panic!("{e}"));
        client.wait_for_line("the echo", |l| l == "resume-check");
        client.close_stdin();
        let _ = client.wait_exit();
        client.report()
    };
    let first = run("-sess_out");
    assert!(first.contains("New, TLSv1.2"), "{first}");
    poll_until("the session file", String::new, || {
        Path::new(&session).exists().then_some(())
    });
    let second = run("-sess_in");
    assert!(second.contains("Reused, TLSv1.2"), "{second}");
}

// Issue 23, point 1, and `bench --cert`: sockit's client resumes its sessions with
// `openssl s_server` (here one that asks for a client certificate), so the connections
// after the first skip the certificate exchange.
#[test]
fn bench_presents_its_certificate_and_resumes_with_openssl_s_server() {
    let pki = Mtls::new();
    let mut server = spawn_peer(
        "openssl",
        &[
            "s_server",
            "-rev",
            "-cert",
            arg(&pki.server),
            "-key",
            arg(&pki.server_key),
            "-CAfile",
            arg(&pki.ca),
            "-Verify",
            "1",
            "-accept",
            "127.0.0.1:0",
        ],
        false,
    );
    let line = server.wait_for_line("ACCEPT", |l| l.starts_with("ACCEPT "));
    let port = line.rsplit(':').next().unwrap_or_default().to_string();
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
            "1",
            "--threads",
            "1",
            // s_server -rev answers each line with the line reversed.
            "--message",
            "hello\n",
            "--reply-until",
            "\\n",
            "--ca",
            arg(&pki.ca),
            "--cert",
            arg(&pki.alice),
            "--key",
            arg(&pki.alice_key),
            "--log-level",
            "debug",
        ],
        None,
    );
    assert_eq!(
        code(&output),
        0,
        "{}\n{}",
        describe(&output),
        server.report()
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("TLS session resumed"), "{stderr}");
    assert_eq!(
        stderr.matches("client configuration built").count(),
        1,
        "{stderr}"
    );
}

/// A resumed session still names its client: every connection of a `bench` run (all but
/// the first resumed) gets its `client_certificate` event.
#[test]
fn resumed_sessions_keep_the_client_identity() {
    let pki = Mtls::new();
    let (mut server, port) = mtls_server(&pki, &["--echo"]);
    let output = run_sockit(
        &[
            "bench",
            &format!("tls://localhost:{port}"),
            "-d",
            "1s",
            "--timeout",
            "10s",
            "--warmup",
            "0",
            "-c",
            "1",
            "--threads",
            "1",
            "--ca",
            arg(&pki.ca),
            "--cert",
            arg(&pki.alice),
            "--key",
            arg(&pki.alice_key),
            "--log-level",
            "debug",
        ],
        None,
    );
    assert_eq!(
        code(&output),
        0,
        "{}\n{}",
        describe(&output),
        server.report()
    );
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("TLS session resumed"),
        "{}",
        describe(&output)
    );
    server.signal(libc::SIGTERM);
    server.wait_exit();
    let connected = server
        .stdout
        .iter()
        .filter(|l| l.contains("\"connected\""))
        .count();
    let named = server
        .stdout
        .iter()
        .filter(|l| l.contains("\"client_certificate\"") && l.contains("CN=alice"))
        .count();
    assert!(connected >= 2, "{}", server.report());
    assert_eq!(named, connected, "{}", server.report());
}

//! Issue 2, points 4 and 7: every transport and endpoint form, IPv6, both Unix socket
//! kinds with the stale-file, live-socket and not-a-socket cases.

use std::os::unix::net::{UnixDatagram, UnixListener};

use crate::util::{Proc, code, describe, run_sockit};

/// Serves `endpoint` (quietly) and checks `sockit send` gets `expected` back.
fn round_trip(endpoint: &str, extra: &[&str], message: &str, expected: &str) {
    let mut args = vec!["serve", endpoint];
    args.extend_from_slice(extra);
    let mut server = Proc::sockit(&args);
    let addr = server.listening();
    let target = match endpoint.split_once("://") {
        Some((scheme, _)) => format!("{scheme}://{addr}"),
        None => endpoint.to_string(),
    };
    let output = run_sockit(&["send", &target, message], None);
    assert_eq!(
        code(&output),
        0,
        "{}\n{}",
        describe(&output),
        server.report()
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains(&format!("{expected}\n")), "{stdout}");
}

#[test]
fn tcp_over_ipv6() {
    round_trip("tcp://[::1]:0", &[], "hi6", "receive: hello tcp client");
}

#[test]
fn udp_over_ipv6() {
    round_trip("udp://[::1]:0", &[], "hi6", "hello udp client");
}

#[test]
fn bare_host_port_is_tcp_and_localhost_resolves() {
    let mut server = Proc::sockit(&["serve", "127.0.0.1:0", "--echo"]);
    let addr = server.listening();
    let port = addr.trim_start_matches("127.0.0.1:");
    // `localhost` may resolve to ::1 first; the client tries each address in turn.
    let output = run_sockit(&["send", &format!("localhost:{port}"), "ping"], None);
    assert_eq!(code(&output), 0, "{}", describe(&output));
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "send: ping\nreceive: ping\n\n"
    );
}

#[test]
fn unix_stream_round_trip_and_cleanup() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let path = dir.path().join("s.sock");
    let endpoint = format!("unix:{}", path.display());
    let mut server = Proc::sockit(&["serve", &endpoint]);
    assert_eq!(server.listening(), path.display().to_string());
    let output = run_sockit(&["send", &endpoint], None);
    assert_eq!(code(&output), 0, "{}", describe(&output));
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "send: hello tcp server\nreceive: hello tcp client\n\n"
    );
    server.signal(libc::SIGTERM);
    assert!(server.wait_exit().success(), "{}", server.report());
    assert!(!path.exists(), "socket file left behind after shutdown");
}

#[test]
fn unix_datagram_round_trip_and_cleanup() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let path = dir.path().join("d.sock");
    let endpoint = format!("unixgram:{}", path.display());
    let mut server = Proc::sockit(&["serve", &endpoint]);
    server.listening();
    let output = run_sockit(&["send", &endpoint, "--count", "2"], None);
    assert_eq!(code(&output), 0, "{}", describe(&output));
    let shown = path.display();
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        format!("sendto {shown}: hello udp server\nrecvfrom {shown}: hello udp client\n\n")
            .repeat(2)
    );
    // The client bound an abstract address of its own, so the server could answer it.
    let recv = server.wait_for_line("recvfrom", |l| l.starts_with("recvfrom "));
    assert!(recv.starts_with("recvfrom @sockit-client-"), "{recv}");
    server.signal(libc::SIGTERM);
    assert!(server.wait_exit().success(), "{}", server.report());
    assert!(!path.exists(), "socket file left behind after shutdown");
}

#[test]
fn abstract_unix_sockets_need_no_file() {
    let name = format!("unix:@sockit-test-{}", std::process::id());
    round_trip(&name, &["--echo"], "abstract", "receive: abstract");
    let gram = format!("unixgram:@sockit-test-{}", std::process::id());
    round_trip(&gram, &["--echo"], "abstract", "abstract");
}

#[test]
fn stale_socket_file_is_replaced() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let path = dir.path().join("stale.sock");
    // A server that died leaves its socket file behind: bind, then drop without unlinking.
    drop(UnixListener::bind(&path).unwrap_or_else(|e| panic!("{e}")));
    assert!(path.exists());
    let endpoint = format!("unix:{}", path.display());
    round_trip(&endpoint, &[], "x", "receive: hello tcp client");

    let gram_path = dir.path().join("stale-dgram.sock");
    drop(UnixDatagram::bind(&gram_path).unwrap_or_else(|e| panic!("{e}")));
    round_trip(
        &format!("unixgram:{}", gram_path.display()),
        &[],
        "x",
        "hello udp client",
    );
}

#[test]
fn live_socket_is_address_in_use() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let path = dir.path().join("live.sock");
    let _live = UnixListener::bind(&path).unwrap_or_else(|e| panic!("{e}"));
    let output = run_sockit(&["serve", &format!("unix:{}", path.display())], None);
    assert_eq!(code(&output), 6, "{}", describe(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("already in use") && stderr.contains("live server"),
        "{stderr}"
    );
    assert!(
        path.exists(),
        "a live server's socket file must not be removed"
    );
}

#[test]
fn path_that_is_not_a_socket_is_never_deleted() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let path = dir.path().join("notes.txt");
    std::fs::write(&path, "precious").unwrap_or_else(|e| panic!("{e}"));
    for scheme in ["unix", "unixgram"] {
        let output = run_sockit(&["serve", &format!("{scheme}:{}", path.display())], None);
        assert_eq!(code(&output), 6, "{}", describe(&output));
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("is not a socket"), "{stderr}");
        assert_eq!(
            std::fs::read_to_string(&path).ok().as_deref(),
            Some("precious")
        );
    }
}

#[test]
fn line_framing_answers_each_line_and_keeps_the_connection() {
    let mut server = Proc::sockit(&["serve", "tcp://127.0.0.1:0", "--framing", "line", "--echo"]);
    let addr = server.listening();
    let output = run_sockit(
        &["send", &addr, "abc", "--framing", "line", "--count", "3"],
        None,
    );
    assert_eq!(code(&output), 0, "{}", describe(&output));
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "send: abc\nreceive: abc\n\n".repeat(3)
    );
}

#[test]
fn message_from_stdin_with_count() {
    let mut server = Proc::sockit(&["serve", "tcp://127.0.0.1:0", "--echo"]);
    let addr = server.listening();
    let output = run_sockit(&["send", &addr, "-", "-n", "2"], Some(b"from stdin"));
    assert_eq!(code(&output), 0, "{}", describe(&output));
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "send: from stdin\nreceive: from stdin\n\n".repeat(2)
    );
}

//! Issue 2, points 1–3: the note's demo, exactly, and byte-for-byte interop with the note's
//! own Python programs (`tests/seed/*.py`) in all four directions.

use std::process::Command;

use crate::util::{Proc, code, describe, python, run_sockit, test_file};

/// Runs one of the note's Python clients against `port` and returns its output.
fn python_client(script: &str, port: &str) -> std::process::Output {
    let mut cmd = assert_cmd::Command::new(python());
    cmd.arg("-u")
        .arg(test_file(&format!("seed/{script}")))
        .arg(port)
        .timeout(crate::util::TIMEOUT);
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run python3: {e}"))
}

/// Starts one of the note's Python servers on a free port; returns it and the port.
fn python_server(script: &str) -> (Proc, String) {
    let mut cmd = Command::new(python());
    cmd.arg("-u")
        .arg(test_file(&format!("seed/{script}")))
        .arg("0");
    let mut server = Proc::spawn(cmd, false);
    let addr = server.listening();
    let port = addr.rsplit(':').next().unwrap_or_default().to_string();
    assert_eq!(addr, format!("127.0.0.1:{port}"), "{}", server.report());
    (server, port)
}

/// `connected by 127.0.0.1:50738`: the peer port varies, the rest must not.
fn assert_peer_line(line: &str, prefix: &str, suffix: &str) {
    let rest = line
        .strip_prefix(prefix)
        .and_then(|r| r.strip_suffix(suffix))
        .unwrap_or_else(|| panic!("{line:?} is not {prefix:?} PEER {suffix:?}"));
    let port = rest
        .strip_prefix("127.0.0.1:")
        .unwrap_or_else(|| panic!("peer in {line:?} is not 127.0.0.1:PORT"));
    assert!(port.parse::<u16>().is_ok(), "bad port in {line:?}");
}

#[test]
fn note_tcp_client_against_sockit_serve() {
    let mut server = Proc::sockit(&["serve", "tcp://127.0.0.1:0"]);
    let addr = server.listening();
    let port = addr.trim_start_matches("127.0.0.1:");
    let client = python_client("tcp_client.py", port);
    assert_eq!(
        String::from_utf8_lossy(&client.stdout),
        "send: hello tcp server\nreceive: hello tcp client\n\n",
        "{}",
        describe(&client)
    );
    assert!(client.status.success(), "{}", describe(&client));

    assert_eq!(server.stdout, [format!("server start at: {addr}")]);
    let lines = server.next_lines(5);
    assert_eq!(lines[0], "wait for connection...");
    assert_eq!(lines[1], "");
    assert_peer_line(&lines[2], "connected by ", "");
    assert_eq!(
        lines[3..],
        ["receive: hello tcp server", "send: hello tcp client"]
    );
}

#[test]
fn sockit_send_against_note_tcp_server() {
    let (mut server, port) = python_server("tcp_server.py");
    let output = run_sockit(&["send", &format!("tcp://127.0.0.1:{port}")], None);
    assert_eq!(code(&output), 0, "{}", describe(&output));
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "send: hello tcp server\nreceive: hello tcp client\n\n"
    );
    let connected = server.wait_for_line("connected", |l| l.starts_with("connected by "));
    assert!(
        connected.starts_with("connected by ('127.0.0.1', "),
        "{connected}"
    );
    assert_eq!(
        server.next_lines(2),
        ["receive: hello tcp server", "send: hello tcp client"]
    );
}

#[test]
fn note_udp_client_against_sockit_serve() {
    let mut server = Proc::sockit(&["serve", "udp://127.0.0.1:0"]);
    let addr = server.listening();
    let port = addr.trim_start_matches("127.0.0.1:");
    let client = python_client("udp_client.py", port);
    assert_eq!(
        String::from_utf8_lossy(&client.stdout),
        format!(
            "sendto ('127.0.0.1', {port}): hello udp server\nrecvfrom ('127.0.0.1', {port}): hello udp client\n\n"
        ),
        "{}",
        describe(&client)
    );
    let recv = server.wait_for_line("recvfrom", |l| l.starts_with("recvfrom "));
    assert_peer_line(&recv, "recvfrom ", ": hello udp server");
    let sent = server.next_lines(1).remove(0);
    assert_peer_line(&sent, "sendto ", ": hello udp client");
    // The reply went to the sender's own address.
    assert_eq!(
        recv.split(": ").next().map(|s| &s[9..]),
        sent.split(": ").next().map(|s| &s[7..])
    );
}

#[test]
fn sockit_send_against_note_udp_server() {
    let (mut server, port) = python_server("udp_server.py");
    let output = run_sockit(&["send", &format!("udp://127.0.0.1:{port}")], None);
    assert_eq!(code(&output), 0, "{}", describe(&output));
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        format!(
            "sendto 127.0.0.1:{port}: hello udp server\nrecvfrom 127.0.0.1:{port}: hello udp client\n\n"
        )
    );
    let recv = server.wait_for_line("recvfrom", |l| l.starts_with("recvfrom "));
    assert!(
        recv.starts_with("recvfrom ('127.0.0.1', ") && recv.ends_with("): hello udp server"),
        "{recv}"
    );
}

/// The zero-argument default is the note's fixed 127.0.0.1:8000. If something else holds
/// that port on this machine, the test cannot run and says so instead of failing.
#[test]
fn zero_arguments_are_the_notes_demo_on_port_8000() {
    let mut server = Proc::sockit(&["serve"]);
    let Some(line) = server.try_wait_for_line("listening", |l| l.starts_with("server start at: "))
    else {
        server.wait_exit();
        assert!(
            server.stderr().contains("already in use"),
            "{}",
            server.report()
        );
        eprintln!(
            "SKIPPED: port 8000 is taken on this machine: {}",
            server.stderr()
        );
        return;
    };
    assert_eq!(
        line,
        "server start at: 127.0.0.1:8000",
        "{}",
        server.report()
    );
    let output = run_sockit(&["send"], None);
    assert_eq!(code(&output), 0, "{}", describe(&output));
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "send: hello tcp server\nreceive: hello tcp client\n\n"
    );
    let lines = server.next_lines(5);
    assert_eq!(lines[..2], ["wait for connection...", ""]);
    assert_peer_line(&lines[2], "connected by ", "");
    assert_eq!(
        lines[3..],
        ["receive: hello tcp server", "send: hello tcp client"]
    );
    server.signal(libc::SIGTERM);
    assert!(server.wait_exit().success(), "{}", server.report());
}

#[test]
fn close_flag_closes_after_the_first_reply_like_the_note() {
    let mut server = Proc::sockit(&["serve", "tcp://127.0.0.1:0", "--close"]);
    let addr = server.listening();
    let output = run_sockit(&["send", &addr, "--count", "2"], None);
    assert_eq!(code(&output), 1, "{}", describe(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("closed the connection before replying to message 2 of 2")
            || stderr.contains("connection reset"),
        "{stderr}"
    );
    // The first exchange completed before the close.
    assert!(
        String::from_utf8_lossy(&output.stdout)
            .starts_with("send: hello tcp server\nreceive: hello tcp client\n")
    );
}

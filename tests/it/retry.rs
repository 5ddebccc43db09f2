//! Issue 18, point 3: `--retry N|forever` with `--retry-delay` and `--retry-max-delay`
//! on `send`, `connect` and relay targets. The server comes up only after the client has
//! logged a failed attempt (read from its debug lines, never guessed with a sleep), and
//! socat with `retry=10,interval=0.2` does the same job as the reference.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::util::{Proc, TIMEOUT, code, describe, run_sockit, sockit_command};

/// A port nothing holds at the moment (bound, read back, released).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("{e}"))
}

/// Waits until `proc`'s stderr holds a line matching `failed` (bounded by [`TIMEOUT`]).
fn wait_for_failed_attempt(proc: &Proc, failed: impl Fn(&str) -> bool) {
    let deadline = Instant::now() + TIMEOUT;
    while !proc.stderr().lines().any(&failed) {
        assert!(
            Instant::now() < deadline,
            "no failed attempt logged\n{}",
            proc.report()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Binds `port` now, takes one client, reads until it half-closes or sends `expect`,
/// and answers `reply`.
fn serve_once(port: u16, expect: &[u8], reply: &[u8]) -> Vec<u8> {
    let listener = TcpListener::bind(("127.0.0.1", port)).unwrap_or_else(|e| panic!("{e}"));
    let (mut conn, _) = crate::sockopt::accept_by_deadline(&listener);
    let mut got = Vec::new();
    let mut buf = [0u8; 256];
    while !got.ends_with(expect) {
        match conn.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    conn.write_all(reply).unwrap_or_else(|e| panic!("{e}"));
    got
}

/// Is this sockit's debug line for a failed attempt?
fn sockit_attempt_failed(line: &str) -> bool {
    line.contains("attempt 1 to connect") && line.contains("failed")
}

#[test]
fn send_reaches_a_server_that_comes_up_after_a_failed_attempt() {
    let port = free_port();
    let mut send = Proc::sockit(&[
        "send",
        &format!("127.0.0.1:{port}"),
        "hi",
        "--retry",
        "50",
        "--retry-delay",
        "100ms",
        "--retry-max-delay",
        "200ms",
        "--log-level",
        "debug",
    ]);
    wait_for_failed_attempt(&send, sockit_attempt_failed);
    let got = serve_once(port, b"hi", b"pong");
    assert_eq!(got, b"hi");
    let status = send.wait_exit();
    assert!(status.success(), "{}", send.report());
    assert!(
        send.stdout.iter().any(|l| l.contains("pong")),
        "{}",
        send.report()
    );
}

#[test]
fn connect_and_socat_both_reach_a_server_that_comes_up_late() {
    // sockit connect --retry, then socat retry=10,interval=0.2 (the reference) the same way.
    let port = free_port();
    let mut connect = Proc::spawn(
        sockit_command(&[
            "connect",
            &format!("127.0.0.1:{port}"),
            "--retry",
            "10",
            "--retry-delay",
            "200ms",
            "--retry-max-delay",
            "200ms",
            "--log-level",
            "debug",
        ]),
        true,
    );
    connect
        .stdin()
        .write_all(b"hello\n")
        .unwrap_or_else(|e| panic!("{e}"));
    connect.close_stdin();
    wait_for_failed_attempt(&connect, sockit_attempt_failed);
    assert_eq!(serve_once(port, b"hello\n", b"welcome\n"), b"hello\n");
    assert!(connect.wait_exit().success(), "{}", connect.report());
    assert_eq!(connect.stdout, ["welcome"], "{}", connect.report());

    let port = free_port();
    let mut cmd = Command::new("socat");
    cmd.args(["-d", "-d", "-"])
        .arg(format!("TCP:127.0.0.1:{port},retry=10,interval=0.2"));
    let mut socat = Proc::spawn(cmd, true);
    socat
        .stdin()
        .write_all(b"hello\n")
        .unwrap_or_else(|e| panic!("{e}"));
    socat.close_stdin();
    // socat says nothing about the attempt itself at -d -d, only the warning its
    // failed connect leaves behind.
    wait_for_failed_attempt(&socat, |l| l.contains(" W ") || l.contains(" E "));
    assert_eq!(serve_once(port, b"hello\n", b"welcome\n"), b"hello\n");
    assert!(socat.wait_exit().success(), "{}", socat.report());
    assert_eq!(socat.stdout, ["welcome"], "{}", socat.report());
}

#[test]
fn a_relay_target_that_comes_up_late_is_retried() {
    let target_port = free_port();
    let mut relay = Proc::sockit(&[
        "relay",
        "tcp://127.0.0.1:0",
        &format!("tcp://127.0.0.1:{target_port}"),
        "--retry",
        "forever",
        "--retry-delay",
        "100ms",
        "--retry-max-delay",
        "200ms",
        "--log-level",
        "debug",
    ]);
    let listen = relay.listening();
    let mut client = crate::util::connect_tcp(&listen);
    client.write_all(b"ping").unwrap_or_else(|e| panic!("{e}"));
    wait_for_failed_attempt(&relay, sockit_attempt_failed);
    let got = serve_once(target_port, b"ping", b"pong");
    assert_eq!(got, b"ping");
    let mut reply = [0u8; 4];
    client
        .read_exact(&mut reply)
        .unwrap_or_else(|e| panic!("{e}\n{}", relay.report()));
    assert_eq!(&reply, b"pong");
    relay.signal(libc::SIGTERM);
    relay.wait_exit();
}

#[test]
fn the_final_failure_names_the_attempts_and_keeps_the_exit_code() {
    let port = free_port();
    let output = run_sockit(
        &[
            "send",
            &format!("127.0.0.1:{port}"),
            "hi",
            "--retry",
            "2",
            "--retry-delay",
            "10ms",
        ],
        None,
    );
    assert_eq!(code(&output), 4, "{}", describe(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("(gave up after 3 attempts)"), "{stderr}");
}

#[test]
fn bad_retry_values_are_one_line_and_exit_2() {
    for (args, says) in [
        (
            &["send", "127.0.0.1:9", "--retry", "-1"][..],
            "not a number of retries",
        ),
        (
            &["connect", "127.0.0.1:9", "--retry", "often"],
            "not a number of retries",
        ),
        (
            &["send", "127.0.0.1:9", "--retry", "3", "--retry-delay", "0"],
            "--retry-delay must be more than 0",
        ),
    ] {
        let output = run_sockit(args, None);
        assert_eq!(code(&output), 2, "{args:?}\n{}", describe(&output));
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(says), "{args:?}\n{stderr}");
        assert!(
            stderr
                .lines()
                .next()
                .is_some_and(|l| l.starts_with("error: ")),
            "{stderr}"
        );
    }
}

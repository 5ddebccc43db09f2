//! `serve --busy-poll`: a serving thread that polls before it sleeps must behave exactly
//! like one that sleeps: every client answered, the idle timeout kept, shutdown on
//! SIGTERM. (That polling lowers latency is measured by `bench/pairs.sh hello1bp`, never
//! asserted here.) The clients come back at once, one at a time, which is what opens the
//! polling window, so these runs do poll.

use std::io::{Read, Write};
use std::net::UdpSocket;

use crate::ops::stderr_line;
use crate::util::{Proc, TIMEOUT, connect_tcp as connect, exchange_to_eof};

/// Exchanges per test: enough for the window to open and stay open for most of them.
const ROUNDS: usize = 300;

/// TCP, one connection at a time as in the note; then a silent client is still closed
/// at the idle timeout (polling must not run past the lane's deadline); then SIGTERM.
#[test]
fn tcp_answers_times_out_and_stops_while_polling() {
    let mut server = Proc::sockit(&[
        "serve",
        "tcp://127.0.0.1:0",
        "--close",
        "--busy-poll",
        "200us",
        "--idle-timeout",
        "1s",
        "-q",
    ]);
    let addr = server.listening();
    for round in 0..ROUNDS {
        let reply = exchange_to_eof(&mut connect(&addr), b"hello tcp server");
        assert_eq!(reply, b"hello tcp client", "round {round}");
    }
    let mut silent = connect(&addr);
    let mut byte = [0u8; 1];
    let read = silent.read(&mut byte);
    assert!(
        matches!(read, Ok(0)),
        "the silent client was not closed by the idle timeout: {read:?}\n{}",
        server.report()
    );
    server.signal(libc::SIGTERM);
    let status = server.wait_exit();
    assert!(status.success(), "{status:?}\n{}", server.report());
}

/// UDP: each datagram answered with the note's reply while the loop polls; SIGTERM stops
/// a loop that may be polling or asleep.
#[test]
fn udp_answers_and_stops_while_polling() {
    let mut server = Proc::sockit(&["serve", "udp://127.0.0.1:0", "--busy-poll", "200us", "-q"]);
    let addr = server.listening();
    let client = UdpSocket::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
    client
        .set_read_timeout(Some(TIMEOUT))
        .unwrap_or_else(|e| panic!("{e}"));
    client.connect(&addr).unwrap_or_else(|e| panic!("{e}"));
    let mut reply = [0u8; 64];
    for round in 0..ROUNDS {
        let message = format!("hello udp server {round}");
        client
            .send(message.as_bytes())
            .unwrap_or_else(|e| panic!("{e}"));
        let n = client
            .recv(&mut reply)
            .unwrap_or_else(|e| panic!("round {round}: {e}\n{}", server.report()));
        assert_eq!(&reply[..n], b"hello udp client", "round {round}");
    }
    server.signal(libc::SIGTERM);
    let status = server.wait_exit();
    assert!(status.success(), "{status:?}\n{}", server.report());
}

/// Where it cannot apply (a program per connection waits in the runtime, not in the
/// kernel), the flag is not silently dropped: the server says so, and serves as usual.
#[test]
fn where_polling_does_not_apply_the_server_says_so_and_serves() {
    let mut server = Proc::sockit(&[
        "serve",
        "tcp://127.0.0.1:0",
        "--busy-poll",
        "100us",
        "-q",
        "--exec",
        "cat",
    ]);
    let addr = server.listening();
    let warning = stderr_line(&server, "the no-effect warning", |l| {
        l.contains("--busy-poll has no effect")
    });
    assert!(warning.contains("reply, echo and discard"), "{warning}");
    let mut stream = connect(&addr);
    stream
        .write_all(b"ping\n")
        .unwrap_or_else(|e| panic!("{e}"));
    let mut reply = [0u8; 5];
    stream
        .read_exact(&mut reply)
        .unwrap_or_else(|e| panic!("{e}\n{}", server.report()));
    assert_eq!(&reply, b"ping\n");
}

/// A capture layer also keeps the server off the fast lane; the warning names it, so a
/// user who asked for both knows which flag is the reason.
#[test]
fn the_no_effect_warning_names_capture_as_a_reason() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let capture = dir.path().join("capture");
    let capture = capture.to_string_lossy();
    let server = Proc::sockit(&[
        "serve",
        "tcp://127.0.0.1:0",
        "--echo",
        "--busy-poll",
        "100us",
        "-q",
        "--capture",
        &capture,
    ]);
    let warning = stderr_line(&server, "the no-effect warning", |l| {
        l.contains("--busy-poll has no effect")
    });
    assert!(warning.contains("--capture"), "{warning}");
    assert!(warning.contains("--pcap"), "{warning}");
}

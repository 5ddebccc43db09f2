//! The fast lane (`src/server/lane.rs`): per-message connections served from one epoll
//! set per thread. These cases are the ones an edge-triggered loop gets wrong: input and
//! FIN arriving together, a sender faster than one turn, a reply the client does not read.
//! And one property of the on-the-spot reply path: with `--close` the reply and the FIN
//! share a segment.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::time::Duration;

use crate::ops::stderr_line;
use crate::util::{Proc, connect_tcp as connect, exchange_to_eof};

/// One small exchange on a fresh connection, as the note's client does.
fn hello(addr: &str) -> Vec<u8> {
    let mut stream = connect(addr);
    stream
        .write_all(b"hello tcp server")
        .unwrap_or_else(|e| panic!("{e}"));
    let mut reply = [0u8; 16];
    stream
        .read_exact(&mut reply)
        .unwrap_or_else(|e| panic!("{e}"));
    reply.to_vec()
}

/// A message and the client's FIN in quick succession (often one wake-up): the message
/// is answered and the server then closes, every time. (An edge-triggered loop that took
/// a short read for "nothing more to read" would miss the FIN and hang here.)
#[test]
fn a_message_followed_at_once_by_fin_is_answered_then_closed() {
    let mut server = Proc::sockit(&["serve", "tcp://127.0.0.1:0", "--echo", "-q"]);
    let addr = server.listening();
    for round in 0..200 {
        let mut stream = connect(&addr);
        let message = format!("message {round}");
        stream
            .write_all(message.as_bytes())
            .unwrap_or_else(|e| panic!("{e}"));
        stream
            .shutdown(Shutdown::Write)
            .unwrap_or_else(|e| panic!("{e}"));
        let mut echoed = Vec::new();
        stream
            .read_to_end(&mut echoed)
            .unwrap_or_else(|e| panic!("round {round}: {e}\n{}", server.report()));
        assert_eq!(echoed, message.as_bytes(), "round {round}");
    }
}

/// 4 MiB echoed through 1 KiB reads: far more than one connection's reads per turn, and
/// more than the socket buffers hold, so the connection is carried over between turns and
/// waits for its client to read. Every byte comes back in order, and a second client is
/// answered meanwhile.
#[test]
fn a_sender_faster_than_one_turn_gets_every_byte_back_and_others_are_served() {
    let mut server = Proc::sockit(&["serve", "tcp://127.0.0.1:0", "--echo", "-q"]);
    let addr = server.listening();
    let payload: Vec<u8> = (0..4 << 20).map(|i: u32| (i % 251) as u8).collect();
    let mut stream = connect(&addr);
    let mut writer = stream.try_clone().unwrap_or_else(|e| panic!("{e}"));
    let sent = payload.clone();
    let sender = std::thread::spawn(move || {
        writer.write_all(&sent)?;
        writer.shutdown(Shutdown::Write)
    });
    // Read a little first, so the big sender is surely in flight.
    let mut echoed = vec![0u8; 64 << 10];
    stream
        .read_exact(&mut echoed)
        .unwrap_or_else(|e| panic!("{e}"));
    for _ in 0..20 {
        assert_eq!(hello(&addr), b"hello tcp server");
    }
    stream
        .read_to_end(&mut echoed)
        .unwrap_or_else(|e| panic!("{e}\n{}", server.report()));
    match sender.join() {
        Ok(result) => result.unwrap_or_else(|e| panic!("sending: {e}")),
        Err(_) => panic!("the sending thread panicked"),
    }
    assert_eq!(echoed.len(), payload.len());
    assert!(echoed == payload, "the echo differs from what was sent");
}

/// A client that sends and never reads: once its replies fill the socket buffers it stops
/// being read from; after the idle timeout it is closed with its own warning, while
/// another client is answered all along.
#[test]
fn a_client_that_never_reads_is_closed_after_the_idle_timeout() {
    let mut server = Proc::sockit(&[
        "serve",
        "tcp://127.0.0.1:0",
        "--echo",
        "--idle-timeout",
        "1s",
        "-q",
    ]);
    let addr = server.listening();
    let mut hog = connect(&addr);
    hog.set_write_timeout(Some(Duration::from_millis(200)))
        .unwrap_or_else(|e| panic!("{e}"));
    // Write until the server stops taking bytes (its reply to us is stuck).
    let chunk = [b'x'; 64 << 10];
    let mut written = 0usize;
    while written < 256 << 20 {
        match hog.write(&chunk) {
            Ok(n) => written += n,
            Err(_) => break,
        }
    }
    assert!(
        written < 256 << 20,
        "the server kept reading from a client that never reads"
    );
    assert_eq!(hello(&addr), b"hello tcp server");
    let warning = stderr_line(&server, "the not-reading warning", |l| {
        l.contains("reply not read within 1s")
    });
    assert!(warning.contains("closing connection"), "{warning}");
    assert_eq!(
        hello(&addr),
        b"hello tcp server",
        "still serving after the close"
    );
}

/// With `--close` the reply is the connection's last data, so it leaves together with
/// the server's FIN: the client receives one segment fewer than from the note's server,
/// which writes and then closes. (Counted side by side against such a server on this
/// kernel, so the test does not depend on how many segments a handshake takes here.)
#[test]
fn with_close_the_reply_and_the_fin_share_one_segment() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
    let plain_addr = listener
        .local_addr()
        .unwrap_or_else(|e| panic!("{e}"))
        .to_string();
    // The note's server: recv, send, close.
    let plain = std::thread::spawn(move || -> std::io::Result<()> {
        let (mut stream, _) = listener.accept()?;
        stream.set_read_timeout(Some(crate::util::TIMEOUT))?;
        let mut request = [0u8; 1024];
        let _ = stream.read(&mut request)?;
        stream.write_all(b"hello tcp client")
    });
    let plain_segments = segments_received_in_exchange(&plain_addr);
    // The exchange saw the server's end of stream, so the thread has finished.
    match plain.join() {
        Ok(result) => result.unwrap_or_else(|e| panic!("plain server: {e}")),
        Err(_) => panic!("the plain server's thread panicked"),
    }

    let mut server = Proc::sockit(&["serve", "tcp://127.0.0.1:0", "--close", "-q"]);
    let addr = server.listening();
    let sockit_segments = segments_received_in_exchange(&addr);
    assert_eq!(
        sockit_segments + 1,
        plain_segments,
        "segments received by the client: sockit {sockit_segments}, write-then-close {plain_segments}\n{}",
        server.report()
    );
}

/// The note's exchange, to the server's end of stream; returns how many TCP segments the
/// client received (the kernel's `tcpi_segs_in`).
fn segments_received_in_exchange(addr: &str) -> u32 {
    let mut stream = connect(addr);
    let reply = exchange_to_eof(&mut stream, b"hello tcp server");
    assert_eq!(reply, b"hello tcp client");
    tcp_info(&stream).tcpi_segs_in
}

/// The kernel's `TCP_INFO` for a connection.
fn tcp_info(stream: &TcpStream) -> libc::tcp_info {
    // SAFETY: tcp_info is plain data, all-zero is a valid value, and the kernel writes at
    // most `len` bytes into it.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    let rc = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&mut info as *mut libc::tcp_info).cast(),
            &mut len,
        )
    };
    assert_eq!(rc, 0, "{}", std::io::Error::last_os_error());
    info
}

/// A bulk sender to `--discard -q` wakes the server only once per large chunk, so the
/// last bytes can sit below that mark unread. They still count: the idle check reads
/// them before calling the client silent, the close after the idle timeout is a clean
/// end of stream (closing with unread input would be a reset), and the summary has every
/// byte.
#[test]
fn a_bulk_discard_tail_below_the_wake_mark_is_read_counted_and_closed_cleanly() {
    const BULK: usize = 4 << 20;
    let mut server = Proc::sockit(&[
        "serve",
        "tcp://127.0.0.1:0",
        "--discard",
        "--idle-timeout",
        "1s",
        "-q",
    ]);
    let addr = server.listening();
    let mut client = connect(&addr);
    client
        .write_all(&vec![b'b'; BULK])
        .unwrap_or_else(|e| panic!("{e}"));
    client.write_all(b"tail").unwrap_or_else(|e| panic!("{e}"));
    // No FIN from us: the server ends the connection once we have been quiet for 1 s.
    let mut rest = Vec::new();
    let end = client.read_to_end(&mut rest);
    assert!(
        end.is_ok(),
        "the idle close was not a clean end of stream: {end:?}\n{}",
        server.report()
    );
    assert!(rest.is_empty(), "discard sent something back");
    server.signal(libc::SIGTERM);
    assert!(server.wait_exit().success(), "{}", server.report());
    let stderr = server.stderr();
    let expected = format!(" {} bytes in, 0 bytes out", BULK + 4);
    assert!(
        stderr.contains("summary: 1 connection,") && stderr.contains(&expected),
        "expected {expected:?}\n{}",
        server.report()
    );
}

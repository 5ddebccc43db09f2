//! Issue 3, access control and limits: `--allow` / `--deny` on TCP (IPv4 and IPv6 clients
//! of one dual-stack server), UDP and Unix sockets; `--max-conns` waiting and refusing.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use crate::util::{Proc, TIMEOUT};

/// Starts `sockit serve ENDPOINT --echo ARGS` and returns it with its port.
fn serve(endpoint: &str, args: &[&str]) -> (Proc, u16) {
    let mut argv = vec!["serve", endpoint, "--echo"];
    argv.extend_from_slice(args);
    let mut server = Proc::sockit(&argv);
    let addr = server.listening();
    let port = addr
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {addr}"));
    (server, port)
}

/// What a client got for "ping": the echo, or the server closing on it.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Answer {
    Echo,
    Closed,
}

/// Connects to `host:port`, sends "ping", and reports what came back.
pub(crate) fn ping(host: &str, port: u16) -> Answer {
    let stream =
        TcpStream::connect((host, port)).unwrap_or_else(|e| panic!("connect {host}:{port}: {e}"));
    exchange(stream, host, port)
}

/// Like [`ping`] to 127.0.0.1, from another loopback source address (e.g. 127.0.0.2).
fn ping_from(source: [u8; 4], port: u16) -> Answer {
    use socket2::{Domain, Socket, Type};
    let connect = || -> std::io::Result<TcpStream> {
        let socket = Socket::new(Domain::IPV4, Type::STREAM, None)?;
        socket.bind(&std::net::SocketAddr::from((source, 0)).into())?;
        socket.connect(&std::net::SocketAddr::from(([127, 0, 0, 1], port)).into())?;
        Ok(socket.into())
    };
    let stream = connect().unwrap_or_else(|e| panic!("connect from {source:?}: {e}"));
    exchange(stream, "127.0.0.1", port)
}

/// Sends "ping" on a connected stream and reports what came back.
pub(crate) fn exchange(mut stream: TcpStream, host: &str, port: u16) -> Answer {
    stream.set_read_timeout(Some(TIMEOUT)).ok();
    // The write may already fail if the server closed first; the read tells.
    let _ = stream.write_all(b"ping");
    let mut buf = [0u8; 16];
    match stream.read(&mut buf) {
        Ok(0) => Answer::Closed,
        Ok(n) if &buf[..n] == b"ping" => Answer::Echo,
        Ok(n) => panic!("unexpected answer {:?}", &buf[..n]),
        Err(e) if matches!(e.kind(), ErrorKind::ConnectionReset | ErrorKind::BrokenPipe) => {
            Answer::Closed
        }
        Err(e) => panic!("reading from {host}:{port}: {e}"),
    }
}

/// Stops the server and returns its summary line and everything it logged.
pub(crate) fn stop(mut server: Proc) -> (String, String) {
    server.signal(libc::SIGTERM);
    assert!(server.wait_exit().success(), "{}", server.report());
    // stderr is read by a thread of its own, which may lag behind the exit.
    wait_logged(&server, "summary: ");
    let stderr = server.stderr();
    let summary = stderr
        .lines()
        .find(|l| l.starts_with("summary: "))
        .map(str::to_string)
        .unwrap_or_else(|| panic!("no summary\n{}", server.report()));
    (summary, stderr)
}

/// Stops the server and returns its summary line.
pub(crate) fn summary(server: Proc) -> String {
    stop(server).0
}

/// Waits until the server has logged `needle` on stderr (it is read asynchronously).
pub(crate) fn wait_logged(server: &Proc, needle: &str) {
    crate::procs::eventually(&format!("{needle:?} on stderr"), || {
        let log = server.stderr();
        (!log.contains(needle)).then_some(log)
    });
}

#[test]
fn allow_lets_its_range_in_and_deny_closes_it() {
    let (allowing, port) = serve("tcp://127.0.0.1:0", &["--allow", "127.0.0.1/32"]);
    assert_eq!(
        ping("127.0.0.1", port),
        Answer::Echo,
        "{}",
        allowing.report()
    );
    let line = summary(allowing);
    assert!(line.starts_with("summary: 1 connection"), "{line}");

    let (denying, port) = serve("tcp://127.0.0.1:0", &["--deny", "127.0.0.0/8"]);
    assert_eq!(
        ping("127.0.0.1", port),
        Answer::Closed,
        "{}",
        denying.report()
    );
    let (line, log) = stop(denying);
    assert!(
        line.contains("0 connections") && line.ends_with("1 denied"),
        "{line}"
    );
    assert!(
        log.contains("denied connection from 127.0.0.1:")
            && log.contains("matches --deny 127.0.0.0/8"),
        "{log}"
    );
}

#[test]
fn ipv4_and_ipv6_clients_of_one_dual_stack_server_are_told_apart() {
    // One [::] listener sees 127.0.0.1 as ::ffff:127.0.0.1; the rules still read as IPv4.
    let (server, port) = serve("tcp://[::]:0", &["--allow", "127.0.0.1"]);
    assert_eq!(ping("127.0.0.1", port), Answer::Echo, "{}", server.report());
    assert_eq!(ping("::1", port), Answer::Closed, "{}", server.report());
    let line = summary(server);
    assert!(
        line.contains("1 connection") && line.ends_with("1 denied"),
        "{line}"
    );

    let (server, port) = serve("tcp://[::]:0", &["--deny", "::1"]);
    assert_eq!(ping("::1", port), Answer::Closed, "{}", server.report());
    assert_eq!(ping("127.0.0.1", port), Answer::Echo, "{}", server.report());
}

#[test]
fn deny_wins_over_allow() {
    let (server, port) = serve(
        "tcp://127.0.0.1:0",
        &["--allow", "127.0.0.0/8", "--deny", "127.0.0.1"],
    );
    assert_eq!(
        ping("127.0.0.1", port),
        Answer::Closed,
        "{}",
        server.report()
    );
    assert_eq!(
        ping_from([127, 0, 0, 2], port),
        Answer::Echo,
        "{}",
        server.report()
    );
}

/// Sends `flood` datagrams to `port` from 127.0.0.1 (the sender the tests deny), then
/// checks that a ::1 sender gets its echo: one socket receives in order, so by then the
/// whole flood has been received and judged. Returns the denied sender's socket, so the
/// caller can check nothing came back to it.
pub(crate) async fn flood_then_echo_from_an_allowed_sender(
    port: u16,
    flood: usize,
    report: impl Fn() -> String,
) -> tokio::net::UdpSocket {
    let denied = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    for i in 0..flood {
        denied
            .send_to(format!("denied {i}").as_bytes(), ("127.0.0.1", port))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }
    let allowed = tokio::net::UdpSocket::bind("[::1]:0")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let mut buf = [0u8; 64];
    // UDP may drop a datagram: a bounded number of tries.
    for _ in 0..5 {
        allowed
            .send_to(b"allowed", ("::1", port))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        if let Ok(Ok((n, _))) =
            tokio::time::timeout(Duration::from_secs(2), allowed.recv_from(&mut buf)).await
        {
            assert_eq!(&buf[..n], b"allowed");
            return denied;
        }
    }
    panic!("the allowed sender got no echo\n{}", report());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn denied_datagrams_are_dropped_counted_and_logged_at_a_bounded_rate() {
    let (server, port) = serve("udp://[::]:0", &["--deny", "127.0.0.0/8"]);
    const FLOOD: usize = 50;
    let denied = flood_then_echo_from_an_allowed_sender(port, FLOOD, || server.report()).await;
    // The denied sender got nothing back.
    let mut buf = [0u8; 64];
    let nothing =
        tokio::time::timeout(Duration::from_millis(300), denied.recv_from(&mut buf)).await;
    assert!(nothing.is_err(), "a denied sender got a reply");
    let (line, log) = stop(server);
    assert!(line.ends_with(&format!("{FLOOD} denied")), "{line}");
    let logged = log
        .matches("denied datagram from [::ffff:127.0.0.1]:")
        .count();
    assert!(
        (1..FLOOD).contains(&logged),
        "{logged} lines for {FLOOD} denied datagrams: the log must be rate-limited\n{log}"
    );
}

#[test]
fn unix_clients_are_not_ip_filtered_and_the_server_says_so() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let path = dir.path().join("a.sock");
    let mut server = Proc::sockit(&[
        "serve",
        &format!("unix:{}", path.display()),
        "--echo",
        "--deny",
        "0.0.0.0/0",
    ]);
    server.listening();
    let mut stream =
        std::os::unix::net::UnixStream::connect(&path).unwrap_or_else(|e| panic!("{e}"));
    stream.set_read_timeout(Some(TIMEOUT)).ok();
    stream.write_all(b"ping").unwrap_or_else(|e| panic!("{e}"));
    let mut buf = [0u8; 4];
    stream
        .read_exact(&mut buf)
        .unwrap_or_else(|e| panic!("{e}\n{}", server.report()));
    assert_eq!(&buf, b"ping");
    wait_logged(
        &server,
        "Unix socket clients have none and are not filtered",
    );
}

/// A connected client that has been served once (so it holds its slot).
pub(crate) fn served_client(port: u16) -> TcpStream {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap_or_else(|e| panic!("{e}"));
    stream.set_read_timeout(Some(TIMEOUT)).ok();
    stream.write_all(b"one").unwrap_or_else(|e| panic!("{e}"));
    let mut buf = [0u8; 3];
    stream
        .read_exact(&mut buf)
        .unwrap_or_else(|e| panic!("{e}"));
    stream
}

#[test]
fn max_conns_wait_holds_the_next_client_until_a_slot_frees() {
    let (server, port) = serve("tcp://127.0.0.1:0", &["--max-conns", "1"]);
    let first = served_client(port);
    // The second connects (the kernel queues it) but is not served while the first stays.
    let mut second = TcpStream::connect(("127.0.0.1", port)).unwrap_or_else(|e| panic!("{e}"));
    second.write_all(b"two").unwrap_or_else(|e| panic!("{e}"));
    second
        .set_read_timeout(Some(Duration::from_millis(500)))
        .ok();
    let mut buf = [0u8; 3];
    match second.read(&mut buf) {
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
        other => panic!("the second client was served over --max-conns 1: {other:?}"),
    }
    drop(first);
    second.set_read_timeout(Some(TIMEOUT)).ok();
    second.read_exact(&mut buf).unwrap_or_else(|e| {
        panic!(
            "the waiting client was never served: {e}\n{}",
            server.report()
        )
    });
    assert_eq!(&buf, b"two");
    let line = summary(server);
    assert!(
        line.contains("2 connections") && !line.contains("refused"),
        "{line}"
    );
}

#[test]
fn max_conns_refuse_closes_the_extra_client_at_once() {
    let (server, port) = serve(
        "tcp://127.0.0.1:0",
        &["--max-conns", "1", "--max-conns-mode", "refuse"],
    );
    let first = served_client(port);
    assert_eq!(
        ping("127.0.0.1", port),
        Answer::Closed,
        "{}",
        server.report()
    );
    wait_logged(&server, "(--max-conns 1, --max-conns-mode refuse)");
    assert!(
        server
            .stderr()
            .contains("refused connection from 127.0.0.1:"),
        "{}",
        server.report()
    );
    // Once the first leaves, a new client gets its slot. The server frees the slot when
    // its task ends, just after the client sees the close, so allow a few attempts.
    drop(first);
    let deadline = std::time::Instant::now() + TIMEOUT;
    while ping("127.0.0.1", port) != Answer::Echo {
        assert!(
            std::time::Instant::now() < deadline,
            "the slot was never freed\n{}",
            server.report()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let line = summary(server);
    assert!(line.contains("2 connections"), "{line}");
    assert!(line.contains(" refused"), "{line}");
}

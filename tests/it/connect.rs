//! Issue 3, point 1: `sockit connect`, the interactive client, over every transport, with
//! half-close in both directions, `--close-on-eof` (nc -N), `--quit-after`, `--no-stdin`, `--crlf`, `--idle-timeout`, a person
//! typing, and real servers nobody here wrote (ncat, socat, nc).

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, UdpSocket};
use std::os::unix::net::UnixDatagram;
use std::sync::mpsc;
use std::thread;

use crate::peers::{listening_port, spawn_peer, wait_for_stderr};
use crate::util::{Proc, TIMEOUT, code, describe, join, one_shot_server, run_sockit};

/// Our EOF on stdin reaches the server as a FIN (it reads to the end), and we still
/// print the reply it sends after that: the HTTP/1.0 pattern in a pipeline.
#[test]
fn pipeline_half_closes_and_prints_the_reply_until_the_server_closes() {
    let (addr, server) = one_shot_server(|mut stream| {
        let mut request = Vec::new();
        stream
            .read_to_end(&mut request)
            .unwrap_or_else(|e| panic!("{e}"));
        stream
            .write_all(b"HTTP/1.0 200 OK\r\n\r\nbody")
            .unwrap_or_else(|e| panic!("{e}"));
        request
    });
    let output = run_sockit(
        &["connect", &format!("tcp://{addr}")],
        Some(b"GET / HTTP/1.0\r\n\r\n"),
    );
    assert_eq!(code(&output), 0, "{}", describe(&output));
    assert_eq!(output.stdout, b"HTTP/1.0 200 OK\r\n\r\nbody");
    assert_eq!(join(server), b"GET / HTTP/1.0\r\n\r\n");
}

/// The server shuts down its sending side first; what stdin still holds must still
/// reach it (nc and ncat behave the same way).
#[test]
fn server_half_close_first_and_the_client_keeps_sending() {
    let (addr, server) = one_shot_server(|mut stream| {
        stream
            .write_all(b"greeting\n")
            .unwrap_or_else(|e| panic!("{e}"));
        stream
            .shutdown(Shutdown::Write)
            .unwrap_or_else(|e| panic!("{e}"));
        let mut rest = Vec::new();
        stream
            .read_to_end(&mut rest)
            .unwrap_or_else(|e| panic!("{e}"));
        rest
    });
    let mut client = Proc::spawn(
        crate::util::sockit_command(&["connect", &format!("tcp://{addr}")]),
        true,
    );
    client.wait_for_line("the greeting", |l| l == "greeting");
    client
        .stdin()
        .write_all(b"sent after the server's FIN\n")
        .unwrap_or_else(|e| panic!("{e}"));
    client.close_stdin();
    assert!(client.wait_exit().success(), "{}", client.report());
    assert_eq!(join(server), b"sent after the server's FIN\n");
}

/// A person typing: each line goes out when typed, long before stdin ends.
#[test]
fn typed_lines_are_sent_at_once_not_at_eof() {
    let mut server = Proc::sockit(&["serve", "tcp://127.0.0.1:0", "--echo", "-q"]);
    let addr = server.listening();
    let mut client = Proc::spawn(
        crate::util::sockit_command(&["connect", &format!("tcp://{addr}")]),
        true,
    );
    for line in ["first line", "second line"] {
        client
            .stdin()
            .write_all(format!("{line}\n").as_bytes())
            .unwrap_or_else(|e| panic!("{e}"));
        client.stdin().flush().unwrap_or_else(|e| panic!("{e}"));
        // The echo arrives while stdin is still open.
        client.wait_for_line(line, |l| l == line);
    }
    client.close_stdin();
    assert!(client.wait_exit().success(), "{}", client.report());
}

/// `--quit-after` stops once the server has been quiet that long after stdin ended,
/// although it never closes, and the reply it sent is printed in full; without it the
/// client would wait for the close (the run would time out and fail).
#[test]
fn quit_after_stops_once_a_server_that_never_closes_is_quiet() {
    let (tx, rx) = mpsc::channel::<()>();
    let (addr, server) = one_shot_server(move |mut stream| {
        let mut got = [0u8; 5];
        stream
            .read_exact(&mut got)
            .unwrap_or_else(|e| panic!("{e}"));
        stream
            .write_all(b"reply\n")
            .unwrap_or_else(|e| panic!("{e}"));
        // Hold the connection open until the test is done.
        let _ = rx.recv_timeout(TIMEOUT);
        got
    });
    let output = run_sockit(
        &["connect", &format!("tcp://{addr}"), "--quit-after", "300ms"],
        Some(b"hello"),
    );
    assert_eq!(code(&output), 0, "{}", describe(&output));
    assert_eq!(output.stdout, b"reply\n");
    let _ = tx.send(());
    assert_eq!(&join(server), b"hello");
}

/// Issue 15, item 1: `--close-on-eof` is nc -N. The reply a server sends after our FIN
/// is printed in full, even when it comes late; exit 0 only once the server closed.
#[test]
fn close_on_eof_prints_the_reply_sent_after_our_fin() {
    let (addr, server) = one_shot_server(|mut stream| {
        let mut request = Vec::new();
        stream
            .read_to_end(&mut request)
            .unwrap_or_else(|e| panic!("{e}"));
        // Answer only after the client's FIN, a little at a time.
        for part in [&b"late "[..], b"reply"] {
            thread::sleep(std::time::Duration::from_millis(100));
            stream.write_all(part).unwrap_or_else(|e| panic!("{e}"));
        }
        request
    });
    let output = run_sockit(
        &["connect", &format!("tcp://{addr}"), "--close-on-eof"],
        Some(b"hello"),
    );
    assert_eq!(code(&output), 0, "{}", describe(&output));
    assert_eq!(output.stdout, b"late reply");
    assert_eq!(join(server), b"hello");
}

/// Issue 15, item 1: a GET through `--close-on-eof` to `python3 -m http.server` gets
/// what `nc -N` gets (the whole response; only the Date header may differ).
#[test]
fn close_on_eof_gets_what_nc_n_gets_from_python_http_server() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(
        dir.path().join("index.html"),
        "<p>hello from http.server</p>\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let root = dir.path().to_string_lossy().into_owned();
    let server = spawn_peer(
        &crate::util::python(),
        &[
            "-m",
            "http.server",
            "0",
            "--bind",
            "127.0.0.1",
            "--directory",
            &root,
        ],
        false,
    );
    let port = listening_port(&server).to_string();
    let request = b"GET /index.html HTTP/1.0\r\n\r\n";
    let nc = crate::peers::run_peer("nc", &["-N", "127.0.0.1", &port], request);
    assert_eq!(code(&nc), 0, "nc: {}", describe(&nc));
    let ours = run_sockit(
        &[
            "connect",
            &format!("tcp://127.0.0.1:{port}"),
            "--close-on-eof",
        ],
        Some(request),
    );
    assert_eq!(code(&ours), 0, "{}\n{}", describe(&ours), server.report());
    let without_date = |bytes: &[u8]| -> String {
        String::from_utf8_lossy(bytes)
            .split("\r\n")
            .filter(|line| !line.starts_with("Date:"))
            .collect::<Vec<_>>()
            .join("\r\n")
    };
    assert!(
        nc.stdout.ends_with(b"<p>hello from http.server</p>\n"),
        "{}",
        describe(&nc)
    );
    assert_eq!(ours.stdout.len(), nc.stdout.len());
    assert_eq!(without_date(&ours.stdout), without_date(&nc.stdout));
}

/// An echo server on its own thread: each of `clients` connections gets its bytes back
/// until it half-closes, then the server closes.
fn echo_server(clients: usize) -> (String, thread::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
    let addr = listener
        .local_addr()
        .unwrap_or_else(|e| panic!("{e}"))
        .to_string();
    let handle = thread::spawn(move || {
        for _ in 0..clients {
            let (mut stream, _) = listener.accept().unwrap_or_else(|e| panic!("accept: {e}"));
            stream.set_read_timeout(Some(TIMEOUT)).ok();
            let mut reader = stream.try_clone().unwrap_or_else(|e| panic!("{e}"));
            std::io::copy(&mut reader, &mut stream).unwrap_or_else(|e| panic!("echo: {e}"));
        }
    });
    (addr, handle)
}

/// Issue 15, item 1: 1 MB through an echo server comes back whole with
/// `--close-on-eof`, as it does with `nc -N`.
#[test]
fn close_on_eof_gets_a_whole_megabyte_back_like_nc_n() {
    let payload: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
    let (addr, server) = echo_server(2);
    let (host, port) = addr.rsplit_once(':').unwrap_or_else(|| panic!("{addr}"));
    let nc = crate::peers::run_peer("nc", &["-N", host, port], &payload);
    assert_eq!(code(&nc), 0, "nc: {}", describe(&nc));
    let ours = run_sockit(
        &["connect", &format!("tcp://{addr}"), "--close-on-eof"],
        Some(&payload),
    );
    assert_eq!(code(&ours), 0, "{}", describe(&ours));
    assert_eq!(nc.stdout.len(), payload.len(), "nc itself lost bytes");
    assert_eq!(ours.stdout.len(), payload.len());
    assert!(ours.stdout == payload, "the bytes differ");
    join(server);
}

/// Issue 15, item 1: the `connect --help` example,
/// `--close-on-eof < request.bin > reply.bin` against `serve --echo` on a Unix socket,
/// leaves the whole reply in reply.bin.
#[test]
fn close_on_eof_help_example_fills_reply_bin() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let socket = dir.path().join("s.sock");
    let endpoint = format!("unix:{}", socket.display());
    let mut server = Proc::sockit(&["serve", &endpoint, "--echo", "-q"]);
    server.listening();
    let request: Vec<u8> = (0..100_000u32).map(|i| b'a' + (i % 26) as u8).collect();
    let request_path = dir.path().join("request.bin");
    let reply_path = dir.path().join("reply.bin");
    std::fs::write(&request_path, &request).unwrap_or_else(|e| panic!("{e}"));
    let open = |path: &std::path::Path| std::fs::File::open(path).unwrap_or_else(|e| panic!("{e}"));
    let mut client = crate::util::sockit_command(&["connect", &endpoint, "--close-on-eof"]);
    client
        .stdin(open(&request_path))
        .stdout(std::fs::File::create(&reply_path).unwrap_or_else(|e| panic!("{e}")));
    let mut child = client.spawn().unwrap_or_else(|e| panic!("{e}"));
    let status = crate::util::exit_within_timeout(&mut child)
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|| {
            let _ = child.kill();
            panic!("connect did not finish")
        });
    assert!(status.success(), "{status}\n{}", server.report());
    let reply = std::fs::read(&reply_path).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(reply.len(), request.len());
    assert!(reply == request, "reply.bin differs from request.bin");
}

/// `--no-stdin` (nc -d) leaves stdin alone and sends no FIN: the server's greeting is
/// printed until the server closes.
#[test]
fn no_stdin_sends_nothing_and_prints_until_the_server_closes() {
    let (addr, server) = one_shot_server(|mut stream| {
        stream
            .write_all(b"greeting\n")
            .unwrap_or_else(|e| panic!("{e}"));
        stream
            .set_read_timeout(Some(std::time::Duration::from_millis(300)))
            .ok();
        let mut got = [0u8; 1];
        // Nothing arrives, not even an EOF, before we close.
        let quiet =
            matches!(stream.read(&mut got), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock);
        stream.shutdown(Shutdown::Both).ok();
        quiet
    });
    let output = run_sockit(
        &["connect", &format!("tcp://{addr}"), "--no-stdin"],
        Some(b"must not be sent"),
    );
    assert_eq!(code(&output), 0, "{}", describe(&output));
    assert_eq!(output.stdout, b"greeting\n");
    assert!(join(server), "the client sent something or half-closed");
}

#[test]
fn crlf_sends_crlf_line_endings() {
    let (addr, server) = one_shot_server(|mut stream| {
        let mut request = Vec::new();
        stream
            .read_to_end(&mut request)
            .unwrap_or_else(|e| panic!("{e}"));
        request
    });
    let output = run_sockit(
        &["connect", &format!("tcp://{addr}"), "--crlf"],
        Some(b"HELO a\nQUIT\r\n"),
    );
    assert_eq!(code(&output), 0, "{}", describe(&output));
    assert_eq!(join(server), b"HELO a\r\nQUIT\r\n");
}

/// A server that says nothing and a stdin that never ends: `--idle-timeout` ends it.
#[test]
fn idle_timeout_ends_a_silent_conversation() {
    let (tx, rx) = mpsc::channel::<()>();
    let (addr, server) = one_shot_server(move |_stream| {
        let _ = rx.recv_timeout(TIMEOUT);
    });
    let mut client = Proc::spawn(
        crate::util::sockit_command(&["connect", &format!("tcp://{addr}"), "-i", "300ms"]),
        true,
    );
    let status = client.wait_exit();
    assert!(status.success(), "{}", client.report());
    let _ = tx.send(());
    join(server);
}

#[test]
fn refused_and_timeout_have_their_exit_codes() {
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("{e}"));
    let output = run_sockit(&["connect", &format!("tcp://127.0.0.1:{port}")], Some(b""));
    assert_eq!(code(&output), 4, "{}", describe(&output));
    assert!(String::from_utf8_lossy(&output.stderr).contains("connection refused"));
}

/// UDP: each read of stdin is a datagram; the reply is printed; after stdin ends the
/// client waits for the idle time and exits 0.
#[test]
fn udp_sends_datagrams_and_prints_replies() {
    let server = UdpSocket::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
    server.set_read_timeout(Some(TIMEOUT)).ok();
    let addr = server.local_addr().unwrap_or_else(|e| panic!("{e}"));
    let echo = thread::spawn(move || {
        let mut buf = [0u8; 2048];
        let (n, peer) = server.recv_from(&mut buf).unwrap_or_else(|e| panic!("{e}"));
        let mut reply = b"re: ".to_vec();
        reply.extend_from_slice(&buf[..n]);
        server
            .send_to(&reply, peer)
            .unwrap_or_else(|e| panic!("{e}"));
        buf[..n].to_vec()
    });
    let output = run_sockit(
        &["connect", &format!("udp://{addr}"), "-i", "500ms"],
        Some(b"ping\n"),
    );
    assert_eq!(code(&output), 0, "{}", describe(&output));
    assert_eq!(output.stdout, b"re: ping\n");
    assert_eq!(join(echo), b"ping\n");
}

#[test]
fn unix_datagram_round_trip() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let path = dir.path().join("d.sock");
    let server = UnixDatagram::bind(&path).unwrap_or_else(|e| panic!("{e}"));
    server.set_read_timeout(Some(TIMEOUT)).ok();
    let echo = thread::spawn(move || {
        use std::os::linux::net::SocketAddrExt;
        let mut buf = [0u8; 2048];
        let (n, peer) = server.recv_from(&mut buf).unwrap_or_else(|e| panic!("{e}"));
        // The client binds an abstract name of its own so that replies can reach it.
        let name = peer
            .as_abstract_name()
            .unwrap_or_else(|| panic!("the client should have an abstract address"))
            .to_vec();
        let to = std::os::unix::net::SocketAddr::from_abstract_name(&name)
            .unwrap_or_else(|e| panic!("{e}"));
        server
            .send_to_addr(&buf[..n], &to)
            .unwrap_or_else(|e| panic!("{e}"));
    });
    let output = run_sockit(
        &[
            "connect",
            &format!("unixgram:{}", path.display()),
            "-i",
            "500ms",
        ],
        Some(b"over unixgram"),
    );
    assert_eq!(code(&output), 0, "{}", describe(&output));
    assert_eq!(output.stdout, b"over unixgram");
    join(echo);
}

/// Input the server no longer takes is lost: once the server has closed completely,
/// further stdin makes the run fail (exit 1) instead of ending with 0.
#[test]
fn input_the_server_no_longer_takes_fails_the_run() {
    let (addr, server) = one_shot_server(|mut stream| {
        let mut got = [0u8; 5];
        stream
            .read_exact(&mut got)
            .unwrap_or_else(|e| panic!("{e}"));
        // Dropping the stream closes it completely.
    });
    let mut client = Proc::spawn(
        crate::util::sockit_command(&["connect", &format!("tcp://{addr}")]),
        true,
    );
    client
        .stdin()
        .write_all(b"hello")
        .unwrap_or_else(|e| panic!("{e}"));
    join(server);
    wait_for_stderr(&client, "closed its side");
    // The first write after the close is taken by the kernel and answered with a reset;
    // a later one fails. Keep typing until the client gives up (bounded by TIMEOUT).
    let report = client.report();
    crate::peers::poll_until(
        "the client to stop",
        || report.clone(),
        || {
            let typed = client
                .stdin()
                .write_all(b"more\n")
                .and_then(|()| client.stdin().flush());
            (typed.is_err() || !client.is_running()).then_some(())
        },
    );
    client.close_stdin();
    let status = client.wait_exit();
    assert_eq!(status.code(), Some(1), "{}", client.report());
    assert!(
        client.stderr().contains("before all of stdin was sent"),
        "{}",
        client.report()
    );
}

/// A Unix datagram server that answers the first datagram with `reply_len` bytes.
pub fn big_unixgram_replier(path: &std::path::Path, reply_len: usize) -> thread::JoinHandle<()> {
    let server = UnixDatagram::bind(path).unwrap_or_else(|e| panic!("{e}"));
    server.set_read_timeout(Some(TIMEOUT)).ok();
    thread::spawn(move || {
        use std::os::linux::net::SocketAddrExt;
        let mut buf = [0u8; 2048];
        let (_, peer) = server.recv_from(&mut buf).unwrap_or_else(|e| panic!("{e}"));
        let name = peer
            .as_abstract_name()
            .unwrap_or_else(|| panic!("the client should have an abstract address"))
            .to_vec();
        let to = std::os::unix::net::SocketAddr::from_abstract_name(&name)
            .unwrap_or_else(|e| panic!("{e}"));
        let reply: Vec<u8> = (0..reply_len).map(|i| b'a' + (i % 26) as u8).collect();
        server
            .send_to_addr(&reply, &to)
            .unwrap_or_else(|e| panic!("{e}"));
    })
}

/// A Unix datagram reply larger than any UDP datagram (100,000 bytes) is printed whole,
/// not cut to 65,507 bytes without a word.
#[test]
fn a_unix_datagram_reply_larger_than_udp_allows_arrives_whole() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let path = dir.path().join("big.sock");
    let server = big_unixgram_replier(&path, 100_000);
    let output = run_sockit(
        &[
            "connect",
            &format!("unixgram:{}", path.display()),
            "-i",
            "500ms",
        ],
        Some(b"send me a lot"),
    );
    assert_eq!(code(&output), 0, "{}", describe(&output));
    assert_eq!(output.stdout.len(), 100_000);
    join(server);
}

/// Interop: ncat as the server, both directions with half-close: ncat sends its stdin
/// and shuts down its side at the end of it; we send ours and shut down; each prints
/// what the other sent. (ncat --exec is not used: ncat drops the child's output once the
/// client half-closes.)
fn ncat_conversation(ncat: &mut Proc, endpoint: &str) {
    ncat.stdin()
        .write_all(b"from ncat\n")
        .unwrap_or_else(|e| panic!("{e}"));
    ncat.close_stdin();
    let output = run_sockit(&["connect", endpoint], Some(b"from sockit\n"));
    assert_eq!(code(&output), 0, "{}\n{}", describe(&output), ncat.report());
    assert_eq!(output.stdout, b"from ncat\n");
    ncat.wait_for_line("what sockit sent", |l| l == "from sockit");
}

#[test]
fn ncat_server() {
    let mut ncat = spawn_peer("ncat", &["-l", "127.0.0.1", "0"], true);
    let port = listening_port(&ncat);
    ncat_conversation(&mut ncat, &format!("tcp://127.0.0.1:{port}"));
}

/// Interop: ncat listening on a Unix socket, for `connect unix:`.
#[test]
fn ncat_unix_server() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let path = dir.path().join("ncat.sock");
    let path_text = path.display().to_string();
    let mut ncat = spawn_peer("ncat", &["-lU", &path_text], true);
    crate::peers::poll_until(
        "ncat's socket",
        || ncat.report(),
        || listening_unix(&path).then_some(()),
    );
    ncat_conversation(&mut ncat, &format!("unix:{path_text}"));
}

/// Whether a listening Unix stream socket is bound at `path` (from /proc/net/unix, so no
/// connection is spent on checking).
fn listening_unix(path: &std::path::Path) -> bool {
    let Ok(table) = std::fs::read_to_string("/proc/net/unix") else {
        return false;
    };
    let path = path.display().to_string();
    // Flags 00010000 = __SO_ACCEPTCON (listening).
    table
        .lines()
        .any(|line| line.ends_with(&path) && line.contains(" 00010000 "))
}

/// Interop: socat as an echo server (`PIPE`), for `connect`.
#[test]
fn socat_server() {
    let socat = spawn_peer(
        "socat",
        &["-d", "-d", "TCP-LISTEN:0,bind=127.0.0.1", "PIPE"],
        false,
    );
    let stderr = wait_for_stderr(&socat, "listening on");
    let port = stderr
        .lines()
        .find_map(|l| l.split("listening on AF=2 127.0.0.1:").nth(1))
        .and_then(|p| p.trim().parse::<u16>().ok())
        .unwrap_or_else(|| panic!("no port in socat's output\n{stderr}"));
    let output = run_sockit(
        &["connect", &format!("tcp://127.0.0.1:{port}")],
        Some(b"through socat\n"),
    );
    assert_eq!(
        code(&output),
        0,
        "{}\n{}",
        describe(&output),
        socat.report()
    );
    assert_eq!(output.stdout, b"through socat\n");
}

/// Interop: OpenBSD nc as the server, both directions with half-close: nc sends its
/// stdin and shuts down (-N); we send ours and shut down; both see everything.
#[test]
fn openbsd_nc_server_both_directions() {
    let mut nc = spawn_peer("nc", &["-N", "-v", "-l", "127.0.0.1", "0"], true);
    let stderr = wait_for_stderr(&nc, "Listening on");
    let port = stderr
        .lines()
        .find_map(|l| l.strip_prefix("Listening on "))
        .and_then(|rest| rest.split_whitespace().last())
        .and_then(|p| p.parse::<u16>().ok())
        .unwrap_or_else(|| panic!("no port in nc's output\n{stderr}"));
    nc.stdin()
        .write_all(b"from nc\n")
        .unwrap_or_else(|e| panic!("{e}"));
    nc.close_stdin();
    let output = run_sockit(
        &["connect", &format!("tcp://127.0.0.1:{port}")],
        Some(b"from sockit\n"),
    );
    assert_eq!(code(&output), 0, "{}\n{}", describe(&output), nc.report());
    assert_eq!(output.stdout, b"from nc\n");
    nc.wait_for_line("what sockit sent", |l| l == "from sockit");
}

/// `--hex` dumps both directions on stderr and leaves stdout as pure data.
#[test]
fn hex_dumps_both_directions_on_stderr() {
    let mut server = Proc::sockit(&["serve", "tcp://127.0.0.1:0", "--reply", "pong", "-q"]);
    let addr = server.listening();
    let output = run_sockit(
        &["connect", &format!("tcp://{addr}"), "--hex"],
        Some(b"ping"),
    );
    assert_eq!(code(&output), 0, "{}", describe(&output));
    assert_eq!(output.stdout, b"pong");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("> 00000000  70 69 6e 67") && stderr.contains("|ping|"),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("Z received 4 bytes from {addr}"))
            && stderr.contains("< 00000000  70 6f 6e 67"),
        "{stderr}"
    );
}

/// An empty stdin sends nothing and still half-closes, so the server sees a clean EOF.
#[test]
fn nothing_is_sent_for_an_empty_stdin() {
    let (addr, server) = one_shot_server(|mut stream| {
        let mut all = Vec::new();
        stream
            .read_to_end(&mut all)
            .unwrap_or_else(|e| panic!("{e}"));
        all
    });
    let output = run_sockit(&["connect", &format!("tcp://{addr}")], Some(b""));
    assert_eq!(code(&output), 0, "{}", describe(&output));
    assert!(join(server).is_empty());
    assert!(output.stdout.is_empty());
}

/// A nc-style pipe into ncat (`--recv-only`): ncat gets every byte of a large input,
/// then our FIN.
#[test]
fn ncat_as_a_sink_receives_everything_until_our_fin() {
    let mut ncat = spawn_peer("ncat", &["-l", "127.0.0.1", "0", "--recv-only"], false);
    let port = listening_port(&ncat);
    let payload: Vec<u8> = (0..200_000u32).map(|i| b'a' + (i % 26) as u8).collect();
    let mut with_newline = payload.clone();
    with_newline.push(b'\n');
    let output = run_sockit(
        &["connect", &format!("tcp://127.0.0.1:{port}")],
        Some(&with_newline),
    );
    assert_eq!(code(&output), 0, "{}\n{}", describe(&output), ncat.report());
    let line = ncat.wait_for_line("the payload", |l| !l.is_empty());
    assert_eq!(line.len(), payload.len(), "ncat got a different amount");
    assert_eq!(line.as_bytes(), payload.as_slice());
}

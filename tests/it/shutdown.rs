//! Issue 2, point 8: SIGTERM during traffic stops accepting, finishes every reply the
//! server had taken on, removes the Unix socket file, prints the summary and exits 0.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::util::{Proc, TIMEOUT};

/// Concurrent clients hammering the server when the signal arrives.
const CLIENTS: usize = 8;
/// Each request (and echoed reply) is this large, so replies take several writes and a
/// shutdown can land in the middle of one.
const LINE: usize = 200_000;
/// Upper bound on exchanges per client, so the loop ends even if shutdown never comes.
const MAX_EXCHANGES: u64 = 100_000;

/// One client: echo exchanges until the server closes. Returns complete replies received.
/// A reply cut short is data lost by the server, and fails the test.
fn client(path: std::path::PathBuf, done: Arc<AtomicU64>) -> u64 {
    let stream = UnixStream::connect(&path).unwrap_or_else(|e| panic!("connect: {e}"));
    stream.set_read_timeout(Some(TIMEOUT)).ok();
    let mut writer = stream.try_clone().unwrap_or_else(|e| panic!("{e}"));
    let mut reader = BufReader::new(stream);
    let mut request = vec![b'x'; LINE];
    request.push(b'\n');
    let mut replies = 0;
    let mut reply = Vec::with_capacity(LINE + 1);
    for _ in 0..MAX_EXCHANGES {
        if writer.write_all(&request).is_err() {
            break; // the server closed before taking this request: not a lost reply
        }
        reply.clear();
        match reader.read_until(b'\n', &mut reply) {
            Ok(0) => break,
            Ok(_) => {
                assert_eq!(
                    reply.len(),
                    LINE + 1,
                    "a reply was cut short: the server lost data"
                );
                replies += 1;
                done.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!("reading a reply: {e}"),
        }
    }
    replies
}

#[test]
fn sigterm_under_load_loses_no_reply_and_removes_the_socket_file() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let path = dir.path().join("drain.sock");
    let endpoint = format!("unix:{}", path.display());
    let mut server = Proc::sockit(&[
        "serve",
        &endpoint,
        "--echo",
        "--framing",
        "line",
        "--max-line",
        "300000",
        "-q",
    ]);
    server.listening();

    let done = Arc::new(AtomicU64::new(0));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (path, done) = (path.clone(), Arc::clone(&done));
            std::thread::spawn(move || client(path, done))
        })
        .collect();
    // Let traffic flow, then signal in the middle of it.
    let deadline = Instant::now() + TIMEOUT;
    while done.load(Ordering::Relaxed) < 50 * CLIENTS as u64 {
        assert!(
            Instant::now() < deadline,
            "traffic never started\n{}",
            server.report()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    server.signal(libc::SIGTERM);
    let received: u64 = clients
        .into_iter()
        .map(|c| c.join().unwrap_or_else(|_| panic!("a client failed")))
        .sum();

    let status = server.wait_exit();
    assert!(status.success(), "{}", server.report());
    let stderr = server.stderr();
    let summary = stderr
        .lines()
        .find(|l| l.starts_with("summary: "))
        .unwrap_or_else(|| panic!("no summary line\n{}", server.report()));
    let answered: u64 = summary
        .split(", ")
        .find_map(|part| {
            part.strip_suffix(" messages")
                .or_else(|| part.strip_suffix(" message"))
        })
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("cannot read the message count in {summary:?}"));
    assert_eq!(
        answered, received,
        "every message the server answered must have reached its client ({summary})"
    );
    assert!(
        !path.exists(),
        "the socket file must be removed on shutdown"
    );
}

/// With `--log json` even the shutdown summary is a JSON object, so a machine reading
/// stderr never meets a line it cannot parse.
#[test]
fn the_summary_is_json_with_log_json() {
    let mut server = Proc::sockit(&["serve", "tcp://127.0.0.1:0", "--log", "json"]);
    let listening = server.wait_for_line("listening", |l| l.contains("\"listening\""));
    let endpoint: serde_json::Value =
        serde_json::from_str(&listening).unwrap_or_else(|e| panic!("{e}: {listening}"));
    let addr = endpoint["endpoint"]
        .as_str()
        .unwrap_or_default()
        .replace("tcp://", "");
    let output = crate::util::run_sockit(&["send", &addr], None);
    assert!(
        output.status.success(),
        "{}",
        crate::util::describe(&output)
    );
    server.signal(libc::SIGTERM);
    assert!(server.wait_exit().success(), "{}", server.report());
    let stderr = server.stderr();
    let last = stderr.lines().last().unwrap_or_default();
    let summary: serde_json::Value =
        serde_json::from_str(last).unwrap_or_else(|e| panic!("{e}: {stderr}"));
    assert_eq!(summary["event"], "summary", "{last}");
    assert_eq!(summary["connections"], 1, "{last}");
    assert_eq!(summary["messages"], 1, "{last}");
}

/// Once shutdown begins, new clients are refused at once while the last answers drain,
/// with every serving thread: each has a descriptor table of its own on Linux, and the
/// copies of the listener left in the process's table must not keep it listening.
#[test]
fn new_clients_are_refused_while_the_last_answers_drain() {
    for threads in ["1", "2"] {
        let mut server = Proc::sockit(&[
            "serve",
            "tcp://127.0.0.1:0",
            "--echo",
            "-q",
            "--threads",
            threads,
            "--grace",
            "20s",
        ]);
        let addr = server.listening();
        // A client that sends and never reads (with a small receive buffer) holds the
        // server's answer pending, so the drain lasts until this client reads or the
        // grace period ends.
        let mut hog = reluctant_reader(&addr);
        stall(&mut hog, &server);

        server.signal(libc::SIGTERM);
        let signalled = Instant::now();
        let refused_after = loop {
            match std::net::TcpStream::connect(&addr) {
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                    assert!(
                        server.is_running(),
                        "threads {threads}: the server exited instead of draining\n{}",
                        server.report()
                    );
                    break signalled.elapsed();
                }
                Err(e) => panic!("connect: {e}\n{}", server.report()),
                Ok(_) => {
                    assert!(
                        signalled.elapsed() < Duration::from_secs(5),
                        "threads {threads}: still accepting 5 s into the drain\n{}",
                        server.report()
                    );
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        };
        assert!(refused_after < Duration::from_secs(5));
        // Reading the answer lets the drain finish.
        read_the_rest(&mut hog);
        let status = server.wait_exit();
        assert!(status.success(), "{}", server.report());
    }
}

/// Writes to `hog` until the server stops reading it: the socket stayed unwritable for a
/// second, which happens only while the server's answer waits for the client.
fn stall(hog: &mut std::net::TcpStream, server: &Proc) {
    let chunk = vec![b'x'; 64 * 1024];
    let deadline = Instant::now() + TIMEOUT;
    while writable_within(hog, Duration::from_secs(1)) {
        match hog.write(&chunk) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => panic!("{e}\n{}", server.report()),
        }
        assert!(
            Instant::now() < deadline,
            "the server kept reading\n{}",
            server.report()
        );
    }
}

/// Reads everything `hog` still gets, which lets a draining server finish.
fn read_the_rest(hog: &mut std::net::TcpStream) {
    hog.set_nonblocking(false).unwrap_or_else(|e| panic!("{e}"));
    hog.set_read_timeout(Some(TIMEOUT))
        .unwrap_or_else(|e| panic!("{e}"));
    let mut sink = Vec::new();
    let _ = std::io::Read::read_to_end(hog, &mut sink);
}

/// A non-blocking client with a small receive buffer, so that an answer it does not read
/// soon fills it.
fn reluctant_reader(addr: &str) -> std::net::TcpStream {
    let addr: std::net::SocketAddr = addr.parse().unwrap_or_else(|e| panic!("{addr}: {e}"));
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
        .unwrap_or_else(|e| panic!("{e}"));
    socket
        .set_recv_buffer_size(4096)
        .unwrap_or_else(|e| panic!("{e}"));
    socket
        .connect(&addr.into())
        .unwrap_or_else(|e| panic!("{e}"));
    socket
        .set_nonblocking(true)
        .unwrap_or_else(|e| panic!("{e}"));
    socket.into()
}

/// Whether `stream` can take more bytes within `wait`.
fn writable_within(stream: &std::net::TcpStream, wait: Duration) -> bool {
    use std::os::fd::AsRawFd;
    let mut pollfd = libc::pollfd {
        fd: stream.as_raw_fd(),
        events: libc::POLLOUT,
        revents: 0,
    };
    let millis = libc::c_int::try_from(wait.as_millis()).unwrap_or(libc::c_int::MAX);
    // SAFETY: one valid pollfd, and its count.
    let ready = unsafe { libc::poll(&mut pollfd, 1, millis) };
    ready > 0
}

/// A server whose output nobody reads any more (`sockit serve 2>&1 | head -2`: the pipe's
/// reader has exited) still stops cleanly on SIGTERM, served by the lane or by tasks. Every
/// line it writes after that fails with EPIPE; none of those failures may panic the task
/// that logged (the signal handler logs "SIGTERM received" first) or the summary at exit.
#[test]
fn sigterm_stops_a_server_whose_output_pipe_was_closed() {
    for mode in [&[][..], &["--exec", "cat"][..]] {
        let mut args = vec!["serve", "tcp://127.0.0.1:0"];
        args.extend_from_slice(mode);
        let mut child = crate::util::sockit_command(&args)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn: {e}"));
        let Some(stdout) = child.stdout.take() else {
            panic!("no stdout pipe");
        };
        let mut first = String::new();
        BufReader::new(stdout)
            .read_line(&mut first)
            .unwrap_or_else(|e| panic!("{e}"));
        let addr = first
            .trim()
            .trim_start_matches("server start at: ")
            .to_string();
        drop(child.stderr.take());
        // Both pipes' readers are gone now; an exchange makes the server write to them.
        let mut stream = crate::util::connect_tcp(&addr);
        stream
            .write_all(b"hello tcp server")
            .unwrap_or_else(|e| panic!("{e}"));
        let mut reply = [0u8; 16];
        std::io::Read::read_exact(&mut stream, &mut reply).unwrap_or_else(|e| panic!("{e}"));
        crate::util::send_signal(&child, libc::SIGTERM);
        let status = match crate::util::exit_within_timeout(&mut child) {
            Ok(Some(status)) => status,
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{mode:?}: SIGTERM did not stop a server writing to a closed pipe");
            }
            Err(e) => panic!("wait: {e}"),
        };
        assert!(status.success(), "{mode:?}: {status:?}");
    }
}

/// Issue 15, item 5: coreutils `timeout` sends SIGTERM to sockit and again to its process
/// group, so the one stop request often arrives twice. Both copies mean the graceful
/// stop: every run exits 0 (`--preserve-status` passes sockit's own status on) with the
/// summary. The test signals `timeout` itself, which forwards the signal exactly as it
/// does when its time runs out, so no run depends on how fast the server starts.
#[test]
fn a_stop_under_coreutils_timeout_is_graceful_every_time() {
    for run in 1..=5 {
        let mut cmd = std::process::Command::new("timeout");
        cmd.args(["--preserve-status", "60"])
            .arg(crate::util::sockit_bin())
            .args(["serve", "tcp://127.0.0.1:0"])
            .env("NO_COLOR", "1")
            .env_remove("RUST_LOG");
        let mut timeout = Proc::spawn(cmd, false);
        timeout.listening();
        timeout.signal(libc::SIGTERM);
        let status = timeout.wait_exit();
        assert_eq!(status.code(), Some(0), "run {run}\n{}", timeout.report());
        assert!(
            timeout.stderr().contains("summary: "),
            "run {run}: no summary\n{}",
            timeout.report()
        );
    }
}

/// Two SIGTERMs 1 ms apart are one graceful stop, not "again: exit now". A client that
/// does not read its answer keeps the drain going, so the second copy surely finds the
/// stop under way.
#[test]
fn two_sigterms_in_a_row_still_drain_and_print_the_summary() {
    let mut server = Proc::sockit(&[
        "serve",
        "tcp://127.0.0.1:0",
        "--echo",
        "-q",
        "--grace",
        "20s",
    ]);
    let addr = server.listening();
    let mut hog = reluctant_reader(&addr);
    stall(&mut hog, &server);
    server.signal(libc::SIGTERM);
    std::thread::sleep(Duration::from_millis(1));
    server.signal(libc::SIGTERM);
    let deadline = Instant::now() + TIMEOUT;
    while !server.stderr().contains("SIGTERM received") {
        assert!(Instant::now() < deadline, "{}", server.report());
        std::thread::sleep(Duration::from_millis(5));
    }
    read_the_rest(&mut hog);
    let status = server.wait_exit();
    assert_eq!(status.code(), Some(0), "{}", server.report());
    assert!(server.stderr().contains("summary: "), "{}", server.report());
}

/// SIGQUIT (Ctrl-\) means "now": status 131, no drain.
#[test]
fn sigquit_exits_at_once() {
    let mut server = Proc::sockit(&["serve", "tcp://127.0.0.1:0", "--grace", "30s"]);
    server.listening();
    server.signal(libc::SIGQUIT);
    let status = server.wait_exit();
    assert_eq!(status.code(), Some(131), "{}", server.report());
    assert!(
        !server.stderr().contains("summary: "),
        "{}",
        server.report()
    );
}

/// Issue 17, point 2 (shutdown no longer names transport): a `Type=notify` service still
/// tells systemd READY=1 once serving, then STOPPING=1 when SIGTERM starts the drain.
#[test]
fn a_notify_service_says_ready_then_stopping_on_sigterm() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let path = dir.path().join("notify.sock");
    let notify = std::os::unix::net::UnixDatagram::bind(&path).unwrap_or_else(|e| panic!("{e}"));
    notify
        .set_read_timeout(Some(TIMEOUT))
        .unwrap_or_else(|e| panic!("{e}"));
    let mut cmd = crate::util::sockit_command(&["serve", "tcp://127.0.0.1:0"]);
    cmd.env("NOTIFY_SOCKET", &path);
    let mut server = Proc::spawn(cmd, false);
    server.listening();
    let mut buf = [0u8; 512];
    let mut next_notice = || {
        let n = notify
            .recv(&mut buf)
            .unwrap_or_else(|e| panic!("no notice on NOTIFY_SOCKET: {e}"));
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    let ready = next_notice();
    assert!(ready.contains("READY=1"), "{ready:?}");
    server.signal(libc::SIGTERM);
    let stopping = next_notice();
    assert!(stopping.contains("STOPPING=1"), "{stopping:?}");
    assert!(server.wait_exit().success(), "{}", server.report());
}

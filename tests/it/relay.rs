//! Issue 3, point 3: `sockit relay`. Real clients nobody here wrote (ncat, socat, nc)
//! through it, half-close passed on in both directions, bounded memory when one side
//! stops reading, pairs of transports (tcp↔unix, tls↔tcp, udp↔udp with sessions) and a
//! graceful shutdown.

use std::io::{Read, Write};
use std::net::{Shutdown as NetShutdown, TcpListener, TcpStream, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::Duration;

use sockit::obs::EventLog;
use sockit::relay::{CopyMode, Relay, RelayOptions, RelayStats, RelaySummary};
use sockit::{Endpoint, Shutdown};

use crate::peers::{poll_until, run_peer};
use crate::util::{Proc, TIMEOUT, code, describe, join_within, run_sockit, within};

/// A relay running in this process, with its live counters.
struct TestRelay {
    endpoint: Endpoint,
    stats: Arc<RelayStats>,
    shutdown: Shutdown,
    done: tokio::task::JoinHandle<RelaySummary>,
}

async fn start_relay(listen: &str, options: RelayOptions) -> TestRelay {
    let listen: Endpoint = listen.parse().unwrap_or_else(|e| panic!("{e}"));
    let relay = Relay::bind(&listen, options)
        .await
        .unwrap_or_else(|e| panic!("bind {listen}: {e}"));
    let endpoint = relay.local_endpoint().clone();
    let stats = relay.stats();
    let shutdown = Shutdown::new();
    let done = tokio::spawn(relay.run(EventLog::disabled(), shutdown.clone()));
    TestRelay {
        endpoint,
        stats,
        shutdown,
        done,
    }
}

fn target(text: &str) -> RelayOptions {
    RelayOptions::new(text.parse().unwrap_or_else(|e| panic!("{e}")))
}

/// `host:port` of an IP endpoint.
fn addr_of(endpoint: &Endpoint) -> String {
    match endpoint.host_port() {
        Some(hp) => hp.to_string(),
        None => panic!("{endpoint} has no address"),
    }
}

/// A sockit echo server and a sockit relay in front of it, both real processes.
fn echo_behind_relay() -> (Proc, Proc, String) {
    let mut echo = Proc::sockit(&["serve", "tcp://127.0.0.1:0", "--echo", "-q"]);
    let echo_addr = echo.listening();
    let mut relay = Proc::sockit(&[
        "relay",
        "tcp://127.0.0.1:0",
        &format!("tcp://{echo_addr}"),
        "-q",
    ]);
    let relay_addr = relay.listening();
    (echo, relay, relay_addr)
}

#[test]
fn ncat_socat_and_nc_as_clients() {
    let (_echo, relay, addr) = echo_behind_relay();
    let (host, port) = addr
        .rsplit_once(':')
        .unwrap_or_else(|| panic!("bad address {addr}"));
    let socat_target = format!("TCP:{addr}");
    let cases: [(&str, Vec<&str>); 3] = [
        ("ncat", vec![host, port]),
        ("socat", vec!["-", &socat_target]),
        ("nc", vec!["-N", host, port]),
    ];
    for (program, args) in cases {
        let message = format!("hello from {program}\n");
        let output = run_peer(program, &args, message.as_bytes());
        assert!(
            output.status.success(),
            "{program}: {}\n{}",
            describe(&output),
            relay.report()
        );
        assert_eq!(
            String::from_utf8_lossy(&output.stdout),
            message,
            "{program} did not get its echo through the relay"
        );
    }
}

/// Client → target: the client's FIN reaches the target (it reads to the end), and the
/// target's answer sent after that still reaches the client, then the target's FIN.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_close_from_the_client_is_passed_on() {
    let target_listener = TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
    let target_addr = target_listener
        .local_addr()
        .unwrap_or_else(|e| panic!("{e}"));
    let target_side = thread::spawn(move || {
        let (mut stream, _) = target_listener.accept().unwrap_or_else(|e| panic!("{e}"));
        stream.set_read_timeout(Some(TIMEOUT)).ok();
        let mut request = Vec::new();
        stream
            .read_to_end(&mut request)
            .unwrap_or_else(|e| panic!("{e}"));
        stream
            .write_all(b"answer after your FIN")
            .unwrap_or_else(|e| panic!("{e}"));
        request
    });
    let relay = start_relay("tcp://127.0.0.1:0", target(&format!("tcp://{target_addr}"))).await;
    let relay_addr = addr_of(&relay.endpoint);
    let client = thread::spawn(move || {
        let mut stream = TcpStream::connect(relay_addr).unwrap_or_else(|e| panic!("{e}"));
        stream.set_read_timeout(Some(TIMEOUT)).ok();
        stream
            .write_all(b"request")
            .unwrap_or_else(|e| panic!("{e}"));
        stream
            .shutdown(NetShutdown::Write)
            .unwrap_or_else(|e| panic!("{e}"));
        let mut answer = Vec::new();
        stream
            .read_to_end(&mut answer)
            .unwrap_or_else(|e| panic!("{e}"));
        answer
    });
    let answer = join_within("the client", client).await;
    let request = target_side
        .join()
        .unwrap_or_else(|_| panic!("target thread panicked"));
    assert_eq!(request, b"request");
    assert_eq!(answer, b"answer after your FIN");
    relay.shutdown.trigger();
    let summary = within("relay drain", relay.done)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((summary.to_target, summary.to_client), (7, 21));
    assert_eq!(summary.errors, 0);
}

/// Target → client: the target's FIN reaches the client while the client is still
/// sending, and what the client sends after that still reaches the target.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_close_from_the_target_is_passed_on() {
    let target_listener = TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
    let target_addr = target_listener
        .local_addr()
        .unwrap_or_else(|e| panic!("{e}"));
    let target_side = thread::spawn(move || {
        let (mut stream, _) = target_listener.accept().unwrap_or_else(|e| panic!("{e}"));
        stream.set_read_timeout(Some(TIMEOUT)).ok();
        stream
            .write_all(b"banner")
            .unwrap_or_else(|e| panic!("{e}"));
        stream
            .shutdown(NetShutdown::Write)
            .unwrap_or_else(|e| panic!("{e}"));
        let mut rest = Vec::new();
        stream
            .read_to_end(&mut rest)
            .unwrap_or_else(|e| panic!("{e}"));
        rest
    });
    let relay = start_relay("tcp://127.0.0.1:0", target(&format!("tcp://{target_addr}"))).await;
    let relay_addr = addr_of(&relay.endpoint);
    let client = thread::spawn(move || {
        let mut stream = TcpStream::connect(relay_addr).unwrap_or_else(|e| panic!("{e}"));
        stream.set_read_timeout(Some(TIMEOUT)).ok();
        let mut banner = Vec::new();
        // Reads to EOF: only returns once the target's FIN has come through the relay.
        stream
            .read_to_end(&mut banner)
            .unwrap_or_else(|e| panic!("{e}"));
        stream
            .write_all(b"late words")
            .unwrap_or_else(|e| panic!("{e}"));
        stream
            .shutdown(NetShutdown::Write)
            .unwrap_or_else(|e| panic!("{e}"));
        banner
    });
    let banner = join_within("the client", client).await;
    let rest = target_side
        .join()
        .unwrap_or_else(|_| panic!("target thread panicked"));
    assert_eq!(banner, b"banner");
    assert_eq!(rest, b"late words");
    relay.shutdown.trigger();
    within("relay drain", relay.done)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
}

/// A target that never reads, a client that writes as fast as it can: the relay holds
/// at most its buffer (here: its splice pipe) for that direction, at every moment, and
/// stops reading from the client, so the client blocks (backpressure) long before it has
/// written everything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_side_that_stops_reading_keeps_memory_bounded() {
    let spliced = stop_reading_and_check_the_bound(CopyMode::Splice).await;
    assert_eq!(spliced, 1, "two plain TCP sockets must be spliced");
}

/// The same through the buffered copy (what TLS, `--hex` and other systems use).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_side_that_stops_reading_keeps_memory_bounded_when_buffered() {
    let spliced = stop_reading_and_check_the_bound(CopyMode::Buffered).await;
    assert_eq!(spliced, 0, "--copy buffered must not splice");
}

/// Runs the "target never reads" case with `copy`; returns how many connections the
/// relay spliced.
async fn stop_reading_and_check_the_bound(copy: CopyMode) -> u64 {
    const BUFFER: usize = 16 * 1024;
    /// Far more than all the kernel buffers on the path can hold.
    const ATTEMPT: u64 = 256 * 1024 * 1024;
    let target_listener = TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
    let target_addr = target_listener
        .local_addr()
        .unwrap_or_else(|e| panic!("{e}"));
    let stop = Arc::new(AtomicBool::new(false));
    let stop_target = Arc::clone(&stop);
    // Accepts and never reads.
    let target_side = thread::spawn(move || {
        let (stream, _) = target_listener.accept().unwrap_or_else(|e| panic!("{e}"));
        poll_until("the test to finish", String::new, || {
            stop_target.load(Ordering::Relaxed).then_some(())
        });
        drop(stream);
    });
    let options = RelayOptions {
        buffer_size: BUFFER,
        copy,
        ..target(&format!("tcp://{target_addr}"))
    };
    let relay = start_relay("tcp://127.0.0.1:0", options).await;
    let relay_addr = addr_of(&relay.endpoint);
    let written = Arc::new(AtomicU64::new(0));
    let client_written = Arc::clone(&written);
    let client = thread::spawn(move || {
        let mut stream = TcpStream::connect(relay_addr).unwrap_or_else(|e| panic!("{e}"));
        let chunk = vec![b'x'; 64 * 1024];
        while client_written.load(Ordering::Relaxed) < ATTEMPT {
            // Fails once the relay is shut down at the end of the test.
            if stream.write_all(&chunk).is_err() {
                break;
            }
            client_written.fetch_add(chunk.len() as u64, Ordering::Relaxed);
        }
    });
    let stats = Arc::clone(&relay.stats);
    let observed = tokio::task::spawn_blocking(move || {
        // Sample until the client has been stuck for 20 samples in a row; at every
        // sample the relay may hold no more than its buffer for this direction.
        let mut last = u64::MAX;
        let mut unchanged = 0;
        let mut worst = 0;
        poll_until(
            "the client to be blocked by backpressure",
            String::new,
            || {
                let buffered = stats.to_target.buffered();
                worst = worst.max(buffered);
                assert!(
                    buffered <= BUFFER as u64,
                    "the relay holds {buffered} bytes for the slow target, more than its {BUFFER}-byte buffer"
                );
                let now = written.load(Ordering::Relaxed);
                unchanged = if now == last { unchanged + 1 } else { 0 };
                last = now;
                (unchanged >= 20).then_some((now, worst))
            },
        )
    });
    let (client_total, worst) = within("sampling", observed)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let read = relay.stats.to_target.read.load(Ordering::Relaxed);
    let peak = relay.stats.to_target.peak_buffered.load(Ordering::Relaxed);
    assert!(peak <= BUFFER as u64, "peak held {peak} > {BUFFER}");
    assert!(read > 0, "the relay never read from the client");
    assert!(
        client_total < ATTEMPT,
        "the client wrote all {ATTEMPT} bytes: nothing pushed back"
    );
    assert!(
        read < client_total + 1,
        "the relay read {read} bytes but the client only wrote {client_total}"
    );
    eprintln!(
        "client blocked after {client_total} bytes; relay read {read}, held at most {worst} (sampled) / {peak} (peak)"
    );
    stop.store(true, Ordering::Relaxed);
    relay.shutdown.trigger();
    within("relay drain", relay.done)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let _ = within("client", tokio::task::spawn_blocking(move || client.join())).await;
    let _ = target_side.join();
    relay.stats.spliced.load(Ordering::Relaxed)
}

/// Megabytes both ways at once (the target echoes while the client is still sending)
/// arrive intact and in order through either copy path, and the counts match.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_data_both_ways_arrives_intact() {
    const TOTAL: usize = 16 * 1024 * 1024;
    for copy in [CopyMode::Splice, CopyMode::Buffered] {
        let target_listener = TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
        let target_addr = target_listener
            .local_addr()
            .unwrap_or_else(|e| panic!("{e}"));
        // Echoes everything back, then ends its sending when the client has ended.
        let echo = thread::spawn(move || {
            let (mut stream, _) = target_listener.accept().unwrap_or_else(|e| panic!("{e}"));
            stream.set_read_timeout(Some(TIMEOUT)).ok();
            let mut buf = vec![0u8; 100_000];
            loop {
                let n = stream
                    .read(&mut buf)
                    .unwrap_or_else(|e| panic!("echo read: {e}"));
                if n == 0 {
                    break;
                }
                stream
                    .write_all(&buf[..n])
                    .unwrap_or_else(|e| panic!("echo write: {e}"));
            }
            let _ = stream.shutdown(NetShutdown::Write);
        });
        let options = RelayOptions {
            copy,
            ..target(&format!("tcp://{target_addr}"))
        };
        let relay = start_relay("tcp://127.0.0.1:0", options).await;
        let relay_addr = addr_of(&relay.endpoint);
        let payload: Arc<Vec<u8>> = Arc::new(
            (0..TOTAL)
                .map(|i| (i % 251) as u8 ^ (i >> 16) as u8)
                .collect(),
        );
        let sent = Arc::clone(&payload);
        let client = tokio::task::spawn_blocking(move || {
            let stream = TcpStream::connect(relay_addr).unwrap_or_else(|e| panic!("{e}"));
            stream.set_read_timeout(Some(TIMEOUT)).ok();
            let mut writer = stream.try_clone().unwrap_or_else(|e| panic!("{e}"));
            let sender = thread::spawn(move || {
                writer.write_all(&sent).unwrap_or_else(|e| panic!("{e}"));
                writer
                    .shutdown(NetShutdown::Write)
                    .unwrap_or_else(|e| panic!("{e}"));
            });
            let mut back = Vec::with_capacity(TOTAL);
            let mut reader = stream;
            reader
                .read_to_end(&mut back)
                .unwrap_or_else(|e| panic!("client read: {e}"));
            sender.join().unwrap_or_else(|_| panic!("sender panicked"));
            back
        });
        let back = within("the bulk exchange", client)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        echo.join().unwrap_or_else(|_| panic!("echo panicked"));
        assert_eq!(back.len(), TOTAL, "{copy:?}: bytes lost or added");
        assert!(back == *payload, "{copy:?}: bytes changed or reordered");
        let spliced = relay.stats.spliced.load(Ordering::Relaxed);
        relay.shutdown.trigger();
        let summary = within("relay drain", relay.done)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (summary.to_target, summary.to_client, summary.errors),
            (TOTAL as u64, TOTAL as u64, 0),
            "{copy:?}"
        );
        let expected = u64::from(copy == CopyMode::Splice);
        assert_eq!(spliced, expected, "{copy:?}: spliced connections");
    }
}

/// tcp ↔ unix in both arrangements, through the binary.
#[test]
fn tcp_to_unix_and_unix_to_tcp() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let echo_path = dir.path().join("echo.sock");
    let mut echo = Proc::sockit(&[
        "serve",
        &format!("unix:{}", echo_path.display()),
        "--echo",
        "-q",
    ]);
    echo.listening();
    let mut to_unix = Proc::sockit(&[
        "relay",
        "tcp://127.0.0.1:0",
        &format!("unix:{}", echo_path.display()),
        "-q",
    ]);
    let tcp_addr = to_unix.listening();
    let front_path = dir.path().join("front.sock");
    let mut to_tcp = Proc::sockit(&[
        "relay",
        &format!("unix:{}", front_path.display()),
        &format!("tcp://{tcp_addr}"),
        "-q",
    ]);
    to_tcp.listening();
    // unix → tcp → unix → echo, and back.
    let output = run_sockit(
        &["connect", &format!("unix:{}", front_path.display())],
        Some(b"two relays deep\n"),
    );
    assert_eq!(
        code(&output),
        0,
        "{}\n{}\n{}",
        describe(&output),
        to_unix.report(),
        to_tcp.report()
    );
    assert_eq!(output.stdout, b"two relays deep\n");
}

/// tls → tcp: openssl s_client (a TLS client nobody here wrote) talks to a plain echo
/// server through a TLS relay with a self-signed certificate.
#[test]
fn openssl_client_through_a_tls_relay_to_a_plain_server() {
    // --close: the server closes after its echo, which ends s_client (-quiet waits for
    // the server to close, as TLS clients do).
    let mut echo = Proc::sockit(&["serve", "tcp://127.0.0.1:0", "--echo", "--close", "-q"]);
    let echo_addr = echo.listening();
    let mut relay = Proc::sockit(&[
        "relay",
        "tls://127.0.0.1:0",
        &format!("tcp://{echo_addr}"),
        "-q",
    ]);
    let relay_addr = relay.listening();
    let output = run_peer(
        "openssl",
        &[
            "s_client",
            "-connect",
            &relay_addr,
            "-quiet",
            "-verify_quiet",
        ],
        b"secret words\n",
    );
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "secret words\n",
        "{}\n{}",
        describe(&output),
        relay.report()
    );
}

/// udp ↔ udp: two clients each get their own replies through their own session;
/// sessions expire when idle; at the cap a new client takes the place of the session
/// idle longest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_sessions_are_per_client_expire_and_are_capped() {
    // A UDP server that answers each datagram with "<payload> for <sender>".
    let server = UdpSocket::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
    let server_addr = server.local_addr().unwrap_or_else(|e| panic!("{e}"));
    server
        .set_read_timeout(Some(Duration::from_millis(200)))
        .ok();
    let stop = Arc::new(AtomicBool::new(false));
    let stop_server = Arc::clone(&stop);
    let answering = thread::spawn(move || {
        let mut buf = [0u8; 2048];
        while !stop_server.load(Ordering::Relaxed) {
            if let Ok((n, from)) = server.recv_from(&mut buf) {
                let reply = format!("{} for {from}", String::from_utf8_lossy(&buf[..n]));
                let _ = server.send_to(reply.as_bytes(), from);
            }
        }
    });
    let options = RelayOptions {
        idle_timeout: Some(Duration::from_millis(300)),
        max_sessions: 2,
        ..target(&format!("udp://{server_addr}"))
    };
    let relay = start_relay("udp://127.0.0.1:0", options).await;
    let relay_addr = addr_of(&relay.endpoint);
    let exchange = move |client: &UdpSocket, text: &str| -> Option<String> {
        client
            .send_to(text.as_bytes(), &relay_addr)
            .unwrap_or_else(|e| panic!("{e}"));
        let mut buf = [0u8; 2048];
        client
            .recv(&mut buf)
            .ok()
            .map(|n| String::from_utf8_lossy(&buf[..n]).into_owned())
    };
    let clients: Vec<UdpSocket> = (0..3)
        .map(|_| {
            let c = UdpSocket::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
            c.set_read_timeout(Some(Duration::from_millis(500))).ok();
            c
        })
        .collect();
    let stats = Arc::clone(&relay.stats);
    let outcome = tokio::task::spawn_blocking(move || {
        let a = exchange(&clients[0], "a");
        let b = exchange(&clients[1], "b");
        // Two sessions open: the third client takes the place of a's, idle longest.
        let c = exchange(&clients[2], "c");
        let dropped = stats.dropped.load(Ordering::Relaxed);
        let evicted = stats.evicted.load(Ordering::Relaxed);
        // Once idle, both sessions end; then the third client gets a session.
        poll_until("sessions to expire", String::new, || {
            (stats.active.load(Ordering::Relaxed) == 0).then_some(())
        });
        let c_again = exchange(&clients[2], "c again");
        (a, b, c, dropped, evicted, c_again)
    });
    let (a, b, c, dropped, evicted, c_again) = within("udp exchanges", outcome)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let (a, b) = (
        a.unwrap_or_else(|| panic!("client a got no reply")),
        b.unwrap_or_else(|| panic!("client b got no reply")),
    );
    assert!(a.starts_with("a for 127.0.0.1:"), "{a}");
    assert!(b.starts_with("b for 127.0.0.1:"), "{b}");
    assert_ne!(
        a.trim_start_matches("a for "),
        b.trim_start_matches("b for "),
        "two clients must reach the target from two sessions"
    );
    assert!(
        c.is_some_and(|r| r.starts_with("c for")),
        "a new client past --max-sessions must be served"
    );
    assert_eq!((dropped, evicted), (0, 1));
    assert!(c_again.is_some_and(|r| r.starts_with("c again for")));
    relay.shutdown.trigger();
    let summary = within("relay drain", relay.done)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(summary.connections, 4);
    stop.store(true, Ordering::Relaxed);
    let _ = answering.join();
}

/// SIGTERM: the relay stops accepting, an open connection keeps working within the
/// grace period, then the summary is printed and the exit code is 0.
#[test]
fn sigterm_drains_open_connections_and_prints_the_summary() {
    let mut echo = Proc::sockit(&["serve", "tcp://127.0.0.1:0", "--echo", "-q"]);
    let echo_addr = echo.listening();
    let mut relay = Proc::sockit(&[
        "relay",
        "tcp://127.0.0.1:0",
        &format!("tcp://{echo_addr}"),
        "--grace",
        "20s",
        "-q",
    ]);
    let relay_addr = relay.listening();
    let mut stream = TcpStream::connect(&relay_addr).unwrap_or_else(|e| panic!("{e}"));
    stream.set_read_timeout(Some(TIMEOUT)).ok();
    let mut echo_back = |text: &[u8]| {
        stream.write_all(text).unwrap_or_else(|e| panic!("{e}"));
        let mut buf = vec![0u8; text.len()];
        stream
            .read_exact(&mut buf)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(buf, text);
    };
    echo_back(b"before");
    relay.signal(libc::SIGTERM);
    crate::peers::wait_for_stderr(&relay, "SIGTERM received");
    // No new clients once stopping…
    poll_until(
        "the relay to stop accepting",
        || relay.report(),
        || TcpStream::connect(&relay_addr).is_err().then_some(()),
    );
    // …but the open connection still relays.
    echo_back(b"during the grace period");
    drop(stream);
    assert!(relay.wait_exit().success(), "{}", relay.report());
    let stderr = relay.stderr();
    assert!(
        stderr.contains("summary: 1 connection, 29 bytes to target, 29 bytes to clients, 0 errors"),
        "{stderr}"
    );
}

#[test]
fn mixing_stream_and_datagram_is_a_usage_error() {
    let output = run_sockit(&["relay", "tcp://127.0.0.1:0", "udp://127.0.0.1:9"], None);
    assert_eq!(code(&output), 2, "{}", describe(&output));
    assert!(String::from_utf8_lossy(&output.stderr).contains("both must be streams"));
}

/// The target is down: the client is closed, the failure logged in one line, counted,
/// and the relay goes on serving. The line names the connection by its `conn{id peer}`
/// span whether the task runs inside the span (debug lines shown) or makes it for the
/// line alone (the lean path), in text and in JSON.
#[test]
fn an_unreachable_target_closes_the_client_and_is_logged() {
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("{e}"));
    let target = format!("tcp://127.0.0.1:{port}");
    for (format, level) in [("text", "warn"), ("json", "warn"), ("text", "debug")] {
        let mut relay = Proc::sockit(&[
            "relay",
            "tcp://127.0.0.1:0",
            &target,
            "--log",
            format,
            "--log-level",
            level,
        ]);
        // With --log, the listening line is a log line: `listening endpoint=tcp://…`.
        let line = relay.wait_for_line("listening", |l| l.contains("listening"));
        let relay_addr: String = line
            .rsplit("tcp://")
            .next()
            .unwrap_or_default()
            .chars()
            .take_while(|c| c.is_ascii_digit() || matches!(c, '.' | ':'))
            .collect();
        let mut stream = TcpStream::connect(&relay_addr).unwrap_or_else(|e| panic!("{e}"));
        let client = stream
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_else(|e| panic!("{e}"));
        stream.set_read_timeout(Some(TIMEOUT)).ok();
        let mut buf = [0u8; 1];
        assert_eq!(
            stream.read(&mut buf).unwrap_or(0),
            0,
            "the client must be closed"
        );
        let stderr =
            crate::peers::wait_for_stderr(&relay, "target unreachable: connection refused");
        let line = stderr
            .lines()
            .find(|l| l.contains("target unreachable"))
            .unwrap_or_default();
        if format == "json" {
            let value: serde_json::Value =
                serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
            assert_eq!(value["span"]["name"], "conn", "{line}");
            assert_eq!(value["span"]["id"], 1, "{line}");
            assert_eq!(value["span"]["peer"], client.as_str(), "{line}");
        } else {
            assert!(
                line.contains(&format!("conn{{id=1 peer={client}}}: ")),
                "{line}"
            );
        }
    }
}

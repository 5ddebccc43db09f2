//! Issue 3, point 5 for `sockit relay`: `--allow` / `--deny` on a TCP relay (IPv4 and
//! IPv6 clients of one dual-stack relay; the real address behind a PROXY header), denied
//! UDP senders' datagrams never forwarded, and `--max-conns` waiting and refusing. Real
//! processes: a `sockit serve --echo` target behind a `sockit relay`.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use crate::access::{Answer, exchange, ping, served_client, stop, summary, wait_logged};
use crate::ops::{metrics_addr, scrape_until};
use crate::util::{Proc, TIMEOUT, code, describe, run_sockit};

/// The port at the end of `host:port` or `[v6]:port`.
fn port_of(addr: &str) -> u16 {
    addr.rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {addr}"))
}

/// A `sockit serve --echo` target on TCP or UDP loopback, and its address.
fn echo_target(scheme: &str) -> (Proc, String) {
    let mut target = Proc::sockit(&["serve", &format!("{scheme}://127.0.0.1:0"), "--echo"]);
    let addr = target.listening();
    (target, addr)
}

/// Starts `sockit relay LISTEN TARGET ARGS` and returns it with its port.
fn relay(listen: &str, target: &str, args: &[&str]) -> (Proc, u16) {
    let mut argv = vec!["relay", listen, target];
    argv.extend_from_slice(args);
    let mut relay = Proc::sockit(&argv);
    let port = port_of(&relay.listening());
    (relay, port)
}

#[test]
fn a_tcp_relay_lets_allowed_clients_through_and_closes_denied_ones() {
    // One [::] relay sees 127.0.0.1 as ::ffff:127.0.0.1; the rules still read as IPv4.
    let (target, target_addr) = echo_target("tcp");
    let (relay_proc, port) = relay(
        "tcp://[::]:0",
        &format!("tcp://{target_addr}"),
        &["--allow", "127.0.0.1", "-q"],
    );
    assert_eq!(
        ping("127.0.0.1", port),
        Answer::Echo,
        "{}",
        relay_proc.report()
    );
    assert_eq!(ping("::1", port), Answer::Closed, "{}", relay_proc.report());
    let (line, log) = stop(relay_proc);
    assert!(
        line.starts_with("summary: 1 connection") && line.ends_with(", 1 denied"),
        "{line}"
    );
    assert!(
        log.contains("denied connection from [::1]:")
            && log.contains("not inside any --allow range"),
        "{log}"
    );
    // The denied client never reached the target: one connection there, the allowed one.
    let line = summary(target);
    assert!(line.starts_with("summary: 1 connection"), "{line}");

    // The same client address, denied this time.
    let (target, target_addr) = echo_target("tcp");
    let (relay_proc, port) = relay(
        "tcp://127.0.0.1:0",
        &format!("tcp://{target_addr}"),
        &["--deny", "127.0.0.0/8", "-q"],
    );
    assert_eq!(
        ping("127.0.0.1", port),
        Answer::Closed,
        "{}",
        relay_proc.report()
    );
    let (line, log) = stop(relay_proc);
    assert!(
        line.starts_with("summary: 0 connections") && line.ends_with(", 1 denied"),
        "{line}"
    );
    assert!(
        log.contains("denied connection from 127.0.0.1:")
            && log.contains("matches --deny 127.0.0.0/8"),
        "{log}"
    );
    let line = summary(target);
    assert!(line.starts_with("summary: 0 connections"), "{line}");
}

#[test]
fn behind_a_load_balancer_the_relay_judges_the_address_in_the_proxy_header() {
    // The socket peer is 127.0.0.1 (the "balancer"), outside the --allow range: only the
    // address the header names decides.
    let (_target, target_addr) = echo_target("tcp");
    let (relay_proc, port) = relay(
        "tcp://127.0.0.1:0",
        &format!("tcp://{target_addr}"),
        &[
            "--proxy-protocol",
            "--allow",
            "198.51.100.0/24",
            "--deny",
            "198.51.100.66",
            "--metrics",
            "127.0.0.1:0",
            "-q",
        ],
    );
    let metrics = metrics_addr(&relay_proc);
    let through = |source: &str| {
        let mut stream = TcpStream::connect(("127.0.0.1", port))
            .unwrap_or_else(|e| panic!("connect to the relay: {e}"));
        write!(stream, "PROXY TCP4 {source} 127.0.0.1 4000 80\r\n")
            .unwrap_or_else(|e| panic!("{e}"));
        exchange(stream, "127.0.0.1", port)
    };
    assert_eq!(
        through("198.51.100.7"),
        Answer::Echo,
        "{}",
        relay_proc.report()
    );
    for (source, why) in [
        ("203.0.113.9", "not inside any --allow range"),
        ("198.51.100.66", "matches --deny 198.51.100.66/32"),
    ] {
        assert_eq!(
            through(source),
            Answer::Closed,
            "{source} was relayed\n{}",
            relay_proc.report()
        );
        let line = crate::ops::stderr_line(&relay_proc, "the denial", |l| {
            l.contains(&format!("denied connection from {source}:4000"))
        });
        assert!(line.contains(why), "{line}");
    }
    let m = scrape_until(&relay_proc, &metrics, "two denials", |m| {
        m.count("sockit_relay_connections_denied_total", "tcp") == 2
    });
    assert_eq!(m.count("sockit_relay_connections_refused_total", "tcp"), 0);
    let (line, _) = stop(relay_proc);
    assert!(line.ends_with(", 2 denied"), "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_udp_relay_drops_denied_datagrams_counts_and_logs_them_at_a_bounded_rate() {
    let (target, target_addr) = echo_target("udp");
    let (relay_proc, port) = relay(
        "udp://[::]:0",
        &format!("udp://{target_addr}"),
        &["--deny", "127.0.0.0/8", "-q"],
    );
    const FLOOD: usize = 50;
    let denied =
        crate::access::flood_then_echo_from_an_allowed_sender(port, FLOOD, || relay_proc.report())
            .await;
    let mut buf = [0u8; 64];
    let nothing =
        tokio::time::timeout(Duration::from_millis(300), denied.recv_from(&mut buf)).await;
    assert!(nothing.is_err(), "a denied sender got a reply");
    let (line, log) = stop(relay_proc);
    assert!(
        line.starts_with("summary: 1 connection") && line.ends_with(&format!("{FLOOD} denied")),
        "{line}"
    );
    let logged = log
        .matches("denied datagram from [::ffff:127.0.0.1]:")
        .count();
    assert!(
        (1..FLOOD).contains(&logged),
        "{logged} lines for {FLOOD} denied datagrams: the log must be rate-limited\n{log}"
    );
    // Only the allowed sender's datagrams reached the target (none of the flood).
    let line = summary(target);
    let messages: u64 = line
        .split(", ")
        .find_map(|part| {
            part.strip_suffix(" messages")
                .or_else(|| part.strip_suffix(" message"))
        })
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no message count in {line}"));
    assert!(
        (1..=5).contains(&messages),
        "the target saw {messages} datagrams: {line}"
    );
}

#[test]
fn max_conns_wait_holds_the_next_client_in_the_backlog_until_a_slot_frees() {
    let (_target, target_addr) = echo_target("tcp");
    let (relay_proc, port) = relay(
        "tcp://127.0.0.1:0",
        &format!("tcp://{target_addr}"),
        &["--max-conns", "1", "-q"],
    );
    let first = served_client(port);
    // The second connects (the kernel queues it) but is not relayed while the first stays.
    let mut second = TcpStream::connect(("127.0.0.1", port)).unwrap_or_else(|e| panic!("{e}"));
    second.write_all(b"two").unwrap_or_else(|e| panic!("{e}"));
    second
        .set_read_timeout(Some(Duration::from_millis(500)))
        .ok();
    let mut buf = [0u8; 3];
    match second.read(&mut buf) {
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
        other => panic!(
            "the second client was relayed over --max-conns 1: {other:?}\n{}",
            relay_proc.report()
        ),
    }
    drop(first);
    second.set_read_timeout(Some(TIMEOUT)).ok();
    second.read_exact(&mut buf).unwrap_or_else(|e| {
        panic!(
            "the waiting client was never relayed: {e}\n{}",
            relay_proc.report()
        )
    });
    assert_eq!(&buf, b"two");
    drop(second);
    let line = summary(relay_proc);
    assert!(
        line.starts_with("summary: 2 connections") && !line.contains("refused"),
        "{line}"
    );
}

#[test]
fn max_conns_refuse_closes_the_extra_client_at_once_logs_and_counts_it() {
    let (_target, target_addr) = echo_target("tcp");
    let (relay_proc, port) = relay(
        "tcp://127.0.0.1:0",
        &format!("tcp://{target_addr}"),
        &[
            "--max-conns",
            "1",
            "--max-conns-mode",
            "refuse",
            "--metrics",
            "127.0.0.1:0",
            "-q",
        ],
    );
    let metrics = metrics_addr(&relay_proc);
    let first = served_client(port);
    assert_eq!(
        ping("127.0.0.1", port),
        Answer::Closed,
        "{}",
        relay_proc.report()
    );
    wait_logged(&relay_proc, "(--max-conns 1, --max-conns-mode refuse)");
    assert!(
        relay_proc
            .stderr()
            .contains("refused connection from 127.0.0.1:"),
        "{}",
        relay_proc.report()
    );
    let m = scrape_until(&relay_proc, &metrics, "the refusal", |m| {
        m.count("sockit_relay_connections_refused_total", "tcp") == 1
    });
    assert_eq!(m.count("sockit_relay_connections_accepted_total", "tcp"), 1);
    assert_eq!(m.count("sockit_relay_connections_denied_total", "tcp"), 0);
    // Once the first leaves, a new client gets its slot. The relay frees the slot when
    // the connection's task ends, just after the client sees the close: a few attempts.
    drop(first);
    let deadline = std::time::Instant::now() + TIMEOUT;
    while ping("127.0.0.1", port) != Answer::Echo {
        assert!(
            std::time::Instant::now() < deadline,
            "the slot was never freed\n{}",
            relay_proc.report()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let line = summary(relay_proc);
    assert!(line.starts_with("summary: 2 connections"), "{line}");
    assert!(line.contains(" refused"), "{line}");
}

#[test]
fn max_conns_on_a_datagram_relay_is_a_usage_error_pointing_at_max_sessions() {
    let output = run_sockit(
        &[
            "relay",
            "udp://127.0.0.1:0",
            "udp://127.0.0.1:9",
            "--max-conns",
            "10",
        ],
        None,
    );
    assert_eq!(code(&output), 2, "{}", describe(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("--max-conns") && stderr.contains("--max-sessions"),
        "{stderr}"
    );
}

#[test]
fn rules_on_a_unix_relay_filter_nobody_and_the_relay_says_so() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let path = dir.path().join("relay.sock");
    let (_target, target_addr) = echo_target("tcp");
    let mut relay_proc = Proc::sockit(&[
        "relay",
        &format!("unix:{}", path.display()),
        &format!("tcp://{target_addr}"),
        "--deny",
        "0.0.0.0/0",
        "-q",
    ]);
    relay_proc.listening();
    let mut stream =
        std::os::unix::net::UnixStream::connect(&path).unwrap_or_else(|e| panic!("{e}"));
    stream.set_read_timeout(Some(TIMEOUT)).ok();
    stream.write_all(b"ping").unwrap_or_else(|e| panic!("{e}"));
    let mut buf = [0u8; 4];
    stream
        .read_exact(&mut buf)
        .unwrap_or_else(|e| panic!("{e}\n{}", relay_proc.report()));
    assert_eq!(&buf, b"ping");
    wait_logged(
        &relay_proc,
        "Unix socket clients have none and are not filtered",
    );
}

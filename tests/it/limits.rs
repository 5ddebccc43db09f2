//! Issue 20: hostile clients get nothing they should not. Each attack at a bounded size,
//! on loopback, with the bound it must hit: PROXY headers only from trusted sources
//! (`--proxy-from`, raw headers and HAProxy's `send-proxy`), one source cannot take every
//! slot (`--max-conns-per-source`), a flood of UDP source ports cannot lock new clients
//! out of a relay, a UDP server is not an amplifier, and a flood of bad connections does
//! not flood the log. Other loopback addresses (127.0.0.2) stand for other hosts.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::Duration;

use crate::access::{Answer, exchange, stop};
use crate::ops::{metrics_addr, raise_nofile, scrape_until, stderr_line};
use crate::util::{Proc, TIMEOUT};

/// The port at the end of `host:port`.
fn port_of(addr: &str) -> u16 {
    addr.rsplit(':')
        .next()
        .and_then(|p| {
            p.trim_end_matches(|c: char| !c.is_ascii_digit())
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no port in {addr}"))
}

/// A TCP connection to 127.0.0.1:`port` from the loopback address `source`.
fn connect_from(source: [u8; 4], port: u16) -> TcpStream {
    use socket2::{Domain, Socket, Type};
    let connect = || -> std::io::Result<TcpStream> {
        let socket = Socket::new(Domain::IPV4, Type::STREAM, None)?;
        socket.bind(&SocketAddr::from((source, 0)).into())?;
        socket.connect(&SocketAddr::from(([127, 0, 0, 1], port)).into())?;
        Ok(socket.into())
    };
    connect().unwrap_or_else(|e| panic!("connect from {source:?} to port {port}: {e}"))
}

/// A UDP socket on the loopback address `source`, answers awaited up to [`TIMEOUT`].
fn udp_from(source: [u8; 4]) -> UdpSocket {
    let socket = UdpSocket::bind(SocketAddr::from((source, 0)))
        .unwrap_or_else(|e| panic!("bind {source:?}: {e}"));
    socket.set_read_timeout(Some(TIMEOUT)).ok();
    socket
}

/// Sends `request` to 127.0.0.1:`port` and waits for one answer.
fn udp_exchange(socket: &UdpSocket, port: u16, request: &[u8]) -> Vec<u8> {
    socket
        .send_to(request, ("127.0.0.1", port))
        .unwrap_or_else(|e| panic!("send: {e}"));
    let mut buf = vec![0u8; 70_000];
    let n = socket
        .recv(&mut buf)
        .unwrap_or_else(|e| panic!("no answer to {} bytes: {e}", request.len()));
    buf.truncate(n);
    buf
}

/// Like `udp_exchange`, but sends again after 2 s of silence, up to 10 times: right after
/// a flood the relay's receive queue may have been full, and a lost datagram is UDP's
/// normal behaviour, not the relay's failure. A relay that never answers still fails.
fn udp_exchange_resending(socket: &UdpSocket, port: u16, request: &[u8]) -> Vec<u8> {
    socket.set_read_timeout(Some(Duration::from_secs(2))).ok();
    let mut buf = vec![0u8; 70_000];
    for _ in 0..10 {
        socket
            .send_to(request, ("127.0.0.1", port))
            .unwrap_or_else(|e| panic!("send: {e}"));
        if let Ok(n) = socket.recv(&mut buf) {
            buf.truncate(n);
            return buf;
        }
    }
    panic!("no answer to {} bytes after 10 sends", request.len())
}

/// `sockit serve ENDPOINT --echo ARGS`, and its port.
fn echo_server(endpoint: &str, args: &[&str]) -> (Proc, u16) {
    let mut argv = vec!["serve", endpoint, "--echo"];
    argv.extend_from_slice(args);
    let mut server = Proc::sockit(&argv);
    let port = port_of(&server.listening());
    (server, port)
}

/// `sockit relay LISTEN TARGET ARGS`, and its port.
fn relay(listen: &str, target: &str, args: &[&str]) -> (Proc, u16) {
    let mut argv = vec!["relay", listen, target];
    argv.extend_from_slice(args);
    let mut relay = Proc::sockit(&argv);
    let port = port_of(&relay.listening());
    (relay, port)
}

/// The listening address in a `--log text` event line (`listening endpoint=tcp://…`).
fn text_listening(server: &mut Proc) -> String {
    let line = server.wait_for_line("listening", |l| l.contains(" listening endpoint="));
    let endpoint = line.split("endpoint=").nth(1).unwrap_or_default().trim();
    endpoint
        .split_once("://")
        .map_or(endpoint, |(_, addr)| addr)
        .to_string()
}

/// Writes a PROXY v1 header claiming `claimed` on `stream`, then "ping"s through it.
fn ping_claiming(mut stream: TcpStream, claimed: &str, port: u16) -> Answer {
    // The write may fail if the server closed first; `exchange` reads what happened.
    let _ = write!(stream, "PROXY TCP4 {claimed} 127.0.0.1 4000 80\r\n");
    exchange(stream, "127.0.0.1", port)
}

#[test]
fn proxy_headers_are_believed_only_from_proxy_from_sources() {
    // The issue's bypass: a client at 127.0.0.1, which --deny names, claims to be
    // 198.51.100.7. Only 127.0.0.2 (the "load balancer") may send headers.
    let (mut server, port) = {
        let mut server = Proc::sockit(&[
            "serve",
            "tcp://127.0.0.1:0",
            "--echo",
            "--proxy-protocol",
            "--proxy-from",
            "127.0.0.2",
            "--deny",
            "127.0.0.1",
            "--log",
            "text",
        ]);
        let port = port_of(&text_listening(&mut server));
        (server, port)
    };
    assert_eq!(
        ping_claiming(connect_from([127, 0, 0, 1], port), "198.51.100.7", port),
        Answer::Closed,
        "a header from an untrusted source was believed\n{}",
        server.report()
    );
    let line = stderr_line(&server, "the refusal", |l| {
        l.contains("refused connection from 127.0.0.1:")
    });
    assert!(line.contains("--proxy-from 127.0.0.2/32"), "{line}");

    let balancer = connect_from([127, 0, 0, 2], port);
    let via = balancer.local_addr().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        ping_claiming(balancer, "198.51.100.7", port),
        Answer::Echo,
        "{}",
        server.report()
    );
    let event = server.wait_for_line("the proxied event", |l| l.contains(" proxied conn="));
    assert!(
        event.contains("peer=198.51.100.7:4000") && event.contains(&format!("via={via}")),
        "{event}"
    );
    // The trusted balancer's header is judged by the rules: 127.0.0.1 stays denied.
    assert_eq!(
        ping_claiming(connect_from([127, 0, 0, 2], port), "127.0.0.1", port),
        Answer::Closed,
        "{}",
        server.report()
    );
    let (summary, log) = stop(server);
    assert!(summary.ends_with(", 2 denied"), "{summary}");
    assert!(!log.contains("without --proxy-from"), "{log}");
}

#[test]
fn proxy_protocol_without_proxy_from_warns_at_start() {
    let server = Proc::sockit(&["serve", "tcp://127.0.0.1:0", "--proxy-protocol"]);
    let line = stderr_line(&server, "the warning", |l| l.contains("--proxy-from"));
    assert!(
        line.contains("--proxy-protocol without --proxy-from") && line.contains("any source"),
        "{line}"
    );
    stop(server);
}

#[test]
fn haproxy_from_a_trusted_source_passes_and_sockit_names_it_via() {
    // HAProxy connects to sockit from 127.0.0.2 (`source`), the one --proxy-from range.
    let mut server = Proc::sockit(&[
        "serve",
        "tcp://127.0.0.1:0",
        "--echo",
        "--proxy-protocol",
        "--proxy-from",
        "127.0.0.2",
        "--log",
        "text",
    ]);
    let sockit_addr = text_listening(&mut server);
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
    let front = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
    let config = dir.path().join("haproxy.cfg");
    std::fs::write(
        &config,
        format!(
            "defaults\n  mode tcp\n  timeout connect 5s\n  timeout client 30s\n  timeout server 30s\n\
             frontend front\n  bind fd@3\n  default_backend sockit\n\
             backend sockit\n  server s1 {sockit_addr} send-proxy-v2 source 127.0.0.2\n"
        ),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let mut cmd = std::process::Command::new("haproxy");
    cmd.arg("-f").arg(&config).arg("-db");
    pass_as_fd3(&mut cmd, &listener);
    let haproxy = Proc::spawn(cmd, false);
    drop(listener);
    let client = TcpStream::connect(front).unwrap_or_else(|e| panic!("{e}"));
    let me = client.local_addr().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        exchange(client, "127.0.0.1", front.port()),
        Answer::Echo,
        "through HAProxy\n{}\n{}",
        haproxy.report(),
        server.report()
    );
    let event = server.wait_for_line("the proxied event", |l| l.contains(" proxied conn="));
    assert!(
        event.contains(&format!("peer={me}")) && event.contains("via=127.0.0.2:"),
        "{event}"
    );
    stop(server);
}

/// Makes `socket` file descriptor 3 of the program `cmd` runs (HAProxy's `bind fd@3`:
/// it cannot bind port 0 itself).
fn pass_as_fd3(cmd: &mut std::process::Command, socket: &impl std::os::fd::AsRawFd) {
    use std::os::unix::process::CommandExt;
    let fd = socket.as_raw_fd();
    // SAFETY: dup2 and fcntl are async-signal-safe; they only touch the child's
    // descriptor table.
    unsafe {
        cmd.pre_exec(move || {
            // dup2 onto itself would keep close-on-exec set: clear it instead.
            let rc = if fd == 3 {
                libc::fcntl(3, libc::F_SETFD, 0)
            } else {
                libc::dup2(fd, 3)
            };
            if rc < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

#[test]
fn a_late_proxy_header_is_reported_with_an_option_that_exists() {
    let mut server = Proc::sockit(&[
        "serve",
        "tcp://127.0.0.1:0",
        "--proxy-protocol",
        "--proxy-from",
        "127.0.0.1",
    ]);
    let port = port_of(&server.listening());
    let silent = TcpStream::connect(("127.0.0.1", port)).unwrap_or_else(|e| panic!("{e}"));
    let line = stderr_line(&server, "the late-header line", |l| {
        l.contains("no complete PROXY protocol header from")
    });
    assert!(
        !line.contains("--timeout") && line.contains("--proxy-protocol"),
        "the hint must name an option serve has: {line}"
    );
    drop(silent);
    stop(server);
}

/// Holds `count` connections from 127.0.0.1 to `port`, idle.
fn hold_connections(port: u16, count: usize) -> Vec<TcpStream> {
    (0..count)
        .map(|_| connect_from([127, 0, 0, 1], port))
        .collect()
}

/// The attack of issue 20 point 3 at a bounded size: 500 idle connections from one
/// source against `--max-conns 450`; with `--max-conns-per-source 400` it gets 400 and
/// clients from another source are served.
fn one_source_cannot_take_every_slot(
    listener: (Proc, u16),
    refused_metric: &str,
    active_metric: &str,
) {
    raise_nofile(4096);
    let (server, port) = listener;
    let metrics = metrics_addr(&server);
    let held = hold_connections(port, 500);
    let m = scrape_until(&server, &metrics, "100 refusals", |m| {
        m.count(refused_metric, "tcp") >= 100
    });
    assert_eq!(m.count(refused_metric, "tcp"), 100, "{}", m.text);
    for i in 0..10 {
        assert_eq!(
            exchange(connect_from([127, 0, 0, 2], port), "127.0.0.1", port),
            Answer::Echo,
            "honest client {i} from 127.0.0.2 was not served\n{}",
            server.report()
        );
    }
    let m = scrape_until(&server, &metrics, "the honest clients gone", |m| {
        m.count(active_metric, "tcp") == 400
    });
    assert_eq!(m.count(refused_metric, "tcp"), 100, "{}", m.text);
    let line = stderr_line(&server, "the refusal line", |l| {
        l.contains("--max-conns-per-source 400")
    });
    assert!(
        line.contains("its source 127.0.0.1 already holds 400"),
        "{line}"
    );
    drop(held);
    stop(server);
}

#[test]
fn five_hundred_connections_from_one_source_leave_serve_room_for_another() {
    raise_nofile(4096);
    let server = echo_server(
        "tcp://127.0.0.1:0",
        &[
            "--max-conns",
            "450",
            "--max-conns-per-source",
            "400",
            "--metrics",
            "127.0.0.1:0",
            "-q",
        ],
    );
    one_source_cannot_take_every_slot(
        server,
        "sockit_connections_refused_total",
        "sockit_connections_active",
    );
}

#[test]
fn five_hundred_connections_from_one_source_leave_relay_room_for_another() {
    raise_nofile(4096);
    let (_target, target_port) = echo_server("tcp://127.0.0.1:0", &["-q"]);
    let relay = relay(
        "tcp://127.0.0.1:0",
        &format!("tcp://127.0.0.1:{target_port}"),
        &[
            "--max-conns",
            "450",
            "--max-conns-per-source",
            "400",
            "--metrics",
            "127.0.0.1:0",
            "-q",
        ],
    );
    one_source_cannot_take_every_slot(
        relay,
        "sockit_relay_connections_refused_total",
        "sockit_relay_connections_active",
    );
}

/// Sends one byte from each of `count` fresh source ports on 127.0.0.1, 100 at a time,
/// waiting after each batch until the relay has handled every one (the
/// socket buffer would otherwise drop part of the flood). The sockets stay open until the
/// test is over (the caller holds them), so no port is used twice.
fn flood_source_ports(relay: &Proc, metrics: &str, port: u16, count: u64) -> Vec<UdpSocket> {
    raise_nofile(4096);
    let mut senders = Vec::new();
    // Every datagram either opened a session or was dropped (at a full table).
    let handled = |m: &crate::ops::Metrics| {
        m.count("sockit_relay_connections_accepted_total", "udp")
            + m.count("sockit_relay_datagrams_dropped_total", "udp")
    };
    let start = handled(&crate::ops::scrape(metrics));
    let mut sent = 0;
    while sent < count {
        let batch = (count - sent).min(100);
        for _ in 0..batch {
            let sender = udp_from([127, 0, 0, 1]);
            sender
                .send_to(b"x", ("127.0.0.1", port))
                .unwrap_or_else(|e| panic!("send: {e}"));
            senders.push(sender);
        }
        sent += batch;
        scrape_until(relay, metrics, "the flood handled", |m| {
            handled(m) >= start + sent
        });
    }
    senders
}

#[test]
fn a_flood_of_udp_source_ports_cannot_lock_new_clients_out_of_a_relay() {
    // Issue 20 point 4: 1,100 one-byte datagrams from new source ports against
    // --max-sessions 1024, then 10 new clients; each must be answered. The relay inherits
    // a descriptor limit that lets it hold all 1,024 sessions.
    raise_nofile(4096);
    let (_target, target_port) = echo_server("udp://127.0.0.1:0", &["-q"]);
    let (relay, port) = relay(
        "udp://127.0.0.1:0",
        &format!("udp://127.0.0.1:{target_port}"),
        &["--max-sessions", "1024", "--metrics", "127.0.0.1:0", "-q"],
    );
    let metrics = metrics_addr(&relay);
    let flood_started = std::time::Instant::now();
    let _flood = flood_source_ports(&relay, &metrics, port, 1100);
    for i in 0..10 {
        let client = udp_from([127, 0, 0, 1]);
        assert_eq!(
            udp_exchange_resending(&client, port, b"hello"),
            b"hello",
            "new client {i}\n{}",
            relay.report()
        );
    }
    // An evicted session's socket closes when its task ends, a moment after the new
    // session opened, so the gauge may pass 1,024 briefly; a table that really grew
    // past its cap never comes back under it.
    let m = scrape_until(&relay, &metrics, "the sessions to settle at the cap", |m| {
        m.count("sockit_relay_connections_active", "udp") <= 1024
    });
    assert!(
        m.count("sockit_relay_sessions_evicted_total", "udp") >= 1100 + 10 - 1024,
        "{}",
        m.text
    );
    // The relay logs at most 10 eviction lines a second (sockit's LogThrottle default), so
    // the bound follows from how long the evictions went on, however slow the machine.
    let seconds = flood_started.elapsed().as_secs() + 2;
    let (_, log) = stop(relay);
    let evictions = log.lines().filter(|l| l.contains("idle longest")).count();
    let bound = 10 * usize::try_from(seconds).unwrap_or(usize::MAX);
    assert!(
        (1..=bound.min(85)).contains(&evictions),
        "evictions are logged at a bounded rate: {evictions} lines in about {seconds} s\n{log}"
    );
}

#[test]
fn one_source_holds_at_most_its_share_of_udp_relay_sessions() {
    let (_target, target_port) = echo_server("udp://127.0.0.1:0", &["-q"]);
    let (relay, port) = relay(
        "udp://127.0.0.1:0",
        &format!("udp://127.0.0.1:{target_port}"),
        &[
            "--max-sessions",
            "1024",
            "--max-conns-per-source",
            "100",
            "--metrics",
            "127.0.0.1:0",
            "-q",
        ],
    );
    let metrics = metrics_addr(&relay);
    let honest = udp_from([127, 0, 0, 2]);
    assert_eq!(udp_exchange(&honest, port, b"before"), b"before");
    let _flood = flood_source_ports(&relay, &metrics, port, 300);
    let m = crate::ops::scrape(&metrics);
    // 100 from 127.0.0.1, plus the honest client's own session.
    assert_eq!(
        m.count("sockit_relay_connections_active", "udp"),
        101,
        "{}",
        m.text
    );
    assert_eq!(
        m.count("sockit_relay_sessions_evicted_total", "udp"),
        200,
        "{}",
        m.text
    );
    // The honest client's session survived the flood: the same session answers.
    assert_eq!(udp_exchange(&honest, port, b"after"), b"after");
    let m = crate::ops::scrape(&metrics);
    assert_eq!(
        m.count("sockit_relay_connections_accepted_total", "udp"),
        301,
        "{}",
        m.text
    );
    stop(relay);
}

#[test]
fn a_udp_server_replies_at_most_k_times_what_a_source_sent() {
    let reply = "r".repeat(1000);
    for answer in [
        ["--reply", reply.as_str()],
        ["--sh-exec", "cat >/dev/null; head -c 1000 /dev/zero"],
    ] {
        let mut argv = vec!["serve", "udp://127.0.0.1:0", "--amplification-limit", "3"];
        argv.extend_from_slice(&answer);
        let mut server = Proc::sockit(&argv);
        let port = port_of(&server.listening());
        let client = udp_from([127, 0, 0, 1]);
        // 1 byte earns 3: no reply. 400 more bytes earn 1,200: one reply fits.
        client
            .send_to(b"x", ("127.0.0.1", port))
            .unwrap_or_else(|e| panic!("{e}"));
        let answered = udp_exchange(&client, port, &[b'y'; 400]);
        assert_eq!(answered.len(), 1000, "{}", server.report());
        let line = stderr_line(&server, "the held-back line", |l| {
            l.contains("held back a 1000-byte reply")
        });
        assert!(line.contains("--amplification-limit 3"), "{line}");
        // Both answers are decided: one sent, one held back; nothing else is queued.
        client.set_nonblocking(true).ok();
        let mut buf = [0u8; 2000];
        let extra = client.recv(&mut buf);
        assert!(
            extra
                .as_ref()
                .is_err_and(|e| e.kind() == ErrorKind::WouldBlock),
            "a second reply came: {extra:?}\n{}",
            server.report()
        );
        stop(server);
    }

    // On loopback the guard is off unless asked for: the note's client sends a few bytes.
    let mut server = Proc::sockit(&["serve", "udp://127.0.0.1:0", "--reply", &reply]);
    let port = port_of(&server.listening());
    let client = udp_from([127, 0, 0, 1]);
    assert_eq!(udp_exchange(&client, port, b"x").len(), 1000);
    stop(server);
}

#[test]
fn a_reply_larger_than_a_datagram_is_a_usage_error_at_start() {
    let reply = "r".repeat(65_508);
    let mut server = Proc::sockit(&["serve", "udp://127.0.0.1:0", "--reply", &reply]);
    let status = server.wait_exit();
    assert_eq!(status.code(), Some(2), "{}", server.report());
    let log = server.stderr();
    assert!(
        log.contains("--reply is 65508 bytes") && log.contains("at most 65507"),
        "{log}"
    );
}

#[test]
fn a_flood_of_bad_connections_writes_a_bounded_number_of_lines() {
    // Connections whose PROXY header is garbage, each logged as it closes: past the rate
    // limit, the lines left out are counted in the next one.
    let mut server = Proc::sockit(&["serve", "tcp://127.0.0.1:0", "--proxy-protocol"]);
    let port = port_of(&server.listening());
    let mut made = 0;
    while made < 20_000 && !server.stderr().contains("similar lines suppressed") {
        for _ in 0..100 {
            let mut bad = TcpStream::connect(("127.0.0.1", port)).unwrap_or_else(|e| panic!("{e}"));
            let _ = bad.write_all(b"GET / HTTP/1.0\r\n\r\n");
            bad.set_read_timeout(Some(TIMEOUT)).ok();
            let _ = bad.read(&mut [0u8; 16]);
        }
        made += 100;
    }
    let (_, log) = stop(server);
    let lines = log
        .lines()
        .filter(|l| l.contains("bad PROXY protocol header"))
        .count();
    assert!(
        log.contains("similar lines suppressed") && lines < made,
        "{lines} lines for {made} bad connections\n{}",
        log.lines().take(40).collect::<Vec<_>>().join("\n")
    );
}

#[test]
fn udp_exec_counts_its_program_cap_across_every_thread() {
    // Each program notes its start, counts the programs running (started minus ended),
    // stays a moment, notes its end and replies with the count. A program starts only
    // once a slot frees, after the end of the one before is noted: no count may pass the
    // cap of 64, whichever of the two threads received the datagram.
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let mut cmd = crate::util::sockit_command(&[
        "--threads",
        "2",
        "serve",
        "udp://127.0.0.1:0",
        "--sh-exec",
        "echo s >> \"$D/log\"; n=$(( $(grep -c s \"$D/log\") - $(grep -c e \"$D/log\") )); \
         sleep 0.3; echo e >> \"$D/log\"; echo $n",
    ]);
    cmd.env("D", dir.path());
    let mut server = Proc::spawn(cmd, false);
    let port = port_of(&server.listening());
    raise_nofile(4096);
    let clients: Vec<UdpSocket> = (0..160).map(|_| udp_from([127, 0, 0, 1])).collect();
    for client in &clients {
        client
            .send_to(b"go", ("127.0.0.1", port))
            .unwrap_or_else(|e| panic!("{e}"));
    }
    let mut most = 0;
    for client in &clients {
        let mut buf = [0u8; 64];
        let n = client
            .recv(&mut buf)
            .unwrap_or_else(|e| panic!("no reply: {e}\n{}", server.report()));
        let running: u32 = String::from_utf8_lossy(&buf[..n])
            .trim()
            .parse()
            .unwrap_or_else(|e| panic!("{e}: {:?}", &buf[..n]));
        most = most.max(running);
    }
    assert!(
        (1..=64).contains(&most),
        "{most} programs ran at once\n{}",
        server.report()
    );
    stop(server);
}

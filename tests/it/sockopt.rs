//! Issue 18, point 2: the source address and socket options of client sockets
//! (`--source`, `--bind-device`, `--mark`, `--tos`/`--dscp`, `--ttl`/`--hop-limit`,
//! `--keepalive`, `--delay`/`--no-delay`, `--send-buffer`/`--recv-buffer`,
//! `--broadcast`). Each is read back from the socket: with `getsockopt` on a connection
//! the library made, or from `ss` while the real binary holds a connection open. Bad
//! values are one line with a documented exit code, before anything starts.

use std::io::Read;
use std::net::{SocketAddr, TcpListener};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use socket2::SockRef;
use sockit::transport::{
    Broadcast, ConnectOptions, DatagramSocket, Keepalive, Nagle, SocketOptions, Source, Stream,
    connect_stream,
};

use crate::util::{Proc, TIMEOUT, code, describe, run_sockit, sockit_command, within};

/// A listener on loopback of the given family, and its address.
fn listener(ip: &str) -> (TcpListener, SocketAddr) {
    let listener = TcpListener::bind((ip, 0)).unwrap_or_else(|e| panic!("bind {ip}: {e}"));
    let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
    (listener, addr)
}

/// A port nothing holds at the moment (bound, read back, released).
fn free_port() -> u16 {
    let (listener, addr) = listener("127.0.0.1");
    drop(listener);
    addr.port()
}

/// Connects through the library with `socket` options and returns the TCP stream.
async fn connect_with(target: SocketAddr, socket: SocketOptions) -> tokio::net::TcpStream {
    let endpoint: sockit::Endpoint = format!("tcp://{target}")
        .parse()
        .unwrap_or_else(|e| panic!("{e}"));
    let options = ConnectOptions {
        socket,
        ..ConnectOptions::new(TIMEOUT)
    };
    match within("connecting", connect_stream(&endpoint, options)).await {
        Ok(Stream::Tcp(tcp)) => tcp,
        Ok(other) => panic!("expected TCP, got {other:?}"),
        Err(e) => panic!("connect to {target}: {e}"),
    }
}

#[tokio::test]
async fn every_option_reads_back_from_the_connected_ipv4_socket() {
    let (_listener, target) = listener("127.0.0.1");
    let source_port = free_port();
    let options = SocketOptions {
        source: Some(Source {
            ip: Some("127.0.0.1".parse().unwrap_or_else(|e| panic!("{e}"))),
            port: source_port,
        }),
        bind_device: Some("lo".into()),
        mark: Some(7),
        tos: Some(0x10),
        ttl: Some(9),
        keepalive: Some(Keepalive {
            idle: Duration::from_secs(30),
            interval: Some(Duration::from_secs(5)),
            count: Some(3),
        }),
        nagle: Nagle::On,
        send_buffer: Some(100_000),
        recv_buffer: Some(50_000),
        broadcast: Broadcast::Refused,
        multicast: Default::default(),
    };
    let tcp = connect_with(target, options).await;
    let socket = SockRef::from(&tcp);
    let read = |what: &str, value: std::io::Result<u32>| {
        value.unwrap_or_else(|e| panic!("getsockopt {what}: {e}"))
    };
    assert_eq!(tcp.local_addr().ok().map(|a| a.port()), Some(source_port));
    assert_eq!(socket.device().ok().flatten().as_deref(), Some(&b"lo"[..]));
    assert_eq!(read("SO_MARK", socket.mark()), 7);
    assert_eq!(read("IP_TOS", socket.tos_v4()), 0x10);
    assert_eq!(read("IP_TTL", socket.ttl_v4()), 9);
    assert_eq!(socket.keepalive().ok(), Some(true));
    assert_eq!(
        socket.tcp_keepalive_time().ok(),
        Some(Duration::from_secs(30))
    );
    assert_eq!(
        socket.tcp_keepalive_interval().ok(),
        Some(Duration::from_secs(5))
    );
    assert_eq!(socket.tcp_keepalive_retries().ok(), Some(3));
    assert_eq!(
        socket.tcp_nodelay().ok(),
        Some(false),
        "--delay turns Nagle on"
    );
    // Linux doubles the size asked for, for its bookkeeping.
    assert_eq!(socket.send_buffer_size().ok(), Some(200_000));
    assert_eq!(socket.recv_buffer_size().ok(), Some(100_000));
}

#[tokio::test]
async fn ipv6_takes_tos_as_traffic_class_and_ttl_as_hop_limit() {
    let Ok(listener) = TcpListener::bind("[::1]:0") else {
        eprintln!("no IPv6 loopback on this machine; skipped");
        return;
    };
    let target = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
    let options = SocketOptions {
        source: Some(":0".parse().unwrap_or_else(|e| panic!("{e}"))),
        tos: Some(46 << 2),
        ttl: Some(3),
        ..SocketOptions::default()
    };
    let tcp = connect_with(target, options).await;
    let socket = SockRef::from(&tcp);
    assert_eq!(socket.tclass_v6().ok(), Some(46 << 2));
    assert_eq!(socket.unicast_hops_v6().ok(), Some(3));
    assert!(tcp.local_addr().is_ok_and(|a| a.is_ipv6()));
}

#[tokio::test]
async fn nagle_is_off_by_default() {
    let (_listener, target) = listener("127.0.0.1");
    let tcp = connect_with(target, SocketOptions::default()).await;
    assert_eq!(SockRef::from(&tcp).tcp_nodelay().ok(), Some(true));
}

#[tokio::test]
async fn a_udp_client_takes_broadcast_tos_and_its_source_port() {
    let echo = std::net::UdpSocket::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
    let target = echo.local_addr().unwrap_or_else(|e| panic!("{e}"));
    let endpoint: sockit::Endpoint = format!("udp://{target}")
        .parse()
        .unwrap_or_else(|e| panic!("{e}"));
    let source_port = {
        let probe = std::net::UdpSocket::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
        probe.local_addr().map(|a| a.port()).unwrap_or(0)
    };
    let options = ConnectOptions {
        socket: SocketOptions {
            source: Some(
                format!("127.0.0.1:{source_port}")
                    .parse()
                    .unwrap_or_else(|e| panic!("{e}")),
            ),
            broadcast: Broadcast::Allowed,
            tos: Some(0x20),
            ..SocketOptions::default()
        },
        ..ConnectOptions::new(TIMEOUT)
    };
    let socket = within(
        "connecting",
        DatagramSocket::connect_with_options(&endpoint, &options),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let DatagramSocket::Udp(udp) = &socket else {
        panic!("expected a UDP socket");
    };
    let sock = SockRef::from(udp);
    assert_eq!(sock.broadcast().ok(), Some(true));
    assert_eq!(sock.tos_v4().ok(), Some(0x20));
    assert_eq!(udp.local_addr().ok().map(|a| a.port()), Some(source_port));
}

#[tokio::test]
async fn a_udp_client_refuses_broadcast_unless_asked() {
    let endpoint: sockit::Endpoint = "udp://127.0.0.1:9"
        .parse()
        .unwrap_or_else(|e| panic!("{e}"));
    let socket = within("connecting", DatagramSocket::connect(&endpoint))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let DatagramSocket::Udp(udp) = &socket else {
        panic!("expected a UDP socket");
    };
    assert_eq!(SockRef::from(udp).broadcast().ok(), Some(false));
}

/// `ss` lines for established TCP sockets whose peer port is `port`, with timers,
/// extended details, memory and TOS.
fn ss_for_peer_port(port: u16) -> String {
    let output = Command::new("ss")
        .args(["-tieomn", "--tos", "state", "established"])
        .arg(format!("dport = :{port}"))
        .output()
        .unwrap_or_else(|e| panic!("cannot run ss: {e}"));
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Polls `ss` until the connection to `port` shows up (bounded by [`TIMEOUT`]).
fn wait_for_ss(port: u16) -> String {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let text = ss_for_peer_port(port);
        if text.lines().count() > 1 {
            return text;
        }
        assert!(Instant::now() < deadline, "ss never showed the connection");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn ss_shows_what_sockit_connect_set() {
    let (listener, target) = listener("127.0.0.1");
    let source_port = free_port();
    let mut connect = Proc::spawn(
        sockit_command(&[
            "connect",
            &target.to_string(),
            "--source",
            &format!("127.0.0.1:{source_port}"),
            "--bind-device",
            "lo",
            "--mark",
            "7",
            "--dscp",
            "4",
            "--keepalive",
            "30s,5s,3",
            "--send-buffer",
            "100000",
        ]),
        true,
    );
    let (_server_side, _) = accept_within(&listener, &mut connect);
    let shown = wait_for_ss(target.port());
    connect.close_stdin();
    assert!(
        shown.contains(&format!("127.0.0.1%lo:{source_port}")),
        "source and device: {shown}"
    );
    assert!(shown.contains("fwmark:0x7"), "mark: {shown}");
    assert!(shown.contains("tos:0x10"), "DSCP 4 is TOS 0x10: {shown}");
    assert!(shown.contains("timer:(keepalive,"), "keepalive: {shown}");
    assert!(shown.contains("tb200000"), "send buffer: {shown}");
    drop(_server_side);
    let status = connect.wait_exit();
    assert!(status.success(), "{}", connect.report());
}

#[test]
fn ss_shows_what_sockit_listen_set_on_the_accepted_connection() {
    let mut listen = Proc::spawn(
        sockit_command(&["listen", "127.0.0.1:0", "--tos", "32", "--keepalive", "40"]),
        true,
    );
    let port = listening_port(&listen);
    let client = std::net::TcpStream::connect(("127.0.0.1", port))
        .unwrap_or_else(|e| panic!("connect: {e}"));
    let local = client.local_addr().unwrap_or_else(|e| panic!("{e}"));
    let shown = wait_for_ss_line(local.port(), "tos:0x20");
    assert!(shown.contains("timer:(keepalive,"), "keepalive: {shown}");
    drop(client);
    listen.close_stdin();
    listen.wait_exit();
}

/// The port in `listen`'s readiness line on stderr.
fn listening_port(listen: &Proc) -> u16 {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let stderr = listen.stderr();
        if let Some(port) = stderr
            .lines()
            .find_map(|l| l.strip_prefix("listening on tcp://127.0.0.1:"))
            .and_then(|p| p.trim().parse().ok())
        {
            return port;
        }
        assert!(Instant::now() < deadline, "no listening line: {stderr}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Polls `ss` until the connection to `port` shows `needle` (the option is set right
/// after accept, so it may lag the connection by a moment).
fn wait_for_ss_line(port: u16, needle: &str) -> String {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let text = ss_for_peer_port(port);
        if text.contains(needle) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "ss never showed {needle}: {text}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs `sockit ARGS` and checks it fails with one stderr line holding `says`.
fn fails_in_one_line(args: &[&str], exit: i32, says: &str) {
    let output = run_sockit(args, Some(b"hi"));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(code(&output), exit, "{args:?}\n{}", describe(&output));
    assert!(stderr.contains(says), "{args:?}\n{}", describe(&output));
    assert_eq!(
        stderr.trim().lines().count(),
        1,
        "{args:?}\n{}",
        describe(&output)
    );
    assert!(!stderr.contains("Os {"), "{stderr}");
}

#[test]
fn a_source_port_in_use_is_one_line_and_exit_6() {
    let (_held, held) = listener("127.0.0.1");
    let (_target, target) = listener("127.0.0.1");
    fails_in_one_line(
        &["send", &target.to_string(), "--source", &held.to_string()],
        6,
        "port is in use",
    );
}

#[test]
fn a_source_address_not_on_this_host_is_one_line_and_exit_6() {
    let (_target, target) = listener("127.0.0.1");
    fails_in_one_line(
        &["connect", &target.to_string(), "--source", "192.0.2.1"],
        6,
        "not an address of this machine",
    );
}

#[test]
fn a_source_of_the_other_family_is_one_line_and_exit_2() {
    fails_in_one_line(
        &["send", "tcp://[::1]:9", "--source", "127.0.0.1"],
        2,
        "--source 127.0.0.1 is an IPv4 address",
    );
}

#[test]
fn an_unknown_interface_is_one_line_and_exit_6() {
    fails_in_one_line(
        &["send", "127.0.0.1:9", "--bind-device", "nosuch0"],
        6,
        "no network interface of that name",
    );
}

#[test]
fn a_mark_without_the_privilege_is_one_line_and_exit_6() {
    let is_root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0"));
    if !is_root {
        eprintln!("needs root to drop to an unprivileged user; skipped");
        return;
    }
    let output = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(crate::util::sockit_bin())
        .args(["send", "127.0.0.1:9", "hi", "--mark", "7"])
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("setpriv: {e}"));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(6), "{}", describe(&output));
    assert_eq!(
        stderr.trim(),
        "error: cannot use --mark 7: marking packets needs root or CAP_NET_ADMIN"
    );
}

#[test]
fn out_of_range_values_are_usage_errors() {
    for args in [
        &["send", "127.0.0.1:9", "--tos", "300"][..],
        &["send", "127.0.0.1:9", "--dscp", "64"],
        &["send", "127.0.0.1:9", "--ttl", "0"],
        &["send", "127.0.0.1:9", "--keepalive", "30s,5s"],
        &["send", "127.0.0.1:9", "--source", "localhost:80"],
        &["send", "127.0.0.1:9", "--bind-device", "a/b"],
        &["send", "127.0.0.1:9", "--tos", "16", "--dscp", "4"],
        &["send", "127.0.0.1:9", "--delay", "--no-delay"],
    ] {
        let output = run_sockit(args, None);
        assert_eq!(code(&output), 2, "{args:?}\n{}", describe(&output));
        let stderr = String::from_utf8_lossy(&output.stderr);
        let first = stderr.lines().next().unwrap_or_default();
        assert!(first.starts_with("error: "), "{args:?}\n{stderr}");
    }
}

#[test]
fn a_relay_with_a_refused_option_never_starts_listening() {
    let port = free_port();
    let output = run_sockit(
        &[
            "relay",
            &format!("tcp://127.0.0.1:{port}"),
            "tcp://127.0.0.1:9",
            "--bind-device",
            "nosuch0",
        ],
        None,
    );
    assert_eq!(code(&output), 6, "{}", describe(&output));
    assert!(
        !String::from_utf8_lossy(&output.stdout).contains("start"),
        "{}",
        describe(&output)
    );
    // The port is still free: nothing was bound.
    assert!(TcpListener::bind(("127.0.0.1", port)).is_ok());
}

#[test]
fn listen_refuses_a_source_address() {
    let output = run_sockit(&["listen", "127.0.0.1:0", "--source", "127.0.0.1"], None);
    assert_eq!(code(&output), 2, "{}", describe(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("a listener binds the address ENDPOINT names"),
        "{stderr}"
    );
}

#[test]
fn send_with_source_port_and_options_gets_its_reply() {
    let (listener, target) = listener("127.0.0.1");
    let source_port = free_port();
    let server = std::thread::spawn(move || {
        let (mut conn, peer) = accept_by_deadline(&listener);
        let mut buf = [0u8; 2];
        let _ = conn.read_exact(&mut buf);
        let _ = std::io::Write::write_all(&mut conn, b"ok");
        peer
    });
    let output = run_sockit(
        &[
            "send",
            &target.to_string(),
            "hi",
            "--source",
            &format!(":{source_port}"),
            "--ttl",
            "64",
            "--delay",
        ],
        None,
    );
    assert_eq!(code(&output), 0, "{}", describe(&output));
    let peer = server.join().unwrap_or_else(|_| panic!("server thread"));
    assert_eq!(peer.port(), source_port, "the server saw the --source port");
}

#[test]
fn serve_hands_its_listening_socket_options_to_every_connection() {
    let mut server = Proc::sockit(&[
        "serve",
        "tcp://127.0.0.1:0",
        "--echo",
        "--tos",
        "32",
        "--mark",
        "9",
        "--keepalive",
        "40",
        "-q",
    ]);
    let addr = server.listening();
    let client = crate::util::connect_tcp(&addr);
    let local = client.local_addr().unwrap_or_else(|e| panic!("{e}"));
    let shown = wait_for_ss_line(local.port(), "tos:0x20");
    assert!(shown.contains("fwmark:0x9"), "mark: {shown}");
    assert!(shown.contains("timer:(keepalive,"), "keepalive: {shown}");
    drop(client);
    server.signal(libc::SIGTERM);
    server.wait_exit();
}

#[test]
fn serve_refuses_a_source_address() {
    let output = run_sockit(&["serve", "127.0.0.1:0", "--source", "127.0.0.1"], None);
    assert_eq!(code(&output), 2, "{}", describe(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("--source is for connecting commands"),
        "{stderr}"
    );
}

#[test]
fn bench_takes_the_same_socket_options() {
    let mut server = Proc::sockit(&["serve", "tcp://127.0.0.1:0", "-q"]);
    let addr = server.listening();
    let output = run_sockit(
        &[
            "bench",
            &addr,
            "-c",
            "2",
            "-d",
            "300ms",
            "--warmup",
            "0",
            "--tos",
            "16",
            "--ttl",
            "5",
            "--delay",
            "--source",
            "127.0.0.1",
        ],
        None,
    );
    assert_eq!(code(&output), 0, "{}", describe(&output));
    fails_in_one_line(
        &["bench", &addr, "-d", "300ms", "--bind-device", "nosuch0"],
        6,
        "no network interface of that name",
    );
    server.signal(libc::SIGTERM);
    server.wait_exit();
}

#[test]
fn socket_options_on_a_unix_target_are_a_usage_error() {
    fails_in_one_line(
        &["send", "unix:/tmp/sockit-no-such.sock", "hi", "--tos", "16"],
        2,
        "is a Unix socket",
    );
}

/// Runs `client` (holding its stdin open) against a listener on 127.0.0.1 and returns
/// what `ss` shows for the client's own socket.
fn ss_of_client(make: impl FnOnce(SocketAddr) -> Command) -> String {
    let (listener, target) = listener("127.0.0.1");
    let mut client = Proc::spawn(make(target), true);
    let (server_side, client_addr) = accept_within(&listener, &mut client);
    let deadline = Instant::now() + TIMEOUT;
    let shown = loop {
        let output = Command::new("ss")
            .args(["-tieomn", "--tos", "state", "established"])
            .arg(format!("sport = :{}", client_addr.port()))
            .output()
            .unwrap_or_else(|e| panic!("cannot run ss: {e}"));
        let text = String::from_utf8_lossy(&output.stdout).into_owned();
        if text.lines().count() > 1 {
            break text;
        }
        assert!(Instant::now() < deadline, "ss never showed {client_addr}");
        std::thread::sleep(Duration::from_millis(20));
    };
    client.close_stdin();
    drop(server_side);
    client.wait_exit();
    shown
}

/// Accepts one connection within [`TIMEOUT`], or fails the test.
pub(crate) fn accept_by_deadline(listener: &TcpListener) -> (std::net::TcpStream, SocketAddr) {
    listener
        .set_nonblocking(true)
        .unwrap_or_else(|e| panic!("{e}"));
    let deadline = Instant::now() + TIMEOUT;
    loop {
        match listener.accept() {
            Ok((conn, peer)) => {
                conn.set_nonblocking(false)
                    .unwrap_or_else(|e| panic!("{e}"));
                conn.set_read_timeout(Some(TIMEOUT))
                    .unwrap_or_else(|e| panic!("{e}"));
                return (conn, peer);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => panic!("accept: {e}"),
        }
        assert!(Instant::now() < deadline, "no connection came");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Accepts one connection, failing the test if `client` exits first or [`TIMEOUT`]
/// passes.
fn accept_within(listener: &TcpListener, client: &mut Proc) -> (std::net::TcpStream, SocketAddr) {
    listener
        .set_nonblocking(true)
        .unwrap_or_else(|e| panic!("{e}"));
    let deadline = Instant::now() + TIMEOUT;
    loop {
        match listener.accept() {
            Ok((conn, peer)) => {
                conn.set_nonblocking(false)
                    .unwrap_or_else(|e| panic!("{e}"));
                return (conn, peer);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => panic!("accept: {e}"),
        }
        assert!(
            client.is_running(),
            "the client exited\n{}",
            client.report()
        );
        assert!(
            Instant::now() < deadline,
            "no connection\n{}",
            client.report()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn tos_and_source_port_match_nc_t_and_nc_p() {
    let nc_port = free_port();
    let nc = ss_of_client(|target| {
        let mut cmd = Command::new("nc");
        cmd.args(["-N", "-T", "16", "-p", &nc_port.to_string()])
            .arg(target.ip().to_string())
            .arg(target.port().to_string());
        cmd
    });
    let our_port = free_port();
    let ours = ss_of_client(|target| {
        sockit_command(&[
            "connect",
            &target.to_string(),
            "--tos",
            "16",
            "--source",
            &format!(":{our_port}"),
        ])
    });
    for (who, shown, port) in [("nc", &nc, nc_port), ("sockit", &ours, our_port)] {
        assert!(shown.contains("tos:0x10"), "{who}: {shown}");
        assert!(shown.contains(&format!(":{port} ")), "{who}: {shown}");
    }
}

/// socat 1.7 has no mark option: SO_MARK goes through its generic
/// `setsockopt-int=SOL_SOCKET:SO_MARK:7` (1:36:7 on Linux).
#[test]
fn keepalive_mark_and_device_match_socat() {
    let socat = ss_of_client(|target| {
        let mut cmd = Command::new("socat");
        cmd.arg("-").arg(format!(
            "TCP:{target},keepalive,keepidle=30,keepintvl=5,keepcnt=3,setsockopt-int=1:36:7,ip-tos=16,so-bindtodevice=lo"
        ));
        cmd
    });
    let ours = ss_of_client(|target| {
        sockit_command(&[
            "connect",
            &target.to_string(),
            "--keepalive",
            "30s,5s,3",
            "--mark",
            "7",
            "--tos",
            "16",
            "--bind-device",
            "lo",
        ])
    });
    for (who, shown) in [("socat", &socat), ("sockit", &ours)] {
        assert!(shown.contains("127.0.0.1%lo:"), "{who}: {shown}");
        assert!(shown.contains("timer:(keepalive,"), "{who}: {shown}");
        assert!(shown.contains("fwmark:0x7"), "{who}: {shown}");
        assert!(shown.contains("tos:0x10"), "{who}: {shown}");
    }
}

#[test]
fn a_udp_listener_takes_the_options_too() {
    let listen = Proc::spawn(
        sockit_command(&[
            "listen",
            "udp://127.0.0.1:0",
            "--tos",
            "32",
            "--recv-buffer",
            "100000",
        ]),
        true,
    );
    let deadline = Instant::now() + TIMEOUT;
    let port: u16 = loop {
        let stderr = listen.stderr();
        if let Some(port) = stderr
            .lines()
            .find_map(|l| l.strip_prefix("listening on udp://127.0.0.1:"))
            .and_then(|p| p.trim().parse().ok())
        {
            break port;
        }
        assert!(Instant::now() < deadline, "no listening line: {stderr}");
        std::thread::sleep(Duration::from_millis(10));
    };
    let output = Command::new("ss")
        .args(["-uaeimn", "--tos"])
        .arg(format!("sport = :{port}"))
        .output()
        .unwrap_or_else(|e| panic!("cannot run ss: {e}"));
    let shown = String::from_utf8_lossy(&output.stdout);
    assert!(shown.contains("tos:0x20"), "{shown}");
    assert!(shown.contains("rb200000"), "{shown}");
    // Dropping the process stops it: a UDP listener with no peer waits for one.
    drop(listen);
}

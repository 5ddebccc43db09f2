//! Issue 19, item 3: `relay --send-proxy v1|v2` starts each target connection with a PROXY
//! protocol header naming the real client, and HAProxy (`bind … accept-proxy`) and nginx
//! (`listen … proxy_protocol`) log that client; the address an incoming header named (`--proxy-protocol`) is the one passed
//! on. The splice copy still carries the bytes after the header.
//!
//! Issue 20's small items beside it: `SOCKIT_VIA` names the balancer for `--exec`
//! programs, and `relay --max-conns-mode` applies to the relay's default limit.

use std::io::{Read, Write};
use std::net::{Shutdown as NetShutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::thread;

use sockit::obs::EventLog;
use sockit::relay::{CopyMode, Relay, RelayOptions};
use sockit::transport::proxy::SendProxy;
use sockit::{Endpoint, Shutdown};

use crate::peers::{poll_until, spawn_peer};
use crate::util::{Proc, TIMEOUT, code, describe, run_sockit, within};

/// HAProxy in the foreground, accepting PROXY headers on a Unix socket in `dir` and
/// logging each connection's client (`%ci:%cp`) on stdout, in front of `backend`.
/// Returns it (ready: its socket exists) and the socket's path.
fn haproxy(dir: &Path, backend: &str) -> (Proc, PathBuf) {
    let socket = dir.join("haproxy.sock");
    let config = dir.join("haproxy.cfg");
    let text = format!(
        "global\n  log stdout format raw local0\n\
         defaults\n  mode tcp\n  log global\n  option logasap\n\
         \x20 timeout connect 5s\n  timeout client 30s\n  timeout server 30s\n\
         frontend fe\n  bind unix@{socket} accept-proxy\n\
         \x20 log-format \"client=%ci:%cp\"\n  default_backend be\n\
         backend be\n  server s1 {backend}\n",
        socket = socket.display()
    );
    std::fs::write(&config, text).unwrap_or_else(|e| panic!("{e}"));
    let config_arg = config
        .to_str()
        .unwrap_or_else(|| panic!("non-UTF-8 temp path"));
    let proxy = spawn_peer("haproxy", &["-db", "-f", config_arg], false);
    // HAProxy binds under a temporary name and renames it into place: once the path
    // exists, it listens.
    poll_until(
        "HAProxy's socket",
        || proxy.report(),
        || socket.exists().then_some(()),
    );
    (proxy, socket)
}

/// The client address in HAProxy's next log line.
fn logged_client(proxy: &mut Proc) -> String {
    let line = proxy.wait_for_line("HAProxy's log line", |l| l.starts_with("client="));
    line.trim_start_matches("client=").to_string()
}

#[test]
fn haproxy_logs_the_client_the_relay_names_in_v1_and_v2() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let mut backend = Proc::sockit(&["serve", "tcp://127.0.0.1:0", "--reply", "behind haproxy"]);
    let backend_addr = backend.listening();
    let (mut proxy, socket) = haproxy(dir.path(), &backend_addr);
    let target = format!("unix:{}", socket.display());
    for (version, source) in [("v1", "127.0.0.3"), ("v2", "127.0.0.4")] {
        let mut relay = Proc::sockit(&[
            "relay",
            "tcp://127.0.0.1:0",
            &target,
            "--send-proxy",
            version,
        ]);
        let relay_addr = relay.listening();
        let sent = run_sockit(
            &[
                "send",
                &format!("tcp://{relay_addr}"),
                "hi",
                "--source",
                source,
            ],
            None,
        );
        assert_eq!(code(&sent), 0, "{}\n{}", describe(&sent), proxy.report());
        assert!(
            String::from_utf8_lossy(&sent.stdout).contains("behind haproxy"),
            "{}",
            describe(&sent)
        );
        let client = logged_client(&mut proxy);
        assert!(
            client.starts_with(&format!("{source}:")),
            "{version}: HAProxy logged {client}, not the client at {source}"
        );
    }
}

/// nginx's stream module as the target (`listen … proxy_protocol`): its
/// `$proxy_protocol_addr` is the client the v2 header named.
#[test]
fn nginx_logs_the_client_the_relay_names() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let mut backend = Proc::sockit(&["serve", "tcp://127.0.0.1:0", "--reply", "behind nginx"]);
    let backend_addr = backend.listening();
    let d = dir.path().display();
    let config = dir.path().join("nginx.conf");
    let text = format!(
        "load_module /usr/lib/nginx/modules/ngx_stream_module.so;\n\
         daemon off;\nmaster_process off;\nworker_processes 1;\n\
         pid {d}/nginx.pid;\nerror_log stderr;\n\
         events {{ worker_connections 64; }}\n\
         stream {{\n\
         \x20 log_format pp \"client=$proxy_protocol_addr:$proxy_protocol_port\";\n\
         \x20 server {{\n\
         \x20   listen unix:{d}/nginx.sock proxy_protocol;\n\
         \x20   access_log {d}/access.log pp;\n\
         \x20   proxy_pass {backend_addr};\n\
         \x20 }}\n}}\n"
    );
    std::fs::write(&config, text).unwrap_or_else(|e| panic!("{e}"));
    let config_arg = config
        .to_str()
        .unwrap_or_else(|| panic!("non-UTF-8 temp path"));
    let dir_arg = dir
        .path()
        .to_str()
        .unwrap_or_else(|| panic!("non-UTF-8 temp path"));
    let nginx = spawn_peer("nginx", &["-c", config_arg, "-p", dir_arg], false);
    // nginx writes its pid file once its sockets listen.
    let pid_file = dir.path().join("nginx.pid");
    poll_until(
        "nginx to listen",
        || nginx.report(),
        || pid_file.exists().then_some(()),
    );
    let target = format!("unix:{d}/nginx.sock");
    let mut relay = Proc::sockit(&["relay", "tcp://127.0.0.1:0", &target, "--send-proxy", "v2"]);
    let relay_addr = relay.listening();
    let sent = run_sockit(
        &[
            "send",
            &format!("tcp://{relay_addr}"),
            "hi",
            "--source",
            "127.0.0.5",
        ],
        None,
    );
    assert!(
        String::from_utf8_lossy(&sent.stdout).contains("behind nginx"),
        "{}\n{}",
        describe(&sent),
        nginx.report()
    );
    let log = dir.path().join("access.log");
    let logged = poll_until(
        "nginx's access log line",
        || nginx.report(),
        || {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            text.lines()
                .find(|l| l.starts_with("client="))
                .map(str::to_string)
        },
    );
    assert!(logged.starts_with("client=127.0.0.5:"), "{logged}");
}

/// A client known to the relay only through a load balancer's header is the one named
/// to the target.
#[test]
fn the_client_an_incoming_header_named_is_passed_on() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let mut backend = Proc::sockit(&["serve", "tcp://127.0.0.1:0", "--reply", "ok"]);
    let backend_addr = backend.listening();
    let (mut proxy, socket) = haproxy(dir.path(), &backend_addr);
    let target = format!("unix:{}", socket.display());
    let mut relay = Proc::sockit(&[
        "relay",
        "tcp://127.0.0.1:0",
        &target,
        "--proxy-protocol",
        "--proxy-from",
        "127.0.0.0/8",
        "--send-proxy",
        "v2",
    ]);
    let relay_addr = relay.listening();
    let mut balancer = TcpStream::connect(&relay_addr).unwrap_or_else(|e| panic!("{e}"));
    balancer.set_read_timeout(Some(TIMEOUT)).ok();
    balancer
        .write_all(b"PROXY TCP4 198.51.100.7 192.0.2.1 4000 80\r\nhi\n")
        .unwrap_or_else(|e| panic!("{e}"));
    // `--reply` answers each message with exactly its text.
    let mut reply = [0u8; 2];
    balancer
        .read_exact(&mut reply)
        .unwrap_or_else(|e| panic!("{e}\n{}\n{}", relay.report(), proxy.report()));
    assert_eq!(&reply, b"ok");
    assert_eq!(logged_client(&mut proxy), "198.51.100.7:4000");
}

/// The header goes out byte-exact, first, and the splice copy still carries what follows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_header_comes_first_and_splice_still_copies_the_rest() {
    let target_listener = TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
    let target_addr = target_listener
        .local_addr()
        .unwrap_or_else(|e| panic!("{e}"));
    // Reads everything until the client's end, then answers and closes.
    let target_side = thread::spawn(move || {
        let (mut stream, _) = target_listener.accept().unwrap_or_else(|e| panic!("{e}"));
        stream.set_read_timeout(Some(TIMEOUT)).ok();
        let mut received = Vec::new();
        stream
            .read_to_end(&mut received)
            .unwrap_or_else(|e| panic!("{e}"));
        stream.write_all(b"done").unwrap_or_else(|e| panic!("{e}"));
        received
    });
    let options = RelayOptions {
        copy: CopyMode::Splice,
        send_proxy: Some(SendProxy::V1),
        ..RelayOptions::new(
            format!("tcp://{target_addr}")
                .parse()
                .unwrap_or_else(|e| panic!("{e}")),
        )
    };
    let listen: Endpoint = "tcp://127.0.0.1:0"
        .parse()
        .unwrap_or_else(|e| panic!("{e}"));
    let relay = Relay::bind(&listen, options)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let relay_addr = relay
        .local_endpoint()
        .host_port()
        .map(|hp| hp.to_string())
        .unwrap_or_else(|| panic!("no address"));
    let stats = relay.stats();
    let shutdown = Shutdown::new();
    let done = tokio::spawn(relay.run(EventLog::disabled(), shutdown.clone()));
    let client = tokio::task::spawn_blocking(move || {
        let mut stream = TcpStream::connect(&relay_addr).unwrap_or_else(|e| panic!("{e}"));
        stream.set_read_timeout(Some(TIMEOUT)).ok();
        let local = stream.local_addr().unwrap_or_else(|e| panic!("{e}"));
        stream
            .write_all(b"payload after the header")
            .unwrap_or_else(|e| panic!("{e}"));
        stream
            .shutdown(NetShutdown::Write)
            .unwrap_or_else(|e| panic!("{e}"));
        let mut back = Vec::new();
        stream
            .read_to_end(&mut back)
            .unwrap_or_else(|e| panic!("{e}"));
        (local, relay_addr, back)
    });
    let (local, relay_addr, back) = within("the exchange", client)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(back, b"done");
    let received = target_side
        .join()
        .unwrap_or_else(|_| panic!("the target panicked"));
    let relay_port = relay_addr.rsplit(':').next().unwrap_or_default();
    let expected = format!(
        "PROXY TCP4 127.0.0.1 127.0.0.1 {} {relay_port}\r\npayload after the header",
        local.port()
    );
    assert_eq!(String::from_utf8_lossy(&received), expected);
    assert_eq!(stats.spliced.load(Ordering::Relaxed), 1, "not spliced");
    shutdown.trigger();
    within("relay drain", done)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn send_proxy_refuses_a_datagram_target() {
    let out = run_sockit(
        &[
            "relay",
            "tcp://127.0.0.1:0",
            "udp://127.0.0.1:1",
            "--send-proxy",
            "v1",
        ],
        None,
    );
    assert_eq!(code(&out), 2, "{}", describe(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--send-proxy"), "{stderr}");
    assert_eq!(
        stderr.lines().filter(|l| l.starts_with("error:")).count(),
        1,
        "{stderr}"
    );
}

/// To a tls:// target the header goes before the TLS handshake (as HAProxy sends it to
/// an `ssl` server), so a sockit TLS server with --proxy-protocol reads it and names the
/// real client to its program.
#[test]
fn the_header_precedes_tls_to_a_tls_target() {
    let mut server = Proc::sockit(&[
        "serve",
        "tls://127.0.0.1:0",
        "--proxy-protocol",
        "--proxy-from",
        "127.0.0.0/8",
        "--sh-exec",
        "echo \"client $SOCKIT_PEER_ADDR\"",
    ]);
    let server_addr = server.listening();
    let mut relay = Proc::sockit(&[
        "relay",
        "tcp://127.0.0.1:0",
        &format!("tls://{server_addr}"),
        "--insecure",
        "--send-proxy",
        "v2",
    ]);
    let relay_addr = relay.listening();
    let sent = run_sockit(
        &[
            "send",
            &format!("tcp://{relay_addr}"),
            "hi",
            "--source",
            "127.0.0.6",
        ],
        None,
    );
    assert!(
        String::from_utf8_lossy(&sent.stdout).contains("client 127.0.0.6"),
        "{}\n{}\n{}",
        describe(&sent),
        relay.report(),
        server.report()
    );
}

// Issue 20, item 2: a program behind --proxy-protocol learns both the client the header
// claims and the balancer that sent it.
#[test]
fn exec_programs_learn_the_balancer_as_sockit_via() {
    let mut server = Proc::sockit(&[
        "serve",
        "tcp://127.0.0.1:0",
        "--proxy-protocol",
        "--proxy-from",
        "127.0.0.0/8",
        "--sh-exec",
        "echo \"$SOCKIT_PEER via $SOCKIT_VIA\"",
    ]);
    let addr = server.listening();
    let mut balancer = TcpStream::connect(&addr).unwrap_or_else(|e| panic!("{e}"));
    balancer.set_read_timeout(Some(TIMEOUT)).ok();
    let balancer_addr = balancer.local_addr().unwrap_or_else(|e| panic!("{e}"));
    balancer
        .write_all(b"PROXY TCP4 198.51.100.7 192.0.2.1 4000 80\r\n")
        .unwrap_or_else(|e| panic!("{e}"));
    balancer
        .shutdown(NetShutdown::Write)
        .unwrap_or_else(|e| panic!("{e}"));
    let mut back = String::new();
    balancer
        .read_to_string(&mut back)
        .unwrap_or_else(|e| panic!("{e}\n{}", server.report()));
    assert_eq!(back, format!("198.51.100.7:4000 via {balancer_addr}\n"));
}

// Issue 20, item 3: a stream relay has a default --max-conns, so --max-conns-mode alone
// is accepted and applies to it; serve without any limit still refuses the mode.
#[test]
fn relay_takes_max_conns_mode_without_max_conns() {
    let mut relay = Proc::sockit(&[
        "relay",
        "tcp://127.0.0.1:0",
        "tcp://127.0.0.1:1",
        "--max-conns-mode",
        "refuse",
    ]);
    relay.listening();
    let out = run_sockit(
        &["serve", "tcp://127.0.0.1:0", "--max-conns-mode", "refuse"],
        None,
    );
    assert_eq!(code(&out), 2, "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("give --max-conns N"),
        "{}",
        describe(&out)
    );
}

/// Relays `incoming` (a PROXY header and a payload) through `relay --proxy-protocol
/// --send-proxy VERSION` to a plain listener; returns every byte the target received.
fn relayed_to_target(version: &str, incoming: &[u8]) -> Vec<u8> {
    let target = TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
    let target_addr = target.local_addr().unwrap_or_else(|e| panic!("{e}"));
    let target_side = thread::spawn(move || {
        let (mut stream, _) = target.accept().unwrap_or_else(|e| panic!("{e}"));
        stream.set_read_timeout(Some(TIMEOUT)).ok();
        let mut received = Vec::new();
        stream
            .read_to_end(&mut received)
            .unwrap_or_else(|e| panic!("{e}"));
        stream.write_all(b"done").unwrap_or_else(|e| panic!("{e}"));
        received
    });
    let target_arg = format!("tcp://{target_addr}");
    let mut relay = Proc::sockit(&[
        "relay",
        "tcp://127.0.0.1:0",
        &target_arg,
        "--proxy-protocol",
        "--proxy-from",
        "127.0.0.0/8",
        "--send-proxy",
        version,
    ]);
    let relay_addr = relay.listening();
    let mut balancer = TcpStream::connect(&relay_addr).unwrap_or_else(|e| panic!("{e}"));
    balancer.set_read_timeout(Some(TIMEOUT)).ok();
    balancer
        .write_all(incoming)
        .unwrap_or_else(|e| panic!("{e}"));
    balancer
        .shutdown(NetShutdown::Write)
        .unwrap_or_else(|e| panic!("{e}"));
    let mut back = Vec::new();
    balancer
        .read_to_end(&mut back)
        .unwrap_or_else(|e| panic!("{e}\n{}", relay.report()));
    assert_eq!(back, b"done", "{}", relay.report());
    target_side
        .join()
        .unwrap_or_else(|_| panic!("the target panicked"))
}

/// The destination an incoming PROXY header named (where the client connected to at the
/// balancer) is the destination passed on, not the relay's own address: v1 in, v2 out,
/// and v2 (IPv6) in, v1 out.
#[test]
fn the_destination_an_incoming_header_named_is_passed_on() {
    let received = relayed_to_target(
        "v2",
        b"PROXY TCP4 198.51.100.7 192.0.2.1 4000 80\r\npayload",
    );
    let mut expected = b"\r\n\r\n\0\r\nQUIT\n\x21\x11\x00\x0c".to_vec();
    expected.extend_from_slice(&[198, 51, 100, 7, 192, 0, 2, 1]);
    expected.extend_from_slice(&4000u16.to_be_bytes());
    expected.extend_from_slice(&80u16.to_be_bytes());
    expected.extend_from_slice(b"payload");
    assert_eq!(received, expected);

    let mut v2_in = b"\r\n\r\n\0\r\nQUIT\n\x21\x21\x00\x24".to_vec();
    let source: std::net::Ipv6Addr = "2001:db8::7".parse().unwrap_or_else(|e| panic!("{e}"));
    let destination: std::net::Ipv6Addr = "2001:db8::1".parse().unwrap_or_else(|e| panic!("{e}"));
    v2_in.extend_from_slice(&source.octets());
    v2_in.extend_from_slice(&destination.octets());
    v2_in.extend_from_slice(&4000u16.to_be_bytes());
    v2_in.extend_from_slice(&443u16.to_be_bytes());
    v2_in.extend_from_slice(b"payload");
    let received = relayed_to_target("v1", &v2_in);
    assert_eq!(
        String::from_utf8_lossy(&received),
        "PROXY TCP6 2001:db8::7 2001:db8::1 4000 443\r\npayload"
    );
}

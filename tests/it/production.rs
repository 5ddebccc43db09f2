//! Issue 5, "Operate": `--metrics` (checked with Prometheus' own parser), per-connection
//! log context, `--proxy-protocol` (v1, v2, malformed, access rules on the real address,
//! TLS after the header, the relay), socket activation (`--systemd`, with a real
//! inherited descriptor and with systemd's own `systemd-socket-activate`), and signals.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use crate::ops::{metrics_addr, poll, scrape, scrape_until, stderr_line};
use crate::util::{Proc, TIMEOUT, code, connect_tcp as connect, run_sockit, sockit_bin};

/// The `HOST:PORT` of the `tcp://` endpoint in a listening event (text or JSON).
fn endpoint_addr(line: &str) -> String {
    let start = line
        .find("tcp://")
        .map(|i| i + "tcp://".len())
        .unwrap_or_else(|| panic!("no tcp:// endpoint in {line}"));
    line[start..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | ':' | '[' | ']'))
        .collect()
}

/// Sends each line and reads its echo; returns the replies.
fn echo_lines(stream: &mut TcpStream, lines: &[&str]) -> Vec<String> {
    let mut reader = BufReader::new(stream.try_clone().unwrap_or_else(|e| panic!("{e}")));
    lines
        .iter()
        .map(|line| {
            writeln!(stream, "{line}").unwrap_or_else(|e| panic!("send: {e}"));
            let mut reply = String::new();
            reader
                .read_line(&mut reply)
                .unwrap_or_else(|e| panic!("reply to {line}: {e}"));
            reply.trim_end().to_string()
        })
        .collect()
}

/// Closes with a reset (SO_LINGER 0) instead of a FIN.
fn reset(stream: TcpStream) {
    socket2::SockRef::from(&stream)
        .set_linger(Some(Duration::ZERO))
        .unwrap_or_else(|e| panic!("SO_LINGER: {e}"));
    drop(stream);
}

/// Reads until the server closes; returns what it sent.
fn read_to_close(stream: &mut TcpStream) -> Vec<u8> {
    let mut rest = Vec::new();
    // A reset instead of a FIN also means "closed" here.
    let _ = stream.read_to_end(&mut rest);
    rest
}

#[test]
fn metrics_count_connections_messages_bytes_timeouts_and_errors_by_kind() {
    let mut server = Proc::sockit(&[
        "serve",
        "tcp://127.0.0.1:0",
        "--echo",
        "--framing",
        "line",
        "--metrics",
        "127.0.0.1:0",
        "-q",
    ]);
    let addr = server.listening();
    let metrics = metrics_addr(&server);

    let before = scrape(&metrics);
    assert_eq!(before.count("sockit_connections_accepted_total", "tcp"), 0);
    assert_eq!(
        before.get(
            "sockit_info",
            &[("version", env!("CARGO_PKG_VERSION")), ("role", "serve")]
        ),
        1.0
    );

    // Three good clients: two lines each, answered, closed cleanly.
    for _ in 0..3 {
        let mut client = connect(&addr);
        assert_eq!(
            echo_lines(&mut client, &["ping", "pong!"]),
            ["ping", "pong!"]
        );
    }
    // One client resets in the middle of a line. This server has no idle timeout, so
    // nothing but the reset can end that connection, however slow the machine.
    let mut resetter = connect(&addr);
    resetter
        .write_all(b"half a li")
        .unwrap_or_else(|e| panic!("{e}"));
    let open = scrape_until(&server, &metrics, "the resetting client to be open", |m| {
        m.count("sockit_connections_active", "tcp") == 1
    });
    assert_eq!(open.count("sockit_connections_accepted_total", "tcp"), 4);
    reset(resetter);

    let m = scrape_until(&server, &metrics, "the reset to be counted", |m| {
        m.count("sockit_connection_errors_total", "tcp") == 1
            && m.count("sockit_connections_active", "tcp") == 0
    });
    let kind = |k: &str| m.get("sockit_errors_total", &[("transport", "tcp"), ("kind", k)]) as u64;
    assert_eq!(kind("reset"), 1, "{}", m.text);
    assert_eq!(
        kind("timeout") + kind("tls") + kind("proxy_header") + kind("io"),
        0,
        "{}",
        m.text
    );
    assert_eq!(m.count("sockit_connections_timed_out_total", "tcp"), 0);
    assert_eq!(m.count("sockit_connections_accepted_total", "tcp"), 4);
    assert_eq!(m.count("sockit_messages_received_total", "tcp"), 6);
    assert_eq!(m.count("sockit_messages_sent_total", "tcp"), 6);
    // "ping\n" and "pong!\n", three times; the reset client's half line counts as read.
    assert_eq!(m.count("sockit_sent_bytes_total", "tcp"), 3 * 11);
    assert_eq!(m.count("sockit_received_bytes_total", "tcp"), 3 * 11 + 9);
    assert_eq!(m.count("sockit_connections_refused_total", "tcp"), 0);
    assert_eq!(m.count("sockit_connections_denied_total", "tcp"), 0);

    // A silent client on a server with an idle timeout: the idle close is the server doing
    // its job, counted as timed out, not as an error.
    let mut idle_server = Proc::sockit(&[
        "serve",
        "tcp://127.0.0.1:0",
        "--echo",
        "--idle-timeout",
        "1s",
        "--metrics",
        "127.0.0.1:0",
        "-q",
    ]);
    let idle_addr = idle_server.listening();
    let idle_metrics = metrics_addr(&idle_server);
    let mut silent = connect(&idle_addr);
    assert!(
        read_to_close(&mut silent).is_empty(),
        "the silent client got data"
    );
    let idle = scrape_until(&idle_server, &idle_metrics, "the idle close", |m| {
        m.count("sockit_connections_timed_out_total", "tcp") == 1
            && m.count("sockit_connections_active", "tcp") == 0
    });
    assert_eq!(
        idle.count("sockit_connection_errors_total", "tcp"),
        0,
        "{}",
        idle.text
    );
    assert_eq!(
        idle.get(
            "sockit_errors_total",
            &[("transport", "tcp"), ("kind", "timeout")]
        ) as u64,
        0,
        "{}",
        idle.text
    );

    // Anything but GET /metrics is refused politely.
    let (status, _) = crate::ops::http_get(&metrics, "/");
    assert!(status.starts_with("HTTP/1.1 404"), "{status}");
}

#[test]
fn udp_and_relay_metrics_parse_and_carry_their_transport() {
    let mut udp = Proc::sockit(&[
        "serve",
        "udp://127.0.0.1:0",
        "--echo",
        "--metrics",
        "127.0.0.1:0",
        "-q",
    ]);
    let udp_addr = udp.listening();
    let udp_metrics = metrics_addr(&udp);
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
    socket.set_read_timeout(Some(TIMEOUT)).ok();
    for word in ["a", "bb", "ccc"] {
        socket
            .send_to(word.as_bytes(), &udp_addr)
            .unwrap_or_else(|e| panic!("{e}"));
        let mut buf = [0u8; 16];
        let n = socket
            .recv(&mut buf)
            .unwrap_or_else(|e| panic!("reply: {e}"));
        assert_eq!(&buf[..n], word.as_bytes());
    }
    let m = scrape_until(&udp, &udp_metrics, "three datagrams", |m| {
        m.count("sockit_messages_sent_total", "udp") == 3
    });
    assert_eq!(m.count("sockit_received_bytes_total", "udp"), 6);

    // A relay in front of a TCP echo server.
    let mut target = Proc::sockit(&["serve", "tcp://127.0.0.1:0", "--echo", "-q"]);
    let target_addr = target.listening();
    let mut relay = Proc::sockit(&[
        "relay",
        "tcp://127.0.0.1:0",
        &format!("tcp://{target_addr}"),
        "--metrics",
        "127.0.0.1:0",
        "-q",
    ]);
    let relay_addr = relay.listening();
    let relay_metrics = metrics_addr(&relay);
    let mut client = connect(&relay_addr);
    client
        .write_all(b"through the relay")
        .unwrap_or_else(|e| panic!("{e}"));
    let mut reply = [0u8; 17];
    client
        .read_exact(&mut reply)
        .unwrap_or_else(|e| panic!("{e}"));
    drop(client);
    let m = scrape_until(&relay, &relay_metrics, "the relayed bytes", |m| {
        m.get(
            "sockit_relay_bytes_total",
            &[("transport", "tcp"), ("direction", "to_client")],
        ) == 17.0
            && m.count("sockit_relay_connections_active", "tcp") == 0
    });
    assert_eq!(
        m.get(
            "sockit_relay_bytes_total",
            &[("transport", "tcp"), ("direction", "to_target")]
        ),
        17.0
    );
    assert_eq!(m.count("sockit_relay_connections_accepted_total", "tcp"), 1);
    assert_eq!(
        m.get(
            "sockit_info",
            &[("version", env!("CARGO_PKG_VERSION")), ("role", "relay")]
        ),
        1.0
    );
}

#[test]
fn proxy_protocol_on_a_datagram_endpoint_is_a_usage_error() {
    for args in [
        &["serve", "udp://127.0.0.1:0", "--proxy-protocol"][..],
        &[
            "relay",
            "udp://127.0.0.1:0",
            "udp://127.0.0.1:9",
            "--proxy-protocol",
        ][..],
    ] {
        let output = run_sockit(args, None);
        assert_eq!(code(&output), 2, "{}", crate::util::describe(&output));
        assert!(String::from_utf8_lossy(&output.stderr).contains("is a datagram endpoint"));
    }
}

#[test]
fn a_metrics_address_that_is_not_a_stream_is_a_usage_error() {
    let output = run_sockit(
        &[
            "serve",
            "tcp://127.0.0.1:0",
            "--metrics",
            "udp://127.0.0.1:0",
        ],
        None,
    );
    assert_eq!(code(&output), 2, "{}", crate::util::describe(&output));
    assert!(String::from_utf8_lossy(&output.stderr).contains("--metrics serves plain HTTP"));
}

/// The local address of a client socket, as the server logs it.
fn local(stream: &TcpStream) -> SocketAddr {
    stream.local_addr().unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn each_connection_line_carries_its_id_and_peer_in_text_and_json() {
    for format in ["text", "json"] {
        let mut server = Proc::sockit(&[
            "serve",
            "tcp://127.0.0.1:0",
            "--echo",
            "--idle-timeout",
            "1s",
            "--log",
            format,
            "-q",
        ]);
        let line = server.wait_for_line("listening", |l| l.contains("listening"));
        let addr = endpoint_addr(&line);
        let first = connect(&addr);
        let second = connect(&addr);
        let ports = [local(&first).port(), local(&second).port()];
        // Both go idle: each gets one line, naming itself.
        let warnings = poll(
            "two idle lines",
            || server.report(),
            || {
                let stderr = server.stderr();
                let lines: Vec<String> = stderr
                    .lines()
                    .filter(|l| l.contains("idle for 1s"))
                    .map(str::to_string)
                    .collect();
                (lines.len() == 2).then_some(lines)
            },
        );
        let mut seen = Vec::new();
        for warning in &warnings {
            let (id, peer) = connection_fields(warning, format == "json");
            let port: u16 = peer
                .rsplit(':')
                .next()
                .and_then(|p| p.parse().ok())
                .unwrap_or_else(|| panic!("peer {peer:?} in {warning}"));
            assert!(peer.starts_with("127.0.0.1:"), "{warning}");
            assert!(
                ports.contains(&port),
                "{warning} names neither client {ports:?}"
            );
            seen.push((id, port));
        }
        seen.sort();
        // Ids are unique per server, not consecutive: each server thread hands out its
        // own share of them.
        assert!(seen.iter().all(|s| s.0 >= 1), "ids: {seen:?}");
        assert_ne!(
            seen[0].0, seen[1].0,
            "both lines name the same connection id: {seen:?}"
        );
        assert_ne!(seen[0].1, seen[1].1, "both lines name the same client");
        drop((first, second));
    }
}

/// The connection id and peer a diagnostic line names: every line about a connection
/// has one shape, its `conn{id=7 peer=…}` span (a `span` object in JSON), whichever path
/// served the connection, and never repeats them as fields of its own.
fn connection_fields(line: &str, json: bool) -> (u64, String) {
    if json {
        let value: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(value["fields"].get("conn").is_none(), "{line}");
        assert_eq!(value["span"]["name"], "conn", "{line}");
        let id = value["span"]["id"]
            .as_u64()
            .unwrap_or_else(|| panic!("no id: {line}"));
        let peer = value["span"]["peer"].as_str().unwrap_or_default();
        return (id, peer.to_string());
    }
    assert_eq!(line.matches("conn{").count(), 1, "{line}");
    assert!(!line.contains(" conn="), "{line}");
    let fields = line
        .split("conn{")
        .nth(1)
        .and_then(|rest| rest.split('}').next())
        .unwrap_or_default();
    let field = |name: &str| {
        fields
            .split(' ')
            .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
            .unwrap_or_else(|| panic!("no {name} in {line}"))
            .to_string()
    };
    (field("id").parse().unwrap_or(0), field("peer"))
}

/// Issue 15, item 12: behind a PROXY header (a connection served under its span from
/// the start) the idle line names the connection once, like on the lean path.
#[test]
fn a_proxied_connection_line_names_the_connection_once() {
    for format in ["text", "json"] {
        let mut server = Proc::sockit(&[
            "serve",
            "tcp://127.0.0.1:0",
            "--echo",
            "--proxy-protocol",
            "--idle-timeout",
            "1s",
            "--log",
            format,
            "-q",
        ]);
        let line = server.wait_for_line("listening", |l| l.contains("listening"));
        let addr = endpoint_addr(&line);
        let mut client = connect(&addr);
        client
            .write_all(&v1("198.51.100.7", 40000))
            .unwrap_or_else(|e| panic!("{e}"));
        let idle = poll(
            "the idle line",
            || server.report(),
            || {
                let stderr = server.stderr();
                let line = stderr.lines().find(|l| l.contains("idle for 1s"))?;
                Some(line.to_string())
            },
        );
        let (_, peer) = connection_fields(&idle, format == "json");
        assert_eq!(peer, "198.51.100.7:40000", "{idle}");
        drop(client);
    }
}

/// A v1 header line.
fn v1(source: &str, port: u16) -> Vec<u8> {
    let family = if source.contains(':') { "TCP6" } else { "TCP4" };
    let destination = if source.contains(':') {
        "::1"
    } else {
        "127.0.0.1"
    };
    format!("PROXY {family} {source} {destination} {port} 9000\r\n").into_bytes()
}

/// A v2 `PROXY` header for a TCP client at `source`, with one NOOP TLV.
fn v2(source: SocketAddr) -> Vec<u8> {
    let mut header = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    header.push(0x21); // version 2, PROXY
    let mut body = Vec::new();
    match source {
        SocketAddr::V4(a) => {
            header.push(0x11);
            body.extend_from_slice(&a.ip().octets());
            body.extend_from_slice(&[127, 0, 0, 1]);
            body.extend_from_slice(&a.port().to_be_bytes());
        }
        SocketAddr::V6(a) => {
            header.push(0x21);
            body.extend_from_slice(&a.ip().octets());
            body.extend_from_slice(&std::net::Ipv6Addr::LOCALHOST.octets());
            body.extend_from_slice(&a.port().to_be_bytes());
        }
    }
    body.extend_from_slice(&9000u16.to_be_bytes());
    body.extend_from_slice(&[0x04, 0, 2, 0, 0]); // PP2_TYPE_NOOP, 2 bytes
    header.extend_from_slice(&u16::try_from(body.len()).unwrap_or(0).to_be_bytes());
    header.extend_from_slice(&body);
    header
}

/// The peer the server's next `connected` event (text format) names. Connection ids are
/// unique but not consecutive (each server thread hands out its own share), so the tests
/// connect one client at a time and take the next event.
fn connected_peer(server: &mut Proc) -> String {
    let line = server.wait_for_line("the next connected event", |l| {
        l.contains(" connected conn=")
    });
    line.split("peer=")
        .nth(1)
        .unwrap_or_default()
        .trim()
        .to_string()
}

#[test]
fn proxy_protocol_v1_and_v2_name_the_real_client_and_keep_the_data_after_the_header() {
    let mut server = Proc::sockit(&[
        "serve",
        "tcp://127.0.0.1:0",
        "--echo",
        "--framing",
        "line",
        "--proxy-protocol",
        "--log",
        "text",
    ]);
    let line = server.wait_for_line("listening", |l| l.contains("listening"));
    let addr = endpoint_addr(&line);

    // v1, with the first request in the same write as the header.
    let mut client = connect(&addr);
    let mut first = v1("198.51.100.7", 40000);
    first.extend_from_slice(b"hello\n");
    client.write_all(&first).unwrap_or_else(|e| panic!("{e}"));
    let mut reader = BufReader::new(client.try_clone().unwrap_or_else(|e| panic!("{e}")));
    let mut reply = String::new();
    reader
        .read_line(&mut reply)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(reply, "hello\n");
    assert_eq!(connected_peer(&mut server), "198.51.100.7:40000");
    drop((client, reader));

    // v2 with an IPv6 client, sent one byte at a time: the header arrives in pieces.
    let mut client = connect(&addr);
    client.set_nodelay(true).ok();
    let source: SocketAddr = "[2001:db8::7]:5555"
        .parse()
        .unwrap_or_else(|e| panic!("{e}"));
    for byte in v2(source) {
        client.write_all(&[byte]).unwrap_or_else(|e| panic!("{e}"));
        std::thread::sleep(Duration::from_millis(2));
    }
    assert_eq!(echo_lines(&mut client, &["after v2"]), ["after v2"]);
    assert_eq!(connected_peer(&mut server), "[2001:db8::7]:5555");
    drop(client);

    // v1 UNKNOWN (the balancer does not know): the socket's peer stands in.
    let mut client = connect(&addr);
    let me = local(&client);
    client
        .write_all(b"PROXY UNKNOWN\r\nunknown\n")
        .unwrap_or_else(|e| panic!("{e}"));
    let mut reader = BufReader::new(client.try_clone().unwrap_or_else(|e| panic!("{e}")));
    let mut reply = String::new();
    reader
        .read_line(&mut reply)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(reply, "unknown\n");
    assert_eq!(connected_peer(&mut server), me.to_string());
}

#[test]
fn a_malformed_or_missing_proxy_header_closes_the_connection_with_one_clear_line() {
    let mut server = Proc::sockit(&[
        "serve",
        "tcp://127.0.0.1:0",
        "--echo",
        "--proxy-protocol",
        "--metrics",
        "127.0.0.1:0",
        "-q",
    ]);
    let addr = server.listening();
    let metrics = metrics_addr(&server);
    for (i, bad) in [
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        b"PROXY TCP4 300.1.1.1 127.0.0.1 1 2\r\nhello".to_vec(),
    ]
    .into_iter()
    .enumerate()
    {
        let mut client = connect(&addr);
        let me = local(&client);
        client.write_all(&bad).unwrap_or_else(|e| panic!("{e}"));
        assert!(
            read_to_close(&mut client).is_empty(),
            "data served after a bad header"
        );
        let line = stderr_line(&server, "the bad-header warning", |l| {
            l.contains("bad PROXY protocol header") && l.contains(&me.to_string())
        });
        let expected = ["does not start with a PROXY header", "malformed v1 header"][i];
        assert!(line.contains(expected), "{line}");
        assert!(
            line.contains(&format!("via={me}")),
            "the span names the socket peer: {line}"
        );
    }
    let m = scrape_until(&server, &metrics, "two proxy errors", |m| {
        m.get(
            "sockit_errors_total",
            &[("transport", "tcp"), ("kind", "proxy_header")],
        ) == 2.0
    });
    assert_eq!(m.count("sockit_messages_received_total", "tcp"), 0);
    let warnings = server
        .stderr()
        .lines()
        .filter(|l| l.contains("bad PROXY protocol header"))
        .count();
    assert_eq!(
        warnings,
        2,
        "one line per bad connection\n{}",
        server.report()
    );
}

#[test]
fn allow_and_deny_judge_the_address_in_the_proxy_header() {
    // The socket peer is 127.0.0.1 (the "balancer"), outside the --allow range: only the
    // address the header names decides.
    let mut server = Proc::sockit(&[
        "serve",
        "tcp://127.0.0.1:0",
        "--echo",
        "--framing",
        "line",
        "--proxy-protocol",
        "--allow",
        "198.51.100.0/24",
        "--deny",
        "198.51.100.66",
        "--metrics",
        "127.0.0.1:0",
        "-q",
    ]);
    let addr = server.listening();
    let metrics = metrics_addr(&server);

    let mut allowed = connect(&addr);
    allowed
        .write_all(&v1("198.51.100.7", 1000))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(echo_lines(&mut allowed, &["in"]), ["in"]);
    // A connection's message counts reach the metrics when it closes.
    drop(allowed);

    for (source, why) in [
        ("203.0.113.9", "not inside any --allow range"),
        ("198.51.100.66", "matches --deny"),
    ] {
        let mut denied = connect(&addr);
        denied
            .write_all(&v1(source, 2000))
            .unwrap_or_else(|e| panic!("{e}"));
        denied
            .write_all(b"let me in\n")
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(read_to_close(&mut denied).is_empty(), "{source} was served");
        let line = stderr_line(&server, "the denial", |l| {
            l.contains(&format!("denied connection from {source}:2000"))
        });
        assert!(line.contains(why), "{line}");
    }
    let m = scrape_until(
        &server,
        &metrics,
        "two denials and the served client",
        |m| {
            m.count("sockit_connections_denied_total", "tcp") == 2
                && m.count("sockit_messages_received_total", "tcp") == 1
        },
    );
    assert_eq!(m.count("sockit_messages_received_total", "tcp"), 1);
}

#[tokio::test]
async fn tls_follows_the_proxy_header_and_a_late_header_times_out() {
    use sockit::transport::tls::{ClientTls, Trust};
    use sockit::transport::{Layers, ProxyProtocol};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let endpoint: sockit::Endpoint = "tls://127.0.0.1:0"
        .parse()
        .unwrap_or_else(|e| panic!("{e}"));
    let sockit::Endpoint::Tls(hp) = &endpoint else {
        unreachable!()
    };
    let tls = sockit::transport::tls::ServerTls::load(None, hp).unwrap_or_else(|e| panic!("{e}"));
    let server = crate::util::start_server("tls://127.0.0.1:0", |e| {
        let mut options = sockit::ServeOptions::seed(e);
        options.responder = sockit::behaviour::Responder::Echo;
        options.layers = Layers {
            proxy: ProxyProtocol::Required {
                timeout: Duration::from_millis(300),
            },
            tls: Some(std::sync::Arc::new(tls)),
            ..Layers::default()
        };
        options
    })
    .await;
    let sockit::Endpoint::Tls(bound) = &server.endpoint else {
        unreachable!()
    };
    let addr = format!("127.0.0.1:{}", bound.port);

    let mut tcp = tokio::net::TcpStream::connect(&addr)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    tcp.write_all(&v1("192.0.2.44", 7))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let client = ClientTls::new(Trust::Insecure, None).unwrap_or_else(|e| panic!("{e}"));
    let mut tls_stream = crate::util::within(
        "TLS after the header",
        client.handshake(tcp, &server.endpoint, bound),
    )
    .await
    .unwrap_or_else(|e| panic!("handshake after the PROXY header: {e}"));
    tls_stream
        .write_all(b"secret")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let mut reply = [0u8; 6];
    crate::util::within("the echo", tls_stream.read_exact(&mut reply))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(&reply, b"secret");
    drop(tls_stream);

    // Half a header, then nothing: closed after the header timeout.
    let mut stalled = tokio::net::TcpStream::connect(&addr)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    stalled
        .write_all(b"PROXY TCP4 192.0.2.")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let mut rest = Vec::new();
    let _ = crate::util::within(
        "the stalled header to be cut",
        stalled.read_to_end(&mut rest),
    )
    .await;
    assert!(rest.is_empty());

    server.shutdown.trigger();
    let summary = crate::util::within("drain", server.done)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(summary.messages, 1, "{summary:?}");
    assert_eq!(summary.timed_out(), 1, "{summary:?}");
}

#[test]
fn the_relay_reads_the_proxy_header_and_forwards_only_the_data() {
    let mut target = Proc::sockit(&["serve", "tcp://127.0.0.1:0", "--echo", "-q"]);
    let target_addr = target.listening();
    let mut relay = Proc::sockit(&[
        "relay",
        "tcp://127.0.0.1:0",
        &format!("tcp://{target_addr}"),
        "--proxy-protocol",
        "--log",
        "text",
    ]);
    let line = relay.wait_for_line("listening", |l| l.contains("listening"));
    let addr = endpoint_addr(&line);
    let mut client = connect(&addr);
    let mut request = v2("192.0.2.99:1234".parse().unwrap_or_else(|e| panic!("{e}")));
    request.extend_from_slice(b"payload");
    client.write_all(&request).unwrap_or_else(|e| panic!("{e}"));
    let mut reply = [0u8; 7];
    client
        .read_exact(&mut reply)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(&reply, b"payload", "the header must not reach the target");
    assert_eq!(connected_peer(&mut relay), "192.0.2.99:1234");
}

/// Runs `sockit ARGS` with `socket` as file descriptor 3 and `LISTEN_FDS=1`,
/// `LISTEN_PID=<its pid>` (set by a `sh` that then execs sockit, keeping its pid).
fn spawn_with_fd3(socket: &impl std::os::fd::AsRawFd, args: &[&str]) -> Proc {
    let mut cmd = std::process::Command::new("sh");
    cmd.arg("-c")
        .arg("LISTEN_PID=$$; export LISTEN_PID; exec \"$0\" \"$@\"")
        .arg(sockit_bin())
        .args(args)
        .env("LISTEN_FDS", "1")
        .env("NO_COLOR", "1")
        .env_remove("RUST_LOG");
    pass_as_fd3(&mut cmd, socket);
    Proc::spawn(cmd, false)
}

/// Makes `socket` file descriptor 3 of the program `cmd` runs.
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

/// HAProxy, the reference implementation of the PROXY protocol, in front of sockit: the
/// client's own address must reach sockit's events through both header versions.
/// HAProxy cannot bind port 0, so it gets a listener we bound, as `fd@3`.
#[test]
fn haproxy_send_proxy_v1_and_v2_give_sockit_the_clients_address() {
    let mut server = Proc::sockit(&[
        "serve",
        "tcp://127.0.0.1:0",
        "--echo",
        "--framing",
        "line",
        "--proxy-protocol",
        "--log",
        "text",
    ]);
    let line = server.wait_for_line("listening", |l| l.contains("listening"));
    let sockit_addr = endpoint_addr(&line);
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    for send_proxy in ["send-proxy", "send-proxy-v2"] {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
        let front = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
        let config = dir.path().join(format!("{send_proxy}.cfg"));
        std::fs::write(
            &config,
            format!(
                "defaults\n  mode tcp\n  timeout connect 5s\n  timeout client 30s\n  timeout server 30s\n\
                 frontend front\n  bind fd@3\n  default_backend sockit\n\
                 backend sockit\n  server s1 {sockit_addr} {send_proxy}\n"
            ),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let mut cmd = std::process::Command::new("haproxy");
        cmd.arg("-f").arg(&config).arg("-db");
        pass_as_fd3(&mut cmd, &listener);
        let haproxy = Proc::spawn(cmd, false);
        drop(listener);
        // The listener exists already: the connection waits in its backlog for HAProxy.
        let mut client = connect(&front.to_string());
        let me = local(&client);
        assert_eq!(
            echo_lines(&mut client, &[send_proxy]),
            [send_proxy],
            "through HAProxy\n{}",
            haproxy.report()
        );
        assert_eq!(
            connected_peer(&mut server),
            me.to_string(),
            "sockit must see the client, not HAProxy ({send_proxy})\n{}",
            haproxy.report()
        );
        drop(client);
    }
}

#[test]
fn systemd_socket_activation_serves_an_inherited_tcp_listener() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
    let port = listener
        .local_addr()
        .unwrap_or_else(|e| panic!("{e}"))
        .port();
    // The endpoint's own address (the note's :8000) is not bound: the socket is used.
    let mut server = spawn_with_fd3(
        &listener,
        &[
            "serve",
            "tcp",
            "--systemd",
            "--echo",
            "--framing",
            "line",
            "-q",
        ],
    );
    drop(listener);
    let addr = server.listening();
    assert_eq!(addr, format!("127.0.0.1:{port}"), "{}", server.report());
    let mut client = connect(&addr);
    assert_eq!(echo_lines(&mut client, &["activated"]), ["activated"]);
    drop(client);
    server.signal(libc::SIGTERM);
    assert!(server.wait_exit().success(), "{}", server.report());
}

#[test]
fn systemd_socket_activate_passes_a_unix_socket_that_sockit_leaves_in_place() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let path = dir.path().join("activated.sock");
    let mut cmd = std::process::Command::new("systemd-socket-activate");
    cmd.arg("-l")
        .arg(&path)
        .arg(sockit_bin())
        .args([
            "serve",
            "unix:/not/used.sock",
            "--systemd",
            "--echo",
            "--framing",
            "line",
        ])
        .env("NO_COLOR", "1")
        .env_remove("RUST_LOG");
    let mut server = Proc::spawn(cmd, false);
    stderr_line(&server, "systemd-socket-activate to listen", |l| {
        l.contains("Listening on")
    });
    // systemd-socket-activate starts sockit at the first connection, which then waits in
    // the backlog until sockit accepts it.
    let stream =
        UnixStream::connect(&path).unwrap_or_else(|e| panic!("connect {}: {e}", path.display()));
    stream.set_read_timeout(Some(TIMEOUT)).ok();
    let listening = server.listening();
    assert_eq!(listening, path.display().to_string());
    let mut writer = stream.try_clone().unwrap_or_else(|e| panic!("{e}"));
    writer
        .write_all(b"via systemd\n")
        .unwrap_or_else(|e| panic!("{e}"));
    let mut reply = String::new();
    BufReader::new(stream)
        .read_line(&mut reply)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(reply, "via systemd\n");
    server.signal(libc::SIGTERM);
    assert!(server.wait_exit().success(), "{}", server.report());
    assert!(
        path.exists(),
        "the socket file belongs to systemd; sockit must not remove it"
    );
}

#[test]
fn systemd_without_a_socket_or_with_the_wrong_kind_is_a_clear_error() {
    let output = run_sockit(&["serve", "tcp", "--systemd"], None);
    assert_eq!(code(&output), 6, "{}", crate::util::describe(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("LISTEN_FDS"), "{stderr}");

    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
    let mut server = spawn_with_fd3(&udp, &["serve", "tcp", "--systemd"]);
    let status = server.wait_exit();
    assert_eq!(status.code(), Some(6), "{}", server.report());
    let stderr = server.stderr();
    assert!(stderr.contains("is a UDP socket"), "{stderr}");
    assert!(
        stderr.contains("tcp://127.0.0.1:8000 needs a stream socket"),
        "{stderr}"
    );

    // Not a socket at all: refused with a message, and the descriptor is not closed
    // behind the runtime's back (which would abort the process).
    let file = tempfile::tempfile().unwrap_or_else(|e| panic!("{e}"));
    let mut server = spawn_with_fd3(&file, &["serve", "tcp", "--systemd"]);
    let status = server.wait_exit();
    assert_eq!(status.code(), Some(6), "{}", server.report());
    let stderr = server.stderr();
    assert!(
        stderr.contains("fd 3 (unknown) is not a usable socket"),
        "{stderr}"
    );
    assert!(!stderr.contains("fatal runtime error"), "{stderr}");
}

#[test]
fn sighup_drains_like_sigterm_and_a_second_signal_exits_at_once() {
    let mut server = Proc::sockit(&["serve", "tcp://127.0.0.1:0", "-q"]);
    let addr = server.listening();
    let mut client = connect(&addr);
    client
        .write_all(b"hello tcp server")
        .unwrap_or_else(|e| panic!("{e}"));
    let mut reply = [0u8; 16];
    client
        .read_exact(&mut reply)
        .unwrap_or_else(|e| panic!("{e}"));
    drop(client);
    server.signal(libc::SIGHUP);
    assert!(server.wait_exit().success(), "{}", server.report());
    let stderr = server.stderr();
    assert!(stderr.contains("SIGHUP received: stopping"), "{stderr}");
    assert!(
        stderr.contains("summary: 1 connection, 1 message"),
        "{stderr}"
    );

    // A TLS client that never starts its handshake keeps the drain waiting (the
    // handshake has its own 10 s limit, the grace is 30 s); a Ctrl-C then ends it now.
    let mut server = Proc::sockit(&[
        "serve",
        "tls://127.0.0.1:0",
        "--grace",
        "30s",
        "--metrics",
        "127.0.0.1:0",
        "-q",
    ]);
    let addr = server.listening();
    let metrics = metrics_addr(&server);
    let stalled = connect(&addr);
    // Accepted (its handshake task running) before the signal, or there is nothing to drain.
    scrape_until(
        &server,
        &metrics,
        "the stalled client to be accepted",
        |m| m.count("sockit_connections_accepted_total", "tls") == 1,
    );
    server.signal(libc::SIGHUP);
    stderr_line(&server, "the SIGHUP line", |l| {
        l.contains("SIGHUP received: stopping")
    });
    poll(
        "the listener to close",
        || server.report(),
        || TcpStream::connect(&addr).is_err().then_some(()),
    );
    server.signal(libc::SIGINT);
    let status = server.wait_exit();
    assert_eq!(status.code(), Some(130), "{}", server.report());
    assert!(server.stderr().contains("SIGINT received: exiting now"));
    drop(stalled);
}

/// Issue 15, item 11: with `--log json` a message's text is a JSON string escaped once,
/// by JSON (`hi` and a newline parse back as those 3 characters); bytes that are not
/// UTF-8 travel as base64 in `received_b64`; the summary's `errors_by_kind` is an object
/// keyed by kind. Checked with serde_json, a real JSON parser.
#[test]
fn json_events_carry_the_exact_bytes_and_errors_by_kind_by_name() {
    use base64::Engine as _;
    let mut server = Proc::sockit(&["serve", "tcp://127.0.0.1:0", "--echo", "--log", "json"]);
    let line = server.wait_for_line("listening", |l| l.contains("\"listening\""));
    let addr = endpoint_addr(&line);
    let parse = |line: &str| -> serde_json::Value {
        serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
    };
    for (message, field) in [
        (&b"hi\n"[..], "received"),
        (&b"caf\xe9"[..], "received_b64"),
    ] {
        let mut client = connect(&addr);
        client.write_all(message).unwrap_or_else(|e| panic!("{e}"));
        client
            .shutdown(std::net::Shutdown::Write)
            .unwrap_or_else(|e| panic!("{e}"));
        let mut echo = Vec::new();
        let _ = client.read_to_end(&mut echo);
        assert_eq!(echo, message);
        let line = server.wait_for_line("the message event", |l| l.contains("\"message\""));
        let event = parse(&line);
        assert_eq!(event["received_bytes"], message.len(), "{line}");
        let value = event[field]
            .as_str()
            .unwrap_or_else(|| panic!("no {field}: {line}"));
        let bytes = if field == "received" {
            value.as_bytes().to_vec()
        } else {
            base64::engine::general_purpose::STANDARD
                .decode(value)
                .unwrap_or_else(|e| panic!("{e}: {line}"))
        };
        assert_eq!(bytes, message, "{line}");
    }
    // A reset mid-line is counted under its kind's name.
    let client = connect(&addr);
    reset(client);
    poll(
        "the reset to be noticed",
        || server.report(),
        || {
            server
                .stderr()
                .lines()
                .any(|l| l.contains("reset") || l.contains("closed"))
                .then_some(())
        },
    );
    server.signal(libc::SIGTERM);
    assert!(server.wait_exit().success(), "{}", server.report());
    let stderr = server.stderr();
    let summary = parse(stderr.lines().last().unwrap_or_default());
    assert_eq!(summary["event"], "summary", "{stderr}");
    let by_kind = summary["errors_by_kind"]
        .as_object()
        .unwrap_or_else(|| panic!("errors_by_kind is not an object: {stderr}"));
    let total: u64 = by_kind.values().filter_map(serde_json::Value::as_u64).sum();
    assert_eq!(Some(total), summary["errors"].as_u64(), "{stderr}");
    assert!(
        by_kind.contains_key("reset") && by_kind.contains_key("timeout"),
        "{stderr}"
    );
}

/// Issue 20, item 8: a Unix client picks its own address. One bound to a path holding a
/// newline and a terminal escape cannot forge a log line or colour the terminal: its
/// name is escaped in the events on stdout and in the diagnostics on stderr.
#[test]
fn a_unix_client_name_cannot_forge_log_lines() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let path = dir.path().join("s.sock");
    let endpoint = format!("unix:{}", path.display());
    let mut server = Proc::sockit(&[
        "serve",
        &endpoint,
        "--echo",
        "--idle-timeout",
        "1s",
        "--log",
        "text",
    ]);
    server.wait_for_line("listening", |l| l.contains(" listening "));
    let forged = dir.path().join("c\nFORGED closed conn=99\x1b[31m");
    let client = socket2::Socket::new(socket2::Domain::UNIX, socket2::Type::STREAM, None)
        .unwrap_or_else(|e| panic!("{e}"));
    client
        .bind(&socket2::SockAddr::unix(&forged).unwrap_or_else(|e| panic!("{e}")))
        .unwrap_or_else(|e| panic!("bind: {e}"));
    client
        .connect(&socket2::SockAddr::unix(&path).unwrap_or_else(|e| panic!("{e}")))
        .unwrap_or_else(|e| panic!("connect: {e}"));
    let mut client = UnixStream::from(std::os::fd::OwnedFd::from(client));
    client.write_all(b"hi").unwrap_or_else(|e| panic!("{e}"));
    let mut echo = [0u8; 2];
    client
        .read_exact(&mut echo)
        .unwrap_or_else(|e| panic!("{e}"));
    // The idle timeout logs a line naming the client on stderr, then `closed` on stdout.
    server.wait_for_line("the closed event", |l| l.contains(" closed conn="));
    let idle = poll(
        "the idle line",
        || server.report(),
        || {
            let stderr = server.stderr();
            stderr
                .lines()
                .find(|l| l.contains("idle for 1s"))
                .map(str::to_string)
        },
    );
    assert!(
        idle.contains("c\\nFORGED closed conn=99\\u{1b}[31m"),
        "{idle}"
    );
    let stdout = server.stdout.join("\n");
    for (name, text) in [("stdout", &stdout), ("stderr", &server.stderr())] {
        assert!(!text.contains('\x1b'), "an escape reached {name}:\n{text}");
        assert!(
            !text.lines().any(|l| l.starts_with("FORGED")),
            "a forged line on {name}:\n{text}"
        );
    }
}

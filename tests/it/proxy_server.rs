//! Issue 19, item 2: `sockit proxy`, a SOCKS5 / SOCKS4 / HTTP CONNECT server on one
//! port, driven by curl and Python as real clients, with `python3 -m http.server` and
//! sockit echo servers as destinations, all on loopback. Bad input is sent as raw bytes:
//! each case must get its protocol's reply code and one log line, and the next client
//! must still be served.

use std::io::{Read, Write};
use std::net::{Shutdown as Half, TcpStream};
use std::path::Path;

use crate::peers::{listening_port, spawn_peer};
use crate::util::{Proc, connect_tcp, python};

/// A running `sockit proxy` (JSON events) and its `HOST:PORT`.
struct ProxyUnderTest {
    proc: Proc,
    addr: String,
}

impl ProxyUnderTest {
    /// Starts `sockit --log json proxy tcp://127.0.0.1:0 EXTRA…` and waits until it listens.
    fn start(extra: &[&str]) -> ProxyUnderTest {
        let mut args = vec!["--log", "json", "proxy", "tcp://127.0.0.1:0"];
        args.extend_from_slice(extra);
        let mut proc = Proc::sockit(&args);
        let line = proc.wait_for_line("the listening event", |l| {
            l.contains("\"event\":\"listening\"")
        });
        let addr = json_field(&line, "endpoint")
            .trim_start_matches("tcp://")
            .to_string();
        ProxyUnderTest { proc, addr }
    }

    /// Starts a proxy that may reach loopback (and only loopback).
    fn loopback(extra: &[&str]) -> ProxyUnderTest {
        let mut args = vec!["--allow-to", "127.0.0.0/8"];
        args.extend_from_slice(extra);
        ProxyUnderTest::start(&args)
    }

    /// Waits (at most the test timeout) until stderr holds `n` lines containing `text`,
    /// since stderr is read apart from stdout and may lag it; returns the count seen.
    fn wait_for_log_lines(&self, text: &str, n: usize) -> usize {
        let deadline = std::time::Instant::now() + crate::util::TIMEOUT;
        loop {
            let seen = self.log_lines(text);
            if seen >= n || std::time::Instant::now() > deadline {
                return seen;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    /// Lines on stderr containing `text`.
    fn log_lines(&self, text: &str) -> usize {
        self.proc
            .stderr()
            .lines()
            .filter(|l| l.contains(text))
            .count()
    }

    /// The next `closed` event.
    fn next_closed(&mut self) -> String {
        self.proc
            .wait_for_line("a closed event", |l| l.contains("\"event\":\"closed\""))
    }
}

/// The string value of `"field":"…"` in a JSON line.
fn json_field(line: &str, field: &str) -> String {
    let value: serde_json::Value =
        serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
    match &value[field] {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// `python3 -m http.server` serving one file, and its port.
fn http_server(dir: &Path) -> (Proc, u16) {
    std::fs::write(dir.join("hello.txt"), "hello through the proxy\n")
        .unwrap_or_else(|e| panic!("{e}"));
    let root = dir.to_string_lossy().into_owned();
    let server = spawn_peer(
        &python(),
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
    let port = listening_port(&server);
    (server, port)
}

/// Runs curl with a bounded time and returns (exit code, stdout, stderr).
fn curl(args: &[&str]) -> (i32, String, String) {
    let mut cmd = assert_cmd::Command::new("curl");
    cmd.args(["-sS", "--max-time", "20"])
        .args(args)
        .timeout(crate::util::TIMEOUT);
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("could not run curl (is it installed?): {e}"));
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A sockit echo server (`serve --echo`) and its address.
fn echo_server(scheme: &str) -> (Proc, String) {
    let mut echo = Proc::sockit(&["serve", &format!("{scheme}://127.0.0.1:0"), "--echo"]);
    let addr = echo.listening();
    (echo, addr)
}

/// A SOCKS5 CONNECT request to an IPv4 `addr`, after the no-auth greeting.
fn socks5_connect_bytes(addr: &str) -> Vec<u8> {
    let at: std::net::SocketAddrV4 = addr.parse().unwrap_or_else(|e| panic!("{addr}: {e}"));
    let mut out = vec![5, 1, 0, 1];
    out.extend_from_slice(&at.ip().octets());
    out.extend_from_slice(&at.port().to_be_bytes());
    out
}

/// Opens a no-auth SOCKS5 tunnel to `target` through `proxy` (raw bytes).
fn socks5_tunnel(proxy: &str, target: &str) -> TcpStream {
    let mut stream = connect_tcp(proxy);
    stream
        .write_all(&[5, 1, 0])
        .unwrap_or_else(|e| panic!("{e}"));
    let mut choice = [0u8; 2];
    stream
        .read_exact(&mut choice)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(choice, [5, 0], "no-auth must be chosen");
    stream
        .write_all(&socks5_connect_bytes(target))
        .unwrap_or_else(|e| panic!("{e}"));
    let mut reply = [0u8; 10];
    stream
        .read_exact(&mut reply)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(reply[..2], [5, 0], "CONNECT must succeed: {reply:?}");
    stream
}

/// What a raw client does after sending its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Then {
    /// Waits for the reply with its sending side open.
    Wait,
    /// Ends its sending side (a truncated message), then waits for the reply.
    HalfClose,
}

/// Sends `bytes`, then does `then`, and reads until the proxy closes: the reply a bad
/// client gets.
fn reply_to(proxy: &str, bytes: &[u8], then: Then) -> Vec<u8> {
    let mut stream = connect_tcp(proxy);
    stream.write_all(bytes).unwrap_or_else(|e| panic!("{e}"));
    if then == Then::HalfClose {
        stream
            .shutdown(Half::Write)
            .unwrap_or_else(|e| panic!("{e}"));
    }
    let mut reply = Vec::new();
    stream
        .read_to_end(&mut reply)
        .unwrap_or_else(|e| panic!("reading the reply to {bytes:?}: {e}"));
    reply
}

/// A good client through `proxy` to the echo server at `echo` gets its bytes back.
fn still_serves(proxy: &str, echo: &str) {
    let mut tunnel = socks5_tunnel(proxy, echo);
    tunnel
        .write_all(b"still here")
        .unwrap_or_else(|e| panic!("{e}"));
    let mut back = [0u8; 10];
    tunnel
        .read_exact(&mut back)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(&back, b"still here");
}

#[test]
fn curl_fetches_through_socks5_socks4_and_http_connect() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let (_web, port) = http_server(dir.path());
    let mut proxy = ProxyUnderTest::loopback(&[]);
    let by_name = format!("http://localhost:{port}/hello.txt");
    let by_ip = format!("http://127.0.0.1:{port}/hello.txt");
    let addr = proxy.addr.clone();
    let http_proxy = format!("http://{addr}");
    let cases: [(&str, &[&str], &str, &str); 5] = [
        (
            "socks5",
            &["--socks5-hostname", &addr, &by_name],
            "socks5",
            "localhost",
        ),
        (
            "socks5",
            &["--socks5", &addr, &by_ip],
            "socks5",
            "127.0.0.1",
        ),
        (
            "http",
            &["-p", "-x", &http_proxy, &by_ip],
            "http",
            "127.0.0.1",
        ),
        (
            "socks4a",
            &["--socks4a", &addr, &by_name],
            "socks4",
            "localhost",
        ),
        (
            "socks4",
            &["--socks4", &addr, &by_ip],
            "socks4",
            "127.0.0.1",
        ),
    ];
    for (what, args, protocol, host) in cases {
        let (code, body, err) = curl(args);
        assert_eq!(
            (code, body.as_str()),
            (0, "hello through the proxy\n"),
            "curl via {what}: {err}\n{}",
            proxy.proc.report()
        );
        let closed = proxy.next_closed();
        assert_eq!(json_field(&closed, "protocol"), protocol, "{closed}");
        assert_eq!(
            json_field(&closed, "destination"),
            format!("{host}:{port}"),
            "{closed}"
        );
        let bytes_out: u64 = json_field(&closed, "bytes_out").parse().unwrap_or(0);
        assert!(bytes_out > 24, "the response bytes are counted: {closed}");
    }
    proxy.proc.signal(libc::SIGTERM);
    assert!(proxy.proc.wait_exit().success(), "{}", proxy.proc.report());
    assert!(
        proxy.proc.stderr().contains("\"tunnels\":5"),
        "the summary counts the tunnels: {}",
        proxy.proc.report()
    );
}

#[test]
fn curl_with_credentials_gets_through_and_without_them_is_refused() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let (_web, port) = http_server(dir.path());
    let users = dir.path().join("users.txt");
    std::fs::write(&users, "# proxy users\nalice:s3cret\n").unwrap_or_else(|e| panic!("{e}"));
    let mut proxy = ProxyUnderTest::loopback(&["--credentials", &users.to_string_lossy()]);
    let url = format!("http://127.0.0.1:{port}/hello.txt");
    let good: [Vec<String>; 3] = [
        vec![
            "-x".into(),
            format!("socks5h://alice:s3cret@{}", proxy.addr),
            url.clone(),
        ],
        vec![
            "-p".into(),
            "-x".into(),
            format!("http://alice:s3cret@{}", proxy.addr),
            url.clone(),
        ],
        vec![
            "-p".into(),
            "-x".into(),
            format!("http://{}", proxy.addr),
            "--proxy-user".into(),
            "alice:s3cret".into(),
            url.clone(),
        ],
    ];
    for args in &good {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (code, body, err) = curl(&args);
        assert_eq!(
            (code, body.as_str()),
            (0, "hello through the proxy\n"),
            "{args:?}: {err}"
        );
        proxy.next_closed();
    }
    let http_without = ["-p", "-x", &format!("http://{}", proxy.addr), &url];
    let (code, _, err) = curl(&http_without);
    assert_ne!(code, 0);
    assert!(
        err.contains("407"),
        "HTTP without credentials gets 407: {err}"
    );
    let closed = proxy.next_closed();
    assert!(
        json_field(&closed, "reason").contains("no credentials"),
        "{closed}"
    );
    let socks_wrong = ["-x", &format!("socks5h://alice:wrong@{}", proxy.addr), &url];
    let (code, _, err) = curl(&socks_wrong);
    assert_ne!(code, 0, "a wrong password must not get through: {err}");
    let closed = proxy.next_closed();
    assert!(
        json_field(&closed, "reason").contains("wrong user name or password"),
        "{closed}"
    );
    assert!(
        !proxy.proc.stderr().contains("wrong\""),
        "passwords are never logged: {}",
        proxy.proc.stderr()
    );
}

#[test]
fn a_tunnel_carries_bytes_exactly_to_a_sockit_echo_server() {
    tunnel_carries_bytes_exactly("buffered");
}

#[test]
fn a_spliced_tunnel_carries_bytes_exactly_too() {
    tunnel_carries_bytes_exactly("splice");
}

/// A megabyte through a SOCKS5 tunnel to `serve --echo` and back, byte for byte, with
/// the relay's copy path `copy` (`--copy`); the `closed` event counts it both ways.
fn tunnel_carries_bytes_exactly(copy: &str) {
    let (_echo, echo_addr) = echo_server("tcp");
    let mut proxy = ProxyUnderTest::loopback(&["--copy", copy]);
    let payload: Vec<u8> = (0..1_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let mut tunnel = socks5_tunnel(&proxy.addr, &echo_addr);
    let mut reader = tunnel.try_clone().unwrap_or_else(|e| panic!("{e}"));
    let expected = payload.len();
    let read_back = std::thread::spawn(move || {
        let mut back = Vec::with_capacity(expected);
        let mut buf = [0u8; 65536];
        while back.len() < expected {
            match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => back.extend_from_slice(&buf[..n]),
                Err(e) => panic!("reading the echo: {e}"),
            }
        }
        back
    });
    tunnel.write_all(&payload).unwrap_or_else(|e| panic!("{e}"));
    let back = crate::util::join(read_back);
    assert!(
        back == payload,
        "the echo differs ({} bytes back)",
        back.len()
    );
    tunnel
        .shutdown(Half::Write)
        .unwrap_or_else(|e| panic!("{e}"));
    let mut rest = Vec::new();
    tunnel
        .read_to_end(&mut rest)
        .unwrap_or_else(|e| panic!("{e}"));
    let closed = proxy.next_closed();
    assert_eq!(json_field(&closed, "bytes_in"), "1000000", "{closed}");
    assert_eq!(json_field(&closed, "bytes_out"), "1000000", "{closed}");
    assert_eq!(json_field(&closed, "destination"), echo_addr, "{closed}");
}

/// Where the proxy serves `/metrics`, from its JSON log line `metrics: http://ADDR/metrics`.
fn metrics_addr(proxy: &ProxyUnderTest) -> String {
    proxy.wait_for_log_lines("metrics: http://", 1);
    let stderr = proxy.proc.stderr();
    let line = stderr
        .lines()
        .find(|l| l.contains("metrics: http://"))
        .unwrap_or_else(|| panic!("no metrics line\n{stderr}"));
    let message = json_field(
        &serde_json::from_str::<serde_json::Value>(line).unwrap_or_else(|e| panic!("{e}: {line}"))
            ["fields"]
            .to_string(),
        "message",
    );
    let start = message.find("http://").map_or(0, |i| i + "http://".len());
    message[start..]
        .trim_end_matches("/metrics")
        .trim()
        .to_string()
}

#[test]
fn metrics_count_tunnels_refusals_and_bytes() {
    let (_echo, echo) = echo_server("tcp");
    let mut proxy = ProxyUnderTest::loopback(&["--metrics", "127.0.0.1:0"]);
    let metrics = metrics_addr(&proxy);
    still_serves(&proxy.addr.clone(), &echo);
    proxy.next_closed();
    assert_eq!(
        reply_to(&proxy.addr.clone(), &[5, 0], Then::Wait),
        [5, 0xFF]
    );
    proxy.next_closed();
    let m = crate::ops::scrape(&metrics);
    assert_eq!(m.get("sockit_proxy_tunnels_total", &[]), 1.0);
    assert_eq!(m.get("sockit_proxy_malformed_total", &[]), 1.0);
    assert_eq!(m.get("sockit_proxy_connections_accepted_total", &[]), 2.0);
    assert_eq!(
        m.get("sockit_proxy_bytes_total", &[("direction", "to_client")]),
        10.0
    );
    assert_eq!(m.get("sockit_proxy_connections_active", &[]), 0.0);
}

/// A small SOCKS5 UDP client: associate, send one datagram to DEST through the relay,
/// print the payload of the reply and the address its header names.
const UDP_CLIENT: &str = r#"
import socket, struct, sys
proxy_host, proxy_port = sys.argv[1].rsplit(":", 1)
dest_host, dest_port = sys.argv[2].rsplit(":", 1)
tcp = socket.create_connection((proxy_host, int(proxy_port)), timeout=20)
tcp.sendall(b"\x05\x01\x00")
assert tcp.recv(2) == b"\x05\x00"
tcp.sendall(b"\x05\x03\x00\x01" + bytes(4) + b"\x00\x00")
reply = b""
while len(reply) < 10:
    reply += tcp.recv(10 - len(reply))
assert reply[1] == 0, reply
relay = (socket.inet_ntoa(reply[4:8]), struct.unpack("!H", reply[8:10])[0])
udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
udp.settimeout(20)
header = b"\x00\x00\x00\x01" + socket.inet_aton(dest_host) + struct.pack("!H", int(dest_port))
udp.sendto(header + b"hello over udp", relay)
data, _ = udp.recvfrom(65535)
src = socket.inet_ntoa(data[4:8]) + ":" + str(struct.unpack("!H", data[8:10])[0])
print(data[10:].decode(), "from", src)
tcp.close()
"#;

#[test]
fn udp_associate_relays_a_python_clients_datagrams() {
    let (_echo, echo_addr) = echo_server("udp");
    let mut proxy = ProxyUnderTest::loopback(&[]);
    let out = assert_cmd::Command::new(python())
        .args(["-c", UDP_CLIENT, &proxy.addr, &echo_addr])
        .timeout(crate::util::TIMEOUT)
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        proxy.proc.report()
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("hello over udp from {echo_addr}")
    );
    let closed = proxy.next_closed();
    assert!(
        json_field(&closed, "destination").starts_with("udp associate 127.0.0.1:"),
        "{closed}"
    );
    assert_eq!(json_field(&closed, "bytes_in"), "14", "{closed}");
}

/// One bad client: what it sends and what it must get.
struct BadInput {
    /// The case, for messages.
    what: &'static str,
    /// Its bytes.
    bytes: Vec<u8>,
    /// What it does after sending them.
    then: Then,
    /// How the proxy's reply starts.
    reply: Vec<u8>,
    /// Text of the one log line (and the `closed` event's reason).
    logged: &'static str,
}

/// Every bad-input case of issue 19 with its reply; a good client is served after each.
#[test]
fn bad_input_gets_its_reply_code_and_the_proxy_serves_the_next_client() {
    let (_echo, echo) = echo_server("tcp");
    let mut proxy = ProxyUnderTest::loopback(&[]);
    let addr = proxy.addr.clone();
    let mut long_name = vec![5, 1, 0, 5, 1, 0, 3, 255];
    long_name.extend_from_slice(&[b'a'; 255]);
    long_name.extend_from_slice(&[0, 80]);
    let mut flood = b"CONNECT 127.0.0.1:1 HTTP/1.1\r\n".to_vec();
    while flood.len() <= sockit::proxy::http::MAX_HEAD {
        flood.extend_from_slice(b"X-Flood: 1\r\n");
    }
    let cases = [
        BadInput {
            what: "greeting without methods",
            bytes: vec![5, 0],
            then: Then::Wait,
            reply: vec![5, 0xFF],
            logged: "no authentication method",
        },
        BadInput {
            what: "truncated greeting",
            bytes: vec![5, 3, 0],
            then: Then::HalfClose,
            reply: vec![5, 0xFF],
            logged: "middle of its handshake",
        },
        BadInput {
            what: "truncated request",
            bytes: vec![5, 1, 0, 5, 1, 0, 1, 127, 0],
            then: Then::HalfClose,
            reply: vec![5, 0, 5, 0x01],
            logged: "middle of its handshake",
        },
        BadInput {
            what: "unknown address type",
            bytes: vec![5, 1, 0, 5, 1, 0, 9, 1, 2, 3, 4, 0, 80],
            then: Then::Wait,
            reply: vec![5, 0, 5, 0x08],
            logged: "unknown address type 0x09",
        },
        BadInput {
            what: "a 255-byte domain",
            bytes: long_name,
            then: Then::Wait,
            reply: vec![5, 0, 5, 0x04],
            logged: "a host name of 255 bytes",
        },
        BadInput {
            what: "unknown command",
            bytes: vec![5, 1, 0, 5, 9, 0, 1, 127, 0, 0, 1, 0, 80],
            then: Then::Wait,
            reply: vec![5, 0, 5, 0x07],
            logged: "unknown command 0x09",
        },
        BadInput {
            what: "BIND",
            bytes: vec![5, 1, 0, 5, 2, 0, 1, 127, 0, 0, 1, 0, 80],
            then: Then::Wait,
            reply: vec![5, 0, 5, 0x07],
            logged: "BIND is not supported",
        },
        BadInput {
            what: "password method when none is set up",
            bytes: vec![5, 1, 2],
            then: Then::Wait,
            reply: vec![5, 0xFF],
            logged: "takes no authentication",
        },
        BadInput {
            what: "bad HTTP CONNECT line",
            bytes: b"CONNECT nowhere HTTP/1.1\r\n\r\n".to_vec(),
            then: Then::Wait,
            reply: b"HTTP/1.1 400 ".to_vec(),
            logged: "malformed request line",
        },
        BadInput {
            what: "not CONNECT",
            bytes: b"GET http://127.0.0.1/ HTTP/1.1\r\n\r\n".to_vec(),
            then: Then::Wait,
            reply: b"HTTP/1.1 405 ".to_vec(),
            logged: "only CONNECT is served",
        },
        BadInput {
            what: "header flood",
            bytes: flood,
            then: Then::Wait,
            reply: b"HTTP/1.1 431 ".to_vec(),
            logged: "a request head over 8192 bytes",
        },
        BadInput {
            what: "SOCKS4 to an unknown command",
            bytes: vec![4, 9, 0, 80, 127, 0, 0, 1, 0],
            then: Then::Wait,
            reply: vec![0, 0x5B],
            logged: "unknown SOCKS4 command",
        },
        BadInput {
            what: "TLS on the proxy port",
            bytes: vec![0x16, 3, 1, 0, 5],
            then: Then::Wait,
            reply: vec![],
            logged: "it looks like TLS",
        },
    ];
    for BadInput {
        what,
        bytes,
        then,
        reply: expected,
        logged,
    } in cases
    {
        let before = proxy.log_lines(logged);
        let reply = reply_to(&addr, &bytes, then);
        assert!(
            reply.starts_with(&expected),
            "{what}: got {reply:?}, expected {expected:?}\n{}",
            proxy.proc.report()
        );
        let closed = proxy.next_closed();
        assert!(
            json_field(&closed, "reason").contains(logged),
            "{what}: {closed}"
        );
        still_serves(&addr, &echo);
        proxy.next_closed();
        let after = proxy.wait_for_log_lines(logged, before + 1);
        assert_eq!(
            after,
            before + 1,
            "{what}: one log line\n{}",
            proxy.proc.stderr()
        );
    }
}

#[test]
fn wrong_password_and_missing_method_get_their_socks5_replies() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let users = dir.path().join("users.txt");
    std::fs::write(&users, "alice:s3cret\n").unwrap_or_else(|e| panic!("{e}"));
    let mut proxy = ProxyUnderTest::loopback(&["--credentials", &users.to_string_lossy()]);
    let addr = proxy.addr.clone();
    let mut wrong = vec![5, 1, 2, 1, 5];
    wrong.extend_from_slice(b"alice");
    wrong.push(5);
    wrong.extend_from_slice(b"wrong");
    assert_eq!(
        reply_to(&addr, &wrong, Then::Wait),
        [5, 2, 1, 1],
        "status 1: refused"
    );
    assert!(json_field(&proxy.next_closed(), "reason").contains("wrong user name or password"));
    assert_eq!(
        reply_to(&addr, &[5, 1, 0], Then::Wait),
        [5, 0xFF],
        "no-auth only: 0xFF"
    );
    assert!(json_field(&proxy.next_closed(), "reason").contains("offers 0x00"));
    let socks4 = [4, 1, 0, 80, 127, 0, 0, 1, 0];
    assert_eq!(
        reply_to(&addr, &socks4, Then::Wait)[..2],
        [0, 0x5B],
        "SOCKS4 has no password"
    );
    proxy.next_closed();
    let mut right = vec![5, 1, 2, 1, 5];
    right.extend_from_slice(b"alice");
    right.push(6);
    right.extend_from_slice(b"s3cret");
    let mut stream = connect_tcp(&addr);
    stream.write_all(&right).unwrap_or_else(|e| panic!("{e}"));
    let mut answer = [0u8; 4];
    stream
        .read_exact(&mut answer)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(answer, [5, 2, 1, 0], "the right password is accepted");
}

#[test]
fn a_handshake_that_stalls_is_cut_with_a_reply() {
    let mut proxy = ProxyUnderTest::loopback(&["--handshake-timeout", "200ms"]);
    let reply = reply_to(
        &proxy.addr.clone(),
        b"CONNECT 127.0.0.1:1 HTTP/1.1\r\n",
        Then::Wait,
    );
    assert!(
        reply.starts_with(b"HTTP/1.1 408 "),
        "{:?}",
        String::from_utf8_lossy(&reply)
    );
    assert!(json_field(&proxy.next_closed(), "reason").contains("no complete handshake"));
}

#[test]
fn loopback_and_private_destinations_are_denied_by_default_and_said_at_start() {
    let (_echo, echo) = echo_server("tcp");
    let mut proxy = ProxyUnderTest::start(&[]);
    assert_eq!(
        proxy.wait_for_log_lines("DENIED by default", 1),
        1,
        "said once at start: {}",
        proxy.proc.report()
    );
    let addr = proxy.addr.clone();
    let mut request = vec![5, 1, 0];
    request.extend_from_slice(&socks5_connect_bytes(&echo));
    assert_eq!(
        reply_to(&addr, &request, Then::Wait)[..4],
        [5, 0, 5, 0x02],
        "not allowed by ruleset"
    );
    let closed = proxy.next_closed();
    assert!(
        json_field(&closed, "reason").contains("denied by default"),
        "{closed}"
    );
    let http = format!("CONNECT {echo} HTTP/1.1\r\n\r\n");
    assert!(reply_to(&addr, http.as_bytes(), Then::Wait).starts_with(b"HTTP/1.1 403 "));
    proxy.next_closed();
    let (code, _, err) = curl(&[
        "--socks5-hostname",
        &addr,
        &format!(
            "http://localhost:{}/",
            echo.rsplit(':').next().unwrap_or("1")
        ),
    ]);
    assert_ne!(code, 0, "a name resolving to loopback is denied too: {err}");
    let closed = proxy.next_closed();
    assert!(
        json_field(&closed, "reason").contains("(127.0.0.1)"),
        "{closed}"
    );
}

#[test]
fn behind_a_load_balancer_the_proxy_header_names_the_client() {
    let (_echo, echo) = echo_server("tcp");
    let mut proxy = ProxyUnderTest::loopback(&["--proxy-protocol", "--deny", "192.0.2.0/24"]);
    let addr = proxy.addr.clone();
    let mut stream = connect_tcp(&addr);
    stream
        .write_all(b"PROXY TCP4 198.51.100.7 127.0.0.1 5555 1080\r\n\x05\x01\x00")
        .unwrap_or_else(|e| panic!("{e}"));
    let mut choice = [0u8; 2];
    stream
        .read_exact(&mut choice)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(choice, [5, 0]);
    stream
        .write_all(&socks5_connect_bytes(&echo))
        .unwrap_or_else(|e| panic!("{e}"));
    let mut reply = [0u8; 10];
    stream
        .read_exact(&mut reply)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(reply[1], 0, "{reply:?}");
    drop(stream);
    let closed = proxy.next_closed();
    assert_eq!(json_field(&closed, "peer"), "198.51.100.7:5555", "{closed}");
    let mut denied = connect_tcp(&addr);
    denied
        .write_all(b"PROXY TCP4 192.0.2.7 127.0.0.1 5555 1080\r\n\x05\x01\x00")
        .unwrap_or_else(|e| panic!("{e}"));
    let mut answer = Vec::new();
    // Closed unread (a reset, as for `relay`), or closed: either way, nothing answered.
    let _ = denied.read_to_end(&mut answer);
    assert!(
        answer.is_empty(),
        "a client --deny names gets no answer: {answer:?}"
    );
    assert_eq!(
        proxy.wait_for_log_lines("denied connection from 192.0.2.7", 1),
        1
    );
}

#[test]
fn deny_to_wins_over_allow_to() {
    let (_echo, echo) = echo_server("tcp");
    let mut proxy = ProxyUnderTest::loopback(&["--deny-to", &echo]);
    let mut request = vec![5, 1, 0];
    request.extend_from_slice(&socks5_connect_bytes(&echo));
    assert_eq!(
        reply_to(&proxy.addr.clone(), &request, Then::Wait)[..4],
        [5, 0, 5, 0x02]
    );
    let closed = proxy.next_closed();
    assert!(
        json_field(&closed, "reason").contains("--deny-to"),
        "{closed}"
    );
}

#[test]
fn a_proxy_on_anything_but_tcp_or_without_its_credentials_file_is_a_usage_error() {
    for (args, said) in [
        (&["proxy", "udp://127.0.0.1:0"][..], "is not tcp://"),
        (
            &[
                "proxy",
                "tcp://127.0.0.1:0",
                "--credentials",
                "/nonexistent/users",
            ][..],
            "cannot read --credentials /nonexistent/users",
        ),
    ] {
        let out = crate::util::run_sockit(args, None);
        let described = crate::util::describe(&out);
        assert_eq!(crate::util::code(&out), 2, "{described}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(said),
            "{described}"
        );
    }
}

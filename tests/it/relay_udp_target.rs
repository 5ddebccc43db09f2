//! Issue 18, points 2 and 3: a UDP relay's target side takes `--source`, the socket
//! options and `--retry`, as a stream relay's does. The options are read back where they
//! show: TOS and TTL on the datagram as the target receives it (Python's
//! `IP_RECVTOS`/`IP_RECVTTL`), the receive buffer and mark from `ss`, the source address
//! from the sender the target sees.

use std::net::UdpSocket;
use std::process::Command;

use crate::peers::poll_until;
use crate::util::{Proc, TIMEOUT, code, describe, run_sockit};

/// A Python UDP peer on 127.0.0.1 that prints its port, then for one datagram prints
/// `from=ADDR:PORT tos=N ttl=N` and echoes it.
fn python_tos_ttl_echo() -> Proc {
    let script = "\
import socket
IP_RECVTTL = getattr(socket, 'IP_RECVTTL', 12)  # Linux's value; older Pythons lack the name
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.IPPROTO_IP, socket.IP_RECVTOS, 1)
s.setsockopt(socket.IPPROTO_IP, IP_RECVTTL, 1)
s.bind(('127.0.0.1', 0))
print(s.getsockname()[1], flush=True)
data, cmsgs, _, sender = s.recvmsg(2048, 256)
seen = {}
for level, kind, value in cmsgs:
    if kind == socket.IP_TOS:
        seen['tos'] = value[0]
    elif kind == socket.IP_TTL:
        seen['ttl'] = int.from_bytes(value[:4], 'little')
print('from=%s:%d tos=%d ttl=%d' % (sender[0], sender[1], seen.get('tos', -1), seen.get('ttl', -1)), flush=True)
s.sendto(data, sender)
";
    let mut cmd = Command::new(crate::util::python());
    cmd.args(["-c", script]);
    Proc::spawn(cmd, false)
}

fn udp_client() -> UdpSocket {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
    socket
        .set_read_timeout(Some(TIMEOUT))
        .unwrap_or_else(|e| panic!("{e}"));
    socket
}

/// `ss`'s line for the UDP socket bound to `local` (with memory and extended info).
fn ss_udp(local: &str) -> String {
    let output = Command::new("ss")
        .args(["-uanem", "src", local])
        .output()
        .unwrap_or_else(|e| panic!("cannot run ss: {e}"));
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn the_udp_relay_target_side_takes_source_and_socket_options() {
    let mut target = python_tos_ttl_echo();
    let port = target.wait_for_line("the port", |_| true);
    let mut relay = Proc::sockit(&[
        "relay",
        "udp://127.0.0.1:0",
        &format!("udp://127.0.0.1:{}", port.trim()),
        "--source",
        "127.0.0.2",
        "--tos",
        "16",
        "--ttl",
        "9",
        "--recv-buffer",
        "50000",
        "--mark",
        "7",
        "-q",
    ]);
    let relay_addr = relay.listening();
    let client = udp_client();
    client
        .send_to(b"through", &relay_addr)
        .unwrap_or_else(|e| panic!("{e}"));
    let seen = target.wait_for_line("what the target saw", |l| l.starts_with("from="));
    let from = seen
        .split_whitespace()
        .next()
        .and_then(|f| f.strip_prefix("from="))
        .unwrap_or_default()
        .to_string();
    assert!(from.starts_with("127.0.0.2:"), "{seen}");
    assert!(
        seen.contains(" tos=16 ") && seen.ends_with(" ttl=9"),
        "{seen}"
    );
    let mut buf = [0u8; 64];
    let n = client.recv(&mut buf).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(&buf[..n], b"through");
    // The session's socket is still open (idle timeout): its buffer and mark show in ss.
    let ss = poll_until(
        "the session socket in ss",
        || relay.report(),
        || {
            let text = ss_udp(&from);
            (text.lines().count() > 1).then_some(text)
        },
    );
    // Linux doubles the size asked for, for its bookkeeping.
    assert!(ss.contains("rb100000"), "{ss}");
    assert!(ss.contains("fwmark:0x7"), "{ss}");
    relay.signal(libc::SIGTERM);
    relay.wait_exit();
}

#[test]
fn the_udp_relay_retries_a_unixgram_target_that_comes_up_late() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let path = dir.path().join("late.sock");
    let mut relay = Proc::sockit(&[
        "relay",
        "udp://127.0.0.1:0",
        &format!("unixgram:{}", path.display()),
        "--retry",
        "100",
        "--retry-delay",
        "100ms",
        "--retry-max-delay",
        "100ms",
        "--log-level",
        "debug",
    ]);
    let relay_addr = relay.listening();
    let client = udp_client();
    client
        .send_to(b"early", &relay_addr)
        .unwrap_or_else(|e| panic!("{e}"));
    crate::peers::wait_for_stderr(&relay, "attempt 1 to connect");
    let server = std::os::unix::net::UnixDatagram::bind(&path).unwrap_or_else(|e| panic!("{e}"));
    server
        .set_read_timeout(Some(TIMEOUT))
        .unwrap_or_else(|e| panic!("{e}"));
    let mut buf = [0u8; 64];
    let (n, from) = server.recv_from(&mut buf).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(&buf[..n], b"early");
    match from.as_pathname() {
        Some(back) => {
            server
                .send_to(b"late", back)
                .unwrap_or_else(|e| panic!("{e}"));
        }
        // The relay's session socket has an abstract name: answer on a connected socket.
        None => {
            use std::os::linux::net::SocketAddrExt;
            let name = from
                .as_abstract_name()
                .unwrap_or_else(|| panic!("unnamed sender {from:?}"));
            let back = std::os::unix::net::SocketAddr::from_abstract_name(name)
                .unwrap_or_else(|e| panic!("{e}"));
            server
                .send_to_addr(b"late", &back)
                .unwrap_or_else(|e| panic!("{e}"));
        }
    }
    let n = client.recv(&mut buf).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(&buf[..n], b"late");
    relay.signal(libc::SIGTERM);
    relay.wait_exit();
}

#[test]
fn a_source_port_on_a_udp_relay_target_is_one_line_and_exit_2() {
    let output = run_sockit(
        &[
            "relay",
            "udp://127.0.0.1:0",
            "udp://127.0.0.1:9",
            "--source",
            "127.0.0.2:5000",
        ],
        None,
    );
    assert_eq!(code(&output), 2, "{}", describe(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("without a port"), "{stderr}");
}

//! Issue 3, point 7: `sockit probe HOST PORTS` on loopback: open, closed and filtered
//! ports, reported in the order given, exit 0 only when one is open. Issue 18, point 4:
//! the UDP probe (`-u`) against a Python UDP echo server (open), an unused port (closed)
//! and a socket that never answers (open|filtered).

use std::net::TcpListener;

use socket2::{Domain, Socket, Type};

use crate::util::{code, describe, run_sockit};

/// A port with nothing listening: bind, read the port, close.
fn closed_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn open_and_closed_ports_in_the_order_given() {
    let open = TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
    let open_port = open.local_addr().map(|a| a.port()).unwrap_or_default();
    let closed = closed_port();
    let spec = format!("{closed},{open_port}");
    let output = run_sockit(&["probe", "127.0.0.1", &spec], None);
    assert_eq!(code(&output), 0, "{}", describe(&output));
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        format!("127.0.0.1:{closed} closed\n127.0.0.1:{open_port} open\n")
    );
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("1 open, 1 closed, 0 filtered"),
        "{}",
        describe(&output)
    );
    // --open leaves only the open one; JSON for scripts.
    let output = run_sockit(
        &["probe", "127.0.0.1", &spec, "--open", "--log", "json"],
        None,
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    let value: serde_json::Value =
        serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    assert_eq!(value["port"], open_port);
    assert_eq!(value["state"], "open");
}

#[test]
fn no_open_port_exits_1() {
    let output = run_sockit(
        &[
            "probe",
            "127.0.0.1",
            &format!("{},{}", closed_port(), closed_port()),
        ],
        None,
    );
    assert_eq!(code(&output), 1, "{}", describe(&output));
    assert!(String::from_utf8_lossy(&output.stderr).contains("error: no open port on 127.0.0.1"));
}

/// A listener whose accept queue is full drops new SYNs (Linux, the default
/// tcp_abort_on_overflow=0): to a prober that is exactly a filtered port.
#[test]
fn a_port_that_never_answers_is_filtered() {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap_or_else(|e| panic!("{e}"));
    let addr: std::net::SocketAddr = ([127, 0, 0, 1], 0).into();
    socket.bind(&addr.into()).unwrap_or_else(|e| panic!("{e}"));
    socket.listen(0).unwrap_or_else(|e| panic!("{e}"));
    let port = socket
        .local_addr()
        .ok()
        .and_then(|a| a.as_socket())
        .map(|a| a.port())
        .unwrap_or_else(|| panic!("no port"));
    // Fill the accept queue (backlog 0 holds one) and never accept.
    let target: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
    let filler = std::net::TcpStream::connect_timeout(&target, crate::util::TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}"));
    let output = run_sockit(
        &[
            "probe",
            "127.0.0.1",
            &port.to_string(),
            "--timeout",
            "300ms",
        ],
        None,
    );
    assert_eq!(code(&output), 1, "{}", describe(&output));
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        format!("127.0.0.1:{port} filtered\n")
    );
    drop(filler);
}

/// Many ports with few attempts in flight: every port is reported once, in order.
#[test]
fn many_ports_with_bounded_concurrency() {
    let listeners: Vec<TcpListener> = (0..5)
        .map(|_| TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}")))
        .collect();
    let mut ports: Vec<u16> = listeners
        .iter()
        .map(|l| l.local_addr().map(|a| a.port()).unwrap_or_default())
        .collect();
    for _ in 0..20 {
        // The kernel may hand out a port twice; the probe reports each port once.
        let port = closed_port();
        if !ports.contains(&port) {
            ports.push(port);
        }
    }
    let spec = ports
        .iter()
        .map(u16::to_string)
        .collect::<Vec<_>>()
        .join(",");
    let output = run_sockit(&["probe", "localhost", &spec, "--concurrency", "3"], None);
    assert_eq!(code(&output), 0, "{}", describe(&output));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let reported: Vec<u16> = stdout
        .lines()
        .filter_map(|l| {
            l.split_whitespace()
                .next()?
                .rsplit(':')
                .next()?
                .parse()
                .ok()
        })
        .collect();
    assert_eq!(reported.len(), ports.len(), "{stdout}");
    assert_eq!(stdout.matches(" open").count(), 5, "{stdout}");
    assert!(ports.iter().all(|p| reported.contains(p)), "{stdout}");
}

#[test]
fn bad_port_lists_are_usage_errors() {
    let output = run_sockit(&["probe", "127.0.0.1", "80-70"], None);
    assert_eq!(code(&output), 2, "{}", describe(&output));
    assert!(String::from_utf8_lossy(&output.stderr).contains("backwards"));
}

/// A Python UDP echo server on 127.0.0.1: prints its port, then each datagram's bytes
/// (as a Python bytes literal) before echoing it.
fn python_udp_echo() -> crate::util::Proc {
    let script = "\
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(('127.0.0.1', 0))
print(s.getsockname()[1], flush=True)
while True:
    data, peer = s.recvfrom(65535)
    print(repr(data), flush=True)
    s.sendto(data, peer)
";
    let mut cmd = std::process::Command::new(crate::util::python());
    cmd.args(["-c", script]);
    crate::util::Proc::spawn(cmd, false)
}

#[test]
fn udp_ports_are_open_closed_or_open_filtered() {
    let mut echo = python_udp_echo();
    let open: u16 = echo
        .wait_for_line("the echo server's port", |_| true)
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("{e}\n{}", echo.report()));
    // Bound but never read: the datagram is queued, nothing answers, no ICMP comes back.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
    let silent_port = silent.local_addr().map(|a| a.port()).unwrap_or(0);
    let closed = {
        let unused = std::net::UdpSocket::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
        unused.local_addr().map(|a| a.port()).unwrap_or(0)
    };
    let ports = format!("{open},{closed},{silent_port}");
    let output = run_sockit(
        &["probe", "-u", "127.0.0.1", &ports, "--timeout", "500ms"],
        None,
    );
    assert_eq!(code(&output), 0, "{}", describe(&output));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines,
        [
            format!("127.0.0.1:{open} open"),
            format!("127.0.0.1:{closed} closed"),
            format!("127.0.0.1:{silent_port} open|filtered"),
        ],
        "{}",
        describe(&output)
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("1 open, 1 closed, 1 open|filtered"),
        "{stderr}"
    );
    // The documented probe payload is what the server received.
    echo.wait_for_line("the probe payload", |l| l == r"b'sockit-probe\n'");
}

#[test]
fn udp_probe_with_every_port_closed_exits_1() {
    let closed = {
        let unused = std::net::UdpSocket::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
        unused.local_addr().map(|a| a.port()).unwrap_or(0)
    };
    let output = run_sockit(&["probe", "--udp", "127.0.0.1", &closed.to_string()], None);
    assert_eq!(code(&output), 1, "{}", describe(&output));
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        format!("127.0.0.1:{closed} closed")
    );
}

#[test]
fn udp_probe_agrees_with_nc_zu_on_open_and_closed_ports() {
    let mut echo = python_udp_echo();
    let open: u16 = echo
        .wait_for_line("the echo server's port", |_| true)
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("{e}\n{}", echo.report()));
    let closed = {
        let unused = std::net::UdpSocket::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
        unused.local_addr().map(|a| a.port()).unwrap_or(0)
    };
    // netcat-openbsd checks for the ICMP refusal only with -v; without it, -zu exits 0.
    for (port, expected) in [(open, 0), (closed, 1)] {
        let port = port.to_string();
        let nc = std::process::Command::new("nc")
            .args(["-z", "-u", "-v", "-w", "2", "127.0.0.1", &port])
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("nc: {e}"));
        let ours = run_sockit(&["probe", "-u", "127.0.0.1", &port], None);
        assert_eq!(nc.status.code(), Some(expected), "nc -zu {port}: {nc:?}");
        assert_eq!(code(&ours), expected, "{}", describe(&ours));
    }
}

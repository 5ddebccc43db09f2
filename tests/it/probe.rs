//! Issue 3, point 7: `sockit probe HOST PORTS` on loopback: open, closed and filtered
//! ports, reported in the order given, exit 0 only when one is open.

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

//! Issue 18, point 5 (optional part): `--pcap FILE` writes what was sent and received as
//! a pcap with synthetic IP and TCP/UDP headers. Read back with `tcpdump -r` (the packets
//! it sees, their addresses and lengths) and by parsing the file here (the payloads,
//! byte for byte).

use std::path::Path;
use std::process::Command;

use crate::util::{Proc, code, describe, run_sockit};

/// tcpdump's one-line summaries of the packets in `file`.
fn tcpdump(file: &Path) -> Vec<String> {
    let output = Command::new("tcpdump")
        .args(["-r"])
        .arg(file)
        .args(["-nn", "-q"])
        .output()
        .unwrap_or_else(|e| panic!("cannot run tcpdump (is it installed?): {e}"));
    assert!(output.status.success(), "tcpdump: {output:?}");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

/// The payloads of the packets in a LINKTYPE_RAW pcap of IPv4 TCP/UDP packets, in order.
fn payloads(file: &Path) -> Vec<Vec<u8>> {
    let bytes = std::fs::read(file).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(&bytes[..4], &0xa1b2_c3d4u32.to_le_bytes(), "pcap magic");
    assert_eq!(&bytes[20..24], &101u32.to_le_bytes(), "LINKTYPE_RAW");
    let mut at = 24;
    let mut found = Vec::new();
    while at + 16 <= bytes.len() {
        let len = u32::from_le_bytes([bytes[at + 8], bytes[at + 9], bytes[at + 10], bytes[at + 11]])
            as usize;
        let packet = &bytes[at + 16..at + 16 + len];
        let ip_len = usize::from(packet[0] & 0x0f) * 4;
        let transport_len = match packet[9] {
            6 => usize::from(packet[ip_len + 12] >> 4) * 4,
            17 => 8,
            other => panic!("protocol {other}"),
        };
        found.push(packet[ip_len + transport_len..].to_vec());
        at += 16 + len;
    }
    found
}

#[test]
fn connect_writes_a_pcap_that_tcpdump_reads_back() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let file = dir.path().join("tcp.pcap");
    let mut server = Proc::sockit(&["serve", "tcp://127.0.0.1:0", "--reply", "pong", "-q"]);
    let addr = server.listening();
    let file_arg = file.to_string_lossy().into_owned();
    let output = run_sockit(
        &["connect", &addr, "--pcap", &file_arg, "--quit-after", "0"],
        Some(b"ping"),
    );
    assert_eq!(code(&output), 0, "{}", describe(&output));
    let port = addr.rsplit(':').next().unwrap_or_default();
    let lines = tcpdump(&file);
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(
        lines[0].contains(&format!("> 127.0.0.1.{port}: tcp 4")),
        "{lines:?}"
    );
    assert!(
        lines[1].contains(&format!("IP 127.0.0.1.{port} > 127.0.0.1."))
            && lines[1].ends_with("tcp 4"),
        "{lines:?}"
    );
    assert_eq!(payloads(&file), [b"ping".to_vec(), b"pong".to_vec()]);
    server.signal(libc::SIGTERM);
    server.wait_exit();
}

#[test]
fn connect_over_udp_writes_udp_packets() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let file = dir.path().join("udp.pcap");
    let mut server = Proc::sockit(&["serve", "udp://127.0.0.1:0", "--echo", "-q"]);
    let addr = server.listening();
    let file_arg = file.to_string_lossy().into_owned();
    let mut connect = Proc::spawn(
        crate::util::sockit_command(&[
            "connect",
            &format!("udp://{addr}"),
            "--pcap",
            &file_arg,
            "--quit-after",
            "100ms",
        ]),
        true,
    );
    std::io::Write::write_all(connect.stdin(), b"datagram\n").unwrap_or_else(|e| panic!("{e}"));
    connect.wait_for_line("the echo", |l| l == "datagram");
    connect.close_stdin();
    assert!(connect.wait_exit().success(), "{}", connect.report());
    let lines = tcpdump(&file);
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(
        lines.iter().all(|l| l.ends_with("UDP, length 9")),
        "{lines:?}"
    );
    assert_eq!(
        payloads(&file),
        [b"datagram\n".to_vec(), b"datagram\n".to_vec()]
    );
    server.signal(libc::SIGTERM);
    server.wait_exit();
}

#[test]
fn serve_writes_each_connection_to_the_pcap() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let file = dir.path().join("serve.pcap");
    let file_arg = file.to_string_lossy().into_owned();
    let mut server = Proc::sockit(&[
        "serve",
        "tcp://127.0.0.1:0",
        "--echo",
        "--pcap",
        &file_arg,
        "-q",
    ]);
    let addr = server.listening();
    for message in [&b"first"[..], b"second"] {
        let output = run_sockit(&["connect", &addr], Some(message));
        assert_eq!(output.stdout, message, "{}", describe(&output));
    }
    server.signal(libc::SIGTERM);
    server.wait_exit();
    let mut got = payloads(&file);
    got.sort();
    assert_eq!(
        got,
        [
            b"first".to_vec(),
            b"first".to_vec(),
            b"second".to_vec(),
            b"second".to_vec()
        ]
    );
    assert_eq!(tcpdump(&file).len(), 4);
}

#[test]
fn serve_over_udp_writes_each_datagram_and_reply() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let file = dir.path().join("serve-udp.pcap");
    let file_arg = file.to_string_lossy().into_owned();
    let mut server = Proc::sockit(&[
        "serve",
        "udp://127.0.0.1:0",
        "--reply",
        "pong",
        "--pcap",
        &file_arg,
        "-q",
    ]);
    let addr = server.listening();
    let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
    client
        .set_read_timeout(Some(crate::util::TIMEOUT))
        .unwrap_or_else(|e| panic!("{e}"));
    client
        .send_to(b"ping", &addr)
        .unwrap_or_else(|e| panic!("{e}"));
    let mut buf = [0u8; 16];
    let n = client.recv(&mut buf).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(&buf[..n], b"pong");
    server.signal(libc::SIGTERM);
    server.wait_exit();
    let client_port = client.local_addr().map(|a| a.port()).unwrap_or_default();
    let lines = tcpdump(&file);
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(
        lines[0].contains(&format!(
            "IP 127.0.0.1.{client_port} > {}: UDP, length 4",
            addr.replace(':', ".")
        )),
        "{lines:?}"
    );
    assert_eq!(payloads(&file), [b"ping".to_vec(), b"pong".to_vec()]);
}

#[test]
fn pcap_on_a_unix_endpoint_is_one_line_and_exit_2() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let file = dir.path().join("x.pcap").to_string_lossy().into_owned();
    for args in [
        &["connect", "unix:/nonexistent.sock", "--pcap", &file][..],
        &["serve", "unixgram:@sockit-pcap-refused", "--pcap", &file],
    ] {
        let output = run_sockit(args, None);
        assert_eq!(code(&output), 2, "{}", describe(&output));
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
        assert!(stderr.contains("--pcap writes IP packets"), "{stderr}");
    }
}

#[test]
fn relay_over_udp_writes_the_client_side() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let file = dir.path().join("relay-udp.pcap");
    let file_arg = file.to_string_lossy().into_owned();
    let mut echo = Proc::sockit(&["serve", "udp://127.0.0.1:0", "--echo", "-q"]);
    let echo_addr = echo.listening();
    let mut relay = Proc::sockit(&[
        "relay",
        "udp://127.0.0.1:0",
        &format!("udp://{echo_addr}"),
        "--pcap",
        &file_arg,
        "-q",
    ]);
    let relay_addr = relay.listening();
    let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
    client
        .set_read_timeout(Some(crate::util::TIMEOUT))
        .unwrap_or_else(|e| panic!("{e}"));
    client
        .send_to(b"relayed", &relay_addr)
        .unwrap_or_else(|e| panic!("{e}"));
    let mut buf = [0u8; 16];
    let n = client.recv(&mut buf).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(&buf[..n], b"relayed");
    relay.signal(libc::SIGTERM);
    relay.wait_exit();
    echo.signal(libc::SIGTERM);
    echo.wait_exit();
    let lines = tcpdump(&file);
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(
        lines[1].contains(&format!("IP {} > 127.0.0.1.", relay_addr.replace(':', "."))),
        "{lines:?}"
    );
    assert_eq!(payloads(&file), [b"relayed".to_vec(), b"relayed".to_vec()]);
}

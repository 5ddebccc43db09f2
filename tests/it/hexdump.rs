//! Issue 3, point 6: `--hex` on `serve` and `send` (`connect` and `relay` are in their
//! own modules): both directions as offset / hex / ASCII on stderr, stdout unchanged.

use crate::util::{Proc, code, describe, run_sockit};

#[test]
fn serve_and_send_dump_both_directions() {
    let mut server = Proc::sockit(&["serve", "tcp://127.0.0.1:0", "--hex"]);
    let addr = server.listening();
    let output = run_sockit(&["send", &addr, "--hex"], None);
    assert_eq!(code(&output), 0, "{}", describe(&output));
    // stdout is the note's, untouched.
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "send: hello tcp server\nreceive: hello tcp client\n\n"
    );
    let client_dump = String::from_utf8_lossy(&output.stderr);
    assert!(
        client_dump.contains(&format!("Z sent 16 bytes to {addr}"))
            && client_dump.contains("|hello tcp server|")
            && client_dump.contains("Z received 16 bytes from")
            && client_dump.contains("|hello tcp client|"),
        "{client_dump}"
    );
    let server_dump = crate::peers::wait_for_stderr(&server, "|hello tcp client|");
    assert!(
        server_dump.contains("Z received 16 bytes from 127.0.0.1:")
            && server_dump.contains("(conn ")
            && server_dump.contains(
                "< 00000000  68 65 6c 6c 6f 20 74 63  70 20 73 65 72 76 65 72  |hello tcp server|"
            ),
        "{server_dump}"
    );
    server.wait_for_line("the note's lines", |l| l == "send: hello tcp client");
}

#[test]
fn datagrams_are_dumped_one_by_one() {
    let mut server = Proc::sockit(&["serve", "udp://127.0.0.1:0", "--hex", "-q"]);
    let addr = server.listening();
    let output = run_sockit(
        &["send", &format!("udp://{addr}"), "--hex", "--count", "2"],
        None,
    );
    assert_eq!(code(&output), 0, "{}", describe(&output));
    let client_dump = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        client_dump.matches("Z sent 16 bytes").count(),
        2,
        "{client_dump}"
    );
    assert_eq!(
        client_dump.matches("Z received 16 bytes").count(),
        2,
        "{client_dump}"
    );
    crate::peers::poll_until(
        "the server's dumps",
        || server.report(),
        || {
            let dump = server.stderr();
            (dump.matches("Z sent 16 bytes").count() == 2).then_some(())
        },
    );
}

#[test]
fn every_command_documents_itself_with_examples() {
    for command in ["serve", "send", "connect", "relay", "probe"] {
        let output = run_sockit(&[command, "--help"], None);
        assert_eq!(code(&output), 0, "{}", describe(&output));
        let help = String::from_utf8_lossy(&output.stdout);
        assert!(
            help.contains("Examples:"),
            "{command} --help has no examples"
        );
        assert!(
            help.contains(&format!("sockit {command}")),
            "{command}: {help}"
        );
    }
}

/// The relay dumps its client side: what the client sent (`<`) and what it got (`>`).
#[test]
fn relay_dumps_the_client_side() {
    let mut echo = Proc::sockit(&["serve", "tcp://127.0.0.1:0", "--echo", "-q"]);
    let echo_addr = echo.listening();
    let mut relay = Proc::sockit(&[
        "relay",
        "tcp://127.0.0.1:0",
        &format!("tcp://{echo_addr}"),
        "--hex",
        "-q",
    ]);
    let relay_addr = relay.listening();
    let output = run_sockit(&["connect", &relay_addr], Some(b"relayed"));
    assert_eq!(code(&output), 0, "{}", describe(&output));
    assert_eq!(output.stdout, b"relayed");
    let dump = crate::peers::wait_for_stderr(&relay, "Z sent 7 bytes to 127.0.0.1:");
    assert!(
        dump.contains("Z received 7 bytes from 127.0.0.1:") && dump.contains("|relayed|"),
        "{dump}"
    );
}

/// Issue 18, point 5: each chunk's header carries its direction marker and the time it
/// passed, as `socat -x -v` heads its chunks.
#[test]
fn chunk_headers_carry_the_direction_and_a_timestamp() {
    let mut server = Proc::sockit(&["serve", "tcp://127.0.0.1:0", "--echo"]);
    let addr = server.listening();
    let output = run_sockit(&["connect", &addr, "--hex"], Some(b"hello tcp server"));
    assert_eq!(code(&output), 0, "{}", describe(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    let header = regex::Regex::new(
        r"(?m)^([<>]) (\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z) (sent|received) 16 bytes (to|from) 127\.0\.0\.1:\d+$",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let headers: Vec<(String, String)> = header
        .captures_iter(&stderr)
        .map(|c| (c[1].to_string(), c[3].to_string()))
        .collect();
    assert_eq!(
        headers,
        [
            (">".to_string(), "sent".to_string()),
            ("<".to_string(), "received".to_string())
        ],
        "{stderr}"
    );
    let stamps: Vec<&str> = header
        .captures_iter(&stderr)
        .filter_map(|c| c.get(2).map(|m| m.as_str()))
        .collect();
    assert!(stamps[0] <= stamps[1], "in order: {stamps:?}");
}

/// Reads a capture file, with the directory listing on failure.
fn read_capture(dir: &std::path::Path, name: &str) -> Vec<u8> {
    std::fs::read(dir.join(name)).unwrap_or_else(|e| {
        let listing: Vec<_> = std::fs::read_dir(dir)
            .map(|d| d.filter_map(|e| e.ok()).map(|e| e.file_name()).collect())
            .unwrap_or_default();
        panic!("{name}: {e}; the directory holds {listing:?}")
    })
}

#[test]
fn connect_captures_each_direction_to_its_own_file() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let capture = dir.path().join("caps");
    let mut server = Proc::sockit(&["serve", "tcp://127.0.0.1:0", "--reply", "pong"]);
    let addr = server.listening();
    let capture_arg = capture.to_string_lossy().into_owned();
    let output = run_sockit(
        &["connect", &addr, "--capture", &capture_arg],
        Some(b"ping"),
    );
    assert_eq!(code(&output), 0, "{}", describe(&output));
    let peer = addr.replace(':', "_");
    assert_eq!(
        read_capture(&capture, &format!("conn1_{peer}.sent")),
        b"ping"
    );
    assert_eq!(
        read_capture(&capture, &format!("conn1_{peer}.received")),
        b"pong"
    );
}

#[test]
fn listen_captures_every_client_by_connection_id_and_peer() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let capture_arg = dir.path().to_string_lossy().into_owned();
    let mut listen = Proc::spawn(
        crate::util::sockit_command(&["listen", "127.0.0.1:0", "--capture", &capture_arg]),
        true,
    );
    let port = wait_for_listen_port(&listen);
    std::io::Write::write_all(listen.stdin(), b"from listen").unwrap_or_else(|e| panic!("{e}"));
    listen.close_stdin();
    let mut client = crate::util::connect_tcp(&format!("127.0.0.1:{port}"));
    let local = client.local_addr().unwrap_or_else(|e| panic!("{e}"));
    std::io::Write::write_all(&mut client, b"from client").unwrap_or_else(|e| panic!("{e}"));
    client
        .shutdown(std::net::Shutdown::Write)
        .unwrap_or_else(|e| panic!("{e}"));
    let mut got = Vec::new();
    std::io::Read::read_to_end(&mut client, &mut got).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(got, b"from listen");
    assert!(listen.wait_exit().success(), "{}", listen.report());
    let peer = local.to_string().replace(':', "_");
    assert_eq!(
        read_capture(dir.path(), &format!("conn1_{peer}.received")),
        b"from client"
    );
    assert_eq!(
        read_capture(dir.path(), &format!("conn1_{peer}.sent")),
        b"from listen"
    );
}

/// The port in `listen`'s readiness line on stderr.
fn wait_for_listen_port(listen: &Proc) -> u16 {
    let deadline = std::time::Instant::now() + crate::util::TIMEOUT;
    loop {
        let stderr = listen.stderr();
        if let Some(port) = stderr
            .lines()
            .find_map(|l| l.strip_prefix("listening on tcp://127.0.0.1:"))
            .and_then(|p| p.trim().parse().ok())
        {
            return port;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no listening line: {stderr}"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

#[test]
fn an_unusable_capture_directory_is_one_line_and_exit_2() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let file = dir.path().join("a-file");
    std::fs::write(&file, b"x").unwrap_or_else(|e| panic!("{e}"));
    let under_a_file = file.join("caps").to_string_lossy().into_owned();
    for command in ["connect", "listen"] {
        let output = run_sockit(&[command, "127.0.0.1:9", "--capture", &under_a_file], None);
        assert_eq!(code(&output), 2, "{}", describe(&output));
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
        assert!(stderr.contains("cannot write captures to"), "{stderr}");
        assert!(!stderr.contains("listening on"), "{stderr}");
    }
}

/// A Python server on 127.0.0.1 that answers each client's first read in upper case;
/// prints its port first.
fn python_upper_server(clients: usize) -> Proc {
    let script = format!(
        "\
import socket
s = socket.socket()
s.bind(('127.0.0.1', 0))
s.listen()
print(s.getsockname()[1], flush=True)
for _ in range({clients}):
    c, _ = s.accept()
    c.sendall(c.recv(1024).upper())
    c.close()
"
    );
    let mut cmd = std::process::Command::new(crate::util::python());
    cmd.args(["-c", &script]);
    Proc::spawn(cmd, false)
}

/// The chunks of a dump as (direction marker, bytes), from sockit's `--hex` or socat's
/// `-x -v` layout: a header line starting with the marker and a date, then hex lines.
fn chunks(dump: &str) -> Vec<(char, Vec<u8>)> {
    let header =
        regex::Regex::new(r"^([<>]) \d{4}[-/]\d\d[-/]\d\d").unwrap_or_else(|e| panic!("{e}"));
    let byte = regex::Regex::new(r"^[0-9a-f]{2}$").unwrap_or_else(|e| panic!("{e}"));
    let mut found: Vec<(char, Vec<u8>)> = Vec::new();
    for line in dump.lines() {
        if let Some(c) = header.captures(line) {
            let marker = c[1].chars().next().unwrap_or('?');
            found.push((marker, Vec::new()));
            continue;
        }
        let Some((_, bytes)) = found.last_mut() else {
            continue;
        };
        // sockit: "> 00000000  68 65 ... |text|"; socat: " 68 65 ...  text".
        let hex_part = line
            .trim_start_matches(['<', '>'])
            .split("  |")
            .next()
            .unwrap_or_default();
        let mut words = hex_part.split_whitespace().peekable();
        if words.peek().is_some_and(|w| w.len() == 8) {
            words.next();
        }
        for word in words.take(16) {
            if !byte.is_match(word) {
                break;
            }
            bytes.push(u8::from_str_radix(word, 16).unwrap_or_default());
        }
    }
    found
}

#[test]
fn the_hex_dump_shows_the_chunks_socat_x_v_shows() {
    let mut server = python_upper_server(2);
    let port = server.wait_for_line("the port", |_| true);
    let target = format!("127.0.0.1:{}", port.trim());
    let ours = run_sockit(&["connect", &target, "--hex"], Some(b"hello tcp server"));
    assert_eq!(code(&ours), 0, "{}", describe(&ours));
    let socat = std::process::Command::new("socat")
        .args(["-x", "-v", "-"])
        .arg(format!("TCP:{target}"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            if let Some(mut stdin) = child.stdin.take() {
                std::io::Write::write_all(&mut stdin, b"hello tcp server")?;
            }
            child.wait_with_output()
        })
        .unwrap_or_else(|e| panic!("socat: {e}"));
    assert!(socat.status.success(), "{socat:?}");
    let expected = vec![
        ('>', b"hello tcp server".to_vec()),
        ('<', b"HELLO TCP SERVER".to_vec()),
    ];
    assert_eq!(chunks(&String::from_utf8_lossy(&socat.stderr)), expected);
    assert_eq!(chunks(&String::from_utf8_lossy(&ours.stderr)), expected);
}

#[test]
fn relay_captures_each_client_connection() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let capture_arg = dir.path().to_string_lossy().into_owned();
    let mut echo = Proc::sockit(&["serve", "tcp://127.0.0.1:0", "--echo", "-q"]);
    let echo_addr = echo.listening();
    let mut relay = Proc::sockit(&[
        "relay",
        "tcp://127.0.0.1:0",
        &format!("tcp://{echo_addr}"),
        "--capture",
        &capture_arg,
        "--copy",
        "splice",
        "-q",
    ]);
    let relay_addr = relay.listening();
    let mut client = crate::util::connect_tcp(&relay_addr);
    let local = client.local_addr().unwrap_or_else(|e| panic!("{e}"));
    std::io::Write::write_all(&mut client, b"relayed").unwrap_or_else(|e| panic!("{e}"));
    client
        .shutdown(std::net::Shutdown::Write)
        .unwrap_or_else(|e| panic!("{e}"));
    let mut got = Vec::new();
    std::io::Read::read_to_end(&mut client, &mut got).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(got, b"relayed");
    // The files are complete once the relay has ended the connection: stop it and wait.
    relay.signal(libc::SIGTERM);
    relay.wait_exit();
    let peer = local.to_string().replace(':', "_");
    assert_eq!(
        read_capture(dir.path(), &format!("conn1_{peer}.received")),
        b"relayed"
    );
    assert_eq!(
        read_capture(dir.path(), &format!("conn1_{peer}.sent")),
        b"relayed"
    );
    echo.signal(libc::SIGTERM);
    echo.wait_exit();
}

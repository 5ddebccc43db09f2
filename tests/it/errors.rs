//! Issue 2, point 9: every error a user can meet gives one clear line and a documented
//! exit code, never a panic; bad bytes never crash a log line.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::time::Duration;

use crate::util::{Proc, TIMEOUT, code, describe, run_sockit};

/// Asserts exit code `expected`, a single `error:` line containing every `needle`, and
/// no panic.
fn assert_error(args: &[&str], expected: i32, needles: &[&str]) {
    let output = run_sockit(args, None);
    assert_eq!(code(&output), expected, "{}", describe(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    let error_lines: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("error: "))
        .collect();
    assert_eq!(
        error_lines.len(),
        1,
        "expected one error line\n{}",
        describe(&output)
    );
    for needle in needles {
        assert!(
            error_lines[0].contains(needle),
            "{needle:?} missing from {:?}",
            error_lines[0]
        );
    }
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// A port on 127.0.0.1 with nothing listening: bind, read the port, close.
fn closed_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
    listener
        .local_addr()
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn malformed_endpoint_shows_the_accepted_forms() {
    for bad in [
        "tcp://127.0.0.1",
        "tcp://::1:80",
        "ftp://x:1",
        "tcp://127.0.0.1:99999",
        "unix:",
    ] {
        assert_error(
            &["send", bad],
            2,
            &["invalid endpoint", "accepted forms", "tcp://HOST:PORT"],
        );
        assert_error(&["serve", bad], 2, &["invalid endpoint"]);
    }
}

#[test]
fn port_in_use_names_the_address_and_suggests_another() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
    let port = taken.local_addr().map(|a| a.port()).unwrap_or_default();
    let endpoint = format!("tcp://127.0.0.1:{port}");
    assert_error(
        &["serve", &endpoint],
        6,
        &[&endpoint, "already in use", "pick another port"],
    );

    let udp = UdpSocket::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
    let port = udp.local_addr().map(|a| a.port()).unwrap_or_default();
    let endpoint = format!("udp://127.0.0.1:{port}");
    assert_error(&["serve", &endpoint], 6, &[&endpoint, "already in use"]);
}

#[test]
fn connection_refused() {
    let endpoint = format!("tcp://127.0.0.1:{}", closed_port());
    assert_error(&["send", &endpoint], 4, &["connection refused", &endpoint]);
    // Connected UDP learns "nothing listens" from the ICMP port-unreachable reply.
    let endpoint = format!("udp://127.0.0.1:{}", closed_port());
    assert_error(&["send", &endpoint], 4, &["connection refused"]);
}

#[test]
fn timeout_when_the_server_never_replies() {
    let silent = TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
    let port = silent.local_addr().map(|a| a.port()).unwrap_or_default();
    assert_error(
        &["send", &format!("127.0.0.1:{port}"), "--timeout", "300ms"],
        5,
        &["timed out after 300ms", "--timeout"],
    );
    drop(silent);
}

/// A 70-byte DNS label is invalid, so the resolver fails without sending any query: the
/// test stays on this machine.
#[test]
fn host_not_found() {
    let host = format!("{}.invalid", "a".repeat(70));
    assert_error(
        &["send", &format!("tcp://{host}:80")],
        3,
        &["could not resolve host", &host],
    );
}

/// A directory the server may not write to. As root (which ignores permissions) the
/// server runs as `nobody`, so the kernel really refuses.
#[test]
fn permission_denied_on_a_unix_path() {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let set_mode = |path: &std::path::Path, mode| {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
            .unwrap_or_else(|e| panic!("{e}"));
    };
    set_mode(dir.path(), 0o755);
    let locked = dir.path().join("locked");
    std::fs::create_dir(&locked).unwrap_or_else(|e| panic!("{e}"));
    set_mode(&locked, 0o555);
    let endpoint = format!("unix:{}", locked.join("s.sock").display());
    // A copy of the binary that `nobody` can run whatever the checkout's own directory
    // permissions are (a clone under a private temp dir is not searchable by others).
    let binary = dir.path().join("sockit");
    std::fs::copy(crate::util::sockit_bin(), &binary).unwrap_or_else(|e| panic!("{e}"));
    set_mode(&binary, 0o755);
    let run = || {
        let mut cmd = std::process::Command::new(&binary);
        cmd.args(["serve", &endpoint]).env("NO_COLOR", "1");
        if unsafe { libc::geteuid() } == 0 {
            cmd.uid(65534).gid(65534);
        }
        assert_cmd::Command::from_std(cmd).timeout(TIMEOUT).output()
    };
    // The copy was just written. A child that another test forked while the copy's file
    // was open for writing holds that descriptor until it execs, and until then running
    // the copy fails with ETXTBSY ("text file busy"): try again, a bounded number of times.
    let mut attempts = 0;
    let output = loop {
        attempts += 1;
        match run() {
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && attempts < 100 => {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            result => break result.unwrap_or_else(|e| panic!("{e}")),
        }
    };
    assert_eq!(code(&output), 6, "{}", describe(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("permission denied") && stderr.contains(&endpoint),
        "{stderr}"
    );
}

#[test]
fn missing_unix_socket_file_is_explained() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let path = dir.path().join("nobody.sock");
    assert_error(
        &["send", &format!("unix:{}", path.display())],
        1,
        &["no socket file at that path"],
    );
}

#[test]
fn oversized_datagram_is_refused_before_sending() {
    let big = "x".repeat(70_000);
    assert_error(
        &["send", "udp://127.0.0.1:9", &big],
        1,
        &["too large for one datagram", "65507"],
    );
}

#[test]
fn invalid_utf8_is_passed_through_and_logged_with_escapes() {
    let mut server = Proc::sockit(&["serve", "tcp://127.0.0.1:0", "--echo"]);
    let addr = server.listening();
    let mut stream = TcpStream::connect(&addr).unwrap_or_else(|e| panic!("{e}"));
    stream.set_read_timeout(Some(TIMEOUT)).ok();
    let payload = b"caf\xe9 \xff\n";
    stream.write_all(payload).unwrap_or_else(|e| panic!("{e}"));
    let mut reply = [0u8; 16];
    let n = stream.read(&mut reply).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(&reply[..n], payload, "the bytes must come back unchanged");
    let line = server.wait_for_line("receive", |l| l.starts_with("receive: "));
    assert_eq!(line, "receive: caf\\xe9 \\xff\\n");
    // And the server is still serving.
    let output = run_sockit(&["send", &addr, "still up"], None);
    assert_eq!(code(&output), 0, "{}", describe(&output));
}

#[test]
fn reset_mid_exchange_ends_only_that_connection() {
    let mut server = Proc::sockit(&["serve", "tcp://127.0.0.1:0", "--framing", "line"]);
    let addr = server.listening();
    // Half a line, then an abortive close (RST) via SO_LINGER 0.
    let stream = TcpStream::connect(&addr).unwrap_or_else(|e| panic!("{e}"));
    (&stream)
        .write_all(b"half a li")
        .unwrap_or_else(|e| panic!("{e}"));
    socket2::SockRef::from(&stream)
        .set_linger(Some(Duration::ZERO))
        .unwrap_or_else(|e| panic!("{e}"));
    drop(stream);
    let output = run_sockit(&["send", &addr, "after", "--framing", "line"], None);
    assert_eq!(code(&output), 0, "{}", describe(&output));
    assert!(String::from_utf8_lossy(&output.stdout).contains("receive: hello tcp client"));
}

#[test]
fn usage_errors_exit_2() {
    let output = run_sockit(&["serve", "--no-such-flag"], None);
    assert_eq!(code(&output), 2, "{}", describe(&output));
    let output = run_sockit(&["send", "--count", "0"], None);
    assert_eq!(code(&output), 2, "{}", describe(&output));
    let output = run_sockit(&["serve", "--busy-poll", "soon"], None);
    assert_eq!(code(&output), 2, "{}", describe(&output));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("500ms"),
        "the error should show a duration that works\n{}",
        describe(&output)
    );
}

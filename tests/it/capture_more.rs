//! Issue 18, point 5: `--capture DIR` on `serve`, and on datagram endpoints (udp://,
//! unixgram:) for connect, listen, relay and serve: per peer, the bytes of each direction
//! in `.sent` / `.received` and one index line per datagram in `.datagrams`
//! (`<time> <sent|received> <offset> <length>`).

use std::net::UdpSocket;
use std::path::{Path, PathBuf};

use crate::peers::poll_until;
use crate::util::{Proc, code, describe, run_sockit};

/// The one file in `dir` named `conn<N>_<peer>.<suffix>`, whatever N is.
fn find_capture(dir: &Path, peer: &str, suffix: &str) -> Option<PathBuf> {
    let tail = format!("_{peer}.{suffix}");
    std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("conn") && n.ends_with(&tail))
        })
}

/// Polls until `peer`'s `suffix` file in `dir` holds `want`.
fn wait_for_capture(dir: &Path, peer: &str, suffix: &str, want: &[u8], server: &Proc) {
    poll_until(
        &format!(
            "{peer}.{suffix} to hold {:?}",
            String::from_utf8_lossy(want)
        ),
        || format!("{}\n{:?}", server.report(), listing(dir)),
        || {
            let path = find_capture(dir, peer, suffix)?;
            (std::fs::read(path).ok()? == want).then_some(())
        },
    );
}

fn listing(dir: &Path) -> Vec<std::ffi::OsString> {
    std::fs::read_dir(dir)
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.file_name()).collect())
        .unwrap_or_default()
}

/// The index lines of `peer` without their timestamps: `received 0 4`, ….
fn index_fields(dir: &Path, peer: &str) -> Vec<String> {
    let Some(path) = find_capture(dir, peer, "datagrams") else {
        return Vec::new();
    };
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .map(|line| {
            let (stamp, rest) = line.split_once(' ').unwrap_or_default();
            assert!(
                humantime::parse_rfc3339(stamp).is_ok(),
                "not a timestamp: {line}"
            );
            rest.to_string()
        })
        .collect()
}

fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"))
}

fn udp_client() -> UdpSocket {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
    socket
        .set_read_timeout(Some(crate::util::TIMEOUT))
        .unwrap_or_else(|e| panic!("{e}"));
    socket
}

/// Sends `datagram` to `to` and returns the answer.
fn ask(socket: &UdpSocket, to: &str, datagram: &[u8]) -> Vec<u8> {
    socket
        .send_to(datagram, to)
        .unwrap_or_else(|e| panic!("{e}"));
    let mut buf = [0u8; 2048];
    let n = socket.recv(&mut buf).unwrap_or_else(|e| panic!("{e}"));
    buf[..n].to_vec()
}

#[test]
fn serve_captures_each_connection_per_direction() {
    let dir = tempdir();
    let capture = dir.path().to_string_lossy().into_owned();
    let mut server = Proc::sockit(&[
        "serve",
        "tcp://127.0.0.1:0",
        "--reply",
        "pong",
        "--capture",
        &capture,
        "-q",
    ]);
    let addr = server.listening();
    let mut client = crate::util::connect_tcp(&addr);
    let peer = client
        .local_addr()
        .unwrap_or_else(|e| panic!("{e}"))
        .to_string()
        .replace(':', "_");
    std::io::Write::write_all(&mut client, b"ping").unwrap_or_else(|e| panic!("{e}"));
    let mut answer = [0u8; 4];
    std::io::Read::read_exact(&mut client, &mut answer).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(&answer, b"pong");
    drop(client);
    wait_for_capture(dir.path(), &peer, "received", b"ping", &server);
    wait_for_capture(dir.path(), &peer, "sent", b"pong", &server);
    server.signal(libc::SIGTERM);
    server.wait_exit();
}

#[test]
fn serve_captures_each_udp_sender_with_datagram_boundaries() {
    let dir = tempdir();
    let capture = dir.path().to_string_lossy().into_owned();
    let mut server = Proc::sockit(&[
        "serve",
        "udp://127.0.0.1:0",
        "--echo",
        "--capture",
        &capture,
        "-q",
    ]);
    let addr = server.listening();
    let client = udp_client();
    let peer = client
        .local_addr()
        .unwrap_or_else(|e| panic!("{e}"))
        .to_string()
        .replace(':', "_");
    assert_eq!(ask(&client, &addr, b"one"), b"one");
    assert_eq!(ask(&client, &addr, b"three"), b"three");
    wait_for_capture(dir.path(), &peer, "received", b"onethree", &server);
    wait_for_capture(dir.path(), &peer, "sent", b"onethree", &server);
    assert_eq!(
        index_fields(dir.path(), &peer),
        ["received 0 3", "sent 0 3", "received 3 5", "sent 3 5"]
    );
    server.signal(libc::SIGTERM);
    server.wait_exit();
}

#[test]
fn connect_over_udp_captures_each_datagram() {
    let dir = tempdir();
    let capture = dir.path().to_string_lossy().into_owned();
    let mut server = Proc::sockit(&["serve", "udp://127.0.0.1:0", "--echo", "-q"]);
    let addr = server.listening();
    let mut connect = Proc::spawn(
        crate::util::sockit_command(&[
            "connect",
            &format!("udp://{addr}"),
            "--capture",
            &capture,
            "--quit-after",
            "100ms",
        ]),
        true,
    );
    std::io::Write::write_all(connect.stdin(), b"ping\n").unwrap_or_else(|e| panic!("{e}"));
    // The answer is in before stdin ends, so the linger cannot cut it off.
    connect.wait_for_line("the echo", |l| l == "ping");
    connect.close_stdin();
    assert!(connect.wait_exit().success(), "{}", connect.report());
    let peer = addr.replace(':', "_");
    let read = |suffix: &str| {
        std::fs::read(dir.path().join(format!("conn1_{peer}.{suffix}")))
            .unwrap_or_else(|e| panic!("{suffix}: {e}; {:?}", listing(dir.path())))
    };
    assert_eq!(read("sent"), b"ping\n");
    assert_eq!(read("received"), b"ping\n");
    assert_eq!(
        index_fields(dir.path(), &peer),
        ["sent 0 5", "received 0 5"]
    );
    server.signal(libc::SIGTERM);
    server.wait_exit();
}

#[test]
fn listen_over_udp_captures_each_sender() {
    let dir = tempdir();
    let capture = dir.path().to_string_lossy().into_owned();
    let mut listen = Proc::spawn(
        crate::util::sockit_command(&["listen", "udp://127.0.0.1:0", "--capture", &capture]),
        true,
    );
    let line = crate::peers::wait_for_stderr(&listen, "listening on udp://127.0.0.1:");
    let port: u16 = line
        .lines()
        .find_map(|l| l.strip_prefix("listening on udp://127.0.0.1:"))
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or_else(|| panic!("no port in {line}"));
    let addr = format!("127.0.0.1:{port}");
    let client = udp_client();
    let peer = client
        .local_addr()
        .unwrap_or_else(|e| panic!("{e}"))
        .to_string()
        .replace(':', "_");
    client
        .send_to(b"hello listener\n", &addr)
        .unwrap_or_else(|e| panic!("{e}"));
    listen.wait_for_line("the datagram on stdout", |l| l.contains("hello listener"));
    std::io::Write::write_all(listen.stdin(), b"hi").unwrap_or_else(|e| panic!("{e}"));
    let mut buf = [0u8; 64];
    let n = client.recv(&mut buf).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(&buf[..n], b"hi");
    wait_for_capture(dir.path(), &peer, "received", b"hello listener\n", &listen);
    wait_for_capture(dir.path(), &peer, "sent", b"hi", &listen);
    assert_eq!(
        index_fields(dir.path(), &peer),
        ["received 0 15", "sent 0 2"]
    );
    listen.close_stdin();
    listen.signal(libc::SIGTERM);
    listen.wait_exit();
}

#[test]
fn relay_over_udp_captures_the_client_side() {
    let dir = tempdir();
    let capture = dir.path().to_string_lossy().into_owned();
    let mut echo = Proc::sockit(&["serve", "udp://127.0.0.1:0", "--echo", "-q"]);
    let echo_addr = echo.listening();
    let mut relay = Proc::sockit(&[
        "relay",
        "udp://127.0.0.1:0",
        &format!("udp://{echo_addr}"),
        "--capture",
        &capture,
        "-q",
    ]);
    let relay_addr = relay.listening();
    let client = udp_client();
    let peer = client
        .local_addr()
        .unwrap_or_else(|e| panic!("{e}"))
        .to_string()
        .replace(':', "_");
    assert_eq!(ask(&client, &relay_addr, b"relayed"), b"relayed");
    assert_eq!(ask(&client, &relay_addr, b""), b"");
    wait_for_capture(dir.path(), &peer, "received", b"relayed", &relay);
    poll_until(
        "two datagrams each way in the index",
        || format!("{}\n{:?}", relay.report(), index_fields(dir.path(), &peer)),
        || (index_fields(dir.path(), &peer).len() == 4).then_some(()),
    );
    assert_eq!(
        index_fields(dir.path(), &peer),
        ["received 0 7", "sent 0 7", "received 7 0", "sent 7 0"]
    );
    relay.signal(libc::SIGTERM);
    relay.wait_exit();
    echo.signal(libc::SIGTERM);
    echo.wait_exit();
}

#[test]
fn serve_over_unixgram_captures_each_sender_by_path() {
    let dir = tempdir();
    let captures = dir.path().join("caps");
    let capture = captures.to_string_lossy().into_owned();
    let server_path = dir.path().join("server.sock");
    let mut server = Proc::sockit(&[
        "serve",
        &format!("unixgram:{}", server_path.display()),
        "--echo",
        "--capture",
        &capture,
        "-q",
    ]);
    server.listening();
    let client_path = dir.path().join("client.sock");
    let client =
        std::os::unix::net::UnixDatagram::bind(&client_path).unwrap_or_else(|e| panic!("{e}"));
    client
        .set_read_timeout(Some(crate::util::TIMEOUT))
        .unwrap_or_else(|e| panic!("{e}"));
    let mut buf = [0u8; 64];
    for datagram in [&b"first"[..], b"second"] {
        client
            .send_to(datagram, &server_path)
            .unwrap_or_else(|e| panic!("{e}"));
        let n = client.recv(&mut buf).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(&buf[..n], datagram);
    }
    let peer: String = client_path
        .to_string_lossy()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    wait_for_capture(&captures, &peer, "received", b"firstsecond", &server);
    wait_for_capture(&captures, &peer, "sent", b"firstsecond", &server);
    assert_eq!(
        index_fields(&captures, &peer),
        ["received 0 5", "sent 0 5", "received 5 6", "sent 5 6"]
    );
    server.signal(libc::SIGTERM);
    server.wait_exit();
}

#[test]
fn capture_of_udp_exec_is_refused_in_one_line() {
    let dir = tempdir();
    let capture = dir.path().to_string_lossy().into_owned();
    let output = run_sockit(
        &[
            "serve",
            "udp://127.0.0.1:0",
            "--sh-exec",
            "cat",
            "--capture",
            &capture,
        ],
        None,
    );
    assert_eq!(code(&output), 2, "{}", describe(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("--capture"), "{stderr}");
}

#[test]
fn serve_and_relay_refuse_an_unusable_capture_directory_before_listening() {
    let dir = tempdir();
    let file = dir.path().join("a-file");
    std::fs::write(&file, b"x").unwrap_or_else(|e| panic!("{e}"));
    let under_a_file = file.join("caps").to_string_lossy().into_owned();
    for args in [
        &["serve", "udp://127.0.0.1:0", "--capture", &under_a_file][..],
        &[
            "relay",
            "udp://127.0.0.1:0",
            "udp://127.0.0.1:9",
            "--capture",
            &under_a_file,
        ],
    ] {
        let output = run_sockit(args, None);
        assert_eq!(code(&output), 2, "{}", describe(&output));
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
        assert!(stderr.contains("cannot write captures to"), "{stderr}");
        assert!(output.stdout.is_empty(), "{}", describe(&output));
    }
}

//! Issue 18, point 1: `sockit listen`, the listening half of nc (`nc -l 9000 > file`):
//! byte-exact files both ways against sockit, nc and ncat, a tar stream, half-close in
//! both orders, `--keep-open`, datagrams, TLS, Unix sockets, and the exit status that
//! says whether everything was delivered.

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::net::{Shutdown, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::util::{
    TIMEOUT, code, connect_tcp, describe, exit_within_timeout, run_sockit, sockit_command,
};

/// A program started in the background whose stderr is read line by line (stdout is
/// the data, so the readiness line comes on stderr).
struct Background {
    child: Child,
    label: String,
    lines: Receiver<String>,
    stderr: Arc<Mutex<String>>,
}

impl Background {
    /// Starts `cmd` with the given stdin and stdout and a piped stderr.
    fn spawn(mut cmd: Command, stdin: Stdio, stdout: Stdio) -> Background {
        let label = format!("{cmd:?}");
        cmd.stdin(stdin).stdout(stdout).stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {label}: {e}"));
        let (tx, lines) = channel();
        let stderr = Arc::new(Mutex::new(String::new()));
        if let Some(err) = child.stderr.take() {
            let sink = Arc::clone(&stderr);
            std::thread::spawn(move || {
                for line in BufReader::new(err).lines() {
                    let Ok(line) = line else { break };
                    if let Ok(mut all) = sink.lock() {
                        all.push_str(&line);
                        all.push('\n');
                    }
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
        }
        Background {
            child,
            label,
            lines,
            stderr,
        }
    }

    /// Starts `sockit listen ARGS`, waits for its readiness line and returns it with the
    /// endpoint it names.
    fn listen(args: &[&str], stdin: Stdio, stdout: Stdio) -> (Background, String) {
        let mut argv = vec!["listen"];
        argv.extend_from_slice(args);
        let mut listening = Background::spawn(sockit_command(&argv), stdin, stdout);
        let line =
            listening.wait_for_stderr("the listening line", |l| l.starts_with("listening on "));
        let endpoint = line.trim_start_matches("listening on ").to_string();
        (listening, endpoint)
    }

    /// Waits for the next stderr line matching `pred`.
    fn wait_for_stderr(&mut self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if pred(&line) => return line,
                Ok(_) => {}
                Err(_) => panic!("no {what} (exited or timed out)\n{}", self.report()),
            }
        }
    }

    /// The child's stdin, when started with a piped one.
    fn stdin(&mut self) -> &mut ChildStdin {
        match self.child.stdin.as_mut() {
            Some(stdin) => stdin,
            None => panic!("{} has no piped stdin", self.label),
        }
    }

    /// Closes the child's stdin: its end of input.
    fn close_stdin(&mut self) {
        drop(self.child.stdin.take());
    }

    /// Waits for the exit; returns the status and everything printed on stderr.
    fn finish(&mut self) -> (ExitStatus, String) {
        match exit_within_timeout(&mut self.child) {
            Ok(Some(status)) => {
                // The reader thread ends with the pipe; give it the last lines.
                while self.lines.recv_timeout(TIMEOUT).is_ok() {}
                (status, self.stderr_text())
            }
            Ok(None) => panic!("did not exit in time\n{}", self.report()),
            Err(e) => panic!("wait failed: {e}\n{}", self.report()),
        }
    }

    fn stderr_text(&self) -> String {
        self.stderr.lock().map(|s| s.clone()).unwrap_or_default()
    }

    fn report(&self) -> String {
        format!(
            "process: {}\n--- stderr ---\n{}",
            self.label,
            self.stderr_text()
        )
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `HOST:PORT` of a `tcp://…` or `tls://…` endpoint.
fn host_port(endpoint: &str) -> String {
    match endpoint.split_once("://") {
        Some((_, rest)) => rest.to_string(),
        None => panic!("not a URL-style endpoint: {endpoint}"),
    }
}

/// The port of a `HOST:PORT`.
fn port_of(endpoint: &str) -> String {
    match endpoint.rsplit_once(':') {
        Some((_, port)) => port.to_string(),
        None => panic!("no port in {endpoint}"),
    }
}

/// Writes `len` bytes of pseudo-random data (xorshift64*, seeded) to `path`.
fn random_file(path: &Path, len: usize, seed: u64) {
    let file = File::create(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut out = BufWriter::with_capacity(1 << 20, file);
    let mut state = seed | 1;
    let mut left = len;
    while left > 0 {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        let word = state.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes();
        let n = left.min(8);
        out.write_all(&word[..n]).unwrap_or_else(|e| panic!("{e}"));
        left -= n;
    }
    out.flush().unwrap_or_else(|e| panic!("{e}"));
}

/// Panics unless the two files hold the same bytes, naming the first difference.
fn assert_same_file(expected: &Path, actual: &Path) {
    let open = |p: &Path| {
        BufReader::with_capacity(
            1 << 20,
            File::open(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())),
        )
    };
    let (mut a, mut b) = (open(expected), open(actual));
    let (mut buf_a, mut buf_b) = (vec![0u8; 1 << 16], vec![0u8; 1 << 16]);
    let mut offset = 0u64;
    loop {
        let n = read_full(&mut a, &mut buf_a);
        let m = read_full(&mut b, &mut buf_b);
        if let Some(i) = buf_a[..n].iter().zip(&buf_b[..m]).position(|(x, y)| x != y) {
            panic!(
                "{} differs from {} at byte {}",
                actual.display(),
                expected.display(),
                offset + i as u64
            );
        }
        assert_eq!(
            n,
            m,
            "{} has a different length than {} (they part at byte {})",
            actual.display(),
            expected.display(),
            offset + n.min(m) as u64
        );
        if n == 0 {
            return;
        }
        offset += n as u64;
    }
}

/// Reads until `buf` is full or the reader ends.
fn read_full(reader: &mut impl Read, buf: &mut [u8]) -> usize {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) => panic!("read: {e}"),
        }
    }
    filled
}

fn file_in(path: &Path) -> Stdio {
    Stdio::from(File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
}

fn file_out(path: &Path) -> Stdio {
    Stdio::from(File::create(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
}

fn arg(path: &Path) -> &str {
    path.to_str()
        .unwrap_or_else(|| panic!("non-UTF-8 temp path {}", path.display()))
}

/// Runs a client program to completion with stdin and stdout from files.
fn run_client(program: &Path, args: &[&str], stdin: Stdio, stdout: Stdio) {
    let mut cmd = Command::new(program);
    cmd.args(args).env("NO_COLOR", "1");
    let mut client = Background::spawn(cmd, stdin, stdout);
    let (status, stderr) = client.finish();
    assert!(
        status.success(),
        "{} {args:?} failed: {status}\n{stderr}",
        program.display()
    );
}

/// 100 MB of random data, the size issue 18 names for every transfer, with sockit or a
/// peer on the other end.
const BIG: usize = 100 * 1024 * 1024;

/// Where the data comes from and goes to in one transfer.
struct Transfer {
    dir: tempfile::TempDir,
    input: PathBuf,
    output: PathBuf,
}

impl Transfer {
    fn new(len: usize, seed: u64) -> Transfer {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let input = dir.path().join("in");
        let output = dir.path().join("out");
        random_file(&input, len, seed);
        Transfer { dir, input, output }
    }
}

/// `sockit listen … > out` while CLIENT sends `in`: out is in, and listen exits 0.
fn receive_from(client: &Path, args: impl Fn(&str) -> Vec<String>, len: usize) {
    let t = Transfer::new(len, 0x5eed_0001);
    let (mut listening, endpoint) =
        Background::listen(&["127.0.0.1:0"], Stdio::null(), file_out(&t.output));
    let args = args(&host_port(&endpoint));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    run_client(client, &args, file_in(&t.input), Stdio::null());
    let (status, stderr) = listening.finish();
    assert!(status.success(), "listen failed: {status}\n{stderr}");
    assert_same_file(&t.input, &t.output);
}

/// `sockit listen … < in` while CLIENT writes what it receives to out.
fn send_to(client: &Path, args: impl Fn(&str) -> Vec<String>, len: usize) {
    let t = Transfer::new(len, 0x5eed_0002);
    let (mut listening, endpoint) =
        Background::listen(&["127.0.0.1:0"], file_in(&t.input), Stdio::null());
    let args = args(&host_port(&endpoint));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    run_client(client, &args, Stdio::null(), file_out(&t.output));
    let (status, stderr) = listening.finish();
    assert!(status.success(), "listen failed: {status}\n{stderr}");
    assert_same_file(&t.input, &t.output);
}

fn sockit_connect(addr: &str) -> Vec<String> {
    vec!["connect".into(), addr.into()]
}

fn nc_n(addr: &str) -> Vec<String> {
    let port = port_of(addr);
    vec!["-N".into(), "127.0.0.1".into(), port]
}

fn ncat(addr: &str) -> Vec<String> {
    let port = port_of(addr);
    vec!["127.0.0.1".into(), port]
}

/// `sockit listen PORT > out` with `sockit connect 127.0.0.1:PORT < in`, 100 MB.
#[test]
fn listen_to_a_file_receives_100_mb_from_connect_byte_exact() {
    receive_from(&crate::util::sockit_bin(), sockit_connect, BIG);
}

/// `sockit listen PORT < in` with `sockit connect 127.0.0.1:PORT > out`, 100 MB.
#[test]
fn listen_from_a_file_sends_100_mb_to_connect_byte_exact() {
    send_to(&crate::util::sockit_bin(), sockit_connect, BIG);
}

/// `nc -N 127.0.0.1 PORT < in` into `sockit listen > out`, and back the other way.
#[test]
fn files_go_both_ways_with_nc() {
    receive_from(Path::new("nc"), nc_n, BIG);
    send_to(Path::new("nc"), nc_n, BIG);
}

/// `ncat 127.0.0.1 PORT < in` into `sockit listen > out`, and back the other way.
#[test]
fn files_go_both_ways_with_ncat() {
    receive_from(Path::new("ncat"), ncat, BIG);
    send_to(Path::new("ncat"), ncat, BIG);
}

/// `tar c dir | sockit connect …` into `sockit listen … | tar x` reproduces the tree.
#[test]
fn a_tar_stream_through_listen_reproduces_the_tree() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let source = dir.path().join("source");
    let target = dir.path().join("target");
    std::fs::create_dir_all(source.join("sub/deeper")).unwrap_or_else(|e| panic!("{e}"));
    std::fs::create_dir_all(&target).unwrap_or_else(|e| panic!("{e}"));
    random_file(&source.join("big.bin"), 3 * 1024 * 1024 + 17, 7);
    std::fs::write(source.join("sub/notes.txt"), "hello\n").unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(source.join("sub/deeper/empty"), "").unwrap_or_else(|e| panic!("{e}"));
    let sockit = crate::util::sockit_bin();
    let mut receive = Command::new("sh");
    receive.arg("-c").arg(format!(
        "'{}' listen 127.0.0.1:0 < /dev/null | tar x -C '{}'",
        sockit.display(),
        target.display()
    ));
    let mut receiver = Background::spawn(receive, Stdio::null(), Stdio::null());
    let line = receiver.wait_for_stderr("the listening line", |l| l.starts_with("listening on "));
    let addr = host_port(line.trim_start_matches("listening on "));
    let mut send = Command::new("sh");
    send.arg("-c").arg(format!(
        "tar c -C '{}' . | '{}' connect {addr}",
        source.display(),
        sockit.display()
    ));
    let mut sender = Background::spawn(send, Stdio::null(), Stdio::null());
    let (status, stderr) = sender.finish();
    assert!(status.success(), "sender: {status}\n{stderr}");
    let (status, stderr) = receiver.finish();
    assert!(status.success(), "receiver: {status}\n{stderr}");
    for file in ["big.bin", "sub/notes.txt", "sub/deeper/empty"] {
        assert_same_file(&source.join(file), &target.join(file));
    }
}

/// Our end of stdin reaches the client as end of data, and what it sends after that is
/// still printed; the exit is 0 once the client closes too.
#[test]
fn stdin_ending_first_half_closes_and_the_reply_is_still_printed() {
    let (mut listening, endpoint) =
        Background::listen(&["127.0.0.1:0"], Stdio::piped(), Stdio::piped());
    let mut client = connect_tcp(&host_port(&endpoint));
    listening
        .stdin()
        .write_all(b"question\n")
        .unwrap_or_else(|e| panic!("{e}"));
    listening.close_stdin();
    let mut got = Vec::new();
    client
        .read_to_end(&mut got)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        got, b"question\n",
        "the client reads stdin, then end of data"
    );
    client
        .write_all(b"answer after your EOF\n")
        .unwrap_or_else(|e| panic!("{e}"));
    drop(client);
    let mut out = String::new();
    if let Some(mut stdout) = listening.child.stdout.take() {
        stdout
            .read_to_string(&mut out)
            .unwrap_or_else(|e| panic!("{e}"));
    }
    let (status, stderr) = listening.finish();
    assert_eq!(out, "answer after your EOF\n");
    assert!(status.success(), "{status}\n{stderr}");
}

/// The client closing first does not end the conversation: the rest of stdin still goes
/// to it (the client may only have closed its sending side), then listen exits 0.
#[test]
fn the_client_closing_first_still_gets_the_rest_of_stdin() {
    let (mut listening, endpoint) =
        Background::listen(&["127.0.0.1:0"], Stdio::piped(), Stdio::piped());
    let mut client = connect_tcp(&host_port(&endpoint));
    client
        .write_all(b"all I have\n")
        .unwrap_or_else(|e| panic!("{e}"));
    client
        .shutdown(Shutdown::Write)
        .unwrap_or_else(|e| panic!("{e}"));
    listening.wait_for_stderr("the notice that the client closed its side", |l| {
        l.contains("closed its side")
    });
    listening
        .stdin()
        .write_all(b"late data\n")
        .unwrap_or_else(|e| panic!("{e}"));
    listening.close_stdin();
    let mut got = Vec::new();
    client
        .read_to_end(&mut got)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(got, b"late data\n");
    let mut out = String::new();
    if let Some(mut stdout) = listening.child.stdout.take() {
        stdout
            .read_to_string(&mut out)
            .unwrap_or_else(|e| panic!("{e}"));
    }
    let (status, stderr) = listening.finish();
    assert_eq!(out, "all I have\n");
    assert!(status.success(), "{status}\n{stderr}");
}

/// A client that resets in the middle: exit 1, and one line that says how many bytes
/// arrived, which is exactly what the output file holds.
#[test]
fn a_client_reset_mid_transfer_exits_1_and_says_how_many_bytes_arrived() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let output = dir.path().join("out");
    let (mut listening, endpoint) =
        Background::listen(&["127.0.0.1:0"], Stdio::null(), file_out(&output));
    let mut client = connect_tcp(&host_port(&endpoint));
    client
        .write_all(&vec![b'x'; 1 << 20])
        .unwrap_or_else(|e| panic!("{e}"));
    // SO_LINGER 0: close sends a reset instead of the end of data.
    socket2::SockRef::from(&client)
        .set_linger(Some(std::time::Duration::ZERO))
        .unwrap_or_else(|e| panic!("{e}"));
    drop(client);
    let (status, stderr) = listening.finish();
    assert_eq!(status.code(), Some(1), "{stderr}");
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("error: "))
        .collect();
    assert_eq!(errors.len(), 1, "one error line: {stderr}");
    let written = std::fs::metadata(&output)
        .map(|m| m.len())
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(errors[0].contains("reset"), "{stderr}");
    assert!(
        errors[0].contains(&format!(
            "; {written} bytes received (all written to stdout), 0 bytes of stdin sent"
        )),
        "the line names the {written} bytes in the file: {stderr}"
    );
}

/// A port in use: one clear line and exit 6, as `serve`.
#[test]
fn listen_on_a_port_in_use_is_one_line_and_exit_6() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
    let addr = taken
        .local_addr()
        .unwrap_or_else(|e| panic!("{e}"))
        .to_string();
    let output = run_sockit(&["listen", &addr], Some(b""));
    assert_eq!(code(&output), 6, "{}", describe(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.lines().count(), 1, "{}", describe(&output));
    assert!(
        stderr.starts_with("error: ") && stderr.contains("already in use"),
        "{stderr}"
    );
    assert!(output.stdout.is_empty());
}

/// `--keep-open`: clients at once, each one's bytes to stdout, stdin to all of them, and
/// a client after they have gone; a signal stops it with exit 0.
#[test]
fn keep_open_serves_clients_at_once_and_broadcasts_stdin() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let output = dir.path().join("out");
    let (mut listening, endpoint) = Background::listen(
        &["127.0.0.1:0", "--keep-open"],
        Stdio::piped(),
        file_out(&output),
    );
    let addr = host_port(&endpoint);
    let mut first = connect_tcp(&addr);
    let mut second = connect_tcp(&addr);
    for _ in 0..2 {
        listening.wait_for_stderr("a client connected", |l| l.contains("connected"));
    }
    listening
        .stdin()
        .write_all(b"to everyone\n")
        .unwrap_or_else(|e| panic!("{e}"));
    listening.stdin().flush().unwrap_or_else(|e| panic!("{e}"));
    for client in [&mut first, &mut second] {
        let mut got = [0u8; 12];
        client
            .read_exact(&mut got)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(&got, b"to everyone\n");
    }
    first
        .write_all(&[b'A'; 1000])
        .unwrap_or_else(|e| panic!("{e}"));
    second
        .write_all(&[b'B'; 1000])
        .unwrap_or_else(|e| panic!("{e}"));
    drop(first);
    drop(second);
    for _ in 0..2 {
        listening.wait_for_stderr("a client closing", |l| l.contains(" closed: "));
    }
    let mut third = connect_tcp(&addr);
    third.write_all(b"CCC").unwrap_or_else(|e| panic!("{e}"));
    drop(third);
    listening.wait_for_stderr("the third client closing", |l| l.contains(" closed: "));
    crate::util::send_signal(&listening.child, libc::SIGTERM);
    let (status, stderr) = listening.finish();
    assert!(status.success(), "{status}\n{stderr}");
    let out = std::fs::read(&output).unwrap_or_else(|e| panic!("{e}"));
    let count = |byte| out.iter().filter(|&&b| b == byte).count();
    assert_eq!(
        (count(b'A'), count(b'B'), count(b'C'), out.len()),
        (1000, 1000, 3, 2003)
    );
}

/// UDP: the first sender is the peer, stdin goes to it as datagrams, another sender's
/// datagrams are ignored; after stdin ends listen lingers, then exits 0.
#[test]
fn udp_takes_the_first_sender_as_the_peer_and_ignores_others() {
    let (mut listening, endpoint) = Background::listen(
        &["udp://127.0.0.1:0", "--idle-timeout", "1s"],
        Stdio::piped(),
        Stdio::piped(),
    );
    let addr = host_port(&endpoint);
    let peer = UdpSocket::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
    let other = UdpSocket::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
    peer.set_read_timeout(Some(TIMEOUT))
        .unwrap_or_else(|e| panic!("{e}"));
    peer.send_to(b"first ", &addr)
        .unwrap_or_else(|e| panic!("{e}"));
    listening.wait_for_stderr("the peer chosen", |l| l.contains("is a peer"));
    other
        .send_to(b"intruder ", &addr)
        .unwrap_or_else(|e| panic!("{e}"));
    peer.send_to(b"second", &addr)
        .unwrap_or_else(|e| panic!("{e}"));
    listening
        .stdin()
        .write_all(b"reply")
        .unwrap_or_else(|e| panic!("{e}"));
    listening.close_stdin();
    let mut buf = [0u8; 64];
    let n = peer.recv(&mut buf).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(&buf[..n], b"reply");
    let mut out = String::new();
    if let Some(mut stdout) = listening.child.stdout.take() {
        stdout
            .read_to_string(&mut out)
            .unwrap_or_else(|e| panic!("{e}"));
    }
    let (status, stderr) = listening.finish();
    assert!(status.success(), "{status}\n{stderr}");
    assert_eq!(out, "first second");
}

/// `ncat --ssl` sends a file into `sockit listen tls://…` (self-signed, fingerprint
/// printed), and `sockit connect --insecure` receives one from it.
#[test]
fn tls_files_go_both_ways_with_ncat_and_connect() {
    let t = Transfer::new(4 * 1024 * 1024, 3);
    let mut listen = sockit_command(&["listen", "tls://127.0.0.1:0"]);
    listen.stdin(Stdio::null());
    let mut listening = Background::spawn(listen, Stdio::null(), file_out(&t.output));
    let notice = listening.wait_for_stderr("the certificate notice", |l| l.starts_with("tls: "));
    assert!(notice.contains("SHA-256 fingerprint"), "{notice}");
    let line = listening.wait_for_stderr("the listening line", |l| l.starts_with("listening on "));
    let port = port_of(line.trim_start_matches("listening on "));
    run_client(
        Path::new("ncat"),
        &["--ssl", "127.0.0.1", &port],
        file_in(&t.input),
        Stdio::null(),
    );
    let (status, stderr) = listening.finish();
    assert!(status.success(), "{status}\n{stderr}");
    assert_same_file(&t.input, &t.output);

    let back = t.dir.path().join("back");
    let (mut listening, endpoint) =
        Background::listen(&["tls://127.0.0.1:0"], file_in(&t.input), Stdio::null());
    run_client(
        &crate::util::sockit_bin(),
        &["connect", "--insecure", &endpoint],
        Stdio::null(),
        file_out(&back),
    );
    let (status, stderr) = listening.finish();
    assert!(status.success(), "{status}\n{stderr}");
    assert_same_file(&t.input, &back);
}

/// Unix stream and datagram sockets, and IPv6: a file (or a datagram) through each; the
/// Unix socket file is gone afterwards.
#[test]
fn unix_unixgram_and_ipv6_listeners_carry_the_bytes() {
    let t = Transfer::new(1024 * 1024, 4);
    let sock = t.dir.path().join("s.sock");
    let endpoint = format!("unix:{}", arg(&sock));
    let (mut listening, _) = Background::listen(&[&endpoint], Stdio::null(), file_out(&t.output));
    run_client(
        &crate::util::sockit_bin(),
        &["connect", &endpoint],
        file_in(&t.input),
        Stdio::null(),
    );
    let (status, stderr) = listening.finish();
    assert!(status.success(), "{status}\n{stderr}");
    assert_same_file(&t.input, &t.output);
    assert!(!sock.exists(), "the socket file is removed");

    let v6_out = t.dir.path().join("v6");
    let (mut listening, endpoint) =
        Background::listen(&["tcp://[::1]:0"], Stdio::null(), file_out(&v6_out));
    assert!(endpoint.starts_with("tcp://[::1]:"), "{endpoint}");
    run_client(
        &crate::util::sockit_bin(),
        &["connect", &endpoint],
        file_in(&t.input),
        Stdio::null(),
    );
    let (status, stderr) = listening.finish();
    assert!(status.success(), "{status}\n{stderr}");
    assert_same_file(&t.input, &v6_out);

    let gram = t.dir.path().join("g.sock");
    let endpoint = format!("unixgram:{}", arg(&gram));
    let (mut listening, _) = Background::listen(&[&endpoint], Stdio::piped(), Stdio::piped());
    listening
        .stdin()
        .write_all(b"pong")
        .unwrap_or_else(|e| panic!("{e}"));
    listening.close_stdin();
    let reply = run_sockit(
        &["connect", &endpoint, "--idle-timeout", "1s"],
        Some(b"ping"),
    );
    assert_eq!(code(&reply), 0, "{}", describe(&reply));
    assert_eq!(reply.stdout, b"pong");
    let mut out = String::new();
    if let Some(mut stdout) = listening.child.stdout.take() {
        stdout
            .read_to_string(&mut out)
            .unwrap_or_else(|e| panic!("{e}"));
    }
    let (status, stderr) = listening.finish();
    assert!(status.success(), "{status}\n{stderr}");
    assert_eq!(out, "ping");
}

/// A client that closes completely while stdin is still being sent: listen learns it by
/// writing, and that is not success, since part of stdin never reached anyone.
#[test]
fn a_client_gone_before_all_of_stdin_was_sent_is_not_success() {
    let (mut listening, endpoint) =
        Background::listen(&["127.0.0.1:0"], Stdio::piped(), Stdio::null());
    let client = connect_tcp(&host_port(&endpoint));
    client
        .shutdown(Shutdown::Write)
        .unwrap_or_else(|e| panic!("{e}"));
    listening.wait_for_stderr("the notice that the client closed its side", |l| {
        l.contains("closed its side")
    });
    drop(client);
    let Some(mut stdin) = listening.child.stdin.take() else {
        panic!("no stdin")
    };
    let feeder = std::thread::spawn(move || {
        // Stops with a broken pipe once listen has exited; bounded either way.
        for _ in 0..64 {
            if stdin.write_all(&[b's'; 1 << 20]).is_err() {
                break;
            }
        }
    });
    let (status, stderr) = listening.finish();
    let _ = feeder.join();
    assert_eq!(status.code(), Some(1), "{stderr}");
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("error: "))
        .collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(
        errors[0].contains("0 bytes received") && errors[0].contains("bytes of stdin sent"),
        "{stderr}"
    );
}

/// `sockit listen -k` as the `ncat -lk` / `socat TCP-LISTEN:…,fork -` collector: an
/// `ncat` client and a `socat` client each send a file; stdout holds both, whole.
#[test]
fn keep_open_collects_files_from_ncat_and_socat_clients() {
    let t = Transfer::new(2 * 1024 * 1024, 9);
    let second = t.dir.path().join("second");
    random_file(&second, 1024 * 1024 + 3, 10);
    let (mut listening, endpoint) =
        Background::listen(&["127.0.0.1:0", "-k"], Stdio::piped(), file_out(&t.output));
    let port = port_of(&host_port(&endpoint));
    run_client(
        Path::new("ncat"),
        &["127.0.0.1", &port],
        file_in(&t.input),
        Stdio::null(),
    );
    listening.wait_for_stderr("the ncat client closing", |l| l.contains(" closed: "));
    let socat_target = format!("TCP:127.0.0.1:{port}");
    run_client(
        Path::new("socat"),
        &["-u", "STDIN", &socat_target],
        file_in(&second),
        Stdio::null(),
    );
    listening.wait_for_stderr("the socat client closing", |l| l.contains(" closed: "));
    crate::util::send_signal(&listening.child, libc::SIGTERM);
    let (status, stderr) = listening.finish();
    assert!(status.success(), "{status}\n{stderr}");
    let expected = t.dir.path().join("expected");
    let mut both = std::fs::read(&t.input).unwrap_or_else(|e| panic!("{e}"));
    both.extend(std::fs::read(&second).unwrap_or_else(|e| panic!("{e}")));
    std::fs::write(&expected, both).unwrap_or_else(|e| panic!("{e}"));
    assert_same_file(&expected, &t.output);
}

/// `sockit listen udp://…` as `nc -u -l`: a datagram from `nc -u` reaches stdout; with
/// stdin already ended, listen exits 0 after the quiet spell.
#[test]
fn udp_listener_receives_from_nc_u() {
    let (mut listening, endpoint) = Background::listen(
        &["udp://127.0.0.1:0", "--idle-timeout", "1s"],
        Stdio::null(),
        Stdio::piped(),
    );
    let port = port_of(&host_port(&endpoint));
    run_client(
        Path::new("sh"),
        &[
            "-c",
            &format!("printf 'over udp' | nc -u -w 1 127.0.0.1 {port}"),
        ],
        Stdio::null(),
        Stdio::null(),
    );
    let mut out = String::new();
    if let Some(mut stdout) = listening.child.stdout.take() {
        stdout
            .read_to_string(&mut out)
            .unwrap_or_else(|e| panic!("{e}"));
    }
    let (status, stderr) = listening.finish();
    assert!(status.success(), "{status}\n{stderr}");
    assert_eq!(out, "over udp");
}

/// Issue 20 (hostile clients), `listen udp://… --keep-open`: a flood from 1,100 source
/// ports does not grow the peer list past its 1,024 cap (the idlest are forgotten, and
/// stdin goes to at most 1,024 peers), and an honest sender after the flood still gets its
/// bytes on stdout and stdin's broadcast.
#[test]
fn udp_keep_open_peers_stay_bounded_under_a_source_port_flood() {
    const FLOOD: usize = 1_100;
    const CAP: usize = 1_024;
    let (mut listening, endpoint) = Background::listen(
        &["udp://127.0.0.1:0", "--keep-open"],
        Stdio::piped(),
        Stdio::piped(),
    );
    let addr = host_port(&endpoint);
    let printed = Arc::new(Mutex::new(Vec::new()));
    if let Some(mut stdout) = listening.child.stdout.take() {
        let sink = Arc::clone(&printed);
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n @ 1..) = stdout.read(&mut buf) {
                if let Ok(mut all) = sink.lock() {
                    all.extend_from_slice(&buf[..n]);
                }
            }
        });
    }
    let wait_printed = |what: &str, pred: &dyn Fn(&[u8]) -> bool| {
        let deadline = Instant::now() + TIMEOUT;
        while !printed.lock().map(|p| pred(&p)).unwrap_or(false) {
            assert!(Instant::now() < deadline, "stdout never showed {what}");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    };
    let mut flood = Vec::with_capacity(FLOOD);
    for sent in 1..=FLOOD {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
        socket
            .send_to(b"f", &addr)
            .unwrap_or_else(|e| panic!("{e}"));
        flood.push(socket);
        // In steps, so the listener's receive buffer never overflows.
        if sent % 64 == 0 || sent == FLOOD {
            wait_printed("the flood", &|p| p.len() >= sent);
        }
    }
    let honest = UdpSocket::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
    honest
        .set_read_timeout(Some(TIMEOUT))
        .unwrap_or_else(|e| panic!("{e}"));
    honest
        .send_to(b"honest", &addr)
        .unwrap_or_else(|e| panic!("{e}"));
    wait_printed("the honest bytes", &|p| p.ends_with(b"honest"));
    listening
        .stdin()
        .write_all(b"to all\n")
        .unwrap_or_else(|e| panic!("{e}"));
    listening.stdin().flush().unwrap_or_else(|e| panic!("{e}"));
    let mut buf = [0u8; 64];
    let n = honest.recv(&mut buf).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(&buf[..n], b"to all\n");
    // After the exit every send of the broadcast is done: count who got it.
    crate::util::send_signal(&listening.child, libc::SIGTERM);
    let (status, stderr) = listening.finish();
    assert!(status.success(), "{status}\n{stderr}");
    let reached = flood
        .iter()
        .filter(|socket| {
            socket
                .set_nonblocking(true)
                .unwrap_or_else(|e| panic!("{e}"));
            socket.recv(&mut buf).is_ok()
        })
        .count();
    assert!(
        reached < CAP,
        "stdin reached {reached} flood peers, more than the cap of {CAP} (with the honest one)"
    );
    assert!(stderr.contains("forgot the peer"), "{stderr}");
}

//! Issue 3, server modes: `--exec` / `--sh-exec` (half-close, bounded buffers, no zombies,
//! killed on disconnect and shutdown), `--chat` (three clients, an abrupt leave, a client
//! too slow to read), `--discard` counting, and ncat / nc / socat as clients.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown as NetShutdown, TcpStream};
use std::os::unix::net::UnixStream;
use std::process::Output;
use std::time::Duration;

use crate::procs::{self, eventually, wait_no_children, wait_some_children};
use crate::util::{Proc, TIMEOUT, code, connect_tcp as connect, describe, run_sockit};

/// Starts `sockit serve ENDPOINT ARGS --log text` and returns it with its bound address
/// (`127.0.0.1:PORT`, or the Unix path).
fn serve(endpoint: &str, args: &[&str]) -> (Proc, String) {
    let mut argv = vec!["serve", endpoint, "--log", "text"];
    argv.extend_from_slice(args);
    let mut server = Proc::sockit(&argv);
    let line = server.wait_for_line("the listening line", |l| l.contains(" listening "));
    let endpoint = line
        .rsplit("endpoint=")
        .next()
        .unwrap_or_else(|| panic!("no endpoint in {line:?}"));
    let addr = endpoint
        .split_once("://")
        .map_or_else(|| endpoint.trim_start_matches("unix:"), |(_, a)| a)
        .to_string();
    (server, addr)
}

/// Runs a peer program (ncat, nc, socat) with `input` on stdin, bounded by [`TIMEOUT`].
fn run_peer(program: &str, args: &[&str], input: &[u8]) -> Output {
    let mut cmd = assert_cmd::Command::new(program);
    cmd.args(args).timeout(TIMEOUT).write_stdin(input.to_vec());
    cmd.output().unwrap_or_else(|e| {
        panic!("cannot run {program} (is it installed? .ci/run installs it): {e}")
    })
}

/// Reads until end-of-file or an error, keeping what arrived before either.
fn read_all(stream: &mut impl Read) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return out,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
}

/// Waits for the server's `closed` event and returns its reason.
fn closed_reason(server: &mut Proc) -> String {
    let line = server.wait_for_line("a closed event", |l| l.contains(" closed conn="));
    line.split("reason=\"")
        .nth(1)
        .map(|r| r.trim_end_matches('"').to_string())
        .unwrap_or_else(|| panic!("no reason in {line:?}"))
}

#[test]
fn exec_cat_serves_ncat_nc_and_socat_and_leaves_no_process() {
    let (mut server, addr) = serve("tcp://127.0.0.1:0", &["--exec", "cat"]);
    let (host, port) = addr.rsplit_once(':').unwrap_or_else(|| panic!("{addr}"));
    let socat_target = format!("TCP:{addr}");
    let input = b"line one\nline two\n";
    let peers: [(&str, Vec<&str>); 3] = [
        ("ncat", vec![host, port]),
        ("nc", vec!["-N", host, port]),
        ("socat", vec!["-", &socat_target]),
    ];
    for (program, args) in &peers {
        let output = run_peer(program, args, input);
        assert_eq!(
            code(&output),
            0,
            "{program}: {}\n{}",
            describe(&output),
            server.report()
        );
        assert_eq!(
            String::from_utf8_lossy(&output.stdout),
            "line one\nline two\n",
            "{program} got a different echo\n{}",
            server.report()
        );
        assert_eq!(closed_reason(&mut server), "program exited with status 0");
    }
    wait_no_children(server.pid(), &|| server.report());
}

#[test]
fn half_close_client_shuts_down_writing_and_still_receives_all_output() {
    // wc prints only after end-of-file on its stdin: the client's half-close must reach it,
    // and its answer must still reach the half-closed client.
    let (mut server, addr) = serve("tcp://127.0.0.1:0", &["--exec", "wc", "-c"]);
    let mut client = connect(&addr);
    client
        .write_all(&vec![b'x'; 300_000])
        .unwrap_or_else(|e| panic!("{e}"));
    client
        .shutdown(NetShutdown::Write)
        .unwrap_or_else(|e| panic!("{e}"));
    let answer = read_all(&mut client);
    assert_eq!(
        String::from_utf8_lossy(&answer).trim(),
        "300000",
        "{}",
        server.report()
    );
    assert_eq!(closed_reason(&mut server), "program exited with status 0");
    wait_no_children(server.pid(), &|| server.report());
}

#[test]
fn half_close_over_unix_with_more_data_than_any_buffer() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let path = dir.path().join("cat.sock");
    let (server, _) = serve(&format!("unix:{}", path.display()), &["--exec", "cat"]);
    let client = UnixStream::connect(&path).unwrap_or_else(|e| panic!("{e}"));
    client.set_read_timeout(Some(TIMEOUT)).ok();
    let mut writer = client.try_clone().unwrap_or_else(|e| panic!("{e}"));
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 253) as u8).collect();
    let sent = data.clone();
    let sender = std::thread::spawn(move || {
        writer.write_all(&sent)?;
        writer.shutdown(NetShutdown::Write)
    });
    let mut reader = client;
    let back = read_all(&mut reader);
    sender
        .join()
        .unwrap_or_else(|_| panic!("sender panicked"))
        .unwrap_or_else(|e| panic!("sending: {e}\n{}", server.report()));
    assert_eq!(back.len(), data.len(), "{}", server.report());
    assert!(back == data, "cat returned different bytes");
    wait_no_children(server.pid(), &|| server.report());
}

#[test]
fn a_program_that_exits_early_closes_the_connection_and_is_reaped() {
    // The client never closes its side: the program's exit alone ends the exchange.
    let (mut server, addr) = serve(
        "tcp://127.0.0.1:0",
        &["--sh-exec", "echo \"bye $SOCKIT_PEER_ADDR\""],
    );
    let mut client = connect(&addr);
    assert_eq!(read_all(&mut client), b"bye 127.0.0.1\n");
    drop(client);
    assert_eq!(closed_reason(&mut server), "program exited with status 0");

    // A program that exits while the client is still sending lots: the client gets the
    // output and a clean end, the program is reaped.
    let (mut server, addr) = serve("tcp://127.0.0.1:0", &["--exec", "head", "-c", "5"]);
    let client = connect(&addr);
    let mut writer = client.try_clone().unwrap_or_else(|e| panic!("{e}"));
    let sender = std::thread::spawn(move || {
        let chunk: Vec<u8> = b"0123456789".repeat(10_000);
        for _ in 0..20 {
            if writer.write_all(&chunk).is_err() {
                break;
            }
        }
        let _ = writer.shutdown(NetShutdown::Write);
    });
    let mut reader = client;
    assert_eq!(read_all(&mut reader), b"01234", "{}", server.report());
    sender.join().unwrap_or_else(|_| panic!("sender panicked"));
    assert_eq!(closed_reason(&mut server), "program exited with status 0");
    wait_no_children(server.pid(), &|| server.report());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_program_that_never_reads_bounds_what_the_server_buffers() {
    use tokio::io::AsyncWriteExt;
    let (mut server, addr) = serve(
        "tcp://127.0.0.1:0",
        &["--idle-timeout", "3s", "--exec", "sleep", "1000"],
    );
    let mut client = tokio::net::TcpStream::connect(&addr)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    // If the server buffered without bound, every write would complete and we would reach
    // the cap; a bounded server stops reading, TCP pushes back, and a write stalls.
    const CAP: usize = 256 * 1024 * 1024;
    let chunk = vec![b'z'; 64 * 1024];
    let mut accepted = 0;
    while accepted < CAP {
        match tokio::time::timeout(Duration::from_millis(500), client.write(&chunk)).await {
            Ok(Ok(n)) => accepted += n,
            Ok(Err(e)) => panic!("write failed: {e}\n{}", server.report()),
            Err(_) => break,
        }
    }
    assert!(
        accepted < 64 * 1024 * 1024,
        "the server kept accepting ({accepted} bytes) from a client whose program never reads"
    );
    let running = wait_some_children(server.pid(), &|| server.report());
    assert!(
        running.iter().any(|p| p.comm == "sleep"),
        "expected the sleep program, found {running:?}"
    );
    // The client goes away; nothing moves any more, so the idle timeout ends it.
    drop(client);
    let reason = closed_reason(&mut server);
    assert!(reason.starts_with("idle for 3s"), "{reason}");
    assert!(reason.contains("program killed by the server"), "{reason}");
    wait_no_children(server.pid(), &|| server.report());
}

#[test]
fn a_client_leaving_mid_output_gets_its_program_killed() {
    // No idle timeout: only the disconnect can end this.
    let (mut server, addr) = serve(
        "tcp://127.0.0.1:0",
        &["--idle-timeout", "0", "--exec", "yes"],
    );
    let mut client = connect(&addr);
    let mut got = 0;
    let mut buf = [0u8; 16384];
    while got < 200_000 {
        match client.read(&mut buf) {
            Ok(0) => panic!("the server closed early\n{}", server.report()),
            Ok(n) => got += n,
            Err(e) => panic!("{e}\n{}", server.report()),
        }
    }
    let running = wait_some_children(server.pid(), &|| server.report());
    assert!(running.iter().any(|p| p.comm == "yes"), "{running:?}");
    // Abrupt: unread data pending, so the kernel sends a reset.
    socket2::SockRef::from(&client)
        .set_linger(Some(Duration::ZERO))
        .unwrap_or_else(|e| panic!("{e}"));
    drop(client);
    let reason = closed_reason(&mut server);
    assert!(
        reason.contains("program killed by the server"),
        "{reason}\n{}",
        server.report()
    );
    wait_no_children(server.pid(), &|| server.report());
}

#[test]
fn sigterm_kills_every_program_and_what_it_started() {
    let (mut server, addr) = serve("tcp://127.0.0.1:0", &["--sh-exec", "sleep 1000 | cat"]);
    let _client = connect(&addr);
    // sh, plus the two commands of its pipeline.
    let mut started = Vec::new();
    eventually("the shell and its pipeline", || {
        started = procs::descendants(server.pid());
        (started.len() < 3).then(|| format!("{started:?}"))
    });
    server.signal(libc::SIGTERM);
    let status = server.wait_exit();
    assert!(status.success(), "{}", server.report());
    assert!(
        server
            .stdout
            .iter()
            .any(|l| l.contains("reason=\"server shutting down; program killed by the server")),
        "{}",
        server.report()
    );
    // Were any left, they would now be orphans adopted by init, still running.
    eventually("every process the server started to be gone", || {
        let left: Vec<_> = started.iter().filter(|p| procs::exists(p.pid)).collect();
        (!left.is_empty()).then(|| format!("{left:?}"))
    });
}

#[test]
fn stderr_can_go_to_the_client_and_a_missing_program_is_a_usage_error() {
    let (_server, addr) = serve(
        "tcp://127.0.0.1:0",
        &[
            "--exec-stderr",
            "socket",
            "--sh-exec",
            "echo out; echo oops >&2",
        ],
    );
    let mut client = connect(&addr);
    assert_eq!(read_all(&mut client), b"out\noops\n");

    let output = run_sockit(
        &[
            "serve",
            "tcp://127.0.0.1:0",
            "--exec",
            "sockit-no-such-program",
        ],
        None,
    );
    assert_eq!(code(&output), 2, "{}", describe(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("not found in PATH"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_on_udp_runs_once_per_datagram_and_replies_with_its_output() {
    let (server, addr) = serve("udp://127.0.0.1:0", &["--exec", "tr", "a-z", "A-Z"]);
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    socket
        .connect(&addr)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let mut buf = [0u8; 1024];
    let mut reply = None;
    // UDP may drop on a busy machine: a bounded number of tries.
    for _ in 0..5 {
        socket
            .send(b"hello")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        if let Ok(n) = tokio::time::timeout(Duration::from_secs(3), socket.recv(&mut buf)).await {
            reply = Some(buf[..n.unwrap_or_else(|e| panic!("{e}"))].to_vec());
            break;
        }
    }
    assert_eq!(reply.as_deref(), Some(&b"HELLO"[..]), "{}", server.report());

    // And socat as the client.
    let output = run_peer(
        "socat",
        &["-t", "2", "-", &format!("UDP:{addr}")],
        b"socat says hi",
    );
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "SOCAT SAYS HI",
        "{}\n{}",
        describe(&output),
        server.report()
    );
    wait_no_children(server.pid(), &|| server.report());
}

/// A chat client: a line reader over the connection, and the tag the server gave it.
struct Chatter {
    stream: TcpStream,
    lines: BufReader<TcpStream>,
    tag: String,
}

impl Chatter {
    /// Connects and reads the welcome line ("<announce> you are <userN>; …").
    fn join(addr: &str) -> Chatter {
        let stream = connect(addr);
        let lines = BufReader::new(stream.try_clone().unwrap_or_else(|e| panic!("{e}")));
        let mut chatter = Chatter {
            stream,
            lines,
            tag: String::new(),
        };
        let welcome =
            chatter.line_matching("the welcome", |l| l.starts_with("<announce> you are "));
        chatter.tag = welcome
            .trim_start_matches("<announce> you are ")
            .split(';')
            .next()
            .unwrap_or_default()
            .to_string();
        chatter
    }

    fn say(&mut self, line: &str) {
        self.stream
            .write_all(format!("{line}\n").as_bytes())
            .unwrap_or_else(|e| panic!("{} cannot send: {e}", self.tag));
    }

    /// Reads lines until one matches (others, such as announcements, are skipped).
    fn line_matching(&mut self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let mut skipped = Vec::new();
        loop {
            let mut line = String::new();
            match self.lines.read_line(&mut line) {
                Ok(0) => panic!(
                    "{}: connection closed while waiting for {what}; saw {skipped:?}",
                    self.tag
                ),
                Ok(_) => {
                    let line = line.trim_end().to_string();
                    if pred(&line) {
                        return line;
                    }
                    skipped.push(line);
                }
                Err(e) => panic!(
                    "{}: {e} while waiting for {what}; saw {skipped:?}",
                    self.tag
                ),
            }
        }
    }
}

#[test]
fn chat_between_three_clients_survives_one_resetting() {
    let (server, addr) = serve("tcp://127.0.0.1:0", &["--chat"]);
    let mut a = Chatter::join(&addr);
    let mut b = Chatter::join(&addr);
    let mut c = Chatter::join(&addr);
    assert_ne!(a.tag, b.tag);
    assert!(a.tag.starts_with("<user"), "{}", a.tag);
    // Everyone knows everyone joined.
    a.line_matching("c joined", |l| {
        l.ends_with(&format!("is connected as {}.", c.tag))
    });
    b.line_matching("c joined", |l| {
        l.ends_with(&format!("is connected as {}.", c.tag))
    });

    c.say("hello from c");
    let expected = format!("{} hello from c", c.tag);
    assert_eq!(
        a.line_matching("c's line", |l| !l.starts_with("<announce>")),
        expected
    );
    assert_eq!(
        b.line_matching("c's line", |l| !l.starts_with("<announce>")),
        expected
    );

    // b vanishes abruptly: SO_LINGER 0 turns the close into a reset.
    socket2::SockRef::from(&b.stream)
        .set_linger(Some(Duration::ZERO))
        .unwrap_or_else(|e| panic!("{e}"));
    let b_tag = b.tag.clone();
    drop(b);
    let leave = format!("<announce> {b_tag} is disconnected.");
    a.line_matching("b's leave", |l| l == leave);
    c.line_matching("b's leave", |l| l == leave);

    // The other two keep chatting, both ways.
    a.say("still here?");
    assert_eq!(
        c.line_matching("a's line", |l| !l.starts_with("<announce>")),
        format!("{} still here?", a.tag)
    );
    c.say("yes");
    assert_eq!(
        a.line_matching("c's answer", |l| !l.starts_with("<announce>")),
        format!("{} yes", c.tag)
    );
    drop(server);
}

#[test]
fn a_chat_client_that_never_reads_is_dropped_and_blocks_nobody() {
    // Unpaced, so the talker's 40,000 lines go at once (pacing is tested in hostile.rs).
    let (server, addr) = serve(
        "tcp://127.0.0.1:0",
        &["--chat", "--chat-rate", "0", "--chat-bytes-rate", "0", "-q"],
    );
    let mut talker = Chatter::join(&addr);
    let mut listener = Chatter::join(&addr);
    let slow = Chatter::join(&addr);
    let slow_tag = slow.tag.clone();
    listener.line_matching("slow joined", |l| l.contains(&slow_tag));
    // Far more than the slow client's socket buffers plus its 1 MiB queue. The talker goes
    // in batches the listener reads before the next one, so the listener keeps up (its
    // queue stays far below the limit) while the silent client falls further behind.
    const BATCHES: usize = 40;
    const PER_BATCH: usize = 1000;
    let line = "x".repeat(500);
    let leave = format!("<announce> {slow_tag} is disconnected.");
    let mut saw_leave = false;
    let mut received = 0;
    for batch in 0..BATCHES {
        let mut burst = String::with_capacity(PER_BATCH * 510);
        for i in 0..PER_BATCH {
            burst.push_str(&format!("{batch:02}{i:04} {line}\n"));
        }
        talker
            .stream
            .write_all(burst.as_bytes())
            .unwrap_or_else(|e| panic!("the talker was blocked or dropped: {e}"));
        let mut in_batch = 0;
        while in_batch < PER_BATCH {
            let got = listener.line_matching("the talker's lines", |_| true);
            if got == leave {
                saw_leave = true;
            } else if got.starts_with(&talker.tag) {
                in_batch += 1;
            }
        }
        received += in_batch;
    }
    assert_eq!(
        received,
        BATCHES * PER_BATCH,
        "the reading client lost lines"
    );
    if !saw_leave {
        listener.line_matching("the slow leave", |l| l == leave);
    }
    talker.line_matching("the slow leave", |l| l == leave);
    // The server's log line, read asynchronously from its stderr.
    eventually("the server to log the disconnection", || {
        let log = server.stderr();
        (!log.contains("over the 1048576-byte limit; disconnecting it")).then_some(log)
    });
    drop(slow);
}

#[test]
fn chat_idle_members_are_disconnected_and_announced() {
    let (mut server, addr) = serve("tcp://127.0.0.1:0", &["--chat", "--idle-timeout", "1s"]);
    let mut silent = Chatter::join(&addr);
    // Silent for the idle timeout: the server closes it.
    let mut rest = Vec::new();
    silent.lines.read_to_end(&mut rest).ok();
    let reason = closed_reason(&mut server);
    assert_eq!(
        reason,
        "idle for 1s (raise --idle-timeout)",
        "{}",
        server.report()
    );
}

#[test]
fn chat_over_unix_sockets_and_not_over_udp() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let path = dir.path().join("chat.sock");
    let (server, _) = serve(&format!("unix:{}", path.display()), &["--chat"]);
    let connect_unix = || {
        let s = UnixStream::connect(&path).unwrap_or_else(|e| panic!("{e}"));
        s.set_read_timeout(Some(TIMEOUT)).ok();
        s
    };
    let mut one = connect_unix();
    let mut one_lines = BufReader::new(one.try_clone().unwrap_or_else(|e| panic!("{e}")));
    let mut line = String::new();
    one_lines
        .read_line(&mut line)
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(line.starts_with("<announce> you are <user1>"), "{line}");
    let two = connect_unix();
    let mut two_lines = BufReader::new(two);
    line.clear();
    two_lines
        .read_line(&mut line)
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(line.contains("already connected: <user1>"), "{line}");
    one.write_all(b"over unix\n")
        .unwrap_or_else(|e| panic!("{e}"));
    line.clear();
    two_lines
        .read_line(&mut line)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(line, "<user1> over unix\n", "{}", server.report());

    let output = run_sockit(&["serve", "udp://127.0.0.1:0", "--chat"], None);
    assert_eq!(code(&output), 2, "{}", describe(&output));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("needs a stream endpoint"),
        "{}",
        describe(&output)
    );
}

#[test]
fn discard_counts_what_it_drops() {
    let (mut server, addr) = serve("tcp://127.0.0.1:0", &["--discard", "-q"]);
    let mut client = connect(&addr);
    client
        .write_all(&vec![b'd'; 100_000])
        .unwrap_or_else(|e| panic!("{e}"));
    client
        .shutdown(NetShutdown::Write)
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        read_all(&mut client).is_empty(),
        "discard sent something back"
    );
    drop(client);
    // -q hides per-connection lines; the summary still counts every byte. The server
    // closed its side only after reading everything, and shutdown waits for the task.
    server.signal(libc::SIGTERM);
    assert!(server.wait_exit().success(), "{}", server.report());
    eventually("the summary on stderr", || {
        let log = server.stderr();
        (!log.contains("summary: ")).then_some(log)
    });
    let stderr = server.stderr();
    assert!(
        stderr.contains("summary: 1 connection,")
            && stderr.contains(" 100000 bytes in, 0 bytes out"),
        "{}",
        server.report()
    );
}

#[test]
fn discard_shows_bytes_in_the_closed_event() {
    let (mut server, addr) = serve("tcp://127.0.0.1:0", &["--discard"]);
    let mut client = connect(&addr);
    client
        .write_all(&vec![b'd'; 50_000])
        .unwrap_or_else(|e| panic!("{e}"));
    drop(client);
    let line = server.wait_for_line("closed", |l| l.contains(" closed conn="));
    assert!(
        line.contains("bytes_in=50000 bytes_out=0"),
        "{line}\n{}",
        server.report()
    );
}

/// Issue 15, item 3: a sink does not print what it sinks. With the default output (the
/// note's lines, not `-q`), a few MB into `--discard` leave stdout at its listening and
/// `connected by` lines, and the summary counts every byte.
#[test]
fn discard_prints_no_data_however_much_arrives() {
    const SENT: usize = 4 * 1024 * 1024;
    for endpoint in ["tcp://127.0.0.1:0", "udp://127.0.0.1:0"] {
        let mut server = Proc::sockit(&["serve", endpoint, "--discard"]);
        let addr = server.listening();
        if endpoint.starts_with("udp") {
            let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
            for _ in 0..64 {
                socket
                    .send_to(&[b'u'; 1000], &addr)
                    .unwrap_or_else(|e| panic!("{e}"));
            }
        } else {
            let mut client = connect(&addr);
            client
                .write_all(&vec![b'd'; SENT])
                .unwrap_or_else(|e| panic!("{e}"));
            client
                .shutdown(NetShutdown::Write)
                .unwrap_or_else(|e| panic!("{e}"));
            // The server closes its side once it has read everything.
            assert!(
                read_all(&mut client).is_empty(),
                "discard sent something back"
            );
        }
        server.signal(libc::SIGTERM);
        assert!(server.wait_exit().success(), "{}", server.report());
        let printed: usize = server.stdout.iter().map(|l| l.len() + 1).sum();
        assert!(
            printed < 200,
            "{endpoint}: {printed} bytes on stdout for a sink\n{}",
            server.report()
        );
        assert!(
            !server
                .stdout
                .iter()
                .any(|l| l.contains("uuu") || l.contains("ddd"))
        );
        let stderr = server.stderr();
        if endpoint.starts_with("tcp") {
            assert!(
                stderr.contains(&format!(", {SENT} bytes in, 0 bytes out")),
                "{}",
                server.report()
            );
        } else {
            // Loopback datagrams may be dropped when the socket buffer is full, so only
            // what arrived is counted; none is printed either way.
            assert!(stderr.contains("summary: "), "{}", server.report());
        }
    }
}

/// Issue 15, item 3: a message longer than the note's 1,024 bytes is shown as its start
/// and its size, so an echo of bulk data does not copy it to stdout.
#[test]
fn long_messages_are_shown_as_their_start_and_size() {
    let mut server = Proc::sockit(&["serve", "tcp://127.0.0.1:0", "--echo", "--buffer", "65536"]);
    let addr = server.listening();
    let message = vec![b'e'; 60_000];
    let mut client = connect(&addr);
    client.write_all(&message).unwrap_or_else(|e| panic!("{e}"));
    client
        .shutdown(NetShutdown::Write)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        read_all(&mut client).len(),
        message.len(),
        "the echo itself is whole"
    );
    server.signal(libc::SIGTERM);
    assert!(server.wait_exit().success(), "{}", server.report());
    let shown: Vec<&String> = server
        .stdout
        .iter()
        .filter(|l| l.starts_with("receive: ") || l.starts_with("send: "))
        .collect();
    assert!(!shown.is_empty(), "{}", server.report());
    for line in shown {
        assert!(
            line.len() < 1100,
            "a {}-byte line: {}",
            line.len(),
            server.report()
        );
        if line.len() > 1024 {
            assert!(line.ends_with(" bytes)"), "{line}");
        }
    }
}

#[test]
fn reply_and_echo_serve_ncat_nc_and_socat() {
    for (mode, expected) in [
        (vec!["--echo"], "ping\n"),
        (vec!["--reply", "pong"], "pong\n"),
    ] {
        let mut args = vec!["--framing", "line"];
        args.extend_from_slice(&mode);
        let (server, addr) = serve("tcp://127.0.0.1:0", &args);
        let (host, port) = addr.rsplit_once(':').unwrap_or_else(|| panic!("{addr}"));
        let socat_target = format!("TCP:{addr}");
        let peers: [(&str, Vec<&str>); 3] = [
            ("ncat", vec![host, port]),
            ("nc", vec!["-N", host, port]),
            ("socat", vec!["-", &socat_target]),
        ];
        for (program, peer_args) in &peers {
            let output = run_peer(program, peer_args, b"ping\n");
            assert_eq!(
                String::from_utf8_lossy(&output.stdout),
                expected,
                "{program} {mode:?}: {}\n{}",
                describe(&output),
                server.report()
            );
        }
    }
}

/// Issue 15, item 12: `ncat --ssl` sends the server's IP address as SNI. That is read as
/// no SNI, and costs no "Illegal SNI extension" line on the server's stderr.
#[test]
fn ncat_ssl_with_an_ip_as_sni_is_served_without_a_warning() {
    let (mut server, addr) = serve("tls://127.0.0.1:0", &["--echo"]);
    let (host, port) = addr.rsplit_once(':').unwrap_or_else(|| panic!("{addr}"));
    let output = run_peer("ncat", &["--ssl", host, port], b"over tls\n");
    assert_eq!(output.stdout, b"over tls\n", "{}", describe(&output));
    // ncat closes without a TLS close_notify; after a whole message that is a normal end.
    assert_eq!(closed_reason(&mut server), "closed by peer");
    let stderr = server.stderr();
    assert!(!stderr.contains("Illegal SNI"), "{stderr}");
    assert!(!stderr.contains("WARN"), "{stderr}");
    server.signal(libc::SIGTERM);
    assert!(server.wait_exit().success(), "{}", server.report());
    assert!(
        server.stderr().contains(", 0 errors"),
        "{}",
        server.report()
    );
}

/// Issue 15, item 7: `--exec cat -n --echo` gives `--echo` to cat (everything after
/// --exec is the program's command line). sockit warns once at start-up; cat then fails
/// on each connection, and each failure is logged and counted as an error.
#[test]
fn a_serve_flag_after_exec_is_warned_of_and_a_failing_program_is_counted() {
    let (mut server, addr) = serve("tcp://127.0.0.1:0", &["--exec", "cat", "-n", "--echo"]);
    let warned = |server: &Proc| {
        server
            .stderr()
            .contains("`--echo` comes after --exec, so it is an argument of cat")
    };
    eventually("the start-up warning", || {
        (!warned(&server)).then_some(server.report())
    });
    let mut client = connect(&addr);
    let _ = client.write_all(b"hello\n");
    let _ = client.shutdown(NetShutdown::Write);
    let _ = read_all(&mut client);
    let reason = closed_reason(&mut server);
    assert!(reason.contains("program exited with status 1"), "{reason}");
    server.signal(libc::SIGTERM);
    assert!(server.wait_exit().success(), "{}", server.report());
    let stderr = server.stderr();
    assert!(
        stderr.contains("closing connection: program exited with status 1"),
        "{stderr}"
    );
    assert!(stderr.contains(", 1 error"), "{stderr}");
}

/// Issue 15, item 7: on datagram endpoints a run that exits non-zero is logged and
/// counted too (its output, if any, is still the reply).
#[test]
fn a_failing_program_per_datagram_is_counted() {
    let mut server = Proc::sockit(&["serve", "udp://127.0.0.1:0", "--exec", "false"]);
    let addr = server.listening();
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
    socket
        .send_to(b"ping", &addr)
        .unwrap_or_else(|e| panic!("{e}"));
    eventually("the failure line", || {
        let log = server.stderr();
        (!log.contains("the program exited with status 1")).then_some(log)
    });
    server.signal(libc::SIGTERM);
    assert!(server.wait_exit().success(), "{}", server.report());
    assert!(server.stderr().contains(", 1 error"), "{}", server.report());
}

/// Issue 15, item 7: an empty `--sh-exec` is a usage error, not a server whose every
/// connection runs `sh -c ''`.
#[test]
fn an_empty_sh_exec_is_a_usage_error() {
    for command in ["", "  "] {
        let output = run_sockit(&["serve", "tcp://127.0.0.1:0", "--sh-exec", command], None);
        assert_eq!(code(&output), 2, "{}", describe(&output));
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains("--sh-exec needs a command line"),
            "{stderr}"
        );
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
    }
}

/// Issue 15, item 12: a failed TLS handshake is one line that names the client once,
/// in its `conn{id=… peer=…}` span.
#[test]
fn a_failed_handshake_names_the_client_once() {
    let (server, addr) = serve("tls://127.0.0.1:0", &["--echo"]);
    let mut plain = connect(&addr);
    let _ = plain.write_all(b"hello, not TLS\n");
    let _ = read_all(&mut plain);
    let port = plain
        .local_addr()
        .unwrap_or_else(|e| panic!("{e}"))
        .port()
        .to_string();
    eventually("the handshake failure line", || {
        let log = server.stderr();
        (!log.contains("does not speak TLS")).then_some(log)
    });
    let stderr = server.stderr();
    let line = stderr
        .lines()
        .find(|l| l.contains("does not speak TLS"))
        .unwrap_or_default();
    assert!(line.contains("conn{id="), "{line}");
    assert_eq!(line.matches(&format!(":{port}")).count(), 1, "{line}");
}

/// Issue 15, item 12: an idle timeout is the server doing its job. The summary counts it
/// under its own name, not as an error.
#[test]
fn an_idle_close_is_counted_apart_from_errors() {
    for mode in [&["--echo"][..], &["--exec", "cat"][..]] {
        let mut args = vec!["--idle-timeout", "1s"];
        args.extend_from_slice(mode);
        let (mut server, addr) = serve("tcp://127.0.0.1:0", &args);
        let mut silent = connect(&addr);
        assert!(read_all(&mut silent).is_empty());
        let reason = closed_reason(&mut server);
        assert!(reason.contains("idle for 1s"), "{reason}");
        server.signal(libc::SIGTERM);
        assert!(server.wait_exit().success(), "{}", server.report());
        let stderr = server.stderr();
        assert!(
            stderr.contains("summary: 1 connection, 0 messages, 0 bytes in, 0 bytes out, 0 errors, 1 timed out (idle)"),
            "{mode:?}: {stderr}"
        );
    }
}

/// `--close` closes after the first reply; the modes that send no replies (`--discard`)
/// or that are a throughput test (`--perf`) would ignore it, so asking for both is a
/// usage error rather than a flag silently dropped.
#[test]
fn close_with_a_mode_that_never_replies_is_a_usage_error() {
    for mode in ["--discard", "--perf"] {
        let output = run_sockit(&["serve", "tcp://127.0.0.1:0", mode, "--close"], None);
        assert_eq!(code(&output), 2, "{mode}: {}", describe(&output));
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("--close"), "{mode}: {stderr}");
        assert!(stderr.contains(mode), "{mode}: {stderr}");
    }
}

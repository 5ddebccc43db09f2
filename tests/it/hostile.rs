//! Hostile clients (issue 20) at a bounded size: each test reproduces one attack against
//! the real binary and asserts the bound it must respect.

use std::io::Write;
use std::net::TcpStream;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::ops::{metrics_addr, poll, rss_kib, stderr_line};
use crate::util::{Proc, TIMEOUT};

/// A scrape with `curl`, bounded by [`TIMEOUT`]: (exit code, body).
fn curl_metrics(addr: &str) -> (Option<i32>, String) {
    let output = Command::new("curl")
        .args(["-s", "--max-time", &TIMEOUT.as_secs().to_string()])
        .arg(format!("http://{addr}/metrics"))
        .output()
        .unwrap_or_else(|e| panic!("cannot run curl: {e}"));
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
    )
}

// Issue 20, item 6: idle connections to /metrics must not lock scrapers out.
#[test]
fn fifty_idle_metrics_connections_do_not_starve_a_scraper() {
    let mut server = Proc::sockit(&["serve", "tcp://127.0.0.1:0", "--metrics", "127.0.0.1:0"]);
    server.listening();
    let metrics = metrics_addr(&server);
    let idle: Vec<TcpStream> = (0..50)
        .map(|_| TcpStream::connect(&metrics).unwrap_or_else(|e| panic!("connect {metrics}: {e}")))
        .collect();
    for _ in 0..3 {
        let (code, body) = curl_metrics(&metrics);
        assert_eq!(code, Some(0), "curl failed\n{}", server.report());
        assert!(
            body.contains("sockit_connections_accepted_total"),
            "no metrics in the answer: {body:?}\n{}",
            server.report()
        );
    }
    drop(idle);
}

/// 50 idle clients, kept by one thread, each reconnecting as soon as it is closed, until
/// `stop` (or a bounded number of rounds); returns how many times they connected.
fn reconnect_idly(addr: &str, stop: &AtomicBool) -> usize {
    use std::io::Read;
    let connect = || {
        let stream = TcpStream::connect(addr).ok()?;
        stream.set_nonblocking(true).ok()?;
        Some(stream)
    };
    let mut clients: Vec<Option<TcpStream>> = (0..50).map(|_| connect()).collect();
    let mut connects = clients.iter().flatten().count();
    let mut byte = [0u8; 1];
    for _ in 0..1_000_000 {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let mut idle_round = true;
        for client in &mut clients {
            let closed = match client {
                Some(stream) => match stream.read(&mut byte) {
                    Ok(0) => true,
                    Ok(_) => false,
                    Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
                },
                None => true,
            };
            if closed {
                *client = connect();
                connects += 1;
                idle_round = false;
            }
        }
        if idle_round {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    connects
}

/// A scrape sent in two writes (request line, then the headers), as a slow scraper does;
/// returns the response.
fn scrape_in_two_writes(addr: &str) -> String {
    use std::io::Read;
    let mut stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    stream
        .set_read_timeout(Some(TIMEOUT))
        .unwrap_or_else(|e| panic!("{e}"));
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\n")
        .unwrap_or_else(|e| panic!("{e}"));
    std::thread::sleep(Duration::from_millis(20));
    let mut response = Vec::new();
    if stream.write_all(b"Host: x\r\n\r\n").is_ok() {
        let _ = stream.read_to_end(&mut response);
    }
    String::from_utf8_lossy(&response).into_owned()
}

// Issue 20, item 6: 50 idle clients that reconnect the moment they are closed (each
// newcomer evicting a waiting connection) must not push a scraper out: 20 scrapes in a
// row, curl's and slow ones sent in two writes, all succeed.
#[test]
fn reconnecting_idle_metrics_clients_do_not_evict_scrapers() {
    let mut server = Proc::sockit(&["serve", "tcp://127.0.0.1:0", "--metrics", "127.0.0.1:0"]);
    server.listening();
    let metrics = metrics_addr(&server);
    let stop = Arc::new(AtomicBool::new(false));
    let flood = {
        let (addr, stop) = (metrics.clone(), Arc::clone(&stop));
        std::thread::spawn(move || reconnect_idly(&addr, &stop))
    };
    let mut failures = Vec::new();
    for round in 0..20 {
        let (code, body) = curl_metrics(&metrics);
        if code != Some(0) || !body.contains("sockit_connections_accepted_total") {
            failures.push(format!("curl scrape {round}: exit {code:?}, body {body:?}"));
        }
        let slow = scrape_in_two_writes(&metrics);
        if !slow.starts_with("HTTP/1.1 200 OK") {
            failures.push(format!("slow scrape {round}: {slow:?}"));
        }
    }
    stop.store(true, Ordering::Relaxed);
    let reconnects = flood
        .join()
        .unwrap_or_else(|_| panic!("the flood thread panicked"));
    assert!(
        failures.is_empty(),
        "{} of 40 scrapes failed ({reconnects} idle connects):\n{}\n{}",
        failures.len(),
        failures.join("\n"),
        server.report()
    );
    assert!(
        reconnects >= 50,
        "the idle clients did not connect: {reconnects}"
    );
}

/// A client whose kernel receive buffer is small (4 KiB), so what it does not read stays
/// in the server, not in the kernel.
fn connect_small_window(addr: &str) -> TcpStream {
    use socket2::{Domain, Socket, Type};
    let addr: std::net::SocketAddr = addr
        .parse()
        .unwrap_or_else(|e| panic!("address {addr}: {e}"));
    let socket =
        Socket::new(Domain::IPV4, Type::STREAM, None).unwrap_or_else(|e| panic!("socket: {e}"));
    socket
        .set_recv_buffer_size(4096)
        .unwrap_or_else(|e| panic!("SO_RCVBUF: {e}"));
    socket
        .connect(&addr.into())
        .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    TcpStream::from(socket)
}

/// Reads lines from `stream` until one contains `marker`, counting them in `count`;
/// returns how many lines came.
fn read_until_line(stream: TcpStream, marker: &str, count: &AtomicUsize) -> usize {
    use std::io::BufRead;
    stream
        .set_read_timeout(Some(TIMEOUT))
        .unwrap_or_else(|e| panic!("{e}"));
    for line in std::io::BufReader::new(stream).lines() {
        let line = line.unwrap_or_else(|e| panic!("reading chat lines: {e}"));
        let lines = count.fetch_add(1, Ordering::Relaxed) + 1;
        if line.contains(marker) {
            return lines;
        }
    }
    panic!(
        "the chat ended before {marker:?} arrived ({} lines)",
        count.load(Ordering::Relaxed)
    );
}

/// Highest VmRSS of `pid` seen until `done` is set, sampled every few milliseconds.
fn watch_peak_rss(pid: u32, done: Arc<AtomicBool>) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        let mut peak = 0;
        let deadline = Instant::now() + TIMEOUT;
        while !done.load(Ordering::Relaxed) && Instant::now() < deadline {
            peak = peak.max(rss_kib(pid));
            std::thread::sleep(Duration::from_millis(5));
        }
        peak.max(rss_kib(pid))
    })
}

// Issue 20, item 1: members that never read while one client floods short lines.
#[test]
fn a_chat_flood_with_sleeping_members_stays_within_the_room_limit() {
    /// Members that never read.
    const SLEEPERS: usize = 100;
    /// Lines the flooder sends: more than the kernel buffers for the sleepers hold.
    const FLOOD: usize = 50_000;
    /// Lines sent before waiting for the reader.
    const BATCH: usize = 2_000;
    /// Each line, 100 bytes with its newline.
    const LINE: &[u8] = b"fffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff\n";
    /// `--chat-memory`, in KiB.
    const ROOM_KIB: u64 = 8 * 1024;
    /// Allocator slack on top of the room's own count: the heap of each thread that
    /// served the flood keeps freed chunks, and the pages of lines freed out of order are
    /// only partly reusable. Measured at about 2 MiB; the margin doubles it.
    const SLACK_KIB: u64 = 4 * 1024;
    let mut server = Proc::sockit(&[
        "serve",
        "tcp://127.0.0.1:0",
        "--chat",
        "--chat-memory",
        "8M",
        "--chat-rate",
        "0",
        "--chat-bytes-rate",
        "0",
        "-q",
    ]);
    let addr = server.listening();
    let pid = server.pid();
    let start = rss_kib(pid);
    let sleepers: Vec<TcpStream> = (0..SLEEPERS).map(|_| connect_small_window(&addr)).collect();
    let reader = TcpStream::connect(&addr).unwrap_or_else(|e| panic!("connect: {e}"));
    let mut flooder = TcpStream::connect(&addr).unwrap_or_else(|e| panic!("connect: {e}"));
    // The flooder's welcome names who is in the room; announcements name who comes after.
    {
        use std::io::BufRead;
        let stream = flooder.try_clone().unwrap_or_else(|e| panic!("{e}"));
        stream
            .set_read_timeout(Some(TIMEOUT))
            .unwrap_or_else(|e| panic!("{e}"));
        let mut lines = std::io::BufReader::new(stream);
        let mut others = 0;
        while others < SLEEPERS + 1 {
            let mut line = String::new();
            lines
                .read_line(&mut line)
                .unwrap_or_else(|e| panic!("waiting for the room to fill: {e}"));
            others += line.matches("127.0.0.1:").count();
        }
    }
    let joined = rss_kib(pid);
    let flooder_drain = {
        let stream = flooder.try_clone().unwrap_or_else(|e| panic!("{e}"));
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut &stream, &mut std::io::sink());
        })
    };
    let read = Arc::new(AtomicUsize::new(0));
    let reading = {
        let read = Arc::clone(&read);
        std::thread::spawn(move || read_until_line(reader, "the end", &read))
    };
    let done = Arc::new(AtomicBool::new(false));
    let peak = watch_peak_rss(pid, Arc::clone(&done));
    // In batches the reader takes in before the next, so a busy test machine that stalls
    // the reader's thread cannot put it 1 MiB behind; the sleepers get every batch.
    for batch in 1..=FLOOD / BATCH {
        flooder
            .write_all(&LINE.repeat(BATCH))
            .unwrap_or_else(|e| panic!("flood: {e}"));
        poll(
            "the reader to take in a batch",
            || server.report(),
            || (read.load(Ordering::Relaxed) >= batch * BATCH).then_some(()),
        );
    }
    flooder
        .write_all(b"the end\n")
        .unwrap_or_else(|e| panic!("flood: {e}"));
    let lines = reading
        .join()
        .unwrap_or_else(|_| panic!("the reader failed\n{}", server.report()));
    done.store(true, Ordering::Relaxed);
    let peak = peak
        .join()
        .unwrap_or_else(|_| panic!("the RSS watcher failed"));
    eprintln!(
        "chat flood: RSS {start} KiB at start, {joined} KiB with {SLEEPERS} sleepers, peak {peak} KiB; the reader got {lines} lines; {} members disconnected for the room limit, {} for their own",
        server.stderr().matches("--chat-memory").count(),
        server
            .stderr()
            .matches("-byte limit; disconnecting it")
            .count(),
    );
    assert!(
        lines > FLOOD,
        "the reading member must get every line ({lines})"
    );
    assert!(
        peak <= joined + ROOM_KIB + SLACK_KIB,
        "RSS peaked at {peak} KiB, over {joined} + {ROOM_KIB} + {SLACK_KIB} KiB\n{}",
        server.report()
    );
    drop(sleepers);
    let _ = flooder.shutdown(std::net::Shutdown::Both);
    drop(flooder);
    flooder_drain
        .join()
        .unwrap_or_else(|_| panic!("the flooder's reader failed"));
    let settled = poll(
        "RSS to return near its start",
        || server.report(),
        || {
            let now = rss_kib(pid);
            (now <= joined + SLACK_KIB).then_some(now)
        },
    );
    eprintln!("chat flood: RSS {settled} KiB once everyone left");
}

/// Pids of live processes whose command line contains `marker`, but for `server` (whose
/// own command line holds the program's).
fn processes_with(marker: &str, server: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        panic!("cannot read /proc");
    };
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| *pid != server)
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|cmdline| {
                String::from_utf8_lossy(&cmdline)
                    .replace('\0', " ")
                    .contains(marker)
            })
        })
        .collect()
}

/// Waits until no process carries `marker`; panics with the survivors after `within`.
/// Returns how long it took.
fn wait_gone(marker: &str, server: &Proc, within: Duration) -> Duration {
    let start = Instant::now();
    loop {
        let left = processes_with(marker, server.pid());
        if left.is_empty() {
            return start.elapsed();
        }
        if start.elapsed() > within {
            panic!(
                "processes {left:?} with {marker:?} still run {:?} after their client left\n{}",
                start.elapsed(),
                server.report()
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A program that prints "hi" and sleeps, and starts a sleeper in its own session (out of
/// its process group); every process of it has `marker` in its command line.
fn escaping_program(marker: &str) -> String {
    format!("setsid sleep 30.{marker} & echo hi; sleep 31.{marker}")
}

/// A marker no other test's process has: digits (it is part of a `sleep` duration).
fn unique_marker(salt: u32) -> String {
    format!("000{}{salt}", std::process::id())
}

/// The 1 s the programs are allowed, plus room for a loaded test machine.
const GONE_WITHIN: Duration = Duration::from_secs(3);

/// Connects, reads the program's "hi", and waits until all three processes of the
/// escaping program run.
fn start_escaping_program(addr: &str, marker: &str, server: &Proc) -> TcpStream {
    use std::io::Read;
    let mut client = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    client
        .set_read_timeout(Some(TIMEOUT))
        .unwrap_or_else(|e| panic!("{e}"));
    let mut hi = [0u8; 3];
    client
        .read_exact(&mut hi)
        .unwrap_or_else(|e| panic!("reading hi: {e}\n{}", server.report()));
    assert_eq!(&hi, b"hi\n");
    poll(
        "sh and both sleeps",
        || server.report(),
        || (processes_with(marker, server.pid()).len() >= 3).then_some(()),
    );
    client
}

// Issue 20, item 5: a program's whole tree, `setsid` child included, ends with its client.
#[test]
fn a_program_and_its_setsid_child_end_when_the_client_closes() {
    let marker = unique_marker(1);
    let mut server = Proc::sockit(&[
        "serve",
        "tcp://127.0.0.1:0",
        "--sh-exec",
        &escaping_program(&marker),
    ]);
    let addr = server.listening();
    let client = start_escaping_program(&addr, &marker, &server);
    drop(client);
    let took = wait_gone(&marker, &server, GONE_WITHIN);
    eprintln!("the program's tree was gone {took:?} after its client closed");
    assert!(server.is_running(), "{}", server.report());
}

// Issue 20, item 5: the same at shutdown, with the client still connected.
#[test]
fn a_setsid_child_does_not_outlive_the_server() {
    let marker = unique_marker(2);
    let mut server = Proc::sockit(&[
        "serve",
        "tcp://127.0.0.1:0",
        "--sh-exec",
        &escaping_program(&marker),
    ]);
    let addr = server.listening();
    let _client = start_escaping_program(&addr, &marker, &server);
    server.signal(libc::SIGTERM);
    let status = server.wait_exit();
    assert!(status.success(), "{}", server.report());
    let took = wait_gone(&marker, &server, GONE_WITHIN);
    eprintln!("the program's tree was gone {took:?} after the server exited");
}

/// The permission bits of the file at `path`.
fn mode_of(path: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("stat {}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o7777
}

// Issue 20, item 7: --mode sets the socket file's permissions, for streams and datagrams.
#[test]
fn unix_socket_files_get_the_mode_asked_for() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    for (scheme, mode, octal) in [("unix", "0600", 0o600), ("unixgram", "0640", 0o640)] {
        let path = dir.path().join(format!("{scheme}.sock"));
        let endpoint = format!("{scheme}:{}", path.display());
        let mut server = Proc::sockit(&["serve", &endpoint, "--mode", mode]);
        server.listening();
        assert_eq!(mode_of(&path), octal, "{endpoint}\n{}", server.report());
    }
    let path = dir.path().join("listen.sock");
    let endpoint = format!("unix:{}", path.display());
    let mut listener = Proc::sockit(&["listen", &endpoint, "--mode", "0660"]);
    poll(
        "listen's socket file",
        || listener.report(),
        || path.exists().then_some(()),
    );
    assert_eq!(mode_of(&path), 0o660, "{}", listener.report());
    assert!(listener.is_running());
}

/// Connects to the abstract socket `name` and returns what the server sends until it
/// closes (empty when it refuses us).
fn abstract_exchange(name: &str) -> Vec<u8> {
    use std::io::Read;
    use std::os::linux::net::SocketAddrExt;
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())
        .unwrap_or_else(|e| panic!("abstract name {name}: {e}"));
    let mut stream = std::os::unix::net::UnixStream::connect_addr(&addr)
        .unwrap_or_else(|e| panic!("connect @{name}: {e}"));
    stream
        .set_read_timeout(Some(TIMEOUT))
        .unwrap_or_else(|e| panic!("{e}"));
    let _ = stream.write_all(b"hello\n");
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let mut got = Vec::new();
    let _ = stream.read_to_end(&mut got);
    got
}

// Issue 20, item 7: --allow-uid on an abstract socket refuses other users (SO_PEERCRED).
#[test]
fn an_abstract_socket_refuses_users_not_allowed() {
    // SAFETY: getuid has no preconditions and cannot fail.
    let me = unsafe { libc::getuid() };
    let other = if me == 65534 { 65533 } else { 65534 };
    let name = format!("sockit-hostile-{}", std::process::id());
    let endpoint = format!("unix:@{name}");
    let mut refusing = Proc::sockit(&[
        "serve",
        &endpoint,
        "--reply",
        "welcome",
        "--allow-uid",
        &other.to_string(),
    ]);
    refusing.listening();
    assert_eq!(abstract_exchange(&name), b"", "{}", refusing.report());
    stderr_line(&refusing, "the refusal", |l| {
        l.contains(&format!("refused a unix client: uid {me}"))
    });
    refusing.signal(libc::SIGTERM);
    refusing.wait_exit();

    let mut allowing = Proc::sockit(&[
        "serve",
        &endpoint,
        "--reply",
        "welcome",
        "--allow-uid",
        &other.to_string(),
        "--allow-uid",
        &me.to_string(),
    ]);
    allowing.listening();
    assert_eq!(
        abstract_exchange(&name),
        b"welcome",
        "{}",
        allowing.report()
    );
}

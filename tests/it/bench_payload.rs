//! Issue 22: `sockit bench` with any payload against servers nobody here wrote
//! (`redis-server`, a Python line-echo server), a reply matcher whose refusals count as
//! mismatches, per-connection rates, connect and rate ramps, the partial report on
//! Ctrl-C, the load generator named as the limit, and one-line refusals of bad options
//! before any connection is made.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use sockit::bench::Report;

use crate::bench::{ThreadServer, bench, echo_server, scratch};
use crate::util::{Proc, TIMEOUT, code, describe, python, run_sockit};

/// A port that was free a moment ago, for servers that cannot bind port 0 and say which.
fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("bind: {e}"));
    listener
        .local_addr()
        .unwrap_or_else(|e| panic!("{e}"))
        .port()
}

/// Sends `request` on a new connection to `port` and reads one chunk of reply.
fn ask(port: u16, request: &[u8]) -> Option<Vec<u8>> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    stream.write_all(request).ok()?;
    let mut reply = [0u8; 256];
    let n = stream.read(&mut reply).ok()?;
    Some(reply[..n].to_vec())
}

/// A real `redis-server` on a free loopback port, nothing saved; stopped on drop.
struct Redis {
    port: u16,
    _process: Proc,
    _dir: tempfile::TempDir,
}

impl Redis {
    /// Starts it and waits until it answers PING.
    fn start() -> Redis {
        let dir = scratch();
        let port = free_port();
        let mut cmd = Command::new("redis-server");
        cmd.args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .arg("--dir")
            .arg(dir.path());
        let mut process = Proc::spawn(cmd, false);
        let deadline = Instant::now() + TIMEOUT;
        while ask(port, b"PING\r\n").as_deref() != Some(b"+PONG\r\n") {
            assert!(
                Instant::now() < deadline && process.is_running(),
                "redis-server did not answer on port {port}\n{}",
                process.report()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Redis {
            port,
            _process: process,
            _dir: dir,
        }
    }

    fn endpoint(&self) -> String {
        format!("tcp://127.0.0.1:{}", self.port)
    }
}

/// A line-echo server in Python (socketserver): every line comes back; prints its port.
const LINE_ECHO: &str = r#"
import socketserver, sys
class Echo(socketserver.StreamRequestHandler):
    def handle(self):
        for line in self.rfile:
            self.wfile.write(line)
            self.wfile.flush()
class Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
with Server(("127.0.0.1", 0), Echo) as server:
    print(server.server_address[1], flush=True)
    server.serve_forever()
"#;

/// Starts the Python line-echo server and returns it with its endpoint.
fn python_line_echo() -> (Proc, String) {
    let mut cmd = Command::new(python());
    cmd.args(["-c", LINE_ECHO]);
    let mut server = Proc::spawn(cmd, false);
    let port = server.wait_for_line("the port", |l| l.parse::<u16>().is_ok());
    (server, format!("tcp://127.0.0.1:{port}"))
}

#[test]
fn redis_answers_ping_with_pong_matched_by_delimiter_and_regex() {
    let redis = Redis::start();
    let dir = scratch();
    let (status, report, run) = bench(
        &[
            &redis.endpoint(),
            "-p",
            "echo",
            "-c",
            "4",
            "-d",
            "500ms",
            "--warmup",
            "0",
            "--message",
            r"PING\r\n",
            "--first-message",
            r"CLIENT SETNAME sockit-bench\r\n",
            "--reply-until",
            r"\r\n",
            "--reply-regex",
            r"^\+PONG\r\n$",
        ],
        &dir.path().join("ping.json"),
    );
    assert_eq!(status, 0, "{run}");
    assert!(report.exchanges > 0, "{run}");
    assert_eq!(report.errors.total, 0, "{run}");
    assert_eq!(report.size_bytes, 6, "{run}");
    assert_eq!(report.latency_us.count, report.exchanges, "{run}");
}

#[test]
fn redis_replies_end_at_a_regex_match_alone() {
    let redis = Redis::start();
    let dir = scratch();
    let (status, report, run) = bench(
        &[
            &redis.endpoint(),
            "-p",
            "hello",
            "-c",
            "2",
            "-d",
            "500ms",
            "--warmup",
            "0",
            "--message",
            r"PING\r\n",
            "--reply-regex",
            r"\+PONG\r\n",
        ],
        &dir.path().join("regex.json"),
    );
    assert_eq!(status, 0, "{run}");
    assert!(report.exchanges > 0, "{run}");
    assert_eq!(report.errors.total, 0, "{run}");
}

#[test]
fn a_message_file_sends_its_messages_in_turn_to_redis() {
    let redis = Redis::start();
    let dir = scratch();
    let file = dir.path().join("messages");
    std::fs::write(&file, b"SET sockit-key sockit-value\r\n|PING\r\n|")
        .unwrap_or_else(|e| panic!("{e}"));
    let file_arg = file.display().to_string();
    let (status, report, run) = bench(
        &[
            &redis.endpoint(),
            "-p",
            "echo",
            "-c",
            "1",
            "-d",
            "300ms",
            "--warmup",
            "0",
            "--message-file",
            &file_arg,
            "--message-delimiter",
            "|",
            "--reply-until",
            r"\r\n",
            "--reply-regex",
            r"^\+(OK|PONG)\r\n$",
        ],
        &dir.path().join("file.json"),
    );
    assert_eq!(status, 0, "{run}");
    assert!(report.exchanges >= 2, "{run}");
    assert_eq!(report.errors.total, 0, "{run}");
    // The table gives both sizes, not the longest message's for all of them.
    assert_eq!(
        (report.size_min_bytes, report.size_bytes),
        (Some(6), 29),
        "{run}"
    );
    assert!(
        run.contains("echo, 6- to 29-byte messages, 1 connection, closed loop"),
        "{run}"
    );
    // The first message really went: the key is there.
    let value = ask(redis.port, b"GET sockit-key\r\n");
    assert_eq!(
        value.as_deref(),
        Some(&b"$12\r\nsockit-value\r\n"[..]),
        "{run}"
    );
}

#[test]
fn a_reply_that_does_not_match_is_a_mismatch() {
    let redis = Redis::start();
    let dir = scratch();
    let (status, report, run) = bench(
        &[
            &redis.endpoint(),
            "-p",
            "echo",
            "-c",
            "2",
            "-d",
            "300ms",
            "--warmup",
            "0",
            "--message",
            r"GET no-such-key\r\n",
            "--reply-until",
            r"\r\n",
            "--reply-regex",
            r"^\+PONG",
        ],
        &dir.path().join("mismatch.json"),
    );
    assert_ne!(status, 0, "nothing matched, so the run failed\n{run}");
    assert_eq!(report.exchanges, 0, "{run}");
    assert!(report.errors.mismatch > 0, "{run}");
    assert_eq!(report.errors.mismatch, report.errors.total, "{run}");
    assert!(run.contains("mismatch"), "{run}");
    assert!(run.contains("unexpected reply"), "{run}");
}

#[test]
fn a_python_line_echo_server_is_driven_with_a_login_per_connection() {
    let (_server, endpoint) = python_line_echo();
    let dir = scratch();
    for pattern in ["echo", "hello"] {
        let (status, report, run) = bench(
            &[
                &endpoint,
                "-p",
                pattern,
                "-c",
                "2",
                "-d",
                "500ms",
                "--warmup",
                "0",
                "--first-message",
                r"login sockit\n",
                "--message",
                r"hello\tline\n",
                "--reply-until",
                r"\n",
                "--reply-regex",
                r"^hello\tline\n$",
            ],
            &dir.path().join(format!("{pattern}.json")),
        );
        assert_eq!(status, 0, "{run}");
        assert!(report.exchanges > 0, "{run}");
        assert_eq!(report.errors.total, 0, "{run}");
    }
}

#[test]
fn a_reply_matcher_that_never_matches_ends_each_exchange_at_the_timeout() {
    let server = echo_server(Duration::ZERO, None);
    let dir = scratch();
    let (status, report, run) = bench(
        &[
            &server.endpoint(),
            "-p",
            "echo",
            "-c",
            "2",
            "-d",
            "1500ms",
            "--warmup",
            "0",
            "--timeout",
            "300ms",
            "--reply-regex",
            "NEVER",
        ],
        &dir.path().join("never.json"),
    );
    assert_ne!(status, 0, "{run}");
    assert_eq!(report.exchanges, 0, "{run}");
    // Each exchange ends at its 300 ms timeout, so in 1.5 s a connection sees at most 5;
    // at least one each, however slowly a loaded test machine starts them.
    assert!((2..=10).contains(&report.errors.timeout), "{run}");
    assert_eq!(report.errors.total, report.errors.timeout, "{run}");
}

#[test]
fn a_per_connection_rate_delivers_its_total() {
    let server = echo_server(Duration::ZERO, None);
    let dir = scratch();
    let (status, report, run) = bench(
        &[
            &server.endpoint(),
            "-p",
            "echo",
            "-c",
            "10",
            "--rate-per-conn",
            "100",
            "-d",
            "3s",
            "--warmup",
            "500ms",
        ],
        &dir.path().join("per-conn.json"),
    );
    assert_eq!(status, 0, "{run}");
    assert_eq!(report.target_rate_per_s, Some(1000.0), "{run}");
    // The pacer never sends ahead of its timetable, so the rate cannot exceed 1,000/s by
    // more than the 2 % the issue allows; below, a busy test machine may delay replies
    // past the end of the run, so the floor leaves room for that and still fails a
    // rate taken per run instead of per connection (100/s).
    let delivered = report.exchanges as f64 / report.duration_s;
    assert!(
        (900.0..=1020.0).contains(&delivered),
        "{delivered}/s\n{run}"
    );
}

#[test]
fn a_connect_ramp_opens_its_connections_at_its_pace() {
    let accepted = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&accepted);
    let server = ThreadServer::start(move |mut conn| {
        counter.fetch_add(1, Ordering::Relaxed);
        let mut buf = [0u8; 4096];
        while let Ok(n @ 1..) = conn.read(&mut buf) {
            if conn.write_all(&buf[..n]).is_err() {
                return;
            }
        }
    });
    let dir = scratch();
    let (status, report, run) = bench(
        &[
            &server.endpoint(),
            "-p",
            "echo",
            "-c",
            "100",
            "--connect-rate",
            "50/s",
            "-d",
            "3s",
            "--warmup",
            "0",
        ],
        &dir.path().join("ramp.json"),
    );
    assert_eq!(status, 0, "{run}");
    assert_eq!(report.connected, 100, "{run}");
    assert_eq!(accepted.load(Ordering::Relaxed), 100, "{run}");
    // The 100th connection is due 99/50 = 1.98 s after the start, and the ramp never
    // opens one early; how late the last one comes depends on the test machine's load,
    // so the upper bound is only the run's length.
    let after = report.all_connected_after_s.unwrap_or_default();
    assert!((1.8..=3.0).contains(&after), "{after} s\n{run}");
    assert!(run.contains("connect ramp"), "{run}");
}

#[test]
fn a_rate_ramp_reports_its_latency_apart_from_the_steady_state() {
    let server = echo_server(Duration::ZERO, None);
    let dir = scratch();
    let (status, report, run) = bench(
        &[
            &server.endpoint(),
            "-p",
            "echo",
            "-c",
            "4",
            "--rate",
            "400",
            "--ramp-up",
            "1s",
            "-d",
            "2s",
            "--warmup",
            "0",
        ],
        &dir.path().join("ramp-up.json"),
    );
    assert_eq!(status, 0, "{run}");
    let ramp = report
        .ramp
        .clone()
        .unwrap_or_else(|| panic!("no ramp\n{run}"));
    // 400/s reached linearly over 1 s: 200 due in the ramp, then 400 in the steady
    // second, 600 in all. An exchange is filed by when it completes, so on a busy machine
    // a few due just before the ramp's end complete after it and move from one count to
    // the other; their sum is what the timetable fixes.
    let total = ramp.exchanges + report.exchanges;
    assert!((585..=600).contains(&total), "{run}");
    assert!((170..=200).contains(&ramp.exchanges), "{run}");
    assert_eq!(ramp.latency_us.count, ramp.exchanges, "{run}");
    assert!((385..=430).contains(&report.exchanges), "{run}");
    assert_eq!(report.latency_us.count, report.exchanges, "{run}");
    assert!(run.contains("ramp latency"), "{run}");
}

#[test]
fn a_rate_the_load_generator_cannot_reach_is_named_as_its_limit() {
    let server = echo_server(Duration::from_millis(50), None);
    let dir = scratch();
    let (status, report, run) = bench(
        &[
            &server.endpoint(),
            "-p",
            "echo",
            "-c",
            "1",
            "--rate",
            "100",
            "-d",
            "1s",
            "--warmup",
            "0",
        ],
        &dir.path().join("limit.json"),
    );
    assert_eq!(status, 0, "{run}");
    assert_eq!(report.rate_reached, Some(false), "{run}");
    let json = serde_json::to_value(&report).unwrap_or_default();
    assert_eq!(json["loadgen_limit"], "rate", "{run}");
    assert!(run.contains("may be the bottleneck"), "{run}");
}

#[test]
fn ctrl_c_prints_a_partial_report_with_its_histogram() {
    a_stop_signal_prints_a_partial_report_with_its_histogram(libc::SIGINT);
}

/// SIGTERM (`timeout`, a job runner) and SIGHUP (a closed terminal) stop a run as Ctrl-C
/// does: a partial report with its histogram, exit 0, as they stop `serve`.
#[test]
fn sigterm_and_sighup_print_a_partial_report_as_ctrl_c_does() {
    for signal in [libc::SIGTERM, libc::SIGHUP] {
        a_stop_signal_prints_a_partial_report_with_its_histogram(signal);
    }
}

/// Sends `signal` to a run in mid-measurement and checks its partial report.
fn a_stop_signal_prints_a_partial_report_with_its_histogram(signal: i32) {
    let exchanged = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&exchanged);
    let server = ThreadServer::start(move |mut conn| {
        let mut buf = [0u8; 4096];
        while let Ok(n @ 1..) = conn.read(&mut buf) {
            counter.fetch_add(1, Ordering::Relaxed);
            if conn.write_all(&buf[..n]).is_err() {
                return;
            }
        }
    });
    let dir = scratch();
    let json = dir.path().join("partial.json");
    let json_arg = json.display().to_string();
    let endpoint = server.endpoint();
    let mut bench = Proc::sockit(&[
        "bench", &endpoint, "-p", "echo", "-c", "2", "-d", "60s", "--warmup", "0", "--json",
        &json_arg,
    ]);
    let deadline = Instant::now() + TIMEOUT;
    while exchanged.load(Ordering::Relaxed) < 200 {
        assert!(
            Instant::now() < deadline && bench.is_running(),
            "{}",
            bench.report()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    bench.signal(signal);
    let status = bench.wait_exit();
    let described = format!("signal {signal}: {status}\n{}", bench.report());
    assert_eq!(status.code(), Some(0), "{described}");
    let text = std::fs::read_to_string(&json).unwrap_or_else(|e| panic!("{e}\n{described}"));
    let report = Report::from_json(&text).unwrap_or_else(|e| panic!("{e}\n{described}"));
    assert!(report.partial, "{described}");
    assert!(report.duration_s < 60.0, "{described}");
    assert!(report.exchanges > 0, "{described}");
    let histogram = report
        .histogram
        .decode()
        .unwrap_or_else(|e| panic!("{e}\n{described}"));
    assert_eq!(histogram.count(), report.exchanges, "{described}");
    let table = bench.stdout.join("\n");
    let printed = format!("exchanges         {} (", report.exchanges);
    assert!(table.contains(&printed), "{table}");
    assert!(table.contains("partial           yes"), "{table}");
}

/// Every bad value is refused in one line with exit 2, and nothing connects.
#[test]
fn bad_payload_rate_and_ramp_values_are_refused_before_connecting() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("bind: {e}"));
    let endpoint = format!(
        "tcp://{}",
        listener.local_addr().unwrap_or_else(|e| panic!("{e}"))
    );
    let dir = scratch();
    let empty = dir.path().join("empty");
    std::fs::write(&empty, b"").unwrap_or_else(|e| panic!("{e}"));
    let empty = empty.display().to_string();
    let missing = dir.path().join("missing").display().to_string();
    let unwritable_json = dir.path().join("no-such-dir").join("run.json");
    let unwritable_json = unwritable_json.display().to_string();
    let directory = dir.path().display().to_string();
    // Writable, but the run is refused for its --plot: no empty report may be left.
    let fresh_json = dir.path().join("fresh.json");
    let fresh_json_arg = fresh_json.display().to_string();
    let cases: &[&[&str]] = &[
        &["--message", ""],
        &["--message-file", &missing],
        &["--message-file", &empty],
        &["--message", r"bad\q"],
        &["--first-message", ""],
        &["--reply-until", ""],
        &["--reply-regex", "(unclosed"],
        &["--reply-regex", ""],
        &["--reply-regex", "x*"],
        &["--reply-regex", "^"],
        &["--hlog-interval", "0"],
        &["--hlog", "-"],
        &["--plot", "-"],
        &["--json", &unwritable_json],
        &["--json", &directory],
        &["--json", &fresh_json_arg, "--plot", &unwritable_json],
        &["--rate", "0"],
        &["--rate", "-2"],
        &["--rate-per-conn", "0"],
        &["--rate-per-conn", "-5"],
        &["--connect-rate", "0/s"],
        &["--connect-rate", "-1"],
        &["--ramp-up", "0"],
        &[
            "--rate",
            "10",
            "--ramp-up",
            "5s",
            "-d",
            "1s",
            "--warmup",
            "0",
        ],
        &[
            "-c",
            "100",
            "--connect-rate",
            "10",
            "-d",
            "2s",
            "--warmup",
            "0",
        ],
        &["--ramp-up", "1s"],
    ];
    for case in cases {
        let mut argv = vec!["bench", endpoint.as_str(), "-p", "echo"];
        argv.extend_from_slice(case);
        let output = run_sockit(&argv, None);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(code(&output), 2, "{case:?}\n{}", describe(&output));
        assert_eq!(stderr.lines().count(), 1, "{case:?}\n{}", describe(&output));
        assert!(
            stderr.starts_with("error: "),
            "{case:?}\n{}",
            describe(&output)
        );
    }
    assert!(!fresh_json.exists(), "a refused run left {fresh_json_arg}");
    listener
        .set_nonblocking(true)
        .unwrap_or_else(|e| panic!("{e}"));
    let connected = listener.accept().map(|(_, peer)| peer);
    assert!(
        matches!(&connected, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "a refused run connected: {connected:?}"
    );
}

/// A `--reply-regex` that ends the replies completes an exchange only once a byte of its
/// reply has arrived, even where the regex can match nothing (`\b` matches before the
/// first byte): each completed exchange used up at least one byte the server sent.
#[test]
fn a_reply_regex_never_completes_an_exchange_without_a_reply_byte() {
    let echoed = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&echoed);
    let server = ThreadServer::start(move |mut conn| {
        let mut buf = [0u8; 4096];
        while let Ok(n @ 1..) = conn.read(&mut buf) {
            if conn.write_all(&buf[..n]).is_err() {
                return;
            }
            counter.fetch_add(n as u64, Ordering::Relaxed);
        }
    });
    let dir = scratch();
    let endpoint = server.endpoint();
    let (status, report, run) = bench(
        &[
            &endpoint,
            "-p",
            "echo",
            "--message",
            r"hi\n",
            "--reply-regex",
            r"\b",
            "-c",
            "1",
            "-d",
            "300ms",
            "--warmup",
            "0",
        ],
        &dir.path().join("regex.json"),
    );
    assert_eq!(status, 0, "{run}");
    assert!(report.exchanges > 0, "{run}");
    let echoed = echoed.load(Ordering::Relaxed);
    assert!(
        report.exchanges <= echoed,
        "{} exchanges completed on {echoed} reply bytes\n{run}",
        report.exchanges
    );
}

/// An echo reply is framed as long as its request and must repeat it: a reply from a
/// server that answers otherwise (here in capitals) counts as a mismatch with a hint to
/// frame its replies, instead of exchanges that are no echo (and, when the lengths
/// differ, a framing that drifts into pipelining and a rate many times the real one).
/// On both engines.
#[test]
fn an_echo_reply_that_does_not_repeat_the_request_is_a_mismatch() {
    let server =
        ThreadServer::start(|conn| answer_each_read(conn, |read| read.to_ascii_uppercase()));
    for engine in ["tasks", "lane"] {
        let (status, report, run) = ping_echo(&server.endpoint(), engine);
        assert_eq!(status, 1, "{engine}: {run}");
        assert_eq!(report.exchanges, 0, "{engine}: {run}");
        assert!(report.errors.mismatch > 0, "{engine}: {run}");
        assert!(
            run.contains("is not an echo of the request"),
            "{engine}: {run}"
        );
    }
}

/// A server that sends more than the echo (here a byte after each) is no echo server
/// either: its extra byte would be taken for the start of the next reply. Both engines
/// count mismatches; the task engine finds the byte at the start of the next reply (so
/// every other exchange succeeds, exit 0), the epoll engine as it reads it.
#[test]
fn an_echo_server_that_sends_more_than_the_request_is_a_mismatch() {
    let server = ThreadServer::start(|conn| answer_each_read(conn, |read| [read, b"!"].concat()));
    for engine in ["tasks", "lane"] {
        let (status, report, run) = ping_echo(&server.endpoint(), engine);
        assert!(report.errors.mismatch > 0, "{engine}: {run}");
        assert!(
            run.contains("is not an echo of the request"),
            "{engine}: {run}"
        );
        if engine == "lane" {
            assert_eq!(status, 1, "{engine}: {run}");
            assert_eq!(report.exchanges, 0, "{engine}: {run}");
        }
    }
}

/// Serves one connection: each read is answered with `answer` of it, until the client
/// closes.
fn answer_each_read(mut conn: TcpStream, answer: impl Fn(&[u8]) -> Vec<u8>) {
    let mut buf = [0u8; 4096];
    while let Ok(n @ 1..) = conn.read(&mut buf) {
        if conn.write_all(&answer(&buf[..n])).is_err() {
            return;
        }
    }
}

/// `-p echo --message 'ping\n'` on one connection for 300 ms against `endpoint`, on
/// `engine`: the exit status, the report and the whole run in words.
fn ping_echo(endpoint: &str, engine: &str) -> (i32, Report, String) {
    let dir = scratch();
    bench(
        &[
            endpoint,
            "-p",
            "echo",
            "--message",
            r"ping\n",
            "-c",
            "1",
            "-d",
            "300ms",
            "--warmup",
            "0",
            "--engine",
            engine,
        ],
        &dir.path().join("ping.json"),
    )
}

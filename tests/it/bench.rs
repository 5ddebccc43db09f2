//! Issue 4: `sockit bench`. Accuracy is proven against servers written here whose timing
//! is known (a fixed reply delay, a stall at a known moment), errors are provoked for real
//! (refused, reset, timeout, short reply, lost datagrams), every pattern runs against
//! `sockit serve` over each transport, and reports merge by adding histograms.
//!
//! Runs are short (0.5–1.5 s) and the tolerances wide: these check what the measurement
//! says, not how fast anything is.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use sockit::bench::Report;

use crate::util::{Proc, code, describe, run_sockit};

/// A test server on real loopback sockets, one thread per connection; stopped on drop.
pub(crate) struct ThreadServer {
    pub(crate) addr: SocketAddr,
    stop: Arc<AtomicBool>,
}

impl ThreadServer {
    /// Serves every connection with `handle` until dropped.
    pub(crate) fn start(handle: impl Fn(TcpStream) + Send + Sync + 'static) -> ThreadServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("bind: {e}"));
        let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
        let stop = Arc::new(AtomicBool::new(false));
        let handle = Arc::new(handle);
        let stopping = Arc::clone(&stop);
        thread::spawn(move || {
            for conn in listener.incoming() {
                if stopping.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let handle = Arc::clone(&handle);
                thread::spawn(move || handle(conn));
            }
        });
        ThreadServer { addr, stop }
    }

    /// `tcp://127.0.0.1:PORT`.
    pub(crate) fn endpoint(&self) -> String {
        format!("tcp://{}", self.addr)
    }
}

impl Drop for ThreadServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
    }
}

/// An echo server that answers each read after `delay` (and, with a stall, holds back
/// every reply due inside the stall until it ends).
pub(crate) fn echo_server(delay: Duration, stall: Option<(Duration, Duration)>) -> ThreadServer {
    let first_message: Arc<OnceLock<Instant>> = Arc::new(OnceLock::new());
    ThreadServer::start(move |mut conn| {
        let _ = conn.set_nodelay(true);
        let mut buf = [0u8; 4096];
        loop {
            let n = match conn.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            if !delay.is_zero() {
                thread::sleep(delay);
            }
            if let Some((from, length)) = stall {
                let now = Instant::now();
                let t0 = *first_message.get_or_init(|| now);
                let (start, end) = (t0 + from, t0 + from + length);
                if now >= start && now < end {
                    thread::sleep(end - now);
                }
            }
            if conn.write_all(&buf[..n]).is_err() {
                return;
            }
        }
    })
}

/// A scratch directory for JSON files and Unix sockets.
pub(crate) fn scratch() -> tempfile::TempDir {
    tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"))
}

/// Runs `sockit bench ARGS --json FILE` and returns the exit code, the report and a
/// description of the run for assertion messages.
pub(crate) fn bench(args: &[&str], json: &Path) -> (i32, Report, String) {
    let mut argv = vec!["bench"];
    argv.extend_from_slice(args);
    let json_arg = json.display().to_string();
    argv.extend_from_slice(&["--json", &json_arg]);
    let output = run_sockit(&argv, None);
    let described = format!("sockit {argv:?}\n{}", describe(&output));
    assert!(
        !String::from_utf8_lossy(&output.stderr).contains("panicked"),
        "{described}"
    );
    let text = std::fs::read_to_string(json)
        .unwrap_or_else(|e| panic!("no JSON report ({e})\n{described}"));
    let report = Report::from_json(&text).unwrap_or_else(|e| panic!("{e}\n{described}"));
    (code(&output), report, described)
}

/// `sockit bench ENDPOINT EXTRA… -c 2 -d 500ms --warmup 0 --engine ENGINE --json FILE`: a
/// short run of two connections on one engine, for the tests of how each engine counts a
/// failure.
pub(crate) fn short_run_on(
    engine: &str,
    endpoint: &str,
    extra: &[&str],
    json: &Path,
) -> (i32, Report, String) {
    let mut argv = vec![endpoint];
    argv.extend_from_slice(extra);
    argv.extend_from_slice(&[
        "-c", "2", "-d", "500ms", "--warmup", "0", "--engine", engine,
    ]);
    bench(&argv, json)
}

/// Both engines, for the tests of failures that each must count alike.
const ENGINES: [&str; 2] = ["lane", "tasks"];

/// The engine a report names, as `--engine` spells it.
pub(crate) fn engine_of(report: &Report) -> String {
    serde_json::to_value(report.engine)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// Milliseconds as the report's microseconds.
fn ms(n: u64) -> u64 {
    n * 1000
}

#[test]
fn reply_delay_is_measured_in_closed_loop() {
    let server = echo_server(Duration::from_millis(20), None);
    let dir = scratch();
    let (status, report, run) = bench(
        &[
            &server.endpoint(),
            "-p",
            "echo",
            "-s",
            "16",
            "-c",
            "4",
            "-d",
            "1s",
            "--warmup",
            "200ms",
        ],
        &dir.path().join("closed.json"),
    );
    assert_eq!(status, 0, "{run}");
    let l = report.latency_us;
    // sleep(20 ms) never returns early; the rest is loopback and scheduling.
    assert!(
        l.p50 >= ms(20) && l.p50 <= ms(30),
        "p50 {} µs\n{run}",
        l.p50
    );
    assert!(l.min >= ms(20), "min {} µs\n{run}", l.min);
    assert!(report.exchanges >= 40, "{run}");
    assert_eq!(report.errors.total, 0, "{run}");
}

#[test]
fn reply_delay_is_measured_in_open_loop() {
    let server = echo_server(Duration::from_millis(20), None);
    let dir = scratch();
    let (status, report, run) = bench(
        &[
            &server.endpoint(),
            "-p",
            "echo",
            "-s",
            "16",
            "-c",
            "4",
            "--rate",
            "100",
            "-d",
            "1s",
            "--warmup",
            "200ms",
        ],
        &dir.path().join("open.json"),
    );
    assert_eq!(status, 0, "{run}");
    let l = report.latency_us;
    assert!(
        l.p50 >= ms(20) && l.p50 <= ms(30),
        "p50 {} µs\n{run}",
        l.p50
    );
    // 100/s over 4 connections is one request per 40 ms each: easily kept.
    assert_eq!(report.target_rate_per_s, Some(100.0), "{run}");
    assert_eq!(report.rate_reached, Some(true), "{run}");
    assert!((80..=110).contains(&report.exchanges), "{run}");
}

/// The coordinated-omission check: a 500 ms stall, 400 ms into the run, on both engines.
#[test]
fn a_stall_shows_in_open_loop_and_hides_in_closed_loop() {
    for engine in ENGINES {
        let stall = Some((Duration::from_millis(400), Duration::from_millis(500)));
        let dir = scratch();
        let common = [
            "-p", "echo", "-s", "16", "-c", "2", "-d", "1500ms", "--warmup", "0", "--engine",
            engine,
        ];

        let server = echo_server(Duration::ZERO, stall);
        let endpoint = server.endpoint();
        let mut args = vec![endpoint.as_str()];
        args.extend_from_slice(&common);
        let (status, closed, closed_run) = bench(&args, &dir.path().join("closed.json"));
        assert_eq!(status, 0, "{closed_run}");
        drop(server);

        let server = echo_server(Duration::ZERO, stall);
        let endpoint = server.endpoint();
        let mut args = vec![endpoint.as_str(), "--rate", "200"];
        args.extend_from_slice(&common);
        let (status, open, open_run) = bench(&args, &dir.path().join("open.json"));
        assert_eq!(status, 0, "{open_run}");

        // Closed loop: each connection waits out the stall once; every other sample is fast.
        assert!(closed.latency_us.max >= ms(450), "{closed_run}");
        assert!(
            closed.exchanges >= 100,
            "too few samples to judge\n{closed_run}"
        );
        assert!(closed.latency_us.p90 < ms(100), "{closed_run}");
        // Open loop: every request due during the stall waited for it (a third of the run).
        assert!(open.latency_us.p90 >= ms(200), "{open_run}");
        assert!(open.latency_us.p99 >= ms(400), "{open_run}");
        assert!(open.latency_us.p50 < ms(100), "{open_run}");
        assert_eq!(engine_of(&open), engine, "{open_run}");
    }
}

/// On both engines (see `bench_engine`).
#[test]
fn refused_when_nothing_listens() {
    for engine in ENGINES {
        let port = {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
            listener.local_addr().map(|a| a.port()).unwrap_or(1)
        };
        let dir = scratch();
        let (status, report, run) = short_run_on(
            engine,
            &format!("127.0.0.1:{port}"),
            &[],
            &dir.path().join("refused.json"),
        );
        assert_eq!(status, 4, "exit code of 'refused'\n{run}");
        assert!(report.errors.refused > 0, "{run}");
        assert_eq!(report.errors.total, report.errors.refused, "{run}");
        assert_eq!(report.exchanges, 0, "{run}");
        assert_eq!(engine_of(&report), engine, "{run}");
        assert!(run.contains("connection refused"), "{run}");
    }
}

/// A host name that does not resolve (`.invalid` never does, and never leaves this
/// host) ends the run at once: one line naming the name, exit 3, no report, instead of a
/// whole `--duration` of failed connections counted as "other".
#[test]
fn a_name_that_does_not_resolve_ends_the_run_before_it_starts() {
    let output = run_sockit(
        &[
            "bench",
            "tcp://sockit-test.invalid:9",
            "-p",
            "echo",
            "-d",
            "2s",
            "--warmup",
            "0",
        ],
        None,
    );
    let described = describe(&output);
    assert_eq!(code(&output), 3, "{described}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "{described}");
    assert!(
        stderr.contains("could not resolve host \"sockit-test.invalid\""),
        "{described}"
    );
    assert!(
        output.stdout.is_empty(),
        "a report was printed\n{described}"
    );
}

/// On both engines (see `bench_engine`).
#[test]
fn silent_server_times_out() {
    for engine in ENGINES {
        let held = Arc::new(std::sync::Mutex::new(Vec::new()));
        let keep = Arc::clone(&held);
        let server = ThreadServer::start(move |conn| {
            if let Ok(mut all) = keep.lock() {
                all.push(conn); // never answer, never close
            }
        });
        let dir = scratch();
        let (status, report, run) = bench(
            &[
                &server.endpoint(),
                "-c",
                "2",
                "-d",
                "1s",
                "--warmup",
                "0",
                "--engine",
                engine,
                "--timeout",
                "200ms",
            ],
            &dir.path().join("timeout.json"),
        );
        assert_eq!(status, 5, "exit code of 'timed out'\n{run}");
        assert!(report.errors.timeout >= 4, "{run}");
        assert_eq!(report.exchanges, 0, "{run}");
        assert_eq!(engine_of(&report), engine, "{run}");
    }
}

/// On both engines (see `bench_engine`).
#[test]
fn closing_without_a_reply_is_a_short_reply() {
    for engine in ENGINES {
        let server = ThreadServer::start(|mut conn| {
            let mut buf = [0u8; 64];
            let _ = conn.read(&mut buf);
            // Close without answering.
        });
        let dir = scratch();
        let (status, report, run) = short_run_on(
            engine,
            &server.endpoint(),
            &[],
            &dir.path().join("short.json"),
        );
        assert_eq!(status, 1, "{run}");
        assert!(report.errors.short_reply > 0, "{run}");
        assert_eq!(report.exchanges, 0, "{run}");
        assert_eq!(engine_of(&report), engine, "{run}");
    }
}

/// On both engines (see `bench_engine`).
#[test]
fn an_abortive_close_is_a_reset() {
    for engine in ENGINES {
        let server = ThreadServer::start(|mut conn| {
            let mut buf = [0u8; 64];
            let _ = conn.read(&mut buf);
            // SO_LINGER 0: close sends RST instead of FIN.
            let _ = socket2::SockRef::from(&conn).set_linger(Some(Duration::ZERO));
        });
        let dir = scratch();
        let (status, report, run) = short_run_on(
            engine,
            &server.endpoint(),
            &["-p", "echo"],
            &dir.path().join("reset.json"),
        );
        assert_eq!(status, 1, "{run}");
        assert!(report.errors.reset > 0, "{run}");
        assert_eq!(report.exchanges, 0, "{run}");
        assert_eq!(engine_of(&report), engine, "{run}");
    }
}

/// On both engines (see `bench_engine`).
#[test]
fn lost_datagrams_are_counted() {
    for engine in ENGINES {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
        let addr = socket.local_addr().unwrap_or_else(|e| panic!("{e}"));
        let stop = Arc::new(AtomicBool::new(false));
        let answered = Arc::new(AtomicU64::new(0));
        let (stopping, count) = (Arc::clone(&stop), Arc::clone(&answered));
        let server = thread::spawn(move || {
            let _ = socket.set_read_timeout(Some(Duration::from_millis(100)));
            let mut buf = [0u8; 2048];
            let mut seen = 0u64;
            while !stopping.load(Ordering::Relaxed) {
                let Ok((n, peer)) = socket.recv_from(&mut buf) else {
                    continue;
                };
                seen += 1;
                // Answer every other datagram; drop the rest.
                if seen.is_multiple_of(2) {
                    let _ = socket.send_to(&buf[..n], peer);
                    count.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        let dir = scratch();
        let (status, report, run) = bench(
            &[
                &format!("udp://{addr}"),
                "-c",
                "4",
                "-d",
                "1s",
                "--warmup",
                "0",
                "--engine",
                engine,
                "--timeout",
                "100ms",
            ],
            &dir.path().join("loss.json"),
        );
        stop.store(true, Ordering::Relaxed);
        let _ = server.join();
        assert_eq!(status, 0, "{run}");
        let lost = report
            .lost
            .unwrap_or_else(|| panic!("no loss figures\n{run}"));
        assert!(lost.lost > 0 && report.exchanges > 0, "{run}");
        assert_eq!(engine_of(&report), engine, "{run}");
        assert_eq!(lost.lost, report.errors.timeout, "{run}");
        assert!(
            lost.percent > 20.0 && lost.percent < 80.0,
            "half the datagrams were dropped\n{run}"
        );
        assert!(
            answered.load(Ordering::Relaxed) >= report.exchanges,
            "{run}"
        );
    }
}

/// Serves `endpoint` with `sockit serve` and benchmarks it with `pattern`.
fn pattern_against_sockit(serve: &[&str], scheme: &str, pattern: &str, dir: &Path) -> Report {
    let mut server = Proc::sockit(&[&["serve", "-q"], serve].concat());
    let addr = server.listening();
    let target = match scheme {
        "unix" | "unixgram" => format!("{scheme}:{addr}"),
        _ => format!("{scheme}://{addr}"),
    };
    let (status, report, run) = bench(
        &[
            &target, "-p", pattern, "-c", "2", "-d", "500ms", "--warmup", "100ms",
        ],
        &dir.join(format!("{scheme}-{pattern}.json")),
    );
    assert_eq!(status, 0, "{run}\n{}", server.report());
    assert!(report.exchanges > 0, "{run}");
    assert_eq!(report.errors.total, 0, "{run}");
    assert!(report.bytes > 0, "{run}");
    report
}

#[test]
fn every_pattern_runs_against_sockit_serve_over_tcp() {
    let dir = scratch();
    let hello = pattern_against_sockit(&["tcp://127.0.0.1:0"], "tcp", "hello", dir.path());
    assert!(hello.latency_us.p50 > 0);
    pattern_against_sockit(&["tcp://127.0.0.1:0", "--echo"], "tcp", "echo", dir.path());
    let stream = pattern_against_sockit(
        &["tcp://127.0.0.1:0", "--discard"],
        "tcp",
        "stream",
        dir.path(),
    );
    assert!(stream.gbit_per_s > 0.0);
}

#[test]
fn every_pattern_runs_against_sockit_serve_over_unix() {
    let dir = scratch();
    let path = |name: &str| dir.path().join(name).display().to_string();
    let (hello, echo, stream) = (path("h.sock"), path("e.sock"), path("s.sock"));
    pattern_against_sockit(&[&format!("unix:{hello}")], "unix", "hello", dir.path());
    pattern_against_sockit(
        &[&format!("unix:{echo}"), "--echo"],
        "unix",
        "echo",
        dir.path(),
    );
    pattern_against_sockit(
        &[&format!("unix:{stream}"), "--discard"],
        "unix",
        "stream",
        dir.path(),
    );
}

#[test]
fn udp_pattern_runs_against_sockit_serve_over_both_datagram_transports() {
    let dir = scratch();
    let udp = pattern_against_sockit(&["udp://127.0.0.1:0"], "udp", "udp", dir.path());
    assert_eq!(udp.lost.map(|l| l.lost), Some(0));
    let path = dir.path().join("d.sock").display().to_string();
    pattern_against_sockit(
        &[&format!("unixgram:{path}")],
        "unixgram",
        "udp",
        dir.path(),
    );
}

#[test]
fn merge_adds_histograms_and_sums_throughput() {
    let mut server = Proc::sockit(&["serve", "-q", "tcp://127.0.0.1:0", "--echo"]);
    let target = format!("tcp://{}", server.listening());
    let dir = scratch();
    let args = [
        target.as_str(),
        "-p",
        "echo",
        "-c",
        "2",
        "-d",
        "500ms",
        "--warmup",
        "0",
    ];
    let a_path = dir.path().join("a.json");
    let b_path = dir.path().join("b.json");
    let (_, a, a_run) = bench(&args, &a_path);
    let (_, b, _) = bench(&args, &b_path);
    assert!(a.exchanges > 0 && b.exchanges > 0, "{a_run}");

    let merged_path = dir.path().join("merged.json");
    let output = run_sockit(
        &[
            "bench",
            "merge",
            &a_path.display().to_string(),
            &b_path.display().to_string(),
            "--json",
            &merged_path.display().to_string(),
        ],
        None,
    );
    assert_eq!(code(&output), 0, "{}", describe(&output));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("2 runs merged"), "{stdout}");
    let text = std::fs::read_to_string(&merged_path).unwrap_or_else(|e| panic!("{e}"));
    let merged = Report::from_json(&text).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(merged.runs, 2);
    assert_eq!(merged.exchanges, a.exchanges + b.exchanges);
    assert_eq!(merged.connections, 4);
    let rate_sum = a.exchanges_per_s + b.exchanges_per_s;
    assert!((merged.exchanges_per_s - rate_sum).abs() < 1e-6 * rate_sum);
    let histogram = merged.histogram.decode().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(histogram.count(), a.latency_us.count + b.latency_us.count);
    assert_eq!(merged.latency_us.count, histogram.count());
    assert_eq!(
        merged.latency_us.max,
        a.latency_us.max.max(b.latency_us.max)
    );
}

#[test]
fn merge_refuses_bad_files_with_a_reason() {
    let dir = scratch();
    let junk = dir.path().join("junk.json");
    std::fs::write(&junk, "{\"hello\": 1}").unwrap_or_else(|e| panic!("{e}"));
    let output = run_sockit(&["bench", "merge", &junk.display().to_string()], None);
    assert_eq!(code(&output), 2, "{}", describe(&output));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("not a sockit bench report"),
        "{}",
        describe(&output)
    );
    let missing: PathBuf = dir.path().join("missing.json");
    let output = run_sockit(&["bench", "merge", &missing.display().to_string()], None);
    assert_eq!(code(&output), 2, "{}", describe(&output));
}

#[test]
fn json_on_stdout_and_no_progress_bar_when_piped() {
    let mut server = Proc::sockit(&["serve", "-q", "udp://127.0.0.1:0"]);
    let target = format!("udp://{}", server.listening());
    let output = run_sockit(
        &[
            "bench", &target, "-d", "300ms", "--warmup", "0", "--json", "-",
        ],
        None,
    );
    assert_eq!(code(&output), 0, "{}", describe(&output));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let report = Report::from_json(&stdout).unwrap_or_else(|e| panic!("{e}\n{stdout}"));
    assert!(report.exchanges > 0);
    // The table went to stderr; no progress bar drawing anywhere.
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("latency p99"), "{stderr}");
    assert!(!stdout.contains('\r') && !stderr.contains('\r'), "{stderr}");
    assert!(
        !stdout.contains('\x1b') && !stderr.contains('\x1b'),
        "{stderr}"
    );
}

#[test]
fn usage_errors_name_the_fix() {
    let cases: [(&[&str], &str); 4] = [
        (&["bench", "udp", "-p", "echo"], "--pattern udp"),
        (&["bench", "tcp", "-p", "stream", "--rate", "10"], "--rate"),
        (&["bench", "tcp", "-c", "0"], "--connections"),
        (&["bench", "tcp", "--rate", "fast"], "requests per second"),
    ];
    for (args, needle) in cases {
        let output = run_sockit(args, None);
        assert_eq!(code(&output), 2, "{}", describe(&output));
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(needle), "{needle:?} missing\n{stderr}");
    }
    let help = run_sockit(&["bench", "--help"], None);
    let help = String::from_utf8_lossy(&help.stdout);
    for needle in ["Examples:", "--rate", "coordinated omission", "bench merge"] {
        assert!(help.contains(needle), "{needle:?} missing from --help");
    }
}

/// Echo replies that arrive in pieces, or ahead of their request (the server answers the
/// first message twice, so the stream stays one reply ahead), are each taken as one whole
/// reply: a reply read together with the start of the next one carries it over.
#[test]
fn echo_replies_split_or_ahead_are_counted_whole() {
    let server = ThreadServer::start(|mut conn| {
        let _ = conn.set_nodelay(true);
        let mut request = [0u8; 64];
        let mut first = true;
        while conn.read_exact(&mut request).is_ok() {
            let mut reply = request.to_vec();
            if first {
                reply.extend_from_slice(&request);
                first = false;
            }
            let (head, tail) = reply.split_at(10);
            let sent = conn
                .write_all(head)
                .and_then(|()| conn.flush())
                .and_then(|()| conn.write_all(tail));
            if sent.is_err() {
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
            "2",
            "--size",
            "64",
            "-d",
            "500ms",
            "--warmup",
            "0",
        ],
        &dir.path().join("run.json"),
    );
    assert_eq!(status, 0, "{run}");
    assert!(report.exchanges > 10, "{run}");
    assert_eq!(report.errors.total, 0, "{run}");
}

//! Issue 22: what `sockit bench` leaves behind for other tools and other machines: the
//! HdrHistogram interval log (`--hlog`, read back by Python's independent `hdrhistogram`
//! package), the SVG plot (`--plot`, parsed as XML and rendered by `rsvg-convert`), runs
//! on several machines lined up by `--start-at` and merged, and a Ctrl-C before
//! measuring begins.

use std::collections::HashMap;
use std::io::Read;
use std::net::TcpListener;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use sockit::bench::Report;

use crate::bench::{ThreadServer, bench, scratch};
use crate::util::{Proc, TIMEOUT, code, describe, python, run_sockit};

/// Reads an interval log with the Python `hdrhistogram` package (`hdrh.log`) and prints
/// the intervals, the total count, and the p50 and p99 of all intervals added up, each as
/// the values one sample below and above it (the two libraries round a percentile's rank
/// differently, by up to one sample).
const HLOG_READER: &str = r#"
import json, sys
from hdrh.histogram import HdrHistogram
from hdrh.log import HistogramLogReader
reference = HdrHistogram(1, 24 * 3600 * 1000000, 3)
reader = HistogramLogReader(sys.argv[1], reference)
total = HdrHistogram(1, 24 * 3600 * 1000000, 3)
intervals = 0
while True:
    interval = reader.get_next_interval_histogram()
    if interval is None:
        break
    intervals += 1
    total.add(interval)
count = total.get_total_count()
def around(percentile):
    step = 100.0 / max(count, 1)
    return [total.get_value_at_percentile(max(percentile - step, 0.0)),
            total.get_value_at_percentile(min(percentile + step, 100.0))]
print(json.dumps({
    "intervals": intervals,
    "start_time": reader.get_start_time_sec(),
    "count": count,
    "p50": around(50),
    "p99": around(99),
}))
"#;

/// Parses an SVG with `xml.etree` and prints the text of every `<text>` element and the
/// number of `<polyline>` elements.
const SVG_READER: &str = r#"
import json, sys
import xml.etree.ElementTree as ET
root = ET.parse(sys.argv[1]).getroot()
ns = "{http://www.w3.org/2000/svg}"
texts = [(t.text or "").strip() for t in root.iter(ns + "text")]
lines = sum(1 for _ in root.iter(ns + "polyline"))
print(json.dumps({"root": root.tag, "texts": texts, "polylines": lines}))
"#;

/// Runs `program ARGS` to completion, killing it after [`TIMEOUT`].
fn run_within_timeout(program: &str, args: &[&std::ffi::OsStr]) -> std::process::Output {
    assert_cmd::Command::new(program)
        .args(args)
        .timeout(TIMEOUT)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"))
}

/// Runs a Python script on `file` and parses the JSON it prints.
fn python_json(script: &str, file: &Path) -> serde_json::Value {
    let output = run_within_timeout(
        &python(),
        &["-c".as_ref(), script.as_ref(), file.as_os_str()],
    );
    let described = describe(&output);
    assert!(output.status.success(), "{described}");
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| panic!("{e}\n{described}"))
}

/// An echo server that answers at once.
fn echo_server() -> ThreadServer {
    crate::bench::echo_server(Duration::ZERO, None)
}

/// Whether a latency lies in `[low, high]` (as Python printed them) to the histogram's
/// precision: 3 significant figures (0.1 %), plus the microsecond values are rounded to.
fn within_to_precision(value: u64, range: &serde_json::Value) -> bool {
    let bound = |i: usize| range[i].as_u64().unwrap_or_default();
    let slack = |v: u64| v / 1000 + 1;
    value + slack(value) >= bound(0) && value <= bound(1) + slack(bound(1))
}

#[test]
fn hlog_read_by_python_hdrhistogram_matches_the_report() {
    let server = echo_server();
    let dir = scratch();
    let hlog = dir.path().join("run.hlog");
    let hlog_arg = hlog.display().to_string();
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
            "100ms",
            "--hlog",
            &hlog_arg,
        ],
        &dir.path().join("run.json"),
    );
    assert_eq!(status, 0, "{run}");
    assert!(report.exchanges > 0, "{run}");
    let text = std::fs::read_to_string(&hlog).unwrap_or_else(|e| panic!("{e}\n{run}"));
    let read = python_json(HLOG_READER, &hlog);
    let context = format!("{read}\n{text}\n{run}");
    // 1.5 s in intervals of 1 s: a full one and a half one.
    assert_eq!(read["intervals"], 2, "{context}");
    assert_eq!(read["count"], report.exchanges, "{context}");
    assert!(
        within_to_precision(report.latency_us.p50, &read["p50"]),
        "{context}"
    );
    assert!(
        within_to_precision(report.latency_us.p99, &read["p99"]),
        "{context}"
    );
    assert!(text.contains("0.000,1.000,"), "{text}");
    assert!(text.contains("1.000,0.500,"), "{text}");
}

/// Reads an interval log with the Python `hdrhistogram` package and prints the total
/// count of its untagged lines and of those tagged `ramp`.
const HLOG_TAG_COUNTER: &str = r#"
import json, sys
from hdrh.histogram import HdrHistogram
from hdrh.log import HistogramLogReader
reader = HistogramLogReader(sys.argv[1], HdrHistogram(1, 24 * 3600 * 1000000, 3))
counts = {}
while True:
    interval = reader.get_next_interval_histogram()
    if interval is None:
        break
    tag = interval.get_tag() or "untagged"
    counts[tag] = counts.get(tag, 0) + interval.get_total_count()
print(json.dumps(counts))
"#;

/// With `--ramp-up`, the report keeps the ramp's exchanges out of its main histogram;
/// the interval log does the same: its untagged lines count the main figures' exchanges,
/// and lines tagged `ramp` the ramp's.
#[test]
fn hlog_keeps_the_ramp_on_tagged_lines_as_the_report_does() {
    let server = echo_server();
    let dir = scratch();
    let hlog = dir.path().join("ramp.hlog");
    let hlog_arg = hlog.display().to_string();
    let (status, report, run) = bench(
        &[
            &server.endpoint(),
            "-p",
            "echo",
            "-c",
            "2",
            "--rate",
            "400",
            "--ramp-up",
            "600ms",
            "-d",
            "1s",
            "--warmup",
            "100ms",
            "--hlog-interval",
            "250ms",
            "--hlog",
            &hlog_arg,
        ],
        &dir.path().join("ramp.json"),
    );
    assert_eq!(status, 0, "{run}");
    let ramp = report.ramp.as_ref().map_or(0, |r| r.exchanges);
    assert!(ramp > 0 && report.exchanges > 0, "{run}");
    let text = std::fs::read_to_string(&hlog).unwrap_or_else(|e| panic!("{e}\n{run}"));
    let counts = python_json(HLOG_TAG_COUNTER, &hlog);
    let context = format!("{counts}\n{text}\n{run}");
    assert_eq!(counts["untagged"], report.exchanges, "{context}");
    assert_eq!(counts["ramp"], ramp, "{context}");
}

#[test]
fn plot_is_an_svg_with_every_series_that_renders() {
    let server = echo_server();
    let dir = scratch();
    let svg = dir.path().join("run.svg");
    let svg_arg = svg.display().to_string();
    let (status, report, run) = bench(
        &[
            &server.endpoint(),
            "-p",
            "echo",
            "-c",
            "2",
            "-d",
            "1200ms",
            "--warmup",
            "100ms",
            "--hlog-interval",
            "300ms",
            "--plot",
            &svg_arg,
        ],
        &dir.path().join("run.json"),
    );
    assert_eq!(status, 0, "{run}");
    assert!(report.exchanges > 0, "{run}");
    let read = python_json(SVG_READER, &svg);
    assert_eq!(read["root"], "{http://www.w3.org/2000/svg}svg", "{read}");
    let texts: Vec<&str> = read["texts"]
        .as_array()
        .map(|t| t.iter().filter_map(|v| v.as_str()).collect())
        .unwrap_or_default();
    for series in [
        sockit::bench::plot::SERIES_SPECTRUM,
        sockit::bench::plot::SERIES_THROUGHPUT,
        sockit::bench::plot::SERIES_P99,
    ] {
        assert!(texts.contains(&series), "{series} missing: {read}");
    }
    assert!(texts.contains(&"99%"), "no percentile axis: {read}");
    assert!(
        read["polylines"].as_u64().unwrap_or_default() >= 3,
        "{read}"
    );
    let png = dir.path().join("run.png");
    let rendered = run_within_timeout(
        "rsvg-convert",
        &[svg.as_os_str(), "-o".as_ref(), png.as_os_str()],
    );
    assert!(rendered.status.success(), "{}", describe(&rendered));
    let bytes = std::fs::read(&png).unwrap_or_else(|e| panic!("{e}"));
    assert!(bytes.starts_with(b"\x89PNG"), "not a PNG");
}

/// `--hlog` and `--plot` to a path that cannot be written: one line, exit 2, and no
/// connection is made.
#[test]
fn unwritable_hlog_or_plot_is_one_line_exit_2_before_connecting() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("bind: {e}"));
    listener
        .set_nonblocking(true)
        .unwrap_or_else(|e| panic!("{e}"));
    let endpoint = format!(
        "tcp://{}",
        listener.local_addr().unwrap_or_else(|e| panic!("{e}"))
    );
    let dir = scratch();
    let missing = dir.path().join("no-such-dir").join("out");
    let missing = missing.display().to_string();
    for (flag, said) in [
        ("--hlog", "cannot write --hlog"),
        ("--plot", "cannot write --plot"),
    ] {
        let output = run_sockit(&["bench", &endpoint, "-d", "1s", flag, &missing], None);
        let described = describe(&output);
        assert_eq!(code(&output), 2, "{described}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(stderr.trim().lines().count(), 1, "{described}");
        assert!(stderr.contains(said), "{described}");
        assert!(listener.accept().is_err(), "{flag}: a connection was made");
    }
    let svg = dir.path().join("x.svg").display().to_string();
    let output = run_sockit(
        &["bench", &endpoint, "--hlog-interval", "1ms", "--plot", &svg],
        None,
    );
    assert_eq!(code(&output), 2, "{}", describe(&output));
    assert!(listener.accept().is_err(), "a connection was made");
}

/// The wall-clock time of every connection a server accepted.
fn recording_echo_server() -> (ThreadServer, Arc<Mutex<Vec<SystemTime>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&seen);
    let server = ThreadServer::start(move |mut conn| {
        if let Ok(mut seen) = log.lock() {
            seen.push(SystemTime::now());
        }
        let mut buf = [0u8; 4096];
        while let Ok(n @ 1..) = conn.read(&mut buf) {
            if std::io::Write::write_all(&mut conn, &buf[..n]).is_err() {
                return;
            }
        }
    });
    (server, seen)
}

/// Two runs given one `--start-at` measure from that instant (their interval logs say
/// so), send nothing before their warm-up, merge, and plot side by side.
#[test]
fn start_at_lines_up_two_runs_that_merge_and_plot_together() {
    let (server, connected) = recording_echo_server();
    let dir = scratch();
    let warmup = Duration::from_millis(300);
    let measure_at = SystemTime::now() + Duration::from_secs(2);
    let since_epoch = measure_at
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    // Whole milliseconds, so the log's 3 decimals show it exactly.
    let measure_at = SystemTime::UNIX_EPOCH
        + Duration::from_millis(since_epoch.as_millis().try_into().unwrap_or(u64::MAX));
    let at = format!(
        "{:.3}",
        measure_at
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs_f64()
    );
    let endpoint = server.endpoint();
    let mut runs = Vec::new();
    for name in ["a", "b"] {
        let json = dir
            .path()
            .join(format!("{name}.json"))
            .display()
            .to_string();
        let hlog = dir
            .path()
            .join(format!("{name}.hlog"))
            .display()
            .to_string();
        let bench = Proc::sockit(&[
            "bench",
            &endpoint,
            "-p",
            "echo",
            "-c",
            "1",
            "-d",
            "500ms",
            "--warmup",
            "300ms",
            "--start-at",
            &at,
            "--json",
            &json,
            "--hlog",
            &hlog,
        ]);
        runs.push((bench, json, hlog));
    }
    let mut jsons = Vec::new();
    for (mut bench, json, hlog) in runs {
        let status = bench.wait_exit();
        let described = format!("{status}\n{}", bench.report());
        assert_eq!(status.code(), Some(0), "{described}");
        assert!(bench.stderr().contains("waiting until"), "{described}");
        let read = python_json(HLOG_READER, Path::new(&hlog));
        let start = read["start_time"].as_f64().unwrap_or_default();
        let asked = at.parse::<f64>().unwrap_or_default();
        assert!((start - asked).abs() < 0.0005, "{read}\n{described}");
        jsons.push(json);
    }
    let first = connected
        .lock()
        .map(|seen| seen.iter().min().copied())
        .unwrap_or_default();
    let first = first.unwrap_or_else(|| panic!("no connection was made"));
    assert!(
        first >= measure_at - warmup,
        "a run connected before its warm-up: {first:?} < {:?}",
        measure_at - warmup
    );
    let merged = dir.path().join("merged.json");
    let merged_arg = merged.display().to_string();
    let svg = dir.path().join("both.svg");
    let svg_arg = svg.display().to_string();
    let output = run_sockit(
        &[
            "bench",
            "merge",
            &jsons[0],
            &jsons[1],
            "--json",
            &merged_arg,
            "--plot",
            &svg_arg,
        ],
        None,
    );
    assert_eq!(code(&output), 0, "{}", describe(&output));
    let read = python_json(SVG_READER, &svg);
    let texts = read["texts"].to_string();
    for series in [sockit::bench::plot::SERIES_MERGED, &jsons[0], &jsons[1]] {
        assert!(texts.contains(series), "{series} missing: {read}");
    }
    let text = std::fs::read_to_string(&merged).unwrap_or_else(|e| panic!("{e}"));
    let merged = Report::from_json(&text).unwrap_or_else(|e| panic!("{e}"));
    let reports: Vec<Report> = jsons
        .iter()
        .map(|path| {
            let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{e}"));
            Report::from_json(&text).unwrap_or_else(|e| panic!("{e}"))
        })
        .collect();
    assert_eq!(merged.runs, 2);
    assert_eq!(
        merged.exchanges,
        reports[0].exchanges + reports[1].exchanges
    );
}

/// A start that leaves no room for the warm-up, or more than a day ahead, is refused in
/// one line with exit 2 before any connection.
#[test]
fn start_at_in_the_past_or_too_far_ahead_is_refused() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("bind: {e}"));
    listener
        .set_nonblocking(true)
        .unwrap_or_else(|e| panic!("{e}"));
    let endpoint = format!(
        "tcp://{}",
        listener.local_addr().unwrap_or_else(|e| panic!("{e}"))
    );
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let past = (now - 10).to_string();
    // Ahead, but not by the 10 s warm-up.
    let soon = (now + 5).to_string();
    let far = (now + 25 * 3600).to_string();
    let cases: HashMap<&str, &str> = [
        (past.as_str(), "is in the past"),
        ("1796620", "--start-at 1970-01-21T19:03:40Z is in the past"),
        (soon.as_str(), "too soon"),
        (far.as_str(), "within 1day"),
        ("2026-13-01T00:00:00Z", "RFC 3339"),
    ]
    .into_iter()
    .collect();
    for (at, said) in cases {
        let output = run_sockit(
            &["bench", &endpoint, "--warmup", "10s", "--start-at", at],
            None,
        );
        let described = describe(&output);
        assert_eq!(code(&output), 2, "{at}: {described}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(stderr.trim().lines().count(), 1, "{described}");
        assert!(stderr.contains(said), "{at}: {described}");
        assert!(listener.accept().is_err(), "{at}: a connection was made");
    }
}

/// Waits (bounded) until the process's stderr contains `text`.
fn wait_for_stderr(process: &mut Proc, text: &str) {
    let deadline = Instant::now() + TIMEOUT;
    while !process.stderr().contains(text) {
        assert!(
            Instant::now() < deadline && process.is_running(),
            "no {text:?} on stderr\n{}",
            process.report()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Issue 22: Ctrl-C during the warm-up said nothing was measured because every request
/// "was still waiting at the end"; it says the run was stopped before measuring began.
#[test]
fn ctrl_c_during_the_warm_up_says_measuring_had_not_begun() {
    let server = echo_server();
    let endpoint = server.endpoint();
    let mut bench = Proc::sockit(&[
        "bench", &endpoint, "-p", "echo", "-c", "2", "-d", "10s", "--warmup", "60s",
    ]);
    wait_for_stderr(&mut bench, "warming up for 1m");
    bench.signal(libc::SIGINT);
    let status = bench.wait_exit();
    let stderr = bench.stderr();
    let described = format!("{status}\n{}", bench.report());
    assert_eq!(status.code(), Some(1), "{described}");
    assert!(
        stderr.contains("interrupted before measuring began (warm-up 1m)"),
        "{described}"
    );
    assert!(!stderr.contains("still waiting"), "{described}");
}

/// Runs `sockit bench merge ARGS --json -` and parses the JSON it prints.
fn merge_json(files: &[&str]) -> serde_json::Value {
    let mut args = vec!["bench", "merge"];
    args.extend_from_slice(files);
    args.extend_from_slice(&["--json", "-"]);
    let output = run_sockit(&args, None);
    let described = describe(&output);
    assert_eq!(code(&output), 0, "{described}");
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| panic!("{e}\n{described}"))
}

/// `bench merge` of two runs' interval logs adds every interval: the count is the two
/// runs' exchanges, and the percentiles are those of merging the same runs' JSON reports.
#[test]
fn merging_interval_logs_gives_the_json_merge_latency() {
    let server = echo_server();
    let dir = scratch();
    let mut jsons = Vec::new();
    let mut hlogs = Vec::new();
    let mut exchanges = 0;
    for name in ["a", "b"] {
        let hlog = dir
            .path()
            .join(format!("{name}.hlog"))
            .display()
            .to_string();
        let json = dir.path().join(format!("{name}.json"));
        let (status, report, run) = bench(
            &[
                &server.endpoint(),
                "-p",
                "echo",
                "-c",
                "2",
                "-d",
                "1200ms",
                "--warmup",
                "100ms",
                "--hlog-interval",
                "500ms",
                "--hlog",
                &hlog,
            ],
            &json,
        );
        assert_eq!(status, 0, "{run}");
        assert!(report.exchanges > 0, "{run}");
        exchanges += report.exchanges;
        jsons.push(json.display().to_string());
        hlogs.push(hlog);
    }
    let from_logs = merge_json(&[&hlogs[0], &hlogs[1]]);
    let from_reports = merge_json(&[&jsons[0], &jsons[1]]);
    let context = format!("{from_logs:#}\n{from_reports:#}");
    assert_eq!(from_logs["logs"], 2, "{context}");
    // 1.2 s in intervals of 0.5 s: three per run.
    assert_eq!(from_logs["intervals"], 6, "{context}");
    assert_eq!(from_logs["latency_us"]["count"], exchanges, "{context}");
    assert_eq!(
        from_logs["latency_us"], from_reports["latency_us"],
        "{context}"
    );
    let table = run_sockit(&["bench", "merge", &hlogs[0], &hlogs[1]], None);
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(text.contains("latency p99"), "{}", describe(&table));
    assert!(
        text.contains("merged            2 interval logs, 6 intervals\n"),
        "{}",
        describe(&table)
    );
    let one = run_sockit(&["bench", "merge", &hlogs[0]], None);
    assert!(
        String::from_utf8_lossy(&one.stdout).contains("merged            1 interval log, 3 "),
        "{}",
        describe(&one)
    );
    assert!(
        text.contains(&format!("exchanges         {exchanges}\n")),
        "{}",
        describe(&table)
    );
}

/// A corrupt interval log, or one mixed with JSON reports, is one line and exit 2.
#[test]
fn corrupt_interval_log_is_one_line_exit_2() {
    let dir = scratch();
    let good = dir.path().join("good.hlog");
    std::fs::write(
        &good,
        "#[StartTime: 1700000000.000 (seconds since epoch)]\n\
         \"StartTimestamp\",\"Interval_Length\",\"Interval_Max\",\"Interval_Compressed_Histogram\"\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let garbage = dir.path().join("garbage.hlog");
    std::fs::write(
        &garbage,
        "#[StartTime: 1700000000.000]\nnot a histogram line\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let bad_data = dir.path().join("bad.hlog");
    std::fs::write(&bad_data, "0.000,1.000,5.000,HISTFAAAAnot-base64!\n")
        .unwrap_or_else(|e| panic!("{e}"));
    let json = dir.path().join("run.json");
    std::fs::write(&json, "{\"format\": \"sockit-bench/1\"}").unwrap_or_else(|e| panic!("{e}"));
    let path = |p: &Path| p.display().to_string();
    for (files, says) in [
        (vec![path(&good), path(&garbage)], "line 2 is not part of"),
        (vec![path(&bad_data)], "interval 1 of the interval log"),
        (
            vec![path(&good), path(&json)],
            "cannot merge JSON reports with",
        ),
    ] {
        let mut args = vec!["bench", "merge"];
        args.extend(files.iter().map(String::as_str));
        let output = run_sockit(&args, None);
        let described = describe(&output);
        assert_eq!(code(&output), 2, "{described}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(stderr.trim().lines().count(), 1, "{described}");
        assert!(stderr.contains(says), "{described}");
    }
}

/// Decodes a PNG as `rsvg-convert` writes it (8-bit RGB or RGBA, not interlaced) with the
/// standard library alone and prints, as JSON, how many pixels that are not white lie in
/// the outermost 3 pixels of each edge: text cut off at the picture's border leaves ink
/// there.
const PNG_EDGE_INK: &str = r#"
import json, struct, sys, zlib
data = open(sys.argv[1], "rb").read()
pos, idat, width, height, bpp = 8, b"", 0, 0, 4
while pos < len(data):
    length, kind = struct.unpack(">I4s", data[pos:pos + 8])
    body = data[pos + 8:pos + 8 + length]
    if kind == b"IHDR":
        width, height, depth, colour = struct.unpack(">IIBB", body[:10])
        assert depth == 8 and colour in (2, 6), (depth, colour)
        bpp = 4 if colour == 6 else 3
    elif kind == b"IDAT":
        idat += body
    pos += 12 + length
raw, stride, rows = zlib.decompress(idat), width * bpp, []
prev = bytearray(stride)
for y in range(height):
    kind, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
    for i in range(stride):
        a = line[i - bpp] if i >= bpp else 0
        b, c = prev[i], (prev[i - bpp] if i >= bpp else 0)
        if kind == 1: line[i] = (line[i] + a) & 255
        elif kind == 2: line[i] = (line[i] + b) & 255
        elif kind == 3: line[i] = (line[i] + (a + b) // 2) & 255
        elif kind == 4:
            p = a + b - c
            pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
            line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
    rows.append(line)
    prev = line
def ink(x, y):
    pixel = rows[y][bpp * x:bpp * x + bpp]
    return (bpp == 3 or pixel[3] > 0) and min(pixel[:3]) < 200
edge = 3
print(json.dumps({
    "left": sum(ink(x, y) for y in range(height) for x in range(edge)),
    "right": sum(ink(x, y) for y in range(height) for x in range(width - edge, width)),
    "top": sum(ink(x, y) for x in range(width) for y in range(edge)),
    "bottom": sum(ink(x, y) for x in range(width) for y in range(height - edge, height)),
}))
"#;

/// Prints, as JSON, the colour of every drawn series line (2 px wide) of an SVG and its
/// contrast ratio against white (WCAG: 3:1 is the least for lines to read).
const SVG_LINE_CONTRAST: &str = r#"
import json, sys
import xml.etree.ElementTree as ET
ns = "{http://www.w3.org/2000/svg}"
def luminance(hex_colour):
    channels = [int(hex_colour[i:i + 2], 16) / 255 for i in (1, 3, 5)]
    linear = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
    return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]
root = ET.parse(sys.argv[1]).getroot()
strokes = {p.get("stroke") for p in root.iter(ns + "polyline") if p.get("stroke-width") == "2"}
print(json.dumps({s: round(1.05 / (luminance(s) + 0.05), 2) for s in sorted(strokes)}))
"#;

/// Renders an SVG with `rsvg-convert` and asserts that no ink touches the picture's
/// border (a label cut off) and that every series line reads on the white background.
fn assert_plot_reads_whole(svg: &Path, context: &str) {
    let png = svg.with_extension("png");
    let rendered = run_within_timeout(
        "rsvg-convert",
        &[svg.as_os_str(), "-o".as_ref(), png.as_os_str()],
    );
    assert!(rendered.status.success(), "{}", describe(&rendered));
    let edges = python_json(PNG_EDGE_INK, &png);
    for side in ["left", "right", "top", "bottom"] {
        assert_eq!(
            edges[side],
            0,
            "ink at the {side} border of {} (a cut-off label): {edges}\n{context}",
            svg.display()
        );
    }
    let contrasts = python_json(SVG_LINE_CONTRAST, svg);
    let lines = contrasts.as_object().map(|o| o.len()).unwrap_or_default();
    assert!(
        lines >= 2,
        "no series lines in {}: {contrasts}",
        svg.display()
    );
    for (colour, ratio) in contrasts.as_object().into_iter().flatten() {
        let ratio = ratio.as_f64().unwrap_or_default();
        assert!(
            ratio >= 3.0,
            "the line {colour} has a contrast of {ratio}:1 on white in {}\n{context}",
            svg.display()
        );
    }
}

/// The plot of a run and of a merge of three runs: the last percentile label ("99.99%"
/// with over 1,000 exchanges) is drawn whole inside the picture, and no series line is a
/// light colour that fades into the white background.
#[test]
fn plot_labels_stay_inside_the_picture_and_every_line_reads_on_white() {
    let server = echo_server();
    let dir = scratch();
    let svg = dir.path().join("run.svg");
    let svg_arg = svg.display().to_string();
    let json = dir.path().join("run.json");
    let (status, report, run) = bench(
        &[
            &server.endpoint(),
            "-p",
            "echo",
            "-c",
            "2",
            "-d",
            "1s",
            "--warmup",
            "0",
            "--hlog-interval",
            "250ms",
            "--plot",
            &svg_arg,
        ],
        &json,
    );
    assert_eq!(status, 0, "{run}");
    assert!(report.exchanges > 1000, "too few exchanges to test: {run}");
    assert_plot_reads_whole(&svg, &run);
    let json_arg = json.display().to_string();
    let merged_svg = dir.path().join("merged.svg");
    let merged_arg = merged_svg.display().to_string();
    let output = run_sockit(
        &[
            "bench",
            "merge",
            &json_arg,
            &json_arg,
            &json_arg,
            "--plot",
            &merged_arg,
        ],
        None,
    );
    assert_eq!(code(&output), 0, "{}", describe(&output));
    assert_plot_reads_whole(&merged_svg, &describe(&output));
}

/// Ctrl-C after measuring began, against a server that never answers: the one line says
/// how long was measured before the interrupt, not the whole `--duration` the run never
/// reached, and does not suggest raising `--duration`.
#[test]
fn ctrl_c_with_nothing_answered_names_the_span_measured_before_it() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("bind: {e}"));
    let endpoint = format!(
        "tcp://{}",
        listener.local_addr().unwrap_or_else(|e| panic!("{e}"))
    );
    // Reads the requests and never answers; says when the first one arrives, which is
    // when measuring has begun (no warm-up).
    let (arrived, first_request) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let Ok((mut conn, _)) = listener.accept() else {
            return;
        };
        let mut buf = [0u8; 64];
        if conn.read(&mut buf).is_ok_and(|n| n > 0) {
            let _ = arrived.send(());
        }
        // Held open until the run ends and closes it.
        while conn.read(&mut buf).is_ok_and(|n| n > 0) {}
    });
    let mut bench = Proc::sockit(&[
        "bench", &endpoint, "-p", "echo", "-c", "1", "-d", "1h", "--warmup", "0", "-t", "1h",
    ]);
    first_request
        .recv_timeout(TIMEOUT)
        .unwrap_or_else(|e| panic!("no request arrived: {e}\n{}", bench.report()));
    bench.signal(libc::SIGINT);
    let status = bench.wait_exit();
    let stderr = bench.stderr();
    let described = format!("{status}\n{}", bench.report());
    assert_eq!(status.code(), Some(1), "{described}");
    let error = stderr
        .lines()
        .find(|line| line.starts_with("error:"))
        .unwrap_or_else(|| panic!("no error line\n{described}"));
    assert!(error.contains("before the interrupt"), "{described}");
    assert!(!error.contains("measured 1h"), "{described}");
    assert!(!error.contains("--duration"), "{described}");
}

/// Out of file descriptors (`ulimit -n 64`, 200 connections asked): the table says how
/// many connections the figures come from, not only the 200 of the pattern line.
#[test]
fn the_table_says_when_fewer_connections_connected_than_asked() {
    let server = echo_server();
    let endpoint = server.endpoint();
    let bin = crate::util::sockit_bin();
    let script = format!(
        "ulimit -n 64 && exec '{}' bench {endpoint} -p echo -c 200 -d 500ms --warmup 0 \
         --json -",
        bin.display()
    );
    let output = run_within_timeout("sh", &["-c".as_ref(), script.as_ref()]);
    let described = describe(&output);
    assert_eq!(code(&output), 0, "{described}");
    let report = Report::from_json(&String::from_utf8_lossy(&output.stdout))
        .unwrap_or_else(|e| panic!("{e}\n{described}"));
    assert!(
        report.connected > 0 && report.connected < 200,
        "the limit did not bite: {described}"
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    let said = format!(
        "connected         only {} of 200 connections;",
        report.connected
    );
    assert!(stderr.contains(&said), "no {said:?}\n{described}");
}

/// Out of file descriptors, a connection that cannot make its socket waits a second
/// before it tries again (`LOCAL_FAILURE_PAUSE`), instead of adding a failure every
/// 10 ms: in a 500 ms run each of the 200 connections fails at most once. On both
/// engines.
#[test]
fn a_connection_that_cannot_make_a_socket_waits_before_trying_again() {
    let server = echo_server();
    let endpoint = server.endpoint();
    let bin = crate::util::sockit_bin();
    for engine in ["lane", "tasks"] {
        let script = format!(
            "ulimit -n 64 && exec '{}' bench {endpoint} -p echo -c 200 -d 500ms --warmup 0 \
             --engine {engine} --json -",
            bin.display()
        );
        let output = run_within_timeout("sh", &["-c".as_ref(), script.as_ref()]);
        let described = describe(&output);
        let report = Report::from_json(&String::from_utf8_lossy(&output.stdout))
            .unwrap_or_else(|e| panic!("{e}\n{described}"));
        assert!(
            report.connected < 200,
            "the limit did not bite: {described}"
        );
        let failures = report.errors.total;
        assert!(
            failures > 0 && failures <= 200,
            "{engine}: {failures} failures from 200 connections: {described}"
        );
        assert_eq!(report.errors.other, failures, "{engine}: {described}");
    }
}

/// Runs `tmux -S SOCKET ARGS` (a tmux server of the test's own).
fn tmux(socket: &Path, args: &[&str]) -> std::process::Output {
    std::process::Command::new("tmux")
        .arg("-S")
        .arg(socket)
        .args(["-f", "/dev/null"])
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run tmux (is it installed?): {e}"))
}

/// In a terminal (a tmux pane) the progress bar is drawn below the "measuring for" line
/// and erased at the end: no stale bar is left above that line in the scrollback.
#[test]
fn the_progress_bar_leaves_no_stale_frame_in_a_terminal() {
    let server = echo_server();
    let dir = scratch();
    let socket = dir.path().join("tmux.sock");
    let command = format!(
        "'{}' bench {} -p echo -c 2 -d 500ms --warmup 0; echo \"bench exited $?\"; sleep 60",
        crate::util::sockit_bin().display(),
        server.endpoint()
    );
    let started = tmux(
        &socket,
        &[
            "new-session",
            "-d",
            "-s",
            "t",
            "-x",
            "120",
            "-y",
            "40",
            &command,
        ],
    );
    assert!(started.status.success(), "{started:?}");
    let pane = || {
        let output = tmux(&socket, &["capture-pane", "-p", "-t", "t"]);
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    let shown = crate::peers::poll_until("bench to finish in the pane", pane, || {
        let shown = pane();
        shown.contains("bench exited").then_some(shown)
    });
    let _ = tmux(&socket, &["kill-server"]);
    assert!(shown.contains("bench exited 0"), "{shown}");
    assert!(shown.contains("measuring for 500ms"), "{shown}");
    assert!(!shown.contains('░'), "a stale progress bar:\n{shown}");
}

/// Small requests at a low rate: the throughput line gives the bit rate in a unit that
/// shows it ("12.80 kbit/s"), not "0.000 Gbit/s".
#[test]
fn the_throughput_line_gives_the_bit_rate_in_a_unit_that_fits() {
    let server = echo_server();
    let dir = scratch();
    let (status, report, run) = bench(
        &[
            &server.endpoint(),
            "-p",
            "echo",
            "-s",
            "16",
            "-c",
            "1",
            "--rate",
            "100",
            "-d",
            "500ms",
            "--warmup",
            "0",
        ],
        &dir.path().join("small.json"),
    );
    assert_eq!(status, 0, "{run}");
    assert!(report.exchanges > 0, "{run}");
    let throughput = run
        .lines()
        .find(|line| line.starts_with("throughput "))
        .unwrap_or_else(|| panic!("no throughput line\n{run}"));
    assert!(throughput.ends_with(" kbit/s)"), "{throughput}\n{run}");
    assert!(!throughput.contains("0.000"), "{throughput}\n{run}");
}

/// `bench merge` refuses `--plot -` and a `--json` file it cannot write in one line with
/// exit 2, before printing the merged table, as `bench` does.
#[test]
fn merge_refuses_plot_to_stdout_and_an_unwritable_json_before_printing() {
    let server = echo_server();
    let dir = scratch();
    let json = dir.path().join("run.json");
    let (status, _, run) = bench(
        &[
            &server.endpoint(),
            "-p",
            "echo",
            "-c",
            "1",
            "-d",
            "200ms",
            "--warmup",
            "0",
        ],
        &json,
    );
    assert_eq!(status, 0, "{run}");
    let json_arg = json.display().to_string();
    let unwritable = dir.path().join("no-such-dir").join("merged.json");
    let unwritable = unwritable.display().to_string();
    for (flag, value, said) in [
        ("--plot", "-", "--plot writes to a file"),
        ("--json", unwritable.as_str(), "cannot write --json"),
    ] {
        let output = run_sockit(&["bench", "merge", &json_arg, flag, value], None);
        let described = describe(&output);
        assert_eq!(code(&output), 2, "{described}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(stderr.trim().lines().count(), 1, "{described}");
        assert!(stderr.contains(said), "{described}");
        assert!(output.stdout.is_empty(), "{described}");
    }
}

//! Helpers for the production and fault tests: scrape `/metrics` and read it with
//! Prometheus' own parser, wait for stderr lines, and look at a process from /proc
//! (memory, CPU time), plus the file-descriptor limit of the test process itself.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::util::{Proc, TIMEOUT, python};

/// Polls `check` every 10 ms until it returns something, or panics after [`TIMEOUT`]
/// with `what` and the process report.
pub fn poll<T>(what: &str, report: impl Fn() -> String, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        if let Some(found) = check() {
            return found;
        }
        if Instant::now() >= deadline {
            panic!("timed out waiting for {what}\n{}", report());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Waits for a stderr line satisfying `pred` and returns it.
pub fn stderr_line(proc: &Proc, what: &str, pred: impl Fn(&str) -> bool) -> String {
    poll(
        what,
        || proc.report(),
        || proc.stderr().lines().find(|l| pred(l)).map(str::to_string),
    )
}

/// The `host:port` of a server's `--metrics` endpoint, from its start-up line.
pub fn metrics_addr(proc: &Proc) -> String {
    let line = stderr_line(proc, "the metrics line", |l| l.contains("metrics: http://"));
    let start = line.find("http://").map_or(0, |i| i + "http://".len());
    line[start..]
        .trim_end_matches("/metrics")
        .trim()
        .trim_end_matches("/metrics")
        .to_string()
}

/// One scrape of `/metrics`, parsed by `prometheus_client.parser` (the Python client's
/// text-format parser): sample name plus sorted labels → value.
#[derive(Debug, Clone)]
pub struct Metrics {
    samples: BTreeMap<String, f64>,
    /// The raw text, for failure messages.
    pub text: String,
}

/// The key of one sample: `name{a="x",b="y"}` with labels sorted.
fn sample_key(name: &str, labels: &[(&str, &str)]) -> String {
    let mut labels: Vec<_> = labels.to_vec();
    labels.sort();
    let inner: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
    format!("{name}{{{}}}", inner.join(","))
}

impl Metrics {
    /// The value of one sample; panics (with the whole scrape) when it is missing.
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let key = sample_key(name, labels);
        match self.samples.get(&key) {
            Some(v) => *v,
            None => panic!("no sample {key} in\n{}", self.text),
        }
    }

    /// A sample of the `transport` label only, as an integer.
    pub fn count(&self, name: &str, transport: &str) -> u64 {
        self.get(name, &[("transport", transport)]) as u64
    }

    /// How many samples were parsed.
    pub fn len(&self) -> usize {
        self.samples.len()
    }
}

/// `GET /metrics` over HTTP/1.1; returns (status line, body).
pub fn http_get(addr: &str, path: &str) -> (String, String) {
    let mut stream =
        TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect to metrics at {addr}: {e}"));
    stream.set_read_timeout(Some(TIMEOUT)).ok();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/plain\r\n\r\n"
    )
    .unwrap_or_else(|e| panic!("send the request: {e}"));
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .unwrap_or_else(|e| panic!("read the response: {e}"));
    let (head, body) = response
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no header/body split in {response:?}"));
    let status = head.lines().next().unwrap_or_default().to_string();
    (status, body.to_string())
}

/// The parser run on each scrape: one `name<TAB>labels-json<TAB>value` line per sample.
const PARSER: &str = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
text = sys.stdin.read()
for family in text_string_to_metric_families(text):
    for s in family.samples:
        print(f"{s.name}\t{json.dumps(s.labels, sort_keys=True)}\t{s.value}")
"#;

/// Scrapes `addr` and parses the text with Prometheus' Python parser; panics if the
/// response is not 200 or the parser rejects the text.
pub fn scrape(addr: &str) -> Metrics {
    let (status, text) = http_get(addr, "/metrics");
    assert_eq!(status, "HTTP/1.1 200 OK", "scrape failed:\n{text}");
    let mut child = Command::new(python())
        .args(["-c", PARSER])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("run {}: {e}", python()));
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(text.as_bytes())
            .unwrap_or_else(|e| panic!("feed the parser: {e}"));
    }
    let output = child
        .wait_with_output()
        .unwrap_or_else(|e| panic!("wait for the parser: {e}"));
    assert!(
        output.status.success(),
        "prometheus_client rejected the exposition ({}):\n{}\n--- text ---\n{text}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let mut samples = BTreeMap::new();
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let mut parts = line.split('\t');
        let (Some(name), Some(labels), Some(value)) = (parts.next(), parts.next(), parts.next())
        else {
            panic!("unexpected parser output line {line:?}");
        };
        let labels: BTreeMap<String, String> =
            serde_json::from_str(labels).unwrap_or_else(|e| panic!("labels {labels}: {e}"));
        let pairs: Vec<(&str, &str)> = labels
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let value: f64 = value
            .parse()
            .unwrap_or_else(|e| panic!("value {value}: {e}"));
        samples.insert(sample_key(name, &pairs), value);
    }
    Metrics { samples, text }
}

/// Scrapes until `done` holds for the metrics (or panics after [`TIMEOUT`]).
pub fn scrape_until(
    proc: &Proc,
    addr: &str,
    what: &str,
    done: impl Fn(&Metrics) -> bool,
) -> Metrics {
    poll(
        what,
        || proc.report(),
        || {
            let metrics = scrape(addr);
            if done(&metrics) {
                Some(metrics)
            } else {
                std::thread::sleep(Duration::from_millis(40));
                None
            }
        },
    )
}

/// Resident memory of a process in KiB (`VmRSS` in /proc/PID/status).
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("read /proc/{pid}/status: {e}"));
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmRSS in /proc/{pid}/status"))
}

/// CPU time a process has used (user + system), from /proc/PID/stat.
pub fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .unwrap_or_else(|e| panic!("read /proc/{pid}/stat: {e}"));
    // Fields after the command name (which is in parentheses and may contain spaces).
    let rest = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13 after ')'.
    let ticks: u64 = [11, 12]
        .iter()
        .map(|&i| {
            fields
                .get(i)
                .and_then(|f| f.parse::<u64>().ok())
                .unwrap_or(0)
        })
        .sum();
    // SAFETY: sysconf has no memory effects.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let per_second = u64::try_from(per_second).unwrap_or(100).max(1);
    Duration::from_millis(ticks * 1000 / per_second)
}

/// Open file descriptors of a process.
pub fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// Raises this test process's soft `RLIMIT_NOFILE` to at least `wanted` (up to the hard
/// limit); returns the soft limit now in force.
pub fn raise_nofile(wanted: u64) -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit write to and read from the struct we own.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return 0;
        }
        if limit.rlim_cur < wanted {
            limit.rlim_cur = wanted.min(limit.rlim_max);
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
    }
    limit.rlim_cur
}

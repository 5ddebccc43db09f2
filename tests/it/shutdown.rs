//! Issue 2, point 8: SIGTERM during traffic stops accepting, finishes every reply the
//! server had taken on, removes the Unix socket file, prints the summary and exits 0.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::util::{Proc, TIMEOUT};

/// Concurrent clients hammering the server when the signal arrives.
const CLIENTS: usize = 8;
/// Each request (and echoed reply) is this large, so replies take several writes and a
/// shutdown can land in the middle of one.
const LINE: usize = 200_000;
/// Upper bound on exchanges per client, so the loop ends even if shutdown never comes.
const MAX_EXCHANGES: u64 = 100_000;

/// One client: echo exchanges until the server closes. Returns complete replies received.
/// A reply cut short is data lost by the server, and fails the test.
fn client(path: std::path::PathBuf, done: Arc<AtomicU64>) -> u64 {
    let stream = UnixStream::connect(&path).unwrap_or_else(|e| panic!("connect: {e}"));
    stream.set_read_timeout(Some(TIMEOUT)).ok();
    let mut writer = stream.try_clone().unwrap_or_else(|e| panic!("{e}"));
    let mut reader = BufReader::new(stream);
    let mut request = vec![b'x'; LINE];
    request.push(b'\n');
    let mut replies = 0;
    let mut reply = Vec::with_capacity(LINE + 1);
    for _ in 0..MAX_EXCHANGES {
        if writer.write_all(&request).is_err() {
            break; // the server closed before taking this request: not a lost reply
        }
        reply.clear();
        match reader.read_until(b'\n', &mut reply) {
            Ok(0) => break,
            Ok(_) => {
                assert_eq!(
                    reply.len(),
                    LINE + 1,
                    "a reply was cut short: the server lost data"
                );
                replies += 1;
                done.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!("reading a reply: {e}"),
        }
    }
    replies
}

#[test]
fn sigterm_under_load_loses_no_reply_and_removes_the_socket_file() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let path = dir.path().join("drain.sock");
    let endpoint = format!("unix:{}", path.display());
    let mut server = Proc::sockit(&[
        "serve",
        &endpoint,
        "--echo",
        "--framing",
        "line",
        "--max-line",
        "300000",
        "-q",
    ]);
    server.listening();

    let done = Arc::new(AtomicU64::new(0));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (path, done) = (path.clone(), Arc::clone(&done));
            std::thread::spawn(move || client(path, done))
        })
        .collect();
    // Let traffic flow, then signal in the middle of it.
    let deadline = Instant::now() + TIMEOUT;
    while done.load(Ordering::Relaxed) < 50 * CLIENTS as u64 {
        assert!(
            Instant::now() < deadline,
            "traffic never started\n{}",
            server.report()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    server.signal(libc::SIGTERM);
    let received: u64 = clients
        .into_iter()
        .map(|c| c.join().unwrap_or_else(|_| panic!("a client failed")))
        .sum();

    let status = server.wait_exit();
    assert!(status.success(), "{}", server.report());
    let stderr = server.stderr();
    let summary = stderr
        .lines()
        .find(|l| l.starts_with("summary: "))
        .unwrap_or_else(|| panic!("no summary line\n{}", server.report()));
    let answered: u64 = summary
        .split(", ")
        .find_map(|part| part.strip_suffix(" messages"))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("cannot read the message count in {summary:?}"));
    assert_eq!(
        answered, received,
        "every message the server answered must have reached its client ({summary})"
    );
    assert!(
        !path.exists(),
        "the socket file must be removed on shutdown"
    );
}

/// With `--log json` even the shutdown summary is a JSON object, so a machine reading
/// stderr never meets a line it cannot parse.
#[test]
fn the_summary_is_json_with_log_json() {
    let mut server = Proc::sockit(&["serve", "tcp://127.0.0.1:0", "--log", "json"]);
    let listening = server.wait_for_line("listening", |l| l.contains("\"listening\""));
    let endpoint: serde_json::Value =
        serde_json::from_str(&listening).unwrap_or_else(|e| panic!("{e}: {listening}"));
    let addr = endpoint["endpoint"]
        .as_str()
        .unwrap_or_default()
        .replace("tcp://", "");
    let output = crate::util::run_sockit(&["send", &addr], None);
    assert!(
        output.status.success(),
        "{}",
        crate::util::describe(&output)
    );
    server.signal(libc::SIGTERM);
    assert!(server.wait_exit().success(), "{}", server.report());
    let stderr = server.stderr();
    let last = stderr.lines().last().unwrap_or_default();
    let summary: serde_json::Value =
        serde_json::from_str(last).unwrap_or_else(|e| panic!("{e}: {stderr}"));
    assert_eq!(summary["event"], "summary", "{last}");
    assert_eq!(summary["connections"], 1, "{last}");
    assert_eq!(summary["messages"], 1, "{last}");
}

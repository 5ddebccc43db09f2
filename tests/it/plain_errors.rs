//! Issue 16, point 6: every message a user meets is plain words. This walks the error
//! paths the suite provokes elsewhere (bad endpoints and flags, refused and unknown hosts,
//! ports in use, missing and unusable files, TLS failures, programs that do not exist) with
//! the real binary, and fails if any output looks like Rust's `Debug` formatting.

use std::net::TcpListener;
use std::path::Path;
use std::process::Output;

use regex::Regex;

use crate::peers::{Pki, wait_for_stderr};
use crate::util::{Proc, code, connect_tcp, describe, run_sockit};

/// Shapes that only Rust's `Debug` formatting makes: `Os { code: 111, kind: … }`,
/// `Custom { kind: Other, error: … }`, `Other(OtherError(CaUsedAsEndEntity))`, `Some(…)`,
/// `DnsName("localhost")`, `MissingSectionEnd { end_marker: [67, 69, …] }`, or a bare
/// variant name such as `InvalidCookie`.
const DEBUG_SHAPES: [&str; 12] = [
    r"\bOs \{",
    r"\bkind: ",
    r"\bCustom \{",
    r"\bOther\(",
    r"\b\w+\(\w+\(",
    r"\bSome\(",
    r"\bNone\b",
    r#""\w+": \w+ \{"#,
    r#"\b\w+\(""#,
    r"\b[A-Z]\w* \{ \w+: ",
    r"\[\d+, \d+, \d+",
    r"\b[A-Z][a-z]+(?:[A-Z][a-z0-9]+)+\b",
];

/// The first `Debug`-looking shape in `text`, if any.
fn debug_shape(text: &str) -> Option<String> {
    DEBUG_SHAPES.iter().find_map(|shape| {
        let re = Regex::new(shape).unwrap_or_else(|e| panic!("{shape}: {e}"));
        re.find(text)
            .map(|m| format!("{shape} matched {:?}", m.as_str()))
    })
}

/// A port on 127.0.0.1 with nothing listening.
fn closed_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
    listener
        .local_addr()
        .unwrap_or_else(|e| panic!("{e}"))
        .port()
}

/// What one failing invocation printed, for the final check.
struct Seen {
    what: String,
    output: String,
}

/// Collects the output of every failing invocation.
#[derive(Default)]
struct Walk {
    seen: Vec<Seen>,
}

impl Walk {
    /// Runs `sockit ARGS` (stdin from `input`), which must fail, and keeps its output.
    fn fails(&mut self, args: &[&str], input: Option<&[u8]>) {
        let output = run_sockit(args, input);
        assert_ne!(
            code(&output),
            0,
            "sockit {args:?} succeeded: {}",
            describe(&output)
        );
        self.keep(format!("sockit {args:?}"), &output);
    }

    /// Runs `sockit ARGS` (stdin from `input`), whatever its outcome, and keeps its output.
    fn runs(&mut self, args: &[&str], input: Option<&[u8]>) {
        let output = run_sockit(args, input);
        self.keep(format!("sockit {args:?}"), &output);
    }

    /// Keeps everything a finished run printed.
    fn keep(&mut self, what: String, output: &Output) {
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        self.seen.push(Seen { what, output: text });
    }

    /// Keeps what a running server printed on stderr about the errors it met.
    fn keep_server(&mut self, what: &str, server: &Proc) {
        self.seen.push(Seen {
            what: what.to_string(),
            output: server.stderr(),
        });
    }

    /// Fails naming every output that looks like a `Debug` dump.
    fn assert_plain(&self, at_least: usize) {
        assert!(
            self.seen.len() >= at_least,
            "walked {} error paths, expected at least {at_least}",
            self.seen.len()
        );
        let leaks: Vec<String> = self
            .seen
            .iter()
            .filter_map(|seen| {
                debug_shape(&seen.output)
                    .map(|shape| format!("{}: {shape}\n{}", seen.what, seen.output))
            })
            .collect();
        assert!(
            leaks.is_empty(),
            "{} of {} outputs look like Rust Debug formatting:\n\n{}",
            leaks.len(),
            self.seen.len(),
            leaks.join("\n\n")
        );
    }
}

#[test]
fn command_line_and_endpoint_errors_are_plain_words() {
    let mut walk = Walk::default();
    for bad in [
        "nosuch://127.0.0.1:1",
        "tcp://127.0.0.1:99999",
        "tcp://[::zz]:80",
        "tcp://127.0.0.1",
        "unix:",
        "udp://a b:80",
    ] {
        walk.fails(&["send", bad], None);
        walk.fails(&["serve", bad], None);
    }
    walk.fails(&["serve", "--no-such-flag"], None);
    walk.fails(&["send", "--count", "0"], None);
    walk.fails(&["serve", "--busy-poll", "soon"], None);
    walk.fails(&["serve", "--idle-timeout", "-1"], None);
    walk.fails(&["serve", "--threads", "0"], None);
    walk.fails(&["serve", "--allow", "10.0.0.0/99"], None);
    walk.fails(&["serve", "--echo", "--discard"], None);
    walk.fails(&["serve", "--chat", "udp://127.0.0.1:0"], None);
    walk.fails(&["send", "tcp://127.0.0.1:9", "--insecure"], None);
    walk.fails(&["relay", "tcp://127.0.0.1:0", "nosuch://x"], None);
    walk.fails(&["probe", "127.0.0.1", "0-99999"], None);
    walk.fails(&["probe", "127.0.0.1", "80-22"], None);
    walk.fails(&["bench", "tcp://127.0.0.1:9", "--rate", "fast"], None);
    walk.fails(&["completions", "tcsh"], None);
    walk.fails(&["man", "nope"], None);
    walk.assert_plain(25);
}

#[test]
fn network_and_file_errors_are_plain_words() {
    let mut walk = Walk::default();
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let closed = closed_port();
    walk.fails(&["send", &format!("tcp://127.0.0.1:{closed}")], None);
    walk.fails(&["send", &format!("udp://127.0.0.1:{closed}")], None);
    walk.fails(
        &["connect", &format!("tcp://127.0.0.1:{closed}")],
        Some(b"hi\n"),
    );
    walk.fails(&["probe", "127.0.0.1", &closed.to_string()], None);
    walk.fails(
        &[
            "bench",
            &format!("tcp://127.0.0.1:{closed}"),
            "-d",
            "200ms",
            "--warmup",
            "0",
        ],
        None,
    );
    let host = format!("{}.invalid", "a".repeat(70));
    walk.fails(&["send", &format!("tcp://{host}:80")], None);
    walk.fails(&["probe", &host, "80"], None);

    // A server that accepts and never answers: the client's time limit.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
    let silent_addr = silent
        .local_addr()
        .unwrap_or_else(|e| panic!("{e}"))
        .to_string();
    walk.fails(&["send", &silent_addr, "--timeout", "200ms"], None);

    // Addresses in use, for the server and for its metrics.
    let taken = format!("tcp://{silent_addr}");
    walk.fails(&["serve", &taken], None);
    walk.fails(&["relay", &taken, "tcp://127.0.0.1:9"], None);
    walk.fails(
        &["serve", "tcp://127.0.0.1:0", "--metrics", &silent_addr],
        None,
    );

    // Unix paths: a regular file, a missing directory, nothing listening.
    let file = dir.path().join("plain-file");
    std::fs::write(&file, b"not a socket").unwrap_or_else(|e| panic!("{e}"));
    walk.fails(&["serve", &unix(&file)], None);
    walk.fails(
        &["serve", &unix(&dir.path().join("no/such/dir/s.sock"))],
        None,
    );
    walk.fails(&["send", &unix(&dir.path().join("nobody.sock"))], None);
    walk.fails(&["send", "unix:@sockit-plain-errors-nobody"], None);

    // Files the commands read.
    let missing = dir.path().join("missing.json");
    walk.fails(&["bench", "merge", &missing.display().to_string()], None);
    walk.fails(&["bench", "merge", &file.display().to_string()], None);

    // Socket activation with nothing passed.
    walk.fails(&["serve", "tcp", "--systemd"], None);

    // Programs that do not exist.
    walk.fails(
        &["serve", "tcp://127.0.0.1:0", "--exec", "/no/such/program"],
        None,
    );
    walk.fails(
        &[
            "serve",
            "tcp://127.0.0.1:0",
            "--exec",
            "no-such-program-anywhere",
        ],
        None,
    );

    // What a server logs about a client it drops.
    let mut proxied = Proc::sockit(&["serve", "tcp://127.0.0.1:0", "--proxy-protocol", "-q"]);
    let proxied_addr = proxied.listening();
    send_until_closed(&proxied_addr, b"GET / HTTP/1.1\r\n\r\n");
    wait_for_stderr(&proxied, "bad PROXY protocol header");
    walk.keep_server(
        "serve --proxy-protocol, after a client without the header",
        &proxied,
    );
    let line_args = [
        "serve",
        "tcp://127.0.0.1:0",
        "--framing",
        "line",
        "--max-line",
        "8",
    ];
    let mut lines = Proc::sockit(&line_args);
    let lines_addr = lines.listening();
    send_until_closed(&lines_addr, b"0123456789abcdef\n");
    wait_for_stderr(&lines, "raise --max-line");
    walk.keep_server("serve --max-line 8, after a longer line", &lines);

    // The debug line that says why `connect` stopped.
    let mut echo = Proc::sockit(&["serve", "tcp://127.0.0.1:0", "--echo", "-q"]);
    let echo_addr = echo.listening();
    let debug_args = [
        "connect",
        &echo_addr,
        "--close-on-eof",
        "--log-level",
        "debug",
    ];
    walk.runs(&debug_args, Some(b"hi\n"));

    // A bench report whose latency histogram is damaged.
    let report = dir.path().join("report.json");
    let report_arg = report.display().to_string();
    let bench_args = [
        "bench",
        &echo_addr,
        "-d",
        "200ms",
        "--warmup",
        "0",
        "--json",
        &report_arg,
    ];
    let output = run_sockit(&bench_args, None);
    assert_eq!(code(&output), 0, "{}", describe(&output));
    damage_histogram(&report);
    walk.fails(&["bench", "merge", &report_arg], None);
    walk.assert_plain(20);
}

#[test]
fn tls_errors_are_plain_words() {
    let mut walk = Walk::default();
    let pki = Pki::new();
    let missing = pki.dir.path().join("missing.pem");
    let arg = |path: &Path| path.display().to_string();
    let serve_with = |cert: &Path, key: &Path| {
        vec![
            "serve".to_string(),
            "tls://127.0.0.1:0".into(),
            "--cert".into(),
            arg(cert),
            "--key".into(),
            arg(key),
        ]
    };
    for (cert, key) in [
        (&missing, &pki.leaf_key),
        (&pki.leaf, &missing),
        (&pki.leaf, &pki.expired_key),
        (&pki.leaf_key, &pki.leaf_key),
        (&pki.leaf, &pki.leaf),
        (&pki.dir.path().to_path_buf(), &pki.leaf_key),
    ] {
        let args = serve_with(cert, key);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        walk.fails(&args, None);
    }

    let mut server = Proc::sockit(&[
        "serve",
        "tls://127.0.0.1:0",
        "--cert",
        &arg(&pki.leaf),
        "--key",
        &arg(&pki.leaf_key),
    ]);
    let addr = server.listening();
    let port = addr.rsplit(':').next().unwrap_or_default().to_string();
    let by_name = format!("tls://localhost:{port}");
    walk.fails(&["send", &by_name], None);
    walk.fails(&["send", &by_name, "--ca", &arg(&missing)], None);
    walk.fails(&["send", &by_name, "--ca", &arg(pki.dir.path())], None);
    walk.fails(&["send", &by_name, "--ca", &arg(&pki.leaf_key)], None);
    walk.fails(&["send", &by_name, "--ca", &arg(&pki.other_ca)], None);
    walk.fails(
        &[
            "send",
            &by_name,
            "--server-name",
            "not a name!",
            "--ca",
            &arg(&pki.ca),
        ],
        None,
    );

    // By IP against a certificate for localhost only: the names are said, not debugged.
    walk.fails(
        &["send", &format!("tls://{addr}"), "--ca", &arg(&pki.ca)],
        None,
    );
    // PEM files broken inside: bad base64, and a section that never ends.
    let bad_base64 = pki.dir.path().join("bad-base64.pem");
    let truncated = pki.dir.path().join("truncated.pem");
    let write =
        |path: &Path, text: &str| std::fs::write(path, text).unwrap_or_else(|e| panic!("{e}"));
    write(
        &bad_base64,
        "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n",
    );
    write(&truncated, "-----BEGIN CERTIFICATE-----\nMIIB\n");
    for broken in [&bad_base64, &truncated] {
        walk.fails(&["send", &by_name, "--ca", &arg(broken)], None);
        let args = serve_with(broken, &pki.leaf_key);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        walk.fails(&args, None);
    }

    // A TLS 1.1 client: the server says in words why the handshake failed.
    let _ = std::process::Command::new("openssl")
        .args(["s_client", "-tls1_1", "-connect", &addr])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status();
    wait_for_stderr(&server, "TLS with the client failed");

    // A plain client on the TLS port: the server says what happened on its stderr.
    let _ = run_sockit(&["send", &format!("tcp://{addr}")], None);
    wait_for_stderr(&server, "does not speak TLS");
    walk.keep_server("serve tls, after a plain TCP client", &server);

    // TLS to a plain server.
    let mut plain = Proc::sockit(&["serve", "tcp://127.0.0.1:0"]);
    let plain_addr = plain.listening();
    walk.fails(
        &["send", &format!("tls://{plain_addr}"), "--insecure"],
        None,
    );
    walk.assert_plain(19);
}

/// Sends `bytes` to `addr` and reads until the server closes or resets the connection.
fn send_until_closed(addr: &str, bytes: &[u8]) {
    use std::io::{Read, Write};
    let mut stream = connect_tcp(addr);
    stream.write_all(bytes).unwrap_or_else(|e| panic!("{e}"));
    // A server that drops a client with unread bytes resets it: that is an end too.
    let _ = stream.read_to_end(&mut Vec::new());
}

/// Replaces the histogram in the bench report at `path` with bytes that are no histogram.
fn damage_histogram(path: &Path) {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{e}"));
    let mut report: serde_json::Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}"));
    report["histogram"]["data"] = "AAAAAAAAAAAA".into();
    std::fs::write(path, report.to_string()).unwrap_or_else(|e| panic!("{e}"));
}

/// `unix:PATH` for a path.
fn unix(path: &Path) -> String {
    format!("unix:{}", path.display())
}

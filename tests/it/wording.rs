//! Issue 15 items 9 and 13: error messages that point the right way (ports out of range,
//! port 0, a Unix path that is not a socket, the nc habit `HOST PORT`, IPv6 zones), and
//! `sockit version` for bug reports.

use crate::util::{Proc, code, describe, run_sockit};

/// One `error:` line with every needle and none of the `absent` words; exit `expected`.
fn assert_error(args: &[&str], expected: i32, needles: &[&str], absent: &[&str]) {
    let output = run_sockit(args, None);
    assert_eq!(code(&output), expected, "{}", describe(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("error: "))
        .collect();
    assert_eq!(lines.len(), 1, "{}", describe(&output));
    for needle in needles {
        assert!(
            lines[0].contains(needle),
            "{needle:?} not in {:?}",
            lines[0]
        );
    }
    for word in absent {
        assert!(!lines[0].contains(word), "{word:?} in {:?}", lines[0]);
    }
}

#[test]
fn a_port_too_large_or_zero_is_explained() {
    assert_error(
        &["send", "65536"],
        2,
        &["65536 is not a port", "0 to 65535"],
        &["missing"],
    );
    assert_error(
        &["send", "0"],
        2,
        &["port 0", "the port the server listens on"],
        &["sockit serve"],
    );
    assert_error(
        &["bench", "tcp://127.0.0.1:0"],
        2,
        &["port 0"],
        &["sockit serve"],
    );
}

#[test]
fn a_unix_path_that_is_not_a_socket_is_said_as_such_like_a_missing_one() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let file = dir.path().join("regular");
    std::fs::write(&file, b"not a socket").unwrap_or_else(|e| panic!("{e}"));
    let missing = dir.path().join("missing.sock");
    let file_endpoint = format!("unix:{}", file.display());
    assert_error(
        &["connect", &file_endpoint],
        1,
        &[
            "is a file, not a socket",
            "path of the socket a server listens on",
        ],
        &["sockit serve"],
    );
    let gram = format!("unixgram:{}", file.display());
    assert_error(
        &["send", &gram, "hi"],
        1,
        &["is a file, not a socket"],
        &["sockit serve"],
    );
    let missing_endpoint = format!("unix:{}", missing.display());
    assert_error(&["connect", &missing_endpoint], 1, &["no socket file"], &[]);
}

#[test]
fn connect_takes_host_and_port_as_two_words_like_nc() {
    let mut server = Proc::sockit(&["serve", "tcp://127.0.0.1:0", "--echo", "-q"]);
    let addr = server.listening();
    let (host, port) = addr.rsplit_once(':').unwrap_or_else(|| panic!("{addr}"));
    let output = run_sockit(&["connect", host, port], Some(b"hi\n"));
    assert_eq!(code(&output), 0, "{}", describe(&output));
    assert_eq!(output.stdout, b"hi\n", "{}", describe(&output));
    // send's second word is the message: say what was meant.
    assert_error(&["send", host, port], 2, &["did you mean", &addr], &[]);
}

#[test]
fn an_ipv6_zone_id_reaches_a_server_on_loopback() {
    let bound = std::net::TcpListener::bind("[::1]:0");
    if bound.is_err() {
        eprintln!("no IPv6 loopback here; skipped");
        return;
    }
    drop(bound);
    let mut server = Proc::sockit(&["serve", "tcp://[::1]:0", "--echo", "-q"]);
    let addr = server.listening();
    let port = addr.rsplit(':').next().unwrap_or_default();
    let output = run_sockit(&["send", &format!("tcp://[::1%lo]:{port}"), "zoned"], None);
    assert_eq!(code(&output), 0, "{}", describe(&output));
    assert!(String::from_utf8_lossy(&output.stdout).contains("receive: zoned"));
    assert_error(
        &["send", "tcp://[fe80::1%no-such-if0]:80", "hi"],
        3,
        &["no network interface"],
        &[],
    );
}

#[test]
fn version_says_what_a_bug_report_needs() {
    for args in [&["version"][..], &["--version"][..]] {
        let output = run_sockit(args, None);
        assert_eq!(code(&output), 0, "{}", describe(&output));
        let text = String::from_utf8_lossy(&output.stdout);
        assert!(
            text.starts_with(&format!("sockit {}\n", env!("CARGO_PKG_VERSION"))),
            "{text}"
        );
        for label in ["commit:", "profile:", "features:", "rustc:", "target:"] {
            assert!(text.contains(label), "{label} missing\n{text}");
        }
    }
    let short = run_sockit(&["-V"], None);
    let text = String::from_utf8_lossy(&short.stdout);
    assert_eq!(text.lines().count(), 1, "{text}");
}

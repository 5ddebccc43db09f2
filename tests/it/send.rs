//! Issue 15, items 2, 3 and 6 (client side): `sockit send` reads each reply whole,
//! pairs every message of `--count` with its own reply, shows bulk messages as one short
//! line, and treats an empty message honestly.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::thread;

use crate::util::{TIMEOUT, code, describe, join, one_shot_server, run_sockit};

/// Echoes every byte until the client half-closes.
fn echo(mut stream: TcpStream) {
    let mut reader = stream.try_clone().unwrap_or_else(|e| panic!("{e}"));
    std::io::copy(&mut reader, &mut stream).unwrap_or_else(|e| panic!("echo: {e}"));
}

/// The bytes of a test file: printable, and different at every offset of a line.
fn payload(len: usize) -> Vec<u8> {
    (0..len).map(|i| b'a' + (i % 26) as u8).collect()
}

fn stdout_lines(output: &std::process::Output) -> Vec<String> {
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

/// Issue 15, item 2: a 5,000-byte message through an echo server comes back as one
/// 5,000-byte reply (not 1,024 bytes), and the lines say how long each was.
#[test]
fn a_5000_byte_file_comes_back_whole_from_an_echo_server() {
    let (addr, server) = one_shot_server(echo);
    let message = payload(5000);
    let output = run_sockit(&["send", &format!("tcp://{addr}"), "-"], Some(&message));
    assert_eq!(code(&output), 0, "{}", describe(&output));
    let shown = String::from_utf8_lossy(&message[..1024]).into_owned();
    assert_eq!(
        stdout_lines(&output),
        [
            format!("send: {shown}… (5000 bytes)"),
            format!("receive: {shown}… (5000 bytes)"),
            String::new(),
        ],
        "{}",
        describe(&output)
    );
    join(server);
}

/// Issue 15, item 2: with `--count 3`, each message gets its own reply, even when each
/// reply is longer than one read.
#[test]
fn count_3_pairs_each_message_with_its_own_long_reply() {
    const MESSAGE: usize = 5000;
    let (addr, server) = one_shot_server(|mut stream| {
        let mut message = vec![0u8; MESSAGE];
        for index in 1..=3 {
            stream
                .read_exact(&mut message)
                .unwrap_or_else(|e| panic!("message {index}: {e}"));
            let mut reply = format!("reply {index} ").into_bytes();
            reply.extend(std::iter::repeat_n(b'x', 3000));
            stream.write_all(&reply).unwrap_or_else(|e| panic!("{e}"));
        }
    });
    let output = run_sockit(
        &["send", &format!("tcp://{addr}"), "-", "--count", "3"],
        Some(&payload(MESSAGE)),
    );
    assert_eq!(code(&output), 0, "{}", describe(&output));
    let receives: Vec<String> = stdout_lines(&output)
        .into_iter()
        .filter(|l| l.starts_with("receive: "))
        .collect();
    assert_eq!(receives.len(), 3, "{}", describe(&output));
    for (index, line) in receives.iter().enumerate() {
        let expected_start = format!("receive: reply {} x", index + 1);
        assert!(line.starts_with(&expected_start), "{line:.40}");
        assert!(
            line.ends_with("… (3008 bytes)"),
            "{}",
            &line[line.len() - 30..]
        );
    }
    join(server);
}

/// Under `--framing line` a reply is a line: two lines that arrive in one read are the
/// replies to two messages, the second kept for the second message.
#[test]
fn line_replies_arriving_together_are_paired_in_order() {
    let (addr, server) = one_shot_server(|mut stream| {
        let mut first = [0u8; 5];
        stream
            .read_exact(&mut first)
            .unwrap_or_else(|e| panic!("{e}"));
        // Both answers at once, before the second question.
        stream
            .write_all(b"one\ntwo\n")
            .unwrap_or_else(|e| panic!("{e}"));
        let mut rest = Vec::new();
        stream
            .read_to_end(&mut rest)
            .unwrap_or_else(|e| panic!("{e}"));
        rest
    });
    let output = run_sockit(
        &[
            "send",
            &format!("tcp://{addr}"),
            "ping",
            "--count",
            "2",
            "--framing",
            "line",
        ],
        None,
    );
    assert_eq!(code(&output), 0, "{}", describe(&output));
    assert_eq!(
        stdout_lines(&output),
        [
            "send: ping",
            "receive: one",
            "",
            "send: ping",
            "receive: two",
            ""
        ]
    );
    assert_eq!(join(server), b"ping\n");
}

/// `--reply-size N`: a reply is exactly N bytes, so replies that arrive together are
/// still paired one by one.
#[test]
fn reply_size_cuts_replies_at_exactly_n_bytes() {
    let (addr, server) = one_shot_server(|mut stream| {
        let mut first = [0u8; 2];
        stream
            .read_exact(&mut first)
            .unwrap_or_else(|e| panic!("{e}"));
        stream
            .write_all(b"abcdefgh")
            .unwrap_or_else(|e| panic!("{e}"));
        let mut rest = Vec::new();
        stream
            .read_to_end(&mut rest)
            .unwrap_or_else(|e| panic!("{e}"));
    });
    let output = run_sockit(
        &[
            "send",
            &format!("tcp://{addr}"),
            "hi",
            "--count",
            "2",
            "--reply-size",
            "4",
        ],
        None,
    );
    assert_eq!(code(&output), 0, "{}", describe(&output));
    assert_eq!(
        stdout_lines(&output),
        [
            "send: hi",
            "receive: abcd",
            "",
            "send: hi",
            "receive: efgh",
            ""
        ]
    );
    join(server);
}

/// A server that closes in the middle of a `--reply-size` reply: the run fails (exit 1)
/// and says how much came.
#[test]
fn a_reply_shorter_than_reply_size_fails() {
    let (addr, server) = one_shot_server(|mut stream| {
        let mut first = [0u8; 2];
        stream
            .read_exact(&mut first)
            .unwrap_or_else(|e| panic!("{e}"));
        stream.write_all(b"abc").unwrap_or_else(|e| panic!("{e}"));
    });
    let output = run_sockit(
        &["send", &format!("tcp://{addr}"), "hi", "--reply-size", "10"],
        None,
    );
    assert_eq!(code(&output), 1, "{}", describe(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("after 3 bytes of the reply"), "{stderr}");
    join(server);
}

/// Issue 15, item 3 (client side): a bulk message prints two short lines, not the
/// megabyte twice over.
#[test]
fn a_bulk_message_prints_one_short_line_each_way() {
    const LEN: usize = 1_000_000;
    // Reads it all, then answers with as much: no deadlock of two full socket buffers.
    let (addr, server) = one_shot_server(|mut stream| {
        let mut message = vec![0u8; LEN];
        stream
            .read_exact(&mut message)
            .unwrap_or_else(|e| panic!("{e}"));
        stream.write_all(&message).unwrap_or_else(|e| panic!("{e}"));
        let mut rest = Vec::new();
        stream
            .read_to_end(&mut rest)
            .unwrap_or_else(|e| panic!("{e}"));
    });
    let message = payload(LEN);
    let output = run_sockit(&["send", &format!("tcp://{addr}"), "-"], Some(&message));
    assert_eq!(code(&output), 0, "{}", describe(&output));
    assert!(
        output.stdout.len() < 3000,
        "{} bytes of output",
        output.stdout.len()
    );
    let lines = stdout_lines(&output);
    assert!(lines[0].ends_with("… (1000000 bytes)"), "{:.80}", lines[0]);
    assert!(lines[1].ends_with("… (1000000 bytes)"), "{:.80}", lines[1]);
    join(server);
}

/// Issue 15, item 6: an empty message on a stream is a usage error at once (exit 2),
/// from the command line and from an empty stdin.
#[test]
fn an_empty_message_on_a_stream_is_a_usage_error() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
    let addr = listener
        .local_addr()
        .unwrap_or_else(|e| panic!("{e}"))
        .to_string();
    for (message, input) in [("", None), ("-", Some(&b""[..]))] {
        let output = run_sockit(&["send", &format!("tcp://{addr}"), message], input);
        assert_eq!(code(&output), 2, "{}", describe(&output));
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("the message is empty"), "{stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
    }
}

/// Issue 15, item 6: on UDP an empty message is an empty datagram, sent and answered.
#[test]
fn an_empty_message_on_udp_is_an_empty_datagram() {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
    socket.set_read_timeout(Some(TIMEOUT)).ok();
    let addr = socket
        .local_addr()
        .unwrap_or_else(|e| panic!("{e}"))
        .to_string();
    let server = thread::spawn(move || {
        let mut buf = [0u8; 16];
        let (n, from) = socket.recv_from(&mut buf).unwrap_or_else(|e| panic!("{e}"));
        socket
            .send_to(b"got an empty one", from)
            .unwrap_or_else(|e| panic!("{e}"));
        n
    });
    let output = run_sockit(&["send", &format!("udp://{addr}"), ""], None);
    assert_eq!(code(&output), 0, "{}", describe(&output));
    assert_eq!(
        stdout_lines(&output),
        [
            format!("sendto {addr}: "),
            format!("recvfrom {addr}: got an empty one"),
            String::new()
        ]
    );
    assert_eq!(join(server), 0, "the datagram was not empty");
}

/// A Unix datagram reply of 100,000 bytes (more than a UDP datagram holds) is read
/// whole: the line gives its full length.
#[test]
fn a_large_unix_datagram_reply_is_not_cut() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let path = dir.path().join("big.sock");
    let server = crate::connect::big_unixgram_replier(&path, 100_000);
    let output = run_sockit(
        &["send", &format!("unixgram:{}", path.display()), "hi"],
        None,
    );
    assert_eq!(code(&output), 0, "{}", describe(&output));
    let lines = stdout_lines(&output);
    assert!(lines[1].ends_with("… (100000 bytes)"), "{:.60}", lines[1]);
    join(server);
}

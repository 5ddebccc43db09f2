//! Issue 22: the two engines of `sockit bench`. The lane (one epoll set per thread)
//! drives the plain closed-loop patterns, the tasks everything else; the JSON report
//! names the one that ran (`engine`). Both count the same failures the same way: the
//! failure tests of `bench` run on each, and here a server that closes its connections
//! mid-run.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::time::Duration;

use crate::bench::{ThreadServer, bench, echo_server, engine_of, scratch, short_run_on};
use crate::util::{code, run_sockit};

/// A run that fits the lane gets it (a rate too); a first message, a delimited reply, a
/// host name or `--engine tasks` get the tasks.
#[test]
fn the_engine_follows_the_one_rule() {
    let server = echo_server(Duration::ZERO, None);
    let endpoint = server.endpoint();
    let named = format!("tcp://localhost:{}", server.addr.port());
    let dir = scratch();
    let cases: [(&[&str], &str); 6] = [
        (&[&endpoint], "lane"),
        (&[&endpoint, "--rate", "200"], "lane"),
        (&[&endpoint, "--first-message", "hi"], "tasks"),
        (&[&endpoint, "--reply-until", "a"], "tasks"),
        (&[&named], "tasks"),
        (&[&endpoint, "--engine", "tasks"], "tasks"),
    ];
    for (args, engine) in cases {
        let mut argv = args.to_vec();
        argv.extend_from_slice(&["-p", "echo", "-c", "2", "-d", "300ms", "--warmup", "0"]);
        let (status, report, run) = bench(&argv, &dir.path().join("engine.json"));
        assert_eq!(status, 0, "{run}");
        assert!(report.exchanges > 0, "{run}");
        assert_eq!(engine_of(&report), engine, "{run}");
    }
}

/// `--engine lane` on a run the lane cannot drive: one line saying why, exit 2, and no
/// connection made.
#[test]
fn engine_lane_refuses_a_run_it_cannot_drive_before_connecting() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
    listener
        .set_nonblocking(true)
        .unwrap_or_else(|e| panic!("{e}"));
    let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
    let endpoint = format!("tcp://{addr}");
    let output = run_sockit(
        &[
            "bench",
            &endpoint,
            "-p",
            "echo",
            "--engine",
            "lane",
            "--first-message",
            "hi",
        ],
        None,
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(code(&output), 2, "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("--engine lane does not drive --first-message"),
        "{stderr}"
    );
    let accepted = listener.accept().map(|_| ()).map_err(|e| e.kind());
    assert_eq!(accepted, Err(std::io::ErrorKind::WouldBlock));
}

/// A server that echoes 20 messages per connection and closes it at the 21st: both engines
/// count the same kinds (exchanges, short replies, nothing else), reconnect, and exit
/// alike.
#[test]
fn a_server_closing_mid_run_counts_alike_on_both_engines() {
    let server = ThreadServer::start(|mut conn| {
        let _ = conn.set_nodelay(true);
        let mut buf = [0u8; 64];
        // The 21st message is read, not answered: the close then finds nothing unread
        // and sends a FIN (unread data would make it a reset).
        for turn in 0..21 {
            let mut got = 0;
            while got < buf.len() {
                match conn.read(&mut buf[got..]) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => got += n,
                }
            }
            if turn == 20 || conn.write_all(&buf).is_err() {
                return;
            }
        }
    });
    let dir = scratch();
    let mut codes = Vec::new();
    for engine in ["lane", "tasks"] {
        let (status, report, run) = short_run_on(
            engine,
            &server.endpoint(),
            &["-p", "echo"],
            &dir.path().join(format!("{engine}.json")),
        );
        assert_eq!(engine_of(&report), engine, "{run}");
        assert!(report.exchanges >= 20, "{run}");
        assert!(report.errors.short_reply > 0, "{run}");
        assert_eq!(report.errors.total, report.errors.short_reply, "{run}");
        assert!(report.connected == 2, "{run}");
        codes.push((status, run));
    }
    assert_eq!(codes[0].0, codes[1].0, "{}\n{}", codes[0].1, codes[1].1);
}

/// Datagrams to a port nobody listens on: the ICMP "port unreachable" comes back as a
/// refusal, counted alike by both engines, with the same exit code.
#[test]
fn datagrams_to_a_closed_port_are_refused_on_both_engines() {
    let port = {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
        socket.local_addr().map(|a| a.port()).unwrap_or(1)
    };
    let endpoint = format!("udp://127.0.0.1:{port}");
    let dir = scratch();
    let mut codes = Vec::new();
    for engine in ["lane", "tasks"] {
        let (status, report, run) = bench(
            &[
                &endpoint,
                "-c",
                "2",
                "-d",
                "300ms",
                "--warmup",
                "0",
                "--timeout",
                "200ms",
                "--engine",
                engine,
            ],
            &dir.path().join(format!("{engine}.json")),
        );
        assert_eq!(engine_of(&report), engine, "{run}");
        assert!(report.errors.refused > 0, "{run}");
        assert_eq!(report.errors.total, report.errors.refused, "{run}");
        assert_eq!(report.exchanges, 0, "{run}");
        codes.push((status, run));
    }
    assert_eq!(codes[0].0, 4, "{}", codes[0].1);
    assert_eq!(codes[0].0, codes[1].0, "{}\n{}", codes[0].1, codes[1].1);
}

/// A server that answers the first message twice in one write, then nothing more: the
/// second reply is already in when the second message goes out, so that exchange
/// completes at once on both engines (no edge of the socket announces it); the third
/// times out and the connection starts over.
#[test]
fn a_reply_already_received_completes_the_next_exchange_on_both_engines() {
    let server = ThreadServer::start(|mut conn| {
        let mut request = [0u8; 64];
        if conn.read_exact(&mut request).is_err() {
            return;
        }
        let twice = [request, request].concat();
        if conn.write_all(&twice).is_err() {
            return;
        }
        // Read (and never answer) until the client gives up.
        let mut sink = [0u8; 64];
        while matches!(conn.read(&mut sink), Ok(n) if n > 0) {}
    });
    let dir = scratch();
    for engine in ["lane", "tasks"] {
        let (_, report, run) = bench(
            &[
                &server.endpoint(),
                "-p",
                "echo",
                "-c",
                "1",
                "-d",
                "1s",
                "--warmup",
                "0",
                "--timeout",
                "200ms",
                "--engine",
                engine,
            ],
            &dir.path().join(format!("{engine}.json")),
        );
        assert_eq!(engine_of(&report), engine, "{run}");
        assert!(report.errors.timeout >= 2, "{run}");
        assert_eq!(report.errors.total, report.errors.timeout, "{run}");
        // Two exchanges per connection, one timeout each (the last may be cut short).
        assert!(report.exchanges + 2 >= 2 * report.errors.timeout, "{run}");
    }
}

/// The load generator's threads end about when the run does (the lane's before its end
/// is read), so each measures its own CPU: every run's busiest-thread figure is that of a
/// thread that did the work, not zero. Several short runs per engine, as whether a thread
/// is gone at the run's end varies from run to run.
#[test]
fn each_engines_busiest_thread_reports_the_cpu_it_used() {
    let server = echo_server(Duration::ZERO, None);
    let endpoint = server.endpoint();
    let dir = scratch();
    for engine in ["lane", "tasks"] {
        let argv = [
            endpoint.as_str(),
            "-p",
            "echo",
            "-c",
            "4",
            "--threads",
            "1",
            "-d",
            "500ms",
            "--warmup",
            "0",
            "--engine",
            engine,
        ];
        for _ in 0..3 {
            let (status, report, run) = bench(&argv, &dir.path().join("cpu.json"));
            assert_eq!(status, 0, "{run}");
            assert_eq!(engine_of(&report), engine, "{run}");
            assert!(report.exchanges > 100, "{run}");
            assert!(
                report.loadgen_busiest_thread_percent > 0.0,
                "the {engine} thread drove {} exchanges but its CPU reads {} %\n{run}",
                report.exchanges,
                report.loadgen_busiest_thread_percent
            );
        }
    }
}

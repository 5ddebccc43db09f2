//! Issue 5, "Survive": the fault suite. Each test runs the real server (a child process,
//! so its memory and CPU can be read from /proc) against many misbehaving clients, with
//! every loop bounded in count and time. Nothing here asserts on speed: only on what was
//! served, counted, kept or lost, plus generous bounds on memory and on CPU time (the
//! difference between "backing off" and "spinning").

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{TcpStream, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::ops::{cpu_time, metrics_addr, poll, raise_nofile, rss_kib, scrape_until, stderr_line};
use crate::util::{Proc, TIMEOUT, connect_tcp as connect, sockit_command};

/// `count` line exchanges on one connection; panics if any reply is wrong or missing.
fn exchanges(addr: &str, count: usize, expect: &str) {
    let mut stream = connect(addr);
    let mut reader = BufReader::new(stream.try_clone().unwrap_or_else(|e| panic!("{e}")));
    let mut reply = String::new();
    for i in 0..count {
        writeln!(stream, "request {i}").unwrap_or_else(|e| panic!("send {i}: {e}"));
        reply.clear();
        reader
            .read_line(&mut reply)
            .unwrap_or_else(|e| panic!("reply {i}: {e}"));
        let expected = if expect.is_empty() {
            format!("request {i}\n")
        } else {
            format!("{expect}\n")
        };
        assert_eq!(reply, expected, "exchange {i}");
    }
}

/// The value of an unlabelled-but-for-transport sample, read from the raw text (for
/// frequent sampling; the format itself is checked with the real parser elsewhere).
fn quick_sample(text: &str, name: &str) -> u64 {
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with('{'))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in\n{text}"))
}

/// The raw `/metrics` text.
fn metrics_text(addr: &str) -> String {
    crate::ops::http_get(addr, "/metrics").1
}

#[test]
fn a_thousand_silent_clients_delay_nobody() {
    const SILENT: usize = 1000;
    raise_nofile(10_000);
    let mut server = Proc::sockit(&[
        "serve",
        "tcp://127.0.0.1:0",
        "--framing",
        "line",
        "--reply",
        "pong",
        "--backlog",
        "2048",
        "--metrics",
        "127.0.0.1:0",
        "-q",
    ]);
    let addr = server.listening();
    let metrics = metrics_addr(&server);
    exchanges(&addr, 10, "pong");
    let before = rss_kib(server.pid());

    let silent: Vec<TcpStream> = (0..SILENT).map(|_| connect(&addr)).collect();
    scrape_until(
        &server,
        &metrics,
        "the silent clients to be accepted",
        |m| m.count("sockit_connections_active", "tcp") == SILENT as u64,
    );
    let after = rss_kib(server.pid());
    eprintln!(
        "idle connections: RSS {before} KiB -> {after} KiB, {:.1} KiB per connection",
        after.saturating_sub(before) as f64 / SILENT as f64
    );

    // Fifty well-behaved clients, ten exchanges each, all served while the silent ones hold on.
    let good: Vec<_> = (0..50)
        .map(|_| {
            let addr = addr.clone();
            std::thread::spawn(move || exchanges(&addr, 10, "pong"))
        })
        .collect();
    for client in good {
        client
            .join()
            .unwrap_or_else(|_| panic!("a good client failed"));
    }
    let m = scrape_until(&server, &metrics, "the good clients to finish", |m| {
        m.count("sockit_connections_active", "tcp") == SILENT as u64
    });
    assert_eq!(m.count("sockit_messages_received_total", "tcp"), 510);
    drop(silent);
}

#[test]
fn out_of_descriptors_the_server_backs_off_keeps_serving_and_recovers() {
    out_of_descriptors_backs_off_keeps_serving_and_recovers("line");
}

/// The same on the fast lane (raw framing), whose accept loop waits in its own epoll set.
#[test]
fn out_of_descriptors_the_fast_lane_backs_off_keeps_serving_and_recovers() {
    out_of_descriptors_backs_off_keeps_serving_and_recovers("raw");
}

/// Floods a `serve --echo` with `--framing framing` past its descriptor limit: it warns,
/// pauses accepting without spinning, keeps serving its client, and recovers.
fn out_of_descriptors_backs_off_keeps_serving_and_recovers(framing: &str) {
    /// Descriptors the server may hold: a few for itself, the rest for clients.
    const LIMIT: u64 = 48;
    /// More clients than that, so `accept` fails with EMFILE.
    const FLOOD: usize = 80;
    raise_nofile(4096);
    let mut cmd = sockit_command(&[
        "serve",
        "tcp://127.0.0.1:0",
        "--framing",
        framing,
        "--echo",
        "--idle-timeout",
        "0",
        "--backlog",
        "256",
    ]);
    limit_descriptors(&mut cmd, LIMIT);
    let mut server = Proc::spawn(cmd, false);
    let addr = server.listening();
    let pid = server.pid();

    // An existing client, served before, during and after the exhaustion.
    let mut existing = connect(&addr);
    let mut existing_reader =
        BufReader::new(existing.try_clone().unwrap_or_else(|e| panic!("{e}")));
    let mut exchange_existing = |what: &str| {
        writeln!(existing, "{what}").unwrap_or_else(|e| panic!("{what}: {e}"));
        let mut reply = String::new();
        existing_reader
            .read_line(&mut reply)
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(reply, format!("{what}\n"));
    };
    exchange_existing("before");

    // The flood: connects succeed (the kernel queues them), accept runs out of descriptors.
    let flood: Vec<TcpStream> = (0..FLOOD).map(|_| connect(&addr)).collect();
    let warning = stderr_line(&server, "the EMFILE warning", |l| {
        l.contains("accept failed")
    });
    assert!(warning.contains("out of file descriptors"), "{warning}");

    // Not spinning: over a two-second window the server uses a small share of one core.
    let window = Duration::from_secs(2);
    let cpu_before = cpu_time(pid);
    let start = Instant::now();
    exchange_existing("during");
    std::thread::sleep(window.saturating_sub(start.elapsed()));
    let used = cpu_time(pid).saturating_sub(cpu_before);
    eprintln!("EMFILE: {used:?} of CPU over {window:?}");
    assert!(
        used < window / 4,
        "the server used {used:?} of CPU in {window:?} while out of descriptors: it is spinning\n{}",
        server.report()
    );
    exchange_existing("still during");
    let warnings = server
        .stderr()
        .lines()
        .filter(|l| l.contains("accept failed"))
        .count();
    assert!(
        warnings < 40,
        "{warnings} accept warnings in {window:?}: no backoff?"
    );

    // Descriptors free up: the queued clients are accepted, and so is a new one.
    drop(flood);
    exchanges(&addr, 3, "");
    exchange_existing("after");
    assert!(
        server.stderr().lines().all(|l| !l.contains("panicked")),
        "{}",
        server.report()
    );
    server.signal(libc::SIGTERM);
    assert!(server.wait_exit().success(), "{}", server.report());
}

/// Caps the descriptors the child started by `cmd` may hold at `limit`.
fn limit_descriptors(cmd: &mut std::process::Command, limit: u64) {
    use std::os::unix::process::CommandExt;
    // SAFETY: setrlimit is async-signal-safe and only changes the child's own limit.
    unsafe {
        cmd.pre_exec(move || {
            let limit = libc::rlimit {
                rlim_cur: limit,
                rlim_max: limit,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Issue 17: the `--metrics` listener's accept loop backs off on EMFILE with the shared
/// back-off, as the server's own loops do, and its warning names it; once descriptors
/// free up, a scraper that waited in the backlog is answered.
#[test]
fn out_of_descriptors_the_metrics_endpoint_backs_off_and_names_itself() {
    /// Descriptors the server may hold: a few for itself, the rest for clients.
    const LIMIT: u64 = 48;
    /// More clients than that, so every `accept` fails with EMFILE.
    const FLOOD: usize = 80;
    raise_nofile(4096);
    // Line framing: the connections live in the process's descriptor table, as the
    // metrics listener does (a fast-lane thread built with `own-table` has a table, and
    // so a descriptor limit, of its own).
    let mut cmd = sockit_command(&[
        "serve",
        "tcp://127.0.0.1:0",
        "--echo",
        "--framing",
        "line",
        "--idle-timeout",
        "0",
        "--backlog",
        "256",
        "--metrics",
        "127.0.0.1:0",
    ]);
    limit_descriptors(&mut cmd, LIMIT);
    let mut server = Proc::spawn(cmd, false);
    let addr = server.listening();
    let metrics = metrics_addr(&server);

    let flood: Vec<TcpStream> = (0..FLOOD).map(|_| connect(&addr)).collect();
    stderr_line(&server, "the server's EMFILE warning", |l| {
        l.contains("accept failed")
    });
    let scraper = std::thread::spawn(move || crate::ops::http_get(&metrics, "/metrics"));
    let warning = stderr_line(&server, "the metrics listener's EMFILE warning", |l| {
        l.contains("metrics: accept failed")
    });
    assert!(warning.contains("out of file descriptors"), "{warning}");

    drop(flood);
    let (head, _) = scraper
        .join()
        .unwrap_or_else(|_| panic!("the scrape failed\n{}", server.report()));
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    server.signal(libc::SIGTERM);
    assert!(server.wait_exit().success(), "{}", server.report());
}

#[test]
fn a_thousand_clients_that_never_read_keep_server_memory_flat() {
    use socket2::{Domain, Socket, Type};
    const CLIENTS: usize = 1000;
    /// Each client sends at most this much (bounding kernel buffer use on the machine).
    const PUSH: usize = 256 * 1024;
    raise_nofile(10_000);
    let mut server = Proc::sockit(&[
        "serve",
        "tcp://127.0.0.1:0",
        "--echo",
        "--backlog",
        "2048",
        "--metrics",
        "127.0.0.1:0",
        "-q",
    ]);
    let addr = server.listening();
    let metrics = metrics_addr(&server);
    exchanges(&addr, 10, "");
    let before = rss_kib(server.pid());

    let target: std::net::SocketAddr = addr.parse().unwrap_or_else(|e| panic!("{e}"));
    let chunk = vec![b'x'; 16 * 1024];
    let mut pushed = 0u64;
    let mut clients = Vec::with_capacity(CLIENTS);
    for _ in 0..CLIENTS {
        let socket =
            Socket::new(Domain::IPV4, Type::STREAM, None).unwrap_or_else(|e| panic!("{e}"));
        // Small client buffers: the server's writes block soon, as with a slow reader.
        socket.set_recv_buffer_size(4096).ok();
        socket.set_send_buffer_size(16 * 1024).ok();
        socket
            .connect(&target.into())
            .unwrap_or_else(|e| panic!("connect: {e}"));
        let mut stream: TcpStream = socket.into();
        stream.set_nonblocking(true).ok();
        let mut sent = 0;
        // Write until the kernel says "would block" (the server stopped reading us).
        let mut stalls = 0;
        while sent < PUSH && stalls < 3 {
            match stream.write(&chunk[..chunk.len().min(PUSH - sent)]) {
                Ok(n) => sent += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    stalls += 1;
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(e) => panic!("write: {e}"),
            }
        }
        pushed += sent as u64;
        clients.push(stream);
    }
    let m = scrape_until(&server, &metrics, "every non-reader to be connected", |m| {
        m.count("sockit_connections_active", "tcp") == CLIENTS as u64
    });
    drop(m);
    let after = rss_kib(server.pid());
    let per_client = after.saturating_sub(before) as f64 / CLIENTS as f64;
    eprintln!(
        "non-reading clients: pushed {} MiB, server RSS {before} KiB -> {after} KiB, {per_client:.1} KiB per client",
        pushed / (1024 * 1024)
    );
    // Buffering what the clients pushed would cost hundreds of KiB each; reading stops
    // instead, so each costs its task and a couple of small buffers.
    assert!(
        per_client < 64.0,
        "{per_client:.1} KiB per non-reading client (pushed {pushed} bytes in all)"
    );
    assert!(
        pushed > 10 * 1024 * 1024,
        "the clients pushed only {pushed} bytes; the test did not load the server"
    );
    // The server still serves everyone else.
    exchanges(&addr, 5, "");
    drop(clients);
}

#[test]
fn sigterm_under_load_delivers_every_reply_to_tcp_clients() {
    const CLIENTS: usize = 32;
    raise_nofile(4096);
    let mut server = Proc::sockit(&[
        "serve",
        "tcp://127.0.0.1:0",
        "--echo",
        "--framing",
        "line",
        "--grace",
        "20s",
        "-q",
    ]);
    let addr = server.listening();
    let replies = Arc::new(AtomicU64::new(0));
    let bytes = Arc::new(AtomicU64::new(0));
    // Clients that have had a reply: SIGTERM waits for all of them, since a client still
    // in the backlog when the listener closes is never accepted (and not counted).
    let served = Arc::new(AtomicU64::new(0));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let (addr, replies, bytes) = (addr.clone(), Arc::clone(&replies), Arc::clone(&bytes));
            let served = Arc::clone(&served);
            std::thread::spawn(move || {
                let mut stream = connect(&addr);
                let mut reader =
                    BufReader::new(stream.try_clone().unwrap_or_else(|e| panic!("{e}")));
                let request = format!("{}\n", format!("client {c} ").repeat(100));
                let mut reply = String::new();
                for round in 0..200_000 {
                    if stream.write_all(request.as_bytes()).is_err() {
                        break; // closed before taking this request: it was never answered
                    }
                    reply.clear();
                    match reader.read_line(&mut reply) {
                        Ok(0) => break,
                        Ok(n) => {
                            assert_eq!(reply, request, "a reply was cut or mixed up");
                            replies.fetch_add(1, Ordering::Relaxed);
                            if round == 0 {
                                served.fetch_add(1, Ordering::Relaxed);
                            }
                            bytes.fetch_add(n as u64, Ordering::Relaxed);
                        }
                        Err(e) if e.kind() == ErrorKind::ConnectionReset => break,
                        Err(e) => panic!("client {c}: {e}"),
                    }
                }
            })
        })
        .collect();
    poll(
        "traffic to flow",
        || server.report(),
        || {
            let everyone = served.load(Ordering::Relaxed) == CLIENTS as u64;
            (everyone && replies.load(Ordering::Relaxed) >= 20 * CLIENTS as u64).then_some(())
        },
    );
    server.signal(libc::SIGTERM);
    for client in clients {
        client.join().unwrap_or_else(|_| panic!("a client failed"));
    }
    assert!(server.wait_exit().success(), "{}", server.report());
    let summary = server
        .stderr()
        .lines()
        .find(|l| l.starts_with("summary: "))
        .map(str::to_string)
        .unwrap_or_else(|| panic!("no summary\n{}", server.report()));
    let field = |suffix: &str| -> u64 {
        summary
            .split(", ")
            .find_map(|p| p.strip_suffix(suffix))
            .and_then(|n| n.trim_start_matches("summary: ").parse().ok())
            .unwrap_or_else(|| panic!("no {suffix:?} in {summary}"))
    };
    assert_eq!(
        field(" messages"),
        replies.load(Ordering::Relaxed),
        "{summary}"
    );
    assert_eq!(
        field(" bytes out"),
        bytes.load(Ordering::Relaxed),
        "{summary}"
    );
    assert_eq!(field(" connections"), CLIENTS as u64, "{summary}");
}

#[test]
fn resets_mid_message_and_mid_reply_end_only_their_connection_and_are_logged_once() {
    const MID_MESSAGE: usize = 20;
    const MID_REPLY: usize = 5;
    let mut server = Proc::sockit(&[
        "serve",
        "tcp://127.0.0.1:0",
        "--echo",
        "--framing",
        "line",
        "--max-line",
        "8000000",
        "--metrics",
        "127.0.0.1:0",
        "-q",
    ]);
    let addr = server.listening();
    let metrics = metrics_addr(&server);
    let stop = Arc::new(AtomicBool::new(false));
    // A good client exchanging the whole time.
    let good = {
        let (addr, stop) = (addr.clone(), Arc::clone(&stop));
        std::thread::spawn(move || {
            let mut done = 0;
            while !stop.load(Ordering::Relaxed) && done < 2000 {
                exchanges(&addr, 5, "");
                done += 1;
            }
            done
        })
    };
    let reset = |stream: TcpStream| {
        socket2::SockRef::from(&stream)
            .set_linger(Some(Duration::ZERO))
            .unwrap_or_else(|e| panic!("{e}"));
        drop(stream);
    };
    for _ in 0..MID_MESSAGE {
        let mut stream = connect(&addr);
        stream
            .write_all(b"half a mess")
            .unwrap_or_else(|e| panic!("{e}"));
        reset(stream);
    }
    let big = vec![b'y'; 4_000_000];
    for _ in 0..MID_REPLY {
        let mut stream = connect(&addr);
        stream.write_all(&big).unwrap_or_else(|e| panic!("{e}"));
        stream.write_all(b"\n").unwrap_or_else(|e| panic!("{e}"));
        let mut first = [0u8; 1000];
        stream
            .read_exact(&mut first)
            .unwrap_or_else(|e| panic!("{e}"));
        reset(stream);
    }
    let m = scrape_until(&server, &metrics, "every reset to be counted", |m| {
        m.get(
            "sockit_errors_total",
            &[("transport", "tcp"), ("kind", "reset")],
        ) == (MID_MESSAGE + MID_REPLY) as f64
    });
    stop.store(true, Ordering::Relaxed);
    let rounds = good
        .join()
        .unwrap_or_else(|_| panic!("the good client failed"));
    assert!(rounds > 0);
    assert_eq!(
        m.count("sockit_connection_errors_total", "tcp"),
        (MID_MESSAGE + MID_REPLY) as u64
    );
    // One line per reset connection, no more.
    let stderr = server.stderr();
    let reset_lines: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("reset") || l.contains("closed the connection"))
        .collect();
    assert_eq!(reset_lines.len(), MID_MESSAGE + MID_REPLY, "{stderr}");
    let mut ids: Vec<&str> = reset_lines
        .iter()
        .filter_map(|l| {
            // `conn{id=7 peer=…}: …`, the span every connection line is logged under.
            let rest = l.split("conn{id=").nth(1)?;
            rest.split([' ', '}']).next()
        })
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(
        ids.len(),
        MID_MESSAGE + MID_REPLY,
        "each line names its own connection\n{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn a_udp_flood_does_not_stop_a_connected_tcp_client_being_served() {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    // Both servers share one worker thread, so a datagram loop that never yielded would
    // starve the TCP connection.
    let udp = crate::util::start_server("udp://127.0.0.1:0", sockit::ServeOptions::seed).await;
    let tcp = crate::util::start_server("tcp://127.0.0.1:0", |e| {
        let mut options = sockit::ServeOptions::seed(e);
        options.framing = sockit::framing::Framing::Line { max_len: 1024 };
        options.responder = sockit::behaviour::Responder::Echo;
        options
    })
    .await;
    let tcp_addr = tcp
        .endpoint
        .to_string()
        .trim_start_matches("tcp://")
        .to_string();
    let udp_addr = udp
        .endpoint
        .to_string()
        .trim_start_matches("udp://")
        .to_string();
    let mut client = crate::util::within("connect", tokio::net::TcpStream::connect(&tcp_addr))
        .await
        .unwrap_or_else(|e| panic!("{e}"));

    let flooding = Arc::new(AtomicBool::new(true));
    let sent = Arc::new(AtomicU64::new(0));
    let flooders: Vec<_> = (0..1)
        .map(|_| {
            let (udp_addr, flooding, sent) =
                (udp_addr.clone(), Arc::clone(&flooding), Arc::clone(&sent));
            std::thread::spawn(move || {
                let socket = UdpSocket::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
                let deadline = Instant::now() + TIMEOUT;
                let payload = [0u8; 512];
                // Until the TCP client is done: every exchange below happens during the flood.
                while flooding.load(Ordering::Relaxed) && Instant::now() < deadline {
                    if socket.send_to(&payload, &udp_addr).is_ok() {
                        sent.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();

    // Wait until the flood is really arriving, then exchange 200 lines over TCP.
    while sent.load(Ordering::Relaxed) < 20_000 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let (reader, mut writer) = client.split();
    let mut reader = tokio::io::BufReader::new(reader);
    let mut line = String::new();
    let started = Instant::now();
    let sent_before = sent.load(Ordering::Relaxed);
    for i in 0..2000 {
        crate::util::within("a TCP exchange during the flood", async {
            writer.write_all(format!("tcp {i}\n").as_bytes()).await?;
            line.clear();
            reader.read_line(&mut line).await
        })
        .await
        .unwrap_or_else(|e| panic!("exchange {i}: {e}"));
        assert_eq!(line, format!("tcp {i}\n"));
    }
    let tcp_time = started.elapsed();
    let sent_during = sent.load(Ordering::Relaxed);
    flooding.store(false, Ordering::Relaxed);
    for flooder in flooders {
        flooder
            .join()
            .unwrap_or_else(|_| panic!("a flooder failed"));
    }
    udp.shutdown.trigger();
    tcp.shutdown.trigger();
    let udp_summary = crate::util::within("udp drain", udp.done)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let tcp_summary = crate::util::within("tcp drain", tcp.done)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    eprintln!(
        "UDP flood: {} datagrams sent, {} answered; TCP: {} messages in {tcp_time:?} during the flood",
        sent.load(Ordering::Relaxed),
        udp_summary.messages,
        tcp_summary.messages
    );
    assert!(
        udp_summary.messages > 0,
        "the flood never reached the UDP server"
    );
    assert_eq!(tcp_summary.messages, 2000);
    assert!(
        sent_during > sent_before,
        "the flood stopped before the TCP exchanges ended"
    );
}

#[test]
fn max_conns_holds_under_a_burst_in_both_modes() {
    const BURST: usize = 1000;
    const LIMIT: u64 = 20;
    raise_nofile(10_000);

    // refuse: exactly LIMIT are served, the rest are accepted and closed at once.
    let mut server = Proc::sockit(&[
        "serve",
        "tcp://127.0.0.1:0",
        "--echo",
        "--max-conns",
        "20",
        "--max-conns-mode",
        "refuse",
        "--backlog",
        "2048",
        "--metrics",
        "127.0.0.1:0",
        "-q",
    ]);
    let addr = server.listening();
    let metrics = metrics_addr(&server);
    let burst: Vec<TcpStream> = (0..BURST).map(|_| connect(&addr)).collect();
    let m = scrape_until(&server, &metrics, "every burst client to be judged", |m| {
        m.count("sockit_connections_accepted_total", "tcp")
            + m.count("sockit_connections_refused_total", "tcp")
            == BURST as u64
    });
    assert_eq!(m.count("sockit_connections_accepted_total", "tcp"), LIMIT);
    assert_eq!(m.count("sockit_connections_active", "tcp"), LIMIT);
    assert_eq!(
        m.count("sockit_connections_refused_total", "tcp"),
        BURST as u64 - LIMIT
    );
    drop(burst);
    drop(server);

    // wait: the rest queue in the backlog; at no sample are more than LIMIT served, and
    // every client is served in the end.
    let mut server = Proc::sockit(&[
        "serve",
        "tcp://127.0.0.1:0",
        "--echo",
        "--framing",
        "line",
        "--max-conns",
        "20",
        "--backlog",
        "2048",
        "--metrics",
        "127.0.0.1:0",
        "-q",
    ]);
    let addr = server.listening();
    let metrics = metrics_addr(&server);
    let mut waiting: Vec<TcpStream> = (0..BURST)
        .map(|i| {
            let mut stream = connect(&addr);
            writeln!(stream, "client {i}").unwrap_or_else(|e| panic!("{e}"));
            stream.set_nonblocking(true).ok();
            stream
        })
        .collect();
    // Nobody has closed yet, so the server holds exactly the limit and no more.
    scrape_until(&server, &metrics, "the limit to fill", |m| {
        m.count("sockit_connections_active", "tcp") == LIMIT
            && m.count("sockit_connections_accepted_total", "tcp") == LIMIT
    });
    let deadline = Instant::now() + TIMEOUT * 2;
    let mut served = 0;
    let mut buf = [0u8; 64];
    while !waiting.is_empty() {
        assert!(
            Instant::now() < deadline,
            "{served} of {BURST} served in time\n{}",
            server.report()
        );
        let text = metrics_text(&metrics);
        let active = quick_sample(&text, "sockit_connections_active");
        assert!(
            active <= LIMIT,
            "{active} connections served at once with --max-conns {LIMIT}"
        );
        // Close every client that got its reply, freeing its slot.
        waiting.retain_mut(|stream| match stream.read(&mut buf) {
            Ok(n) if n > 0 => {
                served += 1;
                false
            }
            Ok(_) => panic!("a waiting client was closed without its reply"),
            Err(e) if e.kind() == ErrorKind::WouldBlock => true,
            Err(e) => panic!("{e}"),
        });
        std::thread::sleep(Duration::from_millis(2));
    }
    assert_eq!(served, BURST);
    let m = scrape_until(&server, &metrics, "all to be counted", |m| {
        m.count("sockit_connections_accepted_total", "tcp") == BURST as u64
    });
    assert_eq!(m.count("sockit_connections_refused_total", "tcp"), 0);
}

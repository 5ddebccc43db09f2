//! Issue 2, point 6: the note's problem, solved. Slow and silent clients never delay the
//! others; UDP answers many senders, each at its own address.

use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpStream, UdpSocket};

use crate::util::{Proc, within};

/// How many clients are served while the two bad ones hold their connections.
const CLIENTS: usize = 200;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_clients_while_one_is_silent_and_one_stalls_mid_line() {
    let mut server = Proc::sockit(&[
        "serve",
        "tcp://127.0.0.1:0",
        "--framing",
        "line",
        "--reply",
        "pong",
        "-q",
    ]);
    let addr = server.listening();

    // The note's server would block on this one forever: connected, sends nothing.
    let silent = within("silent connect", TcpStream::connect(&addr))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    // And this one sends half a line and stalls.
    let mut staller = within("staller connect", TcpStream::connect(&addr))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    within("staller write", staller.write_all(b"half a li"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));

    let started = std::time::Instant::now();
    let mut clients = tokio::task::JoinSet::new();
    for i in 0..CLIENTS {
        let addr = addr.clone();
        clients.spawn(async move {
            let mut stream = TcpStream::connect(&addr).await?;
            stream.write_all(format!("ping {i}\n").as_bytes()).await?;
            let mut reply = String::new();
            BufReader::new(&mut stream).read_line(&mut reply).await?;
            Ok::<_, std::io::Error>(reply)
        });
    }
    let mut replies = 0;
    while let Some(result) = within("200 replies", clients.join_next()).await {
        let reply = result
            .unwrap_or_else(|e| panic!("client task: {e}"))
            .unwrap_or_else(|e| panic!("client: {e}"));
        assert_eq!(reply, "pong\n");
        replies += 1;
    }
    assert_eq!(replies, CLIENTS);
    // A generous bound: on loopback this takes milliseconds; the note's server never finishes.
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "took {:?}",
        started.elapsed()
    );

    // The stalled client was not dropped: finishing its line gets its answer.
    within("staller finish", staller.write_all(b"ne\n"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let mut reply = [0u8; 5];
    within("staller reply", staller.read_exact(&mut reply))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(&reply, b"pong\n");
    drop(silent);
    drop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_answers_many_senders_each_at_its_own_address() {
    // One thread, and three sharing one socket or with a socket each: every thread's
    // answer loop blocks on its copy, and SIGTERM must still stop them all.
    for threads in [
        &[][..],
        &["--threads", "3"],
        &["--threads", "3", "--reuse-port"],
    ] {
        let mut args = vec!["serve", "udp://127.0.0.1:0", "--echo", "-q"];
        args.extend_from_slice(threads);
        let mut server = Proc::sockit(&args);
        let addr = server.listening();
        answer_fifty_senders(&addr).await;
        server.signal(libc::SIGTERM);
        assert!(
            server.wait_exit().success(),
            "{threads:?}: {}",
            server.report()
        );
    }
}

/// 50 senders, each from its own socket, each gets its own datagram back.
async fn answer_fifty_senders(addr: &str) {
    let mut senders = tokio::task::JoinSet::new();
    for i in 0..50 {
        let addr = addr.to_string();
        senders.spawn(async move {
            let socket = UdpSocket::bind("127.0.0.1:0").await?;
            socket.connect(&addr).await?;
            let message = format!("sender {i}");
            let mut buf = [0u8; 64];
            // UDP may drop; retry a bounded number of times.
            for _ in 0..5 {
                socket.send(message.as_bytes()).await?;
                if let Ok(n) =
                    tokio::time::timeout(Duration::from_secs(2), socket.recv(&mut buf)).await
                {
                    return Ok::<_, std::io::Error>((
                        message,
                        String::from_utf8_lossy(&buf[..n?]).into_owned(),
                    ));
                }
            }
            Err(std::io::Error::other("no reply after 5 tries"))
        });
    }
    while let Some(result) = within("50 UDP replies", senders.join_next()).await {
        let (sent, got) = result
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(sent, got, "each sender gets its own datagram back");
    }
}

/// Listening sockets on 127.0.0.1:`port` in the kernel's table (state 0A = LISTEN).
fn listeners_on(port: u16) -> usize {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_else(|e| panic!("{e}"));
    let local = format!("0100007F:{port:04X}");
    table
        .lines()
        .filter(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            fields.get(1) == Some(&local.as_str()) && fields.get(3) == Some(&"0A")
        })
        .count()
}

/// Issue 5 point 10 / issue 6 point 9: `--reuse-port` gives each thread its own listening
/// socket (the kernel spreads clients over them); without it the threads share one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reuse_port_gives_each_thread_its_own_listening_socket() {
    for (flags, expected) in [(&["--reuse-port"][..], 2), (&[][..], 1)] {
        let mut args = vec!["serve", "tcp://127.0.0.1:0", "--threads", "2", "-q"];
        args.extend_from_slice(flags);
        let mut server = Proc::sockit(&args);
        let addr = server.listening();
        let port: u16 = addr
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        assert_eq!(
            listeners_on(port),
            expected,
            "{flags:?}\n{}",
            server.report()
        );
        let mut clients = tokio::task::JoinSet::new();
        for _ in 0..50 {
            let addr = addr.clone();
            clients.spawn(async move {
                let mut stream = TcpStream::connect(&addr).await?;
                stream.write_all(b"hello tcp server").await?;
                let mut reply = [0u8; 16];
                stream.read_exact(&mut reply).await?;
                Ok::<_, std::io::Error>(reply)
            });
        }
        while let Some(result) = within("50 replies", clients.join_next()).await {
            let reply = result
                .unwrap_or_else(|e| panic!("{e}"))
                .unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(&reply, b"hello tcp client");
        }
    }
}

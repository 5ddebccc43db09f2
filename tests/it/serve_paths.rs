//! The two ways a connection is served: on the spot by the accept loop (its first message
//! already there: one read, one write, no task) and in its own task. Whatever the path, a
//! client gets every byte of its reply, and `--close` ends the connection only after it.

use std::io::{Read, Write};
use std::net::TcpStream;

use bytes::Bytes;
use sockit::ServeOptions;
use sockit::behaviour::Responder;
use sockit::server::AfterReply;

use crate::util::{TIMEOUT, connect_tcp, exchange_to_eof, start_server, within};

/// A reply far larger than loopback socket buffers: the on-the-spot write can only send
/// part of it, and the connection's task must send the rest before closing.
const BIG: usize = 8 * 1024 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_too_big_to_write_at_once_is_finished_before_close() {
    let reply = Bytes::from(vec![b'r'; BIG]);
    let server = start_server("tcp://127.0.0.1:0", |endpoint| ServeOptions {
        responder: Responder::Reply(reply.clone()),
        after_reply: AfterReply::Close,
        ..ServeOptions::seed(endpoint)
    })
    .await;
    let addr = server.endpoint.to_string().replace("tcp://", "");
    let received = within(
        "the whole reply, then EOF",
        tokio::task::spawn_blocking(move || {
            exchange_to_eof(&mut connect_tcp(&addr), b"hello tcp server")
        }),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(received.len(), BIG, "every byte of the reply, then EOF");
    assert!(received.iter().all(|&b| b == b'r'));
    server.shutdown.trigger();
    let summary = within("drain", server.done)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(summary.bytes_out, BIG as u64);
    assert_eq!((summary.connections, summary.messages), (1, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_speaks_late_is_served_by_its_task_with_the_same_answer() {
    let server = start_server("tcp://127.0.0.1:0", ServeOptions::seed).await;
    let addr = server.endpoint.to_string().replace("tcp://", "");
    let replies = within(
        "replies",
        tokio::task::spawn_blocking(move || {
            let mut replies = Vec::new();
            // First: the message is already there when the server accepts (on the spot).
            // Second: the client waits for the server to have accepted (a reply to an
            // earlier message proves it) before sending: its task serves it.
            let mut early = TcpStream::connect(&addr).unwrap_or_else(|e| panic!("{e}"));
            early.set_read_timeout(Some(TIMEOUT)).ok();
            early
                .write_all(b"hello tcp server")
                .unwrap_or_else(|e| panic!("{e}"));
            let mut buf = [0u8; 64];
            let n = early.read(&mut buf).unwrap_or_else(|e| panic!("{e}"));
            replies.push(buf[..n].to_vec());
            early.write_all(b"again").unwrap_or_else(|e| panic!("{e}"));
            let n = early.read(&mut buf).unwrap_or_else(|e| panic!("{e}"));
            replies.push(buf[..n].to_vec());
            replies
        }),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        replies,
        [b"hello tcp client".to_vec(), b"hello tcp client".to_vec()]
    );
    server.shutdown.trigger();
    let summary = within("drain", server.done)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        (summary.connections, summary.messages, summary.replies),
        (1, 2, 2)
    );
}

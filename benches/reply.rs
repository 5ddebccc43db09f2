//! The reply path: what a server does per message after framing it. `Responder::answer`
//! (the zero-copy answer: slices to send), `Responder::respond` (the answer appended to an
//! output buffer), and the per-message event line: `escape_into` (any bytes → one
//! readable line) and `EventLog::emit` (formatting and queueing a `message` event; the
//! writer thread writes to a sink).
//!
//! `cargo bench --bench reply`.

use std::hint::black_box;
use std::net::SocketAddr;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use sockit::behaviour::Responder;
use sockit::obs::escape::escape_into;
use sockit::obs::{Event, EventLog, LogFormat};
use sockit::transport::PeerAddr;

/// The note's message and reply.
const HELLO: &[u8] = b"hello tcp server";

fn responder(c: &mut Criterion) {
    let mut group = c.benchmark_group("reply/responder");
    group.throughput(Throughput::Elements(1));
    let seed = Responder::seed_reply("tcp");
    let echo = Responder::Echo;
    let message = vec![b'm'; 64];
    let framed = [&message[..], b"\n"].concat();
    group.bench_function("answer seed reply", |b| {
        b.iter(|| seed.answer(black_box(HELLO), black_box(b"")));
    });
    group.bench_function("answer echo 64B", |b| {
        b.iter(|| echo.answer(black_box(&framed), black_box(b"\n")));
    });
    let mut out = Vec::with_capacity(4096);
    group.bench_function("respond seed reply", |b| {
        b.iter(|| {
            out.clear();
            seed.respond(black_box(HELLO), black_box(b""), &mut out)
        });
    });
    group.bench_function("respond echo 64B line", |b| {
        b.iter(|| {
            out.clear();
            echo.respond(black_box(&message), black_box(b"\n"), &mut out)
        });
    });
    group.finish();
}

fn escape(c: &mut Criterion) {
    let mut group = c.benchmark_group("reply/escape_into");
    let cases: [(&str, Vec<u8>); 4] = [
        ("hello 16B ascii", HELLO.to_vec()),
        ("ascii 1KiB", vec![b'a'; 1024]),
        (
            "chinese utf8 1KiB",
            "你好，服务器。".repeat(1024 / 21).into_bytes(),
        ),
        (
            "binary 1KiB",
            (0..1024u32).map(|i| (i * 37 % 256) as u8).collect(),
        ),
    ];
    let mut out = String::with_capacity(8192);
    for (name, bytes) in &cases {
        group.throughput(Throughput::Bytes(bytes.len() as u64));
        group.bench_function(*name, |b| {
            b.iter(|| {
                out.clear();
                escape_into(&mut out, black_box(bytes));
            });
        });
    }
    group.finish();
}

fn event_line(c: &mut Criterion) {
    let mut group = c.benchmark_group("reply/event");
    group.throughput(Throughput::Elements(1));
    let peer = PeerAddr::Ip(SocketAddr::from(([127, 0, 0, 1], 50738)));
    let reply = b"hello tcp client";
    for (name, format) in [
        ("seed", LogFormat::Seed),
        ("text", LogFormat::Text),
        ("json", LogFormat::Json),
    ] {
        let log = EventLog::to_writer(Box::new(std::io::sink()), format, false);
        group.bench_function(format!("emit message ({name})"), |b| {
            b.iter(|| {
                log.emit(Event::Message {
                    conn: 7,
                    peer: &peer,
                    received: black_box(HELLO),
                    sent: Some(black_box(reply)),
                });
            });
        });
        log.flush();
    }
    group.finish();
}

/// Short runs: a second per case keeps `cargo bench` to about a minute.
fn quick() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1))
        .sample_size(50)
}

criterion_group! {
    name = benches;
    config = quick();
    targets = responder, escape, event_line
}
criterion_main!(benches);

//! Framing hot path: `Framer::next_frame` over the inputs a server sees most, raw (each
//! read is a message) and line (many short lines in one read, and one long line arriving
//! a little at a time, which the framer scans only once).
//!
//! `cargo bench --bench framing`; kept short (1 s per case) so the whole suite runs in
//! about a minute.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use sockit::framing::{Framer, Framing};

/// The note's message.
const HELLO: &[u8] = b"hello tcp server";

/// A buffer of `count` short lines, as a chatty line-mode client sends them.
fn lines(count: usize) -> Vec<u8> {
    let mut buf = Vec::new();
    for i in 0..count {
        buf.extend_from_slice(format!("GET /item/{i} please, line number {i}\r\n").as_bytes());
    }
    buf
}

/// Cuts `buf` into every complete frame; returns how many there were.
fn drain_frames(framer: &mut Framer, buf: &[u8]) -> usize {
    let mut start = 0;
    let mut frames = 0;
    while let Ok(Some(span)) = framer.next_frame(&buf[start..]) {
        start += span.consumed();
        frames += 1;
    }
    frames
}

fn raw(c: &mut Criterion) {
    let mut group = c.benchmark_group("framing/raw");
    let mut framer = Framer::new(Framing::Raw);
    group.throughput(Throughput::Elements(1));
    group.bench_function("hello", |b| {
        b.iter(|| framer.next_frame(black_box(HELLO)));
    });
    let read = vec![b'x'; 64 * 1024];
    group.bench_function("64KiB read", |b| {
        b.iter(|| framer.next_frame(black_box(&read)));
    });
    group.finish();
}

fn line(c: &mut Criterion) {
    let mut group = c.benchmark_group("framing/line");
    let framing = Framing::Line { max_len: 64 * 1024 };
    let mut framer = Framer::new(framing);
    let hello_line = b"hello tcp server\n";
    group.throughput(Throughput::Elements(1));
    group.bench_function("one line", |b| {
        b.iter(|| framer.next_frame(black_box(hello_line)));
    });
    let many = lines(100);
    group.throughput(Throughput::Elements(100));
    group.bench_function("100 lines in one read", |b| {
        b.iter(|| drain_frames(&mut framer, black_box(&many)));
    });
    // A 16 KiB line arriving 1 KiB at a time: 16 calls see a growing buffer, and only
    // the last finds the newline.
    let mut long = vec![b'a'; 16 * 1024 - 1];
    long.push(b'\n');
    group.throughput(Throughput::Bytes(long.len() as u64));
    group.bench_function("16KiB line in 1KiB reads", |b| {
        b.iter(|| {
            let mut framer = Framer::new(framing);
            let mut found = None;
            for end in (1024..=long.len()).step_by(1024) {
                found = framer.next_frame(black_box(&long[..end])).ok().flatten();
            }
            found
        });
    });
    group.finish();
}

/// Short runs: these paths take nanoseconds, so a second each is plenty for a stable mean.
fn quick() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1))
        .sample_size(50)
}

criterion_group! {
    name = benches;
    config = quick();
    targets = raw, line
}
criterion_main!(benches);

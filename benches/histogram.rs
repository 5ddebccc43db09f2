//! `sockit bench`'s per-exchange cost of measuring: recording one latency into the HDR
//! histogram (`LatencyHistogram::record`), over latencies spread like a real run's (most
//! tens of µs, a tail into milliseconds), and merging per-thread histograms at the end.
//!
//! `cargo bench --bench histogram`.

use std::hint::black_box;
use std::time::Duration;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use sockit::bench::histogram::LatencyHistogram;

/// 4096 latencies: 90 % between 20 and 120 µs, 9 % up to 2 ms, 1 % up to 200 ms, in a
/// fixed pseudo-random order (no crate needed for a repeatable spread).
fn latencies() -> Vec<Duration> {
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..4096)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let nanos = match state % 100 {
                0 => 2_000_000 + state % 198_000_000,
                1..=9 => 120_000 + state % 1_880_000,
                _ => 20_000 + state % 100_000,
            };
            Duration::from_nanos(nanos)
        })
        .collect()
}

fn record(c: &mut Criterion) {
    let mut group = c.benchmark_group("histogram");
    let samples = latencies();
    let mut histogram = LatencyHistogram::new();
    group.throughput(Throughput::Elements(samples.len() as u64));
    group.bench_function("record 4096 latencies", |b| {
        b.iter(|| {
            for &latency in &samples {
                histogram.record(black_box(latency));
            }
        });
    });
    let mut filled = LatencyHistogram::new();
    for &latency in &samples {
        filled.record(latency);
    }
    group.throughput(Throughput::Elements(1));
    group.bench_function("merge a thread's histogram", |b| {
        b.iter_batched_ref(
            LatencyHistogram::new,
            |total| total.add(black_box(&filled)),
            BatchSize::SmallInput,
        );
    });
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
    targets = record
}
criterion_main!(benches);

//! Latency over time: one histogram per interval of the measured span, for the
//! HdrHistogram interval log (`--hlog`, see [`super::hlog`]) and the plot (`--plot`).
//!
//! Each load-generator thread records into its own current-interval histogram (an
//! [`IntervalRecorder`] beside its totals, so the hot path stays lock-free: one comparison
//! with the next boundary, one more histogram increment). When an exchange completes past
//! the boundary, or when the thread's [`keep_pace`](super::latencies::keep_pace) ticker
//! passes it (on the lane, its sweep), the thread ships the finished interval over a channel. Each thread ships exactly one histogram per interval,
//! in order, so an [`IntervalSink`] on the main task knows an interval is complete once
//! every thread has shipped it; it then adds them up, writes the log line at once (a long
//! run's log can be read while it runs, and Ctrl-C loses nothing) and keeps a short
//! [`IntervalSummary`] for the plot.
//!
//! An exchange belongs to the interval in which it completed, as it belongs to the
//! measured span by its completion time. Each interval keeps the exchanges of the rate
//! ramp (`--ramp-up`) apart from the steady state's, as the report does: the log's
//! untagged lines add up to exactly the report's main histogram, and the ramp's go on
//! lines tagged [`RAMP_TAG`], which HdrHistogram's tools leave out unless asked for
//! them by tag. The plot's summaries count both (throughput over time shows the ramp).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use tokio::sync::mpsc;
use tokio::time::Instant;

use super::histogram::LatencyHistogram;
use super::hlog::HlogWriter;
use crate::error::{Error, Result};

/// The interval when none is given: one second, HdrHistogram's usual.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(1);

/// The shortest interval: shorter ones cost a histogram per thread each and say little.
pub const MIN_INTERVAL: Duration = Duration::from_millis(10);

/// Most intervals one run may have (a day at one per second fits).
pub const MAX_INTERVALS: u64 = 100_000;

/// What to record per interval, when the user asked for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LatencyLog {
    /// The length of one interval.
    pub every: Duration,
    /// Where to write the HdrHistogram interval log (`None`: summaries only, for a plot).
    pub hlog: Option<PathBuf>,
}

impl LatencyLog {
    /// Checks the interval against the run's measured span.
    ///
    /// # Errors
    /// [`Error::Usage`] for an interval too short, or too many intervals.
    pub fn validate(&self, measured: Duration) -> Result<()> {
        if self.every < MIN_INTERVAL {
            return Err(Error::Usage(format!(
                "--hlog-interval must be at least {}",
                humantime::format_duration(MIN_INTERVAL)
            )));
        }
        let count = measured.as_nanos().div_ceil(self.every.as_nanos());
        if count > u128::from(MAX_INTERVALS) {
            return Err(Error::Usage(format!(
                "--hlog-interval {} makes {count} intervals of --duration {}; at most \
                 {MAX_INTERVALS} are kept: raise --hlog-interval",
                humantime::format_duration(self.every),
                humantime::format_duration(measured)
            )));
        }
        Ok(())
    }
}

/// The tag of the interval-log lines that hold the rate ramp's exchanges.
pub const RAMP_TAG: &str = "ramp";

/// Which histogram of the report an exchange belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// While the rate was still ramping up (`--ramp-up`): reported apart.
    Ramp,
    /// After the ramp (the whole measured span without one): the main figures.
    Steady,
}

/// One interval's latencies, the steady state's and the ramp's apart.
#[derive(Debug, Default)]
pub struct IntervalHistograms {
    /// Exchanges of the steady state.
    pub steady: LatencyHistogram,
    /// Exchanges during the rate ramp.
    pub ramp: LatencyHistogram,
}

impl IntervalHistograms {
    /// The histogram of `phase`.
    #[inline]
    fn of(&mut self, phase: Phase) -> &mut LatencyHistogram {
        match phase {
            Phase::Steady => &mut self.steady,
            Phase::Ramp => &mut self.ramp,
        }
    }

    /// Adds another thread's histograms of the same interval.
    fn add(&mut self, other: &IntervalHistograms) {
        self.steady.add(&other.steady);
        self.ramp.add(&other.ramp);
    }

    /// Both together (what the plot draws).
    fn both(&self) -> LatencyHistogram {
        let mut both = self.steady.clone();
        both.add(&self.ramp);
        both
    }
}

/// One thread's histograms of one interval.
#[derive(Debug)]
pub struct IntervalPart {
    /// Which interval: 0 is the first of the measured span.
    pub index: u64,
    /// The latencies of the exchanges this thread completed in it.
    pub histograms: IntervalHistograms,
}

/// One thread's current interval: where its connections record, beside the run's totals.
#[derive(Debug)]
pub struct IntervalRecorder {
    /// The start of the measured span, where interval 0 begins.
    origin: Instant,
    /// The length of one interval.
    every: Duration,
    /// The interval being recorded.
    index: u64,
    /// The end of that interval: a completion at or past it moves on.
    next_boundary: Instant,
    /// Its latencies so far.
    current: IntervalHistograms,
    /// Where finished intervals go (the run's [`IntervalSink`]).
    out: mpsc::UnboundedSender<IntervalPart>,
}

impl IntervalRecorder {
    /// A recorder for the intervals of `every` from `origin`.
    pub fn new(
        origin: Instant,
        every: Duration,
        out: mpsc::UnboundedSender<IntervalPart>,
    ) -> IntervalRecorder {
        IntervalRecorder {
            origin,
            every,
            index: 0,
            next_boundary: origin + every,
            current: IntervalHistograms::default(),
            out,
        }
    }

    /// Records the latency of an exchange of `phase` completed at `done` (inside the
    /// measured span).
    #[inline]
    pub fn record(&mut self, done: Instant, latency: Duration, phase: Phase) {
        if done >= self.next_boundary {
            self.advance_to(self.index_at(done));
        }
        self.current.of(phase).record(latency);
    }

    /// The interval an instant falls in.
    fn index_at(&self, at: Instant) -> u64 {
        let elapsed = at.saturating_duration_since(self.origin).as_nanos();
        u64::try_from(elapsed / self.every.as_nanos().max(1)).unwrap_or(u64::MAX)
    }

    /// Ships every interval before `index` (empty ones too) and records into `index`.
    pub fn advance_to(&mut self, index: u64) {
        // Bounded by the run's length (see MAX_INTERVALS): the ticker passes every
        // boundary, so a jump is at most the intervals since its last tick.
        let index = index.min(MAX_INTERVALS + 1);
        while self.index < index {
            self.ship();
        }
        self.next_boundary = self.boundary(self.index + 1);
    }

    /// Ships the current interval and starts the next.
    fn ship(&mut self) {
        let histograms = std::mem::take(&mut self.current);
        // The sink is gone only when the run is being abandoned.
        let _ = self.out.send(IntervalPart {
            index: self.index,
            histograms,
        });
        self.index += 1;
    }

    /// Where interval `index` begins.
    fn boundary(&self, index: u64) -> Instant {
        let offset = u32::try_from(index)
            .ok()
            .and_then(|k| self.every.checked_mul(k))
            .unwrap_or(super::MAX_DURATION * 2);
        self.origin + offset
    }

    /// Ships the last interval, at the end of the thread's run.
    pub fn finish(mut self) {
        self.ship();
    }
}

/// The figures of one interval of the whole run.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct IntervalSummary {
    /// When the interval began, from the start of the measured span.
    pub start: Duration,
    /// Its length (the last one may be shorter).
    pub length: Duration,
    /// Exchanges completed in it.
    pub count: u64,
    /// Their median latency.
    pub p50: Duration,
    /// Their 99th percentile.
    pub p99: Duration,
    /// The slowest.
    pub max: Duration,
}

impl IntervalSummary {
    /// Exchanges per second in the interval.
    pub fn rate(&self) -> f64 {
        let seconds = self.length.as_secs_f64();
        if seconds > 0.0 {
            self.count as f64 / seconds
        } else {
            0.0
        }
    }
}

/// The measured span the intervals divide.
#[derive(Debug, Clone, Copy)]
pub struct Timeline {
    /// Its start: interval 0 begins here.
    pub origin: Instant,
    /// Its planned length.
    pub span: Duration,
    /// Its start on the wall clock when the user set it (`--start-at`); otherwise read
    /// from the clocks.
    pub wall: Option<SystemTime>,
}

/// Adds up the threads' interval histograms and writes each complete interval.
#[derive(Debug)]
pub struct IntervalSink {
    /// The start of the measured span.
    origin: Instant,
    /// Its planned length: no interval reaches past it.
    span: Duration,
    /// The length of one interval.
    every: Duration,
    /// How many threads ship each interval.
    threads: usize,
    /// Intervals some threads have shipped: their sum so far and how many did.
    pending: BTreeMap<u64, (IntervalHistograms, usize)>,
    /// The interval log, if asked for.
    hlog: Option<HlogWriter>,
    /// Every interval written so far.
    summaries: Vec<IntervalSummary>,
    /// The first failure to write the log (the rest of the log is then skipped).
    failed: Option<Error>,
}

impl IntervalSink {
    /// A sink for `threads` threads' intervals of `every` over `timeline`, writing to
    /// `hlog`, whose header is written now with the span's wall-clock start.
    pub fn new(
        timeline: Timeline,
        every: Duration,
        threads: usize,
        hlog: Option<HlogWriter>,
        target: &str,
    ) -> IntervalSink {
        let Timeline {
            origin,
            span,
            wall: start,
        } = timeline;
        let mut sink = IntervalSink {
            origin,
            span,
            every,
            threads: threads.max(1),
            pending: BTreeMap::new(),
            hlog,
            summaries: Vec::new(),
            failed: None,
        };
        let start = start.unwrap_or_else(|| wall_clock_at(origin));
        if let Some(log) = sink.hlog.as_mut()
            && let Err(e) = log.begin(start, target, every)
        {
            sink.fail(e);
        }
        sink
    }

    /// Takes one thread's part; writes every interval that is now complete.
    pub fn add(&mut self, part: IntervalPart) {
        let entry = self
            .pending
            .entry(part.index)
            .or_insert_with(|| (IntervalHistograms::default(), 0));
        entry.0.add(&part.histograms);
        entry.1 += 1;
        while let Some(first) = self.pending.first_entry() {
            if first.get().1 < self.threads {
                break;
            }
            let (index, (histogram, _)) = first.remove_entry();
            let now = Instant::now().saturating_duration_since(self.origin);
            self.emit(index, &histogram, now.min(self.span));
        }
    }

    /// Writes the intervals still pending (threads that stopped early shipped no more)
    /// for a run whose measured span lasted `measured`; returns every interval's summary,
    /// and the first failure to write the log.
    pub fn finish(mut self, measured: Duration) -> (Vec<IntervalSummary>, Option<Error>) {
        for (index, (histogram, _)) in std::mem::take(&mut self.pending) {
            let empty = histogram.steady.count() == 0 && histogram.ramp.count() == 0;
            if self.start_of(index) >= measured && empty {
                continue;
            }
            self.emit(index, &histogram, measured);
        }
        if let Some(log) = self.hlog.as_mut()
            && let Err(e) = log.flush()
        {
            self.fail(e);
        }
        (self.summaries, self.failed)
    }

    /// Where interval `index` begins, from the origin.
    fn start_of(&self, index: u64) -> Duration {
        u32::try_from(index)
            .ok()
            .and_then(|k| self.every.checked_mul(k))
            .unwrap_or(Duration::MAX)
    }

    /// Writes interval `index`, which lasted until `until` (from the origin) at most: the
    /// ramp's exchanges, if any, on a line tagged [`RAMP_TAG`], then the steady state's.
    fn emit(&mut self, index: u64, histograms: &IntervalHistograms, until: Duration) {
        let start = self.start_of(index);
        let length = until.saturating_sub(start).min(self.every);
        let both = histograms.both();
        let figures = both.percentiles();
        self.summaries.push(IntervalSummary {
            start,
            length,
            count: both.count(),
            p50: figures.p50,
            p99: figures.p99,
            max: figures.max,
        });
        if self.failed.is_some() {
            return;
        }
        let Some(log) = self.hlog.as_mut() else {
            return;
        };
        let ramp = match histograms.ramp.count() {
            0 => Ok(()),
            _ => log.write(&histograms.ramp, start, length, Some(RAMP_TAG)),
        };
        if let Err(e) = ramp.and_then(|()| log.write(&histograms.steady, start, length, None)) {
            self.fail(e);
        }
    }

    /// Keeps the first failure to write the log.
    fn fail(&mut self, error: Error) {
        if self.failed.is_none() {
            self.failed = Some(error);
        }
    }
}

/// The wall-clock time of a monotonic instant (past or future).
pub fn wall_clock_at(at: Instant) -> SystemTime {
    let now = Instant::now();
    let wall = SystemTime::now();
    if at >= now {
        wall + (at - now)
    } else {
        wall.checked_sub(now - at).unwrap_or(wall)
    }
}

/// What each load-generator thread needs to record intervals: their length, and where
/// finished ones go.
#[derive(Debug, Clone)]
pub struct Recording {
    /// The length of one interval.
    pub every: Duration,
    /// The run's sink.
    out: mpsc::UnboundedSender<IntervalPart>,
}

impl Recording {
    /// A thread's recorder for a measured span starting at `origin`.
    pub fn recorder(&self, origin: Instant) -> IntervalRecorder {
        IntervalRecorder::new(origin, self.every, self.out.clone())
    }
}

/// The interval side of one run: the log file, then the task that gathers the threads'
/// intervals while the run goes.
#[derive(Debug)]
pub struct IntervalRun {
    /// The length of one interval.
    every: Duration,
    /// Given to the threads (see [`IntervalRun::recording`]).
    out: mpsc::UnboundedSender<IntervalPart>,
    /// Until [`IntervalRun::start`]: the receiving end and the opened log.
    waiting: Option<(mpsc::UnboundedReceiver<IntervalPart>, Option<HlogWriter>)>,
    /// After it: the gathering task.
    gathering: Option<tokio::task::JoinHandle<IntervalSink>>,
    /// Tells the gathering task that every thread is done.
    finished: tokio_util::sync::CancellationToken,
}

impl IntervalRun {
    /// Opens the log file, if any (so a bad path fails before any connection).
    ///
    /// # Errors
    /// [`Error::Usage`] if the log file cannot be created.
    pub fn prepare(log: Option<&LatencyLog>) -> Result<Option<IntervalRun>> {
        let Some(log) = log else {
            return Ok(None);
        };
        let hlog = log.hlog.as_deref().map(HlogWriter::create).transpose()?;
        let (out, parts) = mpsc::unbounded_channel();
        Ok(Some(IntervalRun {
            every: log.every,
            out,
            waiting: Some((parts, hlog)),
            gathering: None,
            finished: tokio_util::sync::CancellationToken::new(),
        }))
    }

    /// What the threads record with.
    pub fn recording(&self) -> Recording {
        Recording {
            every: self.every,
            out: self.out.clone(),
        }
    }

    /// Starts gathering the intervals of `threads` threads over `timeline`; writes the
    /// log's header.
    pub fn start(&mut self, timeline: Timeline, threads: usize, target: &str) {
        if let Some((parts, hlog)) = self.waiting.take() {
            let sink = IntervalSink::new(timeline, self.every, threads, hlog, target);
            let finished = self.finished.clone();
            self.gathering = Some(tokio::spawn(gather_intervals(sink, parts, finished)));
        }
    }

    /// After the threads are done: writes what is left; returns every interval's figures
    /// and the first failure to write the log.
    pub async fn finish(self, measured: Duration) -> (Vec<IntervalSummary>, Option<Error>) {
        self.finished.cancel();
        let Some(gathering) = self.gathering else {
            return (Vec::new(), None);
        };
        match gathering.await {
            Ok(sink) => sink.finish(measured),
            Err(e) => (
                Vec::new(),
                Some(Error::Io {
                    doing: "gathering the latency intervals".into(),
                    source: std::io::Error::other(e.to_string()),
                }),
            ),
        }
    }
}

/// Receives the threads' parts until `finished` is cancelled, then takes what is still
/// queued; returns the sink for [`IntervalSink::finish`].
pub async fn gather_intervals(
    mut sink: IntervalSink,
    mut parts: mpsc::UnboundedReceiver<IntervalPart>,
    finished: tokio_util::sync::CancellationToken,
) -> IntervalSink {
    loop {
        tokio::select! {
            part = parts.recv() => match part {
                Some(part) => sink.add(part),
                None => return sink,
            },
            () = finished.cancelled() => {
                while let Ok(part) = parts.try_recv() {
                    sink.add(part);
                }
                return sink;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn us(n: u64) -> Duration {
        Duration::from_micros(n)
    }

    #[tokio::test(start_paused = true)]
    async fn each_thread_ships_one_histogram_per_interval_in_order() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let origin = Instant::now();
        let second = Duration::from_secs(1);
        let mut recorder = IntervalRecorder::new(origin, second, tx);
        recorder.record(origin + Duration::from_millis(10), us(100), Phase::Steady);
        recorder.record(origin + Duration::from_millis(999), us(200), Phase::Steady);
        // Nothing in interval 1; interval 2 gets one.
        recorder.record(origin + Duration::from_millis(2500), us(300), Phase::Steady);
        recorder.finish();
        let parts: Vec<_> = std::iter::from_fn(|| rx.try_recv().ok()).collect();
        let shape: Vec<_> = parts
            .iter()
            .map(|p| (p.index, p.histograms.steady.count()))
            .collect();
        assert_eq!(shape, vec![(0, 2), (1, 0), (2, 1)]);
    }

    #[tokio::test(start_paused = true)]
    async fn the_sink_adds_the_threads_and_shortens_the_last_interval() {
        let origin = Instant::now();
        let second = Duration::from_secs(1);
        let timeline = Timeline {
            origin,
            span: Duration::from_secs(10),
            wall: None,
        };
        let mut sink = IntervalSink::new(timeline, second, 2, None, "test");
        let part = |index, values: &[u64]| {
            let mut histogram = LatencyHistogram::new();
            for &v in values {
                histogram.record(us(v));
            }
            IntervalPart {
                index,
                histograms: IntervalHistograms {
                    steady: histogram,
                    ramp: LatencyHistogram::new(),
                },
            }
        };
        tokio::time::advance(Duration::from_millis(1001)).await;
        sink.add(part(0, &[10, 20]));
        assert!(
            sink.summaries.is_empty(),
            "one thread of two is not complete"
        );
        sink.add(part(0, &[30]));
        sink.add(part(1, &[40]));
        let (summaries, failed) = sink.finish(Duration::from_millis(1500));
        assert!(failed.is_none());
        assert_eq!(summaries.len(), 2);
        assert_eq!(summaries[0].count, 3);
        assert_eq!(summaries[0].length, second);
        assert_eq!(summaries[0].max, us(30));
        assert_eq!(summaries[1].start, second);
        assert_eq!(summaries[1].length, Duration::from_millis(500));
        assert_eq!(summaries[1].rate(), 2.0);
    }

    #[test]
    fn too_short_or_too_many_intervals_are_refused() {
        let log = |ms| LatencyLog {
            every: Duration::from_millis(ms),
            hlog: None,
        };
        assert!(log(1).validate(Duration::from_secs(10)).is_err());
        assert!(log(1000).validate(Duration::from_secs(86_400)).is_ok());
        let many = log(10).validate(Duration::from_secs(86_400)).err();
        assert!(many.is_some_and(|e| e.to_string().contains("raise --hlog-interval")));
    }
}

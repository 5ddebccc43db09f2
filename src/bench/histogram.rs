//! Latency histograms: the HDR histogram (the `hdrhistogram` crate) that holds every latency
//! a run measured, its percentiles, merging, and a lossless text encoding for JSON files.
//!
//! Values are integer microseconds, rounded to the nearest microsecond, with three
//! significant figures: every latency below 2.048 ms is kept exactly to the microsecond,
//! larger ones to 0.1 %. Microseconds rather than nanoseconds keep a histogram small (tens
//! of kilobytes); each load-generator thread owns one, which its connections share without
//! locks (they run on that thread only), and the threads' histograms are added at the end.
//!
//! The encoding is HdrHistogram's own "V2 + DEFLATE, base64" form (the `HISTF…` strings of
//! HdrHistogram interval logs), so other HdrHistogram tools can read our files too, and
//! merging two files adds the full histograms, never averages of percentiles.

use std::borrow::Cow;
use std::time::Duration;

use base64::Engine as _;
use hdrhistogram::Histogram;
use hdrhistogram::serialization::{Deserializer, Serializer as _, V2DeflateSerializer};

/// Significant decimal figures kept: 3 gives microsecond precision below 2 ms, 0.1 % above.
const SIGNIFICANT_FIGURES: u8 = 3;

/// The unit of every recorded value, as written in JSON files.
pub const UNIT: &str = "us";

/// The name of the encoding used by [`LatencyHistogram::encode`], as written in JSON files.
pub const ENCODING: &str = "hdrhistogram-v2-deflate-base64";

/// Latencies below this many microseconds are counted in a [`StagedHistogram`]'s flat
/// array: the HDR histogram keeps each of them exactly (its first bucket at
/// [`SIGNIFICANT_FIGURES`]), and on a loopback or LAN nearly every exchange is one.
const STAGED_BELOW_MICROS: usize = 2048;

/// Nanoseconds rounded to the nearest microsecond (saturating).
#[inline]
fn round_to_micros(nanos: u128) -> u64 {
    u64::try_from(nanos.saturating_add(500) / 1000).unwrap_or(u64::MAX)
}

/// A [`LatencyHistogram`] with a count per microsecond in front of it for latencies below
/// 2,048 µs.
///
/// Why it exists: the load generator's epoll engine records one latency per exchange,
/// and the HDR histogram's record (bucket index, range check, minimum and maximum upkeep)
/// costs more instructions than the rest of the exchange's bookkeeping. Here a small
/// latency is one add to a 16 KiB array; the larger ones go to the histogram at once, and
/// the array joins it in bulk when the run is over ([`StagedHistogram::finish`]). The
/// result is the same histogram value for value.
#[derive(Debug)]
pub struct StagedHistogram {
    /// How many latencies of each microsecond below [`STAGED_BELOW_MICROS`].
    below: Box<[u64]>,
    /// Every larger latency.
    histogram: LatencyHistogram,
}

impl StagedHistogram {
    /// An empty histogram and array.
    pub fn new() -> StagedHistogram {
        StagedHistogram {
            below: vec![0; STAGED_BELOW_MICROS].into_boxed_slice(),
            histogram: LatencyHistogram::new(),
        }
    }

    /// Records one latency of `nanos` nanoseconds, rounded to the nearest microsecond as
    /// [`LatencyHistogram::record`] rounds it.
    #[inline]
    pub fn record_nanos(&mut self, nanos: u64) {
        let micros = nanos.saturating_add(500) / 1000;
        match self.below.get_mut(micros as usize) {
            Some(count) => *count += 1,
            None => self.histogram.record_micros(micros, 1),
        }
    }

    /// The histogram of everything recorded.
    pub fn finish(mut self) -> LatencyHistogram {
        for (micros, &count) in (0_u64..).zip(self.below.iter()) {
            if count > 0 {
                self.histogram.record_micros(micros, count);
            }
        }
        self.histogram
    }
}

impl Default for StagedHistogram {
    fn default() -> StagedHistogram {
        StagedHistogram::new()
    }
}

/// A latency distribution in microseconds.
///
/// One per load-generator thread while a run is going (so recording touches only memory
/// that thread owns), added together at the end.
#[derive(Debug, Clone, Default)]
pub struct LatencyHistogram {
    /// Auto-resizing, so it only grows as large as the slowest latency it saw; `None`
    /// until the first value arrives, so an empty histogram costs no memory (every
    /// connection's tally and every idle interval holds one; an HDR histogram starts at
    /// 16 KB).
    inner: Option<Histogram<u64>>,
}

/// The figures a report shows, all read from one histogram.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Percentiles {
    /// The fastest latency.
    pub min: Duration,
    /// The median.
    pub p50: Duration,
    /// 90th percentile.
    pub p90: Duration,
    /// 99th percentile.
    pub p99: Duration,
    /// 99.9th percentile.
    pub p99_9: Duration,
    /// 99.99th percentile.
    pub p99_99: Duration,
    /// The slowest latency.
    pub max: Duration,
    /// Arithmetic mean.
    pub mean: Duration,
    /// Standard deviation.
    pub stdev: Duration,
}

/// Why an encoded histogram could not be read back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DecodeError(String);

/// An empty HDR histogram with the run's precision.
fn empty_histogram() -> Histogram<u64> {
    // 3 significant figures is inside the crate's accepted range [0, 5], so creation
    // cannot fail; the fallback only exists to avoid an unwrap.
    Histogram::new(SIGNIFICANT_FIGURES)
        .or_else(|_| Histogram::new(2))
        .unwrap_or_else(|_| unreachable!("sigfig 2 and 3 are valid"))
}

impl LatencyHistogram {
    /// An empty histogram (it allocates when the first value arrives).
    pub fn new() -> LatencyHistogram {
        LatencyHistogram { inner: None }
    }

    /// The histogram, created on first use.
    fn filled(&mut self) -> &mut Histogram<u64> {
        self.inner.get_or_insert_with(empty_histogram)
    }

    /// Records one latency, rounded to the nearest microsecond.
    ///
    /// Never fails: the histogram grows as needed.
    #[inline]
    pub fn record(&mut self, latency: Duration) {
        self.record_micros(round_to_micros(latency.as_nanos()), 1);
    }

    /// Records `count` latencies of `micros` microseconds.
    fn record_micros(&mut self, micros: u64, count: u64) {
        // `record_n` grows the histogram; only a value beyond its largest possible size
        // (i64::MAX / 2 µs) fails, and is then clamped rather than lost.
        let inner = self.filled();
        if inner.record_n(micros, count).is_err() {
            inner.saturating_record_n(micros, count);
        }
    }

    /// How many latencies were recorded.
    pub fn count(&self) -> u64 {
        self.inner.as_ref().map_or(0, Histogram::len)
    }

    /// Adds every value of `other` to this histogram.
    pub fn add(&mut self, other: &LatencyHistogram) {
        let Some(theirs) = other.inner.as_ref().filter(|h| !h.is_empty()) else {
            return;
        };
        let inner = self.filled();
        // Both histograms auto-resize, so addition cannot run out of range; were it ever
        // to, the values are clamped instead of lost.
        if inner.add(theirs).is_err() {
            for value in theirs.iter_recorded() {
                inner.saturating_record_n(value.value_iterated_to(), value.count_at_value());
            }
        }
    }

    /// The figures a report shows. All zero for an empty histogram.
    pub fn percentiles(&self) -> Percentiles {
        let Some(inner) = self.inner.as_ref().filter(|h| !h.is_empty()) else {
            return Percentiles::default();
        };
        let at = |quantile: f64| micros(inner.value_at_quantile(quantile));
        Percentiles {
            min: micros(inner.min()),
            p50: at(0.50),
            p90: at(0.90),
            p99: at(0.99),
            p99_9: at(0.999),
            p99_99: at(0.9999),
            max: micros(inner.max()),
            mean: Duration::from_secs_f64(inner.mean().max(0.0) / 1e6),
            stdev: Duration::from_secs_f64(inner.stdev().max(0.0) / 1e6),
        }
    }

    /// The histogram as one base64 string (HdrHistogram V2 + DEFLATE): nothing is lost.
    pub fn encode(&self) -> String {
        let mut bytes = Vec::new();
        // Serializing into a Vec cannot hit an I/O error; the crate only fails on
        // histograms too large for the format's 32-bit length, which ours never are.
        match V2DeflateSerializer::new().serialize(&*self.inner(), &mut bytes) {
            Ok(_) => base64::engine::general_purpose::STANDARD.encode(bytes),
            Err(e) => {
                tracing::warn!("cannot encode the latency histogram: {e}");
                String::new()
            }
        }
    }

    /// Reads back a histogram written by [`LatencyHistogram::encode`] (or any
    /// HdrHistogram V2 / V2 + DEFLATE base64 string).
    ///
    /// # Errors
    /// [`DecodeError`] if the text is not base64 or not a histogram.
    pub fn decode(text: &str) -> Result<LatencyHistogram, DecodeError> {
        if text.is_empty() {
            return Ok(LatencyHistogram::new());
        }
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text.trim())
            .map_err(|e| DecodeError(format!("the histogram is not valid base64: {e}")))?;
        let decoded: Histogram<u64> = Deserializer::new()
            .deserialize(&mut bytes.as_slice())
            .map_err(|e| DecodeError(format!("the histogram cannot be decoded: {e}")))?;
        // Re-home the values in an auto-resizing histogram so later merges can grow it.
        let mut histogram = LatencyHistogram::new();
        if histogram.filled().add(&decoded).is_err() {
            return Err(DecodeError(
                "the histogram's values are out of range".into(),
            ));
        }
        Ok(histogram)
    }

    /// The latency at `quantile` (0 to 1): the percentile spectrum of a plot.
    pub fn value_at_quantile(&self, quantile: f64) -> Duration {
        self.inner
            .as_ref()
            .map_or(Duration::ZERO, |h| micros(h.value_at_quantile(quantile)))
    }

    /// The underlying histogram, for the serializers (an empty one made for the
    /// occasion if nothing was recorded).
    pub(crate) fn inner(&self) -> Cow<'_, Histogram<u64>> {
        match &self.inner {
            Some(inner) => Cow::Borrowed(inner),
            None => Cow::Owned(empty_histogram()),
        }
    }

    /// Every distinct recorded value and its count, smallest first (for tests and tools).
    pub fn recorded(&self) -> Vec<(Duration, u64)> {
        self.inner.as_ref().map_or_else(Vec::new, |inner| {
            inner
                .iter_recorded()
                .map(|v| (micros(v.value_iterated_to()), v.count_at_value()))
                .collect()
        })
    }
}

/// A histogram value (µs) as a duration.
fn micros(value: u64) -> Duration {
    Duration::from_micros(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// Every recorded value of a histogram with its count.
    fn values(h: &LatencyHistogram) -> Vec<(u64, u64)> {
        h.inner.as_ref().map_or_else(Vec::new, |inner| {
            inner
                .iter_recorded()
                .map(|v| (v.value_iterated_to(), v.count_at_value()))
                .collect()
        })
    }

    proptest::proptest! {
        #[test]
        fn a_staged_histogram_ends_as_the_histogram_of_the_same_latencies(
            nanos in proptest::collection::vec(
                proptest::prop_oneof![0_u64..3_000_000, 0_u64..u64::MAX],
                0..300,
            )
        ) {
            let mut staged = StagedHistogram::new();
            let mut direct = LatencyHistogram::new();
            for &n in &nanos {
                staged.record_nanos(n);
                direct.record(Duration::from_nanos(n));
            }
            let staged = staged.finish();
            proptest::prop_assert_eq!(staged.count(), nanos.len() as u64);
            proptest::prop_assert_eq!(values(&staged), values(&direct));
            proptest::prop_assert_eq!(staged.percentiles(), direct.percentiles());
        }
    }

    #[test]
    fn small_latencies_are_exact_to_the_microsecond() {
        let mut h = LatencyHistogram::new();
        for us in 1..=1000u64 {
            h.record(Duration::from_micros(us));
        }
        let p = h.percentiles();
        assert_eq!(h.count(), 1000);
        assert_eq!(p.min, Duration::from_micros(1));
        assert_eq!(p.p50, Duration::from_micros(500));
        assert_eq!(p.p90, Duration::from_micros(900));
        assert_eq!(p.p99, Duration::from_micros(990));
        assert_eq!(p.max, Duration::from_micros(1000));
    }

    #[test]
    fn rounds_to_the_nearest_microsecond() {
        let mut h = LatencyHistogram::new();
        h.record(Duration::from_nanos(1_499));
        h.record(Duration::from_nanos(1_500));
        assert_eq!(
            h.recorded(),
            vec![(Duration::from_micros(1), 1), (Duration::from_micros(2), 1)]
        );
    }

    #[test]
    fn large_latencies_keep_three_significant_figures() {
        let mut h = LatencyHistogram::new();
        h.record(ms(20));
        h.record(Duration::from_secs(3));
        let p = h.percentiles();
        let close = |got: Duration, want: Duration| {
            let error = got.abs_diff(want).as_secs_f64() / want.as_secs_f64();
            assert!(error <= 0.001, "{got:?} vs {want:?}");
        };
        close(p.min, ms(20));
        close(p.max, Duration::from_secs(3));
    }

    #[test]
    fn adding_adds_counts_not_averages() {
        let mut a = LatencyHistogram::new();
        let mut b = LatencyHistogram::new();
        for _ in 0..900 {
            a.record(ms(1));
        }
        for _ in 0..100 {
            b.record(ms(100));
        }
        a.add(&b);
        assert_eq!(a.count(), 1000);
        let p = a.percentiles();
        assert_eq!(p.p50, ms(1));
        assert!(p.p99 >= ms(99), "{:?}", p.p99);
    }

    #[test]
    fn encoding_round_trips_exactly() {
        let mut h = LatencyHistogram::new();
        for (i, us) in [3u64, 17, 250, 4_000, 20_000, 1_500_000].iter().enumerate() {
            for _ in 0..=i {
                h.record(Duration::from_micros(*us));
            }
        }
        let text = h.encode();
        assert!(!text.is_empty());
        let back = LatencyHistogram::decode(&text).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(back.recorded(), h.recorded());
        assert_eq!(back.percentiles(), h.percentiles());
    }

    #[test]
    fn decoding_garbage_is_an_error() {
        assert!(LatencyHistogram::decode("not base64!").is_err());
        assert!(LatencyHistogram::decode("aGVsbG8=").is_err());
        assert_eq!(
            LatencyHistogram::decode("")
                .unwrap_or_else(|e| panic!("{e}"))
                .count(),
            0
        );
    }

    #[test]
    fn an_empty_histogram_holds_no_counts_until_a_value_arrives() {
        let mut h = LatencyHistogram::new();
        h.add(&LatencyHistogram::new());
        assert!(h.inner.is_none());
        let empty = LatencyHistogram::decode(&h.encode()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(empty.count(), 0);
        assert_eq!(h.value_at_quantile(0.5), Duration::ZERO);
        assert!(h.recorded().is_empty());
        h.record(ms(1));
        assert!(h.inner.is_some());
        assert_eq!(h.count(), 1);
    }

    #[test]
    fn empty_histogram_has_zero_figures() {
        assert_eq!(
            LatencyHistogram::new().percentiles(),
            Percentiles::default()
        );
    }
}

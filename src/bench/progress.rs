//! The progress bar shown while a benchmark runs on a terminal: elapsed and total time,
//! warm-up or measuring, and the current rate.
//!
//! The rate comes from one pair of counters per connection, each written only by its own
//! connection (a plain store, on its own cache line) and read four times a second by the
//! bar. So the bar costs the hot path no shared atomic and no contention; when stdout is
//! not a terminal there is no bar and no counter at all.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::window::Window;

/// How often the bar is redrawn.
const TICK: Duration = Duration::from_millis(250);

/// One connection's running totals, alone on its cache line so that connections on
/// different cores never contend.
#[derive(Debug, Default)]
#[repr(align(128))]
struct Slot {
    /// Exchanges completed since the start (warm-up included).
    exchanges: AtomicU64,
    /// Payload bytes sent since the start.
    bytes: AtomicU64,
}

/// A connection's handle on its own counters.
#[derive(Debug, Clone)]
pub struct ProgressSlot {
    /// Every connection's counters.
    slots: Arc<[Slot]>,
    /// Which one is ours.
    index: usize,
}

impl ProgressSlot {
    /// Publishes this connection's totals.
    #[inline]
    pub fn note(&self, exchanges: u64, bytes: u64) {
        if let Some(slot) = self.slots.get(self.index) {
            slot.exchanges.store(exchanges, Ordering::Relaxed);
            slot.bytes.store(bytes, Ordering::Relaxed);
        }
    }
}

/// What the bar shows as "the rate".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateUnit {
    /// Exchanges (or datagrams) per second.
    Exchanges,
    /// Gigabits per second (the stream pattern).
    Bits,
}

/// A running progress bar; [`Progress::finish`] removes it.
#[derive(Debug)]
pub struct Progress {
    /// Every connection's counters.
    slots: Arc<[Slot]>,
    /// The bar, on stderr.
    bar: indicatif::ProgressBar,
    /// Redraws the bar.
    ticker: JoinHandle<()>,
}

impl Progress {
    /// Draws a bar on stderr for a run of `connections` over `window`.
    pub fn start(connections: usize, window: Window, unit: RateUnit) -> Progress {
        let slots: Arc<[Slot]> = (0..connections).map(|_| Slot::default()).collect();
        let total = window.end.saturating_duration_since(window.start);
        let bar = indicatif::ProgressBar::with_draw_target(
            Some(total.as_millis().try_into().unwrap_or(u64::MAX)),
            indicatif::ProgressDrawTarget::stderr(),
        );
        if let Ok(style) =
            indicatif::ProgressStyle::with_template("{elapsed:>4} / {prefix} {wide_bar} {msg}")
        {
            bar.set_style(style);
        }
        bar.set_prefix(humantime::format_duration(round_to_ms(total)).to_string());
        let ticker = tokio::spawn(tick(Arc::clone(&slots), bar.clone(), window, unit));
        Progress { slots, bar, ticker }
    }

    /// The counters of connection `index`.
    pub fn slot(&self, index: usize) -> ProgressSlot {
        ProgressSlot {
            slots: Arc::clone(&self.slots),
            index,
        }
    }

    /// Stops redrawing and clears the bar.
    pub fn finish(self) {
        self.ticker.abort();
        self.bar.finish_and_clear();
    }
}

/// Redraws the bar until aborted.
async fn tick(slots: Arc<[Slot]>, bar: indicatif::ProgressBar, window: Window, unit: RateUnit) {
    let mut interval = tokio::time::interval(TICK);
    let mut last = (Instant::now(), 0u64);
    loop {
        interval.tick().await;
        let now = Instant::now();
        let total: u64 = slots
            .iter()
            .map(|slot| match unit {
                RateUnit::Exchanges => slot.exchanges.load(Ordering::Relaxed),
                RateUnit::Bits => slot.bytes.load(Ordering::Relaxed).saturating_mul(8),
            })
            .sum();
        let seconds = now.saturating_duration_since(last.0).as_secs_f64();
        let rate = if seconds > 0.0 {
            total.saturating_sub(last.1) as f64 / seconds
        } else {
            0.0
        };
        last = (now, total);
        let phase = if now < window.measure_from {
            "warm-up"
        } else {
            "measuring"
        };
        let shown = match unit {
            RateUnit::Exchanges => format!("{phase}  {rate:.0}/s"),
            RateUnit::Bits => format!("{phase}  {:.3} Gbit/s", rate / 1e9),
        };
        bar.set_message(shown);
        let elapsed = now.saturating_duration_since(window.start);
        bar.set_position(elapsed.as_millis().try_into().unwrap_or(u64::MAX));
    }
}

/// Whole milliseconds, so the total prints as "10s", not "10s 12ns".
fn round_to_ms(duration: Duration) -> Duration {
    Duration::from_millis(duration.as_millis().try_into().unwrap_or(u64::MAX))
}

//! Sends at a set bitrate, evenly: datagram `k` is due at `start + k × gap`, where `gap`
//! is the time one datagram takes at the rate. The schedule is absolute, so a late
//! datagram does not shift the ones after it (no drift), and nothing is ever sent early
//! (no bursts ahead of the schedule).
//!
//! Waiting is a sleep for all but the last [`SPIN`] before the due time, then a spin:
//! the kernel's timers wake tens of microseconds late, far more than the gap between
//! datagrams at a gigabit, so only the spin lands on time. The sender is a thread of its
//! own, so the spin costs that thread's core and nothing else.

use std::time::{Duration, Instant};

/// The last stretch before a due time spent spinning rather than sleeping.
const SPIN: Duration = Duration::from_micros(100);

/// Within this of the due time the wait spins without yielding the core.
const YIELD_UNTIL: Duration = Duration::from_micros(20);

/// A send schedule at a fixed bitrate.
#[derive(Debug, Clone, Copy)]
pub struct Pacer {
    /// When datagram 0 is due.
    start: Instant,
    /// Time between two datagrams, in ns (fractional, so rates that do not divide evenly
    /// keep their average).
    gap_ns: f64,
}

impl Pacer {
    /// A schedule for datagrams of `size` bytes at `bits_per_second`, from `start`.
    pub fn new(start: Instant, bits_per_second: f64, size: usize) -> Pacer {
        Pacer {
            start,
            gap_ns: size as f64 * 8.0 * 1e9 / bits_per_second,
        }
    }

    /// Time between two datagrams.
    pub fn gap(&self) -> Duration {
        Duration::from_nanos(self.gap_ns as u64)
    }

    /// When datagram `k` is due; `None` when that is beyond what the clock can hold
    /// (a rate so low the datagram is never due).
    pub fn due(&self, k: u64) -> Option<Instant> {
        let offset = Duration::try_from_secs_f64(k as f64 * self.gap_ns / 1e9).ok()?;
        self.start.checked_add(offset)
    }

    /// Blocks the thread until `due` (returns at once if it has passed).
    pub fn wait_until(due: Instant) {
        let now = Instant::now();
        if due <= now {
            return;
        }
        let left = due - now;
        if left > SPIN {
            std::thread::sleep(left - SPIN);
        }
        loop {
            let left = due.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            // Far from the due time, give the core to whoever else wants it (the
            // receiver, on a small machine); near it, spin.
            if left > YIELD_UNTIL {
                std::thread::yield_now();
            } else {
                std::hint::spin_loop();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schedule_spreads_datagrams_evenly_at_the_rate() {
        let start = Instant::now();
        // 1,250-byte datagrams at 10 Mbit/s: one every millisecond.
        let pacer = Pacer::new(start, 10e6, 1250);
        assert_eq!(pacer.gap(), Duration::from_millis(1));
        assert_eq!(pacer.due(0), Some(start));
        let last = pacer.due(999).map(|due| due - start);
        assert!(
            last.is_some_and(|d| d.abs_diff(Duration::from_millis(999)) < Duration::from_micros(1))
        );
        // A rate that does not divide evenly keeps its average over many datagrams.
        let odd = Pacer::new(start, 3e6, 1000);
        let span = odd.due(3000).map(|due| due - start).unwrap_or_default();
        assert!((span.as_secs_f64() - 8.0).abs() < 1e-6, "{span:?}");
        // A rate too low to ever send again is never due, rather than a clock overflow.
        assert_eq!(Pacer::new(start, 0.0, 1000).due(1), None);
    }

    #[test]
    fn waiting_never_returns_early() {
        let due = Instant::now() + Duration::from_micros(300);
        Pacer::wait_until(due);
        assert!(Instant::now() >= due);
    }
}

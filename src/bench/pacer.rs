//! Sends at a set bitrate, evenly: datagram `k` is due at `start + k × gap`, where `gap`
//! is the time one datagram takes at the rate. The schedule is absolute, so a late
//! datagram does not shift the ones after it (no drift), and nothing is ever sent early
//! (no bursts ahead of the schedule).
//!
//! A UDP sender sends in small batches ([`Pacer::batch`]): as many datagrams as fall due
//! within [`BATCH_SPAN`], at most [`MAX_BATCH`], in one `sendmmsg(2)`, when the middle
//! one is due, so none leaves more than half a span off its time. Between batches it
//! sleeps on an absolute timer ([`Pacer::sleep_until_ns`]) with the thread's timer slack
//! at [`TIMER_SLACK_NS`], and reads the clock once per batch: a gigabit of 1,400-byte
//! datagrams is a datagram every 11.2 µs, and one wake-up, one clock read and one system
//! call per eight of them cost a fraction of a spinning wait's core.
//!
//! [`Pacer::wait_until`] is the per-datagram wait (sleep, then spin for the last
//! [`SPIN`]), for callers that send one datagram at a time.

use std::time::{Duration, Instant};

/// The last stretch before a due time spent spinning rather than sleeping.
const SPIN: Duration = Duration::from_micros(100);

/// Within this of the due time the wait spins without yielding the core.
const YIELD_UNTIL: Duration = Duration::from_micros(20);

/// The stretch of schedule one batch covers at most: a datagram leaves at most half of
/// it (50 µs) off its time, well inside a kernel timer's wake-up lateness under load, and
/// at a gigabit of 1,400-byte datagrams it makes batches of 8 (11,000 wake-ups a second).
pub const BATCH_SPAN: Duration = Duration::from_micros(100);

/// The most datagrams in one batch (one `sendmmsg(2)`).
pub const MAX_BATCH: usize = 32;

/// The sender thread's timer slack: how late the kernel may wake it to group wake-ups
/// (the default is 50 µs, half a batch span).
pub const TIMER_SLACK_NS: libc::c_ulong = 1_000;

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

    /// How many datagrams to send per batch: those due within [`BATCH_SPAN`], at least
    /// 1 and at most [`MAX_BATCH`].
    pub fn batch(&self) -> usize {
        let fits = (BATCH_SPAN.as_nanos() as f64 / self.gap_ns).floor();
        if fits.is_finite() && fits >= 1.0 {
            (fits as usize).min(MAX_BATCH)
        } else {
            1
        }
    }

    /// When datagram `k` is due, in ns of the monotonic clock ([`monotonic_ns`]) given
    /// `start_ns`, the schedule's start on that clock; `None` past the clock's range.
    pub fn due_ns(&self, start_ns: u64, k: u64) -> Option<u64> {
        let offset = k as f64 * self.gap_ns;
        (offset.is_finite() && offset < (u64::MAX - start_ns) as f64)
            .then(|| start_ns + offset as u64)
    }

    /// The schedule's start on the monotonic clock of [`monotonic_ns`].
    pub fn start_ns(&self) -> u64 {
        let now = Instant::now();
        let ahead = self.start.saturating_duration_since(now).as_nanos() as u64;
        let behind = now.saturating_duration_since(self.start).as_nanos() as u64;
        (monotonic_ns() + ahead).saturating_sub(behind)
    }

    /// Sleeps until the monotonic clock reads `due_ns` (returns at once if it has
    /// passed): an absolute timer, so time spent sending does not shift the next wake-up.
    pub fn sleep_until_ns(due_ns: u64) {
        let due = libc::timespec {
            tv_sec: (due_ns / 1_000_000_000) as libc::time_t,
            tv_nsec: (due_ns % 1_000_000_000) as libc::c_long,
        };
        // SAFETY: `due` is a valid timespec; the remaining-time pointer may be null with
        // TIMER_ABSTIME. A sleep a signal interrupts (EINTR) is taken up again to the
        // same absolute time.
        while unsafe {
            libc::clock_nanosleep(
                libc::CLOCK_MONOTONIC,
                libc::TIMER_ABSTIME,
                &due,
                std::ptr::null_mut(),
            )
        } == libc::EINTR
        {}
    }

    /// Asks the kernel to wake this thread within [`TIMER_SLACK_NS`] of its timers, not
    /// the default 50 µs (best effort).
    pub fn tighten_timer_slack() {
        // SAFETY: PR_SET_TIMERSLACK takes a plain integer and touches no memory.
        unsafe {
            libc::prctl(libc::PR_SET_TIMERSLACK, TIMER_SLACK_NS, 0, 0, 0);
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

/// The monotonic clock (the one [`Instant`] reads on Linux), in ns.
pub fn monotonic_ns() -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a live timespec for the kernel (vDSO) to fill.
    unsafe {
        libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now);
    }
    (now.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(now.tv_nsec as u64)
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
    fn batches_cover_a_tenth_of_a_millisecond_of_schedule() {
        let start = Instant::now();
        // A gigabit of 1,400-byte datagrams: one every 11.2 µs, 8 in 100 µs.
        assert_eq!(Pacer::new(start, 1e9, 1400).batch(), 8);
        // Slow rates send one at a time; very fast ones at most MAX_BATCH.
        assert_eq!(Pacer::new(start, 10e6, 1250).batch(), 1);
        assert_eq!(Pacer::new(start, 1e12, 100).batch(), MAX_BATCH);
        let pacer = Pacer::new(start, 1e9, 1400);
        let base = pacer.start_ns();
        assert_eq!(pacer.due_ns(base, 10), Some(base + 112_000));
    }

    #[test]
    fn an_absolute_sleep_never_returns_early() {
        let due = monotonic_ns() + 300_000;
        Pacer::sleep_until_ns(due);
        assert!(monotonic_ns() >= due);
    }

    #[test]
    fn waiting_never_returns_early() {
        let due = Instant::now() + Duration::from_micros(300);
        Pacer::wait_until(due);
        assert!(Instant::now() >= due);
    }
}

//! A benchmark run's time line: warm-up, the rate ramp, the measured span. The measuring
//! side files each result by it ([`super::measure`]), and the progress bar shows where
//! the run stands on it ([`super::progress`]).

use std::time::Duration;

use tokio::time::Instant;

/// The run's time line: warm-up from `start`, measurement from `measure_from` to `end`.
///
/// In `Instant`s everywhere but in the load generator's epoll engine, which files each
/// result by the same rules on an integer clock (`Window<u64>` of nanoseconds, made with
/// [`Window::map`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window<T = Instant> {
    /// When the first requests may go out (the open-loop timetable starts here).
    pub start: T,
    /// Results completing before this are warm-up and are not counted.
    pub measure_from: T,
    /// The end of the rate ramp (`--ramp-up`), or `measure_from` if later: exchanges
    /// completing between `measure_from` and this are reported as the ramp's.
    pub steady_from: T,
    /// Every connection stops here; exchanges still waiting are reported as in flight.
    pub end: T,
}

impl<T: Copy + Ord> Window<T> {
    /// Whether an event at `at` counts.
    #[inline]
    pub(crate) fn contains(&self, at: T) -> bool {
        at >= self.measure_from && at < self.end
    }

    /// Whether an exchange done at `at` belongs to the steady state (after the ramp).
    #[inline]
    pub(crate) fn is_steady(&self, at: T) -> bool {
        at >= self.steady_from
    }

    /// The same time line on another clock.
    pub(crate) fn map<U>(&self, to: impl Fn(T) -> U) -> Window<U> {
        Window {
            start: to(self.start),
            measure_from: to(self.measure_from),
            steady_from: to(self.steady_from),
            end: to(self.end),
        }
    }
}

impl Window {
    /// A window starting now: `warmup`, then `duration` measured.
    pub fn starting_now(warmup: Duration, duration: Duration) -> Window {
        Window::starting_at(Instant::now(), warmup, duration)
    }

    /// A window starting at `start`: `warmup`, then `duration` measured.
    pub fn starting_at(start: Instant, warmup: Duration, duration: Duration) -> Window {
        Window {
            start,
            measure_from: start + warmup,
            steady_from: start + warmup,
            end: start + warmup + duration,
        }
    }

    /// The same window with a rate ramp of `ramp` from the start.
    pub fn with_ramp(mut self, ramp: Duration) -> Window {
        self.steady_from = self.measure_from.max(self.start + ramp).min(self.end);
        self
    }

    /// The measured span after the ramp.
    pub fn steady(&self) -> Duration {
        self.end.saturating_duration_since(self.steady_from)
    }

    /// The measured span.
    pub fn measured(&self) -> Duration {
        self.end.saturating_duration_since(self.measure_from)
    }
}

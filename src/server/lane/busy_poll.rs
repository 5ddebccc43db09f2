//! Busy polling (`serve --busy-poll`): a serving thread keeps asking the kernel for
//! events for a short while before it sleeps.
//!
//! Why it exists: on loopback, and on virtual machines above all, a sleeping thread pays
//! twice for each client that comes back: the kernel must send an interrupt to wake its
//! core (which costs the *client's* core too), and the core must leave its idle state.
//! For a client that sends its next request a few tens of microseconds after the last
//! answer (one connection at a time, as in the note), those wake-ups are a large part of
//! the round trip. Polling instead of sleeping removes both, at the price of the serving
//! core's idle time: it is an opt-in trade of CPU for latency, as Linux's `SO_BUSY_POLL`
//! is.
//!
//! The window adapts the way Linux's `cpuidle-haltpoll` guest driver adapts its own: it
//! starts closed; a wait that ended within the limit (polling would have caught it)
//! doubles the window, from a quarter of the limit up to the limit; a wait longer than
//! the limit halves it, and below a quarter it closes. An idle server therefore stops
//! polling after a few long waits, and a server whose clients come back within the limit
//! keeps polling and never sleeps between them.

use std::time::Duration;

/// The adaptive polling window of one serving thread (see the module docs).
#[derive(Debug, Clone, Copy)]
pub(crate) struct BusyPoll {
    /// The longest the thread polls before sleeping (`--busy-poll`).
    limit: Duration,
    /// How long the next wait polls before sleeping.
    window: Duration,
}

impl BusyPoll {
    /// A closed window that may grow up to `limit`; `None` when `limit` is zero (off).
    pub(crate) fn new(limit: Duration) -> Option<BusyPoll> {
        (!limit.is_zero()).then_some(BusyPoll {
            limit,
            window: Duration::ZERO,
        })
    }

    /// How long the next wait should poll before it sleeps.
    pub(crate) fn window(&self) -> Duration {
        self.window
    }

    /// Learns from a wait that polling did not end: its events came (or its deadline
    /// passed) after `waited`, polling included.
    pub(crate) fn slept(&mut self, waited: Duration) {
        let start = self.limit / 4;
        self.window = if waited <= self.limit {
            (self.window * 2).clamp(start, self.limit)
        } else if self.window / 2 < start {
            Duration::ZERO
        } else {
            self.window / 2
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: Duration = Duration::from_micros(100);

    #[test]
    fn zero_means_off() {
        assert!(BusyPoll::new(Duration::ZERO).is_none());
    }

    #[test]
    fn the_window_starts_closed_and_grows_while_clients_come_back_within_the_limit() {
        let Some(mut poll) = BusyPoll::new(LIMIT) else {
            panic!("a non-zero limit is on");
        };
        assert_eq!(poll.window(), Duration::ZERO);
        let back_soon = Duration::from_micros(60);
        let grown: Vec<u128> = (0..4)
            .map(|_| {
                poll.slept(back_soon);
                poll.window().as_micros()
            })
            .collect();
        assert_eq!(grown, [25, 50, 100, 100]);
    }

    #[test]
    fn long_waits_halve_the_window_until_it_closes() {
        let Some(mut poll) = BusyPoll::new(LIMIT) else {
            panic!("a non-zero limit is on");
        };
        for _ in 0..3 {
            poll.slept(Duration::from_micros(10));
        }
        assert_eq!(poll.window(), LIMIT);
        let idle = Duration::from_millis(5);
        let shrunk: Vec<u128> = (0..4)
            .map(|_| {
                poll.slept(idle);
                poll.window().as_micros()
            })
            .collect();
        assert_eq!(shrunk, [50, 25, 0, 0]);
    }
}

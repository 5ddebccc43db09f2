//! The system's monotonic clocks read as plain integers, for the hot paths that compare
//! and subtract times per message: an integer is one comparison or subtraction where an
//! `Instant` is a seconds-and-nanoseconds pair with carries and checks.
//!
//! Both read through the C library's `clock_gettime` (its vDSO call, no system call),
//! which also works under valgrind, where the vDSO is not mapped and the measurements of
//! the hot paths are taken.

/// Nanoseconds on `CLOCK_MONOTONIC`, the clock [`std::time::Instant`] reads: the time
/// base of the load generator's epoll engine.
pub fn monotonic_ns() -> u64 {
    let now = read(libc::CLOCK_MONOTONIC);
    now.0.saturating_mul(1_000_000_000).saturating_add(now.1)
}

/// Milliseconds on `CLOCK_MONOTONIC_COARSE`: read from memory the kernel updates every
/// tick (1 to 10 ms), without the hardware timer read of the precise clock.
pub fn coarse_monotonic_ms() -> u64 {
    let now = read(libc::CLOCK_MONOTONIC_COARSE);
    now.0.saturating_mul(1000).saturating_add(now.1 / 1_000_000)
}

/// Seconds and nanoseconds on `clock` (zero if the system refuses, which it does only
/// for a clock it does not have; both clocks here exist on every Linux).
fn read(clock: libc::clockid_t) -> (u64, u64) {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a live timespec for the C library to fill.
    unsafe {
        libc::clock_gettime(clock, &mut now);
    }
    (
        u64::try_from(now.tv_sec).unwrap_or(0),
        u64::try_from(now.tv_nsec).unwrap_or(0),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_precise_clock_is_the_one_instant_reads() {
        let before = monotonic_ns();
        let first = std::time::Instant::now();
        let after = monotonic_ns();
        std::thread::sleep(std::time::Duration::from_millis(5));
        let before_second = monotonic_ns();
        let second = std::time::Instant::now();
        let after_second = monotonic_ns();
        let elapsed = u64::try_from((second - first).as_nanos()).unwrap_or(u64::MAX);
        // On one clock, the span between the two instants lies within the integer
        // readings around them.
        assert!(before_second - after <= elapsed, "{elapsed} ns by Instant");
        assert!(elapsed <= after_second - before, "{elapsed} ns by Instant");
        assert!(before > 0);
    }

    #[test]
    fn the_coarse_clock_moves_forward_in_milliseconds() {
        let first = coarse_monotonic_ms();
        std::thread::sleep(std::time::Duration::from_millis(30));
        let second = coarse_monotonic_ms();
        assert!(second >= first + 10, "{first} then {second}");
        assert!(second / 1000 <= monotonic_ns() / 1_000_000_000 + 1);
    }
}

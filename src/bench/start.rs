//! `--start-at TIME`: when measuring begins, on the wall clock, so that runs started on
//! several machines measure the same span and `sockit bench merge` adds up like with
//! like.
//!
//! TIME is when the *measured* span begins; the warm-up runs just before it, so traffic
//! starts at `TIME - warmup`. A TIME that leaves less than the warm-up is refused rather
//! than started late: a run that silently started late would not line up with the
//! others, which is the whole point. A TIME more than [`MAX_AHEAD`] away is refused too
//! (most likely a typo in the date). The clocks of the machines must agree (NTP keeps
//! them within milliseconds), and each run still measures with its own monotonic clock.

use std::time::{Duration, SystemTime};

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::error::{Error, Result};

/// The farthest ahead a start may be.
pub const MAX_AHEAD: Duration = Duration::from_secs(24 * 3600);

/// Reads TIME: RFC 3339 (`2026-12-06T21:00:00Z`, `2026-12-06T22:00:00+01:00`, with
/// fractions of a second if wanted) or Unix seconds (`1796590800`, `1796590800.5`).
///
/// # Errors
/// [`Error::Usage`] saying which forms are accepted.
pub fn parse_start_time(text: &str) -> Result<SystemTime> {
    let text = text.trim();
    let refused = || {
        Error::Usage(format!(
            "--start-at {text:?} is not a time; write RFC 3339 such as \
             2026-12-06T21:00:00Z, or Unix seconds such as 1796590800"
        ))
    };
    if text.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        let seconds: f64 = text.parse().map_err(|_| refused())?;
        let offset = Duration::try_from_secs_f64(seconds).map_err(|_| refused())?;
        return SystemTime::UNIX_EPOCH
            .checked_add(offset)
            .ok_or_else(refused);
    }
    let parsed = OffsetDateTime::parse(text, &Rfc3339).map_err(|_| refused())?;
    Ok(SystemTime::from(parsed))
}

/// Checks that measuring at `at` leaves room for `warmup` from `now`, and is not too far.
///
/// # Errors
/// [`Error::Usage`] saying how far off the time is.
pub fn check_start_time(at: SystemTime, warmup: Duration, now: SystemTime) -> Result<()> {
    if at < now {
        // Said as the time it was read as: a mistyped number of seconds shows at once.
        return Err(Error::Usage(format!(
            "--start-at {} is in the past; give a time at least the {} warm-up ahead",
            rfc3339(at),
            humantime::format_duration(warmup)
        )));
    }
    let traffic = at.checked_sub(warmup).unwrap_or(SystemTime::UNIX_EPOCH);
    match traffic.duration_since(now) {
        Err(late) => Err(Error::Usage(format!(
            "--start-at is {} too soon: measuring then leaves no room for the {} warm-up \
             (runs that start late would not line up); give a later time",
            words(late.duration()),
            humantime::format_duration(warmup)
        ))),
        Ok(ahead) if ahead + warmup > MAX_AHEAD => Err(Error::Usage(format!(
            "--start-at is {} ahead; it must be within {}",
            words(ahead + warmup),
            humantime::format_duration(MAX_AHEAD)
        ))),
        Ok(_) => Ok(()),
    }
}

/// How long from now until traffic starts, for measuring at `at` after `warmup`.
///
/// # Errors
/// [`Error::Usage`] if that moment has passed (the run took too long to start).
pub fn until_traffic(at: SystemTime, warmup: Duration) -> Result<Duration> {
    check_start_time(at, warmup, SystemTime::now())?;
    let traffic = at.checked_sub(warmup).unwrap_or(SystemTime::UNIX_EPOCH);
    Ok(traffic
        .duration_since(SystemTime::now())
        .unwrap_or(Duration::ZERO))
}

/// A span in words, to the millisecond.
fn words(span: Duration) -> String {
    humantime::format_duration(Duration::from_millis(
        span.as_millis().try_into().unwrap_or(u64::MAX),
    ))
    .to_string()
}

/// A wall-clock time in RFC 3339, for log lines.
pub fn rfc3339(at: SystemTime) -> String {
    OffsetDateTime::from(at)
        .format(&Rfc3339)
        .unwrap_or_else(|_| humantime::format_rfc3339_millis(at).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(seconds)
    }

    #[test]
    fn rfc3339_and_unix_seconds_name_the_same_instant() {
        let parse = |t| parse_start_time(t).unwrap_or_else(|e| panic!("{t}: {e}"));
        assert_eq!(parse("1796590800"), at(1_796_590_800));
        assert_eq!(parse("2026-12-06T21:00:00Z"), at(1_796_590_800));
        assert_eq!(parse("2026-12-06T22:00:00+01:00"), at(1_796_590_800));
        assert_eq!(
            parse("1796590800.5"),
            at(1_796_590_800) + Duration::from_millis(500)
        );
        for bad in ["", "tomorrow", "2026-12-06 21:00", "-5", "1.2.3"] {
            let error = parse_start_time(bad).err().map(|e| e.to_string());
            assert!(
                error.as_deref().is_some_and(|e| e.contains("RFC 3339")),
                "{bad}: {error:?}"
            );
        }
    }

    #[test]
    fn a_start_too_soon_or_too_far_is_refused() {
        let now = at(1_000_000);
        let second = Duration::from_secs(1);
        assert!(check_start_time(at(1_000_010), second, now).is_ok());
        let soon = check_start_time(at(1_000_000), second, now)
            .err()
            .map(|e| e.to_string());
        assert!(
            soon.as_deref()
                .is_some_and(|e| e.contains("1s too soon") && e.contains("warm-up")),
            "{soon:?}"
        );
        let far = check_start_time(at(1_000_000 + 25 * 3600), second, now)
            .err()
            .map(|e| e.to_string());
        assert!(
            far.as_deref().is_some_and(|e| e.contains("within 1day")),
            "{far:?}"
        );
    }
}

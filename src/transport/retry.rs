//! Connecting again when a connect fails (`--retry`, socat's `retry=` / `forever`): for
//! a client started before its server. Each failed attempt is logged at debug level; the
//! final failure says how many attempts were made.

use std::future::Future;
use std::str::FromStr;
use std::time::Duration;

use crate::endpoint::Endpoint;
use crate::error::{Error, Result};

/// How many times to connect again after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attempts {
    /// This many more attempts after the first (0: no retry).
    Again(u64),
    /// Until one succeeds (`--retry forever`).
    Forever,
}

impl FromStr for Attempts {
    type Err = String;

    /// A count of 0 or more, or `forever`.
    fn from_str(text: &str) -> std::result::Result<Attempts, String> {
        match text.trim() {
            "forever" => Ok(Attempts::Forever),
            n => n.parse::<u64>().map(Attempts::Again).map_err(|_| {
                format!("{text:?} is not a number of retries: write 0 or more, or forever")
            }),
        }
    }
}

/// When and how often connecting is tried again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retry {
    /// How many more attempts.
    pub attempts: Attempts,
    /// Wait before the second attempt; each later wait doubles, up to `max_delay`.
    pub delay: Duration,
    /// The longest wait between two attempts.
    pub max_delay: Duration,
}

impl Retry {
    /// One attempt, no retry.
    pub const NEVER: Retry = Retry {
        attempts: Attempts::Again(0),
        delay: Duration::from_secs(1),
        max_delay: Duration::from_secs(30),
    };

    /// Whether attempt number `made` (1-based) may be followed by another.
    fn allows_another(&self, made: u64) -> bool {
        match self.attempts {
            Attempts::Forever => true,
            Attempts::Again(more) => made <= more,
        }
    }

    /// The wait after attempt `made`: the delay, doubled per attempt since, capped.
    fn wait_after(&self, made: u64) -> Duration {
        let doublings = u32::try_from(made.saturating_sub(1))
            .unwrap_or(u32::MAX)
            .min(32);
        self.delay
            .saturating_mul(2u32.saturating_pow(doublings))
            .min(self.max_delay)
    }
}

impl Default for Retry {
    fn default() -> Retry {
        Retry::NEVER
    }
}

/// Whether a failed connect may succeed later: nothing listening yet, no answer, the
/// name not resolving yet; through `--proxy`, the proxy not up yet or the target behind
/// it not up yet. A refused option, refused proxy credentials or a TLS failure will not
/// change.
fn worth_retrying(error: &Error) -> bool {
    matches!(
        error,
        Error::Refused { .. }
            | Error::Timeout { .. }
            | Error::Connect { .. }
            | Error::HostNotFound { .. }
            | Error::ProxyUnreachable { .. }
            | Error::ProxyRefused { .. }
    )
}

/// Runs `attempt` until it succeeds, fails for good, or `retry` allows no more.
///
/// # Errors
/// The first failure not worth retrying, or the last failure wrapped in
/// [`Error::GaveUp`] with the number of attempts made.
pub async fn connect_with_retry<T, F, Fut>(
    retry: &Retry,
    endpoint: &Endpoint,
    mut attempt: F,
) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let mut made = 0u64;
    loop {
        made += 1;
        let error = match attempt().await {
            Ok(done) => return Ok(done),
            Err(error) => error,
        };
        let retrying = worth_retrying(&error) && retry.allows_another(made);
        if !retrying {
            return Err(if made > 1 {
                Error::GaveUp {
                    last: Box::new(error),
                    attempts: made,
                }
            } else {
                error
            });
        }
        let wait = retry.wait_after(made);
        tracing::debug!(
            "attempt {made} to connect to {endpoint} failed: {error}; trying again in {}",
            humantime::format_duration(wait)
        );
        tokio::time::sleep(wait).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_double_up_to_the_cap() {
        let retry = Retry {
            attempts: Attempts::Forever,
            delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(500),
        };
        let waits: Vec<_> = (1..=5).map(|n| retry.wait_after(n).as_millis()).collect();
        assert_eq!(waits, [100, 200, 400, 500, 500]);
        assert_eq!(retry.wait_after(u64::MAX), Duration::from_millis(500));
    }

    #[test]
    fn retry_counts_parse_and_negative_ones_do_not() {
        assert_eq!("3".parse(), Ok(Attempts::Again(3)));
        assert_eq!("forever".parse(), Ok(Attempts::Forever));
        assert!("-1".parse::<Attempts>().is_err());
    }

    #[test]
    fn n_retries_are_n_more_attempts() {
        let retry = Retry {
            attempts: Attempts::Again(2),
            ..Retry::NEVER
        };
        assert!(retry.allows_another(1));
        assert!(retry.allows_another(2));
        assert!(!retry.allows_another(3));
    }
}

//! The latency histograms one load-generator thread's connections share, and the ticker
//! that moves their interval recorder past each boundary. It sits below [`super::measure`],
//! which records into it, and above [`super::intervals`], whose recorder it holds.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use tokio::time::{Instant, sleep_until};

use super::Window;
use super::histogram::LatencyHistogram;
use super::intervals::IntervalRecorder;

/// The latency histogram the connections of one thread share. They run on that thread
/// one at a time and borrow it only for one synchronous `record`, so a `RefCell` is all
/// the coordination needed, and a run keeps one histogram per thread rather than one per
/// connection (tens of kilobytes each).
pub type SharedLatency = Rc<RefCell<Latencies>>;

/// The two histograms of a thread: exchanges during the rate ramp, and after it.
#[derive(Debug, Default)]
pub struct Latencies {
    /// Exchanges completed in the steady state (the whole measured span without a ramp).
    pub steady: LatencyHistogram,
    /// Exchanges completed in the measured span while the rate was still ramping up.
    pub ramp: LatencyHistogram,
    /// With `--hlog` or `--plot`: every exchange of the measured span, per interval (the
    /// ramp's apart).
    pub intervals: Option<IntervalRecorder>,
}

/// Where interval `index` of the measured span begins, if that is before its end.
pub(super) fn interval_boundary(window: &Window, every: Duration, index: u64) -> Option<Instant> {
    u32::try_from(index)
        .ok()
        .and_then(|k| every.checked_mul(k))
        .map(|offset| window.measure_from + offset)
        .filter(|at| *at < window.end)
}

/// Moves the thread's recorder past each interval boundary of the measured span as it
/// passes, so intervals without exchanges are shipped too; never returns (it is dropped
/// with the run).
pub async fn keep_pace(latency: SharedLatency, window: Window, every: Duration) {
    let mut index = 1u64;
    loop {
        let Some(boundary) = interval_boundary(&window, every, index) else {
            std::future::pending::<()>().await;
            return;
        };
        sleep_until(boundary).await;
        // Never already borrowed: borrows do not span an await (see SharedLatency).
        if let Ok(mut latencies) = latency.try_borrow_mut()
            && let Some(recorder) = latencies.intervals.as_mut()
        {
            recorder.advance_to(index);
        }
        index += 1;
    }
}

//! `[workload]`: the measured phase and the warm-up. The token counts and the arrival
//! process are checked as they are read (`file`).

use super::Context;
use crate::scenario::Extent;
use crate::scenario::diagnostic::FieldPath;
use crate::scenario::file::RawWorkload;
use crate::scenario::limits::{MAX_PHASE, MAX_REQUESTS};
use std::time::Duration;

/// The measured phase (`None` when the table gives none that is valid) and the warm-up.
pub(super) fn check(cx: &mut Context, w: &RawWorkload) -> (Option<Extent>, Extent) {
    let wp = FieldPath::root().key("workload");
    let measure = match (w.duration, w.requests) {
        (Some(_), Some(_)) => {
            cx.err(
                wp.key("requests"),
                "give either `duration` or `requests`, not both".into(),
            );
            None
        }
        (Some(d), None) if d.get().is_zero() => {
            cx.err(
                wp.key("duration"),
                "duration must be greater than zero".into(),
            );
            None
        }
        (Some(d), None) => phase_length(cx, wp.key("duration"), d.get()).map(Extent::Duration),
        (None, Some(0)) => {
            cx.err(wp.key("requests"), "requests must be at least 1".into());
            None
        }
        (None, Some(n)) => request_count(cx, wp.key("requests"), n).map(Extent::Requests),
        (None, None) => {
            cx.err(
                wp.clone(),
                "the workload needs a measured phase: `duration = \"30s\"` or `requests = 200`"
                    .into(),
            );
            None
        }
    };
    let warmup = match (w.warmup, w.warmup_requests) {
        (Some(_), Some(_)) => {
            cx.err(
                wp.key("warmup_requests"),
                "give either `warmup` or `warmup_requests`, not both".into(),
            );
            Extent::Requests(0)
        }
        (Some(d), None) => phase_length(cx, wp.key("warmup"), d.get())
            .map_or(Extent::Requests(0), Extent::Duration),
        (None, Some(n)) => request_count(cx, wp.key("warmup_requests"), n)
            .map_or(Extent::Requests(0), Extent::Requests),
        (None, None) => Extent::Requests(0),
    };
    (measure, warmup)
}

/// A phase's length, or a problem when it is past [`MAX_PHASE`].
fn phase_length(cx: &mut Context, at: FieldPath, d: Duration) -> Option<Duration> {
    if d > MAX_PHASE {
        cx.err(at, phase_too_long(d));
        return None;
    }
    Some(d)
}

/// The message for a phase past [`MAX_PHASE`] (also used for `--duration`).
pub fn phase_too_long(d: Duration) -> String {
    format!(
        "a phase may last at most {} s (about 11.6 days), got {} s: every instant of a run is counted from its phase's start, and the clock, histograms and interval log are sized for runs below this",
        MAX_PHASE.as_secs(),
        d.as_secs_f64()
    )
}

/// A number of requests, or a problem when it is past [`MAX_REQUESTS`].
fn request_count(cx: &mut Context, at: FieldPath, n: u64) -> Option<u64> {
    if n > MAX_REQUESTS {
        cx.err(at, too_many_requests(n));
        return None;
    }
    Some(n)
}

/// The message for a number of requests past [`MAX_REQUESTS`] (also used for `--requests`).
pub fn too_many_requests(n: u64) -> String {
    format!(
        "a phase may have at most {MAX_REQUESTS} requests, got {n}: every measured request keeps its token times until the phase ends, so memory grows with each"
    )
}

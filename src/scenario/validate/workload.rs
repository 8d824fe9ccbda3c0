//! `[workload]`: the measured phase and the warm-up. The token counts and the arrival
//! process are checked as they are read (`file`).

use super::Context;
use crate::scenario::Extent;
use crate::scenario::diagnostic::FieldPath;
use crate::scenario::file::RawWorkload;

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
        (Some(d), None) => Some(Extent::Duration(d.get())),
        (None, Some(0)) => {
            cx.err(wp.key("requests"), "requests must be at least 1".into());
            None
        }
        (None, Some(n)) => Some(Extent::Requests(n)),
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
        (Some(d), None) => Extent::Duration(d.get()),
        (None, Some(n)) => Extent::Requests(n),
        (None, None) => Extent::Requests(0),
    };
    (measure, warmup)
}

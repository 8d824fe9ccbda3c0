//! `[slo]`: the latency targets that define goodput.

use super::Context;
use crate::scenario::Slo;
use crate::scenario::diagnostic::FieldPath;
use crate::scenario::file::RawSlo;
use crate::scenario::units::Dur;
use std::time::Duration;

/// The targets the table sets (none without a table).
pub(super) fn check(cx: &mut Context, raw: Option<&RawSlo>) -> Slo {
    let Some(s) = raw else {
        return Slo::default();
    };
    let mut target = |k: &'static str, v: Option<Dur>| -> Option<Duration> {
        if v.is_some_and(|d| d.get().is_zero()) {
            cx.err(
                FieldPath::root().key("slo").key(k),
                format!("slo {k} must be greater than zero"),
            );
        }
        v.map(|d| d.get())
    };
    Slo {
        ttft: target("ttft", s.ttft),
        tpot: target("tpot", s.tpot),
        itl: target("itl", s.itl),
        e2e: target("e2e", s.e2e),
    }
}

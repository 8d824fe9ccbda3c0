//! `[baseline]`: the local-GPU box the topology is compared with.

use super::Context;
use crate::format::format_si;
use crate::scenario::Baseline;
use crate::scenario::diagnostic::FieldPath;
use crate::scenario::file::RawBaseline;
use crate::scenario::model::Model;

/// The baseline, when the scenario has one and its device resolves.
pub(super) fn check(
    cx: &mut Context,
    raw: Option<&RawBaseline>,
    model: Option<&Model>,
) -> Option<Baseline> {
    let b = raw?;
    let bp = FieldPath::root().key("baseline");
    let count = b.count.unwrap_or(1);
    if count == 0 || count > 64 {
        cx.err(
            bp.key("count"),
            format!("count must be in 1..=64 GPUs, got {count}"),
        );
    }
    let device = cx.device(&b.device, bp.key("device"))?;
    if let Some(m) = model {
        let total = device.memory.get() * count.max(1) as f64;
        if m.total_weight_bytes() > total {
            cx.err(
                bp.key("device"),
                format!(
                    "the model's {} of weights do not fit in {} x {} ({}); raise `count` or lower `weight_bytes`",
                    format_si(m.total_weight_bytes(), "B"),
                    count,
                    device.name,
                    format_si(total, "B")
                ),
            );
        }
    }
    Some(Baseline {
        device,
        count: count.max(1),
    })
}

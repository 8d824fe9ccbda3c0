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
    let engine = match (&b.engine, &b.device) {
        (Some(e), None) => {
            if b.count.is_some_and(|c| c != 1) {
                cx.err(
                    bp.key("count"),
                    "a baseline backed by an engine is that one server: remove `count`".into(),
                );
            }
            let engine = super::engine::check(cx, e, bp.key("engine"))?;
            return Some(Baseline {
                // The plan's stand-in: a real server's compute is measured, not predicted.
                device: crate::compute::DeviceProfile::ideal(),
                count: 1,
                engine: Some(engine),
            });
        }
        (Some(_), Some(_)) => {
            cx.err(
                bp.key("device"),
                "give [baseline] either `device` (modelled) or `engine` (a real server), not both"
                    .into(),
            );
            return None;
        }
        (None, None) => {
            cx.err(
                bp.clone(),
                "[baseline] needs `device` (a profile name like \"h100-sxm\") or `engine` (a real server)".into(),
            );
            return None;
        }
        (None, Some(d)) => d,
    };
    let device = cx.device(engine, bp.key("device"))?;
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
        engine: None,
    })
}

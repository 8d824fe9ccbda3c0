//! `[reference]`: a published figure the scenario reproduces.

use super::Context;
use crate::scenario::diagnostic::FieldPath;
use crate::scenario::file::RawReference;
use crate::scenario::units::Dur;
use crate::scenario::{
    REFERENCE_LATENCY_METRICS, REFERENCE_PERCENTILES, REFERENCE_THROUGHPUT_METRICS, RefRun,
    RefValue, Reference,
};

/// The reference, when the scenario has one that names a known metric and a value of
/// its kind.
pub(super) fn check(
    cx: &mut Context,
    raw: Option<&RawReference>,
    has_baseline: bool,
) -> Option<Reference> {
    let r = raw?;
    let rp = FieldPath::root().key("reference");
    let latency = r.metric.rsplit_once('_').is_some_and(|(m, p)| {
        REFERENCE_LATENCY_METRICS.contains(&m) && REFERENCE_PERCENTILES.contains(&p)
    });
    let throughput = REFERENCE_THROUGHPUT_METRICS.contains(&r.metric.as_str());
    if !latency && !throughput {
        cx.err(
            rp.key("metric"),
            format!(
                "unknown reference metric \"{}\"; use <metric>_<percentile> with metric in {} and percentile in {}, or one of {}",
                r.metric,
                REFERENCE_LATENCY_METRICS.join(", "),
                REFERENCE_PERCENTILES.join(", "),
                REFERENCE_THROUGHPUT_METRICS.join(", ")
            ),
        );
        return None;
    }
    let value = match (&r.value, latency) {
        (toml::Value::String(s), true) => match Dur::parse(s) {
            Ok(d) => RefValue::Latency(d.get()),
            Err(e) => {
                cx.err(rp.key("value"), e);
                return None;
            }
        },
        (toml::Value::Integer(n), false) if *n > 0 => RefValue::Number(*n as f64),
        (toml::Value::Float(f), false) if *f > 0.0 && f.is_finite() => RefValue::Number(*f),
        (_, true) => {
            cx.err(
                rp.key("value"),
                format!(
                    "a latency reference needs a duration like \"30ms\", got {}",
                    r.value
                ),
            );
            return None;
        }
        (_, false) => {
            cx.err(
                rp.key("value"),
                format!(
                    "a throughput reference needs a positive number, got {}",
                    r.value
                ),
            );
            return None;
        }
    };
    let run = match r.run.as_deref() {
        None => RefRun::Topology,
        Some(name) => match RefRun::ALL.into_iter().find(|k| k.name() == name) {
            Some(run) => run,
            None => {
                cx.err(
                    rp.key("run"),
                    format!(
                        "unknown reference run \"{name}\"; use topology (the scenario, network included), colocated (the same devices with no network) or baseline"
                    ),
                );
                return None;
            }
        },
    };
    if run == RefRun::Baseline && !has_baseline {
        cx.err(
            rp.key("run"),
            "run = \"baseline\" needs a [baseline] table: the scenario has no baseline run"
                .to_string(),
        );
        return None;
    }
    Some(Reference {
        source: r.source.clone(),
        metric: r.metric.clone(),
        value,
        tolerance: r.tolerance.get(),
        fitted: r.fitted,
        run,
        note: r.note.clone(),
    })
}

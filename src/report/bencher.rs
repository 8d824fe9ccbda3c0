//! Results for continuous-benchmarking services: `bencher.json` in Bencher Metric Format
//! (<https://bencher.dev/docs/reference/bencher-metric-format/>) and
//! `benchmark-action.json` in github-action-benchmark's `customSmallerIsBetter` format
//! (<https://github.com/benchmark-action/github-action-benchmark>). Both carry the four
//! per-request latency metrics of each run; metrics with no samples are left out.

use super::{Exporter, Results};
use crate::record::{Metric, ladder};
use serde::Serialize;
use std::collections::BTreeMap;

/// The metrics both formats publish.
pub const METRICS: [Metric; 4] = [Metric::Ttft, Metric::Tpot, Metric::Itl, Metric::E2e];

/// One BMF metric: `value` with an optional range around it.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct BmfMetric {
    pub value: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lower_value: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upper_value: Option<f64>,
}

/// Bencher Metric Format: benchmark name -> measure slug -> metric.
pub type Bmf = BTreeMap<String, BTreeMap<&'static str, BmfMetric>>;

/// `bencher.json`. Each run's `ttft`, `tpot`, `itl` and `e2e` is a benchmark
/// `<scenario>/<run>/<metric>` with Bencher's built-in `latency` measure, in nanoseconds
/// (the histogram's own unit): value p50, lower_value min, upper_value p99. Each run's
/// completed requests per second is `<scenario>/<run>/throughput` with the built-in
/// `throughput` measure.
pub fn bmf(results: &Results) -> Bmf {
    let scenario = &results.scenario.name;
    let mut out = Bmf::new();
    for (run, output) in results.runs() {
        let r = &output.record;
        for m in METRICS {
            let h = r.histogram(m);
            if h.is_empty() {
                continue;
            }
            let metric = BmfMetric {
                value: h.value_at_quantile(0.5) as f64,
                lower_value: Some(h.min() as f64),
                upper_value: Some(h.value_at_quantile(0.99) as f64),
            };
            out.insert(
                format!("{scenario}/{run}/{}", m.name()),
                BTreeMap::from([("latency", metric)]),
            );
        }
        let rate = r.requests_per_s();
        if rate.is_finite() {
            out.insert(
                format!("{scenario}/{run}/throughput"),
                BTreeMap::from([(
                    "throughput",
                    BmfMetric {
                        value: rate,
                        lower_value: None,
                        upper_value: None,
                    },
                )]),
            );
        }
    }
    out
}

/// One entry of github-action-benchmark's custom JSON.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ActionEntry {
    pub name: String,
    pub unit: &'static str,
    pub value: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub range: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub extra: Option<String>,
}

/// `benchmark-action.json` (`tool: customSmallerIsBetter`): for each run and each of
/// `ttft`, `tpot`, `itl` and `e2e`, its p50 and p99 in milliseconds, named like
/// `quickstart topology ttft p50`; the same values as `summary.json`.
pub fn action_entries(results: &Results) -> Vec<ActionEntry> {
    let scenario = &results.scenario.name;
    let clock = results.measured.clock.name();
    let mut out = Vec::new();
    for (run, output) in results.runs() {
        for m in METRICS {
            let h = output.record.histogram(m);
            if h.is_empty() {
                continue;
            }
            let l = ladder(h);
            let extra = format!(
                "{} samples, min {:.3} ms, max {:.3} ms, {clock} clock",
                l.count, l.min, l.max
            );
            for (pct, value) in [("p50", l.p50), ("p99", l.p99)] {
                out.push(ActionEntry {
                    name: format!("{scenario} {run} {} {pct}", m.name()),
                    unit: "ms",
                    value,
                    range: None,
                    extra: Some(extra.clone()),
                });
            }
        }
    }
    out
}

/// Writes `bencher.json`.
pub struct BencherJson;

impl Exporter for BencherJson {
    fn render(&self, results: &Results) -> anyhow::Result<Vec<(String, Vec<u8>)>> {
        let mut bytes = serde_json::to_vec_pretty(&bmf(results))?;
        bytes.push(b'\n');
        Ok(vec![("bencher.json".into(), bytes)])
    }
}

/// Writes `benchmark-action.json`.
pub struct BenchmarkActionJson;

impl Exporter for BenchmarkActionJson {
    fn render(&self, results: &Results) -> anyhow::Result<Vec<(String, Vec<u8>)>> {
        let mut bytes = serde_json::to_vec_pretty(&action_entries(results))?;
        bytes.push(b'\n');
        Ok(vec![("benchmark-action.json".into(), bytes)])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bmf_leaves_out_absent_bounds() {
        let m = BmfMetric {
            value: 1.5,
            lower_value: None,
            upper_value: None,
        };
        assert_eq!(serde_json::to_string(&m).unwrap(), r#"{"value":1.5}"#);
        let m = BmfMetric {
            value: 2.0,
            lower_value: Some(1.0),
            upper_value: Some(3.0),
        };
        assert_eq!(
            serde_json::to_string(&m).unwrap(),
            r#"{"value":2.0,"lower_value":1.0,"upper_value":3.0}"#
        );
    }
}

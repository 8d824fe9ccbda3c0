//! `summary.json` (DESIGN §8): the run's results as an API, written through the types of
//! [`super::summary`], which every reader uses too. `schema_version` changes when a key
//! changes meaning or goes away, or a section is added.

use super::summary::{
    Breakdown, ClientSummary, Emulator, EngineRecord, Floors, Hedging, Identity, Ladder, ModelInfo,
    Network, NodeBreakdown, ReferenceCheck, Requests, RunSummary, Runs, ScenarioInfo, Summary,
    SummaryError, Tax, Throughput, Tool, transcode, what_ran,
};
use super::{Exporter, Results};
use crate::harness::RunOutput;
use crate::record::{Metric, Share, ladder};

pub use super::summary::SCHEMA_VERSION;

/// The one line that explains scheduled-start timing.
pub const TIMING_NOTE: &str = "latencies run from each request's scheduled start (wrk2 and MLPerf LoadGen style, no coordinated omission): requests are sent on schedule whether or not earlier ones have finished, so waiting behind a backlog shows in the tails, where a closed-loop tool would have delayed the send and hidden it; `service` runs from the actual send and differs from e2e only by `schedule_lag`, the load generator's own lateness";

fn lad(h: &hdrhistogram::Histogram<u64>) -> Ladder {
    ladder(h).into()
}

fn run_summary(out: &RunOutput, has_slo: bool, hedged: bool) -> RunSummary {
    let r = &out.record;
    RunSummary {
        complete: out.complete,
        requests: Requests {
            completed: r.completed,
            failed: r.failed,
        },
        metrics: Metric::ALL
            .iter()
            .map(|&m| (m.name().to_string(), r.ladder(m).into()))
            .collect(),
        throughput: Throughput {
            window_s: Some(r.window.as_secs_f64()),
            requests_per_s: r.requests_per_s(),
            output_tokens_per_s: r.output_tokens_per_s(),
            goodput_requests_per_s: has_slo.then(|| r.goodput_per_s()),
        },
        breakdown: Breakdown {
            queue: lad(r.part(Share::Queue)),
            compute: lad(r.part(Share::Compute)),
            software: r.has_software().then(|| lad(r.part(Share::Software))),
            network: lad(r.part(Share::Network)),
            nodes: Some(
                r.nodes()
                    .map(|(n, q, c)| {
                        (
                            n.to_string(),
                            NodeBreakdown {
                                queue: lad(q),
                                compute: lad(c),
                                software: r.node_software(n).map(lad),
                            },
                        )
                    })
                    .collect(),
            ),
        },
        hedging: hedged.then(|| Hedging {
            extra_copies: r.extra_copies,
            extra_load: if r.completed == 0 {
                0.0
            } else {
                r.extra_copies as f64 / r.completed as f64
            },
            won_by_a_later_copy: r.hedge_wins,
        }),
        clients: (r.clients().count() > 1).then(|| {
            r.clients()
                .map(|(n, t, e)| {
                    (
                        n.to_string(),
                        ClientSummary {
                            completed: t.len(),
                            ttft: lad(t),
                            e2e: lad(e),
                        },
                    )
                })
                .collect()
        }),
        measured_s: r.elapsed.as_secs_f64(),
        errors: r.errors.clone(),
        faults: None,
    }
}

fn notes(results: &Results, warnings: &[String]) -> Vec<String> {
    let mut notes = vec![TIMING_NOTE.to_string()];
    if results.measured.clock == crate::clock::ClockKind::Virtual {
        notes.push(super::VIRTUAL_NOTE.to_string());
    }
    notes.extend(warnings.iter().cloned());
    notes.extend(results.plan.notes.iter().cloned());
    notes.extend(results.measured.engines.iter().map(|e| e.line()));
    if !results.complete() {
        notes.push(
            "the run was interrupted: these results cover only what was measured before it stopped"
                .into(),
        );
    }
    notes
}

fn network(results: &Results) -> Result<Network, SummaryError> {
    let m = results.measured;
    Ok(Network {
        links: transcode("the link reports", &m.links)?,
        connections: transcode("the connection reports", &m.connections)?,
        transport: transcode("the transport settings", &m.transport)?,
        malformed_frames: m.malformed_frames,
        unroutable_datagrams: m.unroutable,
        inbox_overflow_datagrams: m.inbox_overflow,
    })
}

/// The summary of a run.
pub fn summary(results: &Results) -> Result<Summary, SummaryError> {
    let s = results.scenario;
    let m = results.measured;
    let has_slo = !s.slo.is_empty();
    let (floor, baseline_floor) = results.floors();
    let taxes = |f: &dyn Fn(Metric, f64) -> Option<f64>| {
        [Metric::Ttft, Metric::Tpot, Metric::Itl, Metric::E2e]
            .into_iter()
            .map(|metric| {
                let t = Tax {
                    p50: f(metric, 0.5),
                    p99: f(metric, 0.99),
                };
                (metric.name().to_string(), t)
            })
            .collect::<std::collections::BTreeMap<_, _>>()
    };
    let tax = taxes(&|m, q| results.tax(m, q));
    let network_tax = match m.colocated {
        Some(_) => taxes(&|m, q| results.network_tax(m, q)),
        None => Default::default(),
    };
    let device_tax = match (&m.colocated, &m.baseline) {
        (Some(_), Some(_)) => taxes(&|m, q| results.device_tax(m, q)),
        _ => Default::default(),
    };
    let reference = s.reference.as_ref().and_then(|r| {
        let m = results.reference_measured()?;
        Some(ReferenceCheck {
            source: r.source.clone(),
            metric: r.metric.clone(),
            value: m.expected,
            measured: m.measured,
            tolerance: r.tolerance,
            within_tolerance: m.within,
            fitted: r.fitted,
            unit: Some(m.unit.into()),
            run: Some(m.run.into()),
            note: r.note.clone(),
        })
    });
    let warnings = super::warnings(results);
    let validity = results.validity();
    Ok(Summary {
        schema_version: SCHEMA_VERSION,
        tool: Tool {
            name: "inferlat".into(),
            version: env!("CARGO_PKG_VERSION").into(),
        },
        scenario: ScenarioInfo {
            name: s.name.clone(),
            file: s.file.display().to_string(),
            sha256: s.sha256.clone(),
            seed: s.seed,
            workload: transcode("the workload", &s.workload)?,
        },
        clock: m.clock.name().into(),
        complete: results.complete(),
        valid: Some(validity.reasons.is_empty()),
        validity: Some(validity),
        emulator: Emulator {
            lateness: m
                .emulator_lateness
                .as_ref()
                .map(lad)
                .unwrap_or_else(|| Ladder {
                    unit: "ms".into(),
                    ..Ladder::default()
                }),
            cpu_load: m.cpu_load,
            warning: warnings.first().cloned(),
        },
        environment: results.environment.clone(),
        topology: Some(what_ran(s, results.plan)),
        model: Some(ModelInfo::from(&s.model)),
        identity: Some(Identity::of(s, m.clock.name())),
        runs: Runs {
            topology: m.topology.as_ref().map(|r| RunSummary {
                // The faults act on the topology run (docs/faults.md).
                faults: (!s.faults.is_empty()).then(|| r.record.faults.clone()),
                ..run_summary(r, has_slo, results.plan.hedge_after.is_some())
            }),
            colocated: m
                .colocated
                .as_ref()
                .map(|r| run_summary(r, has_slo, results.plan.hedge_after.is_some())),
            baseline: m.baseline.as_ref().map(|r| run_summary(r, has_slo, false)),
        },
        tax,
        network_tax,
        device_tax,
        floor: Floors {
            prompt_tokens: results.plan.typical.prompt,
            output_tokens: results.plan.typical.output,
            unit: "ms".into(),
            topology: floor.into(),
            baseline: baseline_floor.map(Into::into),
        },
        reference,
        network: network(results)?,
        engines: results
            .measured
            .engines
            .iter()
            .map(|e| EngineRecord {
                whose: e.whose.clone(),
                run: e.run.to_string(),
                account: e.account.clone(),
            })
            .collect(),
        notes: notes(results, &warnings),
    })
}

pub struct SummaryJson;

impl Exporter for SummaryJson {
    fn render(&self, results: &Results) -> anyhow::Result<Vec<(String, Vec<u8>)>> {
        let mut bytes = serde_json::to_vec_pretty(&summary(results)?)?;
        bytes.push(b'\n');
        Ok(vec![("summary.json".into(), bytes)])
    }
}

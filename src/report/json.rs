//! `summary.json` (DESIGN §8): the run's results as an API. `schema_version` changes when
//! a key changes meaning or goes away.

use super::{Environment, Exporter, Results};
use crate::harness::{ConnectionReport, LinkReport, RunOutput};
use crate::net::endpoint::TransportSettings;
use crate::plan::Floor;
use crate::record::{Ladder, Metric, Part, ladder};
use serde::Serialize;
use std::collections::BTreeMap;

pub const SCHEMA_VERSION: u32 = 1;

/// The one line that explains scheduled-start timing.
pub const TIMING_NOTE: &str = "latencies run from each request's scheduled start (wrk2 and MLPerf LoadGen style, no coordinated omission): requests are sent on schedule whether or not earlier ones have finished, so waiting behind a backlog shows in the tails, where a closed-loop tool would have delayed the send and hidden it; `service` runs from the actual send and differs from e2e only by `schedule_lag`, the load generator's own lateness";

#[derive(Serialize)]
pub struct Summary {
    pub schema_version: u32,
    pub tool: Tool,
    pub scenario: ScenarioInfo,
    pub clock: &'static str,
    pub complete: bool,
    /// The link emulator's own timing: how late it delivered datagrams.
    pub emulator: Emulator,
    pub environment: Environment,
    pub runs: Runs,
    pub tax: BTreeMap<&'static str, Tax>,
    pub floor: Floors,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reference: Option<ReferenceCheck>,
    pub network: Network,
    pub notes: Vec<String>,
}

#[derive(Serialize)]
pub struct Emulator {
    /// Actual minus scheduled delivery of each datagram (always zero on the virtual clock).
    pub lateness: Ladder,
    /// Process CPU over the topology run, in cores (real clock only).
    pub cpu_load: Option<f64>,
    /// Set when lateness p99 exceeds 1 ms: the results overstate the network.
    pub warning: Option<String>,
}

#[derive(Serialize)]
pub struct Tool {
    pub name: &'static str,
    pub version: &'static str,
}

#[derive(Serialize)]
pub struct ScenarioInfo {
    pub name: String,
    pub file: String,
    pub sha256: String,
    pub seed: u64,
    /// The workload as run, command-line overrides applied.
    pub workload: crate::scenario::Workload,
}

#[derive(Serialize)]
pub struct Runs {
    pub topology: Option<RunSummary>,
    pub baseline: Option<RunSummary>,
}

#[derive(Serialize)]
pub struct Requests {
    pub completed: u64,
    pub failed: u64,
}

#[derive(Serialize)]
pub struct Throughput {
    pub requests_per_s: f64,
    pub output_tokens_per_s: f64,
    /// Requests/s meeting every objective of `[slo]`; null without one.
    pub goodput_requests_per_s: Option<f64>,
}

#[derive(Serialize)]
pub struct RunSummary {
    pub complete: bool,
    pub requests: Requests,
    pub metrics: BTreeMap<&'static str, Ladder>,
    pub throughput: Throughput,
    pub breakdown: Breakdown,
    /// Hedged topologies: the extra load of the copies.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hedging: Option<Hedging>,
    /// Topologies with several clients: each client's requests, ttft and e2e.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub clients: Option<BTreeMap<String, ClientSummary>>,
    /// Measure phase start to the last completion, in seconds.
    pub measured_s: f64,
    pub errors: BTreeMap<String, u64>,
}

/// Per request: time queued and computed on the nodes it waited on in turn (each on its
/// own clock, carried back in-band), and the network residual on the client's clock; then
/// each node's own queue and compute time.
#[derive(Serialize)]
pub struct Breakdown {
    pub queue: Ladder,
    pub compute: Ladder,
    pub network: Ladder,
    pub nodes: BTreeMap<String, NodeBreakdown>,
}

#[derive(Serialize)]
pub struct NodeBreakdown {
    pub queue: Ladder,
    pub compute: Ladder,
}

#[derive(Serialize)]
pub struct ClientSummary {
    pub completed: u64,
    pub ttft: Ladder,
    pub e2e: Ladder,
}

#[derive(Serialize)]
pub struct Hedging {
    /// Copies sent beyond each request's first.
    pub extra_copies: u64,
    /// Extra copies per completed request.
    pub extra_load: f64,
    /// Requests a later copy answered first.
    pub won_by_a_later_copy: u64,
}

#[derive(Serialize)]
pub struct Tax {
    pub p50: Option<f64>,
    pub p99: Option<f64>,
}

#[derive(Serialize)]
pub struct FloorMs {
    pub ttft: f64,
    pub tpot: f64,
    pub itl: f64,
    pub e2e: f64,
}

impl From<Floor> for FloorMs {
    fn from(f: Floor) -> Self {
        let ms = |d: std::time::Duration| d.as_secs_f64() * 1e3;
        FloorMs {
            ttft: ms(f.ttft),
            tpot: ms(f.tpot),
            itl: ms(f.itl),
            e2e: ms(f.e2e),
        }
    }
}

#[derive(Serialize)]
pub struct Floors {
    pub prompt_tokens: u32,
    pub output_tokens: u32,
    pub unit: &'static str,
    pub topology: FloorMs,
    pub baseline: Option<FloorMs>,
}

#[derive(Serialize)]
pub struct ReferenceCheck {
    pub source: String,
    pub metric: String,
    pub value: f64,
    pub measured: f64,
    pub tolerance: f64,
    pub within_tolerance: bool,
}

#[derive(Serialize)]
pub struct Network {
    pub links: Vec<LinkReport>,
    pub connections: Vec<ConnectionReport>,
    pub transport: TransportSettings,
    pub malformed_frames: u64,
    /// Datagrams sent where the topology has no link.
    pub unroutable_datagrams: u64,
    /// Datagrams dropped because a receiver's socket buffer (8,192 datagrams) was full.
    pub inbox_overflow_datagrams: u64,
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
            .map(|&m| (m.name(), r.ladder(m)))
            .collect(),
        throughput: Throughput {
            requests_per_s: r.requests_per_s(),
            output_tokens_per_s: r.output_tokens_per_s(),
            goodput_requests_per_s: has_slo.then(|| r.goodput_per_s()),
        },
        breakdown: Breakdown {
            queue: ladder(r.part(Part::Queue)),
            compute: ladder(r.part(Part::Compute)),
            network: ladder(r.part(Part::Network)),
            nodes: r
                .nodes()
                .map(|(n, q, c)| {
                    (
                        n.to_string(),
                        NodeBreakdown {
                            queue: ladder(q),
                            compute: ladder(c),
                        },
                    )
                })
                .collect(),
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
                            ttft: ladder(t),
                            e2e: ladder(e),
                        },
                    )
                })
                .collect()
        }),
        measured_s: r.elapsed.as_secs_f64(),
        errors: r.errors.clone(),
    }
}

pub fn summary(results: &Results) -> Summary {
    let s = results.scenario;
    let m = results.measured;
    let has_slo = !s.slo.is_empty();
    let (floor, baseline_floor) = results.floors();
    let tax = [Metric::Ttft, Metric::Tpot, Metric::Itl, Metric::E2e]
        .into_iter()
        .map(|metric| {
            (
                metric.name(),
                Tax {
                    p50: results.tax(metric, 0.5),
                    p99: results.tax(metric, 0.99),
                },
            )
        })
        .collect();
    let reference = s.reference.as_ref().and_then(|r| {
        let (value, measured, within) = results.reference_measured()?;
        Some(ReferenceCheck {
            source: r.source.clone(),
            metric: r.metric.clone(),
            value,
            measured,
            tolerance: r.tolerance,
            within_tolerance: within,
        })
    });
    let mut notes = vec![TIMING_NOTE.to_string()];
    if m.clock == crate::clock::ClockKind::Virtual {
        notes.push(super::VIRTUAL_NOTE.to_string());
    }
    let warnings = super::warnings(results);
    notes.extend(warnings.iter().cloned());
    notes.extend(results.plan.notes.iter().cloned());
    if !results.complete() {
        notes.push(
            "the run was interrupted: these results cover only what was measured before it stopped"
                .into(),
        );
    }
    Summary {
        schema_version: SCHEMA_VERSION,
        tool: Tool {
            name: "inferlat",
            version: env!("CARGO_PKG_VERSION"),
        },
        scenario: ScenarioInfo {
            name: s.name.clone(),
            file: s.file.display().to_string(),
            sha256: s.sha256.clone(),
            seed: s.seed,
            workload: s.workload.clone(),
        },
        clock: m.clock.name(),
        complete: results.complete(),
        emulator: Emulator {
            lateness: m
                .emulator_lateness
                .as_ref()
                .map(ladder)
                .unwrap_or_else(|| ladder(&empty())),
            cpu_load: m.cpu_load,
            warning: warnings.first().cloned(),
        },
        environment: results.environment.clone(),
        runs: Runs {
            topology: m
                .topology
                .as_ref()
                .map(|r| run_summary(r, has_slo, results.plan.hedge_after.is_some())),
            baseline: m.baseline.as_ref().map(|r| run_summary(r, has_slo, false)),
        },
        tax,
        floor: Floors {
            prompt_tokens: results.plan.typical.prompt,
            output_tokens: results.plan.typical.output,
            unit: "ms",
            topology: floor.into(),
            baseline: baseline_floor.map(Into::into),
        },
        reference,
        network: Network {
            links: m.links.clone(),
            connections: m.connections.clone(),
            transport: m.transport.clone(),
            malformed_frames: m.malformed_frames,
            unroutable_datagrams: m.unroutable,
            inbox_overflow_datagrams: m.inbox_overflow,
        },
        notes,
    }
}

fn empty() -> hdrhistogram::Histogram<u64> {
    hdrhistogram::Histogram::new(3).expect("3 significant figures")
}

pub struct SummaryJson;

impl Exporter for SummaryJson {
    fn render(&self, results: &Results) -> anyhow::Result<Vec<(String, Vec<u8>)>> {
        let mut bytes = serde_json::to_vec_pretty(&summary(results))?;
        bytes.push(b'\n');
        Ok(vec![("summary.json".into(), bytes)])
    }
}

//! The types of `summary.json` (DESIGN §8), one set for the writer (`json.rs`) and every
//! reader (`compare`, `report.md`, `report.html`, the scenario bench): a renamed key is a
//! compile error or a load error, never a silent "-".
//!
//! Version 2 adds `topology` (what ran: the kind, the path and every node with its role,
//! part, device figures, layers and batching limit) and `model`. Both are absent from
//! version-1 files and read as `None`; so is `identity` (what the numbers depend on, which
//! `compare` checks), added to version 2 later; everything else is as version 1 wrote it, so
//! readers take both versions. Keys added to an existing object within a version read as
//! their default when absent (`network.transport.warm`, `slow_start_after_idle`, `nagle`:
//! false; `max_ack_delay_ms`: none; `network.connections[].nagle`: false).
//!
//! Parts that other modules own and serialize (the workload, the link reports, quinn's
//! connection statistics, the transport settings) are mirrored here field by field; the
//! writer converts through their `Serialize` implementations ([`transcode`]), so the file
//! holds exactly what those modules write and the readers see it typed.

use crate::plan::{Part, Plan};
use crate::scenario::{DeviceProfile, Scenario};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The version this build writes. 2: `topology` and `model` added.
pub const SCHEMA_VERSION: u32 = 2;
/// The versions this build reads.
pub const READS: &[u32] = &[1, 2];

/// Why a summary could not be made or read.
#[derive(Debug, thiserror::Error)]
pub enum SummaryError {
    #[error("not a summary.json: {0}")]
    Json(#[from] serde_json::Error),
    #[error(
        "schema_version {found} is not one this version reads ({})",
        versions()
    )]
    Version { found: String },
    #[error("{what} does not serialize as summary.json describes it: {source}")]
    Transcode {
        what: &'static str,
        source: serde_json::Error,
    },
}

fn versions() -> String {
    READS
        .iter()
        .map(|v| v.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Summary {
    pub schema_version: u32,
    pub tool: Tool,
    pub scenario: ScenarioInfo,
    pub clock: String,
    pub complete: bool,
    /// `false` when a run's failed fraction passed its limit or no request completed: the
    /// latencies then rest on the survivors, and tax and throughput are no results.
    /// Absent from files written before it was added.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid: Option<bool>,
    /// The limit and why the run is invalid (absent from older files).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validity: Option<Validity>,
    /// The link emulator's own timing: how late it delivered datagrams.
    pub emulator: Emulator,
    pub environment: Environment,
    /// What ran (version 2 on).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topology: Option<TopologyInfo>,
    /// The model (version 2 on).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<ModelInfo>,
    /// Everything the numbers depend on (version 2, from inferlat 0.1 with identities):
    /// `compare` refuses two results whose identities differ.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<Identity>,
    pub runs: Runs,
    /// Topology / baseline: the network and the devices together.
    pub tax: BTreeMap<String, Tax>,
    /// Topology / colocated: the network's cost alone (absent from older files).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub network_tax: BTreeMap<String, Tax>,
    /// Colocated / baseline: the devices' cost alone (absent from older files).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub device_tax: BTreeMap<String, Tax>,
    pub floor: Floors,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<ReferenceCheck>,
    pub network: Network,
    /// What each real engine recorded, per run: where its token counts came from, their
    /// mismatches, failures by reason (absent when no real engine ran).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub engines: Vec<EngineRecord>,
    pub notes: Vec<String>,
}

/// A real engine's account of one run (docs/engines.md).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EngineRecord {
    /// Whose engine it is: "worker gpu-a", "the baseline".
    pub whose: String,
    /// `topology`, `colocated` or `baseline`.
    pub run: String,
    #[serde(flatten)]
    pub account: crate::compute::EngineAccount,
}

impl Summary {
    /// Reads a summary of any version this build reads.
    pub fn parse(text: &str) -> Result<Summary, SummaryError> {
        #[derive(Deserialize)]
        struct Version {
            schema_version: serde_json::Value,
        }
        let v: Version = serde_json::from_str(text)?;
        match v.schema_version.as_u64() {
            Some(n) if READS.iter().any(|&r| u64::from(r) == n) => Ok(serde_json::from_str(text)?),
            _ => Err(SummaryError::Version {
                found: v.schema_version.to_string(),
            }),
        }
    }

    /// A run by name (`topology`, `colocated` or `baseline`).
    pub fn run(&self, name: &str) -> Option<&RunSummary> {
        match name {
            "topology" => self.runs.topology.as_ref(),
            "colocated" => self.runs.colocated.as_ref(),
            "baseline" => self.runs.baseline.as_ref(),
            _ => None,
        }
    }

    /// The total tax of a metric at `p50` or `p99`.
    pub fn tax_at(&self, metric: &str, stat: &str) -> Option<f64> {
        Self::at(&self.tax, metric, stat)
    }

    /// The network tax of a metric at `p50` or `p99`.
    pub fn network_tax_at(&self, metric: &str, stat: &str) -> Option<f64> {
        Self::at(&self.network_tax, metric, stat)
    }

    /// The device tax of a metric at `p50` or `p99`.
    pub fn device_tax_at(&self, metric: &str, stat: &str) -> Option<f64> {
        Self::at(&self.device_tax, metric, stat)
    }

    fn at(taxes: &BTreeMap<String, Tax>, metric: &str, stat: &str) -> Option<f64> {
        let t = taxes.get(metric)?;
        match stat {
            "p50" => t.p50,
            "p99" => t.p99,
            _ => None,
        }
    }
}

/// The validity rule (DESIGN §11) as applied to a run.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Validity {
    /// The failed fraction past which a run is invalid, in [0, 1].
    pub max_failed: f64,
    /// Why the run is invalid, one sentence each; empty when it is valid.
    pub reasons: Vec<String>,
}

/// Converts a value another module serializes into its mirror here.
pub fn transcode<T: Serialize, U: serde::de::DeserializeOwned>(
    what: &'static str,
    value: &T,
) -> Result<U, SummaryError> {
    serde_json::to_value(value)
        .and_then(serde_json::from_value)
        .map_err(|source| SummaryError::Transcode { what, source })
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Tool {
    pub name: String,
    pub version: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ScenarioInfo {
    pub name: String,
    pub file: String,
    pub sha256: String,
    #[serde(default)]
    pub seed: u64,
    /// The workload as run, command-line overrides applied.
    pub workload: Workload,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Workload {
    pub prompt_tokens: TokenCount,
    pub output_tokens: TokenCount,
    pub arrival: Arrival,
    pub measure: Extent,
    pub warmup: Extent,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "dist", rename_all = "lowercase")]
pub enum TokenCount {
    Fixed { value: u32 },
    Uniform { min: u32, max: u32 },
    Lognormal { median: f64, sigma: f64 },
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Arrival {
    Constant { rate: f64 },
    Poisson { rate: f64 },
    Gamma { rate: f64, burstiness: f64 },
    Closed { concurrency: u32 },
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Extent {
    /// A duration as inferlat writes it ("30s").
    Duration(String),
    Requests(u64),
}

/// Where and how the run happened.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Environment {
    pub os: String,
    pub arch: String,
    pub cpus: usize,
    pub command: String,
    /// Seconds since the Unix epoch when the run started.
    pub started_unix_s: u64,
    /// Real-time scheduling of the real clock's threads, when it was asked for (`--realtime`):
    /// what was granted, or why it was refused (`clock::scheduling`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduling: Option<String>,
}

impl Environment {
    pub fn capture(started: std::time::SystemTime) -> Self {
        Environment {
            os: std::env::consts::OS.into(),
            arch: std::env::consts::ARCH.into(),
            cpus: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            command: std::env::args().collect::<Vec<_>>().join(" "),
            started_unix_s: started
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            scheduling: crate::clock::scheduling(),
        }
    }
}

/// A percentile ladder in milliseconds; the values are null when `count` is 0.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Ladder {
    pub unit: String,
    pub count: u64,
    pub min: Option<f64>,
    pub mean: Option<f64>,
    pub p50: Option<f64>,
    pub p90: Option<f64>,
    pub p99: Option<f64>,
    pub p999: Option<f64>,
    pub max: Option<f64>,
}

impl Ladder {
    /// A statistic by its key (`min`, `mean`, `p50`, `p90`, `p99`, `p999`, `max`).
    pub fn stat(&self, stat: &str) -> Option<f64> {
        match stat {
            "min" => self.min,
            "mean" => self.mean,
            "p50" => self.p50,
            "p90" => self.p90,
            "p99" => self.p99,
            "p999" => self.p999,
            "max" => self.max,
            _ => None,
        }
    }
}

impl From<crate::record::Ladder> for Ladder {
    fn from(l: crate::record::Ladder) -> Self {
        let v = |x: f64| (l.count > 0).then_some(x);
        Ladder {
            unit: l.unit.into(),
            count: l.count,
            min: v(l.min),
            mean: v(l.mean),
            p50: v(l.p50),
            p90: v(l.p90),
            p99: v(l.p99),
            p999: v(l.p999),
            max: v(l.max),
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Emulator {
    /// Actual minus scheduled delivery of each datagram (always zero on the virtual clock).
    pub lateness: Ladder,
    /// Process CPU over the topology run, in cores (real clock only).
    pub cpu_load: Option<f64>,
    /// Set when lateness p99 exceeds 1 ms: the results overstate the network.
    pub warning: Option<String>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Runs {
    pub topology: Option<RunSummary>,
    /// The same devices, layers and route with no network between them (absent from older
    /// files and from runs made without it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub colocated: Option<RunSummary>,
    pub baseline: Option<RunSummary>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Requests {
    pub completed: u64,
    pub failed: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Throughput {
    /// The measured window both rates count over, in seconds (absent from older files).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window_s: Option<f64>,
    pub requests_per_s: f64,
    pub output_tokens_per_s: f64,
    /// Requests/s meeting every objective of `[slo]`; null without one.
    #[serde(default)]
    pub goodput_requests_per_s: Option<f64>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunSummary {
    pub complete: bool,
    pub requests: Requests,
    pub metrics: BTreeMap<String, Ladder>,
    pub throughput: Throughput,
    pub breakdown: Breakdown,
    /// Hedged topologies: the extra load of the copies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hedging: Option<Hedging>,
    /// Topologies with several clients: each client's requests, ttft and e2e.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clients: Option<BTreeMap<String, ClientSummary>>,
    /// Measure phase start to the last completion, in seconds.
    pub measured_s: f64,
    #[serde(default)]
    pub errors: BTreeMap<String, u64>,
    /// Scenarios with `[[fault]]`s, on the topology run: what the faults did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub faults: Option<crate::record::FaultCounts>,
}

impl RunSummary {
    /// A metric's statistic in ms.
    pub fn value(&self, metric: &str, stat: &str) -> Option<f64> {
        self.metrics.get(metric)?.stat(stat)
    }
}

/// Per request: time queued and computed on the nodes it waited on in turn (each on its
/// own clock, carried back in-band), and the network residual on the client's clock; then
/// each node's own queue and compute time.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Breakdown {
    pub queue: Ladder,
    pub compute: Ladder,
    /// The nodes' per-message software time (`send_cost`, `recv_cost`): present only
    /// where the run had some, so absent from older files and from runs without it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub software: Option<Ladder>,
    pub network: Ladder,
    /// Absent from the earliest version-1 files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nodes: Option<BTreeMap<String, NodeBreakdown>>,
}

impl Breakdown {
    /// A part (`network`, `compute`, `queue`, `software`) by name.
    pub fn part(&self, part: &str) -> Option<&Ladder> {
        match part {
            "network" => Some(&self.network),
            "compute" => Some(&self.compute),
            "queue" => Some(&self.queue),
            "software" => self.software.as_ref(),
            _ => None,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NodeBreakdown {
    pub queue: Ladder,
    pub compute: Ladder,
    /// The node's own per-message software time (`send_cost`, `recv_cost`), on or off
    /// the request's path (a tensor member's too): present only where it spent some.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub software: Option<Ladder>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ClientSummary {
    pub completed: u64,
    pub ttft: Ladder,
    pub e2e: Ladder,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Hedging {
    /// Copies sent beyond each request's first.
    pub extra_copies: u64,
    /// Extra copies per completed request.
    pub extra_load: f64,
    /// Requests a later copy answered first.
    pub won_by_a_later_copy: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Tax {
    pub p50: Option<f64>,
    pub p99: Option<f64>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FloorMs {
    pub ttft: f64,
    pub tpot: f64,
    pub itl: f64,
    pub e2e: f64,
}

impl FloorMs {
    /// A metric's floor by name.
    pub fn get(&self, metric: &str) -> Option<f64> {
        match metric {
            "ttft" => Some(self.ttft),
            "tpot" => Some(self.tpot),
            "itl" => Some(self.itl),
            "e2e" => Some(self.e2e),
            _ => None,
        }
    }
}

impl From<crate::plan::Floor> for FloorMs {
    fn from(f: crate::plan::Floor) -> Self {
        let ms = |d: std::time::Duration| d.as_secs_f64() * 1e3;
        FloorMs {
            ttft: ms(f.ttft),
            tpot: ms(f.tpot),
            itl: ms(f.itl),
            e2e: ms(f.e2e),
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Floors {
    pub prompt_tokens: u32,
    pub output_tokens: u32,
    pub unit: String,
    pub topology: FloorMs,
    pub baseline: Option<FloorMs>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ReferenceCheck {
    pub source: String,
    pub metric: String,
    pub value: f64,
    pub measured: f64,
    pub tolerance: f64,
    pub within_tolerance: bool,
    /// A figure of the scenario or its profiles was calibrated on this value (absent in
    /// older files: false).
    #[serde(default)]
    pub fitted: bool,
    /// The unit of `value` and `measured`: ms, output tokens/s or requests/s (absent in
    /// older files).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    /// The run `measured` comes from: topology, colocated or baseline (absent in older
    /// files: topology).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<String>,
    /// The scenario's explanation of the outcome (`[reference] note`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// How a reference check came out, for counting: a fitted reference is its own class,
/// never a reproduction nor a miss of a prediction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Outcome {
    /// A prediction within its tolerance of the published figure.
    Reproduced,
    /// A prediction outside its tolerance.
    Missed,
    /// A figure the scenario or its profiles were calibrated on.
    Fitted,
}

impl Outcome {
    pub fn name(self) -> &'static str {
        match self {
            Outcome::Reproduced => "reproduced",
            Outcome::Missed => "missed",
            Outcome::Fitted => "fitted",
        }
    }
}

impl ReferenceCheck {
    /// What the check says: a fitted reference is never a reproduction.
    pub fn verdict(&self) -> &'static str {
        verdict(self.fitted, self.within_tolerance)
    }

    pub fn outcome(&self) -> Outcome {
        match (self.fitted, self.within_tolerance) {
            (true, _) => Outcome::Fitted,
            (false, true) => Outcome::Reproduced,
            (false, false) => Outcome::Missed,
        }
    }
}

/// The words of a reference check: a fitted reference is never a reproduction.
pub fn verdict(fitted: bool, within: bool) -> &'static str {
    match (fitted, within) {
        (true, true) => "fitted (within tolerance; not a reproduction)",
        (true, false) => "fitted, yet outside tolerance",
        (false, true) => "reproduced (within tolerance)",
        (false, false) => "missed (outside tolerance)",
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Network {
    pub links: Vec<Link>,
    pub connections: Vec<Connection>,
    pub transport: Transport,
    pub malformed_frames: u64,
    /// Datagrams sent where the topology has no link.
    #[serde(default)]
    pub unroutable_datagrams: u64,
    /// Datagrams dropped because a receiver's socket buffer (8,192 datagrams) was full.
    #[serde(default)]
    pub inbox_overflow_datagrams: u64,
}

/// One link direction: what it was set to and what it did.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Link {
    pub from: String,
    pub to: String,
    /// The preset it started from, if any.
    pub preset: Option<String>,
    /// Its parameters at the start of the run.
    pub params: LinkParams,
    /// How it changed during the measured phase.
    pub changes: Vec<LinkChange>,
    pub datagrams: u64,
    pub bytes: u64,
    pub delivered: u64,
    pub lost: u64,
    pub dropped: u64,
    pub duplicated: u64,
    pub oversize: u64,
    pub reordered: u64,
    pub changes_applied: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LinkChange {
    /// From the start of the measured phase, as inferlat writes a duration.
    pub at: String,
    pub params: LinkParams,
}

/// One direction of an emulated link.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LinkParams {
    /// One-way delay, as inferlat writes a duration ("20ms").
    pub delay: String,
    pub jitter: String,
    pub jitter_distribution: String,
    pub jitter_correlation: f64,
    pub fifo: bool,
    pub reorder: Option<Reorder>,
    /// Bits per second; `None` is unlimited (unless `trace` is set).
    pub bandwidth: Option<f64>,
    pub trace: Option<Trace>,
    pub loss: Loss,
    pub duplicate: f64,
    pub mtu: Option<u32>,
    /// The tail-drop buffer ("1.5MB", "64 packets").
    pub queue: String,
    /// The `[[port]]` this direction shares with other links; absent when none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<Port>,
}

/// A switch port or NIC several link directions share.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Port {
    pub name: String,
    /// Bits per second.
    pub rate: f64,
    /// Its tail-drop buffer ("1.5MB", "64 packets").
    pub queue: String,
}

impl LinkParams {
    /// The one-way delay in ms.
    pub fn delay_ms(&self) -> Option<f64> {
        seconds(&self.delay).map(|s| s * 1e3)
    }

    /// The jitter in ms.
    pub fn jitter_ms(&self) -> Option<f64> {
        seconds(&self.jitter).map(|s| s * 1e3)
    }
}

/// A duration as summary.json writes it ("20ms"), in seconds.
pub fn seconds(text: &str) -> Option<f64> {
    crate::scenario::units::Dur::parse(text)
        .ok()
        .map(|d| d.get().as_secs_f64())
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub struct Reorder {
    pub p: f64,
    pub correlation: f64,
    pub gap: u32,
}

/// A mahimahi delivery trace.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Trace {
    pub file: String,
    pub period_ms: u64,
    pub mean_bit_per_s: f64,
}

/// A loss model, tagged by `model`.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
#[serde(tag = "model", rename_all = "kebab-case")]
pub enum Loss {
    None,
    Bernoulli {
        p: f64,
        correlation: f64,
    },
    GilbertElliott {
        p: f64,
        r: f64,
        loss_good: f64,
        loss_bad: f64,
    },
}

/// quinn's own statistics of a connection at the end of a run.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Connection {
    pub from: String,
    pub to: String,
    pub rtt_ms: f64,
    pub min_rtt_ms: f64,
    pub cwnd: u64,
    pub congestion_events: u64,
    pub sent_packets: u64,
    pub lost_packets: u64,
    pub lost_bytes: u64,
    pub udp_datagrams_sent: u64,
    pub udp_datagrams_received: u64,
    pub current_mtu: u16,
    pub black_holes_detected: u64,
    /// What `from` sent on it followed Nagle's algorithm (absent before: false).
    #[serde(default)]
    pub nagle: bool,
}

/// The QUIC settings that shape latency.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Transport {
    pub initial_rtt_ms: f64,
    pub max_idle_timeout_ms: u64,
    pub keep_alive_ms: u64,
    pub max_concurrent_bidi_streams: u32,
    pub stream_receive_window: u64,
    pub receive_window: u64,
    pub congestion_controller: String,
    pub initial_window: u64,
    /// Connections started with a long-lived connection's window (absent before: false).
    #[serde(default)]
    pub warm: bool,
    /// The window restarted from `initial_window` after idle periods (absent before: false).
    #[serde(default)]
    pub slow_start_after_idle: bool,
    /// Writes followed Nagle's algorithm (absent before: false, `TCP_NODELAY`).
    #[serde(default)]
    pub nagle: bool,
    /// The acknowledgement delay asked of the peer for a lone packet, in ms (ACK_FREQUENCY);
    /// absent: the peer's own (quinn's 25 ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_ack_delay_ms: Option<f64>,
}

/// What ran: the topology's kind and path, and every node of the scenario.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TopologyInfo {
    pub kind: String,
    /// Node names along the path, from the (first) client.
    pub path: Vec<String>,
    pub nodes: Vec<NodeInfo>,
}

impl TopologyInfo {
    pub fn node(&self, name: &str) -> Option<&NodeInfo> {
        self.nodes.iter().find(|n| n.name == name)
    }
}

/// One node as it ran.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NodeInfo {
    pub name: String,
    /// `client`, `relay` or `worker`, as the scenario says.
    pub role: String,
    /// What it does in this topology: `client`, `relay`, `whole`, `stage`, `star-host`,
    /// `tensor-root`, `tensor-member`, or `unused` when no request reaches it.
    pub part: String,
    /// The device with its resolved figures (workers, and clients that compute).
    pub device: Option<DeviceInfo>,
    /// The span of transformer layers it holds, `[start, end)` (workers).
    pub layers: Option<[u32; 2]>,
    /// Continuous batching limit (nodes that compute).
    pub max_batch: Option<u32>,
}

/// A device profile's resolved figures; a figure is null where it is unlimited.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DeviceInfo {
    pub name: String,
    pub memory_bytes: Option<f64>,
    /// Dense bf16 peak, FLOP/s.
    pub flops: Option<f64>,
    /// Bytes/s.
    pub mem_bandwidth: Option<f64>,
    pub efficiency_compute: f64,
    pub efficiency_memory: f64,
    pub overhead_per_layer_ms: f64,
}

impl From<&DeviceProfile> for DeviceInfo {
    fn from(d: &DeviceProfile) -> Self {
        let finite = |v: f64| v.is_finite().then_some(v);
        DeviceInfo {
            name: d.name.clone(),
            memory_bytes: finite(d.memory.get()),
            flops: finite(d.flops.get()),
            mem_bandwidth: finite(d.mem_bandwidth.get()),
            efficiency_compute: d.efficiency.compute,
            efficiency_memory: d.efficiency.memory,
            overhead_per_layer_ms: d.overhead_per_layer.get().as_secs_f64() * 1e3,
        }
    }
}

/// The model's shape.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ModelInfo {
    pub name: String,
    pub layers: u32,
    pub hidden: u32,
    pub params: f64,
    pub kv_dim: u32,
    pub vocab: u32,
    pub weight_bytes: f64,
    pub activation_bytes: f64,
    pub tied_embeddings: bool,
}

impl From<&crate::scenario::Model> for ModelInfo {
    fn from(m: &crate::scenario::Model) -> Self {
        ModelInfo {
            name: m.name.clone(),
            layers: m.layers,
            hidden: m.hidden,
            params: m.params,
            kv_dim: m.kv_dim,
            vocab: m.vocab,
            weight_bytes: m.weight_bytes,
            activation_bytes: m.activation_bytes,
            tied_embeddings: m.tied_embeddings,
        }
    }
}

/// What a result's numbers depend on (DESIGN §11): the scenario text and the traces it
/// reads, every resolved device profile's figures (wherever the profile was found), the
/// seed, every command-line override, the clock and the tool version. Two results with
/// equal identities on the virtual clock are equal, bit for bit.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Identity {
    /// SHA-256 of the scenario file's text.
    pub scenario_sha256: String,
    /// SHA-256 of each mahimahi trace's delivery opportunities, by the file as written.
    pub traces: BTreeMap<String, String>,
    /// Each resolved device profile, by where it is used: a node's name, or `[baseline]`.
    pub profiles: BTreeMap<String, ProfileIdentity>,
    /// The seed the run used (the scenario's, or `--seed`).
    pub seed: u64,
    /// Command-line overrides by flag (`duration`, `requests`, `seed`), as given.
    pub overrides: BTreeMap<String, String>,
    pub clock: String,
    pub tool_version: String,
}

/// A device profile in an identity: its name and the SHA-256 of its figures.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProfileIdentity {
    pub name: String,
    /// SHA-256 of the figures as summary.json writes them (name, description and sources
    /// left out: they do not change a number).
    pub figures_sha256: String,
}

impl ProfileIdentity {
    fn of(d: &DeviceProfile) -> Self {
        let mut figures = DeviceInfo::from(d);
        figures.name = String::new();
        // serde_json writes a struct's fields in declaration order and floats in their
        // shortest round-trip form: a canonical text of the figures.
        let text = serde_json::to_string(&figures).unwrap_or_default();
        ProfileIdentity {
            name: d.name.clone(),
            figures_sha256: sha256_hex(text.as_bytes()),
        }
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn short(h: &str) -> &str {
    h.get(..12).unwrap_or(h)
}

impl Identity {
    /// The identity of a run of `scenario` (overrides applied) on `clock`.
    pub fn of(scenario: &Scenario, clock: &str) -> Identity {
        let mut traces = BTreeMap::new();
        for l in &scenario.links {
            let params = std::iter::once(&l.params).chain(l.changes.iter().map(|c| &c.params));
            for t in params.filter_map(|p| p.trace.as_deref()) {
                let bytes: Vec<u8> = t
                    .opportunities
                    .iter()
                    .flat_map(|o| o.to_le_bytes())
                    .collect();
                traces.insert(t.file.clone(), sha256_hex(&bytes));
            }
        }
        let mut profiles: BTreeMap<String, ProfileIdentity> = scenario
            .nodes
            .iter()
            .filter_map(|n| Some((n.name.clone(), ProfileIdentity::of(n.device.as_ref()?))))
            .collect();
        if let Some(b) = &scenario.baseline {
            profiles.insert("[baseline]".into(), ProfileIdentity::of(&b.device));
        }
        Identity {
            scenario_sha256: scenario.text_sha256.clone(),
            traces,
            profiles,
            seed: scenario.seed,
            overrides: scenario.overrides.clone(),
            clock: clock.into(),
            tool_version: env!("CARGO_PKG_VERSION").into(),
        }
    }

    /// The parts in which `new` differs from `self` (the base), each said for a person;
    /// empty when the two are the same.
    pub fn differences(&self, new: &Identity) -> Vec<String> {
        let mut out = Vec::new();
        let (b, n) = (self, new);
        if b.scenario_sha256 != n.scenario_sha256 {
            out.push(format!(
                "the scenario text differs (sha256 {} in the base, {} in the new run)",
                short(&b.scenario_sha256),
                short(&n.scenario_sha256)
            ));
        }
        out.extend(map_differences("trace", &b.traces, &n.traces, |h| {
            format!("sha256 {}", short(h))
        }));
        out.extend(map_differences(
            "the device profile of",
            &b.profiles,
            &n.profiles,
            |p| format!("{}, figures sha256 {}", p.name, short(&p.figures_sha256)),
        ));
        if b.seed != n.seed {
            out.push(format!(
                "the seed differs ({} in the base, {} in the new run)",
                b.seed, n.seed
            ));
        }
        if b.overrides != n.overrides {
            out.push(format!(
                "the command-line overrides differ ({} in the base, {} in the new run)",
                overrides_text(&b.overrides),
                overrides_text(&n.overrides)
            ));
        }
        if b.clock != n.clock {
            out.push(format!(
                "the clocks differ ({} in the base, {} in the new run): virtual time leaves out the harness's own costs, so the two do not measure the same thing",
                b.clock, n.clock
            ));
        }
        if b.tool_version != n.tool_version {
            out.push(format!(
                "the tool versions differ (inferlat {} in the base, {} in the new run)",
                b.tool_version, n.tool_version
            ));
        }
        out
    }
}

fn overrides_text(o: &BTreeMap<String, String>) -> String {
    if o.is_empty() {
        return "none".into();
    }
    o.iter()
        .map(|(k, v)| format!("--{k} {v}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The keys of two maps whose values differ, or that only one has.
fn map_differences<V: PartialEq>(
    what: &str,
    base: &BTreeMap<String, V>,
    new: &BTreeMap<String, V>,
    show: impl Fn(&V) -> String,
) -> Vec<String> {
    let mut keys: Vec<&String> = base.keys().chain(new.keys()).collect();
    keys.sort();
    keys.dedup();
    let side = |v: Option<&V>| v.map_or_else(|| "absent".to_string(), &show);
    keys.into_iter()
        .filter(|k| base.get(*k) != new.get(*k))
        .map(|k| {
            format!(
                "{what} {k} differs ({} in the base, {} in the new run)",
                side(base.get(k)),
                side(new.get(k))
            )
        })
        .collect()
}

/// What ran, from the plan and the scenario. The one function that maps the plan's and
/// the scenario's node types to summary.json's.
pub fn what_ran(scenario: &Scenario, plan: &Plan) -> TopologyInfo {
    let nodes = scenario
        .nodes
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let planned = plan.nodes.iter().find(|p| p.index == i);
            let client = plan.clients.iter().find(|c| c.index == i);
            let part = match (planned, client) {
                (Some(p), _) => Part::name(p.part),
                (None, Some(_)) => "client",
                (None, None) => "unused",
            };
            let computes = planned.is_some_and(|p| p.stage.is_some() || p.head.is_some())
                || client.is_some_and(|c| c.head.is_some());
            NodeInfo {
                name: n.name.clone(),
                role: n.role.to_string(),
                part: part.into(),
                device: n.device.as_ref().map(DeviceInfo::from),
                layers: (n.role == crate::scenario::Role::Worker)
                    .then_some([n.layers.start, n.layers.end]),
                max_batch: computes.then_some(planned.map_or(n.max_batch, |p| p.max_batch)),
            }
        })
        .collect();
    TopologyInfo {
        kind: plan.kind.to_string(),
        path: plan.path.clone(),
        nodes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every summary.json in the folders under `dir`, parsed.
    fn summaries(dir: &str) -> Vec<Summary> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
        let mut out = Vec::new();
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let p = e.path().join("summary.json");
            let Ok(text) = std::fs::read_to_string(&p) else {
                continue;
            };
            out.push(Summary::parse(&text).unwrap_or_else(|e| panic!("{}: {e}", p.display())));
        }
        assert!(!out.is_empty());
        out
    }

    #[test]
    fn every_committed_baseline_reads_and_records_what_ran() {
        for s in summaries("results/baselines/ci") {
            assert_eq!(s.schema_version, SCHEMA_VERSION);
            assert!(s.topology.is_some() && s.model.is_some() && s.identity.is_some());
        }
    }

    #[test]
    fn version_1_folders_still_read() {
        for s in summaries("tests/fixtures/v1") {
            assert_eq!(s.schema_version, 1);
            assert!(s.topology.is_none() && s.model.is_none() && s.identity.is_none());
        }
    }

    #[test]
    fn an_unknown_version_is_refused() {
        let e = Summary::parse(r#"{"schema_version": 9}"#).unwrap_err();
        assert!(e.to_string().contains("schema_version 9"), "{e}");
    }
}

//! Scenario format v1 (DESIGN §5): the TOML schema, unit parsing, validation with
//! file:line:column spans, model presets and device profiles.
//!
//! [`load`] reads a file and returns a checked [`Scenario`] or every problem found,
//! each located in the source. Nothing here does I/O beyond reading the scenario and the
//! profiles and mahimahi traces it names.

pub mod diagnostic;
pub mod fault;
mod file;
pub mod limits;
pub mod link;
pub mod profile;
pub mod testing;
mod validate;

pub use crate::compute::EngineConfig;
pub use crate::compute::model::{self, Model};
use crate::format::duration_str;
pub use crate::net::params::{Congestion, DEFAULT_IDLE_TIMEOUT, Quic};
pub use crate::topology::pattern::Pattern;
pub use crate::topology::{HedgeAfter, Hops, Role, TopologyKind};
pub use crate::units;
use diagnostic::{Diagnostic, Problem, Source};
pub use link::{
    DEFAULT_QUEUE_BYTES, JitterDist, LinkChange, LinkDef, LinkParams, LinkPreset, Loss, Queue,
    RateTrace, Reorder, WIRE_OVERHEAD,
};
pub use profile::{DeviceProfile, ProfileLibrary};
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;
pub use validate::{phase_too_long, too_many_requests};

/// A scenario that parsed and passed validation.
#[derive(Clone, Debug)]
pub struct Scenario {
    pub name: String,
    pub description: Option<String>,
    pub seed: u64,
    pub file: PathBuf,
    /// SHA-256 of the file's bytes (and of the traces it reads), in hex.
    pub sha256: String,
    /// SHA-256 of the file's text alone, in hex.
    pub text_sha256: String,
    /// The command-line overrides applied ([`Scenario::apply`]), by flag, as given: a
    /// result's identity covers them.
    pub overrides: BTreeMap<String, String>,
    pub model: Model,
    pub workload: Workload,
    pub nodes: Vec<Node>,
    /// Directed links: a `between` link appears once in each direction.
    pub links: Vec<LinkDef>,
    /// The `[[port]]`s, in file order; each link direction on one holds it in its params.
    pub ports: Vec<std::sync::Arc<crate::net::port::PortDef>>,
    pub topology: Topology,
    pub baseline: Option<Baseline>,
    /// QUIC settings the scenario sets; the rest keep inferlat's documented defaults.
    pub quic: Quic,
    pub slo: Slo,
    pub reference: Option<Reference>,
    /// `[[fault]]`s in file order (docs/faults.md).
    pub faults: Vec<fault::Fault>,
}

/// A command-line override of a scenario's value.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Override {
    /// `--duration`: the measured phase's length.
    Duration(Duration),
    /// `--requests`: the measured phase's number of requests.
    Requests(u64),
    /// `--seed`.
    Seed(u64),
}

impl Scenario {
    /// Applies a command-line override and records it.
    pub fn apply(&mut self, o: Override) {
        let (flag, value) = match o {
            Override::Duration(d) => {
                self.workload.measure = Extent::Duration(d);
                ("duration", units::format_duration(d))
            }
            Override::Requests(n) => {
                self.workload.measure = Extent::Requests(n);
                ("requests", n.to_string())
            }
            Override::Seed(s) => {
                self.seed = s;
                ("seed", s.to_string())
            }
        };
        self.overrides.insert(flag.into(), value);
    }

    pub fn node_index(&self, name: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.name == name)
    }

    /// The link that carries datagrams from `from` to `to`, if there is one.
    pub fn link(&self, from: usize, to: usize) -> Option<&LinkDef> {
        self.links.iter().find(|l| l.from == from && l.to == to)
    }
}

/// The most tokens a request's prompt or answer may have: the workload's limit, which a
/// drawn count is clamped to, so a wide lognormal cannot ask for an absurd request.
pub const MAX_TOKENS: u32 = 1 << 20;

/// How many tokens a request has: fixed or drawn from a distribution.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "dist", rename_all = "lowercase")]
pub enum TokenCount {
    Fixed { value: u32 },
    Uniform { min: u32, max: u32 },
    Lognormal { median: f64, sigma: f64 },
}

impl TokenCount {
    /// The median of the distribution, rounded to a whole token (at least 1).
    pub fn median(&self) -> u32 {
        match *self {
            TokenCount::Fixed { value } => value,
            TokenCount::Uniform { min, max } => (min + max).div_ceil(2),
            TokenCount::Lognormal { median, .. } => (median.round() as u32).max(1),
        }
    }

    /// A value few draws exceed: the maximum, or a lognormal's median × e^(3σ) (its
    /// 99.87th percentile).
    pub fn high(&self) -> u32 {
        match *self {
            TokenCount::Fixed { value } => value,
            TokenCount::Uniform { max, .. } => max,
            TokenCount::Lognormal { median, sigma } => (median * (3.0 * sigma).exp())
                .round()
                .clamp(1.0, u32::MAX as f64)
                as u32,
        }
    }

    /// The smallest possible value.
    pub fn min(&self) -> u32 {
        match *self {
            TokenCount::Fixed { value } => value,
            TokenCount::Uniform { min, .. } => min,
            TokenCount::Lognormal { .. } => 1,
        }
    }
}

impl fmt::Display for TokenCount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            TokenCount::Fixed { value } => write!(f, "{value}"),
            TokenCount::Uniform { min, max } => write!(f, "uniform {min}..={max}"),
            TokenCount::Lognormal { median, sigma } => {
                write!(f, "lognormal median {median} sigma {sigma}")
            }
        }
    }
}

/// When requests arrive.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Arrival {
    /// Open loop, evenly spaced.
    Constant { rate: f64 },
    /// Open loop, exponential gaps.
    Poisson { rate: f64 },
    /// Open loop, gamma gaps with shape `burstiness` (vLLM's convention: 1 is Poisson,
    /// below 1 is burstier, above 1 is more regular).
    Gamma { rate: f64, burstiness: f64 },
    /// Closed loop: `concurrency` users, each sending its next request when the last ends.
    Closed { concurrency: u32 },
}

impl fmt::Display for Arrival {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Arrival::Constant { rate } => write!(f, "constant {rate} req/s"),
            Arrival::Poisson { rate } => write!(f, "poisson {rate} req/s"),
            Arrival::Gamma { rate, burstiness } => {
                write!(f, "gamma {rate} req/s, burstiness {burstiness}")
            }
            Arrival::Closed { concurrency } => write!(f, "closed loop, concurrency {concurrency}"),
        }
    }
}

/// How long a phase lasts: a time or a number of requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Extent {
    Duration(#[serde(with = "duration_str")] Duration),
    Requests(u64),
}

impl fmt::Display for Extent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Extent::Duration(d) => f.write_str(&units::format_duration(*d)),
            Extent::Requests(n) => write!(f, "{n} requests"),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Workload {
    pub prompt_tokens: TokenCount,
    pub output_tokens: TokenCount,
    pub arrival: Arrival,
    pub measure: Extent,
    pub warmup: Extent,
    /// The failed fraction of a run's measured requests past which the run is invalid
    /// (`[workload] max_failed`, `--max-failed`; default [`DEFAULT_MAX_FAILED`]). Not in
    /// summary.json's `scenario.workload`: it is written under `validity`.
    #[serde(skip)]
    pub max_failed: f64,
}

/// The default limit on a run's failed fraction: 5 %.
pub const DEFAULT_MAX_FAILED: f64 = 0.05;

#[derive(Clone, Debug)]
pub struct Node {
    pub name: String,
    pub role: Role,
    /// A worker's device (always set for workers).
    pub device: Option<DeviceProfile>,
    /// The transformer layers a worker holds.
    pub layers: Range<u32>,
    pub max_batch: u32,
    /// A client's share of the workload, relative to the other clients' (default 1).
    pub share: f64,
    /// A worker backed by a real engine (issue 13); none: its device's roofline model.
    pub engine: Option<EngineConfig>,
    /// `transport`: the behaviour of the connection directions it sends on, over
    /// `[quic]`'s, unless the link states its own.
    pub transport: Option<std::sync::Arc<Quic>>,
    /// `send_cost` and `recv_cost`: the node's software time per message (none by default).
    pub software: SoftwareCost,
}

/// The software time of one message on a node: `fixed` plus `per_byte` times the frame's
/// bytes on the wire (header included).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct MessageCost {
    pub fixed: std::time::Duration,
    /// Seconds per byte.
    pub per_byte: f64,
}

impl MessageCost {
    /// The time of a frame of `bytes` bytes, rounded to the nanosecond.
    pub fn of(&self, bytes: u64) -> std::time::Duration {
        self.fixed
            + std::time::Duration::from_nanos((self.per_byte * 1e9 * bytes as f64).round() as u64)
    }

    pub fn is_zero(&self) -> bool {
        self.fixed.is_zero() && self.per_byte == 0.0
    }
}

/// A node's `send_cost` and `recv_cost` (docs/scenario-format.md): spent on the node's
/// clock at each frame it sends (before the frame is written) and receives (after it is
/// read, before it is acted on).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct SoftwareCost {
    pub send: MessageCost,
    pub recv: MessageCost,
}

impl SoftwareCost {
    pub fn is_zero(&self) -> bool {
        self.send.is_zero() && self.recv.is_zero()
    }
}

#[derive(Clone, Debug)]
pub struct Topology {
    pub kind: TopologyKind,
    /// Node indices, starting at a client.
    pub path: Vec<usize>,
    pub hops: Hops,
    /// The client nodes that send requests, each over the route `path` takes from its first
    /// client (default: `path[0]` alone).
    pub clients: Vec<usize>,
    /// Hedged topologies: when a further copy of a request is sent.
    pub hedge_after: HedgeAfter,
    /// Tensor topologies: the synchronisations of a step and the root-only work.
    pub pattern: Pattern,
    /// Star topologies: the host's calls to each remote stage per step.
    pub star: crate::topology::rpc::StarPattern,
}

#[derive(Clone, Debug)]
pub struct Baseline {
    /// The device (an ideal stand-in when a real engine computes the baseline).
    pub device: DeviceProfile,
    pub count: u32,
    /// A baseline backed by a real engine, measured instead of modelled.
    pub engine: Option<EngineConfig>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Slo {
    pub ttft: Option<Duration>,
    pub tpot: Option<Duration>,
    pub itl: Option<Duration>,
    pub e2e: Option<Duration>,
}

impl Slo {
    pub fn is_empty(&self) -> bool {
        self.ttft.is_none() && self.tpot.is_none() && self.itl.is_none() && self.e2e.is_none()
    }
}

/// A published value: a latency or a throughput.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum RefValue {
    Latency(Duration),
    Number(f64),
}

#[derive(Clone, Debug)]
pub struct Reference {
    pub source: String,
    /// `<metric>_<percentile>` (like `tpot_p50`) or `output_tokens_per_s` / `requests_per_s`.
    pub metric: String,
    pub value: RefValue,
    pub tolerance: f64,
    /// A figure of the scenario or of its profiles was calibrated on this value: meeting it
    /// shows nothing, and it is never called reproduced.
    pub fitted: bool,
    /// The run the figure describes.
    pub run: RefRun,
    /// The scenario author's explanation of a miss (or a match), printed with the check.
    pub note: Option<String>,
}

/// The run a `[reference]` figure is compared with.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RefRun {
    /// The scenario's topology, network included (the default).
    #[default]
    Topology,
    /// The same devices with no network between them: a published single-machine figure
    /// of the topology's own device.
    Colocated,
    /// The `[baseline]` device, local.
    Baseline,
}

impl RefRun {
    pub const ALL: [RefRun; 3] = [RefRun::Topology, RefRun::Colocated, RefRun::Baseline];

    pub fn name(self) -> &'static str {
        match self {
            RefRun::Topology => "topology",
            RefRun::Colocated => "colocated",
            RefRun::Baseline => "baseline",
        }
    }
}

/// The metrics a reference may name.
pub const REFERENCE_LATENCY_METRICS: &[&str] = &["ttft", "tpot", "itl", "e2e", "service"];
pub const REFERENCE_PERCENTILES: &[&str] = &["min", "mean", "p50", "p90", "p99", "p999", "max"];
pub const REFERENCE_THROUGHPUT_METRICS: &[&str] = &["output_tokens_per_s", "requests_per_s"];

/// Why a scenario could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    #[error("{}: cannot read the scenario file: {message}", path.display())]
    Read { path: PathBuf, message: String },
    #[error("{}: not a text file: byte {offset} {why} (a scenario is a TOML text file)", path.display())]
    NotText {
        path: PathBuf,
        offset: usize,
        why: &'static str,
    },
    #[error("{}", render(diagnostics))]
    Invalid { diagnostics: Vec<Diagnostic> },
}

fn render(diagnostics: &[Diagnostic]) -> String {
    let mut out = String::new();
    for (i, d) in diagnostics.iter().enumerate() {
        if i > 0 {
            out.push_str("\n\n");
        }
        out.push_str(&d.to_string());
    }
    if diagnostics.len() > 1 {
        out.push_str(&format!("\n\n{} problems found", diagnostics.len()));
    }
    out
}

/// Reads, parses and validates a scenario file, with profiles looked up near it.
pub fn load(path: &Path) -> Result<Scenario, ScenarioError> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) => {
            let message = match e.kind() {
                std::io::ErrorKind::NotFound => "no such file".to_string(),
                std::io::ErrorKind::IsADirectory => "it is a directory, not a file".to_string(),
                _ => e.to_string(),
            };
            return Err(ScenarioError::Read {
                path: path.to_path_buf(),
                message,
            });
        }
    };
    let text = std::str::from_utf8(&bytes).map_err(|e| ScenarioError::NotText {
        path: path.to_path_buf(),
        offset: e.valid_up_to(),
        why: "is not UTF-8",
    })?;
    if let Some(offset) = text.find('\0') {
        return Err(ScenarioError::NotText {
            path: path.to_path_buf(),
            offset,
            why: "is a NUL byte",
        });
    }
    parse(path, text, &ProfileLibrary::for_scenario(path))
}

/// Parses and validates scenario text; `file` names it in errors.
pub fn parse(
    file: &Path,
    text: &str,
    profiles: &ProfileLibrary,
) -> Result<Scenario, ScenarioError> {
    let source = Source::new(file, text);
    if text.trim().is_empty() {
        let message = "the file is empty: a scenario needs `name`, [model], [workload] and [[node]] tables (see scenarios/quickstart.toml)";
        return Err(ScenarioError::Invalid {
            diagnostics: vec![source.diagnostic(None, String::new(), message.into())],
        });
    }
    // One parse: the tree the spans come from is the one deserialized.
    let raw: file::RawScenario = match source.deserialize() {
        Ok(r) => r,
        Err(e) => {
            return Err(ScenarioError::Invalid {
                diagnostics: vec![source.locate_toml_error(&e)],
            });
        }
    };
    let sha256 = hex(&Sha256::digest(text.as_bytes()));
    let dir = file.parent().unwrap_or(Path::new("."));
    match validate::validate(raw, profiles, dir) {
        Ok(mut s) => {
            s.file = file.to_path_buf();
            s.text_sha256 = sha256.clone();
            s.sha256 = with_traces(sha256, &s);
            Ok(s)
        }
        Err(problems) => Err(ScenarioError::Invalid {
            diagnostics: problems.iter().map(|p| source.locate(p)).collect(),
        }),
    }
}

/// The scenario's hash, extended with the mahimahi traces it reads: a changed trace is a
/// changed scenario.
fn with_traces(sha256: String, s: &Scenario) -> String {
    let mut traces: Vec<&RateTrace> = s
        .links
        .iter()
        .flat_map(|l| std::iter::once(&l.params).chain(l.changes.iter().map(|c| &c.params)))
        .filter_map(|p| p.trace.as_deref())
        .collect();
    if traces.is_empty() {
        return sha256;
    }
    traces.sort_by(|a, b| a.file.cmp(&b.file));
    traces.dedup_by(|a, b| a.file == b.file);
    let mut h = Sha256::new();
    h.update(sha256.as_bytes());
    for t in traces {
        h.update(t.file.as_bytes());
        for o in &t.opportunities {
            h.update(o.to_le_bytes());
        }
    }
    hex(&h.finalize())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Problems found while validating, with their field paths.
pub(crate) type Problems = Vec<Problem>;

/// Names of model presets, for `inferlat list`.
pub fn preset_names() -> Vec<&'static str> {
    model::Preset::names()
}

/// A short description of each model preset, for `inferlat list`.
pub fn preset_summaries() -> BTreeMap<&'static str, String> {
    model::PRESETS
        .iter()
        .map(|p| {
            (
                p.name,
                format!(
                    "{} layers, hidden {}, {:.1}B params, vocab {}",
                    p.layers,
                    p.hidden,
                    p.params / 1e9,
                    p.vocab
                ),
            )
        })
        .collect()
}

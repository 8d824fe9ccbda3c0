//! The scenario file as written (serde, `deny_unknown_fields`), and its validation into
//! a [`Scenario`].

use super::diagnostic::{FieldPath, Problem};
use super::model::{Model, Preset};
use super::profile::{DeviceProfile, ProfileLibrary};
use super::units::{BitRate, Bytes, Dur, Fraction};
use super::*;
use crate::plan::schedule;
use serde::{Deserialize, Deserializer, de};
use std::collections::HashSet;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawScenario {
    name: String,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    seed: u64,
    model: RawModel,
    workload: RawWorkload,
    #[serde(default, rename = "node")]
    nodes: Vec<RawNode>,
    #[serde(default, rename = "link")]
    links: Vec<RawLink>,
    #[serde(default)]
    topology: Option<RawTopology>,
    #[serde(default)]
    baseline: Option<RawBaseline>,
    #[serde(default)]
    slo: Option<RawSlo>,
    #[serde(default)]
    reference: Option<RawReference>,
    #[serde(default)]
    quic: Option<RawQuic>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawQuic {
    initial_rtt: Option<Dur>,
    initial_window: Option<Bytes>,
    stream_receive_window: Option<Bytes>,
    receive_window: Option<Bytes>,
    idle_timeout: Option<Dur>,
    keep_alive: Option<Dur>,
    congestion: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawModel {
    preset: Option<String>,
    layers: Option<u32>,
    hidden: Option<u32>,
    params: Option<Params>,
    kv_dim: Option<u32>,
    vocab: Option<u32>,
    weight_bytes: Option<Precision>,
    activation_bytes: Option<Precision>,
    tied_embeddings: Option<bool>,
}

/// A parameter count: a number, or a string like `"6.7B"`.
struct Params(f64);

impl<'de> Deserialize<'de> for Params {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = toml::Value::deserialize(d)?;
        let n = match &v {
            toml::Value::Integer(i) => *i as f64,
            toml::Value::Float(f) => *f,
            toml::Value::String(s) => {
                let t = s.trim();
                let (num, scale) = match t.chars().last() {
                    Some('B') => (&t[..t.len() - 1], 1e9),
                    Some('M') => (&t[..t.len() - 1], 1e6),
                    Some('T') => (&t[..t.len() - 1], 1e12),
                    _ => (t, 1.0),
                };
                num.trim().parse::<f64>().map(|n| n * scale).map_err(|_| {
                    de::Error::custom(format!(
                        "invalid parameter count \"{s}\": expected a number like 6.7e9 or \"6.7B\""
                    ))
                })?
            }
            other => {
                return Err(de::Error::custom(format!(
                    "invalid parameter count {other}: expected a number like 6.7e9 or \"6.7B\""
                )));
            }
        };
        if !n.is_finite() || n <= 0.0 {
            return Err(de::Error::custom(
                "parameter count must be greater than zero",
            ));
        }
        Ok(Params(n))
    }
}

/// Bytes per element: a number, or a type name like `"bf16"`.
struct Precision(f64);

impl<'de> Deserialize<'de> for Precision {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        const NAMES: &[(&str, f64)] = &[
            ("fp32", 4.0),
            ("bf16", 2.0),
            ("fp16", 2.0),
            ("fp8", 1.0),
            ("int8", 1.0),
            ("q8", 1.0),
            ("int4", 0.5),
            ("q4", 0.5),
        ];
        let v = toml::Value::deserialize(d)?;
        let n = match &v {
            toml::Value::Integer(i) => *i as f64,
            toml::Value::Float(f) => *f,
            toml::Value::String(s) => NAMES.iter().find(|(n, _)| *n == s.as_str()).map(|(_, b)| *b).ok_or_else(|| {
                de::Error::custom(format!(
                    "unknown precision \"{s}\"; use bytes per element (2, 1, 0.5) or one of: {}",
                    NAMES.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
                ))
            })?,
            other => return Err(de::Error::custom(format!("invalid bytes per element {other}: expected 2, 1, 0.5 or \"bf16\""))),
        };
        if !(n > 0.0 && n <= 8.0) {
            return Err(de::Error::custom(format!(
                "bytes per element must be in (0, 8], got {n}"
            )));
        }
        Ok(Precision(n))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWorkload {
    prompt_tokens: RawTokens,
    output_tokens: RawTokens,
    arrival: RawArrival,
    duration: Option<Dur>,
    requests: Option<u64>,
    warmup: Option<Dur>,
    warmup_requests: Option<u64>,
}

/// Reads a TOML inline table field by field and rejects leftovers.
struct TableReader {
    what: &'static str,
    table: toml::Table,
    known: Vec<&'static str>,
}

impl TableReader {
    fn new(what: &'static str, table: toml::Table) -> Self {
        TableReader {
            what,
            table,
            known: Vec::new(),
        }
    }

    fn take<T: serde::de::DeserializeOwned>(
        &mut self,
        key: &'static str,
    ) -> Result<Option<T>, String> {
        self.known.push(key);
        match self.table.remove(key) {
            None => Ok(None),
            Some(v) => v
                .try_into::<T>()
                .map(Some)
                .map_err(|e| format!("{}.{key}: {}", self.what, e.message().trim())),
        }
    }

    fn need<T: serde::de::DeserializeOwned>(&mut self, key: &'static str) -> Result<T, String> {
        self.take(key)?
            .ok_or_else(|| format!("{} needs `{key}`", self.what))
    }

    fn finish(self) -> Result<(), String> {
        if let Some(k) = self.table.keys().next() {
            return Err(format!(
                "unknown field `{k}` in {}; expected one of: {}",
                self.what,
                self.known.join(", ")
            ));
        }
        Ok(())
    }
}

struct RawTokens(TokenCount);

impl<'de> Deserialize<'de> for RawTokens {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        const HELP: &str = "expected a token count like 128, { dist = \"uniform\", min = 64, max = 256 } or { dist = \"lognormal\", median = 128, sigma = 0.5 }";
        let v = toml::Value::deserialize(d)?;
        let count = match v {
            toml::Value::Integer(n) => {
                if n < 1 || n > schedule::MAX_TOKENS as i64 {
                    return Err(de::Error::custom(format!(
                        "token count must be between 1 and {}, got {n}",
                        schedule::MAX_TOKENS
                    )));
                }
                TokenCount::Fixed { value: n as u32 }
            }
            toml::Value::Table(t) => {
                let mut r = TableReader::new("token distribution", t);
                let dist: String = r.need("dist").map_err(de::Error::custom)?;
                let count = match dist.as_str() {
                    "uniform" => {
                        let min: u32 = r.need("min").map_err(de::Error::custom)?;
                        let max: u32 = r.need("max").map_err(de::Error::custom)?;
                        if min < 1 || max < min || max > schedule::MAX_TOKENS {
                            return Err(de::Error::custom(format!(
                                "uniform token counts need 1 <= min <= max <= 1048576, got min = {min}, max = {max}"
                            )));
                        }
                        TokenCount::Uniform { min, max }
                    }
                    "lognormal" => {
                        let median: f64 = r.need("median").map_err(de::Error::custom)?;
                        let sigma: f64 = r.need("sigma").map_err(de::Error::custom)?;
                        if !(median >= 1.0
                            && median <= schedule::MAX_TOKENS as f64
                            && (0.0..=5.0).contains(&sigma))
                        {
                            return Err(de::Error::custom(format!(
                                "lognormal token counts need 1 <= median <= 1048576 and 0 <= sigma <= 5, got median = {median}, sigma = {sigma}"
                            )));
                        }
                        TokenCount::Lognormal { median, sigma }
                    }
                    other => {
                        return Err(de::Error::custom(format!(
                            "unknown token distribution \"{other}\"; valid: uniform, lognormal"
                        )));
                    }
                };
                r.finish().map_err(de::Error::custom)?;
                count
            }
            other => {
                return Err(de::Error::custom(format!(
                    "invalid token count {other}: {HELP}"
                )));
            }
        };
        Ok(RawTokens(count))
    }
}

struct RawArrival(Arrival);

impl<'de> Deserialize<'de> for RawArrival {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = toml::Value::deserialize(d)?;
        let toml::Value::Table(t) = v else {
            return Err(de::Error::custom(
                "arrival must be a table like { kind = \"poisson\", rate = 2.0 }; kinds: constant, poisson, gamma, closed",
            ));
        };
        let mut r = TableReader::new("arrival", t);
        let kind: String = r.need("kind").map_err(de::Error::custom)?;
        let rate = |r: &mut TableReader| -> Result<f64, String> {
            let rate: f64 = r.need("rate")?;
            if !(rate > 0.0 && rate.is_finite() && rate <= 1e6) {
                return Err(format!(
                    "arrival rate must be a number of requests/s in (0, 1e6], got {rate}"
                ));
            }
            Ok(rate)
        };
        let arrival = match kind.as_str() {
            "constant" => Arrival::Constant {
                rate: rate(&mut r).map_err(de::Error::custom)?,
            },
            "poisson" => Arrival::Poisson {
                rate: rate(&mut r).map_err(de::Error::custom)?,
            },
            "gamma" => {
                let rate = rate(&mut r).map_err(de::Error::custom)?;
                let burstiness: f64 = r.need("burstiness").map_err(de::Error::custom)?;
                if !(burstiness > 0.0 && burstiness.is_finite()) {
                    return Err(de::Error::custom(format!(
                        "burstiness must be greater than zero, got {burstiness}"
                    )));
                }
                Arrival::Gamma { rate, burstiness }
            }
            "closed" => {
                let concurrency: i64 = r.need("concurrency").map_err(de::Error::custom)?;
                if !(1..=100_000).contains(&concurrency) {
                    return Err(de::Error::custom(format!(
                        "concurrency must be in 1..=100000, got {concurrency}"
                    )));
                }
                Arrival::Closed {
                    concurrency: concurrency as u32,
                }
            }
            other => {
                return Err(de::Error::custom(format!(
                    "unknown arrival kind \"{other}\"; valid: constant, poisson, gamma, closed"
                )));
            }
        };
        r.finish().map_err(de::Error::custom)?;
        Ok(RawArrival(arrival))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNode {
    name: String,
    role: Role,
    device: Option<RawDevice>,
    layers: Option<LayerSpan>,
    max_batch: Option<u32>,
    share: Option<f64>,
}

impl<'de> Deserialize<'de> for Role {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        match s.as_str() {
            "client" => Ok(Role::Client),
            "relay" => Ok(Role::Relay),
            "worker" => Ok(Role::Worker),
            other => Err(de::Error::custom(format!(
                "unknown role \"{other}\"; valid: client, relay, worker"
            ))),
        }
    }
}

/// A profile name or an inline profile table.
enum RawDevice {
    Named(String),
    Inline(Box<DeviceProfile>),
}

impl<'de> Deserialize<'de> for RawDevice {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match toml::Value::deserialize(d)? {
            toml::Value::String(s) => Ok(RawDevice::Named(s)),
            v @ toml::Value::Table(_) => v
                .try_into::<DeviceProfile>()
                .map(|p| RawDevice::Inline(Box::new(p)))
                .map_err(|e| de::Error::custom(format!("inline device: {}", e.message().trim()))),
            other => Err(de::Error::custom(format!(
                "invalid device {other}: expected a profile name like \"a100-80g\" or an inline table with memory, flops, mem_bandwidth, efficiency"
            ))),
        }
    }
}

/// `"0..40"`: layers 0 to 39. `"0..0"` (no layers) parses; see [`validate`].
struct LayerSpan(Range<u32>);

impl<'de> Deserialize<'de> for LayerSpan {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        let bad = || {
            de::Error::custom(format!(
                "invalid layer span \"{s}\": expected \"start..end\" like \"0..40\" (end exclusive)"
            ))
        };
        let (a, b) = s.split_once("..").ok_or_else(bad)?;
        let a: u32 = a.trim().parse().map_err(|_| bad())?;
        let b: u32 = b.trim().parse().map_err(|_| bad())?;
        if b < a {
            return Err(de::Error::custom(format!(
                "layer span \"{s}\" is empty: end must be greater than start"
            )));
        }
        // An empty span ("0..0") is valid only for a star's host, which validation checks
        // once the topology is known.
        Ok(LayerSpan(a..b))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLink {
    between: Option<Vec<String>>,
    from: Option<String>,
    to: Option<String>,
    preset: Option<String>,
    rtt: Option<Dur>,
    delay: Option<Dur>,
    jitter: Option<Dur>,
    jitter_distribution: Option<String>,
    jitter_correlation: Option<Fraction>,
    fifo: Option<bool>,
    reorder: Option<Fraction>,
    reorder_correlation: Option<Fraction>,
    reorder_gap: Option<u32>,
    bandwidth: Option<BitRate>,
    trace: Option<String>,
    loss: Option<RawLoss>,
    duplicate: Option<Fraction>,
    mtu: Option<u32>,
    queue: Option<RawQueue>,
    /// Only in a `[[link.change]]`: when it applies.
    at: Option<Dur>,
    #[serde(default)]
    change: Vec<RawLink>,
}

/// A queue size: bytes (`"256KiB"`) or packets (`"25 packets"`).
struct RawQueue(Queue);

impl<'de> Deserialize<'de> for RawQueue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        let t = s.trim();
        for unit in ["packets", "packet", "pkts"] {
            if let Some(n) = t.strip_suffix(unit) {
                return match n.trim().parse::<u32>() {
                    Ok(n) if n > 0 => Ok(RawQueue(Queue::Packets(n))),
                    _ => Err(de::Error::custom(format!(
                        "invalid queue \"{s}\": a packet count is a whole number above zero, like \"25 packets\""
                    ))),
                };
            }
        }
        Bytes::parse(t)
            .map(|b| RawQueue(Queue::Bytes(b.as_u64())))
            .map_err(|e| {
                de::Error::custom(format!(
                    "invalid queue: {e}; or a packet count like \"25 packets\""
                ))
            })
    }
}

struct RawLoss(Loss);

impl<'de> Deserialize<'de> for RawLoss {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let frac = |v: toml::Value, what: &str| -> Result<f64, String> {
            match v {
                toml::Value::String(s) => Fraction::parse(&s)
                    .map(|f| f.get())
                    .map_err(|e| format!("{what}: {e}")),
                other => Err(format!(
                    "{what}: expected a percentage like \"1%\", got {other}"
                )),
            }
        };
        let loss = match toml::Value::deserialize(d)? {
            toml::Value::String(s) => Loss::Bernoulli {
                p: Fraction::parse(&s).map_err(de::Error::custom)?.get(),
                correlation: 0.0,
            },
            toml::Value::Table(t) => {
                let mut r = TableReader::new("loss", t);
                let model: String = r.need("model").map_err(de::Error::custom)?;
                let get = |r: &mut TableReader,
                           k: &'static str,
                           default: Option<f64>|
                 -> Result<f64, D::Error> {
                    match r.take::<toml::Value>(k).map_err(de::Error::custom)? {
                        Some(v) => frac(v, k).map_err(de::Error::custom),
                        None => default.ok_or_else(|| {
                            de::Error::custom(format!("loss model \"{model}\" needs `{k}`"))
                        }),
                    }
                };
                let loss = match model.as_str() {
                    "bernoulli" => Loss::Bernoulli {
                        p: get(&mut r, "p", None)?,
                        correlation: get(&mut r, "correlation", Some(0.0))?,
                    },
                    "gilbert-elliott" => Loss::GilbertElliott {
                        p: get(&mut r, "p", None)?,
                        r: get(&mut r, "r", None)?,
                        loss_good: get(&mut r, "loss_good", Some(0.0))?,
                        loss_bad: get(&mut r, "loss_bad", Some(1.0))?,
                    },
                    other => {
                        return Err(de::Error::custom(format!(
                            "unknown loss model \"{other}\"; valid: bernoulli, gilbert-elliott"
                        )));
                    }
                };
                r.finish().map_err(de::Error::custom)?;
                loss
            }
            other => {
                return Err(de::Error::custom(format!(
                    "invalid loss {other}: expected a percentage like \"0.1%\" or {{ model = \"gilbert-elliott\", p = \"1%\", r = \"30%\" }}"
                )));
            }
        };
        Ok(RawLoss(loss))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTopology {
    kind: TopologyKind,
    path: Option<Vec<String>>,
    hops: Option<Hops>,
    clients: Option<Vec<String>>,
    hedge_after: Option<RawHedgeAfter>,
}

/// `"30ms"` (a delay) or `"p95"` (a percentile of recent times to first token).
struct RawHedgeAfter(HedgeAfter);

impl RawHedgeAfter {
    const HELP: &'static str = "hedge_after is a duration like \"30ms\" or a percentile of recent times to first token like \"p95\" or \"p99.9\"";

    fn parse(s: &str) -> Result<Self, String> {
        let t = s.trim();
        if let Some(q) = t.strip_prefix('p') {
            return match q.trim().parse::<f64>() {
                Ok(q) if q > 0.0 && q < 100.0 => Ok(RawHedgeAfter(HedgeAfter::Percentile(q))),
                Ok(_) => Err(format!(
                    "invalid hedge_after \"{s}\": a percentile lies strictly between 0 and 100, like \"p95\" or \"p99.9\""
                )),
                Err(_) => Err(format!("invalid hedge_after \"{s}\": {}", Self::HELP)),
            };
        }
        Dur::parse(t)
            .map(|d| RawHedgeAfter(HedgeAfter::Delay(d.get())))
            .map_err(|e| format!("{e}; {}", Self::HELP))
    }
}

impl<'de> Deserialize<'de> for RawHedgeAfter {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match toml::Value::deserialize(d)? {
            toml::Value::String(s) => Self::parse(&s).map_err(de::Error::custom),
            other => Err(de::Error::custom(format!(
                "invalid hedge_after {other}: {}",
                Self::HELP
            ))),
        }
    }
}

impl<'de> Deserialize<'de> for TopologyKind {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Ok(match s.as_str() {
            "direct" => TopologyKind::Direct,
            "relay" => TopologyKind::Relay,
            "pipeline" => TopologyKind::Pipeline,
            "tensor" => TopologyKind::Tensor,
            "star" => TopologyKind::Star,
            "ring" => TopologyKind::Ring,
            "hedged" => TopologyKind::Hedged,
            other => {
                return Err(de::Error::custom(format!(
                    "unknown topology kind \"{other}\"; valid: direct, relay, pipeline, tensor, star, ring, hedged"
                )));
            }
        })
    }
}

impl<'de> Deserialize<'de> for Hops {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        match s.as_str() {
            "client-relayed" => Ok(Hops::ClientRelayed),
            "server-to-server" => Ok(Hops::ServerToServer),
            other => Err(de::Error::custom(format!(
                "unknown hops \"{other}\"; valid: client-relayed, server-to-server"
            ))),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBaseline {
    device: RawDevice,
    count: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSlo {
    ttft: Option<Dur>,
    tpot: Option<Dur>,
    itl: Option<Dur>,
    e2e: Option<Dur>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawReference {
    source: String,
    metric: String,
    value: toml::Value,
    tolerance: Fraction,
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

/// Turns a parsed file into a checked scenario, collecting every problem.
pub fn validate(
    raw: RawScenario,
    profiles: &ProfileLibrary,
    base_dir: &std::path::Path,
) -> Result<Scenario, Problems> {
    let mut problems = Problems::new();
    let root = FieldPath::root();
    let found = std::cell::Cell::new(0usize);
    let mut err = |path: FieldPath, msg: String| {
        found.set(found.get() + 1);
        problems.push(Problem::new(path, msg));
    };

    if !valid_name(&raw.name) {
        err(
            root.key("name"),
            format!(
                "invalid name \"{}\": use 1-64 characters of a-z, 0-9 and -",
                raw.name
            ),
        );
    }

    // Model.
    let mp = root.key("model");
    let model = {
        let m = &raw.model;
        let base = match &m.preset {
            Some(name) => match Preset::find(name) {
                Some(p) => Some(p.model()),
                None => {
                    err(
                        mp.key("preset"),
                        format!(
                            "unknown model preset \"{name}\"; presets: {}",
                            Preset::names().join(", ")
                        ),
                    );
                    None
                }
            },
            None => {
                let missing: Vec<&str> = [
                    ("layers", m.layers.is_none()),
                    ("hidden", m.hidden.is_none()),
                    ("params", m.params.is_none()),
                    ("vocab", m.vocab.is_none()),
                ]
                .iter()
                .filter(|(_, missing)| *missing)
                .map(|(k, _)| *k)
                .collect();
                if missing.is_empty() {
                    Some(Model {
                        name: "custom".into(),
                        layers: 0,
                        hidden: 0,
                        params: 0.0,
                        kv_dim: 0,
                        vocab: 0,
                        weight_bytes: 2.0,
                        activation_bytes: 2.0,
                        tied_embeddings: false,
                    })
                } else {
                    err(
                        mp.clone(),
                        format!(
                            "the model needs a `preset` ({}) or explicit fields; missing: {}",
                            Preset::names().join(", "),
                            missing.join(", ")
                        ),
                    );
                    None
                }
            }
        };
        base.map(|mut model| {
            if let Some(v) = m.layers {
                model.layers = v;
            }
            if let Some(v) = m.hidden {
                model.hidden = v;
                if m.preset.is_none() && m.kv_dim.is_none() {
                    model.kv_dim = v;
                }
            }
            if let Some(v) = &m.params {
                model.params = v.0;
            }
            if let Some(v) = m.kv_dim {
                model.kv_dim = v;
            }
            if let Some(v) = m.vocab {
                model.vocab = v;
            }
            if let Some(v) = &m.weight_bytes {
                model.weight_bytes = v.0;
            }
            if let Some(v) = &m.activation_bytes {
                model.activation_bytes = v.0;
            }
            if let Some(v) = m.tied_embeddings {
                model.tied_embeddings = v;
            }
            for (field, value) in [("layers", model.layers), ("hidden", model.hidden), ("kv_dim", model.kv_dim), ("vocab", model.vocab)] {
                if value == 0 {
                    err(mp.key(field), format!("{field} must be at least 1"));
                }
            }
            if model.layers > 0 && model.hidden > 0 && model.layer_params() <= 0.0 {
                err(
                    mp.key("params"),
                    format!(
                        "{:.3e} parameters leave nothing for the layers once the embeddings ({:.3e}) are counted",
                        model.params,
                        model.embedding_params()
                    ),
                );
            }
            model
        })
    };

    // Workload.
    let wp = root.key("workload");
    let w = &raw.workload;
    let measure = match (w.duration, w.requests) {
        (Some(_), Some(_)) => {
            err(
                wp.key("requests"),
                "give either `duration` or `requests`, not both".into(),
            );
            None
        }
        (Some(d), None) if d.get().is_zero() => {
            err(
                wp.key("duration"),
                "duration must be greater than zero".into(),
            );
            None
        }
        (Some(d), None) => Some(Extent::Duration(d.get())),
        (None, Some(0)) => {
            err(wp.key("requests"), "requests must be at least 1".into());
            None
        }
        (None, Some(n)) => Some(Extent::Requests(n)),
        (None, None) => {
            err(
                wp.clone(),
                "the workload needs a measured phase: `duration = \"30s\"` or `requests = 200`"
                    .into(),
            );
            None
        }
    };
    let warmup = match (w.warmup, w.warmup_requests) {
        (Some(_), Some(_)) => {
            err(
                wp.key("warmup_requests"),
                "give either `warmup` or `warmup_requests`, not both".into(),
            );
            Extent::Requests(0)
        }
        (Some(d), None) => Extent::Duration(d.get()),
        (None, Some(n)) => Extent::Requests(n),
        (None, None) => Extent::Requests(0),
    };

    // Nodes.
    let mut nodes = Vec::new();
    let mut seen = HashSet::new();
    for (i, n) in raw.nodes.iter().enumerate() {
        let np = root.key("node").index(i);
        if !valid_name(&n.name) {
            err(
                np.key("name"),
                format!(
                    "invalid node name \"{}\": use 1-64 characters of a-z, 0-9 and -",
                    n.name
                ),
            );
        }
        if !seen.insert(n.name.clone()) {
            err(
                np.key("name"),
                format!(
                    "duplicate node name \"{}\"; node names must be unique",
                    n.name
                ),
            );
        }
        let device = match (&n.device, n.role) {
            (None, Role::Worker) => {
                err(
                    np.clone(),
                    format!(
                        "worker \"{}\" needs a `device`: a profile name like \"a100-80g\", \"ideal\" or an inline table",
                        n.name
                    ),
                );
                None
            }
            (Some(_), Role::Relay) => {
                err(
                    np.key("device"),
                    format!("relay \"{}\" runs no model: remove `device`", n.name),
                );
                None
            }
            (Some(d), _) => resolve_device(d, profiles, np.key("device"), &mut err),
            (None, _) => None,
        };
        let layers = match (&n.layers, n.role, &model) {
            (Some(span), Role::Worker, Some(m)) => {
                if span.0.end > m.layers {
                    err(
                        np.key("layers"),
                        format!(
                            "layer span {}..{} runs past the model's {} layers; valid spans lie inside 0..{}",
                            span.0.start, span.0.end, m.layers, m.layers
                        ),
                    );
                }
                span.0.clone()
            }
            (Some(_), Role::Worker, None) => 0..0,
            (Some(_), role, _) => {
                err(
                    np.key("layers"),
                    format!("a {role} holds no layers: remove `layers`"),
                );
                0..0
            }
            (None, Role::Worker, Some(m)) => 0..m.layers,
            (None, _, _) => 0..0,
        };
        let max_batch = n.max_batch.unwrap_or(1);
        if max_batch == 0 {
            err(np.key("max_batch"), "max_batch must be at least 1".into());
        }
        if n.max_batch.is_some() && n.role != Role::Worker {
            err(
                np.key("max_batch"),
                format!("max_batch applies to workers, not to a {}", n.role),
            );
        }
        let share = n.share.unwrap_or(1.0);
        if let Some(v) = n.share {
            if n.role != Role::Client {
                err(
                    np.key("share"),
                    format!("share applies to clients, not to a {}", n.role),
                );
            } else if !(v.is_finite() && v > 0.0) {
                err(
                    np.key("share"),
                    format!(
                        "share must be a finite number greater than zero, got {v}; it weighs this client's requests against the other clients' (default 1)"
                    ),
                );
            }
        }
        nodes.push(Node {
            name: n.name.clone(),
            role: n.role,
            device,
            layers,
            max_batch,
            share,
        });
    }
    if raw.nodes.is_empty() {
        err(
            root.clone(),
            "the scenario has no nodes: add [[node]] tables for a client and a worker".into(),
        );
    } else {
        if !nodes.iter().any(|n| n.role == Role::Client) {
            err(
                root.key("node"),
                "no node has role = \"client\"; a scenario needs one to send requests".into(),
            );
        }
        if !nodes.iter().any(|n| n.role == Role::Worker) {
            err(
                root.key("node"),
                "no node has role = \"worker\"; a scenario needs one to run the model".into(),
            );
        }
    }
    let index_of = |name: &str| nodes.iter().position(|n| n.name == name);
    let names = || {
        nodes
            .iter()
            .map(|n| n.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };

    // Links.
    let mut links: Vec<LinkDef> = Vec::new();
    for (i, l) in raw.links.iter().enumerate() {
        let lp = root.key("link").index(i);
        let lookup =
            |name: &str, path: FieldPath, err: &mut dyn FnMut(FieldPath, String)| match index_of(
                name,
            ) {
                Some(ix) => Some(ix),
                None => {
                    err(
                        path,
                        format!("unknown node \"{name}\"; nodes are: {}", names()),
                    );
                    None
                }
            };
        let ends: Option<(usize, usize, bool)> = match (&l.between, &l.from, &l.to) {
            (Some(b), None, None) => {
                if b.len() != 2 {
                    err(
                        lp.key("between"),
                        format!("between needs exactly two node names, got {}", b.len()),
                    );
                    None
                } else {
                    let a = lookup(&b[0], lp.key("between").index(0), &mut err);
                    let c = lookup(&b[1], lp.key("between").index(1), &mut err);
                    a.zip(c).map(|(a, c)| (a, c, true))
                }
            }
            (None, Some(f), Some(t)) => {
                let a = lookup(f, lp.key("from"), &mut err);
                let c = lookup(t, lp.key("to"), &mut err);
                a.zip(c).map(|(a, c)| (a, c, false))
            }
            _ => {
                err(
                    lp.clone(),
                    "a link needs `between = [\"a\", \"b\"]` or both `from` and `to`".into(),
                );
                None
            }
        };
        if let Some(at) = l.at {
            let _ = at;
            err(
                lp.key("at"),
                "`at` belongs in a [[link.change]]; a link itself applies from the start".into(),
            );
        }
        let params = link_params(
            &LinkParams::ideal(),
            l,
            &lp,
            l.between.is_none(),
            base_dir,
            &mut err,
        );
        let mut changes: Vec<LinkChange> = Vec::new();
        for (k, c) in l.change.iter().enumerate() {
            let cp = lp.key("change").index(k);
            for (given, field) in [
                (c.between.is_some(), "between"),
                (c.from.is_some(), "from"),
                (c.to.is_some(), "to"),
                (!c.change.is_empty(), "change"),
            ] {
                if given {
                    err(
                        cp.key(field),
                        format!("a change takes no `{field}`: it applies to the link it is under"),
                    );
                }
            }
            let Some(at) = c.at else {
                err(
                    cp.clone(),
                    "a [[link.change]] needs `at`, the time from the start of the measured phase, like at = \"30s\"".into(),
                );
                continue;
            };
            if let Some(prev) = changes.last()
                && at.get() <= prev.at
            {
                err(
                    cp.key("at"),
                    format!(
                        "changes must be in time order: {} is not after {}",
                        units::format_duration(at.get()),
                        units::format_duration(prev.at)
                    ),
                );
            }
            // A change states what differs from the link's own definition.
            let params = link_params(&params, c, &cp, l.between.is_none(), base_dir, &mut err);
            changes.push(LinkChange {
                at: at.get(),
                params,
            });
        }
        if let Some((a, b, both)) = ends {
            if a == b {
                err(
                    lp.clone(),
                    format!("a link from \"{}\" to itself", nodes[a].name),
                );
                continue;
            }
            let dirs: &[(usize, usize)] = if both { &[(a, b), (b, a)] } else { &[(a, b)] };
            for &(from, to) in dirs {
                if links.iter().any(|x| x.from == from && x.to == to) {
                    err(
                        lp.clone(),
                        format!(
                            "the link {} -> {} is defined twice",
                            nodes[from].name, nodes[to].name
                        ),
                    );
                } else {
                    links.push(LinkDef {
                        from,
                        to,
                        preset: l
                            .preset
                            .as_deref()
                            .and_then(LinkPreset::find)
                            .map(|p| p.name),
                        params: params.clone(),
                        changes: changes.clone(),
                    });
                }
            }
        }
    }

    // Topology. A route is checked only when the nodes and links it uses are sound.
    let sound = found.get() == 0;
    let tp = root.key("topology");
    let (kind, path_names, hops) = match &raw.topology {
        Some(t) => (t.kind, t.path.clone(), t.hops),
        None => (TopologyKind::Direct, None, None),
    };
    if hops.is_some() && kind != TopologyKind::Pipeline {
        err(
            tp.key("hops"),
            format!("`hops` applies to pipeline topologies, not {kind}"),
        );
    }
    let hedge_after = raw.topology.as_ref().and_then(|t| t.hedge_after.as_ref());
    if hedge_after.is_some() && kind != TopologyKind::Hedged {
        err(
            tp.key("hedge_after"),
            format!("`hedge_after` applies to hedged topologies, not {kind}"),
        );
    }
    let hedge_after = hedge_after.map_or_else(HedgeAfter::default, |h| h.0);
    let path: Vec<usize> = match path_names.as_ref() {
        Some(p) => {
            let mut ix = Vec::new();
            for (i, name) in p.iter().enumerate() {
                match index_of(name) {
                    Some(n) => ix.push(n),
                    None => err(
                        tp.key("path").index(i),
                        format!("unknown node \"{name}\"; nodes are: {}", names()),
                    ),
                }
            }
            if p.is_empty() {
                err(
                    tp.key("path"),
                    format!(
                        "the path is empty: a {kind} topology's path is {}",
                        path_shape(kind)
                    ),
                );
            }
            if ix.len() != p.len() { Vec::new() } else { ix }
        }
        None if kind == TopologyKind::Direct => {
            let clients: Vec<usize> = (0..nodes.len())
                .filter(|&i| nodes[i].role == Role::Client)
                .collect();
            let workers: Vec<usize> = (0..nodes.len())
                .filter(|&i| nodes[i].role == Role::Worker)
                .collect();
            if clients.len() == 1 && workers.len() == 1 {
                vec![clients[0], workers[0]]
            } else {
                if !nodes.is_empty() {
                    err(tp.clone(), "with several clients or workers, give [topology] a `path` like [\"client\", \"gpu-a\"]".into());
                }
                Vec::new()
            }
        }
        None => {
            err(
                tp.clone(),
                format!(
                    "a {kind} topology needs a `path` naming its nodes in order, starting at a client"
                ),
            );
            Vec::new()
        }
    };

    // The clients that send requests: each takes the route from path[0] with itself in
    // place of path[0]. `others` are those besides path[0], with their place in `clients`.
    let cp = tp.key("clients");
    let mut others: Vec<(usize, usize)> = Vec::new();
    let clients: Vec<usize> = match raw.topology.as_ref().and_then(|t| t.clients.as_ref()) {
        None => path.first().map(|&c| vec![c]).unwrap_or_default(),
        Some(given) => {
            let mut ix: Vec<usize> = Vec::new();
            for (j, name) in given.iter().enumerate() {
                let Some(c) = index_of(name) else {
                    err(
                        cp.index(j),
                        format!("unknown node \"{name}\"; nodes are: {}", names()),
                    );
                    continue;
                };
                if nodes[c].role != Role::Client {
                    err(
                        cp.index(j),
                        format!(
                            "`clients` lists the client nodes that send requests; \"{name}\" is a {}",
                            nodes[c].role
                        ),
                    );
                } else if ix.contains(&c) {
                    err(
                        cp.index(j),
                        format!("client \"{name}\" appears twice in `clients`"),
                    );
                } else {
                    ix.push(c);
                    if path.first() != Some(&c) {
                        others.push((c, j));
                    }
                }
            }
            if given.is_empty() {
                err(
                    cp.clone(),
                    "`clients` is empty: list the client nodes that send requests, the path's first node among them (or leave `clients` out for that node alone)".into(),
                );
            } else if let Some(&first) = path.first()
                && nodes[first].role == Role::Client
                && !given.iter().any(|g| *g == nodes[first].name)
            {
                err(
                    cp.clone(),
                    format!(
                        "the path starts at client \"{0}\", which `clients` does not list; every client takes the path's route from \"{0}\", so add \"{0}\" to `clients`",
                        nodes[first].name
                    ),
                );
            }
            ix
        }
    };

    if !path.is_empty() && sound {
        // Point at the path when the file has one, else at the node the implied route reaches.
        let explicit = path_names.is_some();
        let at = |i: usize| {
            if explicit {
                tp.key("path").index(i)
            } else {
                root.key("node").index(path[i])
            }
        };
        if let Some(needs) = check_path(kind, hops, &path, &nodes, model.as_ref(), &tp, &mut err) {
            for &(a, b, i) in &needs {
                if let Some(msg) = missing_link(&nodes, &links, a, b) {
                    err(at(i), msg);
                }
            }
            // Another client needs the links path[0] needs; the others are shared.
            for &(c, j) in &others {
                let swap = |x: usize| if x == path[0] { c } else { x };
                for &(a, b, _) in needs.iter().filter(|n| n.0 == path[0] || n.1 == path[0]) {
                    if let Some(msg) = missing_link(&nodes, &links, swap(a), swap(b)) {
                        err(
                            cp.index(j),
                            format!(
                                "client \"{}\" takes the route of \"{}\": {msg}",
                                nodes[c].name, nodes[path[0]].name
                            ),
                        );
                    }
                }
            }
        }
    }

    // Layer spans and weights, now that the topology says who holds what. A star's host
    // may hold no layers; a tensor-parallel worker holds 1/N of every layer.
    let star_host = match kind {
        TopologyKind::Star => path_names
            .as_ref()
            .and_then(|p| p.get(1))
            .and_then(|n| index_of(n)),
        _ => None,
    };
    let tensor_ways = |i: usize| -> usize {
        if kind == TopologyKind::Tensor && path.len() > 2 && path[1..].contains(&i) {
            path.len() - 1
        } else {
            1
        }
    };
    for (i, n) in nodes.iter().enumerate() {
        if n.role != Role::Worker {
            continue;
        }
        let np = root.key("node").index(i);
        if raw.nodes[i].layers.as_ref().is_some_and(|s| s.0.is_empty()) && star_host != Some(i) {
            err(
                np.key("layers"),
                format!(
                    "layer span {0}..{0} is empty: end must be greater than start (only the host of a star topology may hold no layers, with \"0..0\")",
                    n.layers.start
                ),
            );
        }
        let (Some(dev), Some(m)) = (&n.device, &model) else {
            continue;
        };
        // The worker that runs the LM head holds it: a star's host, else the last stage.
        let head = match star_host {
            Some(h) => h == i,
            None => n.layers.end == m.layers,
        };
        let ways = tensor_ways(i);
        let bytes = (m.layer_params() * n.layers.len() as f64
            + if head { m.head_params() } else { 0.0 })
            * m.weight_bytes
            / ways as f64;
        if bytes > dev.memory.get() {
            let (held, remedy) = if ways > 1 {
                (
                    format!("1/{ways} of {} layers", n.layers.len()),
                    "add workers to the tensor topology or use a larger device",
                )
            } else {
                (
                    format!("{} layers", n.layers.len()),
                    "hold fewer layers or use a larger device",
                )
            };
            err(
                np.key("layers"),
                format!(
                    "worker \"{}\" holds {held} = {} of weights, more than the {} of {}; {remedy}",
                    n.name,
                    units::format_si(bytes, "B"),
                    dev.memory,
                    dev.name
                ),
            );
        }
    }

    // Baseline.
    let baseline = raw.baseline.as_ref().and_then(|b| {
        let bp = root.key("baseline");
        let count = b.count.unwrap_or(1);
        if count == 0 || count > 64 {
            err(bp.key("count"), format!("count must be in 1..=64 GPUs, got {count}"));
        }
        let device = resolve_device(&b.device, profiles, bp.key("device"), &mut err)?;
        if let Some(m) = &model {
            let total = device.memory.get() * count.max(1) as f64;
            if m.total_weight_bytes() > total {
                err(
                    bp.key("device"),
                    format!(
                        "the model's {} of weights do not fit in {} x {} ({}); raise `count` or lower `weight_bytes`",
                        units::format_si(m.total_weight_bytes(), "B"),
                        count,
                        device.name,
                        units::format_si(total, "B")
                    ),
                );
            }
        }
        Some(Baseline { device, count: count.max(1) })
    });

    // SLO.
    let slo = raw
        .slo
        .as_ref()
        .map(|s| {
            let mut check = |k: &'static str, v: Option<Dur>| {
                if v.is_some_and(|d| d.get().is_zero()) {
                    err(
                        root.key("slo").key(k),
                        format!("slo {k} must be greater than zero"),
                    );
                }
                v.map(|d| d.get())
            };
            Slo {
                ttft: check("ttft", s.ttft),
                tpot: check("tpot", s.tpot),
                itl: check("itl", s.itl),
                e2e: check("e2e", s.e2e),
            }
        })
        .unwrap_or_default();

    // QUIC settings.
    let qp = root.key("quic");
    let quic = match &raw.quic {
        None => Quic::default(),
        Some(q) => {
            let congestion = q.congestion.as_deref().and_then(|c| {
                let found = Congestion::parse(c);
                if found.is_none() {
                    err(
                        qp.key("congestion"),
                        format!(
                            "unknown congestion controller \"{c}\"; quinn offers: {}",
                            Congestion::NAMES.join(", ")
                        ),
                    );
                }
                found
            });
            let positive =
                |d: Option<Dur>, key: &'static str, err: &mut dyn FnMut(FieldPath, String)| {
                    d.map(|d| {
                        if d.get().is_zero() {
                            err(qp.key(key), format!("{key} must be greater than zero"));
                        }
                        d.get()
                    })
                };
            let window = |b: Option<Bytes>,
                          key: &'static str,
                          least: u64,
                          err: &mut dyn FnMut(FieldPath, String)| {
                b.map(|b| {
                    let v = b.as_u64();
                    if v < least {
                        err(
                            qp.key(key),
                            format!("{key} of {v} B is too small: at least {least} B"),
                        );
                    } else if v >= 1 << 62 {
                        err(
                            qp.key(key),
                            format!("{key} is past QUIC's largest value (2^62 - 1)"),
                        );
                    }
                    v
                })
            };
            let idle = q.idle_timeout.map_or(DEFAULT_IDLE_TIMEOUT, |i| i.get());
            if let Some(k) = q.keep_alive
                && k.get() >= idle
            {
                err(
                    qp.key("keep_alive"),
                    format!(
                        "keep_alive {} is not shorter than idle_timeout {}: the connection would time out between keep-alives",
                        units::format_duration(k.get()),
                        units::format_duration(idle)
                    ),
                );
            }
            Quic {
                initial_rtt: positive(q.initial_rtt, "initial_rtt", &mut err),
                initial_window: window(q.initial_window, "initial_window", 2400, &mut err),
                stream_receive_window: window(
                    q.stream_receive_window,
                    "stream_receive_window",
                    1200,
                    &mut err,
                ),
                receive_window: window(q.receive_window, "receive_window", 1200, &mut err),
                idle_timeout: positive(q.idle_timeout, "idle_timeout", &mut err),
                keep_alive: positive(q.keep_alive, "keep_alive", &mut err),
                congestion,
            }
        }
    };
    let reference = raw.reference.as_ref().and_then(|r| {
        let rp = root.key("reference");
        let latency = r
            .metric
            .rsplit_once('_')
            .is_some_and(|(m, p)| REFERENCE_LATENCY_METRICS.contains(&m) && REFERENCE_PERCENTILES.contains(&p));
        let throughput = REFERENCE_THROUGHPUT_METRICS.contains(&r.metric.as_str());
        if !latency && !throughput {
            err(
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
                    err(rp.key("value"), e);
                    return None;
                }
            },
            (toml::Value::Integer(n), false) if *n > 0 => RefValue::Number(*n as f64),
            (toml::Value::Float(f), false) if *f > 0.0 && f.is_finite() => RefValue::Number(*f),
            (_, true) => {
                err(rp.key("value"), format!("a latency reference needs a duration like \"30ms\", got {}", r.value));
                return None;
            }
            (_, false) => {
                err(rp.key("value"), format!("a throughput reference needs a positive number, got {}", r.value));
                return None;
            }
        };
        Some(Reference { source: r.source.clone(), metric: r.metric.clone(), value, tolerance: r.tolerance.get() })
    });

    let (Some(model), Some(measure)) = (model, measure) else {
        return Err(problems);
    };
    if !problems.is_empty() {
        return Err(problems);
    }
    Ok(Scenario {
        name: raw.name,
        description: raw.description,
        seed: raw.seed,
        file: PathBuf::new(),
        sha256: String::new(),
        model,
        workload: Workload {
            prompt_tokens: raw.workload.prompt_tokens.0,
            output_tokens: raw.workload.output_tokens.0,
            arrival: raw.workload.arrival.0,
            measure,
            warmup,
        },
        nodes,
        links,
        topology: Topology {
            kind,
            clients,
            path,
            hops: hops.unwrap_or(Hops::ClientRelayed),
            hedge_after,
        },
        baseline,
        slo,
        reference,
        quic,
    })
}

/// A link's parameters for one direction: `base` (or the named preset) with the fields
/// the table gives.
fn link_params(
    base: &LinkParams,
    l: &RawLink,
    lp: &FieldPath,
    one_way: bool,
    base_dir: &std::path::Path,
    err: &mut dyn FnMut(FieldPath, String),
) -> LinkParams {
    let mut p = match &l.preset {
        Some(name) => match LinkPreset::find(name) {
            Some(preset) => preset.params(),
            None => {
                err(
                    lp.key("preset"),
                    format!(
                        "unknown link preset \"{name}\"; presets: {}",
                        LinkPreset::names().join(", ")
                    ),
                );
                base.clone()
            }
        },
        None => base.clone(),
    };
    match (l.rtt, l.delay) {
        (Some(_), Some(_)) => err(
            lp.key("delay"),
            "give either `rtt` or `delay` (one way), not both".into(),
        ),
        (Some(rtt), None) => {
            if one_way {
                err(
                    lp.key("rtt"),
                    "a one-way link (from/to) takes `delay`, not `rtt`".into(),
                );
            }
            p.delay = rtt.get() / 2;
        }
        (None, Some(d)) => p.delay = d.get(),
        (None, None) => {}
    }
    if let Some(j) = l.jitter {
        p.jitter = j.get();
    }
    if let Some(d) = &l.jitter_distribution {
        match JitterDist::parse(d) {
            Some(d) => p.jitter_distribution = d,
            None => err(
                lp.key("jitter_distribution"),
                format!(
                    "unknown jitter distribution \"{d}\"; valid: {}",
                    JitterDist::NAMES.join(", ")
                ),
            ),
        }
    }
    if let Some(c) = l.jitter_correlation {
        if c.get() >= 1.0 {
            err(
                lp.key("jitter_correlation"),
                "a correlation of 100% would freeze the delay; use less than 100%".into(),
            );
        }
        p.jitter_correlation = c.get();
    }
    if let Some(f) = l.fifo {
        p.fifo = f;
    }
    if p.jitter_distribution == JitterDist::Uniform && p.jitter > p.delay {
        err(
            lp.key("jitter"),
            format!(
                "jitter {} is larger than the one-way delay {}; a datagram cannot arrive before it is sent (a normal or pareto distribution is cut at zero instead)",
                units::format_duration(p.jitter),
                units::format_duration(p.delay)
            ),
        );
    }
    if l.reorder.is_some() || l.reorder_correlation.is_some() || l.reorder_gap.is_some() {
        // A change may adjust the gap or correlation of the reordering it inherits.
        let inherited = p.reorder;
        let Some(r) = l.reorder.map(|r| r.get()).or(inherited.map(|r| r.p)) else {
            let given = if l.reorder_gap.is_some() {
                "reorder_gap"
            } else {
                "reorder_correlation"
            };
            err(
                lp.key(given),
                "`reorder_correlation` and `reorder_gap` need `reorder`, the probability, like reorder = \"5%\"".into(),
            );
            return p;
        };
        if l.reorder_correlation.is_some_and(|c| c.get() >= 1.0) {
            err(
                lp.key("reorder_correlation"),
                "a correlation of 100% would never reorder anything; use less than 100%".into(),
            );
        }
        let gap = l.reorder_gap.or(inherited.map(|r| r.gap)).unwrap_or(1);
        if gap == 0 {
            err(
                lp.key("reorder_gap"),
                "reorder_gap is at least 1 (every datagram may be reordered)".into(),
            );
        }
        p.reorder = Some(Reorder {
            p: r,
            correlation: l
                .reorder_correlation
                .map(|c| c.get())
                .or(inherited.map(|r| r.correlation))
                .unwrap_or(0.0),
            gap: gap.max(1),
        });
    }
    if p.reorder.is_some_and(|r| r.p > 0.0) && p.delay.is_zero() {
        err(
            lp.key("reorder"),
            "reordering sends some datagrams ahead of the delay; it needs a delay or rtt".into(),
        );
    }
    match (l.bandwidth, &l.trace) {
        (Some(_), Some(_)) => err(
            lp.key("trace"),
            "give either `bandwidth` or a `trace`, not both".into(),
        ),
        (Some(b), None) => {
            if b.get() == 0.0 {
                err(
                    lp.key("bandwidth"),
                    "bandwidth must be greater than zero; remove it for an unlimited link".into(),
                );
            }
            p.bandwidth = Some(b.get());
            p.trace = None;
        }
        (None, Some(file)) => {
            let path = base_dir.join(file);
            match std::fs::read_to_string(&path) {
                Ok(text) => match RateTrace::parse(file, &text) {
                    Ok(t) => {
                        p.trace = Some(std::sync::Arc::new(t));
                        p.bandwidth = None;
                    }
                    Err(e) => err(lp.key("trace"), format!("mahimahi trace \"{file}\": {e}")),
                },
                Err(e) => err(
                    lp.key("trace"),
                    format!(
                        "cannot read the mahimahi trace {}: {}",
                        path.display(),
                        match e.kind() {
                            std::io::ErrorKind::NotFound => "no such file".to_string(),
                            _ => e.to_string(),
                        }
                    ),
                ),
            }
        }
        (None, None) => {}
    }
    if let Some(loss) = &l.loss {
        p.loss = loss.0;
        if let Loss::Bernoulli { correlation, .. } = loss.0
            && correlation >= 1.0
        {
            err(
                lp.key("loss"),
                "a loss correlation of 100% would lose everything or nothing; use less than 100%"
                    .into(),
            );
        }
    }
    if let Some(d) = l.duplicate {
        p.duplicate = d.get();
    }
    if let Some(m) = l.mtu {
        let least = quinn_min_mtu();
        if m < least {
            err(
                lp.key("mtu"),
                format!(
                    "mtu {m} is below QUIC's minimum: QUIC needs 1200-byte datagrams, {least} bytes with IPv4 and UDP headers"
                ),
            );
        }
        p.mtu = Some(m);
    }
    if let Some(q) = &l.queue {
        if let Queue::Bytes(b) = q.0
            && b < 1500
        {
            err(
                lp.key("queue"),
                format!(
                    "a queue of {b} B cannot hold one 1500-byte datagram; use at least \"1500B\""
                ),
            );
        }
        p.queue = q.0;
    }
    p
}

/// The least IP MTU that carries QUIC's 1200-byte minimum datagram.
fn quinn_min_mtu() -> u32 {
    1200 + WIRE_OVERHEAD
}

fn resolve_device(
    d: &RawDevice,
    profiles: &ProfileLibrary,
    path: FieldPath,
    err: &mut dyn FnMut(FieldPath, String),
) -> Option<DeviceProfile> {
    match d {
        RawDevice::Named(name) => match profiles.load(name) {
            Ok((p, _)) => Some(p),
            Err(e) => {
                err(path, e);
                None
            }
        },
        RawDevice::Inline(p) => {
            let mut p = (**p).clone();
            if p.name.is_empty() {
                p.name = "inline".into();
            }
            let problems = p.check();
            for (field, msg) in &problems {
                let mut fp = path.clone();
                for k in field.split('.') {
                    fp = fp.key(k);
                }
                err(fp, msg.clone());
            }
            problems.is_empty().then_some(p)
        }
    }
}

/// A kind's path, as errors write it.
fn path_shape(kind: TopologyKind) -> &'static str {
    match kind {
        TopologyKind::Direct => "[client, worker]",
        TopologyKind::Relay => "[client, relay, ..., worker]",
        TopologyKind::Pipeline => {
            "[client, worker, worker, ...]: the stages in order, each worker optionally preceded by the relays that lead to it"
        }
        TopologyKind::Star => "[client, worker, worker, ...]: the host, then the remotes",
        TopologyKind::Tensor => {
            "[client, worker, worker, ...]: the root, then at least one more worker"
        }
        TopologyKind::Hedged => "[client, worker, worker, ...]: at least two replicas",
        TopologyKind::Ring => "[client, worker, worker, ...]",
    }
}

/// What is wrong when a route needs a link between `a` and `b` in both directions
/// (requests from `a` to `b`, answers back), or `None` when both exist.
fn missing_link(nodes: &[Node], links: &[LinkDef], a: usize, b: usize) -> Option<String> {
    let has = |x: usize, y: usize| links.iter().any(|l| l.from == x && l.to == y);
    let (na, nb) = (&nodes[a].name, &nodes[b].name);
    match (has(a, b), has(b, a)) {
        (true, true) => None,
        (false, false) => Some(format!(
            "the route needs a link {na} -> {nb}, and the scenario has none; add [[link]] between = [\"{na}\", \"{nb}\"]"
        )),
        (true, false) => Some(format!(
            "the route needs a link {nb} -> {na} for the answers; the scenario has only {na} -> {nb}"
        )),
        (false, true) => Some(format!(
            "the route needs a link {na} -> {nb} for the requests; the scenario has only {nb} -> {na}"
        )),
    }
}

/// Checks a topology's path: roles in the right places and the layers each worker holds.
/// Returns the links the route needs, as (from, to, the path position to point at when it
/// is missing), each needed in both directions; `None` when the path itself is wrong.
fn check_path(
    kind: TopologyKind,
    hops: Option<Hops>,
    path: &[usize],
    nodes: &[Node],
    model: Option<&Model>,
    tp: &FieldPath,
    err: &mut dyn FnMut(FieldPath, String),
) -> Option<Vec<(usize, usize, usize)>> {
    let pp = tp.key("path");
    let role = |i: usize| nodes[path[i]].role;
    let name = |i: usize| nodes[path[i]].name.as_str();
    if role(0) != Role::Client {
        err(
            pp.index(0),
            format!(
                "a path starts at a client; \"{}\" is a {}",
                name(0),
                role(0)
            ),
        );
        return None;
    }
    let mut seen = HashSet::new();
    for (i, &n) in path.iter().enumerate() {
        if !seen.insert(n) {
            err(
                pp.index(i),
                format!("node \"{}\" appears twice in the path", nodes[n].name),
            );
        }
    }
    let shape_error = |err: &mut dyn FnMut(FieldPath, String)| {
        err(
            pp.clone(),
            format!("a {kind} topology's path is {}", path_shape(kind)),
        );
    };
    let all_workers = (1..path.len()).all(|i| role(i) == Role::Worker);
    // The workers at these path positions must hold consecutive spans covering the model.
    let consecutive = |stages: &[usize], err: &mut dyn FnMut(FieldPath, String)| {
        let Some(m) = model else { return };
        let mut next = 0;
        for &i in stages {
            let span = &nodes[path[i]].layers;
            if span.start != next {
                err(
                    pp.index(i),
                    format!(
                        "stage \"{}\" holds layers {}..{} but the previous stage ends at layer {next}; stages must hold consecutive spans",
                        name(i),
                        span.start,
                        span.end
                    ),
                );
                return;
            }
            next = span.end;
        }
        if next != m.layers {
            err(
                pp.clone(),
                format!(
                    "the stages cover layers 0..{next}, but the model has {} layers",
                    m.layers
                ),
            );
        }
    };
    // The workers at these path positions must each hold the whole model.
    let whole = |what: &str, err: &mut dyn FnMut(FieldPath, String)| {
        let Some(m) = model else { return };
        for i in 1..path.len() {
            let span = &nodes[path[i]].layers;
            if *span != (0..m.layers) {
                err(
                    FieldPath::root().key("node").index(path[i]).key("layers"),
                    format!(
                        "worker \"{}\" holds layers {}..{}, but {what} holds all {} layers; remove `layers`",
                        name(i),
                        span.start,
                        span.end,
                        m.layers
                    ),
                );
            }
        }
    };
    let mut needs: Vec<(usize, usize, usize)> = Vec::new();
    let mut need = |a: usize, b: usize| {
        let (x, y) = (path[a], path[b]);
        if !needs
            .iter()
            .any(|&(p, q, _)| (p, q) == (x, y) || (p, q) == (y, x))
        {
            needs.push((x, y, b));
        }
    };
    let n = path.len();
    match kind {
        TopologyKind::Direct => {
            if n != 2 || role(1) != Role::Worker {
                shape_error(err);
                return None;
            }
            need(0, 1);
        }
        TopologyKind::Relay => {
            if n < 3 || role(n - 1) != Role::Worker || (1..n - 1).any(|i| role(i) != Role::Relay) {
                shape_error(err);
                return None;
            }
            for i in 1..n {
                need(i - 1, i);
            }
        }
        TopologyKind::Pipeline => {
            if n < 2 || (1..n).any(|i| role(i) == Role::Client) {
                shape_error(err);
                return None;
            }
            if role(n - 1) != Role::Worker {
                err(
                    pp.index(n - 1),
                    format!(
                        "a pipeline's path ends at a worker; relay \"{}\" leads to no stage (a relay stands just before the worker it leads to)",
                        name(n - 1)
                    ),
                );
                return None;
            }
            // Each stage's access chain: its relays, then its worker (path positions).
            let mut chains: Vec<Vec<usize>> = Vec::new();
            let mut chain = Vec::new();
            for i in 1..n {
                chain.push(i);
                if role(i) == Role::Worker {
                    chains.push(std::mem::take(&mut chain));
                }
            }
            let stages: Vec<usize> = chains.iter().map(|c| c[c.len() - 1]).collect();
            consecutive(&stages, err);
            let server_to_server = hops == Some(Hops::ServerToServer);
            for (k, ch) in chains.iter().enumerate() {
                if !server_to_server || k == 0 {
                    need(0, ch[0]);
                } else {
                    let prev = &chains[k - 1];
                    need(prev[prev.len() - 1], ch[0]);
                }
                for w in ch.windows(2) {
                    need(w[0], w[1]);
                }
            }
            if server_to_server {
                // The client opens a stream to the last stage for the tokens.
                need(0, chains[chains.len() - 1][0]);
            }
        }
        TopologyKind::Star => {
            if n < 2 || !all_workers {
                shape_error(err);
                return None;
            }
            consecutive(&(1..n).collect::<Vec<_>>(), err);
            need(0, 1);
            for i in 2..n {
                need(1, i);
            }
        }
        TopologyKind::Tensor => {
            if !all_workers {
                shape_error(err);
                return None;
            }
            if n < 3 {
                err(
                    pp.clone(),
                    format!(
                        "a {kind} topology's path is {}; this one names {}",
                        path_shape(kind),
                        if n == 2 { "only 1 worker" } else { "no worker" }
                    ),
                );
                return None;
            }
            whole("in a tensor topology each worker", err);
            need(0, 1);
            for i in 2..n {
                need(1, i);
            }
        }
        TopologyKind::Hedged => {
            if !all_workers {
                shape_error(err);
                return None;
            }
            if n < 3 {
                err(
                    pp.clone(),
                    format!(
                        "a {kind} topology's path is {}; this one names {}",
                        path_shape(kind),
                        if n == 2 { "only 1 worker" } else { "no worker" }
                    ),
                );
                return None;
            }
            whole("in a hedged topology each replica", err);
            for i in 1..n {
                need(0, i);
            }
        }
        TopologyKind::Ring => {
            if n < 2 || !all_workers {
                shape_error(err);
                return None;
            }
            consecutive(&(1..n).collect::<Vec<_>>(), err);
            for i in 1..n {
                need(0, i);
            }
        }
    }
    Some(needs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    const HEAD: &str = r#"
name = "t"
[model]
preset = "llama-2-7b"
[workload]
prompt_tokens = 16
output_tokens = 4
arrival = { kind = "poisson", rate = 1.0 }
requests = 10
"#;

    fn node(name: &str, role: &str, extra: &str) -> String {
        let device = if role == "worker" {
            "device = \"a100-80g\"\n"
        } else {
            ""
        };
        format!("[[node]]\nname = \"{name}\"\nrole = \"{role}\"\n{device}{extra}\n")
    }

    fn link(a: &str, b: &str) -> String {
        format!("[[link]]\nbetween = [\"{a}\", \"{b}\"]\nrtt = \"10ms\"\n")
    }

    fn load(body: &str) -> Result<Scenario, String> {
        super::super::parse(
            Path::new("t.toml"),
            &format!("{HEAD}{body}"),
            &ProfileLibrary::built_in(),
        )
        .map_err(|e| e.to_string())
    }

    #[test]
    fn clients_and_shares_are_parsed() {
        let body = [
            node("eu", "client", "share = 2.5"),
            node("us", "client", ""),
            node("idle", "client", ""),
            node("gpu", "worker", ""),
            link("eu", "gpu"),
            link("us", "gpu"),
            "[topology]\nkind = \"direct\"\npath = [\"eu\", \"gpu\"]\nclients = [\"us\", \"eu\"]\n"
                .into(),
        ]
        .concat();
        let s = load(&body).unwrap();
        let ix = |n: &str| s.node_index(n).unwrap();
        assert_eq!(s.topology.clients, vec![ix("us"), ix("eu")]);
        assert_eq!(s.nodes[ix("eu")].share, 2.5);
        assert_eq!(s.nodes[ix("us")].share, 1.0);
        assert_eq!(s.topology.hedge_after, HedgeAfter::Percentile(95.0));
    }

    #[test]
    fn clients_default_to_the_path_start() {
        let body = [
            node("c", "client", ""),
            node("gpu", "worker", ""),
            link("c", "gpu"),
        ]
        .concat();
        let s = load(&body).unwrap();
        assert_eq!(s.topology.clients, vec![s.node_index("c").unwrap()]);
    }

    #[test]
    fn another_client_needs_the_same_links() {
        let body = [
            node("eu", "client", ""),
            node("us", "client", ""),
            node("gpu", "worker", ""),
            link("eu", "gpu"),
            "[topology]\nkind = \"direct\"\npath = [\"eu\", \"gpu\"]\nclients = [\"eu\", \"us\"]\n"
                .into(),
        ]
        .concat();
        let e = load(&body).unwrap_err();
        assert!(
            e.contains("field `topology.clients[1]`: client \"us\" takes the route of \"eu\": the route needs a link us -> gpu"),
            "{e}"
        );
    }

    fn hedged(hedge_after: &str) -> Result<Scenario, String> {
        let body = [
            node("c", "client", ""),
            node("a", "worker", ""),
            node("b", "worker", ""),
            link("c", "a"),
            link("c", "b"),
            format!(
                "[topology]\nkind = \"hedged\"\npath = [\"c\", \"a\", \"b\"]\nhedge_after = \"{hedge_after}\"\n"
            ),
        ]
        .concat();
        load(&body)
    }

    #[test]
    fn hedge_after_is_a_delay_or_a_percentile() {
        assert_eq!(
            hedged("30ms").unwrap().topology.hedge_after,
            HedgeAfter::Delay(Duration::from_millis(30))
        );
        assert_eq!(
            hedged("p99.9").unwrap().topology.hedge_after,
            HedgeAfter::Percentile(99.9)
        );
        assert_eq!(
            hedged("p95").unwrap().topology.hedge_after,
            HedgeAfter::Percentile(95.0)
        );
        for bad in ["p0", "p100", "pxx", "30", "30 parsecs"] {
            let e = hedged(bad).unwrap_err();
            assert!(e.contains("hedge_after"), "{bad}: {e}");
        }
    }

    fn pipeline(hops: &str, links: &[(&str, &str)]) -> Result<Scenario, String> {
        let mut body = [
            node("c", "client", ""),
            node("r", "relay", ""),
            node("a", "worker", "layers = \"0..16\""),
            node("b", "worker", "layers = \"16..32\""),
        ]
        .concat();
        for (x, y) in links {
            body.push_str(&link(x, y));
        }
        body.push_str(&format!(
            "[topology]\nkind = \"pipeline\"\npath = [\"c\", \"a\", \"r\", \"b\"]\nhops = \"{hops}\"\n"
        ));
        load(&body)
    }

    #[test]
    fn a_relay_may_stand_before_a_pipeline_stage() {
        let s = pipeline("client-relayed", &[("c", "a"), ("c", "r"), ("r", "b")]).unwrap();
        assert_eq!(s.topology.path.len(), 4);
        // Server to server: a -> r -> b, and the client's return stream c -> r -> b.
        pipeline(
            "server-to-server",
            &[("c", "a"), ("a", "r"), ("r", "b"), ("c", "r")],
        )
        .unwrap();
        let e = pipeline("server-to-server", &[("c", "a"), ("a", "r"), ("r", "b")]).unwrap_err();
        assert!(e.contains("the route needs a link c -> r"), "{e}");
        let e = pipeline("client-relayed", &[("c", "a"), ("c", "r")]).unwrap_err();
        assert!(e.contains("the route needs a link r -> b"), "{e}");
    }

    #[test]
    fn a_star_host_may_hold_no_layers() {
        let body = [
            node("c", "client", ""),
            node("host", "worker", "layers = \"0..0\""),
            node("a", "worker", "layers = \"0..16\""),
            node("b", "worker", "layers = \"16..32\""),
            link("c", "host"),
            link("host", "a"),
            link("host", "b"),
            "[topology]\nkind = \"star\"\npath = [\"c\", \"host\", \"a\", \"b\"]\n".into(),
        ]
        .concat();
        let s = load(&body).unwrap();
        assert!(s.nodes[s.node_index("host").unwrap()].layers.is_empty());
        // Anywhere else an empty span is an error.
        let e = load(&body.replace("path = [\"c\", \"host\"", "path = [\"c\", \"a\", \"host\""))
            .unwrap_err();
        assert!(e.contains("layer span 0..0 is empty"), "{e}");
    }

    #[test]
    fn tensor_workers_hold_a_slice_of_the_weights() {
        // Llama 2 70B in bf16 is about 138 GB: half of it is too much for a 40 GB device, a
        // quarter fits.
        let body = |workers: &[&str]| {
            let mut b = node("c", "client", "");
            for w in workers {
                b.push_str(&node(w, "worker", ""));
            }
            b.push_str(&link("c", workers[0]));
            for w in &workers[1..] {
                b.push_str(&link(workers[0], w));
            }
            let names: Vec<String> = workers.iter().map(|w| format!("\"{w}\"")).collect();
            b.push_str(&format!(
                "[topology]\nkind = \"tensor\"\npath = [\"c\", {}]\n",
                names.join(", ")
            ));
            b.replace("a100-80g", "a100-40g")
        };
        let load70 = |b: String| {
            super::super::parse(
                Path::new("t.toml"),
                &format!("{}{b}", HEAD.replace("llama-2-7b", "llama-2-70b")),
                &ProfileLibrary::built_in(),
            )
            .map_err(|e| e.to_string())
        };
        load70(body(&["a", "b", "d", "e"])).unwrap();
        let e = load70(body(&["a", "b"])).map(|_| ()).unwrap_err();
        assert!(e.contains("holds 1/2 of 80 layers"), "{e}");
    }
}

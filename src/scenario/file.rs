//! The scenario file as written: serde structs with `deny_unknown_fields`, and the
//! deserializers of the fields that take more than one form. `validate` checks what these
//! hold and maps them onto the typed [`Scenario`](super::Scenario).

use super::profile::DeviceProfile;
use super::units::{BitRate, Bytes, Dur, Fraction, PerByte};
use super::{Arrival, HedgeAfter, Hops, Loss, MAX_TOKENS, Queue, Role, TokenCount, TopologyKind};
use crate::topology::pattern::{Dim, Direction, Pattern, Payload, RootOnly, Share, Sync};
use serde::{Deserialize, Deserializer, de};
use std::borrow::Cow;
use std::ops::Range;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawScenario {
    pub(super) name: String,
    #[serde(default)]
    pub(super) description: Option<String>,
    #[serde(default)]
    pub(super) seed: u64,
    pub(super) model: RawModel,
    pub(super) workload: RawWorkload,
    #[serde(default, rename = "node")]
    pub(super) nodes: Vec<RawNode>,
    #[serde(default, rename = "link")]
    pub(super) links: Vec<RawLink>,
    #[serde(default, rename = "port")]
    pub(super) ports: Vec<RawPort>,
    #[serde(default)]
    pub(super) topology: Option<RawTopology>,
    #[serde(default)]
    pub(super) baseline: Option<RawBaseline>,
    #[serde(default)]
    pub(super) slo: Option<RawSlo>,
    #[serde(default)]
    pub(super) reference: Option<RawReference>,
    #[serde(default)]
    pub(super) quic: Option<RawQuic>,
    #[serde(default, rename = "fault")]
    pub(super) faults: Vec<super::fault::RawFault>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawQuic {
    pub(super) initial_rtt: Option<Dur>,
    pub(super) initial_window: Option<Bytes>,
    pub(super) stream_receive_window: Option<Bytes>,
    pub(super) receive_window: Option<Bytes>,
    pub(super) idle_timeout: Option<Dur>,
    pub(super) keep_alive: Option<Dur>,
    pub(super) congestion: Option<String>,
    pub(super) warm: Option<bool>,
    pub(super) slow_start_after_idle: Option<bool>,
    pub(super) nagle: Option<bool>,
    pub(super) max_ack_delay: Option<Dur>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawModel {
    pub(super) preset: Option<String>,
    pub(super) layers: Option<u32>,
    pub(super) hidden: Option<u32>,
    pub(super) params: Option<Params>,
    pub(super) kv_dim: Option<u32>,
    pub(super) vocab: Option<u32>,
    pub(super) weight_bytes: Option<Precision>,
    pub(super) activation_bytes: Option<Precision>,
    pub(super) tied_embeddings: Option<bool>,
}

/// A parameter count: a number, or a string like `"6.7B"`.
pub(super) struct Params(pub(super) f64);

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
pub(super) struct Precision(pub(super) f64);

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
pub(super) struct RawWorkload {
    pub(super) prompt_tokens: RawTokens,
    pub(super) output_tokens: RawTokens,
    pub(super) arrival: RawArrival,
    pub(super) duration: Option<Dur>,
    pub(super) requests: Option<u64>,
    pub(super) warmup: Option<Dur>,
    pub(super) warmup_requests: Option<u64>,
    pub(super) max_failed: Option<Fraction>,
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

pub(super) struct RawTokens(pub(super) TokenCount);

impl<'de> Deserialize<'de> for RawTokens {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        const HELP: &str = "expected a token count like 128, { dist = \"uniform\", min = 64, max = 256 } or { dist = \"lognormal\", median = 128, sigma = 0.5 }";
        let v = toml::Value::deserialize(d)?;
        let count = match v {
            toml::Value::Integer(n) => {
                if n < 1 || n > MAX_TOKENS as i64 {
                    return Err(de::Error::custom(format!(
                        "token count must be between 1 and {}, got {n}",
                        MAX_TOKENS
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
                        if min < 1 || max < min || max > MAX_TOKENS {
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
                            && median <= MAX_TOKENS as f64
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

pub(super) struct RawArrival(pub(super) Arrival);

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
            use crate::scenario::limits::{MAX_RATE, MIN_RATE};
            if !(rate.is_finite() && (MIN_RATE..=MAX_RATE).contains(&rate)) {
                return Err(format!(
                    "arrival.rate must be a number of requests/s in [{MIN_RATE:e}, {MAX_RATE:e}], got {}: \
                     the slowest spaces requests by the longest phase the harness runs (1,000,000 s)",
                    crate::scenario::limits::show(rate)
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
                let (lo, hi) = crate::scenario::limits::BURSTINESS;
                if !(lo..=hi).contains(&burstiness) {
                    return Err(de::Error::custom(format!(
                        "arrival.burstiness must be in [{lo}, {hi}] (the gamma shape: gaps vary by 1 / sqrt(burstiness)), got {}: outside it the gamma sampler's draws are not meaningful",
                        crate::scenario::limits::show(burstiness)
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
pub(super) struct RawNode {
    pub(super) name: String,
    pub(super) role: Role,
    pub(super) device: Option<RawDevice>,
    pub(super) layers: Option<LayerSpan>,
    pub(super) max_batch: Option<u32>,
    pub(super) share: Option<f64>,
    pub(super) engine: Option<RawEngine>,
    /// The transport behaviour of every connection direction this node sends on (a
    /// link's own `transport` wins).
    pub(super) transport: Option<RawTransport>,
    /// The software cost of each frame the node sends (serialization, RPC dispatch).
    pub(super) send_cost: Option<RawCost>,
    /// The software cost of each frame the node receives, before it acts on it.
    pub(super) recv_cost: Option<RawCost>,
}

/// `send_cost = { fixed = "50us", per_byte = "1ns" }`: a fixed and a per-byte time per
/// message (`validate::nodes` checks the bounds).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCost {
    pub(super) fixed: Option<Dur>,
    pub(super) per_byte: Option<PerByte>,
}

/// `engine = { kind = "openai", url = ..., model = ... }`: a real engine behind a worker or
/// the baseline (`validate::engine` checks it).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawEngine {
    pub(super) kind: String,
    pub(super) url: Option<String>,
    pub(super) model: Option<String>,
    pub(super) api: Option<String>,
    pub(super) api_key_env: Option<String>,
    pub(super) ignore_eos: Option<bool>,
    pub(super) usage: Option<String>,
    pub(super) connections: Option<u32>,
    pub(super) timeout: Option<Dur>,
    pub(super) body: Option<toml::Table>,
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
pub(super) enum RawDevice {
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

/// `"0..40"`: layers 0 to 39. `"0..0"` (no layers) parses; validation decides.
pub(super) struct LayerSpan(pub(super) Range<u32>);

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
pub(super) struct RawLink {
    pub(super) between: Option<Vec<String>>,
    pub(super) from: Option<String>,
    pub(super) to: Option<String>,
    pub(super) preset: Option<String>,
    pub(super) rtt: Option<Dur>,
    pub(super) delay: Option<Dur>,
    pub(super) jitter: Option<Dur>,
    pub(super) jitter_distribution: Option<String>,
    pub(super) jitter_correlation: Option<Fraction>,
    pub(super) fifo: Option<bool>,
    pub(super) reorder: Option<Fraction>,
    pub(super) reorder_correlation: Option<Fraction>,
    pub(super) reorder_gap: Option<u32>,
    pub(super) bandwidth: Option<BitRate>,
    pub(super) trace: Option<String>,
    pub(super) loss: Option<RawLoss>,
    pub(super) duplicate: Option<Fraction>,
    pub(super) mtu: Option<u32>,
    pub(super) queue: Option<RawQueue>,
    /// The `[[port]]` every direction of this link shares with other links.
    pub(super) port: Option<String>,
    /// The transport behaviour of what sends on this link: a preset name or a table of
    /// `[quic]`'s fields.
    pub(super) transport: Option<RawTransport>,
    /// Only in a `[[link.change]]`: when it applies.
    pub(super) at: Option<Dur>,
    #[serde(default)]
    pub(super) change: Vec<RawLink>,
}

/// A link's `transport`: a preset name (`"tcp-linux"`) or a table of `[quic]`'s fields.
pub(super) enum RawTransport {
    Named(String),
    Table(Box<RawQuic>),
}

impl<'de> Deserialize<'de> for RawTransport {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match toml::Value::deserialize(d)? {
            toml::Value::String(s) => Ok(RawTransport::Named(s)),
            toml::Value::Table(t) => toml::Value::Table(t.clone())
                .try_into::<RawQuic>()
                .map(|q| RawTransport::Table(Box::new(q)))
                .map_err(|e| {
                    // Name the field at fault: the first entry that fails on its own.
                    let culprit = t.iter().find(|&(k, v)| {
                        let mut one = toml::Table::new();
                        one.insert(k.clone(), v.clone());
                        toml::Value::Table(one).try_into::<RawQuic>().is_err()
                    });
                    let at = culprit.map_or(String::new(), |(k, _)| format!(".{k}"));
                    de::Error::custom(format!("transport{at}: {}", e.message().trim()))
                }),
            other => Err(de::Error::custom(format!(
                "invalid transport {other}: expected a preset name like \"tcp-linux\" or a table of [quic] fields like {{ slow_start_after_idle = true }}"
            ))),
        }
    }
}

/// `[[port]]`: a switch port or NIC several links share.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPort {
    pub(super) name: String,
    pub(super) rate: BitRate,
    pub(super) queue: Option<RawQueue>,
}

/// A queue size: bytes (`"256KiB"`) or packets (`"25 packets"`).
pub(super) struct RawQueue(pub(super) Queue);

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

pub(super) struct RawLoss(pub(super) Loss);

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
pub(super) struct RawTopology {
    pub(super) kind: RawKind,
    pub(super) path: Option<Vec<String>>,
    pub(super) hops: Option<Hops>,
    pub(super) clients: Option<Vec<String>>,
    pub(super) hedge_after: Option<RawHedgeAfter>,
    pub(super) pattern: Option<RawPattern>,
}

/// A topology's protocol pattern: a preset's name (a tensor group's or a star's, resolved
/// by the kind), or a tensor group's table of synchronisations.
pub(super) enum RawPattern {
    Name(String),
    Table(Pattern),
}

/// `[topology.pattern]` written as a table.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPatternTable {
    #[serde(default)]
    start: Vec<RawSync>,
    #[serde(default)]
    layer: Vec<RawSync>,
    #[serde(default)]
    end: Vec<RawSync>,
    #[serde(default)]
    root_only: Vec<RawRootOnly>,
}

#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
enum RawRootOnly {
    Attention,
    LmHead,
}

/// One synchronisation of a pattern table: a direction and either `values` of a model
/// width (`share` of it, `bytes_per_value` each, every position or the last) or `bytes`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSync {
    direction: Direction,
    values: Option<Dim>,
    share: Option<Share>,
    bytes_per_value: Option<f64>,
    last_position_only: Option<bool>,
    bytes: Option<Bytes>,
}

impl RawSync {
    fn sync(&self, at: &str) -> Result<Sync, String> {
        let payload = match (self.values, &self.bytes) {
            (Some(_), Some(_)) => {
                return Err(format!(
                    "{at}: give either `values` (a model width) or `bytes` (a fixed size), not both"
                ));
            }
            (None, None) => {
                return Err(format!(
                    "{at}: a synchronisation needs `values` (\"hidden\", \"ffn\", \"vocab\", \"qkv\" or \"kv\") or `bytes` (like \"4B\")"
                ));
            }
            (None, Some(b)) => {
                if self.share.is_some()
                    || self.bytes_per_value.is_some()
                    || self.last_position_only.is_some()
                {
                    return Err(format!(
                        "{at}: `share`, `bytes_per_value` and `last_position_only` apply to `values`, not to `bytes`"
                    ));
                }
                let v = b.get();
                if !(v.is_finite() && (1.0..=MAX_SYNC_BYTES).contains(&v)) {
                    return Err(format!(
                        "{at}: `bytes` must be from 1 B to {MAX_SYNC_BYTES} B (the frame limit), got {v} B"
                    ));
                }
                Payload::Bytes(v.round() as u64)
            }
            (Some(dim), None) => {
                if let Some(b) = self.bytes_per_value
                    && !(b.is_finite() && b > 0.0 && b <= 64.0)
                {
                    return Err(format!(
                        "{at}: `bytes_per_value` must be in (0, 64], got {b}"
                    ));
                }
                Payload::Values {
                    dim,
                    share: self.share.unwrap_or(Share::All),
                    element_bytes: self.bytes_per_value,
                    last_position_only: self.last_position_only.unwrap_or(false),
                }
            }
        };
        Ok(Sync {
            name: "custom",
            direction: self.direction,
            payload,
        })
    }
}

/// The largest fixed payload of one synchronisation: the default frame limit, 64 MiB.
const MAX_SYNC_BYTES: f64 = 64.0 * 1024.0 * 1024.0;

impl RawPatternTable {
    fn pattern(&self) -> Result<Pattern, String> {
        let list = |name: &str, syncs: &[RawSync]| -> Result<Vec<Sync>, String> {
            syncs
                .iter()
                .enumerate()
                .map(|(i, s)| s.sync(&format!("pattern.{name}[{i}]")))
                .collect()
        };
        let mut root_only = RootOnly::default();
        for r in &self.root_only {
            match r {
                RawRootOnly::Attention => root_only.attention = true,
                RawRootOnly::LmHead => root_only.lm_head = true,
            }
        }
        let p = Pattern {
            name: "custom",
            source: "the scenario's [topology.pattern] table",
            start: Cow::Owned(list("start", &self.start)?),
            layer: Cow::Owned(list("layer", &self.layer)?),
            end: Cow::Owned(list("end", &self.end)?),
            root_only,
        };
        match p.problem() {
            Some(e) => Err(e),
            None => Ok(p),
        }
    }
}

impl<'de> Deserialize<'de> for RawPattern {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match toml::Value::deserialize(d)? {
            toml::Value::String(s) => Ok(RawPattern::Name(s)),
            v @ toml::Value::Table(_) => v
                .try_into::<RawPatternTable>()
                .map_err(|e| format!("pattern table: {}", e.message().trim()))
                .and_then(|t| t.pattern())
                .map(RawPattern::Table)
                .map_err(de::Error::custom),
            other => Err(de::Error::custom(format!(
                "invalid pattern {other}: expected a preset name (tensor: {}; star: {}) or a table with start, layer, end and root_only",
                Pattern::names(),
                crate::topology::rpc::StarPattern::names()
            ))),
        }
    }
}

/// `"30ms"` (a delay) or `"p95"` (a percentile of recent times to first token).
pub(super) struct RawHedgeAfter(pub(super) HedgeAfter);

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

/// A topology kind by its name in the registry ([`crate::topology::KINDS`]).
pub(super) struct RawKind(pub(super) TopologyKind);

impl<'de> Deserialize<'de> for RawKind {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        crate::topology::by_name(&s).map(RawKind).ok_or_else(|| {
            de::Error::custom(format!(
                "unknown topology kind \"{s}\"; valid: {}",
                crate::topology::names()
            ))
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
pub(super) struct RawBaseline {
    pub(super) device: Option<RawDevice>,
    pub(super) count: Option<u32>,
    pub(super) engine: Option<RawEngine>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSlo {
    pub(super) ttft: Option<Dur>,
    pub(super) tpot: Option<Dur>,
    pub(super) itl: Option<Dur>,
    pub(super) e2e: Option<Dur>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawReference {
    pub(super) source: String,
    pub(super) metric: String,
    pub(super) value: toml::Value,
    pub(super) tolerance: Fraction,
    /// Whether a figure of the scenario or its profiles was calibrated on this value.
    #[serde(default)]
    pub(super) fitted: bool,
    /// Which run the figure is compared with: topology (default), colocated or baseline.
    #[serde(default)]
    pub(super) run: Option<String>,
    /// Why the prediction misses (or meets) the figure, printed with the check.
    #[serde(default)]
    pub(super) note: Option<String>,
}

//! The device profile type (DESIGN §6): what a device can do, each figure with its source.
//! Loading profiles from `profiles/` files is the scenario's job (`scenario::profile`).

use crate::units::{ByteRate, Bytes, Dur, FlopRate};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The fraction of peak that real kernels reach: of the peak FLOP rate (`compute`) and of
/// the peak memory bandwidth (`memory`).
#[derive(Clone, Copy, Debug, PartialEq, Deserialize, Serialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a table of two fractions of peak, like { compute = 0.6, memory = 0.7 }"
)]
pub struct Pair {
    pub compute: f64,
    pub memory: f64,
}

/// The kind of pass a piece of work belongs to, for the efficiency it runs at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PassKind {
    Prefill,
    Decode,
}

/// The fraction of peak that real kernels reach: one pair for the device, and optionally
/// a pair for each kind of work where one pair cannot fit them all (compute-model.md,
/// "Efficiencies").
#[derive(Clone, Copy, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Efficiency {
    pub compute: f64,
    pub memory: f64,
    /// The dense work (the weights' matrix products, the LM head) of a prefill; absent: the
    /// device's pair.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefill: Option<Pair>,
    /// The dense work of a decode step; absent: the device's pair.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decode: Option<Pair>,
    /// Attention over the context (QK^T, AV and the KV cache's reads and writes), in both
    /// kinds of pass; absent: the pair of the pass's dense work.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attention: Option<Pair>,
}

impl Efficiency {
    /// One pair for all work.
    pub fn new(compute: f64, memory: f64) -> Self {
        Efficiency {
            compute,
            memory,
            prefill: None,
            decode: None,
            attention: None,
        }
    }

    /// The pair of a pass's dense work.
    pub fn dense(&self, kind: PassKind) -> Pair {
        let own = match kind {
            PassKind::Prefill => self.prefill,
            PassKind::Decode => self.decode,
        };
        own.unwrap_or(Pair {
            compute: self.compute,
            memory: self.memory,
        })
    }

    /// The pair of a pass's attention.
    pub fn attention(&self, kind: PassKind) -> Pair {
        self.attention.unwrap_or_else(|| self.dense(kind))
    }

    /// Every figure the profile sets, with its field path (`efficiency.prefill.compute`, ...).
    fn figures(&self) -> Vec<(&'static str, f64)> {
        let mut out = vec![
            ("efficiency.compute", self.compute),
            ("efficiency.memory", self.memory),
        ];
        let kinds = [
            (
                self.prefill,
                "efficiency.prefill.compute",
                "efficiency.prefill.memory",
            ),
            (
                self.decode,
                "efficiency.decode.compute",
                "efficiency.decode.memory",
            ),
            (
                self.attention,
                "efficiency.attention.compute",
                "efficiency.attention.memory",
            ),
        ];
        for (pair, c, m) in kinds {
            if let Some(p) = pair {
                out.push((c, p.compute));
                out.push((m, p.memory));
            }
        }
        out
    }
}

/// A device profile as written in a file or an inline `device = { ... }` table.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceProfile {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    pub memory: Bytes,
    /// Dense bf16 peak.
    pub flops: FlopRate,
    pub mem_bandwidth: ByteRate,
    pub efficiency: Efficiency,
    #[serde(default)]
    pub overhead_per_layer: Dur,
    /// A fixed cost of each request's prefill on this device (a real server's HTTP and
    /// request setup, as `inferlat calibrate` fits it); absent means none.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub overhead_per_request: Dur,
    /// Where each figure comes from, keyed by field name.
    #[serde(default)]
    pub sources: BTreeMap<String, String>,
}

fn is_zero(d: &Dur) -> bool {
    d.get().is_zero()
}

impl DeviceProfile {
    /// The built-in zero-compute device: isolates the network in network-only scenarios.
    pub fn ideal() -> Self {
        DeviceProfile {
            name: "ideal".into(),
            description: Some(
                "zero compute time and unlimited memory: isolates the network".into(),
            ),
            memory: Bytes::new(f64::INFINITY),
            flops: FlopRate::new(f64::INFINITY),
            mem_bandwidth: ByteRate::new(f64::INFINITY),
            efficiency: Efficiency::new(1.0, 1.0),
            overhead_per_layer: Dur::default(),
            overhead_per_request: Dur::default(),
            sources: BTreeMap::new(),
        }
    }

    pub fn is_ideal(&self) -> bool {
        self.flops.get().is_infinite() && self.mem_bandwidth.get().is_infinite()
    }

    /// `count` devices of this kind acting as one (tensor parallel inside one box):
    /// memory, compute and bandwidth add up; per-layer overhead stays.
    pub fn times(&self, count: u32) -> Self {
        if count <= 1 {
            return self.clone();
        }
        let n = count as f64;
        DeviceProfile {
            name: format!("{}x{}", count, self.name),
            memory: Bytes::new(self.memory.get() * n),
            flops: FlopRate::new(self.flops.get() * n),
            mem_bandwidth: ByteRate::new(self.mem_bandwidth.get() * n),
            ..self.clone()
        }
    }

    /// Checks the figures are physically possible; returns (field, message) pairs.
    pub fn check(&self) -> Vec<(&'static str, String)> {
        let mut problems = Vec::new();
        use crate::scenario::limits::MIN_EFFICIENCY;
        let eff_ok = |v: f64| (MIN_EFFICIENCY..=1.0).contains(&v);
        for (field, v) in self.efficiency.figures() {
            if !eff_ok(v) {
                problems.push((
                    field,
                    format!(
                        "must be in [{MIN_EFFICIENCY:e}, 1], got {}: below it one step's modelled time leaves the range a run can wait for",
                        crate::scenario::limits::show(v)
                    ),
                ));
            }
        }
        if self.flops.get() <= 0.0 {
            problems.push(("flops", "must be greater than zero".to_string()));
        }
        if self.mem_bandwidth.get() <= 0.0 {
            problems.push(("mem_bandwidth", "must be greater than zero".to_string()));
        }
        if self.memory.get() <= 0.0 {
            problems.push(("memory", "must be greater than zero".to_string()));
        }
        problems
    }
}

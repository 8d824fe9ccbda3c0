//! The device profile type (DESIGN §6): what a device can do, each figure with its source.
//! Loading profiles from `profiles/` files is the scenario's job (`scenario::profile`).

use crate::units::{ByteRate, Bytes, Dur, FlopRate};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The fraction of peak that real kernels reach.
#[derive(Clone, Copy, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Efficiency {
    pub compute: f64,
    pub memory: f64,
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
            efficiency: Efficiency {
                compute: 1.0,
                memory: 1.0,
            },
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
        if !eff_ok(self.efficiency.compute) {
            problems.push((
                "efficiency.compute",
                format!(
                    "must be in [{MIN_EFFICIENCY:e}, 1], got {}: below it one step's modelled time leaves the range a run can wait for",
                    crate::scenario::limits::show(self.efficiency.compute)
                ),
            ));
        }
        if !eff_ok(self.efficiency.memory) {
            problems.push((
                "efficiency.memory",
                format!(
                    "must be in [{MIN_EFFICIENCY:e}, 1], got {}: below it one step's modelled time leaves the range a run can wait for",
                    crate::scenario::limits::show(self.efficiency.memory)
                ),
            ));
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

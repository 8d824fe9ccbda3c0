//! Scenario -> Plan: each request's route, the bytes on every hop, the compute of every
//! node, and the analytic floor (propagation + serialization + compute, no queueing).

pub mod schedule;

use crate::compute::Stage;
use crate::net::wire;
use crate::scenario::{LinkChange, LinkParams, Scenario, TopologyKind};
use schedule::Shape;
use std::time::Duration;

/// Why a valid scenario cannot be run by this version.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error(
        "topology kind `{0}` is parsed and validated, but running it is not available yet in this version of inferlat; only `direct` runs today"
    )]
    Unsupported(TopologyKind),
    #[error("node \"{0}\" is a worker without a device")]
    NoDevice(String),
}

/// A hop of the route: one link direction.
#[derive(Clone, Debug)]
pub struct Hop {
    pub from: String,
    pub to: String,
    pub link: LinkParams,
    /// The link preset it started from, if any.
    pub preset: Option<&'static str>,
    /// How the link changes during the measured phase.
    pub changes: Vec<LinkChange>,
}

/// Everything the harness needs to run a scenario, computed without I/O.
#[derive(Clone, Debug)]
pub struct Plan {
    pub kind: TopologyKind,
    /// Index of the client node and of the worker node.
    pub client: usize,
    pub worker: usize,
    /// Node names from the client to the worker.
    pub route: Vec<String>,
    /// client -> worker.
    pub up: Hop,
    /// worker -> client.
    pub down: Hop,
    /// The worker's compute.
    pub stage: Stage,
    /// Continuous batching limit of the worker (and of the baseline, which runs the same
    /// serving software on its own box).
    pub max_batch: u32,
    /// The local-GPU baseline's compute, when the scenario has one.
    pub baseline: Option<Stage>,
    /// The median request, for printing.
    pub typical: Shape,
    /// What the user should know about how this version runs the plan.
    pub notes: Vec<String>,
}

/// The lowest value each metric could take for one request: no queueing, no loss, no
/// congestion control, no harness cost.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Floor {
    pub ttft: Duration,
    pub tpot: Duration,
    pub itl: Duration,
    pub e2e: Duration,
}

/// Bytes of one request on each direction of the route (frame payloads and headers, not
/// counting QUIC's own overhead).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bytes {
    pub up: u64,
    pub down: u64,
}

pub fn plan(s: &Scenario) -> Result<Plan, PlanError> {
    if s.topology.kind != TopologyKind::Direct {
        return Err(PlanError::Unsupported(s.topology.kind));
    }
    let (client, worker) = (s.topology.path[0], s.topology.path[1]);
    let node = &s.nodes[worker];
    let device = node
        .device
        .clone()
        .ok_or_else(|| PlanError::NoDevice(node.name.clone()))?;
    let hop = |from: usize, to: usize| Hop {
        from: s.nodes[from].name.clone(),
        to: s.nodes[to].name.clone(),
        link: s
            .link(from, to)
            .map(|l| l.params.clone())
            .unwrap_or_else(LinkParams::ideal),
        preset: s.link(from, to).and_then(|l| l.preset),
        changes: s
            .link(from, to)
            .map(|l| l.changes.clone())
            .unwrap_or_default(),
    };
    let stage = Stage {
        device,
        model: s.model.clone(),
        layers: node.layers.len() as u32,
        head: true,
    };
    let baseline = s.baseline.as_ref().map(|b| Stage {
        device: b.device.times(b.count),
        model: s.model.clone(),
        layers: s.model.layers,
        head: true,
    });
    let (up, down) = (hop(client, worker), hop(worker, client));
    let mut notes: Vec<String> = Vec::new();
    if !up.changes.is_empty() || !down.changes.is_empty() {
        notes.push("links change during the run; the floor uses each link as it starts".into());
    }
    if up.link.trace.is_some() || down.link.trace.is_some() {
        notes.push(
            "a trace-driven link's floor takes its fastest stretch of delivery opportunities"
                .into(),
        );
    }
    Ok(Plan {
        kind: s.topology.kind,
        client,
        worker,
        route: s
            .topology
            .path
            .iter()
            .map(|&i| s.nodes[i].name.clone())
            .collect(),
        up,
        down,
        stage,
        max_batch: node.max_batch.max(1),
        baseline,
        typical: Shape {
            prompt: s.workload.prompt_tokens.median(),
            output: s.workload.output_tokens.median(),
        },
        notes,
    })
}

impl Plan {
    /// Bytes of one request of this shape on the way up and down.
    pub fn bytes(&self, shape: Shape) -> Bytes {
        let up = wire::HEADER_LEN + wire::request_payload_len(shape.prompt, &self.route);
        let down = shape.output as usize * wire::TOKEN_FRAME_LEN
            + wire::done_frame_len(&self.route[self.route.len() - 1]);
        Bytes {
            up: up as u64,
            down: down as u64,
        }
    }

    /// The analytic floor of a request through the topology.
    pub fn floor(&self, shape: Shape) -> Floor {
        let bytes = self.bytes(shape);
        let min_delay = |l: &LinkParams| l.min_delay();
        let up = self.up.link.serialization(bytes.up as f64) + min_delay(&self.up.link);
        let down =
            self.down.link.serialization(wire::TOKEN_FRAME_LEN as f64) + min_delay(&self.down.link);
        compute_floor(&self.stage, shape, up + down)
    }

    /// The floor of a request on the baseline (compute only), if there is a baseline.
    pub fn baseline_floor(&self, shape: Shape) -> Option<Floor> {
        self.baseline
            .as_ref()
            .map(|b| compute_floor(b, shape, Duration::ZERO))
    }
}

/// Floor of a request on one stage plus a fixed network time before the first token.
fn compute_floor(stage: &Stage, shape: Shape, network: Duration) -> Floor {
    let c = stage.request(shape.prompt, shape.output);
    let ttft = network + c.prefill;
    let decode_total: Duration = c.decode.iter().sum();
    let tpot = if c.decode.is_empty() {
        Duration::ZERO
    } else {
        decode_total / c.decode.len() as u32
    };
    let itl = c.decode.iter().copied().min().unwrap_or(Duration::ZERO);
    Floor {
        ttft,
        tpot,
        itl,
        e2e: ttft + decode_total,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::{self, ProfileLibrary};
    use std::path::Path;

    fn scenario(text: &str) -> Scenario {
        scenario::parse(Path::new("t.toml"), text, &ProfileLibrary::built_in()).unwrap()
    }

    const NET_ONLY: &str = r#"
name = "t"
[model]
preset = "llama-2-7b"
[workload]
prompt_tokens = 100
output_tokens = 10
arrival = { kind = "constant", rate = 1.0 }
requests = 5
[[node]]
name = "client"
role = "client"
[[node]]
name = "gpu"
role = "worker"
device = "ideal"
[[link]]
between = ["client", "gpu"]
rtt = "50ms"
bandwidth = "8Mbit/s"
"#;

    #[test]
    fn network_only_floor_is_rtt_plus_serialization() {
        let p = plan(&scenario(NET_ONLY)).unwrap();
        let shape = Shape {
            prompt: 100,
            output: 10,
        };
        let b = p.bytes(shape);
        // Request frame: 5 + 8 + 4 + 1 + (1 + 6) + (1 + 3) + 400 = 429 bytes.
        assert_eq!(b.up, 429);
        assert_eq!(b.down, 10 * 13 + 5 + 1 + 3 + 16);
        let f = p.floor(shape);
        // 429 B and 13 B at 8 Mbit/s = 429 µs + 13 µs, plus 2 × 25 ms.
        assert_eq!(f.ttft, Duration::from_micros(50_000 + 429 + 13));
        assert_eq!(f.e2e, f.ttft);
        assert_eq!(f.tpot, Duration::ZERO);
    }

    #[test]
    fn compute_floor_adds_prefill_and_decode() {
        let text = NET_ONLY.replace("device = \"ideal\"", "device = \"a100-80g\"")
            + "[baseline]\ndevice = \"h100-sxm\"\n";
        let p = plan(&scenario(&text)).unwrap();
        let shape = Shape {
            prompt: 100,
            output: 10,
        };
        let f = p.floor(shape);
        let c = p.stage.request(100, 10);
        assert_eq!(f.e2e - f.ttft, c.decode.iter().sum::<Duration>());
        let bf = p.baseline_floor(shape).unwrap();
        assert!(bf.e2e < f.e2e, "the H100 with no network is faster");
        assert_eq!(bf.ttft, p.baseline.as_ref().unwrap().prefill(100));
    }

    #[test]
    fn inline_device_table_is_a_profile() {
        let inline = r#"device = { memory = "24GB", flops = "100TFLOP/s", mem_bandwidth = "1TB/s", efficiency = { compute = 0.5, memory = 0.5 } }"#;
        let p = plan(&scenario(&NET_ONLY.replace("device = \"ideal\"", inline))).unwrap();
        assert_eq!(p.stage.device.name, "inline");
        // Decode reads the layers and the LM head (13.15 GB) at 0.5 TB/s effective: 26.3 ms.
        assert!(p.stage.decode(100) >= Duration::from_micros(26_300));
        let bad = NET_ONLY.replace(
            "device = \"ideal\"",
            &inline.replace("compute = 0.5", "compute = 1.5"),
        );
        let e = scenario::parse(Path::new("t.toml"), &bad, &ProfileLibrary::built_in())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("efficiency.compute") && e.contains("(0, 1]"),
            "{e}"
        );
    }

    #[test]
    fn other_kinds_are_planned_later() {
        let text =
            NET_ONLY.to_string() + "[topology]\nkind = \"tensor\"\npath = [\"client\", \"gpu\"]\n";
        assert!(matches!(
            plan(&scenario(&text)),
            Err(PlanError::Unsupported(TopologyKind::Tensor))
        ));
    }
}

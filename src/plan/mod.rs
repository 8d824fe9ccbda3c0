//! Scenario -> Plan: each request's route, the bytes on every hop, the compute of every
//! node, and the analytic floor (propagation + serialization + compute, no queueing).
//!
//! What is particular to a topology kind (the nodes' parts, the route, the legs of a
//! request's critical path) comes from its module in [`crate::topology`]; this module
//! resolves the legs against the links and the devices.

pub mod estimate;
pub mod schedule;

use crate::compute::{EngineSpec, Stage};
use crate::net::wire;
use crate::scenario::{HedgeAfter, LinkChange, LinkParams, Scenario, TopologyKind};
use crate::topology::pattern::{Op, Pattern};
use crate::topology::rpc::StarPattern;
use crate::topology::{At, Ctx, Kind, LayoutError, Leg, Step};
pub use crate::topology::{ClientPlan, NodePlan, Part, Route};
use schedule::Shape;
use std::collections::HashMap;
use std::time::Duration;

/// Why a valid scenario cannot be run by this version.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error(transparent)]
    Layout(#[from] LayoutError),
    #[error("node \"{0}\" is a worker without a device")]
    NoDevice(String),
    #[error(
        "a prompt of {tokens} tokens makes frames of {bytes} bytes (its hidden states or token ids), more than the frame limit of {max} bytes; use shorter prompts"
    )]
    FrameTooLarge { tokens: u32, bytes: u64, max: u32 },
    #[error(
        "a prompt of {tokens} tokens makes the pattern's \"{sync}\" messages {bytes} bytes, more than the frame limit of {max} bytes; use shorter prompts or a smaller payload"
    )]
    PatternFrameTooLarge {
        sync: &'static str,
        tokens: u32,
        bytes: u64,
        max: u32,
    },
}

/// A link direction the topology uses, and what crosses it.
#[derive(Clone, Debug)]
pub struct Hop {
    pub from: String,
    pub to: String,
    pub link: LinkParams,
    /// The link preset it started from, if any.
    pub preset: Option<&'static str>,
    /// How the link changes during the measured phase.
    pub changes: Vec<LinkChange>,
    /// Bytes of one typical request's prefill step (the request and the prompt's hidden
    /// states) on this link, frame headers included, QUIC's overhead not.
    pub prefill_bytes: u64,
    /// Bytes of one decode step (one output token) on this link.
    pub token_bytes: u64,
}

/// Everything the harness needs to run a scenario, computed without I/O.
#[derive(Clone, Debug)]
pub struct Plan {
    pub kind: TopologyKind,
    pub route: Route,
    /// Node names along the path, from the (first) client.
    pub path: Vec<String>,
    pub clients: Vec<ClientPlan>,
    /// The nodes the requests reach.
    pub nodes: Vec<NodePlan>,
    /// Who opens a QUIC connection to whom (scenario node indices), clients' first.
    pub connections: Vec<(usize, usize)>,
    /// Every link direction the topology uses.
    pub hops: Vec<Hop>,
    pub hedge_after: Option<HedgeAfter>,
    /// Sizes of what crosses the links.
    pub hidden_bytes: u64,
    pub logits_slice_bytes: u64,
    /// A tensor group's pattern, and its ops for this model and group (empty for any other
    /// kind): what the root and the members do in each step, in order.
    pub pattern: Pattern,
    pub tensor: Vec<Op>,
    /// A star's calls to each remote stage per step (the default for any other kind).
    pub star: StarPattern,
    /// Continuous batching limit of the baseline, which runs the same serving software as
    /// the topology's first worker on its own box.
    pub max_batch: u32,
    /// The local-GPU baseline's compute, when the scenario has one.
    pub baseline: Option<Stage>,
    /// The median request, for printing.
    pub typical: Shape,
    /// What the user should know about how this version runs the plan.
    pub notes: Vec<String>,
    /// What in the scenario looks like a mistake without stopping it (a declared link the
    /// topology never uses).
    pub warnings: Vec<String>,
    /// Standby servers of a client-relayed pipeline (docs/faults.md): (a stage's node, a
    /// worker off the path holding exactly its span, linked to every client), where a
    /// failed stage's session moves.
    pub standby: Vec<(usize, usize)>,
    names: Vec<String>,
    links: Vec<((usize, usize), Hop)>,
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

pub fn plan(s: &Scenario) -> Result<Plan, PlanError> {
    let kind = s.topology.kind;
    let names: Vec<String> = s.nodes.iter().map(|n| n.name.clone()).collect();
    let roles: Vec<_> = s.nodes.iter().map(|n| n.role).collect();
    let path = &s.topology.path;
    let (route, parts) = kind.layout(path, &roles, s.topology.hops)?;
    let ways = parts.len().max(1) as u32;
    let mut nodes = parts
        .iter()
        .map(|&(i, part)| node_plan(s, i, part, ways))
        .collect::<Result<Vec<_>, _>>()?;
    let clients = client_plans(s, kind);
    let standby = standby(s, &route, &parts, &clients);
    for &(_, r) in &standby {
        nodes.push(node_plan(s, r, Part::Stage, ways)?);
    }
    let mut notes: Vec<String> = Vec::new();
    if kind.client_heads() && clients.iter().any(|c| c.head.is_none()) {
        notes.push(
            "a client without a `device` computes the embeddings and the LM head in no time".into(),
        );
    }
    let client_indices: Vec<usize> = clients.iter().map(|c| c.index).collect();
    let mut connections = route.connections(&client_indices);
    for &(_, r) in &standby {
        connections.extend(client_indices.iter().map(|&c| (c, r)));
    }
    let links = links_of(s, &names, &connections);
    let mut unused = unused_links(s, &names, &links);
    for port in &s.ports {
        let crossed = links
            .iter()
            .any(|(_, h)| h.link.port.as_ref().is_some_and(|p| p.name == port.name));
        if !crossed {
            unused.push(format!(
                "the port \"{}\" is declared but no link the {} topology uses crosses it: it changes nothing (name it in a link's `port`)",
                port.name, s.topology.kind
            ));
        }
    }
    if links.iter().any(|(_, h)| !h.changes.is_empty()) {
        notes.push("links change during the run; the floor uses each link as it starts".into());
    }
    if links.iter().any(|(_, h)| h.link.trace.is_some()) {
        notes.push(
            "a trace-driven link's floor takes its fastest stretch of delivery opportunities"
                .into(),
        );
    }
    let baseline = s.baseline.as_ref().map(|b| Stage {
        device: b.device.times(b.count),
        model: s.model.clone(),
        layers: s.model.layers,
        head: true,
    });
    let max_batch = nodes
        .iter()
        .find(|n| n.part != Part::Relay)
        .map(|n| n.max_batch)
        .unwrap_or(1);
    let hidden_bytes = s.model.hidden_state_bytes().round() as u64;
    // The largest frame a request makes: its prompt's token ids, or its prompt's hidden
    // states where they cross a link.
    let longest = s.workload.prompt_tokens.high();
    let largest = if route.carries_hidden_states() {
        longest as u64 * hidden_bytes + 12
    } else {
        4 * longest as u64
    };
    if largest > wire::DEFAULT_MAX_FRAME as u64 {
        return Err(PlanError::FrameTooLarge {
            tokens: longest,
            bytes: largest,
            max: wire::DEFAULT_MAX_FRAME,
        });
    }
    let tensor = if kind.takes_pattern() {
        s.topology.pattern.ops(&s.model, ways)
    } else {
        Vec::new()
    };
    // The largest message of the pattern, for the longest prompt.
    for op in &tensor {
        if let Op::Sync(m) = op {
            let bytes = wire::activations_frame_len(m.bytes(longest) as usize) as u64;
            if bytes > wire::DEFAULT_MAX_FRAME as u64 {
                return Err(PlanError::PatternFrameTooLarge {
                    sync: m.name,
                    tokens: longest,
                    bytes,
                    max: wire::DEFAULT_MAX_FRAME,
                });
            }
        }
    }
    // The largest call of a star's pattern, for the longest prompt and the largest span.
    if kind.takes_star_pattern() {
        let layers = nodes
            .iter()
            .filter(|n| n.part == Part::Stage)
            .filter_map(|n| n.stage.as_ref().map(|st| st.layers))
            .max()
            .unwrap_or(0);
        for call in s.topology.star.calls(&s.model, longest, longest, layers) {
            let bytes = call.request.max(call.reply.unwrap_or(0));
            let bytes = wire::activations_frame_len(bytes as usize) as u64;
            if bytes > wire::DEFAULT_MAX_FRAME as u64 {
                return Err(PlanError::PatternFrameTooLarge {
                    sync: call.name,
                    tokens: longest,
                    bytes,
                    max: wire::DEFAULT_MAX_FRAME,
                });
            }
        }
    }
    let hedge_after = matches!(route, Route::Hedged { .. }).then_some(s.topology.hedge_after);
    let mut plan = Plan {
        kind: s.topology.kind,
        route,
        path: path.iter().map(|&i| names[i].clone()).collect(),
        hops: Vec::new(),
        connections,
        hedge_after,
        hidden_bytes,
        logits_slice_bytes: (s.model.vocab as u64).div_ceil(ways as u64) * 4,
        pattern: s.topology.pattern.clone(),
        tensor,
        star: s.topology.star.clone(),
        max_batch,
        baseline,
        typical: Shape {
            prompt: s.workload.prompt_tokens.median(),
            output: s.workload.output_tokens.median(),
        },
        notes,
        warnings: unused,
        clients,
        nodes,
        standby,
        names,
        links,
    };
    plan.count_bytes();
    Ok(plan)
}

/// The standby servers of a client-relayed pipeline: each worker off the path whose span
/// is exactly a stage's, with a declared link to every client.
fn standby(
    s: &Scenario,
    route: &Route,
    parts: &[(usize, Part)],
    clients: &[ClientPlan],
) -> Vec<(usize, usize)> {
    let Route::Pipeline {
        chains,
        server_to_server: false,
    } = route
    else {
        return Vec::new();
    };
    let on_path =
        |i: usize| parts.iter().any(|&(n, _)| n == i) || clients.iter().any(|c| c.index == i);
    let mut out = Vec::new();
    for chain in chains {
        let Some(&stage) = chain.last() else { continue };
        for (r, n) in s.nodes.iter().enumerate() {
            if n.role == crate::scenario::Role::Worker
                && !on_path(r)
                && n.layers == s.nodes[stage].layers
                && clients
                    .iter()
                    .all(|c| s.link(c.index, r).is_some() && s.link(r, c.index).is_some())
            {
                out.push((stage, r));
            }
        }
    }
    out
}

/// A node's plan from the part its kind gives it: relays compute nothing, whole-model
/// workers their layers and the LM head, stages their span, a star host its span and the
/// head, a tensor group's nodes a 1/`ways` slice of every layer.
fn node_plan(s: &Scenario, i: usize, part: Part, ways: u32) -> Result<NodePlan, PlanError> {
    let n = &s.nodes[i];
    let device = || {
        n.device
            .clone()
            .ok_or_else(|| PlanError::NoDevice(n.name.clone()))
    };
    let span = |head: bool| -> Result<Stage, PlanError> {
        Ok(Stage {
            device: device()?,
            model: s.model.clone(),
            layers: n.layers.len() as u32,
            head,
        })
    };
    let (stage, head) = match part {
        Part::Relay => (None, None),
        Part::Whole => (Some(span(true)?), None),
        Part::Stage => (Some(span(false)?), None),
        Part::StarHost => {
            let head = Stage {
                layers: 0,
                ..span(true)?
            };
            (Some(span(false)?), Some(head))
        }
        Part::TensorRoot | Part::TensorMember => {
            // A 1/`ways` slice of every layer; attention over the context and the LM head
            // whole on the root where the pattern keeps them there. The request's fixed
            // cost is charged to the layers, not again to the head.
            let root = part == Part::TensorRoot;
            let only = s.topology.pattern.root_only;
            let mut model = s.model.sliced(ways);
            if only.attention && root {
                model.q_dim = s.model.q_dim;
                model.kv_dim = s.model.kv_dim;
            } else if only.attention {
                model = model.without_attention();
            }
            let slice = Stage {
                device: device()?,
                model,
                layers: s.model.layers,
                head: false,
            };
            let head_model = match (only.lm_head, root) {
                (false, _) => Some(s.model.sliced(ways)),
                (true, true) => Some(s.model.clone()),
                (true, false) => None,
            };
            let mut head_device = device()?;
            head_device.overhead_per_request = Default::default();
            let head = head_model.map(|model| Stage {
                device: head_device,
                model,
                layers: 0,
                head: true,
            });
            (Some(slice), head)
        }
    };
    // The KV caches of a full batch of the workload's longest requests must fit beside
    // the weights the device holds (compute-model.md, "The batcher").
    let longest = s
        .workload
        .prompt_tokens
        .high()
        .saturating_add(s.workload.output_tokens.high());
    let weights = stage.as_ref().map_or(0.0, |st| st.weight_bytes())
        + head.as_ref().map_or(0.0, |h| h.weight_bytes());
    let kv_limit = stage
        .as_ref()
        .map_or(u32::MAX, |st| st.kv_batch_limit(longest, weights));
    Ok(NodePlan {
        index: i,
        name: n.name.clone(),
        part,
        stage,
        head,
        max_batch: n.max_batch.max(1).min(kv_limit),
        software: n.software,
    })
}

/// The clients and, where the kind has them compute the embeddings and the LM head, that
/// head on each client's own device.
fn client_plans(s: &Scenario, kind: &dyn Kind) -> Vec<ClientPlan> {
    s.topology
        .clients
        .iter()
        .map(|&c| ClientPlan {
            index: c,
            name: s.nodes[c].name.clone(),
            share: s.nodes[c].share,
            head: match &s.nodes[c].device {
                Some(d) if kind.client_heads() => Some(Stage {
                    device: d.clone(),
                    model: s.model.clone(),
                    layers: 0,
                    head: true,
                }),
                _ => None,
            },
        })
        .collect()
}

/// Both directions of every connection's link, ideal where the scenario declares none.
/// A warning for each declared link that no connection of the route crosses in either
/// direction: its settings change nothing, which is most often a typo in a name or a path.
fn unused_links(s: &Scenario, names: &[String], used: &[((usize, usize), Hop)]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut seen: Vec<(usize, usize)> = Vec::new();
    for l in &s.links {
        let pair = (l.from.min(l.to), l.from.max(l.to));
        if seen.contains(&pair) {
            continue;
        }
        seen.push(pair);
        let crossed = used
            .iter()
            .any(|((a, b), _)| (*a, *b) == (l.from, l.to) || (*a, *b) == (l.to, l.from));
        if !crossed {
            out.push(format!(
                "the link between \"{}\" and \"{}\" is declared but the {} topology never uses it: its settings change nothing (check the names and [topology] path)",
                names[pair.0], names[pair.1], s.topology.kind
            ));
        }
    }
    out
}

fn links_of(
    s: &Scenario,
    names: &[String],
    connections: &[(usize, usize)],
) -> Vec<((usize, usize), Hop)> {
    let mut links: Vec<((usize, usize), Hop)> = Vec::new();
    for &(a, b) in connections {
        for (x, y) in [(a, b), (b, a)] {
            if links.iter().any(|(k, _)| *k == (x, y)) {
                continue;
            }
            let def = s.link(x, y);
            links.push((
                (x, y),
                Hop {
                    from: names[x].clone(),
                    to: names[y].clone(),
                    link: def
                        .map(|l| l.params.clone())
                        .unwrap_or_else(LinkParams::ideal),
                    preset: def.and_then(|l| l.preset),
                    changes: def.map(|l| l.changes.clone()).unwrap_or_default(),
                    prefill_bytes: 0,
                    token_bytes: 0,
                },
            ));
        }
    }
    links
}

fn sum_bytes(legs: &[Leg], out: &mut HashMap<(usize, usize), u64>) {
    for leg in legs {
        match leg {
            Leg::Send { from, to, bytes } | Leg::Bytes { from, to, bytes } => {
                *out.entry((*from, *to)).or_default() += bytes
            }
            Leg::Parallel(branches) => branches.iter().for_each(|b| sum_bytes(b, out)),
            Leg::Compute { .. } | Leg::Busy { .. } => {}
        }
    }
}

/// Keeps, per link, the larger of what it carries and what it held.
fn keep_max(into: &mut HashMap<(usize, usize), u64>, from: HashMap<(usize, usize), u64>) {
    for (k, v) in from {
        let e = into.entry(k).or_default();
        *e = (*e).max(v);
    }
}

impl Plan {
    /// The behaviour of the plan's topology kind.
    pub fn topology(&self) -> &'static dyn Kind {
        self.kind
    }

    /// What the kind builds its legs from.
    fn ctx(&self) -> Ctx<'_> {
        Ctx {
            route: &self.route,
            nodes: &self.nodes,
            names: &self.names,
            hidden_bytes: self.hidden_bytes,
            logits_slice_bytes: self.logits_slice_bytes,
            tensor: &self.tensor,
            star: &self.star,
        }
    }

    /// Bytes per link of one typical request that crosses it: from each client, and for
    /// hedged replicas with each one as the first copy's.
    fn count_bytes(&mut self) {
        let shape = self.typical;
        let (mut pre, mut tok): (HashMap<_, u64>, HashMap<_, u64>) =
            (HashMap::new(), HashMap::new());
        for client in self.clients.iter().map(|c| c.index) {
            for primary in 0..self.route.primaries() {
                let prefill = Step {
                    client,
                    primary,
                    tokens: shape.prompt,
                    context: shape.prompt,
                    prefill: true,
                };
                let decode = Step {
                    tokens: 1,
                    context: shape.prompt.saturating_add(1),
                    prefill: false,
                    ..prefill
                };
                let (mut p1, mut t1) = (HashMap::new(), HashMap::new());
                sum_bytes(&self.first_token_legs(prefill, shape.prompt), &mut p1);
                let mut token_legs = self.step(decode);
                token_legs.extend(self.topology().token_legs(&self.ctx(), client, primary));
                sum_bytes(&token_legs, &mut t1);
                keep_max(&mut pre, p1);
                keep_max(&mut tok, t1);
            }
        }
        for (k, h) in self.links.iter_mut() {
            h.prefill_bytes = pre.get(k).copied().unwrap_or(0);
            h.token_bytes = tok.get(k).copied().unwrap_or(0);
        }
        self.hops = self.links.iter().map(|(_, h)| h.clone()).collect();
    }

    fn step(&self, step: Step) -> Vec<Leg> {
        self.topology().step_legs(&self.ctx(), step)
    }

    /// A request's legs up to its first token: the request, the prefill, the token back.
    fn first_token_legs(&self, prefill: Step, prompt: u32) -> Vec<Leg> {
        let (kind, ctx) = (self.topology(), self.ctx());
        let mut legs = kind.request_legs(&ctx, prefill.client, prompt, prefill.primary);
        legs.extend(kind.step_legs(&ctx, prefill));
        legs.extend(kind.token_legs(&ctx, prefill.client, prefill.primary));
        legs
    }

    fn node(&self, index: usize) -> Option<&NodePlan> {
        self.nodes.iter().find(|n| n.index == index)
    }

    fn link(&self, from: usize, to: usize) -> Option<&Hop> {
        self.links
            .iter()
            .find(|(k, _)| *k == (from, to))
            .map(|(_, h)| h)
    }

    /// What computes at a leg's place: a node's layers, or a star host's or a pipeline
    /// client's embeddings and LM head.
    fn stage_at(&self, at: At) -> Option<&Stage> {
        match at {
            At::Layers(i) => self.node(i).and_then(|n| n.stage.as_ref()),
            At::Head(i) => self.node(i).and_then(|n| n.head.as_ref()).or_else(|| {
                self.clients
                    .iter()
                    .find(|c| c.index == i)
                    .and_then(|c| c.head.as_ref())
            }),
        }
    }

    fn time(&self, legs: &[Leg]) -> Duration {
        legs.iter()
            .map(|leg| match leg {
                Leg::Send { from, to, bytes } => self
                    .link(*from, *to)
                    .map(|h| h.link.serialization(*bytes as f64) + h.link.min_delay())
                    .unwrap_or_default(),
                // An engine that cannot predict a pass adds nothing: the floor stays a floor.
                Leg::Compute { at, work, scale } => self
                    .stage_at(*at)
                    .and_then(|stage| stage.floor(*work))
                    .unwrap_or_default()
                    .mul_f64(*scale),
                Leg::Bytes { .. } => Duration::ZERO,
                Leg::Busy { time, .. } => *time,
                Leg::Parallel(branches) => branches
                    .iter()
                    .map(|b| self.time(b))
                    .max()
                    .unwrap_or_default(),
            })
            .sum()
    }

    /// The same nodes, devices, layers, batching and route with no network between them:
    /// every link direction ideal (no delay, jitter, loss, duplication or rate limit, no MTU)
    /// and without its changes. The topology run against this plan's run is the network's
    /// cost alone (the network tax); this plan's run against the baseline is the devices'
    /// (the device tax). Each device keeps its own memory and layers, so any topology has
    /// one: "co-located" means joined by a perfect interconnect, not merged into one device.
    pub fn colocated(&self) -> Plan {
        let mut plan = self.clone();
        for (_, hop) in plan.links.iter_mut() {
            hop.link = LinkParams::ideal();
            hop.preset = None;
            hop.changes.clear();
        }
        plan.hops = plan.links.iter().map(|(_, h)| h.clone()).collect();
        plan
    }

    /// The analytic floor of a request through the topology, from the first client.
    pub fn floor(&self, shape: Shape) -> Floor {
        let client = self.clients[0].index;
        // A hedged request may start at any replica: the floor is the fastest's.
        (0..self.route.primaries())
            .map(|primary| {
                let prefill = Step {
                    client,
                    primary,
                    tokens: shape.prompt,
                    context: shape.prompt,
                    prefill: true,
                };
                let ttft = self.time(&self.first_token_legs(prefill, shape.prompt));
                let steps: Vec<Duration> = (1..shape.output)
                    .map(|k| {
                        self.time(&self.step(Step {
                            tokens: 1,
                            context: shape.prompt.saturating_add(k),
                            prefill: false,
                            ..prefill
                        }))
                    })
                    .collect();
                let (ttft, steps) = self.with_software(prefill, ttft, steps);
                floor_of(ttft, &steps)
            })
            .min_by_key(|f| f.e2e)
            .unwrap_or_default()
    }

    /// A whole-model worker's software costs (`send_cost`, `recv_cost`) added to a floor's
    /// first-token time and decode steps, exactly as the worker spends them
    /// (`Node::whole_with_software`), where its token sends overlap the engine's next
    /// steps. (A stage, a star host and a tensor group's nodes spend theirs in turn with
    /// their compute: their kinds' legs hold them as [`Leg::Busy`].) A relay forwards
    /// without any.
    ///
    /// On the path: the receive of the request frame (its bytes as they reach the worker),
    /// before the prefill; then the send of every token frame, one after another. The
    /// engine computes the next step while a token is being sent, so token `k` leaves at
    /// `sent_k = max(ready_k, sent_{k-1}) + s` (`ready_k`: when the engine has it; `s`: one
    /// token frame's send cost): a send that fits in the next step is hidden behind it, a
    /// longer one makes every later token wait. The first token pays `recv + s`; each
    /// decode step becomes `sent_k - sent_{k-1}`. The `Done` frame's send comes after the
    /// last token, on no metric's path.
    fn with_software(
        &self,
        prefill: Step,
        ttft: Duration,
        steps: Vec<Duration>,
    ) -> (Duration, Vec<Duration>) {
        let (kind, ctx) = (self.topology(), self.ctx());
        let producer = kind
            .token_legs(&ctx, prefill.client, prefill.primary)
            .iter()
            .find_map(|leg| match leg {
                Leg::Send { from, .. } => Some(*from),
                _ => None,
            });
        let Some(cost) = producer
            .and_then(|p| self.node(p))
            .filter(|n| n.part == Part::Whole && !n.software.is_zero())
            .map(|n| n.software)
        else {
            return (ttft, steps);
        };
        let received = kind
            .request_legs(&ctx, prefill.client, prefill.tokens, prefill.primary)
            .iter()
            .filter_map(|leg| match leg {
                Leg::Send { to, bytes, .. } if Some(*to) == producer => Some(*bytes),
                _ => None,
            })
            .next_back()
            .unwrap_or(0);
        let s = cost.send.of(wire::TOKEN_FRAME_LEN as u64);
        let ttft = ttft + cost.recv.of(received) + s;
        // Times from the first token's readiness.
        let (mut ready, mut sent) = (Duration::ZERO, s);
        let steps = steps
            .iter()
            .map(|&step| {
                ready += step;
                let next = ready.max(sent) + s;
                let gap = next - sent;
                sent = next;
                gap
            })
            .collect();
        (ttft, steps)
    }

    /// The floor of a request on the baseline (compute only), if there is a baseline.
    pub fn baseline_floor(&self, shape: Shape) -> Option<Floor> {
        let c = self
            .baseline
            .as_ref()?
            .request_floor(shape.prompt, shape.output)?;
        Some(floor_of(c.prefill, &c.decode))
    }

    /// A scenario node's name.
    pub fn node_name(&self, index: usize) -> &str {
        &self.names[index]
    }
}

fn floor_of(ttft: Duration, steps: &[Duration]) -> Floor {
    let decode_total: Duration = steps.iter().sum();
    let tpot = if steps.is_empty() {
        Duration::ZERO
    } else {
        decode_total / steps.len() as u32
    };
    Floor {
        ttft,
        tpot,
        itl: steps.iter().copied().min().unwrap_or(Duration::ZERO),
        e2e: ttft + decode_total,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::testing::ScenarioText;
    use crate::scenario::{self, ProfileLibrary};
    use std::path::Path;

    fn scenario(s: &ScenarioText) -> Scenario {
        scenario::parse(Path::new("t.toml"), &s.build(), &ProfileLibrary::built_in()).unwrap()
    }

    /// A client and a worker on `device` (a TOML value: a quoted profile name or an inline
    /// table) over 50 ms at 8 Mbit/s; five requests of 100 prompt and 10 output tokens, one
    /// a second.
    fn net_only(device: &str) -> ScenarioText {
        ScenarioText::new("t")
            .workload(
                "prompt_tokens = 100\noutput_tokens = 10\narrival = { kind = \"constant\", rate = 1.0 }\nrequests = 5",
            )
            .client("client")
            .node("gpu", "worker", &format!("device = {device}"))
            .link("client", "gpu", "rtt = \"50ms\"\nbandwidth = \"8Mbit/s\"")
    }

    #[test]
    fn network_only_floor_is_rtt_plus_serialization() {
        let p = plan(&scenario(&net_only("\"ideal\""))).unwrap();
        let shape = Shape {
            prompt: 100,
            output: 10,
        };
        let (up, down) = (&p.hops[0], &p.hops[1]);
        assert_eq!((up.from.as_str(), down.from.as_str()), ("client", "gpu"));
        // Request frame: 5 + 8 + 4 + 1 (mode) + 1 (route) + 400 = 419 bytes; then the
        // first token's frame back, and one more token frame per decode step.
        assert_eq!(up.prefill_bytes, 419);
        assert_eq!((down.prefill_bytes, down.token_bytes), (13, 13));
        assert_eq!(up.token_bytes, 0);
        let f = p.floor(shape);
        // 419 B and 13 B at 8 Mbit/s = 419 µs + 13 µs, plus 2 × 25 ms.
        assert_eq!(f.ttft, Duration::from_micros(50_000 + 419 + 13));
        assert_eq!(f.e2e, f.ttft);
        assert_eq!(f.tpot, Duration::ZERO);
    }

    #[test]
    fn compute_floor_adds_prefill_and_decode() {
        let text = net_only("\"a100-80g\"").raw("[baseline]\ndevice = \"h100-sxm\"");
        let p = plan(&scenario(&text)).unwrap();
        let shape = Shape {
            prompt: 100,
            output: 10,
        };
        let f = p.floor(shape);
        let c = p.nodes[0].stage.as_ref().unwrap().request(100, 10);
        assert_eq!(f.e2e - f.ttft, c.decode.iter().sum::<Duration>());
        let bf = p.baseline_floor(shape).unwrap();
        assert!(bf.e2e < f.e2e, "the H100 with no network is faster");
        assert_eq!(bf.ttft, p.baseline.as_ref().unwrap().prefill(100));
    }

    #[test]
    fn inline_device_table_is_a_profile() {
        let inline = r#"{ memory = "24GB", flops = "100TFLOP/s", mem_bandwidth = "1TB/s", efficiency = { compute = 0.5, memory = 0.5 } }"#;
        let p = plan(&scenario(&net_only(inline))).unwrap();
        let stage = p.nodes[0].stage.as_ref().unwrap();
        assert_eq!(stage.device.name, "inline");
        // Decode reads the layers and the LM head (13.15 GB) at 0.5 TB/s effective: 26.3 ms.
        assert!(stage.decode(100) >= Duration::from_micros(26_300));
        let bad = net_only(&inline.replace("compute = 0.5", "compute = 1.5"));
        let e = bad.parse().unwrap_err().to_string();
        assert!(
            e.contains("efficiency.compute") && e.contains("[1e-6, 1]"),
            "{e}"
        );
    }

    /// A pattern that keeps attention and the LM head on the root (as `dllama-0.1` does):
    /// the root's stage computes attention over the context for every head and holds the
    /// whole KV cache, a member's none, and only the root holds a head. What differs between the root's and a member's decode step is
    /// then exactly the attention of all heads (memory bound at this context: the whole KV
    /// cache's bytes at the device's memory efficiency) and the LM head.
    #[test]
    fn root_only_attention_and_head_stay_on_the_root() {
        use crate::topology::pattern::RootOnly;
        let text = ScenarioText::new("t")
            .model("preset = \"llama-2-7b\"")
            .workload(
                "prompt_tokens = 100\noutput_tokens = 10\narrival = { kind = \"constant\", rate = 1.0 }\nrequests = 5",
            )
            .client("client")
            .worker("root", "a100-80g", "")
            .worker("w", "a100-80g", "")
            .link("client", "root", "rtt = \"1ms\"")
            .link("root", "w", "rtt = \"1ms\"")
            .topology("tensor", &["client", "root", "w"], "");
        let mut s = scenario(&text);
        s.topology.pattern = Pattern {
            root_only: RootOnly {
                attention: true,
                lm_head: true,
            },
            ..Pattern::by_name("dllama-0.5").unwrap()
        };
        let p = plan(&s).unwrap();
        let (root, member) = (&p.nodes[0], &p.nodes[1]);
        let (rs, ms) = (root.stage.as_ref().unwrap(), member.stage.as_ref().unwrap());
        assert_eq!((rs.model.q_dim, rs.model.kv_dim), (4096, 4096));
        assert_eq!((ms.model.q_dim, ms.model.kv_dim), (0, 0));
        assert_eq!(rs.model.params, ms.model.params, "the weights stay split");
        assert!(member.head.is_none());
        assert_eq!(root.head.as_ref().unwrap().model.vocab, 32000);
        // The attention of all 32 heads at context 200: K and V of 200 tokens in 32 layers,
        // 2 × 32 × 200 × 4096 × 2 B = 104.9 MB at 2.04 TB/s × 0.75.
        let kv = 2.0 * 32.0 * 200.0 * 4096.0 * 2.0;
        let attention = kv / (2.04e12 * 0.75);
        let diff = rs.decode(200).as_secs_f64() - ms.decode(200).as_secs_f64();
        assert!((diff - attention).abs() < 3e-9, "{diff} s vs {attention} s");
        assert_eq!(
            ms.decode(200),
            ms.decode(0),
            "a member's step ignores the context"
        );
    }

    #[test]
    fn ring_is_not_planned() {
        let text = net_only("\"ideal\"").topology("ring", &["client", "gpu"], "");
        let e = plan(&scenario(&text)).unwrap_err();
        assert!(matches!(
            e,
            PlanError::Layout(LayoutError::Unsupported("ring", _))
        ));
        assert!(e.to_string().contains("server-to-server pipeline"), "{e}");
    }
}

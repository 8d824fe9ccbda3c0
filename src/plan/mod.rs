//! Scenario -> Plan: each request's route, the bytes on every hop, the compute of every
//! node, and the analytic floor (propagation + serialization + compute, no queueing).

pub mod schedule;

use crate::compute::{EngineSpec, Pass as Work, Stage};
use crate::net::wire;
use crate::scenario::{HedgeAfter, Hops, LinkChange, LinkParams, Role, Scenario, TopologyKind};
use schedule::Shape;
use std::collections::HashMap;
use std::time::Duration;

/// Why a valid scenario cannot be run by this version.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error(
        "topology kind `{0}` is parsed and validated, but running it is not available yet in this version of inferlat; exo's ring is a server-to-server pipeline: kind = \"pipeline\", hops = \"server-to-server\""
    )]
    Unsupported(TopologyKind),
    #[error("node \"{0}\" is a worker without a device")]
    NoDevice(String),
    #[error(
        "a prompt of {tokens} tokens makes frames of {bytes} bytes (its hidden states or token ids), more than the frame limit of {max} bytes; use shorter prompts"
    )]
    FrameTooLarge { tokens: u32, bytes: u64, max: u32 },
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

/// What a node does in the topology.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    Relay,
    /// Holds the whole model and serves whole requests.
    Whole,
    /// A pipeline stage or a star's remote stage.
    Stage,
    /// A star's host.
    StarHost,
    TensorRoot,
    TensorMember,
}

/// A node of the topology other than a client.
#[derive(Clone, Debug)]
pub struct NodePlan {
    pub index: usize,
    pub name: String,
    pub part: Part,
    /// What it computes: its span of layers, or for a tensor group a 1/N slice of every layer.
    pub stage: Option<Stage>,
    /// A star host's LM head (and embeddings).
    pub head: Option<Stage>,
    pub max_batch: u32,
}

/// How a client's request travels.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    /// To the first node of `via`, which forwards it along `via` (relays) to the node that
    /// produces the tokens (a whole-model worker, a star host, a tensor root); that node
    /// works with `members` (a star's remote stages, a tensor group's other members).
    Serve {
        via: Vec<usize>,
        members: Vec<usize>,
    },
    /// A copy to each replica in turn until one answers.
    Hedged { replicas: Vec<usize> },
    /// A pipeline: each stage is reached through its chain (relays, then the worker).
    Pipeline {
        chains: Vec<Vec<usize>>,
        server_to_server: bool,
    },
}

/// A client and its share of the workload.
#[derive(Clone, Debug)]
pub struct ClientPlan {
    pub index: usize,
    pub name: String,
    pub share: f64,
    /// A pipeline client's embeddings and LM head on its own device (none without a device).
    pub head: Option<Stage>,
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
    /// Compute segments of a tensor-parallel step (2·L + 1: two per layer and the LM head).
    pub segments: u32,
    /// Continuous batching limit of the baseline, which runs the same serving software as
    /// the topology's first worker on its own box.
    pub max_batch: u32,
    /// The local-GPU baseline's compute, when the scenario has one.
    pub baseline: Option<Stage>,
    /// The median request, for printing.
    pub typical: Shape,
    /// What the user should know about how this version runs the plan.
    pub notes: Vec<String>,
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

/// One piece of a request's critical path.
#[derive(Clone, Debug)]
enum Leg {
    /// `bytes` from one node to another over their link.
    Send { from: usize, to: usize, bytes: u64 },
    /// A node computes.
    Compute {
        stage: Stage,
        work: Work,
        scale: f64,
    },
    /// Bytes that travel ahead of the critical path (a session's request) and take no
    /// time of their own in the floor.
    Bytes { from: usize, to: usize, bytes: u64 },
    /// Branches that run at once; the slowest decides.
    Parallel(Vec<Vec<Leg>>),
}

pub fn plan(s: &Scenario) -> Result<Plan, PlanError> {
    if s.topology.kind == TopologyKind::Ring {
        return Err(PlanError::Unsupported(s.topology.kind));
    }
    let names: Vec<String> = s.nodes.iter().map(|n| n.name.clone()).collect();
    let path = &s.topology.path;
    let device = |i: usize| {
        s.nodes[i]
            .device
            .clone()
            .ok_or_else(|| PlanError::NoDevice(s.nodes[i].name.clone()))
    };
    let span_stage = |i: usize, head: bool| -> Result<Stage, PlanError> {
        Ok(Stage {
            device: device(i)?,
            model: s.model.clone(),
            layers: s.nodes[i].layers.len() as u32,
            head,
        })
    };
    let node = |i: usize, part: Part, stage: Option<Stage>| NodePlan {
        index: i,
        name: names[i].clone(),
        part,
        stage,
        head: None,
        max_batch: s.nodes[i].max_batch.max(1),
    };
    let rest = &path[1..];
    let mut nodes: Vec<NodePlan> = Vec::new();
    let mut notes: Vec<String> = Vec::new();
    let ways = rest.len().max(1) as u32;
    let route = match s.topology.kind {
        TopologyKind::Direct | TopologyKind::Relay => {
            for &i in rest {
                if s.nodes[i].role == Role::Relay {
                    nodes.push(node(i, Part::Relay, None));
                } else {
                    nodes.push(node(i, Part::Whole, Some(span_stage(i, true)?)));
                }
            }
            Route::Serve {
                via: rest.to_vec(),
                members: Vec::new(),
            }
        }
        TopologyKind::Hedged => {
            for &i in rest {
                nodes.push(node(i, Part::Whole, Some(span_stage(i, true)?)));
            }
            Route::Hedged {
                replicas: rest.to_vec(),
            }
        }
        TopologyKind::Star => {
            let host = rest[0];
            let mut h = node(host, Part::StarHost, Some(span_stage(host, false)?));
            h.head = Some(Stage {
                layers: 0,
                ..span_stage(host, true)?
            });
            nodes.push(h);
            for &i in &rest[1..] {
                nodes.push(node(i, Part::Stage, Some(span_stage(i, false)?)));
            }
            Route::Serve {
                via: vec![host],
                members: rest[1..].to_vec(),
            }
        }
        TopologyKind::Tensor => {
            for (k, &i) in rest.iter().enumerate() {
                let part = if k == 0 {
                    Part::TensorRoot
                } else {
                    Part::TensorMember
                };
                let stage = Stage {
                    device: device(i)?,
                    model: s.model.sliced(ways),
                    layers: s.model.layers,
                    head: true,
                };
                nodes.push(node(i, part, Some(stage)));
            }
            Route::Serve {
                via: vec![rest[0]],
                members: rest[1..].to_vec(),
            }
        }
        TopologyKind::Pipeline | TopologyKind::Ring => {
            let mut chains: Vec<Vec<usize>> = Vec::new();
            let mut chain = Vec::new();
            for &i in rest {
                chain.push(i);
                if s.nodes[i].role == Role::Relay {
                    nodes.push(node(i, Part::Relay, None));
                } else {
                    nodes.push(node(i, Part::Stage, Some(span_stage(i, false)?)));
                    chains.push(std::mem::take(&mut chain));
                }
            }
            Route::Pipeline {
                chains,
                server_to_server: s.topology.hops == Hops::ServerToServer,
            }
        }
    };
    let clients: Vec<ClientPlan> = s
        .topology
        .clients
        .iter()
        .map(|&c| ClientPlan {
            index: c,
            name: names[c].clone(),
            share: s.nodes[c].share,
            head: match (&route, &s.nodes[c].device) {
                (Route::Pipeline { .. }, Some(d)) => Some(Stage {
                    device: d.clone(),
                    model: s.model.clone(),
                    layers: 0,
                    head: true,
                }),
                _ => None,
            },
        })
        .collect();
    if matches!(route, Route::Pipeline { .. }) && clients.iter().any(|c| c.head.is_none()) {
        notes.push(
            "a client without a `device` computes the embeddings and the LM head in no time".into(),
        );
    }
    // Connections: each client to the nodes it talks to, then node to node.
    let mut connections: Vec<(usize, usize)> = Vec::new();
    let mut connect = |a: usize, b: usize| {
        if !connections.contains(&(a, b)) {
            connections.push((a, b));
        }
    };
    for c in &clients {
        match &route {
            Route::Serve { via, .. } => connect(c.index, via[0]),
            Route::Hedged { replicas } => replicas.iter().for_each(|&r| connect(c.index, r)),
            Route::Pipeline {
                chains,
                server_to_server: false,
            } => chains.iter().for_each(|ch| connect(c.index, ch[0])),
            Route::Pipeline { chains, .. } => {
                connect(c.index, chains[0][0]);
                connect(c.index, chains[chains.len() - 1][0]);
            }
        }
    }
    match &route {
        Route::Serve { via, members } => {
            via.windows(2).for_each(|w| connect(w[0], w[1]));
            members.iter().for_each(|&m| connect(via[via.len() - 1], m));
        }
        Route::Hedged { .. } => {}
        Route::Pipeline {
            chains,
            server_to_server,
        } => {
            for ch in chains {
                ch.windows(2).for_each(|w| connect(w[0], w[1]));
            }
            if *server_to_server {
                for w in chains.windows(2) {
                    connect(w[0][w[0].len() - 1], w[1][0]);
                }
            }
        }
    }
    let mut links: Vec<((usize, usize), Hop)> = Vec::new();
    for &(a, b) in &connections {
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
    let largest = match route {
        Route::Serve { ref members, .. } if members.is_empty() => 4 * longest as u64,
        Route::Hedged { .. } => 4 * longest as u64,
        _ => longest as u64 * hidden_bytes + 12,
    };
    if largest > wire::DEFAULT_MAX_FRAME as u64 {
        return Err(PlanError::FrameTooLarge {
            tokens: longest,
            bytes: largest,
            max: wire::DEFAULT_MAX_FRAME,
        });
    }
    let mut plan = Plan {
        kind: s.topology.kind,
        route,
        path: path.iter().map(|&i| names[i].clone()).collect(),
        hops: Vec::new(),
        connections,
        hedge_after: (s.topology.kind == TopologyKind::Hedged).then_some(s.topology.hedge_after),
        hidden_bytes,
        logits_slice_bytes: (s.model.vocab as u64).div_ceil(ways as u64) * 4,
        segments: 2 * s.model.layers + 1,
        max_batch,
        baseline,
        typical: Shape {
            prompt: s.workload.prompt_tokens.median(),
            output: s.workload.output_tokens.median(),
        },
        notes,
        clients: clients.clone(),
        nodes,
        names,
        links,
    };
    // Bytes per link of one typical request that crosses it: from each client, and for
    // hedged replicas with each one as the first copy's.
    let shape = plan.typical;
    let primaries = match &plan.route {
        Route::Hedged { replicas } => replicas.len(),
        _ => 1,
    };
    let (mut pre, mut tok): (HashMap<_, u64>, HashMap<_, u64>) = (HashMap::new(), HashMap::new());
    for client in plan.clients.iter().map(|c| c.index) {
        for primary in 0..primaries {
            let mut prefill_legs = plan.request_legs(client, shape, primary);
            prefill_legs.extend(plan.step_legs(client, primary, shape.prompt, shape.prompt, true));
            prefill_legs.extend(plan.token_legs(client, primary));
            let mut token_legs =
                plan.step_legs(client, primary, 1, shape.prompt.saturating_add(1), false);
            token_legs.extend(plan.token_legs(client, primary));
            let (mut p1, mut t1) = (HashMap::new(), HashMap::new());
            sum_bytes(&prefill_legs, &mut p1);
            sum_bytes(&token_legs, &mut t1);
            for (k, v) in p1 {
                let e = pre.entry(k).or_default();
                *e = (*e).max(v);
            }
            for (k, v) in t1 {
                let e = tok.entry(k).or_default();
                *e = (*e).max(v);
            }
        }
    }
    for (k, h) in plan.links.iter_mut() {
        h.prefill_bytes = pre.get(k).copied().unwrap_or(0);
        h.token_bytes = tok.get(k).copied().unwrap_or(0);
    }
    plan.hops = plan.links.iter().map(|(_, h)| h.clone()).collect();
    Ok(plan)
}

fn sum_bytes(legs: &[Leg], out: &mut HashMap<(usize, usize), u64>) {
    for leg in legs {
        match leg {
            Leg::Send { from, to, bytes } | Leg::Bytes { from, to, bytes } => {
                *out.entry((*from, *to)).or_default() += bytes
            }
            Leg::Parallel(branches) => branches.iter().for_each(|b| sum_bytes(b, out)),
            Leg::Compute { .. } => {}
        }
    }
}

impl Plan {
    fn node(&self, index: usize) -> Option<&NodePlan> {
        self.nodes.iter().find(|n| n.index == index)
    }

    fn link(&self, from: usize, to: usize) -> Option<&Hop> {
        self.links
            .iter()
            .find(|(k, _)| *k == (from, to))
            .map(|(_, h)| h)
    }

    /// Sends along consecutive nodes.
    fn along(nodes: &[usize], bytes: u64) -> Vec<Leg> {
        nodes
            .windows(2)
            .map(|w| Leg::Send {
                from: w[0],
                to: w[1],
                bytes,
            })
            .collect()
    }

    fn compute(&self, index: usize, work: Work, scale: f64) -> Vec<Leg> {
        self.node(index)
            .and_then(|n| n.stage.clone())
            .map(|stage| Leg::Compute { stage, work, scale })
            .into_iter()
            .collect()
    }

    fn activations(&self, tokens: u32) -> u64 {
        wire::activations_frame_len((tokens as u64 * self.hidden_bytes) as usize) as u64
    }

    /// A request frame's bytes for a prompt and the nodes named in its route.
    fn request_len(&self, prompt: u32, route: &[usize]) -> u64 {
        let names: Vec<&str> = route.iter().map(|&i| self.names[i].as_str()).collect();
        (wire::HEADER_LEN + wire::request_payload_len(prompt, &names)) as u64
    }

    /// Legs that move bytes along consecutive nodes without taking time of their own in the
    /// floor (session requests that travel ahead of the hidden states).
    fn ahead(&self, nodes: &[usize], len: impl Fn(usize) -> u64) -> Vec<Leg> {
        nodes
            .windows(2)
            .enumerate()
            .map(|(i, w)| Leg::Bytes {
                from: w[0],
                to: w[1],
                bytes: len(i),
            })
            .collect()
    }

    /// The client's request reaching the node that produces the tokens (and, for a star or
    /// a tensor group, the sessions that node opens).
    fn request_legs(&self, client: usize, shape: Shape, primary: usize) -> Vec<Leg> {
        match &self.route {
            Route::Serve { via, members } => {
                let mut nodes = vec![client];
                nodes.extend(via);
                let mut legs = Vec::new();
                for (i, w) in nodes.windows(2).enumerate() {
                    let mut route: Vec<usize> = via[i + 1..].to_vec();
                    route.extend(members);
                    legs.push(Leg::Send {
                        from: w[0],
                        to: w[1],
                        bytes: self.request_len(shape.prompt, &route),
                    });
                }
                let producer = via[via.len() - 1];
                for &m in members {
                    legs.push(Leg::Bytes {
                        from: producer,
                        to: m,
                        bytes: self.request_len(0, &[]),
                    });
                }
                legs
            }
            Route::Hedged { replicas } => vec![Leg::Send {
                from: client,
                to: replicas[primary % replicas.len()],
                bytes: self.request_len(shape.prompt, &[]),
            }],
            Route::Pipeline {
                chains,
                server_to_server,
            } => {
                let mut legs = Vec::new();
                if *server_to_server {
                    let mut all = vec![client];
                    chains.iter().for_each(|ch| all.extend(ch));
                    legs.extend(self.ahead(&all, |i| self.request_len(0, &all[i + 2..])));
                    let mut ret = vec![client];
                    ret.extend(&chains[chains.len() - 1]);
                    legs.extend(self.ahead(&ret, |i| self.request_len(0, &ret[i + 2..])));
                } else {
                    for ch in chains {
                        let mut nodes = vec![client];
                        nodes.extend(ch);
                        legs.extend(self.ahead(&nodes, |i| self.request_len(0, &nodes[i + 2..])));
                    }
                }
                legs
            }
        }
    }

    /// The producing node's first token reaching the client (Serve and hedged routes).
    fn token_legs(&self, client: usize, primary: usize) -> Vec<Leg> {
        let bytes = wire::TOKEN_FRAME_LEN as u64;
        match &self.route {
            Route::Serve { via, .. } => {
                let mut nodes: Vec<usize> = vec![client];
                nodes.extend(via);
                nodes.reverse();
                Self::along(&nodes, bytes)
            }
            Route::Hedged { replicas } => vec![Leg::Send {
                from: replicas[primary % replicas.len()],
                to: client,
                bytes,
            }],
            Route::Pipeline { .. } => Vec::new(),
        }
    }

    /// One step (`tokens` new positions at context `context`) from its inputs to its token.
    fn step_legs(
        &self,
        client: usize,
        primary: usize,
        tokens: u32,
        context: u32,
        prefill: bool,
    ) -> Vec<Leg> {
        let work = if prefill {
            Work::Prefill { tokens }
        } else {
            Work::Decode { context }
        };
        let act = self.activations(tokens);
        match (&self.route, self.kind) {
            (Route::Serve { via, .. }, TopologyKind::Star) => {
                let host = via[0];
                let mut legs = self.compute(host, work, 1.0);
                for n in self.nodes.iter().filter(|n| n.part == Part::Stage) {
                    legs.push(Leg::Send {
                        from: host,
                        to: n.index,
                        bytes: act,
                    });
                    legs.extend(self.compute(n.index, work, 1.0));
                    legs.push(Leg::Send {
                        from: n.index,
                        to: host,
                        bytes: act,
                    });
                }
                if let Some(head) = self.node(host).and_then(|n| n.head.clone()) {
                    legs.push(Leg::Compute {
                        stage: head,
                        work,
                        scale: 1.0,
                    });
                }
                legs
            }
            (Route::Serve { via, .. }, TopologyKind::Tensor) => {
                let root = via[0];
                let members: Vec<usize> = self
                    .nodes
                    .iter()
                    .filter(|n| n.part == Part::TensorMember)
                    .map(|n| n.index)
                    .collect();
                let scale = 1.0 / self.segments as f64;
                // Per segment the root computes its slice while each member receives its
                // input (the broadcast, then the reduced sum), computes, and sends back its
                // partial sum (after the LM head: its logits).
                let logits = wire::activations_frame_len(self.logits_slice_bytes as usize) as u64;
                let mut legs = Vec::new();
                for seg in 0..self.segments {
                    let back = if seg + 1 < self.segments { act } else { logits };
                    let mut branches = vec![self.compute(root, work, scale)];
                    for &m in &members {
                        let mut b = vec![Leg::Send {
                            from: root,
                            to: m,
                            bytes: act,
                        }];
                        b.extend(self.compute(m, work, scale));
                        b.push(Leg::Send {
                            from: m,
                            to: root,
                            bytes: back,
                        });
                        branches.push(b);
                    }
                    legs.push(Leg::Parallel(branches));
                }
                legs
            }
            (Route::Serve { via, .. }, _) => self.compute(via[via.len() - 1], work, 1.0),
            (Route::Hedged { replicas }, _) => {
                self.compute(replicas[primary % replicas.len()], work, 1.0)
            }
            (
                Route::Pipeline {
                    chains,
                    server_to_server,
                },
                _,
            ) => {
                let head = self
                    .clients
                    .iter()
                    .find(|c| c.index == client)
                    .and_then(|c| c.head.clone());
                let mut legs = Vec::new();
                if *server_to_server {
                    let mut at = client;
                    for ch in chains {
                        let mut nodes = vec![at];
                        nodes.extend(ch);
                        legs.extend(Self::along(&nodes, act));
                        let w = ch[ch.len() - 1];
                        legs.extend(self.compute(w, work, 1.0));
                        at = w;
                    }
                    // The last stage returns the last position's hidden state.
                    let last = &chains[chains.len() - 1];
                    let mut back: Vec<usize> = vec![client];
                    back.extend(last);
                    back.reverse();
                    legs.extend(Self::along(&back, self.activations(1)));
                } else {
                    for ch in chains {
                        let mut nodes = vec![client];
                        nodes.extend(ch);
                        legs.extend(Self::along(&nodes, act));
                        legs.extend(self.compute(ch[ch.len() - 1], work, 1.0));
                        nodes.reverse();
                        legs.extend(Self::along(&nodes, act));
                    }
                }
                if let Some(stage) = head {
                    legs.push(Leg::Compute {
                        stage,
                        work,
                        scale: 1.0,
                    });
                }
                legs
            }
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
                Leg::Compute { stage, work, scale } => {
                    stage.floor(*work).unwrap_or_default().mul_f64(*scale)
                }
                Leg::Bytes { .. } => Duration::ZERO,
                Leg::Parallel(branches) => branches
                    .iter()
                    .map(|b| self.time(b))
                    .max()
                    .unwrap_or_default(),
            })
            .sum()
    }

    /// The analytic floor of a request through the topology, from the first client.
    pub fn floor(&self, shape: Shape) -> Floor {
        let client = self.clients[0].index;
        // A hedged request may start at any replica: the floor is the fastest's.
        let primaries = match &self.route {
            Route::Hedged { replicas } => replicas.len(),
            _ => 1,
        };
        (0..primaries)
            .map(|primary| {
                let mut first = self.request_legs(client, shape, primary);
                first.extend(self.step_legs(client, primary, shape.prompt, shape.prompt, true));
                first.extend(self.token_legs(client, primary));
                let ttft = self.time(&first);
                let steps: Vec<Duration> = (1..shape.output)
                    .map(|k| {
                        let context = shape.prompt.saturating_add(k);
                        self.time(&self.step_legs(client, primary, 1, context, false))
                    })
                    .collect();
                floor_of(ttft, &steps)
            })
            .min_by_key(|f| f.e2e)
            .unwrap_or_default()
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
        let text = NET_ONLY.replace("device = \"ideal\"", "device = \"a100-80g\"")
            + "[baseline]\ndevice = \"h100-sxm\"\n";
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
        let inline = r#"device = { memory = "24GB", flops = "100TFLOP/s", mem_bandwidth = "1TB/s", efficiency = { compute = 0.5, memory = 0.5 } }"#;
        let p = plan(&scenario(&NET_ONLY.replace("device = \"ideal\"", inline))).unwrap();
        let stage = p.nodes[0].stage.as_ref().unwrap();
        assert_eq!(stage.device.name, "inline");
        // Decode reads the layers and the LM head (13.15 GB) at 0.5 TB/s effective: 26.3 ms.
        assert!(stage.decode(100) >= Duration::from_micros(26_300));
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
    fn ring_is_not_planned() {
        let text =
            NET_ONLY.to_string() + "[topology]\nkind = \"ring\"\npath = [\"client\", \"gpu\"]\n";
        assert!(matches!(
            plan(&scenario(&text)),
            Err(PlanError::Unsupported(TopologyKind::Ring))
        ));
    }
}

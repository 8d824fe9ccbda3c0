//! Topology kinds: one module per kind behind the [`Kind`] trait.
//!
//! A kind decides three things about a scenario's path: what each node does in it (its
//! [`Part`]), how a client's request travels ([`Route`]), and what one request's critical
//! path is made of ([`Leg`]s: sends over links, computes, parallel branches), from which
//! `plan` derives the bytes on every link and the analytic floor. The harness runs the route
//! and the parts; it never asks which kind it is running.
//!
//! Adding a kind is one module here plus one line in [`KINDS`]; docs/architecture.md walks
//! through it.

pub mod check;
mod direct;
mod hedged;
pub mod pattern;
mod pipeline;
mod relay;
mod ring;
pub mod rpc;
mod star;
mod tensor;

use crate::compute::{Pass, Stage};
use crate::net::wire;
pub use check::{Holding, PathCheck, PathNode, Where};
use serde::Serialize;
use std::fmt;
use std::time::Duration;

/// Every kind inferlat knows, by name.
pub static KINDS: &[&dyn Kind] = &[
    &direct::Direct,
    &relay::Relay,
    &pipeline::Pipeline,
    &tensor::Tensor,
    &star::Star,
    &ring::Ring,
    &hedged::Hedged,
];

/// A topology kind, as a scenario names it: a handle on its module's behaviour.
pub type TopologyKind = &'static dyn Kind;

/// The kind of a given name.
pub fn by_name(name: &str) -> Option<TopologyKind> {
    KINDS.iter().copied().find(|k| k.name() == name)
}

/// The kind of a scenario whose `[topology]` names none.
pub fn default_kind() -> TopologyKind {
    &direct::Direct
}

/// Every kind's name, for error messages.
pub fn names() -> String {
    KINDS
        .iter()
        .map(|k| k.name())
        .collect::<Vec<_>>()
        .join(", ")
}

impl fmt::Debug for dyn Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl fmt::Display for dyn Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl PartialEq for dyn Kind {
    fn eq(&self, other: &Self) -> bool {
        self.name() == other.name()
    }
}

impl Serialize for dyn Kind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Client,
    Relay,
    Worker,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Client => "client",
            Role::Relay => "relay",
            Role::Worker => "worker",
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Hops {
    ClientRelayed,
    ServerToServer,
}

/// When a hedged topology sends the next copy of a request that has no first token yet.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum HedgeAfter {
    /// A fixed delay after the previous copy was sent.
    Delay(#[serde(serialize_with = "crate::format::duration_ms")] Duration),
    /// This percentile (0-100) of the time to first token of recent requests.
    Percentile(f64),
}

impl Default for HedgeAfter {
    /// "The Tail at Scale": hedge after the 95th percentile of recent latencies.
    fn default() -> Self {
        HedgeAfter::Percentile(95.0)
    }
}

/// Why a kind cannot lay out a path.
#[derive(Debug, thiserror::Error)]
pub enum LayoutError {
    #[error(
        "topology kind `{0}` is parsed and validated, but running it is not available yet in this version of inferlat; {1}"
    )]
    Unsupported(&'static str, &'static str),
}

/// What a node does in the topology.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    /// Forwards streams to the next node of the request's route (a gateway, a broker).
    Relay,
    /// Holds the whole model and serves whole requests (direct, the end of a relay chain,
    /// a hedged replica).
    Whole,
    /// Holds a span of layers: a pipeline stage, or a remote stage of a star.
    Stage,
    /// A star's host (llama.cpp RPC): computes its own span, relays the hidden states
    /// through each remote stage in turn, then runs the LM head itself.
    StarHost,
    /// The root of a tensor-parallel group: computes its slice, gathers every all-reduce's
    /// partial sums from the members and broadcasts the result.
    TensorRoot,
    /// A member of a tensor-parallel group: computes a 1/N slice of every layer.
    TensorMember,
}

impl Part {
    /// The name summary.json and the reports use.
    pub fn name(self) -> &'static str {
        match self {
            Part::Relay => "relay",
            Part::Whole => "whole",
            Part::Stage => "stage",
            Part::StarHost => "star-host",
            Part::TensorRoot => "tensor-root",
            Part::TensorMember => "tensor-member",
        }
    }

    /// Whether the node computes a 1/N slice of every layer rather than a span of them.
    pub fn is_slice(self) -> bool {
        matches!(self, Part::TensorRoot | Part::TensorMember)
    }
}

/// How a client's request travels.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    /// To the first node of `via`, which forwards it along `via` (relays) to the node that
    /// produces the tokens (a whole-model worker, a star host, a tensor root); that node
    /// works with `members` (a star's remote stages, a tensor group's other members).
    /// `parallel` members compute while the producer does (a tensor group), so only the
    /// producer's own queue and compute lie on the request's path.
    Serve {
        via: Vec<usize>,
        members: Vec<usize>,
        parallel: bool,
    },
    /// A copy to each replica in turn until one answers.
    Hedged { replicas: Vec<usize> },
    /// A pipeline: each stage is reached through its chain (relays, then the worker).
    Pipeline {
        chains: Vec<Vec<usize>>,
        server_to_server: bool,
    },
}

impl Route {
    /// Who opens a QUIC connection to whom (scenario node indices), clients' first.
    pub fn connections(&self, clients: &[usize]) -> Vec<(usize, usize)> {
        let mut out: Vec<(usize, usize)> = Vec::new();
        let mut connect = |a: usize, b: usize| {
            if !out.contains(&(a, b)) {
                out.push((a, b));
            }
        };
        for &c in clients {
            match self {
                Route::Serve { via, .. } => connect(c, via[0]),
                Route::Hedged { replicas } => replicas.iter().for_each(|&r| connect(c, r)),
                Route::Pipeline {
                    chains,
                    server_to_server: false,
                } => chains.iter().for_each(|ch| connect(c, ch[0])),
                Route::Pipeline { chains, .. } => {
                    connect(c, chains[0][0]);
                    connect(c, chains[chains.len() - 1][0]);
                }
            }
        }
        match self {
            Route::Serve { via, members, .. } => {
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
        out
    }

    /// How many first copies a request can have: each hedged replica can be a request's
    /// first, every other route has one.
    pub fn primaries(&self) -> usize {
        match self {
            Route::Hedged { replicas } => replicas.len(),
            _ => 1,
        }
    }

    /// Whether a request's prompt crosses links as hidden states (between a client's or a
    /// host's embeddings and remote layers) rather than as token ids.
    pub fn carries_hidden_states(&self) -> bool {
        match self {
            Route::Serve { members, .. } => !members.is_empty(),
            Route::Hedged { .. } => false,
            Route::Pipeline { .. } => true,
        }
    }
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
    /// Its `send_cost` and `recv_cost` (zero unless the scenario sets them).
    pub software: crate::scenario::SoftwareCost,
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

/// Where a compute leg runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum At {
    /// The layers node `i` holds.
    Layers(usize),
    /// The embeddings and LM head of node or client `i` (a star host, a pipeline client).
    Head(usize),
}

/// One piece of a request's critical path.
#[derive(Clone, Debug)]
pub enum Leg {
    /// `bytes` from one node to another over their link.
    Send { from: usize, to: usize, bytes: u64 },
    /// A node computes `scale` of a pass.
    Compute { at: At, work: Pass, scale: f64 },
    /// Bytes that travel ahead of the critical path (a session's request) and take no
    /// time of their own in the floor.
    Bytes { from: usize, to: usize, bytes: u64 },
    /// Branches that run at once; the slowest decides.
    Parallel(Vec<Vec<Leg>>),
    /// Node `at` spends `time` of software on a message it sends or receives (its
    /// `send_cost`, `recv_cost`).
    Busy { at: usize, time: Duration },
}

/// What a kind builds its legs from: the laid-out topology and the sizes of what crosses
/// its links.
#[derive(Clone, Copy, Debug)]
pub struct Ctx<'a> {
    pub route: &'a Route,
    pub nodes: &'a [NodePlan],
    /// Every scenario node's name, by index.
    pub names: &'a [String],
    pub hidden_bytes: u64,
    pub logits_slice_bytes: u64,
    /// A tensor group's step: its pattern's ops for this model and group.
    pub tensor: &'a [pattern::Op],
    /// A star's calls to each remote stage per step.
    pub star: &'a rpc::StarPattern,
}

impl Ctx<'_> {
    /// Sends along consecutive nodes.
    pub fn along(nodes: &[usize], bytes: u64) -> Vec<Leg> {
        nodes
            .windows(2)
            .map(|w| Leg::Send {
                from: w[0],
                to: w[1],
                bytes,
            })
            .collect()
    }

    /// Node `index` computes `scale` of `work` on its layers.
    pub fn compute(index: usize, work: Pass, scale: f64) -> Leg {
        Leg::Compute {
            at: At::Layers(index),
            work,
            scale,
        }
    }

    /// The frame of `tokens` positions' hidden states.
    pub fn activations(&self, tokens: u32) -> u64 {
        wire::activations_frame_len((tokens as u64 * self.hidden_bytes) as usize) as u64
    }

    /// A request frame's bytes for a prompt and the nodes named in its route.
    pub fn request_len(&self, prompt: u32, route: &[usize]) -> u64 {
        let names: Vec<&str> = route.iter().map(|&i| self.names[i].as_str()).collect();
        (wire::HEADER_LEN + wire::request_payload_len(prompt, &names)) as u64
    }

    /// Legs that move bytes along consecutive nodes without taking time of their own in the
    /// floor (session requests that travel ahead of the hidden states).
    pub fn ahead(&self, nodes: &[usize], len: impl Fn(usize) -> u64) -> Vec<Leg> {
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

    /// Node `at`'s `send_cost` and `recv_cost` (zero for a client, or a node off the plan).
    pub fn software(&self, at: usize) -> crate::scenario::SoftwareCost {
        self.nodes
            .iter()
            .find(|n| n.index == at)
            .map(|n| n.software)
            .unwrap_or_default()
    }

    /// Whether any of `nodes` has a software cost.
    pub fn any_software(&self, nodes: &[usize]) -> bool {
        nodes.iter().any(|&i| !self.software(i).is_zero())
    }

    /// Node `at`'s send cost for a message of `bytes` bytes, as a leg (none when zero).
    pub fn send_busy(&self, at: usize, bytes: u64) -> Option<Leg> {
        busy(at, self.software(at).send.of(bytes))
    }

    /// Node `at`'s receive cost for a message of `bytes` bytes, as a leg (none when zero).
    pub fn recv_busy(&self, at: usize, bytes: u64) -> Option<Leg> {
        busy(at, self.software(at).recv.of(bytes))
    }

    /// Sends of `bytes` along consecutive nodes, each with its sender's send cost and its
    /// receiver's receive cost (a node's own loop: receive, then send on).
    pub fn along_costed(&self, nodes: &[usize], bytes: u64) -> Vec<Leg> {
        let mut legs = Vec::new();
        for w in nodes.windows(2) {
            legs.extend(self.send_busy(w[0], bytes));
            legs.push(Leg::Send {
                from: w[0],
                to: w[1],
                bytes,
            });
            legs.extend(self.recv_busy(w[1], bytes));
        }
        legs
    }

    /// The nodes of a part, in path order.
    pub fn with_part(&self, part: Part) -> impl Iterator<Item = usize> + '_ {
        self.nodes
            .iter()
            .filter(move |n| n.part == part)
            .map(|n| n.index)
    }

    /// The step's pass: a prefill of `tokens` positions, or one decode step at `context`.
    pub fn work(tokens: u32, context: u32, prefill: bool) -> Pass {
        if prefill {
            Pass::Prefill { tokens }
        } else {
            Pass::Decode { context }
        }
    }
}

/// A topology kind.
pub trait Kind: Sync {
    /// The name a scenario gives it (`[topology] kind`).
    fn name(&self) -> &'static str;

    /// The path it takes, as errors write it.
    fn expected_path(&self) -> &'static str;

    /// Checks the path's shape and the layers its workers hold, and records the links its
    /// route needs (the path starts at a client and names no node twice: checked before).
    /// `None` when the path itself is wrong.
    fn check(&self, pc: &mut PathCheck) -> Option<()>;

    /// Whether a scenario with this kind and no `path` takes its only client and worker.
    fn path_implied(&self) -> bool {
        false
    }

    /// Whether `[topology] hops` (client-relayed or server-to-server) applies.
    fn takes_hops(&self) -> bool {
        false
    }

    /// Whether `[topology] hedge_after` applies.
    fn takes_hedge_after(&self) -> bool {
        false
    }

    /// Whether `[topology] pattern` (a tensor group's synchronisations) applies.
    fn takes_pattern(&self) -> bool {
        false
    }

    /// Whether `[topology] pattern` names a star's calls to its remote stages
    /// ([`rpc::StarPattern`]).
    fn takes_star_pattern(&self) -> bool {
        false
    }

    /// How the worker at `position` of a path of `len` nodes (`None`: a worker off the
    /// path) holds the model, for the memory check.
    fn holding(&self, _position: Option<usize>, _len: usize) -> Holding {
        Holding::default()
    }

    /// What each node of the path after its first client does, and how requests travel.
    /// `roles` holds every scenario node's role, by index.
    fn layout(
        &self,
        path: &[usize],
        roles: &[Role],
        hops: Hops,
    ) -> Result<(Route, Vec<(usize, Part)>), LayoutError>;

    /// Whether the clients compute the embeddings and the LM head themselves (on their own
    /// `device`), as a Petals client does.
    fn client_heads(&self) -> bool {
        false
    }

    /// The route as `validate` prints it, after the kind's name (a pipeline's hop mode).
    fn route_note(&self, _route: &Route) -> &'static str {
        ""
    }

    /// A client's request reaching the node that produces the tokens (and the sessions
    /// that node opens), for the request whose first copy goes to replica `primary`.
    fn request_legs(&self, c: &Ctx, client: usize, prompt: u32, primary: usize) -> Vec<Leg>;

    /// The producing node's first token reaching the client.
    fn token_legs(&self, c: &Ctx, client: usize, primary: usize) -> Vec<Leg>;

    /// One step (`tokens` new positions at context `context`) from its inputs to its token.
    fn step_legs(&self, c: &Ctx, step: Step) -> Vec<Leg>;
}

/// One step of a request, for [`Kind::step_legs`].
#[derive(Clone, Copy, Debug)]
pub struct Step {
    pub client: usize,
    pub primary: usize,
    pub tokens: u32,
    pub context: u32,
    pub prefill: bool,
}

impl Step {
    pub fn work(&self) -> Pass {
        Ctx::work(self.tokens, self.context, self.prefill)
    }
}

/// The request legs of a route served by one producer at the end of `via`.
fn serve_request_legs(c: &Ctx, client: usize, prompt: u32) -> Vec<Leg> {
    let Route::Serve { via, members, .. } = c.route else {
        return Vec::new();
    };
    let mut nodes = vec![client];
    nodes.extend(via);
    let mut legs = Vec::new();
    for (i, w) in nodes.windows(2).enumerate() {
        let mut route: Vec<usize> = via[i + 1..].to_vec();
        route.extend(members);
        legs.push(Leg::Send {
            from: w[0],
            to: w[1],
            bytes: c.request_len(prompt, &route),
        });
    }
    let producer = via[via.len() - 1];
    for &m in members {
        legs.push(Leg::Bytes {
            from: producer,
            to: m,
            bytes: c.request_len(0, &[]),
        });
    }
    legs
}

/// The first token's way back from the producer at the end of `via`.
fn serve_token_legs(c: &Ctx, client: usize) -> Vec<Leg> {
    let Route::Serve { via, .. } = c.route else {
        return Vec::new();
    };
    let mut nodes: Vec<usize> = vec![client];
    nodes.extend(via);
    nodes.reverse();
    Ctx::along(&nodes, wire::TOKEN_FRAME_LEN as u64)
}

/// `time` of node `at`'s software, as a leg (none when zero).
pub fn busy(at: usize, time: Duration) -> Option<Leg> {
    (!time.is_zero()).then_some(Leg::Busy { at, time })
}

/// The producer's receive cost of the client's request (a star host, a tensor root: the
/// request frame as it reaches the producer, prompt included).
fn serve_request_cost(c: &Ctx, client: usize, prompt: u32) -> Option<Leg> {
    let producer = producer(c.route)?;
    let bytes = serve_request_legs(c, client, prompt)
        .iter()
        .filter_map(|leg| match leg {
            Leg::Send { to, bytes, .. } if *to == producer => Some(*bytes),
            _ => None,
        })
        .next_back()?;
    c.recv_busy(producer, bytes)
}

/// The producer's send cost of a token frame: on a star host or a tensor root the next
/// step waits for it (the node's one thread sends the token, then goes on).
fn serve_token_cost(c: &Ctx) -> Option<Leg> {
    c.send_busy(producer(c.route)?, wire::TOKEN_FRAME_LEN as u64)
}

/// The sends among `legs` (in parallel branches too) as bytes that take no time: what
/// travels after the last point the path waits on.
fn flatten_sends(legs: Vec<Leg>, out: &mut Vec<Leg>) {
    for leg in legs {
        match leg {
            Leg::Send { from, to, bytes } => out.push(Leg::Bytes { from, to, bytes }),
            Leg::Parallel(branches) => branches.into_iter().for_each(|b| flatten_sends(b, out)),
            _ => {}
        }
    }
}

/// The producer at the end of a Serve route's `via`.
fn producer(route: &Route) -> Option<usize> {
    match route {
        Route::Serve { via, .. } => via.last().copied(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_is_registered_once_under_its_name() {
        for (i, k) in KINDS.iter().enumerate() {
            assert!(std::ptr::eq(
                by_name(k.name()).unwrap() as *const dyn Kind as *const (),
                *k as *const dyn Kind as *const ()
            ));
            assert!(KINDS[..i].iter().all(|o| o.name() != k.name()));
        }
        assert_eq!(default_kind().name(), "direct");
        assert_eq!(
            names(),
            "direct, relay, pipeline, tensor, star, ring, hedged"
        );
    }

    // Nodes 0 (client), 1 (relay), 2..=4 (workers).
    const ROLES: [Role; 5] = [
        Role::Client,
        Role::Relay,
        Role::Worker,
        Role::Worker,
        Role::Worker,
    ];

    fn layout(kind: &str, path: &[usize], hops: Hops) -> (Route, Vec<(usize, Part)>) {
        by_name(kind).unwrap().layout(path, &ROLES, hops).unwrap()
    }

    #[test]
    fn a_relayed_pipeline_reaches_each_stage_through_its_chain() {
        let (route, parts) = layout("pipeline", &[0, 1, 2, 3], Hops::ServerToServer);
        assert_eq!(
            parts,
            vec![(1, Part::Relay), (2, Part::Stage), (3, Part::Stage)]
        );
        assert_eq!(
            route,
            Route::Pipeline {
                chains: vec![vec![1, 2], vec![3]],
                server_to_server: true
            }
        );
        // The client opens the first chain and the return stream to the last stage; the
        // relay forwards to its stage; stage 2 pushes to stage 3.
        assert_eq!(
            route.connections(&[0]),
            vec![(0, 1), (0, 3), (1, 2), (2, 3)]
        );
        let (relayed, _) = layout("pipeline", &[0, 1, 2, 3], Hops::ClientRelayed);
        assert_eq!(relayed.connections(&[0]), vec![(0, 1), (0, 3), (1, 2)]);
    }

    #[test]
    fn groups_name_their_producer_and_members() {
        let (route, parts) = layout("tensor", &[0, 2, 3, 4], Hops::ClientRelayed);
        assert_eq!(parts[0], (2, Part::TensorRoot));
        assert!(parts[1..].iter().all(|p| p.1 == Part::TensorMember));
        assert_eq!(
            route,
            Route::Serve {
                via: vec![2],
                members: vec![3, 4],
                parallel: true
            }
        );
        let (star, parts) = layout("star", &[0, 2, 3], Hops::ClientRelayed);
        assert_eq!(parts, vec![(2, Part::StarHost), (3, Part::Stage)]);
        assert!(matches!(
            star,
            Route::Serve {
                parallel: false,
                ..
            }
        ));
        assert!(star.carries_hidden_states());
        assert_eq!(star.connections(&[0]), vec![(0, 2), (2, 3)]);
    }

    #[test]
    fn hedged_replicas_each_can_take_a_first_copy() {
        let (route, parts) = layout("hedged", &[0, 2, 3, 4], Hops::ClientRelayed);
        assert!(parts.iter().all(|p| p.1 == Part::Whole));
        assert_eq!(route.primaries(), 3);
        assert!(!route.carries_hidden_states());
        assert_eq!(route.connections(&[0]), vec![(0, 2), (0, 3), (0, 4)]);
    }

    #[test]
    fn ring_is_refused_with_the_way_out() {
        let e = by_name("ring")
            .unwrap()
            .layout(&[0, 2, 3], &ROLES, Hops::ClientRelayed)
            .unwrap_err();
        assert!(e.to_string().contains("hops = \"server-to-server\""), "{e}");
    }
}

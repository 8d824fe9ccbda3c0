//! `[topology]`: the kind, the path and the clients, then the route each kind's path
//! implies. The generic checks (the kind's own fields, names that resolve, the clients,
//! the links a route needs) come first; then one function per kind (`check_direct` ...
//! `check_ring`) checks its path's shape over a [`PathCheck`] and says which links the
//! route needs, with the path that kind expects written next to it.

use super::Context;
use crate::scenario::diagnostic::FieldPath;
use crate::scenario::file::RawTopology;
use crate::scenario::link::LinkDef;
use crate::scenario::model::Model;
use crate::scenario::{HedgeAfter, Hops, Node, Role, Topology, TopologyKind};
use std::collections::HashSet;

/// The checked topology, and what the weight check needs to know of it.
pub(super) struct Checked {
    pub topology: Topology,
    /// A star's host (the path's second node), which may hold no layers.
    pub star_host: Option<usize>,
}

/// Checks `[topology]` (a direct topology between the only client and worker when the
/// file has none). The route is checked only when `sound`: the nodes and links are.
pub(super) fn check(
    cx: &mut Context,
    raw: Option<&RawTopology>,
    nodes: &[Node],
    links: &[LinkDef],
    model: Option<&Model>,
    sound: bool,
) -> Checked {
    let tp = FieldPath::root().key("topology");
    let (kind, path_names, hops) = match raw {
        Some(t) => (t.kind, t.path.as_ref(), t.hops),
        None => (TopologyKind::Direct, None, None),
    };
    if hops.is_some() && kind != TopologyKind::Pipeline {
        cx.err(
            tp.key("hops"),
            format!("`hops` applies to pipeline topologies, not {kind}"),
        );
    }
    let hedge_after = raw.and_then(|t| t.hedge_after.as_ref());
    if hedge_after.is_some() && kind != TopologyKind::Hedged {
        cx.err(
            tp.key("hedge_after"),
            format!("`hedge_after` applies to hedged topologies, not {kind}"),
        );
    }
    let path = resolve_path(cx, kind, path_names, nodes);
    let (clients, others) = clients(cx, raw.and_then(|t| t.clients.as_ref()), &path, nodes);
    if !path.is_empty() && sound {
        let mut pc = PathCheck {
            cx,
            kind,
            hops,
            nodes,
            path: &path,
            layers: model.map(|m| m.layers),
            needs: Vec::new(),
        };
        if check_path(&mut pc).is_some() {
            let needs = pc.needs;
            route_links(
                cx,
                &needs,
                &others,
                &path,
                path_names.is_some(),
                nodes,
                links,
            );
        }
    }
    let star_host = match kind {
        TopologyKind::Star => path_names
            .and_then(|p| p.get(1))
            .and_then(|n| nodes.iter().position(|x| x.name == *n)),
        _ => None,
    };
    Checked {
        topology: Topology {
            kind,
            clients,
            path,
            hops: hops.unwrap_or(Hops::ClientRelayed),
            hedge_after: hedge_after.map_or_else(HedgeAfter::default, |h| h.0),
        },
        star_host,
    }
}

/// The path's node indices: as the file names them, or a direct topology's only client
/// and worker; empty when it cannot be resolved.
fn resolve_path(
    cx: &mut Context,
    kind: TopologyKind,
    names: Option<&Vec<String>>,
    nodes: &[Node],
) -> Vec<usize> {
    let tp = FieldPath::root().key("topology");
    match names {
        Some(p) => {
            let mut ix = Vec::new();
            for (i, name) in p.iter().enumerate() {
                if let Some(n) = cx.node(nodes, name, tp.key("path").index(i)) {
                    ix.push(n);
                }
            }
            if p.is_empty() {
                cx.err(
                    tp.key("path"),
                    format!(
                        "the path is empty: a {kind} topology's path is {}",
                        expected_path(kind)
                    ),
                );
            }
            if ix.len() != p.len() { Vec::new() } else { ix }
        }
        None if kind == TopologyKind::Direct => {
            let of = |role: Role| -> Vec<usize> {
                (0..nodes.len())
                    .filter(|&i| nodes[i].role == role)
                    .collect()
            };
            let (clients, workers) = (of(Role::Client), of(Role::Worker));
            if clients.len() == 1 && workers.len() == 1 {
                return vec![clients[0], workers[0]];
            }
            if !nodes.is_empty() {
                cx.err(tp, "with several clients or workers, give [topology] a `path` like [\"client\", \"gpu-a\"]".into());
            }
            Vec::new()
        }
        None => {
            cx.err(
                tp,
                format!(
                    "a {kind} topology needs a `path` naming its nodes in order, starting at a client"
                ),
            );
            Vec::new()
        }
    }
}

/// The clients that send requests: each takes the route from `path[0]` with itself in
/// place of `path[0]`. Also returns the clients besides `path[0]`, with their place in
/// `clients`.
fn clients(
    cx: &mut Context,
    given: Option<&Vec<String>>,
    path: &[usize],
    nodes: &[Node],
) -> (Vec<usize>, Vec<(usize, usize)>) {
    let cp = FieldPath::root().key("topology").key("clients");
    let mut others: Vec<(usize, usize)> = Vec::new();
    let Some(given) = given else {
        return (path.first().map(|&c| vec![c]).unwrap_or_default(), others);
    };
    let mut ix: Vec<usize> = Vec::new();
    for (j, name) in given.iter().enumerate() {
        let Some(c) = cx.node(nodes, name, cp.index(j)) else {
            continue;
        };
        if nodes[c].role != Role::Client {
            cx.err(
                cp.index(j),
                format!(
                    "`clients` lists the client nodes that send requests; \"{name}\" is a {}",
                    nodes[c].role
                ),
            );
        } else if ix.contains(&c) {
            cx.err(
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
        cx.err(
            cp,
            "`clients` is empty: list the client nodes that send requests, the path's first node among them (or leave `clients` out for that node alone)".into(),
        );
    } else if let Some(&first) = path.first()
        && nodes[first].role == Role::Client
        && !given.iter().any(|g| *g == nodes[first].name)
    {
        cx.err(
            cp,
            format!(
                "the path starts at client \"{0}\", which `clients` does not list; every client takes the path's route from \"{0}\", so add \"{0}\" to `clients`",
                nodes[first].name
            ),
        );
    }
    (ix, others)
}

/// Reports each link the route needs and the scenario lacks: at the path position (or,
/// for an implied path, the node) it leads to, and for every other client the links
/// `path[0]` needs, in its place.
fn route_links(
    cx: &mut Context,
    needs: &[(usize, usize, usize)],
    others: &[(usize, usize)],
    path: &[usize],
    explicit: bool,
    nodes: &[Node],
    links: &[LinkDef],
) {
    let root = FieldPath::root();
    let tp = root.key("topology");
    for &(a, b, i) in needs {
        if let Some(msg) = missing_link(nodes, links, a, b) {
            let at = if explicit {
                tp.key("path").index(i)
            } else {
                root.key("node").index(path[i])
            };
            cx.err(at, msg);
        }
    }
    // Another client needs the links path[0] needs; the others are shared.
    for &(c, j) in others {
        let swap = |x: usize| if x == path[0] { c } else { x };
        for &(a, b, _) in needs.iter().filter(|n| n.0 == path[0] || n.1 == path[0]) {
            if let Some(msg) = missing_link(nodes, links, swap(a), swap(b)) {
                cx.err(
                    tp.key("clients").index(j),
                    format!(
                        "client \"{}\" takes the route of \"{}\": {msg}",
                        nodes[c].name, nodes[path[0]].name
                    ),
                );
            }
        }
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

/// What one kind's check sees of the scenario: the path's node indices and the nodes they
/// name (roles, layers, devices), the model's layer count, and where to report. A kind
/// records each link its route needs with [`PathCheck::need`].
pub(super) struct PathCheck<'c, 'a> {
    cx: &'c mut Context<'a>,
    pub kind: TopologyKind,
    pub hops: Option<Hops>,
    pub nodes: &'c [Node],
    pub path: &'c [usize],
    /// The model's layer count, when the model is known.
    pub layers: Option<u32>,
    /// (from, to, the path position to point at when it is missing), each needed both ways.
    needs: Vec<(usize, usize, usize)>,
}

impl PathCheck<'_, '_> {
    fn len(&self) -> usize {
        self.path.len()
    }

    fn role(&self, i: usize) -> Role {
        self.nodes[self.path[i]].role
    }

    fn name(&self, i: usize) -> &str {
        &self.nodes[self.path[i]].name
    }

    /// A problem with the path as a whole.
    fn err_path(&mut self, message: String) {
        self.cx
            .err(FieldPath::root().key("topology").key("path"), message);
    }

    /// A problem with the node at path position `i`.
    fn err_at(&mut self, i: usize, message: String) {
        self.cx.err(
            FieldPath::root().key("topology").key("path").index(i),
            message,
        );
    }

    /// The path has the wrong shape for its kind.
    fn shape_error(&mut self) -> Option<()> {
        let msg = format!(
            "a {} topology's path is {}",
            self.kind,
            expected_path(self.kind)
        );
        self.err_path(msg);
        None
    }

    /// Every node after the client is a worker.
    fn all_workers(&self) -> bool {
        (1..self.len()).all(|i| self.role(i) == Role::Worker)
    }

    /// A path of workers after the client, at least two of them.
    fn two_workers_or_more(&mut self) -> Option<()> {
        if !self.all_workers() {
            return self.shape_error();
        }
        let n = self.len();
        if n < 3 {
            let msg = format!(
                "a {} topology's path is {}; this one names {}",
                self.kind,
                expected_path(self.kind),
                if n == 2 { "only 1 worker" } else { "no worker" }
            );
            self.err_path(msg);
            return None;
        }
        Some(())
    }

    /// The route needs a link between path positions `a` and `b` (once for both ways).
    fn need(&mut self, a: usize, b: usize) {
        let (x, y) = (self.path[a], self.path[b]);
        if !self
            .needs
            .iter()
            .any(|&(p, q, _)| (p, q) == (x, y) || (p, q) == (y, x))
        {
            self.needs.push((x, y, b));
        }
    }

    /// The route needs a link from path position `from` to each of `to`.
    fn need_from(&mut self, from: usize, to: std::ops::Range<usize>) {
        for i in to {
            self.need(from, i);
        }
    }

    /// The workers at these path positions hold consecutive spans covering the model.
    fn consecutive(&mut self, stages: &[usize]) {
        let Some(layers) = self.layers else { return };
        let mut next = 0;
        for &i in stages {
            let span = self.nodes[self.path[i]].layers.clone();
            if span.start != next {
                let msg = format!(
                    "stage \"{}\" holds layers {}..{} but the previous stage ends at layer {next}; stages must hold consecutive spans",
                    self.name(i),
                    span.start,
                    span.end
                );
                self.err_at(i, msg);
                return;
            }
            next = span.end;
        }
        if next != layers {
            self.err_path(format!(
                "the stages cover layers 0..{next}, but the model has {layers} layers"
            ));
        }
    }

    /// Every worker on the path holds the whole model; `what` says who must.
    fn whole(&mut self, what: &str) {
        let Some(layers) = self.layers else { return };
        for i in 1..self.len() {
            let node = self.path[i];
            let span = &self.nodes[node].layers;
            if *span != (0..layers) {
                let msg = format!(
                    "worker \"{}\" holds layers {}..{}, but {what} holds all {layers} layers; remove `layers`",
                    self.name(i),
                    span.start,
                    span.end,
                );
                self.cx
                    .err(FieldPath::root().key("node").index(node).key("layers"), msg);
            }
        }
    }
}

/// The path each kind expects, as errors write it.
fn expected_path(kind: TopologyKind) -> &'static str {
    match kind {
        TopologyKind::Direct => DIRECT_PATH,
        TopologyKind::Relay => RELAY_PATH,
        TopologyKind::Pipeline => PIPELINE_PATH,
        TopologyKind::Star => STAR_PATH,
        TopologyKind::Tensor => TENSOR_PATH,
        TopologyKind::Hedged => HEDGED_PATH,
        TopologyKind::Ring => RING_PATH,
    }
}

/// Checks a topology's path: it starts at a client and names no node twice, then its
/// kind's shape. `None` when the path itself is wrong; the links it needs are in `pc`.
fn check_path(pc: &mut PathCheck) -> Option<()> {
    if pc.role(0) != Role::Client {
        let msg = format!(
            "a path starts at a client; \"{}\" is a {}",
            pc.name(0),
            pc.role(0)
        );
        pc.err_at(0, msg);
        return None;
    }
    let mut seen = HashSet::new();
    for i in 0..pc.len() {
        if !seen.insert(pc.path[i]) {
            let msg = format!("node \"{}\" appears twice in the path", pc.name(i));
            pc.err_at(i, msg);
        }
    }
    match pc.kind {
        TopologyKind::Direct => check_direct(pc),
        TopologyKind::Relay => check_relay(pc),
        TopologyKind::Pipeline => check_pipeline(pc),
        TopologyKind::Star => check_star(pc),
        TopologyKind::Tensor => check_tensor(pc),
        TopologyKind::Hedged => check_hedged(pc),
        TopologyKind::Ring => check_ring(pc),
    }
}

const DIRECT_PATH: &str = "[client, worker]";

/// A client and one worker.
fn check_direct(pc: &mut PathCheck) -> Option<()> {
    if pc.len() != 2 || pc.role(1) != Role::Worker {
        return pc.shape_error();
    }
    pc.need(0, 1);
    Some(())
}

const RELAY_PATH: &str = "[client, relay, ..., worker]";

/// A client, relays, and the worker they lead to.
fn check_relay(pc: &mut PathCheck) -> Option<()> {
    let n = pc.len();
    if n < 3 || pc.role(n - 1) != Role::Worker || (1..n - 1).any(|i| pc.role(i) != Role::Relay) {
        return pc.shape_error();
    }
    for i in 1..n {
        pc.need(i - 1, i);
    }
    Some(())
}

const PIPELINE_PATH: &str = "[client, worker, worker, ...]: the stages in order, each worker optionally preceded by the relays that lead to it";

/// Stages in layer order, each optionally behind relays; the client relays the
/// activations (client-relayed) or each stage sends them to the next (server-to-server).
fn check_pipeline(pc: &mut PathCheck) -> Option<()> {
    let n = pc.len();
    if n < 2 || (1..n).any(|i| pc.role(i) == Role::Client) {
        return pc.shape_error();
    }
    if pc.role(n - 1) != Role::Worker {
        let msg = format!(
            "a pipeline's path ends at a worker; relay \"{}\" leads to no stage (a relay stands just before the worker it leads to)",
            pc.name(n - 1)
        );
        pc.err_at(n - 1, msg);
        return None;
    }
    // Each stage's access chain: its relays, then its worker (path positions).
    let mut chains: Vec<Vec<usize>> = Vec::new();
    let mut chain = Vec::new();
    for i in 1..n {
        chain.push(i);
        if pc.role(i) == Role::Worker {
            chains.push(std::mem::take(&mut chain));
        }
    }
    let stages: Vec<usize> = chains.iter().filter_map(|c| c.last().copied()).collect();
    pc.consecutive(&stages);
    let server_to_server = pc.hops == Some(Hops::ServerToServer);
    let mut prev_stage = None;
    for ch in &chains {
        match prev_stage {
            Some(stage) if server_to_server => pc.need(stage, ch[0]),
            _ => pc.need(0, ch[0]),
        }
        for w in ch.windows(2) {
            pc.need(w[0], w[1]);
        }
        prev_stage = ch.last().copied();
    }
    if server_to_server && let Some(last) = chains.last() {
        // The client opens a stream to the last stage for the tokens.
        pc.need(0, last[0]);
    }
    Some(())
}

const STAR_PATH: &str = "[client, worker, worker, ...]: the host, then the remotes";

/// A host that the client talks to and that fans out to remotes holding the layers.
fn check_star(pc: &mut PathCheck) -> Option<()> {
    let n = pc.len();
    if n < 2 || !pc.all_workers() {
        return pc.shape_error();
    }
    pc.consecutive(&(1..n).collect::<Vec<_>>());
    pc.need(0, 1);
    pc.need_from(1, 2..n);
    Some(())
}

const TENSOR_PATH: &str = "[client, worker, worker, ...]: the root, then at least one more worker";

/// A root and its group, every one holding a slice of every layer.
fn check_tensor(pc: &mut PathCheck) -> Option<()> {
    pc.two_workers_or_more()?;
    pc.whole("in a tensor topology each worker");
    pc.need(0, 1);
    pc.need_from(1, 2..pc.len());
    Some(())
}

const HEDGED_PATH: &str = "[client, worker, worker, ...]: at least two replicas";

/// Replicas of the whole model, each reached from the client.
fn check_hedged(pc: &mut PathCheck) -> Option<()> {
    pc.two_workers_or_more()?;
    pc.whole("in a hedged topology each replica");
    pc.need_from(0, 1..pc.len());
    Some(())
}

const RING_PATH: &str = "[client, worker, worker, ...]";

/// Workers holding consecutive spans, each reached from the client.
fn check_ring(pc: &mut PathCheck) -> Option<()> {
    let n = pc.len();
    if n < 2 || !pc.all_workers() {
        return pc.shape_error();
    }
    pc.consecutive(&(1..n).collect::<Vec<_>>());
    pc.need_from(0, 1..n);
    Some(())
}

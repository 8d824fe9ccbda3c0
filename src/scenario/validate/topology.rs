//! `[topology]`: the kind, the path and the clients, then the route each kind's path
//! implies. The generic checks (the kind's own fields, names that resolve, the clients,
//! the links a route needs) are here; the path's shape is the kind's own check
//! ([`crate::topology::Kind::check`], over a [`PathCheck`]), which also says which links
//! its route needs.

use super::Context;
use crate::scenario::diagnostic::FieldPath;
use crate::scenario::file::RawPattern;
use crate::scenario::file::RawTopology;
use crate::scenario::link::LinkDef;
use crate::scenario::model::Model;
use crate::scenario::{HedgeAfter, Hops, Node, Role, Topology, TopologyKind};
use crate::topology::pattern::Pattern;
use crate::topology::rpc::StarPattern;
use crate::topology::{self, PathCheck, PathNode, Where};

/// The checked topology.
pub(super) struct Checked {
    pub topology: Topology,
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
        Some(t) => (t.kind.0, t.path.as_ref(), t.hops),
        None => (topology::default_kind(), None, None),
    };
    if hops.is_some() && !kind.takes_hops() {
        cx.err(
            tp.key("hops"),
            format!("`hops` applies to pipeline topologies, not {kind}"),
        );
    }
    let hedge_after = raw.and_then(|t| t.hedge_after.as_ref());
    if hedge_after.is_some() && !kind.takes_hedge_after() {
        cx.err(
            tp.key("hedge_after"),
            format!("`hedge_after` applies to hedged topologies, not {kind}"),
        );
    }
    let (pattern, star) = patterns(cx, kind, raw.and_then(|t| t.pattern.as_ref()));
    let path = resolve_path(cx, kind, path_names, nodes);
    let (clients, others) = clients(cx, raw.and_then(|t| t.clients.as_ref()), &path, nodes);
    if !path.is_empty() && sound {
        let view: Vec<PathNode> = nodes
            .iter()
            .map(|n| PathNode {
                name: &n.name,
                role: n.role,
                layers: n.layers.clone(),
            })
            .collect();
        let mut pc = PathCheck::new(kind, hops, &view, &path, model.map(|m| m.layers));
        let sound = pc.run();
        for (at, message) in pc.problems {
            let at = match at {
                Where::Path => tp.key("path"),
                Where::Position(i) => tp.key("path").index(i),
                Where::Layers(n) => FieldPath::root().key("node").index(n).key("layers"),
            };
            cx.err(at, message);
        }
        if sound.is_some() {
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
    Checked {
        topology: Topology {
            kind,
            clients,
            path,
            hops: hops.unwrap_or(Hops::ClientRelayed),
            hedge_after: hedge_after.map_or_else(HedgeAfter::default, |h| h.0),
            pattern,
            star,
        },
    }
}

/// `[topology] pattern`: a tensor group's preset or table, or a star's preset; the
/// defaults where the file names none (or names one wrongly: the error is recorded).
fn patterns(
    cx: &mut Context,
    kind: TopologyKind,
    raw: Option<&RawPattern>,
) -> (Pattern, StarPattern) {
    let at = FieldPath::root().key("topology").key("pattern");
    let defaults = (Pattern::default(), StarPattern::default());
    let Some(raw) = raw else {
        return defaults;
    };
    match raw {
        _ if !kind.takes_pattern() && !kind.takes_star_pattern() => {
            cx.err(
                at,
                format!("`pattern` applies to tensor and star topologies, not {kind}"),
            );
            defaults
        }
        RawPattern::Table(p) if kind.takes_pattern() => (p.clone(), defaults.1),
        RawPattern::Table(_) => {
            cx.err(
                at,
                format!(
                    "a star's pattern is a preset's name ({}); tables describe tensor groups",
                    StarPattern::names()
                ),
            );
            defaults
        }
        RawPattern::Name(n) if kind.takes_pattern() => match Pattern::by_name(n) {
            Some(p) => (p, defaults.1),
            None => {
                cx.err(
                    at,
                    format!(
                        "unknown tensor pattern \"{n}\"; presets: {}",
                        Pattern::names()
                    ),
                );
                defaults
            }
        },
        RawPattern::Name(n) => match StarPattern::by_name(n) {
            Some(p) => (defaults.0, p),
            None => {
                cx.err(
                    at,
                    format!(
                        "unknown star pattern \"{n}\"; presets: {}",
                        StarPattern::names()
                    ),
                );
                defaults
            }
        },
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
                        kind.expected_path()
                    ),
                );
            }
            let max = crate::scenario::limits::MAX_ROUTE;
            if p.len() > max {
                cx.err(
                    tp.key("path"),
                    format!(
                        "a path may name at most {max} nodes, got {}: the wire's Request frame counts the route's nodes in one byte",
                        p.len()
                    ),
                );
                return Vec::new();
            }
            if ix.len() != p.len() { Vec::new() } else { ix }
        }
        None if kind.path_implied() => {
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

//! `[[link]]` and its `[[link.change]]`s: the two ends, and the parameters of each
//! direction mapped onto the network's [`LinkParams`].

use super::Context;
use crate::format::format_duration;
use crate::net::port::PortDef;
use crate::net::transport::TransportPreset;
use crate::scenario::Node;
use crate::scenario::diagnostic::FieldPath;
use crate::scenario::file::{RawLink, RawTransport};
use crate::scenario::link::{
    JitterDist, LinkChange, LinkDef, LinkParams, LinkPreset, Loss, Queue, RateTrace, Reorder,
    WIRE_OVERHEAD,
};
use std::sync::Arc;

/// Every direction the links define; a `between` link gives two.
pub(super) fn check(
    cx: &mut Context,
    raw: &[RawLink],
    nodes: &[Node],
    ports: &[Arc<PortDef>],
) -> Vec<LinkDef> {
    let mut links: Vec<LinkDef> = Vec::new();
    for (i, l) in raw.iter().enumerate() {
        let lp = FieldPath::root().key("link").index(i);
        let ends = ends(cx, l, &lp, nodes);
        if l.at.is_some() {
            cx.err(
                lp.key("at"),
                "`at` belongs in a [[link.change]]; a link itself applies from the start".into(),
            );
        }
        let mut params = link_params(cx, &LinkParams::ideal(), l, &lp, l.between.is_none());
        params.port = l
            .port
            .as_deref()
            .and_then(|name| super::ports::find(cx, ports, name, lp.key("port")));
        params.transport = l
            .transport
            .as_ref()
            .and_then(|t| transport(cx, t, lp.key("transport")));
        let mut changes = changes(cx, l, &lp, &params);
        // A link keeps its port and its transport through its changes.
        for c in &mut changes {
            c.params.port = params.port.clone();
            c.params.transport = params.transport.clone();
        }
        let Some((a, b, both)) = ends else { continue };
        if a == b {
            cx.err(
                lp.clone(),
                format!("a link from \"{}\" to itself", nodes[a].name),
            );
            continue;
        }
        let dirs: &[(usize, usize)] = if both { &[(a, b), (b, a)] } else { &[(a, b)] };
        for &(from, to) in dirs {
            if links.iter().any(|x| x.from == from && x.to == to) {
                cx.err(
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
    links
}

/// The link's two ends and whether it goes both ways.
fn ends(
    cx: &mut Context,
    l: &RawLink,
    lp: &FieldPath,
    nodes: &[Node],
) -> Option<(usize, usize, bool)> {
    match (&l.between, &l.from, &l.to) {
        (Some(b), None, None) => {
            if b.len() != 2 {
                cx.err(
                    lp.key("between"),
                    format!("between needs exactly two node names, got {}", b.len()),
                );
                return None;
            }
            let a = cx.node(nodes, &b[0], lp.key("between").index(0));
            let c = cx.node(nodes, &b[1], lp.key("between").index(1));
            a.zip(c).map(|(a, c)| (a, c, true))
        }
        (None, Some(f), Some(t)) => {
            let a = cx.node(nodes, f, lp.key("from"));
            let c = cx.node(nodes, t, lp.key("to"));
            a.zip(c).map(|(a, c)| (a, c, false))
        }
        _ => {
            cx.err(
                lp.clone(),
                "a link needs `between = [\"a\", \"b\"]` or both `from` and `to`".into(),
            );
            None
        }
    }
}

/// A link's or a node's `transport`: a preset's settings or a table's, checked as `[quic]`'s.
pub(super) fn transport(
    cx: &mut Context,
    t: &RawTransport,
    path: FieldPath,
) -> Option<Arc<crate::net::params::Quic>> {
    match t {
        RawTransport::Named(name) => match TransportPreset::find(name) {
            Some(p) => Some(Arc::new((p.settings)())),
            None => {
                cx.err(
                    path,
                    format!(
                        "unknown transport \"{name}\"; presets: {} (or a table of [quic] fields)",
                        TransportPreset::names().join(", ")
                    ),
                );
                None
            }
        },
        RawTransport::Table(q) => Some(Arc::new(super::quic::check_at(cx, q, path))),
    }
}

/// The link's changes, in time order, each stating what differs from the link itself.
fn changes(cx: &mut Context, l: &RawLink, lp: &FieldPath, params: &LinkParams) -> Vec<LinkChange> {
    let mut changes: Vec<LinkChange> = Vec::new();
    for (k, c) in l.change.iter().enumerate() {
        let cp = lp.key("change").index(k);
        for (given, field) in [
            (c.between.is_some(), "between"),
            (c.from.is_some(), "from"),
            (c.to.is_some(), "to"),
            (!c.change.is_empty(), "change"),
            (c.port.is_some(), "port"),
            (c.transport.is_some(), "transport"),
        ] {
            if given {
                cx.err(
                    cp.key(field),
                    format!("a change takes no `{field}`: it applies to the link it is under"),
                );
            }
        }
        let Some(at) = c.at else {
            cx.err(
                cp.clone(),
                "a [[link.change]] needs `at`, the time from the start of the measured phase, like at = \"30s\"".into(),
            );
            continue;
        };
        if let Some(prev) = changes.last()
            && at.get() <= prev.at
        {
            cx.err(
                cp.key("at"),
                format!(
                    "changes must be in time order: {} is not after {}",
                    format_duration(at.get()),
                    format_duration(prev.at)
                ),
            );
        }
        let params = link_params(cx, params, c, &cp, l.between.is_none());
        changes.push(LinkChange {
            at: at.get(),
            params,
        });
    }
    changes
}

/// A link's parameters for one direction: `base` (or the named preset) with the fields
/// the table gives.
fn link_params(
    cx: &mut Context,
    base: &LinkParams,
    l: &RawLink,
    lp: &FieldPath,
    one_way: bool,
) -> LinkParams {
    let mut p = match &l.preset {
        Some(name) => match LinkPreset::find(name) {
            Some(preset) => preset.params(),
            None => {
                cx.err(
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
    delay(cx, &mut p, l, lp, one_way);
    if reorder(cx, &mut p, l, lp).is_none() {
        return p;
    }
    rate(cx, &mut p, l, lp);
    datagrams(cx, &mut p, l, lp);
    p
}

/// The delay, its jitter and their distribution.
fn delay(cx: &mut Context, p: &mut LinkParams, l: &RawLink, lp: &FieldPath, one_way: bool) {
    match (l.rtt, l.delay) {
        (Some(_), Some(_)) => cx.err(
            lp.key("delay"),
            "give either `rtt` or `delay` (one way), not both".into(),
        ),
        (Some(rtt), None) => {
            if one_way {
                cx.err(
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
            None => cx.err(
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
            cx.err(
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
        cx.err(
            lp.key("jitter"),
            format!(
                "jitter {} is larger than the one-way delay {}; a datagram cannot arrive before it is sent (a normal or pareto distribution is cut at zero instead)",
                format_duration(p.jitter),
                format_duration(p.delay)
            ),
        );
    }
}

/// Explicit reordering; `None` when its details are given without a probability.
fn reorder(cx: &mut Context, p: &mut LinkParams, l: &RawLink, lp: &FieldPath) -> Option<()> {
    if l.reorder.is_some() || l.reorder_correlation.is_some() || l.reorder_gap.is_some() {
        // A change may adjust the gap or correlation of the reordering it inherits.
        let inherited = p.reorder;
        let Some(r) = l.reorder.map(|r| r.get()).or(inherited.map(|r| r.p)) else {
            let given = if l.reorder_gap.is_some() {
                "reorder_gap"
            } else {
                "reorder_correlation"
            };
            cx.err(
                lp.key(given),
                "`reorder_correlation` and `reorder_gap` need `reorder`, the probability, like reorder = \"5%\"".into(),
            );
            return None;
        };
        if l.reorder_correlation.is_some_and(|c| c.get() >= 1.0) {
            cx.err(
                lp.key("reorder_correlation"),
                "a correlation of 100% would never reorder anything; use less than 100%".into(),
            );
        }
        let gap = l.reorder_gap.or(inherited.map(|r| r.gap)).unwrap_or(1);
        if gap == 0 {
            cx.err(
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
        cx.err(
            lp.key("reorder"),
            "reordering sends some datagrams ahead of the delay; it needs a delay or rtt".into(),
        );
    }
    Some(())
}

/// The rate: a fixed bandwidth or a mahimahi trace read from beside the scenario.
fn rate(cx: &mut Context, p: &mut LinkParams, l: &RawLink, lp: &FieldPath) {
    match (l.bandwidth, &l.trace) {
        (Some(_), Some(_)) => cx.err(
            lp.key("trace"),
            "give either `bandwidth` or a `trace`, not both".into(),
        ),
        (Some(b), None) => {
            if b.get() == 0.0 {
                cx.err(
                    lp.key("bandwidth"),
                    "bandwidth must be greater than zero; remove it for an unlimited link".into(),
                );
            }
            p.bandwidth = Some(b.get());
            p.trace = None;
        }
        (None, Some(file)) => {
            let path = cx.base_dir.join(file);
            match std::fs::read_to_string(&path) {
                Ok(text) => match RateTrace::parse(file, &text) {
                    Ok(t) => {
                        p.trace = Some(std::sync::Arc::new(t));
                        p.bandwidth = None;
                    }
                    Err(e) => cx.err(lp.key("trace"), format!("mahimahi trace \"{file}\": {e}")),
                },
                Err(e) => cx.err(
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
}

/// What happens to single datagrams: loss, duplication, the MTU and the queue.
fn datagrams(cx: &mut Context, p: &mut LinkParams, l: &RawLink, lp: &FieldPath) {
    if let Some(loss) = &l.loss {
        p.loss = loss.0;
        if let Loss::Bernoulli { correlation, .. } = loss.0
            && correlation >= 1.0
        {
            cx.err(
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
            cx.err(
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
            cx.err(
                lp.key("queue"),
                format!(
                    "a queue of {b} B cannot hold one 1500-byte datagram; use at least \"1500B\""
                ),
            );
        }
        p.queue = q.0;
    }
}

/// The least IP MTU that carries QUIC's 1200-byte minimum datagram.
fn quinn_min_mtu() -> u32 {
    1200 + WIRE_OVERHEAD
}

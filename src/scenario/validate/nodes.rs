//! `[[node]]`: names, roles, devices, layer spans, batching and client shares; and, once
//! the topology says who holds what, the layers and weights each worker holds.

use super::topology::Checked;
use super::{Context, valid_name};
use crate::format::format_si;
use crate::scenario::diagnostic::FieldPath;
use crate::scenario::file::{RawCost, RawNode};
use crate::scenario::limits::{MAX_BATCH, MAX_MESSAGE_FIXED, MAX_NODES, MAX_PER_BYTE};
use crate::scenario::model::Model;
use crate::scenario::{MessageCost, Node, Role, SoftwareCost};
use std::collections::HashSet;

/// A worker's batch limit unless it sets `max_batch`: vLLM's default `max_num_seqs`, 256
/// sequences (vLLM engine arguments, `--max-num-seqs`). The KV cache's memory can lower it
/// (`plan::node_plan`).
pub const DEFAULT_MAX_BATCH: u32 = 256;

/// Every node, in file order (a node with problems is still listed, so that the indices
/// of the others hold).
pub(super) fn check(cx: &mut Context, raw: &[RawNode], model: Option<&Model>) -> Vec<Node> {
    let root = FieldPath::root();
    let mut nodes = Vec::new();
    let mut seen = HashSet::new();
    for (i, n) in raw.iter().enumerate() {
        let np = root.key("node").index(i);
        if !valid_name(&n.name) {
            cx.err(
                np.key("name"),
                format!(
                    "invalid node name \"{}\": use 1-64 characters of a-z, 0-9 and -",
                    n.name
                ),
            );
        }
        if !seen.insert(n.name.clone()) {
            cx.err(
                np.key("name"),
                format!(
                    "duplicate node name \"{}\"; node names must be unique",
                    n.name
                ),
            );
        }
        nodes.push(node(cx, n, &np, model));
    }
    if raw.len() > MAX_NODES {
        cx.err(
            root.key("node"),
            format!(
                "a scenario may have at most {MAX_NODES} nodes, got {}: every node is a QUIC endpoint with its own tasks and in-memory address in this one process",
                raw.len()
            ),
        );
    }
    if raw.is_empty() {
        cx.err(
            root.clone(),
            "the scenario has no nodes: add [[node]] tables for a client and a worker".into(),
        );
    } else {
        for (role, why) in [
            (Role::Client, "to send requests"),
            (Role::Worker, "to run the model"),
        ] {
            if !nodes.iter().any(|n| n.role == role) {
                cx.err(
                    root.key("node"),
                    format!("no node has role = \"{role}\"; a scenario needs one {why}"),
                );
            }
        }
    }
    nodes
}

/// One node's device, layers, batching and share.
fn node(cx: &mut Context, n: &RawNode, np: &FieldPath, model: Option<&Model>) -> Node {
    let engine = match (&n.engine, n.role) {
        (Some(e), Role::Worker) => super::engine::check(cx, e, np.key("engine")),
        (Some(_), role) => {
            cx.err(
                np.key("engine"),
                format!("a {role} runs no model: `engine` applies to workers and [baseline]"),
            );
            None
        }
        (None, _) => None,
    };
    if n.engine.is_some() && n.role == Role::Worker {
        for (set, field) in [
            (n.device.is_some(), "device"),
            (n.layers.is_some(), "layers"),
        ] {
            if set {
                cx.err(
                    np.key(field),
                    format!(
                        "worker \"{}\" is backed by an engine, which computes the whole model on its own hardware: remove `{field}`",
                        n.name
                    ),
                );
            }
        }
    }
    let device = match (&n.device, n.role) {
        // The plan's stand-in for a real server: no compute it could predict, so the floor
        // is the network's alone.
        (None, Role::Worker) if n.engine.is_some() => Some(crate::compute::DeviceProfile::ideal()),
        (None, Role::Worker) => {
            cx.err(
                np.clone(),
                format!(
                    "worker \"{}\" needs a `device`: a profile name like \"a100-80g\", \"ideal\" or an inline table",
                    n.name
                ),
            );
            None
        }
        (Some(_), Role::Relay) => {
            cx.err(
                np.key("device"),
                format!("relay \"{}\" runs no model: remove `device`", n.name),
            );
            None
        }
        (Some(d), _) => cx.device(d, np.key("device")),
        (None, _) => None,
    };
    let layers = match (&n.layers, n.role, model) {
        (Some(span), Role::Worker, Some(m)) => {
            if span.0.end > m.layers {
                cx.err(
                    np.key("layers"),
                    format!(
                        "layer span {}..{} runs past the model's {} layers; valid spans lie inside 0..{}",
                        span.0.start, span.0.end, m.layers, m.layers
                    ),
                );
            }
            span.0.clone()
        }
        (Some(_), Role::Worker, None) => 0..0,
        (Some(_), role, _) => {
            cx.err(
                np.key("layers"),
                format!("a {role} holds no layers: remove `layers`"),
            );
            0..0
        }
        (None, Role::Worker, Some(m)) => 0..m.layers,
        (None, _, _) => 0..0,
    };
    let max_batch = n.max_batch.unwrap_or(DEFAULT_MAX_BATCH);
    if max_batch == 0 {
        cx.err(np.key("max_batch"), "max_batch must be at least 1".into());
    } else if max_batch > MAX_BATCH {
        cx.err(
            np.key("max_batch"),
            format!(
                "max_batch may be at most {MAX_BATCH}, got {max_batch}: the scheduler holds a slot for every request it batches"
            ),
        );
    }
    if n.max_batch.is_some() && n.role != Role::Worker {
        cx.err(
            np.key("max_batch"),
            format!("max_batch applies to workers, not to a {}", n.role),
        );
    }
    if let Some(v) = n.share {
        if n.role != Role::Client {
            cx.err(
                np.key("share"),
                format!("share applies to clients, not to a {}", n.role),
            );
        } else if !(v.is_finite() && v > 0.0) {
            cx.err(
                np.key("share"),
                format!(
                    "share must be a finite number greater than zero, got {v}; it weighs this client's requests against the other clients' (default 1)"
                ),
            );
        }
    }
    let software = SoftwareCost {
        send: cost(cx, n, "send_cost", n.send_cost.as_ref(), np),
        recv: cost(cx, n, "recv_cost", n.recv_cost.as_ref(), np),
    };
    Node {
        software,
        name: n.name.clone(),
        role: n.role,
        device,
        layers,
        max_batch,
        share: n.share.unwrap_or(1.0),
        engine,
        transport: n
            .transport
            .as_ref()
            .and_then(|t| super::links::transport(cx, t, np.key("transport"))),
    }
}

/// A node's `send_cost` or `recv_cost`: bounded, and on a worker (the nodes whose software
/// the harness models, in every topology kind: docs/topologies.md says what each charges).
fn cost(
    cx: &mut Context,
    n: &RawNode,
    field: &str,
    raw: Option<&RawCost>,
    np: &FieldPath,
) -> MessageCost {
    let Some(raw) = raw else {
        return MessageCost::default();
    };
    let fp = np.key(field);
    if n.role != Role::Worker {
        cx.err(
            fp.clone(),
            format!(
                "{field} applies to workers, not to a {}: the harness spends software costs on the workers that serve, compute and synchronise a request",
                n.role
            ),
        );
    }
    let fixed = raw.fixed.map(|d| d.get()).unwrap_or_default();
    if fixed > MAX_MESSAGE_FIXED {
        cx.err(
            fp.key("fixed"),
            format!(
                "{field}.fixed may be at most {}, got {}: it is the software time of one message",
                crate::format::format_duration(MAX_MESSAGE_FIXED),
                crate::format::format_duration(fixed)
            ),
        );
    }
    let per_byte = raw.per_byte.map(|p| p.secs()).unwrap_or(0.0);
    if per_byte > MAX_PER_BYTE.as_secs_f64() {
        cx.err(
            fp.key("per_byte"),
            format!(
                "{field}.per_byte may be at most {} per byte, got {} per byte: it is the software time of each byte of a message",
                crate::format::format_duration(MAX_PER_BYTE),
                crate::format::format_duration(std::time::Duration::from_secs_f64(per_byte.min(1e9)))
            ),
        );
    }
    MessageCost { fixed, per_byte }
}

/// Layer spans and weights, now that the topology says who holds what. A star's host
/// may hold no layers; a tensor-parallel worker holds 1/N of every layer.
pub(super) fn check_weights(
    cx: &mut Context,
    raw: &[RawNode],
    nodes: &[Node],
    model: Option<&Model>,
    topology: &Checked,
) {
    let (kind, path) = (topology.topology.kind, &topology.topology.path);
    let holding = |i: usize| kind.holding(path.iter().position(|&p| p == i), path.len());
    for (i, n) in nodes.iter().enumerate() {
        if n.role != Role::Worker {
            continue;
        }
        let np = FieldPath::root().key("node").index(i);
        if raw[i].engine.is_some() && !super::engine::whole_model_kind(kind) {
            cx.err(
                np.key("engine"),
                super::engine::split_message(&n.name, kind),
            );
            continue;
        }
        if raw[i].engine.is_some() {
            continue;
        }
        let holds = holding(i);
        if raw[i].layers.as_ref().is_some_and(|s| s.0.is_empty()) && !holds.may_hold_no_layers {
            cx.err(
                np.key("layers"),
                format!(
                    "layer span {0}..{0} is empty: end must be greater than start (only the host of a star topology may hold no layers, with \"0..0\")",
                    n.layers.start
                ),
            );
        }
        let (Some(dev), Some(m)) = (&n.device, model) else {
            continue;
        };
        // The worker that runs the LM head holds it: as its kind says (a star's host), else
        // the last stage.
        let head = holds.head.unwrap_or(n.layers.end == m.layers);
        let ways = holds.ways;
        let bytes = (m.layer_params() * n.layers.len() as f64
            + if head { m.head_params() } else { 0.0 })
            * m.weight_bytes
            / ways as f64;
        if bytes > dev.memory.get() {
            let (held, remedy) = if ways > 1 {
                (
                    format!("1/{ways} of {} layers", n.layers.len()),
                    "add workers to the tensor topology or use a larger device",
                )
            } else {
                (
                    format!("{} layers", n.layers.len()),
                    "hold fewer layers or use a larger device",
                )
            };
            cx.err(
                np.key("layers"),
                format!(
                    "worker \"{}\" holds {held} = {} of weights, more than the {} of {}; {remedy}",
                    n.name,
                    format_si(bytes, "B"),
                    dev.memory,
                    dev.name
                ),
            );
        }
    }
}

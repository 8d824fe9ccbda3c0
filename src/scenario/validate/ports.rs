//! `[[port]]`: switch ports or NICs whose rate and queue several link directions share
//! (`net::port`), and a link's `port = "name"`.

use super::Context;
use crate::net::params::{DEFAULT_QUEUE_BYTES, Queue};
use crate::net::port::PortDef;
use crate::scenario::diagnostic::FieldPath;
use crate::scenario::file::RawPort;
use std::sync::Arc;

/// Every port the scenario declares, in file order.
pub(super) fn check(cx: &mut Context, raw: &[RawPort]) -> Vec<Arc<PortDef>> {
    let mut ports: Vec<Arc<PortDef>> = Vec::new();
    for (i, p) in raw.iter().enumerate() {
        let pp = FieldPath::root().key("port").index(i);
        if !super::valid_name(&p.name) {
            cx.err(
                pp.key("name"),
                format!(
                    "invalid port name \"{}\": use 1-64 characters of a-z, 0-9 and -",
                    p.name
                ),
            );
        }
        if ports.iter().any(|q| q.name == p.name) {
            cx.err(
                pp.key("name"),
                format!("the port \"{}\" is declared twice", p.name),
            );
            continue;
        }
        // The unit type keeps the rate in 1 kbit/s ..= 1 Pbit/s, so it is above zero.
        let rate = p.rate.get();
        let queue = p
            .queue
            .as_ref()
            .map_or(Queue::Bytes(DEFAULT_QUEUE_BYTES), |q| q.0);
        if let Queue::Bytes(b) = queue
            && b < 1500
        {
            cx.err(
                pp.key("queue"),
                format!(
                    "a port queue of {b} B cannot hold one 1500-byte datagram; use at least \"1500B\""
                ),
            );
        }
        ports.push(Arc::new(PortDef {
            name: p.name.clone(),
            rate,
            queue,
        }));
    }
    ports
}

/// The port called `name`, or a problem at `path` that lists the ports there are.
pub(super) fn find(
    cx: &mut Context,
    ports: &[Arc<PortDef>],
    name: &str,
    path: FieldPath,
) -> Option<Arc<PortDef>> {
    let found = ports.iter().find(|p| p.name == name).cloned();
    if found.is_none() {
        let names: Vec<&str> = ports.iter().map(|p| p.name.as_str()).collect();
        let valid = match names.is_empty() {
            true => "the scenario declares no [[port]]; add one like [[port]] name = \"switch\", rate = \"1Gbit/s\"".to_string(),
            false => format!("ports are: {}", names.join(", ")),
        };
        cx.err(path, format!("unknown port \"{name}\"; {valid}"));
    }
    found
}

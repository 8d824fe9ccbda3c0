//! `[[fault]]`: a crash, a partition or a loss burst at a set time of the measured phase
//! (docs/faults.md). The raw table as written, its checks, and the typed [`Fault`] the
//! harness injects.

use super::diagnostic::FieldPath;
use super::units::{Dur, Fraction};
use super::validate::Context;
use super::{Extent, LinkDef, Node, Role};
use crate::format::format_duration;
use serde::Deserialize;
use std::time::Duration;

/// The kinds a `[[fault]]` may name.
pub const KINDS: &[&str] = &["crash", "partition", "loss"];

/// A `[[fault]]` table as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawFault {
    pub(super) kind: Option<String>,
    pub(super) at: Option<Dur>,
    #[serde(rename = "for")]
    pub(super) lasts: Option<Dur>,
    pub(super) node: Option<String>,
    pub(super) between: Option<Vec<Side>>,
    pub(super) loss: Option<Fraction>,
}

/// One side of a partition: a node or a list of nodes.
pub(super) enum Side {
    One(String),
    Group(Vec<String>),
}

impl<'de> Deserialize<'de> for Side {
    /// A node's name or a list of names; anything else says which forms are accepted (an
    /// untagged enum would only say that no variant matched).
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let expected =
            "expected a node's name (\"gpu-a\") or a list of names ([\"gpu-a\", \"gpu-b\"])";
        match toml::Value::deserialize(d)? {
            toml::Value::String(s) => Ok(Side::One(s)),
            toml::Value::Array(items) => items
                .into_iter()
                .map(|v| match v {
                    toml::Value::String(s) => Ok(s),
                    other => Err(D::Error::custom(format!(
                        "a partition side lists node names: {expected}, got {} {} in the list",
                        article(&other),
                        other.type_str()
                    ))),
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Side::Group),
            other => Err(D::Error::custom(format!(
                "invalid partition side: {expected}, got {} {}",
                article(&other),
                other.type_str()
            ))),
        }
    }
}

fn article(v: &toml::Value) -> &'static str {
    match v {
        toml::Value::Array(_) | toml::Value::Integer(_) => "an",
        _ => "a",
    }
}

impl Side {
    fn names(&self) -> Vec<&str> {
        match self {
            Side::One(n) => vec![n.as_str()],
            Side::Group(g) => g.iter().map(String::as_str).collect(),
        }
    }
}

/// A fault to inject, timed from the start of the measured phase.
#[derive(Clone, Debug, PartialEq)]
pub struct Fault {
    pub kind: FaultKind,
    /// When it begins, from the start of the measured phase.
    pub at: Duration,
    /// How long it lasts; `None` only for a crash with no restart.
    pub lasts: Option<Duration>,
    /// Its name in messages and summary.json: `crash(gpu-a)`, `partition(client | relay)`,
    /// `loss(client-relay 30%)`.
    pub name: String,
}

#[derive(Clone, Debug, PartialEq)]
pub enum FaultKind {
    /// The node stops: its links drop everything both ways, its in-flight work and its KV
    /// cache are lost; after `lasts` it comes back empty.
    Crash { node: usize },
    /// The links between the two sides drop everything.
    Partition { sides: [Vec<usize>; 2] },
    /// The named link directions lose this fraction of datagrams, on top of their own loss.
    Loss {
        links: Vec<(usize, usize)>,
        loss: f64,
    },
}

impl Fault {
    /// The nodes the fault touches (a crashed node; both sides of a partition; the ends of
    /// the links a loss burst hits).
    pub fn nodes(&self) -> Vec<usize> {
        let mut v: Vec<usize> = match &self.kind {
            FaultKind::Crash { node } => vec![*node],
            FaultKind::Partition { sides } => sides.iter().flatten().copied().collect(),
            FaultKind::Loss { links, .. } => links.iter().flat_map(|&(a, b)| [a, b]).collect(),
        };
        v.sort_unstable();
        v.dedup();
        v
    }

    /// The link directions whose datagrams the fault drops (all of them, or `loss` of them),
    /// given the links the scenario declares.
    pub fn directions(&self, links: &[LinkDef]) -> Vec<(usize, usize)> {
        match &self.kind {
            FaultKind::Crash { node } => links
                .iter()
                .filter(|l| l.from == *node || l.to == *node)
                .map(|l| (l.from, l.to))
                .collect(),
            FaultKind::Partition { sides } => links
                .iter()
                .filter(|l| {
                    (sides[0].contains(&l.from) && sides[1].contains(&l.to))
                        || (sides[1].contains(&l.from) && sides[0].contains(&l.to))
                })
                .map(|l| (l.from, l.to))
                .collect(),
            FaultKind::Loss { links, .. } => links.clone(),
        }
    }

    /// The fraction of datagrams it drops on its directions: 1 but for a loss burst.
    pub fn drop_fraction(&self) -> f64 {
        match self.kind {
            FaultKind::Loss { loss, .. } => loss,
            _ => 1.0,
        }
    }

    /// The kind's name as written in `kind`.
    pub fn kind_name(&self) -> &'static str {
        match self.kind {
            FaultKind::Crash { .. } => "crash",
            FaultKind::Partition { .. } => "partition",
            FaultKind::Loss { .. } => "loss",
        }
    }
}

/// Checks every `[[fault]]`; `measure` is the measured phase's extent when it is known.
pub(super) fn check(
    cx: &mut Context,
    raw: &[RawFault],
    nodes: &[Node],
    links: &[LinkDef],
    measure: Option<Extent>,
) -> Vec<Fault> {
    raw.iter()
        .enumerate()
        .filter_map(|(i, f)| {
            one(
                cx,
                f,
                &FieldPath::root().key("fault").index(i),
                nodes,
                links,
                measure,
            )
        })
        .collect()
}

fn one(
    cx: &mut Context,
    f: &RawFault,
    fp: &FieldPath,
    nodes: &[Node],
    links: &[LinkDef],
    measure: Option<Extent>,
) -> Option<Fault> {
    let Some(kind) = f.kind.as_deref() else {
        cx.err(
            fp.clone(),
            format!("a [[fault]] needs `kind`, one of: {}", KINDS.join(", ")),
        );
        return None;
    };
    if !KINDS.contains(&kind) {
        cx.err(
            fp.key("kind"),
            format!(
                "unknown fault kind \"{kind}\"; kinds are: {}",
                KINDS.join(", ")
            ),
        );
        return None;
    }
    let Some(at) = f.at.map(Dur::get) else {
        cx.err(
            fp.clone(),
            "a [[fault]] needs `at`, the time from the start of the measured phase, like at = \"30s\"".into(),
        );
        return None;
    };
    let lasts = f.lasts.map(Dur::get);
    let mut ok = true;
    if lasts == Some(Duration::ZERO) {
        cx.err(
            fp.key("for"),
            "`for` must be longer than 0s: how long the fault lasts, like for = \"10s\"".into(),
        );
        ok = false;
    }
    if lasts.is_none() && kind != "crash" {
        cx.err(
            fp.clone(),
            format!("a {kind} fault needs `for`, how long it lasts, like for = \"10s\" (only a crash may last to the end of the run)"),
        );
        ok = false;
    }
    if let Some(Extent::Duration(d)) = measure {
        if at >= d {
            cx.err(
                fp.key("at"),
                format!(
                    "the fault begins at {} but the measured phase lasts {}: `at` must be less than the phase's duration",
                    format_duration(at),
                    format_duration(d)
                ),
            );
            ok = false;
        } else if let Some(l) = lasts
            && at + l > d
        {
            cx.err(
                fp.key("for"),
                format!(
                    "the fault ends at {} ({} + {}), after the measured phase's {}: `at` + `for` must be at most the phase's duration",
                    format_duration(at + l),
                    format_duration(at),
                    format_duration(l),
                    format_duration(d)
                ),
            );
            ok = false;
        }
    }
    let takes = |field: &str| match kind {
        "crash" => field == "node",
        "partition" => field == "between",
        _ => field == "node" || field == "between" || field == "loss",
    };
    for (present, field) in [
        (f.node.is_some(), "node"),
        (f.between.is_some(), "between"),
        (f.loss.is_some(), "loss"),
    ] {
        if present && !takes(field) {
            cx.err(fp.key(field), format!("a {kind} fault takes no `{field}`"));
            ok = false;
        }
    }
    let kind = match kind {
        "crash" => {
            let Some(name) = &f.node else {
                cx.err(
                    fp.clone(),
                    "a crash needs `node`, the node that stops".into(),
                );
                return None;
            };
            let node = cx.node(nodes, name, fp.key("node"))?;
            if nodes[node].role == Role::Client {
                cx.err(
                    fp.key("node"),
                    format!("\"{name}\" is a client; a crash takes a worker or a relay (a client that stops sends nothing more)"),
                );
                return None;
            }
            FaultKind::Crash { node }
        }
        "partition" => {
            let sides = sides(cx, f.between.as_deref(), fp, nodes)?;
            FaultKind::Partition { sides }
        }
        _ => {
            let Some(loss) = f.loss.map(Fraction::get) else {
                cx.err(
                    fp.clone(),
                    "a loss fault needs `loss`, like loss = \"20%\"".into(),
                );
                return None;
            };
            if !(loss > 0.0 && loss <= 1.0) {
                cx.err(
                    fp.key("loss"),
                    format!(
                        "a loss burst's `loss` must be more than 0% and at most 100%, got {}%",
                        loss * 100.0
                    ),
                );
                return None;
            }
            let dirs: Vec<(usize, usize)> = match (&f.node, &f.between) {
                (Some(name), None) => {
                    let n = cx.node(nodes, name, fp.key("node"))?;
                    links
                        .iter()
                        .filter(|l| l.from == n || l.to == n)
                        .map(|l| (l.from, l.to))
                        .collect()
                }
                (None, Some(b)) => {
                    let [a, b] = sides(cx, Some(b), fp, nodes)?;
                    if a.len() != 1 || b.len() != 1 {
                        cx.err(
                            fp.key("between"),
                            "a loss burst's `between` names one link's two nodes, like between = [\"client\", \"relay\"]".into(),
                        );
                        return None;
                    }
                    links
                        .iter()
                        .filter(|l| {
                            (l.from == a[0] && l.to == b[0]) || (l.from == b[0] && l.to == a[0])
                        })
                        .map(|l| (l.from, l.to))
                        .collect()
                }
                _ => {
                    cx.err(
                        fp.clone(),
                        "a loss fault needs either `node` (all its links) or `between` (one link's two nodes)".into(),
                    );
                    return None;
                }
            };
            FaultKind::Loss { links: dirs, loss }
        }
    };
    let mut fault = Fault {
        kind,
        at,
        lasts,
        name: String::new(),
    };
    if fault.directions(links).is_empty() {
        let what = match &fault.kind {
            FaultKind::Crash { .. } => "the node has no link",
            FaultKind::Partition { .. } => "no declared link joins the two sides",
            FaultKind::Loss { .. } => "no declared link matches",
        };
        cx.err(
            fp.clone(),
            format!("the fault would change nothing: {what}"),
        );
        ok = false;
    }
    let list = |v: &[usize]| {
        v.iter()
            .map(|&i| nodes[i].name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    fault.name = match &fault.kind {
        FaultKind::Crash { node } => format!("crash({})", nodes[*node].name),
        FaultKind::Partition { sides } => {
            format!("partition({} | {})", list(&sides[0]), list(&sides[1]))
        }
        FaultKind::Loss { loss, .. } => {
            let target = match (&f.node, &f.between) {
                (Some(n), _) => n.clone(),
                (_, Some(b)) => b.iter().flat_map(Side::names).collect::<Vec<_>>().join("-"),
                _ => String::new(),
            };
            let pct = loss * 100.0;
            let pct = if pct.fract() == 0.0 {
                format!("{pct:.0}")
            } else {
                crate::format::significant(pct)
            };
            format!("loss({target} {pct}%)")
        }
    };
    ok.then_some(fault)
}

/// A partition's two sides (or a loss burst's two ends), each checked: known nodes, no
/// node on both sides.
fn sides(
    cx: &mut Context,
    between: Option<&[Side]>,
    fp: &FieldPath,
    nodes: &[Node],
) -> Option<[Vec<usize>; 2]> {
    let bp = fp.key("between");
    let Some(between) = between else {
        cx.err(
            fp.clone(),
            "a partition needs `between`, its two sides, like between = [\"client\", \"relay\"] or between = [[\"a\", \"b\"], \"c\"]".into(),
        );
        return None;
    };
    if between.len() != 2 {
        cx.err(
            bp,
            format!("`between` needs exactly two sides, got {}", between.len()),
        );
        return None;
    }
    let mut out: [Vec<usize>; 2] = [Vec::new(), Vec::new()];
    for (s, side) in between.iter().enumerate() {
        let names = side.names();
        if names.is_empty() {
            cx.err(bp.index(s), "a side needs at least one node".into());
            return None;
        }
        for (k, name) in names.iter().enumerate() {
            let at = match side {
                Side::One(_) => bp.index(s),
                Side::Group(_) => bp.index(s).index(k),
            };
            let n = cx.node(nodes, name, at)?;
            out[s].push(n);
        }
    }
    if let Some(&n) = out[0].iter().find(|n| out[1].contains(n)) {
        cx.err(bp, format!("\"{}\" is on both sides", nodes[n].name));
        return None;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::FaultKind;
    use crate::scenario::testing::ScenarioText;
    use std::time::Duration;

    fn three(faults: &str) -> crate::scenario::Scenario {
        ScenarioText::new("f")
            .workload("prompt_tokens = 16\noutput_tokens = 4\narrival = { kind = \"constant\", rate = 1.0 }\nduration = \"60s\"")
            .client("client")
            .relay("relay")
            .worker("gpu", "a100-80g", "")
            .link("client", "relay", "rtt = \"10ms\"")
            .link("relay", "gpu", "rtt = \"10ms\"")
            .topology("relay", &["client", "relay", "gpu"], "")
            .raw(faults)
            .parse()
            .unwrap()
    }

    #[test]
    fn each_kind_maps_onto_its_nodes_directions_and_name() {
        let s = three(
            r#"[[fault]]
kind = "crash"
node = "gpu"
at = "10s"

[[fault]]
kind = "partition"
between = [["client"], "relay"]
at = "20s"
for = "5s"

[[fault]]
kind = "loss"
node = "relay"
loss = "25%"
at = "30s"
for = "1.5s""#,
        );
        let f = &s.faults;
        assert_eq!(f.len(), 3);
        assert_eq!(f[0].kind, FaultKind::Crash { node: 2 });
        assert_eq!((f[0].at, f[0].lasts), (Duration::from_secs(10), None));
        assert_eq!(f[0].name, "crash(gpu)");
        // A crash cuts both directions of every link of the node.
        let mut d = f[0].directions(&s.links);
        d.sort();
        assert_eq!(d, vec![(1, 2), (2, 1)]);
        assert_eq!(f[1].name, "partition(client | relay)");
        let mut d = f[1].directions(&s.links);
        d.sort();
        assert_eq!(d, vec![(0, 1), (1, 0)]);
        assert_eq!(f[1].drop_fraction(), 1.0);
        assert_eq!(f[2].name, "loss(relay 25%)");
        assert_eq!(f[2].directions(&s.links).len(), 4);
        assert_eq!(f[2].drop_fraction(), 0.25);
        assert_eq!(f[2].lasts, Some(Duration::from_millis(1500)));
        assert_eq!(f[2].nodes(), vec![0, 1, 2]);
    }
}

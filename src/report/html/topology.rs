//! The topology: nodes and links. A node's label is its role and part as summary.json
//! recorded them (version 2); for version-1 files, which did not record them, the roles
//! are guessed from the traffic as before.

use super::super::fmt_ms;
use super::super::summary::{Link, LinkParams, Loss, Summary};
use super::esc;
use super::svg::{
    BLUE, Frame, GREY, Key, Scale, header_height, legend, no_data, svg_close, svg_open,
};
use std::collections::BTreeMap;
use std::fmt::Write as _;

struct Direction<'a> {
    from: usize,
    to: usize,
    link: &'a Link,
}

fn fmt_rate(bits: f64) -> String {
    let (v, unit) = if bits >= 1e9 {
        (bits / 1e9, "Gbit/s")
    } else if bits >= 1e6 {
        (bits / 1e6, "Mbit/s")
    } else if bits >= 1e3 {
        (bits / 1e3, "kbit/s")
    } else {
        (bits, "bit/s")
    };
    let s = format!("{v:.3}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    format!("{s} {unit}")
}

fn fmt_pct(p: f64) -> String {
    let s = format!("{:.3}", p * 100.0);
    let s = s.trim_end_matches('0').trim_end_matches('.');
    format!("{s}%")
}

/// One direction's delay, as a short phrase.
fn delay_text(p: &LinkParams) -> String {
    let d = p.delay_ms().map(fmt_ms).unwrap_or_else(|| "?".into());
    match p.jitter_ms().filter(|j| *j > 0.0) {
        Some(j) => format!("delay {d} ± {}", fmt_ms(j)),
        None => format!("delay {d}"),
    }
}

fn rate_text(p: &LinkParams) -> String {
    if let Some(b) = p.bandwidth {
        return fmt_rate(b);
    }
    match &p.trace {
        Some(t) => format!("trace, mean {}", fmt_rate(t.mean_bit_per_s)),
        None => "unlimited".into(),
    }
}

fn loss_text(p: &LinkParams) -> String {
    match p.loss {
        Loss::None => "no loss".into(),
        Loss::Bernoulli { p, .. } => format!("loss {}", fmt_pct(p)),
        Loss::GilbertElliott {
            p,
            r,
            loss_good,
            loss_bad,
        } if p + r > 0.0 => format!(
            "loss {} (gilbert-elliott)",
            fmt_pct((r * loss_good + p * loss_bad) / (p + r))
        ),
        Loss::GilbertElliott { .. } => "loss (gilbert-elliott)".into(),
    }
}

/// Nodes in the order requests reach them: from each client (a node no connection
/// reaches), depth first along the connections; then any others in link order. And the
/// link directions between them.
fn nodes_and_directions(s: &Summary) -> (Vec<String>, Vec<Direction<'_>>) {
    let pairs: Vec<(&str, &str)> = s
        .network
        .connections
        .iter()
        .map(|c| (c.from.as_str(), c.to.as_str()))
        .collect();
    fn visit(n: &str, pairs: &[(&str, &str)], out: &mut Vec<String>) {
        if out.iter().any(|x| x == n) {
            return;
        }
        out.push(n.to_string());
        for &(a, b) in pairs {
            if a == n {
                visit(b, pairs, out);
            }
        }
    }
    let mut nodes: Vec<String> = Vec::new();
    for &(a, _) in &pairs {
        if !pairs.iter().any(|&(_, b)| b == a) {
            visit(a, &pairs, &mut nodes);
        }
    }
    let mut index = |n: &str| {
        nodes.iter().position(|x| x == n).unwrap_or_else(|| {
            nodes.push(n.to_string());
            nodes.len() - 1
        })
    };
    let dirs = s
        .network
        .links
        .iter()
        .map(|link| Direction {
            from: index(&link.from),
            to: index(&link.to),
            link,
        })
        .collect();
    (nodes, dirs)
}

/// Each node's label under its name: the recorded role and part, or for a version-1
/// summary a guess from the traffic.
fn roles(s: &Summary) -> BTreeMap<String, String> {
    if let Some(t) = &s.topology {
        return t
            .nodes
            .iter()
            .map(|n| {
                let label = if n.part == n.role || n.part == "whole" {
                    n.role.clone()
                } else {
                    format!("{} · {}", n.role, n.part)
                };
                (n.name.clone(), label)
            })
            .collect();
    }
    // A node no one connects to is a client; one that reports compute time is a worker;
    // the others relay.
    let per_node = s.run("topology").and_then(|r| r.breakdown.nodes.as_ref());
    let conns = &s.network.connections;
    let mut roles = BTreeMap::new();
    for c in conns {
        for n in [&c.from, &c.to] {
            let reached = conns.iter().any(|c| &c.to == n);
            let role = match (reached, per_node) {
                (false, _) => "client",
                // Older summaries have no per-node breakdown: every reached node worked.
                (true, None) => "worker",
                (true, Some(m)) if m.contains_key(n) => "worker",
                (true, Some(_)) => "relay",
            };
            roles.insert(n.clone(), role.to_string());
        }
    }
    roles
}

/// Where the boxes go.
struct Layout {
    w: f64,
    h: f64,
    top: f64,
    /// Box height, and each box's width.
    bh: f64,
    bw: Vec<f64>,
    centres: Vec<(f64, f64)>,
}

fn layout(nodes: &[String], keys: &[(Key, String)]) -> Layout {
    let n = nodes.len();
    // Many nodes need a wider circle.
    let r = (19.0 * n as f64).max(170.0);
    let w = (2.6 * r + 150.0).max(640.0);
    let top = header_height(keys, w);
    let bh = 60.0;
    let bw: Vec<f64> = nodes
        .iter()
        .map(|name| (name.chars().count() as f64 * 8.0 + 28.0).max(96.0))
        .collect();
    // Centres: two nodes side by side, more on a circle.
    let (centres, h): (Vec<(f64, f64)>, f64) = if n <= 2 {
        let cy = top + 84.0;
        let c = match n {
            0 => vec![],
            1 => vec![(w / 2.0, cy)],
            _ => vec![(24.0 + bw[0] / 2.0, cy), (w - 24.0 - bw[1] / 2.0, cy)],
        };
        (c, cy + bh / 2.0 + 84.0)
    } else {
        let cy = top + 40.0 + r;
        let c = (0..n)
            .map(|i| {
                let a = -std::f64::consts::FRAC_PI_2 + i as f64 * std::f64::consts::TAU / n as f64;
                (w / 2.0 + r * 1.3 * a.cos(), cy + r * a.sin())
            })
            .collect();
        (c, cy + r + 45.0)
    };
    Layout {
        w,
        h,
        top,
        bh,
        bw,
        centres,
    }
}

/// The state of drawing the arrows: the numbered list (many nodes) and the pairs whose
/// RTT is already written.
struct Arrows<'a> {
    nodes: &'a [String],
    dirs: &'a [Direction<'a>],
    marker: String,
    numbered: Vec<String>,
    done_pairs: Vec<(usize, usize)>,
}

impl Arrows<'_> {
    fn draw(&mut self, o: &mut String, l: &Layout, d: &Direction) {
        if d.from == d.to {
            return;
        }
        let half = 13.0;
        let (a, b) = (d.from.min(d.to), d.from.max(d.to));
        let (ca, cb) = (l.centres[a], l.centres[b]);
        let (dx, dy) = (cb.0 - ca.0, cb.1 - ca.1);
        let len = (dx * dx + dy * dy).sqrt().max(1e-9);
        let (ux, uy) = (dx / len, dy / len);
        // The side of the pair's line this direction takes: a -> b above, b -> a below.
        let (nx, ny) = (uy, -ux);
        let side = if d.from == a { 1.0 } else { -1.0 };
        let trim = |i: usize| {
            let (hw, hh) = (l.bw[i] / 2.0 + 4.0, l.bh / 2.0 + 4.0);
            (hw / ux.abs().max(1e-9)).min(hh / uy.abs().max(1e-9))
        };
        let (ta, tb) = (trim(a), trim(b));
        let (ox, oy) = (nx * half * side, ny * half * side);
        let start = (ca.0 + ux * ta + ox, ca.1 + uy * ta + oy);
        let end = (cb.0 - ux * tb + ox, cb.1 - uy * tb + oy);
        let (p, q) = if d.from == a {
            (start, end)
        } else {
            (end, start)
        };
        let params = &d.link.params;
        let (from, to) = (&self.nodes[d.from], &self.nodes[d.to]);
        let title = format!(
            "{from} → {to}: {}, {}, {}",
            delay_text(params),
            rate_text(params),
            loss_text(params)
        );
        w!(
            o,
            "<line x1=\"{:.1}\" y1=\"{:.1}\" x2=\"{:.1}\" y2=\"{:.1}\" stroke=\"#3a4253\" stroke-width=\"2\" marker-end=\"url(#{})\"><title>{}</title></line>\n",
            p.0,
            p.1,
            q.0,
            q.1,
            self.marker,
            esc(&title)
        );
        let (mx, my) = ((start.0 + end.0) / 2.0, (start.1 + end.1) / 2.0);
        if l.centres.len() > 2 {
            // Many nodes: a numbered tag on the arrow, its text in the list under the drawing.
            self.numbered.push(title);
            let (tx, ty) = (mx + nx * side * 9.0, my + ny * side * 9.0);
            w!(
                o,
                "<circle cx=\"{tx:.1}\" cy=\"{ty:.1}\" r=\"9\" fill=\"#fff\" stroke=\"#3a4253\"/>\
                 <text class=\"tick\" x=\"{tx:.1}\" y=\"{:.1}\" text-anchor=\"middle\" style=\"fill:#1d2330\">{}</text>\n",
                ty + 4.0,
                self.numbered.len()
            );
            return;
        }
        // The label: two lines on this direction's side, the nearer one closest.
        let lines = [
            format!("{from} → {to}: {}", delay_text(params)),
            format!("{} · {}", rate_text(params), loss_text(params)),
        ];
        let vertical = ny.abs() > 0.5;
        let anchor = if vertical || nx.abs() < 0.3 {
            "middle"
        } else if nx * side > 0.0 {
            "start"
        } else {
            "end"
        };
        for (k, text) in lines.iter().enumerate() {
            // Distance from the arrow: the far line further out.
            let above = side * ny < 0.0;
            let step = if above { 1 - k } else { k };
            let dist = 11.0 + step as f64 * 17.0;
            let (tx, ty) = (mx + nx * side * dist, my + ny * side * dist);
            w!(
                o,
                "<text class=\"link-label\" x=\"{tx:.1}\" y=\"{:.1}\" text-anchor=\"{anchor}\">{}</text>\n",
                ty + 4.0,
                esc(text)
            );
        }
        // RTT between the two arrows when the pair has both directions.
        if !self.done_pairs.contains(&(a, b))
            && let Some(back) = self.dirs.iter().find(|e| e.from == d.to && e.to == d.from)
        {
            self.done_pairs.push((a, b));
            if let (Some(x), Some(y)) = (params.delay_ms(), back.link.params.delay_ms()) {
                let (cx, cy) = (
                    (ca.0 + ux * ta + cb.0 - ux * tb) / 2.0,
                    (ca.1 + uy * ta + cb.1 - uy * tb) / 2.0,
                );
                w!(
                    o,
                    "<text class=\"tick\" x=\"{cx:.1}\" y=\"{:.1}\" text-anchor=\"middle\" style=\"font-weight:600;fill:#3a4253\">RTT {}</text>\n",
                    cy + 4.0,
                    esc(&fmt_ms(x + y))
                );
            }
        }
    }
}

fn boxes(o: &mut String, l: &Layout, nodes: &[String], roles: &BTreeMap<String, String>) {
    for (i, name) in nodes.iter().enumerate() {
        let (cx, cy) = l.centres[i];
        let role = roles.get(name);
        w!(
            o,
            "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{}\" rx=\"6\" fill=\"#eef4fb\" stroke=\"{BLUE}\" stroke-width=\"1.5\"/>\n\
             <text x=\"{cx:.1}\" y=\"{:.1}\" text-anchor=\"middle\" style=\"font-size:14px;font-weight:600\">{}</text>\n",
            cx - l.bw[i] / 2.0,
            cy - l.bh / 2.0,
            l.bw[i],
            l.bh,
            cy + if role.is_some() { -1.0 } else { 5.0 },
            esc(name)
        );
        if let Some(role) = role {
            w!(
                o,
                "<text class=\"tick\" x=\"{cx:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>\n",
                cy + 15.0,
                esc(role)
            );
        }
    }
}

/// The caption: the numbered links and the changes during the run.
fn caption(nodes: &[String], dirs: &[Direction], numbered: &[String]) -> String {
    let mut caption = String::new();
    for d in dirs {
        for c in &d.link.changes {
            let p = &c.params;
            w!(
                caption,
                "<li>{} → {} at {}: {}, {}, {}</li>",
                esc(&nodes[d.from]),
                esc(&nodes[d.to]),
                esc(&c.at),
                esc(&delay_text(p)),
                esc(&rate_text(p)),
                esc(&loss_text(p))
            );
        }
    }
    if !caption.is_empty() {
        caption = format!("Changes during the run:<ul>{caption}</ul>");
    }
    if !numbered.is_empty() {
        let list: String = numbered
            .iter()
            .map(|t| format!("<li>{}</li>", esc(t)))
            .collect();
        caption = format!("Links, as numbered in the drawing:<ol>{list}</ol>{caption}");
    }
    caption
}

pub(super) fn plot(o: &mut String, id: &str, s: &Summary) {
    let (nodes, dirs) = nodes_and_directions(s);
    let roles = roles(s);
    let any_changes = s.network.links.iter().any(|l| !l.changes.is_empty());
    let keys = vec![
        (Key::Box, "node".to_string()),
        (
            Key::Line {
                color: GREY,
                dashed: false,
            },
            format!(
                "one direction: one-way delay ± jitter, rate, loss{}",
                if any_changes { " (at the start)" } else { "" }
            ),
        ),
    ];
    let l = layout(&nodes, &keys);
    let marker = format!("{id}-arrow");
    svg_open(o, "topology", id, l.w, l.h, "Topology: nodes and links");
    w!(
        o,
        "<defs><marker id=\"{marker}\" viewBox=\"0 0 10 10\" refX=\"9\" refY=\"5\" markerWidth=\"7\" markerHeight=\"7\" orient=\"auto-start-reverse\"><path d=\"M0,0 L10,5 L0,10 z\" fill=\"#3a4253\"/></marker></defs>\n"
    );
    legend(o, &keys, l.w);
    if nodes.is_empty() {
        let f = Frame::new(
            l.w,
            l.h,
            l.top,
            Scale::Linear(0.0, 1.0),
            Scale::Linear(0.0, 1.0),
        );
        no_data(o, &f, "no links recorded in summary.json");
    }
    // Links first, then the boxes over their ends.
    let mut arrows = Arrows {
        nodes: &nodes,
        dirs: &dirs,
        marker,
        numbered: Vec::new(),
        done_pairs: Vec::new(),
    };
    for d in &dirs {
        arrows.draw(o, &l, d);
    }
    boxes(o, &l, &nodes, &roles);
    let caption = caption(&nodes, &dirs, &arrows.numbered);
    svg_close(o, &caption);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(json: &str) -> LinkParams {
        let base = serde_json::json!({
            "delay": "20ms", "jitter": "500us", "jitter_distribution": "uniform",
            "jitter_correlation": 0.0, "fifo": true, "reorder": null, "bandwidth": 1e9,
            "trace": null, "loss": {"model": "bernoulli", "p": 0.01, "correlation": 0.0},
            "duplicate": 0.0, "mtu": null, "queue": "1000 packets"
        });
        let mut v = base;
        let over: serde_json::Value = serde_json::from_str(json).unwrap();
        for (k, x) in over.as_object().unwrap() {
            v[k] = x.clone();
        }
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn link_phrases() {
        let p = params("{}");
        assert_eq!(delay_text(&p), "delay 20.0 ms ± 500 us");
        assert_eq!(rate_text(&p), "1 Gbit/s");
        assert_eq!(loss_text(&p), "loss 1%");
        let t = params(
            r#"{"bandwidth": null, "trace": {"file": "x.up", "period_ms": 10, "mean_bit_per_s": 21330000.0}, "loss": {"model": "none"}}"#,
        );
        assert_eq!(rate_text(&t), "trace, mean 21.33 Mbit/s");
        assert_eq!(loss_text(&t), "no loss");
        let u = params(r#"{"bandwidth": null, "trace": null}"#);
        assert_eq!(rate_text(&u), "unlimited");
    }
}

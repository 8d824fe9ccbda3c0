//! Where the time goes: stacked bars of the breakdown.

use super::super::fmt_ms;
use super::super::summary::Summary;
use super::esc;
use super::svg::{
    BLUE, Frame, GREEN, Key, ORANGE, Scale, VERMILLION, axes, header_height, legend, linear_ticks,
    no_data, svg_close, svg_open,
};
use std::fmt::Write as _;

const PARTS: [(&str, &str); 3] = [("network", BLUE), ("compute", GREEN), ("queue", VERMILLION)];

/// The nodes' per-message software time: a bar segment only where a run has it.
const SOFTWARE: (&str, &str) = ("software", ORANGE);

pub(super) fn plot(o: &mut String, id: &str, s: &Summary) {
    let runs = ["topology", "baseline"];
    let has_software = runs
        .iter()
        .any(|run| s.run(run).is_some_and(|r| r.breakdown.software.is_some()));
    let mut parts: Vec<(&str, &str)> = PARTS.to_vec();
    if has_software {
        parts.push(SOFTWARE);
    }
    let mut bars: Vec<(String, Vec<f64>)> = Vec::new();
    for run in runs {
        let Some(r) = s.run(run).map(|r| &r.breakdown) else {
            continue;
        };
        for stat in ["p50", "p99"] {
            let vals: Option<Vec<f64>> = parts
                .iter()
                .map(|(p, _)| match r.part(p) {
                    Some(l) => l.stat(stat),
                    // A run without software time (the baseline) has none of it.
                    None if *p == SOFTWARE.0 => Some(0.0),
                    None => None,
                })
                .collect();
            if let Some(v) = vals {
                bars.push((format!("{run} {stat}"), v));
            }
        }
    }
    let keys: Vec<(Key, String)> = parts
        .iter()
        .map(|(p, c)| (Key::Swatch { color: c }, p.to_string()))
        .collect();
    let w = 600.0;
    let top = header_height(&keys, w);
    let bar_h = 30.0;
    let h = top + (bars.len().max(1) as f64) * (bar_h + 14.0) + 60.0;
    let max = bars
        .iter()
        .map(|(_, v)| v.iter().sum::<f64>())
        .fold(0.0, f64::max);
    // Room right of the longest bar for its total.
    let (xmax, x_ticks) = linear_ticks(max * 1.16, 6.0);
    let mut f = Frame::new(w, h, top, Scale::Linear(0.0, xmax), Scale::Linear(0.0, 1.0));
    f.left = 112.0;
    svg_open(
        o,
        "breakdown",
        id,
        w,
        h,
        if has_software {
            "Where the time goes: network, compute, queue, software"
        } else {
            "Where the time goes: network, compute, queue"
        },
    );
    legend(o, &keys, w);
    axes(
        o,
        &f,
        &x_ticks,
        &[],
        "milliseconds (each part at the percentile)",
        "run and percentile",
    );
    if bars.is_empty() {
        no_data(o, &f, "no breakdown recorded");
    }
    for (i, (label, vals)) in bars.iter().enumerate() {
        let y = f.top + 10.0 + i as f64 * (bar_h + 14.0);
        w!(
            o,
            "<text class=\"tick\" x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>\n",
            f.left - 8.0,
            y + bar_h / 2.0 + 4.0,
            esc(label)
        );
        let mut acc = 0.0;
        for ((part, color), v) in parts.iter().zip(vals) {
            let (x0, x1) = (f.px(acc), f.px(acc + v));
            acc += v;
            w!(
                o,
                "<rect x=\"{x0:.1}\" y=\"{y:.1}\" width=\"{:.1}\" height=\"{bar_h}\" fill=\"{color}\"><title>{} {part}: {}</title></rect>\n",
                (x1 - x0).max(0.0),
                esc(label),
                esc(&fmt_ms(*v))
            );
            let text = fmt_ms(*v);
            if x1 - x0 > text.len() as f64 * 6.6 + 8.0 {
                w!(
                    o,
                    "<text class=\"tick\" x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" style=\"fill:#fff\">{}</text>\n",
                    (x0 + x1) / 2.0,
                    y + bar_h / 2.0 + 4.0,
                    esc(&text)
                );
            }
        }
        w!(
            o,
            "<text class=\"tick\" x=\"{:.1}\" y=\"{:.1}\" style=\"font-weight:600\">{}</text>\n",
            f.px(acc) + 5.0,
            y + bar_h / 2.0 + 4.0,
            esc(&fmt_ms(acc))
        );
    }
    svg_close(
        o,
        "Each part's own percentile, stacked: at p99 the parts need not come from the same request. \
         Network is the residual: service time less queue and compute.",
    );
}

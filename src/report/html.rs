//! `report.html`: the report of `report.md` with plots, one self-contained file (inline CSS
//! and SVG, no scripts, nothing fetched), to open in a browser or attach to a CI run.
//!
//! Built from the same inputs as `report.md`: each scenario folder's `summary.json` and
//! `.hgrm` distributions (already in [`Loaded`]), its `topology.hlog` interval log for the
//! latency over time, and, when the scenario was compared with a saved baseline, that
//! baseline's folder for the previous distributions. Files that cannot be read leave their
//! plot empty with a note; they never fail the report.

use super::compare::{self, Loaded, Row, ScenarioComparison, Verdict};
use super::fmt_ms;
use super::markdown::{Entry, ms, ratio, shares, verdict_counts};
use crate::scenario::units::Dur;
use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

/// Metrics with a percentile-distribution plot, each `data-plot="percentiles-<metric>"`.
pub const PERCENTILE_METRICS: &[&str] = &["ttft", "tpot", "itl", "e2e"];
/// Metrics with a latency-over-time plot, each `data-plot="over-time-<metric>"`.
pub const OVER_TIME_METRICS: &[&str] = &["e2e", "ttft"];

/// The `data-plot` names of every scenario's plots, in page order.
pub fn plot_names() -> Vec<String> {
    let mut v: Vec<String> = PERCENTILE_METRICS
        .iter()
        .map(|m| format!("percentiles-{m}"))
        .collect();
    v.extend(OVER_TIME_METRICS.iter().map(|m| format!("over-time-{m}")));
    v.push("breakdown".into());
    v.push("topology".into());
    v
}

macro_rules! w {
    ($o:expr, $($arg:tt)*) => {{
        let _ = write!($o, $($arg)*);
    }};
}

/// Escapes text for HTML content and attribute values.
pub fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            _ => o.push(c),
        }
    }
    o
}

/// A name usable in an `id`: lowercase letters, digits and dashes.
fn slug(s: &str) -> String {
    let mut o = String::new();
    for c in s.chars() {
        if c.is_ascii_alphanumeric() {
            o.push(c.to_ascii_lowercase());
        } else if !o.ends_with('-') {
            o.push('-');
        }
    }
    o.trim_matches('-').to_string()
}

const CSS: &str = r#"
:root { color-scheme: light; }
* { box-sizing: border-box; }
body { margin: 0; background: #f6f7f9; color: #1d2330;
  font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
main { max-width: 1320px; margin: 0 auto; padding: 20px 24px 40px; }
h1 { font-size: 24px; margin: 4px 0 16px; }
h2 { font-size: 20px; margin: 0 0 6px; }
h3 { font-size: 15px; margin: 18px 0 8px; color: #3a4253; }
section.scenario { background: #fff; border: 1px solid #dde1e8; border-radius: 8px;
  padding: 18px 20px; margin: 22px 0; }
p { margin: 6px 0; }
.meta { color: #5a6275; }
table { border-collapse: collapse; margin: 8px 0; font-variant-numeric: tabular-nums; }
th, td { border-bottom: 1px solid #e3e6ec; padding: 4px 10px; text-align: right; white-space: nowrap; }
th { background: #f0f2f6; font-weight: 600; }
th:first-child, td:first-child, td.text, th.text { text-align: left; }
.table-wrap { overflow-x: auto; }
.regressed { color: #b3261e; font-weight: 600; }
.improved { color: #1b7a3a; font-weight: 600; }
.same { color: #5a6275; }
.warn { background: #fff4e5; border-left: 4px solid #e69f00; padding: 6px 10px; }
.plots { display: grid; grid-template-columns: repeat(auto-fit, minmax(520px, 1fr)); gap: 14px; margin: 10px 0; }
figure { margin: 0; border: 1px solid #e3e6ec; border-radius: 6px; background: #fff; padding: 6px; min-width: 0; }
figure svg { display: block; width: 100%; height: auto; }
figcaption { font-size: 12px; color: #5a6275; padding: 2px 6px 4px; }
figcaption ul, figcaption ol { margin: 2px 0; padding-left: 22px; }
details { margin: 8px 0; }
summary { cursor: pointer; color: #3a4253; }
footer { color: #5a6275; font-size: 12px; margin-top: 24px; }
a { color: #0b5cad; }
svg text { font-family: system-ui, -apple-system, "Segoe UI", Roboto, Arial, sans-serif; fill: #1d2330; }
svg .title { font-size: 15px; font-weight: 600; }
svg .axis-label { font-size: 12px; fill: #3a4253; }
svg .tick { font-size: 11px; fill: #5a6275; }
svg .legend { font-size: 12px; }
svg .note { font-size: 13px; fill: #5a6275; }
svg .link-label { font-size: 12.5px; fill: #1d2330; }
svg .grid { stroke: #e6e8ee; stroke-width: 1; }
svg .axis { stroke: #8a90a0; stroke-width: 1; }
"#;

// Colours (Okabe-Ito, safe for colour blindness).
const BLUE: &str = "#0072B2";
const ORANGE: &str = "#E69F00";
const SKY: &str = "#56B4E9";
const GREEN: &str = "#009E73";
const VERMILLION: &str = "#D55E00";
const GREY: &str = "#7f7f7f";

/// The whole report: one HTML page.
pub fn render(entries: &[Entry], title: &str) -> String {
    let mut o = String::new();
    w!(
        o,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{}</title>\n<style>{CSS}</style>\n</head>\n<body>\n<main>\n<h1>{}</h1>\n",
        esc(title),
        esc(title)
    );
    let ids: Vec<String> = entries
        .iter()
        .enumerate()
        .map(|(i, e)| format!("s{}-{}", i + 1, slug(&e.loaded.name)))
        .collect();
    overview(&mut o, entries, &ids);
    for (e, id) in entries.iter().zip(&ids) {
        scenario(&mut o, e, id);
    }
    w!(o, "<footer>\n");
    if entries.iter().any(|e| e.loaded.clock == "virtual") {
        w!(
            o,
            "<p>Virtual clock: simulated time, reproducible from the seed; the harness's own CPU costs take no time in it.</p>\n"
        );
    }
    w!(
        o,
        "<p>Latencies run from each request's scheduled start (no coordinated omission). \
         Percentile plots are drawn from the <code>.hgrm</code> files, latency over time from the \
         <code>.hlog</code> interval logs. Generated by inferlat {}.</p>\n</footer>\n</main>\n</body>\n</html>\n",
        env!("CARGO_PKG_VERSION")
    );
    o
}

fn verdict_class(v: Verdict) -> &'static str {
    match v {
        Verdict::Regressed => "regressed",
        Verdict::Improved => "improved",
        Verdict::NoSignificantChange => "same",
    }
}

fn overview(o: &mut String, entries: &[Entry], ids: &[String]) {
    w!(
        o,
        "<div class=\"table-wrap\"><table class=\"overview\">\n<tr><th>scenario</th><th class=\"text\">clock</th>\
         <th>ttft p50</th><th>e2e p99</th><th>e2e tax p50</th><th class=\"text\">reference</th>\
         <th class=\"text\">vs baseline</th></tr>\n"
    );
    for (e, id) in entries.iter().zip(ids) {
        let s = &e.loaded.summary;
        let t = &s["runs"]["topology"]["metrics"];
        let reference = match s.get("reference") {
            Some(r) if r.is_object() => {
                if r["within_tolerance"] == true {
                    "within tolerance"
                } else {
                    "OUTSIDE tolerance"
                }
            }
            _ => "-",
        };
        let vs = e
            .comparison
            .map(verdict_counts)
            .unwrap_or_else(|| "-".into());
        w!(
            o,
            "<tr><td><a href=\"#{id}\">{}</a></td><td class=\"text\">{}</td><td>{}</td><td>{}</td>\
             <td>{}</td><td class=\"text\">{}</td><td class=\"text\">{}</td></tr>\n",
            esc(&e.loaded.name),
            esc(&e.loaded.clock),
            ms(&t["ttft"]["p50"]),
            ms(&t["e2e"]["p99"]),
            ratio(&s["tax"]["e2e"]["p50"]),
            reference,
            esc(&vs)
        );
    }
    w!(o, "</table></div>\n");
}

/// The previous baseline's results of a compared scenario, if its folder can be read.
fn previous(e: &Entry) -> Option<(Loaded, String)> {
    let c = e.comparison.filter(|c| c.refused.is_none())?;
    let mut base = c.base.clone();
    if !base.is_dir() {
        // A relative path saved by a run started elsewhere: rebase it on this folder, as
        // `<out>/baselines/NAME/<scenario>` next to `<out>/<scenario>`.
        let out = c.new.parent()?;
        let rest = base.strip_prefix(out).ok()?;
        base = e.loaded.dir.parent()?.join(rest);
    }
    let loaded = compare::load(&base).ok()?;
    let l = loaded.into_iter().find(|l| l.name == e.loaded.name)?;
    Some((l, baseline_name(&base)))
}

/// The NAME of a `.../baselines/NAME/<scenario>` folder, or the folder itself.
fn baseline_name(p: &Path) -> String {
    let parts: Vec<String> = p
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    match parts.iter().rposition(|c| c == "baselines") {
        Some(i) if i + 1 < parts.len() => format!("baseline \"{}\"", parts[i + 1]),
        _ => p.display().to_string(),
    }
}

fn scenario(o: &mut String, e: &Entry, id: &str) {
    let l = e.loaded;
    let s = &l.summary;
    let topo = &s["runs"]["topology"];
    let base = &s["runs"]["baseline"];
    w!(
        o,
        "<section class=\"scenario\" id=\"{id}\" data-scenario=\"{}\">\n<h2>{}</h2>\n",
        esc(&l.name),
        esc(&l.name)
    );
    let req = |r: &Value| {
        format!(
            "{} completed, {} failed",
            r["requests"]["completed"].as_u64().unwrap_or(0),
            r["requests"]["failed"].as_u64().unwrap_or(0)
        )
    };
    w!(
        o,
        "<p class=\"meta\">{} clock, seed {}, {}{}. Scenario file {}, sha256 {}.</p>\n",
        esc(&l.clock),
        l.seed,
        req(topo),
        if s["complete"] == true {
            ""
        } else {
            ", <strong>interrupted: partial results</strong>"
        },
        esc(s["scenario"]["file"].as_str().unwrap_or("-")),
        esc(&l.sha256[..l.sha256.len().min(12)])
    );
    if let Some(w) = s["emulator"]["warning"].as_str() {
        w!(
            o,
            "<p class=\"warn\"><strong>Warning:</strong> {}</p>\n",
            esc(w)
        );
    }

    // The numbers.
    w!(
        o,
        "<div class=\"table-wrap\"><table>\n<tr><th>metric</th><th>topology p50</th><th>baseline p50</th>\
         <th>tax p50</th><th>topology p99</th><th>baseline p99</th><th>tax p99</th><th>floor</th></tr>\n"
    );
    for m in PERCENTILE_METRICS {
        w!(
            o,
            "<tr><td>{m}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>\n",
            ms(&topo["metrics"][m]["p50"]),
            ms(&base["metrics"][m]["p50"]),
            ratio(&s["tax"][m]["p50"]),
            ms(&topo["metrics"][m]["p99"]),
            ms(&base["metrics"][m]["p99"]),
            ratio(&s["tax"][m]["p99"]),
            ms(&s["floor"]["topology"][m])
        );
    }
    w!(o, "</table></div>\n");
    let tp = |r: &Value| {
        r["throughput"]["requests_per_s"]
            .as_f64()
            .map(|x| {
                format!(
                    "{x:.2} req/s, {:.1} tok/s",
                    r["throughput"]["output_tokens_per_s"]
                        .as_f64()
                        .unwrap_or(0.0)
                )
            })
            .unwrap_or_else(|| "-".into())
    };
    w!(
        o,
        "<p>Throughput: topology {}; baseline {}.</p>\n",
        tp(topo),
        tp(base)
    );
    for stat in ["p50", "p99"] {
        if let Some(sh) = shares(topo, stat) {
            w!(o, "<p>Where the time goes at {stat}: {}.</p>\n", esc(&sh));
        }
    }
    if let Some(r) = s.get("reference").filter(|r| r.is_object()) {
        let metric = r["metric"].as_str().unwrap_or("?");
        let unit = if metric.ends_with("_per_s") {
            ""
        } else {
            " ms"
        };
        w!(
            o,
            "<p>Reference {}: published {}{unit}, measured {:.3}{unit}, {} (tolerance {:.0}%; {}).</p>\n",
            esc(metric),
            esc(&r["value"].to_string()),
            r["measured"].as_f64().unwrap_or(f64::NAN),
            if r["within_tolerance"] == true {
                "within tolerance"
            } else {
                "<strong class=\"regressed\">outside tolerance</strong>"
            },
            r["tolerance"].as_f64().unwrap_or(0.0) * 100.0,
            esc(r["source"].as_str().unwrap_or(""))
        );
    }

    // The plots.
    let prev = previous(e);
    w!(
        o,
        "<h3>Percentile distributions</h3>\n<div class=\"plots\">\n"
    );
    for m in PERCENTILE_METRICS {
        percentile_plot(o, id, l, prev.as_ref(), m);
    }
    w!(
        o,
        "</div>\n<h3>Latency over time (topology)</h3>\n<div class=\"plots\">\n"
    );
    let intervals = read_hlog(&l.dir.join("topology.hlog"));
    let changes = change_times(s);
    for m in OVER_TIME_METRICS {
        over_time_plot(o, id, l, &intervals, &changes, m);
    }
    w!(
        o,
        "</div>\n<h3>Breakdown and topology</h3>\n<div class=\"plots\">\n"
    );
    breakdown_plot(o, id, s);
    topology_plot(o, id, s);
    w!(o, "</div>\n");

    if let Some(c) = e.comparison {
        comparison_table(o, c);
    }
    w!(o, "</section>\n");
}

fn comparison_table(o: &mut String, c: &ScenarioComparison) {
    w!(
        o,
        "<h3>Against the baseline</h3>\n<p>{} ({}).</p>\n",
        esc(&verdict_counts(c)),
        esc(&baseline_name(&c.base))
    );
    if c.rows.is_empty() {
        return;
    }
    let changed: Vec<&Row> = c
        .rows
        .iter()
        .filter(|r| r.verdict != Verdict::NoSignificantChange)
        .collect();
    if !changed.is_empty() {
        rows_table(o, &changed);
    }
    let all: Vec<&Row> = c.rows.iter().collect();
    w!(
        o,
        "<details><summary>All {} compared values</summary>\n",
        all.len()
    );
    rows_table(o, &all);
    w!(o, "</details>\n");
}

fn rows_table(o: &mut String, rows: &[&Row]) {
    w!(
        o,
        "<div class=\"table-wrap\"><table>\n<tr><th>run</th><th class=\"text\">metric</th><th class=\"text\">stat</th>\
         <th>base</th><th>new</th><th>change</th><th class=\"text\">verdict</th></tr>\n"
    );
    for r in rows {
        let v = |x: f64| {
            if r.unit == "ms" {
                fmt_ms(x)
            } else {
                format!("{x:.2} {}", r.unit)
            }
        };
        let change = if r.change.is_infinite() {
            "new".to_string()
        } else {
            format!("{:+.1}%", r.change * 100.0)
        };
        let class = verdict_class(r.verdict);
        w!(
            o,
            "<tr><td>{}</td><td class=\"text\">{}</td><td class=\"text\">{}</td><td>{}</td><td>{}</td>\
             <td>{change}</td><td class=\"text {class}\">{}</td></tr>\n",
            esc(&r.run),
            esc(&r.metric),
            esc(&r.stat),
            esc(&v(r.base)),
            esc(&v(r.new)),
            r.verdict.text()
        );
    }
    w!(o, "</table></div>\n");
}

// ---------------------------------------------------------------------------------------
// Plot machinery.

#[derive(Clone, Copy)]
enum Scale {
    Linear(f64, f64),
    Log10(f64, f64),
}

impl Scale {
    fn frac(self, v: f64) -> f64 {
        let f = match self {
            Scale::Linear(a, b) => {
                if b > a {
                    (v - a) / (b - a)
                } else {
                    0.0
                }
            }
            Scale::Log10(a, b) => (v.max(a).log10() - a.log10()) / (b.log10() - a.log10()),
        };
        if f.is_finite() {
            f.clamp(0.0, 1.0)
        } else {
            0.0
        }
    }
}

/// A plot's canvas: size, margins and the two scales.
struct Frame {
    w: f64,
    h: f64,
    left: f64,
    right: f64,
    top: f64,
    bottom: f64,
    x: Scale,
    y: Scale,
}

impl Frame {
    fn new(w: f64, h: f64, top: f64, x: Scale, y: Scale) -> Self {
        Frame {
            w,
            h,
            left: 66.0,
            right: 30.0,
            top,
            bottom: 50.0,
            x,
            y,
        }
    }
    fn px(&self, v: f64) -> f64 {
        self.left + self.x.frac(v) * (self.w - self.left - self.right)
    }
    fn py(&self, v: f64) -> f64 {
        self.h - self.bottom - self.y.frac(v) * (self.h - self.top - self.bottom)
    }
    fn x0(&self) -> f64 {
        self.left
    }
    fn x1(&self) -> f64 {
        self.w - self.right
    }
    fn y0(&self) -> f64 {
        self.h - self.bottom
    }
    fn y1(&self) -> f64 {
        self.top
    }
}

enum Key {
    Line { color: &'static str, dashed: bool },
    Ring { color: &'static str },
    Swatch { color: &'static str },
    Box,
}

/// Legend rows that fit a width, and the height they take.
fn legend_layout(items: &[(Key, String)], width: f64) -> (Vec<(f64, usize, usize)>, f64) {
    // (row y offset, first item, one past the last) per row.
    let mut rows = Vec::new();
    let (mut x, mut start, mut row) = (0.0, 0, 0.0);
    for (i, (_, text)) in items.iter().enumerate() {
        let wi = 30.0 + text.chars().count() as f64 * 6.6 + 16.0;
        if x + wi > width && i > start {
            rows.push((row, start, i));
            row += 18.0;
            start = i;
            x = 0.0;
        }
        x += wi;
    }
    if start < items.len() {
        rows.push((row, start, items.len()));
        row += 18.0;
    }
    (rows, row)
}

/// The height of the title and legend above a plot area.
fn header_height(items: &[(Key, String)], w: f64) -> f64 {
    let (_, h) = legend_layout(items, w - 40.0);
    34.0 + h + 10.0
}

fn svg_open(o: &mut String, plot: &str, id: &str, w: f64, h: f64, title: &str) {
    w!(
        o,
        "<figure>\n<svg id=\"{id}-{plot}\" data-plot=\"{plot}\" viewBox=\"0 0 {w:.0} {h:.0}\" \
         width=\"{w:.0}\" height=\"{h:.0}\" role=\"img\" aria-label=\"{t}\">\n<title>{t}</title>\n\
         <rect x=\"0\" y=\"0\" width=\"{w:.0}\" height=\"{h:.0}\" fill=\"#fff\"/>\n\
         <text class=\"title\" x=\"{:.1}\" y=\"22\" text-anchor=\"middle\">{t}</text>\n",
        w / 2.0,
        t = esc(title)
    );
}

fn legend(o: &mut String, items: &[(Key, String)], w: f64) {
    let (rows, _) = legend_layout(items, w - 40.0);
    for (dy, a, b) in rows {
        let width: f64 = items[a..b]
            .iter()
            .map(|(_, t)| 30.0 + t.chars().count() as f64 * 6.6 + 16.0)
            .sum::<f64>()
            - 16.0;
        let mut x = ((w - width) / 2.0).max(8.0);
        let y = 42.0 + dy;
        w!(o, "<g class=\"legend\">");
        for (key, text) in &items[a..b] {
            match key {
                Key::Line { color, dashed } => w!(
                    o,
                    "<line x1=\"{x:.1}\" y1=\"{y:.1}\" x2=\"{:.1}\" y2=\"{y:.1}\" stroke=\"{color}\" stroke-width=\"2.5\"{}/>",
                    x + 24.0,
                    if *dashed {
                        " stroke-dasharray=\"6 4\""
                    } else {
                        ""
                    }
                ),
                Key::Ring { color } => w!(
                    o,
                    "<circle cx=\"{:.1}\" cy=\"{y:.1}\" r=\"5\" fill=\"none\" stroke=\"{color}\" stroke-width=\"1.5\"/>",
                    x + 12.0
                ),
                Key::Swatch { color } => w!(
                    o,
                    "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"18\" height=\"12\" fill=\"{color}\"/>",
                    x + 3.0,
                    y - 6.0
                ),
                Key::Box => w!(
                    o,
                    "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"22\" height=\"14\" rx=\"3\" fill=\"#eef4fb\" stroke=\"{BLUE}\"/>",
                    x + 1.0,
                    y - 7.0
                ),
            }
            w!(
                o,
                "<text class=\"legend\" x=\"{:.1}\" y=\"{:.1}\">{}</text>",
                x + 30.0,
                y + 4.0,
                esc(text)
            );
            x += 30.0 + text.chars().count() as f64 * 6.6 + 16.0;
        }
        w!(o, "</g>\n");
    }
}

/// Grid lines, tick labels, axis lines and the axis labels.
fn axes(
    o: &mut String,
    f: &Frame,
    x_ticks: &[(f64, String)],
    y_ticks: &[(f64, String)],
    x_label: &str,
    y_label: &str,
) {
    for (v, label) in x_ticks {
        let x = f.px(*v);
        w!(
            o,
            "<line class=\"grid\" x1=\"{x:.1}\" y1=\"{:.1}\" x2=\"{x:.1}\" y2=\"{:.1}\"/>\
             <text class=\"tick\" x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>\n",
            f.y1(),
            f.y0(),
            f.y0() + 16.0,
            esc(label)
        );
    }
    for (v, label) in y_ticks {
        let y = f.py(*v);
        w!(
            o,
            "<line class=\"grid\" x1=\"{:.1}\" y1=\"{y:.1}\" x2=\"{:.1}\" y2=\"{y:.1}\"/>\
             <text class=\"tick\" x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>\n",
            f.x0(),
            f.x1(),
            f.x0() - 6.0,
            y + 4.0,
            esc(label)
        );
    }
    let (x0, x1, y0, y1) = (f.x0(), f.x1(), f.y0(), f.y1());
    w!(
        o,
        "<line class=\"axis\" x1=\"{x0:.1}\" y1=\"{y0:.1}\" x2=\"{x1:.1}\" y2=\"{y0:.1}\"/>\
         <line class=\"axis\" x1=\"{x0:.1}\" y1=\"{y0:.1}\" x2=\"{x0:.1}\" y2=\"{y1:.1}\"/>\n\
         <text class=\"axis-label\" x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>\n\
         <text class=\"axis-label\" transform=\"translate(16 {:.1}) rotate(-90)\" text-anchor=\"middle\">{}</text>\n",
        (x0 + x1) / 2.0,
        f.h - 12.0,
        esc(x_label),
        (y0 + y1) / 2.0,
        esc(y_label),
    );
}

fn no_data(o: &mut String, f: &Frame, why: &str) {
    w!(
        o,
        "<text class=\"note\" x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>\n",
        (f.x0() + f.x1()) / 2.0,
        (f.y0() + f.y1()) / 2.0,
        esc(why)
    );
}

fn svg_close(o: &mut String, caption: &str) {
    w!(o, "</svg>\n");
    if !caption.is_empty() {
        w!(o, "<figcaption>{caption}</figcaption>\n");
    }
    w!(o, "</figure>\n");
}

/// A round step near `range / target`: 1, 2 or 5 times a power of ten.
fn nice_step(range: f64, target: f64) -> f64 {
    let raw = range / target;
    let mag = 10f64.powf(raw.log10().floor());
    let n = raw / mag;
    let m = if n <= 1.0 {
        1.0
    } else if n <= 2.0 {
        2.0
    } else if n <= 5.0 {
        5.0
    } else {
        10.0
    };
    m * mag
}

/// Ticks from 0 to a round number at or above `max`, and that number.
fn linear_ticks(max: f64, target: f64) -> (f64, Vec<(f64, String)>) {
    let max = if max.is_finite() && max > 0.0 {
        max
    } else {
        1.0
    };
    let step = nice_step(max, target);
    let top = (max / step - 1e-9).ceil().max(1.0) * step;
    let decimals = if step >= 1.0 {
        0
    } else {
        (-step.log10()).ceil() as usize
    };
    let n = (top / step).round() as usize;
    let ticks = (0..=n)
        .map(|i| {
            let v = i as f64 * step;
            (v, format!("{v:.decimals$}"))
        })
        .collect();
    (top, ticks)
}

fn polyline(o: &mut String, f: &Frame, pts: &[(f64, f64)], color: &str, dashed: bool, width: f64) {
    if pts.is_empty() {
        return;
    }
    let mut d = String::new();
    for (i, (x, y)) in pts.iter().enumerate() {
        w!(
            d,
            "{}{:.1},{:.1}",
            if i == 0 { "" } else { " " },
            f.px(*x),
            f.py(*y)
        );
    }
    w!(
        o,
        "<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"{width}\" stroke-linejoin=\"round\"{} points=\"{d}\"/>\n",
        if dashed {
            " stroke-dasharray=\"7 4\""
        } else {
            ""
        }
    );
}

// ---------------------------------------------------------------------------------------
// 1. Percentile distributions, on HdrHistogram's axis: x = 1/(1-percentile), log scale.

/// The right end of the percentile axis: 99.99 %.
const X_MAX: f64 = 1e4;

fn percentile_x(p: f64) -> f64 {
    if p >= 1.0 {
        X_MAX
    } else {
        (1.0 / (1.0 - p)).min(X_MAX)
    }
}

/// The step curve of a distribution: the value at each percentile.
fn percentile_curve(d: &[(f64, u64)]) -> Vec<(f64, f64)> {
    let n: u64 = d.iter().map(|x| x.1).sum();
    if n == 0 {
        return Vec::new();
    }
    let mut pts = Vec::new();
    let mut seen = 0u64;
    for &(v, c) in d {
        let x0 = percentile_x(seen as f64 / n as f64);
        seen += c;
        let x1 = percentile_x(seen as f64 / n as f64);
        pts.push((x0, v));
        pts.push((x1, v));
        if x1 >= X_MAX {
            break;
        }
    }
    pts
}

/// One distribution's curve on a percentile plot.
struct Curve {
    name: String,
    color: &'static str,
    dashed: bool,
    width: f64,
    /// Drawing order: lower first.
    layer: u8,
    dist: Vec<(f64, u64)>,
}

fn percentile_plot(
    o: &mut String,
    id: &str,
    l: &Loaded,
    prev: Option<&(Loaded, String)>,
    metric: &str,
) {
    let dist = |l: &Loaded, run: &str| {
        l.dists
            .get(&(run.to_string(), metric.to_string()))
            .cloned()
            .unwrap_or_default()
    };
    let count = |d: &[(f64, u64)]| d.iter().map(|x| x.1).sum::<u64>();
    // In legend order; drawn baseline first (wider, so that it shows where the two are
    // equal), then the topology, then the previous topology dashed over it.
    let mut series: Vec<Curve> = Vec::new();
    let t = dist(l, "topology");
    series.push(Curve {
        name: format!("topology (n={})", count(&t)),
        color: BLUE,
        dashed: false,
        width: 2.0,
        layer: 1,
        dist: t.clone(),
    });
    let b = dist(l, "baseline");
    if !b.is_empty() {
        series.push(Curve {
            name: format!("baseline (n={})", count(&b)),
            color: ORANGE,
            dashed: false,
            width: 3.2,
            layer: 0,
            dist: b.clone(),
        });
    }
    if let Some((p, name)) = prev {
        let d = dist(p, "topology");
        if !d.is_empty() {
            series.push(Curve {
                name: format!("topology, previous ({name})"),
                color: SKY,
                dashed: true,
                width: 2.0,
                layer: 2,
                dist: d,
            });
        }
    }
    let keys: Vec<(Key, String)> = series
        .iter()
        .map(|c| {
            (
                Key::Line {
                    color: c.color,
                    dashed: c.dashed,
                },
                c.name.clone(),
            )
        })
        .collect();
    let (w, h) = (600.0, 340.0);
    let top = header_height(&keys, w);
    let max = series
        .iter()
        .flat_map(|s| s.dist.iter().map(|x| x.0))
        .fold(0.0, f64::max);
    let (ymax, y_ticks) = linear_ticks(max * 1.05, 5.0);
    let f = Frame::new(
        w,
        h,
        top,
        Scale::Log10(1.0, X_MAX),
        Scale::Linear(0.0, ymax),
    );
    let x_ticks: Vec<(f64, String)> = [
        (1.0, "0%"),
        (2.0, "50%"),
        (10.0, "90%"),
        (100.0, "99%"),
        (1e3, "99.9%"),
        (1e4, "99.99%"),
    ]
    .iter()
    .map(|(v, s)| (*v, s.to_string()))
    .collect();
    svg_open(
        o,
        &format!("percentiles-{metric}"),
        id,
        w,
        h,
        &format!("{metric}: latency by percentile"),
    );
    legend(o, &keys, w);
    axes(
        o,
        &f,
        &x_ticks,
        &y_ticks,
        "percentile",
        &format!("{metric} (ms)"),
    );
    if t.is_empty() && b.is_empty() {
        no_data(o, &f, "no values recorded");
    }
    series.sort_by_key(|c| c.layer);
    for c in &series {
        polyline(
            o,
            &f,
            &percentile_curve(&c.dist),
            c.color,
            c.dashed,
            c.width,
        );
    }
    svg_close(o, "");
}

// ---------------------------------------------------------------------------------------
// 2. Latency over time, from the interval log.

struct IntervalStats {
    start: f64,
    end: f64,
    count: u64,
    p50: f64,
    p99: f64,
    max: f64,
}

/// Per tag, the statistics of each interval of a `.hlog` file, in ms.
fn read_hlog(path: &Path) -> Result<BTreeMap<String, Vec<IntervalStats>>, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", file_name(path)))?;
    let mut out: BTreeMap<String, Vec<IntervalStats>> = BTreeMap::new();
    for i in super::hlog::read(&bytes).map_err(|e| format!("{}: {e}", file_name(path)))? {
        let h = &i.histogram;
        if h.is_empty() {
            continue;
        }
        let start = i.start.as_secs_f64();
        let q = |x: f64| h.value_at_quantile(x) as f64 / 1e6;
        out.entry(i.tag).or_default().push(IntervalStats {
            start,
            end: start + i.length.as_secs_f64(),
            count: h.len(),
            p50: q(0.5),
            p99: q(0.99),
            max: h.max() as f64 / 1e6,
        });
    }
    Ok(out)
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// When the links change during the run, in seconds of the measured phase.
fn change_times(s: &Value) -> Vec<f64> {
    let mut out: Vec<f64> = Vec::new();
    for l in s["network"]["links"].as_array().into_iter().flatten() {
        for c in l["changes"].as_array().into_iter().flatten() {
            if let Some(t) = c["at"]
                .as_str()
                .and_then(|t| Dur::parse(t).ok())
                .map(|d| d.get().as_secs_f64())
                && !out.iter().any(|x| (x - t).abs() < 1e-9)
            {
                out.push(t);
            }
        }
    }
    out.sort_by(f64::total_cmp);
    out
}

fn over_time_plot(
    o: &mut String,
    id: &str,
    l: &Loaded,
    intervals: &Result<BTreeMap<String, Vec<IntervalStats>>, String>,
    changes: &[f64],
    metric: &str,
) {
    let empty = Vec::new();
    let points = match intervals {
        Ok(m) => m.get(metric).unwrap_or(&empty),
        Err(_) => &empty,
    };
    let mut keys = vec![
        (Key::Ring { color: GREY }, "max".to_string()),
        (
            Key::Line {
                color: VERMILLION,
                dashed: false,
            },
            "p99".to_string(),
        ),
        (
            Key::Line {
                color: BLUE,
                dashed: false,
            },
            "p50".to_string(),
        ),
    ];
    if !changes.is_empty() {
        keys.push((
            Key::Line {
                color: GREEN,
                dashed: true,
            },
            "link change".to_string(),
        ));
    }
    let (w, h) = (600.0, 320.0);
    let top = header_height(&keys, w);
    let measured = l.summary["runs"]["topology"]["measured_s"]
        .as_f64()
        .unwrap_or(0.0);
    let t_end = points.iter().map(|p| p.end).fold(measured, f64::max);
    let (xmax, x_ticks) = linear_ticks(t_end, 8.0);
    let ymax_raw = points.iter().map(|p| p.max).fold(0.0, f64::max);
    let (ymax, y_ticks) = linear_ticks(ymax_raw * 1.05, 5.0);
    let f = Frame::new(
        w,
        h,
        top,
        Scale::Linear(0.0, xmax),
        Scale::Linear(0.0, ymax),
    );
    svg_open(
        o,
        &format!("over-time-{metric}"),
        id,
        w,
        h,
        &format!("{metric} per second: p50, p99 and max"),
    );
    legend(o, &keys, w);
    axes(
        o,
        &f,
        &x_ticks,
        &y_ticks,
        &format!(
            "seconds since the measured phase started ({} clock; by completion time)",
            l.clock
        ),
        &format!("{metric} (ms)"),
    );
    for t in changes {
        let x = f.px(*t);
        w!(
            o,
            "<line x1=\"{x:.1}\" y1=\"{:.1}\" x2=\"{x:.1}\" y2=\"{:.1}\" stroke=\"{GREEN}\" stroke-width=\"1.5\" stroke-dasharray=\"5 4\"/>\n",
            f.y1(),
            f.y0()
        );
    }
    match (intervals, points.is_empty()) {
        (Err(why), _) => no_data(o, &f, &format!("no interval log: {why}")),
        (Ok(_), true) => no_data(o, &f, "no intervals for this metric"),
        _ => {}
    }
    let mid = |p: &IntervalStats| (p.start + p.end) / 2.0;
    for p in points {
        w!(
            o,
            "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"5.5\" fill=\"none\" stroke=\"{GREY}\" stroke-width=\"1.5\"><title>{:.1}-{:.1} s: {} values, p50 {}, p99 {}, max {}</title></circle>\n",
            f.px(mid(p)),
            f.py(p.max),
            p.start,
            p.end,
            p.count,
            esc(&fmt_ms(p.p50)),
            esc(&fmt_ms(p.p99)),
            esc(&fmt_ms(p.max))
        );
    }
    // p99 wider under p50, so that where they are equal (one request in a second) both show.
    type Stat = fn(&IntervalStats) -> f64;
    let lines: [(&str, f64, Stat); 2] = [(VERMILLION, 4.0, |p| p.p99), (BLUE, 2.0, |p| p.p50)];
    for (color, width, get) in lines {
        // Lines join consecutive seconds only: a gap with no completions stays a gap.
        let mut run: Vec<(f64, f64)> = Vec::new();
        let mut last_end = f64::NAN;
        for p in points {
            if !run.is_empty() && (p.start - last_end).abs() > 1e-6 {
                flush_run(o, &f, &mut run, color, width);
            }
            run.push((mid(p), get(p)));
            last_end = p.end;
        }
        flush_run(o, &f, &mut run, color, width);
    }
    let caption = if changes.is_empty() {
        String::new()
    } else {
        format!(
            "Dashed green lines: the links change at {}.",
            changes
                .iter()
                .map(|t| format!("{t} s"))
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    svg_close(o, &caption);
}

fn flush_run(o: &mut String, f: &Frame, run: &mut Vec<(f64, f64)>, color: &str, width: f64) {
    if run.len() > 1 {
        polyline(o, f, run, color, false, width);
    }
    for (x, y) in run.iter() {
        w!(
            o,
            "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"{:.1}\" fill=\"{color}\"/>\n",
            f.px(*x),
            f.py(*y),
            width * 0.5 + 1.6
        );
    }
    run.clear();
}

// ---------------------------------------------------------------------------------------
// 3. Where the time goes: stacked bars.

const PARTS: [(&str, &str); 3] = [("network", BLUE), ("compute", GREEN), ("queue", VERMILLION)];

fn breakdown_plot(o: &mut String, id: &str, s: &Value) {
    let mut bars: Vec<(String, [f64; 3])> = Vec::new();
    for run in ["topology", "baseline"] {
        let r = &s["runs"][run]["breakdown"];
        for stat in ["p50", "p99"] {
            let vals: Option<Vec<f64>> = PARTS.iter().map(|(p, _)| r[p][stat].as_f64()).collect();
            if let Some(v) = vals {
                bars.push((format!("{run} {stat}"), [v[0], v[1], v[2]]));
            }
        }
    }
    let keys: Vec<(Key, String)> = PARTS
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
        "Where the time goes: network, compute, queue",
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
        for ((part, color), v) in PARTS.iter().zip(vals) {
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

// ---------------------------------------------------------------------------------------
// 4. The topology: nodes and links.

struct Direction<'a> {
    from: usize,
    to: usize,
    link: &'a Value,
}

fn delay_ms(p: &Value, key: &str) -> Option<f64> {
    p[key]
        .as_str()
        .and_then(|t| Dur::parse(t).ok())
        .map(|d| d.get().as_secs_f64() * 1e3)
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
fn delay_text(p: &Value) -> String {
    let d = delay_ms(p, "delay")
        .map(fmt_ms)
        .unwrap_or_else(|| "?".into());
    match delay_ms(p, "jitter").filter(|j| *j > 0.0) {
        Some(j) => format!("delay {d} ± {}", fmt_ms(j)),
        None => format!("delay {d}"),
    }
}

fn rate_text(p: &Value) -> String {
    if let Some(b) = p["bandwidth"].as_f64() {
        return fmt_rate(b);
    }
    if p["trace"].is_object() {
        return match p["trace"]["mean_bit_per_s"].as_f64() {
            Some(m) => format!("trace, mean {}", fmt_rate(m)),
            None => "trace".into(),
        };
    }
    "unlimited".into()
}

fn loss_text(p: &Value) -> String {
    let l = &p["loss"];
    match l["model"].as_str() {
        None | Some("none") => "no loss".into(),
        Some(model) => {
            let mean = match (
                l["p"].as_f64(),
                l["r"].as_f64(),
                l["loss_good"].as_f64(),
                l["loss_bad"].as_f64(),
            ) {
                (Some(p), Some(r), Some(g), Some(b)) if p + r > 0.0 => {
                    Some((r * g + p * b) / (p + r))
                }
                (Some(p), None, _, _) => Some(p),
                _ => None,
            };
            match (mean, model) {
                (Some(m), "bernoulli") => format!("loss {}", fmt_pct(m)),
                (Some(m), _) => format!("loss {} ({model})", fmt_pct(m)),
                (None, _) => format!("loss ({model})"),
            }
        }
    }
}

fn topology_plot(o: &mut String, id: &str, s: &Value) {
    let links: Vec<&Value> = s["network"]["links"]
        .as_array()
        .map(|a| a.iter().collect())
        .unwrap_or_default();
    // Nodes in the order requests reach them: from each client (a node no connection
    // reaches), depth first along the connections; then any others in link order.
    let conn_pairs: Vec<(&str, &str)> = s["network"]["connections"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| Some((c["from"].as_str()?, c["to"].as_str()?)))
        .collect();
    let mut nodes: Vec<String> = Vec::new();
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
    for &(a, _) in &conn_pairs {
        if !conn_pairs.iter().any(|&(_, b)| b == a) {
            visit(a, &conn_pairs, &mut nodes);
        }
    }
    let mut dirs: Vec<Direction> = Vec::new();
    let index = |n: &str, nodes: &mut Vec<String>| {
        nodes.iter().position(|x| x == n).unwrap_or_else(|| {
            nodes.push(n.to_string());
            nodes.len() - 1
        })
    };
    for l in &links {
        if let (Some(a), Some(b)) = (l["from"].as_str(), l["to"].as_str()) {
            let from = index(a, &mut nodes);
            let to = index(b, &mut nodes);
            dirs.push(Direction { from, to, link: l });
        }
    }
    // Roles, where the connections and the breakdown tell them: a node no one connects to
    // is a client; one that reports compute time is a worker; the others relay.
    let mut roles: BTreeMap<String, &str> = BTreeMap::new();
    let computes = |n: &str| {
        s["runs"]["topology"]["breakdown"]["nodes"]
            .as_object()
            .is_some_and(|m| m.contains_key(n))
    };
    let conns: Vec<&Value> = s["network"]["connections"]
        .as_array()
        .into_iter()
        .flatten()
        .collect();
    for c in &conns {
        for end in ["from", "to"] {
            if let Some(n) = c[end].as_str() {
                let reached = conns.iter().any(|c| c["to"].as_str() == Some(n));
                let role = match (reached, computes(n)) {
                    (false, _) => "client",
                    (true, true) => "worker",
                    // Older summaries have no per-node breakdown: every reached node worked.
                    (true, false) if s["runs"]["topology"]["breakdown"]["nodes"].is_null() => {
                        "worker"
                    }
                    (true, false) => "relay",
                };
                roles.insert(n.to_string(), role);
            }
        }
    }
    let any_changes = links
        .iter()
        .any(|l| l["changes"].as_array().is_some_and(|c| !c.is_empty()));
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
    let n = nodes.len();
    // Many nodes need a wider circle.
    let r = (19.0 * n as f64).max(170.0);
    let w = (2.6 * r + 150.0).max(640.0);
    let top = header_height(&keys, w);
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
    let marker = format!("{id}-arrow");
    svg_open(o, "topology", id, w, h, "Topology: nodes and links");
    w!(
        o,
        "<defs><marker id=\"{marker}\" viewBox=\"0 0 10 10\" refX=\"9\" refY=\"5\" markerWidth=\"7\" markerHeight=\"7\" orient=\"auto-start-reverse\"><path d=\"M0,0 L10,5 L0,10 z\" fill=\"#3a4253\"/></marker></defs>\n"
    );
    legend(o, &keys, w);
    if n == 0 {
        let f = Frame::new(w, h, top, Scale::Linear(0.0, 1.0), Scale::Linear(0.0, 1.0));
        no_data(o, &f, "no links recorded in summary.json");
    }
    // Links first, then the boxes over their ends.
    let half = 13.0;
    let inline = n <= 2;
    let mut numbered: Vec<String> = Vec::new();
    let mut done_pairs: Vec<(usize, usize)> = Vec::new();
    for d in &dirs {
        if d.from == d.to {
            continue;
        }
        let (a, b) = (d.from.min(d.to), d.from.max(d.to));
        let (ca, cb) = (centres[a], centres[b]);
        let (dx, dy) = (cb.0 - ca.0, cb.1 - ca.1);
        let len = (dx * dx + dy * dy).sqrt().max(1e-9);
        let (ux, uy) = (dx / len, dy / len);
        // The side of the pair's line this direction takes: a -> b above, b -> a below.
        let (nx, ny) = (uy, -ux);
        let side = if d.from == a { 1.0 } else { -1.0 };
        let trim = |i: usize| {
            let (hw, hh) = (bw[i] / 2.0 + 4.0, bh / 2.0 + 4.0);
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
        let params = &d.link["params"];
        let title = format!(
            "{} → {}: {}, {}, {}",
            nodes[d.from],
            nodes[d.to],
            delay_text(params),
            rate_text(params),
            loss_text(params)
        );
        w!(
            o,
            "<line x1=\"{:.1}\" y1=\"{:.1}\" x2=\"{:.1}\" y2=\"{:.1}\" stroke=\"#3a4253\" stroke-width=\"2\" marker-end=\"url(#{marker})\"><title>{}</title></line>\n",
            p.0,
            p.1,
            q.0,
            q.1,
            esc(&title)
        );
        let (mx, my) = ((start.0 + end.0) / 2.0, (start.1 + end.1) / 2.0);
        if !inline {
            // Many nodes: a numbered tag on the arrow, its text in the list under the drawing.
            numbered.push(title);
            let (tx, ty) = (mx + nx * side * 9.0, my + ny * side * 9.0);
            w!(
                o,
                "<circle cx=\"{tx:.1}\" cy=\"{ty:.1}\" r=\"9\" fill=\"#fff\" stroke=\"#3a4253\"/>\
                 <text class=\"tick\" x=\"{tx:.1}\" y=\"{:.1}\" text-anchor=\"middle\" style=\"fill:#1d2330\">{}</text>\n",
                ty + 4.0,
                numbered.len()
            );
            continue;
        }
        // The label: two lines on this direction's side, the nearer one closest.
        let lines = [
            format!(
                "{} → {}: {}",
                nodes[d.from],
                nodes[d.to],
                delay_text(params)
            ),
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
        if !done_pairs.contains(&(a, b))
            && let Some(back) = dirs.iter().find(|e| e.from == d.to && e.to == d.from)
        {
            done_pairs.push((a, b));
            if let (Some(x), Some(y)) = (
                delay_ms(params, "delay"),
                delay_ms(&back.link["params"], "delay"),
            ) {
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
    for (i, name) in nodes.iter().enumerate() {
        let (cx, cy) = centres[i];
        w!(
            o,
            "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{bh}\" rx=\"6\" fill=\"#eef4fb\" stroke=\"{BLUE}\" stroke-width=\"1.5\"/>\n\
             <text x=\"{cx:.1}\" y=\"{:.1}\" text-anchor=\"middle\" style=\"font-size:14px;font-weight:600\">{}</text>\n",
            cx - bw[i] / 2.0,
            cy - bh / 2.0,
            bw[i],
            cy + if roles.contains_key(name) { -1.0 } else { 5.0 },
            esc(name)
        );
        if let Some(role) = roles.get(name) {
            w!(
                o,
                "<text class=\"tick\" x=\"{cx:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{role}</text>\n",
                cy + 15.0
            );
        }
    }
    // Changes during the run, listed under the drawing.
    let mut caption = String::new();
    for d in &dirs {
        for c in d.link["changes"].as_array().into_iter().flatten() {
            let p = &c["params"];
            w!(
                caption,
                "<li>{} → {} at {}: {}, {}, {}</li>",
                esc(&nodes[d.from]),
                esc(&nodes[d.to]),
                esc(c["at"].as_str().unwrap_or("?")),
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
    svg_close(o, &caption);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup() {
        assert_eq!(
            esc("<a href=\"x\">&'</a>"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;&lt;/a&gt;"
        );
    }

    #[test]
    fn percentile_curve_steps_to_the_right_edge() {
        let c = percentile_curve(&[(1.0, 50), (2.0, 40), (3.0, 10)]);
        assert_eq!(c.first(), Some(&(1.0, 1.0)));
        assert_eq!(c.last(), Some(&(X_MAX, 3.0)));
        // 50 % of the samples at 1: the first step ends at x = 2.
        assert_eq!(c[1], (2.0, 1.0));
    }

    #[test]
    fn ticks_are_round() {
        let (top, t) = linear_ticks(619.0, 5.0);
        assert_eq!(top, 800.0);
        assert_eq!(t[1].1, "200");
        let (top, t) = linear_ticks(0.3, 3.0);
        assert!((top - 0.3).abs() < 1e-9);
        assert_eq!(t[1].1, "0.1");
        let (top, _) = linear_ticks(0.9, 5.0);
        assert!((top - 1.0).abs() < 1e-9);
    }

    #[test]
    fn base64_decodes() {
        use super::super::hlog::base64;
        assert_eq!(base64("aGVsbG8=").unwrap(), b"hello");
        assert!(base64("a$").is_none());
    }

    #[test]
    fn link_phrases() {
        let p: Value = serde_json::json!({
            "delay": "20ms", "jitter": "500us", "bandwidth": 1e9,
            "loss": {"model": "bernoulli", "p": 0.01, "correlation": 0.0}
        });
        assert_eq!(delay_text(&p), "delay 20.0 ms ± 500 us");
        assert_eq!(rate_text(&p), "1 Gbit/s");
        assert_eq!(loss_text(&p), "loss 1%");
        let t: Value = serde_json::json!({
            "bandwidth": null, "trace": {"mean_bit_per_s": 21330000.0},
            "loss": {"model": "none"}
        });
        assert_eq!(rate_text(&t), "trace, mean 21.33 Mbit/s");
        assert_eq!(loss_text(&t), "no loss");
        let u: Value = serde_json::json!({"bandwidth": null, "trace": null});
        assert_eq!(rate_text(&u), "unlimited");
    }
}

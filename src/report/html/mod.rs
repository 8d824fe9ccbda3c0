//! `report.html`: the report of `report.md` with plots, one self-contained file (inline CSS
//! and SVG, no scripts, nothing fetched), to open in a browser or attach to a CI run.
//!
//! Built from the same inputs as `report.md`: each scenario folder's `summary.json` and
//! `.hgrm` distributions (already in [`Loaded`]), its `topology.hlog` interval log for the
//! latency over time, and, when the scenario was compared with a saved baseline, that
//! baseline's folder for the previous distributions. Files that cannot be read leave their
//! plot empty with a note; they never fail the report.

//!
//! This file is the page; `svg.rs` holds the drawing primitives and each plot has a file.

use super::compare::{self, Loaded, ScenarioComparison};
use super::model::{self, Align, Entry, Table};
use super::summary::Outcome;
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

mod breakdown;
mod over_time;
mod percentiles;
mod svg;
mod topology;

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
    table(
        &mut o,
        &model::overview(entries, Some(&ids)),
        Some("overview"),
    );
    if let Some(counts) = model::reference_counts(entries) {
        w!(o, "<p>{}</p>\n", esc(&counts));
    }
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

/// A table of the report model as HTML.
fn table(o: &mut String, t: &Table, class: Option<&str>) {
    let class = class.map(|c| format!(" class=\"{c}\"")).unwrap_or_default();
    w!(o, "<div class=\"table-wrap\"><table{class}>\n<tr>");
    for c in &t.columns {
        match c.align {
            Align::Text => w!(o, "<th class=\"text\">{}</th>", esc(c.title)),
            Align::Label | Align::Number => w!(o, "<th>{}</th>", esc(c.title)),
        }
    }
    w!(o, "</tr>\n");
    for row in &t.rows {
        w!(o, "<tr>");
        for (cell, col) in row.iter().zip(&t.columns) {
            let classes: Vec<&str> = (col.align == Align::Text)
                .then_some("text")
                .into_iter()
                .chain(cell.class)
                .collect();
            if classes.is_empty() {
                w!(o, "<td>");
            } else {
                w!(o, "<td class=\"{}\">", classes.join(" "));
            }
            match &cell.href {
                Some(h) => w!(o, "<a href=\"{}\">{}</a>", esc(h), esc(&cell.text)),
                None => w!(o, "{}", esc(&cell.text)),
            }
            w!(o, "</td>");
        }
        w!(o, "</tr>\n");
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

/// A scenario's heading, the facts of its run and its numbers.
fn numbers(o: &mut String, l: &Loaded) {
    let s = &l.summary;
    let (topo, base) = (s.run("topology"), s.run("baseline"));
    w!(
        o,
        "<p class=\"meta\">{} clock, seed {}, {}{}. Scenario file {}, sha256 {}.</p>\n",
        esc(&l.clock),
        l.seed,
        model::requests(topo),
        if s.complete {
            ""
        } else {
            ", <strong>interrupted: partial results</strong>"
        },
        esc(&s.scenario.file),
        esc(l.sha256.get(..12).unwrap_or(&l.sha256))
    );
    if let Some(why) = model::invalid(s) {
        w!(
            o,
            "<p class=\"warn invalid\"><strong>{}.</strong></p>\n",
            esc(&why)
        );
    }
    if let Some(w) = &s.emulator.warning {
        w!(
            o,
            "<p class=\"warn\"><strong>Warning:</strong> {}</p>\n",
            esc(w)
        );
    }
    table(o, &model::latencies(s, PERCENTILE_METRICS), None);
    if model::is_invalid(s) {
        w!(o, "<p>Throughput: not a result (the run is invalid).</p>\n");
    } else {
        w!(
            o,
            "<p>Throughput: topology {}; baseline {}.</p>\n",
            esc(&model::throughput(topo)),
            esc(&model::throughput(base))
        );
    }
    for stat in ["p50", "p99"] {
        if let Some(p) = model::parts(topo, stat) {
            w!(
                o,
                "<p>Each part of the time at its own {stat}: {}.</p>\n",
                esc(&p)
            );
        }
    }
    if let Some(r) = &s.reference {
        let line = esc(&model::reference_line(r));
        match r.outcome() {
            Outcome::Missed => w!(o, "<p><strong class=\"regressed\">{line}</strong>.</p>\n"),
            _ => w!(o, "<p>{line}.</p>\n"),
        }
    }
}

fn scenario(o: &mut String, e: &Entry, id: &str) {
    let l = e.loaded;
    w!(
        o,
        "<section class=\"scenario\" id=\"{id}\" data-scenario=\"{}\">\n<h2>{}</h2>\n",
        esc(&l.name),
        esc(&l.name)
    );
    numbers(o, l);

    // The plots.
    let prev = previous(e);
    w!(
        o,
        "<h3>Percentile distributions</h3>\n<div class=\"plots\">\n"
    );
    for m in PERCENTILE_METRICS {
        percentiles::plot(o, id, l, prev.as_ref(), m);
    }
    w!(
        o,
        "</div>\n<h3>Latency over time (topology)</h3>\n<div class=\"plots\">\n"
    );
    let intervals = over_time::read_hlog(&l.dir.join("topology.hlog"));
    let changes = over_time::change_times(&l.summary);
    for m in OVER_TIME_METRICS {
        over_time::plot(o, id, l, &intervals, &changes, m);
    }
    w!(
        o,
        "</div>\n<h3>Breakdown and topology</h3>\n<div class=\"plots\">\n"
    );
    breakdown::plot(o, id, &l.summary);
    topology::plot(o, id, &l.summary);
    w!(o, "</div>\n");

    if let Some(c) = e.comparison {
        comparison(o, c);
    }
    w!(o, "</section>\n");
}

fn comparison(o: &mut String, c: &ScenarioComparison) {
    w!(
        o,
        "<h3>Against the baseline</h3>\n<p>{} ({}).</p>\n",
        esc(&model::verdict_counts(c)),
        esc(&baseline_name(&c.base))
    );
    if c.rows.is_empty() {
        return;
    }
    let changed = model::changed(c);
    if !changed.is_empty() {
        table(o, &model::compared(&changed), None);
    }
    let all: Vec<_> = c.rows.iter().collect();
    w!(
        o,
        "<details><summary>All {} compared values</summary>\n",
        all.len()
    );
    table(o, &model::compared(&all), None);
    w!(o, "</details>\n");
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
    fn base64_decodes() {
        use super::super::hlog::base64;
        assert_eq!(base64("aGVsbG8=").unwrap(), b"hello");
        assert!(base64("a$").is_none());
    }
}

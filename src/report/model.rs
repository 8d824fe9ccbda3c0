//! The report model that `report.md` and `report.html` are both drawn from: each table's
//! rows are built here once, from the typed summaries, and each format only renders
//! [`Table`]s and the few sentences around them.

use super::compare::{Loaded, Row, ScenarioComparison, Verdict};
use super::fmt_ms;
use super::summary::{Outcome, ReferenceCheck, RunSummary, Summary};
use crate::format::significant;

/// A scenario's results and, if there is one, its comparison with a baseline.
pub struct Entry<'a> {
    pub loaded: &'a Loaded,
    pub comparison: Option<&'a ScenarioComparison>,
}

/// How a column's values sit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Align {
    /// The first column: a row's label, left.
    Label,
    /// Words, left.
    Text,
    /// Numbers, right.
    Number,
}

#[derive(Clone, Debug)]
pub struct Column {
    pub title: &'static str,
    pub align: Align,
}

/// One cell: its text, and where the format can show it, a link and a class.
#[derive(Clone, Debug, Default)]
pub struct Cell {
    pub text: String,
    pub href: Option<String>,
    pub class: Option<&'static str>,
}

impl From<String> for Cell {
    fn from(text: String) -> Self {
        Cell {
            text,
            ..Cell::default()
        }
    }
}

impl From<&str> for Cell {
    fn from(text: &str) -> Self {
        text.to_string().into()
    }
}

/// A table: the columns and the rows, for every format.
#[derive(Clone, Debug)]
pub struct Table {
    pub columns: Vec<Column>,
    pub rows: Vec<Vec<Cell>>,
    /// Markdown aligns every column left (the overview's way).
    pub markdown_left: bool,
}

fn columns(spec: &[(&'static str, Align)]) -> Vec<Column> {
    spec.iter()
        .map(|&(title, align)| Column { title, align })
        .collect()
}

/// A millisecond value, or "-".
pub fn ms(v: Option<f64>) -> String {
    v.map(fmt_ms).unwrap_or_else(|| "-".into())
}

/// A ratio like "1.87x", or "-".
pub fn ratio(v: Option<f64>) -> String {
    v.map(|x| format!("{x:.2}x")).unwrap_or_else(|| "-".into())
}

/// A number as summary.json writes it ("10.0", "0.25").
pub fn json_number(v: f64) -> String {
    serde_json::Number::from_f64(v)
        .map(|n| n.to_string())
        .unwrap_or_else(|| "null".into())
}

/// Counts of a scenario comparison's verdicts, as a short phrase.
pub fn verdict_counts(c: &ScenarioComparison) -> String {
    if let Some(why) = &c.refused {
        return format!("refused: {why}");
    }
    let n = |v: Verdict| c.rows.iter().filter(|r| r.verdict == v).count();
    format!(
        "{} regressed, {} improved, {} no change, {} inconclusive",
        n(Verdict::Regressed),
        n(Verdict::Improved),
        n(Verdict::Unchanged),
        n(Verdict::Inconclusive)
    )
}

/// Each part of the time at its own percentile, from the breakdown ladders, as
/// "network 40.3 ms, compute 317 ms, queue 11 us". No shares: each part's percentile
/// comes from different requests, so they decompose no request (the terminal table
/// decomposes the request at each percentile itself).
pub fn parts(run: Option<&RunSummary>, stat: &str) -> Option<String> {
    let b = &run?.breakdown;
    // Software time only where the run had some (summary.json writes it only then).
    let mut parts = vec!["network", "compute", "queue"];
    if b.software.is_some() {
        parts.push("software");
    }
    let vals: Vec<f64> = parts
        .iter()
        .map(|p| b.part(p)?.stat(stat))
        .collect::<Option<_>>()?;
    Some(
        parts
            .iter()
            .zip(&vals)
            .map(|(p, v)| format!("{p} {}", fmt_ms(*v)))
            .collect::<Vec<_>>()
            .join(", "),
    )
}

/// The sentence that opens an invalid scenario's section: "invalid: ..." with each reason.
pub fn invalid(s: &Summary) -> Option<String> {
    if s.valid != Some(false) {
        return None;
    }
    let reasons = s
        .validity
        .as_ref()
        .map(|v| v.reasons.join("; "))
        .unwrap_or_default();
    Some(format!(
        "invalid: {reasons}. The latencies rest only on the requests that completed; tax and throughput are not results"
    ))
}

/// Whether a summary says its run is invalid.
pub fn is_invalid(s: &Summary) -> bool {
    s.valid == Some(false)
}

/// A run's requests, as "29 completed, 0 failed".
pub fn requests(run: Option<&RunSummary>) -> String {
    let (c, f) = run.map_or((0, 0), |r| (r.requests.completed, r.requests.failed));
    format!("{c} completed, {f} failed")
}

/// What a run's faults did, as "2 faults injected, 3 failovers, 412 tokens replayed, 1
/// request lost to faults"; `None` when the scenario has none.
pub fn faults(run: Option<&RunSummary>) -> Option<String> {
    let f = run?.faults.as_ref()?;
    Some(format!(
        "{} faults injected, {} failovers, {} tokens replayed, {} requests lost to faults, {} datagrams dropped",
        f.injected, f.failovers, f.replayed_tokens, f.lost, f.dropped_datagrams
    ))
}

/// A run's throughput, as "1.44 req/s, 46.2 tok/s" (with its goodput and the window when
/// the file has them), or "-".
pub fn throughput(run: Option<&RunSummary>) -> String {
    run.map(|r| {
        let t = &r.throughput;
        let mut text = format!(
            "{:.2} req/s, {:.1} tok/s",
            t.requests_per_s, t.output_tokens_per_s
        );
        if let Some(g) = t.goodput_requests_per_s {
            text.push_str(&format!(", goodput {g:.2} req/s (meeting the SLO)"));
        }
        if let Some(w) = t.window_s {
            text.push_str(&format!(" over {w:.1} s"));
        }
        text
    })
    .unwrap_or_else(|| "-".into())
}

/// How a reference came out, as the overview says it: reproduced, missed or fitted.
pub fn reference_word(r: Option<&ReferenceCheck>) -> &'static str {
    r.map_or("-", |r| r.outcome().name())
}

/// A reference's figures: "22.0 ms published, 9.91 ms measured (colocated run)".
pub fn reference_figures(r: &ReferenceCheck) -> String {
    let unit = r.unit.as_deref().unwrap_or("");
    let run = r.run.as_deref().unwrap_or("topology");
    format!(
        "{} {unit} published, {} {unit} measured ({run} run)",
        significant(r.value),
        significant(r.measured)
    )
}

/// A reference check in one sentence: the figures with their unit and run, the verdict, the
/// tolerance and the source (plain text; the HTML escapes it).
pub fn reference_line(r: &ReferenceCheck) -> String {
    let mut line = format!(
        "Reference {}: {}: {} (tolerance {:.0}%; {})",
        r.metric,
        reference_figures(r),
        r.verdict(),
        r.tolerance * 100.0,
        r.source
    );
    if let Some(note) = &r.note {
        line.push_str(&format!(". Why: {}", note.trim()));
    }
    line
}

/// The references of these entries counted apart: "References: 1 reproduced, 2 missed, 1
/// fitted", or `None` when no entry has one.
pub fn reference_counts(entries: &[Entry]) -> Option<String> {
    let refs: Vec<&ReferenceCheck> = entries
        .iter()
        .filter_map(|e| e.loaded.summary.reference.as_ref())
        .collect();
    if refs.is_empty() {
        return None;
    }
    let n = |o: Outcome| refs.iter().filter(|r| r.outcome() == o).count();
    Some(format!(
        "References: {} reproduced, {} missed, {} fitted (a fitted figure was used to calibrate the scenario or its profiles, so meeting it shows nothing).",
        n(Outcome::Reproduced),
        n(Outcome::Missed),
        n(Outcome::Fitted)
    ))
}

/// The overview: one row per scenario; `anchors` give each name a link where the format
/// has them.
pub fn overview(entries: &[Entry], anchors: Option<&[String]>) -> Table {
    let rows = entries
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let s = &e.loaded.summary;
            let t = s.run("topology");
            let name = Cell {
                text: e.loaded.name.clone(),
                href: anchors.and_then(|a| a.get(i)).map(|id| format!("#{id}")),
                class: None,
            };
            vec![
                name,
                e.loaded.clock.as_str().into(),
                ms(t.and_then(|t| t.value("ttft", "p50"))).into(),
                ms(t.and_then(|t| t.value("e2e", "p99"))).into(),
                if is_invalid(s) {
                    "invalid".into()
                } else {
                    ratio(s.network_tax_at("e2e", "p50")).into()
                },
                if is_invalid(s) {
                    "invalid".into()
                } else {
                    ratio(s.device_tax_at("e2e", "p50")).into()
                },
                reference_word(s.reference.as_ref()).into(),
                e.comparison
                    .map(verdict_counts)
                    .unwrap_or_else(|| "-".into())
                    .into(),
            ]
        })
        .collect();
    use Align::*;
    Table {
        columns: columns(&[
            ("scenario", Label),
            ("clock", Text),
            ("ttft p50", Number),
            ("e2e p99", Number),
            ("e2e net tax p50", Number),
            ("e2e dev tax p50", Number),
            ("reference", Text),
            ("vs baseline", Text),
        ]),
        rows,
        markdown_left: true,
    }
}

/// The latency table of a scenario: each metric's p50 and p99 in the topology, the same
/// devices with no network (colocated) and the baseline, the network and device taxes, and
/// the floor.
pub fn latencies(s: &Summary, metrics: &[&str]) -> Table {
    let (topo, colo, base) = (s.run("topology"), s.run("colocated"), s.run("baseline"));
    let rows = metrics
        .iter()
        .map(|&m| {
            let v = |r: Option<&RunSummary>, stat| ms(r.and_then(|r| r.value(m, stat)));
            // An invalid run's tax rests on the survivors: not a result.
            let tax = |t: Option<f64>| match is_invalid(s) {
                true => "-".to_string(),
                false => ratio(t),
            };
            let mut row = vec![m.into()];
            for stat in ["p50", "p99"] {
                row.extend([
                    v(topo, stat).into(),
                    v(colo, stat).into(),
                    v(base, stat).into(),
                    tax(s.network_tax_at(m, stat)).into(),
                    tax(s.device_tax_at(m, stat)).into(),
                ]);
            }
            row.push(ms(s.floor.topology.get(m)).into());
            row
        })
        .collect();
    use Align::*;
    Table {
        columns: columns(&[
            ("metric", Label),
            ("topology p50", Number),
            ("colocated p50", Number),
            ("baseline p50", Number),
            ("net tax p50", Number),
            ("dev tax p50", Number),
            ("topology p99", Number),
            ("colocated p99", Number),
            ("baseline p99", Number),
            ("net tax p99", Number),
            ("dev tax p99", Number),
            ("floor", Number),
        ]),
        rows,
        markdown_left: false,
    }
}

fn verdict_class(v: Verdict) -> &'static str {
    match v {
        Verdict::Regressed => "regressed",
        Verdict::Improved => "improved",
        Verdict::Unchanged => "same",
        Verdict::Inconclusive => "inconclusive",
    }
}

/// A compared value in its unit.
pub fn compared_value(x: f64, unit: &str) -> String {
    if unit == "ms" {
        fmt_ms(x)
    } else {
        format!("{x:.2} {unit}")
    }
}

/// A relative change, as "+3.1%", or "new" from nothing.
pub fn change(c: f64) -> String {
    if c.is_infinite() {
        "new".into()
    } else {
        format!("{:+.1}%", c * 100.0)
    }
}

/// Compared values against a baseline, one row each.
pub fn compared(rows: &[&Row]) -> Table {
    let rows = rows
        .iter()
        .map(|r| {
            vec![
                r.run.as_str().into(),
                r.metric.as_str().into(),
                r.stat.as_str().into(),
                compared_value(r.base, &r.unit).into(),
                compared_value(r.new, &r.unit).into(),
                change(r.change).into(),
                Cell {
                    text: r.verdict.text().into(),
                    href: None,
                    class: Some(verdict_class(r.verdict)),
                },
            ]
        })
        .collect();
    use Align::*;
    Table {
        columns: columns(&[
            ("run", Label),
            ("metric", Text),
            ("stat", Text),
            ("base", Number),
            ("new", Number),
            ("change", Number),
            ("verdict", Text),
        ]),
        rows,
        markdown_left: false,
    }
}

/// The rows of a comparison whose verdict is not "no change".
pub fn changed(c: &ScenarioComparison) -> Vec<&Row> {
    c.rows
        .iter()
        .filter(|r| r.verdict != Verdict::Unchanged)
        .collect()
}

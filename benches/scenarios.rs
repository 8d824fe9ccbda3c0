//! The scenario suite: every scenario in `scenarios/` on the virtual clock (the verdicts:
//! simulated time does not depend on a noisy runner), plus a short real-clock smoke run of
//! each beside it; results in `results/bench/<scenario>/` and `results/bench/real/<scenario>/`
//! (a folder of its own: never over an `inferlat run`'s `results/<scenario>/`), compared with
//! the committed baselines in `results/baselines/<NAME>/` (default `ci`), then
//! `results/bench/report.md` and `results/bench/report.html` from the verdicts just computed.
//!
//! ```text
//! cargo bench --bench scenarios                      # the suite
//! cargo bench --bench scenarios -- quickstart        # scenarios whose name contains "quickstart"
//! cargo bench --bench scenarios -- --save-baseline ci   # make the virtual results the baseline
//! cargo bench --bench scenarios -- --baseline main   # compare with another baseline
//! cargo bench --bench scenarios -- --allow-missing-baseline   # a refused or missing baseline does not fail
//! ```
//!
//! Under `cargo test --benches` each scenario runs once, briefly, on the virtual clock into a
//! temporary folder: a smoke test. The last line is for CI logs:
//! `inferlat-bench: scenarios=N regressed=N improved=N unchanged=N inconclusive=N refused=N no_baseline=N reproduced=N missed=N fitted=N seconds=N verdict=pass|fail`
//! (the last three count the `[reference]` checks: predictions that met their published
//! figure, predictions that missed it, and figures the scenario was calibrated on).
//! A regression makes the bench exit 1; so does a scenario whose comparison was refused or
//! that has no baseline, unless `--allow-missing-baseline`.

#[path = "support/shipped.rs"]
mod shipped;

use inferlat::clock::ClockKind;
use inferlat::harness::{self, Options};
use inferlat::report::compare::{Loaded, ScenarioComparison};
use inferlat::report::folder::Staged;
use inferlat::report::{self, Environment, Results, compare, model, summary};
use inferlat::scenario::{Extent, Scenario};
use shipped::shipped;
use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

struct Args {
    full: bool,
    filter: Option<String>,
    baseline: String,
    save_baseline: Option<String>,
    threshold: f64,
    allow_missing_baseline: bool,
}

fn args() -> Args {
    let mut a = Args {
        full: false,
        filter: None,
        baseline: "ci".into(),
        save_baseline: None,
        threshold: compare::DEFAULT_THRESHOLD,
        allow_missing_baseline: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(x) = it.next() {
        match x.as_str() {
            "--bench" => a.full = true,
            "--baseline" => a.baseline = it.next().expect("--baseline NAME"),
            "--save-baseline" => a.save_baseline = Some(it.next().expect("--save-baseline NAME")),
            "--allow-missing-baseline" => a.allow_missing_baseline = true,
            "--threshold" => {
                let t = it.next().expect("--threshold PCT");
                a.threshold = t
                    .trim_end_matches('%')
                    .parse::<f64>()
                    .expect("a percentage")
                    / 100.0;
            }
            s if s.starts_with('-') => {} // libtest and criterion flags: not ours
            s => a.filter = Some(s.to_string()),
        }
    }
    a
}

/// One scenario run on one clock: its folder, written but not yet swapped into place.
struct Ran {
    wall: Duration,
    staged: Staged,
    warnings: Vec<String>,
    /// The scenario's `[reference]` against the run it names.
    reference: Option<report::RefMeasured>,
    /// Whether that reference was fitted.
    fitted: Option<bool>,
}

/// Runs one scenario on a clock and stages its result folder.
fn run(s: &Scenario, clock: ClockKind, dir: &Path, colocated: bool) -> Ran {
    let plan = inferlat::plan::plan(s).unwrap_or_else(|e| panic!("{}: {e}", s.name));
    let started = SystemTime::now();
    let t0 = Instant::now();
    let options = Options {
        colocated,
        ..Options::default()
    };
    let measured = harness::run_to_end(s, &plan, &options, clock)
        .unwrap_or_else(|e| panic!("{}: {e:#}", s.name));
    let wall = t0.elapsed();
    let results = Results {
        scenario: s,
        plan: &plan,
        measured: &measured,
        environment: Environment::capture(started),
    };
    let staged = report::stage(&results, dir).expect("writing results");
    let done = measured.topology.as_ref().map_or(0, |t| t.record.completed);
    assert!(done > 0, "{}: no request completed", s.name);
    Ran {
        wall,
        staged,
        warnings: report::warnings(&results),
        reference: results.reference_measured(),
        fitted: s.reference.as_ref().map(|r| r.fitted),
    }
}

/// What the bench counts over the suite.
#[derive(Default)]
struct Tally {
    regressed: usize,
    improved: usize,
    unchanged: usize,
    inconclusive: usize,
    refused: usize,
    no_baseline: usize,
}

/// Compares a staged virtual-clock folder with its baseline and writes `compare.json` into
/// it, before the swap; returns the folder's results (named by their final place) and the
/// comparison.
fn judge(
    staged: &mut Staged,
    base: &Path,
    a: &Args,
    tally: &mut Tally,
) -> (Loaded, Option<ScenarioComparison>) {
    let mut new = compare::load(staged.path()).expect("just written");
    for n in &mut new {
        n.dir = staged.dest().to_path_buf();
    }
    let name = new[0].name.clone();
    let c = match compare::load(base) {
        Ok(b) => match compare::compare(&b, &new, a.threshold) {
            Ok(c) => Some(c),
            Err(e) => {
                // An unreadable baseline (a missing histogram, mixed files) is refused.
                println!("{name}: cannot compare with the baseline: {e}");
                tally.refused += 1;
                return (new.remove(0), None);
            }
        },
        Err(_) => None,
    };
    let Some(c) = c.filter(|c| !c.scenarios.is_empty()) else {
        println!(
            "{name}: no baseline \"{}\" ({}); save one with: cargo bench --bench scenarios -- --save-baseline {}",
            a.baseline,
            base.display(),
            a.baseline
        );
        tally.no_baseline += 1;
        return (new.remove(0), None);
    };
    print!("{}", compare::render(&c, false));
    tally.regressed += c.counts.regressed;
    tally.improved += c.counts.improved;
    tally.unchanged += c.counts.unchanged;
    tally.inconclusive += c.counts.inconclusive;
    tally.refused += c.counts.refused;
    let mut bytes = serde_json::to_vec_pretty(&c).expect("json");
    bytes.push(b'\n');
    staged.write("compare.json", &bytes).expect("compare.json");
    (new.remove(0), c.scenarios.into_iter().next())
}

/// A real-clock smoke run's lines for the report: its warnings and reference check.
fn smoke_lines(name: &str, ran: &Ran) -> String {
    let mut o = String::new();
    for w in &ran.warnings {
        let _ = writeln!(o, "- {name}: warning: {w}");
    }
    if let (Some(m), Some(r)) = (ran.reference, &ran.fitted) {
        let _ = writeln!(
            o,
            "- {name}: reference {:.4} {unit} published, {:.4} {unit} measured ({} run, real clock): {}",
            m.expected,
            m.measured,
            m.run,
            summary::verdict(*r, m.within),
            unit = m.unit
        );
    }
    o
}

/// The bench's own section of the report: what it judged, the references, the smoke runs.
fn appendix(
    judged: &[(Loaded, Option<ScenarioComparison>)],
    t: &Tally,
    smoke: &str,
    a: &Args,
) -> String {
    let mut o = String::from("\n## Bench\n\n");
    let _ = writeln!(
        o,
        "Compared with baseline \"{}\": {} regressed, {} improved, {} no significant change, {} refused, {} without a baseline{}.\n",
        a.baseline,
        t.regressed,
        t.improved,
        t.unchanged,
        t.refused,
        t.no_baseline,
        if a.allow_missing_baseline {
            " (allowed: --allow-missing-baseline)"
        } else {
            ""
        }
    );
    let _ = writeln!(
        o,
        "Every verdict is exact: these runs are on the virtual clock, where identical inputs give identical results, so every percentile gated is decidable (docs/ci.md).\n"
    );
    let mut outcomes: std::collections::BTreeMap<summary::Outcome, Vec<&str>> = Default::default();
    for (l, c) in judged {
        let verdicts = match c {
            Some(c) => model::verdict_counts(c),
            None => "no baseline".into(),
        };
        let reference = match &l.summary.reference {
            Some(r) => {
                outcomes.entry(r.outcome()).or_default().push(&l.name);
                format!(
                    "reference {}: {}, {}",
                    r.metric,
                    model::reference_figures(r),
                    r.verdict()
                )
            }
            None => "no reference".into(),
        };
        let _ = writeln!(o, "- {}: {verdicts}; {reference}", l.name);
    }
    let _ = writeln!(
        o,
        "\nReferences: {} reproduced, {} missed, {} fitted (a fitted figure was used to calibrate the scenario or its profiles: meeting it shows nothing).",
        outcomes
            .get(&summary::Outcome::Reproduced)
            .map_or(0, Vec::len),
        outcomes.get(&summary::Outcome::Missed).map_or(0, Vec::len),
        outcomes.get(&summary::Outcome::Fitted).map_or(0, Vec::len),
    );
    for (outcome, names) in &outcomes {
        let _ = writeln!(o, "- {}: {}", outcome.name(), names.join(", "));
    }
    let _ = writeln!(o, "\n### Real-clock smoke runs (not compared)\n");
    if smoke.is_empty() {
        o.push_str("No warnings.\n");
    } else {
        o.push_str(smoke);
    }
    o
}

fn smoke(all: &[Scenario]) {
    // Each scenario once, briefly, into a temporary folder; nothing is judged.
    let tmp = tempfile::tempdir().expect("temp dir");
    for s in all {
        let mut s = s.clone();
        s.workload.measure = Extent::Requests(3);
        s.workload.warmup = Extent::Requests(1);
        let ran = run(&s, ClockKind::Virtual, &tmp.path().join(&s.name), true);
        ran.staged.commit().expect("writing results");
        println!("smoke {:<24} ok ({:.2} s)", s.name, ran.wall.as_secs_f64());
    }
    println!(
        "inferlat-bench: scenarios={} smoke=ok verdict=pass",
        all.len()
    );
}

fn main() {
    let a = args();
    let all = shipped(a.filter.as_deref());
    if !a.full {
        smoke(&all);
        return;
    }
    let results = Path::new(env!("CARGO_MANIFEST_DIR")).join("results");
    let root = results.join("bench");
    let base_root = results.join("baselines").join(&a.baseline);
    let t0 = Instant::now();
    let mut tally = Tally::default();
    let mut judged = Vec::new();
    let mut smoke_text = String::new();
    for s in &all {
        let mut ran = run(s, ClockKind::Virtual, &root.join(&s.name), true);
        println!(
            "{:<24} virtual: {} simulated in {:.2} s",
            s.name,
            s.workload.measure,
            ran.wall.as_secs_f64()
        );
        judged.push(judge(
            &mut ran.staged,
            &base_root.join(&s.name),
            &a,
            &mut tally,
        ));
        ran.staged.commit().expect("writing results");
        // The real-clock smoke run: a few seconds, to catch what simulated time hides. No
        // warm-up: a 176B model's request on a slow swarm takes half a minute of real time.
        let mut short = s.clone();
        short.workload.measure = Extent::Duration(Duration::from_secs(3));
        short.workload.warmup = Extent::Requests(0);
        // Without the co-located run: the smoke run is for the real clock's warnings.
        let ran = run(
            &short,
            ClockKind::Real,
            &root.join("real").join(&s.name),
            false,
        );
        for w in &ran.warnings {
            println!("warning: {} (real clock): {w}", s.name);
        }
        smoke_text.push_str(&smoke_lines(&s.name, &ran));
        ran.staged.commit().expect("writing results");
        println!(
            "{:<24} real:    3s measured in {:.1} s",
            s.name,
            ran.wall.as_secs_f64()
        );
    }
    let entries: Vec<model::Entry> = judged
        .iter()
        .map(|(l, c)| model::Entry {
            loaded: l,
            comparison: c.as_ref(),
        })
        .collect();
    let text = appendix(&judged, &tally, &smoke_text, &a);
    for p in report::write_entry_reports(&entries, &root, &text).expect("reports") {
        println!("wrote {}", p.display());
    }
    if let Some(name) = &a.save_baseline {
        for s in &all {
            let to = results.join("baselines").join(name).join(&s.name);
            report::save_baseline(&root.join(&s.name), &to).expect("saving the baseline");
        }
        println!(
            "saved baseline \"{name}\" in {}",
            results.join("baselines").join(name).display()
        );
    }
    let missing = tally.refused + tally.no_baseline;
    let pass = tally.regressed == 0 && (missing == 0 || a.allow_missing_baseline);
    if missing > 0 && !a.allow_missing_baseline {
        println!(
            "{missing} scenario(s) refused or without a baseline: nothing says they did not regress; save a baseline (--save-baseline {}) or pass --allow-missing-baseline",
            a.baseline
        );
    }
    let count = |o: summary::Outcome| {
        judged
            .iter()
            .filter(|(l, _)| {
                l.summary
                    .reference
                    .as_ref()
                    .is_some_and(|r| r.outcome() == o)
            })
            .count()
    };
    println!(
        "inferlat-bench: scenarios={} regressed={} improved={} unchanged={} inconclusive={} refused={} no_baseline={} reproduced={} missed={} fitted={} seconds={:.0} verdict={}",
        all.len(),
        tally.regressed,
        tally.improved,
        tally.unchanged,
        tally.inconclusive,
        tally.refused,
        tally.no_baseline,
        count(summary::Outcome::Reproduced),
        count(summary::Outcome::Missed),
        count(summary::Outcome::Fitted),
        t0.elapsed().as_secs_f64(),
        if pass { "pass" } else { "fail" }
    );
    if !pass {
        std::process::exit(1);
    }
}

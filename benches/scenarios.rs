//! The scenario suite: every scenario in `scenarios/` on the virtual clock (the verdicts:
//! simulated time does not depend on a noisy runner), plus a short real-clock smoke run of
//! each beside it; results in `results/<scenario>/` and `results/real/<scenario>/`, then
//! `results/report.md` and `results/report.html`, compared with the committed baselines in
//! `results/baselines/<NAME>/` (default `ci`).
//!
//! ```text
//! cargo bench --bench scenarios                      # the suite
//! cargo bench --bench scenarios -- quickstart        # scenarios whose name contains "quickstart"
//! cargo bench --bench scenarios -- --save-baseline ci   # make the virtual results the baseline
//! cargo bench --bench scenarios -- --baseline main   # compare with another baseline
//! ```
//!
//! Under `cargo test --benches` each scenario runs once, briefly, on the virtual clock into a
//! temporary folder: a smoke test. The last line is for CI logs:
//! `inferlat-bench: scenarios=N regressed=N improved=N unchanged=N refused=N no_baseline=N verdict=pass|fail`.
//! A regression makes the bench exit 1.

use inferlat::clock::ClockKind;
use inferlat::harness::{self, Options};
use inferlat::report::{self, Environment, Results, compare};
use inferlat::scenario::{self, Extent, Scenario};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

struct Args {
    full: bool,
    filter: Option<String>,
    baseline: String,
    save_baseline: Option<String>,
    threshold: f64,
}

fn args() -> Args {
    let mut a = Args {
        full: false,
        filter: None,
        baseline: "ci".into(),
        save_baseline: None,
        threshold: compare::DEFAULT_THRESHOLD,
    };
    let mut it = std::env::args().skip(1);
    while let Some(x) = it.next() {
        match x.as_str() {
            "--bench" => a.full = true,
            "--baseline" => a.baseline = it.next().expect("--baseline NAME"),
            "--save-baseline" => a.save_baseline = Some(it.next().expect("--save-baseline NAME")),
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

fn scenarios(filter: Option<&str>) -> Vec<Scenario> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("scenarios/")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    files
        .iter()
        .map(|f| scenario::load(f).unwrap_or_else(|e| panic!("{e}")))
        .filter(|s| filter.is_none_or(|f| s.name.contains(f)))
        .collect()
}

/// Runs one scenario on a clock and writes its result folder; returns the wall time.
fn run(s: &Scenario, clock: ClockKind, dir: &Path) -> Duration {
    let plan = inferlat::plan::plan(s).unwrap_or_else(|e| panic!("{}: {e}", s.name));
    let started = SystemTime::now();
    let t0 = Instant::now();
    let measured = harness::run_to_end(s, &plan, &Options::default(), clock)
        .unwrap_or_else(|e| panic!("{}: {e:#}", s.name));
    let wall = t0.elapsed();
    let results = Results {
        scenario: s,
        plan: &plan,
        measured: &measured,
        environment: Environment::capture(started),
    };
    report::write_all(&results, dir).expect("writing results");
    let done = measured.topology.as_ref().map_or(0, |t| t.record.completed);
    assert!(done > 0, "{}: no request completed", s.name);
    wall
}

fn main() {
    let a = args();
    let all = scenarios(a.filter.as_deref());
    if !a.full {
        // Smoke: each scenario once, briefly, into a temporary folder.
        let tmp = tempfile::tempdir().expect("temp dir");
        for s in &all {
            let mut s = s.clone();
            s.workload.measure = Extent::Requests(3);
            s.workload.warmup = Extent::Requests(1);
            let wall = run(&s, ClockKind::Virtual, &tmp.path().join(&s.name));
            println!("smoke {:<24} ok ({:.2} s)", s.name, wall.as_secs_f64());
        }
        println!(
            "inferlat-bench: scenarios={} smoke=ok verdict=pass",
            all.len()
        );
        return;
    }

    let results = Path::new(env!("CARGO_MANIFEST_DIR")).join("results");
    let t0 = Instant::now();
    for s in &all {
        let wall = run(s, ClockKind::Virtual, &results.join(&s.name));
        println!(
            "{:<24} virtual: {} simulated in {:.2} s",
            s.name,
            s.workload.measure,
            wall.as_secs_f64()
        );
        // The real-clock smoke run: a few seconds, to catch what simulated time hides. No
        // warm-up: a 176B model's request on a slow swarm takes half a minute of real time.
        let mut short = s.clone();
        short.workload.measure = Extent::Duration(Duration::from_secs(3));
        short.workload.warmup = Extent::Requests(0);
        let wall = run(&short, ClockKind::Real, &results.join("real").join(&s.name));
        println!(
            "{:<24} real:    3s measured in {:.1} s",
            s.name,
            wall.as_secs_f64()
        );
    }

    // Compare the virtual results with the baseline.
    let base_root = results.join("baselines").join(&a.baseline);
    let (mut regressed, mut improved, mut unchanged, mut refused, mut no_baseline) =
        (0, 0, 0, 0, 0);
    let mut loaded = Vec::new();
    for s in &all {
        let new = compare::load(&results.join(&s.name)).expect("just written");
        let dir = results.join(&s.name);
        let _ = std::fs::remove_file(dir.join("compare.json"));
        match compare::load(&base_root.join(&s.name)) {
            Ok(base) => {
                let c = match compare::compare(&base, &new, a.threshold) {
                    Ok(c) => c,
                    Err(e) => {
                        println!("{}: cannot compare: {e}", s.name);
                        refused += 1;
                        continue;
                    }
                };
                print!("{}", compare::render(&c, false));
                regressed += c.counts.regressed;
                improved += c.counts.improved;
                unchanged += c.counts.unchanged;
                refused += c.counts.refused;
                let mut bytes = serde_json::to_vec_pretty(&c).expect("json");
                bytes.push(b'\n');
                report::write_atomic(&dir.join("compare.json"), &bytes).expect("compare.json");
            }
            Err(_) => {
                println!(
                    "{}: no baseline \"{}\" ({}); save one with: cargo bench --bench scenarios -- --save-baseline {}",
                    s.name,
                    a.baseline,
                    base_root.join(&s.name).display(),
                    a.baseline
                );
                no_baseline += 1;
            }
        }
        loaded.extend(new);
    }
    let written = report::write_reports(&loaded, &results).expect("reports");
    for p in written {
        println!("wrote {}", p.display());
    }
    if let Some(name) = &a.save_baseline {
        for s in &all {
            let to = results.join("baselines").join(name).join(&s.name);
            report::save_baseline(&results.join(&s.name), &to).expect("saving the baseline");
        }
        println!(
            "saved baseline \"{name}\" in {}",
            results.join("baselines").join(name).display()
        );
    }
    let pass = regressed == 0;
    println!(
        "inferlat-bench: scenarios={} regressed={regressed} improved={improved} unchanged={unchanged} refused={refused} no_baseline={no_baseline} seconds={:.0} verdict={}",
        all.len(),
        t0.elapsed().as_secs_f64(),
        if pass { "pass" } else { "fail" }
    );
    if !pass {
        std::process::exit(1);
    }
}

//! `inferlat compare BASE NEW`: per scenario, run and metric, the change between two result
//! folders and a three-valued verdict, computed from the files alone (`summary.json` and
//! the `.hgrm` distributions), so CI can compare a run with a committed baseline.
//!
//! A latency percentile changes significantly when the distribution-free 95 % confidence
//! intervals of that percentile in the two runs do not overlap (the order-statistic interval:
//! the ranks n·q ± 1.96·√(n·q·(1-q))); it is a regression or an improvement only when the
//! change is also larger than the noise threshold. Throughput's interval counts completed
//! requests as a Poisson count (n ± 1.96·√n over the measured time).

use super::hgrm;
use super::summary::Summary;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// The default noise threshold: changes smaller than this are never verdicts.
pub const DEFAULT_THRESHOLD: f64 = 0.05;

/// Metrics compared, and the percentiles of each.
pub const METRICS: &[&str] = &["ttft", "tpot", "itl", "e2e"];
pub const PERCENTILES: &[(&str, f64)] = &[("p50", 0.5), ("p99", 0.99)];
pub const RUNS: &[&str] = &["topology", "baseline"];

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Improved,
    Regressed,
    NoSignificantChange,
}

impl Verdict {
    pub fn text(self) -> &'static str {
        match self {
            Verdict::Improved => "improved",
            Verdict::Regressed => "regressed",
            Verdict::NoSignificantChange => "no significant change",
        }
    }
}

/// Why a folder could not be compared.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{}: no such folder", .0.display())]
    Missing(PathBuf),
    #[error("{}: no summary.json here, nor in any folder inside it", .0.display())]
    NoResults(PathBuf),
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {source}", path.display())]
    Summary {
        path: PathBuf,
        source: super::summary::SummaryError,
    },
    /// A histogram file that does not parse.
    #[error("{}: {why}", path.display())]
    Bad { path: PathBuf, why: String },
}

/// One scenario's results as read from its folder.
#[derive(Clone, Debug)]
pub struct Loaded {
    pub dir: PathBuf,
    pub name: String,
    pub sha256: String,
    pub clock: String,
    pub seed: u64,
    pub summary: Summary,
    /// (run, metric) -> (value in ms, count) per distinct value, ascending.
    pub dists: BTreeMap<(String, String), Vec<(f64, u64)>>,
    /// The comparison a `run --baseline` left in the folder (`compare.json`), if any.
    pub saved: Option<ScenarioComparison>,
}

impl Loaded {
    /// The ladder value of `run.metric.stat` in ms, if present.
    pub fn value(&self, run: &str, metric: &str, stat: &str) -> Option<f64> {
        self.summary.run(run)?.value(metric, stat)
    }

    pub fn throughput(&self, run: &str) -> Option<f64> {
        Some(self.summary.run(run)?.throughput.requests_per_s)
    }

    /// The 95 % interval of the request rate, counting completions as a Poisson count.
    pub fn throughput_interval(&self, run: &str) -> Option<(f64, f64)> {
        let r = self.summary.run(run)?;
        let n = r.requests.completed as f64;
        let t = Some(r.throughput.window_s.unwrap_or(r.measured_s)).filter(|t| *t > 0.0)?;
        let half = 1.96 * n.sqrt();
        Some(((n - half).max(0.0) / t, (n + half) / t))
    }
}

/// Reads one scenario folder (with `summary.json`) or every scenario folder inside `dir`.
pub fn load(dir: &Path) -> Result<Vec<Loaded>, LoadError> {
    if !dir.is_dir() {
        return Err(LoadError::Missing(dir.to_path_buf()));
    }
    if dir.join("summary.json").is_file() {
        return Ok(vec![load_one(dir)?]);
    }
    let mut out = Vec::new();
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|source| LoadError::Io {
            path: dir.to_path_buf(),
            source,
        })?
        .flatten()
        // A `.name.*.tmp` folder is a write in progress (report::folder), not a result.
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .map(|e| e.path())
        .filter(|p| p.join("summary.json").is_file())
        .collect();
    entries.sort();
    for p in entries {
        out.push(load_one(&p)?);
    }
    if out.is_empty() {
        return Err(LoadError::NoResults(dir.to_path_buf()));
    }
    Ok(out)
}

/// Reads one folder, again if another run swapped a new one in while it was read.
fn load_one(dir: &Path) -> Result<Loaded, LoadError> {
    super::folder::stable(
        dir,
        || load_files(dir),
        |why| LoadError::Bad {
            path: dir.to_path_buf(),
            why,
        },
    )
}

fn load_files(dir: &Path) -> Result<Loaded, LoadError> {
    let path = dir.join("summary.json");
    let text = std::fs::read_to_string(&path).map_err(|source| LoadError::Io {
        path: path.clone(),
        source,
    })?;
    let summary = Summary::parse(&text).map_err(|source| LoadError::Summary {
        path: path.clone(),
        source,
    })?;
    let name = summary.scenario.name.clone();
    let sha256 = summary.scenario.sha256.clone();
    let clock = summary.clock.clone();
    let seed = summary.scenario.seed;
    let mut dists = BTreeMap::new();
    for run in RUNS {
        // The interval log holds the full histograms; the .hgrm only rows at its
        // percentile ticks (every count between two ticks shows as the upper tick's value).
        let p = dir.join(format!("{run}.hlog"));
        if let Ok(bytes) = std::fs::read(&p) {
            let merged = super::hlog::merged(&bytes).map_err(|why| LoadError::Bad {
                path: p.clone(),
                why,
            })?;
            for (tag, h) in merged {
                if METRICS.contains(&tag.as_str()) && !h.is_empty() {
                    let d: Vec<(f64, u64)> = h
                        .iter_recorded()
                        .map(|v| {
                            (
                                h.highest_equivalent(v.value_iterated_to()) as f64 / 1e6,
                                v.count_at_value(),
                            )
                        })
                        .collect();
                    dists.insert((run.to_string(), tag), d);
                }
            }
            continue;
        }
        for metric in METRICS {
            let p = dir.join(format!("{run}.{metric}.hgrm"));
            let Ok(text) = std::fs::read_to_string(&p) else {
                continue;
            };
            let (rows, _) = hgrm::parse(&text).map_err(|why| LoadError::Bad {
                path: p.clone(),
                why,
            })?;
            let mut d: Vec<(f64, u64)> = Vec::new();
            let mut seen = 0u64;
            for r in rows {
                if r.total > seen {
                    d.push((r.value, r.total - seen));
                    seen = r.total;
                }
            }
            dists.insert((run.to_string(), metric.to_string()), d);
        }
    }
    let saved = std::fs::read_to_string(dir.join("compare.json"))
        .ok()
        .and_then(|text| serde_json::from_str::<SavedComparison>(&text).ok())
        .and_then(|c| c.scenarios.into_iter().find(|s| s.name == name));
    Ok(Loaded {
        dir: dir.to_path_buf(),
        saved,
        name,
        sha256,
        clock,
        seed,
        summary,
        dists,
    })
}

/// The value at 1-based rank `r` of a distribution.
fn at_rank(d: &[(f64, u64)], r: u64) -> f64 {
    let mut seen = 0;
    for &(v, c) in d {
        seen += c;
        if seen >= r {
            return v;
        }
    }
    d.last().map_or(f64::NAN, |x| x.0)
}

/// The 95 % confidence interval of the `q` quantile from order statistics; a side that
/// the samples cannot bound (a p99 of 50 samples has no upper bound) is open.
pub fn quantile_interval(d: &[(f64, u64)], q: f64) -> Option<(f64, f64)> {
    let n: u64 = d.iter().map(|x| x.1).sum();
    if n == 0 {
        return None;
    }
    let nf = n as f64;
    let half = 1.96 * (nf * q * (1.0 - q)).sqrt();
    let (lo, hi) = ((nf * q - half).floor(), (nf * q + half).ceil());
    // Too few samples to bound the quantile on a side: that side is open.
    let low = if lo < 1.0 { 0.0 } else { at_rank(d, lo as u64) };
    let high = if hi > nf {
        f64::INFINITY
    } else {
        at_rank(d, (hi as u64).max(1))
    };
    Some((low, high))
}

/// A 95 % confidence interval; `hi` is null when the samples cannot bound it from above.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Interval {
    pub lo: f64,
    pub hi: Option<f64>,
}

impl From<(f64, f64)> for Interval {
    fn from((lo, hi): (f64, f64)) -> Self {
        Interval {
            lo,
            hi: hi.is_finite().then_some(hi),
        }
    }
}

/// One compared number.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Row {
    pub run: String,
    pub metric: String,
    /// `p50`, `p99`, or `requests_per_s`.
    pub stat: String,
    pub unit: String,
    pub base: f64,
    pub new: f64,
    /// new / base - 1.
    pub change: f64,
    /// 95 % confidence intervals of the value in each run, when the files allow one.
    pub base_interval: Option<Interval>,
    pub new_interval: Option<Interval>,
    pub verdict: Verdict,
}

/// A scenario's comparison, or why it was refused.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ScenarioComparison {
    pub name: String,
    pub base: PathBuf,
    pub new: PathBuf,
    pub refused: Option<String>,
    pub rows: Vec<Row>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Counts {
    pub regressed: usize,
    pub improved: usize,
    pub no_significant_change: usize,
    pub refused: usize,
}

/// What a reader takes of a `compare.json`: its scenarios.
#[derive(Deserialize)]
struct SavedComparison {
    scenarios: Vec<ScenarioComparison>,
}

/// The whole comparison: what `compare.json` holds.
#[derive(Clone, Debug, Serialize)]
pub struct Comparison {
    pub schema_version: u32,
    pub threshold: f64,
    pub scenarios: Vec<ScenarioComparison>,
    /// Scenarios in only one of the two folders.
    pub only_in_base: Vec<String>,
    pub only_in_new: Vec<String>,
    pub counts: Counts,
}

/// The verdict on a change of a value where smaller is better; without confidence
/// intervals there is no verdict.
pub fn verdict(
    change: f64,
    threshold: f64,
    intervals: Option<((f64, f64), (f64, f64))>,
) -> Verdict {
    // Without intervals nothing can be called significant.
    let (slower, faster) = match intervals {
        Some(((blo, bhi), (nlo, nhi))) => (nlo > bhi, nhi < blo),
        None => (false, false),
    };
    if change > threshold && slower {
        Verdict::Regressed
    } else if change < -threshold && faster {
        Verdict::Improved
    } else {
        Verdict::NoSignificantChange
    }
}

fn relative(base: f64, new: f64) -> f64 {
    if base == 0.0 {
        if new == 0.0 { 0.0 } else { f64::INFINITY }
    } else {
        new / base - 1.0
    }
}

/// Compares two scenarios' results.
pub fn compare_one(base: &Loaded, new: &Loaded, threshold: f64) -> ScenarioComparison {
    let mut out = ScenarioComparison {
        name: new.name.clone(),
        base: base.dir.clone(),
        new: new.dir.clone(),
        refused: None,
        rows: Vec::new(),
    };
    if base.sha256 != new.sha256 {
        out.refused = Some(format!(
            "the scenario differs (sha256 {} in the base, {} in the new run): results of different scenarios are not comparable; save a new baseline",
            base.sha256.chars().take(12).collect::<String>(),
            new.sha256.chars().take(12).collect::<String>()
        ));
        return out;
    }
    if base.clock != new.clock {
        out.refused = Some(format!(
            "the clocks differ ({} in the base, {} in the new run): virtual time leaves out the harness's own costs, so the two do not measure the same thing",
            base.clock, new.clock
        ));
        return out;
    }
    for run in RUNS {
        for metric in METRICS {
            let key = (run.to_string(), metric.to_string());
            for &(stat, q) in PERCENTILES {
                let (Some(b), Some(n)) =
                    (base.value(run, metric, stat), new.value(run, metric, stat))
                else {
                    continue;
                };
                let bi = base.dists.get(&key).and_then(|d| quantile_interval(d, q));
                let ni = new.dists.get(&key).and_then(|d| quantile_interval(d, q));
                let change = relative(b, n);
                out.rows.push(Row {
                    run: run.to_string(),
                    metric: metric.to_string(),
                    stat: stat.into(),
                    unit: "ms".into(),
                    base: b,
                    new: n,
                    change,
                    base_interval: bi.map(Into::into),
                    new_interval: ni.map(Into::into),
                    verdict: verdict(change, threshold, bi.zip(ni)),
                });
            }
        }
        if let (Some(b), Some(n)) = (base.throughput(run), new.throughput(run)) {
            // Larger is better: a drop is the regression. The intervals swap roles.
            let change = relative(b, n);
            let (bi, ni) = (base.throughput_interval(run), new.throughput_interval(run));
            let v = verdict(-change, threshold, bi.zip(ni).map(|(b, n)| (n, b)));
            out.rows.push(Row {
                run: run.to_string(),
                metric: "throughput".into(),
                stat: "requests_per_s".into(),
                unit: "req/s".into(),
                base: b,
                new: n,
                change,
                base_interval: bi.map(Into::into),
                new_interval: ni.map(Into::into),
                verdict: v,
            });
        }
    }
    out
}

/// Compares every scenario present in both lists, matched by name.
pub fn compare(base: &[Loaded], new: &[Loaded], threshold: f64) -> Comparison {
    let mut scenarios = Vec::new();
    let mut counts = Counts::default();
    for n in new {
        let Some(b) = base.iter().find(|b| b.name == n.name) else {
            continue;
        };
        let c = compare_one(b, n, threshold);
        if c.refused.is_some() {
            counts.refused += 1;
        }
        for r in &c.rows {
            match r.verdict {
                Verdict::Regressed => counts.regressed += 1,
                Verdict::Improved => counts.improved += 1,
                Verdict::NoSignificantChange => counts.no_significant_change += 1,
            }
        }
        scenarios.push(c);
    }
    let names = |l: &[Loaded], other: &[Loaded]| {
        l.iter()
            .filter(|x| !other.iter().any(|o| o.name == x.name))
            .map(|x| x.name.clone())
            .collect()
    };
    Comparison {
        schema_version: 1,
        threshold,
        only_in_base: names(base, new),
        only_in_new: names(new, base),
        scenarios,
        counts,
    }
}

fn fmt_value(v: f64, unit: &str) -> String {
    if unit == "ms" {
        super::fmt_ms(v)
    } else {
        format!("{v:.2} {unit}")
    }
}

fn fmt_change(c: f64) -> String {
    if c.is_infinite() {
        "new".into()
    } else {
        format!("{:+.1}%", c * 100.0)
    }
}

/// The comparison as a terminal table.
pub fn render(c: &Comparison) -> String {
    let mut o = String::new();
    for s in &c.scenarios {
        let _ = writeln!(
            o,
            "\n{}  ({} -> {})",
            s.name,
            s.base.display(),
            s.new.display()
        );
        if let Some(why) = &s.refused {
            let _ = writeln!(o, "  refused: {why}");
            continue;
        }
        let _ = writeln!(
            o,
            "  {:<9} {:<11} {:<6} {:>10} {:>10} {:>8}  verdict",
            "run", "metric", "stat", "base", "new", "change"
        );
        for r in &s.rows {
            let stat = if r.stat == "requests_per_s" {
                ""
            } else {
                &r.stat
            };
            let _ = writeln!(
                o,
                "  {:<9} {:<11} {:<6} {:>10} {:>10} {:>8}  {}",
                r.run,
                r.metric,
                stat,
                fmt_value(r.base, &r.unit),
                fmt_value(r.new, &r.unit),
                fmt_change(r.change),
                r.verdict.text()
            );
        }
    }
    for n in &c.only_in_base {
        let _ = writeln!(o, "\n{n}: only in the base, not compared");
    }
    for n in &c.only_in_new {
        let _ = writeln!(o, "\n{n}: no baseline to compare with");
    }
    let k = &c.counts;
    let _ = writeln!(
        o,
        "\ncompare: {} regressed, {} improved, {} no significant change, {} refused (threshold {:.1}%)",
        k.regressed,
        k.improved,
        k.no_significant_change,
        k.refused,
        c.threshold * 100.0
    );
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dist(values: &[f64]) -> Vec<(f64, u64)> {
        let mut v = values.to_vec();
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
        let mut d: Vec<(f64, u64)> = Vec::new();
        for x in v {
            match d.last_mut() {
                Some(last) if last.0 == x => last.1 += 1,
                _ => d.push((x, 1)),
            }
        }
        d
    }

    fn judge(base: &[f64], new: &[f64], q: f64) -> Verdict {
        let (b, n) = (dist(base), dist(new));
        let (bi, ni) = (
            quantile_interval(&b, q).unwrap(),
            quantile_interval(&n, q).unwrap(),
        );
        let rank = |d: &[(f64, u64)]| {
            let total: u64 = d.iter().map(|x| x.1).sum();
            at_rank(d, ((total as f64 * q).ceil() as u64).max(1))
        };
        verdict(
            relative(rank(&b), rank(&n)),
            DEFAULT_THRESHOLD,
            Some((bi, ni)),
        )
    }

    /// A spread of latencies around `center`, the same shape every time.
    fn spread(center: f64, n: usize) -> Vec<f64> {
        (0..n)
            .map(|i| center * (0.8 + 0.4 * (i as f64 / n as f64)))
            .collect()
    }

    #[test]
    fn identical_runs_show_no_change() {
        let a = spread(100.0, 500);
        assert_eq!(judge(&a, &a, 0.5), Verdict::NoSignificantChange);
        assert_eq!(judge(&a, &a, 0.99), Verdict::NoSignificantChange);
    }

    #[test]
    fn a_clearly_slower_run_regresses_and_a_faster_one_improves() {
        let a = spread(100.0, 500);
        let slow = spread(130.0, 500);
        assert_eq!(judge(&a, &slow, 0.5), Verdict::Regressed);
        assert_eq!(judge(&slow, &a, 0.5), Verdict::Improved);
    }

    #[test]
    fn changes_within_noise_or_threshold_are_not_verdicts() {
        // 3 % slower: below the 5 % threshold, however many samples.
        let a = spread(100.0, 5000);
        assert_eq!(
            judge(&a, &spread(103.0, 5000), 0.5),
            Verdict::NoSignificantChange
        );
        // 20 % slower at p99 but from ten samples: the intervals overlap.
        let few = spread(100.0, 10);
        assert_eq!(
            judge(&few, &spread(120.0, 10), 0.99),
            Verdict::NoSignificantChange
        );
    }

    #[test]
    fn without_intervals_there_is_no_verdict() {
        assert_eq!(
            verdict(0.5, DEFAULT_THRESHOLD, None),
            Verdict::NoSignificantChange
        );
        assert_eq!(
            verdict(-0.5, DEFAULT_THRESHOLD, None),
            Verdict::NoSignificantChange
        );
    }

    #[test]
    fn quantile_interval_brackets_the_quantile() {
        let d = dist(&(1..=1000).map(|x| x as f64).collect::<Vec<_>>());
        let (lo, hi) = quantile_interval(&d, 0.5).unwrap();
        assert!(lo < 500.0 && hi > 500.0 && hi - lo < 80.0, "{lo} {hi}");
    }
}

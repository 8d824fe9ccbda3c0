//! `inferlat compare BASE NEW`: per scenario, run and metric, the change between two result
//! folders and a verdict, computed from the files alone, so CI can compare a run with a
//! committed baseline.
//!
//! Two results are compared only when their identities (summary.json's `identity`: the
//! scenario text and traces, every device profile's figures, the seed, the command-line
//! overrides, the clock and the tool version) are equal; otherwise the pair is refused
//! with the parts that differ.
//!
//! Every compared latency, printed or judged, comes from the run's `.hlog` (its full
//! histograms), whose counts must match summary.json's: a missing or unreadable interval
//! log is an error naming the file, never "no change".
//!
//! - Virtual clock: a run is a function of its identity, so there is no noise to allow
//!   for; a value that moved past the threshold regressed or improved, exactly.
//! - Real clock: the 95 % confidence interval of the relative change (from the
//!   order-statistic intervals of the two runs' percentiles, each at 97.5 %, so both hold
//!   together with 95 %) is judged against the threshold, as criterion does: wholly past
//!   it is a verdict, wholly within it is "unchanged", anything else "inconclusive".
//!   Throughput's interval counts completed requests as a Poisson count.

use super::hgrm;
use super::summary::{Identity, Summary};
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

/// The normal quantile of each run's interval: two independent 97.47 % intervals hold
/// together with 95 %, so the relative change's interval built from them is a 95 % one.
pub const Z: f64 = 2.236;

/// The version of compare.json this build writes. 2: verdicts by clock, `inconclusive`,
/// `change_interval`, `unchanged` for `no_significant_change`.
pub const COMPARE_SCHEMA_VERSION: u32 = 2;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Improved,
    Regressed,
    /// Virtual clock: within the threshold. Real clock: the whole interval of the change
    /// is within the threshold.
    #[serde(alias = "no_significant_change")]
    Unchanged,
    /// Real clock: the interval of the change reaches past the threshold without lying
    /// wholly past it: the samples cannot decide.
    Inconclusive,
}

impl Verdict {
    pub fn text(self) -> &'static str {
        match self {
            Verdict::Improved => "improved",
            Verdict::Regressed => "regressed",
            Verdict::Unchanged => "no change",
            Verdict::Inconclusive => "inconclusive",
        }
    }
}

/// Why a folder could not be read or compared.
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
    /// A run whose interval log is not there: without it there is nothing to judge.
    #[error(
        "{}: no such file: summary.json has a {run} run, and its latencies are compared from this interval log; the folder is incomplete (run the scenario again)",
        path.display()
    )]
    NoHistogram { path: PathBuf, run: String },
    /// A histogram that does not hold what summary.json counts: the files are of two runs.
    #[error(
        "{}: holds {found} {metric} values where summary.json counts {want}: the folder mixes files of different runs (run the scenario again)",
        path.display()
    )]
    Mismatch {
        path: PathBuf,
        metric: String,
        found: u64,
        want: u64,
    },
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
    /// The runs whose distributions came from their `.hlog` (full histograms), not from
    /// the `.hgrm` percentile ticks; only those are compared.
    pub full: Vec<String>,
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

    /// The interval of the request rate at normal quantile `z`, counting completions as a
    /// Poisson count.
    pub fn throughput_interval(&self, run: &str, z: f64) -> Option<(f64, f64)> {
        let r = self.summary.run(run)?;
        let n = r.requests.completed as f64;
        let t = Some(r.throughput.window_s.unwrap_or(r.measured_s)).filter(|t| *t > 0.0)?;
        let half = z * n.sqrt();
        Some(((n - half).max(0.0) / t, (n + half) / t))
    }

    /// The distribution of `run.metric` compared: from the run's interval log, or an
    /// error naming the file that should hold it. `None`: the run measured no value.
    fn compared_dist(&self, run: &str, metric: &str) -> Result<Option<&[(f64, u64)]>, LoadError> {
        let want = self
            .summary
            .run(run)
            .and_then(|r| r.metrics.get(metric))
            .map_or(0, |l| l.count);
        let path = self.dir.join(format!("{run}.hlog"));
        if !self.full.iter().any(|r| r == run) {
            if want == 0 {
                return Ok(None);
            }
            return Err(LoadError::NoHistogram {
                path,
                run: run.into(),
            });
        }
        let d = self.dists.get(&(run.to_string(), metric.to_string()));
        let found: u64 = d.map_or(0, |d| d.iter().map(|x| x.1).sum());
        if found != want {
            return Err(LoadError::Mismatch {
                path,
                metric: metric.into(),
                found,
                want,
            });
        }
        Ok(d.map(Vec::as_slice).filter(|d| !d.is_empty()))
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

/// The most bytes read from a `summary.json`, `.hgrm` or `compare.json`.
const MAX_TEXT: u64 = 64 << 20;

/// A file's text, reading at most `MAX_TEXT` bytes of it.
fn read_text(path: &Path) -> Result<String, LoadError> {
    let bytes = super::hlog::read_bounded(path, MAX_TEXT).map_err(|e| match e {
        super::hlog::ReadError::Io(source) => LoadError::Io {
            path: path.to_path_buf(),
            source,
        },
        e => LoadError::Bad {
            path: path.to_path_buf(),
            why: e.to_string(),
        },
    })?;
    String::from_utf8(bytes).map_err(|_| LoadError::Bad {
        path: path.to_path_buf(),
        why: "not UTF-8 text".into(),
    })
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
    let text = read_text(&path)?;
    let summary = Summary::parse(&text).map_err(|source| LoadError::Summary {
        path: path.clone(),
        source,
    })?;
    let name = summary.scenario.name.clone();
    let mut dists = BTreeMap::new();
    let mut full = Vec::new();
    for run in RUNS {
        // The interval log holds the full histograms; the .hgrm only rows at its
        // percentile ticks (every count between two ticks shows as the upper tick's value).
        let p = dir.join(format!("{run}.hlog"));
        if p.is_file() {
            let merged = super::hlog::merged_file(&p).map_err(|e| LoadError::Bad {
                path: p.clone(),
                why: e.to_string(),
            })?;
            for (tag, h) in merged {
                if METRICS.contains(&tag.as_str()) && !h.is_empty() {
                    dists.insert((run.to_string(), tag), distribution(&h));
                }
            }
            full.push(run.to_string());
            continue;
        }
        for metric in METRICS {
            let p = dir.join(format!("{run}.{metric}.hgrm"));
            if !p.is_file() {
                continue;
            }
            let (rows, _) = hgrm::parse(&read_text(&p)?).map_err(|why| LoadError::Bad {
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
    let saved = read_text(&dir.join("compare.json"))
        .ok()
        .and_then(|text| serde_json::from_str::<SavedComparison>(&text).ok())
        .and_then(|c| c.scenarios.into_iter().find(|s| s.name == name));
    Ok(Loaded {
        dir: dir.to_path_buf(),
        saved,
        name,
        sha256: summary.scenario.sha256.clone(),
        clock: summary.clock.clone(),
        seed: summary.scenario.seed,
        summary,
        dists,
        full,
    })
}

/// A histogram of ns as (value in ms, count) per distinct value, ascending.
fn distribution(h: &hdrhistogram::Histogram<u64>) -> Vec<(f64, u64)> {
    h.iter_recorded()
        .map(|v| {
            (
                h.highest_equivalent(v.value_iterated_to()) as f64 / 1e6,
                v.count_at_value(),
            )
        })
        .collect()
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

/// The `q` quantile of a distribution as HdrHistogram (and so summary.json) reports it:
/// the value at rank ⌈q·n⌉.
pub fn quantile(d: &[(f64, u64)], q: f64) -> Option<f64> {
    let n: u64 = d.iter().map(|x| x.1).sum();
    (n > 0).then(|| at_rank(d, ((q * n as f64).ceil() as u64).max(1)))
}

/// The confidence interval of the `q` quantile from order statistics, at normal quantile
/// `z` (1.96 for 95 %): the values at ranks n·q ± z·√(n·q·(1-q)). A side the samples
/// cannot bound (a p99 of 50 samples has no upper bound) is open: 0 or infinity.
pub fn quantile_interval(d: &[(f64, u64)], q: f64, z: f64) -> Option<(f64, f64)> {
    let n: u64 = d.iter().map(|x| x.1).sum();
    if n == 0 {
        return None;
    }
    let nf = n as f64;
    let half = z * (nf * q * (1.0 - q)).sqrt();
    let (lo, hi) = ((nf * q - half).floor(), (nf * q + half).ceil());
    let low = if lo < 1.0 { 0.0 } else { at_rank(d, lo as u64) };
    let high = if hi > nf {
        f64::INFINITY
    } else {
        at_rank(d, (hi as u64).max(1))
    };
    Some((low, high))
}

/// The fewest samples whose order statistics bound the `q` quantile on both sides at
/// normal quantile `z` (see [`quantile_interval`]): with fewer, a real-clock verdict on it
/// can only be inconclusive. At [`Z`]: 9 for p50, 45 for p90, 495 for p99.
pub fn decidable_from(q: f64, z: f64) -> u64 {
    (1..10_000_000u64)
        .find(|&n| {
            let nf = n as f64;
            let half = z * (nf * q * (1.0 - q)).sqrt();
            (nf * q - half).floor() >= 1.0 && (nf * q + half).ceil() <= nf
        })
        .unwrap_or(u64::MAX)
}

/// A confidence interval; a bound is null when the samples cannot give it.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Interval {
    pub lo: Option<f64>,
    pub hi: Option<f64>,
}

impl From<(f64, f64)> for Interval {
    fn from((lo, hi): (f64, f64)) -> Self {
        Interval {
            lo: lo.is_finite().then_some(lo),
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
    /// Real clock: the 97.5 % intervals of the value in each run and the 95 % interval of
    /// the relative change; null on the virtual clock, which has no noise.
    #[serde(default)]
    pub base_interval: Option<Interval>,
    #[serde(default)]
    pub new_interval: Option<Interval>,
    #[serde(default)]
    pub change_interval: Option<Interval>,
    pub verdict: Verdict,
}

/// A scenario's comparison, or why it was refused.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ScenarioComparison {
    pub name: String,
    pub base: PathBuf,
    pub new: PathBuf,
    /// The clock both ran on, which decides how verdicts are made.
    #[serde(default)]
    pub clock: String,
    pub refused: Option<String>,
    pub rows: Vec<Row>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Counts {
    pub regressed: usize,
    pub improved: usize,
    pub unchanged: usize,
    pub inconclusive: usize,
    pub refused: usize,
}

impl Counts {
    fn add(&mut self, v: Verdict) {
        match v {
            Verdict::Regressed => self.regressed += 1,
            Verdict::Improved => self.improved += 1,
            Verdict::Unchanged => self.unchanged += 1,
            Verdict::Inconclusive => self.inconclusive += 1,
        }
    }
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

/// The verdict on an exact change of a value where smaller is better (virtual clock).
pub fn exact_verdict(change: f64, threshold: f64) -> Verdict {
    if change > threshold {
        Verdict::Regressed
    } else if change < -threshold {
        Verdict::Improved
    } else {
        Verdict::Unchanged
    }
}

/// The verdict on the confidence interval `(lo, hi)` of the relative change of a value
/// where smaller is better (real clock), as criterion judges one: wholly past the
/// threshold is a verdict, wholly within it is no change, anything else inconclusive.
pub fn interval_verdict((lo, hi): (f64, f64), threshold: f64) -> Verdict {
    if lo > threshold {
        Verdict::Regressed
    } else if hi < -threshold {
        Verdict::Improved
    } else if lo >= -threshold && hi <= threshold {
        Verdict::Unchanged
    } else {
        Verdict::Inconclusive
    }
}

/// The interval of new / base - 1 from an interval of each (all values positive).
pub fn change_interval(base: (f64, f64), new: (f64, f64)) -> (f64, f64) {
    let lo = if base.1.is_infinite() {
        -1.0
    } else {
        relative(base.1, new.0)
    };
    (lo, relative(base.0, new.1))
}

fn relative(base: f64, new: f64) -> f64 {
    if base == 0.0 {
        if new == 0.0 { 0.0 } else { f64::INFINITY }
    } else {
        new / base - 1.0
    }
}

/// Why two results cannot be compared, if they cannot.
fn refusal(base: &Loaded, new: &Loaded) -> Option<String> {
    const RESAVE: &str = "save it again with this version: `cargo bench --bench scenarios -- --save-baseline ci` for the suite, or `inferlat run FILE --save-baseline NAME`";
    let (Some(b), Some(n)) = (&base.summary.identity, &new.summary.identity) else {
        let which = if base.summary.identity.is_none() {
            &base.dir
        } else {
            &new.dir
        };
        return Some(format!(
            "{} predates identities: its summary.json (schema_version {}) does not record what its numbers depend on, so a difference in profiles, seed or overrides could not be seen; {RESAVE}",
            which.display(),
            if base.summary.identity.is_none() {
                base.summary.schema_version
            } else {
                new.summary.schema_version
            },
        ));
    };
    let diffs = b.differences(n);
    (!diffs.is_empty()).then(|| {
        format!(
            "{}: results of different inputs are not comparable; {RESAVE}",
            diffs.join("; ")
        )
    })
}

/// Compares two scenarios' results.
pub fn compare_one(
    base: &Loaded,
    new: &Loaded,
    threshold: f64,
) -> Result<ScenarioComparison, LoadError> {
    let mut out = ScenarioComparison {
        name: new.name.clone(),
        base: base.dir.clone(),
        new: new.dir.clone(),
        clock: new.clock.clone(),
        refused: refusal(base, new),
        rows: Vec::new(),
    };
    if out.refused.is_some() {
        return Ok(out);
    }
    let exact = new.summary.identity.as_ref().is_some_and(is_virtual);
    for run in RUNS {
        for metric in METRICS {
            let (Some(bd), Some(nd)) = (
                base.compared_dist(run, metric)?,
                new.compared_dist(run, metric)?,
            ) else {
                continue;
            };
            for &(stat, q) in PERCENTILES {
                let (Some(b), Some(n)) = (quantile(bd, q), quantile(nd, q)) else {
                    continue;
                };
                let intervals = (!exact)
                    .then(|| quantile_interval(bd, q, Z).zip(quantile_interval(nd, q, Z)))
                    .flatten();
                out.rows
                    .push(row(run, metric, stat, "ms", (b, n), intervals, threshold));
            }
        }
        if let (Some(b), Some(n)) = (base.throughput(run), new.throughput(run)) {
            let intervals = (!exact)
                .then(|| {
                    base.throughput_interval(run, Z)
                        .zip(new.throughput_interval(run, Z))
                })
                .flatten();
            out.rows.push(row(
                run,
                "throughput",
                "requests_per_s",
                "req/s",
                (b, n),
                intervals,
                threshold,
            ));
        }
    }
    Ok(out)
}

fn is_virtual(i: &Identity) -> bool {
    i.clock == "virtual"
}

/// A row: the exact verdict without intervals (virtual clock), the interval's with them.
/// Throughput is larger-is-better: its change is judged negated.
fn row(
    run: &str,
    metric: &str,
    stat: &str,
    unit: &str,
    (b, n): (f64, f64),
    intervals: Option<((f64, f64), (f64, f64))>,
    threshold: f64,
) -> Row {
    let larger_is_better = metric == "throughput";
    let change = relative(b, n);
    let ci = intervals.map(|(bi, ni)| change_interval(bi, ni));
    let verdict = match ci {
        None => exact_verdict(if larger_is_better { -change } else { change }, threshold),
        Some((lo, hi)) if larger_is_better => interval_verdict((-hi, -lo), threshold),
        Some(ci) => interval_verdict(ci, threshold),
    };
    Row {
        run: run.into(),
        metric: metric.into(),
        stat: stat.into(),
        unit: unit.into(),
        base: b,
        new: n,
        change,
        base_interval: intervals.map(|(b, _)| b.into()),
        new_interval: intervals.map(|(_, n)| n.into()),
        change_interval: ci.map(Into::into),
        verdict,
    }
}

/// Compares every scenario present in both lists, matched by name.
pub fn compare(base: &[Loaded], new: &[Loaded], threshold: f64) -> Result<Comparison, LoadError> {
    let mut scenarios = Vec::new();
    let mut counts = Counts::default();
    for n in new {
        let Some(b) = base.iter().find(|b| b.name == n.name) else {
            continue;
        };
        let c = compare_one(b, n, threshold)?;
        if c.refused.is_some() {
            counts.refused += 1;
        }
        for r in &c.rows {
            counts.add(r.verdict);
        }
        scenarios.push(c);
    }
    let names = |l: &[Loaded], other: &[Loaded]| {
        l.iter()
            .filter(|x| !other.iter().any(|o| o.name == x.name))
            .map(|x| x.name.clone())
            .collect()
    };
    Ok(Comparison {
        schema_version: COMPARE_SCHEMA_VERSION,
        threshold,
        only_in_base: names(base, new),
        only_in_new: names(new, base),
        scenarios,
        counts,
    })
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

fn fmt_interval(i: Option<Interval>) -> String {
    let side =
        |v: Option<f64>, open: &str| v.map_or(open.to_string(), |v| format!("{:+.1}%", v * 100.0));
    i.map_or(String::new(), |i| {
        format!("[{}, {}]", side(i.lo, "-inf"), side(i.hi, "+inf"))
    })
}

/// The comparison as a terminal table: the rows whose verdict is not "no change", or
/// every row with `verbose`.
/// On the real clock, which percentiles these sample counts cannot decide: their interval
/// is open on a side, so no verdict but inconclusive can come of them, however large the
/// change. (The virtual clock decides every one exactly.)
fn undecidable_line(o: &mut String, s: &ScenarioComparison) {
    let open: Vec<&Row> = s
        .rows
        .iter()
        .filter(|r| {
            r.change_interval
                .is_some_and(|i| i.lo.is_none() || i.hi.is_none())
        })
        .collect();
    if open.is_empty() {
        return;
    }
    let stats: std::collections::BTreeSet<&str> = open.iter().map(|r| r.stat.as_str()).collect();
    let needs: Vec<String> = stats
        .iter()
        .filter_map(|st| {
            let q = match *st {
                "p50" => 0.5,
                "p90" => 0.9,
                "p99" => 0.99,
                _ => return None,
            };
            Some(format!(
                "{st} needs {} requests per run",
                decidable_from(q, Z)
            ))
        })
        .collect();
    let _ = writeln!(
        o,
        "  undecidable with these runs' sample counts (inconclusive whatever the change): {}{}",
        open.iter()
            .map(|r| format!("{} {} {}", r.run, r.metric, r.stat))
            .collect::<Vec<_>>()
            .join(", "),
        if needs.is_empty() {
            String::new()
        } else {
            format!("; {} (docs/ci.md)", needs.join(", "))
        }
    );
}

pub fn render(c: &Comparison, verbose: bool) -> String {
    let mut o = String::new();
    for s in &c.scenarios {
        let _ = writeln!(
            o,
            "\n{}  ({} -> {}, {} clock)",
            s.name,
            s.base.display(),
            s.new.display(),
            s.clock
        );
        if let Some(why) = &s.refused {
            let _ = writeln!(o, "  refused: {why}");
            continue;
        }
        let shown: Vec<&Row> = s
            .rows
            .iter()
            .filter(|r| verbose || r.verdict != Verdict::Unchanged)
            .collect();
        let hidden = s.rows.len() - shown.len();
        if !shown.is_empty() {
            let _ = writeln!(
                o,
                "  {:<9} {:<11} {:<6} {:>10} {:>10} {:>8}  {:<14} interval of the change",
                "run", "metric", "stat", "base", "new", "change", "verdict"
            );
        }
        for r in shown {
            let stat = if r.stat == "requests_per_s" {
                ""
            } else {
                &r.stat
            };
            let _ = writeln!(
                o,
                "  {:<9} {:<11} {:<6} {:>10} {:>10} {:>8}  {:<14} {}",
                r.run,
                r.metric,
                stat,
                fmt_value(r.base, &r.unit),
                fmt_value(r.new, &r.unit),
                fmt_change(r.change),
                r.verdict.text(),
                fmt_interval(r.change_interval)
            );
        }
        if hidden > 0 {
            let _ = writeln!(o, "  {hidden} more unchanged (--verbose lists them)");
        }
        undecidable_line(&mut o, s);
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
        "\ncompare: {} regressed, {} improved, {} no change, {} inconclusive, {} refused (threshold {:.1}%)",
        k.regressed,
        k.improved,
        k.unchanged,
        k.inconclusive,
        k.refused,
        c.threshold * 100.0
    );
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_real_clock_comparison_names_the_percentiles_it_cannot_decide() {
        let t = DEFAULT_THRESHOLD;
        let closed = Some(((9.0, 11.0), (9.0, 11.0)));
        // A p99 from too few samples: the new run's interval has no upper bound.
        let open = Some(((9.0, 11.0), (9.0, f64::INFINITY)));
        let s = ScenarioComparison {
            name: "s".into(),
            base: "a".into(),
            new: "b".into(),
            clock: "real".into(),
            refused: None,
            rows: vec![
                row("topology", "ttft", "p50", "ms", (10.0, 10.0), closed, t),
                row("topology", "ttft", "p99", "ms", (10.0, 30.0), open, t),
            ],
        };
        let mut o = String::new();
        undecidable_line(&mut o, &s);
        assert!(o.contains("topology ttft p99"), "{o}");
        assert!(!o.contains("ttft p50"), "{o}");
        assert!(o.contains("p99 needs 495 requests per run"), "{o}");
        // Every interval closed: nothing to say.
        let mut s = s;
        s.rows.pop();
        let mut o = String::new();
        undecidable_line(&mut o, &s);
        assert!(o.is_empty(), "{o}");
    }

    #[test]
    fn a_percentile_is_decidable_from_the_sample_count_where_both_bounds_exist() {
        for (q, n) in [(0.5, 9), (0.9, 45), (0.99, 495)] {
            assert_eq!(decidable_from(q, Z), n, "q {q}");
            let values = |n: u64| dist(&(1..=n).map(|x| x as f64).collect::<Vec<_>>());
            let (lo, hi) = quantile_interval(&values(n), q, Z).unwrap();
            assert!(lo > 0.0 && hi.is_finite(), "q {q} n {n}: {lo} {hi}");
            let (lo, hi) = quantile_interval(&values(n - 1), q, Z).unwrap();
            assert!(
                lo == 0.0 || hi.is_infinite(),
                "q {q} n {}: {lo} {hi}",
                n - 1
            );
        }
    }

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

    /// The real-clock verdict on the `q` quantile of two samples.
    fn judge(base: &[f64], new: &[f64], q: f64) -> Verdict {
        let (b, n) = (dist(base), dist(new));
        let ci = change_interval(
            quantile_interval(&b, q, Z).unwrap(),
            quantile_interval(&n, q, Z).unwrap(),
        );
        interval_verdict(ci, DEFAULT_THRESHOLD)
    }

    /// A spread of latencies around `center`, the same shape every time.
    fn spread(center: f64, n: usize) -> Vec<f64> {
        (0..n)
            .map(|i| center * (0.8 + 0.4 * (i as f64 / n as f64)))
            .collect()
    }

    #[test]
    fn real_clock_identical_large_samples_show_no_change() {
        let a = spread(100.0, 5000);
        assert_eq!(judge(&a, &a, 0.5), Verdict::Unchanged);
        assert_eq!(judge(&a, &a, 0.99), Verdict::Unchanged);
    }

    #[test]
    fn real_clock_a_clearly_slower_run_regresses_and_a_faster_one_improves() {
        let a = spread(100.0, 500);
        let slow = spread(130.0, 500);
        assert_eq!(judge(&a, &slow, 0.5), Verdict::Regressed);
        assert_eq!(judge(&slow, &a, 0.5), Verdict::Improved);
    }

    #[test]
    fn real_clock_samples_that_cannot_decide_are_inconclusive() {
        // 20 % slower at p99 but from ten samples: the p99 has no upper bound.
        let few = spread(100.0, 10);
        assert_eq!(judge(&few, &spread(120.0, 10), 0.99), Verdict::Inconclusive);
        // Identical but small: the interval reaches past the threshold.
        let some = spread(100.0, 50);
        assert_eq!(judge(&some, &some, 0.5), Verdict::Inconclusive);
    }

    #[test]
    fn virtual_clock_verdicts_are_exact() {
        assert_eq!(exact_verdict(0.5, DEFAULT_THRESHOLD), Verdict::Regressed);
        assert_eq!(exact_verdict(0.051, DEFAULT_THRESHOLD), Verdict::Regressed);
        assert_eq!(exact_verdict(0.02, DEFAULT_THRESHOLD), Verdict::Unchanged);
        assert_eq!(exact_verdict(-0.02, DEFAULT_THRESHOLD), Verdict::Unchanged);
        assert_eq!(exact_verdict(-0.5, DEFAULT_THRESHOLD), Verdict::Improved);
    }

    #[test]
    fn throughput_judges_a_drop_as_the_regression() {
        let r = row(
            "topology",
            "throughput",
            "requests_per_s",
            "req/s",
            (10.0, 5.0),
            None,
            DEFAULT_THRESHOLD,
        );
        assert_eq!(r.verdict, Verdict::Regressed);
        let r = row(
            "topology",
            "throughput",
            "requests_per_s",
            "req/s",
            (10.0, 5.0),
            Some(((9.9, 10.1), (4.9, 5.1))),
            DEFAULT_THRESHOLD,
        );
        assert_eq!(r.verdict, Verdict::Regressed);
    }

    #[test]
    fn quantile_interval_brackets_the_quantile() {
        let d = dist(&(1..=1000).map(|x| x as f64).collect::<Vec<_>>());
        let (lo, hi) = quantile_interval(&d, 0.5, 1.96).unwrap();
        assert!(lo < 500.0 && hi > 500.0 && hi - lo < 80.0, "{lo} {hi}");
        assert_eq!(quantile(&d, 0.5), Some(500.0));
        assert_eq!(quantile(&d, 0.99), Some(990.0));
    }
}

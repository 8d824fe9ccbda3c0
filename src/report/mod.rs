//! Reports: one exporter per output format behind one trait, the terminal table, and the
//! reports over result folders (`compare`, `markdown`, `html`, both drawn from `model`).
//! `summary` holds summary.json's types, for its writer (`json`) and every reader. Exporters are pure: they turn
//! [`Results`] into bytes, and [`write_atomic`] writes them. Reading result folders back is
//! `compare::load`'s job (and `html`'s, for the interval logs and a baseline's files).

pub mod bencher;
pub mod compare;
pub mod folder;
pub mod hgrm;
pub mod hlog;
pub mod html;
pub mod json;
pub mod markdown;
pub mod model;
pub mod summary;
pub mod table;

use crate::harness::{Measured, RunOutput};
use crate::plan::{Floor, Plan};
use crate::record::Metric;
use crate::scenario::{RefRun, RefValue, Scenario, units};
use anyhow::Context as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};

pub use summary::Environment;

/// Everything a report is made from.
pub struct Results<'a> {
    pub scenario: &'a Scenario,
    pub plan: &'a Plan,
    pub measured: &'a Measured,
    pub environment: Environment,
}

/// The emulator's lateness p99 past which a real-clock run's network looks slower than
/// the scenario says.
pub const LATENESS_WARN: std::time::Duration = std::time::Duration::from_millis(1);

/// The note a virtual-clock run carries.
pub const VIRTUAL_NOTE: &str = "virtual clock: simulated time, bit-for-bit reproducible from the seed; the harness's own CPU costs (QUIC, TLS, framing, scheduling) take no time in it, so these latencies are the modelled network and compute alone";

/// What a user should hear about the trustworthiness of these results.
pub fn warnings(results: &Results) -> Vec<String> {
    let m = results.measured;
    let mut out = Vec::new();
    if m.clock == crate::clock::ClockKind::Real
        && let Some(h) = &m.emulator_lateness
        && let Some(w) = lateness_warning(h, m.cpu_load, results.environment.cpus)
    {
        out.push(w);
    }
    if m.clock == crate::clock::ClockKind::Real
        && let Some(t) = &m.topology
        && let Some(w) = lag_warning(
            t.record.histogram(crate::record::Metric::ScheduleLag),
            m.cpu_load,
            results.environment.cpus,
        )
    {
        out.push(w);
    }
    out
}

/// The schedule lag p99 past which a real-clock run's load generator is said to have sent
/// late: the harness, not the scenario, then sets part of every latency.
pub const LAG_WARN: std::time::Duration = std::time::Duration::from_millis(1);

/// The warning of a real-clock run whose load generator sent requests late: by how much,
/// how busy the machine was, and the way out.
pub fn lag_warning(
    lag: &hdrhistogram::Histogram<u64>,
    cpu_load: Option<f64>,
    cpus: usize,
) -> Option<String> {
    if lag.is_empty() {
        return None;
    }
    let p99 = std::time::Duration::from_nanos(lag.value_at_quantile(0.99));
    if p99 <= LAG_WARN {
        return None;
    }
    let busy = match cpu_load {
        Some(load) => format!(
            "; the run used {:.0}% of this machine's {cpus} cores",
            load * 100.0 / cpus as f64
        ),
        None => String::new(),
    };
    Some(format!(
        "the harness could not keep up: requests were sent late (schedule lag p99 {:.3} ms, over {:.0} ms){busy}; times run from the scheduled start, so the latencies include up to that much of the harness's own time. Lower the rate, close other work, or use --clock virtual, where the harness takes no time",
        p99.as_secs_f64() * 1e3,
        LAG_WARN.as_secs_f64() * 1e3
    ))
}

/// The warning of a real-clock run whose link emulator delivered late, naming the cause.
pub fn lateness_warning(
    lateness: &hdrhistogram::Histogram<u64>,
    cpu_load: Option<f64>,
    cpus: usize,
) -> Option<String> {
    if lateness.is_empty() {
        return None;
    }
    let p99 = std::time::Duration::from_nanos(lateness.value_at_quantile(0.99));
    if p99 <= LATENESS_WARN {
        return None;
    }
    let cause = match cpu_load {
        Some(load) if load > 0.8 * cpus as f64 => format!(
            "the CPU was saturated: the run used {:.0}% of this machine's {cpus} cores, so the emulator's timing thread waited for a core",
            load * 100.0 / cpus as f64
        ),
        Some(load) => format!(
            "the run used only {:.0}% of this machine's {cpus} cores, so the operating system delayed the timing thread (a busy or virtualized host)",
            load * 100.0 / cpus as f64
        ),
        None => "the timing thread did not get a core in time".into(),
    };
    Some(format!(
        "the link emulator delivered datagrams late (p99 {:.3} ms, over {:.0} ms): {cause}; the results overstate the network by up to that much. Lower the load, close other work, or use --clock virtual",
        p99.as_secs_f64() * 1e3,
        LATENESS_WARN.as_secs_f64() * 1e3
    ))
}

impl Results<'_> {
    pub fn complete(&self) -> bool {
        self.measured.complete(self.plan.baseline.is_some())
    }

    /// The validity rule (DESIGN §11): a run is invalid when, in the topology run or the
    /// baseline, the failed fraction of the measured requests passes `max_failed`, or no
    /// request completed. Each reason names the run, the counts, the limit and the failure
    /// reasons with their counts.
    pub fn validity(&self) -> summary::Validity {
        let limit = self.scenario.workload.max_failed;
        let pct = |f: f64| units::Fraction::new(f).to_string();
        let mut reasons = Vec::new();
        for (run, out) in self.runs() {
            let r = &out.record;
            let why: Vec<String> = r.errors.iter().map(|(e, n)| format!("{n} x {e}")).collect();
            let why = if why.is_empty() {
                String::new()
            } else {
                format!(": {}", why.join("; "))
            };
            if r.failed_fraction() > limit {
                reasons.push(format!(
                    "{run}: {} of {} measured requests failed ({:.1}%), past the limit of {} (max_failed){why}",
                    r.failed,
                    r.requests(),
                    100.0 * r.failed_fraction(),
                    pct(limit)
                ));
            } else if r.completed == 0 && out.complete {
                reasons.push(format!("{run}: no measured request completed{why}"));
            }
        }
        summary::Validity {
            max_failed: limit,
            reasons,
        }
    }

    /// Whether the results are valid: see [`Self::validity`].
    pub fn valid(&self) -> bool {
        self.validity().reasons.is_empty()
    }

    pub fn runs(&self) -> impl Iterator<Item = (&'static str, &RunOutput)> {
        [
            ("topology", self.measured.topology.as_ref()),
            ("colocated", self.measured.colocated.as_ref()),
            ("baseline", self.measured.baseline.as_ref()),
        ]
        .into_iter()
        .filter_map(|(n, r)| r.map(|r| (n, r)))
    }

    /// The total tax of a metric at a quantile: topology / baseline; `None` without a
    /// baseline or a value.
    pub fn tax(&self, metric: Metric, quantile: f64) -> Option<f64> {
        ratio(
            self.measured.topology.as_ref(),
            self.measured.baseline.as_ref(),
            metric,
            quantile,
        )
    }

    /// The network's cost alone: the topology against the same devices with no network
    /// between them (topology / colocated).
    pub fn network_tax(&self, metric: Metric, quantile: f64) -> Option<f64> {
        ratio(
            self.measured.topology.as_ref(),
            self.measured.colocated.as_ref(),
            metric,
            quantile,
        )
    }

    /// The devices' cost: the topology's devices with no network against the baseline's
    /// (colocated / baseline).
    pub fn device_tax(&self, metric: Metric, quantile: f64) -> Option<f64> {
        ratio(
            self.measured.colocated.as_ref(),
            self.measured.baseline.as_ref(),
            metric,
            quantile,
        )
    }

    /// The analytic floors of the median request.
    pub fn floors(&self) -> (Floor, Option<Floor>) {
        (
            self.plan.floor(self.plan.typical),
            self.plan.baseline_floor(self.plan.typical),
        )
    }

    /// The measured value a `[reference]` names, in its unit, from the run it names.
    pub fn reference_measured(&self) -> Option<RefMeasured> {
        let r = self.scenario.reference.as_ref()?;
        let run = match r.run {
            RefRun::Topology => self.measured.topology.as_ref(),
            RefRun::Colocated => self.measured.colocated.as_ref(),
            RefRun::Baseline => self.measured.baseline.as_ref(),
        };
        let run = &run?.record;
        let (expected, measured, unit) = match r.value {
            RefValue::Latency(d) => {
                let (metric, pct) = r.metric.rsplit_once('_')?;
                let metric = Metric::ALL.into_iter().find(|m| m.name() == metric)?;
                if run.histogram(metric).is_empty() {
                    return None;
                }
                let l = run.ladder(metric);
                let v = match pct {
                    "min" => l.min,
                    "mean" => l.mean,
                    "p50" => l.p50,
                    "p90" => l.p90,
                    "p99" => l.p99,
                    "p999" => l.p999,
                    "max" => l.max,
                    _ => return None,
                };
                (d.as_secs_f64() * 1e3, v, "ms")
            }
            RefValue::Number(n) => match r.metric.as_str() {
                "requests_per_s" => (n, run.requests_per_s(), "requests/s"),
                _ => (n, run.output_tokens_per_s(), "output tokens/s"),
            },
        };
        let within = expected > 0.0 && ((measured - expected) / expected).abs() <= r.tolerance;
        Some(RefMeasured {
            expected,
            measured,
            within,
            unit,
            run: r.run.name(),
        })
    }
}

/// A `[reference]` figure against the run it names.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RefMeasured {
    /// The published figure, in `unit`.
    pub expected: f64,
    pub measured: f64,
    pub within: bool,
    pub unit: &'static str,
    /// The run it was compared with.
    pub run: &'static str,
}

/// `a / b` for a metric at a quantile; `None` when either run or value is missing.
fn ratio(a: Option<&RunOutput>, b: Option<&RunOutput>, metric: Metric, q: f64) -> Option<f64> {
    let (a, b) = (a?.record.histogram(metric), b?.record.histogram(metric));
    if a.is_empty() || b.is_empty() {
        return None;
    }
    let bv = b.value_at_quantile(q) as f64;
    (bv > 0.0).then(|| a.value_at_quantile(q) as f64 / bv)
}

/// One output format.
pub trait Exporter {
    /// Files this exporter makes, as (file name, contents).
    fn render(&self, results: &Results) -> anyhow::Result<Vec<(String, Vec<u8>)>>;
}

/// Every exporter that writes into a result folder.
pub fn exporters() -> Vec<Box<dyn Exporter>> {
    vec![
        Box::new(json::SummaryJson),
        Box::new(hgrm::Hgrm),
        Box::new(hlog::Hlog),
        Box::new(bencher::BencherJson),
        Box::new(bencher::BenchmarkActionJson),
    ]
}

/// Writes every exporter's files into a temporary folder that will replace `dir` (see
/// [`folder`]); add files (a `compare.json`) with [`folder::Staged::write`], then commit it.
pub fn stage(results: &Results, dir: &Path) -> anyhow::Result<folder::Staged> {
    let mut staged =
        folder::Staged::new(dir).with_context(|| format!("writing {}", dir.display()))?;
    for e in exporters() {
        for (name, bytes) in e.render(results)? {
            staged.write(&name, &bytes)?;
        }
    }
    Ok(staged)
}

/// Writes every exporter's files as one folder that replaces `dir` whole: a reader sees
/// the old folder or the new one, never a mix. Returns the paths written.
pub fn write_all(results: &Results, dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let staged = stage(results, dir)?;
    let mut written: Vec<PathBuf> = Vec::new();
    for e in std::fs::read_dir(staged.path())
        .with_context(|| format!("reading {}", staged.path().display()))?
        .flatten()
    {
        written.push(dir.join(e.file_name()));
    }
    written.sort();
    staged.commit()?;
    written.push(dir.join(folder::MANIFEST));
    Ok(written)
}

/// Writes report.md and report.html for these results into `out`, with the comparisons
/// saved in their folders.
pub fn write_reports(loaded: &[compare::Loaded], out: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let entries: Vec<model::Entry> = loaded
        .iter()
        .map(|l| model::Entry {
            loaded: l,
            comparison: l.saved.as_ref(),
        })
        .collect();
    write_entry_reports(&entries, out, "")
}

/// Writes report.md and report.html for these entries into `out`; `appendix` (Markdown
/// text, shown as is in the HTML) ends both.
pub fn write_entry_reports(
    entries: &[model::Entry],
    out: &Path,
    appendix: &str,
) -> anyhow::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let md = out.join("report.md");
    let mut text = markdown::render(entries, "inferlat report");
    text.push_str(appendix);
    write_atomic(&md, text.as_bytes())?;
    let html = out.join("report.html");
    let mut page = html::render(entries, "inferlat report");
    if !appendix.is_empty() {
        let escaped = appendix
            .replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;");
        let block = format!("<section><pre>{escaped}</pre></section>\n</main>");
        page = page.replacen("</main>", &block, 1);
    }
    write_atomic(&html, page.as_bytes())?;
    Ok(vec![md, html])
}

/// Copies what a comparison reads of a scenario's results (summary.json and the .hgrm and
/// .hlog files, all of one run) into a baseline folder, replacing it whole.
pub fn save_baseline(results: &Path, baseline: &Path) -> anyhow::Result<()> {
    let files = folder::stable(
        results,
        || -> anyhow::Result<Vec<(String, Vec<u8>)>> {
            let entries = std::fs::read_dir(results)
                .with_context(|| format!("reading {}", results.display()))?;
            let mut files = Vec::new();
            for e in entries.flatten() {
                let p = e.path();
                let keep = p.extension().is_some_and(|x| x == "hgrm" || x == "hlog")
                    || p.file_name().is_some_and(|n| n == "summary.json");
                if keep && p.is_file() {
                    let bytes =
                        std::fs::read(&p).with_context(|| format!("reading {}", p.display()))?;
                    files.push((e.file_name().to_string_lossy().into_owned(), bytes));
                }
            }
            Ok(files)
        },
        |why| anyhow::anyhow!("{}: {why}", results.display()),
    )?;
    let mut staged = folder::Staged::new(baseline)
        .with_context(|| format!("replacing {}", baseline.display()))?;
    for (name, bytes) in files {
        staged.write(&name, &bytes)?;
    }
    staged.commit()?;
    Ok(())
}

/// Writes a file through a temporary file and a rename: readers see the old file, the
/// new one, or none, never a part.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .context("output path has no file name")?
        .to_string_lossy();
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| {
        let mut f =
            std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        f.write_all(bytes)
            .with_context(|| format!("writing {}", tmp.display()))?;
        f.sync_all()
            .with_context(|| format!("syncing {}", tmp.display()))?;
        std::fs::rename(&tmp, path)
            .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Formats milliseconds with a unit that keeps three significant digits.
pub fn fmt_ms(ms: f64) -> String {
    if !ms.is_finite() {
        return "-".into();
    }
    if ms >= 1000.0 {
        format!("{:.2} s", ms / 1000.0)
    } else if ms >= 100.0 {
        format!("{ms:.0} ms")
    } else if ms >= 10.0 {
        format!("{ms:.1} ms")
    } else if ms >= 1.0 {
        format!("{ms:.2} ms")
    } else {
        format!("{:.0} us", ms * 1000.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lateness(us: &[u64]) -> hdrhistogram::Histogram<u64> {
        let mut h = hdrhistogram::Histogram::new(3).unwrap();
        for v in us {
            h.record(v * 1000).unwrap();
        }
        h
    }

    #[test]
    fn late_emulator_warns_and_names_the_cause() {
        let ok = lateness(&[5; 100]);
        assert_eq!(lateness_warning(&ok, Some(1.9), 2), None);
        let mut late = vec![5u64; 90];
        late.extend([3000; 10]);
        let h = lateness(&late);
        let busy = lateness_warning(&h, Some(1.9), 2).unwrap();
        assert!(busy.contains("p99 3.00"), "{busy}");
        assert!(busy.contains("CPU was saturated"), "{busy}");
        let idle = lateness_warning(&h, Some(0.3), 2).unwrap();
        assert!(idle.contains("operating system delayed"), "{idle}");
        assert_eq!(lateness_warning(&lateness(&[]), None, 2), None);
    }

    #[test]
    fn a_late_load_generator_warns_by_how_much_and_names_the_virtual_clock() {
        assert_eq!(lag_warning(&lateness(&[50; 100]), Some(1.0), 2), None);
        let mut late = vec![50u64; 95];
        late.extend([2500; 5]);
        let w = lag_warning(&lateness(&late), Some(1.9), 2).unwrap();
        assert!(w.contains("schedule lag p99 2.50"), "{w}");
        assert!(w.contains("95% of this machine's 2 cores"), "{w}");
        assert!(w.contains("--clock virtual"), "{w}");
        assert_eq!(lag_warning(&lateness(&[]), None, 2), None);
    }
}

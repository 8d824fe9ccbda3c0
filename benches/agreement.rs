//! Whether the real clock agrees with the virtual clock (issue 15): every shipped scenario
//! (`scenarios/*.toml`, the top level) run once on each clock, with the same seed and the
//! same short workload, one request at a time (a closed loop of one user, no baseline, no
//! co-located run), so that the machine is not saturated by the load itself. Where the
//! harness costs nothing, the two clocks give the same TTFT and TPOT: the virtual clock
//! leaves the harness's own CPU time (QUIC, TLS, framing, scheduling, the emulator's
//! timing thread) out, the real clock puts it in. The difference is that cost.
//!
//! ```text
//! cargo bench --bench agreement                       # every shipped scenario
//! cargo bench --bench agreement -- dllama             # scenarios whose name contains "dllama"
//! cargo bench --bench agreement -- --cap 20 --requests 10  # the defaults
//! ```
//!
//! Each scenario's extent is overridden: up to `--requests` measured requests (default 10)
//! and one warm-up, fewer when the plan's floor of a request says they would not fit in
//! `--cap` seconds of real time (default 20; a 176B model's request takes 8 to 23 s, so it
//! gets one request and no warm-up); the output says when a scenario was capped. A watchdog
//! stops a real run that overruns (three times the simulated time of the same run on the
//! virtual clock, plus 15 s); it is then reported as stopped, with what it measured. Faults
//! stay in: both clocks inject the same ones at the same times, and each row says how many
//! were injected on each clock.
//!
//! Per scenario it prints the virtual and real TTFT p50 and TPOT p50, their differences (%
//! and absolute), the process's CPU load over the real topology run (summary.json's
//! `emulator.cpu_load`, core-seconds per second, as a share of the machine's cores), the
//! link emulator's delivery lateness p50 and p99 (µs), and a verdict: `agrees` (both p50s
//! within 5 %), `cpu-bound` (they are not, and the harness used at least 80 % of the
//! machine's cores: by how much is printed, and the virtual clock is the way out) or
//! `differs`. For a tensor
//! group it also prints the harness cost per synchronisation: (real TPOT - virtual TPOT) /
//! the pattern's synchronisations per token. Real-clock figures are only honest on a quiet
//! machine: the load average is printed when the bench starts, and each row's `oth%` is the
//! share of the machine's cores that other processes used during its real run (/proc/stat
//! less this process's getrusage); a row where they used over 20 % says so.
//! Results go to `results/bench/agreement/<scenario>/{virtual,real}/`. The last line:
//!
//! ```text
//! inferlat-agreement: scenarios=N agree=K differ=D cpu_bound=C worst_ttft=X% worst_tpot=Y% sync_cost_us=Z
//! ```
//!
//! (`worst_*`: the largest |real - virtual| / virtual over the scenarios; `sync_cost_us`: the
//! largest per-synchronisation cost over the tensor groups, `n/a` without one.) Nothing is
//! asserted on the figures: a real-clock figure depends on the machine. Under
//! `cargo test --benches` it is a smoke test: two small scenarios with a short answer, one
//! request each, into a temporary folder.

#[path = "support/shipped.rs"]
mod shipped;

use inferlat::clock::ClockKind;
use inferlat::harness::{self, Measured, Options, Progress};
use inferlat::plan::schedule::Shape;
use inferlat::plan::{self, Plan};
use inferlat::record::Metric;
use inferlat::report::{self, Environment, Results};
use inferlat::scenario::{Arrival, Extent, Override, Scenario, TokenCount};
use inferlat::topology::pattern::Op;
use shipped::shipped;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio_util::sync::CancellationToken;

/// Within this fraction the clocks agree (issue 15).
const AGREE: f64 = 0.05;
/// The share of the machine's cores past which the harness counts as CPU-bound (the
/// threshold of the lateness warning, `report::lateness_warning`).
const CPU_BOUND: f64 = 0.8;

struct Args {
    full: bool,
    filter: Option<String>,
    cap: Duration,
    requests: u64,
}

fn args() -> Args {
    let mut a = Args {
        full: false,
        filter: None,
        cap: Duration::from_secs(20),
        requests: 10,
    };
    let mut it = std::env::args().skip(1);
    while let Some(x) = it.next() {
        match x.as_str() {
            "--bench" => a.full = true,
            "--cap" => {
                let s: f64 = it.next().and_then(|v| v.parse().ok()).expect("--cap SECS");
                a.cap = Duration::from_secs_f64(s);
            }
            "--requests" => {
                a.requests = it
                    .next()
                    .and_then(|v| v.parse().ok())
                    .expect("--requests N");
            }
            s if s.starts_with('-') => {} // libtest and criterion flags: not ours
            s => a.filter = Some(s.to_string()),
        }
    }
    a
}

/// The 1-minute load average, from /proc/loadavg.
fn loadavg() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn loadavg_text() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

/// The machine's busy and total CPU time so far, in clock ticks, from /proc/stat.
fn machine_ticks() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let cpu = stat.lines().next()?.strip_prefix("cpu ")?;
    let v: Vec<u64> = cpu
        .split_whitespace()
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is inside user).
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3)? + v.get(4).unwrap_or(&0);
    Some((total - idle, total))
}

/// This process's CPU time so far (user and system).
fn own_cpu() -> Duration {
    // SAFETY: getrusage only writes the struct it is given.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) } != 0 {
        return Duration::ZERO;
    }
    let t = |tv: libc::timeval| Duration::new(tv.tv_sec as u64, tv.tv_usec as u32 * 1000);
    t(u.ru_utime) + t(u.ru_stime)
}

/// What the machine's CPUs did over a stretch of time: the share of all cores this process
/// used, and the share everything else used.
struct Busy {
    ours: f64,
    others: f64,
}

struct BusyMeter {
    ticks: Option<(u64, u64)>,
    cpu: Duration,
    t0: Instant,
}

impl BusyMeter {
    fn start() -> Self {
        BusyMeter {
            ticks: machine_ticks(),
            cpu: own_cpu(),
            t0: Instant::now(),
        }
    }

    fn stop(&self) -> Option<Busy> {
        let ((b0, t0), (b1, t1)) = (self.ticks?, machine_ticks()?);
        if t1 <= t0 {
            return None;
        }
        let machine = (b1 - b0) as f64 / (t1 - t0) as f64;
        let wall = self.t0.elapsed().as_secs_f64() * cores() as f64;
        let ours = (own_cpu() - self.cpu).as_secs_f64() / wall.max(1e-9);
        Some(Busy {
            ours,
            others: (machine - ours).max(0.0),
        })
    }
}

fn cores() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// A scenario made ready for the comparison: its short workload and what was cut.
struct Prepared {
    scenario: Scenario,
    plan: Plan,
    /// The plan's floor of the median request.
    floor: Duration,
    notes: Vec<String>,
}

/// One user at a time, `requests` measured requests at most and one warm-up, fewer where
/// the floor says they would not fit in `cap`; no baseline.
fn prepare(s: &Scenario, cap: Duration, requests: u64, output: Option<u32>) -> Prepared {
    let mut s = s.clone();
    s.baseline = None;
    s.workload.arrival = Arrival::Closed { concurrency: 1 };
    if let Some(n) = output {
        s.workload.output_tokens = TokenCount::Fixed { value: n };
    }
    let probe = plan::plan(&s).unwrap_or_else(|e| panic!("{}: {e}", s.name));
    let shape = Shape {
        prompt: s.workload.prompt_tokens.median(),
        output: s.workload.output_tokens.median(),
    };
    let floor = probe.floor(shape).e2e;
    let fit = (cap.as_secs_f64() / floor.as_secs_f64().max(1e-9)).floor() as u64;
    let mut notes = Vec::new();
    let (measure, warmup) = if fit > requests {
        (requests, 1)
    } else {
        let n = fit.saturating_sub(1).clamp(1, requests);
        let w = u64::from(fit > n);
        notes.push(format!(
            "capped: {n} request(s), {w} warm-up (a request's floor is {:.2} s, the cap {:.0} s)",
            floor.as_secs_f64(),
            cap.as_secs_f64()
        ));
        (n, w)
    };
    s.apply(Override::Requests(measure));
    s.workload.warmup = Extent::Requests(warmup);
    // What the bench changed is part of each result's identity, as a flag's override is:
    // these folders are never mistaken for the scenario's own runs.
    for (k, v) in [
        ("arrival", "closed, concurrency 1".to_string()),
        ("baseline", "none".into()),
        ("warmup_requests", warmup.to_string()),
    ] {
        s.overrides.insert(k.into(), v);
    }
    if let Some(n) = output {
        s.overrides.insert("output_tokens".into(), n.to_string());
    }
    let plan = plan::plan(&s).unwrap_or_else(|e| panic!("{}: {e}", s.name));
    Prepared {
        scenario: s,
        plan,
        floor,
        notes,
    }
}

/// One run on one clock, its results folder written.
struct Ran {
    measured: Measured,
    wall: Duration,
    /// Stopped by the watchdog.
    stopped: bool,
    /// The machine's CPUs over the run.
    busy: Option<Busy>,
}

fn run(p: &Prepared, clock: ClockKind, dir: &Path, limit: Option<Duration>) -> Ran {
    let options = Options {
        colocated: false,
        ..Options::default()
    };
    let (rt, c) = clock.runtime().expect("a runtime");
    let cancel = CancellationToken::new();
    // The watchdog: a thread of its own, so a busy runtime cannot delay it.
    let (done, wait) = std::sync::mpsc::channel::<()>();
    let watchdog = limit.map(|limit| {
        let cancel = cancel.clone();
        std::thread::spawn(move || {
            if wait.recv_timeout(limit).is_err() {
                cancel.cancel();
            }
        })
    });
    let started = SystemTime::now();
    let t0 = Instant::now();
    let meter = BusyMeter::start();
    let measured = rt
        .block_on(harness::run(
            &p.scenario,
            &p.plan,
            &options,
            &c,
            Arc::new(Progress::default()),
            cancel.clone(),
        ))
        .unwrap_or_else(|e| panic!("{} ({} clock): {e:#}", p.scenario.name, clock.name()));
    let wall = t0.elapsed();
    let busy = meter.stop();
    rt.shutdown_background();
    let _ = done.send(());
    if let Some(w) = watchdog {
        let _ = w.join();
    }
    let results = Results {
        scenario: &p.scenario,
        plan: &p.plan,
        measured: &measured,
        environment: Environment::capture(started),
    };
    let staged =
        report::stage(&results, dir).unwrap_or_else(|e| panic!("writing {}: {e:#}", dir.display()));
    staged
        .commit()
        .unwrap_or_else(|e| panic!("writing {}: {e:#}", dir.display()));
    Ran {
        measured,
        wall,
        stopped: cancel.is_cancelled(),
        busy,
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Agrees,
    Differs,
    CpuBound,
}

impl Verdict {
    fn name(self) -> &'static str {
        match self {
            Verdict::Agrees => "agrees",
            Verdict::Differs => "differs",
            Verdict::CpuBound => "cpu-bound",
        }
    }
}

/// One scenario's comparison.
struct Row {
    name: String,
    requests: u64,
    ttft: Option<(f64, f64)>,
    tpot: Option<(f64, f64)>,
    /// Core-seconds per second over the real topology run.
    cpu_load: Option<f64>,
    /// The share of the machine's cores other processes used during the real run.
    others: Option<f64>,
    /// The link emulator's delivery lateness (actual minus scheduled) p50 and p99, in µs.
    lateness_us: Option<(f64, f64)>,
    /// Synchronisations per token of a tensor group.
    syncs: Option<usize>,
    verdict: Verdict,
    notes: Vec<String>,
}

impl Row {
    fn diff(pair: Option<(f64, f64)>) -> Option<f64> {
        pair.map(|(v, r)| (r - v) / v)
    }

    /// The harness's cost per synchronisation, in µs.
    fn sync_cost_us(&self) -> Option<f64> {
        let (v, r) = self.tpot?;
        Some((r - v) * 1e3 / self.syncs? as f64)
    }
}

/// p50 of a metric in ms, where the run has a value.
fn p50(m: &Measured, metric: Metric) -> Option<f64> {
    let h = m.topology.as_ref()?.record.histogram(metric);
    (!h.is_empty()).then(|| h.value_at_quantile(0.5) as f64 / 1e6)
}

fn completed(m: &Measured) -> u64 {
    m.topology.as_ref().map_or(0, |t| t.record.completed)
}

fn failed(m: &Measured) -> u64 {
    m.topology.as_ref().map_or(0, |t| t.record.failed)
}

fn injected(m: &Measured) -> u64 {
    m.topology.as_ref().map_or(0, |t| t.record.faults.injected)
}

fn compare(s: &Scenario, a: &Args, output: Option<u32>, root: &Path) -> Row {
    let p = prepare(s, a.cap, a.requests, output);
    let mut notes = p.notes.clone();
    let dir = root.join(&s.name);
    let virt = run(&p, ClockKind::Virtual, &dir.join("virtual"), None);
    let load = loadavg();
    // The watchdog: three times what the same run took in simulated time, plus setup.
    let limit = virt.measured.simulated.mul_f64(3.0) + Duration::from_secs(15);
    let real = run(&p, ClockKind::Real, &dir.join("real"), Some(limit));
    let n = cores();
    if real.stopped {
        notes.push(format!(
            "stopped by the watchdog after {:.1} s of real time (limit {:.0} s: three times the virtual run's {:.1} s simulated, plus 15 s; a request's floor is {:.2} s); measured what finished",
            real.wall.as_secs_f64(),
            limit.as_secs_f64(),
            virt.measured.simulated.as_secs_f64(),
            p.floor.as_secs_f64()
        ));
    }
    for (name, m) in [("virtual", &virt.measured), ("real", &real.measured)] {
        if failed(m) > 0 {
            notes.push(format!(
                "{name}: {} of {} requests failed",
                failed(m),
                failed(m) + completed(m)
            ));
        }
    }
    if !s.faults.is_empty() {
        notes.push(format!(
            "{} fault(s) in the scenario; injected in the short run: {} virtual, {} real",
            s.faults.len(),
            injected(&virt.measured),
            injected(&real.measured)
        ));
    }
    if let Some(b) = &real.busy
        && b.ours + b.others >= 0.9
    {
        notes.push(format!(
            "the machine was saturated during the real run: this process {:.0}% and other processes {:.0}% of its {n} cores, so the real figures include waiting for a core",
            b.ours * 100.0,
            b.others * 100.0
        ));
    }
    let others = real.busy.as_ref().map(|b| b.others);
    if let Some(o) = others
        && o > 0.2
    {
        notes.push(format!(
            "the machine was not quiet: other processes used {:.0}% of its {n} cores during the real run (load average {} before it)",
            o * 100.0,
            load.map_or("unknown".into(), |l| format!("{l:.2}"))
        ));
    }
    let pair = |metric| Some((p50(&virt.measured, metric)?, p50(&real.measured, metric)?));
    let (ttft, tpot) = (pair(Metric::Ttft), pair(Metric::Tpot));
    // The harness's own figure (summary.json's `emulator.cpu_load`); this process's over the
    // whole run where the harness has none.
    let cpu_load = real
        .measured
        .cpu_load
        .or(real.busy.as_ref().map(|b| b.ours * n as f64));
    let lateness_us = real
        .measured
        .emulator_lateness
        .as_ref()
        .filter(|h| !h.is_empty())
        .map(|h| {
            (
                h.value_at_quantile(0.5) as f64 / 1e3,
                h.value_at_quantile(0.99) as f64 / 1e3,
            )
        });
    let syncs = (!p.plan.tensor.is_empty())
        .then(|| {
            p.plan
                .tensor
                .iter()
                .filter(|o| matches!(o, Op::Sync(_)))
                .count()
        })
        .filter(|&k| k > 0);
    // Where the time goes: the harness's CPU work per token step, which the virtual clock's
    // wall time is (it runs the same code, one thread, and leaves it out of the latencies),
    // and the datagrams a step moves.
    let requests = match (p.scenario.workload.measure, p.scenario.workload.warmup) {
        (Extent::Requests(n), Extent::Requests(w)) => n + w,
        _ => 0,
    };
    let steps = requests * u64::from(p.scenario.workload.output_tokens.median());
    if steps > 0 && !real.stopped && failed(&real.measured) == 0 {
        let datagrams: u64 = real.measured.links.iter().map(|l| l.stats.datagrams).sum();
        let per_step = datagrams as f64 / steps as f64;
        let wall_us = virt.wall.as_secs_f64() * 1e6 / steps as f64;
        let extra = tpot
            .map(|(v, r)| (r - v) * 1e3)
            .filter(|_| per_step > 0.0)
            .map_or(String::new(), |e| {
                format!("; TPOT's difference is {:.1} us a datagram", e / per_step)
            });
        let sync = syncs.map_or(String::new(), |k| {
            format!(
                " ({:.0} us and {:.1} datagrams a synchronisation)",
                wall_us / k as f64,
                per_step / k as f64
            )
        });
        notes.push(format!(
            "harness work: the virtual run took {wall_us:.0} us of wall time a token step{sync}, its CPU work that the virtual clock leaves out; the real run moved {per_step:.0} datagrams a step (its {datagrams} datagrams over {steps} steps, warm-up and prefill included){extra}"
        ));
    }
    let within = |d: Option<f64>| d.is_none_or(|d| d.abs() <= AGREE);
    let verdict = if ttft.is_none() {
        notes.push("no request completed on one of the clocks: nothing to compare".into());
        Verdict::Differs
    } else if within(Row::diff(ttft)) && within(Row::diff(tpot)) {
        Verdict::Agrees
    } else if let Some(load) = cpu_load
        && load >= CPU_BOUND * n as f64
    {
        notes.push(format!(
            "cpu-bound: the harness used {:.0}% of this machine's {n} cores ({load:.2} core-s/s) over the real run, so its own time shows in the latencies; the virtual clock (--clock virtual) is the way out",
            load * 100.0 / n as f64
        ));
        Verdict::CpuBound
    } else {
        Verdict::Differs
    };
    eprintln!(
        "  {}: virtual {:.2} s, real {:.1} s of wall time",
        s.name,
        virt.wall.as_secs_f64(),
        real.wall.as_secs_f64()
    );
    Row {
        name: s.name.clone(),
        requests: completed(&real.measured),
        ttft,
        tpot,
        cpu_load,
        others,
        lateness_us,
        syncs,
        verdict,
        notes,
    }
}

fn ms(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{v:.2}"))
}

fn pct(d: Option<f64>) -> String {
    d.map_or("-".into(), |d| format!("{:+.1}%", d * 100.0))
}

fn abs(pair: Option<(f64, f64)>) -> String {
    pair.map_or("-".into(), |(v, r)| format!("{:+.2}", r - v))
}

fn header() {
    println!(
        "{:<26} {:>3} {:>9} {:>9} {:>7} {:>8} {:>8} {:>8} {:>7} {:>7} {:>5} {:>5} {:>11} {:>8}  verdict",
        "scenario",
        "n",
        "ttft v",
        "ttft r",
        "d%",
        "d ms",
        "tpot v",
        "tpot r",
        "d%",
        "d ms",
        "cpu%",
        "oth%",
        "late50/99us",
        "us/sync"
    );
}

fn print(r: &Row) {
    let n = cores() as f64;
    println!(
        "{:<26} {:>3} {:>9} {:>9} {:>7} {:>8} {:>8} {:>8} {:>7} {:>7} {:>5} {:>5} {:>11} {:>8}  {}",
        r.name,
        r.requests,
        ms(r.ttft.map(|p| p.0)),
        ms(r.ttft.map(|p| p.1)),
        pct(Row::diff(r.ttft)),
        abs(r.ttft),
        ms(r.tpot.map(|p| p.0)),
        ms(r.tpot.map(|p| p.1)),
        pct(Row::diff(r.tpot)),
        abs(r.tpot),
        r.cpu_load
            .map_or("-".into(), |l| format!("{:.0}", l * 100.0 / n)),
        r.others.map_or("-".into(), |o| format!("{:.0}", o * 100.0)),
        r.lateness_us
            .map_or("-".into(), |(a, b)| format!("{a:.0}/{b:.0}")),
        r.sync_cost_us().map_or("-".into(), |c| format!("{c:.1}")),
        r.verdict.name()
    );
    if let Some(k) = r.syncs {
        println!("    tensor group: {k} synchronisations per token (the plan's pattern)");
    }
    for note in &r.notes {
        println!("    {note}");
    }
}

fn summary_line(rows: &[Row]) -> String {
    let count = |v: Verdict| rows.iter().filter(|r| r.verdict == v).count();
    let worst = |f: fn(&Row) -> Option<f64>| {
        rows.iter()
            .filter_map(f)
            .map(f64::abs)
            .fold(None, |m: Option<f64>, d| Some(m.map_or(d, |m| m.max(d))))
            .map_or("n/a".into(), |d| format!("{:.1}", d * 100.0))
    };
    let sync = rows
        .iter()
        .filter_map(Row::sync_cost_us)
        .fold(None, |m: Option<f64>, c| Some(m.map_or(c, |m| m.max(c))))
        .map_or("n/a".into(), |c| format!("{c:.1}"));
    format!(
        "inferlat-agreement: scenarios={} agree={} differ={} cpu_bound={} worst_ttft={}% worst_tpot={}% sync_cost_us={sync}",
        rows.len(),
        count(Verdict::Agrees),
        count(Verdict::Differs),
        count(Verdict::CpuBound),
        worst(|r| Row::diff(r.ttft)),
        worst(|r| Row::diff(r.tpot)),
    )
}

fn main() {
    let a = args();
    let t0 = Instant::now();
    println!(
        "load average at the start: {} ({} cores); real-clock figures are only honest on a quiet machine",
        loadavg_text(),
        cores()
    );
    let (rows, _tmp) = if a.full {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("results")
            .join("bench")
            .join("agreement");
        let all = shipped(a.filter.as_deref());
        header();
        let mut rows = Vec::new();
        for s in &all {
            let r = compare(s, &a, None, &root);
            print(&r);
            rows.push(r);
        }
        (rows, None)
    } else {
        // The smoke test: a direct topology and a tensor group, one request each with a
        // 4-token answer, into a temporary folder.
        let tmp = tempfile::tempdir().expect("temp dir");
        let smoke = Args {
            requests: 1,
            cap: Duration::from_secs(3),
            ..a
        };
        let all: Vec<Scenario> = shipped(None)
            .into_iter()
            .filter(|s| s.name == "quickstart" || s.name == "dllama-tp2")
            .collect();
        assert_eq!(all.len(), 2, "the smoke test's two scenarios are shipped");
        header();
        let mut rows = Vec::new();
        for s in &all {
            let r = compare(s, &smoke, Some(4), tmp.path());
            assert!(r.requests > 0, "{}: no request completed", s.name);
            print(&r);
            rows.push(r);
        }
        assert!(
            rows.iter().any(|r| r.sync_cost_us().is_some()),
            "the tensor group's cost per synchronisation was computed"
        );
        (rows, Some(tmp))
    };
    eprintln!("  took {:.1} s", t0.elapsed().as_secs_f64());
    println!("{}", summary_line(&rows));
}

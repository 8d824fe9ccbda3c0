//! `inferlat calibrate`: measures a real engine and fits a device profile to it, so the
//! what-if topologies a single server cannot be split into (pipeline, tensor, star) run on
//! a measured device.
//!
//! What it measures, through the `openai` engine and so under its timing rules
//! (docs/engines.md): the prefill of each prompt length (time to first token of a request
//! for one token, alone), and the decode step at each batch size and context (the time per
//! output token of `batch` requests sent at once). What it fits: the roofline model of DESIGN
//! §6 for the model's shape, `time = max(flops / F, bytes / B) + layers · overhead`, with F
//! and B the effective rates (so the profile's efficiency is 1: the measured rates already
//! are what the kernels reach), the overhead per layer absorbing each pass's fixed cost and
//! `overhead_per_request` each prefill's (HTTP, the server's request setup). The fit minimizes the root mean square of the relative
//! residuals; each point's residual is printed and the fit error goes into `[sources]`.
//! The fit itself is pure ([`fit`]); the measuring is async.

use crate::clock::Clock;
use crate::compute::model::Model;
use crate::compute::openai::{Config, OpenAi};
use crate::compute::{Cost, DeviceProfile, Efficiency, Engine, Event, Job, Stage};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// One measured pass.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Point {
    /// A prefill of `tokens` positions took `time`.
    Prefill { tokens: u32, time: Duration },
    /// A decode step of `batch` requests at context `context` took `time`.
    Decode {
        batch: u32,
        context: u32,
        time: Duration,
    },
}

impl Point {
    pub fn time(&self) -> Duration {
        match *self {
            Point::Prefill { time, .. } | Point::Decode { time, .. } => time,
        }
    }

    pub fn label(&self) -> String {
        match *self {
            Point::Prefill { tokens, .. } => format!("prefill {tokens} tokens"),
            Point::Decode { batch, context, .. } => {
                format!("decode batch {batch} context {context}")
            }
        }
    }
}

/// The fitted figures.
#[derive(Clone, Debug, PartialEq)]
pub struct Fit {
    /// Effective FLOP/s.
    pub flops: f64,
    /// Effective bytes/s.
    pub bandwidth: f64,
    pub overhead_per_layer: Duration,
    /// A fixed cost of each prefill (the request's HTTP and setup).
    pub overhead_per_request: Duration,
    /// Each point's (predicted - measured) / measured, in the points' order.
    pub residuals: Vec<f64>,
    /// Root mean square of the residuals.
    pub rms: f64,
}

impl Fit {
    /// The profile these figures make, named `name`, with `memory` bytes of memory.
    pub fn device(&self, name: &str, memory: f64) -> DeviceProfile {
        DeviceProfile {
            name: name.into(),
            flops: crate::units::FlopRate::new(self.flops),
            mem_bandwidth: crate::units::ByteRate::new(self.bandwidth),
            efficiency: Efficiency::new(1.0, 1.0),
            overhead_per_layer: crate::units::Dur(self.overhead_per_layer),
            overhead_per_request: crate::units::Dur(self.overhead_per_request),
            memory: crate::units::Bytes::new(memory),
            ..DeviceProfile::ideal()
        }
    }

    pub fn max_residual(&self) -> f64 {
        self.residuals.iter().fold(0.0, |m, r| m.max(r.abs()))
    }
}

/// What the profile predicts for a point's pass.
pub fn predict(device: &DeviceProfile, model: &Model, point: &Point) -> Duration {
    let stage = Stage {
        device: device.clone(),
        model: model.clone(),
        layers: model.layers,
        head: true,
    };
    match *point {
        Point::Prefill { tokens, .. } => stage.prefill(tokens),
        Point::Decode { batch, context, .. } => {
            stage.decode_batch(&vec![context; batch.max(1) as usize])
        }
    }
}

/// Fits F, B and the per-layer overhead to the points. `None` with fewer than 3 points.
pub fn fit(model: &Model, points: &[Point]) -> Option<Fit> {
    if points.len() < 3 {
        return None;
    }
    let layers = model.layers.max(1) as f64;
    // The roofline's compute and memory parts for each point, at F = B = 1.
    let unit = DeviceProfile {
        overhead_per_layer: crate::units::Dur(Duration::ZERO),
        ..Fit {
            flops: 1.0,
            bandwidth: 1.0,
            overhead_per_layer: Duration::ZERO,
            overhead_per_request: Duration::ZERO,
            residuals: Vec::new(),
            rms: 0.0,
        }
        .device("unit", 1.0)
    };
    let stage = Stage {
        device: unit,
        model: model.clone(),
        layers: model.layers,
        head: true,
    };
    // (dense work, attention's, measured seconds, whether a prefill) of each point: the
    // model adds the two rooflines (roofline.rs, `Stage::time`).
    let parts: Vec<(Cost, Cost, f64, bool)> = points
        .iter()
        .map(|p| {
            let (w, prefill) = match *p {
                Point::Prefill { tokens, .. } => (stage.prefill_work(tokens), true),
                Point::Decode { batch, context, .. } => (
                    stage.decode_work(&vec![context; batch.max(1) as usize]),
                    false,
                ),
            };
            (
                w.dense(),
                w.attention,
                p.time().as_secs_f64().max(1e-9),
                prefill,
            )
        })
        .collect();
    // For given F and B, the best overheads in closed form (weighted least squares of the
    // relative residuals): `a` on every pass (layers x overhead_per_layer), `c` on each
    // prefill (overhead_per_request), both at least 0; then the error.
    let score = |lf: f64, lb: f64| -> (f64, f64, f64) {
        let (f, b) = (10f64.powf(lf), 10f64.powf(lb));
        let pred: Vec<f64> = parts
            .iter()
            .map(|(d, a, _, _)| (d.flops / f).max(d.bytes / b) + (a.flops / f).max(a.bytes / b))
            .collect();
        let (mut s_all, mut s_pf, mut r_all, mut r_pf) = (0.0, 0.0, 0.0, 0.0);
        for (p, &(_, _, t, pf)) in pred.iter().zip(&parts) {
            let w = 1.0 / (t * t);
            s_all += w;
            r_all += w * (t - p);
            if pf {
                s_pf += w;
                r_pf += w * (t - p);
            }
        }
        let (mut a, mut c) = if s_all - s_pf > 0.0 && s_pf > 0.0 {
            let a = (r_all - r_pf) / (s_all - s_pf);
            (a, r_pf / s_pf - a)
        } else {
            (r_all / s_all, 0.0)
        };
        if a < 0.0 {
            a = 0.0;
            c = if s_pf > 0.0 {
                (r_pf / s_pf).max(0.0)
            } else {
                0.0
            };
        }
        if c < 0.0 {
            c = 0.0;
            a = (r_all / s_all).max(0.0);
        }
        let err: f64 = pred
            .iter()
            .zip(&parts)
            .map(|(p, &(_, _, t, pf))| ((p + a + if pf { c } else { 0.0 } - t) / t).powi(2))
            .sum();
        (err, a, c)
    };
    // A coarse grid over 4 to 18 decades, then finer ones around the best.
    let (mut best, mut step) = ((12.0, 11.0), 0.25);
    let (mut lo_f, mut hi_f, mut lo_b, mut hi_b) = (4.0, 18.0, 4.0, 16.0);
    for _ in 0..4 {
        let mut best_err = f64::INFINITY;
        let mut lf = lo_f;
        while lf <= hi_f {
            let mut lb = lo_b;
            while lb <= hi_b {
                let (e, _, _) = score(lf, lb);
                if e < best_err {
                    best_err = e;
                    best = (lf, lb);
                }
                lb += step;
            }
            lf += step;
        }
        (lo_f, hi_f, lo_b, hi_b) = (best.0 - step, best.0 + step, best.1 - step, best.1 + step);
        step /= 10.0;
    }
    let (_, o, c) = score(best.0, best.1);
    let mut f = Fit {
        flops: 10f64.powf(best.0),
        bandwidth: 10f64.powf(best.1),
        overhead_per_layer: Duration::from_secs_f64(o / layers),
        overhead_per_request: Duration::from_secs_f64(c),
        residuals: Vec::new(),
        rms: 0.0,
    };
    let device = f.device("fit", f64::INFINITY);
    f.residuals = points
        .iter()
        .map(|p| {
            let t = p.time().as_secs_f64();
            (predict(&device, model, p).as_secs_f64() - t) / t
        })
        .collect();
    f.rms = (f.residuals.iter().map(|r| r * r).sum::<f64>() / points.len() as f64).sqrt();
    Some(f)
}

/// Runs requests on a real engine for calibration.
pub struct Probe {
    engine: OpenAi,
    clock: Clock,
}

impl Probe {
    /// An engine for `config` with room for `batch` requests at once. Needs a tokio runtime.
    pub fn new(config: Config, batch: u32) -> anyhow::Result<Self> {
        let clock = Clock::real()?;
        let engine = OpenAi::new(
            config,
            batch.max(1),
            clock.clone(),
            CancellationToken::new(),
        )
        .map_err(|e| anyhow::anyhow!(e))?;
        Ok(Probe { engine, clock })
    }

    /// Sends `batch` requests of `prompt` tokens for `output` tokens at once; returns each
    /// one's token arrival times from its send.
    pub async fn requests(
        &self,
        batch: u32,
        prompt: u32,
        output: u32,
    ) -> anyhow::Result<Vec<Vec<Duration>>> {
        let start = self.clock.now();
        let mut rxs = Vec::new();
        for _ in 0..batch.max(1) {
            let (events, rx) = mpsc::unbounded_channel();
            self.engine
                .submit(Job {
                    prompt,
                    output,
                    arrived: start,
                    events,
                })
                .map_err(|e| anyhow::anyhow!(e))?;
            rxs.push(rx);
        }
        // Every request's events are read as they come (a request read after another would
        // see its tokens stamped when it is read), each token at its arrival less its lead.
        let clock = &self.clock;
        let each = rxs.into_iter().map(|mut rx| async move {
            let mut tokens = Vec::new();
            loop {
                match rx.recv().await {
                    Some(Event::Token { lead, .. }) => {
                        tokens.push(crate::harness::client::stamp(&tokens, clock.now(), lead));
                    }
                    Some(Event::Done { .. }) => break,
                    Some(Event::Failed { reason }) => anyhow::bail!("{reason}"),
                    None => anyhow::bail!("the engine stopped"),
                }
            }
            Ok(tokens
                .iter()
                .map(|t| t.saturating_duration_since(start))
                .collect())
        });
        futures_util::future::try_join_all(each).await
    }

    /// One measurement of the prefill of `tokens` positions: the time to the first token of
    /// a request for one token, alone.
    pub async fn prefill_once(&self, tokens: u32) -> anyhow::Result<Duration> {
        let r = self.requests(1, tokens, 1).await?;
        Ok(r[0][0])
    }

    /// One measurement of the decode step of `batch` requests at `context`: the median over
    /// the requests of (last token - first token) / (steps - 1).
    pub async fn decode_once(
        &self,
        batch: u32,
        context: u32,
        steps: u32,
    ) -> anyhow::Result<Duration> {
        let mut times = Vec::new();
        for t in self.requests(batch, context, steps.max(2)).await? {
            if let (Some(a), Some(b)) = (t.first(), t.last()) {
                times.push((*b - *a) / (t.len() as u32 - 1).max(1));
            }
        }
        Ok(median(times))
    }

    /// One measurement of `spec`.
    pub async fn once(&self, spec: Spec, steps: u32) -> anyhow::Result<Duration> {
        match spec {
            Spec::Prefill { tokens } => self.prefill_once(tokens).await,
            Spec::Decode { batch, context } => self.decode_once(batch, context, steps).await,
        }
    }

    /// The prefill of `tokens` positions: the fastest of `repeats` measurements, one after
    /// another (other load on the machine only ever adds time).
    pub async fn prefill(&self, tokens: u32, repeats: u32) -> anyhow::Result<Point> {
        let mut times = Vec::new();
        for _ in 0..repeats.max(1) {
            times.push(self.prefill_once(tokens).await?);
        }
        Ok(Spec::Prefill { tokens }.point(fastest(times)))
    }

    /// The decode step of `batch` requests at `context`: the fastest of `repeats`
    /// measurements ([`Self::decode_once`]), one after another.
    pub async fn decode(
        &self,
        batch: u32,
        context: u32,
        steps: u32,
        repeats: u32,
    ) -> anyhow::Result<Point> {
        let mut times = Vec::new();
        for _ in 0..repeats.max(1) {
            times.push(self.decode_once(batch, context, steps).await?);
        }
        Ok(Spec::Decode { batch, context }.point(fastest(times)))
    }
}

/// A point to measure, before it is measured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Spec {
    Prefill { tokens: u32 },
    Decode { batch: u32, context: u32 },
}

impl Spec {
    /// The point this measurement makes.
    pub fn point(self, time: Duration) -> Point {
        match self {
            Spec::Prefill { tokens } => Point::Prefill { tokens, time },
            Spec::Decode { batch, context } => Point::Decode {
                batch,
                context,
                time,
            },
        }
    }

    pub fn label(self) -> String {
        self.point(Duration::ZERO).label()
    }
}

fn fastest(v: Vec<Duration>) -> Duration {
    v.into_iter().min().unwrap_or_default()
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

/// Today's date (UTC) as YYYY-MM-DD.
pub fn today() -> String {
    let days = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() / 86_400)
        .unwrap_or(0) as i64;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

/// What the profile's `[sources]` say about where it came from.
pub struct Provenance<'a> {
    pub engine: &'a str,
    pub model: &'a str,
    pub shape: &'a str,
    pub date: &'a str,
    pub points: usize,
    /// The held-out points and the profile's error on each.
    pub held_out: &'a [(Point, f64)],
}

/// The profile file's text.
pub fn profile_toml(name: &str, memory: f64, fit: &Fit, p: &Provenance) -> String {
    // TOML strings, quoted and escaped.
    let q = |s: &str| toml::Value::String(s.to_string()).to_string();
    let fitted = q(&format!(
        "calibrated by inferlat calibrate against {} (model {}, shape {}) on {}: fitted to {} points, fit error {:.1}% RMS, {:.1}% at most",
        p.engine,
        p.model,
        p.shape,
        p.date,
        p.points,
        fit.rms * 100.0,
        fit.max_residual() * 100.0
    ));
    let mut t = String::new();
    t.push_str("# Device profile calibrated from a real engine by `inferlat calibrate`.\n");
    t.push_str(
        "# flops and mem_bandwidth are the effective rates the engine reached (efficiency 1);\n",
    );
    t.push_str(
        "# overhead_per_layer is each pass's fixed cost over the layers, overhead_per_request\n",
    );
    t.push_str("# each prefill's (HTTP and the server's own setup).\n");
    t.push_str(&format!("name = {}\n", q(name)));
    t.push_str(&format!(
        "description = {}\n",
        q(&format!("calibrated: {} on {}", p.model, p.engine))
    ));
    t.push_str(&format!("memory = \"{:.3}GB\"\n", memory / 1e9));
    t.push_str(&format!("flops = \"{:.6}GFLOP/s\"\n", fit.flops / 1e9));
    t.push_str(&format!(
        "mem_bandwidth = \"{:.6}GB/s\"\n",
        fit.bandwidth / 1e9
    ));
    t.push_str("efficiency = { compute = 1.0, memory = 1.0 }\n");
    t.push_str(&format!(
        "overhead_per_layer = \"{:.6}ms\"\n",
        fit.overhead_per_layer.as_secs_f64() * 1e3
    ));
    t.push_str(&format!(
        "overhead_per_request = \"{:.6}ms\"\n",
        fit.overhead_per_request.as_secs_f64() * 1e3
    ));
    t.push_str("\n[sources]\n");
    t.push_str("memory = \"given to inferlat calibrate (--memory), not measured\"\n");
    for k in [
        "flops",
        "mem_bandwidth",
        "overhead_per_layer",
        "overhead_per_request",
    ] {
        t.push_str(&format!("{k} = {fitted}\n"));
    }
    t.push_str("efficiency = \"1: the fitted rates are already effective\"\n");
    t.push_str(&format!("engine = {}\n", q(p.engine)));
    t.push_str(&format!("model = {}\n", q(p.model)));
    t.push_str(&format!("date = {}\n", q(p.date)));
    t.push_str(&format!(
        "fit_error = \"{:.2}% RMS of the relative residuals, {:.2}% at most, over {} points\"\n",
        fit.rms * 100.0,
        fit.max_residual() * 100.0,
        p.points
    ));
    if !p.held_out.is_empty() {
        let each: Vec<String> = p
            .held_out
            .iter()
            .map(|(pt, e)| format!("{} {:+.1}%", pt.label(), e * 100.0))
            .collect();
        let worst = p.held_out.iter().fold(0.0f64, |m, (_, e)| m.max(e.abs()));
        t.push_str(&format!(
            "held_out = {}\n",
            q(&format!(
                "predicted error on points measured with the others but not fitted: {}; {:.1}% at most",
                each.join(", "),
                worst * 100.0
            ))
        ));
    }
    t
}

/// What `inferlat calibrate` was asked to do.
pub struct Options {
    pub config: Config,
    pub model: Model,
    /// The model's shape as given (a preset name or a file).
    pub shape: String,
    pub prompts: Vec<u32>,
    pub batches: Vec<u32>,
    pub contexts: Vec<u32>,
    /// Points measured like the others but kept out of the fit: the profile's prediction of
    /// each is printed against its measurement and recorded in `[sources]`.
    pub held_out: Vec<Spec>,
    /// Output tokens of each decode request.
    pub steps: u32,
    pub repeats: u32,
    /// The profile's name.
    pub name: String,
    pub memory: f64,
    pub out: std::path::PathBuf,
}

/// What a calibration measured and fitted.
#[derive(Clone, Debug)]
pub struct Calibration {
    pub fit: Fit,
    /// The fitted points, in the fit's order.
    pub points: Vec<Point>,
    /// Each held-out point with the written profile's (predicted - measured) / measured.
    pub held_out: Vec<(Point, f64)>,
}

/// A point being measured: the fastest measurement so far.
struct Slot {
    spec: Spec,
    held_out: bool,
    best: Option<Duration>,
    /// Past the server's limit: no longer measured.
    dropped: bool,
}

/// The points to measure, in the order each round measures them: prefills by length (so
/// the first length the server refuses marks its limit), then decode steps.
fn slots(o: &Options) -> Vec<Slot> {
    let mut prefills: Vec<(u32, bool)> = o.prompts.iter().map(|&n| (n, false)).collect();
    for h in &o.held_out {
        if let Spec::Prefill { tokens } = *h {
            prefills.push((tokens, true));
        }
    }
    prefills.sort_by_key(|&(n, _)| n);
    let mut specs: Vec<(Spec, bool)> = prefills
        .into_iter()
        .map(|(tokens, h)| (Spec::Prefill { tokens }, h))
        .collect();
    for &batch in &o.batches {
        for &context in &o.contexts {
            specs.push((Spec::Decode { batch, context }, false));
        }
    }
    for h in &o.held_out {
        if let Spec::Decode { .. } = *h {
            specs.push((*h, true));
        }
    }
    specs
        .into_iter()
        .map(|(spec, held_out)| Slot {
            spec,
            held_out,
            best: None,
            dropped: false,
        })
        .collect()
}

/// Measures every point (printing progress as it goes), fits, prints the residuals and the
/// held-out points' errors, and writes the profile. The points are measured in rounds: each
/// round measures every point once, and each point keeps its fastest. Interleaved so, a
/// slow stretch of the machine (other load, a frequency change) falls on every point alike
/// instead of on the few measured during it, which would bend the fitted line. Cancelling
/// stops measuring and fits what was measured so far.
pub async fn calibrate(o: &Options, cancel: &CancellationToken) -> anyhow::Result<Calibration> {
    use anyhow::Context as _;
    crate::compute::openai::probe(&o.config)
        .await
        .map_err(|e| anyhow::anyhow!(e))?;
    let mut slots = slots(o);
    let max_batch = slots
        .iter()
        .map(|s| match s.spec {
            Spec::Decode { batch, .. } => batch,
            Spec::Prefill { .. } => 1,
        })
        .max()
        .unwrap_or(1);
    let probe = Probe::new(o.config.clone(), max_batch)?;
    let total = slots.len();
    let repeats = o.repeats.max(1);
    // Warm the server up (weights paged in, first-request setup), not measured.
    let _ = probe.requests(1, 16, 2).await;
    'rounds: for round in 1..=repeats {
        let mut k = 0usize;
        for i in 0..slots.len() {
            k += 1;
            if slots[i].dropped {
                continue;
            }
            if cancel.is_cancelled() {
                break 'rounds;
            }
            let spec = slots[i].spec;
            let r = tokio::select! {
                r = probe.once(spec, o.steps) => r,
                _ = cancel.cancelled() => break 'rounds,
            };
            match r {
                Ok(t) => {
                    let best = slots[i].best.map_or(t, |b| b.min(t));
                    slots[i].best = Some(best);
                    if round == 1 {
                        let held = if slots[i].held_out { " (held out)" } else { "" };
                        eprintln!(
                            "[{k}/{total}] {}{held}: {:.3} ms",
                            spec.label(),
                            t.as_secs_f64() * 1e3
                        );
                    }
                }
                // A server that refuses a longer prompt than one it served has reached its
                // limit: that length and longer ones, and decode steps past it, are dropped.
                Err(e)
                    if matches!(spec, Spec::Prefill { .. })
                        && slots.iter().any(|s| s.best.is_some()) =>
                {
                    let Spec::Prefill { tokens: limit } = spec else {
                        unreachable!()
                    };
                    eprintln!(
                        "[{k}/{total}] {}: {e}: taking this as the server's limit",
                        spec.label()
                    );
                    for s in slots.iter_mut() {
                        let past = match s.spec {
                            Spec::Prefill { tokens } => tokens >= limit,
                            Spec::Decode { context, .. } => context + o.steps >= limit,
                        };
                        if past {
                            if s.spec != spec && round == 1 {
                                eprintln!("{}: past the server's limit, skipped", s.spec.label());
                            }
                            s.dropped = true;
                            s.best = None;
                        }
                    }
                }
                Err(e) => return Err(e).context(spec.label()),
            }
        }
        if round > 1 || repeats == 1 {
            eprintln!(
                "[round {round}/{repeats}] every point measured {round} times, the fastest kept"
            );
        }
    }
    if cancel.is_cancelled() {
        eprintln!(
            "interrupted: fitting the {} points measured so far",
            slots
                .iter()
                .filter(|s| !s.held_out && s.best.is_some())
                .count()
        );
    }
    let measured = |held: bool| -> Vec<Point> {
        slots
            .iter()
            .filter(|s| s.held_out == held && !s.dropped)
            .filter_map(|s| s.best.map(|t| s.spec.point(t)))
            .collect()
    };
    let points = measured(false);
    let fit = fit(&o.model, &points).ok_or_else(|| {
        anyhow::anyhow!(
            "only {} points were measured: a fit needs at least 3",
            points.len()
        )
    })?;
    println!("point                                   measured   predicted   residual");
    let device = fit.device(&o.name, o.memory);
    // One row: the point, measured and predicted, and the relative error.
    let row = |p: &Point, err: f64| {
        println!(
            "{:<38} {:>9.3} ms {:>9.3} ms {:>+9.1}%",
            p.label(),
            p.time().as_secs_f64() * 1e3,
            predict(&device, &o.model, p).as_secs_f64() * 1e3,
            err * 100.0
        );
    };
    for (p, r) in points.iter().zip(&fit.residuals) {
        row(p, *r);
    }
    println!(
        "fit: flops {:.4} GFLOP/s, mem_bandwidth {:.4} GB/s, overhead_per_layer {:.4} ms, overhead_per_request {:.3} ms; error {:.1}% RMS, {:.1}% at most",
        fit.flops / 1e9,
        fit.bandwidth / 1e9,
        fit.overhead_per_layer.as_secs_f64() * 1e3,
        fit.overhead_per_request.as_secs_f64() * 1e3,
        fit.rms * 100.0,
        fit.max_residual() * 100.0
    );
    let held_out: Vec<(Point, f64)> = measured(true)
        .into_iter()
        .map(|p| {
            let t = p.time().as_secs_f64();
            (p, (predict(&device, &o.model, &p).as_secs_f64() - t) / t)
        })
        .collect();
    if !held_out.is_empty() {
        println!("held out (not fitted)                   measured   predicted      error");
        for (p, e) in &held_out {
            row(p, *e);
        }
    }
    let date = today();
    let text = profile_toml(
        &o.name,
        o.memory,
        &fit,
        &Provenance {
            engine: &o.config.url,
            model: &o.config.model,
            shape: &o.shape,
            date: &date,
            points: points.len(),
            held_out: &held_out,
        },
    );
    write_atomic(&o.out, &text).with_context(|| format!("writing {}", o.out.display()))?;
    println!("wrote {}", o.out.display());
    Ok(Calibration {
        fit,
        points,
        held_out,
    })
}

fn write_atomic(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("toml.tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)
}

/// A model shape from a TOML file holding the fields of a scenario's `[model]` table
/// (`layers`, `hidden`, `params`, `kv_dim`, `vocab`, `weight_bytes`, ...; all but
/// `activation_bytes` and `tied_embeddings` required).
pub fn shape_file(path: &std::path::Path) -> anyhow::Result<Model> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Shape {
        layers: u32,
        hidden: u32,
        params: f64,
        kv_dim: u32,
        vocab: u32,
        weight_bytes: f64,
        #[serde(default)]
        activation_bytes: Option<f64>,
        #[serde(default)]
        tied_embeddings: bool,
    }
    let text =
        std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let s: Shape = toml::from_str(&text)
        .map_err(|e| anyhow::anyhow!("{}: {}", path.display(), e.message()))?;
    if s.layers == 0 || s.hidden == 0 || s.params <= 0.0 || s.weight_bytes <= 0.0 {
        anyhow::bail!(
            "{}: layers, hidden, params and weight_bytes must be greater than zero",
            path.display()
        );
    }
    let mut m = Model {
        name: "custom".into(),
        layers: s.layers,
        hidden: s.hidden,
        params: s.params,
        kv_dim: s.kv_dim,
        q_dim: s.hidden,
        ffn: 0,
        vocab: s.vocab,
        weight_bytes: s.weight_bytes,
        activation_bytes: s.activation_bytes.unwrap_or(2.0),
        tied_embeddings: s.tied_embeddings,
    };
    m.ffn = m.estimated_ffn();
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compute::model::Preset;

    #[test]
    fn the_fit_recovers_the_figures_that_made_the_points() {
        let model = Preset::find("llama-2-7b").unwrap().model();
        let truth = Fit {
            flops: 2.0e14,
            bandwidth: 1.5e12,
            overhead_per_layer: Duration::from_micros(40),
            overhead_per_request: Duration::from_millis(3),
            residuals: Vec::new(),
            rms: 0.0,
        }
        .device("truth", 80e9);
        let mut points = Vec::new();
        for n in [16, 64, 256, 1024, 2048] {
            let p = Point::Prefill {
                tokens: n,
                time: Duration::ZERO,
            };
            points.push(Point::Prefill {
                tokens: n,
                time: predict(&truth, &model, &p),
            });
        }
        for (b, c) in [(1, 128), (4, 512), (16, 1024)] {
            let p = Point::Decode {
                batch: b,
                context: c,
                time: Duration::ZERO,
            };
            points.push(Point::Decode {
                batch: b,
                context: c,
                time: predict(&truth, &model, &p),
            });
        }
        let f = fit(&model, &points).unwrap();
        assert!(f.rms < 0.01, "rms {}", f.rms);
        assert!((f.flops / 2.0e14 - 1.0).abs() < 0.05, "{}", f.flops);
        assert!((f.bandwidth / 1.5e12 - 1.0).abs() < 0.05, "{}", f.bandwidth);
        assert!(fit(&model, &points[..2]).is_none());
    }

    #[test]
    fn a_calibrated_profile_parses_and_names_its_sources() {
        let f = Fit {
            flops: 3.2e11,
            bandwidth: 9.1e9,
            overhead_per_layer: Duration::from_micros(120),
            overhead_per_request: Duration::from_millis(7),
            residuals: vec![0.01, -0.03],
            rms: 0.02,
        };
        let text = profile_toml(
            "cpu-tiny",
            1e9,
            &f,
            &Provenance {
                engine: "http://127.0.0.1:8000/v1",
                model: "tiny",
                shape: "custom",
                date: "2026-12-02",
                points: 2,
                held_out: &[(
                    Point::Prefill {
                        tokens: 48,
                        time: Duration::from_millis(40),
                    },
                    -0.062,
                )],
            },
        );
        let p: DeviceProfile = toml::from_str(&text).unwrap();
        assert!(p.check().is_empty(), "{:?}", p.check());
        assert!((p.flops.get() / 3.2e11 - 1.0).abs() < 1e-6);
        assert!((p.mem_bandwidth.get() / 9.1e9 - 1.0).abs() < 1e-6);
        for k in ["engine", "model", "date", "fit_error", "flops"] {
            assert!(p.sources.contains_key(k), "{k}");
        }
        assert!(p.sources["fit_error"].contains("2.00% RMS"));
        assert!(
            p.sources["held_out"].contains("prefill 48 tokens -6.2%"),
            "{}",
            p.sources["held_out"]
        );
    }

    fn options(prompts: &[u32], held_out: &[Spec]) -> Options {
        Options {
            config: Config {
                url: "http://127.0.0.1:1/v1".into(),
                model: "m".into(),
                api: crate::compute::openai::Api::Completions,
                api_key_env: None,
                ignore_eos: true,
                usage: crate::compute::openai::UsageMode::Final,
                connections: None,
                timeout: Duration::from_secs(1),
                body: serde_json::Map::new(),
            },
            model: Preset::find("llama-2-7b").unwrap().model(),
            shape: "llama-2-7b".into(),
            prompts: prompts.to_vec(),
            batches: vec![1, 4],
            contexts: vec![32],
            held_out: held_out.to_vec(),
            steps: 8,
            repeats: 2,
            name: "x".into(),
            memory: 1e9,
            out: "x.toml".into(),
        }
    }

    #[test]
    fn each_round_measures_prefills_by_length_then_decode_steps_with_the_held_out_among_them() {
        let o = options(
            &[16, 64, 256],
            &[
                Spec::Prefill { tokens: 48 },
                Spec::Decode {
                    batch: 2,
                    context: 64,
                },
            ],
        );
        let order: Vec<(String, bool)> = slots(&o)
            .iter()
            .map(|s| (s.spec.label(), s.held_out))
            .collect();
        let want: Vec<(String, bool)> = [
            ("prefill 16 tokens", false),
            ("prefill 48 tokens", true),
            ("prefill 64 tokens", false),
            ("prefill 256 tokens", false),
            ("decode batch 1 context 32", false),
            ("decode batch 4 context 32", false),
            ("decode batch 2 context 64", true),
        ]
        .iter()
        .map(|&(l, h)| (l.to_string(), h))
        .collect();
        assert_eq!(order, want);
    }

    #[test]
    fn today_is_a_date() {
        let d = today();
        assert_eq!(d.len(), 10);
        assert!(d.starts_with("20"), "{d}");
    }
}

//! The load generator: open loop (scheduled in advance, timed from the scheduled start)
//! and closed loop, against a remote worker over QUIC or the local baseline.

use super::client::{Client, Timeline};
use super::{Phase as ProgressPhase, Progress};
use crate::clock::Clock;
use crate::compute::{Engine, Event, Job};
use crate::plan::schedule::{self, Phase, Shape, Shapes};
use crate::record::Sample;
use crate::scenario::{Arrival, Extent, Workload};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::{Mutex, mpsc, oneshot};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// Where requests go.
#[derive(Clone)]
pub enum Target {
    /// The topology's clients, each with its share of the workload.
    Remote {
        clients: Arc<Vec<(Arc<Client>, f64)>>,
    },
    /// The local-GPU baseline: its engine in this process, no network.
    Local { engine: Arc<dyn Engine> },
}

/// Picks a client for request `id` in proportion to the shares, the same way in every run.
fn pick(clients: &[(Arc<Client>, f64)], id: u64) -> &Arc<Client> {
    let total: f64 = clients.iter().map(|c| c.1).sum();
    // splitmix64 of the id: a uniform number in [0, 1).
    let mut z = id.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    let mut u = (z >> 11) as f64 / (1u64 << 53) as f64 * total;
    for (c, share) in clients {
        if u < *share {
            return c;
        }
        u -= share;
    }
    &clients[clients.len() - 1].0
}

impl Target {
    /// Sends one request and waits for its last token.
    pub async fn call(&self, id: u64, shape: Shape, clock: &Clock) -> Result<Timeline, String> {
        match self {
            Target::Remote { clients } => pick(clients, id).call(id, shape, clock).await,
            Target::Local { engine } => {
                let (events, mut rx) = mpsc::unbounded_channel();
                engine
                    .submit(Job {
                        prompt: shape.prompt,
                        output: shape.output,
                        arrived: clock.now(),
                        events,
                    })
                    .map_err(|e| e.to_string())?;
                let mut tokens = Vec::with_capacity(shape.output as usize);
                while let Some(e) = rx.recv().await {
                    match e {
                        Event::Token { lead, .. } => {
                            tokens.push(super::client::stamp(&tokens, clock.now(), lead))
                        }
                        Event::Done { queue, compute } => {
                            return Ok(Timeline {
                                tokens,
                                queue,
                                compute,
                                ..Timeline::default()
                            });
                        }
                        Event::Failed { reason } => return Err(reason),
                    }
                }
                Err("the baseline executor stopped".into())
            }
        }
    }
}

/// A request that has no answer within `timeout` (the drain timeout, which is at least four
/// times the floor of a long request) fails, so a stuck request can never stall a closed
/// loop.
async fn call(
    target: &Target,
    id: u64,
    shape: Shape,
    clock: &Clock,
    timeout: Duration,
    inflight: &InFlight,
) -> Result<Timeline, String> {
    let sent = clock.now();
    lock(inflight).insert(id, sent);
    let r = tokio::select! {
        biased;
        r = target.call(id, shape, clock) => r,
        _ = clock.sleep(timeout) => Err(format!(
            "no answer within {} (the drain timeout)",
            crate::scenario::units::format_duration(timeout)
        )),
    };
    lock(inflight).remove(&id);
    r.map_err(|e| target.blame(id, sent, clock.now(), e))
}

/// The requests of a phase still running, by id, with their send times.
pub type InFlight = Arc<std::sync::Mutex<std::collections::HashMap<u64, Instant>>>;

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Target {
    /// A failed request's error; a request a fault touched is lost to it, and its error
    /// says which.
    fn blame(&self, id: u64, sent: Instant, now: Instant, error: String) -> String {
        match self {
            Target::Remote { clients } => pick(clients, id).blame(sent, now, error),
            Target::Local { .. } => error,
        }
    }
}

/// The result of one phase.
pub struct PhaseResult {
    pub samples: Vec<Sample>,
    pub failures: Vec<String>,
    pub started: Instant,
    /// The last completion of a request of this phase.
    pub last_done: Option<Instant>,
    /// The measured window throughput counts over: the phase as scheduled (its duration,
    /// or up to where request N + 1 would have started for `requests = N` in an open
    /// loop), or for a closed loop with a number of requests, up to its last answer or
    /// failure; cut at the interruption when the phase was cancelled.
    pub window: Duration,
    /// Whether the phase was cut short by cancellation.
    pub interrupted: bool,
}

/// Settings shared by every phase of a run.
pub struct Driver {
    pub target: Target,
    pub clock: Clock,
    pub workload: Workload,
    pub seed: u64,
    pub progress: Arc<Progress>,
    pub cancel: CancellationToken,
    /// How long to wait for requests still running when a phase's schedule ends.
    pub drain: Duration,
    /// How long to wait for them after cancellation.
    pub grace: Duration,
    pub next_id: Arc<AtomicU64>,
    /// The requests still running, so those a drain cuts off can be blamed on a fault.
    pub inflight: InFlight,
}

/// How far ahead of its instant the open loop spawns a request's task on the real clock.
const SPAWN_LEAD: Duration = Duration::from_millis(1);

type Outcome = (Instant, Instant, Result<Timeline, String>);

fn sample(phase_started: Instant, scheduled: Instant, sent: Instant, t: Timeline) -> Sample {
    Sample {
        scheduled_at: scheduled.saturating_duration_since(phase_started),
        schedule_lag: sent.saturating_duration_since(scheduled),
        tokens: t
            .tokens
            .iter()
            .map(|&at| at.saturating_duration_since(scheduled))
            .collect(),
        queue: t.queue,
        compute: t.compute,
        software: t.software,
        nodes: t
            .nodes
            .iter()
            .map(|d| {
                (
                    d.node.clone(),
                    Duration::from_nanos(d.queue_ns),
                    Duration::from_nanos(d.compute_ns),
                    Duration::from_nanos(d.software_ns),
                )
            })
            .collect(),
        extra_copies: t.extra_copies,
        hedge_won: t.hedge_won,
        client: t.client,
    }
}

impl Driver {
    /// Runs one phase to its extent, then waits for its requests (up to the drain timeout).
    pub async fn run_phase(&self, phase: Phase, extent: Extent) -> PhaseResult {
        let label = match phase {
            Phase::Warmup => ProgressPhase::Warmup,
            Phase::Measure => ProgressPhase::Measure,
        };
        let started = self.clock.now();
        lock(&self.inflight).clear();
        self.progress.enter(label, extent, started);
        let (tx, mut rx) = mpsc::unbounded_channel::<Outcome>();
        let mut tasks = JoinSet::new();
        let issued = Arc::new(AtomicU64::new(0));
        let (done_tx, mut generated) = oneshot::channel::<()>();
        match self.workload.arrival {
            Arrival::Closed { concurrency } => self.closed_loop(
                phase,
                extent,
                concurrency,
                started,
                &mut tasks,
                tx,
                &issued,
                done_tx,
            ),
            _ => {
                self.open_loop(phase, extent, started, &mut tasks, tx, &issued)
                    .await;
                let _ = done_tx.send(());
            }
        }
        let mut result = PhaseResult {
            samples: Vec::new(),
            failures: Vec::new(),
            started,
            last_done: None,
            window: Duration::ZERO,
            interrupted: false,
        };
        let scheduled_end = schedule::window(&self.workload, extent, self.seed, phase);
        let mut last_outcome: Option<Instant> = None;
        let mut cancelled_at: Option<Instant> = None;
        let mut deadline: Option<Instant> = None;
        let mut generating = true;
        let mut received = 0u64;
        loop {
            if self.cancel.is_cancelled() {
                cancelled_at.get_or_insert(self.clock.now());
                let grace = self.clock.now() + self.grace;
                deadline = Some(deadline.map_or(grace, |d| d.min(grace)));
            }
            let until = deadline.unwrap_or(started);
            // Biased: a result that is ready counts before a deadline that is ready too, the
            // same way in every run (an unbiased select picks at random).
            let outcome = tokio::select! {
                biased;
                o = rx.recv() => o,
                _ = self.clock.sleep_until(until), if deadline.is_some() => break,
                _ = self.cancel.cancelled(), if !self.cancel.is_cancelled() => continue,
                _ = &mut generated, if generating => {
                    // Every request has been issued: wait at most the drain timeout for the rest.
                    generating = false;
                    self.progress.enter(ProgressPhase::Drain, extent, started);
                    deadline = Some(deadline.map_or(self.clock.now() + self.drain, |d| d.min(self.clock.now() + self.drain)));
                    continue;
                }
            };
            let Some((scheduled, sent, r)) = outcome else {
                break;
            };
            received += 1;
            last_outcome = Some(self.clock.now());
            match r {
                Ok(t) => {
                    result.last_done = result.last_done.max(t.tokens.last().copied());
                    result.samples.push(sample(started, scheduled, sent, t));
                }
                Err(e) => result.failures.push(e),
            }
        }
        tasks.abort_all();
        let unfinished = issued.load(Ordering::Relaxed).saturating_sub(received);
        let reason = if self.cancel.is_cancelled() {
            result.interrupted = true;
            "interrupted before it completed"
        } else {
            "still running when the drain timeout ran out"
        };
        // Those a fault touched are lost to it (the rest of the ids are from aborted tasks
        // that never sent).
        let now = self.clock.now();
        let mut blamed: Vec<String> = std::mem::take(&mut *lock(&self.inflight))
            .into_iter()
            .map(|(id, sent)| self.target.blame(id, sent, now, reason.to_string()))
            .collect();
        blamed.sort();
        blamed.resize(unfinished as usize, reason.to_string());
        result.failures.extend(blamed);
        self.progress.abandon(unfinished);
        let since = |t: Instant| t.saturating_duration_since(started);
        let mut window =
            scheduled_end.unwrap_or_else(|| last_outcome.map(since).unwrap_or_default());
        if let Some(c) = cancelled_at {
            window = window.min(since(c));
        }
        result.window = window;
        result
    }

    async fn open_loop(
        &self,
        phase: Phase,
        extent: Extent,
        started: Instant,
        tasks: &mut JoinSet<()>,
        tx: mpsc::UnboundedSender<Outcome>,
        issued: &AtomicU64,
    ) {
        // Generated as it runs: a phase's schedule is never held whole.
        let plan = schedule::open_loop(&self.workload, extent, self.seed, phase);
        if let Extent::Requests(n) = extent {
            self.progress.planned(n);
        }
        // On the real clock each request's task is spawned a little ahead and waits for its
        // own instant: a task spawned at the instant would first cross from this task (which
        // may run on the thread that blocks on the runtime) to a worker, 50-100 µs on a VM.
        let lead = match self.clock {
            Clock::Real(_) => SPAWN_LEAD,
            Clock::Virtual(_) => Duration::ZERO,
        };
        for p in plan {
            let scheduled = started + p.at;
            let spawn_at = scheduled.checked_sub(lead).unwrap_or(scheduled);
            tokio::select! {
                biased;
                _ = self.cancel.cancelled() => break,
                _ = self.clock.sleep_until(spawn_at) => {}
            }
            let (target, clock, progress, tx) = (
                self.target.clone(),
                self.clock.clone(),
                self.progress.clone(),
                tx.clone(),
            );
            let id = self.next_id.fetch_add(1, Ordering::Relaxed);
            issued.fetch_add(1, Ordering::Relaxed);
            progress.started();
            let shape = p.shape;
            let timeout = self.drain;
            let inflight = self.inflight.clone();
            tasks.spawn(async move {
                // At once on the virtual clock (no lead); on the real clock the last stretch
                // is waited out on the worker that will send.
                clock.sleep_until_precise(scheduled).await;
                let sent = clock.now();
                let r = call(&target, id, shape, &clock, timeout, &inflight).await;
                progress.finished(r.is_ok());
                let _ = tx.send((scheduled, sent, r));
            });
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn closed_loop(
        &self,
        phase: Phase,
        extent: Extent,
        concurrency: u32,
        started: Instant,
        tasks: &mut JoinSet<()>,
        tx: mpsc::UnboundedSender<Outcome>,
        issued: &Arc<AtomicU64>,
        done: oneshot::Sender<()>,
    ) {
        let shapes = Arc::new(Mutex::new(Shapes::new(&self.workload, self.seed, phase)));
        let done = Arc::new(std::sync::Mutex::new(Some(done)));
        let signal = move |done: &std::sync::Mutex<Option<oneshot::Sender<()>>>| {
            if let Some(d) = done.lock().unwrap_or_else(|e| e.into_inner()).take() {
                let _ = d.send(());
            }
        };
        let end = match extent {
            Extent::Duration(d) => {
                let (clock, done) = (self.clock.clone(), done.clone());
                tasks.spawn(async move {
                    clock.sleep_until(started + d).await;
                    signal(&done);
                });
                Some(started + d)
            }
            Extent::Requests(n) => {
                self.progress.planned(n);
                None
            }
        };
        let timeout = self.drain;
        for _ in 0..concurrency {
            let (target, clock, progress, cancel) = (
                self.target.clone(),
                self.clock.clone(),
                self.progress.clone(),
                self.cancel.clone(),
            );
            let inflight = self.inflight.clone();
            let (shapes, issued, tx, next_id, done) = (
                shapes.clone(),
                issued.clone(),
                tx.clone(),
                self.next_id.clone(),
                done.clone(),
            );
            tasks.spawn(async move {
                loop {
                    if cancel.is_cancelled() || end.is_some_and(|e| clock.now() >= e) {
                        break;
                    }
                    let k = issued.fetch_add(1, Ordering::Relaxed);
                    if let Extent::Requests(n) = extent {
                        if k >= n {
                            issued.fetch_sub(1, Ordering::Relaxed);
                            break;
                        }
                        if k + 1 == n {
                            signal(&done);
                        }
                    }
                    let shape = shapes.lock().await.next_shape();
                    let id = next_id.fetch_add(1, Ordering::Relaxed);
                    progress.started();
                    let sent = clock.now();
                    let r = call(&target, id, shape, &clock, timeout, &inflight).await;
                    progress.finished(r.is_ok());
                    if tx.send((sent, sent, r)).is_err() {
                        break;
                    }
                }
            });
        }
    }
}

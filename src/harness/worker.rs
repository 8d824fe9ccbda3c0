//! The executor of a node that computes: it runs whole requests' prefill and decode steps,
//! and the steps of sessions that arrive over the network, batching decode steps
//! continuously as the compute model says. The QUIC side is `harness::node`.

use crate::clock::Clock;
use crate::compute::{Pass as Work, Stage};
use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

/// What the executor tells the requester.
#[derive(Debug)]
pub enum Event {
    /// Output token `index` is ready.
    Token { index: u32 },
    /// The request is complete: time it waited in the queue and time it was computed,
    /// both on this node's clock.
    Done { queue: Duration, compute: Duration },
}

/// One whole request for the executor: it runs the prefill and every decode step itself
/// (a worker holding the whole model, and the local baseline).
pub struct Job {
    pub prompt: u32,
    pub output: u32,
    pub arrived: Instant,
    pub events: mpsc::UnboundedSender<Event>,
}

/// One step of a session whose steps arrive from elsewhere (a pipeline stage, a tensor
/// group's member): the executor admits the session at its first step, batches its decode
/// steps with the others in flight, and releases it after its last step.
pub struct Step {
    pub session: u64,
    pub stage: Arc<Stage>,
    pub work: Work,
    /// The fraction of the stage's time this step takes (a tensor segment: 1 / segments).
    pub scale: f64,
    /// The session ends with this step.
    pub last: bool,
    pub arrived: Instant,
    pub done: oneshot::Sender<StepDone>,
}

/// When a step ran, on this node's clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct StepDone {
    pub queue: Duration,
    pub compute: Duration,
}

enum Msg {
    Job(Job),
    Step(Step),
    /// The session ended early (its stream closed): free its place.
    Release(u64),
}

/// Handle to a running executor.
#[derive(Clone)]
pub struct Executor {
    jobs: mpsc::UnboundedSender<Msg>,
}

/// A request the executor is decoding.
struct Running {
    job: Job,
    /// Tokens produced so far (the prefill produced the first).
    produced: u32,
    started: Instant,
    queue: Duration,
}

impl Executor {
    /// Starts an executor for `stage` with continuous batching up to `max_batch` requests:
    /// the decode steps of the requests in flight run together, each step taking what the
    /// compute model says for that batch; waiting requests are admitted in arrival order
    /// between steps, each with its prefill (vLLM's schedule without chunked prefill). With
    /// `max_batch` 1 it serves one request at a time, first come, first served.
    pub fn spawn(clock: Clock, stage: Stage, max_batch: u32, cancel: CancellationToken) -> Self {
        let (jobs, rx) = mpsc::unbounded_channel::<Msg>();
        let stage = Arc::new(stage);
        tokio::spawn(async move {
            tokio::select! {
                biased;
                _ = cancel.cancelled() => {}
                _ = schedule(&clock, &stage, max_batch.max(1) as usize, rx) => {}
            }
        });
        Executor { jobs }
    }

    /// Queues a request. Events arrive on `job.events`.
    pub fn submit(&self, job: Job) -> Result<(), &'static str> {
        self.jobs
            .send(Msg::Job(job))
            .map_err(|_| "the worker has stopped")
    }

    /// Runs one step of a session and says when it ran.
    pub async fn step(
        &self,
        clock: &Clock,
        session: u64,
        stage: &Arc<Stage>,
        work: Work,
        scale: f64,
        last: bool,
    ) -> Result<StepDone, &'static str> {
        let (done, rx) = oneshot::channel();
        self.jobs
            .send(Msg::Step(Step {
                session,
                stage: stage.clone(),
                work,
                scale,
                last,
                arrived: clock.now(),
                done,
            }))
            .map_err(|_| "the worker has stopped")?;
        rx.await.map_err(|_| "the worker has stopped")
    }

    /// Frees a session's place when it ends before its last step.
    pub fn release(&self, session: u64) {
        let _ = self.jobs.send(Msg::Release(session));
    }
}

/// Releases a session's place in the executor when dropped, unless its last step ran.
pub struct SessionGuard<'a> {
    pub executor: &'a Executor,
    pub session: u64,
}

impl Drop for SessionGuard<'_> {
    fn drop(&mut self) {
        self.executor.release(self.session);
    }
}

/// Work waiting to be admitted.
enum Waiting {
    Job(Job),
    Step(Step),
}

/// The executor's queues.
#[derive(Default)]
struct Queues {
    waiting: VecDeque<Waiting>,
    /// Sessions admitted (holding a place in the batch).
    admitted: HashSet<u64>,
    prefills: VecDeque<Step>,
    decodes: Vec<Step>,
}

impl Queues {
    fn take(&mut self, msg: Msg) {
        match msg {
            Msg::Job(j) => self.waiting.push_back(Waiting::Job(j)),
            Msg::Step(s) if !self.admitted.contains(&s.session) => {
                self.waiting.push_back(Waiting::Step(s))
            }
            Msg::Step(s) => match s.work {
                Work::Prefill { .. } => self.prefills.push_back(s),
                Work::Decode { .. } => self.decodes.push(s),
            },
            Msg::Release(id) => {
                self.admitted.remove(&id);
            }
        }
    }
}

fn run_time(stage: &Stage, work: Work, scale: f64) -> Duration {
    stage.pass(work).mul_f64(scale)
}

/// The scheduler loop. Deadlines are absolute (each step starts where the last one ended),
/// so timer error never accumulates over steps.
async fn schedule(
    clock: &Clock,
    stage: &Arc<Stage>,
    max_batch: usize,
    mut rx: mpsc::UnboundedReceiver<Msg>,
) {
    let mut q = Queues::default();
    let mut running: Vec<Running> = Vec::new();
    let mut t = clock.now();
    loop {
        while let Ok(msg) = rx.try_recv() {
            q.take(msg);
        }
        // Admit what fits: a whole request runs its prefill now, which yields its first
        // token; a session's first step joins the steps ready to run.
        while running.len() + q.admitted.len() < max_batch
            && let Some(w) = q.waiting.pop_front()
        {
            match w {
                Waiting::Step(s) => {
                    if s.done.is_closed() {
                        continue;
                    }
                    q.admitted.insert(s.session);
                    match s.work {
                        Work::Prefill { .. } => q.prefills.push_back(s),
                        Work::Decode { .. } => q.decodes.push(s),
                    }
                }
                Waiting::Job(job) => {
                    if job.events.is_closed() {
                        continue;
                    }
                    let started = t.max(job.arrived);
                    let queue = started.saturating_duration_since(job.arrived);
                    t = started + stage.prefill(job.prompt);
                    clock.sleep_until(t).await;
                    if job.events.send(Event::Token { index: 0 }).is_err() {
                        continue;
                    }
                    let r = Running {
                        job,
                        produced: 1,
                        started,
                        queue,
                    };
                    if r.produced >= r.job.output {
                        finish(clock, r);
                    } else {
                        running.push(r);
                    }
                }
            }
        }
        // A session's prefill runs alone, between decode steps.
        if let Some(s) = q.prefills.pop_front() {
            let started = t.max(s.arrived);
            t = started + run_time(&s.stage, s.work, s.scale);
            clock.sleep_until(t).await;
            if s.last {
                q.admitted.remove(&s.session);
            }
            let _ = s.done.send(StepDone {
                queue: started.saturating_duration_since(s.arrived),
                compute: t - started,
            });
            continue;
        }
        if running.is_empty() && q.decodes.is_empty() {
            // Nothing can run until something arrives.
            match rx.recv().await {
                Some(msg) => q.take(msg),
                None => return,
            }
            t = t.max(clock.now());
            continue;
        }
        // One decode step for the whole batch: the requests in flight and the sessions'
        // steps that are ready. Steps of another stage (or another fraction of one) run
        // as their own kernels in the same step.
        let steps = std::mem::take(&mut q.decodes);
        let started = steps.iter().map(|s| s.arrived).fold(t, Instant::max);
        let mut groups: Vec<(&Stage, f64, Vec<u32>)> = vec![(
            stage,
            1.0,
            running
                .iter()
                .map(|r| r.job.prompt.saturating_add(r.produced))
                .collect(),
        )];
        for s in &steps {
            let Work::Decode { context } = s.work else {
                continue;
            };
            match groups
                .iter_mut()
                .find(|g| std::ptr::eq(g.0, &*s.stage) && g.1 == s.scale)
            {
                Some(g) => g.2.push(context),
                None => groups.push((&s.stage, s.scale, vec![context])),
            }
        }
        let step: Duration = groups
            .iter()
            .filter(|g| !g.2.is_empty())
            .map(|(st, scale, ctx)| st.decode_batch(ctx).mul_f64(*scale))
            .sum();
        t = started + step;
        clock.sleep_until(t).await;
        for s in steps {
            if s.last {
                q.admitted.remove(&s.session);
            }
            let _ = s.done.send(StepDone {
                queue: started.saturating_duration_since(s.arrived),
                compute: step,
            });
        }
        let mut still = Vec::with_capacity(running.len());
        for mut r in running.drain(..) {
            if r.job
                .events
                .send(Event::Token { index: r.produced })
                .is_err()
            {
                continue;
            }
            r.produced += 1;
            if r.produced >= r.job.output {
                finish(clock, r);
            } else {
                still.push(r);
            }
        }
        running = still;
    }
}

fn finish(clock: &Clock, r: Running) {
    let compute = clock.now().saturating_duration_since(r.started);
    let _ = r.job.events.send(Event::Done {
        queue: r.queue,
        compute,
    });
}

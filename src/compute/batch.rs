//! Continuous batching as a sans-IO state machine, in the style of quinn-proto's
//! `Connection`: work is pushed in with [`Batcher::push`], [`Batcher::poll`] hands out what
//! to tell the requesters, [`Batcher::poll_timeout`] says when the step in progress ends,
//! and [`Batcher::handle_timeout`] is called once it has. Nothing here sleeps or reads a
//! clock; `harness::worker::Executor` is the async shell that waits for the deadlines.
//!
//! The schedule is vLLM's without chunked prefill:
//!
//! - Whole requests ([`Job`]s) and sessions' first steps wait in arrival order. Between
//!   steps, while fewer than `max_batch` requests and sessions are admitted, the next one
//!   is admitted: a job's queue time ends and its prefill runs at once (the running requests
//!   wait for it), yielding token 0; a session's first step joins the steps ready to run.
//! - A session's prefill step runs alone, between decode steps.
//! - Otherwise one decode step runs for every running job and every ready decode step of a
//!   session together: the jobs' contexts (`prompt + tokens so far`) take one batched
//!   roofline step of the executor's stage; sessions' steps of another stage (or another
//!   fraction of one) run as their own kernels in the same step. Each job gets its next
//!   token; a job with all its tokens leaves and reports its queue and compute time
//!   (compute: from its prefill's start to its last token, batching stalls included).
//! - Work pushed while a step runs is seen only when that step has ended and the batch is
//!   formed again; a job admitted during admission runs its prefill before anything else
//!   is looked at.
//!
//! Deadlines are absolute: each step starts where the last one ended (or when its work
//! arrived, if later), so a late wake-up never accumulates over a long answer.
//!
//! Whoever waits for a piece of work may leave (a hedge that lost drops its request): the
//! machine asks [`Waiter::gone`] before admitting work and before each token, and drops
//! work nobody waits for.

use super::roofline::{Pass, Stage};
use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Whoever waits for a piece of work.
pub trait Waiter {
    /// Nobody waits for this work any more: it can be dropped.
    fn gone(&self) -> bool;
}

impl<T> Waiter for tokio::sync::mpsc::UnboundedSender<T> {
    fn gone(&self) -> bool {
        self.is_closed()
    }
}

impl<T> Waiter for tokio::sync::oneshot::Sender<T> {
    fn gone(&self) -> bool {
        self.is_closed()
    }
}

/// A whole request: the batcher runs its prefill and every decode step.
#[derive(Debug)]
pub struct Job<J> {
    pub prompt: u32,
    pub output: u32,
    pub arrived: Instant,
    pub waiter: J,
}

/// One step of a session whose steps arrive from elsewhere.
#[derive(Debug)]
pub struct Step<S> {
    pub session: u64,
    pub stage: Arc<Stage>,
    pub pass: Pass,
    /// The fraction of the stage's time this step takes.
    pub scale: f64,
    /// The session ends with this step.
    pub last: bool,
    pub arrived: Instant,
    pub waiter: S,
}

/// What is pushed into the batcher.
#[derive(Debug)]
pub enum Input<J, S> {
    Job(Job<J>),
    Step(Step<S>),
    /// The session ended early: free its place.
    Release(u64),
}

/// What the batcher asks its shell to tell a requester, in order.
#[derive(Debug, PartialEq)]
pub enum Action<J, S> {
    /// Output token `index` of a job is ready.
    Token { job: J, index: u32 },
    /// A job is complete: its queue and compute time.
    Done {
        job: J,
        queue: Duration,
        compute: Duration,
    },
    /// A session's step ran.
    StepDone {
        step: S,
        queue: Duration,
        compute: Duration,
    },
}

/// A job being decoded.
#[derive(Debug)]
struct Running<J> {
    job: Job<J>,
    /// Tokens produced so far (the prefill produced the first).
    produced: u32,
    started: Instant,
    queue: Duration,
}

/// What runs until the current deadline.
#[derive(Debug)]
enum Busy<J, S> {
    /// A job's prefill, during admission.
    Prefill {
        job: Job<J>,
        started: Instant,
        queue: Duration,
    },
    /// A session's prefill step, alone.
    SessionPrefill { step: Step<S>, started: Instant },
    /// One decode step of the running jobs and the ready session steps.
    Decode {
        steps: Vec<Step<S>>,
        started: Instant,
        took: Duration,
    },
}

/// Where the machine is.
#[derive(Debug)]
enum Phase<J, S> {
    /// About to take what was pushed and form the next step.
    Top,
    /// Admitting waiting work (after a job's prefill, admission goes on without taking
    /// what was pushed meanwhile).
    Admit,
    /// A step runs until `until`.
    Busy { until: Instant, what: Busy<J, S> },
    /// Nothing can run until something is pushed.
    Idle,
}

/// Work waiting to be admitted.
#[derive(Debug)]
enum Waiting<J, S> {
    Job(Job<J>),
    Step(Step<S>),
}

/// The continuous-batching scheduler of one executor; see the module's documentation.
#[derive(Debug)]
pub struct Batcher<J, S> {
    /// The stage of the whole jobs.
    stage: Arc<Stage>,
    max_batch: usize,
    /// Where the last step ended: the earliest the next can start.
    t: Instant,
    phase: Phase<J, S>,
    /// Pushed, not yet seen by the scheduler.
    inbox: VecDeque<Input<J, S>>,
    waiting: VecDeque<Waiting<J, S>>,
    /// Sessions admitted (holding a place in the batch).
    admitted: HashSet<u64>,
    prefills: VecDeque<Step<S>>,
    decodes: Vec<Step<S>>,
    running: Vec<Running<J>>,
    out: VecDeque<Action<J, S>>,
}

impl<J: Waiter + Clone, S: Waiter> Batcher<J, S> {
    /// A batcher for jobs on `stage`, admitting up to `max_batch` jobs and sessions
    /// (at least one), starting at `now`.
    pub fn new(stage: Arc<Stage>, max_batch: u32, now: Instant) -> Self {
        Batcher {
            stage,
            max_batch: max_batch.max(1) as usize,
            t: now,
            phase: Phase::Top,
            inbox: VecDeque::new(),
            waiting: VecDeque::new(),
            admitted: HashSet::new(),
            prefills: VecDeque::new(),
            decodes: Vec::new(),
            running: Vec::new(),
            out: VecDeque::new(),
        }
    }

    /// Takes work (or a release) at `now`. It is seen when the next step is formed.
    pub fn push(&mut self, now: Instant, input: Input<J, S>) {
        if let Phase::Idle = self.phase {
            self.t = self.t.max(now);
            self.phase = Phase::Top;
        }
        self.inbox.push_back(input);
    }

    /// The next thing to tell a requester, once what can run now has been scheduled; `None`
    /// when the machine waits for [`Self::poll_timeout`] or for a push.
    pub fn poll(&mut self) -> Option<Action<J, S>> {
        loop {
            if let Some(a) = self.out.pop_front() {
                return Some(a);
            }
            match self.phase {
                Phase::Top => {
                    while let Some(input) = self.inbox.pop_front() {
                        self.take(input);
                    }
                    self.phase = Phase::Admit;
                }
                Phase::Admit => self.admit(),
                Phase::Busy { .. } | Phase::Idle => return None,
            }
        }
    }

    /// When the step in progress ends; `None` when nothing runs.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.phase {
            Phase::Busy { until, .. } => Some(until),
            _ => None,
        }
    }

    /// Ends the step in progress if its deadline has come by `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        let Phase::Busy { until, .. } = self.phase else {
            return;
        };
        if now < until {
            return;
        }
        let Phase::Busy { what, .. } = std::mem::replace(&mut self.phase, Phase::Top) else {
            unreachable!("matched above");
        };
        match what {
            Busy::Prefill {
                job,
                started,
                queue,
            } => {
                self.phase = Phase::Admit;
                if job.waiter.gone() {
                    return;
                }
                self.token(&job, 0);
                self.keep_or_finish(
                    Running {
                        job,
                        produced: 1,
                        started,
                        queue,
                    },
                    now,
                );
            }
            Busy::SessionPrefill { step, started } => {
                self.step_done(step, started, self.t - started)
            }
            Busy::Decode {
                steps,
                started,
                took,
            } => {
                for s in steps {
                    self.step_done(s, started, took);
                }
                for mut r in std::mem::take(&mut self.running) {
                    if r.job.waiter.gone() {
                        continue;
                    }
                    self.token(&r.job, r.produced);
                    r.produced += 1;
                    self.keep_or_finish(r, now);
                }
            }
        }
    }

    /// Jobs being decoded, sessions admitted and work waiting, for a look from outside.
    pub fn load(&self) -> (usize, usize, usize) {
        (self.running.len(), self.admitted.len(), self.waiting.len())
    }

    fn take(&mut self, input: Input<J, S>) {
        match input {
            Input::Job(j) => self.waiting.push_back(Waiting::Job(j)),
            Input::Step(s) if !self.admitted.contains(&s.session) => {
                self.waiting.push_back(Waiting::Step(s))
            }
            Input::Step(s) => self.ready(s),
            Input::Release(id) => {
                self.admitted.remove(&id);
            }
        }
    }

    /// A step of an admitted session joins the steps ready to run.
    fn ready(&mut self, s: Step<S>) {
        match s.pass {
            Pass::Prefill { .. } => self.prefills.push_back(s),
            Pass::Decode { .. } => self.decodes.push(s),
        }
    }

    /// Admits what fits (a job's prefill starts at once and ends this call), then forms
    /// the next step.
    fn admit(&mut self) {
        while self.running.len() + self.admitted.len() < self.max_batch
            && let Some(w) = self.waiting.pop_front()
        {
            match w {
                Waiting::Step(s) => {
                    if s.waiter.gone() {
                        continue;
                    }
                    self.admitted.insert(s.session);
                    self.ready(s);
                }
                Waiting::Job(job) => {
                    if job.waiter.gone() {
                        continue;
                    }
                    let started = self.t.max(job.arrived);
                    let queue = started.saturating_duration_since(job.arrived);
                    self.t = started + self.stage.prefill(job.prompt);
                    self.phase = Phase::Busy {
                        until: self.t,
                        what: Busy::Prefill {
                            job,
                            started,
                            queue,
                        },
                    };
                    return;
                }
            }
        }
        self.phase = self.next_step();
    }

    /// A session's prefill alone, else one decode step for the batch, else idle.
    fn next_step(&mut self) -> Phase<J, S> {
        if let Some(s) = self.prefills.pop_front() {
            let started = self.t.max(s.arrived);
            self.t = started + s.stage.pass(s.pass).mul_f64(s.scale);
            return Phase::Busy {
                until: self.t,
                what: Busy::SessionPrefill { step: s, started },
            };
        }
        if self.running.is_empty() && self.decodes.is_empty() {
            return Phase::Idle;
        }
        let steps = std::mem::take(&mut self.decodes);
        let started = steps.iter().map(|s| s.arrived).fold(self.t, Instant::max);
        let took = self.decode_time(&steps);
        self.t = started + took;
        Phase::Busy {
            until: self.t,
            what: Busy::Decode {
                steps,
                started,
                took,
            },
        }
    }

    /// One decode step's time: the running jobs' contexts as one batch of the stage, and
    /// the sessions' steps grouped by stage (the same `Arc`) and fraction, each group a
    /// batch of its own; the groups' times add up.
    fn decode_time(&self, steps: &[Step<S>]) -> Duration {
        let jobs: Vec<u32> = self
            .running
            .iter()
            .map(|r| r.job.prompt.saturating_add(r.produced))
            .collect();
        let mut groups: Vec<(&Arc<Stage>, f64, Vec<u32>)> = vec![(&self.stage, 1.0, jobs)];
        for s in steps {
            let Pass::Decode { context } = s.pass else {
                continue;
            };
            match groups
                .iter_mut()
                .find(|g| Arc::ptr_eq(g.0, &s.stage) && g.1 == s.scale)
            {
                Some(g) => g.2.push(context),
                None => groups.push((&s.stage, s.scale, vec![context])),
            }
        }
        groups
            .iter()
            .filter(|g| !g.2.is_empty())
            .map(|(st, scale, ctx)| st.decode_batch(ctx).mul_f64(*scale))
            .sum()
    }

    fn token(&mut self, job: &Job<J>, index: u32) {
        self.out.push_back(Action::Token {
            job: job.waiter.clone(),
            index,
        });
    }

    /// A job that has all its tokens reports; one that has not stays in the batch.
    fn keep_or_finish(&mut self, r: Running<J>, now: Instant) {
        if r.produced >= r.job.output {
            self.out.push_back(Action::Done {
                job: r.job.waiter,
                queue: r.queue,
                compute: now.saturating_duration_since(r.started),
            });
        } else {
            self.running.push(r);
        }
    }

    fn step_done(&mut self, s: Step<S>, started: Instant, compute: Duration) {
        if s.last {
            self.admitted.remove(&s.session);
        }
        self.out.push_back(Action::StepDone {
            step: s.waiter,
            queue: started.saturating_duration_since(s.arrived),
            compute,
        });
    }
}

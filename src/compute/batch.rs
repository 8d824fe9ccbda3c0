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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compute::device::{DeviceProfile, Efficiency};
    use crate::compute::model::Model;
    use crate::units::{ByteRate, Bytes, Dur, FlopRate};
    use std::cell::Cell;
    use std::rc::Rc;

    /// Whoever waits: a name, and whether they left.
    #[derive(Clone, Debug, PartialEq)]
    struct Tag {
        name: &'static str,
        gone: Rc<Cell<bool>>,
    }

    impl Waiter for Tag {
        fn gone(&self) -> bool {
            self.gone.get()
        }
    }

    fn tag(name: &'static str) -> Tag {
        Tag {
            name,
            gone: Rc::new(Cell::new(false)),
        }
    }

    /// A memory-bound toy device: a step takes 20 ms for the weights plus 20 µs per
    /// position of context or prompt.
    fn stage() -> Arc<Stage> {
        Arc::new(Stage {
            device: DeviceProfile {
                name: "toy".into(),
                description: None,
                memory: Bytes::new(1e12),
                flops: FlopRate::new(1e15),
                mem_bandwidth: ByteRate::new(1e9),
                efficiency: Efficiency::new(1.0, 1.0),
                overhead_per_layer: Dur(Duration::ZERO),
                overhead_per_request: Dur(Duration::ZERO),
                sources: Default::default(),
            },
            model: Model {
                name: "toy".into(),
                layers: 10,
                hidden: 1000,
                params: 10_200_000.0,
                kv_dim: 500,
                q_dim: 1000,
                ffn: 2000,
                vocab: 100,
                weight_bytes: 2.0,
                activation_bytes: 2.0,
                tied_embeddings: false,
            },
            layers: 10,
            head: false,
        })
    }

    type B = Batcher<Tag, Tag>;

    /// What the requesters were told, with the instant, as plain words.
    fn run(b: &mut B, now: &mut Instant, log: &mut Vec<(Duration, String)>, t0: Instant) {
        loop {
            while let Some(a) = b.poll() {
                let what = match a {
                    Action::Token { job, index } => format!("{} token {index}", job.name),
                    Action::Done { job, queue, .. } => {
                        format!("{} done, queued {:?}", job.name, queue)
                    }
                    Action::StepDone { step, queue, .. } => {
                        format!("{} step, queued {:?}", step.name, queue)
                    }
                };
                log.push((*now - t0, what));
            }
            match b.poll_timeout() {
                Some(at) => {
                    *now = at;
                    b.handle_timeout(at);
                }
                None => return,
            }
        }
    }

    fn job(name: &'static str, prompt: u32, output: u32, arrived: Instant) -> Input<Tag, Tag> {
        Input::Job(Job {
            prompt,
            output,
            arrived,
            waiter: tag(name),
        })
    }

    fn step(
        name: &'static str,
        session: u64,
        stage: &Arc<Stage>,
        pass: Pass,
        last: bool,
        arrived: Instant,
    ) -> Input<Tag, Tag> {
        Input::Step(Step {
            session,
            stage: stage.clone(),
            pass,
            scale: 1.0,
            last,
            arrived,
            waiter: tag(name),
        })
    }

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    /// A decode step of one group, as the batcher reckons it (at scale 1).
    fn dec(s: &Stage, contexts: &[u32]) -> Duration {
        s.decode_batch(contexts).mul_f64(1.0)
    }

    /// A session's prefill step alone (at scale 1).
    fn pre(s: &Stage, tokens: u32) -> Duration {
        s.pass(Pass::Prefill { tokens }).mul_f64(1.0)
    }

    fn words(log: &[(Duration, String)]) -> Vec<&str> {
        log.iter().map(|(_, w)| w.as_str()).collect()
    }

    #[test]
    fn batch_of_one_serves_first_come_first_served() {
        let t0 = Instant::now();
        let mut b = B::new(stage(), 1, t0);
        b.push(t0, job("a", 100, 3, t0));
        b.push(t0, job("b", 100, 2, t0));
        let (mut now, mut log) = (t0, Vec::new());
        run(&mut b, &mut now, &mut log, t0);
        let s = stage();
        let a_total = s.prefill(100) + dec(&s, &[101]) + dec(&s, &[102]);
        let b_done = format!("b done, queued {a_total:?}");
        assert_eq!(
            words(&log),
            [
                "a token 0",
                "a token 1",
                "a token 2",
                "a done, queued 0ns",
                "b token 0",
                "b token 1",
                b_done.as_str(),
            ]
        );
        assert_eq!(log[3].0, a_total);
        assert_eq!(log[6].0, a_total + s.prefill(100) + dec(&s, &[101]));
        assert_eq!(b.poll_timeout(), None);
        assert_eq!(b.load(), (0, 0, 0));
    }

    #[test]
    fn decode_steps_batch_up_to_max_batch_in_arrival_order() {
        let t0 = Instant::now();
        let s = stage();
        let mut b = B::new(s.clone(), 2, t0);
        for name in ["a", "b", "c"] {
            b.push(t0, job(name, 100, 2, t0));
        }
        let (mut now, mut log) = (t0, Vec::new());
        run(&mut b, &mut now, &mut log, t0);
        // a and b are admitted together, each prefill in turn, then one decode step for
        // both; c waits for a place.
        let prefill = s.prefill(100);
        let both = dec(&s, &[101, 101]);
        assert!(both < dec(&s, &[101]) * 2, "the weights are read once");
        let expect = [
            (prefill, "a token 0"),
            (prefill * 2, "b token 0"),
            (prefill * 2 + both, "a token 1"),
            (prefill * 2 + both, "a done, queued 0ns"),
            (prefill * 2 + both, "b token 1"),
        ];
        for (i, (at, what)) in expect.iter().enumerate() {
            assert_eq!((log[i].0, log[i].1.as_str()), (*at, *what), "event {i}");
        }
        // b waited for a's prefill.
        assert_eq!(log[5].1, format!("b done, queued {prefill:?}"));
        let c_start = prefill * 2 + both;
        assert_eq!(log[6], (c_start + prefill, "c token 0".to_string()));
        assert_eq!(
            log[8],
            (
                c_start + prefill + dec(&s, &[101]),
                format!("c done, queued {c_start:?}")
            )
        );
    }

    #[test]
    fn a_newcomer_prefills_between_decode_steps_and_stalls_the_batch() {
        let t0 = Instant::now();
        let s = stage();
        let mut b = B::new(s.clone(), 4, t0);
        b.push(t0, job("a", 100, 4, t0));
        let (mut now, mut log) = (t0, Vec::new());
        // a's prefill, then its first decode step starts.
        while let Some(a) = b.poll() {
            log.push((now - t0, format!("{a:?}")));
        }
        let prefill = s.prefill(100);
        assert_eq!(b.poll_timeout(), Some(t0 + prefill));
        b.handle_timeout(t0 + prefill);
        assert!(b.poll().is_some()); // a token 0
        assert_eq!(b.poll(), None);
        let first_decode_end = t0 + prefill + dec(&s, &[101]);
        assert_eq!(b.poll_timeout(), Some(first_decode_end));
        // b arrives during that step: it is admitted once the step has ended, its prefill
        // runs before a's next token, then both decode together.
        let b_arrived = t0 + prefill + ms(1);
        b.push(b_arrived, job("b", 50, 2, b_arrived));
        now = t0 + prefill;
        log.clear();
        run(&mut b, &mut now, &mut log, t0);
        let rel = |i: Instant| i - t0;
        let b_start = first_decode_end;
        let b_prefill_end = b_start + s.prefill(50);
        let together = b_prefill_end + dec(&s, &[102, 51]);
        assert_eq!(
            log[..4],
            [
                (rel(first_decode_end), "a token 1".to_string()),
                (rel(b_prefill_end), "b token 0".to_string()),
                (rel(together), "a token 2".to_string()),
                (rel(together), "b token 1".to_string()),
            ]
        );
        assert_eq!(
            log[4],
            (
                rel(together),
                format!("b done, queued {:?}", b_start - b_arrived)
            )
        );
        let alone = together + dec(&s, &[103]);
        assert_eq!(log[5], (rel(alone), "a token 3".to_string()));
        assert_eq!(log[6], (rel(alone), "a done, queued 0ns".to_string()));
    }

    #[test]
    fn work_pushed_during_a_prefill_waits_for_the_next_decode_step() {
        let t0 = Instant::now();
        let s = stage();
        let mut b = B::new(s.clone(), 4, t0);
        b.push(t0, job("a", 100, 3, t0));
        assert_eq!(b.poll(), None);
        let prefill = s.prefill(100);
        assert_eq!(b.poll_timeout(), Some(t0 + prefill));
        // b arrives while a's prefill runs; the batch has room, but admission goes on
        // only with what was there before the prefill started: a decodes one step first.
        b.push(t0 + ms(1), job("b", 100, 2, t0 + ms(1)));
        let (mut now, mut log) = (t0, Vec::new());
        run(&mut b, &mut now, &mut log, t0);
        assert_eq!(
            words(&log[..3]),
            ["a token 0", "a token 1", "b token 0"],
            "{log:?}"
        );
        assert_eq!(log[1].0, prefill + dec(&s, &[101]));
        assert_eq!(log[2].0, prefill + dec(&s, &[101]) + prefill);
    }

    #[test]
    fn a_session_holds_its_place_from_its_first_step_to_its_last() {
        let t0 = Instant::now();
        let s = stage();
        let span = stage();
        let mut b = B::new(s.clone(), 1, t0);
        b.push(
            t0,
            step("s0", 7, &span, Pass::Prefill { tokens: 100 }, false, t0),
        );
        b.push(t0, job("j", 100, 1, t0));
        let (mut now, mut log) = (t0, Vec::new());
        run(&mut b, &mut now, &mut log, t0);
        // The session's prefill ran alone; the job waits for the session's place.
        assert_eq!(words(&log), ["s0 step, queued 0ns"]);
        assert_eq!(log[0].0, pre(&span, 100));
        assert_eq!(b.load(), (0, 1, 1));
        // Its decode steps come over the network; the last one frees the place.
        let at = t0 + ms(50);
        b.push(
            at,
            step("s1", 7, &span, Pass::Decode { context: 101 }, true, at),
        );
        log.clear();
        run(&mut b, &mut now, &mut log, t0);
        let s1_end = ms(50) + dec(&span, &[101]);
        assert_eq!(
            log,
            [
                (s1_end, "s1 step, queued 0ns".to_string()),
                (s1_end + s.prefill(100), "j token 0".to_string()),
                (
                    s1_end + s.prefill(100),
                    format!("j done, queued {s1_end:?}")
                ),
            ]
        );
    }

    #[test]
    fn a_release_frees_a_session_place() {
        let t0 = Instant::now();
        let s = stage();
        let mut b = B::new(s.clone(), 1, t0);
        b.push(
            t0,
            step("s0", 7, &s, Pass::Prefill { tokens: 10 }, false, t0),
        );
        b.push(t0, job("j", 10, 1, t0));
        let (mut now, mut log) = (t0, Vec::new());
        run(&mut b, &mut now, &mut log, t0);
        assert_eq!(b.load(), (0, 1, 1));
        b.push(now, Input::Release(7));
        log.clear();
        run(&mut b, &mut now, &mut log, t0);
        let queued = format!("j done, queued {:?}", pre(&s, 10));
        assert_eq!(words(&log), ["j token 0", queued.as_str()]);
        assert_eq!(b.load(), (0, 0, 0));
    }

    #[test]
    fn sessions_steps_share_a_decode_step_with_the_jobs_as_their_own_kernels() {
        let t0 = Instant::now();
        let s = stage();
        let span = stage();
        let mut b = B::new(s.clone(), 4, t0);
        b.push(t0, job("j", 100, 2, t0));
        b.push(
            t0,
            step("x", 1, &span, Pass::Decode { context: 40 }, true, t0),
        );
        b.push(
            t0,
            step("y", 2, &span, Pass::Decode { context: 60 }, true, t0),
        );
        let (mut now, mut log) = (t0, Vec::new());
        run(&mut b, &mut now, &mut log, t0);
        let end = s.prefill(100) + dec(&s, &[101]) + dec(&span, &[40, 60]);
        // The steps' answers come first, then the jobs' tokens.
        assert_eq!(
            log[1..],
            [
                (end, format!("x step, queued {:?}", s.prefill(100))),
                (end, format!("y step, queued {:?}", s.prefill(100))),
                (end, "j token 1".to_string()),
                (end, "j done, queued 0ns".to_string()),
            ]
        );
    }

    #[test]
    fn work_nobody_waits_for_is_dropped() {
        let t0 = Instant::now();
        let s = stage();
        let mut b = B::new(s.clone(), 1, t0);
        let a = tag("a");
        b.push(
            t0,
            Input::Job(Job {
                prompt: 100,
                output: 5,
                arrived: t0,
                waiter: a.clone(),
            }),
        );
        let c = tag("c");
        b.push(t0, job("b", 100, 1, t0));
        b.push(
            t0,
            Input::Job(Job {
                prompt: 100,
                output: 1,
                arrived: t0,
                waiter: c.clone(),
            }),
        );
        c.gone.set(true); // left while queued: never admitted
        let (mut now, mut log) = (t0, Vec::new());
        // a's prefill and first decode step.
        while b.poll().is_some() {}
        b.handle_timeout(t0 + s.prefill(100));
        assert!(b.poll().is_some());
        a.gone.set(true); // left while running: no more tokens, no Done
        run(&mut b, &mut now, &mut log, t0);
        let freed = s.prefill(100) + dec(&s, &[101]);
        assert_eq!(
            log,
            [
                (freed + s.prefill(100), "b token 0".to_string()),
                (freed + s.prefill(100), format!("b done, queued {freed:?}")),
            ]
        );
        assert_eq!(b.load(), (0, 0, 0));
    }

    #[test]
    fn an_idle_batcher_starts_work_when_it_is_pushed() {
        let t0 = Instant::now();
        let s = stage();
        let mut b = B::new(s.clone(), 1, t0);
        assert_eq!(b.poll(), None);
        assert_eq!(b.poll_timeout(), None);
        // Pushed late, with an earlier arrival (it waited in a channel): it starts at the
        // push, and its queue time counts from its arrival.
        let later = t0 + ms(100);
        b.push(later, job("a", 100, 1, t0 + ms(90)));
        assert_eq!(b.poll(), None);
        assert_eq!(b.poll_timeout(), Some(later + s.prefill(100)));
        // An early call to handle_timeout changes nothing.
        b.handle_timeout(later);
        assert_eq!(b.poll_timeout(), Some(later + s.prefill(100)));
        let (mut now, mut log) = (later, Vec::new());
        run(&mut b, &mut now, &mut log, t0);
        assert_eq!(log[1].1, format!("a done, queued {:?}", ms(10)));
    }
}

//! The roofline engine: a thin async shell over [`Batcher`], the sans-IO continuous-batching
//! state machine in `compute::batch`. The shell moves work from its channel into the
//! machine, tells the requesters what the machine says, and waits on the clock for the
//! deadline the machine gives; every scheduling decision is the machine's. The QUIC side is
//! `harness::node`.

use crate::clock::{Clock, ClockKind};
use crate::compute::batch::{self, Action, Batcher, Input};
use crate::compute::openai::OpenAi;
use crate::compute::{
    Engine, EngineConfig, EngineError, EngineSpec, Event, Job, Pass, RequestCompute, Stage, Step,
    StepDone,
};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

type JobWaiter = mpsc::UnboundedSender<Event>;
type StepWaiter = oneshot::Sender<StepDone>;
type Msg = Input<JobWaiter, StepWaiter>;

/// Handle to a running roofline engine.
#[derive(Clone)]
pub struct Executor {
    jobs: mpsc::UnboundedSender<Msg>,
    stage: Arc<Stage>,
}

/// Starts the engine that computes `stage` for a node or the baseline, batching up to
/// `max_batch` requests; or, when the scenario backs it by a real engine, that engine with
/// `connections` requests in flight at most unless the engine sets its own. The one place
/// that chooses an engine: a new kind of engine is a new arm here.
pub fn start(
    clock: &Clock,
    stage: Stage,
    max_batch: u32,
    real: Option<(&EngineConfig, u32)>,
    cancel: CancellationToken,
) -> Result<Arc<dyn Engine>, EngineError> {
    if let Some((EngineConfig::Openai(config), connections)) = real {
        if clock.kind() != ClockKind::Real {
            return Err(EngineError::NeedsRealClock("openai".into()));
        }
        let connections = config.connections.unwrap_or(connections);
        let engine = OpenAi::new(config.clone(), connections, clock.clone(), cancel)
            .map_err(EngineError::Setup)?;
        return Ok(Arc::new(engine));
    }
    if stage.needs_real_clock() && clock.kind() != ClockKind::Real {
        return Err(EngineError::NeedsRealClock(stage.name().to_string()));
    }
    Ok(Arc::new(Executor::spawn(
        clock.clone(),
        stage,
        max_batch,
        cancel,
    )))
}

/// Starts the engine of a pipeline client's embeddings and LM head: its device serves only
/// its own requests' heads, all at once.
pub fn start_head(
    clock: &Clock,
    stage: &Stage,
    cancel: CancellationToken,
) -> Result<(Arc<dyn Engine>, Arc<Stage>), EngineError> {
    let engine = start(clock, stage.clone(), 1 << 16, None, cancel)?;
    Ok((engine, Arc::new(stage.clone())))
}

impl Executor {
    /// Starts an executor for `stage` with continuous batching up to `max_batch` requests
    /// (`compute::batch` describes the schedule). With `max_batch` 1 it serves one request
    /// at a time, first come, first served.
    pub fn spawn(clock: Clock, stage: Stage, max_batch: u32, cancel: CancellationToken) -> Self {
        let (jobs, rx) = mpsc::unbounded_channel::<Msg>();
        let stage = Arc::new(stage);
        // The machine's own handle on the stage: sessions' steps bring theirs.
        let batcher = Batcher::new(Arc::new((*stage).clone()), max_batch, clock.now());
        tokio::spawn(async move {
            tokio::select! {
                biased;
                _ = cancel.cancelled() => {}
                _ = drive(&clock, batcher, rx) => {}
            }
        });
        Executor { jobs, stage }
    }

    fn stopped(&self) -> EngineError {
        EngineError::Stopped(self.name().to_string())
    }
}

impl EngineSpec for Executor {
    fn name(&self) -> &str {
        self.stage.name()
    }

    fn needs_real_clock(&self) -> bool {
        self.stage.needs_real_clock()
    }

    fn floor(&self, pass: Pass) -> Option<Duration> {
        self.stage.floor(pass)
    }

    fn request_floor(&self, prompt: u32, output: u32) -> Option<RequestCompute> {
        self.stage.request_floor(prompt, output)
    }
}

impl Engine for Executor {
    fn submit(&self, job: Job) -> Result<(), EngineError> {
        let job = batch::Job {
            prompt: job.prompt,
            output: job.output,
            arrived: job.arrived,
            waiter: job.events,
        };
        self.jobs.send(Input::Job(job)).map_err(|_| self.stopped())
    }

    fn submit_step(&self, step: Step) -> Result<(), EngineError> {
        let step = batch::Step {
            session: step.session,
            stage: step.stage,
            pass: step.pass,
            scale: step.scale,
            last: step.last,
            arrived: step.arrived,
            waiter: step.done,
        };
        self.jobs
            .send(Input::Step(step))
            .map_err(|_| self.stopped())
    }

    fn release(&self, session: u64) {
        let _ = self.jobs.send(Input::Release(session));
    }
}

/// The shell's loop: take what arrived, tell the requesters what the machine says, then
/// wait for the machine's deadline (absolute, so timer error never accumulates over steps)
/// or, when nothing runs, for the next work. Ends when every handle is gone.
async fn drive(
    clock: &Clock,
    mut batcher: Batcher<JobWaiter, StepWaiter>,
    mut rx: mpsc::UnboundedReceiver<Msg>,
) {
    loop {
        while let Ok(msg) = rx.try_recv() {
            batcher.push(clock.now(), msg);
        }
        while let Some(action) = batcher.poll() {
            tell(action);
        }
        match batcher.poll_timeout() {
            Some(at) => {
                clock.sleep_until(at).await;
                batcher.handle_timeout(clock.now());
            }
            None => match rx.recv().await {
                Some(msg) => batcher.push(clock.now(), msg),
                None => return,
            },
        }
    }
}

/// Sends one of the machine's actions to its requester. A requester that has just gone
/// misses it; the machine drops its work at the next token.
fn tell(action: Action<JobWaiter, StepWaiter>) {
    match action {
        Action::Token { job, index } => {
            let _ = job.send(Event::Token {
                index,
                lead: Duration::ZERO,
            });
        }
        Action::Done {
            job,
            queue,
            compute,
        } => {
            let _ = job.send(Event::Done { queue, compute });
        }
        Action::StepDone {
            step,
            queue,
            compute,
        } => {
            let _ = step.send(StepDone { queue, compute });
        }
    }
}

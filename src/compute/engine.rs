//! The engine seam: whatever computes a node's work (DESIGN §6).
//!
//! Two traits, one for each side of a run:
//!
//! - [`EngineSpec`] is what the plan knows before anything runs: the engine's name, whether
//!   it needs the real clock, and the floor of a pass when the engine can predict it. It is
//!   pure. The roofline model ([`Stage`]) implements it with the model's step times; an
//!   engine that forwards to a real server (issue 13's `openai` engine) answers `None` for
//!   the floor and `true` for the real clock.
//! - [`Engine`] is a running engine: the nodes, the pipeline client's head and the local
//!   baseline hand it work and get events back. A whole request is a [`Job`]: the engine
//!   sends [`Event::Token`] for each output token as it is ready and [`Event::Done`] with
//!   the queue and compute time it measured on its own clock. A session's step (a pipeline
//!   stage's span, a tensor slice, a star host's layers) is a [`Step`]: the engine answers
//!   with a [`StepDone`] once it ran; engines that cannot run a span of layers (a real
//!   server takes whole requests only) refuse steps with [`EngineError::NoSteps`].
//!
//! The roofline engine is `harness::worker::Executor`: a thin async shell that waits on the
//! clock for the deadlines of [`super::batch::Batcher`], the sans-IO continuous-batching
//! state machine. Work and events travel on tokio's channels, which need no runtime, so
//! this module stays free of I/O.
//!
//! A new engine is a type implementing both traits and one arm where the harness starts a
//! node's engine (`harness::worker::start`); the nodes, the clients, the baseline and the
//! floor do not change.

use super::roofline::{Pass, RequestCompute, Stage};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

/// A real engine that backs a worker or the baseline, as the scenario gives it. Without
/// one, a node's device profile computes its work with the roofline model.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum EngineConfig {
    /// An OpenAI-compatible server (`compute::openai`).
    Openai(super::openai::Config),
}

impl EngineConfig {
    pub fn kind(&self) -> &'static str {
        match self {
            EngineConfig::Openai(_) => "openai",
        }
    }
}

/// What a real engine recorded over one run: summary.json's `engines` entries (with whose
/// it is and the run, `report::summary::EngineRecord`) and a line of the notes.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EngineAccount {
    /// The engine's kind (`openai`).
    pub kind: String,
    pub url: String,
    pub model: String,
    /// Responses the engine received, complete or failed.
    pub responses: u64,
    /// Responses whose token count came from the server's usage (continuous or final).
    pub counted_by_usage: u64,
    /// Responses whose token count came from counting chunks (the server reported no usage).
    pub counted_by_chunks: u64,
    /// Responses whose usage disagreed with the chunks that carried text (a chunk of several
    /// tokens, or chunks without text that carried one).
    pub count_mismatches: u64,
    /// Chunks that carried more than one token.
    pub multi_token_chunks: u64,
    /// Responses whose `usage.prompt_tokens` differed from the prompt asked for by more than
    /// a BOS token.
    pub prompt_mismatches: u64,
    /// The longest time a request waited for a connection of the pool, in ms.
    pub max_connection_wait_ms: f64,
    /// Failed responses by reason.
    #[serde(default)]
    pub failures: std::collections::BTreeMap<String, u64>,
}

impl EngineAccount {
    /// The account in one line, for the notes.
    pub fn line(&self) -> String {
        let failed: u64 = self.failures.values().sum();
        format!(
            "{} engine at {} (model {}): {} responses ({failed} failed); token counts from the server's usage {}, from counting chunks {}; usage disagreed with the chunks carrying text in {}; {} chunks carried more than one token; usage.prompt_tokens differed from the prompt in {}; the longest wait for a connection {:.3} ms",
            self.kind,
            self.url,
            self.model,
            self.responses,
            self.counted_by_usage,
            self.counted_by_chunks,
            self.count_mismatches,
            self.multi_token_chunks,
            self.prompt_mismatches,
            self.max_connection_wait_ms
        )
    }
}

/// What an engine tells the requester of a whole request.
#[derive(Debug)]
pub enum Event {
    /// Output token `index` is ready. `lead` is how long before now it was ready: zero for
    /// an engine that emits one token at a time; for the tokens of a real server's chunk that
    /// carried k of them, the gap since the previous output chunk split evenly over the k
    /// (docs/engines.md, "Timing rules"), so the last of them has none.
    Token { index: u32, lead: Duration },
    /// The request is complete: time it waited in the queue and time it was computed,
    /// both on the engine's clock.
    Done { queue: Duration, compute: Duration },
    /// The request failed (a real server's HTTP error, a broken stream): `reason` says why
    /// in a few stable words, as failures are counted by reason. No event follows.
    Failed { reason: String },
}

/// One whole request: the engine runs the prefill and every decode step itself (a worker
/// holding the whole model, and the local baseline).
#[derive(Debug)]
pub struct Job {
    pub prompt: u32,
    pub output: u32,
    pub arrived: Instant,
    pub events: mpsc::UnboundedSender<Event>,
}

/// One step of a session whose steps arrive from elsewhere (a pipeline stage, a tensor
/// group's member): the engine admits the session at its first step, batches its decode
/// steps with the others in flight, and releases it after its last step.
#[derive(Debug)]
pub struct Step {
    pub session: u64,
    /// The layers the step computes.
    pub stage: Arc<Stage>,
    pub pass: Pass,
    /// The fraction of the stage's time this step takes (a tensor group's share of a layer).
    pub scale: f64,
    /// The session ends with this step.
    pub last: bool,
    pub arrived: Instant,
    pub done: oneshot::Sender<StepDone>,
}

/// When a step ran, on the engine's clock.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct StepDone {
    pub queue: Duration,
    pub compute: Duration,
}

impl StepDone {
    /// Adds another step's account to this one's (a session's total).
    pub fn add(&mut self, other: StepDone) {
        self.queue += other.queue;
        self.compute += other.compute;
    }
}

/// Why an engine did not take or finish some work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EngineError {
    #[error("the {0} engine has stopped")]
    Stopped(String),
    #[error("the {0} engine takes whole requests only, not a session's steps")]
    NoSteps(String),
    #[error("the {0} engine needs the real clock (run with --clock real)")]
    NeedsRealClock(String),
    #[error("{0}")]
    Setup(String),
}

/// What an engine is before it runs: the plan's view of it. Pure.
pub trait EngineSpec {
    /// A short name for reports and errors ("roofline").
    fn name(&self) -> &str;

    /// Whether the engine computes in wall-clock time (a real server), so that it cannot run
    /// on the virtual clock.
    fn needs_real_clock(&self) -> bool;

    /// The time of one pass alone (batch 1, no queueing), when the engine can predict it.
    fn floor(&self, pass: Pass) -> Option<Duration>;

    /// The compute timeline of a whole request alone: the prefill (token 0), then one
    /// decode step for each further token. `None` when the engine cannot predict it.
    fn request_floor(&self, prompt: u32, output: u32) -> Option<RequestCompute> {
        let (_, first) = Pass::of_step(0, prompt);
        let prefill = self.floor(first)?;
        let decode = (1..output)
            .map(|k| self.floor(Pass::of_step(k, prompt).1))
            .collect::<Option<Vec<_>>>()?;
        Some(RequestCompute { prefill, decode })
    }
}

/// A running engine: takes a node's work, sends events back.
pub trait Engine: EngineSpec + Send + Sync {
    /// Queues a whole request; its events arrive on `job.events`.
    fn submit(&self, job: Job) -> Result<(), EngineError>;

    /// Queues one step of a session; the engine answers on `step.done` once it ran.
    fn submit_step(&self, step: Step) -> Result<(), EngineError> {
        drop(step);
        Err(EngineError::NoSteps(self.name().to_string()))
    }

    /// Frees a session's place when it ends before its last step.
    fn release(&self, _session: u64) {}

    /// What a real engine recorded over the run (where its token counts came from, its
    /// failures by reason, its longest wait for a connection); `None` for engines that
    /// measure nothing of their own (the roofline model).
    fn account(&self) -> Option<EngineAccount> {
        None
    }
}

impl dyn Engine + '_ {
    /// Runs one step of a session and says when it ran.
    pub async fn step(
        &self,
        arrived: Instant,
        session: u64,
        stage: &Arc<Stage>,
        pass: Pass,
        scale: f64,
        last: bool,
    ) -> Result<StepDone, EngineError> {
        let (done, rx) = oneshot::channel();
        self.submit_step(Step {
            session,
            stage: stage.clone(),
            pass,
            scale,
            last,
            arrived,
            done,
        })?;
        rx.await
            .map_err(|_| EngineError::Stopped(self.name().to_string()))
    }
}

/// Releases a session's place in an engine when dropped, unless its last step ran.
pub struct SessionGuard<'a> {
    pub engine: &'a dyn Engine,
    pub session: u64,
}

impl Drop for SessionGuard<'_> {
    fn drop(&mut self) {
        self.engine.release(self.session);
    }
}

/// The roofline model predicts every pass.
impl EngineSpec for Stage {
    fn name(&self) -> &str {
        "roofline"
    }

    fn needs_real_clock(&self) -> bool {
        false
    }

    fn floor(&self, pass: Pass) -> Option<Duration> {
        Some(self.pass(pass))
    }

    fn request_floor(&self, prompt: u32, output: u32) -> Option<RequestCompute> {
        Some(self.request(prompt, output))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compute::device::DeviceProfile;
    use crate::compute::model::Preset;

    fn a100() -> Stage {
        let (device, _) = crate::scenario::ProfileLibrary::built_in()
            .load("a100-80g")
            .unwrap();
        Stage {
            device,
            model: Preset::find("llama-2-7b").unwrap().model(),
            layers: 32,
            head: true,
        }
    }

    /// A spec that predicts through `floor` only, so the default `request_floor` is used.
    struct ByPass(Stage);
    impl EngineSpec for ByPass {
        fn name(&self) -> &str {
            "by-pass"
        }
        fn needs_real_clock(&self) -> bool {
            false
        }
        fn floor(&self, pass: Pass) -> Option<Duration> {
            Some(self.0.pass(pass))
        }
    }

    #[test]
    fn default_request_floor_is_the_roofline_request() {
        let s = a100();
        assert_eq!(
            ByPass(s.clone()).request_floor(128, 16),
            Some(s.request(128, 16))
        );
        assert_eq!(s.request_floor(128, 16), Some(s.request(128, 16)));
    }

    #[test]
    fn an_engine_that_cannot_predict_has_no_request_floor() {
        struct Blind;
        impl EngineSpec for Blind {
            fn name(&self) -> &str {
                "blind"
            }
            fn needs_real_clock(&self) -> bool {
                true
            }
            fn floor(&self, _: Pass) -> Option<Duration> {
                None
            }
        }
        assert_eq!(Blind.request_floor(8, 8), None);
    }

    #[test]
    fn roofline_floor_is_the_pass_time() {
        let s = Stage {
            device: DeviceProfile::ideal(),
            ..a100()
        };
        assert_eq!(s.floor(Pass::Decode { context: 9 }), Some(Duration::ZERO));
        let s = a100();
        let p = Pass::Prefill { tokens: 128 };
        assert_eq!(s.floor(p), Some(s.pass(p)));
        assert!(!s.needs_real_clock());
    }
}

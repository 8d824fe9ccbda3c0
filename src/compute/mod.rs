//! What computes a node's work (DESIGN §6), all of it pure:
//!
//! - [`device`]: the device profile type (what a device can do; loading profiles from
//!   files is `scenario::profile`'s job);
//! - [`roofline`]: the roofline model, the time a device takes for a prefill or a decode
//!   step of the layers it holds;
//! - [`engine`]: the seam every engine goes through ([`EngineSpec`] for the plan,
//!   [`Engine`] for a run), with the work and events that cross it;
//! - [`batch`]: the continuous-batching scheduler of the roofline engine, a sans-IO state
//!   machine that `harness::worker` drives on the clock;
//! - [`openai`]: the engine backed by a real OpenAI-compatible server (its HTTP shell does
//!   I/O; its SSE parser and token accounting are pure).

pub mod batch;
pub mod device;
pub mod engine;
pub mod model;
pub mod openai;
pub mod roofline;

pub use device::{DeviceProfile, Efficiency, Pair, PassKind};
pub use engine::{
    Engine, EngineAccount, EngineConfig, EngineError, EngineSpec, Event, Job, SessionGuard, Step,
    StepDone,
};
pub use roofline::{Cost, Pass, RequestCompute, Stage, Work};

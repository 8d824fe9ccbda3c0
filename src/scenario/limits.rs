//! What the harness can run: the bounds validation holds every scenario quantity to, each
//! with the reason it exists. A value past one is an error that names the field, the
//! limit and this reason, never an overflow, a panic or a run that cannot end.
//!
//! These are hard limits of what the harness can represent. Whether a run that fits them
//! is worth running is `run`'s estimate ([`crate::plan::estimate`]), which a flag can raise.

use std::time::Duration;

/// The longest phase (`duration`, `warmup`): 1,000,000 s, about 11.6 days. Every instant
/// of a run is a phase start plus an offset, and the load generator's clock, the
/// histograms (nanoseconds) and the interval log are sized for runs far below this.
pub const MAX_PHASE: Duration = Duration::from_secs(1_000_000);

/// The most requests in a phase (`requests`, `warmup_requests`, `--requests`): ten million.
/// Each measured request keeps its token times until the phase ends, for the per-interval
/// log and the breakdown, so memory grows with every request.
pub const MAX_REQUESTS: u64 = 10_000_000;

/// The slowest open-loop arrival rate, in requests/s: one request per [`MAX_PHASE`]. A
/// slower rate would schedule the second request past the longest phase the harness runs.
pub const MIN_RATE: f64 = 1e-6;

/// The fastest open-loop arrival rate, in requests/s.
pub const MAX_RATE: f64 = 1e6;

/// Gamma `burstiness` bounds (the gamma distribution's shape: gaps have a coefficient of
/// variation of 1 / sqrt(burstiness)): outside them the sampler's shape or scale leaves
/// the range where its draws are meaningful.
pub const BURSTINESS: (f64, f64) = (1e-3, 1e3);

/// The most nodes in a scenario: 4096. Every node is a QUIC endpoint with its own tasks
/// and in-memory address in this one process.
pub const MAX_NODES: usize = 4096;

/// The most nodes on a request's route: 255. The wire's `Request` frame counts the route's
/// node names in one byte (DESIGN §7).
pub const MAX_ROUTE: usize = 255;

/// The most layers a model may have: 100,000 (the largest published models have a few
/// hundred). Layer spans, KV sizes and compute work are products of it.
pub const MAX_LAYERS: u32 = 100_000;

/// The widest hidden state, KV width and vocabulary: 2^24. Frame sizes, KV bytes and
/// the LM head's work are products of these.
pub const MAX_WIDTH: u32 = 1 << 24;

/// The most parameters a model may have: 1e15 (a thousand times the largest published).
pub const MAX_PARAMS: f64 = 1e15;

/// `max_batch` upper bound: 65,536 requests in one step; the scheduler holds a slot per
/// request it batches.
pub const MAX_BATCH: u32 = 1 << 16;

/// The largest fixed software cost of one message (`send_cost.fixed`, `recv_cost.fixed`):
/// 10 s, far past any serialization or RPC dispatch; a larger one is a unit slip.
pub const MAX_MESSAGE_FIXED: Duration = Duration::from_secs(10);

/// The largest software cost per byte of a message (`send_cost.per_byte`,
/// `recv_cost.per_byte`): 1 ms per byte, a kilobyte a second.
pub const MAX_PER_BYTE: Duration = Duration::from_millis(1);

/// The least device efficiency (`efficiency.compute`, `efficiency.memory`): 1e-6. Below
/// it a single step's modelled time leaves the range a run can wait for.
pub const MIN_EFFICIENCY: f64 = 1e-6;

/// The longest modelled compute step: 1e9 s. A step the roofline model puts past this is
/// waited for as this long (and `run`'s estimate refuses such a run first).
pub const MAX_STEP: Duration = Duration::from_secs(1_000_000_000);

/// A number as a message shows it: plainly when it is of an everyday size, in exponent
/// form (`1e-300`) when writing it out would take hundreds of digits.
pub fn show(v: f64) -> String {
    if v == 0.0 || !v.is_finite() || (1e-4..1e9).contains(&v.abs()) {
        format!("{v}")
    } else {
        format!("{v:e}")
    }
}

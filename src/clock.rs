//! Clocks of the harness (DESIGN §3).
//!
//! - **real**: timed events on a precise timing path: one thread that waits on a
//!   condition variable with a deadline (with the thread's timer slack set to 1 ns on
//!   Linux), instead of tokio's timer wheel, which resolves to about a millisecond. It
//!   sleeps until just before each deadline and yields for the last few tens of
//!   microseconds, so it burns no core while idle.
//! - **virtual**: tokio's paused clock on a current-thread runtime. quinn takes all of its
//!   time from tokio, so the same QUIC stack runs in simulated time. The harness's own
//!   events (link deliveries, compute, the load schedule) are kept to the nanosecond: tokio's
//!   wheel would round them to milliseconds, so they wait in a heap of their own, and the
//!   runtime's park hook advances the paused clock exactly to the next of them whenever
//!   every task is idle. A ticker task keeps a tokio timer at the millisecond the next event
//!   falls in, so tokio's own auto-advance never jumps past it.
//!
//! **Real-time scheduling** (opt-in, [`request_realtime`]: `inferlat run --realtime`, or
//! `INFERLAT_REALTIME=PRIORITY`): the real clock's timing thread runs under `SCHED_FIFO` one
//! step above the runtime's workers, and spins rather than yields through the last stretch
//! before a deadline. Under the default scheduler a busy machine (a compiler on the other
//! core) delays a wake-up by milliseconds at the tail: on this project's 2-core VM under a
//! load average of 2.5, a thread sleeping to 2,000 deadlines a second woke p99 7.7 ms late
//! with `SCHED_OTHER` and within a microsecond with `SCHED_FIFO` (docs/links.md, "Schedule
//! lag"). It needs `CAP_SYS_NICE` (root); where it is refused the run goes on under the
//! normal scheduler and [`scheduling`] says why, for the summary.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

type Job = Box<dyn FnOnce() + Send>;

/// How long before a deadline the timer stops sleeping and yields until it: the kernel's
/// wake-up from a timed wait is typically 20-60 µs late on a virtual machine.
const SPIN: Duration = Duration::from_micros(60);

/// How early [`Clock::sleep_until_precise`] wakes its task, to wait out the rest on the worker.
pub const PRECISE_EARLY: Duration = Duration::from_micros(150);

enum Task {
    Wake(Waker),
    Run(Job),
}

/// Where a task waits in [`Events`]: its instant, then the order it was scheduled in.
type Key = (Instant, u64);

/// Timed tasks in deadline order; ties keep the order they were scheduled in. Both clocks
/// keep theirs in one of these.
#[derive(Default)]
struct Events {
    tasks: BTreeMap<Key, Task>,
    seq: u64,
}

impl Events {
    /// Adds a task; returns its key and whether it is now the earliest.
    fn push(&mut self, at: Instant, task: Task) -> (Key, bool) {
        let key = (at, self.seq);
        self.seq += 1;
        let earliest = self.next().is_none_or(|next| at < next);
        self.tasks.insert(key, task);
        (key, earliest)
    }

    fn next(&self) -> Option<Instant> {
        self.tasks.first_key_value().map(|(k, _)| k.0)
    }

    /// Removes a task that has not run yet; true when it was the earliest.
    fn remove(&mut self, key: Key) -> bool {
        let earliest = self.tasks.first_key_value().is_some_and(|(k, _)| *k == key);
        self.tasks.remove(&key);
        earliest
    }

    /// Moves every task due by `until` into `due`, in order.
    fn take_due(&mut self, until: Instant, due: &mut Vec<Task>) {
        while let Some(entry) = self.tasks.first_entry() {
            if entry.key().0 > until {
                break;
            }
            due.push(entry.remove());
        }
    }
}

/// Runs tasks taken from [`Events`], outside its lock.
fn fire(due: &mut Vec<Task>) {
    for task in due.drain(..) {
        match task {
            Task::Wake(w) => w.wake(),
            Task::Run(job) => job(),
        }
    }
}

#[derive(Default)]
struct State {
    events: Events,
    shutdown: bool,
}

struct Shared {
    state: Mutex<State>,
    cv: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic in a timed job must not wedge every later timer.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Stops the timing thread when the last handle goes.
struct Handle {
    shared: Arc<Shared>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.shared.lock().shutdown = true;
        self.shared.cv.notify_one();
    }
}

/// The precise timer: schedules wake-ups and jobs at instants.
#[derive(Clone)]
pub struct Timer {
    handle: Arc<Handle>,
}

impl std::fmt::Debug for Timer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Timer")
    }
}

impl Timer {
    /// Starts the timing thread.
    pub fn start() -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            cv: Condvar::new(),
        });
        let thread_shared = shared.clone();
        let realtime = realtime_priority();
        std::thread::Builder::new()
            .name("inferlat-timer".into())
            .spawn(move || run(thread_shared, realtime))?;
        Ok(Timer {
            handle: Arc::new(Handle { shared }),
        })
    }

    fn schedule(&self, at: Instant, task: Task) -> Key {
        let shared = &self.handle.shared;
        let (key, earliest) = shared.lock().events.push(at, task);
        if earliest {
            shared.cv.notify_one();
        }
        key
    }

    /// Removes a task that has not run yet. The thread finds out on its next wake-up.
    fn cancel(&self, key: Key) {
        self.handle.shared.lock().events.remove(key);
    }

    /// Runs `job` on the timing thread at `at` (at once if `at` has passed). Jobs must be short.
    pub fn run_at(&self, at: Instant, job: impl FnOnce() + Send + 'static) {
        self.schedule(at, Task::Run(Box::new(job)));
    }
}

/// The `SCHED_FIFO` priority requested for the real clock's threads; 0: none.
static REALTIME: AtomicU8 = AtomicU8::new(0);
/// What became of the request: the first refusal, or the priority granted.
static REALTIME_OUTCOME: Mutex<Option<Result<u8, String>>> = Mutex::new(None);

/// The highest priority [`request_realtime`] takes: the timing thread runs one above it, and
/// the kernel's own real-time threads (migration, watchdogs) stay above both.
pub const MAX_REALTIME_PRIORITY: u8 = 90;

/// Asks for `SCHED_FIFO` at `priority` (1 to [`MAX_REALTIME_PRIORITY`]) for the runtime
/// workers of real-clock runtimes built after this call, and one above it for their timing
/// threads; `None` turns it off. A refusal is not an error: see [`scheduling`].
pub fn request_realtime(priority: Option<u8>) {
    let p = priority.map_or(0, |p| p.clamp(1, MAX_REALTIME_PRIORITY));
    REALTIME.store(p, Ordering::Relaxed);
    *REALTIME_OUTCOME.lock().unwrap_or_else(|e| e.into_inner()) = None;
}

/// The priority requested, from [`request_realtime`] or else `INFERLAT_REALTIME`.
fn realtime_priority() -> Option<u8> {
    match REALTIME.load(Ordering::Relaxed) {
        0 => std::env::var("INFERLAT_REALTIME")
            .ok()
            .and_then(|v| v.trim().parse::<u8>().ok())
            .filter(|p| *p > 0)
            .map(|p| p.min(MAX_REALTIME_PRIORITY)),
        p => Some(p),
    }
}

/// How the real clock's threads were scheduled, for the summary: `None` when real-time
/// scheduling was not asked for; otherwise what was granted or why it was refused.
pub fn scheduling() -> Option<String> {
    let p = realtime_priority()?;
    Some(
        match &*REALTIME_OUTCOME.lock().unwrap_or_else(|e| e.into_inner()) {
            Some(Ok(p)) => format!("SCHED_FIFO {p} (timing thread {})", p + 1),
            Some(Err(why)) => format!("normal scheduler: SCHED_FIFO {p} was refused ({why})"),
            None => format!("SCHED_FIFO {p} requested; no real-clock thread has started"),
        },
    )
}

/// Puts the calling thread under `SCHED_FIFO` at `priority`; records the outcome.
fn enter_realtime(priority: u8) -> bool {
    #[cfg(target_os = "linux")]
    let r = {
        let param = libc::sched_param {
            sched_priority: i32::from(priority),
        };
        // SAFETY: sched_setscheduler(0, ..) changes only the calling thread's policy, and
        // `param` outlives the call.
        match unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) } {
            0 => Ok(priority),
            _ => Err(std::io::Error::last_os_error().to_string()),
        }
    };
    #[cfg(not(target_os = "linux"))]
    let r: Result<u8, String> = Err("only on Linux".into());
    let granted = r.is_ok();
    let mut outcome = REALTIME_OUTCOME.lock().unwrap_or_else(|e| e.into_inner());
    match (&*outcome, r) {
        // The first refusal is kept; a grant only fills an empty record (the workers' priority).
        (Some(Err(_)), _) => {}
        (_, Err(e)) => *outcome = Some(Err(e)),
        (None, Ok(p)) => *outcome = Some(Ok(p)),
        (Some(Ok(_)), Ok(_)) => {}
    }
    granted
}

fn set_timer_slack() {
    #[cfg(target_os = "linux")]
    // SAFETY: prctl(PR_SET_TIMERSLACK) only changes this thread's timer slack.
    unsafe {
        libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong, 0, 0, 0);
    }
}

fn run(shared: Arc<Shared>, realtime: Option<u8>) {
    set_timer_slack();
    // Under SCHED_FIFO nothing of lower priority can take the core while the thread spins
    // out the last stretch; under the normal scheduler it yields, to be fair to the machine.
    let spin = realtime.is_some_and(|p| enter_realtime(p + 1));
    let mut due: Vec<Task> = Vec::new();
    let mut st = shared.lock();
    loop {
        if st.shutdown {
            return;
        }
        let now = Instant::now();
        match st.events.next() {
            None => st = shared.cv.wait(st).unwrap_or_else(|e| e.into_inner()),
            Some(at) if at <= now => {
                st.events.take_due(now, &mut due);
                drop(st);
                fire(&mut due);
                st = shared.lock();
            }
            Some(at) if at - now <= SPIN => {
                // The last stretch: yield until the deadline instead of trusting the
                // kernel's wake-up, which lands tens of microseconds late.
                drop(st);
                while Instant::now() < at {
                    if spin {
                        std::hint::spin_loop();
                    } else {
                        std::thread::yield_now();
                    }
                }
                st = shared.lock();
            }
            Some(at) => {
                st = shared
                    .cv
                    .wait_timeout(st, at - now - SPIN)
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
        }
    }
}

/// Completes at an instant, woken by the clock's timer. Dropped before then, it takes its
/// wake-ups off the timer (a request's timeout that did not fire leaves nothing behind).
pub struct Sleep {
    at: Instant,
    /// How long before `at` the timer wakes the task, which then requeues itself on its worker
    /// through the rest ([`Clock::sleep_until_precise`]); zero for a plain sleep.
    early: Duration,
    clock: Clock,
    registered: Option<Waker>,
    /// The wake-ups it scheduled (one per waker it was polled with).
    keys: Vec<Key>,
}

impl Drop for Sleep {
    fn drop(&mut self) {
        for key in self.keys.drain(..) {
            self.clock.cancel(key);
        }
    }
}

impl Future for Sleep {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let now = self.clock.now();
        if now >= self.at {
            return Poll::Ready(());
        }
        if !self.early.is_zero() && now + self.early >= self.at {
            // Woken early, on a worker: the last stretch is polled out here, so no hop between
            // threads stands between the deadline and the task's work. The task requeues
            // itself instead of spinning in place, so the worker's other tasks (and other
            // requests' last stretches, at high rates) still run in between.
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        let fresh = self
            .registered
            .as_ref()
            .is_none_or(|w| !w.will_wake(cx.waker()));
        if fresh {
            let waker = cx.waker().clone();
            self.registered = Some(waker.clone());
            let key = self.clock.schedule(self.at - self.early, Task::Wake(waker));
            self.keys.push(key);
        }
        Poll::Pending
    }
}

/// Which clock a run uses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ClockKind {
    /// Wall-clock time: what a user measures.
    #[default]
    Real,
    /// Simulated time: deterministic from the seed; harness CPU costs are not in it.
    Virtual,
}

impl ClockKind {
    pub fn name(self) -> &'static str {
        match self {
            ClockKind::Real => "real",
            ClockKind::Virtual => "virtual",
        }
    }

    /// A runtime for this clock and the clock itself. The real clock runs on a
    /// multi-threaded runtime; the virtual one on a paused current-thread runtime.
    pub fn runtime(self) -> std::io::Result<(tokio::runtime::Runtime, Clock)> {
        match self {
            ClockKind::Real => {
                let mut b = tokio::runtime::Builder::new_multi_thread();
                b.enable_all();
                if let Some(p) = realtime_priority() {
                    b.on_thread_start(move || {
                        enter_realtime(p);
                    });
                }
                let rt = b.build()?;
                Ok((rt, Clock::real()?))
            }
            ClockKind::Virtual => virtual_runtime(),
        }
    }
}

/// The harness's clock.
#[derive(Clone, Debug)]
pub enum Clock {
    /// Wall-clock time with the precise timer.
    Real(Timer),
    /// tokio's paused time, advanced to each event exactly.
    Virtual(VirtualTimer),
}

impl Clock {
    pub fn real() -> std::io::Result<Self> {
        Ok(Clock::Real(Timer::start()?))
    }

    pub fn kind(&self) -> ClockKind {
        match self {
            Clock::Real(_) => ClockKind::Real,
            Clock::Virtual(_) => ClockKind::Virtual,
        }
    }

    pub fn now(&self) -> Instant {
        match self {
            Clock::Real(_) => Instant::now(),
            Clock::Virtual(_) => tokio::time::Instant::now().into_std(),
        }
    }

    pub fn name(&self) -> &'static str {
        self.kind().name()
    }

    fn schedule(&self, at: Instant, task: Task) -> Key {
        match self {
            Clock::Real(t) => t.schedule(at, task),
            Clock::Virtual(v) => v.schedule(at, task),
        }
    }

    /// Removes a task that has not run yet (a no-op when it has).
    fn cancel(&self, key: Key) {
        match self {
            Clock::Real(t) => t.cancel(key),
            Clock::Virtual(v) => v.cancel(key),
        }
    }

    /// Completes at `at`.
    pub fn sleep_until(&self, at: Instant) -> Sleep {
        Sleep {
            at,
            early: Duration::ZERO,
            clock: self.clone(),
            registered: None,
            keys: Vec::new(),
        }
    }

    /// Completes at `at`, on time even where waking a runtime worker from the timing thread
    /// is slow: on the real clock the task is woken [`PRECISE_EARLY`] before `at` and requeues
    /// itself on its worker through the rest, letting the worker's other tasks run in between
    /// (the load generator's schedule). On the virtual clock it is [`Clock::sleep_until`].
    pub fn sleep_until_precise(&self, at: Instant) -> Sleep {
        let mut s = self.sleep_until(at);
        if matches!(self, Clock::Real(_)) {
            s.early = PRECISE_EARLY;
        }
        s
    }

    pub fn sleep(&self, d: Duration) -> Sleep {
        self.sleep_until(self.now() + d)
    }

    /// Runs a short job at `at` (at once if `at` has passed).
    pub fn run_at(&self, at: Instant, job: impl FnOnce() + Send + 'static) {
        self.schedule(at, Task::Run(Box::new(job)));
    }

    /// How many timed tasks wait (for tests).
    #[cfg(test)]
    fn pending(&self) -> usize {
        match self {
            Clock::Real(t) => t.handle.shared.lock().events.tasks.len(),
            Clock::Virtual(v) => v.shared.lock().events.tasks.len(),
        }
    }
}

struct VirtualState {
    events: Events,
    /// tokio's time origin: its timer ticks are whole milliseconds from here.
    origin: Instant,
    /// The tick the ticker's tokio timer stands at (`None`: it waits for a re-arm only).
    /// The ticker needs waking only when the next event's tick falls before it.
    armed: Option<Instant>,
}

impl VirtualState {
    /// Whether the ticker must re-arm after the park hook ran at `now`: the next event's
    /// tick lies ahead of `now` and before the ticker's timer (or the ticker has none). A
    /// timer at or before that tick is safe: tokio's auto-advance stops there, and the
    /// ticker then re-arms itself.
    fn needs_rearm(&self, now: Instant) -> bool {
        let Some(next) = self.events.next() else {
            return false;
        };
        let tick = VirtualShared::tick_floor(self.origin, next);
        tick > now && self.armed.is_none_or(|armed| armed > tick)
    }
}

struct VirtualShared {
    state: Mutex<VirtualState>,
    /// Re-arms the ticker when the earliest event changes.
    rearm: tokio::sync::Notify,
}

impl VirtualShared {
    fn lock(&self) -> MutexGuard<'_, VirtualState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The start of the millisecond tick that `at` falls in.
    fn tick_floor(origin: Instant, at: Instant) -> Instant {
        let since = at.saturating_duration_since(origin);
        origin + Duration::from_millis(since.as_millis() as u64)
    }
}

/// The virtual clock's event heap; see the module's documentation.
#[derive(Clone)]
pub struct VirtualTimer {
    shared: Arc<VirtualShared>,
}

impl std::fmt::Debug for VirtualTimer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("VirtualTimer")
    }
}

impl VirtualTimer {
    /// Callable from any thread: it does not read the paused clock, so it re-arms the
    /// ticker whenever the new event's tick falls before the ticker's timer, even where the
    /// park hook would have handled it within the current tick.
    fn schedule(&self, at: Instant, task: Task) -> Key {
        let (key, rearm) = {
            let mut st = self.shared.lock();
            let (key, earliest) = st.events.push(at, task);
            let tick = VirtualShared::tick_floor(st.origin, at);
            (key, earliest && st.armed.is_none_or(|armed| armed > tick))
        };
        if rearm {
            self.shared.rearm.notify_one();
        }
        key
    }

    /// Removing an event can only move the next one later: the ticker's timer stays at or
    /// before its tick, which is safe (see [`VirtualState::needs_rearm`]).
    fn cancel(&self, key: Key) {
        self.shared.lock().events.remove(key);
    }

    /// The runtime's park hook: every task is idle. Fires what is due; otherwise moves the
    /// paused clock exactly to the next event when it falls in the current millisecond
    /// tick, or to the end of that tick so tokio's own timers stay on their milliseconds.
    fn on_park(&self) {
        let now = tokio::time::Instant::now().into_std();
        let mut st = self.shared.lock();
        let Some(next) = st.events.next() else {
            return;
        };
        let origin = st.origin;
        let target = if next <= now {
            now
        } else {
            let floor = VirtualShared::tick_floor(origin, now);
            let tick_end = floor + Duration::from_millis(1);
            if next <= tick_end {
                next
            } else if floor == now {
                // On a tick already: tokio's auto-advance stops at the ticker's timer.
                return;
            } else {
                tick_end
            }
        };
        DUE.with_borrow_mut(|due| {
            st.events.take_due(target, due);
            // An event left within this tick: the ticker must run (a task ready), or the
            // runtime would sleep with it pending when what fired woke no task.
            let in_tick = st
                .events
                .next()
                .is_some_and(|next| VirtualShared::tick_floor(st.origin, next) <= target);
            let rearm = in_tick || st.needs_rearm(target);
            drop(st);
            if target > now {
                advance(target - now);
            }
            fire(due);
            if rearm {
                self.shared.rearm.notify_one();
            }
        });
    }

    /// Keeps a tokio timer at the tick of the next event, so auto-advance never passes it.
    async fn ticker(self) {
        loop {
            let now = tokio::time::Instant::now().into_std();
            let wait = {
                let mut st = self.shared.lock();
                let wait = st
                    .events
                    .next()
                    .map(|at| VirtualShared::tick_floor(st.origin, at));
                st.armed = wait.filter(|&t| t > now);
                wait
            };
            match wait {
                Some(t) if t > now => {
                    tokio::select! {
                        biased;
                        _ = tokio::time::sleep_until(t.into()) => {}
                        _ = self.shared.rearm.notified() => {}
                    }
                }
                _ => self.shared.rearm.notified().await,
            }
        }
    }
}

thread_local! {
    /// The virtual clock's due tasks, taken out of the heap by the park hook: one buffer
    /// for the runtime's thread instead of an allocation per park.
    static DUE: std::cell::RefCell<Vec<Task>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Moves tokio's paused clock forward by `d`, from inside the runtime.
fn advance(d: Duration) {
    // `tokio::time::advance` moves the clock on its first poll, then yields once.
    let fut = std::pin::pin!(tokio::time::advance(d));
    let mut cx = Context::from_waker(Waker::noop());
    let _ = fut.poll(&mut cx);
}

/// A paused current-thread runtime whose park hook drives the virtual clock.
fn virtual_runtime() -> std::io::Result<(tokio::runtime::Runtime, Clock)> {
    let shared = Arc::new(VirtualShared {
        state: Mutex::new(VirtualState {
            events: Events::default(),
            origin: Instant::now(),
            armed: None,
        }),
        rearm: tokio::sync::Notify::new(),
    });
    let timer = VirtualTimer { shared };
    let hook = timer.clone();
    // Time only, no I/O driver: nothing on the virtual clock reads a real socket (the
    // in-memory network is not one; signals have their own runtime, `cli::watch_signals`),
    // and with one every park polled epoll with a zero timeout (4.5 % of `dllama-tp8`'s
    // profile; docs/links.md).
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .on_thread_park(move || hook.on_park())
        .build()?;
    // Nothing has advanced the paused clock yet: now is tokio's time origin.
    let origin = rt.block_on(async { tokio::time::Instant::now().into_std() });
    timer.shared.lock().origin = origin;
    rt.spawn(timer.clone().ticker());
    Ok((rt, Clock::Virtual(timer)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    #[test]
    fn jobs_run_in_deadline_order() {
        let t = Timer::start().unwrap();
        let (tx, rx) = mpsc::channel();
        let now = Instant::now();
        for (i, ms) in [30u64, 10, 20].into_iter().enumerate() {
            let tx = tx.clone();
            t.run_at(now + Duration::from_millis(ms), move || tx.send(i).unwrap());
        }
        let order: Vec<usize> = (0..3).map(|_| rx.recv().unwrap()).collect();
        assert_eq!(order, vec![1, 2, 0]);
    }

    #[test]
    fn a_dropped_sleep_leaves_no_timer_entry() {
        for kind in [ClockKind::Real, ClockKind::Virtual] {
            let (rt, clock) = kind.runtime().unwrap();
            rt.block_on(async {
                let far = clock.now() + Duration::from_secs(3600);
                let mut sleep = Box::pin(clock.sleep_until(far));
                let pending =
                    std::future::poll_fn(|cx| Poll::Ready(sleep.as_mut().poll(cx).is_pending()))
                        .await;
                assert!(pending);
                assert_eq!(
                    clock.pending(),
                    1,
                    "{kind:?}: the sleep registered its wake-up"
                );
                drop(sleep);
                assert_eq!(
                    clock.pending(),
                    0,
                    "{kind:?}: the dropped sleep left an entry"
                );
                // The clock still wakes the sleeps that stay.
                let at = clock.now() + Duration::from_millis(2);
                clock.sleep_until(at).await;
                assert!(clock.now() >= at);
                assert_eq!(clock.pending(), 0);
            });
            rt.shutdown_background();
        }
    }

    #[test]
    fn virtual_events_fire_at_their_instants_after_a_cancel() {
        let (rt, clock) = ClockKind::Virtual.runtime().unwrap();
        rt.block_on(async {
            let t0 = clock.now();
            // A sleep polled once and dropped: the ticker may stay armed at its tick.
            let mut early = Box::pin(clock.sleep_until(t0 + Duration::from_micros(1_500)));
            let pending =
                std::future::poll_fn(|cx| Poll::Ready(early.as_mut().poll(cx).is_pending())).await;
            assert!(pending);
            drop(early);
            let (tx, rx) = mpsc::channel();
            for (i, us) in [7_300u64, 2_000, 250_000].into_iter().enumerate() {
                let (tx, c) = (tx.clone(), clock.clone());
                let at = t0 + Duration::from_micros(us);
                clock.run_at(at, move || tx.send((i, c.now() == at)).unwrap());
            }
            for d in [
                Duration::from_micros(7_300),
                Duration::from_nanos(7_300_001),
                Duration::from_nanos(250_000_017),
                Duration::from_millis(3_200),
            ] {
                clock.sleep_until(t0 + d).await;
                assert_eq!(clock.now(), t0 + d, "woken exactly at {d:?}");
            }
            let fired: Vec<(usize, bool)> = rx.try_iter().collect();
            assert_eq!(fired, vec![(1, true), (0, true), (2, true)]);
        });
    }

    #[test]
    fn sleep_never_completes_early() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let clock = Clock::real().unwrap();
        rt.block_on(async {
            for _ in 0..5 {
                let at = Instant::now() + Duration::from_micros(1500);
                clock.sleep_until(at).await;
                assert!(Instant::now() >= at);
            }
            // Woken early to wait out the rest: still never before its instant, whether the
            // instant is past the early margin or within it.
            for d in [1500, 100, 0] {
                let at = Instant::now() + Duration::from_micros(d);
                clock.sleep_until_precise(at).await;
                assert!(Instant::now() >= at, "{d} µs");
            }
        });
    }

    /// On the virtual clock the precise sleep is the plain one: it completes at its instant
    /// exactly, with no early wake-up that would move the run's order of events.
    #[test]
    fn a_precise_sleep_on_the_virtual_clock_is_exact() {
        let (rt, clock) = ClockKind::Virtual.runtime().unwrap();
        rt.block_on(async {
            let t0 = clock.now();
            let at = t0 + Duration::from_nanos(1_234_567);
            clock.sleep_until_precise(at).await;
            assert_eq!(clock.now(), at);
        });
    }
}

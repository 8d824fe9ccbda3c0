//! Clocks of the harness. The real clock delivers timed events on a precise timing path:
//! one thread that waits on a condition variable with a deadline (with the thread's
//! timer slack set to 1 ns on Linux), instead of tokio's timer wheel, which resolves to
//! about a millisecond. It sleeps until just before each deadline and yields for the
//! last few tens of microseconds, so it burns no core while idle.

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

type Job = Box<dyn FnOnce() + Send>;

/// How long before a deadline the timer stops sleeping and yields until it: the kernel's
/// wake-up from a timed wait is typically 20-60 µs late on a virtual machine.
const SPIN: Duration = Duration::from_micros(60);

enum Task {
    Wake(Waker),
    Run(Job),
}

struct Entry {
    at: Instant,
    seq: u64,
    task: Task,
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        self.at == other.at && self.seq == other.seq
    }
}
impl Eq for Entry {}
impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Entry {
    // Reversed: the earliest entry is the heap's top.
    fn cmp(&self, other: &Self) -> Ordering {
        other
            .at
            .cmp(&self.at)
            .then_with(|| other.seq.cmp(&self.seq))
    }
}

#[derive(Default)]
struct State {
    heap: BinaryHeap<Entry>,
    seq: u64,
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
        std::thread::Builder::new()
            .name("inferlat-timer".into())
            .spawn(move || run(thread_shared))?;
        Ok(Timer {
            handle: Arc::new(Handle { shared }),
        })
    }

    fn schedule(&self, at: Instant, task: Task) {
        let shared = &self.handle.shared;
        let mut st = shared.lock();
        let seq = st.seq;
        st.seq += 1;
        let earliest = st.heap.peek().is_none_or(|e| at < e.at);
        st.heap.push(Entry { at, seq, task });
        drop(st);
        if earliest {
            shared.cv.notify_one();
        }
    }

    /// Runs `job` on the timing thread at `at` (at once if `at` has passed). Jobs must be short.
    pub fn run_at(&self, at: Instant, job: impl FnOnce() + Send + 'static) {
        self.schedule(at, Task::Run(Box::new(job)));
    }

    /// A future that completes at `at`.
    pub fn sleep_until(&self, at: Instant) -> Sleep {
        Sleep {
            at,
            timer: self.clone(),
            registered: None,
        }
    }
}

fn set_timer_slack() {
    #[cfg(target_os = "linux")]
    // SAFETY: prctl(PR_SET_TIMERSLACK) only changes this thread's timer slack.
    unsafe {
        libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong, 0, 0, 0);
    }
}

fn run(shared: Arc<Shared>) {
    set_timer_slack();
    let mut due: Vec<Task> = Vec::new();
    let mut st = shared.lock();
    loop {
        if st.shutdown {
            return;
        }
        let now = Instant::now();
        match st.heap.peek().map(|e| e.at) {
            None => st = shared.cv.wait(st).unwrap_or_else(|e| e.into_inner()),
            Some(at) if at <= now => {
                while st.heap.peek().is_some_and(|e| e.at <= now) {
                    due.push(st.heap.pop().expect("peeked").task);
                }
                drop(st);
                for task in due.drain(..) {
                    match task {
                        Task::Wake(w) => w.wake(),
                        Task::Run(job) => job(),
                    }
                }
                st = shared.lock();
            }
            Some(at) if at - now <= SPIN => {
                // The last stretch: yield until the deadline instead of trusting the
                // kernel's wake-up, which lands tens of microseconds late.
                drop(st);
                while Instant::now() < at {
                    std::thread::yield_now();
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

/// Completes at an instant, woken by the precise timer.
pub struct Sleep {
    at: Instant,
    timer: Timer,
    registered: Option<Waker>,
}

impl Future for Sleep {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if Instant::now() >= self.at {
            return Poll::Ready(());
        }
        let fresh = self
            .registered
            .as_ref()
            .is_none_or(|w| !w.will_wake(cx.waker()));
        if fresh {
            let waker = cx.waker().clone();
            self.registered = Some(waker.clone());
            self.timer.schedule(self.at, Task::Wake(waker));
        }
        Poll::Pending
    }
}

/// The harness's clock.
#[derive(Clone, Debug)]
pub enum Clock {
    /// Wall-clock time with the precise timer.
    Real(Timer),
}

impl Clock {
    pub fn real() -> std::io::Result<Self> {
        Ok(Clock::Real(Timer::start()?))
    }

    pub fn now(&self) -> Instant {
        match self {
            Clock::Real(_) => Instant::now(),
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Clock::Real(_) => "real",
        }
    }

    /// Completes at `at`.
    pub fn sleep_until(&self, at: Instant) -> Sleep {
        match self {
            Clock::Real(t) => t.sleep_until(at),
        }
    }

    pub fn sleep(&self, d: Duration) -> Sleep {
        self.sleep_until(self.now() + d)
    }

    /// Runs a short job at `at`.
    pub fn run_at(&self, at: Instant, job: impl FnOnce() + Send + 'static) {
        match self {
            Clock::Real(t) => t.run_at(at, job),
        }
    }
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
        });
    }
}

//! The deterministic executor and its virtual clock.
//!
//! [`Sim`] holds every task (a boxed future) and a *ready queue* of the
//! tasks woken since they last ran. One step takes one ready task, chosen
//! by the seeded [`Rng`] (so each seed gives its own interleaving of the
//! same tasks), and polls it once. Wakers put their task back on the ready
//! queue; they are `Send + Sync` (they reach the scheduler through a
//! mutex) since `rtm_driver::rt::Runtime` requires it, but everything runs on
//! the thread that drives the simulation.
//!
//! Time is virtual: it only moves when no task is ready, and then it jumps
//! straight to the earliest timer ([`Runtime::sleep`]), whose wakers run.
//! [`Runtime::now`] is a real [`Instant`] taken once at the start plus the
//! virtual time elapsed, so the driver's deadlines work unchanged.
//!
//! [`SimClock`] reads the virtual time from anywhere (a hook, another
//! task) so a test can record *when* things happen.
//!
//! A [`Sim`] owns its tasks: dropping it drops every task still pending
//! (tasks hold the runtime, so they would otherwise keep one another alive).

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use rtm_driver::rt::{BoxFuture, Runtime, RuntimeRef};

use super::rng::Rng;

/// Polls allowed at one virtual instant before a run is called a livelock
/// (tasks that keep waking one another without time ever having to move).
const MAX_POLLS_PER_INSTANT: u64 = 5_000_000;

/// The executor and its clock; see the [module docs](self).
pub(crate) struct Sim {
    core: Arc<Core>,
}

/// What tasks, wakers, timers and the runtime handle share.
struct Core {
    /// The real instant virtual time zero stands for.
    base: Instant,
    state: Mutex<State>,
}

struct State {
    /// Virtual time elapsed since the start.
    now: Duration,
    /// Every task, by id; `None` once it finished.
    tasks: Vec<Option<Task>>,
    /// Ids of the tasks woken and not yet run. A set ordered by id, so the
    /// pick depends on which tasks are ready, not on the order they were
    /// woken in (which a `HashMap` inside the server may vary per process).
    ready: BTreeSet<usize>,
    /// Pending timers, by (deadline, registration order), with the waker
    /// of the task waiting on each.
    timers: BTreeMap<(Duration, u64), Waker>,
    next_timer: u64,
    /// Picks the next ready task.
    rng: Rng,
    /// Polls so far (a run's fingerprint: same seed, same count).
    polls: u64,
}

struct Task {
    /// `None` while the task is being polled.
    future: Option<BoxFuture<()>>,
    /// On the ready queue.
    queued: bool,
    waker: Waker,
}

/// How [`Sim::run_until`] stopped (other than by an error).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stop {
    /// The condition held.
    Condition,
    /// The next timer lies past the time limit: the clock stopped there.
    TimeLimit,
    /// No task is ready and no timer is pending: nothing can ever happen.
    Idle,
}

/// The virtual clock, readable from anywhere ([`Sim::clock`]).
#[derive(Clone)]
pub(crate) struct SimClock {
    core: Arc<Core>,
}

/// The [`Runtime`] a server runs on in the simulation ([`Sim::runtime`]).
struct SimRuntime {
    core: Arc<Core>,
}

impl Core {
    fn lock(&self) -> MutexGuard<'_, State> {
        // No code panics while holding it (polls run outside the lock).
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn spawn(self: &Arc<Self>, future: BoxFuture<()>) {
        let mut state = self.lock();
        let id = state.tasks.len();
        let waker = Waker::from(Arc::new(TaskWaker {
            core: Arc::downgrade(self),
            id,
        }));
        state.tasks.push(Some(Task {
            future: Some(future),
            queued: true,
            waker,
        }));
        state.ready.insert(id);
    }

    fn now(&self) -> Duration {
        self.lock().now
    }
}

/// Puts its task back on the ready queue.
struct TaskWaker {
    core: Weak<Core>,
    id: usize,
}

impl Wake for TaskWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        let Some(core) = self.core.upgrade() else {
            return;
        };
        let mut state = core.lock();
        let state = &mut *state;
        if let Some(Some(task)) = state.tasks.get_mut(self.id) {
            if !task.queued {
                task.queued = true;
                state.ready.insert(self.id);
            }
        }
    }
}

/// A timer: completes once virtual time reaches its deadline.
struct Sleep {
    core: Arc<Core>,
    deadline: Duration,
    /// Its entry in the timer table, once registered.
    key: Option<(Duration, u64)>,
}

impl Future for Sleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        let mut state = this.core.lock();
        if state.now >= this.deadline {
            if let Some(key) = this.key.take() {
                state.timers.remove(&key);
            }
            return Poll::Ready(());
        }
        let key = match this.key {
            Some(key) => key,
            None => {
                state.next_timer += 1;
                let key = (this.deadline, state.next_timer);
                this.key = Some(key);
                key
            }
        };
        state.timers.insert(key, cx.waker().clone());
        Poll::Pending
    }
}

impl Drop for Sleep {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            self.core.lock().timers.remove(&key);
        }
    }
}

impl Runtime for SimRuntime {
    fn spawn(&self, task: BoxFuture<()>) {
        self.core.spawn(task);
    }

    fn sleep(&self, duration: Duration) -> BoxFuture<()> {
        Box::pin(Sleep {
            deadline: self.core.now() + duration,
            core: self.core.clone(),
            key: None,
        })
    }

    fn now(&self) -> Instant {
        self.core.base + self.core.now()
    }
}

impl SimClock {
    /// Virtual time elapsed since the simulation started.
    pub(crate) fn elapsed(&self) -> Duration {
        self.core.now()
    }
}

impl Sim {
    /// A simulation whose scheduling choices follow `seed`.
    pub(crate) fn new(seed: u64) -> Self {
        Sim {
            core: Arc::new(Core {
                base: Instant::now(),
                state: Mutex::new(State {
                    now: Duration::ZERO,
                    tasks: Vec::new(),
                    ready: BTreeSet::new(),
                    timers: BTreeMap::new(),
                    next_timer: 0,
                    rng: Rng::new(seed),
                    polls: 0,
                }),
            }),
        }
    }

    /// The runtime to start servers on (and to sleep on from sim tasks).
    pub(crate) fn runtime(&self) -> RuntimeRef {
        Arc::new(SimRuntime {
            core: self.core.clone(),
        })
    }

    /// The virtual clock.
    pub(crate) fn clock(&self) -> SimClock {
        SimClock {
            core: self.core.clone(),
        }
    }

    /// Virtual time elapsed since the start.
    pub(crate) fn elapsed(&self) -> Duration {
        self.core.now()
    }

    /// Task polls so far.
    pub(crate) fn polls(&self) -> u64 {
        self.core.lock().polls
    }

    /// Adds a task; it runs once the simulation is driven.
    pub(crate) fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        self.core.spawn(Box::pin(task));
    }

    /// Runs tasks (and moves the clock) until `condition` holds, checked
    /// before every step; the clock never goes past `limit` (virtual time
    /// since the start). `Err` on a livelock.
    pub(crate) fn run_until(
        &self,
        mut condition: impl FnMut() -> bool,
        limit: Duration,
    ) -> Result<Stop, String> {
        let mut polls_here = 0u64;
        loop {
            if condition() {
                return Ok(Stop::Condition);
            }
            if self.step() {
                polls_here += 1;
                if polls_here > MAX_POLLS_PER_INSTANT {
                    return Err(format!(
                        "livelock: {MAX_POLLS_PER_INSTANT} polls at {:?} without the clock moving",
                        self.elapsed()
                    ));
                }
                continue;
            }
            match self.advance(limit) {
                Some(stop) => return Ok(stop),
                None => polls_here = 0,
            }
        }
    }

    /// Polls one ready task (chosen by the RNG); `false` when none is ready.
    fn step(&self) -> bool {
        let (id, mut future, waker) = {
            let mut guard = self.core.lock();
            let state = &mut *guard;
            loop {
                if state.ready.is_empty() {
                    return false;
                }
                let pick = state.rng.below(state.ready.len());
                let Some(&id) = state.ready.iter().nth(pick) else {
                    return false;
                };
                state.ready.remove(&id);
                let Some(Some(task)) = state.tasks.get_mut(id) else {
                    continue;
                };
                task.queued = false;
                if let Some(future) = task.future.take() {
                    let waker = task.waker.clone();
                    state.polls += 1;
                    break (id, future, waker);
                }
            }
        };
        let polled = future.as_mut().poll(&mut Context::from_waker(&waker));
        let mut state = self.core.lock();
        match polled {
            Poll::Pending => {
                if let Some(Some(task)) = state.tasks.get_mut(id) {
                    task.future = Some(future);
                }
            }
            Poll::Ready(()) => {
                state.tasks[id] = None;
                drop(state);
                // Dropped outside the lock: dropping may wake or spawn.
                drop(future);
            }
        }
        true
    }

    /// Nothing is ready: jumps to the earliest timer and wakes every timer
    /// due then. `Some` when the run must stop instead.
    fn advance(&self, limit: Duration) -> Option<Stop> {
        let due = {
            let mut state = self.core.lock();
            let Some((&(deadline, _), _)) = state.timers.first_key_value() else {
                return Some(Stop::Idle);
            };
            if deadline > limit {
                state.now = state.now.max(limit);
                return Some(Stop::TimeLimit);
            }
            state.now = state.now.max(deadline);
            let now = state.now;
            let mut due = Vec::new();
            while let Some(entry) = state.timers.first_entry() {
                if entry.key().0 > now {
                    break;
                }
                due.push(entry.remove());
            }
            due
        };
        for waker in due {
            waker.wake();
        }
        None
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        // Tasks hold the runtime, the runtime holds the tasks: break the
        // cycle by dropping every task left (outside the lock: their drops
        // may wake others, and a dropped connection task leaves its server).
        loop {
            let tasks: Vec<Task> = {
                let mut state = self.core.lock();
                state.ready.clear();
                state.timers.clear();
                state.tasks.iter_mut().filter_map(Option::take).collect()
            };
            if tasks.is_empty() {
                break;
            }
            drop(tasks);
        }
    }
}

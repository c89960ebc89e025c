//! A connection's mailbox: where Emit, Publish and Push (from any task, on
//! any core) leave frames for the connection's own task, where the router
//! leaves the requests it settled for it (an `auth` or `subscribe` that
//! waited for the broker), and how the application asks that task to close.
//!
//! Bounded as [`rtm_core::outbound`] says: a delivery that the rule refuses
//! (more than `max_outbound_bytes` for a connection whose socket is known
//! stalled, or more than `max_outbound_burst_bytes` in any case) drops what
//! waits and marks the mailbox *overflowed*; the connection's task then
//! closes 1013 `rtm/slow-consumer`. The task tells the mailbox what it holds
//! unwritten and whether its socket is stalled.
//!
//! Waking: the task registers its waker with every [`Mailbox::take`]; the
//! first delivery after that takes the waker and wakes it, later ones find
//! none (the task is already due to take). `take` may leave frames behind
//! (it takes at most a budget): [`Taken::more`] says so, and the task comes
//! back for them by itself, before it sleeps. Everything is under one lock
//! so that no wake-up can be lost between a take and a delivery; a model
//! check (loom, in this module's tests) explores those interleavings.

use std::collections::VecDeque;
use std::ops::DerefMut;
use std::task::Waker;

use bytes::Bytes;
use rtm_core::{CloseCode, OutboundBounds, Settled};

/// Everything behind the mailbox's lock.
#[derive(Debug, Default)]
pub(crate) struct Queue {
    frames: VecDeque<Bytes>,
    /// Bytes of `frames`.
    bytes: usize,
    /// Bytes the task took and has not written yet (they count too).
    held: usize,
    /// The task's socket has accepted nothing for the slow-consumer timeout.
    stalled: bool,
    overflowed: bool,
    /// Requests the router settled for this connection.
    settled: Vec<Settled>,
    /// The application (or shutdown) asked the connection to close.
    close: Option<(CloseCode, &'static str)>,
    /// Shutdown began: finish the requests in flight, then close 1001.
    draining: bool,
    /// The task is gone: deliveries are dropped.
    gone: bool,
    /// Registered by the task; taken (and woken) by the first delivery after.
    waker: Option<Waker>,
}

/// The lock around a [`Queue`]: `std`'s in production, loom's in the model check.
pub(crate) trait QueueLock: Send + Sync + 'static {
    fn new(queue: Queue) -> Self;
    fn lock(&self) -> impl DerefMut<Target = Queue> + '_;
}

impl QueueLock for std::sync::Mutex<Queue> {
    fn new(queue: Queue) -> Self {
        std::sync::Mutex::new(queue)
    }

    fn lock(&self) -> impl DerefMut<Target = Queue> + '_ {
        // Nothing panics while holding it; a poisoned queue is still consistent.
        std::sync::Mutex::lock(self).unwrap_or_else(|e| e.into_inner())
    }
}

/// What [`Mailbox::take`] tells the connection's task (besides the frames
/// and settled requests it moved).
#[derive(Debug, Default)]
pub(crate) struct Taken {
    /// A delivery was refused: close 1013.
    pub(crate) overflowed: bool,
    pub(crate) close: Option<(CloseCode, &'static str)>,
    pub(crate) draining: bool,
    /// Frames were left behind (past the budget): take again once written.
    pub(crate) more: bool,
    /// Bytes of the frames left behind.
    pub(crate) left_bytes: usize,
    /// What the mailbox now counts as held by the task (what it said with
    /// [`Mailbox::set_progress`], plus what this take gave it).
    pub(crate) held: usize,
}

/// A connection's inbox of frames and requests from outside its task.
#[derive(Debug)]
pub(crate) struct Mailbox<L: QueueLock = std::sync::Mutex<Queue>> {
    queue: L,
    bounds: OutboundBounds,
}

impl<L: QueueLock> Mailbox<L> {
    pub(crate) fn new(bounds: OutboundBounds) -> Self {
        Mailbox {
            queue: L::new(Queue::default()),
            bounds,
        }
    }

    /// Leaves a frame (or refuses it, as the slow-consumer rule says); wakes
    /// the task if it waits.
    pub(crate) fn deliver(&self, frame: &Bytes) {
        let waker = {
            let mut queue = self.queue.lock();
            if queue.gone || queue.overflowed {
                return;
            }
            let waiting = queue.bytes + queue.held + frame.len();
            if self.bounds.admits(waiting, queue.stalled) {
                queue.bytes += frame.len();
                queue.frames.push_back(frame.clone());
            } else {
                queue.overflowed = true;
                queue.frames = VecDeque::new();
                queue.bytes = 0;
            }
            queue.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// Hands the task a request the router settled, after `frames` (its
    /// own frames, as [`Settled::take_frames`] gives them), in one step: the
    /// task never takes those frames without the request, so it never
    /// writes a reply for a request it has not seen settled.
    pub(crate) fn settle(&self, frames: Vec<Bytes>, settled: Settled) {
        self.with_wake(|queue| {
            if queue.gone {
                return;
            }
            for frame in frames {
                if queue.overflowed {
                    break;
                }
                let waiting = queue.bytes + queue.held + frame.len();
                if self.bounds.admits(waiting, queue.stalled) {
                    queue.bytes += frame.len();
                    queue.frames.push_back(frame);
                } else {
                    queue.overflowed = true;
                    queue.frames = VecDeque::new();
                    queue.bytes = 0;
                }
            }
            queue.settled.push(settled);
        });
    }

    /// Asks the task to close with this code (the first request wins).
    pub(crate) fn close(&self, code: CloseCode, reason: &'static str) {
        self.with_wake(|queue| {
            queue.close.get_or_insert((code, reason));
        });
    }

    /// Shutdown began.
    pub(crate) fn drain(&self) {
        self.with_wake(|queue| queue.draining = true);
    }

    fn with_wake(&self, change: impl FnOnce(&mut Queue)) {
        let waker = {
            let mut queue = self.queue.lock();
            change(&mut queue);
            queue.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// Moves what waits into `frames` (which the caller keeps empty between
    /// calls: when all of it is taken the two buffers are swapped, so neither
    /// side allocates), at most `budget` bytes of frames (at least one frame
    /// when any waits and `budget` is not 0), and, with `settled`, the
    /// settled requests there. With `waker`, registers it first, so nothing
    /// delivered after this call goes unnoticed.
    pub(crate) fn take(
        &self,
        waker: Option<&Waker>,
        budget: usize,
        frames: &mut VecDeque<Bytes>,
        settled: Option<&mut Vec<Settled>>,
    ) -> Taken {
        let mut queue = self.queue.lock();
        if let Some(waker) = waker {
            if !queue.waker.as_ref().is_some_and(|w| w.will_wake(waker)) {
                queue.waker = Some(waker.clone());
            }
        }
        // A caller that does not take settled requests takes no frame while
        // one waits: the frames may hold its reply (see `settle`).
        let budget = if settled.is_none() && !queue.settled.is_empty() {
            0
        } else {
            budget
        };
        if let Some(settled) = settled {
            if settled.is_empty() {
                std::mem::swap(&mut queue.settled, settled);
            } else {
                settled.append(&mut queue.settled);
            }
        }
        let mut taken = Taken {
            overflowed: queue.overflowed,
            close: queue.close,
            draining: queue.draining,
            more: false,
            left_bytes: 0,
            held: 0,
        };
        if budget == 0 {
            taken.more = !queue.frames.is_empty();
            taken.left_bytes = queue.bytes;
        } else if queue.bytes <= budget {
            frames.clear();
            std::mem::swap(&mut queue.frames, frames);
            // Still unwritten, now held by the task: the bound keeps counting them.
            queue.held += queue.bytes;
            queue.bytes = 0;
        } else {
            let mut bytes = 0;
            while let Some(frame) = queue.frames.front() {
                if bytes > 0 && bytes + frame.len() > budget {
                    break;
                }
                bytes += frame.len();
                if let Some(frame) = queue.frames.pop_front() {
                    frames.push_back(frame);
                }
            }
            queue.bytes -= bytes;
            queue.held += bytes;
            taken.more = !queue.frames.is_empty();
            taken.left_bytes = queue.bytes;
        }
        taken.held = queue.held;
        taken
    }

    /// Whether frames wait.
    pub(crate) fn has_frames(&self) -> bool {
        !self.queue.lock().frames.is_empty()
    }

    /// The task holds `held` bytes of events unwritten, and its socket is
    /// `stalled` (or not).
    pub(crate) fn set_progress(&self, held: usize, stalled: bool) {
        let mut queue = self.queue.lock();
        queue.held = held;
        queue.stalled = stalled;
    }

    /// The task ended: drop what waits and refuse what comes.
    pub(crate) fn close_for_good(&self) {
        let mut queue = self.queue.lock();
        queue.gone = true;
        queue.frames = VecDeque::new();
        queue.bytes = 0;
        queue.settled = Vec::new();
        queue.waker = None;
    }

    /// Bytes waiting.
    #[cfg(test)]
    pub(crate) fn queued_bytes(&self) -> usize {
        self.queue.lock().bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bounds(max_bytes: usize, burst_bytes: usize) -> OutboundBounds {
        OutboundBounds {
            max_bytes,
            burst_bytes,
        }
    }

    fn take(mailbox: &Mailbox, budget: usize) -> (Taken, VecDeque<Bytes>) {
        let waker = futures_util::task::noop_waker();
        let mut frames = VecDeque::new();
        let taken = mailbox.take(Some(&waker), budget, &mut frames, Some(&mut Vec::new()));
        (taken, frames)
    }

    #[test]
    fn a_burst_past_the_bound_is_kept_for_a_connection_whose_socket_takes_bytes() {
        let mailbox = Mailbox::new(bounds(10, 100));
        for _ in 0..10 {
            mailbox.deliver(&Bytes::from_static(b"1234567890"));
        }
        assert_eq!(mailbox.queued_bytes(), 100, "up to the burst limit");
        let (taken, frames) = take(&mailbox, usize::MAX);
        assert!(!taken.overflowed);
        assert_eq!(frames.len(), 10);
    }

    #[test]
    fn past_the_burst_limit_everything_queued_is_dropped() {
        let mailbox = Mailbox::new(bounds(10, 20));
        mailbox.deliver(&Bytes::from_static(b"1234567890"));
        mailbox.deliver(&Bytes::from_static(b"1234567890"));
        mailbox.deliver(&Bytes::from_static(b"1"));
        let (taken, frames) = take(&mailbox, usize::MAX);
        assert!(taken.overflowed);
        assert!(frames.is_empty());
    }

    #[test]
    fn a_stalled_connection_gets_no_more_than_the_bound_counting_what_it_holds() {
        let mailbox = Mailbox::new(bounds(10, 100));
        mailbox.set_progress(8, true);
        mailbox.deliver(&Bytes::from_static(b"12"));
        assert!(
            !take(&mailbox, usize::MAX).0.overflowed,
            "exactly at the bound"
        );
        mailbox.set_progress(10, true);
        mailbox.deliver(&Bytes::from_static(b"1"));
        assert!(take(&mailbox, usize::MAX).0.overflowed);
    }

    #[test]
    fn take_respects_the_budget_but_always_gives_one_frame_and_says_more_waits() {
        let mailbox = Mailbox::new(bounds(100, 100));
        for _ in 0..3 {
            mailbox.deliver(&Bytes::from_static(b"1234567890"));
        }
        let (taken, frames) = take(&mailbox, 5);
        assert_eq!(frames.len(), 1);
        assert!(taken.more);
        assert_eq!(taken.left_bytes, 20);
        let (taken, frames) = take(&mailbox, 20);
        assert_eq!(frames.len(), 2);
        assert!(!taken.more);
        assert_eq!(mailbox.queued_bytes(), 0);
    }
}

/// The hand-off between delivering tasks and the connection's task, model
/// checked with loom: every interleaving of deliveries, a settled request,
/// a close and the task's takes (partial ones included) is explored, and in
/// each the task must end up with everything delivered, or see the
/// overflow or the close — never sleep with something waiting (loom fails
/// a run in which every thread is blocked).
#[cfg(test)]
mod model {
    use std::future::poll_fn;
    use std::sync::Arc;
    use std::task::Poll;

    use loom::sync::Mutex as LoomMutex;

    use super::*;

    impl QueueLock for LoomMutex<Queue> {
        fn new(queue: Queue) -> Self {
            LoomMutex::new(queue)
        }

        fn lock(&self) -> impl DerefMut<Target = Queue> + '_ {
            LoomMutex::lock(self).unwrap_or_else(|e| e.into_inner())
        }
    }

    type ModelMailbox = Mailbox<LoomMutex<Queue>>;

    fn bounds(max_bytes: usize, burst_bytes: usize) -> OutboundBounds {
        OutboundBounds {
            max_bytes,
            burst_bytes,
        }
    }

    /// Runs the connection's task until it has `want` frames, or an overflow
    /// or a close; parks (and is woken only by the mailbox) in between.
    /// Takes `budget` bytes at a time and comes back for the rest by
    /// itself, as the driver does with [`Taken::more`].
    fn task(
        mailbox: &ModelMailbox,
        budget: usize,
        want: usize,
        settled_want: usize,
    ) -> (usize, bool) {
        let mut frames = VecDeque::new();
        let mut settled = Vec::new();
        let (mut got, mut got_settled) = (0, 0);
        loom::future::block_on(poll_fn(|cx| loop {
            let taken = mailbox.take(Some(cx.waker()), budget, &mut frames, Some(&mut settled));
            got += frames.drain(..).count();
            got_settled += settled.drain(..).count();
            if taken.overflowed || taken.close.is_some() {
                return Poll::Ready((got, true));
            }
            if got == want && got_settled == settled_want {
                return Poll::Ready((got, false));
            }
            if taken.more {
                continue;
            }
            return Poll::Pending;
        }))
    }

    /// Explores the interleavings of `model` with at most 3 preemptions per
    /// run (loom's advice: bugs of real code show within 2 or 3), which
    /// keeps each check to seconds.
    fn check(model: impl Fn() + Sync + Send + 'static) {
        let mut builder = loom::model::Builder::new();
        builder.preemption_bound = Some(3);
        builder.check(model);
    }

    fn frame() -> Bytes {
        Bytes::from_static(b"0123456789")
    }

    fn settled() -> Settled {
        // A settled request as the router hands it: a denied subscribe.
        let ticket =
            rtm_core::testkit::subscribe_ticket(rtm_core::ConnId::from_u64(1), "e", &["t"]);
        Settled::Subscribed(ticket, Err(rtm_core::RtmError::internal("model")))
    }

    #[test]
    fn deliveries_racing_partial_takes_are_all_taken() {
        check(|| {
            let mailbox = Arc::new(ModelMailbox::new(bounds(1_000, 1_000)));
            let sender = {
                let mailbox = mailbox.clone();
                loom::thread::spawn(move || {
                    for _ in 0..3 {
                        mailbox.deliver(&frame());
                    }
                })
            };
            let settler = {
                let mailbox = mailbox.clone();
                loom::thread::spawn(move || {
                    mailbox.deliver(&frame());
                    mailbox.settle(Vec::new(), settled());
                })
            };
            // A budget of one frame: every take is partial while more wait.
            let (got, stopped) = task(&mailbox, 10, 4, 1);
            assert_eq!((got, stopped), (4, false));
            sender.join().unwrap();
            settler.join().unwrap();
        });
    }

    /// A settled request's own frames (a synced subscribe's reply) are
    /// never taken before the request: a take that gets them gets it too,
    /// and a take that does not ask for settled requests gets no frame
    /// while one waits.
    #[test]
    fn a_requests_own_frames_never_come_before_the_request() {
        check(|| {
            let mailbox = Arc::new(ModelMailbox::new(bounds(1_000, 1_000)));
            let settler = {
                let mailbox = mailbox.clone();
                loom::thread::spawn(move || mailbox.settle(vec![frame()], settled()))
            };
            let waker = futures_util::task::noop_waker();
            // A take without settled requests (a reply pulling the events before it).
            let mut frames = VecDeque::new();
            mailbox.take(Some(&waker), usize::MAX, &mut frames, None);
            assert!(
                frames.is_empty(),
                "the request's reply was taken without the request"
            );
            // A take with them: both, or neither.
            let mut settled = Vec::new();
            mailbox.take(Some(&waker), usize::MAX, &mut frames, Some(&mut settled));
            assert_eq!(frames.len(), settled.len());
            settler.join().unwrap();
        });
    }

    #[test]
    fn an_overflow_racing_a_take_is_seen() {
        check(|| {
            // Room for two frames: the third overflows, whenever it comes.
            let mailbox = Arc::new(ModelMailbox::new(bounds(20, 20)));
            let sender = {
                let mailbox = mailbox.clone();
                loom::thread::spawn(move || {
                    for _ in 0..3 {
                        mailbox.deliver(&frame());
                    }
                })
            };
            // The task holds what it took unwritten: everything counts.
            let (_, stopped) = task(&mailbox, 10, usize::MAX, 0);
            assert!(stopped, "the overflow was never seen");
            sender.join().unwrap();
        });
    }

    #[test]
    fn a_close_racing_deliveries_is_seen() {
        check(|| {
            let mailbox = Arc::new(ModelMailbox::new(bounds(1_000, 1_000)));
            let sender = {
                let mailbox = mailbox.clone();
                loom::thread::spawn(move || {
                    mailbox.deliver(&frame());
                    mailbox.deliver(&frame());
                })
            };
            let closer = {
                let mailbox = mailbox.clone();
                loom::thread::spawn(move || mailbox.close(CloseCode::GOING_AWAY, "bye"))
            };
            let (_, stopped) = task(&mailbox, 10, usize::MAX, 0);
            assert!(stopped, "the close was never seen");
            sender.join().unwrap();
            closer.join().unwrap();
        });
    }
}

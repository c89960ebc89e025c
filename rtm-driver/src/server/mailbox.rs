//! A connection's mailbox: where Emit, Publish and Push (from any task, on
//! any core) leave frames for the connection's own task, and how the
//! application asks that task to close.
//!
//! Bounded in bytes: a delivery that would take the mailbox past
//! `max_outbound_bytes` is dropped and the mailbox marked *overflowed*; the
//! connection's task then closes 1013 `rtm/slow-consumer`.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use bytes::Bytes;
use futures_util::task::AtomicWaker;
use rtm_core::CloseCode;

#[derive(Debug, Default)]
struct Queue {
    frames: VecDeque<Bytes>,
    bytes: usize,
    overflowed: bool,
    /// The application (or shutdown) asked the connection to close.
    close: Option<(CloseCode, &'static str)>,
    /// Shutdown began: finish the requests in flight, then close 1001.
    draining: bool,
    /// The task is gone: deliveries are dropped.
    gone: bool,
}

/// What [`Mailbox::take`] tells the connection's task (besides the frames).
#[derive(Debug, Default)]
pub(crate) struct Taken {
    pub(crate) overflowed: bool,
    pub(crate) close: Option<(CloseCode, &'static str)>,
    pub(crate) draining: bool,
}

/// A connection's inbox of frames and requests from outside its task.
#[derive(Debug)]
pub(crate) struct Mailbox {
    queue: Mutex<Queue>,
    waker: AtomicWaker,
    max_bytes: usize,
    /// Bytes the task holds unwritten (they count toward the bound too).
    held: AtomicUsize,
    /// Frames waiting (mirrors the queue, for a check without the lock).
    waiting: AtomicUsize,
}

impl Mailbox {
    pub(crate) fn new(max_bytes: usize) -> Self {
        Mailbox {
            queue: Mutex::new(Queue::default()),
            waker: AtomicWaker::new(),
            max_bytes,
            held: AtomicUsize::new(0),
            waiting: AtomicUsize::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        // Nothing panics while holding it; a poisoned queue is still consistent.
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The task holds this many bytes unwritten.
    pub(crate) fn set_held(&self, bytes: usize) {
        self.held.store(bytes, Ordering::Relaxed);
    }

    /// Leaves a frame; wakes the task when it was idle.
    pub(crate) fn deliver(&self, frame: &Bytes) {
        let wake = {
            let mut queue = self.lock();
            if queue.gone || queue.overflowed {
                return;
            }
            let held = self.held.load(Ordering::Relaxed);
            if queue.bytes + held + frame.len() > self.max_bytes {
                queue.overflowed = true;
                queue.frames.clear();
                queue.bytes = 0;
                self.waiting.store(0, Ordering::Relaxed);
                true
            } else {
                queue.bytes += frame.len();
                queue.frames.push_back(frame.clone());
                self.waiting.store(queue.frames.len(), Ordering::Relaxed);
                queue.frames.len() == 1
            }
        };
        if wake {
            self.waker.wake();
        }
    }

    /// Whether frames wait (a hint: read without the lock).
    pub(crate) fn has_frames(&self) -> bool {
        self.waiting.load(Ordering::Relaxed) > 0
    }

    /// Asks the task to close with this code (the first request wins).
    pub(crate) fn close(&self, code: CloseCode, reason: &'static str) {
        self.lock().close.get_or_insert((code, reason));
        self.waker.wake();
    }

    /// Shutdown began.
    pub(crate) fn drain(&self) {
        self.lock().draining = true;
        self.waker.wake();
    }

    /// Moves what waits into `into` (which the caller keeps empty between
    /// calls: when all of it is taken the two buffers are swapped, so neither
    /// side allocates), at most `budget` bytes of frames (at least one frame
    /// when any waits). With `waker`, registers it first, so nothing
    /// delivered after this call goes unnoticed.
    pub(crate) fn take(
        &self,
        waker: Option<&std::task::Waker>,
        budget: usize,
        into: &mut VecDeque<Bytes>,
    ) -> Taken {
        if let Some(waker) = waker {
            self.waker.register(waker);
        }
        let mut queue = self.lock();
        let taken = Taken {
            overflowed: queue.overflowed,
            close: queue.close,
            draining: queue.draining,
        };
        if queue.bytes <= budget {
            into.clear();
            std::mem::swap(&mut queue.frames, into);
            // Still unwritten, now held by the task: the bound keeps counting them.
            self.held.fetch_add(queue.bytes, Ordering::Relaxed);
            queue.bytes = 0;
        } else {
            let mut bytes = 0;
            while let Some(frame) = queue.frames.front() {
                if bytes > 0 && bytes + frame.len() > budget {
                    break;
                }
                bytes += frame.len();
                if let Some(frame) = queue.frames.pop_front() {
                    into.push_back(frame);
                }
            }
            queue.bytes -= bytes;
            self.held.fetch_add(bytes, Ordering::Relaxed);
        }
        self.waiting.store(queue.frames.len(), Ordering::Relaxed);
        taken
    }

    /// Bytes waiting.
    #[cfg(test)]
    pub(crate) fn queued_bytes(&self) -> usize {
        self.lock().bytes
    }

    /// The task ended: drop what waits and refuse what comes.
    pub(crate) fn close_for_good(&self) {
        let mut queue = self.lock();
        queue.gone = true;
        queue.frames = VecDeque::new();
        queue.bytes = 0;
        self.waiting.store(0, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deliveries_past_the_bound_overflow_and_drop_everything_queued() {
        let mailbox = Mailbox::new(10);
        let waker = futures_util::task::noop_waker();
        mailbox.deliver(&Bytes::from_static(b"12345"));
        mailbox.deliver(&Bytes::from_static(b"12345"));
        assert_eq!(mailbox.queued_bytes(), 10, "exactly at the bound");
        mailbox.deliver(&Bytes::from_static(b"1"));
        let mut frames = VecDeque::new();
        let taken = mailbox.take(Some(&waker), usize::MAX, &mut frames);
        assert!(taken.overflowed);
        assert!(frames.is_empty());
        // Bytes the task holds count too.
        let mailbox = Mailbox::new(10);
        mailbox.set_held(8);
        mailbox.deliver(&Bytes::from_static(b"123"));
        assert!(
            mailbox
                .take(Some(&waker), usize::MAX, &mut frames)
                .overflowed
        );
    }

    #[test]
    fn take_respects_the_budget_but_always_gives_one_frame() {
        let mailbox = Mailbox::new(100);
        let waker = futures_util::task::noop_waker();
        for _ in 0..3 {
            mailbox.deliver(&Bytes::from_static(b"1234567890"));
        }
        let mut frames = VecDeque::new();
        mailbox.take(Some(&waker), 5, &mut frames);
        assert_eq!(frames.len(), 1);
        frames.clear();
        mailbox.take(Some(&waker), 20, &mut frames);
        assert_eq!(frames.len(), 2);
        assert_eq!(mailbox.queued_bytes(), 0);
    }
}

//! The router every connection's task shares, behind a read-write lock:
//! [`Routing`].
//!
//! Emit, Publish, Push and broker deliveries take it for reading (so they
//! run on several cores at once); a connection joining, subscribing or
//! leaving, and the broker's answers, take it for writing. Writing goes
//! through [`RouterMut`], which carries out what the router decided before
//! the lock is released: the requests it settled go to their connections'
//! mailboxes, the broker link's task is woken when topic changes wait or a
//! confirmation deadline came nearer, and the gauges of subscriptions and
//! broker topics are set. No caller can forget any of it.

use std::ops::{Deref, DerefMut};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Instant;

use rtm_core::{Router, ServerConfig};

use crate::metrics::Metrics;
use crate::server::mailbox::Mailbox;

/// The shared router, and the signal to the broker link's topic task.
pub(crate) struct Routing {
    router: RwLock<Router<Arc<Mailbox>>>,
    changed: async_channel::Sender<()>,
    changed_rx: async_channel::Receiver<()>,
    /// The signal to the stream-read task: a read was queued.
    reads: async_channel::Sender<()>,
    reads_rx: async_channel::Receiver<()>,
    /// Its gauges (subscriptions, broker topics) are set as a write ends.
    metrics: Arc<Metrics>,
}

impl Routing {
    pub(crate) fn new(config: &ServerConfig, metrics: Arc<Metrics>) -> Self {
        let (changed, changed_rx) = async_channel::bounded(1);
        let (reads, reads_rx) = async_channel::bounded(1);
        Routing {
            router: RwLock::new(Router::new(config)),
            changed,
            changed_rx,
            reads,
            reads_rx,
            metrics,
        }
    }

    /// The router, for fan-out and getters.
    pub(crate) fn read(&self) -> RwLockReadGuard<'_, Router<Arc<Mailbox>>> {
        // Router methods do not panic; a poisoned lock still guards consistent state.
        self.router.read().unwrap_or_else(|e| e.into_inner())
    }

    /// The router, to change it; see [`RouterMut`].
    pub(crate) fn write(&self) -> RouterMut<'_> {
        let router = self.router.write().unwrap_or_else(|e| e.into_inner());
        let deadline = router.poll_timeout();
        let counts = (router.push_subscription_total(), router.topic_count());
        RouterMut {
            router,
            changed: &self.changed,
            reads: &self.reads,
            metrics: &self.metrics,
            deadline,
            counts,
        }
    }

    /// Resolves when topic changes may wait or the earliest confirmation
    /// deadline moved (`Err` never: the sender lives as long as this).
    pub(crate) fn changed(&self) -> async_channel::Recv<'_, ()> {
        self.changed_rx.recv()
    }

    /// Resolves when stream reads may wait ([`Router::poll_stream_read`]).
    pub(crate) fn reads_queued(&self) -> async_channel::Recv<'_, ()> {
        self.reads_rx.recv()
    }
}

/// The router's write lock; on release it delivers the requests the router
/// settled and wakes the broker link when there is something for it.
pub(crate) struct RouterMut<'a> {
    router: RwLockWriteGuard<'a, Router<Arc<Mailbox>>>,
    changed: &'a async_channel::Sender<()>,
    reads: &'a async_channel::Sender<()>,
    metrics: &'a Metrics,
    /// The earliest confirmation deadline when the lock was taken.
    deadline: Option<Instant>,
    /// Push subscriptions and broker topics when the lock was taken (the
    /// gauges move by what this write changed).
    counts: (usize, usize),
}

impl Deref for RouterMut<'_> {
    type Target = Router<Arc<Mailbox>>;

    fn deref(&self) -> &Self::Target {
        &self.router
    }
}

impl DerefMut for RouterMut<'_> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.router
    }
}

impl Drop for RouterMut<'_> {
    fn drop(&mut self) {
        while let Some(mut settled) = self.router.poll_settled() {
            // A connection already gone has no mailbox: nothing to answer.
            if let Some(mailbox) = self.router.handle(settled.conn()) {
                // A synced request's missed events and reply, queued among
                // the events where it was settled: after those handed over
                // before, ahead of its streams' live events (which can only
                // come once this write lock is released), and taken by the
                // connection's task with the request itself.
                let frames = settled.take_frames().unwrap_or_default();
                mailbox.settle(frames, settled);
            }
        }
        let nearer = match (self.deadline, self.router.poll_timeout()) {
            (_, None) => false,
            (None, Some(_)) => true,
            (Some(before), Some(now)) => now < before,
        };
        // Only news wakes the topic task: it takes the lock itself while its
        // batch travels, and must not wake itself for changes it cannot take.
        if self.router.take_topic_signal() || nearer {
            // Bounded to one: a signal already waiting says the same.
            let _ = self.changed.try_send(());
        }
        if self.router.take_read_signal() {
            let _ = self.reads.try_send(());
        }
        self.metrics.routing(
            self.counts,
            (
                self.router.push_subscription_total(),
                self.router.topic_count(),
            ),
        );
    }
}

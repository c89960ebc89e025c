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
    /// Its gauges (subscriptions, broker topics) are set as a write ends.
    metrics: Arc<Metrics>,
}

impl Routing {
    pub(crate) fn new(config: &ServerConfig, metrics: Arc<Metrics>) -> Self {
        let (changed, changed_rx) = async_channel::bounded(1);
        Routing {
            router: RwLock::new(Router::new(config)),
            changed,
            changed_rx,
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
}

/// The router's write lock; on release it delivers the requests the router
/// settled and wakes the broker link when there is something for it.
pub(crate) struct RouterMut<'a> {
    router: RwLockWriteGuard<'a, Router<Arc<Mailbox>>>,
    changed: &'a async_channel::Sender<()>,
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
        while let Some(settled) = self.router.poll_settled() {
            // A connection already gone has no mailbox: nothing to answer.
            if let Some(mailbox) = self.router.handle(settled.conn()) {
                mailbox.settle(settled);
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
        self.metrics.routing(
            self.counts,
            (
                self.router.push_subscription_total(),
                self.router.topic_count(),
            ),
        );
    }
}

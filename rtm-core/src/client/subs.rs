//! The push subscriptions a client holds, re-sent after every reconnect.

use crate::frame::PushSub;

use super::CallId;

/// One subscription as it was asked for, with the calls waiting for its
/// acknowledgement while it could not be sent (the client was offline).
#[derive(Debug)]
pub(crate) struct HeldSub {
    pub(crate) sub: PushSub,
    pub(crate) waiters: Vec<CallId>,
    /// Refused with a temporary error: sent again at this time (the retry's
    /// number beside).
    pub(crate) retry: Option<(std::time::Instant, u32)>,
    /// Retries so far since it was last taken.
    pub(crate) retries: u32,
}

/// Every subscription held, in the order first asked.
#[derive(Debug, Default)]
pub(crate) struct Subscriptions {
    held: Vec<HeldSub>,
}

/// Tags sorted and deduplicated, so equal tag sets compare equal.
pub(crate) fn normalize(event: &str, tags: &[String]) -> PushSub {
    let mut tags = tags.to_vec();
    tags.sort();
    tags.dedup();
    PushSub {
        event: event.to_owned(),
        tags,
        since: None,
    }
}

impl Subscriptions {
    /// Remembers `sub` (once) and returns its entry.
    pub(crate) fn add(&mut self, sub: PushSub) -> &mut HeldSub {
        let index = match self.held.iter().position(|h| h.sub == sub) {
            Some(index) => index,
            None => {
                self.held.push(HeldSub {
                    sub,
                    waiters: Vec::new(),
                    retry: None,
                    retries: 0,
                });
                self.held.len() - 1
            }
        };
        &mut self.held[index]
    }

    /// Whether `sub` is still held (it may have been unsubscribed meanwhile).
    pub(crate) fn get_mut(&mut self, sub: &PushSub) -> Option<&mut HeldSub> {
        self.held.iter_mut().find(|h| h.sub == *sub)
    }

    /// Forgets `tags` of `event`; returns the waiters of entries left with no tag.
    pub(crate) fn remove_tags(&mut self, event: &str, tags: &[String]) -> Vec<CallId> {
        let mut orphans = Vec::new();
        for h in self.held.iter_mut().filter(|h| h.sub.event == event) {
            h.sub.tags.retain(|t| !tags.contains(t));
            if h.sub.tags.is_empty() {
                orphans.append(&mut h.waiters);
            }
        }
        self.held
            .retain(|h| h.sub.event != event || !h.sub.tags.is_empty());
        orphans
    }

    /// Forgets `sub` entirely (the server denied it).
    pub(crate) fn forget(&mut self, sub: &PushSub) {
        self.held.retain(|h| h.sub != *sub);
    }

    /// Drops a waiter (its call timed out).
    pub(crate) fn remove_waiter(&mut self, call: CallId) {
        for h in &mut self.held {
            h.waiters.retain(|w| *w != call);
        }
    }

    /// Every entry, to re-send them.
    pub(crate) fn iter_mut(&mut self) -> impl Iterator<Item = &mut HeldSub> {
        self.held.iter_mut()
    }

    /// Forgets everything; returns every waiter.
    pub(crate) fn clear(&mut self) -> Vec<CallId> {
        self.held.drain(..).flat_map(|h| h.waiters).collect()
    }

    /// The earliest retry due.
    pub(crate) fn next_retry(&self) -> Option<std::time::Instant> {
        self.held
            .iter()
            .filter_map(|h| h.retry.map(|(at, _)| at))
            .min()
    }

    /// How many entries are held.
    pub(crate) fn len(&self) -> usize {
        self.held.len()
    }
}

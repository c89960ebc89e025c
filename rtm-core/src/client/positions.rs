//! The positions a client keeps in the streams of its push subscriptions
//! (ext; see [`crate::positions`]): sent as `since` with every subscribe,
//! so that after a reconnect the server sends what was missed; used to
//! drop an event seen twice and to notice one missed.

use std::collections::{HashMap, HashSet, VecDeque};

use crate::positions::{EventPosition, Since, StreamState, USER_STREAM};
use crate::recovery::Unrecoverable;
use crate::stream::StreamPosition;

/// The event part of the user's stream's key (no event has it: names are
/// non-empty); its tag is [`USER_STREAM`].
pub(crate) const USER_KEY: &str = "";

/// Push ids remembered to show a Push to several tracked tags once.
const RECENT_PUSHES: usize = 1024;

/// What to do with a positioned event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Hand it to the application: it is the stream's next.
    Deliver,
    /// Drop it: the application had it (or the stream is being resynced,
    /// and the recovery brings it).
    Drop,
    /// Drop it and subscribe again with the stream's position: events
    /// were missed before it.
    Gap,
}

#[derive(Debug, Default)]
struct Stream {
    position: Option<StreamPosition>,
    /// A subscribe with `since` is on its way after a gap: events wait for it.
    resyncing: bool,
}

/// Every tracked stream's position, by (event, tag).
#[derive(Debug, Default)]
pub(crate) struct Positions {
    streams: HashMap<(String, String), Stream>,
    recent: VecDeque<String>,
    recent_set: HashSet<String>,
}

impl Positions {
    /// `since` for a subscribe of `tags` of `event`: each tag's position,
    /// or `null` when it has none yet.
    pub(crate) fn since(&self, event: &str, tags: &[String]) -> Since {
        Since(
            tags.iter()
                .map(|tag| {
                    let key = (event.to_owned(), tag.clone());
                    let position = self.streams.get(&key).and_then(|s| s.position.clone());
                    (tag.clone(), position)
                })
                .collect(),
        )
    }

    /// `since` for an `auth`: the user's stream's position, or `null`.
    pub(crate) fn user_since(&self) -> Since {
        self.since(USER_KEY, &[USER_STREAM.to_owned()])
    }

    /// A positioned event of `event` arrived (no tag: the user's stream).
    pub(crate) fn handle_event(&mut self, event: &str, at: &EventPosition) -> Verdict {
        let key = match &at.tag {
            Some(tag) => (event.to_owned(), tag.clone()),
            None => (USER_KEY.to_owned(), USER_STREAM.to_owned()),
        };
        let stream = self.streams.entry(key).or_default();
        let next = &at.position;
        match &stream.position {
            Some(had) if had.epoch == next.epoch && next.offset <= had.offset => {
                return Verdict::Drop;
            }
            // The next one (while resyncing: the recovered ones come so).
            Some(had) if had.epoch == next.epoch && next.offset == had.offset + 1 => {}
            // Past a jump, while the recovery is on its way: it brings them.
            Some(_) if stream.resyncing => return Verdict::Drop,
            // A jump, or a new epoch (the store lost the stream): ask the
            // server, which recovers or says it cannot.
            Some(_) => {
                stream.resyncing = true;
                return Verdict::Gap;
            }
            None => {}
        }
        stream.position = Some(next.clone());
        match &at.push {
            Some(push) if !self.remember_push(push) => Verdict::Drop,
            _ => Verdict::Deliver,
        }
    }

    /// Whether `push` is new (then remembered).
    fn remember_push(&mut self, push: &str) -> bool {
        if self.recent_set.contains(push) {
            return false;
        }
        if self.recent.len() >= RECENT_PUSHES {
            if let Some(old) = self.recent.pop_front() {
                self.recent_set.remove(&old);
            }
        }
        self.recent.push_back(push.to_owned());
        self.recent_set.insert(push.to_owned());
        true
    }

    /// A subscribe's reply said where its streams are; returns the streams
    /// that could not be recovered, with why.
    pub(crate) fn handle_streams(
        &mut self,
        event: &str,
        states: Vec<StreamState>,
    ) -> Vec<(String, Unrecoverable)> {
        let mut lost = Vec::new();
        for state in states {
            let stream = self
                .streams
                .entry((event.to_owned(), state.tag.clone()))
                .or_default();
            stream.position = Some(state.position);
            stream.resyncing = false;
            if let Some(Err(reason)) = state.recovered {
                lost.push((state.tag, reason));
            }
        }
        lost
    }

    /// A resubscribe after a gap failed: events are taken again (the next
    /// jump asks again).
    pub(crate) fn resync_failed(&mut self, event: &str, tags: &[String]) {
        for tag in tags {
            if let Some(stream) = self.streams.get_mut(&(event.to_owned(), tag.clone())) {
                stream.resyncing = false;
            }
        }
    }

    /// `tags` of `event` are unsubscribed: their positions are forgotten.
    pub(crate) fn forget(&mut self, event: &str, tags: &[String]) {
        for tag in tags {
            self.streams.remove(&(event.to_owned(), tag.clone()));
        }
    }

    /// Forgets everything (the client closed).
    pub(crate) fn clear(&mut self) {
        self.streams.clear();
    }
}

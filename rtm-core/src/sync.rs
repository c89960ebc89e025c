//! The connections that track their place in a stream, and their switch
//! from history to live: the [`Router`](crate::Router)'s part of recovery
//! (see [`crate::recovery`] and `docs/history.md`).
//!
//! A connection that subscribes with `since` ([`crate::positions`]) tracks
//! the streams of the tags listed (those whose event keeps history). For
//! each, in this order, with no race:
//!
//! 1. it is registered as *syncing* on the stream when the subscription is
//!    added: the stream's live events for it are buffered from then on
//!    (bounded by [`HistoryConfig::max_sync_buffer`]; past it, unless the
//!    read has the events not kept, the recovery ends with `gap`, and the
//!    client resyncs when it sees an offset jump);
//! 2. once the broker confirmed the topics, the stream is read from the
//!    client's offset + 1 ([`StreamReadRequest`], carried out by the
//!    adapter and reported with [`Router::handle_stream_read`](crate::Router::handle_stream_read));
//! 3. the read and the buffer are merged by [`crate::recovery::recover`],
//!    all or nothing; the connection becomes *live* on the stream (its
//!    later events reach it at once, with their positions) and the
//!    subscribe is settled with what to send before its reply.
//!
//! A read that fails, the broker going down, or a sync past its deadline
//! (twice [`ServerConfig::broker_confirm_timeout`](crate::ServerConfig::broker_confirm_timeout)
//! from the subscribe) fails the subscribe with `rtm/broker-unavailable`,
//! undone.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;

use crate::peer::ConnId;
use crate::positions::{encode_positioned, StreamState};
use crate::recovery::{recover, HistoryPage, Recovery, StreamEvent, Unrecoverable};
use crate::stream::{HistoryConfig, StreamOptions, StreamPosition};
use crate::topic::Topic;

/// A subscribe's switch from history to live, in progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SyncId(u64);

/// One stream operation a sync needs, on `topic`'s stream; report its
/// outcome with [`Router::handle_stream_read`](crate::Router::handle_stream_read)
/// under `id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamReadRequest {
    /// Hand it back with the result.
    pub id: ReadId,
    /// The stream's topic.
    pub topic: Topic,
    /// What to do.
    pub op: StreamOp,
    /// The stream's options (a store that makes the stream needs its TTL).
    pub options: StreamOptions,
}

/// What a [`StreamReadRequest`] asks of the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamOp {
    /// Read the stream (`rtm_broker::Broker::read_stream`): its position
    /// and its events from offset `from` (`u64::MAX`: none, only the
    /// position), at most `limit`.
    Read {
        /// The first offset wanted.
        from: u64,
        /// The most events wanted.
        limit: usize,
    },
    /// Give the stream a new epoch, its offset kept
    /// (`rtm_broker::Broker::reset_stream`): a client was found ahead of
    /// it (the store lost its newest events), and no offset may name two
    /// events. Report the new position with no events.
    Reset,
}

/// Which read of which sync.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ReadId {
    sync: SyncId,
    index: usize,
}

/// What a subscribe that synced sends before its reply, and the reply's
/// streams.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Synced {
    /// The events to send before the reply, in order (each with its
    /// position), every tag's in turn.
    pub frames: Vec<Bytes>,
    /// Each tracked stream's state, for the reply.
    pub states: Vec<StreamState>,
}

/// Live events buffered for one syncing connection.
#[derive(Debug, Default)]
struct Buffer {
    /// Each with its stream's epoch: an event of an older epoch may still
    /// be on its way when the store made a new one.
    events: Vec<(String, StreamEvent)>,
    /// The newest event not kept (the buffer was full), with its epoch.
    dropped: Option<(String, u64)>,
}

/// The connections tracking one stream (event, tag).
#[derive(Debug, Default)]
pub(crate) struct Trackers {
    /// They get every event with its position, past the position their
    /// sync ended at (a live copy of an event the history read already
    /// gave is not sent again).
    pub(crate) live: HashMap<ConnId, StreamPosition>,
    /// Their events are buffered until their sync ends.
    pub(crate) syncing: HashSet<ConnId>,
    buffers: Mutex<HashMap<ConnId, Buffer>>,
}

impl Trackers {
    /// Whether `conn` tracks this stream (live or syncing).
    pub(crate) fn holds(&self, conn: &ConnId) -> bool {
        self.live.contains_key(conn) || self.syncing.contains(conn)
    }

    fn is_empty(&self) -> bool {
        self.live.is_empty() && self.syncing.is_empty()
    }

    /// Buffers a live event for each syncing connection (`cap` at most each).
    pub(crate) fn buffer(&self, epoch: &str, event: &StreamEvent, cap: usize) {
        if self.syncing.is_empty() {
            return;
        }
        // Uncontended: stream events are handed over by one task.
        let mut buffers = self.buffers.lock().unwrap_or_else(|e| e.into_inner());
        for buffer in buffers.values_mut() {
            if buffer.events.len() >= cap || buffer.dropped.is_some() {
                buffer.dropped = Some((epoch.to_owned(), event.offset));
            } else {
                buffer.events.push((epoch.to_owned(), event.clone()));
            }
        }
    }

    /// The live connections that have not had the event at `position`
    /// yet.
    pub(crate) fn live_for<'a>(
        &'a self,
        position: &'a StreamPosition,
    ) -> impl Iterator<Item = &'a ConnId> + 'a {
        self.live.iter().filter_map(move |(conn, had)| {
            (had.epoch != position.epoch || had.offset < position.offset).then_some(conn)
        })
    }

    fn take_buffer(&mut self, conn: ConnId) -> Buffer {
        let buffers = self.buffers.get_mut().unwrap_or_else(|e| e.into_inner());
        buffers.remove(&conn).unwrap_or_default()
    }
}

/// How a tag was held before a sync began (what undoing it restores).
/// A connection's subscribes on one (event, tag) go one at a time
/// (`sub_queue`), so no two of its syncs share a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Before {
    Untracked,
    Live(StreamPosition),
}

#[derive(Debug)]
struct TagSync {
    tag: Arc<str>,
    since: Option<StreamPosition>,
    before: Before,
    page: Option<HistoryPage>,
    /// The client was ahead of the stream: a reset is on its way, or done.
    reset: Reset,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reset {
    No,
    Asked,
    Done,
}

#[derive(Debug)]
struct Sync {
    conn: ConnId,
    event: Arc<str>,
    options: StreamOptions,
    tags: Vec<TagSync>,
    deadline: Instant,
    /// Reads asked for and not answered yet (none before the topics are confirmed).
    waiting: usize,
    started: bool,
}

/// Why a sync ended without its streams.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SyncFailed {
    /// A read failed, the broker went down, or the deadline passed.
    Broker(String),
}

/// The key under which a user's stream is tracked: the empty event name
/// (no event has it: names are non-empty), the user id as its tag.
pub(crate) const USER_EVENT: &str = "";

/// The broker topic of a tracked stream.
fn stream_topic(namespace: &str, event: &str, tag: &str) -> Topic {
    if event == USER_EVENT {
        Topic::user(namespace, tag)
    } else {
        Topic::push(namespace, event, tag)
    }
}

/// Whether the client's position is past its stream's under the same epoch.
fn is_ahead(tag: &TagSync) -> bool {
    match (&tag.since, &tag.page) {
        (Some(since), Some(page)) => {
            since.epoch == page.top.epoch && since.offset > page.top.offset
        }
        _ => false,
    }
}

/// Every tracked stream of a server, and the syncs under way.
#[derive(Debug, Default)]
pub(crate) struct Tracking {
    /// The server's namespace (for the topics of resets).
    namespace: String,
    /// event → tag → its trackers.
    streams: HashMap<Arc<str>, HashMap<Arc<str>, Trackers>>,
    syncs: HashMap<SyncId, Sync>,
    reads: VecDeque<StreamReadRequest>,
    read_signal: bool,
    next: u64,
}

impl Tracking {
    /// The trackers of (event, tag), if any connection tracks it.
    pub(crate) fn trackers(&self, event: &str, tag: &str) -> Option<&Trackers> {
        self.streams.get(event)?.get(tag)
    }

    /// Whether any stream is tracked (the fan-out's fast path).
    pub(crate) fn is_empty(&self) -> bool {
        self.streams.is_empty()
    }

    /// Syncs under way.
    pub(crate) fn sync_count(&self) -> usize {
        self.syncs.len()
    }

    /// Begins a sync of `conn` on `tags` of `event` (each with the client's
    /// position or `None`): from now on their live events are buffered for
    /// it. The reads start with [`Tracking::start`].
    pub(crate) fn begin(
        &mut self,
        conn: ConnId,
        event: &Arc<str>,
        tags: Vec<(Arc<str>, Option<StreamPosition>)>,
        options: StreamOptions,
        deadline: Instant,
    ) -> SyncId {
        self.next += 1;
        let id = SyncId(self.next);
        let by_tag = self.streams.entry(event.clone()).or_default();
        let tags = tags
            .into_iter()
            .map(|(tag, since)| {
                let trackers = by_tag.entry(tag.clone()).or_default();
                let before = match trackers.live.remove(&conn) {
                    Some(had) => Before::Live(had),
                    None => Before::Untracked,
                };
                trackers.syncing.insert(conn);
                let buffers = trackers
                    .buffers
                    .get_mut()
                    .unwrap_or_else(|e| e.into_inner());
                buffers.insert(conn, Buffer::default());
                TagSync {
                    tag,
                    since,
                    before,
                    page: None,
                    reset: Reset::No,
                }
            })
            .collect();
        self.syncs.insert(
            id,
            Sync {
                conn,
                event: event.clone(),
                options,
                tags,
                deadline,
                waiting: 0,
                started: false,
            },
        );
        id
    }

    /// The subscription is in place (its topics confirmed): read each
    /// stream. `namespace` names the topics.
    pub(crate) fn start(&mut self, id: SyncId, namespace: &str, config: &HistoryConfig) {
        self.namespace = namespace.into();
        let Some(sync) = self.syncs.get_mut(&id) else {
            return;
        };
        sync.started = true;
        sync.waiting = sync.tags.len();
        for (index, tag) in sync.tags.iter().enumerate() {
            let (from, limit) = match &tag.since {
                // One past the cap: more than `max_recovery` missed shows.
                Some(since) => (
                    since.offset.saturating_add(1),
                    config.max_recovery.saturating_add(1),
                ),
                None => (u64::MAX, 1),
            };
            self.reads.push_back(StreamReadRequest {
                id: ReadId { sync: id, index },
                topic: stream_topic(namespace, &sync.event, &tag.tag),
                op: StreamOp::Read { from, limit },
                options: sync.options,
            });
        }
        self.read_signal = true;
    }

    /// A read came back: `Some` when it was the sync's last, with the sync
    /// ended (its connection live on every stream, or everything undone).
    pub(crate) fn handle_read(
        &mut self,
        id: ReadId,
        result: Result<HistoryPage, String>,
        config: &HistoryConfig,
        now_ms: u64,
    ) -> Option<(SyncId, Result<Synced, SyncFailed>)> {
        let sync = self.syncs.get_mut(&id.sync)?;
        let tag = sync.tags.get_mut(id.index)?;
        match (tag.reset, &tag.page) {
            (Reset::Asked, _) => tag.reset = Reset::Done,
            // Answered already.
            (_, Some(_)) => return None,
            _ => {}
        }
        match result {
            // A reset's answer: the stream's new position, no event.
            Ok(page) => tag.page = Some(page),
            Err(err) => return Some((id.sync, Err(self.fail(id.sync, err)))),
        }
        sync.waiting = sync.waiting.saturating_sub(1);
        if sync.waiting > 0 {
            return None;
        }
        // A client ahead of a stream under the same epoch (the store lost
        // its newest events): the stream gets a new epoch first.
        let ahead: Vec<usize> = sync
            .tags
            .iter()
            .enumerate()
            .filter(|(_, tag)| config.reset_when_ahead && tag.reset == Reset::No && is_ahead(tag))
            .map(|(index, _)| index)
            .collect();
        if !ahead.is_empty() {
            sync.waiting = ahead.len();
            for index in ahead {
                let tag = &mut sync.tags[index];
                tag.reset = Reset::Asked;
                self.reads.push_back(StreamReadRequest {
                    id: ReadId {
                        sync: id.sync,
                        index,
                    },
                    topic: stream_topic(&self.namespace, &sync.event, &tag.tag),
                    op: StreamOp::Reset,
                    options: sync.options,
                });
            }
            self.read_signal = true;
            return None;
        }
        Some((id.sync, Ok(self.finish(id.sync, config, now_ms))))
    }

    /// The merge of every stream's read with its buffer; the connection
    /// goes live on each.
    fn finish(&mut self, id: SyncId, config: &HistoryConfig, now_ms: u64) -> Synced {
        let Some(sync) = self.syncs.remove(&id) else {
            return Synced::default();
        };
        let mut synced = Synced::default();
        for tag in sync.tags {
            let Some(trackers) = self
                .streams
                .get_mut(&sync.event)
                .and_then(|t| t.get_mut(&tag.tag))
            else {
                continue;
            };
            if !trackers.syncing.contains(&sync.conn) {
                // Unsubscribed meanwhile.
                continue;
            }
            let Some(page) = tag.page else { continue };
            let buffer = trackers.take_buffer(sync.conn);
            trackers.syncing.remove(&sync.conn);
            let since = tag.since.clone().unwrap_or_else(|| page.top.clone());
            // Only the read's epoch is merged: the offsets of another say
            // nothing about this one.
            let buffered = buffer
                .events
                .into_iter()
                .filter(|(epoch, _)| *epoch == page.top.epoch)
                .map(|(_, event)| event)
                .collect();
            // Events not kept that the read does not cover were lost to
            // this connection.
            let lost = buffer.dropped.as_ref().is_some_and(|(epoch, offset)| {
                *epoch != page.top.epoch || *offset > page.top.offset
            });
            let mut recovery = recover(&since, page, buffered, config, now_ms);
            if tag.reset == Reset::Done {
                // Told as what it is: the client was ahead (the new epoch
                // follows from that).
                recovery = match recovery {
                    Recovery::Unrecoverable { live, position, .. } => Recovery::Unrecoverable {
                        reason: Unrecoverable::Ahead,
                        live,
                        position,
                    },
                    recovered @ Recovery::Recovered { .. } => recovered,
                };
            }
            if lost {
                // What is delivered stops before them, and the client sees
                // the jump.
                recovery = match recovery {
                    Recovery::Recovered { events, position } => Recovery::Unrecoverable {
                        reason: Unrecoverable::Gap,
                        live: events,
                        position,
                    },
                    other @ Recovery::Unrecoverable { .. } => other,
                };
            }
            let (events, recovered) = match recovery {
                Recovery::Recovered { ref events, .. } => (events, Some(Ok(()))),
                Recovery::Unrecoverable {
                    ref live, reason, ..
                } => (live, Some(Err(reason))),
            };
            let position = recovery.position().clone();
            trackers.live.insert(sync.conn, position.clone());
            for event in events {
                let at = StreamPosition::new(event.offset, position.epoch.clone());
                // A user's stream's events carry no tag.
                let wire_tag = (*sync.event != *USER_EVENT).then_some(&*tag.tag);
                synced.frames.push(encode_positioned(
                    &event.frame,
                    wire_tag,
                    &at,
                    event.push.as_deref(),
                ));
            }
            let state_tag = if *sync.event == *USER_EVENT {
                crate::positions::USER_STREAM.to_owned()
            } else {
                tag.tag.to_string()
            };
            synced.states.push(StreamState {
                tag: state_tag,
                position,
                recovered: tag.since.as_ref().and(recovered),
            });
        }
        synced
    }

    /// Ends a sync without its streams: each tag back as it was held.
    fn fail(&mut self, id: SyncId, why: String) -> SyncFailed {
        if let Some(sync) = self.syncs.remove(&id) {
            for tag in sync.tags {
                self.restore(sync.conn, &sync.event, &tag.tag, tag.before);
            }
        }
        SyncFailed::Broker(why)
    }

    /// Fails the sync `id` (the subscribe was refused or undone).
    pub(crate) fn abandon(&mut self, id: SyncId) {
        self.fail(id, String::new());
    }

    fn restore(&mut self, conn: ConnId, event: &str, tag: &str, before: Before) {
        let Some(trackers) = self.streams.get_mut(event).and_then(|t| t.get_mut(tag)) else {
            return;
        };
        if let Before::Live(had) = before {
            trackers.live.insert(conn, had);
        }
        trackers.syncing.remove(&conn);
        trackers.take_buffer(conn);
        self.prune(event, tag);
    }

    fn prune(&mut self, event: &str, tag: &str) {
        let Some(by_tag) = self.streams.get_mut(event) else {
            return;
        };
        if by_tag.get(tag).is_some_and(Trackers::is_empty) {
            by_tag.remove(tag);
        }
        if by_tag.is_empty() {
            self.streams.remove(event);
        }
    }

    /// `conn` no longer holds (event, tag): it stops tracking it (a sync on
    /// it skips it when it ends).
    pub(crate) fn untrack(&mut self, conn: ConnId, event: &str, tag: &str) {
        let Some(trackers) = self.streams.get_mut(event).and_then(|t| t.get_mut(tag)) else {
            return;
        };
        trackers.live.remove(&conn);
        if trackers.syncing.remove(&conn) {
            trackers.take_buffer(conn);
        }
        self.prune(event, tag);
    }

    /// `conn` is gone: its syncs end with nothing to answer.
    pub(crate) fn forget(&mut self, conn: ConnId) {
        let ids: Vec<SyncId> = self
            .syncs
            .iter()
            .filter(|(_, s)| s.conn == conn)
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            self.fail(id, String::new());
        }
        self.reads.retain(|r| self.syncs.contains_key(&r.id.sync));
    }

    /// Fails every sync whose reads started (the broker went down), or, with
    /// `now`, those past their deadline. Returns them.
    pub(crate) fn fail_due(&mut self, now: Option<Instant>) -> Vec<(SyncId, SyncFailed)> {
        let due: Vec<SyncId> = self
            .syncs
            .iter()
            .filter(|(_, s)| match now {
                Some(now) => s.deadline <= now,
                None => s.started,
            })
            .map(|(id, _)| *id)
            .collect();
        let why = if now.is_some() {
            "the history read took too long"
        } else {
            "the broker went down while the history was read"
        };
        let failed = due
            .into_iter()
            .map(|id| (id, self.fail(id, why.to_owned())))
            .collect();
        self.reads.retain(|r| self.syncs.contains_key(&r.id.sync));
        failed
    }

    /// The earliest sync deadline.
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        self.syncs.values().map(|s| s.deadline).min()
    }

    /// The next read to carry out.
    pub(crate) fn poll_read(&mut self) -> Option<StreamReadRequest> {
        self.reads.pop_front()
    }

    /// Whether a read was queued since the last call (which resets it).
    pub(crate) fn take_read_signal(&mut self) -> bool {
        std::mem::take(&mut self.read_signal)
    }
}

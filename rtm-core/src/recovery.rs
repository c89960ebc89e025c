//! Recovery: what a client that was away missed on one stream, all of it
//! or none (see `docs/history.md`).
//!
//! The switch from history to live has no race when it goes in this order
//! (Centrifugo's): the server subscribes to the stream's broker topic
//! first and buffers the live events that arrive, then reads the history
//! from the client's position, then [`recover`] merges the two by offset,
//! dropping duplicates; a hole anywhere fails the recovery instead of
//! hiding it.
//!
//! A recovery either returns every event from `since.offset + 1` to the
//! newest, in order ([`Recovery::Recovered`]), or returns none and says why
//! ([`Recovery::Unrecoverable`]): the epoch changed, the history no longer
//! has the oldest missed event, more were missed than
//! [`HistoryConfig::max_recovery`], one is older than
//! [`HistoryConfig::max_age`], or the client is ahead of the stream. The
//! client then reloads from the application's own store; the live events
//! after the stream's current position are delivered either way.

use bytes::Bytes;

use crate::envelope::{Envelope, EnvelopeError};
use crate::stream::{HistoryConfig, StreamPosition};

/// One event of a stream: its offset and its event frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamEvent {
    /// Its offset in the stream (from 1).
    pub offset: u64,
    /// When it was sent, in ms since the Unix epoch (the envelope's `at`).
    pub sent_at: Option<u64>,
    /// The event frame, as clients get it.
    pub frame: Bytes,
    /// For a Push to several tags: `"<origin>:<seq>"`, the same in each
    /// tag's stream (what `positions::encode_positioned` writes as `push`).
    pub push: Option<String>,
}

/// What a history read returned: the stream's position when it was read
/// and its events from the offset asked for, oldest first (at most the
/// count asked for).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryPage {
    /// The stream's epoch and newest offset.
    pub top: StreamPosition,
    /// The events kept from the offset asked for on.
    pub events: Vec<StreamEvent>,
}

impl StreamEvent {
    /// The event an envelope from a stream carries (its position in the
    /// header): `None` for an envelope without a position.
    pub fn from_envelope(envelope: Envelope) -> Option<StreamEvent> {
        let push = push_id(&envelope);
        let position = envelope.position?;
        Some(StreamEvent {
            offset: position.offset,
            sent_at: envelope.sent_at,
            push,
            frame: envelope.frame,
        })
    }
}

impl HistoryPage {
    /// A page from what a store read: `top`, and the kept envelopes
    /// (`rtm_broker::StreamRead`), each decoded. Fails on an envelope that
    /// does not decode, has no position, or is under another epoch than
    /// `top`'s.
    pub fn decode(
        top: StreamPosition,
        envelopes: Vec<Bytes>,
    ) -> Result<HistoryPage, EnvelopeError> {
        let events = envelopes
            .into_iter()
            .map(|wire| {
                let envelope = Envelope::decode(wire)?;
                match &envelope.position {
                    Some(p) if p.epoch == top.epoch => Ok(StreamEvent {
                        offset: p.offset,
                        sent_at: envelope.sent_at,
                        push: push_id(&envelope),
                        frame: envelope.frame,
                    }),
                    Some(_) => Err(EnvelopeError::BadPosition(
                        "another epoch than the stream's",
                    )),
                    None => Err(EnvelopeError::BadPosition(
                        "a kept event without a position",
                    )),
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(HistoryPage { top, events })
    }
}

/// A Push to several tags: its id, `"<origin>:<seq>"`.
pub fn push_id(envelope: &Envelope) -> Option<String> {
    envelope
        .tags
        .as_ref()
        .filter(|tags| tags.len() > 1)
        .map(|_| format!("{}:{}", envelope.origin, envelope.seq))
}

/// Why a stream could not be recovered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Unrecoverable {
    /// The stream's epoch is not the client's: the store lost the stream.
    #[error("the stream's epoch changed")]
    EpochChanged,
    /// The history no longer has the oldest event the client missed.
    #[error("the history no longer has what was missed")]
    Trimmed,
    /// More events were missed than a recovery returns.
    #[error("{missed} events were missed, over the limit of {max}")]
    TooMany {
        /// Events between the client's position and the top.
        missed: u64,
        /// [`HistoryConfig::max_recovery`].
        max: usize,
    },
    /// A missed event is older than [`HistoryConfig::max_age`].
    #[error("a missed event is older than the recovery's max age")]
    TooOld,
    /// The client's offset is past the stream's top under the same epoch:
    /// the store lost recent events (a failover). The stream's epoch must
    /// change so no offset is given twice.
    #[error("the client is ahead of the stream")]
    Ahead,
    /// The events read and those that arrived live leave a hole.
    #[error("a hole between the history and the live events")]
    Gap,
}

/// The outcome of [`recover`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recovery {
    /// Every missed event, in order, without duplicates, then the live
    /// events buffered after them (up to a hole among those, if any);
    /// `position` is the last one's (or the client's, when it missed
    /// nothing).
    Recovered {
        /// What to deliver, in order.
        events: Vec<StreamEvent>,
        /// Where the client is once it has them.
        position: StreamPosition,
    },
    /// None of the missed events: the client must reload. `live` are the
    /// events buffered after the stream's position when it was read (in
    /// order, without duplicates), delivered after the answer; `position`
    /// is where the client is once it has them.
    Unrecoverable {
        /// Why.
        reason: Unrecoverable,
        /// The live events after the top, in order.
        live: Vec<StreamEvent>,
        /// Where the client is once it has them.
        position: StreamPosition,
    },
}

impl Recovery {
    /// Where the client is once it has what this delivers.
    pub fn position(&self) -> &StreamPosition {
        match self {
            Recovery::Recovered { position, .. } | Recovery::Unrecoverable { position, .. } => {
                position
            }
        }
    }

    /// Whether every missed event is delivered.
    pub fn is_recovered(&self) -> bool {
        matches!(self, Recovery::Recovered { .. })
    }
}

/// Merges the history read after the live subscription was in place
/// (`page`) with the live events buffered meanwhile (`buffered`, in the
/// order they arrived, under the page's epoch), for a client at `since`.
/// `now_ms`: the time, in ms since the Unix epoch, against which
/// [`HistoryConfig::max_age`] is checked (events without a send time pass).
///
/// See the [module docs](self) for the rules.
pub fn recover(
    since: &StreamPosition,
    page: HistoryPage,
    buffered: Vec<StreamEvent>,
    config: &HistoryConfig,
    now_ms: u64,
) -> Recovery {
    let top = page.top.clone();
    if let Err(reason) = check(since, &page, config, now_ms) {
        return unrecoverable(reason, top, buffered);
    }
    let missed = page
        .events
        .into_iter()
        .filter(|e| e.offset <= top.offset)
        .chain(buffered.iter().cloned());
    // Past a hole, a later live event shows it, and the stream is healed
    // from history.
    let events = run_after(since.offset, missed);
    let last = events.last().map_or(since.offset, |e| e.offset);
    if last < top.offset {
        // A hole in what was missed: the history read did not cover it.
        return unrecoverable(Unrecoverable::Gap, top, buffered);
    }
    Recovery::Recovered {
        events,
        position: StreamPosition::new(last, top.epoch),
    }
}

/// The checks that need no merge.
fn check(
    since: &StreamPosition,
    page: &HistoryPage,
    config: &HistoryConfig,
    now_ms: u64,
) -> Result<(), Unrecoverable> {
    let top = &page.top;
    if top.epoch != since.epoch {
        return Err(Unrecoverable::EpochChanged);
    }
    if since.offset > top.offset {
        return Err(Unrecoverable::Ahead);
    }
    let missed = top.offset - since.offset;
    if missed > config.max_recovery as u64 {
        return Err(Unrecoverable::TooMany {
            missed,
            max: config.max_recovery,
        });
    }
    if missed == 0 {
        return Ok(());
    }
    match page.events.iter().find(|e| e.offset > since.offset) {
        Some(first) if first.offset == since.offset + 1 => {}
        _ => return Err(Unrecoverable::Trimmed),
    }
    if let Some(max_age) = config.max_age {
        let oldest_allowed = now_ms.saturating_sub(max_age.as_millis() as u64);
        let too_old = page
            .events
            .iter()
            .filter(|e| e.offset > since.offset && e.offset <= top.offset)
            .any(|e| e.sent_at.is_some_and(|at| at < oldest_allowed));
        if too_old {
            return Err(Unrecoverable::TooOld);
        }
    }
    Ok(())
}

/// The events from offset `after + 1` on, in order, each once, up to the
/// first hole: past a hole, what follows would hide it.
fn run_after(after: u64, events: impl IntoIterator<Item = StreamEvent>) -> Vec<StreamEvent> {
    let mut events: Vec<StreamEvent> = events.into_iter().filter(|e| e.offset > after).collect();
    events.sort_by_key(|e| e.offset);
    events.dedup_by_key(|e| e.offset);
    let run = events
        .iter()
        .zip(after + 1..)
        .take_while(|(e, want)| e.offset == *want)
        .count();
    events.truncate(run);
    events
}

/// None of the missed events: only the live ones after `top`, in order.
fn unrecoverable(
    reason: Unrecoverable,
    top: StreamPosition,
    buffered: Vec<StreamEvent>,
) -> Recovery {
    let live = run_after(top.offset, buffered);
    let position = StreamPosition::new(live.last().map_or(top.offset, |e| e.offset), top.epoch);
    Recovery::Unrecoverable {
        reason,
        live,
        position,
    }
}

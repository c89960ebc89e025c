//! Streams: the events of one Push (event, tag) or of one user's Publish,
//! kept in history with positions so a client that was away can recover
//! what it missed (see `docs/history.md`).
//!
//! - [`StreamPosition`]: an offset (`u64`, +1 per event of the stream) and
//!   the stream's epoch (a string that changes when the store lost the
//!   stream, so an offset is never reused for another event).
//! - [`StreamOptions`]: how much history a stream keeps, and for how long.
//! - [`HistoryConfig`]: which events have streams ([`EventPattern`]s), and
//!   the bounds of a recovery.
//!
//! History is off unless enabled for an event; Emit never has it (it is
//! local to one server and at most once).

use std::fmt;
use std::time::Duration;

/// Where a stream is: the offset of its last event and its epoch.
///
/// Offsets start at 1; a stream with no event yet is at offset 0. Two
/// positions compare only under the same epoch: a different epoch means
/// the store lost the stream (expired, evicted, flushed, failed over), and
/// the offsets of the old epoch say nothing about the new one.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StreamPosition {
    /// The offset of the last event (0: none yet).
    pub offset: u64,
    /// The stream's epoch: [`MAX_EPOCH_BYTES`] at most, of `[0-9A-Za-z_-]`.
    pub epoch: String,
}

/// The longest epoch a store may give, in bytes.
pub const MAX_EPOCH_BYTES: usize = 64;

impl StreamPosition {
    /// A position.
    pub fn new(offset: u64, epoch: impl Into<String>) -> Self {
        StreamPosition {
            offset,
            epoch: epoch.into(),
        }
    }

    /// Whether `epoch` is one a store may give: 1 to [`MAX_EPOCH_BYTES`]
    /// bytes of `[0-9A-Za-z_-]` (so it needs no escaping in JSON, in a
    /// Redis key or in a Lua string).
    pub fn is_valid_epoch(epoch: &str) -> bool {
        !epoch.is_empty()
            && epoch.len() <= MAX_EPOCH_BYTES
            && epoch
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    }
}

impl fmt::Display for StreamPosition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.offset, self.epoch)
    }
}

/// How much history one stream keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamOptions {
    /// Events kept, the newest (default 100); older ones are trimmed.
    pub size: usize,
    /// How long a stream is kept after its last event (default 300 s); its
    /// position (epoch and top offset) is kept as long.
    pub ttl: Duration,
}

impl StreamOptions {
    /// The default size: 100 events.
    pub const DEFAULT_SIZE: usize = 100;
    /// The default time to live after the last event: 300 s.
    pub const DEFAULT_TTL: Duration = Duration::from_secs(300);
}

impl Default for StreamOptions {
    fn default() -> Self {
        StreamOptions {
            size: Self::DEFAULT_SIZE,
            ttl: Self::DEFAULT_TTL,
        }
    }
}

/// A glob over event names: `*` matches any run of characters (also
/// none), `?` exactly one; anything else matches itself. `*` alone matches
/// every event.
///
/// ```
/// use rtm_core::EventPattern;
/// let rooms = EventPattern::new("room.*");
/// assert!(rooms.matches("room.message"));
/// assert!(!rooms.matches("dm"));
/// assert!(EventPattern::new("*").matches("anything"));
/// assert!(EventPattern::new("v?").matches("v2"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventPattern(String);

impl EventPattern {
    /// A pattern (see the type's docs).
    pub fn new(pattern: impl Into<String>) -> Self {
        EventPattern(pattern.into())
    }

    /// The pattern as given.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `event` matches: at worst the product of the two lengths
    /// (one `*` is backtracked at a time: no exponential blow-up whatever
    /// the pattern; event names are at most `max_name_bytes`).
    pub fn matches(&self, event: &str) -> bool {
        let pattern = self.0.as_str();
        // The usual shapes, without the walk: a name, or everything.
        if !pattern.contains(['*', '?']) {
            return pattern == event;
        }
        if pattern == "*" {
            return true;
        }
        // A walk over both strings by byte index, a character at a time
        // (no allocation: this runs for every Push and Publish once a
        // pattern is enabled).
        let next = |s: &str, i: usize| s[i..].chars().next();
        let (mut pi, mut ei) = (0, 0);
        // The last `*` seen, and where in `event` it was tried up to.
        let mut star: Option<(usize, usize)> = None;
        while let Some(c) = next(event, ei) {
            match next(pattern, pi) {
                Some('*') => {
                    star = Some((pi, ei));
                    pi += 1;
                }
                Some(p) if p == '?' || p == c => {
                    pi += p.len_utf8();
                    ei += c.len_utf8();
                }
                _ => match star {
                    Some((sp, se)) => {
                        // The `*` takes one more character of `event`.
                        let taken = se + next(event, se).map_or(1, char::len_utf8);
                        pi = sp + 1;
                        ei = taken;
                        star = Some((sp, taken));
                    }
                    None => return false,
                },
            }
        }
        pattern[pi..].bytes().all(|b| b == b'*')
    }
}

impl From<&str> for EventPattern {
    fn from(pattern: &str) -> Self {
        EventPattern::new(pattern)
    }
}

/// Which events keep history, and how far a recovery may go.
///
/// ```
/// use std::time::Duration;
/// use rtm_core::{HistoryConfig, StreamOptions};
///
/// let history = HistoryConfig::default()
///     .enable("room.*", StreamOptions::default())
///     .enable("dm", StreamOptions { size: 500, ttl: Duration::from_secs(3600) });
/// assert_eq!(history.options_for("room.message").map(|o| o.size), Some(100));
/// assert_eq!(history.options_for("dm").map(|o| o.size), Some(500));
/// assert!(history.options_for("typing").is_none());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryConfig {
    /// The patterns with history, first match wins.
    rules: Vec<(EventPattern, StreamOptions)>,
    /// The most events one recovery returns for one stream (default 300):
    /// a client that missed more is told it could not be recovered.
    pub max_recovery: usize,
    /// Events older than this are not recovered (default `None`: as old as
    /// the stream keeps them): a client that missed one is told it could
    /// not be recovered.
    pub max_age: Option<Duration>,
    /// The most live events buffered for one connection on one stream
    /// while its history is read (default 1,024). Past it the events not
    /// kept are lost to the connection unless the read has them: then the
    /// recovery ends with `gap` at the last buffered event, and the client,
    /// seeing the next event's offset jump, subscribes again with its
    /// position.
    pub max_sync_buffer: usize,
    /// A client ahead of its stream under the same epoch (its offset past
    /// the top: the store lost its newest events, as in a failover) makes
    /// the stream take a new epoch before it is answered `ahead`, so no
    /// offset names two events afterwards. Off by default: any client may
    /// claim any offset, so with it on one client can make every client of
    /// a stream it may subscribe to reload. Turn it on when the clients
    /// are trusted, or the store can lose writes. Off: answered `ahead`
    /// under the same epoch.
    pub reset_when_ahead: bool,
}

impl HistoryConfig {
    /// The default `max_recovery`: 300 events.
    pub const DEFAULT_MAX_RECOVERY: usize = 300;
    /// The default `max_sync_buffer`: 1,024 events.
    pub const DEFAULT_MAX_SYNC_BUFFER: usize = 1024;

    /// Keeps history for the events matching `pattern` (Push to any of
    /// their tags, and Publish to any user), with `options`. Patterns are
    /// tried in the order they were enabled; the first match wins.
    #[must_use]
    pub fn enable(mut self, pattern: impl Into<EventPattern>, options: StreamOptions) -> Self {
        self.rules.push((pattern.into(), options));
        self
    }

    /// The options of `event`'s streams, if it keeps history.
    pub fn options_for(&self, event: &str) -> Option<&StreamOptions> {
        self.rules
            .iter()
            .find(|(pattern, _)| pattern.matches(event))
            .map(|(_, options)| options)
    }

    /// The options of the first pattern enabled: what a user's stream (the
    /// events with history Published to one user, whatever their names) is
    /// read with.
    pub fn first_options(&self) -> Option<&StreamOptions> {
        self.rules.first().map(|(_, options)| options)
    }

    /// Whether any event keeps history.
    pub fn is_enabled(&self) -> bool {
        !self.rules.is_empty()
    }
}

impl Default for HistoryConfig {
    fn default() -> Self {
        HistoryConfig {
            rules: Vec::new(),
            max_recovery: Self::DEFAULT_MAX_RECOVERY,
            max_sync_buffer: Self::DEFAULT_MAX_SYNC_BUFFER,
            max_age: None,
            reset_when_ahead: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_as_globs() {
        let cases = [
            ("*", "", true),
            ("*", "room", true),
            ("room", "room", true),
            ("room", "rooms", false),
            ("room*", "room", true),
            ("room*", "room.7", true),
            ("*.msg", "room.msg", true),
            ("*.msg", "room.msg.x", false),
            ("a*b*c", "aXXbYYc", true),
            ("a*b*c", "aXXbYY", false),
            ("a?c", "abc", true),
            ("a?c", "ac", false),
            ("**", "x", true),
            ("é*", "été", true),
            ("?t?", "été", true),
            ("*é", "étéé", true),
            ("*é?", "étéxé", false),
            ("*x*", "ééxéé", true),
            ("", "", true),
            ("", "a", false),
        ];
        for (pattern, event, want) in cases {
            assert_eq!(
                EventPattern::new(pattern).matches(event),
                want,
                "{pattern} / {event}"
            );
        }
    }

    #[test]
    fn a_pathological_pattern_is_answered_without_blowing_up() {
        let pattern = EventPattern::new("*a*a*a*a*a*a*a*a*b");
        let event = "a".repeat(10_000);
        assert!(!pattern.matches(&event));
    }

    #[test]
    fn epochs_are_short_and_need_no_escaping() {
        assert!(StreamPosition::is_valid_epoch("k3J-9_x"));
        for bad in ["", "a b", "a\"b", "a\\b", "ü", &"x".repeat(65)] {
            assert!(!StreamPosition::is_valid_epoch(bad), "{bad:?}");
        }
    }
}

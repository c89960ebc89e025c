//! Positions on the wire (ext; see `docs/history.md` and `docs/protocol.md`):
//! what a client that keeps its place in a stream sends and receives.
//!
//! `@zexcore/rtm-client` 2.x never sends `since`, so it never receives any
//! of this: a connection gets positions only for the subscriptions it
//! asked them for.
//!
//! - A `subscribe` may carry `since`, an object from some of its tags to
//!   the client's position in that tag's stream, or `null` (no position
//!   yet: "tell me where the stream is"):
//!   `{"id":"7","type":"subscribe","event":"score","tags":["m1","m2"],"since":{"m1":{"offset":12,"epoch":"x1"},"m2":null}}`
//!   ([`Since`], parsed by [`parse_since`]).
//! - Its reply says where each of those streams is
//!   ([`with_streams`]): `{"id":"7","data":true,"streams":{"m1":{"offset":15,"epoch":"x1","recovered":true},"m2":{"offset":3,"epoch":"x1"}}}`.
//!   `recovered` is there for a tag sent with a position: `true` when
//!   every event after it was delivered, `false` (with a `reason`) when
//!   they could not be, and the client must reload from the application.
//!   A tag whose event keeps no history on this server is not listed.
//! - The recovered events come before the reply, and every later event of
//!   those streams after it, each with its position
//!   ([`encode_positioned`]): `{"event":"score","data":[1],"tag":"m1","offset":13,"epoch":"x1"}`;
//!   a Push to several tags also names the push (`"push":"<origin>:<seq>"`),
//!   the same in each tag's stream.

use std::collections::HashMap;
use std::io::Write as _;

use bytes::{BufMut, Bytes, BytesMut};
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::recovery::Unrecoverable;
use crate::stream::StreamPosition;

/// The key of `auth`'s `since` and of its reply's `streams`: the user's
/// stream (the events with history Published to the user).
pub const USER_STREAM: &str = "user";

/// A subscribe's `since`: for each tag listed, the client's position in
/// that tag's stream (`None`: it has none yet). Tags not listed are
/// subscribed without positions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Since(pub HashMap<String, Option<StreamPosition>>);

impl Since {
    /// Whether `tag` is listed, and its position.
    pub fn get(&self, tag: &str) -> Option<&Option<StreamPosition>> {
        self.0.get(tag)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WirePosition {
    offset: u64,
    epoch: String,
}

/// Parses a subscribe's `since` (raw JSON) against its `tags`: an object
/// whose keys are among the tags and whose values are `null` or
/// `{"offset": <u64>, "epoch": <1-64 of [0-9A-Za-z_-]>}`. The error says
/// what is wrong, for an `rtm/bad-request` reply.
///
/// ```
/// use rtm_core::positions::parse_since;
/// let raw = serde_json::value::RawValue::from_string(r#"{"m1":{"offset":12,"epoch":"x1"},"m2":null}"#.into()).unwrap();
/// let since = parse_since(&raw, &["m1".into(), "m2".into()]).unwrap();
/// assert_eq!(since.get("m1").unwrap().as_ref().unwrap().offset, 12);
/// assert_eq!(since.get("m2"), Some(&None));
/// ```
pub fn parse_since(raw: &RawValue, tags: &[String]) -> Result<Since, String> {
    const SHAPE: &str =
        "since must be an object from tags to null or {\"offset\": <u64>, \"epoch\": <1 to 64 of [0-9A-Za-z_-]>}";
    if !raw.get().starts_with('{') {
        return Err(SHAPE.to_owned());
    }
    let Pairs(pairs) = serde_json::from_str(raw.get()).map_err(|_| SHAPE.to_owned())?;
    let mut since = HashMap::with_capacity(pairs.len());
    for (tag, value) in pairs {
        if !tags.contains(&tag) {
            return Err(format!(
                "since names {}, which is not among the tags",
                quoted(&tag)
            ));
        }
        let position = match value.get() {
            "null" => None,
            text if text.starts_with('{') => {
                let WirePosition { offset, epoch } = serde_json::from_str(text).map_err(|_| {
                    format!(
                        "the position for {} must be {{\"offset\": <u64>, \"epoch\": <string>}} and nothing else",
                        quoted(&tag)
                    )
                })?;
                if !StreamPosition::is_valid_epoch(&epoch) {
                    return Err(format!(
                        "the epoch for {} is not 1 to 64 of [0-9A-Za-z_-]",
                        quoted(&tag)
                    ));
                }
                Some(StreamPosition::new(offset, epoch))
            }
            _ => {
                return Err(format!(
                "the position for {} must be null or {{\"offset\": <u64>, \"epoch\": <string>}}",
                quoted(&tag)
            ))
            }
        };
        if since.insert(tag.clone(), position).is_some() {
            return Err(format!("since names {} twice", quoted(&tag)));
        }
    }
    Ok(Since(since))
}

/// An object's members in the order written (duplicates kept, for the
/// caller to refuse), each value left raw.
struct Pairs<'a>(Vec<(String, &'a RawValue)>);

impl<'de> Deserialize<'de> for Pairs<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = Pairs<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Self::Value, A::Error> {
                let mut pairs = Vec::new();
                while let Some(pair) = map.next_entry::<String, &'de RawValue>()? {
                    pairs.push(pair);
                }
                Ok(Pairs(pairs))
            }
        }
        deserializer.deserialize_map(Visit)
    }
}

/// `text` as a JSON string, cut to 64 characters (`…` says it was).
fn quoted(text: &str) -> String {
    let mut clipped: String = text.chars().take(64).collect();
    if clipped.len() < text.len() {
        clipped.push('…');
    }
    serde_json::to_string(&clipped).unwrap_or_default()
}

/// The event frame `frame` (`{"event":…,"data":[…]}`) with its position
/// in its stream: the closing `}` becomes
/// `,"tag":<tag>,"offset":<n>,"epoch":"<e>"}` (no `tag` for a user's
/// stream), with `"push":"<origin>:<seq>"` before it for a Push to several
/// tags. One copy, shared by every connection that tracks the stream.
///
/// ```
/// use rtm_core::positions::encode_positioned;
/// use rtm_core::StreamPosition;
/// let frame = bytes::Bytes::from_static(br#"{"event":"score","data":[1]}"#);
/// let positioned = encode_positioned(&frame, Some("m1"), &StreamPosition::new(13, "x1"), None);
/// assert_eq!(&positioned[..], br#"{"event":"score","data":[1],"tag":"m1","offset":13,"epoch":"x1"}"#);
/// ```
pub fn encode_positioned(
    frame: &Bytes,
    tag: Option<&str>,
    position: &StreamPosition,
    push: Option<&str>,
) -> Bytes {
    let body = frame.strip_suffix(b"}").unwrap_or(frame);
    let extra = tag.map_or(0, |t| t.len() + 10) + position.epoch.len() + 48;
    let mut buf = BytesMut::with_capacity(body.len() + extra);
    buf.put_slice(body);
    let mut w = buf.writer();
    if let Some(push) = push {
        let _ = write!(w, ",\"push\":");
        let _ = serde_json::to_writer(&mut w, push);
    }
    if let Some(tag) = tag {
        let _ = write!(w, ",\"tag\":");
        let _ = serde_json::to_writer(&mut w, tag);
    }
    // The epoch needs no escaping (StreamPosition::is_valid_epoch).
    let _ = write!(
        w,
        ",\"offset\":{},\"epoch\":\"{}\"}}",
        position.offset, position.epoch
    );
    w.into_inner().freeze()
}

/// Where one stream of a subscribe stands once it is answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamState {
    /// The tag (its stream is the subscribe's event and this tag).
    pub tag: String,
    /// Where the client is once it has the events delivered before the
    /// reply.
    pub position: StreamPosition,
    /// `None`: the client sent no position (`null`). `Some(Ok)`: every
    /// event after its position was delivered. `Some(Err)`: none could be.
    pub recovered: Option<Result<(), Unrecoverable>>,
}

/// The wire name of a reason a stream could not be recovered.
pub fn reason_code(reason: &Unrecoverable) -> &'static str {
    match reason {
        Unrecoverable::EpochChanged => "epoch-changed",
        Unrecoverable::Trimmed => "trimmed",
        Unrecoverable::TooMany { .. } => "too-many",
        Unrecoverable::TooOld => "too-old",
        Unrecoverable::Ahead => "ahead",
        Unrecoverable::Gap => "gap",
    }
}

/// `reply` (a reply frame, `{…}`) with `,"streams":{…}` before its closing
/// brace: a subscribe's tags, or `"user"` for an `auth`'s user stream (see
/// the [module docs](self)).
///
/// ```
/// use rtm_core::positions::{with_streams, StreamState};
/// use rtm_core::StreamPosition;
/// let reply = bytes::Bytes::from_static(br#"{"id":"7","data":true}"#);
/// let reply = with_streams(&reply, &[StreamState {
///     tag: "m1".into(),
///     position: StreamPosition::new(15, "x1"),
///     recovered: Some(Ok(())),
/// }]);
/// assert_eq!(&reply[..], br#"{"id":"7","data":true,"streams":{"m1":{"offset":15,"epoch":"x1","recovered":true}}}"#);
/// ```
pub fn with_streams(reply: &Bytes, streams: &[StreamState]) -> Bytes {
    let body = reply.strip_suffix(b"}").unwrap_or(reply);
    let mut buf = BytesMut::with_capacity(body.len() + 16 + streams.len() * 64);
    buf.put_slice(body);
    buf.put_slice(b",\"streams\":{");
    let mut w = buf.writer();
    for (i, stream) in streams.iter().enumerate() {
        if i > 0 {
            let _ = write!(w, ",");
        }
        let _ = serde_json::to_writer(&mut w, &stream.tag);
        let _ = write!(
            w,
            ":{{\"offset\":{},\"epoch\":\"{}\"",
            stream.position.offset, stream.position.epoch
        );
        match &stream.recovered {
            None => {}
            Some(Ok(())) => {
                let _ = write!(w, ",\"recovered\":true");
            }
            Some(Err(reason)) => {
                let _ = write!(
                    w,
                    ",\"recovered\":false,\"reason\":\"{}\"",
                    reason_code(reason)
                );
            }
        }
        let _ = write!(w, "}}");
    }
    let _ = write!(w, "}}}}");
    w.into_inner().freeze()
}

/// Where an event a client received sits in its stream (the fields
/// [`encode_positioned`] adds).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventPosition {
    /// The Push stream's tag (`None`: a user's stream).
    pub tag: Option<String>,
    /// The event's offset and its stream's epoch.
    pub position: StreamPosition,
    /// For a Push to several tags: the push's id, the same in each stream.
    pub push: Option<String>,
}

#[derive(Deserialize)]
struct WireState {
    offset: u64,
    epoch: String,
    recovered: Option<bool>,
    reason: Option<String>,
}

/// Reads a reply's `streams` (what [`with_streams`] writes), as
/// a client does. An unknown `reason` reads as [`Unrecoverable::Gap`]; the
/// error says what is malformed.
pub fn parse_streams(raw: &RawValue) -> Result<Vec<StreamState>, String> {
    let map: HashMap<String, WireState> = serde_json::from_str(raw.get())
        .map_err(|e| format!("the reply's streams are malformed ({e})"))?;
    let mut states: Vec<StreamState> = map
        .into_iter()
        .map(|(tag, state)| StreamState {
            tag,
            position: StreamPosition::new(state.offset, state.epoch),
            recovered: state.recovered.map(|recovered| {
                if recovered {
                    Ok(())
                } else {
                    Err(parse_reason(state.reason.as_deref().unwrap_or("gap")))
                }
            }),
        })
        .collect();
    states.sort_by(|a, b| a.tag.cmp(&b.tag));
    Ok(states)
}

/// The reason [`reason_code`] names (an unknown one: `Gap`).
pub fn parse_reason(code: &str) -> Unrecoverable {
    match code {
        "epoch-changed" => Unrecoverable::EpochChanged,
        "trimmed" => Unrecoverable::Trimmed,
        "too-many" => Unrecoverable::TooMany { missed: 0, max: 0 },
        "too-old" => Unrecoverable::TooOld,
        "ahead" => Unrecoverable::Ahead,
        _ => Unrecoverable::Gap,
    }
}

/// Writes `,"since":{…}` for a subscribe: each tag of `since`, sorted, with
/// its position or `null`.
pub(crate) fn write_since(buf: &mut BytesMut, since: &Since) {
    let mut tags: Vec<(&String, &Option<StreamPosition>)> = since.0.iter().collect();
    tags.sort_by(|a, b| a.0.cmp(b.0));
    let mut w = buf.writer();
    let _ = write!(w, ",\"since\":{{");
    for (i, (tag, position)) in tags.into_iter().enumerate() {
        if i > 0 {
            let _ = write!(w, ",");
        }
        let _ = serde_json::to_writer(&mut w, tag);
        match position {
            None => {
                let _ = write!(w, ":null");
            }
            Some(p) => {
                let _ = write!(w, ":{{\"offset\":{},\"epoch\":", p.offset);
                let _ = serde_json::to_writer(&mut w, &p.epoch);
                let _ = write!(w, "}}");
            }
        }
    }
    let _ = write!(w, "}}");
}

//! The broker envelope: how an event travels between servers.
//!
//! ```text
//! {"v":1,"origin":"<server id>","seq":<u64>[,"tags":["t1","t2"]][,"at":<ms>]}\n<event frame bytes>
//! ```
//!
//! One JSON header line, a `\n`, then the already-serialized event frame,
//! byte for byte. Receivers parse only the header and forward the frame
//! without re-encoding it. `origin` lets the sending server skip its own
//! messages (it has delivered locally already); `seq` increases per origin;
//! `tags` is present on Push and lists every tag of that push, so a server
//! that receives the same push on several tag topics delivers it once;
//! `at`, when present, is when the sender sent it, in milliseconds since the
//! Unix epoch by the sender's clock (what a receiver's broker lag is
//! measured from). Readers ignore header fields they do not know, so a field
//! added later (as `at` was) does not break an older server.
//!
//! An event kept in a stream's history carries its position, `off` (the
//! offset, from 1) and `ep` (the stream's epoch), first in the header:
//! the store that gives the position writes them into the envelope it was
//! handed ([`Envelope::splice_position`]; the Redis store's Lua script does
//! the same bytes), so the published message and the one kept in history
//! are the same.
//!
//! ```text
//! {"off":12,"ep":"k3J9","v":1,"origin":"s1","seq":7,"at":1700000000000}\n{"event":"dm","data":["hi"]}
//! ```

use bytes::{BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};

use crate::stream::StreamPosition;

/// The envelope version this crate writes and reads.
pub const ENVELOPE_VERSION: u32 = 1;

/// A decoded broker message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// The id of the server that sent it.
    pub origin: String,
    /// The sender's sequence number for this message.
    pub seq: u64,
    /// For a Push: every tag of the push (the message travels on one topic per tag).
    pub tags: Option<Vec<String>>,
    /// When the sender sent it: milliseconds since the Unix epoch, by the
    /// sender's clock (`None`: the sender did not say).
    pub sent_at: Option<u64>,
    /// Its place in its stream's history (`None`: the event has no history).
    pub position: Option<StreamPosition>,
    /// The event frame, ready to send to clients.
    pub frame: Bytes,
}

#[derive(Serialize)]
struct HeaderOut<'a> {
    v: u32,
    origin: &'a str,
    seq: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    tags: Option<&'a [String]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    at: Option<u64>,
}

#[derive(Deserialize)]
struct HeaderIn {
    v: u32,
    origin: String,
    seq: u64,
    #[serde(default)]
    tags: Option<Vec<String>>,
    #[serde(default)]
    at: Option<u64>,
    #[serde(default)]
    off: Option<u64>,
    #[serde(default)]
    ep: Option<String>,
}

/// Why a broker message was not understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EnvelopeError {
    /// No `\n` after the header.
    #[error("broker message has no header line")]
    NoHeader,
    /// The header is not the expected JSON object.
    #[error("broker message header is invalid: {0}")]
    BadHeader(String),
    /// `off` without `ep` or the other way round, an offset of 0, or an
    /// epoch that is not 1 to 64 bytes of `[0-9A-Za-z_-]`.
    #[error("broker message has an invalid stream position: {0}")]
    BadPosition(&'static str),
    /// Written by a newer (or unknown) version.
    #[error("broker message version {0} is not supported")]
    Version(u32),
    /// The frame after the header is not an event frame (UTF-8 JSON with a
    /// string `event` and an array `data`): it is not passed on to clients.
    #[error("broker message carries no event frame: {0}")]
    BadFrame(&'static str),
}

/// The shape of an event frame, checked before it reaches any client:
/// nothing else (an `id` would make a client take it for a reply).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EventFrame<'a> {
    #[serde(borrow)]
    event: &'a serde_json::value::RawValue,
    #[serde(borrow)]
    data: &'a serde_json::value::RawValue,
}

impl Envelope {
    /// Encodes a message: header line, then the frame. `sent_at`:
    /// milliseconds since the Unix epoch (`None`: no `at` is written).
    ///
    /// ```
    /// use rtm_core::Envelope;
    /// let frame = bytes::Bytes::from_static(br#"{"event":"dm","data":["hi"]}"#);
    /// let wire = Envelope::encode("s1", 7, None, Some(1_700_000_000_000), &frame);
    /// assert_eq!(
    ///     &wire[..],
    ///     &b"{\"v\":1,\"origin\":\"s1\",\"seq\":7,\"at\":1700000000000}\n{\"event\":\"dm\",\"data\":[\"hi\"]}"[..]
    /// );
    /// let back = Envelope::decode(wire).unwrap();
    /// assert_eq!((back.origin.as_str(), back.seq, back.sent_at), ("s1", 7, Some(1_700_000_000_000)));
    /// assert_eq!(back.frame, frame);
    /// ```
    pub fn encode(
        origin: &str,
        seq: u64,
        tags: Option<&[String]>,
        sent_at: Option<u64>,
        frame: &Bytes,
    ) -> Bytes {
        let mut buf = BytesMut::with_capacity(64 + origin.len() + frame.len());
        let header = HeaderOut {
            v: ENVELOPE_VERSION,
            origin,
            seq,
            tags,
            at: sent_at,
        };
        // Strings and integers cannot fail to serialize.
        let _ = serde_json::to_writer((&mut buf).writer(), &header);
        buf.put_u8(b'\n');
        buf.put_slice(frame);
        buf.freeze()
    }

    /// Decodes a message; the frame is a zero-copy slice of `wire`.
    pub fn decode(wire: Bytes) -> Result<Envelope, EnvelopeError> {
        let newline = wire
            .iter()
            .position(|&b| b == b'\n')
            .ok_or(EnvelopeError::NoHeader)?;
        let header: HeaderIn = serde_json::from_slice(&wire[..newline])
            .map_err(|e| EnvelopeError::BadHeader(e.to_string()))?;
        if header.v != ENVELOPE_VERSION {
            return Err(EnvelopeError::Version(header.v));
        }
        // Anyone with write access to the broker could inject bytes; a client
        // must only ever see well-formed event frames.
        let frame = std::str::from_utf8(&wire[newline + 1..])
            .map_err(|_| EnvelopeError::BadFrame("not UTF-8"))?;
        let event: EventFrame<'_> = serde_json::from_str(frame)
            .map_err(|_| EnvelopeError::BadFrame("not an event object"))?;
        if !event.event.get().starts_with('"') || !event.data.get().starts_with('[') {
            return Err(EnvelopeError::BadFrame(
                "event must be a string and data an array",
            ));
        }
        if event.event.get() == "\"\"" {
            return Err(EnvelopeError::BadFrame("the event name is empty"));
        }
        let position = match (header.off, header.ep) {
            (None, None) => None,
            (Some(0), _) => return Err(EnvelopeError::BadPosition("the offset is 0")),
            (Some(offset), Some(epoch)) if StreamPosition::is_valid_epoch(&epoch) => {
                Some(StreamPosition { offset, epoch })
            }
            (Some(_), Some(_)) => return Err(EnvelopeError::BadPosition("a malformed epoch")),
            _ => return Err(EnvelopeError::BadPosition("off and ep go together")),
        };
        Ok(Envelope {
            origin: header.origin,
            seq: header.seq,
            tags: header.tags,
            sent_at: header.at,
            position,
            frame: wire.slice(newline + 1..),
        })
    }

    /// Writes `position` into an encoded envelope (`wire`, as
    /// [`Envelope::encode`] made it): `{"off":<offset>,"ep":"<epoch>",`
    /// replaces its first byte, `{`. What a history store does to the
    /// envelope it was handed before it keeps and publishes it; the Redis
    /// store's Lua script writes the same bytes.
    ///
    /// Fails (and writes nothing) on an offset of 0, an epoch that
    /// [`StreamPosition::is_valid_epoch`] refuses, or a `wire` that does not
    /// start with `{`.
    ///
    /// ```
    /// use rtm_core::{Envelope, StreamPosition};
    /// let frame = bytes::Bytes::from_static(br#"{"event":"dm","data":[]}"#);
    /// let wire = Envelope::encode("s1", 7, None, None, &frame);
    /// let kept = Envelope::splice_position(&wire, &StreamPosition::new(12, "k3J9")).unwrap();
    /// assert!(kept.starts_with(br#"{"off":12,"ep":"k3J9","v":1,"#));
    /// let back = Envelope::decode(kept).unwrap();
    /// assert_eq!(back.position, Some(StreamPosition::new(12, "k3J9")));
    /// assert_eq!(back.frame, frame);
    /// ```
    pub fn splice_position(
        wire: &Bytes,
        position: &StreamPosition,
    ) -> Result<Bytes, EnvelopeError> {
        if position.offset == 0 {
            return Err(EnvelopeError::BadPosition("the offset is 0"));
        }
        if !StreamPosition::is_valid_epoch(&position.epoch) {
            return Err(EnvelopeError::BadPosition("a malformed epoch"));
        }
        if wire.first() != Some(&b'{') {
            return Err(EnvelopeError::NoHeader);
        }
        let mut buf = BytesMut::with_capacity(wire.len() + 32 + position.epoch.len());
        buf.put_slice(b"{\"off\":");
        buf.put_slice(position.offset.to_string().as_bytes());
        buf.put_slice(b",\"ep\":\"");
        buf.put_slice(position.epoch.as_bytes());
        buf.put_slice(b"\",");
        buf.put_slice(&wire[1..]);
        Ok(buf.freeze())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_envelope_carries_its_tags() {
        let frame = Bytes::from_static(b"{\"event\":\"e\",\"data\":[]}");
        let tags = vec!["a".to_string(), "b".to_string()];
        let env = Envelope::decode(Envelope::encode("o", 1, Some(&tags), None, &frame)).unwrap();
        assert_eq!(env.tags, Some(tags));
        assert_eq!(env.frame, frame);
    }

    #[test]
    fn the_send_time_is_optional_and_unknown_header_fields_are_ignored() {
        let frame = Bytes::from_static(b"{\"event\":\"e\",\"data\":[]}");
        let without = Envelope::encode("o", 1, None, None, &frame);
        assert!(!without.starts_with(b"{\"v\":1,\"origin\":\"o\",\"seq\":1,"));
        assert_eq!(Envelope::decode(without).unwrap().sent_at, None);
        // A newer sender's header, with a field this reader does not know.
        let newer = Bytes::from_static(
            b"{\"v\":1,\"origin\":\"o\",\"seq\":2,\"at\":5,\"later\":[1]}\n{\"event\":\"e\",\"data\":[]}",
        );
        let env = Envelope::decode(newer).unwrap();
        assert_eq!((env.seq, env.sent_at, env.frame), (2, Some(5), frame));
    }

    #[test]
    fn a_position_is_both_fields_a_nonzero_offset_and_a_plain_epoch() {
        let frame = "{\"event\":\"e\",\"data\":[]}";
        let with = |header: &str| Envelope::decode(Bytes::from(format!("{header}\n{frame}")));
        let kept = with(r#"{"off":3,"ep":"a-B_9","v":1,"origin":"o","seq":1}"#).unwrap();
        assert_eq!(kept.position, Some(StreamPosition::new(3, "a-B_9")));
        for bad in [
            r#"{"off":3,"v":1,"origin":"o","seq":1}"#,
            r#"{"ep":"x","v":1,"origin":"o","seq":1}"#,
            r#"{"off":0,"ep":"x","v":1,"origin":"o","seq":1}"#,
            r#"{"off":1,"ep":"a.b","v":1,"origin":"o","seq":1}"#,
            r#"{"off":1,"ep":"","v":1,"origin":"o","seq":1}"#,
        ] {
            assert!(
                matches!(with(bad), Err(EnvelopeError::BadPosition(_))),
                "{bad}"
            );
        }
        // A position twice (a store that spliced over a spliced envelope).
        let wire = Envelope::encode("o", 1, None, None, &Bytes::from_static(frame.as_bytes()));
        let once = Envelope::splice_position(&wire, &StreamPosition::new(1, "x")).unwrap();
        let twice = Envelope::splice_position(&once, &StreamPosition::new(2, "x")).unwrap();
        assert!(matches!(
            Envelope::decode(twice),
            Err(EnvelopeError::BadHeader(_))
        ));
        for bad in [StreamPosition::new(0, "x"), StreamPosition::new(1, "a b")] {
            assert!(Envelope::splice_position(&wire, &bad).is_err());
        }
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert_eq!(
            Envelope::decode(Bytes::from_static(b"xx")),
            Err(EnvelopeError::NoHeader)
        );
        assert!(matches!(
            Envelope::decode(Bytes::from_static(b"{}\n")),
            Err(EnvelopeError::BadHeader(_))
        ));
        assert_eq!(
            Envelope::decode(Bytes::from_static(
                b"{\"v\":2,\"origin\":\"o\",\"seq\":1}\n{}"
            )),
            Err(EnvelopeError::Version(2))
        );
    }

    #[test]
    fn a_frame_that_is_not_an_event_is_refused() {
        let header = b"{\"v\":1,\"origin\":\"o\",\"seq\":1}\n".to_vec();
        let frames: [&[u8]; 8] = [
            b"{\"event\":\"e\",\"data\":[\"\xff\"]}",
            b"plain text",
            b"{\"event\":\"e\"}",
            b"{\"event\":1,\"data\":[]}",
            b"{\"event\":\"e\",\"data\":{}}",
            b"[1,2]",
            b"{\"event\":\"dm\",\"data\":[1],\"id\":\"a\"}",
            b"{\"event\":\"\",\"data\":[]}",
        ];
        for frame in frames {
            let mut wire = header.clone();
            wire.extend_from_slice(frame);
            assert!(
                matches!(
                    Envelope::decode(Bytes::from(wire)),
                    Err(EnvelopeError::BadFrame(_))
                ),
                "{:?}",
                String::from_utf8_lossy(frame)
            );
        }
    }
}

//! Frames: parsing client requests and server frames, and encoding both.
//!
//! Parsing borrows from the received frame: the request `id` is kept as its
//! JSON string literal and the `data` array as a zero-copy slice of the frame
//! ([`Args`]), so a reply can be written without re-encoding either.
//! Every encoder writes straight into one buffer and returns [`Bytes`].

use std::borrow::Cow;
use std::fmt;

use bytes::{BufMut, Bytes, BytesMut};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::error::{ErrorCode, RtmError};
use crate::positions::{parse_since, EventPosition, Since, USER_STREAM};
use crate::stream::StreamPosition;

/// The longest request `id` the protocol allows, in bytes.
pub const MAX_ID_BYTES: usize = 128;

/// A request id, kept as its JSON string literal (quotes and escapes included),
/// so replies echo it byte for byte.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct RequestId(Bytes);

impl RequestId {
    /// A request id for this string (used by clients to mint ids).
    ///
    /// ```
    /// let id = rtm_core::RequestId::new("42");
    /// assert_eq!(id.as_json(), br#""42""#);
    /// assert_eq!(id.to_string(), "42");
    /// ```
    pub fn new(id: &str) -> Self {
        let mut buf = Vec::with_capacity(id.len() + 2);
        // Serializing a &str into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut buf, id);
        RequestId(Bytes::from(buf))
    }

    /// The JSON string literal, quotes included.
    pub fn as_json(&self) -> &[u8] {
        &self.0
    }

    /// The decoded id.
    pub fn decode(&self) -> String {
        serde_json::from_slice::<String>(&self.0).unwrap_or_default()
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.decode())
    }
}

impl fmt::Debug for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RequestId({})", String::from_utf8_lossy(&self.0))
    }
}

/// Positional arguments: the text of a JSON array, a zero-copy slice of the frame it came in.
#[derive(Clone, PartialEq, Eq)]
pub struct Args(Bytes);

impl Args {
    /// The empty argument list `[]`.
    pub fn empty() -> Self {
        Args(Bytes::from_static(b"[]"))
    }

    /// Wraps JSON text that must be an array; anything else is `rtm/bad-request`.
    ///
    /// ```
    /// let args = rtm_core::Args::from_json(bytes::Bytes::from_static(b"[1, 2]")).unwrap();
    /// let (a, b): (i64, i64) = args.deserialize().unwrap();
    /// assert_eq!(a + b, 3);
    /// assert!(rtm_core::Args::from_json(bytes::Bytes::from_static(b"{}")).is_err());
    /// // No arguments: `()` encodes as `[]` and decodes from it.
    /// let none = rtm_core::Args::encode(&()).unwrap();
    /// assert_eq!(none.as_str(), "[]");
    /// let () = none.deserialize().unwrap();
    /// ```
    pub fn from_json(json: Bytes) -> Result<Self, RtmError> {
        let raw: &RawValue = serde_json::from_slice(&json)
            .map_err(|e| RtmError::bad_request(format!("arguments are not JSON: {e}")))?;
        if !raw.get().starts_with('[') {
            return Err(RtmError::bad_request("arguments must be a JSON array"));
        }
        Ok(Args(json))
    }

    /// Encodes any value that serializes to a JSON array (a tuple, a `Vec`, a slice, …).
    pub fn encode<T: Serialize + ?Sized>(args: &T) -> Result<Self, RtmError> {
        let json = serde_json::to_vec(args)
            .map_err(|e| RtmError::bad_request(format!("arguments cannot be encoded: {e}")))?;
        if json == b"null" {
            // `()`: no arguments.
            return Ok(Args::empty());
        }
        if json.first() != Some(&b'[') {
            return Err(RtmError::bad_request(
                "arguments must serialize to a JSON array (a tuple, Vec or slice)",
            ));
        }
        Ok(Args(Bytes::from(json)))
    }

    /// The JSON text of the array.
    pub fn as_json(&self) -> &[u8] {
        &self.0
    }

    /// The JSON text as `&str`.
    pub fn as_str(&self) -> &str {
        // Built only from validated JSON, which is UTF-8.
        std::str::from_utf8(&self.0).unwrap_or("[]")
    }

    /// Deserializes the array, typically into a tuple or a `Vec<Value>`.
    /// A mismatch is `rtm/bad-request`.
    ///
    /// `()` accepts the empty array, so a function without arguments can say so.
    pub fn deserialize<T: DeserializeOwned>(&self) -> Result<T, RtmError> {
        serde_json::from_slice(&self.0).or_else(|e| {
            let empty = self
                .0
                .iter()
                .all(|b| matches!(b, b'[' | b']' | b' ' | b'\t' | b'\n' | b'\r'));
            match serde_json::from_slice::<T>(b"null") {
                Ok(unit) if empty => Ok(unit),
                _ => Err(RtmError::bad_request(format!(
                    "invalid arguments: {}",
                    describe_args_error(&self.0, &e)
                ))),
            }
        })
    }

    /// The underlying bytes.
    pub fn into_bytes(self) -> Bytes {
        self.0
    }
}

impl fmt::Debug for Args {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Args({})", String::from_utf8_lossy(&self.0))
    }
}

/// What a client asked, parsed from one text frame.
#[derive(Debug)]
pub enum Request<'a> {
    /// `{"type":"auth","data":[…]}`
    Auth {
        /// The request id.
        id: RequestId,
        /// The `data` array handed to the authentication handler.
        data: Args,
        /// `since` (ext): `{"user": <position> | null}`, the client's place
        /// in its user's stream (Publish); `None` when not asked.
        since: Option<Option<StreamPosition>>,
    },
    /// `{"type":"invoke","function":"…","data":[…]}`
    Invoke {
        /// The request id.
        id: RequestId,
        /// The function name, borrowed from the frame when it has no escapes.
        function: Cow<'a, str>,
        /// The arguments.
        args: Args,
    },
    /// `{"type":"subscribe","event":"…","tags":[…]}`
    Subscribe {
        /// The request id.
        id: RequestId,
        /// The push subscription.
        sub: PushSub,
    },
    /// `{"type":"unsubscribe","event":"…","tags":[…]}` (ext)
    Unsubscribe {
        /// The request id.
        id: RequestId,
        /// The push subscription to drop.
        sub: PushSub,
    },
}

/// An event name with its tags, as a `subscribe` / `unsubscribe` carries them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushSub {
    /// The event name.
    pub event: String,
    /// The tags.
    pub tags: Vec<String>,
    /// A subscribe's `since` (ext): positions for some of its tags, whose
    /// streams the connection then tracks (see [`crate::positions`]).
    /// Always `None` on an unsubscribe.
    pub since: Option<Since>,
}

/// Why a text frame could not be served as a request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RequestError {
    /// Not JSON, not an object, no string `id` or no string `type`: close 1007.
    #[error("invalid payload: {0}")]
    Malformed(String),
    /// A well-formed envelope with a bad field: error reply `rtm/bad-request`.
    #[error("bad request {id:?}: {message}")]
    BadRequest {
        /// The request id to answer.
        id: RequestId,
        /// What is wrong.
        message: String,
    },
}

#[derive(Deserialize)]
struct RawRequest<'a> {
    #[serde(borrow)]
    id: Option<&'a RawValue>,
    #[serde(borrow, rename = "type")]
    kind: Option<&'a RawValue>,
    #[serde(borrow)]
    function: Option<&'a RawValue>,
    #[serde(borrow)]
    data: Option<&'a RawValue>,
    #[serde(borrow)]
    event: Option<&'a RawValue>,
    #[serde(borrow)]
    tags: Option<&'a RawValue>,
    #[serde(borrow)]
    since: Option<&'a RawValue>,
}

fn json_str(raw: &RawValue) -> Option<Cow<'_, str>> {
    if !raw.get().starts_with('"') {
        return None;
    }
    let text = raw.get();
    if !text.contains('\\') {
        return Some(Cow::Borrowed(&text[1..text.len() - 1]));
    }
    serde_json::from_str::<String>(text).ok().map(Cow::Owned)
}

/// A string field: missing or not a string is `missing`; a string whose
/// escapes are not valid Unicode (a lone surrogate) says so.
fn string_field<'a>(raw: Option<&'a RawValue>, missing: &str) -> Result<Cow<'a, str>, String> {
    let raw = raw.ok_or_else(|| missing.to_owned())?;
    if !raw.get().starts_with('"') {
        return Err(missing.to_owned());
    }
    json_str(raw).ok_or_else(|| {
        format!(
            "{} is not valid Unicode (a lone surrogate escape?)",
            raw.get()
        )
        .chars()
        .take(200)
        .collect()
    })
}

/// Parses one text frame from a client.
///
/// `frame` must be the whole frame: [`Args`] are sliced out of it without copying.
///
/// ```
/// use rtm_core::frame::{parse_request, Request};
/// let frame = bytes::Bytes::from_static(br#"{"id":"1","type":"invoke","function":"add","data":[1,2]}"#);
/// match parse_request(&frame).unwrap() {
///     Request::Invoke { function, args, .. } => {
///         assert_eq!(function, "add");
///         assert_eq!(args.as_str(), "[1,2]");
///     }
///     other => panic!("unexpected {other:?}"),
/// }
/// ```
pub fn parse_request(frame: &Bytes) -> Result<Request<'_>, RequestError> {
    // One UTF-8 check for the whole frame (SIMD-fast), then a parser that
    // skips per-string checks: measurably faster than `from_slice`.
    let text = std::str::from_utf8(frame).map_err(|e| RequestError::Malformed(e.to_string()))?;
    let raw: RawRequest<'_> =
        serde_json::from_str(text).map_err(|e| RequestError::Malformed(e.to_string()))?;
    let id_raw = raw
        .id
        .ok_or_else(|| RequestError::Malformed("missing id".into()))?;
    let id_str =
        json_str(id_raw).ok_or_else(|| RequestError::Malformed("id is not a string".into()))?;
    let kind = raw
        .kind
        .and_then(json_str)
        .ok_or_else(|| RequestError::Malformed("missing or non-string type".into()))?;
    // A slice of the frame: no copy.
    let id = RequestId(frame.slice_ref(id_raw.get().as_bytes()));
    let bad = |message: &str| RequestError::BadRequest {
        id: id.clone(),
        message: message.to_owned(),
    };
    if id_str.is_empty() || id_str.len() > MAX_ID_BYTES {
        return Err(bad("id must be 1 to 128 bytes"));
    }
    let args = match raw.data {
        None => Args::empty(),
        Some(data) if data.get().starts_with('[') => Args(frame.slice_ref(data.get().as_bytes())),
        Some(_) => return Err(bad("data must be an array")),
    };
    match kind.as_ref() {
        "auth" => {
            let since = match raw.since {
                Some(since) if since.get() != "null" => {
                    let user = [USER_STREAM.to_owned()];
                    let since = parse_since(since, &user).map_err(|message| {
                        bad(&format!(
                            "auth's since is {{\"user\": <position> or null}}: {message}"
                        ))
                    })?;
                    since.get(USER_STREAM).cloned()
                }
                _ => None,
            };
            Ok(Request::Auth {
                id,
                data: args,
                since,
            })
        }
        "invoke" => {
            let function = string_field(raw.function, "invoke needs a string function")
                .map_err(|message| bad(&message))?;
            Ok(Request::Invoke { id, function, args })
        }
        "subscribe" | "unsubscribe" => {
            let event = string_field(raw.event, "subscribe needs a string event")
                .map_err(|message| bad(&message))?;
            let tags = match raw.tags {
                None => return Err(bad("subscribe needs an array of string tags")),
                Some(tags) if !tags.get().starts_with('[') => {
                    return Err(bad("tags must be an array of strings"))
                }
                Some(tags) => serde_json::from_str::<Vec<String>>(tags.get())
                    .map_err(|e| bad(&format!("tags must be an array of strings ({e})")))?,
            };
            let since = match raw.since {
                // `null` is as absent.
                Some(since) if kind == "subscribe" && since.get() != "null" => {
                    Some(parse_since(since, &tags).map_err(|message| bad(&message))?)
                }
                _ => None,
            };
            let sub = PushSub {
                event: event.into_owned(),
                tags,
                since,
            };
            if kind == "subscribe" {
                Ok(Request::Subscribe { id, sub })
            } else {
                Ok(Request::Unsubscribe { id, sub })
            }
        }
        _ => Err(bad("unknown request type")),
    }
}

fn writer(buf: &mut BytesMut) -> impl std::io::Write + '_ {
    buf.writer()
}

/// `{"id":<id>,"data":<data>}`.
///
/// ```
/// let reply = rtm_core::frame::encode_reply(&rtm_core::RequestId::new("7"), &5).unwrap();
/// assert_eq!(&reply[..], br#"{"id":"7","data":5}"#);
/// ```
pub fn encode_reply<T: Serialize + ?Sized>(id: &RequestId, data: &T) -> Result<Bytes, RtmError> {
    let mut buf = BytesMut::with_capacity(32 + id.0.len());
    buf.put_slice(b"{\"id\":");
    buf.put_slice(&id.0);
    buf.put_slice(b",\"data\":");
    serde_json::to_writer(writer(&mut buf), data)
        .map_err(|e| RtmError::internal(format!("result cannot be encoded: {e}")))?;
    buf.put_u8(b'}');
    Ok(buf.freeze())
}

/// `{"id":<id>,"data":<raw>}` for a result already encoded as JSON: copied
/// once into a buffer of exactly the frame's size.
///
/// ```
/// let raw = serde_json::value::RawValue::from_string("[1, 2]".into()).unwrap();
/// let reply = rtm_core::frame::encode_reply_raw(&rtm_core::RequestId::new("7"), &raw);
/// assert_eq!(&reply[..], br#"{"id":"7","data":[1, 2]}"#);
/// ```
pub fn encode_reply_raw(id: &RequestId, data: &RawValue) -> Bytes {
    let data = data.get().as_bytes();
    let mut buf = BytesMut::with_capacity(15 + id.0.len() + data.len());
    buf.put_slice(b"{\"id\":");
    buf.put_slice(&id.0);
    buf.put_slice(b",\"data\":");
    buf.put_slice(data);
    buf.put_u8(b'}');
    buf.freeze()
}

#[derive(Serialize)]
struct WireError<'a> {
    code: &'a str,
    message: &'a str,
}

/// `{"id":<id>,"data":{"error":{"code":…,"message":…}}}`.
///
/// ```
/// use rtm_core::{RequestId, RtmError, ErrorCode};
/// let frame = rtm_core::frame::encode_error_reply(
///     &RequestId::new("1"),
///     &RtmError::new(ErrorCode::FunctionNotFound, "no function named 'helo'"),
/// );
/// assert_eq!(&frame[..], br#"{"id":"1","data":{"error":{"code":"rtm/function-not-found","message":"no function named 'helo'"}}}"#);
/// ```
pub fn encode_error_reply(id: &RequestId, error: &RtmError) -> Bytes {
    let mut buf = BytesMut::with_capacity(64 + id.0.len() + error.message.len());
    buf.put_slice(b"{\"id\":");
    buf.put_slice(&id.0);
    buf.put_slice(b",\"data\":{\"error\":");
    write_error(&mut buf, error);
    buf.put_slice(b"}}");
    buf.freeze()
}

fn write_error(buf: &mut BytesMut, error: &RtmError) {
    let wire = WireError {
        code: error.code.as_str(),
        message: &error.message,
    };
    // Two strings cannot fail to serialize.
    let _ = serde_json::to_writer(writer(buf), &wire);
}

/// The reply to a rejected `auth`: `{"id":…,"data":false,"error":{"code":"rtm/auth-rejected","message":…}}`.
pub fn encode_auth_rejected(id: &RequestId, message: &str) -> Bytes {
    let mut buf = BytesMut::with_capacity(80 + id.0.len() + message.len());
    buf.put_slice(b"{\"id\":");
    buf.put_slice(&id.0);
    buf.put_slice(b",\"data\":false,\"error\":");
    write_error(&mut buf, &RtmError::new(ErrorCode::AuthRejected, message));
    buf.put_u8(b'}');
    buf.freeze()
}

/// Checks an event name: a non-empty string.
pub fn check_event_name(event: &str) -> Result<(), RtmError> {
    if event.is_empty() {
        return Err(RtmError::bad_request("event name must not be empty"));
    }
    Ok(())
}

/// `{"event":<event>,"data":<args>}`: serialized once, its bytes shared by every target.
///
/// ```
/// let args = rtm_core::Args::encode(&("Hello from server!",)).unwrap();
/// let frame = rtm_core::frame::encode_event("alert", &args).unwrap();
/// assert_eq!(&frame[..], br#"{"event":"alert","data":["Hello from server!"]}"#);
/// ```
pub fn encode_event(event: &str, args: &Args) -> Result<Bytes, RtmError> {
    check_event_name(event)?;
    let mut buf = BytesMut::with_capacity(24 + event.len() + args.0.len());
    buf.put_slice(b"{\"event\":");
    let _ = serde_json::to_writer(writer(&mut buf), event);
    buf.put_slice(b",\"data\":");
    buf.put_slice(&args.0);
    buf.put_u8(b'}');
    Ok(buf.freeze())
}

/// `{"id":…,"type":"auth","data":[<auth data>]}` as the JS client sends it.
pub fn encode_auth(id: &RequestId, auth_data: &serde_json::Value) -> Bytes {
    encode_auth_since(id, auth_data, None)
}

/// [`encode_auth`] with `since` (ext) for the user's stream when given:
/// `,"since":{"user":<position or null>}`.
pub fn encode_auth_since(
    id: &RequestId,
    auth_data: &serde_json::Value,
    since: Option<&Since>,
) -> Bytes {
    let mut buf = BytesMut::with_capacity(48);
    buf.put_slice(b"{\"id\":");
    buf.put_slice(&id.0);
    buf.put_slice(b",\"type\":\"auth\",\"data\":[");
    let _ = serde_json::to_writer(writer(&mut buf), auth_data);
    buf.put_u8(b']');
    if let Some(since) = since {
        crate::positions::write_since(&mut buf, since);
    }
    buf.put_u8(b'}');
    buf.freeze()
}

/// `{"id":…,"type":"invoke","function":…,"data":<args>}`.
pub fn encode_invoke(id: &RequestId, function: &str, args: &Args) -> Bytes {
    let mut buf = BytesMut::with_capacity(48 + function.len() + args.0.len());
    buf.put_slice(b"{\"id\":");
    buf.put_slice(&id.0);
    buf.put_slice(b",\"type\":\"invoke\",\"function\":");
    let _ = serde_json::to_writer(writer(&mut buf), function);
    buf.put_slice(b",\"data\":");
    buf.put_slice(&args.0);
    buf.put_u8(b'}');
    buf.freeze()
}

/// `{"id":…,"type":"subscribe"|"unsubscribe","event":…,"tags":[…]}`.
pub fn encode_subscription(id: &RequestId, subscribe: bool, sub: &PushSub) -> Bytes {
    let mut buf = BytesMut::with_capacity(64 + sub.event.len());
    buf.put_slice(b"{\"id\":");
    buf.put_slice(&id.0);
    buf.put_slice(if subscribe {
        b",\"type\":\"subscribe\",\"event\":"
    } else {
        b",\"type\":\"unsubscribe\",\"event\":"
    });
    let _ = serde_json::to_writer(writer(&mut buf), &sub.event);
    buf.put_slice(b",\"tags\":");
    let _ = serde_json::to_writer(writer(&mut buf), &sub.tags);
    if let (true, Some(since)) = (subscribe, &sub.since) {
        crate::positions::write_since(&mut buf, since);
    }
    buf.put_u8(b'}');
    buf.freeze()
}

/// A frame from the server, as a client reads it.
#[derive(Debug)]
pub enum ServerFrame {
    /// A reply to the request with this id.
    Reply {
        /// The id of the request it answers.
        id: String,
        /// Success with the reply's `data`, or the error it carries
        /// (`data.error`, or a top-level `error` with falsy `data` for a rejected auth).
        result: Result<Box<RawValue>, RtmError>,
        /// A subscribe's `streams` (ext): where each tracked stream is.
        streams: Option<Box<RawValue>>,
    },
    /// An event.
    Event {
        /// The event name.
        event: String,
        /// Its arguments.
        args: Args,
        /// Its place in its stream (ext), for a connection that tracks it.
        position: Option<EventPosition>,
    },
}

#[derive(Deserialize)]
struct RawServerFrame<'a> {
    #[serde(borrow)]
    id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    event: Option<Cow<'a, str>>,
    #[serde(borrow)]
    data: Option<&'a RawValue>,
    error: Option<WireErrorOwned>,
    #[serde(borrow)]
    streams: Option<&'a RawValue>,
    tag: Option<String>,
    offset: Option<u64>,
    epoch: Option<String>,
    push: Option<String>,
}

#[derive(Deserialize)]
struct WireErrorOwned {
    code: Option<String>,
    message: Option<String>,
}

#[derive(Deserialize)]
struct DataError {
    error: Option<serde_json::Value>,
}

/// The error a truthy `data.error` stands for; `None` when it is JS-falsy.
fn wire_error(error: serde_json::Value) -> Option<RtmError> {
    use serde_json::Value;
    match error {
        Value::Null | Value::Bool(false) => None,
        Value::Number(n) if n.as_f64() == Some(0.0) => None,
        Value::String(s) if s.is_empty() => None,
        Value::Object(map) => {
            let text = |key: &str| map.get(key).and_then(Value::as_str).map(str::to_owned);
            Some(RtmError::new(
                ErrorCode::parse(text("code").as_deref().unwrap_or("rtm/handler-error")),
                text("message").unwrap_or_default(),
            ))
        }
        Value::String(message) => Some(RtmError::handler(message)),
        other => Some(RtmError::handler(other.to_string())),
    }
}

impl From<WireErrorOwned> for RtmError {
    fn from(e: WireErrorOwned) -> Self {
        RtmError::new(
            ErrorCode::parse(e.code.as_deref().unwrap_or("rtm/internal")),
            e.message.unwrap_or_default(),
        )
    }
}

/// Parses a frame sent by a server. Anything that is neither a reply nor an
/// event is an error (the client reports it and ignores the frame).
pub fn parse_server_frame(frame: &Bytes) -> Result<ServerFrame, RtmError> {
    let raw: RawServerFrame<'_> = serde_json::from_slice(frame)
        .map_err(|e| RtmError::bad_request(format!("server frame is not valid: {e}")))?;
    if let Some(id) = raw.id {
        let data = raw.data.map(RawValue::get).unwrap_or("null");
        if let Some(err) = raw.error {
            return Ok(ServerFrame::Reply {
                id: id.into_owned(),
                result: Err(err.into()),
                streams: None,
            });
        }
        if data.starts_with('{') {
            // As the JS client reads it: any truthy `data.error` makes the reply an error.
            if let Ok(DataError { error: Some(err) }) = serde_json::from_str::<DataError>(data) {
                if let Some(err) = wire_error(err) {
                    return Ok(ServerFrame::Reply {
                        id: id.into_owned(),
                        result: Err(err),
                        streams: None,
                    });
                }
            }
        }
        let owned = RawValue::from_string(data.to_owned())
            .map_err(|e| RtmError::internal(e.to_string()))?;
        return Ok(ServerFrame::Reply {
            id: id.into_owned(),
            result: Ok(owned),
            streams: raw.streams.map(RawValue::to_owned),
        });
    }
    if let Some(event) = raw.event {
        let args = match raw.data {
            Some(data) if data.get().starts_with('[') => {
                Args(frame.slice_ref(data.get().as_bytes()))
            }
            None => Args::empty(),
            Some(_) => return Err(RtmError::bad_request("event data must be an array")),
        };
        let position = match (raw.offset, raw.epoch) {
            (Some(offset), Some(epoch)) if StreamPosition::is_valid_epoch(&epoch) => {
                Some(EventPosition {
                    tag: raw.tag,
                    position: StreamPosition::new(offset, epoch),
                    push: raw.push,
                })
            }
            _ => None,
        };
        return Ok(ServerFrame::Event {
            event: event.into_owned(),
            args,
            position,
        });
    }
    Err(RtmError::bad_request(
        "server frame has neither id nor event",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &'static str) -> Result<Request<'static>, RequestError> {
        // Leak for 'static borrow in tests only.
        let frame: &'static Bytes = Box::leak(Box::new(Bytes::from_static(text.as_bytes())));
        parse_request(frame)
    }

    #[test]
    fn id_is_echoed_byte_for_byte_even_with_escapes() {
        let Ok(Request::Invoke { id, .. }) =
            parse(r#"{"id":"a\u00e9\"b","type":"invoke","function":"f"}"#)
        else {
            panic!("not an invoke")
        };
        assert_eq!(id.as_json(), br#""a\u00e9\"b""#);
        assert_eq!(id.decode(), "aé\"b");
    }

    #[test]
    fn missing_data_defaults_to_empty_array() {
        let Ok(Request::Invoke { args, .. }) =
            parse(r#"{"id":"1","type":"invoke","function":"f"}"#)
        else {
            panic!("not an invoke")
        };
        assert_eq!(args.as_str(), "[]");
    }

    #[test]
    fn malformed_envelopes_are_malformed() {
        for text in [
            "not json",
            "[1]",
            "\"s\"",
            r#"{"type":"invoke"}"#,
            r#"{"id":7,"type":"invoke"}"#,
            r#"{"id":"1"}"#,
            r#"{"id":"1","type":5}"#,
        ] {
            assert!(
                matches!(parse(text), Err(RequestError::Malformed(_))),
                "{text}"
            );
        }
    }

    #[test]
    fn bad_fields_are_bad_requests_that_keep_the_id() {
        for text in [
            r#"{"id":"1","type":"dance"}"#,
            r#"{"id":"1","type":"invoke"}"#,
            r#"{"id":"1","type":"invoke","function":5}"#,
            r#"{"id":"1","type":"invoke","function":"f","data":{}}"#,
            r#"{"id":"1","type":"subscribe","tags":["a"]}"#,
            r#"{"id":"1","type":"subscribe","event":"e","tags":[1]}"#,
            r#"{"id":"1","type":"subscribe","event":"e"}"#,
            r#"{"id":"","type":"invoke","function":"f"}"#,
        ] {
            match parse(text) {
                Err(RequestError::BadRequest { id, .. }) => assert_eq!(id.as_json()[0], b'"'),
                other => panic!("{text}: {other:?}"),
            }
        }
    }

    #[test]
    fn id_length_limit_is_128_bytes() {
        let ok = format!(
            r#"{{"id":"{}","type":"invoke","function":"f"}}"#,
            "y".repeat(128)
        );
        let long = format!(
            r#"{{"id":"{}","type":"invoke","function":"f"}}"#,
            "x".repeat(129)
        );
        assert!(parse_request(&Bytes::from(ok)).is_ok());
        assert!(matches!(
            parse_request(&Bytes::from(long)),
            Err(RequestError::BadRequest { .. })
        ));
    }

    #[test]
    fn server_frames_parse_replies_errors_and_events() {
        let f = Bytes::from_static(
            br#"{"id":"1","data":{"error":{"code":"rtm/forbidden","message":"no"}}}"#,
        );
        match parse_server_frame(&f).unwrap() {
            ServerFrame::Reply { result: Err(e), .. } => assert_eq!(e.code, ErrorCode::Forbidden),
            other => panic!("{other:?}"),
        }
        let f = Bytes::from_static(
            br#"{"id":"a","data":false,"error":{"code":"rtm/auth-rejected","message":"bad token"}}"#,
        );
        match parse_server_frame(&f).unwrap() {
            ServerFrame::Reply { result: Err(e), .. } => {
                assert_eq!(e.code, ErrorCode::AuthRejected);
                assert_eq!(e.message, "bad token");
            }
            other => panic!("{other:?}"),
        }
        let f = Bytes::from_static(br#"{"event":"alert","data":["hi"]}"#);
        match parse_server_frame(&f).unwrap() {
            ServerFrame::Event { event, args, .. } => {
                assert_eq!(event, "alert");
                assert_eq!(args.as_str(), r#"["hi"]"#);
            }
            other @ ServerFrame::Reply { .. } => panic!("{other:?}"),
        }
    }
}

/// A deserialization error of an arguments array in the caller's terms:
/// which argument (1-based) and what was expected, without serde's line
/// and column (`argument 2 of 2: invalid type: string "a", expected i64`).
fn describe_args_error(json: &[u8], err: &serde_json::Error) -> String {
    let text = err.to_string();
    let plain = match text.rfind(" at line ") {
        Some(at) => text[..at].to_owned(),
        None => text.clone(),
    };
    let Ok(values) = serde_json::from_slice::<Vec<&serde_json::value::RawValue>>(json) else {
        return plain;
    };
    if err.line() != 1 {
        return plain;
    }
    // The column (on the first line) is that of the last byte read: inside
    // the value it failed on, or just before it when the value was only
    // peeked at (a map where a string was expected).
    let column = err.column();
    let base = json.as_ptr() as usize;
    let index = values.iter().position(|raw| {
        let start = raw.get().as_ptr() as usize - base;
        start <= column && column <= start + raw.get().len()
    });
    match index {
        Some(i) => format!("argument {} of {}: {plain}", i + 1, values.len()),
        None => format!("{plain} (the call has {} arguments)", values.len()),
    }
}

#[cfg(test)]
mod args_errors {
    use super::*;

    fn error_of<T: serde::de::DeserializeOwned>(json: &'static str) -> String {
        let args = Args::from_json(Bytes::from_static(json.as_bytes())).expect("an array");
        match args.deserialize::<T>() {
            Ok(_) => panic!("{json} deserialized"),
            Err(err) => err.message,
        }
    }

    #[test]
    fn a_wrong_argument_is_named_by_its_position_and_what_was_expected() {
        let message = error_of::<(i64, i64)>(r#"[2, "a"]"#);
        assert!(
            message.starts_with(
                r#"invalid arguments: argument 2 of 2: invalid type: string "a", expected i64"#
            ),
            "{message}"
        );
        assert!(!message.contains("column"), "{message}");
        let message = error_of::<(String,)>(r#"[{"x": 1}]"#);
        assert!(message.contains("argument 1 of 1"), "{message}");
    }

    #[test]
    fn a_missing_argument_says_how_many_came() {
        let message = error_of::<(i64, i64)>("[2]");
        assert!(message.contains("expected a tuple of size 2"), "{message}");
        assert!(
            message.contains("1 arguments") || message.contains("argument"),
            "{message}"
        );
    }
}

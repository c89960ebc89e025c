//! RFC 6455 framing, server side, sans-IO: a [`Decoder`] that turns the
//! bytes a client sent into messages (or the close code its fault earns), and
//! encoders that append server frames to an output buffer.
//!
//! The decoder never buffers more than one message of at most
//! `max_message` bytes. A message over it is reported once
//! ([`Violation::TOO_BIG`]) and then *skipped* frame by frame without being
//! stored, so the connection can keep reading up to the peer's close frame
//! (a lingering close) instead of resetting the socket under unread data.

use bytes::{Buf, Bytes, BytesMut};

/// Opcodes (RFC 6455 §5.2).
const CONTINUATION: u8 = 0x0;
const TEXT: u8 = 0x1;
const BINARY: u8 = 0x2;
const CLOSE: u8 = 0x8;
const PING: u8 = 0x9;
const PONG: u8 = 0xA;

/// The largest payload of a control frame (RFC 6455 §5.5).
pub(crate) const MAX_CONTROL_PAYLOAD: usize = 125;

/// One complete message from the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Message {
    /// A text message. Its UTF-8 is not checked here: the connection's
    /// request parser checks it once, and closes 1007 when it is not.
    Text(Bytes),
    /// A binary message (its bytes are not kept: RTM refuses binary with 1003).
    Binary,
    /// A ping, with the payload the pong must echo.
    Ping(Bytes),
    /// A pong.
    Pong,
    /// A close frame: its code (`None` when it carried none) and reason.
    Close(Option<u16>, String),
}

/// A fault of the peer's stream and the close code it earns (RFC 6455 §7.4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Violation {
    /// The close code to send.
    pub code: u16,
    /// A short reason for the close frame (and the log).
    pub reason: &'static str,
}

impl Violation {
    /// A message over the size limit: 1009. The decoder skips the rest of it.
    pub(crate) const TOO_BIG: Violation = Violation {
        code: 1009,
        reason: "message too big",
    };

    const fn protocol(reason: &'static str) -> Violation {
        Violation { code: 1002, reason }
    }

    /// Whether the decoder can go on reading frames after this fault
    /// (only an oversized message is skipped; any other fault leaves a
    /// stream that cannot be trusted to be framed).
    pub(crate) fn resumable(&self) -> bool {
        self.code == Self::TOO_BIG.code
    }
}

/// What the decoder is in the middle of.
#[derive(Debug)]
enum State {
    /// Waiting for a frame header.
    Header,
    /// Skipping this many payload bytes of a frame that is not kept.
    Skipping(u64),
    /// The stream is beyond repair: every further byte is ignored.
    Broken,
}

/// A fragmented message in progress.
#[derive(Debug)]
struct Partial {
    /// The text so far; `None` for a binary message, and once a text message
    /// went over the limit: its remaining frames are skipped.
    data: Option<Vec<u8>>,
}

/// Turns a client's bytes into [`Message`]s.
///
#[derive(Debug)]
pub(crate) struct Decoder {
    max_message: usize,
    state: State,
    partial: Option<Partial>,
}

impl Decoder {
    /// A decoder accepting messages of up to `max_message` bytes (text or binary,
    /// all fragments together).
    pub(crate) fn new(max_message: usize) -> Self {
        Decoder {
            max_message,
            state: State::Header,
            partial: None,
        }
    }

    /// Changes the message limit (for the frames that start after this call).
    pub(crate) fn set_max_message(&mut self, max_message: usize) {
        self.max_message = max_message;
    }
    /// Decodes the next message from the front of `input`, consuming what it
    /// used. `Ok(None)`: `input` holds no complete message yet (what it holds
    /// is kept for the next call, at most one frame header and one frame).
    ///
    /// After an `Err`, a [resumable](Violation::resumable) fault lets decoding
    /// go on (the oversized message is skipped); after any other, every
    /// further byte is consumed and ignored.
    pub(crate) fn decode(&mut self, input: &mut BytesMut) -> Result<Option<Message>, Violation> {
        loop {
            match self.state {
                State::Broken => {
                    input.clear();
                    return Ok(None);
                }
                State::Skipping(remaining) => {
                    let n = remaining.min(input.len() as u64);
                    input.advance(n as usize);
                    if n < remaining {
                        self.state = State::Skipping(remaining - n);
                        return Ok(None);
                    }
                    self.state = State::Header;
                }
                State::Header => match self.frame(input) {
                    Ok(Some(Some(message))) => return Ok(Some(message)),
                    Ok(Some(None)) => continue,
                    Ok(None) => return Ok(None),
                    Err(violation) => {
                        if !violation.resumable() {
                            self.state = State::Broken;
                            self.partial = None;
                            input.clear();
                        }
                        return Err(violation);
                    }
                },
            }
        }
    }

    /// Reads one frame at the front of `input`. `Ok(None)`: incomplete;
    /// `Ok(Some(None))`: a frame that completes no message (a fragment, or a
    /// frame being skipped).
    #[allow(clippy::option_option)]
    fn frame(&mut self, input: &mut BytesMut) -> Result<Option<Option<Message>>, Violation> {
        let Some(header) = Header::parse(input)? else {
            return Ok(None);
        };
        if header.opcode & 0x8 != 0 {
            return self.control(input, header);
        }
        match (header.opcode, &self.partial) {
            (CONTINUATION, None) => {
                return Err(Violation::protocol("continuation with nothing to continue"))
            }
            (TEXT | BINARY, Some(_)) => {
                return Err(Violation::protocol("new message inside a fragmented one"))
            }
            _ => {}
        }
        // Decided from the header alone, so a huge frame is never buffered:
        // binary messages are refused whole (their bytes are not needed), the
        // rest of an oversized message is skipped, and text over the limit is
        // reported once.
        let kept = match header.opcode {
            TEXT => Some(0),
            CONTINUATION => self
                .partial
                .as_ref()
                .and_then(|p| p.data.as_ref().map(Vec::len)),
            _ => None,
        };
        let Some(so_far) = kept else {
            self.skip(input, header);
            return Ok(Some(match (header.opcode, header.fin) {
                (BINARY, true) => Some(Message::Binary),
                (BINARY, false) => {
                    self.partial = Some(Partial { data: None });
                    Some(Message::Binary)
                }
                (_, fin) => {
                    if fin {
                        self.partial = None;
                    }
                    None
                }
            }));
        };
        if so_far as u64 + header.len > self.max_message as u64 {
            self.skip(input, header);
            if header.fin {
                self.partial = None;
            } else {
                self.partial = Some(Partial { data: None });
            }
            return Err(Violation::TOO_BIG);
        }
        let Some(payload) = take_payload(input, header) else {
            return Ok(None);
        };
        match (header.opcode, header.fin, self.partial.take()) {
            (TEXT, true, _) => Ok(Some(Some(text(payload.freeze())?))),
            (TEXT, false, _) => {
                self.partial = Some(Partial {
                    data: Some(payload.to_vec()),
                });
                Ok(Some(None))
            }
            (_, fin, Some(mut partial)) => {
                if let Some(data) = partial.data.as_mut() {
                    data.extend_from_slice(&payload);
                }
                if !fin {
                    self.partial = Some(partial);
                    return Ok(Some(None));
                }
                let data = partial.data.unwrap_or_default();
                Ok(Some(Some(text(Bytes::from(data))?)))
            }
            (_, _, None) => Err(Violation::protocol("continuation with nothing to continue")),
        }
    }

    /// A control frame: close, ping, pong (interleaving with fragments is allowed).
    #[allow(clippy::option_option)]
    fn control(
        &mut self,
        input: &mut BytesMut,
        header: Header,
    ) -> Result<Option<Option<Message>>, Violation> {
        if !header.fin {
            return Err(Violation::protocol("fragmented control frame"));
        }
        if header.len > MAX_CONTROL_PAYLOAD as u64 {
            return Err(Violation::protocol("control frame over 125 bytes"));
        }
        let Some(payload) = take_payload(input, header) else {
            return Ok(None);
        };
        match header.opcode {
            CLOSE => close_frame(&payload).map(|m| Some(Some(m))),
            PING => Ok(Some(Some(Message::Ping(payload.freeze())))),
            _ => Ok(Some(Some(Message::Pong))),
        }
    }

    /// Consumes the header and as much of the payload as is here; the rest
    /// is skipped as it arrives.
    fn skip(&mut self, input: &mut BytesMut, header: Header) {
        input.advance(header.header_len);
        let available = (input.len() as u64).min(header.len);
        input.advance(available as usize);
        if available < header.len {
            self.state = State::Skipping(header.len - available);
        }
    }
}

/// The frame's unmasked payload, consumed with its header; `None` (nothing
/// consumed, room reserved for the rest) while it has not all arrived.
fn take_payload(input: &mut BytesMut, header: Header) -> Option<BytesMut> {
    let total = header.header_len + header.len as usize;
    if input.len() < total {
        // Ask for exactly what the frame needs, once: no regrowth per read.
        input.reserve(total - input.len());
        return None;
    }
    input.advance(header.header_len);
    let mut payload = input.split_to(header.len as usize);
    if let Some(mask) = header.mask {
        unmask(&mut payload, mask);
    }
    Some(payload)
}

/// A complete text message (see [`Message::Text`] on UTF-8).
fn text(payload: Bytes) -> Result<Message, Violation> {
    Ok(Message::Text(payload))
}

fn close_frame(payload: &[u8]) -> Result<Message, Violation> {
    match payload {
        [] => Ok(Message::Close(None, String::new())),
        [_] => Err(Violation::protocol("close frame with a 1-byte payload")),
        [hi, lo, reason @ ..] => {
            let code = u16::from_be_bytes([*hi, *lo]);
            if !close_code_allowed(code) {
                return Err(Violation::protocol("close code not allowed on the wire"));
            }
            let reason = std::str::from_utf8(reason).map_err(|_| Violation {
                code: 1007,
                reason: "close reason is not UTF-8",
            })?;
            Ok(Message::Close(Some(code), reason.to_owned()))
        }
    }
}

/// Whether a peer may send this close code (RFC 6455 §7.4; 1005, 1006 and
/// 1015 are for reporting only, never sent).
pub(crate) fn close_code_allowed(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

/// A parsed frame header.
#[derive(Debug, Clone, Copy)]
struct Header {
    fin: bool,
    opcode: u8,
    mask: Option<[u8; 4]>,
    len: u64,
    header_len: usize,
}

impl Header {
    /// Parses the header at the front of `input` without consuming it.
    fn parse(input: &[u8]) -> Result<Option<Header>, Violation> {
        let [b0, b1, ..] = *input else {
            return Ok(None);
        };
        if b0 & 0x70 != 0 {
            return Err(Violation::protocol("reserved bits set with no extension"));
        }
        let opcode = b0 & 0x0F;
        if !matches!(opcode, CONTINUATION | TEXT | BINARY | CLOSE | PING | PONG) {
            return Err(Violation::protocol("unknown opcode"));
        }
        if b1 & 0x80 == 0 {
            return Err(Violation::protocol("client frame not masked"));
        }
        let (len, at) = match b1 & 0x7F {
            126 => match input.get(2..4) {
                Some(b) => (u64::from(u16::from_be_bytes([b[0], b[1]])), 4),
                None => return Ok(None),
            },
            127 => match input.get(2..10) {
                Some(b) => {
                    let mut be = [0u8; 8];
                    be.copy_from_slice(b);
                    let len = u64::from_be_bytes(be);
                    if len >> 63 != 0 {
                        return Err(Violation::protocol("frame length with its top bit set"));
                    }
                    (len, 10)
                }
                None => return Ok(None),
            },
            n => (u64::from(n), 2),
        };
        let Some(key) = input.get(at..at + 4) else {
            return Ok(None);
        };
        Ok(Some(Header {
            fin: b0 & 0x80 != 0,
            opcode,
            mask: Some([key[0], key[1], key[2], key[3]]),
            len,
            header_len: at + 4,
        }))
    }
}

/// XORs `data` with the frame's masking key (RFC 6455 §5.3), a word at a time.
fn unmask(data: &mut [u8], mask: [u8; 4]) {
    let word = u32::from_ne_bytes(mask);
    let wide = u64::from(word) | (u64::from(word) << 32);
    let mut chunks = data.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(chunk);
        chunk.copy_from_slice(&(u64::from_ne_bytes(bytes) ^ wide).to_ne_bytes());
    }
    for (i, byte) in chunks.into_remainder().iter_mut().enumerate() {
        *byte ^= mask[i % 4];
    }
}

/// The header of an unmasked server frame with this opcode and payload length.
fn server_header(opcode: u8, len: usize) -> ([u8; 10], usize) {
    let mut header = [0u8; 10];
    header[0] = 0x80 | opcode;
    let n = if len < 126 {
        header[1] = len as u8;
        2
    } else if len <= usize::from(u16::MAX) {
        header[1] = 126;
        header[2..4].copy_from_slice(&(len as u16).to_be_bytes());
        4
    } else {
        header[1] = 127;
        header[2..10].copy_from_slice(&(len as u64).to_be_bytes());
        10
    };
    (header, n)
}

/// The size of a server text frame carrying `len` bytes.
#[cfg(test)]
pub(crate) fn text_frame_len(len: usize) -> usize {
    server_header(TEXT, len).1 + len
}

/// Appends a text frame carrying `payload` (already UTF-8) to `out`.
pub(crate) fn encode_text(out: &mut Vec<u8>, payload: &[u8]) {
    let (header, n) = server_header(TEXT, payload.len());
    out.reserve(n + payload.len());
    out.extend_from_slice(&header[..n]);
    out.extend_from_slice(payload);
}

/// Appends a pong echoing `payload` (at most 125 bytes: longer is cut).
pub(crate) fn encode_pong(out: &mut Vec<u8>, payload: &[u8]) {
    let payload = &payload[..payload.len().min(MAX_CONTROL_PAYLOAD)];
    let (header, n) = server_header(PONG, payload.len());
    out.extend_from_slice(&header[..n]);
    out.extend_from_slice(payload);
}

/// Appends an empty ping.
pub(crate) fn encode_ping(out: &mut Vec<u8>) {
    out.extend_from_slice(&[0x80 | PING, 0]);
}

/// Appends a close frame with `code` and `reason` (cut to fit 125 bytes on a
/// character boundary).
pub(crate) fn encode_close(out: &mut Vec<u8>, code: u16, reason: &str) {
    let mut end = reason.len().min(MAX_CONTROL_PAYLOAD - 2);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let reason = &reason.as_bytes()[..end];
    let (header, n) = server_header(CLOSE, 2 + reason.len());
    out.extend_from_slice(&header[..n]);
    out.extend_from_slice(&code.to_be_bytes());
    out.extend_from_slice(reason);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client frame: masked with a fixed key.
    fn client_frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
        let key = [0x37, 0xfa, 0x21, 0x3d];
        let mut out = vec![(u8::from(fin) << 7) | opcode];
        match payload.len() {
            n if n < 126 => out.push(0x80 | n as u8),
            n if n <= 0xFFFF => {
                out.push(0x80 | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(0x80 | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        out.extend_from_slice(&key);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        out
    }

    fn decode_all(decoder: &mut Decoder, bytes: &[u8]) -> Vec<Result<Message, Violation>> {
        let mut input = BytesMut::from(bytes);
        let mut out = Vec::new();
        loop {
            match decoder.decode(&mut input) {
                Ok(Some(m)) => out.push(Ok(m)),
                Ok(None) => return out,
                Err(v) => out.push(Err(v)),
            }
        }
    }

    #[test]
    fn a_masked_text_frame_is_a_text_message() {
        let mut d = Decoder::new(100);
        let got = decode_all(&mut d, &client_frame(true, TEXT, b"{\"a\":1}"));
        assert_eq!(got, vec![Ok(Message::Text("{\"a\":1}".into()))]);
    }

    #[test]
    fn a_frame_split_anywhere_decodes_the_same() {
        let frame = client_frame(true, TEXT, &[b'x'; 300]);
        for cut in 0..frame.len() {
            let mut d = Decoder::new(1000);
            let mut input = BytesMut::from(&frame[..cut]);
            assert_eq!(d.decode(&mut input), Ok(None), "cut {cut}");
            input.extend_from_slice(&frame[cut..]);
            assert_eq!(
                d.decode(&mut input),
                Ok(Some(Message::Text(Bytes::from(vec![b'x'; 300])))),
                "cut {cut}"
            );
        }
    }

    #[test]
    fn fragments_join_and_control_frames_may_interleave() {
        let mut bytes = client_frame(false, TEXT, b"he");
        bytes.extend(client_frame(true, PING, b"p"));
        bytes.extend(client_frame(false, CONTINUATION, b"ll"));
        bytes.extend(client_frame(true, CONTINUATION, b"o"));
        let got = decode_all(&mut Decoder::new(100), &bytes);
        assert_eq!(
            got,
            vec![
                Ok(Message::Ping("p".into())),
                Ok(Message::Text("hello".into()))
            ]
        );
    }

    #[test]
    fn text_is_passed_on_for_the_request_parser_to_check_once() {
        // The connection's parser checks UTF-8 (and closes 1007): one pass, not two.
        let got = decode_all(
            &mut Decoder::new(100),
            &client_frame(true, TEXT, &[0x7B, 0xFF, 0x7D]),
        );
        assert_eq!(
            got,
            vec![Ok(Message::Text(Bytes::from_static(&[0x7B, 0xFF, 0x7D])))]
        );
    }

    #[test]
    fn protocol_violations_are_1002_and_break_the_stream() {
        let mut rsv1 = client_frame(true, TEXT, b"x");
        rsv1[0] |= 0x40;
        let mut unmasked = client_frame(true, TEXT, b"x");
        unmasked[1] &= 0x7F;
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("rsv1", rsv1),
            ("unmasked", unmasked),
            ("continuation", client_frame(true, CONTINUATION, b"x")),
            (
                "close 1006",
                client_frame(true, CLOSE, &1006u16.to_be_bytes()),
            ),
            ("close 1 byte", client_frame(true, CLOSE, &[3])),
            ("opcode 3", client_frame(true, 3, b"")),
            ("big ping", client_frame(true, PING, &[0; 126])),
            ("fragmented ping", client_frame(false, PING, b"")),
            ("text in text", {
                let mut b = client_frame(false, TEXT, b"a");
                b.extend(client_frame(true, TEXT, b"b"));
                b
            }),
        ];
        for (name, mut bytes) in cases {
            // Whatever follows a violation is ignored.
            bytes.extend(client_frame(true, TEXT, b"after"));
            let mut d = Decoder::new(100);
            let got = decode_all(&mut d, &bytes);
            assert_eq!(got.len(), 1, "{name}: {got:?}");
            let violation = got[0].clone().unwrap_err();
            assert_eq!(violation.code, 1002, "{name}");
            assert!(!violation.resumable(), "{name}");
        }
    }

    #[test]
    fn an_oversized_frame_is_reported_once_and_skipped_unbuffered() {
        let mut d = Decoder::new(1024);
        let big = client_frame(true, TEXT, &vec![b'a'; 4096]);
        // Only the header has arrived: already refused, nothing buffered.
        let mut input = BytesMut::from(&big[..14]);
        assert_eq!(d.decode(&mut input), Err(Violation::TOO_BIG));
        assert!(input.is_empty());
        // The rest streams in and is skipped; a close after it is still read.
        let mut rest = big[14..].to_vec();
        rest.extend(client_frame(true, CLOSE, &1000u16.to_be_bytes()));
        assert_eq!(
            decode_all(&mut d, &rest),
            vec![Ok(Message::Close(Some(1000), String::new()))]
        );
    }

    #[test]
    fn an_oversized_fragmented_message_is_reported_once_and_its_rest_skipped() {
        let mut d = Decoder::new(100);
        let mut bytes = Vec::new();
        bytes.extend(client_frame(false, TEXT, &[b'a'; 60]));
        bytes.extend(client_frame(false, CONTINUATION, &[b'a'; 60]));
        bytes.extend(client_frame(false, CONTINUATION, &[b'a'; 60]));
        bytes.extend(client_frame(true, CONTINUATION, &[b'a'; 60]));
        bytes.extend(client_frame(true, TEXT, b"next"));
        assert_eq!(
            decode_all(&mut d, &bytes),
            vec![Err(Violation::TOO_BIG), Ok(Message::Text("next".into()))]
        );
    }

    #[test]
    fn a_message_exactly_at_the_limit_is_served() {
        let mut d = Decoder::new(100);
        let mut bytes = client_frame(false, TEXT, &[b'a'; 50]);
        bytes.extend(client_frame(true, CONTINUATION, &[b'a'; 50]));
        assert_eq!(
            decode_all(&mut d, &bytes),
            vec![Ok(Message::Text(Bytes::from(vec![b'a'; 100])))]
        );
        let got = decode_all(&mut d, &client_frame(true, TEXT, &[b'a'; 101]));
        assert_eq!(got, vec![Err(Violation::TOO_BIG)]);
    }

    #[test]
    fn binary_is_reported_without_its_bytes_whatever_its_size() {
        let mut d = Decoder::new(10);
        let got = decode_all(&mut d, &client_frame(true, BINARY, &[0; 1000]));
        assert_eq!(got, vec![Ok(Message::Binary)]);
    }

    #[test]
    fn close_frames_carry_code_and_reason() {
        let mut payload = 4001u16.to_be_bytes().to_vec();
        payload.extend_from_slice("bye".as_bytes());
        let got = decode_all(&mut Decoder::new(10), &client_frame(true, CLOSE, &payload));
        assert_eq!(got, vec![Ok(Message::Close(Some(4001), "bye".into()))]);
        let got = decode_all(&mut Decoder::new(10), &client_frame(true, CLOSE, b""));
        assert_eq!(got, vec![Ok(Message::Close(None, String::new()))]);
        let mut bad = 1000u16.to_be_bytes().to_vec();
        bad.push(0xFF);
        let got = decode_all(&mut Decoder::new(10), &client_frame(true, CLOSE, &bad));
        assert_eq!(got[0].clone().unwrap_err().code, 1007);
    }

    #[test]
    fn server_frames_have_minimal_headers_and_no_mask() {
        for len in [0, 125, 126, 65535, 65536] {
            let mut out = Vec::new();
            encode_text(&mut out, &vec![b'x'; len]);
            assert_eq!(out.len(), text_frame_len(len), "{len}");
            assert_eq!(out[0], 0x81);
            assert_eq!(out[1] & 0x80, 0, "masked");
        }
        let mut out = Vec::new();
        encode_close(&mut out, 1009, &"é".repeat(100));
        assert!(out.len() <= 2 + MAX_CONTROL_PAYLOAD);
        assert_eq!(&out[2..4], &1009u16.to_be_bytes());
        assert!(std::str::from_utf8(&out[4..]).is_ok());
    }

    #[test]
    fn unmask_matches_the_bytewise_definition() {
        let mask = [1, 2, 3, 4];
        for len in 0..40 {
            let data: Vec<u8> = (0..len as u8).collect();
            let mut fast = data.clone();
            unmask(&mut fast, mask);
            let slow: Vec<u8> = data
                .iter()
                .enumerate()
                .map(|(i, b)| b ^ mask[i % 4])
                .collect();
            assert_eq!(fast, slow, "{len}");
        }
    }
}

/// The examples of this module's items (private: rustdoc cannot run them).
#[cfg(test)]
mod doc_examples {
    #[test]
    fn a_masked_text_frame_decodes_and_a_partial_one_waits() {
        use crate::websocket::codec::{Decoder, Message};
        use bytes::BytesMut;

        let mut decoder = Decoder::new(1024);
        // A masked text frame "hi" (mask 01 02 03 04), as a browser sends it.
        let mut input = BytesMut::from(&[0x81, 0x82, 1, 2, 3, 4, b'h' ^ 1, b'i' ^ 2][..]);
        assert_eq!(
            decoder.decode(&mut input),
            Ok(Some(Message::Text("hi".into())))
        );
        assert_eq!(decoder.decode(&mut input), Ok(None)); // needs more bytes
    }
}

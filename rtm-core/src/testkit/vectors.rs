//! The wire-vector interpreter: runs the cases of `conformance/vectors/protocol.jsonl`
//! against anything that can act as one client connection.
//!
//! The vectors are written once and run everywhere: against the sans-IO core
//! (rtm-core's own tests, time jumped at will) and over a real socket against
//! every adapter's `rtm-fixture` (the `conformance` crate). What differs is
//! only the [`Wire`]: how a frame is sent, how the next frame or close is read,
//! and what "time passes" means.
//!
//! | step | meaning |
//! |---|---|
//! | `send` | send this exact text frame |
//! | `send_binary_hex` | send a binary frame with these bytes |
//! | `send_padded_to` + `frame` | send `frame` with its `"PAD"` string grown so the whole text is exactly N bytes ([`pad_to`]) |
//! | `expect_frame` | the next frame equals this JSON value exactly |
//! | `expect_error` | the next frame is an error reply with this `id` and `error.code` (and `error.message` if given) |
//! | `expect_error_any_code` | the next frame is an error reply with this `id` |
//! | `expect_reply_id` | the next frame is a reply with this `id` |
//! | `expect_frames_any_order` | the next frames are exactly these, in any order |
//! | `expect_one_of` | one of the listed expectations holds |
//! | `expect_close` | the server closes the connection with this code |
//! | `expect_nothing` | nothing more arrives ([`Wire::next_if_any`] answers [`Received::Nothing`]) |
//! | `advance_ms` | time moves forward this much ([`Wire::advance`]) |
//!
//! A wire over a socket makes `next_frame_or_close` wait a bounded while
//! (seconds) and answer [`Received::Nothing`] when nothing came, makes
//! `next_if_any` wait only ~200 ms, and makes `advance` a real sleep.
//!
//! ```
//! use rtm_core::testkit::vectors::{parse_cases, run_case, Received, Wire};
//!
//! /// A wire that answers every frame with a fixed reply (a stand-in for a server).
//! struct Parrot(Vec<Received>);
//! impl Wire for Parrot {
//!     fn send_text(&mut self, _text: &str) {
//!         self.0.push(Received::Frame(r#"{"id":"1","data":"hi"}"#.into()));
//!     }
//!     fn send_binary(&mut self, _bytes: &[u8]) {}
//!     fn next_frame_or_close(&mut self) -> Received {
//!         if self.0.is_empty() { Received::Nothing } else { self.0.remove(0) }
//!     }
//!     fn advance(&mut self, _ms: u64) {}
//! }
//!
//! let line = r#"{"name":"echo","steps":[{"send":"x"},{"expect_frame":{"id":"1","data":"hi"}},{"expect_nothing":true}]}"#;
//! let cases = parse_cases(line).unwrap();
//! assert_eq!(run_case(&cases[0], &mut Parrot(Vec::new())), Ok(()));
//! ```

use std::collections::VecDeque;
use std::time::Duration;

use crate::config::ServerConfig;
use serde::Deserialize;
use serde_json::Value;

/// What arrived on the wire.
#[derive(Debug, Clone, PartialEq)]
pub enum Received {
    /// A text frame.
    Frame(String),
    /// The server closed the connection with this code.
    Close(u16),
    /// Nothing (core: no pending output; socket: nothing within the wire's patience).
    Nothing,
}

/// One client connection to a server running the fixture functions.
pub trait Wire {
    /// Sends a text frame.
    fn send_text(&mut self, text: &str);
    /// Sends a binary frame.
    fn send_binary(&mut self, bytes: &[u8]);
    /// The next frame or close, waiting as long as a reply may reasonably take
    /// (a socket wire: a few seconds), else [`Received::Nothing`].
    fn next_frame_or_close(&mut self) -> Received;
    /// The next frame or close, waiting only briefly (a socket wire: ~200 ms):
    /// used by `expect_nothing`. Defaults to [`Wire::next_frame_or_close`],
    /// right for a core whose pending output is known at once.
    fn next_if_any(&mut self) -> Received {
        self.next_frame_or_close()
    }
    /// Time moves forward (core: virtual time; socket: a real wait).
    fn advance(&mut self, ms: u64);
}

/// One line of the vectors file.
#[derive(Debug, Clone, Deserialize)]
pub struct Case {
    /// What the case checks.
    pub name: String,
    /// Whether the server runs the fixture's authentication handler.
    #[serde(default)]
    pub auth: bool,
    /// The auth timeout (default 10 s).
    pub auth_timeout_ms: Option<u64>,
    /// The frame size limit (default 1 MiB).
    pub max_frame_bytes: Option<usize>,
    /// The per-connection in-flight limit (default 256).
    pub max_in_flight: Option<usize>,
    /// The steps, in order.
    pub steps: Vec<Value>,
}

impl Case {
    /// The `rtm-fixture` flags that start a server the case can run against
    /// (`--auth`, `--auth-timeout-ms N`, `--max-frame-bytes N`, `--max-in-flight N`;
    /// `--runtime` and `--listen` are the caller's).
    ///
    /// ```
    /// let case = &rtm_core::testkit::vectors::parse_cases(
    ///     r#"{"name":"t","auth":true,"auth_timeout_ms":300,"steps":[]}"#,
    /// ).unwrap()[0];
    /// assert_eq!(case.fixture_flags(), ["--auth", "--auth-timeout-ms", "300"]);
    /// ```
    pub fn fixture_flags(&self) -> Vec<String> {
        let mut flags = Vec::new();
        if self.auth {
            flags.push("--auth".to_owned());
            if let Some(ms) = self.auth_timeout_ms {
                flags.extend(["--auth-timeout-ms".to_owned(), ms.to_string()]);
            }
        }
        if let Some(max) = self.max_frame_bytes {
            flags.extend(["--max-frame-bytes".to_owned(), max.to_string()]);
        }
        if let Some(max) = self.max_in_flight {
            flags.extend(["--max-in-flight".to_owned(), max.to_string()]);
        }
        flags
    }

    /// The server configuration the case asks for (subscriptions go through the fixture's authorizer).
    pub fn server_config(&self) -> ServerConfig {
        let mut config = ServerConfig::new("vectors");
        config.auth_timeout = self.auth.then(|| {
            self.auth_timeout_ms
                .map_or(ServerConfig::DEFAULT_AUTH_TIMEOUT, Duration::from_millis)
        });
        config.authorize_subscriptions = true;
        if let Some(max) = self.max_frame_bytes {
            config.limits.max_frame_bytes = max;
        }
        if let Some(max) = self.max_in_flight {
            config.limits.max_in_flight = max;
        }
        config
    }
}

/// Parses the vectors file: one case per non-empty line.
pub fn parse_cases(text: &str) -> Result<Vec<Case>, String> {
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(n, line)| serde_json::from_str(line).map_err(|e| format!("line {}: {e}", n + 1)))
        .collect()
}

/// Runs every step of `case` on `wire`; the error names the failing step.
pub fn run_case(case: &Case, wire: &mut dyn Wire) -> Result<(), String> {
    let mut reader = Reader {
        wire,
        buf: VecDeque::new(),
    };
    for (n, step) in case.steps.iter().enumerate() {
        run_step(step, &mut reader).map_err(|e| format!("step {} {step}: {e}", n + 1))?;
    }
    Ok(())
}

/// The wire plus what was read ahead but not yet matched (for `expect_one_of`).
struct Reader<'w> {
    wire: &'w mut dyn Wire,
    buf: VecDeque<Received>,
}

impl Reader<'_> {
    /// The `i`-th unmatched item, reading from the wire as needed.
    fn get(&mut self, i: usize) -> Received {
        while self.buf.len() <= i {
            match self.wire.next_frame_or_close() {
                Received::Nothing => return Received::Nothing,
                got => self.buf.push_back(got),
            }
        }
        self.buf[i].clone()
    }

    fn consume(&mut self, n: usize) {
        self.buf.drain(..n.min(self.buf.len()));
    }
}

fn run_step(step: &Value, reader: &mut Reader<'_>) -> Result<(), String> {
    let obj = step.as_object().ok_or("a step must be an object")?;
    if let Some(text) = obj.get("send") {
        let text = text.as_str().ok_or("send needs a string")?;
        reader.wire.send_text(text);
    } else if let Some(hex) = obj.get("send_binary_hex") {
        let bytes = decode_hex(hex.as_str().ok_or("send_binary_hex needs a string")?)?;
        reader.wire.send_binary(&bytes);
    } else if let Some(size) = obj.get("send_padded_to") {
        let size = size.as_u64().ok_or("send_padded_to needs a number")? as usize;
        let frame = obj.get("frame").ok_or("send_padded_to needs a frame")?;
        reader.wire.send_text(&pad_to(frame, size)?);
    } else if let Some(ms) = obj.get("advance_ms") {
        reader
            .wire
            .advance(ms.as_u64().ok_or("advance_ms needs a number")?);
    } else if obj.contains_key("expect_nothing") {
        let got = match reader.buf.pop_front() {
            Some(got) => got,
            None => reader.wire.next_if_any(),
        };
        if got != Received::Nothing {
            return Err(format!("expected nothing, got {got:?}"));
        }
    } else {
        let used = expect(step, reader, 0)?;
        reader.consume(used);
    }
    Ok(())
}

/// Checks one expectation against the unmatched items from `at`; returns how many it used.
fn expect(step: &Value, reader: &mut Reader<'_>, at: usize) -> Result<usize, String> {
    let obj = step.as_object().ok_or("an expectation must be an object")?;
    let (kind, want) = obj.iter().next().ok_or("empty expectation")?;
    match kind.as_str() {
        "expect_frame" => {
            let got = frame_at(reader, at)?;
            if &got != want {
                return Err(format!("expected frame {want}, got {got}"));
            }
            Ok(1)
        }
        "expect_error" | "expect_error_any_code" => {
            let got = frame_at(reader, at)?;
            let id = want.get("id").ok_or("expect_error needs an id")?;
            if got.get("id") != Some(id) {
                return Err(format!("expected an error reply to {id}, got {got}"));
            }
            let error = error_of(&got).ok_or_else(|| format!("not an error reply: {got}"))?;
            if kind == "expect_error" {
                for field in ["code", "message"] {
                    if let Some(expected) = want.get(field) {
                        if error.get(field) != Some(expected) {
                            return Err(format!("expected error {field} {expected}, got {got}"));
                        }
                    }
                }
            }
            Ok(1)
        }
        "expect_reply_id" => {
            let got = frame_at(reader, at)?;
            if got.get("id") != Some(want) || got.get("event").is_some() {
                return Err(format!("expected a reply to {want}, got {got}"));
            }
            Ok(1)
        }
        "expect_frames_any_order" => {
            let mut wanted: Vec<&Value> = want
                .as_array()
                .ok_or("expect_frames_any_order needs an array")?
                .iter()
                .collect();
            let count = wanted.len();
            for i in 0..count {
                let got = frame_at(reader, at + i)?;
                let Some(pos) = wanted.iter().position(|w| **w == got) else {
                    return Err(format!(
                        "unexpected frame {got}; still expecting {wanted:?}"
                    ));
                };
                wanted.swap_remove(pos);
            }
            Ok(count)
        }
        "expect_one_of" => {
            let options = want.as_array().ok_or("expect_one_of needs an array")?;
            let mut failures = Vec::new();
            for option in options {
                match expect(option, reader, at) {
                    Ok(used) => return Ok(used),
                    Err(e) => failures.push(e),
                }
            }
            Err(format!("none of the options held: {}", failures.join("; ")))
        }
        "expect_close" => match reader.get(at) {
            Received::Close(code) if Some(u64::from(code)) == want.as_u64() => Ok(1),
            got => Err(format!("expected close {want}, got {got:?}")),
        },
        other => Err(format!("unknown step kind {other:?}")),
    }
}

fn frame_at(reader: &mut Reader<'_>, at: usize) -> Result<Value, String> {
    match reader.get(at) {
        Received::Frame(text) => {
            serde_json::from_str(&text).map_err(|e| format!("frame is not JSON ({e}): {text}"))
        }
        got => Err(format!("expected a frame, got {got:?}")),
    }
}

/// The `error` object of an error reply: `data.error`, or the top-level
/// `error` of a rejected auth (`data: false`).
pub fn error_of(frame: &Value) -> Option<&Value> {
    frame
        .get("data")
        .and_then(|d| d.get("error"))
        .or_else(|| match frame.get("data") {
            Some(Value::Bool(false)) => frame.get("error"),
            _ => None,
        })
}

/// `frame` as JSON text, its `"PAD"` string grown so the text is exactly `size` bytes.
pub fn pad_to(frame: &Value, size: usize) -> Result<String, String> {
    let text = frame.to_string();
    let base = text.len() - "PAD".len();
    let grow = size
        .checked_sub(base)
        .ok_or_else(|| format!("frame is already over {size} bytes"))?;
    let padded = text.replacen("\"PAD\"", &format!("\"{}\"", "x".repeat(grow)), 1);
    if padded.len() != size {
        return Err(format!("frame has no \"PAD\" string: {text}"));
    }
    Ok(padded)
}

fn decode_hex(hex: &str) -> Result<Vec<u8>, String> {
    if hex.len() % 2 != 0 {
        return Err(format!("odd-length hex {hex:?}"));
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| {
            hex.get(i..i + 2)
                .and_then(|pair| u8::from_str_radix(pair, 16).ok())
                .ok_or_else(|| format!("bad hex {hex:?}"))
        })
        .collect()
}

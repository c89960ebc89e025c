//! Rooms and direct messages: `say` and `dm`, and what a message may be.
//!
//! - **Text** ([`clean_text`], issue 17 point 6): 1 to 2000 characters, not
//!   only whitespace, at most 20 lines. Line breaks are kept (`\r\n` and `\r`
//!   become `\n`, as do U+2028/U+2029); tabs become spaces; every other
//!   control character and the bidi controls (which can make `gnp.exe` show
//!   as `exe.png`) are removed before sending.
//! - **Exactly once** (point 7): a message carries the client's id; the same
//!   (sender, id) again within [`ID_MEMORY`] is not sent again, the call
//!   returns the first result (`{ts}`). So a retry after a lost reply sends
//!   nothing twice. Per server.
//! - **First contact** (point 5): a DM between two names that have not
//!   exchanged one before opens a new conversation, and those are budgeted
//!   per recipient and per sender ([`Budgets`](super::Budgets)): throwaway
//!   names cannot bury someone under new conversations, while DMs in
//!   existing conversations are not counted. Per server.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rtm_core::rate::{too_many, RateLimiter};
use rtm_tokio::Rate;
use rtm_tokio::{CallContext, ErrorCode, RtmError};
use serde_json::{json, Value};

use super::valid_name;

/// Longest message, in characters.
pub const MAX_TEXT_CHARS: usize = 2000;
/// Most lines in a message.
pub const MAX_LINES: usize = 20;
/// How long a message id is remembered.
pub const ID_MEMORY: Duration = Duration::from_secs(10 * 60);
/// Results remembered for ids, at most (the oldest go first past it).
const MAX_IDS: usize = 500_000;
/// How long a conversation is remembered after its last DM.
const CONVERSATION_MEMORY: Duration = Duration::from_secs(24 * 60 * 60);
/// Conversations remembered, at most (the oldest go first past it).
const MAX_CONVERSATIONS: usize = 200_000;

/// The text as it is sent, or why it cannot be.
pub fn clean_text(text: &str) -> Result<String, RtmError> {
    let mut clean = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\r' => {
                if chars.peek() == Some(&'\n') {
                    chars.next();
                }
                clean.push('\n');
            }
            '\n' | '\u{2028}' | '\u{2029}' => clean.push('\n'),
            '\t' => clean.push(' '),
            c if c.is_control() || is_bidi_control(c) => {}
            c => clean.push(c),
        }
    }
    if clean.trim().is_empty() {
        return Err(RtmError::handler("the message is empty"));
    }
    if clean.chars().count() > MAX_TEXT_CHARS {
        return Err(RtmError::handler(format!(
            "the message is longer than {MAX_TEXT_CHARS} characters"
        )));
    }
    if clean.split('\n').count() > MAX_LINES {
        return Err(RtmError::handler(format!(
            "the message has more than {MAX_LINES} lines"
        )));
    }
    Ok(clean)
}

/// The bidi embedding, override and isolate controls and the directional
/// marks: U+202A–U+202E, U+2066–U+2069, U+200E, U+200F, U+061C.
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{200E}' | '\u{200F}' | '\u{061C}')
}

/// A message id: 1 to 64 ASCII letters, digits, `-` or `_`.
fn valid_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// `(target, text, id)` from `say`/`dm` arguments; `id` may be absent or
/// null (older pages).
fn parse_args(args: &[Value], target: &str) -> Result<(String, String, Option<String>), RtmError> {
    let text_of = |i: usize| args.get(i).and_then(Value::as_str);
    let (Some(to), Some(text)) = (text_of(0), text_of(1)) else {
        return Err(RtmError::new(
            ErrorCode::BadRequest,
            format!("expected ({target}, text, id)"),
        ));
    };
    let id = match args.get(2) {
        None | Some(Value::Null) => None,
        Some(Value::String(id)) if valid_id(id) => Some(id.clone()),
        Some(_) => {
            return Err(RtmError::handler(
                "a message id is 1 to 64 letters, digits, '-' or '_'",
            ))
        }
    };
    Ok((to.to_owned(), text.to_owned(), id))
}

/// Budgets of new conversations.
#[derive(Debug, Clone, Copy)]
pub struct FirstContact {
    /// New conversations one name may receive.
    pub per_recipient: Rate,
    /// New conversations one name may start.
    pub per_sender: Rate,
}

/// The state behind `say` and `dm`.
pub struct Messages {
    sent: Mutex<Sent>,
    contacts: Mutex<Contacts>,
}

impl Messages {
    pub fn new(first_contact: FirstContact) -> Arc<Messages> {
        Arc::new(Messages {
            sent: Mutex::new(Sent::default()),
            contacts: Mutex::new(Contacts {
                known: HashMap::new(),
                per_recipient: RateLimiter::new(first_contact.per_recipient),
                per_sender: RateLimiter::new(first_contact.per_sender),
            }),
        })
    }

    /// `say(room, text, id)`: Push `room-message [room, from, text, ts, id]`
    /// to tag `room:<room>`; returns `{ts}`.
    pub fn say(&self, ctx: &CallContext, args: &[Value]) -> Result<Value, RtmError> {
        let (room, text, id) = parse_args(args, "room")?;
        if !valid_name(&room) {
            return Err(RtmError::handler(
                "a room name is 1 to 32 letters, digits, '-' or '_'",
            ));
        }
        let text = clean_text(&text)?;
        let from = caller(ctx)?;
        self.once(from, id.as_deref(), || {
            let ts = now_ms();
            let tags = [format!("room:{room}")];
            ctx.server
                .push("room-message", &tags, &(&room, from, &text, ts, &id))?;
            Ok(json!({ "ts": ts }))
        })
    }

    /// `dm(to, text, id)`: Publish `dm [from, text, ts, to, id]` to `to` and
    /// to the sender (their other tabs), on every server of the cluster;
    /// returns `{ts}`. A first contact counts against the budgets of new
    /// conversations.
    pub fn dm(&self, ctx: &CallContext, args: &[Value]) -> Result<Value, RtmError> {
        let (to, text, id) = parse_args(args, "to")?;
        if !valid_name(&to) {
            return Err(RtmError::handler(format!(
                "'{to}' is not a valid user name"
            )));
        }
        let text = clean_text(&text)?;
        let from = caller(ctx)?;
        self.once(from, id.as_deref(), || {
            let now = Instant::now();
            if to != from {
                self.contacts
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .admit(from, &to, now)?;
            }
            let ts = now_ms();
            let args = (from, &text, ts, &to, &id);
            ctx.server.publish(&to, "dm", &args)?;
            if to != from {
                ctx.server.publish(from, "dm", &args)?;
                self.contacts
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remember(from, &to, now);
            }
            Ok(json!({ "ts": ts }))
        })
    }

    /// Runs `send` unless `(from, id)` was sent within [`ID_MEMORY`]: then
    /// its first result. Only successes are remembered (a refused or failed
    /// send may be retried). The lock is held while sending (no await in
    /// it), so two copies racing send once.
    fn once(
        &self,
        from: &str,
        id: Option<&str>,
        send: impl FnOnce() -> Result<Value, RtmError>,
    ) -> Result<Value, RtmError> {
        let Some(id) = id else {
            return send();
        };
        let key = (from.to_owned(), id.to_owned());
        let mut sent = self.sent.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        sent.forget_before(now);
        if let Some((_, result)) = sent.results.get(&key) {
            return Ok(result.clone());
        }
        let result = send()?;
        sent.remember(key, now, result.clone());
        Ok(result)
    }
}

/// Results of recent messages by (sender, id), oldest first in `order`.
#[derive(Default)]
struct Sent {
    results: HashMap<(String, String), (Instant, Value)>,
    order: VecDeque<(Instant, (String, String))>,
}

impl Sent {
    fn forget_before(&mut self, now: Instant) {
        while let Some((at, _)) = self.order.front() {
            if now.duration_since(*at) < ID_MEMORY && self.order.len() < MAX_IDS {
                break;
            }
            if let Some((at, key)) = self.order.pop_front() {
                if self.results.get(&key).is_some_and(|(t, _)| *t == at) {
                    self.results.remove(&key);
                }
            }
        }
    }

    fn remember(&mut self, key: (String, String), now: Instant, result: Value) {
        self.results.insert(key.clone(), (now, result));
        self.order.push_back((now, key));
    }
}

/// Pairs of names that have exchanged a DM, and the budgets of new ones.
struct Contacts {
    /// (lower name, higher name) → the last DM between them.
    known: HashMap<(String, String), Instant>,
    per_recipient: RateLimiter<String>,
    per_sender: RateLimiter<String>,
}

impl Contacts {
    /// The conversation of `a` and `b`, either way round.
    fn key(a: &str, b: &str) -> (String, String) {
        let (low, high) = if a <= b { (a, b) } else { (b, a) };
        (low.to_owned(), high.to_owned())
    }

    /// `Ok` for a DM in a known conversation, or a new one within both
    /// budgets (taking one of each); else `rtm/too-many-requests`.
    fn admit(&mut self, from: &str, to: &str, now: Instant) -> Result<(), RtmError> {
        if self
            .known
            .get(&Self::key(from, to))
            .is_some_and(|last| now.duration_since(*last) < CONVERSATION_MEMORY)
        {
            return Ok(());
        }
        if let Err(wait) = self.per_sender.try_take(from.to_owned(), now) {
            let rate = self.per_sender.rate();
            return Err(too_many(
                "you started too many new conversations",
                rate,
                wait,
            ));
        }
        if let Err(wait) = self.per_recipient.try_take(to.to_owned(), now) {
            let rate = self.per_recipient.rate();
            let what = format!("{to} has too many new conversations");
            return Err(too_many(&what, rate, wait));
        }
        Ok(())
    }

    /// `from` and `to` exchanged a DM (now).
    fn remember(&mut self, from: &str, to: &str, now: Instant) {
        if self.known.len() >= MAX_CONVERSATIONS {
            self.known
                .retain(|_, last| now.duration_since(*last) < CONVERSATION_MEMORY);
        }
        if self.known.len() >= MAX_CONVERSATIONS {
            // Still full of live ones: forget the older half.
            let mut times: Vec<Instant> = self.known.values().copied().collect();
            let middle = times.len() / 2;
            let cutoff = *times.select_nth_unstable(middle).1;
            self.known.retain(|_, last| *last > cutoff);
        }
        self.known.insert(Self::key(from, to), now);
    }
}

fn caller(ctx: &CallContext) -> Result<&str, RtmError> {
    // The server requires auth, so every caller has a name; never panic on it.
    ctx.user_id()
        .ok_or_else(|| RtmError::new(ErrorCode::Unauthenticated, "sign in first"))
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

//! Properties of the server core under arbitrary input (proptest).
//!
//! - any bytes, any JSON: no panic, and every frame on a live connection gets
//!   exactly one answer (a reply, a close, or one handler request);
//! - every request with a string id gets exactly one reply, unless its
//!   connection closes;
//! - replies go only to the connection that asked.

mod common;

use std::collections::HashMap;

use common::harness::{Delivery, Harness};
use proptest::prelude::*;
use proptest::sample::select;
use rtm_core::ConnId;
use serde_json::{Map, Number, Value};

/// Keys the request parser looks at, so random objects often resemble requests.
const KEYS: &[&str] = &["id", "type", "function", "data", "event", "tags"];
/// Strings worth hitting: request types, function names, tags the authorizer cares about.
const WORDS: &[&str] = &[
    "auth",
    "invoke",
    "subscribe",
    "unsubscribe",
    "echo",
    "add",
    "fail",
    "panic",
    "whoami",
    "emit",
    "emit_to",
    "publish",
    "push",
    "big",
    "count",
    "broadcast",
    "helo",
    "user:alice",
    "user:bob",
    "private-x",
    "a",
    "",
];

fn json_leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        (-1000i64..1000).prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_filter_map("finite", |f| Number::from_f64(f).map(Value::Number)),
        select(WORDS).prop_map(Value::from),
        any::<String>().prop_map(Value::String),
    ]
}

/// Arbitrary JSON trees whose objects mostly use the request's keys.
fn json_value() -> impl Strategy<Value = Value> {
    json_leaf().prop_recursive(4, 48, 6, |inner| {
        let key = prop_oneof![select(KEYS).prop_map(String::from), "[a-z]{0,4}"];
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((key, inner), 0..6)
                .prop_map(|fields| Value::Object(fields.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// An object with any of the request fields, each usually of the right type.
/// `sleep` is left out: a random sleep may outlast the test.
fn request_like() -> impl Strategy<Value = Value> {
    let field =
        |good: BoxedStrategy<Value>| prop::option::of(prop_oneof![3 => good, 1 => json_value()]);
    let word = || select(WORDS).prop_map(Value::from).boxed();
    (
        field(prop_oneof!["[a-z0-9]{1,8}".prop_map(Value::from), Just(Value::from(""))].boxed()),
        field(
            select(&["auth", "invoke", "subscribe", "unsubscribe", "dance"][..])
                .prop_map(Value::from)
                .boxed(),
        ),
        field(word()),
        field(
            prop::collection::vec(json_value(), 0..4)
                .prop_map(Value::Array)
                .boxed(),
        ),
        field(word()),
        field(
            prop::collection::vec(word(), 0..4)
                .prop_map(Value::Array)
                .boxed(),
        ),
        json_value(),
    )
        .prop_map(|(id, kind, function, data, event, tags, extra)| {
            let mut object = Map::new();
            for (key, value) in KEYS.iter().zip([id, kind, function, data, event, tags]) {
                if let Some(value) = value {
                    object.insert((*key).to_owned(), value);
                }
            }
            object.insert("extra".into(), extra);
            Value::Object(object)
        })
}

/// Frames: raw bytes, random JSON, request-like JSON, and request-like JSON with one byte changed.
fn frame_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..200),
        json_value().prop_map(|v| v.to_string().into_bytes()),
        request_like().prop_map(|v| v.to_string().into_bytes()),
        (request_like(), any::<prop::sample::Index>(), any::<u8>()).prop_map(|(v, at, byte)| {
            let mut bytes = v.to_string().into_bytes();
            let i = at.index(bytes.len());
            bytes[i] = byte;
            bytes
        }),
    ]
}

fn server(auth: bool) -> Harness {
    if auth {
        Harness::with_broker()
    } else {
        Harness::plain()
    }
}

/// Everything `conn` received, and every request the handlers were asked for, since the last call.
fn answers(h: &mut Harness, conn: ConnId) -> (Vec<Delivery>, usize) {
    let handler_requests = h.held_calls.drain(..).count()
        + h.held_auth.drain(..).count()
        + h.held_authorize.drain(..).count();
    (h.take(conn), handler_requests)
}

proptest! {
    #[test]
    fn arbitrary_frames_never_panic_and_get_exactly_one_answer(
        auth in any::<bool>(),
        frames in prop::collection::vec(frame_bytes(), 1..8),
    ) {
        let mut h = server(auth);
        // Handlers are not run: each frame's immediate answer is observed alone.
        h.hold_calls = true;
        h.hold_auth = true;
        h.hold_authorize = true;
        let c = h.open();
        let mut open = true;
        for frame in frames {
            h.send(c, frame.clone());
            let (delivered, asked) = answers(&mut h, c);
            let closes = delivered.iter().filter(|d| matches!(d, Delivery::Close { .. })).count();
            if open {
                prop_assert_eq!(
                    delivered.len() + asked, 1,
                    "frame {:?} got {:?} and {} handler requests",
                    String::from_utf8_lossy(&frame), delivered, asked
                );
                open = closes == 0;
            } else {
                prop_assert!(delivered.is_empty() && asked == 0, "a closed connection got {:?}", delivered);
            }
            for d in &delivered {
                if let Delivery::Frame(text) = d {
                    prop_assert!(serde_json::from_slice::<Value>(text).is_ok());
                }
            }
        }
    }

    #[test]
    fn arbitrary_json_never_panics_and_close_drops_all_state(
        auth in any::<bool>(),
        frames in prop::collection::vec(
            (0..3usize, prop_oneof![json_value(), request_like()], 0..3000u64), 1..24),
    ) {
        let mut h = server(auth);
        let conns: Vec<ConnId> = (0..3).map(|_| h.open()).collect();
        if auth {
            h.send(conns[0], r#"{"id":"a","type":"auth","data":["user:alice"]}"#);
        }
        for (i, value, ms) in frames {
            h.send(conns[i], value.to_string());
            if ms % 4 == 0 {
                h.advance(ms);
            }
        }
        h.advance(20_000);
        for c in conns {
            h.close(c);
        }
        prop_assert_eq!(h.server.connection_count(), 0);
        prop_assert_eq!(h.server.index_sizes(), (0, 0));
        prop_assert_eq!(h.server.broker_topics().count(), 0);
        prop_assert_eq!(h.server.total_in_flight(), 0);
    }
}

// ----- several connections, interleaved -----

const CONNS: usize = 3;

#[derive(Debug, Clone)]
enum Op {
    /// A well-formed invoke of a fixture function (or an unknown one).
    Invoke {
        conn: usize,
        function: &'static str,
        args: Value,
    },
    /// An `auth` with this token.
    Auth { conn: usize, token: &'static str },
    /// A `subscribe` (or `unsubscribe`) to event "e" with these tags.
    Subscribe {
        conn: usize,
        subscribe: bool,
        tags: Vec<&'static str>,
    },
    /// Any JSON; a string `id` in it is replaced by a unique one.
    Raw { conn: usize, value: Value },
    /// Time passes.
    Advance(u64),
    /// The peer closes.
    Close(usize),
    /// The broker goes down or comes back.
    Broker(bool),
}

fn call() -> impl Strategy<Value = (&'static str, Value)> {
    let small = || prop_oneof![(-5i64..5).prop_map(Value::from), json_leaf()];
    prop_oneof![
        json_value().prop_map(|v| ("echo", Value::Array(vec![v]))),
        (small(), small()).prop_map(|(a, b)| ("add", Value::Array(vec![a, b]))),
        json_leaf().prop_map(|m| ("fail", Value::Array(vec![m]))),
        Just(("panic", Value::Array(vec![]))),
        (0u64..500).prop_map(|ms| ("sleep", Value::Array(vec![ms.into()]))),
        Just(("whoami", Value::Array(vec![]))),
        json_leaf().prop_map(|x| ("emit", Value::Array(vec!["e".into(), x]))),
        select(&["alice", "bob"][..])
            .prop_map(|u| ("emit_to", Value::Array(vec![u.into(), "e".into()]))),
        select(&["alice", "bob"][..]).prop_map(|u| (
            "publish",
            Value::Array(vec![u.into(), "e".into(), 1.into()])
        )),
        prop::collection::vec(select(&["a", "b", "c"][..]), 0..3).prop_map(|tags| (
            "push",
            Value::Array(vec!["e".into(), tags.into(), 1.into()])
        )),
        (0u64..64).prop_map(|n| ("big", Value::Array(vec![n.into()]))),
        Just(("count", Value::Array(vec![]))),
        json_leaf().prop_map(|x| ("broadcast", Value::Array(vec![x]))),
        json_value().prop_map(|v| ("helo", Value::Array(vec![v]))),
        json_value().prop_map(|v| ("echo", v)),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    let conn = || 0..CONNS;
    prop_oneof![
        8 => (conn(), call()).prop_map(|(conn, (function, args))| Op::Invoke { conn, function, args }),
        2 => (conn(), select(&["user:alice", "user:bob", "nope"][..])).prop_map(|(conn, token)| Op::Auth { conn, token }),
        2 => (conn(), any::<bool>(), prop::collection::vec(select(&["a", "b", "private-x"][..]), 0..3))
            .prop_map(|(conn, subscribe, tags)| Op::Subscribe { conn, subscribe, tags }),
        1 => (conn(), request_like()).prop_map(|(conn, value)| Op::Raw { conn, value }),
        2 => (0u64..800).prop_map(Op::Advance),
        1 => conn().prop_map(Op::Close),
        1 => any::<bool>().prop_map(Op::Broker),
    ]
}

/// Several connections driven by [`Op`]s, with every request id and delivery recorded.
struct Sim {
    h: Harness,
    conns: Vec<ConnId>,
    /// Request ids each connection sent (all unique).
    sent: Vec<Vec<String>>,
    /// Everything each connection received, in order.
    received: Vec<Vec<Delivery>>,
    next_id: usize,
}

impl Sim {
    fn new(auth: bool, max_in_flight: usize) -> Self {
        let mut config = Harness::fixture_config();
        config.limits.max_in_flight = max_in_flight;
        if auth {
            config.auth_timeout = Some(rtm_core::ServerConfig::DEFAULT_AUTH_TIMEOUT);
            config.broker = true;
        }
        let mut h = Harness::new(config);
        let conns = (0..CONNS).map(|_| h.open()).collect();
        Sim {
            h,
            conns,
            sent: vec![Vec::new(); CONNS],
            received: vec![Vec::new(); CONNS],
            next_id: 0,
        }
    }

    fn id(&mut self, conn: usize) -> String {
        self.next_id += 1;
        let id = format!("c{conn}-{}", self.next_id);
        self.sent[conn].push(id.clone());
        id
    }

    fn send(&mut self, conn: usize, frame: Value) {
        self.h.send(self.conns[conn], frame.to_string());
    }

    fn apply(&mut self, op: Op) {
        match op {
            Op::Invoke {
                conn,
                function,
                args,
            } => {
                let id = self.id(conn);
                self.send(conn, serde_json::json!({"id": id, "type": "invoke", "function": function, "data": args}));
            }
            Op::Auth { conn, token } => {
                let id = self.id(conn);
                self.send(
                    conn,
                    serde_json::json!({"id": id, "type": "auth", "data": [token]}),
                );
            }
            Op::Subscribe {
                conn,
                subscribe,
                tags,
            } => {
                let id = self.id(conn);
                let kind = if subscribe {
                    "subscribe"
                } else {
                    "unsubscribe"
                };
                self.send(
                    conn,
                    serde_json::json!({"id": id, "type": kind, "event": "e", "tags": tags}),
                );
            }
            Op::Raw { conn, mut value } => {
                if let Some(id) = value.get_mut("id").filter(|id| id.is_string()) {
                    self.next_id += 1;
                    let unique = format!("c{conn}-{}", self.next_id);
                    *id = Value::from(unique.clone());
                    self.sent[conn].push(unique);
                }
                self.send(conn, value);
            }
            Op::Advance(ms) => self.h.advance(ms),
            Op::Close(conn) => self.h.close(self.conns[conn]),
            Op::Broker(up) => {
                self.h.server.handle_broker_state(up);
                self.h.pump();
            }
        }
        self.collect();
    }

    fn collect(&mut self) {
        for (i, c) in self.conns.iter().enumerate() {
            self.received[i].extend(self.h.take(*c));
        }
    }

    /// Lets every sleeping call finish.
    fn settle(&mut self) {
        self.h.advance(1_000);
        self.collect();
    }

    fn closed(&self, conn: usize) -> bool {
        self.h.server.conn_info(self.conns[conn]).is_none()
    }

    /// Reply ids each connection received, with how many times.
    fn reply_ids(&self, conn: usize) -> HashMap<String, usize> {
        let mut ids = HashMap::new();
        for d in &self.received[conn] {
            if let Delivery::Frame(frame) = d {
                let value: Value = serde_json::from_slice(frame).unwrap_or_default();
                if let Some(id) = value.get("id").and_then(Value::as_str) {
                    *ids.entry(id.to_owned()).or_insert(0) += 1;
                }
            }
        }
        ids
    }
}

proptest! {
    #[test]
    fn every_well_formed_invoke_gets_exactly_one_reply_or_its_connection_is_closed(
        auth in any::<bool>(),
        max_in_flight in 1usize..4,
        ops in prop::collection::vec(op(), 1..40),
    ) {
        let mut sim = Sim::new(auth, max_in_flight);
        for op in ops {
            sim.apply(op);
        }
        sim.settle();
        for conn in 0..CONNS {
            let replies = sim.reply_ids(conn);
            for id in &sim.sent[conn] {
                let n = replies.get(id).copied().unwrap_or(0);
                if sim.closed(conn) {
                    prop_assert!(n <= 1, "conn {} got {} replies to {}", conn, n, id);
                } else {
                    prop_assert_eq!(n, 1, "conn {} (open) got {} replies to {}: {:?}", conn, n, id, sim.received[conn]);
                }
            }
            prop_assert_eq!(sim.h.server.in_flight(sim.conns[conn]), 0, "nothing left in flight");
        }
    }

    #[test]
    fn replies_go_only_to_the_connection_that_asked(
        auth in any::<bool>(),
        ops in prop::collection::vec(op(), 1..40),
    ) {
        let mut sim = Sim::new(auth, 256);
        for op in ops {
            sim.apply(op);
        }
        sim.settle();
        for conn in 0..CONNS {
            for id in sim.reply_ids(conn).keys() {
                prop_assert!(
                    sim.sent[conn].contains(id),
                    "conn {} got a reply to {}, which it never sent", conn, id
                );
            }
            // After its close, a connection receives nothing.
            let closes: Vec<usize> = sim.received[conn]
                .iter()
                .enumerate()
                .filter(|(_, d)| matches!(d, Delivery::Close { .. }))
                .map(|(i, _)| i)
                .collect();
            if let Some(&first) = closes.first() {
                prop_assert_eq!(first + 1, sim.received[conn].len(), "nothing after a close");
            }
        }
    }
}

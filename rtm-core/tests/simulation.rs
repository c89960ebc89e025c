//! A deterministic simulation of a whole cluster: 3 server cores sharing the
//! testkit's in-memory broker, 50 clients (several per user id), thousands of
//! random operations drawn from a seed, checked after every step against a
//! reference model.
//!
//! Every failure message starts with `RTM_SIM_SEED=<seed>`; replay it with
//! `RTM_SIM_SEED=<seed> cargo test -p rtm-core --test simulation`.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use common::sim::{check, seeds, Rng};

use rtm_core::frame::{parse_server_frame, ServerFrame};
use rtm_core::testkit::{Cluster, TokenApp};
use rtm_core::{Args, CloseCode, ConnId, ErrorCode, ServerConfig, Topic};
use serde_json::{json, Value};

const SERVERS: usize = 3;
const CLIENTS: usize = 50;
const USERS: usize = 20;
const STEPS: usize = 2_000;
const SEEDS: std::ops::RangeInclusive<u64> = 1..=20;
/// How often (in steps) the broker topics are compared with the model.
const TOPIC_CHECK_EVERY: usize = 5;
const NAMESPACE: &str = "sim";
const AUTH_TIMEOUT: Duration = Duration::from_secs(10);
const EVENTS: [&str; 3] = ["score", "chat", "news"];
/// Subscribing to it is denied by the app's authorizer.
const DENIED: &str = "secret";
const TAGS: [&str; 4] = ["a", "b", "c", "d"];

/// `min` to 3 random tags; duplicates on purpose: a push to ["a","a"]
/// must still arrive once.
fn random_tags(rng: &mut Rng, min: usize) -> Vec<String> {
    let n = min + rng.below(4 - min);
    (0..n).map(|_| rng.choose(&TAGS).to_owned()).collect()
}

/// What the reply to a pending request must be.
#[derive(Debug)]
enum Expect {
    /// A successful `auth` with this data: events may arrive from now on.
    Auth(Value),
    Data(Value),
    Error(ErrorCode),
}

/// The model of one connection.
struct Conn {
    server: usize,
    id: ConnId,
    /// Authenticated, as far as the model knows.
    open: bool,
    opened_at: Instant,
    subs: BTreeSet<(String, String)>,
    /// Requests whose reply has not been seen yet.
    pending: BTreeMap<String, Expect>,
    /// The auth reply has been read: events are allowed.
    auth_seen: bool,
    /// Set when the model closes it; the inbox must show this code.
    closed: Option<CloseCode>,
}

struct Client {
    user: String,
    token: String,
    conn: Option<Conn>,
}

impl Client {
    fn live(&self) -> Option<&Conn> {
        self.conn.as_ref().filter(|c| c.closed.is_none())
    }
}

struct Sim {
    seed: u64,
    step: usize,
    op: String,
    rng: Rng,
    cluster: Cluster<TokenApp>,
    clients: Vec<Client>,
    now: Instant,
    next_id: u64,
    next_nonce: u64,
    /// Events (by nonce) each client must receive in this step.
    expected: BTreeMap<usize, Vec<u64>>,
    /// What happened, printed at the end so a run can be seen to exercise the rules.
    stats: BTreeMap<String, u64>,
    /// Every topic the model can name, built once (escaping is slow in debug builds).
    topics: BTreeMap<(String, String), Topic>,
}

impl Sim {
    fn new(seed: u64) -> Self {
        let clients: Vec<Client> = (0..CLIENTS)
            .map(|i| {
                let user = format!("u{}", i % USERS);
                Client {
                    token: format!("t-{user}"),
                    user,
                    conn: None,
                }
            })
            .collect();
        let mut app = TokenApp::new().deny_event(DENIED);
        for c in &clients {
            app = app.with_token(&c.token, &c.user);
        }
        let config = ServerConfig {
            namespace: NAMESPACE.into(),
            auth_timeout: Some(AUTH_TIMEOUT),
            authorize_subscriptions: true,
            ..ServerConfig::new("sim")
        };
        let cluster = Cluster::with_config(SERVERS, config, app);
        Sim {
            seed,
            step: 0,
            op: String::new(),
            rng: Rng::new(seed),
            now: cluster.now(),
            cluster,
            clients,
            next_id: 0,
            next_nonce: 0,
            expected: BTreeMap::new(),
            stats: BTreeMap::new(),
            topics: all_topics(),
        }
    }

    fn ctx(&self) -> String {
        format!("{} step {} op {}:", self.seed, self.step, self.op)
    }

    fn run(&mut self) {
        for step in 0..STEPS {
            self.step = step;
            self.random_op();
            self.check_step();
        }
        self.step = STEPS;
        self.op = "everyone disconnects".into();
        for i in 0..CLIENTS {
            if self.clients[i].live().is_some() {
                self.disconnect(i);
            }
        }
        self.check_step();
        self.check_empty();
        println!("seed {}: {:?}", self.seed, self.stats);
    }

    fn count(&mut self, what: String) {
        *self.stats.entry(what).or_default() += 1;
    }

    // ----- picking -----

    fn pick_client(&mut self, f: impl Fn(&Client) -> bool) -> Option<usize> {
        let candidates: Vec<usize> = (0..CLIENTS).filter(|&i| f(&self.clients[i])).collect();
        (!candidates.is_empty()).then(|| candidates[self.rng.below(candidates.len())])
    }

    fn live_client(&mut self) -> Option<usize> {
        self.pick_client(|c| c.live().is_some())
    }

    fn open_client(&mut self) -> Option<usize> {
        self.pick_client(|c| c.live().is_some_and(|c| c.open))
    }

    fn request_id(&mut self, client: usize) -> String {
        self.next_id += 1;
        format!("c{client}-{}", self.next_id)
    }

    fn nonce(&mut self) -> u64 {
        self.next_nonce += 1;
        self.next_nonce
    }

    fn conn(&mut self, client: usize) -> &mut Conn {
        self.clients[client].conn.as_mut().unwrap()
    }

    /// Sends a request from `client` and records the reply it must get.
    fn request(&mut self, client: usize, id: String, text: String, expect: Expect) {
        let conn = self.conn(client);
        let (server, conn_id) = (conn.server, conn.id);
        conn.pending.insert(id, expect);
        self.cluster.send(server, conn_id, text);
    }

    // ----- operations -----

    fn random_op(&mut self) {
        let roll = self.rng.below(100);
        let (kind, done) = match roll {
            0..=11 => ("connect", self.op_connect()),
            12..=25 => ("auth", self.op_auth()),
            26..=35 => ("call", self.op_call()),
            36..=49 => ("subscribe", self.op_subscribe()),
            50..=54 => ("unsubscribe", self.op_unsubscribe()),
            55..=60 => ("emit", self.op_emit()),
            61..=72 => ("publish", self.op_publish()),
            73..=84 => ("push", self.op_push()),
            85..=89 => ("disconnect", self.op_disconnect()),
            90..=98 => ("time", self.op_time_jump()),
            _ => ("garbage", self.op_garbage()),
        };
        let kind = if done {
            kind
        } else {
            // Nobody fit the operation (e.g. nobody connected yet): let time pass instead.
            self.op_time_jump();
            "time"
        };
        self.count(format!("op {kind}"));
        let open = self
            .clients
            .iter()
            .filter(|c| c.live().is_some_and(|l| l.open))
            .count();
        *self
            .stats
            .entry("open connections (sum over steps)".into())
            .or_default() += open as u64;
    }

    fn op_connect(&mut self) -> bool {
        let Some(client) = self.pick_client(|c| c.conn.is_none()) else {
            return false;
        };
        let server = self.rng.below(SERVERS);
        self.op = format!("connect client {client} to server {server}");
        let id = self.cluster.connect(server, self.now).unwrap();
        self.clients[client].conn = Some(Conn {
            server,
            id,
            open: false,
            opened_at: self.now,
            subs: BTreeSet::new(),
            pending: BTreeMap::new(),
            auth_seen: false,
            closed: None,
        });
        true
    }

    fn op_auth(&mut self) -> bool {
        // Mostly the ones waiting to authenticate; sometimes a second auth.
        let pending = self.pick_client(|c| c.live().is_some_and(|l| !l.open));
        let Some(client) = pending
            .filter(|_| self.rng.percent(90))
            .or_else(|| self.live_client())
        else {
            return false;
        };
        let good = self.rng.percent(95);
        let token = if good {
            self.clients[client].token.clone()
        } else {
            "t-bad".to_owned()
        };
        self.op = format!("client {client} auth with {token}");
        let id = self.request_id(client);
        let text = json!({"id": id, "type": "auth", "data": [token]}).to_string();
        let user = self.clients[client].user.clone();
        let conn = self.conn(client);
        let expect = if conn.open {
            Expect::Error(ErrorCode::AlreadyAuthenticated)
        } else if good {
            conn.open = true;
            Expect::Auth(json!({ "user": user }))
        } else {
            conn.closed = Some(CloseCode::AUTH_REJECTED);
            Expect::Error(ErrorCode::AuthRejected)
        };
        self.request(client, id, text, expect);
        true
    }

    fn op_call(&mut self) -> bool {
        let Some(client) = self.live_client() else {
            return false;
        };
        let id = self.request_id(client);
        let n = self.nonce();
        let (function, data, ok) = match self.rng.below(10) {
            0 => (
                "nope",
                json!([]),
                Expect::Error(ErrorCode::FunctionNotFound),
            ),
            1 => (
                "whoami",
                json!([]),
                Expect::Data(json!(self.clients[client].user)),
            ),
            2 => (
                "fail",
                json!(["boom"]),
                Expect::Error(ErrorCode::HandlerError),
            ),
            _ => ("echo", json!([n]), Expect::Data(json!([n]))),
        };
        self.op = format!("client {client} invokes {function}");
        let expect = if self.conn(client).open {
            ok
        } else {
            Expect::Error(ErrorCode::Unauthenticated)
        };
        let text = json!({"id": id, "type": "invoke", "function": function, "data": data});
        self.request(client, id, text.to_string(), expect);
        true
    }

    fn op_subscribe(&mut self) -> bool {
        let Some(client) = self.live_client() else {
            return false;
        };
        let event = if self.rng.percent(5) {
            DENIED
        } else {
            self.rng.choose(&EVENTS)
        };
        let tags = random_tags(&mut self.rng, 1);
        self.op = format!("client {client} subscribes {event} {tags:?}");
        let id = self.request_id(client);
        let text = json!({"id": id, "type": "subscribe", "event": event, "tags": tags});
        let conn = self.conn(client);
        let expect = if !conn.open {
            Expect::Error(ErrorCode::Unauthenticated)
        } else if event == DENIED {
            Expect::Error(ErrorCode::Forbidden)
        } else {
            conn.subs
                .extend(tags.iter().map(|t| (event.to_owned(), t.clone())));
            Expect::Data(json!(true))
        };
        self.request(client, id, text.to_string(), expect);
        true
    }

    fn op_unsubscribe(&mut self) -> bool {
        let Some(client) = self.live_client() else {
            return false;
        };
        let held: Vec<(String, String)> = self.conn(client).subs.iter().cloned().collect();
        let (event, mut tags) = if !held.is_empty() && self.rng.percent(80) {
            let (event, tag) = held[self.rng.below(held.len())].clone();
            (event, vec![tag])
        } else {
            (self.rng.choose(&EVENTS).to_owned(), Vec::new())
        };
        tags.extend(random_tags(&mut self.rng, 0));
        self.op = format!("client {client} unsubscribes {event} {tags:?}");
        let id = self.request_id(client);
        let text = json!({"id": id, "type": "unsubscribe", "event": event, "tags": tags});
        let conn = self.conn(client);
        let expect = if conn.open {
            conn.subs
                .retain(|(e, t)| !(*e == event && tags.contains(t)));
            Expect::Data(json!(true))
        } else {
            Expect::Error(ErrorCode::Unauthenticated)
        };
        self.request(client, id, text.to_string(), expect);
        true
    }

    fn op_emit(&mut self) -> bool {
        let server = self.rng.below(SERVERS);
        let users: BTreeSet<String> = (0..USERS)
            .filter(|_| self.rng.percent(30))
            .map(|u| format!("u{u}"))
            .collect();
        let n = self.nonce();
        self.op = format!("emit on server {server} to users {users:?}");
        let targets: Vec<usize> = (0..CLIENTS)
            .filter(|&i| {
                let c = &self.clients[i];
                c.live()
                    .is_some_and(|l| l.open && l.server == server && users.contains(&c.user))
            })
            .collect();
        let args = Args::encode(&[n]).unwrap();
        let sent = self
            .cluster
            .emit(
                server,
                "flash",
                |info| info.user_id().is_some_and(|u| users.contains(u)),
                &args,
            )
            .unwrap();
        let ctx = self.ctx();
        check!(
            ctx,
            sent == targets.len(),
            "emit sent {sent}, expected {}",
            targets.len()
        );
        self.expect_event(&targets, n);
        true
    }

    fn op_publish(&mut self) -> bool {
        let user = format!("u{}", self.rng.below(USERS));
        let event = self.rng.choose(&EVENTS);
        let n = self.nonce();
        let targets: Vec<usize> = (0..CLIENTS)
            .filter(|&i| {
                let c = &self.clients[i];
                c.user == user && c.live().is_some_and(|l| l.open)
            })
            .collect();
        self.send_from_caller_or_server("publish", json!([user, event, n]), &targets, n);
        true
    }

    fn op_push(&mut self) -> bool {
        let event = self.rng.choose(&EVENTS);
        let tags = random_tags(&mut self.rng, 0);
        let n = self.nonce();
        let targets: Vec<usize> = (0..CLIENTS)
            .filter(|&i| {
                self.clients[i].live().is_some_and(|l| {
                    tags.iter()
                        .any(|t| l.subs.contains(&(event.to_owned(), t.clone())))
                })
            })
            .collect();
        self.send_from_caller_or_server("push", json!([event, tags, n]), &targets, n);
        true
    }

    /// Runs `publish`/`push` either as a function invoked by a random
    /// authenticated client, or as a server command; either way the count of
    /// local deliveries is checked against the model.
    fn send_from_caller_or_server(
        &mut self,
        function: &str,
        args: Value,
        targets: &[usize],
        n: u64,
    ) {
        let caller = if self.rng.percent(50) {
            self.open_client()
        } else {
            None
        };
        let local = |sim: &Sim, server: usize| {
            targets
                .iter()
                .filter(|&&i| sim.clients[i].live().is_some_and(|l| l.server == server))
                .count()
        };
        match caller {
            Some(client) => {
                let server = self.conn(client).server;
                self.op = format!("client {client} on server {server} invokes {function} {args}");
                let id = self.request_id(client);
                let expect = Expect::Data(json!(local(self, server)));
                let text = json!({"id": id, "type": "invoke", "function": function, "data": args});
                self.request(client, id, text.to_string(), expect);
            }
            None => {
                let server = self.rng.below(SERVERS);
                self.op = format!("server {server} runs {function} {args}");
                let Value::Array(mut all) = args else {
                    unreachable!()
                };
                let rest = Args::encode(&all.split_off(2)).unwrap();
                let sent = if function == "publish" {
                    let user = all[0].as_str().unwrap();
                    self.cluster
                        .publish(server, user, all[1].as_str().unwrap(), &rest)
                } else {
                    let tags: Vec<String> = serde_json::from_value(all[1].clone()).unwrap();
                    self.cluster
                        .push(server, all[0].as_str().unwrap(), &tags, &rest)
                }
                .unwrap();
                let ctx = self.ctx();
                let want = local(self, server);
                check!(
                    ctx,
                    sent == want,
                    "{function} sent {sent} locally, expected {want}"
                );
            }
        }
        self.expect_event(targets, n);
    }

    fn expect_event(&mut self, targets: &[usize], n: u64) {
        for &i in targets {
            self.expected.entry(i).or_default().push(n);
        }
    }

    fn op_disconnect(&mut self) -> bool {
        let Some(client) = self.live_client() else {
            return false;
        };
        self.op = format!("client {client} disconnects");
        self.disconnect(client);
        true
    }

    fn disconnect(&mut self, client: usize) {
        let conn = self.conn(client);
        conn.closed = Some(CloseCode::NORMAL);
        let (server, id) = (conn.server, conn.id);
        self.cluster.disconnect(server, id);
    }

    fn op_time_jump(&mut self) -> bool {
        // Mostly short pauses; sometimes long enough to time out pending auths.
        let max_ms = if self.rng.percent(15) { 12_000 } else { 1_500 };
        let jump = Duration::from_millis(self.rng.below(max_ms) as u64);
        self.now += jump;
        self.op = format!("time jumps {jump:?}");
        let now = self.now;
        for client in &mut self.clients {
            if let Some(conn) = client.conn.as_mut().filter(|c| c.closed.is_none()) {
                if !conn.open && conn.opened_at + AUTH_TIMEOUT <= now {
                    conn.closed = Some(CloseCode::AUTH_TIMEOUT);
                }
            }
        }
        self.cluster.advance(now);
        true
    }

    fn op_garbage(&mut self) -> bool {
        let Some(client) = self.live_client() else {
            return false;
        };
        self.op = format!("client {client} sends garbage");
        let conn = self.conn(client);
        conn.closed = Some(CloseCode::INVALID_PAYLOAD);
        let (server, id) = (conn.server, conn.id);
        self.cluster.send(server, id, "not json");
        true
    }

    // ----- invariants -----

    /// Reads every connection's new frames and checks them, the servers and
    /// the broker against the model.
    fn check_step(&mut self) {
        let ctx = self.ctx();
        let expected = std::mem::take(&mut self.expected);
        for (i, client) in self.clients.iter_mut().enumerate() {
            let Some(conn) = client.conn.as_mut() else {
                check!(
                    ctx,
                    !expected.contains_key(&i),
                    "client {i} is not connected but was sent an event"
                );
                continue;
            };
            let mut got = Vec::new();
            for frame in self.cluster.take_frames(conn.server, conn.id) {
                let text = String::from_utf8_lossy(&frame).into_owned();
                match parse_server_frame(&frame) {
                    Ok(ServerFrame::Reply { id, result, .. }) => {
                        let want = conn.pending.remove(&id);
                        *self.stats.entry("replies".into()).or_default() += 1;
                        check!(
                            ctx,
                            want.is_some(),
                            "client {i}: unexpected or duplicate reply {text}"
                        );
                        match (want.unwrap(), result) {
                            (Expect::Auth(data), Ok(raw)) => {
                                let value: Value = serde_json::from_str(raw.get()).unwrap();
                                check!(
                                    ctx,
                                    value == data,
                                    "client {i}: auth reply {text}, expected {data}"
                                );
                                conn.auth_seen = true;
                            }
                            (Expect::Data(data), Ok(raw)) => {
                                let value: Value = serde_json::from_str(raw.get()).unwrap();
                                check!(
                                    ctx,
                                    value == data,
                                    "client {i}: reply {text}, expected {data}"
                                );
                            }
                            (Expect::Error(code), Err(err)) => {
                                check!(
                                    ctx,
                                    err.code == code,
                                    "client {i}: reply {text}, expected error {code}"
                                );
                            }
                            (want, _) => {
                                check!(ctx, false, "client {i}: reply {text}, expected {want:?}")
                            }
                        }
                    }
                    Ok(ServerFrame::Event { args, .. }) => {
                        check!(
                            ctx,
                            conn.auth_seen,
                            "client {i}: event {text} before its auth reply"
                        );
                        let (n,): (u64,) = args.deserialize().unwrap();
                        got.push(n);
                        *self.stats.entry("events".into()).or_default() += 1;
                    }
                    Err(err) => check!(ctx, false, "client {i}: unreadable frame {text}: {err}"),
                }
            }
            let mut want = expected.get(&i).cloned().unwrap_or_default();
            got.sort_unstable();
            want.sort_unstable();
            check!(
                ctx,
                got == want,
                "client {i} ({}) got events {got:?}, expected {want:?}",
                client.user
            );

            let inbox = self.cluster.inbox(conn.server, conn.id).unwrap();
            let closed = inbox.closed.map(|(code, _)| code);
            check!(
                ctx,
                closed == conn.closed,
                "client {i}: closed {closed:?}, expected {:?}",
                conn.closed
            );
            if let Some(code) = closed {
                *self.stats.entry(format!("close {code}")).or_default() += 1;
                // Replies may be lost with the connection; its model is dropped.
                client.conn = None;
            } else {
                check!(
                    ctx,
                    conn.pending.is_empty(),
                    "client {i}: no reply to {:?}",
                    conn.pending
                );
                let server = self.cluster.server(conn.server);
                check!(
                    ctx,
                    server.is_open(conn.id) == conn.open,
                    "client {i}: server says open={}",
                    !conn.open
                );
            }
        }
        self.check_servers();
    }

    /// Connection counts, in-flight counts and broker topics match the model.
    /// The topic sets are compared every [`TOPIC_CHECK_EVERY`] steps (it is the
    /// slowest check in a debug build); a leak persists, so it is still found.
    fn check_servers(&self) {
        let ctx = self.ctx();
        let broker = self.cluster.broker();
        check!(
            ctx,
            broker.pending() == 0,
            "{} broker messages left undelivered",
            broker.pending()
        );
        let full = self.step % TOPIC_CHECK_EVERY == 0 || self.step == STEPS;
        for s in 0..SERVERS {
            let server = self.cluster.server(s);
            let conns = self
                .clients
                .iter()
                .filter(|c| c.live().is_some_and(|l| l.server == s))
                .count();
            check!(
                ctx,
                server.connection_count() == conns,
                "server {s} holds {} connections, expected {conns}",
                server.connection_count()
            );
            check!(
                ctx,
                server.total_in_flight() == 0,
                "server {s} has requests in flight"
            );
            if !full {
                continue;
            }
            let mut topics = BTreeSet::new();
            for client in &self.clients {
                let Some(conn) = client.live().filter(|c| c.server == s) else {
                    continue;
                };
                if conn.open {
                    topics.insert(&self.topics[&(String::new(), client.user.clone())]);
                }
                for sub in &conn.subs {
                    topics.insert(&self.topics[sub]);
                }
            }
            let held: BTreeSet<&Topic> = server.broker_topics().collect();
            check!(
                ctx,
                held == topics,
                "server {s} needs topics {held:?}, expected {topics:?}"
            );
            let subscribed: BTreeSet<&Topic> = broker.topics_of(s).collect();
            check!(
                ctx,
                subscribed == topics,
                "broker has server {s} on {subscribed:?}, expected {topics:?}"
            );
        }
    }

    /// After everyone left, no state is left anywhere.
    fn check_empty(&self) {
        common::sim::check_empty(&self.ctx(), &self.cluster);
    }
}

/// User topics keyed by ("", user), push topics by (event, tag).
fn all_topics() -> BTreeMap<(String, String), Topic> {
    let users = (0..USERS).map(|u| {
        let user = format!("u{u}");
        ((String::new(), user.clone()), Topic::user(NAMESPACE, &user))
    });
    let pushes = EVENTS.iter().flat_map(|event| {
        TAGS.iter().map(move |tag| {
            let key = (event.to_string(), tag.to_string());
            (key, Topic::push(NAMESPACE, event, tag))
        })
    });
    users.chain(pushes).collect()
}

#[test]
fn random_cluster_operations_keep_every_delivery_rule() {
    for seed in seeds(SEEDS) {
        Sim::new(seed).run();
    }
}

#[test]
fn the_same_seed_replays_the_same_run() {
    let frames = |seed| {
        let mut sim = Sim::new(seed);
        let mut log = Vec::new();
        for step in 0..300 {
            sim.step = step;
            sim.random_op();
            for client in &sim.clients {
                if let Some(conn) = &client.conn {
                    let inbox = sim.cluster.inbox(conn.server, conn.id).unwrap();
                    log.extend(inbox.frames.iter().cloned());
                }
            }
            sim.check_step();
        }
        log
    };
    assert_eq!(
        frames(7),
        frames(7),
        "RTM_SIM_SEED=7 did not replay identically"
    );
}

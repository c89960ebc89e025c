//! Helpers for the broker tests: event capture with time limits, unique
//! namespaces, a fast-reacting config, a TCP proxy that can wedge connections.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rtm_broker::{BrokerEvent, BrokerSink, BrokerState};
use rtm_core::Topic;
use rtm_redis::RedisBrokerConfig;

/// Long enough for any single expected event on a loaded CI machine.
pub(crate) const EVENT_TIMEOUT: Duration = Duration::from_secs(10);

/// A namespace no other test (or test run on a shared Redis) uses.
pub(crate) fn unique_ns(name: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "t{}-{}-{name}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Probes and backoff quick enough for tests.
pub(crate) fn fast_config(url: &str, ns: &str, server_id: &str) -> RedisBrokerConfig {
    RedisBrokerConfig::new(url, ns, server_id)
        .with_backoff(Duration::from_millis(50), Duration::from_millis(400))
        .with_probe_interval(Duration::from_millis(200))
        .with_probe_timeout(Duration::from_millis(700))
        .with_timeouts(Duration::from_millis(500), Duration::from_millis(700))
}

/// What a broker handed to its sink, in order.
pub(crate) struct Events {
    rx: Receiver<BrokerEvent>,
    /// Every event taken from `rx` so far.
    pub seen: Vec<BrokerEvent>,
}

pub(crate) fn capture() -> (BrokerSink, Events) {
    let (tx, rx) = std::sync::mpsc::channel();
    let tx = Mutex::new(tx);
    let sink: BrokerSink = Arc::new(move |e| {
        let _ = tx.lock().unwrap().send(e);
    });
    (sink, Events { rx, seen: vec![] })
}

impl Events {
    /// Waits for an event matching `pred`; panics naming `what` after `EVENT_TIMEOUT`.
    pub(crate) fn wait_for(
        &mut self,
        what: &str,
        pred: impl Fn(&BrokerEvent) -> bool,
    ) -> BrokerEvent {
        let deadline = Instant::now() + EVENT_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(e) => {
                    self.seen.push(e.clone());
                    if pred(&e) {
                        return e;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    panic!("timed out waiting for {what}; seen: {:?}", self.seen)
                }
                Err(RecvTimeoutError::Disconnected) => panic!("sink dropped waiting for {what}"),
            }
        }
    }

    pub(crate) fn wait_message(&mut self, topic: &Topic, payload: &str) {
        let want = Bytes::from(payload.to_string());
        self.wait_for(&format!("message {payload:?} on {topic}"), |e| {
            matches!(e, BrokerEvent::Message { topic: t, payload: p } if t == topic && *p == want)
        });
    }

    pub(crate) fn wait_up(&mut self) {
        self.wait_for("State(Up)", |e| *e == BrokerEvent::State(BrokerState::Up));
    }

    pub(crate) fn wait_down(&mut self) {
        self.wait_for("State(Down)", |e| {
            matches!(e, BrokerEvent::State(BrokerState::Down { .. }))
        });
    }

    /// Payloads of every message seen so far, as strings.
    pub(crate) fn payloads(&self) -> Vec<String> {
        self.seen
            .iter()
            .filter_map(|e| match e {
                BrokerEvent::Message { payload, .. } => {
                    Some(String::from_utf8_lossy(payload).into_owned())
                }
                BrokerEvent::State(_) => None,
            })
            .collect()
    }
}

/// Polls `cond` (for state with no event to await, e.g. PUBSUB CHANNELS) until true; panics after `EVENT_TIMEOUT`.
pub(crate) fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + EVENT_TIMEOUT;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `PUBSUB CHANNELS {pattern}` (or `PUBSUB SHARDCHANNELS`) on a fresh connection.
pub(crate) fn pubsub_channels(url: &str, pattern: &str) -> Vec<String> {
    let client = redis::Client::open(url).unwrap();
    let mut con = client.get_connection().unwrap();
    let mut names: Vec<String> = redis::cmd("PUBSUB")
        .arg("CHANNELS")
        .arg(pattern)
        .query(&mut con)
        .unwrap();
    names.sort();
    names
}

/// A TCP proxy in front of Redis; `wedge()` makes every connection open so
/// far go silent (bytes are swallowed, sockets stay open) while new
/// connections work: the "subscription silently gone" failure.
pub(crate) struct WedgeProxy {
    pub port: u16,
    epoch: Arc<AtomicU64>,
}

impl WedgeProxy {
    pub(crate) fn start(upstream_port: u16) -> WedgeProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let epoch = Arc::new(AtomicU64::new(0));
        let e = epoch.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream_port)) else {
                    continue;
                };
                let born = e.load(Ordering::SeqCst);
                pump(
                    client.try_clone().unwrap(),
                    server.try_clone().unwrap(),
                    born,
                    e.clone(),
                );
                pump(server, client, born, e.clone());
            }
        });
        WedgeProxy { port, epoch }
    }

    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub(crate) fn wedge(&self) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
    }
}

fn pump(mut from: TcpStream, mut to: TcpStream, born: u64, epoch: Arc<AtomicU64>) {
    std::thread::spawn(move || {
        let mut buf = [0u8; 16 * 1024];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if epoch.load(Ordering::SeqCst) != born {
                        continue; // wedged: swallow
                    }
                    if to.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }
        }
        let _ = to.shutdown(Shutdown::Both);
    });
}

/// A broker on the current tokio runtime, started with a capturing sink (not waiting for `Up`).
pub(crate) async fn started_tokio(config: RedisBrokerConfig) -> (rtm_redis::RedisBroker, Events) {
    use rtm_broker::Broker;
    let broker = rtm_redis::RedisBroker::new(config, rtm_redis::TokioRuntime::current()).unwrap();
    let (sink, events) = capture();
    broker.start(sink).await.unwrap();
    (broker, events)
}

/// A broker on smol (no tokio runtime around), started with a capturing
/// sink (not waiting for `Up`).
#[allow(dead_code)] // not every test binary has a smol test
pub(crate) async fn started_smol(config: RedisBrokerConfig) -> (rtm_redis::RedisBroker, Events) {
    use rtm_broker::Broker;
    let broker = rtm_redis::RedisBroker::new(config, rtm_redis::SmolRuntime).unwrap();
    let (sink, events) = capture();
    broker.start(sink).await.unwrap();
    (broker, events)
}

/// For the smol tests: the broker must have run with no tokio runtime around.
pub(crate) fn assert_outside_tokio() {
    assert!(
        tokio::runtime::Handle::try_current().is_err(),
        "this test must not run inside tokio"
    );
}

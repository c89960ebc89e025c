//! [`Shared`]: the state a [`RedisBroker`](crate::RedisBroker) handle shares
//! with its background tasks (the supervisor and the publisher): the broker's
//! state and connections, the topics it wants, the [`Signal`]s to the supervisor,
//! the [`Counters`], and the push handler that turns the pub/sub connection's
//! push frames into sink messages and signals.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
use std::time::Duration;

use bytes::Bytes;
use futures_channel::mpsc::{UnboundedReceiver, UnboundedSender};
use redis::{PushInfo, PushKind, Value};
use rtm_broker::{BrokerEvent, BrokerSink, BrokerState};
use rtm_core::Topic;
use rtm_runtime::Runtime;

use crate::config::RedisBrokerConfig;
use crate::conn::{Conn, Target};
use crate::metrics::{Op, RedisMetrics};

/// The live counters behind [`BrokerStats`](crate::BrokerStats), and the
/// metrics that count the same things: each is counted here, once, for both.
pub(crate) struct Counters {
    pub(crate) published: AtomicU64,
    pub(crate) publish_errors: AtomicU64,
    pub(crate) received: AtomicU64,
    pub(crate) reconnects: AtomicU64,
    pub(crate) probes_sent: AtomicU64,
    pub(crate) probes_failed: AtomicU64,
    metrics: RedisMetrics,
}

impl Counters {
    /// Metrics named `metrics_prefix` + `redis_` + name.
    pub(crate) fn new(metrics_prefix: &str) -> Self {
        Counters {
            published: AtomicU64::new(0),
            publish_errors: AtomicU64::new(0),
            received: AtomicU64::new(0),
            reconnects: AtomicU64::new(0),
            probes_sent: AtomicU64::new(0),
            probes_failed: AtomicU64::new(0),
            metrics: RedisMetrics::new(metrics_prefix),
        }
    }

    /// A pipeline was answered: `ok` publishes accepted, `failed` not,
    /// `took` after its oldest was queued.
    pub(crate) fn pipeline(&self, ok: u64, failed: u64, took: Duration) {
        self.published.fetch_add(ok, Ordering::Relaxed);
        self.metrics.published(ok, took);
        self.publish_refused(failed);
    }

    /// `count` publishes were refused or failed.
    pub(crate) fn publish_refused(&self, count: u64) {
        if count > 0 {
            self.publish_errors.fetch_add(count, Ordering::Relaxed);
            self.metrics.failed(Op::Publish, count);
        }
    }

    pub(crate) fn received(&self) {
        self.received.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn reconnected(&self) {
        self.reconnects.fetch_add(1, Ordering::Relaxed);
        self.metrics.reconnected();
    }

    /// A probe goes out; returns its sequence number.
    pub(crate) fn probe_sent(&self) -> u64 {
        self.probes_sent.fetch_add(1, Ordering::Relaxed)
    }

    pub(crate) fn probe_failed(&self) {
        self.probes_failed.fetch_add(1, Ordering::Relaxed);
        self.metrics.failed(Op::Probe, 1);
    }

    /// Connecting (or resubscribing, or reading the topology) failed, or a
    /// (un)subscribe did.
    pub(crate) fn failed(&self, op: Op) {
        self.metrics.failed(op, 1);
    }
}

/// What the supervisor task hears about, from the connections and the handle.
pub(crate) enum Signal {
    /// The connection of this generation is gone or misbehaved.
    Lost { generation: u64, reason: String },
    /// A message arrived on the control topic.
    Echo { generation: u64, token: Bytes },
    /// A publish failed: probe now rather than at the next interval.
    Check,
    /// The handle was dropped.
    Shutdown,
}

/// The state the handle and its background tasks (supervisor, publisher) share.
pub(crate) struct Shared {
    pub(crate) config: RedisBrokerConfig,
    pub(crate) target: Target,
    pub(crate) runtime: Arc<dyn Runtime>,
    pub(crate) control: Topic,
    /// State and the publishing connection, which is `Some` exactly while `Up`.
    pub(crate) live: Mutex<Live>,
    /// The pub/sub connection. Held across every (un)subscribe and the
    /// resubscribe after a reconnect, so they reach Redis in the order they
    /// changed `topics`.
    pub(crate) subscriber: futures_util::lock::Mutex<Option<Conn>>,
    /// The topics the server wants (changed only under `subscriber`).
    pub(crate) topics: Mutex<HashSet<Topic>>,
    /// The topics probes go to: `control`, and on a cluster one per other
    /// shard (set on every connect, from the topology).
    pub(crate) probe_topics: Mutex<Vec<Topic>>,
    pub(crate) sink: OnceLock<BrokerSink>,
    /// Bumped for every new and every dropped connection; pushes from older generations are ignored.
    pub(crate) generation: AtomicU64,
    pub(crate) signals: UnboundedSender<Signal>,
    /// The supervisor's end of `signals`, taken when the broker starts.
    pub(crate) signals_rx: Mutex<Option<UnboundedReceiver<Signal>>>,
    pub(crate) counters: Counters,
    /// Makes this instance's probe tokens unique, even among brokers sharing a server id.
    pub(crate) nonce: String,
}

pub(crate) struct Live {
    pub(crate) state: BrokerState,
    pub(crate) publisher: Option<Conn>,
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    pub(crate) fn emit(&self, event: BrokerEvent) {
        if let Some(sink) = self.sink.get() {
            sink(event);
        }
    }

    pub(crate) fn current_generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// The push handler of the pub/sub connection of `generation`.
    ///
    /// Runs on the connection's own task; holds the broker weakly so the
    /// connection never keeps it alive.
    pub(crate) fn push_handler(
        this: &Arc<Shared>,
        generation: u64,
    ) -> impl Fn(PushInfo) -> Result<(), ()> + Send + Sync + 'static {
        let weak: Weak<Shared> = Arc::downgrade(this);
        move |info| {
            if let Some(shared) = weak.upgrade() {
                shared.on_push(generation, info);
            }
            Ok(())
        }
    }

    fn on_push(&self, generation: u64, info: PushInfo) {
        // A connection that was replaced must not deliver: that is how a
        // resubscription never duplicates a message.
        if generation != self.current_generation() {
            return;
        }
        match info.kind {
            PushKind::Disconnection => {
                let _ = self.signals.unbounded_send(Signal::Lost {
                    generation,
                    reason: "connection to Redis lost".into(),
                });
            }
            PushKind::Message | PushKind::SMessage => {
                let mut data = info.data.into_iter();
                let (Some(Value::BulkString(channel)), Some(Value::BulkString(payload))) =
                    (data.next(), data.next())
                else {
                    return;
                };
                let Ok(channel) = std::str::from_utf8(&channel) else {
                    return;
                };
                let payload = Bytes::from(payload);
                if self.is_probe_topic(channel) {
                    let _ = self.signals.unbounded_send(Signal::Echo {
                        generation,
                        token: payload,
                    });
                    return;
                }
                // Nothing after unsubscribe() has begun, even if Redis had it in flight.
                let Some(topic) = lock(&self.topics).get(channel).cloned() else {
                    return;
                };
                self.counters.received();
                self.emit(BrokerEvent::Message { topic, payload });
            }
            PushKind::SUnsubscribe => {
                // In a cluster Redis drops shard subscriptions when a slot moves;
                // if that hits a topic we still want, resubscribe everything.
                let wanted = match info.data.first() {
                    Some(Value::BulkString(name)) => std::str::from_utf8(name)
                        .map(|n| self.is_probe_topic(n) || lock(&self.topics).contains(n))
                        .unwrap_or(false),
                    _ => false,
                };
                if wanted && self.config.sharded {
                    let _ = self.signals.unbounded_send(Signal::Lost {
                        generation,
                        reason: "Redis dropped a shard subscription".into(),
                    });
                }
            }
            _ => {}
        }
    }

    fn is_probe_topic(&self, channel: &str) -> bool {
        lock(&self.probe_topics)
            .iter()
            .any(|t| t.as_str() == channel)
    }

    /// Marks the broker down at once: publishes fail from here on.
    /// Returns whether it was up.
    pub(crate) fn mark_down(&self, reason: &str) -> bool {
        let mut live = lock(&self.live);
        let was_up = live.state == BrokerState::Up;
        live.state = BrokerState::Down {
            reason: reason.to_string(),
        };
        live.publisher = None;
        was_up
    }

    pub(crate) fn mark_up(&self, publisher: Conn) {
        let mut live = lock(&self.live);
        live.state = BrokerState::Up;
        live.publisher = Some(publisher);
    }

    /// Drops both connections; later pushes from them are ignored.
    pub(crate) async fn teardown(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        lock(&self.live).publisher = None;
        *self.subscriber.lock().await = None;
    }

    pub(crate) fn lost(&self, generation: u64, what: &str, e: &redis::RedisError) {
        let _ = self.signals.unbounded_send(Signal::Lost {
            generation,
            reason: format!("{what} failed: {e}"),
        });
    }
}

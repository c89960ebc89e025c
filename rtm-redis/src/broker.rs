//! [`RedisBroker`]: the handle the server holds, which creates the shared
//! state ([`crate::shared`]), starts the supervisor and publisher tasks on it and
//! implements [`Broker`]; and [`BrokerStats`], a snapshot of its counters.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use bytes::Bytes;
use futures_channel::mpsc::{UnboundedReceiver, UnboundedSender};
use futures_channel::oneshot;
use redis::cluster_routing::Slot;
use redis::ProtocolVersion;
use rtm_broker::{BoxFuture, Broker, BrokerError, BrokerSink, BrokerState, StreamRead};
use rtm_core::{StreamOptions, StreamPosition, Topic};

use crate::config::RedisBrokerConfig;
use crate::conn::{cluster_builder, Target};
use crate::history;
use crate::metrics::Op;
use crate::publisher::{self, Answer, Outgoing, Queued};
use crate::shared::{lock, Counters, Live, Shared, Signal};
use crate::supervisor;
use rtm_runtime::Runtime;

/// A [`Broker`] over Redis pub/sub.
///
/// See the [crate docs](crate) for the design. Dropping it stops its
/// background task and closes its connections.
pub struct RedisBroker {
    shared: Arc<Shared>,
    /// Publishes in call order, for the publisher task (which ends when this drops).
    queue: UnboundedSender<Queued>,
    queue_rx: Mutex<Option<UnboundedReceiver<Queued>>>,
}

impl std::fmt::Debug for RedisBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBroker")
            .field("state", &self.state())
            .finish_non_exhaustive()
    }
}

/// Counters for observability; a snapshot from [`RedisBroker::stats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BrokerStats {
    /// Messages Redis accepted from [`Broker::publish`].
    pub published: u64,
    /// Publishes that failed, including those refused while down.
    pub publish_errors: u64,
    /// Messages handed to the sink (probes excluded).
    pub received: u64,
    /// Times the broker came back up after being down.
    pub reconnects: u64,
    /// Probe rounds sent (one token on the control topic, and on a cluster one per other shard).
    pub probes_sent: u64,
    /// Probes that did not come back in time (each one forced a reconnect).
    pub probes_failed: u64,
}

impl RedisBroker {
    /// A broker for `config`, running its background task on `runtime`.
    ///
    /// Nothing connects before [`Broker::start`]. Fails only if the URL is
    /// invalid, or a cluster configuration is not [sharded](RedisBrokerConfig::sharded).
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), rtm_broker::BrokerError> {
    /// use std::sync::Arc;
    /// use rtm_broker::{Broker, BrokerEvent};
    /// use rtm_redis::{RedisBroker, RedisBrokerConfig, TokioRuntime};
    ///
    /// let config = RedisBrokerConfig::new("redis://127.0.0.1:6379", "chat", "server-1");
    /// let runtime = TokioRuntime::current();
    /// let broker = RedisBroker::new(config, runtime)?;
    /// broker.start(Arc::new(|event: BrokerEvent| println!("{event:?}"))).await?;
    /// broker.subscribe(&rtm_core::Topic::user("chat", "alice")).await?;
    /// broker.publish(&rtm_core::Topic::user("chat", "alice"), "hello".into()).await?;
    /// # Ok(()) }
    /// ```
    pub fn new(config: RedisBrokerConfig, runtime: impl Runtime) -> Result<Self, BrokerError> {
        let target = if config.is_cluster() {
            if !config.sharded {
                return Err(BrokerError::failed(
                    "a Redis Cluster needs sharded pub/sub (with_sharded(true))",
                ));
            }
            let nodes = config
                .cluster_nodes
                .iter()
                .map(|url| crate::url::connection_info(url))
                .collect::<Result<Vec<_>, _>>()
                .map_err(BrokerError::failed)?;
            // Checks the seeds now, so a bad configuration fails here, not in the background.
            cluster_builder(nodes.clone(), &config)
                .build()
                .map_err(|e| BrokerError::failed(format!("invalid Redis Cluster config: {e}")))?;
            Target::Cluster(nodes)
        } else {
            let info = crate::url::connection_info(&config.url).map_err(BrokerError::failed)?;
            // RESP3: subscription messages arrive as push frames on an ordinary
            // multiplexed connection, for SUBSCRIBE and SSUBSCRIBE alike.
            let settings = info
                .redis_settings()
                .clone()
                .set_protocol(ProtocolVersion::RESP3);
            let info = info.set_redis_settings(settings);
            Target::Single(Box::new(single_client(info, &config).map_err(|e| {
                BrokerError::failed(format!(
                    "invalid Redis URL '{}': {e}",
                    crate::url::redact(&config.url)
                ))
            })?))
        };
        let (signals, signals_rx) = futures_channel::mpsc::unbounded();
        let nonce = format!(
            "{}-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0),
            NEXT_INSTANCE.fetch_add(1, Ordering::Relaxed)
        );
        let control = Topic::control(&config.namespace, &config.server_id);
        let (queue, queue_rx) = futures_channel::mpsc::unbounded();
        let counters = Counters::new(&config.metrics_prefix);
        Ok(Self {
            queue,
            queue_rx: Mutex::new(Some(queue_rx)),
            shared: Arc::new(Shared {
                config,
                target,
                runtime: Arc::new(runtime),
                control: control.clone(),
                live: Mutex::new(Live {
                    state: BrokerState::Down {
                        reason: "not started".into(),
                    },
                    publisher: None,
                }),
                subscriber: futures_util::lock::Mutex::new(None),
                topics: Mutex::new(HashSet::new()),
                probe_topics: Mutex::new(vec![control.clone()]),
                sink: OnceLock::new(),
                generation: AtomicU64::new(0),
                signals,
                signals_rx: Mutex::new(Some(signals_rx)),
                counters,
                nonce,
            }),
        })
    }

    /// The topic this broker probes itself on: `{namespace}:ctl:{server_id}`.
    pub fn control_topic(&self) -> &Topic {
        &self.shared.control
    }

    /// The counters so far.
    pub fn stats(&self) -> BrokerStats {
        let c = &self.shared.counters;
        BrokerStats {
            published: c.published.load(Ordering::Relaxed),
            publish_errors: c.publish_errors.load(Ordering::Relaxed),
            received: c.received.load(Ordering::Relaxed),
            reconnects: c.reconnects.load(Ordering::Relaxed),
            probes_sent: c.probes_sent.load(Ordering::Relaxed),
            probes_failed: c.probes_failed.load(Ordering::Relaxed),
        }
    }

    /// The topics the broker keeps subscribed (the control topic not included).
    pub fn topics(&self) -> HashSet<Topic> {
        lock(&self.shared.topics).clone()
    }
}

static NEXT_INSTANCE: AtomicU64 = AtomicU64::new(0);

impl Drop for RedisBroker {
    fn drop(&mut self) {
        let _ = self.shared.signals.unbounded_send(Signal::Shutdown);
    }
}

/// What the publisher task answers (it answers every command it takes;
/// gone, it is stopped).
async fn answered<T>(answer: oneshot::Receiver<Result<T, BrokerError>>) -> Result<T, BrokerError> {
    answer
        .await
        .unwrap_or_else(|_| Err(BrokerError::unavailable("publisher stopped")))
}

/// The one result of a one-topic batch.
fn first(results: Vec<Result<(), BrokerError>>) -> Result<(), BrokerError> {
    results.into_iter().next().unwrap_or(Ok(()))
}

/// A client for one Redis, trusting `config`'s TLS root certificate when
/// one is set (for `rediss://`).
fn single_client(
    info: redis::ConnectionInfo,
    config: &RedisBrokerConfig,
) -> redis::RedisResult<redis::Client> {
    if let Some(root) = &config.tls_root_cert {
        let certs = redis::TlsCertificates {
            client_tls: None,
            root_cert: Some(root.clone()),
        };
        return redis::Client::build_with_tls(info, certs);
    }
    redis::Client::open(info)
}

impl RedisBroker {
    /// Queues `cmd` (a publish or a history append of `topic`) for the
    /// publisher task, at once (so commands reach Redis in call order), or
    /// refuses it while the broker is down.
    fn enqueue(&self, topic: &Topic, op: Outgoing, done: Answer) -> Result<(), BrokerError> {
        let shared = &self.shared;
        let refused = {
            let live = lock(&shared.live);
            match (&live.state, &live.publisher) {
                (BrokerState::Up, Some(_)) => None,
                (BrokerState::Down { reason }, _) => Some(reason.clone()),
                (BrokerState::Up, None) => Some("no connection".to_string()),
            }
        };
        if let Some(reason) = refused {
            shared.counters.publish_refused(1);
            return Err(BrokerError::unavailable(reason));
        }
        // Only a cluster needs it: a pipeline there may hold one slot.
        let slot = shared
            .config
            .is_cluster()
            .then(|| Slot::for_key(topic.as_str()));
        let queued = Queued {
            op,
            done,
            slot,
            queued_at: Instant::now(),
        };
        if self.queue.unbounded_send(queued).is_err() {
            shared.counters.publish_refused(1);
            return Err(BrokerError::unavailable("publisher stopped"));
        }
        Ok(())
    }

    /// Runs one command on the publishing connection (a history read or
    /// reset), within the command timeout.
    async fn query(&self, cmd: &redis::Cmd, op: Op) -> Result<redis::Value, BrokerError> {
        let conn = {
            let live = lock(&self.shared.live);
            match (&live.state, &live.publisher) {
                (BrokerState::Up, Some(conn)) => Ok(conn.clone()),
                (BrokerState::Down { reason }, _) => Err(reason.clone()),
                (BrokerState::Up, None) => Err("no connection".to_string()),
            }
        };
        let mut conn = conn.map_err(BrokerError::unavailable)?;
        conn.query(cmd).await.map_err(|e| {
            self.shared.counters.failed(op);
            if e.is_io_error() || e.is_connection_dropped() || e.is_timeout() {
                BrokerError::unavailable(e.to_string()).caused_by(e.clone())
            } else {
                BrokerError::failed(e.to_string()).caused_by(e.clone())
            }
        })
    }

    /// (Un)subscribes `topics` in one pipeline: the wanted set changes at
    /// once; only the topics it changed for are sent, and they share the
    /// outcome. Without a connection a subscribe is `Unavailable` (the
    /// topic is subscribed on reconnect) and an unsubscribe is done.
    async fn change_many(&self, topics: &[Topic], subscribe: bool) -> Vec<Result<(), BrokerError>> {
        let shared = &self.shared;
        let subscriber = shared.subscriber.lock().await;
        let changed: Vec<bool> = {
            let mut wanted = lock(&shared.topics);
            topics
                .iter()
                .map(|t| {
                    if subscribe {
                        wanted.insert(t.clone())
                    } else {
                        *t != shared.control && wanted.remove(t)
                    }
                })
                .collect()
        };
        let sent: Vec<Topic> = topics
            .iter()
            .zip(&changed)
            .filter(|(_, changed)| **changed)
            .map(|(topic, _)| topic.clone())
            .collect();
        let outcome = match subscriber.clone() {
            _ if sent.is_empty() => Ok(()),
            None if subscribe => Err(BrokerError::unavailable(
                "not connected to Redis: the topic is subscribed once it is back",
            )),
            None => Ok(()),
            Some(mut conn) => {
                let generation = shared.current_generation();
                let (result, what) = if subscribe {
                    (conn.subscribe_all(&shared.config, &sent).await, "SUBSCRIBE")
                } else {
                    (
                        conn.unsubscribe_all(&shared.config, &sent).await,
                        "UNSUBSCRIBE",
                    )
                };
                result.map_err(|e| {
                    shared.counters.failed(if subscribe {
                        Op::Subscribe
                    } else {
                        Op::Unsubscribe
                    });
                    // The wanted set is right; a full reconnect puts Redis in line with it.
                    shared.lost(generation, what, &e);
                    BrokerError::unavailable(e.to_string()).caused_by(e.clone())
                })
            }
        };
        changed
            .iter()
            .map(|changed| if *changed { outcome.clone() } else { Ok(()) })
            .collect()
    }
}

impl Broker for RedisBroker {
    fn start(&self, sink: BrokerSink) -> BoxFuture<'_, Result<(), BrokerError>> {
        Box::pin(async move {
            let shared = &self.shared;
            let signals = lock(&shared.signals_rx).take();
            let queue = lock(&self.queue_rx).take();
            let (Some(signals), Some(queue), Ok(())) = (signals, queue, shared.sink.set(sink))
            else {
                return Err(BrokerError::failed("broker already started"));
            };
            shared
                .runtime
                .spawn(Box::pin(publisher::run(shared.clone(), queue)));
            let (first_tx, first_rx) = oneshot::channel();
            shared
                .runtime
                .spawn(Box::pin(supervisor::run(shared.clone(), signals, first_tx)));
            // Wait for the first attempt (bounded by the timeouts); if Redis is
            // not there, the broker is Down and keeps trying in the background.
            let _ = first_rx.await;
            Ok(())
        })
    }

    /// Queues the publish at once: publishes reach Redis in call order, even
    /// when their futures are polled out of order (or not awaited one by one).
    fn publish(&self, topic: &Topic, payload: Bytes) -> BoxFuture<'_, Result<(), BrokerError>> {
        let cmd = self.shared.config.publish_cmd(topic, &payload);
        let (done, answer) = oneshot::channel();
        if let Err(refused) = self.enqueue(topic, Outgoing::Command(cmd), Answer::Published(done)) {
            return Box::pin(std::future::ready(Err(refused)));
        }
        Box::pin(answered(answer))
    }

    fn has_history(&self) -> bool {
        true
    }

    /// Queued as a publish is (in call order, pipelined with the others):
    /// one script appends, bumps the position and publishes (`history.rs`).
    fn publish_to_stream(
        &self,
        topic: &Topic,
        payload: Bytes,
        options: StreamOptions,
    ) -> BoxFuture<'_, Result<StreamPosition, BrokerError>> {
        let append = history::Append::new(topic, payload, &options);
        let (done, answer) = oneshot::channel();
        if let Err(refused) = self.enqueue(topic, Outgoing::Append(append), Answer::Appended(done))
        {
            return Box::pin(std::future::ready(Err(refused)));
        }
        Box::pin(answered(answer))
    }

    fn read_stream(
        &self,
        topic: &Topic,
        from: u64,
        limit: usize,
        options: StreamOptions,
    ) -> BoxFuture<'_, Result<StreamRead, BrokerError>> {
        let cmd = history::read_cmd(topic, from, limit, &options, &rtm_broker::new_epoch());
        Box::pin(async move { history::stream_read(&self.query(&cmd, Op::Read).await?) })
    }

    fn reset_stream(
        &self,
        topic: &Topic,
        options: StreamOptions,
    ) -> BoxFuture<'_, Result<StreamPosition, BrokerError>> {
        let cmd = history::reset_cmd(topic, &options, &rtm_broker::new_epoch());
        Box::pin(
            async move { history::position("a history reset", &self.query(&cmd, Op::Read).await?) },
        )
    }

    fn subscribe(&self, topic: &Topic) -> BoxFuture<'_, Result<(), BrokerError>> {
        let topic = [topic.clone()];
        Box::pin(async move { first(self.change_many(&topic, true).await) })
    }

    fn unsubscribe(&self, topic: &Topic) -> BoxFuture<'_, Result<(), BrokerError>> {
        let topic = [topic.clone()];
        Box::pin(async move { first(self.change_many(&topic, false).await) })
    }

    /// One pipeline for the batch (in chunks of 256 commands): a burst of
    /// sign-ins costs a round trip to Redis per chunk, not per user.
    fn subscribe_many<'a>(
        &'a self,
        topics: &'a [Topic],
    ) -> BoxFuture<'a, Vec<Result<(), BrokerError>>> {
        Box::pin(self.change_many(topics, true))
    }

    /// One pipeline for the batch, as [`RedisBroker::subscribe_many`].
    fn unsubscribe_many<'a>(
        &'a self,
        topics: &'a [Topic],
    ) -> BoxFuture<'a, Vec<Result<(), BrokerError>>> {
        Box::pin(self.change_many(topics, false))
    }

    fn state(&self) -> BrokerState {
        lock(&self.shared.live).state.clone()
    }
}

//! The server's side of its broker: [`BrokerLink`] (a queue of publishes,
//! bounded by `broker_backlog` and `broker_backlog_bytes`) and the tasks that
//! carry commands out and messages in.
//!
//! What to subscribe and when a request may be acknowledged is the
//! router's decision ([`rtm_core::Router::poll_topic_changes`]); this only
//! carries it out. Publishes and topic changes travel independently — one
//! never waits behind the other — so a storm of subscriptions cannot delay
//! Publish and Push between servers:
//!
//! - *publishes*: in call order, many in flight;
//! - *topic changes*: taken from the router in batches (each topic at most
//!   once, with one command in flight per topic), their answers reported
//!   back; meanwhile the router's confirmation deadlines are served;
//! - *events*: messages and state changes from the broker, handed to the
//!   router (messages under one read lock per burst).

use std::pin::pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use futures_util::future::{join, select, Either};
use futures_util::stream::{FuturesOrdered, FuturesUnordered};
use futures_util::{FutureExt, StreamExt};
use rtm_core::router::BrokerPublish;
use rtm_core::sync::{StreamOp, StreamReadRequest};
use rtm_core::{ErrorCode, RecentPushes, RtmError, Topic, TopicChanges};

use crate::broker::{Broker, BrokerError, BrokerEvent, BrokerSink, BrokerState, StreamRead};
use crate::log::clip;
use crate::metrics::Metrics;
use crate::runtime::{Runtime, RuntimeRef};
use crate::server::routing::Routing;

/// Publishes handed to the broker and not yet confirmed, at most.
const MAX_PUBLISHES_IN_FLIGHT: usize = 4096;
/// Topic changes handed to the broker in one batch, at most.
const MAX_CHANGES_PER_BATCH: usize = 512;
/// Stream reads at the broker at once, at most (the rest wait in the router).
const MAX_READS_IN_FLIGHT: usize = 256;
/// Broker events handled under one read lock of the router, at most.
const MAX_EVENTS_PER_LOCK: usize = 256;

/// Everything between the server and its broker.
pub(crate) struct BrokerLink {
    pub(crate) broker: Arc<dyn Broker>,
    publishes: async_channel::Sender<BrokerPublish>,
    publishes_rx: async_channel::Receiver<BrokerPublish>,
    backlog: usize,
    /// Bytes of publishes queued or at the broker unanswered, and their bound.
    backlog_bytes: AtomicUsize,
    max_backlog_bytes: usize,
    pub(crate) errors: AtomicU64,
}

impl BrokerLink {
    pub(crate) fn new(broker: Arc<dyn Broker>, backlog: usize, max_backlog_bytes: usize) -> Self {
        let (publishes, publishes_rx) = async_channel::unbounded();
        BrokerLink {
            broker,
            publishes,
            publishes_rx,
            backlog,
            backlog_bytes: AtomicUsize::new(0),
            max_backlog_bytes,
            errors: AtomicU64::new(0),
        }
    }

    /// Publishes waiting for the broker.
    pub(crate) fn backlog_len(&self) -> usize {
        self.publishes.len()
    }

    /// Bytes of publishes queued or at the broker unanswered.
    pub(crate) fn backlog_bytes(&self) -> usize {
        self.backlog_bytes.load(Ordering::Relaxed)
    }

    /// `rtm/broker-unavailable` while the publish backlog is at its bound
    /// (in publishes, or in bytes).
    pub(crate) fn check_backlog(&self) -> Result<(), RtmError> {
        if self.publishes.len() >= self.backlog {
            return Err(RtmError::new(
                ErrorCode::BrokerUnavailable,
                format!(
                    "broker backlog full ({} publishes waiting for the broker)",
                    self.backlog
                ),
            ));
        }
        if self.backlog_bytes() >= self.max_backlog_bytes {
            return Err(RtmError::new(
                ErrorCode::BrokerUnavailable,
                format!(
                    "broker backlog full ({} bytes of publishes waiting for the broker)",
                    self.max_backlog_bytes
                ),
            ));
        }
        Ok(())
    }

    pub(crate) fn publish(&self, publish: BrokerPublish) {
        let bytes = publish.payload.len();
        if self.publishes.try_send(publish).is_ok() {
            self.backlog_bytes.fetch_add(bytes, Ordering::Relaxed);
        }
    }

    /// A publish of `bytes` was answered by the broker (or failed).
    fn published(&self, bytes: usize) {
        self.backlog_bytes.fetch_sub(bytes, Ordering::Relaxed);
    }

    fn failed(&self, err: &BrokerError, what: &str, topic: &Topic) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        crate::log::rate_limited_warn(
            "broker operation failed",
            format_args!("{what} {}: {err}", clip(topic.as_str())),
        );
    }
}

/// Starts the broker and the tasks that carry commands out and events in.
pub(crate) fn start(
    link: Arc<BrokerLink>,
    routing: Arc<Routing>,
    metrics: Arc<Metrics>,
    runtime: RuntimeRef,
) {
    let (events_tx, events_rx) = async_channel::unbounded::<BrokerEvent>();
    let sink: BrokerSink = Arc::new(move |event| {
        let _ = events_tx.try_send(event);
    });
    runtime.spawn(Box::pin(events(
        routing.clone(),
        metrics.clone(),
        events_rx,
    )));
    let task_runtime = runtime.clone();
    runtime.spawn(Box::pin(async move {
        if let Err(err) = link.broker.start(sink).await {
            tracing::error!(%err, "broker failed to start");
            routing.write().handle_broker_state(false);
            metrics.broker_state(false);
        }
        join(
            join(
                publishes(&link),
                topic_changes(&link, &routing, &*task_runtime),
            ),
            stream_reads(&link, &routing),
        )
        .await;
    }));
}

/// Carries publishes to the broker, in order, many in flight.
async fn publishes(link: &BrokerLink) {
    let mut publishing = FuturesOrdered::new();
    loop {
        let next = if publishing.len() >= MAX_PUBLISHES_IN_FLIGHT {
            Either::Right(publishing.next().await)
        } else if publishing.is_empty() {
            Either::Left(link.publishes_rx.recv().await.ok())
        } else {
            let publish = pin!(link.publishes_rx.recv());
            match select(publish, publishing.next()).await {
                Either::Left((publish, _)) => Either::Left(publish.ok()),
                Either::Right((done, _)) => Either::Right(done),
            }
        };
        match next {
            Either::Left(Some(BrokerPublish {
                topic,
                payload,
                stream,
            })) => {
                let bytes = payload.len();
                let publish = match stream {
                    None => link.broker.publish(&topic, payload),
                    // Kept in the stream and published with its position.
                    Some(options) => Box::pin(
                        link.broker
                            .publish_to_stream(&topic, payload, options)
                            .map(|appended| appended.map(|_| ())),
                    ),
                };
                publishing.push_back(publish.map(move |result| (topic, bytes, result)));
            }
            // The server is gone.
            Either::Left(None) => return,
            Either::Right(Some((topic, bytes, result))) => {
                link.published(bytes);
                if let Err(err) = result {
                    link.failed(&err, "publish on", &topic);
                }
            }
            Either::Right(None) => {}
        }
    }
}

/// Carries out the stream reads of subscribes that track streams (many at
/// once, up to [`MAX_READS_IN_FLIGHT`]) and reports each to the router. A
/// read that never answers is the router's to time out.
async fn stream_reads(link: &BrokerLink, routing: &Routing) {
    let mut reading = FuturesUnordered::new();
    loop {
        while reading.len() < MAX_READS_IN_FLIGHT {
            let Some(read) = routing.write().poll_stream_read() else {
                break;
            };
            let StreamReadRequest {
                id,
                topic,
                op,
                options,
            } = read;
            reading.push(async move {
                let result = match op {
                    StreamOp::Read { from, limit } => {
                        link.broker.read_stream(&topic, from, limit, options).await
                    }
                    // The new position, no event.
                    StreamOp::Reset => {
                        link.broker
                            .reset_stream(&topic, options)
                            .await
                            .map(|top| StreamRead {
                                top,
                                envelopes: Vec::new(),
                            })
                    }
                };
                if let Err(err) = &result {
                    link.failed(err, "read or reset the stream of", &topic);
                }
                (id, result)
            });
        }
        let done = if reading.is_empty() {
            if routing.reads_queued().await.is_err() {
                return;
            }
            continue;
        } else {
            match select(reading.next(), pin!(routing.reads_queued())).await {
                Either::Left((Some(done), _)) => done,
                Either::Left((None, _)) => continue,
                Either::Right((signal, _)) => {
                    if signal.is_err() {
                        return;
                    }
                    continue;
                }
            }
        };
        let (id, result) = done;
        let result = result
            .map(|read| (read.top, read.envelopes))
            .map_err(|err| err.to_string());
        routing
            .write()
            .handle_stream_read(id, result, unix_millis());
    }
}

/// Takes topic changes from the router, carries them out in batches and
/// reports the answers; serves the router's confirmation deadlines all along.
async fn topic_changes(link: &BrokerLink, routing: &Routing, runtime: &dyn Runtime) {
    loop {
        let changes = routing.write().poll_topic_changes(MAX_CHANGES_PER_BATCH);
        let Some(changes) = changes else {
            tick(routing, runtime).await;
            continue;
        };
        let mut work = pin!(carry_out(link, &changes));
        let (subscribed, ()) = loop {
            match select(work.as_mut(), pin!(tick(routing, runtime))).await {
                Either::Left((answers, _)) => break answers,
                Either::Right(((), _)) => {}
            }
        };
        let mut router = routing.write();
        for (topic, ok) in changes.subscribe.iter().zip(subscribed) {
            router.handle_topic_subscribed(topic, ok);
        }
        for topic in &changes.unsubscribe {
            router.handle_topic_unsubscribed(topic);
        }
    }
}

/// Waits for a change signal or the earliest confirmation deadline, then
/// lets the router settle what is due.
async fn tick(routing: &Routing, runtime: &dyn Runtime) {
    let deadline = routing.read().poll_timeout();
    let now = runtime.now();
    match deadline {
        Some(at) if at <= now => {}
        Some(at) => {
            let _ = select(runtime.sleep(at - now), pin!(routing.changed())).await;
        }
        None => {
            let _ = routing.changed().await;
        }
    }
    let now = runtime.now();
    routing.write().handle_timeout(now);
}

/// One batch on the broker: the subscribes and the unsubscribes together.
/// Returns whether each subscribe was confirmed (a broker that answered for
/// fewer topics failed the rest).
async fn carry_out(link: &BrokerLink, changes: &TopicChanges) -> (Vec<bool>, ()) {
    let subscribe = async {
        if changes.subscribe.is_empty() {
            return Vec::new();
        }
        let mut results = link
            .broker
            .subscribe_many(&changes.subscribe)
            .await
            .into_iter();
        changes
            .subscribe
            .iter()
            .map(|topic| match results.next() {
                Some(Ok(())) => true,
                Some(Err(err)) => {
                    link.failed(&err, "subscribe", topic);
                    false
                }
                None => {
                    let err = BrokerError::failed("the broker gave no answer");
                    link.failed(&err, "subscribe", topic);
                    false
                }
            })
            .collect()
    };
    let unsubscribe = async {
        if changes.unsubscribe.is_empty() {
            return;
        }
        let results = link.broker.unsubscribe_many(&changes.unsubscribe).await;
        for (topic, result) in changes.unsubscribe.iter().zip(results) {
            if let Err(err) = result {
                link.failed(&err, "unsubscribe", topic);
            }
        }
    };
    join(subscribe, unsubscribe).await
}

/// Hands broker messages to the router (under one read lock per burst) and
/// follows the broker's state.
async fn events(
    routing: Arc<Routing>,
    metrics: Arc<Metrics>,
    events: async_channel::Receiver<BrokerEvent>,
) {
    let mut recent = RecentPushes::default();
    let mut batch = Vec::with_capacity(MAX_EVENTS_PER_LOCK);
    while let Ok(first) = events.recv().await {
        batch.push(first);
        while batch.len() < MAX_EVENTS_PER_LOCK {
            match events.try_recv() {
                Ok(event) => batch.push(event),
                Err(_) => break,
            }
        }
        for event in batch.drain(..) {
            match event {
                BrokerEvent::Message { topic, payload } => {
                    deliver(&routing, &metrics, &topic, payload, &mut recent);
                }
                BrokerEvent::State(state) => {
                    metrics.broker_state(state == BrokerState::Up);
                    broker_state(&routing, &state);
                }
            }
        }
    }
}

fn deliver(
    routing: &Routing,
    metrics: &Metrics,
    topic: &Topic,
    payload: Bytes,
    recent: &mut RecentPushes,
) {
    let router = routing.read();
    let result =
        router.handle_broker_message(topic.as_str(), payload, recent, |_, mailbox, frame| {
            mailbox.deliver(frame)
        });
    drop(router);
    match result {
        // This server's own, back from the broker: not news (but a
        // stream's event, which is delivered here only now).
        Ok(received) if received.from_here && received.position.is_none() => {}
        Ok(received) => {
            metrics.broker_message(received.delivered);
            if let Some(sent_at) = received.sent_at {
                metrics.broker_lag(sent_at, unix_millis());
            }
        }
        Err(err) => {
            metrics.broker_message_dropped();
            crate::log::rate_limited_warn(
                "broker message dropped",
                format_args!("on {}: {err}", clip(topic.as_str())),
            )
        }
    }
}

/// Milliseconds since the Unix epoch by this machine's clock: what a
/// broker message is stamped with, and its lag measured against (0 for a
/// clock set before 1970).
pub(crate) fn unix_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_millis() as u64)
}

fn broker_state(routing: &Routing, state: &BrokerState) {
    let up = *state == BrokerState::Up;
    // The state changes before the log line says so: whoever reads the line
    // finds Publish and Push behaving as it says. Coming back up, the router
    // queues every topic again (the guard wakes the topic task).
    let was_up = {
        let mut router = routing.write();
        let was_up = router.broker_up();
        router.handle_broker_state(up);
        was_up
    };
    match state {
        BrokerState::Down { reason } => tracing::warn!(
            reason = %clip(reason),
            "broker down: Publish and Push fail with rtm/broker-unavailable until it is reachable"
        ),
        BrokerState::Up if was_up => tracing::info!("broker up"),
        BrokerState::Up => tracing::info!("broker up again: Publish and Push work"),
    }
}

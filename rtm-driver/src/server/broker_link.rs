//! The server's side of its broker: a queue of publishes (bounded by
//! `broker_backlog`), a coalescing set of topic changes, the subscriptions
//! waiting for the broker to confirm a topic, and the two tasks that move
//! commands out and messages in.
//!
//! Topic changes never share the publishes' queue, so a burst of
//! subscribes cannot make Publish fail, and they coalesce: a topic
//! subscribed and unsubscribed while both wait is left alone.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crate::broker::{Broker, BrokerError, BrokerEvent, BrokerState};
use bytes::Bytes;
use futures_channel::oneshot;
use futures_util::future::{select, Either};
use futures_util::stream::FuturesOrdered;
use futures_util::{FutureExt, StreamExt};
use rtm_core::router::BrokerPublish;
use rtm_core::{ErrorCode, RecentPushes, RtmError, Topic};

use crate::log::clip;
use crate::server::handle::Shared;

/// Publishes handed to the broker and not yet confirmed, at most.
const MAX_PUBLISHES_IN_FLIGHT: usize = 4096;
/// Topic changes handed to the broker in one batch, at most.
const MAX_CHANGES_PER_BATCH: usize = 512;
/// Broker events handled under one read lock of the router, at most.
const MAX_EVENTS_PER_LOCK: usize = 256;
/// How long a subscription waits for the broker to confirm its topics.
pub(crate) const CONFIRM_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Default)]
struct Changes {
    /// Pending change per topic: `true` subscribe, `false` unsubscribe.
    want: HashMap<Topic, bool>,
    order: VecDeque<Topic>,
    /// Topics the broker holds for this server (confirmed subscribes).
    at_broker: HashSet<Topic>,
    /// Waiting for a topic's confirmation.
    waiters: HashMap<Topic, Vec<oneshot::Sender<bool>>>,
}

/// Everything between the server and its broker.
pub(crate) struct BrokerLink {
    pub(crate) broker: Arc<dyn Broker>,
    publishes: async_channel::Sender<BrokerPublish>,
    publishes_rx: async_channel::Receiver<BrokerPublish>,
    changes: Mutex<Changes>,
    /// Wakes the command task when a change is queued.
    changed: async_channel::Sender<()>,
    changed_rx: async_channel::Receiver<()>,
    backlog: usize,
    /// Bytes of publishes queued or at the broker unanswered, and their bound.
    backlog_bytes: AtomicUsize,
    max_backlog_bytes: usize,
    pub(crate) errors: AtomicU64,
}

impl BrokerLink {
    pub(crate) fn new(broker: Arc<dyn Broker>, backlog: usize, max_backlog_bytes: usize) -> Self {
        let (publishes, publishes_rx) = async_channel::unbounded();
        let (changed, changed_rx) = async_channel::bounded(1);
        BrokerLink {
            broker,
            publishes,
            publishes_rx,
            changes: Mutex::new(Changes::default()),
            changed,
            changed_rx,
            backlog,
            backlog_bytes: AtomicUsize::new(0),
            max_backlog_bytes,
            errors: AtomicU64::new(0),
        }
    }

    fn changes(&self) -> MutexGuard<'_, Changes> {
        self.changes.lock().unwrap_or_else(|e| e.into_inner())
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

    /// Queues topic changes, coalescing with those still waiting. A
    /// subscribe that cancels a waiting unsubscribe of a topic the broker
    /// still holds is confirmed at once.
    pub(crate) fn change(&self, subscribe: &[Topic], unsubscribe: &[Topic]) {
        if subscribe.is_empty() && unsubscribe.is_empty() {
            return;
        }
        let mut confirmed = Vec::new();
        {
            let mut changes = self.changes();
            for (topics, want) in [(subscribe, true), (unsubscribe, false)] {
                for topic in topics {
                    match changes.want.get(topic) {
                        Some(&pending) if pending != want => {
                            changes.want.remove(topic);
                            if want && changes.at_broker.contains(topic) {
                                confirmed.push(topic.clone());
                            }
                        }
                        Some(_) => {}
                        None => {
                            changes.want.insert(topic.clone(), want);
                            changes.order.push_back(topic.clone());
                        }
                    }
                }
            }
        }
        let _ = self.changed.try_send(());
        for topic in confirmed {
            self.confirmed(&topic, true);
        }
    }

    /// A future that resolves `true` once every topic is confirmed (`false`
    /// when one fails). Call with the router's write lock held, after
    /// reading which topics are unconfirmed, so no confirmation slips by.
    pub(crate) fn wait_confirmed(
        &self,
        topics: &[Topic],
    ) -> impl std::future::Future<Output = bool> {
        let receivers: Vec<_> = {
            let mut changes = self.changes();
            topics
                .iter()
                .map(|topic| {
                    let (tx, rx) = oneshot::channel();
                    changes.waiters.entry(topic.clone()).or_default().push(tx);
                    rx
                })
                .collect()
        };
        async move {
            for rx in receivers {
                if !rx.await.unwrap_or(false) {
                    return false;
                }
            }
            true
        }
    }

    /// The broker answered for `topic`: wake whoever waits for it.
    fn confirmed(&self, topic: &Topic, ok: bool) {
        let waiters = self.changes().waiters.remove(topic).unwrap_or_default();
        for waiter in waiters {
            let _ = waiter.send(ok);
        }
    }

    /// The broker went down: every wait fails.
    fn fail_all_waiters(&self) {
        let waiters = std::mem::take(&mut self.changes().waiters);
        for waiter in waiters.into_values().flatten() {
            let _ = waiter.send(false);
        }
    }

    fn take_changes(&self) -> Vec<(Topic, bool)> {
        let mut changes = self.changes();
        let mut batch = Vec::new();
        while batch.len() < MAX_CHANGES_PER_BATCH {
            let Some(topic) = changes.order.pop_front() else {
                break;
            };
            if let Some(want) = changes.want.remove(&topic) {
                batch.push((topic, want));
            }
        }
        batch
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
pub(crate) fn start(shared: &Arc<Shared>) {
    if shared.broker.is_none() {
        return;
    }
    let (events_tx, events_rx) = async_channel::unbounded::<BrokerEvent>();
    let sink: crate::broker::BrokerSink = Arc::new(move |event| {
        let _ = events_tx.try_send(event);
    });
    shared
        .runtime
        .spawn(Box::pin(commands(shared.clone(), sink)));
    shared
        .runtime
        .spawn(Box::pin(events(shared.clone(), events_rx)));
}

/// Carries publishes (in order, many in flight) and topic changes (in
/// batches) to the broker.
async fn commands(shared: Arc<Shared>, sink: crate::broker::BrokerSink) {
    let Some(link) = shared.broker.as_ref() else {
        return;
    };
    if let Err(err) = link.broker.start(sink).await {
        tracing::error!(%err, "broker failed to start");
        let mut router = shared.router_mut();
        router.handle_broker_state(false);
    }
    let mut publishing = FuturesOrdered::new();
    loop {
        // Topic changes first: a subscriber is waiting for each.
        let batch = link.take_changes();
        if !batch.is_empty() {
            apply_changes(&shared, link, batch).await;
            continue;
        }
        let next = {
            let publish = link.publishes_rx.recv();
            let changed = link.changed_rx.recv();
            futures_util::pin_mut!(publish, changed);
            if publishing.len() >= MAX_PUBLISHES_IN_FLIGHT {
                Either::Right(publishing.next().await)
            } else if publishing.is_empty() {
                match select(publish, changed).await {
                    Either::Left((publish, _)) => Either::Left(publish.ok()),
                    Either::Right((Ok(()), _)) => continue,
                    Either::Right((Err(_), _)) => return,
                }
            } else {
                let either = select(publish, changed);
                match select(either, publishing.next()).await {
                    Either::Left((Either::Left((publish, _)), _)) => Either::Left(publish.ok()),
                    Either::Left((Either::Right(_), _)) => continue,
                    Either::Right((done, _)) => Either::Right(done),
                }
            }
        };
        match next {
            Either::Left(Some(BrokerPublish { topic, payload })) => {
                let bytes = payload.len();
                let publish = link.broker.publish(&topic, payload);
                publishing.push_back(publish.map(move |result| (topic, bytes, result)));
            }
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

/// Applies one batch of topic changes. Each topic appears once in a batch
/// (its changes coalesced), so the order between topics does not matter:
/// the subscribes go to the broker together, then the unsubscribes.
async fn apply_changes(shared: &Arc<Shared>, link: &BrokerLink, batch: Vec<(Topic, bool)>) {
    let (subscribes, unsubscribes): (Vec<_>, Vec<_>) =
        batch.into_iter().partition(|(_, subscribe)| *subscribe);
    let subscribes: Vec<Topic> = subscribes.into_iter().map(|(topic, _)| topic).collect();
    let unsubscribes: Vec<Topic> = unsubscribes.into_iter().map(|(topic, _)| topic).collect();
    if !subscribes.is_empty() {
        let mut results = link.broker.subscribe_many(&subscribes).await.into_iter();
        let oks: Vec<bool> = subscribes
            .iter()
            .map(|topic| {
                // A broker that answered for fewer topics failed the rest.
                match results.next() {
                    Some(Ok(())) => true,
                    Some(Err(err)) => {
                        link.failed(&err, "subscribe", topic);
                        false
                    }
                    None => {
                        let err = BrokerError::Failed("the broker gave no answer".into());
                        link.failed(&err, "subscribe", topic);
                        false
                    }
                }
            })
            .collect();
        {
            let mut changes = link.changes();
            for (topic, _) in subscribes.iter().zip(&oks).filter(|(_, ok)| **ok) {
                changes.at_broker.insert(topic.clone());
            }
        }
        {
            let mut router = shared.router_mut();
            for (topic, ok) in subscribes.iter().zip(&oks) {
                router.handle_topic_subscribed(topic, *ok);
            }
        }
        for (topic, ok) in subscribes.iter().zip(oks) {
            link.confirmed(topic, ok);
        }
    }
    if !unsubscribes.is_empty() {
        {
            let mut changes = link.changes();
            for topic in &unsubscribes {
                changes.at_broker.remove(topic);
            }
        }
        let results = link.broker.unsubscribe_many(&unsubscribes).await;
        for (topic, result) in unsubscribes.iter().zip(results) {
            if let Err(err) = result {
                link.failed(&err, "unsubscribe", topic);
            }
        }
    }
}

/// Hands broker messages to the router (under one read lock per burst) and
/// follows the broker's state.
async fn events(shared: Arc<Shared>, events: async_channel::Receiver<BrokerEvent>) {
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
                    deliver(&shared, &topic, payload, &mut recent);
                }
                BrokerEvent::State(state) => broker_state(&shared, &state),
            }
        }
    }
}

fn deliver(shared: &Shared, topic: &Topic, payload: Bytes, recent: &mut RecentPushes) {
    let router = shared.router();
    let result =
        router.handle_broker_message(topic.as_str(), payload, recent, |_, mailbox, frame| {
            mailbox.deliver(frame)
        });
    if let Err(err) = result {
        crate::log::rate_limited_warn(
            "broker message dropped",
            format_args!("on {}: {err}", clip(topic.as_str())),
        );
    }
}

fn broker_state(shared: &Shared, state: &BrokerState) {
    let up = *state == BrokerState::Up;
    // The state changes before the log line says so: whoever reads the line
    // finds Publish and Push behaving as it says.
    let (was_up, came_up) = {
        let mut router = shared.router_mut();
        let was_up = router.broker_up();
        (was_up, router.handle_broker_state(up))
    };
    match state {
        BrokerState::Down { reason } => tracing::warn!(
            reason = %clip(reason),
            "broker down: Publish and Push fail with rtm/broker-unavailable until it is reachable"
        ),
        BrokerState::Up if was_up => tracing::info!("broker up"),
        BrokerState::Up => tracing::info!("broker up again: Publish and Push work"),
    }
    let Some(link) = shared.broker.as_ref() else {
        return;
    };
    if !up {
        link.fail_all_waiters();
    }
    if came_up {
        // Brokers that do not resubscribe by themselves get every topic again.
        let topics: Vec<Topic> = shared.router().topics().cloned().collect();
        link.change(&topics, &[]);
    }
}

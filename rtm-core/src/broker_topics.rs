//! The server's topics at its broker, and the requests waiting for them:
//! [`BrokerTopics`].
//!
//! A topic is *wanted* while a local connection holds it (its user, or an
//! (event, tag) push subscription); the broker *holds* it once it answered
//! a subscribe. The two drift apart while commands travel, so this keeps,
//! per topic, what is wanted, what the broker last said, and the one
//! command on its way. The rules, in one place:
//!
//! - **One command in flight per topic.** A subscribe and an unsubscribe of
//!   one topic are never both on their way, so whatever order a broker
//!   applies them in, its last answer is the truth. A change made while a
//!   command travels is looked at again when the answer comes.
//! - **Changes are decided when taken.** A topic is queued when it changes;
//!   [`BrokerTopics::poll_changes`] compares wanted and held at that moment,
//!   so a topic unwanted and wanted again before its command was taken (a
//!   page reload: the user's last connection closes as the next one signs
//!   in) sends nothing and stays confirmed.
//! - **A wait ends once.** A request that needs topics the broker has not
//!   confirmed waits for every one of them; it ends confirmed when the last
//!   is confirmed, or failed when one of them fails, when the broker goes
//!   down, or at its deadline (`now +` the confirm timeout) — whichever
//!   comes first, and only that.
//! - **No retry loop.** A topic whose subscribe failed is not retried by
//!   itself; the next request that waits for it, or the broker coming back
//!   up, sends it again.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use crate::error::{ErrorCode, RtmError};
use crate::topic::Topic;

/// A request waiting for topics, as [`BrokerTopics`] numbers them.
pub(crate) type WaitId = u64;

/// Topic changes to carry out on the broker, taken by
/// [`Router::poll_topic_changes`](crate::Router::poll_topic_changes). Each
/// topic appears once; report every answer
/// ([`Router::handle_topic_subscribed`](crate::Router::handle_topic_subscribed),
/// [`Router::handle_topic_unsubscribed`](crate::Router::handle_topic_unsubscribed)):
/// until then no other command is sent for that topic.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TopicChanges {
    /// Start receiving these.
    pub subscribe: Vec<Topic>,
    /// Stop receiving these.
    pub unsubscribe: Vec<Topic>,
}

impl TopicChanges {
    /// Whether there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.subscribe.is_empty() && self.unsubscribe.is_empty()
    }

    /// How many topics.
    pub fn len(&self) -> usize {
        self.subscribe.len() + self.unsubscribe.len()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Command {
    Subscribe,
    Unsubscribe,
}

#[derive(Debug, Default)]
struct TopicState {
    /// A local connection holds it.
    wanted: bool,
    /// The broker's last answer: it holds the topic for this server.
    held: bool,
    /// Its last subscribe failed, yet the broker may hold it (a command can
    /// fail after taking effect): once unwanted, it is unsubscribed anyway.
    maybe_held: bool,
    /// Sent and not answered: no other command goes for this topic meanwhile.
    in_flight: Option<Command>,
    /// Subscribe again even though held (the broker came back up).
    stale: bool,
    /// The last subscribe failed: not retried until someone waits for it.
    failed: bool,
    /// In the queue of topics to look at.
    queued: bool,
    /// Waits that need it confirmed (some may have ended: checked on use).
    waits: Vec<WaitId>,
}

impl TopicState {
    /// Wanted and held differ (or a refresh is owed), and nothing travels.
    fn needs_command(&self) -> bool {
        self.in_flight.is_none()
            && if self.wanted {
                !self.held || self.stale
            } else {
                self.held || self.maybe_held
            }
    }

    fn confirmed(&self) -> bool {
        self.wanted && self.held
    }

    fn is_idle(&self) -> bool {
        !self.wanted && !self.held && !self.maybe_held && self.in_flight.is_none() && !self.queued
    }
}

#[derive(Debug)]
struct Wait<W> {
    payload: W,
    /// Topics still unconfirmed.
    remaining: usize,
}

/// How a wait ended: its payload back, with `Ok` when every topic it
/// needed is confirmed, `Err` when one failed, the broker went down or the
/// deadline passed.
#[derive(Debug)]
pub(crate) struct WaitEnd<W> {
    pub(crate) id: WaitId,
    pub(crate) payload: W,
    pub(crate) result: Result<(), RtmError>,
}

/// What the broker holds for this server, what it must be told, and who
/// waits for it. See the [module docs](self).
#[derive(Debug)]
pub(crate) struct BrokerTopics<W> {
    states: HashMap<Topic, TopicState>,
    queue: VecDeque<Topic>,
    waits: HashMap<WaitId, Wait<W>>,
    /// Deadlines in the order they were set; the timeout is one constant and
    /// time never goes back, so this is also their order in time.
    deadlines: VecDeque<(Instant, WaitId)>,
    next_wait: WaitId,
    up: bool,
    timeout: Duration,
    ended: Vec<WaitEnd<W>>,
    /// A topic was queued since [`BrokerTopics::take_queued`] last said so.
    newly_queued: bool,
}

impl<W> BrokerTopics<W> {
    /// Waits end failed `timeout` after they start.
    pub(crate) fn new(timeout: Duration) -> Self {
        BrokerTopics {
            states: HashMap::new(),
            queue: VecDeque::new(),
            waits: HashMap::new(),
            deadlines: VecDeque::new(),
            next_wait: 0,
            up: true,
            timeout,
            ended: Vec::new(),
            newly_queued: false,
        }
    }

    // ----- getters -----

    /// Whether the broker confirmed this wanted topic.
    pub(crate) fn is_confirmed(&self, topic: &Topic) -> bool {
        self.states.get(topic).is_some_and(TopicState::confirmed)
    }

    /// Whether changes wait to be taken.
    pub(crate) fn has_changes(&self) -> bool {
        !self.queue.is_empty()
    }

    /// Whether a change was queued since the last call (which resets it):
    /// what wakes whoever takes changes, once per change, not at every look.
    pub(crate) fn take_queued(&mut self) -> bool {
        std::mem::take(&mut self.newly_queued)
    }

    /// Requests waiting.
    pub(crate) fn wait_count(&self) -> usize {
        self.waits.len()
    }

    /// Topics known (wanted, held, or with a command on its way).
    #[cfg(test)]
    pub(crate) fn topic_count(&self) -> usize {
        self.states.len()
    }

    /// When [`BrokerTopics::handle_timeout`] must run next.
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        self.deadlines.front().map(|(at, _)| *at)
    }

    // ----- inputs -----

    /// A local connection holds `topic` now (it may have before).
    pub(crate) fn want(&mut self, topic: &Topic) {
        let state = self.states.entry(topic.clone()).or_default();
        state.wanted = true;
        self.look_at(topic);
    }

    /// No local connection holds `topic` any more.
    pub(crate) fn unwant(&mut self, topic: &Topic) {
        if let Some(state) = self.states.get_mut(topic) {
            state.wanted = false;
        }
        self.look_at(topic);
    }

    /// Starts a wait for `topics` (wanted and unconfirmed), ending at
    /// `now + timeout` at the latest. A topic nobody is subscribing (its
    /// last subscribe failed) is sent again.
    pub(crate) fn wait(&mut self, topics: &[Topic], payload: W, now: Instant) -> WaitId {
        self.next_wait += 1;
        let id = self.next_wait;
        let mut remaining = 0;
        let mut retry = Vec::new();
        for topic in topics {
            let Some(state) = self.states.get_mut(topic) else {
                continue;
            };
            if state.confirmed() {
                continue;
            }
            remaining += 1;
            if state.waits.len() >= 64 && state.waits.len().is_power_of_two() {
                // Drop the ids of waits that ended, so the list stays as long
                // as the waits that are live (amortised O(1) per wait).
                let live = &self.waits;
                state.waits.retain(|w| live.contains_key(w));
            }
            state.waits.push(id);
            if state.failed {
                state.failed = false;
                retry.push(topic);
            }
        }
        for topic in retry {
            self.look_at(topic);
        }
        if remaining == 0 {
            self.ended.push(WaitEnd {
                id,
                payload,
                result: Ok(()),
            });
            return id;
        }
        self.waits.insert(id, Wait { payload, remaining });
        self.deadlines.push_back((now + self.timeout, id));
        id
    }

    /// The waiter is gone (its connection closed): the wait ends silently.
    pub(crate) fn cancel(&mut self, id: WaitId) -> Option<W> {
        self.waits.remove(&id).map(|wait| wait.payload)
    }

    /// Takes up to `max` topics whose command is due, and marks those
    /// commands in flight.
    pub(crate) fn poll_changes(&mut self, max: usize) -> TopicChanges {
        let mut changes = TopicChanges::default();
        while changes.len() < max {
            let Some(topic) = self.queue.pop_front() else {
                break;
            };
            let Some(state) = self.states.get_mut(&topic) else {
                continue;
            };
            state.queued = false;
            if !state.needs_command() {
                self.forget_if_idle(&topic);
                continue;
            }
            if state.wanted {
                state.in_flight = Some(Command::Subscribe);
                state.stale = false;
                changes.subscribe.push(topic);
            } else {
                state.in_flight = Some(Command::Unsubscribe);
                // From the moment it is sent, nothing counts on it.
                state.held = false;
                state.maybe_held = false;
                changes.unsubscribe.push(topic);
            }
        }
        changes
    }

    /// The broker answered a subscribe of `topic`. An answer to a command
    /// not in flight (a duplicate, or one for a topic long gone) is ignored.
    pub(crate) fn handle_subscribed(&mut self, topic: &Topic, ok: bool) {
        let Some(state) = self.states.get_mut(topic) else {
            return;
        };
        if state.in_flight != Some(Command::Subscribe) {
            return;
        }
        state.in_flight = None;
        state.held = ok;
        state.maybe_held = !ok;
        state.failed = !ok;
        let waits = std::mem::take(&mut state.waits);
        if state.wanted {
            for id in waits {
                if ok {
                    self.confirm_one(id);
                } else {
                    let err = RtmError::new(
                        ErrorCode::BrokerUnavailable,
                        format!("the broker could not subscribe {topic}"),
                    );
                    self.fail(id, err);
                }
            }
        }
        // Unwanted meanwhile: unsubscribe it (a failure is not retried).
        self.look_at(topic);
    }

    /// The broker answered an unsubscribe of `topic` (whatever the outcome,
    /// the server no longer counts on it).
    pub(crate) fn handle_unsubscribed(&mut self, topic: &Topic) {
        let Some(state) = self.states.get_mut(topic) else {
            return;
        };
        if state.in_flight != Some(Command::Unsubscribe) {
            return;
        }
        state.in_flight = None;
        self.look_at(topic);
    }

    /// The broker went down (`false`) or came up. Down: every wait fails.
    /// Coming back up: every wanted topic is subscribed again (for brokers
    /// that do not resubscribe by themselves). Returns whether it came up.
    pub(crate) fn handle_broker_state(&mut self, up: bool) -> bool {
        let came_up = up && !self.up;
        self.up = up;
        if !up {
            let mut ids: Vec<WaitId> = self.waits.keys().copied().collect();
            ids.sort_unstable();
            for id in ids {
                self.fail(
                    id,
                    RtmError::new(ErrorCode::BrokerUnavailable, "the broker is down"),
                );
            }
        }
        if came_up {
            let mut wanted: Vec<Topic> = self
                .states
                .iter()
                .filter(|(_, s)| s.wanted)
                .map(|(t, _)| t.clone())
                .collect();
            wanted.sort();
            for topic in wanted {
                if let Some(state) = self.states.get_mut(&topic) {
                    state.stale = true;
                    state.failed = false;
                }
                self.look_at(&topic);
            }
        }
        came_up
    }

    /// Time passed: waits past their deadline fail.
    pub(crate) fn handle_timeout(&mut self, now: Instant) {
        while let Some(&(at, id)) = self.deadlines.front() {
            if at > now {
                break;
            }
            self.deadlines.pop_front();
            let err = RtmError::new(
                ErrorCode::BrokerUnavailable,
                format!(
                    "the broker did not confirm within {} ms",
                    self.timeout.as_millis()
                ),
            );
            self.fail(id, err);
        }
    }

    // ----- outputs -----

    /// Waits that ended since the last call, in the order they ended.
    pub(crate) fn take_ended(&mut self) -> std::vec::Drain<'_, WaitEnd<W>> {
        self.ended.drain(..)
    }

    // ----- internals -----

    /// Queues `topic` to be looked at if a command is due for it; forgets it
    /// when nothing about it is left.
    fn look_at(&mut self, topic: &Topic) {
        let Some(state) = self.states.get_mut(topic) else {
            return;
        };
        if state.queued {
            return;
        }
        if state.needs_command() && !(state.wanted && state.failed) {
            state.queued = true;
            self.newly_queued = true;
            self.queue.push_back(topic.clone());
            return;
        }
        self.forget_if_idle(topic);
    }

    fn forget_if_idle(&mut self, topic: &Topic) {
        if self.states.get(topic).is_some_and(TopicState::is_idle) {
            self.states.remove(topic);
        }
    }

    fn confirm_one(&mut self, id: WaitId) {
        let Some(wait) = self.waits.get_mut(&id) else {
            return;
        };
        wait.remaining = wait.remaining.saturating_sub(1);
        if wait.remaining == 0 {
            if let Some(wait) = self.waits.remove(&id) {
                self.ended.push(WaitEnd {
                    id,
                    payload: wait.payload,
                    result: Ok(()),
                });
            }
        }
    }

    fn fail(&mut self, id: WaitId, err: RtmError) {
        if let Some(wait) = self.waits.remove(&id) {
            self.ended.push(WaitEnd {
                id,
                payload: wait.payload,
                result: Err(err),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topic(name: &str) -> Topic {
        Topic::from_raw(name)
    }

    fn ended(topics: &mut BrokerTopics<&'static str>) -> Vec<String> {
        topics
            .take_ended()
            .map(|end| match end.result {
                Ok(()) => format!("{} ok", end.payload),
                Err(_) => format!("{} failed", end.payload),
            })
            .collect()
    }

    #[test]
    fn a_topic_wanted_again_before_its_unsubscribe_is_sent_stays_confirmed() {
        let now = Instant::now();
        let mut topics = BrokerTopics::new(Duration::from_secs(10));
        let t = topic("t");
        topics.want(&t);
        assert_eq!(topics.poll_changes(10).subscribe, vec![t.clone()]);
        topics.handle_subscribed(&t, true);
        assert!(topics.is_confirmed(&t));
        // The last holder leaves, a new one arrives: nothing is sent.
        topics.unwant(&t);
        topics.want(&t);
        assert!(topics.is_confirmed(&t));
        topics.wait(std::slice::from_ref(&t), "reload", now);
        assert_eq!(ended(&mut topics), ["reload ok"]);
        assert!(topics.poll_changes(10).is_empty());
    }

    #[test]
    fn a_topic_wanted_again_while_its_unsubscribe_travels_is_subscribed_after_the_answer() {
        let now = Instant::now();
        let mut topics = BrokerTopics::new(Duration::from_secs(10));
        let t = topic("t");
        topics.want(&t);
        topics.poll_changes(10);
        topics.handle_subscribed(&t, true);
        topics.unwant(&t);
        assert_eq!(topics.poll_changes(10).unsubscribe, vec![t.clone()]);
        topics.want(&t);
        topics.wait(std::slice::from_ref(&t), "w", now);
        assert!(topics.poll_changes(10).is_empty(), "two commands in flight");
        topics.handle_unsubscribed(&t);
        assert_eq!(topics.poll_changes(10).subscribe, vec![t.clone()]);
        assert!(ended(&mut topics).is_empty());
        topics.handle_subscribed(&t, true);
        assert_eq!(ended(&mut topics), ["w ok"]);
    }

    #[test]
    fn a_failed_subscribe_is_not_retried_until_someone_waits_for_it() {
        let now = Instant::now();
        let mut topics = BrokerTopics::new(Duration::from_secs(10));
        let t = topic("t");
        topics.want(&t);
        topics.wait(std::slice::from_ref(&t), "first", now);
        topics.poll_changes(10);
        topics.handle_subscribed(&t, false);
        assert_eq!(ended(&mut topics), ["first failed"]);
        assert!(topics.poll_changes(10).is_empty(), "retried by itself");
        topics.wait(std::slice::from_ref(&t), "second", now);
        assert_eq!(topics.poll_changes(10).subscribe, vec![t.clone()]);
        topics.handle_subscribed(&t, true);
        assert_eq!(ended(&mut topics), ["second ok"]);
    }

    #[test]
    fn a_wait_ends_once_at_its_deadline() {
        let now = Instant::now();
        let mut topics = BrokerTopics::new(Duration::from_secs(10));
        let t = topic("t");
        topics.want(&t);
        topics.wait(std::slice::from_ref(&t), "w", now);
        topics.poll_changes(10);
        topics.handle_timeout(now + Duration::from_millis(9_999));
        assert!(ended(&mut topics).is_empty());
        topics.handle_timeout(now + Duration::from_secs(10));
        assert_eq!(ended(&mut topics), ["w failed"]);
        topics.handle_subscribed(&t, true);
        assert!(ended(&mut topics).is_empty(), "ended twice");
        assert!(topics.is_confirmed(&t));
    }

    #[test]
    fn the_broker_going_down_fails_every_wait_and_coming_up_subscribes_every_wanted_topic() {
        let now = Instant::now();
        let mut topics = BrokerTopics::new(Duration::from_secs(10));
        let (a, b) = (topic("a"), topic("b"));
        topics.want(&a);
        topics.want(&b);
        topics.poll_changes(10);
        topics.handle_subscribed(&a, true);
        topics.wait(std::slice::from_ref(&b), "w", now);
        topics.handle_broker_state(false);
        assert_eq!(ended(&mut topics), ["w failed"]);
        topics.handle_subscribed(&b, false);
        assert!(topics.handle_broker_state(true));
        let mut again = topics.poll_changes(10).subscribe;
        again.sort();
        assert_eq!(again, vec![a.clone(), b.clone()]);
        assert!(
            topics.is_confirmed(&a),
            "a held topic stays confirmed while refreshed"
        );
    }

    #[test]
    fn a_topic_nobody_wants_or_holds_is_forgotten() {
        let mut topics: BrokerTopics<()> = BrokerTopics::new(Duration::from_secs(10));
        let t = topic("t");
        topics.want(&t);
        topics.unwant(&t);
        assert!(topics.poll_changes(10).is_empty());
        assert_eq!(topics.topic_count(), 0);
        topics.want(&t);
        topics.poll_changes(10);
        topics.handle_subscribed(&t, true);
        topics.unwant(&t);
        topics.poll_changes(10);
        topics.handle_unsubscribed(&t);
        assert_eq!(topics.topic_count(), 0);
    }
}

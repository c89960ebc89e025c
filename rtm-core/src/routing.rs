//! The routing indexes of a server: user → connections, (event, tag) →
//! connections, and broker topic → what it feeds.
//!
//! A topic is needed exactly while its set is non-empty, so the sets are the
//! reference counts: [`Change::Subscribe`] when a set is created,
//! [`Change::Unsubscribe`] when it empties.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use crate::conn::ConnId;
use crate::topic::Topic;

/// What an incoming broker topic delivers to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Target {
    User(Arc<str>),
    Push(Arc<str>, Arc<str>),
}

/// A topic to subscribe or unsubscribe after an index changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Change {
    Subscribe(Topic),
    Unsubscribe(Topic),
}

#[derive(Debug, Default)]
pub(crate) struct Routing {
    namespace: String,
    users: HashMap<Arc<str>, HashSet<ConnId>>,
    push: HashMap<Arc<str>, HashMap<Arc<str>, HashSet<ConnId>>>,
    topics: HashMap<Topic, Target>,
}

impl Routing {
    pub(crate) fn new(namespace: &str) -> Self {
        Routing {
            namespace: namespace.to_owned(),
            ..Routing::default()
        }
    }

    pub(crate) fn add_user(&mut self, user: &Arc<str>, conn: ConnId) -> Option<Change> {
        let set = self.users.entry(user.clone()).or_default();
        let first = set.is_empty();
        set.insert(conn);
        first.then(|| {
            let topic = Topic::user(&self.namespace, user);
            self.topics
                .insert(topic.clone(), Target::User(user.clone()));
            Change::Subscribe(topic)
        })
    }

    pub(crate) fn remove_user(&mut self, user: &str, conn: ConnId) -> Option<Change> {
        let set = self.users.get_mut(user)?;
        set.remove(&conn);
        if !set.is_empty() {
            return None;
        }
        self.users.remove(user);
        let topic = Topic::user(&self.namespace, user);
        self.topics.remove(&topic);
        Some(Change::Unsubscribe(topic))
    }

    pub(crate) fn user_conns(&self, user: &str) -> impl Iterator<Item = ConnId> + '_ {
        self.users.get(user).into_iter().flatten().copied()
    }

    /// Adds `conn` as a holder of (event, tag); `None` for the change when it already held it.
    pub(crate) fn add_push(
        &mut self,
        event: &str,
        tag: &str,
        conn: ConnId,
    ) -> Option<(Arc<str>, Arc<str>, Option<Change>)> {
        let (event_key, tags) = match self.push.get_key_value(event) {
            Some((k, _)) => {
                let k = k.clone();
                (k.clone(), self.push.get_mut(&k)?)
            }
            None => {
                let k: Arc<str> = event.into();
                (k.clone(), self.push.entry(k).or_default())
            }
        };
        let tag_key: Arc<str> = match tags.get_key_value(tag) {
            Some((k, _)) => k.clone(),
            None => tag.into(),
        };
        let set = tags.entry(tag_key.clone()).or_default();
        let first = set.is_empty();
        if !set.insert(conn) {
            return None;
        }
        let change = first.then(|| {
            let topic = Topic::push(&self.namespace, event, tag);
            self.topics.insert(
                topic.clone(),
                Target::Push(event_key.clone(), tag_key.clone()),
            );
            Change::Subscribe(topic)
        });
        Some((event_key, tag_key, change))
    }

    /// Removes `conn` from (event, tag); `Some` with the topic change if it held it.
    pub(crate) fn remove_push(
        &mut self,
        event: &str,
        tag: &str,
        conn: ConnId,
    ) -> Option<Option<Change>> {
        let tags = self.push.get_mut(event)?;
        let set = tags.get_mut(tag)?;
        if !set.remove(&conn) {
            return None;
        }
        if !set.is_empty() {
            return Some(None);
        }
        tags.remove(tag);
        if tags.is_empty() {
            self.push.remove(event);
        }
        let topic = Topic::push(&self.namespace, event, tag);
        self.topics.remove(&topic);
        Some(Some(Change::Unsubscribe(topic)))
    }

    pub(crate) fn push_holders<'a>(
        &'a self,
        event: &str,
        tag: &str,
    ) -> impl Iterator<Item = ConnId> + 'a {
        self.push
            .get(event)
            .and_then(|tags| tags.get(tag))
            .into_iter()
            .flatten()
            .copied()
    }

    pub(crate) fn target(&self, topic: &str) -> Option<&Target> {
        self.topics.get(topic)
    }

    pub(crate) fn topics(&self) -> impl Iterator<Item = &Topic> {
        self.topics.keys()
    }

    pub(crate) fn user_count(&self) -> usize {
        self.users.len()
    }

    pub(crate) fn push_key_count(&self) -> usize {
        self.push.values().map(HashMap::len).sum()
    }
}

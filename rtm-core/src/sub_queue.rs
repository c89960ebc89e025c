//! The order of one connection's subscription requests: [`SubQueue`].
//!
//! Requests on one subscription take effect in arrival order: a `subscribe`
//! or `unsubscribe` that shares an (event, tag) with an earlier one still in
//! progress waits for it. Requests on other (event, tag)s do not wait.
//!
//! Each (event, tag) has a line of the requests queued on it, in arrival
//! order; a request counts the lines in which it is not yet first, and
//! starts when that count reaches zero. Finishing a request moves it out of
//! the head of each of its lines, so the work per request is O(its tags),
//! however long the queue and however much the requests overlap.

use std::cmp::Reverse;
use std::collections::hash_map::RandomState;
use std::collections::{BinaryHeap, HashMap, HashSet, VecDeque};
use std::hash::BuildHasher;

use crate::frame::{PushSub, RequestId};

/// A request let through, in arrival order: start a subscribe (it stays
/// queued until [`SubQueue::finish`]); carry out an unsubscribe (it left).
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Ready {
    Subscribe(RequestId, PushSub),
    Unsubscribe(RequestId, PushSub),
}

#[derive(Debug)]
struct Entry {
    id: RequestId,
    sub: PushSub,
    unsubscribe: bool,
    /// Its (event, tag)s, each once, as line keys.
    keys: Vec<u64>,
    /// Lines in which an earlier request is still ahead of it.
    behind: usize,
}

/// One connection's subscription requests in progress, and those waiting
/// behind one that overlaps them. See the [module docs](self).
#[derive(Debug, Default)]
pub(crate) struct SubQueue {
    hasher: RandomState,
    next_seq: u64,
    entries: HashMap<u64, Entry>,
    by_id: HashMap<RequestId, u64>,
    /// Per (event, tag) key: the requests on it, in arrival order.
    lines: HashMap<u64, VecDeque<u64>>,
}

impl SubQueue {
    /// Whether nothing is queued.
    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether a request on `sub` would wait behind one already queued.
    pub(crate) fn would_wait(&self, sub: &PushSub) -> bool {
        self.keys(sub)
            .iter()
            .any(|key| self.lines.contains_key(key))
    }

    /// Queues a request; `Some` when it may go at once (nothing earlier
    /// overlaps): a subscribe stays queued (started), an unsubscribe leaves.
    pub(crate) fn push(&mut self, id: RequestId, sub: PushSub, unsubscribe: bool) -> Option<Ready> {
        let keys = self.keys(&sub);
        let seq = self.next_seq;
        self.next_seq += 1;
        let mut behind = 0;
        for key in &keys {
            let line = self.lines.entry(*key).or_default();
            if !line.is_empty() {
                behind += 1;
            }
            line.push_back(seq);
        }
        self.by_id.insert(id.clone(), seq);
        self.entries.insert(
            seq,
            Entry {
                id,
                sub,
                unsubscribe,
                keys,
                behind,
            },
        );
        if behind > 0 {
            return None;
        }
        let mut ready = self.start(seq);
        debug_assert!(ready.len() <= 1, "nothing waits behind the newest request");
        ready.pop()
    }

    /// The started subscribe `id` is done (answered): it leaves, and the
    /// requests that waited only for it go, in arrival order.
    pub(crate) fn finish(&mut self, id: &RequestId) -> Vec<Ready> {
        let Some(seq) = self.by_id.get(id).copied() else {
            return Vec::new();
        };
        let mut heap = BinaryHeap::new();
        self.remove(seq, &mut heap);
        let mut ready = Vec::new();
        while let Some(Reverse(next)) = heap.pop() {
            ready.extend(self.go(next, &mut heap));
        }
        ready
    }

    /// Starts the request `seq`, which nothing is ahead of.
    fn start(&mut self, seq: u64) -> Vec<Ready> {
        let mut heap = BinaryHeap::new();
        let mut ready: Vec<Ready> = self.go(seq, &mut heap).into_iter().collect();
        while let Some(Reverse(next)) = heap.pop() {
            ready.extend(self.go(next, &mut heap));
        }
        ready
    }

    /// Lets `seq` go: a subscribe is marked started (and stays); an
    /// unsubscribe leaves, which may free others (pushed on `heap`).
    fn go(&mut self, seq: u64, heap: &mut BinaryHeap<Reverse<u64>>) -> Option<Ready> {
        let entry = self.entries.get(&seq)?;
        if !entry.unsubscribe {
            return Some(Ready::Subscribe(entry.id.clone(), entry.sub.clone()));
        }
        let entry = self.remove(seq, heap)?;
        Some(Ready::Unsubscribe(entry.id, entry.sub))
    }

    /// Takes `seq` out of the queue and the head of its lines; the requests
    /// that were behind it only there are pushed on `heap`.
    fn remove(&mut self, seq: u64, heap: &mut BinaryHeap<Reverse<u64>>) -> Option<Entry> {
        let entry = self.entries.remove(&seq)?;
        self.by_id.remove(&entry.id);
        for key in &entry.keys {
            let Some(line) = self.lines.get_mut(key) else {
                continue;
            };
            // It went only when first in every line: it is at the front.
            debug_assert_eq!(line.front(), Some(&seq));
            line.pop_front();
            match line.front().copied() {
                None => {
                    self.lines.remove(key);
                }
                Some(next) => {
                    if let Some(waiting) = self.entries.get_mut(&next) {
                        waiting.behind -= 1;
                        if waiting.behind == 0 {
                            heap.push(Reverse(next));
                        }
                    }
                }
            }
        }
        Some(entry)
    }

    /// The line keys of a request: one per distinct (event, tag). Two
    /// requests that share an (event, tag) share its key; a collision of
    /// the (keyed, random) hash only makes a request wait in order.
    fn keys(&self, sub: &PushSub) -> Vec<u64> {
        let mut seen = HashSet::with_capacity(sub.tags.len());
        sub.tags
            .iter()
            .map(|tag| self.hasher.hash_one((sub.event.as_str(), tag.as_str())))
            .filter(|key| seen.insert(*key))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sub(tags: &[&str]) -> PushSub {
        PushSub {
            event: "e".into(),
            tags: tags.iter().map(|t| (*t).to_owned()).collect(),
            since: None,
        }
    }

    fn id(n: u32) -> RequestId {
        RequestId::new(&n.to_string())
    }

    fn ids(ready: &[Ready]) -> Vec<String> {
        ready
            .iter()
            .map(|r| match r {
                Ready::Subscribe(id, _) => format!("s{id}"),
                Ready::Unsubscribe(id, _) => format!("u{id}"),
            })
            .collect()
    }

    #[test]
    fn requests_on_other_tags_go_at_once_and_overlapping_ones_wait_in_order() {
        let mut queue = SubQueue::default();
        assert!(queue.push(id(1), sub(&["a", "b"]), false).is_some());
        assert!(queue.push(id(2), sub(&["c"]), false).is_some());
        assert!(queue.push(id(3), sub(&["b"]), true).is_none());
        assert!(queue.push(id(4), sub(&["b", "d"]), false).is_none());
        assert!(queue.would_wait(&sub(&["a"])));
        assert!(!queue.would_wait(&sub(&["z"])));
        // 1 done: its unsubscribe goes (and leaves), then 4.
        assert_eq!(ids(&queue.finish(&id(1))), ["u3", "s4"]);
        assert_eq!(ids(&queue.finish(&id(4))), Vec::<String>::new());
        assert_eq!(ids(&queue.finish(&id(2))), Vec::<String>::new());
        assert!(queue.is_empty());
    }

    #[test]
    fn a_request_waits_for_every_line_it_is_behind_in() {
        let mut queue = SubQueue::default();
        queue.push(id(1), sub(&["a"]), false);
        queue.push(id(2), sub(&["b"]), false);
        assert!(queue.push(id(3), sub(&["a", "b", "a"]), false).is_none());
        assert!(queue.finish(&id(1)).is_empty(), "still behind 2 on b");
        assert_eq!(ids(&queue.finish(&id(2))), ["s3"]);
    }

    #[test]
    fn a_long_chain_of_overlapping_subscribes_costs_linear_work() {
        // 255 subscribes of 128 tags, each sharing one tag with the one before.
        let mut queue = SubQueue::default();
        let tags =
            |n: u32| -> Vec<String> { (0..128).map(|t| format!("{}", n * 127 + t)).collect() };
        for n in 0..255 {
            let sub = PushSub {
                event: "e".into(),
                tags: tags(n),
                since: None,
            };
            let went = queue.push(id(n), sub, false);
            assert_eq!(went.is_some(), n == 0);
        }
        for n in 0..255 {
            let ready = queue.finish(&id(n));
            let expected: Vec<String> = if n < 254 {
                vec![format!("s{}", n + 1)]
            } else {
                vec![]
            };
            assert_eq!(ids(&ready), expected);
        }
        assert!(queue.is_empty());
    }
}

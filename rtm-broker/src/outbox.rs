//! The [`MemoryHub`](crate::MemoryHub)'s outbox: messages queued under
//! the hub's lock, handed to the sinks outside it, in the order they were
//! queued, by one thread at a time (a sink may publish in turn: it queues,
//! and the thread already handing over hands that over too).
//!
//! The hand-off between threads is model checked with loom (the tests of
//! this module): whatever the interleaving, every message is handed over
//! exactly once, in queue order, and none is left behind with no one to
//! hand it over.

use std::collections::VecDeque;

/// Messages waiting for their sinks, and whether a thread is handing them
/// over. Lives under the hub's lock.
#[derive(Debug)]
pub(crate) struct Outbox<T> {
    queue: VecDeque<T>,
    /// A thread is in [`drain`]: it hands over what is queued meanwhile.
    draining: bool,
}

impl<T> Default for Outbox<T> {
    fn default() -> Self {
        Outbox {
            queue: VecDeque::new(),
            draining: false,
        }
    }
}

impl<T> Outbox<T> {
    pub(crate) fn push(&mut self, item: T) {
        self.queue.push_back(item);
    }

    /// Called under the lock after queuing: whether the caller is now the
    /// one to hand over (no one else is); it must then call [`drain`].
    pub(crate) fn claim(&mut self) -> bool {
        !std::mem::replace(&mut self.draining, true)
    }

    /// The next message to hand over; `None` (and no one is handing over
    /// any more) once empty, in one step under the lock, so a message
    /// queued right after finds no one draining and is drained by its
    /// sender.
    pub(crate) fn next(&mut self) -> Option<T> {
        let next = self.queue.pop_front();
        self.draining = next.is_some();
        next
    }

    /// The draining thread gave up (its sink panicked): the next sender
    /// drains.
    pub(crate) fn abandon(&mut self) {
        self.draining = false;
    }

    #[cfg(test)]
    fn is_idle(&self) -> bool {
        self.queue.is_empty() && !self.draining
    }
}

/// Hands messages over until the outbox is empty: `next` takes the lock and
/// calls [`Outbox::next`]; `abandon` takes it and calls [`Outbox::abandon`]
/// (only if `hand` panics). Call only after [`Outbox::claim`] said so.
pub(crate) fn drain<T>(
    mut next: impl FnMut() -> Option<T>,
    mut hand: impl FnMut(T),
    abandon: impl FnOnce(),
) {
    struct Abandon<F: FnOnce()>(Option<F>);
    impl<F: FnOnce()> Drop for Abandon<F> {
        fn drop(&mut self) {
            if let (true, Some(abandon)) = (std::thread::panicking(), self.0.take()) {
                abandon();
            }
        }
    }
    let _abandon = Abandon(Some(abandon));
    while let Some(item) = next() {
        hand(item);
    }
}

#[cfg(test)]
mod model {
    use loom::sync::{Arc, Mutex};

    use super::*;

    /// The hub, reduced to its outbox; its sink records what it is handed
    /// and, handed 1, sends 2 in turn (re-entrant, as a sink may).
    #[derive(Default)]
    struct Hub {
        outbox: Mutex<Outbox<u32>>,
        got: Mutex<Vec<u32>>,
    }

    impl Hub {
        /// Queues `items` as the hub does (under the lock), then drains if
        /// it is this sender's turn.
        fn send(&self, items: &[u32]) {
            let drains = {
                let mut outbox = self.outbox.lock().unwrap();
                for item in items {
                    outbox.push(*item);
                }
                outbox.claim()
            };
            if drains {
                drain(
                    || self.outbox.lock().unwrap().next(),
                    |item| self.sink(item),
                    || self.outbox.lock().unwrap().abandon(),
                );
            }
        }

        fn sink(&self, item: u32) {
            self.got.lock().unwrap().push(item);
            if item == 1 {
                self.send(&[2]);
            }
        }

        /// Once every sender returned: nothing waits for a drainer, and
        /// what was handed over, in order.
        fn settled(&self) -> Vec<u32> {
            assert!(self.outbox.lock().unwrap().is_idle(), "a message stranded");
            self.got.lock().unwrap().clone()
        }
    }

    fn check(model: impl Fn() + Sync + Send + 'static) {
        let mut builder = loom::model::Builder::new();
        builder.preemption_bound = Some(3);
        builder.check(model);
    }

    fn at(got: &[u32], x: u32) -> usize {
        got.iter()
            .position(|g| *g == x)
            .unwrap_or_else(|| panic!("{x} never handed over: {got:?}"))
    }

    #[test]
    fn every_message_is_handed_over_once_in_queue_order_and_none_is_stranded() {
        check(|| {
            let hub = Arc::new(Hub::default());
            let senders: Vec<_> = [[3, 4], [5, 6], [7, 8]]
                .into_iter()
                .map(|items| {
                    let hub = hub.clone();
                    loom::thread::spawn(move || hub.send(&items))
                })
                .collect();
            for sender in senders {
                sender.join().unwrap();
            }
            let got = hub.settled();
            let mut sorted = got.clone();
            sorted.sort_unstable();
            assert_eq!(sorted, vec![3, 4, 5, 6, 7, 8], "each exactly once");
            for [first, then] in [[3, 4], [5, 6], [7, 8]] {
                assert!(at(&got, first) < at(&got, then), "{got:?}");
            }
        });
    }

    #[test]
    fn what_a_sink_sends_in_turn_is_handed_over_too() {
        check(|| {
            let hub = Arc::new(Hub::default());
            let other = {
                let hub = hub.clone();
                loom::thread::spawn(move || hub.send(&[9]))
            };
            hub.send(&[1]);
            other.join().unwrap();
            let got = hub.settled();
            assert_eq!(got.len(), 3, "{got:?}");
            assert!(at(&got, 1) < at(&got, 2), "{got:?}");
            at(&got, 9);
        });
    }
}

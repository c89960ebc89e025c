//! The in-memory hub's history: offsets per stream under an epoch, kept
//! and published as one step, read back from an offset, bounded by size
//! and time, and recoverable with `rtm_core::recovery`.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use rtm_broker::{Broker, BrokerEvent, MemoryHub};
use rtm_core::recovery::{recover, HistoryPage, Recovery};
use rtm_core::{Envelope, HistoryConfig, StreamOptions, StreamPosition, Topic};

/// The hub's futures are ready at once.
fn now<T>(future: impl Future<Output = T>) -> T {
    let mut future = std::pin::pin!(future);
    match future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        Poll::Ready(value) => value,
        Poll::Pending => panic!("a MemoryHub future was not ready"),
    }
}

fn envelope(n: u64) -> Bytes {
    let frame = Bytes::from(format!(r#"{{"event":"score","data":[{n}]}}"#));
    Envelope::encode("s1", n, None, None, &frame)
}

fn topic() -> Topic {
    Topic::push("rtm", "score", "m1")
}

fn options(size: usize) -> StreamOptions {
    StreamOptions {
        size,
        ttl: Duration::from_secs(60),
    }
}

/// A started broker of `hub` subscribed to `topic()`, and the positions of
/// what it receives.
fn listener(hub: &MemoryHub) -> (rtm_broker::MemoryBroker, Arc<Mutex<Vec<StreamPosition>>>) {
    let broker = hub.broker();
    let got = Arc::new(Mutex::new(Vec::new()));
    let sink = got.clone();
    now(broker.start(Arc::new(move |event| {
        if let BrokerEvent::Message { payload, .. } = event {
            let position = Envelope::decode(payload).unwrap().position.unwrap();
            sink.lock().unwrap().push(position);
        }
    })))
    .unwrap();
    now(broker.subscribe(&topic())).unwrap();
    (broker, got)
}

#[test]
fn each_event_gets_the_next_offset_and_subscribers_get_it_with_its_position() {
    let hub = MemoryHub::new();
    let (_listener, got) = listener(&hub);
    let sender = hub.broker();
    assert!(sender.has_history());
    let positions: Vec<StreamPosition> = (1..=3)
        .map(|n| now(sender.publish_to_stream(&topic(), envelope(n), options(10))).unwrap())
        .collect();
    let epoch = positions[0].epoch.clone();
    assert!(StreamPosition::is_valid_epoch(&epoch), "{epoch}");
    assert_eq!(
        positions,
        (1..=3)
            .map(|n| StreamPosition::new(n, epoch.clone()))
            .collect::<Vec<_>>()
    );
    assert_eq!(*got.lock().unwrap(), positions);
    // Another stream has its own offsets.
    let other = Topic::push("rtm", "score", "m2");
    let first = now(sender.publish_to_stream(&other, envelope(9), options(10))).unwrap();
    assert_eq!(first.offset, 1);
}

#[test]
fn a_read_gives_the_top_and_the_kept_events_from_an_offset_within_size_and_limit() {
    let hub = MemoryHub::new();
    let broker = hub.broker();
    for n in 1..=8 {
        now(broker.publish_to_stream(&topic(), envelope(n), options(5))).unwrap();
    }
    let read = now(broker.read_stream(&topic(), 2, 100, options(5))).unwrap();
    assert_eq!(read.top.offset, 8);
    // Size 5: 4..=8 are kept.
    let page = HistoryPage::decode(read.top.clone(), read.envelopes).unwrap();
    let offsets: Vec<u64> = page.events.iter().map(|e| e.offset).collect();
    assert_eq!(offsets, vec![4, 5, 6, 7, 8]);
    assert_eq!(
        &page.events[0].frame[..],
        br#"{"event":"score","data":[4]}"#
    );
    let limited = now(broker.read_stream(&topic(), 6, 2, options(5))).unwrap();
    assert_eq!(limited.envelopes.len(), 2);
    assert_eq!(limited.top, read.top);
}

#[test]
fn a_stream_not_kept_is_made_empty_under_a_new_epoch_that_holds_until_its_next_event() {
    let hub = MemoryHub::new();
    let broker = hub.broker();
    let read = now(broker.read_stream(&topic(), 1, 10, options(5))).unwrap();
    assert_eq!(read.top.offset, 0);
    assert!(read.envelopes.is_empty());
    let first = now(broker.publish_to_stream(&topic(), envelope(1), options(5))).unwrap();
    assert_eq!(first, StreamPosition::new(1, read.top.epoch));
}

#[test]
fn a_lost_or_expired_stream_starts_again_under_a_new_epoch() {
    let hub = MemoryHub::new();
    let broker = hub.broker();
    let before = now(broker.publish_to_stream(&topic(), envelope(1), options(5))).unwrap();
    hub.lose_streams();
    let after = now(broker.publish_to_stream(&topic(), envelope(2), options(5))).unwrap();
    assert_eq!(after.offset, 1);
    assert_ne!(after.epoch, before.epoch);

    let short = StreamOptions {
        size: 5,
        ttl: Duration::from_millis(30),
    };
    let kept = now(broker.publish_to_stream(&topic(), envelope(3), short)).unwrap();
    std::thread::sleep(Duration::from_millis(60));
    let expired = now(broker.read_stream(&topic(), 1, 10, short)).unwrap();
    assert_eq!(expired.top.offset, 0);
    assert_ne!(expired.top.epoch, kept.epoch);
}

#[test]
fn a_reset_changes_the_epoch_and_drops_the_events() {
    let hub = MemoryHub::new();
    let broker = hub.broker();
    for n in 1..=3 {
        now(broker.publish_to_stream(&topic(), envelope(n), options(5))).unwrap();
    }
    let before = now(broker.read_stream(&topic(), 1, 10, options(5))).unwrap();
    let reset = now(broker.reset_stream(&topic(), options(5))).unwrap();
    assert_ne!(reset.epoch, before.top.epoch);
    let after = now(broker.read_stream(&topic(), 1, 10, options(5))).unwrap();
    assert_eq!(after.top, reset);
    assert!(after.envelopes.is_empty());
}

#[test]
fn events_published_from_many_threads_reach_every_subscriber_in_offset_order() {
    let hub = MemoryHub::new();
    let (_a, got_a) = listener(&hub);
    let (_b, got_b) = listener(&hub);
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let broker = hub.broker();
            std::thread::spawn(move || {
                for n in 0..250 {
                    now(broker.publish_to_stream(&topic(), envelope(n), options(10))).unwrap();
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    for got in [got_a, got_b] {
        let offsets: Vec<u64> = got.lock().unwrap().iter().map(|p| p.offset).collect();
        assert_eq!(offsets, (1..=1000).collect::<Vec<_>>());
    }
}

#[test]
fn a_sink_that_publishes_in_turn_does_not_deadlock_and_order_holds() {
    let hub = MemoryHub::new();
    let relay = Arc::new(hub.broker());
    let (_listener, got) = listener(&hub);
    let relayed = Topic::push("rtm", "score", "relay");
    let sender = relay.clone();
    let echo = relayed.clone();
    now(relay.start(Arc::new(move |event| {
        if let BrokerEvent::Message { payload, .. } = event {
            let position = Envelope::decode(payload).unwrap().position.unwrap();
            if position.offset <= 3 {
                now(sender.publish_to_stream(&echo, envelope(position.offset), options(10)))
                    .unwrap();
            }
        }
    })))
    .unwrap();
    now(relay.subscribe(&topic())).unwrap();
    for n in 1..=3 {
        now(relay.publish_to_stream(&topic(), envelope(n), options(10))).unwrap();
    }
    assert_eq!(got.lock().unwrap().len(), 3);
    let read = now(relay.read_stream(&relayed, 1, 10, options(10))).unwrap();
    assert_eq!(read.top.offset, 3);
}

#[test]
fn a_client_that_missed_events_recovers_them_from_the_hub() {
    let hub = MemoryHub::new();
    let broker = hub.broker();
    let mut seen = None;
    for n in 1..=10 {
        let position = now(broker.publish_to_stream(&topic(), envelope(n), options(100))).unwrap();
        if n == 4 {
            seen = Some(position);
        }
    }
    let since = seen.unwrap();
    let read = now(broker.read_stream(&topic(), since.offset + 1, 300, options(100))).unwrap();
    let page = HistoryPage::decode(read.top, read.envelopes).unwrap();
    let got = recover(&since, page, Vec::new(), &HistoryConfig::default(), 0);
    let Recovery::Recovered { events, position } = got else {
        panic!("{got:?}")
    };
    assert_eq!(
        events.iter().map(|e| e.offset).collect::<Vec<_>>(),
        (5..=10).collect::<Vec<_>>()
    );
    assert_eq!(position, StreamPosition::new(10, since.epoch));
}

/// Streams a client only asked about (a read makes the stream, to keep
/// the position it gives) are forgotten once their time to live passed,
/// even if nobody asks for them again: the hub does not grow with the
/// number of names ever read.
#[test]
fn expired_streams_are_forgotten_even_when_never_asked_for_again() {
    let hub = MemoryHub::new();
    let broker = hub.broker();
    let short = StreamOptions {
        size: 10,
        ttl: Duration::from_millis(50),
    };
    for n in 0..1_000 {
        let topic = Topic::push("rtm", "score", &format!("t{n}"));
        now(broker.read_stream(&topic, 1, 10, short)).unwrap();
    }
    assert_eq!(hub.stream_count(), 1_000);
    std::thread::sleep(Duration::from_millis(80));
    // Each use of a stream forgets up to two expired ones.
    for n in 0..600 {
        let topic = Topic::push("rtm", "score", &format!("fresh{n}"));
        now(broker.read_stream(&topic, 1, 10, options(10))).unwrap();
    }
    assert_eq!(hub.stream_count(), 600, "the 1,000 expired ones are gone");
}

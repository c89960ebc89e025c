//! Recovery is all or nothing, in order, without duplicates (rtm_core::recovery):
//! the rules one by one, then a property over every interleaving of a
//! history read with the live events buffered around it.

use std::time::Duration;

use bytes::Bytes;
use proptest::prelude::*;
use rtm_core::recovery::{recover, HistoryPage, Recovery, StreamEvent, Unrecoverable};
use rtm_core::{HistoryConfig, StreamPosition};

const EPOCH: &str = "e1";

fn event(offset: u64) -> StreamEvent {
    StreamEvent {
        offset,
        sent_at: Some(1_000 * offset),
        frame: Bytes::from(format!(r#"{{"event":"e","data":[{offset}]}}"#)),
        push: None,
    }
}

fn events(offsets: impl IntoIterator<Item = u64>) -> Vec<StreamEvent> {
    offsets.into_iter().map(event).collect()
}

fn page(top: u64, kept: impl IntoIterator<Item = u64>) -> HistoryPage {
    HistoryPage {
        top: StreamPosition::new(top, EPOCH),
        events: events(kept),
    }
}

fn at(offset: u64) -> StreamPosition {
    StreamPosition::new(offset, EPOCH)
}

fn offsets(events: &[StreamEvent]) -> Vec<u64> {
    events.iter().map(|e| e.offset).collect()
}

fn config() -> HistoryConfig {
    HistoryConfig::default()
}

#[test]
fn missed_events_come_in_order_once_then_the_live_ones_after_them() {
    // Missed 5..=10; 9 and 10 also arrived live while history was read.
    let got = recover(
        &at(4),
        page(10, 5..=10),
        events([9, 11, 10, 12]),
        &config(),
        0,
    );
    let Recovery::Recovered { events, position } = got else {
        panic!("{got:?}")
    };
    assert_eq!(offsets(&events), (5..=12).collect::<Vec<_>>());
    assert_eq!(position, at(12));
    assert_eq!(events[0], event(5));
}

#[test]
fn a_client_that_missed_nothing_is_recovered_with_nothing_but_the_live_events() {
    let got = recover(&at(10), page(10, []), events([11]), &config(), 0);
    assert_eq!(
        got,
        Recovery::Recovered {
            events: events([11]),
            position: at(11)
        }
    );
}

#[test]
fn another_epoch_is_not_recovered_but_the_live_events_after_the_top_still_come() {
    let other = HistoryPage {
        top: StreamPosition::new(3, "e2"),
        events: events(1..=3),
    };
    let got = recover(&at(40), other, events([3, 4, 5]), &config(), 0);
    let Recovery::Unrecoverable {
        reason,
        live,
        position,
    } = got
    else {
        panic!("{got:?}")
    };
    assert_eq!(reason, Unrecoverable::EpochChanged);
    assert_eq!(offsets(&live), vec![4, 5]);
    assert_eq!(position, StreamPosition::new(5, "e2"));
}

#[test]
fn what_the_history_no_longer_has_is_not_recovered() {
    // Size 5: the history keeps 6..=10, the client needs 3.
    let got = recover(&at(2), page(10, 6..=10), vec![], &config(), 0);
    assert!(matches!(
        got,
        Recovery::Unrecoverable {
            reason: Unrecoverable::Trimmed,
            ..
        }
    ));
    assert_eq!(got.position(), &at(10));
}

#[test]
fn more_missed_than_the_recovery_limit_is_not_recovered() {
    let mut config = config();
    config.max_recovery = 3;
    let got = recover(&at(6), page(10, 7..=10), vec![], &config, 0);
    assert!(matches!(
        got,
        Recovery::Unrecoverable {
            reason: Unrecoverable::TooMany { missed: 4, max: 3 },
            ..
        }
    ));
    // At the limit it is.
    assert!(recover(&at(7), page(10, 8..=10), vec![], &config, 0).is_recovered());
}

#[test]
fn a_missed_event_older_than_the_max_age_is_not_recovered() {
    let mut config = config();
    config.max_age = Some(Duration::from_secs(5));
    // Event n was sent at n seconds; now is 12 s: 7 and later are young enough.
    let now = 12_000;
    assert!(recover(&at(6), page(10, 7..=10), vec![], &config, now).is_recovered());
    assert!(matches!(
        recover(&at(5), page(10, 6..=10), vec![], &config, now),
        Recovery::Unrecoverable {
            reason: Unrecoverable::TooOld,
            ..
        }
    ));
}

#[test]
fn a_client_ahead_of_the_stream_is_told_so() {
    let got = recover(&at(12), page(10, 8..=10), vec![], &config(), 0);
    assert!(matches!(
        got,
        Recovery::Unrecoverable {
            reason: Unrecoverable::Ahead,
            ..
        }
    ));
}

#[test]
fn a_hole_in_what_was_missed_fails_the_recovery() {
    let got = recover(&at(4), page(10, [5, 6, 8, 9, 10]), vec![], &config(), 0);
    assert!(matches!(
        got,
        Recovery::Unrecoverable {
            reason: Unrecoverable::Gap,
            ..
        }
    ));
}

#[test]
fn a_hole_among_the_live_events_stops_delivery_before_it() {
    let got = recover(&at(8), page(10, 9..=10), events([11, 13]), &config(), 0);
    assert_eq!(
        got,
        Recovery::Recovered {
            events: events(9..=11),
            position: at(11)
        }
    );
}

proptest! {
    /// A stream of `published` events; the server subscribed to it live
    /// after event `subscribed_after`, read the history when the top was
    /// `top` (the history keeps the last `size`); live events from
    /// `subscribed_after + 1` arrived in any order, some twice. The client
    /// was at `since`.
    #[test]
    fn recovery_returns_exactly_what_was_missed_or_says_why_not(
        published in 1u64..60,
        size in 1u64..30,
        max in 1usize..40,
        cuts in (0.0f64..=1.0, 0.0f64..=1.0, 0.0f64..=1.0),
        shuffle in prop::collection::vec(any::<u16>(), 0..80),
        twice in prop::collection::vec(any::<u16>(), 0..10),
    ) {
        let scale = |f: f64, upto: u64| ((f * upto as f64).floor() as u64).min(upto);
        let top = scale(cuts.0, published);
        let subscribed_after = scale(cuts.1, top);
        let since = scale(cuts.2, top);
        let first_kept = top.saturating_sub(size) + 1;
        let read = page(top, first_kept..=top);
        let mut buffered = events(subscribed_after + 1..=published);
        for (i, key) in shuffle.iter().enumerate() {
            let len = buffered.len();
            if len > 1 {
                buffered.swap(i % len, *key as usize % len);
            }
        }
        for key in &twice {
            if !buffered.is_empty() {
                let again = buffered[*key as usize % buffered.len()].clone();
                buffered.push(again);
            }
        }
        let mut config = HistoryConfig::default();
        config.max_recovery = max;

        let got = recover(&at(since), read, buffered, &config, 0);
        let trimmed = since < top && since + 1 < first_kept;
        let too_many = top - since > max as u64;
        match got {
            Recovery::Recovered { events, position } => {
                prop_assert!(!trimmed && !too_many);
                prop_assert_eq!(offsets(&events), (since + 1..=published).collect::<Vec<_>>());
                for e in &events {
                    prop_assert_eq!(e, &event(e.offset));
                }
                prop_assert_eq!(position, at(published));
            }
            Recovery::Unrecoverable { reason, live, position } => {
                prop_assert!(trimmed || too_many, "{:?}", reason);
                prop_assert_eq!(offsets(&live), (top + 1..=published).collect::<Vec<_>>());
                prop_assert_eq!(position, at(published));
            }
        }
    }
}

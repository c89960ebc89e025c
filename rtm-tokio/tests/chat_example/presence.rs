//! Issue 17 point 4: presence as diffs, so one client signing in and out
//! in a loop costs everyone little.
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use super::{many_sign_ins, serve, served, Got, Raw};
use rtm_tokio::Server;

/// 240 names online; one more signs in and out every 100 ms for 5 s. Each
/// of the others receives less than 8 KiB a second.
#[tokio::test]
async fn a_name_signing_in_and_out_every_100_ms_costs_each_other_user_little() {
    const ONLINE: usize = 240;
    const CHURN: Duration = Duration::from_secs(5);
    let chat = serve(Server::builder(), many_sign_ins(), 1024, Default::default()).await;
    let addr = chat.addr;
    let mut users = Vec::new();
    for i in 0..ONLINE {
        let (raw, reply) = Raw::sign_in(addr, json!([format!("user{i:03}")])).await;
        assert!(reply["data"]["key"].is_string(), "{reply}");
        users.push(raw);
    }
    // Everyone reads everything; the bytes of the churn window are counted.
    let counting = Arc::new(AtomicUsize::new(0)); // 0: not yet, 1: counting, 2: done
    let mut readers = tokio::task::JoinSet::new();
    for mut raw in users {
        let counting = counting.clone();
        readers.spawn(async move {
            let mut bytes = 0;
            let mut events = 0;
            loop {
                let before = raw.received;
                match raw.next(Duration::from_millis(100)).await {
                    Got::Frame(frame) => {
                        if counting.load(Ordering::Relaxed) == 1 {
                            bytes += raw.received - before;
                            events += usize::from(frame["event"] == "presence");
                        }
                    }
                    Got::Closed(code) => panic!("a user was closed: {code:?}"),
                    Got::Quiet => {}
                }
                if counting.load(Ordering::Relaxed) == 2 {
                    return (bytes, events);
                }
            }
        });
    }
    // Let the 240 arrivals be announced.
    tokio::time::sleep(Duration::from_millis(800)).await;

    let (first, reply) = Raw::sign_in(addr, json!(["churner"])).await;
    let key = reply["data"]["key"].as_str().unwrap().to_owned();
    drop(first);
    tokio::time::sleep(Duration::from_millis(400)).await;
    counting.store(1, Ordering::Relaxed);
    let started = Instant::now();
    let mut sign_ins = 0;
    while started.elapsed() < CHURN {
        let tick = Instant::now();
        let (raw, reply) = Raw::sign_in(addr, json!(["churner", key])).await;
        assert!(reply["data"]["key"].is_string(), "{reply}");
        sign_ins += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
        drop(raw);
        tokio::time::sleep(Duration::from_millis(100).saturating_sub(tick.elapsed())).await;
    }
    // The last departure is announced within an interval.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let window = started.elapsed();
    counting.store(2, Ordering::Relaxed);
    let mut worst = (0, 0);
    while let Some(counted) = readers.join_next().await {
        worst = worst.max(counted.unwrap());
    }
    let per_second = worst.0 as f64 / window.as_secs_f64();
    println!(
        "presence churn: {sign_ins} sign-ins and outs in {window:?} with {ONLINE} online: \
         the most any user received was {} bytes in {} events ({per_second:.0} B/s)",
        worst.0, worst.1
    );
    assert!(per_second < 8192.0, "{per_second:.0} B/s");
    // At most one event per interval.
    assert!(
        worst.1 as f64 <= window.as_secs_f64() / 0.25 + 2.0,
        "{} events",
        worst.1
    );
}

/// A name that arrives and leaves within one interval is in neither list:
/// nothing is sent.
#[tokio::test]
async fn a_name_signing_in_and_out_within_one_interval_causes_no_event() {
    let chat = served().await;
    let (mut watcher, _) = Raw::sign_in(chat.addr, json!(["watcher"])).await;
    // Its own arrival is announced (to itself), then all is quiet.
    loop {
        match watcher.next(Duration::from_millis(500)).await {
            Got::Frame(_) => {}
            Got::Quiet => break,
            Got::Closed(code) => panic!("{code:?}"),
        }
    }
    let (ghost, _) = Raw::sign_in(chat.addr, json!(["ghost"])).await;
    tokio::time::sleep(Duration::from_millis(30)).await;
    drop(ghost);
    match watcher.next(Duration::from_secs(1)).await {
        Got::Quiet => {}
        other => panic!("{other:?}"),
    }
    // A name that stays is announced.
    let (_stays, _) = Raw::sign_in(chat.addr, json!(["stays"])).await;
    match watcher.next(Duration::from_secs(1)).await {
        Got::Frame(frame) => assert_eq!(
            frame,
            json!({"event": "presence", "data": [{"joined": ["stays"], "left": []}]})
        ),
        other => panic!("{other:?}"),
    }
}

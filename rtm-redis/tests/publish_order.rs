//! Publishes are pipelined: they must still reach Redis in call order.

mod common;

use common::*;
use rtm_broker::Broker;
use rtm_core::Topic;
use rtm_redis::testing::TestRedis;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishes_arrive_in_call_order_even_when_awaited_out_of_order() {
    let redis = TestRedis::get().unwrap_or_else(|e| panic!("{e}"));
    let ns = unique_ns("order");
    let (a, mut a_events) = started_tokio(fast_config(&redis.url(), &ns, "a")).await;
    let (b, mut b_events) = started_tokio(fast_config(&redis.url(), &ns, "b")).await;
    a_events.wait_up();
    b_events.wait_up();
    let topic = Topic::user(&ns, "alice");
    b.subscribe(&topic).await.unwrap();

    let count = 2000;
    let publishes: Vec<_> = (0..count)
        .map(|i| a.publish(&topic, i.to_string().into()))
        .collect();
    // Awaited last-first: the order they were called in must still win.
    for publish in publishes.into_iter().rev() {
        publish.await.unwrap();
    }
    b_events.wait_message(&topic, &(count - 1).to_string());

    let expected: Vec<String> = (0..count).map(|i| i.to_string()).collect();
    assert_eq!(b_events.payloads(), expected);
    assert_eq!(a.stats().published, count as u64);
}

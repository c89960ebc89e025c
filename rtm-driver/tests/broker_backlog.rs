//! The broker backlog bound, at its edge. On a current-thread runtime that
//! does not yield, the driver's broker task cannot take commands, so exactly
//! `broker_backlog` of them wait, and the next push is refused.
mod common;

use std::sync::Arc;

use common::{connect, until};
use rtm_core::ErrorCode;
use rtm_driver::broker::MemoryHub;
use rtm_driver::ServerBuilder;
use rtm_runtime::TokioRuntime;

#[tokio::test]
async fn pushes_past_the_broker_backlog_fail_with_broker_unavailable_until_it_drains() {
    const BACKLOG: usize = 4;
    let hub = MemoryHub::new();
    let server = ServerBuilder::new()
        .heartbeat(None)
        .broker(Arc::new(hub.broker()))
        .broker_backlog(BACKLOG)
        .start(Arc::new(TokioRuntime::current()));
    let tags = ["match-1".to_owned()];
    let queued = server.broker_backlog_len();
    for n in queued..BACKLOG {
        assert_eq!(server.push("score", &tags, &(n,)).unwrap(), 0, "push {n}");
    }
    let err = server.push("score", &tags, &(BACKLOG,)).unwrap_err();
    assert_eq!(err.code, ErrorCode::BrokerUnavailable, "{err}");
    assert!(err.message.contains("backlog"), "{err}");
    // Once the broker task runs, the backlog drains and pushes go through.
    until("the backlog to drain", || server.broker_backlog_len() == 0).await;
    assert_eq!(server.push("score", &tags, &(0,)).unwrap(), 0);
}

/// The backlog is bounded in bytes too: big pushes past
/// `broker_backlog_bytes` fail (naming the bound) while the count bound is
/// far off, and go through again once the broker has answered them.
#[tokio::test]
async fn pushes_past_the_backlogs_bytes_fail_with_broker_unavailable_until_answered() {
    const BYTES: usize = 100_000;
    let hub = MemoryHub::new();
    let server = ServerBuilder::new()
        .heartbeat(None)
        .broker(Arc::new(hub.broker()))
        .broker_backlog_bytes(BYTES)
        .start(Arc::new(TokioRuntime::current()));
    let tags = ["match-1".to_owned()];
    let big = "x".repeat(40_000);
    // Three are taken (the third past the bound: the check comes before
    // the payload is known); the fourth finds the bound passed.
    for n in 0..3 {
        assert_eq!(
            server.push("score", &tags, &(n, &big)).unwrap(),
            0,
            "push {n}"
        );
    }
    assert!(server.broker_backlog_bytes() >= BYTES);
    let err = server.push("score", &tags, &(3, &big)).unwrap_err();
    assert_eq!(err.code, ErrorCode::BrokerUnavailable, "{err}");
    assert!(err.message.contains("bytes"), "{err}");
    assert_eq!(server.broker_backlog_len(), 3, "the count bound is far off");
    until("the broker to answer them", || {
        server.broker_backlog_bytes() == 0
    })
    .await;
    assert_eq!(server.push("score", &tags, &(4, &big)).unwrap(), 0);
}

/// Topic changes do not count toward the publish backlog: a connection
/// subscribing many tags (a topic each) while the broker task has not run
/// leaves Publish and Push working.
#[tokio::test]
async fn subscription_traffic_does_not_take_the_publish_backlog() {
    const BACKLOG: usize = 2;
    let hub = MemoryHub::new();
    let server = ServerBuilder::new()
        .heartbeat(None)
        .broker(Arc::new(hub.broker()))
        .broker_backlog(BACKLOG)
        .start(Arc::new(TokioRuntime::current()));
    let (peer, _out) = connect(&server).await;
    until("the connection is open", || server.connection_count() == 1).await;
    let tags: Vec<String> = (0..100).map(|t| format!("t{t}")).collect();
    let subscribe = serde_json::json!({"id": "s", "type": "subscribe", "event": "e", "tags": tags});
    peer.unbounded_send(rtm_driver::rt::Incoming::Text(subscribe.to_string().into()))
        .unwrap();
    until("the 100 topics to be wanted", || {
        server.broker_topics().len() == 100
    })
    .await;
    assert_eq!(
        server.broker_backlog_len(),
        0,
        "topic changes are not publishes"
    );
    let tags = ["t1".to_owned()];
    assert!(server.push("e", &tags, &(1,)).is_ok());
}

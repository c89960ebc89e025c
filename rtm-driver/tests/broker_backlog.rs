//! The broker backlog bound, at its edge. On a current-thread runtime that
//! does not yield, the driver's broker task cannot take commands, so exactly
//! `broker_backlog` of them wait, and the next push is refused.
mod common;

use std::sync::Arc;

use common::until;
use rtm_core::broker::MemoryHub;
use rtm_core::ErrorCode;
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

//! A real Prometheus scrapes `rtm-fixture --metrics-listen`: known traffic
//! (calls, broadcasts, a subscription fed by a second server through Redis,
//! one slow consumer, one Redis restart) is driven at the fixture, and the
//! numbers are read back through Prometheus' HTTP query API, as an
//! operator's dashboard would read them.
//!
//! Needs the `prometheus` binary (Debian's package `prometheus`, which
//! `.ci/run` installs) and `redis-server`; fails saying so without them.
#![cfg(feature = "metrics")]
mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::fixture_on;
use conformance::prometheus::Prometheus;
use conformance::raw_tcp::RawPeer;
use conformance::{Adapter, RawConn};
use rtm_redis::testing::{free_port, RedisServer};
use serde_json::json;

/// Calls of `echo` driven.
const CALLS: usize = 250;
/// Broadcasts, each reaching every connection.
const BROADCASTS: usize = 20;
/// Connections that only listen to the broadcasts.
const LISTENERS: usize = 3;
/// Pushes from a second server, through Redis, to a subscriber here.
const PUSHES: usize = 5;
/// How long a number may take to show in Prometheus (1 s scrapes).
const SHOW_WITHIN: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_prometheus_reads_the_counts_of_known_traffic() {
    let mut redis = RedisServer::start().unwrap_or_else(|e| panic!("{e}"));
    let metrics: SocketAddr = format!("127.0.0.1:{}", free_port().unwrap())
        .parse()
        .unwrap();
    let fixture = fixture_on(
        Adapter::Tokio,
        &[
            "--redis",
            &redis.url(),
            "--metrics-listen",
            &metrics.to_string(),
        ],
    );
    // A second server of the cluster, not scraped: it pushes to ours.
    let other = fixture_on(Adapter::Tokio, &["--redis", &redis.url()]);
    let mut prometheus = Prometheus::start(metrics);
    prometheus.ready().await;

    // Calls.
    let mut caller = RawConn::connect(fixture.url()).await.unwrap();
    for n in 0..CALLS {
        assert_eq!(caller.call_ok("echo", json!([n])).await.unwrap(), json!(n));
    }
    assert_eq!(
        caller
            .call_err("fail", json!(["on purpose"]))
            .await
            .unwrap()["code"],
        json!("rtm/handler-error")
    );

    // Broadcasts, to the caller and the listeners.
    let mut listeners = Vec::new();
    for _ in 0..LISTENERS {
        let mut listener = RawConn::connect(fixture.url()).await.unwrap();
        // Served once, so registered before the broadcasts.
        listener.call_ok("echo", json!(["hi"])).await.unwrap();
        listeners.push(listener);
    }
    for n in 0..BROADCASTS {
        caller.call_ok("broadcast", json!([n])).await.unwrap();
    }
    for conn in std::iter::once(&mut caller).chain(listeners.iter_mut()) {
        for _ in 0..BROADCASTS {
            conn.next_event().await.unwrap();
        }
    }
    // Pushes from the other server, through Redis, to a subscriber here.
    caller.subscribe("score", &["m1"]).await.unwrap();
    let mut pusher = RawConn::connect(other.url()).await.unwrap();
    for n in 0..PUSHES {
        pusher
            .call_ok("push", json!(["score", ["m1"], n]))
            .await
            .unwrap();
        assert_eq!(caller.next_event().await.unwrap()["data"], json!([n]));
    }
    pusher.close().await;

    // The listeners leave (a close frame), so only the stalled one below
    // stops reading.
    for listener in listeners {
        listener.close().await;
    }
    let started = Instant::now();
    while caller.call_ok("count", json!([])).await.unwrap() != json!(1) {
        assert!(
            started.elapsed() < SHOW_WITHIN,
            "the listeners did not leave"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // One slow consumer: a peer that stops reading while 400 KB events go out.
    let addr: SocketAddr = format!("127.0.0.1:{}", fixture.port()).parse().unwrap();
    let _stalled = RawPeer::upgrade_with_window(addr, "/", 4096).await;
    let big = "b".repeat(400_000);
    let mut big_broadcasts = 0usize;
    let started = Instant::now();
    loop {
        let connections = caller.call_ok("count", json!([])).await.unwrap();
        // Registered (the 101 goes before the server counts it), then closed.
        if big_broadcasts > 0 && connections == json!(1) {
            break;
        }
        assert!(
            started.elapsed() < SHOW_WITHIN,
            "the stalled reader was not closed"
        );
        if connections == json!(2) {
            caller.call_ok("broadcast", json!([big])).await.unwrap();
            big_broadcasts += 1;
        }
    }

    // One Redis restart.
    prometheus.shows("rtm_broker_up", 1.0).await;
    redis.kill();
    prometheus.shows("rtm_broker_up", 0.0).await;
    redis.restart().unwrap();
    prometheus.shows("rtm_broker_up", 1.0).await;

    let broadcasts = (BROADCASTS + big_broadcasts) as f64;
    let events_sent = format!(
        r#"rtm_frames_sent_total{{kind="event"}} >= bool {}"#,
        BROADCASTS * (1 + LISTENERS) + PUSHES
    );
    // The caller's CALLS echoes and each listener's one.
    let echoes = (CALLS + LISTENERS) as f64;
    for (query, want) in [
        (
            r#"rtm_invocations_total{function="echo",outcome="ok"}"#,
            echoes,
        ),
        (
            r#"rtm_invocations_total{function="fail",outcome="error"}"#,
            1.0,
        ),
        (
            r#"rtm_invocations_total{function="broadcast",outcome="ok"}"#,
            broadcasts,
        ),
        (
            r#"rtm_invocation_duration_seconds_count{function="echo"}"#,
            echoes,
        ),
        (r#"rtm_sends_total{kind="emit"}"#, broadcasts),
        (r#"rtm_slow_consumer_closes_total"#, 1.0),
        (
            r#"rtm_connections_closed_total{code="1013",by="server"}"#,
            1.0,
        ),
        (r#"rtm_broker_downs_total"#, 1.0),
        (r#"rtm_connections_opened_total"#, (2 + LISTENERS) as f64),
        // tungstenite's close(None): a close frame without a code.
        (
            r#"rtm_connections_closed_total{code="1005",by="peer"}"#,
            LISTENERS as f64,
        ),
        (r#"rtm_connections{state="authenticated"}"#, 1.0),
        (r#"rtm_invocations_in_flight"#, 0.0),
        (r#"rtm_subscribes_total{result="ok"}"#, 1.0),
        (r#"rtm_subscriptions"#, 1.0),
        (r#"rtm_broker_topics"#, 1.0),
        (r#"rtm_broker_messages_total"#, PUSHES as f64),
        (r#"rtm_broker_deliveries_total"#, PUSHES as f64),
        (r#"rtm_broker_lag_seconds_count"#, PUSHES as f64),
        (r#"rtm_redis_reconnects_total"#, 1.0),
        (r#"rtm_redis_errors_total{op="connection"}"#, 1.0),
        // Every frame a peer sent here was a call, and had its reply.
        (
            r#"rtm_frames_received_total - ignoring(kind) rtm_frames_sent_total{kind="reply"}"#,
            0.0,
        ),
        (r#"rtm_received_bytes_total > bool 1000"#, 1.0),
        // At least every broadcast to every connection and every push.
        (events_sent.as_str(), 1.0),
    ] {
        prometheus.shows(query, want).await;
    }
    // Histograms are histograms: buckets, not quantiles.
    assert!(
        prometheus
            .value(r#"rtm_invocation_duration_seconds_bucket{function="echo",le="+Inf"}"#)
            .await
            == Some(echoes)
    );
}

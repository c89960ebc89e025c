//! What the broker records through the `metrics` facade (feature
//! `metrics`), read back from an in-memory recorder, against a real
//! redis-server that is killed and restarted.
#![cfg(feature = "metrics")]

mod common;

use std::collections::HashMap;

use common::*;
use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use rtm_broker::{Broker, BrokerError};
use rtm_core::Topic;
use rtm_redis::testing::RedisServer;
use rtm_redis::RedisBroker;

/// Every counter by `name{labels}`, and every histogram's samples, drained
/// from the recorder in one snapshot.
fn recorded(recorder: &DebuggingRecorder) -> (HashMap<String, u64>, HashMap<String, Vec<f64>>) {
    let mut counters = HashMap::new();
    let mut histograms = HashMap::new();
    for (key, _, _, value) in recorder.snapshotter().snapshot().into_vec() {
        let key = key.key();
        let labels: Vec<String> = key
            .labels()
            .map(|l| format!("{}={}", l.key(), l.value()))
            .collect();
        let id = format!("{}{{{}}}", key.name(), labels.join(","));
        match value {
            DebugValue::Counter(n) => {
                counters.insert(id, n);
            }
            DebugValue::Histogram(values) => {
                histograms.insert(id, values.into_iter().map(|v| v.into_inner()).collect());
            }
            DebugValue::Gauge(_) => {}
        }
    }
    (counters, histograms)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishes_errors_and_reconnects_are_counted_across_a_redis_restart() {
    let mut server = RedisServer::start().unwrap_or_else(|e| panic!("{e}"));
    let ns = unique_ns("metrics");
    let recorder = DebuggingRecorder::new();
    let config = fast_config(&server.url(), &ns, "a").with_metrics_prefix("t_");
    // The handles are registered when the broker is made.
    let broker = metrics::with_local_recorder(&recorder, || {
        RedisBroker::new(config, rtm_redis::TokioRuntime::current()).unwrap()
    });
    let (sink, mut events) = capture();
    broker.start(sink).await.unwrap();
    events.wait_up();
    let topic = Topic::user(&ns, "alice");
    for n in 0..3 {
        broker.publish(&topic, format!("{n}").into()).await.unwrap();
    }

    server.kill();
    events.wait_down();
    assert!(matches!(
        broker.publish(&topic, "while down".into()).await,
        Err(BrokerError::Unavailable { .. })
    ));
    server.restart().unwrap();
    events.wait_up();
    broker.publish(&topic, "after".into()).await.unwrap();

    let (counters, histograms) = recorded(&recorder);
    let counter = |id: &str| {
        *counters
            .get(id)
            .unwrap_or_else(|| panic!("no {id} in {counters:?}"))
    };
    assert_eq!(counter("t_redis_published_total{}"), 4);
    assert_eq!(counter("t_redis_reconnects_total{}"), 1);
    assert_eq!(counter("t_redis_errors_total{op=publish}"), 1);
    // The live connection was lost once (reconnecting may have failed
    // meanwhile, counted as `connect`).
    assert_eq!(counter("t_redis_errors_total{op=connection}"), 1);
    assert_eq!(counter("t_redis_errors_total{op=subscribe}"), 0);
    let durations = &histograms["t_redis_publish_duration_seconds{}"];
    // One per pipeline: each publish above was awaited alone.
    assert_eq!(durations.len(), 4, "{durations:?}");
    assert!(
        durations.iter().all(|s| (0.0..5.0).contains(s)),
        "{durations:?}"
    );
}

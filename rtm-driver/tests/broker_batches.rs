//! Topic changes reach the broker in batches: the topics that wait together
//! go in one `subscribe_many` (a round trip each would cap sign-ins at one
//! per round trip to Redis), and a broker that answers for fewer topics
//! than it was given fails the rest, never confirms them.
mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{connect, until};
use rtm_core::Topic;
use rtm_driver::broker::{
    BoxFuture, Broker, BrokerError, BrokerSink, BrokerState, MemoryBroker, MemoryHub,
};
use rtm_driver::rt::{Incoming, Outgoing};
use rtm_driver::{ServerBuilder, ServerHandle};
use rtm_runtime::TokioRuntime;
use serde_json::{json, Value};

/// A `MemoryBroker` that records the batches it is handed, and answers
/// for at most `answer` topics of each (all when `None`).
struct Recording {
    _hub: MemoryHub,
    inner: MemoryBroker,
    batches: Mutex<Vec<Vec<Topic>>>,
    answer: Option<usize>,
}

impl Broker for Recording {
    fn start(&self, sink: BrokerSink) -> BoxFuture<'_, Result<(), BrokerError>> {
        self.inner.start(sink)
    }
    fn publish(
        &self,
        topic: &Topic,
        payload: bytes::Bytes,
    ) -> BoxFuture<'_, Result<(), BrokerError>> {
        self.inner.publish(topic, payload)
    }
    fn subscribe(&self, topic: &Topic) -> BoxFuture<'_, Result<(), BrokerError>> {
        self.inner.subscribe(topic)
    }
    fn unsubscribe(&self, topic: &Topic) -> BoxFuture<'_, Result<(), BrokerError>> {
        self.inner.unsubscribe(topic)
    }
    fn subscribe_many<'a>(
        &'a self,
        topics: &'a [Topic],
    ) -> BoxFuture<'a, Vec<Result<(), BrokerError>>> {
        self.batches.lock().unwrap().push(topics.to_vec());
        Box::pin(async move {
            let mut results = self.inner.subscribe_many(topics).await;
            results.truncate(self.answer.unwrap_or(usize::MAX));
            results
        })
    }
    fn state(&self) -> BrokerState {
        self.inner.state()
    }
}

fn recording(answer: Option<usize>) -> Arc<Recording> {
    let hub = MemoryHub::new();
    Arc::new(Recording {
        inner: hub.broker(),
        _hub: hub,
        batches: Mutex::new(Vec::new()),
        answer,
    })
}

/// A server on this runtime with `broker`, once the broker is up.
async fn started(broker: Arc<Recording>) -> ServerHandle {
    let server = ServerBuilder::new()
        .heartbeat(None)
        .broker(broker)
        .start(Arc::new(TokioRuntime::current()));
    until("the broker is up", || {
        server.broker_state() == Some(BrokerState::Up)
    })
    .await;
    server
}

async fn reply(out: &mut tokio::sync::mpsc::UnboundedReceiver<Outgoing>) -> Value {
    match tokio::time::timeout(Duration::from_secs(5), out.recv()).await {
        Ok(Some(Outgoing::Text(text))) => serde_json::from_slice(&text).unwrap(),
        other => panic!("no reply: {other:?}"),
    }
}

fn subscribe(id: &str, tags: &[String]) -> Incoming {
    let request = json!({"id": id, "type": "subscribe", "event": "score", "tags": tags});
    Incoming::Text(request.to_string().into())
}

#[tokio::test]
async fn the_topics_that_wait_together_reach_the_broker_in_one_batch() {
    let broker = recording(None);
    let server = started(broker.clone()).await;
    let (peer, mut out) = connect(&server).await;
    let tags: Vec<String> = (0..100).map(|t| format!("match-{t}")).collect();
    peer.unbounded_send(subscribe("s", &tags)).unwrap();
    let ack = reply(&mut out).await;
    assert_eq!(ack["id"], "s");
    assert!(ack["data"]["error"].is_null(), "{ack}");
    let batches = broker.batches.lock().unwrap().clone();
    assert_eq!(batches.len(), 1, "one batch: {batches:?}");
    assert_eq!(batches[0].len(), 100);
}

#[tokio::test]
async fn topics_a_broker_gives_no_answer_for_are_not_confirmed() {
    // Answers for the first of each batch only.
    let broker = recording(Some(1));
    let server = started(broker.clone()).await;
    let (peer, mut out) = connect(&server).await;
    let one = vec!["match-1".to_owned()];
    peer.unbounded_send(subscribe("one", &one)).unwrap();
    let ack = reply(&mut out).await;
    assert!(ack["data"]["error"].is_null(), "{ack}");

    let two = vec!["match-2".to_owned(), "match-3".to_owned()];
    peer.unbounded_send(subscribe("two", &two)).unwrap();
    let ack = reply(&mut out).await;
    assert_eq!(ack["id"], "two");
    assert_eq!(
        ack["data"]["error"]["code"], "rtm/broker-unavailable",
        "{ack}"
    );
    assert!(server.broker_errors() >= 1);
}

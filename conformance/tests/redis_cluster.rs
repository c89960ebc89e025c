//! Two `rtm-fixture --redis URL --namespace NS` processes sharing one Redis:
//! Publish and Push cross servers exactly once per connection, keep order per
//! publisher, stay inside their namespace, and leave no topics behind; one
//! cluster mixes servers on tokio, async-std and smol.
//!
//! Redis comes from `RTM_REDIS_URL`, else a private `redis-server` per test.
//! A server subscribes to broker topics asynchronously, so before sending
//! across servers a test waits (bounded) until Redis shows the subscriptions.

mod common;

use common::{eventually, fixture, fixture_on};
use conformance::{Adapter, Fixture, RawConn};
use rtm_core::Topic;
use rtm_redis::testing::TestRedis;
use serde_json::{json, Value};

/// One Redis and a namespace unique to the test.
struct Cluster {
    redis: TestRedis,
    namespace: String,
    client: redis::Client,
}

impl Cluster {
    fn new(test: &str) -> Cluster {
        let redis = TestRedis::get().unwrap_or_else(|e| panic!("{e}"));
        let client = redis::Client::open(redis.url().as_str()).unwrap();
        let namespace = format!("conf-{}-{test}", std::process::id());
        Cluster {
            redis,
            namespace,
            client,
        }
    }

    /// A fixture server in namespace `namespace` on this Redis.
    fn server_in(&self, namespace: &str, auth: bool) -> Fixture {
        let url = self.redis.url();
        let mut flags = vec!["--redis", &url, "--namespace", namespace];
        if auth {
            flags.push("--auth");
        }
        fixture(&flags)
    }

    fn server(&self, auth: bool) -> Fixture {
        self.server_in(&self.namespace, auth)
    }

    /// A fixture server on `runtime` in this cluster's namespace, with `--auth`.
    fn server_on(&self, runtime: Adapter) -> Fixture {
        let url = self.redis.url();
        let flags = ["--redis", &url, "--namespace", &self.namespace, "--auth"];
        fixture_on(runtime, &flags)
    }

    /// How many servers are subscribed to `topic` (PUBSUB NUMSUB).
    fn numsub(&self, topic: &Topic) -> u64 {
        let mut con = self.client.get_connection().unwrap();
        let counts: Vec<(String, u64)> = redis::cmd("PUBSUB")
            .arg("NUMSUB")
            .arg(topic.as_str())
            .query(&mut con)
            .unwrap();
        counts.first().map_or(0, |(_, n)| *n)
    }

    /// Waits until exactly `servers` servers are subscribed to `topic`.
    async fn wait_subscribed(&self, topic: Topic, servers: u64) {
        eventually(&format!("{servers} subscriber(s) of {topic}"), || {
            self.numsub(&topic) == servers
        })
        .await;
    }

    fn user_topic(&self, user: &str) -> Topic {
        Topic::user(&self.namespace, user)
    }

    fn push_topic(&self, event: &str, tag: &str) -> Topic {
        Topic::push(&self.namespace, event, tag)
    }

    /// `PUBSUB CHANNELS {namespace}:*`, sorted.
    fn channels(&self) -> Vec<String> {
        let mut con = self.client.get_connection().unwrap();
        let mut names: Vec<String> = redis::cmd("PUBSUB")
            .arg("CHANNELS")
            .arg(format!("{}:*", self.namespace))
            .query(&mut con)
            .unwrap();
        names.sort();
        names
    }
}

async fn user(fixture: &Fixture, name: &str) -> RawConn {
    RawConn::connect_as(fixture.url(), name).await.unwrap()
}

async fn conn(fixture: &Fixture) -> RawConn {
    RawConn::connect(fixture.url()).await.unwrap()
}

/// Each connection got `event` exactly once and nothing else.
async fn each_got_once(conns: &mut [&mut RawConn], event: &Value) {
    for (n, c) in conns.iter_mut().enumerate() {
        let got = c
            .next_event()
            .await
            .unwrap_or_else(|e| panic!("conn {n}: {e}"));
        assert_eq!(&got, event, "conn {n}");
        c.expect_nothing()
            .await
            .unwrap_or_else(|e| panic!("conn {n}: {e}"));
    }
}

#[tokio::test]
async fn publish_from_either_server_reaches_each_connection_of_the_user_once() {
    let cluster = Cluster::new("publish");
    let (a, b) = (cluster.server(true), cluster.server(true));
    let mut alice_a = user(&a, "alice").await;
    let mut alice_b1 = user(&b, "alice").await;
    let mut alice_b2 = user(&b, "alice").await;
    let mut bob_a = user(&a, "bob").await;
    let mut carol_b = user(&b, "carol").await;
    cluster
        .wait_subscribed(cluster.user_topic("alice"), 2)
        .await;

    let sent = bob_a
        .call_ok("publish", json!(["alice", "dm", "from a"]))
        .await;
    assert_eq!(sent.unwrap(), Value::Null);
    let event = json!({"event": "dm", "data": ["from a"]});
    each_got_once(&mut [&mut alice_a, &mut alice_b1, &mut alice_b2], &event).await;

    let sent = carol_b
        .call_ok("publish", json!(["alice", "dm", "from b"]))
        .await;
    assert_eq!(sent.unwrap(), Value::Null);
    let event = json!({"event": "dm", "data": ["from b"]});
    each_got_once(&mut [&mut alice_a, &mut alice_b1, &mut alice_b2], &event).await;

    bob_a.expect_nothing().await.unwrap();
    carol_b.expect_nothing().await.unwrap();
}

#[tokio::test]
async fn publish_reaches_each_connection_once_across_servers_on_tokio_async_std_and_smol() {
    let cluster = Cluster::new("runtimes");
    let servers: Vec<Fixture> = Adapter::ALL
        .iter()
        .map(|runtime| cluster.server_on(*runtime))
        .collect();
    let mut alices = Vec::new();
    for server in &servers {
        alices.push(user(server, "alice").await);
    }
    cluster
        .wait_subscribed(cluster.user_topic("alice"), servers.len() as u64)
        .await;
    for (n, server) in servers.iter().enumerate() {
        let mut bob = user(server, "bob").await;
        let sent = bob.call_ok("publish", json!(["alice", "dm", n])).await;
        assert_eq!(sent.unwrap(), Value::Null);
        let event = json!({"event": "dm", "data": [n]});
        each_got_once(&mut alices.iter_mut().collect::<Vec<_>>(), &event).await;
        bob.expect_nothing().await.unwrap();
    }
}

#[tokio::test]
async fn push_across_servers_reaches_each_subscription_once_even_with_several_matching_tags() {
    let cluster = Cluster::new("push");
    let (a, b) = (cluster.server(false), cluster.server(false));
    let mut s_a = conn(&a).await;
    let mut s_b1 = conn(&b).await;
    let mut s_b2 = conn(&b).await;
    let mut pusher_a = conn(&a).await;
    let mut pusher_b = conn(&b).await;
    s_a.subscribe("score", &["a", "b"]).await.unwrap();
    s_b1.subscribe("score", &["a", "b", "c"]).await.unwrap();
    s_b2.subscribe("score", &["c"]).await.unwrap();
    cluster
        .wait_subscribed(cluster.push_topic("score", "a"), 2)
        .await;
    cluster
        .wait_subscribed(cluster.push_topic("score", "b"), 2)
        .await;
    cluster
        .wait_subscribed(cluster.push_topic("score", "c"), 1)
        .await;

    for (pusher, n) in [(&mut pusher_a, 1), (&mut pusher_b, 2)] {
        let pushed = pusher
            .call_ok("push", json!(["score", ["a", "b", "c"], n]))
            .await;
        assert_eq!(pushed.unwrap(), Value::Null);
        let event = json!({"event": "score", "data": [n]});
        each_got_once(&mut [&mut s_a, &mut s_b1, &mut s_b2], &event).await;
    }
    pusher_a.expect_nothing().await.unwrap();
    pusher_b.expect_nothing().await.unwrap();
}

/// The acknowledgement of a subscribe promises delivery: a Push sent from
/// another server the moment the `true` reply arrives reaches the
/// subscriber, for 10, 50 and 128 tags (the default per-request limit),
/// ten times each. Also for auth: a Publish right on the auth reply.
#[tokio::test]
async fn a_push_sent_right_on_the_subscribe_acknowledgement_is_never_lost() {
    let cluster = Cluster::new("ack");
    let (a, b) = (cluster.server(true), cluster.server(true));
    let mut pusher = user(&a, "pusher").await;
    let mut lost = Vec::new();
    for tags in [10usize, 50, 128] {
        for trial in 0..10 {
            let event = format!("e{tags}-{trial}");
            let names: Vec<String> = (0..tags).map(|t| format!("t{t}")).collect();
            let mut subscriber = user(&b, &format!("s{tags}-{trial}")).await;
            let id = format!("sub-{tags}-{trial}");
            let request = json!({"id": id, "type": "subscribe", "event": event, "tags": names});
            subscriber.send_json(&request).await.unwrap();
            assert_eq!(
                subscriber.reply_to(&id).await.unwrap(),
                json!({"id": id, "data": true})
            );
            // Right on the acknowledgement, from the other server.
            let last = names.last().unwrap();
            pusher
                .call_ok("push", json!([event, [last], trial]))
                .await
                .unwrap();
            match subscriber.next_event().await {
                Ok(got) => assert_eq!(got, json!({"event": event, "data": [trial]})),
                Err(_) => lost.push((tags, trial)),
            }
            subscriber.close().await;
        }
    }
    // The user topic: a Publish sent right on the auth reply arrives too.
    for trial in 0..10 {
        let name = format!("fresh{trial}");
        let mut fresh = user(&b, &name).await;
        pusher
            .call_ok("publish", json!([name, "hello", trial]))
            .await
            .unwrap();
        if fresh.next_event().await.is_err() {
            lost.push((0, trial));
        }
    }
    assert!(lost.is_empty(), "lost (tags, trial): {lost:?}");
}

/// Bytes written to Redis by someone else reach no client unless they are
/// an event: invalid UTF-8, plain text, an object without `data` are
/// dropped (and logged), and the connection keeps working.
#[tokio::test]
async fn broker_messages_that_are_not_events_are_dropped_and_the_user_keeps_its_connection() {
    let cluster = Cluster::new("junk");
    let a = cluster.server(true);
    let mut alice = user(&a, "alice").await;
    let topic = cluster.user_topic("alice");
    cluster.wait_subscribed(topic.clone(), 1).await;
    let header = b"{\"v\":1,\"origin\":\"intruder\",\"seq\":1}\n".to_vec();
    let bodies: [&[u8]; 3] = [
        b"{\"event\":\"dm\",\"data\":[\"\xff\xfe\"]}",
        b"not json at all",
        b"{\"event\":\"dm\"}",
    ];
    let mut con = cluster.client.get_connection().unwrap();
    for body in bodies {
        let mut payload = header.clone();
        payload.extend_from_slice(body);
        let _: i64 = redis::cmd("PUBLISH")
            .arg(topic.as_str())
            .arg(payload)
            .query(&mut con)
            .unwrap();
    }
    let mut good = header.clone();
    good.extend_from_slice(b"{\"event\":\"dm\",\"data\":[\"real\"]}");
    let _: i64 = redis::cmd("PUBLISH")
        .arg(topic.as_str())
        .arg(good)
        .query(&mut con)
        .unwrap();
    assert_eq!(
        alice.next_event().await.unwrap(),
        json!({"event": "dm", "data": ["real"]}),
        "only the event got through"
    );
    assert_eq!(alice.call_ok("echo", json!([1])).await.unwrap(), json!(1));
    assert!(
        a.stderr().contains("broker message dropped"),
        "{}",
        a.stderr()
    );
}

#[tokio::test]
async fn publishes_of_one_publisher_arrive_in_order() {
    let cluster = Cluster::new("order");
    let (a, b) = (cluster.server(true), cluster.server(true));
    let mut alice_b = user(&b, "alice").await;
    let mut bob_a = user(&a, "bob").await;
    cluster
        .wait_subscribed(cluster.user_topic("alice"), 1)
        .await;

    for n in 0..200 {
        bob_a
            .call_ok("publish", json!(["alice", "n", n]))
            .await
            .unwrap();
    }
    for n in 0..200 {
        let got = alice_b.next_event().await.unwrap();
        assert_eq!(got, json!({"event": "n", "data": [n]}), "event {n}");
    }
    alice_b.expect_nothing().await.unwrap();
}

#[tokio::test]
async fn different_namespaces_do_not_see_each_other() {
    let cluster = Cluster::new("ns1");
    let other_ns = format!("{}-other", cluster.namespace);
    let a = cluster.server(true);
    let b_other = cluster.server_in(&other_ns, true);
    let mut alice_a = user(&a, "alice").await;
    let mut bob_a = user(&a, "bob").await;
    let mut alice_other = user(&b_other, "alice").await;
    let mut carol_other = user(&b_other, "carol").await;
    alice_other.subscribe("score", &["t"]).await.unwrap();
    // The other namespace's server listens on its own topics...
    cluster
        .wait_subscribed(Topic::user(&other_ns, "alice"), 1)
        .await;
    cluster
        .wait_subscribed(Topic::push(&other_ns, "score", "t"), 1)
        .await;

    bob_a
        .call_ok("publish", json!(["alice", "dm", "ns1"]))
        .await
        .unwrap();
    bob_a
        .call_ok("push", json!(["score", ["t"], "ns1"]))
        .await
        .unwrap();
    each_got_once(
        &mut [&mut alice_a],
        &json!({"event": "dm", "data": ["ns1"]}),
    )
    .await;
    alice_other.expect_nothing().await.unwrap();

    // ...and does receive what is sent in it.
    carol_other
        .call_ok("publish", json!(["alice", "dm", "other"]))
        .await
        .unwrap();
    let event = json!({"event": "dm", "data": ["other"]});
    each_got_once(&mut [&mut alice_other], &event).await;
    alice_a.expect_nothing().await.unwrap();
}

#[tokio::test]
async fn after_every_client_closes_only_control_topics_remain() {
    let cluster = Cluster::new("hygiene");
    let (a, b) = (cluster.server(true), cluster.server(true));
    let mut clients = Vec::new();
    for (server, name) in [(&a, "alice"), (&b, "alice"), (&b, "bob")] {
        let mut c = user(server, name).await;
        c.subscribe("score", &["x", "y"]).await.unwrap();
        clients.push(c);
    }
    cluster
        .wait_subscribed(cluster.user_topic("alice"), 2)
        .await;
    cluster.wait_subscribed(cluster.user_topic("bob"), 1).await;
    cluster
        .wait_subscribed(cluster.push_topic("score", "y"), 2)
        .await;

    for c in clients {
        c.close().await;
    }
    let control = format!("{}:ctl:", cluster.namespace);
    eventually("only control topics left", || {
        cluster.channels().iter().all(|t| t.starts_with(&control))
    })
    .await;
    let left = cluster.channels();
    assert!(
        left.len() <= 2,
        "at most one control topic per server: {left:?}"
    );
}

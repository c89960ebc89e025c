//! Issue 17 point 1: the name is the password, so a name in use cannot be
//! taken. Raw sign-ins, as a script would send them.
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::{chat, refused, serve, served, Raw};
use rtm_tokio::Server;

/// A key as the server hands them out: 32 hex digits.
fn key_of(reply: &Value) -> String {
    assert!(reply["data"]["user"].is_string(), "{reply}");
    let key = reply["data"]["key"].as_str().unwrap_or_default().to_owned();
    assert!(chat::names::valid_key(&key), "{reply}");
    key
}

#[tokio::test]
async fn a_name_in_use_is_refused_without_its_key_and_signs_in_with_it() {
    let chat = served().await;
    let addr = chat.addr;
    let (_alice, reply) = Raw::sign_in(addr, json!(["alice"])).await;
    let key = key_of(&reply);
    assert_eq!(reply["data"], json!({ "user": "alice", "key": key }));

    // A raw auth with the name alone, or a wrong key, or a malformed one.
    let wrong = "0".repeat(32);
    for data in [
        json!(["alice"]),
        json!(["alice", wrong]),
        json!(["alice", "not-a-key"]),
        json!([["alice", wrong]]),
    ] {
        let (mut raw, reply) = Raw::sign_in(addr, data.clone()).await;
        refused(&mut raw, &reply, "name-taken: \"alice\" is in use").await;
    }

    // Her other tab: `[name, key]`, or `[[name, key]]` as one auth value.
    for data in [json!(["alice", key]), json!([["alice", key]])] {
        let (_tab, reply) = Raw::sign_in(addr, data).await;
        assert_eq!(reply["data"], json!({ "user": "alice", "key": key }));
    }
    // Another name is not affected, and gets its own key.
    let (_bob, reply) = Raw::sign_in(addr, json!(["bob"])).await;
    assert_ne!(key_of(&reply), key);
}

#[tokio::test]
async fn a_name_stays_bound_while_held_and_for_the_hold_after_its_last_tab_left() {
    const HOLD: Duration = Duration::from_millis(1500);
    let config = chat::ChatConfig {
        name_hold: HOLD,
        ..Default::default()
    };
    let chat = serve(Server::builder(), config, 256, Default::default()).await;
    let addr = chat.addr;
    let (alice, reply) = Raw::sign_in(addr, json!(["alice"])).await;
    let key = key_of(&reply);

    // Held by a connection: bound past several holds (refreshed meanwhile).
    tokio::time::sleep(HOLD * 2).await;
    let (mut raw, reply) = Raw::sign_in(addr, json!(["alice"])).await;
    refused(&mut raw, &reply, "name-taken:").await;

    // She leaves: still bound for the hold.
    drop(alice);
    let left = Instant::now();
    tokio::time::sleep(Duration::from_millis(400)).await;
    let (mut raw, reply) = Raw::sign_in(addr, json!(["alice"])).await;
    refused(&mut raw, &reply, "name-taken:").await;
    // Near its end, too (a refused sign-in does not extend it).
    tokio::time::sleep(Duration::from_millis(1300).saturating_sub(left.elapsed())).await;
    let (mut raw, reply) = Raw::sign_in(addr, json!(["alice"])).await;
    refused(&mut raw, &reply, "name-taken:").await;

    // After it (plus the presence interval in which her departure is
    // seen, plus a margin), the name is free: the first sign-in binds it to
    // the key it brings (her other browser kept it: it works again)...
    tokio::time::sleep((HOLD + Duration::from_millis(700)).saturating_sub(left.elapsed())).await;
    let (_again, reply) = Raw::sign_in(addr, json!(["alice", key])).await;
    assert_eq!(
        key_of(&reply),
        key,
        "a free name is bound to the key brought"
    );
    // ... and it is hers again: without the key, refused.
    let (mut raw, reply) = Raw::sign_in(addr, json!(["alice"])).await;
    refused(&mut raw, &reply, "name-taken:").await;
    println!(
        "name hold {HOLD:?}: refused 0.4 s and 1.3 s after leaving, free {:?} after",
        left.elapsed()
    );
}

/// Two chat servers on one Redis: a name taken on A is taken on B; its key
/// works on both; Redis holds the key's SHA-256, never the key.
#[tokio::test]
async fn a_name_taken_on_one_chat_server_is_taken_on_every_server_of_the_cluster() {
    let redis = rtm_redis::testing::TestRedis::get().unwrap();
    let url = redis.url();
    // One namespace per run: a shared Redis (RTM_REDIS_URL) keeps other runs' keys.
    let namespace = format!("chat-test-{}-{}", std::process::id(), rand_suffix());
    let server = |id: &str| {
        let config = rtm_redis::RedisBrokerConfig::new(&url, &namespace, id);
        let broker =
            rtm_redis::RedisBroker::new(config, rtm_tokio::TokioRuntime::current()).unwrap();
        let builder = Server::builder()
            .namespace(&namespace)
            .server_id(id)
            .broker(std::sync::Arc::new(broker));
        let config = chat::ChatConfig {
            names: chat::NameStore::redis(&url, &namespace).unwrap(),
            ..Default::default()
        };
        (builder, config)
    };
    let (builder, config) = server("a");
    let a = serve(builder, config, 256, Default::default()).await;
    let (builder, config) = server("b");
    let b = serve(builder, config, 256, Default::default()).await;

    let (_alice, reply) = Raw::sign_in(a.addr, json!(["alice"])).await;
    let key = key_of(&reply);
    let (mut raw, reply) = Raw::sign_in(b.addr, json!(["alice"])).await;
    refused(&mut raw, &reply, "name-taken: \"alice\" is in use").await;
    let (_tab, reply) = Raw::sign_in(b.addr, json!(["alice", key])).await;
    assert_eq!(reply["data"], json!({ "user": "alice", "key": key }));
    // The other way round.
    let (_bob, reply) = Raw::sign_in(b.addr, json!(["bob"])).await;
    key_of(&reply);
    let (mut raw, reply) = Raw::sign_in(a.addr, json!(["bob"])).await;
    refused(&mut raw, &reply, "name-taken: \"bob\" is in use").await;
    // A free name is bound to the key its first sign-in brings.
    let own = "0123456789abcdef0123456789abcdef";
    let (_carol, reply) = Raw::sign_in(a.addr, json!(["carol", own])).await;
    assert_eq!(key_of(&reply), own);
    let (mut raw, reply) = Raw::sign_in(b.addr, json!(["carol"])).await;
    refused(&mut raw, &reply, "name-taken: \"carol\" is in use").await;

    let mut conn = redis::Client::open(url.as_str())
        .unwrap()
        .get_connection()
        .unwrap();
    let stored: String = redis::cmd("GET")
        .arg(format!("{namespace}:name:alice"))
        .query(&mut conn)
        .unwrap();
    let hash: String = ring::digest::digest(&ring::digest::SHA256, key.as_bytes())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(stored, hash);
    let ttl: i64 = redis::cmd("PTTL")
        .arg(format!("{namespace}:name:alice"))
        .query(&mut conn)
        .unwrap();
    assert!(ttl > 0 && ttl <= 600_000, "expiry {ttl} ms");
}

/// A few random hex digits (for a namespace of one's own).
fn rand_suffix() -> String {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 4];
    ring::rand::SystemRandom::new().fill(&mut bytes).unwrap();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// While Redis does not answer, names cannot be checked: sign-ins are
/// refused (a name in use on another server could otherwise be taken), and
/// the names signed in stay; once it answers again, sign-ins work and the
/// names held here are bound again (Redis came back empty).
#[tokio::test]
async fn while_redis_is_down_sign_ins_are_refused_and_the_signed_in_stay() {
    const HOLD: Duration = Duration::from_millis(800);
    let mut redis = rtm_redis::testing::RedisServer::start().unwrap();
    let url = redis.url();
    let config = rtm_redis::RedisBrokerConfig::new(&url, "chat", "a");
    let broker = rtm_redis::RedisBroker::new(config, rtm_tokio::TokioRuntime::current()).unwrap();
    let builder = Server::builder()
        .namespace("chat")
        .broker(std::sync::Arc::new(broker));
    let config = chat::ChatConfig {
        names: chat::NameStore::redis(&url, "chat").unwrap(),
        name_hold: HOLD,
        ..Default::default()
    };
    let chat = serve(builder, config, 256, Default::default()).await;
    let (mut alice, reply) = Raw::sign_in(chat.addr, json!(["alice"])).await;
    let key = key_of(&reply);

    redis.kill();
    let (mut raw, reply) = Raw::sign_in(chat.addr, json!(["bob"])).await;
    refused(&mut raw, &reply, "names-unavailable:").await;
    let status = alice.invoke("status", json!([])).await;
    assert!(status["data"]["cluster"] == true, "{status}");

    redis.restart().unwrap();
    // Sign-ins work again (the connection to Redis is opened anew), and
    // alice's name is bound again by the next refresh (a quarter of the hold).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_bob, reply) = Raw::sign_in(chat.addr, json!(["bob"])).await;
        if reply["data"]["key"].is_string() {
            break;
        }
        assert!(Instant::now() < deadline, "{reply}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(HOLD).await;
    let (mut raw, reply) = Raw::sign_in(chat.addr, json!(["alice"])).await;
    refused(&mut raw, &reply, "name-taken:").await;
    let (_tab, reply) = Raw::sign_in(chat.addr, json!(["alice", key])).await;
    assert_eq!(reply["data"]["key"], json!(key));
}

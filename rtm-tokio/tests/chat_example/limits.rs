//! Issue 17 point 2 (one client flooding everyone: the rate limits, and no
//! reader closed by someone else's flood) and point 5 (throwaway names:
//! budgets of new conversations). The default budgets, as `main` uses them.
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tungstenite::Message;

use super::{many_sign_ins, refused, serve, served, Got, Raw};
use rtm_tokio::Server;

/// What a flood of calls got back.
#[derive(Debug, Default)]
struct Answers {
    ok: usize,
    too_many: usize,
    other: Vec<Value>,
}

/// Sends `calls` invokes of `function` with `data(i)` from `raw` without
/// waiting (pipelined), reading the replies meanwhile; all the replies.
async fn flood(
    raw: Raw,
    function: &str,
    calls: usize,
    data: impl Fn(usize) -> Value,
) -> (Raw, Answers) {
    let Raw {
        ws,
        received,
        next_id,
    } = raw;
    let (mut sink, mut stream) = ws.split();
    let frames: Vec<String> = (0..calls)
        .map(|i| {
            json!({"id": format!("f{i}"), "type": "invoke", "function": function, "data": data(i)})
                .to_string()
        })
        .collect();
    let writer = tokio::spawn(async move {
        for frame in frames {
            sink.feed(Message::text(frame)).await.unwrap();
        }
        sink.flush().await.unwrap();
        sink
    });
    let mut answers = Answers::default();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while answers.ok + answers.too_many + answers.other.len() < calls {
        let frame = tokio::time::timeout_at(deadline, stream.next())
            .await
            .expect("replies within 30 s")
            .expect("the flooder's socket stays open")
            .expect("the flooder's socket stays open");
        let Message::Text(text) = frame else {
            panic!("the flooder got {frame:?}");
        };
        let reply: Value = serde_json::from_str(&text).unwrap();
        if reply.get("event").is_some() {
            continue;
        }
        match reply["data"]["error"]["code"].as_str() {
            None => answers.ok += 1,
            Some("rtm/too-many-requests") => answers.too_many += 1,
            Some(_) => answers.other.push(reply),
        }
    }
    let sink = writer.await.unwrap();
    let ws = sink.reunite(stream).unwrap();
    (
        Raw {
            ws,
            received,
            next_id,
        },
        answers,
    )
}

/// Reads everything `raw` gets for `quiet` after the last frame: the
/// frames with their `event`, and whether the socket closed (with its code).
async fn drain(raw: &mut Raw, event: &str, quiet: Duration) -> (usize, Option<Option<u16>>) {
    let mut events = 0;
    loop {
        match raw.next(quiet).await {
            Got::Frame(frame) if frame["event"] == event => events += 1,
            Got::Frame(_) => {}
            Got::Closed(code) => return (events, Some(code)),
            Got::Quiet => return (events, None),
        }
    }
}

const FLOOD: usize = 1200;

/// The default per-user budget of messages: a burst of 20, then 5 a second.
fn budget(elapsed: Duration) -> usize {
    20 + (elapsed.as_secs_f64() * 5.0).ceil() as usize + 1
}

#[tokio::test]
async fn a_connection_flooding_a_room_is_refused_past_its_budget_and_closes_no_reader() {
    let chat = served().await;
    let reader = Raw::in_lobby(chat.addr, "reader").await;
    flood_is_refused_past_the_budget(&chat, reader, "say", "room-message", |i| {
        json!(["lobby", "x".repeat(2000), format!("m{i}")])
    })
    .await;
}

#[tokio::test]
async fn a_connection_flooding_one_user_with_dms_is_refused_past_its_budget_and_closes_no_one() {
    let chat = served().await;
    let (reader, _) = Raw::sign_in(chat.addr, json!(["reader"])).await;
    flood_is_refused_past_the_budget(&chat, reader, "dm", "dm", |i| {
        json!(["reader", "x".repeat(2000), format!("d{i}")])
    })
    .await;
}

/// `FLOOD` pipelined calls of `function` (2,000 characters each) from one
/// connection while `reader` reads its `event`s (as a page does): at most
/// the budget is sent, the rest refused with `rtm/too-many-requests`, the
/// reader gets every message sent and is not closed, and the flooder, still
/// connected, may send again once its budget is back.
async fn flood_is_refused_past_the_budget(
    chat: &super::Chat,
    mut reader: Raw,
    function: &str,
    event: &str,
    args: impl Fn(usize) -> Value,
) {
    let (flooder, _) = Raw::sign_in(chat.addr, json!(["flooder"])).await;
    let started = Instant::now();
    let flooding = async {
        let flooded = flood(flooder, function, FLOOD, &args);
        (flooded.await, started.elapsed())
    };
    let (((mut flooder, answers), answered), (events, closed)) =
        tokio::join!(flooding, drain(&mut reader, event, Duration::from_secs(2)));
    let elapsed = started.elapsed();
    assert!(answers.other.is_empty(), "{:?}", answers.other);
    assert!(answers.ok <= budget(elapsed), "{answers:?} in {elapsed:?}");
    assert!(answers.too_many >= FLOOD - budget(elapsed), "{answers:?}");
    assert_eq!(closed, None, "the reader was closed");
    assert_eq!(events, answers.ok, "the reader got every message sent");
    println!(
        "{function} flood: {FLOOD} x 2,000 chars answered in {answered:?}: {} sent, {} refused; the reader got {} bytes",
        answers.ok, answers.too_many, reader.received
    );
    assert!(
        reader.received < budget(elapsed) * 2100 + 1000,
        "{} bytes",
        reader.received
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let reply = flooder.invoke(function, args(usize::MAX)).await;
    assert!(reply["data"]["ts"].is_u64(), "{reply}");
}

/// Sign-ins from one address: 30 at once, then one a second.
#[tokio::test]
async fn sign_ins_from_one_address_are_limited() {
    let chat = served().await;
    let started = Instant::now();
    let mut kept = Vec::new();
    for i in 0..30 {
        let (raw, reply) = Raw::sign_in(chat.addr, json!([format!("u{i}")])).await;
        assert!(reply["data"]["key"].is_string(), "sign-in {i}: {reply}");
        kept.push(raw);
    }
    let mut refusals = 0;
    for i in 30..40 {
        let (mut raw, reply) = Raw::sign_in(chat.addr, json!([format!("u{i}")])).await;
        if reply["data"] == false {
            refused(&mut raw, &reply, "sign-ins from this address: more than 30").await;
            refusals += 1;
        }
    }
    let elapsed = started.elapsed();
    assert!(
        refusals >= 10 - elapsed.as_secs() as usize - 1,
        "{refusals} of 10 refused in {elapsed:?}"
    );
}

/// 1,500 throwaway names each DM one victim: past the victim's budget of new
/// conversations they are refused; a friend's DM (an existing conversation)
/// still arrives at once.
#[tokio::test]
async fn throwaway_names_get_few_new_conversations_and_a_friends_dm_still_arrives() {
    const NAMES: usize = 1500;
    const AT_ONCE: usize = 50;
    let chat = serve(Server::builder(), many_sign_ins(), 1024, Default::default()).await;
    let addr = chat.addr;
    let (mut victim, _) = Raw::sign_in(addr, json!(["victim"])).await;
    let (mut friend, _) = Raw::sign_in(addr, json!(["friend"])).await;
    // They have talked before.
    let reply = friend.invoke("dm", json!(["victim", "hi", "f-0"])).await;
    assert!(reply["data"]["ts"].is_u64(), "{reply}");

    let started = Instant::now();
    let throwaways = tokio::spawn(async move {
        let mut sent = 0;
        let mut refused = 0;
        let mut names = (0..NAMES).map(|i| format!("t{i}"));
        let mut running = tokio::task::JoinSet::new();
        loop {
            while running.len() < AT_ONCE {
                let Some(name) = names.next() else { break };
                running.spawn(async move {
                    let (mut raw, reply) = Raw::sign_in(addr, json!([name])).await;
                    assert!(reply["data"]["key"].is_string(), "{reply}");
                    raw.invoke("dm", json!(["victim", "buy now", "x"])).await
                });
            }
            let Some(reply) = running.join_next().await else {
                break;
            };
            let reply = reply.unwrap();
            match reply["data"]["error"]["code"].as_str() {
                None => sent += 1,
                Some("rtm/too-many-requests") => {
                    let message = reply["data"]["error"]["message"]
                        .as_str()
                        .unwrap_or_default();
                    assert!(message.contains("too many new conversations"), "{message}");
                    refused += 1;
                }
                Some(_) => panic!("{reply}"),
            }
        }
        (sent, refused)
    });
    // While they come, the friend writes.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let wrote = Instant::now();
    let reply = friend
        .invoke("dm", json!(["victim", "lunch?", "f-1"]))
        .await;
    assert!(reply["data"]["ts"].is_u64(), "{reply}");
    let mut latency = None;
    let mut from_strangers = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    while latency.is_none() && Instant::now() < deadline {
        if let Got::Frame(frame) = victim.next(Duration::from_secs(3)).await {
            if frame["event"] == "dm"
                && frame["data"][0] == "friend"
                && frame["data"][1] == "lunch?"
            {
                latency = Some(wrote.elapsed());
            } else if frame["event"] == "dm" && frame["data"][0] != "friend" {
                from_strangers += 1;
            }
        }
    }
    let latency = latency.expect("the friend's DM never arrived");
    assert!(latency < Duration::from_secs(3), "{latency:?}");
    let (sent, refused) = throwaways.await.unwrap();
    let elapsed = started.elapsed();
    // 20 at once, then one each 3 s.
    let bound = 20 + elapsed.as_secs() as usize / 3 + 1;
    assert!(sent <= bound, "{sent} new conversations in {elapsed:?}");
    assert_eq!(sent + refused, NAMES);
    let (more, _) = drain(&mut victim, "dm", Duration::from_millis(500)).await;
    assert_eq!(from_strangers + more, sent, "the victim got what was sent");
    println!(
        "first contact: {NAMES} throwaway names in {elapsed:?}: {sent} reached the victim, \
         {refused} refused; the friend's DM arrived in {latency:?}"
    );
}

/// One name starting conversations with many others: past 10 a minute,
/// refused; an existing conversation is not counted.
#[tokio::test]
async fn one_name_cannot_start_many_new_conversations() {
    let chat = served().await;
    let (mut spammer, _) = Raw::sign_in(chat.addr, json!(["spammer"])).await;
    for i in 0..10 {
        let reply = spammer.invoke("dm", json!([format!("r{i}"), "hi"])).await;
        assert!(reply["data"]["ts"].is_u64(), "dm {i}: {reply}");
    }
    let reply = spammer.invoke("dm", json!(["r10", "hi"])).await;
    assert_eq!(
        reply["data"]["error"]["code"], "rtm/too-many-requests",
        "{reply}"
    );
    let message = reply["data"]["error"]["message"]
        .as_str()
        .unwrap_or_default();
    assert!(message.contains("too many new conversations"), "{message}");
    // r0 is an existing conversation.
    let reply = spammer.invoke("dm", json!(["r0", "again"])).await;
    assert!(reply["data"]["ts"].is_u64(), "{reply}");
}

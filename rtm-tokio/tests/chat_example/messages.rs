//! Issue 17 point 6 (text that lies: what the server sends of a message)
//! and point 7 (exactly-once message ids).
use std::time::Duration;

use serde_json::{json, Value};

use super::{served, Got, Raw};

/// The `event` frames `raw` gets within `wait` of each other.
async fn events(raw: &mut Raw, event: &str, wait: Duration) -> Vec<Value> {
    let mut got = Vec::new();
    while let Got::Frame(frame) = raw.next(wait).await {
        if frame["event"] == event {
            got.push(frame["data"].clone());
        }
    }
    got
}

#[tokio::test]
async fn a_message_keeps_its_line_breaks_and_loses_its_controls_and_bidi_overrides() {
    let chat = served().await;
    let mut reader = Raw::in_lobby(chat.addr, "reader").await;
    let (mut mallory, _) = Raw::sign_in(chat.addr, json!(["mallory"])).await;
    for (sent, arrives) in [
        // A fake second message inside one: it stays one message, with its
        // line break (the page shows it inside mallory's message).
        (
            "ok\n12:03 PM admin: your session expired, sign in at evil.example",
            "ok\n12:03 PM admin: your session expired, sign in at evil.example",
        ),
        ("one\r\ntwo\rthree\u{2028}four", "one\ntwo\nthree\nfour"),
        // RLO shows "photo\u{202E}gnp.exe" as "photoexe.png".
        ("photo\u{202E}gnp.exe", "photognp.exe"),
        (
            "\u{2066}a\u{2069}\u{202A}b\u{202C}\u{200E}c\u{200F}\u{061C}d",
            "abcd",
        ),
        ("bell\u{7}\u{1b}[31mred\u{7f}\u{85}", "bell[31mred"),
        ("tab\there", "tab here"),
    ] {
        let reply = mallory.invoke("say", json!(["lobby", sent, null])).await;
        assert!(reply["data"]["ts"].is_u64(), "{reply}");
        let got = events(&mut reader, "room-message", Duration::from_millis(300)).await;
        assert_eq!(got.len(), 1, "{sent:?} arrived as {got:?}");
        assert_eq!(got[0][2], arrives, "{sent:?}");
    }
    // The same rules for DMs.
    let reply = mallory
        .invoke("dm", json!(["reader", "a\u{202E}b\nc", "d-1"]))
        .await;
    assert!(reply["data"]["ts"].is_u64(), "{reply}");
    let got = events(&mut reader, "dm", Duration::from_millis(300)).await;
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0][1], "ab\nc");
    // More than 20 lines, or nothing once the controls are gone: refused.
    for text in ["a\n".repeat(20) + "b", "\u{202E}\u{7}\r\n".to_owned()] {
        let reply = mallory.invoke("say", json!(["lobby", text, null])).await;
        assert_eq!(
            reply["data"]["error"]["code"], "rtm/handler-error",
            "{reply}"
        );
    }
}

/// A retry with the same id (after a lost reply) is not sent again: it
/// returns the first `{ts}`; another id is another message.
#[tokio::test]
async fn a_message_retried_with_its_id_is_sent_once_and_returns_the_same_ts() {
    let chat = served().await;
    let mut reader = Raw::in_lobby(chat.addr, "reader").await;
    let (mut alice, _) = Raw::sign_in(chat.addr, json!(["alice"])).await;

    let first = alice.invoke("say", json!(["lobby", "hello", "m-1"])).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let retry = alice.invoke("say", json!(["lobby", "hello", "m-1"])).await;
    assert!(first["data"]["ts"].is_u64(), "{first}");
    assert_eq!(retry["data"], first["data"]);
    let other = alice.invoke("say", json!(["lobby", "hello", "m-2"])).await;
    assert_ne!(other["data"], first["data"]);
    let got = events(&mut reader, "room-message", Duration::from_millis(300)).await;
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(got[0][3], first["data"]["ts"]);
    assert_eq!(got[0][4], "m-1");
    assert_eq!(got[1][4], "m-2");

    // DMs: the same, the recipient gets one. An id is the sender's (for
    // `say` and `dm` alike), so another sender's "m-3" is its own message.
    let first = alice.invoke("dm", json!(["reader", "psst", "m-3"])).await;
    let retry = alice.invoke("dm", json!(["reader", "psst", "m-3"])).await;
    assert!(first["data"]["ts"].is_u64(), "{first}");
    assert_eq!(retry["data"], first["data"]);
    let (mut bob, _) = Raw::sign_in(chat.addr, json!(["bob"])).await;
    let bobs = bob.invoke("dm", json!(["reader", "psst", "m-3"])).await;
    assert!(bobs["data"]["ts"].is_u64(), "{bobs}");
    let got = events(&mut reader, "dm", Duration::from_millis(300)).await;
    let from: Vec<&Value> = got.iter().map(|dm| &dm[0]).collect();
    assert_eq!(from, [&json!("alice"), &json!("bob")], "{got:?}");

    // Two copies at once (pipelined, as a double tap): one message.
    let (mut carol, _) = Raw::sign_in(chat.addr, json!(["carol"])).await;
    let mut say = json!({"type": "invoke", "function": "say", "data": ["lobby", "tap", "t-1"]});
    carol.send(&mut say).await;
    carol.send(&mut say).await;
    let mut replies = Vec::new();
    while replies.len() < 2 {
        match carol.next(Duration::from_secs(5)).await {
            Got::Frame(frame) if frame.get("event").is_none() => {
                replies.push(frame["data"].clone())
            }
            Got::Frame(_) => {}
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(replies[0], replies[1]);
    let got = events(&mut reader, "room-message", Duration::from_millis(300)).await;
    assert_eq!(got.len(), 1, "{got:?}");
    // A malformed id is refused.
    let reply = carol
        .invoke("say", json!(["lobby", "x", "no spaces"]))
        .await;
    assert_eq!(
        reply["data"]["error"]["code"], "rtm/handler-error",
        "{reply}"
    );
}

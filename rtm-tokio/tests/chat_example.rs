//! The chat example's rules over real sockets: the example's `app()` served
//! by axum on a free port, driven by RTM clients as the page would.
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use rtm_tokio::broker::{BoxFuture, Broker, BrokerError, BrokerEvent, BrokerSink, BrokerState};
use rtm_tokio::Topic;
use rtm_tokio::{Client, ClientOptions, ErrorCode, RtmError, Server, ServerBuilder, ServerHandle};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};
use tungstenite::Message;

#[allow(dead_code)] // the example's `main` and CLI are not used here
#[path = "../examples/chat.rs"]
mod chat;

/// Starts the chat on a free port; returns its address and RTM server.
async fn start() -> (SocketAddr, ServerHandle) {
    start_with(Server::builder()).await
}

async fn start_with(builder: ServerBuilder) -> (SocketAddr, ServerHandle) {
    start_limited(builder, 256).await
}

/// The chat served as its `main` serves it: a [`chat::PerIpLimit`] listener
/// letting one address hold `per_ip` connections.
async fn start_limited(builder: ServerBuilder, per_ip: usize) -> (SocketAddr, ServerHandle) {
    let (router, rtm) = chat::app(builder);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(
            chat::PerIpLimit::new(listener, per_ip),
            router.into_make_service_with_connect_info::<chat::Peer>(),
        )
        .await
        .unwrap();
    });
    (addr, rtm)
}

async fn user(addr: SocketAddr, name: &str) -> Client {
    let options = ClientOptions::default().auth(json!(name));
    Client::connect(&format!("ws://{addr}/rtm"), options)
        .await
        .unwrap()
}

/// Collects `event`'s arguments (as a JSON array) into a channel.
fn listen(
    client: &Client,
    event: &str,
) -> (rtm_tokio::Subscription, UnboundedReceiver<Vec<Value>>) {
    let (tx, rx) = unbounded_channel();
    let sub = client.subscribe(event, move |args: Vec<Value>| {
        let _ = tx.send(args);
    });
    (sub, rx)
}

/// The next value, failing the test if none comes within 5 s.
async fn next(rx: &mut UnboundedReceiver<Vec<Value>>) -> Vec<Value> {
    tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("nothing received within 5 s")
        .unwrap()
}

/// A broker whose state the test sets; it sends nothing anywhere.
#[derive(Default)]
struct FakeBroker {
    sink: Mutex<Option<BrokerSink>>,
    down: Mutex<Option<String>>,
}

impl FakeBroker {
    /// Down (with this reason) or up (`None`); tells the server, as a real broker does.
    fn set_down(&self, reason: Option<&str>) {
        *self.down.lock().unwrap() = reason.map(str::to_owned);
        let sink = self.sink.lock().unwrap().clone();
        if let Some(sink) = sink {
            sink(BrokerEvent::State(self.state()));
        }
    }
}

impl Broker for FakeBroker {
    fn start(&self, sink: BrokerSink) -> BoxFuture<'_, Result<(), BrokerError>> {
        sink(BrokerEvent::State(self.state()));
        *self.sink.lock().unwrap() = Some(sink);
        Box::pin(std::future::ready(Ok(())))
    }
    fn publish(&self, _: &Topic, _: bytes::Bytes) -> BoxFuture<'_, Result<(), BrokerError>> {
        Box::pin(std::future::ready(Ok(())))
    }
    fn subscribe(&self, _: &Topic) -> BoxFuture<'_, Result<(), BrokerError>> {
        Box::pin(std::future::ready(Ok(())))
    }
    fn unsubscribe(&self, _: &Topic) -> BoxFuture<'_, Result<(), BrokerError>> {
        Box::pin(std::future::ready(Ok(())))
    }
    fn state(&self) -> BrokerState {
        match self.down.lock().unwrap().clone() {
            Some(reason) => BrokerState::Down { reason },
            None => BrokerState::Up,
        }
    }
}

/// `GET path`: the whole response (head and body) as text.
async fn get(addr: SocketAddr, path: &str) -> String {
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    tcp.read_to_string(&mut response).await.unwrap();
    response
}

#[tokio::test]
async fn page_and_assets_are_served_from_the_binary() {
    let (addr, _rtm) = start().await;
    for (path, needle) in [
        ("/", "<script src=\"/chat.js\">"),
        ("/", "<script src=\"/rtm-client.js\">"),
        ("/chat.js", "RTM.Client"),
        ("/rtm-client.js", "var RTM ="),
        ("/rtm-client.js", "RtmClient"),
        ("/", "rel=\"icon\""),
        ("/chat.js", "textContent"),
        ("/chat.css", ".compose"),
        ("/favicon.svg", "<svg"),
        ("/favicon.ico", "<svg"),
    ] {
        let response = get(addr, path).await;
        assert!(response.starts_with("HTTP/1.1 200"), "{path}: {response}");
        assert!(response.contains(needle), "{path}");
    }
    let icon = get(addr, "/favicon.ico").await.to_ascii_lowercase();
    assert!(icon.contains("content-type: image/svg+xml"), "{icon}");
}

#[tokio::test]
async fn a_busy_port_error_names_the_address_and_the_flag_to_change_it() {
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = busy.local_addr().unwrap();
    let err = std::net::TcpListener::bind(addr).unwrap_err();
    let text = chat::listen_error(addr, &err);
    let next = format!("127.0.0.1:{}", addr.port() + 1);
    assert_eq!(
        text,
        format!(
            "cannot listen on {addr}: address already in use \
             (another chat running? pick another port with --listen {next})"
        )
    );
}

#[tokio::test]
async fn a_name_that_is_not_1_to_32_letters_digits_dash_underscore_is_rejected() {
    let (addr, _rtm) = start().await;
    for bad in [
        json!("two words"),
        json!(""),
        json!("x".repeat(33)),
        json!(7),
    ] {
        let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/rtm"))
            .await
            .unwrap();
        let auth = json!({"id": "1", "type": "auth", "data": [bad]});
        ws.send(Message::text(auth.to_string())).await.unwrap();
        let reply: Value =
            serde_json::from_str(&ws.next().await.unwrap().unwrap().into_text().unwrap()).unwrap();
        assert_eq!(reply["data"], json!(false));
        assert_eq!(reply["error"]["code"], "rtm/auth-rejected");
        match ws.next().await.unwrap().unwrap() {
            Message::Close(Some(frame)) => assert_eq!(u16::from(frame.code), 4003),
            other => panic!("{other:?}"),
        }
    }
}

#[tokio::test]
async fn say_pushes_room_message_to_the_rooms_subscribers_only() {
    let (addr, _rtm) = start().await;
    let (alice, bob) = (user(addr, "alice").await, user(addr, "bob").await);
    let (tx, mut lobby) = unbounded_channel();
    let _in_lobby = alice
        .subscribe_push("room-message", &["room:lobby"], move |args: Vec<Value>| {
            let _ = tx.send(args);
        })
        .await
        .unwrap();
    let delivered: usize = bob.call_wait("say", &("lobby", "hi <b>")).await.unwrap();
    assert_eq!(delivered, 1);
    let got = next(&mut lobby).await;
    assert_eq!(got[0..3], [json!("lobby"), json!("bob"), json!("hi <b>")]);
    assert!(got[3].is_u64());
    let nobody: usize = bob.call_wait("say", &("elsewhere", "x")).await.unwrap();
    assert_eq!(nobody, 0);
}

#[tokio::test]
async fn say_rejects_bad_rooms_and_empty_or_too_long_text() {
    let (addr, _rtm) = start().await;
    let bob = user(addr, "bob").await;
    for (room, text) in [
        ("no spaces", "x".to_owned()),
        ("lobby", " ".into()),
        ("lobby", "x".repeat(2001)),
    ] {
        let err = bob
            .call_wait::<Value, _>("say", &(room, text))
            .await
            .unwrap_err();
        assert_eq!(err.code, ErrorCode::HandlerError, "{err}");
    }
    let ok: Result<usize, RtmError> = bob.call_wait("say", &("lobby", "é".repeat(2000))).await;
    assert!(ok.is_ok());
}

#[tokio::test]
async fn subscribing_to_anything_but_room_tags_is_forbidden() {
    let (addr, _rtm) = start().await;
    let bob = user(addr, "bob").await;
    for (event, tag) in [
        ("room-message", "lobby"),
        ("room-message", "room:a b"),
        ("dm", "room:x"),
    ] {
        let denied = bob.subscribe_push(event, &[tag], |_: Value| {}).await;
        assert!(
            matches!(
                denied,
                Err(RtmError {
                    code: ErrorCode::Forbidden,
                    ..
                })
            ),
            "{event} {tag}"
        );
    }
}

#[tokio::test]
async fn dm_reaches_the_recipient_and_the_senders_other_tabs() {
    let (addr, _rtm) = start().await;
    let (alice, bob, bob2) = (
        user(addr, "alice").await,
        user(addr, "bob").await,
        user(addr, "bob").await,
    );
    let (_a, mut to_alice) = listen(&alice, "dm");
    let (_b2, mut to_bob2) = listen(&bob2, "dm");
    let delivered: usize = bob.call_wait("dm", &("alice", "psst")).await.unwrap();
    assert_eq!(delivered, 3); // alice, and both of bob's tabs
    let got = next(&mut to_alice).await;
    assert_eq!(got[0..2], [json!("bob"), json!("psst")]);
    assert_eq!(got[3], json!("alice"));
    assert_eq!(next(&mut to_bob2).await, got);
    let err = bob
        .call_wait::<Value, _>("dm", &("not a name", "x"))
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::HandlerError);
}

#[tokio::test]
async fn presence_lists_online_names_after_hello_and_after_a_disconnect() {
    let (addr, _rtm) = start().await;
    let alice = user(addr, "alice").await;
    let (_p, mut presence) = listen(&alice, "presence");
    let bob = user(addr, "bob").await;
    let names: Vec<String> = bob.call_wait("hello", &json!([])).await.unwrap();
    assert_eq!(names, ["alice", "bob"]);
    assert_eq!(next(&mut presence).await, [json!(["alice", "bob"])]);
    bob.close();
    assert_eq!(next(&mut presence).await, [json!(["alice"])]);
    let online: Vec<String> = alice.call_wait("online", &json!([])).await.unwrap();
    assert_eq!(online, ["alice"]);
}

/// `hello` in a loop cannot flood the others with presence events (each to
/// every connection): announcements are coalesced, at most one per 250 ms
/// whatever the calls, and the last one still comes.
#[tokio::test]
async fn a_client_calling_hello_in_a_loop_costs_the_others_one_event_per_interval() {
    const CALLS: usize = 500;
    let (addr, _rtm) = start().await;
    let alice = user(addr, "alice").await;
    let (_p, mut presence) = listen(&alice, "presence");
    let bob = user(addr, "bob").await;
    let started = std::time::Instant::now();
    for _ in 0..CALLS {
        let names: Vec<String> = bob.call_wait("hello", &json!([])).await.unwrap();
        assert_eq!(names, ["alice", "bob"]);
    }
    let elapsed = started.elapsed();
    // The last announcement comes within an interval of the last call.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let mut events = 0;
    while let Ok(names) = presence.try_recv() {
        assert_eq!(names, [json!(["alice", "bob"])]);
        events += 1;
    }
    let bound = 2 + elapsed.as_millis() as usize / 250;
    assert!(
        (1..=bound).contains(&events),
        "{events} presence events for {CALLS} hello calls in {elapsed:?}"
    );
}

/// Silent sockets from one address are bounded: past the per-IP limit a
/// new connection is closed at once, and the others keep being served; a
/// socket that goes gives its place back.
#[tokio::test]
async fn one_address_holds_at_most_its_share_of_connections() {
    let (addr, _rtm) = start_limited(Server::builder(), 3).await;
    let mut silent = Vec::new();
    for _ in 0..3 {
        silent.push(tokio::net::TcpStream::connect(addr).await.unwrap());
    }
    let mut fourth = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut byte = [0u8; 1];
    let read = tokio::time::timeout(Duration::from_secs(5), fourth.read(&mut byte))
        .await
        .expect("the fourth socket was kept");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    drop(silent.pop());
    let page = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            // A socket still past the limit is closed (maybe reset): try again.
            let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
            let request = "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
            let mut response = String::new();
            if tcp.write_all(request.as_bytes()).await.is_ok()
                && tcp.read_to_string(&mut response).await.is_ok()
                && response.starts_with("HTTP/1.1 200")
            {
                break response;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("no room again after a socket went");
    assert!(page.contains("<script"), "{page}");
}

#[tokio::test]
async fn dm_reaches_a_name_that_is_not_online_here() {
    // Presence is per server: the page may start a DM with any valid name
    // (on another server of a cluster, or nowhere); only the sender's tabs here get it.
    let (addr, _rtm) = start().await;
    let bob = user(addr, "bob").await;
    let (_b, mut to_bob) = listen(&bob, "dm");
    let delivered: usize = bob
        .call_wait("dm", &("carol", "are you there?"))
        .await
        .unwrap();
    assert_eq!(delivered, 1);
    let got = next(&mut to_bob).await;
    assert_eq!(got[0..2], [json!("bob"), json!("are you there?")]);
    assert_eq!(got[3], json!("carol"));
}

#[tokio::test]
async fn status_without_a_broker_is_none() {
    let (addr, rtm) = start().await;
    let alice = user(addr, "alice").await;
    let status: Value = alice.call_wait("status", &json!([])).await.unwrap();
    let none = json!({"cluster": false, "broker": "none", "reason": null});
    assert_eq!(status, none);
    assert_eq!(chat::status(&rtm), none);
}

/// The next `status` event equal to `want`, skipping others (the watcher's
/// first announcement may or may not come after the client subscribed).
async fn next_status(rx: &mut UnboundedReceiver<Vec<Value>>, want: &Value) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let got = tokio::time::timeout_at(deadline, rx.recv())
            .await
            .unwrap_or_else(|_| panic!("no status {want} within 5 s"))
            .unwrap();
        if got == [want.clone()] {
            return;
        }
    }
}

#[tokio::test]
async fn status_follows_the_broker_and_is_emitted_when_the_link_goes_down_and_up() {
    let broker = Arc::new(FakeBroker::default());
    let (addr, _rtm) = start_with(Server::builder().broker(broker.clone())).await;
    let alice = user(addr, "alice").await;
    let (_s, mut statuses) = listen(&alice, "status");
    let up = json!({"cluster": true, "broker": "up", "reason": null});
    let status: Value = alice.call_wait("status", &json!([])).await.unwrap();
    assert_eq!(status, up);

    broker.set_down(Some("connecting: Connection refused"));
    let down =
        json!({"cluster": true, "broker": "down", "reason": "connecting: Connection refused"});
    next_status(&mut statuses, &down).await;
    let status: Value = alice.call_wait("status", &json!([])).await.unwrap();
    assert_eq!(status, down);
    // Meanwhile rooms and DMs fail, saying why.
    let err = alice
        .call_wait::<Value, _>("say", &("lobby", "x"))
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::BrokerUnavailable, "{err}");

    broker.set_down(None);
    next_status(&mut statuses, &up).await;
    let delivered: usize = alice.call_wait("say", &("lobby", "back")).await.unwrap();
    assert_eq!(delivered, 0);
}

//! The chat example's rules over real sockets: the example's `app()` served
//! by its own page server on a free port of 127.0.0.1, driven by RTM clients
//! as the page would, and by raw WebSockets where the test needs the frames
//! (or their bytes) as they are. Issue 17's points have their tests in the
//! modules beside this file (`chat_example/*.rs`); every wait is bounded.
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

// The example's `main` and CLI are not used here, and its `pub` items are
// its surface for these tests, not a library's.
#[allow(dead_code, unreachable_pub)]
#[path = "../examples/chat.rs"]
mod chat;

// Issue 17's points, a module each (the crate root's `mod` looks in tests/).
#[path = "chat_example/http.rs"]
mod http;
#[path = "chat_example/limits.rs"]
mod limits;
#[path = "chat_example/messages.rs"]
mod messages;
#[path = "chat_example/names.rs"]
mod names;
#[path = "chat_example/presence.rs"]
mod presence;

/// A chat served on a free port.
struct Chat {
    addr: SocketAddr,
    rtm: ServerHandle,
    /// The page server's open connections.
    open: chat::PerIpLimit,
}

/// Starts the chat on a free port; returns its address and RTM server.
async fn start() -> (SocketAddr, ServerHandle) {
    start_with(Server::builder()).await
}

async fn start_with(builder: ServerBuilder) -> (SocketAddr, ServerHandle) {
    start_limited(builder, 256).await
}

/// The chat served as its `main` serves it, one address holding at most
/// `per_ip` connections.
async fn start_limited(builder: ServerBuilder, per_ip: usize) -> (SocketAddr, ServerHandle) {
    let chat = serve(
        builder,
        chat::ChatConfig::default(),
        per_ip,
        Default::default(),
    )
    .await;
    (chat.addr, chat.rtm)
}

/// The chat with the default settings.
async fn served() -> Chat {
    serve(
        Server::builder(),
        Default::default(),
        256,
        Default::default(),
    )
    .await
}

/// The chat with these settings, page server options and per-address bound.
async fn serve(
    builder: ServerBuilder,
    config: chat::ChatConfig,
    per_ip: usize,
    http: chat::HttpOptions,
) -> Chat {
    let (router, rtm) = chat::app_with(builder, config);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let open = chat::PerIpLimit::new(per_ip);
    let http = chat::HttpOptions {
        per_ip: Some(open.clone()),
        ..http
    };
    tokio::spawn(chat::serve(listener, router, http, std::future::pending()));
    Chat { addr, rtm, open }
}

/// Settings without the limits on sign-ins, for tests that sign in many
/// names from 127.0.0.1.
fn many_sign_ins() -> chat::ChatConfig {
    let mut config = chat::ChatConfig::default();
    config.budgets.sign_ins_per_ip = None;
    config
}

/// A first tab: signs in with the name alone (no key yet).
async fn user(addr: SocketAddr, name: &str) -> Client {
    let options = ClientOptions::default().auth(json!(name));
    Client::connect(&format!("ws://{addr}/rtm"), options)
        .await
        .unwrap()
}

/// A tab of a signed-in user: signs in with the name and its key (the
/// Rust client sends one auth value: `[[name, key]]`).
async fn tab(addr: SocketAddr, name: &str, key: &str) -> Client {
    let options = ClientOptions::default().auth(json!([name, key]));
    Client::connect(&format!("ws://{addr}/rtm"), options)
        .await
        .unwrap()
}

/// The first tab of `name` and its key: the key comes from a raw sign-in
/// that is closed once the tab signed in with it.
async fn user_and_key(addr: SocketAddr, name: &str) -> (Client, String) {
    let (first, reply) = Raw::sign_in(addr, json!([name])).await;
    let key = reply["data"]["key"].as_str().expect("a key").to_owned();
    let client = tab(addr, name, &key).await;
    drop(first);
    (client, key)
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

/// A WebSocket peer sending and reading the protocol's JSON frames as they
/// are, counting the bytes of the text frames it receives.
struct Raw {
    ws: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
    /// Payload bytes of the text frames received.
    received: usize,
    next_id: u64,
}

/// How a raw peer's wait ended.
#[derive(Debug)]
enum Got {
    Frame(Value),
    Closed(Option<u16>),
    Quiet,
}

impl Raw {
    async fn connect(addr: SocketAddr) -> Raw {
        let (ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/rtm"))
            .await
            .unwrap();
        Raw {
            ws,
            received: 0,
            next_id: 0,
        }
    }

    /// Connects and sends `auth` with `data`; the reply.
    async fn sign_in(addr: SocketAddr, data: Value) -> (Raw, Value) {
        let mut raw = Raw::connect(addr).await;
        let reply = raw.request(json!({"type": "auth", "data": data})).await;
        (raw, reply)
    }

    /// `name` signed in and subscribed to the lobby's messages.
    async fn in_lobby(addr: SocketAddr, name: &str) -> Raw {
        let (mut raw, _) = Raw::sign_in(addr, json!([name])).await;
        let reply = raw.subscribe("room-message", &["room:lobby"]).await;
        assert_eq!(
            reply["data"], true,
            "{name} subscribes to the lobby: {reply}"
        );
        raw
    }

    /// Sends `frame` with a fresh id; its reply (events before it are skipped).
    async fn request(&mut self, mut frame: Value) -> Value {
        let id = self.send(&mut frame).await;
        loop {
            match self.next(Duration::from_secs(5)).await {
                Got::Frame(reply) if reply["id"] == json!(id) => return reply,
                Got::Frame(_) => {}
                other => panic!("no reply to {frame}: {other:?}"),
            }
        }
    }

    /// Sends `frame` with a fresh id (returned), without waiting.
    async fn send(&mut self, frame: &mut Value) -> String {
        self.next_id += 1;
        let id = self.next_id.to_string();
        frame["id"] = json!(id);
        self.ws
            .send(Message::text(frame.to_string()))
            .await
            .unwrap();
        id
    }

    async fn invoke(&mut self, function: &str, data: Value) -> Value {
        self.request(json!({"type": "invoke", "function": function, "data": data}))
            .await
    }

    async fn subscribe(&mut self, event: &str, tags: &[&str]) -> Value {
        self.request(json!({"type": "subscribe", "event": event, "tags": tags}))
            .await
    }

    /// The next frame (or the close) within `wait`.
    async fn next(&mut self, wait: Duration) -> Got {
        loop {
            match tokio::time::timeout(wait, self.ws.next()).await {
                Err(_) => return Got::Quiet,
                Ok(None) | Ok(Some(Err(_))) => return Got::Closed(None),
                Ok(Some(Ok(Message::Text(text)))) => {
                    self.received += text.len();
                    return Got::Frame(serde_json::from_str(&text).unwrap());
                }
                Ok(Some(Ok(Message::Close(frame)))) => {
                    return Got::Closed(frame.map(|f| u16::from(f.code)))
                }
                Ok(Some(Ok(_))) => {}
            }
        }
    }

    /// The close code the server sends next (within 5 s), skipping frames.
    async fn closed(&mut self) -> Option<u16> {
        loop {
            match self.next(Duration::from_secs(5)).await {
                Got::Frame(_) => {}
                Got::Closed(code) => return code,
                Got::Quiet => panic!("not closed within 5 s"),
            }
        }
    }
}

/// The auth reply `reply` is a refusal whose message starts with `prefix`,
/// and the socket then closes 4003.
async fn refused(raw: &mut Raw, reply: &Value, prefix: &str) {
    assert_eq!(reply["data"], json!(false), "{reply}");
    assert_eq!(reply["error"]["code"], "rtm/auth-rejected", "{reply}");
    let message = reply["error"]["message"].as_str().unwrap_or_default();
    assert!(message.starts_with(prefix), "{message}");
    assert_eq!(raw.closed().await, Some(4003));
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
    let sent: Value = bob
        .call_wait("say", &("lobby", "hi <b>", "m-1"))
        .await
        .unwrap();
    let got = next(&mut lobby).await;
    assert_eq!(got[0..3], [json!("lobby"), json!("bob"), json!("hi <b>")]);
    assert!(got[3].is_u64());
    assert_eq!(sent, json!({ "ts": got[3] }));
    assert_eq!(got[4], "m-1");
    // An older page sends no id: the event's is null.
    let _: Value = bob.call_wait("say", &("lobby", "no id")).await.unwrap();
    assert_eq!(next(&mut lobby).await[4], Value::Null);
    let _: Value = bob.call_wait("say", &("elsewhere", "x")).await.unwrap();
    assert!(
        tokio::time::timeout(Duration::from_millis(200), lobby.recv())
            .await
            .is_err()
    );
}

#[tokio::test]
async fn say_rejects_bad_rooms_and_empty_or_too_long_text() {
    let (addr, _rtm) = start().await;
    let bob = user(addr, "bob").await;
    for (room, text) in [
        ("no spaces", "x".to_owned()),
        ("lobby", " ".into()),
        ("lobby", "x".repeat(2001)),
        // Only controls: nothing left once they are removed.
        ("lobby", "\u{202E}\u{7}\n".into()),
        ("lobby", "line\n".repeat(20) + "21"),
    ] {
        let err = bob
            .call_wait::<Value, _>("say", &(room, text))
            .await
            .unwrap_err();
        assert_eq!(err.code, ErrorCode::HandlerError, "{err}");
    }
    let ok: Result<Value, RtmError> = bob.call_wait("say", &("lobby", "é".repeat(2000))).await;
    assert!(ok.is_ok(), "{ok:?}");
    let lines: Result<Value, RtmError> = bob
        .call_wait("say", &("lobby", "line\n".repeat(19) + "20"))
        .await;
    assert!(lines.is_ok(), "{lines:?}");
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
    let alice = user(addr, "alice").await;
    let (bob, key) = user_and_key(addr, "bob").await;
    let bob2 = tab(addr, "bob", &key).await;
    let (_a, mut to_alice) = listen(&alice, "dm");
    let (_b, mut to_bob) = listen(&bob, "dm");
    let (_b2, mut to_bob2) = listen(&bob2, "dm");
    let sent: Value = bob
        .call_wait("dm", &("alice", "psst", "d-1"))
        .await
        .unwrap();
    let got = next(&mut to_alice).await;
    assert_eq!(got[0..2], [json!("bob"), json!("psst")]);
    assert_eq!(sent, json!({ "ts": got[2] }));
    assert_eq!(got[3..5], [json!("alice"), json!("d-1")]);
    // Both of bob's tabs get it too.
    assert_eq!(next(&mut to_bob).await, got);
    assert_eq!(next(&mut to_bob2).await, got);
    let err = bob
        .call_wait::<Value, _>("dm", &("not a name", "x"))
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::HandlerError);
}

/// Waits out a presence interval (the announcement of the listener's own
/// arrival), then forgets what came.
async fn settle(rx: &mut UnboundedReceiver<Vec<Value>>) {
    tokio::time::sleep(Duration::from_millis(400)).await;
    while rx.try_recv().is_ok() {}
}

#[tokio::test]
async fn presence_sends_who_joined_and_who_left_and_hello_the_whole_list() {
    let (addr, _rtm) = start().await;
    let alice = user(addr, "alice").await;
    let (_p, mut presence) = listen(&alice, "presence");
    settle(&mut presence).await;
    let bob = user(addr, "bob").await;
    let names: Vec<String> = bob.call_wait("hello", &json!([])).await.unwrap();
    assert_eq!(names, ["alice", "bob"]);
    assert_eq!(
        next(&mut presence).await,
        [json!({ "joined": ["bob"], "left": [] })]
    );
    bob.close();
    assert_eq!(
        next(&mut presence).await,
        [json!({ "joined": [], "left": ["bob"] })]
    );
    let online: Vec<String> = alice.call_wait("online", &json!([])).await.unwrap();
    assert_eq!(online, ["alice"]);
}

/// `hello` in a loop cannot flood anyone: past its budget (5 at once, then
/// 1 a second per connection) it is refused, and as nothing changes it
/// sends the others nothing.
#[tokio::test]
async fn a_client_calling_hello_in_a_loop_is_refused_and_costs_the_others_nothing() {
    const CALLS: usize = 100;
    let (addr, _rtm) = start().await;
    let alice = user(addr, "alice").await;
    let (_p, mut presence) = listen(&alice, "presence");
    settle(&mut presence).await;
    let bob = user(addr, "bob").await;
    assert_eq!(
        next(&mut presence).await,
        [json!({ "joined": ["bob"], "left": [] })]
    );
    let started = std::time::Instant::now();
    let mut answered = 0;
    for _ in 0..CALLS {
        match bob.call_wait::<Vec<String>, _>("hello", &json!([])).await {
            Ok(names) => {
                assert_eq!(names, ["alice", "bob"]);
                answered += 1;
            }
            Err(err) => assert_eq!(err.code, ErrorCode::TooManyRequests, "{err}"),
        }
    }
    let elapsed = started.elapsed();
    assert!(
        answered <= 5 + elapsed.as_secs() as usize + 1,
        "{answered} of {CALLS} hello calls answered in {elapsed:?}"
    );
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(
        presence.try_recv().is_err(),
        "presence sent for hello calls"
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
    let _: Value = bob
        .call_wait("dm", &("carol", "are you there?", "d-1"))
        .await
        .unwrap();
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
    let sent: Value = alice.call_wait("say", &("lobby", "back")).await.unwrap();
    assert!(sent["ts"].is_u64(), "{sent}");
}

/// `--metrics-listen`: Prometheus' text format on `/metrics`, counting what
/// the chat served. (The only test here that installs a recorder: the
/// process has one. Its server has a prefix of its own, so the other
/// tests' servers, which may record into it too, are not counted.)
#[tokio::test]
async fn metrics_count_the_chats_sign_ins_and_messages() {
    let port = rtm_redis::testing::free_port().unwrap();
    let metrics: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    chat::serve_metrics(metrics).unwrap();
    let chat = serve(
        Server::builder().metrics_prefix("chat_test_"),
        Default::default(),
        256,
        Default::default(),
    )
    .await;
    let (alice, bob) = (user(chat.addr, "alice").await, user(chat.addr, "bob").await);
    for n in 0..3 {
        let _: Value = bob
            .call_wait("say", &("lobby", format!("hi {n}"), format!("m-{n}")))
            .await
            .unwrap();
    }
    let scrape = get(metrics, "/metrics").await;
    let line = |wanted: &str| {
        scrape
            .lines()
            .find(|line| line.starts_with(wanted))
            .unwrap_or_else(|| panic!("no {wanted} in:\n{scrape}"))
            .rsplit(' ')
            .next()
            .unwrap()
            .to_owned()
    };
    assert!(scrape.starts_with("HTTP/1.1 200"), "{scrape}");
    assert_eq!(line(r#"chat_test_auth_total{result="accepted"}"#), "2");
    assert_eq!(
        line(r#"chat_test_invocations_total{function="say",outcome="ok"}"#),
        "3"
    );
    assert_eq!(line(r#"chat_test_connections{state="authenticated"}"#), "2");
    // A histogram, with buckets.
    assert_eq!(
        line(r#"chat_test_invocation_duration_seconds_bucket{function="say",le="+Inf"}"#),
        "3"
    );
    // And a real Prometheus reads the same, through its query API.
    let mut prometheus = conformance::prometheus::Prometheus::start(metrics);
    prometheus.ready().await;
    for (query, want) in [
        (r#"chat_test_auth_total{result="accepted"}"#, 2.0),
        (
            r#"chat_test_invocations_total{function="say",outcome="ok"}"#,
            3.0,
        ),
        (r#"chat_test_connections{state="authenticated"}"#, 2.0),
        (
            r#"chat_test_invocation_duration_seconds_count{function="say"}"#,
            3.0,
        ),
        (
            r#"chat_test_frames_sent_total{kind="reply"} >= bool 5"#,
            1.0,
        ),
    ] {
        prometheus.shows(query, want).await;
    }
    drop((alice, bob));
}

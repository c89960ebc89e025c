//! A small chat web app on RTM, served by axum with the page embedded.
//!
//! `cargo run --release -p rtm-tokio --example chat` then open <http://127.0.0.1:7070/>.
//!
//! - **Auth:** the user name is the token (1–32 letters, digits, `-`, `_`);
//!   no password: this is a demo. Several tabs may use the same name.
//! - **Rooms** are push tags `room:<name>`: the page subscribes to
//!   `room-message`; `say(room, text)` Pushes `[room, from, text, ts]`.
//! - **Direct messages** are Publish: `dm(to, text)` sends `dm`
//!   `[from, text, ts, to]` to `to` and to the sender's other tabs.
//! - **Presence** is Emit: `presence [names]` to every authenticated
//!   connection after `hello()` (called by the page right after auth) and
//!   after a disconnect; `online()` returns the same list.
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{ConnectInfo, State};
use axum::http::header;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use clap::Parser;
use rtm_tokio::{
    CallContext, ConnMeta, ErrorCode, Identity, RtmError, Server, ServerBuilder, ServerBuilderExt,
    ServerHandle,
};
use serde_json::{json, Value};

const INDEX_HTML: &str = include_str!("chat/index.html");
const CHAT_JS: &str = include_str!("chat/chat.js");
const CHAT_CSS: &str = include_str!("chat/chat.css");

/// Longest message, in characters.
const MAX_TEXT_CHARS: usize = 2000;

#[derive(Parser)]
#[command(about = "RTM chat: a small web chat on rooms (Push), DMs (Publish) and presence (Emit)")]
struct Cli {
    /// Address to serve the page and the RTM endpoint on.
    #[arg(long, default_value = "127.0.0.1:7070")]
    listen: SocketAddr,
    /// Redis URL, to share rooms and DMs between several chat servers.
    #[arg(long)]
    redis: Option<String>,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let cli = Cli::parse();
    let mut builder = Server::builder();
    if let Some(url) = &cli.redis {
        // Push (rooms) and Publish (DMs) then reach users on every chat
        // server sharing this Redis. Presence stays per server (it is an Emit).
        let server_id = builder.config().server_id.clone();
        // Comma-separated URLs: the seed nodes of a Redis Cluster (sharded pub/sub).
        let config = if url.contains(',') {
            rtm_redis::RedisBrokerConfig::cluster(url.split(','), "chat", &server_id)
        } else {
            rtm_redis::RedisBrokerConfig::new(url, "chat", &server_id)
        };
        let broker = rtm_redis::RedisBroker::new(config, rtm_tokio::TokioRuntime::current())?;
        builder = builder
            .namespace("chat")
            .broker(std::sync::Arc::new(broker));
        println!("cluster: rooms and DMs shared through {url}");
    }
    let (router, rtm) = app(builder);
    let listener = tokio::net::TcpListener::bind(cli.listen).await?;
    let addr = listener.local_addr()?;
    println!("chat on http://{addr}/ (RTM on ws://{addr}/rtm)");
    let shutdown = async move {
        stop_requested().await;
        tracing::info!("shutting down");
        // Closes every RTM socket (1001) once in-flight calls finish; then
        // axum stops accepting and drains its plain HTTP connections.
        rtm.shutdown().await;
    };
    axum::serve(
        listener,
        router.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await?;
    Ok(())
}

/// Ctrl-C, or SIGTERM (a service manager's stop) on Unix.
async fn stop_requested() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

/// The chat's RTM server (started) and the axum router serving the page and
/// `/rtm`. Serve the router `with_connect_info::<SocketAddr>`.
pub fn app(builder: ServerBuilder) -> (Router, ServerHandle) {
    // The disconnect hook only nudges this task, which announces the new
    // presence list once for several departures at a time.
    let (left_tx, mut left_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let rtm = builder
        .auth(|data: Vec<Value>, _info| async move {
            match data.first().and_then(Value::as_str) {
                Some(name) if valid_name(name) => Ok(Identity::new(name, json!({ "user": name }))),
                _ => Err(RtmError::new(
                    ErrorCode::AuthRejected,
                    "a name is 1 to 32 letters, digits, '-' or '_'",
                )),
            }
        })
        .authorize_subscriptions(|_info, event, tags| async move {
            event == "room-message"
                && !tags.is_empty()
                && tags
                    .iter()
                    .all(|tag| tag.strip_prefix("room:").is_some_and(valid_name))
        })
        .on_disconnect(move |info| {
            if info.identity.is_some() {
                let _ = left_tx.send(());
            }
        })
        .register("hello", |ctx: CallContext, _: Vec<Value>| async move {
            announce(&ctx.server)
        })
        .register("online", |ctx: CallContext, _: Vec<Value>| async move {
            Ok::<_, RtmError>(online(&ctx.server))
        })
        .register("say", say)
        .register("dm", dm)
        .embedded();

    let presence = rtm.clone();
    tokio::spawn(async move {
        while left_rx.recv().await.is_some() {
            // Several tabs closing at once: one announcement is enough.
            while left_rx.try_recv().is_ok() {}
            if let Err(err) = announce(&presence) {
                tracing::warn!(%err, "presence not sent");
            }
        }
    });

    let router = Router::new()
        .route("/", get(|| async { Html(INDEX_HTML) }))
        .route(
            "/chat.js",
            get(|| async { asset("text/javascript", CHAT_JS) }),
        )
        .route("/chat.css", get(|| async { asset("text/css", CHAT_CSS) }))
        .route("/rtm", get(upgrade))
        .with_state(rtm.clone());
    (router, rtm)
}

/// `say(room, text)`: Push `room-message [room, from, text, ts]` to tag `room:<room>`.
async fn say(ctx: CallContext, (room, text): (String, String)) -> Result<usize, RtmError> {
    if !valid_name(&room) {
        return Err(RtmError::handler(
            "a room name is 1 to 32 letters, digits, '-' or '_'",
        ));
    }
    check_text(&text)?;
    let from = caller(&ctx)?;
    let tags = [format!("room:{room}")];
    ctx.server
        .push("room-message", &tags, &(&room, from, &text, now_ms()))
}

/// `dm(to, text)`: Publish `dm [from, text, ts, to]` to `to` and to the
/// sender (their other tabs). Returns how many connections here got it.
async fn dm(ctx: CallContext, (to, text): (String, String)) -> Result<usize, RtmError> {
    if !valid_name(&to) {
        return Err(RtmError::handler(format!(
            "'{to}' is not a valid user name"
        )));
    }
    check_text(&text)?;
    let from = caller(&ctx)?;
    let args = (from, &text, now_ms(), &to);
    let mut delivered = ctx.server.publish(&to, "dm", &args)?;
    if to != from {
        delivered += ctx.server.publish(from, "dm", &args)?;
    }
    Ok(delivered)
}

/// Emits `presence [names]` to every authenticated connection; returns the names.
fn announce(server: &ServerHandle) -> Result<Vec<String>, RtmError> {
    let names = online(server);
    server.emit("presence", |_| true, &(&names,))?;
    Ok(names)
}

/// The sorted names of the users connected to this server. Read from the
/// server's own connection table, so a tab closing mid-auth cannot leave a
/// stale name behind.
fn online(server: &ServerHandle) -> Vec<String> {
    let names: BTreeSet<String> = server
        .connections()
        .iter()
        .filter_map(|info| info.user_id().map(str::to_owned))
        .collect();
    names.into_iter().collect()
}

async fn upgrade(
    State(rtm): State<ServerHandle>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    ws: WebSocketUpgrade,
) -> Response {
    let max = rtm.config().limits.max_frame_bytes;
    ws.max_message_size(max)
        .max_frame_size(max)
        .on_upgrade(move |socket| async move {
            let meta = ConnMeta {
                peer_addr: Some(peer),
                path: Some("/rtm".into()),
            };
            rtm_tokio::serve_axum(&rtm, socket, meta).await;
        })
}

fn asset(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, content_type)], body)
}

fn caller(ctx: &CallContext) -> Result<&str, RtmError> {
    // The server requires auth, so every caller has a name; never panic on it.
    ctx.user_id()
        .ok_or_else(|| RtmError::new(ErrorCode::Unauthenticated, "sign in first"))
}

/// 1 to 32 ASCII letters, digits, `-` or `_`: user names and room names.
fn valid_name(name: &str) -> bool {
    (1..=32).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn check_text(text: &str) -> Result<(), RtmError> {
    if text.trim().is_empty() {
        return Err(RtmError::handler("the message is empty"));
    }
    if text.chars().count() > MAX_TEXT_CHARS {
        return Err(RtmError::handler(format!(
            "the message is longer than {MAX_TEXT_CHARS} characters"
        )));
    }
    Ok(())
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

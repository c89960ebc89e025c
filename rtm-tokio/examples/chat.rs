//! A small chat web app on RTM, served by axum with the page embedded.
//!
//! `cargo run --release -p rtm-tokio --example chat` then open <http://127.0.0.1:7070/>.
//!
//! - **Auth:** the user name is the token (1–32 letters, digits, `-`, `_`);
//!   no password: this is a demo. Several tabs may use the same name, and
//!   each tab may be a different user (the page keeps the name per tab).
//! - **Rooms** are push tags `room:<name>`: the page subscribes to
//!   `room-message`; `say(room, text)` Pushes `[room, from, text, ts]`.
//! - **Direct messages** are Publish: `dm(to, text)` sends `dm`
//!   `[from, text, ts, to]` to `to` and to the sender's other tabs, on every
//!   server of the cluster: any valid name can be reached, online here or not.
//! - **Presence** is Emit: `presence [names]` to every authenticated
//!   connection after `hello()` (called by the page right after auth) and
//!   after a disconnect; `online()` returns the same list. Per server.
//! - **Status:** `status()` returns `{cluster, broker, reason}` (`broker`:
//!   `"none"` without `--redis`, else `"up"` or `"down"`), and the same object
//!   is emitted as `status [object]` whenever the Redis link goes up or down:
//!   while it is down, rooms and DMs fail (`rtm/broker-unavailable`).
//! - **The page** (`chat/`): rooms, DMs started by clicking a name or typing
//!   one (`@name`), a banner while disconnected or while the Redis link is
//!   down, a drawer for the side bar on phones. Its browser test, in
//!   Chromium: `chat/e2e/` (see the README there).
//!
//! Errors at start are one line on stderr: exit 1 if the address cannot be
//! listened on, 2 for a bad argument (including a bad `--redis` URL).
use std::collections::BTreeSet;
use std::io::IsTerminal;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{ConnectInfo, State};
use axum::http::header;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use clap::Parser;
use rtm_core::broker::BrokerState;
use rtm_tokio::{
    CallContext, ConnMeta, ErrorCode, Identity, RtmError, Server, ServerBuilder, ServerBuilderExt,
    ServerHandle,
};
use serde_json::{json, Value};

const INDEX_HTML: &str = include_str!("chat/index.html");
const CHAT_JS: &str = include_str!("chat/chat.js");
const CHAT_CSS: &str = include_str!("chat/chat.css");
const FAVICON_SVG: &str = include_str!("chat/favicon.svg");

/// Longest message, in characters.
const MAX_TEXT_CHARS: usize = 2000;
/// How often the Redis link's state is looked at (for `status` events).
const BROKER_POLL: Duration = Duration::from_millis(200);
/// How long Redis may take to answer at start before a WARN says it does not.
const BROKER_START_GRACE: Duration = Duration::from_secs(2);

#[derive(Parser)]
#[command(about = "RTM chat: a small web chat on rooms (Push), DMs (Publish) and presence (Emit)")]
struct Cli {
    /// Address to serve the page and the RTM endpoint on.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:7070")]
    listen: SocketAddr,
    /// Redis URL (redis://host:port/), to share rooms and DMs between several
    /// chat servers; comma-separated URLs are the seed nodes of a Redis Cluster.
    #[arg(long, value_name = "URL")]
    redis: Option<String>,
}

/// A reason to stop at start: printed as one line `chat: <message>`.
struct Fatal {
    exit: u8,
    message: String,
}

#[tokio::main]
async fn main() -> ExitCode {
    // Bad arguments: clap prints the reason and exits 2.
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_ansi(std::io::stdout().is_terminal())
        .init();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(fatal) => {
            eprintln!("chat: {}", fatal.message);
            ExitCode::from(fatal.exit)
        }
    }
}

async fn run(cli: Cli) -> Result<(), Fatal> {
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
        let broker = rtm_redis::RedisBroker::new(config, rtm_tokio::TokioRuntime::current())
            .map_err(|err| Fatal {
                // A bad argument, as clap's: exit 2. The message quotes the
                // URL with its password hidden.
                exit: 2,
                message: format!("--redis: {}", broker_error_text(&err)),
            })?;
        builder = builder
            .namespace("chat")
            .broker(std::sync::Arc::new(broker));
    }
    // Bind before starting the RTM server (and its Redis link): a busy port
    // stops here, with nothing else started.
    let listener = tokio::net::TcpListener::bind(cli.listen)
        .await
        .map_err(|err| Fatal {
            exit: 1,
            message: listen_error(cli.listen, &err),
        })?;
    let addr = listener.local_addr().map_err(|err| Fatal {
        exit: 1,
        message: format!("cannot listen on {}: {err}", cli.listen),
    })?;
    let (router, rtm) = app(builder);
    if let Some(url) = &cli.redis {
        let url = redact(url);
        tracing::info!("cluster: rooms and DMs shared through {url}");
    }
    tracing::info!("chat on http://{addr}/ (RTM on ws://{addr}/rtm)");
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
    .await
    .map_err(|err| Fatal {
        exit: 1,
        message: format!("serving on {addr} failed: {err}"),
    })?;
    tracing::info!("stopped");
    Ok(())
}

/// Why binding `addr` failed, and what to do about it.
pub fn listen_error(addr: SocketAddr, err: &std::io::Error) -> String {
    use std::io::ErrorKind;
    let next = SocketAddr::new(addr.ip(), addr.port().checked_add(1).unwrap_or(7070));
    match err.kind() {
        ErrorKind::AddrInUse => format!(
            "cannot listen on {addr}: address already in use \
             (another chat running? pick another port with --listen {next})"
        ),
        ErrorKind::PermissionDenied => format!(
            "cannot listen on {addr}: permission denied \
             (ports below 1024 need privileges: pick another with --listen {})",
            SocketAddr::new(addr.ip(), 7070)
        ),
        ErrorKind::AddrNotAvailable => format!(
            "cannot listen on {addr}: this machine has no address {} \
             (use --listen 127.0.0.1:{} for this machine only, or 0.0.0.0:{} for every interface)",
            addr.ip(),
            addr.port(),
            addr.port()
        ),
        _ => format!("cannot listen on {addr}: {err}"),
    }
}

/// `url` (or comma-separated URLs) with any password shown as `***`.
fn redact(urls: &str) -> String {
    let one = |url: &str| -> String {
        let Some((scheme, rest)) = url.split_once("://") else {
            return url.to_owned();
        };
        let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(end);
        match authority.rsplit_once('@') {
            Some((userinfo, host)) if userinfo.contains(':') => {
                let user = userinfo.split(':').next().unwrap_or("");
                format!("{scheme}://{user}:***@{host}{tail}")
            }
            _ => url.to_owned(),
        }
    };
    urls.split(',').map(one).collect::<Vec<_>>().join(",")
}

/// A broker error as a sentence, without the Redis client's error kind.
fn broker_error_text(err: &rtm_core::broker::BrokerError) -> String {
    use rtm_core::broker::BrokerError;
    let text = match err {
        BrokerError::Unavailable(text) | BrokerError::Failed(text) => text,
    };
    text.replace(" - InvalidClientConfig", "")
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
        .register("status", |ctx: CallContext, _: Vec<Value>| async move {
            Ok::<_, RtmError>(status(&ctx.server))
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

    watch_broker(rtm.clone());

    let router = Router::new()
        .route("/", get(|| async { Html(INDEX_HTML) }))
        .route(
            "/chat.js",
            get(|| async { asset("text/javascript", CHAT_JS) }),
        )
        .route("/chat.css", get(|| async { asset("text/css", CHAT_CSS) }))
        // The page links the SVG; /favicon.ico is what browsers ask for unasked.
        .route(
            "/favicon.svg",
            get(|| async { asset("image/svg+xml", FAVICON_SVG) }),
        )
        .route(
            "/favicon.ico",
            get(|| async { asset("image/svg+xml", FAVICON_SVG) }),
        )
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

/// `status()`: `{cluster, broker, reason}`; `broker` is `"none"` (no
/// `--redis`), `"up"` or `"down"` (rooms and DMs fail until it is up).
pub fn status(server: &ServerHandle) -> Value {
    match server.broker_state() {
        None => json!({ "cluster": false, "broker": "none", "reason": null }),
        Some(BrokerState::Up) => json!({ "cluster": true, "broker": "up", "reason": null }),
        Some(BrokerState::Down { reason }) => {
            json!({ "cluster": true, "broker": "down", "reason": reason })
        }
    }
}

/// With a broker: emits `status [object]` to every signed-in connection each
/// time the link goes up or down, and a WARN if Redis does not answer at
/// start. The server has no hook for broker states; looking every
/// 200 ms costs one lock.
fn watch_broker(rtm: ServerHandle) {
    if rtm.broker_state().is_none() {
        return;
    }
    tokio::spawn(async move {
        let started = Instant::now();
        let mut emitted: Option<bool> = None;
        let mut warned = false;
        let mut tick = tokio::time::interval(BROKER_POLL);
        while !rtm.is_shutting_down() {
            tick.tick().await;
            let now = status(&rtm);
            let up = now["broker"] == "up";
            if emitted != Some(up) {
                emitted = Some(up);
                if let Err(err) = rtm.emit("status", |_| true, &(&now,)) {
                    tracing::warn!(%err, "status not sent");
                }
            }
            // The driver logs every change of the link; this says, once,
            // what a link down at start means for the chat.
            if !up && !warned && started.elapsed() >= BROKER_START_GRACE {
                warned = true;
                let reason = now["reason"].as_str().unwrap_or("");
                tracing::warn!(
                    "Redis unreachable ({reason}): Publish (DMs) and Push (rooms) fail \
                     until it is reachable; retrying in the background"
                );
            }
            warned |= up;
        }
    });
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

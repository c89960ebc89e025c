//! A small chat web app on RTM, served by hyper/axum with the page embedded.
//!
//! `cargo run --release -p rtm-tokio --example chat` then open <http://127.0.0.1:7070/>.
//!
//! The wire contract the page and this server share (issue 17) is in the
//! README's chat section; in short:
//!
//! - **Sign-in** ([`names`]): `auth` data `[name]` or `[name, key]` (or
//!   `[[name, key]]`, as a client sending one auth value does). The name
//!   (1–32 letters, digits, `-`, `_`) is bound to a key (128 random bits,
//!   hex) returned in the auth reply `{user, key}`; while a connection holds
//!   the name and for `--name-hold-secs` (10 min) after the last one left, a
//!   sign-in without that key is refused (4003, `name-taken: …`). With
//!   `--redis` the bindings are shared by every chat server of the cluster.
//!   There is no password: whoever takes a free name first owns it for the
//!   session and the hold after it.
//! - **Rooms** are push tags `room:<name>`: the page subscribes to
//!   `room-message`; `say(room, text, id)` Pushes `[room, from, text, ts, id]`
//!   and returns `{ts}`.
//! - **Room history** (docs/history.md): each room keeps its last
//!   `--room-history` messages (200; 0 turns history off) until
//!   `--room-history-secs` (600 s, 10 min) after its last one, so a page
//!   whose connection dropped gets the messages it missed, in order and
//!   once, when its client reconnects (`since` on its subscribe), on this
//!   server or, with `--redis`, any server of the cluster. Kept in Redis
//!   with `--redis`; else in this server's memory (an in-process
//!   `MemoryHub`, lost with a restart). What cannot be recovered (the
//!   history was lost, trimmed, or the client is new) is said on the page.
//!   Direct messages keep no history.
//! - **Direct messages** are Publish: `dm(to, text, id)` sends `dm`
//!   `[from, text, ts, to, id]` to `to` and to the sender's other tabs, on
//!   every server of the cluster: any valid name can be reached, online here
//!   or not. A first contact counts against budgets of new conversations.
//! - **Messages** ([`messages`]): text rules (line breaks kept, controls and
//!   bidi controls removed), and exactly-once ids (a retry with the same id
//!   is not sent again; it returns the first `{ts}`).
//! - **Presence** ([`presence`]) is Emit: `presence [{joined, left}]`, diffs
//!   coalesced per 250 ms, to every signed-in connection; `hello()` (called
//!   by the page right after auth) and `online()` return the whole sorted
//!   list to their caller. Per server.
//! - **Status:** `status()` returns `{cluster, broker, reason}` (`broker`:
//!   `"none"` without `--redis`, even with room history in memory, else
//!   `"up"` or `"down"`), and the same object
//!   is emitted as `status [object]` whenever the Redis link goes up or down:
//!   while it is down, rooms and DMs fail (`rtm/broker-unavailable`).
//! - **Limits** ([`Budgets`]): every function is rate-limited by the library
//!   (`ServerBuilder::rate_limit`; past it `rtm/too-many-requests`), and so
//!   are sign-ins per address (`ServerBuilder::sign_ins_per_ip`). The page
//!   server ([`http`]) bounds connections per address, request heads (16 KiB,
//!   `--header-read-timeout-secs`) and idle connections (`--idle-timeout-secs`).
//! - **The page** (`chat/`): rooms, DMs started by clicking a name or typing
//!   one (`@name`), a banner while disconnected or while the Redis link is
//!   down, a drawer for the side bar on phones. Its browser test, in
//!   Chromium: `chat/e2e/` (see the README there).
//! - **The client** in the page is `@rtm/client` (`clients/js/`): its browser
//!   bundle, `chat/rtm-client.js`, is a copy made by
//!   `chat/update-client-bundle.sh` (which builds the package into its own
//!   `dist/`) and committed, so this example builds and runs without Node
//!   (`clients/js`'s tests fail if the copy is stale); it is served as
//!   `/rtm-client.js` (nothing is fetched from elsewhere).
//!
//! Errors at start are one line on stderr: exit 1 if the address cannot be
//! listened on, 2 for a bad argument (including a bad `--redis` URL).
// An application, not a library: its types need no `Debug` for anyone.
#![allow(missing_debug_implementations)]

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::header;
use axum::response::{Html, IntoResponse};
use axum::routing::get;
use axum::Router;
use clap::Parser;
use rtm_core::{HistoryConfig, StreamOptions};
use rtm_tokio::broker::{BrokerState, MemoryHub};
use rtm_tokio::{
    CallContext, ErrorCode, Identity, Rate, RateLimit, RtmError, Server, ServerBuilder,
    ServerBuilderExt, ServerHandle, State, SubscribeRequest,
};
use serde_json::{json, Value};

#[path = "chat/server/messages.rs"]
pub mod messages;
#[path = "chat/server/names.rs"]
pub mod names;
#[path = "chat/server/presence.rs"]
pub mod presence;

pub use messages::FirstContact;
pub use names::{NameStore, Names};
pub use rtm_tokio::http::{serve, HttpOptions, PerIpLimit, RtmService};

const INDEX_HTML: &str = include_str!("chat/index.html");
const CHAT_JS: &str = include_str!("chat/chat.js");
/// `@rtm/client`'s browser bundle (built in `clients/js`, committed).
const RTM_CLIENT_JS: &str = include_str!("chat/rtm-client.js");
const CHAT_CSS: &str = include_str!("chat/chat.css");
const FAVICON_SVG: &str = include_str!("chat/favicon.svg");

/// How often the Redis link's state is looked at (for `status` events).
const BROKER_POLL: Duration = Duration::from_millis(200);
/// How long Redis may take to answer at start before a WARN says it does not.
const BROKER_START_GRACE: Duration = Duration::from_secs(2);
/// The default `--sign-ins-per-minute`.
const SIGN_INS_PER_MINUTE: u32 = 60;
/// The default `--sign-in-burst`.
const SIGN_IN_BURST: u32 = 30;

/// The default `--name-hold-secs`.
const NAME_HOLD_SECS: u64 = 600;
/// The default `--room-history`: messages kept per room.
const ROOM_HISTORY: usize = 200;
/// The default `--room-history-secs`: how long a room's history is kept
/// after its last message.
const ROOM_HISTORY_SECS: u64 = 600;

#[derive(Parser)]
#[command(about = "RTM chat: a small web chat on rooms (Push), DMs (Publish) and presence (Emit)")]
struct Cli {
    /// Address to serve the page and the RTM endpoint on (`host:port`; a
    /// name such as `localhost:7070` is resolved).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:7070", value_parser = parse_listen)]
    listen: SocketAddr,
    /// Redis URL (redis://host:port/), to share rooms, DMs and name bindings
    /// between several chat servers; comma-separated URLs are the seed nodes
    /// of a Redis Cluster.
    #[arg(long, value_name = "URL")]
    redis: Option<String>,
    /// Connections one IP address may hold open at once (page loads, RTM
    /// sockets, silent sockets alike); past it a new one is closed at once.
    #[arg(long, value_name = "N", default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..))]
    max_connections_per_ip: u32,
    /// How long a name stays bound to its key after its last connection
    /// left (seconds): meanwhile only that key signs in with it.
    #[arg(long, value_name = "SECS", default_value_t = NAME_HOLD_SECS, value_parser = clap::value_parser!(u64).range(1..))]
    name_hold_secs: u64,
    /// How long an HTTP request head may take to arrive (seconds), from the
    /// socket's open or the previous response; also how long an idle
    /// keep-alive socket stays.
    #[arg(long, value_name = "SECS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    header_read_timeout_secs: u64,
    /// How long an HTTP connection (not an upgraded RTM socket) may move no
    /// byte either way (seconds).
    #[arg(long, value_name = "SECS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    idle_timeout_secs: u64,
    /// Serve Prometheus metrics (`GET /metrics`, docs/metrics.md) on this
    /// address; keep it private (127.0.0.1, or behind your firewall).
    #[arg(long, value_name = "ADDR")]
    metrics_listen: Option<SocketAddr>,
    /// Sign-ins one IP address may make a minute, after a burst of
    /// `--sign-in-burst`; 0 turns the limit off. Past it a sign-in is
    /// refused with `rtm/too-many-requests` and the time to wait.
    #[arg(long, value_name = "N", default_value_t = SIGN_INS_PER_MINUTE)]
    sign_ins_per_minute: u32,
    /// Sign-ins one IP address may make at once.
    #[arg(long, value_name = "N", default_value_t = SIGN_IN_BURST, value_parser = clap::value_parser!(u32).range(1..))]
    sign_in_burst: u32,
    /// Room messages kept per room, so a page that dropped gets what it
    /// missed when it reconnects; 0 keeps no history. In Redis with
    /// `--redis`, else in this server's memory (lost with a restart).
    #[arg(long, value_name = "N", default_value_t = ROOM_HISTORY)]
    room_history: usize,
    /// How long a room's history is kept after its last message (seconds).
    #[arg(long, value_name = "SECS", default_value_t = ROOM_HISTORY_SECS, value_parser = clap::value_parser!(u64).range(1..))]
    room_history_secs: u64,
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
    // Before the server starts: it registers its metrics with the recorder
    // installed then.
    if let Some(addr) = cli.metrics_listen {
        serve_metrics(addr).map_err(|message| Fatal {
            exit: 1,
            message: format!("--metrics-listen {addr}: {message}"),
        })?;
        tracing::info!("metrics on http://{addr}/metrics");
    }
    let mut builder = Server::builder();
    let mut config = ChatConfig {
        name_hold: Duration::from_secs(cli.name_hold_secs),
        ..ChatConfig::default()
    };
    config.budgets.sign_ins_per_ip = (cli.sign_ins_per_minute > 0)
        .then(|| Rate::per_minute(cli.sign_ins_per_minute).with_burst(cli.sign_in_burst));
    // Room history: the `room-message` streams, one per room tag. Their
    // messages are delivered as the broker hands them back (`push` then
    // delivers nothing itself), on every server, in order.
    if cli.room_history > 0 {
        builder = builder.history(HistoryConfig::default().enable(
            "room-message",
            StreamOptions {
                size: cli.room_history,
                ttl: Duration::from_secs(cli.room_history_secs),
            },
        ));
    }
    // Without Redis, the history is kept by an in-process hub of this one
    // server, held here for the server's life. It links to no other
    // server: `status` still says "none".
    let memory_hub = (cli.redis.is_none() && cli.room_history > 0).then(MemoryHub::new);
    if let Some(hub) = &memory_hub {
        builder = builder.broker(Arc::new(hub.broker()));
        config.local_broker = true;
    }
    if let Some(url) = &cli.redis {
        // Push (rooms) and Publish (DMs) then reach users on every chat
        // server sharing this Redis. Presence stays per server (it is an Emit).
        let server_id = builder.config().server_id.clone();
        // Comma-separated URLs: the seed nodes of a Redis Cluster (sharded pub/sub).
        let broker_config = if url.contains(',') {
            rtm_redis::RedisBrokerConfig::cluster(url.split(','), "chat", &server_id)
        } else {
            rtm_redis::RedisBrokerConfig::new(url, "chat", &server_id)
        };
        let broker = rtm_redis::RedisBroker::new(broker_config, rtm_tokio::TokioRuntime::current())
            .map_err(|err| Fatal {
                // A bad argument, as clap's: exit 2. The message quotes the
                // URL with its password hidden.
                exit: 2,
                message: format!("--redis: {}", broker_error_text(&err)),
            })?;
        builder = builder.namespace("chat").broker(Arc::new(broker));
        // The names are bound in the same Redis (the URL is good: the broker took it).
        config.names = NameStore::redis(url, "chat").map_err(|err| Fatal {
            exit: 2,
            message: format!("--redis {}: {err}", redact(url)),
        })?;
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
    let (router, rtm) = app_with(builder, config);
    if let Some(url) = &cli.redis {
        let url = redact(url);
        tracing::info!("cluster: rooms, DMs and names shared through {url}");
    }
    if cli.room_history > 0 {
        let place = if cli.redis.is_some() {
            "Redis"
        } else {
            "memory"
        };
        tracing::info!(
            "room history: the last {} messages of each room, {} s after its last one, in {place}",
            cli.room_history,
            cli.room_history_secs
        );
    }
    tracing::info!("chat on http://{addr}/ (RTM on ws://{addr}/rtm)");
    let shutdown = async move {
        stop_requested().await;
        tracing::info!("shutting down");
        // Closes every RTM socket (1001) once in-flight calls finish; then
        // the page server stops accepting and drains its HTTP connections.
        rtm.shutdown().await;
    };
    let options = HttpOptions {
        header_read_timeout: Duration::from_secs(cli.header_read_timeout_secs),
        idle_timeout: Duration::from_secs(cli.idle_timeout_secs),
        per_ip: Some(PerIpLimit::new(cli.max_connections_per_ip as usize)),
        ..HttpOptions::default()
    };
    serve(listener, router, options, shutdown).await;
    drop(memory_hub);
    tracing::info!("stopped");
    Ok(())
}

/// Installs the Prometheus recorder (histograms with the server's buckets)
/// and serves it on `addr` (any path answers; `/metrics` by convention).
/// Call it inside the tokio runtime, before the server starts.
pub fn serve_metrics(addr: SocketAddr) -> Result<(), String> {
    use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
    let mut exporter = PrometheusBuilder::new().with_http_listener(addr);
    for (name, buckets) in rtm_tokio::metrics::HISTOGRAM_BUCKETS {
        exporter = exporter
            .set_buckets_for_metric(Matcher::Suffix(name.to_owned()), buckets)
            .map_err(|e| e.to_string())?;
    }
    exporter.install().map_err(|e| e.to_string())
}

/// How much each client may make the server do. The defaults are far above
/// what a person typing or clicking does, and far below what hurts others.
#[derive(Debug, Clone, Copy)]
pub struct Budgets {
    /// `say` (a room message to everyone in the room).
    pub say: RateLimit,
    /// `dm`.
    pub dm: RateLimit,
    /// `hello`, `online`, `status` (each on its own).
    pub lists: RateLimit,
    /// Sign-ins from one address.
    pub sign_ins_per_ip: Option<Rate>,
    /// New conversations (a DM to a name not talked to before).
    pub first_contact: FirstContact,
}

impl Default for Budgets {
    fn default() -> Self {
        // 20 messages at once (a paste split in lines, a burst of replies),
        // then 5 a second: nobody types that fast for long. The same per
        // connection and per user (all their tabs together).
        let messages = Rate::per_second(5).with_burst(20);
        let per_message = RateLimit::per_user(messages).and_per_connection(messages);
        Budgets {
            say: per_message,
            dm: per_message,
            // The page calls each once per (re)connect.
            lists: RateLimit::per_connection(Rate::per_second(1).with_burst(5)),
            // One a second, 30 at once: a household or an office behind
            // one address reloading every tab after a network drop still
            // signs in; a script minting throwaway names gets 60 a minute.
            sign_ins_per_ip: Some(Rate::per_minute(SIGN_INS_PER_MINUTE).with_burst(SIGN_IN_BURST)),
            first_contact: FirstContact {
                // "At most 20 new conversations a minute" for anyone.
                per_recipient: Rate::per_minute(20),
                // Starting 10 conversations a minute is a lot for a person.
                per_sender: Rate::per_minute(10),
            },
        }
    }
}

/// The chat's settings beside the RTM server's own.
pub struct ChatConfig {
    /// Where names are bound.
    pub names: NameStore,
    /// How long a name stays bound after its last connection left.
    pub name_hold: Duration,
    /// Rate limits.
    pub budgets: Budgets,
    /// The builder's broker is this server's own in-process hub (room
    /// history without `--redis`), not a link to other servers: `status`
    /// says `"broker":"none"`, `"cluster":false`, and no `status` events
    /// are sent. Default `false`: a broker is a cluster's link.
    pub local_broker: bool,
}

impl Default for ChatConfig {
    fn default() -> Self {
        ChatConfig {
            names: NameStore::Local,
            name_hold: Duration::from_secs(NAME_HOLD_SECS),
            budgets: Budgets::default(),
            local_broker: false,
        }
    }
}

/// [`app_with`] the default settings (names bound in this server).
pub fn app(builder: ServerBuilder) -> (Router, ServerHandle) {
    app_with(builder, ChatConfig::default())
}

/// The chat's RTM server (started) and the axum router serving the page and
/// `/rtm`. Serve the router with [`serve`] (its [`HttpOptions`] bound each
/// address's connections with a [`PerIpLimit`]).
pub fn app_with(builder: ServerBuilder, config: ChatConfig) -> (Router, ServerHandle) {
    let names = Names::new(config.names, config.name_hold);
    let (presence, nudged) = presence::Presence::new();
    let messages = messages::Messages::new(config.budgets.first_contact);
    let budgets = config.budgets;
    let linked = !config.local_broker;

    // What the functions share, as the server's state (each takes it as a
    // `State<Chat>` argument); the auth handler and the hooks capture theirs.
    let chat = Chat {
        presence: presence.clone(),
        messages,
    };
    let (claims, joined, departed) = (names.clone(), presence.clone(), presence.clone());
    let rtm = builder
        .with_state(chat)
        .auth(move |_info, data: Vec<Value>| {
            let (names, presence) = (claims.clone(), joined.clone());
            async move {
                let (name, key) = sign_in_data(&data)?;
                let key = names.claim(&name, key.as_deref()).await?;
                presence.nudge();
                Ok(Identity::new(
                    name.as_str(),
                    json!({ "user": name, "key": key }),
                ))
            }
        })
        .authorize_subscriptions(|req: SubscribeRequest| async move {
            req.event == "room-message"
                && !req.tags.is_empty()
                && req
                    .tags
                    .iter()
                    .all(|tag| tag.strip_prefix("room:").is_some_and(valid_name))
        })
        .on_disconnect(move |info| {
            if let Some(name) = info.user_id() {
                let key = info.authentication()["key"].as_str().unwrap_or_default();
                departed.departed(name, key);
            }
        })
        .register(
            "hello",
            |ctx: CallContext, State(chat): State<Chat>| async move {
                // The caller gets the list now; the others the diff with the
                // next announcement (if the caller is new).
                chat.presence.nudge();
                Ok::<_, RtmError>(presence::online(&ctx.server))
            },
        )
        .register("online", |ctx: CallContext| async move {
            Ok::<_, RtmError>(presence::online(&ctx.server))
        })
        .register("status", move |ctx: CallContext| async move {
            Ok::<_, RtmError>(cluster_status(&ctx.server, linked))
        })
        .register(
            "say",
            |ctx: CallContext, State(chat): State<Chat>, args: Vec<Value>| async move {
                chat.messages.say(&ctx, &args)
            },
        )
        .register(
            "dm",
            |ctx: CallContext, State(chat): State<Chat>, args: Vec<Value>| async move {
                chat.messages.dm(&ctx, &args)
            },
        )
        .rate_limit("say", budgets.say)
        .rate_limit("dm", budgets.dm)
        .rate_limit("hello", budgets.lists)
        .rate_limit("online", budgets.lists)
        .rate_limit("status", budgets.lists)
        .sign_ins_per_ip(budgets.sign_ins_per_ip)
        .embedded();

    presence.start(rtm.clone(), names.clone(), nudged);
    keep_names_held(rtm.clone(), names);
    if linked {
        watch_broker(rtm.clone());
    }

    let router = Router::new()
        .route("/", get(|| async { Html(INDEX_HTML) }))
        .route(
            "/chat.js",
            get(|| async { asset("text/javascript", CHAT_JS) }),
        )
        .route(
            "/rtm-client.js",
            get(|| async { asset("text/javascript", RTM_CLIENT_JS) }),
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
        .route_service("/rtm", RtmService::new(rtm.clone()));
    (router, rtm)
}

/// The state the chat's functions share.
#[derive(Clone)]
struct Chat {
    presence: Arc<presence::Presence>,
    messages: Arc<messages::Messages>,
}

/// `(name, key)` from `auth` data: `[name]`, `[name, key]`, or `[[name,
/// key]]` (a client that sends one auth value). A key that is not 32 hex
/// digits counts as none.
fn sign_in_data(data: &[Value]) -> Result<(String, Option<String>), RtmError> {
    let parts = match data {
        [Value::Array(inner)] => inner.as_slice(),
        _ => data,
    };
    match parts.first().and_then(Value::as_str) {
        Some(name) if valid_name(name) => {
            let key = parts
                .get(1)
                .and_then(Value::as_str)
                .filter(|key| names::valid_key(key));
            Ok((name.to_owned(), key.map(str::to_owned)))
        }
        _ => Err(RtmError::new(
            ErrorCode::AuthRejected,
            "a name is 1 to 32 letters, digits, '-' or '_'",
        )),
    }
}

/// Refreshes the bindings of the names this server's connections hold,
/// every quarter of the hold, until the server shuts down.
fn keep_names_held(rtm: ServerHandle, names: Names) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(names.refresh_every());
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        while !rtm.is_shutting_down() {
            tick.tick().await;
            names.refresh(&presence::held(&rtm)).await;
        }
    });
}

/// `status()`: `{cluster, broker, reason}`; `broker` is `"none"` (no
/// broker), `"up"` or `"down"` (rooms and DMs fail until it is up).
pub fn status(server: &ServerHandle) -> Value {
    cluster_status(server, true)
}

/// [`status`], where a broker that is not a link to other servers
/// (`linked` false: the in-process hub of room history) counts as none.
fn cluster_status(server: &ServerHandle, linked: bool) -> Value {
    match server.broker_state().filter(|_| linked) {
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

fn asset(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, content_type)], body)
}

/// 1 to 32 ASCII letters, digits, `-` or `_`: user names and room names.
pub fn valid_name(name: &str) -> bool {
    (1..=32).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Why binding `addr` failed, and what to do about it.
/// `host:port` to the first address it resolves to.
fn parse_listen(text: &str) -> Result<SocketAddr, String> {
    use std::net::ToSocketAddrs;
    text.to_socket_addrs()
        .map_err(|err| format!("not a host:port address ({err})"))?
        .next()
        .ok_or_else(|| "resolves to no address".to_owned())
}

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
fn broker_error_text(err: &rtm_tokio::broker::BrokerError) -> String {
    err.reason().replace(" - InvalidClientConfig", "")
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

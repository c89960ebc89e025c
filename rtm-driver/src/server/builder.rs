//! Configuring a server: functions, authentication, limits, broker, hooks.

use std::any::Any;
use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize};
use std::sync::Arc;
use std::time::Duration;

use crate::broker::Broker;
use rtm_core::Args;
use rtm_core::Functions;
use rtm_core::{
    ConnInfo, Heartbeat, Identity, Limits, Rate, RateLimit, RtmError, ServerConfig, SharedLimits,
};
use serde::de::DeserializeOwned;

use crate::function::{Decision, Handler, SubscribeRequest};
use crate::metrics::Metrics;
use crate::runtime::RuntimeRef;
use crate::server::broker_link::{self, BrokerLink};
use crate::server::handle::ServerHandle;
use crate::server::options::TransportOptions;
use crate::server::per_ip::PerIpLimit;
use crate::server::routing::Routing;
use crate::server::shared::{AuthHandler, Authorizer, ConnHook, Registered, Shared};
use crate::websocket::handshake::AllowedOrigins;

/// Builds a server. Adapters wrap it (`rtm_tokio::Server::builder()`).
///
/// ```
/// use rtm_driver::{ServerBuilder, CallContext};
/// let builder = ServerBuilder::new()
///     .register("add", |_ctx: CallContext, (a, b): (i64, i64)| async move {
///         Ok::<_, rtm_core::RtmError>(a + b)
///     })
///     .max_in_flight(64);
/// assert_eq!(builder.config().limits.max_in_flight, 64);
/// ```
pub struct ServerBuilder {
    pub(crate) config: ServerConfig,
    pub(crate) auth_timeout: Duration,
    pub(crate) auth: Option<AuthHandler>,
    pub(crate) authorizer: Option<Authorizer>,
    pub(crate) functions: HashMap<String, Registered>,
    /// The application's state ([`ServerBuilder::with_state`]).
    pub(crate) state: Option<Arc<dyn Any + Send + Sync>>,
    pub(crate) broker: Option<Arc<dyn Broker>>,
    pub(crate) on_connect: Option<ConnHook>,
    pub(crate) on_disconnect: Option<ConnHook>,
    pub(crate) on_auth_timeout: Option<ConnHook>,
    pub(crate) transport: TransportOptions,
    /// How long graceful shutdown waits for in-flight calls.
    pub(crate) shutdown_timeout: Duration,
    /// Publishes waiting for the broker, at most.
    pub(crate) broker_backlog: usize,
    /// Bytes of publishes waiting for the broker, at most.
    pub(crate) broker_backlog_bytes: usize,
    /// Rate limits by function name.
    pub(crate) rate_limits: HashMap<String, RateLimit>,
    /// The prefix of the metrics' names.
    pub(crate) metrics_prefix: String,
}

impl std::fmt::Debug for ServerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut functions: Vec<&str> = self.functions.keys().map(String::as_str).collect();
        functions.sort_unstable();
        f.debug_struct("ServerBuilder")
            .field("config", &self.config)
            .field("functions", &functions)
            .field("auth", &self.auth.is_some())
            .field("state", &self.state.is_some())
            .field("broker", &self.broker.is_some())
            .field("transport", &self.transport)
            .finish_non_exhaustive()
    }
}

impl Default for ServerBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl ServerBuilder {
    /// A server with no functions, no authentication and default limits.
    pub fn new() -> Self {
        ServerBuilder {
            config: ServerConfig::new(default_server_id()),
            auth_timeout: ServerConfig::DEFAULT_AUTH_TIMEOUT,
            auth: None,
            authorizer: None,
            functions: HashMap::new(),
            state: None,
            broker: None,
            on_connect: None,
            on_disconnect: None,
            on_auth_timeout: None,
            transport: TransportOptions::default(),
            shutdown_timeout: Duration::from_secs(10),
            broker_backlog: 65_536,
            broker_backlog_bytes: 64 * 1024 * 1024,
            rate_limits: HashMap::new(),
            metrics_prefix: crate::metrics::DEFAULT_PREFIX.to_owned(),
        }
    }

    /// Registers a function under `name`: any closure shape of
    /// [`Handler`] (no arguments, typed arguments, the application's
    /// [`State`](crate::State), raw JSON). Its result becomes the reply. A
    /// second registration of the same name replaces the first.
    ///
    /// ```
    /// use rtm_driver::{CallContext, ServerBuilder, State};
    /// use rtm_core::RtmError;
    /// use std::sync::Arc;
    /// use std::sync::atomic::{AtomicU64, Ordering};
    ///
    /// let builder = ServerBuilder::new()
    ///     .with_state(Arc::new(AtomicU64::new(0)))
    ///     // No arguments (and no context).
    ///     .register("time", || async { Ok::<_, RtmError>(1_700_000_000u64) })
    ///     // No arguments, with the caller: `rtm/unauthenticated` without one.
    ///     .register("whoami", |ctx: CallContext| async move {
    ///         Ok::<_, RtmError>(ctx.caller()?.user_id.to_string())
    ///     })
    ///     // Typed arguments: the `data` array as a tuple.
    ///     .register("add", |_ctx: CallContext, (a, b): (i64, i64)| async move {
    ///         Ok::<_, RtmError>(a + b)
    ///     })
    ///     // The application's state (then, if any, the arguments).
    ///     .register("count", |_ctx: CallContext, State(n): State<Arc<AtomicU64>>| async move {
    ///         Ok::<_, RtmError>(n.fetch_add(1, Ordering::Relaxed) + 1)
    ///     })
    ///     .register("add_to", |_ctx: CallContext, State(n): State<Arc<AtomicU64>>, (k,): (u64,)| async move {
    ///         Ok::<_, RtmError>(n.fetch_add(k, Ordering::Relaxed) + k)
    ///     });
    /// ```
    ///
    /// Raw JSON in and out (for proxies, relays and hot paths): the `data`
    /// array as it came ([`rtm_core::Args`], a zero-copy slice of the frame),
    /// the result as JSON text, no typed (de)serialization in between:
    ///
    /// ```
    /// use rtm_driver::{CallContext, ServerBuilder};
    /// use serde_json::value::RawValue;
    /// // `first(x, ...)` returns `x` as it was sent, byte for byte.
    /// let builder = ServerBuilder::new().register("first", |_ctx: CallContext, args: rtm_core::Args| async move {
    ///     let values: Vec<&RawValue> = serde_json::from_str(args.as_str())?;
    ///     let first = values.first().map_or("null", |v| v.get());
    ///     Ok::<_, rtm_core::RtmError>(RawValue::from_string(first.to_owned())?)
    /// });
    /// ```
    #[must_use]
    pub fn register<M, H: Handler<M>>(self, name: &str, handler: H) -> Self {
        self.function(name, handler.into_erased(), false)
    }

    /// [`ServerBuilder::register`] for a function that runs on a task of its
    /// own instead of its connection's: it is not cancelled when the
    /// connection closes (an ordinary function is: the connection's task
    /// drops it), at the cost of a spawned task per call. Use it for work
    /// that must finish.
    #[must_use]
    pub fn register_detached<M, H: Handler<M>>(self, name: &str, handler: H) -> Self {
        self.function(name, handler.into_erased(), true)
    }

    /// The application's state: functions get it as a
    /// [`State<S>`](crate::State) argument or from
    /// [`CallContext::state`](crate::CallContext::state), anything holding a [`ServerHandle`] from
    /// [`ServerHandle::state`]. One value (make it cheap to clone: an `Arc`,
    /// a pool handle); a second call replaces the first. Asking for a type
    /// the server was not given is `rtm/internal`.
    #[must_use]
    pub fn with_state<S: Send + Sync + 'static>(mut self, state: S) -> Self {
        self.state = Some(Arc::new(state));
        self
    }

    /// Limits how often the function registered as `name` may be called:
    /// per connection, per user, or both (see [`RateLimit`]). A call past
    /// it gets `rtm/too-many-requests` (its message says when to retry) and
    /// the function does not run. No limit by default. For what a client
    /// can make the server send to others (a chat message, a direct
    /// message), so one client cannot flood everyone.
    ///
    /// ```
    /// use rtm_driver::{CallContext, ServerBuilder};
    /// use rtm_core::{Rate, RateLimit, RtmError};
    /// let builder = ServerBuilder::new()
    ///     .register("say", |_ctx: CallContext, (text,): (String,)| async move { Ok::<_, RtmError>(text) })
    ///     .rate_limit("say", RateLimit::per_user(Rate::per_second(5).with_burst(10)));
    /// ```
    #[must_use]
    pub fn rate_limit(mut self, name: &str, limit: RateLimit) -> Self {
        self.rate_limits.insert(name.to_owned(), limit);
        self
    }

    /// Sign-ins (`auth` requests that reach the handler) one peer address
    /// may make, at most (default: no limit); past it the auth is rejected
    /// (4003) before the handler runs. See [`ServerConfig::sign_ins_per_ip`].
    #[must_use]
    pub fn sign_ins_per_ip(mut self, rate: Option<Rate>) -> Self {
        self.config.sign_ins_per_ip = rate;
        self
    }

    fn function(
        mut self,
        name: &str,
        run: crate::function::ErasedFunction,
        detached: bool,
    ) -> Self {
        self.functions
            .insert(name.to_owned(), Registered { run, detached });
        self
    }

    /// Requires authentication: `handler` gets the connection and the
    /// `auth` request's `data` array, deserialized as `A` (a tuple, a
    /// struct…), and answers the connection's [`Identity`] or an error,
    /// which rejects it (4003, with the error's message). `data` that does
    /// not deserialize as `A` is rejected the same way, naming the argument.
    ///
    /// ```
    /// use rtm_driver::ServerBuilder;
    /// use rtm_core::{ConnInfo, ErrorCode, Identity, RtmError};
    /// use std::sync::Arc;
    /// let builder = ServerBuilder::new().auth(|_info: Arc<ConnInfo>, (token,): (String,)| async move {
    ///     match token.strip_prefix("user:") {
    ///         Some(user) => Ok(Identity::new(user, serde_json::Value::Null)),
    ///         None => Err(RtmError::new(ErrorCode::Unauthenticated, "bad token")),
    ///     }
    /// });
    /// ```
    #[must_use]
    pub fn auth<F, Fut, A>(mut self, handler: F) -> Self
    where
        F: Fn(Arc<ConnInfo>, A) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Identity, RtmError>> + Send + 'static,
        A: DeserializeOwned + Send + 'static,
    {
        self.auth = Some(Arc::new(move |info, data: Args| {
            let parsed: A = match data.deserialize() {
                Ok(parsed) => parsed,
                Err(err) => return Box::pin(std::future::ready(Err(err))),
            };
            Box::pin(handler(info, parsed))
        }));
        self
    }

    /// How long a connection may stay unauthenticated (default 10 s; 4008 after).
    #[must_use]
    pub fn auth_timeout(mut self, timeout: Duration) -> Self {
        self.auth_timeout = timeout;
        self
    }

    /// Called when a connection is closed for not authenticating in time.
    /// Like every hook, it runs outside the server's lock (see [`ServerBuilder::on_connect`]).
    #[must_use]
    pub fn on_auth_timeout(mut self, hook: impl Fn(&ConnInfo) + Send + Sync + 'static) -> Self {
        self.on_auth_timeout = Some(Arc::new(hook));
        self
    }

    /// Asks `authorizer` about every push subscription: it gets a
    /// [`SubscribeRequest`] (the connection, the event, the tags) and answers
    /// a `bool` (`false` denies with `rtm/forbidden`) or a
    /// `Result<(), RtmError>` (`Err` denies with that error's code and
    /// message, which the client receives). Without one, every subscription
    /// is allowed. An authorizer that panics denies.
    ///
    /// ```
    /// use rtm_driver::{ServerBuilder, SubscribeRequest};
    /// use rtm_core::{ErrorCode, RtmError};
    /// // Only signed-in users.
    /// let builder = ServerBuilder::new()
    ///     .authorize_subscriptions(|req: SubscribeRequest| async move { req.info.user_id().is_some() });
    /// // With a reason.
    /// let builder = ServerBuilder::new().authorize_subscriptions(|req: SubscribeRequest| async move {
    ///     match req.tags.iter().find(|t| t.starts_with("private-")) {
    ///         Some(tag) => Err(RtmError::new(ErrorCode::Forbidden, format!("'{tag}' of '{}' is private", req.event))),
    ///         None => Ok(()),
    ///     }
    /// });
    /// ```
    #[must_use]
    pub fn authorize_subscriptions<F, Fut, D>(mut self, authorizer: F) -> Self
    where
        F: Fn(SubscribeRequest) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = D> + Send + 'static,
        D: Decision,
    {
        self.authorizer = Some(Arc::new(move |request| {
            let deciding = authorizer(request);
            Box::pin(async move { deciding.await.into_result() })
        }));
        self
    }

    /// Called when a connection opens.
    ///
    /// Hooks run outside the server's lock, so one may call the server
    /// (emit, publish, push through a [`ServerHandle`](crate::ServerHandle)
    /// it holds); a panic in a hook is logged and goes no further.
    #[must_use]
    pub fn on_connect(mut self, hook: impl Fn(&ConnInfo) + Send + Sync + 'static) -> Self {
        self.on_connect = Some(Arc::new(hook));
        self
    }

    /// Called when a connection's state is gone.
    ///
    /// Hooks run outside the server's lock, so one may call the server
    /// (emit, publish, push through a [`ServerHandle`](crate::ServerHandle)
    /// it holds); a panic in a hook is logged and goes no further.
    #[must_use]
    pub fn on_disconnect(mut self, hook: impl Fn(&ConnInfo) + Send + Sync + 'static) -> Self {
        self.on_disconnect = Some(Arc::new(hook));
        self
    }

    /// All limits at once.
    #[must_use]
    pub fn limits(mut self, limits: Limits) -> Self {
        self.config.limits = limits;
        self
    }

    /// Largest text frame accepted (default 1 MiB; larger closes 1009).
    #[must_use]
    pub fn max_frame_bytes(mut self, bytes: usize) -> Self {
        self.config.limits.max_frame_bytes = bytes;
        self
    }

    /// Invokes in flight per connection (default 256).
    #[must_use]
    pub fn max_in_flight(mut self, calls: usize) -> Self {
        self.config.limits.max_in_flight = calls;
        self
    }

    /// Bytes of events that may wait for a connection whose peer stopped
    /// reading (default 1 MiB; at least 1): past it, once its socket has
    /// taken nothing for [`ServerBuilder::slow_consumer_timeout`], the
    /// connection is closed 1013 `rtm/slow-consumer`. See
    /// [`rtm_core::outbound`] for the whole rule.
    #[must_use]
    pub fn max_outbound_bytes(mut self, bytes: usize) -> Self {
        let limits = &mut self.config.limits;
        limits.max_outbound_bytes = bytes.max(1);
        limits.max_outbound_burst_bytes = limits
            .max_outbound_burst_bytes
            .max(limits.max_outbound_bytes);
        self
    }

    /// How long a connection's socket may take no byte, while more than
    /// `max_outbound_bytes` waits for it, before it is closed 1013
    /// `rtm/slow-consumer` (default 1 s; at least 1 ms).
    ///
    /// ```
    /// use std::time::Duration;
    /// let builder = rtm_driver::ServerBuilder::new().slow_consumer_timeout(Duration::from_secs(5));
    /// assert_eq!(builder.config().limits.slow_consumer_timeout, Duration::from_secs(5));
    /// ```
    #[must_use]
    pub fn slow_consumer_timeout(mut self, timeout: Duration) -> Self {
        self.config.limits.slow_consumer_timeout = timeout.max(Duration::from_millis(1));
        self
    }

    /// Bytes that may wait for one connection whatever it does (default 16
    /// MiB; at least `max_outbound_bytes`): a burst larger than this for
    /// one connection closes it 1013 `rtm/slow-consumer` even if it reads.
    #[must_use]
    pub fn max_outbound_burst_bytes(mut self, bytes: usize) -> Self {
        let limits = &mut self.config.limits;
        limits.max_outbound_burst_bytes = bytes.max(limits.max_outbound_bytes);
        self
    }

    /// Push subscriptions the connections of one user may hold together
    /// (default 4,096; `None`: no limit of its own); past it a subscribe
    /// gets `rtm/too-many-subscriptions`. See [`Limits::max_subscriptions_per_user`].
    #[must_use]
    pub fn max_subscriptions_per_user(mut self, subscriptions: Option<usize>) -> Self {
        self.config.limits.max_subscriptions_per_user = subscriptions;
        self
    }

    /// Push subscriptions the connections from one peer address may hold
    /// together (default 16,384; `None`: no limit of its own; behind a
    /// reverse proxy, raise it or use `None`). See [`Limits::max_subscriptions_per_ip`].
    #[must_use]
    pub fn max_subscriptions_per_ip(mut self, subscriptions: Option<usize>) -> Self {
        self.config.limits.max_subscriptions_per_ip = subscriptions;
        self
    }

    /// How long an `auth` or `subscribe` waits for the broker to confirm
    /// the topics it needs (default 10 s; at least 1 ms): past it a
    /// subscribe fails `rtm/broker-unavailable` and an auth goes on
    /// without its user's topic.
    #[must_use]
    pub fn broker_confirm_timeout(mut self, timeout: Duration) -> Self {
        self.config.broker_confirm_timeout = timeout.max(Duration::from_millis(1));
        self
    }

    /// Connections held at once (default 100,000).
    #[must_use]
    pub fn max_connections(mut self, connections: usize) -> Self {
        self.config.limits.max_connections = connections;
        self
    }

    /// Ping schedule and silence deadline; `None` disables both.
    #[must_use]
    pub fn heartbeat(mut self, heartbeat: Option<Heartbeat>) -> Self {
        self.config.heartbeat = heartbeat;
        self
    }

    /// Carries Publish and Push to the other servers sharing this broker.
    #[must_use]
    pub fn broker(mut self, broker: Arc<dyn Broker>) -> Self {
        self.broker = Some(broker);
        self
    }

    /// Which events keep history (default: none; `docs/history.md`). A Push
    /// or Publish of such an event is appended to its stream in the
    /// broker, with a position, and published in one step; every server,
    /// this one too, delivers it when the broker hands it back (so `push`
    /// and `publish` return 0 local deliveries for it). Needs a broker that
    /// keeps history ([`Broker::has_history`]: `rtm_redis::RedisBroker`,
    /// or [`MemoryHub`](crate::broker::MemoryHub) for one server); with
    /// another broker, or none, it is ignored (and said so in the log).
    ///
    /// ```
    /// use rtm_core::{HistoryConfig, StreamOptions};
    /// let builder = rtm_driver::ServerBuilder::new()
    ///     .history(HistoryConfig::default().enable("room.*", StreamOptions::default()));
    /// ```
    #[must_use]
    pub fn history(mut self, history: rtm_core::HistoryConfig) -> Self {
        self.config.history = history;
        self
    }

    /// How many broker commands may wait for the broker before `publish`
    /// and `push` fail with `rtm/broker-unavailable` (default 65,536; at least 1).
    #[must_use]
    pub fn broker_backlog(mut self, commands: usize) -> Self {
        self.broker_backlog = commands.max(1);
        self
    }

    /// How many bytes of Publish and Push may wait for the broker (queued,
    /// or handed to it and not yet answered) before `publish` and `push`
    /// fail with `rtm/broker-unavailable` (default 64 MiB; at least 1). With
    /// the count bound of [`ServerBuilder::broker_backlog`] alone, a broker
    /// that stalls while big events are published could hold 65,536 of them;
    /// this holds their bytes. One publish may take the total past it by its
    /// own size: the check is made before the payload is known.
    #[must_use]
    pub fn broker_backlog_bytes(mut self, bytes: usize) -> Self {
        self.broker_backlog_bytes = bytes.max(1);
        self
    }

    /// The broker topic prefix (default `rtm`).
    #[must_use]
    pub fn namespace(mut self, namespace: &str) -> Self {
        self.config.namespace = namespace.to_owned();
        self
    }

    /// This server's id in the cluster (default: random per process start).
    #[must_use]
    pub fn server_id(mut self, id: &str) -> Self {
        self.config.server_id = id.to_owned();
        self
    }

    /// The WebSocket path (default `/`).
    #[must_use]
    pub fn path(mut self, path: &str) -> Self {
        self.transport.path = path.to_owned();
        self
    }

    /// Serves `wss://`: the adapter's listener speaks TLS with this identity
    /// on every connection, before the WebSocket upgrade (within the same
    /// handshake timeout).
    ///
    /// ```no_run
    /// use rtm_driver::{tls::ServerTls, ServerBuilder};
    /// # fn run() -> Result<(), rtm_driver::tls::TlsError> {
    /// let tls = ServerTls::from_pem_files("fullchain.pem", "privkey.pem")?;
    /// let builder = ServerBuilder::new().tls(tls);
    /// # Ok(()) }
    /// ```
    #[cfg(feature = "tls")]
    #[must_use]
    pub fn tls(mut self, tls: crate::tls::ServerTls) -> Self {
        self.transport.tls = Some(tls);
        self
    }

    /// How long a closing connection waits for its peer to read up to the
    /// close frame and answer it before the socket is dropped (default 2 s).
    #[must_use]
    pub fn close_grace(mut self, grace: Duration) -> Self {
        self.transport.close_grace = grace;
        self
    }

    /// How long a new connection may take to finish its TLS and WebSocket
    /// handshakes before the listener drops it (default 10 s).
    #[must_use]
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.transport.handshake_timeout = timeout;
        self
    }

    /// Which browser origins may open a connection: a handshake with an
    /// `Origin` header that is not allowed gets `403 Forbidden` before the
    /// upgrade (the guard against cross-site WebSocket hijacking). Default:
    /// any origin, since RTM authenticates with a token the page sends, not
    /// with a cookie the browser attaches by itself. Requests without an
    /// `Origin` (non-browser clients) are always allowed.
    ///
    /// ```
    /// use rtm_driver::ServerBuilder;
    /// use rtm_driver::AllowedOrigins;
    /// let builder = ServerBuilder::new()
    ///     .allowed_origins(AllowedOrigins::list(["https://chat.example.com"]));
    /// assert!(!builder.transport().allowed_origins.allows("https://evil.example"));
    /// ```
    #[must_use]
    pub fn allowed_origins(mut self, origins: AllowedOrigins) -> Self {
        self.transport.allowed_origins = origins;
        self
    }

    /// The largest handshake request accepted, in bytes (default 8 KiB;
    /// larger gets 431).
    #[must_use]
    pub fn max_handshake_bytes(mut self, bytes: usize) -> Self {
        self.transport.max_handshake_bytes = bytes.max(256);
        self
    }

    /// Connections one IP address may hold at once, handshakes included
    /// (default: no limit). Past it, a new connection from that address
    /// gets `429 Too Many Requests`. Usually a proxy in front enforces this.
    #[must_use]
    pub fn max_connections_per_ip(mut self, connections: usize) -> Self {
        self.transport.max_connections_per_ip = Some(connections);
        self
    }

    /// Connections in their TLS or WebSocket handshake at once (default
    /// 4,096); past it, a new connection is closed at once.
    #[must_use]
    pub fn max_handshakes(mut self, handshakes: usize) -> Self {
        self.transport.max_handshakes = handshakes.max(1);
        self
    }

    /// Connections from one IP address in their handshake at once (default
    /// `Some(256)`, at least 1; `None` lifts it); past it, a new connection
    /// from that address gets `429 Too Many Requests`. See
    /// [`TransportOptions::max_handshakes_per_ip`].
    #[must_use]
    pub fn max_handshakes_per_ip(mut self, handshakes: Option<usize>) -> Self {
        self.transport.max_handshakes_per_ip = handshakes.map(|n| n.max(1));
        self
    }

    /// The listening socket's accept queue length (default 1,024; at least
    /// 1; Linux caps it at `net.core.somaxconn`); see
    /// [`TransportOptions::listen_backlog`].
    #[must_use]
    pub fn listen_backlog(mut self, connections: u32) -> Self {
        self.transport.listen_backlog = connections.max(1);
        self
    }

    /// How many bytes a closing connection reads and discards while it waits
    /// for the peer's close frame (default 16 MiB); see
    /// [`TransportOptions::close_drain_bytes`].
    #[must_use]
    pub fn close_drain_bytes(mut self, bytes: usize) -> Self {
        self.transport.close_drain_bytes = bytes;
        self
    }

    /// How long graceful shutdown waits for in-flight calls (default 10 s).
    #[must_use]
    pub fn shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.shutdown_timeout = timeout;
        self
    }

    /// Coalesces writes: after a frame is queued for a connection, its writer
    /// waits `delay` for more before writing them all in one socket write
    /// (default zero: the writer only lets the tasks already ready run once,
    /// so replies and events produced in the same scheduler pass share a
    /// write, and adds no timer). Every frame then arrives up to `delay` later
    /// (a little more with a timer of millisecond resolution, such as
    /// tokio's), in exchange for fewer syscalls on both ends when a
    /// connection receives many small events: at 1,000 events/s per
    /// connection, a 1 ms delay turns ~1,000 writes per second into ~500 or
    /// fewer. A close for a slow consumer does not wait; other closes follow
    /// the frames queued before them.
    ///
    /// ```
    /// use std::time::Duration;
    /// let builder = rtm_driver::ServerBuilder::new().write_delay(Duration::from_millis(1));
    /// assert_eq!(builder.transport().write_delay, Duration::from_millis(1));
    /// ```
    #[must_use]
    pub fn write_delay(mut self, delay: Duration) -> Self {
        self.transport.write_delay = delay;
        self
    }

    /// The prefix of every metric's name ([`crate::metrics`]); default
    /// `rtm_` (so `rtm_connections`, `rtm_invocations_total`, …). Two
    /// servers in one process with one recorder need different prefixes to
    /// be told apart.
    ///
    /// ```
    /// let builder = rtm_driver::ServerBuilder::new().metrics_prefix("chat_");
    /// # drop(builder);
    /// ```
    #[must_use]
    pub fn metrics_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.metrics_prefix = prefix.into();
        self
    }

    /// The core configuration as it stands.
    pub fn config(&self) -> &ServerConfig {
        &self.config
    }

    /// Socket-side options for the adapter.
    pub fn transport(&self) -> &TransportOptions {
        &self.transport
    }

    /// Starts the server's background tasks on `runtime` and returns its handle.
    /// Connections are then fed with [`ServerHandle::serve`].
    pub fn start(mut self, runtime: RuntimeRef) -> ServerHandle {
        self.config.auth_timeout = self.auth.as_ref().map(|_| self.auth_timeout);
        self.config.authorize_subscriptions = self.authorizer.is_some();
        self.config.broker = self.broker.is_some();
        let keeps_history = self.broker.as_ref().is_some_and(|b| b.has_history());
        if self.config.history.is_enabled() && !keeps_history {
            tracing::warn!(
                "history is enabled but the broker keeps none (or there is no broker): \
                 events are delivered without it"
            );
            self.config.history = rtm_core::HistoryConfig::default();
        }
        ServerHandle::new(self.into_shared(runtime))
    }

    /// The shared state of a server built from this, with its broker link's tasks started.
    fn into_shared(self, runtime: RuntimeRef) -> Arc<Shared> {
        let builder = self;
        let mut functions = Functions::default();
        let mut handlers = Vec::new();
        let mut named: Vec<_> = builder.functions.into_iter().collect();
        named.sort_by(|a, b| a.0.cmp(&b.0));
        for (name, handler) in named {
            let id = functions.register(&name);
            debug_assert_eq!(id.0 as usize, handlers.len());
            handlers.push(handler);
        }
        for (name, limit) in &builder.rate_limits {
            match functions.id(name) {
                Some(id) => functions.set_rate_limit(id, *limit),
                None => {
                    tracing::warn!(function = %name, "a rate limit for a function not registered: ignored")
                }
            }
        }
        let limits = SharedLimits::new(&functions, &builder.config);
        let limits = (limits.limits_sign_ins()
            || (0..functions.len() as u32).any(|id| limits.limits_users(rtm_core::FunctionId(id))))
        .then(|| std::sync::Mutex::new(limits));
        let (shutdown_tx, shutdown_rx) = async_channel::bounded(1);
        let broker = builder.broker.map(|broker| {
            Arc::new(BrokerLink::new(
                broker,
                builder.broker_backlog,
                builder.broker_backlog_bytes,
            ))
        });
        let metrics = Arc::new(Metrics::new(&builder.metrics_prefix, &functions));
        let routing = Arc::new(Routing::new(&builder.config, metrics.clone()));
        if let Some(link) = &broker {
            broker_link::start(
                link.clone(),
                routing.clone(),
                metrics.clone(),
                runtime.clone(),
            );
        }
        let handshakes_per_ip = builder.transport.max_handshakes_per_ip.map(PerIpLimit::new);
        let per_ip = builder
            .transport
            .max_connections_per_ip
            .map(PerIpLimit::new);
        Arc::new(Shared {
            routing,
            config: Arc::new(builder.config),
            functions: Arc::new(functions),
            limits,
            handlers,
            runtime,
            state: builder.state,
            auth: builder.auth,
            authorizer: builder.authorizer,
            on_connect: builder.on_connect,
            on_disconnect: builder.on_disconnect,
            on_auth_timeout: builder.on_auth_timeout,
            broker,
            transport: builder.transport,
            shutdown_timeout: builder.shutdown_timeout,
            next_conn: AtomicU64::new(0),
            live: AtomicUsize::new(0),
            handshakes: AtomicUsize::new(0),
            handshakes_per_ip,
            per_ip,
            shutting_down: AtomicBool::new(false),
            shutdown_tx,
            shutdown_rx,
            metrics,
        })
    }
}

fn default_server_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    format!("srv-{:016x}", h.finish())
}

//! The shared server state and its cloneable handle.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use futures_util::future::{select, Either};
use futures_util::stream::FuturesOrdered;
use futures_util::{FutureExt, StreamExt};
use rtm_core::broker::{Broker, BrokerError, BrokerEvent, BrokerState};
use rtm_core::{
    Args, BrokerCommand, CloseCode, ConnId, ConnInfo, ErrorCode, FunctionId, RtmError, Server,
    ServerConfig, ServerOutput,
};
use serde::Serialize;
use serde_json::Value;

use crate::function::{CallContext, ErasedFunction};
use crate::runtime::RuntimeRef;
use crate::server::builder::{AuthHandler, Authorizer, ConnHook, ServerBuilder, TransportOptions};
use crate::transport::Outgoing;

/// Publishes handed to the broker and not yet confirmed, at most.
const MAX_PUBLISHES_IN_FLIGHT: usize = 4096;

/// Broker events handled under one lock of the server state, at most.
const MAX_BROKER_EVENTS_PER_LOCK: usize = 256;

/// The two ways into a connection's writer: the ordered, bounded queue, and
/// a one-slot lane for a close that must get through when the queue is full.
pub(crate) struct ConnSender {
    pub(crate) queue: async_channel::Sender<Outgoing>,
    pub(crate) urgent: async_channel::Sender<Outgoing>,
    /// Bytes of text frames queued and not yet handed to the socket.
    pub(crate) queued_bytes: Arc<AtomicUsize>,
}

pub(crate) struct Inner {
    pub(crate) core: Server,
    pub(crate) conns: HashMap<ConnId, ConnSender>,
}

pub(crate) struct Shared {
    inner: Mutex<Inner>,
    pub(crate) runtime: RuntimeRef,
    functions: Vec<ErasedFunction>,
    auth: Option<AuthHandler>,
    authorizer: Option<Authorizer>,
    pub(crate) on_connect: Option<ConnHook>,
    on_disconnect: Option<ConnHook>,
    on_auth_timeout: Option<ConnHook>,
    broker: Option<Arc<dyn Broker>>,
    broker_tx: Option<async_channel::Sender<BrokerCommand>>,
    pub(crate) transport: TransportOptions,
    pub(crate) config: ServerConfig,
    pub(crate) shutting_down: AtomicBool,
    shutdown_tx: async_channel::Sender<()>,
    shutdown_rx: async_channel::Receiver<()>,
    pub(crate) active: AtomicUsize,
    broker_errors: AtomicU64,
}

/// A running server: cloneable, usable from functions and from outside.
///
/// Emit, Publish and Push take their arguments as anything that serializes
/// to a JSON array (a tuple, a `Vec`, a slice): `("Hello from server!",)`.
#[derive(Clone)]
pub struct ServerHandle {
    pub(crate) shared: Arc<Shared>,
}

impl ServerHandle {
    pub(crate) fn start(builder: ServerBuilder, runtime: RuntimeRef) -> ServerHandle {
        let mut core = Server::new(builder.config.clone());
        let mut functions = Vec::new();
        let mut named: Vec<_> = builder.functions.into_iter().collect();
        named.sort_by(|a, b| a.0.cmp(&b.0));
        for (name, function) in named {
            let id = core.register_function(&name);
            debug_assert_eq!(id.0 as usize, functions.len());
            functions.push(function);
        }
        let (broker_tx, broker_rx) = match builder.broker {
            Some(_) => {
                let (tx, rx) = async_channel::unbounded();
                (Some(tx), Some(rx))
            }
            None => (None, None),
        };
        let (shutdown_tx, shutdown_rx) = async_channel::bounded(1);
        let shared = Arc::new(Shared {
            inner: Mutex::new(Inner {
                core,
                conns: HashMap::new(),
            }),
            runtime: runtime.clone(),
            functions,
            auth: builder.auth,
            authorizer: builder.authorizer,
            on_connect: builder.on_connect,
            on_disconnect: builder.on_disconnect,
            on_auth_timeout: builder.on_auth_timeout,
            broker: builder.broker,
            broker_tx,
            transport: builder.transport,
            config: builder.config,
            shutting_down: AtomicBool::new(false),
            shutdown_tx,
            shutdown_rx,
            active: AtomicUsize::new(0),
            broker_errors: AtomicU64::new(0),
        });
        let handle = ServerHandle { shared };
        runtime.spawn(Box::pin(handle.clone().timer_task()));
        if let Some(rx) = broker_rx {
            handle.start_broker(rx);
        }
        handle
    }

    // ----- sending -----

    /// Emit: sends `event` to every connection on this server that `filter`
    /// accepts (only authenticated ones on a server with auth). Returns how many.
    ///
    /// The event is encoded once; every connection gets the same bytes.
    /// `filter` runs under the server's lock, once per connection: keep it a
    /// quick test of [`ConnInfo`] that does not call the server.
    pub fn emit<A: Serialize + ?Sized>(
        &self,
        event: &str,
        filter: impl FnMut(&ConnInfo) -> bool,
        args: &A,
    ) -> Result<usize, RtmError> {
        let args = Args::encode(args)?;
        self.shared
            .with_core(|core| core.emit(event, filter, &args))
    }

    /// Publish: sends `event` to every connection of `user` on every server
    /// sharing the broker. Needs a server with authentication; fails with
    /// `rtm/broker-unavailable` (nothing sent) while the broker is down.
    /// Returns the number of local deliveries.
    pub fn publish<A: Serialize + ?Sized>(
        &self,
        user: &str,
        event: &str,
        args: &A,
    ) -> Result<usize, RtmError> {
        self.publish_args(user, event, &Args::encode(args)?)
    }

    /// Push: sends `event` once to every connection, on every server,
    /// subscribed to `event` with at least one of `tags`. Returns the number
    /// of local deliveries.
    pub fn push<A: Serialize + ?Sized>(
        &self,
        event: &str,
        tags: &[String],
        args: &A,
    ) -> Result<usize, RtmError> {
        self.push_args(event, tags, &Args::encode(args)?)
    }

    /// [`ServerHandle::emit`] with arguments already encoded.
    pub fn emit_args(
        &self,
        event: &str,
        filter: impl FnMut(&ConnInfo) -> bool,
        args: &Args,
    ) -> Result<usize, RtmError> {
        self.shared.with_core(|core| core.emit(event, filter, args))
    }

    /// [`ServerHandle::publish`] with arguments already encoded.
    pub fn publish_args(&self, user: &str, event: &str, args: &Args) -> Result<usize, RtmError> {
        self.check_broker_backlog()?;
        self.shared
            .with_core(|core| core.publish(user, event, args))
    }

    /// [`ServerHandle::push`] with arguments already encoded.
    pub fn push_args(&self, event: &str, tags: &[String], args: &Args) -> Result<usize, RtmError> {
        self.check_broker_backlog()?;
        self.shared.with_core(|core| core.push(event, tags, args))
    }

    /// Broker commands waiting to be handed to the broker (0 without one);
    /// see [`ServerBuilder::broker_backlog`].
    pub fn broker_backlog_len(&self) -> usize {
        self.shared.broker_tx.as_ref().map_or(0, |tx| tx.len())
    }

    /// `rtm/broker-unavailable` while the broker's backlog is at its bound.
    fn check_broker_backlog(&self) -> Result<(), RtmError> {
        let bound = self.shared.transport.broker_backlog;
        match &self.shared.broker_tx {
            Some(tx) if tx.len() >= bound => Err(RtmError::new(
                ErrorCode::BrokerUnavailable,
                format!("broker backlog full ({bound} commands waiting for the broker)"),
            )),
            _ => Ok(()),
        }
    }

    /// The runtime the server runs on (to sleep or spawn from a function).
    pub fn runtime(&self) -> &RuntimeRef {
        &self.shared.runtime
    }

    /// Closes one connection with this code and reason.
    pub fn close_connection(&self, conn: ConnId, code: CloseCode, reason: &'static str) {
        self.shared
            .with_core(|core| core.close_connection(conn, code, reason));
    }

    // ----- getters -----

    /// Connections open now.
    pub fn connection_count(&self) -> usize {
        self.shared.with_core(|core| core.connection_count())
    }

    /// A snapshot of every connection's info.
    pub fn connections(&self) -> Vec<Arc<ConnInfo>> {
        self.shared
            .with_core(|core| core.connections().cloned().collect())
    }

    /// The broker topics this server needs now (empty without a broker).
    pub fn broker_topics(&self) -> Vec<rtm_core::Topic> {
        self.shared
            .with_core(|core| core.broker_topics().cloned().collect())
    }

    /// The broker's state; `None` without a broker.
    pub fn broker_state(&self) -> Option<BrokerState> {
        self.shared.broker.as_ref().map(|b| b.state())
    }

    /// Broker operations that failed so far.
    pub fn broker_errors(&self) -> u64 {
        self.shared.broker_errors.load(Ordering::Relaxed)
    }

    /// The server's configuration.
    pub fn config(&self) -> &ServerConfig {
        &self.shared.config
    }

    /// Socket-side options (path, buffers) for adapters.
    pub fn transport(&self) -> &TransportOptions {
        &self.shared.transport
    }

    /// Whether [`ServerHandle::shutdown`] has begun.
    pub fn is_shutting_down(&self) -> bool {
        self.shared.shutting_down.load(Ordering::SeqCst)
    }

    /// Completes when shutdown begins (for accept loops).
    pub async fn shutdown_started(&self) {
        // The channel is closed, never written: recv completes with Err then.
        let _ = self.shared.shutdown_rx.recv().await;
    }

    /// Graceful shutdown: stop accepting, let in-flight calls finish (up to
    /// the shutdown timeout), then close every connection with 1001 and wait
    /// (briefly) for their tasks to end.
    pub async fn shutdown(&self) {
        if self.shared.shutting_down.swap(true, Ordering::SeqCst) {
            tracing::debug!("shutdown already begun");
        } else {
            tracing::info!(
                connections = self.connection_count(),
                "shutting down: in-flight calls finish, then every connection closes with 1001"
            );
        }
        self.shared.shutdown_tx.close();
        let deadline = Instant::now() + self.shared.transport.shutdown_timeout;
        while self.shared.with_core(|core| core.total_in_flight()) > 0 && Instant::now() < deadline
        {
            self.shared.runtime.sleep(Duration::from_millis(10)).await;
        }
        self.shared
            .with_core(|core| core.close_all(CloseCode::GOING_AWAY, "server shutting down"));
        let deadline = Instant::now() + self.shared.transport.close_grace;
        while self.shared.active.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
            self.shared.runtime.sleep(Duration::from_millis(10)).await;
        }
    }

    // ----- background tasks -----

    async fn timer_task(self) {
        loop {
            let next = self.shared.with_core(|core| core.poll_timeout());
            let now = Instant::now();
            // Wake at least every 100 ms: deadlines added meanwhile are never late by more.
            let wait = next
                .map_or(Duration::from_millis(100), |at| {
                    at.saturating_duration_since(now)
                })
                .min(Duration::from_millis(100));
            if self.is_shutting_down() && self.shared.active.load(Ordering::SeqCst) == 0 {
                return;
            }
            self.shared.runtime.sleep(wait).await;
            self.shared
                .with_core(|core| core.handle_timeout(Instant::now()));
        }
    }

    fn start_broker(&self, commands: async_channel::Receiver<BrokerCommand>) {
        let Some(broker) = self.shared.broker.clone() else {
            return;
        };
        let (events_tx, events_rx) = async_channel::unbounded::<BrokerEvent>();
        let sink: rtm_core::broker::BrokerSink = Arc::new(move |event| {
            let _ = events_tx.try_send(event);
        });
        let handle = self.clone();
        let starter = broker.clone();
        self.shared.runtime.spawn(Box::pin(async move {
            if let Err(err) = starter.start(sink).await {
                tracing::error!(%err, "broker failed to start");
                handle
                    .shared
                    .with_core(|core| core.handle_broker_state(false));
            }
            let failed = |err: BrokerError, command: &dyn std::fmt::Debug| {
                handle.shared.broker_errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(%err, ?command, "broker operation failed");
            };
            // Commands start in order. Publishes are not awaited one by one:
            // brokers queue a publish when it is called (MemoryHub and
            // RedisBroker do), so Publish order per server is kept while many
            // are in flight. A subscribe or unsubscribe first waits for every
            // earlier publish, so their relative order is kept too.
            let mut publishing = FuturesOrdered::new();
            loop {
                let command = if publishing.is_empty() {
                    commands.recv().await.ok()
                } else if publishing.len() >= MAX_PUBLISHES_IN_FLIGHT {
                    if let Some((topic, Err(err))) = publishing.next().await {
                        failed(err, &topic);
                    }
                    continue;
                } else {
                    let recv = commands.recv();
                    futures_util::pin_mut!(recv);
                    match select(recv, publishing.next()).await {
                        Either::Left((command, _)) => command.ok(),
                        Either::Right((done, _)) => {
                            if let Some((topic, Err(err))) = done {
                                failed(err, &topic);
                            }
                            continue;
                        }
                    }
                };
                let Some(command) = command else { break };
                if let BrokerCommand::Publish { topic, payload } = command {
                    let publish = broker.publish(&topic, payload);
                    publishing.push_back(publish.map(move |result| (topic, result)));
                    continue;
                }
                while let Some(done) = publishing.next().await {
                    if let (topic, Err(err)) = done {
                        failed(err, &topic);
                    }
                }
                let result = match &command {
                    BrokerCommand::Subscribe(topic) => {
                        let result = broker.subscribe(topic).await;
                        // Subscriptions waiting for this topic are acknowledged now.
                        let ok = result.is_ok();
                        handle
                            .shared
                            .with_core(|core| core.handle_topic_subscribed(topic, ok));
                        result
                    }
                    BrokerCommand::Unsubscribe(topic) => broker.unsubscribe(topic).await,
                    _ => Ok(()),
                };
                if let Err(err) = result {
                    failed(err, &command);
                }
            }
            // The server is gone: let the publishes already started finish.
            while let Some(done) = publishing.next().await {
                if let (topic, Err(err)) = done {
                    failed(err, &topic);
                }
            }
        }));
        let handle = self.clone();
        self.shared.runtime.spawn(Box::pin(async move {
            let mut batch = Vec::with_capacity(MAX_BROKER_EVENTS_PER_LOCK);
            while let Ok(first) = events_rx.recv().await {
                // Everything that arrived meanwhile, in order, under one lock:
                // fewer lock round trips, and each connection's writer finds
                // a burst to send with one flush.
                batch.push(first);
                while batch.len() < MAX_BROKER_EVENTS_PER_LOCK {
                    match events_rx.try_recv() {
                        Ok(event) => batch.push(event),
                        Err(_) => break,
                    }
                }
                handle.shared.with_core(|core| {
                    for event in batch.drain(..) {
                        match event {
                            BrokerEvent::Message { topic, payload } => {
                                if let Err(err) =
                                    core.handle_broker_message(topic.as_str(), payload)
                                {
                                    tracing::warn!(%err, %topic, "broker message dropped");
                                }
                            }
                            BrokerEvent::State(state) => {
                                log_broker_state(&state, core.broker_up());
                                core.handle_broker_state(state == BrokerState::Up);
                            }
                        }
                    }
                });
            }
        }));
    }
}

/// One line per broker state change: down at WARN (with what stops
/// working), back up at INFO.
fn log_broker_state(state: &BrokerState, was_up: bool) {
    match state {
        BrokerState::Down { reason } => tracing::warn!(
            %reason,
            "broker down: Publish and Push fail with rtm/broker-unavailable until it is reachable"
        ),
        BrokerState::Up if was_up => tracing::info!("broker up"),
        BrokerState::Up => tracing::info!("broker up again: Publish and Push work"),
    }
}

/// Calls an application hook; a panic in it is logged, never spread into
/// the server task that happened to run it.
pub(crate) fn call_hook(hook: &ConnHook, info: &ConnInfo) {
    if std::panic::catch_unwind(AssertUnwindSafe(|| hook(info))).is_err() {
        tracing::error!(conn = %info.id, "a connection hook panicked");
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves consistent core state
        // (every core method is panic-free by design); keep serving.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `f` on the core, then carries out every output it produced.
    pub(crate) fn with_core<T>(self: &Arc<Self>, f: impl FnOnce(&mut Server) -> T) -> T {
        self.with_inner(|inner| f(&mut inner.core))
    }

    /// Runs `f` on the whole inner state (core and connection senders), then
    /// drains; the application's hooks run last, once the lock is released,
    /// so a hook may call the server (emit, publish, …) without deadlocking.
    pub(crate) fn with_inner<T>(self: &Arc<Self>, f: impl FnOnce(&mut Inner) -> T) -> T {
        let mut inner = self.lock();
        let value = f(&mut inner);
        let mut hooks = Vec::new();
        self.drain(&mut inner, &mut hooks);
        drop(inner);
        for (hook, info) in hooks {
            call_hook(&hook, &info);
        }
        value
    }

    fn drain(self: &Arc<Self>, inner: &mut Inner, hooks: &mut Vec<(ConnHook, Arc<ConnInfo>)>) {
        while let Some(output) = inner.core.poll_output() {
            match output {
                ServerOutput::Transmit { conn, frame } => {
                    let Some(sender) = inner.conns.get(&conn) else {
                        continue;
                    };
                    let queued = sender.queued_bytes.load(Ordering::Relaxed);
                    if queued + frame.len() > self.config.limits.max_outbound_bytes {
                        tracing::warn!(%conn, queued, "slow consumer: outbound bound passed");
                        inner.core.handle_slow_consumer(conn);
                    } else {
                        sender
                            .queued_bytes
                            .fetch_add(frame.len(), Ordering::Relaxed);
                        let _ = sender.queue.try_send(Outgoing::Text(frame));
                    }
                }
                ServerOutput::Close { conn, code, reason } => {
                    tracing::debug!(%conn, code = code.0, reason, "closing");
                    if let Some(sender) = inner.conns.remove(&conn) {
                        let close = Outgoing::Close(code.0, reason.to_owned());
                        // Behind a full queue (a slow consumer) the close jumps the line.
                        let queued = sender.queued_bytes.load(Ordering::Relaxed);
                        if queued >= self.config.limits.max_outbound_bytes / 2 {
                            let _ = sender.urgent.try_send(close);
                        } else {
                            let _ = sender.queue.try_send(close);
                        }
                    }
                }
                ServerOutput::Ping { conn } => {
                    if let Some(sender) = inner.conns.get(&conn) {
                        let _ = sender.queue.try_send(Outgoing::Ping);
                    }
                }
                ServerOutput::Authenticate { ticket, info, data } => {
                    let Some(auth) = self.auth.clone() else {
                        inner
                            .core
                            .handle_auth_result(ticket, Err(RtmError::internal("no auth handler")));
                        continue;
                    };
                    let shared = self.clone();
                    self.runtime.spawn(Box::pin(async move {
                        let data: Vec<Value> = data.deserialize().unwrap_or_default();
                        let conn = info.id;
                        let result = guarded(auth(data, info)).await;
                        match &result {
                            Ok(identity) => {
                                tracing::debug!(%conn, user = %identity.user_id, "authenticated");
                            }
                            Err(err) => tracing::debug!(%conn, %err, "authentication rejected"),
                        }
                        shared.with_core(|core| core.handle_auth_result(ticket, result));
                    }));
                }
                ServerOutput::Invoke {
                    ticket,
                    function,
                    info,
                    args,
                } => self.spawn_function(ticket, function, info, args),
                ServerOutput::Authorize { ticket, info } => {
                    let Some(authorizer) = self.authorizer.clone() else {
                        inner.core.handle_authorize_result(ticket, Ok(()));
                        continue;
                    };
                    let shared = self.clone();
                    let (event, tags) = (ticket.event().to_owned(), ticket.tags().to_vec());
                    self.runtime.spawn(Box::pin(async move {
                        let allowed = AssertUnwindSafe(authorizer(info, event, tags))
                            .catch_unwind()
                            .await
                            .unwrap_or(false);
                        let result = if allowed {
                            Ok(())
                        } else {
                            Err(RtmError::new(ErrorCode::Forbidden, "subscription denied"))
                        };
                        shared.with_core(|core| core.handle_authorize_result(ticket, result));
                    }));
                }
                ServerOutput::AuthTimedOut { info } => {
                    tracing::info!(conn = %info.id, "authentication timed out");
                    if let Some(hook) = &self.on_auth_timeout {
                        hooks.push((hook.clone(), info));
                    }
                }
                ServerOutput::PeerSilent { info } => {
                    tracing::info!(conn = %info.id, "peer silent past the heartbeat deadline");
                }
                ServerOutput::Disconnected { info } => {
                    inner.conns.remove(&info.id);
                    tracing::debug!(conn = %info.id, "disconnected");
                    if let Some(hook) = &self.on_disconnect {
                        hooks.push((hook.clone(), info));
                    }
                }
                ServerOutput::Broker(command) => {
                    if let Some(tx) = &self.broker_tx {
                        let _ = tx.try_send(command);
                    }
                }
                _ => {}
            }
        }
    }

    fn spawn_function(
        self: &Arc<Self>,
        ticket: rtm_core::CallTicket,
        function: FunctionId,
        info: Arc<ConnInfo>,
        args: Args,
    ) {
        let Some(handler) = self.functions.get(function.0 as usize).cloned() else {
            let shared = self.clone();
            // Cannot happen: ids come from registration. Answer rather than leak the call.
            self.runtime.spawn(Box::pin(async move {
                shared.with_core(|core| {
                    core.handle_call_result::<Value>(ticket, Err(RtmError::internal("unknown id")))
                });
            }));
            return;
        };
        let shared = self.clone();
        let ctx = CallContext {
            info,
            server: ServerHandle {
                shared: self.clone(),
            },
        };
        self.runtime.spawn(Box::pin(async move {
            let result = match std::panic::catch_unwind(AssertUnwindSafe(|| handler(ctx, args))) {
                Ok(running) => guarded(running).await,
                Err(_) => Err(panicked()),
            };
            shared.with_core(|core| match &result {
                Ok(raw) => core.handle_call_result(ticket, Ok(&**raw)),
                Err(err) => core.handle_call_result::<Value>(ticket, Err(err.clone())),
            });
        }));
    }
}

fn panicked() -> RtmError {
    RtmError::internal("the function panicked")
}

/// Awaits a handler's future; a panic inside becomes `rtm/internal`.
async fn guarded<T>(
    future: impl std::future::Future<Output = Result<T, RtmError>>,
) -> Result<T, RtmError> {
    match AssertUnwindSafe(future).catch_unwind().await {
        Ok(result) => result,
        Err(_) => {
            tracing::error!("a handler panicked");
            Err(panicked())
        }
    }
}

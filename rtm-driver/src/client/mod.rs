//! The client driver: one task owns an [`rtm_core::Client`] and the socket,
//! and serves a cloneable [`ClientHandle`].
//!
//! Every piece of client state (request ids, pending calls and their
//! deadlines, the offline queue, push subscriptions to re-send, the reconnect
//! schedule) lives in the core; this task only moves bytes, runs the timer
//! and dispatches events to callbacks.

pub(crate) mod connector;

use std::collections::{HashMap, VecDeque};
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use futures_channel::oneshot;
use futures_util::{FutureExt, Sink, Stream, StreamExt};
use rtm_core::client::{CallId, ClientEvent, ClientState};
use rtm_core::{Args, Client, ClientConfig, ClientOutput, ErrorCode, RtmError};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::value::RawValue;

use crate::messages::{Incoming, Outgoing, WriteError};
use crate::runtime::{BoxFuture, RuntimeRef};

/// The read half of a client socket.
pub type IncomingStream = Pin<Box<dyn Stream<Item = Incoming> + Send>>;
/// The write half of a client socket.
pub type OutgoingSink = Pin<Box<dyn Sink<Outgoing, Error = WriteError> + Send>>;
/// Opens a new socket to the server (called at start and on every reconnect).
pub type Connector =
    Arc<dyn Fn() -> BoxFuture<Result<(IncomingStream, OutgoingSink), ConnectError>> + Send + Sync>;

/// Why a [`Connector`] could not open a socket.
///
/// ```
/// use rtm_driver::ConnectError;
/// // Plain strings are transient failures: the client retries on its schedule.
/// let refused = ConnectError::from("connection refused".to_owned());
/// assert!(matches!(refused, ConnectError::Retry { .. }));
/// ```
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// Worth another attempt: the server is down, refused, or the handshake failed.
    #[error("{reason}")]
    Retry {
        /// What happened, for a person.
        reason: String,
        /// The underlying error (a socket's, TLS's, the handshake's).
        #[source]
        source: Option<rtm_broker::Cause>,
    },
    /// No attempt can succeed as configured (e.g. a malformed URL): the
    /// client reports this error, fails every call with it and closes for good.
    #[error(transparent)]
    Fatal(RtmError),
}

impl ConnectError {
    /// A failure worth another attempt.
    pub fn retry(reason: impl Into<String>) -> Self {
        ConnectError::Retry {
            reason: reason.into(),
            source: None,
        }
    }

    /// The same failure, caused by `cause` (kept as its source).
    #[must_use]
    pub fn caused_by(self, cause: impl std::error::Error + Send + Sync + 'static) -> Self {
        match self {
            ConnectError::Retry { reason, .. } => ConnectError::Retry {
                reason,
                source: Some(Arc::new(cause)),
            },
            fatal @ ConnectError::Fatal(_) => fatal,
        }
    }
}

impl From<String> for ConnectError {
    fn from(message: String) -> Self {
        ConnectError::retry(message)
    }
}

type Callback = Arc<dyn Fn(&Args) + Send + Sync>;
type Reply = oneshot::Sender<Result<Box<RawValue>, RtmError>>;

enum Command {
    Call {
        function: String,
        args: Args,
        done: oneshot::Sender<Result<(), RtmError>>,
    },
    CallWait {
        function: String,
        args: Args,
        reply: Reply,
    },
    SubscribePush {
        event: String,
        tags: Vec<String>,
        reply: Reply,
    },
    UnsubscribePush {
        event: String,
        tags: Vec<String>,
    },
    Close,
}

#[derive(Default)]
struct Listeners {
    next: u64,
    events: HashMap<String, Vec<(u64, Callback)>>,
    lifecycle: Vec<async_channel::Sender<ClientEvent>>,
    state: Option<ClientState>,
    /// The last error event: why a client ended `Closed`, for a `wait_open`
    /// that starts listening after the fact.
    last_error: Option<RtmError>,
    /// Why the last connection (or attempt) closed: what a `wait_open` that
    /// times out reports.
    last_closed: Option<String>,
    /// Push guards alive per (event, tag): the server is told to unsubscribe
    /// a tag only when the last guard holding it is dropped.
    push_guards: HashMap<(String, String), usize>,
}

/// A connected (or connecting) client: cloneable; the connection closes when
/// [`ClientHandle::close`] is called or the last handle is dropped.
#[derive(Clone)]
pub struct ClientHandle {
    commands: async_channel::Sender<Command>,
    listeners: Arc<Mutex<Listeners>>,
    runtime: RuntimeRef,
}

impl std::fmt::Debug for ClientHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientHandle")
            .field("state", &self.state())
            .finish_non_exhaustive()
    }
}

/// Options of a client, shared by every adapter.
///
/// ```
/// use std::time::Duration;
/// let options = rtm_driver::ClientOptions::default()
///     .auth(serde_json::json!("user:alice"))
///     .reconnect_delay(Duration::from_millis(500))
///     .call_timeout(Duration::from_secs(5));
/// assert_eq!(options.core.offline_queue, 1024);
/// ```
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// The state machine's options: auth data, call timeout, offline queue, reconnect schedule.
    pub core: ClientConfig,
    /// Largest frame accepted from the server (default 16 MiB).
    pub max_frame_bytes: usize,
    /// How long `connect` waits for the first open (and auth) (default 10 s).
    pub connect_timeout: Duration,
    /// What a `wss://` server must prove; `None` (default): Mozilla's roots
    /// ([`ClientTls::webpki_roots`](crate::tls::ClientTls::webpki_roots)).
    #[cfg(feature = "tls")]
    pub tls: Option<crate::tls::ClientTls>,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            core: ClientConfig {
                jitter_seed: random_seed(),
                ..ClientConfig::default()
            },
            max_frame_bytes: 16 * 1024 * 1024,
            connect_timeout: Duration::from_secs(10),
            #[cfg(feature = "tls")]
            tls: None,
        }
    }
}

impl ClientOptions {
    /// Authenticates with this value on every (re)open (`data: [value]`).
    #[must_use]
    pub fn auth(mut self, data: serde_json::Value) -> Self {
        self.core.auth_data = Some(data);
        self
    }

    /// Reconnects after this fixed delay (the JS client's `reconnectDelayMs`); zero disables reconnecting.
    #[must_use]
    pub fn reconnect_delay(mut self, delay: Duration) -> Self {
        self.core.reconnect = if delay.is_zero() {
            rtm_core::Reconnect::Never
        } else {
            rtm_core::Reconnect::Fixed(delay)
        };
        self
    }

    /// Reconnects on this schedule (e.g. exponential backoff with jitter).
    #[must_use]
    pub fn reconnect(mut self, schedule: rtm_core::Reconnect) -> Self {
        self.core.reconnect = schedule;
        self
    }

    /// Fails calls without a reply after this long with `rtm/timeout`.
    #[must_use]
    pub fn call_timeout(mut self, timeout: Duration) -> Self {
        self.core.call_timeout = Some(timeout);
        self
    }

    /// Queues at most this many calls while offline (`rtm/queue-full` beyond).
    #[must_use]
    pub fn offline_queue(mut self, calls: usize) -> Self {
        self.core.offline_queue = calls;
        self
    }

    /// How long `connect` waits for the first open.
    #[must_use]
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// The server's liveness check (default 25 s / 60 s; see
    /// [`ClientConfig::heartbeat`]): ping after `interval` of silence, count
    /// the connection as lost and reconnect after `timeout`. `None`: never.
    #[must_use]
    pub fn heartbeat(mut self, heartbeat: Option<rtm_core::Heartbeat>) -> Self {
        self.core.heartbeat = heartbeat;
        self
    }

    /// Trust these roots for `wss://` instead of Mozilla's (a private CA, a
    /// self-signed server).
    #[cfg(feature = "tls")]
    #[must_use]
    pub fn tls(mut self, tls: crate::tls::ClientTls) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Largest frame accepted from the server.
    #[must_use]
    pub fn max_frame_bytes(mut self, bytes: usize) -> Self {
        self.max_frame_bytes = bytes;
        self
    }
}

fn random_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(Instant::now().elapsed().as_nanos());
    h.finish()
}

/// An event subscription; dropping it unsubscribes.
#[must_use = "dropping a Subscription unsubscribes it"]
pub struct Subscription {
    listeners: Weak<Mutex<Listeners>>,
    event: String,
    id: u64,
    push: Option<(Vec<String>, async_channel::Sender<Command>)>,
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("event", &self.event)
            .finish_non_exhaustive()
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut push = self.push.take();
        if let Some(listeners) = self.listeners.upgrade() {
            let mut l = listeners.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(list) = l.events.get_mut(&self.event) {
                list.retain(|(id, _)| *id != self.id);
                if list.is_empty() {
                    l.events.remove(&self.event);
                }
            }
            if let Some((tags, _)) = &mut push {
                // Keep the tags another guard still holds.
                tags.retain(|tag| {
                    let key = (self.event.clone(), tag.clone());
                    match l.push_guards.get_mut(&key) {
                        Some(count) if *count > 1 => {
                            *count -= 1;
                            false
                        }
                        _ => {
                            l.push_guards.remove(&key);
                            true
                        }
                    }
                });
            }
        }
        if let Some((tags, commands)) = push.filter(|(tags, _)| !tags.is_empty()) {
            let _ = commands.try_send(Command::UnsubscribePush {
                event: std::mem::take(&mut self.event),
                tags,
            });
        }
    }
}

impl ClientHandle {
    /// Starts a client: its task connects through `connector` and keeps the
    /// connection up as `config` says.
    pub fn start(config: ClientConfig, connector: Connector, runtime: RuntimeRef) -> ClientHandle {
        let (commands, commands_rx) = async_channel::unbounded();
        let listeners = Arc::new(Mutex::new(Listeners::default()));
        let driver = Driver {
            core: Client::new(config, runtime.now()),
            commands: commands_rx,
            listeners: Arc::downgrade(&listeners),
            connector,
            runtime: runtime.clone(),
            replies: HashMap::new(),
            stream: None,
            sink: None,
            unsent: VecDeque::new(),
            unflushed: false,
            connecting: None,
        };
        runtime.spawn(Box::pin(driver.run()));
        ClientHandle {
            commands,
            listeners,
            runtime,
        }
    }

    /// Waits until the client is open (and authenticated, with auth data),
    /// at most `limit`. Fails with the reason when it closes for good
    /// (e.g. `rtm/auth-rejected`), or `rtm/timeout` saying why the last
    /// attempt failed (refused, a TLS certificate not trusted, …).
    pub async fn wait_open(&self, limit: Duration) -> Result<(), RtmError> {
        let events = self.lifecycle();
        let deadline = self.runtime.now() + limit;
        let mut last_error = None;
        // Why it closed: the error seen here, else the one recorded before
        // this call started listening (the driver may run ahead of us).
        let why_closed = |seen: Option<RtmError>| {
            let l = self.lock();
            seen.or_else(|| l.last_error.clone())
                .unwrap_or_else(|| match &l.last_closed {
                    // Closed without an error of its own (no reconnect left): say why the last attempt ended.
                    Some(reason) => RtmError::new(
                        ErrorCode::Closed,
                        format!("the client is closed (last attempt: {reason})"),
                    ),
                    None => closed(),
                })
        };
        loop {
            match self.state() {
                ClientState::Open => return Ok(()),
                ClientState::Closed => return Err(why_closed(last_error)),
                _ => {}
            }
            let left = deadline.saturating_duration_since(self.runtime.now());
            match crate::runtime::timeout(&*self.runtime, left, events.recv()).await {
                Some(Ok(ClientEvent::Error(err))) => last_error = Some(err),
                Some(Ok(_)) => {}
                Some(Err(_)) => return Err(why_closed(last_error)),
                None => {
                    let message = match self.lock().last_closed.clone() {
                        Some(reason) => {
                            format!("not open within {limit:?} (last attempt: {reason})")
                        }
                        None => format!("not open within {limit:?}"),
                    };
                    return Err(RtmError::new(ErrorCode::Timeout, message));
                }
            }
        }
    }

    /// Calls a server function and ignores its reply (the JS client's `Call`).
    /// Returns once the call is sent or queued; `rtm/queue-full` when offline with a full queue.
    pub async fn call<A: Serialize + ?Sized>(
        &self,
        function: &str,
        args: &A,
    ) -> Result<(), RtmError> {
        let args = Args::encode(args)?;
        let (done, result) = oneshot::channel();
        self.send(Command::Call {
            function: function.to_owned(),
            args,
            done,
        })?;
        result.await.unwrap_or_else(|_| Err(closed()))
    }

    /// Calls a server function and waits for its result, deserialized as `T`
    /// (the JS client's `CallWait`). Fails with the server's error, or
    /// `rtm/timeout`, `rtm/disconnected`, `rtm/queue-full`, `rtm/closed`.
    pub async fn call_wait<T: DeserializeOwned, A: Serialize + ?Sized>(
        &self,
        function: &str,
        args: &A,
    ) -> Result<T, RtmError> {
        let raw = self.call_wait_raw(function, Args::encode(args)?).await?;
        serde_json::from_str(raw.get())
            .map_err(|e| RtmError::bad_request(format!("unexpected result type: {e}")))
    }

    /// Like [`ClientHandle::call_wait`], returning the raw JSON result.
    pub async fn call_wait_raw(
        &self,
        function: &str,
        args: Args,
    ) -> Result<Box<RawValue>, RtmError> {
        let (reply, result) = oneshot::channel();
        self.send(Command::CallWait {
            function: function.to_owned(),
            args,
            reply,
        })?;
        result.await.unwrap_or_else(|_| Err(closed()))
    }

    /// Runs `callback` for every `event` the server sends, with the event's
    /// arguments deserialized as `T` (a tuple, a `Vec<Value>`, …; events whose
    /// arguments do not fit are skipped and logged).
    pub fn subscribe<T, F>(&self, event: &str, callback: F) -> Subscription
    where
        T: DeserializeOwned,
        F: Fn(T) + Send + Sync + 'static,
    {
        let name = event.to_owned();
        let callback: Callback = Arc::new(move |args: &Args| match args.deserialize::<T>() {
            Ok(value) => callback(value),
            Err(err) => {
                tracing::warn!(event = %name, %err, "event arguments do not fit the callback")
            }
        });
        let mut l = self.lock();
        l.next += 1;
        let id = l.next;
        l.events
            .entry(event.to_owned())
            .or_default()
            .push((id, callback));
        Subscription {
            listeners: Arc::downgrade(&self.listeners),
            event: event.to_owned(),
            id,
            push: None,
        }
    }

    /// Holds a push subscription (event, tags) — re-sent after every
    /// reconnect — and runs `callback` for each such event. Fails with the
    /// server's `rtm/forbidden` when denied. Dropping the guard unsubscribes.
    pub async fn subscribe_push<T, F>(
        &self,
        event: &str,
        tags: &[&str],
        callback: F,
    ) -> Result<Subscription, RtmError>
    where
        T: DeserializeOwned,
        F: Fn(T) + Send + Sync + 'static,
    {
        let tags: Vec<String> = tags.iter().map(|t| (*t).to_owned()).collect();
        let (reply, result) = oneshot::channel();
        self.send(Command::SubscribePush {
            event: event.to_owned(),
            tags: tags.clone(),
            reply,
        })?;
        let mut guard = self.subscribe(event, callback);
        {
            let mut l = self.lock();
            for tag in &tags {
                *l.push_guards
                    .entry((event.to_owned(), tag.clone()))
                    .or_default() += 1;
            }
        }
        guard.push = Some((tags, self.commands.clone()));
        result.await.unwrap_or_else(|_| Err(closed()))?;
        Ok(guard)
    }

    /// A stream of lifecycle events (opened, closed, reconnecting, errors…)
    /// from now on. A listener that falls 256 events behind misses some.
    pub fn lifecycle(&self) -> async_channel::Receiver<ClientEvent> {
        let (tx, rx) = async_channel::bounded(256);
        self.lock().lifecycle.push(tx);
        rx
    }

    /// The connection state as of the last change.
    pub fn state(&self) -> ClientState {
        self.lock().state.clone().unwrap_or(ClientState::Connecting)
    }

    /// Closes the client: pending and queued calls fail with `rtm/closed`, no reconnect.
    pub fn close(&self) {
        let _ = self.commands.try_send(Command::Close);
    }

    fn send(&self, command: Command) -> Result<(), RtmError> {
        self.commands.try_send(command).map_err(|_| closed())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Listeners> {
        self.listeners.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn closed() -> RtmError {
    RtmError::new(ErrorCode::Closed, "the client is closed")
}

struct Driver {
    core: Client,
    commands: async_channel::Receiver<Command>,
    listeners: Weak<Mutex<Listeners>>,
    connector: Connector,
    runtime: RuntimeRef,
    replies: HashMap<CallId, Reply>,
    stream: Option<IncomingStream>,
    sink: Option<OutgoingSink>,
    /// Frames not yet handed to the sink. Writing happens inside `wait`, next
    /// to everything else, so a server that stops reading (a full socket)
    /// cannot stall timers, incoming frames or commands.
    unsent: VecDeque<Outgoing>,
    /// Frames handed to the sink but not flushed yet.
    unflushed: bool,
    connecting: Option<BoxFuture<Result<(IncomingStream, OutgoingSink), ConnectError>>>,
}

/// Hands `unsent` to `sink` and flushes it; completes when all is written.
async fn write_all(
    sink: &mut OutgoingSink,
    unsent: &mut VecDeque<Outgoing>,
    unflushed: &mut bool,
) -> Result<(), WriteError> {
    loop {
        if unsent.is_empty() {
            if *unflushed {
                std::future::poll_fn(|cx| sink.as_mut().poll_flush(cx)).await?;
                *unflushed = false;
            }
            return Ok(());
        }
        std::future::poll_fn(|cx| sink.as_mut().poll_ready(cx)).await?;
        if let Some(message) = unsent.pop_front() {
            sink.as_mut().start_send(message)?;
            *unflushed = true;
        }
    }
}

enum Wake {
    Command(Option<Command>),
    Incoming(Option<Incoming>),
    Connected(Result<(IncomingStream, OutgoingSink), ConnectError>),
    Written(Result<(), WriteError>),
    Timer,
}

impl Driver {
    async fn run(mut self) {
        loop {
            self.drain().await;
            let wake = self.wait().await;
            let now = self.runtime.now();
            match wake {
                Wake::Command(None) => {
                    // Every handle is gone: close and stop.
                    self.core.close(now);
                    self.drain().await;
                    return;
                }
                Wake::Command(Some(command)) => self.command(command, now),
                Wake::Incoming(Some(Incoming::Text(frame))) => self.core.handle_text(frame, now),
                Wake::Incoming(Some(Incoming::Activity | Incoming::Binary)) => {
                    self.core.handle_activity(now);
                }
                Wake::Incoming(Some(Incoming::Closed(code, reason))) => {
                    self.drop_socket();
                    self.core.handle_close(code.map(|c| c.0), &reason, now);
                }
                Wake::Incoming(Some(Incoming::TooLarge)) => {
                    self.drop_socket();
                    self.core.handle_close(Some(1009), "frame too large", now);
                }
                Wake::Incoming(Some(Incoming::Error(err))) => {
                    self.drop_socket();
                    self.core.handle_close(None, &err, now);
                }
                Wake::Incoming(None) => {
                    self.drop_socket();
                    self.core.handle_close(None, "connection lost", now);
                }
                Wake::Connected(Ok((stream, sink))) => {
                    self.stream = Some(stream);
                    self.sink = Some(sink);
                    self.core.handle_open(now);
                }
                Wake::Connected(Err(ConnectError::Retry { reason, .. })) => {
                    self.core.handle_close(None, &reason, now);
                }
                Wake::Connected(Err(ConnectError::Fatal(err))) => self.core.handle_fatal_error(err),
                Wake::Written(Ok(())) => {}
                Wake::Written(Err(err)) => {
                    self.drop_socket();
                    self.core.handle_close(None, &err.to_string(), now);
                }
                Wake::Timer => self.core.handle_timeout(now),
            }
        }
    }

    async fn wait(&mut self) -> Wake {
        let sleep = match self.core.poll_timeout() {
            Some(at) => self
                .runtime
                .sleep(at.saturating_duration_since(self.runtime.now())),
            None => self.runtime.sleep(Duration::from_secs(3600)),
        };
        let mut sleep = sleep.fuse();
        let command = self.commands.recv().fuse();
        futures_util::pin_mut!(command);
        let stream = self.stream.as_mut();
        let mut incoming = async move {
            match stream {
                Some(stream) => stream.next().await,
                None => std::future::pending().await,
            }
        }
        .boxed()
        .fuse();
        let connecting = self.connecting.as_mut();
        let mut connected = async move {
            match connecting {
                Some(connecting) => connecting.await,
                None => std::future::pending().await,
            }
        }
        .boxed()
        .fuse();
        let sink = self.sink.as_mut();
        let (unsent, unflushed) = (&mut self.unsent, &mut self.unflushed);
        let mut written = async move {
            match sink {
                Some(sink) if !unsent.is_empty() || *unflushed => {
                    write_all(sink, unsent, unflushed).await
                }
                _ => std::future::pending().await,
            }
        }
        .boxed()
        .fuse();
        // Writing first: a flood of incoming frames must not starve it.
        let wake = futures_util::select_biased! {
            w = written => Wake::Written(w),
            m = incoming => Wake::Incoming(m),
            c = connected => Wake::Connected(c),
            c = command => Wake::Command(c.ok()),
            () = sleep => Wake::Timer,
        };
        drop((incoming, connected, written));
        if matches!(wake, Wake::Connected(_)) {
            self.connecting = None;
        }
        wake
    }

    fn command(&mut self, command: Command, now: Instant) {
        match command {
            Command::Call {
                function,
                args,
                done,
            } => {
                let _ = done.send(self.core.call(&function, args, now));
            }
            Command::CallWait {
                function,
                args,
                reply,
            } => match self.core.call_wait(&function, args, now) {
                Ok(call) => {
                    self.replies.insert(call, reply);
                }
                Err(err) => {
                    let _ = reply.send(Err(err));
                }
            },
            Command::SubscribePush { event, tags, reply } => {
                match self.core.subscribe_push(&event, &tags, now) {
                    Ok(call) => {
                        self.replies.insert(call, reply);
                    }
                    Err(err) => {
                        let _ = reply.send(Err(err));
                    }
                }
            }
            Command::UnsubscribePush { event, tags } => {
                let _ = self.core.unsubscribe_push(&event, &tags, now);
            }
            Command::Close => self.core.close(now),
        }
    }

    fn drop_socket(&mut self) {
        self.stream = None;
        self.sink = None;
        self.unsent.clear();
        self.unflushed = false;
    }

    async fn drain(&mut self) {
        while let Some(output) = self.core.poll_output() {
            match output {
                ClientOutput::Connect => {
                    self.drop_socket();
                    self.connecting = Some((self.connector)());
                }
                ClientOutput::Transmit(frame) => {
                    // Written by `wait`; without a socket there is no one to send to.
                    if self.sink.is_none() {
                        continue;
                    }
                    // A server that stopped reading: as many frames may wait as the
                    // offline queue holds; past that the connection counts as lost.
                    if self.unsent.len() >= self.core.config().offline_queue.max(1) {
                        self.drop_socket();
                        self.core.handle_close(
                            None,
                            "the server stopped reading (unsent frames over the offline_queue bound)",
                            self.runtime.now(),
                        );
                        continue;
                    }
                    self.unsent.push_back(Outgoing::Text(frame));
                }
                ClientOutput::Ping if self.sink.is_some() => {
                    self.unsent.push_back(Outgoing::Ping);
                }
                // No socket: nothing to ping.
                ClientOutput::Ping => {}
                ClientOutput::Disconnect => {
                    if let Some(sink) = self.sink.as_mut() {
                        self.unsent
                            .push_back(Outgoing::Close(rtm_core::CloseCode::NORMAL, String::new()));
                        let _ = crate::runtime::timeout(
                            &*self.runtime,
                            Duration::from_secs(1),
                            write_all(sink, &mut self.unsent, &mut self.unflushed),
                        )
                        .await;
                    }
                    self.drop_socket();
                    self.connecting = None;
                }
                ClientOutput::CallDone { call, result } => {
                    if let Some(reply) = self.replies.remove(&call) {
                        let _ = reply.send(result);
                    }
                }
                ClientOutput::Event { event, args } => self.dispatch(&event, &args),
                ClientOutput::Lifecycle(event) => self.lifecycle(event),
            }
        }
    }

    fn dispatch(&self, event: &str, args: &Args) {
        let Some(listeners) = self.listeners.upgrade() else {
            return;
        };
        let callbacks: Vec<Callback> = {
            let l = listeners.lock().unwrap_or_else(|e| e.into_inner());
            l.events
                .get(event)
                .map(|list| list.iter().map(|(_, cb)| cb.clone()).collect())
                .unwrap_or_default()
        };
        // Outside the lock: a callback may subscribe or drop a subscription.
        for callback in callbacks {
            callback(args);
        }
    }

    fn lifecycle(&self, event: ClientEvent) {
        let Some(listeners) = self.listeners.upgrade() else {
            return;
        };
        let mut l = listeners.lock().unwrap_or_else(|e| e.into_inner());
        l.state = Some(self.core.state().clone());
        match &event {
            ClientEvent::Error(err) => l.last_error = Some(err.clone()),
            ClientEvent::Closed { reason, .. } => l.last_closed = Some(reason.clone()),
            _ => {}
        }
        l.lifecycle.retain(|tx| match tx.try_send(event.clone()) {
            Ok(()) | Err(async_channel::TrySendError::Full(_)) => true,
            Err(async_channel::TrySendError::Closed(_)) => false,
        });
    }
}

//! The server's metrics, recorded through the [`metrics`](https://docs.rs/metrics) facade (feature
//! `metrics`, on by default): nothing is recorded until the application
//! installs a recorder (such as `metrics-exporter-prometheus`), and then
//! only into the handles registered here, once, when the server starts.
//!
//! Install the recorder **before** the server starts: the handles are
//! registered with the recorder installed at that moment (a server started
//! before records into nothing).
//!
//! Names follow Prometheus' conventions (`_total` counters, base units),
//! behind a prefix (`rtm_` by default, [`ServerBuilder::metrics_prefix`]).
//! No label takes its values from users: close codes, HTTP statuses and
//! outcomes are fixed sets, and `function` is a registered function's name.
//! The table of every metric is in `docs/metrics.md`.
//!
//! [`ServerBuilder::metrics_prefix`]: crate::ServerBuilder::metrics_prefix

use std::time::Duration;

use rtm_core::{CloseCode, ErrorCode, FunctionId, Functions};

use self::handles::{Counter, Gauge, Histogram};

/// The prefix of every metric's name unless
/// [`ServerBuilder::metrics_prefix`](crate::ServerBuilder::metrics_prefix) says otherwise.
pub const DEFAULT_PREFIX: &str = "rtm_";

/// Who closed a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ClosedBy {
    /// The server sent the close frame first.
    Server,
    /// The peer sent it first (or its stream ended without one: 1006).
    Peer,
}

/// How an authentication ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AuthResult {
    Accepted,
    /// The handler (or a sign-in limit) refused the credentials.
    Rejected,
    /// No `auth` arrived in time.
    Timeout,
    /// The handler failed (`rtm/internal`, a panic).
    Error,
}

/// How a call ended, as the connection task saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CallOutcome {
    Ok,
    /// The function answered with an error.
    Error,
    /// The function panicked (answered `rtm/internal`).
    Panic,
    /// Refused past a rate limit or `max_in_flight`
    /// (`rtm/too-many-requests`), not run.
    TooMany,
    /// No function of that name (`rtm/function-not-found`).
    NotFound,
    /// Before authentication (`rtm/unauthenticated`).
    Unauthenticated,
    /// A malformed name or an id still in flight (`rtm/bad-request`).
    BadRequest,
}

impl CallOutcome {
    const ALL: [CallOutcome; 7] = [
        CallOutcome::Ok,
        CallOutcome::Error,
        CallOutcome::Panic,
        CallOutcome::TooMany,
        CallOutcome::NotFound,
        CallOutcome::Unauthenticated,
        CallOutcome::BadRequest,
    ];

    fn label(self) -> &'static str {
        match self {
            CallOutcome::Ok => "ok",
            CallOutcome::Error => "error",
            CallOutcome::Panic => "panic",
            CallOutcome::TooMany => "too_many",
            CallOutcome::NotFound => "not_found",
            CallOutcome::Unauthenticated => "unauthenticated",
            CallOutcome::BadRequest => "bad_request",
        }
    }

    /// The outcome of a call the connection refused with `code`.
    pub(crate) fn of_refusal(code: ErrorCode) -> CallOutcome {
        match code {
            ErrorCode::FunctionNotFound => CallOutcome::NotFound,
            ErrorCode::Unauthenticated => CallOutcome::Unauthenticated,
            ErrorCode::TooManyRequests => CallOutcome::TooMany,
            ErrorCode::BadRequest => CallOutcome::BadRequest,
            _ => CallOutcome::Error,
        }
    }

    /// The outcome of a function that returned `result`.
    pub(crate) fn of<T>(result: &Result<T, rtm_core::RtmError>) -> CallOutcome {
        match result {
            Ok(_) => CallOutcome::Ok,
            Err(error) if error.code == ErrorCode::TooManyRequests => CallOutcome::TooMany,
            Err(_) => CallOutcome::Error,
        }
    }
}

impl AuthResult {
    /// The result of an auth handler that answered `error`: `rtm/internal`
    /// is the handler's failure, anything else a rejection.
    pub(crate) fn of_error(error: &rtm_core::RtmError) -> AuthResult {
        if error.code == ErrorCode::Internal {
            AuthResult::Error
        } else {
            AuthResult::Rejected
        }
    }
}

/// What a frame sent to a peer was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FrameKind {
    /// A reply to the peer's own request.
    Reply,
    /// An event (Emit, Publish, Push, or one from another server).
    Event,
}

/// The `result` label of a subscribe's answer.
fn subscribe_result_index(result: &Result<(), ErrorCode>) -> usize {
    match result {
        Ok(()) => 0,
        Err(ErrorCode::Forbidden | ErrorCode::Other(_)) => 1,
        Err(ErrorCode::TooManySubscriptions | ErrorCode::TooManyRequests) => 2,
        Err(ErrorCode::BrokerUnavailable) => 3,
        Err(ErrorCode::Unauthenticated) => 4,
        Err(ErrorCode::BadRequest) => 5,
        Err(_) => 6,
    }
}

/// The values of `subscribes_total`'s `result`, by [`subscribe_result_index`].
const SUBSCRIBE_RESULTS: [&str; 7] = [
    "ok",
    "denied",
    "too_many",
    "broker_unavailable",
    "unauthenticated",
    "bad_request",
    "error",
];

/// What the application sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SendKind {
    Emit,
    Publish,
    Push,
}

/// The `function` label of calls to a name no function is registered under.
const UNKNOWN_FUNCTION: &str = "_unknown";

/// The close codes counted by their number; any other is `other`.
const CLOSE_CODES: [u16; 13] = [
    1000, 1001, 1002, 1003, 1005, 1006, 1007, 1008, 1009, 1011, 1013, 4003, 4008,
];

/// The HTTP statuses a handshake is refused with; `none`: closed unanswered
/// (`max_handshakes` in flight).
const HANDSHAKE_STATUSES: [u16; 6] = [400, 403, 404, 426, 429, 431];

/// Buckets of the duration histograms, in seconds, for exporters that need
/// them set (`metrics-exporter-prometheus`: `set_buckets_for_metric`).
pub const CALL_SECONDS_BUCKETS: [f64; 12] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.1, 0.5, 2.5,
];

/// Buckets of `connection_duration_seconds`: a second to a day.
pub const CONNECTION_SECONDS_BUCKETS: [f64; 9] = [
    1.0, 10.0, 60.0, 300.0, 900.0, 3600.0, 14_400.0, 43_200.0, 86_400.0,
];

/// Buckets of `broker_lag_seconds` (and of `rtm-redis`'
/// `redis_publish_duration_seconds`): 100 µs to 10 s.
pub const BROKER_SECONDS_BUCKETS: [f64; 14] = [
    0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 2.5, 10.0,
];

/// Every histogram by the end of its name, with its buckets: what an
/// exporter that needs buckets set is given (with
/// `metrics-exporter-prometheus`: `set_buckets_for_metric(Matcher::Suffix(name), buckets)`
/// for each), so histograms are histograms, not summaries. It lists
/// `rtm-redis`' histogram too.
pub const HISTOGRAM_BUCKETS: [(&str, &[f64]); 4] = [
    ("invocation_duration_seconds", &CALL_SECONDS_BUCKETS),
    ("connection_duration_seconds", &CONNECTION_SECONDS_BUCKETS),
    ("broker_lag_seconds", &BROKER_SECONDS_BUCKETS),
    ("publish_duration_seconds", &BROKER_SECONDS_BUCKETS),
];

/// The server's instruments. Made once per server; every method is a few
/// atomic operations on a handle registered up front (no name lookup).
pub(crate) struct Metrics {
    connections_unauthenticated: Gauge,
    connections_authenticated: Gauge,
    connections_opened: Counter,
    connections_refused: Counter,
    connection_seconds: Histogram,
    /// By close code (`CLOSE_CODES`, then `other`), server then peer.
    closed: Vec<[Counter; 2]>,
    /// By status (`HANDSHAKE_STATUSES`, then `none`).
    handshakes_rejected: Vec<Counter>,
    auth: [Counter; 4],
    /// By function id (then one row for `_unknown`), then outcome.
    calls: Vec<[Counter; 7]>,
    call_seconds: Vec<Histogram>,
    calls_in_flight: Gauge,
    sends: [Counter; 3],
    deliveries: [Counter; 3],
    slow_consumers: Counter,
    broker_up: Gauge,
    broker_downs: Counter,
    broker_messages: Counter,
    broker_deliveries: Counter,
    broker_dropped: Counter,
    broker_lag: Histogram,
    broker_topics: Gauge,
    subscriptions: Gauge,
    /// By `SUBSCRIBE_RESULTS`.
    subscribes: [Counter; 7],
    frames_received: Counter,
    bytes_received: Counter,
    /// Reply, then event.
    frames_sent: [Counter; 2],
    bytes_sent: [Counter; 2],
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics")
            .field("functions", &self.calls.len())
            .finish_non_exhaustive()
    }
}

impl Metrics {
    /// The instruments of a server with `functions`, named `prefix` + name,
    /// registered with the recorder installed now.
    pub(crate) fn new(prefix: &str, functions: &Functions) -> Self {
        let name = |n: &str| format!("{prefix}{n}");
        handles::describe(&name);
        let connections = name("connections");
        let closed = name("connections_closed_total");
        let handshakes = name("handshakes_rejected_total");
        let auth = name("auth_total");
        let calls = name("invocations_total");
        let call_seconds = name("invocation_duration_seconds");
        let sends = name("sends_total");
        let deliveries = name("deliveries_total");
        let subscribes = name("subscribes_total");
        let frames_sent = name("frames_sent_total");
        let bytes_sent = name("sent_bytes_total");
        let kinds = ["emit", "publish", "push"];
        let function_names: Vec<&str> = (0..functions.len() as u32)
            .map(|id| functions.name(FunctionId(id)).unwrap_or(UNKNOWN_FUNCTION))
            .collect();
        Metrics {
            connections_unauthenticated: handles::gauge(
                &connections,
                &[("state", "unauthenticated")],
            ),
            connections_authenticated: handles::gauge(&connections, &[("state", "authenticated")]),
            connections_opened: handles::counter(&name("connections_opened_total"), &[]),
            connections_refused: handles::counter(&name("connections_refused_total"), &[]),
            connection_seconds: handles::histogram(&name("connection_duration_seconds"), &[]),
            closed: CLOSE_CODES
                .iter()
                .map(|code| code.to_string())
                .chain(["other".to_owned()])
                .map(|code| {
                    [
                        handles::counter(&closed, &[("code", &code), ("by", "server")]),
                        handles::counter(&closed, &[("code", &code), ("by", "peer")]),
                    ]
                })
                .collect(),
            handshakes_rejected: HANDSHAKE_STATUSES
                .iter()
                .map(|status| status.to_string())
                .chain(["none".to_owned()])
                .map(|status| handles::counter(&handshakes, &[("status", &status)]))
                .collect(),
            auth: ["accepted", "rejected", "timeout", "error"]
                .map(|result| handles::counter(&auth, &[("result", result)])),
            calls: function_names
                .iter()
                .chain(&[UNKNOWN_FUNCTION])
                .map(|function| {
                    CallOutcome::ALL.map(|outcome| {
                        handles::counter(
                            &calls,
                            &[("function", function), ("outcome", outcome.label())],
                        )
                    })
                })
                .collect(),
            call_seconds: function_names
                .iter()
                .map(|function| handles::histogram(&call_seconds, &[("function", function)]))
                .collect(),
            calls_in_flight: handles::gauge(&name("invocations_in_flight"), &[]),
            sends: kinds.map(|kind| handles::counter(&sends, &[("kind", kind)])),
            deliveries: kinds.map(|kind| handles::counter(&deliveries, &[("kind", kind)])),
            slow_consumers: handles::counter(&name("slow_consumer_closes_total"), &[]),
            broker_up: handles::gauge(&name("broker_up"), &[]),
            broker_downs: handles::counter(&name("broker_downs_total"), &[]),
            broker_messages: handles::counter(&name("broker_messages_total"), &[]),
            broker_deliveries: handles::counter(&name("broker_deliveries_total"), &[]),
            broker_dropped: handles::counter(&name("broker_messages_dropped_total"), &[]),
            broker_lag: handles::histogram(&name("broker_lag_seconds"), &[]),
            broker_topics: handles::gauge(&name("broker_topics"), &[]),
            subscriptions: handles::gauge(&name("subscriptions"), &[]),
            subscribes: SUBSCRIBE_RESULTS
                .map(|result| handles::counter(&subscribes, &[("result", result)])),
            frames_received: handles::counter(&name("frames_received_total"), &[]),
            bytes_received: handles::counter(&name("received_bytes_total"), &[]),
            frames_sent: ["reply", "event"]
                .map(|kind| handles::counter(&frames_sent, &[("kind", kind)])),
            bytes_sent: ["reply", "event"]
                .map(|kind| handles::counter(&bytes_sent, &[("kind", kind)])),
        }
    }

    /// A connection was admitted (`authenticated`: no auth needed).
    pub(crate) fn connection_opened(&self, authenticated: bool) {
        self.connections_opened.increment(1);
        self.state_gauge(authenticated).increment(1.0);
    }

    /// A connection was refused at admission (limit, shutdown).
    pub(crate) fn connection_refused(&self) {
        self.connections_refused.increment(1);
    }

    /// An admitted connection authenticated.
    pub(crate) fn connection_authenticated(&self) {
        self.connections_unauthenticated.decrement(1.0);
        self.connections_authenticated.increment(1.0);
    }

    /// An admitted connection's task ended after `lived`.
    pub(crate) fn connection_ended(&self, authenticated: bool, lived: Duration) {
        self.state_gauge(authenticated).decrement(1.0);
        self.connection_seconds.record(lived.as_secs_f64());
    }

    fn state_gauge(&self, authenticated: bool) -> &Gauge {
        if authenticated {
            &self.connections_authenticated
        } else {
            &self.connections_unauthenticated
        }
    }

    /// A close frame went (`by` the server) or came (`by` the peer), or the
    /// peer's stream ended without one (1006).
    pub(crate) fn connection_closed(&self, code: CloseCode, by: ClosedBy) {
        let index = CLOSE_CODES
            .iter()
            .position(|known| *known == code.0)
            .unwrap_or(CLOSE_CODES.len());
        if let Some(pair) = self.closed.get(index) {
            pair[usize::from(by == ClosedBy::Peer)].increment(1);
        }
    }

    /// A handshake was refused with `status` (`None`: closed unanswered).
    pub(crate) fn handshake_rejected(&self, status: Option<u16>) {
        let index = status
            .and_then(|status| HANDSHAKE_STATUSES.iter().position(|s| *s == status))
            .unwrap_or(HANDSHAKE_STATUSES.len());
        if let Some(counter) = self.handshakes_rejected.get(index) {
            counter.increment(1);
        }
    }

    /// An authentication ended.
    pub(crate) fn auth(&self, result: AuthResult) {
        self.auth[result as usize].increment(1);
    }

    /// A function started running.
    pub(crate) fn call_started(&self) {
        self.calls_in_flight.increment(1.0);
    }

    /// A function that started ended after `took`.
    pub(crate) fn call_ended(&self, function: FunctionId, outcome: CallOutcome, took: Duration) {
        self.calls_in_flight.decrement(1.0);
        self.call_refused(function, outcome);
        if let Some(histogram) = self.call_seconds.get(function.0 as usize) {
            histogram.record(took.as_secs_f64());
        }
    }

    /// A call that did not run (refused), or the count of one that did.
    pub(crate) fn call_refused(&self, function: FunctionId, outcome: CallOutcome) {
        if let Some(counters) = self.calls.get(function.0 as usize) {
            counters[outcome as usize].increment(1);
        }
    }

    /// A call the connection answered itself (`None`: no function of that
    /// name, counted as `_unknown`).
    pub(crate) fn call_answered_by_connection(
        &self,
        function: Option<FunctionId>,
        outcome: CallOutcome,
    ) {
        let row = function.map_or(self.calls.len() - 1, |f| f.0 as usize);
        if let Some(counters) = self.calls.get(row) {
            counters[outcome as usize].increment(1);
        }
    }

    /// The application sent an event reaching `delivered` local connections.
    pub(crate) fn sent(&self, kind: SendKind, delivered: usize) {
        self.sends[kind as usize].increment(1);
        self.deliveries[kind as usize].increment(delivered as u64);
    }

    /// An event from another server (through the broker) reached
    /// `delivered` local connections.
    pub(crate) fn broker_message(&self, delivered: usize) {
        self.broker_messages.increment(1);
        self.broker_deliveries.increment(delivered as u64);
    }

    /// A broker message was not understood (see `EnvelopeError`) and dropped.
    pub(crate) fn broker_message_dropped(&self) {
        self.broker_dropped.increment(1);
    }

    /// A broker message sent at `sent_at` (ms since the Unix epoch, by its
    /// sender's clock) arrived at `now_ms` (by ours); a clock behind the
    /// sender's counts as no lag.
    pub(crate) fn broker_lag(&self, sent_at: u64, now_ms: u64) {
        let lag_ms = now_ms.saturating_sub(sent_at);
        self.broker_lag.record(lag_ms as f64 / 1000.0);
    }

    /// The router changed from `before` to `after` (push subscriptions
    /// held, broker topics needed): the gauges move by the difference, so
    /// they only change when these did.
    pub(crate) fn routing(&self, before: (usize, usize), after: (usize, usize)) {
        fn apply(gauge: &Gauge, before: usize, after: usize) {
            if after > before {
                gauge.increment((after - before) as f64);
            } else if after < before {
                gauge.decrement((before - after) as f64);
            }
        }
        apply(&self.subscriptions, before.0, after.0);
        apply(&self.broker_topics, before.1, after.1);
    }

    /// A subscribe was answered.
    pub(crate) fn subscribe_answered(&self, result: &Result<(), ErrorCode>) {
        self.subscribes[subscribe_result_index(result)].increment(1);
    }

    /// `frames` text frames of `bytes` in all were read from peers.
    pub(crate) fn received(&self, frames: u64, bytes: u64) {
        if frames > 0 {
            self.frames_received.increment(frames);
            self.bytes_received.increment(bytes);
        }
    }

    /// `frames` frames of `kind`, `bytes` in all, were queued to a peer.
    pub(crate) fn frames_sent(&self, kind: FrameKind, frames: u64, bytes: u64) {
        if frames > 0 {
            self.frames_sent[kind as usize].increment(frames);
            self.bytes_sent[kind as usize].increment(bytes);
        }
    }

    /// A connection was closed 1013 as a slow consumer.
    pub(crate) fn slow_consumer(&self) {
        self.slow_consumers.increment(1);
    }

    /// The broker's state changed.
    pub(crate) fn broker_state(&self, up: bool) {
        self.broker_up.set(if up { 1.0 } else { 0.0 });
        if !up {
            self.broker_downs.increment(1);
        }
    }
}

#[cfg(feature = "metrics")]
mod handles {
    pub(crate) use ::metrics::{Counter, Gauge, Histogram};
    use ::metrics::{Label, Unit};

    fn labels(labels: &[(&str, &str)]) -> Vec<Label> {
        labels
            .iter()
            .map(|(k, v)| Label::new(k.to_string(), v.to_string()))
            .collect()
    }

    pub(crate) fn counter(name: &str, with: &[(&str, &str)]) -> Counter {
        ::metrics::counter!(name.to_owned(), labels(with))
    }

    pub(crate) fn gauge(name: &str, with: &[(&str, &str)]) -> Gauge {
        ::metrics::gauge!(name.to_owned(), labels(with))
    }

    pub(crate) fn histogram(name: &str, with: &[(&str, &str)]) -> Histogram {
        ::metrics::histogram!(name.to_owned(), labels(with))
    }

    /// Units and help texts, for exporters that show them.
    pub(crate) fn describe(name: &dyn Fn(&str) -> String) {
        ::metrics::describe_gauge!(name("connections"), "Open connections, by state.");
        ::metrics::describe_counter!(
            name("connections_opened_total"),
            "Connections admitted (WebSocket upgraded and within the limits)."
        );
        ::metrics::describe_counter!(
            name("connections_refused_total"),
            "Connections refused after the upgrade (max_connections, shutdown)."
        );
        ::metrics::describe_histogram!(
            name("connection_duration_seconds"),
            Unit::Seconds,
            "How long connections lived."
        );
        ::metrics::describe_counter!(
            name("connections_closed_total"),
            "Closes by close code and by who closed first (1006: the stream ended without a close frame)."
        );
        ::metrics::describe_counter!(
            name("handshakes_rejected_total"),
            "WebSocket handshakes refused, by HTTP status (none: closed unanswered)."
        );
        ::metrics::describe_counter!(name("auth_total"), "Authentications, by result.");
        ::metrics::describe_counter!(
            name("invocations_total"),
            "Function calls, by function and outcome."
        );
        ::metrics::describe_histogram!(
            name("invocation_duration_seconds"),
            Unit::Seconds,
            "How long functions ran, from the request read to the result."
        );
        ::metrics::describe_gauge!(name("invocations_in_flight"), "Functions running.");
        ::metrics::describe_counter!(
            name("sends_total"),
            "Emit, Publish and Push sent by the application on this server."
        );
        ::metrics::describe_counter!(
            name("deliveries_total"),
            "Events the application's sends queued to local connections, by kind."
        );
        ::metrics::describe_counter!(
            name("broker_messages_total"),
            "Events received from other servers through the broker."
        );
        ::metrics::describe_counter!(
            name("broker_deliveries_total"),
            "Events from other servers queued to local connections."
        );
        ::metrics::describe_counter!(
            name("slow_consumer_closes_total"),
            "Connections closed 1013 because they did not read."
        );
        ::metrics::describe_gauge!(name("broker_up"), "1 while the broker is up.");
        ::metrics::describe_counter!(name("broker_downs_total"), "Times the broker went down.");
        ::metrics::describe_counter!(
            name("broker_messages_dropped_total"),
            "Broker messages not understood (bad envelope or frame), dropped."
        );
        ::metrics::describe_histogram!(
            name("broker_lag_seconds"),
            Unit::Seconds,
            "From a broker message's send time (the sender's clock) to its arrival here."
        );
        ::metrics::describe_gauge!(
            name("broker_topics"),
            "Broker topics this server needs (users signed in here, push (event, tag) pairs held)."
        );
        ::metrics::describe_gauge!(
            name("subscriptions"),
            "Push subscriptions ((event, tag) pairs) held by this server's connections."
        );
        ::metrics::describe_counter!(
            name("subscribes_total"),
            "Subscribe requests answered, by result."
        );
        ::metrics::describe_counter!(
            name("frames_received_total"),
            "Text frames read from peers."
        );
        ::metrics::describe_counter!(
            name("received_bytes_total"),
            Unit::Bytes,
            "Bytes of the text frames read from peers (payloads)."
        );
        ::metrics::describe_counter!(
            name("frames_sent_total"),
            "Frames queued to peers, by kind (reply, event)."
        );
        ::metrics::describe_counter!(
            name("sent_bytes_total"),
            Unit::Bytes,
            "Bytes of the frames queued to peers (payloads), by kind."
        );
    }
}

#[cfg(not(feature = "metrics"))]
mod handles {
    //! Without the `metrics` feature: the same instruments, doing nothing.

    #[derive(Debug, Clone, Default)]
    pub(crate) struct Counter;
    #[derive(Debug, Clone, Default)]
    pub(crate) struct Gauge;
    #[derive(Debug, Clone, Default)]
    pub(crate) struct Histogram;

    impl Counter {
        pub(crate) fn increment(&self, _: u64) {}
    }
    impl Gauge {
        pub(crate) fn increment(&self, _: f64) {}
        pub(crate) fn decrement(&self, _: f64) {}
        pub(crate) fn set(&self, _: f64) {}
    }
    impl Histogram {
        pub(crate) fn record(&self, _: f64) {}
    }

    pub(crate) fn counter(_: &str, _: &[(&str, &str)]) -> Counter {
        Counter
    }
    pub(crate) fn gauge(_: &str, _: &[(&str, &str)]) -> Gauge {
        Gauge
    }
    pub(crate) fn histogram(_: &str, _: &[(&str, &str)]) -> Histogram {
        Histogram
    }
    pub(crate) fn describe(_: &dyn Fn(&str) -> String) {}
}

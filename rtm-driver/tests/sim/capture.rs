//! The server's log lines, caught on the simulation's thread.
//!
//! A peer that never reads never sees the close frame the server queues
//! behind the events its socket did not take, so the close code it got
//! cannot be read from the peer's side. The driver logs its decision
//! (`closing`, with `conn`, `code` and `reason` fields; and the warning
//! `slow consumer: …`): [`ServerLog`] is a minimal `tracing` subscriber,
//! installed for the current thread only, that keeps the driver's events
//! with their virtual time. It reads a log line, not an API: if the driver
//! renames it, the tests say so instead of passing.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Metadata, Subscriber};

use super::executor::SimClock;

/// One event the driver logged.
#[derive(Debug, Clone, Default)]
pub(crate) struct LogLine {
    /// Virtual time it was logged at.
    pub at: Duration,
    pub level: String,
    pub message: String,
    /// The `conn` field (a `ConnId` as displayed), when there is one.
    pub conn: Option<String>,
    /// The `code` field (a close code), when there is one.
    pub code: Option<u64>,
    /// The `reason` field, when there is one.
    pub reason: Option<String>,
}

/// The lines caught so far (shared with the subscriber).
#[derive(Clone, Default)]
pub(crate) struct ServerLog(Arc<Mutex<Vec<LogLine>>>);

impl ServerLog {
    /// Catches `rtm_driver`'s events on this thread until the guard drops.
    pub(crate) fn install(&self, clock: SimClock) -> tracing::subscriber::DefaultGuard {
        tracing::subscriber::set_default(Catcher {
            lines: self.clone(),
            clock,
        })
    }

    /// Every line caught, in order.
    pub(crate) fn lines(&self) -> Vec<LogLine> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The driver's `closing` lines for the connection displayed as `conn`.
    pub(crate) fn closes(&self, conn: &str) -> Vec<LogLine> {
        self.lines()
            .into_iter()
            .filter(|line| line.message == "closing" && line.conn.as_deref() == Some(conn))
            .collect()
    }
}

struct Catcher {
    lines: ServerLog,
    clock: SimClock,
}

impl Visit for LogLine {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let text = format!("{value:?}");
        match field.name() {
            "message" => self.message = text,
            "conn" => self.conn = Some(text),
            "reason" => self.reason = Some(text),
            "code" => self.code = text.parse().ok(),
            _ => {}
        }
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        if field.name() == "code" {
            self.code = Some(value);
        } else {
            self.record_debug(field, &value);
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "reason" => self.reason = Some(value.to_owned()),
            "message" => self.message = value.to_owned(),
            "conn" => self.conn = Some(value.to_owned()),
            _ => {}
        }
    }
}

impl Subscriber for Catcher {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.is_event()
            && metadata.target().starts_with("rtm_driver")
            && *metadata.level() <= tracing::Level::DEBUG
    }

    fn max_level_hint(&self) -> Option<tracing::level_filters::LevelFilter> {
        Some(tracing::level_filters::LevelFilter::DEBUG)
    }

    fn new_span(&self, _: &Attributes<'_>) -> Id {
        // Spans are not kept; every span gets the same (unused) id.
        Id::from_u64(1)
    }

    fn record(&self, _: &Id, _: &Record<'_>) {}

    fn record_follows_from(&self, _: &Id, _: &Id) {}

    fn event(&self, event: &Event<'_>) {
        let mut line = LogLine {
            at: self.clock.elapsed(),
            level: event.metadata().level().to_string(),
            ..LogLine::default()
        };
        event.record(&mut line);
        self.lines
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(line);
    }

    fn enter(&self, _: &Id) {}

    fn exit(&self, _: &Id) {}
}

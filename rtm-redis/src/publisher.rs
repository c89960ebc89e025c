//! Publishing in call order, pipelined.
//!
//! [`RedisBroker::publish`](crate::RedisBroker) queues the command when it is
//! called (not when its future is first polled), and one task sends whatever
//! has queued meanwhile as a single pipeline, one pipeline at a time. So
//! publishes reach Redis in the order they were called, and a burst costs one
//! round trip instead of one per message.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_channel::mpsc::UnboundedReceiver;
use futures_channel::oneshot;
use futures_util::StreamExt;
use redis::cluster_routing::Slot;
use redis::Value;
use rtm_broker::{BrokerError, BrokerState};
use rtm_core::StreamPosition;

use crate::history;
use crate::shared::{lock, Shared, Signal};

/// At most this many publishes go in one pipeline.
const MAX_BATCH: usize = 512;

/// What a queued publish sends.
pub(crate) enum Outgoing {
    /// A command of its own (`PUBLISH` / `SPUBLISH`).
    Command(redis::Cmd),
    /// A history append: consecutive ones (of one slot, on a cluster) go
    /// in one script call ([`history::append_cmd`]).
    Append(history::Append),
}

/// One publish waiting to be sent.
pub(crate) struct Queued {
    pub(crate) op: Outgoing,
    /// The topic's cluster slot, on a cluster only (a pipeline there holds
    /// one slot only).
    pub(crate) slot: Option<Slot>,
    pub(crate) done: Answer,
    /// When it was queued (the publish duration is measured from the
    /// oldest of a pipeline).
    pub(crate) queued_at: Instant,
}

/// Who waits for a queued command's outcome.
pub(crate) enum Answer {
    /// A publish.
    Published(oneshot::Sender<Result<(), BrokerError>>),
    /// A history append: the event's position.
    Appended(oneshot::Sender<Result<StreamPosition, BrokerError>>),
}

impl Answer {
    fn send(self, reply: Result<Value, BrokerError>) {
        match self {
            Answer::Published(done) => {
                let _ = done.send(reply.map(|_| ()));
            }
            Answer::Appended(done) => {
                let _ = done.send(reply.and_then(|v| history::position("a history append", &v)));
            }
        }
    }
}

/// Sends queued publishes until the broker handle (and so the queue) is dropped.
pub(crate) async fn run(shared: Arc<Shared>, mut queue: UnboundedReceiver<Queued>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = queue.next().await {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(queued) => batch.push(queued),
                Err(_) => break,
            }
        }
        send(&shared, &mut batch).await;
    }
}

/// Sends `batch` (one pipeline per node, or per slot on a cluster) and
/// answers every publish in it.
async fn send(shared: &Shared, batch: &mut Vec<Queued>) {
    let counters = &shared.counters;
    let publisher = {
        let live = lock(&shared.live);
        match (&live.state, &live.publisher) {
            (BrokerState::Up, Some(conn)) => Ok(conn.clone()),
            (BrokerState::Down { reason }, _) => Err(reason.clone()),
            (BrokerState::Up, None) => Err("no connection".to_string()),
        }
    };
    let results: Vec<Result<Value, BrokerError>> = match publisher {
        Err(reason) => vec![Err(BrokerError::unavailable(reason)); batch.len()],
        Ok(mut conn) => {
            let (cmds, covers) = commands(shared, batch);
            let sent = conn.publish_all(cmds).await;
            if sent.iter().any(Result::is_err) {
                let _ = shared.signals.unbounded_send(Signal::Check);
            }
            sent.into_iter()
                .zip(covers)
                .flat_map(|(reply, covers)| match covers {
                    Covers::One => vec![reply.map_err(|e| broker_error(&e))],
                    Covers::Run(count) => match reply {
                        Ok(reply) => history::positions(reply, count),
                        Err(e) => vec![Err(broker_error(&e)); count],
                    },
                })
                .collect()
        }
    };
    debug_assert_eq!(results.len(), batch.len());
    let failed = results.iter().filter(|r| r.is_err()).count();
    let oldest = batch.first().map(|queued| queued.queued_at);
    let took = oldest.map_or(Duration::ZERO, |at| at.elapsed());
    counters.pipeline((results.len() - failed) as u64, failed as u64, took);
    for (queued, result) in batch.drain(..).zip(results) {
        queued.done.send(result);
    }
}

/// How many queued publishes a command answers.
enum Covers {
    One,
    /// A run of history appends: one reply per append, in order.
    Run(usize),
}

/// The commands of `batch`, in order: each publish on its own, each run of
/// consecutive appends (of one slot) as one script call.
fn commands(
    shared: &Shared,
    batch: &mut [Queued],
) -> (Vec<(Option<Slot>, redis::Cmd)>, Vec<Covers>) {
    let mut cmds = Vec::with_capacity(batch.len());
    let mut covers = Vec::with_capacity(batch.len());
    let mut run: Vec<history::Append> = Vec::new();
    let mut run_slot = None;
    let flush = |run: &mut Vec<history::Append>, slot, cmds: &mut Vec<_>, covers: &mut Vec<_>| {
        if !run.is_empty() {
            cmds.push((slot, history::append_cmd(&shared.config, run)));
            covers.push(Covers::Run(run.len()));
            run.clear();
        }
    };
    for queued in batch.iter_mut() {
        let op = std::mem::replace(&mut queued.op, Outgoing::Command(redis::Cmd::new()));
        match op {
            Outgoing::Append(append) => {
                if run_slot != queued.slot {
                    flush(&mut run, run_slot, &mut cmds, &mut covers);
                }
                run_slot = queued.slot;
                run.push(append);
            }
            Outgoing::Command(cmd) => {
                flush(&mut run, run_slot, &mut cmds, &mut covers);
                cmds.push((queued.slot, cmd));
                covers.push(Covers::One);
            }
        }
    }
    flush(&mut run, run_slot, &mut cmds, &mut covers);
    (cmds, covers)
}

/// A failed command's error: unavailable when the connection failed.
fn broker_error(e: &redis::RedisError) -> BrokerError {
    if e.is_io_error() || e.is_connection_dropped() || e.is_timeout() {
        BrokerError::unavailable(e.to_string()).caused_by(e.clone())
    } else {
        BrokerError::failed(e.to_string()).caused_by(e.clone())
    }
}

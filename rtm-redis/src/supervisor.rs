//! The background task: connect, subscribe everything, verify, watch, and start over on loss.
//!
//! ```text
//!   connect ──ok──> resubscribe all ──> probe ──ok──> Up ──> every probe_interval: probe
//!      ^                                                  │  (lost connection, failed
//!      └──── backoff sleep <──── Down <───────────────────┘   command or missing probe)
//! ```

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_channel::mpsc::UnboundedReceiver;
use futures_channel::oneshot;
use futures_util::future::{select, Either};
use futures_util::StreamExt;
use rtm_broker::{BrokerEvent, BrokerState};

use crate::config::Backoff;
use crate::conn::{Conn, NO_PUSH};
use crate::metrics::Op;
use crate::shared::{lock, Shared, Signal};

/// Why a phase ended.
enum Exit {
    /// The broker handle is gone.
    Shutdown,
    /// The connection is unusable; reconnect.
    Lost(String),
}

pub(crate) async fn run(
    shared: Arc<Shared>,
    mut signals: UnboundedReceiver<Signal>,
    first: oneshot::Sender<()>,
) {
    let mut first = Some(first);
    let mut backoff = Backoff::new(shared.config.reconnect_initial, shared.config.reconnect_max);
    // What the sink was last told, so each transition is reported once.
    let mut reported_up: Option<bool> = None;
    loop {
        let exit = match connect(&shared, &mut signals).await {
            Ok(generation) => {
                backoff.reset();
                if reported_up.is_some() {
                    shared.counters.reconnected();
                }
                if reported_up != Some(true) {
                    reported_up = Some(true);
                    shared.emit(BrokerEvent::State(BrokerState::Up));
                }
                if let Some(first) = first.take() {
                    let _ = first.send(());
                }
                let exit = supervise(&shared, &mut signals, generation).await;
                if matches!(exit, Exit::Lost(_)) {
                    shared.counters.failed(Op::Connection);
                }
                exit
            }
            Err(exit) => exit,
        };
        let reason = match exit {
            Exit::Shutdown => break,
            Exit::Lost(reason) => reason,
        };
        shared.mark_down(&reason);
        shared.teardown().await;
        if reported_up != Some(false) {
            reported_up = Some(false);
            shared.emit(BrokerEvent::State(BrokerState::Down { reason }));
        }
        if let Some(first) = first.take() {
            let _ = first.send(());
        }
        if let Err(Exit::Shutdown) = idle(&shared, &mut signals, backoff.next_delay()).await {
            break;
        }
    }
    shared.mark_down("shut down");
    shared.teardown().await;
}

/// Opens both connections, subscribes every wanted topic and the control
/// topic on the new pub/sub connection, and proves it with a probe.
async fn connect(
    shared: &Arc<Shared>,
    signals: &mut UnboundedReceiver<Signal>,
) -> Result<u64, Exit> {
    let generation = shared.generation.fetch_add(1, Ordering::SeqCst) + 1;
    let lost = |what: &str, e: redis::RedisError| {
        shared.counters.failed(Op::Connect);
        Exit::Lost(connect_failure(what, &e))
    };
    let subscriber = shared
        .target
        .open(
            &shared.config,
            Some(Shared::push_handler(shared, generation)),
        )
        .await
        .map_err(|e| lost("connecting", e))?;
    let publisher = shared
        .target
        .open(&shared.config, NO_PUSH)
        .await
        .map_err(|e| lost("connecting", e))?;
    // Set before subscribing, so the push handler knows the probe topics.
    let probes = publisher
        .clone()
        .probe_topics(&shared.control)
        .await
        .map_err(|e| lost("reading the cluster topology", e))?;
    *lock(&shared.probe_topics) = probes.clone();

    {
        // Held while resubscribing, so a concurrent subscribe/unsubscribe
        // lands either before (and is in the snapshot) or after (and is sent
        // on the new connection).
        let mut slot = shared.subscriber.lock().await;
        *slot = Some(subscriber.clone());
        let mut topics: Vec<_> = lock(&shared.topics).iter().cloned().collect();
        topics.extend(probes);
        let mut conn = subscriber;
        if let Err(e) = conn.subscribe_all(&shared.config, &topics).await {
            *slot = None;
            return Err(lost("resubscribing", e));
        }
    }

    probe(shared, signals, publisher.clone(), generation).await?;
    shared.mark_up(publisher);
    Ok(generation)
}

/// While up: probe every `probe_interval` (or at once after a failed publish)
/// until something breaks.
async fn supervise(
    shared: &Arc<Shared>,
    signals: &mut UnboundedReceiver<Signal>,
    generation: u64,
) -> Exit {
    loop {
        let mut timer = shared.runtime.sleep(shared.config.probe_interval);
        loop {
            match select(signals.next(), &mut timer).await {
                Either::Right(_) => break,
                Either::Left((signal, _)) => match signal {
                    None | Some(Signal::Shutdown) => return Exit::Shutdown,
                    Some(Signal::Lost {
                        generation: g,
                        reason,
                    }) if g == generation => return Exit::Lost(reason),
                    Some(Signal::Check) => break,
                    Some(_) => {}
                },
            }
        }
        let publisher = lock(&shared.live).publisher.clone();
        let Some(publisher) = publisher else {
            return Exit::Lost("publishing connection gone".into());
        };
        if let Err(exit) = probe(shared, signals, publisher, generation).await {
            return exit;
        }
    }
}

/// Publishes a fresh token on each probe topic (the control topic; on a
/// cluster also one per other shard) and waits for all of them to come back
/// on the pub/sub connection of `generation`.
async fn probe(
    shared: &Arc<Shared>,
    signals: &mut UnboundedReceiver<Signal>,
    mut publisher: Conn,
    generation: u64,
) -> Result<(), Exit> {
    let counters = &shared.counters;
    let seq = counters.probe_sent();
    let topics = lock(&shared.probe_topics).clone();
    let mut timer = shared.runtime.sleep(shared.config.probe_timeout);
    let failed = |reason: String| {
        counters.probe_failed();
        Exit::Lost(reason)
    };
    let mut waiting = HashSet::with_capacity(topics.len());
    for (i, topic) in topics.iter().enumerate() {
        let token = Bytes::from(format!("probe:{}:{seq}:{i}", shared.nonce));
        let cmd = shared.config.publish_cmd(topic, &token);
        match select(Box::pin(publisher.exec(&cmd)), &mut timer).await {
            Either::Left((Ok(()), _)) => {}
            Either::Left((Err(e), _)) => {
                return Err(failed(format!("probe publish on {topic} failed: {e}")))
            }
            Either::Right(_) => return Err(failed(format!("probe publish on {topic} timed out"))),
        }
        waiting.insert(token);
    }
    while !waiting.is_empty() {
        match select(signals.next(), &mut timer).await {
            Either::Right(_) => {
                return Err(failed(format!(
                    "{} of {} probes not received within {:?}",
                    waiting.len(),
                    topics.len(),
                    shared.config.probe_timeout
                )))
            }
            Either::Left((signal, _)) => match signal {
                None | Some(Signal::Shutdown) => return Err(Exit::Shutdown),
                Some(Signal::Echo {
                    generation: g,
                    token: t,
                }) if g == generation => {
                    // Late echoes of earlier rounds are not in `waiting`.
                    waiting.remove(&t);
                }
                Some(Signal::Lost {
                    generation: g,
                    reason,
                }) if g == generation => return Err(Exit::Lost(reason)),
                // Stale generations, publish failures: already probing.
                Some(_) => {}
            },
        }
    }
    Ok(())
}

/// Waits `delay` before the next connection attempt, unless shut down.
async fn idle(
    shared: &Arc<Shared>,
    signals: &mut UnboundedReceiver<Signal>,
    delay: Duration,
) -> Result<(), Exit> {
    let mut timer = shared.runtime.sleep(delay);
    loop {
        match select(signals.next(), &mut timer).await {
            Either::Right(_) => return Ok(()),
            Either::Left((None | Some(Signal::Shutdown), _)) => return Err(Exit::Shutdown),
            Either::Left((Some(_), _)) => {}
        }
    }
}

/// Why connecting failed, for the Down state and the logs: a refused
/// password or ACL user is said as such (it is not "unreachable": Redis
/// answered), the rest as the client reports it.
fn connect_failure(what: &str, e: &redis::RedisError) -> String {
    let text = e.to_string();
    let refused = e.kind() == redis::ErrorKind::AuthenticationFailed
        || ["WRONGPASS", "NOPERM", "NOAUTH"]
            .iter()
            .any(|code| text.contains(code));
    if refused {
        format!(
            "authentication failed: Redis refused the password or user in the URL ({text}); \
             fix the URL or the Redis ACL, retrying meanwhile"
        )
    } else {
        format!("{what}: {text}")
    }
}

//! Deterministic simulation of the server driver under bursts of events,
//! with peers that read at different speeds.
//!
//! Each run starts a real server (`ServerBuilder::start` on the
//! simulation's runtime) and connects three peers through the real
//! `ServerHandle::accept` over in-memory sockets (see [`sim`]):
//!
//! - `never` never reads after its handshake;
//! - `bursts` reads up to a fixed number of bytes every few tens of
//!   milliseconds (faster, on average, than events are produced);
//! - `fast` reads whenever anything is readable.
//!
//! A producer task then emits bursts of events to every connection, each
//! burst in one pass (no await between its emits), some larger than
//! `max_outbound_bytes`, with random gaps. Socket buffer sizes, event sizes,
//! burst sizes, gaps and the scheduler's choices all follow the run's seed.
//! Each scenario runs for [`SEEDS`] seeds; `RTM_DRIVER_SIM_SEED=<n>` runs
//! seed `n` only. The runs are shared by the tests below, each of which
//! checks one rule on all of them and names every failing seed.
//!
//! The rule checked (see [`server_builder`] for its parameters): a
//! connection is closed 1013 `rtm/slow-consumer` only when more than
//! `max_outbound_bytes` waits for it *and* its socket has taken no byte for
//! the stall timeout; whatever waits for a connection whose socket takes
//! bytes is written without waiting for a timer.

mod sim;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use rtm_core::{Args, Heartbeat};
use rtm_driver::{CallContext, ServerBuilder};

use sim::capture::{LogLine, ServerLog};
use sim::executor::{Sim, Stop};
use sim::peer::{connect, server_frame_len, Peer, PeerLog, PeerSpec, ReadPolicy};
use sim::rng::Rng;

/// Seeds per scenario.
const SEEDS: u64 = 20;
/// How long a connection with more than the bound waiting for it may go
/// without its socket taking a byte before it is closed 1013 (the rule's
/// `slow_consumer_timeout`, 1 s by default; 3 s here).
const STALL_TIMEOUT: Duration = Duration::from_secs(3);
/// How late (virtual time) a decision may come past its deadline: a few
/// scheduler passes, never a timer as long as the heartbeat's.
const SLACK: Duration = Duration::from_millis(250);
/// How late an event may reach the peer that reads whenever it can.
const FAST_ALLOWANCE: Duration = Duration::from_millis(1);
/// How long a run may go on after its last burst (virtual time): past one
/// heartbeat interval, so an event that waits for the heartbeat is seen
/// arriving with it rather than not at all.
const AFTER_LAST_BURST: Duration = Duration::from_secs(40);
/// The server's close grace (its default, set in [`server_builder`]): how
/// long a closing connection waits for its peer before its socket goes.
const CLOSE_GRACE: Duration = Duration::from_secs(2);
const KIB: usize = 1024;

/// One family of runs.
struct Scenario {
    name: &'static str,
    /// `max_outbound_bytes`.
    bound: usize,
    /// Bytes of event payload per burst, in thousandths of the bound.
    burst_permille: (usize, usize),
    bursts: usize,
    /// Virtual time before each burst.
    gap: (Duration, Duration),
    /// Bytes of padding per event.
    padding: (usize, usize),
    /// Server→peer socket capacity of each peer: never, bursts, fast.
    sockets: [(usize, usize); 3],
    /// How the `bursts` peer reads: every, bytes (at most the smallest
    /// socket it may get, so each read can take all of them).
    bursts_read: (Duration, usize),
    /// The plan takes what waits for the peer that never reads past the
    /// bound (so the rule that closes it applies).
    stalls_the_never_reader: bool,
}

const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "bursts past the bound",
        bound: 64 * KIB,
        burst_permille: (250, 3000),
        bursts: 8,
        gap: (Duration::from_millis(200), Duration::from_millis(800)),
        padding: (50, 2000),
        sockets: [
            (4 * KIB, 64 * KIB),
            (16 * KIB, 64 * KIB),
            (4 * KIB, 64 * KIB),
        ],
        bursts_read: (Duration::from_millis(25), 16 * KIB),
        stalls_the_never_reader: true,
    },
    // Socket buffers larger than the driver's write watermark (64 KiB), as
    // kernel buffers usually are: a flush then takes all that was queued.
    Scenario {
        name: "bursts within the bound, large socket buffers",
        bound: 256 * KIB,
        burst_permille: (250, 900),
        bursts: 8,
        gap: (Duration::from_millis(200), Duration::from_millis(800)),
        padding: (50, 2000),
        sockets: [
            (4 * KIB, 64 * KIB),
            (16 * KIB, 64 * KIB),
            (96 * KIB, 256 * KIB),
        ],
        bursts_read: (Duration::from_millis(25), 16 * KIB),
        stalls_the_never_reader: true,
    },
    // One burst, then nothing: what it leaves behind has nothing to wake it
    // but a timer.
    Scenario {
        name: "one burst within the bound, then quiet, large socket buffers",
        bound: 256 * KIB,
        burst_permille: (400, 900),
        bursts: 1,
        gap: (Duration::from_millis(200), Duration::from_millis(800)),
        padding: (50, 2000),
        sockets: [
            (4 * KIB, 64 * KIB),
            (16 * KIB, 64 * KIB),
            (96 * KIB, 256 * KIB),
        ],
        bursts_read: (Duration::from_millis(25), 16 * KIB),
        stalls_the_never_reader: false,
    },
];

/// The server every scenario runs. The parameters of the rule under test
/// are set here, and only here; the checks below assume `STALL_TIMEOUT`
/// and `CLOSE_GRACE`.
fn server_builder(scenario: &Scenario) -> ServerBuilder {
    ServerBuilder::new()
        .max_outbound_bytes(scenario.bound)
        .slow_consumer_timeout(STALL_TIMEOUT)
        .max_outbound_burst_bytes(64 * 1024 * 1024)
        // The default (25 s pings, 60 s silence): the timer a stranded
        // event would otherwise wait for.
        .heartbeat(Some(Heartbeat::default()))
        .close_grace(CLOSE_GRACE)
}

// ----- one run -----

/// What the producer and the server's hooks record about one peer.
#[derive(Debug, Default, Clone)]
struct Ledger {
    /// Its connection id as the server displays it.
    conn: Option<String>,
    /// Every event emitted to it, in order.
    sent: Vec<Sent>,
    /// Wire bytes of the events emitted to it.
    emitted: u64,
    /// Bytes it had read, and bytes the server had written to its socket,
    /// when the producer started.
    base_read: u64,
    base_written: u64,
    /// After each burst that reached it: what the server held for it.
    held: Vec<Held>,
    /// When the server let it go (it left the router).
    disconnected_at: Option<Duration>,
    /// When the server closed (or dropped) its end of the socket.
    socket_closed_at: Option<Duration>,
    /// The last time an emit counted it.
    last_targeted: Option<Duration>,
}

/// One event emitted to a peer.
#[derive(Debug, Clone)]
struct Sent {
    seq: u64,
    at: Duration,
    /// Its size on the wire.
    wire: u64,
    /// Where it ends in the peer's byte stream.
    stream_end: u64,
    /// What the peer had read when it was emitted.
    read_then: u64,
}

/// What the server held for a peer right after a burst: the wire bytes of
/// the events emitted to it that its socket had not taken (in the mailbox
/// or the connection's write buffer; dropped ones count too).
#[derive(Debug, Clone)]
struct Held {
    at: Duration,
    bytes: u64,
}

/// One burst as the producer emitted it.
#[derive(Debug, Clone)]
struct Burst {
    at: Duration,
    events: usize,
    payload: usize,
}

/// Everything one run produced, for the rules to check.
#[derive(Debug)]
struct Outcome {
    seed: u64,
    scenario: &'static str,
    bound: usize,
    stalls_the_never_reader: bool,
    /// The run could not be set up or went wrong (livelock, panic).
    error: Option<String>,
    stop: Option<Stop>,
    ended_at: Duration,
    /// Task polls the run took (the same for the same seed, every time).
    polls: u64,
    bursts: Vec<Burst>,
    peers: Vec<PeerOutcome>,
}

#[derive(Debug)]
struct PeerOutcome {
    name: &'static str,
    policy: ReadPolicy,
    capacity: usize,
    log: PeerLog,
    ledger: Ledger,
    /// The server's `closing` log lines for its connection.
    closes: Vec<LogLine>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// Runs `scenario` with `seed`; a panic inside becomes the outcome's error.
fn run(scenario: &'static Scenario, seed: u64) -> Outcome {
    let ran = std::panic::catch_unwind(|| simulate(scenario, seed));
    ran.unwrap_or_else(|panic| {
        let message = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "a panic".into());
        Outcome {
            seed,
            scenario: scenario.name,
            bound: scenario.bound,
            stalls_the_never_reader: scenario.stalls_the_never_reader,
            error: Some(format!("panicked: {message}")),
            stop: None,
            ended_at: Duration::ZERO,
            polls: 0,
            bursts: Vec::new(),
            peers: Vec::new(),
        }
    })
}

fn simulate(scenario: &'static Scenario, seed: u64) -> Outcome {
    let sim = Sim::new(seed);
    let mut rng = Rng::new(seed ^ 0x5EED_5CE7_A210_0F00);
    let server_log = ServerLog::default();
    let _catching = server_log.install(sim.clock());

    // Peers, by index: never, bursts, fast.
    let (every, bytes) = scenario.bursts_read;
    let policies = [
        ("never", ReadPolicy::Never),
        ("bursts", ReadPolicy::Bursts { every, bytes }),
        ("fast", ReadPolicy::Fast),
    ];
    let addrs: Vec<SocketAddr> = (0..policies.len())
        .map(|i| SocketAddr::from(([10, 0, 0, 1 + i as u8], 40_000)))
        .collect();
    let ledgers: Arc<Mutex<Vec<Ledger>>> =
        Arc::new(Mutex::new(vec![Ledger::default(); policies.len()]));
    let index_of = {
        let addrs = addrs.clone();
        move |addr: Option<SocketAddr>| addrs.iter().position(|a| Some(*a) == addr)
    };

    let server = {
        let (connected, disconnected) = (ledgers.clone(), ledgers.clone());
        let (index_on_connect, index_on_disconnect) = (index_of.clone(), index_of.clone());
        let clock = sim.clock();
        server_builder(scenario)
            .register("ready", |_: CallContext, _: Vec<serde_json::Value>| async {
                Ok::<_, rtm_core::RtmError>(true)
            })
            .on_connect(move |info| {
                if let Some(i) = index_on_connect(info.meta.peer_addr) {
                    lock(&connected)[i].conn = Some(info.id.to_string());
                }
            })
            .on_disconnect(move |info| {
                if let Some(i) = index_on_disconnect(info.meta.peer_addr) {
                    lock(&disconnected)[i].disconnected_at = Some(clock.elapsed());
                }
            })
            .start(sim.runtime())
    };

    let ready = r#"{"id":"1","type":"invoke","function":"ready","data":[]}"#;
    let peers: Vec<Peer> = policies
        .iter()
        .zip(&addrs)
        .zip(&scenario.sockets)
        .map(|(((name, policy), addr), (lo, hi))| {
            let reads = *policy != ReadPolicy::Never;
            let spec = PeerSpec {
                name,
                addr: *addr,
                policy: *policy,
                to_server: 4 * KIB,
                to_client: rng.between(*lo, *hi),
                // A peer that never reads is not asked to read a reply.
                requests: if reads { vec![ready.into()] } else { vec![] },
            };
            connect(&sim, &server, spec)
        })
        .collect();

    let mut outcome = Outcome {
        seed,
        scenario: scenario.name,
        bound: scenario.bound,
        stalls_the_never_reader: scenario.stalls_the_never_reader,
        error: None,
        stop: None,
        ended_at: Duration::ZERO,
        polls: 0,
        bursts: Vec::new(),
        peers: Vec::new(),
    };

    // Every peer upgraded, every reading peer has its reply: each
    // connection's task is running.
    let set_up = sim.run_until(
        || {
            server.connection_count() == peers.len()
                && peers.iter().all(|p| {
                    let log = p.log();
                    log.upgraded_at.is_some()
                        && (p.spec.requests.is_empty() || !log.replies.is_empty())
                })
        },
        Duration::from_secs(5),
    );
    match set_up {
        Ok(Stop::Condition) => {}
        other => {
            let states: Vec<String> = peers
                .iter()
                .map(|p| format!("{}: {:?}", p.spec.name, *p.log()))
                .collect();
            outcome.error = Some(format!(
                "set-up did not finish ({other:?}); {} connections; {}",
                server.connection_count(),
                states.join("; ")
            ));
            return outcome;
        }
    }
    for (peer, ledger) in peers.iter().zip(lock(&ledgers).iter_mut()) {
        ledger.base_read = peer.log().bytes_read;
        ledger.base_written = peer.socket.written();
    }

    // The plan: each burst's gap, and its events' padding.
    let plan: Vec<(Duration, Vec<usize>)> = (0..scenario.bursts)
        .map(|_| {
            let gap = rng.duration(scenario.gap.0, scenario.gap.1);
            let permille = rng.between(scenario.burst_permille.0, scenario.burst_permille.1);
            let target = scenario.bound * permille / 1000;
            let mut paddings = Vec::new();
            let mut total = 0;
            while total < target {
                let padding = rng.between(scenario.padding.0, scenario.padding.1);
                total += padding;
                paddings.push(padding);
            }
            (gap, paddings)
        })
        .collect();
    let limit =
        sim.elapsed() + plan.iter().map(|(gap, _)| *gap).sum::<Duration>() + AFTER_LAST_BURST;

    // The producer: each burst in one pass.
    let produced = Arc::new(Mutex::new(Vec::<Burst>::new()));
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    {
        let (server, runtime, clock) = (server.clone(), sim.runtime(), sim.clock());
        let (ledgers, produced, done) = (ledgers.clone(), produced.clone(), done.clone());
        let readers: Vec<Peer> = peers.clone();
        sim.spawn(async move {
            let mut seq = 0u64;
            for (gap, paddings) in plan {
                runtime.sleep(gap).await;
                let at = clock.elapsed();
                let mut payload = 0;
                for padding in &paddings {
                    seq += 1;
                    let json = format!("[{seq},\"{}\"]", "x".repeat(*padding));
                    let args = match Args::from_json(json.into()) {
                        Ok(args) => args,
                        Err(err) => panic!("event {seq} cannot be encoded: {err}"),
                    };
                    let frame = match rtm_core::frame::encode_event("tick", &args) {
                        Ok(frame) => frame,
                        Err(err) => panic!("event {seq} cannot be framed: {err}"),
                    };
                    payload += frame.len();
                    let wire = server_frame_len(frame.len()) as u64;
                    let mut targets = Vec::new();
                    let counted = server.emit_args(
                        "tick",
                        |info| {
                            targets.push(info.meta.peer_addr);
                            true
                        },
                        &args,
                    );
                    match counted {
                        Ok(n) => assert_eq!(n, targets.len(), "emit counted what its filter saw"),
                        Err(err) => panic!("emit of event {seq} failed: {err}"),
                    }
                    let mut ledgers = lock(&ledgers);
                    for target in targets {
                        let Some(i) = index_of(target) else { continue };
                        let ledger = &mut ledgers[i];
                        ledger.emitted += wire;
                        ledger.last_targeted = Some(at);
                        let sent = Sent {
                            seq,
                            at,
                            wire,
                            stream_end: ledger.base_read + ledger.emitted,
                            read_then: readers[i].log().bytes_read,
                        };
                        ledger.sent.push(sent);
                    }
                }
                // What the server holds for each peer the burst reached.
                let mut ledgers = lock(&ledgers);
                for (ledger, peer) in ledgers.iter_mut().zip(&readers) {
                    if ledger.last_targeted == Some(at) {
                        let written = peer.socket.written() - ledger.base_written;
                        ledger.held.push(Held {
                            at,
                            bytes: ledger.emitted.saturating_sub(written),
                        });
                    }
                }
                lock(&produced).push(Burst {
                    at,
                    events: paddings.len(),
                    payload,
                });
            }
            done.store(true, std::sync::atomic::Ordering::SeqCst);
        });
    }

    // Until every event reached every reading peer still open, and the
    // peer that never reads is let go and its socket closed by the server.
    // (The condition runs before every step: it also notes when the server
    // closed each socket.)
    let mut socket_closed: Vec<Option<Duration>> = vec![None; peers.len()];
    let stopped =
        sim.run_until(
            || {
                for (peer, closed) in peers.iter().zip(socket_closed.iter_mut()) {
                    if closed.is_none() && peer.socket.write_closed() {
                        *closed = Some(sim.elapsed());
                    }
                }
                if !done.load(std::sync::atomic::Ordering::SeqCst) {
                    return false;
                }
                let ledgers = lock(&ledgers);
                peers.iter().zip(ledgers.iter()).zip(&socket_closed).all(
                    |((peer, ledger), closed)| match peer.spec.policy {
                        ReadPolicy::Never if !scenario.stalls_the_never_reader => true,
                        ReadPolicy::Never => ledger.disconnected_at.is_some() && closed.is_some(),
                        _ => peer.finished() || peer.log().events.len() >= ledger.sent.len(),
                    },
                )
            },
            limit,
        );
    match stopped {
        Ok(stop) => outcome.stop = Some(stop),
        Err(err) => outcome.error = Some(err),
    }
    outcome.ended_at = sim.elapsed();
    outcome.polls = sim.polls();
    outcome.bursts = lock(&produced).clone();
    let mut ledgers = lock(&ledgers).clone();
    for ((peer, ledger), closed_at) in peers.iter().zip(ledgers.iter_mut()).zip(socket_closed) {
        ledger.socket_closed_at = closed_at;
        let closes = match &ledger.conn {
            Some(conn) => server_log.closes(conn),
            None => Vec::new(),
        };
        outcome.peers.push(PeerOutcome {
            name: peer.spec.name,
            policy: peer.spec.policy,
            capacity: peer.spec.to_client,
            log: std::mem::take(&mut *peer.log()),
            ledger: ledger.clone(),
            closes,
        });
    }
    drop(server);
    drop(sim);
    outcome
}

// ----- the runs, shared by the tests -----

/// Every run: each scenario with each seed (or `RTM_DRIVER_SIM_SEED` only).
fn outcomes() -> &'static [Outcome] {
    static OUTCOMES: OnceLock<Vec<Outcome>> = OnceLock::new();
    OUTCOMES.get_or_init(|| {
        let seeds: Vec<u64> = match std::env::var("RTM_DRIVER_SIM_SEED") {
            Ok(seed) => match seed.trim().parse() {
                Ok(seed) => vec![seed],
                Err(_) => panic!("RTM_DRIVER_SIM_SEED={seed:?} is not a number"),
            },
            Err(_) => (1..=SEEDS).collect(),
        };
        let started = std::time::Instant::now();
        let outcomes: Vec<Outcome> = SCENARIOS
            .iter()
            .flat_map(|scenario| seeds.iter().map(move |&seed| run(scenario, seed)))
            .collect();
        if seeds.len() == 1 {
            // Replaying one seed: say what happened in each run.
            for outcome in &outcomes {
                eprintln!("{}", describe(outcome));
            }
        }
        eprintln!(
            "driver_sim: {} runs ({} scenarios x seeds {:?}), {} task polls, {:.0} s of virtual time, in {:.2?} of real time",
            outcomes.len(),
            SCENARIOS.len(),
            seeds,
            outcomes.iter().map(|o| o.polls).sum::<u64>(),
            outcomes.iter().map(|o| o.ended_at.as_secs_f64()).sum::<f64>(),
            started.elapsed()
        );
        outcomes
    })
}

/// Checks `rule` on every run; fails naming each run that breaks it.
fn check(rule: &str, mut broken: impl FnMut(&Outcome) -> Vec<String>) {
    let outcomes = outcomes();
    let mut failures = Vec::new();
    for outcome in outcomes {
        let mut found = match &outcome.error {
            Some(error) => vec![format!("the run failed: {error}")],
            None => broken(outcome),
        };
        if !found.is_empty() {
            let detail = found
                .drain(..)
                .map(|f| format!("\n    - {f}"))
                .collect::<String>();
            failures.push(format!(
                "  seed {} [{}]:{detail}",
                outcome.seed, outcome.scenario
            ));
        }
    }
    if !failures.is_empty() {
        let mut seeds: Vec<u64> = outcomes
            .iter()
            .filter(|o| {
                failures
                    .iter()
                    .any(|f| f.starts_with(&format!("  seed {} ", o.seed)))
            })
            .map(|o| o.seed)
            .collect();
        seeds.sort_unstable();
        seeds.dedup();
        panic!(
            "rule broken: {rule}\n{} of {} runs break it:\n{}\nreplay one: RTM_DRIVER_SIM_SEED=<seed> cargo test -p rtm-driver --test driver_sim (seeds {:?})",
            failures.len(),
            outcomes.len(),
            failures.join("\n"),
            seeds
        );
    }
}

/// A few lines on what happened in a run (printed when one seed is replayed).
fn describe(outcome: &Outcome) -> String {
    let mut text = format!(
        "seed {} [{}]: bound {} KiB, stopped {:?} at {}, {} polls{}",
        outcome.seed,
        outcome.scenario,
        outcome.bound / KIB,
        outcome.stop,
        secs(outcome.ended_at),
        outcome.polls,
        outcome
            .error
            .as_ref()
            .map(|e| format!(", error: {e}"))
            .unwrap_or_default()
    );
    for (i, burst) in outcome.bursts.iter().enumerate() {
        text += &format!(
            "\n  burst {}: {} events, {} KiB at {}",
            i + 1,
            burst.events,
            burst.payload / KIB,
            secs(burst.at)
        );
    }
    for peer in &outcome.peers {
        let arrived: HashMap<u64, Duration> = peer
            .log
            .events
            .iter()
            .filter_map(|a| a.seq.map(|s| (s, a.at)))
            .collect();
        let worst = peer
            .ledger
            .sent
            .iter()
            .filter_map(|s| arrived.get(&s.seq).map(|at| *at - s.at))
            .max()
            .unwrap_or_default();
        let most_held = peer.ledger.held.iter().map(|h| h.bytes).max().unwrap_or(0);
        text += &format!(
            "\n  {} ({:?}, socket {} KiB): {} of {} events arrived (latest {} after its emit), at most {} KiB held after a burst, {} pings; {}",
            peer.name,
            peer.policy,
            peer.capacity / KIB,
            peer.log.events.len(),
            peer.ledger.sent.len(),
            secs(worst),
            most_held / 1024,
            peer.log.pings.len(),
            ending(peer).map_or("open at the end".into(), |(text, _)| text),
        );
    }
    text
}

fn secs(d: Duration) -> String {
    format!("{:.3} s", d.as_secs_f64())
}

/// The burst emitted last at or before `at`, described.
fn burst_before(outcome: &Outcome, at: Duration) -> String {
    match outcome
        .bursts
        .iter()
        .enumerate()
        .rev()
        .find(|(_, b)| b.at <= at)
    {
        Some((i, b)) => format!(
            "burst {} of {} ({} events, {} KiB) at {}",
            i + 1,
            outcome.bursts.len(),
            b.events,
            b.payload / KIB,
            secs(b.at)
        ),
        None => "before any burst".into(),
    }
}

/// How a peer's connection ended, if it did, and when (virtual time).
fn ending(peer: &PeerOutcome) -> Option<(String, Option<Duration>)> {
    // The server's decision first: a close frame may reach the peer later,
    // or never (behind a full socket).
    if let Some(line) = peer.closes.first() {
        let seen = match &peer.log.close {
            Some(close) => format!("the peer read it at {}", secs(close.at)),
            None => "the close frame never reached the peer".into(),
        };
        let text = format!(
            "closed {} {:?} at {} ({seen})",
            line.code.map_or("?".into(), |c| c.to_string()),
            line.reason.as_deref().unwrap_or(""),
            secs(line.at)
        );
        return Some((text, Some(line.at)));
    }
    if let Some(close) = &peer.log.close {
        let text = format!(
            "closed {} {:?} at {} (read by the peer; the server logged no `closing`)",
            close.code.map_or("(no code)".into(), |c| c.to_string()),
            close.reason,
            secs(close.at)
        );
        return Some((text, Some(close.at)));
    }
    if let Some(at) = peer.ledger.disconnected_at {
        return Some((format!("let go by the server at {}", secs(at)), Some(at)));
    }
    if let Some(at) = peer.log.eof_at {
        return Some((format!("its stream ended at {}", secs(at)), Some(at)));
    }
    peer.log.failure.clone().map(|failure| (failure, None))
}

/// The heartbeat deadline (a whole number of intervals after the peer's
/// upgrade) that `at` falls on, if it falls on one.
fn heartbeat_due(peer: &PeerOutcome, at: Duration) -> Option<Duration> {
    let opened = peer.log.upgraded_at?;
    let interval = Heartbeat::default().interval;
    let since = at.checked_sub(opened)?;
    let beats = (since.as_secs_f64() / interval.as_secs_f64()).round() as u32;
    let due = opened + interval * beats;
    (beats > 0 && due.abs_diff(at) <= SLACK).then_some(due)
}

fn reading(peer: &PeerOutcome) -> bool {
    peer.policy != ReadPolicy::Never
}

// ----- the rules -----

/// Every event emitted to a reading peer reaches it without a timer having
/// to fire: the fast reader at once (no virtual time passes), the burst
/// reader within the read periods its backlog needs, plus two.
#[test]
fn every_event_reaches_a_reading_peer_without_waiting_for_a_timer() {
    check(
        "every event emitted to a reading peer reaches it without waiting for a timer",
        |outcome| {
            let mut broken = Vec::new();
            for peer in outcome.peers.iter().filter(|p| reading(p)) {
                let arrived: HashMap<u64, Duration> = peer
                    .log
                    .events
                    .iter()
                    .filter_map(|a| a.seq.map(|s| (s, a.at)))
                    .collect();
                let allowance = |sent: &Sent| match peer.policy {
                    ReadPolicy::Bursts { every, bytes } => {
                        let backlog = sent.stream_end.saturating_sub(sent.read_then);
                        every * (backlog.div_ceil(bytes as u64) as u32 + 2)
                    }
                    _ => FAST_ALLOWANCE,
                };
                let mut missing = Vec::new();
                let mut late = Vec::new();
                for sent in &peer.ledger.sent {
                    match arrived.get(&sent.seq) {
                        None => missing.push(sent),
                        Some(&at) if at - sent.at > allowance(sent) => late.push((sent, at)),
                        Some(_) => {}
                    }
                }
                if let Some(first) = missing.first() {
                    let (why, until) = ending(peer).unwrap_or_else(|| {
                        let text = format!(
                            "still open when the run ended at {}",
                            secs(outcome.ended_at)
                        );
                        (text, Some(outcome.ended_at))
                    });
                    // Undelivered past its allowance while the connection was open:
                    // it waited in the server, not in a socket the peer did not read.
                    let stranded = match until {
                        Some(until) if until > first.at + allowance(first) => format!(
                            "; it was still undelivered {} after its emit",
                            secs(until - first.at)
                        ),
                        _ => String::new(),
                    };
                    broken.push(format!(
                        "{}: {} of {} events never arrived, the first #{} emitted at {} ({}){stranded}; {why}",
                        peer.name,
                        missing.len(),
                        peer.ledger.sent.len(),
                        first.seq,
                        secs(first.at),
                        burst_before(outcome, first.at),
                    ));
                }
                if let Some((sent, at)) = late.first() {
                    let ping = peer
                        .log
                        .pings
                        .iter()
                        .find(|&&p| p > sent.at && p <= *at)
                        .map(|p| format!("; a heartbeat ping arrived at {}", secs(*p)))
                        .unwrap_or_default();
                    let heartbeat = heartbeat_due(peer, *at)
                        .map(|due| {
                            format!(
                                "; it came with the connection's heartbeat timer, due at {}",
                                secs(due)
                            )
                        })
                        .unwrap_or_default();
                    let worst = late
                        .iter()
                        .map(|(s, a)| *a - s.at)
                        .max()
                        .unwrap_or_default();
                    broken.push(format!(
                        "{}: {} events arrived late, the first #{} emitted at {} ({}) arrived {} later (allowed {}){ping}{heartbeat}; the latest arrived {} after its emit",
                        peer.name,
                        late.len(),
                        sent.seq,
                        secs(sent.at),
                        burst_before(outcome, sent.at),
                        secs(*at - sent.at),
                        secs(allowance(sent)),
                        secs(worst),
                    ));
                }
            }
            broken
        },
    );
}

/// A peer that reads (as fast as it can, or in bursts faster than events
/// come on average) is never closed as a slow consumer, whatever the size
/// of one burst.
#[test]
fn a_reading_peer_is_never_closed_as_a_slow_consumer() {
    check("a reading peer is never closed 1013", |outcome| {
        outcome
            .peers
            .iter()
            .filter(|p| reading(p))
            .filter_map(|peer| {
                let (ended, at) = ending(peer)?;
                let at = at.unwrap_or(outcome.ended_at);
                Some(format!(
                    "{} (socket {} KiB): {ended}, after {}; bound {} KiB",
                    peer.name,
                    peer.capacity / KIB,
                    burst_before(outcome, at),
                    outcome.bound / KIB
                ))
            })
            .collect()
    });
}

/// A peer that never reads is closed 1013 `rtm/slow-consumer` once more
/// than the bound waits for it and its socket has taken nothing for the
/// stall timeout: at the latest the stall timeout after the bound was
/// first passed (its socket was full before that).
#[test]
fn a_peer_that_never_reads_is_closed_1013_once_past_the_bound_and_stalled() {
    check(
        "a non-reading peer is closed 1013 rtm/slow-consumer once past the bound and stalled",
        |outcome| {
            let mut broken = Vec::new();
            if !outcome.stalls_the_never_reader {
                return broken;
            }
            for peer in outcome.peers.iter().filter(|p| !reading(p)) {
                let bound = outcome.bound as u64;
                let Some(over) = peer.ledger.held.iter().find(|h| h.bytes > bound) else {
                    broken.push(format!(
                        "{}: not exercised, never more than the bound ({} KiB) waited for it",
                        peer.name,
                        bound / 1024
                    ));
                    continue;
                };
                let deadline = over.at + STALL_TIMEOUT + SLACK;
                match peer.ledger.disconnected_at {
                    None => broken.push(format!(
                        "{}: still open when the run ended at {} ({} KiB waited for it at {})",
                        peer.name,
                        secs(outcome.ended_at),
                        over.bytes / 1024,
                        secs(over.at)
                    )),
                    Some(at) if at > deadline => broken.push(format!(
                        "{}: let go at {}, later than {} ({} KiB waited for it at {})",
                        peer.name,
                        secs(at),
                        secs(deadline),
                        over.bytes / 1024,
                        secs(over.at)
                    )),
                    Some(_) => {}
                }
                let close = match (&peer.log.close, peer.closes.first()) {
                    (Some(close), _) => Some((close.code.map(u64::from), close.reason.clone())),
                    (None, Some(line)) => {
                        Some((line.code, line.reason.clone().unwrap_or_default()))
                    }
                    (None, None) => None,
                };
                match close {
                    Some((Some(1013), reason)) if reason == "rtm/slow-consumer" => {}
                    Some((code, reason)) => broken.push(format!(
                        "{}: closed {code:?} {reason:?}, not 1013 \"rtm/slow-consumer\"",
                        peer.name
                    )),
                    None if peer.ledger.disconnected_at.is_some() => broken.push(format!(
                        "{}: let go, but no close frame reached it and the server logged no `closing` for it: its close code cannot be seen",
                        peer.name
                    )),
                    None => {}
                }
            }
            broken
        },
    );
}

/// What the server holds for a connection stays within the bound plus what
/// was emitted to it within the last stall timeout (a backlog older than
/// that must have been taken by the socket, or the connection closed); and
/// once a connection is let go, its task ends (its socket closed) within
/// the close grace, and no emit counts it any more.
#[test]
fn what_a_connection_holds_stays_within_the_bound_and_its_last_stall_timeout() {
    check(
        "the bytes held for a connection stay within the bound plus the last stall timeout's events",
        |outcome| {
            let mut broken = Vec::new();
            let window = STALL_TIMEOUT + SLACK;
            for peer in &outcome.peers {
                let ledger = &peer.ledger;
                for held in &ledger.held {
                    let recent: u64 = ledger
                        .sent
                        .iter()
                        .filter(|s| s.at <= held.at && s.at + window > held.at)
                        .map(|s| s.wire)
                        .sum();
                    let limit = outcome.bound as u64 + recent;
                    if held.bytes > limit {
                        broken.push(format!(
                            "{}: {} KiB held at {}, past the bound ({} KiB) plus the {} KiB emitted to it in the {} before",
                            peer.name,
                            held.bytes / 1024,
                            secs(held.at),
                            outcome.bound / KIB,
                            recent / 1024,
                            secs(window),
                        ));
                        break;
                    }
                }
                if let Some(gone) = ledger.disconnected_at {
                    if ledger.last_targeted.is_some_and(|t| t > gone) {
                        broken.push(format!(
                            "{}: an emit still counted it at {:?}, after it was let go at {}",
                            peer.name,
                            ledger.last_targeted,
                            secs(gone)
                        ));
                    }
                    // Its task ends (releasing what it held) within the
                    // close grace: the server closes its end of the socket.
                    let deadline = gone + CLOSE_GRACE + SLACK;
                    match ledger.socket_closed_at {
                        Some(closed) if closed <= deadline => {}
                        Some(closed) => broken.push(format!(
                            "{}: let go at {}, but its socket was closed only at {} (the close grace is {})",
                            peer.name,
                            secs(gone),
                            secs(closed),
                            secs(CLOSE_GRACE)
                        )),
                        None if !reading(peer) => broken.push(format!(
                            "{}: let go at {}, its socket still open when the run ended at {}",
                            peer.name,
                            secs(gone),
                            secs(outcome.ended_at)
                        )),
                        None => {}
                    }
                }
            }
            broken
        },
    );
}

//! `rtm-cluster-bench`: cross-server delivery through one Redis.
//!
//! Two servers with auth run in this process, each with its own
//! [`RedisBroker`] on the same Redis and namespace. `--users` WebSocket
//! clients (`u0`, `u1`, …) connect to server 2; server 1 publishes
//! `("bench", [seq, sent_ns])` to them round-robin, either paced
//! (`--rate N` publishes per second, open loop) or as fast as a window of
//! undelivered publishes allows (`--rate 0`, closed loop). Every delivery's
//! latency is measured from the embedded send time on one shared clock.
//! Every run stops by itself.
//!
//! ```text
//! rtm-cluster-bench [--redis URL] [--users 100] [--seconds 10] [--rate 0] [--window 4096] [--history]
//! rtm-cluster-bench --recovery-rounds 100 [--recovery-missed 300] [--event-bytes 1024]
//! ```
//! Without `--redis` (or `RTM_REDIS_URL`) a private `redis-server` is started.
//!
//! `--history` keeps history for the published event (docs/history.md):
//! every publish is appended to its user's stream in Redis and published
//! with its position, in one script; compare with and without in one run.
//!
//! `--recovery-rounds R` measures recovery instead: each round a client
//! learns a fresh Push stream's position, leaves, `--recovery-missed`
//! events of `--event-bytes` are pushed from server 1, and a new
//! connection to server 2 signs in and subscribes with its position; the
//! time from its connect to the subscribe's reply (every missed event
//! before it) is one sample. Then the Redis memory of one stream holding
//! 100 such events (`MEMORY USAGE` of its two keys).
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use rtm_driver::broker::BrokerState;
use rtm_driver::fixture::{fixture_builder, FixtureOptions};
use rtm_redis::testing::{RedisServer, REDIS_URL_ENV};
use rtm_redis::{RedisBroker, RedisBrokerConfig};
use rtm_tokio::{Listening, Server, ServerBuilderExt, ServerHandle, TokioRuntime};
use tokio::sync::{watch, Notify};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;

/// The sequence number of warm-up publishes (ignored by the measurement).
const WARMUP: u64 = u64::MAX;
/// The event every publish carries.
const EVENT: &str = "bench";
/// The event of the recovery probe's pushes (streams of 500).
const PROBE: &str = "probe";
/// The event whose stream's memory is measured (the default size, 100).
const MEMORY_PROBE: &str = "probe-memory";
/// How long to wait for in-flight deliveries after the last publish.
const DRAIN: Duration = Duration::from_secs(3);

/// Cross-server delivery benchmark through one Redis.
#[derive(Parser, Debug)]
#[command(name = "rtm-cluster-bench")]
struct Args {
    /// Redis URL (default: `RTM_REDIS_URL`, else a private redis-server).
    #[arg(long)]
    redis: Option<String>,
    /// Client connections on server 2, one per user `u0..uN-1`.
    #[arg(long, default_value_t = 100)]
    users: usize,
    /// How long to publish (at most 120).
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Publishes per second; 0 = as fast as the window allows.
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// With `--rate 0`: publishes sent but not yet delivered, at most.
    #[arg(long, default_value_t = 4096)]
    window: u64,
    /// Server 2's write delay in microseconds (`ServerBuilder::write_delay`;
    /// 0 = every burst written at once).
    #[arg(long, default_value_t = 0)]
    write_delay_us: u64,
    /// Broker topic namespace (default: unique per run).
    #[arg(long)]
    namespace: Option<String>,
    /// tokio worker threads of the bench process (both servers, the
    /// publisher and the receivers); default: one per core.
    #[arg(long)]
    worker_threads: Option<usize>,
    /// Keep history for the published event (default size and TTL).
    #[arg(long)]
    history: bool,
    /// Measure recovery instead: this many reconnects (at most 10,000).
    #[arg(long, default_value_t = 0)]
    recovery_rounds: usize,
    /// With `--recovery-rounds`: events missed before each reconnect (at
    /// most the recovery cap, 300).
    #[arg(long, default_value_t = 300)]
    recovery_missed: u64,
    /// With `--recovery-rounds`: the size of each event's argument, in bytes.
    #[arg(long, default_value_t = 1024)]
    event_bytes: usize,
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// What the receivers and the publisher share.
struct Progress {
    origin: Instant,
    /// Measured deliveries so far (warm-up excluded).
    received: AtomicU64,
    /// Whether the closed-loop publisher waits for the window to open.
    waiting: AtomicBool,
    window_open: Notify,
    /// Receivers that have seen a warm-up event.
    warmed: AtomicU64,
    /// Connections closed by the server mid-run (e.g. as slow consumers).
    closed: AtomicU64,
}

/// One receiver's record.
#[derive(Default)]
struct Record {
    latencies_ns: Vec<u64>,
    last_at: Option<Instant>,
    unparsed: u64,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(threads) = args.worker_threads {
        builder.worker_threads(threads.max(1));
    }
    let runtime = match builder.enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("rtm-cluster-bench: cannot start tokio: {err}");
            return ExitCode::FAILURE;
        }
    };
    // On a worker, not on this thread: a third busy thread on two cores
    // would only add preemption delays.
    let result = runtime.block_on(async {
        tokio::spawn(run(args))
            .await
            .unwrap_or_else(|e| Err(format!("the bench task failed: {e}")))
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("rtm-cluster-bench: {err}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<(), String> {
    let seconds = args.seconds.clamp(1, 120);
    let users = args.users.max(1);
    // Keeps the private Redis alive for the whole run.
    let mut owned = None;
    let url = match args
        .redis
        .clone()
        .or_else(|| std::env::var(REDIS_URL_ENV).ok().filter(|u| !u.is_empty()))
    {
        Some(url) => url,
        None => {
            let server = RedisServer::start()?;
            let url = server.url();
            owned = Some(server);
            url
        }
    };
    let namespace = args.namespace.clone().unwrap_or_else(|| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        format!("bench{}x{nanos}", std::process::id())
    });
    let write_delay = Duration::from_micros(args.write_delay_us);
    let history = (args.history || args.recovery_rounds > 0).then(|| {
        rtm_core::HistoryConfig::default()
            .enable(EVENT, rtm_core::StreamOptions::default())
            // Room for the 300 missed events a recovery returns at most.
            .enable(
                PROBE,
                rtm_core::StreamOptions {
                    size: 500,
                    ..rtm_core::StreamOptions::default()
                },
            )
            .enable(MEMORY_PROBE, rtm_core::StreamOptions::default())
    });
    let server1 =
        start_server(&url, &namespace, "bench-1", Duration::ZERO, history.clone()).await?;
    let server2 = start_server(&url, &namespace, "bench-2", write_delay, history).await?;
    wait_up(server1.handle()).await?;
    wait_up(server2.handle()).await?;
    if args.recovery_rounds > 0 {
        let result = recovery_probe(&args, &url, &namespace, &server1, &server2).await;
        server2.shutdown().await;
        server1.shutdown().await;
        return result;
    }

    let progress = Arc::new(Progress {
        origin: Instant::now(),
        received: AtomicU64::new(0),
        waiting: AtomicBool::new(false),
        window_open: Notify::new(),
        warmed: AtomicU64::new(0),
        closed: AtomicU64::new(0),
    });
    let signing_in = Instant::now();
    let sockets = connect_users(&server2.url(), users).await?;
    let signed_in = signing_in.elapsed();
    println!(
        "{users} users signed in on server 2 (100 at a time, each subscribing its user's topic in Redis) in {signed_in:.2?} ({:.0}/s)",
        users as f64 / signed_in.as_secs_f64()
    );
    let (stop_tx, stop_rx) = watch::channel(false);
    let receivers: Vec<_> = sockets
        .into_iter()
        .map(|ws| tokio::spawn(receive(ws, progress.clone(), stop_rx.clone())))
        .collect();

    let publisher = server1.handle().clone();
    let names: Vec<String> = (0..users).map(|i| format!("u{i}")).collect();
    warm_up(&publisher, &names, &progress).await?;

    let errors_before = publisher.broker_errors();
    let redis_pid = owned.as_ref().and_then(RedisServer::pid);
    let cpu_before = (
        cpu_seconds(None),
        redis_pid.and_then(|p| cpu_seconds(Some(p))),
    );
    let started = Instant::now();
    let deadline = started + Duration::from_secs(seconds);
    let (sent, publish_errors) = if args.rate == 0 {
        closed_loop(&publisher, &names, &progress, deadline, args.window.max(1)).await
    } else {
        open_loop(&publisher, &names, &progress, deadline, args.rate).await
    };
    let publish_ended = Instant::now();
    // Let in-flight deliveries land.
    let drain_until = publish_ended + DRAIN;
    while progress.received.load(Ordering::SeqCst) < sent && Instant::now() < drain_until {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let _ = stop_tx.send(true);
    let mut latencies = Vec::new();
    let mut last = started;
    let mut unparsed = 0;
    for receiver in receivers {
        let record = receiver.await.unwrap_or_default();
        latencies.extend(record.latencies_ns);
        unparsed += record.unparsed;
        if let Some(at) = record.last_at {
            last = last.max(at);
        }
    }
    let cpu = cpu_seconds(None)
        .zip(cpu_before.0)
        .map(|(after, before)| after - before);
    let redis_cpu = redis_pid
        .and_then(|p| cpu_seconds(Some(p)))
        .zip(cpu_before.1)
        .map(|(after, before)| after - before);
    latencies.sort_unstable();
    let received = latencies.len() as u64;
    let elapsed = last.max(publish_ended) - started;
    let broker_errors = publisher.broker_errors() - errors_before;
    let mode = match args.rate {
        0 => format!("closed loop, window {}", args.window.max(1)),
        rate => format!("open loop, {rate}/s target"),
    };
    let mode = match args.write_delay_us {
        0 => mode,
        us => format!("{mode}, write delay {us} us"),
    };
    let mode = if args.history {
        format!("{mode}, with history")
    } else {
        mode
    };
    println!("cross-server: {users} users on server 2, publisher on server 1, {mode}, {seconds} s");
    println!(
        "publishes sent {sent} ({:.0}/s), deliveries received {received} in {:.2?} = {:.0} deliveries/s",
        sent as f64 / (publish_ended - started).as_secs_f64(),
        elapsed,
        received as f64 / elapsed.as_secs_f64()
    );
    println!(
        "latency p50 {} p90 {} p99 {} max {}",
        ms(percentile(&latencies, 0.50)),
        ms(percentile(&latencies, 0.90)),
        ms(percentile(&latencies, 0.99)),
        ms(latencies.last().copied().unwrap_or(0)),
    );
    println!(
        "publish errors {publish_errors}, broker errors {broker_errors}, lost {}, unparsed {unparsed}, connections closed {}",
        sent.saturating_sub(received),
        progress.closed.load(Ordering::Relaxed)
    );
    if let Some(cpu) = cpu {
        let per = |seconds: f64| seconds * 1e6 / received.max(1) as f64;
        let redis = match redis_cpu {
            Some(r) => format!(", redis-server {r:.2} s ({:.1} us/delivery)", per(r)),
            None => String::new(),
        };
        println!(
            "cpu: this process {cpu:.2} s ({:.1} us/delivery){redis}; load average {}",
            per(cpu),
            load_average()
        );
    }
    server2.shutdown().await;
    server1.shutdown().await;
    Ok(())
}

async fn start_server(
    url: &str,
    namespace: &str,
    id: &str,
    write_delay: Duration,
    history: Option<rtm_core::HistoryConfig>,
) -> Result<Listening, String> {
    let options = FixtureOptions {
        auth: true,
        namespace: Some(namespace.to_owned()),
        ..FixtureOptions::default()
    };
    // No heartbeat: the receivers only read, they never answer pings.
    let mut builder = fixture_builder(Server::builder(), &options)
        .server_id(id)
        .heartbeat(None)
        .write_delay(write_delay);
    if let Some(history) = history {
        builder = builder.history(history);
    }
    let config = RedisBrokerConfig::new(url, namespace, id);
    let broker = RedisBroker::new(config, TokioRuntime::current()).map_err(|e| e.to_string())?;
    builder
        .broker(Arc::new(broker))
        .listen("127.0.0.1:0")
        .await
        .map_err(|e| format!("cannot listen: {e}"))
}

async fn wait_up(server: &ServerHandle) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while server.broker_state() != Some(BrokerState::Up) {
        if Instant::now() > deadline {
            return Err(format!("broker not up: {:?}", server.broker_state()));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(())
}

/// Connects and authenticates `u0..u{n-1}`, 100 at a time.
async fn connect_users(url: &str, n: usize) -> Result<Vec<Ws>, String> {
    let mut sockets = Vec::with_capacity(n);
    for chunk in (0..n).collect::<Vec<_>>().chunks(100) {
        let batch = futures_util::future::join_all(chunk.iter().map(|&i| async move {
            // tungstenite zero-fills the whole read buffer before every read
            // (128 KiB by default): a small one keeps the receivers cheap (a read still
            // takes ~80 events).
            let config = WebSocketConfig::default().read_buffer_size(4 * 1024);
            let (mut ws, _) = tokio_tungstenite::connect_async_with_config(url, Some(config), true)
                .await
                .map_err(|e| format!("connect: {e}"))?;
            let auth = format!(r#"{{"id":"a","type":"auth","data":["user:u{i}"]}}"#);
            ws.send(Message::text(auth))
                .await
                .map_err(|e| format!("auth: {e}"))?;
            match ws.next().await {
                Some(Ok(Message::Text(reply))) if !reply.as_str().contains("\"error\"") => Ok(ws),
                other => Err(format!("auth of u{i} failed: {other:?}")),
            }
        }))
        .await;
        for result in batch {
            sockets.push(result?);
        }
    }
    Ok(sockets)
}

/// Publishes warm-up events to every user until every receiver has one, so
/// that every subscription is in place in Redis before measuring.
async fn warm_up(
    server: &ServerHandle,
    users: &[String],
    progress: &Progress,
) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while progress.warmed.load(Ordering::SeqCst) < users.len() as u64 {
        if Instant::now() > deadline {
            return Err(format!(
                "only {} of {} receivers warmed up",
                progress.warmed.load(Ordering::SeqCst),
                users.len()
            ));
        }
        for user in users {
            server
                .publish(user, EVENT, &(WARMUP, 0u64))
                .map_err(|e| format!("warm-up publish: {e}"))?;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Let the last warm-up events drain.
    tokio::time::sleep(Duration::from_millis(200)).await;
    Ok(())
}

fn publish_one(
    server: &ServerHandle,
    users: &[String],
    progress: &Progress,
    seq: u64,
) -> Result<usize, rtm_core::RtmError> {
    let user = &users[(seq % users.len() as u64) as usize];
    let now = progress.origin.elapsed().as_nanos() as u64;
    server.publish(user, EVENT, &(seq, now))
}

/// As fast as possible, with at most `window` publishes undelivered. Returns (sent, errors).
async fn closed_loop(
    server: &ServerHandle,
    users: &[String],
    progress: &Progress,
    deadline: Instant,
    window: u64,
) -> (u64, u64) {
    let (mut sent, mut errors) = (0u64, 0u64);
    while Instant::now() < deadline {
        let in_flight = sent.saturating_sub(progress.received.load(Ordering::SeqCst));
        if in_flight >= window {
            progress.waiting.store(true, Ordering::SeqCst);
            if sent.saturating_sub(progress.received.load(Ordering::SeqCst)) >= window {
                // A timeout so a lost delivery cannot stall the run.
                let _ = tokio::time::timeout(
                    Duration::from_millis(20),
                    progress.window_open.notified(),
                )
                .await;
            }
            progress.waiting.store(false, Ordering::SeqCst);
            continue;
        }
        // Up to 512 at a time, then let the other tasks run.
        for _ in 0..(window - in_flight).min(512) {
            match publish_one(server, users, progress, sent) {
                Ok(_) => sent += 1,
                Err(_) => errors += 1,
            }
        }
        tokio::task::yield_now().await;
    }
    (sent, errors)
}

/// `rate` publishes per second, paced every millisecond. Returns (sent, errors).
async fn open_loop(
    server: &ServerHandle,
    users: &[String],
    progress: &Progress,
    deadline: Instant,
    rate: u64,
) -> (u64, u64) {
    let started = Instant::now();
    let (mut sent, mut attempts, mut errors) = (0u64, 0u64, 0u64);
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tick.tick().await;
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        // Catch up on whatever the schedule says is due by now.
        let due = ((now - started).as_secs_f64() * rate as f64) as u64;
        while attempts < due {
            match publish_one(server, users, progress, sent) {
                Ok(_) => sent += 1,
                Err(_) => errors += 1,
            }
            attempts += 1;
        }
    }
    (sent, errors)
}

/// Reads events until stopped; records each measured delivery's latency.
async fn receive(ws: Ws, progress: Arc<Progress>, mut stop: watch::Receiver<bool>) -> Record {
    let mut record = Record {
        latencies_ns: Vec::with_capacity(4096),
        ..Record::default()
    };
    let (_tx, mut rx) = ws.split();
    let mut warmed = false;
    loop {
        let message = tokio::select! {
            _ = stop.changed() => break,
            message = rx.next() => message,
        };
        let text = match message {
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => {
                progress.closed.fetch_add(1, Ordering::Relaxed);
                break;
            }
            Some(Ok(_)) => continue,
        };
        let Some((seq, sent_ns)) = parse_event(text.as_str()) else {
            record.unparsed += 1;
            continue;
        };
        if seq == WARMUP {
            if !warmed {
                warmed = true;
                progress.warmed.fetch_add(1, Ordering::SeqCst);
            }
            continue;
        }
        let now = progress.origin.elapsed().as_nanos() as u64;
        record.latencies_ns.push(now.saturating_sub(sent_ns));
        record.last_at = Some(Instant::now());
        progress.received.fetch_add(1, Ordering::SeqCst);
        if progress.waiting.load(Ordering::SeqCst) {
            progress.window_open.notify_one();
        }
    }
    record
}

/// `{"event":"bench","data":[SEQ,SENT_NS]}` → (SEQ, SENT_NS).
fn parse_event(text: &str) -> Option<(u64, u64)> {
    let data = text.strip_prefix(r#"{"event":"bench","data":["#)?;
    let (seq, rest) = data.split_once(',')?;
    let (sent, _) = rest.split_once(']')?;
    Some((seq.trim().parse().ok()?, sent.trim().parse().ok()?))
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

fn ms(ns: u64) -> String {
    format!("{:.3} ms", ns as f64 / 1e6)
}

/// User + system CPU seconds of `pid` (this process if `None`), from /proc.
fn cpu_seconds(pid: Option<u32>) -> Option<f64> {
    let path = match pid {
        Some(pid) => format!("/proc/{pid}/stat"),
        None => "/proc/self/stat".to_owned(),
    };
    let stat = std::fs::read_to_string(path).ok()?;
    // Fields after the parenthesised command name; utime and stime are 14 and 15.
    let rest = stat.rsplit_once(')')?.1;
    let mut fields = rest.split_whitespace().skip(11);
    let utime: f64 = fields.next()?.parse().ok()?;
    let stime: f64 = fields.next()?.parse().ok()?;
    // Clock ticks; 100 per second on Linux.
    Some((utime + stime) / 100.0)
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

/// `--recovery-rounds`: reconnects that each recover `--recovery-missed`
/// events; prints p50/p90/p99/max of connect-to-whole, then the Redis
/// memory of one stream of 100 events.
async fn recovery_probe(
    args: &Args,
    url: &str,
    namespace: &str,
    server1: &Listening,
    server2: &Listening,
) -> Result<(), String> {
    let rounds = args.recovery_rounds.min(10_000);
    let missed = args.recovery_missed.clamp(1, 300);
    let payload = "x".repeat(args.event_bytes);
    let pusher = server1.handle().clone();
    let mut samples = Vec::with_capacity(rounds);
    for round in 0..rounds {
        let tag = format!("r{round}");
        // Where the stream is (a fresh one: offset 0, its epoch).
        let mut ws = signed_in(&server2.url(), "prober").await?;
        let (_, reply) = subscribe_since(&mut ws, &tag, "null").await?;
        let epoch = reply["streams"][&tag]["epoch"]
            .as_str()
            .ok_or_else(|| format!("no position in {reply}"))?
            .to_owned();
        drop(ws);
        // Missed while away.
        for n in 0..missed {
            pusher
                .push(PROBE, std::slice::from_ref(&tag), &(n, &payload))
                .map_err(|e| format!("push: {e}"))?;
        }
        // Kept: the stream's top reached.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let kept = pusher
                .push_history(PROBE, &tag, missed, 1)
                .await
                .map_err(|e| format!("read: {e}"))?;
            if kept.top.offset >= missed {
                break;
            }
            if Instant::now() > deadline {
                return Err(format!("the pushes of round {round} were not kept in 10 s"));
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let started = Instant::now();
        let mut ws = signed_in(&server2.url(), "prober").await?;
        let since = format!(r#"{{"offset":0,"epoch":"{epoch}"}}"#);
        let (events, reply) = subscribe_since(&mut ws, &tag, &since).await?;
        let took = started.elapsed();
        if events != missed || reply["streams"][&tag]["recovered"] != serde_json::json!(true) {
            return Err(format!("round {round}: {events} events before {reply}"));
        }
        samples.push(took.as_nanos() as u64);
    }
    samples.sort_unstable();
    println!(
        "recovery: {rounds} reconnects (connect, sign in, subscribe with a position) each whole again after {missed} missed events of {} bytes: p50 {} p90 {} p99 {} max {}",
        args.event_bytes,
        ms(percentile(&samples, 0.50)),
        ms(percentile(&samples, 0.90)),
        ms(percentile(&samples, 0.99)),
        ms(samples.last().copied().unwrap_or(0)),
    );
    // One stream of 100 events of this size, in Redis.
    let tag = "memory";
    for n in 0..100u64 {
        pusher
            .push(MEMORY_PROBE, &[tag.to_owned()], &(n, &payload))
            .map_err(|e| format!("push: {e}"))?;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let topic = rtm_core::Topic::push(namespace, MEMORY_PROBE, tag);
    let client = redis::Client::open(url).map_err(|e| e.to_string())?;
    let mut con = client.get_connection().map_err(|e| e.to_string())?;
    let mut bytes = 0u64;
    for suffix in ["s", "m"] {
        let used: Option<u64> = redis::cmd("MEMORY")
            .arg("USAGE")
            .arg(format!("{{{}}}:{suffix}", topic.as_str()))
            .arg("SAMPLES")
            .arg(0)
            .query(&mut con)
            .map_err(|e| e.to_string())?;
        bytes += used.unwrap_or(0);
    }
    println!(
        "redis memory of one stream of 100 events of {} bytes: {bytes} bytes ({:.0} per event)",
        args.event_bytes,
        bytes as f64 / 100.0
    );
    Ok(())
}

/// A WebSocket to `url` signed in as `user`.
async fn signed_in(url: &str, user: &str) -> Result<Ws, String> {
    let (mut ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let auth = format!(r#"{{"id":"a","type":"auth","data":["user:{user}"]}}"#);
    ws.send(Message::text(auth))
        .await
        .map_err(|e| format!("auth: {e}"))?;
    match ws.next().await {
        Some(Ok(Message::Text(reply))) if !reply.as_str().contains("\"error\"") => Ok(ws),
        other => Err(format!("auth failed: {other:?}")),
    }
}

/// Subscribes to the probe's `tag` with `since` (raw JSON); returns the
/// events before the reply, and the reply.
async fn subscribe_since(
    ws: &mut Ws,
    tag: &str,
    since: &str,
) -> Result<(u64, serde_json::Value), String> {
    let request = format!(
        r#"{{"id":"s","type":"subscribe","event":"{PROBE}","tags":["{tag}"],"since":{{"{tag}":{since}}}}}"#
    );
    ws.send(Message::text(request))
        .await
        .map_err(|e| format!("subscribe: {e}"))?;
    let mut events = 0;
    loop {
        match tokio::time::timeout(Duration::from_secs(10), ws.next()).await {
            Ok(Some(Ok(Message::Text(text)))) => {
                let frame: serde_json::Value =
                    serde_json::from_str(text.as_str()).map_err(|e| e.to_string())?;
                if frame.get("id").is_some() {
                    return Ok((events, frame));
                }
                events += 1;
            }
            Ok(Some(Ok(_))) => {}
            other => return Err(format!("no reply to the subscribe: {other:?}")),
        }
    }
}

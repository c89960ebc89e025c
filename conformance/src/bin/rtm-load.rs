//! `rtm-load`: a bounded load generator against an `rtm-fixture` (or any
//! server with the fixture functions). Every run stops by itself.
//!
//! ```text
//! rtm-load calls --url ws://127.0.0.1:PORT/ --connections 50 --in-flight 8 --seconds 10
//! rtm-load emit  --url ws://127.0.0.1:PORT/ --connections 2000 --events 50
//! rtm-load idle  --url ws://127.0.0.1:PORT/ --connections 10000 --server-pid PID
//! rtm-load idle  --url wss://127.0.0.1:PORT/ --ca cert.pem --connections 10000 --server-pid PID
//! rtm-load burst --url ws://127.0.0.1:PORT/ --sizes-mb 1,2,8 --passes 10 --server-pid PID
//! ```
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Round trips of `echo` with a window of calls in flight per connection.
    Calls {
        #[arg(long)]
        url: String,
        #[arg(long, default_value_t = 50)]
        connections: usize,
        #[arg(long, default_value_t = 8)]
        in_flight: usize,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
    },
    /// One caller `broadcast`s events; every other connection counts them.
    Emit {
        #[arg(long)]
        url: String,
        #[arg(long, default_value_t = 2000)]
        connections: usize,
        #[arg(long, default_value_t = 50)]
        events: usize,
    },
    /// Opens connections and holds them; reports the server's RSS per connection.
    Idle {
        #[arg(long)]
        url: String,
        #[arg(long, default_value_t = 10_000)]
        connections: usize,
        #[arg(long)]
        server_pid: Option<u32>,
        #[arg(long, default_value_t = 3)]
        hold_seconds: u64,
        /// With a `wss://` URL: trust this PEM certificate (e.g. the
        /// fixture's self-signed one) instead of Mozilla's roots.
        #[arg(long)]
        ca: Option<std::path::PathBuf>,
    },
    /// Bursts of events in one pass (the fixture's `burst`): a reader that
    /// reads as fast as it can and one that never reads are both targets.
    /// Reports the fast reader's delivery latency and closes (none
    /// expected), whether the paused reader was closed 1013, and the
    /// server's memory.
    Burst {
        #[arg(long)]
        url: String,
        /// Burst sizes, in MB (10^6 bytes) of event payload per pass.
        #[arg(long, value_delimiter = ',', default_values_t = [1.0, 2.0, 8.0])]
        sizes_mb: Vec<f64>,
        /// Passes per size.
        #[arg(long, default_value_t = 10)]
        passes: usize,
        /// Payload bytes per event.
        #[arg(long, default_value_t = 10_000)]
        event_bytes: usize,
        #[arg(long)]
        server_pid: Option<u32>,
    },
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect_many(url: &str, n: usize) -> Vec<Ws> {
    let mut sockets = Vec::with_capacity(n);
    // Open in batches of 200 so the listen backlog is never the bottleneck.
    for chunk in (0..n).collect::<Vec<_>>().chunks(200) {
        let batch = futures_util::future::join_all(
            chunk.iter().map(|_| tokio_tungstenite::connect_async(url)),
        )
        .await;
        for result in batch {
            match result {
                Ok((ws, _)) => sockets.push(ws),
                Err(err) => eprintln!("connect failed: {err}"),
            }
        }
    }
    sockets
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

async fn calls(url: String, connections: usize, in_flight: usize, seconds: u64) {
    let sockets = connect_many(&url, connections).await;
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let tasks = sockets.into_iter().map(|ws| {
        tokio::spawn(async move {
            let (mut tx, mut rx) = ws.split();
            let mut latencies = Vec::new();
            let mut sent_at = std::collections::HashMap::new();
            let mut next_id = 0u64;
            for _ in 0..in_flight {
                next_id += 1;
                sent_at.insert(next_id, Instant::now());
                let frame = format!(
                    r#"{{"id":"{next_id}","type":"invoke","function":"echo","data":[{next_id}]}}"#
                );
                if tx.send(Message::text(frame)).await.is_err() {
                    return latencies;
                }
            }
            while let Some(Ok(Message::Text(text))) = rx.next().await {
                let value: serde_json::Value =
                    serde_json::from_str(text.as_str()).unwrap_or_default();
                let id: u64 = value["id"]
                    .as_str()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0);
                if let Some(at) = sent_at.remove(&id) {
                    latencies.push(at.elapsed());
                }
                if Instant::now() >= deadline {
                    if sent_at.is_empty() {
                        break;
                    }
                    continue;
                }
                next_id += 1;
                sent_at.insert(next_id, Instant::now());
                let frame = format!(
                    r#"{{"id":"{next_id}","type":"invoke","function":"echo","data":[{next_id}]}}"#
                );
                if tx.send(Message::text(frame)).await.is_err() {
                    break;
                }
            }
            let _ = tx.close().await;
            latencies
        })
    });
    let mut all = Vec::new();
    for task in futures_util::future::join_all(tasks).await {
        all.extend(task.unwrap_or_default());
    }
    let elapsed = started.elapsed();
    all.sort();
    println!(
        "calls: {} connections x {} in flight: {} calls in {:.2?} = {:.0} calls/s; latency p50 {:.2?} p99 {:.2?}",
        connections,
        in_flight,
        all.len(),
        elapsed,
        all.len() as f64 / elapsed.as_secs_f64(),
        percentile(&all, 0.5),
        percentile(&all, 0.99)
    );
}

async fn emit(url: String, connections: usize, events: usize) {
    let receivers = connect_many(&url, connections).await;
    let (mut caller, _) = match tokio_tungstenite::connect_async(url.as_str()).await {
        Ok(pair) => pair,
        Err(err) => {
            eprintln!("caller failed to connect: {err}");
            return;
        }
    };
    let n = receivers.len();
    let started = Instant::now();
    let counting = receivers.into_iter().map(|mut ws| {
        tokio::spawn(async move {
            let mut got = 0;
            let limit = Instant::now() + Duration::from_secs(60);
            while got < events {
                let next = tokio::time::timeout_at(limit.into(), ws.next()).await;
                match next {
                    Ok(Some(Ok(Message::Text(text))))
                        if text.as_str().starts_with("{\"event\"") =>
                    {
                        got += 1
                    }
                    Ok(Some(Ok(_))) => {}
                    _ => break,
                }
            }
            got
        })
    });
    let counting: Vec<_> = counting.collect();
    for i in 0..events {
        let frame =
            format!(r#"{{"id":"b{i}","type":"invoke","function":"broadcast","data":[{i}]}}"#);
        if caller.send(Message::text(frame)).await.is_err() {
            break;
        }
    }
    let mut delivered = 0usize;
    for task in futures_util::future::join_all(counting).await {
        delivered += task.unwrap_or(0);
    }
    let elapsed = started.elapsed();
    println!(
        "emit: {} events to {} connections: {} deliveries in {:.2?} = {:.0} deliveries/s",
        events,
        n,
        delivered,
        elapsed,
        delivered as f64 / elapsed.as_secs_f64()
    );
}

async fn idle(
    url: String,
    connections: usize,
    server_pid: Option<u32>,
    hold_seconds: u64,
    ca: Option<std::path::PathBuf>,
) {
    let before = server_pid.and_then(rss_kib);
    // wss:// through our client (rustls); ws:// as raw sockets.
    let (sockets, clients) = if url.starts_with("wss://") {
        (Vec::new(), connect_many_tls(&url, connections, ca).await)
    } else {
        (connect_many(&url, connections).await, Vec::new())
    };
    let open = sockets.len() + clients.len();
    tokio::time::sleep(Duration::from_secs(hold_seconds)).await;
    let after = server_pid.and_then(rss_kib);
    println!("idle: {open} connections open");
    if let (Some(before), Some(after)) = (before, after) {
        println!(
            "idle: server RSS {before} KiB -> {after} KiB: {:.1} KiB per connection",
            (after.saturating_sub(before)) as f64 / open.max(1) as f64
        );
    }
}

/// `n` of our clients on a `wss://` URL, opened in batches of 200.
async fn connect_many_tls(
    url: &str,
    n: usize,
    ca: Option<std::path::PathBuf>,
) -> Vec<rtm_tokio::Client> {
    let mut options = rtm_tokio::ClientOptions::default().reconnect_delay(Duration::ZERO);
    if let Some(path) = ca {
        let trusted = std::fs::read(&path)
            .map_err(|e| e.to_string())
            .and_then(|pem| rtm_tokio::ClientTls::trusting_pem(&pem).map_err(|e| e.to_string()));
        match trusted {
            Ok(tls) => options = options.tls(tls),
            Err(err) => {
                eprintln!("rtm-load: --ca {}: {err}", path.display());
                return Vec::new();
            }
        }
    }
    let mut clients = Vec::with_capacity(n);
    for chunk in (0..n).collect::<Vec<_>>().chunks(200) {
        let batch = futures_util::future::join_all(
            chunk
                .iter()
                .map(|_| rtm_tokio::Client::connect(url, options.clone())),
        )
        .await;
        for result in batch {
            match result {
                Ok(client) => clients.push(client),
                Err(err) => eprintln!("connect failed: {err}"),
            }
        }
    }
    clients
}

/// The `i` of an event frame `{"event":"…","data":[i,…]}` (without parsing the rest).
fn event_index(text: &str) -> Option<u64> {
    let (_, rest) = text.split_once("\"data\":[")?;
    let end = rest.find(|c: char| !c.is_ascii_digit())?;
    rest[..end].parse().ok()
}

/// What one reader saw.
#[derive(Debug, Default)]
struct Seen {
    /// Arrival of each event of the current pass (by index).
    arrivals: Vec<Option<Instant>>,
    close: Option<String>,
}

async fn burst(
    url: String,
    sizes_mb: Vec<f64>,
    passes: usize,
    event_bytes: usize,
    server_pid: Option<u32>,
) {
    use std::sync::{Arc, Mutex};
    let event_bytes = event_bytes.max(1);
    let baseline = server_pid.and_then(rss_kib);
    // The paused reader: a small receive buffer, never read.
    let paused = async {
        let addr = url
            .trim_start_matches("ws://")
            .split('/')
            .next()
            .unwrap_or_default()
            .to_owned();
        let socket = tokio::net::TcpSocket::new_v4().ok()?;
        socket.set_recv_buffer_size(4096).ok()?;
        let stream = socket.connect(addr.parse().ok()?).await.ok()?;
        tokio_tungstenite::client_async(url.as_str(), stream)
            .await
            .ok()
            .map(|(ws, _)| ws)
    }
    .await;
    let Some(paused) = paused else {
        eprintln!("burst: the paused reader could not connect");
        return;
    };
    let mut sockets = connect_many(&url, 2).await;
    let (Some(mut sender), Some(fast)) = (sockets.pop(), sockets.pop()) else {
        eprintln!("burst: could not connect");
        return;
    };
    let seen = Arc::new(Mutex::new(Seen::default()));
    let (got_tx, mut got_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let reader = {
        let seen = seen.clone();
        tokio::spawn(async move {
            let mut fast = fast;
            while let Some(message) = fast.next().await {
                match message {
                    Ok(Message::Text(text)) => {
                        if let Some(i) = event_index(text.as_str()) {
                            let mut seen = seen.lock().unwrap_or_else(|e| e.into_inner());
                            if let Some(slot) = seen.arrivals.get_mut(i as usize) {
                                *slot = Some(Instant::now());
                            }
                            if seen.arrivals.iter().all(Option::is_some) {
                                let _ = got_tx.send(());
                            }
                        }
                    }
                    Ok(Message::Close(frame)) => {
                        let mut seen = seen.lock().unwrap_or_else(|e| e.into_inner());
                        seen.close = Some(format!("{frame:?}"));
                        let _ = got_tx.send(());
                        return;
                    }
                    Ok(_) => {}
                    Err(err) => {
                        let mut seen = seen.lock().unwrap_or_else(|e| e.into_inner());
                        seen.close = Some(format!("error: {err}"));
                        let _ = got_tx.send(());
                        return;
                    }
                }
            }
        })
    };
    let peak = Arc::new(std::sync::atomic::AtomicU64::new(baseline.unwrap_or(0)));
    let sampling = server_pid.map(|pid| {
        let peak = peak.clone();
        tokio::spawn(async move {
            loop {
                if let Some(kib) = rss_kib(pid) {
                    peak.fetch_max(kib, std::sync::atomic::Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    });
    let mut next_id = 0u64;
    for size_mb in sizes_mb {
        let count = ((size_mb * 1e6) as usize / event_bytes).max(1);
        let mut latencies = Vec::new();
        let mut pass_times = Vec::new();
        let mut incomplete = 0;
        for _ in 0..passes {
            {
                let mut seen = seen.lock().unwrap_or_else(|e| e.into_inner());
                if seen.close.is_some() {
                    break;
                }
                seen.arrivals = vec![None; count];
            }
            while got_rx.try_recv().is_ok() {}
            next_id += 1;
            let id = format!("b{next_id}");
            let call = format!(
                r#"{{"id":"{id}","type":"invoke","function":"burst","data":["b",{count},{event_bytes}]}}"#
            );
            let started = Instant::now();
            if sender.send(Message::text(call)).await.is_err() {
                eprintln!("burst: the sender's connection failed");
                return;
            }
            // The sender is a target too: it reads its copies up to its reply.
            let needle = format!(r#"{{"id":"{id}""#);
            loop {
                match tokio::time::timeout(Duration::from_secs(60), sender.next()).await {
                    Ok(Some(Ok(Message::Text(text)))) if text.as_str().starts_with(&needle) => {
                        break
                    }
                    Ok(Some(Ok(_))) => {}
                    other => {
                        eprintln!("burst: the sender got no reply: {other:?}");
                        return;
                    }
                }
            }
            let complete = tokio::time::timeout(Duration::from_secs(30), got_rx.recv())
                .await
                .is_ok();
            let seen = seen.lock().unwrap_or_else(|e| e.into_inner());
            if !complete || seen.close.is_some() {
                incomplete += 1;
            }
            let arrived: Vec<Duration> = seen
                .arrivals
                .iter()
                .flatten()
                .map(|at| at.saturating_duration_since(started))
                .collect();
            if let Some(last) = arrived.iter().max() {
                pass_times.push(*last);
            }
            latencies.extend(arrived);
        }
        latencies.sort();
        pass_times.sort();
        let closed = seen.lock().unwrap_or_else(|e| e.into_inner()).close.clone();
        println!(
            "burst {size_mb} MB ({count} events of {event_bytes} B) x {passes}: fast reader latency p50 {:.2?} p99 {:.2?}; whole pass p50 {:.2?} max {:.2?}; incomplete passes {incomplete}; fast reader closed: {}",
            percentile(&latencies, 0.5),
            percentile(&latencies, 0.99),
            percentile(&pass_times, 0.5),
            pass_times.last().copied().unwrap_or_default(),
            closed.as_deref().unwrap_or("no"),
        );
    }
    // The paused reader: read now, to see how the server ended it.
    let mut paused = paused;
    let mut paused_end = "still open".to_owned();
    let deadline = Instant::now() + Duration::from_secs(20);
    while let Ok(next) = tokio::time::timeout_at(deadline.into(), paused.next()).await {
        match next {
            Some(Ok(Message::Close(frame))) => {
                paused_end = format!("closed {frame:?}");
                break;
            }
            Some(Ok(_)) => {}
            Some(Err(err)) => {
                paused_end = format!("error: {err}");
                break;
            }
            None => {
                paused_end = "stream ended".into();
                break;
            }
        }
    }
    if let Some(task) = sampling {
        task.abort();
    }
    reader.abort();
    println!("burst: paused reader: {paused_end}");
    if let Some(before) = baseline {
        let peak = peak.load(std::sync::atomic::Ordering::Relaxed);
        println!(
            "burst: server RSS {before} KiB before, peak {peak} KiB (+{:.1} MiB)",
            peak.saturating_sub(before) as f64 / 1024.0
        );
    }
}

#[tokio::main]
async fn main() {
    match Cli::parse().command {
        Command::Calls {
            url,
            connections,
            in_flight,
            seconds,
        } => calls(url, connections, in_flight, seconds.min(300)).await,
        Command::Emit {
            url,
            connections,
            events,
        } => emit(url, connections, events).await,
        Command::Idle {
            url,
            connections,
            server_pid,
            hold_seconds,
            ca,
        } => idle(url, connections, server_pid, hold_seconds.min(300), ca).await,
        Command::Burst {
            url,
            sizes_mb,
            passes,
            event_bytes,
            server_pid,
        } => burst(url, sizes_mb, passes.min(1000), event_bytes, server_pid).await,
    }
}

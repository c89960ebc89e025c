//! `rtm-load`: a bounded load generator against an `rtm-fixture` (or any
//! server with the fixture functions). Every run stops by itself.
//!
//! ```text
//! rtm-load calls --url ws://127.0.0.1:PORT/ --connections 50 --in-flight 8 --seconds 10
//! rtm-load emit  --url ws://127.0.0.1:PORT/ --connections 2000 --events 50
//! rtm-load idle  --url ws://127.0.0.1:PORT/ --connections 10000 --server-pid PID
//! rtm-load idle  --url wss://127.0.0.1:PORT/ --ca cert.pem --connections 10000 --server-pid PID
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
    }
}

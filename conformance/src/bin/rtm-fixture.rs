//! `rtm-fixture`: the fixture server, the same on every adapter, for our
//! conformance tests and for foreign clients: `--runtime tokio` runs it on
//! rtm-tokio, `async-std` and `smol` on rtm-async-std with that executor.
//!
//! ```text
//! rtm-fixture --runtime tokio|async-std|smol --listen 127.0.0.1:PORT [--auth] [--auth-timeout-ms N]
//!             [--redis URL] [--namespace NS] [--max-frame-bytes N] [--max-in-flight N]
//!             [--tls-cert PEM --tls-key PEM] [--metrics-listen 127.0.0.1:PORT]
//!             [--history-events PATTERN]...
//! ```
//! `--history-events` keeps history (100 events, 300 s; docs/history.md)
//! for Push and Publish of the events matching the glob (`*` for all), so
//! a client in any language can test recovery (`since` on subscribe,
//! docs/protocol.md): in Redis with `--redis`, else in memory.
//! Prints `listening on ws://127.0.0.1:PORT/` (`wss://` with TLS) on stdout when ready. On
//! SIGINT (Ctrl-C) or SIGTERM it shuts down gracefully: in-flight calls
//! finish, every connection is closed with 1001, and it exits with 0.
use std::io::{IsTerminal, Write};
use std::net::ToSocketAddrs;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use async_signal::{Signal, Signals};
use clap::Parser;
use conformance::Adapter;
use futures_util::StreamExt;
use rtm_driver::fixture::{fixture_builder, FixtureOptions};
use rtm_driver::tls::ServerTls;
use rtm_driver::ServerBuilder;
use rtm_redis::{RedisBroker, RedisBrokerConfig};

/// The RTM fixture server.
#[derive(Parser, Debug)]
#[command(name = "rtm-fixture")]
struct Args {
    /// The adapter to run on.
    #[arg(long, value_enum, default_value = "tokio")]
    runtime: Adapter,
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: String,
    /// Require auth: `data[0]` = `"user:<id>"`.
    #[arg(long)]
    auth: bool,
    /// Auth timeout in milliseconds (default 10 s; at least 1).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    auth_timeout_ms: Option<u64>,
    /// Join a cluster through this Redis (comma-separated URLs: a Redis Cluster's seed nodes).
    #[arg(long)]
    redis: Option<String>,
    /// Broker topic namespace.
    #[arg(long)]
    namespace: Option<String>,
    /// Largest frame accepted, in bytes (default 1 MiB; at least 1).
    #[arg(long, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    max_frame_bytes: Option<usize>,
    /// Invokes in flight per connection (default 256; at least 1).
    #[arg(long, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    max_in_flight: Option<usize>,
    /// Serve wss:// with this PEM certificate chain (with `--tls-key`).
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<std::path::PathBuf>,
    /// The PEM private key of `--tls-cert`.
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<std::path::PathBuf>,
    /// Serve Prometheus metrics (`GET /metrics`) on this address.
    #[arg(long)]
    metrics_listen: Option<std::net::SocketAddr>,
    /// Keep history for the events matching this glob (`*` any run, `?` one
    /// character; `*` for all), with the default size and TTL; repeat for
    /// more patterns. Kept in Redis with `--redis`, else in memory.
    #[arg(long, value_name = "PATTERN")]
    history_events: Vec<String>,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let args = Args::parse();
    // Before the server starts: it registers its metrics with the recorder
    // installed then.
    if let Some(addr) = args.metrics_listen {
        if let Err(err) = conformance::metrics::serve_prometheus(addr) {
            eprintln!("rtm-fixture: --metrics-listen {addr}: {err}");
            return ExitCode::FAILURE;
        }
    }
    let adapter = args.runtime;
    adapter.block_on(run(args)).unwrap_or_else(|err| {
        eprintln!("rtm-fixture: cannot start {}: {err}", adapter.arg());
        ExitCode::FAILURE
    })
}

async fn run(args: Args) -> ExitCode {
    let adapter = args.runtime;
    let options = FixtureOptions {
        auth: args.auth,
        auth_timeout: args.auth_timeout_ms.map(Duration::from_millis),
        max_frame_bytes: args.max_frame_bytes,
        max_in_flight: args.max_in_flight,
        namespace: args.namespace.clone(),
    };
    let mut builder = fixture_builder(ServerBuilder::new(), &options);
    // Without Redis, history is kept by an in-memory hub of one server
    // (held here for the server's life).
    let memory_hub = (args.redis.is_none() && !args.history_events.is_empty())
        .then(rtm_driver::broker::MemoryHub::new);
    if let Some(hub) = &memory_hub {
        builder = builder.broker(Arc::new(hub.broker()));
    }
    if !args.history_events.is_empty() {
        let history = args
            .history_events
            .iter()
            .fold(rtm_core::HistoryConfig::default(), |history, pattern| {
                history.enable(pattern.as_str(), rtm_core::StreamOptions::default())
            });
        builder = builder.history(history);
    }
    if let Some(url) = &args.redis {
        let namespace = args.namespace.clone().unwrap_or_else(|| "rtm".into());
        let server_id = builder.config().server_id.clone();
        // Several comma-separated URLs: the seed nodes of a Redis Cluster (sharded pub/sub).
        let config = if url.contains(',') {
            RedisBrokerConfig::cluster(url.split(','), &namespace, &server_id)
        } else {
            RedisBrokerConfig::new(url, &namespace, &server_id)
        };
        // On async-std and smol, redis does its IO on async-io (rtm-redis' `smol` feature).
        match RedisBroker::new(config, adapter.runtime()) {
            Ok(broker) => builder = builder.broker(Arc::new(broker)),
            Err(err) => {
                eprintln!("rtm-fixture: --redis: {}", err.reason());
                return ExitCode::from(2);
            }
        }
    }
    if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
        match ServerTls::from_pem_files(cert, key) {
            Ok(tls) => builder = builder.tls(tls),
            Err(err) => {
                eprintln!("rtm-fixture: {err}");
                return ExitCode::from(2);
            }
        }
    }
    // Resolved once, at start-up (a name such as `localhost:7400` works too).
    let addr = match args.listen.to_socket_addrs().map(|mut a| a.next()) {
        Ok(Some(addr)) => addr,
        Ok(None) | Err(_) => {
            eprintln!(
                "rtm-fixture: --listen {}: not an address to listen on (expected host:port, e.g. 127.0.0.1:7400)",
                args.listen
            );
            return ExitCode::from(2);
        }
    };
    let server = match adapter.listen(builder, addr).await {
        Ok(server) => server,
        Err(err) => {
            eprintln!("rtm-fixture: {}", cannot_listen(addr, &err));
            return ExitCode::FAILURE;
        }
    };
    println!("listening on {}", server.url());
    let _ = std::io::stdout().flush();
    // Ctrl-C or a service manager's stop: a graceful shutdown, on every runtime.
    match Signals::new([Signal::Int, Signal::Term]) {
        Ok(mut signals) => {
            if let Some(Ok(signal)) = signals.next().await {
                tracing::info!(?signal, "shutting down");
            }
        }
        Err(err) => {
            eprintln!("rtm-fixture: cannot handle signals ({err}); running until killed");
            std::future::pending::<()>().await;
        }
    }
    server.shutdown().await;
    drop(memory_hub);
    ExitCode::SUCCESS
}

/// Why the listener could not start, with what to do about it.
fn cannot_listen(addr: std::net::SocketAddr, err: &std::io::Error) -> String {
    use std::io::ErrorKind;
    let hint = match err.kind() {
        ErrorKind::AddrInUse => format!(
            "address already in use (another server on port {}? pick another with --listen, or port 0 for a free one)",
            addr.port()
        ),
        ErrorKind::AddrNotAvailable => {
            "no interface of this machine has that address (try 127.0.0.1 or 0.0.0.0)".to_owned()
        }
        ErrorKind::PermissionDenied => format!(
            "permission denied (ports below 1024 need privileges; try --listen {}:7400)",
            addr.ip()
        ),
        _ => err.to_string(),
    };
    format!("cannot listen on {addr}: {hint}")
}

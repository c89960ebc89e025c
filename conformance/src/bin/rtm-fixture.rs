//! `rtm-fixture`: the fixture server, the same on every adapter, for our
//! conformance tests and for foreign clients.
//!
//! ```text
//! rtm-fixture --runtime tokio --listen 127.0.0.1:PORT [--auth] [--auth-timeout-ms N]
//!             [--redis URL] [--namespace NS] [--max-frame-bytes N] [--max-in-flight N]
//! ```
//! Prints `listening on ws://127.0.0.1:PORT/` on stdout when ready.
use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use rtm_driver::fixture::{fixture_builder, FixtureOptions};
use rtm_redis::{RedisBroker, RedisBrokerConfig};
use rtm_tokio::{Server, ServerBuilderExt, TokioRuntime};

#[derive(Clone, Copy, Debug, ValueEnum)]
enum RuntimeName {
    Tokio,
    AsyncStd,
    Smol,
}

/// The RTM fixture server.
#[derive(Parser, Debug)]
#[command(name = "rtm-fixture")]
struct Args {
    /// The adapter to run on.
    #[arg(long, value_enum, default_value = "tokio")]
    runtime: RuntimeName,
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: String,
    /// Require auth: `data[0]` = `"user:<id>"`.
    #[arg(long)]
    auth: bool,
    /// Auth timeout in milliseconds (default 10 s).
    #[arg(long)]
    auth_timeout_ms: Option<u64>,
    /// Join a cluster through this Redis (comma-separated URLs: a Redis Cluster's seed nodes).
    #[arg(long)]
    redis: Option<String>,
    /// Broker topic namespace.
    #[arg(long)]
    namespace: Option<String>,
    /// Largest frame accepted.
    #[arg(long)]
    max_frame_bytes: Option<usize>,
    /// Invokes in flight per connection.
    #[arg(long)]
    max_in_flight: Option<u32>,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    match args.runtime {
        RuntimeName::Tokio => {}
        RuntimeName::AsyncStd | RuntimeName::Smol => {
            let name = if matches!(args.runtime, RuntimeName::Smol) {
                "smol"
            } else {
                "async-std"
            };
            eprintln!("rtm-fixture: runtime {name} is not available yet (tokio only)");
            return ExitCode::from(2);
        }
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("rtm-fixture: cannot start tokio: {err}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(run(args))
}

async fn run(args: Args) -> ExitCode {
    let options = FixtureOptions {
        auth: args.auth,
        auth_timeout: args.auth_timeout_ms.map(Duration::from_millis),
        max_frame_bytes: args.max_frame_bytes,
        max_in_flight: args.max_in_flight,
        namespace: args.namespace.clone(),
    };
    let mut builder = fixture_builder(Server::builder(), &options);
    if let Some(url) = &args.redis {
        let namespace = args.namespace.clone().unwrap_or_else(|| "rtm".into());
        let server_id = builder.config().server_id.clone();
        // Several comma-separated URLs: the seed nodes of a Redis Cluster (sharded pub/sub).
        let config = if url.contains(',') {
            RedisBrokerConfig::cluster(url.split(','), &namespace, &server_id)
        } else {
            RedisBrokerConfig::new(url, &namespace, &server_id)
        };
        match RedisBroker::new(config, TokioRuntime::current()) {
            Ok(broker) => builder = builder.broker(Arc::new(broker)),
            Err(err) => {
                eprintln!("rtm-fixture: {err}");
                return ExitCode::from(2);
            }
        }
    }
    let server = match builder.listen(args.listen.as_str()).await {
        Ok(server) => server,
        Err(err) => {
            eprintln!("rtm-fixture: cannot listen on {}: {err}", args.listen);
            return ExitCode::FAILURE;
        }
    };
    println!("listening on {}", server.url());
    let _ = std::io::stdout().flush();
    let _ = tokio::signal::ctrl_c().await;
    server.shutdown().await;
    ExitCode::SUCCESS
}

//! `rtm-fixture`: the fixture server, the same on every adapter, for our
//! conformance tests and for foreign clients: `--runtime tokio` runs it on
//! rtm-tokio, `async-std` and `smol` on rtm-async-std with that executor.
//!
//! ```text
//! rtm-fixture --runtime tokio|async-std|smol --listen 127.0.0.1:PORT [--auth] [--auth-timeout-ms N]
//!             [--redis URL] [--namespace NS] [--max-frame-bytes N] [--max-in-flight N]
//! ```
//! Prints `listening on ws://127.0.0.1:PORT/` on stdout when ready.
use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use rtm_async_std::{AsyncStdRuntime, SmolRuntime};
use rtm_driver::fixture::{fixture_builder, FixtureOptions};
use rtm_driver::ServerBuilder;
use rtm_redis::{RedisBroker, RedisBrokerConfig};
use rtm_tokio::TokioRuntime;

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
        RuntimeName::Tokio => {
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
        RuntimeName::AsyncStd => async_std::task::block_on(run(args)),
        RuntimeName::Smol => smol::block_on(run(args)),
    }
}

/// The running server, on whichever adapter `--runtime` picked.
enum Running {
    Tokio(rtm_tokio::Listening),
    AsyncIo(rtm_async_std::Listening),
}

impl Running {
    fn url(&self) -> String {
        match self {
            Running::Tokio(server) => server.url(),
            Running::AsyncIo(server) => server.url(),
        }
    }

    async fn shutdown(&self) {
        match self {
            Running::Tokio(server) => server.shutdown().await,
            Running::AsyncIo(server) => server.shutdown().await,
        }
    }
}

/// The broker's runtime: the executor `--runtime` named. On async-std and
/// smol, redis does its IO on async-io (rtm-redis' `smol` feature).
fn redis_broker(args: &Args, config: RedisBrokerConfig) -> Result<RedisBroker, String> {
    let broker = match args.runtime {
        RuntimeName::Tokio => RedisBroker::new(config, TokioRuntime::current()),
        RuntimeName::AsyncStd => RedisBroker::new(config, AsyncStdRuntime),
        RuntimeName::Smol => RedisBroker::new(config, SmolRuntime),
    };
    broker.map_err(|err| err.to_string())
}

async fn run(args: Args) -> ExitCode {
    let options = FixtureOptions {
        auth: args.auth,
        auth_timeout: args.auth_timeout_ms.map(Duration::from_millis),
        max_frame_bytes: args.max_frame_bytes,
        max_in_flight: args.max_in_flight,
        namespace: args.namespace.clone(),
    };
    let mut builder = fixture_builder(ServerBuilder::new(), &options);
    if let Some(url) = &args.redis {
        let namespace = args.namespace.clone().unwrap_or_else(|| "rtm".into());
        let server_id = builder.config().server_id.clone();
        // Several comma-separated URLs: the seed nodes of a Redis Cluster (sharded pub/sub).
        let config = if url.contains(',') {
            RedisBrokerConfig::cluster(url.split(','), &namespace, &server_id)
        } else {
            RedisBrokerConfig::new(url, &namespace, &server_id)
        };
        match redis_broker(&args, config) {
            Ok(broker) => builder = builder.broker(Arc::new(broker)),
            Err(err) => {
                eprintln!("rtm-fixture: {err}");
                return ExitCode::from(2);
            }
        }
    }
    let addr = args.listen.as_str();
    let listened = match args.runtime {
        RuntimeName::Tokio => rtm_tokio::ServerBuilderExt::listen(builder, addr)
            .await
            .map(Running::Tokio),
        RuntimeName::AsyncStd => {
            rtm_async_std::ServerBuilderExt::listen_on(builder, addr, Arc::new(AsyncStdRuntime))
                .await
                .map(Running::AsyncIo)
        }
        RuntimeName::Smol => {
            rtm_async_std::ServerBuilderExt::listen_on(builder, addr, Arc::new(SmolRuntime))
                .await
                .map(Running::AsyncIo)
        }
    };
    let server = match listened {
        Ok(server) => server,
        Err(err) => {
            eprintln!("rtm-fixture: cannot listen on {}: {err}", args.listen);
            return ExitCode::FAILURE;
        }
    };
    println!("listening on {}", server.url());
    let _ = std::io::stdout().flush();
    match args.runtime {
        RuntimeName::Tokio => {
            let _ = tokio::signal::ctrl_c().await;
        }
        // No runtime-neutral Ctrl-C here: run until killed (the default
        // SIGINT / SIGTERM action ends the process).
        RuntimeName::AsyncStd | RuntimeName::Smol => std::future::pending::<()>().await,
    }
    server.shutdown().await;
    ExitCode::SUCCESS
}

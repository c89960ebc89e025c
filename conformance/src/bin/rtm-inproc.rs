//! `rtm-inproc`: the server driver's scaling, in one process, with no
//! loopback sockets: every connection is an in-memory byte pipe
//! (`tokio::io::duplex`) into the driver's own WebSocket, and the clients
//! are tasks on the same tokio runtime. Run it with 1 and with 2 worker
//! threads to see whether the driver scales with cores (a lock shared by
//! every connection would show as flat or falling figures).
//!
//! ```text
//! rtm-inproc calls --threads 2 --connections 64 --in-flight 8 --seconds 5
//! rtm-inproc emit  --threads 2 --connections 2000 --emitters 2 --seconds 5
//! ```
//! Prints one JSON line per run.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use rtm_core::{ConnMeta, RtmError};
use rtm_driver::rt::BoxIo;
use rtm_driver::{CallContext, ServerBuilder, ServerHandle};
use rtm_runtime::{TokioIo, TokioRuntime};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Workload {
    /// Each connection keeps `--in-flight` `echo("x"*100)` calls going.
    Calls,
    /// `--emitters` tasks Emit a 100-byte event to every connection, back to back.
    Emit,
}

#[derive(Parser, Debug)]
#[command(
    name = "rtm-inproc",
    about = "The server driver's throughput in one process, 1 vs N worker threads"
)]
struct Args {
    workload: Workload,
    /// Tokio worker threads.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Connections.
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// Calls in flight per connection (calls).
    #[arg(long, default_value_t = 8)]
    in_flight: usize,
    /// Tasks emitting at once (emit).
    #[arg(long, default_value_t = 2)]
    emitters: usize,
    /// Measured seconds (after one second of warm-up).
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
}

/// A masked client text frame.
fn client_frame(payload: &[u8]) -> Vec<u8> {
    let mut out = vec![0x81];
    match payload.len() {
        n if n < 126 => out.push(0x80 | n as u8),
        n => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
    }
    // A zero mask: valid, and the payload stays readable.
    out.extend_from_slice(&[0, 0, 0, 0]);
    out.extend_from_slice(payload);
    out
}

/// Counts complete server frames in `buf`, consuming them.
fn count_frames(buf: &mut Vec<u8>) -> u64 {
    let mut at = 0;
    let mut frames = 0;
    loop {
        let rest = &buf[at..];
        let Some(&b1) = rest.get(1) else { break };
        let (len, header) = match b1 & 0x7F {
            126 => match rest.get(2..4) {
                Some(b) => (u16::from_be_bytes([b[0], b[1]]) as usize, 4),
                None => break,
            },
            127 => match rest.get(2..10) {
                Some(b) => {
                    let mut be = [0u8; 8];
                    be.copy_from_slice(b);
                    (u64::from_be_bytes(be) as usize, 10)
                }
                None => break,
            },
            n => (n as usize, 2),
        };
        if rest.len() < header + len {
            break;
        }
        at += header + len;
        frames += 1;
    }
    buf.drain(..at);
    frames
}

fn server(runtime: &tokio::runtime::Runtime) -> ServerHandle {
    let _guard = runtime.enter();
    ServerBuilder::new()
        .heartbeat(None)
        .register("echo", |_ctx: CallContext, (x,): (Value,)| async move {
            Ok::<_, RtmError>(x)
        })
        .start(Arc::new(TokioRuntime::current()))
}

/// One in-memory connection: the server side served by the driver.
fn connect(handle: &ServerHandle) -> DuplexStream {
    let (client, server) = tokio::io::duplex(256 * 1024);
    let io: BoxIo = Box::new(TokioIo::new(server));
    handle.serve_upgraded(io, &[], ConnMeta::default());
    client
}

fn main() {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let handle = server(&runtime);
    let counted = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let warmup = Duration::from_secs(1);
    let measured = Duration::from_secs_f64(args.seconds);
    let result = runtime.block_on(async {
        let mut tasks = Vec::new();
        let mut conns = Vec::new();
        for _ in 0..args.connections {
            conns.push(connect(&handle));
        }
        match args.workload {
            Workload::Calls => {
                let payload = "x".repeat(100);
                for (c, conn) in conns.into_iter().enumerate() {
                    let (mut rd, mut wr) = tokio::io::split(conn);
                    // One id per slot: only one call with a given id is in flight.
                    let frames: Vec<Vec<u8>> = (0..args.in_flight)
                        .map(|slot| {
                            let text = format!(
                                r#"{{"id":"c{c}-{slot}","type":"invoke","function":"echo","data":["{payload}"]}}"#
                            );
                            client_frame(text.as_bytes())
                        })
                        .collect();
                    let (counted, stop) = (counted.clone(), stop.clone());
                    tasks.push(tokio::spawn(async move {
                        for f in &frames {
                            if wr.write_all(f).await.is_err() {
                                return;
                            }
                        }
                        let mut next = 0usize;
                        let mut buf = Vec::with_capacity(64 * 1024);
                        let mut chunk = vec![0u8; 64 * 1024];
                        while !stop.load(Ordering::Relaxed) {
                            let n = match rd.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => n,
                            };
                            buf.extend_from_slice(&chunk[..n]);
                            let replies = count_frames(&mut buf);
                            counted.fetch_add(replies, Ordering::Relaxed);
                            let mut batch = Vec::new();
                            for _ in 0..replies {
                                batch.extend_from_slice(&frames[next % frames.len()]);
                                next += 1;
                            }
                            if wr.write_all(&batch).await.is_err() {
                                return;
                            }
                        }
                    }));
                }
            }
            Workload::Emit => {
                for conn in conns {
                    let (counted, stop) = (counted.clone(), stop.clone());
                    let (mut rd, _wr) = tokio::io::split(conn);
                    tasks.push(tokio::spawn(async move {
                        let _keep = _wr;
                        let mut buf = Vec::with_capacity(64 * 1024);
                        let mut chunk = vec![0u8; 64 * 1024];
                        // Counted locally, added to the shared total now and then:
                        // a counter every reader bumps would itself be contended.
                        let mut unreported = 0;
                        while !stop.load(Ordering::Relaxed) {
                            let n = match rd.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => n,
                            };
                            buf.extend_from_slice(&chunk[..n]);
                            unreported += count_frames(&mut buf);
                            if unreported >= 32 {
                                counted.fetch_add(std::mem::take(&mut unreported), Ordering::Relaxed);
                            }
                        }
                    }));
                }
                while handle.connection_count() < args.connections {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                let payload = "y".repeat(100);
                let emitted = Arc::new(AtomicU64::new(0));
                // Events sent but not yet read, at most (about 16 KiB per connection:
                // far under the outbound bound, so no reader is a slow consumer).
                let window = args.connections as u64 * 128;
                for _ in 0..args.emitters {
                    let (handle, stop, payload) = (handle.clone(), stop.clone(), payload.clone());
                    let (emitted, counted) = (emitted.clone(), counted.clone());
                    tasks.push(tokio::spawn(async move {
                        let args = rtm_core::Args::encode(&(payload,)).expect("args");
                        while !stop.load(Ordering::Relaxed) {
                            if emitted.load(Ordering::Relaxed) - counted.load(Ordering::Relaxed) > window {
                                tokio::task::yield_now().await;
                                continue;
                            }
                            let sent = handle.emit_args("tick", |_| true, &args).unwrap_or(0);
                            emitted.fetch_add(sent as u64, Ordering::Relaxed);
                            tokio::task::yield_now().await;
                        }
                    }));
                }
            }
        }
        tokio::time::sleep(warmup).await;
        let start_count = counted.load(Ordering::Relaxed);
        let started = Instant::now();
        tokio::time::sleep(measured).await;
        let total = counted.load(Ordering::Relaxed) - start_count;
        let elapsed = started.elapsed().as_secs_f64();
        stop.store(true, Ordering::Relaxed);
        for task in tasks {
            task.abort();
        }
        (total, elapsed)
    });
    let (total, elapsed) = result;
    let rate = total as f64 / elapsed;
    let unit = match args.workload {
        Workload::Calls => "calls_per_s",
        Workload::Emit => "deliveries_per_s",
    };
    println!(
        "{{\"workload\":\"{:?}\",\"threads\":{},\"connections\":{},\"{unit}\":{rate:.0},\"seconds\":{elapsed:.2}}}",
        args.workload, args.threads, args.connections
    );
    runtime.shutdown_timeout(Duration::from_secs(1));
}

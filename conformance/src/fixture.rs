//! Running the `rtm-fixture` binary as a child process.
//!
//! [`Fixture::start`] spawns `rtm-fixture --runtime tokio --listen 127.0.0.1:0`
//! plus the given flags ([`Fixture::start_on`] picks the runtime: every
//! [`Adapter`] runs the same fixture server), waits (bounded by [`READY_TIMEOUT`]) for its
//! `listening on ws://127.0.0.1:PORT/` line, and kills the process when the
//! [`Fixture`] drops. Everything the process writes to stderr is kept, so a
//! failure to start says why.
//!
//! ```no_run
//! // In an integration test of this crate, cargo names the binary:
//! // let bin = env!("CARGO_BIN_EXE_rtm-fixture");
//! let fixture = conformance::Fixture::start("target/debug/rtm-fixture", ["--auth"]).unwrap();
//! println!("connect to {}", fixture.url());
//! ```

use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, ChildStderr, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::adapter::Adapter;

/// How long a fixture may take to print its `listening on` line.
pub const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// The most stderr kept per process (the tail is kept).
const STDERR_KEEP_BYTES: usize = 64 * 1024;

/// A running `rtm-fixture` process, killed on drop.
#[derive(Debug)]
pub struct Fixture {
    child: Child,
    url: String,
    port: u16,
    stderr: Arc<Mutex<String>>,
}

impl Fixture {
    /// Starts `bin --runtime tokio --listen 127.0.0.1:0 FLAGS…` and waits for it to listen.
    pub fn start<I, S>(bin: impl AsRef<Path>, flags: I) -> Result<Fixture, String>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        Fixture::start_on(bin, Adapter::Tokio, flags)
    }

    /// Starts `bin --runtime RUNTIME --listen 127.0.0.1:0 FLAGS…` and waits for it to listen.
    pub fn start_on<I, S>(
        bin: impl AsRef<Path>,
        runtime: Adapter,
        flags: I,
    ) -> Result<Fixture, String>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut args: Vec<std::ffi::OsString> =
            ["--runtime", runtime.arg(), "--listen", "127.0.0.1:0"]
                .iter()
                .map(Into::into)
                .collect();
        args.extend(flags.into_iter().map(|f| f.as_ref().to_owned()));
        Fixture::spawn(bin, args)
    }

    /// Starts `bin ARGS…` exactly as given and waits for its `listening on` line.
    pub fn spawn<I, S>(bin: impl AsRef<Path>, args: I) -> Result<Fixture, String>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let bin = bin.as_ref();
        let args: Vec<std::ffi::OsString> =
            args.into_iter().map(|a| a.as_ref().to_owned()).collect();
        let shown = format!("{} {}", bin.display(), join_args(&args));
        let mut child = Command::new(bin)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start `{shown}`: {e}"))?;
        let stderr = Arc::new(Mutex::new(String::new()));
        if let Some(pipe) = child.stderr.take() {
            drain_stderr(pipe, Arc::clone(&stderr));
        }
        let Some(stdout) = child.stdout.take() else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("`{shown}`: no stdout pipe"));
        };
        let (line_tx, line_rx) = mpsc::sync_channel(1);
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let first = lines.next();
            let _ = line_tx.send(first);
            // Keep draining so the child never blocks on a full pipe.
            for _ in lines {}
        });
        let fail = |child: &mut Child, why: String| {
            let _ = child.kill();
            let status = child.wait().ok();
            let err = tail(&stderr);
            format!(
                "`{shown}` {why} (exit status: {status:?})\n--- its stderr ---\n{err}\n------------------"
            )
        };
        let line = match line_rx.recv_timeout(READY_TIMEOUT) {
            Ok(Some(Ok(line))) => line,
            Ok(Some(Err(e))) => return Err(fail(&mut child, format!("stdout unreadable: {e}"))),
            Ok(None) | Err(mpsc::RecvTimeoutError::Disconnected) => {
                return Err(fail(&mut child, "exited before listening".into()))
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                return Err(fail(
                    &mut child,
                    format!("printed nothing within {READY_TIMEOUT:?}"),
                ))
            }
        };
        match parse_listening_line(&line) {
            Ok((url, port)) => Ok(Fixture {
                child,
                url,
                port,
                stderr,
            }),
            Err(e) => Err(fail(&mut child, e)),
        }
    }

    /// The URL it printed, `ws://127.0.0.1:PORT/`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its resident memory now, in bytes (Linux: `/proc/PID/status`, `VmRSS`).
    pub fn rss_bytes(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
        let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib * 1024)
    }

    /// What it wrote to stderr so far (the last 64 KiB).
    pub fn stderr(&self) -> String {
        tail(&self.stderr)
    }

    /// Asks it to stop the way a service manager does: SIGTERM (the fixture
    /// then shuts down gracefully). See [`Fixture::wait_exit`].
    pub fn terminate(&self) -> Result<(), String> {
        let pid = self.child.id().to_string();
        // `kill(1)` rather than unsafe libc: one signal, in a test tool.
        let status = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .map_err(|e| format!("cannot run kill: {e}"))?;
        if status.success() {
            Ok(())
        } else {
            Err(format!("kill -TERM {pid}: {status}"))
        }
    }

    /// Waits, at most `timeout`, for the process to exit; its status.
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<ExitStatus, String> {
        match wait_at_most(&mut self.child, timeout) {
            Ok(Some(status)) => Ok(status),
            Ok(None) => Err(format!(
                "still running after {timeout:?}; stderr: {}",
                self.stderr()
            )),
            Err(e) => Err(format!("cannot wait for the fixture: {e}")),
        }
    }
}

/// Waits for `child` to exit, at most `timeout`: `None` if it still runs.
fn wait_at_most(child: &mut Child, timeout: Duration) -> std::io::Result<Option<ExitStatus>> {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait()? {
            Some(status) => return Ok(Some(status)),
            None if Instant::now() < deadline => {
                // No portable "wait with timeout" on a child: poll, bounded.
                std::thread::sleep(Duration::from_millis(10));
            }
            None => return Ok(None),
        }
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Parses `listening on ws://HOST:PORT/` into the URL and the port.
///
/// ```
/// let (url, port) = conformance::fixture::parse_listening_line("listening on ws://127.0.0.1:4100/").unwrap();
/// assert_eq!((url.as_str(), port), ("ws://127.0.0.1:4100/", 4100));
/// let (url, _) = conformance::fixture::parse_listening_line("listening on wss://127.0.0.1:4101/").unwrap();
/// assert_eq!(url, "wss://127.0.0.1:4101/");
/// assert!(conformance::fixture::parse_listening_line("ready").is_err());
/// ```
pub fn parse_listening_line(line: &str) -> Result<(String, u16), String> {
    let bad = || format!("printed {line:?}, not \"listening on ws://HOST:PORT/\" (or wss://)");
    let url = line.strip_prefix("listening on ").ok_or_else(bad)?;
    let authority = url
        .strip_prefix("ws://")
        .or_else(|| url.strip_prefix("wss://"))
        .and_then(|rest| rest.strip_suffix('/'))
        .ok_or_else(bad)?;
    let port = authority
        .rsplit_once(':')
        .and_then(|(_, port)| port.parse::<u16>().ok())
        .ok_or_else(bad)?;
    Ok((url.to_owned(), port))
}

/// How a process that was expected to exit ended.
#[derive(Debug)]
pub struct Exited {
    /// Its exit status.
    pub status: ExitStatus,
    /// What it printed on stdout.
    pub stdout: String,
    /// What it printed on stderr.
    pub stderr: String,
}

/// Runs `bin ARGS…` to completion; kills it and fails if it runs longer than `timeout`.
pub fn run_to_exit<I, S>(
    bin: impl AsRef<Path>,
    args: I,
    timeout: Duration,
) -> Result<Exited, String>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let bin = bin.as_ref();
    let mut child = Command::new(bin)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
    let stdout = child.stdout.take().map(read_all);
    let stderr = child.stderr.take().map(read_all);
    let status = match wait_at_most(&mut child, timeout) {
        Ok(Some(status)) => status,
        Ok(None) => {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("{} still running after {timeout:?}", bin.display()));
        }
        Err(e) => return Err(format!("cannot wait for {}: {e}", bin.display())),
    };
    let collect = |reader: Option<std::thread::JoinHandle<String>>| {
        reader.and_then(|r| r.join().ok()).unwrap_or_default()
    };
    Ok(Exited {
        status,
        stdout: collect(stdout),
        stderr: collect(stderr),
    })
}

fn read_all(mut pipe: impl Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

fn drain_stderr(pipe: ChildStderr, keep: Arc<Mutex<String>>) {
    std::thread::spawn(move || {
        let mut reader = BufReader::new(pipe);
        let mut line = String::new();
        while reader.read_line(&mut line).unwrap_or(0) > 0 {
            let mut kept = keep.lock().unwrap_or_else(|e| e.into_inner());
            kept.push_str(&line);
            if kept.len() > STDERR_KEEP_BYTES {
                let cut = kept.len() - STDERR_KEEP_BYTES;
                let cut = (cut..kept.len())
                    .find(|i| kept.is_char_boundary(*i))
                    .unwrap_or(kept.len());
                kept.drain(..cut);
            }
            line.clear();
        }
    });
}

fn tail(kept: &Mutex<String>) -> String {
    kept.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

fn join_args(args: &[std::ffi::OsString]) -> String {
    args.iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

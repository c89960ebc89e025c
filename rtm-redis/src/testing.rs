//! Throwaway `redis-server` processes for tests (feature `testing`; std only).
//!
//! Tests find Redis through `RTM_REDIS_URL` (set by CI); when it is unset,
//! [`TestRedis::get`] starts a private `redis-server` on a free port, killed
//! when the handle drops. Fault tests that kill Redis always use their own
//! [`RedisServer`], never the shared one.
//!
//! ```no_run
//! let redis = rtm_redis::testing::TestRedis::get().unwrap();
//! println!("{}", redis.url());
//! ```

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The environment variable naming a Redis to test against.
pub const REDIS_URL_ENV: &str = "RTM_REDIS_URL";

/// How long a started server may take to answer PING.
const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// The Redis a test uses: the shared one from `RTM_REDIS_URL`, or a private one.
pub enum TestRedis {
    /// `RTM_REDIS_URL`.
    External(String),
    /// A server this process started (stopped on drop).
    Owned(RedisServer),
}

impl TestRedis {
    /// `RTM_REDIS_URL` if set, else a fresh `redis-server`.
    ///
    /// Fails with "redis-server not found: install it or set RTM_REDIS_URL"
    /// when neither is available.
    pub fn get() -> Result<TestRedis, String> {
        match std::env::var(REDIS_URL_ENV) {
            Ok(url) if !url.is_empty() => Ok(TestRedis::External(url)),
            _ => RedisServer::start().map(TestRedis::Owned),
        }
    }

    /// The URL to connect to.
    pub fn url(&self) -> String {
        match self {
            TestRedis::External(url) => url.clone(),
            TestRedis::Owned(server) => server.url(),
        }
    }
}

/// A `redis-server` child process on 127.0.0.1 without persistence.
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    extra_args: Vec<String>,
}

impl RedisServer {
    /// Starts one on a free port and waits until it answers PING.
    pub fn start() -> Result<RedisServer, String> {
        Self::start_with(free_port()?, &[])
    }

    /// Starts one on `port` with extra `redis-server` arguments (e.g. `--cluster-enabled yes`).
    pub fn start_with(port: u16, extra_args: &[&str]) -> Result<RedisServer, String> {
        let mut server = RedisServer {
            child: None,
            port,
            extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
        };
        server.restart()?;
        Ok(server)
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:{port}`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The process id, while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Kills the process (SIGKILL, no goodbye to clients) and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it (again) on the same port and waits until it answers PING.
    pub fn restart(&mut self) -> Result<(), String> {
        self.kill();
        let dir =
            std::env::temp_dir().join(format!("rtm-redis-{}-{}", std::process::id(), self.port));
        std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {dir:?}: {e}"))?;
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(["--appendonly", "no"])
            .args(["--dir", &dir.to_string_lossy()])
            .args(&self.extra_args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => {
                    format!("redis-server not found: install it or set {REDIS_URL_ENV}")
                }
                _ => format!("cannot start redis-server: {e}"),
            })?;
        self.child = Some(child);
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if ping(self.port) {
                return Ok(());
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                self.child = None;
                return Err(format!(
                    "redis-server on port {} exited: {status}",
                    self.port
                ));
            }
            if Instant::now() > deadline {
                self.kill();
                return Err(format!(
                    "redis-server on port {} did not answer PING",
                    self.port
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A port that was free a moment ago (bind 127.0.0.1:0, then release it).
pub fn free_port() -> Result<u16, String> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("no free port: {e}"))
}

/// Whether a Redis on `port` answers PING.
fn ping(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    let mut reply = [0u8; 7];
    stream.write_all(b"PING\r\n").is_ok()
        && stream.read_exact(&mut reply).is_ok()
        && &reply == b"+PONG\r\n"
}

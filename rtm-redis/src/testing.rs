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
#[derive(Debug)]
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
#[derive(Debug)]
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
        let dir = server_dir(self.port);
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
        // Its working directory goes with it (empty: no persistence).
        let _ = std::fs::remove_dir_all(server_dir(self.port));
    }
}

/// The private working directory (`--dir`) of this process's server on `port`.
fn server_dir(port: u16) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("rtm-redis-{}-{}", std::process::id(), port))
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
    // "+PONG", or "-NOAUTH" from a server with a password: it is up either way.
    let mut reply = [0u8; 7];
    stream.write_all(b"PING\r\n").is_ok()
        && stream.read_exact(&mut reply).is_ok()
        && (&reply == b"+PONG\r\n" || reply.starts_with(b"-NOAUTH"))
}

/// How long a fresh cluster may take to report `cluster_state:ok` on every node.
const CLUSTER_READY_TIMEOUT: Duration = Duration::from_secs(30);

/// A throwaway 3-node Redis Cluster (3 primaries, no replicas) on 127.0.0.1,
/// without persistence; every node is killed when it drops.
///
/// ```no_run
/// let cluster = rtm_redis::testing::RedisCluster::start().unwrap();
/// println!("{:?}", cluster.urls());
/// ```
#[derive(Debug)]
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Starts 3 cluster-enabled `redis-server`s on free ports, joins them
    /// with `redis-cli --cluster create`, and waits until each node reports
    /// `cluster_state:ok`.
    ///
    /// Fails with a message naming what is missing (redis-server, redis-cli)
    /// or what did not happen in time.
    pub fn start() -> Result<RedisCluster, String> {
        let mut nodes = Vec::with_capacity(3);
        for _ in 0..3 {
            let port = free_port()?;
            let config_file = format!("nodes-{port}.conf");
            // A port reused within this process would find the old cluster's
            // nodes.conf in its --dir and refuse to join a new cluster.
            let _ = std::fs::remove_file(server_dir(port).join(&config_file));
            nodes.push(RedisServer::start_with(
                port,
                &[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    &config_file,
                ],
            )?);
        }
        let cluster = RedisCluster { nodes };
        let addrs: Vec<String> = cluster
            .nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port()))
            .collect();
        let output = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addrs)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => {
                    "redis-cli not found: install redis-server (it includes redis-cli)".to_string()
                }
                _ => format!("cannot run redis-cli: {e}"),
            })?;
        if !output.status.success() {
            return Err(format!(
                "redis-cli --cluster create failed ({}): {}{}",
                output.status,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ));
        }
        let deadline = Instant::now() + CLUSTER_READY_TIMEOUT;
        for node in &cluster.nodes {
            loop {
                match command(node.port(), "CLUSTER INFO") {
                    Some(info) if info.contains("cluster_state:ok") => break,
                    last => {
                        if Instant::now() > deadline {
                            return Err(format!(
                                "cluster node {} not ok after {CLUSTER_READY_TIMEOUT:?}: {last:?}",
                                node.port()
                            ));
                        }
                    }
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Ok(cluster)
    }

    /// The nodes' URLs (seeds for [`crate::RedisBrokerConfig::cluster`]).
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(RedisServer::url).collect()
    }

    /// The nodes, e.g. to kill one.
    pub fn nodes(&mut self) -> &mut [RedisServer] {
        &mut self.nodes
    }

    /// The port of the node that owns `key`'s slot (`CLUSTER KEYSLOT`, then each node's
    /// own ranges from `CLUSTER NODES`), or `None` if no node answers.
    pub fn owner_port(&self, key: &str) -> Option<u16> {
        let port = self.nodes.first()?.port();
        let reply = command(port, &format!("CLUSTER KEYSLOT {key}"))?;
        let slot: u16 = reply.trim().trim_start_matches(':').parse().ok()?;
        self.nodes.iter().map(RedisServer::port).find(|&p| {
            owned_slots(p)
                .iter()
                .any(|&(lo, hi)| lo <= slot && slot <= hi)
        })
    }
}

/// The slot ranges a node owns, parsed from its `CLUSTER NODES` `myself` line.
fn owned_slots(port: u16) -> Vec<(u16, u16)> {
    let Some(nodes) = command(port, "CLUSTER NODES") else {
        return vec![];
    };
    let Some(myself) = nodes.lines().find(|l| l.contains("myself")) else {
        return vec![];
    };
    myself
        .split_whitespace()
        .skip(8)
        .filter_map(|range| {
            let mut ends = range.split('-');
            let lo = ends.next()?.parse().ok()?;
            let hi = ends.next().map_or(Some(lo), |h| h.parse().ok())?;
            Some((lo, hi))
        })
        .collect()
}

/// Runs an inline command with `redis-cli -p PORT` and returns its raw output.
fn command(port: u16, cmd: &str) -> Option<String> {
    let output = Command::new("redis-cli")
        .args(["-p", &port.to_string()])
        .args(cmd.split_whitespace())
        .stdin(Stdio::null())
        .output()
        .ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).into_owned())
}

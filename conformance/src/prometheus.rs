//! A real Prometheus for tests: Debian's `prometheus` binary started on a
//! free port with a configuration of its own, scraping one target every
//! second, read back through its HTTP query API as a dashboard would. Used
//! by the fixture's scrape test (`tests/prometheus_scrape.rs`) and the
//! chat's (`rtm-tokio/tests/chat_example.rs`).

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rtm_redis::testing::free_port;
use serde_json::Value;

/// How long a number may take to show (1 s scrapes).
pub const SHOW_WITHIN: Duration = Duration::from_secs(30);

/// A `prometheus` server of its own, scraping one target every second;
/// killed (and its data removed) on drop.
#[derive(Debug)]
pub struct Prometheus {
    child: Child,
    dir: std::path::PathBuf,
    port: u16,
}

impl Prometheus {
    /// Starts one scraping `target`'s `/metrics` every second (panics,
    /// saying how to install it, without the `prometheus` binary).
    pub fn start(target: SocketAddr) -> Prometheus {
        let port = free_port().unwrap();
        let dir =
            std::env::temp_dir().join(format!("rtm-prometheus-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n\
                 scrape_configs:\n  - job_name: rtm\n    static_configs:\n      - targets: ['{target}']\n"
            ),
        )
        .unwrap();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start prometheus ({e}): install it (Debian: apt-get install prometheus)"
                )
            });
        Prometheus { child, dir, port }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Waits (bounded) until it answers and has scraped the target once.
    pub async fn ready(&mut self) {
        let started = Instant::now();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("prometheus exited: {status}");
            }
            if let Some(up) = self.value("up").await {
                assert_eq!(up, 1.0, "prometheus cannot scrape its target's /metrics");
                return;
            }
            assert!(
                started.elapsed() < SHOW_WITHIN,
                "prometheus not ready within {SHOW_WITHIN:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The instant value of `query` (`None`: no answer yet, or no series).
    pub async fn value(&self, query: &str) -> Option<f64> {
        let url = self.url("/api/v1/query");
        let query = query.to_owned();
        let body = tokio::task::spawn_blocking(move || http_get(&url, &[("query", &query)]))
            .await
            .ok()??;
        let answer: Value = serde_json::from_str(&body).ok()?;
        let result = answer["data"]["result"].as_array()?;
        let sum = result
            .iter()
            .filter_map(|series| series["value"][1].as_str()?.parse::<f64>().ok())
            .sum();
        (!result.is_empty()).then_some(sum)
    }

    /// Waits (bounded) until `query` reads `want`; panics with the last value.
    pub async fn shows(&self, query: &str, want: f64) {
        let started = Instant::now();
        loop {
            let got = self.value(query).await;
            if got == Some(want) {
                return;
            }
            assert!(
                started.elapsed() < SHOW_WITHIN,
                "{query}: {got:?} in Prometheus after {SHOW_WITHIN:?}, expected {want}"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A GET on 127.0.0.1 with `params` in the query string (HTTP/1.0, so the
/// body ends with the connection); `None` on any failure.
fn http_get(url: &str, params: &[(&str, &str)]) -> Option<String> {
    use std::io::{Read, Write};
    let rest = url.strip_prefix("http://")?;
    let (host, path) = rest.split_once('/')?;
    let mut target = format!("/{path}");
    for (i, (key, value)) in params.iter().enumerate() {
        target.push(if i == 0 { '?' } else { '&' });
        target.push_str(key);
        target.push('=');
        for byte in value.bytes() {
            if byte.is_ascii_alphanumeric() || b"-_.~".contains(&byte) {
                target.push(byte as char);
            } else {
                target.push_str(&format!("%{byte:02X}"));
            }
        }
    }
    let mut tcp = std::net::TcpStream::connect(host).ok()?;
    tcp.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(tcp, "GET {target} HTTP/1.0\r\nHost: {host}\r\n\r\n").ok()?;
    let mut response = String::new();
    tcp.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?;
    (status == "200").then(|| body.to_owned())
}

//! `rediss://`: RedisBroker over TLS to a real redis-server (Debian's is
//! built with TLS) whose certificate is self-signed for 127.0.0.1.

mod common;

use std::path::PathBuf;

use common::*;
use rtm_broker::{Broker, BrokerState};
use rtm_core::Topic;
use rtm_redis::testing::{free_port, RedisServer};
use rtm_redis::RedisBrokerConfig;

/// A redis-server with a plain port (for its readiness check) and a TLS
/// port, and the certificate to trust.
struct TlsRedis {
    _server: RedisServer,
    tls_port: u16,
    cert_pem: String,
    dir: PathBuf,
}

impl TlsRedis {
    fn start() -> TlsRedis {
        let certified = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
        let dir = std::env::temp_dir().join(format!(
            "rtm-redis-tls-{}-{}",
            std::process::id(),
            free_port().unwrap()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let cert_pem = certified.cert.pem();
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        std::fs::write(&cert, &cert_pem).unwrap();
        std::fs::write(&key, certified.key_pair.serialize_pem()).unwrap();
        let tls_port = free_port().unwrap();
        let server = RedisServer::start_with(
            free_port().unwrap(),
            &[
                "--tls-port",
                &tls_port.to_string(),
                "--tls-cert-file",
                &cert.to_string_lossy(),
                "--tls-key-file",
                &key.to_string_lossy(),
                "--tls-auth-clients",
                "no",
            ],
        )
        .unwrap_or_else(|e| panic!("{e}"));
        TlsRedis {
            _server: server,
            tls_port,
            cert_pem,
            dir,
        }
    }

    fn url(&self) -> String {
        format!("rediss://127.0.0.1:{}", self.tls_port)
    }
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_crosses_servers_over_rediss_with_the_servers_certificate_trusted() {
    let redis = TlsRedis::start();
    let ns = unique_ns("tls");
    let config = |id| fast_config(&redis.url(), &ns, id).with_tls_root_cert(redis.cert_pem.clone());
    let (a, mut a_events) = started_tokio(config("a")).await;
    let (b, mut b_events) = started_tokio(config("b")).await;
    a_events.wait_up();
    b_events.wait_up();
    let topic = Topic::user(&ns, "alice");
    b.subscribe(&topic).await.unwrap();
    a.publish(&topic, "over tls".into()).await.unwrap();
    b_events.wait_message(&topic, "over tls");
    assert_eq!(a.state(), BrokerState::Up);
}

#[test]
fn rediss_works_on_smol_without_tokio() {
    let redis = TlsRedis::start();
    smol::block_on(async {
        let ns = unique_ns("tls-smol");
        let config =
            |id| fast_config(&redis.url(), &ns, id).with_tls_root_cert(redis.cert_pem.clone());
        let (a, mut a_events) = started_smol(config("a")).await;
        let (b, mut b_events) = started_smol(config("b")).await;
        a_events.wait_up();
        b_events.wait_up();
        let topic = Topic::push(&ns, "score", "match-7");
        b.subscribe(&topic).await.unwrap();
        a.publish(&topic, "1:0".into()).await.unwrap();
        b_events.wait_message(&topic, "1:0");
        assert_outside_tokio();
    });
}

/// Without the server's certificate trusted (the system's roots do not
/// hold a self-signed one) the broker never comes up, and says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_certificate_keeps_the_broker_down_and_says_so() {
    let redis = TlsRedis::start();
    let ns = unique_ns("tls-untrusted");
    let (broker, mut events) = started_tokio(fast_config(&redis.url(), &ns, "a")).await;
    events.wait_down();
    let BrokerState::Down { reason } = broker.state() else {
        panic!("up with an untrusted certificate");
    };
    assert!(
        reason.to_ascii_lowercase().contains("certificate"),
        "{reason}"
    );
    // Plain redis:// to the TLS port does not come up either.
    let plain = format!("redis://127.0.0.1:{}", redis.tls_port);
    let config = RedisBrokerConfig::new(plain, unique_ns("tls-plain"), "b")
        .with_timeouts(
            std::time::Duration::from_millis(300),
            std::time::Duration::from_millis(300),
        )
        .with_backoff(
            std::time::Duration::from_millis(50),
            std::time::Duration::from_millis(200),
        );
    let (plain, mut plain_events) = started_tokio(config).await;
    plain_events.wait_down();
    assert!(matches!(plain.state(), BrokerState::Down { .. }));
}

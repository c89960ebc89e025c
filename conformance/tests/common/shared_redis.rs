//! A private `redis-server` shared by the servers of one test, each with a
//! `RedisBroker` on the adapter's runtime.

use std::sync::Arc;
use std::time::Duration;

use conformance::adapter::{until_within, Adapter};
use rtm_driver::broker::BrokerState;
use rtm_driver::{Listening, ServerBuilder};
use rtm_redis::testing::RedisServer;
use rtm_redis::{RedisBroker, RedisBrokerConfig};

/// A private Redis and a namespace for one test's servers.
pub(crate) struct SharedRedis {
    pub(crate) redis: RedisServer,
    pub(crate) namespace: String,
}

impl SharedRedis {
    pub(crate) fn new(test: &str) -> SharedRedis {
        let redis = RedisServer::start().unwrap_or_else(|e| panic!("{e}"));
        SharedRedis {
            redis,
            namespace: format!("deliv-{}-{test}", std::process::id()),
        }
    }

    /// `builder` listening on 127.0.0.1 with a `RedisBroker` on this Redis
    /// (on the adapter's runtime); returns once the broker is up.
    pub(crate) async fn server(
        &self,
        adapter: Adapter,
        builder: ServerBuilder,
        name: &str,
    ) -> Listening {
        let id = format!("{}-{name}", self.namespace);
        // Command and probe timeouts past the longest stall a test causes (1 s).
        let config = RedisBrokerConfig::new(self.redis.url(), &self.namespace, &id)
            .with_backoff(Duration::from_millis(50), Duration::from_millis(500))
            .with_timeouts(Duration::from_secs(1), Duration::from_secs(3))
            .with_probe_timeout(Duration::from_secs(3));
        let broker = RedisBroker::new(config, adapter.runtime()).expect("a Redis broker");
        let builder = builder
            .server_id(&id)
            .namespace(&self.namespace)
            .broker(Arc::new(broker));
        let addr = "127.0.0.1:0".parse().unwrap();
        let server = adapter.listen(builder, addr).await.unwrap();
        let handle = server.handle().clone();
        until_within(
            &format!("server {name}'s broker to be up"),
            Duration::from_secs(10),
            || handle.broker_state() == Some(BrokerState::Up),
        )
        .await;
        server
    }

    pub(crate) fn connection(&self) -> redis::Connection {
        redis::Client::open(self.redis.url().as_str())
            .unwrap()
            .get_connection()
            .unwrap()
    }

    /// Keeps Redis busy for `busy` (one script, on a connection of its own,
    /// from a thread: the single-threaded Redis answers no one meanwhile).
    pub(crate) fn stall(&self, busy: Duration) -> std::thread::JoinHandle<()> {
        let mut con = self.connection();
        let micros = busy.as_micros() as u64;
        std::thread::spawn(move || {
            let script = "local s = redis.call('TIME') local t0 = s[1] * 1000000 + s[2] \
                          repeat local n = redis.call('TIME') \
                          until n[1] * 1000000 + n[2] - t0 >= tonumber(ARGV[1]) return 1";
            let _: i64 = redis::cmd("EVAL")
                .arg(script)
                .arg(0)
                .arg(micros)
                .query(&mut con)
                .expect("the stalling script");
        })
    }
}

//! The two kinds of Redis connection a broker can hold: one node
//! (multiplexed) or a Redis Cluster (slot-routed), behind one small interface.
//!
//! On a cluster every command must reach the node that owns its channel's
//! slot: the cluster connection routes `SPUBLISH`/`SSUBSCRIBE` by key, and a
//! pipeline may only hold commands of one slot, so publishes are grouped by
//! slot (which keeps the order of each topic, as one topic is one slot).

use std::collections::HashMap;

use futures_util::future::{join_all, try_join_all};
use redis::aio::{AsyncPushSender, MultiplexedConnection};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo, Slot};
use redis::{AsyncConnectionConfig, ConnectionInfo, ProtocolVersion, PushInfo, RedisResult, Value};
use rtm_core::Topic;

use crate::config::RedisBrokerConfig;

/// Where the broker connects.
pub(crate) enum Target {
    /// One Redis node (or a proxy in front of one).
    Single(Box<redis::Client>),
    /// The seed nodes of a Redis Cluster.
    Cluster(Vec<ConnectionInfo>),
}

/// One open connection: cheap to clone, every clone multiplexes on it.
#[derive(Clone)]
pub(crate) enum Conn {
    Single(MultiplexedConnection),
    Cluster(ClusterConnection),
}

/// Resubscribing sends this many (S)SUBSCRIBE commands at once.
const SUBSCRIBE_BATCH: usize = 256;

/// The `push` of a connection that takes no subscriptions (for [`Target::open`]).
pub(crate) const NO_PUSH: Option<fn(PushInfo) -> Result<(), ()>> = None;

impl Target {
    /// Opens a connection; with `push` its pub/sub messages go to that
    /// handler (the push handler of the connection's generation).
    pub(crate) async fn open(
        &self,
        config: &RedisBrokerConfig,
        push: Option<impl AsyncPushSender>,
    ) -> RedisResult<Conn> {
        match self {
            Target::Single(client) => {
                let mut conn_config = AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(config.connect_timeout))
                    .set_response_timeout(Some(config.command_timeout));
                if let Some(push) = push {
                    conn_config = conn_config.set_push_sender(push);
                }
                client
                    .get_multiplexed_async_connection_with_config(&conn_config)
                    .await
                    .map(Conn::Single)
            }
            Target::Cluster(nodes) => {
                let mut builder = cluster_builder(nodes.clone(), config)
                    .connection_timeout(config.connect_timeout)
                    .response_timeout(config.command_timeout);
                if let Some(push) = push {
                    builder = builder.push_sender(push);
                }
                builder
                    .build()?
                    .get_async_connection()
                    .await
                    .map(Conn::Cluster)
            }
        }
    }
}

/// A cluster client builder speaking RESP3 (push frames carry the messages),
/// trusting `config`'s TLS root certificate for `rediss://` nodes.
pub(crate) fn cluster_builder(
    nodes: Vec<ConnectionInfo>,
    config: &RedisBrokerConfig,
) -> ClusterClientBuilder {
    let builder = ClusterClientBuilder::new(nodes)
        .use_protocol(ProtocolVersion::RESP3)
        // Retries stay within the command timeout; a node that is really gone
        // is the supervisor's business (Down, reconnect), not an endless retry.
        .retries(2);
    if let Some(root) = &config.tls_root_cert {
        return builder.certs(redis::TlsCertificates {
            client_tls: None,
            root_cert: Some(root.clone()),
        });
    }
    builder
}

impl Conn {
    /// Runs one command, ignoring its reply.
    pub(crate) async fn exec(&mut self, cmd: &redis::Cmd) -> RedisResult<()> {
        match self {
            Conn::Single(c) => cmd.exec_async(c).await,
            Conn::Cluster(c) => cmd.exec_async(c).await,
        }
    }

    /// Runs one command and returns its reply.
    pub(crate) async fn query(&mut self, cmd: &redis::Cmd) -> RedisResult<Value> {
        match self {
            Conn::Single(c) => cmd.query_async(c).await,
            Conn::Cluster(c) => cmd.query_async(c).await,
        }
    }

    /// Subscribes every topic in `topics`, in batches.
    pub(crate) async fn subscribe_all(
        &mut self,
        config: &RedisBrokerConfig,
        topics: &[Topic],
    ) -> RedisResult<()> {
        self.change_all(config, topics, true).await
    }

    /// Unsubscribes every topic in `topics`, in batches.
    pub(crate) async fn unsubscribe_all(
        &mut self,
        config: &RedisBrokerConfig,
        topics: &[Topic],
    ) -> RedisResult<()> {
        self.change_all(config, topics, false).await
    }

    /// (Un)subscribes `topics`: one pipeline per batch on a single node,
    /// the batch's commands at once on a cluster.
    async fn change_all(
        &mut self,
        config: &RedisBrokerConfig,
        topics: &[Topic],
        subscribe: bool,
    ) -> RedisResult<()> {
        for batch in topics.chunks(SUBSCRIBE_BATCH) {
            match self {
                Conn::Single(c) => {
                    // One channel per command: a multi-channel SUBSCRIBE has one reply
                    // per channel, which the multiplexer would pair with later requests.
                    let mut pipe = redis::pipe();
                    for topic in batch {
                        pipe.add_command(if subscribe {
                            config.subscribe_cmd(topic)
                        } else {
                            config.unsubscribe_cmd(topic)
                        });
                    }
                    pipe.exec_async(c).await?;
                }
                Conn::Cluster(c) => {
                    try_join_all(batch.iter().map(|topic| {
                        let mut c = c.clone();
                        async move {
                            if subscribe {
                                c.ssubscribe(topic.as_str()).await
                            } else {
                                c.sunsubscribe(topic.as_str()).await
                            }
                        }
                    }))
                    .await?;
                }
            }
        }
        Ok(())
    }

    /// Sends publish commands (and history appends), each with its topic's
    /// slot (on a cluster), and returns one reply per command, in order:
    /// one pipeline on a single node, one per slot on a cluster. A command
    /// Redis refused fails alone; a connection that fails fails its
    /// pipeline's commands.
    pub(crate) async fn publish_all(
        &mut self,
        cmds: Vec<(Option<Slot>, redis::Cmd)>,
    ) -> Vec<RedisResult<Value>> {
        let count = cmds.len();
        // Group by slot (one group on a single node), keeping call order
        // within each group.
        let mut groups: HashMap<Option<Slot>, (Vec<usize>, redis::Pipeline)> = HashMap::new();
        for (i, (slot, cmd)) in cmds.into_iter().enumerate() {
            let (idx, pipe) = groups.entry(slot).or_insert_with(|| {
                let mut pipe = redis::pipe();
                pipe.ignore_errors();
                (vec![], pipe)
            });
            idx.push(i);
            pipe.add_command(cmd);
        }
        let sent = match self {
            Conn::Single(c) => {
                let mut sent = Vec::with_capacity(1);
                for (idx, pipe) in groups.into_values() {
                    let replies = pipe.query_async::<Vec<RedisResult<Value>>>(c).await;
                    sent.push((idx, replies));
                }
                sent
            }
            Conn::Cluster(c) => {
                join_all(groups.into_values().map(|(idx, pipe)| {
                    let mut c = c.clone();
                    async move {
                        let replies = pipe.query_async::<Vec<RedisResult<Value>>>(&mut c).await;
                        (idx, replies)
                    }
                }))
                .await
            }
        };
        let mut results: Vec<RedisResult<Value>> = (0..count).map(|_| Ok(Value::Nil)).collect();
        for (idx, replies) in sent {
            match replies {
                Ok(replies) if replies.len() == idx.len() => {
                    for (i, reply) in idx.into_iter().zip(replies) {
                        results[i] = reply;
                    }
                }
                Ok(replies) => {
                    let e = redis::RedisError::from((
                        redis::ErrorKind::UnexpectedReturnType,
                        "a pipeline's replies do not match its commands",
                        format!("{} replies to {} commands", replies.len(), idx.len()),
                    ));
                    for i in idx {
                        results[i] = Err(e.clone());
                    }
                }
                Err(e) => {
                    for i in idx {
                        results[i] = Err(e.clone());
                    }
                }
            }
        }
        results
    }

    /// The topics to probe: `control` alone on one node; on a cluster,
    /// `control` plus one `{control}:{n}` per primary that does not own
    /// `control`'s slot, so every shard's subscriptions are proven.
    pub(crate) async fn probe_topics(&mut self, control: &Topic) -> RedisResult<Vec<Topic>> {
        let Conn::Cluster(c) = self else {
            return Ok(vec![control.clone()]);
        };
        let reply = c
            .route_command(
                redis::cmd("CLUSTER").arg("SLOTS").clone(),
                RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random),
            )
            .await?;
        Ok(shard_probe_topics(control, &slot_ranges_by_primary(&reply)))
    }
}

/// `CLUSTER SLOTS` as the slot ranges of each primary (`host:port`).
fn slot_ranges_by_primary(reply: &Value) -> HashMap<String, Vec<(u16, u16)>> {
    let mut primaries: HashMap<String, Vec<(u16, u16)>> = HashMap::new();
    let Value::Array(ranges) = reply else {
        return primaries;
    };
    for range in ranges {
        let Value::Array(fields) = range else {
            continue;
        };
        let (Some(Value::Int(lo)), Some(Value::Int(hi)), Some(Value::Array(primary))) =
            (fields.first(), fields.get(1), fields.get(2))
        else {
            continue;
        };
        let (Some(Value::BulkString(host)), Some(Value::Int(port))) =
            (primary.first(), primary.get(1))
        else {
            continue;
        };
        let (Ok(lo), Ok(hi)) = (u16::try_from(*lo), u16::try_from(*hi)) else {
            continue;
        };
        let name = format!("{}:{port}", String::from_utf8_lossy(host));
        primaries.entry(name).or_default().push((lo, hi));
    }
    primaries
}

/// `control`, plus for every primary not owning its slot the first
/// `{control}:{n}` whose slot that primary owns.
fn shard_probe_topics(control: &Topic, primaries: &HashMap<String, Vec<(u16, u16)>>) -> Vec<Topic> {
    let owns = |ranges: &[(u16, u16)], topic: &str| {
        let slot = slot_number(topic);
        ranges.iter().any(|&(lo, hi)| lo <= slot && slot <= hi)
    };
    let mut topics = vec![control.clone()];
    let mut names: Vec<_> = primaries.keys().collect();
    names.sort();
    for name in names {
        let ranges = &primaries[name];
        if owns(ranges, control.as_str()) {
            continue;
        }
        // 16384 slots: a primary owning any slots is found well within the bound.
        if let Some(topic) = (0..100_000)
            .map(|n| format!("{}:{n}", control.as_str()))
            .find(|t| owns(ranges, t))
        {
            topics.push(Topic::from_raw(&topic));
        }
    }
    topics
}

/// The cluster slot of `key` as a number: CRC16/XMODEM of its hash tag (or
/// of the key) mod 16384, as Redis computes it. (`Slot` exposes no number.)
fn slot_number(key: &str) -> u16 {
    let key = key.as_bytes();
    let tagged = key.iter().position(|&b| b == b'{').and_then(|open| {
        let close = key[open + 1..].iter().position(|&b| b == b'}')?;
        let tag = &key[open + 1..open + 1 + close];
        (!tag.is_empty()).then_some(tag)
    });
    let mut crc: u16 = 0;
    for &byte in tagged.unwrap_or(key) {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc % 16384
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_number_matches_redis() {
        assert_eq!(slot_number("123456789"), 12739);
        assert_eq!(slot_number("foo"), 12182);
        for key in [
            "",
            "a",
            "{user1000}.following",
            "x{}y",
            "{a}{b}",
            "ns:ctl:s1:7",
        ] {
            assert_eq!(
                Slot::new(slot_number(key)),
                Some(Slot::for_key(key)),
                "{key}"
            );
        }
    }

    #[test]
    fn every_primary_gets_a_probe_topic_it_owns() {
        let control = Topic::from_raw("ns:ctl:server-1");
        let primaries: HashMap<String, Vec<(u16, u16)>> = [
            ("a:1".to_string(), vec![(0, 5460)]),
            ("b:2".to_string(), vec![(5461, 10922)]),
            ("c:3".to_string(), vec![(10923, 16383), (100, 100)]),
        ]
        .into_iter()
        .collect();
        let topics = shard_probe_topics(&control, &primaries);
        assert_eq!(topics.len(), 3);
        assert_eq!(topics[0], control);
        for ranges in primaries.values() {
            assert!(topics.iter().any(|t| {
                let slot = slot_number(t.as_str());
                ranges.iter().any(|&(lo, hi)| lo <= slot && slot <= hi)
            }));
        }
    }
}

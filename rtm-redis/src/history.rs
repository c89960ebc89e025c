//! History in Redis: a stream's events in a Redis stream, its position in
//! a hash, appended and published by one Lua script (atomic: every
//! subscriber gets a stream's events in offset order, and what is kept is
//! what was published). Needs Redis ≥ 5 (streams; `SPUBLISH` from a script
//! on a cluster: Redis ≥ 7).
//!
//! Keys of the stream of topic `T` (both in one cluster slot, the slot of
//! `T` itself, so a script may also `SPUBLISH` on `T`; topics never hold
//! braces, see `rtm_core::Topic`):
//!
//! - `{T}:s`: the events, a Redis stream with entry ids `<offset>-0` and
//!   one field `d`, the envelope with its position written in;
//! - `{T}:m`: the position, a hash: `e` the epoch, `s` the top offset.
//!
//! Both expire `ttl` after the stream's last event. When the hash is gone
//! (expired, evicted, flushed, a failover that lost it) the next event or
//! read makes a new epoch (given by the caller: [`rtm_broker::new_epoch`])
//! and offsets start again at 1, so no offset names two events.

use bytes::Bytes;
use redis::Value;
use rtm_broker::{BrokerError, StreamRead};
use rtm_core::{StreamOptions, StreamPosition, Topic};

use crate::config::RedisBrokerConfig;

/// Appends and publishes a run of events, in order, each to its own
/// stream (one script call for the run: the call's fixed cost is paid
/// once, not per event). KEYS: stream, meta, for each event. ARGV: the
/// publish command, then for each event: envelope, size, ttl (seconds),
/// channel, epoch if new. Returns `{offset, epoch}` per event. The
/// position goes into the envelope as `rtm_core::Envelope::splice_position`
/// writes it: `{"off":N,"ep":"E",` replaces the envelope's leading `{`.
const APPEND: &str = r#"
local out = {}
for i = 1, #KEYS / 2 do
  local s, m = KEYS[2 * i - 1], KEYS[2 * i]
  local a = 1 + (i - 1) * 5
  local envelope, size, ttl, channel, fresh = ARGV[a + 1], ARGV[a + 2], ARGV[a + 3], ARGV[a + 4], ARGV[a + 5]
  local epoch = redis.call('hget', m, 'e')
  if not epoch then
    epoch = fresh
    redis.call('hset', m, 'e', epoch)
  end
  local top = redis.call('hincrby', m, 's', 1)
  if top == 1 then
    redis.call('del', s)
  end
  local kept = '{"off":' .. top .. ',"ep":"' .. epoch .. '",' .. string.sub(envelope, 2)
  local added = redis.pcall('xadd', s, 'MAXLEN', '~', size, top .. '-0', 'd', kept)
  if type(added) == 'table' and added.err then
    -- The events are ahead of the position (the two keys were lost apart):
    -- the stream starts again under a new epoch.
    redis.call('del', s)
    epoch = fresh
    top = 1
    redis.call('hset', m, 'e', epoch, 's', top)
    kept = '{"off":' .. top .. ',"ep":"' .. epoch .. '",' .. string.sub(envelope, 2)
    redis.call('xadd', s, 'MAXLEN', '~', size, top .. '-0', 'd', kept)
  end
  redis.call('expire', s, ttl)
  redis.call('expire', m, ttl)
  redis.call(ARGV[1], channel, kept)
  out[i] = {top, epoch}
end
return out
"#;

/// Reads. KEYS: stream, meta. ARGV: from offset, count, ttl, epoch if new.
/// Returns `{top, epoch, entries}`; a stream it does not have is made
/// (empty, the new epoch) and lives `ttl`.
const READ: &str = r#"
local meta = redis.call('hmget', KEYS[2], 'e', 's')
local epoch, top = meta[1], meta[2]
if not epoch then
  epoch = ARGV[4]
  redis.call('hset', KEYS[2], 'e', epoch)
  redis.call('expire', KEYS[2], ARGV[3])
end
if not top then
  top = 0
end
local entries = redis.call('xrange', KEYS[1], ARGV[1] .. '-0', '+', 'COUNT', ARGV[2])
return {tonumber(top), epoch, entries}
"#;

/// Resets. KEYS: stream, meta. ARGV: the new epoch, ttl. Drops the events,
/// keeps the top offset, gives the new epoch. Returns `{top, epoch}`.
const RESET: &str = r#"
redis.call('del', KEYS[1])
redis.call('hset', KEYS[2], 'e', ARGV[1])
redis.call('expire', KEYS[2], ARGV[2])
local top = redis.call('hget', KEYS[2], 's')
if not top then
  top = 0
end
return {tonumber(top), ARGV[1]}
"#;

/// The keys of `topic`'s stream: the events, the position.
fn keys(topic: &Topic) -> (String, String) {
    (
        format!("{{{}}}:s", topic.as_str()),
        format!("{{{}}}:m", topic.as_str()),
    )
}

fn eval(script: &str, topic: &Topic) -> redis::Cmd {
    let (stream, meta) = keys(topic);
    let mut cmd = redis::cmd("EVAL");
    cmd.arg(script).arg(2).arg(stream).arg(meta);
    cmd
}

/// Seconds, at least 1 (`EXPIRE` takes whole seconds; 0 would delete).
fn ttl_seconds(options: &StreamOptions) -> u64 {
    options.ttl.as_secs().max(1)
}

/// One event to append to its stream and publish (see [`append_cmd`]).
#[derive(Debug, Clone)]
pub(crate) struct Append {
    topic: Topic,
    envelope: bytes::Bytes,
    size: usize,
    ttl: u64,
    /// The epoch the stream gets if it has none.
    epoch: String,
}

impl Append {
    pub(crate) fn new(topic: &Topic, envelope: bytes::Bytes, options: &StreamOptions) -> Self {
        Append {
            topic: topic.clone(),
            envelope,
            size: options.size.max(1),
            ttl: ttl_seconds(options),
            epoch: rtm_broker::new_epoch(),
        }
    }
}

/// The command that appends each event of `run` to its stream and
/// publishes it, in order: one script call, whose reply holds one
/// `{offset, epoch}` per event ([`positions`]). On a cluster the run's
/// topics share one slot.
pub(crate) fn append_cmd(config: &RedisBrokerConfig, run: &[Append]) -> redis::Cmd {
    let mut cmd = redis::cmd("EVAL");
    cmd.arg(APPEND).arg(run.len() * 2);
    for append in run {
        let (stream, meta) = keys(&append.topic);
        cmd.arg(stream).arg(meta);
    }
    cmd.arg(if config.sharded {
        "spublish"
    } else {
        "publish"
    });
    for append in run {
        cmd.arg(&append.envelope[..])
            .arg(append.size)
            .arg(append.ttl)
            .arg(append.topic.as_str())
            .arg(&append.epoch);
    }
    cmd
}

/// The replies of an [`append_cmd`] of `count` events, one per event.
pub(crate) fn positions(reply: Value, count: usize) -> Vec<Result<Value, BrokerError>> {
    match reply {
        Value::Array(items) if items.len() == count => items.into_iter().map(Ok).collect(),
        other => {
            let err = malformed("a run of history appends", &other);
            (0..count).map(|_| Err(err.clone())).collect()
        }
    }
}

/// The command that reads `topic`'s stream from `from`, at most `limit`.
pub(crate) fn read_cmd(
    topic: &Topic,
    from: u64,
    limit: usize,
    options: &StreamOptions,
    epoch: &str,
) -> redis::Cmd {
    let mut cmd = eval(READ, topic);
    cmd.arg(from.max(1))
        .arg(limit.max(1))
        .arg(ttl_seconds(options))
        .arg(epoch);
    cmd
}

/// The command that gives `topic`'s stream a new epoch.
pub(crate) fn reset_cmd(topic: &Topic, options: &StreamOptions, epoch: &str) -> redis::Cmd {
    let mut cmd = eval(RESET, topic);
    cmd.arg(epoch).arg(ttl_seconds(options));
    cmd
}

fn malformed(what: &str, value: &Value) -> BrokerError {
    BrokerError::failed(format!("unexpected reply from Redis to {what}: {value:?}"))
}

fn text(value: &Value) -> Option<String> {
    match value {
        Value::BulkString(bytes) => String::from_utf8(bytes.clone()).ok(),
        Value::SimpleString(s) | Value::VerbatimString { text: s, .. } => Some(s.clone()),
        _ => None,
    }
}

fn number(value: &Value) -> Option<u64> {
    match value {
        Value::Int(n) => u64::try_from(*n).ok(),
        other => text(other)?.parse().ok(),
    }
}

/// `{offset, epoch}` as a position.
pub(crate) fn position(what: &str, reply: &Value) -> Result<StreamPosition, BrokerError> {
    let Value::Array(fields) = reply else {
        return Err(malformed(what, reply));
    };
    match (
        fields.first().and_then(number),
        fields.get(1).and_then(text),
    ) {
        (Some(offset), Some(epoch)) if StreamPosition::is_valid_epoch(&epoch) => {
            Ok(StreamPosition::new(offset, epoch))
        }
        _ => Err(malformed(what, reply)),
    }
}

/// `{top, epoch, entries}` as a read: each entry `[id, [field, value, …]]`
/// gives its `d`.
pub(crate) fn stream_read(reply: &Value) -> Result<StreamRead, BrokerError> {
    let top = position("a history read", reply)?;
    let Value::Array(fields) = reply else {
        return Err(malformed("a history read", reply));
    };
    let entries = match fields.get(2) {
        Some(Value::Array(entries)) => entries.as_slice(),
        Some(Value::Nil) | None => &[],
        Some(other) => return Err(malformed("a history read", other)),
    };
    let envelopes = entries
        .iter()
        .map(|entry| {
            let Value::Array(parts) = entry else {
                return Err(malformed("a stream entry", entry));
            };
            let Some(Value::Array(pairs)) = parts.get(1) else {
                return Err(malformed("a stream entry", entry));
            };
            pairs
                .chunks(2)
                .find_map(|pair| match pair {
                    [name, Value::BulkString(data)] if text(name).as_deref() == Some("d") => {
                        Some(Bytes::from(data.clone()))
                    }
                    _ => None,
                })
                .ok_or_else(|| malformed("a stream entry", entry))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(StreamRead { top, envelopes })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_streams_keys_share_its_topics_slot() {
        let topic = Topic::push("chat", "room.msg", "lobby");
        let (stream, meta) = keys(&topic);
        for key in [&stream, &meta] {
            assert_eq!(
                redis::cluster_routing::Slot::for_key(key),
                redis::cluster_routing::Slot::for_key(topic.as_str()),
                "{key}"
            );
        }
    }

    #[test]
    fn replies_that_are_not_positions_are_errors_not_panics() {
        for reply in [
            Value::Nil,
            Value::Array(vec![]),
            Value::Array(vec![Value::Int(-1), Value::BulkString(b"e".to_vec())]),
            Value::Array(vec![Value::Int(1), Value::BulkString(b"a b".to_vec())]),
            Value::Array(vec![
                Value::Int(1),
                Value::BulkString(b"e".to_vec()),
                Value::Int(3),
            ]),
            Value::Array(vec![
                Value::Int(1),
                Value::BulkString(b"e".to_vec()),
                Value::Array(vec![Value::Array(vec![Value::BulkString(b"1-0".to_vec())])]),
            ]),
        ] {
            assert!(stream_read(&reply).is_err(), "{reply:?}");
        }
    }
}

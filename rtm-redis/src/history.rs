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

/// Appends and publishes. KEYS: stream, meta. ARGV: envelope, size, ttl
/// (seconds), channel, epoch if new, publish command. Returns
/// `{offset, epoch}`. The position goes into the envelope as
/// `rtm_core::Envelope::splice_position` writes it: `{"off":N,"ep":"E",`
/// replaces the envelope's leading `{`.
const APPEND: &str = r#"
local epoch = redis.call('hget', KEYS[2], 'e')
if not epoch then
  epoch = ARGV[5]
  redis.call('hset', KEYS[2], 'e', epoch)
end
local top = redis.call('hincrby', KEYS[2], 's', 1)
if top == 1 then
  redis.call('del', KEYS[1])
end
local kept = '{"off":' .. top .. ',"ep":"' .. epoch .. '",' .. string.sub(ARGV[1], 2)
local added = redis.pcall('xadd', KEYS[1], 'MAXLEN', '~', ARGV[2], top .. '-0', 'd', kept)
if type(added) == 'table' and added.err then
  -- The events are ahead of the position (the two keys were lost apart):
  -- the stream starts again under a new epoch.
  redis.call('del', KEYS[1])
  epoch = ARGV[5]
  top = 1
  redis.call('hset', KEYS[2], 'e', epoch, 's', top)
  kept = '{"off":' .. top .. ',"ep":"' .. epoch .. '",' .. string.sub(ARGV[1], 2)
  redis.call('xadd', KEYS[1], 'MAXLEN', '~', ARGV[2], top .. '-0', 'd', kept)
end
redis.call('expire', KEYS[1], ARGV[3])
redis.call('expire', KEYS[2], ARGV[3])
redis.call(ARGV[6], ARGV[4], kept)
return {top, epoch}
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

/// The command that appends `envelope` to `topic`'s stream and publishes it.
pub(crate) fn append_cmd(
    config: &RedisBrokerConfig,
    topic: &Topic,
    envelope: &[u8],
    options: &StreamOptions,
    epoch: &str,
) -> redis::Cmd {
    let mut cmd = eval(APPEND, topic);
    cmd.arg(envelope)
        .arg(options.size.max(1))
        .arg(ttl_seconds(options))
        .arg(topic.as_str())
        .arg(epoch)
        .arg(if config.sharded {
            "spublish"
        } else {
            "publish"
        });
    cmd
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

//! Names bound to keys: the chat's sign-in (issue 17 point 1).
//!
//! There is no password: the name is the credential. So a name in use must
//! not be taken by someone else. The first sign-in with a free name binds it
//! to a fresh key (128 random bits, hex), returned in the auth reply; the
//! page keeps it (per name) and sends it on every (re)connect, so the user's
//! other tabs and reconnects work. While a connection holds the name, and
//! for a hold time after the last one left, a sign-in without that key is
//! refused (`name-taken: …`). Then the name is free again: the next
//! sign-in binds it to the key it brings (the user's own, kept by the
//! page) or, without one, to a fresh key.
//!
//! The binding lives in this server ([`NameStore::Local`]) or, with
//! `--redis`, in Redis ([`NameStore::redis`]) so every chat server of the
//! cluster sees it: one key per name, `<namespace>:name:<name>`, holding the
//! key's SHA-256 (never the key), with an expiry of the hold time. Each server
//! refreshes the expiry of the names its connections hold (every quarter of
//! the hold), and restarts the hold when a name's last connection here
//! leaves. Claims and refreshes are one Lua script each, so two servers
//! claiming one free name at once cannot both win. While Redis does not
//! answer, sign-ins are refused (a name in use elsewhere could otherwise be
//! taken); the connections already signed in stay.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use redis::cluster_async::ClusterConnection;
use redis::RedisResult;
use rtm_tokio::{ErrorCode, RtmError};

/// How long one Redis command (or connecting) may take.
const REDIS_TIMEOUT: Duration = Duration::from_secs(2);

/// A sign-in key: 32 lowercase hex digits (128 bits).
pub fn valid_key(key: &str) -> bool {
    key.len() == 32 && key.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// A fresh key: 128 bits from the operating system's generator.
fn fresh_key() -> Result<String, RtmError> {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 16];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| RtmError::internal("no random numbers for a sign-in key"))?;
    Ok(hex(&bytes))
}

/// The SHA-256 of a key, in hex: what a binding stores. The key is 128
/// random bits, so no salt or slow hash is needed: there is nothing to guess.
fn key_hash(key: &str) -> String {
    hex(ring::digest::digest(&ring::digest::SHA256, key.as_bytes()).as_ref())
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

fn name_taken(name: &str) -> RtmError {
    RtmError::new(
        ErrorCode::AuthRejected,
        format!(
            "name-taken: \"{name}\" is in use; sign in from the browser that holds it, \
             or pick another name"
        ),
    )
}

/// Where names are bound.
pub enum NameStore {
    /// In this server only.
    Local,
    /// In Redis, shared by every chat server using it.
    Redis(Box<RedisNames>),
}

impl NameStore {
    /// A Redis store: one URL, or comma-separated seed URLs of a Redis
    /// Cluster (as `--redis`). Keys are `<namespace>:name:<name>`.
    pub fn redis(urls: &str, namespace: &str) -> Result<NameStore, String> {
        let target = if urls.contains(',') {
            let nodes: Vec<&str> = urls.split(',').collect();
            let client = redis::cluster::ClusterClient::builder(nodes)
                .connection_timeout(REDIS_TIMEOUT)
                .response_timeout(REDIS_TIMEOUT)
                .build()
                .map_err(|err| err.to_string())?;
            Target::Cluster(Box::new(client))
        } else {
            let client = redis::Client::open(urls).map_err(|err| err.to_string())?;
            Target::Single(Box::new(client))
        };
        Ok(NameStore::Redis(Box::new(RedisNames {
            target,
            conn: tokio::sync::Mutex::new(None),
            prefix: format!("{namespace}:name:"),
        })))
    }
}

/// The names of one chat server: claims, refreshes, releases.
#[derive(Clone)]
pub struct Names {
    inner: Arc<Inner>,
}

struct Inner {
    hold: Duration,
    store: Store,
}

enum Store {
    Local(Mutex<HashMap<String, Binding>>),
    Redis(Box<RedisNames>),
}

/// A name's binding in a local store.
struct Binding {
    key_hash: String,
    /// Free again from then on (unless refreshed).
    until: Instant,
}

impl Names {
    /// Names bound in `store`, held `hold` after their last connection left.
    pub fn new(store: NameStore, hold: Duration) -> Names {
        let store = match store {
            NameStore::Local => Store::Local(Mutex::new(HashMap::new())),
            NameStore::Redis(redis) => Store::Redis(redis),
        };
        // Expiries in Redis are whole milliseconds, at least one.
        let hold = hold.max(Duration::from_millis(1));
        Names {
            inner: Arc::new(Inner { hold, store }),
        }
    }

    /// How often the names held here are refreshed: a quarter of the hold.
    pub fn refresh_every(&self) -> Duration {
        (self.inner.hold / 4).clamp(Duration::from_millis(50), Duration::from_secs(60))
    }

    /// A sign-in as `name` with `key` (if the page had one): the key the
    /// name is bound to, or `name-taken` (4003) if it is bound to another
    /// key. A free name is bound to the key given (so the user's other
    /// browsers that kept it still work after the hold ran out), or to a
    /// fresh one without a key.
    pub async fn claim(&self, name: &str, key: Option<&str>) -> Result<String, RtmError> {
        let fresh = match key.filter(|key| valid_key(key)) {
            Some(key) => key.to_owned(),
            None => fresh_key()?,
        };
        let hold = self.inner.hold;
        match &self.inner.store {
            Store::Local(bindings) => {
                let now = Instant::now();
                let mut bindings = bindings.lock().unwrap_or_else(|e| e.into_inner());
                match bindings.get_mut(name) {
                    Some(bound) if bound.until > now => match key {
                        Some(key) if key_hash(key) == bound.key_hash => {
                            bound.until = bound.until.max(now + hold);
                            Ok(key.to_owned())
                        }
                        _ => Err(name_taken(name)),
                    },
                    _ => {
                        let binding = Binding {
                            key_hash: key_hash(&fresh),
                            until: now + hold,
                        };
                        bindings.insert(name.to_owned(), binding);
                        Ok(fresh)
                    }
                }
            }
            Store::Redis(redis) => {
                let given = key.map(key_hash).unwrap_or_default();
                let cmd = redis.claim_cmd(name, &given, &key_hash(&fresh), hold);
                match redis.run(&cmd).await {
                    Ok(CLAIMED_FRESH) => Ok(fresh),
                    Ok(CLAIMED_SAME) => Ok(key.unwrap_or_default().to_owned()),
                    Ok(_) => Err(name_taken(name)),
                    Err(err) => {
                        tracing::warn!(%err, "names: Redis did not answer a sign-in");
                        Err(RtmError::new(
                            ErrorCode::AuthRejected,
                            "names-unavailable: names cannot be checked now (the cluster's \
                             Redis does not answer); try again in a moment",
                        ))
                    }
                }
            }
        }
    }

    /// Keeps the names held by this server's connections bound (`(name,
    /// key)` pairs): their hold starts again from now. In Redis, a binding
    /// that vanished (Redis restarted empty) is set again; one bound to
    /// another key meanwhile is left alone (logged). Forgets local bindings
    /// that are over.
    pub async fn refresh(&self, held: &[(String, String)]) {
        let hold = self.inner.hold;
        match &self.inner.store {
            Store::Local(bindings) => {
                let now = Instant::now();
                let mut bindings = bindings.lock().unwrap_or_else(|e| e.into_inner());
                for (name, key) in held {
                    let hash = key_hash(key);
                    let bound = bindings.entry(name.clone()).or_insert_with(|| Binding {
                        key_hash: hash.clone(),
                        until: now,
                    });
                    if bound.until <= now {
                        bound.key_hash = hash.clone();
                    }
                    if bound.key_hash == hash {
                        bound.until = now + hold;
                    }
                }
                bindings.retain(|_, bound| bound.until > now);
            }
            Store::Redis(redis) => {
                let runs = held.iter().map(|(name, key)| async move {
                    let cmd = redis.refresh_cmd(name, &key_hash(key), hold);
                    (name, redis.run(&cmd).await)
                });
                for (name, result) in futures_util::future::join_all(runs).await {
                    match result {
                        Ok(0) => tracing::warn!(
                            name,
                            "names: bound to another key in Redis while held here"
                        ),
                        Ok(_) => {}
                        Err(err) => {
                            tracing::warn!(%err, "names: Redis did not answer a refresh");
                            break;
                        }
                    }
                }
            }
        }
    }

    /// The last connection holding these names (`(name, key)`) here left:
    /// their hold starts now.
    pub async fn released(&self, names: &[(String, String)]) {
        self.refresh(names).await;
    }
}

/// `claim` and `refresh` answers.
const CLAIMED_FRESH: i64 = 2;
const CLAIMED_SAME: i64 = 1;

/// KEYS[1] the name; ARGV[1] the given key's hash ('' without one),
/// ARGV[2] the hash of the key to bind a free name to, ARGV[3] the hold in
/// ms. 2: bound to that key (it was free), 1: bound to the given key (hold restarted), 0: taken.
const CLAIM: &str = r"
local bound = redis.call('GET', KEYS[1])
if not bound then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
  return 2
end
if ARGV[1] ~= '' and bound == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
  return 1
end
return 0
";

/// KEYS[1] the name; ARGV[1] the holder's key hash, ARGV[2] the hold in ms.
/// 1: held (set again if it had vanished), 0: bound to another key.
const REFRESH: &str = r"
local bound = redis.call('GET', KEYS[1])
if not bound then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
if bound == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
";

/// Names bound in Redis (one node, or a Redis Cluster).
pub struct RedisNames {
    target: Target,
    /// The open connection (multiplexed: cheap to clone); reopened after an error.
    conn: tokio::sync::Mutex<Option<Conn>>,
    /// `<namespace>:name:`
    prefix: String,
}

enum Target {
    Single(Box<redis::Client>),
    Cluster(Box<redis::cluster::ClusterClient>),
}

#[derive(Clone)]
enum Conn {
    Single(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl RedisNames {
    fn claim_cmd(&self, name: &str, given: &str, fresh: &str, hold: Duration) -> redis::Cmd {
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(CLAIM)
            .arg(1)
            .arg(format!("{}{name}", self.prefix))
            .arg(given)
            .arg(fresh)
            .arg(hold.as_millis().max(1) as u64);
        cmd
    }

    fn refresh_cmd(&self, name: &str, hash: &str, hold: Duration) -> redis::Cmd {
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(REFRESH)
            .arg(1)
            .arg(format!("{}{name}", self.prefix))
            .arg(hash)
            .arg(hold.as_millis().max(1) as u64);
        cmd
    }

    /// Runs a script returning an integer, connecting first if need be; a
    /// failed command drops the connection (the next one reconnects).
    async fn run(&self, cmd: &redis::Cmd) -> RedisResult<i64> {
        let mut conn = self.connection().await?;
        let result = match &mut conn {
            Conn::Single(c) => cmd.query_async(c).await,
            Conn::Cluster(c) => cmd.query_async(c).await,
        };
        if result.is_err() {
            *self.conn.lock().await = None;
        }
        result
    }

    async fn connection(&self) -> RedisResult<Conn> {
        let mut open = self.conn.lock().await;
        if let Some(conn) = &*open {
            return Ok(conn.clone());
        }
        let conn = match &self.target {
            Target::Single(client) => {
                let config = redis::AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(REDIS_TIMEOUT))
                    .set_response_timeout(Some(REDIS_TIMEOUT));
                Conn::Single(
                    client
                        .get_multiplexed_async_connection_with_config(&config)
                        .await?,
                )
            }
            Target::Cluster(client) => Conn::Cluster(client.get_async_connection().await?),
        };
        *open = Some(conn.clone());
        Ok(conn)
    }
}

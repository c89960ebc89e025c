//! The functions a server serves: [`Functions`] (names, ids and their rate
//! limits), and [`SharedLimits`], the limits that count across a server's
//! connections (calls per user, sign-ins per address).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use crate::config::ServerConfig;
use crate::error::RtmError;
use crate::peer::ConnInfo;
use crate::rate::{self, Rate, RateLimit, RateLimiter};

/// A function registered with [`Functions::register`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FunctionId(pub u32);

/// The functions a server serves, by name. Built once at start-up and
/// shared by every connection.
#[derive(Debug, Clone, Default)]
pub struct Functions {
    ids: HashMap<Box<str>, FunctionId>,
    names: Vec<Box<str>>,
    /// Per function (by id), its rate limit if it has one.
    limits: Vec<Option<RateLimit>>,
}

impl Functions {
    /// Registers a name; invokes of other names get `rtm/function-not-found`.
    /// Registering a name twice returns the same id.
    pub fn register(&mut self, name: &str) -> FunctionId {
        if let Some(id) = self.ids.get(name) {
            return *id;
        }
        let id = FunctionId(self.names.len() as u32);
        self.ids.insert(name.into(), id);
        self.names.push(name.into());
        self.limits.push(None);
        id
    }

    /// Limits how often `id` may be called (see [`RateLimit`]); a call past
    /// it gets `rtm/too-many-requests` and does not run.
    pub fn set_rate_limit(&mut self, id: FunctionId, limit: RateLimit) {
        if let Some(slot) = self.limits.get_mut(id.0 as usize) {
            *slot = Some(limit);
        }
    }

    /// The rate limit of `id`, if it has one.
    pub fn rate_limit(&self, id: FunctionId) -> Option<&RateLimit> {
        self.limits.get(id.0 as usize).and_then(Option::as_ref)
    }

    /// The id of a registered name.
    pub fn id(&self, name: &str) -> Option<FunctionId> {
        self.ids.get(name).copied()
    }

    /// The name an id was registered under.
    pub fn name(&self, id: FunctionId) -> Option<&str> {
        self.names.get(id.0 as usize).map(|n| &**n)
    }

    /// How many are registered.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }
}

/// The rate limits that count across a server's connections: calls of a
/// function by all the connections of one user, and sign-ins from one peer
/// address ([`ServerConfig::sign_ins_per_ip`]). One per server, shared by
/// its connections (behind a lock in a multi-threaded adapter; only
/// consulted for the functions that have such a limit).
#[derive(Debug)]
pub struct SharedLimits {
    per_user: HashMap<FunctionId, RateLimiter<Arc<str>>>,
    sign_ins: Option<RateLimiter<IpAddr>>,
}

impl SharedLimits {
    /// The shared limits of these functions and this configuration.
    pub fn new(functions: &Functions, config: &ServerConfig) -> Self {
        let per_user = (0..functions.len() as u32)
            .map(FunctionId)
            .filter_map(|id| {
                let rate = functions.rate_limit(id)?.per_user?;
                Some((id, RateLimiter::new(rate)))
            })
            .collect();
        SharedLimits {
            per_user,
            sign_ins: config.sign_ins_per_ip.map(RateLimiter::new),
        }
    }

    /// Whether calls of `function` are counted per user.
    pub fn limits_users(&self, function: FunctionId) -> bool {
        self.per_user.contains_key(&function)
    }

    /// Whether sign-ins are counted per address.
    pub fn limits_sign_ins(&self) -> bool {
        self.sign_ins.is_some()
    }

    /// Counts a call of `function` (named `name`) by `info`'s user at
    /// `now`: `Err(rtm/too-many-requests)` past its per-user rate. A
    /// connection without a user is not counted here.
    pub fn check_call(
        &mut self,
        function: FunctionId,
        name: &str,
        info: &ConnInfo,
        now: Instant,
    ) -> Result<(), RtmError> {
        let (Some(limiter), Some(identity)) = (self.per_user.get_mut(&function), &info.identity)
        else {
            return Ok(());
        };
        let rate = limiter.rate();
        limiter
            .try_take(identity.user_id.clone(), now)
            .map_err(|wait| rate::too_many(&format!("'{name}' by this user"), rate, wait))
    }

    /// Counts a sign-in (an `auth` request reaching the handler) from
    /// `info`'s peer address at `now`: `Err(rtm/too-many-requests)` past
    /// [`ServerConfig::sign_ins_per_ip`].
    pub fn check_sign_in(&mut self, info: &ConnInfo, now: Instant) -> Result<(), RtmError> {
        let (Some(limiter), Some(peer)) = (self.sign_ins.as_mut(), info.meta.peer_addr) else {
            return Ok(());
        };
        let rate: Rate = limiter.rate();
        limiter
            .try_take(peer.ip(), now)
            .map_err(|wait| rate::too_many("sign-ins from this address", rate, wait))
    }
}

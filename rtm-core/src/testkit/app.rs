//! [`App`]: the application side of a simulated cluster, and [`TokenApp`], a small default.
//!
//! A [`Cluster`](super::Cluster) answers every `Authenticate`, `Invoke` and
//! `Authorize` output of its servers by calling the [`App`] synchronously, so
//! a whole request/reply round trip happens inside one cluster operation.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Value};

use crate::error::{ErrorCode, RtmError};
use crate::frame::Args;
use crate::peer::{ConnInfo, Identity};
use crate::server::ServerCore;

/// What the application does for a simulated cluster: authenticate, authorize
/// push subscriptions, run functions. Called synchronously by
/// [`Cluster`](super::Cluster); `server` is the server the request arrived on,
/// so a function may `emit`, `publish` or `push` from it.
pub trait App {
    /// Function names registered on every server when the cluster is built.
    fn functions(&self) -> Vec<String>;

    /// The authentication handler: `data` is the `auth` request's `data` array.
    fn authenticate(&mut self, info: &ConnInfo, data: &Args) -> Result<Identity, RtmError>;

    /// The subscribe authorizer (used when `ServerConfig::authorize_subscriptions`
    /// is on): `Ok` allows. Allows everything by default.
    fn authorize(&mut self, info: &ConnInfo, event: &str, tags: &[String]) -> Result<(), RtmError> {
        let _ = (info, event, tags);
        Ok(())
    }

    /// Runs function `name` for connection `info`; the value becomes the reply's `data`.
    fn invoke(
        &mut self,
        server: &mut ServerCore,
        name: &str,
        info: &ConnInfo,
        args: &Args,
    ) -> Result<Value, RtmError>;

    /// A connection did not authenticate in time. Does nothing by default.
    fn auth_timed_out(&mut self, info: &ConnInfo) {
        let _ = info;
    }

    /// A connection's state is gone. Does nothing by default.
    fn disconnected(&mut self, info: &ConnInfo) {
        let _ = info;
    }
}

/// A small application: tokens map to user ids; a few functions.
///
/// - `auth` with `data: [token]`: a known token authenticates as its user, with
///   authentication data `{"user": <user id>}`; anything else is rejected.
/// - Subscribes are allowed except to events added with [`TokenApp::deny_event`].
/// - Functions:
///   - `echo(...)` returns its arguments array;
///   - `whoami()` returns the caller's user id (or `null`);
///   - `publish(user, event, ...args)` publishes from the caller's server and
///     returns the number of local deliveries;
///   - `push(event, tags, ...args)` pushes from the caller's server and
///     returns the number of local deliveries;
///   - `fail(message)` fails with `rtm/handler-error`.
///
/// ```
/// use rtm_core::testkit::TokenApp;
/// let app = TokenApp::new().with_token("t-alice", "alice").deny_event("secret");
/// assert_eq!(app.user_of("t-alice"), Some("alice"));
/// ```
#[derive(Debug, Clone, Default)]
pub struct TokenApp {
    tokens: BTreeMap<String, String>,
    denied_events: BTreeSet<String>,
}

impl TokenApp {
    /// An app with no tokens (every `auth` is rejected) and no denied events.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a token that authenticates as `user`.
    #[must_use]
    pub fn with_token(mut self, token: &str, user: &str) -> Self {
        self.tokens.insert(token.into(), user.into());
        self
    }

    /// Denies every push subscription to `event` (needs `authorize_subscriptions`).
    #[must_use]
    pub fn deny_event(mut self, event: &str) -> Self {
        self.denied_events.insert(event.into());
        self
    }

    /// The user a token authenticates as.
    pub fn user_of(&self, token: &str) -> Option<&str> {
        self.tokens.get(token).map(String::as_str)
    }
}

impl App for TokenApp {
    fn functions(&self) -> Vec<String> {
        ["echo", "whoami", "publish", "push", "fail"]
            .map(String::from)
            .to_vec()
    }

    fn authenticate(&mut self, _info: &ConnInfo, data: &Args) -> Result<Identity, RtmError> {
        let rejected = || RtmError::new(ErrorCode::AuthRejected, "unknown token");
        let (token,): (String,) = data.deserialize().map_err(|_| rejected())?;
        let user = self.user_of(&token).ok_or_else(rejected)?;
        Ok(Identity::new(user, json!({ "user": user })))
    }

    fn authorize(
        &mut self,
        _info: &ConnInfo,
        event: &str,
        _tags: &[String],
    ) -> Result<(), RtmError> {
        if self.denied_events.contains(event) {
            return Err(RtmError::new(
                ErrorCode::Forbidden,
                format!("no subscriptions to '{event}'"),
            ));
        }
        Ok(())
    }

    fn invoke(
        &mut self,
        server: &mut ServerCore,
        name: &str,
        info: &ConnInfo,
        args: &Args,
    ) -> Result<Value, RtmError> {
        match name {
            "echo" => args.deserialize(),
            "whoami" => Ok(info.user_id().map_or(Value::Null, Value::from)),
            "publish" => {
                let (user, event, rest) = split2::<String, String>(args)?;
                Ok(server.publish(&user, &event, &rest)?.into())
            }
            "push" => {
                let (event, tags, rest) = split2::<String, Vec<String>>(args)?;
                Ok(server.push(&event, &tags, &rest)?.into())
            }
            "fail" => {
                let (message,): (String,) = args.deserialize()?;
                Err(RtmError::handler(message))
            }
            other => Err(RtmError::new(
                ErrorCode::FunctionNotFound,
                format!("no function named '{other}'"),
            )),
        }
    }
}

/// Splits `[a, b, ...rest]` into its first two arguments and the rest as an [`Args`].
fn split2<A, B>(args: &Args) -> Result<(A, B, Args), RtmError>
where
    A: serde::de::DeserializeOwned,
    B: serde::de::DeserializeOwned,
{
    let mut all: Vec<Value> = args.deserialize()?;
    if all.len() < 2 {
        return Err(RtmError::bad_request("expected at least two arguments"));
    }
    let rest = Args::encode(&all.split_off(2))?;
    let b = serde_json::from_value(all.pop().unwrap_or_default())?;
    let a = serde_json::from_value(all.pop().unwrap_or_default())?;
    Ok((a, b, rest))
}

//! The fixture server's functions, written once for every runtime.
//!
//! The fixture server is what the wire vectors, the conformance suite and
//! foreign clients are run against. Its semantics live here, as plain
//! synchronous functions, so the core's vector runner and every adapter's
//! fixture binary behave identically:
//!
//! | with `--auth` | |
//! |---|---|
//! | [`authenticate`] | `data[0]` must be the string `"user:<id>"` (non-empty `<id>`): user id `<id>`, authentication data `{"user":"<id>"}`; anything else is rejected with message `"bad token"` |
//! | [`authorize`] | tags starting with `"private-"` are denied (`rtm/forbidden`), others allowed |
//!
//! | function | does |
//! |---|---|
//! | `echo(x)` | returns `x` (`null` when absent) |
//! | `add(a, b)` | returns `a + b`; non-numbers are `rtm/handler-error` |
//! | `fail(message)` | error reply `rtm/handler-error` with that message |
//! | `panic()` | the function panics |
//! | `sleep(ms)` | waits `ms`, returns `ms` |
//! | `whoami()` | the connection's authentication data (`null` without auth) |
//! | `emit(event, ...args)` | Emit to every local connection; returns how many it was sent to |
//! | `emit_to(user, event, ...args)` | Emit to that user's local connections; returns how many |
//! | `publish(user, event, ...args)` | Publish across the cluster; returns `null` (error reply without auth) |
//! | `push(event, tags, ...args)` | Push; returns `null` |
//! | `big(n)` | a string of `n` `'x'` (at most [`BIG_MAX_BYTES`]) |
//! | `count()` | the number of local connections |
//! | `broadcast(x)` | Emit event `"alert"` with args `[x]` to every local connection; returns how many |
//! | `burst(event, count, bytes)` | in one pass, `count` Emits of `event` with args `[i, "xx…"]` (`i` from 0, a string of `bytes` `'x'`) to every local connection; returns the deliveries. At most [`BURST_MAX_EVENTS`] events and [`BIG_MAX_BYTES`] in all |
//!
//! A call is split in two: [`plan`] decides what a call does, as an
//! [`Action`], without touching any server; [`run_on`] carries the action out
//! against an [`rtm_core::ServerCore`](crate::ServerCore) and gives the reply value.
//! Only [`Action::Sleep`] and [`Action::Panic`] need the adapter itself (a
//! timer, a real panic inside its handler isolation); an adapter that talks to
//! its server through a handle rather than `&mut ServerCore` maps
//! [`Action::Emit`], [`Action::Publish`], [`Action::Push`] and
//! [`Action::Count`] to that handle's methods instead of calling [`run_on`].
//!
//! ```
//! use std::time::Instant;
//! use rtm_core::testkit::fixture::{self, Action};
//! use rtm_core::{Args, ConnMeta, ServerCore, ServerConfig, ServerOutput};
//!
//! let mut server = ServerCore::new(ServerConfig::new("fixture"));
//! fixture::register(&mut server);
//! let conn = server.handle_open(ConnMeta::default(), Instant::now()).unwrap();
//! let info = server.conn_info(conn).unwrap().clone();
//!
//! let args = Args::from_json(bytes::Bytes::from_static(b"[2, 3]")).unwrap();
//! let action = fixture::plan("add", &info, &args);
//! assert_eq!(action, Action::Reply(Ok(serde_json::json!(5))));
//!
//! let args = Args::from_json(bytes::Bytes::from_static(br#"["alert", "hi"]"#)).unwrap();
//! let action = fixture::plan("emit", &info, &args);
//! assert_eq!(fixture::run_on(&mut server, action), Ok(serde_json::json!(1)));
//! let Some(ServerOutput::Transmit { frame, .. }) = server.poll_output() else { panic!() };
//! assert_eq!(&frame[..], br#"{"event":"alert","data":["hi"]}"#);
//! ```

use serde_json::{Number, Value};

use crate::error::{ErrorCode, RtmError};
use crate::frame::Args;
use crate::peer::{ConnInfo, Identity};
use crate::server::ServerCore;

/// Every function the fixture server registers.
pub const FUNCTIONS: &[&str] = &[
    "echo",
    "add",
    "fail",
    "panic",
    "sleep",
    "whoami",
    "emit",
    "emit_to",
    "publish",
    "push",
    "big",
    "count",
    "broadcast",
    "burst",
];

/// The most events one `burst` call emits.
pub const BURST_MAX_EVENTS: u64 = 100_000;

/// The longest string `big(n)` builds; larger `n` is `rtm/handler-error`
/// (a fixture must not be made to exhaust memory by one call).
pub const BIG_MAX_BYTES: u64 = 64 * 1024 * 1024;

/// The message of a rejected `auth`.
pub const BAD_TOKEN: &str = "bad token";

/// The prefix of tags the subscribe authorizer denies.
pub const PRIVATE_TAG_PREFIX: &str = "private-";

/// Registers every function of [`FUNCTIONS`] on a server core.
pub fn register(server: &mut ServerCore) {
    for name in FUNCTIONS {
        server.register_function(name);
    }
}

/// The fixture's authentication handler (`--auth`).
///
/// ```
/// use rtm_core::testkit::fixture;
/// let ok = rtm_core::Args::encode(&["user:alice"]).unwrap();
/// let who = fixture::authenticate(&ok).unwrap();
/// assert_eq!(&*who.user_id, "alice");
/// assert_eq!(who.data, serde_json::json!({"user": "alice"}));
/// let bad = rtm_core::Args::encode(&["alice"]).unwrap();
/// assert_eq!(fixture::authenticate(&bad).unwrap_err().message, "bad token");
/// ```
pub fn authenticate(data: &Args) -> Result<Identity, RtmError> {
    let rejected = || RtmError::new(ErrorCode::AuthRejected, BAD_TOKEN);
    let values: Vec<Value> = data.deserialize().map_err(|_| rejected())?;
    let user = values
        .first()
        .and_then(Value::as_str)
        .and_then(|token| token.strip_prefix("user:"))
        .filter(|user| !user.is_empty())
        .ok_or_else(rejected)?;
    Ok(Identity::new(user, serde_json::json!({ "user": user })))
}

/// The fixture's subscribe authorizer: any tag starting with `"private-"` is denied.
pub fn authorize(event: &str, tags: &[String]) -> Result<(), RtmError> {
    match tags.iter().find(|t| t.starts_with(PRIVATE_TAG_PREFIX)) {
        Some(tag) => Err(RtmError::new(
            ErrorCode::Forbidden,
            format!("tag '{tag}' of event '{event}' is private"),
        )),
        None => Ok(()),
    }
}

/// What one call of a fixture function does; see the [module docs](self).
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Reply at once with this result.
    Reply(Result<Value, RtmError>),
    /// Wait `ms` milliseconds, then reply `ms`.
    Sleep {
        /// How long, in milliseconds.
        ms: u64,
    },
    /// Panic inside the function: the adapter must answer `rtm/internal` and keep running.
    Panic,
    /// Emit `event` with `args` to every local connection (only those of
    /// `only_user` when set); reply with how many it was sent to.
    Emit {
        /// The event name.
        event: String,
        /// Its arguments.
        args: Args,
        /// Restrict to this user's connections.
        only_user: Option<String>,
    },
    /// Publish `event` with `args` to `user` across the cluster; reply `null`.
    Publish {
        /// The target user id.
        user: String,
        /// The event name.
        event: String,
        /// Its arguments.
        args: Args,
    },
    /// Push `event` with `args` to subscriptions holding any of `tags`; reply `null`.
    Push {
        /// The event name.
        event: String,
        /// The tags.
        tags: Vec<String>,
        /// Its arguments.
        args: Args,
    },
    /// Reply with the number of local connections.
    Count,
    /// Emit `event` `count` times, with args `[i, text]`, to every local
    /// connection, in one pass; reply with the number of deliveries.
    Burst {
        /// The event name.
        event: String,
        /// How many events.
        count: u64,
        /// The second argument of each.
        text: String,
    },
}

/// Decides what a call of fixture function `function` by `info` with `args` does.
/// Never panics: bad arguments become a [`Action::Reply`] with an error.
pub fn plan(function: &str, info: &ConnInfo, args: &Args) -> Action {
    match plan_checked(function, info, args) {
        Ok(action) => action,
        Err(err) => Action::Reply(Err(err)),
    }
}

fn plan_checked(function: &str, info: &ConnInfo, args: &Args) -> Result<Action, RtmError> {
    let values: Vec<Value> = args.deserialize()?;
    // Missing positional arguments read as null, as in the JS world.
    let arg = |i: usize| values.get(i).unwrap_or(&Value::Null);
    let rest = |from: usize| Args::encode(values.get(from..).unwrap_or(&[]));
    let string = |i: usize, what: &str| {
        arg(i)
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| RtmError::handler(format!("{function} needs {what} (a string)")))
    };
    let reply = |value: Value| Ok(Action::Reply(Ok(value)));
    match function {
        "echo" => reply(arg(0).clone()),
        "add" => reply(Value::Number(add(arg(0), arg(1))?)),
        "fail" => {
            let message = match arg(0) {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            Err(RtmError::handler(message))
        }
        "panic" => Ok(Action::Panic),
        "sleep" => {
            let ms = arg(0).as_u64().ok_or_else(|| {
                RtmError::handler("sleep needs a non-negative integer of milliseconds")
            })?;
            Ok(Action::Sleep { ms })
        }
        "whoami" => reply(info.authentication().clone()),
        "emit" => Ok(Action::Emit {
            event: string(0, "an event name")?,
            args: rest(1)?,
            only_user: None,
        }),
        "emit_to" => Ok(Action::Emit {
            only_user: Some(string(0, "a user id")?),
            event: string(1, "an event name")?,
            args: rest(2)?,
        }),
        "publish" => Ok(Action::Publish {
            user: string(0, "a user id")?,
            event: string(1, "an event name")?,
            args: rest(2)?,
        }),
        "push" => {
            let tags = serde_json::from_value::<Vec<String>>(arg(1).clone())
                .map_err(|_| RtmError::handler("push needs tags (an array of strings)"))?;
            Ok(Action::Push {
                event: string(0, "an event name")?,
                tags,
                args: rest(2)?,
            })
        }
        "big" => {
            let n = arg(0)
                .as_u64()
                .filter(|n| *n <= BIG_MAX_BYTES)
                .ok_or_else(|| {
                    RtmError::handler(format!(
                        "big needs an integer of bytes from 0 to {BIG_MAX_BYTES}"
                    ))
                })?;
            // n <= BIG_MAX_BYTES, so it fits in usize.
            reply(Value::String("x".repeat(n as usize)))
        }
        "count" => Ok(Action::Count),
        "burst" => {
            let count = arg(1).as_u64().filter(|n| *n <= BURST_MAX_EVENTS);
            let bytes = arg(2).as_u64();
            let (Some(count), Some(bytes)) = (count, bytes) else {
                return Err(RtmError::handler(format!(
                    "burst needs an event, a count (at most {BURST_MAX_EVENTS}) and a size in bytes"
                )));
            };
            if count.saturating_mul(bytes) > BIG_MAX_BYTES {
                return Err(RtmError::handler(format!(
                    "a burst of {count} x {bytes} bytes is over {BIG_MAX_BYTES} bytes"
                )));
            }
            Ok(Action::Burst {
                event: string(0, "an event name")?,
                count,
                // count * bytes <= BIG_MAX_BYTES, so bytes fits in usize.
                text: "x".repeat(bytes as usize),
            })
        }
        "broadcast" => Ok(Action::Emit {
            event: "alert".into(),
            args: Args::encode(&[arg(0)])?,
            only_user: None,
        }),
        _ => Err(RtmError::new(
            ErrorCode::FunctionNotFound,
            format!("no function named '{function}'"),
        )),
    }
}

/// `a + b`: an integer when both are integers and the sum fits, a float otherwise.
fn add(a: &Value, b: &Value) -> Result<Number, RtmError> {
    let not_numbers = || RtmError::handler("add needs two numbers");
    let (Value::Number(a), Value::Number(b)) = (a, b) else {
        return Err(not_numbers());
    };
    if let Some(sum) = a
        .as_i64()
        .zip(b.as_i64())
        .and_then(|(a, b)| a.checked_add(b))
    {
        return Ok(sum.into());
    }
    if let Some(sum) = a
        .as_u64()
        .zip(b.as_u64())
        .and_then(|(a, b)| a.checked_add(b))
    {
        return Ok(sum.into());
    }
    let (Some(a), Some(b)) = (a.as_f64(), b.as_f64()) else {
        return Err(not_numbers());
    };
    Number::from_f64(a + b).ok_or_else(|| RtmError::handler("the sum is not a finite number"))
}

/// Carries out `action` against `server` and returns the reply value
/// (give it to [`ServerCore::handle_call_result`]).
///
/// [`Action::Sleep`] answers `ms`: call this once the time has passed.
/// [`Action::Panic`] answers the `rtm/internal` error an adapter reports for a
/// panicking function; adapters should panic for real instead, to exercise
/// their isolation.
pub fn run_on(server: &mut ServerCore, action: Action) -> Result<Value, RtmError> {
    match action {
        Action::Reply(result) => result,
        Action::Sleep { ms } => Ok(ms.into()),
        Action::Panic => Err(RtmError::internal("the function panicked")),
        Action::Emit {
            event,
            args,
            only_user,
        } => {
            let only = only_user.as_deref();
            let sent = server.emit(
                &event,
                |info| only.is_none_or(|user| info.user_id() == Some(user)),
                &args,
            )?;
            Ok(sent.into())
        }
        Action::Publish { user, event, args } => {
            server.publish(&user, &event, &args)?;
            Ok(Value::Null)
        }
        Action::Push { event, tags, args } => {
            server.push(&event, &tags, &args)?;
            Ok(Value::Null)
        }
        Action::Count => Ok(server.connection_count().into()),
        Action::Burst { event, count, text } => {
            let mut sent = 0;
            for i in 0..count {
                sent += server.emit(&event, |_| true, &Args::encode(&(i, &text))?)?;
            }
            Ok(sent.into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::peer::{ConnMeta, Identity};
    use serde_json::json;
    use std::time::Instant;

    fn info(server: &mut ServerCore) -> ConnInfo {
        let conn = server
            .handle_open(ConnMeta::default(), Instant::now())
            .unwrap();
        ConnInfo::clone(server.conn_info(conn).unwrap())
    }

    fn args(value: Value) -> Args {
        Args::encode(&value).unwrap()
    }

    fn reply(function: &str, data: Value) -> Action {
        let mut server = ServerCore::new(crate::ServerConfig::new("t"));
        let info = info(&mut server);
        plan(function, &info, &args(data))
    }

    #[test]
    fn echo_returns_its_argument_or_null() {
        assert_eq!(
            reply("echo", json!([{"a": 1}])),
            Action::Reply(Ok(json!({"a": 1})))
        );
        assert_eq!(reply("echo", json!([])), Action::Reply(Ok(Value::Null)));
    }

    #[test]
    fn add_sums_integers_and_floats_and_refuses_non_numbers() {
        assert_eq!(reply("add", json!([2, 3])), Action::Reply(Ok(json!(5))));
        assert_eq!(reply("add", json!([1.5, 1])), Action::Reply(Ok(json!(2.5))));
        assert_eq!(
            reply("add", json!([i64::MAX, 1])),
            Action::Reply(Ok(json!(9223372036854775808u64)))
        );
        let Action::Reply(Err(err)) = reply("add", json!(["a", 1])) else {
            panic!()
        };
        assert_eq!(err.code, ErrorCode::HandlerError);
    }

    #[test]
    fn fail_is_a_handler_error_with_the_message() {
        assert_eq!(
            reply("fail", json!(["boom"])),
            Action::Reply(Err(RtmError::handler("boom")))
        );
    }

    #[test]
    fn sleep_big_count_panic_plan_as_documented() {
        assert_eq!(reply("sleep", json!([100])), Action::Sleep { ms: 100 });
        assert_eq!(reply("panic", json!([])), Action::Panic);
        assert_eq!(reply("count", json!([])), Action::Count);
        assert_eq!(reply("big", json!([3])), Action::Reply(Ok(json!("xxx"))));
        assert!(matches!(
            reply("big", json!([u64::MAX])),
            Action::Reply(Err(_))
        ));
        assert!(matches!(reply("sleep", json!([-1])), Action::Reply(Err(_))));
    }

    #[test]
    fn emit_to_and_broadcast_build_emits() {
        assert_eq!(
            reply("emit_to", json!(["bob", "dm", 1, 2])),
            Action::Emit {
                event: "dm".into(),
                args: args(json!([1, 2])),
                only_user: Some("bob".into())
            }
        );
        assert_eq!(
            reply("broadcast", json!(["hi"])),
            Action::Emit {
                event: "alert".into(),
                args: args(json!(["hi"])),
                only_user: None
            }
        );
    }

    #[test]
    fn authenticate_accepts_only_user_tokens() {
        let who = authenticate(&args(json!(["user:bob"]))).unwrap();
        assert_eq!(who, Identity::new("bob", json!({"user": "bob"})));
        for bad in [json!([]), json!(["user:"]), json!([7]), json!(["bob"])] {
            let err = authenticate(&args(bad)).unwrap_err();
            assert_eq!(
                (err.code, err.message.as_str()),
                (ErrorCode::AuthRejected, BAD_TOKEN)
            );
        }
    }

    #[test]
    fn authorize_denies_private_tags() {
        assert!(authorize("e", &["a".into(), "b".into()]).is_ok());
        let err = authorize("e", &["a".into(), "private-x".into()]).unwrap_err();
        assert_eq!(err.code, ErrorCode::Forbidden);
    }

    #[test]
    fn emit_to_reaches_only_that_users_connections() {
        let mut server = ServerCore::new(crate::ServerConfig::new("t"));
        let _anonymous = info(&mut server);
        let action = Action::Emit {
            event: "dm".into(),
            args: Args::empty(),
            only_user: Some("bob".into()),
        };
        assert_eq!(run_on(&mut server, action), Ok(json!(0)));
        assert_eq!(run_on(&mut server, Action::Count), Ok(json!(1)));
    }

    #[test]
    fn publish_without_auth_is_an_error() {
        let mut server = ServerCore::new(crate::ServerConfig::new("t"));
        let action = Action::Publish {
            user: "bob".into(),
            event: "dm".into(),
            args: Args::empty(),
        };
        assert!(run_on(&mut server, action).is_err());
    }
}

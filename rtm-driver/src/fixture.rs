//! The fixture server, written once for every adapter: the functions, auth
//! and authorizer of `rtm_core::testkit::fixture`, registered on a
//! [`ServerBuilder`]. Adapters' `rtm-fixture` binaries only add sockets.

use std::time::Duration;

use rtm_core::testkit::fixture::{self, Action};
use rtm_core::{Args, RtmError};
use serde_json::value::RawValue;
use serde_json::Value;

use crate::function::{CallContext, SubscribeRequest};
use crate::server::{ServerBuilder, ServerHandle};

/// Options of the fixture server (the `rtm-fixture` flags that shape the server).
#[derive(Debug, Clone, Default)]
pub struct FixtureOptions {
    /// `--auth`: require `"user:<id>"` tokens.
    pub auth: bool,
    /// `--auth-timeout-ms`.
    pub auth_timeout: Option<Duration>,
    /// `--max-frame-bytes`.
    pub max_frame_bytes: Option<usize>,
    /// `--max-in-flight`.
    pub max_in_flight: Option<usize>,
    /// `--namespace`.
    pub namespace: Option<String>,
}

/// Adds the fixture functions, authorizer and (with `options.auth`) auth handler to `builder`.
pub fn fixture_builder(mut builder: ServerBuilder, options: &FixtureOptions) -> ServerBuilder {
    for name in fixture::FUNCTIONS {
        let name: &'static str = name;
        builder = builder.register(name, move |ctx: CallContext, args: Args| async move {
            // `echo` returns its argument as sent, the way the benchmark's
            // hand-written reference server does; the rest through the plan.
            if name == "echo" {
                return echo_raw(&args);
            }
            let action = fixture::plan(name, &ctx.info, &args);
            let value = run(&ctx.server, action).await?;
            serde_json::value::to_raw_value(&value)
                .map_err(|e| RtmError::internal(format!("result cannot be encoded: {e}")))
        });
    }
    builder = builder.authorize_subscriptions(|req: SubscribeRequest| async move {
        fixture::authorize(&req.event, &req.tags)
    });
    if options.auth {
        builder = builder.auth(|_info, data: Vec<Value>| async move {
            fixture::authenticate(&Args::encode(&data)?)
        });
        if let Some(timeout) = options.auth_timeout {
            builder = builder.auth_timeout(timeout);
        }
    }
    if let Some(bytes) = options.max_frame_bytes {
        builder = builder.max_frame_bytes(bytes);
    }
    if let Some(calls) = options.max_in_flight {
        builder = builder.max_in_flight(calls);
    }
    if let Some(namespace) = &options.namespace {
        builder = builder.namespace(namespace);
    }
    builder
}

/// `echo(x)`: `x` byte for byte (`null` when absent).
fn echo_raw(args: &Args) -> Result<Box<RawValue>, RtmError> {
    let values: Vec<&RawValue> = serde_json::from_str(args.as_str())?;
    let first = values.first().map_or("null", |v| v.get());
    RawValue::from_string(first.to_owned()).map_err(RtmError::from)
}

async fn run(server: &ServerHandle, action: Action) -> Result<Value, RtmError> {
    match action {
        Action::Reply(result) => result,
        Action::Sleep { ms } => {
            server.runtime().sleep(Duration::from_millis(ms)).await;
            Ok(ms.into())
        }
        Action::Panic => panic!("the fixture's panic() function panicked, as asked"),
        Action::Emit {
            event,
            args,
            only_user,
        } => {
            let sent = server.emit_args(
                &event,
                |info| match &only_user {
                    Some(user) => info.user_id() == Some(user.as_str()),
                    None => true,
                },
                &args,
            )?;
            Ok(sent.into())
        }
        Action::Publish { user, event, args } => {
            server.publish_args(&user, &event, &args)?;
            Ok(Value::Null)
        }
        Action::Push { event, tags, args } => {
            server.push_args(&event, &tags, &args)?;
            Ok(Value::Null)
        }
        Action::Count => Ok(server.connection_count().into()),
        Action::Burst { event, count, text } => {
            // One pass: no await between the emits.
            let mut sent = 0;
            for i in 0..count {
                sent += server.emit_args(&event, |_| true, &Args::encode(&(i, &text))?)?;
            }
            Ok(sent.into())
        }
    }
}

//! Server functions, the auth handler and the subscribe authorizer, as the
//! application writes them: [`Handler`] is implemented for the closure
//! shapes people write and erased once at registration.

use std::any::Any;
use std::future::Future;
use std::sync::Arc;

use rtm_core::{Args, ConnInfo, ErrorCode, Identity, RtmError};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::value::RawValue;

use crate::runtime::BoxFuture;
use crate::server::ServerHandle;

/// What a function gets besides its arguments.
#[derive(Clone, Debug)]
pub struct CallContext {
    /// The calling connection: its id, metadata and identity.
    pub info: Arc<ConnInfo>,
    /// The server, to Emit, Publish or Push from inside a function.
    pub server: ServerHandle,
}

impl CallContext {
    /// The caller's user id, when authenticated.
    pub fn user_id(&self) -> Option<&str> {
        self.info.user_id()
    }

    /// The caller's identity; `rtm/unauthenticated` on a connection without
    /// one (so a function can say `let who = ctx.caller()?;`).
    pub fn caller(&self) -> Result<&Identity, RtmError> {
        self.info
            .identity
            .as_ref()
            .ok_or_else(|| RtmError::new(ErrorCode::Unauthenticated, "authenticate first"))
    }

    /// The application's state of type `S` (see
    /// [`ServerBuilder::with_state`](crate::ServerBuilder::with_state));
    /// `rtm/internal` when the server has none of that type.
    pub fn state<S: Send + Sync + 'static>(&self) -> Result<&S, RtmError> {
        self.server.state::<S>()
    }
}

/// The application's state as an argument: `State(db): State<Db>`, a clone
/// of what [`ServerBuilder::with_state`](crate::ServerBuilder::with_state)
/// was given (make it cheap to clone: an `Arc`, a pool handle).
#[derive(Debug, Clone)]
pub struct State<S>(pub S);

/// The future of a running function: its JSON result or its error.
pub type FunctionFuture = BoxFuture<Result<Box<RawValue>, RtmError>>;

/// A registered function with its types erased.
pub type ErasedFunction = Arc<dyn Fn(CallContext, Args) -> FunctionFuture + Send + Sync>;

/// A server function: implemented for the closure shapes people write, as
/// axum's `Handler` is over extractor tuples; `M` (a [`shape`] marker) only
/// tells the shapes apart, and is inferred.
///
/// | shape | arguments |
/// |---|---|
/// | `\|\| async { … }` | none, and no context (any `data` is ignored) |
/// | `\|ctx: CallContext\| async { … }` | none (any `data` is ignored) |
/// | `\|ctx: CallContext, (a, b): (i64, String)\| async { … }` | typed: the `data` array deserialized by serde (a tuple, a `Vec<Value>`, a struct of a sequence…) |
/// | `\|ctx: CallContext, State(db): State<Db>\| async { … }` | the application's [`State`], no arguments |
/// | `\|ctx: CallContext, State(db): State<Db>, (a,): (i64,)\| async { … }` | the state and typed arguments |
/// | `\|ctx: CallContext, args: Args\| async { … }` | raw: the `data` array as it came, the result as JSON text ([`RawValue`]) |
///
/// Each returns `Result<impl Serialize, impl Into<RtmError>>` (raw:
/// `Result<Box<RawValue>, …>`). Arguments that do not deserialize are
/// `rtm/bad-request` naming the argument; a result that does not serialize
/// is `rtm/internal`.
///
/// Annotate the context (`ctx: CallContext`) and the arguments: the shape is
/// found from the closure's types. When the compiler says "`Handler<_>` is
/// not implemented" for a closure, one of these does not hold: the result
/// is `Serialize` (`Arc<str>` is not: `.to_string()`), the error
/// `Into<RtmError>` (write `Ok::<_, RtmError>(…)`), the arguments
/// `DeserializeOwned`, the future `Send + 'static`.
pub trait Handler<M>: Send + Sync + 'static {
    /// The function with its types erased, as the server runs it.
    fn into_erased(self) -> ErasedFunction;
}

/// Markers of the closure shapes [`Handler`] is implemented for.
pub mod shape {
    /// `|| …`
    #[derive(Debug)]
    pub struct Nothing;
    /// `|ctx| …`
    #[derive(Debug)]
    pub struct NoArgs;
    /// `|ctx, args: A| …`
    #[derive(Debug)]
    pub struct Typed;
    /// `|ctx, State(s)| …`
    #[derive(Debug)]
    pub struct StateOnly;
    /// `|ctx, State(s), args: A| …`
    #[derive(Debug)]
    pub struct Stateful;
    /// `|ctx, args: Args| …` returning raw JSON.
    #[derive(Debug)]
    pub struct Raw;
}

/// A result turned into the reply's JSON.
fn encoded<R: Serialize, E: Into<RtmError>>(
    result: Result<R, E>,
) -> Result<Box<RawValue>, RtmError> {
    let value = result.map_err(Into::into)?;
    serde_json::value::to_raw_value(&value)
        .map_err(|e| RtmError::internal(format!("result cannot be encoded: {e}")))
}

impl<F, Fut, R, E> Handler<(shape::Nothing, R, E)> for F
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<R, E>> + Send + 'static,
    R: Serialize + Send + 'static,
    E: Into<RtmError> + Send + 'static,
{
    fn into_erased(self) -> ErasedFunction {
        Arc::new(move |_ctx, _args| {
            let running = self();
            Box::pin(async move { encoded(running.await) })
        })
    }
}

impl<F, Fut, R, E> Handler<(shape::NoArgs, R, E)> for F
where
    F: Fn(CallContext) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<R, E>> + Send + 'static,
    R: Serialize + Send + 'static,
    E: Into<RtmError> + Send + 'static,
{
    fn into_erased(self) -> ErasedFunction {
        Arc::new(move |ctx, _args| {
            let running = self(ctx);
            Box::pin(async move { encoded(running.await) })
        })
    }
}

impl<F, Fut, A, R, E> Handler<(shape::Typed, A, R, E)> for F
where
    F: Fn(CallContext, A) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<R, E>> + Send + 'static,
    A: DeserializeOwned + Send + 'static,
    R: Serialize + Send + 'static,
    E: Into<RtmError> + Send + 'static,
{
    fn into_erased(self) -> ErasedFunction {
        Arc::new(move |ctx, args| {
            let parsed: A = match args.deserialize() {
                Ok(parsed) => parsed,
                Err(err) => return Box::pin(std::future::ready(Err(err))),
            };
            let running = self(ctx, parsed);
            Box::pin(async move { encoded(running.await) })
        })
    }
}

impl<F, Fut, S, R, E> Handler<(shape::StateOnly, S, R, E)> for F
where
    F: Fn(CallContext, State<S>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<R, E>> + Send + 'static,
    S: Clone + Send + Sync + 'static,
    R: Serialize + Send + 'static,
    E: Into<RtmError> + Send + 'static,
{
    fn into_erased(self) -> ErasedFunction {
        Arc::new(move |ctx, _args| {
            let state = match ctx.state::<S>() {
                Ok(state) => state.clone(),
                Err(err) => return Box::pin(std::future::ready(Err(err))),
            };
            let running = self(ctx, State(state));
            Box::pin(async move { encoded(running.await) })
        })
    }
}

impl<F, Fut, S, A, R, E> Handler<(shape::Stateful, S, A, R, E)> for F
where
    F: Fn(CallContext, State<S>, A) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<R, E>> + Send + 'static,
    S: Clone + Send + Sync + 'static,
    A: DeserializeOwned + Send + 'static,
    R: Serialize + Send + 'static,
    E: Into<RtmError> + Send + 'static,
{
    fn into_erased(self) -> ErasedFunction {
        Arc::new(move |ctx, args| {
            let state = match ctx.state::<S>() {
                Ok(state) => state.clone(),
                Err(err) => return Box::pin(std::future::ready(Err(err))),
            };
            let parsed: A = match args.deserialize() {
                Ok(parsed) => parsed,
                Err(err) => return Box::pin(std::future::ready(Err(err))),
            };
            let running = self(ctx, State(state), parsed);
            Box::pin(async move { encoded(running.await) })
        })
    }
}

impl<F, Fut, E> Handler<(shape::Raw, E)> for F
where
    F: Fn(CallContext, Args) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Box<RawValue>, E>> + Send + 'static,
    E: Into<RtmError> + Send + 'static,
{
    fn into_erased(self) -> ErasedFunction {
        Arc::new(move |ctx, args| {
            let running = self(ctx, args);
            Box::pin(async move { running.await.map_err(Into::into) })
        })
    }
}

/// The state of type `S` in `state`, or `rtm/internal` naming the type.
pub(crate) fn downcast_state<S: 'static>(
    state: Option<&(dyn Any + Send + Sync)>,
) -> Result<&S, RtmError> {
    state
        .and_then(|state| state.downcast_ref::<S>())
        .ok_or_else(|| {
            RtmError::internal(format!(
                "the server has no state of type {} (ServerBuilder::with_state)",
                std::any::type_name::<S>()
            ))
        })
}

/// What the subscribe authorizer is asked about: who wants which
/// (event, tags).
#[derive(Debug, Clone)]
pub struct SubscribeRequest {
    /// The connection asking (its identity, when authenticated).
    pub info: Arc<ConnInfo>,
    /// The event.
    pub event: String,
    /// The tags.
    pub tags: Vec<String>,
}

/// An authorizer's answer: `bool` (`false` denies with `rtm/forbidden`) or
/// `Result<(), RtmError>` (the error's code and message reach the client).
pub trait Decision: Send + 'static {
    /// `Ok` allows, `Err` denies.
    fn into_result(self) -> Result<(), RtmError>;
}

impl Decision for bool {
    fn into_result(self) -> Result<(), RtmError> {
        if self {
            Ok(())
        } else {
            Err(RtmError::new(ErrorCode::Forbidden, "subscription denied"))
        }
    }
}

impl Decision for Result<(), RtmError> {
    fn into_result(self) -> Result<(), RtmError> {
        self
    }
}

//! Server functions: typed handlers, erased once at registration.
//!
//! A handler is any `async` closure taking a [`CallContext`] and its
//! arguments (deserialized by serde from the `data` array: a tuple, a
//! `Vec<Value>`, …) and returning `Result<impl Serialize, impl Into<RtmError>>`.

use std::future::Future;
use std::sync::Arc;

use rtm_core::{Args, ConnInfo, RtmError};
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
}

/// The future of a running function: its JSON result or its error.
pub type FunctionFuture = BoxFuture<Result<Box<RawValue>, RtmError>>;

/// A registered function with its types erased.
pub type ErasedFunction = Arc<dyn Fn(CallContext, Args) -> FunctionFuture + Send + Sync>;

/// Erases a typed handler. Arguments that do not deserialize into `A` are
/// `rtm/bad-request`; a result that does not serialize is `rtm/internal`.
pub(crate) fn erase<F, Fut, A, R, E>(handler: F) -> ErasedFunction
where
    F: Fn(CallContext, A) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<R, E>> + Send + 'static,
    A: DeserializeOwned + Send + 'static,
    R: Serialize + Send + 'static,
    E: Into<RtmError> + Send + 'static,
{
    Arc::new(move |ctx, args| {
        let parsed: A = match args.deserialize() {
            Ok(parsed) => parsed,
            Err(err) => return Box::pin(std::future::ready(Err(err))),
        };
        let running = handler(ctx, parsed);
        Box::pin(async move {
            let value = running.await.map_err(Into::into)?;
            serde_json::value::to_raw_value(&value)
                .map_err(|e| RtmError::internal(format!("result cannot be encoded: {e}")))
        })
    })
}

/// Erases a raw handler: it gets the `data` array as it came ([`Args`], a
/// slice of the frame) and returns its result as JSON text, with no typed
/// (de)serialization in between.
pub(crate) fn erase_raw<F, Fut, E>(handler: F) -> ErasedFunction
where
    F: Fn(CallContext, Args) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Box<RawValue>, E>> + Send + 'static,
    E: Into<RtmError> + Send + 'static,
{
    Arc::new(move |ctx, args| {
        let running = handler(ctx, args);
        Box::pin(async move { running.await.map_err(Into::into) })
    })
}

//! The tokio client (waiting for the core client state machine).

/// Client options (placeholder until the client driver lands).
#[derive(Debug, Clone, Default)]
pub struct ClientOptions;

/// The RTM client (placeholder until the client driver lands).
#[derive(Debug)]
pub struct Client;

//! The client state machine (placeholder).

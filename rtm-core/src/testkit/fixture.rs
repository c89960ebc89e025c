//! The fixture functions (placeholder).

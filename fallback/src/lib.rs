//! Readiness poller and blocking pool behind coring's fallback backend.
//!
//! This crate knows nothing of coring's operations: it only reports readiness
//! and runs closures on a bounded thread pool.

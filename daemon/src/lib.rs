//! The flaked daemon as a library: configuration, the listening socket, the gRPC service and the serve
//! loop. `main.rs` only wires them together; keeping them here lets unit tests reach every piece.

// The evaluator facade's `Diagnostic` is large by design (message, position, trace, rendered text) and is
// the error type of every job the daemon runs; boxing it at each call would only add noise.
#![allow(clippy::result_large_err)]

pub mod builds;
pub mod config;
pub mod evalcache;
pub mod keeper;
pub mod listener;
pub mod notify;
pub mod search;
pub mod server;
pub mod service;
pub mod warm;
pub mod watch;

//! The flaked daemon as a library: configuration, the listening socket, the gRPC service and the serve
//! loop. `main.rs` only wires them together; keeping them here lets unit tests reach every piece.

pub mod builds;
pub mod config;
pub mod listener;
pub mod notify;
pub mod server;
pub mod service;
pub mod warm;
pub mod watch;

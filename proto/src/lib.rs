//! The flaked.v1 gRPC API shared by the daemon and its clients.
//!
//! It holds the code generated from `flaked/v1/flaked.proto` (the spec of the API, see docs/api.md), the
//! rule that decides where the daemon's socket lives (so that the daemon and every client agree on it
//! without configuration), and a connector that speaks gRPC over a Unix socket. It must stay free of any
//! evaluation logic: `flakectl` depends on it and must stay thin.

pub mod socket;

/// The generated messages, client and server of package `flaked.v1`.
pub mod v1 {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("flaked.v1");
}

pub use socket::{
    ConnectError, channel_over, connect, connect_stream, default_socket_path,
    default_socket_path_from,
};

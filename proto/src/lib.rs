//! The flaked.v1 gRPC API.

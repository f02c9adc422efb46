//! Compiles `flaked/v1/flaked.proto` with protox (a protobuf compiler written in Rust, so no system `protoc`
//! is needed) and generates the message types and the tonic client and server with tonic-prost-build.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "flaked/v1/flaked.proto";
    println!("cargo:rerun-if-changed={proto}");
    let fds = protox::compile([proto], ["."])?;
    tonic_prost_build::configure()
        // Maps iterate in key order (output names, settings), as Nix prints them.
        .btree_map(".")
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}

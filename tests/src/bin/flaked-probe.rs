//! A tiny gRPC client for the end-to-end tests: calls `Status` on the socket given as its argument and
//! prints `code=<gRPC code>` and the message. The tests run it as another uid to check that the daemon
//! answers PERMISSION_DENIED (flakectl prints only the message, in Nix's style).

fn main() -> std::process::ExitCode {
    let Some(socket) = std::env::args_os().nth(1) else {
        eprintln!("usage: flaked-probe SOCKET");
        return std::process::ExitCode::from(2);
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("runtime: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    rt.block_on(async move {
        let mut client = match flaked_proto::connect(std::path::Path::new(&socket)).await {
            Ok(c) => c,
            Err(e) => {
                println!("connect-error {e}");
                return std::process::ExitCode::from(1);
            }
        };
        match client.status(flaked_proto::v1::StatusRequest {}).await {
            Ok(r) => {
                println!("code=Ok pid={}", r.into_inner().pid);
                std::process::ExitCode::SUCCESS
            }
            Err(s) => {
                println!("code={:?} message={}", s.code(), s.message());
                std::process::ExitCode::from(1)
            }
        }
    })
}

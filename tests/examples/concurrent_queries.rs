//! Benchmark driver: CLIENTS concurrent gRPC clients (one connection each, as editors and
//! scripts keep) × PER_CLIENT warm `eval INSTALLABLE` queries against a running daemon; prints
//! errors, p50/p99 latency per query and throughput. Used by bench/flake-queries.sh.
//!
//! Usage: concurrent_queries SOCKET CWD INSTALLABLE CLIENTS PER_CLIENT

use std::path::PathBuf;
use std::time::Instant;

use flaked_proto::v1 as pb;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 6 {
        eprintln!("usage: concurrent_queries SOCKET CWD INSTALLABLE CLIENTS PER_CLIENT");
        std::process::exit(2);
    }
    let socket = PathBuf::from(&args[1]);
    let cwd = args[2].clone();
    let installable = args[3].clone();
    let (Ok(clients), Ok(per)) = (args[4].parse::<usize>(), args[5].parse::<usize>()) else {
        eprintln!("CLIENTS and PER_CLIENT must be numbers");
        std::process::exit(2);
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let started = Instant::now();
    let results: Vec<(Vec<f64>, usize, Option<Vec<u8>>)> = rt.block_on(async {
        let mut tasks = Vec::new();
        for _ in 0..clients {
            let socket = socket.clone();
            let cwd = cwd.clone();
            let installable = installable.clone();
            tasks.push(tokio::spawn(async move {
                let mut lat = Vec::with_capacity(per);
                let mut errors = 0;
                let mut answer = None;
                let Ok(mut client) = flaked_proto::connect(&socket).await else {
                    return (lat, per, answer);
                };
                for _ in 0..per {
                    let req = pb::EvalRequest {
                        context: Some(pb::ClientContext {
                            cwd: cwd.clone(),
                            ..Default::default()
                        }),
                        source: Some(pb::eval_request::Source::Installable(installable.clone())),
                        ..Default::default()
                    };
                    let t = Instant::now();
                    let r = client.eval(req).await;
                    lat.push(t.elapsed().as_secs_f64() * 1000.0);
                    match r.map(|r| r.into_inner().result) {
                        Ok(Some(pb::eval_response::Result::Stdout(out))) => {
                            if answer.as_ref().is_some_and(|a| *a != out) {
                                errors += 1;
                            }
                            answer = Some(out);
                        }
                        _ => errors += 1,
                    }
                }
                (lat, errors, answer)
            }));
        }
        let mut all = Vec::new();
        for t in tasks {
            all.push(t.await.unwrap_or_default());
        }
        all
    });
    let wall = started.elapsed().as_secs_f64();
    let mut lat: Vec<f64> = results.iter().flat_map(|r| r.0.iter().copied()).collect();
    let mut errors: usize = results.iter().map(|r| r.1).sum();
    let answers: Vec<&Vec<u8>> = results.iter().filter_map(|r| r.2.as_ref()).collect();
    if answers.windows(2).any(|w| w[0] != w[1]) {
        errors += 1;
    }
    lat.sort_by(f64::total_cmp);
    let pct = |p: f64| {
        if lat.is_empty() {
            return f64::NAN;
        }
        lat[((p / 100.0) * (lat.len() - 1) as f64).round() as usize]
    };
    println!(
        "{clients} clients x {per} warm queries: {errors} errors, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms, {:.0} queries/s",
        pct(50.0),
        pct(99.0),
        pct(100.0),
        lat.len() as f64 / wall
    );
    if errors > 0 {
        std::process::exit(1);
    }
}

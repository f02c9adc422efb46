//! Benchmark of the SQLite eval cache: write throughput through the batched
//! writer, and lookup latency for hits in pending rows and on disk.
//!
//! Usage: `cargo run --release -p flaked-cache --example evalcache_bench -- [PACKAGES]`
//! (default 50000 packages, each a derivation with three string children).

use std::io::Write;
use std::time::{Duration, Instant};

use flaked_cache::{CacheOptions, CachedValue, EvalCache, Lookup};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let n: usize = std::env::args()
        .nth(1)
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(50_000);
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("bench.sqlite");
    let mut out = std::io::stdout().lock();
    let names: Vec<String> = (0..n).map(|i| format!("pkg-{i:06}")).collect();

    let start = Instant::now();
    let cache = EvalCache::open_path(&path, CacheOptions::default())?;
    let root = cache.root();
    cache.set(&root, CachedValue::Attrs(names.clone().into()));
    for (i, name) in names.iter().enumerate() {
        let c = cache.set_child(&root, name, CachedValue::Derivation);
        cache.set_children(
            &c,
            vec![
                (
                    "type".into(),
                    CachedValue::String {
                        value: "derivation".into(),
                        context: vec![],
                    },
                ),
                (
                    "name".into(),
                    CachedValue::String {
                        value: format!("{name}-1.0"),
                        context: vec![],
                    },
                ),
                (
                    "drvPath".into(),
                    CachedValue::String {
                        value: format!("/nix/store/{i:032}-{name}.drv"),
                        context: vec![format!("=/nix/store/{i:032}-{name}.drv")],
                    },
                ),
            ],
        );
    }
    let issued = start.elapsed();
    cache.flush()?;
    let total = start.elapsed();
    let rows = cache.stats().rows_committed;
    writeln!(
        out,
        "write: {rows} rows issued in {issued:.2?} (request path), committed after {total:.2?} ({:.0} rows/s), {} batches",
        rows as f64 / total.as_secs_f64(),
        cache.stats().batches_committed
    )?;
    drop(cache);

    let cache = EvalCache::open_path(&path, CacheOptions::default())?;
    let mut times: Vec<Duration> = Vec::with_capacity(n);
    let mut state: u64 = 88172645463325252;
    for _ in 0..n.min(20_000) {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let name = &names[(state % n as u64) as usize];
        let t = Instant::now();
        let (found, _) = cache.lookup_path(&[name.as_str(), "drvPath"]);
        times.push(t.elapsed());
        if !matches!(found, Lookup::Hit(_, CachedValue::String { .. })) {
            return Err(format!("lookup of {name}.drvPath missed: {found:?}").into());
        }
    }
    times.sort();
    let pct = |p: f64| times[((times.len() as f64 * p) as usize).min(times.len() - 1)];
    writeln!(
        out,
        "lookup_path(pkg.drvPath) from disk, {} lookups: p50 {:.1?}, p99 {:.1?}, max {:.1?}",
        times.len(),
        pct(0.5),
        pct(0.99),
        pct(1.0)
    )?;
    let size = std::fs::metadata(&path)?.len();
    writeln!(out, "database size: {:.1} MiB", size as f64 / 1048576.0)?;
    Ok(())
}

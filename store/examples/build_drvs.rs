//! Store-level build driver for benchmarks (bench/build-graph.sh): adds `.drv` ATerm files
//! (as exported from another store) to a local store under `--root`, then builds the given
//! targets with a `BuildPool` and prints the wall time of the build phase.
//!
//! Usage: build_drvs --root DIR [-j N] [--sandbox-path P]... --drv FILE... --target DRVPATH...

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Instant;

use flaked_store::build::{BuildOptions, BuildPool, BuildSettings, CancelToken, DerivedPath};
use flaked_store::{Derivation, LocalStore, StoreDir};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (mut root, mut jobs, mut paths, mut drvs, mut targets) =
        (None, 2usize, Vec::new(), Vec::new(), Vec::new());
    let mut mode = "";
    while let Some(a) = args.next() {
        match a.as_str() {
            "--root" => root = args.next(),
            "-j" => jobs = args.next().ok_or("-j needs a value")?.parse()?,
            "--sandbox-path" => paths.push(args.next().ok_or("--sandbox-path needs a value")?),
            "--drv" => mode = "drv",
            "--target" => mode = "target",
            _ if mode == "drv" => drvs.push(a),
            _ if mode == "target" => targets.push(a),
            _ => return Err(format!("unexpected argument '{a}'").into()),
        }
    }
    let root = root.ok_or("--root is required")?;
    let store = Arc::new(LocalStore::open(StoreDir::new("/nix/store")?, &root)?);
    let sd = store.store_dir().clone();
    let mut parsed = BTreeMap::new();
    for f in &drvs {
        let base = std::path::Path::new(f)
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or("bad file name")?;
        let p = sd.parse(&format!("{}/{base}", sd.as_str()))?;
        let name = base[33..].trim_end_matches(".drv").to_owned();
        parsed.insert(p, Derivation::parse(&sd, &std::fs::read(f)?, &name)?);
    }
    let t_add = Instant::now();
    let mut added = BTreeSet::new();
    while added.len() < parsed.len() {
        let before = added.len();
        for (p, d) in &parsed {
            if !added.contains(p) && d.input_drvs.keys().all(|i| added.contains(i)) {
                store.add_derivation(d)?;
                added.insert(p.clone());
            }
        }
        if added.len() == before {
            return Err("derivation inputs missing from --drv".into());
        }
    }
    eprintln!(
        "added {} derivations in {} ms",
        added.len(),
        t_add.elapsed().as_millis()
    );
    let settings = BuildSettings {
        max_jobs: jobs,
        cores: 1,
        sandbox_paths: paths,
        ..BuildSettings::default()
    };
    let pool = BuildPool::new(store.clone(), settings);
    let targets: Vec<DerivedPath> = targets
        .iter()
        .map(|t| {
            Ok(DerivedPath {
                drv: sd.parse(t)?,
                outputs: BTreeSet::new(),
            })
        })
        .collect::<Result<_, Box<dyn std::error::Error>>>()?;
    let (tx, _rx) = std::sync::mpsc::channel();
    let t0 = Instant::now();
    let built = pool.build(&targets, &BuildOptions::default(), tx, CancelToken::new())?;
    let ms = t0.elapsed().as_millis();
    for outs in built.values() {
        for p in outs.values() {
            println!("{}", sd.print(p));
        }
    }
    eprintln!("built {} derivations in {ms} ms", pool.stats().builds);
    Ok(())
}

//! Equivalence with the reference Nix 2.26: every graph of store/tests/build/corpus.nix,
//! built by flaked's sandboxed builder, yields the output paths, NAR hashes, NAR sizes and
//! references that `nix-store --realise` (sandbox off) registered
//! (golden files from scripts/regen-build-goldens.sh).

#[path = "build/support.rs"]
mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use flaked_store::HashFormat;
use flaked_store::build::{BuildOptions, BuildPool};
use support::*;

fn check_case(case: &str) {
    let golden =
        Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/build/golden/{case}.json"));
    let g: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&golden).expect("golden file")).expect("json");
    let t = test_store();
    let drvs: BTreeMap<String, String> = g["drvs"]
        .as_object()
        .expect("drvs")
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().expect("aterm").to_owned()))
        .collect();
    add_drvs(&t.store, &drvs);
    let pool = BuildPool::new(t.store.clone(), settings(&t));
    let target = sp(&t.store, g["target"].as_str().expect("target"));
    let (r, events) = build(
        &pool,
        &[all_outputs(target.clone())],
        &BuildOptions::default(),
    );
    let built = r.unwrap_or_else(|e| panic!("{case}: {e}"));
    // The target's outputs are reported.
    let want: BTreeSet<String> = g["drvOutputs"][t.store.store_dir().print(&target)]
        .as_array()
        .expect("outputs")
        .iter()
        .map(|v| v.as_str().expect("path").to_owned())
        .collect();
    let got: BTreeSet<String> = built[&target]
        .values()
        .map(|p| t.store.store_dir().print(p))
        .collect();
    assert_eq!(got, want, "{case}: output paths");
    // Every output of the closure is registered exactly as the reference registered it.
    for (path, info) in g["paths"].as_object().expect("paths") {
        let p = sp(&t.store, path);
        let pi = t
            .store
            .query_path_info(&p)
            .expect("query")
            .unwrap_or_else(|| panic!("{case}: {path} not valid"));
        assert_eq!(
            pi.nar_hash.render(HashFormat::Nix32, true),
            info["narHash"].as_str().expect("hash"),
            "{case}: NAR hash of {path}"
        );
        assert_eq!(
            pi.nar_size,
            info["narSize"].as_u64().expect("size"),
            "{case}: NAR size of {path}"
        );
        let refs: BTreeSet<String> = pi
            .references
            .iter()
            .map(|r| t.store.store_dir().print(r))
            .collect();
        let want_refs: BTreeSet<String> = info["references"]
            .as_array()
            .expect("refs")
            .iter()
            .map(|v| v.as_str().expect("ref").to_owned())
            .collect();
        assert_eq!(refs, want_refs, "{case}: references of {path}");
        assert!(pi.ultimate, "{case}: built paths are ultimately trusted");
        assert!(pi.deriver.is_some(), "{case}: deriver recorded");
    }
    // Each derivation of the closure was built exactly once.
    let stats = pool.stats();
    assert_eq!(
        stats.builds as usize,
        drvs.len(),
        "{case}: one build per derivation"
    );
    assert!(stats.per_drv.values().all(|n| *n == 1));
    assert!(events.iter().any(
        |e| matches!(e, flaked_store::build::BuildEvent::Finished { drv, .. } if *drv == target)
    ));
    // A second request finds everything valid and builds nothing.
    let (r2, _) = build(
        &pool,
        &[all_outputs(target.clone())],
        &BuildOptions::default(),
    );
    assert_eq!(r2.expect("rebuild"), built);
    assert_eq!(
        pool.stats().builds as usize,
        drvs.len(),
        "{case}: valid outputs are not rebuilt"
    );
}

macro_rules! cases {
    ($($name:ident => $case:literal),* $(,)?) => {
        $( #[test] fn $name() { check_case($case) } )*
    };
}

cases! {
    chain => "chain",
    diamond => "diamond",
    graph50 => "graph50",
    multi => "multi",
    multi_user => "multiUser",
    tree => "tree",
    fod_flat => "fodFlat",
    fod_recursive => "fodRecursive",
    fod_user => "fodUser",
    pass_as_file => "passAsFile",
    structured => "structured",
    env_dump => "envDump",
    refs_graph => "refsGraph",
    refs_graph_structured => "refsGraphStructured",
}

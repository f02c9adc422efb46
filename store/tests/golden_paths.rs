//! Text, source and fixed-output store paths against the reference, in `/nix/store` and in
//! `/foo/store` (the store directory is part of every hash).

mod common;

use std::collections::BTreeSet;

use flaked_store::hash::{Hash, HashAlgo};
use flaked_store::local::compute_path;
use flaked_store::store_path::StoreReferences;
use flaked_store::{FileIngestionMethod, StoreDir};

fn check(label: &str) {
    let g = common::golden_json(&format!("paths-{label}.json"));
    let sd = StoreDir::new(g["storeDir"].as_str().expect("storeDir")).expect("valid store dir");
    let t = tempfile::tempdir().expect("tempdir");
    let root = t.path().join("fixture");
    common::build_fixture_tree(&root);

    for c in g["text"].as_array().expect("text") {
        let refs: BTreeSet<_> = c["refs"]
            .as_array()
            .expect("refs")
            .iter()
            .map(|r| sd.parse(r.as_str().expect("str")).expect("ref"))
            .collect();
        let p = sd
            .text_path_of(
                c["name"].as_str().expect("name"),
                c["contents"].as_str().expect("contents").as_bytes(),
                &refs,
            )
            .expect("text path");
        assert_eq!(sd.print(&p), c["path"].as_str().expect("path"), "{c}");
    }
    for c in g["source"].as_array().expect("source") {
        let src = match c["src"].as_str().expect("src") {
            "." => root.clone(),
            s => root.join(s),
        };
        // `builtins.path` resolves a top-level symlink before importing (the evaluator does
        // that); the store imports exactly what it is given.
        let src = std::fs::canonicalize(&src).expect("resolve");
        let method = if c["recursive"].as_bool().expect("bool") {
            FileIngestionMethod::Recursive
        } else {
            FileIngestionMethod::Flat
        };
        let (p, _) = compute_path(
            &sd,
            &src,
            c["name"].as_str().expect("name"),
            method,
            HashAlgo::Sha256,
            None,
        )
        .expect("path");
        assert_eq!(sd.print(&p), c["path"].as_str().expect("path"), "{c}");
    }
    for c in g["fixed"].as_array().expect("fixed") {
        let algo: HashAlgo = c["algo"].as_str().expect("algo").parse().expect("algo");
        let h = Hash::parse_any(c["hash"].as_str().expect("hash"), Some(algo)).expect("hash");
        let method = if c["mode"] == "recursive" {
            FileIngestionMethod::Recursive
        } else {
            FileIngestionMethod::Flat
        };
        let p = sd
            .make_fixed_output_path(
                method,
                &h,
                c["name"].as_str().expect("name"),
                &StoreReferences::default(),
            )
            .expect("path");
        assert_eq!(sd.print(&p), c["path"].as_str().expect("path"), "{c}");
    }
}

#[test]
fn default_store_dir() {
    check("default");
}

#[test]
fn other_store_dir() {
    check("foo-store");
}

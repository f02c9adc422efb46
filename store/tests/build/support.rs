//! Shared helpers for the build tests: a private store root per test (removed on drop, even
//! though store objects are read-only), `sandbox-paths` for host tools found with `ldd`, and
//! loading golden derivation graphs into a store.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc;

use flaked_store::build::{
    BuildError, BuildEvent, BuildOptions, BuildPool, BuildSettings, CancelToken, DerivedPath,
};
use flaked_store::{Derivation, LocalStore, StoreDir, StorePath};

pub struct TestStore {
    pub store: Arc<LocalStore>,
    pub root: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for TestStore {
    fn drop(&mut self) {
        let _ = flaked_store::local::make_writable(&self.root);
    }
}

pub fn test_store() -> TestStore {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().to_path_buf();
    let store = LocalStore::open(StoreDir::new("/nix/store").expect("store dir"), &root)
        .expect("open store");
    std::fs::create_dir_all(root.join("builds")).expect("mkdir builds");
    TestStore {
        store: Arc::new(store),
        root,
        _dir: dir,
    }
}

/// `sandbox-paths` making `bins` and the shared libraries they load (per `ldd`) visible at
/// the same paths inside the sandbox.
pub fn sandbox_paths(bins: &[&str]) -> Vec<String> {
    let mut out = BTreeSet::new();
    for b in bins {
        let real = std::fs::canonicalize(b).unwrap_or_else(|e| panic!("{b}: {e}"));
        out.insert(format!("{b}={}", real.display()));
        let ldd = std::process::Command::new("ldd")
            .arg(b)
            .output()
            .expect("running ldd");
        for line in String::from_utf8_lossy(&ldd.stdout).lines() {
            let lib = match line.split_once("=>") {
                Some((_, rest)) => rest.split_whitespace().next(),
                None => line.split_whitespace().next(),
            };
            if let Some(lib) = lib.filter(|l| l.starts_with('/')) {
                let real = std::fs::canonicalize(lib).unwrap_or_else(|e| panic!("{lib}: {e}"));
                out.insert(format!("{lib}={}", real.display()));
            }
        }
    }
    out.into_iter().collect()
}

pub const TOOLS: &[&str] = &[
    "/bin/sh",
    "/bin/bash",
    "/bin/mkdir",
    "/bin/chmod",
    "/bin/ln",
    "/bin/sleep",
    "/bin/cat",
];

pub fn settings(t: &TestStore) -> BuildSettings {
    BuildSettings {
        sandbox_paths: sandbox_paths(TOOLS),
        cores: 1,
        max_jobs: 2,
        build_dir: t.root.join("builds"),
        ..BuildSettings::default()
    }
}

pub fn sp(store: &LocalStore, s: &str) -> StorePath {
    store.store_dir().parse(s).expect("store path")
}

/// Add the given `.drv` ATerms (path → text) in dependency order; returns their paths.
pub fn add_drvs(store: &LocalStore, drvs: &BTreeMap<String, String>) -> Vec<StorePath> {
    let mut parsed: BTreeMap<StorePath, Derivation> = BTreeMap::new();
    for (p, text) in drvs {
        let path = sp(store, p);
        let name = path.name().strip_suffix(".drv").expect(".drv").to_owned();
        let d = Derivation::parse(store.store_dir(), text.as_bytes(), &name).expect("parse drv");
        parsed.insert(path, d);
    }
    let mut added: BTreeSet<StorePath> = BTreeSet::new();
    let mut order = Vec::new();
    while added.len() < parsed.len() {
        let before = added.len();
        for (p, d) in &parsed {
            if added.contains(p) || !d.input_drvs.keys().all(|i| added.contains(i)) {
                continue;
            }
            let written = store.add_derivation(d).expect("add derivation");
            assert_eq!(&written, p, "our .drv path equals the reference's");
            added.insert(p.clone());
            order.push(p.clone());
        }
        assert!(
            added.len() > before,
            "derivation graph has a cycle or a missing input"
        );
    }
    order
}

pub type Built = BTreeMap<StorePath, BTreeMap<String, StorePath>>;

/// Build with a fresh event channel; returns the result and all events.
pub fn build(
    pool: &BuildPool,
    targets: &[DerivedPath],
    opts: &BuildOptions,
) -> (Result<Built, BuildError>, Vec<BuildEvent>) {
    let (tx, rx) = mpsc::channel();
    let r = pool.build(targets, opts, tx, CancelToken::new());
    (r, rx.try_iter().collect())
}

pub fn all_outputs(drv: StorePath) -> DerivedPath {
    DerivedPath {
        drv,
        outputs: BTreeSet::new(),
    }
}

/// Whether any process on the host has `needle` in its command line.
pub fn process_running(needle: &str) -> bool {
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return false;
    };
    for e in rd.flatten() {
        if let Ok(c) = std::fs::read(e.path().join("cmdline"))
            && String::from_utf8_lossy(&c).contains(needle)
        {
            return true;
        }
    }
    false
}

pub fn exists(p: &Path) -> bool {
    p.symlink_metadata().is_ok()
}

/// Instantiate a derivation running `builder -c script` with extra env and inputs.
pub fn mk_drv(
    store: &LocalStore,
    name: &str,
    builder: &str,
    script: &str,
    env: &[(&str, &str)],
    inputs: &[&StorePath],
) -> StorePath {
    mk_drv_full(
        store,
        name,
        "x86_64-linux",
        builder,
        script,
        env,
        inputs,
        None,
    )
}

/// A fixed-output derivation with the given method (`flat`/`recursive`) and SRI/base16 hash.
pub fn mk_fod(store: &LocalStore, name: &str, script: &str, mode: &str, hash: &str) -> StorePath {
    mk_drv_full(
        store,
        name,
        "x86_64-linux",
        "/bin/sh",
        script,
        &[],
        &[],
        Some((mode, hash)),
    )
}

#[allow(clippy::too_many_arguments)]
pub fn mk_drv_full(
    store: &LocalStore,
    name: &str,
    system: &str,
    builder: &str,
    script: &str,
    env: &[(&str, &str)],
    inputs: &[&StorePath],
    fixed: Option<(&str, &str)>,
) -> StorePath {
    use flaked_store::DerivationOutput;
    let mut d = Derivation {
        name: name.to_owned(),
        platform: system.to_owned(),
        builder: builder.to_owned(),
        args: vec!["-c".into(), script.to_owned()],
        ..Derivation::default()
    };
    for (k, v) in [("name", name), ("builder", builder), ("system", system)] {
        d.env.insert(k.into(), v.into());
    }
    for (k, v) in env {
        d.env.insert((*k).into(), (*v).into());
    }
    for i in inputs {
        d.input_drvs
            .insert((*i).clone(), BTreeSet::from(["out".to_owned()]));
    }
    match fixed {
        None => {
            d.outputs.insert("out".into(), DerivationOutput::Deferred);
        }
        Some((mode, hash)) => {
            let (o, _) = flaked_store::fixed_output(hash, Some("sha256"), Some(mode), &["out"])
                .expect("fixed output");
            d.outputs.insert("out".into(), o);
            d.env.insert("outputHash".into(), hash.into());
            d.env.insert("outputHashMode".into(), mode.into());
            d.env.insert("outputHashAlgo".into(), "sha256".into());
        }
    }
    store.instantiate(d).expect("instantiate").0
}

/// The `out` path of a derivation in the store.
pub fn out_path(store: &LocalStore, drv: &StorePath) -> StorePath {
    let d = store.read_derivation(drv).expect("read drv");
    d.output_path(store.store_dir(), "out")
        .expect("output path")
        .expect("known")
}

pub fn read_out(store: &LocalStore, drv: &StorePath) -> String {
    std::fs::read_to_string(store.real_path(&out_path(store, drv))).expect("read output")
}

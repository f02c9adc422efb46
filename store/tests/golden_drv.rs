//! `.drv` bytes, derivation paths and output paths against `nix-instantiate`.
//!
//! Every golden `.drv` must parse and print back byte-identically and hash to its file name.
//! Then each derivation is rebuilt the way `builtins.derivation` does it (outputs blank,
//! fixed outputs from `outputHash`), its output paths are computed via
//! `hashDerivationModulo` over the golden input derivations, and the result must equal the
//! reference's `.drv` bytes, drvPath and outPaths.

mod common;

use std::collections::{BTreeMap, HashMap};

use flaked_store::derivation::{DerivationOutput, DrvHashCache, hash_derivation_modulo};
use flaked_store::hash::{Hash, HashAlgo};
use flaked_store::{ContentAddress, ContentAddressMethod, Derivation, StoreDir, StorePath};

fn golden_drvs(sd: &StoreDir) -> HashMap<StorePath, (Vec<u8>, Derivation)> {
    let mut out = HashMap::new();
    for e in std::fs::read_dir(common::golden("drv")).expect("golden drv dir") {
        let e = e.expect("entry");
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.ends_with(".drv") {
            continue;
        }
        let path = StorePath::from_base_name(&name).expect("drv file name is a store path");
        let bytes = std::fs::read(e.path()).expect("read");
        let drv =
            Derivation::parse(sd, &bytes, path.name().trim_end_matches(".drv")).expect("parses");
        out.insert(path, (bytes, drv));
    }
    out
}

#[test]
fn parse_print_and_drv_path_round_trip() {
    let sd = StoreDir::default();
    let drvs = golden_drvs(&sd);
    assert!(drvs.len() >= 40, "only {} golden drvs", drvs.len());
    for (path, (bytes, drv)) in &drvs {
        assert_eq!(
            drv.to_aterm(&sd).expect("print").as_bytes(),
            bytes.as_slice(),
            "{path}"
        );
        assert_eq!(&drv.drv_path(&sd).expect("drv path"), path);
    }
}

/// Rebuild a derivation from `nix derivation show` JSON as the `derivation` builtin would
/// before computing outputs.
fn from_show(sd: &StoreDir, j: &serde_json::Value) -> Derivation {
    let s = |v: &serde_json::Value| v.as_str().expect("string").to_owned();
    let mut d = Derivation {
        name: s(&j["name"]),
        platform: s(&j["system"]),
        builder: s(&j["builder"]),
        args: j["args"].as_array().expect("args").iter().map(s).collect(),
        ..Default::default()
    };
    for (k, v) in j["env"].as_object().expect("env") {
        d.env.insert(k.clone(), s(v));
    }
    for p in j["inputSrcs"].as_array().expect("srcs") {
        d.input_srcs
            .insert(sd.parse(p.as_str().expect("str")).expect("src path"));
    }
    for (p, v) in j["inputDrvs"].as_object().expect("inputDrvs") {
        let outs = v["outputs"]
            .as_array()
            .expect("outputs")
            .iter()
            .map(s)
            .collect();
        d.input_drvs.insert(sd.parse(p).expect("drv path"), outs);
    }
    for (name, o) in j["outputs"].as_object().expect("outputs") {
        let out = match o.get("hash") {
            Some(h) => {
                let algo: HashAlgo = o["hashAlgo"]
                    .as_str()
                    .expect("algo")
                    .parse()
                    .expect("known algo");
                let method = match o["method"].as_str().expect("method") {
                    "nar" => ContentAddressMethod::Recursive,
                    "flat" => ContentAddressMethod::Flat,
                    "text" => ContentAddressMethod::Text,
                    m => panic!("unknown method {m}"),
                };
                let hash = Hash::parse_any(h.as_str().expect("hash"), Some(algo)).expect("hash");
                DerivationOutput::Fixed(ContentAddress { method, hash })
            }
            None => {
                // The builtin does not know the path yet; blank the env var too.
                d.env.insert(name.clone(), String::new());
                DerivationOutput::Deferred
            }
        };
        d.outputs.insert(name.clone(), out);
    }
    d
}

#[test]
fn instantiate_like_the_derivation_builtin() {
    let sd = StoreDir::default();
    let drvs = golden_drvs(&sd);
    let source: HashMap<StorePath, Derivation> = drvs
        .iter()
        .map(|(p, (_, d))| (p.clone(), d.clone()))
        .collect();
    let show = common::golden_json("drv/show.json");
    let show = show.as_object().expect("object");
    let mut n = 0;
    for (drv_path, j) in show {
        let expected_path = sd.parse(drv_path).expect("drv path");
        let mut d = from_show(&sd, j);
        // A fresh cache per derivation makes every case hash its whole input graph.
        let cache = DrvHashCache::new();
        d.fill_output_paths(&sd, &source, &cache).expect("outputs");
        let (bytes, _) = &drvs[&expected_path];
        assert_eq!(
            d.to_aterm(&sd).expect("print"),
            String::from_utf8_lossy(bytes),
            "{drv_path}"
        );
        assert_eq!(d.drv_path(&sd).expect("path"), expected_path);
        for (name, o) in j["outputs"].as_object().expect("outputs") {
            let p = d
                .output_path(&sd, name)
                .expect("output path")
                .expect("known");
            assert_eq!(sd.print(&p), o["path"].as_str().expect("path"));
        }
        n += 1;
    }
    assert!(n >= 40);

    let cases = common::golden_json("drv/cases.json");
    for (case, c) in cases.as_object().expect("object") {
        let p = sd
            .parse(c["drvPath"].as_str().expect("drvPath"))
            .expect("path");
        let (_, d) = &drvs[&p];
        let outs: BTreeMap<String, String> = d
            .outputs
            .keys()
            .map(|k| {
                (
                    k.clone(),
                    sd.print(&d.output_path(&sd, k).expect("path").expect("known")),
                )
            })
            .collect();
        let expected: BTreeMap<String, String> = c["outputs"]
            .as_object()
            .expect("outputs")
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().expect("str").to_owned()))
            .collect();
        assert_eq!(outs, expected, "{case}");
    }
}

#[test]
fn deep_graph_is_hashed_once_per_derivation() {
    let sd = StoreDir::default();
    let drvs = golden_drvs(&sd);
    let source: HashMap<StorePath, Derivation> = drvs
        .iter()
        .map(|(p, (_, d))| (p.clone(), d.clone()))
        .collect();
    let cache = DrvHashCache::new();
    let top = drvs
        .keys()
        .find(|p| p.name() == "chain-30.drv")
        .expect("chain-30 golden");
    let h = hash_derivation_modulo(&sd, &drvs[top].1, false, &source, &cache).expect("hash");
    // chain-29 … chain-1, simple and fo-rec: every input in the closure memoised exactly once.
    assert_eq!(cache.len(), 31);
    let again = hash_derivation_modulo(
        &sd,
        &drvs[top].1,
        false,
        &flaked_store::derivation::NoDrvSource,
        &cache,
    )
    .expect("fully memoised");
    assert_eq!(h, again);
}

#[test]
fn truncated_and_corrupted_drvs_are_errors_not_panics() {
    let sd = StoreDir::default();
    let drvs = golden_drvs(&sd);
    let (_, (bytes, _)) = drvs
        .iter()
        .find(|(p, _)| p.name() == "escapes.drv")
        .expect("escapes golden");
    for cut in 0..bytes.len() {
        assert!(
            Derivation::parse(&sd, &bytes[..cut], "escapes").is_err(),
            "prefix of {cut} bytes parsed"
        );
    }
    let mut flipped = bytes.clone();
    for i in 0..flipped.len() {
        let orig = flipped[i];
        flipped[i] = b'"';
        let _ = Derivation::parse(&sd, &flipped, "escapes");
        flipped[i] = orig;
    }
}

/// Read-only instantiation: each derivation is instantiated in dependency order with only the
/// memo (no derivation source at all), as an evaluator in read-only mode does.
#[test]
fn instantiate_pure_uses_only_the_memo() {
    use flaked_store::derivation::{NoDrvSource, instantiate_pure};
    let sd = StoreDir::default();
    let show = common::golden_json("drv/show.json");
    let show = show.as_object().expect("object");
    let cache = DrvHashCache::new();
    let mut done = std::collections::BTreeSet::new();
    // Repeatedly instantiate every derivation whose inputs are all done (topological order).
    while done.len() < show.len() {
        let before = done.len();
        for (drv_path, j) in show {
            if done.contains(drv_path) {
                continue;
            }
            let inputs_done = j["inputDrvs"]
                .as_object()
                .expect("inputs")
                .keys()
                .all(|k| done.contains(k));
            if !inputs_done {
                continue;
            }
            let (p, _) = instantiate_pure(from_show(&sd, j), &sd, &NoDrvSource, &cache)
                .expect("instantiate");
            assert_eq!(&sd.print(&p), drv_path);
            done.insert(drv_path.clone());
        }
        assert!(
            done.len() > before,
            "no progress: dependency cycle in goldens?"
        );
    }
    assert_eq!(cache.len(), show.len());
}

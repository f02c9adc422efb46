//! NAR bytes, NAR hashes and flat hashes against `nix-store --dump` and `nix-hash`.

mod common;

use std::path::Path;

use flaked_store::hash::{HashAlgo, HashFormat};
use flaked_store::nar;

fn dump(p: &Path) -> Vec<u8> {
    let mut v = Vec::new();
    nar::dump_path_to(p, &mut v).expect("dump");
    v
}

#[test]
fn nar_bytes_match_nix_store_dump() {
    let t = tempfile::tempdir().expect("tempdir");
    let root = t.path().join("tree");
    common::build_fixture_tree(&root);
    assert!(
        dump(&root) == common::read_golden("nar/tree.nar"),
        "tree NAR differs"
    );
    for (obj, golden) in [
        ("hello.txt", "nar/hello.nar"),
        ("script.sh", "nar/script.nar"),
        ("link", "nar/link.nar"),
        ("empty", "nar/empty.nar"),
        ("empty-dir", "nar/empty-dir.nar"),
    ] {
        assert!(
            dump(&root.join(obj)) == common::read_golden(golden),
            "{obj} NAR differs"
        );
    }
}

#[test]
fn golden_nar_restores_and_redumps_identically() {
    let t = tempfile::tempdir().expect("tempdir");
    for g in [
        "nar/tree.nar",
        "nar/hello.nar",
        "nar/script.nar",
        "nar/link.nar",
        "nar/empty.nar",
        "nar/empty-dir.nar",
    ] {
        let bytes = common::read_golden(g);
        let out = t.path().join(g.replace('/', "_"));
        nar::restore_nar(&mut bytes.as_slice(), &out).expect("restore");
        assert!(dump(&out) == bytes, "{g} does not round-trip");
        let (h, n) = nar::nar_hash_reader(&mut bytes.as_slice()).expect("parse");
        assert_eq!((h, n), nar::nar_hash_path(&out).expect("hash"));
    }
}

#[test]
fn hashes_match_nix_hash() {
    let t = tempfile::tempdir().expect("tempdir");
    let root = t.path().join("tree");
    common::build_fixture_tree(&root);
    let text = String::from_utf8(common::read_golden("nar/hashes.tsv")).expect("utf8");
    let mut n = 0;
    for line in text.lines() {
        let f: Vec<&str> = line.split('\t').collect();
        let [obj, mode, algo, format, expected] = f[..] else {
            panic!("bad line {line:?}")
        };
        let p = if obj == "." {
            root.clone()
        } else {
            root.join(obj)
        };
        if mode == "narsize" {
            let (_, size) = nar::nar_hash_path(&p).expect("hash");
            assert_eq!(size.to_string(), expected, "{obj}");
        } else {
            let algo: HashAlgo = algo.parse().expect("algo");
            let h = nar::hash_path(&p, mode == "recursive", algo).expect("hash");
            let got = match format {
                "base16" => h.to_base16(),
                "nix32" => h.to_nix32(),
                "sri" => h.render(HashFormat::Sri, true),
                other => panic!("unknown format {other}"),
            };
            assert_eq!(got, expected, "{obj} {mode} {algo}");
        }
        n += 1;
    }
    assert!(n > 60);
}

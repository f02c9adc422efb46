//! flake.lock: lock files written by the reference Nix (`nix flake lock` on the fixture flakes
//! of scripts/flake-fixtures.sh, collected by scripts/regen-flake-goldens.sh) must round-trip
//! byte for byte, and broken ones must give clear errors.

use flaked_store::fetchers::lockfile::{Edge, parse_input_path};
use flaked_store::fetchers::{FlakeRef, InputSettings, LockFile, LockedNode, ParseOptions};

fn lock_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/flake-golden/locks")
}

#[test]
fn nix_lock_files_round_trip_byte_identically() {
    let mut n = 0;
    for e in std::fs::read_dir(lock_dir()).expect("golden lock directory exists") {
        let p = e.expect("dir entry").path();
        let text = std::fs::read_to_string(&p).expect("readable");
        let lf = LockFile::parse(&text, &p.display().to_string(), &InputSettings::default())
            .unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        assert_eq!(
            lf.to_file_string(),
            text,
            "{} does not round-trip",
            p.display()
        );
        lf.check().expect("follows are valid");
        assert!(lf.is_unlocked(&InputSettings::default()).is_none());
        n += 1;
    }
    assert!(n >= 3, "expected several golden lock files, found {n}");
}

#[test]
fn golden_lock_has_follows_flake_false_and_git_nodes() {
    let text = std::fs::read_to_string(lock_dir().join("top.lock")).expect("top.lock");
    let lf = LockFile::parse(&text, "top.lock", &InputSettings::default()).expect("parses");
    let mid = lf
        .find_input(&["mid".into()])
        .expect("no cycle")
        .expect("mid exists");
    assert_eq!(
        lf.nodes[mid].inputs.get("leaf"),
        Some(&Edge::Follows(vec!["leaf".into()]))
    );
    let via_follows = lf
        .find_input(&["mid".into(), "leaf".into()])
        .expect("ok")
        .expect("found");
    assert_eq!(
        Some(via_follows),
        lf.find_input(&["leaf".into()]).expect("ok")
    );
    let data = lf
        .find_input(&["mid".into(), "data".into()])
        .expect("ok")
        .expect("found");
    assert!(
        !lf.nodes[data]
            .locked
            .as_ref()
            .expect("locked node")
            .is_flake
    );
    let repo = lf.find_input(&["repo".into()]).expect("ok").expect("found");
    let locked = &lf.nodes[repo].locked.as_ref().expect("locked").locked;
    assert_eq!(locked.input.rev_count(), Some(3));
    assert!(locked.input.is_final);
}

#[test]
fn building_a_lock_file_gives_nix_layout() {
    let opts = ParseOptions {
        allow_missing: true,
        ..Default::default()
    };
    let original = FlakeRef::parse("github:NixOS/nixpkgs/nixos-23.05", &opts).expect("ref");
    let mut locked = FlakeRef::parse(
        "github:NixOS/nixpkgs/a3a3dda3bacf61e8a39258a0ed9c924eeca8e293?narHash=sha256-qeilMh%2BDT89tMMRVreud/ifOJQdrLSFif6oye/Tmfcg%3D",
        &opts,
    )
    .expect("ref");
    if let flaked_store::fetchers::InputKind::Forge(f) = &mut locked.input.kind {
        f.last_modified = Some(1700000000);
    }
    locked.input.is_final = true;
    let mut lf = LockFile::new();
    let a = lf.add_node(LockedNode {
        locked: locked.clone(),
        original: original.clone(),
        is_flake: true,
        parent: None,
    });
    let b = lf.add_node(LockedNode {
        locked,
        original,
        is_flake: false,
        parent: None,
    });
    lf.set_input(LockFile::ROOT, "nixpkgs", Edge::Node(a));
    lf.set_input(LockFile::ROOT, "src", Edge::Node(b));
    lf.set_input(a, "nixpkgs", Edge::Node(b));
    lf.set_input(
        LockFile::ROOT,
        "other",
        Edge::Follows(vec!["nixpkgs".into()]),
    );
    let expected = r#"{
  "nodes": {
    "nixpkgs": {
      "inputs": {
        "nixpkgs": "nixpkgs_2"
      },
      "locked": {
        "lastModified": 1700000000,
        "narHash": "sha256-qeilMh+DT89tMMRVreud/ifOJQdrLSFif6oye/Tmfcg=",
        "owner": "NixOS",
        "repo": "nixpkgs",
        "rev": "a3a3dda3bacf61e8a39258a0ed9c924eeca8e293",
        "type": "github"
      },
      "original": {
        "owner": "NixOS",
        "ref": "nixos-23.05",
        "repo": "nixpkgs",
        "type": "github"
      }
    },
    "nixpkgs_2": {
      "flake": false,
      "locked": {
        "lastModified": 1700000000,
        "narHash": "sha256-qeilMh+DT89tMMRVreud/ifOJQdrLSFif6oye/Tmfcg=",
        "owner": "NixOS",
        "repo": "nixpkgs",
        "rev": "a3a3dda3bacf61e8a39258a0ed9c924eeca8e293",
        "type": "github"
      },
      "original": {
        "owner": "NixOS",
        "ref": "nixos-23.05",
        "repo": "nixpkgs",
        "type": "github"
      }
    },
    "root": {
      "inputs": {
        "nixpkgs": "nixpkgs",
        "other": [
          "nixpkgs"
        ],
        "src": "nixpkgs_2"
      }
    }
  },
  "root": "root",
  "version": 7
}
"#;
    assert_eq!(lf.to_file_string(), expected);
    let back = LockFile::parse(expected, "x", &InputSettings::default()).expect("parses");
    assert_eq!(back.to_file_string(), expected);
}

#[test]
fn corrupt_lock_files_are_clear_errors() {
    let s = InputSettings::default();
    let err = |t: &str| {
        LockFile::parse(t, "/x/flake.lock", &s)
            .expect_err("must fail")
            .to_string()
    };
    assert!(err("{").starts_with("cannot parse lock file '/x/flake.lock'"));
    assert_eq!(
        err(r#"{"version": 4, "nodes": {}, "root": "root"}"#),
        "lock file '/x/flake.lock' has unsupported version 4"
    );
    assert_eq!(
        err(r#"{"nodes": {}, "root": "root"}"#),
        "lock file '/x/flake.lock' has unsupported version 0"
    );
    assert_eq!(
        err(r#"{"version": 7, "root": "root", "nodes": {"root": {"inputs": {"a": "missing"}}}}"#),
        "lock file references missing node 'missing'"
    );
    assert_eq!(
        err(
            r#"{"version": 7, "root": "root", "nodes": {"root": {"inputs": {"a": "a"}}, "a": {"original": {"type": "indirect", "id": "a"}}}}"#
        ),
        "attribute 'locked' missing in lock file"
    );
    assert_eq!(
        err(
            r#"{"version": 7, "root": "root", "nodes": {"root": {"inputs": {"a": "a"}}, "a": {"locked": {"type": "github", "owner": "o", "repo": "r"}, "original": {"type": "indirect", "id": "a"}}}}"#
        ),
        "Lock file contains unlocked input '{\"owner\":\"o\",\"repo\":\"r\",\"type\":\"github\"}'. Use '--allow-dirty-locks' to accept this lock file."
    );
    assert_eq!(
        err(
            r#"{"version": 7, "root": "root", "nodes": {"root": {"inputs": {"a": "a"}}, "a": {"inputs": {"r": "root"}, "locked": {"type": "path", "path": "/p", "narHash": "sha256-qeilMh+DT89tMMRVreud/ifOJQdrLSFif6oye/Tmfcg="}, "original": {"type": "path", "path": "/p"}}}}"#
        ),
        "lock file contains cycle to root node"
    );
    assert_eq!(
        err(
            r#"{"version": 7, "root": "root", "nodes": {"root": {"inputs": {"a": "a"}}, "a": {"locked": {"type": "path", "path": "/p", "bogus": 1}, "original": {"type": "path", "path": "/p"}}}}"#
        ),
        "input attribute 'bogus' not supported by scheme 'path'"
    );
}

#[test]
fn follow_cycles_and_dangling_follows_are_detected() {
    let text = r#"{"version": 7, "root": "root", "nodes": {"root": {"inputs": {"a": ["b"], "b": ["a"], "c": ["nope"]}}}}"#;
    let lf = LockFile::parse(text, "x", &InputSettings::default()).expect("parses");
    let e = lf.find_input(&["a".into()]).expect_err("cycle");
    assert_eq!(e.to_string(), "follow cycle detected: [a -> b -> a]");
    let lf2 = LockFile::parse(
        r#"{"version": 7, "root": "root", "nodes": {"root": {"inputs": {"c": ["nope"]}}}}"#,
        "x",
        &InputSettings::default(),
    )
    .expect("parses");
    assert_eq!(
        lf2.check().expect_err("dangling").to_string(),
        "input 'c' follows a non-existent input 'nope'"
    );
    assert_eq!(
        parse_input_path("a/b").expect("valid"),
        vec!["a".to_owned(), "b".to_owned()]
    );
    assert_eq!(
        parse_input_path("a/9").expect_err("invalid").to_string(),
        "invalid flake input path element '9'"
    );
}

#[test]
fn diff_reports_changes() {
    let text = std::fs::read_to_string(lock_dir().join("top.lock")).expect("top.lock");
    let old = LockFile::parse(&text, "top.lock", &InputSettings::default()).expect("parses");
    let mut new = old.clone();
    new.nodes[LockFile::ROOT].inputs.remove("tarball");
    new.set_input(LockFile::ROOT, "extra", Edge::Follows(vec!["leaf".into()]));
    let d = LockFile::diff(&old, &new);
    assert!(
        d.contains("Added input 'extra':\u{1b}[0m\n    follows 'leaf'\n"),
        "{d}"
    );
    assert!(d.contains("Removed input 'tarball'"), "{d}");
    assert_eq!(LockFile::diff(&old, &old), "");
}

#[test]
fn relative_path_inputs_keep_their_parent() {
    let text = std::fs::read_to_string(lock_dir().join("rel.lock")).expect("rel.lock");
    let lf = LockFile::parse(&text, "rel.lock", &InputSettings::default()).expect("parses");
    let sub = lf.find_input(&["sub".into()]).expect("ok").expect("found");
    let node = lf.nodes[sub].locked.as_ref().expect("locked");
    assert_eq!(node.parent, Some(vec![]));
    assert_eq!(node.locked.input.is_relative(), Some("./sub"));
    // A relative path is not "unlocked" (it is locked by its parent).
    assert!(lf.is_unlocked(&InputSettings::default()).is_none());
    assert_eq!(lf.to_file_string(), text);
}

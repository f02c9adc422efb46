//! Flake references against the reference Nix: every line of flake-golden/flakerefs.txt was
//! parsed with `builtins.parseFlakeRef` and printed with `builtins.flakeRefToString` by
//! scripts/regen-flake-goldens.sh; we must produce the same attributes, string or error.

use flaked_store::fetchers::attrs::{attrs_to_json, json_to_attrs};
use flaked_store::fetchers::{FlakeRef, ParseOptions};
use serde_json::Value;

fn golden(name: &str) -> Vec<Value> {
    let p = format!("{}/tests/flake-golden/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&p)
        .expect("golden file exists (run scripts/regen-flake-goldens.sh)");
    serde_json::from_str(&text).expect("golden file is JSON")
}

/// parseFlakeRef + flakeRefToString as the builtins do (no base directory).
fn parse_and_print(s: &str) -> Result<(Value, String), String> {
    let r = FlakeRef::parse(s, &ParseOptions::default()).map_err(|e| e.to_string())?;
    let printed = r.to_url().map_err(|e| e.to_string())?.to_string();
    Ok((attrs_to_json(&r.to_attrs()), printed))
}

#[test]
fn flakerefs_match_nix() {
    let mut failures = Vec::new();
    let cases = golden("flakerefs.json");
    assert!(cases.len() > 50);
    for c in &cases {
        let r = c["ref"].as_str().expect("ref is a string");
        let ours = parse_and_print(r);
        match (c.get("error"), ours) {
            (Some(e), Err(ours)) => {
                if e.as_str() != Some(ours.as_str()) {
                    failures.push(format!("{r}: error {ours:?}, Nix: {e}"));
                }
            }
            (Some(e), Ok((_, s))) => failures.push(format!("{r}: parsed as {s}, Nix fails: {e}")),
            (None, Err(ours)) => {
                failures.push(format!("{r}: we fail: {ours}, Nix: {}", c["string"]))
            }
            (None, Ok((attrs, s))) => {
                if attrs != c["attrs"] {
                    failures.push(format!("{r}: attrs {attrs}, Nix: {}", c["attrs"]));
                }
                if s != c["string"].as_str().unwrap_or_default() {
                    failures.push(format!("{r}: string {s}, Nix: {}", c["string"]));
                }
                // Printing is canonical: the printed form parses back to the same attributes.
                if let Ok((attrs2, s2)) = parse_and_print(&s) {
                    if s2 != s {
                        failures.push(format!("{r}: reprinted as {s2}, first {s}"));
                    }
                    let _ = attrs2;
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn attribute_forms_match_nix() {
    let mut failures = Vec::new();
    for c in &golden("flakeref-attrs.json") {
        let attrs = json_to_attrs(&c["attrs"]).expect("golden attrs are attrs");
        let ours = FlakeRef::from_attrs(&attrs)
            .and_then(|r| r.to_url().map(|u| u.to_string()))
            .map_err(|e| e.to_string());
        match (c.get("error"), ours) {
            (Some(e), Err(o)) if e.as_str() == Some(o.as_str()) => {}
            (None, Ok(s)) if c["string"].as_str() == Some(s.as_str()) => {}
            (e, o) => failures.push(format!(
                "{}: ours {o:?}, Nix {:?} / {}",
                c["attrs"], e, c["string"]
            )),
        }
        // Attribute sets round-trip through the typed representation (Git URLs are
        // normalised on the way in, as in Nix, so compare after one round).
        if let Ok(r) = FlakeRef::from_attrs(&attrs) {
            let again = FlakeRef::from_attrs(&r.to_attrs()).expect("reparses");
            assert_eq!(again, r, "round trip of {}", c["attrs"]);
            if c["attrs"]["type"] != "git" {
                assert_eq!(
                    r.to_attrs(),
                    attrs,
                    "attributes preserved for {}",
                    c["attrs"]
                );
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn fragments_are_split() {
    let (r, frag) = FlakeRef::parse_with_fragment(
        "github:NixOS/nixpkgs/nixos-23.05#legacyPackages.x86_64-linux.hello",
        &ParseOptions::default(),
    )
    .expect("valid reference");
    assert_eq!(frag, "legacyPackages.x86_64-linux.hello");
    assert_eq!(r.to_string(), "github:NixOS/nixpkgs/nixos-23.05");
    let (r, frag) =
        FlakeRef::parse_with_fragment("nixpkgs#hello", &ParseOptions::default()).expect("valid");
    assert_eq!(
        (r.to_string().as_str(), frag.as_str()),
        ("flake:nixpkgs", "hello")
    );
    let (r, frag) = FlakeRef::parse_with_fragment("/foo/bar?dir=x#a%20b", &ParseOptions::default())
        .expect("valid");
    assert_eq!(
        (r.to_string().as_str(), frag.as_str()),
        ("path:/foo/bar?dir=x", "a b")
    );
}

#[test]
fn relative_paths_resolve_against_cwd_and_git_roots() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path();
    // A plain directory with a flake.
    std::fs::create_dir_all(root.join("plain/sub")).expect("mkdir");
    std::fs::write(root.join("plain/flake.nix"), "{ outputs = _: {}; }").expect("write");
    let opts = ParseOptions {
        base_dir: Some(root.join("plain")),
        ..Default::default()
    };
    let r = FlakeRef::parse(".", &opts).expect("`.` is a flake");
    assert_eq!(r.to_string(), format!("path:{}/plain", root.display()));
    // Searching upwards from a subdirectory.
    let opts = ParseOptions {
        base_dir: Some(root.join("plain/sub")),
        ..Default::default()
    };
    let r = FlakeRef::parse(".", &opts).expect("found upwards");
    assert_eq!(r.to_string(), format!("path:{}/plain", root.display()));
    // `flake.nix` itself is accepted (with a warning).
    let opts = ParseOptions {
        base_dir: Some(root.to_path_buf()),
        ..Default::default()
    };
    let r = FlakeRef::parse("./plain/flake.nix", &opts).expect("flake.nix means its directory");
    assert_eq!(r.to_string(), format!("path:{}/plain", root.display()));
    // Inside a Git repository: git+file with dir=.
    std::fs::create_dir_all(root.join("repo/.git")).expect("mkdir");
    std::fs::create_dir_all(root.join("repo/nested")).expect("mkdir");
    std::fs::write(root.join("repo/nested/flake.nix"), "{}").expect("write");
    let opts = ParseOptions {
        base_dir: Some(root.join("repo")),
        ..Default::default()
    };
    let r = FlakeRef::parse("./nested", &opts).expect("flake in repo");
    assert_eq!(
        r.to_string(),
        format!("git+file://{}/repo?dir=nested", root.display())
    );
    assert_eq!(r.subdir, "nested");
    // No flake.nix up to the repository root.
    std::fs::create_dir_all(root.join("repo/empty")).expect("mkdir");
    let opts = ParseOptions {
        base_dir: Some(root.join("repo/empty")),
        ..Default::default()
    };
    let e = FlakeRef::parse(".", &opts).expect_err("no flake");
    assert_eq!(
        e.to_string(),
        format!(
            "path '{}/repo' is not part of a flake (neither it nor its parent directories contain a 'flake.nix' file)",
            root.display()
        )
    );
    // A file that is not flake.nix.
    let opts = ParseOptions {
        base_dir: Some(root.to_path_buf()),
        ..Default::default()
    };
    let e = FlakeRef::parse("./plain/flake.nix/..", &opts);
    assert!(e.is_ok(), "canonicalised lexically: {e:?}");
    std::fs::write(root.join("file"), "").expect("write");
    let e = FlakeRef::parse("./file", &opts).expect_err("not a directory");
    assert_eq!(
        e.to_string(),
        format!(
            "path '{}/file' is not a flake (because it's not a directory)",
            root.display()
        )
    );
    // `path:` URLs with relative paths are made absolute too.
    let opts = ParseOptions {
        base_dir: Some(root.to_path_buf()),
        allow_missing: true,
        ..Default::default()
    };
    let r = FlakeRef::parse("path:plain", &opts).expect("relative path: URL");
    assert_eq!(r.to_string(), format!("path:{}/plain", root.display()));
    // Flake inputs keep relative paths.
    let opts = ParseOptions {
        preserve_relative_paths: true,
        allow_missing: true,
        ..Default::default()
    };
    let r = FlakeRef::parse("./sub", &opts).expect("relative input");
    assert_eq!(r.input.is_relative(), Some("./sub"));
}

#[test]
fn flake_input_attribute_sets() {
    use flaked_store::fetchers::attrs::{Attr, Attrs};
    let a = |p: &[(&str, Attr)]| -> Attrs {
        p.iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect()
    };
    let s = |x: &str| Attr::String(x.to_owned());
    let r = FlakeRef::from_input_attrs(&a(&[("url", s("github:NixOS/nixpkgs"))]), true)
        .expect("ok")
        .expect("some");
    assert_eq!(r.to_string(), "github:NixOS/nixpkgs");
    // `flake = false` turns a plain URL into a file, relative paths stay relative.
    let r = FlakeRef::from_input_attrs(&a(&[("url", s("https://x.org/f"))]), false)
        .expect("ok")
        .expect("some");
    assert_eq!(r.input.type_name(), "file");
    let r = FlakeRef::from_input_attrs(&a(&[("url", s("path:./sub"))]), true)
        .expect("ok")
        .expect("some");
    assert_eq!(r.input.is_relative(), Some("./sub"));
    let r = FlakeRef::from_input_attrs(
        &a(&[
            ("type", s("github")),
            ("owner", s("o")),
            ("repo", s("r")),
            ("dir", s("d")),
        ]),
        true,
    )
    .expect("ok")
    .expect("some");
    assert_eq!(r.to_string(), "github:o/r?dir=d");
    assert_eq!(
        FlakeRef::from_input_attrs(&Attrs::new(), true).expect("ok"),
        None
    );
    let e = FlakeRef::from_input_attrs(&a(&[("url", s("github:o/r")), ("owner", s("x"))]), true)
        .expect_err("bad");
    assert_eq!(e.to_string(), "unexpected flake input attribute 'owner'");
    let e = FlakeRef::from_input_attrs(
        &a(&[
            ("type", s("github")),
            ("owner", s("o")),
            ("repo", s("r")),
            ("url", s("u")),
        ]),
        true,
    )
    .expect_err("url not allowed for github");
    assert_eq!(
        e.to_string(),
        "input attribute 'url' not supported by scheme 'github'"
    );
}

/// Mangled references and lock files give errors, never panics.
#[test]
fn mangled_input_never_panics() {
    let seeds: Vec<String> = golden("flakerefs.json")
        .iter()
        .filter_map(|c| c["ref"].as_str().map(str::to_owned))
        .collect();
    let noise = [
        "%", "%4", "%zz", "#", "?", "&", "=", "/", "//", ":", "@", "é", "\u{0}", " ", "..", "~",
        "[",
    ];
    let opts = ParseOptions::default();
    let mut n = 0;
    for seed in &seeds {
        let chars: Vec<char> = seed.chars().collect();
        for cut in 0..=chars.len() {
            let prefix: String = chars[..cut].iter().collect();
            let suffix: String = chars[cut..].iter().collect();
            for x in noise {
                let s = format!("{prefix}{x}{suffix}");
                if let Ok(r) = FlakeRef::parse(&s, &opts) {
                    let _ = r.to_url().map(|u| u.to_string());
                    let _ = FlakeRef::from_attrs(&r.to_attrs());
                }
                n += 1;
            }
            let _ = FlakeRef::parse(&prefix, &opts);
        }
    }
    assert!(n > 1000);
    let lock = std::fs::read_to_string(format!(
        "{}/tests/flake-golden/locks/top.lock",
        env!("CARGO_MANIFEST_DIR")
    ))
    .expect("top.lock");
    let s = flaked_store::fetchers::InputSettings::default();
    for cut in (0..lock.len()).step_by(7) {
        if lock.is_char_boundary(cut) {
            let _ = flaked_store::fetchers::LockFile::parse(&lock[..cut], "x", &s);
            let mangled = format!("{}1{}", &lock[..cut], &lock[cut..]);
            let _ = flaked_store::fetchers::LockFile::parse(&mangled, "x", &s);
        }
    }
}

//! End-to-end tests of `flakectl search` served from search indexes: every answer — first, warm,
//! and from the eval cache of a restarted daemon that may not evaluate (`FLAKED_FORBID_EVAL=1`) —
//! is byte-for-byte the reference's (goldens in tests/fixtures/search-flake, made by
//! scripts/regen-e2e-goldens.sh), large results come whole through batched messages, and an edit
//! of the flake is seen at once and makes the old index unusable.

use std::path::{Path, PathBuf};
use std::time::Duration;

use flaked_tests::{Daemon, DaemonOpts, Scratch, texts, write};

/// The golden cases: (golden name, arguments after `search`).
const CASES: &[(&str, &[&str])] = &[
    ("hello", &[".", "hello"]),
    ("hello-json", &[".", "hello", "--json"]),
    ("two-terms", &[".", "A program", "cow"]),
    ("excluded", &[".", "hello", "--exclude", "wrapped"]),
    ("python", &[".", "^"]),
    ("requests", &[".#python3Packages", "requests"]),
    ("none", &[".", "nothing-matches"]),
    ("root-drv", &[".#hello-wrapped", "hello"]),
    ("alternation", &[".", "friendly|ASCII"]),
    (
        "multi-exclude",
        &[".", "^", "--exclude", "cow", "--exclude", "python"],
    ),
    ("all-json", &[".", "^", "--json"]),
    ("nested", &[".#nested", "^"]),
    ("upper", &[".", "HELLO", "GREET"]),
    ("version-match", &[".", "2\\.12"]),
];

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/search-flake")
}

/// A copy of the fixture flake in the scratch directory (a `path:` flake).
fn flake(s: &Scratch) -> PathBuf {
    let dir = s.path().join("search-flake");
    write(
        &dir.join("flake.nix"),
        &std::fs::read_to_string(fixture().join("flake.nix")).expect("fixture"),
    );
    dir
}

/// (stdout, stderr, exit status) of `flakectl search ARGS…` in `dir`.
fn search(s: &Scratch, dir: &Path, args: &[&str]) -> (String, String, i32) {
    let mut full = vec!["search"];
    full.extend_from_slice(args);
    let out = s
        .flakectl_cmd(&full)
        .arg("--no-auto-start")
        .current_dir(dir)
        .output()
        .expect("run flakectl");
    let (o, e) = texts(&out);
    (o, e, out.status.code().unwrap_or(-1))
}

/// Asserts that every case answers exactly its golden.
fn check_goldens(s: &Scratch, dir: &Path, when: &str) {
    for (name, args) in CASES {
        let (out, err, status) = search(s, dir, args);
        let want = std::fs::read_to_string(fixture().join(format!("{name}.out"))).expect("golden");
        let want_status: i32 = std::fs::read_to_string(fixture().join(format!("{name}.status")))
            .expect("golden status")
            .trim()
            .parse()
            .expect("a number");
        assert_eq!(out, want, "{when}: search {args:?}; stderr: {err}");
        assert_eq!(
            status, want_status,
            "{when}: search {args:?}; stderr: {err}"
        );
        if want_status != 0 {
            assert!(
                err.contains("error: no results for the given search term(s)!"),
                "{when}: search {args:?}: {err}"
            );
        } else {
            assert_eq!(err, "", "{when}: search {args:?}");
        }
    }
}

fn stop(mut d: Daemon) {
    d.signal(libc::SIGTERM);
    assert!(
        d.wait_exit(Duration::from_secs(20)).is_some(),
        "daemon did not stop"
    );
}

fn daemon<'a>(s: &Scratch, cache: &'a str, env: &'a [(&'a str, &'a str)]) -> Daemon {
    Daemon::start(
        s,
        DaemonOpts {
            args: &["--cache-dir", cache],
            env,
        },
    )
}

/// First and warm answers equal the reference's; a restarted daemon that may not evaluate gives
/// the same answers from its eval cache, and fails (rather than guessing) for roots it never
/// indexed.
#[test]
fn search_answers_first_warm_and_from_the_eval_cache() {
    let s = Scratch::new();
    let dir = flake(&s);
    let cache = s.path().join("cache");
    let cache = cache.to_str().expect("utf-8 path");

    let d = daemon(&s, cache, &[]);
    check_goldens(&s, &dir, "first");
    check_goldens(&s, &dir, "warm");
    stop(d);

    let d = daemon(&s, cache, &[("FLAKED_FORBID_EVAL", "1")]);
    check_goldens(&s, &dir, "restarted, evaluation forbidden");
    // Roots never searched before have no index: the daemon must evaluate, which it may not.
    let (out, err, status) = search(&s, &dir, &[".#python3Packages.hidden", "^"]);
    assert_eq!(status, 1, "{out}{err}");
    assert!(err.contains("evaluation is forbidden"), "{err}");
    stop(d);
}

/// An edit is seen by the next search of a warm daemon, and the index of the old files is not
/// used for the new ones after a restart.
#[test]
fn search_follows_edits() {
    let s = Scratch::new();
    let dir = flake(&s);
    let cache = s.path().join("cache");
    let cache = cache.to_str().expect("utf-8 path");

    let d = daemon(&s, cache, &[]);
    let (out, _, status) = search(&s, &dir, &[".", "greeting"]);
    assert_eq!(status, 0);
    assert!(out.contains("friendly"), "{out}");
    let text = std::fs::read_to_string(dir.join("flake.nix")).expect("flake.nix");
    write(
        &dir.join("flake.nix"),
        &text.replace("familiar, friendly greeting", "familiar, cheerful greeting"),
    );
    let (out, err, status) = search(&s, &dir, &[".", "greeting"]);
    assert_eq!(status, 0, "{err}");
    assert!(
        out.contains("cheerful") && !out.contains("friendly"),
        "{out}"
    );
    stop(d);

    // The edited flake's index is cached too; the original's is not usable for it.
    let d = daemon(&s, cache, &[("FLAKED_FORBID_EVAL", "1")]);
    let (out, err, status) = search(&s, &dir, &[".", "greeting"]);
    assert_eq!(status, 0, "{err}");
    assert!(out.contains("cheerful"), "{out}");
    write(&dir.join("flake.nix"), &text);
    let (out, err, status) = search(&s, &dir, &[".", "greeting"]);
    // The original files' index was recorded by the first daemon under their fingerprint.
    assert_eq!(status, 0, "{err}");
    assert!(out.contains("friendly"), "{out}");
    write(
        &dir.join("flake.nix"),
        &text.replace("familiar, friendly greeting", "never indexed"),
    );
    let (_, err, status) = search(&s, &dir, &[".", "greeting"]);
    assert_eq!(status, 1);
    assert!(err.contains("evaluation is forbidden"), "{err}");
    stop(d);
}

/// A result larger than one batch comes whole, in Nix's order, in text and JSON.
#[test]
fn large_results_come_whole() {
    let s = Scratch::new();
    let dir = s.path().join("many");
    let n = 1000;
    write(
        &dir.join("flake.nix"),
        &format!(
            r#"{{
  outputs = {{ self }}: {{
    legacyPackages.x86_64-linux = builtins.listToAttrs (builtins.genList (i: {{
      name = "pkg-${{toString i}}";
      value = derivation {{
        name = "pkg-${{toString i}}-1.${{toString i}}";
        system = "x86_64-linux"; builder = "/bin/sh";
      }} // {{ meta.description = "package ${{toString i}}"; }};
    }}) {n});
  }};
}}
"#
        ),
    );
    let cache = s.path().join("cache");
    let cache = cache.to_str().expect("utf-8 path");
    let d = daemon(&s, cache, &[]);
    let (out, err, status) = search(&s, &dir, &[".", "pkg"]);
    assert_eq!(status, 0, "{err}");
    let mut names: Vec<String> = (0..n).map(|i| format!("pkg-{i}")).collect();
    names.sort();
    let shown: Vec<&str> = out
        .lines()
        .filter_map(|l| {
            l.strip_prefix("* \x1b[0;1mlegacyPackages.x86_64-linux.\x1b[32;1mpkg\x1b[0;1m-")
        })
        .map(|l| l.split('\x1b').next().unwrap_or(""))
        .collect();
    let want: Vec<String> = names
        .iter()
        .map(|n| n.trim_start_matches("pkg-").to_string())
        .collect();
    assert_eq!(shown, want);
    // One empty line between two packages, none at the end.
    assert_eq!(out.matches("\n\n").count(), n - 1);
    assert!(!out.ends_with("\n\n"));

    let (json, err, status) = search(&s, &dir, &[".", "^", "--json"]);
    assert_eq!(status, 0, "{err}");
    assert_eq!(json.matches("\"pname\":").count(), n);
    // parseDrvName splits at the first dash followed by a non-letter.
    let last = r#""legacyPackages.x86_64-linux.pkg-999":{"description":"package 999","pname":"pkg","version":"999-1.999"}"#;
    assert!(json.contains(last), "{json}");
    stop(d);
}

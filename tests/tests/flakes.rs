//! End-to-end tests of flakes through the service: `flakectl eval FLAKE#ATTR`, `flake lock`,
//! `flake metadata`, `flake show` against a real daemon, and the warm-tree contract — a repeated
//! query is answered without evaluating again, and an edit (path flake, dirty git tree, new
//! commit) is seen by the very next query.
//!
//! The expected values are plain Nix values whose printing is not in doubt; the byte-for-byte
//! comparison with the reference Nix on a corpus of layouts lives in the evaluator's golden
//! tests (evaluator/tests/flakes.rs).

use std::path::Path;

use flaked_proto::v1 as pb;
use flaked_tests::{Daemon, DaemonOpts, Scratch, git, runtime, shell_sandbox_paths, texts, write};

/// `flakectl ARGS…` in `dir`; (stdout, stderr, success).
fn run(s: &Scratch, dir: &Path, args: &[&str]) -> (String, String, bool) {
    let out = s
        .flakectl_cmd(args)
        .current_dir(dir)
        .output()
        .expect("run flakectl");
    let (o, e) = texts(&out);
    (o, e, out.status.success())
}

const FLAKE: &str = r#"{
  description = "e2e";
  outputs = { self }: {
    x = builtins.trace "evaluating x" (1 + 1);
    s = "hello";
    packages.x86_64-linux.default = derivation {
      name = "p"; system = "x86_64-linux"; builder = "/bin/sh"; args = [ "-c" "echo > $out" ];
    };
  };
}
"#;

#[test]
fn path_flake_eval_is_warm_and_sees_edits() {
    let s = Scratch::new();
    let _d = Daemon::start(&s, DaemonOpts::default());
    let flake = s.path().join("f");
    write(&flake.join("flake.nix"), FLAKE);

    let (out, err, ok) = run(&s, &flake, &["eval", ".#x"]);
    assert!(ok, "{err}");
    assert_eq!(out, "2\n");
    assert!(
        err.contains("trace: evaluating x"),
        "first query evaluates: {err}"
    );
    // Like nix 2.26, a flake without inputs gets no lock file.
    assert!(!err.contains("lock file"), "{err}");
    assert!(!flake.join("flake.lock").exists());

    // Warm: the same answer, without evaluating x again.
    let (out, err, ok) = run(&s, &flake, &["eval", ".#x"]);
    assert!(ok, "{err}");
    assert_eq!(out, "2\n");
    assert!(
        !err.contains("trace: evaluating x"),
        "a warm query must not evaluate again: {err}"
    );
    let (out, _, ok) = run(&s, &flake, &["eval", "--json", ".#s"]);
    assert!(ok);
    assert_eq!(out, "\"hello\"\n");

    // An edit is seen by the very next query.
    write(
        &flake.join("flake.nix"),
        &FLAKE.replace("(1 + 1)", "(40 + 2)"),
    );
    let (out, err, ok) = run(&s, &flake, &["eval", ".#x"]);
    assert!(ok, "{err}");
    assert_eq!(out, "42\n");
    assert!(err.contains("trace: evaluating x"), "{err}");

    // A new file counts too (it may be imported).
    write(&flake.join("extra.nix"), "7");
    write(
        &flake.join("flake.nix"),
        &FLAKE.replace("(1 + 1)", "(import ./extra.nix)"),
    );
    let (out, err, ok) = run(&s, &flake, &["eval", ".#x"]);
    assert!(ok, "{err}");
    assert_eq!(out, "7\n");
    write(&flake.join("extra.nix"), "8");
    let (out, err, ok) = run(&s, &flake, &["eval", ".#x"]);
    assert!(ok, "{err}");
    assert_eq!(out, "8\n");

    // The daemon reports the flake as warm.
    let st = runtime().block_on(async {
        let mut c = flaked_proto::connect(&s.socket()).await.expect("connect");
        c.status(pb::StatusRequest {})
            .await
            .expect("status")
            .into_inner()
    });
    assert_eq!(st.warm_flakes.len(), 1, "{:?}", st.warm_flakes);
    assert!(
        st.warm_flakes[0].starts_with("path:"),
        "{:?}",
        st.warm_flakes
    );
}

#[test]
fn git_flake_follows_commits_and_dirty_edits() {
    let s = Scratch::new();
    let _d = Daemon::start(&s, DaemonOpts::default());
    let repo = s.path().join("repo");
    write(&repo.join("flake.nix"), FLAKE);
    git(&repo, &["init", "-q"]);
    git(&repo, &["add", "flake.nix"]);
    git(&repo, &["commit", "-q", "-m", "one"]);

    let (out, err, ok) = run(&s, &repo, &["eval", ".#x"]);
    assert!(ok, "{err}");
    assert_eq!(out, "2\n");
    // The lock file nix writes is untracked, so the tree is dirty from now on, as with nix.
    let (out, err, ok) = run(&s, &repo, &["eval", ".#x"]);
    assert!(ok, "{err}");
    assert_eq!(out, "2\n");
    assert!(!err.contains("trace: evaluating x"), "warm: {err}");

    // A dirty edit of a tracked file.
    write(
        &repo.join("flake.nix"),
        &FLAKE.replace("(1 + 1)", "(2 + 3)"),
    );
    let (out, err, ok) = run(&s, &repo, &["eval", ".#x"]);
    assert!(ok, "{err}");
    assert_eq!(out, "5\n");
    assert!(err.contains("warning: Git tree '"), "dirty warning: {err}");

    // Untracked files are invisible to a git flake.
    write(&repo.join("untracked.nix"), "1");
    write(
        &repo.join("flake.nix"),
        &FLAKE.replace("(1 + 1)", "(builtins.pathExists ./untracked.nix)"),
    );
    let (out, err, ok) = run(&s, &repo, &["eval", ".#x"]);
    assert!(ok, "{err}");
    assert_eq!(out, "false\n");

    // A commit.
    write(
        &repo.join("flake.nix"),
        &FLAKE.replace("(1 + 1)", "(3 + 3)"),
    );
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "-q", "-m", "two"]);
    let (out, err, ok) = run(&s, &repo, &["eval", ".#x"]);
    assert!(ok, "{err}");
    assert_eq!(out, "6\n");
    assert!(!err.contains("is dirty"), "clean after the commit: {err}");
}

#[test]
fn locked_git_input_is_served_from_the_store_once_its_repository_is_gone() {
    let s = Scratch::new();
    let _d = Daemon::start(&s, DaemonOpts::default());
    let dep = s.path().join("dep");
    write(
        &dep.join("flake.nix"),
        "{ outputs = { self }: { v = 40; }; }\n",
    );
    git(&dep, &["init", "-q"]);
    git(&dep, &["add", "flake.nix"]);
    git(&dep, &["commit", "-q", "-m", "dep"]);
    let top = s.path().join("top");
    let flake = |n: u32| {
        format!(
            "{{ inputs.dep.url = \"git+file://{}\"; outputs = {{ self, dep }}: {{ x = dep.v + {n}; }}; }}\n",
            dep.display()
        )
    };
    write(&top.join("flake.nix"), &flake(2));
    let (out, err, ok) = run(&s, &top, &["eval", ".#x"]);
    assert!(ok, "{err}");
    assert_eq!(out, "42\n");
    // The input is locked and its tree is in the store: the repository is no longer needed.
    std::fs::remove_dir_all(&dep).expect("rm dep");
    write(&top.join("flake.nix"), &flake(3));
    let (out, err, ok) = run(&s, &top, &["eval", ".#x"]);
    assert!(ok, "{err}");
    assert_eq!(out, "43\n");
}

#[test]
fn lock_metadata_and_show() {
    let s = Scratch::new();
    let _d = Daemon::start(&s, DaemonOpts::default());
    let dep = s.path().join("dep");
    write(
        &dep.join("flake.nix"),
        "{ outputs = { self }: { lib.answer = 42; }; }\n",
    );
    let top = s.path().join("top");
    write(
        &top.join("flake.nix"),
        &format!(
            "{{\n  inputs.dep.url = \"path:{}\";\n  outputs = {{ self, dep }}: {{ answer = dep.lib.answer; }};\n}}\n",
            dep.display()
        ),
    );
    let (_, err, ok) = run(&s, &top, &["flake", "lock"]);
    assert!(ok, "{err}");
    assert!(err.contains("• Added input 'dep':"), "{err}");
    let lock = std::fs::read_to_string(top.join("flake.lock")).expect("flake.lock written");
    assert!(lock.contains("\"dep\""), "{lock}");
    assert!(lock.ends_with("}\n"), "{lock}");

    // Locking again changes nothing and says nothing.
    let (_, err, ok) = run(&s, &top, &["flake", "lock"]);
    assert!(ok, "{err}");
    assert!(!err.contains("Added input"), "{err}");
    assert_eq!(
        std::fs::read_to_string(top.join("flake.lock")).expect("read"),
        lock
    );

    let (out, err, ok) = run(&s, &top, &["eval", ".#answer"]);
    assert!(ok, "{err}");
    assert_eq!(out, "42\n");

    let (out, err, ok) = run(&s, &top, &["flake", "metadata", "--json"]);
    assert!(ok, "{err}");
    assert!(out.starts_with('{') && out.ends_with("}\n"), "{out}");
    assert!(out.contains("\"locks\":"), "{out}");
    assert!(out.contains("\"path\":\"/nix/store/"), "{out}");

    let (out, err, ok) = run(&s, &s.path().join("dep"), &["flake", "show", "--json"]);
    assert!(ok, "{err}");
    assert!(out.contains("\"lib\""), "{out}");
}

#[test]
fn flake_errors_are_nix_errors() {
    let s = Scratch::new();
    let _d = Daemon::start(&s, DaemonOpts::default());
    let f = s.path().join("bad");
    write(&f.join("flake.nix"), "{ outputs = { self }: { x = 1; }; \n");
    let (out, err, ok) = run(&s, &f, &["eval", ".#x"]);
    assert!(!ok);
    assert_eq!(out, "");
    assert!(err.starts_with("error:"), "{err}");
    assert!(err.contains("syntax error"), "{err}");
    assert!(err.contains("flake.nix:2:1"), "position shown: {err}");

    write(
        &f.join("flake.nix"),
        "{ outputs = { self }: { x = 1; }; }\n",
    );
    let (out, err, ok) = run(&s, &f, &["eval", ".#y"]);
    assert!(!ok);
    assert_eq!(out, "");
    assert!(err.contains("does not provide attribute"), "{err}");

    let (_, err, ok) = run(&s, &f, &["eval", "github:"]);
    assert!(!ok);
    assert!(err.starts_with("error:"), "{err}");
}

/// `flakectl search` against the reference's output (tests/fixtures/search-flake, goldens from
/// scripts/regen-e2e-goldens.sh): traversal (no recursion into `packages` subsets, only into
/// `legacyPackages` sets with `recurseForDerivations`), skipped evaluation errors under
/// `legacyPackages`, multiple terms, exclusion, highlighting, JSON, and the no-result error.
#[test]
fn search_matches_the_reference() {
    let s = Scratch::new();
    let _d = Daemon::start(&s, DaemonOpts::default());
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/search-flake");
    let flake = s.path().join("search-flake");
    write(
        &flake.join("flake.nix"),
        &std::fs::read_to_string(fixture.join("flake.nix")).expect("fixture"),
    );
    let cases: &[(&str, &[&str])] = &[
        ("hello", &[".", "hello"]),
        ("hello-json", &[".", "hello", "--json"]),
        ("two-terms", &[".", "A program", "cow"]),
        ("excluded", &[".", "hello", "--exclude", "wrapped"]),
        ("python", &[".", "^"]),
        ("requests", &[".#python3Packages", "requests"]),
        ("none", &[".", "nothing-matches"]),
    ];
    for (name, args) in cases {
        let mut full = vec!["search"];
        full.extend_from_slice(args);
        let out = s
            .flakectl_cmd(&full)
            .current_dir(&flake)
            .output()
            .expect("run flakectl");
        let want = std::fs::read(fixture.join(format!("{name}.out"))).expect("golden");
        let want_status: i32 = std::fs::read_to_string(fixture.join(format!("{name}.status")))
            .expect("golden status")
            .trim()
            .parse()
            .expect("a number");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&want),
            "search {args:?}; stderr: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(out.status.code(), Some(want_status), "search {args:?}");
        if want_status != 0 {
            assert!(
                String::from_utf8_lossy(&out.stderr)
                    .contains("error: no results for the given search term(s)!"),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

#[test]
fn build_makes_the_output_and_a_result_link() {
    let s = Scratch::new();
    let paths = shell_sandbox_paths();
    let _d = Daemon::start(
        &s,
        DaemonOpts {
            args: &["--sandbox-paths", &paths, "--max-jobs", "2"],
            ..Default::default()
        },
    );
    let flake = s.path().join("b");
    write(
        &flake.join("flake.nix"),
        r#"{
  outputs = { self }: {
    packages.x86_64-linux.default = derivation {
      name = "greeting";
      system = "x86_64-linux";
      builder = "/bin/sh";
      args = [ "-c" "echo hello from the sandbox > $out" ];
    };
  };
}
"#,
    );
    let (out_path, err, ok) = run(&s, &flake, &["eval", "--raw", ".#default.outPath"]);
    assert!(ok, "{err}");
    assert!(out_path.starts_with("/nix/store/") && out_path.ends_with("-greeting"));

    let (out, err, ok) = run(&s, &flake, &["build", ".", "--print-out-paths"]);
    assert!(ok, "{err}");
    assert_eq!(out, format!("{out_path}\n"));
    let link = std::fs::read_link(flake.join("result")).expect("result symlink");
    assert_eq!(link.to_str(), Some(out_path.as_str()));
    let physical = s
        .path()
        .join("store-root")
        .join(out_path.trim_start_matches('/'));
    assert_eq!(
        std::fs::read_to_string(&physical).expect("the output exists in the store"),
        "hello from the sandbox\n"
    );

    // A failing builder: Nix's message, nothing registered, no link.
    write(
        &flake.join("flake.nix"),
        r#"{
  outputs = { self }: {
    packages.x86_64-linux.bad = derivation {
      name = "bad"; system = "x86_64-linux"; builder = "/bin/sh";
      args = [ "-c" "echo about to fail; exit 3" ];
    };
  };
}
"#,
    );
    let (_, err, ok) = run(&s, &flake, &["build", ".#bad", "-o", "bad-result"]);
    assert!(!ok);
    assert!(err.contains("error: builder for '/nix/store/"), "{err}");
    assert!(err.contains("failed with exit code 3"), "{err}");
    assert!(!flake.join("bad-result").exists());
}

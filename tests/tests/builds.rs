//! End-to-end tests of `flakectl build` through a real `flaked`: `--file`/`--expr` installables,
//! Nix's messages on stderr (compared with goldens from the reference, `builds/regen.sh`),
//! `--dry-run`, result links registered as indirect GC roots, `--keep-going`, `-j` and `-L`.

use std::path::{Path, PathBuf};

use flaked_tests::{Daemon, DaemonOpts, Scratch, shell_sandbox_paths, texts};

const GRAPH: &str = include_str!("builds/graph.nix");

/// A scratch directory with `graph.nix` in `work/`, and a daemon that can build it.
struct Env {
    s: Scratch,
    _d: Daemon,
}

impl Env {
    fn new() -> Env {
        let s = Scratch::new();
        let paths = shell_sandbox_paths();
        let d = Daemon::start(
            &s,
            DaemonOpts {
                args: &["--sandbox-paths", &paths, "--max-jobs", "2"],
                ..Default::default()
            },
        );
        std::fs::create_dir_all(s.path().join("work")).expect("mkdir work");
        std::fs::write(s.path().join("work/graph.nix"), GRAPH).expect("write graph.nix");
        Env { s, _d: d }
    }

    fn work(&self) -> PathBuf {
        self.s.path().join("work")
    }

    /// Runs flakectl in `work/`: (stdout, stderr, exit code).
    fn run(&self, args: &[&str]) -> (String, String, i32) {
        let out = self
            .s
            .flakectl_cmd(args)
            .current_dir(self.work())
            .output()
            .expect("run flakectl");
        let (o, e) = texts(&out);
        (o, e, out.status.code().unwrap_or(-1))
    }

    /// The physical location of a store path.
    fn physical(&self, store_path: &str) -> PathBuf {
        self.s
            .path()
            .join("store-root")
            .join(store_path.trim_start_matches('/'))
    }

    fn out_path(&self, attr: &str) -> String {
        let (o, e, code) = self.run(&["eval", "--raw", "-f", "graph.nix", attr]);
        assert_eq!(code, 0, "{e}");
        o
    }

    fn gc_roots(&self) -> Vec<(PathBuf, PathBuf)> {
        let dir = self.s.path().join("store-root/nix/var/nix/gcroots/auto");
        let mut v: Vec<(PathBuf, PathBuf)> = std::fs::read_dir(&dir)
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .map(|e| {
                        let target = std::fs::read_link(e.path()).expect("roots are symlinks");
                        (e.path(), target)
                    })
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }
}

fn golden(name: &str) -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/builds")
        .join(name);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
fn file_installables_build_every_derivation_with_links_and_gc_roots() {
    let env = Env::new();
    let (a, c) = (env.out_path("a.outPath"), env.out_path("c.outPath"));
    // A list: every element, grouped and sorted by derivation path (c's .drv sorts before a's).
    let (out, err, code) = env.run(&["build", "-f", "graph.nix", "pair", "--print-out-paths"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, format!("{c}\n{a}\n"));
    assert_eq!(
        std::fs::read_to_string(env.physical(&c)).expect("c built"),
        "c\n"
    );
    let work = env.work();
    assert_eq!(
        std::fs::read_link(work.join("result")).expect("result"),
        PathBuf::from(&c)
    );
    assert_eq!(
        std::fs::read_link(work.join("result-1")).expect("result-1"),
        PathBuf::from(&a)
    );
    // Each link is an indirect root: gcroots/auto/<hash> → the link.
    let roots = env.gc_roots();
    let mut targets: Vec<PathBuf> = roots.iter().map(|(_, t)| t.clone()).collect();
    targets.sort();
    let mut want = vec![work.join("result"), work.join("result-1")];
    want.sort();
    assert_eq!(targets, want);
    for (root, _) in &roots {
        let name = root.file_name().and_then(|n| n.to_str()).expect("name");
        assert_eq!(name.len(), 32, "nix32 sha1: {name}");
    }

    // Multiple outputs, `-o`: <prefix> and <prefix>-dev; `^dev` selects one.
    let (_, err, code) = env.run(&["build", "-f", "graph.nix", "multi", "-o", "m"]);
    assert_eq!(code, 0, "{err}");
    let dev = std::fs::read_link(work.join("m-dev")).expect("m-dev");
    assert_eq!(
        std::fs::read_to_string(env.physical(dev.to_str().expect("utf-8"))).expect("dev"),
        "dev\n"
    );
    assert!(work.join("m").is_symlink());
    let (out, err, code) = env.run(&[
        "build",
        "-f",
        "graph.nix",
        "multi^dev",
        "--no-link",
        "--print-out-paths",
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim_end(), dev.to_str().expect("utf-8"));

    // A set with recurseForDerivations: its derivations, not those of nested plain sets.
    let ok = env.out_path("ok.outPath");
    let (out, err, code) = env.run(&[
        "build",
        "-f",
        "graph.nix",
        "nested",
        "--no-link",
        "--print-out-paths",
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, format!("{ok}\n"));

    // A file in the way of a link is Nix's error.
    std::fs::write(work.join("blocked"), "x").expect("write");
    let (_, err, code) = env.run(&["build", "-f", "graph.nix", "ok", "-o", "blocked"]);
    assert_eq!(code, 1);
    assert_eq!(
        err,
        format!(
            "error: cannot create symlink '{}'; already exists\n",
            work.join("blocked").display()
        )
    );
}

#[test]
fn expr_installables_and_selection_errors() {
    let env = Env::new();
    let expr = r#"{ d = derivation { name = "from-expr"; system = "x86_64-linux"; builder = "/bin/sh"; args = [ "-c" "echo e > $out" ]; }; }"#;
    let (out, err, code) = env.run(&[
        "build",
        "--expr",
        expr,
        "d",
        "--no-link",
        "--print-out-paths",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.ends_with("-from-expr\n"), "{out}");
    assert_eq!(
        std::fs::read_to_string(env.physical(out.trim_end())).expect("built"),
        "e\n"
    );
    let (_, err, code) = env.run(&["build", "-f", "graph.nix", "nope", "--no-link"]);
    assert_eq!(code, 1);
    assert!(
        err.starts_with("error: attribute 'nope' in selection path 'nope' not found"),
        "{err}"
    );
    // An error in the expression itself points into the user's text, as Nix's does.
    let (_, err, code) = env.run(&[
        "build",
        "--expr",
        "{ a = 1;\n  b = let x = 1; in x.y; }",
        "b",
        "--no-link",
    ]);
    assert_eq!(code, 1);
    assert_eq!(err, golden("expr-error.stderr"));
    let (_, err, code) = env.run(&["build", "--expr", "42", "--no-link"]);
    assert_eq!(code, 1);
    assert_eq!(
        err,
        "error: expression does not evaluate to a derivation (or a set or list of those)\n"
    );
}

/// Which derivations and outputs an installable stands for, and the errors on the way, as Nix
/// finds them (`InstallableAttrPath`: the selection path, `getDerivations`, the outputs to
/// install): each case of `builds/selection-cases.txt` run as `build --expr EXPR ATTR…
/// --dry-run --json` gives the reference's exit code, stdout and stderr.
#[test]
fn installable_selection_matches_nix() {
    let env = Env::new();
    let mut got = String::new();
    for line in golden("selection-cases.txt").lines() {
        if line.starts_with('#') {
            continue;
        }
        let (expr, attrs) = line.split_once('\t').unwrap_or((line, ""));
        let mut args = vec!["build", "--expr", expr];
        args.extend(attrs.split_whitespace());
        args.extend(["--dry-run", "--json"]);
        let (out, err, code) = env.run(&args);
        got.push_str(&format!("## {expr}\n# {attrs}\nrc={code}\n{out}{err}"));
    }
    let want = golden("selection.golden");
    if got != want {
        for (i, (g, w)) in got.lines().zip(want.lines()).enumerate() {
            assert_eq!(g, w, "first difference at line {}", i + 1);
        }
        assert_eq!(got, want);
    }
}

/// `--json` prints what Nix prints: per installable its derivation and outputs (sorted), and the
/// build's start and stop times when this command built it.
#[test]
fn json_reports_derivations_outputs_and_build_times() {
    let env = Env::new();
    let args = [
        "build",
        "-f",
        "graph.nix",
        "multi",
        "a",
        "--json",
        "--no-link",
    ];
    let (out, err, code) = env.run(&[&args[..], &["--dry-run"]].concat());
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, golden("dry-run.json"));
    let (out, err, code) = env.run(&args);
    assert_eq!(code, 0, "{err}");
    let built: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    let dry: serde_json::Value = serde_json::from_str(&golden("dry-run.json")).expect("JSON");
    let (built, dry) = (
        built.as_array().expect("a list"),
        dry.as_array().expect("a list"),
    );
    assert_eq!(built.len(), dry.len());
    for (b, d) in built.iter().zip(dry) {
        let b = b.as_object().expect("an object");
        let keys: Vec<&str> = b.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            ["drvPath", "outputs", "startTime", "stopTime"],
            "{out}"
        );
        assert_eq!(
            (&b["drvPath"], &b["outputs"]),
            (&d["drvPath"], &d["outputs"])
        );
        let (start, stop) = (b["startTime"].as_u64(), b["stopTime"].as_u64());
        assert!(
            start.is_some_and(|s| s > 1_700_000_000) && stop >= start,
            "{out}"
        );
    }
    // Valid already: no times, so the same as the dry run's answer.
    let (out, err, code) = env.run(&args);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, golden("dry-run.json"));
    // `--print-out-paths` lists a derivation's outputs by name, as Nix does.
    let (out, _, code) = env.run(&[
        "build",
        "-f",
        "graph.nix",
        "multi",
        "--print-out-paths",
        "--no-link",
    ]);
    assert_eq!(code, 0);
    let want: Vec<&str> = ["dev", "out"]
        .iter()
        .map(|o| dry[0]["outputs"][o].as_str().expect("a path"))
        .collect();
    assert_eq!(out.lines().collect::<Vec<_>>(), want);
}

#[test]
fn dry_run_prints_what_nix_would_build_and_builds_nothing() {
    let env = Env::new();
    let (out, err, code) = env.run(&["build", "-f", "graph.nix", "c", "--dry-run"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "");
    assert_eq!(err, golden("dry-run-c.stderr"));
    assert!(!env.physical(&env.out_path("c.outPath")).exists());
    assert!(!env.work().join("result").exists());
    assert!(env.gc_roots().is_empty());

    let (_, err, code) = env.run(&[
        "build",
        "-f",
        "graph.nix",
        "pair",
        "nested",
        "multi",
        "--dry-run",
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(err, golden("dry-run-many.stderr"));

    // Once `a` is built, only b and c are left.
    let (_, err, code) = env.run(&["build", "-f", "graph.nix", "a", "--no-link"]);
    assert_eq!(code, 0, "{err}");
    let (_, err, code) = env.run(&["build", "-f", "graph.nix", "c", "--dry-run"]);
    assert_eq!(code, 0, "{err}");
    let want: Vec<String> = golden("dry-run-c.stderr")
        .lines()
        .filter(|l| !l.contains("-e2e-a-1.0.drv"))
        .map(|l| l.replace("these 3", "these 2"))
        .collect();
    assert_eq!(err, want.join("\n") + "\n");
    // Nothing at all to build: nothing printed.
    let (_, err, code) = env.run(&["build", "-f", "graph.nix", "a", "--dry-run"]);
    assert_eq!((code, err.as_str()), (0, ""));
}

/// `--keep-failed` keeps a failed build's directory, readable, and says where, as Nix does
/// (`note: keeping build directory '…'` before the error); nothing else changes.
#[test]
fn keep_failed_keeps_the_build_directory() {
    let env = Env::new();
    let args = ["build", "-f", "graph.nix", "bad1", "--no-link"];
    let (_, plain, code) = env.run(&args);
    assert_eq!(code, 1, "{plain}");
    let (_, err, code) = env.run(&[&args[..], &["--keep-failed"]].concat());
    assert_eq!(code, 1, "{err}");
    let note = err
        .lines()
        .find(|l| l.starts_with("note: keeping build directory '"))
        .unwrap_or_else(|| panic!("no note in {err}"));
    let dir = PathBuf::from(
        note.trim_start_matches("note: keeping build directory '")
            .trim_end_matches('\''),
    );
    assert!(dir.is_dir(), "{}", dir.display());
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&dir).expect("stat").permissions(),
    );
    assert_eq!(mode & 0o777, 0o755);
    let without: Vec<&str> = err.lines().filter(|l| *l != note).collect();
    assert_eq!(without.join("\n") + "\n", plain);
    let error_at = err.find("error: builder for").expect("the error");
    assert!(err.find(note).expect("the note") < error_at, "{err}");
    // The directory is in the daemon's cache directory, inside the test's scratch directory.
}

#[test]
fn messages_and_prefixed_logs_match_nix() {
    let env = Env::new();
    let (_, err, code) = env.run(&[
        "build",
        "-f",
        "graph.nix",
        "c",
        "-L",
        "--no-link",
        "-j",
        "1",
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(err, golden("build-c.stderr"));
    // Without -L the builders' lines are not printed (no terminal: no progress line either).
    let (_, err, code) = env.run(&["build", "-f", "graph.nix", "ok", "--no-link"]);
    assert_eq!(code, 0, "{err}");
    assert!(!err.contains('>') && !err.contains('\r'), "{err}");
    assert!(err.ends_with("-e2e-ok-1.0.drv'...\n"), "{err}");
}

#[test]
fn keep_going_builds_what_it_can_and_reports_every_failure() {
    let env = Env::new();
    let (_, err, code) = env.run(&[
        "build",
        "-f",
        "graph.nix",
        "bad1",
        "bad2",
        "dep",
        "ok",
        "-L",
        "--no-link",
        "--keep-going",
        "-j",
        "1",
    ]);
    assert_eq!(code, 1, "{err}");
    let lines: Vec<&str> = err.lines().collect();
    let tail = lines[lines.len().saturating_sub(4)..].join("\n") + "\n";
    assert_eq!(tail, golden("keep-going.stderr"), "whole stderr:\n{err}");
    // bad1 has a waiter (dep): its failure is also printed when it happens.
    assert!(
        lines[..lines.len() - 4]
            .iter()
            .any(|l| l.starts_with("error: builder for '") && l.contains("-e2e-bad1-1.0.drv")),
        "{err}"
    );
    assert!(
        env.physical(&env.out_path("ok.outPath")).exists(),
        "the independent build ran: {err}"
    );

    // Without --keep-going: the builder's error with its log tail, exit 1.
    let (_, err, code) = env.run(&["build", "-f", "graph.nix", "bad2", "--no-link"]);
    assert_eq!(code, 1);
    assert!(
        err.ends_with("failed with exit code 3;\n       last 1 log lines:\n       > failing two\n"),
        "{err}"
    );
}

#[test]
fn without_keep_going_a_failure_stops_the_request() {
    let env = Env::new();
    // dep fails through bad1; c (independent) is named as not built, without an error.
    let (_, err, code) = env.run(&[
        "build",
        "-f",
        "graph.nix",
        "dep",
        "c",
        "--no-link",
        "-j",
        "1",
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("-e2e-bad1-1.0.drv' failed with exit code 2;"),
        "{err}"
    );
    let last = err.lines().last().expect("a last line");
    if last.starts_with("error: build of ") {
        assert!(last.contains("-e2e-dep-1.0.drv^out'"), "{err}");
    } else {
        // c finished before bad1 failed: only dep's failure is left.
        assert!(last.contains("dependencies of derivation '"), "{err}");
    }
}

/// A flake whose packages differ only in what `nix build` installs by default. The expected
/// outputs are the reference's (`nix build ./flake#NAME --dry-run --json` with Nix 2.26):
/// `meta.outputsToInstall` unless `outputSpecified` exists, `outputName` when it is true, `out`
/// when nothing names an output.
const OUTPUTS_FLAKE: &str = r#"{
  outputs = { self }: let
    multi = derivation {
      name = "oti"; system = "x86_64-linux"; builder = "/bin/sh";
      outputs = [ "out" "dev" "bin" ];
      args = [ "-c" "echo > $out; echo > $dev; echo > $bin" ];
    };
  in {
    packages.x86_64-linux = {
      meta = multi // { meta.outputsToInstall = [ "bin" "dev" ]; };
      plain = multi;
      specified = multi // { outputSpecified = true; outputName = "bin"; meta.outputsToInstall = [ "dev" ]; };
      unspecified = multi // { outputSpecified = false; meta.outputsToInstall = [ "dev" ]; };
    };
  };
}
"#;

#[test]
fn flake_installables_build_the_outputs_nix_installs_by_default() {
    let env = Env::new();
    let dir = env.work().join("flake");
    std::fs::create_dir_all(&dir).expect("mkdir flake");
    std::fs::write(dir.join("flake.nix"), OUTPUTS_FLAKE).expect("write flake.nix");
    for (attr, want) in [
        ("meta", &["oti-bin", "oti-dev"][..]),
        ("plain", &["oti"][..]),
        ("specified", &["oti-bin"][..]),
        ("unspecified", &["oti"][..]),
    ] {
        let installable = format!("./flake#{attr}");
        let (out, err, code) = env.run(&["build", &installable, "--no-link", "--print-out-paths"]);
        assert_eq!(code, 0, "{attr}: {err}");
        let mut names: Vec<&str> = out
            .lines()
            .map(|l| l.rsplit_once('/').map_or(l, |(_, n)| n))
            .map(|n| n.split_once('-').map_or(n, |(_, rest)| rest))
            .collect();
        names.sort();
        assert_eq!(names, want, "{attr}: {out}");
    }
}

//! Derivation goldens against Nix 2.26 (produced by `scripts/regen-drv-goldens.sh`).
//!
//! * `derivations/cases.nix`: for every case, the derivation path, every output path and the
//!   `.drv` bytes our evaluator writes (into a temporary store root) equal the reference's.
//! * `derivations/exprs/*.nix`: `nix eval --expr` stdout, stderr (warnings, error text) and
//!   success/failure equal the reference's — bad input, printing, the `derivation` shape.
//!
//! All evaluations share one temporary store root (the root is process-wide).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use flaked_eval::api::{EvalRequest, EvalSettings, EvalSource, OutputFormat, evaluate};

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/derivations")
}

struct Env {
    root: PathBuf,
    fixtures: PathBuf,
}

/// Creates the fixture trees and the temporary store root once per test binary.
fn env() -> &'static Env {
    static ENV: OnceLock<Env> = OnceLock::new();
    ENV.get_or_init(|| {
        let base = std::env::temp_dir().join(format!("flaked-drv-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        let fixtures = base.join("fixtures");
        let root = base.join("root");
        std::fs::create_dir_all(&root).expect("create temp store root");
        let st = std::process::Command::new("sh")
            .arg(dir().join("fixtures.sh"))
            .arg(&fixtures)
            .status()
            .expect("run fixtures.sh");
        assert!(st.success(), "fixtures.sh failed");
        flaked_eval::store_path::set_store_root(Some(root.clone()));
        Env { root, fixtures }
    })
}

fn settings(pure: bool, cwd: PathBuf) -> EvalSettings {
    EvalSettings {
        pure,
        cwd,
        ..EvalSettings::default()
    }
}

fn case_names() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir().join("golden"))
        .expect("golden dir")
        .filter_map(|e| {
            let n = e.ok()?.file_name().to_string_lossy().into_owned();
            n.strip_suffix(".json").map(str::to_string)
        })
        .collect();
    names.sort();
    names
}

/// Compares one case; returns a description of the first difference.
fn check_case(env: &Env, name: &str) -> Result<(), String> {
    let golden_json = std::fs::read_to_string(dir().join(format!("golden/{name}.json")))
        .map_err(|e| format!("golden json: {e}"))?;
    let golden_drv = std::fs::read(dir().join(format!("golden/{name}.drv")))
        .map_err(|e| format!("golden drv: {e}"))?;
    let expr = format!(
        "builtins.toJSON (import ./harness.nix {{ fixtures = {}; }}).\"{name}\"",
        env.fixtures.display()
    );
    let req = EvalRequest {
        source: EvalSource::Expr(expr),
        attr_path: None,
        output: OutputFormat::Raw,
        settings: settings(false, dir()),
    };
    let out = evaluate(&req).map_err(|d| format!("evaluation failed:\n{}", d.rendered))?;
    let got = String::from_utf8_lossy(&out.stdout).into_owned();
    if got != golden_json {
        return Err(format!("paths differ:\n  got  {got}\n  want {golden_json}"));
    }
    let drv_path = golden_json
        .split("\"drvPath\":\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .ok_or("no drvPath in golden")?;
    let real = env.root.join(drv_path.trim_start_matches('/'));
    let bytes = std::fs::read(&real).map_err(|e| format!("reading {}: {e}", real.display()))?;
    if bytes != golden_drv {
        return Err(format!(
            ".drv bytes differ:\n  got  {}\n  want {}",
            String::from_utf8_lossy(&bytes),
            String::from_utf8_lossy(&golden_drv)
        ));
    }
    Ok(())
}

#[test]
fn derivation_cases_match_nix() {
    let env = env();
    let names = case_names();
    assert!(names.len() >= 60, "corpus too small: {}", names.len());
    let mut failures = Vec::new();
    for n in &names {
        if let Err(e) = check_case(env, n) {
            failures.push(format!("--- {n}: {e}"));
        }
    }
    eprintln!(
        "derivation cases: {}/{} match Nix 2.26",
        names.len() - failures.len(),
        names.len()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

fn check_expr(file: &Path) -> Result<(), String> {
    let base = file.with_extension("");
    let read = |ext: &str| std::fs::read_to_string(base.with_extension(ext)).unwrap_or_default();
    let (want_out, want_err, want_code) = (read("out"), read("err"), read("code"));
    let expr = std::fs::read_to_string(file).map_err(|e| e.to_string())?;
    let req = EvalRequest {
        source: EvalSource::Expr(expr.trim_end_matches('\n').to_string()),
        attr_path: None,
        output: OutputFormat::Nix,
        settings: settings(true, PathBuf::from("/tmp")),
    };
    let (code, out, err) = match evaluate(&req) {
        Ok(o) => {
            let mut err = String::new();
            for l in &o.stderr {
                err.push_str(l);
                err.push('\n');
            }
            ("0", String::from_utf8_lossy(&o.stdout).into_owned(), err)
        }
        Err(d) => {
            let mut err = String::new();
            for l in &d.log {
                err.push_str(l);
                err.push('\n');
            }
            err.push_str(&d.rendered);
            ("1", String::new(), err)
        }
    };
    if code != want_code.trim() || out != want_out || err != want_err {
        return Err(format!(
            "exit {code} (want {})\n stdout got:\n{out}\n stdout want:\n{want_out}\n stderr got:\n{err}\n stderr want:\n{want_err}",
            want_code.trim()
        ));
    }
    Ok(())
}

#[test]
fn derivation_exprs_match_nix() {
    let _ = env();
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir().join("exprs"))
        .expect("exprs dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "nix"))
        .collect();
    files.sort();
    let known: Vec<String> = std::fs::read_to_string(dir().join("exprs/notyetpassing.txt"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split('#').next())
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect();
    let mut failures = Vec::new();
    let mut passing = 0;
    for f in &files {
        let name = f
            .file_stem()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        let listed = known.contains(&name);
        match check_expr(f) {
            Ok(()) => {
                passing += 1;
                if listed {
                    failures.push(format!(
                        "--- {name}: now matches Nix; remove it from notyetpassing.txt"
                    ));
                }
            }
            Err(e) if !listed => failures.push(format!("--- {name}: {e}")),
            Err(_) => {}
        }
    }
    eprintln!(
        "derivation exprs: {passing}/{} match Nix 2.26 ({} known differences)",
        files.len(),
        known.len()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

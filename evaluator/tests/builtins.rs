//! Golden tests of the builtins against the reference Nix 2.26.
//!
//! Every case of `tests/builtins/cases.txt` (`NAME[@impure] EXPRESSION`) is evaluated through
//! `flaked_eval::api::evaluate` as `nix eval --expr EXPRESSION` would, in a child process (so a
//! crash or hang is that case's failure), and compared with `tests/builtins/golden/NAME.out`
//! (stdout, exit 0) / `NAME.err` (stderr), produced by `scripts/regen-builtins-goldens.sh`.
//! Invariant: a case not listed in `tests/builtins/notyetpassing.txt` matches the reference exactly
//! (value AND error message), and a listed case still differs, so the list is the exact set of
//! known gaps. `FLAKED_BUILTINS_FILTER=SUB` runs only matching cases (no list check then);
//! `FLAKED_BUILTINS_WRITE_NYP=1` rewrites the list.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use flaked_eval::api::{EvalRequest, EvalSettings, EvalSource, OutputFormat};

mod common;
use common::Got;

const TIMEOUT: Duration = Duration::from_secs(30);

fn dir() -> PathBuf {
    let d = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("builtins");
    d.canonicalize().unwrap_or(d)
}

fn trim_nl(s: &str) -> String {
    s.trim_end_matches('\n').to_string()
}

/// The expected stderr: from the `error:` line on (trace/warning lines before it are checked
/// only for successful evaluations, where they are the whole stderr).
fn expected(name: &str, d: &Path) -> (Option<Vec<u8>>, String) {
    let out = std::fs::read(d.join("golden").join(format!("{name}.out"))).ok();
    let err =
        std::fs::read_to_string(d.join("golden").join(format!("{name}.err"))).unwrap_or_default();
    let err = if out.is_none() {
        match err.find("error:") {
            Some(i) => err[i..].to_string(),
            None => err,
        }
    } else {
        err
    };
    (out, trim_nl(&err))
}

#[test]
fn builtins_golden() {
    if common::child_main_if_requested() {
        return;
    }
    let d = dir();
    let fix = d.join("fixtures");
    let fix_s = fix.to_string_lossy().into_owned();
    let cases = std::fs::read_to_string(d.join("cases.txt")).expect("cases.txt is committed");
    let filter = std::env::var("FLAKED_BUILTINS_FILTER").ok();
    let nyp_path = d.join("notyetpassing.txt");
    let nyp: BTreeSet<String> = std::fs::read_to_string(&nyp_path)
        .unwrap_or_default()
        .lines()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    let mut failing = BTreeSet::new();
    let mut report = String::new();
    let mut total = 0;
    for line in cases.lines() {
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        let (name, expr) = line.split_once(' ').expect("NAME EXPRESSION");
        let (name, impure) = match name.strip_suffix("@impure") {
            Some(n) => (n, true),
            None => (name, false),
        };
        if let Some(f) = &filter
            && !name.contains(f.as_str())
        {
            continue;
        }
        total += 1;
        let expr = expr.replace("$FIX", &fix_s);
        let req = EvalRequest {
            source: EvalSource::Expr(expr),
            attr_path: None,
            output: OutputFormat::Nix,
            settings: EvalSettings {
                pure: !impure,
                cwd: d.clone(),
                env: Default::default(),
                ..EvalSettings::default()
            },
        };
        let (want_out, want_err) = expected(name, &d);
        let got = common::run_isolated("builtins_golden", &req, TIMEOUT);
        let (got_out, got_err) = match got {
            Got::Ok { stdout, stderr } => (Some(stdout), trim_nl(&stderr.join("\n"))),
            Got::Err(r) => (None, trim_nl(&r)),
            Got::Crash(m) => (None, format!("CRASH: {m}")),
            Got::Timeout => (None, "TIMEOUT".to_string()),
        };
        let got_out = got_out.map(|o| {
            String::from_utf8_lossy(&o)
                .replace(&fix_s, "$FIX")
                .into_bytes()
        });
        let got_err = got_err.replace(&fix_s, "$FIX");
        if got_out != want_out || got_err != want_err {
            failing.insert(name.to_string());
            if !nyp.contains(name) {
                report.push_str(&format!(
                    "--- {name}\n  want: {:?}\n        {}\n  got:  {:?}\n        {}\n",
                    want_out.as_deref().map(String::from_utf8_lossy),
                    want_err.replace('\n', "\n        "),
                    got_out.as_deref().map(String::from_utf8_lossy),
                    got_err.replace('\n', "\n        "),
                ));
            }
        }
    }
    if std::env::var("FLAKED_BUILTINS_WRITE_NYP").is_ok() {
        let mut s = String::from(
            "# Builtins golden cases that do not match the reference yet (one per line).\n",
        );
        for f in &failing {
            s.push_str(f);
            s.push('\n');
        }
        std::fs::write(&nyp_path, s).expect("write notyetpassing.txt");
        return;
    }
    let mut problems = report;
    if filter.is_none() {
        for n in nyp.difference(&failing) {
            problems.push_str(&format!(
                "--- {n}: listed in notyetpassing.txt but passes now\n"
            ));
        }
    }
    eprintln!(
        "builtins golden: {total} cases, {} failing ({} known)",
        failing.len(),
        failing.intersection(&nyp).count()
    );
    assert!(
        problems.is_empty(),
        "builtins golden mismatches:\n{problems}"
    );
}

//! Golden-corpus conformance test of the Nix language against the reference Nix 2.26.
//!
//! Every `tests/lang/CASE.nix` is evaluated through `flaked_eval::api::evaluate` (as
//! `nix eval --file CASE.nix`) in each output mode that has a golden file, and the result is compared
//! byte for byte with what the reference printed (see `scripts/regen-lang-goldens.sh` for the layout and
//! directives). The invariant kept: a case not listed in `tests/lang/notyetpassing.txt` matches the
//! reference exactly, and a listed case still differs (so the list stays the exact set of known gaps).
//! All mismatches are reported at once, with diffs.
//!
//! Knobs (environment variables):
//! - `FLAKED_LANG_FILTER=SUBSTRING`: only run cases whose name contains SUBSTRING (no list check then).
//! - `FLAKED_LANG_WRITE_NYP=1`: rewrite `notyetpassing.txt` to the set of currently failing cases.
//! - `FLAKED_LANG_REPORT=PATH`: write one line per failing case/mode (for `lang-failures.md`).
//! - `FLAKED_LANG_VERBOSE=1`: print diffs of not-yet-passing cases too.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use flaked_eval::api::{EvalRequest, EvalSettings, EvalSource, OutputFormat};

mod common;
use common::Got;

/// Per-evaluation wall-clock bound: the reference needs well under a second for every case.
const TIMEOUT: Duration = Duration::from_secs(20);

const PLACEHOLDER: &str = "$DIR";

struct Case {
    name: String,
    /// `nix eval --file` is impure (even `--pure-eval` does not apply to `--file` in Nix 2.26).
    pure: bool,
    attr: Option<String>,
}

/// What one evaluation produced, normalised like the goldens.
#[derive(Debug, PartialEq)]
enum Outcome {
    /// Exit code 0: stdout bytes and the stderr text (trace/warning lines).
    Ok { stdout: Vec<u8>, stderr: String },
    /// Exit code 1: the stderr text.
    Err { stderr: String },
}

fn corpus_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("lang");
    dir.canonicalize().unwrap_or(dir)
}

fn parse_case(dir: &Path, name: &str) -> Case {
    let text = std::fs::read_to_string(dir.join(format!("{name}.nix"))).unwrap_or_default();
    let mut case = Case {
        name: name.to_string(),
        pure: false,
        attr: None,
    };
    if let Some(rest) = text
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("#!flaked "))
    {
        for tok in rest.split_whitespace() {
            match tok {
                "json" | "raw" | "instantiate" => {}
                "impure" => case.pure = false,
                t if t.starts_with("attr=") => case.attr = Some(t["attr=".len()..].to_string()),
                other => panic!("case {name}: unknown directive {other}"),
            }
        }
    }
    case
}

fn replace_bytes(haystack: &[u8], needle: &[u8], with: &[u8]) -> Vec<u8> {
    if needle.is_empty() {
        return haystack.to_vec();
    }
    let mut out = Vec::with_capacity(haystack.len());
    let mut i = 0;
    while i < haystack.len() {
        if haystack[i..].starts_with(needle) {
            out.extend_from_slice(with);
            i += needle.len();
        } else {
            out.push(haystack[i]);
            i += 1;
        }
    }
    out
}

fn trim_nl(s: &str) -> String {
    s.trim_end_matches('\n').to_string()
}

/// Loads the golden outcome of `base` (`CASE`, `CASE.json`, `CASE.raw`), if that mode has goldens.
fn golden(dir: &Path, base: &str) -> Option<Outcome> {
    let out = std::fs::read(dir.join(format!("{base}.out"))).ok();
    let err = std::fs::read_to_string(dir.join(format!("{base}.err"))).ok();
    match (out, err) {
        (None, None) => None,
        (Some(stdout), err) => Some(Outcome::Ok {
            stdout,
            stderr: trim_nl(&err.unwrap_or_default()),
        }),
        (None, Some(err)) => Some(Outcome::Err {
            stderr: trim_nl(&err),
        }),
    }
}

/// Runs one evaluation in a child process (crash and hang isolation).
fn run(dir: &Path, case: &Case, output: OutputFormat) -> Result<Outcome, String> {
    // The oracle runs with HOME=/root (visible through `~/…` paths and getEnv).
    let env = [("HOME".to_string(), "/root".to_string())]
        .into_iter()
        .collect();
    let settings = EvalSettings {
        pure: case.pure,
        cwd: dir.to_path_buf(),
        env,
        ..EvalSettings::default()
    };
    let req = EvalRequest {
        source: EvalSource::File(dir.join(format!("{}.nix", case.name))),
        attr_path: case.attr.clone(),
        output,
        settings,
    };
    let dir_s = dir.to_string_lossy().into_owned();
    match common::run_isolated("lang_corpus", &req, TIMEOUT) {
        Got::Timeout => Err(format!("no answer within {TIMEOUT:?} (hang?)")),
        Got::Crash(msg) => Err(format!("CRASH: {msg}")),
        Got::Ok { stdout, stderr } => Ok(Outcome::Ok {
            stdout: replace_bytes(&stdout, dir_s.as_bytes(), PLACEHOLDER.as_bytes()),
            stderr: trim_nl(&stderr.join("\n").replace(&dir_s, PLACEHOLDER)),
        }),
        Got::Err(rendered) => Ok(Outcome::Err {
            stderr: trim_nl(&rendered.replace(&dir_s, PLACEHOLDER)),
        }),
    }
}

/// A minimal line diff (LCS), `-` expected, `+` got.
fn diff(expected: &str, got: &str) -> String {
    let a: Vec<&str> = expected.split('\n').collect();
    let b: Vec<&str> = got.split('\n').collect();
    if a.len() * b.len() > 4_000_000 {
        return format!("--- expected\n{expected}\n+++ got\n{got}\n");
    }
    let mut lcs = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let (mut i, mut j, mut out) = (0, 0, String::new());
    while i < a.len() || j < b.len() {
        if i < a.len() && j < b.len() && a[i] == b[j] {
            let _ = writeln!(out, "   {}", a[i]);
            i += 1;
            j += 1;
        } else if i < a.len() && (j == b.len() || lcs[i + 1][j] >= lcs[i][j + 1]) {
            let _ = writeln!(out, "  -{}", a[i]);
            i += 1;
        } else {
            let _ = writeln!(out, "  +{}", b[j]);
            j += 1;
        }
    }
    out
}

fn show(o: &Outcome) -> String {
    match o {
        Outcome::Ok { stdout, stderr } => {
            let mut s = format!("[exit 0] stdout: {}", String::from_utf8_lossy(stdout));
            if !stderr.is_empty() {
                let _ = write!(s, "\n[stderr] {stderr}");
            }
            s
        }
        Outcome::Err { stderr } => format!("[exit 1] {stderr}"),
    }
}

fn first_line(o: &Outcome) -> String {
    let s = match o {
        Outcome::Ok { stdout, .. } => format!("ok: {}", String::from_utf8_lossy(stdout)),
        Outcome::Err { stderr } => {
            let last = stderr
                .lines()
                .rev()
                .find(|l| l.trim_start().starts_with("error:"));
            format!(
                "err: {}",
                last.unwrap_or(stderr.lines().next().unwrap_or("")).trim()
            )
        }
    };
    let s = s.replace('\n', "⏎");
    if s.chars().count() > 140 {
        format!("{}…", s.chars().take(140).collect::<String>())
    } else {
        s
    }
}

/// Compares one case in every mode with goldens; returns (report, one-line summaries) on mismatch.
fn check_case(dir: &Path, case: &Case) -> Option<(String, Vec<String>)> {
    let mut report = String::new();
    let mut summary = Vec::new();
    let modes = [
        ("", OutputFormat::Nix, "nix"),
        (".json", OutputFormat::Json, "json"),
        (".raw", OutputFormat::Raw, "raw"),
        (".inst", OutputFormat::Instantiate, "instantiate"),
    ];
    for (suffix, format, label) in modes {
        let Some(expected) = golden(dir, &format!("{}{suffix}", case.name)) else {
            continue;
        };
        let got = run(dir, case, format);
        let got = match got {
            Ok(g) if g == expected => continue,
            Ok(g) => g,
            Err(problem) => {
                let _ = writeln!(
                    report,
                    "  [{label}] {problem}\n  expected: {}",
                    show(&expected)
                );
                summary.push(format!(
                    "{} [{label}]: expected {} | got {problem}",
                    case.name,
                    first_line(&expected)
                ));
                continue;
            }
        };
        summary.push(format!(
            "{} [{label}]: expected {} | got {}",
            case.name,
            first_line(&expected),
            first_line(&got)
        ));
        let _ = writeln!(report, "  [{label}]");
        report.push_str(&diff(&show(&expected), &show(&got)));
    }
    if summary.is_empty() {
        None
    } else {
        Some((report, summary))
    }
}

#[test]
fn lang_corpus() {
    if common::child_main_if_requested() {
        return;
    }
    let dir = corpus_dir();
    let filter = std::env::var("FLAKED_LANG_FILTER").ok();
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .expect("the corpus directory tests/lang exists")
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            e.file_name()
                .to_str()
                .and_then(|n| n.strip_suffix(".nix"))
                .map(str::to_string)
        })
        .filter(|n| filter.as_deref().is_none_or(|f| n.contains(f)))
        .collect();
    names.sort();
    assert!(
        filter.is_some() || names.len() >= 250,
        "the corpus lost cases: {} left",
        names.len()
    );

    let nyp_path = dir.join("notyetpassing.txt");
    let nyp_text = std::fs::read_to_string(&nyp_path).unwrap_or_default();
    let nyp: BTreeSet<String> = nyp_text
        .lines()
        .map(|l| l.split('#').next().unwrap_or("").trim().to_string())
        .filter(|l| !l.is_empty())
        .collect();
    let verbose = std::env::var_os("FLAKED_LANG_VERBOSE").is_some();

    let mut problems = Vec::new();
    let mut failing = BTreeSet::new();
    let mut summaries = Vec::new();
    let mut passed = 0usize;
    for name in &names {
        let case = parse_case(&dir, name);
        let has_golden = ["", ".json", ".raw", ".inst"]
            .iter()
            .any(|s| golden(&dir, &format!("{name}{s}")).is_some());
        if !has_golden {
            problems.push(format!(
                "{name}: no golden files (run scripts/regen-lang-goldens.sh {name})"
            ));
            continue;
        }
        match check_case(&dir, &case) {
            None => {
                passed += 1;
                if nyp.contains(name) {
                    problems.push(format!(
                        "{name}: passes now: remove it from tests/lang/notyetpassing.txt"
                    ));
                }
            }
            Some((report, summary)) => {
                failing.insert(name.clone());
                summaries.extend(summary);
                if !nyp.contains(name) {
                    problems.push(format!("{name}: differs from the reference:\n{report}"));
                } else if verbose {
                    eprintln!("(not yet passing) {name}:\n{report}");
                }
            }
        }
    }
    if filter.is_none() {
        for stale in nyp.iter().filter(|n| !names.contains(n)) {
            problems.push(format!(
                "{stale}: listed in notyetpassing.txt but no such case"
            ));
        }
    }
    eprintln!(
        "lang corpus: {} cases, {passed} pass, {} fail ({} listed as not yet passing)",
        names.len(),
        failing.len(),
        failing.iter().filter(|n| nyp.contains(*n)).count()
    );
    if let Some(path) = std::env::var_os("FLAKED_LANG_REPORT") {
        let _ = std::fs::write(path, summaries.join("\n") + "\n");
    }
    if std::env::var_os("FLAKED_LANG_WRITE_NYP").is_some() && filter.is_none() {
        let mut text = String::from(
            "# Cases of tests/lang that do not match the reference yet (one per line; the test asserts they\n\
             # still fail). Regenerate: FLAKED_LANG_WRITE_NYP=1 cargo test -p flaked-eval --test lang\n",
        );
        for n in &failing {
            text.push_str(n);
            text.push('\n');
        }
        std::fs::write(&nyp_path, text).expect("notyetpassing.txt is writable");
        eprintln!("rewrote {} ({} cases)", nyp_path.display(), failing.len());
        return;
    }
    assert!(
        problems.is_empty(),
        "{} problem(s):\n\n{}",
        problems.len(),
        problems.join("\n")
    );
}

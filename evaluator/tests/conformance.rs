//! Runs Nix's own language test-suite (`tests/functional/lang` of a NixOS/nix 2.26 checkout) through
//! `flaked_eval::api::evaluate` and prints how much of it we pass.
//!
//! It exists to measure conformance against the upstream suite without the upstream test driver: it
//! reproduces `tests/functional/lang.sh` (parse-okay / parse-fail / eval-fail / eval-okay, NIX_PATH,
//! `.flags` files, `/pwd` substitution). It does nothing unless `FLAKED_NIX_LANG_DIR` points at the
//! `tests/functional/lang` directory (see `scripts/conformance-lang.sh`). It is a measurement: it only
//! fails when `FLAKED_CONFORMANCE_STRICT=1` and something panicked or hung (the invariant we insist on:
//! bad input gets a clean error, never a panic or a hang).
//!
//! Parse checks go through `evaluate` with `EvalSource::Expr` (the facade has no parse-only entry
//! point): a parse failure is recognised by the class of its message (syntax error, undefined
//! variable, duplicate attribute/formal…), the errors Nix raises before evaluating.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use flaked_eval::api::{EvalRequest, EvalSettings, EvalSource, OutputFormat};

mod common;
use common::Got;

/// The upstream driver's bound for eval-fail cases (and ours for everything).
const TIMEOUT: Duration = Duration::from_secs(10);

/// `nix-instantiate --eval --strict` printing (`<LAMBDA>`, `<PRIMOP>`, derivations as attribute sets,
/// errors inside values fatal).
const INSTANTIATE_FORMAT: OutputFormat = OutputFormat::Instantiate;

fn run(req: EvalRequest) -> (Got, Duration) {
    let start = Instant::now();
    let got = common::run_isolated("nix_functional_lang_suite", &req, TIMEOUT);
    (got, start.elapsed())
}

/// Errors Nix reports while parsing (before any evaluation).
fn is_parse_error(rendered: &str) -> bool {
    let first = rendered
        .lines()
        .find(|l| l.trim_start().starts_with("error:"))
        .unwrap_or("");
    let msg = first.trim_start().trim_start_matches("error:").trim();
    [
        "syntax error",
        "undefined variable",
        "duplicate formal function argument",
        "invalid integer",
        "invalid float",
        "dynamic attributes not allowed",
        "path '",
        "URL literals are disabled",
        "experimental Nix feature",
    ]
    .iter()
    .any(|p| msg.starts_with(p))
        || (msg.starts_with("attribute '") && msg.contains("already defined at"))
}

fn first_error_line(s: &str) -> String {
    let l = s
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with("error:"))
        .unwrap_or_else(|| s.lines().next().unwrap_or(""))
        .trim()
        .to_string();
    if l.chars().count() > 150 {
        format!("{}…", l.chars().take(150).collect::<String>())
    } else {
        l
    }
}

fn one_line(s: &str) -> String {
    let s = s.trim_end().replace('\n', "⏎");
    if s.chars().count() > 110 {
        format!("{}…", s.chars().take(110).collect::<String>())
    } else {
        s
    }
}

/// `nix-instantiate --eval --strict FILE [--arg N E | --argstr N S]… [-A ATTR]` through the
/// evaluator core: parse, auto-call with the arguments, select, auto-call again, force deeply,
/// print as `printAmbiguous`. Runs on its own thread with a large stack, like the facade.
fn eval_with_auto_args(
    file: &Path,
    flags: &[&str],
    attr: Option<&str>,
    settings: &EvalSettings,
) -> Result<Vec<u8>, String> {
    use flaked_eval::eval::{AutoArg, Config, Evaluator};
    use flaked_eval::source::{Origin, Pos};
    use flaked_eval::symbol::Symbol;
    use flaked_eval::value::Value;

    let mut args = Vec::new();
    let mut i = 0;
    while i < flags.len() {
        match flags[i] {
            "--arg" if i + 2 < flags.len() => {
                args.push((
                    flags[i + 1].to_string(),
                    AutoArg::Expr(flags[i + 2].to_string()),
                ));
                i += 3;
            }
            "--argstr" if i + 2 < flags.len() => {
                args.push((
                    flags[i + 1].to_string(),
                    AutoArg::Str(flags[i + 2].to_string()),
                ));
                i += 3;
            }
            _ => i += 1,
        }
    }
    let config = Config {
        pure: settings.pure,
        cwd: settings.cwd.clone(),
        env: settings.env.clone(),
        nix_path: settings.nix_path.clone(),
        system: settings.system.clone(),
        store_dir: settings.store_dir.clone(),
        interrupt: None,
    };
    let file = file.to_path_buf();
    let attr = attr.map(str::to_string);
    let work = move || -> Result<Vec<u8>, String> {
        let mut ev = Evaluator::new(config);
        let raw = std::fs::read(&file).map_err(|e| e.to_string())?;
        let dir = file
            .parent()
            .unwrap_or(Path::new("/"))
            .to_string_lossy()
            .into_owned();
        let text = |e: flaked_eval::error::EvalError| e.msg().to_string();
        let expr = ev
            .parse(
                Origin::File(file.to_string_lossy().into_owned()),
                &raw,
                &dir,
            )
            .map_err(text)?;
        let auto = ev.auto_args(&args).map_err(text)?;
        let mut v = ev.eval_root(&expr).map_err(text)?;
        for name in attr.iter().flat_map(|a| a.split('.')) {
            let Value::Attrs(a) = ev.auto_call_function(&v, &auto).map_err(text)? else {
                return Err(format!("not a set at '{name}'"));
            };
            v = a
                .get(Symbol::intern(name))
                .ok_or_else(|| format!("attribute '{name}' missing"))?
                .value
                .clone();
        }
        let v = ev.auto_call_function(&v, &auto).map_err(text)?;
        let v = ev.force_deep(&v, Pos::NONE).map_err(text)?;
        let mut out = flaked_eval::print::print_ambiguous(&v);
        out.push(b'\n');
        Ok(out)
    };
    std::thread::Builder::new()
        .stack_size(256 << 20)
        .spawn(work)
        .map_err(|e| e.to_string())?
        .join()
        .map_err(|_| "panic".to_string())?
}

fn base_settings(functional: &Path) -> EvalSettings {
    let mut env = BTreeMap::new();
    env.insert("TEST_VAR".to_string(), "foo".to_string());
    env.insert("HOME".to_string(), "/fake-home".to_string());
    env.insert("NIX_STORE_DIR".to_string(), "/nix/store".to_string());
    EvalSettings {
        pure: false,
        cwd: functional.to_path_buf(),
        env,
        nix_path: vec![
            functional.join("lang/dir3").to_string_lossy().into_owned(),
            functional.join("lang/dir4").to_string_lossy().into_owned(),
        ],
        ..EvalSettings::default()
    }
}

fn cases(lang: &Path, prefix: &str) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(lang)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter_map(|e| e.file_name().to_str().map(str::to_string))
                .filter(|n| n.starts_with(prefix) && n.ends_with(".nix"))
                .map(|n| n.trim_end_matches(".nix").to_string())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

#[derive(Default)]
struct Tally {
    total: usize,
    good: usize,
    bad: Vec<String>,
}

#[test]
fn nix_functional_lang_suite() {
    if common::child_main_if_requested() {
        return;
    }
    let Some(lang) = std::env::var_os("FLAKED_NIX_LANG_DIR").map(PathBuf::from) else {
        eprintln!("FLAKED_NIX_LANG_DIR not set: skipping the upstream language suite");
        return;
    };
    let lang = lang.canonicalize().expect("FLAKED_NIX_LANG_DIR exists");
    let functional = lang.parent().expect("lang dir has a parent").to_path_buf();
    let pwd = functional.to_string_lossy().into_owned();
    let filter = std::env::var("FLAKED_CONFORMANCE_FILTER").ok();
    let keep = |n: &String| filter.as_deref().is_none_or(|f| n.contains(f));
    let mut crashes = Vec::new();
    let mut slow = Vec::new();

    let mut note = |name: &str, got: &Got, took: Duration, crashes: &mut Vec<String>| {
        match got {
            Got::Crash(m) => crashes.push(format!("{name}: CRASH {}", one_line(m))),
            Got::Timeout => crashes.push(format!("{name}: no answer within {TIMEOUT:?}")),
            _ => {}
        }
        if took > Duration::from_secs(2) {
            slow.push(format!("{name}: {:.1}s", took.as_secs_f64()));
        }
    };

    // parse-okay: must parse; parse-fail: must fail to parse. Both read from stdin upstream.
    let mut parse_okay = Tally::default();
    let mut parse_fail = Tally::default();
    for (prefix, should_parse, tally) in [
        ("parse-okay-", true, &mut parse_okay),
        ("parse-fail-", false, &mut parse_fail),
    ] {
        for name in cases(&lang, prefix).into_iter().filter(keep) {
            tally.total += 1;
            let text = match std::fs::read(lang.join(format!("{name}.nix"))) {
                Ok(b) => String::from_utf8_lossy(&b).into_owned(),
                Err(e) => {
                    tally.bad.push(format!("{name}: unreadable: {e}"));
                    continue;
                }
            };
            let req = EvalRequest {
                source: EvalSource::Expr(text),
                attr_path: None,
                output: OutputFormat::Nix,
                settings: base_settings(&functional),
            };
            let (got, took) = run(req);
            note(&name, &got, took, &mut crashes);
            let parsed = match &got {
                Got::Ok { .. } => Some(true),
                Got::Err(r) => Some(!is_parse_error(r)),
                Got::Crash(_) | Got::Timeout => None,
            };
            if parsed == Some(should_parse) {
                tally.good += 1;
            } else {
                let what = match &got {
                    Got::Ok { stdout, .. } => format!(
                        "evaluated to {}",
                        one_line(&String::from_utf8_lossy(stdout))
                    ),
                    Got::Err(r) => first_error_line(r),
                    Got::Crash(m) => format!("CRASH {}", one_line(m)),
                    Got::Timeout => "timeout".into(),
                };
                tally.bad.push(format!("{name}: {what}"));
            }
        }
    }

    // eval-fail: must fail cleanly (error on stderr, no panic, no hang).
    let mut eval_fail = Tally::default();
    // Bonus: eval-fail cases whose stderr equals .err.exp (upstream runs them with --show-trace,
    // which the facade has no knob for, so this is a lower bound).
    let mut eval_fail_exact = 0usize;
    for name in cases(&lang, "eval-fail-").into_iter().filter(keep) {
        eval_fail.total += 1;
        let mut settings = base_settings(&functional);
        // No NIX_PATH for eval-fail upstream.
        settings.nix_path.clear();
        let req = EvalRequest {
            source: EvalSource::File(lang.join(format!("{name}.nix"))),
            attr_path: None,
            output: INSTANTIATE_FORMAT,
            settings,
        };
        let (got, took) = run(req);
        note(&name, &got, took, &mut crashes);
        match got {
            Got::Err(r) if r.lines().any(|l| l.starts_with("error:")) => {
                eval_fail.good += 1;
                let want = std::fs::read_to_string(lang.join(format!("{name}.err.exp")))
                    .unwrap_or_default();
                if r.replace(&pwd, "/pwd").trim_end() == want.trim_end() {
                    eval_fail_exact += 1;
                }
            }
            Got::Err(r) => eval_fail
                .bad
                .push(format!("{name}: no 'error:' line: {}", one_line(&r))),
            Got::Ok { stdout, .. } => eval_fail.bad.push(format!(
                "{name}: succeeded: {}",
                one_line(&String::from_utf8_lossy(&stdout))
            )),
            Got::Crash(m) => eval_fail
                .bad
                .push(format!("{name}: CRASH {}", one_line(&m))),
            Got::Timeout => eval_fail.bad.push(format!("{name}: timeout")),
        }
    }

    // eval-okay: stdout must equal .exp (and stderr .err.exp where present).
    let mut eval_okay = Tally::default();
    let mut stderr_exact = 0usize;
    let mut classes: BTreeMap<&'static str, Vec<String>> = BTreeMap::new();
    for name in cases(&lang, "eval-okay-").into_iter().filter(keep) {
        if lang.join(format!("{name}.exp-disabled")).exists() {
            continue;
        }
        eval_okay.total += 1;
        if lang.join(format!("{name}.exp.xml")).exists() {
            // Upstream runs `nix-instantiate --eval --xml --no-location --strict`: Nix's
            // printValueAsXML without locations, which is exactly `builtins.toXML` of the value
            // (the facade has no XML output format yet, so the builtin is called directly).
            let file = lang.join(format!("{name}.nix"));
            let req = EvalRequest {
                source: EvalSource::Expr(format!(
                    "builtins.toXML (import {})",
                    file.to_string_lossy()
                )),
                attr_path: None,
                output: OutputFormat::Raw,
                settings: base_settings(&functional),
            };
            let (got, took) = run(req);
            note(&name, &got, took, &mut crashes);
            let expected = std::fs::read(lang.join(format!("{name}.exp.xml"))).unwrap_or_default();
            match &got {
                Got::Ok { stdout, .. } if *stdout == expected => {
                    eval_okay.good += 1;
                    stderr_exact += 1;
                }
                Got::Ok { stdout, .. } => {
                    classes
                        .entry("xml output differs")
                        .or_default()
                        .push(format!(
                            "{name}: want {} got {}",
                            one_line(&String::from_utf8_lossy(&expected)),
                            one_line(&String::from_utf8_lossy(stdout))
                        ))
                }
                Got::Err(r) => classes
                    .entry("xml output: evaluation error")
                    .or_default()
                    .push(format!("{name}: {}", first_error_line(r))),
                Got::Crash(m) => classes
                    .entry("panic")
                    .or_default()
                    .push(format!("{name}: {}", one_line(m))),
                Got::Timeout => classes.entry("timeout").or_default().push(name.clone()),
            }
            continue;
        }
        let mut settings = base_settings(&functional);
        let mut attr_path = None;
        let flags = std::fs::read_to_string(lang.join(format!("{name}.flags"))).unwrap_or_default();
        let flags: Vec<&str> = flags.split_whitespace().collect();
        let mut unsupported = Vec::new();
        let mut search = Vec::new();
        let mut i = 0;
        while i < flags.len() {
            match flags[i] {
                "-I" if i + 1 < flags.len() => {
                    let v = flags[i + 1];
                    let entry = match v.split_once('=') {
                        Some((k, p)) => format!("{k}={}", functional.join(p).to_string_lossy()),
                        None => functional.join(v).to_string_lossy().into_owned(),
                    };
                    search.push(entry);
                    i += 2;
                }
                "-A" if i + 1 < flags.len() => {
                    attr_path = Some(flags[i + 1].to_string());
                    i += 2;
                }
                f => {
                    unsupported.push(f.to_string());
                    i += 1;
                }
            }
        }
        search.append(&mut settings.nix_path);
        settings.nix_path = search;
        if unsupported.iter().any(|f| f == "--arg" || f == "--argstr") {
            // The facade has no automatic arguments yet: drive the evaluator's
            // `auto_args` / `auto_call_function` (Nix's getAutoArgs / autoCallFunction) directly.
            let file = lang.join(format!("{name}.nix"));
            let expected = std::fs::read(lang.join(format!("{name}.exp"))).unwrap_or_default();
            match eval_with_auto_args(&file, &flags, attr_path.as_deref(), &settings) {
                Ok(out) if out == expected => {
                    eval_okay.good += 1;
                    stderr_exact += 1;
                }
                Ok(out) => classes
                    .entry("auto-args: wrong value")
                    .or_default()
                    .push(format!(
                        "{name}: want {} got {}",
                        one_line(&String::from_utf8_lossy(&expected)),
                        one_line(&String::from_utf8_lossy(&out))
                    )),
                Err(e) => classes
                    .entry("auto-args: evaluation error")
                    .or_default()
                    .push(format!("{name}: {}", one_line(&e))),
            }
            continue;
        }
        let req = EvalRequest {
            source: EvalSource::File(lang.join(format!("{name}.nix"))),
            attr_path,
            output: INSTANTIATE_FORMAT,
            settings,
        };
        let (got, took) = run(req);
        note(&name, &got, took, &mut crashes);
        let expected = std::fs::read(lang.join(format!("{name}.exp"))).unwrap_or_default();
        let expected_err =
            std::fs::read_to_string(lang.join(format!("{name}.err.exp"))).unwrap_or_default();
        let (class, detail): (&'static str, String) = match &got {
            Got::Ok {
                stdout: out_stdout,
                stderr: out_stderr,
            } => {
                let stdout = String::from_utf8_lossy(out_stdout).replace(&pwd, "/pwd");
                if stdout.as_bytes() == expected.as_slice() {
                    eval_okay.good += 1;
                    let err = out_stderr.join("\n").replace(&pwd, "/pwd");
                    if err.trim_end() == expected_err.trim_end() {
                        stderr_exact += 1;
                    } else {
                        classes
                            .entry("stdout exact, stderr differs")
                            .or_default()
                            .push(format!(
                                "{name}: want {} got {}",
                                one_line(&expected_err),
                                one_line(&err)
                            ));
                    }
                    continue;
                }
                let exp = String::from_utf8_lossy(&expected);
                let inline_err = stdout.find("«error: ").map(|i| stdout[i..].to_string());
                let class = if inline_err.is_some_and(|e| {
                    e.contains("undefined variable")
                        || (e.contains("attribute '") && e.contains("missing"))
                }) {
                    "needs builtin / feature"
                } else if ["<LAMBDA>", "<PRIMOP>", "<PRIMOP-APP>", "<CODE>"]
                    .iter()
                    .any(|m| exp.contains(m))
                    || (stdout.contains("«derivation") && !exp.contains("«derivation"))
                {
                    "printing: needs instantiate-style output"
                } else {
                    "wrong value / printing"
                };
                (
                    class,
                    format!("want {} got {}", one_line(&exp), one_line(&stdout)),
                )
            }
            Got::Err(r) => {
                let line = first_error_line(&r.replace(&pwd, "/pwd"));
                let class = if !unsupported.is_empty() {
                    "needs command-line flags"
                } else if line.contains("undefined variable")
                    || (line.contains("attribute '") && line.contains("missing"))
                    || line.contains("not implemented")
                    || line.contains("unsupported")
                {
                    "needs builtin / feature"
                } else if line.contains("store") || line.contains(".drv") {
                    "store"
                } else {
                    "evaluation error (bug?)"
                };
                (class, line)
            }
            Got::Crash(m) => ("panic", one_line(m)),
            Got::Timeout => ("timeout", String::new()),
        };
        let flags_note = if unsupported.is_empty() {
            String::new()
        } else {
            format!(" [flags {}]", unsupported.join(" "))
        };
        classes
            .entry(class)
            .or_default()
            .push(format!("{name}: {detail}{flags_note}"));
    }

    let pct = |t: &Tally| {
        if t.total == 0 {
            0.0
        } else {
            100.0 * t.good as f64 / t.total as f64
        }
    };
    let mut report = String::new();
    let _ = writeln!(report, "== Nix functional lang suite ({})", lang.display());
    let _ = writeln!(
        report,
        "parse-okay parsed:        {}/{} ({:.0}%)",
        parse_okay.good,
        parse_okay.total,
        pct(&parse_okay)
    );
    let _ = writeln!(
        report,
        "parse-fail failed:        {}/{} ({:.0}%)",
        parse_fail.good,
        parse_fail.total,
        pct(&parse_fail)
    );
    let _ = writeln!(
        report,
        "eval-fail failed cleanly: {}/{} ({:.0}%); stderr == .err.exp: {eval_fail_exact}",
        eval_fail.good,
        eval_fail.total,
        pct(&eval_fail)
    );
    let _ = writeln!(
        report,
        "eval-okay exact stdout:   {}/{} ({:.0}%); stdout+stderr exact: {stderr_exact}",
        eval_okay.good,
        eval_okay.total,
        pct(&eval_okay)
    );
    let _ = writeln!(report, "panics/hangs: {}", crashes.len());
    for c in &crashes {
        let _ = writeln!(report, "  {c}");
    }
    for (title, t) in [
        ("parse-okay not parsed", &parse_okay),
        ("parse-fail parsed", &parse_fail),
        ("eval-fail not failing cleanly", &eval_fail),
    ] {
        if !t.bad.is_empty() {
            let _ = writeln!(report, "-- {title} ({})", t.bad.len());
            for b in &t.bad {
                let _ = writeln!(report, "  {b}");
            }
        }
    }
    for (class, items) in &classes {
        let _ = writeln!(report, "-- eval-okay: {class} ({})", items.len());
        for it in items {
            let _ = writeln!(report, "  {it}");
        }
    }
    if !slow.is_empty() {
        let _ = writeln!(report, "-- slow (>2s): {}", slow.join(", "));
    }
    eprint!("{report}");
    if let Some(path) = std::env::var_os("FLAKED_CONFORMANCE_REPORT") {
        let _ = std::fs::write(path, &report);
    }
    if std::env::var_os("FLAKED_CONFORMANCE_STRICT").is_some() {
        assert!(
            crashes.is_empty(),
            "panics or hangs:\n{}",
            crashes.join("\n")
        );
    }
}

//! Process isolation for conformance tests: each evaluation runs in a child process (the test binary
//! re-executed with a request file), so a stack overflow, abort or hang in the evaluator is reported
//! as that case's failure instead of killing the whole test run.
//!
//! Invariant: the parent always gets an answer for every request — the evaluator's output, its
//! diagnostic, a crash description (exit status + stderr tail) or a timeout (the child is killed).

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use flaked_eval::api::{EvalRequest, EvalSettings, EvalSource, OutputFormat, evaluate};

const CHILD_ENV: &str = "FLAKED_TEST_CHILD_REQUEST";

/// What one isolated evaluation produced.
#[derive(Debug)]
pub enum Got {
    Ok {
        stdout: Vec<u8>,
        stderr: Vec<String>,
    },
    Err(String),
    Crash(String),
    Timeout,
}

fn fmt_name(o: OutputFormat) -> &'static str {
    match o {
        OutputFormat::Nix => "nix",
        OutputFormat::Json => "json",
        OutputFormat::Raw => "raw",
        OutputFormat::Instantiate => "instantiate",
        OutputFormat::InstantiateJson { strict: false } => "instantiate-json",
        OutputFormat::InstantiateJson { strict: true } => "instantiate-json-strict",
    }
}

fn encode(req: &EvalRequest, dir: &Path) -> std::io::Result<String> {
    let mut s = String::new();
    match &req.source {
        EvalSource::File(p) => s.push_str(&format!("file\t{}\n", p.display())),
        EvalSource::Installable(i) => s.push_str(&format!("installable\t{i}\n")),
        EvalSource::Expr(e) => {
            let p = dir.join("expr.nix");
            std::fs::write(&p, e)?;
            s.push_str(&format!("exprfile\t{}\n", p.display()));
        }
    }
    if let Some(a) = &req.attr_path {
        s.push_str(&format!("attr\t{a}\n"));
    }
    s.push_str(&format!("output\t{}\n", fmt_name(req.output)));
    s.push_str(&format!("pure\t{}\n", req.settings.pure));
    s.push_str(&format!("cwd\t{}\n", req.settings.cwd.display()));
    for (k, v) in &req.settings.env {
        s.push_str(&format!("env\t{k}={v}\n"));
    }
    for p in &req.settings.nix_path {
        s.push_str(&format!("nixpath\t{p}\n"));
    }
    Ok(s)
}

fn decode(text: &str) -> Option<EvalRequest> {
    let mut source = None;
    let mut attr_path = None;
    let mut output = OutputFormat::Nix;
    let mut settings = EvalSettings {
        env: BTreeMap::new(),
        ..EvalSettings::default()
    };
    for line in text.lines() {
        let (k, v) = line.split_once('\t')?;
        match k {
            "file" => source = Some(EvalSource::File(PathBuf::from(v))),
            "installable" => source = Some(EvalSource::Installable(v.to_string())),
            "exprfile" => source = Some(EvalSource::Expr(std::fs::read_to_string(v).ok()?)),
            "attr" => attr_path = Some(v.to_string()),
            "output" => {
                output = match v {
                    "json" => OutputFormat::Json,
                    "raw" => OutputFormat::Raw,
                    "instantiate" => OutputFormat::Instantiate,
                    "instantiate-json" => OutputFormat::InstantiateJson { strict: false },
                    "instantiate-json-strict" => OutputFormat::InstantiateJson { strict: true },
                    _ => OutputFormat::Nix,
                }
            }
            "pure" => settings.pure = v == "true",
            "cwd" => settings.cwd = PathBuf::from(v),
            "env" => {
                let (a, b) = v.split_once('=')?;
                settings.env.insert(a.to_string(), b.to_string());
            }
            "nixpath" => settings.nix_path.push(v.to_string()),
            _ => return None,
        }
    }
    Some(EvalRequest {
        source: source?,
        attr_path,
        output,
        settings,
    })
}

/// In the child: evaluates the request named by the environment and writes the answer next to it.
/// Returns true when this process is such a child (the test body must then return at once).
pub fn child_main_if_requested() -> bool {
    let Some(req_path) = std::env::var_os(CHILD_ENV).map(PathBuf::from) else {
        return false;
    };
    let dir = req_path
        .parent()
        .expect("request file has a parent")
        .to_path_buf();
    let text = std::fs::read_to_string(&req_path).expect("request file readable");
    let req = decode(&text).expect("request file well-formed");
    // Store objects (derivations, imported paths) go to a private root inside the case's directory,
    // which the parent removes: tests never write to the machine's real store, even as root.
    flaked_eval::store_path::set_store_root(Some(dir.join("store-root")));
    match evaluate(&req) {
        Ok(out) => {
            std::fs::write(dir.join("stdout"), &out.stdout).expect("write stdout");
            std::fs::write(dir.join("stderr"), out.stderr.join("\u{0}")).expect("write stderr");
            std::fs::write(dir.join("kind"), "ok").expect("write kind");
        }
        Err(d) => {
            // Everything nix prints on stderr: earlier trace/warning lines, then the error.
            let mut all = String::new();
            for line in &d.log {
                all.push_str(line);
                all.push('\n');
            }
            all.push_str(&d.rendered);
            std::fs::write(dir.join("stderr"), &all).expect("write stderr");
            std::fs::write(dir.join("kind"), "err").expect("write kind");
        }
    }
    true
}

/// Runs `req` in a child process of the current test binary (test function `test_name`).
pub fn run_isolated(test_name: &str, req: &EvalRequest, timeout: Duration) -> Got {
    static COUNTER: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("flaked-lang-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    if let Err(e) = std::fs::create_dir_all(&dir) {
        return Got::Crash(format!("cannot create {}: {e}", dir.display()));
    }
    let got = run_in(&dir, test_name, req, timeout);
    let _ = std::fs::remove_dir_all(&dir);
    got
}

fn run_in(dir: &Path, test_name: &str, req: &EvalRequest, timeout: Duration) -> Got {
    let req_path = dir.join("request");
    match encode(req, dir).and_then(|t| std::fs::write(&req_path, t)) {
        Ok(()) => {}
        Err(e) => return Got::Crash(format!("cannot write the request: {e}")),
    }
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => return Got::Crash(format!("no current_exe: {e}")),
    };
    let child = Command::new(exe)
        .args([
            test_name,
            "--exact",
            "--nocapture",
            "--test-threads=1",
            "-q",
        ])
        .env(CHILD_ENV, &req_path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => return Got::Crash(format!("cannot spawn: {e}")),
    };
    let start = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(st)) => break st,
            Ok(None) if start.elapsed() > timeout => {
                let _ = child.kill();
                let _ = child.wait();
                return Got::Timeout;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => return Got::Crash(format!("wait failed: {e}")),
        }
    };
    let mut child_err = String::new();
    if let Some(mut e) = child.stderr.take() {
        use std::io::Read;
        let _ = e.read_to_string(&mut child_err);
    }
    match std::fs::read_to_string(dir.join("kind")).as_deref() {
        Ok("ok") => Got::Ok {
            stdout: std::fs::read(dir.join("stdout")).unwrap_or_default(),
            stderr: std::fs::read_to_string(dir.join("stderr"))
                .map(|s| {
                    if s.is_empty() {
                        Vec::new()
                    } else {
                        s.split('\u{0}').map(str::to_string).collect()
                    }
                })
                .unwrap_or_default(),
        },
        Ok("err") => Got::Err(std::fs::read_to_string(dir.join("stderr")).unwrap_or_default()),
        _ => {
            let tail: Vec<&str> = child_err.lines().filter(|l| !l.trim().is_empty()).collect();
            let tail = tail[tail.len().saturating_sub(3)..].join(" | ");
            Got::Crash(format!("child died ({status}): {tail}"))
        }
    }
}

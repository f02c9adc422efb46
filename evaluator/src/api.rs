//! The facade between the evaluator and its callers (the daemon, tests, benchmarks).
//!
//! Callers hand over a self-contained request and get back exactly the bytes `nix eval` would print,
//! or a diagnostic rendered exactly as `nix` renders it. The evaluator owns its threads and stack
//! discipline: `evaluate` blocks the calling thread and is safe to call from many threads at once.

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::error::{EvalError, best_matches};
use crate::eval::{Config, Evaluator};
use crate::lower;
use crate::print;
use crate::source::{self, Origin, Pos};
use crate::symbol::Symbol;
use crate::value::{Context, Value};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

/// What to evaluate.
#[derive(Debug, Clone)]
pub enum EvalSource {
    /// An expression given as text (`nix eval --expr`).
    Expr(String),
    /// A file (`nix eval --file`).
    File(PathBuf),
    /// A flake installable `FLAKEREF#ATTRPATH` (`nix eval FLAKEREF#ATTRPATH`), resolved against
    /// `settings.cwd`. The attribute path is tried as Nix 2.26's `nix eval` does:
    /// `packages.<system>.A`, `legacyPackages.<system>.A`, then `A` (a leading `.` means exactly
    /// `A`; no fragment means `packages.<system>.default`, `defaultPackage.<system>`). The flake
    /// is locked first (writing `flake.lock` when `settings.write_lock_file` and it changed, with
    /// Nix's warnings in `stderr`). `EvalRequest::attr_path`, if set, is selected from the result.
    Installable(String),
}

/// How to print the result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputFormat {
    /// `nix eval` (Nix syntax).
    Nix,
    /// `nix eval --json`.
    Json,
    /// `nix eval --raw`.
    Raw,
    /// `nix-instantiate --eval --strict` (value forced deeply, printed with `<LAMBDA>`,
    /// `<PRIMOP>`, `<PRIMOP-APP>`, derivations as plain sets; newline).
    Instantiate,
    /// `nix-instantiate --eval --json [--strict]`: JSON as `nix eval --json` prints it, except
    /// that paths are copied to the store (their store paths are printed) and, without
    /// `strict`, nothing below the top-level value is forced (a value not evaluated yet is
    /// the error "cannot convert a thunk to JSON", as in Nix).
    InstantiateJson { strict: bool },
}

/// Everything on the caller's side that an answer can depend on.
#[derive(Debug, Clone)]
pub struct EvalSettings {
    pub pure: bool,
    pub cwd: PathBuf,
    pub env: BTreeMap<String, String>,
    pub nix_path: Vec<String>,
    pub system: String,
    pub store_dir: String,
    pub interrupt: Option<Arc<AtomicBool>>,
    /// Fetcher cache directory for flakes (`None`: `$XDG_CACHE_HOME/flaked`, else
    /// `$HOME/.cache/flaked`, of the process).
    pub flake_cache_dir: Option<PathBuf>,
    /// The global flake registry: a local file path (Nix's `flake-registry`; `None` = off; it
    /// is never downloaded).
    pub flake_registry: Option<String>,
    /// The user flake registry file (`~/.config/nix/registry.json` in Nix; `None` = off).
    pub user_registry: Option<PathBuf>,
    /// Write a changed `flake.lock` (false = `--no-write-lock-file`).
    pub write_lock_file: bool,
    /// `--override-input INPUT-PATH FLAKEREF` pairs, in order.
    pub override_inputs: Vec<(String, String)>,
}

impl Default for EvalSettings {
    fn default() -> Self {
        EvalSettings {
            pure: true,
            cwd: PathBuf::from("/"),
            env: BTreeMap::new(),
            nix_path: Vec::new(),
            system: "x86_64-linux".to_string(),
            store_dir: "/nix/store".to_string(),
            interrupt: None,
            flake_cache_dir: None,
            flake_registry: None,
            user_registry: None,
            write_lock_file: true,
            override_inputs: Vec::new(),
        }
    }
}

/// What `nix flake lock` / `nix flake update` are asked to do.
#[derive(Debug, Clone)]
pub struct LockOptions {
    /// Inputs to update (`nix flake update A B`, `--update-input A/B`), as input paths
    /// (`a/b`). Empty with `recreate = false`: lock only what is missing (`nix flake lock`).
    pub update_inputs: Vec<String>,
    /// `--override-input INPUT-PATH FLAKEREF` (in addition to `EvalSettings::override_inputs`).
    pub override_inputs: Vec<(String, String)>,
    /// Ignore the existing lock file (`--recreate-lock-file`; `nix flake update` without
    /// arguments).
    pub recreate: bool,
    /// Write the result (false = `--no-write-lock-file`).
    pub write: bool,
}

impl Default for LockOptions {
    fn default() -> Self {
        LockOptions {
            update_inputs: Vec::new(),
            override_inputs: Vec::new(),
            recreate: false,
            write: true,
        }
    }
}

pub use crate::flake::commands::{installable_attr_paths, parse_attr_path};
pub use crate::flake::warm::{
    AttrInfo, CacheLeaf, CacheNote, FlakeFingerprint, WarmFlake, render_leaf,
};
pub use crate::installables::FoundDerivation;
pub use crate::search::{
    SearchEntry, SearchHit, SearchIndex, SearchQuery, root_paths as search_roots,
};

/// One evaluation request.
#[derive(Debug, Clone)]
pub struct EvalRequest {
    pub source: EvalSource,
    pub attr_path: Option<String>,
    pub output: OutputFormat,
    pub settings: EvalSettings,
}

/// A source position, 1-based.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    pub file: String,
    pub line: u32,
    pub column: u32,
}

/// One `… while evaluating …` frame of an error trace.
#[derive(Debug, Clone)]
pub struct TraceFrame {
    pub message: String,
    pub position: Option<Position>,
}

/// An evaluation error, structured and rendered.
#[derive(Debug, Clone)]
pub struct Diagnostic {
    pub message: String,
    pub position: Option<Position>,
    pub trace: Vec<TraceFrame>,
    /// Exactly what `nix` prints on stderr for this error (starts with `error:`, ends with a
    /// newline).
    pub rendered: String,
    /// Trace/warning lines printed before the error (e.g. by `builtins.trace`), in order.
    pub log: Vec<String>,
}

/// A successful evaluation's output.
#[derive(Debug, Clone, Default)]
pub struct EvalOutput {
    /// Exactly what `nix eval` prints on stdout.
    pub stdout: Vec<u8>,
    /// Trace and warning lines, in order, as `nix` prints them on stderr.
    pub stderr: Vec<String>,
}

/// Evaluates a request. Blocking; runs on a dedicated large-stack thread.
///
/// `settings.pure` is honoured as given (`nix eval --expr` is pure by default; `nix eval --file`
/// is not: callers decide). The evaluation's whole memory is released on its thread right after
/// the answer was handed back, before that thread evaluates anything else.
#[allow(clippy::result_large_err)] // the facade's signature is fixed by the team brief
pub fn evaluate(req: &EvalRequest) -> Result<EvalOutput, Diagnostic> {
    let req = req.clone();
    let settings = req.settings.clone();
    with_evaluator_output(&settings, move |ev| run_in(ev, &req))
}

impl Diagnostic {
    /// A diagnostic without position or trace, rendered as `error: MESSAGE`.
    pub fn plain(message: impl Into<String>) -> Diagnostic {
        let message = message.into();
        Diagnostic {
            rendered: format!("error: {message}\n"),
            message,
            position: None,
            trace: Vec::new(),
            log: Vec::new(),
        }
    }
}

fn to_position(pos: Pos) -> Option<Position> {
    source::resolve(pos).map(|r| Position {
        file: r.src.origin_name(),
        line: r.line,
        column: r.column,
    })
}

fn to_diagnostic(e: &EvalError) -> Diagnostic {
    Diagnostic {
        message: e.0.msg.clone(),
        position: to_position(e.0.pos),
        trace: e
            .0
            .trace
            .iter()
            .rev()
            .map(|f| TraceFrame {
                message: f.msg.clone(),
                position: to_position(f.pos),
            })
            .collect(),
        rendered: e.render(),
        log: Vec::new(),
    }
}

pub(crate) fn auto_call(ev: &mut Evaluator, v: &Value) -> Result<Value, EvalError> {
    let v = ev.force(v, Pos::NONE)?;
    if let Value::Attrs(a) = &v
        && let Some(f) = a.get(ev.syms.functor)
    {
        let fv = f.value.clone();
        let r = ev.call(&fv, std::slice::from_ref(&v), Pos::NONE)?;
        return auto_call(ev, &r);
    }
    if let Value::Lambda(c) = &v
        && let Some(formals) = &c.def.formals
    {
        if !formals.ellipsis {
            for f in &formals.entries {
                if f.default.is_none() {
                    return Err(EvalError::eval(format!(
                        "cannot evaluate a function that has an argument without a value ('{}')\nNix attempted to evaluate a function as a top level expression; in\nthis case it must have its arguments supplied either by default\nvalues, or passed explicitly with '--arg' or '--argstr'. See\nhttps://nixos.org/manual/nix/stable/language/constructs.html#functions.",
                        f.name
                    ))
                    .at(f.pos));
                }
            }
        }
        return ev.call(&v, &[Value::empty_attrs()], Pos::NONE);
    }
    Ok(v)
}

pub(crate) fn select_path(ev: &mut Evaluator, root: Value, path: &str) -> Result<Value, EvalError> {
    let mut v = root;
    for attr in parse_attr_path(path) {
        v = auto_call(ev, &v)?;
        let index = attr.parse::<u32>().ok();
        match index {
            None => {
                let Value::Attrs(a) = &v else {
                    return Err(EvalError::type_error(format!(
                        "the expression selected by the selection path '{path}' should be a set but is {}",
                        v.type_desc()
                    )));
                };
                if attr.is_empty() {
                    return Err(EvalError::eval(format!(
                        "empty attribute name in selection path '{path}'"
                    )));
                }
                let sym = Symbol::intern(&attr);
                match a.get(sym) {
                    Some(x) => v = x.value.clone(),
                    None => {
                        let names: Vec<String> =
                            a.entries.iter().map(|x| x.name.as_string()).collect();
                        return Err(EvalError::eval(format!(
                            "attribute '{attr}' in selection path '{path}' not found"
                        ))
                        .with_suggestions(best_matches(&names, &attr)));
                    }
                }
            }
            Some(i) => {
                let Value::List(l) = &v else {
                    return Err(EvalError::type_error(format!(
                        "the expression selected by the selection path '{path}' should be a list but is {}",
                        v.type_desc()
                    )));
                };
                match l.get(i as usize) {
                    Some(x) => v = x.clone(),
                    None => {
                        return Err(EvalError::eval(format!(
                            "list index {i} in selection path '{path}' is out of range"
                        )));
                    }
                }
            }
        }
    }
    Ok(v)
}

fn run_in(ev: &mut Evaluator, req: &EvalRequest) -> Result<Vec<u8>, EvalError> {
    let root = source_value(ev, req)?;
    let v = match &req.attr_path {
        Some(p) if !p.is_empty() => select_path(ev, root, p)?,
        _ => root,
    };
    print_output(ev, &v, req.output)
}

/// The derivations `nix build -f FILE ATTR…` / `--expr E ATTR…` builds: for each installable
/// (an attribute path in the value of `req.source`, and whether it names its outputs, `a^out`),
/// the derivations it stands for and the outputs to install by default (see
/// [`crate::installables`]). Errors carry the positions and trace of the source alone, as Nix's
/// do. `req.attr_path` and `req.output` are not used. Blocking, like [`evaluate`]; also answers
/// the trace and warning lines printed on the way.
#[allow(clippy::result_large_err)] // the facade's error type, as `evaluate`
pub fn installable_derivations(
    req: &EvalRequest,
    installables: &[(String, bool)],
) -> Result<(Vec<Vec<FoundDerivation>>, Vec<String>), Diagnostic> {
    let req = req.clone();
    let installables = installables.to_vec();
    let settings = req.settings.clone();
    with_evaluator(&settings, move |ev| {
        let root = source_value(ev, &req)?;
        let mut all = Vec::with_capacity(installables.len());
        for (path, explicit) in &installables {
            all.push(crate::installables::derivations_at(
                ev, &root, path, *explicit,
            )?);
        }
        Ok(all)
    })
}

/// The value of a request's source (before its attribute path is selected).
fn source_value(ev: &mut Evaluator, req: &EvalRequest) -> Result<Value, EvalError> {
    let cwd = req.settings.cwd.display().to_string();
    Ok(match &req.source {
        EvalSource::Installable(text) => {
            let fs = flake_settings(&req.settings, &LockOptions::default())?;
            let opened = crate::flake::warm::open_flake(ev, text, &fs)?;
            ev.stderr.extend(opened.locked.warnings.iter().cloned());
            let (v, _) = crate::flake::commands::select_installable(
                ev,
                &opened.outputs,
                &opened.shown_ref,
                &opened.fragment,
                &req.settings.system,
            )?;
            v
        }
        EvalSource::Expr(text) => {
            let e = ev.parse(Origin::String, text.as_bytes(), &cwd)?;
            ev.eval_root(&e)?
        }
        EvalSource::File(p) => {
            let abs = if p.is_absolute() {
                p.clone()
            } else {
                req.settings.cwd.join(p)
            };
            let abs = PathBuf::from(lower::canon_path(&abs.display().to_string()));
            let abs = if abs.is_dir() {
                abs.join("default.nix")
            } else {
                abs
            };
            crate::builtins::import::eval_file(ev, &abs)?
        }
    })
}

/// Prints a value as `nix eval` does in the given format.
pub(crate) fn print_output(
    ev: &mut Evaluator,
    v: &Value,
    output: OutputFormat,
) -> Result<Vec<u8>, EvalError> {
    let v = ev.force(v, Pos::NONE)?;
    match output {
        OutputFormat::Nix => {
            let mut out = print::print_value(ev, &v)?;
            out.push(b'\n');
            Ok(out)
        }
        OutputFormat::Json => {
            let mut ctx = Context::new();
            let mut out = print::to_json(ev, &v, Pos::NONE, false, &mut ctx)?;
            out.push(b'\n');
            Ok(out)
        }
        OutputFormat::InstantiateJson { strict } => {
            let mut ctx = Context::new();
            let mut out = if strict {
                print::to_json(ev, &v, Pos::NONE, true, &mut ctx)?
            } else {
                print::to_json_lazy(ev, &v, Pos::NONE, true, &mut ctx)?
            };
            out.push(b'\n');
            Ok(out)
        }
        OutputFormat::Instantiate => {
            let v = ev.force_deep(&v, Pos::NONE)?;
            let mut out = print::print_ambiguous(&v);
            out.push(b'\n');
            Ok(out)
        }
        OutputFormat::Raw => {
            let mut ctx = Context::new();
            ev.coerce_to_string(
                &v,
                Pos::NONE,
                "while generating the eval command output",
                false,
                true,
                &mut ctx,
            )
        }
    }
}

/// The process's default fetcher cache directory for flakes.
pub(crate) fn default_flake_cache_dir() -> PathBuf {
    if let Some(x) = std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(x).join("flaked");
    }
    if let Some(h) = std::env::var_os("HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(h).join(".cache/flaked");
    }
    std::env::temp_dir().join("flaked-cache")
}

/// Parses an input path argument (`a/b`) with Nix's message on error.
fn input_path_arg(s: &str) -> Result<Vec<String>, EvalError> {
    flaked_store::fetchers::lockfile::parse_input_path(s)
        .map_err(|e| EvalError::eval(e.to_string()))
}

/// The flake settings of an evaluation (command-line reference parsing against `cwd`).
pub(crate) fn flake_settings(
    s: &EvalSettings,
    opts: &LockOptions,
) -> Result<crate::flake::FlakeSettings, EvalError> {
    use flaked_store::fetchers::{FlakeRef, ParseOptions, Registries, Registry, RegistryType};
    let cache = s
        .flake_cache_dir
        .clone()
        .unwrap_or_else(default_flake_cache_dir);
    let mut fs = crate::flake::FlakeSettings::new(cache, s.cwd.clone());
    fs.write_lock_file = s.write_lock_file && opts.write;
    fs.recreate_lock_file = opts.recreate;
    for u in &opts.update_inputs {
        fs.update_inputs.push(input_path_arg(u)?);
    }
    let parse = ParseOptions {
        base_dir: Some(s.cwd.clone()),
        ..ParseOptions::default()
    };
    for (p, r) in s.override_inputs.iter().chain(opts.override_inputs.iter()) {
        let r = FlakeRef::parse(r, &parse).map_err(|e| EvalError::eval(e.to_string()))?;
        fs.override_inputs.push((input_path_arg(p)?, r));
    }
    let global = s.flake_registry.as_ref().map(PathBuf::from);
    fs.registries = Some(Registries::load(
        Registry::new(RegistryType::Flag),
        s.user_registry.as_deref(),
        None,
        global.as_deref(),
    ));
    Ok(fs)
}

/// Runs `f` on a fresh evaluator on an evaluation thread and answers what it returned, with the
/// trace and warning lines printed on the way (or the diagnostic of its error, those lines in its
/// `log`). The evaluator's memory is released after the answer was handed back
/// ([`crate::eval_pool::drop_after_answer`]), before the thread evaluates anything else.
#[allow(clippy::result_large_err)]
fn with_evaluator<T, F>(settings: &EvalSettings, f: F) -> Result<(T, Vec<String>), Diagnostic>
where
    F: FnOnce(&mut Evaluator) -> Result<T, EvalError> + Send + 'static,
    T: Send + 'static,
{
    let s = settings.clone();
    let answer = crate::eval_pool::run(move || {
        let mut ev = Evaluator::new(config_of(&s));
        if let Ok(fs) = flake_settings(&s, &LockOptions::default()) {
            crate::flake::set_context(Some(fs));
        }
        let r = f(&mut ev);
        let log = std::mem::take(&mut ev.stderr);
        let out = match r {
            Ok(value) => Ok((value, log)),
            Err(e) => {
                let mut d = to_diagnostic(&e);
                d.log = log;
                Err(d)
            }
        };
        crate::eval_pool::drop_after_answer(ev);
        out
    });
    answer.unwrap_or_else(|panic| {
        Err(Diagnostic::plain(format!(
            "internal error: the evaluator thread panicked: {panic}"
        )))
    })
}

/// [`with_evaluator`] for an answer that is what `nix` prints on stdout.
#[allow(clippy::result_large_err)]
fn with_evaluator_output<F>(settings: &EvalSettings, f: F) -> Result<EvalOutput, Diagnostic>
where
    F: FnOnce(&mut Evaluator) -> Result<Vec<u8>, EvalError> + Send + 'static,
{
    with_evaluator(settings, f).map(|(stdout, stderr)| EvalOutput { stdout, stderr })
}

/// Runs `job` on one of the evaluator's large-stack threads without blocking the caller; `done`
/// receives its result, or the message of its panic, on that thread. The facade's blocking
/// functions called inside `job` run right there instead of handing over to another thread, so an
/// async caller pays one thread hand-off each way. `Err` (and neither closure runs) when no thread
/// could be started.
pub fn spawn_on_eval_thread<R, F, D>(job: F, done: D) -> Result<(), String>
where
    F: FnOnce() -> R + Send + 'static,
    D: FnOnce(Result<R, String>) + Send + 'static,
    R: 'static,
{
    crate::eval_pool::spawn(job, done)
}

/// The evaluator configuration of a request's settings.
pub(crate) fn config_of(s: &EvalSettings) -> Config {
    Config {
        pure: s.pure,
        cwd: s.cwd.clone(),
        env: s.env.clone(),
        nix_path: s.nix_path.clone(),
        system: s.system.clone(),
        store_dir: s.store_dir.clone(),
        interrupt: s.interrupt.clone(),
    }
}

/// Converts an evaluation error into the facade's diagnostic.
pub(crate) fn diagnostic_of(e: &EvalError) -> Diagnostic {
    to_diagnostic(e)
}

/// `nix flake lock` (and `nix flake update [INPUTS]` with `update_inputs`/`recreate`): locks
/// the flake, writes `flake.lock` if it changed and `opts.write`. `stdout` is empty; `stderr`
/// has Nix's warnings (`warning: creating lock file '"…/flake.lock"': ` followed by the
/// `• Added input …` lines, uncoloured), one entry per warning.
#[allow(clippy::result_large_err)]
pub fn flake_lock(
    flake_ref: &str,
    settings: &EvalSettings,
    opts: &LockOptions,
) -> Result<EvalOutput, Diagnostic> {
    let r = flake_ref.to_string();
    let fs = flake_settings(settings, opts).map_err(|e| to_diagnostic(&e));
    let fs = fs?;
    with_evaluator_output(settings, move |ev| {
        let locked = crate::flake::lock_flake(ev, &r, &fs).map_err(|e| e.into_eval())?;
        ev.stderr.extend(locked.warnings.iter().cloned());
        Ok(Vec::new())
    })
}

/// `nix flake metadata [--json]`: locks the flake like Nix (writing `flake.lock` when it
/// changed and `settings.write_lock_file`) and prints its metadata. JSON: one line and a
/// newline, keys as Nix's; text: Nix's layout (times in UTC).
#[allow(clippy::result_large_err)]
pub fn flake_metadata(
    flake_ref: &str,
    settings: &EvalSettings,
    json: bool,
) -> Result<EvalOutput, Diagnostic> {
    let r = flake_ref.to_string();
    let fs = flake_settings(settings, &LockOptions::default()).map_err(|e| to_diagnostic(&e))?;
    with_evaluator_output(settings, move |ev| {
        let locked = crate::flake::lock_flake(ev, &r, &fs).map_err(|e| e.into_eval())?;
        ev.stderr.extend(locked.warnings.iter().cloned());
        let mut out = if json {
            crate::flake::commands::metadata_json(&locked, &fs.fetch.input)
        } else {
            crate::flake::commands::metadata_text(&locked, &fs.fetch.input)
        };
        if json {
            out.push('\n');
        }
        Ok(out.into_bytes())
    })
}

/// `nix flake show [--json] [--all-systems]`: the flake's outputs by type. With `json`, the
/// "omitted" notes go to `stderr` as Nix's warnings.
#[allow(clippy::result_large_err)]
pub fn flake_show(
    flake_ref: &str,
    settings: &EvalSettings,
    json: bool,
    all_systems: bool,
) -> Result<EvalOutput, Diagnostic> {
    let r = flake_ref.to_string();
    let fs = flake_settings(settings, &LockOptions::default()).map_err(|e| to_diagnostic(&e))?;
    let system = settings.system.clone();
    with_evaluator_output(settings, move |ev| {
        let opened = crate::flake::warm::open_flake(ev, &r, &fs)?;
        ev.stderr.extend(opened.locked.warnings.iter().cloned());
        let opts = crate::flake::commands::ShowOptions {
            system,
            all_systems,
            legacy: false,
        };
        let (out, warnings) =
            crate::flake::commands::show(ev, &opened.locked, &opened.outputs, &opts, json)?;
        ev.stderr.extend(warnings);
        Ok(out.into_bytes())
    })
}

/// The options of `nix flake show`.
#[derive(Debug, Clone, Copy, Default)]
pub struct FlakeShowOptions {
    /// `--json`.
    pub json: bool,
    /// `--all-systems`: outputs of every system, not only `settings.system`'s.
    pub all_systems: bool,
    /// `--legacy`: the contents of `legacyPackages` (derivations at most two levels below a
    /// system; errors inside are ignored, as in Nix).
    pub legacy: bool,
}

/// `nix flake show` with all its options (`flake_show` is this without `--legacy`). With
/// `json`, the "omitted" notes go to `stderr` as Nix's warnings.
#[allow(clippy::result_large_err)]
pub fn flake_show_with(
    flake_ref: &str,
    settings: &EvalSettings,
    options: &FlakeShowOptions,
) -> Result<EvalOutput, Diagnostic> {
    let r = flake_ref.to_string();
    let fs = flake_settings(settings, &LockOptions::default()).map_err(|e| to_diagnostic(&e))?;
    let opts = crate::flake::commands::ShowOptions {
        system: settings.system.clone(),
        all_systems: options.all_systems,
        legacy: options.legacy,
    };
    let json = options.json;
    with_evaluator_output(settings, move |ev| {
        let opened = crate::flake::warm::open_flake(ev, &r, &fs)?;
        ev.stderr.extend(opened.locked.warnings.iter().cloned());
        let (out, warnings) =
            crate::flake::commands::show(ev, &opened.locked, &opened.outputs, &opts, json)?;
        ev.stderr.extend(warnings);
        Ok(out.into_bytes())
    })
}

/// Evaluates a request like [`evaluate`], hands the answer to `finish` on the evaluation
/// thread, and ends the process with the exit code `finish` returns — without releasing the
/// evaluation's memory first.
///
/// For one-shot command-line tools (`feval`): tearing a large evaluation down (clearing every
/// registered cell, then freeing every value) costs up to a tenth of the whole run and raises
/// the peak memory, while the operating system reclaims the memory at exit anyway (Nix never
/// frees at exit either). A long-running process (the daemon) must use [`evaluate`], which
/// releases everything. `finish` must flush what it writes: no destructor runs after it.
pub fn evaluate_and_exit<F>(req: &EvalRequest, finish: F) -> !
where
    F: FnOnce(Result<EvalOutput, Diagnostic>) -> i32 + Send + 'static,
{
    let req = req.clone();
    let spawned = std::thread::Builder::new()
        .name("flaked-eval".to_string())
        .stack_size(ONE_SHOT_STACK)
        .spawn(move || {
            let mut ev = Evaluator::new(config_of(&req.settings));
            if let Ok(fs) = flake_settings(&req.settings, &LockOptions::default()) {
                crate::flake::set_context(Some(fs));
            }
            let out = match run_in(&mut ev, &req) {
                Ok(stdout) => Ok(EvalOutput {
                    stdout,
                    stderr: std::mem::take(&mut ev.stderr),
                }),
                Err(e) => {
                    let mut d = to_diagnostic(&e);
                    d.log = std::mem::take(&mut ev.stderr);
                    Err(d)
                }
            };
            let code = finish(out);
            std::process::exit(code);
        });
    // Only reached if the evaluation thread could not start or panicked before `finish` exited.
    let msg = match spawned {
        Ok(h) => match h.join() {
            Err(_) => "internal error: the evaluator thread panicked".to_string(),
            Ok(_) => "internal error: the evaluator thread returned".to_string(),
        },
        Err(e) => format!("cannot start the evaluator thread: {e}"),
    };
    let _ = std::io::Write::write_all(
        &mut std::io::stderr(),
        Diagnostic::plain(msg).rendered.as_bytes(),
    );
    std::process::exit(1)
}

/// Reserved stack of [`evaluate_and_exit`]'s thread (only touched pages are committed).
const ONE_SHOT_STACK: usize = 1 << 30;

/// [`evaluate`] on the calling thread (for tests of what a thread keeps between evaluations):
/// a fresh evaluator, then the end-of-evaluation clean-up of a pooled thread.
#[cfg(test)]
#[allow(clippy::result_large_err)]
pub(crate) fn evaluate_on_this_thread(req: &EvalRequest) -> Result<EvalOutput, Diagnostic> {
    let mut ev = Evaluator::new(config_of(&req.settings));
    let out = match run_in(&mut ev, req) {
        Ok(stdout) => Ok(EvalOutput {
            stdout,
            stderr: std::mem::take(&mut ev.stderr),
        }),
        Err(e) => Err(to_diagnostic(&e)),
    };
    drop(ev);
    crate::source::lowered::end_evaluation();
    out
}

//! Warm flakes: a locked, called flake kept alive between requests on one dedicated evaluator
//! thread, so that repeated queries answer from values already evaluated.
//!
//! Why: evaluator values are `Rc`-based and not `Send`, so a flake's evaluated value can only
//! live on the thread that made it. A [`WarmFlake`] owns exactly one such thread (with the
//! evaluator's large reserved stack); requests are closures sent to it over a channel and
//! answered over another, so a `WarmFlake` is `Send + Sync` and requests to one flake are
//! serialised while different flakes run in parallel. Invariants: the thread's thread-local
//! state (source table, memory region) belongs to that flake alone and is torn down when the
//! `WarmFlake` is dropped (the drop joins the thread, so the memory is freed when `drop`
//! returns); a request never re-reads or re-locks the flake.

use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;

use flaked_store::fetchers::{Attr as FAttr, FlakeRef, InputKind, ParseOptions};

use super::commands::{self, ShowOptions};
use super::{FlakeSettings, LockedFlake, call_flake, lock_flake_ref};
use crate::api::{
    Diagnostic, EvalOutput, EvalSettings, LockOptions, OutputFormat, Position, config_of,
    diagnostic_of, flake_settings, print_output,
};
use crate::error::EvalError;
use crate::eval::Evaluator;
use crate::source::{self, Pos};
use crate::value::{Value, region};

/// A flake opened for evaluation: locked, called, its outputs at hand.
pub(crate) struct Opened {
    pub locked: LockedFlake,
    pub outputs: Value,
    /// The flake reference as Nix shows it in messages (`path:/x`, `git+file:///x`).
    pub shown_ref: String,
    /// The `#fragment` of the installable (`""` when none).
    pub fragment: String,
}

/// Parses `FLAKEREF[#FRAGMENT]` against `settings.cwd`, locks and calls the flake.
pub(crate) fn open_flake(
    ev: &mut Evaluator,
    installable: &str,
    settings: &FlakeSettings,
) -> Result<Opened, EvalError> {
    let opts = ParseOptions {
        base_dir: Some(settings.cwd.clone()),
        ..ParseOptions::default()
    };
    let (r, fragment) = FlakeRef::parse_with_fragment(installable, &opts)
        .map_err(|e| EvalError::eval(e.to_string()))?;
    let locked = lock_flake_ref(ev, &r, settings).map_err(|e| e.into_eval())?;
    let flake = call_flake(ev, &locked).map_err(|e| e.into_eval())?;
    let outputs = commands::outputs_of(ev, &flake)?;
    Ok(Opened {
        locked,
        outputs,
        shown_ref: r.display(),
        fragment,
    })
}

/// What identifies a warm flake's answers (the inputs of the eval cache's fingerprint).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlakeFingerprint {
    /// The locked URL of the top-level flake (`path:/x?lastModified=…&narHash=…`).
    pub locked_url: String,
    /// NAR hash of the top-level source (SRI), when known.
    pub nar_hash: Option<String>,
    /// Git revision of a clean tree.
    pub rev: Option<String>,
    /// `<rev>-dirty` of a dirty Git work tree.
    pub dirty_rev: Option<String>,
    /// Exact bytes of the lock file the evaluation used (as Nix would write it).
    pub lock_file: Vec<u8>,
    /// `dir=` of the flake reference (`""` for the root).
    pub subdir: String,
    pub system: String,
    pub pure: bool,
}

/// One attribute of an attribute set, for editors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttrInfo {
    pub name: String,
    /// Nix's `builtins.typeOf` of the value (`"set"`, `"lambda"`, `"int"`, …); `"thunk"` is
    /// never returned: listing forces each attribute's value to WHNF. A value whose evaluation
    /// fails is listed as `"error"`.
    pub type_name: String,
    /// Where the attribute is defined, if known.
    pub position: Option<Position>,
}

/// A value as the eval cache keeps it. Only the kinds whose printed forms are fully
/// determined by what is kept here are ever rendered from the cache (see [`render_leaf`]).
#[derive(Debug, Clone, PartialEq)]
pub enum CacheLeaf {
    /// A string with its context elements (as `builtins.getContext` keys render them).
    String {
        bytes: Vec<u8>,
        context: Vec<String>,
    },
    Bool(bool),
    Int(i64),
    Float(f64),
    /// A path value (printed as is; `--json`/`--raw` would copy it to the store, so only the
    /// Nix rendering is served from the cache).
    Path(String),
    /// A list whose elements were all already-evaluated strings without context.
    ListOfStrings(Vec<String>),
    /// An attribute set that is a derivation (`type = "derivation"`), with its `drvPath` and
    /// `outPath` strings (bytes and context) where they were already evaluated: `nix eval` prints
    /// a derivation as `«derivation DRVPATH»`, and as its `outPath` with `--json` and `--raw`.
    Derivation {
        drv_path: Option<(Vec<u8>, Vec<String>)>,
        out_path: Option<(Vec<u8>, Vec<String>)>,
    },
    /// Any other attribute set, with its names.
    Attrs(Vec<String>),
    /// Anything else (functions, null, other lists): known to exist, never rendered.
    Other,
}

/// What one evaluation taught about the flake's attribute tree, for the eval cache: attribute
/// paths from the flake's `outputs` (the root is `[]`), in the order they were visited
/// (parents before children).
#[derive(Debug, Clone, PartialEq)]
pub enum CacheNote {
    /// The attribute at this path is an attribute set (its own value was not kept).
    Set(Vec<String>),
    /// The attribute at this path does not exist (its parent is a set without that name).
    Missing(Vec<String>),
    /// The attribute at this path has this value.
    Leaf(Vec<String>, CacheLeaf),
}

/// The output `nix eval` prints for a cached value in `output` format, when the value alone
/// determines it; `None` when only an evaluation can answer (e.g. `--raw` of an integer is an
/// error, `--json` of a path copies it to the store, sets print their whole contents).
pub fn render_leaf(leaf: &CacheLeaf, output: OutputFormat) -> Option<Vec<u8>> {
    if let CacheLeaf::Derivation { drv_path, out_path } = leaf {
        return match output {
            OutputFormat::Nix => {
                let mut out = "«derivation ".as_bytes().to_vec();
                out.extend_from_slice(&drv_path.as_ref()?.0);
                out.extend_from_slice("»\n".as_bytes());
                Some(out)
            }
            OutputFormat::Json | OutputFormat::Raw => {
                let (bytes, context) = out_path.as_ref()?;
                let s = CacheLeaf::String {
                    bytes: bytes.clone(),
                    context: context.clone(),
                };
                render_leaf(&s, output)
            }
            _ => None,
        };
    }
    let value = match leaf {
        CacheLeaf::String { bytes, context } => {
            if matches!(output, OutputFormat::Raw) {
                return Some(bytes.clone());
            }
            Value::string_ctx(bytes.clone(), context.iter().cloned().collect())
        }
        CacheLeaf::Bool(b) => Value::Bool(*b),
        CacheLeaf::Int(i) => Value::Int(*i),
        CacheLeaf::Float(f) => Value::Float(*f),
        CacheLeaf::Path(p) if matches!(output, OutputFormat::Nix) => {
            Value::Path(Rc::new(p.clone()))
        }
        CacheLeaf::ListOfStrings(items) => {
            Value::list(items.iter().map(|s| Value::str(s)).collect())
        }
        _ => return None,
    };
    let mut out = match output {
        OutputFormat::Nix => crate::print::print_value_unforced(&value),
        OutputFormat::Json => {
            let mut out = Vec::new();
            match leaf {
                CacheLeaf::String { bytes, .. } => {
                    crate::print::json_string(bytes, &mut out).ok()?
                }
                CacheLeaf::Bool(b) => out.extend_from_slice(b.to_string().as_bytes()),
                CacheLeaf::Int(i) => out.extend_from_slice(i.to_string().as_bytes()),
                CacheLeaf::Float(f) => {
                    out.extend_from_slice(crate::print::fmt_json_float(*f).as_bytes())
                }
                CacheLeaf::ListOfStrings(items) => {
                    out.push(b'[');
                    for (n, item) in items.iter().enumerate() {
                        if n > 0 {
                            out.push(b',');
                        }
                        crate::print::json_string(item.as_bytes(), &mut out).ok()?;
                    }
                    out.push(b']');
                }
                _ => return None,
            }
            out
        }
        OutputFormat::Raw | OutputFormat::Instantiate | OutputFormat::InstantiateJson { .. } => {
            return None;
        }
    };
    out.push(b'\n');
    Some(out)
}

/// The value of a thunk that is already evaluated, without forcing anything.
fn peek(v: &Value) -> Option<Value> {
    match v {
        Value::Thunk(t) => t.value(),
        other => Some(other.clone()),
    }
}

/// Classifies an evaluated value for the cache without forcing anything further.
fn leaf_of(v: &Value) -> CacheLeaf {
    match v {
        Value::String(s) => CacheLeaf::String {
            bytes: s.bytes.to_vec(),
            context: s
                .context
                .as_deref()
                .map(|c| c.iter().cloned().collect())
                .unwrap_or_default(),
        },
        Value::Bool(b) => CacheLeaf::Bool(*b),
        Value::Int(i) => CacheLeaf::Int(*i),
        Value::Float(f) => CacheLeaf::Float(*f),
        Value::Path(p) => CacheLeaf::Path(p.to_string()),
        Value::List(items) => {
            let mut strings = Vec::with_capacity(items.len());
            for item in items.iter() {
                match peek(item) {
                    Some(Value::String(s)) if s.context.is_none() => {
                        match std::str::from_utf8(&s.bytes) {
                            Ok(t) => strings.push(t.to_string()),
                            Err(_) => return CacheLeaf::Other,
                        }
                    }
                    _ => return CacheLeaf::Other,
                }
            }
            CacheLeaf::ListOfStrings(strings)
        }
        Value::Attrs(a) => {
            let is_drv = a
                .get(crate::symbol::Symbol::intern("type"))
                .and_then(|t| peek(&t.value))
                .is_some_and(|t| matches!(t, Value::String(s) if &*s.bytes == b"derivation"));
            if is_drv {
                // Only what is already evaluated: noting a value must not evaluate more of it.
                let string = |name: &str| match a
                    .get(crate::symbol::Symbol::intern(name))
                    .and_then(|x| peek(&x.value))
                {
                    Some(v @ Value::String(_)) => match leaf_of(&v) {
                        CacheLeaf::String { bytes, context } => Some((bytes, context)),
                        _ => None,
                    },
                    _ => None,
                };
                CacheLeaf::Derivation {
                    drv_path: string("drvPath"),
                    out_path: string("outPath"),
                }
            } else {
                let mut names: Vec<String> = a.entries.iter().map(|x| x.name.as_string()).collect();
                names.sort();
                CacheLeaf::Attrs(names)
            }
        }
        _ => CacheLeaf::Other,
    }
}

/// The cached form of an evaluated value, checked against the real printer: every format that
/// [`render_leaf`] would answer from the cache must print exactly as an evaluation does.
fn checked_leaf(ev: &mut Evaluator, v: &Value) -> CacheLeaf {
    let Some(forced) = peek(v) else {
        return CacheLeaf::Other;
    };
    let leaf = leaf_of(&forced);
    for format in [OutputFormat::Nix, OutputFormat::Json, OutputFormat::Raw] {
        if let Some(cached) = render_leaf(&leaf, format) {
            let real = print_output(ev, &forced, format).ok();
            if real.as_deref() != Some(cached.as_slice()) {
                // Served from the cache it would print differently: keep only that it exists.
                return CacheLeaf::Other;
            }
        }
    }
    leaf
}

/// Walks the installable's candidate attribute paths as [`commands::select_installable`] does
/// (same forcing, same order), noting what exists and what does not. Stops quietly at the first
/// evaluation error: the selection then reproduces it.
fn note_candidates(
    ev: &mut Evaluator,
    outputs: &Value,
    fragment: &str,
    system: &str,
    notes: &mut Vec<CacheNote>,
) {
    for candidate in commands::installable_attr_paths(fragment, system) {
        let path = commands::parse_attr_path(&candidate);
        let mut cur = outputs.clone();
        let mut complete = true;
        for (i, name) in path.iter().enumerate() {
            let Ok(v) = ev.force(&cur, Pos::NONE) else {
                return;
            };
            let Value::Attrs(a) = &v else {
                notes.push(CacheNote::Leaf(path[..i].to_vec(), leaf_of(&v)));
                complete = false;
                break;
            };
            notes.push(CacheNote::Set(path[..i].to_vec()));
            match a.get(crate::symbol::Symbol::intern(name)) {
                Some(x) => cur = x.value.clone(),
                None => {
                    notes.push(CacheNote::Missing(path[..=i].to_vec()));
                    complete = false;
                    break;
                }
            }
        }
        if complete {
            return;
        }
    }
}

struct WarmState {
    ev: Evaluator,
    opened: Opened,
    settings: EvalSettings,
    /// Set once a request printed anything (a trace, a warning) — shared with the [`WarmFlake`].
    printed: Arc<AtomicBool>,
}

/// A request's log lines (taken from the evaluator), noting in `printed` that something was
/// printed.
fn take_log(ev: &mut Evaluator, printed: &AtomicBool) -> Vec<String> {
    let log = std::mem::take(&mut ev.stderr);
    if !log.is_empty() {
        printed.store(true, Ordering::SeqCst);
    }
    log
}

/// A request's result with what its evaluation printed: `Ok((value, log))`, or the error's
/// diagnostic carrying the log.
#[allow(clippy::result_large_err)]
fn with_log<T>(
    ev: &mut Evaluator,
    printed: &AtomicBool,
    r: Result<T, EvalError>,
) -> Result<(T, Vec<String>), Diagnostic> {
    let log = take_log(ev, printed);
    match r {
        Ok(v) => Ok((v, log)),
        Err(e) => {
            let mut d = diagnostic_of(&e);
            d.log = log;
            Err(d)
        }
    }
}

type Job = Box<dyn FnOnce(&mut WarmState) + Send>;

/// A locked and called flake kept alive on its own evaluator thread (see module docs).
pub struct WarmFlake {
    printed: Arc<AtomicBool>,
    jobs: Option<mpsc::Sender<Job>>,
    thread: Option<JoinHandle<usize>>,
    fingerprint: FlakeFingerprint,
    open_stderr: Vec<String>,
}

/// Reserved stack of a warm flake's thread (only touched pages are committed).
const WARM_STACK: usize = 1 << 30;

fn fingerprint_of(locked: &LockedFlake, settings: &EvalSettings) -> FlakeFingerprint {
    let input = &locked.flake.locked.input;
    let dirty_rev = match input.to_attrs().get("dirtyRev") {
        Some(FAttr::String(d)) => Some(d.clone()),
        _ => None,
    };
    let rev = match &input.kind {
        InputKind::Git(g) => g.rev.clone(),
        _ => input.rev().map(str::to_string),
    };
    FlakeFingerprint {
        locked_url: locked.flake.locked.display(),
        nar_hash: input.nar_hash().map(str::to_string),
        rev,
        dirty_rev,
        lock_file: locked.lock_file.to_file_string().into_bytes(),
        subdir: locked.flake.locked.subdir.clone(),
        system: settings.system.clone(),
        pure: settings.pure,
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Int(_) => "int",
        Value::Float(_) => "float",
        Value::Bool(_) => "bool",
        Value::String(_) => "string",
        Value::Path(_) => "path",
        Value::Null => "null",
        Value::Attrs(_) => "set",
        Value::List(_) => "list",
        Value::Lambda(_) | Value::PrimOp(_) | Value::PrimOpApp(_) => "lambda",
        _ => "thunk",
    }
}

fn position_of(pos: Pos) -> Option<Position> {
    source::resolve(pos).map(|r| Position {
        file: r.src.origin_name(),
        line: r.line,
        column: r.column,
    })
}

impl WarmFlake {
    /// Locks (writing `flake.lock` like `nix eval` when it changed and
    /// `settings.write_lock_file`), fetches and calls the flake `flake_ref` (no fragment) on a
    /// new evaluator thread. Blocking.
    #[allow(clippy::result_large_err)]
    pub fn open(flake_ref: &str, settings: EvalSettings) -> Result<WarmFlake, Diagnostic> {
        let fs =
            flake_settings(&settings, &LockOptions::default()).map_err(|e| diagnostic_of(&e))?;
        let (jobs_tx, jobs_rx) = mpsc::channel::<Job>();
        let (ready_tx, ready_rx) =
            mpsc::channel::<Result<(FlakeFingerprint, Vec<String>), Diagnostic>>();
        let r = flake_ref.to_string();
        let printed = Arc::new(AtomicBool::new(false));
        let printed_in_thread = printed.clone();
        let spawned = std::thread::Builder::new()
            .name("flaked-warm".to_string())
            .stack_size(WARM_STACK)
            .spawn(move || -> usize {
                let mut ev = Evaluator::new(config_of(&settings));
                super::set_context(Some(fs.clone()));
                match open_flake(&mut ev, &r, &fs) {
                    Ok(opened) => {
                        let mut log = std::mem::take(&mut ev.stderr);
                        log.splice(0..0, opened.locked.warnings.iter().cloned());
                        let fp = fingerprint_of(&opened.locked, &settings);
                        let mut state = WarmState {
                            ev,
                            opened,
                            settings,
                            printed: printed_in_thread,
                        };
                        if ready_tx.send(Ok((fp, log))).is_ok() {
                            while let Ok(job) = jobs_rx.recv() {
                                job(&mut state);
                            }
                        }
                        drop(state);
                    }
                    Err(e) => {
                        let mut d = diagnostic_of(&e);
                        d.log = std::mem::take(&mut ev.stderr);
                        let _ = ready_tx.send(Err(d));
                        drop(ev);
                    }
                }
                source::clear();
                region::live_cells()
            });
        let handle = spawned
            .map_err(|e| Diagnostic::plain(format!("cannot start the evaluator thread: {e}")))?;
        match ready_rx.recv() {
            Ok(Ok((fingerprint, open_stderr))) => Ok(WarmFlake {
                printed,
                jobs: Some(jobs_tx),
                thread: Some(handle),
                fingerprint,
                open_stderr,
            }),
            Ok(Err(d)) => {
                let _ = handle.join();
                Err(d)
            }
            Err(_) => {
                let _ = handle.join();
                Err(Diagnostic::plain(
                    "internal error: the evaluator thread panicked".to_string(),
                ))
            }
        }
    }

    /// What identifies this flake's answers.
    pub fn fingerprint(&self) -> &FlakeFingerprint {
        &self.fingerprint
    }

    /// Whether any request so far printed anything (a trace, a warning). Until then, evaluating
    /// any value this flake evaluated prints nothing either, so its answers may be cached.
    pub fn printed_since_open(&self) -> bool {
        self.printed.load(Ordering::SeqCst)
    }

    /// Warnings printed while opening (lock file creation, dirty tree, …).
    pub fn open_stderr(&self) -> &[String] {
        &self.open_stderr
    }

    /// Runs `f` on the flake's thread and waits for its answer.
    #[allow(clippy::result_large_err)]
    fn request<R, F>(&self, f: F) -> Result<R, Diagnostic>
    where
        R: Send + 'static,
        F: FnOnce(&mut WarmState) -> R + Send + 'static,
    {
        let (tx, rx) = mpsc::channel::<R>();
        let job: Job = Box::new(move |st: &mut WarmState| {
            let _ = tx.send(f(st));
        });
        let jobs = self
            .jobs
            .as_ref()
            .ok_or_else(|| Diagnostic::plain("the warm flake is closed".to_string()))?;
        jobs.send(job).map_err(|_| {
            Diagnostic::plain("internal error: the warm flake's thread is gone".to_string())
        })?;
        rx.recv().map_err(|_| {
            Diagnostic::plain(
                "internal error: the warm flake's thread panicked during a request".to_string(),
            )
        })
    }

    /// `nix eval FLAKE#ATTR_PATH` against the already evaluated flake (installable
    /// default-prefix semantics; `""` = the default package). Values forced by an earlier
    /// request are not evaluated again. The interrupt flag of the settings given to `open`
    /// applies.
    #[allow(clippy::result_large_err)]
    pub fn eval(&self, attr_path: &str, output: OutputFormat) -> Result<EvalOutput, Diagnostic> {
        self.eval_impl(attr_path, output, None, false)
            .map(|(out, _)| out)
    }

    /// [`WarmFlake::eval`] (with an optional interrupt flag, as in
    /// [`WarmFlake::eval_interruptible`]) that also returns what the evaluation taught about the
    /// attribute tree, for the eval cache. A found value's cached form is kept only when
    /// [`render_leaf`] reproduces the real printer's output for it in every format it renders.
    #[allow(clippy::result_large_err)]
    pub fn eval_noted(
        &self,
        attr_path: &str,
        output: OutputFormat,
        interrupt: Option<Arc<AtomicBool>>,
    ) -> Result<(EvalOutput, Vec<CacheNote>), Diagnostic> {
        self.eval_impl(attr_path, output, interrupt, true)
    }

    /// [`WarmFlake::eval`] with this request's own interrupt flag (set it to stop the request:
    /// it fails with "interrupted by the user"; the flake stays usable, and thunks whose
    /// evaluation was cut short are evaluated again by a later request).
    #[allow(clippy::result_large_err)]
    pub fn eval_interruptible(
        &self,
        attr_path: &str,
        output: OutputFormat,
        interrupt: Arc<AtomicBool>,
    ) -> Result<EvalOutput, Diagnostic> {
        self.eval_impl(attr_path, output, Some(interrupt), false)
            .map(|(out, _)| out)
    }

    #[allow(clippy::result_large_err)]
    fn eval_impl(
        &self,
        attr_path: &str,
        output: OutputFormat,
        interrupt: Option<Arc<AtomicBool>>,
        note: bool,
    ) -> Result<(EvalOutput, Vec<CacheNote>), Diagnostic> {
        let attr_path = attr_path.to_string();
        self.request(move |st| {
            let WarmState {
                ev,
                opened,
                settings,
                printed,
            } = st;
            let saved = match interrupt {
                Some(flag) => Some(ev.config.interrupt.replace(flag)),
                None => None,
            };
            let mut notes = Vec::new();
            if note {
                note_candidates(
                    ev,
                    &opened.outputs,
                    &attr_path,
                    &settings.system,
                    &mut notes,
                );
            }
            let r = commands::select_installable(
                ev,
                &opened.outputs,
                &opened.shown_ref,
                &attr_path,
                &settings.system,
            )
            .and_then(|(v, found)| {
                let stdout = print_output(ev, &v, output)?;
                if note {
                    let leaf = checked_leaf(ev, &v);
                    notes.push(CacheNote::Leaf(commands::parse_attr_path(&found), leaf));
                }
                Ok(stdout)
            });
            if let Some(saved) = saved {
                ev.config.interrupt = saved;
            }
            let (stdout, stderr) = with_log(ev, printed, r)?;
            Ok((EvalOutput { stdout, stderr }, notes))
        })?
    }

    /// The outputs `nix build INSTALLABLE` builds by default for the value the installable's
    /// `attr_path` selects (with `nix eval`'s default prefixes): `outputName` when
    /// `outputSpecified` is true; else, when there is no `outputSpecified` at all,
    /// `meta.outputsToInstall`; `out` when that leaves none (Nix's `InstallableFlake`). Sorted.
    #[allow(clippy::result_large_err)]
    pub fn default_outputs(&self, attr_path: &str) -> Result<Vec<String>, Diagnostic> {
        let attr_path = attr_path.to_string();
        self.request(move |st| {
            let WarmState {
                ev,
                opened,
                settings,
                printed,
            } = st;
            let r = (|| -> Result<Vec<String>, EvalError> {
                let (v, _) = commands::select_installable(
                    ev,
                    &opened.outputs,
                    &opened.shown_ref,
                    &attr_path,
                    &settings.system,
                )?;
                let a = ev.force_attrs(&v, Pos::NONE, "")?;
                let sym = crate::symbol::Symbol::intern;
                let mut outputs = std::collections::BTreeSet::new();
                if let Some(specified) = a.get(sym("outputSpecified")) {
                    let specified = specified.value.clone();
                    if ev.force_bool(&specified, Pos::NONE, "")?
                        && let Some(name) = a.get(sym("outputName"))
                    {
                        let name = name.value.clone();
                        let name = ev.force_string(&name, Pos::NONE, "")?;
                        outputs.insert(name.as_str_lossy().into_owned());
                    }
                } else if let Some(meta) = a.get(sym("meta")) {
                    let meta = meta.value.clone();
                    let meta = ev.force_attrs(&meta, Pos::NONE, "")?;
                    if let Some(list) = meta.get(sym("outputsToInstall")) {
                        let list = list.value.clone();
                        for item in ev.force_list(&list, Pos::NONE, "")?.iter() {
                            let s = ev.force_string(item, Pos::NONE, "")?;
                            outputs.insert(s.as_str_lossy().into_owned());
                        }
                    }
                }
                if outputs.is_empty() {
                    outputs.insert("out".to_string());
                }
                Ok(outputs.into_iter().collect())
            })();
            // What `build` prints comes with its build request, not here.
            with_log(ev, printed, r).map(|(outputs, _)| outputs)
        })?
    }

    /// The attributes of the set at `attr_path` (exact path from the flake's `outputs`; `[]` =
    /// the outputs themselves), sorted by name.
    #[allow(clippy::result_large_err)]
    pub fn list_attrs(&self, attr_path: &[String]) -> Result<Vec<AttrInfo>, Diagnostic> {
        let path = attr_path.to_vec();
        self.request(move |st| {
            let ev = &mut st.ev;
            let r = (|| -> Result<Vec<AttrInfo>, EvalError> {
                let mut cur = st.opened.outputs.clone();
                for (i, name) in path.iter().enumerate() {
                    let a = ev.force_attrs(&cur, Pos::NONE, "")?;
                    match a.get(crate::symbol::Symbol::intern(name)) {
                        Some(x) => cur = x.value.clone(),
                        None => {
                            return Err(EvalError::eval(format!(
                                "attribute '{}' does not exist",
                                path[..=i].join(".")
                            )));
                        }
                    }
                }
                let a = ev.force_attrs(&cur, Pos::NONE, "")?;
                let mut out = Vec::new();
                for attr in a.sorted_by_name() {
                    let ty = match ev.force(&attr.value, Pos::NONE) {
                        Ok(v) => type_name(&v),
                        Err(_) => "error",
                    };
                    out.push(AttrInfo {
                        name: attr.name.as_string(),
                        type_name: ty.to_string(),
                        position: position_of(attr.pos),
                    });
                }
                Ok(out)
            })();
            take_log(&mut st.ev, &st.printed);
            r.map_err(|e| diagnostic_of(&e))
        })?
    }

    /// The [`crate::search::SearchIndex`] of `nix search FLAKE#FRAGMENT` over the already
    /// evaluated flake, with what evaluating it printed; values forced by an earlier request are
    /// not evaluated again.
    #[allow(clippy::result_large_err)]
    pub fn search_index(
        &self,
        fragment: &str,
    ) -> Result<(crate::search::SearchIndex, Vec<String>), Diagnostic> {
        let fragment = fragment.to_string();
        self.request(move |st| {
            let WarmState {
                ev,
                opened,
                settings,
                printed,
            } = st;
            let r = crate::search::build_index(
                ev,
                &opened.outputs,
                &opened.shown_ref,
                &fragment,
                &settings.system,
            );
            with_log(ev, printed, r)
        })?
    }

    /// `nix flake show --json [--all-systems]` of this flake.
    #[allow(clippy::result_large_err)]
    pub fn show_json(&self, all_systems: bool) -> Result<EvalOutput, Diagnostic> {
        self.request(move |st| {
            let WarmState {
                ev,
                opened,
                settings,
                printed,
            } = st;
            let opts = ShowOptions {
                system: settings.system.clone(),
                all_systems,
                legacy: false,
            };
            let r = commands::show(ev, &opened.locked, &opened.outputs, &opts, true);
            let ((stdout, warnings), mut stderr) = with_log(ev, printed, r)?;
            stderr.extend(warnings);
            Ok(EvalOutput {
                stdout: stdout.into_bytes(),
                stderr,
            })
        })?
    }

    /// An estimate of the memory this flake's evaluation holds, in bytes: registered mutable
    /// cells (thunks and environments in the evaluation's region, at 128 bytes each, a typical
    /// size with their payload) plus the source texts kept for positions. Cheap: no cell is
    /// visited.
    pub fn approx_memory(&self) -> usize {
        self.request(|_| region::registered_cells() * 128 + source::text_bytes())
            .unwrap_or(0)
    }

    /// Ends the thread and frees the evaluation, returning how many of its mutable cells were
    /// still alive afterwards (0 unless something leaked).
    pub fn close(mut self) -> usize {
        self.shutdown()
    }

    fn shutdown(&mut self) -> usize {
        drop(self.jobs.take());
        match self.thread.take() {
            Some(h) => h.join().unwrap_or(usize::MAX),
            None => 0,
        }
    }
}

impl Drop for WarmFlake {
    fn drop(&mut self) {
        self.shutdown();
    }
}

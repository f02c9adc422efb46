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

use std::sync::atomic::AtomicBool;
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

struct WarmState {
    ev: Evaluator,
    opened: Opened,
    settings: EvalSettings,
}

type Job = Box<dyn FnOnce(&mut WarmState) + Send>;

/// A locked and called flake kept alive on its own evaluator thread (see module docs).
pub struct WarmFlake {
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
        self.eval_impl(attr_path, output, None)
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
        self.eval_impl(attr_path, output, Some(interrupt))
    }

    #[allow(clippy::result_large_err)]
    fn eval_impl(
        &self,
        attr_path: &str,
        output: OutputFormat,
        interrupt: Option<Arc<AtomicBool>>,
    ) -> Result<EvalOutput, Diagnostic> {
        let attr_path = attr_path.to_string();
        self.request(move |st| {
            let WarmState {
                ev,
                opened,
                settings,
            } = st;
            let saved = match interrupt {
                Some(flag) => Some(ev.config.interrupt.replace(flag)),
                None => None,
            };
            let r = commands::select_installable(
                ev,
                &opened.outputs,
                &opened.shown_ref,
                &attr_path,
                &settings.system,
            )
            .and_then(|(v, _)| print_output(ev, &v, output));
            if let Some(saved) = saved {
                ev.config.interrupt = saved;
            }
            let log = std::mem::take(&mut ev.stderr);
            match r {
                Ok(stdout) => Ok(EvalOutput {
                    stdout,
                    stderr: log,
                }),
                Err(e) => {
                    let mut d = diagnostic_of(&e);
                    d.log = log;
                    Err(d)
                }
            }
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
            st.ev.stderr.clear();
            r.map_err(|e| diagnostic_of(&e))
        })?
    }

    /// `nix search FLAKE#FRAGMENT REGEX… [--exclude REGEX…]` against the already evaluated
    /// flake (see [`crate::search`]); values forced by an earlier search are not evaluated again.
    #[allow(clippy::result_large_err)]
    pub fn search(
        &self,
        fragment: &str,
        query: crate::search::SearchQuery,
    ) -> Result<Vec<crate::search::SearchHit>, Diagnostic> {
        let fragment = fragment.to_string();
        self.request(move |st| {
            let WarmState {
                ev,
                opened,
                settings,
            } = st;
            let r = crate::search::search(
                ev,
                &opened.outputs,
                &opened.shown_ref,
                &fragment,
                &settings.system,
                &query,
            );
            let log = std::mem::take(&mut ev.stderr);
            r.map_err(|e| {
                let mut d = diagnostic_of(&e);
                d.log = log;
                d
            })
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
            } = st;
            let opts = ShowOptions {
                system: settings.system.clone(),
                all_systems,
                legacy: false,
            };
            let r = commands::show(ev, &opened.locked, &opened.outputs, &opts, true);
            let mut log = std::mem::take(&mut ev.stderr);
            match r {
                Ok((stdout, warnings)) => {
                    log.extend(warnings);
                    Ok(EvalOutput {
                        stdout: stdout.into_bytes(),
                        stderr: log,
                    })
                }
                Err(e) => {
                    let mut d = diagnostic_of(&e);
                    d.log = log;
                    Err(d)
                }
            }
        })?
    }

    /// An estimate of the memory this flake's evaluation holds, in bytes: live mutable cells
    /// (thunks and environments registered in the evaluation's region, at 128 bytes each, a
    /// typical size with their payload) plus the source texts kept for positions.
    pub fn approx_memory(&self) -> usize {
        self.request(|_| {
            let cells = region::live_cells();
            let mut text = 0usize;
            let mut i = 1u32;
            while let Some(s) = source::source(i) {
                text += s.text.len();
                i += 1;
            }
            cells * 128 + text
        })
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

//! Flakes in the evaluator: reading `flake.nix` (only `description`, `inputs`, `nixConfig` and
//! the shape of `outputs`), computing and writing `flake.lock`, and calling a locked flake's
//! `outputs` with `self` and its inputs, as Nix 2.26's `lockFlake`/`callFlake` do.
//!
//! Everything about references, fetching and lock-file bytes is delegated to
//! `flaked_store::fetchers`. Invariants: a flake is always evaluated from its copy in the store
//! (so pure mode only needs store access); `flake.lock` is written only when its text changes,
//! atomically (temporary file, fsync, rename), with the bytes Nix would write.

mod call;
pub mod commands;
mod lock;
pub mod warm;

pub use call::call_flake;
pub use lock::{
    Flake, FlakeInput, FlakeSettings, LockedFlake, lock_flake, lock_flake_ref, read_flake,
};

use std::path::Path;

use crate::error::{ErrorKind, EvalError};
use crate::eval::Evaluator;
use crate::source::{self, Origin, Pos};
use crate::store_path;
use crate::value::Value;
use flaked_store::fetchers::FetchError;

/// Errors of locking and calling flakes. `Display` is Nix's message.
#[derive(Debug, thiserror::Error)]
pub enum FlakeError {
    /// A fetcher or lock-file failure.
    #[error("{0}")]
    Fetch(#[from] FetchError),
    /// An evaluation error while reading `flake.nix` or calling `outputs`.
    #[error("{}", .0.render())]
    Eval(EvalError),
    /// Any other failure with Nix's message.
    #[error("{0}")]
    Other(String),
    /// A failure Nix does not add its lock-file traces to (a JSON library exception).
    #[error("{0}")]
    Untraced(String),
}

impl From<EvalError> for FlakeError {
    fn from(e: EvalError) -> FlakeError {
        FlakeError::Eval(e)
    }
}

impl FlakeError {
    /// As an evaluation error (for the facade's diagnostics).
    pub fn into_eval(self) -> EvalError {
        match self {
            FlakeError::Eval(e) => e,
            FlakeError::Fetch(e) => EvalError::eval(e.to_string()),
            FlakeError::Other(m) | FlakeError::Untraced(m) => EvalError::eval(m),
        }
    }
}

thread_local! {
    /// The flake settings of the evaluation running on this thread (set by the facade).
    static CONTEXT: std::cell::RefCell<Option<FlakeSettings>> = const { std::cell::RefCell::new(None) };
}

/// Sets (or clears) the flake settings `builtins.getFlake` uses on this thread.
pub fn set_context(settings: Option<FlakeSettings>) {
    CONTEXT.with(|c| *c.borrow_mut() = settings);
}

/// The flake settings of this thread's evaluation (defaults: the process's cache directory,
/// the evaluation's working directory, no registries).
pub fn context(ev: &Evaluator) -> FlakeSettings {
    CONTEXT.with(|c| c.borrow().clone()).unwrap_or_else(|| {
        FlakeSettings::new(crate::api::default_flake_cache_dir(), ev.config.cwd.clone())
    })
}

/// `file:line:column` of a position, as Nix prints it inside messages.
pub(crate) fn show_pos(pos: Pos) -> String {
    match source::resolve(pos) {
        Some(r) => format!("{}:{}:{}", r.src.origin_name(), r.line, r.column),
        None => "«none»:0".to_string(),
    }
}

/// Evaluates a `flake.nix` given by its logical path (usually inside the store), reading it from
/// where the store keeps it physically (a private store root maps `/nix/store/…` elsewhere).
/// Cached per evaluation like `import`, under the logical path.
pub(crate) fn eval_flake_file(ev: &mut Evaluator, logical: &Path) -> Result<Value, EvalError> {
    if let Some(v) = ev.import_cache.get(logical) {
        return Ok(v.clone());
    }
    let shown = logical.display().to_string();
    let real = store_path::real_path(&ev.config.store_dir, &shown);
    let raw = std::fs::read(&real)
        .map_err(|e| EvalError::new(ErrorKind::Io, format!("reading file '{shown}': {e}")))?;
    let dir = logical
        .parent()
        .map(|d| d.display().to_string())
        .unwrap_or_else(|| "/".to_string());
    let e = ev.parse(Origin::File(shown.clone()), &raw, &dir)?;
    match ev.eval_root(&e) {
        Ok(v) => {
            ev.import_cache.insert(logical.to_path_buf(), v.clone());
            Ok(v)
        }
        Err(e) => Err(e.with_trace(Pos::NONE, format!("while evaluating the file '{shown}':"))),
    }
}

/// Whether a logical path exists (looked up where the store keeps it physically).
pub(crate) fn logical_exists(ev: &Evaluator, logical: &Path) -> bool {
    store_path::real_path(&ev.config.store_dir, &logical.display().to_string()).exists()
}

//! Flakes in the evaluator: reading `flake.nix` (only `description`, `inputs`, `nixConfig` and
//! the shape of `outputs`), computing and writing `flake.lock`, and calling a locked flake's
//! `outputs` with `self` and its inputs, as Nix 2.26's `lockFlake`/`callFlake` do.
//!
//! Everything about references, fetching and lock-file bytes is delegated to
//! `flaked_store::fetchers`. Invariants: a flake is always evaluated from its copy in the store
//! (so pure mode only needs store access); `flake.lock` is written only when its text changes,
//! atomically (temporary file, fsync, rename), with the bytes Nix would write.

mod call;
mod lock;

pub use call::{call_flake, flake_metadata_json};
pub use lock::{FlakeInput, FlakeSettings, LockedFlake, lock_flake, read_flake};

use crate::error::EvalError;
use crate::source::{self, Pos};
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
            FlakeError::Other(m) => EvalError::eval(m),
        }
    }
}

/// `file:line:column` of a position, as Nix prints it inside messages.
pub(crate) fn show_pos(pos: Pos) -> String {
    match source::resolve(pos) {
        Some(r) => format!("{}:{}:{}", r.src.origin_name(), r.line, r.column),
        None => "«none»:0".to_string(),
    }
}

//! The Nix language evaluator: rnix parse → IR with statically resolved variables → lazy
//! evaluation, exact to Nix 2.26 in values, printing and error messages.
//!
//! Entry point for callers: [`api::evaluate`]. Design notes: `docs/evaluator.md`.

pub mod alloc;
pub mod api;
pub mod builtins;
pub mod error;
pub mod eval;
mod eval_pool;
pub mod flake;
pub mod installables;
pub mod ir;
pub mod lower;
pub mod print;
pub mod rcslice;
pub mod rollback;
pub mod search;
pub mod show;
pub mod source;
pub mod store_path;
pub mod symbol;
pub mod value;

#[cfg(test)]
mod tests;

//! Flakes' evaluator-independent half: flake references, fetcher inputs, lock files,
//! registries and the fetchers that turn an input into a local source tree plus the
//! attributes that lock it.
//!
//! This module exists so that the evaluator's `getFlake`/`lockFlake`/`fetchTree` never deal
//! with URLs, JSON layouts or network and Git details. Invariant: every textual artefact it
//! produces (printed references, flake.lock bytes, registry JSON, error messages) is the one
//! Nix 2.26 produces for the same input.

pub mod attrs;
pub mod cache;
pub mod fetch;
pub mod flakeref;
pub mod git;
pub mod input;
pub mod json;
pub mod lockfile;
pub mod registry;
pub mod tarball;
pub mod url;

pub use attrs::{Attr, Attrs};
pub use fetch::{
    FetchSettings, Fetched, FetchedFlake, SourceTree, fetch, fetch_flake_ref, tree_store_path,
};
pub use flakeref::{FlakeRef, ParseOptions};
pub use input::{Forge, Input, InputKind, InputSettings};
pub use lockfile::{InputPath, LockFile, LockedNode, Node, NodeId};
pub use registry::{Registries, Registry, RegistryEntry, RegistryType};

use crate::hash::HashError;

/// Errors of the fetchers. `Display` is Nix's message for the same failure.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// Nix's `BadURL`: a malformed reference. Flake-reference parsing falls back to the next
    /// form (URL → path) on this kind only.
    #[error("{message}")]
    BadUrl { message: String },
    /// Any other invalid input (Nix's plain `Error`).
    #[error("{message}")]
    Invalid { message: String },
    /// A malformed hash (`rev`, `narHash`).
    #[error(transparent)]
    Hash(#[from] HashError),
    /// A file-system operation failed.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// A Git operation failed.
    #[error("{context}: {message}")]
    Git { context: String, message: String },
    /// An HTTP transfer failed.
    #[error("unable to download '{url}': {message}")]
    Download { url: String, message: String },
    /// A flake input attribute set without `type` has an attribute other than `url`
    /// (the evaluator appends Nix's `, at <position>`).
    #[error("unexpected flake input attribute '{name}'")]
    UnexpectedInputAttr { name: String },
    /// The fetched tree does not have the `narHash` the input was locked to.
    #[error("NAR hash mismatch in input '{input}', expected '{expected}' but got '{got}'")]
    NarHashMismatch {
        input: String,
        expected: String,
        got: String,
    },
}

impl FetchError {
    pub(crate) fn bad_url(message: impl Into<String>) -> FetchError {
        FetchError::BadUrl {
            message: message.into(),
        }
    }
    pub(crate) fn invalid(message: impl Into<String>) -> FetchError {
        FetchError::Invalid {
            message: message.into(),
        }
    }
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> FetchError {
        FetchError::Io {
            context: context.into(),
            source,
        }
    }
    pub(crate) fn git(context: impl Into<String>, e: impl std::fmt::Display) -> FetchError {
        FetchError::Git {
            context: context.into(),
            message: e.to_string(),
        }
    }
    /// Whether this is Nix's `BadURL`.
    pub fn is_bad_url(&self) -> bool {
        matches!(self, FetchError::BadUrl { .. })
    }
}

//! flaked-cache: persistence and freshness for flake evaluation.
//!
//! This crate exists so that the evaluator and the daemon can reuse answers
//! across requests and restarts without knowing how they are stored. It has no
//! dependency on the evaluator: it stores its own domain values
//! ([`CachedValue`]).
//!
//! * [`fingerprint`]: what identifies one cache ([`Fingerprint`] → hex id);
//! * [`schema`] / [`db`]: the SQLite attribute cache ([`EvalCache`], cursors,
//!   batched background writes, corruption recovery);
//! * [`freshness`]: cheap content keys of source trees (`path:` flakes, dirty git);
//! * [`registry`]: one shared handle per fingerprint ([`CacheRegistry`]);
//! * [`lru`]: warm-tree bookkeeping for the daemon ([`WarmLru`]).
//!
//! Invariant kept crate-wide: a cache can only ever make an answer faster,
//! never different — every internal failure degrades to a miss, and is logged
//! and counted.

pub mod db;
pub mod error;
pub mod fingerprint;
pub mod freshness;
pub mod lru;
pub mod registry;
pub mod schema;

pub use db::{CacheOptions, CacheStats, Cursor, EvalCache, Lookup, db_path, default_cache_dir};
pub use error::CacheError;
pub use fingerprint::{Fingerprint, FingerprintId, SourceIdentity};
pub use freshness::{ContentKey, FileSet, GitFiles, GitSeed, TreeIndex};
pub use lru::{LruStats, WarmLru};
pub use registry::CacheRegistry;
pub use schema::{CachedValue, SCHEMA_VERSION};

//! Errors of the cache crate.
//!
//! Every variant keeps the offending input (path, row, file) so that a log line
//! alone explains what went wrong. Lookups never surface these errors to the
//! caller (a failed lookup is a miss, counted in the stats); they are returned
//! by `open`, `flush` and the freshness functions, and logged everywhere else.

use std::path::PathBuf;

/// An error of the eval cache, the freshness index or the warm-tree bookkeeping.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// An I/O operation on a cache file failed.
    #[error("{op} '{path}': {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// SQLite reported an error for a database.
    #[error("eval cache database '{path}': {op}: {source}")]
    Sqlite {
        /// What was being done.
        op: &'static str,
        /// The database file.
        path: PathBuf,
        /// The underlying error.
        source: rusqlite::Error,
    },
    /// The connection pool could not hand out a connection.
    #[error("eval cache database '{path}': connection pool: {source}")]
    Pool {
        /// The database file.
        path: PathBuf,
        /// The underlying error.
        source: r2d2::Error,
    },
    /// A database failed its integrity or schema check.
    #[error("eval cache database '{path}' is unusable: {reason}")]
    Corrupt {
        /// The database file.
        path: PathBuf,
        /// What the check found.
        reason: String,
    },
    /// A row could not be decoded.
    #[error("malformed eval cache row (type {code}, value {value:?}): {reason}")]
    BadRow {
        /// The row's type code.
        code: i64,
        /// The row's value column.
        value: String,
        /// Why it does not decode.
        reason: String,
    },
    /// The background writer failed to commit a batch or is gone.
    #[error("eval cache writer for '{path}': {reason}")]
    Writer {
        /// The database file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// A freshness index file is malformed (it is then rebuilt).
    #[error("freshness index '{path}' is malformed: {reason}")]
    BadIndex {
        /// The index file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A path handed to the freshness functions is not usable.
    #[error("freshness: '{path}': {reason}")]
    BadPath {
        /// The offending path.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

impl CacheError {
    /// True when the error means the database file itself is damaged.
    pub fn is_corruption(&self) -> bool {
        match self {
            CacheError::Corrupt { .. } => true,
            CacheError::Sqlite { source, .. } => is_corrupt_sqlite(source),
            _ => false,
        }
    }
}

/// True for SQLite errors that mean "this file is not a healthy database".
pub(crate) fn is_corrupt_sqlite(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseCorrupt | rusqlite::ErrorCode::NotADatabase)
    )
}

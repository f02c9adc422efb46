//! One shared [`EvalCache`] handle per fingerprint within a process.
//!
//! Why: a database has one writer, enforced by an advisory lock; a second
//! `EvalCache::open` of the same fingerprint in the same process would get a
//! read-only handle and drop its writes. The daemon therefore opens caches
//! through a [`CacheRegistry`], which hands out clones of the single live handle.
//!
//! Invariant: between a `get` that opens a database and the matching `close`,
//! every `get` of that fingerprint returns a clone of the same handle. After
//! `close`, the database is closed (pending writes committed) as soon as the
//! last outstanding clone is dropped, and the next `get` opens it again.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::db::{CacheOptions, CacheStats, EvalCache};
use crate::error::CacheError;
use crate::fingerprint::FingerprintId;

/// Opens eval caches in one directory, sharing handles per fingerprint.
#[derive(Debug)]
pub struct CacheRegistry {
    dir: PathBuf,
    options: CacheOptions,
    handles: Mutex<HashMap<FingerprintId, EvalCacheSlot>>,
}

#[derive(Debug)]
struct EvalCacheSlot {
    cache: EvalCache,
}

impl CacheRegistry {
    /// A registry for databases in `dir` (created on first open).
    pub fn new(dir: &Path, options: CacheOptions) -> CacheRegistry {
        CacheRegistry {
            dir: dir.to_owned(),
            options,
            handles: Mutex::new(HashMap::new()),
        }
    }

    /// The directory holding the databases.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The handle for `fingerprint`, opening the database if needed.
    pub fn get(&self, fingerprint: &FingerprintId) -> Result<EvalCache, CacheError> {
        let mut handles = self.handles.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(slot) = handles.get(fingerprint) {
            return Ok(slot.cache.clone());
        }
        let cache = EvalCache::open(&self.dir, fingerprint, self.options.clone())?;
        handles.insert(
            fingerprint.clone(),
            EvalCacheSlot {
                cache: cache.clone(),
            },
        );
        Ok(cache)
    }

    /// Closes the database of `fingerprint` once its other clones are dropped
    /// (e.g. when the daemon evicts a warm flake). Returns whether it was open.
    pub fn close(&self, fingerprint: &FingerprintId) -> bool {
        let mut handles = self.handles.lock().unwrap_or_else(|p| p.into_inner());
        handles.remove(fingerprint).is_some()
    }

    /// Fingerprints with an open database.
    pub fn open_fingerprints(&self) -> Vec<FingerprintId> {
        let handles = self.handles.lock().unwrap_or_else(|p| p.into_inner());
        let mut v: Vec<FingerprintId> = handles.keys().cloned().collect();
        v.sort();
        v
    }

    /// Counters of every open database, summed (`disabled` if any is).
    pub fn stats(&self) -> CacheStats {
        let handles = self.handles.lock().unwrap_or_else(|p| p.into_inner());
        let mut total = CacheStats::default();
        for slot in handles.values() {
            let s = slot.cache.stats();
            total.hits += s.hits;
            total.negative_hits += s.negative_hits;
            total.misses += s.misses;
            total.rows_committed += s.rows_committed;
            total.batches_committed += s.batches_committed;
            total.write_errors += s.write_errors;
            total.read_errors += s.read_errors;
            total.dropped_writes += s.dropped_writes;
            total.rebuilds += s.rebuilds;
            total.pending_rows += s.pending_rows;
            total.disabled |= s.disabled;
        }
        total
    }

    /// Commits pending writes of every open database; returns the first error.
    pub fn flush_all(&self) -> Result<(), CacheError> {
        let caches: Vec<EvalCache> = {
            let handles = self.handles.lock().unwrap_or_else(|p| p.into_inner());
            handles.values().map(|s| s.cache.clone()).collect()
        };
        let mut first = None;
        for cache in caches {
            if let Err(e) = cache.flush() {
                tracing::error!(error = %e, "flushing eval cache");
                first.get_or_insert(e);
            }
        }
        first.map_or(Ok(()), Err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::CachedValue;

    #[test]
    fn one_writable_handle_per_fingerprint() {
        let dir = tempfile::tempdir().expect("tempdir");
        let reg = CacheRegistry::new(&dir.path().join("c"), CacheOptions::default());
        let fp = FingerprintId::parse(&"ab".repeat(32)).expect("id");
        let a = reg.get(&fp).expect("open");
        let b = reg.get(&fp).expect("again");
        assert!(
            a.is_writable() && b.is_writable(),
            "same handle, not a read-only second opener"
        );
        a.set_child(&a.root(), "x", CachedValue::Int(1));
        assert!(matches!(
            b.child(&b.root(), "x"),
            crate::Lookup::Hit(_, CachedValue::Int(1))
        ));
        reg.flush_all().expect("flush");
        assert_eq!(reg.stats().rows_committed, 2);
        assert_eq!(reg.open_fingerprints(), vec![fp.clone()]);
        assert!(reg.close(&fp));
        assert!(!reg.close(&fp));
        drop((a, b));
        let c = reg.get(&fp).expect("reopen");
        assert!(c.is_writable());
        assert!(matches!(
            c.child(&c.root(), "x"),
            crate::Lookup::Hit(_, CachedValue::Int(1))
        ));
    }
}

//! A metadata-keyed [`ImportCache`]: makes re-importing an unchanged source tree cost one
//! `lstat` per file instead of reading and hashing every byte.
//!
//! Invariant: a cached result is returned only if the tree's metadata fingerprint (names,
//! types, modes, sizes, inode numbers, mtimes and ctimes of every object, symlink targets)
//! taken *before* the earlier import equals the fingerprint now. Because the fingerprint is
//! taken before reading, a change during the import makes later fingerprints differ and the
//! entry is never used. Trees with objects changed within `racy_window` of the fingerprint
//! are not cached at all (timestamps are coarse, so such a change could repeat unseen).

use std::collections::HashMap;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::hash::{Hash, HashAlgo, Hasher};
use crate::local::{AddedPath, ImportCache};
use crate::store_path::FileIngestionMethod;

type Key = (PathBuf, String, FileIngestionMethod, HashAlgo);

/// In-memory metadata-keyed import cache (one per daemon is enough).
pub struct MetadataImportCache {
    racy_window: Duration,
    /// Fingerprints taken by `lookup` misses, waiting for `record`.
    pending: Mutex<HashMap<Key, Hash>>,
    done: Mutex<HashMap<Key, (Hash, AddedPath)>>,
    hits: AtomicU64,
}

impl Default for MetadataImportCache {
    fn default() -> Self {
        Self::new(Duration::from_secs(2))
    }
}

impl MetadataImportCache {
    pub fn new(racy_window: Duration) -> Self {
        MetadataImportCache {
            racy_window,
            pending: Mutex::default(),
            done: Mutex::default(),
            hits: AtomicU64::new(0),
        }
    }

    /// Number of cached imports.
    pub fn len(&self) -> usize {
        self.done.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Number of lookups answered from the cache.
    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Fingerprint of the tree at `src`, or `None` if it cannot be read or is racy.
    pub fn fingerprint(&self, src: &Path) -> Option<Hash> {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).ok()?;
        let limit = now.checked_sub(self.racy_window)?;
        let mut h = Hasher::new(HashAlgo::Sha256);
        let mut newest = Duration::ZERO;
        walk(src, &mut h, &mut newest)?;
        if newest >= limit {
            tracing::debug!(src = %src.display(), "not caching import: recently changed");
            return None;
        }
        Some(h.finish())
    }
}

fn walk(p: &Path, h: &mut Hasher, newest: &mut Duration) -> Option<()> {
    let md = fs::symlink_metadata(p).ok()?;
    for v in [
        md.mode() as i64,
        md.size() as i64,
        md.ino() as i64,
        md.dev() as i64,
        md.mtime(),
        md.mtime_nsec(),
    ] {
        h.update(&v.to_le_bytes());
    }
    h.update(&md.ctime().to_le_bytes());
    h.update(&md.ctime_nsec().to_le_bytes());
    let c = Duration::new(
        md.ctime().max(0) as u64,
        md.ctime_nsec().clamp(0, 999_999_999) as u32,
    );
    let m = Duration::new(
        md.mtime().max(0) as u64,
        md.mtime_nsec().clamp(0, 999_999_999) as u32,
    );
    *newest = (*newest).max(c).max(m);
    let ft = md.file_type();
    if ft.is_symlink() {
        let t = fs::read_link(p).ok()?;
        h.update(b"L");
        h.update(&(t.as_os_str().len() as u64).to_le_bytes());
        h.update(t.as_os_str().as_bytes());
    } else if ft.is_dir() {
        let mut names: Vec<_> = fs::read_dir(p)
            .ok()?
            .filter_map(|e| e.ok().map(|e| e.file_name()))
            .collect();
        names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        h.update(b"D");
        for n in names {
            h.update(&(n.len() as u64).to_le_bytes());
            h.update(n.as_bytes());
            walk(&p.join(&n), h, newest)?;
        }
        h.update(b"E");
    }
    Some(())
}

impl ImportCache for MetadataImportCache {
    fn lookup(
        &self,
        src: &Path,
        name: &str,
        method: FileIngestionMethod,
        algo: HashAlgo,
    ) -> Option<AddedPath> {
        let key: Key = (src.to_owned(), name.to_owned(), method, algo);
        let Some(fp) = self.fingerprint(src) else {
            self.pending
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&key);
            return None;
        };
        if let Some((old, res)) = self
            .done
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
            && *old == fp
        {
            self.hits.fetch_add(1, Ordering::Relaxed);
            return Some(res.clone());
        }
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, fp);
        None
    }

    fn record(
        &self,
        src: &Path,
        name: &str,
        method: FileIngestionMethod,
        algo: HashAlgo,
        result: &AddedPath,
    ) {
        let key: Key = (src.to_owned(), name.to_owned(), method, algo);
        let fp = self
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&key);
        if let Some(fp) = fp {
            self.done
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(key, (fp, result.clone()));
        }
    }
}

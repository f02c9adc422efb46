//! The fetcher cache (separate from the evaluation cache): unpacked source trees keyed by
//! their NAR hash, and small JSON facts keyed by what was fetched (a tarball URL, a Git
//! revision), under `<cache dir>/fetchers/`.
//!
//! Invariant: everything appears atomically — trees and facts are written under a temporary
//! name in the same directory and renamed into place, so a failure (or a server dropping the
//! connection) mid-way leaves no partial entry, and a locked input (with `narHash`) whose tree
//! is cached is never downloaded again.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::hash::{Hash, HashAlgo};

use super::FetchError;
use super::attrs::{Attrs, attrs_to_json, json_to_attrs};
use super::json::to_compact;

/// A handle on the cache directory.
#[derive(Debug, Clone)]
pub struct FetcherCache {
    root: PathBuf,
}

fn io(ctx: impl Into<String>) -> impl FnOnce(std::io::Error) -> FetchError {
    let ctx = ctx.into();
    move |e| FetchError::io(ctx, e)
}

impl FetcherCache {
    /// Open (creating) `<dir>/fetchers`.
    pub fn open(dir: &Path) -> Result<FetcherCache, FetchError> {
        let root = dir.join("fetchers");
        for sub in ["trees", "facts", "tmp"] {
            let p = root.join(sub);
            std::fs::create_dir_all(&p).map_err(io(format!("creating '{}'", p.display())))?;
        }
        Ok(FetcherCache { root })
    }

    /// The cache's root directory (`<cache dir>/fetchers`).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where the tree with this NAR hash lives (whether or not it exists).
    pub fn tree_path(&self, nar_hash: &Hash) -> PathBuf {
        self.root.join("trees").join(nar_hash.to_nix32())
    }

    /// The cached tree with this NAR hash, if any.
    pub fn lookup_tree(&self, nar_hash: &Hash) -> Option<PathBuf> {
        let p = self.tree_path(nar_hash);
        p.is_dir().then_some(p)
    }

    /// A fresh temporary directory inside the cache (removed when dropped).
    pub fn temp_dir(&self) -> Result<tempfile::TempDir, FetchError> {
        tempfile::Builder::new()
            .prefix("tmp-")
            .tempdir_in(self.root.join("tmp"))
            .map_err(io("creating a temporary directory in the fetcher cache"))
    }

    /// A fresh temporary file inside the cache (removed when dropped).
    pub fn temp_file(&self) -> Result<tempfile::NamedTempFile, FetchError> {
        tempfile::Builder::new()
            .prefix("dl-")
            .tempfile_in(self.root.join("tmp"))
            .map_err(io("creating a temporary file in the fetcher cache"))
    }

    /// Move a finished tree (a directory, or a single file) into the cache under its NAR
    /// hash. If an identical tree is already there, the new one is discarded.
    pub fn insert_tree(&self, tmp: &Path, nar_hash: &Hash) -> Result<PathBuf, FetchError> {
        let dest = self.tree_path(nar_hash);
        if dest.exists() {
            let _ = crate::nar::remove_tree_force(tmp);
            return Ok(dest);
        }
        match std::fs::rename(tmp, &dest) {
            Ok(()) => Ok(dest),
            Err(_) if dest.exists() => {
                let _ = crate::nar::remove_tree_force(tmp);
                Ok(dest)
            }
            Err(e) => Err(FetchError::io(
                format!("moving tree into '{}'", dest.display()),
                e,
            )),
        }
    }

    fn fact_path(&self, domain: &str, key: &Attrs) -> PathBuf {
        let k = format!("{domain}\0{}", to_compact(&attrs_to_json(key)));
        let h = Hash::digest(HashAlgo::Sha256, k.as_bytes());
        self.root
            .join("facts")
            .join(format!("{}.json", h.to_nix32()))
    }

    /// Look up a fact (`domain` + key attributes → value attributes).
    pub fn lookup_fact(&self, domain: &str, key: &Attrs) -> Option<Attrs> {
        let text = std::fs::read_to_string(self.fact_path(domain, key)).ok()?;
        let v: Value = serde_json::from_str(&text).ok()?;
        json_to_attrs(&v).ok()
    }

    /// Record a fact atomically.
    pub fn upsert_fact(&self, domain: &str, key: &Attrs, value: &Attrs) -> Result<(), FetchError> {
        let p = self.fact_path(domain, key);
        let mut tmp = tempfile::NamedTempFile::new_in(self.root.join("tmp"))
            .map_err(io("creating a temporary file in the fetcher cache"))?;
        use std::io::Write;
        tmp.write_all(to_compact(&attrs_to_json(value)).as_bytes())
            .map_err(io("writing a fetcher cache entry"))?;
        tmp.persist(&p)
            .map_err(|e| FetchError::io(format!("writing '{}'", p.display()), e.error))?;
        Ok(())
    }
}

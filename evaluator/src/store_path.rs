//! The evaluator's link to the Nix store: which physical store an evaluation writes to, and
//! translation between logical store paths (`/nix/store/…`, what every hash and printed value
//! uses) and where the objects really live.
//!
//! Invariant: there is exactly one implementation of each store format in the project — hashes,
//! base-32, NAR serialisation, store paths and `.drv` files all come from `flaked-store`; this
//! module only chooses the store ([`open_store`]) and never computes a format itself. Stores are
//! opened once per (logical directory, physical root) per process and shared, so derivation
//! hashes memoised by one evaluation serve the next.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use flaked_store::local::LocalStore;
use flaked_store::store_path::StoreDir;

use crate::error::{EvalError, Result};

/// Nix's base-32 encoding (kept for callers of the evaluator's historical helper).
pub fn nix_base32(bytes: &[u8]) -> String {
    flaked_store::nixbase32::encode(bytes)
}

/// Process-wide override of the physical store root (`None`: [`default_store_root`]).
static ROOT_OVERRIDE: RwLock<Option<PathBuf>> = RwLock::new(None);

type StoreKey = (String, PathBuf);
static STORES: Mutex<Option<HashMap<StoreKey, Arc<LocalStore>>>> = Mutex::new(None);

/// Sets the physical root under which evaluations write store objects (`local?root=R`: objects at
/// `R/nix/store/…`, the database at `R/nix/var/nix/db`). `None` restores the default.
pub fn set_store_root(root: Option<PathBuf>) {
    match ROOT_OVERRIDE.write() {
        Ok(mut g) => *g = root,
        Err(p) => *p.into_inner() = root,
    }
}

/// The default physical root: `$FLAKED_STORE_ROOT` if set, else `/` (the real store, like
/// Nix) for root, otherwise a per-user root `$XDG_DATA_HOME/flaked/store-root`
/// (`~/.local/share/flaked/store-root`).
pub fn default_store_root() -> PathBuf {
    if let Some(r) = std::env::var_os("FLAKED_STORE_ROOT").filter(|v| !v.is_empty()) {
        return PathBuf::from(r);
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        return PathBuf::from("/");
    }
    let data = std::env::var_os("XDG_DATA_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".local/share")))
        .unwrap_or_else(std::env::temp_dir);
    data.join("flaked").join("store-root")
}

/// The physical root currently in effect.
pub fn store_root() -> PathBuf {
    let g = match ROOT_OVERRIDE.read() {
        Ok(g) => g.clone(),
        Err(p) => p.into_inner().clone(),
    };
    g.unwrap_or_else(default_store_root)
}

/// Opens (once per process) the local store for the logical directory `store_dir` at the current
/// physical root.
pub fn open_store(store_dir: &str) -> Result<Arc<LocalStore>> {
    let root = store_root();
    let key = (store_dir.to_string(), root.clone());
    let mut guard = match STORES.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    };
    let map = guard.get_or_insert_with(HashMap::new);
    if let Some(s) = map.get(&key) {
        return Ok(s.clone());
    }
    let dir = StoreDir::new(store_dir).map_err(|e| EvalError::eval(e.to_string()))?;
    let store = LocalStore::open(dir, &root).map_err(|e| {
        EvalError::eval(format!(
            "cannot open the Nix store at root '{}': {e}",
            root.display()
        ))
    })?;
    let store = Arc::new(store);
    map.insert(key, store.clone());
    Ok(store)
}

/// Commits every store opened by this process (their writes are committed in batches): the
/// daemon calls it before it exits, so that no object it added stays unregistered. Returns the
/// failures, one message each.
pub fn flush_stores() -> Vec<String> {
    let stores: Vec<Arc<LocalStore>> = match STORES.lock() {
        Ok(g) => g
            .as_ref()
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default(),
        Err(p) => p
            .into_inner()
            .as_ref()
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default(),
    };
    stores
        .iter()
        .filter_map(|store| store.flush().err())
        .map(|e| format!("cannot commit the store's pending objects: {e}"))
        .collect()
}

/// Where a logical path lives physically: paths inside `store_dir` move under the store root,
/// others are returned unchanged.
pub fn real_path(store_dir: &str, logical: &str) -> PathBuf {
    let dir = store_dir.trim_end_matches('/');
    if let Some(rest) = logical.strip_prefix(dir)
        && (rest.is_empty() || rest.starts_with('/'))
    {
        let root = store_root();
        if root == Path::new("/") {
            return PathBuf::from(logical);
        }
        let mut p = root;
        p.push(logical.trim_start_matches('/'));
        return p;
    }
    PathBuf::from(logical)
}

/// Converts a store error into an evaluation error carrying the store's message.
pub fn store_err(e: impl std::fmt::Display) -> EvalError {
    EvalError::eval(e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base32_known() {
        // sha256("") in Nix base32.
        let h = flaked_store::hash::Hash::sha256(b"");
        assert_eq!(
            nix_base32(h.as_bytes()),
            "0mdqa9w1p6cmli6976v4wi0sw9r4p5prkj7lzfd1877wk11c9c73"
        );
    }

    #[test]
    fn real_path_maps_only_store_paths() {
        assert_eq!(real_path("/nix/store", "/etc/x"), PathBuf::from("/etc/x"));
        assert_eq!(
            real_path("/nix/store", "/nix/storex/a"),
            PathBuf::from("/nix/storex/a")
        );
    }
}

//! Garbage-collector roots for `result` links, laid out as Nix lays them.
//!
//! `nix build` makes `result` a symlink to the output and registers it as an *indirect* root:
//! `<state dir>/gcroots/auto/<nix32 sha1 of the link's absolute path>` is a symlink to the
//! link, so a collector that follows `gcroots/` finds the link, and through it the output,
//! while the link exists (a dangling auto root is just skipped and can be removed). Our
//! store's state directory is `<root>/nix/var/nix`, beside the database, as for Nix's
//! `local?root=<root>` store, so Nix's own `nix-store --gc` on that store honours our roots.
//!
//! Invariant: a root symlink is replaced atomically (created beside, renamed over), so it is
//! never missing or half-written; a link that is not inside the store is never made a root
//! of a path in it twice under different names (the name is a function of the link's path).

use std::io;
use std::path::{Path, PathBuf};

use crate::hash::{Hash, HashAlgo};
use crate::local::LocalStore;

/// Why a root could not be registered.
#[derive(Debug, thiserror::Error)]
pub enum RootError {
    #[error(
        "creating a garbage collector root ({0}) in the Nix store is forbidden (are you running nix-build inside the store?)"
    )]
    InStore(String),
    #[error("cannot create symlink '{link}'; already exists")]
    Exists { link: String },
    #[error("cannot create symlink '{link}' to '{target}': {source}")]
    Io {
        link: String,
        target: String,
        source: io::Error,
    },
}

/// The store's state directory (`<root>/nix/var/nix`).
pub fn state_dir(store: &LocalStore) -> PathBuf {
    let real = store.real_store_dir();
    let logical = Path::new(store.store_dir().as_str());
    // The physical store directory is `<root>` + the logical one.
    let mut root = real.to_path_buf();
    for _ in logical.components().skip(1) {
        root.pop();
    }
    root.join("nix/var/nix")
}

/// Where the indirect root for `link` (an absolute path) lives.
pub fn indirect_root_path(state_dir: &Path, link: &Path) -> PathBuf {
    let hash = Hash::digest(HashAlgo::Sha1, link.as_os_str().as_encoded_bytes()).to_nix32();
    state_dir.join("gcroots/auto").join(hash)
}

/// Atomically makes `link` a symlink to `target` (creating its directory).
fn make_symlink(link: &Path, target: &Path) -> io::Result<()> {
    if let Some(dir) = link.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = PathBuf::from(format!(
        "{}.tmp-{}-{}",
        link.display(),
        std::process::id(),
        rand_suffix()
    ));
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(target, &tmp)?;
    std::fs::rename(&tmp, link).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() as u64)
        .unwrap_or(0);
    t ^ (N.fetch_add(1, Ordering::Relaxed) << 32)
}

/// Registers `link` (absolute) as an indirect root (`LocalStore::addIndirectRoot` in Nix).
pub fn add_indirect_root(store: &LocalStore, link: &Path) -> Result<PathBuf, RootError> {
    let root = indirect_root_path(&state_dir(store), link);
    make_symlink(&root, link).map_err(|source| RootError::Io {
        link: root.display().to_string(),
        target: link.display().to_string(),
        source,
    })?;
    Ok(root)
}

/// Checks that `link` (absolute) may become a result link: not inside the store, and not an
/// existing file or a symlink pointing outside the store (Nix's `addPermRoot` rules).
pub fn check_link(store: &LocalStore, link: &Path) -> Result<(), RootError> {
    let store_dir = store.store_dir().as_str();
    let text = link.display().to_string();
    if text.starts_with(&format!("{store_dir}/")) {
        return Err(RootError::InStore(text));
    }
    if let Ok(meta) = std::fs::symlink_metadata(link) {
        let into_store = meta.file_type().is_symlink()
            && std::fs::read_link(link)
                .map(|t| t.to_string_lossy().starts_with(&format!("{store_dir}/")))
                .unwrap_or(false);
        if !into_store {
            return Err(RootError::Exists { link: text });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indirect_root_names_are_nix32_sha1_of_the_link() {
        // printf %s /home/alice/project/result | nix-hash --type sha1 --base32 --flat
        assert_eq!(
            indirect_root_path(
                Path::new("/r/nix/var/nix"),
                Path::new("/home/alice/project/result")
            ),
            Path::new("/r/nix/var/nix/gcroots/auto/dpv3z5cyvknjrs5cz7620dfacrhg8fxb")
        );
    }
}

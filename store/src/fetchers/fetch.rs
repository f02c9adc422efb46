//! The fetch entry point: turn an [`Input`] into a local source tree plus the locked input
//! (Nix's `Input::getAccessor` + `fetchToStore`), dispatching to the per-scheme fetchers and
//! enforcing what the caller pinned (`checkLocks`).
//!
//! Invariant: the returned input is final and carries the `narHash` of the returned tree; a
//! pinned `narHash`, `rev`, `revCount` or `lastModified` that the fetched tree contradicts is an
//! error naming both values, and nothing of a failed fetch stays in the cache.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::hash::Hash;

use super::FetchError;
use super::attrs::attrs_to_json_string;
use super::cache::FetcherCache;
use super::flakeref::FlakeRef;
use super::input::{Input, InputKind, InputSettings, PathInput};

/// Settings of the fetchers.
#[derive(Debug, Clone)]
pub struct FetchSettings {
    /// The cache directory (Nix: `~/.cache/nix`); the fetcher cache lives in `fetchers/`.
    pub cache_dir: PathBuf,
    pub input: InputSettings,
    /// `allow-dirty` (default true): dirty Git work trees may be used.
    pub allow_dirty: bool,
    /// `warn-dirty` (default true).
    pub warn_dirty: bool,
    /// `access-tokens`: host → token for the forges.
    pub access_tokens: BTreeMap<String, String>,
    /// `tarball-ttl` (default 3600 s): how long a downloaded unlocked tarball URL is reused.
    pub tarball_ttl: u64,
    /// Forge hosts to contact over plain `http://` instead of `https://` (for tests with a
    /// loopback server; empty in production).
    pub http_hosts: Vec<String>,
}

impl FetchSettings {
    /// Defaults as in Nix, with the given cache directory.
    pub fn new(cache_dir: impl Into<PathBuf>) -> FetchSettings {
        FetchSettings {
            cache_dir: cache_dir.into(),
            input: InputSettings::default(),
            allow_dirty: true,
            warn_dirty: true,
            access_tokens: BTreeMap::new(),
            tarball_ttl: 3600,
            http_hosts: Vec::new(),
        }
    }
}

/// A fetched input.
#[derive(Debug, Clone)]
pub struct Fetched {
    /// The input with everything the fetch determined (`rev`, `lastModified`, `narHash`, …);
    /// final.
    pub input: Input,
    /// The source tree: on disk (a directory, or a file for `type = "file"`; trees from
    /// remote sources and dirty Git work trees live read-only in the fetcher cache, a `path`
    /// input's tree is the path itself), or a commit of a Git repository, read from its objects.
    pub tree: SourceTree,
    /// SHA-256 NAR hash of `tree`.
    pub nar_hash: Hash,
    /// Warnings Nix prints while fetching, before the caller's own (a dirty Git submodule:
    /// `Git tree '…' is dirty`), without the `warning: ` prefix.
    pub warnings: Vec<String>,
}

/// Where a fetched tree's contents are read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceTree {
    /// A directory or file on disk.
    Path(PathBuf),
    /// The tree of a commit in a Git repository (a local work tree's repository or a bare
    /// cache repository), read from its object database: never written out to be hashed, and
    /// copied into the store only when the store lacks it.
    GitCommit { repo: PathBuf, rev: String },
}

impl SourceTree {
    /// Serialise the tree to `sink` in NAR order (the same events as the store's
    /// `dump_path` of the tree exported to disk).
    pub fn dump(&self, sink: &mut dyn crate::nar::NarSink) -> Result<(), FetchError> {
        match self {
            SourceTree::Path(p) => crate::nar::dump_path(p, sink, None)
                .map_err(|e| FetchError::invalid(format!("reading '{}': {e}", p.display()))),
            SourceTree::GitCommit { repo, rev } => super::git::dump_commit(repo, rev, sink),
        }
    }

    /// The tree on disk, if it is there.
    pub fn as_path(&self) -> Option<&Path> {
        match self {
            SourceTree::Path(p) => Some(p),
            SourceTree::GitCommit { .. } => None,
        }
    }

    /// Write the tree to `dest` (which must not exist); for callers that need files on disk.
    pub fn export_to(&self, dest: &Path) -> Result<(), FetchError> {
        let mut restorer = crate::nar::Restorer::new(dest, false);
        self.dump(&mut restorer)
    }
}

impl Fetched {
    /// The store path the tree has once added to the store (see [`tree_store_path`]).
    pub fn store_path(
        &self,
        store_dir: &crate::store_path::StoreDir,
    ) -> Result<crate::store_path::StorePath, FetchError> {
        tree_store_path(store_dir, &self.nar_hash, &self.input)
    }
}

/// The store path of a fetched tree with this NAR hash (Nix's `Input::computeStorePath`:
/// fixed-output, recursive SHA-256, named `source` unless the input has a `name`).
pub fn tree_store_path(
    store_dir: &crate::store_path::StoreDir,
    nar_hash: &Hash,
    input: &Input,
) -> Result<crate::store_path::StorePath, FetchError> {
    store_dir
        .make_fixed_output_path(
            crate::store_path::FileIngestionMethod::Recursive,
            nar_hash,
            &input.name(),
            &Default::default(),
        )
        .map_err(|e| FetchError::invalid(e.to_string()))
}

/// A flake reference resolved through the registries and fetched.
#[derive(Debug, Clone)]
pub struct FetchedFlake {
    /// The reference after registry resolution (direct, not yet locked).
    pub resolved: FlakeRef,
    /// The locked reference (final input, same `dir`).
    pub locked: FlakeRef,
    pub fetched: Fetched,
}

impl FetchedFlake {}

/// Nix's `FlakeRef::resolve` + `FlakeRef::fetchTree`: resolve an indirect reference (when
/// `registries` is given; `None` = pure lock-file use, where indirect references are an
/// error) and fetch it.
pub fn fetch_flake_ref(
    r: &FlakeRef,
    registries: Option<&super::Registries>,
    settings: &FetchSettings,
) -> Result<FetchedFlake, FetchError> {
    let resolved = match registries {
        Some(regs) if !r.input.is_direct() => regs.resolve(r, &|_| true)?,
        _ => r.clone(),
    };
    let fetched = fetch(&resolved.input, settings)?;
    let locked = FlakeRef {
        input: fetched.input.clone(),
        subdir: resolved.subdir.clone(),
    };
    Ok(FetchedFlake {
        resolved,
        locked,
        fetched,
    })
}

/// The NAR hash (SHA-256) of a file system tree: the single function through which every
/// fetcher hashes, implemented by the store's NAR serialiser.
pub fn nar_hash_of(path: &Path) -> Result<Hash, FetchError> {
    crate::nar::nar_hash_path(path)
        .map(|(h, _)| h)
        .map_err(|e| {
            FetchError::invalid(format!(
                "computing the NAR hash of '{}': {e}",
                path.display()
            ))
        })
}

/// Largest modification time in a tree (Nix's `dumpPathAndGetMtime`).
fn max_mtime(path: &Path) -> Result<u64, FetchError> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::symlink_metadata(path)
        .map_err(|e| FetchError::io(format!("getting status of '{}'", path.display()), e))?;
    let mut t = m.mtime().max(0) as u64;
    if m.is_dir() {
        for e in std::fs::read_dir(path)
            .map_err(|e| FetchError::io(format!("reading directory '{}'", path.display()), e))?
        {
            let e = e.map_err(|e| {
                FetchError::io(format!("reading directory '{}'", path.display()), e)
            })?;
            t = t.max(max_mtime(&e.path())?);
        }
    }
    Ok(t)
}

fn fetch_path(input: &Input, p: &PathInput) -> Result<(PathBuf, Hash, Input), FetchError> {
    if !p.path.starts_with('/') {
        return Err(FetchError::invalid(format!(
            "cannot fetch input '{}' because it uses a relative path",
            input.display()
        )));
    }
    let abs = PathBuf::from(super::flakeref::canon_path(&p.path));
    tracing::debug!("copying '{}' to the store", abs.display());
    let hash = nar_hash_of(&abs)?;
    let mut res = input.clone();
    if let InputKind::Path(rp) = &mut res.kind
        && rp.last_modified.is_none()
    {
        rp.last_modified = Some(max_mtime(&abs)?);
    }
    Ok((abs, hash, res))
}

/// Fetch an input (`Input::fetchToStore` without the store copy): the tree, and the locked
/// input with `narHash` set and marked final.
pub fn fetch(input: &Input, settings: &FetchSettings) -> Result<Fetched, FetchError> {
    let cache = FetcherCache::open(&settings.cache_dir)?;

    // A final input with a NAR hash whose tree we already have needs no fetching.
    if input.is_final
        && let Some(h) = input.nar_hash_parsed()?
        && let Some(tree) = cache.lookup_tree(&h)
    {
        tracing::debug!(
            "using cached input '{}' in '{}'",
            input.display(),
            tree.display()
        );
        return Ok(Fetched {
            input: input.clone(),
            tree: SourceTree::Path(tree),
            nar_hash: h,
            warnings: Vec::new(),
        });
    }

    let mut warnings = Vec::new();
    let (tree, nar_hash, mut result) = match &input.kind {
        InputKind::Path(p) => on_disk(fetch_path(input, p)?),
        InputKind::Git(g) => super::git::fetch_git(input, g, settings, &cache, &mut warnings)?,
        InputKind::Forge(f) => on_disk(super::tarball::fetch_forge(input, f, settings, &cache)?),
        InputKind::Tarball(c) => {
            on_disk(super::tarball::fetch_tarball(input, c, settings, &cache)?)
        }
        InputKind::File(c) => on_disk(super::tarball::fetch_file(input, c, &cache)?),
        InputKind::Mercurial(_) => {
            return Err(FetchError::invalid(format!(
                "cannot fetch Mercurial input '{}': Mercurial is not supported",
                input.display()
            )));
        }
        InputKind::Indirect(_) => {
            return Err(FetchError::invalid(format!(
                "indirect input '{}' cannot be fetched directly",
                input.display()
            )));
        }
        InputKind::Unsupported(a) => {
            return Err(FetchError::invalid(format!(
                "cannot fetch unsupported input '{}'",
                attrs_to_json_string(a)
            )));
        }
    };
    result.set_nar_hash(Some(nar_hash.to_sri()));
    result.is_final = true;
    check_locks(input, &mut result)?;
    Ok(Fetched {
        input: result,
        tree,
        nar_hash,
        warnings,
    })
}

fn on_disk((tree, hash, input): (PathBuf, Hash, Input)) -> (SourceTree, Hash, Input) {
    (SourceTree::Path(tree), hash, input)
}

/// Nix's `Input::checkLocks`: the fetched input must agree with what was specified.
pub fn check_locks(specified: &Input, result: &mut Input) -> Result<(), FetchError> {
    if specified.is_final {
        let mut spec = specified.clone();
        if let Some(h) = spec.nar_hash_parsed()? {
            spec.set_nar_hash(Some(h.to_sri()));
        }
        let sa = spec.to_attrs();
        let ra = result.to_attrs();
        for (k, v) in &sa {
            if let Some(v2) = ra.get(k)
                && v != v2
            {
                return Err(FetchError::invalid(format!(
                    "mismatch in field '{k}' of input '{}', got '{}'",
                    attrs_to_json_string(&sa),
                    attrs_to_json_string(&ra)
                )));
            }
        }
        *result = spec;
        return Ok(());
    }
    if let Some(prev) = specified.nar_hash_parsed()? {
        let got = result.nar_hash_parsed()?;
        if got.as_ref() != Some(&prev) {
            return Err(match got {
                Some(g) => FetchError::NarHashMismatch {
                    input: specified.display(),
                    expected: prev.to_sri(),
                    got: g.to_sri(),
                },
                None => FetchError::invalid(format!(
                    "NAR hash mismatch in input '{}', expected '{}' but got none",
                    specified.display(),
                    prev.to_sri()
                )),
            });
        }
    }
    if let Some(prev) = specified.last_modified()
        && result.last_modified() != Some(prev)
    {
        return Err(FetchError::invalid(format!(
            "'lastModified' attribute mismatch in input '{}', expected {prev}, got {}",
            result.display(),
            result.last_modified().map_or(-1, |x| x as i64)
        )));
    }
    if let Some(prev) = specified.rev_hash()?
        && result.rev_hash()?.as_ref() != Some(&prev)
    {
        return Err(FetchError::invalid(format!(
            "'rev' attribute mismatch in input '{}', expected {}",
            result.display(),
            prev.to_base16()
        )));
    }
    if let Some(prev) = specified.rev_count()
        && result.rev_count() != Some(prev)
    {
        return Err(FetchError::invalid(format!(
            "'revCount' attribute mismatch in input '{}', expected {prev}",
            result.display()
        )));
    }
    Ok(())
}

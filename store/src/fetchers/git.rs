//! The `git` fetcher for local repositories (`git+file:`), built on gix: commit mode (a `ref`
//! or `rev` is given, or the repository is bare) exports the commit's tree; work-tree mode
//! (neither given) exposes only the files Git tracks, as they are on disk, and reports a dirty
//! tree as `dirtyRev`/`dirtyShortRev` = `<HEAD>-dirty`.
//!
//! With `submodules = true`, the submodules listed in `.gitmodules` are fetched as Git inputs of
//! their own (commit mode: the revision the parent's tree records, from the URL `.gitmodules`
//! gives, resolved like libgit2 does; work-tree mode: the submodule's checkout) and their trees
//! are placed at their paths, as Nix's mounted accessors do.
//!
//! Invariant: the attributes returned (`ref`, `rev`, `revCount`, `lastModified`, `dirtyRev`,
//! `dirtyShortRev`) and the tree (hence the `narHash`) are the ones Nix 2.26 produces for the
//! same repository state; untracked files are never visible.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::FetchError;
use super::attrs::{Attr, Attrs, maybe_get_int, maybe_get_str};
use super::cache::FetcherCache;
use super::fetch::{FetchSettings, SourceTree, nar_hash_of};
use super::input::{GitInput, Input, InputKind, parse_rev};
use super::url::parse_url;

const NULL_REV: &str = "0000000000000000000000000000000000000000";

/// What kind of file a tracked path is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FileKind {
    Regular,
    Executable,
    Symlink,
    Submodule,
}

/// The state of a work tree (Nix's `WorkdirInfo`).
#[derive(Debug, Clone)]
pub struct WorkdirInfo {
    /// Tracked files that exist in the work tree, relative paths with `/`.
    pub files: Vec<String>,
    /// HEAD commit, if there are commits.
    pub head_rev: Option<String>,
    /// Whether the index differs from HEAD or the work tree from the index (untracked files
    /// do not count).
    pub is_dirty: bool,
    /// The full name of the branch HEAD points at (`refs/heads/main`), if any.
    pub head_ref: Option<String>,
}

fn git_err(repo: &Path) -> impl Fn(&dyn std::fmt::Display) -> FetchError + '_ {
    move |e| FetchError::git(format!("Git repository '{}'", repo.display()), e)
}

/// Bytes of decoded delta bases a repository handle keeps (see [`open`]).
const PACK_CACHE_BYTES: usize = 16 << 20;

fn open(path: &Path) -> Result<gix::Repository, FetchError> {
    let mut repo = gix::open(path)
        .map_err(|e| FetchError::git(format!("opening Git repository '{}'", path.display()), e))?;
    // Packed blobs of similar files are deltas on chains dozens deep; without a cache of
    // decoded bases every blob read inflates its whole chain again.
    repo.objects.set_pack_cache(|| {
        Box::new(gix::odb::pack::cache::lru::MemoryCappedHashmap::new(
            PACK_CACHE_BYTES,
        ))
    });
    Ok(repo)
}

fn kind_of_tree_entry(mode: gix::objs::tree::EntryMode) -> Option<FileKind> {
    if mode.is_tree() {
        None
    } else if mode.is_commit() {
        Some(FileKind::Submodule)
    } else if mode.is_link() {
        Some(FileKind::Symlink)
    } else if mode.is_executable() {
        Some(FileKind::Executable)
    } else {
        Some(FileKind::Regular)
    }
}

/// Flattened tree of a commit: path → (kind, blob id).
fn flatten_commit(
    repo: &gix::Repository,
    rev: gix::ObjectId,
) -> Result<BTreeMap<String, (FileKind, gix::ObjectId)>, FetchError> {
    let e =
        |x: &dyn std::fmt::Display| FetchError::git(format!("reading the tree of commit {rev}"), x);
    let commit = repo.find_commit(rev).map_err(|x| e(&x))?;
    let tree = commit.tree().map_err(|x| e(&x))?;
    let mut rec = gix::traverse::tree::Recorder::default();
    tree.traverse().breadthfirst(&mut rec).map_err(|x| e(&x))?;
    let mut out = BTreeMap::new();
    for r in rec.records {
        if let Some(k) = kind_of_tree_entry(r.mode) {
            out.insert(r.filepath.to_string(), (k, r.oid));
        }
    }
    Ok(out)
}

fn index_kind(mode: gix::index::entry::Mode) -> Option<FileKind> {
    use gix::index::entry::Mode;
    if mode == Mode::FILE {
        Some(FileKind::Regular)
    } else if mode == Mode::FILE_EXECUTABLE {
        Some(FileKind::Executable)
    } else if mode == Mode::SYMLINK {
        Some(FileKind::Symlink)
    } else if mode == Mode::COMMIT {
        Some(FileKind::Submodule)
    } else {
        None
    }
}

/// The kind and Git blob id of a work-tree file, or `None` if it does not exist.
fn worktree_state(path: &Path) -> Result<Option<(FileKind, gix::ObjectId)>, FetchError> {
    use std::os::unix::fs::PermissionsExt;
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(FetchError::io(
                format!("getting status of '{}'", path.display()),
                e,
            ));
        }
    };
    let (kind, data) = if meta.file_type().is_symlink() {
        let t = std::fs::read_link(path)
            .map_err(|e| FetchError::io(format!("reading link '{}'", path.display()), e))?;
        (FileKind::Symlink, t.into_os_string().into_encoded_bytes())
    } else if meta.is_file() {
        let d = std::fs::read(path)
            .map_err(|e| FetchError::io(format!("reading '{}'", path.display()), e))?;
        let k = if meta.permissions().mode() & 0o100 != 0 {
            FileKind::Executable
        } else {
            FileKind::Regular
        };
        (k, d)
    } else if meta.is_dir() {
        return Ok(Some((
            FileKind::Submodule,
            gix::ObjectId::null(gix::hash::Kind::Sha1),
        )));
    } else {
        return Ok(None);
    };
    let id = gix::objs::compute_hash(gix::hash::Kind::Sha1, gix::objs::Kind::Blob, &data)
        .map_err(|e| FetchError::git(format!("hashing '{}'", path.display()), e))?;
    Ok(Some((kind, id)))
}

/// Whether a work-tree file certainly matches its index entry by stat data alone.
fn stat_unchanged(
    path: &Path,
    stat: &gix::index::entry::Stat,
    kind: FileKind,
    index_mtime: Option<(i64, i64)>,
) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Some(index_mtime) = index_mtime else {
        return false;
    };
    let Ok(m) = std::fs::symlink_metadata(path) else {
        return false;
    };
    if !m.file_type().is_file() {
        return false;
    }
    let exec = m.mode() & 0o100 != 0;
    let mtime = (m.mtime(), m.mtime_nsec());
    exec == (kind == FileKind::Executable)
        && m.size() == u64::from(stat.size)
        && mtime == (i64::from(stat.mtime.secs), i64::from(stat.mtime.nsecs))
        && mtime < index_mtime
}

/// Nix's `getWorkdirInfo`: tracked files, HEAD, dirtiness.
pub fn workdir_info(repo_path: &Path) -> Result<WorkdirInfo, FetchError> {
    let repo = open(repo_path)?;
    let ge = git_err(repo_path);
    let head_rev = repo.head_id().ok().map(|id| id.detach());
    let head_ref = repo
        .head_name()
        .map_err(|e| ge(&e))?
        .map(|n| n.as_bstr().to_string());
    let head_tree = match head_rev {
        Some(r) => flatten_commit(&repo, r)?,
        None => BTreeMap::new(),
    };
    let index = repo.index_or_empty().map_err(|e| ge(&e))?;
    let workdir = repo
        .workdir()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| repo_path.to_path_buf());
    let index_mtime = std::fs::metadata(index.path()).ok().map(|m| {
        use std::os::unix::fs::MetadataExt;
        (m.mtime(), m.mtime_nsec())
    });
    let mut files = Vec::new();
    let mut is_dirty = false;
    let mut in_index = std::collections::BTreeSet::new();
    for entry in index.entries() {
        let path = entry.path(&index).to_string();
        if entry.stage_raw() != 0 {
            // Unmerged entry: a conflict is a dirty tree.
            is_dirty = true;
            in_index.insert(path);
            continue;
        }
        let Some(kind) = index_kind(entry.mode) else {
            continue;
        };
        in_index.insert(path.clone());
        // Index vs HEAD.
        match head_tree.get(&path) {
            Some((k, id)) if *k == kind && *id == entry.id => {}
            _ => is_dirty = true,
        }
        // Work tree vs index. Like Git, trust the index's stat data for regular files whose
        // size and mtime match and that are older than the index itself (not "racy").
        let full = workdir.join(&path);
        if matches!(kind, FileKind::Regular | FileKind::Executable)
            && stat_unchanged(&full, &entry.stat, kind, index_mtime)
        {
            files.push(path);
            continue;
        }
        let wt = worktree_state(&full)?;
        match (kind, wt) {
            (_, None) => {
                is_dirty = true;
                continue; // deleted in the work tree: not visible
            }
            (FileKind::Submodule, Some(_)) => {}
            (k, Some((wk, id))) => {
                if wk != k || id != entry.id {
                    is_dirty = true;
                }
            }
        }
        files.push(path);
    }
    if head_tree.keys().any(|p| !in_index.contains(p)) {
        is_dirty = true; // deleted from the index
    }
    Ok(WorkdirInfo {
        files,
        head_rev: head_rev.map(|r| r.to_string()),
        is_dirty,
        head_ref,
    })
}

fn write_file(dest: &Path, data: &[u8], executable: bool) -> Result<(), FetchError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    // Created read-only in one step (the mode applies to the new file only).
    let mode = if executable { 0o555 } else { 0o444 };
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(dest)
        .map_err(|e| FetchError::io(format!("creating '{}'", dest.display()), e))?;
    f.write_all(data)
        .map_err(|e| FetchError::io(format!("writing '{}'", dest.display()), e))
}

fn ensure_parent(dest: &Path) -> Result<(), FetchError> {
    if let Some(p) = dest.parent() {
        std::fs::create_dir_all(p)
            .map_err(|e| FetchError::io(format!("creating '{}'", p.display()), e))?;
    }
    Ok(())
}

/// Write the tree of commit `rev` into `dest` (which must not exist).
fn export_commit(
    repo: &gix::Repository,
    rev: gix::ObjectId,
    dest: &Path,
) -> Result<(), FetchError> {
    std::fs::create_dir_all(dest)
        .map_err(|e| FetchError::io(format!("creating '{}'", dest.display()), e))?;
    for (path, (kind, id)) in flatten_commit(repo, rev)? {
        let target = dest.join(&path);
        if kind == FileKind::Submodule {
            continue;
        }
        ensure_parent(&target)?;
        let obj = repo
            .find_object(id)
            .map_err(|e| FetchError::git(format!("reading blob {id} ('{path}')"), e))?;
        match kind {
            FileKind::Symlink => {
                let t = std::ffi::OsStr::from_bytes_compat(&obj.data);
                std::os::unix::fs::symlink(t, &target).map_err(|e| {
                    FetchError::io(format!("creating symlink '{}'", target.display()), e)
                })?;
            }
            k => write_file(&target, &obj.data, k == FileKind::Executable)?,
        }
    }
    Ok(())
}

trait FromBytesCompat {
    fn from_bytes_compat(b: &[u8]) -> &std::ffi::OsStr;
}
impl FromBytesCompat for std::ffi::OsStr {
    fn from_bytes_compat(b: &[u8]) -> &std::ffi::OsStr {
        use std::os::unix::ffi::OsStrExt;
        std::ffi::OsStr::from_bytes(b)
    }
}

/// Copy the tracked files of a work tree into `dest`.
fn export_workdir(workdir: &Path, files: &[String], dest: &Path) -> Result<(), FetchError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dest)
        .map_err(|e| FetchError::io(format!("creating '{}'", dest.display()), e))?;
    for f in files {
        let src = workdir.join(f);
        let target = dest.join(f);
        let meta = std::fs::symlink_metadata(&src)
            .map_err(|e| FetchError::io(format!("getting status of '{}'", src.display()), e))?;
        if meta.is_dir() {
            continue; // a submodule checkout: not part of this repository's tree
        }
        ensure_parent(&target)?;
        if meta.file_type().is_symlink() {
            let t = std::fs::read_link(&src)
                .map_err(|e| FetchError::io(format!("reading link '{}'", src.display()), e))?;
            std::os::unix::fs::symlink(&t, &target).map_err(|e| {
                FetchError::io(format!("creating symlink '{}'", target.display()), e)
            })?;
        } else {
            let data = std::fs::read(&src)
                .map_err(|e| FetchError::io(format!("reading '{}'", src.display()), e))?;
            write_file(&target, &data, meta.permissions().mode() & 0o100 != 0)?;
        }
    }
    Ok(())
}

/// Commit time of `rev` (Nix's `getLastModified`).
fn commit_time(repo: &gix::Repository, rev: gix::ObjectId) -> Result<u64, FetchError> {
    let c = repo
        .find_commit(rev)
        .map_err(|e| FetchError::git(format!("reading commit {rev}"), e))?;
    let t = c
        .time()
        .map_err(|e| FetchError::git(format!("reading commit {rev}"), e))?;
    Ok(t.seconds.max(0) as u64)
}

/// Number of commits reachable from `rev` (Nix's `getRevCount`).
fn rev_count(repo: &gix::Repository, rev: gix::ObjectId) -> Result<u64, FetchError> {
    let walk = repo
        .rev_walk([rev])
        .all()
        .map_err(|e| FetchError::git(format!("walking history of {rev}"), e))?;
    let mut n = 0u64;
    for c in walk {
        c.map_err(|e| FetchError::git(format!("walking history of {rev}"), e))?;
        n += 1;
    }
    Ok(n)
}

/// Resolve a ref name as `git rev-parse REF^{commit}` would.
fn resolve_ref(
    repo: &gix::Repository,
    repo_path: &Path,
    r: &str,
) -> Result<gix::ObjectId, FetchError> {
    let id = repo.rev_parse_single(r).map_err(|e| {
        FetchError::git(
            format!("resolving Git reference '{r}' in '{}'", repo_path.display()),
            e,
        )
    })?;
    let obj = id
        .object()
        .map_err(|e| FetchError::git(format!("reading '{r}'"), e))?;
    let commit = obj
        .peel_to_commit()
        .map_err(|e| FetchError::git(format!("'{r}' does not name a commit"), e))?;
    Ok(commit.id)
}

/// The tree and facts of one commit, cached by revision.
///
/// Without submodules the tree stays in the repository: its NAR hash is computed from the
/// Git objects (nothing is written to disk) and remembered by revision, and the caller copies
/// it into the store only if the store lacks it. With submodules it is exported to the fetcher
/// cache with the submodules' trees in place.
fn fetch_commit_tree(
    repo: &gix::Repository,
    repo_path: &Path,
    rev: gix::ObjectId,
    cache: &FetcherCache,
    with_rev_count: bool,
    subs: &Subs,
) -> Result<(SourceTree, crate::hash::Hash, u64, Option<u64>), FetchError> {
    let mut key: Attrs = [("rev".to_owned(), Attr::String(rev.to_string()))]
        .into_iter()
        .collect();
    if !matches!(subs, Subs::None) {
        // Work-tree submodules are only used for clean trees, whose checkouts are at the
        // revisions the commit records: the same tree as commit mode's.
        key.insert("submodules".into(), Attr::Bool(true));
    }
    let in_repo = || SourceTree::GitCommit {
        repo: repo_path.to_path_buf(),
        rev: rev.to_string(),
    };
    if let Some(f) = cache.lookup_fact("gitRevTree", &key)
        && let (Ok(Some(h)), Ok(Some(lm))) = (
            maybe_get_str(&f, "narHash"),
            maybe_get_int(&f, "lastModified"),
        )
        && let Ok(hash) = crate::hash::Hash::parse_sri(&h)
        && let Some(tree) = match subs {
            Subs::None => Some(in_repo()),
            _ => cache.lookup_tree(&hash).map(SourceTree::Path),
        }
    {
        let rc = match maybe_get_int(&f, "revCount").ok().flatten() {
            Some(rc) => Some(rc),
            None if with_rev_count => Some(rev_count(repo, rev)?),
            None => None,
        };
        return Ok((tree, hash, lm, rc.filter(|_| with_rev_count)));
    }
    let (tree, hash) = if matches!(subs, Subs::None) {
        let mut h = crate::nar::NarHasher::new(crate::hash::HashAlgo::Sha256);
        dump_commit_in(repo, rev, &mut h)?;
        (in_repo(), h.finish().0)
    } else {
        let tmp = cache.temp_dir()?;
        let dest = tmp.path().join("tree");
        export_commit(repo, rev, &dest)?;
        mount_submodules(subs, &dest)?;
        let hash = nar_hash_of(&dest)?;
        (SourceTree::Path(cache.insert_tree(&dest, &hash)?), hash)
    };
    let lm = commit_time(repo, rev)?;
    let rc = if with_rev_count {
        Some(rev_count(repo, rev)?)
    } else {
        None
    };
    let mut facts = Attrs::new();
    facts.insert("narHash".into(), Attr::String(hash.to_sri()));
    facts.insert("lastModified".into(), Attr::Int(lm));
    if let Some(rc) = rc {
        facts.insert("revCount".into(), Attr::Int(rc));
    }
    cache.upsert_fact("gitRevTree", &key, &facts)?;
    Ok((tree, hash, lm, rc))
}

/// One node of a commit's tree as exported: a directory (entries in bytewise order, as NAR
/// wants them) or a blob.
enum TreeNode {
    Dir(BTreeMap<Vec<u8>, TreeNode>),
    Blob(FileKind, gix::ObjectId),
}

/// Serialise the tree of commit `rev` of the repository at `repo_path` to `sink`, exactly as
/// [`export_commit`] would write it to disk (submodule entries left out).
pub(crate) fn dump_commit(
    repo_path: &Path,
    rev: &str,
    sink: &mut dyn crate::nar::NarSink,
) -> Result<(), FetchError> {
    let repo = open(repo_path)?;
    let id = gix::ObjectId::from_hex(rev.as_bytes())
        .map_err(|e| FetchError::git(format!("parsing revision '{rev}'"), e))?;
    dump_commit_in(&repo, id, sink)
}

fn dump_commit_in(
    repo: &gix::Repository,
    rev: gix::ObjectId,
    sink: &mut dyn crate::nar::NarSink,
) -> Result<(), FetchError> {
    let mut root = BTreeMap::new();
    for (path, (kind, id)) in flatten_commit(repo, rev)? {
        if kind == FileKind::Submodule {
            continue;
        }
        let mut dir = &mut root;
        let mut parts = path.split('/').peekable();
        while let Some(part) = parts.next() {
            let name = part.as_bytes().to_vec();
            if parts.peek().is_none() {
                dir.insert(name, TreeNode::Blob(kind, id));
                break;
            }
            let node = dir
                .entry(name)
                .or_insert_with(|| TreeNode::Dir(BTreeMap::new()));
            dir = match node {
                TreeNode::Dir(d) => d,
                TreeNode::Blob(..) => {
                    return Err(FetchError::invalid(format!(
                        "commit {rev} has both a file and a directory at '{path}'"
                    )));
                }
            };
        }
    }
    let sink_err = |e: std::io::Error| FetchError::io(format!("serialising commit {rev}"), e);
    fn emit(
        repo: &gix::Repository,
        node: &TreeNode,
        sink: &mut dyn crate::nar::NarSink,
        sink_err: &dyn Fn(std::io::Error) -> FetchError,
    ) -> Result<(), FetchError> {
        match node {
            TreeNode::Dir(entries) => {
                sink.directory_start().map_err(sink_err)?;
                for (name, child) in entries {
                    sink.entry_start(name).map_err(sink_err)?;
                    emit(repo, child, sink, sink_err)?;
                    sink.entry_end().map_err(sink_err)?;
                }
                sink.directory_end().map_err(sink_err)
            }
            TreeNode::Blob(kind, id) => {
                let obj = repo
                    .find_object(*id)
                    .map_err(|e| FetchError::git(format!("reading blob {id}"), e))?;
                if *kind == FileKind::Symlink {
                    return sink.symlink(&obj.data).map_err(sink_err);
                }
                sink.file_start(*kind == FileKind::Executable, obj.data.len() as u64)
                    .map_err(sink_err)?;
                sink.file_chunk(&obj.data).map_err(sink_err)?;
                sink.file_end().map_err(sink_err)
            }
        }
    }
    emit(repo, &TreeNode::Dir(root), sink, &sink_err)
}

/// Fetch a `git` input. Returns the tree, its NAR hash and the input with the attributes the
/// fetch determined.
///
/// `warnings` receives Nix's warnings about submodules (`Git tree '…' is dirty` for a dirty
/// submodule checkout, printed before the parent's own).
pub fn fetch_git(
    input: &Input,
    g: &GitInput,
    settings: &FetchSettings,
    cache: &FetcherCache,
    warnings: &mut Vec<String>,
) -> Result<(SourceTree, crate::hash::Hash, Input), FetchError> {
    let mut url = parse_url(&g.url)?;
    let rev_given = input.rev_hash()?;
    // Local work trees are used in place; everything else (remote URLs, bare repositories)
    // is fetched into a bare cache repository with `git fetch`, as Nix does.
    let is_worktree = url.scheme == "file" && Path::new(&url.path).join(".git").exists();
    let (repo_path, remote_ref) = if is_worktree {
        (PathBuf::from(&url.path), None)
    } else {
        if url.scheme == "file" {
            url.query.clear();
        }
        let (dir, r) = sync_remote(&url.to_string(), g, rev_given.as_ref(), settings, cache)?;
        (dir, Some(r))
    };
    let is_bare = !is_worktree;
    let repo = open(&repo_path)?;
    let mut res = g.clone();
    if let Some(h) = &rev_given
        && !matches!(
            h.algo(),
            crate::hash::HashAlgo::Sha1 | crate::hash::HashAlgo::Sha256
        )
    {
        return Err(FetchError::invalid(format!(
            "Hash '{}' is not supported by Git. Supported types are sha1 and sha256.",
            h.to_string(crate::hash::HashFormat::Base16, true)
        )));
    }
    let shallow = g.shallow == Some(true);

    if g.ref_.is_some() || rev_given.is_some() || is_bare {
        // Commit mode.
        if !shallow && repo.path().join("shallow").exists() {
            return Err(FetchError::invalid(format!(
                "'{}' is a shallow Git repository, but shallow repositories are only allowed when `shallow = true;` is specified",
                if is_worktree {
                    repo_path.display().to_string()
                } else {
                    url.to_string()
                }
            )));
        }
        let r = match (&g.ref_, &remote_ref) {
            (Some(r), _) => r.clone(),
            (None, Some(r)) => r.clone(),
            (None, None) => match repo.head_name().ok().flatten() {
                Some(n) => n.as_bstr().to_string(),
                None => {
                    tracing::warn!(
                        "could not read HEAD ref from repo at '{}', using 'master'",
                        repo_path.display()
                    );
                    "master".into()
                }
            },
        };
        res.ref_ = Some(r.clone());
        let rev = match &rev_given {
            Some(h) => {
                let id = gix::ObjectId::from_hex(h.to_base16().as_bytes())
                    .map_err(|e| FetchError::git("parsing revision", e))?;
                if is_worktree && repo.find_object(id).is_err() {
                    // Nix reads a local work tree's repository without checking first: the
                    // failure is libgit2's.
                    let rev = h.to_base16();
                    return Err(FetchError::invalid(format!(
                        "getting Git object '{rev}': object not found - no match for id ({rev})"
                    )));
                }
                if repo.find_object(id).is_err() {
                    return Err(FetchError::invalid(format!(
                        "Cannot find Git revision '{}' in ref '{r}' of repository '{}'! Please make sure that the \x1b[1mrev\x1b[0m exists on the \x1b[1mref\x1b[0m you've specified or add \x1b[1mallRefs = true;\x1b[0m to \x1b[1mfetchGit\x1b[0m.",
                        h.to_base16(),
                        repo_path.display()
                    )));
                }
                id
            }
            None if remote_ref.is_some() && r == "HEAD" => {
                resolve_ref(&repo, &repo_path, "FETCH_HEAD")?
            }
            None => resolve_ref(&repo, &repo_path, &r)?,
        };
        let subs = if g.submodules == Some(true) {
            let base = if is_worktree {
                SubmoduleBase::Dir(repo_path.clone())
            } else {
                SubmoduleBase::Url(url.to_string())
            };
            Subs::Commit(commit_submodules(
                &repo, &repo_path, rev, &base, g, settings, cache, warnings,
            )?)
        } else {
            Subs::None
        };
        let (tree, hash, lm, rc) =
            fetch_commit_tree(&repo, &repo_path, rev, cache, !shallow, &subs)?;
        res.rev = Some(rev.to_string());
        res.rev_count = rc;
        res.last_modified = Some(lm);
        return Ok((
            tree,
            hash,
            Input {
                kind: InputKind::Git(res),
                is_final: input.is_final,
            },
        ));
    }

    // Work-tree mode.
    let mut info = workdir_info(&repo_path)?;
    let subs = if g.submodules == Some(true) {
        let (mounts, dirty) =
            workdir_submodules(&repo, &repo_path, &info, g, settings, cache, warnings)?;
        info.is_dirty |= dirty;
        Subs::Workdir(mounts)
    } else {
        Subs::None
    };
    let head = match &info.head_rev {
        Some(h) => Some(
            gix::ObjectId::from_hex(h.as_bytes())
                .map_err(|e| FetchError::git("parsing HEAD", e))?,
        ),
        None => None,
    };
    let lm = match head {
        Some(h) => commit_time(&repo, h)?,
        None => 0,
    };
    if !info.is_dirty {
        if let Some(r) = &info.head_ref {
            res.ref_ = Some(r.clone());
        }
        let (tree, hash) = match head {
            Some(h) => {
                let (tree, hash, _, rc) =
                    fetch_commit_tree(&repo, &repo_path, h, cache, true, &subs)?;
                res.rev_count = rc;
                (tree, hash)
            }
            None => {
                res.rev_count = Some(0);
                export_to_cache(&repo_path, &info.files, cache, &subs)?
            }
        };
        res.rev = Some(info.head_rev.clone().unwrap_or_else(|| NULL_REV.into()));
        res.last_modified = Some(lm);
        return Ok((
            tree,
            hash,
            Input {
                kind: InputKind::Git(res),
                is_final: input.is_final,
            },
        ));
    }
    if !settings.allow_dirty {
        return Err(FetchError::invalid(format!(
            "Git tree '{}' is dirty",
            repo_path.display()
        )));
    }
    if settings.warn_dirty {
        tracing::warn!("Git tree '{}' is dirty", repo_path.display());
    }
    if let Some(h) = &info.head_rev {
        res.dirty_rev = Some(format!("{h}-dirty"));
        res.dirty_short_rev = Some(format!("{}-dirty", &h[..7]));
    }
    res.last_modified = Some(lm);
    let (tree, hash) = export_to_cache(&repo_path, &info.files, cache, &subs)?;
    // A dirty tree is not locked: the rev it might carry from the input is dropped.
    let _ = parse_rev;
    Ok((
        tree,
        hash,
        Input {
            kind: InputKind::Git(res),
            is_final: input.is_final,
        },
    ))
}

fn run_git(args: &[&str], what: &str) -> Result<String, FetchError> {
    let out = std::process::Command::new("git")
        .args(args)
        .env("GIT_TERMINAL_PROMPT", "0")
        .output()
        .map_err(|e| FetchError::io(format!("running 'git' ({what})"), e))?;
    if !out.status.success() {
        return Err(FetchError::git(
            what.to_owned(),
            String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The branch a remote's HEAD points at (`git ls-remote --symref URL HEAD`), cached for
/// `tarball_ttl` seconds.
fn remote_head(
    url: &str,
    settings: &FetchSettings,
    cache: &FetcherCache,
) -> Result<String, FetchError> {
    let key: Attrs = [("url".to_owned(), Attr::String(url.to_owned()))]
        .into_iter()
        .collect();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    if let Some(f) = cache.lookup_fact("gitRemoteHead", &key)
        && let (Ok(Some(h)), Ok(Some(t))) = (maybe_get_str(&f, "head"), maybe_get_int(&f, "time"))
        && now.saturating_sub(t) < settings.tarball_ttl
    {
        return Ok(h);
    }
    let out = run_git(
        &["ls-remote", "--symref", url, "HEAD"],
        &format!("reading HEAD of '{url}'"),
    )?;
    let head = out
        .lines()
        .find_map(|l| l.strip_prefix("ref: ").and_then(|r| r.split('\t').next()))
        .map(str::to_owned);
    let head = match head {
        Some(h) => h,
        None => {
            tracing::warn!("could not read HEAD ref from repo at '{url}', using 'master'");
            "master".into()
        }
    };
    let mut v = Attrs::new();
    v.insert("head".into(), Attr::String(head.clone()));
    v.insert("time".into(), Attr::Int(now));
    cache.upsert_fact("gitRemoteHead", &key, &v)?;
    Ok(head)
}

/// Bring the needed ref/revision of a remote repository into a bare cache repository
/// (`<cache>/fetchers/git/<hash of URL>`); returns its path and the ref used.
fn sync_remote(
    url: &str,
    g: &GitInput,
    rev: Option<&crate::hash::Hash>,
    settings: &FetchSettings,
    cache: &FetcherCache,
) -> Result<(PathBuf, String), FetchError> {
    let name = crate::hash::Hash::digest(crate::hash::HashAlgo::Sha256, url.as_bytes()).to_nix32();
    let dir = cache.root().join("git").join(name);
    let dir_s = dir.display().to_string();
    if !dir.join("HEAD").exists() {
        std::fs::create_dir_all(&dir)
            .map_err(|e| FetchError::io(format!("creating '{dir_s}'"), e))?;
        run_git(
            &["init", "--quiet", "--bare", &dir_s],
            "creating the Git cache",
        )?;
    }
    let r = match &g.ref_ {
        Some(r) => r.clone(),
        None => remote_head(url, settings, cache)?,
    };
    let all_refs = g.all_refs == Some(true);
    let local_ref = if r.starts_with("refs/") {
        dir.join(&r)
    } else {
        dir.join("refs/heads").join(&r)
    };
    let repo = open(&dir)?;
    let do_fetch = match rev {
        Some(h) => gix::ObjectId::from_hex(h.to_base16().as_bytes())
            .map(|id| repo.find_object(id).is_err())
            .unwrap_or(true),
        None if all_refs => true,
        None => std::fs::metadata(&local_ref)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_none_or(|age| age.as_secs() >= settings.tarball_ttl),
    };
    if do_fetch {
        let fetch_ref = if all_refs {
            "refs/*:refs/*".to_owned()
        } else if let Some(h) = rev {
            h.to_base16()
        } else if r.starts_with("refs/") {
            format!("{r}:{r}")
        } else if r == "HEAD" {
            r.clone()
        } else {
            format!("refs/heads/{r}:refs/heads/{r}")
        };
        let mut args = vec!["-C", &dir_s, "fetch", "--quiet", "--force"];
        if g.shallow == Some(true) {
            args.push("--depth=1");
        }
        args.extend(["--", url, &fetch_ref]);
        let res = run_git(&args, &format!("fetching Git repository '{url}'"));
        if let Err(e) = res {
            if !local_ref.exists() || rev.is_some() {
                return Err(e);
            }
            tracing::warn!(
                "could not update local clone of Git repository '{url}'; continuing with the most recent version: {e}"
            );
        } else if rev.is_none()
            && let Ok(f) = std::fs::File::options().write(true).open(&local_ref)
        {
            let _ = f.set_modified(std::time::SystemTime::now());
        }
    }
    Ok((dir, r))
}

fn export_to_cache(
    workdir: &Path,
    files: &[String],
    cache: &FetcherCache,
    subs: &Subs,
) -> Result<(SourceTree, crate::hash::Hash), FetchError> {
    let tmp = cache.temp_dir()?;
    let dest = tmp.path().join("tree");
    export_workdir(workdir, files, &dest)?;
    mount_submodules(subs, &dest)?;
    let hash = nar_hash_of(&dest)?;
    let tree = cache.insert_tree(&dest, &hash)?;
    Ok((SourceTree::Path(tree), hash))
}

/// The submodule trees to place into a tree being exported: (path in the parent, fetched tree).
enum Subs {
    None,
    Commit(Vec<(String, SourceTree)>),
    Workdir(Vec<(String, SourceTree)>),
}

/// One entry of `.gitmodules`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Submodule {
    path: String,
    url: String,
    branch: Option<String>,
}

/// Where `.gitmodules` is read from.
enum GitmodulesSource<'a> {
    /// The blob `.gitmodules` of a commit.
    Commit(gix::ObjectId),
    /// The file in a work tree.
    File(&'a Path),
}

/// The submodules `.gitmodules` declares, in its order (Git's config parser reads the file:
/// `git config --list -z`, as libgit2's config parser does for Nix).
fn read_gitmodules(
    repo_path: &Path,
    source: GitmodulesSource<'_>,
) -> Result<Vec<Submodule>, FetchError> {
    let repo_s = repo_path.display().to_string();
    let out = match source {
        GitmodulesSource::Commit(rev) => {
            let repo = open(repo_path)?;
            let has_file = flatten_commit(&repo, rev)?.contains_key(".gitmodules");
            if !has_file {
                return Ok(Vec::new());
            }
            run_git(
                &[
                    "-C",
                    &repo_s,
                    "config",
                    "--blob",
                    &format!("{rev}:.gitmodules"),
                    "--list",
                    "-z",
                ],
                &format!("reading '.gitmodules' of commit {rev} in '{repo_s}'"),
            )?
        }
        GitmodulesSource::File(f) => {
            if !f.is_file() {
                return Ok(Vec::new());
            }
            let fs = f.display().to_string();
            run_git(
                &["config", "--file", &fs, "--list", "-z"],
                &format!("reading '{fs}'"),
            )?
        }
    };
    Ok(parse_config_list(&out))
}

/// Parses `git config --list -z` output (`key\nvalue\0`…) into submodule entries: sections
/// `submodule.<name>` with `path`, `url` and `branch`, kept in the order names first appear.
fn parse_config_list(out: &str) -> Vec<Submodule> {
    let mut order: Vec<String> = Vec::new();
    let mut fields: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for entry in out.split('\0').filter(|e| !e.is_empty()) {
        let (key, value) = entry.split_once('\n').unwrap_or((entry, ""));
        let Some(rest) = key.strip_prefix("submodule.") else {
            continue;
        };
        let Some((name, var)) = rest.rsplit_once('.') else {
            continue;
        };
        if !fields.contains_key(name) {
            order.push(name.to_owned());
        }
        fields
            .entry(name.to_owned())
            .or_default()
            .insert(var.to_ascii_lowercase(), value.to_owned());
    }
    order
        .into_iter()
        .filter_map(|name| {
            let f = fields.remove(&name)?;
            Some(Submodule {
                path: f.get("path")?.clone(),
                url: f.get("url")?.clone(),
                branch: f.get("branch").filter(|b| !b.is_empty()).cloned(),
            })
        })
        .collect()
}

/// What a relative submodule URL is resolved against.
enum SubmoduleBase {
    /// A local repository's directory (its work tree).
    Dir(PathBuf),
    /// The URL the parent was fetched from.
    Url(String),
}

/// libgit2's `git_submodule_resolve_url`: a URL starting with `./` or `../` is relative to the
/// repository's `origin` remote, else to its work tree (or, for a fetched repository, to the
/// URL it came from); an absolute path or a URL is taken as it is.
fn resolve_submodule_url(
    repo: &gix::Repository,
    base: &SubmoduleBase,
    url: &str,
) -> Result<String, FetchError> {
    if url.starts_with("./") || url.starts_with("../") {
        let remote = repo.find_remote("origin").ok().and_then(|r| {
            r.url(gix::remote::Direction::Fetch)
                .map(|u| u.to_bstring().to_string())
        });
        let base = match (remote, base) {
            (Some(r), _) => r,
            (None, SubmoduleBase::Dir(d)) => d.display().to_string(),
            (None, SubmoduleBase::Url(u)) => u.clone(),
        };
        let (prefix, mut path) = match base.find("://") {
            Some(i) => {
                let after = &base[i + 3..];
                let host_end = after.find('/').map(|j| i + 3 + j).unwrap_or(base.len());
                (base[..host_end].to_owned(), base[host_end..].to_owned())
            }
            None => (String::new(), base.clone()),
        };
        let mut segments: Vec<String> = path
            .trim_end_matches('/')
            .split('/')
            .map(str::to_owned)
            .collect();
        for part in url.split('/') {
            match part {
                "." | "" => {}
                ".." => {
                    if segments.len() > 1 {
                        segments.pop();
                    }
                }
                p => segments.push(p.to_owned()),
            }
        }
        path = segments.join("/");
        return Ok(format!("{prefix}{path}"));
    }
    if url.starts_with('/') || url.contains(':') {
        return Ok(url.to_owned());
    }
    Err(FetchError::invalid(format!(
        "resolving Git submodule URL '{url}'"
    )))
}

/// Fetches one submodule as a Git input of its own (Nix: `type = git`, the resolved URL, the
/// revision, `submodules = true`, `allRefs = true` in commit mode) and returns its tree and
/// resulting input.
fn fetch_submodule(
    attrs: Attrs,
    settings: &FetchSettings,
    cache: &FetcherCache,
    warnings: &mut Vec<String>,
) -> Result<(SourceTree, Input), FetchError> {
    let input = Input::from_attrs(&attrs)?;
    let InputKind::Git(g) = &input.kind else {
        return Err(FetchError::invalid(format!(
            "submodule input '{}' is not a Git input",
            input.display()
        )));
    };
    let (tree, _, got) = fetch_git(&input, g, settings, cache, warnings)?;
    if settings.warn_dirty
        && let InputKind::Git(r) = &got.kind
        && r.dirty_rev.is_some()
    {
        let shown = r.url.strip_prefix("file://").unwrap_or(&r.url);
        warnings.push(format!("Git tree '{shown}' is dirty"));
    }
    Ok((tree, got))
}

/// Commit mode: every submodule of `.gitmodules` in commit `rev`, fetched at the revision the
/// commit's tree records for its path.
#[allow(clippy::too_many_arguments)]
fn commit_submodules(
    repo: &gix::Repository,
    repo_path: &Path,
    rev: gix::ObjectId,
    base: &SubmoduleBase,
    g: &GitInput,
    settings: &FetchSettings,
    cache: &FetcherCache,
    warnings: &mut Vec<String>,
) -> Result<Vec<(String, SourceTree)>, FetchError> {
    let tree = flatten_commit(repo, rev)?;
    let mut mounts = Vec::new();
    for sm in read_gitmodules(repo_path, GitmodulesSource::Commit(rev))? {
        let Some((FileKind::Submodule, sub_rev)) = tree.get(&sm.path) else {
            continue;
        };
        let url = resolve_submodule_url(repo, base, &sm.url)?;
        let mut a = Attrs::new();
        a.insert("type".into(), Attr::String("git".into()));
        a.insert("url".into(), Attr::String(url));
        if let Some(b) = &sm.branch {
            a.insert("ref".into(), Attr::String(b.clone()));
        }
        a.insert("rev".into(), Attr::String(sub_rev.to_string()));
        if let Some(e) = g.export_ignore {
            a.insert("exportIgnore".into(), Attr::Bool(e));
        }
        a.insert("submodules".into(), Attr::Bool(true));
        a.insert("allRefs".into(), Attr::Bool(true));
        let (t, _) = fetch_submodule(a, settings, cache, warnings)?;
        mounts.push((sm.path, t));
    }
    Ok(mounts)
}

/// Work-tree mode: every submodule of the work tree's `.gitmodules` that is tracked and checked
/// out, fetched from its checkout (itself in work-tree mode). Also says whether one of them
/// makes the parent dirty (its checkout is dirty or not at the revision the index records).
fn workdir_submodules(
    repo: &gix::Repository,
    repo_path: &Path,
    info: &WorkdirInfo,
    g: &GitInput,
    settings: &FetchSettings,
    cache: &FetcherCache,
    warnings: &mut Vec<String>,
) -> Result<(Vec<(String, SourceTree)>, bool), FetchError> {
    let workdir = repo
        .workdir()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| repo_path.to_path_buf());
    let index = repo.index_or_empty().map_err(|e| git_err(repo_path)(&e))?;
    let gitlinks: BTreeMap<String, gix::ObjectId> = index
        .entries()
        .iter()
        .filter(|e| e.mode == gix::index::entry::Mode::COMMIT)
        .map(|e| (e.path(&index).to_string(), e.id))
        .collect();
    let mut mounts = Vec::new();
    let mut dirty = false;
    for sm in read_gitmodules(
        repo_path,
        GitmodulesSource::File(&workdir.join(".gitmodules")),
    )? {
        let Some(recorded) = gitlinks.get(&sm.path) else {
            continue;
        };
        let dir = workdir.join(&sm.path);
        if !info.files.contains(&sm.path) || !dir.join(".git").exists() {
            continue;
        }
        let mut a = Attrs::new();
        a.insert("type".into(), Attr::String("git".into()));
        a.insert(
            "url".into(),
            Attr::String(format!("file://{}", dir.display())),
        );
        if let Some(e) = g.export_ignore {
            a.insert("exportIgnore".into(), Attr::Bool(e));
        }
        a.insert("submodules".into(), Attr::Bool(true));
        let (t, got) = fetch_submodule(a, settings, cache, warnings)?;
        match got.rev() {
            Some(r) if gix::ObjectId::from_hex(r.as_bytes()).ok() == Some(*recorded) => {}
            _ => dirty = true,
        }
        mounts.push((sm.path, t));
    }
    Ok((mounts, dirty))
}

/// Copies the submodule trees into an exported tree at their paths.
fn mount_submodules(subs: &Subs, dest: &Path) -> Result<(), FetchError> {
    let mounts: &[(String, SourceTree)] = match subs {
        Subs::None => return Ok(()),
        Subs::Commit(m) | Subs::Workdir(m) => m,
    };
    for (path, tree) in mounts {
        let target = dest.join(path);
        if target.exists() {
            crate::nar::remove_tree_force(&target)
                .map_err(|e| FetchError::io(format!("replacing '{}'", target.display()), e))?;
        }
        ensure_parent(&target)?;
        match tree {
            SourceTree::Path(p) => copy_tree(p, &target)?,
            SourceTree::GitCommit { .. } => tree.export_to(&target)?,
        }
    }
    Ok(())
}

/// Copies a fetched (read-only) tree: directories, files with their executable bit, symlinks.
fn copy_tree(from: &Path, to: &Path) -> Result<(), FetchError> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::symlink_metadata(from)
        .map_err(|e| FetchError::io(format!("getting status of '{}'", from.display()), e))?;
    if meta.file_type().is_symlink() {
        let t = std::fs::read_link(from)
            .map_err(|e| FetchError::io(format!("reading link '{}'", from.display()), e))?;
        return std::os::unix::fs::symlink(&t, to)
            .map_err(|e| FetchError::io(format!("creating symlink '{}'", to.display()), e));
    }
    if meta.is_dir() {
        std::fs::create_dir_all(to)
            .map_err(|e| FetchError::io(format!("creating '{}'", to.display()), e))?;
        let rd = std::fs::read_dir(from)
            .map_err(|e| FetchError::io(format!("reading '{}'", from.display()), e))?;
        for e in rd {
            let e = e.map_err(|e| FetchError::io(format!("reading '{}'", from.display()), e))?;
            copy_tree(&e.path(), &to.join(e.file_name()))?;
        }
        return Ok(());
    }
    let data = std::fs::read(from)
        .map_err(|e| FetchError::io(format!("reading '{}'", from.display()), e))?;
    write_file(to, &data, meta.permissions().mode() & 0o100 != 0)
}

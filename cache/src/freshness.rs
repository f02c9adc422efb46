//! Freshness keys: a cheap content key of a source tree.
//!
//! Why: a `path:` flake or a dirty git work tree has no lock-file hash, yet the
//! eval cache needs to know whether its contents changed since last time.
//! Hashing every file on every request is too slow for large trees, so a
//! persistent [`TreeIndex`] remembers, per file, the metadata
//! `(size, mtime_ns, ctime_ns, inode, device, executable bit)` it had when its
//! content was hashed; only files whose metadata changed are read again.
//!
//! The key covers, in byte order of relative paths, every entry's path, type
//! (regular, executable, symlink, directory, deleted), and content hash (blake3
//! of the file bytes or of the symlink target). [`FileSet::Walk`] visits the
//! whole tree (directories included, as they are part of a NAR);
//! [`FileSet::List`] takes an explicit list (git's tracked files, supplied by
//! the caller), where a listed file that no longer exists counts as "deleted".
//! [`FileSet::Git`] is a list of a Git work tree's tracked files together with what the Git
//! index records of them: there a file's content hash is its Git blob id (SHA-1 of
//! `blob <size>\0<bytes>`), so a file whose stat data still matches its index entry and is not
//! racily clean takes the index's blob id without being read, the way `git status` trusts it.
//!
//! Invariant: the key changes whenever any covered byte, name, type or
//! executable bit changes. Metadata-based reuse is only trusted when the file
//! was last modified clearly before it was hashed ("racy" entries, modified
//! within [`RACY_WINDOW_NS`] of their hashing, are always re-hashed, as git
//! does for its index), so an edit within the same timestamp tick cannot hide. A Git index
//! entry is only trusted when the file's size, mtime and ctime (to the nanosecond) and inode
//! equal the recorded ones, its mtime is older than the index file's by more than
//! [`RACY_WINDOW_NS`] and its ctime older at all (else it is racily clean: it may have changed
//! within the tick the index was written in), and the entry is not smudged (recorded size 0
//! with a non-empty blob); any other file is read and hashed. An edit changes the ctime, which
//! no user can set back, so it cannot hide.

use std::fs;
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::error::CacheError;

/// A file modified less than this long before it was hashed is re-hashed next time.
pub const RACY_WINDOW_NS: i64 = 2_000_000_000;

const MAGIC: &[u8; 8] = b"FLKDFRI2";

/// Which files a content key covers.
#[derive(Clone, Debug)]
pub enum FileSet {
    /// Every file, symlink and directory below the root (symlinks are not followed).
    Walk,
    /// Exactly these paths, relative to the root (e.g. git's tracked files).
    /// Order and duplicates do not matter.
    List(Vec<PathBuf>),
    /// A Git work tree's tracked files, with what its index knows of each (see [`GitSeed`]);
    /// content hashes are Git blob ids.
    Git(GitFiles),
}

/// The tracked files of a Git work tree and the Git index's record of them.
#[derive(Clone, Debug, Default)]
pub struct GitFiles {
    /// Tracked paths relative to the root, each with its index record when the caller has one
    /// that may be trusted at all (stage 0, a regular file, not assume-valid, skip-worktree or
    /// intent-to-add). Order and duplicates do not matter.
    pub files: Vec<(PathBuf, Option<GitSeed>)>,
    /// Modification time of the index file, in nanoseconds since the epoch, taken *before* its
    /// entries were read; `None` disables the seeds.
    pub index_mtime_ns: Option<i64>,
}

/// A Git index entry's stat data and blob id for one regular file (Git stores sizes, inode
/// numbers and times as 32-bit values).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GitSeed {
    /// The blob id (SHA-1) of the content the entry records.
    pub blob: [u8; 20],
    /// Recorded size, truncated to 32 bits as Git does.
    pub size: u32,
    /// Recorded modification time (seconds, nanoseconds).
    pub mtime: (u32, u32),
    /// Recorded status-change time (seconds, nanoseconds).
    pub ctime: (u32, u32),
    /// Recorded inode number, truncated to 32 bits.
    pub ino: u32,
}

/// The blob id of the empty file: the only content a recorded size of 0 may stand for
/// without reading (Git "smudges" racily clean entries by recording size 0).
const EMPTY_BLOB: [u8; 20] = [
    0xe6, 0x9d, 0xe2, 0x9b, 0xb2, 0xd1, 0xd6, 0x43, 0x4b, 0x8b, 0x29, 0xae, 0x77, 0x5a, 0xd8, 0xc2,
    0xe4, 0x8c, 0x53, 0x91,
];

/// How a file's content hash is computed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Algo {
    Blake3 = 0,
    /// Git blob id, zero-padded to 32 bytes.
    GitBlob = 1,
}

/// A combined content key: 64 lowercase hex digits.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ContentKey(pub String);

impl std::fmt::Display for ContentKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// What computing a key cost.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeyStats {
    /// Entries covered (files, symlinks, directories, deleted files).
    pub entries: u64,
    /// Files whose content was read and hashed.
    pub hashed_files: u64,
    /// Bytes read for hashing.
    pub hashed_bytes: u64,
    /// Files whose hash was taken from the Git index without reading them.
    pub seeded_files: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Entry {
    size: u64,
    mtime_ns: i64,
    ctime_ns: i64,
    ino: u64,
    dev: u64,
    exec: bool,
    algo: Algo,
    hashed_at_ns: i64,
    hash: [u8; 32],
}

/// Entry types as mixed into the key.
mod kind {
    pub const FILE: u8 = b'f';
    pub const EXEC: u8 = b'x';
    pub const SYMLINK: u8 = b'l';
    pub const DIR: u8 = b'd';
    pub const DELETED: u8 = b'-';
}

/// The persistent per-tree index of file metadata → content hash.
#[derive(Debug)]
pub struct TreeIndex {
    path: PathBuf,
    /// Sorted by path, one entry per path.
    entries: Vec<IndexEntry>,
    changed: bool,
}

/// A regular file's path (relative to the root) and what the index knows of it.
type IndexEntry = (Vec<u8>, Entry);

/// One path a key covers, with its Git index record (if any) and its metadata (`None`: gone).
struct Listed {
    rel: Vec<u8>,
    seed: Option<GitSeed>,
    meta: Option<fs::Metadata>,
}

/// The entry of `rel` in `entries` (sorted by path). `cursor` is where the previous lookup
/// ended: paths asked for in sorted order are found there without searching.
fn find_entry<'a>(entries: &'a [IndexEntry], cursor: &mut usize, rel: &[u8]) -> Option<&'a Entry> {
    if let Some((path, entry)) = entries.get(*cursor)
        && path.as_slice() == rel
    {
        *cursor += 1;
        return Some(entry);
    }
    let i = entries
        .binary_search_by(|(path, _)| path.as_slice().cmp(rel))
        .ok()?;
    *cursor = i + 1;
    Some(&entries[i].1)
}

fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn mtime_ns(m: &fs::Metadata) -> i64 {
    m.mtime()
        .saturating_mul(1_000_000_000)
        .saturating_add(m.mtime_nsec())
}

fn ctime_ns(m: &fs::Metadata) -> i64 {
    m.ctime()
        .saturating_mul(1_000_000_000)
        .saturating_add(m.ctime_nsec())
}

impl TreeIndex {
    /// Loads the index stored at `path`; a missing file gives an empty index,
    /// a malformed one is logged and replaced by an empty index.
    pub fn load(path: &Path) -> TreeIndex {
        let entries = match fs::read(path) {
            Ok(bytes) => match decode_index(&bytes) {
                Ok(entries) => entries,
                Err(reason) => {
                    let e = CacheError::BadIndex {
                        path: path.to_owned(),
                        reason,
                    };
                    tracing::warn!(error = %e, "rebuilding freshness index");
                    Vec::new()
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => {
                tracing::warn!(error = %e, path = %path.display(), "cannot read freshness index; rebuilding it");
                Vec::new()
            }
        };
        TreeIndex {
            path: path.to_owned(),
            entries,
            changed: false,
        }
    }

    /// Number of files remembered.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True if no file is remembered.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Computes the content key of the tree at `root`, re-hashing only files
    /// whose metadata changed; the index is updated in memory (see [`save`](Self::save)).
    pub fn content_key(
        &mut self,
        root: &Path,
        files: &FileSet,
    ) -> Result<(ContentKey, KeyStats), CacheError> {
        let root_meta = fs::metadata(root).map_err(|source| CacheError::Io {
            op: "reading tree root",
            path: root.to_owned(),
            source,
        })?;
        if !root_meta.is_dir() {
            return Err(CacheError::BadPath {
                path: root.to_owned(),
                reason: "not a directory".into(),
            });
        }
        let mut listed: Vec<Listed> = Vec::new();
        let (algo, index_mtime_ns) = match files {
            FileSet::Git(g) => (Algo::GitBlob, g.index_mtime_ns),
            _ => (Algo::Blake3, None),
        };
        match files {
            FileSet::Walk => walk(root, &mut Vec::new(), &mut listed)?,
            FileSet::List(paths) => {
                let mut rels = Vec::with_capacity(paths.len());
                for p in paths {
                    rels.push((check_relative(p)?, None));
                }
                stat_listed(root, rels, &mut listed)?;
            }
            FileSet::Git(g) => {
                let mut rels = Vec::with_capacity(g.files.len());
                for (p, seed) in &g.files {
                    let seed = seed.clone().filter(|_| index_mtime_ns.is_some());
                    rels.push((check_relative(p)?, seed));
                }
                stat_listed(root, rels, &mut listed)?;
            }
        }
        // The loop below takes old entries by path from this sorted list; on an error the index
        // is left as it was.
        let old = std::mem::take(&mut self.entries);
        match self.key_listed(root, listed, algo, index_mtime_ns, &old) {
            Ok((key, seen, stats)) => {
                if seen.len() != old.len() {
                    self.changed = true;
                }
                self.entries = seen;
                Ok((key, stats))
            }
            Err(e) => {
                self.entries = old;
                Err(e)
            }
        }
    }

    /// The key of the `listed` entries (in their order), with the index entries of the regular
    /// files among them (sorted by path), reusing those of `old` (sorted by path) that still hold.
    fn key_listed(
        &mut self,
        root: &Path,
        listed: Vec<Listed>,
        algo: Algo,
        index_mtime_ns: Option<i64>,
        old: &[IndexEntry],
    ) -> Result<(ContentKey, Vec<IndexEntry>, KeyStats), CacheError> {
        let mut stats = KeyStats::default();
        let mut key = blake3::Hasher::new();
        key.update(match algo {
            Algo::Blake3 => b"flaked tree key v1\0".as_slice(),
            Algo::GitBlob => b"flaked tree key v1 git\0".as_slice(),
        });
        let mut seen: Vec<IndexEntry> = Vec::with_capacity(listed.len());
        let mut cursor = 0;
        for Listed { rel, seed, meta } in listed {
            stats.entries += 1;
            let full = || root.join(std::ffi::OsStr::from_bytes(&rel));
            let mut keep = None;
            let (kind, hash) = match meta {
                None => (kind::DELETED, [0u8; 32]),
                Some(m) if m.is_dir() => (kind::DIR, [0u8; 32]),
                Some(m) if m.file_type().is_symlink() => {
                    let target = fs::read_link(full()).map_err(|source| CacheError::Io {
                        op: "readlink",
                        path: full(),
                        source,
                    })?;
                    (
                        kind::SYMLINK,
                        *blake3::hash(target.as_os_str().as_bytes()).as_bytes(),
                    )
                }
                Some(m) if m.is_file() => {
                    let exec = m.permissions().mode() & 0o100 != 0;
                    let before = find_entry(old, &mut cursor, &rel);
                    let seed = seed.as_ref().zip(index_mtime_ns);
                    let entry = self.file_entry(before, &full, &m, exec, algo, seed, &mut stats)?;
                    let hash = entry.hash;
                    keep = Some(entry);
                    (if exec { kind::EXEC } else { kind::FILE }, hash)
                }
                Some(_) => {
                    return Err(CacheError::BadPath {
                        path: full(),
                        reason: "unsupported file type (not a file, directory or symlink)".into(),
                    });
                }
            };
            key.update(&(rel.len() as u64).to_le_bytes());
            key.update(&rel);
            key.update(&[kind]);
            key.update(&hash);
            if let Some(entry) = keep {
                seen.push((rel, entry));
            }
        }
        // Listed files come sorted except from a walk (which visits a directory's contents
        // right after its name); sorting sorted input is linear.
        seen.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        Ok((ContentKey(key.finalize().to_hex().to_string()), seen, stats))
    }

    /// Reuses or recomputes the entry of one regular file: from the index when its metadata is
    /// unchanged and it is not racy, else from its Git index record (`seed`, with the index
    /// file's mtime) when that may be trusted (see the module's invariant), else by reading it.
    #[allow(clippy::too_many_arguments)]
    fn file_entry(
        &mut self,
        before: Option<&Entry>,
        full: &dyn Fn() -> PathBuf,
        m: &fs::Metadata,
        exec: bool,
        algo: Algo,
        seed: Option<(&GitSeed, i64)>,
        stats: &mut KeyStats,
    ) -> Result<Entry, CacheError> {
        let current = |hash, hashed_at_ns| Entry {
            size: m.size(),
            mtime_ns: mtime_ns(m),
            ctime_ns: ctime_ns(m),
            ino: m.ino(),
            dev: m.dev(),
            exec,
            algo,
            hashed_at_ns,
            hash,
        };
        if let Some(old) = before {
            let probe = current(old.hash, old.hashed_at_ns);
            if *old == probe && old.mtime_ns.saturating_add(RACY_WINDOW_NS) < old.hashed_at_ns {
                return Ok(probe);
            }
        }
        if algo == Algo::GitBlob
            && let Some((seed, index_mtime_ns)) = seed
            && seed_matches(seed, m, index_mtime_ns)
        {
            stats.seeded_files += 1;
            self.changed = true;
            let mut hash = [0u8; 32];
            hash[..20].copy_from_slice(&seed.blob);
            // Known as of the index's writing: reused from this index only when the file was
            // last modified clearly before that (else the seed is checked again).
            return Ok(current(hash, index_mtime_ns));
        }
        let hashed_at = now_ns();
        let full = full();
        let mut file = fs::File::open(&full).map_err(|source| CacheError::Io {
            op: "opening",
            path: full.clone(),
            source,
        })?;
        let mut hasher = FileHasher::new(algo, m.size());
        let mut buf = vec![0u8; 64 * 1024];
        let mut total = 0u64;
        loop {
            let n = file.read(&mut buf).map_err(|source| CacheError::Io {
                op: "reading",
                path: full.clone(),
                source,
            })?;
            if n == 0 {
                break;
            }
            total += n as u64;
            hasher.update(&buf[..n]);
        }
        stats.hashed_files += 1;
        stats.hashed_bytes += total;
        self.changed = true;
        let after = file.metadata().map_err(|source| CacheError::Io {
            op: "stat",
            path: full.clone(),
            source,
        })?;
        // If the file changed while we read it, never trust this entry later. (A Git blob id
        // hashes the size given up front: a size change is caught here too.)
        let stable = after.size() == m.size()
            && mtime_ns(&after) == mtime_ns(m)
            && ctime_ns(&after) == ctime_ns(m)
            && total == m.size();
        Ok(current(hasher.finish(), if stable { hashed_at } else { 0 }))
    }

    /// Writes the index atomically (temporary file + rename) if it changed.
    pub fn save(&mut self) -> Result<(), CacheError> {
        if !self.changed {
            return Ok(());
        }
        let dir = self.path.parent().unwrap_or(Path::new("."));
        fs::create_dir_all(dir).map_err(|source| CacheError::Io {
            op: "creating index directory",
            path: dir.to_owned(),
            source,
        })?;
        let mut tmp = self.path.as_os_str().to_owned();
        tmp.push(format!(".tmp-{}", std::process::id()));
        let tmp = PathBuf::from(tmp);
        let bytes = encode_index(&self.entries);
        let write = || -> std::io::Result<()> {
            let mut f = fs::File::create(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_data()?;
            fs::rename(&tmp, &self.path)
        };
        write().map_err(|source| {
            let _ = fs::remove_file(&tmp);
            CacheError::Io {
                op: "writing freshness index",
                path: self.path.clone(),
                source,
            }
        })?;
        self.changed = false;
        Ok(())
    }
}

/// Convenience: load the index at `index_path`, compute the key of `root`,
/// save the index.
pub fn content_key(
    root: &Path,
    files: &FileSet,
    index_path: &Path,
) -> Result<(ContentKey, KeyStats), CacheError> {
    let mut index = TreeIndex::load(index_path);
    let result = index.content_key(root, files)?;
    index.save()?;
    Ok(result)
}

/// Whether a Git index record may stand for the file with metadata `m`: same size, mtime,
/// ctime and inode as recorded, modified more than [`RACY_WINDOW_NS`] before the index file was
/// written and changed before it (not racily clean), and not a smudged entry.
fn seed_matches(seed: &GitSeed, m: &fs::Metadata, index_mtime_ns: i64) -> bool {
    let time = |secs: i64, nsecs: i64| (u32::try_from(secs).ok(), u32::try_from(nsecs).ok());
    let mtime = time(m.mtime(), m.mtime_nsec());
    let ctime = time(m.ctime(), m.ctime_nsec());
    u64::from(seed.size) == m.size()
        && (seed.size != 0 || seed.blob == EMPTY_BLOB)
        && mtime == (Some(seed.mtime.0), Some(seed.mtime.1))
        && ctime == (Some(seed.ctime.0), Some(seed.ctime.1))
        && seed.ino == m.ino() as u32
        && mtime_ns(m).saturating_add(RACY_WINDOW_NS) < index_mtime_ns
        && ctime_ns(m) < index_mtime_ns
}

/// A file's content hash as [`Algo`] defines it.
enum FileHasher {
    Blake3(Box<blake3::Hasher>),
    GitBlob(sha1::Sha1),
}

impl FileHasher {
    fn new(algo: Algo, size: u64) -> FileHasher {
        match algo {
            Algo::Blake3 => FileHasher::Blake3(Box::new(blake3::Hasher::new())),
            Algo::GitBlob => {
                use sha1::Digest;
                let mut h = sha1::Sha1::new();
                h.update(format!("blob {size}\0").as_bytes());
                FileHasher::GitBlob(h)
            }
        }
    }

    fn update(&mut self, data: &[u8]) {
        match self {
            FileHasher::Blake3(h) => {
                h.update(data);
            }
            FileHasher::GitBlob(h) => sha1::Digest::update(h, data),
        }
    }

    fn finish(self) -> [u8; 32] {
        match self {
            FileHasher::Blake3(h) => *h.finalize().as_bytes(),
            FileHasher::GitBlob(h) => {
                let mut out = [0u8; 32];
                out[..20].copy_from_slice(&sha1::Digest::finalize(h));
                out
            }
        }
    }
}

/// Lists at least this long are stat'ed by several threads: a stat costs microseconds here (a
/// path walk per file), so 20,000 tracked files take tens of milliseconds on one core.
const PARALLEL_STAT_MIN: usize = 4096;

/// Stats each of `rels` (sorted and deduplicated first) below `root`; a missing one is `None`.
/// The result keeps the sorted order; long lists are split between a few threads.
fn stat_listed(
    root: &Path,
    rels: Vec<(Vec<u8>, Option<GitSeed>)>,
    listed: &mut Vec<Listed>,
) -> Result<(), CacheError> {
    let threads = if rels.len() >= PARALLEL_STAT_MIN {
        std::thread::available_parallelism().map_or(1, |n| n.get().min(4))
    } else {
        1
    };
    stat_listed_by(root, rels, listed, threads)
}

/// [`stat_listed`] on `threads` threads.
fn stat_listed_by(
    root: &Path,
    mut rels: Vec<(Vec<u8>, Option<GitSeed>)>,
    listed: &mut Vec<Listed>,
    threads: usize,
) -> Result<(), CacheError> {
    rels.sort_by(|a, b| a.0.cmp(&b.0));
    rels.dedup_by(|later, earlier| later.0 == earlier.0);
    listed.reserve(rels.len());
    if threads <= 1 {
        for (rel, seed) in rels {
            let meta = stat_one(root, &rel)?;
            listed.push(Listed { rel, seed, meta });
        }
        return Ok(());
    }
    let chunk = rels.len().div_ceil(threads);
    let metas: Vec<Result<Vec<Option<fs::Metadata>>, CacheError>> = std::thread::scope(|scope| {
        let workers: Vec<_> = rels
            .chunks(chunk)
            .map(|part| {
                scope.spawn(move || part.iter().map(|(rel, _)| stat_one(root, rel)).collect())
            })
            .collect();
        workers
            .into_iter()
            .map(|w| {
                w.join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            })
            .collect()
    });
    let mut rels = rels.into_iter();
    for part in metas {
        for meta in part? {
            let (rel, seed) = rels.next().expect("one stat result per listed path");
            listed.push(Listed { rel, seed, meta });
        }
    }
    Ok(())
}

/// The metadata of `rel` below `root` (symbolic links not followed); `None` when it is gone.
fn stat_one(root: &Path, rel: &[u8]) -> Result<Option<fs::Metadata>, CacheError> {
    let full = root.join(std::ffi::OsStr::from_bytes(rel));
    match fs::symlink_metadata(&full) {
        Ok(m) => Ok(Some(m)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        // A listed path running through something that is no longer a directory.
        Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => Ok(None),
        Err(source) => Err(CacheError::Io {
            op: "stat",
            path: full,
            source,
        }),
    }
}

/// Validates a caller-supplied relative path: no root, no `..`, not empty.
fn check_relative(p: &Path) -> Result<Vec<u8>, CacheError> {
    let bad = |reason: &str| CacheError::BadPath {
        path: p.to_owned(),
        reason: reason.into(),
    };
    let mut out = Vec::new();
    for c in p.components() {
        match c {
            Component::Normal(s) => {
                if !out.is_empty() {
                    out.push(b'/');
                }
                out.extend_from_slice(s.as_bytes());
            }
            Component::CurDir => {}
            Component::ParentDir => return Err(bad("contains '..'")),
            Component::RootDir | Component::Prefix(_) => return Err(bad("is not relative")),
        }
    }
    if out.is_empty() {
        return Err(bad("is empty"));
    }
    Ok(out)
}

/// Depth-first walk in byte order of names; `prefix` is the current relative dir.
fn walk(dir: &Path, prefix: &mut Vec<u8>, out: &mut Vec<Listed>) -> Result<(), CacheError> {
    let io = |op, source| CacheError::Io {
        op,
        path: dir.to_owned(),
        source,
    };
    let mut children: Vec<(Vec<u8>, fs::DirEntry)> = fs::read_dir(dir)
        .map_err(|e| io("reading directory", e))?
        .map(|e| e.map(|e| (e.file_name().as_bytes().to_vec(), e)))
        .collect::<Result<_, _>>()
        .map_err(|e| io("reading directory", e))?;
    children.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, entry) in children {
        let meta = entry.metadata().map_err(|e| CacheError::Io {
            op: "stat",
            path: entry.path(),
            source: e,
        })?;
        let base = prefix.len();
        if !prefix.is_empty() {
            prefix.push(b'/');
        }
        prefix.extend_from_slice(&name);
        let is_dir = meta.is_dir();
        out.push(Listed {
            rel: prefix.clone(),
            seed: None,
            meta: Some(meta),
        });
        if is_dir {
            walk(&entry.path(), prefix, out)?;
        }
        prefix.truncate(base);
    }
    Ok(())
}

const ENTRY_FIXED: usize = 8 + 8 + 8 + 8 + 8 + 1 + 1 + 8 + 32;

fn encode_index(entries: &[IndexEntry]) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + entries.len() * (ENTRY_FIXED + 40) + 32);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(entries.len() as u64).to_le_bytes());
    for (path, e) in entries {
        out.extend_from_slice(&(path.len() as u32).to_le_bytes());
        out.extend_from_slice(path);
        out.extend_from_slice(&e.size.to_le_bytes());
        out.extend_from_slice(&e.mtime_ns.to_le_bytes());
        out.extend_from_slice(&e.ctime_ns.to_le_bytes());
        out.extend_from_slice(&e.ino.to_le_bytes());
        out.extend_from_slice(&e.dev.to_le_bytes());
        out.push(u8::from(e.exec));
        out.push(e.algo as u8);
        out.extend_from_slice(&e.hashed_at_ns.to_le_bytes());
        out.extend_from_slice(&e.hash);
    }
    let sum = blake3::hash(&out);
    out.extend_from_slice(sum.as_bytes());
    out
}

/// The entries of an encoded index, sorted by path (one per path: the first).
fn decode_index(bytes: &[u8]) -> Result<Vec<IndexEntry>, String> {
    if bytes.len() < 16 + 32 {
        return Err(format!("too short ({} bytes)", bytes.len()));
    }
    let (body, sum) = bytes.split_at(bytes.len() - 32);
    if blake3::hash(body).as_bytes() != sum {
        return Err("checksum mismatch".into());
    }
    if &body[..8] != MAGIC {
        return Err("bad magic".into());
    }
    let mut r = Reader { buf: body, pos: 8 };
    let count = r.u64()?;
    let mut entries = Vec::with_capacity(
        usize::try_from(count)
            .unwrap_or(0)
            .min(body.len() / ENTRY_FIXED),
    );
    for _ in 0..count {
        let len = r.u32()? as usize;
        let path = r.take(len)?.to_vec();
        let entry = Entry {
            size: r.u64()?,
            mtime_ns: r.i64()?,
            ctime_ns: r.i64()?,
            ino: r.u64()?,
            dev: r.u64()?,
            exec: r.take(1)?[0] != 0,
            algo: match r.take(1)?[0] {
                0 => Algo::Blake3,
                1 => Algo::GitBlob,
                other => return Err(format!("unknown hash algorithm {other}")),
            },
            hashed_at_ns: r.i64()?,
            hash: r
                .take(32)?
                .try_into()
                .map_err(|_| "short hash".to_string())?,
        };
        entries.push((path, entry));
    }
    if r.pos != body.len() {
        return Err(format!("{} trailing bytes", body.len() - r.pos));
    }
    // Written sorted, so sorting is linear; the lookups rely on the order.
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    entries.dedup_by(|later, earlier| later.0 == earlier.0);
    Ok(entries)
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.buf.len())
            .ok_or("truncated entry")?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().map_err(|_| "short")?,
        ))
    }
    fn i64(&mut self) -> Result<i64, String> {
        Ok(i64::from_le_bytes(
            self.take(8)?.try_into().map_err(|_| "short")?,
        ))
    }
    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().map_err(|_| "short")?,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_roundtrip_and_corruption() {
        let entry = |size| Entry {
            size,
            mtime_ns: 1,
            ctime_ns: 2,
            ino: 4,
            dev: 5,
            exec: true,
            algo: Algo::GitBlob,
            hashed_at_ns: 6,
            hash: [7; 32],
        };
        let m = vec![(b"a/b".to_vec(), entry(3)), (b"a/c".to_vec(), entry(9))];
        let bytes = encode_index(&m);
        assert_eq!(decode_index(&bytes).expect("decodes"), m);
        // Decoded entries come sorted, whatever the order they were written in.
        let unsorted = vec![m[1].clone(), m[0].clone()];
        assert_eq!(decode_index(&encode_index(&unsorted)).expect("decodes"), m);
        let mut bad = bytes.clone();
        bad[12] ^= 1;
        assert!(decode_index(&bad).is_err());
        assert!(decode_index(&bytes[..bytes.len() - 1]).is_err());
        assert!(decode_index(b"").is_err());
    }

    #[test]
    fn stats_split_between_threads_keep_the_sorted_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut rels = Vec::new();
        for i in 0..97 {
            let rel = format!("d{}/f{i}", i % 7);
            std::fs::create_dir_all(dir.path().join(format!("d{}", i % 7))).expect("mkdir");
            std::fs::write(dir.path().join(&rel), "x".repeat(i)).expect("write");
            rels.push((rel.into_bytes(), None));
        }
        rels.push((b"d1/missing".to_vec(), None));
        rels.push((b"d0/f0/under-a-file".to_vec(), None));
        rels.push((b"d3/f3".to_vec(), None));
        let summary = |threads| {
            let mut listed = Vec::new();
            stat_listed_by(dir.path(), rels.clone(), &mut listed, threads).expect("stat");
            listed
                .into_iter()
                .map(|l| (l.rel, l.meta.map(|m| m.len())))
                .collect::<Vec<_>>()
        };
        let serial = summary(1);
        assert_eq!(serial.len(), 99, "sorted and deduplicated");
        assert!(serial.windows(2).all(|w| w[0].0 < w[1].0));
        assert!(serial.contains(&(b"d1/missing".to_vec(), None)));
        assert!(serial.contains(&(b"d0/f0/under-a-file".to_vec(), None)));
        for threads in [2, 3, 4, 200] {
            assert_eq!(summary(threads), serial, "{threads} threads");
        }
    }

    #[test]
    fn relative_paths_are_checked() {
        assert_eq!(check_relative(Path::new("./a//b")).expect("ok"), b"a/b");
        assert!(check_relative(Path::new("/etc/passwd")).is_err());
        assert!(check_relative(Path::new("a/../../b")).is_err());
        assert!(check_relative(Path::new("")).is_err());
    }
}

//! The eval cache on disk, as the daemon uses it: one SQLite database per flake fingerprint
//! (see `flaked_cache`), filled with what evaluations of that flake taught (attribute sets,
//! negative answers, values), and read to answer `eval` queries without evaluating — after a
//! restart, or before the flake is opened at all.
//!
//! Which flakes: local ones given without `rev`/`ref`/`narHash` (`path:` directories and
//! `git+file:` work trees), evaluated purely without overridden inputs — the ones whose whole
//! identity can be computed cheaply from the files on disk. Their fingerprint hashes the
//! content key of the tree (`path:`: every file; git: the HEAD commit and the tracked files as
//! they are in the work tree, clean or dirty), the lock file, the subdirectory, system and
//! purity, the daemon build, and the remaining settings (the reference as given, store
//! directory, registries). Content keys come from a persistent [`TreeIndex`] per tree: file
//! metadata first, blake3 of files whose metadata changed.
//!
//! Invariants:
//! - an answer from the cache is byte-for-byte what evaluating would print: values are only
//!   rendered when the evaluator vouched for the rendering (`render_leaf`), and nothing is
//!   recorded from an evaluation that printed anything beyond the flake's per-open warnings
//!   (kept beside the values and replayed with them) or whose tree changed meanwhile;
//! - the cache can only make an answer faster: any failure to compute a fingerprint or to read
//!   the database is a miss, and the query is evaluated.

use std::collections::HashMap;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use flaked_cache::{
    CacheOptions, CacheRegistry, CachedValue, Cursor, EvalCache, FileSet, Fingerprint, GitFiles,
    GitSeed, Lookup, SourceIdentity, TreeIndex,
};
use flaked_eval::api as eval;
use flaked_store::fetchers::{FlakeRef, InputKind};

use crate::keeper;
use crate::watch::TreeWatch;

/// Reserved child of the root row holding the warnings every open of the flake prints. No Nix
/// attribute name can start with a NUL byte.
pub(crate) const WARNINGS: &str = "\0flaked-open-warnings";

/// Where a persistently cacheable flake's files are.
#[derive(Debug, Clone)]
pub struct LocalSource {
    /// `true` for a git work tree, `false` for a `path:` directory.
    git: bool,
    root: PathBuf,
    subdir: String,
}

impl LocalSource {
    /// The root of the tree (a git work tree or a `path:` directory).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The local source of `flake_ref` when the persistent cache applies to it.
    pub fn of(flake_ref: &FlakeRef) -> Option<LocalSource> {
        match &flake_ref.input.kind {
            InputKind::Path(p)
                if p.rev.is_none() && p.nar_hash.is_none() && p.last_modified.is_none() =>
            {
                Some(LocalSource {
                    git: false,
                    root: PathBuf::from(&p.path),
                    subdir: flake_ref.subdir.clone(),
                })
            }
            InputKind::Git(g)
                if g.ref_.is_none()
                    && g.rev.is_none()
                    && g.nar_hash.is_none()
                    && g.submodules != Some(true)
                    && g.export_ignore != Some(true) =>
            {
                Some(LocalSource {
                    git: true,
                    root: PathBuf::from(g.url.strip_prefix("file://")?),
                    subdir: flake_ref.subdir.clone(),
                })
            }
            _ => None,
        }
    }
}

/// The content identity of a local source tree: the HEAD commit of a git work tree (`None` for a
/// `path:` tree) and the content key of its files.
pub(crate) type Identity = (Option<String>, String);

/// A tree watched since before its identity was computed (by the start-up pre-arming), waiting
/// for its first query.
struct Prearmed {
    watch: TreeWatch,
    identity: Identity,
}

/// What the start-up pre-arming can give a query for its tree (see [`DiskCache::prearmed`]).
pub(crate) enum Armed {
    /// Watched since before its identity was computed, and unchanged since.
    Ready(TreeWatch, Identity),
    /// Being armed now, or waiting for its turn: the caller need not walk it for a watch.
    Pending,
    /// Not pre-armed: not remembered, already taken, failed, or changed since.
    No,
}

/// Trees remembered for pre-arming after a restart (the most recent last).
const MAX_REMEMBERED: usize = 16;

/// The daemon's eval caches: databases by fingerprint, and the tree indexes behind content keys.
pub struct DiskCache {
    registry: CacheRegistry,
    trees_dir: PathBuf,
    trees: Mutex<HashMap<PathBuf, Arc<Mutex<TreeIndex>>>>,
    prearming: Mutex<Prearming>,
    /// Signalled when the tree being pre-armed is done.
    prearmed_one: Condvar,
    /// Queries keying a tree right now (see [`DiskCache::identity_now`]): the pre-arming pauses
    /// its walk meanwhile, leaving them the cores.
    keying: AtomicUsize,
    build_id: String,
}

/// Start-up pre-arming of remembered trees, as queries see it.
#[derive(Default)]
struct Prearming {
    /// Trees armed and not taken by a query yet.
    ready: HashMap<(bool, PathBuf), Prearmed>,
    /// The tree being armed now: a query that needs its watch waits for it rather than walking
    /// it twice.
    current: Option<(bool, PathBuf)>,
    /// Trees still to arm, next first. A query that needs a watch at once takes its tree out.
    queue: Vec<(bool, PathBuf)>,
}

/// How long the pre-arming of one tree pauses for queries keying trees, at most, and in steps of.
const MAX_PAUSE: Duration = Duration::from_secs(1);
const PAUSE_STEP: Duration = Duration::from_micros(500);

/// How long a stopping daemon waits for the tree being pre-armed, to hand its watch over.
const HAND_OVER_WAIT: Duration = Duration::from_secs(3);

/// How long a query waits for the pre-arming of its tree at most.
const PREARM_WAIT: Duration = Duration::from_secs(30);

impl std::fmt::Debug for DiskCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DiskCache")
            .field("dir", &self.registry.dir())
            .finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Identifies the running daemon build: a rebuilt evaluator may answer differently, so its
/// caches are not shared with other builds.
fn build_id() -> String {
    use std::os::unix::fs::MetadataExt;
    let exe = std::env::current_exe()
        .and_then(std::fs::metadata)
        .map(|m| format!("{}:{}.{}", m.size(), m.mtime(), m.mtime_nsec()))
        .unwrap_or_else(|_| "unknown".to_string());
    format!("flaked {} {exe}", env!("CARGO_PKG_VERSION"))
}

impl DiskCache {
    /// The caches below `cache_dir` (`eval-cache-v1/` for databases, `trees/` for indexes).
    pub fn new(cache_dir: &Path) -> DiskCache {
        DiskCache {
            registry: CacheRegistry::new(&cache_dir.join("eval-cache-v1"), CacheOptions::default()),
            trees_dir: cache_dir.join("trees"),
            trees: Mutex::new(HashMap::new()),
            prearming: Mutex::new(Prearming::default()),
            prearmed_one: Condvar::new(),
            keying: AtomicUsize::new(0),
            build_id: build_id(),
        }
    }

    /// Hit, miss and write counters over every open database.
    pub fn stats(&self) -> flaked_cache::CacheStats {
        self.registry.stats()
    }

    /// Total size of the databases on disk (with their WAL files), in bytes.
    pub fn disk_bytes(&self) -> u64 {
        std::fs::read_dir(self.registry.dir())
            .map(|rd| {
                rd.filter_map(Result::ok)
                    .filter_map(|e| e.metadata().ok())
                    .filter(|m| m.is_file())
                    .map(|m| m.len())
                    .sum()
            })
            .unwrap_or(0)
    }

    /// Commits every pending write (at shutdown).
    pub fn flush(&self) {
        if let Err(e) = self.registry.flush_all() {
            tracing::warn!(error = %e, "cannot commit the eval cache");
        }
    }

    fn remembered_path(&self) -> PathBuf {
        self.trees_dir.join("recent")
    }

    /// The trees remembered for pre-arming: `(git, root)`, most recent last.
    fn remembered(&self) -> Vec<(bool, PathBuf)> {
        std::fs::read_to_string(self.remembered_path())
            .unwrap_or_default()
            .lines()
            .filter_map(|l| {
                let (kind, root) = l.split_once('\t')?;
                Some((kind == "git", PathBuf::from(root)))
            })
            .collect()
    }

    /// Remembers `src`'s tree, so that a restarted daemon watches and keys it before its first
    /// query. The list is replaced atomically.
    fn remember(&self, src: &LocalSource) {
        let mut list = self.remembered();
        let entry = (src.git, src.root.clone());
        if list.last() == Some(&entry) {
            return;
        }
        list.retain(|e| *e != entry);
        list.push(entry);
        let skip = list.len().saturating_sub(MAX_REMEMBERED);
        let text: String = list[skip..]
            .iter()
            .filter_map(|(git, root)| {
                let root = root.to_str()?;
                (!root.contains('\n'))
                    .then(|| format!("{}\t{root}\n", if *git { "git" } else { "path" }))
            })
            .collect();
        let path = self.remembered_path();
        let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
        let written = std::fs::create_dir_all(&self.trees_dir)
            .and_then(|()| std::fs::write(&tmp, text))
            .and_then(|()| std::fs::rename(&tmp, &path));
        if let Err(e) = written {
            tracing::debug!(error = %e, "cannot remember the flake's tree");
            let _ = std::fs::remove_file(&tmp);
        }
    }

    /// Queues every remembered tree for [`DiskCache::prearm`], most recent first, after taking
    /// the watches the previous daemon handed over: a tree whose kept watch saw nothing since
    /// is ready at once, with the identity that watch vouches for. Called before the daemon
    /// serves, so that a query for a remembered tree finds it ready or queued.
    pub fn plan_prearm(&self) {
        let started = std::time::Instant::now();
        let mut ready = HashMap::new();
        for kept in keeper::take(&self.trees_dir) {
            let mut watch = TreeWatch::resumed(kept.fd, kept.root.clone(), kept.dirs);
            if watch.changed() {
                tracing::debug!(root = %kept.root.display(), "a kept watch saw a change while no daemon ran");
                continue;
            }
            let identity = (kept.rev, kept.key);
            ready.insert((kept.git, kept.root), Prearmed { watch, identity });
        }
        if !ready.is_empty() {
            tracing::debug!(trees = ready.len(), elapsed = ?started.elapsed(), "took over the watches kept across the restart");
        }
        let mut queue = self.remembered();
        queue.reverse();
        queue.retain(|k| !ready.contains_key(k));
        let mut p = lock(&self.prearming);
        p.queue = queue;
        p.ready.extend(ready);
    }

    /// Hands the watches of unchanged trees to a keeper for the next daemon (at shutdown):
    /// `trees` (watches of warm entries, with the identity each vouches for) and those the
    /// start-up pre-arming armed that no query took. One watch per tree.
    pub(crate) fn hand_over(&self, trees: Vec<(LocalSource, Identity, TreeWatch)>) {
        let mut seen = std::collections::HashSet::new();
        let prearmed: Vec<_> = {
            // A tree being armed is waited for (a daemon stopped right after its start would
            // otherwise hand nothing over, and neither would its successor); no other starts.
            let mut p = lock(&self.prearming);
            p.queue.clear();
            let mut p = self.wait_prearming(p, HAND_OVER_WAIT, |p| p.current.is_some());
            p.ready.drain().collect()
        };
        let kept: Vec<keeper::KeptTree> = trees
            .into_iter()
            .map(|(src, identity, watch)| ((src.git, src.root), identity, watch))
            .chain(prearmed.into_iter().map(|(k, p)| (k, p.identity, p.watch)))
            .filter(|(k, _, _)| seen.insert(k.clone()))
            .filter_map(|((git, root), (rev, key), watch)| {
                let dirs = watch.dirs();
                let fd = watch.into_fd()?;
                Some(keeper::KeptTree {
                    git,
                    root,
                    rev,
                    key,
                    dirs,
                    fd,
                })
            })
            .collect();
        let count = kept.len();
        match keeper::hand_over(&self.trees_dir, kept) {
            Ok(()) if count > 0 => {
                tracing::info!(trees = count, "watches handed over for the next daemon")
            }
            Ok(()) => {}
            Err(e) => {
                tracing::warn!(error = %e, "cannot hand the watches over for the next daemon")
            }
        }
    }

    /// Watches and keys every queued tree (at start-up, on a thread of its own), so that queries
    /// after a restart find their tree's watch ready instead of walking the tree for one.
    pub fn prearm(&self) {
        loop {
            let key = {
                let mut p = lock(&self.prearming);
                if p.queue.is_empty() {
                    return;
                }
                let key = p.queue.remove(0);
                p.current = Some(key.clone());
                key
            };
            let armed = self.arm(key.0, &key.1);
            let mut p = lock(&self.prearming);
            p.current = None;
            if let Some(armed) = armed {
                p.ready.insert(key, armed);
            }
            drop(p);
            self.prearmed_one.notify_all();
        }
    }

    /// Watches `root`, then computes its identity.
    fn arm(&self, git: bool, root: &Path) -> Option<Prearmed> {
        let started = std::time::Instant::now();
        // Paused for one second in all at most: queries keying the tree until its watch is
        // ready must not keep it from ever being ready.
        let paused = std::cell::Cell::new(Duration::ZERO);
        let pause = || {
            while self.keying.load(Ordering::Acquire) > 0 && paused.get() < MAX_PAUSE {
                std::thread::sleep(PAUSE_STEP);
                paused.set(paused.get() + PAUSE_STEP);
            }
        };
        let watch = TreeWatch::new_yielding(root, &pause).ok()?;
        let src = LocalSource {
            git,
            root: root.to_path_buf(),
            subdir: String::new(),
        };
        match self.identity(&src) {
            Ok(identity) => {
                tracing::debug!(root = %root.display(), elapsed = ?started.elapsed(), "pre-armed a remembered flake tree");
                Some(Prearmed { watch, identity })
            }
            Err(e) => {
                tracing::debug!(root = %root.display(), error = %e, "cannot pre-arm a remembered tree");
                None
            }
        }
    }

    /// Waits while `busy` holds of the pre-arming (re-checked whenever a tree is done), at most
    /// `limit`.
    fn wait_prearming<'a>(
        &self,
        mut p: MutexGuard<'a, Prearming>,
        limit: Duration,
        busy: impl Fn(&Prearming) -> bool,
    ) -> MutexGuard<'a, Prearming> {
        let deadline = std::time::Instant::now() + limit;
        while busy(&p) {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                break;
            }
            p = self
                .prearmed_one
                .wait_timeout(p, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        p
    }

    /// What the start-up pre-arming has for `src`'s tree. Without `wait`, never blocks: a tree
    /// being armed or still queued is [`Armed::Pending`]. With `wait`, the caller needs the watch
    /// now: a tree being armed is waited for, and a queued one is taken out of the queue (the
    /// caller arms it itself) and reported as [`Armed::No`].
    pub(crate) fn prearmed(&self, src: &LocalSource, wait: bool) -> Armed {
        let key = (src.git, src.root.clone());
        let mut p = lock(&self.prearming);
        if wait {
            p.queue.retain(|k| *k != key);
            p = self.wait_prearming(p, PREARM_WAIT, |p| p.current.as_ref() == Some(&key));
        }
        if let Some(mut armed) = p.ready.remove(&key) {
            drop(p);
            return if armed.watch.changed() {
                Armed::No
            } else {
                Armed::Ready(armed.watch, armed.identity)
            };
        }
        if !wait && (p.current.as_ref() == Some(&key) || p.queue.contains(&key)) {
            return Armed::Pending;
        }
        Armed::No
    }

    /// Whether the eval cache on disk may serve an evaluation with `settings` at all.
    pub(crate) fn applies(settings: &eval::EvalSettings) -> bool {
        settings.pure && settings.override_inputs.is_empty()
    }

    /// The database of the flake `src` whose tree has `identity` (taken after its watch was
    /// armed), `None` when `settings` rule the cache out (impure evaluation, overridden inputs)
    /// or the database cannot be opened.
    pub fn open(
        &self,
        src: &LocalSource,
        flake_ref: &str,
        settings: &eval::EvalSettings,
        identity: Identity,
    ) -> Option<EvalCache> {
        if !Self::applies(settings) {
            return None;
        }
        self.remember(src);
        let started = std::time::Instant::now();
        let id = self.fingerprint(src, flake_ref, settings, identity).id();
        let cache = self
            .registry
            .get(&id)
            .map_err(|e| tracing::warn!(error = %e, "cannot open the eval cache"))
            .ok()?;
        tracing::debug!(flake = flake_ref, fingerprint = %id, elapsed = ?started.elapsed(), "eval cache opened");
        Some(cache)
    }

    /// [`DiskCache::identity`] for a query that waits for it: the start-up pre-arming pauses
    /// its walk meanwhile.
    pub(crate) fn identity_now(&self, src: &LocalSource) -> Result<Identity, String> {
        struct Keying<'a>(&'a AtomicUsize);
        impl Drop for Keying<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::Release);
            }
        }
        self.keying.fetch_add(1, Ordering::Acquire);
        let _keying = Keying(&self.keying);
        self.identity(src)
    }

    /// The identity of `src`'s tree as it is now.
    pub(crate) fn identity(&self, src: &LocalSource) -> Result<Identity, String> {
        let started = std::time::Instant::now();
        let (rev, files) = if src.git {
            let (rev, files) = git_tracked(&src.root)?;
            tracing::debug!(root = %src.root.display(), elapsed = ?started.elapsed(), "read the git index");
            (Some(rev), FileSet::Git(files))
        } else {
            (None, FileSet::Walk)
        };
        let index = {
            let mut trees = lock(&self.trees);
            trees
                .entry(src.root.clone())
                .or_insert_with(|| {
                    let name = blake3::hash(src.root.as_os_str().as_encoded_bytes()).to_hex();
                    Arc::new(Mutex::new(TreeIndex::load(
                        &self.trees_dir.join(format!("{name}.idx")),
                    )))
                })
                .clone()
        };
        let key = {
            let mut index = lock(&index);
            let (key, stats) = index
                .content_key(&src.root, &files)
                .map_err(|e| e.to_string())?;
            tracing::debug!(
                root = %src.root.display(),
                entries = stats.entries,
                hashed = stats.hashed_files,
                seeded_from_git = stats.seeded_files,
                elapsed = ?started.elapsed(),
                "content key of a tree"
            );
            if let Err(e) = std::fs::create_dir_all(&self.trees_dir)
                .map_err(|e| e.to_string())
                .and_then(|_| index.save().map_err(|e| e.to_string()))
            {
                tracing::debug!(error = %e, "cannot save a tree index");
            }
            key
        };
        Ok((rev, key.0))
    }

    fn fingerprint(
        &self,
        src: &LocalSource,
        flake_ref: &str,
        settings: &eval::EvalSettings,
        (rev, key): Identity,
    ) -> Fingerprint {
        let source = match rev {
            Some(rev) => SourceIdentity::Git {
                rev,
                dirty: Some(key),
            },
            None => SourceIdentity::ContentKey(key),
        };
        let lock_file = std::fs::read(src.root.join(&src.subdir).join("flake.lock")).ok();
        Fingerprint {
            source,
            lock_file,
            subdir: src.subdir.clone(),
            system: settings.system.clone(),
            pure: settings.pure,
            evaluator_version: self.build_id.clone(),
            settings: format!(
                "ref={flake_ref}\nstore={}\nregistry={:?}\nuser-registry={:?}\nwrite-lock-file={}",
                settings.store_dir,
                settings.flake_registry,
                settings.user_registry,
                settings.write_lock_file
            ),
        }
    }
}

/// The HEAD commit (`""` without commits) and the tracked files of the git work tree at `root`,
/// each with its index entry's stat data and blob id where the content key may trust them
/// (stage 0 regular files that are not assume-valid, skip-worktree or intent-to-add).
fn git_tracked(root: &Path) -> Result<(String, GitFiles), String> {
    use gix::index::entry::{Flags, Mode};
    let repo = gix::open(root).map_err(|e| e.to_string())?;
    let rev = repo
        .head_id()
        .map(|id| id.detach().to_string())
        .unwrap_or_default();
    // The index file's mtime is taken before its entries are read: an index rewritten
    // meanwhile only makes more entries count as racy.
    let index_mtime_ns = std::fs::metadata(repo.index_path()).ok().map(|m| {
        use std::os::unix::fs::MetadataExt;
        m.mtime()
            .saturating_mul(1_000_000_000)
            .saturating_add(m.mtime_nsec())
    });
    // Read without verifying the file's trailing checksum (half the read's time): Git replaces
    // the index by renaming a complete new file over it, so a read never sees a torn one.
    let index_path = repo.index_path();
    let index = if index_path.exists() {
        gix::index::File::at(&index_path, repo.object_hash(), true, Default::default())
            .map_err(|e| e.to_string())?
    } else {
        gix::index::File::from_state(gix::index::State::new(repo.object_hash()), index_path)
    };
    let untrusted = Flags::ASSUME_VALID | Flags::SKIP_WORKTREE | Flags::INTENT_TO_ADD;
    let files = index
        .entries()
        .iter()
        .map(|e| {
            // The path's bytes as they are: a lossy conversion would stat another name.
            let path = PathBuf::from(std::ffi::OsStr::from_bytes(e.path(&index)));
            let trusted = e.stage_raw() == 0
                && matches!(e.mode, Mode::FILE | Mode::FILE_EXECUTABLE)
                && !e.flags.intersects(untrusted);
            let seed = match <[u8; 20]>::try_from(e.id.as_slice()) {
                Ok(blob) if trusted => Some(GitSeed {
                    blob,
                    size: e.stat.size,
                    mtime: (e.stat.mtime.secs, e.stat.mtime.nsecs),
                    ctime: (e.stat.ctime.secs, e.stat.ctime.nsecs),
                    ino: e.stat.ino,
                }),
                _ => None,
            };
            (path, seed)
        })
        .collect();
    Ok((
        rev,
        GitFiles {
            files,
            index_mtime_ns,
        },
    ))
}

/// Records the warnings every open of the flake prints (replayed with cached answers).
pub fn record_open(cache: &EvalCache, warnings: &[String]) {
    let root = cache.root();
    cache.set(&root, CachedValue::Placeholder);
    cache.set_child(
        &root,
        WARNINGS,
        CachedValue::ListOfStrings(warnings.to_vec()),
    );
}

/// The cursor of the attribute at `path`, creating placeholder rows on the way.
fn cursor_at(cache: &EvalCache, path: &[String]) -> Cursor {
    let mut cur = cache.root();
    cache.set(&cur, CachedValue::Placeholder);
    for name in path {
        cur = cache.set_child(&cur, name, CachedValue::Placeholder);
    }
    cur
}

fn cached_of(leaf: &eval::CacheLeaf) -> CachedValue {
    match leaf {
        eval::CacheLeaf::String { bytes, context } => match std::str::from_utf8(bytes) {
            Ok(s) => CachedValue::String {
                value: s.to_string(),
                context: context.clone(),
            },
            Err(_) => CachedValue::Misc,
        },
        eval::CacheLeaf::Bool(b) => CachedValue::Bool(*b),
        eval::CacheLeaf::Int(i) => CachedValue::Int(*i),
        eval::CacheLeaf::Float(f) => CachedValue::Float(*f),
        eval::CacheLeaf::Path(p) => CachedValue::Path(p.clone()),
        eval::CacheLeaf::ListOfStrings(v) => CachedValue::ListOfStrings(v.clone()),
        eval::CacheLeaf::Derivation { .. } => CachedValue::Derivation,
        eval::CacheLeaf::Attrs(names) => CachedValue::Attrs(names.iter().cloned().collect()),
        eval::CacheLeaf::Other => CachedValue::Misc,
    }
}

fn leaf_of(value: &CachedValue) -> Option<eval::CacheLeaf> {
    Some(match value {
        CachedValue::String { value, context } => eval::CacheLeaf::String {
            bytes: value.as_bytes().to_vec(),
            context: context.clone(),
        },
        CachedValue::Bool(b) => eval::CacheLeaf::Bool(*b),
        CachedValue::Int(i) => eval::CacheLeaf::Int(*i),
        CachedValue::Float(f) => eval::CacheLeaf::Float(*f),
        CachedValue::Path(p) => eval::CacheLeaf::Path(p.clone()),
        CachedValue::ListOfStrings(v) => eval::CacheLeaf::ListOfStrings(v.clone()),
        _ => return None,
    })
}

/// A cached derivation with the paths its child rows hold.
fn derivation_leaf(cache: &EvalCache, cursor: &Cursor) -> eval::CacheLeaf {
    let string = |name: &str| match cache.child(cursor, name) {
        Lookup::Hit(_, CachedValue::String { value, context }) => {
            Some((value.into_bytes(), context))
        }
        _ => None,
    };
    eval::CacheLeaf::Derivation {
        drv_path: string("drvPath"),
        out_path: string("outPath"),
    }
}

/// Records what one evaluation taught (see [`eval::CacheNote`]).
pub fn record(cache: &EvalCache, notes: &[eval::CacheNote]) {
    for note in notes {
        match note {
            eval::CacheNote::Set(path) => {
                cursor_at(cache, path);
            }
            eval::CacheNote::Missing(path) | eval::CacheNote::Leaf(path, _) => {
                let Some((last, parent)) = path.split_last() else {
                    if let eval::CacheNote::Leaf(_, leaf) = note {
                        cache.set(&cache.root(), cached_of(leaf));
                    }
                    continue;
                };
                let parent = cursor_at(cache, parent);
                let value = match note {
                    eval::CacheNote::Leaf(_, leaf) => cached_of(leaf),
                    _ => CachedValue::Missing,
                };
                let node = cache.set_child(&parent, last, value);
                // A derivation's evaluated paths are its children's rows.
                if let eval::CacheNote::Leaf(
                    _,
                    eval::CacheLeaf::Derivation { drv_path, out_path },
                ) = note
                {
                    for (name, string) in [("drvPath", drv_path), ("outPath", out_path)] {
                        if let Some((bytes, context)) = string {
                            let leaf = eval::CacheLeaf::String {
                                bytes: bytes.clone(),
                                context: context.clone(),
                            };
                            cache.set_child(&node, name, cached_of(&leaf));
                        }
                    }
                }
            }
        }
    }
}

/// `nix eval FLAKE#FRAGMENT` answered from the cache alone, when it knows the answer.
pub fn answer(
    cache: &EvalCache,
    fragment: &str,
    system: &str,
    output: eval::OutputFormat,
) -> Option<eval::EvalOutput> {
    let warnings = match cache.child(&cache.root(), WARNINGS) {
        Lookup::Hit(_, CachedValue::ListOfStrings(w)) => w,
        _ => return None,
    };
    for candidate in eval::installable_attr_paths(fragment, system) {
        let path = eval::parse_attr_path(&candidate);
        match cache.lookup_path(&path) {
            (Lookup::Missing, _) => continue,
            (Lookup::Hit(cursor, value), n) if n == path.len() => {
                let leaf = match value {
                    CachedValue::Derivation => derivation_leaf(cache, &cursor),
                    value => leaf_of(&value)?,
                };
                let stdout = eval::render_leaf(&leaf, output)?;
                return Some(eval::EvalOutput {
                    stdout,
                    stderr: warnings,
                });
            }
            _ => return None,
        }
    }
    // Every candidate is missing: the evaluation words the error (with its suggestions).
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, SystemTime};

    fn git(dir: &Path, args: &[&str]) {
        let out = std::process::Command::new("git")
            .args([
                "-c",
                "user.name=t",
                "-c",
                "user.email=t@t",
                "-c",
                "init.defaultBranch=main",
            ])
            .args(args)
            .current_dir(dir)
            .output()
            .expect("git runs");
        assert!(out.status.success(), "git {args:?}: {out:?}");
    }

    fn set_mtime(path: &Path, t: SystemTime) {
        std::fs::File::options()
            .write(true)
            .open(path)
            .expect("open")
            .set_modified(t)
            .expect("set mtime");
    }

    /// The key of the tracked files of `root`, every file read (no Git index seeds).
    fn key_by_reading(root: &Path) -> String {
        let (_, files) = git_tracked(root).expect("tracked files");
        let files = GitFiles {
            files: files.files.into_iter().map(|(p, _)| (p, None)).collect(),
            index_mtime_ns: None,
        };
        let dir = tempfile::tempdir().expect("tempdir");
        let mut index = TreeIndex::load(&dir.path().join("idx"));
        let (key, stats) = index
            .content_key(root, &FileSet::Git(files))
            .expect("content key");
        assert_eq!(stats.seeded_files, 0);
        key.0
    }

    #[test]
    fn git_index_seeds_the_content_key_and_edits_still_show() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("repo");
        std::fs::create_dir_all(root.join("pkgs")).expect("mkdir");
        let old = SystemTime::now() - Duration::from_secs(3600);
        for (rel, text) in [
            ("flake.nix", "{ outputs = _: { }; }"),
            ("pkgs/a.nix", "1"),
            ("pkgs/b.nix", "2"),
        ] {
            let p = root.join(rel);
            std::fs::write(&p, text).expect("write");
            set_mtime(&p, old);
        }
        git(&root, &["init", "-q"]);
        git(&root, &["add", "-A"]);
        git(&root, &["commit", "-q", "-m", "init"]);
        std::fs::write(root.join("new.nix"), "3").expect("write");
        git(&root, &["add", "-N", "new.nix"]);

        let (rev, files) = git_tracked(&root).expect("tracked files");
        assert_eq!(rev.len(), 40);
        let seeded: Vec<_> = files
            .files
            .iter()
            .filter(|(_, s)| s.is_some())
            .map(|(p, _)| p.clone())
            .collect();
        assert_eq!(seeded.len(), 3, "intent-to-add has no seed: {files:?}");
        let idx_dir = tempfile::tempdir().expect("tempdir");
        let mut index = TreeIndex::load(&idx_dir.path().join("idx"));
        let (k1, s1) = index
            .content_key(&root, &FileSet::Git(files))
            .expect("content key");
        assert_eq!((s1.seeded_files, s1.hashed_files), (3, 1), "{s1:?}");
        assert_eq!(k1.0, key_by_reading(&root));

        // Same size, mtime set back to what the index recorded: still seen (ctime).
        let a = root.join("pkgs/a.nix");
        std::fs::write(&a, "7").expect("write");
        set_mtime(&a, old);
        let (_, files) = git_tracked(&root).expect("tracked files");
        let mut fresh = TreeIndex::load(&idx_dir.path().join("other"));
        let (k2, s2) = fresh
            .content_key(&root, &FileSet::Git(files.clone()))
            .expect("content key");
        assert_ne!(k1, k2);
        assert_eq!((s2.seeded_files, s2.hashed_files), (2, 2), "{s2:?}");
        assert_eq!(k2.0, key_by_reading(&root));
        // And through the remembered index too.
        let (k3, _) = index
            .content_key(&root, &FileSet::Git(files))
            .expect("content key");
        assert_eq!(k3, k2);
    }

    fn path_source(root: &Path) -> LocalSource {
        LocalSource {
            git: false,
            root: root.to_path_buf(),
            subdir: String::new(),
        }
    }

    #[test]
    fn remembered_trees_are_pending_until_armed_then_ready_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (one, two, other) = (
            dir.path().join("one"),
            dir.path().join("two"),
            dir.path().join("other"),
        );
        for root in [&one, &two, &other] {
            std::fs::create_dir_all(root).expect("mkdir");
            std::fs::write(root.join("flake.nix"), "{ outputs = _: { }; }").expect("write");
        }
        let cache = dir.path().join("cache");
        let before = DiskCache::new(&cache);
        before.remember(&path_source(&one));
        before.remember(&path_source(&two));

        // A restarted daemon: both remembered trees are pending before the pre-arming runs.
        let disk = DiskCache::new(&cache);
        disk.plan_prearm();
        for root in [&one, &two] {
            assert!(matches!(
                disk.prearmed(&path_source(root), false),
                Armed::Pending
            ));
        }
        assert!(matches!(
            disk.prearmed(&path_source(&other), false),
            Armed::No
        ));
        // A query that needs `two`'s watch now takes it out of the queue (and arms it itself).
        assert!(matches!(disk.prearmed(&path_source(&two), true), Armed::No));
        assert!(matches!(
            disk.prearmed(&path_source(&two), false),
            Armed::No
        ));

        let identity = disk.identity(&path_source(&one)).expect("identity");
        disk.prearm();
        match disk.prearmed(&path_source(&one), false) {
            Armed::Ready(_, armed) => assert_eq!(armed, identity),
            _ => panic!("`one` was pre-armed"),
        }
        // Taken once: the next entry walks the tree itself.
        assert!(matches!(
            disk.prearmed(&path_source(&one), false),
            Armed::No
        ));

        // A pre-armed tree edited before its first query is not handed out.
        let disk = DiskCache::new(&cache);
        disk.plan_prearm();
        disk.prearm();
        std::fs::write(one.join("flake.nix"), "{ outputs = _: { x = 1; }; }").expect("write");
        assert!(matches!(
            disk.prearmed(&path_source(&one), false),
            Armed::No
        ));
    }
}

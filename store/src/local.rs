//! The local store: store objects on disk under a physical root plus Nix's SQLite database.
//!
//! Layout matches Nix's `local?root=R` store: objects live at `R + <store dir>/<base name>`,
//! the database at `R/nix/var/nix/db/db.sqlite` (schema version 10, tables `ValidPaths`,
//! `Refs`, `DerivationOutputs`), so a real Nix can read a store this module wrote.
//!
//! Invariant: a path is registered in `ValidPaths` only after its complete contents are on
//! disk, synced, canonicalised (read-only, mtime 1) and renamed into place; registration and
//! its references happen in one SQLite transaction. A crash at any point leaves either a
//! temporary (`.flaked-add-*`) entry or an unregistered object, both of which are replaced
//! on the next add. Concurrent adders of the same path serialise on a per-path lock file
//! (`<path>.lock`, `flock`), the way Nix's `PathLocks` do.

use std::collections::BTreeSet;
use std::fs;
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, OptionalExtension, params};
use thiserror::Error;

use crate::derivation::{
    Derivation, DerivationError, DrvHashCache, DrvSource, hash_derivation_modulo,
};
use crate::hash::{Hash, HashAlgo};
use crate::nar::{self, FlatHasher, NarError, NarHasher, NarSink, PathFilter, Restorer, TeeSink};
use crate::store_path::{
    ContentAddress, ContentAddressMethod, FileIngestionMethod, StoreDir, StorePath, StorePathError,
    StoreReferences,
};

/// The database schema version Nix 2.26 writes in `db/schema`.
pub const SCHEMA_VERSION: u32 = 10;

const SCHEMA_SQL: &str = "
create table if not exists ValidPaths (
    id               integer primary key autoincrement not null,
    path             text unique not null,
    hash             text not null,
    registrationTime integer not null,
    deriver          text,
    narSize          integer,
    ultimate         integer,
    sigs             text,
    ca               text
);
create table if not exists Refs (
    referrer  integer not null,
    reference integer not null,
    primary key (referrer, reference),
    foreign key (referrer) references ValidPaths(id) on delete cascade,
    foreign key (reference) references ValidPaths(id) on delete restrict
);
create index if not exists IndexReferrer on Refs(referrer);
create index if not exists IndexReference on Refs(reference);
create trigger if not exists DeleteSelfRefs before delete on ValidPaths
  begin
    delete from Refs where referrer = old.id and reference = old.id;
  end;
create table if not exists DerivationOutputs (
    drv  integer not null,
    id   text not null,
    path text not null,
    primary key (drv, id),
    foreign key (drv) references ValidPaths(id) on delete cascade
);
create index if not exists IndexDerivationOutputs on DerivationOutputs(path);
";

/// Errors from the local store.
#[derive(Debug, Error)]
pub enum StoreError {
    #[error("{context} '{path}': {source}")]
    Io {
        context: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("database '{path}': {source}")]
    Db {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("current Nix store schema is version {found}, but I only support {SCHEMA_VERSION}")]
    SchemaTooNew { found: String },
    #[error(
        "Nix store schema at '{path}' is version {found}; migrating old schemas is not supported"
    )]
    SchemaTooOld { path: PathBuf, found: String },
    #[error(transparent)]
    StorePath(#[from] StorePathError),
    #[error(transparent)]
    Nar(#[from] NarError),
    #[error(transparent)]
    Derivation(#[from] DerivationError),
    #[error("path '{0}' is not valid")]
    InvalidPath(String),
    #[error("'{0}' is not a regular file; flat ingestion needs one")]
    NotRegularFile(PathBuf),
    #[error("database entry for '{path}' is corrupt: {reason}")]
    Corrupt { path: String, reason: String },
    /// The source a tree was being added from failed (a Git object could not be read, …).
    #[error(transparent)]
    Source(Box<dyn std::error::Error + Send + Sync>),
}

type Result<T, E = StoreError> = std::result::Result<T, E>;

fn io_err<'a>(context: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> StoreError + 'a {
    move |source| StoreError::Io {
        context,
        path: path.to_owned(),
        source,
    }
}

/// What the database knows about a valid path (Nix's `ValidPathInfo`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathInfo {
    pub path: StorePath,
    pub nar_hash: Hash,
    pub nar_size: u64,
    pub references: BTreeSet<StorePath>,
    pub deriver: Option<StorePath>,
    pub registration_time: i64,
    pub ultimate: bool,
    pub sigs: Vec<String>,
    /// Rendered content address, e.g. `fixed:r:sha256:…` or `text:sha256:…`.
    pub ca: Option<String>,
}

/// The result of adding a file system object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddedPath {
    pub path: StorePath,
    /// The content hash in the requested algorithm and method (what `outputHash` compares to).
    pub hash: Hash,
    pub nar_hash: Hash,
    pub nar_size: u64,
}

/// Hook for making repeated imports of unchanged source trees cheap.
///
/// `LocalStore::add_path` asks the cache before walking an unfiltered tree; an implementation
/// keys entries on whatever metadata it trusts (say, a walk of `(inode, size, mtime, mode)` or a
/// file-watcher generation) and returns the previous result. The store still checks that the
/// returned path is valid before using it.
pub trait ImportCache: Send + Sync {
    fn lookup(
        &self,
        src: &Path,
        name: &str,
        method: FileIngestionMethod,
        algo: HashAlgo,
    ) -> Option<AddedPath>;
    fn record(
        &self,
        src: &Path,
        name: &str,
        method: FileIngestionMethod,
        algo: HashAlgo,
        result: &AddedPath,
    );
}

/// Coalesces flushes of the store: a caller needs a flush that *started* after its own
/// writes finished; callers arriving while one runs share the next one, so N concurrent
/// writers cost about two flushes, not N.
#[derive(Default)]
struct FlushBatcher {
    /// (flushes started, last flush completed successfully, one is running)
    state: Mutex<(u64, u64, bool)>,
    cv: std::sync::Condvar,
}

impl FlushBatcher {
    fn flush(&self, f: impl Fn() -> io::Result<()>) -> io::Result<()> {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let target = st.0 + 1;
        loop {
            if st.1 >= target {
                return Ok(());
            }
            if !st.2 {
                st.2 = true;
                st.0 += 1;
                let mine = st.0;
                drop(st);
                let r = f();
                st = self.state.lock().unwrap_or_else(|e| e.into_inner());
                st.2 = false;
                if r.is_ok() && st.1 < mine {
                    st.1 = mine;
                }
                self.cv.notify_all();
                if mine >= target || r.is_err() {
                    return r;
                }
                continue;
            }
            st = self.cv.wait(st).unwrap_or_else(|e| e.into_inner());
        }
    }
}

/// A local Nix store rooted at a physical directory.
pub struct LocalStore {
    store_dir: StoreDir,
    real_store_dir: PathBuf,
    db_path: PathBuf,
    /// The database connection, the objects waiting for registration and their flusher.
    shared: Arc<Shared>,
    flusher: Option<std::thread::JoinHandle<()>>,
    _big_lock: fs::File,
    drv_hashes: DrvHashCache,
    import_cache: Option<Arc<dyn ImportCache>>,
}

/// An object that is complete and in place under its final name but not yet registered: it
/// becomes valid in the database with the next group commit. Its per-path lock is held until
/// then, so no other process replaces it or registers it twice.
struct PendingPath {
    info: PathInfo,
    /// `DerivationOutputs` rows (output name, printed path) for a `.drv`.
    drv_outputs: Vec<(String, String)>,
    _lock: PathLock,
}

#[derive(Default)]
struct PendingSet {
    paths: std::collections::HashMap<StorePath, PendingPath>,
    /// When the oldest unflushed entry was added.
    since: Option<std::time::Instant>,
    /// The store was dropped: flush what is left and stop.
    closed: bool,
    /// Consecutive failed background flushes (for the retry back-off).
    failures: u32,
}

/// State shared between a `LocalStore` and its flusher thread.
struct Shared {
    store_dir: StoreDir,
    real_store_dir: PathBuf,
    db_path: PathBuf,
    db: Mutex<Connection>,
    pending: Mutex<PendingSet>,
    wake: std::sync::Condvar,
    /// Serialises group commits (the background flusher and synchronous flushes).
    flush_lock: Mutex<()>,
    /// How long a new object may wait for its group commit.
    delay: Mutex<std::time::Duration>,
    /// Shared `syncfs` of the store's file system.
    fs_flush: FlushBatcher,
    /// Shared fsync of the store directory (renames into place).
    dir_flush: FlushBatcher,
}

/// Default time an added object waits for its group commit (durability point).
const DEFAULT_FLUSH_DELAY: std::time::Duration = std::time::Duration::from_millis(10);
/// A batch this large is committed at once by the adder that filled it.
const MAX_PENDING: usize = 512;

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

fn join_root(root: &Path, abs: &str) -> PathBuf {
    let mut p = root.to_path_buf();
    p.push(abs.trim_start_matches('/'));
    p
}

/// An exclusive `flock` on `<path>.lock`, released (and the lock file deleted) on drop.
pub(crate) struct PathLock {
    file: fs::File,
    path: PathBuf,
}

impl PathLock {
    pub(crate) fn acquire(path: &Path) -> Result<PathLock> {
        loop {
            let file = fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(path)
                .map_err(io_err("opening lock file", path))?;
            flock(&file, libc::LOCK_EX).map_err(io_err("acquiring lock", path))?;
            // A non-empty lock file was deleted by its previous holder: retry with a fresh one.
            let len = file
                .metadata()
                .map_err(io_err("getting status of", path))?
                .len();
            if len == 0 {
                return Ok(PathLock {
                    file,
                    path: path.to_owned(),
                });
            }
        }
    }
}

impl Drop for PathLock {
    fn drop(&mut self) {
        // Mark stale before unlinking so a waiter that opened the old inode retries.
        let _ = fs::remove_file(&self.path);
        let _ = self.file.write_all(b"d");
        let _ = flock(&self.file, libc::LOCK_UN);
    }
}

fn flock(f: &fs::File, op: libc::c_int) -> io::Result<()> {
    loop {
        // SAFETY: the descriptor is owned by `f` and stays open for the call.
        let r = unsafe { libc::flock(f.as_raw_fd(), op) };
        if r == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Flush everything of the file system holding `f` (one call instead of an fsync per file).
fn syncfs(f: &fs::File) -> io::Result<()> {
    // SAFETY: the descriptor is owned by `f` and stays open for the call.
    let r = unsafe { libc::syncfs(f.as_raw_fd()) };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

pub(crate) fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

impl LocalStore {
    /// Open (creating if needed) the store with logical directory `store_dir` under physical
    /// root `root` (`/` for the real store).
    pub fn open(store_dir: StoreDir, root: impl AsRef<Path>) -> Result<LocalStore> {
        let root = root.as_ref();
        let real_store_dir = join_root(root, store_dir.as_str());
        let db_dir = join_root(root, "/nix/var/nix/db");
        fs::create_dir_all(&real_store_dir)
            .map_err(io_err("creating directory", &real_store_dir))?;
        fs::create_dir_all(&db_dir).map_err(io_err("creating directory", &db_dir))?;
        let big_lock_path = db_dir.join("big-lock");
        let big_lock = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&big_lock_path)
            .map_err(io_err("opening lock file", &big_lock_path))?;
        // Shared, like Nix: an exclusive holder is migrating the schema or collecting garbage.
        flock(&big_lock, libc::LOCK_SH).map_err(io_err("acquiring lock", &big_lock_path))?;

        let schema_path = db_dir.join("schema");
        let db_path = db_dir.join("db.sqlite");
        let schema = match fs::read_to_string(&schema_path) {
            Ok(s) => Some(s.trim().to_owned()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(io_err("reading", &schema_path)(e)),
        };
        let db_err = |source| StoreError::Db {
            path: db_path.clone(),
            source,
        };
        let conn = Connection::open(&db_path).map_err(db_err)?;
        conn.busy_timeout(std::time::Duration::from_secs(3600))
            .map_err(db_err)?;
        conn.execute_batch("pragma foreign_keys = 1; pragma synchronous = normal;")
            .map_err(db_err)?;
        let _: String = conn
            .query_row("pragma main.journal_mode = wal", [], |r| r.get(0))
            .map_err(db_err)?;
        match schema {
            None => {
                conn.execute_batch(SCHEMA_SQL).map_err(db_err)?;
                let tmp = schema_path.with_extension("tmp");
                fs::write(&tmp, SCHEMA_VERSION.to_string()).map_err(io_err("writing", &tmp))?;
                fs::rename(&tmp, &schema_path).map_err(io_err("renaming to", &schema_path))?;
            }
            Some(s) => match s.parse::<u32>() {
                Ok(SCHEMA_VERSION) => {}
                Ok(v) if v > SCHEMA_VERSION => return Err(StoreError::SchemaTooNew { found: s }),
                _ => {
                    return Err(StoreError::SchemaTooOld {
                        path: schema_path,
                        found: s,
                    });
                }
            },
        }
        remove_stale_temporaries(&real_store_dir);
        tracing::debug!(store = %store_dir, root = %root.display(), "opened local store");
        let shared = Arc::new(Shared {
            store_dir: store_dir.clone(),
            real_store_dir: real_store_dir.clone(),
            db_path: db_path.clone(),
            db: Mutex::new(conn),
            pending: Mutex::new(PendingSet::default()),
            wake: std::sync::Condvar::new(),
            flush_lock: Mutex::new(()),
            delay: Mutex::new(DEFAULT_FLUSH_DELAY),
            fs_flush: FlushBatcher::default(),
            dir_flush: FlushBatcher::default(),
        });
        let flusher = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("store-flush".into())
                .spawn(move || shared.run_flusher())
                .map_err(io_err("starting the flusher thread of", &real_store_dir))?
        };
        Ok(LocalStore {
            store_dir,
            real_store_dir,
            db_path,
            shared,
            flusher: Some(flusher),
            _big_lock: big_lock,
            drv_hashes: DrvHashCache::new(),
            import_cache: None,
        })
    }

    /// How long an added object may wait before its group commit (default 10 ms). Objects
    /// are complete and in place at once; they become valid in the database, for other
    /// processes, at the commit. A longer delay batches more objects per file-system flush.
    pub fn set_flush_delay(&self, delay: std::time::Duration) {
        *self.shared.delay.lock().unwrap_or_else(|e| e.into_inner()) = delay;
        self.shared.wake.notify_all();
    }

    /// Make every object added so far durable and valid in the database now (one
    /// file-system flush and one transaction for all of them).
    pub fn flush(&self) -> Result<()> {
        self.shared.flush()
    }

    /// Number of added objects still waiting for their group commit.
    pub fn pending_count(&self) -> usize {
        self.shared.lock_pending().paths.len()
    }

    /// Install the metadata-keyed import cache.
    pub fn set_import_cache(&mut self, cache: Arc<dyn ImportCache>) {
        self.import_cache = Some(cache);
    }

    pub fn store_dir(&self) -> &StoreDir {
        &self.store_dir
    }

    /// The memo of derivation hashes shared by everything using this store.
    pub fn drv_hashes(&self) -> &DrvHashCache {
        &self.drv_hashes
    }

    /// Physical location of a store path.
    pub fn real_path(&self, p: &StorePath) -> PathBuf {
        self.real_store_dir.join(p.base_name())
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.shared.conn()
    }

    fn db_err(&self) -> impl FnOnce(rusqlite::Error) -> StoreError + '_ {
        |source| StoreError::Db {
            path: self.db_path.clone(),
            source,
        }
    }

    pub fn is_valid_path(&self, p: &StorePath) -> Result<bool> {
        if self.shared.is_pending(p) {
            return Ok(true);
        }
        let conn = self.conn();
        let r: Option<i64> = conn
            .query_row(
                "select id from ValidPaths where path = ?",
                [self.store_dir.print(p)],
                |r| r.get(0),
            )
            .optional()
            .map_err(self.db_err())?;
        Ok(r.is_some())
    }

    /// Nix's `queryPathInfo`; `None` when the path is not valid.
    pub fn query_path_info(&self, p: &StorePath) -> Result<Option<PathInfo>> {
        if let Some(e) = self.shared.lock_pending().paths.get(p) {
            return Ok(Some(e.info.clone()));
        }
        let printed = self.store_dir.print(p);
        let conn = self.conn();
        type Row = (
            i64,
            String,
            i64,
            Option<String>,
            Option<i64>,
            Option<i64>,
            Option<String>,
            Option<String>,
        );
        let row: Option<Row> = conn
            .query_row(
                "select id, hash, registrationTime, deriver, narSize, ultimate, sigs, ca from ValidPaths where path = ?",
                [&printed],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?, r.get(7)?)),
            )
            .optional()
            .map_err(self.db_err())?;
        let Some((id, hash, reg, deriver, nar_size, ultimate, sigs, ca)) = row else {
            return Ok(None);
        };
        let corrupt = |reason: String| StoreError::Corrupt {
            path: printed.clone(),
            reason,
        };
        let nar_hash = Hash::parse_any_prefixed(&hash).map_err(|e| corrupt(e.to_string()))?;
        let mut references = BTreeSet::new();
        let mut stmt = conn
            .prepare_cached(
                "select path from Refs join ValidPaths on reference = id where referrer = ?",
            )
            .map_err(self.db_err())?;
        let rows = stmt
            .query_map([id], |r| r.get::<_, String>(0))
            .map_err(self.db_err())?;
        for r in rows {
            let r = r.map_err(self.db_err())?;
            references.insert(
                self.store_dir
                    .parse(&r)
                    .map_err(|e| corrupt(e.to_string()))?,
            );
        }
        let deriver = match deriver.filter(|d| !d.is_empty()) {
            Some(d) => Some(
                self.store_dir
                    .parse(&d)
                    .map_err(|e| corrupt(e.to_string()))?,
            ),
            None => None,
        };
        Ok(Some(PathInfo {
            path: p.clone(),
            nar_hash,
            nar_size: nar_size.unwrap_or(0) as u64,
            references,
            deriver,
            registration_time: reg,
            ultimate: ultimate == Some(1),
            sigs: sigs
                .map(|s| {
                    s.split(' ')
                        .filter(|x| !x.is_empty())
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default(),
            ca,
        }))
    }

    /// Paths that refer to `p` (Nix's `queryReferrers`).
    pub fn query_referrers(&self, p: &StorePath) -> Result<BTreeSet<StorePath>> {
        let pending: Vec<StorePath> = self
            .shared
            .lock_pending()
            .paths
            .values()
            .filter(|e| e.info.references.contains(p))
            .map(|e| e.info.path.clone())
            .collect();
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(
                "select path from Refs join ValidPaths on referrer = id where reference = (select id from ValidPaths where path = ?)",
            )
            .map_err(self.db_err())?;
        let rows = stmt
            .query_map([self.store_dir.print(p)], |r| r.get::<_, String>(0))
            .map_err(self.db_err())?;
        let mut out: BTreeSet<StorePath> = pending.into_iter().collect();
        for r in rows {
            let r = r.map_err(self.db_err())?;
            out.insert(self.store_dir.parse(&r)?);
        }
        Ok(out)
    }

    /// Output name → path recorded for a valid `.drv` (Nix's `queryDerivationOutputMap` for
    /// statically known outputs).
    pub fn query_derivation_outputs(
        &self,
        drv: &StorePath,
    ) -> Result<std::collections::BTreeMap<String, StorePath>> {
        if let Some(e) = self.shared.lock_pending().paths.get(drv) {
            let mut out = std::collections::BTreeMap::new();
            for (id, path) in &e.drv_outputs {
                out.insert(id.clone(), self.store_dir.parse(path)?);
            }
            return Ok(out);
        }
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(
                "select d.id, d.path from DerivationOutputs d join ValidPaths v on d.drv = v.id where v.path = ?",
            )
            .map_err(self.db_err())?;
        let rows = stmt
            .query_map([self.store_dir.print(drv)], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
            })
            .map_err(self.db_err())?;
        let mut out = std::collections::BTreeMap::new();
        for r in rows {
            let (id, path) = r.map_err(self.db_err())?;
            out.insert(id, self.store_dir.parse(&path)?);
        }
        Ok(out)
    }

    /// Physical directory holding the store objects.
    pub fn real_store_dir(&self) -> &Path {
        &self.real_store_dir
    }

    /// Take the per-path lock Nix's `PathLocks` would take for `p` (`<real path>.lock`).
    pub(crate) fn lock_path(&self, p: &StorePath) -> Result<PathLock> {
        let dest = self.real_path(p);
        PathLock::acquire(&PathBuf::from(format!("{}.lock", dest.display())))
    }

    /// Flush the store's file system and directory: what must precede registering objects
    /// that were moved into place (one call for a whole batch).
    pub fn sync_store(&self) -> Result<()> {
        self.shared.sync_store()
    }

    /// The closure of `paths` under references (Nix's `computeFSClosure`); every path must
    /// be valid.
    pub fn closure(&self, paths: &BTreeSet<StorePath>) -> Result<BTreeSet<StorePath>> {
        let mut out = BTreeSet::new();
        let mut todo: Vec<StorePath> = paths.iter().cloned().collect();
        while let Some(p) = todo.pop() {
            if out.contains(&p) {
                continue;
            }
            let info = self
                .query_path_info(&p)?
                .ok_or_else(|| StoreError::InvalidPath(self.store_dir.print(&p)))?;
            for r in info.references {
                if !out.contains(&r) {
                    todo.push(r);
                }
            }
            out.insert(p);
        }
        Ok(out)
    }

    /// Register several paths whose contents are complete and synced, in one transaction
    /// (Nix's `registerValidPaths`): all rows first, then references, so the paths may refer
    /// to each other. Paths that are already valid are left as they are. References outside
    /// the batch must be valid.
    pub fn register_valid_paths(&self, infos: &[PathInfo]) -> Result<()> {
        // References to objects still waiting for their group commit: commit those first.
        let needs_flush = {
            let pending = self.shared.lock_pending();
            infos
                .iter()
                .any(|i| i.references.iter().any(|r| pending.paths.contains_key(r)))
        };
        if needs_flush {
            self.shared.flush()?;
        }
        let batch: Vec<(&PathInfo, &[(String, String)])> =
            infos.iter().map(|i| (i, &[][..])).collect();
        self.shared.register_batch(&batch)?;
        for info in infos {
            tracing::debug!(path = %self.store_dir.print(&info.path), "registered build output");
        }
        Ok(())
    }

    fn temp_path(&self) -> PathBuf {
        let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        self.real_store_dir
            .join(format!(".flaked-add-{}-{n}-{nanos:x}", std::process::id()))
    }

    /// Move a fully written, canonicalised temporary object into place and queue its
    /// registration, unless another writer already did. The per-path lock is taken here and
    /// released only after the group commit registered the object.
    ///
    /// Durability before registration: the group commit (`Shared::flush`) first flushes the
    /// store's file system once (`syncfs`: the contents and renames of every object of the
    /// batch), then registers the whole batch in one transaction. A crash before the commit
    /// leaves unregistered objects at their final names, which the next add replaces.
    fn install(&self, tmp: &Path, info: PathInfo, drv: Option<&Derivation>) -> Result<StorePath> {
        if self.shared.is_pending(&info.path) {
            nar::remove_tree_force(tmp).map_err(io_err("removing", tmp))?;
            return Ok(info.path);
        }
        let drv_outputs = match drv {
            Some(drv) => {
                let mut v = Vec::new();
                for name in drv.outputs.keys() {
                    if let Some(p) = drv.output_path(&self.store_dir, name)? {
                        v.push((name.clone(), self.store_dir.print(&p)));
                    }
                }
                v
            }
            None => Vec::new(),
        };
        let dest = self.real_path(&info.path);
        let lock_path = PathBuf::from(format!("{}.lock", dest.display()));
        let lock = PathLock::acquire(&lock_path)?;
        if self.is_valid_path(&info.path)? {
            nar::remove_tree_force(tmp).map_err(io_err("removing", tmp))?;
            return Ok(info.path);
        }
        // Left over from a crash between rename and registration: replace it.
        nar::remove_tree_force(&dest).map_err(io_err("removing stale", &dest))?;
        fs::rename(tmp, &dest).map_err(io_err("moving into place", &dest))?;
        let path = info.path.clone();
        let full = {
            let mut pending = self.shared.lock_pending();
            pending.paths.insert(
                path.clone(),
                PendingPath {
                    info,
                    drv_outputs,
                    _lock: lock,
                },
            );
            pending.since.get_or_insert_with(std::time::Instant::now);
            pending.paths.len() >= MAX_PENDING
        };
        if full {
            self.shared.flush()?;
        } else {
            self.shared.wake.notify_all();
        }
        Ok(path)
    }

    fn write_regular_tmp(&self, contents: &[u8]) -> Result<PathBuf> {
        let tmp = self.temp_path();
        let mut r = Restorer::new(&tmp, true);
        let res = (|| {
            r.file_start(false, contents.len() as u64)?;
            r.file_chunk(contents)?;
            r.file_end()
        })();
        if let Err(e) = res {
            let _ = nar::remove_tree_force(&tmp);
            return Err(io_err("writing", &tmp)(e));
        }
        Ok(tmp)
    }

    fn nar_of_regular(contents: &[u8]) -> (Hash, u64) {
        let mut h = NarHasher::new(HashAlgo::Sha256);
        // Writing to a hasher cannot fail.
        let _ = h.file_start(false, contents.len() as u64);
        let _ = h.file_chunk(contents);
        let _ = h.file_end();
        h.finish()
    }

    /// Add a text object (what `builtins.toFile` and `.drv` writing do).
    pub fn add_text(
        &self,
        name: &str,
        contents: &[u8],
        references: &BTreeSet<StorePath>,
    ) -> Result<StorePath> {
        self.add_text_inner(name, contents, references, None)
    }

    fn add_text_inner(
        &self,
        name: &str,
        contents: &[u8],
        references: &BTreeSet<StorePath>,
        drv: Option<&Derivation>,
    ) -> Result<StorePath> {
        let hash = Hash::sha256(contents);
        let path = self.store_dir.make_text_path(name, &hash, references)?;
        if self.is_valid_path(&path)? {
            return Ok(path);
        }
        for r in references {
            if !self.is_valid_path(r)? {
                return Err(StoreError::InvalidPath(self.store_dir.print(r)));
            }
        }
        let (nar_hash, nar_size) = Self::nar_of_regular(contents);
        let tmp = self.write_regular_tmp(contents)?;
        let info = PathInfo {
            path,
            nar_hash,
            nar_size,
            references: references.clone(),
            deriver: None,
            registration_time: now(),
            ultimate: false,
            sigs: Vec::new(),
            ca: Some(
                ContentAddress {
                    method: ContentAddressMethod::Text,
                    hash,
                }
                .render(),
            ),
        };
        let res = self.install(&tmp, info, drv);
        if res.is_err() {
            let _ = nar::remove_tree_force(&tmp);
        }
        res
    }

    /// Write a finished derivation (outputs already filled in) and return its path. Its hash
    /// modulo is memoised so dependents never re-read it.
    pub fn add_derivation(&self, drv: &Derivation) -> Result<StorePath> {
        let aterm = drv.to_aterm(&self.store_dir)?;
        let path = self.add_text_inner(
            &format!("{}.drv", drv.name),
            aterm.as_bytes(),
            &drv.references(),
            Some(drv),
        )?;
        if self.drv_hashes.get(&path).is_none() {
            let h = hash_derivation_modulo(&self.store_dir, drv, false, self, &self.drv_hashes)?;
            self.drv_hashes.insert(path.clone(), h);
        }
        Ok(path)
    }

    /// What `builtins.derivation` does after collecting attributes: compute output paths
    /// (input-addressed or fixed), write the `.drv`, and return its path with the completed
    /// derivation.
    pub fn instantiate(&self, drv: Derivation) -> Result<(StorePath, Derivation)> {
        let (path, drv) =
            crate::derivation::instantiate_pure(drv, &self.store_dir, self, &self.drv_hashes)?;
        let written = self.add_derivation(&drv)?;
        debug_assert_eq!(written, path);
        Ok((written, drv))
    }

    /// Read and parse a `.drv` from the store.
    pub fn read_derivation(&self, path: &StorePath) -> Result<Derivation> {
        let real = self.real_path(path);
        let text = fs::read(&real).map_err(io_err("reading derivation", &real))?;
        let name = path
            .name()
            .strip_suffix(".drv")
            .ok_or_else(|| StorePathError::NotDerivation(self.store_dir.print(path)))?;
        Ok(Derivation::parse(&self.store_dir, &text, name)?)
    }

    /// Compute the store path `add_path` would produce, without writing anything.
    pub fn compute_path(
        &self,
        src: &Path,
        name: &str,
        method: FileIngestionMethod,
        algo: HashAlgo,
        filter: Option<&mut PathFilter<'_>>,
    ) -> Result<(StorePath, Hash)> {
        compute_path(&self.store_dir, src, name, method, algo, filter)
    }

    /// Import a file system object (`builtins.path`, `./path` coercion, `filterSource`):
    /// one streaming pass copies it into a temporary store entry while hashing it, then the
    /// entry is moved into place and registered. Flat ingestion needs a regular file (symlinks
    /// are followed for the top-level object only when flat, as in Nix).
    pub fn add_path(
        &self,
        src: &Path,
        name: &str,
        method: FileIngestionMethod,
        algo: HashAlgo,
        filter: Option<&mut PathFilter<'_>>,
    ) -> Result<AddedPath> {
        crate::store_path::check_name(name).map_err(|e| StorePathError::BadName {
            path: format!("{}/…-{name}", self.store_dir),
            reason: Box::new(e),
        })?;
        let cacheable = filter.is_none();
        if cacheable
            && let Some(c) = &self.import_cache
            && let Some(hit) = c.lookup(src, name, method, algo)
            && self.is_valid_path(&hit.path)?
        {
            return Ok(hit);
        }
        let tmp = self.temp_path();
        let res = self.add_path_to_tmp(src, &tmp, name, method, algo, filter);
        let res = match res {
            Ok((info, hash)) => {
                let (nar_hash, nar_size) = (info.nar_hash, info.nar_size);
                self.install(&tmp, info, None).map(|path| AddedPath {
                    path,
                    hash,
                    nar_hash,
                    nar_size,
                })
            }
            Err(e) => Err(e),
        };
        if res.is_err() {
            let _ = nar::remove_tree_force(&tmp);
        }
        let res = res?;
        if cacheable && let Some(c) = &self.import_cache {
            c.record(src, name, method, algo, &res);
        }
        Ok(res)
    }

    fn add_path_to_tmp(
        &self,
        src: &Path,
        tmp: &Path,
        name: &str,
        method: FileIngestionMethod,
        algo: HashAlgo,
        filter: Option<&mut PathFilter<'_>>,
    ) -> Result<(PathInfo, Hash)> {
        let mut restorer = Restorer::new(tmp, true);
        let mut nar_hasher = NarHasher::new(HashAlgo::Sha256);
        let hash = match method {
            FileIngestionMethod::Recursive => {
                if algo == HashAlgo::Sha256 {
                    nar::dump_path(src, &mut TeeSink(&mut nar_hasher, &mut restorer), filter)?;
                    let (h, n) = nar_hasher.finish();
                    return self.finish_info(name, method, h, h, n).map(|i| (i, h));
                }
                let mut ca_hasher = NarHasher::new(algo);
                let mut both = TeeSink(&mut nar_hasher, &mut ca_hasher);
                nar::dump_path(src, &mut TeeSink(&mut both, &mut restorer), filter)?;
                ca_hasher.finish().0
            }
            FileIngestionMethod::Flat => {
                let md = fs::metadata(src).map_err(io_err("getting status of", src))?;
                if !md.is_file() {
                    return Err(StoreError::NotRegularFile(src.to_owned()));
                }
                // Flat objects are stored non-executable regardless of the source mode.
                let mut flat = FlatHasher::new(algo);
                let mut both = TeeSink(&mut nar_hasher, &mut flat);
                let mut sink = NonExecutable(TeeSink(&mut both, &mut restorer));
                let real = fs::canonicalize(src).map_err(io_err("resolving", src))?;
                nar::dump_path(&real, &mut sink, None)?;
                flat.finish()
                    .ok_or_else(|| StoreError::NotRegularFile(src.to_owned()))?
            }
        };
        let (nh, n) = nar_hasher.finish();
        self.finish_info(name, method, hash, nh, n)
            .map(|i| (i, hash))
    }

    fn finish_info(
        &self,
        name: &str,
        method: FileIngestionMethod,
        hash: Hash,
        nar_hash: Hash,
        nar_size: u64,
    ) -> Result<PathInfo> {
        let path = self.store_dir.make_fixed_output_path(
            method,
            &hash,
            name,
            &StoreReferences::default(),
        )?;
        let cm = match method {
            FileIngestionMethod::Flat => ContentAddressMethod::Flat,
            FileIngestionMethod::Recursive => ContentAddressMethod::Recursive,
        };
        Ok(PathInfo {
            path,
            nar_hash,
            nar_size,
            references: BTreeSet::new(),
            deriver: None,
            registration_time: now(),
            ultimate: false,
            sigs: Vec::new(),
            ca: Some(ContentAddress { method: cm, hash }.render()),
        })
    }

    /// Import a NAR stream as a recursive SHA-256 content-addressed path (fetchers).
    pub fn add_nar(&self, name: &str, nar_stream: &mut dyn io::Read) -> Result<AddedPath> {
        self.add_dump(name, &mut |sink| {
            nar::parse_nar(nar_stream, sink)?;
            Ok(())
        })
    }

    /// Import a tree that `dump` serialises as NAR events (a Git commit read from its objects,
    /// say) as a recursive SHA-256 content-addressed path: hashed and restored in one pass.
    pub fn add_dump(
        &self,
        name: &str,
        dump: &mut dyn FnMut(&mut dyn nar::NarSink) -> Result<()>,
    ) -> Result<AddedPath> {
        let tmp = self.temp_path();
        let res: Result<AddedPath> = (|| {
            let mut restorer = Restorer::new(&tmp, true);
            let mut h = NarHasher::new(HashAlgo::Sha256);
            dump(&mut TeeSink(&mut h, &mut restorer))?;
            let (nh, n) = h.finish();
            let info = self.finish_info(name, FileIngestionMethod::Recursive, nh, nh, n)?;
            let path = self.install(&tmp, info, None)?;
            Ok(AddedPath {
                path,
                hash: nh,
                nar_hash: nh,
                nar_size: n,
            })
        })();
        if res.is_err() {
            let _ = nar::remove_tree_force(&tmp);
        }
        res
    }
}

impl Drop for LocalStore {
    fn drop(&mut self) {
        self.shared.lock_pending().closed = true;
        self.shared.wake.notify_all();
        if let Some(h) = self.flusher.take() {
            let _ = h.join();
        }
        // The flusher committed what it could; anything left (its commit failed) stays
        // unregistered and is replaced by the next add.
        if let Err(e) = self.shared.flush() {
            tracing::warn!(store = %self.real_store_dir.display(), "could not register added objects: {e}");
        }
    }
}

impl Shared {
    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.db.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_pending(&self) -> std::sync::MutexGuard<'_, PendingSet> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn is_pending(&self, p: &StorePath) -> bool {
        self.lock_pending().paths.contains_key(p)
    }

    fn db_err(&self) -> impl FnOnce(rusqlite::Error) -> StoreError + '_ {
        |source| StoreError::Db {
            path: self.db_path.clone(),
            source,
        }
    }

    fn sync_store(&self) -> Result<()> {
        self.fs_flush
            .flush(|| syncfs(&fs::File::open(&self.real_store_dir)?))
            .map_err(io_err("syncing file system of", &self.real_store_dir))?;
        self.dir_flush
            .flush(|| fs::File::open(&self.real_store_dir)?.sync_all())
            .map_err(io_err("syncing directory", &self.real_store_dir))
    }

    /// The group commit: flush the file system once, then register every pending object in
    /// one transaction and release their locks.
    fn flush(&self) -> Result<()> {
        let _serial = self.flush_lock.lock().unwrap_or_else(|e| e.into_inner());
        let batch: Vec<(PathInfo, Vec<(String, String)>)> = self
            .lock_pending()
            .paths
            .values()
            .map(|e| (e.info.clone(), e.drv_outputs.clone()))
            .collect();
        if batch.is_empty() {
            return Ok(());
        }
        self.sync_store()?;
        let refs: Vec<(&PathInfo, &[(String, String)])> =
            batch.iter().map(|(i, o)| (i, o.as_slice())).collect();
        self.register_batch(&refs)?;
        let mut pending = self.lock_pending();
        for (info, _) in &batch {
            pending.paths.remove(&info.path);
        }
        pending.since = (!pending.paths.is_empty()).then(std::time::Instant::now);
        tracing::debug!(paths = batch.len(), "registered a batch of added objects");
        Ok(())
    }

    /// Register objects whose contents are complete and synced, in one transaction (Nix's
    /// `registerValidPaths`): all rows first, then references and derivation outputs, so the
    /// objects may refer to each other. Objects already valid are left as they are; references
    /// outside the batch must be valid.
    fn register_batch(&self, batch: &[(&PathInfo, &[(String, String)])]) -> Result<()> {
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(self.db_err())?;
        let mut ids = Vec::new();
        for (info, _) in batch {
            let printed = self.store_dir.print(&info.path);
            let existing: Option<i64> = tx
                .query_row(
                    "select id from ValidPaths where path = ?",
                    [&printed],
                    |r| r.get(0),
                )
                .optional()
                .map_err(self.db_err())?;
            if existing.is_some() {
                ids.push(None);
                continue;
            }
            tx.execute(
                "insert into ValidPaths (path, hash, registrationTime, deriver, narSize, ultimate, sigs, ca) values (?, ?, ?, ?, ?, ?, ?, ?)",
                params![
                    printed,
                    info.nar_hash.render(crate::hash::HashFormat::Base16, true),
                    info.registration_time,
                    info.deriver.as_ref().map(|d| self.store_dir.print(d)),
                    if info.nar_size != 0 { Some(info.nar_size as i64) } else { None },
                    if info.ultimate { Some(1) } else { None },
                    if info.sigs.is_empty() { None } else { Some(info.sigs.join(" ")) },
                    info.ca,
                ],
            )
            .map_err(self.db_err())?;
            ids.push(Some(tx.last_insert_rowid()));
        }
        for ((info, outputs), id) in batch.iter().zip(ids) {
            let Some(id) = id else { continue };
            for r in &info.references {
                let rp = self.store_dir.print(r);
                let rid: Option<i64> = tx
                    .query_row("select id from ValidPaths where path = ?", [&rp], |row| {
                        row.get(0)
                    })
                    .optional()
                    .map_err(self.db_err())?;
                let rid = rid.ok_or_else(|| StoreError::InvalidPath(rp.clone()))?;
                tx.execute(
                    "insert or replace into Refs (referrer, reference) values (?, ?)",
                    params![id, rid],
                )
                .map_err(self.db_err())?;
            }
            for (name, path) in *outputs {
                tx.execute(
                    "insert or replace into DerivationOutputs (drv, id, path) values (?, ?, ?)",
                    params![id, name, path],
                )
                .map_err(self.db_err())?;
            }
        }
        tx.commit().map_err(self.db_err())
    }

    /// The background half of the group commit: commits pending objects `delay` after the
    /// oldest of them was added (backing off after failures), and once more when the store
    /// is dropped.
    fn run_flusher(&self) {
        loop {
            let mut pending = self.lock_pending();
            loop {
                if pending.closed {
                    return;
                }
                let delay = *self.delay.lock().unwrap_or_else(|e| e.into_inner());
                let delay = delay.saturating_mul(1 << pending.failures.min(9));
                let due = pending.since.and_then(|t| t.checked_add(delay));
                match (pending.since, due) {
                    (None, _) | (Some(_), None) => {
                        pending = self.wake.wait(pending).unwrap_or_else(|e| e.into_inner());
                    }
                    (Some(_), Some(due)) => {
                        let now = std::time::Instant::now();
                        if now >= due {
                            break;
                        }
                        pending = self
                            .wake
                            .wait_timeout(pending, due - now)
                            .unwrap_or_else(|e| e.into_inner())
                            .0;
                    }
                }
            }
            drop(pending);
            let res = self.flush();
            let mut pending = self.lock_pending();
            match res {
                Ok(()) => pending.failures = 0,
                Err(e) => {
                    pending.failures = pending.failures.saturating_add(1);
                    tracing::warn!(store = %self.real_store_dir.display(), "group commit failed, will retry: {e}");
                }
            }
        }
    }
}

/// The store path and content hash of importing `src` (Nix's `computeStorePath`), without a
/// store: what read-only evaluation and `builtins.path { sha256 = …; }` checks need.
pub fn compute_path(
    store_dir: &StoreDir,
    src: &Path,
    name: &str,
    method: FileIngestionMethod,
    algo: HashAlgo,
    filter: Option<&mut PathFilter<'_>>,
) -> Result<(StorePath, Hash)> {
    let hash = match method {
        FileIngestionMethod::Recursive => {
            let mut h = NarHasher::new(algo);
            nar::dump_path(src, &mut h, filter)?;
            h.finish().0
        }
        FileIngestionMethod::Flat => {
            let md = fs::metadata(src).map_err(io_err("getting status of", src))?;
            if !md.is_file() {
                return Err(StoreError::NotRegularFile(src.to_owned()));
            }
            nar::hash_path(src, false, algo)?
        }
    };
    let path =
        store_dir.make_fixed_output_path(method, &hash, name, &StoreReferences::default())?;
    Ok((path, hash))
}

/// Passes events through but marks regular files non-executable (flat ingestion).
struct NonExecutable<S: NarSink>(S);

impl<S: NarSink> NarSink for NonExecutable<S> {
    fn file_start(&mut self, _executable: bool, size: u64) -> io::Result<()> {
        self.0.file_start(false, size)
    }
    fn file_chunk(&mut self, data: &[u8]) -> io::Result<()> {
        self.0.file_chunk(data)
    }
    fn file_end(&mut self) -> io::Result<()> {
        self.0.file_end()
    }
    fn symlink(&mut self, target: &[u8]) -> io::Result<()> {
        self.0.symlink(target)
    }
    fn directory_start(&mut self) -> io::Result<()> {
        self.0.directory_start()
    }
    fn entry_start(&mut self, name: &[u8]) -> io::Result<()> {
        self.0.entry_start(name)
    }
    fn entry_end(&mut self) -> io::Result<()> {
        self.0.entry_end()
    }
    fn directory_end(&mut self) -> io::Result<()> {
        self.0.directory_end()
    }
}

impl DrvSource for LocalStore {
    fn read_derivation(&self, path: &StorePath) -> Result<Derivation, DerivationError> {
        LocalStore::read_derivation(self, path).map_err(|e| DerivationError::Read {
            path: self.store_dir.print(path),
            reason: e.to_string(),
        })
    }
}

/// Remove `.flaked-add-<pid>-…` temporaries left by processes that no longer exist (a crash
/// during an add). Temporaries of live processes are left alone. Best effort.
fn remove_stale_temporaries(real_store_dir: &Path) {
    let Ok(entries) = fs::read_dir(real_store_dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(".flaked-add-")) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<i32>().ok()) else {
            continue;
        };
        // SAFETY: kill with signal 0 only checks whether the process exists.
        let alive = pid == std::process::id() as i32
            || unsafe { libc::kill(pid, 0) } == 0
            || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
        if !alive {
            tracing::debug!(path = %e.path().display(), "removing stale temporary");
            let _ = nar::remove_tree_force(&e.path());
        }
    }
}

/// Make a permission-restricted tree writable again (for tests and cleanup).
pub fn make_writable(path: &Path) -> io::Result<()> {
    let md = fs::symlink_metadata(path)?;
    if md.is_dir() {
        fs::set_permissions(path, fs::Permissions::from_mode(0o755))?;
        for e in fs::read_dir(path)? {
            make_writable(&e?.path())?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod flush_tests {
    use super::FlushBatcher;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    #[test]
    fn concurrent_flushes_are_shared_and_each_caller_is_covered() {
        let b = Arc::new(FlushBatcher::default());
        let calls = Arc::new(AtomicU64::new(0));
        // Every caller records the flush count at entry; the flush it returns after must have
        // started later (a call started after the caller's writes).
        let handles: Vec<_> = (0..32)
            .map(|_| {
                let (b, calls) = (b.clone(), calls.clone());
                std::thread::spawn(move || {
                    let before = calls.load(Ordering::SeqCst);
                    b.flush(|| {
                        calls.fetch_add(1, Ordering::SeqCst);
                        std::thread::sleep(std::time::Duration::from_millis(20));
                        Ok(())
                    })
                    .expect("flush");
                    assert!(calls.load(Ordering::SeqCst) > before);
                })
            })
            .collect();
        for h in handles {
            h.join().expect("thread");
        }
        let n = calls.load(Ordering::SeqCst);
        assert!(
            (1..32).contains(&n),
            "32 concurrent callers shared flushes: {n}"
        );
    }

    #[test]
    fn a_failed_flush_is_reported_and_retried_by_the_next_caller() {
        let b = FlushBatcher::default();
        assert!(b.flush(|| Err(std::io::Error::other("disk gone"))).is_err());
        let ran = AtomicU64::new(0);
        b.flush(|| {
            ran.fetch_add(1, Ordering::SeqCst);
            Ok(())
        })
        .expect("second flush");
        assert_eq!(ran.load(Ordering::SeqCst), 1);
    }
}

//! The persistent eval cache: one SQLite database per fingerprint.
//!
//! Why: re-evaluating a flake output is expensive, while its answer only depends
//! on the [`Fingerprint`](crate::Fingerprint). [`EvalCache`] stores what was
//! learned about each attribute (value, negative answer, failure) in the
//! `Attributes` table (see [`crate::schema`]) and answers later lookups from it.
//!
//! Design:
//! * Readers use an r2d2 pool of WAL-mode connections (`query_only`), so lookups
//!   from many request threads proceed in parallel with the writer.
//! * Writes never write to SQLite on the request path: they are recorded in an
//!   in-memory *pending* map (so the writing process reads its own writes at
//!   once) and sent to one writer thread, which commits them in batches (every
//!   `batch_delay` or `batch_rows` rows, whichever comes first, or at
//!   [`EvalCache::flush`]). Row ids are allocated in memory, so a child can be
//!   written before its parent is committed; children of parents created in
//!   this session are tracked in memory, so writing a new subtree reads
//!   nothing from disk.
//! * One process writes a database at a time: an advisory lock on
//!   `<db>.lock` is taken at open; a second opener gets a read-only cache whose
//!   writes are dropped (and counted).
//! * Damage is never fatal: a database failing its integrity or schema check at
//!   open, or reporting corruption during a query or commit, is renamed to
//!   `<db>.corrupt-<unix-nanos>` and a fresh one is created. Cursors from before
//!   the rebuild become stale: their lookups answer [`Lookup::Unknown`] (the
//!   caller re-evaluates) and their writes are dropped.
//!
//! Invariants: (1) the set of committed rows is always a prefix of the writes
//! in the order they were issued, and one `set_*` call is never split across
//! two commits; (2) a lookup never returns a value that was not written for that
//! exact attribute under this fingerprint — any error degrades to a miss;
//! (3) a placeholder never overwrites a known value.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use r2d2::Pool;
use r2d2_sqlite::SqliteConnectionManager;
use rusqlite::{Connection, OptionalExtension, params};

use crate::error::{CacheError, is_corrupt_sqlite};
use crate::fingerprint::FingerprintId;
use crate::schema::{self, CachedValue, SCHEMA_VERSION};

/// Name of the per-user cache subdirectory holding the databases.
pub const CACHE_SUBDIR: &str = "eval-cache-v1";

/// Generation used by cursors that must never read or write anything.
const DEAD_GENERATION: u64 = u64::MAX;

/// Tuning knobs of an [`EvalCache`].
#[derive(Clone, Debug)]
pub struct CacheOptions {
    /// Commit at the latest this long after the first write of a batch.
    pub batch_delay: Duration,
    /// Commit as soon as a batch holds this many rows.
    pub batch_rows: usize,
    /// Maximum number of pooled reader connections.
    pub readers: u32,
    /// SQLite busy timeout for every connection.
    pub busy_timeout: Duration,
    /// Longest wait for a pooled reader connection (all busy, or the file
    /// cannot be opened); the lookup is then a miss.
    pub pool_timeout: Duration,
}

impl Default for CacheOptions {
    fn default() -> Self {
        CacheOptions {
            batch_delay: Duration::from_millis(50),
            batch_rows: 2000,
            readers: 4,
            busy_timeout: Duration::from_secs(5),
            pool_timeout: Duration::from_secs(2),
        }
    }
}

/// The default cache directory: `$XDG_CACHE_HOME/flaked/eval-cache-v1`, falling
/// back to `$HOME/.cache/flaked/eval-cache-v1`. `None` when neither is set.
pub fn default_cache_dir() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|v| !v.is_empty())
                .map(|h| PathBuf::from(h).join(".cache"))
        })?;
    Some(base.join("flaked").join(CACHE_SUBDIR))
}

/// The database file for a fingerprint inside a cache directory.
pub fn db_path(cache_dir: &Path, fingerprint: &FingerprintId) -> PathBuf {
    cache_dir.join(format!("{fingerprint}.sqlite"))
}

/// A position in the cached attribute tree: one attribute (row) of one
/// database generation. Cheap to clone; valid only with the [`EvalCache`] that
/// produced it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cursor {
    generation: u64,
    id: i64,
    parent: i64,
    name: Arc<str>,
}

impl Cursor {
    /// The attribute's name (`""` for the root).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// True if this cursor can never read or write (it was produced while the
    /// database was unusable).
    pub fn is_dead(&self) -> bool {
        self.generation == DEAD_GENERATION
    }

    fn dead(parent: i64, name: Arc<str>) -> Cursor {
        Cursor {
            generation: DEAD_GENERATION,
            id: 0,
            parent,
            name,
        }
    }
}

/// The answer to a lookup.
#[derive(Clone, Debug, PartialEq)]
pub enum Lookup {
    /// The attribute exists; here is what is cached about it (possibly just
    /// [`CachedValue::Placeholder`], or [`CachedValue::Failed`]).
    Hit(Cursor, CachedValue),
    /// The attribute is known not to exist.
    Missing,
    /// Nothing is known: evaluate (and then record the answer).
    Unknown,
}

/// Counters of one [`EvalCache`], for `daemon status` and tests.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Lookups answered with a value (including placeholders and failures).
    pub hits: u64,
    /// Lookups answered "known missing".
    pub negative_hits: u64,
    /// Lookups answered "unknown".
    pub misses: u64,
    /// Rows committed to disk.
    pub rows_committed: u64,
    /// Batches (transactions) committed.
    pub batches_committed: u64,
    /// Rows whose batch failed to commit.
    pub write_errors: u64,
    /// Queries that failed (each answered as a miss).
    pub read_errors: u64,
    /// Writes dropped: read-only cache, stale or dead cursor, writer gone.
    pub dropped_writes: u64,
    /// Databases set aside and rebuilt.
    pub rebuilds: u64,
    /// Rows written but not yet committed.
    pub pending_rows: u64,
    /// True once a rebuild failed: the handle then answers only misses.
    pub disabled: bool,
}

#[derive(Default)]
struct Counters {
    hits: AtomicU64,
    negative_hits: AtomicU64,
    misses: AtomicU64,
    rows_committed: AtomicU64,
    batches_committed: AtomicU64,
    write_errors: AtomicU64,
    read_errors: AtomicU64,
    dropped_writes: AtomicU64,
    rebuilds: AtomicU64,
    pending_rows: AtomicU64,
}

fn bump(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

/// One row on its way to disk.
struct Row {
    seq: u64,
    id: i64,
    parent: i64,
    name: Arc<str>,
    value: CachedValue,
}

enum Msg {
    /// Rows that must be committed together.
    Write(Vec<Row>),
    /// Commit everything received so far, then answer.
    Flush(mpsc::SyncSender<Result<(), String>>),
}

struct PendingRow {
    id: i64,
    seq: u64,
    value: CachedValue,
}

/// Writes not yet committed, and the id/sequence allocators. Held briefly.
struct Pending {
    rows: HashMap<i64, HashMap<Arc<str>, PendingRow>>,
    next_id: i64,
    next_seq: u64,
    count: u64,
    /// Bumped by the writer whenever committed rows leave `rows`: a lookup
    /// that found nothing in the database at epoch E needs no re-check under
    /// the lock while the epoch is still E.
    removed_epoch: u64,
    /// Ids from here on were allocated by this backend: the database held no
    /// children of them at open, so their children are all in `fresh`.
    fresh_from: i64,
    /// `(parent, name) → id` of every row allocated under a fresh parent, so
    /// that writing a new subtree needs no database lookups at all.
    fresh: HashMap<i64, HashMap<Arc<str>, i64>>,
    fresh_count: usize,
}

/// Bound on [`Pending::fresh`]; when reached, the map restarts empty with
/// `fresh_from` moved to the next id (older parents fall back to lookups).
const FRESH_CAP: usize = 1 << 20;

impl Pending {
    /// Allocates the id of a new row `(parent, name)`.
    fn allocate(&mut self, parent: i64, name: &Arc<str>) -> i64 {
        let id = self.next_id;
        self.next_id += 1;
        if parent >= self.fresh_from {
            if self.fresh_count >= FRESH_CAP {
                self.fresh.clear();
                self.fresh_count = 0;
                self.fresh_from = self.next_id;
            } else {
                self.fresh
                    .entry(parent)
                    .or_default()
                    .insert(name.clone(), id);
                self.fresh_count += 1;
            }
        }
        id
    }
}

/// Bound on [`Backend::names`]; the memo is simply cleared when it is full.
const NAMES_MEMO: usize = 64;

/// One open database generation.
struct Backend {
    generation: u64,
    path: PathBuf,
    pool: Pool<SqliteConnectionManager>,
    pending: Arc<Mutex<Pending>>,
    sender: Mutex<Option<Sender<Msg>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
    broken: Arc<AtomicBool>,
    /// Decoded name lists of recently read complete attribute sets, by row id,
    /// so that looking through a large set does not re-read and re-decode its
    /// name list each time. Invalidated by every write to that row. Lock
    /// order: `pending` before `names`.
    names: Mutex<HashMap<i64, Arc<[String]>>>,
    /// Holds the advisory write lock for as long as the backend lives.
    _lock: Option<File>,
}

impl Backend {
    /// Ends the writer thread (closing its channel lets it commit what it has) and waits for it.
    fn stop_writer(&self) {
        drop(lock(&self.sender).take());
        if let Some(handle) = lock(&self.writer).take()
            && handle.join().is_err()
        {
            tracing::error!(path = %self.path.display(), "eval cache writer thread panicked");
        }
    }

    /// Releases the writer lock explicitly: flock locks belong to the open file description,
    /// so closing our descriptor is not enough while someone else still holds a copy of it —
    /// another thread holding this backend, or a process forked meanwhile (a build, a spawned
    /// child before its exec) — and the next open of this database would come up read-only.
    fn release_lock(&self) {
        if let Some(f) = self._lock.as_ref()
            && let Err(e) = f.unlock()
        {
            tracing::warn!(path = %self.path.display(), error = %e, "unlocking the eval cache lock file");
        }
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.stop_writer();
        self.release_lock();
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding one of our locks cannot leave the protected data
    // half-updated in a way that matters (maps of plain values), so keep going.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

struct Shared {
    path: PathBuf,
    options: CacheOptions,
    counters: Arc<Counters>,
    backend: RwLock<Arc<Backend>>,
    next_generation: AtomicU64,
    /// Set when a rebuild failed: from then on every lookup is a miss and
    /// every write is dropped (no rebuild storm on a hopeless file).
    disabled: AtomicBool,
}

/// A handle to the eval cache of one fingerprint. Clone it freely; it is
/// `Send + Sync`. Dropping the last clone commits pending writes.
#[derive(Clone)]
pub struct EvalCache {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for EvalCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EvalCache")
            .field("path", &self.shared.path)
            .finish()
    }
}

impl EvalCache {
    /// Opens (creating, checking and if necessary rebuilding) the database of
    /// `fingerprint` in `cache_dir`.
    pub fn open(
        cache_dir: &Path,
        fingerprint: &FingerprintId,
        options: CacheOptions,
    ) -> Result<EvalCache, CacheError> {
        std::fs::create_dir_all(cache_dir).map_err(|source| CacheError::Io {
            op: "creating cache directory",
            path: cache_dir.to_owned(),
            source,
        })?;
        Self::open_path(&db_path(cache_dir, fingerprint), options)
    }

    /// Opens the database at an explicit path (its directory must exist).
    pub fn open_path(path: &Path, options: CacheOptions) -> Result<EvalCache, CacheError> {
        let counters = Arc::new(Counters::default());
        let backend = open_backend(path, 0, &options, &counters)?;
        Ok(EvalCache {
            shared: Arc::new(Shared {
                path: path.to_owned(),
                options,
                counters,
                backend: RwLock::new(Arc::new(backend)),
                next_generation: AtomicU64::new(1),
                disabled: AtomicBool::new(false),
            }),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.shared.path
    }

    /// True if this handle may write (it holds the database's write lock).
    pub fn is_writable(&self) -> bool {
        if self.shared.disabled.load(Ordering::Acquire) {
            return false;
        }
        let backend = self.backend();
        lock(&backend.sender).is_some()
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> CacheStats {
        let c = &self.shared.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        CacheStats {
            hits: get(&c.hits),
            negative_hits: get(&c.negative_hits),
            misses: get(&c.misses),
            rows_committed: get(&c.rows_committed),
            batches_committed: get(&c.batches_committed),
            write_errors: get(&c.write_errors),
            read_errors: get(&c.read_errors),
            dropped_writes: get(&c.dropped_writes),
            rebuilds: get(&c.rebuilds),
            pending_rows: get(&c.pending_rows),
            disabled: self.shared.disabled.load(Ordering::Acquire),
        }
    }

    /// The root attribute (the flake's output attribute set, or whatever the
    /// caller caches at the top). It is created as a placeholder when absent.
    pub fn root(&self) -> Cursor {
        let name: Arc<str> = Arc::from("");
        if self.shared.disabled.load(Ordering::Acquire) {
            return Cursor::dead(0, name);
        }
        let backend = self.backend();
        match self.resolve(&backend, 0, &name, CachedValue::Placeholder) {
            Some((cursor, _)) => cursor,
            None => Cursor::dead(0, name),
        }
    }

    /// What is cached for the attribute at `cursor` itself.
    pub fn get(&self, cursor: &Cursor) -> Lookup {
        let Some(backend) = self.backend_for(cursor) else {
            return self.count(Lookup::Unknown);
        };
        let answer = match self.row(&backend, cursor.parent, &cursor.name) {
            Some((_, CachedValue::Missing)) => Lookup::Missing,
            Some((_, value)) => Lookup::Hit(cursor.clone(), value),
            None => Lookup::Unknown,
        };
        self.count(answer)
    }

    /// Looks up child `name` of the attribute at `parent`.
    ///
    /// * a cached row → [`Lookup::Hit`] (or [`Lookup::Missing`] for a recorded
    ///   negative answer);
    /// * no row, but the parent's complete name list is cached → a placeholder
    ///   hit if the name is in it (a placeholder row is then created so the child
    ///   can get children of its own), [`Lookup::Missing`] if not;
    /// * otherwise [`Lookup::Unknown`].
    pub fn child(&self, parent: &Cursor, name: &str) -> Lookup {
        let Some(backend) = self.backend_for(parent) else {
            return self.count(Lookup::Unknown);
        };
        let answer = self.child_in(&backend, parent, name);
        self.count(answer)
    }

    /// Looks up an attribute path from the root, stopping at the first
    /// element that is not a cached hit. Returns the answer and how many path
    /// elements it covers: `(Hit, path.len())` for the full path,
    /// `(Missing, n)` when `path[..n]` is known not to exist (its parent
    /// `path[..n-1]` does), `(Unknown, n)` when nothing is known about
    /// `path[..n]`. Intermediate attributes must be cached attribute sets
    /// (complete, partial or derivations); a failure or any other value on the
    /// way answers `Unknown` for the next element, so that the evaluator
    /// produces the exact error itself.
    pub fn lookup_path<S: AsRef<str>>(&self, path: &[S]) -> (Lookup, usize) {
        let root = self.root();
        let Some(backend) = self.backend_for(&root) else {
            return (self.count(Lookup::Unknown), 0);
        };
        let mut current = match self.row(&backend, root.parent, &root.name) {
            Some((_, value)) => Lookup::Hit(root, value),
            None => return (self.count(Lookup::Unknown), 0),
        };
        for (i, name) in path.iter().enumerate() {
            current = match current {
                Lookup::Hit(
                    cursor,
                    CachedValue::Attrs(_) | CachedValue::Placeholder | CachedValue::Derivation,
                ) => self.child_in(&backend, &cursor, name.as_ref()),
                _ => Lookup::Unknown,
            };
            if !matches!(current, Lookup::Hit(..)) {
                return (self.count(current), i + 1);
            }
        }
        (self.count(current), path.len())
    }

    /// Records the value of the attribute at `cursor`. Attribute-set names are
    /// stored sorted and deduplicated. Recording a placeholder over a known
    /// value does nothing.
    pub fn set(&self, cursor: &Cursor, value: CachedValue) {
        let Some(backend) = self.backend_for(cursor) else {
            bump(&self.shared.counters.dropped_writes, 1);
            return;
        };
        let value = normalize(value);
        let mut pending = lock(&backend.pending);
        if value == CachedValue::Placeholder
            && (pending_get(&pending, cursor.parent, &cursor.name).is_some()
                || self.db_row(&backend, cursor.parent, &cursor.name).is_some())
        {
            return;
        }
        let row = self.stage(
            &backend,
            &mut pending,
            cursor.id,
            cursor.parent,
            cursor.name.clone(),
            value,
        );
        self.send(&backend, &mut pending, vec![row]);
    }

    /// Records child `name` of `parent` and returns its cursor (for a
    /// [`CachedValue::Missing`] child the cursor is only useful to overwrite it).
    pub fn set_child(&self, parent: &Cursor, name: &str, value: CachedValue) -> Cursor {
        self.set_children(parent, vec![(name.to_owned(), value)])
            .pop()
            .expect("set_children returns one cursor per child")
    }

    /// Records several children of `parent` at once; they are committed in the
    /// same transaction. Returns their cursors in order.
    pub fn set_children(
        &self,
        parent: &Cursor,
        children: Vec<(String, CachedValue)>,
    ) -> Vec<Cursor> {
        let Some(backend) = self.backend_for(parent) else {
            bump(&self.shared.counters.dropped_writes, children.len() as u64);
            return children
                .into_iter()
                .map(|(name, _)| Cursor::dead(parent.id, Arc::from(name)))
                .collect();
        };
        // Look the names up without holding the pending lock (the common case:
        // the rows exist or are pending), then stage and send everything under
        // one lock acquisition so channel order equals sequence order. Children
        // of a parent created by this backend are never looked up on disk.
        let (fresh_from, epoch) = {
            let p = lock(&backend.pending);
            (p.fresh_from, p.removed_epoch)
        };
        let skip_db = parent.id >= fresh_from;
        let found: Vec<Option<(i64, CachedValue)>> = if skip_db {
            vec![None; children.len()]
        } else {
            children
                .iter()
                .map(|(name, _)| self.row(&backend, parent.id, name))
                .collect()
        };
        let mut cursors = Vec::with_capacity(children.len());
        let mut rows = Vec::with_capacity(children.len());
        let mut pending = lock(&backend.pending);
        for ((name, value), found) in children.into_iter().zip(found) {
            let name: Arc<str> = Arc::from(name);
            let value = normalize(value);
            let checked = (!skip_db).then_some(epoch);
            // A row that was pending when we looked it up may have been committed and left the
            // pending map since: read the database again, now under the lock, before writing it
            // a second time.
            let found = match found {
                None if !skip_db && pending_get(&pending, parent.id, &name).is_none() => {
                    self.db_row(&backend, parent.id, &name)
                }
                other => other,
            };
            // The newest known value: pending beats what was read before locking.
            let known = pending_get(&pending, parent.id, &name)
                .map(|p| p.value.clone())
                .or_else(|| found.as_ref().map(|(_, v)| v.clone()));
            if known.as_ref() == Some(&value) {
                // Same answer already recorded: nothing to write.
                let id = pending_get(&pending, parent.id, &name)
                    .map(|p| p.id)
                    .or(found.as_ref().map(|(id, _)| *id))
                    .expect("a known value has an id");
                cursors.push(Cursor {
                    generation: backend.generation,
                    id,
                    parent: parent.id,
                    name,
                });
                continue;
            }
            let existing = found
                .map(|(id, _)| id)
                .or_else(|| self.existing_id_locked(&backend, &pending, parent.id, &name, checked));
            let id = existing.unwrap_or_else(|| pending.allocate(parent.id, &name));
            cursors.push(Cursor {
                generation: backend.generation,
                id,
                parent: parent.id,
                name: name.clone(),
            });
            if value == CachedValue::Placeholder && existing.is_some() {
                continue;
            }
            rows.push(self.stage(&backend, &mut pending, id, parent.id, name, value));
        }
        if !rows.is_empty() {
            self.send(&backend, &mut pending, rows);
        }
        cursors
    }

    /// Commits every write issued before this call; returns the first commit
    /// error since the previous flush, if any.
    pub fn flush(&self) -> Result<(), CacheError> {
        let backend = self.backend();
        let sender = lock(&backend.sender).clone();
        let Some(sender) = sender else {
            return Ok(()); // read-only: nothing of ours to commit
        };
        let (tx, rx) = mpsc::sync_channel(1);
        let gone = || CacheError::Writer {
            path: backend.path.clone(),
            reason: "writer thread is gone".into(),
        };
        sender.send(Msg::Flush(tx)).map_err(|_| gone())?;
        match rx.recv() {
            Ok(Ok(())) => Ok(()),
            Ok(Err(reason)) => Err(CacheError::Writer {
                path: backend.path.clone(),
                reason,
            }),
            Err(_) => Err(gone()),
        }
    }

    // ----- internals -------------------------------------------------------

    fn backend(&self) -> Arc<Backend> {
        let current = self
            .shared
            .backend
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if current.broken.load(Ordering::Acquire) {
            self.rebuild(&current);
            return self
                .shared
                .backend
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
        }
        current
    }

    /// The current backend if `cursor` belongs to it.
    fn backend_for(&self, cursor: &Cursor) -> Option<Arc<Backend>> {
        if cursor.is_dead() || self.shared.disabled.load(Ordering::Acquire) {
            return None;
        }
        let backend = self.backend();
        (backend.generation == cursor.generation).then_some(backend)
    }

    fn count(&self, answer: Lookup) -> Lookup {
        let c = &self.shared.counters;
        match &answer {
            Lookup::Hit(..) => bump(&c.hits, 1),
            Lookup::Missing => bump(&c.negative_hits, 1),
            Lookup::Unknown => bump(&c.misses, 1),
        }
        answer
    }

    fn child_in(&self, backend: &Backend, parent: &Cursor, name: &str) -> Lookup {
        if let Some((id, value)) = self.row(backend, parent.id, name) {
            return match value {
                CachedValue::Missing => Lookup::Missing,
                value => Lookup::Hit(
                    Cursor {
                        generation: backend.generation,
                        id,
                        parent: parent.id,
                        name: Arc::from(name),
                    },
                    value,
                ),
            };
        }
        let names = match self.row(backend, parent.parent, &parent.name) {
            Some((id, CachedValue::Attrs(names))) if id == parent.id => names,
            _ => return Lookup::Unknown,
        };
        if names.binary_search_by(|n| n.as_str().cmp(name)).is_ok() {
            let name: Arc<str> = Arc::from(name);
            match self.resolve(backend, parent.id, &name, CachedValue::Placeholder) {
                Some((cursor, value)) => Lookup::Hit(cursor, value),
                None => Lookup::Unknown,
            }
        } else {
            Lookup::Missing
        }
    }

    /// With the pending lock held: the id of an existing row `(parent, name)`.
    /// `checked` is the removal epoch at which the caller already found no
    /// such row on disk (`None` if it did not look).
    fn existing_id_locked(
        &self,
        backend: &Backend,
        pending: &Pending,
        parent: i64,
        name: &Arc<str>,
        checked: Option<u64>,
    ) -> Option<i64> {
        if let Some(p) = pending_get(pending, parent, name) {
            return Some(p.id);
        }
        if parent >= pending.fresh_from {
            return pending
                .fresh
                .get(&parent)
                .and_then(|m| m.get(name))
                .copied();
        }
        if checked == Some(pending.removed_epoch) {
            return None; // nothing left the pending map since the disk lookup
        }
        self.db_row(backend, parent, name).map(|(id, _)| id)
    }

    /// Finds the row `(parent, name)`, creating it with `value` when absent.
    fn resolve(
        &self,
        backend: &Backend,
        parent: i64,
        name: &Arc<str>,
        value: CachedValue,
    ) -> Option<(Cursor, CachedValue)> {
        let epoch = lock(&backend.pending).removed_epoch;
        if let Some((id, found)) = self.row(backend, parent, name) {
            return Some((
                Cursor {
                    generation: backend.generation,
                    id,
                    parent,
                    name: name.clone(),
                },
                found,
            ));
        }
        let mut pending = lock(&backend.pending);
        // Re-check under the lock: a concurrent caller may have created it, and
        // its row may even have been committed (and left the pending map) since.
        if let Some(p) = pending_get(&pending, parent, name) {
            let found = (p.id, p.value.clone());
            return Some((
                Cursor {
                    generation: backend.generation,
                    id: found.0,
                    parent,
                    name: name.clone(),
                },
                found.1,
            ));
        }
        let recheck = pending.removed_epoch != epoch;
        if recheck && let Some((id, found)) = self.db_row_checked(backend, parent, name).ok()? {
            return Some((
                Cursor {
                    generation: backend.generation,
                    id,
                    parent,
                    name: name.clone(),
                },
                found,
            ));
        }
        let id = pending.allocate(parent, name);
        let row = self.stage(
            backend,
            &mut pending,
            id,
            parent,
            name.clone(),
            value.clone(),
        );
        self.send(backend, &mut pending, vec![row]);
        Some((
            Cursor {
                generation: backend.generation,
                id,
                parent,
                name: name.clone(),
            },
            value,
        ))
    }

    /// Records a row in the pending map; the caller sends it while still
    /// holding the lock, so channel order equals sequence order.
    fn stage(
        &self,
        backend: &Backend,
        pending: &mut Pending,
        id: i64,
        parent: i64,
        name: Arc<str>,
        value: CachedValue,
    ) -> Row {
        let seq = pending.next_seq;
        pending.next_seq += 1;
        lock(&backend.names).remove(&id);
        let previous = pending.rows.entry(parent).or_default().insert(
            name.clone(),
            PendingRow {
                id,
                seq,
                value: value.clone(),
            },
        );
        if previous.is_none() {
            pending.count += 1;
            bump(&self.shared.counters.pending_rows, 1);
        }
        Row {
            seq,
            id,
            parent,
            name,
            value,
        }
    }

    fn send(&self, backend: &Backend, pending: &mut Pending, rows: Vec<Row>) {
        let sender = lock(&backend.sender);
        let n = rows.len() as u64;
        let keys: Vec<(i64, Arc<str>, u64)> = rows
            .iter()
            .map(|r| (r.parent, r.name.clone(), r.seq))
            .collect();
        let sent = match sender.as_ref() {
            Some(s) => s.send(Msg::Write(rows)).is_ok(),
            None => false,
        };
        if !sent {
            // Read-only or writer gone: keep nothing that will never be committed.
            bump(&self.shared.counters.dropped_writes, n);
            for (parent, name, seq) in keys {
                remove_pending(pending, &self.shared.counters, parent, &name, seq);
            }
        }
    }

    /// The row `(parent, name)`: pending writes first, then the database.
    fn row(&self, backend: &Backend, parent: i64, name: &str) -> Option<(i64, CachedValue)> {
        {
            let pending = lock(&backend.pending);
            if let Some(p) = pending_get(&pending, parent, name) {
                return Some((p.id, p.value.clone()));
            }
        }
        self.db_row(backend, parent, name)
    }

    fn db_row(&self, backend: &Backend, parent: i64, name: &str) -> Option<(i64, CachedValue)> {
        self.db_row_checked(backend, parent, name).ok().flatten()
    }

    /// Queries the database; errors are logged, counted and (for corruption)
    /// mark the backend for rebuilding.
    fn db_row_checked(
        &self,
        backend: &Backend,
        parent: i64,
        name: &str,
    ) -> Result<Option<(i64, CachedValue)>, CacheError> {
        let result = query_row(backend, parent, name);
        if let Err(e) = &result {
            bump(&self.shared.counters.read_errors, 1);
            tracing::warn!(error = %e, parent, name, "eval cache lookup failed; treating as a miss");
            if e.is_corruption() {
                backend.broken.store(true, Ordering::Release);
            }
        }
        result
    }

    /// Sets the broken database aside and installs a fresh generation.
    fn rebuild(&self, broken: &Arc<Backend>) {
        let mut slot = self
            .shared
            .backend
            .write()
            .unwrap_or_else(|p| p.into_inner());
        if !Arc::ptr_eq(&slot, broken) {
            return; // someone else already rebuilt it
        }
        // Stop the old writer (it only drops writes now) so its lock is free.
        broken.stop_writer();
        let had_lock = broken._lock.is_some();
        let generation = self.shared.next_generation.fetch_add(1, Ordering::Relaxed);
        tracing::error!(path = %self.shared.path.display(), "eval cache database is corrupt; rebuilding");
        if had_lock {
            set_aside(&self.shared.path);
        }
        bump(&self.shared.counters.rebuilds, 1);
        // Other threads may still hold the old backend: release its lock for the new one.
        broken.release_lock();
        match open_backend(
            &self.shared.path,
            generation,
            &self.shared.options,
            &self.shared.counters,
        ) {
            Ok(fresh) => *slot = Arc::new(fresh),
            Err(e) => {
                tracing::error!(error = %e, "eval cache rebuild failed; caching disabled for this handle");
                // Keep the broken backend but stop using and rebuilding it.
                self.shared.disabled.store(true, Ordering::Release);
                broken.broken.store(false, Ordering::Release);
            }
        }
    }
}

fn normalize(value: CachedValue) -> CachedValue {
    match value {
        CachedValue::Attrs(names) if !names.windows(2).all(|w| w[0] < w[1]) => {
            let mut names = names.to_vec();
            names.sort_unstable();
            names.dedup();
            CachedValue::Attrs(names.into())
        }
        v => v,
    }
}

fn pending_get<'a>(pending: &'a Pending, parent: i64, name: &str) -> Option<&'a PendingRow> {
    pending.rows.get(&parent)?.get(name)
}

fn remove_pending(pending: &mut Pending, counters: &Counters, parent: i64, name: &str, seq: u64) {
    if let Some(children) = pending.rows.get_mut(&parent) {
        if children.get(name).is_some_and(|p| p.seq == seq) {
            children.remove(name);
            pending.count -= 1;
            counters.pending_rows.fetch_sub(1, Ordering::Relaxed);
        }
        if children.is_empty() {
            pending.rows.remove(&parent);
        }
    }
}

fn query_row(
    backend: &Backend,
    parent: i64,
    name: &str,
) -> Result<Option<(i64, CachedValue)>, CacheError> {
    let sql_err = |op, source| CacheError::Sqlite {
        op,
        path: backend.path.clone(),
        source,
    };
    let conn = backend.pool.get().map_err(|source| CacheError::Pool {
        path: backend.path.clone(),
        source,
    })?;
    let mut stmt = conn
        .prepare_cached(
            // The (possibly large) name list of a complete set is fetched
            // separately, and only when it is not memoised.
            "select id, type, case when type = 1 then null else value end, context
             from Attributes where parent = ?1 and name = ?2",
        )
        .map_err(|e| sql_err("preparing lookup", e))?;
    let raw = stmt
        .query_row(params![parent, name], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, Option<String>>(2)?,
                r.get::<_, Option<String>>(3)?,
            ))
        })
        .optional()
        .map_err(|e| sql_err("looking up attribute", e))?;
    let Some((id, code, value, context)) = raw else {
        return Ok(None);
    };
    if code != schema::code::ATTRS {
        return Ok(Some((id, schema::decode(code, value, context)?)));
    }
    if let Some(names) = lock(&backend.names).get(&id) {
        return Ok(Some((id, CachedValue::Attrs(names.clone()))));
    }
    let value: Option<String> = conn
        .prepare_cached("select value from Attributes where id = ?1")
        .and_then(|mut stmt| stmt.query_row(params![id], |r| r.get(0)))
        .map_err(|e| sql_err("reading attribute names", e))?;
    let decoded = schema::decode(code, value, context)?;
    if let CachedValue::Attrs(names) = &decoded {
        let mut memo = lock(&backend.names);
        if memo.len() >= NAMES_MEMO {
            memo.clear();
        }
        memo.insert(id, names.clone());
    }
    Ok(Some((id, decoded)))
}

// ----- opening, checking, setting aside ------------------------------------

fn now_nanos() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

fn sidecar(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// Renames the database and its WAL/SHM files to `*.corrupt-<nanos>`.
fn set_aside(path: &Path) {
    let stamp = now_nanos();
    for suffix in ["", "-wal", "-shm"] {
        let from = sidecar(path, suffix);
        if !from.exists() {
            continue;
        }
        let to = sidecar(path, &format!("{suffix}.corrupt-{stamp}"));
        match std::fs::rename(&from, &to) {
            Ok(()) => {
                tracing::warn!(from = %from.display(), to = %to.display(), "set aside damaged eval cache file")
            }
            Err(e) => {
                tracing::error!(error = %e, path = %from.display(), "cannot set aside damaged eval cache file; removing it");
                if let Err(e) = std::fs::remove_file(&from) {
                    tracing::error!(error = %e, path = %from.display(), "cannot remove damaged eval cache file");
                }
            }
        }
    }
}

fn configure(conn: &Connection, options: &CacheOptions, path: &Path) -> Result<(), CacheError> {
    let sql_err = |op, source| CacheError::Sqlite {
        op,
        path: path.to_owned(),
        source,
    };
    conn.busy_timeout(options.busy_timeout)
        .map_err(|e| sql_err("setting busy timeout", e))?;
    let mode: String = conn
        .query_row("pragma journal_mode = wal", [], |r| r.get(0))
        .map_err(|e| sql_err("enabling WAL", e))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(CacheError::Corrupt {
            path: path.to_owned(),
            reason: format!("journal mode is {mode}, not wal"),
        });
    }
    conn.pragma_update(None, "synchronous", "normal")
        .map_err(|e| sql_err("setting synchronous", e))?;
    Ok(())
}

/// Integrity + schema check; creates the schema in an empty database.
/// `Ok(false)`: the file is a healthy database of another schema version.
fn check_or_create(conn: &Connection, path: &Path, create: bool) -> Result<bool, CacheError> {
    let sql_err = |op, source| CacheError::Sqlite {
        op,
        path: path.to_owned(),
        source,
    };
    let verdict: String = conn
        .query_row("pragma quick_check", [], |r| r.get(0))
        .map_err(|e| sql_err("running quick_check", e))?;
    if verdict != "ok" {
        return Err(CacheError::Corrupt {
            path: path.to_owned(),
            reason: format!("quick_check: {verdict}"),
        });
    }
    let version: u32 = conn
        .query_row("pragma user_version", [], |r| r.get(0))
        .map_err(|e| sql_err("reading user_version", e))?;
    let tables: i64 = conn
        .query_row("select count(*) from sqlite_schema", [], |r| r.get(0))
        .map_err(|e| sql_err("reading schema", e))?;
    if version == 0 && tables == 0 {
        if !create {
            return Err(CacheError::Corrupt {
                path: path.to_owned(),
                reason: "database is empty".into(),
            });
        }
        conn.execute_batch(&format!(
            "begin; {} pragma user_version = {SCHEMA_VERSION}; commit;",
            schema::CREATE
        ))
        .map_err(|e| sql_err("creating schema", e))?;
        return Ok(true);
    }
    if version != SCHEMA_VERSION {
        return Ok(false);
    }
    let mut stmt = conn
        .prepare("select name from pragma_table_info('Attributes') order by cid")
        .map_err(|e| sql_err("reading table info", e))?;
    let columns = stmt
        .query_map([], |r| r.get::<_, String>(0))
        .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
        .map_err(|e| sql_err("reading table info", e))?;
    if columns != schema::COLUMNS {
        return Err(CacheError::Corrupt {
            path: path.to_owned(),
            reason: format!(
                "Attributes has columns {columns:?}, expected {:?}",
                schema::COLUMNS
            ),
        });
    }
    Ok(true)
}

/// Opens the writer connection, checking the file; on damage or a foreign
/// schema version the file is set aside (or, for a version mismatch, removed)
/// and recreated once.
fn open_writer_conn(
    path: &Path,
    options: &CacheOptions,
    counters: &Counters,
) -> Result<Connection, CacheError> {
    let attempt = || -> Result<(Connection, bool), CacheError> {
        let conn = Connection::open(path).map_err(|source| CacheError::Sqlite {
            op: "opening",
            path: path.to_owned(),
            source,
        })?;
        configure(&conn, options, path)?;
        let current = check_or_create(&conn, path, true)?;
        Ok((conn, current))
    };
    match attempt() {
        Ok((conn, true)) => return Ok(conn),
        Ok((conn, false)) => {
            drop(conn);
            tracing::info!(path = %path.display(), "eval cache has another schema version; recreating it");
            for suffix in ["", "-wal", "-shm"] {
                let f = sidecar(path, suffix);
                if f.exists() {
                    std::fs::remove_file(&f).map_err(|source| CacheError::Io {
                        op: "removing outdated cache",
                        path: f,
                        source,
                    })?;
                }
            }
        }
        Err(e) if !e.is_corruption() => return Err(e),
        Err(e) => {
            tracing::error!(error = %e, "eval cache database failed its check; setting it aside");
            set_aside(path);
            bump(&counters.rebuilds, 1);
        }
    }
    let (conn, current) = attempt()?;
    if !current {
        return Err(CacheError::Corrupt {
            path: path.to_owned(),
            reason: "fresh database has a foreign schema version".into(),
        });
    }
    Ok(conn)
}

fn open_backend(
    path: &Path,
    generation: u64,
    options: &CacheOptions,
    counters: &Arc<Counters>,
) -> Result<Backend, CacheError> {
    let lock_path = sidecar(path, ".lock");
    let lock_file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|source| CacheError::Io {
            op: "opening lock file",
            path: lock_path.clone(),
            source,
        })?;
    let writable = match lock_file.try_lock() {
        Ok(()) => true,
        Err(std::fs::TryLockError::WouldBlock) => false,
        Err(std::fs::TryLockError::Error(source)) => {
            return Err(CacheError::Io {
                op: "locking",
                path: lock_path,
                source,
            });
        }
    };

    let (writer_conn, next_id) = if writable {
        let conn = open_writer_conn(path, options, counters)?;
        let max: i64 = conn
            .query_row("select coalesce(max(id), 0) from Attributes", [], |r| {
                r.get(0)
            })
            .map_err(|source| CacheError::Sqlite {
                op: "reading max id",
                path: path.to_owned(),
                source,
            })?;
        (Some(conn), max + 1)
    } else {
        tracing::info!(path = %path.display(), "eval cache is locked by another process; opening read-only");
        (None, 1)
    };

    let busy = options.busy_timeout;
    let manager = SqliteConnectionManager::file(path).with_init(move |c| {
        c.busy_timeout(busy)?;
        c.pragma_update(None, "query_only", true)
    });
    let pool = Pool::builder()
        .max_size(options.readers.max(1))
        .min_idle(Some(0))
        .connection_timeout(options.pool_timeout)
        .build(manager)
        .map_err(|source| CacheError::Pool {
            path: path.to_owned(),
            source,
        })?;
    if !writable {
        // Check the database we are about to trust (we may not repair it).
        let conn = pool.get().map_err(|source| CacheError::Pool {
            path: path.to_owned(),
            source,
        })?;
        if !check_or_create(&conn, path, false)? {
            return Err(CacheError::Corrupt {
                path: path.to_owned(),
                reason: "foreign schema version".into(),
            });
        }
    }

    let pending = Arc::new(Mutex::new(Pending {
        rows: HashMap::new(),
        next_id,
        next_seq: 0,
        count: 0,
        removed_epoch: 0,
        fresh_from: next_id,
        fresh: HashMap::new(),
        fresh_count: 0,
    }));
    let broken = Arc::new(AtomicBool::new(false));
    let (sender, writer) = match writer_conn {
        Some(conn) => {
            let (tx, rx) = mpsc::channel();
            let ctx = WriterCtx {
                path: path.to_owned(),
                options: options.clone(),
                pending: pending.clone(),
                counters: counters.clone(),
                broken: broken.clone(),
            };
            let handle = std::thread::Builder::new()
                .name("eval-cache-writer".into())
                .spawn(move || writer_loop(conn, rx, ctx))
                .map_err(|source| CacheError::Io {
                    op: "spawning writer thread for",
                    path: path.to_owned(),
                    source,
                })?;
            (Some(tx), Some(handle))
        }
        None => (None, None),
    };
    Ok(Backend {
        generation,
        path: path.to_owned(),
        pool,
        pending,
        sender: Mutex::new(sender),
        writer: Mutex::new(writer),
        broken,
        names: Mutex::new(HashMap::new()),
        _lock: writable.then_some(lock_file),
    })
}

// ----- the writer thread ---------------------------------------------------

struct WriterCtx {
    path: PathBuf,
    options: CacheOptions,
    pending: Arc<Mutex<Pending>>,
    counters: Arc<Counters>,
    broken: Arc<AtomicBool>,
}

const UPSERT: &str = "insert into Attributes (id, parent, name, type, value, context) values (?1, ?2, ?3, ?4, ?5, ?6)
     on conflict (parent, name) do update set type = excluded.type, value = excluded.value, context = excluded.context
     where excluded.type != 0";

fn writer_loop(mut conn: Connection, rx: Receiver<Msg>, ctx: WriterCtx) {
    let mut first_error: Option<String> = None;
    let mut disconnected = false;
    while !disconnected {
        let Ok(first) = rx.recv() else { break };
        let mut batch: Vec<Vec<Row>> = Vec::new();
        let mut rows = 0usize;
        let mut flushes = Vec::new();
        let deadline = Instant::now() + ctx.options.batch_delay;
        let mut next = Some(first);
        loop {
            match next.take() {
                Some(Msg::Write(group)) => {
                    rows += group.len();
                    batch.push(group);
                }
                Some(Msg::Flush(ack)) => flushes.push(ack),
                None => {}
            }
            if !flushes.is_empty() || rows >= ctx.options.batch_rows {
                break;
            }
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            match rx.recv_timeout(deadline - now) {
                Ok(m) => next = Some(m),
                Err(RecvTimeoutError::Timeout) => break,
                Err(RecvTimeoutError::Disconnected) => {
                    disconnected = true;
                    break;
                }
            }
        }
        if !batch.is_empty() {
            if let Err(reason) = commit(&mut conn, &batch, &ctx) {
                first_error.get_or_insert(reason);
            }
            let mut pending = lock(&ctx.pending);
            pending.removed_epoch += 1;
            for row in batch.iter().flatten() {
                remove_pending(&mut pending, &ctx.counters, row.parent, &row.name, row.seq);
            }
        }
        for ack in flushes {
            let _ = ack.send(first_error.take().map_or(Ok(()), Err));
        }
    }
    if let Err(e) = conn.close() {
        tracing::warn!(error = %e.1, path = %ctx.path.display(), "closing eval cache writer connection");
    }
}

fn commit(conn: &mut Connection, batch: &[Vec<Row>], ctx: &WriterCtx) -> Result<(), String> {
    let rows: usize = batch.iter().map(Vec::len).sum();
    if ctx.broken.load(Ordering::Acquire) {
        bump(&ctx.counters.dropped_writes, rows as u64);
        return Err("database is being rebuilt; writes dropped".into());
    }
    let result = (|| -> rusqlite::Result<()> {
        let tx = conn.transaction()?;
        {
            let mut stmt = tx.prepare_cached(UPSERT)?;
            for row in batch.iter().flatten() {
                let e = schema::encode(&row.value);
                stmt.execute(params![
                    row.id, row.parent, &*row.name, e.code, e.value, e.context
                ])?;
            }
        }
        tx.commit()
    })();
    match result {
        Ok(()) => {
            bump(&ctx.counters.rows_committed, rows as u64);
            bump(&ctx.counters.batches_committed, 1);
            tracing::trace!(rows, "eval cache batch committed");
            Ok(())
        }
        Err(e) => {
            bump(&ctx.counters.write_errors, rows as u64);
            tracing::error!(error = %e, rows, path = %ctx.path.display(), "eval cache batch failed to commit");
            if is_corrupt_sqlite(&e) {
                ctx.broken.store(true, Ordering::Release);
            }
            Err(format!("committing {rows} rows: {e}"))
        }
    }
}

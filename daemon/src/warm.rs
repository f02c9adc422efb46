//! Warm flakes: locked, called flakes kept alive between requests, so that a repeated query is
//! answered from values that are already evaluated.
//!
//! Each warm flake is an [`eval::WarmFlake`]: one evaluator thread owning the flake's values
//! (the evaluator is not `Send`). This module decides *which* warm flake answers a request and
//! whether it may: the key is the canonical flake reference (relative references resolved
//! against the client's cwd) plus every setting that can change an answer.
//!
//! Invariants:
//! - a query never answers from a stale tree: a local flake (`path:`, `git+file:`, a directory)
//!   is watched with inotify from *before* it is read ([`TreeWatch`]); any write, creation,
//!   deletion, rename or attribute change below its root since then makes the next query open it
//!   afresh. The one exception is the short window after a restart while the start-up
//!   pre-arming is still walking a remembered tree for its watch: an entry made then keys the
//!   tree again (file metadata, see [`Freshness::Snapshot`]) on every check until it adopts the
//!   pre-armed watch, and records nothing it evaluates unless that watch vouches for it.
//!   Unlocked remote references are re-resolved after `tarball-ttl` (an hour, Nix's
//!   default) as Nix does; locked ones (with `rev` or `narHash`) never change;
//! - at most one open of a given key runs at a time (others wait for it and share the result);
//! - the memory of warm flakes stays within the configured budget: least-recently-used flakes
//!   are dropped whole (their thread ends and their values, cycles included, are freed) — a
//!   request still using a dropped flake finishes first.

use std::collections::{HashMap, HashSet};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use flaked_cache::{EvalCache, WarmLru};
use flaked_eval::api as eval;
use flaked_store::fetchers::{FlakeRef, InputKind, InputSettings, ParseOptions};

use crate::evalcache::{self, Armed, DiskCache, Identity, LocalSource};
use crate::watch::TreeWatch;

/// How long an unlocked remote reference stays resolved (Nix's `tarball-ttl` default).
const REMOTE_TTL: Duration = Duration::from_secs(3600);

/// What identifies one warm flake.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct WarmKey {
    /// The canonical flake reference (an absolute URL such as `git+file:///x?dir=y`).
    pub flake: String,
    /// A hash of the settings that can change answers (system, purity, environment, …).
    settings: u64,
}

struct Live {
    /// The opened flake; `None` while every query was answered from the eval cache.
    flake: Option<Arc<eval::WarmFlake>>,
    /// The eval cache of the flake as it was when this entry was made (see [`evalcache`]).
    cache: Option<EvalCache>,
    /// Whether what the opened flake evaluates may be recorded in `cache` (its opening printed
    /// nothing but warnings that every open repeats).
    cache_writable: bool,
    /// Fragments whose answer this entry already recorded in `cache` (not noted again).
    recorded: HashSet<String>,
    /// Search indexes of this entry's flake by roots (see [`crate::search`]), with the warnings
    /// to print with a search answered from them.
    search: HashMap<String, (Arc<eval::SearchIndex>, Vec<String>)>,
    /// Answers of the opened flake, replayed without asking its evaluator thread (see
    /// [`Answers`]).
    answers: Answers,
    /// What vouches for a local entry's tree.
    freshness: Freshness,
    /// The entry's local tree and the identity its eval cache was opened with (what a watch in
    /// `freshness` vouches for, handed to the next daemon at shutdown).
    tree: Option<(LocalSource, Identity)>,
    local: bool,
    locked: bool,
    opened: Instant,
}

impl Live {
    fn fresh(&mut self) -> bool {
        if !self.local {
            return self.locked || self.opened.elapsed() < REMOTE_TTL;
        }
        match &mut self.freshness {
            Freshness::Watch(w) => !w.changed(),
            Freshness::Snapshot(s) => {
                let (fresh, watch) = s.check();
                if let Some(w) = watch {
                    self.freshness = Freshness::Watch(w);
                }
                fresh
            }
            Freshness::None => false,
        }
    }

    /// Whether an inotify watch armed before this entry's identity was taken vouches that the
    /// tree did not change since: what the entry evaluates may then be recorded.
    fn watched_unchanged(&mut self) -> bool {
        match &mut self.freshness {
            Freshness::Watch(w) => !w.changed(),
            Freshness::Snapshot(_) | Freshness::None => false,
        }
    }
}

/// How a local warm entry knows that its tree did not change.
enum Freshness {
    /// An inotify watch armed before the entry's identity was taken (or before it was read).
    Watch(TreeWatch),
    /// Made while the start-up pre-arming was still walking the tree for its watch, from the
    /// tree's identity taken at once; see [`Snapshot`].
    Snapshot(Snapshot),
    /// Nothing vouches for the tree (it could not be watched): every check says "changed".
    None,
}

/// The identity of a tree taken without a watch, right after a restart: each check keys the
/// tree again by file metadata (tens of milliseconds for 20,000 files, against the hundreds a
/// watch of every directory costs to arm), until the pre-armed watch is ready and its identity
/// is the same — then the watch takes over.
struct Snapshot {
    identity: Identity,
    src: LocalSource,
    disk: Arc<DiskCache>,
}

impl Snapshot {
    /// Whether the tree still has this identity, and the watch to switch to: the pre-armed one
    /// when it is ready and agrees, or — once there is no pre-armed watch to wait for (taken by
    /// another entry, or failed) — one armed now, so that no entry keys its tree on every query
    /// for longer than the start-up pre-arming takes.
    fn check(&self) -> (bool, Option<TreeWatch>) {
        match self.disk.prearmed(&self.src, false) {
            Armed::Ready(watch, identity) => {
                let same = identity == self.identity;
                (same, same.then_some(watch))
            }
            Armed::Pending => {
                let now = self.disk.identity_now(&self.src);
                (now.is_ok_and(|id| id == self.identity), None)
            }
            Armed::No => match self.watch() {
                Some(watch) => (true, Some(watch)),
                None => (false, None),
            },
        }
    }

    /// The watch that vouches for this identity from now on: the pre-armed one (waited for when
    /// it is being armed), else one armed now; `None` when the tree cannot be watched or its
    /// identity changed.
    fn watch(&self) -> Option<TreeWatch> {
        let (watch, identity) = watch_now(self.src.root(), Some((&self.disk, &self.src))).ok()?;
        let identity = match identity {
            Some(identity) => identity,
            None => self.disk.identity(&self.src).ok()?,
        };
        (identity == self.identity).then_some(watch)
    }
}

/// A watch on the tree at `root` for an entry that needs one now: the start-up pre-arming's
/// (waited for while it is being armed), with the identity taken after it; else one armed now
/// (the caller takes the identity after it).
fn watch_now(
    root: &std::path::Path,
    disk_src: Option<(&Arc<DiskCache>, &LocalSource)>,
) -> std::io::Result<(TreeWatch, Option<Identity>)> {
    if let Some((disk, src)) = disk_src
        && let Armed::Ready(watch, identity) = disk.prearmed(src, true)
    {
        return Ok((watch, Some(identity)));
    }
    Ok((TreeWatch::new(root)?, None))
}

/// The printed answers of an entry, by fragment and output format: its opened flake's, and
/// those its eval cache gave before the flake was opened (the same database gives the same
/// answer while the entry is fresh).
///
/// A warm flake's values are immutable once forced, so the same query prints the same answer
/// again, except for what evaluating printed (traces print once): only answers whose evaluation
/// printed nothing are kept, and they carry the warnings `nix` repeats on every open. Bounded by
/// [`Answers::BUDGET`] bytes; dropped with their entry when the tree changes.
#[derive(Default)]
struct Answers {
    by_fragment: HashMap<String, Vec<(eval::OutputFormat, Arc<eval::EvalOutput>)>>,
    bytes: usize,
}

impl Answers {
    /// Bytes of answers one flake keeps at most.
    const BUDGET: usize = 16 << 20;

    fn get(&self, fragment: &str, output: eval::OutputFormat) -> Option<Arc<eval::EvalOutput>> {
        self.by_fragment
            .get(fragment)?
            .iter()
            .find(|(o, _)| *o == output)
            .map(|(_, a)| a.clone())
    }

    fn insert(&mut self, fragment: &str, output: eval::OutputFormat, answer: eval::EvalOutput) {
        let size = fragment.len()
            + answer.stdout.len()
            + answer.stderr.iter().map(String::len).sum::<usize>()
            + 64;
        if self.bytes + size > Self::BUDGET || self.get(fragment, output).is_some() {
            return;
        }
        self.bytes += size;
        self.by_fragment
            .entry(fragment.to_string())
            .or_default()
            .push((output, Arc::new(answer)));
    }
}

#[derive(Default)]
struct Slot {
    live: Mutex<Option<Live>>,
}

/// The daemon's warm flakes.
pub struct WarmSet {
    slots: Mutex<HashMap<WarmKey, Arc<Slot>>>,
    lru: Mutex<WarmLru<WarmKey>>,
    disk: Option<Arc<DiskCache>>,
    forbid_eval: bool,
    /// Answers replayed by [`WarmSet::replay`] since start.
    replays: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for WarmSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WarmSet")
            .field("flakes", &self.names())
            .finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A parsed installable: the canonical flake reference, its fragment, and what to watch.
struct Target {
    key_ref: String,
    fragment: String,
    watch_root: Option<PathBuf>,
    locked: bool,
    local: Option<LocalSource>,
}

#[allow(clippy::result_large_err)]
fn target(installable: &str, settings: &eval::EvalSettings) -> Result<Target, eval::Diagnostic> {
    let opts = ParseOptions {
        base_dir: Some(settings.cwd.clone()),
        ..ParseOptions::default()
    };
    let (flake_ref, fragment) = FlakeRef::parse_with_fragment(installable, &opts)
        .map_err(|e| eval::Diagnostic::plain(e.to_string()))?;
    let key_ref = flake_ref
        .to_url()
        .map(|u| u.to_string())
        .map_err(|e| eval::Diagnostic::plain(e.to_string()))?;
    let watch_root = match &flake_ref.input.kind {
        InputKind::Path(p) => Some(PathBuf::from(&p.path)),
        InputKind::Git(g) => g.url.strip_prefix("file://").map(PathBuf::from),
        _ => None,
    };
    let locked = watch_root.is_none() && flake_ref.input.is_locked(&InputSettings::default());
    Ok(Target {
        key_ref,
        fragment,
        watch_root,
        locked,
        local: LocalSource::of(&flake_ref),
    })
}

fn settings_hash(s: &eval::EvalSettings) -> u64 {
    let mut h = DefaultHasher::new();
    (
        s.pure,
        &s.system,
        &s.store_dir,
        &s.env,
        &s.nix_path,
        &s.flake_registry,
        &s.user_registry,
        s.write_lock_file,
        &s.override_inputs,
    )
        .hash(&mut h);
    h.finish()
}

/// Warnings that `nix` prints every time it opens a flake (not only the first time), replayed
/// when a warm flake answers.
fn repeats_on_every_open(line: &str) -> bool {
    line.starts_with("warning: Git tree '") && line.ends_with("' is dirty")
}

impl WarmSet {
    /// An empty set with a memory budget in bytes, answering from the eval caches in `disk` when
    /// given. With `forbid_eval` (a test mode) no flake is ever opened: every answer must come from
    /// a warm flake or the eval cache.
    /// The trees of recently used flakes are watched and keyed again on a thread of their own,
    /// so that their first query after a restart is answered without walking them.
    pub fn new(budget_bytes: u64, disk: Option<DiskCache>, forbid_eval: bool) -> WarmSet {
        let disk = disk.map(Arc::new);
        if let Some(d) = &disk {
            d.plan_prearm();
            let d = d.clone();
            let spawned = std::thread::Builder::new()
                .name("flaked-prearm".to_string())
                .spawn(move || d.prearm());
            if let Err(e) = spawned {
                tracing::warn!(error = %e, "cannot start pre-arming remembered flakes");
            }
        }
        WarmSet {
            slots: Mutex::new(HashMap::new()),
            lru: Mutex::new(WarmLru::new(budget_bytes)),
            disk,
            forbid_eval,
            replays: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Queries answered by [`WarmSet::replay`] since start.
    pub fn replays(&self) -> u64 {
        self.replays.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Counters of the eval caches on disk, and their total size in bytes.
    pub fn cache_stats(&self) -> Option<(flaked_cache::CacheStats, u64)> {
        self.disk.as_deref().map(|d| (d.stats(), d.disk_bytes()))
    }

    /// Commits pending eval-cache writes.
    pub fn flush(&self) {
        if let Some(d) = &self.disk {
            d.flush();
        }
    }

    /// The canonical references of the flakes kept warm now.
    pub fn names(&self) -> Vec<String> {
        let mut v: Vec<String> = lock(&self.slots)
            .iter()
            .filter(|(_, slot)| lock(&slot.live).as_ref().is_some_and(|l| l.flake.is_some()))
            .map(|(k, _)| k.flake.clone())
            .collect();
        v.sort();
        v.dedup();
        v
    }

    /// The warm flakes with their estimated memory, least recently used first.
    pub fn details(&self) -> Vec<(String, u64)> {
        let lru = lock(&self.lru);
        lru.keys_lru_first()
            .iter()
            .map(|k| (k.flake.clone(), lru.size_of(k).unwrap_or(0)))
            .collect()
    }

    /// The answer to `nix eval INSTALLABLE` when a fresh entry answered the very same query
    /// before (its opened flake, or its eval cache on disk); `None` when that is not known at
    /// once (the query then goes to [`WarmSet::eval`]). Never blocks on another request: an entry
    /// busy opening is not waited for.
    pub fn replay(
        &self,
        installable: &str,
        settings: &eval::EvalSettings,
        output: eval::OutputFormat,
    ) -> Option<eval::EvalOutput> {
        let t = target(installable, settings).ok()?;
        let key = WarmKey {
            flake: t.key_ref,
            settings: settings_hash(settings),
        };
        let slot = lock(&self.slots).get(&key)?.clone();
        let mut live = match slot.live.try_lock() {
            Ok(live) => live,
            Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return None,
        };
        let l = live.as_mut()?;
        let answer = l.answers.get(&t.fragment, output)?;
        // A snapshot's check keys the tree (a walk of its files): not on this async worker.
        if matches!(l.freshness, Freshness::Snapshot(_)) || !l.fresh() {
            return None;
        }
        drop(live);
        lock(&self.lru).touch(&key);
        self.replays
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Some((*answer).clone())
    }

    /// Keeps `answer` for [`WarmSet::replay`] if `slot` still holds the entry of `flake` and its
    /// tree did not change.
    fn keep_answer(
        &self,
        slot: &Slot,
        flake: &Arc<eval::WarmFlake>,
        fragment: &str,
        output: eval::OutputFormat,
        answer: &eval::EvalOutput,
    ) {
        let mut live = lock(&slot.live);
        let Some(l) = live.as_mut() else { return };
        if !l.flake.as_ref().is_some_and(|f| Arc::ptr_eq(f, flake)) || !l.fresh() {
            return;
        }
        let repeated: Vec<String> = flake
            .open_stderr()
            .iter()
            .filter(|w| repeats_on_every_open(w))
            .cloned()
            .collect();
        if answer.stderr == repeated {
            l.answers.insert(fragment, output, answer.clone());
        }
    }

    /// `nix eval INSTALLABLE`: answers from a warm flake, opening (locking, fetching, calling)
    /// it first when there is none or it is stale. Blocking.
    #[allow(clippy::result_large_err)]
    pub fn eval(
        &self,
        installable: &str,
        settings: &eval::EvalSettings,
        output: eval::OutputFormat,
    ) -> Result<eval::EvalOutput, eval::Diagnostic> {
        let t = target(installable, settings)?;
        let (key, slot) = self.slot(&t, settings);
        let mut live = lock(&slot.live);
        let l = self.refresh(&mut live, &t, settings, &key);
        // Before the flake is opened: what the eval cache answered before (`replay` did not get
        // the entry's lock), else the database — kept, so that the same query again is replayed
        // without it while the entry stays fresh.
        if l.flake.is_none()
            && let Some(out) = l
                .answers
                .get(&t.fragment, output)
                .map(|a| (*a).clone())
                .or_else(|| {
                    let out = evalcache::answer(
                        l.cache.as_ref()?,
                        &t.fragment,
                        &settings.system,
                        output,
                    )?;
                    l.answers.insert(&t.fragment, output, out.clone());
                    Some(out)
                })
        {
            drop(live);
            lock(&self.lru).touch(&key);
            return Ok(out);
        }
        let was_open = l.flake.is_some();
        let mut stderr = self.ensure_open(l, &t, settings, &key)?;
        let flake = l.flake.clone().expect("ensure_open opened the flake");
        let cache = l
            .cache
            .clone()
            .filter(|_| l.cache_writable && !l.recorded.contains(&t.fragment));
        drop(live);
        let result = match &cache {
            Some(_) => flake.eval_noted(&t.fragment, output, settings.interrupt.clone()),
            None => match &settings.interrupt {
                Some(flag) => flake.eval_interruptible(&t.fragment, output, flag.clone()),
                None => flake.eval(&t.fragment, output),
            }
            .map(|out| (out, Vec::new())),
        };
        self.account(&key, &flake);
        match result {
            Ok((mut out, notes)) => {
                let printed = !out.stderr.is_empty();
                // Only values whose evaluation printed nothing: a flake that never printed
                // anything since it was opened evaluated every value silently.
                if let Some(cache) = cache
                    && !flake.printed_since_open()
                    && self.mark_recorded(&slot, &t.fragment)
                {
                    evalcache::record(&cache, &notes);
                }
                stderr.append(&mut out.stderr);
                out.stderr = stderr;
                // What an answer printed the first time (opening warnings, traces) is not
                // printed again by the same query.
                if was_open && !printed {
                    self.keep_answer(&slot, &flake, &t.fragment, output, &out);
                }
                Ok(out)
            }
            Err(mut d) => {
                stderr.append(&mut d.log);
                d.log = stderr;
                Err(d)
            }
        }
    }

    /// Marks `fragment` as recorded in the entry of `slot`, unless its tree changed since the
    /// entry was made (an answer evaluated meanwhile may come from newer files than its
    /// fingerprint: not recorded). Returns whether the answer may be recorded.
    fn mark_recorded(&self, slot: &Slot, fragment: &str) -> bool {
        let mut live = lock(&slot.live);
        let Some(l) = live.as_mut() else {
            return false;
        };
        if l.local && !l.fresh() {
            return false;
        }
        l.recorded.insert(fragment.to_string());
        true
    }

    /// The search index of `installable`'s roots (see [`crate::search`]) and the warnings to
    /// print with its answer: kept with the fresh warm entry, else read from the eval cache,
    /// else built by the warm flake (opened if needed) and kept — and recorded in the eval cache
    /// when the flake's evaluation printed nothing. The entry is not locked while building.
    /// Blocking.
    #[allow(clippy::result_large_err)]
    pub fn search_index(
        &self,
        installable: &str,
        settings: &eval::EvalSettings,
    ) -> Result<(Arc<eval::SearchIndex>, Vec<String>), eval::Diagnostic> {
        let t = target(installable, settings)?;
        let roots = crate::search::roots_key(&t.fragment, &settings.system);
        let (key, slot) = self.slot(&t, settings);
        let mut live = lock(&slot.live);
        let l = self.refresh(&mut live, &t, settings, &key);
        let known = l.search.get(&roots).cloned().or_else(|| {
            let (index, warnings) = crate::search::load(l.cache.as_ref()?, &roots)?;
            let found = (Arc::new(index), warnings);
            l.search.insert(roots.clone(), found.clone());
            Some(found)
        });
        if let Some(found) = known {
            drop(live);
            lock(&self.lru).touch(&key);
            return Ok(found);
        }
        let mut stderr = self.ensure_open(l, &t, settings, &key)?;
        let flake = l.flake.clone().expect("ensure_open opened the flake");
        let cache = l.cache.clone().filter(|_| l.cache_writable);
        drop(live);
        let started = std::time::Instant::now();
        let result = flake.search_index(&t.fragment);
        tracing::debug!(elapsed = ?started.elapsed(), "walked the packages for a search index");
        self.account(&key, &flake);
        let (index, mut log) = match result {
            Ok(built) => built,
            Err(mut d) => {
                stderr.append(&mut d.log);
                d.log = stderr;
                return Err(d);
            }
        };
        let index = Arc::new(index);
        let mut live = lock(&slot.live);
        if let Some(l) = live.as_mut()
            && l.flake.as_ref().is_some_and(|f| Arc::ptr_eq(f, &flake))
            && l.fresh()
        {
            if let Some(cache) = cache
                && !flake.printed_since_open()
            {
                crate::search::store(&cache, &roots, &index);
            }
            let repeated = flake
                .open_stderr()
                .iter()
                .filter(|w| repeats_on_every_open(w))
                .cloned()
                .collect();
            l.search.insert(roots, (index.clone(), repeated));
        }
        drop(live);
        stderr.append(&mut log);
        Ok((index, stderr))
    }

    /// The attributes of the set at `FRAGMENT` + `attr_path` (an exact path from the flake's
    /// outputs; no default prefixes), for editors. Blocking.
    #[allow(clippy::result_large_err)]
    pub fn list_attrs(
        &self,
        installable: &str,
        settings: &eval::EvalSettings,
        attr_path: &str,
    ) -> Result<Vec<eval::AttrInfo>, eval::Diagnostic> {
        self.with_flake(installable, settings, |flake, fragment| {
            let path: Vec<String> = fragment
                .split('.')
                .chain(attr_path.split('.'))
                .filter(|p| !p.is_empty())
                .map(str::to_string)
                .collect();
            flake.list_attrs(&path)
        })
        .map(|(attrs, _)| attrs)
    }

    /// The derivation an installable denotes for `nix build`: its `.drv` store path and the outputs
    /// to build by default (see [`eval::WarmFlake::default_outputs`]), with the warnings to print.
    /// Blocking.
    #[allow(clippy::result_large_err)]
    pub fn derivation(
        &self,
        installable: &str,
        settings: &eval::EvalSettings,
    ) -> Result<(String, Vec<String>, Vec<String>), eval::Diagnostic> {
        let ((drv, outputs), stderr) =
            self.with_flake(installable, settings, |flake, fragment| {
                // No fragment means the default package, which `default` reaches through the same
                // `packages.<system>.` prefix.
                let base = if fragment.is_empty() {
                    "default"
                } else {
                    fragment
                };
                let raw = |attr: &str| -> Result<String, eval::Diagnostic> {
                    let out = flake.eval(&format!("{base}.{attr}"), eval::OutputFormat::Raw)?;
                    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
                };
                Ok((raw("drvPath")?, flake.default_outputs(base)?))
            })?;
        Ok((drv, outputs, stderr))
    }

    /// Runs `f` on the warm flake of `installable` (opened if needed) with the installable's
    /// fragment, then accounts the flake's memory. The warnings printed while opening come back
    /// beside the answer, or in front of the error's log.
    #[allow(clippy::result_large_err)]
    fn with_flake<T>(
        &self,
        installable: &str,
        settings: &eval::EvalSettings,
        f: impl FnOnce(&eval::WarmFlake, &str) -> Result<T, eval::Diagnostic>,
    ) -> Result<(T, Vec<String>), eval::Diagnostic> {
        let t = target(installable, settings)?;
        let (flake, key, mut stderr) = self.flake(&t, settings)?;
        let result = f(&flake, &t.fragment);
        self.account(&key, &flake);
        match result {
            Ok(v) => Ok((v, stderr)),
            Err(mut d) => {
                stderr.append(&mut d.log);
                d.log = stderr;
                Err(d)
            }
        }
    }

    /// The slot of `t`'s flake under `settings`.
    fn slot(&self, t: &Target, settings: &eval::EvalSettings) -> (WarmKey, Arc<Slot>) {
        let key = WarmKey {
            flake: t.key_ref.clone(),
            settings: settings_hash(settings),
        };
        let slot = lock(&self.slots).entry(key.clone()).or_default().clone();
        (key, slot)
    }

    /// Makes `live` a fresh entry for `t`: kept if its tree did not change (or its remote
    /// reference is still valid), otherwise replaced by a new entry — watched from before its
    /// eval cache is fingerprinted, not opened yet.
    fn refresh<'a>(
        &self,
        live: &'a mut Option<Live>,
        t: &Target,
        settings: &eval::EvalSettings,
        key: &WarmKey,
    ) -> &'a mut Live {
        if live.as_mut().is_some_and(|l| !l.fresh()) {
            tracing::debug!(flake = %key.flake, "warm flake is stale; opening it again");
            // Drop the stale flake now: its memory is freed before the new one is opened.
            *live = None;
            lock(&self.lru).remove(key);
        }
        live.get_or_insert_with(|| {
            let (freshness, cache, tree) = self.arm(t, settings);
            Live {
                flake: None,
                cache,
                cache_writable: false,
                recorded: HashSet::new(),
                search: HashMap::new(),
                answers: Answers::default(),
                freshness,
                tree,
                local: t.watch_root.is_some(),
                locked: t.locked,
                opened: Instant::now(),
            }
        })
    }

    /// What vouches for a new entry of `t`'s tree, and its eval cache as the tree is now. A tree
    /// pre-armed at start-up comes with its watch and identity; one the pre-arming is still
    /// walking is keyed at once without waiting for the watch (see [`Snapshot`]); any other is
    /// watched now, before its identity is taken and before it is read, so that no change
    /// between the read and the next query is missed.
    fn arm(
        &self,
        t: &Target,
        settings: &eval::EvalSettings,
    ) -> (
        Freshness,
        Option<EvalCache>,
        Option<(LocalSource, Identity)>,
    ) {
        let Some(root) = &t.watch_root else {
            return (Freshness::None, None, None);
        };
        let disk_src = self.disk.as_ref().zip(t.local.as_ref());
        let prearmed = disk_src.map(|(disk, src)| (disk, src, disk.prearmed(src, false)));
        let snapshot = match prearmed {
            Some((_, _, Armed::Ready(watch, id))) => Some((Freshness::Watch(watch), Some(id))),
            Some((disk, src, Armed::Pending)) if DiskCache::applies(settings) => {
                disk.identity_now(src).ok().map(|id| {
                    let snapshot = Snapshot {
                        identity: id.clone(),
                        src: src.clone(),
                        disk: disk.clone(),
                    };
                    (Freshness::Snapshot(snapshot), Some(id))
                })
            }
            _ => None,
        };
        let (freshness, identity) = snapshot.unwrap_or_else(|| match watch_now(root, disk_src) {
            Ok((watch, id)) => (Freshness::Watch(watch), id),
            Err(e) => {
                tracing::warn!(root = %root.display(), error = %e,
                    "cannot watch the flake; it will be opened again on every query");
                (Freshness::None, None)
            }
        });
        let cache_src = disk_src
            .filter(|_| DiskCache::applies(settings) && !matches!(freshness, Freshness::None));
        let Some((disk, src)) = cache_src else {
            return (freshness, None, None);
        };
        // Taken here rather than inside `open` so that the entry knows what its watch vouches for.
        let identity = match identity {
            Some(id) => id,
            None => match disk.identity(src) {
                Ok(id) => id,
                Err(e) => {
                    tracing::debug!(root = %src.root().display(), error = %e, "no eval cache for this flake");
                    return (freshness, None, None);
                }
            },
        };
        let cache = disk.open(src, &t.key_ref, settings, identity.clone());
        (freshness, cache, Some((src.clone(), identity)))
    }

    /// Hands the watches of warm entries whose trees did not change to a keeper for the next
    /// daemon (see [`crate::keeper`]), with those the start-up pre-arming armed for nobody yet.
    /// At shutdown: the entries lose their watches and count as stale afterwards.
    pub fn hand_over_watches(&self) {
        let Some(disk) = &self.disk else {
            return;
        };
        let slots: Vec<Arc<Slot>> = lock(&self.slots).values().cloned().collect();
        let mut trees = Vec::new();
        for slot in slots {
            let mut live = lock(&slot.live);
            if let Some(l) = live.as_mut()
                && matches!(l.freshness, Freshness::Watch(_))
                && let Some((src, identity)) = l.tree.take()
                && let Freshness::Watch(w) = std::mem::replace(&mut l.freshness, Freshness::None)
            {
                trees.push((src, identity, w));
            }
        }
        disk.hand_over(trees);
    }

    /// Opens the flake of the fresh entry `l` unless it is open; returns the warnings to print
    /// before its answer (everything its opening printed the first time; afterwards only what
    /// `nix` prints on every open).
    #[allow(clippy::result_large_err)]
    fn ensure_open(
        &self,
        l: &mut Live,
        t: &Target,
        settings: &eval::EvalSettings,
        key: &WarmKey,
    ) -> Result<Vec<String>, eval::Diagnostic> {
        if let Some(flake) = &l.flake {
            lock(&self.lru).touch(key);
            return Ok(flake
                .open_stderr()
                .iter()
                .filter(|l| repeats_on_every_open(l))
                .cloned()
                .collect());
        }
        if self.forbid_eval {
            return Err(eval::Diagnostic::plain(format!(
                "evaluation is forbidden in this daemon (FLAKED_FORBID_EVAL is set) and the eval \
                 cache cannot answer this query of '{}'",
                t.key_ref
            )));
        }
        // Reading the flake needs a watch armed from before (else what it evaluates could come
        // from files newer than the cache's fingerprint): take over the pre-armed one now.
        if let Freshness::Snapshot(s) = &l.freshness
            && let Some(w) = s.watch()
        {
            l.freshness = Freshness::Watch(w);
        }
        // The flake outlives this request, so it must not keep this request's interrupt flag
        // (an interrupted request would poison every later one): an open that outlasts its
        // request's deadline finishes in the background and serves the next query.
        let mut open_settings = settings.clone();
        open_settings.interrupt = None;
        let started = std::time::Instant::now();
        let flake = Arc::new(eval::WarmFlake::open(&t.key_ref, open_settings)?);
        tracing::debug!(flake = %t.key_ref, elapsed = ?started.elapsed(), "opened a flake (fetched, locked, outputs called)");
        let stderr = flake.open_stderr().to_vec();
        if l.cache.is_some()
            && stderr.iter().all(|w| repeats_on_every_open(w))
            && l.watched_unchanged()
            && let Some(cache) = &l.cache
        {
            evalcache::record_open(cache, &stderr);
            l.cache_writable = true;
        }
        l.flake = Some(flake);
        l.opened = Instant::now();
        Ok(stderr)
    }

    /// The warm flake for `t`, opened if needed, with the warnings to print before its answer.
    #[allow(clippy::result_large_err, clippy::type_complexity)]
    fn flake(
        &self,
        t: &Target,
        settings: &eval::EvalSettings,
    ) -> Result<(Arc<eval::WarmFlake>, WarmKey, Vec<String>), eval::Diagnostic> {
        let (key, slot) = self.slot(t, settings);
        let mut live = lock(&slot.live);
        let l = self.refresh(&mut live, t, settings, &key);
        let stderr = self.ensure_open(l, t, settings, &key)?;
        let flake = l.flake.clone().expect("ensure_open opened the flake");
        Ok((flake, key, stderr))
    }

    /// Records the flake's current size and drops least-recently-used flakes over the budget.
    fn account(&self, key: &WarmKey, flake: &eval::WarmFlake) {
        let size = flake.approx_memory() as u64;
        let evicted = {
            let mut lru = lock(&self.lru);
            if lru.contains(key) {
                lru.resize(key, size)
            } else {
                lru.insert(key.clone(), size)
            }
        };
        for k in evicted {
            let slot = lock(&self.slots).get(&k).cloned();
            if let Some(slot) = slot {
                tracing::info!(flake = %k.flake, "dropping a warm flake to stay within the memory budget");
                *lock(&slot.live) = None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A remembered `path:` tree below a fresh cache directory, and a restarted daemon's cache
    /// with the tree queued for pre-arming but not armed yet.
    fn restarted(dir: &std::path::Path) -> (LocalSource, Arc<DiskCache>) {
        let root = dir.join("flake");
        std::fs::create_dir_all(&root).expect("mkdir");
        std::fs::write(root.join("flake.nix"), "{ outputs = _: { n = 1; }; }").expect("write");
        let flake_ref = FlakeRef::parse(
            &format!("path:{}", root.display()),
            &ParseOptions::default(),
        )
        .expect("flake reference");
        let src = LocalSource::of(&flake_ref).expect("a local source");
        let settings = eval::EvalSettings {
            pure: true,
            ..eval::EvalSettings::default()
        };
        let cache = dir.join("cache");
        // Opening the cache remembers the tree for the next start.
        let before = DiskCache::new(&cache);
        let identity = before.identity(&src).expect("identity");
        let _ = before.open(&src, "path:x", &settings, identity);
        let disk = Arc::new(DiskCache::new(&cache));
        disk.plan_prearm();
        assert!(matches!(disk.prearmed(&src, false), Armed::Pending));
        (src, disk)
    }

    /// An entry's snapshot of the tree as it is now.
    fn snapshot_now(src: &LocalSource, disk: &Arc<DiskCache>) -> Snapshot {
        Snapshot {
            identity: disk.identity(src).expect("identity"),
            src: src.clone(),
            disk: disk.clone(),
        }
    }

    #[test]
    fn a_snapshot_follows_edits_until_the_prearmed_watch_takes_over() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (src, disk) = restarted(dir.path());
        let snapshot = snapshot_now(&src, &disk);
        let file = dir.path().join("flake/flake.nix");
        assert!(matches!(snapshot.check(), (true, None)));
        std::fs::write(&file, "{ outputs = _: { n = 2; }; }").expect("write");
        assert!(
            matches!(snapshot.check(), (false, None)),
            "an edit is seen without a watch"
        );
        std::fs::write(&file, "{ outputs = _: { n = 1; }; }").expect("write");
        assert!(
            matches!(snapshot.check(), (true, None)),
            "identity is the content"
        );

        disk.prearm();
        let (fresh, watch) = snapshot.check();
        assert!(fresh);
        let mut watch = watch.expect("the pre-armed watch is adopted");
        assert!(!watch.changed());
        std::fs::write(&file, "{ outputs = _: { n = 3; }; }").expect("write");
        assert!(watch.changed());
    }

    #[test]
    fn a_snapshot_gets_a_watch_before_the_flake_is_read_or_none_when_edited() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (src, disk) = restarted(dir.path());
        let snapshot = snapshot_now(&src, &disk);
        // Still queued: the query arms the tree itself (and the pre-arming skips it).
        let mut watch = snapshot.watch().expect("armed now, identity unchanged");
        assert!(!watch.changed());
        disk.prearm();
        assert!(matches!(disk.prearmed(&src, false), Armed::No));

        // Another entry of the same tree, its pre-armed watch taken: it arms one of its own.
        let other = snapshot_now(&src, &disk);
        let (fresh, own) = other.check();
        assert!(fresh);
        let mut own = own.expect("a watch armed by the check");

        std::fs::write(
            dir.path().join("flake/flake.nix"),
            "{ outputs = _: { n = 2; }; }",
        )
        .expect("write");
        assert!(watch.changed() && own.changed());
        assert!(
            snapshot.watch().is_none(),
            "the tree is no longer the snapshot's"
        );
        assert!(matches!(other.check(), (false, None)));
    }
}

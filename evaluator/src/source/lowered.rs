//! The thread's cache of lowered sources, kept across evaluations.
//!
//! Why: the daemon runs evaluation after evaluation on the same pooled threads, and most of them
//! read the same files (nixpkgs' `lib`: a module-system evaluation reads ~100 files, and parsing
//! and lowering them was a third of its instructions). Lowering is a pure function of the source
//! bytes and a few settings, so its result can be reused by any later evaluation on the thread.
//!
//! Invariants:
//! - An entry is found only under everything lowering depends on ([`Key`]: where the text came
//!   from, the base directory of relative paths, pure mode, `$HOME` when impure, and the exact
//!   set of names of the base environment) and only when the source bytes are identical to the
//!   ones it was lowered from (compared in full, never by a hash): an edited file is lowered anew,
//!   whatever its size or modification time.
//! - A cached tree holds nothing of an evaluation: its constants are literals (numbers, strings,
//!   paths), and names of the base environment are slots ([`global_slot`]) that each evaluation
//!   fills with its own builtins.
//! - The source a cached tree points into stays registered (pinned, see [`crate::source`]) as long
//!   as the entry exists, so positions from a cached tree print the same `file:line:col` in any
//!   later evaluation. An entry that is dropped (evicted, replaced, or its file deleted) is
//!   unpinned: its source then belongs to the running evaluation and is forgotten with it (or by a
//!   rollback past its registration), never while a tree of that evaluation may still point
//!   into it.
//! - Memory is bounded: at most [`budget`] bytes of source text per thread (trees are a small
//!   multiple of their text), least recently used entries evicted first; entries whose file no
//!   longer exists are dropped at the end of an evaluation, at most every [`SWEEP_EVERY`].

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::{Origin, Source};
use crate::ir::Expr;
use crate::symbol::Symbol;

/// Default budget of cached source text per thread: 16 MiB. nixpkgs' `lib` is 1.1 MiB of text,
/// so this keeps it and the files of a few large flakes; trees take about three times their
/// text, so a thread's cache stays below ~64 MiB (see docs/evaluator.md).
pub const DEFAULT_BUDGET: usize = 16 << 20;

/// How often (at most) the end of an evaluation checks that cached files still exist.
pub const SWEEP_EVERY: Duration = Duration::from_secs(5);

static BUDGET: AtomicUsize = AtomicUsize::new(DEFAULT_BUDGET);

thread_local! {
    /// This thread's own budget, if set ([`set_thread_budget`]).
    static THREAD_BUDGET: std::cell::Cell<Option<usize>> = const { std::cell::Cell::new(None) };
}

/// The budget of cached source bytes of this thread.
pub fn budget() -> usize {
    THREAD_BUDGET
        .get()
        .unwrap_or_else(|| BUDGET.load(Ordering::Relaxed))
}

/// Gives this thread its own budget (`None`: the process-wide one again).
pub fn set_thread_budget(bytes: Option<usize>) {
    THREAD_BUDGET.set(bytes);
}

/// Sets the budget of cached source bytes per thread (0 disables the cache); threads apply it at
/// their next insertion.
pub fn set_budget(bytes: usize) {
    BUDGET.store(bytes, Ordering::Relaxed);
}

/// Everything lowering a text depends on besides the text itself.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Key {
    pub origin: Origin,
    pub base_dir: String,
    pub pure: bool,
    /// `$HOME` (`~/…` paths); `None` in pure mode, where lowering never reads it.
    pub home: Option<String>,
    /// The base environment's names ([`layout_id`]): they decide what is a global, a `with`
    /// lookup or an undefined variable.
    pub layout: u32,
}

struct Entry {
    /// The registered (pinned) source the tree points into; also the bytes it was lowered from.
    src: Rc<Source>,
    file: u32,
    expr: Rc<Expr>,
    /// Store directory of the evaluation that read it (to find a store path's real file).
    store_dir: String,
    last_used: u64,
}

#[derive(Default)]
struct Cache {
    entries: HashMap<Key, Entry>,
    /// Source text bytes of all entries.
    bytes: usize,
    clock: u64,
    last_sweep: Option<Instant>,
    /// Global name → slot: the same on this thread for every evaluation.
    slots: HashMap<Symbol, u32>,
    /// Base-environment name sets seen on this thread (sorted), by layout id.
    layouts: Vec<Rc<[Symbol]>>,
}

thread_local! {
    static CACHE: RefCell<Cache> = RefCell::new(Cache::default());
}

impl Source {
    /// Whether this source was registered from exactly `raw`.
    fn is_text_of(&self, raw: &[u8]) -> bool {
        if self.mapped.is_empty() {
            self.text.as_bytes() == raw
        } else {
            super::unmap_bytes(&self.text) == raw
        }
    }
}

/// The slot of a base-environment name: stable for the thread's lifetime, so a cached tree's
/// `Expr::Global` finds each evaluation's own value of that name.
pub(crate) fn global_slot(name: Symbol) -> u32 {
    CACHE.with(|c| {
        let mut c = c.borrow_mut();
        let next = c.slots.len() as u32;
        *c.slots.entry(name).or_insert(next)
    })
}

/// The id of a set of base-environment names (`names` sorted): equal sets, compared in full,
/// get the same id on this thread.
pub(crate) fn layout_id(names: &[Symbol]) -> u32 {
    CACHE.with(|c| {
        let mut c = c.borrow_mut();
        if let Some(i) = c.layouts.iter().position(|l| **l == *names) {
            return i as u32;
        }
        c.layouts.push(Rc::from(names));
        (c.layouts.len() - 1) as u32
    })
}

/// The cached tree of `raw` under `key`, if it was lowered from exactly these bytes. An entry
/// of `key` lowered from other bytes (an edited file) is dropped.
pub(crate) fn lookup(key: &Key, raw: &[u8]) -> Option<Rc<Expr>> {
    CACHE.with(|c| {
        let mut c = c.borrow_mut();
        let c = &mut *c;
        c.clock += 1;
        let entry = c.entries.get_mut(key)?;
        if entry.src.is_text_of(raw) {
            entry.last_used = c.clock;
            return Some(entry.expr.clone());
        }
        if let Some(old) = c.entries.remove(key) {
            drop_entry(&mut c.bytes, old);
        }
        None
    })
}

fn drop_entry(bytes: &mut usize, e: Entry) {
    *bytes -= e.src.text.len();
    super::set_pinned(e.file, false);
}

/// Caches the tree `expr` lowered from registered source `file` under `key`, then evicts least
/// recently used entries (never this one) while the thread holds more than [`budget`] bytes.
pub(crate) fn insert(key: Key, file: u32, expr: Rc<Expr>, store_dir: &str) {
    let Some(src) = super::source(file) else {
        return;
    };
    let budget = budget();
    if src.text.len() > budget {
        return;
    }
    super::set_pinned(file, true);
    CACHE.with(|c| {
        let mut c = c.borrow_mut();
        let c = &mut *c;
        c.clock += 1;
        c.bytes += src.text.len();
        let entry = Entry {
            src,
            file,
            expr,
            store_dir: store_dir.to_string(),
            last_used: c.clock,
        };
        if let Some(old) = c.entries.insert(key, entry) {
            drop_entry(&mut c.bytes, old);
        }
        if c.bytes > budget {
            evict_to(c, budget);
        }
    });
}

/// Evicts least recently used entries until at most `target` bytes stay (the most recent entry
/// always stays).
fn evict_to(c: &mut Cache, target: usize) {
    let mut order: Vec<(u64, Key)> = c
        .entries
        .iter()
        .map(|(k, e)| (e.last_used, k.clone()))
        .collect();
    order.sort_unstable_by_key(|(t, _)| *t);
    order.pop();
    for (_, k) in order {
        if c.bytes <= target {
            break;
        }
        if let Some(e) = c.entries.remove(&k) {
            drop_entry(&mut c.bytes, e);
        }
    }
}

/// Drops (and unpins) every entry for which `gone` holds.
fn drop_where(c: &mut Cache, gone: impl Fn(&Key, &Entry) -> bool) {
    let keys: Vec<Key> = c
        .entries
        .iter()
        .filter(|(k, e)| gone(k, e))
        .map(|(k, _)| k.clone())
        .collect();
    for k in keys {
        if let Some(e) = c.entries.remove(&k) {
            drop_entry(&mut c.bytes, e);
        }
    }
}

/// Drops the entries of sources registered after `mark` ([`super::mark`]), unpinning them: for a
/// rollback, which frees what was read since its checkpoint (a search reads each package's file
/// once; keeping their trees would keep the memory the rollback is there to free).
pub(crate) fn forget_since(mark: usize) {
    CACHE.with(|c| drop_where(&mut c.borrow_mut(), |_, e| e.file as usize > mark));
}

/// Drops the entries whose file no longer exists.
pub fn sweep_missing() {
    CACHE.with(|c| {
        let mut c = c.borrow_mut();
        c.last_sweep = Some(Instant::now());
        drop_where(&mut c, |k, e| match &k.origin {
            Origin::File(p) => {
                let real = crate::store_path::real_path(&e.store_dir, p);
                !std::path::Path::new(&real).exists()
            }
            Origin::String => false,
        });
    });
}

/// The end of an evaluation on this thread (after its evaluator was dropped): drops entries of
/// deleted files (at most every [`SWEEP_EVERY`]), applies a lowered budget, and forgets every
/// source the cache does not pin.
pub fn end_evaluation() {
    let due = CACHE.with(|c| {
        c.borrow()
            .last_sweep
            .is_none_or(|t| t.elapsed() >= SWEEP_EVERY)
    });
    if due {
        sweep_missing();
    }
    CACHE.with(|c| {
        let mut c = c.borrow_mut();
        let budget = budget();
        if c.bytes > budget {
            evict_to(&mut c, budget);
            if c.bytes > budget {
                drop_where(&mut c, |_, _| true);
            }
        }
    });
    super::clear();
}

/// Entries and source bytes this thread's cache holds.
pub fn stats() -> (usize, usize) {
    CACHE.with(|c| {
        let c = c.borrow();
        (c.entries.len(), c.bytes)
    })
}

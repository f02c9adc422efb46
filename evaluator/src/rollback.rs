//! Checkpoints: evaluate something for its plain-data result, then put the evaluation back as it
//! was, freeing everything that evaluating it allocated.
//!
//! Why: a search forces the name and description of every package of a flake, tens of
//! thousands of them. Kept, those values would make the warm flake several times larger than
//! the reference's whole `nix search`; the search needs them once, for its index. Dropping the
//! packages' values is not enough to free them: `let` and `rec` frames are reference cycles,
//! which only the region's teardown breaks (see `value::region`).
//!
//! How: while a checkpoint is open, the evaluator logs every thunk it evaluates with the state
//! it had before, and the region records every environment that can close a cycle. Rolling back
//! puts every logged thunk back to its earlier state (a memoised value is only a cache: forcing
//! the thunk again computes the same value), empties the recorded environments, drops the
//! imports cached since (the import cache logs its insertions while a checkpoint is open, so
//! opening one copies nothing), and forgets the sources registered since, together with their
//! trees in the thread's lowered-source cache (a search reads each package file once: keeping
//! them would keep what the rollback is there to free). Trees cached before the checkpoint stay
//! cached, and their positions keep resolving.
//!
//! Invariant: after a rollback, nothing created since the checkpoint is reachable from anything
//! older. Objects made before the checkpoint are immutable except thunks (logged when evaluated)
//! and the evaluator's import cache (restored); environments are only filled when
//! they are created. So every environment recorded since the checkpoint is reachable only from
//! objects made since, and emptying it breaks the cycles among them without touching anything
//! that outlives the rollback.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::eval::Evaluator;
use crate::source;
use crate::value::{Value, region};

/// What a rollback goes back to ([`Evaluator::checkpoint`]).
#[derive(Debug)]
pub struct Checkpoint {
    sources: usize,
}

/// The results of `import` (and of `flake.nix` files) per resolved path. While a checkpoint is
/// open, every insertion is logged with the entry it replaced, so a rollback undoes exactly
/// those.
#[derive(Default)]
pub struct ImportCache {
    map: HashMap<PathBuf, Value>,
    /// Insertions since the open checkpoint (if any), with the value each replaced.
    log: Option<Vec<(PathBuf, Option<Value>)>>,
}

impl ImportCache {
    pub fn get(&self, path: &Path) -> Option<&Value> {
        self.map.get(path)
    }

    pub fn insert(&mut self, path: PathBuf, v: Value) -> Option<Value> {
        match &mut self.log {
            Some(log) => {
                let earlier = self.map.insert(path.clone(), v);
                log.push((path, earlier.clone()));
                earlier
            }
            None => self.map.insert(path, v),
        }
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Forgets every entry (end of the evaluation).
    pub fn clear(&mut self) {
        self.map.clear();
        self.log = None;
    }

    /// Undoes the insertions logged since the checkpoint, newest first, and stops logging.
    fn roll_back(&mut self) {
        for (path, earlier) in self.log.take().unwrap_or_default().into_iter().rev() {
            match earlier {
                Some(v) => self.map.insert(path, v),
                None => self.map.remove(&path),
            };
        }
    }
}

impl Evaluator {
    /// Opens a checkpoint; `None` if one is open already (they do not nest).
    pub fn checkpoint(&mut self) -> Option<Checkpoint> {
        if self.undo.is_some() {
            return None;
        }
        self.undo = Some(Vec::new());
        self.import_cache.log = Some(Vec::new());
        region::record_envs();
        Some(Checkpoint {
            sources: source::mark(),
        })
    }

    /// How many thunks were evaluated since the checkpoint: a measure of what rolling back
    /// will free.
    pub fn evaluated_since_checkpoint(&self) -> usize {
        self.undo.as_ref().map_or(0, Vec::len)
    }

    /// Rolls the evaluation back to `cp`. Positions of sources read since the checkpoint stop
    /// resolving, unless `keep_sources` (for an error made since that is still to be shown).
    pub fn rollback(&mut self, cp: Checkpoint, keep_sources: bool) {
        let undo = self.undo.take().unwrap_or_default();
        let envs = region::take_recorded_envs();
        // Dropping a restored value runs no evaluator code, and the thunks still to be
        // restored are kept alive by the log, so each value is dropped as soon as it is out.
        for (thunk, earlier) in undo.into_iter().rev() {
            drop(thunk.replace(earlier));
        }
        for env in envs.iter().filter_map(std::rc::Weak::upgrade) {
            drop(env.take_slots());
        }
        drop(envs);
        self.import_cache.roll_back();
        if !keep_sources {
            source::lowered::forget_since(cp.sources);
            source::forget_since(cp.sources);
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::eval::Evaluator;
    use crate::source::Pos;
    use crate::symbol::Symbol;
    use crate::value::{Value, region};

    fn printed(ev: &mut Evaluator, v: &Value) -> String {
        let forced = ev.force_deep(v, Pos::NONE).expect("forces");
        let out = crate::print::print_value(ev, &forced).expect("prints");
        String::from_utf8(out).expect("UTF-8")
    }

    #[test]
    fn rollback_frees_cycles_and_keeps_older_values_usable() {
        let src = b"let shared = { n = 40; }; in { a = let x = { y = x; v = shared.n + 2; }; in x; b = shared.n; }";
        crate::tests::with_fresh_evaluator(src, |mut ev, set| {
            let set = ev.force(&set, Pos::NONE).expect("forces");
            let Value::Attrs(attrs) = &set else {
                panic!("a set")
            };
            let a = attrs.get(Symbol::intern("a")).expect("a").value.clone();
            let cp = ev.checkpoint().expect("no checkpoint open");
            assert!(ev.checkpoint().is_none(), "checkpoints do not nest");
            assert_eq!(printed(&mut ev, &a), "{ v = 42; y = «repeated»; }");
            assert!(ev.evaluated_since_checkpoint() > 0);
            // `x` refers to itself through its `let` frame: only the rollback frees it.
            let x = match ev.force(&a, Pos::NONE).expect("a") {
                Value::Attrs(x) => std::rc::Rc::downgrade(&x),
                _ => panic!("a set"),
            };
            let (_, envs) = region::snapshot();
            ev.rollback(cp, false);
            assert!(x.upgrade().is_none(), "the cycle in `a` was freed");
            assert!(
                envs.iter()
                    .all(|e| e.upgrade().is_none_or(|e| e.len() <= 1))
            );
            // The rolled-back value evaluates again, and so do the older ones.
            assert_eq!(printed(&mut ev, &a), "{ v = 42; y = «repeated»; }");
            let b = attrs.get(Symbol::intern("b")).expect("b").value.clone();
            assert_eq!(printed(&mut ev, &b), "40");
        });
    }
}

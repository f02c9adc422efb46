//! Warm-tree bookkeeping: which warm flakes to keep within a memory budget.
//!
//! Why: the daemon keeps evaluated attribute trees ("warm" flakes) in its
//! worker threads, where they live as evaluator values that are not `Send`.
//! This module therefore never holds those values: [`WarmLru`] only tracks keys
//! (typically a [`FingerprintId`](crate::FingerprintId)) with the sizes the
//! caller reports, and tells the caller which keys to drop.
//!
//! Invariant: after every call that returns evictions, the sum of the sizes of
//! the remaining entries is within the budget, except for pinned entries
//! (in use by a request) which are never evicted; evictions go least recently
//! used first.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;

/// Counters and gauges of a [`WarmLru`], for `daemon status`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LruStats {
    /// [`WarmLru::touch`] calls that found the key.
    pub hits: u64,
    /// [`WarmLru::touch`] calls that did not.
    pub misses: u64,
    /// Keys evicted so far.
    pub evictions: u64,
    /// Keys currently tracked.
    pub entries: u64,
    /// Sum of the reported sizes, in bytes.
    pub used_bytes: u64,
    /// The memory budget, in bytes.
    pub budget_bytes: u64,
}

#[derive(Debug)]
struct Slot {
    size: u64,
    tick: u64,
    pins: u32,
}

/// An LRU of keys with caller-reported sizes and a byte budget.
#[derive(Debug)]
pub struct WarmLru<K> {
    budget: u64,
    used: u64,
    tick: u64,
    slots: HashMap<K, Slot>,
    order: BTreeMap<u64, K>,
    hits: u64,
    misses: u64,
    evictions: u64,
}

impl<K: Hash + Eq + Clone> WarmLru<K> {
    /// An empty LRU with a budget in bytes.
    pub fn new(budget_bytes: u64) -> WarmLru<K> {
        WarmLru {
            budget: budget_bytes,
            used: 0,
            tick: 0,
            slots: HashMap::new(),
            order: BTreeMap::new(),
            hits: 0,
            misses: 0,
            evictions: 0,
        }
    }

    fn bump(&mut self, key: &K) {
        self.tick += 1;
        let tick = self.tick;
        if let Some(slot) = self.slots.get_mut(key) {
            self.order.remove(&slot.tick);
            slot.tick = tick;
            self.order.insert(tick, key.clone());
        }
    }

    /// Marks `key` as just used; counts a hit if it is tracked, a miss if not.
    pub fn touch(&mut self, key: &K) -> bool {
        if self.slots.contains_key(key) {
            self.hits += 1;
            self.bump(key);
            true
        } else {
            self.misses += 1;
            false
        }
    }

    /// The size recorded for `key`, if it is tracked (does not count as a use).
    pub fn size_of(&self, key: &K) -> Option<u64> {
        self.slots.get(key).map(|s| s.size)
    }

    /// True if `key` is tracked (does not count as a use).
    pub fn contains(&self, key: &K) -> bool {
        self.slots.contains_key(key)
    }

    /// Tracks `key` with `size` bytes (or updates its size) as most recently
    /// used, and returns the keys the caller must drop to get back within the
    /// budget, least recently used first. Other entries go first; if `key`
    /// alone exceeds the budget (and is not pinned) it is returned last.
    pub fn insert(&mut self, key: K, size: u64) -> Vec<K> {
        match self.slots.get_mut(&key) {
            Some(slot) => {
                self.used = self.used - slot.size + size;
                slot.size = size;
            }
            None => {
                self.used += size;
                // tick 0 is never in `order`; `bump` below assigns the real one.
                self.slots.insert(
                    key.clone(),
                    Slot {
                        size,
                        tick: 0,
                        pins: 0,
                    },
                );
            }
        }
        self.bump(&key);
        self.evict(Some(&key))
    }

    /// Updates the size of a tracked key (a warm tree grows as more of it is
    /// evaluated) without counting a use; returns keys to drop. Unknown keys
    /// are ignored.
    pub fn resize(&mut self, key: &K, size: u64) -> Vec<K> {
        let Some(slot) = self.slots.get_mut(key) else {
            return Vec::new();
        };
        self.used = self.used - slot.size + size;
        slot.size = size;
        self.evict(Some(key))
    }

    /// Stops tracking `key` (the caller dropped it); returns its size.
    pub fn remove(&mut self, key: &K) -> Option<u64> {
        let slot = self.slots.remove(key)?;
        self.order.remove(&slot.tick);
        self.used -= slot.size;
        Some(slot.size)
    }

    /// Protects `key` from eviction until a matching [`unpin`](Self::unpin).
    /// Returns false if the key is not tracked.
    pub fn pin(&mut self, key: &K) -> bool {
        match self.slots.get_mut(key) {
            Some(slot) => {
                slot.pins += 1;
                true
            }
            None => false,
        }
    }

    /// Releases one pin; returns keys to drop now that it may be evicted.
    pub fn unpin(&mut self, key: &K) -> Vec<K> {
        if let Some(slot) = self.slots.get_mut(key) {
            slot.pins = slot.pins.saturating_sub(1);
        }
        self.evict(None)
    }

    /// Changes the budget; returns keys to drop.
    pub fn set_budget(&mut self, budget_bytes: u64) -> Vec<K> {
        self.budget = budget_bytes;
        self.evict(None)
    }

    /// Current counters.
    pub fn stats(&self) -> LruStats {
        LruStats {
            hits: self.hits,
            misses: self.misses,
            evictions: self.evictions,
            entries: self.slots.len() as u64,
            used_bytes: self.used,
            budget_bytes: self.budget,
        }
    }

    /// Keys from least to most recently used.
    pub fn keys_lru_first(&self) -> Vec<K> {
        self.order.values().cloned().collect()
    }

    fn evict(&mut self, keep_last: Option<&K>) -> Vec<K> {
        let mut out = Vec::new();
        if self.used <= self.budget {
            return out;
        }
        let candidates: Vec<(u64, K)> = self.order.iter().map(|(t, k)| (*t, k.clone())).collect();
        let mut deferred = None;
        for (tick, key) in candidates {
            if self.used <= self.budget {
                break;
            }
            let Some(slot) = self.slots.get(&key) else {
                continue;
            };
            if slot.pins > 0 {
                continue;
            }
            if keep_last == Some(&key) {
                deferred = Some((tick, key));
                continue;
            }
            self.drop_slot(tick, &key);
            out.push(key);
        }
        if self.used > self.budget
            && let Some((tick, key)) = deferred
        {
            self.drop_slot(tick, &key);
            out.push(key);
        }
        out
    }

    fn drop_slot(&mut self, tick: u64, key: &K) {
        if let Some(slot) = self.slots.remove(key) {
            self.used -= slot.size;
        }
        self.order.remove(&tick);
        self.evictions += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evicts_least_recently_used_first() {
        let mut lru = WarmLru::new(100);
        assert!(lru.insert("a", 40).is_empty());
        assert!(lru.insert("b", 40).is_empty());
        assert!(lru.touch(&"a"));
        assert_eq!(lru.insert("c", 40), vec!["b"]);
        assert_eq!(lru.keys_lru_first(), vec!["a", "c"]);
        assert_eq!(lru.stats().used_bytes, 80);
        assert!(!lru.touch(&"b"));
        let s = lru.stats();
        assert_eq!((s.hits, s.misses, s.evictions, s.entries), (1, 1, 1, 2));
    }

    #[test]
    fn oversized_entry_is_returned_last() {
        let mut lru = WarmLru::new(100);
        lru.insert("a", 10);
        assert_eq!(lru.insert("big", 500), vec!["a", "big"]);
        assert_eq!(lru.stats().entries, 0);
        assert_eq!(lru.stats().used_bytes, 0);
    }

    #[test]
    fn pinned_entries_survive_until_unpinned() {
        let mut lru = WarmLru::new(100);
        lru.insert("a", 60);
        assert!(lru.pin(&"a"));
        // a is pinned, so the only way back within budget is dropping b.
        assert_eq!(lru.insert("b", 60), vec!["b"]);
        assert_eq!(lru.insert("c", 30), Vec::<&str>::new());
        assert!(lru.pin(&"c"));
        assert_eq!(
            lru.set_budget(50),
            Vec::<&str>::new(),
            "everything left is pinned"
        );
        assert_eq!(lru.stats().used_bytes, 90);
        assert_eq!(lru.unpin(&"a"), vec!["a"]);
        assert_eq!(lru.stats().used_bytes, 30);
    }

    #[test]
    fn resize_and_budget_changes_evict() {
        let mut lru = WarmLru::new(100);
        lru.insert(1u32, 30);
        lru.insert(2u32, 30);
        assert_eq!(lru.resize(&2, 80), vec![1]);
        assert_eq!(lru.set_budget(50), vec![2]);
        assert_eq!(lru.remove(&2), None);
        lru.insert(3, 10);
        assert_eq!(lru.remove(&3), Some(10));
        assert_eq!(lru.stats().used_bytes, 0);
    }

    #[test]
    fn reinsert_updates_size_not_count() {
        let mut lru = WarmLru::new(100);
        lru.insert("a", 10);
        lru.insert("a", 20);
        assert_eq!(lru.stats().entries, 1);
        assert_eq!(lru.stats().used_bytes, 20);
    }
}

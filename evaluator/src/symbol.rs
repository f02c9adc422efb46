//! Interned attribute and variable names.
//!
//! Names are interned once (at lowering time for static names) into a per-thread table, so the hot
//! path compares and orders `Symbol`s as integers and never hashes a name. Invariant: a `Symbol` is
//! only meaningful on the thread (evaluation) that created it; the table lives as long as the
//! evaluation thread.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

/// An interned name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Symbol(pub u32);

/// FxHash-style hasher: names are short and not attacker-controlled across evaluations, so a
/// fast non-cryptographic hash is fine (and keeps interning cheap).
#[derive(Default, Clone, Copy)]
struct FxHasher(u64);

impl std::hash::Hasher for FxHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        let mut h = self.0;
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let w = u64::from_le_bytes(c.try_into().expect("8-byte chunk"));
            h = (h.rotate_left(5) ^ w).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
        }
        for &b in chunks.remainder() {
            h = (h.rotate_left(5) ^ b as u64).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
        }
        self.0 = h;
    }
}

type FxBuild = std::hash::BuildHasherDefault<FxHasher>;

#[derive(Default)]
struct Interner {
    map: HashMap<Rc<[u8]>, u32, FxBuild>,
    names: Vec<Rc<[u8]>>,
}

thread_local! {
    static INTERNER: RefCell<Interner> = RefCell::new(Interner::default());
}

impl Symbol {
    /// Interns a name given as bytes (attribute names may be arbitrary bytes).
    pub fn intern_bytes(name: &[u8]) -> Symbol {
        INTERNER.with(|i| {
            let mut i = i.borrow_mut();
            if let Some(&s) = i.map.get(name) {
                return Symbol(s);
            }
            // Names live as long as the thread: kept apart from the evaluation's values.
            crate::alloc::long_lived(|| {
                let rc: Rc<[u8]> = Rc::from(name);
                let id = i.names.len() as u32;
                i.names.push(rc.clone());
                i.map.insert(rc, id);
                Symbol(id)
            })
        })
    }

    pub fn intern(name: &str) -> Symbol {
        Symbol::intern_bytes(name.as_bytes())
    }

    /// The name's bytes.
    pub fn bytes(self) -> Rc<[u8]> {
        INTERNER.with(|i| i.borrow().names[self.0 as usize].clone())
    }

    /// The name as (lossy) text, for messages.
    pub fn as_string(self) -> String {
        String::from_utf8_lossy(&self.bytes()).into_owned()
    }

    /// Runs `f` with the name table (for bulk name access without per-name lookups).
    pub fn with_names<R>(f: impl FnOnce(&dyn Fn(Symbol) -> Rc<[u8]>) -> R) -> R {
        INTERNER.with(|i| {
            let i = i.borrow();
            f(&|s: Symbol| i.names[s.0 as usize].clone())
        })
    }

    /// Compares two symbols by name (Nix's attribute order for printing / attrNames).
    pub fn cmp_by_name(self, other: Symbol) -> std::cmp::Ordering {
        if self == other {
            return std::cmp::Ordering::Equal;
        }
        INTERNER.with(|i| {
            let i = i.borrow();
            i.names[self.0 as usize].cmp(&i.names[other.0 as usize])
        })
    }
}

impl std::fmt::Display for Symbol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.as_string())
    }
}

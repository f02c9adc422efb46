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

#[derive(Default)]
struct Interner {
    map: HashMap<Rc<[u8]>, u32>,
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
            let rc: Rc<[u8]> = Rc::from(name);
            let id = i.names.len() as u32;
            i.names.push(rc.clone());
            i.map.insert(rc, id);
            Symbol(id)
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

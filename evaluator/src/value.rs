//! Runtime values, thunks, environments and the per-evaluation memory region.
//!
//! Values are small (two words: a tag and a scalar or one thin pointer) and cheap to clone:
//! scalars inline, everything else behind an `Rc` (lists behind a thin [`List`]).
//! Reference cycles can only arise by mutating a cell after creation (a thunk being overwritten
//! with a result that can refer to other cells, or an environment slot being filled for
//! `let`/`rec`/formals), so every such cell is registered in the thread's [`region`] when it is
//! mutated that way; tearing the region down clears them all, which breaks every cycle and frees
//! the whole evaluation's memory. Invariant: after
//! [`region::teardown`], no value created by the evaluation is kept alive by a cycle.

use std::collections::BTreeSet;
use std::rc::Rc;

use crate::builtins::PrimOp;
use crate::error::EvalError;
use crate::ir::{Expr, LambdaDef};
use crate::source::Pos;
use crate::symbol::Symbol;

/// A list's elements: a thin reference-counted slice.
pub type List = crate::rcslice::RcSlice<Value>;

/// A string's context: store paths it refers to, encoded as Nix does
/// (`/nix/store/…` opaque, `=/nix/store/….drv` deep, `!out!/nix/store/….drv` built output).
pub type Context = BTreeSet<String>;

/// A Nix string: bytes plus context.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NixString {
    pub bytes: Box<[u8]>,
    pub context: Option<Box<Context>>,
}

impl NixString {
    pub fn new(bytes: impl Into<Box<[u8]>>) -> NixString {
        NixString {
            bytes: bytes.into(),
            context: None,
        }
    }
    pub fn with_context(bytes: impl Into<Box<[u8]>>, context: Context) -> NixString {
        NixString {
            bytes: bytes.into(),
            context: if context.is_empty() {
                None
            } else {
                Some(Box::new(context))
            },
        }
    }
    pub fn as_str_lossy(&self) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(&self.bytes)
    }
    pub fn has_context(&self) -> bool {
        self.context.as_ref().is_some_and(|c| !c.is_empty())
    }
}

/// One attribute: name, (lazy) value and the position where it was defined.
#[derive(Debug, Clone)]
pub struct Attr {
    pub name: Symbol,
    pub value: Value,
    pub pos: Pos,
}

/// An attribute set, sorted by symbol for binary search.
#[derive(Debug, Clone, Default)]
pub struct Attrs {
    pub entries: Vec<Attr>,
}

impl Attrs {
    /// Builds from unsorted entries; later duplicates win.
    pub fn from_unsorted(mut entries: Vec<Attr>) -> Attrs {
        entries.sort_by_key(|a| a.name);
        entries.dedup_by(|later, earlier| {
            if later.name == earlier.name {
                std::mem::swap(later, earlier);
                true
            } else {
                false
            }
        });
        Attrs { entries }
    }
    /// Builds from unsorted entries; the first of duplicates wins.
    pub fn from_unsorted_first_wins(mut entries: Vec<Attr>) -> Attrs {
        entries.sort_by_key(|a| a.name);
        entries.dedup_by(|later, earlier| later.name == earlier.name);
        Attrs { entries }
    }
    pub fn get(&self, name: Symbol) -> Option<&Attr> {
        self.entries
            .binary_search_by_key(&name, |a| a.name)
            .ok()
            .map(|i| &self.entries[i])
    }
    pub fn len(&self) -> usize {
        self.entries.len()
    }
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
    /// Entries in Nix's display order (by name bytes).
    pub fn sorted_by_name(&self) -> Vec<&Attr> {
        let mut keyed: Vec<(Rc<[u8]>, &Attr)> =
            Symbol::with_names(|name| self.entries.iter().map(|a| (name(a.name), a)).collect());
        keyed.sort_by(|a, b| a.0.cmp(&b.0));
        keyed.into_iter().map(|(_, a)| a).collect()
    }
    /// `self // other` in one merge pass.
    pub fn update(&self, other: &Attrs) -> Attrs {
        let (a, b) = (&self.entries, &other.entries);
        let mut out = Vec::with_capacity(a.len() + b.len());
        let (mut i, mut j) = (0, 0);
        while i < a.len() && j < b.len() {
            match a[i].name.cmp(&b[j].name) {
                std::cmp::Ordering::Less => {
                    out.push(a[i].clone());
                    i += 1;
                }
                std::cmp::Ordering::Greater => {
                    out.push(b[j].clone());
                    j += 1;
                }
                std::cmp::Ordering::Equal => {
                    out.push(b[j].clone());
                    i += 1;
                    j += 1;
                }
            }
        }
        out.extend_from_slice(&a[i..]);
        out.extend_from_slice(&b[j..]);
        Attrs { entries: out }
    }
}

/// A closure: a lambda definition and the environment it captured.
#[derive(Debug)]
pub struct Closure {
    pub def: Rc<LambdaDef>,
    pub env: Rc<Env>,
}

/// A partially applied builtin.
#[derive(Debug)]
pub struct PrimOpApp {
    pub op: Rc<PrimOp>,
    pub args: Vec<Value>,
}

/// A native suspended computation (used by builtins for lazy results, e.g. `map`).
pub type NativeThunk = Rc<dyn Fn(&mut crate::eval::Evaluator) -> Result<Value, EvalError>>;

/// The state of a thunk.
pub enum ThunkState {
    /// Not evaluated yet: an expression in an environment.
    Pending(Rc<Expr>, Rc<Env>),
    /// Not evaluated yet: apply a function to an argument (no call-site position: builtins'
    /// lazy results are called from no position, as in Nix).
    Apply(Value, Value),
    /// Not evaluated yet: native code.
    Native(NativeThunk),
    /// Being evaluated (forcing it again is infinite recursion).
    Blackhole,
    /// Evaluated (never a thunk).
    Done(Value),
    /// Torn down with its region.
    Cleared,
}

impl std::fmt::Debug for ThunkState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ThunkState::Pending(..) => f.write_str("Pending"),
            ThunkState::Apply(..) => f.write_str("Apply"),
            ThunkState::Native(..) => f.write_str("Native"),
            ThunkState::Blackhole => f.write_str("Blackhole"),
            ThunkState::Done(v) => write!(f, "Done({v:?})"),
            ThunkState::Cleared => f.write_str("Cleared"),
        }
    }
}

/// A lazily evaluated value.
///
/// The state lives in an `UnsafeCell` rather than a `RefCell` (thunks are the most allocated
/// objects after frames; the borrow flag cost 8 bytes each and a check on every force).
/// Soundness rests on this type's rule, as for [`Env`]: no reference into the state ever leaves
/// a `Thunk` method, and no method runs evaluator code or drops a value while it holds one —
/// states are moved in and out whole (`replace`), and values are cloned out (`value`).
pub struct Thunk {
    state: std::cell::UnsafeCell<ThunkState>,
}

impl std::fmt::Debug for Thunk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Thunk({:?})", self.phase())
    }
}

impl Thunk {
    /// A new thunk. It is registered in the region only when it is overwritten with a value
    /// that can refer to other cells (see [`Thunk::set_done`]).
    pub fn new(state: ThunkState) -> Rc<Thunk> {
        Rc::new(Thunk {
            state: std::cell::UnsafeCell::new(state),
        })
    }
    /// Overwrites the thunk with its value, registering it if the value could close a cycle.
    pub fn set_done(self: &Rc<Self>, v: Value) {
        let container = !matches!(
            v,
            Value::Null
                | Value::Bool(_)
                | Value::Int(_)
                | Value::Float(_)
                | Value::String(_)
                | Value::Path(_)
        );
        drop(self.replace(ThunkState::Done(v)));
        if container {
            region::register_thunk(self);
        }
    }
    /// Puts `state` in and returns the previous state (dropped by the caller, outside the
    /// thunk).
    #[inline]
    pub fn replace(&self, state: ThunkState) -> ThunkState {
        // SAFETY: see the type's docs; `mem::replace` neither runs evaluator code nor drops.
        unsafe { std::mem::replace(&mut *self.state.get(), state) }
    }
    /// The value, if the thunk is evaluated (nothing is forced).
    #[inline]
    pub fn value(&self) -> Option<Value> {
        // SAFETY: see the type's docs; `Value::clone` only bumps a reference count.
        unsafe {
            match &*self.state.get() {
                ThunkState::Done(v) => Some(v.clone()),
                _ => None,
            }
        }
    }
    /// The integer value, if the thunk is evaluated to an integer (nothing is forced).
    #[inline]
    pub fn peek_int(&self) -> Option<i64> {
        // SAFETY: see the type's docs; only a `Copy` integer is read.
        unsafe {
            match &*self.state.get() {
                ThunkState::Done(Value::Int(i)) => Some(*i),
                _ => None,
            }
        }
    }
    /// What the thunk is doing, without its contents.
    #[inline]
    pub fn phase(&self) -> ThunkPhase {
        // SAFETY: see the type's docs; only the discriminant is read.
        unsafe {
            match &*self.state.get() {
                ThunkState::Pending(..) | ThunkState::Apply(..) | ThunkState::Native(_) => {
                    ThunkPhase::Unevaluated
                }
                ThunkState::Blackhole => ThunkPhase::Blackhole,
                ThunkState::Done(_) => ThunkPhase::Done,
                ThunkState::Cleared => ThunkPhase::Cleared,
            }
        }
    }
}

/// The phase of a thunk ([`Thunk::phase`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThunkPhase {
    /// Pending, Apply or Native: not evaluated yet.
    Unevaluated,
    /// Being evaluated.
    Blackhole,
    /// Evaluated.
    Done,
    /// Torn down with its region.
    Cleared,
}

/// Slots of a frame (inline for the common one- and two-slot frames).
pub type Slots = smallvec::SmallVec<[Value; 2]>;

/// A runtime environment frame: one per scope (let, rec attrs, lambda call, with).
///
/// The slots live in an `UnsafeCell` instead of a `RefCell` (frames are the most allocated
/// objects; the borrow flag cost 16 bytes per frame and a check per variable read). Soundness
/// rests on this module's rule: no reference into the slots ever leaves an `Env` method, and no
/// method runs evaluator code (or drops a value) while it holds one, so no two accesses overlap.
pub struct Env {
    pub parent: Option<Rc<Env>>,
    slots: std::cell::UnsafeCell<Slots>,
}

impl std::fmt::Debug for Env {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Env({} slots)", self.len())
    }
}

impl Env {
    fn with_slots(parent: Option<Rc<Env>>, slots: Slots) -> Env {
        Env {
            parent,
            slots: std::cell::UnsafeCell::new(slots),
        }
    }
    /// A frame whose slots are all known at creation (no cycle possible through it).
    pub fn new_filled(parent: Option<Rc<Env>>, slots: Vec<Value>) -> Rc<Env> {
        Rc::new(Env::with_slots(parent, Slots::from_vec(slots)))
    }
    /// A one-slot frame known at creation (lambda argument, `with`).
    pub fn new_one(parent: Option<Rc<Env>>, v: Value) -> Rc<Env> {
        let mut slots = Slots::new();
        slots.push(v);
        Rc::new(Env::with_slots(parent, slots))
    }
    /// A frame whose slots are filled after creation (may take part in a cycle): registered.
    pub fn new_recursive(parent: Option<Rc<Env>>, capacity: usize) -> Rc<Env> {
        let e = Rc::new(Env::with_slots(parent, Slots::with_capacity(capacity)));
        region::register_env(&e);
        e
    }
    /// A frame filled after creation whose slots can never refer back to it: not registered.
    pub fn new_unregistered(parent: Option<Rc<Env>>, capacity: usize) -> Rc<Env> {
        Rc::new(Env::with_slots(parent, Slots::with_capacity(capacity)))
    }
    /// The value in `slot` (`null` if it is not filled yet).
    #[inline]
    pub fn get(&self, slot: usize) -> Value {
        self.try_get(slot).unwrap_or(Value::Null)
    }
    /// The value in `slot`, if it is filled.
    #[inline]
    pub fn try_get(&self, slot: usize) -> Option<Value> {
        // SAFETY: see the type's docs; the shared reference ends before this returns and
        // `Value::clone` only bumps a reference count.
        unsafe { (&*self.slots.get()).get(slot).cloned() }
    }
    /// The value in `slot`, with an evaluated thunk replaced by its value (an unevaluated
    /// one is returned as it is), if the slot is filled.
    #[inline]
    pub fn get_resolved(&self, slot: usize) -> Option<Value> {
        // SAFETY: see the type's docs; the shared reference ends before this returns and
        // `Value::clone` only bumps a reference count.
        unsafe {
            match (&*self.slots.get()).get(slot) {
                Some(Value::Thunk(t)) => Some(match t.value() {
                    Some(v) => v,
                    None => Value::Thunk(t.clone()),
                }),
                other => other.cloned(),
            }
        }
    }
    /// The integer in `slot`, directly or in an evaluated thunk (nothing is forced or
    /// cloned).
    #[inline]
    pub fn peek_int(&self, slot: usize) -> Option<i64> {
        // SAFETY: see the type's docs; the shared reference ends before this returns and
        // nothing is cloned or dropped.
        unsafe {
            match (&*self.slots.get()).get(slot) {
                Some(Value::Int(i)) => Some(*i),
                Some(Value::Thunk(t)) => t.peek_int(),
                _ => None,
            }
        }
    }
    /// Number of filled slots.
    #[inline]
    pub fn len(&self) -> usize {
        // SAFETY: see the type's docs.
        unsafe { (&*self.slots.get()).len() }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Fills the next slot.
    #[inline]
    pub fn push(&self, v: Value) {
        // SAFETY: see the type's docs; `push` neither runs evaluator code nor drops a value.
        unsafe { (&mut *self.slots.get()).push(v) }
    }
    /// Overwrites a filled slot (the old value is dropped after the slots are released).
    pub fn set(&self, slot: usize, v: Value) {
        // SAFETY: see the type's docs.
        let old = unsafe {
            match (&mut *self.slots.get()).get_mut(slot) {
                Some(s) => std::mem::replace(s, v),
                None => v,
            }
        };
        drop(old);
    }
    /// Empties the frame, returning its values (dropped by the caller, outside the frame).
    pub fn take_slots(&self) -> Slots {
        // SAFETY: see the type's docs.
        unsafe { std::mem::take(&mut *self.slots.get()) }
    }
}

/// A Nix value.
#[derive(Debug)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    String(Rc<NixString>),
    /// A path (thin: `Rc<String>`, paths are rare and keep `Value` two words).
    Path(Rc<String>),
    Attrs(Rc<Attrs>),
    List(List),
    Lambda(Rc<Closure>),
    PrimOp(Rc<PrimOp>),
    PrimOpApp(Rc<PrimOpApp>),
    Thunk(Rc<Thunk>),
}

// Written out (not derived) so that it is inlined: cloning values is the evaluator's most
// frequent operation, and an out-of-line call cost more than the reference count it bumps.
impl Clone for Value {
    #[inline(always)]
    fn clone(&self) -> Value {
        match self {
            Value::Null => Value::Null,
            Value::Bool(b) => Value::Bool(*b),
            Value::Int(i) => Value::Int(*i),
            Value::Float(f) => Value::Float(*f),
            Value::String(s) => Value::String(Rc::clone(s)),
            Value::Path(p) => Value::Path(Rc::clone(p)),
            Value::Attrs(a) => Value::Attrs(Rc::clone(a)),
            Value::List(l) => Value::List(l.clone()),
            Value::Lambda(c) => Value::Lambda(Rc::clone(c)),
            Value::PrimOp(p) => Value::PrimOp(Rc::clone(p)),
            Value::PrimOpApp(p) => Value::PrimOpApp(Rc::clone(p)),
            Value::Thunk(t) => Value::Thunk(Rc::clone(t)),
        }
    }
}

impl Value {
    pub fn string(s: impl Into<Box<[u8]>>) -> Value {
        Value::String(Rc::new(NixString::new(s)))
    }
    pub fn str(s: &str) -> Value {
        Value::String(Rc::new(NixString::new(s.as_bytes())))
    }
    pub fn string_ctx(s: impl Into<Box<[u8]>>, ctx: Context) -> Value {
        Value::String(Rc::new(NixString::with_context(s, ctx)))
    }
    pub fn attrs(a: Attrs) -> Value {
        Value::Attrs(Rc::new(a))
    }
    pub fn list(v: Vec<Value>) -> Value {
        Value::List(List::from(v))
    }
    pub fn path(p: &str) -> Value {
        Value::Path(Rc::new(p.to_string()))
    }
    pub fn empty_attrs() -> Value {
        Value::Attrs(Rc::new(Attrs::default()))
    }
    /// A thunk applying `f` to `arg` when forced.
    pub fn apply_thunk(f: Value, arg: Value, pos: Pos) -> Value {
        let _ = pos;
        Value::Thunk(Thunk::new(ThunkState::Apply(f, arg)))
    }
    pub fn native_thunk(f: NativeThunk) -> Value {
        Value::Thunk(Thunk::new(ThunkState::Native(f)))
    }
    pub fn is_thunk(&self) -> bool {
        matches!(self, Value::Thunk(_))
    }
    pub fn is_function(&self) -> bool {
        matches!(
            self,
            Value::Lambda(_) | Value::PrimOp(_) | Value::PrimOpApp(_)
        )
    }

    /// Nix's `showType` (e.g. "an integer", "a set").
    pub fn type_desc(&self) -> std::borrow::Cow<'static, str> {
        use std::borrow::Cow;
        match self {
            Value::PrimOp(p) => return Cow::Owned(format!("the built-in function '{}'", p.name)),
            Value::PrimOpApp(a) => {
                return Cow::Owned(format!(
                    "the partially applied built-in function '{}'",
                    a.op.name
                ));
            }
            _ => {}
        }
        Cow::Borrowed(match self {
            Value::Null => "null",
            Value::Bool(_) => "a Boolean",
            Value::Int(_) => "an integer",
            Value::Float(_) => "a float",
            Value::String(_) => "a string",
            Value::Path(_) => "a path",
            Value::Attrs(_) => "a set",
            Value::List(_) => "a list",
            Value::Lambda(_) => "a function",
            Value::PrimOp(_) => "a built-in function",
            Value::PrimOpApp(_) => "a partially applied built-in function",
            Value::Thunk(_) => "a thunk",
        })
    }

    /// `builtins.typeOf`.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "bool",
            Value::Int(_) => "int",
            Value::Float(_) => "float",
            Value::String(_) => "string",
            Value::Path(_) => "path",
            Value::Attrs(_) => "set",
            Value::List(_) => "list",
            Value::Lambda(_) | Value::PrimOp(_) | Value::PrimOpApp(_) => "lambda",
            Value::Thunk(_) => "thunk",
        }
    }
}

/// The per-evaluation registry of mutable cells (see module docs).
pub mod region {
    use super::{Env, Thunk, ThunkState};
    use std::cell::RefCell;
    use std::rc::{Rc, Weak};

    #[derive(Default)]
    struct Region {
        thunks: Vec<Weak<Thunk>>,
        thunks_compacted: usize,
        envs: Vec<Weak<Env>>,
        envs_compacted: usize,
        /// While a checkpoint is open: the environments registered since.
        envs_since_checkpoint: Option<Vec<Weak<Env>>>,
    }

    thread_local! {
        static REGION: RefCell<Region> = RefCell::new(Region::default());
    }

    pub fn register_thunk(t: &Rc<Thunk>) {
        REGION.with(|r| {
            let mut r = r.borrow_mut();
            r.thunks.push(Rc::downgrade(t));
            if r.thunks.len() >= 2 * r.thunks_compacted.max(4096) {
                r.thunks.retain(|w| w.strong_count() > 0);
                r.thunks_compacted = r.thunks.len();
            }
        });
    }

    pub fn register_env(e: &Rc<Env>) {
        REGION.with(|r| {
            let mut r = r.borrow_mut();
            r.envs.push(Rc::downgrade(e));
            if let Some(since) = &mut r.envs_since_checkpoint {
                since.push(Rc::downgrade(e));
            }
            if r.envs.len() >= 2 * r.envs_compacted.max(4096) {
                r.envs.retain(|w| w.strong_count() > 0);
                r.envs_compacted = r.envs.len();
            }
        });
    }

    /// Starts recording the environments registered from now on (see [`take_recorded_envs`]).
    pub fn record_envs() {
        REGION.with(|r| r.borrow_mut().envs_since_checkpoint = Some(Vec::new()));
    }

    /// Stops recording and returns the environments registered since [`record_envs`].
    pub fn take_recorded_envs() -> Vec<Weak<Env>> {
        REGION.with(|r| {
            r.borrow_mut()
                .envs_since_checkpoint
                .take()
                .unwrap_or_default()
        })
    }

    /// Clears every registered cell of this thread, breaking all cycles.
    pub fn teardown() {
        let (thunks, envs) = REGION.with(|r| {
            let mut r = r.borrow_mut();
            r.thunks_compacted = 0;
            r.envs_compacted = 0;
            (std::mem::take(&mut r.thunks), std::mem::take(&mut r.envs))
        });
        // Take every cell's contents out first and drop them only once all cells are cleared:
        // then no drop can run into a cell that still holds a value, so drops never recurse
        // through a chain of cells. Each registration (a weak handle) is given up in the same
        // pass that clears its cell, while the cell is in the cache: the cells are scattered over
        // the evaluation's memory, and a second pass over them for the weak handles alone cost a
        // cache miss per cell again. The cell a few entries ahead is prefetched.
        let garbage = clear_cells(thunks, |t| t.replace(ThunkState::Cleared));
        let env_garbage = clear_cells(envs, |e| e.take_slots());
        drop(garbage);
        drop(env_garbage);
    }

    /// Empties every cell of `cells` that is still alive with `take` and returns what the cells
    /// held (dropped by the caller once all cells are empty); the registrations are given up on
    /// the way. The cell a few entries ahead is prefetched.
    fn clear_cells<T, G>(mut cells: Vec<Weak<T>>, take: impl Fn(&T) -> G) -> Vec<G> {
        let mut garbage = Vec::with_capacity(cells.len());
        for i in 0..cells.len() {
            if let Some(ahead) = cells.get(i + PREFETCH_AHEAD) {
                prefetch(ahead.as_ptr());
            }
            let w = std::mem::take(&mut cells[i]);
            if let Some(c) = w.upgrade() {
                garbage.push(take(&c));
            }
        }
        garbage
    }

    /// How many registrations ahead [`teardown`] prefetches.
    const PREFETCH_AHEAD: usize = 8;

    /// Hints that the cell at `p` (its reference counts are just before it) is read soon. A
    /// hint only: it never faults, whatever `p` is (a dangling handle's sentinel included).
    #[inline(always)]
    fn prefetch<T>(p: *const T) {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: a prefetch does not access memory architecturally; any address is allowed.
        unsafe {
            use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
            _mm_prefetch::<_MM_HINT_T0>((p as *const i8).wrapping_sub(16));
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = p;
    }

    /// Number of registered cells, alive or not yet compacted away: an O(1) estimate of the
    /// region's size (at most about twice the live cells, as the registry compacts when it
    /// doubles), for memory accounting on hot paths.
    pub fn registered_cells() -> usize {
        REGION.with(|r| {
            let r = r.borrow();
            r.thunks.len() + r.envs.len()
        })
    }

    /// Number of registered cells still alive (for tests: 0 after teardown and dropping roots).
    pub fn live_cells() -> usize {
        REGION.with(|r| {
            let r = r.borrow();
            r.thunks.iter().filter(|w| w.strong_count() > 0).count()
                + r.envs.iter().filter(|w| w.strong_count() > 0).count()
        })
    }

    /// Weak handles of all registered cells (for tests).
    pub fn snapshot() -> (Vec<Weak<Thunk>>, Vec<Weak<Env>>) {
        REGION.with(|r| {
            let r = r.borrow();
            (r.thunks.clone(), r.envs.clone())
        })
    }
}

//! The builtins registry: every primop and constant of the base environment.
//!
//! # How to add a builtin (the one way)
//!
//! 1. Put it in a file of its family under `evaluator/src/builtins/` (new families get a new file
//!    with a `pub(crate) fn register(r: &mut Registry)` and one `mod` line + one
//!    `x::register(&mut r);` line in [`install`] below).
//! 2. Write the function with the [`BuiltinFn`] signature:
//!    ```ignore
//!    fn prim_length(ev: &mut Evaluator, pos: Pos, args: &[Value]) -> Result<Value> {
//!        let l = ev.force_list(&args[0], pos, "while evaluating the first argument passed to builtins.length")?;
//!        Ok(Value::Int(l.len() as i64))
//!    }
//!    ```
//!    `args` has exactly `arity` elements, all *unforced* (possibly thunks): force what you need
//!    with the `Evaluator::force*` helpers, which produce Nix's messages
//!    ("expected a set but found an integer: 1") and attach the context string you pass as a
//!    trace frame exactly where Nix does. `pos` is the position Nix hands to primops — almost
//!    always none, as in Nix — so pass it through to the helpers unchanged.
//! 3. Register it: `r.primop("__length", 1, prim_length)`. A name starting with `__` is visible
//!    globally as `__length` and as `builtins.length`; a name without (`map`, `throw`, `import`,
//!    …) is visible globally under that name and in `builtins`. Constants: `r.constant(name, v)`.
//!
//! Errors: return `Err(EvalError::eval(msg))` / `EvalError::type_error(msg)` (uncatchable),
//! `EvalError::new(ErrorKind::Throw, msg)` (catchable by `tryEval`); `.at(pos)` sets Nix's
//! `atPos`, `.with_trace(pos, msg)` adds a `… while …` frame. The caller adds
//! "while calling the 'NAME' builtin" automatically.
//!
//! Laziness: return lazy results as thunks, e.g. `Value::apply_thunk(f, x, Pos::NONE)` for
//! `f x`, or `Value::native_thunk(Rc::new(move |ev| …))`. Call function values with
//! `ev.call(&f, &[a, b], pos)` (the result is forced to WHNF; the arguments stay lazy).
//!
//! Strings: `Value::String(Rc<NixString>)` holds bytes and a context (set of store paths);
//! propagate contexts (`ev.coerce_to_string(.., &mut ctx)` collects them) and build results
//! with `Value::string_ctx(bytes, ctx)`.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use crate::error::Result;
use crate::eval::Evaluator;
use crate::source::Pos;
use crate::symbol::Symbol;
use crate::value::{Attr, Attrs, NativeThunk, Thunk, ThunkState, Value};

mod arith;
pub mod attrs;
mod context;
mod control;
mod derivation;
mod env;
mod flakes;
mod fs;
mod hash;
pub mod import;
mod json;
mod lists;
mod listsextra;
mod misc;
pub mod paths;
mod regex;
mod strings;
pub(crate) mod stringsextra;
mod toml;
mod types;

/// The signature of every builtin: evaluator, Nix's primop position (usually none), arguments.
pub type BuiltinFn = fn(&mut Evaluator, Pos, &[Value]) -> Result<Value>;

/// A builtin function.
pub struct PrimOp {
    /// The name as shown in `«primop NAME»` and "while calling the 'NAME' builtin".
    pub name: &'static str,
    pub arity: usize,
    pub func: BuiltinFn,
    /// Whether the "while calling the 'NAME' builtin" frame is added on errors.
    pub add_trace: bool,
    /// For the integer operators the parser desugars to (`__add`, `__sub`, `__mul`,
    /// `__lessThan`): what the evaluator may compute inline when both operands are already
    /// integers (see `Evaluator::eval`); `IntOp::None` for every other builtin.
    pub int_op: IntOp,
}

/// An integer operation a builtin computes when both its arguments are integers, which the
/// evaluator may perform without calling the builtin (same result; overflow still goes
/// through the builtin, for its error).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IntOp {
    None,
    Add,
    Sub,
    Mul,
    LessThan,
}

impl IntOp {
    /// The result for integer operands, `None` if the builtin must run (not an integer
    /// operation, or overflow).
    #[inline]
    pub fn apply(self, x: i64, y: i64) -> Option<Value> {
        match self {
            IntOp::None => None,
            IntOp::Add => x.checked_add(y).map(Value::Int),
            IntOp::Sub => x.checked_sub(y).map(Value::Int),
            IntOp::Mul => x.checked_mul(y).map(Value::Int),
            IntOp::LessThan => Some(Value::Bool(x < y)),
        }
    }
}

impl std::fmt::Debug for PrimOp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "«primop {}»", self.name)
    }
}

/// Collects builtins while the base environment is being built.
pub struct Registry {
    entries: Vec<(&'static str, Value)>,
    /// Whether the evaluation is pure (some constants only exist in impure mode).
    pub pure: bool,
    pub system: String,
    pub store_dir: String,
    pub nix_path: Vec<String>,
    /// `builtins.currentTime` (impure mode only).
    pub time: i64,
}

impl Registry {
    /// Registers a primop (see module docs for the naming rule).
    pub fn primop(&mut self, name: &'static str, arity: usize, func: BuiltinFn) {
        self.primop_int(name, arity, func, IntOp::None);
    }
    /// Registers a binary integer operator builtin: `func` must compute exactly `int_op` when
    /// both arguments are integers (the evaluator may skip the call then).
    pub fn primop_int(&mut self, name: &'static str, arity: usize, func: BuiltinFn, int_op: IntOp) {
        let short = name.strip_prefix("__").unwrap_or(name);
        let op = Rc::new(PrimOp {
            name: short,
            arity,
            func,
            add_trace: true,
            int_op,
        });
        self.entries.push((name, Value::PrimOp(op)));
    }
    /// Registers a primop whose errors get no "while calling the 'NAME' builtin" frame.
    pub fn primop_no_trace(&mut self, name: &'static str, arity: usize, func: BuiltinFn) {
        let short = name.strip_prefix("__").unwrap_or(name);
        let op = Rc::new(PrimOp {
            name: short,
            arity,
            func,
            add_trace: false,
            int_op: IntOp::None,
        });
        self.entries.push((name, Value::PrimOp(op)));
    }
    /// Registers a constant.
    pub fn constant(&mut self, name: &'static str, v: Value) {
        self.entries.push((name, v));
    }
}

/// What the `builtins` set depends on besides the code: the settings the registry reads, and
/// the current time (seconds) in impure mode (`builtins.currentTime`).
#[derive(Clone, PartialEq, Eq)]
struct PreparedKey {
    pure: bool,
    system: String,
    store_dir: String,
    nix_path: Vec<String>,
    time: Option<i64>,
}

/// A `builtins` set built once per thread and key, reused by every evaluator of that thread
/// with the same key.
///
/// Only immutable values are shared (primops, strings, numbers, lists and sets of those): the
/// entries that are thunks (`derivation`, and `builtins.builtins`, the set itself) get fresh
/// thunks per evaluation, so nothing an evaluation forces or tears down is seen by another.
struct Prepared {
    key: PreparedKey,
    /// The set's entries, sorted by symbol; the thunk entries are placeholders (`null`).
    attrs: Vec<Attr>,
    /// The base environment; the thunk entries are placeholders (`null`).
    globals: HashMap<Symbol, Value>,
    /// Per-evaluation entries: index in `attrs`, global name, and how to make its value
    /// (`None`: the `builtins` set itself).
    fresh: Vec<(usize, Symbol, Option<NativeThunk>)>,
}

thread_local! {
    static PREPARED: RefCell<Option<Rc<Prepared>>> = const { RefCell::new(None) };
}

/// The current time as `builtins.currentTime` shows it.
pub(crate) fn current_time() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Builds the base environment and the `builtins` set of `ev`, from this thread's prepared set
/// when its settings match (see [`Prepared`]).
pub fn install(ev: &mut Evaluator) {
    let key = PreparedKey {
        pure: ev.config.pure,
        system: ev.config.system.clone(),
        store_dir: ev.config.store_dir.clone(),
        nix_path: ev.config.nix_path.clone(),
        time: (!ev.config.pure).then(current_time),
    };
    let prepared = PREPARED.with(|p| {
        let mut p = p.borrow_mut();
        match &*p {
            Some(prep) if prep.key == key => prep.clone(),
            _ => {
                // Kept by the thread for later evaluations: apart from this one's values.
                let prep = crate::alloc::long_lived(|| Rc::new(prepare(key)));
                *p = Some(prep.clone());
                prep
            }
        }
    });
    let mut attrs = prepared.attrs.clone();
    let mut globals = prepared.globals.clone();
    // `builtins.builtins` refers to the set itself: a thunk filled in after construction.
    let self_ref = Thunk::new(ThunkState::Blackhole);
    for (i, global, make) in &prepared.fresh {
        let v = match make {
            Some(f) => Value::Thunk(Thunk::new(ThunkState::Native(f.clone()))),
            None => Value::Thunk(self_ref.clone()),
        };
        attrs[*i].value = v.clone();
        if make.is_some() {
            globals.insert(*global, v);
        }
    }
    let set = Value::attrs(Attrs { entries: attrs });
    self_ref.set_done(set.clone());
    globals.insert(Symbol::intern("builtins"), set.clone());
    ev.globals = globals;
    ev.builtins = set;
}

/// Registers every builtin for `key`'s settings.
fn prepare(key: PreparedKey) -> Prepared {
    let mut r = Registry {
        entries: Vec::new(),
        pure: key.pure,
        system: key.system.clone(),
        store_dir: key.store_dir.clone(),
        nix_path: key.nix_path.clone(),
        time: key.time.unwrap_or(0),
    };
    arith::register(&mut r);
    attrs::register(&mut r);
    control::register(&mut r);
    env::register(&mut r);
    import::register(&mut r);
    lists::register(&mut r);
    paths::register(&mut r);
    strings::register(&mut r);
    types::register(&mut r);
    listsextra::register(&mut r);
    stringsextra::register(&mut r);
    regex::register(&mut r);
    json::register(&mut r);
    toml::register(&mut r);
    fs::register(&mut r);
    hash::register(&mut r);
    context::register(&mut r);
    misc::register(&mut r);
    derivation::register(&mut r);
    flakes::register(&mut r);

    let mut attrs = Vec::with_capacity(r.entries.len() + 1);
    let mut globals = HashMap::with_capacity(r.entries.len() + 1);
    let mut thunks = Vec::new();
    for (name, v) in r.entries {
        let short = Symbol::intern(name.strip_prefix("__").unwrap_or(name));
        let global = Symbol::intern(name);
        let v = match v {
            Value::Thunk(t) => match t.replace(ThunkState::Cleared) {
                ThunkState::Native(f) => {
                    thunks.push((short, global, Some(f)));
                    Value::Null
                }
                _ => unreachable!("builtins registers only native thunks"),
            },
            v => v,
        };
        attrs.push(Attr {
            name: short,
            value: v.clone(),
            pos: Pos::NONE,
        });
        globals.insert(global, v);
    }
    let builtins = Symbol::intern("builtins");
    thunks.push((builtins, builtins, None));
    attrs.push(Attr {
        name: builtins,
        value: Value::Null,
        pos: Pos::NONE,
    });
    let set = Attrs::from_unsorted(attrs);
    let fresh = thunks
        .into_iter()
        .map(|(short, global, make)| {
            let i = set
                .entries
                .binary_search_by_key(&short, |a| a.name)
                .expect("every registered name is in the set");
            (i, global, make)
        })
        .collect();
    Prepared {
        key,
        attrs: set.entries,
        globals,
        fresh,
    }
}

/// Ordinal words used in Nix's argument messages.
pub fn nth(i: usize) -> &'static str {
    ["first", "second", "third", "fourth", "fifth"]
        .get(i)
        .copied()
        .unwrap_or("next")
}

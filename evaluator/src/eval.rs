//! The evaluator: forcing, calling, and evaluating lowered expressions.
//!
//! An [`Evaluator`] lives on one (large-stack) thread for one evaluation. It evaluates IR
//! expressions to weak head normal form, forces thunks (blackholing them while they run and
//! restoring them if they fail), calls lambdas and builtins, and provides the typed `force_*` /
//! coercion helpers builtins use. Invariants: `eval` and `force` never return a thunk; the call
//! depth never exceeds Nix's `max-call-depth`; a failing thunk returns to its unevaluated state.

use std::collections::HashMap;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::builtins::IntOp;
use crate::error::{ErrorKind, EvalError, Result, best_matches};
use crate::ir::{AttrKind, AttrName, AttrsExpr, BinOp, Expr, LambdaDef};
use crate::lower::{self, LowerCtx};
use crate::print;
use crate::source::{self, Origin, Pos, lowered};
use crate::symbol::Symbol;
use crate::value::{
    Attr, Attrs, Closure, Context, Env, List, NixString, PrimOpApp, Thunk, ThunkPhase, ThunkState,
    Value,
};

/// Nix 2.26's default `max-call-depth`.
pub const MAX_CALL_DEPTH: usize = 10000;
/// Bound on native recursion (thunk forcing nested inside thunk forcing) to stay far away from
/// the thread's stack limit.
pub const MAX_NATIVE_DEPTH: usize = 200_000;

/// Settings an evaluation depends on.
#[derive(Debug, Clone)]
pub struct Config {
    pub pure: bool,
    pub cwd: PathBuf,
    pub env: std::collections::BTreeMap<String, String>,
    pub nix_path: Vec<String>,
    pub system: String,
    pub store_dir: String,
    pub interrupt: Option<Arc<AtomicBool>>,
}

#[cfg(test)]
impl Config {
    /// A pure evaluation for `x86_64-linux` in `/` (for unit tests).
    pub(crate) fn pure_for_tests() -> Config {
        Config {
            pure: true,
            cwd: "/".into(),
            env: Default::default(),
            nix_path: Vec::new(),
            system: "x86_64-linux".into(),
            store_dir: "/nix/store".into(),
            interrupt: None,
        }
    }
}

/// One automatic argument of `nix eval` / `nix-instantiate`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AutoArg {
    /// `--arg NAME EXPR`: a Nix expression.
    Expr(String),
    /// `--argstr NAME STRING`: a string.
    Str(String),
}

/// Frequently used symbols, interned once.
pub struct Syms {
    pub functor: Symbol,
    pub to_string: Symbol,
    pub out_path: Symbol,
    pub type_: Symbol,
    pub drv_path: Symbol,
    pub name: Symbol,
    pub value: Symbol,
    pub file: Symbol,
    pub line: Symbol,
    pub column: Symbol,
    pub body: Symbol,
    pub overrides: Symbol,
}

/// One evaluation's state.
pub struct Evaluator {
    pub config: Config,
    pub syms: Syms,
    /// The base environment: names visible everywhere (`builtins`, `true`, `import`, `__foo`, …).
    pub globals: HashMap<Symbol, Value>,
    /// The base environment by slot ([`crate::source::lowered::global_slot`]): what a lowered
    /// `Expr::Global` names in this evaluation (`null` for slots of names it lacks).
    pub(crate) global_values: Vec<Value>,
    /// Id of this evaluation's set of base-environment names (part of a lowered tree's key).
    global_layout: u32,
    /// The `builtins` attribute set.
    pub builtins: Value,
    call_depth: usize,
    native_depth: usize,
    tick: u32,
    /// Results of `import` per resolved path (logged while a checkpoint is open).
    pub import_cache: crate::rollback::ImportCache,
    /// While a checkpoint is open (see `rollback.rs`): every thunk evaluated since, with the
    /// state it had before, so that the evaluation can be rolled back.
    pub(crate) undo: Option<Vec<(Rc<Thunk>, ThunkState)>>,
    /// Lines for stderr (traces, warnings), in order.
    pub stderr: Vec<String>,
    /// Paths copied to the store during this evaluation: source path → store path.
    pub src_to_store: HashMap<String, String>,
    /// Nix's `abort-on-warn` setting: `builtins.warn` fails after printing its warning. Set from
    /// `NIX_CONFIG` in the evaluation's environment (as Nix reads it); callers may override it.
    pub abort_on_warn: bool,
}

impl Drop for Evaluator {
    fn drop(&mut self) {
        // Break every cycle created by this evaluation.
        self.import_cache.clear();
        self.globals.clear();
        self.global_values.clear();
        self.builtins = Value::Null;
        crate::value::region::teardown();
    }
}

/// The value of setting `name` in a `nix.conf`-style text (`NIX_CONFIG`): `name = value` lines,
/// `#` comments; the last assignment wins.
pub fn nix_config_setting(text: &str, name: &str) -> Option<String> {
    let mut found = None;
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("");
        if let Some((k, v)) = line.split_once('=')
            && k.trim() == name
        {
            found = Some(v.trim().to_string());
        }
    }
    found
}

impl Evaluator {
    pub fn new(config: Config) -> Evaluator {
        let syms = Syms {
            functor: Symbol::intern("__functor"),
            to_string: Symbol::intern("__toString"),
            out_path: Symbol::intern("outPath"),
            type_: Symbol::intern("type"),
            drv_path: Symbol::intern("drvPath"),
            name: Symbol::intern("name"),
            value: Symbol::intern("value"),
            file: Symbol::intern("file"),
            line: Symbol::intern("line"),
            column: Symbol::intern("column"),
            body: Symbol::intern("body"),
            overrides: Symbol::intern("__overrides"),
        };
        let mut ev = Evaluator {
            config,
            syms,
            globals: HashMap::new(),
            global_values: Vec::new(),
            global_layout: 0,
            builtins: Value::Null,
            call_depth: 0,
            native_depth: 0,
            tick: 0,
            import_cache: Default::default(),
            undo: None,
            stderr: Vec::new(),
            src_to_store: HashMap::new(),
            abort_on_warn: false,
        };
        ev.abort_on_warn = ev
            .config
            .env
            .get("NIX_CONFIG")
            .and_then(|c| nix_config_setting(c, "abort-on-warn"))
            .is_some_and(|v| v == "true");
        crate::builtins::install(&mut ev);
        ev.index_globals();
        ev
    }

    /// Fills [`Evaluator::global_values`] and the layout id from [`Evaluator::globals`].
    fn index_globals(&mut self) {
        let mut names: Vec<Symbol> = self.globals.keys().copied().collect();
        names.sort_unstable();
        self.global_layout = lowered::layout_id(&names);
        for (name, v) in &self.globals {
            let slot = lowered::global_slot(*name) as usize;
            if slot >= self.global_values.len() {
                self.global_values.resize(slot + 1, Value::Null);
            }
            self.global_values[slot] = v.clone();
        }
    }

    // -----------------------------------------------------------------------------------------
    // Parsing

    /// Parses and lowers source text; `origin` decides how positions print and `base_dir` how
    /// relative paths resolve. Lowered trees are kept in the thread's cache across evaluations
    /// (see [`crate::source::lowered`]), found again only for the very same bytes and settings.
    pub fn parse(&mut self, origin: Origin, raw: &[u8], base_dir: &str) -> Result<Rc<Expr>> {
        let key = lowered::Key {
            origin,
            base_dir: base_dir.to_string(),
            pure: self.config.pure,
            home: if self.config.pure {
                None
            } else {
                self.config.env.get("HOME").cloned()
            },
            layout: self.global_layout,
        };
        if let Some(e) = lowered::lookup(&key, raw) {
            return Ok(e);
        }
        // The tree goes into the thread's cache and outlives this evaluation: allocated apart
        // from the evaluation's values (see `crate::alloc::long_lived`).
        crate::alloc::long_lived(|| {
            let (file, text) = source::register(key.origin.clone(), raw);
            let ctx = LowerCtx {
                file,
                base_dir: key.base_dir.clone(),
                globals: &self.globals,
                outer_names: Vec::new(),
                home: self.config.env.get("HOME").cloned(),
                pure: self.config.pure,
            };
            let e = lower::parse_and_lower(&ctx, &text)?;
            lowered::insert(key, file, e.clone(), &self.config.store_dir);
            Ok(e)
        })
    }

    /// Parses with extra outermost names (for `scopedImport`), no caching.
    pub fn parse_scoped(
        &mut self,
        origin: Origin,
        raw: &[u8],
        base_dir: &str,
        names: Vec<Symbol>,
    ) -> Result<Rc<Expr>> {
        let (file, text) = source::register(origin, raw);
        let ctx = LowerCtx {
            file,
            base_dir: base_dir.to_string(),
            globals: &self.globals,
            outer_names: names,
            home: self.config.env.get("HOME").cloned(),
            pure: self.config.pure,
        };
        lower::parse_and_lower(&ctx, &text)
    }

    /// The value of base-environment slot `slot` in this evaluation.
    #[inline(always)]
    fn global(&self, slot: u32) -> &Value {
        // Cannot be out of range: a tree names only globals of its layout, whose slots were all
        // assigned (and filled here) before it was lowered or found in the cache.
        &self.global_values[slot as usize]
    }

    /// Evaluates a top-level expression (no enclosing frames).
    pub fn eval_root(&mut self, e: &Rc<Expr>) -> Result<Value> {
        let env = Env::new_filled(None, Vec::new());
        self.eval(e, &env)
    }

    // -----------------------------------------------------------------------------------------
    // Automatic arguments (`--arg` / `--argstr`)

    /// Nix's `getAutoArgs`: the set of `--arg NAME EXPR` / `--argstr NAME STRING` values. Each
    /// expression is parsed now (a syntax error is reported before anything is evaluated, its
    /// positions are `«string»`, relative paths resolve against the working directory) and
    /// evaluated lazily, only if the function uses it. A later duplicate name wins.
    pub fn auto_args(&mut self, args: &[(String, AutoArg)]) -> Result<Rc<Attrs>> {
        let root = Env::new_filled(None, Vec::new());
        let base_dir = self.config.cwd.to_string_lossy().into_owned();
        let mut entries = Vec::with_capacity(args.len());
        for (name, arg) in args {
            let value = match arg {
                AutoArg::Expr(text) => {
                    let e = self.parse(Origin::String, text.as_bytes(), &base_dir)?;
                    self.lazy(&e, &root)
                }
                AutoArg::Str(s) => Value::str(s),
            };
            entries.push(Attr {
                name: Symbol::intern(name),
                value,
                pos: Pos::NONE,
            });
        }
        Ok(Rc::new(Attrs::from_unsorted(entries)))
    }

    /// Nix's `autoCallFunction`: a set with `__functor` is called with itself first; a lambda
    /// with a `{ … }` pattern is called with the automatic arguments it accepts (all of them if
    /// it has `...`), failing on a formal that has neither an argument nor a default; any other
    /// value is returned forced.
    pub fn auto_call_function(&mut self, v: &Value, args: &Rc<Attrs>) -> Result<Value> {
        let v = self.force(v, Pos::NONE)?;
        if let Value::Attrs(a) = &v
            && let Some(f) = a.get(self.syms.functor)
        {
            let fv = f.value.clone();
            let r = self.call(&fv, std::slice::from_ref(&v), Pos::NONE)?;
            return self.auto_call_function(&r, args);
        }
        let Value::Lambda(c) = &v else {
            return Ok(v);
        };
        let Some(formals) = &c.def.formals else {
            return Ok(v);
        };
        let passed = if formals.ellipsis {
            args.clone()
        } else {
            let mut entries = Vec::new();
            for f in &formals.entries {
                match args.get(f.name) {
                    Some(a) => entries.push(a.clone()),
                    None if f.default.is_some() => {}
                    None => {
                        return Err(EvalError::eval(format!(
                            "cannot evaluate a function that has an argument without a value ('{}')\n\
                             Nix attempted to evaluate a function as a top level expression; in\n\
                             this case it must have its arguments supplied either by default\n\
                             values, or passed explicitly with '--arg' or '--argstr'. See\n\
                             https://nixos.org/manual/nix/stable/language/constructs.html#functions.",
                            f.name
                        ))
                        .at(f.pos));
                    }
                }
            }
            // Formals are sorted by symbol, so the entries are too.
            Rc::new(Attrs { entries })
        };
        self.call(&v, &[Value::Attrs(passed)], Pos::NONE)
    }

    // -----------------------------------------------------------------------------------------
    // Forcing

    #[inline]
    fn check_interrupt(&mut self) -> Result<()> {
        self.check_interrupt_after(1)
    }

    /// Counts `calls` calls and polls the interrupt flag whenever the count crosses a multiple
    /// of 1024.
    #[inline]
    fn check_interrupt_after(&mut self, calls: u32) -> Result<()> {
        let old = self.tick;
        self.tick = old.wrapping_add(calls);
        if (old ^ self.tick) & !0x3ff != 0
            && let Some(flag) = &self.config.interrupt
            && flag.load(Ordering::Relaxed)
        {
            return Err(EvalError::new(
                ErrorKind::Interrupted,
                "interrupted by the user",
            ));
        }
        Ok(())
    }

    /// Forces a value to weak head normal form. `pos` is where the value is needed (used for
    /// infinite recursion errors).
    #[inline(always)]
    pub fn force(&mut self, v: &Value, pos: Pos) -> Result<Value> {
        match v {
            Value::Thunk(t) => self.force_thunk(t, pos),
            _ => Ok(v.clone()),
        }
    }

    #[inline]
    pub fn force_thunk(&mut self, t: &Rc<Thunk>, pos: Pos) -> Result<Value> {
        if let Some(v) = t.value() {
            return Ok(v);
        }
        self.force_thunk_slow(t, pos)
    }

    /// [`Evaluator::force_thunk`] of a thunk that is not evaluated yet (out of line, so the
    /// common evaluated case stays small enough to inline).
    #[inline(never)]
    fn force_thunk_slow(&mut self, t: &Rc<Thunk>, pos: Pos) -> Result<Value> {
        match t.phase() {
            ThunkPhase::Done => {
                if let Some(v) = t.value() {
                    return Ok(v);
                }
            }
            ThunkPhase::Blackhole => {
                return Err(EvalError::new(
                    ErrorKind::InfiniteRecursion,
                    "infinite recursion encountered",
                )
                .at(pos));
            }
            ThunkPhase::Cleared => {
                return Err(EvalError::eval(
                    "internal error: value used after its evaluation ended",
                ));
            }
            ThunkPhase::Unevaluated => {}
        }
        let prev = t.replace(ThunkState::Blackhole);
        if self.native_depth >= MAX_NATIVE_DEPTH {
            t.replace(prev);
            return Err(EvalError::native_stack_overflow());
        }
        self.native_depth += 1;
        let res = match &prev {
            ThunkState::Pending(e, env) => self.eval(e, env),
            ThunkState::Apply(f, a) => self
                .force(f, Pos::NONE)
                .and_then(|f| self.call(&f, std::slice::from_ref(a), Pos::NONE)),
            ThunkState::Native(f) => f(self),
            _ => unreachable!("handled above"),
        };
        self.native_depth -= 1;
        match res {
            Ok(v) => {
                t.set_done(v.clone());
                if let Some(undo) = &mut self.undo {
                    undo.push((t.clone(), prev));
                }
                Ok(v)
            }
            Err(e) => {
                t.replace(prev);
                let e = if e.kind() == ErrorKind::InfiniteRecursion {
                    e.at_if_none(pos)
                } else {
                    e
                };
                Err(e)
            }
        }
    }

    /// Forces deeply (lists and attribute values recursively), as `deepSeq` / `--strict`.
    pub fn force_deep(&mut self, v: &Value, pos: Pos) -> Result<Value> {
        let mut seen = std::collections::HashSet::new();
        self.force_deep_inner(v, pos, &mut seen)
    }

    fn force_deep_inner(
        &mut self,
        v: &Value,
        pos: Pos,
        seen: &mut std::collections::HashSet<usize>,
    ) -> Result<Value> {
        if self.native_depth >= MAX_NATIVE_DEPTH {
            return Err(EvalError::native_stack_overflow());
        }
        self.native_depth += 1;
        let r = self.force_deep_step(v, pos, seen);
        self.native_depth -= 1;
        r
    }

    fn force_deep_step(
        &mut self,
        v: &Value,
        pos: Pos,
        seen: &mut std::collections::HashSet<usize>,
    ) -> Result<Value> {
        let v = self.force(v, pos)?;
        match &v {
            Value::Attrs(a) => {
                if !seen.insert(Rc::as_ptr(a) as *const u8 as usize) {
                    return Ok(v);
                }
                for attr in &a.entries {
                    self.force_deep_inner(&attr.value, attr.pos, seen)
                        .map_err(|e| {
                            e.with_trace(
                                attr.pos,
                                format!("while evaluating the attribute '{}'", attr.name),
                            )
                        })?;
                }
            }
            Value::List(l) => {
                if !seen.insert(l.as_ptr() as *const u8 as usize) {
                    return Ok(v);
                }
                for x in l.iter() {
                    self.force_deep_inner(x, pos, seen)?;
                }
            }
            _ => {}
        }
        Ok(v)
    }

    // -----------------------------------------------------------------------------------------
    // Typed forcing helpers (Nix's forceX with its messages)

    /// The value as Nix shows it inside error messages.
    pub fn show_for_error(&self, v: &Value) -> String {
        print::print_error_value(v)
    }

    fn type_err(&self, expected: &str, v: &Value) -> EvalError {
        EvalError::type_error(format!(
            "expected {} but found {}: {}",
            expected,
            v.type_desc(),
            self.show_for_error(v)
        ))
    }

    /// Forces to an integer (`expected an integer but found …`), adding `ctx` as a trace frame.
    pub fn force_int(&mut self, v: &Value, pos: Pos, ctx: &str) -> Result<i64> {
        let r = self.force(v, pos).and_then(|v| match v {
            Value::Int(i) => Ok(i),
            other => Err(self.type_err("an integer", &other).at(pos)),
        });
        r.map_err(|e| e.with_trace(pos, ctx))
    }

    /// Forces to a float; integers are converted.
    pub fn force_float(&mut self, v: &Value, pos: Pos, ctx: &str) -> Result<f64> {
        let r = self.force(v, pos).and_then(|v| match v {
            Value::Int(i) => Ok(i as f64),
            Value::Float(f) => Ok(f),
            other => Err(self.type_err("a float", &other).at(pos)),
        });
        r.map_err(|e| e.with_trace(pos, ctx))
    }

    pub fn force_bool(&mut self, v: &Value, pos: Pos, ctx: &str) -> Result<bool> {
        let r = self.force(v, pos).and_then(|v| match v {
            Value::Bool(b) => Ok(b),
            other => Err(self.type_err("a Boolean", &other).at(pos)),
        });
        r.map_err(|e| e.with_trace(pos, ctx))
    }

    /// Forces to an attribute set. As in Nix, `ctx` is attached only to the type error.
    pub fn force_attrs(&mut self, v: &Value, pos: Pos, ctx: &str) -> Result<Rc<Attrs>> {
        match self.force(v, pos)? {
            Value::Attrs(a) => Ok(a),
            other => Err(self.type_err("a set", &other).with_trace(pos, ctx)),
        }
    }

    /// Forces to a list. As in Nix, `ctx` is attached only to the type error.
    pub fn force_list(&mut self, v: &Value, pos: Pos, ctx: &str) -> Result<List> {
        match self.force(v, pos)? {
            Value::List(l) => Ok(l),
            other => Err(self.type_err("a list", &other).with_trace(pos, ctx)),
        }
    }

    /// Forces to a function (lambda, builtin, or set with `__functor`).
    pub fn force_function(&mut self, v: &Value, pos: Pos, ctx: &str) -> Result<Value> {
        let r = self.force(v, pos).and_then(|v| {
            if v.is_function() || self.is_functor(&v) {
                Ok(v)
            } else {
                Err(self.type_err("a function", &v).at(pos))
            }
        });
        r.map_err(|e| e.with_trace(pos, ctx))
    }

    pub fn is_functor(&self, v: &Value) -> bool {
        matches!(v, Value::Attrs(a) if a.get(self.syms.functor).is_some())
    }

    /// Forces to a string (with its context).
    pub fn force_string(&mut self, v: &Value, pos: Pos, ctx: &str) -> Result<Rc<NixString>> {
        let r = self.force(v, pos).and_then(|v| match v {
            Value::String(s) => Ok(s),
            other => Err(self.type_err("a string", &other).at(pos)),
        });
        r.map_err(|e| e.with_trace(pos, ctx))
    }

    /// Forces to a string that must not have a context.
    pub fn force_string_no_ctx(&mut self, v: &Value, pos: Pos, ctx: &str) -> Result<Rc<NixString>> {
        let s = self.force_string(v, pos, ctx)?;
        if let Some(c) = &s.context
            && let Some(first) = c.iter().next()
        {
            // Nix shows the context element with base names (`=…-a.drv`, `!out!…-a.drv`).
            let prefix = format!("{}/", self.config.store_dir.trim_end_matches('/'));
            let shown = first.replacen(&prefix, "", 1);
            return Err(EvalError::eval(format!(
                "the string '{}' is not allowed to refer to a store path (such as '{}')",
                s.as_str_lossy(),
                shown
            ))
            .with_trace(pos, ctx));
        }
        Ok(s)
    }

    /// Whether `v` (forced) is a derivation (`type = "derivation"`).
    pub fn is_derivation(&mut self, v: &Value) -> Result<bool> {
        let Value::Attrs(a) = v else { return Ok(false) };
        let Some(t) = a.get(self.syms.type_) else {
            return Ok(false);
        };
        let (tv, tp) = (t.value.clone(), t.pos);
        let t = self.force(&tv, tp)?;
        Ok(matches!(&t, Value::String(s) if &*s.bytes == b"derivation"))
    }

    /// Nix's `coerceToString`. Appends the string's context to `context`.
    pub fn coerce_to_string(
        &mut self,
        v: &Value,
        pos: Pos,
        ctx: &str,
        coerce_more: bool,
        copy_to_store: bool,
        context: &mut Context,
    ) -> Result<Vec<u8>> {
        let v = self.force(v, pos)?;
        match &v {
            Value::String(s) => {
                if let Some(c) = &s.context {
                    context.extend(c.iter().cloned());
                }
                return Ok(s.bytes.to_vec());
            }
            Value::Path(p) => {
                if copy_to_store {
                    let sp = crate::builtins::paths::copy_path_to_store(self, p, pos)?;
                    context.insert(sp.clone());
                    return Ok(sp.into_bytes());
                }
                return Ok(p.as_bytes().to_vec());
            }
            Value::Attrs(a) => {
                if let Some(f) = a.get(self.syms.to_string) {
                    let (fv, fpos) = (f.value.clone(), f.pos);
                    let fv = self.force(&fv, fpos)?;
                    let r = self.call(&fv, std::slice::from_ref(&v), pos)?;
                    return self.coerce_to_string(
                        &r,
                        pos,
                        "while evaluating the result of the `__toString` attribute",
                        coerce_more,
                        copy_to_store,
                        context,
                    );
                }
                if let Some(o) = a.get(self.syms.out_path) {
                    let ov = o.value.clone();
                    return self.coerce_to_string(
                        &ov,
                        pos,
                        ctx,
                        coerce_more,
                        copy_to_store,
                        context,
                    );
                }
            }
            _ if coerce_more => match &v {
                Value::Bool(true) => return Ok(b"1".to_vec()),
                Value::Bool(false) | Value::Null => return Ok(Vec::new()),
                Value::Int(i) => return Ok(i.to_string().into_bytes()),
                Value::Float(f) => return Ok(format!("{f:.6}").into_bytes()),
                Value::List(l) => {
                    let mut out = Vec::new();
                    let n = l.len();
                    for (i, x) in l.iter().enumerate() {
                        let part = self
                            .coerce_to_string(
                                x,
                                pos,
                                "while evaluating one element of the list",
                                coerce_more,
                                copy_to_store,
                                context,
                            )
                            .map_err(|e| e.with_trace(pos, ctx))?;
                        out.extend_from_slice(&part);
                        if i + 1 < n {
                            let x = self.force(x, pos)?;
                            if !matches!(&x, Value::List(l2) if l2.is_empty()) {
                                out.push(b' ');
                            }
                        }
                    }
                    return Ok(out);
                }
                _ => {}
            },
            _ => {}
        }
        Err(EvalError::type_error(format!(
            "cannot coerce {} to a string: {}",
            v.type_desc(),
            self.show_for_error(&v)
        ))
        .with_trace(pos, ctx))
    }

    // -----------------------------------------------------------------------------------------
    // Calling

    /// Calls a function value with arguments (lazy values). `pos` is the call site.
    pub fn call(&mut self, f: &Value, args: &[Value], pos: Pos) -> Result<Value> {
        if self.call_depth >= MAX_CALL_DEPTH {
            return Err(EvalError::eval("stack overflow; max-call-depth exceeded").at(pos));
        }
        self.call_depth += 1;
        // Fast paths for the common shapes: one lambda application, one saturated builtin call.
        let r = match f {
            Value::Lambda(c) if args.len() == 1 => self.call_lambda(c, &args[0], pos),
            // `f a b` of `x: y: …` (e.g. `foldl'`'s operator): bind `a` and enter the inner
            // lambda directly, as `call_inner` would, without its generic loop.
            Value::Lambda(c) if args.len() == 2 && c.def.formals.is_none() => match &*c.def.body {
                Expr::Lambda(inner) => self.call_curried2(c, inner, args, pos),
                _ => self.call_inner(f, args, pos),
            },
            Value::PrimOp(op) if args.len() == op.arity => self.call_primop(op, args, pos),
            _ => self.call_inner(f, args, pos),
        };
        self.call_depth -= 1;
        r
    }

    /// A saturated builtin call (the caller counts the call depth).
    #[inline]
    fn call_primop(
        &mut self,
        op: &crate::builtins::PrimOp,
        args: &[Value],
        pos: Pos,
    ) -> Result<Value> {
        (op.func)(self, Pos::NONE, args).map_err(|e| {
            if op.add_trace {
                e.with_trace(pos, format!("while calling the '{}' builtin", op.name))
            } else {
                e
            }
        })
    }

    /// `f a …` where `f` names a builtin of the base environment taking exactly these
    /// arguments (`__sub a b`, `map f l`, …): the same as evaluating `f` and calling it, without
    /// the detour through a value.
    fn call_global_primop(
        &mut self,
        op: &crate::builtins::PrimOp,
        args: &[Rc<Expr>],
        env: &Rc<Env>,
        pos: Pos,
    ) -> Result<Value> {
        if self.call_depth >= MAX_CALL_DEPTH {
            return Err(EvalError::eval("stack overflow; max-call-depth exceeded").at(pos));
        }
        self.call_depth += 1;
        let r = match args {
            [a] => {
                let a = [self.lazy(a, env)];
                self.call_primop(op, &a, pos)
            }
            [a, b] => {
                let a = [self.lazy(a, env), self.lazy(b, env)];
                self.call_primop(op, &a, pos)
            }
            _ => {
                let argv: Vec<Value> = args.iter().map(|a| self.lazy(a, env)).collect();
                self.call_primop(op, &argv, pos)
            }
        };
        self.call_depth -= 1;
        r
    }

    fn call_inner(&mut self, f: &Value, mut args: &[Value], pos: Pos) -> Result<Value> {
        let mut cur = self.force(f, pos)?;
        while !args.is_empty() {
            self.check_interrupt()?;
            match &cur {
                Value::Lambda(c) => {
                    let (mut def, mut env) = (c.def.clone(), c.env.clone());
                    // A curried application `f a b …` of `x: y: …`: bind `a` and go straight
                    // into the inner lambda's frame instead of allocating the intermediate
                    // closure, which nothing can observe.
                    while args.len() > 1
                        && def.formals.is_none()
                        && let Expr::Lambda(inner) = &*def.body
                    {
                        env = Env::new_one(Some(env), args[0].clone());
                        def = inner.clone();
                        args = &args[1..];
                        self.check_interrupt()?;
                    }
                    cur = self.call_def(&def, &env, &args[0], pos)?;
                    args = &args[1..];
                }
                Value::PrimOp(op) => {
                    let op = op.clone();
                    if args.len() < op.arity {
                        return Ok(Value::PrimOpApp(Rc::new(PrimOpApp {
                            op,
                            args: args.to_vec(),
                        })));
                    }
                    let (now, rest) = args.split_at(op.arity);
                    cur = (op.func)(self, Pos::NONE, now).map_err(|e| {
                        if op.add_trace {
                            e.with_trace(pos, format!("while calling the '{}' builtin", op.name))
                        } else {
                            e
                        }
                    })?;
                    args = rest;
                }
                Value::PrimOpApp(app) => {
                    let app = app.clone();
                    let need = app.op.arity - app.args.len();
                    if args.len() < need {
                        let mut all = app.args.clone();
                        all.extend_from_slice(args);
                        return Ok(Value::PrimOpApp(Rc::new(PrimOpApp {
                            op: app.op.clone(),
                            args: all,
                        })));
                    }
                    let (now, rest) = args.split_at(need);
                    let mut all = app.args.clone();
                    all.extend_from_slice(now);
                    let op = app.op.clone();
                    cur = (op.func)(self, Pos::NONE, &all).map_err(|e| {
                        if op.add_trace {
                            e.with_trace(pos, format!("while calling the '{}' builtin", op.name))
                        } else {
                            e
                        }
                    })?;
                    args = rest;
                }
                Value::Attrs(a) if a.get(self.syms.functor).is_some() => {
                    let functor = a.get(self.syms.functor).expect("checked");
                    let (fv, fpos) = (functor.value.clone(), functor.pos);
                    let r = self
                        .force(&fv, fpos)
                        .and_then(|fv| self.call(&fv, &[cur.clone(), args[0].clone()], fpos))
                        .map_err(|e| {
                            e.with_trace(pos, "while calling a functor (an attribute set with a '__functor' attribute)")
                        })?;
                    cur = r;
                    args = &args[1..];
                }
                other => {
                    return Err(EvalError::type_error(format!(
                        "attempt to call something which is not a function but {}: {}",
                        other.type_desc(),
                        self.show_for_error(other)
                    ))
                    .at(pos));
                }
            }
        }
        Ok(cur)
    }

    /// `c a b` where `c` is `x: y: …` (`inner` is `y: …`).
    fn call_curried2(
        &mut self,
        c: &Closure,
        inner: &LambdaDef,
        args: &[Value],
        pos: Pos,
    ) -> Result<Value> {
        // Two applications, counted as `call_inner` counts them.
        self.check_interrupt_after(2)?;
        let env = Env::new_one(Some(c.env.clone()), args[0].clone());
        self.call_def(inner, &env, &args[1], pos)
    }

    fn lambda_name(def: &LambdaDef) -> String {
        match def.name {
            Some(n) => n.as_string(),
            None => "anonymous lambda".to_string(),
        }
    }

    fn call_lambda(&mut self, c: &Rc<Closure>, arg: &Value, pos: Pos) -> Result<Value> {
        self.call_def(&c.def, &c.env, arg, pos)
    }

    /// Applies the lambda `def`, closed over `closure_env`, to `arg`.
    fn call_def(
        &mut self,
        def: &LambdaDef,
        closure_env: &Rc<Env>,
        arg: &Value,
        pos: Pos,
    ) -> Result<Value> {
        let env = match &def.formals {
            None => Env::new_one(Some(closure_env.clone()), arg.clone()),
            Some(formals) => {
                let attrs = self
                    .force_attrs(
                        arg,
                        def.pos,
                        "while evaluating the value passed for the lambda argument",
                    )
                    .map_err(|e| {
                        if pos.is_none() {
                            e
                        } else {
                            e.with_trace(pos, "from call site")
                        }
                    })?;
                let n = usize::from(def.arg.is_some()) + formals.entries.len();
                let has_defaults = formals.entries.iter().any(|f| f.default.is_some());
                let mut used = 0usize;
                let env = if has_defaults {
                    Env::new_recursive(Some(closure_env.clone()), n)
                } else {
                    Env::new_unregistered(Some(closure_env.clone()), n)
                };
                {
                    if def.arg.is_some() {
                        env.push(arg.clone());
                    }
                    for f in &formals.entries {
                        match attrs.get(f.name) {
                            Some(a) => {
                                used += 1;
                                env.push(a.value.clone());
                            }
                            None => match &f.default {
                                Some(d) => {
                                    let v = self.lazy(d, &env);
                                    env.push(v);
                                }
                                None => {
                                    let mut e = EvalError::type_error(format!(
                                        "function '{}' called without required argument '{}'",
                                        Self::lambda_name(def),
                                        f.name
                                    ))
                                    .at(def.pos);
                                    if !pos.is_none() {
                                        e = e.with_trace(pos, "from call site");
                                    }
                                    return Err(e);
                                }
                            },
                        }
                    }
                }
                if !formals.ellipsis && used != attrs.len() {
                    for a in attrs.entries.iter() {
                        if !formals.has(a.name) {
                            let names: Vec<String> =
                                formals.entries.iter().map(|f| f.name.as_string()).collect();
                            let mut e = EvalError::type_error(format!(
                                "function '{}' called with unexpected argument '{}'",
                                Self::lambda_name(def),
                                a.name
                            ))
                            .at(def.pos)
                            .with_suggestions(best_matches(&names, &a.name.as_string()));
                            if !pos.is_none() {
                                e = e.with_trace(pos, "from call site");
                            }
                            return Err(e);
                        }
                    }
                }
                env
            }
        };
        self.eval(&def.body, &env)
    }

    // -----------------------------------------------------------------------------------------
    // Evaluation

    #[inline]
    fn env_at(env: &Rc<Env>, depth: u32) -> &Rc<Env> {
        let mut e = env;
        for _ in 0..depth {
            e = e.parent.as_ref().expect("lowering guarantees frame depth");
        }
        e
    }

    /// The integer `e` evaluates to, if that is known without evaluating anything: an integer
    /// literal, or a variable holding an integer (directly or in an evaluated thunk).
    #[inline]
    fn peek_int(e: &Expr, env: &Rc<Env>) -> Option<i64> {
        match e {
            Expr::Const(Value::Int(i)) => Some(*i),
            Expr::Var { depth, slot, .. } => Self::env_at(env, *depth).peek_int(*slot as usize),
            _ => None,
        }
    }

    /// A lazy value for `e` in `env`: no thunk for constants and already-bound variables (as
    /// Nix's `maybeThunk`; lambdas do get a thunk, which is visible when unforced values print).
    pub fn lazy(&self, e: &Rc<Expr>, env: &Rc<Env>) -> Value {
        match &**e {
            Expr::Const(v) => v.clone(),
            Expr::Global(slot, _) => self.global(*slot).clone(),
            // Nix's ExprList::maybeThunk: an empty list literal is the shared empty list.
            Expr::List(items) if items.is_empty() => Value::List(List::empty()),
            Expr::Var { depth, slot, .. } => {
                let target = Self::env_at(env, *depth);
                if let Some(v) = target.try_get(*slot as usize) {
                    return v;
                }
                Value::Thunk(Thunk::new(ThunkState::Pending(e.clone(), env.clone())))
            }
            _ => Value::Thunk(Thunk::new(ThunkState::Pending(e.clone(), env.clone()))),
        }
    }

    /// Evaluates `e` in `env` to weak head normal form.
    ///
    /// Constants and variables whose value is known (a plain value or an evaluated thunk)
    /// are answered here, small enough to be inlined into callers; everything else goes to
    /// [`Evaluator::eval_compound`]. Always inlined (it is a few instructions): as a call of its
    /// own it was an extra frame on every compound expression.
    #[inline(always)]
    pub fn eval(&mut self, e: &Rc<Expr>, env: &Rc<Env>) -> Result<Value> {
        match &**e {
            Expr::Const(v) => Ok(v.clone()),
            Expr::Global(slot, _) => Ok(self.global(*slot).clone()),
            Expr::Var { depth, slot, pos } => {
                // One clone: of the value, or of an evaluated thunk's value.
                let target = Self::env_at(env, *depth);
                match target.get_resolved(*slot as usize) {
                    Some(Value::Thunk(t)) => self.force_thunk_slow(&t, *pos),
                    Some(v) => Ok(v),
                    None => Ok(Value::Null),
                }
            }
            _ => self.eval_compound(e, env),
        }
    }

    /// [`Evaluator::eval`] of everything but constants and variables.
    #[inline(never)]
    fn eval_compound(&mut self, e: &Rc<Expr>, env: &Rc<Env>) -> Result<Value> {
        match &**e {
            Expr::Const(_) | Expr::Global(..) | Expr::Var { .. } => self.eval(e, env),
            Expr::WithVar { name, withs, pos } => self.eval_with_var(*name, withs, env, *pos),
            Expr::Attrs(a) => self.eval_attrs(a, env),
            Expr::List(items) => {
                // Collected straight into the shared slice (one allocation, no copy).
                Ok(Value::List(
                    items.iter().map(|i| self.lazy(i, env)).collect(),
                ))
            }
            Expr::Lambda(def) => Ok(Value::Lambda(Rc::new(Closure {
                def: def.clone(),
                env: env.clone(),
            }))),
            Expr::Call { f, args, pos } => {
                self.check_interrupt()?;
                if let Expr::Global(slot, _) = &**f
                    && let Value::PrimOp(op) = self.global(*slot)
                    && let op = op.clone()
                    && op.arity == args.len()
                {
                    // `a + b`, `a - b`, `a * b`, `a < b` on operands that already are
                    // integers (literals, or variables holding an integer or an evaluated
                    // thunk of one): the builtin's result without calling it. Peeking forces
                    // nothing, so anything else takes the ordinary call below.
                    if op.int_op != IntOp::None
                        && self.call_depth < MAX_CALL_DEPTH
                        && let [a, b] = &args[..]
                        && let Some(x) = Self::peek_int(a, env)
                        && let Some(y) = Self::peek_int(b, env)
                        && let Some(v) = op.int_op.apply(x, y)
                    {
                        return Ok(v);
                    }
                    return self.call_global_primop(&op, args, env, *pos);
                }
                let fv = self.eval(f, env)?;
                match &args[..] {
                    [a] => {
                        let a = [self.lazy(a, env)];
                        self.call(&fv, &a, *pos)
                    }
                    [a, b] => {
                        let a = [self.lazy(a, env), self.lazy(b, env)];
                        self.call(&fv, &a, *pos)
                    }
                    _ => {
                        let argv: Vec<Value> = args.iter().map(|a| self.lazy(a, env)).collect();
                        self.call(&fv, &argv, *pos)
                    }
                }
            }
            Expr::Select {
                e: inner,
                path,
                default,
                pos,
            } => self.eval_select(inner, path, default.as_ref(), *pos, env),
            Expr::HasAttr { e: inner, path, .. } => self.eval_has_attr(inner, path, env),
            Expr::Let { attrs, body } => {
                let (_, inner_env) = self.build_attrs(attrs, env, false)?;
                self.eval(body, &inner_env)
            }
            Expr::With { ns, body, .. } => {
                let nsv = self.lazy(ns, env);
                let wenv = Env::new_one(Some(env.clone()), nsv);
                self.eval(body, &wenv)
            }
            Expr::If {
                cond,
                then,
                else_,
                pos,
            } => {
                let c = self
                    .eval(cond, env)
                    .map_err(|e| e.with_trace(*pos, "while evaluating a branch condition"))?;
                let b = match c {
                    Value::Bool(b) => b,
                    c => self.force_bool(&c, *pos, "while evaluating a branch condition")?,
                };
                self.eval(if b { then } else { else_ }, env)
            }
            Expr::Assert {
                cond,
                body,
                pos,
                text,
            } => {
                let ctx = "in the condition of the assert statement";
                let c = self.eval(cond, env).map_err(|e| e.with_trace(*pos, ctx))?;
                let b = self.force_bool(&c, *pos, ctx)?;
                if !b {
                    if let Expr::Op {
                        op: BinOp::Eq,
                        l,
                        r,
                        pos: eq_pos,
                    } = &**cond
                    {
                        let r = (|| -> Result<()> {
                            let lv = self.eval(l, env)?;
                            let rv = self.eval(r, env)?;
                            {
                                let _ = eq_pos;
                                self.assert_eq_values(&lv, &rv, Pos::NONE)
                            }
                        })();
                        if let Err(e) = r {
                            if e.kind() == ErrorKind::Assertion {
                                return Err(e.with_trace(
                                    *pos,
                                    format!(
                                        "while evaluating the condition of the assertion '{text}'"
                                    ),
                                ));
                            }
                            return Err(e);
                        }
                    }
                    return Err(EvalError::new(
                        ErrorKind::Assertion,
                        format!("assertion '{text}' failed"),
                    )
                    .at(*pos));
                }
                self.eval(body, env)
            }
            Expr::Op { op, l, r, pos } => self.eval_op(*op, l, r, *pos, env),
            Expr::Not { e: inner, pos } => {
                let v = self
                    .eval(inner, env)
                    .map_err(|e| e.with_trace(*pos, "in the argument of the not operator"))?;
                let b = self.force_bool(&v, *pos, "in the argument of the not operator")?;
                Ok(Value::Bool(!b))
            }
            Expr::Concat {
                parts,
                pos,
                force_string,
            } => {
                // `a + b` on operands that already are integers (see `peek_int`): the sum,
                // without the general concatenation; overflow takes the general path for its
                // error.
                if !*force_string
                    && let [(_, a), (_, b)] = &parts[..]
                    && let Some(x) = Self::peek_int(a, env)
                    && let Some(y) = Self::peek_int(b, env)
                    && let Some(sum) = x.checked_add(y)
                {
                    return Ok(Value::Int(sum));
                }
                self.eval_concat(parts, *pos, *force_string, env)
            }
            Expr::PathConcat { parts, pos } => self.eval_path_concat(parts, *pos, env),
            Expr::CurPos(pos) => Ok(self.pos_value(*pos)),
        }
    }

    /// `{ file, line, column }` for a position (or null).
    pub fn pos_value(&self, pos: Pos) -> Value {
        match source::resolve(pos) {
            Some(r) if matches!(r.origin, Origin::File(_)) => {
                let file = match &r.origin {
                    Origin::File(f) => f.clone(),
                    Origin::String => String::new(),
                };
                Value::attrs(Attrs::from_unsorted(vec![
                    Attr {
                        name: self.syms.file,
                        value: Value::str(&file),
                        pos: Pos::NONE,
                    },
                    Attr {
                        name: self.syms.line,
                        value: Value::Int(r.line as i64),
                        pos: Pos::NONE,
                    },
                    Attr {
                        name: self.syms.column,
                        value: Value::Int(r.column as i64),
                        pos: Pos::NONE,
                    },
                ]))
            }
            _ => Value::Null,
        }
    }

    fn eval_with_var(
        &mut self,
        name: Symbol,
        withs: &[(u32, Pos)],
        env: &Rc<Env>,
        pos: Pos,
    ) -> Result<Value> {
        for &(d, wpos) in withs {
            let wenv = Self::env_at(env, d).clone();
            let ns = wenv.get(0);
            let ns = self.force_attrs(
                &ns,
                wpos,
                "while evaluating the first subexpression of a with expression",
            )?;
            if let Some(a) = ns.get(name) {
                let (v, p) = (a.value.clone(), a.pos);
                let _ = p;
                return self.force(&v, pos);
            }
        }
        Err(EvalError::new(
            ErrorKind::UndefinedVar,
            format!("undefined variable '{name}'"),
        )
        .at(pos))
    }

    /// Builds an attribute set (or `let` bindings). Returns the set (if `want_value`) and the
    /// frame the bindings' plain values see (the body of a `let` is evaluated in it).
    fn build_attrs(
        &mut self,
        a: &AttrsExpr,
        env: &Rc<Env>,
        want_value: bool,
    ) -> Result<(Value, Rc<Env>)> {
        let inner = if a.rec {
            Env::new_recursive(Some(env.clone()), a.attrs.len())
        } else {
            env.clone()
        };
        let from_env = if a.inherit_from.is_empty() {
            None
        } else {
            let vals = a
                .inherit_from
                .iter()
                .map(|e| self.lazy(e, &inner))
                .collect();
            Some(Env::new_filled(Some(inner.clone()), vals))
        };
        let has_overrides =
            a.rec && want_value && a.attrs.iter().any(|d| d.name == self.syms.overrides);
        let mut entries = Vec::with_capacity(if want_value {
            a.attrs.len() + a.dynamic.len()
        } else {
            0
        });
        for d in &a.attrs {
            let target = match d.kind {
                AttrKind::Plain => &inner,
                AttrKind::Inherited => env,
                AttrKind::InheritedFrom => from_env.as_ref().expect("sources frame exists"),
            };
            let v = if has_overrides && d.kind != AttrKind::Inherited {
                Value::Thunk(Thunk::new(ThunkState::Pending(
                    d.value.clone(),
                    target.clone(),
                )))
            } else {
                self.lazy(&d.value, target)
            };
            if a.rec {
                inner.push(v.clone());
            }
            if want_value {
                entries.push(Attr {
                    name: d.name,
                    value: v,
                    pos: d.pos,
                });
            }
        }
        if !want_value {
            return Ok((Value::Null, inner));
        }
        let mut sorted = true;
        if has_overrides {
            let i = a
                .attrs
                .iter()
                .position(|d| d.name == self.syms.overrides)
                .expect("checked");
            let ov = entries[i].value.clone();
            let ov = self.force_attrs(
                &ov,
                Pos::NONE,
                "while evaluating the `__overrides` attribute",
            )?;
            for o in ov.entries.iter() {
                match a.attrs.iter().position(|d| d.name == o.name) {
                    Some(j) => {
                        entries[j] = o.clone();
                        inner.set(j, o.value.clone());
                    }
                    None => {
                        entries.push(o.clone());
                        sorted = false;
                    }
                }
            }
        }
        if a.dynamic.is_empty() {
            let attrs = if sorted {
                Attrs { entries }
            } else {
                Attrs::from_unsorted(entries)
            };
            return Ok((Value::attrs(attrs), inner));
        }
        if !sorted {
            entries = Attrs::from_unsorted(entries).entries;
        }
        let mut extra: Vec<Attr> = Vec::new();
        for d in &a.dynamic {
            let nv = self.eval(&d.name, &inner)?;
            let nv = self.force(&nv, d.pos)?;
            if matches!(nv, Value::Null) {
                continue;
            }
            let s = self.force_string_no_ctx(
                &nv,
                d.pos,
                "while evaluating the name of a dynamic attribute",
            )?;
            let sym = Symbol::intern_bytes(&s.bytes);
            let prev = entries
                .binary_search_by_key(&sym, |x| x.name)
                .ok()
                .map(|i| entries[i].pos)
                .or_else(|| extra.iter().find(|x| x.name == sym).map(|x| x.pos));
            if let Some(p) = prev {
                return Err(EvalError::eval(format!(
                    "dynamic attribute '{}' already defined at {}",
                    sym,
                    source::pos_string(p)
                ))
                .at(d.pos));
            }
            extra.push(Attr {
                name: sym,
                value: self.lazy(&d.value, &inner),
                pos: d.pos,
            });
        }
        entries.extend(extra);
        Ok((Value::attrs(Attrs::from_unsorted(entries)), inner))
    }

    fn eval_attrs(&mut self, a: &AttrsExpr, env: &Rc<Env>) -> Result<Value> {
        Ok(self.build_attrs(a, env, true)?.0)
    }

    fn attr_name(&mut self, n: &AttrName, env: &Rc<Env>) -> Result<Symbol> {
        match n {
            AttrName::Static(s) => Ok(*s),
            AttrName::Dynamic(e, pos) => {
                let v = self.eval(e, env)?;
                let s = self.force_string_no_ctx(&v, *pos, "while evaluating an attribute name")?;
                Ok(Symbol::intern_bytes(&s.bytes))
            }
        }
    }

    fn show_attr_path(&mut self, path: &[AttrName], env: &Rc<Env>) -> String {
        let mut parts = Vec::new();
        for n in path {
            match n {
                AttrName::Static(s) => parts.push(s.as_string()),
                AttrName::Dynamic(e, _) => {
                    match self.attr_name(&AttrName::Dynamic(e.clone(), Pos::NONE), env) {
                        Ok(s) => parts.push(s.as_string()),
                        Err(_) => parts.push("\"${…}\"".to_string()),
                    }
                }
            }
        }
        parts.join(".")
    }

    fn eval_select(
        &mut self,
        inner: &Rc<Expr>,
        path: &[AttrName],
        default: Option<&Rc<Expr>>,
        pos: Pos,
        env: &Rc<Env>,
    ) -> Result<Value> {
        let mut v = self.eval(inner, env)?;
        let mut pos2 = Pos::NONE;
        let res = (|| -> Result<Value> {
            for n in path {
                let name = self.attr_name(n, env)?;
                if let Some(def) = default {
                    let fv = self.force(&v, pos)?;
                    let found = match &fv {
                        Value::Attrs(a) => a.get(name).map(|x| (x.value.clone(), x.pos)),
                        _ => None,
                    };
                    match found {
                        Some((nv, p)) => {
                            v = nv;
                            pos2 = p;
                        }
                        None => return self.eval(def, env),
                    }
                } else {
                    let a = self.force_attrs(&v, pos, "while selecting an attribute")?;
                    match a.get(name) {
                        Some(x) => {
                            v = x.value.clone();
                            pos2 = x.pos;
                        }
                        None => {
                            let names: Vec<String> =
                                a.entries.iter().map(|x| x.name.as_string()).collect();
                            // Nix quotes a name that is not a plain identifier.
                            let shown = print::attr_name_string(&name.bytes());
                            return Err(EvalError::eval(format!("attribute '{shown}' missing"))
                                .at(pos)
                                .with_suggestions(best_matches(&names, &name.as_string())));
                        }
                    }
                }
            }
            self.force(&v, if pos2.is_none() { pos } else { pos2 })
        })();
        match res {
            Ok(v) => Ok(v),
            Err(e) => {
                // Like Nix, no frame for attributes defined in `derivation`'s own Nix code.
                let internal = crate::source::source(pos2.file)
                    .is_some_and(|s| s.origin_name() == "<nix/derivation-internal.nix>");
                if !pos2.is_none() && !internal {
                    let shown = self.show_attr_path(path, env);
                    Err(e.with_trace(pos2, format!("while evaluating the attribute '{shown}'")))
                } else {
                    Err(e)
                }
            }
        }
    }

    fn eval_has_attr(
        &mut self,
        inner: &Rc<Expr>,
        path: &[AttrName],
        env: &Rc<Env>,
    ) -> Result<Value> {
        let mut v = self.eval(inner, env)?;
        for n in path {
            let fv = self.force(&v, Pos::NONE)?;
            let name = self.attr_name(n, env)?;
            match &fv {
                Value::Attrs(a) => match a.get(name) {
                    Some(x) => v = x.value.clone(),
                    None => return Ok(Value::Bool(false)),
                },
                _ => return Ok(Value::Bool(false)),
            }
        }
        Ok(Value::Bool(true))
    }

    fn eval_op(
        &mut self,
        op: BinOp,
        l: &Rc<Expr>,
        r: &Rc<Expr>,
        pos: Pos,
        env: &Rc<Env>,
    ) -> Result<Value> {
        match op {
            BinOp::Eq | BinOp::NEq => {
                let a = self.eval(l, env)?;
                let b = self.eval(r, env)?;
                if let (Value::Int(x), Value::Int(y)) = (&a, &b) {
                    return Ok(Value::Bool((x == y) == (op == BinOp::Eq)));
                }
                let ctx = if op == BinOp::Eq {
                    "while testing two values for equality"
                } else {
                    "while testing two values for inequality"
                };
                let eq = self.eq_values(&a, &b, pos, ctx)?;
                Ok(Value::Bool(if op == BinOp::Eq { eq } else { !eq }))
            }
            BinOp::And | BinOp::Or | BinOp::Impl => {
                let (lctx, rctx) = match op {
                    BinOp::And => (
                        "in the left operand of the AND (&&) operator",
                        "in the right operand of the AND (&&) operator",
                    ),
                    BinOp::Or => (
                        "in the left operand of the OR (||) operator",
                        "in the right operand of the OR (||) operator",
                    ),
                    _ => (
                        "in the left operand of the IMPL (->) operator",
                        "in the right operand of the IMPL (->) operator",
                    ),
                };
                let a = self.eval(l, env).map_err(|e| e.with_trace(pos, lctx))?;
                let a = self.force_bool(&a, pos, lctx)?;
                let short = match op {
                    BinOp::And => (!a).then_some(false),
                    BinOp::Or => a.then_some(true),
                    _ => (!a).then_some(true),
                };
                if let Some(s) = short {
                    return Ok(Value::Bool(s));
                }
                let b = self.eval(r, env).map_err(|e| e.with_trace(pos, rctx))?;
                Ok(Value::Bool(self.force_bool(&b, pos, rctx)?))
            }
            BinOp::Update => {
                let a = self.eval_attrs_ctx(
                    l,
                    env,
                    pos,
                    "in the left operand of the update (//) operator",
                )?;
                let b = self.eval_attrs_ctx(
                    r,
                    env,
                    pos,
                    "in the right operand of the update (//) operator",
                )?;
                if b.is_empty() {
                    return Ok(Value::Attrs(a));
                }
                if a.is_empty() {
                    return Ok(Value::Attrs(b));
                }
                Ok(Value::attrs(a.update(&b)))
            }
            BinOp::ConcatLists => {
                let a = self.eval(l, env)?;
                let b = self.eval(r, env)?;
                self.concat_lists(
                    &[a, b],
                    pos,
                    "while evaluating one of the elements to concatenate",
                )
            }
        }
    }

    /// Nix's `evalAttrs`: evaluates to a set; `ctx` is attached to any error.
    fn eval_attrs_ctx(
        &mut self,
        e: &Rc<Expr>,
        env: &Rc<Env>,
        pos: Pos,
        ctx: &str,
    ) -> Result<Rc<Attrs>> {
        match self.eval(e, env) {
            Ok(Value::Attrs(a)) => Ok(a),
            Ok(other) => Err(self.type_err("a set", &other).with_trace(pos, ctx)),
            Err(err) => Err(err.with_trace(pos, ctx)),
        }
    }

    /// Concatenates lists (Nix's `concatLists` helper).
    pub fn concat_lists(&mut self, lists: &[Value], pos: Pos, ctx: &str) -> Result<Value> {
        let mut forced = Vec::with_capacity(lists.len());
        let mut len = 0;
        let mut non_empty = None;
        for l in lists {
            let l = self.force_list(l, pos, ctx)?;
            len += l.len();
            if !l.is_empty() {
                non_empty = Some(l.clone());
            }
            forced.push(l);
        }
        if let Some(ne) = &non_empty
            && ne.len() == len
        {
            return Ok(Value::List(ne.clone()));
        }
        let mut out = Vec::with_capacity(len);
        for l in forced {
            out.extend(l.iter().cloned());
        }
        Ok(Value::List(List::from(out)))
    }

    fn eval_concat(
        &mut self,
        parts: &[(Pos, Rc<Expr>)],
        pos: Pos,
        force_string: bool,
        env: &Rc<Env>,
    ) -> Result<Value> {
        #[derive(PartialEq)]
        enum T {
            Int,
            Float,
            Str,
            Path,
        }
        // Created on first use: integer and float sums never need one.
        let mut context: Option<Context> = None;
        let mut out: Vec<u8> = Vec::new();
        let mut n: i64 = 0;
        let mut nf: f64 = 0.0;
        let mut first = !force_string;
        let mut ty = T::Str;
        for (ipos, e) in parts {
            let v = self.eval(e, env)?;
            if first {
                ty = match &v {
                    Value::Int(_) => T::Int,
                    Value::Float(_) => T::Float,
                    Value::Path(_) => T::Path,
                    _ => T::Str,
                };
            }
            match ty {
                T::Int => match &v {
                    Value::Int(i) => match n.checked_add(*i) {
                        Some(x) => n = x,
                        None => {
                            return Err(EvalError::eval(format!(
                                "integer overflow in adding {n} + {i}"
                            ))
                            .at(*ipos));
                        }
                    },
                    Value::Float(f) => {
                        ty = T::Float;
                        nf = n as f64 + f;
                    }
                    other => {
                        return Err(EvalError::eval(format!(
                            "cannot add {} to an integer",
                            other.type_desc()
                        ))
                        .at(*ipos));
                    }
                },
                T::Float => match &v {
                    Value::Int(i) => nf += *i as f64,
                    Value::Float(f) => nf += f,
                    other => {
                        return Err(EvalError::eval(format!(
                            "cannot add {} to a float",
                            other.type_desc()
                        ))
                        .at(*ipos));
                    }
                },
                // A string part: what `coerce_to_string` does for one (its context, its
                // bytes), without the intermediate copy.
                T::Str | T::Path if matches!(v, Value::String(_)) => {
                    if let Value::String(s) = &v {
                        if let Some(c) = &s.context {
                            context
                                .get_or_insert_with(Context::new)
                                .extend(c.iter().cloned());
                        }
                        out.extend_from_slice(&s.bytes);
                    }
                }
                T::Str | T::Path => {
                    let s = self.coerce_to_string(
                        &v,
                        *ipos,
                        "while evaluating a path segment",
                        false,
                        ty == T::Str,
                        context.get_or_insert_with(Context::new),
                    )?;
                    out.extend_from_slice(&s);
                }
            }
            first = false;
        }
        Ok(match ty {
            T::Int => Value::Int(n),
            T::Float => Value::Float(nf),
            T::Path => {
                if context.as_ref().is_some_and(|c| !c.is_empty()) {
                    return Err(EvalError::eval(
                        "a string that refers to a store path cannot be appended to a path",
                    )
                    .at(pos));
                }
                let s = String::from_utf8_lossy(&out).into_owned();
                Value::Path(Rc::new(lower::canon_path(&s)))
            }
            T::Str => Value::string_ctx(out, context.unwrap_or_default()),
        })
    }

    fn eval_path_concat(
        &mut self,
        parts: &[(Pos, Rc<Expr>)],
        pos: Pos,
        env: &Rc<Env>,
    ) -> Result<Value> {
        let mut context = Context::new();
        let mut out: Vec<u8> = Vec::new();
        for (ipos, e) in parts {
            let v = self.eval(e, env)?;
            let s = self.coerce_to_string(
                &v,
                *ipos,
                "while evaluating a path segment",
                false,
                false,
                &mut context,
            )?;
            out.extend_from_slice(&s);
        }
        if !context.is_empty() {
            return Err(EvalError::eval(
                "a string that refers to a store path cannot be appended to a path",
            )
            .at(pos));
        }
        let s = String::from_utf8_lossy(&out).into_owned();
        Ok(Value::Path(Rc::new(lower::canon_path(&s))))
    }

    // -----------------------------------------------------------------------------------------
    // Equality and comparison

    /// Nix's `eqValues` (deep equality; functions are never equal; derivations compare by
    /// `outPath`).
    pub fn eq_values(&mut self, a: &Value, b: &Value, pos: Pos, ctx: &str) -> Result<bool> {
        let _ = ctx;
        // Nix: the very same value cell is equal to itself (even a function).
        if let (Value::Thunk(x), Value::Thunk(y)) = (a, b)
            && Rc::ptr_eq(x, y)
        {
            return Ok(true);
        }
        let a = self.force(a, pos)?;
        let b = self.force(b, pos)?;
        Ok(match (&a, &b) {
            (Value::Int(x), Value::Int(y)) => x == y,
            (Value::Float(x), Value::Float(y)) => x == y,
            (Value::Int(x), Value::Float(y)) | (Value::Float(y), Value::Int(x)) => {
                (*x as f64) == *y
            }
            (Value::Bool(x), Value::Bool(y)) => x == y,
            (Value::Null, Value::Null) => true,
            (Value::String(x), Value::String(y)) => x.bytes == y.bytes,
            (Value::Path(x), Value::Path(y)) => x == y,
            (Value::List(x), Value::List(y)) => {
                if x.len() != y.len() {
                    return Ok(false);
                }
                if List::ptr_eq(x, y) {
                    return Ok(true);
                }
                for (i, j) in x.iter().zip(y.iter()) {
                    if !self.eq_values(i, j, pos, ctx)? {
                        return Ok(false);
                    }
                }
                true
            }
            (Value::Attrs(x), Value::Attrs(y)) => {
                if Rc::ptr_eq(x, y) {
                    return Ok(true);
                }
                if self.is_derivation(&a)? && self.is_derivation(&b)? {
                    let (ox, oy) = (x.get(self.syms.out_path), y.get(self.syms.out_path));
                    if let (Some(ox), Some(oy)) = (ox, oy) {
                        let (vx, vy) = (ox.value.clone(), oy.value.clone());
                        return self.eq_values(
                            &vx,
                            &vy,
                            pos,
                            "while comparing a derivation by its 'outPath' attribute",
                        );
                    }
                }
                if x.len() != y.len() {
                    return Ok(false);
                }
                for (i, j) in x.entries.iter().zip(y.entries.iter()) {
                    if i.name != j.name {
                        return Ok(false);
                    }
                    if !self.eq_values(&i.value, &j.value, pos, ctx)? {
                        return Ok(false);
                    }
                }
                true
            }
            (Value::Lambda(_) | Value::PrimOp(_) | Value::PrimOpApp(_), _)
            | (_, Value::Lambda(_) | Value::PrimOp(_) | Value::PrimOpApp(_)) => false,
            _ => false,
        })
    }

    /// For failed `assert a == b`: Nix 2.26's `assertEqValues`, explaining the difference as an
    /// assertion error (catchable).
    fn assert_eq_values(&mut self, a: &Value, b: &Value, pos: Pos) -> Result<()> {
        let a = self.force(a, pos)?;
        let b = self.force(b, pos)?;
        let fail = |m: String| Err(EvalError::new(ErrorKind::Assertion, m));
        let show = |s: &Self, v: &Value| s.show_for_error(v);
        let num = |v: &Value| matches!(v, Value::Int(_) | Value::Float(_));
        if num(&a) && num(&b) {
            if self.eq_values(&a, &b, pos, "in an equality assertion")? {
                return Ok(());
            }
            return fail(format!(
                "{} with value '{}' is not equal to {} with value '{}'",
                a.type_desc(),
                show(self, &a),
                b.type_desc(),
                show(self, &b)
            ));
        }
        let same_type = a.type_name() == b.type_name();
        if !same_type {
            return fail(format!(
                "{} of value '{}' is not equal to {} of value '{}'",
                a.type_desc(),
                show(self, &a),
                b.type_desc(),
                show(self, &b)
            ));
        }
        match (&a, &b) {
            (Value::Int(x), Value::Int(y)) => {
                if x != y {
                    return fail(format!("integer '{x}' is not equal to integer '{y}'"));
                }
                Ok(())
            }
            (Value::Float(x), Value::Float(y)) => {
                if x != y {
                    return fail(format!("float '{x:.6}' is not equal to float '{y:.6}'"));
                }
                Ok(())
            }
            (Value::Bool(x), Value::Bool(y)) => {
                if x != y {
                    return fail(format!("boolean '{}' is not equal to boolean '{}'", show(self, &a), show(self, &b)));
                }
                Ok(())
            }
            (Value::String(x), Value::String(y)) => {
                let cx = x.bytes.split(|c| *c == 0).next().unwrap_or(&[]);
                let cy = y.bytes.split(|c| *c == 0).next().unwrap_or(&[]);
                if cx != cy {
                    return fail(format!("string '{}' is not equal to string '{}'", show(self, &a), show(self, &b)));
                }
                Ok(())
            }
            (Value::Path(x), Value::Path(y)) => {
                if x != y {
                    return fail(format!("path '{}' is not equal to path '{}'", show(self, &a), show(self, &b)));
                }
                Ok(())
            }
            (Value::Null, Value::Null) => Ok(()),
            (Value::List(x), Value::List(y)) => {
                if x.len() != y.len() {
                    return fail(format!(
                        "list of size '{}' is not equal to list of size '{}', left hand side is '{}', right hand side is '{}'",
                        x.len(),
                        y.len(),
                        show(self, &a),
                        show(self, &b)
                    ));
                }
                for (i, (p, q)) in x.iter().zip(y.iter()).enumerate() {
                    self.assert_eq_values(p, q, pos).map_err(|e| e.with_trace(pos, format!("while comparing list element {i}")))?;
                }
                Ok(())
            }
            (Value::Attrs(x), Value::Attrs(y)) => {
                if self.is_derivation(&a)? && self.is_derivation(&b)? {
                    let (ox, oy) = (x.get(self.syms.out_path).cloned(), y.get(self.syms.out_path).cloned());
                    if let (Some(ox), Some(oy)) = (ox, oy) {
                        return self.assert_eq_values(&ox.value, &oy.value, pos).map_err(|e| {
                            e.with_trace(pos, "while comparing a derivation by its 'outPath' attribute")
                        });
                    }
                }
                if x.len() != y.len() {
                    return fail(format!(
                        "attribute names of attribute set '{}' differs from attribute set '{}'",
                        show(self, &a),
                        show(self, &b)
                    ));
                }
                for (i, j) in x.entries.iter().zip(y.entries.iter()) {
                    if i.name != j.name {
                        if y.get(i.name).is_none() {
                            return fail(format!(
                                "attribute name '{}' is contained in '{}', but not in '{}'",
                                i.name,
                                show(self, &a),
                                show(self, &b)
                            ));
                        }
                        return fail(format!(
                            "attribute name '{}' is missing in '{}', but is contained in '{}'",
                            j.name,
                            show(self, &a),
                            show(self, &b)
                        ));
                    }
                    self.assert_eq_values(&i.value, &j.value, pos).map_err(|e| {
                        let mut e = e;
                        if !j.pos.is_none() {
                            e = e.with_trace(j.pos, "where right hand side is");
                        }
                        if !i.pos.is_none() {
                            e = e.with_trace(i.pos, "where left hand side is");
                        }
                        e.with_trace(pos, format!("while comparing attribute '{}'", i.name))
                    })?;
                }
                Ok(())
            }
            _ => fail("distinct functions and immediate comparisons of identical functions compare as unequal".to_string()),
        }
    }

    /// Nix's `CompareValues` (`<` of `lessThan` and `sort`): numbers, strings, paths, and
    /// lists lexicographically. Both values must already be forced. `ctx`, if non-empty, is
    /// added as a position-less frame to errors.
    pub fn less_than(&mut self, a: &Value, b: &Value, ctx: &str) -> Result<bool> {
        let r = self.less_than_inner(a, b);
        r.map_err(|e| {
            if ctx.is_empty() {
                e
            } else {
                e.with_trace(Pos::NONE, ctx)
            }
        })
    }

    fn less_than_inner(&mut self, a: &Value, b: &Value) -> Result<bool> {
        let a = self.force(a, Pos::NONE)?;
        let b = self.force(b, Pos::NONE)?;
        match (&a, &b) {
            (Value::Float(x), Value::Int(y)) => Ok(*x < *y as f64),
            (Value::Int(x), Value::Float(y)) => Ok((*x as f64) < *y),
            (Value::Int(x), Value::Int(y)) => Ok(x < y),
            (Value::Float(x), Value::Float(y)) => Ok(x < y),
            (Value::String(x), Value::String(y)) => {
                let cx = x.bytes.split(|c| *c == 0).next().unwrap_or(&[]);
                let cy = y.bytes.split(|c| *c == 0).next().unwrap_or(&[]);
                Ok(cx < cy)
            }
            (Value::Path(x), Value::Path(y)) => Ok(x.as_bytes() < y.as_bytes()),
            (Value::List(x), Value::List(y)) => {
                let mut i = 0;
                loop {
                    if i == y.len() {
                        return Ok(false);
                    }
                    if i == x.len() {
                        return Ok(true);
                    }
                    if !self.eq_values(&x[i], &y[i], Pos::NONE, "")? {
                        return self.less_than(&x[i], &y[i], "while comparing two list elements");
                    }
                    i += 1;
                }
            }
            _ if a.type_name() != b.type_name() => Err(EvalError::eval(format!(
                "cannot compare {} with {}",
                a.type_desc(),
                b.type_desc()
            ))),
            _ => Err(EvalError::eval(format!(
                "cannot compare {} with {}; values of that type are incomparable",
                a.type_desc(),
                b.type_desc()
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn evaluator() -> Evaluator {
        Evaluator::new(Config::pure_for_tests())
    }

    fn value(ev: &mut Evaluator, text: &str) -> Value {
        let e = ev
            .parse(Origin::String, text.as_bytes(), "/")
            .expect("test expression parses");
        let v = ev.eval_root(&e).expect("test expression evaluates");
        ev.force_deep(&v, Pos::NONE).expect("test value forces")
    }

    /// Expected values from `nix-instantiate --eval --strict -E … --arg … --argstr …` (2.26).
    #[test]
    fn auto_call_passes_arg_and_argstr() {
        let mut ev = evaluator();
        let f = value(&mut ev, "{ a, b ? 2, ... }@args: [ a b (args.c or null) ]");
        let args = ev
            .auto_args(&[
                ("a".into(), AutoArg::Expr("1 + 1".into())),
                ("c".into(), AutoArg::Str("x".into())),
                ("d".into(), AutoArg::Expr("throw \"unused\"".into())),
            ])
            .expect("arguments parse");
        let r = ev.auto_call_function(&f, &args).expect("call succeeds");
        let r = ev.force_deep(&r, Pos::NONE).expect("result forces");
        let want = value(&mut ev, "[ 2 2 \"x\" ]");
        assert!(ev.eq_values(&r, &want, Pos::NONE, "").expect("comparable"));

        // Without `...` only the accepted arguments are passed (no "unexpected argument").
        let g = value(&mut ev, "{ a, b ? 3 }: a + b");
        let r = ev.auto_call_function(&g, &args).expect("call succeeds");
        assert!(matches!(r, Value::Int(5)));

        // A formal with neither an argument nor a default.
        let h = value(&mut ev, "{ a, b }: a");
        let e = ev.auto_call_function(&h, &args).expect_err("b is missing");
        assert!(
            e.msg().starts_with(
                "cannot evaluate a function that has an argument without a value ('b')\n\
                 Nix attempted to evaluate a function as a top level expression; in\n"
            ),
            "{}",
            e.msg()
        );

        // Syntax errors in `--arg` expressions are reported when the arguments are built.
        assert!(
            ev.auto_args(&[("a".into(), AutoArg::Expr("1 +".into()))])
                .is_err()
        );
        // Other values are returned as they are.
        let n = value(&mut ev, "42");
        assert!(matches!(
            ev.auto_call_function(&n, &args),
            Ok(Value::Int(42))
        ));
    }

    #[test]
    fn nix_config_settings() {
        let text = "# a comment\nabort-on-warn = true # trailing\nother = x\n";
        assert_eq!(
            nix_config_setting(text, "abort-on-warn").as_deref(),
            Some("true")
        );
        assert_eq!(nix_config_setting(text, "missing"), None);
        assert_eq!(
            nix_config_setting("a = 1\na = 2", "a").as_deref(),
            Some("2")
        );
    }
}

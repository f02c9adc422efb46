//! String-context builtins: getContext, hasContext, appendContext, unsafeDiscardStringContext,
//! unsafeDiscardOutputDependency, addDrvOutputDependencies.
//!
//! Why it exists: string contexts are how Nix tracks which store paths a string refers to. The
//! encoding (see `value::Context`) is `/nix/store/…` (opaque), `=/nix/store/….drv` (derivation
//! with all outputs) and `!OUT!/nix/store/….drv` (one built output). Invariant: these builtins
//! only rewrite that set, never the string's bytes.

use std::collections::BTreeMap;

use crate::builtins::Registry;
use crate::error::{EvalError, Result};
use crate::eval::Evaluator;
use crate::source::Pos;
use crate::symbol::Symbol;
use crate::value::{Attr, Attrs, Context, Value};

pub(crate) fn register(r: &mut Registry) {
    r.primop("__getContext", 1, prim_get_context);
    r.primop("__hasContext", 1, prim_has_context);
    r.primop("__appendContext", 2, prim_append_context);
    r.primop("__unsafeDiscardStringContext", 1, prim_discard);
    r.primop(
        "__unsafeDiscardOutputDependency",
        1,
        prim_discard_output_dependency,
    );
    r.primop(
        "__addDrvOutputDependencies",
        1,
        prim_add_drv_output_dependencies,
    );
}

fn prim_discard(ev: &mut Evaluator, pos: Pos, args: &[Value]) -> Result<Value> {
    let mut ctx = Context::new();
    let s = ev.coerce_to_string(
        &args[0],
        pos,
        "while evaluating the argument passed to builtins.unsafeDiscardStringContext",
        false,
        true,
        &mut ctx,
    )?;
    Ok(Value::string(s))
}

fn prim_has_context(ev: &mut Evaluator, pos: Pos, args: &[Value]) -> Result<Value> {
    let s = ev.force_string(
        &args[0],
        pos,
        "while evaluating the argument passed to builtins.hasContext",
    )?;
    Ok(Value::Bool(s.has_context()))
}

fn prim_discard_output_dependency(ev: &mut Evaluator, pos: Pos, args: &[Value]) -> Result<Value> {
    let mut ctx = Context::new();
    let s = ev.coerce_to_string(
        &args[0],
        pos,
        "while evaluating the argument passed to builtins.unsafeDiscardOutputDependency",
        false,
        true,
        &mut ctx,
    )?;
    let ctx2 = ctx
        .into_iter()
        .map(|c| match c.strip_prefix('=') {
            Some(p) => p.to_string(),
            None => c,
        })
        .collect();
    Ok(Value::string_ctx(s, ctx2))
}

fn prim_add_drv_output_dependencies(ev: &mut Evaluator, pos: Pos, args: &[Value]) -> Result<Value> {
    let mut ctx = Context::new();
    let s = ev.coerce_to_string(
        &args[0],
        pos,
        "while evaluating the argument passed to builtins.addDrvOutputDependencies",
        false,
        true,
        &mut ctx,
    )?;
    if ctx.len() != 1 {
        return Err(EvalError::eval(format!(
            "context of string '{}' must have exactly one element, but has {}",
            String::from_utf8_lossy(&s),
            ctx.len()
        ))
        .at(pos));
    }
    let c = ctx.into_iter().next().expect("exactly one element");
    let new = if c.starts_with('=') {
        c
    } else if let Some(rest) = c.strip_prefix('!') {
        let out = rest.split_once('!').map(|x| x.0).unwrap_or(rest);
        return Err(EvalError::eval(format!(
            "`addDrvOutputDependencies` can only act on derivations, not on a derivation output such as '{out}'"
        ))
        .at(pos));
    } else if c.ends_with(".drv") {
        format!("={c}")
    } else {
        return Err(EvalError::eval(format!("path '{c}' is not a derivation")).at(pos));
    };
    Ok(Value::string_ctx(s, Context::from([new])))
}

#[derive(Default)]
struct Info {
    path: bool,
    all_outputs: bool,
    outputs: Vec<String>,
}

fn prim_get_context(ev: &mut Evaluator, pos: Pos, args: &[Value]) -> Result<Value> {
    let s = ev.force_string(
        &args[0],
        pos,
        "while evaluating the argument passed to builtins.getContext",
    )?;
    let mut infos: BTreeMap<String, Info> = BTreeMap::new();
    if let Some(ctx) = &s.context {
        for c in ctx.iter() {
            if let Some(p) = c.strip_prefix('=') {
                infos.entry(p.to_string()).or_default().all_outputs = true;
            } else if let Some(rest) = c.strip_prefix('!') {
                let (out, drv) = rest.split_once('!').unwrap_or(("", rest));
                infos
                    .entry(drv.to_string())
                    .or_default()
                    .outputs
                    .push(out.to_string());
            } else {
                infos.entry(c.clone()).or_default().path = true;
            }
        }
    }
    let mut attrs = Vec::new();
    for (p, info) in infos {
        let mut inner = Vec::new();
        if info.path {
            inner.push(attr("path", Value::Bool(true)));
        }
        if info.all_outputs {
            inner.push(attr("allOutputs", Value::Bool(true)));
        }
        if !info.outputs.is_empty() {
            let l = info.outputs.iter().map(|o| Value::str(o)).collect();
            inner.push(attr("outputs", Value::list(l)));
        }
        attrs.push(Attr {
            name: Symbol::intern(&p),
            value: Value::attrs(Attrs::from_unsorted(inner)),
            pos: Pos::NONE,
        });
    }
    Ok(Value::attrs(Attrs::from_unsorted(attrs)))
}

fn attr(name: &str, value: Value) -> Attr {
    Attr {
        name: Symbol::intern(name),
        value,
        pos: Pos::NONE,
    }
}

/// Whether `s` looks like a store path directly under the store directory.
fn is_store_path(store_dir: &str, s: &str) -> bool {
    let Some(base) = s.strip_prefix(store_dir).and_then(|r| r.strip_prefix('/')) else {
        return false;
    };
    let b = base.as_bytes();
    b.len() > 33
        && !base.contains('/')
        && b[32] == b'-'
        && b[..32]
            .iter()
            .all(|c| b"0123456789abcdfghijklmnpqrsvwxyz".contains(c))
}

fn prim_append_context(ev: &mut Evaluator, pos: Pos, args: &[Value]) -> Result<Value> {
    let s = ev.force_string(
        &args[0],
        Pos::NONE,
        "while evaluating the first argument passed to builtins.appendContext",
    )?;
    let a = ev.force_attrs(
        &args[1],
        pos,
        "while evaluating the second argument passed to builtins.appendContext",
    )?;
    let mut ctx: Context = s.context.as_deref().cloned().unwrap_or_default();
    let store_dir = ev.config.store_dir.clone();
    let (s_path, s_all, s_outputs) = (
        Symbol::intern("path"),
        Symbol::intern("allOutputs"),
        Symbol::intern("outputs"),
    );
    for i in a.sorted_by_name() {
        let name = i.name.as_string();
        if !is_store_path(&store_dir, &name) {
            return Err(
                EvalError::eval(format!("context key '{name}' is not a store path")).at(i.pos),
            );
        }
        // Nix (not in read-only mode) ensures the path is valid before reading its value; with
        // no substituters that is a plain (uncatchable, position-less) error.
        let store = crate::store_path::open_store(&store_dir)?;
        let sp = store
            .store_dir()
            .parse(&name)
            .map_err(crate::store_path::store_err)?;
        if !store
            .is_valid_path(&sp)
            .map_err(crate::store_path::store_err)?
        {
            return Err(EvalError::eval(format!(
                "path '{name}' does not exist and cannot be created"
            )));
        }
        let inner = ev.force_attrs(
            &i.value,
            i.pos,
            "while evaluating the value of a string context",
        )?;
        if let Some(p) = inner.get(s_path)
            && ev.force_bool(
                &p.value,
                p.pos,
                "while evaluating the `path` attribute of a string context",
            )?
        {
            ctx.insert(name.clone());
        }
        if let Some(p) = inner.get(s_all)
            && ev.force_bool(
                &p.value,
                p.pos,
                "while evaluating the `allOutputs` attribute of a string context",
            )?
        {
            if !name.ends_with(".drv") {
                return Err(EvalError::eval(format!(
                    "tried to add all-outputs context of {name}, which is not a derivation, to a string"
                ))
                .at(i.pos));
            }
            ctx.insert(format!("={name}"));
        }
        if let Some(p) = inner.get(s_outputs) {
            let l = ev.force_list(
                &p.value,
                p.pos,
                "while evaluating the `outputs` attribute of a string context",
            )?;
            if !l.is_empty() && !name.ends_with(".drv") {
                return Err(EvalError::eval(format!(
                    "tried to add derivation output context of {name}, which is not a derivation, to a string"
                ))
                .at(i.pos));
            }
            for o in l.iter() {
                let o = ev.force_string_no_ctx(
                    o,
                    p.pos,
                    "while evaluating an output name within a string context",
                )?;
                ctx.insert(format!("!{}!{name}", o.as_str_lossy()));
            }
        }
    }
    Ok(Value::string_ctx(s.bytes.to_vec(), ctx))
}

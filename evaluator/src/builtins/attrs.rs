//! Attribute-set builtins: attrNames, attrValues, getAttr, hasAttr, removeAttrs, listToAttrs,
//! mapAttrs, unsafeGetAttrPos.
//!
//! Invariant: results keep the symbol-sorted representation; name order is applied where Nix
//! returns lists (attrNames, attrValues).

use std::rc::Rc;

use crate::builtins::Registry;
use crate::error::{EvalError, Result};
use crate::eval::Evaluator;
use crate::source::Pos;
use crate::symbol::Symbol;
use crate::value::{Attr, Attrs, Value};

pub(crate) fn register(r: &mut Registry) {
    r.primop("__attrNames", 1, prim_attr_names);
    r.primop("__attrValues", 1, prim_attr_values);
    r.primop("__getAttr", 2, prim_get_attr);
    r.primop("__hasAttr", 2, prim_has_attr);
    r.primop("removeAttrs", 2, prim_remove_attrs);
    r.primop("__listToAttrs", 1, prim_list_to_attrs);
    r.primop("__mapAttrs", 2, prim_map_attrs);
    r.primop("__unsafeGetAttrPos", 2, prim_unsafe_get_attr_pos);
}

fn prim_attr_names(ev: &mut Evaluator, pos: Pos, args: &[Value]) -> Result<Value> {
    let a = ev.force_attrs(
        &args[0],
        pos,
        "while evaluating the argument passed to builtins.attrNames",
    )?;
    Ok(Value::list(
        a.sorted_by_name()
            .into_iter()
            .map(|x| Value::string(x.name.bytes().to_vec()))
            .collect(),
    ))
}

fn prim_attr_values(ev: &mut Evaluator, pos: Pos, args: &[Value]) -> Result<Value> {
    let a = ev.force_attrs(
        &args[0],
        pos,
        "while evaluating the argument passed to builtins.attrValues",
    )?;
    Ok(Value::list(
        a.sorted_by_name()
            .into_iter()
            .map(|x| x.value.clone())
            .collect(),
    ))
}

/// Nix's `getAttr` helper for builtins: missing → "attribute 'x' missing" + context frame.
pub fn get_attr_or_err(a: &Attrs, name: Symbol, ctx: &str) -> Result<Attr> {
    match a.get(name) {
        Some(x) => Ok(x.clone()),
        None => {
            Err(EvalError::type_error(format!("attribute '{name}' missing"))
                .with_trace(Pos::NONE, ctx))
        }
    }
}

fn prim_get_attr(ev: &mut Evaluator, pos: Pos, args: &[Value]) -> Result<Value> {
    let name = ev.force_string_no_ctx(
        &args[0],
        pos,
        "while evaluating the first argument passed to builtins.getAttr",
    )?;
    let a = ev.force_attrs(
        &args[1],
        pos,
        "while evaluating the second argument passed to builtins.getAttr",
    )?;
    let x = get_attr_or_err(
        &a,
        Symbol::intern_bytes(&name.bytes),
        "in the attribute set under consideration",
    )?;
    ev.force(&x.value, pos)
}

fn prim_has_attr(ev: &mut Evaluator, pos: Pos, args: &[Value]) -> Result<Value> {
    let name = ev.force_string_no_ctx(
        &args[0],
        pos,
        "while evaluating the first argument passed to builtins.hasAttr",
    )?;
    let a = ev.force_attrs(
        &args[1],
        pos,
        "while evaluating the second argument passed to builtins.hasAttr",
    )?;
    Ok(Value::Bool(
        a.get(Symbol::intern_bytes(&name.bytes)).is_some(),
    ))
}

fn prim_remove_attrs(ev: &mut Evaluator, pos: Pos, args: &[Value]) -> Result<Value> {
    let a = ev.force_attrs(
        &args[0],
        pos,
        "while evaluating the first argument passed to builtins.removeAttrs",
    )?;
    let l = ev.force_list(
        &args[1],
        pos,
        "while evaluating the second argument passed to builtins.removeAttrs",
    )?;
    let mut names = Vec::with_capacity(l.len());
    for x in l.iter() {
        let s = ev.force_string_no_ctx(
            x,
            pos,
            "while evaluating the values of the second argument passed to builtins.removeAttrs",
        )?;
        names.push(Symbol::intern_bytes(&s.bytes));
    }
    names.sort();
    let entries: Vec<Attr> = a
        .entries
        .iter()
        .filter(|x| names.binary_search(&x.name).is_err())
        .cloned()
        .collect();
    if entries.len() == a.len() {
        return Ok(Value::Attrs(a));
    }
    Ok(Value::attrs(Attrs { entries }))
}

fn prim_list_to_attrs(ev: &mut Evaluator, pos: Pos, args: &[Value]) -> Result<Value> {
    let l = ev.force_list(
        &args[0],
        pos,
        "while evaluating the argument passed to builtins.listToAttrs",
    )?;
    let mut entries = Vec::with_capacity(l.len());
    for x in l.iter() {
        let a = ev.force_attrs(
            x,
            pos,
            "while evaluating an element of the list passed to builtins.listToAttrs",
        )?;
        let n = get_attr_or_err(&a, ev.syms.name, "in a {name=...; value=...;} pair")?;
        let name = ev.force_string_no_ctx(
            &n.value,
            n.pos,
            "while evaluating the `name` attribute of an element of the list passed to builtins.listToAttrs",
        )?;
        let sym = Symbol::intern_bytes(&name.bytes);
        let v = get_attr_or_err(&a, ev.syms.value, "in a {name=...; value=...;} pair")?;
        entries.push(Attr {
            name: sym,
            value: v.value,
            pos: v.pos,
        });
    }
    Ok(Value::attrs(Attrs::from_unsorted_first_wins(entries)))
}

fn prim_map_attrs(ev: &mut Evaluator, pos: Pos, args: &[Value]) -> Result<Value> {
    let a = ev.force_attrs(
        &args[1],
        pos,
        "while evaluating the second argument passed to builtins.mapAttrs",
    )?;
    let f = args[0].clone();
    let entries = a
        .entries
        .iter()
        .map(|x| {
            let name = Value::string(x.name.bytes().to_vec());
            let partial = Value::apply_thunk(f.clone(), name, Pos::NONE);
            Attr {
                name: x.name,
                value: Value::apply_thunk(partial, x.value.clone(), Pos::NONE),
                // Nix gives mapAttrs results no position (`unsafeGetAttrPos` is null, and no
                // "while evaluating the attribute" frame names them).
                pos: Pos::NONE,
            }
        })
        .collect();
    Ok(Value::Attrs(Rc::new(Attrs { entries })))
}

fn prim_unsafe_get_attr_pos(ev: &mut Evaluator, pos: Pos, args: &[Value]) -> Result<Value> {
    let name = ev.force_string_no_ctx(
        &args[0],
        pos,
        "while evaluating the first argument passed to builtins.unsafeGetAttrPos",
    )?;
    let a = ev.force_attrs(
        &args[1],
        pos,
        "while evaluating the second argument passed to builtins.unsafeGetAttrPos",
    )?;
    match a.get(Symbol::intern_bytes(&name.bytes)) {
        Some(x) => Ok(ev.pos_value(x.pos)),
        None => Ok(Value::Null),
    }
}

//! List builtins: length, head, tail, elemAt, map, filter, foldl', concatLists, genList, elem.
//!
//! Invariant: results are lazy exactly where Nix's are (`map`/`genList` elements are thunks).

use crate::builtins::Registry;
use crate::error::{EvalError, Result};
use crate::eval::Evaluator;
use crate::source::Pos;
use crate::value::Value;

pub(crate) fn register(r: &mut Registry) {
    r.primop("__length", 1, prim_length);
    r.primop("__head", 1, prim_head);
    r.primop("__tail", 1, prim_tail);
    r.primop("__elemAt", 2, prim_elem_at);
    r.primop("map", 2, prim_map);
    r.primop("__filter", 2, prim_filter);
    r.primop("__foldl'", 3, prim_foldl);
    r.primop("__concatLists", 1, prim_concat_lists);
    r.primop("__genList", 2, prim_gen_list);
    r.primop("__elem", 2, prim_elem);
}

fn prim_length(ev: &mut Evaluator, pos: Pos, args: &[Value]) -> Result<Value> {
    let l = ev.force_list(
        &args[0],
        pos,
        "while evaluating the first argument passed to builtins.length",
    )?;
    Ok(Value::Int(l.len() as i64))
}

fn prim_head(ev: &mut Evaluator, pos: Pos, args: &[Value]) -> Result<Value> {
    let l = ev.force_list(
        &args[0],
        pos,
        "while evaluating the first argument passed to 'builtins.head'",
    )?;
    match l.first() {
        Some(x) => ev.force(x, pos),
        None => Err(EvalError::eval("'builtins.head' called on an empty list").at(pos)),
    }
}

fn prim_tail(ev: &mut Evaluator, pos: Pos, args: &[Value]) -> Result<Value> {
    let l = ev.force_list(
        &args[0],
        pos,
        "while evaluating the first argument passed to 'builtins.tail'",
    )?;
    if l.is_empty() {
        return Err(EvalError::eval("'builtins.tail' called on an empty list").at(pos));
    }
    Ok(Value::List(crate::value::List::from(&l[1..])))
}

fn prim_elem_at(ev: &mut Evaluator, pos: Pos, args: &[Value]) -> Result<Value> {
    let n = ev.force_int(
        &args[1],
        pos,
        "while evaluating the second argument passed to 'builtins.elemAt'",
    )?;
    let l = ev.force_list(
        &args[0],
        pos,
        "while evaluating the first argument passed to 'builtins.elemAt'",
    )?;
    if n < 0 || n as usize >= l.len() {
        return Err(EvalError::eval(format!(
            "'builtins.elemAt' called with index {} on a list of size {}",
            n,
            l.len()
        ))
        .at(pos));
    }
    ev.force(&l[n as usize], pos)
}

fn prim_map(ev: &mut Evaluator, pos: Pos, args: &[Value]) -> Result<Value> {
    let l = ev.force_list(
        &args[1],
        pos,
        "while evaluating the second argument passed to builtins.map",
    )?;
    if l.is_empty() {
        return Ok(Value::List(l));
    }
    let f = ev.force_function(
        &args[0],
        pos,
        "while evaluating the first argument passed to builtins.map",
    )?;
    // Collected straight into the shared slice (one allocation, no copy).
    Ok(Value::List(
        l.iter()
            .map(|x| Value::apply_thunk(f.clone(), x.clone(), Pos::NONE))
            .collect(),
    ))
}

fn prim_filter(ev: &mut Evaluator, pos: Pos, args: &[Value]) -> Result<Value> {
    let l = ev.force_list(
        &args[1],
        pos,
        "while evaluating the second argument passed to builtins.filter",
    )?;
    if l.is_empty() {
        return Ok(Value::List(l));
    }
    let f = ev.force_function(
        &args[0],
        pos,
        "while evaluating the first argument passed to builtins.filter",
    )?;
    let mut out = Vec::with_capacity(l.len());
    for x in l.iter() {
        let r = ev.call(&f, std::slice::from_ref(x), Pos::NONE)?;
        if ev.force_bool(
            &r,
            pos,
            "while evaluating the return value of the filtering function passed to builtins.filter",
        )? {
            out.push(x.clone());
        }
    }
    if out.len() == l.len() {
        return Ok(Value::List(l));
    }
    Ok(Value::list(out))
}

fn prim_foldl(ev: &mut Evaluator, pos: Pos, args: &[Value]) -> Result<Value> {
    let f = ev.force_function(
        &args[0],
        pos,
        "while evaluating the first argument passed to builtins.foldlStrict",
    )?;
    let l = ev.force_list(
        &args[2],
        pos,
        "while evaluating the third argument passed to builtins.foldlStrict",
    )?;
    let mut acc = args[1].clone();
    if l.is_empty() {
        return ev.force(&acc, pos);
    }
    for x in l.iter() {
        acc = ev.call(&f, &[acc, x.clone()], pos)?;
    }
    Ok(acc)
}

fn prim_concat_lists(ev: &mut Evaluator, pos: Pos, args: &[Value]) -> Result<Value> {
    let l = ev.force_list(
        &args[0],
        pos,
        "while evaluating the first argument passed to builtins.concatLists",
    )?;
    ev.concat_lists(
        &l,
        pos,
        "while evaluating a value of the list passed to builtins.concatLists",
    )
}

fn prim_gen_list(ev: &mut Evaluator, pos: Pos, args: &[Value]) -> Result<Value> {
    let n = ev.force_int(
        &args[1],
        pos,
        "while evaluating the second argument passed to builtins.genList",
    )?;
    if n < 0 {
        return Err(EvalError::eval(format!("cannot create list of size {n}")).at(pos));
    }
    let f = ev.force_function(
        &args[0],
        Pos::NONE,
        "while evaluating the first argument passed to builtins.genList",
    )?;
    // Collected straight into the shared slice (one allocation, no copy).
    Ok(Value::List(
        (0..n)
            .map(|i| Value::apply_thunk(f.clone(), Value::Int(i), Pos::NONE))
            .collect(),
    ))
}

fn prim_elem(ev: &mut Evaluator, pos: Pos, args: &[Value]) -> Result<Value> {
    let l = ev.force_list(
        &args[1],
        pos,
        "while evaluating the second argument passed to builtins.elem",
    )?;
    for x in l.iter() {
        if ev.eq_values(
            &args[0],
            x,
            pos,
            "while searching for the presence of the given element in the list",
        )? {
            return Ok(Value::Bool(true));
        }
    }
    Ok(Value::Bool(false))
}

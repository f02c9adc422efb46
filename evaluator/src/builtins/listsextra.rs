//! Higher-order list and attribute-set builtins: all, any, sort, partition, groupBy, concatMap,
//! catAttrs, intersectAttrs, zipAttrsWith and genericClosure.
//!
//! They exist as a family because they share Nix's contract of calling user functions on list
//! elements. Invariants: forcing order and error contexts are Nix 2.26's; `sort` is a stable merge
//! sort (like `std::stable_sort`), so any strict weak ordering gives Nix's exact result, and a
//! failing comparator is an error, never a panic; `genericClosure` keeps its seen keys in a sorted
//! vector searched by `CompareValues`, so it needs O(n log n) comparisons, not O(n²).

use crate::builtins::Registry;
use crate::builtins::attrs::get_attr_or_err;
use crate::error::Result;
use crate::eval::Evaluator;
use crate::source::Pos;
use crate::symbol::Symbol;
use crate::value::{Attr, Attrs, Value};

pub(crate) fn register(r: &mut Registry) {
    r.primop("__all", 2, prim_all);
    r.primop("__any", 2, prim_any);
    r.primop("__sort", 2, prim_sort);
    r.primop("__partition", 2, prim_partition);
    r.primop("__groupBy", 2, prim_group_by);
    r.primop("__concatMap", 2, prim_concat_map);
    r.primop("__catAttrs", 2, prim_cat_attrs);
    r.primop("__intersectAttrs", 2, prim_intersect_attrs);
    r.primop("__zipAttrsWith", 2, prim_zip_attrs_with);
    r.primop("__genericClosure", 1, prim_generic_closure);
}

fn any_or_all(ev: &mut Evaluator, pos: Pos, args: &[Value], any: bool) -> Result<Value> {
    let name = if any { "any" } else { "all" };
    let f = ev.force_function(
        &args[0],
        pos,
        &format!("while evaluating the first argument passed to builtins.{name}"),
    )?;
    let l = ev.force_list(
        &args[1],
        pos,
        &format!("while evaluating the second argument passed to builtins.{name}"),
    )?;
    let ctx =
        format!("while evaluating the return value of the function passed to builtins.{name}");
    for x in l.iter() {
        let r = ev.call(&f, std::slice::from_ref(x), pos)?;
        if ev.force_bool(&r, pos, &ctx)? == any {
            return Ok(Value::Bool(any));
        }
    }
    Ok(Value::Bool(!any))
}

fn prim_all(ev: &mut Evaluator, pos: Pos, args: &[Value]) -> Result<Value> {
    any_or_all(ev, pos, args, false)
}

fn prim_any(ev: &mut Evaluator, pos: Pos, args: &[Value]) -> Result<Value> {
    any_or_all(ev, pos, args, true)
}

/// The comparator of `builtins.sort`: the user's function, or `CompareValues` for `lessThan`.
struct SortCmp {
    f: Value,
    fast_less_than: bool,
    pos: Pos,
}

impl SortCmp {
    fn less(&self, ev: &mut Evaluator, a: &Value, b: &Value) -> Result<bool> {
        if self.fast_less_than {
            return ev.less_than(
                a,
                b,
                "while evaluating the ordering function passed to builtins.sort",
            );
        }
        let r = ev.call(&self.f, &[a.clone(), b.clone()], Pos::NONE)?;
        ev.force_bool(
            &r,
            self.pos,
            "while evaluating the return value of the sorting function passed to builtins.sort",
        )
    }
}

/// Length of the runs sorted by insertion sort before merging (libstdc++'s `_S_chunk_size`).
const CHUNK: usize = 7;

fn insertion_sort(ev: &mut Evaluator, cmp: &SortCmp, v: &mut [Value]) -> Result<()> {
    for i in 1..v.len() {
        let mut j = i;
        while j > 0 && cmp.less(ev, &v[j], &v[j - 1])? {
            v.swap(j, j - 1);
            j -= 1;
        }
    }
    Ok(())
}

/// Merges the sorted runs `a` and `b` into `out`, taking from `a` on ties (stability).
fn merge(
    ev: &mut Evaluator,
    cmp: &SortCmp,
    a: &[Value],
    b: &[Value],
    out: &mut Vec<Value>,
) -> Result<()> {
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        if cmp.less(ev, &b[j], &a[i])? {
            out.push(b[j].clone());
            j += 1;
        } else {
            out.push(a[i].clone());
            i += 1;
        }
    }
    out.extend_from_slice(&a[i..]);
    out.extend_from_slice(&b[j..]);
    Ok(())
}

/// A stable bottom-up merge sort with a fallible comparator.
fn stable_sort(ev: &mut Evaluator, cmp: &SortCmp, mut v: Vec<Value>) -> Result<Vec<Value>> {
    for chunk in v.chunks_mut(CHUNK) {
        insertion_sort(ev, cmp, chunk)?;
    }
    let mut width = CHUNK;
    while width < v.len() {
        let mut out = Vec::with_capacity(v.len());
        let mut start = 0;
        while start < v.len() {
            let mid = (start + width).min(v.len());
            let end = (start + 2 * width).min(v.len());
            merge(ev, cmp, &v[start..mid], &v[mid..end], &mut out)?;
            start = end;
        }
        v = out;
        width *= 2;
    }
    Ok(v)
}

fn prim_sort(ev: &mut Evaluator, pos: Pos, args: &[Value]) -> Result<Value> {
    let l = ev.force_list(
        &args[1],
        pos,
        "while evaluating the second argument passed to builtins.sort",
    )?;
    if l.is_empty() {
        return Ok(Value::List(l));
    }
    let f = ev.force_function(
        &args[0],
        pos,
        "while evaluating the first argument passed to builtins.sort",
    )?;
    let mut items = Vec::with_capacity(l.len());
    for x in l.iter() {
        items.push(ev.force(x, pos)?);
    }
    let fast_less_than = matches!(&f, Value::PrimOp(op) if op.name == "lessThan");
    let cmp = SortCmp {
        f,
        fast_less_than,
        pos,
    };
    let sorted = stable_sort(ev, &cmp, items)?;
    Ok(Value::list(sorted))
}

fn prim_partition(ev: &mut Evaluator, pos: Pos, args: &[Value]) -> Result<Value> {
    let f = ev.force_function(
        &args[0],
        pos,
        "while evaluating the first argument passed to builtins.partition",
    )?;
    let l = ev.force_list(
        &args[1],
        pos,
        "while evaluating the second argument passed to builtins.partition",
    )?;
    let (mut right, mut wrong) = (Vec::new(), Vec::new());
    for x in l.iter() {
        ev.force(x, pos)?;
        let r = ev.call(&f, std::slice::from_ref(x), pos)?;
        if ev.force_bool(
            &r,
            pos,
            "while evaluating the return value of the partition function passed to builtins.partition",
        )? {
            right.push(x.clone());
        } else {
            wrong.push(x.clone());
        }
    }
    Ok(Value::attrs(Attrs::from_unsorted(vec![
        Attr {
            name: Symbol::intern("right"),
            value: Value::list(right),
            pos: Pos::NONE,
        },
        Attr {
            name: Symbol::intern("wrong"),
            value: Value::list(wrong),
            pos: Pos::NONE,
        },
    ])))
}

fn prim_group_by(ev: &mut Evaluator, pos: Pos, args: &[Value]) -> Result<Value> {
    let f = ev.force_function(
        &args[0],
        pos,
        "while evaluating the first argument passed to builtins.groupBy",
    )?;
    let l = ev.force_list(
        &args[1],
        pos,
        "while evaluating the second argument passed to builtins.groupBy",
    )?;
    let mut groups: std::collections::HashMap<Symbol, Vec<Value>> = Default::default();
    for x in l.iter() {
        let r = ev.call(&f, std::slice::from_ref(x), pos)?;
        let name = ev.force_string_no_ctx(
            &r,
            pos,
            "while evaluating the return value of the grouping function passed to builtins.groupBy",
        )?;
        groups
            .entry(Symbol::intern_bytes(&name.bytes))
            .or_default()
            .push(x.clone());
    }
    let attrs = groups
        .into_iter()
        .map(|(name, v)| Attr {
            name,
            value: Value::list(v),
            pos: Pos::NONE,
        })
        .collect();
    Ok(Value::attrs(Attrs::from_unsorted(attrs)))
}

fn prim_concat_map(ev: &mut Evaluator, pos: Pos, args: &[Value]) -> Result<Value> {
    let f = ev.force_function(
        &args[0],
        pos,
        "while evaluating the first argument passed to builtins.concatMap",
    )?;
    let l = ev.force_list(
        &args[1],
        pos,
        "while evaluating the second argument passed to builtins.concatMap",
    )?;
    // Nix reports a non-list result at the function's position.
    let fpos = match &f {
        Value::Lambda(c) => c.def.pos,
        _ => pos,
    };
    let mut out = Vec::new();
    for x in l.iter() {
        let r = ev.call(&f, std::slice::from_ref(x), pos)?;
        let rl = ev.force_list(
            &r,
            fpos,
            "while evaluating the return value of the function passed to builtins.concatMap",
        )?;
        out.extend_from_slice(&rl);
    }
    Ok(Value::list(out))
}

fn prim_cat_attrs(ev: &mut Evaluator, pos: Pos, args: &[Value]) -> Result<Value> {
    let name = ev.force_string_no_ctx(
        &args[0],
        pos,
        "while evaluating the first argument passed to builtins.catAttrs",
    )?;
    let sym = Symbol::intern_bytes(&name.bytes);
    let l = ev.force_list(
        &args[1],
        pos,
        "while evaluating the second argument passed to builtins.catAttrs",
    )?;
    let mut out = Vec::new();
    for x in l.iter() {
        let a = ev.force_attrs(
            x,
            pos,
            "while evaluating an element in the list passed as second argument to builtins.catAttrs",
        )?;
        if let Some(attr) = a.get(sym) {
            out.push(attr.value.clone());
        }
    }
    Ok(Value::list(out))
}

fn prim_intersect_attrs(ev: &mut Evaluator, pos: Pos, args: &[Value]) -> Result<Value> {
    let left = ev.force_attrs(
        &args[0],
        pos,
        "while evaluating the first argument passed to builtins.intersectAttrs",
    )?;
    let right = ev.force_attrs(
        &args[1],
        pos,
        "while evaluating the second argument passed to builtins.intersectAttrs",
    )?;
    let entries: Vec<Attr> = if left.len() < right.len() {
        left.entries
            .iter()
            .filter_map(|l| right.get(l.name).cloned())
            .collect()
    } else {
        right
            .entries
            .iter()
            .filter(|r| left.get(r.name).is_some())
            .cloned()
            .collect()
    };
    // Both inputs are sorted by symbol, and so is the filtered result.
    Ok(Value::attrs(Attrs { entries }))
}

fn prim_zip_attrs_with(ev: &mut Evaluator, pos: Pos, args: &[Value]) -> Result<Value> {
    let f = ev.force_function(
        &args[0],
        pos,
        "while evaluating the first argument passed to builtins.zipAttrsWith",
    )?;
    let l = ev.force_list(
        &args[1],
        pos,
        "while evaluating the second argument passed to builtins.zipAttrsWith",
    )?;
    let mut seen: std::collections::BTreeMap<Symbol, Vec<Value>> = Default::default();
    for x in l.iter() {
        let a = ev.force_attrs(
            x,
            Pos::NONE,
            "while evaluating a value of the list passed as second argument to builtins.zipAttrsWith",
        )?;
        for attr in &a.entries {
            seen.entry(attr.name).or_default().push(attr.value.clone());
        }
    }
    let entries = seen
        .into_iter()
        .map(|(name, vals)| {
            let partial =
                Value::apply_thunk(f.clone(), Value::string(name.bytes().to_vec()), Pos::NONE);
            Attr {
                name,
                value: Value::apply_thunk(partial, Value::list(vals), Pos::NONE),
                pos: Pos::NONE,
            }
        })
        .collect();
    Ok(Value::attrs(Attrs { entries }))
}

/// Finds `key` in the sorted `done`; `Ok(Err(i))` is where it would be inserted.
fn search_key(
    ev: &mut Evaluator,
    done: &[Value],
    key: &Value,
) -> Result<std::result::Result<usize, usize>> {
    const CTX: &str = "while comparing the `key` attributes of two genericClosure elements";
    let (mut lo, mut hi) = (0, done.len());
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        // std::set compares the new key first (it decides the error text for mixed types).
        if ev.less_than(key, &done[mid], CTX)? {
            hi = mid;
        } else if ev.less_than(&done[mid], key, CTX)? {
            lo = mid + 1;
        } else {
            return Ok(Ok(mid));
        }
    }
    Ok(Err(lo))
}

fn prim_generic_closure(ev: &mut Evaluator, _pos: Pos, args: &[Value]) -> Result<Value> {
    let a = ev.force_attrs(
        &args[0],
        Pos::NONE,
        "while evaluating the first argument passed to builtins.genericClosure",
    )?;
    let start = get_attr_or_err(
        &a,
        Symbol::intern("startSet"),
        "in the attrset passed as argument to builtins.genericClosure",
    )?;
    let start_list = ev.force_list(
        &start.value,
        Pos::NONE,
        "while evaluating the 'startSet' attribute passed as argument to builtins.genericClosure",
    )?;
    if start_list.is_empty() {
        return Ok(Value::List(start_list));
    }
    let op = get_attr_or_err(
        &a,
        Symbol::intern("operator"),
        "in the attrset passed as argument to builtins.genericClosure",
    )?;
    let op = ev.force_function(
        &op.value,
        Pos::NONE,
        "while evaluating the 'operator' attribute passed as argument to builtins.genericClosure",
    )?;
    let key_sym = Symbol::intern("key");
    let mut work: std::collections::VecDeque<Value> = start_list.iter().cloned().collect();
    let mut done_keys: Vec<Value> = Vec::new();
    let mut res = Vec::new();
    while let Some(e) = work.pop_front() {
        let ea = ev.force_attrs(
            &e,
            Pos::NONE,
            "while evaluating one of the elements generated by (or initially passed to) builtins.genericClosure",
        )?;
        let key = get_attr_or_err(
            &ea,
            key_sym,
            "in one of the attrsets generated by (or initially passed to) builtins.genericClosure",
        )?;
        let key = ev.force(&key.value, Pos::NONE)?;
        match search_key(ev, &done_keys, &key)? {
            Ok(_) => continue,
            Err(i) => done_keys.insert(i, key),
        }
        res.push(e.clone());
        let new = ev.call(&op, std::slice::from_ref(&e), Pos::NONE)?;
        let new = ev.force_list(
            &new,
            Pos::NONE,
            "while evaluating the return value of the `operator` passed to builtins.genericClosure",
        )?;
        for x in new.iter() {
            ev.force(x, Pos::NONE)?;
            work.push_back(x.clone());
        }
    }
    Ok(Value::List(crate::value::List::from(res)))
}

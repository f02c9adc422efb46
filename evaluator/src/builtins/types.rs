//! Type predicates and introspection: typeOf, isNull, isInt, …, functionArgs.
//!
//! Invariant: every predicate forces its argument to WHNF only.

use crate::builtins::Registry;
use crate::error::{EvalError, Result};
use crate::eval::Evaluator;
use crate::source::Pos;
use crate::value::{Attr, Attrs, Value};

pub(crate) fn register(r: &mut Registry) {
    r.primop("__typeOf", 1, prim_type_of);
    r.primop("isNull", 1, |ev, pos, a| {
        Ok(Value::Bool(matches!(ev.force(&a[0], pos)?, Value::Null)))
    });
    r.primop("__isInt", 1, |ev, pos, a| {
        Ok(Value::Bool(matches!(ev.force(&a[0], pos)?, Value::Int(_))))
    });
    r.primop("__isFloat", 1, |ev, pos, a| {
        Ok(Value::Bool(matches!(
            ev.force(&a[0], pos)?,
            Value::Float(_)
        )))
    });
    r.primop("__isBool", 1, |ev, pos, a| {
        Ok(Value::Bool(matches!(ev.force(&a[0], pos)?, Value::Bool(_))))
    });
    r.primop("__isString", 1, |ev, pos, a| {
        Ok(Value::Bool(matches!(
            ev.force(&a[0], pos)?,
            Value::String(_)
        )))
    });
    r.primop("__isPath", 1, |ev, pos, a| {
        Ok(Value::Bool(matches!(ev.force(&a[0], pos)?, Value::Path(_))))
    });
    r.primop("__isList", 1, |ev, pos, a| {
        Ok(Value::Bool(matches!(ev.force(&a[0], pos)?, Value::List(_))))
    });
    r.primop("__isAttrs", 1, |ev, pos, a| {
        Ok(Value::Bool(matches!(
            ev.force(&a[0], pos)?,
            Value::Attrs(_)
        )))
    });
    r.primop("__isFunction", 1, |ev, pos, a| {
        Ok(Value::Bool(ev.force(&a[0], pos)?.is_function()))
    });
    r.primop("__functionArgs", 1, prim_function_args);
}

fn prim_type_of(ev: &mut Evaluator, pos: Pos, args: &[Value]) -> Result<Value> {
    let v = ev.force(&args[0], pos)?;
    Ok(Value::str(v.type_name()))
}

fn prim_function_args(ev: &mut Evaluator, pos: Pos, args: &[Value]) -> Result<Value> {
    let v = ev.force(&args[0], pos)?;
    match &v {
        Value::PrimOp(_) | Value::PrimOpApp(_) => Ok(Value::empty_attrs()),
        Value::Lambda(c) => match &c.def.formals {
            None => Ok(Value::empty_attrs()),
            Some(f) => Ok(Value::attrs(Attrs::from_unsorted(
                f.entries
                    .iter()
                    .map(|x| Attr {
                        name: x.name,
                        value: Value::Bool(x.default.is_some()),
                        pos: x.pos,
                    })
                    .collect(),
            ))),
        },
        _ => Err(EvalError::type_error("'functionArgs' requires a function").at(pos)),
    }
}

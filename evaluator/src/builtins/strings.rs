//! Basic string builtins: toString, stringLength, substring, concatStringsSep.
//!
//! Invariant: strings are byte strings; every result carries the union of its inputs' contexts.

use crate::builtins::Registry;
use crate::error::{EvalError, Result};
use crate::eval::Evaluator;
use crate::source::Pos;
use crate::value::{Context, Value};

pub(crate) fn register(r: &mut Registry) {
    r.primop("toString", 1, prim_to_string);
    r.primop("__stringLength", 1, prim_string_length);
    r.primop("__substring", 3, prim_substring);
    r.primop("__concatStringsSep", 2, prim_concat_strings_sep);
}

fn prim_to_string(ev: &mut Evaluator, pos: Pos, args: &[Value]) -> Result<Value> {
    let mut ctx = Context::new();
    let s = ev.coerce_to_string(
        &args[0],
        pos,
        "while evaluating the first argument passed to builtins.toString",
        true,
        false,
        &mut ctx,
    )?;
    Ok(Value::string_ctx(s, ctx))
}

fn prim_string_length(ev: &mut Evaluator, pos: Pos, args: &[Value]) -> Result<Value> {
    let mut ctx = Context::new();
    let s = ev.coerce_to_string(
        &args[0],
        pos,
        "while evaluating the argument passed to builtins.stringLength",
        false,
        true,
        &mut ctx,
    )?;
    Ok(Value::Int(s.len() as i64))
}

fn prim_substring(ev: &mut Evaluator, pos: Pos, args: &[Value]) -> Result<Value> {
    let start = ev.force_int(
        &args[0],
        pos,
        "while evaluating the first argument (the start offset) passed to builtins.substring",
    )?;
    if start < 0 {
        return Err(EvalError::eval("negative start position in 'substring'").at(pos));
    }
    let mut len = ev.force_int(
        &args[1],
        pos,
        "while evaluating the second argument (the substring length) passed to builtins.substring",
    )?;
    if len < 0 {
        len = i64::MAX;
    }
    if len == 0 {
        let v = ev.force(&args[2], pos)?;
        if let Value::String(s) = &v {
            let ctx = s.context.as_deref().cloned().unwrap_or_default();
            return Ok(Value::string_ctx(Vec::new(), ctx));
        }
    }
    let mut ctx = Context::new();
    let s = ev.coerce_to_string(
        &args[2],
        pos,
        "while evaluating the third argument (the string) passed to builtins.substring",
        false,
        true,
        &mut ctx,
    )?;
    let start = start as usize;
    let out = if start >= s.len() {
        Vec::new()
    } else {
        let end = start.saturating_add(len as usize).min(s.len());
        s[start..end].to_vec()
    };
    Ok(Value::string_ctx(out, ctx))
}

fn prim_concat_strings_sep(ev: &mut Evaluator, pos: Pos, args: &[Value]) -> Result<Value> {
    let sep = ev.force_string(&args[0], pos, "while evaluating the first argument (the separator string) passed to builtins.concatStringsSep")?;
    let mut ctx = Context::new();
    if let Some(c) = &sep.context {
        ctx.extend(c.iter().cloned());
    }
    let l = ev.force_list(&args[1], pos, "while evaluating the second argument (the list of strings to concat) passed to builtins.concatStringsSep")?;
    let mut out = Vec::new();
    for (i, x) in l.iter().enumerate() {
        if i > 0 {
            out.extend_from_slice(&sep.bytes);
        }
        let s = ev.coerce_to_string(x, pos, "while evaluating one element of the list of strings to concat passed to builtins.concatStringsSep", false, true, &mut ctx)?;
        out.extend_from_slice(&s);
    }
    Ok(Value::string_ctx(out, ctx))
}

//! Control builtins: throw, abort, seq, deepSeq, tryEval, trace, addErrorContext.
//!
//! Invariant: only `throw` and failed assertions are catchable by `tryEval`.

use crate::builtins::Registry;
use crate::error::{ErrorKind, EvalError, Result};
use crate::eval::Evaluator;
use crate::print;
use crate::source::Pos;
use crate::symbol::Symbol;
use crate::value::{Attr, Attrs, Context, Value};

pub(crate) fn register(r: &mut Registry) {
    r.primop("throw", 1, prim_throw);
    r.primop("abort", 1, prim_abort);
    r.primop("__seq", 2, prim_seq);
    r.primop("__deepSeq", 2, prim_deep_seq);
    r.primop("__tryEval", 1, prim_try_eval);
    r.primop("__trace", 2, prim_trace);
    r.primop_no_trace("__addErrorContext", 2, prim_add_error_context);
}

fn prim_throw(ev: &mut Evaluator, pos: Pos, args: &[Value]) -> Result<Value> {
    let mut ctx = Context::new();
    let s = ev.coerce_to_string(
        &args[0],
        pos,
        "while evaluating the error message passed to builtin.throw",
        false,
        true,
        &mut ctx,
    )?;
    Err(EvalError::new(
        ErrorKind::Throw,
        String::from_utf8_lossy(&s).into_owned(),
    ))
}

fn prim_abort(ev: &mut Evaluator, pos: Pos, args: &[Value]) -> Result<Value> {
    let mut ctx = Context::new();
    let s = ev.coerce_to_string(
        &args[0],
        pos,
        "while evaluating the error message passed to builtins.abort",
        false,
        true,
        &mut ctx,
    )?;
    Err(EvalError::new(
        ErrorKind::Abort,
        format!(
            "evaluation aborted with the following error message: '{}'",
            String::from_utf8_lossy(&s)
        ),
    ))
}

fn prim_seq(ev: &mut Evaluator, pos: Pos, args: &[Value]) -> Result<Value> {
    ev.force(&args[0], pos)?;
    ev.force(&args[1], pos)
}

fn prim_deep_seq(ev: &mut Evaluator, pos: Pos, args: &[Value]) -> Result<Value> {
    ev.force_deep(&args[0], pos)?;
    ev.force(&args[1], pos)
}

fn prim_try_eval(ev: &mut Evaluator, pos: Pos, args: &[Value]) -> Result<Value> {
    let (value, success) = match ev.force(&args[0], pos) {
        Ok(v) => (v, true),
        Err(e) if e.kind().catchable() => (Value::Bool(false), false),
        Err(e) => return Err(e),
    };
    Ok(Value::attrs(Attrs::from_unsorted(vec![
        Attr {
            name: ev.syms.value,
            value,
            pos: Pos::NONE,
        },
        Attr {
            name: Symbol::intern("success"),
            value: Value::Bool(success),
            pos: Pos::NONE,
        },
    ])))
}

fn prim_trace(ev: &mut Evaluator, pos: Pos, args: &[Value]) -> Result<Value> {
    let v = ev.force(&args[0], pos)?;
    let line = match &v {
        Value::String(s) => format!("trace: {}", s.as_str_lossy()),
        other => {
            let b = print::print_value_unforced(other);
            format!("trace: {}", String::from_utf8_lossy(&b))
        }
    };
    ev.stderr.push(crate::error::filter_ansi_escapes(&line));
    ev.force(&args[1], pos)
}

fn prim_add_error_context(ev: &mut Evaluator, pos: Pos, args: &[Value]) -> Result<Value> {
    match ev.force(&args[1], pos) {
        Ok(v) => Ok(v),
        Err(e) => {
            let mut ctx = Context::new();
            let msg = ev.coerce_to_string(
                &args[0],
                pos,
                "while evaluating the error message passed to builtins.addErrorContext",
                false,
                false,
                &mut ctx,
            )?;
            Err(e.with_trace_always(Pos::NONE, String::from_utf8_lossy(&msg).into_owned()))
        }
    }
}

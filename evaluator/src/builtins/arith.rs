//! Arithmetic and comparison builtins: add, sub, mul, div, lessThan, bit operations, ceil, floor.
//!
//! Invariant: integer arithmetic is checked; overflow is Nix's "integer overflow in …" error.

use crate::builtins::{IntOp, Registry};
use crate::error::{EvalError, Result};
use crate::eval::Evaluator;
use crate::source::Pos;
use crate::value::Value;

pub(crate) fn register(r: &mut Registry) {
    r.primop_int("__add", 2, prim_add, IntOp::Add);
    r.primop_int("__sub", 2, prim_sub, IntOp::Sub);
    r.primop_int("__mul", 2, prim_mul, IntOp::Mul);
    r.primop("__div", 2, prim_div);
    r.primop_int("__lessThan", 2, prim_less_than, IntOp::LessThan);
    r.primop("__bitAnd", 2, |ev, pos, a| {
        bit(ev, pos, a, &BIT_AND, |x, y| x & y)
    });
    r.primop("__bitOr", 2, |ev, pos, a| {
        bit(ev, pos, a, &BIT_OR, |x, y| x | y)
    });
    r.primop("__bitXor", 2, |ev, pos, a| {
        bit(ev, pos, a, &BIT_XOR, |x, y| x ^ y)
    });
    r.primop("__ceil", 1, |ev, pos, a| {
        round(
            ev,
            pos,
            a,
            "while evaluating the first argument passed to builtins.ceil",
            f64::ceil,
        )
    });
    r.primop("__floor", 1, |ev, pos, a| {
        round(
            ev,
            pos,
            a,
            "while evaluating the first argument passed to builtins.floor",
            f64::floor,
        )
    });
}

fn is_float(v: &Value) -> bool {
    matches!(v, Value::Float(_))
}

/// Messages of one arithmetic operation, as Nix words them.
struct Op {
    first_float: &'static str,
    first_int: &'static str,
    second: &'static str,
    sym: &'static str,
    verb: &'static str,
}

const ADD: Op = Op {
    first_float: "while evaluating the first argument of the addition",
    first_int: "while evaluating the first argument of the addition",
    second: "while evaluating the second argument of the addition",
    sym: "+",
    verb: "adding",
};
const SUB: Op = Op {
    first_float: "while evaluating the first argument of the subtraction",
    first_int: "while evaluating the first argument of the subtraction",
    second: "while evaluating the second argument of the subtraction",
    sym: "-",
    verb: "subtracting",
};
// Nix's float message for the first operand of `*` really lacks the word "argument".
const MUL: Op = Op {
    first_float: "while evaluating the first of the multiplication",
    first_int: "while evaluating the first argument of the multiplication",
    second: "while evaluating the second argument of the multiplication",
    sym: "*",
    verb: "multiplying",
};

fn arith(
    ev: &mut Evaluator,
    pos: Pos,
    args: &[Value],
    op: &Op,
    int_op: fn(i64, i64) -> Option<i64>,
    float_op: fn(f64, f64) -> f64,
) -> Result<Value> {
    let a = ev.force(&args[0], pos)?;
    let b = ev.force(&args[1], pos)?;
    if let (Value::Int(x), Value::Int(y)) = (&a, &b) {
        return match int_op(*x, *y) {
            Some(r) => Ok(Value::Int(r)),
            None => Err(EvalError::eval(format!(
                "integer overflow in {} {x} {} {y}",
                op.verb, op.sym
            ))
            .at(pos)),
        };
    }
    if is_float(&a) || is_float(&b) {
        let x = ev.force_float(&a, pos, op.first_float)?;
        let y = ev.force_float(&b, pos, op.second)?;
        return Ok(Value::Float(float_op(x, y)));
    }
    let x = ev.force_int(&a, pos, op.first_int)?;
    let y = ev.force_int(&b, pos, op.second)?;
    match int_op(x, y) {
        Some(r) => Ok(Value::Int(r)),
        None => Err(EvalError::eval(format!(
            "integer overflow in {} {x} {} {y}",
            op.verb, op.sym
        ))
        .at(pos)),
    }
}

fn prim_add(ev: &mut Evaluator, pos: Pos, args: &[Value]) -> Result<Value> {
    arith(ev, pos, args, &ADD, i64::checked_add, |x, y| x + y)
}

fn prim_sub(ev: &mut Evaluator, pos: Pos, args: &[Value]) -> Result<Value> {
    arith(ev, pos, args, &SUB, i64::checked_sub, |x, y| x - y)
}

fn prim_mul(ev: &mut Evaluator, pos: Pos, args: &[Value]) -> Result<Value> {
    arith(ev, pos, args, &MUL, i64::checked_mul, |x, y| x * y)
}

fn prim_div(ev: &mut Evaluator, pos: Pos, args: &[Value]) -> Result<Value> {
    let a = ev.force(&args[0], pos)?;
    let b = ev.force(&args[1], pos)?;
    let f2 = ev.force_float(
        &b,
        pos,
        "while evaluating the second operand of the division",
    )?;
    if f2 == 0.0 {
        return Err(EvalError::eval("division by zero").at(pos));
    }
    if is_float(&a) || is_float(&b) {
        let f1 = ev.force_float(
            &a,
            pos,
            "while evaluating the first operand of the division",
        )?;
        return Ok(Value::Float(f1 / f2));
    }
    let x = ev.force_int(
        &a,
        pos,
        "while evaluating the first operand of the division",
    )?;
    let y = ev.force_int(
        &b,
        pos,
        "while evaluating the second operand of the division",
    )?;
    match x.checked_div(y) {
        Some(r) => Ok(Value::Int(r)),
        None => Err(EvalError::eval(format!("integer overflow in dividing {x} / {y}")).at(pos)),
    }
}

fn prim_less_than(ev: &mut Evaluator, pos: Pos, args: &[Value]) -> Result<Value> {
    let a = ev.force(&args[0], pos)?;
    let b = ev.force(&args[1], pos)?;
    if let (Value::Int(x), Value::Int(y)) = (&a, &b) {
        return Ok(Value::Bool(x < y));
    }
    Ok(Value::Bool(ev.less_than(&args[0], &args[1], "")?))
}

/// The trace frames of a bit operation (static: these builtins are hot).
struct BitCtx {
    first: &'static str,
    second: &'static str,
}

const BIT_AND: BitCtx = BitCtx {
    first: "while evaluating the first argument passed to builtins.bitAnd",
    second: "while evaluating the second argument passed to builtins.bitAnd",
};
const BIT_OR: BitCtx = BitCtx {
    first: "while evaluating the first argument passed to builtins.bitOr",
    second: "while evaluating the second argument passed to builtins.bitOr",
};
const BIT_XOR: BitCtx = BitCtx {
    first: "while evaluating the first argument passed to builtins.bitXor",
    second: "while evaluating the second argument passed to builtins.bitXor",
};

fn bit(
    ev: &mut Evaluator,
    pos: Pos,
    args: &[Value],
    ctx: &BitCtx,
    op: fn(i64, i64) -> i64,
) -> Result<Value> {
    let x = ev.force_int(&args[0], pos, ctx.first)?;
    let y = ev.force_int(&args[1], pos, ctx.second)?;
    Ok(Value::Int(op(x, y)))
}

fn round(
    ev: &mut Evaluator,
    pos: Pos,
    args: &[Value],
    ctx: &'static str,
    op: fn(f64) -> f64,
) -> Result<Value> {
    // Nix's forceFloat: the context frame is added to any error, forcing errors included.
    let v = ev
        .force(&args[0], pos)
        .map_err(|e| e.with_trace(pos, ctx))?;
    if let Value::Int(i) = v {
        return Ok(Value::Int(i));
    }
    let f = ev.force_float(&v, pos, ctx)?;
    let r = op(f);
    if r.is_finite() && (-9.223372036854776e18..9.223372036854776e18).contains(&r) {
        Ok(Value::Int(r as i64))
    } else {
        Err(EvalError::eval(format!("NixFloat {f} is out of range of NixInt")).at(pos))
    }
}

//! `builtins.fromTOML`.
//!
//! Why it exists: Nix parses TOML with toml11 and maps tables to attribute sets, arrays to lists,
//! integers/floats/booleans/strings to the same Nix types, and rejects dates and times ("Dates and
//! times are not supported") unless an experimental feature is enabled (not in flaked). We parse
//! with the `toml` crate. Invariant: the same documents give the same values; syntax errors keep
//! Nix's "while parsing TOML: " prefix but carry the `toml` crate's description (toml11's text
//! cannot be reproduced).

use crate::builtins::Registry;
use crate::builtins::json::nul_byte_error;
use crate::error::{EvalError, Result};
use crate::eval::Evaluator;
use crate::source::Pos;
use crate::symbol::Symbol;
use crate::value::{Attr, Attrs, Value};

pub(crate) fn register(r: &mut Registry) {
    r.primop("fromTOML", 1, prim_from_toml);
}

fn convert(v: &toml::Value) -> std::result::Result<Value, String> {
    Ok(match v {
        toml::Value::String(s) => {
            if let Some(m) = nul_byte_error(s.as_bytes()) {
                return Err(format!("error: {m}"));
            }
            Value::str(s)
        }
        toml::Value::Integer(i) => Value::Int(*i),
        toml::Value::Float(f) => Value::Float(*f),
        toml::Value::Boolean(b) => Value::Bool(*b),
        toml::Value::Datetime(_) => return Err("Dates and times are not supported".into()),
        toml::Value::Array(a) => Value::list(
            a.iter()
                .map(convert)
                .collect::<std::result::Result<_, _>>()?,
        ),
        toml::Value::Table(t) => table(t)?,
    })
}

fn table(t: &toml::Table) -> std::result::Result<Value, String> {
    let mut attrs = Vec::with_capacity(t.len());
    for (k, v) in t {
        if let Some(m) = nul_byte_error(k.as_bytes()) {
            return Err(format!("error: {m}"));
        }
        attrs.push(Attr {
            name: Symbol::intern(k),
            value: convert(v)?,
            pos: Pos::NONE,
        });
    }
    Ok(Value::attrs(Attrs::from_unsorted(attrs)))
}

fn prim_from_toml(ev: &mut Evaluator, pos: Pos, args: &[Value]) -> Result<Value> {
    let s = ev.force_string(
        &args[0],
        pos,
        "while evaluating the first argument passed to builtins.fromTOML",
    )?;
    let text = String::from_utf8_lossy(&s.bytes);
    let parsed: std::result::Result<toml::Table, _> = text.parse();
    let r = match parsed {
        Ok(t) => table(&t),
        Err(e) => Err(format!("[error] {}", e.message())),
    };
    r.map_err(|m| EvalError::eval(format!("while parsing TOML: {m}")).at(pos))
}

//! The flake builtins: `getFlake`, `parseFlakeRef`, `flakeRefToString`.
//!
//! Why here: they are the evaluator-facing end of `crate::flake` (locking and calling) and of
//! `flaked_store::fetchers` (reference syntax). Invariant: pure mode only fetches locked
//! references (Nix's "cannot call 'getFlake' on unlocked flake reference"), never consults the
//! registries and never writes a lock file; impure `getFlake` may use the registries of the
//! request's flake settings (see [`crate::flake::context`]).

use flaked_store::fetchers::{Attr as FAttr, Attrs as FAttrs, FlakeRef, ParseOptions};

use crate::builtins::Registry;
use crate::error::{EvalError, Result};
use crate::eval::Evaluator;
use crate::flake::show_pos;
use crate::source::Pos;
use crate::symbol::Symbol;
use crate::value::{Attr, Attrs, Value};

pub(crate) fn register(r: &mut Registry) {
    r.primop("__getFlake", 1, prim_get_flake);
    r.primop("__parseFlakeRef", 1, prim_parse_flake_ref);
    r.primop("__flakeRefToString", 1, prim_flake_ref_to_string);
}

/// `parseFlakeRef(s, baseDir = none, allowMissing = true)`.
fn parse(s: &str) -> Result<FlakeRef> {
    let opts = ParseOptions {
        base_dir: None,
        allow_missing: true,
        ..ParseOptions::default()
    };
    FlakeRef::parse(s, &opts).map_err(|e| EvalError::eval(e.to_string()))
}

fn prim_get_flake(ev: &mut Evaluator, pos: Pos, args: &[Value]) -> Result<Value> {
    let s = ev.force_string_no_ctx(
        &args[0],
        pos,
        "while evaluating the argument passed to builtins.getFlake",
    )?;
    let text = String::from_utf8_lossy(&s.bytes).into_owned();
    let r = parse(&text)?;
    let mut settings = crate::flake::context(ev);
    let pure = ev.config.pure;
    if pure && !r.input.is_locked(&settings.fetch.input) {
        return Err(EvalError::eval(format!(
            "cannot call 'getFlake' on unlocked flake reference '{text}', at {} (use --impure to override)",
            show_pos(pos)
        )));
    }
    settings.write_lock_file = false;
    settings.recreate_lock_file = false;
    settings.update_inputs.clear();
    settings.override_inputs.clear();
    settings.allow_unlocked = !pure;
    if pure {
        settings.registries = None;
    }
    let locked = crate::flake::lock_flake_ref(ev, &r, &settings)
        .map_err(crate::flake::FlakeError::into_eval)?;
    ev.stderr.extend(locked.warnings.iter().cloned());
    crate::flake::call_flake(ev, &locked).map_err(crate::flake::FlakeError::into_eval)
}

fn prim_parse_flake_ref(ev: &mut Evaluator, pos: Pos, args: &[Value]) -> Result<Value> {
    let s = ev.force_string_no_ctx(
        &args[0],
        pos,
        "while evaluating the argument passed to builtins.parseFlakeRef",
    )?;
    let r = parse(&String::from_utf8_lossy(&s.bytes))?;
    let attrs = r
        .to_attrs()
        .into_iter()
        .map(|(k, v)| Attr {
            name: Symbol::intern(&k),
            value: match v {
                FAttr::String(s) => Value::str(&s),
                FAttr::Int(i) => Value::Int(i as i64),
                FAttr::Bool(b) => Value::Bool(b),
            },
            pos: Pos::NONE,
        })
        .collect();
    Ok(Value::attrs(Attrs::from_unsorted(attrs)))
}

fn prim_flake_ref_to_string(ev: &mut Evaluator, pos: Pos, args: &[Value]) -> Result<Value> {
    let a = ev.force_attrs(
        &args[0],
        Pos::NONE,
        "while evaluating the argument passed to builtins.flakeRefToString",
    )?;
    let mut attrs = FAttrs::new();
    for attr in a.sorted_by_name() {
        let name = attr.name.as_string();
        // Nix looks at the values without forcing them: an unevaluated one is "a thunk".
        let v = match &attr.value {
            Value::Thunk(t) => t.value().unwrap_or_else(|| attr.value.clone()),
            v => v.clone(),
        };
        let fa = match &v {
            Value::Int(i) if *i < 0 => {
                return Err(EvalError::eval(format!(
                    "negative value given for flake ref attr {name}: {i}"
                ))
                .at(pos));
            }
            Value::Int(i) => FAttr::Int(*i as u64),
            Value::Bool(b) => FAttr::Bool(*b),
            Value::String(s) => FAttr::String(String::from_utf8_lossy(&s.bytes).into_owned()),
            other => {
                return Err(EvalError::eval(format!(
                    "flake reference attribute sets may only contain integers, Booleans, and strings, but attribute '{name}' is {}",
                    other.type_desc()
                )));
            }
        };
        attrs.insert(name, fa);
    }
    let r = FlakeRef::from_attrs(&attrs).map_err(|e| EvalError::eval(e.to_string()))?;
    let s = r
        .to_url()
        .map(|u| u.to_string())
        .map_err(|e| EvalError::eval(e.to_string()))?;
    Ok(Value::str(&s))
}

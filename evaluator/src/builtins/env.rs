//! Constants and environment builtins: true, false, null, langVersion, nixVersion, storeDir,
//! nixPath, currentSystem, currentTime, getEnv.
//!
//! Invariant: in pure mode nothing here reveals the host (no currentSystem/currentTime,
//! `getEnv` returns "").

use crate::builtins::Registry;
use crate::error::Result;
use crate::eval::Evaluator;
use crate::source::Pos;
use crate::symbol::Symbol;
use crate::value::{Attr, Attrs, Value};

/// The Nix version this evaluator reproduces.
pub const NIX_VERSION: &str = "2.26.3";

pub(crate) fn register(r: &mut Registry) {
    r.constant("true", Value::Bool(true));
    r.constant("false", Value::Bool(false));
    r.constant("null", Value::Null);
    r.constant("__langVersion", Value::Int(6));
    r.constant("__nixVersion", Value::str(NIX_VERSION));
    r.constant("__storeDir", Value::str(&r.store_dir.clone()));
    if !r.pure {
        r.constant("__currentSystem", Value::str(&r.system.clone()));
        r.constant("__currentTime", Value::Int(r.time));
    }
    let mut entries = Vec::new();
    for e in r.nix_path.clone() {
        let (prefix, path) = match e.split_once('=') {
            Some((p, v)) => (p.to_string(), v.to_string()),
            None => (String::new(), e.clone()),
        };
        entries.push(Value::attrs(Attrs::from_unsorted(vec![
            Attr {
                name: Symbol::intern("prefix"),
                value: Value::str(&prefix),
                pos: Pos::NONE,
            },
            Attr {
                name: Symbol::intern("path"),
                value: Value::str(&path),
                pos: Pos::NONE,
            },
        ])));
    }
    r.constant("__nixPath", Value::list(entries));
    r.primop("__getEnv", 1, prim_get_env);
}

fn prim_get_env(ev: &mut Evaluator, pos: Pos, args: &[Value]) -> Result<Value> {
    let name = ev.force_string_no_ctx(
        &args[0],
        pos,
        "while evaluating the first argument passed to builtins.getEnv",
    )?;
    if ev.config.pure {
        return Ok(Value::str(""));
    }
    let name = name.as_str_lossy().into_owned();
    Ok(Value::str(
        ev.config.env.get(&name).map(String::as_str).unwrap_or(""),
    ))
}

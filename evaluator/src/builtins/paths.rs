//! Path access and store copies: pure-mode access checks, copying a path to the store
//! (computing its store path), resolving paths for `import`, and `findFile` (`<name>` lookups).
//!
//! Invariant: in pure mode no file outside the store directory is read.

use std::path::Path;

use crate::builtins::Registry;
use crate::error::{ErrorKind, EvalError, Result};
use crate::eval::Evaluator;
use crate::source::Pos;
use crate::store_path;
use crate::symbol::Symbol;
use crate::value::{Context, Value};

pub(crate) fn register(r: &mut Registry) {
    r.primop("__findFile", 2, prim_find_file);
}

/// Fails (as Nix does) if pure mode forbids reading `path`.
pub fn check_access(ev: &Evaluator, path: &str) -> Result<()> {
    if !ev.config.pure {
        return Ok(());
    }
    let store = ev.config.store_dir.trim_end_matches('/');
    if path == store || path.starts_with(&format!("{store}/")) {
        return Ok(());
    }
    let first = path.trim_start_matches('/').split('/').next().unwrap_or("");
    Err(EvalError::new(
        ErrorKind::Io,
        format!(
            "access to absolute path '/{first}' is forbidden in pure evaluation mode (use '--impure' to override)"
        ),
    ))
}

/// Computes the store path `path` would be copied to (Nix's `copyPathToStore`).
pub fn copy_path_to_store(ev: &mut Evaluator, path: &str, _pos: Pos) -> Result<String> {
    if let Some(sp) = ev.src_to_store.get(path) {
        return Ok(sp.clone());
    }
    let name = Path::new(path)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if name.ends_with(".drv") {
        return Err(EvalError::eval(
            "file names are not allowed to end in '.drv'",
        ));
    }
    check_access(ev, path)?;
    if !Path::new(path).exists() && std::fs::symlink_metadata(path).is_err() {
        return Err(EvalError::new(
            ErrorKind::Io,
            format!("path '{path}' does not exist"),
        ));
    }
    let h = store_path::nar_hash(Path::new(path))
        .map_err(|e| EvalError::new(ErrorKind::Io, format!("error: reading '{path}': {e}")))?;
    let name = if name.is_empty() {
        "source".to_string()
    } else {
        name
    };
    let sp = store_path::source_store_path(&ev.config.store_dir, &h, &name);
    ev.src_to_store.insert(path.to_string(), sp.clone());
    Ok(sp)
}

/// Nix's `coerceToPath` as used by `realisePath`: a path value or an absolute string.
pub fn coerce_to_path(ev: &mut Evaluator, v: &Value, pos: Pos, ctx: &str) -> Result<String> {
    let v = ev.force(v, pos)?;
    if let Value::Path(p) = &v {
        return Ok(p.to_string());
    }
    let mut c = Context::new();
    let s = ev.coerce_to_string(&v, pos, ctx, false, false, &mut c)?;
    let s = String::from_utf8_lossy(&s).into_owned();
    if !s.starts_with('/') {
        return Err(
            EvalError::eval(format!("string '{s}' doesn't represent an absolute path"))
                .with_trace(pos, ctx),
        );
    }
    Ok(s)
}

fn prim_find_file(ev: &mut Evaluator, pos: Pos, args: &[Value]) -> Result<Value> {
    let l = ev.force_list(
        &args[0],
        pos,
        "while evaluating the first argument passed to builtins.findFile",
    )?;
    let mut entries = Vec::new();
    for x in l.iter() {
        let a = ev.force_attrs(
            x,
            pos,
            "while evaluating an element of the list passed to builtins.findFile",
        )?;
        let prefix = match a.get(Symbol::intern("prefix")) {
            Some(p) => {
                let pv = p.value.clone();
                ev.force_string_no_ctx(&pv, pos, "while evaluating the `prefix` attribute of an element of the list passed to builtins.findFile")?
                    .as_str_lossy()
                    .into_owned()
            }
            None => String::new(),
        };
        let p = crate::builtins::attrs::get_attr_or_err(
            &a,
            Symbol::intern("path"),
            "in an element of the __nixPath",
        )?;
        let mut c = Context::new();
        let path = ev.coerce_to_string(
            &p.value,
            pos,
            "while evaluating the `path` attribute of an element of the list passed to builtins.findFile",
            false,
            false,
            &mut c,
        )?;
        entries.push((prefix, String::from_utf8_lossy(&path).into_owned()));
    }
    let name = ev.force_string_no_ctx(
        &args[1],
        pos,
        "while evaluating the second argument passed to builtins.findFile",
    )?;
    let name = name.as_str_lossy().into_owned();
    if ev.config.pure {
        return Err(EvalError::eval(format!(
            "cannot look up '<{name}>' in pure evaluation mode (use '--impure' to override)"
        ))
        .at(pos));
    }
    for (prefix, path) in entries {
        let rest = if prefix.is_empty() {
            Some(name.as_str())
        } else if name == prefix {
            Some("")
        } else {
            name.strip_prefix(&format!("{prefix}/"))
        };
        let Some(rest) = rest else { continue };
        let full = if rest.is_empty() {
            path.clone()
        } else {
            format!("{}/{}", path.trim_end_matches('/'), rest)
        };
        if Path::new(&full).exists() {
            return Ok(Value::Path(std::rc::Rc::from(
                crate::lower::canon_path(&full).as_str(),
            )));
        }
    }
    Err(EvalError::eval(format!(
        "file '{name}' was not found in the Nix search path (add it using $NIX_PATH or -I)"
    ))
    .at(pos))
}

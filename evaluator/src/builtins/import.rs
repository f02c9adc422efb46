//! `import` and `scopedImport`: evaluate another file (or a directory's `default.nix`).
//!
//! Invariant: each resolved file is evaluated at most once per evaluation (results cached), as in
//! Nix's file evaluation cache; `scopedImport` results are not cached.

use std::path::{Path, PathBuf};

use crate::builtins::Registry;
use crate::builtins::paths::{check_access, coerce_to_path};
use crate::error::{ErrorKind, EvalError, Result};
use crate::eval::Evaluator;
use crate::source::{Origin, Pos};
use crate::value::{Env, Value};

pub(crate) fn register(r: &mut Registry) {
    r.primop("import", 1, prim_import);
    r.primop("scopedImport", 2, prim_scoped_import);
}

/// Resolves a file to import: directories mean their `default.nix`.
fn resolve_expr_path(ev: &Evaluator, path: &str) -> Result<PathBuf> {
    check_access(ev, path)?;
    let p = Path::new(path);
    // Store paths live under the store's physical root, which may differ from `/`.
    let real = crate::store_path::real_path(&ev.config.store_dir, path);
    let md = std::fs::metadata(&real)
        .map_err(|_| EvalError::new(ErrorKind::Io, format!("path '{path}' does not exist")))?;
    if md.is_dir() {
        let d = p.join("default.nix");
        if !real.join("default.nix").exists() {
            return Err(EvalError::new(
                ErrorKind::Io,
                format!("path '{}' does not exist", d.display()),
            ));
        }
        return Ok(d);
    }
    Ok(p.to_path_buf())
}

fn read_source(ev: &Evaluator, path: &Path) -> Result<Vec<u8>> {
    let real = crate::store_path::real_path(&ev.config.store_dir, &path.to_string_lossy());
    std::fs::read(real).map_err(|e| {
        EvalError::new(
            ErrorKind::Io,
            format!("reading file '{}': {}", path.display(), e),
        )
    })
}

/// Evaluates a file (cached), adding Nix's "while evaluating the file" frame on failure.
pub fn eval_file(ev: &mut Evaluator, path: &Path) -> Result<Value> {
    if let Some(v) = ev.import_cache.get(path) {
        return Ok(v.clone());
    }
    let shown = path.display().to_string();
    let raw = read_source(ev, path)?;
    let dir = path
        .parent()
        .map(|d| d.display().to_string())
        .unwrap_or_else(|| "/".to_string());
    // Parse errors carry no "while evaluating the file" frame (Nix parses outside that scope).
    let e = ev.parse(Origin::File(shown.clone()), &raw, &dir)?;
    let r = ev.eval_root(&e);
    match r {
        Ok(v) => {
            ev.import_cache.insert(path.to_path_buf(), v.clone());
            Ok(v)
        }
        Err(e) => Err(e.with_trace(Pos::NONE, format!("while evaluating the file '{shown}':"))),
    }
}

fn prim_import(ev: &mut Evaluator, pos: Pos, args: &[Value]) -> Result<Value> {
    let p = coerce_to_path(ev, &args[0], pos, "while realising the context of a path")?;
    let file = resolve_expr_path(ev, &p)?;
    eval_file(ev, &file)
}

fn prim_scoped_import(ev: &mut Evaluator, pos: Pos, args: &[Value]) -> Result<Value> {
    let p = coerce_to_path(ev, &args[1], pos, "while realising the context of a path")?;
    let file = resolve_expr_path(ev, &p)?;
    let scope = ev.force_attrs(
        &args[0],
        pos,
        "while evaluating the first argument passed to builtins.scopedImport",
    )?;
    let raw = read_source(ev, &file)?;
    let dir = file
        .parent()
        .map(|d| d.display().to_string())
        .unwrap_or_else(|| "/".to_string());
    let names = scope.entries.iter().map(|a| a.name).collect();
    let e = ev.parse_scoped(Origin::File(file.display().to_string()), &raw, &dir, names)?;
    let env = Env::new_filled(
        None,
        scope.entries.iter().map(|a| a.value.clone()).collect(),
    );
    ev.eval(&e, &env)
}

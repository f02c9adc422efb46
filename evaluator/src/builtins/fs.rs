//! Filesystem builtins: readFile, readDir, readFileType, pathExists, toPath.
//!
//! Why it exists: these read the local filesystem the way Nix's `realisePath` + `SourcePath` do
//! (paths canonicalised, symlinks resolved except where Nix uses `lstat`), with Nix's error
//! texts ("opening file '…': No such file or directory"). Invariant: in pure mode nothing outside
//! the store is read (`paths::check_access` first); `pathExists` answers `false` for forbidden
//! paths, as Nix does.

use std::rc::Rc;

use crate::builtins::Registry;
use crate::builtins::paths::{check_access, coerce_to_path};
use crate::error::{ErrorKind, EvalError, Result};
use crate::eval::Evaluator;
use crate::source::Pos;
use crate::store_path;
use crate::symbol::Symbol;
use crate::value::{Attr, Attrs, Context, Value};

pub(crate) fn register(r: &mut Registry) {
    r.primop("__readFile", 1, prim_read_file);
    r.primop("__readDir", 1, prim_read_dir);
    r.primop("__readFileType", 1, prim_read_file_type);
    r.primop("__pathExists", 1, prim_path_exists);
    r.primop("__toPath", 1, prim_to_path);
}

/// Nix's `canonPath` without symlink resolution: collapses `//`, `.` and `..`, drops a
/// trailing slash. `p` must be absolute.
pub fn canon_path(p: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    if parts.is_empty() {
        "/".to_string()
    } else {
        let mut s = String::with_capacity(p.len());
        for c in parts {
            s.push('/');
            s.push_str(c);
        }
        s
    }
}

fn io_err(msg: String) -> EvalError {
    EvalError::new(ErrorKind::Io, msg)
}

/// The OS error text without Rust's " (os error N)" suffix, as `strerror` prints it.
pub fn strerror(e: &std::io::Error) -> String {
    let s = e.to_string();
    match s.find(" (os error") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}

/// Nix's `realisePath`: the argument as a canonical absolute path, access-checked.
/// `resolve` follows symlinks in the final component too (Nix's `SymlinkResolution::Full`).
pub fn realise_path(ev: &mut Evaluator, v: &Value, resolve: bool) -> Result<String> {
    let p = coerce_to_path(ev, v, Pos::NONE, "while realising the context of a path")?;
    let p = canon_path(&p);
    let frame = |e: EvalError| {
        e.with_trace(
            Pos::NONE,
            format!("while realising the context of path '{p}'"),
        )
    };
    check_access(ev, &p).map_err(frame)?;
    if resolve && let Ok(real) = std::fs::canonicalize(&p) {
        let real = real.to_string_lossy().into_owned();
        check_access(ev, &real).map_err(frame)?;
        return Ok(real);
    }
    Ok(p)
}

fn prim_read_file(ev: &mut Evaluator, pos: Pos, args: &[Value]) -> Result<Value> {
    let p = realise_path(ev, &args[0], true)?;
    let data = read_file_bytes(ev, &p)?;
    if data.contains(&0) {
        return Err(EvalError::eval(format!(
            "the contents of the file '{p}' cannot be represented as a Nix string"
        ))
        .at(pos));
    }
    Ok(Value::string(data))
}

/// Reads a whole file with Nix's error messages (a store path is read from the store's physical
/// location).
pub fn read_file_bytes(ev: &Evaluator, p: &str) -> Result<Vec<u8>> {
    let real = store_path::real_path(&ev.config.store_dir, p);
    let meta = std::fs::metadata(&real)
        .map_err(|e| io_err(format!("opening file '{p}': {}", strerror(&e))))?;
    if meta.is_dir() {
        return Err(io_err(format!("reading from file '{p}': Is a directory")));
    }
    std::fs::read(&real).map_err(|e| io_err(format!("reading from file '{p}': {}", strerror(&e))))
}

fn type_name(ft: std::fs::FileType) -> &'static str {
    if ft.is_symlink() {
        "symlink"
    } else if ft.is_dir() {
        "directory"
    } else if ft.is_file() {
        "regular"
    } else {
        "unknown"
    }
}

fn prim_read_dir(ev: &mut Evaluator, _pos: Pos, args: &[Value]) -> Result<Value> {
    let p = realise_path(ev, &args[0], true)?;
    let rd = std::fs::read_dir(store_path::real_path(&ev.config.store_dir, &p))
        .map_err(|e| io_err(format!("reading directory {p}: {}", strerror(&e))))?;
    let mut attrs = Vec::new();
    for ent in rd {
        let ent = ent.map_err(|e| io_err(format!("reading directory {p}: {}", strerror(&e))))?;
        let name = ent.file_name();
        let ft = ent
            .file_type()
            .map_err(|e| io_err(format!("getting status of '{p}': {}", strerror(&e))))?;
        use std::os::unix::ffi::OsStrExt;
        attrs.push(Attr {
            name: Symbol::intern_bytes(name.as_bytes()),
            value: Value::str(type_name(ft)),
            pos: Pos::NONE,
        });
    }
    Ok(Value::attrs(Attrs::from_unsorted(attrs)))
}

fn prim_read_file_type(ev: &mut Evaluator, _pos: Pos, args: &[Value]) -> Result<Value> {
    let p = realise_path(ev, &args[0], false)?;
    let meta = std::fs::symlink_metadata(store_path::real_path(&ev.config.store_dir, &p))
        .map_err(|e| io_err(format!("getting status of '{p}': {}", strerror(&e))))?;
    Ok(Value::str(type_name(meta.file_type())))
}

fn prim_path_exists(ev: &mut Evaluator, pos: Pos, args: &[Value]) -> Result<Value> {
    let v = ev.force(&args[0], pos)?;
    let must_be_dir =
        matches!(&v, Value::String(s) if s.bytes.ends_with(b"/") || s.bytes.ends_with(b"/."));
    let p = match realise_path(ev, &v, must_be_dir) {
        Ok(p) => p,
        Err(e) if e.kind() == ErrorKind::Io && e.msg().starts_with("access to ") => {
            return Ok(Value::Bool(false));
        }
        Err(e) => return Err(e),
    };
    let real = store_path::real_path(&ev.config.store_dir, &p);
    let meta = if must_be_dir {
        std::fs::metadata(&real)
    } else {
        std::fs::symlink_metadata(&real)
    };
    Ok(Value::Bool(match meta {
        Ok(m) => !must_be_dir || m.is_dir(),
        Err(_) => false,
    }))
}

fn prim_to_path(ev: &mut Evaluator, pos: Pos, args: &[Value]) -> Result<Value> {
    let v = ev.force(&args[0], pos)?;
    let mut ctx = Context::new();
    if let Value::String(s) = &v
        && let Some(c) = &s.context
    {
        ctx.extend(c.iter().cloned());
    }
    let p = coerce_to_path(
        ev,
        &v,
        pos,
        "while evaluating the first argument passed to builtins.toPath",
    )?;
    let _ = Rc::<str>::from("");
    Ok(Value::string_ctx(canon_path(&p).into_bytes(), ctx))
}

#[cfg(test)]
mod tests {
    #[test]
    fn canon() {
        assert_eq!(super::canon_path("/a/../b//c/./"), "/b/c");
        assert_eq!(super::canon_path("/.."), "/");
    }
}

//! Path access and store copies: pure-mode access checks, copying a path to the store
//! (writing it through `flaked-store`), resolving paths for `import`, and `findFile` (`<name>` lookups).
//!
//! Invariant: in pure mode no file outside the store directory is read.

use std::path::Path;

use flaked_store::hash::HashAlgo;
use flaked_store::nar::{self, FileKind, FilterAborted, NarHasher};
use flaked_store::store_path::FileIngestionMethod;

use crate::builtins::Registry;
use crate::error::{ErrorKind, EvalError, Result};
use crate::eval::Evaluator;
use crate::source::Pos;
use crate::store_path;
use crate::symbol::Symbol;
use crate::value::{Context, Value};

pub(crate) fn register(r: &mut Registry) {
    r.primop("__findFile", 2, prim_find_file);
    r.primop("__path", 1, prim_path);
    r.primop("__filterSource", 2, prim_filter_source);
    r.primop("__toFile", 2, prim_to_file);
    r.primop("__storePath", 1, prim_store_path);
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
    if std::fs::symlink_metadata(crate::store_path::real_path(&ev.config.store_dir, path)).is_err()
    {
        return Err(EvalError::new(
            ErrorKind::Io,
            format!("path '{path}' does not exist"),
        ));
    }
    let name = if name.is_empty() {
        "source".to_string()
    } else {
        name
    };
    let store = store_path::open_store(&ev.config.store_dir)?;
    // As Nix's LocalStore does: hash first and write only if the path is not valid yet, so
    // re-evaluating an unchanged tree reads it but creates no files.
    if let Some(sp) = existing_source_path(&store, path, &name) {
        ev.src_to_store.insert(path.to_string(), sp.clone());
        return Ok(sp);
    }
    let added = store
        .add_path(
            Path::new(path),
            &name,
            FileIngestionMethod::Recursive,
            HashAlgo::Sha256,
            None,
        )
        .map_err(store_path::store_err)?;
    let sp = store.store_dir().print(&added.path);
    ev.src_to_store.insert(path.to_string(), sp.clone());
    Ok(sp)
}

/// The store path `path` (copied recursively, SHA-256) would get, if it is already valid.
/// Any failure (unreadable tree, store error) yields `None`: the caller then copies as usual and
/// reports that copy's error.
fn existing_source_path(
    store: &flaked_store::local::LocalStore,
    path: &str,
    name: &str,
) -> Option<String> {
    let mut hasher = NarHasher::new(HashAlgo::Sha256);
    nar::dump_path(Path::new(path), &mut hasher, None).ok()?;
    let (hash, _) = hasher.finish();
    let dir = store.store_dir();
    let sp = dir
        .make_fixed_output_path(
            FileIngestionMethod::Recursive,
            &hash,
            name,
            &Default::default(),
        )
        .ok()?;
    store
        .is_valid_path(&sp)
        .ok()
        .filter(|valid| *valid)
        .map(|_| dir.print(&sp))
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
        if crate::store_path::real_path(&ev.config.store_dir, &full).exists() {
            return Ok(Value::Path(std::rc::Rc::new(crate::lower::canon_path(
                &full,
            ))));
        }
    }
    // Nix raises a catchable ThrownError here.
    let msg = if ev.config.pure {
        format!("cannot look up '<{name}>' in pure evaluation mode (use '--impure' to override)")
    } else {
        format!("file '{name}' was not found in the Nix search path (add it using $NIX_PATH or -I)")
    };
    Err(EvalError::new(ErrorKind::Throw, msg).at(pos))
}

/// Nix's `fileTypeToString`, the second argument of a path filter.
fn file_kind_name(k: FileKind) -> &'static str {
    match k {
        FileKind::Regular => "regular",
        FileKind::Directory => "directory",
        FileKind::Symlink => "symlink",
        FileKind::Unknown => "unknown",
    }
}

/// Nix's `addPath`: imports `path` (filtered, flat or recursive, optionally checked against
/// an expected hash) into the store and returns its store path string.
#[allow(clippy::too_many_arguments)]
fn add_path(
    ev: &mut Evaluator,
    pos: Pos,
    name: &str,
    path: &str,
    filter: Option<Value>,
    method: FileIngestionMethod,
    expected: Option<flaked_store::hash::Hash>,
) -> Result<Value> {
    let inner = |ev: &mut Evaluator| -> Result<Value> {
        let store = store_path::open_store(&ev.config.store_dir)?;
        let dir = store.store_dir().clone();
        let expected_path = match &expected {
            Some(h) => Some(
                dir.make_fixed_output_path(method, h, name, &Default::default())
                    .map_err(store_path::store_err)?,
            ),
            None => None,
        };
        if let Some(p) = &expected_path
            && store.is_valid_path(p).map_err(store_path::store_err)?
        {
            let s = dir.print(p);
            return Ok(Value::string_ctx(
                s.clone().into_bytes(),
                Context::from([s]),
            ));
        }
        check_access(ev, path)?;
        let real = store_path::real_path(&ev.config.store_dir, path);
        let src = std::fs::canonicalize(&real).map_err(|e| {
            EvalError::new(ErrorKind::Io, format!("getting status of '{path}': {e}"))
        })?;
        let mut stashed: Option<EvalError> = None;
        let added = match &filter {
            Some(f) => {
                let mut call =
                    |p: &Path, k: FileKind| -> std::result::Result<bool, FilterAborted> {
                        let arg = Value::string(p.as_os_str().as_encoded_bytes().to_vec());
                        let r = ev
                            .call(f, &[arg, Value::str(file_kind_name(k))], pos)
                            .and_then(|r| {
                                ev.force_bool(
                                    &r,
                                    pos,
                                    "while evaluating the return value of the path filter function",
                                )
                            });
                        r.map_err(|e| {
                            stashed = Some(e);
                            FilterAborted
                        })
                    };
                store.add_path(&src, name, method, HashAlgo::Sha256, Some(&mut call))
            }
            None => store.add_path(&src, name, method, HashAlgo::Sha256, None),
        };
        let added = match (added, stashed) {
            (_, Some(e)) => return Err(e),
            (r, None) => r.map_err(store_path::store_err)?,
        };
        if let Some(p) = &expected_path
            && *p != added.path
        {
            return Err(EvalError::eval(format!(
                "store path mismatch in (possibly filtered) path added from '{path}'"
            ))
            .at(pos));
        }
        let s = dir.print(&added.path);
        Ok(Value::string_ctx(
            s.clone().into_bytes(),
            Context::from([s]),
        ))
    };
    inner(ev).map_err(|e| e.with_trace(pos, format!("while adding path '{path}'")))
}

fn base_name(path: &str) -> String {
    Path::new(path)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn prim_path(ev: &mut Evaluator, pos: Pos, args: &[Value]) -> Result<Value> {
    let attrs = ev.force_attrs(
        &args[0],
        pos,
        "while evaluating the argument passed to 'builtins.path'",
    )?;
    let mut path = None;
    let mut name = String::new();
    let mut filter = None;
    let mut method = FileIngestionMethod::Recursive;
    let mut expected = None;
    for a in attrs.sorted_by_name() {
        let v = a.value.clone();
        match &*String::from_utf8_lossy(&a.name.bytes()) {
            "path" => {
                path = Some(coerce_to_path(
                    ev,
                    &v,
                    a.pos,
                    "while evaluating the 'path' attribute passed to 'builtins.path'",
                )?)
            }
            "name" => {
                name = ev
                    .force_string_no_ctx(
                        &v,
                        a.pos,
                        "while evaluating the `name` attribute passed to builtins.path",
                    )?
                    .as_str_lossy()
                    .into_owned()
            }
            "filter" => {
                filter = Some(ev.force_function(
                    &v,
                    a.pos,
                    "while evaluating the `filter` parameter passed to builtins.path",
                )?)
            }
            "recursive" => {
                method = if ev.force_bool(
                    &v,
                    a.pos,
                    "while evaluating the `recursive` attribute passed to builtins.path",
                )? {
                    FileIngestionMethod::Recursive
                } else {
                    FileIngestionMethod::Flat
                }
            }
            "sha256" => {
                let s = ev.force_string_no_ctx(
                    &v,
                    a.pos,
                    "while evaluating the `sha256` attribute passed to builtins.path",
                )?;
                let (h, _) = flaked_store::hash::Hash::parse_allow_empty(
                    &s.as_str_lossy(),
                    Some(HashAlgo::Sha256),
                )
                .map_err(store_path::store_err)?;
                expected = Some(h);
            }
            other => {
                return Err(EvalError::eval(format!(
                    "unsupported argument '{other}' to 'builtins.path'"
                ))
                .at(a.pos));
            }
        }
    }
    let Some(path) = path else {
        return Err(EvalError::eval(
            "missing required 'path' attribute in the first argument to 'builtins.path'",
        )
        .at(pos));
    };
    if name.is_empty() {
        name = base_name(&path);
    }
    add_path(ev, pos, &name, &path, filter, method, expected)
}

fn prim_filter_source(ev: &mut Evaluator, pos: Pos, args: &[Value]) -> Result<Value> {
    let path = coerce_to_path(
        ev,
        &args[1],
        pos,
        "while evaluating the second argument (the path to filter) passed to 'builtins.filterSource'",
    )?;
    let f = ev.force_function(
        &args[0],
        pos,
        "while evaluating the first argument passed to builtins.filterSource",
    )?;
    let name = base_name(&path);
    add_path(
        ev,
        pos,
        &name,
        &path,
        Some(f),
        FileIngestionMethod::Recursive,
        None,
    )
}

fn prim_to_file(ev: &mut Evaluator, pos: Pos, args: &[Value]) -> Result<Value> {
    let name = ev.force_string_no_ctx(
        &args[0],
        pos,
        "while evaluating the first argument passed to builtins.toFile",
    )?;
    let name = name.as_str_lossy().into_owned();
    let contents = ev.force_string(
        &args[1],
        pos,
        "while evaluating the second argument passed to builtins.toFile",
    )?;
    let store = store_path::open_store(&ev.config.store_dir)?;
    let dir = store.store_dir().clone();
    let mut refs = std::collections::BTreeSet::new();
    if let Some(c) = &contents.context {
        for elem in c.iter() {
            if elem.starts_with('=') || elem.starts_with('!') {
                // Nix shows context elements with base names (`!out!…-a.drv`).
                let prefix = format!("{}/", dir.as_str().trim_end_matches('/'));
                let shown = elem.replacen(&prefix, "", 1);
                return Err(EvalError::eval(format!(
                    "files created by builtins.toFile may not reference derivations, but {name} references {shown}"
                ))
                .at(pos));
            }
            refs.insert(dir.parse(elem).map_err(store_path::store_err)?);
        }
    }
    let p = store
        .add_text(&name, &contents.bytes, &refs)
        .map_err(store_path::store_err)?;
    let s = dir.print(&p);
    Ok(Value::string_ctx(
        s.clone().into_bytes(),
        Context::from([s]),
    ))
}

fn prim_store_path(ev: &mut Evaluator, pos: Pos, args: &[Value]) -> Result<Value> {
    if ev.config.pure {
        return Err(
            EvalError::eval("'builtins.storePath' is not allowed in pure evaluation mode").at(pos),
        );
    }
    let path = coerce_to_path(
        ev,
        &args[0],
        pos,
        "while evaluating the first argument passed to 'builtins.storePath'",
    )?;
    let store = store_path::open_store(&ev.config.store_dir)?;
    let dir = store.store_dir().clone();
    let prefix = format!("{}/", dir.as_str().trim_end_matches('/'));
    let in_store = path.starts_with(&prefix);
    // Symlinks are resolved unless the path itself is directly in the store.
    let direct = in_store && !path[prefix.len()..].contains('/');
    let path = if direct {
        path
    } else {
        std::fs::canonicalize(&path)
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or(path)
    };
    if !path.starts_with(&prefix) {
        return Err(EvalError::eval(format!("path '{path}' is not in the Nix store")).at(pos));
    }
    let (sp, _) = dir.parse_prefix(&path).map_err(store_path::store_err)?;
    if !store.is_valid_path(&sp).map_err(store_path::store_err)? {
        return Err(EvalError::eval(format!(
            "path '{}' is not valid",
            dir.print(&sp)
        )));
    }
    Ok(Value::string_ctx(
        path.clone().into_bytes(),
        Context::from([dir.print(&sp)]),
    ))
}

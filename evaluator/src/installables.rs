//! The derivations of `nix build -f FILE ATTR…` / `--expr E ATTR…` installables.
//!
//! Why here, in Rust, and not as Nix code wrapped around the user's expression: Nix finds them
//! in C++ (`InstallableAttrPath`: `findAlongAttrPath`, then `getDerivations`, then each
//! derivation's `drvPath` and outputs to install), so an error in the user's code carries only
//! the user's own trace frames and positions. Wrapper code would add frames of its own and,
//! embedding the user's text, shift every position. Invariant: values are forced in the order
//! Nix forces them (every selected derivation's `name` while collecting, then per derivation its
//! `drvPath`, then its outputs), so the first error is the one Nix reports.

use crate::error::{EvalError, Result};
use crate::eval::Evaluator;
use crate::source::Pos;
use crate::symbol::Symbol;
use crate::value::{Attrs, Value};

/// One derivation an installable stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundDerivation {
    /// Its store path, as the value's `drvPath` printed it.
    pub drv_path: String,
    /// The outputs `nix build` installs by default (`outputSpecified`/`outputName`, else
    /// `meta.outputsToInstall`, else all of `outputs`), sorted; empty when the installable named
    /// its outputs (`a^out`): they are not looked at then.
    pub outputs: Vec<String>,
}

/// The derivations of the installable at `attr_path` in `root` (empty path: `root` itself).
/// `explicit_outputs`: the installable names its outputs, so the defaults are not queried.
pub fn derivations_at(
    ev: &mut Evaluator,
    root: &Value,
    attr_path: &str,
    explicit_outputs: bool,
) -> Result<Vec<FoundDerivation>> {
    let v = if attr_path.is_empty() {
        root.clone()
    } else {
        crate::api::select_path(ev, root.clone(), attr_path)?
    };
    let mut found = Vec::new();
    get_derivations(ev, &v, &mut found)?;
    let mut out = Vec::with_capacity(found.len());
    for drv in found {
        let drv_path = match drv.get(Symbol::intern("drvPath")) {
            Some(a) => {
                let (v, pos) = (a.value.clone(), a.pos);
                let mut ctx = crate::value::Context::new();
                let what = "while evaluating the 'drvPath' attribute of a derivation";
                let s = ev.coerce_to_string(&v, pos, what, false, false, &mut ctx)?;
                let s = String::from_utf8_lossy(&s).into_owned();
                // Nix's `coerceToStorePath`, then `requireDerivation`.
                let parsed = flaked_store::store_path::StoreDir::new(ev.config.store_dir.clone())
                    .and_then(|dir| dir.parse(&s));
                let Ok(path) = parsed else {
                    return Err(
                        EvalError::eval(format!("path '{s}' is not in the Nix store"))
                            .with_trace(pos, what),
                    );
                };
                if !path.name().ends_with(".drv") {
                    return Err(EvalError::eval(format!(
                        "store path '{}' is not a valid derivation path",
                        path.base_name()
                    ))
                    .with_trace(pos, what));
                }
                s
            }
            None => {
                return Err(EvalError::eval(format!(
                    "'{attr_path}' is not a derivation"
                )));
            }
        };
        let outputs = if explicit_outputs {
            Vec::new()
        } else {
            outputs_to_install(ev, &drv)?
        };
        out.push(FoundDerivation { drv_path, outputs });
    }
    Ok(out)
}

/// Nix's `getDerivations`: `v` (auto-called) is a derivation; or a set, whose members with valid
/// names that are derivations count, and whose member sets with `recurseForDerivations` are
/// searched too; or a list, each of whose elements is a derivation or searched. A function left
/// after auto-calling is an error, as is anything else. An error below a set's member gets the
/// trace frame `while evaluating the attribute 'NAME'` at the member's definition.
fn get_derivations(
    ev: &mut Evaluator,
    v: &Value,
    found: &mut Vec<std::rc::Rc<Attrs>>,
) -> Result<()> {
    let v = crate::api::auto_call(ev, v)?;
    if !collect(ev, &v, found)? {
        return Ok(());
    }
    match &v {
        Value::Attrs(a) => {
            let recurse = Symbol::intern("recurseForDerivations");
            for attr in a.sorted_by_name() {
                let name = attr.name.as_string();
                if !valid_attr_name(&name) {
                    continue;
                }
                let r = (|| -> Result<()> {
                    let member = ev.force(&attr.value, Pos::NONE)?;
                    if collect(ev, &member, found)?
                        && let Value::Attrs(m) = &member
                        && let Some(r) = m.get(recurse)
                    {
                        let (r, pos) = (r.value.clone(), r.pos);
                        if ev.force_bool(
                            &r,
                            pos,
                            "while evaluating the attribute `recurseForDerivations`",
                        )? {
                            get_derivations(ev, &member, found)?;
                        }
                    }
                    Ok(())
                })();
                r.map_err(|e| {
                    e.with_trace(attr.pos, format!("while evaluating the attribute '{name}'"))
                })?;
            }
            Ok(())
        }
        Value::List(items) => {
            for item in items.iter() {
                let item = ev.force(item, Pos::NONE)?;
                if collect(ev, &item, found)? {
                    get_derivations(ev, &item, found)?;
                }
            }
            Ok(())
        }
        _ => Err(EvalError::type_error(
            "expression does not evaluate to a derivation (or a set or list of those)",
        )),
    }
}

/// Nix's `getDerivation`: when `v` (forced) is a derivation, records it (its `name` is read, as
/// Nix does) and answers false; otherwise answers true (worth searching).
fn collect(ev: &mut Evaluator, v: &Value, found: &mut Vec<std::rc::Rc<Attrs>>) -> Result<bool> {
    if !ev.is_derivation(v)? {
        return Ok(true);
    }
    let Value::Attrs(a) = v else {
        return Ok(true);
    };
    // The same set twice (`rec { x = derivation …; y = x; }`) counts once.
    if found.iter().any(|f| std::rc::Rc::ptr_eq(f, a)) {
        return Ok(false);
    }
    match a.get(ev.syms.name) {
        Some(n) => {
            let n = n.value.clone();
            ev.force_string_no_ctx(
                &n,
                Pos::NONE,
                "while evaluating the 'name' attribute of a derivation",
            )?;
        }
        None => return Err(EvalError::type_error("derivation name missing")),
    }
    found.push(a.clone());
    Ok(false)
}

/// Names `getDerivations` looks at in a set (`[A-Za-z_][A-Za-z0-9-_+]*`).
fn valid_attr_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '+'))
}

/// Nix's `PackageInfo::queryOutputs(false, true)`: the derivation's `outputs` (default `out`),
/// reduced to `outputName` when `outputSpecified` is true, else to `meta.outputsToInstall`
/// when there is one. Sorted.
fn outputs_to_install(ev: &mut Evaluator, drv: &Attrs) -> Result<Vec<String>> {
    let sym = Symbol::intern;
    let mut outputs = std::collections::BTreeSet::new();
    match drv.get(sym("outputs")) {
        Some(o) => {
            let (o, pos) = (o.value.clone(), o.pos);
            let list = ev.force_list(
                &o,
                pos,
                "while evaluating the 'outputs' attribute of a derivation",
            )?;
            for item in list.iter() {
                let s = ev.force_string_no_ctx(
                    item,
                    pos,
                    "while evaluating the name of an output of a derivation",
                )?;
                outputs.insert(s.as_str_lossy().into_owned());
            }
        }
        None => {
            outputs.insert("out".to_string());
        }
    }
    if let Some(s) = drv.get(sym("outputSpecified")) {
        let (s, pos) = (s.value.clone(), s.pos);
        if ev.force_bool(
            &s,
            pos,
            "while evaluating the 'outputSpecified' attribute of a derivation",
        )? {
            let name = match drv.get(sym("outputName")) {
                Some(n) => {
                    let n = n.value.clone();
                    ev.force_string_no_ctx(
                        &n,
                        Pos::NONE,
                        "while evaluating the output name of a derivation",
                    )?
                    .as_str_lossy()
                    .into_owned()
                }
                None => String::new(),
            };
            if !outputs.contains(&name) {
                return Err(EvalError::eval(format!(
                    "derivation does not have output '{name}'"
                )));
            }
            return Ok(vec![name]);
        }
    }
    let Some(meta) = drv.get(sym("meta")) else {
        return Ok(outputs.into_iter().collect());
    };
    let (meta, pos) = (meta.value.clone(), meta.pos);
    let meta = ev.force_attrs(
        &meta,
        pos,
        "while evaluating the 'meta' attribute of a derivation",
    )?;
    // A meta value that is not plain data (a function, a derivation, …) counts as absent.
    let to_install = match meta.get(sym("outputsToInstall")) {
        Some(a) if valid_meta(ev, &a.value)? => ev.force(&a.value, Pos::NONE)?,
        _ => return Ok(outputs.into_iter().collect()),
    };
    let bad = || EvalError::eval("this derivation has bad 'meta.outputsToInstall'");
    let Value::List(list) = to_install else {
        return Err(bad());
    };
    let mut chosen = std::collections::BTreeSet::new();
    for item in list.iter() {
        let Value::String(s) = ev.force(item, Pos::NONE)? else {
            return Err(bad());
        };
        let s = s.as_str_lossy().into_owned();
        if !outputs.contains(&s) {
            return Err(bad());
        }
        chosen.insert(s);
    }
    Ok(chosen.into_iter().collect())
}

/// Nix's `PackageInfo::checkMeta`: `v` (forced deeply) is plain data — numbers, Booleans,
/// strings, and lists and sets of those, no set with an `outPath`.
fn valid_meta(ev: &mut Evaluator, v: &Value) -> Result<bool> {
    match ev.force(v, Pos::NONE)? {
        Value::List(items) => {
            for item in items.iter() {
                if !valid_meta(ev, item)? {
                    return Ok(false);
                }
            }
            Ok(true)
        }
        Value::Attrs(a) => {
            if a.get(ev.syms.out_path).is_some() {
                return Ok(false);
            }
            for attr in a.entries.iter() {
                if !valid_meta(ev, &attr.value)? {
                    return Ok(false);
                }
            }
            Ok(true)
        }
        Value::Int(_) | Value::Bool(_) | Value::String(_) | Value::Float(_) => Ok(true),
        _ => Ok(false),
    }
}

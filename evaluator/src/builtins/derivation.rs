//! `derivationStrict` and `derivation`: turning an attribute set into a store
//! derivation, written to the store as Nix does at evaluation time.
//!
//! Invariant: for the same attributes, the `.drv` bytes, the derivation path and every output
//! path equal Nix 2.26's (`prim_derivationStrict` in `primops.cc`): attributes are processed in
//! lexicographic order with Nix's coercions, string contexts become input derivations and
//! sources, and the ATerm, hash modulo and paths come from `flaked-store` (one implementation
//! of each format). `derivation` is Nix's own wrapper expression, evaluated lazily from the
//! embedded `derivation-internal.nix`, so its shape and error traces are Nix's.

use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;

use flaked_store::derivation::{
    Derivation, DerivationOutput, fixed_output, parse_output_hash_mode,
};
use flaked_store::hash::HashFormat;
use flaked_store::local::LocalStore;
use flaked_store::store_path::{ContentAddressMethod, StoreDir, StorePath, check_name};

use crate::builtins::Registry;
use crate::error::{EvalError, Result};
use crate::eval::Evaluator;
use crate::source::{self, Origin, Pos};
use crate::store_path::{open_store, store_err};
use crate::symbol::Symbol;
use crate::value::{Attr, Attrs, Context, Value};

/// Nix's `derivation-internal.nix`, preceded by the empty line Nix's embedding adds.
const DERIVATION_NIX: &str = concat!("\n", include_str!("derivation-internal.nix"));

pub(crate) fn register(r: &mut Registry) {
    r.primop("derivationStrict", 1, prim_derivation_strict);
    r.constant(
        "derivation",
        Value::native_thunk(Rc::new(|ev: &mut Evaluator| -> Result<Value> {
            let e = ev.parse(
                Origin::File("<nix/derivation-internal.nix>".to_string()),
                DERIVATION_NIX.as_bytes(),
                "/",
            )?;
            ev.eval_root(&e)
        })),
    );
}

fn prim_derivation_strict(ev: &mut Evaluator, pos: Pos, args: &[Value]) -> Result<Value> {
    let attrs = ev.force_attrs(
        &args[0],
        pos,
        "while evaluating the argument passed to builtins.derivationStrict",
    )?;
    let name_attr = crate::builtins::attrs::get_attr_or_err(
        &attrs,
        ev.syms.name,
        "in the attrset passed as argument to builtins.derivationStrict",
    )?;
    let drv_name = ev
        .force_string_no_ctx(
            &name_attr.value,
            pos,
            "while evaluating the `name` attribute passed to builtins.derivationStrict",
        )
        .map_err(|e| {
            e.with_trace(
                name_attr.pos,
                "while evaluating the derivation attribute 'name'",
            )
        })?;
    let drv_name = String::from_utf8_lossy(&drv_name.bytes).into_owned();
    derivation_strict_internal(ev, &drv_name, &attrs).map_err(|e| {
        e.with_trace(
            Pos::NONE,
            format!(
                "while evaluating derivation '{drv_name}'\n  whose name attribute is located at {}",
                source::pos_string(name_attr.pos)
            ),
        )
    })
}

fn experimental(feature: &str) -> EvalError {
    EvalError::eval(format!(
        "experimental Nix feature '{feature}' is disabled; add '--extra-experimental-features {feature}' to enable it"
    ))
}

/// What the attribute loop collects besides the derivation itself.
#[derive(Default)]
struct Collected {
    output_hash: Option<String>,
    output_hash_algo: Option<String>,
    hash_mode: Option<(String, ContentAddressMethod)>,
    outputs: Option<BTreeSet<String>>,
}

fn handle_hash_mode(c: &mut Collected, s: &str) -> Result<()> {
    let m = parse_output_hash_mode(s).map_err(store_err)?;
    c.hash_mode = Some((s.to_string(), m));
    Ok(())
}

fn handle_outputs(c: &mut Collected, names: Vec<String>) -> Result<()> {
    let mut set = BTreeSet::new();
    for j in names {
        if set.contains(&j) {
            return Err(EvalError::eval(format!(
                "duplicate derivation output '{j}'"
            )));
        }
        if j == "drvPath" {
            return Err(EvalError::eval("invalid derivation output name 'drvPath'"));
        }
        set.insert(j);
    }
    if set.is_empty() {
        return Err(EvalError::eval(
            "derivation cannot have an empty set of outputs",
        ));
    }
    c.outputs = Some(set);
    Ok(())
}

const STRUCTURED_WARN: &[&str] = &[
    "allowedReferences",
    "allowedRequisites",
    "disallowedReferences",
    "disallowedRequisites",
    "maxSize",
    "maxClosureSize",
];

/// One attribute of the derivation's argument set (Nix's loop body).
#[allow(clippy::too_many_arguments)]
fn process_attr(
    ev: &mut Evaluator,
    drv_name: &str,
    key: &str,
    value: &Value,
    structured: &mut Option<Vec<(String, Vec<u8>)>>,
    ignore_nulls: bool,
    drv: &mut Derivation,
    env: &mut BTreeMap<String, Vec<u8>>,
    context: &mut Context,
    c: &mut Collected,
) -> Result<()> {
    let pos = Pos::NONE;
    if ignore_nulls {
        let v = ev.force(value, pos)?;
        if matches!(v, Value::Null) {
            return Ok(());
        }
    }
    if key == "__contentAddressed" && ev.force_bool(value, pos, "")? {
        return Err(experimental("ca-derivations"));
    }
    if key == "__impure" && ev.force_bool(value, pos, "")? {
        return Err(experimental("impure-derivations"));
    }
    if key == "args" {
        let l = ev.force_list(value, pos, "")?;
        for elem in l.iter() {
            let s = ev.coerce_to_string(
                elem,
                pos,
                "while evaluating an element of the argument list",
                true,
                true,
                context,
            )?;
            drv.args.push(String::from_utf8_lossy(&s).into_owned());
        }
        return Ok(());
    }
    if let Some(json) = structured {
        if key == "__structuredAttrs" {
            return Ok(());
        }
        let j = crate::print::to_json(ev, value, pos, true, context)?;
        json.push((key.to_string(), j));
        match key {
            "builder" => {
                let s = ev.force_string(value, pos, "")?;
                if let Some(cx) = &s.context {
                    context.extend(cx.iter().cloned());
                }
                drv.builder = String::from_utf8_lossy(&s.bytes).into_owned();
            }
            "system" => {
                drv.platform = ev
                    .force_string_no_ctx(value, pos, "")?
                    .as_str_lossy()
                    .into_owned()
            }
            "outputHash" => {
                c.output_hash = Some(
                    ev.force_string_no_ctx(value, pos, "")?
                        .as_str_lossy()
                        .into_owned(),
                )
            }
            "outputHashAlgo" => {
                c.output_hash_algo = Some(
                    ev.force_string_no_ctx(value, pos, "")?
                        .as_str_lossy()
                        .into_owned(),
                )
            }
            "outputHashMode" => {
                let s = ev.force_string_no_ctx(value, pos, "")?;
                handle_hash_mode(c, &s.as_str_lossy())?;
            }
            "outputs" => {
                let l = ev.force_list(value, pos, "")?;
                let mut names = Vec::with_capacity(l.len());
                for x in l.iter() {
                    names.push(
                        ev.force_string_no_ctx(x, pos, "")?
                            .as_str_lossy()
                            .into_owned(),
                    );
                }
                handle_outputs(c, names)?;
            }
            _ => {}
        }
        if STRUCTURED_WARN.contains(&key) {
            ev.stderr.push(format!(
                "warning: In a derivation named '{drv_name}', 'structuredAttrs' disables the effect of the derivation attribute '{key}'; use 'outputChecks.<output>.{key}' instead"
            ));
        }
        return Ok(());
    }
    let s = ev.coerce_to_string(value, pos, "", true, true, context)?;
    let text = String::from_utf8_lossy(&s).into_owned();
    match key {
        "builder" => drv.builder = text,
        "system" => drv.platform = text,
        "outputHash" => c.output_hash = Some(text),
        "outputHashAlgo" => c.output_hash_algo = Some(text),
        "outputHashMode" => handle_hash_mode(c, &text)?,
        "outputs" => handle_outputs(
            c,
            text.split([' ', '\t', '\n', '\r'])
                .filter(|x| !x.is_empty())
                .map(str::to_string)
                .collect(),
        )?,
        _ => {}
    }
    env.insert(key.to_string(), s);
    Ok(())
}

/// The closure of `path` under the references recorded in the store.
fn fs_closure(store: &LocalStore, path: &StorePath) -> Result<BTreeSet<StorePath>> {
    let mut out = BTreeSet::new();
    let mut todo = vec![path.clone()];
    while let Some(p) = todo.pop() {
        if !out.insert(p.clone()) {
            continue;
        }
        let info = store
            .query_path_info(&p)
            .map_err(store_err)?
            .ok_or_else(|| {
                EvalError::eval(format!(
                    "path '{}' is not valid",
                    store.store_dir().print(&p)
                ))
            })?;
        for r in info.references {
            if !out.contains(&r) {
                todo.push(r);
            }
        }
    }
    Ok(out)
}

fn parse_path(dir: &StoreDir, s: &str) -> Result<StorePath> {
    dir.parse(s).map_err(store_err)
}

fn derivation_strict_internal(ev: &mut Evaluator, drv_name: &str, attrs: &Attrs) -> Result<Value> {
    if let Err(e) = check_name(drv_name) {
        return Err(EvalError::eval(format!(
            "invalid derivation name: {e}. Please pass a different 'name'."
        )));
    }
    let pos = Pos::NONE;
    let mut structured = None;
    if let Some(a) = attrs.get(Symbol::intern("__structuredAttrs")) {
        let v = a.value.clone();
        if ev.force_bool(
            &v,
            pos,
            "while evaluating the `__structuredAttrs` attribute passed to builtins.derivationStrict",
        )? {
            structured = Some(Vec::new());
        }
    }
    let mut ignore_nulls = false;
    if let Some(a) = attrs.get(Symbol::intern("__ignoreNulls")) {
        let v = a.value.clone();
        ignore_nulls = ev.force_bool(
            &v,
            pos,
            "while evaluating the `__ignoreNulls` attribute passed to builtins.derivationStrict",
        )?;
    }

    let mut drv = Derivation {
        name: drv_name.to_string(),
        ..Default::default()
    };
    let mut env: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let mut context = Context::new();
    let mut c = Collected::default();

    let sorted: Vec<Attr> = attrs.sorted_by_name().into_iter().cloned().collect();
    for a in &sorted {
        let key = String::from_utf8_lossy(&a.name.bytes()).into_owned();
        if key == "__ignoreNulls" {
            continue;
        }
        process_attr(
            ev,
            drv_name,
            &key,
            &a.value,
            &mut structured,
            ignore_nulls,
            &mut drv,
            &mut env,
            &mut context,
            &mut c,
        )
        .map_err(|e| {
            e.with_trace(
                a.pos,
                format!("while evaluating attribute '{key}' of derivation '{drv_name}'"),
            )
        })?;
    }
    if let Some(json) = structured {
        let mut s = Vec::new();
        s.push(b'{');
        for (i, (k, v)) in json.iter().enumerate() {
            if i > 0 {
                s.push(b',');
            }
            let mut no_ctx = Context::new();
            let key = crate::print::to_json(ev, &Value::str(k), pos, false, &mut no_ctx)?;
            s.extend_from_slice(&key);
            s.push(b':');
            s.extend_from_slice(v);
        }
        s.push(b'}');
        env.insert("__json".to_string(), s);
    }
    for (k, v) in env {
        drv.env.insert(k, String::from_utf8_lossy(&v).into_owned());
    }

    let store = open_store(&ev.config.store_dir)?;
    let dir = store.store_dir().clone();
    for elem in &context {
        if let Some(p) = elem.strip_prefix('=') {
            let p = parse_path(&dir, p)?;
            for j in fs_closure(&store, &p)? {
                if j.is_derivation() {
                    let d = store.read_derivation(&j).map_err(store_err)?;
                    drv.input_drvs
                        .insert(j.clone(), d.outputs.keys().cloned().collect());
                }
                drv.input_srcs.insert(j);
            }
        } else if let Some(rest) = elem.strip_prefix('!') {
            let (out, p) = rest.split_once('!').ok_or_else(|| {
                EvalError::eval(format!("invalid string context element '{elem}'"))
            })?;
            let p = parse_path(&dir, p)?;
            drv.input_drvs.entry(p).or_default().insert(out.to_string());
        } else {
            drv.input_srcs.insert(parse_path(&dir, elem)?);
        }
    }

    if drv.builder.is_empty() {
        return Err(EvalError::eval("required attribute 'builder' missing"));
    }
    if drv.platform.is_empty() {
        return Err(EvalError::eval("required attribute 'system' missing"));
    }
    let outputs = c
        .outputs
        .clone()
        .unwrap_or_else(|| BTreeSet::from(["out".to_string()]));
    if drv_name.ends_with(".drv") {
        return Err(EvalError::eval(
            "derivation names are allowed to end in '.drv' only if they produce a single derivation file",
        ));
    }
    if let Some(h) = &c.output_hash {
        let names: Vec<&str> = outputs.iter().map(String::as_str).collect();
        let (out, warn_empty) = fixed_output(
            h,
            c.output_hash_algo.as_deref(),
            c.hash_mode.as_ref().map(|m| m.0.as_str()),
            &names,
        )
        .map_err(|e| match e {
            // Nix reports unknown algorithms and formats as usage errors.
            flaked_store::derivation::DerivationError::Hash(
                h @ (flaked_store::hash::HashError::UnknownAlgo(_)
                | flaked_store::hash::HashError::UnknownFormat(_)),
            ) => EvalError::new(crate::error::ErrorKind::Usage, h.to_string()),
            other => store_err(other),
        })?;
        if warn_empty && let DerivationOutput::Fixed(ca) = &out {
            ev.stderr.push(format!(
                "warning: found empty hash, assuming '{}'",
                ca.hash.render(HashFormat::Sri, true)
            ));
        }
        drv.outputs.insert("out".to_string(), out);
    } else {
        for o in &outputs {
            drv.outputs.insert(o.clone(), DerivationOutput::Deferred);
        }
    }

    let (drv_path, drv) = store.instantiate(drv).map_err(store_err)?;

    let drv_path_s = dir.print(&drv_path);
    let mut result = Vec::with_capacity(1 + drv.outputs.len());
    result.push(Attr {
        name: ev.syms.drv_path,
        value: Value::string_ctx(
            drv_path_s.clone().into_bytes(),
            Context::from([format!("={drv_path_s}")]),
        ),
        pos: Pos::NONE,
    });
    for name in drv.outputs.keys() {
        let p = drv
            .output_path(&dir, name)
            .map_err(store_err)?
            .ok_or_else(|| {
                EvalError::eval(format!(
                    "derivation '{drv_path_s}' has no known path for output '{name}'"
                ))
            })?;
        result.push(Attr {
            name: Symbol::intern(name),
            value: Value::string_ctx(
                dir.print(&p).into_bytes(),
                Context::from([format!("!{name}!{drv_path_s}")]),
            ),
            pos: Pos::NONE,
        });
    }
    Ok(Value::attrs(Attrs::from_unsorted(result)))
}

//! `callFlake`: turn a locked flake into its value — every lock node becomes either its
//! `sourceInfo` (non-flake inputs) or the flake's outputs merged with its source metadata,
//! `inputs`, `outputs`, `sourceInfo`, `outPath` and `_type = "flake"`, with `self` tied back.
//!
//! Invariant: all source trees are already in the store (the locker put them there), so
//! calling needs no fetching and works in pure mode; inputs are resolved lazily, so an unused
//! input's `flake.nix` is never evaluated.

use std::path::PathBuf;
use std::rc::Rc;

use flaked_store::fetchers::lockfile::Edge;
use flaked_store::fetchers::{Input, LockFile, NodeId};

use super::{FlakeError, LockedFlake};
use crate::eval::Evaluator;
use crate::source::{Origin, Pos};
use crate::symbol::Symbol;
use crate::value::{Attr, Attrs, Context, Value};

/// The helper that ties the nodes together: `nodes.<key> = { isFlake, outPath, sourceInfo,
/// inputs = { <name> = <key>; }; }`; the result is the root node's value.
const TIE: &str = r#"nodes: root:
let
  values = builtins.mapAttrs (key: node:
    if !node.isFlake then node.sourceInfo
    else
      let
        decl = node.decl;
        ins = builtins.mapAttrs (name: target: values.${target}) node.inputs;
        outs = decl.outputs (ins // { self = me; });
        me = outs // node.sourceInfo // {
          outPath = node.outPath;
          inputs = ins;
          outputs = outs;
          sourceInfo = node.sourceInfo;
          _type = "flake";
        };
      in assert builtins.isFunction decl.outputs; me) nodes;
in values.${root}
"#;

fn attr(name: &str, value: Value) -> Attr {
    Attr {
        name: Symbol::intern(name),
        value,
        pos: Pos::NONE,
    }
}

fn store_string(s: &str, store_path: &str) -> Value {
    let mut ctx = Context::new();
    ctx.insert(store_path.to_string());
    Value::string_ctx(s.as_bytes(), ctx)
}

/// `YYYYMMDDHHMMSS` (UTC) of a Unix time, as `lastModifiedDate`.
pub(crate) fn format_date_time(t: u64) -> String {
    let days = (t / 86400) as i64;
    let secs = t % 86400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}{m:02}{d:02}{:02}{:02}{:02}",
        secs / 3600,
        (secs / 60) % 60,
        secs % 60
    )
}

/// Nix's `emitTreeAttrs`: the attributes describing a fetched tree. `force_dirty` (the root of a
/// flake whose changed lock file was not written) hides the revision.
fn source_info(input: &Input, out_path: &str, store_path: &str, force_dirty: bool) -> Vec<Attr> {
    let mut v = vec![attr("outPath", store_string(out_path, store_path))];
    if let Some(h) = input.nar_hash() {
        v.push(attr("narHash", Value::str(h)));
    }
    let attrs = input.to_attrs();
    if let flaked_store::fetchers::InputKind::Git(g) = &input.kind {
        v.push(attr(
            "submodules",
            Value::Bool(g.submodules.unwrap_or(false)),
        ));
    }
    if !force_dirty {
        if let Some(rev) = input.rev() {
            v.push(attr("rev", Value::str(rev)));
            v.push(attr("shortRev", Value::str(&rev[..rev.len().min(7)])));
        }
        if let Some(c) = input.rev_count() {
            v.push(attr("revCount", Value::Int(c as i64)));
        }
    }
    if let Some(flaked_store::fetchers::Attr::String(d)) = attrs.get("dirtyRev") {
        v.push(attr("dirtyRev", Value::str(d)));
        if let Some(flaked_store::fetchers::Attr::String(s)) = attrs.get("dirtyShortRev") {
            v.push(attr("dirtyShortRev", Value::str(s)));
        }
    }
    if let Some(t) = input.last_modified() {
        v.push(attr("lastModified", Value::Int(t as i64)));
        v.push(attr("lastModifiedDate", Value::str(&format_date_time(t))));
    }
    v
}

fn key(n: NodeId) -> String {
    format!("n{n}")
}

/// Nix's `callFlake`: the value of the locked flake (lazy in its inputs).
pub fn call_flake(ev: &mut Evaluator, locked: &LockedFlake) -> Result<Value, FlakeError> {
    let lock = &locked.lock_file;
    let mut nodes = Vec::new();
    for (id, node) in lock.nodes.iter().enumerate() {
        let Some((sp, dir)) = locked.node_sources.get(&id) else {
            continue;
        };
        let Some(input) = locked.node_inputs.get(&id) else {
            continue;
        };
        let is_flake = node.locked.as_ref().is_none_or(|l| l.is_flake);
        // Relative path inputs share their parent's metadata; their outPath is the subtree.
        let relative = node
            .locked
            .as_ref()
            .is_some_and(|l| l.locked.input.is_relative().is_some());
        let (meta_id, meta_input) = match node.locked.as_ref().and_then(|l| l.parent.as_ref()) {
            Some(parent) if relative => {
                let pid = if parent.is_empty() {
                    Some(LockFile::ROOT)
                } else {
                    lock.find_input(parent)?
                };
                match pid.and_then(|p| locked.node_inputs.get(&p).map(|i| (p, i))) {
                    Some((p, i)) => (p, i),
                    None => (id, input),
                }
            }
            _ => (id, input),
        };
        let force_dirty = meta_id == LockFile::ROOT && locked.force_dirty;
        // The tree's outPath is the store path itself, except for relative inputs, whose
        // "tree" is the subdirectory of their parent's.
        let si_out = if relative { dir.as_str() } else { sp.as_str() };
        let si = Value::attrs(Attrs::from_unsorted(source_info(
            meta_input,
            si_out,
            sp,
            force_dirty,
        )));
        let mut ins = Vec::new();
        for (name, e) in &node.inputs {
            let target = match e {
                Edge::Node(n) => Some(*n),
                Edge::Follows(p) => lock.find_input(p)?,
            };
            if let Some(t) = target {
                ins.push(attr(name, Value::str(&key(t))));
            }
        }
        let flake_file = PathBuf::from(dir).join("flake.nix");
        let decl = Value::native_thunk(Rc::new(move |ev: &mut Evaluator| {
            super::eval_flake_file(ev, &flake_file)
        }));
        nodes.push(attr(
            &key(id),
            Value::attrs(Attrs::from_unsorted(vec![
                attr("decl", decl),
                attr("isFlake", Value::Bool(is_flake)),
                attr("outPath", store_string(dir, sp)),
                attr("sourceInfo", si),
                attr("inputs", Value::attrs(Attrs::from_unsorted(ins))),
            ])),
        ));
    }
    let e = ev.parse(Origin::String, TIE.as_bytes(), "/")?;
    let f = ev.eval_root(&e)?;
    let v = ev.call(
        &f,
        &[
            Value::attrs(Attrs::from_unsorted(nodes)),
            Value::str(&key(LockFile::ROOT)),
        ],
        Pos::NONE,
    )?;
    Ok(v)
}

//! `lockFlake`: read the top-level flake, reuse what the old `flake.lock` still matches, fetch
//! and read new inputs (and their own lock files), resolve `follows` and overrides, and write
//! the new lock file when it changed.
//!
//! Invariant: the new lock graph contains exactly the inputs reachable from the flake's
//! declarations (unused old entries disappear); an old entry is kept only when its `original`
//! equals the declared reference, it is not overridden and not selected for update.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use flaked_store::fetchers::attrs::{Attr, Attrs};
use flaked_store::fetchers::lockfile::{Edge, parse_input_path, print_input_path};
use flaked_store::fetchers::{
    FetchSettings, Fetched, FlakeRef, Input, InputKind, InputPath, LockFile, LockedNode, NodeId,
    ParseOptions, Registries, SourceTree, fetch_flake_ref, tree_store_path,
};
use flaked_store::hash::HashAlgo;
use flaked_store::store_path::FileIngestionMethod;

use super::{FlakeError, show_pos};
use crate::error::EvalError;
use crate::eval::Evaluator;
use crate::source::Pos;
use crate::store_path;
use crate::symbol::Symbol;
use crate::value::Value;

/// What `nix flake lock` / `nix eval` take from the command line and configuration.
#[derive(Debug, Clone)]
pub struct FlakeSettings {
    pub fetch: FetchSettings,
    /// Directory relative flake references are resolved against.
    pub cwd: PathBuf,
    /// `--no-write-lock-file` = false.
    pub write_lock_file: bool,
    /// `--recreate-lock-file`.
    pub recreate_lock_file: bool,
    /// `--update-input` / `nix flake update X`.
    pub update_inputs: Vec<InputPath>,
    /// `--override-input PATH REF`.
    pub override_inputs: Vec<(InputPath, FlakeRef)>,
    /// Registries for indirect references (`None`: indirect references are an error, as
    /// with `use-registries = false`).
    pub registries: Option<Registries>,
    /// Whether inputs that are not locked may be fetched (false for pure `getFlake`).
    pub allow_unlocked: bool,
}

impl FlakeSettings {
    /// Nix's defaults with the given fetcher cache directory and working directory.
    pub fn new(cache_dir: impl Into<PathBuf>, cwd: impl Into<PathBuf>) -> FlakeSettings {
        FlakeSettings {
            fetch: FetchSettings::new(cache_dir),
            cwd: cwd.into(),
            write_lock_file: true,
            recreate_lock_file: false,
            update_inputs: Vec::new(),
            override_inputs: Vec::new(),
            registries: None,
            allow_unlocked: true,
        }
    }
}

/// A declared input (`inputs.<name>` or an `outputs` formal).
#[derive(Debug, Clone, Default)]
pub struct FlakeInput {
    pub reference: Option<FlakeRef>,
    pub is_flake: bool,
    /// Absolute input path this input follows.
    pub follows: Option<InputPath>,
    /// `inputs.<name>.inputs.*`: overrides of the input's own inputs.
    pub overrides: BTreeMap<String, FlakeInput>,
}

/// A flake read from the store.
#[derive(Debug, Clone)]
pub struct Flake {
    pub original: FlakeRef,
    pub resolved: FlakeRef,
    pub locked: FlakeRef,
    pub description: Option<String>,
    pub inputs: BTreeMap<String, FlakeInput>,
    /// The store path of the source tree (the `outPath` of `sourceInfo`).
    pub source_store_path: String,
    /// The directory holding `flake.nix` (inside the store).
    pub flake_dir: PathBuf,
}

/// The result of locking.
#[derive(Debug, Clone)]
pub struct LockedFlake {
    pub flake: Flake,
    pub lock_file: LockFile,
    /// Store paths of the source trees of the lock file's nodes (by node id; the root too).
    pub node_sources: BTreeMap<NodeId, (String, String)>,
    /// Input attributes of each node's locked input (for `sourceInfo`).
    pub node_inputs: BTreeMap<NodeId, Input>,
    /// Whether `flake.lock` was (re)written.
    pub wrote_lock_file: bool,
    /// Nix's "• Added input …" report without colours (empty when unchanged).
    pub diff: String,
    /// Warnings as `nix` prints them on stderr (`warning: creating lock file …`), in order;
    /// one entry per warning (it may span several lines).
    pub warnings: Vec<String>,
    /// The lock file changed but was not written (`--no-write-lock-file`): the flake's
    /// `sourceInfo` is then marked dirty, as in Nix.
    pub force_dirty: bool,
}

/// Parses `inputs` of a flake.nix.
fn parse_inputs(
    ev: &mut Evaluator,
    v: &Value,
    pos: Pos,
    lock_root_path: &[String],
) -> Result<BTreeMap<String, FlakeInput>, FlakeError> {
    let v = expect_type(ev, v, pos, "a set", |v| matches!(v, Value::Attrs(_)))?;
    let Value::Attrs(attrs) = &v else {
        return Err(FlakeError::Other("expected a set".into()));
    };
    let mut out = BTreeMap::new();
    for a in attrs.sorted_by_name() {
        let name = a.name.as_string();
        let input = parse_input(ev, &name, &a.value, a.pos, lock_root_path)?;
        out.insert(name, input);
    }
    Ok(out)
}

/// Nix's `expectType`: "expected a set but got an integer at FILE:LINE:COL" (no trace, no
/// position of its own).
fn expect_type(
    ev: &mut Evaluator,
    v: &Value,
    pos: Pos,
    want: &str,
    ok: impl Fn(&Value) -> bool,
) -> Result<Value, FlakeError> {
    let v = ev.force(v, pos)?;
    if ok(&v) {
        return Ok(v);
    }
    Err(FlakeError::Other(format!(
        "expected {want} but got {} at {}",
        v.type_desc(),
        show_pos(pos)
    )))
}

fn parse_input(
    ev: &mut Evaluator,
    name: &str,
    v: &Value,
    pos: Pos,
    lock_root_path: &[String],
) -> Result<FlakeInput, FlakeError> {
    let v = expect_type(ev, v, pos, "a set", |v| matches!(v, Value::Attrs(_)))?;
    let Value::Attrs(attrs) = &v else {
        return Err(FlakeError::Other("expected a set".into()));
    };
    let mut input = FlakeInput {
        is_flake: true,
        ..FlakeInput::default()
    };
    let mut fattrs = Attrs::new();
    let mut url = None;
    for a in attrs.sorted_by_name() {
        let aname = a.name.as_string();
        let r: Result<(), FlakeError> = (|| {
            match aname.as_str() {
                "url" => {
                    let x = ev.force(&a.value, pos)?;
                    let s = match &x {
                        Value::String(s) => String::from_utf8_lossy(&s.bytes).into_owned(),
                        other => {
                            return Err(FlakeError::Other(format!(
                                "expected a string or a path but got {} at {}",
                                other.type_desc(),
                                show_pos(a.pos)
                            )));
                        }
                    };
                    fattrs.insert("url".into(), Attr::String(s.clone()));
                    url = Some(s);
                }
                "flake" => {
                    let b = expect_type(ev, &a.value, a.pos, "a Boolean", |v| {
                        matches!(v, Value::Bool(_))
                    })?;
                    input.is_flake = matches!(b, Value::Bool(true));
                }
                "inputs" => {
                    input.overrides = parse_inputs(ev, &a.value, a.pos, lock_root_path)?;
                }
                "follows" => {
                    expect_type(ev, &a.value, a.pos, "a string", |v| {
                        matches!(v, Value::String(_))
                    })?;
                    let s = ev.force_string_no_ctx(&a.value, a.pos, "")?;
                    let mut p = lock_root_path.to_vec();
                    p.extend(parse_input_path(&String::from_utf8_lossy(&s.bytes))?);
                    input.follows = Some(p);
                }
                _ => {
                    let x = ev.force(&a.value, a.pos)?;
                    let attr = match &x {
                        Value::String(s) => Attr::String(String::from_utf8_lossy(&s.bytes).into()),
                        Value::Bool(b) => Attr::Bool(*b),
                        Value::Int(i) if *i >= 0 => Attr::Int(*i as u64),
                        Value::Int(i) => {
                            return Err(FlakeError::Eval(EvalError::eval(format!(
                                "negative value given for flake input attribute {aname}: {i}"
                            ))));
                        }
                        other => {
                            return Err(FlakeError::Eval(EvalError::type_error(format!(
                                "flake input attribute '{aname}' is {} while a string, Boolean, or integer is expected",
                                other.type_desc()
                            ))));
                        }
                    };
                    fattrs.insert(aname.clone(), attr);
                }
            }
            Ok(())
        })();
        r.map_err(|e| {
            FlakeError::Eval(
                e.into_eval()
                    .with_trace(a.pos, format!("while evaluating flake attribute '{aname}'")),
            )
        })?;
    }
    if fattrs.contains_key("type") {
        input.reference = Some(FlakeRef::from_attrs(&fattrs)?);
    } else {
        fattrs.remove("url");
        if let Some((k, _)) = fattrs.iter().next() {
            return Err(FlakeError::Other(format!(
                "unexpected flake input attribute '{k}', at {}",
                show_pos(pos)
            )));
        }
        if let Some(u) = url {
            let opts = ParseOptions {
                base_dir: None,
                allow_missing: true,
                not_flake: !input.is_flake,
                preserve_relative_paths: true,
            };
            input.reference = Some(FlakeRef::parse(&u, &opts)?);
        }
    }
    if input.follows.is_none() && input.reference.is_none() {
        input.reference = Some(indirect(name)?);
    }
    Ok(input)
}

fn indirect(name: &str) -> Result<FlakeRef, FlakeError> {
    let mut a = Attrs::new();
    a.insert("type".into(), Attr::String("indirect".into()));
    a.insert("id".into(), Attr::String(name.into()));
    Ok(FlakeRef::from_attrs(&a)?)
}

/// Copies a fetched tree into the store and returns its store path. The fetcher already knows
/// the tree's NAR hash, hence its store path: a tree already in the store (every input of a
/// flake locked again) is neither read nor copied again.
fn add_to_store(ev: &Evaluator, fetched: &Fetched) -> Result<String, FlakeError> {
    let store = store_path::open_store(&ev.config.store_dir)?;
    let expected = fetched.store_path(store.store_dir())?;
    if store
        .is_valid_path(&expected)
        .map_err(|e| FlakeError::Other(e.to_string()))?
    {
        return Ok(store.store_dir().print(&expected));
    }
    let name = fetched.input.name();
    let added = match fetched.tree.as_path() {
        Some(tree) => store.add_path(
            tree,
            &name,
            FileIngestionMethod::Recursive,
            HashAlgo::Sha256,
            None,
        ),
        None => store.add_dump(&name, &mut |sink| {
            fetched
                .tree
                .dump(sink)
                .map_err(|e| flaked_store::local::StoreError::Source(Box::new(e)))
        }),
    }
    .map_err(|e| FlakeError::Other(e.to_string()))?;
    if added.path != expected {
        return Err(FlakeError::Other(format!(
            "the tree of '{}' changed while it was copied to the store: expected '{}', got '{}'",
            fetched.input.display(),
            store.store_dir().print(&expected),
            store.store_dir().print(&added.path)
        )));
    }
    Ok(store.store_dir().print(&added.path))
}

/// Reads `flake.nix` in `flake_dir` (already in the store): Nix's `readFlake`.
pub fn read_flake(
    ev: &mut Evaluator,
    original: FlakeRef,
    resolved: FlakeRef,
    locked: FlakeRef,
    source_store_path: String,
    flake_dir: PathBuf,
    lock_root_path: &[String],
) -> Result<Flake, FlakeError> {
    let file = flake_dir.join("flake.nix");
    if !super::logical_exists(ev, &file) {
        return Err(FlakeError::Other(format!(
            "path '{}' does not exist",
            file.display()
        )));
    }
    let v = super::eval_flake_file(ev, &file)?;
    let attrs = ev.force_attrs(&v, Pos::NONE, "")?;
    let mut flake = Flake {
        original,
        resolved: resolved.clone(),
        locked,
        description: None,
        inputs: BTreeMap::new(),
        source_store_path,
        flake_dir,
    };
    if let Some(d) = attrs.get(Symbol::intern("description")) {
        expect_type(ev, &d.value, d.pos, "a string", |v| {
            matches!(v, Value::String(_))
        })?;
        let s = ev.force_string_no_ctx(&d.value, d.pos, "")?;
        flake.description = Some(String::from_utf8_lossy(&s.bytes).into_owned());
    }
    if let Some(i) = attrs.get(Symbol::intern("inputs")) {
        let (val, pos) = (i.value.clone(), i.pos);
        flake.inputs = parse_inputs(ev, &val, pos, lock_root_path)?;
    }
    match attrs.get(Symbol::intern("outputs")) {
        Some(o) => {
            let f = ev.force(&o.value, o.pos)?;
            match &f {
                Value::Lambda(c) => {
                    if let Some(formals) = &c.def.formals {
                        for fm in &formals.entries {
                            let n = fm.name.as_string();
                            if n != "self" && !flake.inputs.contains_key(&n) {
                                let r = FlakeRef::parse(&n, &ParseOptions::default())?;
                                flake.inputs.insert(
                                    n,
                                    FlakeInput {
                                        reference: Some(r),
                                        is_flake: true,
                                        ..FlakeInput::default()
                                    },
                                );
                            }
                        }
                    }
                }
                Value::PrimOp(_) | Value::PrimOpApp(..) => {}
                other => {
                    return Err(FlakeError::Other(format!(
                        "expected a function but got {} at {}",
                        other.type_desc(),
                        show_pos(o.pos)
                    )));
                }
            }
        }
        None => {
            return Err(FlakeError::Other(format!(
                "flake '{}' lacks attribute 'outputs'",
                resolved.display()
            )));
        }
    }
    if let Some(c) = attrs.get(Symbol::intern("nixConfig")) {
        expect_type(ev, &c.value, c.pos, "a set", |v| {
            matches!(v, Value::Attrs(_))
        })?;
    }
    for a in attrs.sorted_by_name() {
        let n = a.name.as_string();
        if !matches!(
            n.as_str(),
            "description" | "inputs" | "outputs" | "nixConfig"
        ) {
            return Err(FlakeError::Other(format!(
                "flake '{}' has an unsupported attribute '{n}', at {}",
                resolved.display(),
                show_pos(a.pos)
            )));
        }
    }
    Ok(flake)
}

/// Fetches (through the registries when given) and reads a flake that is not a relative path.
fn get_flake(
    ev: &mut Evaluator,
    r: &FlakeRef,
    settings: &FlakeSettings,
    lock_root_path: &[String],
    warnings: &mut Vec<String>,
) -> Result<(Flake, Input), FlakeError> {
    let fetched = fetch_ref(ev, r, settings)?;
    warnings.extend(
        fetched
            .fetched
            .warnings
            .iter()
            .map(|w| format!("warning: {w}")),
    );
    if settings.fetch.warn_dirty
        && let InputKind::Git(g) = &fetched.fetched.input.kind
        && g.dirty_rev.is_some()
    {
        let shown = g.url.strip_prefix("file://").unwrap_or(&g.url);
        warnings.push(format!("warning: Git tree '{shown}' is dirty"));
    }
    let sp = add_to_store(ev, &fetched.fetched)?;
    let dir = if fetched.locked.subdir.is_empty() {
        PathBuf::from(&sp)
    } else {
        PathBuf::from(&sp).join(&fetched.locked.subdir)
    };
    let flake = read_flake(
        ev,
        r.clone(),
        fetched.resolved.clone(),
        fetched.locked.clone(),
        sp,
        dir,
        lock_root_path,
    )?;
    Ok((flake, fetched.fetched.input))
}

/// Resolves `r` through the registries (when configured) and fetches it. Fetch failures carry
/// Nix's "while fetching the input" frame; resolution failures do not.
///
/// A locked input (final, with a `narHash`) whose store path is already valid is not fetched
/// at all, as in Nix's `Input::fetchToStore`: its tree is the store path.
fn fetch_ref(
    ev: &Evaluator,
    r: &FlakeRef,
    settings: &FlakeSettings,
) -> Result<flaked_store::fetchers::FetchedFlake, FlakeError> {
    let resolved = match &settings.registries {
        Some(regs) if !r.input.is_direct() => regs.resolve(r, &|_| true)?,
        _ => r.clone(),
    };
    if resolved.input.is_final
        && let Ok(Some(nar_hash)) = resolved.input.nar_hash_parsed()
    {
        let store = store_path::open_store(&ev.config.store_dir)?;
        let path = tree_store_path(store.store_dir(), &nar_hash, &resolved.input)?;
        if store
            .is_valid_path(&path)
            .map_err(|e| FlakeError::Other(e.to_string()))?
        {
            return Ok(flaked_store::fetchers::FetchedFlake {
                fetched: Fetched {
                    input: resolved.input.clone(),
                    tree: SourceTree::Path(store.real_path(&path)),
                    nar_hash,
                    warnings: Vec::new(),
                },
                locked: resolved.clone(),
                resolved,
            });
        }
    }
    fetch_flake_ref(&resolved, None, &settings.fetch).map_err(|e| {
        FlakeError::Eval(EvalError::eval(e.to_string()).with_trace(
            Pos::NONE,
            format!("while fetching the input '{}'", resolved.input.display()),
        ))
    })
}

/// Where an override was declared: the override, the source (store path, flake directory) its
/// relative paths are resolved against, and the input path prefix it was declared under
/// (`None` for `--override-input`).
#[derive(Clone)]
struct OverrideTarget {
    input: FlakeInput,
    source: (String, String),
    parent_input_path: Option<InputPath>,
}

/// A node of an old lock graph that locks may be copied from.
#[derive(Clone, Copy)]
struct OldNode<'a> {
    lock: &'a LockFile,
    node: NodeId,
}

struct Locker<'a> {
    ev: &'a mut Evaluator,
    settings: &'a FlakeSettings,
    new: LockFile,
    overrides: BTreeMap<InputPath, OverrideTarget>,
    cli_overrides: Vec<InputPath>,
    overrides_used: Vec<InputPath>,
    updates_used: Vec<InputPath>,
    parents: Vec<FlakeRef>,
    sources: BTreeMap<NodeId, (String, String)>,
    inputs: BTreeMap<NodeId, Input>,
    warnings: Vec<String>,
}

impl Locker<'_> {
    /// Nix's `computeLocks` for the inputs of `node` (at `prefix` in the new graph).
    #[allow(clippy::too_many_arguments)]
    fn compute(
        &mut self,
        flake_inputs: &BTreeMap<String, FlakeInput>,
        node: NodeId,
        prefix: &[String],
        old: Option<OldNode<'_>>,
        follows_prefix: &[String],
        source: (&str, &str),
        trust_lock: bool,
    ) -> Result<(), EvalError> {
        for (id, input) in flake_inputs {
            for (oid, o) in &input.overrides {
                let mut p = prefix.to_vec();
                p.push(id.clone());
                p.push(oid.clone());
                self.overrides.entry(p).or_insert_with(|| OverrideTarget {
                    input: o.clone(),
                    source: (source.0.to_string(), source.1.to_string()),
                    parent_input_path: Some(prefix.to_vec()),
                });
            }
        }
        for p in self.overrides.keys() {
            if let Some((last, init)) = p.split_last()
                && init == prefix
                && !flake_inputs.contains_key(last)
            {
                self.warnings.push(format!(
                    "warning: input '{}' has an override for a non-existent input '{last}'",
                    print_input_path(prefix)
                ));
            }
        }
        for (id, input2) in flake_inputs {
            let mut path = prefix.to_vec();
            path.push(id.clone());
            self.compute_input(
                id,
                input2,
                node,
                &path,
                old,
                follows_prefix,
                source,
                trust_lock,
            )
            .map_err(|e| {
                e.into_eval().with_trace(
                    Pos::NONE,
                    format!(
                        "while updating the flake input '{}'",
                        print_input_path(&path)
                    ),
                )
            })?;
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn compute_input(
        &mut self,
        id: &str,
        input2: &FlakeInput,
        node: NodeId,
        path: &[String],
        old: Option<OldNode<'_>>,
        follows_prefix: &[String],
        source: (&str, &str),
        trust_lock: bool,
    ) -> Result<(), FlakeError> {
        let prefix = &path[..path.len() - 1];
        let ovr = self.overrides.get(path).cloned();
        let has_cli_override = self.cli_overrides.iter().any(|p| p == path);
        if ovr.is_some() {
            self.overrides_used.push(path.to_vec());
        }
        let mut input = match &ovr {
            Some(o) => o.input.clone(),
            None => input2.clone(),
        };
        let overridden_source = match &ovr {
            Some(o) => (o.source.0.clone(), o.source.1.clone()),
            None => (source.0.to_string(), source.1.to_string()),
        };
        if ovr.is_some() {
            input.is_flake = input2.is_flake;
        }
        if let Some(f) = &input.follows {
            self.new
                .set_input(node, id.to_string(), Edge::Follows(f.clone()));
            return Ok(());
        }
        let Some(reference) = input.reference.clone() else {
            return Err(FlakeError::Other(format!(
                "input '{}' has neither a reference nor 'follows'",
                print_input_path(path)
            )));
        };
        let overridden_parent_path: Option<InputPath> = if reference.input.is_relative().is_some() {
            match &ovr {
                Some(o) => o.parent_input_path.clone(),
                None => Some(prefix.to_vec()),
            }
        } else {
            None
        };
        let relative_dir = |r: &FlakeRef| -> Option<String> {
            r.input.is_relative().map(|rel| {
                let mut d = crate::lower::canon_path(&format!(
                    "{}/{}",
                    overridden_source.1,
                    rel.trim_start_matches("./")
                ));
                if !r.subdir.is_empty() {
                    d = format!("{d}/{}", r.subdir);
                }
                d
            })
        };
        self.updates_used.push(path.to_vec());
        let update = self.settings.update_inputs.iter().any(|u| u == path);
        let old_lock: Option<NodeId> = match old {
            Some(o) if !update => match o.lock.nodes[o.node].inputs.get(id) {
                Some(Edge::Node(n)) => Some(*n),
                _ => None,
            },
            _ => None,
        };
        let old_locked = old_lock.and_then(|n| {
            old.and_then(|o| o.lock.nodes[n].locked.clone())
                .map(|l| (n, l))
        });
        if let Some((old_id, ol)) = old_locked.clone().filter(|(_, ol)| {
            ol.original == reference && ol.parent == overridden_parent_path && !has_cli_override
        }) {
            let old_lock_file = old.map(|o| o.lock).expect("old_locked implies old");
            let child = self.new.add_node(LockedNode {
                locked: ol.locked.clone(),
                original: ol.original.clone(),
                is_flake: ol.is_flake,
                parent: ol.parent.clone(),
            });
            self.new.set_input(node, id.to_string(), Edge::Node(child));
            let mut must_refetch = self
                .settings
                .update_inputs
                .iter()
                .any(|u| u.len() > path.len() && u.starts_with(path));
            let mut fake: BTreeMap<String, FlakeInput> = BTreeMap::new();
            if !must_refetch {
                for (name, e) in &old_lock_file.nodes[old_id].inputs {
                    match e {
                        Edge::Node(n) => {
                            if let Some(l) = &old_lock_file.nodes[*n].locked {
                                fake.insert(
                                    name.clone(),
                                    FlakeInput {
                                        reference: Some(l.original.clone()),
                                        is_flake: l.is_flake,
                                        ..FlakeInput::default()
                                    },
                                );
                            }
                        }
                        Edge::Follows(f) => {
                            if !trust_lock {
                                let mut op = path.to_vec();
                                op.push(name.clone());
                                if !self.overrides.contains_key(&op) {
                                    must_refetch = true;
                                    break;
                                }
                            }
                            let mut abs = follows_prefix.to_vec();
                            abs.extend(f.iter().cloned());
                            fake.insert(
                                name.clone(),
                                FlakeInput {
                                    follows: Some(abs),
                                    is_flake: true,
                                    ..FlakeInput::default()
                                },
                            );
                        }
                    }
                }
            }
            let (src_sp, src_dir) = self.source_of(&ol, &overridden_source)?;
            self.sources
                .insert(child, (src_sp.clone(), src_dir.clone()));
            self.inputs.insert(child, ol.locked.input.clone());
            let old_ref = Some(OldNode {
                lock: old_lock_file,
                node: old_id,
            });
            if must_refetch {
                let flake = read_flake(
                    self.ev,
                    ol.locked.clone(),
                    ol.locked.clone(),
                    ol.locked.clone(),
                    src_sp.clone(),
                    PathBuf::from(&src_dir),
                    path,
                )?;
                self.compute(
                    &flake.inputs,
                    child,
                    path,
                    old_ref,
                    follows_prefix,
                    (&src_sp, &src_dir),
                    false,
                )?;
            } else {
                self.compute(
                    &fake,
                    child,
                    path,
                    old_ref,
                    follows_prefix,
                    (&src_sp, &src_dir),
                    true,
                )?;
            }
            return Ok(());
        }
        // A new lock entry: fetch the input.
        if !self.settings.allow_unlocked
            && !reference.input.is_locked(&self.settings.fetch.input)
            && reference.input.is_relative().is_none()
        {
            return Err(FlakeError::Other(format!(
                "cannot update unlocked flake input '{}' in pure mode",
                print_input_path(path)
            )));
        }
        let original = match (&input2.reference, has_cli_override) {
            (Some(r), true) => r.clone(),
            _ => reference.clone(),
        };
        if input.is_flake {
            let (flake, locked_input, sp, dir) = match relative_dir(&reference) {
                Some(dir) => {
                    let f = read_flake(
                        self.ev,
                        reference.clone(),
                        reference.clone(),
                        reference.clone(),
                        overridden_source.0.clone(),
                        PathBuf::from(&dir),
                        path,
                    )?;
                    (f, reference.input.clone(), overridden_source.0.clone(), dir)
                }
                None => {
                    let (f, inp) =
                        get_flake(self.ev, &reference, self.settings, path, &mut self.warnings)?;
                    let sp = f.source_store_path.clone();
                    let dir = f.flake_dir.display().to_string();
                    (f, inp, sp, dir)
                }
            };
            let child = self.new.add_node(LockedNode {
                locked: flake.locked.clone(),
                original,
                is_flake: true,
                parent: overridden_parent_path,
            });
            self.new.set_input(node, id.to_string(), Edge::Node(child));
            if self.parents.iter().any(|p| p == &reference) {
                return Err(FlakeError::Other(format!(
                    "found circular import of flake '{}'",
                    reference.display()
                )));
            }
            self.sources.insert(child, (sp.clone(), dir.clone()));
            self.inputs.insert(child, locked_input);
            self.parents.push(reference.clone());
            let r = (|| -> Result<(), EvalError> {
                match old_locked.as_ref().map(|(n, _)| *n) {
                    Some(old_id) => {
                        let old_lock_file = old.map(|o| o.lock).expect("old_locked implies old");
                        self.compute(
                            &flake.inputs,
                            child,
                            path,
                            Some(OldNode {
                                lock: old_lock_file,
                                node: old_id,
                            }),
                            follows_prefix,
                            (&sp, &dir),
                            false,
                        )
                    }
                    None => {
                        let lock_path = format!("{dir}/flake.lock");
                        let real = store_path::real_path(&self.ev.config.store_dir, &lock_path);
                        let child_lock = match std::fs::read_to_string(&real) {
                            Ok(t) => parse_lock_file(self.ev, &t, &lock_path, self.settings)
                                .map_err(FlakeError::into_eval)?,
                            Err(_) => LockFile::new(),
                        };
                        self.compute(
                            &flake.inputs,
                            child,
                            path,
                            Some(OldNode {
                                lock: &child_lock,
                                node: LockFile::ROOT,
                            }),
                            path,
                            (&sp, &dir),
                            false,
                        )
                    }
                }
            })();
            self.parents.pop();
            r.map_err(FlakeError::Eval)?;
        } else {
            let (locked, sp, dir, locked_input) = match relative_dir(&reference) {
                Some(dir) => (
                    reference.clone(),
                    overridden_source.0.clone(),
                    dir,
                    reference.input.clone(),
                ),
                None => {
                    let f = fetch_ref(self.ev, &reference, self.settings)?;
                    let sp = add_to_store(self.ev, &f.fetched)?;
                    let dir = if f.locked.subdir.is_empty() {
                        sp.clone()
                    } else {
                        format!("{sp}/{}", f.locked.subdir)
                    };
                    (f.locked.clone(), sp, dir, f.fetched.input)
                }
            };
            let child = self.new.add_node(LockedNode {
                locked,
                original,
                is_flake: false,
                parent: overridden_parent_path,
            });
            self.new.set_input(node, id.to_string(), Edge::Node(child));
            self.sources.insert(child, (sp, dir));
            self.inputs.insert(child, locked_input);
        }
        Ok(())
    }

    /// The store path and flake directory of a reused lock entry (relative paths are resolved
    /// against `parent_source`, the directory of the flake that declared them).
    fn source_of(
        &mut self,
        ln: &LockedNode,
        parent_source: &(String, String),
    ) -> Result<(String, String), FlakeError> {
        if let Some(rel) = ln.locked.input.is_relative() {
            let mut dir = crate::lower::canon_path(&format!(
                "{}/{}",
                parent_source.1,
                rel.trim_start_matches("./")
            ));
            if !ln.locked.subdir.is_empty() {
                dir = format!("{dir}/{}", ln.locked.subdir);
            }
            return Ok((parent_source.0.clone(), dir));
        }
        let no_registries = FlakeSettings {
            registries: None,
            ..self.settings.clone()
        };
        let f = fetch_ref(self.ev, &ln.locked, &no_registries)?;
        let sp = add_to_store(self.ev, &f.fetched)?;
        let dir = if ln.locked.subdir.is_empty() {
            sp.clone()
        } else {
            format!("{sp}/{}", ln.locked.subdir)
        };
        Ok((sp, dir))
    }
}

/// Parses lock file text. Malformed JSON is reported with nlohmann's message (what Nix prints:
/// the JSON library's exception, which escapes Nix's error traces), obtained from
/// `builtins.fromJSON`, whose messages are nlohmann's.
fn parse_lock_file(
    ev: &mut Evaluator,
    text: &str,
    shown: &str,
    settings: &FlakeSettings,
) -> Result<LockFile, FlakeError> {
    match LockFile::parse(text, shown, &settings.fetch.input) {
        Ok(l) => Ok(l),
        Err(e) => {
            let from_json = ev
                .force_attrs(&ev.builtins.clone(), Pos::NONE, "")
                .ok()
                .and_then(|b| b.get(Symbol::intern("fromJSON")).map(|a| a.value.clone()));
            if let Some(f) = from_json
                && let Err(je) = ev.call(&f, &[Value::str(text)], Pos::NONE)
            {
                return Err(FlakeError::Untraced(je.0.msg.clone()));
            }
            Err(e.into())
        }
    }
}

/// Removes ANSI escape sequences (Nix filters them when stderr is not a terminal).
pub(crate) fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\x1b' && chars.peek() == Some(&'[') {
            chars.next();
            for c2 in chars.by_ref() {
                if c2.is_ascii_alphabetic() {
                    break;
                }
            }
            continue;
        }
        out.push(c);
    }
    out
}

/// `"'/dir/flake.lock'"` as Nix 2.26 prints a `std::filesystem::path` inside quotes.
fn quoted_path(p: &Path) -> String {
    let s = p.display().to_string();
    let mut o = String::from("\"");
    for c in s.chars() {
        if c == '"' || c == '\\' {
            o.push('\\');
        }
        o.push(c);
    }
    o.push('"');
    o
}

/// Nix's `lockFlake` for the reference text `flake_ref` (as on the command line).
pub fn lock_flake(
    ev: &mut Evaluator,
    flake_ref: &str,
    settings: &FlakeSettings,
) -> Result<LockedFlake, FlakeError> {
    let opts = ParseOptions {
        base_dir: Some(settings.cwd.clone()),
        ..ParseOptions::default()
    };
    let top_ref = FlakeRef::parse(flake_ref, &opts)?;
    lock_flake_ref(ev, &top_ref, settings)
}

/// Nix's `lockFlake` for a parsed reference.
pub fn lock_flake_ref(
    ev: &mut Evaluator,
    top_ref: &FlakeRef,
    settings: &FlakeSettings,
) -> Result<LockedFlake, FlakeError> {
    let mut warnings = Vec::new();
    let (flake, top_input) = get_flake(ev, top_ref, settings, &[], &mut warnings)?;
    let locked_display = flake.locked.display();
    lock_top(ev, top_ref, settings, flake, top_input, warnings).map_err(|e| {
        if let FlakeError::Untraced(_) = e {
            return e;
        }
        FlakeError::Eval(e.into_eval().with_trace(
            Pos::NONE,
            format!("while updating the lock file of flake '{locked_display}'"),
        ))
    })
}

fn lock_top(
    ev: &mut Evaluator,
    top_ref: &FlakeRef,
    settings: &FlakeSettings,
    mut flake: Flake,
    mut top_input: Input,
    mut warnings: Vec<String>,
) -> Result<LockedFlake, FlakeError> {
    let repo = writable_root(&top_input);
    let lock_rel = if top_ref.subdir.is_empty() {
        "flake.lock".to_string()
    } else {
        format!("{}/flake.lock", top_ref.subdir)
    };
    // Read the lock file from the copy in the store (what Nix reads).
    let lock_logical = flake.flake_dir.join("flake.lock");
    let lock_real =
        store_path::real_path(&ev.config.store_dir, &lock_logical.display().to_string());
    let old = match std::fs::read_to_string(&lock_real) {
        Ok(t) => parse_lock_file(ev, &t, &lock_logical.display().to_string(), settings)?,
        Err(_) => LockFile::new(),
    };
    let root_dir = flake.flake_dir.display().to_string();
    let root_sp = flake.source_store_path.clone();
    let mut overrides = BTreeMap::new();
    let mut cli_overrides = Vec::new();
    for (p, r) in &settings.override_inputs {
        overrides.insert(
            p.clone(),
            OverrideTarget {
                input: FlakeInput {
                    reference: Some(r.clone()),
                    is_flake: true,
                    ..FlakeInput::default()
                },
                source: (root_sp.clone(), root_dir.clone()),
                parent_input_path: None,
            },
        );
        cli_overrides.push(p.clone());
    }
    let mut locker = Locker {
        ev,
        settings,
        new: LockFile::new(),
        overrides,
        cli_overrides,
        overrides_used: Vec::new(),
        updates_used: Vec::new(),
        parents: Vec::new(),
        sources: BTreeMap::new(),
        inputs: BTreeMap::new(),
        warnings: Vec::new(),
    };
    let old_ref = if settings.recreate_lock_file {
        None
    } else {
        Some(OldNode {
            lock: &old,
            node: LockFile::ROOT,
        })
    };
    locker
        .compute(
            &flake.inputs,
            LockFile::ROOT,
            &[],
            old_ref,
            &[],
            (&root_sp, &root_dir),
            false,
        )
        .map_err(FlakeError::Eval)?;
    warnings.append(&mut locker.warnings);
    for (p, r) in &settings.override_inputs {
        if !locker.overrides_used.contains(p) {
            warnings.push(format!(
                "warning: the flag '--override-input {} {}' does not match any input",
                print_input_path(p),
                r.display()
            ));
        }
    }
    for u in &settings.update_inputs {
        if !locker.updates_used.contains(u) {
            warnings.push(format!(
                "warning: '{}' does not match any input of this flake",
                print_input_path(u)
            ));
        }
    }
    let new = locker.new;
    let mut sources = locker.sources;
    let mut inputs = locker.inputs;
    new.check()?;
    let new_text = new.to_file_string();
    let changed = old.to_file_string() != new_text;
    let diff = if changed {
        strip_ansi(&LockFile::diff(&old, &new))
    } else {
        String::new()
    };
    let mut wrote = false;
    let mut force_dirty = false;
    if changed {
        let chomped = diff.trim_end_matches(['\n', '\r', ' ', '\t']).to_string();
        if settings.write_lock_file {
            let Some(repo) = &repo else {
                return Err(FlakeError::Other(format!(
                    "cannot write modified lock file of flake '{}' (use '--no-write-lock-file' to ignore)",
                    top_ref.display()
                )));
            };
            let lock_path = repo.join(&lock_rel);
            if let Some(unlocked) = new.is_unlocked(&settings.fetch.input) {
                if settings.fetch.warn_dirty {
                    warnings.push(format!(
                        "warning: will not write lock file of flake '{}' because it has an unlocked input ('{}')",
                        top_ref.display(),
                        unlocked.display()
                    ));
                }
            } else {
                let exists = std::fs::symlink_metadata(&lock_path).is_ok();
                let shown = quoted_path(&lock_path);
                warnings.push(if exists {
                    if chomped.is_empty() {
                        format!("warning: updating lock file '{shown}'")
                    } else {
                        format!("warning: updating lock file '{shown}':\n{chomped}")
                    }
                } else {
                    format!("warning: creating lock file '{shown}': \n{chomped}")
                });
                write_atomically(&lock_path, new_text.as_bytes())?;
                if let InputKind::Git(_) = &top_input.kind {
                    git_intent_to_add(repo, &lock_rel, &mut warnings);
                }
                wrote = true;
                // The top-level source changed: read it again, as Nix does. Not for a Git
                // work tree: Nix caches a work tree's state per process, so its second read
                // sees the same files (and does not warn again about a dirty tree).
                if !matches!(top_input.kind, InputKind::Git(_)) {
                    let (f2, i2) = get_flake(ev, top_ref, settings, &[], &mut warnings)?;
                    flake = f2;
                    top_input = i2;
                }
            }
        } else {
            warnings.push(format!(
                "warning: not writing modified lock file of flake '{}':\n{chomped}",
                top_ref.display()
            ));
            force_dirty = true;
        }
    }
    sources.insert(
        LockFile::ROOT,
        (
            flake.source_store_path.clone(),
            flake.flake_dir.display().to_string(),
        ),
    );
    inputs.insert(LockFile::ROOT, top_input);
    // Relative inputs of the root live inside its (possibly re-read) source.
    for (id, node) in new.nodes.iter().enumerate() {
        if let Some(l) = &node.locked
            && l.parent.as_deref() == Some(&[][..])
            && l.locked.input.is_relative().is_some()
            && let Some((sp, dir)) = sources.get_mut(&id)
            && let Some(rel) = l.locked.input.is_relative()
        {
            *sp = flake.source_store_path.clone();
            *dir = crate::lower::canon_path(&format!(
                "{}/{}",
                flake.flake_dir.display(),
                rel.trim_start_matches("./")
            ));
            if !l.locked.subdir.is_empty() {
                *dir = format!("{dir}/{}", l.locked.subdir);
            }
        }
    }
    Ok(LockedFlake {
        flake,
        lock_file: new,
        node_sources: sources,
        node_inputs: inputs,
        wrote_lock_file: wrote,
        diff,
        warnings,
        force_dirty,
    })
}

/// Nix's Git `putFile` after writing `flake.lock` into a work tree: unless the file is
/// ignored, `git add --intent-to-add` it so that the next fetch of the tree sees it. A failing
/// `git` is reported as a warning line.
fn git_intent_to_add(repo: &Path, rel: &str, warnings: &mut Vec<String>) {
    let ignored = std::process::Command::new("git")
        .arg("-C")
        .arg(repo)
        .args(["check-ignore", "--quiet", rel])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if ignored {
        return;
    }
    let r = std::process::Command::new("git")
        .arg("-C")
        .arg(repo)
        .args(["add", "--intent-to-add", "--", rel])
        .output();
    match r {
        Ok(o) if o.status.success() => {}
        Ok(o) => warnings.push(format!(
            "warning: 'git add --intent-to-add {rel}' failed: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        )),
        Err(e) => warnings.push(format!("warning: cannot run git: {e}")),
    }
}

/// The local directory a lock file can be written to: a `path:` flake's directory or a local
/// Git work tree (`None` for anything else).
fn writable_root(input: &Input) -> Option<PathBuf> {
    match &input.kind {
        InputKind::Path(p) if p.path.starts_with('/') => Some(PathBuf::from(&p.path)),
        InputKind::Git(g) => g.url.strip_prefix("file://").map(PathBuf::from),
        _ => None,
    }
}

/// Writes `bytes` to `path` via a temporary file in the same directory, fsync and rename.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), FlakeError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(".flake.lock.tmp-{}", std::process::id()));
    let io = |e: std::io::Error| FlakeError::Other(format!("writing '{}': {e}", path.display()));
    let mut f = std::fs::File::create(&tmp).map_err(io)?;
    f.write_all(bytes).map_err(io)?;
    f.sync_all().map_err(io)?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(io)?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

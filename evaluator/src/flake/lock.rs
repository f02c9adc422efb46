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
use flaked_store::fetchers::lockfile::{Edge, parse_input_path};
use flaked_store::fetchers::{
    FetchSettings, FlakeRef, Input, InputKind, InputPath, LockFile, LockedNode, NodeId,
    ParseOptions, fetch_flake_ref,
};
use flaked_store::hash::HashAlgo;
use flaked_store::store_path::FileIngestionMethod;

use super::{FlakeError, show_pos};
use crate::builtins::import::eval_file;
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
    /// Nix's "• Added input …" report (empty when unchanged).
    pub diff: String,
}

/// Parses `inputs` of a flake.nix.
fn parse_inputs(
    ev: &mut Evaluator,
    v: &Value,
    pos: Pos,
    lock_root_path: &[String],
) -> Result<BTreeMap<String, FlakeInput>, FlakeError> {
    let attrs = ev.force_attrs(v, pos, "")?;
    let mut out = BTreeMap::new();
    for a in attrs.sorted_by_name() {
        let name = a.name.as_string();
        let input = parse_input(ev, &name, &a.value, a.pos, lock_root_path).map_err(|e| {
            FlakeError::Eval(
                e.into_eval()
                    .with_trace(a.pos, format!("while evaluating flake input '{name}'")),
            )
        })?;
        out.insert(name, input);
    }
    Ok(out)
}

fn parse_input(
    ev: &mut Evaluator,
    name: &str,
    v: &Value,
    pos: Pos,
    lock_root_path: &[String],
) -> Result<FlakeInput, FlakeError> {
    let v = ev.force(v, pos)?;
    let Value::Attrs(attrs) = &v else {
        return Err(FlakeError::Eval(
            EvalError::type_error(format!(
                "expected a set but got {} at {}",
                v.type_desc(),
                show_pos(pos)
            ))
            .at(pos),
        ));
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
                    let s = ev.force_string_no_ctx(&a.value, a.pos, "")?;
                    let s = String::from_utf8_lossy(&s.bytes).into_owned();
                    fattrs.insert("url".into(), Attr::String(s.clone()));
                    url = Some(s);
                }
                "flake" => {
                    input.is_flake = ev.force_bool(&a.value, a.pos, "")?;
                }
                "inputs" => {
                    input.overrides = parse_inputs(ev, &a.value, a.pos, lock_root_path)?;
                }
                "follows" => {
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

/// Copies a source tree into the store and returns its store path.
fn add_to_store(ev: &Evaluator, tree: &Path, name: &str) -> Result<String, FlakeError> {
    let store = store_path::open_store(&ev.config.store_dir)?;
    let added = store
        .add_path(
            tree,
            name,
            FileIngestionMethod::Recursive,
            HashAlgo::Sha256,
            None,
        )
        .map_err(|e| FlakeError::Other(e.to_string()))?;
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
    if !file.exists() {
        return Err(FlakeError::Other(format!(
            "source tree referenced by '{}' does not contain a '{}/flake.nix' file",
            locked.display(),
            if resolved.subdir.is_empty() {
                String::new()
            } else {
                format!("/{}", resolved.subdir)
            }
        )));
    }
    let v = eval_file(ev, &file)?;
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
                    return Err(FlakeError::Eval(
                        EvalError::type_error(format!(
                            "expected a function but got {} at {}",
                            other.type_desc(),
                            show_pos(o.pos)
                        ))
                        .at(o.pos),
                    ));
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
        ev.force_attrs(&c.value, c.pos, "")?;
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

/// Fetches and reads the top-level flake.
fn get_top_flake(
    ev: &mut Evaluator,
    r: &FlakeRef,
    settings: &FlakeSettings,
) -> Result<(Flake, Input, PathBuf), FlakeError> {
    let fetched = fetch_flake_ref(r, None, &settings.fetch)?;
    let name = fetched.fetched.input.name();
    let sp = add_to_store(ev, &fetched.fetched.tree, &name)?;
    let dir = if fetched.locked.subdir.is_empty() {
        PathBuf::from(&sp)
    } else {
        PathBuf::from(&sp).join(&fetched.locked.subdir)
    };
    let local_dir = fetched.flake_dir();
    let flake = read_flake(
        ev,
        r.clone(),
        fetched.resolved.clone(),
        fetched.locked.clone(),
        sp,
        dir,
        &[],
    )?;
    Ok((flake, fetched.fetched.input, local_dir))
}

/// One place where the old lock graph can be consulted: a lock file, a node in it, and the
/// prefix that turns its `follows` paths into paths of the new lock file.
#[derive(Clone, Copy)]
struct OldRef<'a> {
    lock: &'a LockFile,
    node: NodeId,
    follows_prefix: &'a [String],
}

struct Locker<'a> {
    ev: &'a mut Evaluator,
    settings: &'a FlakeSettings,
    new: LockFile,
    overrides: BTreeMap<InputPath, (FlakeInput, InputPath)>,
    sources: BTreeMap<NodeId, (String, String)>,
    inputs: BTreeMap<NodeId, Input>,
}

impl Locker<'_> {
    #[allow(clippy::too_many_arguments)]
    fn compute(
        &mut self,
        inputs: &BTreeMap<String, FlakeInput>,
        node: NodeId,
        prefix: &[String],
        old: Option<OldRef<'_>>,
        source: (&str, &str),
    ) -> Result<(), FlakeError> {
        // Overrides declared here apply to inputs of inputs.
        for (id, input) in inputs {
            let mut p = prefix.to_vec();
            p.push(id.clone());
            for (cid, child) in &input.overrides {
                let mut cp = p.clone();
                cp.push(cid.clone());
                self.overrides
                    .entry(cp)
                    .or_insert_with(|| (child.clone(), prefix.to_vec()));
                collect_nested(&mut self.overrides, &p, cid, child, prefix);
            }
        }
        for (id, input0) in inputs {
            let mut path = prefix.to_vec();
            path.push(id.clone());
            let ovr = self.overrides.get(&path).cloned();
            let has_override = ovr.is_some();
            let input = match &ovr {
                Some((o, _)) => {
                    let mut m = input0.clone();
                    if o.reference.is_some() || o.follows.is_some() {
                        m.reference = o.reference.clone();
                        m.follows = o.follows.clone();
                    }
                    m
                }
                None => input0.clone(),
            };
            if let Some(f) = &input.follows {
                self.new
                    .set_input(node, id.clone(), Edge::Follows(f.clone()));
                continue;
            }
            let Some(reference) = input.reference.clone() else {
                continue;
            };
            let update = self.settings.update_inputs.iter().any(|u| u == &path);
            let old_child = old.and_then(|o| match o.lock.nodes[o.node].inputs.get(id) {
                Some(Edge::Node(n)) => Some(OldRef {
                    lock: o.lock,
                    node: *n,
                    follows_prefix: o.follows_prefix,
                }),
                _ => None,
            });
            let reuse = old_child.filter(|oc| {
                oc.lock.nodes[oc.node]
                    .locked
                    .as_ref()
                    .is_some_and(|l| l.original == reference)
                    && !has_override
                    && !update
            });
            if let Some(oc) = reuse {
                let Some(ol) = oc.lock.nodes[oc.node].locked.clone() else {
                    continue;
                };
                let child = self.new.add_node(ol.clone());
                self.new.set_input(node, id.clone(), Edge::Node(child));
                let (src_sp, src_dir) = self.source_of(&ol, source)?;
                self.sources
                    .insert(child, (src_sp.clone(), src_dir.clone()));
                self.inputs.insert(child, ol.locked.input.clone());
                if ol.is_flake {
                    let must_refetch = self
                        .settings
                        .update_inputs
                        .iter()
                        .any(|u| u.len() > path.len() && u.starts_with(&path))
                        || self
                            .overrides
                            .keys()
                            .any(|k| k.len() > path.len() && k.starts_with(&path));
                    if must_refetch {
                        let flake =
                            self.read_input_flake(&ol, &reference, &src_sp, &src_dir, &path)?;
                        self.compute(&flake.inputs, child, &path, Some(oc), (&src_sp, &src_dir))?;
                    } else {
                        let fake = fake_inputs(oc);
                        self.compute(&fake, child, &path, Some(oc), (&src_sp, &src_dir))?;
                    }
                }
                continue;
            }
            // Fetch a new lock for this input.
            let (ln, src_sp, src_dir) = if let Some(rel) = reference.input.is_relative() {
                let parent = match &ovr {
                    Some((_, defined_in)) => defined_in.clone(),
                    None => prefix.to_vec(),
                };
                let dir = format!("{}/{}", source.1, rel.trim_start_matches("./"));
                let dir = crate::lower::canon_path(&dir);
                (
                    LockedNode {
                        locked: reference.clone(),
                        original: reference.clone(),
                        is_flake: input.is_flake,
                        parent: Some(parent),
                    },
                    source.0.to_string(),
                    dir,
                )
            } else {
                let f = fetch_flake_ref(&reference, None, &self.settings.fetch)?;
                let sp = add_to_store(self.ev, &f.fetched.tree, &f.fetched.input.name())?;
                let dir = if f.locked.subdir.is_empty() {
                    sp.clone()
                } else {
                    format!("{sp}/{}", f.locked.subdir)
                };
                (
                    LockedNode {
                        locked: f.locked.clone(),
                        original: reference.clone(),
                        is_flake: input.is_flake,
                        parent: None,
                    },
                    sp,
                    dir,
                )
            };
            let child = self.new.add_node(ln.clone());
            self.new.set_input(node, id.clone(), Edge::Node(child));
            self.sources
                .insert(child, (src_sp.clone(), src_dir.clone()));
            self.inputs.insert(child, ln.locked.input.clone());
            if input.is_flake {
                if prefix.len() > 64 {
                    return Err(FlakeError::Other(format!(
                        "found circular import of flake '{}'",
                        reference.display()
                    )));
                }
                let flake = self.read_input_flake(&ln, &reference, &src_sp, &src_dir, &path)?;
                // The input's own lock file seeds its inputs' locks.
                let lock_path = PathBuf::from(&src_dir).join("flake.lock");
                let child_lock = match std::fs::read_to_string(&lock_path) {
                    Ok(t) => Some(LockFile::parse(
                        &t,
                        &lock_path.display().to_string(),
                        &self.settings.fetch.input,
                    )?),
                    Err(_) => None,
                };
                match &child_lock {
                    Some(cl) => {
                        let oref = OldRef {
                            lock: cl,
                            node: LockFile::ROOT,
                            follows_prefix: &path,
                        };
                        self.compute(&flake.inputs, child, &path, Some(oref), (&src_sp, &src_dir))?;
                    }
                    None => {
                        self.compute(&flake.inputs, child, &path, None, (&src_sp, &src_dir))?;
                    }
                }
            }
        }
        Ok(())
    }

    /// The store path and flake directory of a reused lock entry.
    fn source_of(
        &mut self,
        ln: &LockedNode,
        parent_source: (&str, &str),
    ) -> Result<(String, String), FlakeError> {
        if let Some(rel) = ln.locked.input.is_relative() {
            let dir = crate::lower::canon_path(&format!(
                "{}/{}",
                parent_source.1,
                rel.trim_start_matches("./")
            ));
            return Ok((parent_source.0.to_string(), dir));
        }
        let f = fetch_flake_ref(&ln.locked, None, &self.settings.fetch)?;
        let sp = add_to_store(self.ev, &f.fetched.tree, &f.fetched.input.name())?;
        let dir = if ln.locked.subdir.is_empty() {
            sp.clone()
        } else {
            format!("{sp}/{}", ln.locked.subdir)
        };
        Ok((sp, dir))
    }

    fn read_input_flake(
        &mut self,
        ln: &LockedNode,
        reference: &FlakeRef,
        sp: &str,
        dir: &str,
        path: &[String],
    ) -> Result<Flake, FlakeError> {
        read_flake(
            self.ev,
            reference.clone(),
            reference.clone(),
            ln.locked.clone(),
            sp.to_string(),
            PathBuf::from(dir),
            path,
        )
    }
}

fn collect_nested(
    overrides: &mut BTreeMap<InputPath, (FlakeInput, InputPath)>,
    parent: &[String],
    id: &str,
    input: &FlakeInput,
    defined_in: &[String],
) {
    let mut p = parent.to_vec();
    p.push(id.to_string());
    for (cid, child) in &input.overrides {
        let mut cp = p.clone();
        cp.push(cid.clone());
        overrides
            .entry(cp)
            .or_insert_with(|| (child.clone(), defined_in.to_vec()));
        collect_nested(overrides, &p, cid, child, defined_in);
    }
}

/// Inputs reconstructed from an old lock node (Nix's "fake inputs").
fn fake_inputs(o: OldRef<'_>) -> BTreeMap<String, FlakeInput> {
    let mut out = BTreeMap::new();
    for (name, e) in &o.lock.nodes[o.node].inputs {
        match e {
            Edge::Node(n) => {
                if let Some(l) = &o.lock.nodes[*n].locked {
                    out.insert(
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
                let mut p = o.follows_prefix.to_vec();
                p.extend(f.iter().cloned());
                out.insert(
                    name.clone(),
                    FlakeInput {
                        follows: Some(p),
                        is_flake: true,
                        ..FlakeInput::default()
                    },
                );
            }
        }
    }
    out
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
    let (flake, top_input, local_dir) = get_top_flake(ev, &top_ref, settings)?;
    let lock_path = local_dir.join("flake.lock");
    let old_text = std::fs::read_to_string(&lock_path).ok();
    let old = match (&old_text, settings.recreate_lock_file) {
        (Some(t), false) => {
            LockFile::parse(t, &lock_path.display().to_string(), &settings.fetch.input)?
        }
        _ => LockFile::new(),
    };
    let mut locker = Locker {
        ev,
        settings,
        new: LockFile::new(),
        overrides: BTreeMap::new(),
        sources: BTreeMap::new(),
        inputs: BTreeMap::new(),
    };
    let root_dir = flake.flake_dir.display().to_string();
    let root_sp = flake.source_store_path.clone();
    let empty: Vec<String> = Vec::new();
    let oref = OldRef {
        lock: &old,
        node: LockFile::ROOT,
        follows_prefix: &empty,
    };
    locker.compute(
        &flake.inputs,
        LockFile::ROOT,
        &[],
        Some(oref),
        (&root_sp, &root_dir),
    )?;
    let new = locker.new;
    let mut sources = locker.sources;
    let mut inputs = locker.inputs;
    sources.insert(LockFile::ROOT, (root_sp, root_dir));
    inputs.insert(LockFile::ROOT, top_input.clone());
    new.check()?;
    let new_text = new.to_file_string();
    let changed = old.to_file_string() != new_text;
    let diff = if changed {
        LockFile::diff(&old, &new)
    } else {
        String::new()
    };
    let mut wrote = false;
    if changed && settings.write_lock_file {
        if !matches!(top_input.kind, InputKind::Path(_) | InputKind::Git(_)) {
            return Err(FlakeError::Other(format!(
                "cannot write modified lock file of flake '{}' (use '--no-write-lock-file' to ignore)",
                top_ref.display()
            )));
        }
        write_atomically(&lock_path, new_text.as_bytes())?;
        wrote = true;
    }
    // Re-parse so that nodes are numbered and shared as a reader sees them.
    Ok(LockedFlake {
        flake,
        lock_file: new,
        node_sources: std::mem::take(&mut sources),
        node_inputs: std::mem::take(&mut inputs),
        wrote_lock_file: wrote,
        diff,
    })
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

//! flake.lock (version 7): a graph of locked inputs, read from and written to JSON exactly as
//! Nix 2.26 does.
//!
//! Invariant: [`LockFile::to_string`] regenerates node keys with Nix's algorithm (depth-first
//! from the root in input-name order, a key is the input name, suffixed `_2`, `_3`, … when
//! taken) and prints Nix's JSON layout, so a lock file written by Nix round-trips through
//! [`LockFile::parse`] and [`LockFile::to_string`] byte for byte.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde_json::Value;

use super::FetchError;
use super::attrs::{attrs_to_json, attrs_to_json_string, json_to_attrs};
use super::flakeref::FlakeRef;
use super::input::InputSettings;
use super::json::to_pretty;
use super::url::FLAKE_ID_REGEX;

/// Index of a node in [`LockFile::nodes`]; the root is [`LockFile::ROOT`].
pub type NodeId = usize;

/// A path of input names from the root (`["nixpkgs", "utils"]`, printed `nixpkgs/utils`).
pub type InputPath = Vec<String>;

/// An edge of the graph: a locked node, or a `follows` path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Edge {
    Node(NodeId),
    Follows(InputPath),
}

/// The lock information of a non-root node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockedNode {
    /// `locked`: always final (its input has `is_final`), except relative paths.
    pub locked: FlakeRef,
    /// `original`: the reference as written in flake.nix.
    pub original: FlakeRef,
    /// `flake = false` inputs are plain source trees.
    pub is_flake: bool,
    /// For relative `path:` inputs: the input path of the flake they are relative to.
    pub parent: Option<InputPath>,
}

/// A node: the root (no lock info) or a locked input.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Node {
    pub inputs: BTreeMap<String, Edge>,
    pub locked: Option<LockedNode>,
}

/// A lock file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockFile {
    /// `nodes[ROOT]` is the root node.
    pub nodes: Vec<Node>,
}

impl Default for LockFile {
    fn default() -> Self {
        LockFile::new()
    }
}

/// `printInputPath`.
pub fn print_input_path(p: &[String]) -> String {
    p.join("/")
}

/// `parseInputPath`: `a/b/c`, each element a flake id.
pub fn parse_input_path(s: &str) -> Result<InputPath, FetchError> {
    let mut p = Vec::new();
    for e in s.split('/').filter(|e| !e.is_empty()) {
        if !FLAKE_ID_REGEX.is_match(e) {
            return Err(FetchError::invalid(format!(
                "invalid flake input path element '{e}'"
            )));
        }
        p.push(e.to_owned());
    }
    Ok(p)
}

fn get_flake_ref(json: &Value, attr: &str, info: Option<&str>) -> Result<FlakeRef, FetchError> {
    let Some(v) = json.get(attr) else {
        return Err(FetchError::invalid(format!(
            "attribute '{attr}' missing in lock file"
        )));
    };
    let mut attrs = json_to_attrs(v)?;
    if let Some(info) = info
        && let Some(j) = json.get(info)
    {
        for (k, v) in json_to_attrs(j)? {
            attrs.insert(k, v);
        }
    }
    FlakeRef::from_attrs(&attrs)
}

impl LockedNode {
    fn from_json(json: &Value, settings: &InputSettings) -> Result<LockedNode, FetchError> {
        let mut locked = get_flake_ref(json, "locked", Some("info"))?;
        let original = get_flake_ref(json, "original", None)?;
        let is_flake = match json.get("flake") {
            None => true,
            Some(Value::Bool(b)) => *b,
            Some(v) => {
                return Err(FetchError::invalid(format!(
                    "lock file attribute 'flake' must be a Boolean, got '{v}'"
                )));
            }
        };
        let parent = match json.get("parent") {
            None => None,
            Some(Value::Array(a)) => Some(
                a.iter()
                    .map(|x| {
                        x.as_str().map(str::to_owned).ok_or_else(|| {
                            FetchError::invalid(format!(
                                "lock file attribute 'parent' must be a list of strings, got '{x}'"
                            ))
                        })
                    })
                    .collect::<Result<Vec<_>, _>>()?,
            ),
            Some(v) => {
                return Err(FetchError::invalid(format!(
                    "lock file attribute 'parent' must be a list of strings, got '{v}'"
                )));
            }
        };
        if !locked.input.is_considered_locked(settings) && locked.input.is_relative().is_none() {
            return Err(FetchError::invalid(format!(
                "Lock file contains unlocked input '{}'. Use '--allow-dirty-locks' to accept this lock file.",
                attrs_to_json_string(&locked.input.to_attrs())
            )));
        }
        // Lock file entries are implicitly final.
        locked.input.is_final = true;
        Ok(LockedNode {
            locked,
            original,
            is_flake,
            parent,
        })
    }
}

impl LockFile {
    /// The root node's id.
    pub const ROOT: NodeId = 0;

    /// An empty lock file (a root without inputs).
    pub fn new() -> LockFile {
        LockFile {
            nodes: vec![Node::default()],
        }
    }

    /// Add a locked node (not yet connected) and return its id.
    pub fn add_node(&mut self, node: LockedNode) -> NodeId {
        self.nodes.push(Node {
            inputs: BTreeMap::new(),
            locked: Some(node),
        });
        self.nodes.len() - 1
    }

    /// Set input `name` of `node`.
    pub fn set_input(&mut self, node: NodeId, name: impl Into<String>, edge: Edge) {
        if let Some(n) = self.nodes.get_mut(node) {
            n.inputs.insert(name.into(), edge);
        }
    }

    /// Parse lock file text. `path` is only used in messages.
    pub fn parse(
        contents: &str,
        path: &str,
        settings: &InputSettings,
    ) -> Result<LockFile, FetchError> {
        let json: Value = serde_json::from_str(contents)
            .map_err(|e| FetchError::invalid(format!("cannot parse lock file '{path}': {e}")))?;
        let version = match json.get("version") {
            None => 0,
            Some(v) => v.as_i64().ok_or_else(|| {
                FetchError::invalid(format!(
                    "lock file '{path}' has a non-integer version '{v}'"
                ))
            })?,
        };
        if !(5..=7).contains(&version) {
            return Err(FetchError::invalid(format!(
                "lock file '{path}' has unsupported version {version}"
            )));
        }
        let nodes_json = json
            .get("nodes")
            .and_then(Value::as_object)
            .ok_or_else(|| {
                FetchError::invalid(format!("lock file '{path}' has no 'nodes' object"))
            })?;
        let root_key = json.get("root").and_then(Value::as_str).ok_or_else(|| {
            FetchError::invalid(format!("lock file '{path}' has no 'root' string"))
        })?;
        let root_json = nodes_json.get(root_key).ok_or_else(|| {
            FetchError::invalid(format!("lock file references missing node '{root_key}'"))
        })?;

        let mut lf = LockFile::new();
        let mut key_to_id: HashMap<String, NodeId> = HashMap::new();
        key_to_id.insert(root_key.to_owned(), LockFile::ROOT);
        // Iterative depth-first walk: (node id, its JSON).
        let mut stack: Vec<(NodeId, &Value)> = vec![(LockFile::ROOT, root_json)];
        while let Some((id, node_json)) = stack.pop() {
            let Some(inputs) = node_json.get("inputs") else {
                continue;
            };
            let inputs = inputs.as_object().ok_or_else(|| {
                FetchError::invalid(format!("lock file '{path}': 'inputs' is not an object"))
            })?;
            for (name, v) in inputs {
                let edge = match v {
                    Value::Array(a) => Edge::Follows(
                        a.iter()
                            .map(|x| {
                                x.as_str().map(str::to_owned).ok_or_else(|| {
                                    FetchError::invalid(format!(
                                        "lock file '{path}': follows path of input '{name}' contains '{x}'"
                                    ))
                                })
                            })
                            .collect::<Result<_, _>>()?,
                    ),
                    Value::String(key) => {
                        let child = match key_to_id.get(key) {
                            Some(c) => *c,
                            None => {
                                let j = nodes_json.get(key).ok_or_else(|| {
                                    FetchError::invalid(format!(
                                        "lock file references missing node '{key}'"
                                    ))
                                })?;
                                let node = LockedNode::from_json(j, settings)?;
                                let c = lf.add_node(node);
                                key_to_id.insert(key.clone(), c);
                                stack.push((c, j));
                                c
                            }
                        };
                        if child == LockFile::ROOT {
                            return Err(FetchError::invalid("lock file contains cycle to root node"));
                        }
                        Edge::Node(child)
                    }
                    other => {
                        return Err(FetchError::invalid(format!(
                            "lock file '{path}': input '{name}' is neither a node key nor a follows path: '{other}'"
                        )));
                    }
                };
                lf.nodes[id].inputs.insert(name.clone(), edge);
            }
        }
        Ok(lf)
    }

    /// `LockFile::toJSON`, also returning the key given to each node.
    pub fn to_json(&self) -> (Value, HashMap<NodeId, String>) {
        let mut nodes = serde_json::Map::new();
        let mut node_keys: HashMap<NodeId, String> = HashMap::new();
        let mut keys: HashSet<String> = HashSet::new();
        self.dump_node(
            "root".into(),
            LockFile::ROOT,
            &mut nodes,
            &mut node_keys,
            &mut keys,
        );
        let mut json = serde_json::Map::new();
        json.insert("version".into(), Value::from(7));
        json.insert(
            "root".into(),
            Value::String(node_keys[&LockFile::ROOT].clone()),
        );
        json.insert("nodes".into(), Value::Object(nodes));
        (Value::Object(json), node_keys)
    }

    fn dump_node(
        &self,
        mut key: String,
        id: NodeId,
        nodes: &mut serde_json::Map<String, Value>,
        node_keys: &mut HashMap<NodeId, String>,
        keys: &mut HashSet<String>,
    ) -> String {
        if let Some(k) = node_keys.get(&id) {
            return k.clone();
        }
        if !keys.insert(key.clone()) {
            let mut n = 2;
            loop {
                let k = format!("{key}_{n}");
                if keys.insert(k.clone()) {
                    key = k;
                    break;
                }
                n += 1;
            }
        }
        node_keys.insert(id, key.clone());
        let node = &self.nodes[id];
        let mut n = serde_json::Map::new();
        if !node.inputs.is_empty() {
            let mut inputs = serde_json::Map::new();
            for (name, edge) in &node.inputs {
                let v = match edge {
                    Edge::Node(child) => {
                        Value::String(self.dump_node(name.clone(), *child, nodes, node_keys, keys))
                    }
                    Edge::Follows(p) => {
                        Value::Array(p.iter().map(|x| Value::String(x.clone())).collect())
                    }
                };
                inputs.insert(name.clone(), v);
            }
            n.insert("inputs".into(), Value::Object(inputs));
        }
        if let Some(l) = &node.locked {
            n.insert("original".into(), attrs_to_json(&l.original.to_attrs()));
            let mut locked = l.locked.to_attrs();
            locked.remove("__final");
            n.insert("locked".into(), attrs_to_json(&locked));
            if !l.is_flake {
                n.insert("flake".into(), Value::Bool(false));
            }
            if let Some(p) = &l.parent {
                n.insert(
                    "parent".into(),
                    Value::Array(p.iter().map(|x| Value::String(x.clone())).collect()),
                );
            }
        }
        nodes.insert(key.clone(), Value::Object(n));
        key
    }

    /// The lock file text as Nix writes it to `flake.lock` (with the trailing newline).
    pub fn to_file_string(&self) -> String {
        let mut s = to_pretty(&self.to_json().0);
        s.push('\n');
        s
    }

    /// `LockFile::findInput`: follow a path of input names (and `follows` edges) from the root.
    pub fn find_input(&self, path: &[String]) -> Result<Option<NodeId>, FetchError> {
        let mut visited: Vec<InputPath> = Vec::new();
        self.do_find(path, &mut visited)
    }

    fn do_find(
        &self,
        path: &[String],
        visited: &mut Vec<InputPath>,
    ) -> Result<Option<NodeId>, FetchError> {
        if let Some(i) = visited.iter().position(|p| p.as_slice() == path) {
            let mut cycle: Vec<String> = visited[i..].iter().map(|p| print_input_path(p)).collect();
            cycle.push(print_input_path(path));
            return Err(FetchError::invalid(format!(
                "follow cycle detected: [{}]",
                cycle.join(" -> ")
            )));
        }
        visited.push(path.to_vec());
        let mut pos = LockFile::ROOT;
        for elem in path {
            match self.nodes[pos].inputs.get(elem) {
                Some(Edge::Node(n)) => pos = *n,
                Some(Edge::Follows(f)) => match self.do_find(f, visited)? {
                    Some(n) => pos = n,
                    None => return Ok(None),
                },
                None => return Ok(None),
            }
        }
        Ok(Some(pos))
    }

    /// `LockFile::getAllInputs`: every input path reachable from the root (each node's inputs
    /// are listed once, under the first path that reaches it).
    pub fn all_inputs(&self) -> BTreeMap<InputPath, Edge> {
        let mut done = HashSet::new();
        let mut res = BTreeMap::new();
        self.recurse_inputs(&[], LockFile::ROOT, &mut done, &mut res);
        res
    }

    fn recurse_inputs(
        &self,
        prefix: &[String],
        id: NodeId,
        done: &mut HashSet<NodeId>,
        res: &mut BTreeMap<InputPath, Edge>,
    ) {
        if !done.insert(id) {
            return;
        }
        for (name, edge) in &self.nodes[id].inputs {
            let mut p = prefix.to_vec();
            p.push(name.clone());
            res.entry(p.clone()).or_insert_with(|| edge.clone());
            if let Edge::Node(c) = edge {
                self.recurse_inputs(&p, *c, done, res);
            }
        }
    }

    /// `LockFile::check`: every `follows` must point at an existing input.
    pub fn check(&self) -> Result<(), FetchError> {
        for (path, edge) in self.all_inputs() {
            if let Edge::Follows(f) = edge
                && !f.is_empty()
                && self.find_input(&f)?.is_none()
            {
                return Err(FetchError::invalid(format!(
                    "input '{}' follows a non-existent input '{}'",
                    print_input_path(&path),
                    print_input_path(&f)
                )));
            }
        }
        Ok(())
    }

    /// `LockFile::isUnlocked`: the first reachable node that is not locked (or not final).
    pub fn is_unlocked(&self, settings: &InputSettings) -> Option<&FlakeRef> {
        let mut seen = HashSet::new();
        let mut stack = vec![LockFile::ROOT];
        let mut order = Vec::new();
        while let Some(id) = stack.pop() {
            if !seen.insert(id) {
                continue;
            }
            order.push(id);
            for e in self.nodes[id].inputs.values() {
                if let Edge::Node(c) = e {
                    stack.push(*c);
                }
            }
        }
        order
            .into_iter()
            .filter(|id| *id != LockFile::ROOT)
            .find_map(|id| {
                let l = self.nodes[id].locked.as_ref()?;
                let i = &l.locked.input;
                ((!i.is_considered_locked(settings) || !i.is_final) && i.is_relative().is_none())
                    .then_some(&l.locked)
            })
    }

    fn describe_edge(&self, e: &Edge) -> String {
        match e {
            Edge::Node(n) => match &self.nodes[*n].locked {
                Some(l) => {
                    let mut s = format!("'{}'", l.locked.display());
                    if let Some(t) = l.locked.input.last_modified() {
                        s.push_str(&format!(" ({})", format_date(t)));
                    }
                    s
                }
                None => "'root'".into(),
            },
            Edge::Follows(p) => format!("follows '{}'", print_input_path(p)),
        }
    }

    fn edges_equal(&self, a: &Edge, other: &LockFile, b: &Edge) -> bool {
        match (a, b) {
            (Edge::Node(x), Edge::Node(y)) => {
                self.nodes[*x].locked.as_ref().map(|l| &l.locked)
                    == other.nodes[*y].locked.as_ref().map(|l| &l.locked)
            }
            (Edge::Follows(x), Edge::Follows(y)) => x == y,
            _ => false,
        }
    }

    /// `LockFile::diff`: the "• Added/Removed/Updated input" report `nix flake lock` prints
    /// (with Nix's ANSI colours).
    pub fn diff(old: &LockFile, new: &LockFile) -> String {
        let old_flat: Vec<(InputPath, Edge)> = old.all_inputs().into_iter().collect();
        let new_flat: Vec<(InputPath, Edge)> = new.all_inputs().into_iter().collect();
        let (mut i, mut j) = (0, 0);
        let mut res = String::new();
        while i < old_flat.len() || j < new_flat.len() {
            if j < new_flat.len() && (i == old_flat.len() || old_flat[i].0 > new_flat[j].0) {
                res.push_str(&format!(
                    "• \x1b[32;1mAdded input '{}':\x1b[0m\n    {}\n",
                    print_input_path(&new_flat[j].0),
                    new.describe_edge(&new_flat[j].1)
                ));
                j += 1;
            } else if i < old_flat.len() && (j == new_flat.len() || old_flat[i].0 < new_flat[j].0) {
                res.push_str(&format!(
                    "• \x1b[31;1mRemoved input '{}'\x1b[0m\n",
                    print_input_path(&old_flat[i].0)
                ));
                i += 1;
            } else {
                if !old.edges_equal(&old_flat[i].1, new, &new_flat[j].1) {
                    res.push_str(&format!(
                        "• \x1b[1mUpdated input '{}':\x1b[0m\n    {}\n  → {}\n",
                        print_input_path(&old_flat[i].0),
                        old.describe_edge(&old_flat[i].1),
                        new.describe_edge(&new_flat[j].1)
                    ));
                }
                i += 1;
                j += 1;
            }
        }
        res
    }
}

/// `YYYY-MM-DD` (UTC) of a Unix time.
pub fn format_date(t: u64) -> String {
    let days = (t / 86400) as i64;
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!("{y:04}-{m:02}-{d:02}")
}

//! Store derivations: the `Derivation` type, its ATerm (`.drv`) form, and the hashes Nix
//! derives from it.
//!
//! This module exists so that `.drv` bytes, derivation paths and output paths are computed
//! exactly as Nix 2.26 does (`libstore/derivations.cc`). Invariants: `to_aterm` output parses
//! back (via [`Derivation::parse`]) to an equal value and is byte-identical to Nix's
//! `unparse`; [`hash_derivation_modulo`] hashes each input derivation at most once per
//! [`DrvHashCache`] (it is memoised by derivation path and walks the graph iteratively, so a
//! deep graph neither re-hashes shared inputs nor overflows the stack).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Mutex;

use thiserror::Error;

use crate::hash::{Hash, HashAlgo, HashError};
use crate::store_path::{
    ContentAddress, ContentAddressMethod, StoreDir, StorePath, StorePathError,
};

/// Errors from parsing, printing and hashing derivations.
#[derive(Debug, Error)]
pub enum DerivationError {
    #[error("expected string '{0}'")]
    Expected(String),
    #[error("unterminated string in derivation")]
    UnterminatedString,
    #[error("bad path '{0}' in derivation")]
    BadPath(String),
    #[error("derivation does not start with 'Derive' or 'DrvWithVersion'")]
    BadStart,
    #[error("dynamic derivations ('DrvWithVersion') are not supported")]
    DynamicDerivation,
    #[error("derivation contains invalid UTF-8")]
    NotUtf8,
    #[error("trailing data after derivation")]
    Trailing,
    #[error("impure derivation output should not specify output path")]
    ImpureWithPath,
    #[error("content-addressed derivation output should not specify output path")]
    FloatingWithPath,
    #[error(transparent)]
    Hash(#[from] HashError),
    #[error(transparent)]
    StorePath(#[from] StorePathError),
    #[error("must have at least one output")]
    NoOutputs,
    #[error("only one fixed output is allowed for now")]
    MultipleFixed,
    #[error("single fixed output must be named \"out\"")]
    FixedNotOut,
    #[error("all floating outputs must use the same hash algorithm")]
    FloatingAlgoMismatch,
    #[error("can't mix derivation output types")]
    MixedTypes,
    #[error("no hash for output '{output}' of derivation '{drv}'")]
    NoOutputHash { output: String, drv: String },
    #[error("cannot read derivation '{path}': {reason}")]
    Read { path: String, reason: String },
    #[error("derivation '{0}' has floating or impure outputs; its output paths are not known")]
    NotInputAddressable(String),
    #[error("invalid value '{0}' for 'outputHashMode' attribute")]
    InvalidHashMode(String),
    #[error(
        "experimental Nix feature '{0}' is disabled; add '--extra-experimental-features {0}' to enable it"
    )]
    ExperimentalFeature(&'static str),
    #[error("multiple outputs are not supported in fixed-output derivations")]
    FixedOutputMultipleOutputs,
}

/// Nix's handling of `outputHashMode` in `builtins.derivation`: `recursive`/`nar`, `flat`;
/// `text` and `git` need experimental features that flaked does not enable.
pub fn parse_output_hash_mode(mode: &str) -> Result<ContentAddressMethod, DerivationError> {
    match mode {
        "recursive" | "nar" => Ok(ContentAddressMethod::Recursive),
        "flat" => Ok(ContentAddressMethod::Flat),
        "text" => Err(DerivationError::ExperimentalFeature("dynamic-derivations")),
        "git" => Err(DerivationError::ExperimentalFeature("git-hashing")),
        other => Err(DerivationError::InvalidHashMode(other.to_owned())),
    }
}

/// The fixed output of a derivation from its `outputHash`, `outputHashAlgo` and
/// `outputHashMode` attributes, as `builtins.derivation` computes it. An unknown
/// `outputHashAlgo` is ignored like in Nix (the hash must then carry its own type); an empty
/// `outputHash` means the all-zero hash, and the returned flag says Nix would warn
/// `found empty hash, assuming '<sri>'`. `outputs` are the requested output names.
pub fn fixed_output(
    output_hash: &str,
    output_hash_algo: Option<&str>,
    output_hash_mode: Option<&str>,
    outputs: &[&str],
) -> Result<(DerivationOutput, bool), DerivationError> {
    let method = match output_hash_mode {
        Some(m) => parse_output_hash_mode(m)?,
        None => ContentAddressMethod::Flat,
    };
    if outputs != ["out"] {
        return Err(DerivationError::FixedOutputMultipleOutputs);
    }
    let algo = output_hash_algo.and_then(HashAlgo::parse_opt);
    let (hash, warn_empty) = Hash::parse_allow_empty(output_hash, algo)?;
    Ok((
        DerivationOutput::Fixed(ContentAddress { method, hash }),
        warn_empty,
    ))
}

/// One output of a derivation (Nix's `DerivationOutput` variants).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DerivationOutput {
    /// Path known up front, computed from the derivation's hash modulo.
    InputAddressed(StorePath),
    /// Fixed-output: the content address is given; the path follows from it.
    Fixed(ContentAddress),
    /// Content-addressed with unknown hash (`ca-derivations`).
    Floating {
        method: ContentAddressMethod,
        algo: HashAlgo,
    },
    /// Input-addressed with the path not yet computed (all paths `""`).
    Deferred,
    /// Impure output (`impure-derivations`).
    Impure {
        method: ContentAddressMethod,
        algo: HashAlgo,
    },
}

/// The kind of a derivation as a whole (Nix's `DerivationType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DerivationType {
    InputAddressed { deferred: bool },
    FixedOutput,
    Floating,
    Impure,
}

/// A store derivation.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Derivation {
    /// The derivation name (the `.drv` path's name without `.drv`); fixed-output paths depend on it.
    pub name: String,
    pub outputs: BTreeMap<String, DerivationOutput>,
    /// Input derivations and the outputs used from each.
    pub input_drvs: BTreeMap<StorePath, BTreeSet<String>>,
    pub input_srcs: BTreeSet<StorePath>,
    pub platform: String,
    pub builder: String,
    pub args: Vec<String>,
    pub env: BTreeMap<String, String>,
}

/// The result of hashing a derivation modulo fixed-output derivations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DrvHash {
    /// Per output: the hash that stands in for the derivation in its dependents.
    pub hashes: BTreeMap<String, Hash>,
    /// `Deferred` if a floating or impure derivation is involved.
    pub deferred: bool,
}

fn push_quoted_escaped(s: &mut String, v: &str) {
    s.push('"');
    for c in v.chars() {
        match c {
            '"' => s.push_str("\\\""),
            '\\' => s.push_str("\\\\"),
            '\n' => s.push_str("\\n"),
            '\r' => s.push_str("\\r"),
            '\t' => s.push_str("\\t"),
            c => s.push(c),
        }
    }
    s.push('"');
}

fn push_quoted(s: &mut String, v: &str) {
    s.push('"');
    s.push_str(v);
    s.push('"');
}

fn push_list<'a>(s: &mut String, items: impl Iterator<Item = &'a str>, escaped: bool) {
    s.push('[');
    for (i, v) in items.enumerate() {
        if i > 0 {
            s.push(',');
        }
        if escaped {
            push_quoted_escaped(s, v)
        } else {
            push_quoted(s, v)
        }
    }
    s.push(']');
}

impl Derivation {
    /// Nix's `BasicDerivation::type()`.
    pub fn drv_type(&self) -> Result<DerivationType, DerivationError> {
        let (mut ia, mut fixed, mut floating, mut deferred, mut impure) = (0, 0, 0, 0, 0);
        let mut floating_algo = None;
        for o in self.outputs.values() {
            match o {
                DerivationOutput::InputAddressed(_) => ia += 1,
                DerivationOutput::Fixed(_) => fixed += 1,
                DerivationOutput::Floating { algo, .. } => {
                    floating += 1;
                    match floating_algo {
                        None => floating_algo = Some(*algo),
                        Some(a) if a != *algo => return Err(DerivationError::FloatingAlgoMismatch),
                        Some(_) => {}
                    }
                }
                DerivationOutput::Deferred => deferred += 1,
                DerivationOutput::Impure { .. } => impure += 1,
            }
        }
        match (ia, fixed, floating, deferred, impure) {
            (0, 0, 0, 0, 0) => Err(DerivationError::NoOutputs),
            (_, 0, 0, 0, 0) => Ok(DerivationType::InputAddressed { deferred: false }),
            (0, _, 0, 0, 0) => {
                if fixed > 1 {
                    Err(DerivationError::MultipleFixed)
                } else if !self.outputs.contains_key("out") {
                    Err(DerivationError::FixedNotOut)
                } else {
                    Ok(DerivationType::FixedOutput)
                }
            }
            (0, 0, _, 0, 0) => Ok(DerivationType::Floating),
            (0, 0, 0, _, 0) => Ok(DerivationType::InputAddressed { deferred: true }),
            (0, 0, 0, 0, _) => Ok(DerivationType::Impure),
            _ => Err(DerivationError::MixedTypes),
        }
    }

    /// The store path of an output, when it is known statically.
    pub fn output_path(
        &self,
        store_dir: &StoreDir,
        output: &str,
    ) -> Result<Option<StorePath>, DerivationError> {
        match self.outputs.get(output) {
            Some(DerivationOutput::InputAddressed(p)) => Ok(Some(p.clone())),
            Some(DerivationOutput::Fixed(ca)) => {
                Ok(Some(fixed_output_path(store_dir, &self.name, output, ca)?))
            }
            _ => Ok(None),
        }
    }

    /// Nix's `unparse`: the ATerm text. `mask_outputs` blanks output paths and the env vars
    /// named after outputs; `actual_inputs` replaces the input derivations (hash modulo form).
    pub fn unparse(
        &self,
        store_dir: &StoreDir,
        mask_outputs: bool,
        actual_inputs: Option<&BTreeMap<String, BTreeSet<String>>>,
    ) -> Result<String, DerivationError> {
        let mut s = String::with_capacity(4096);
        s.push_str("Derive([");
        for (i, (name, out)) in self.outputs.iter().enumerate() {
            if i > 0 {
                s.push(',');
            }
            s.push('(');
            push_quoted(&mut s, name);
            let (path, algo, hash) = match out {
                DerivationOutput::InputAddressed(p) => (
                    if mask_outputs {
                        String::new()
                    } else {
                        store_dir.print(p)
                    },
                    String::new(),
                    String::new(),
                ),
                DerivationOutput::Fixed(ca) => (
                    if mask_outputs {
                        String::new()
                    } else {
                        store_dir.print(&fixed_output_path(store_dir, &self.name, name, ca)?)
                    },
                    ca.method_algo(),
                    ca.hash.to_base16(),
                ),
                DerivationOutput::Floating { method, algo } => (
                    String::new(),
                    format!("{}{}", method.prefix(), algo),
                    String::new(),
                ),
                DerivationOutput::Deferred => (String::new(), String::new(), String::new()),
                DerivationOutput::Impure { method, algo } => (
                    String::new(),
                    format!("{}{}", method.prefix(), algo),
                    "impure".to_owned(),
                ),
            };
            for v in [&path, &algo, &hash] {
                s.push(',');
                push_quoted(&mut s, v);
            }
            s.push(')');
        }
        s.push_str("],[");
        match actual_inputs {
            Some(inputs) => {
                for (i, (h, outs)) in inputs.iter().enumerate() {
                    if i > 0 {
                        s.push(',');
                    }
                    s.push('(');
                    push_quoted(&mut s, h);
                    s.push(',');
                    push_list(&mut s, outs.iter().map(String::as_str), false);
                    s.push(')');
                }
            }
            None => {
                for (i, (p, outs)) in self.input_drvs.iter().enumerate() {
                    if i > 0 {
                        s.push(',');
                    }
                    s.push('(');
                    push_quoted(&mut s, &store_dir.print(p));
                    s.push(',');
                    push_list(&mut s, outs.iter().map(String::as_str), false);
                    s.push(')');
                }
            }
        }
        s.push_str("],");
        // Printed paths sort like base names because they share the store directory prefix.
        let srcs: Vec<String> = self.input_srcs.iter().map(|p| store_dir.print(p)).collect();
        push_list(&mut s, srcs.iter().map(String::as_str), false);
        s.push(',');
        push_quoted(&mut s, &self.platform);
        s.push(',');
        push_quoted_escaped(&mut s, &self.builder);
        s.push(',');
        push_list(&mut s, self.args.iter().map(String::as_str), true);
        s.push_str(",[");
        for (i, (k, v)) in self.env.iter().enumerate() {
            if i > 0 {
                s.push(',');
            }
            s.push('(');
            push_quoted_escaped(&mut s, k);
            s.push(',');
            let v = if mask_outputs && self.outputs.contains_key(k) {
                ""
            } else {
                v.as_str()
            };
            push_quoted_escaped(&mut s, v);
            s.push(')');
        }
        s.push_str("])");
        Ok(s)
    }

    /// The `.drv` file contents.
    pub fn to_aterm(&self, store_dir: &StoreDir) -> Result<String, DerivationError> {
        self.unparse(store_dir, false, None)
    }

    /// References of the `.drv` file: input sources and input derivations.
    pub fn references(&self) -> BTreeSet<StorePath> {
        let mut r = self.input_srcs.clone();
        r.extend(self.input_drvs.keys().cloned());
        r
    }

    /// The store path of this derivation (a text path named `<name>.drv`).
    pub fn drv_path(&self, store_dir: &StoreDir) -> Result<StorePath, DerivationError> {
        let aterm = self.to_aterm(store_dir)?;
        Ok(store_dir.text_path_of(
            &format!("{}.drv", self.name),
            aterm.as_bytes(),
            &self.references(),
        )?)
    }

    /// Parse `.drv` contents. `name` is the derivation name (the `.drv` path's name minus `.drv`).
    pub fn parse(
        store_dir: &StoreDir,
        text: &[u8],
        name: &str,
    ) -> Result<Derivation, DerivationError> {
        let text = std::str::from_utf8(text).map_err(|_| DerivationError::NotUtf8)?;
        let mut p = Parser { s: text, store_dir };
        let mut drv = Derivation {
            name: name.to_owned(),
            ..Default::default()
        };
        p.expect("D")?;
        if p.s.starts_with("rvWithVersion(") {
            return Err(DerivationError::DynamicDerivation);
        }
        if !p.s.starts_with('e') {
            return Err(DerivationError::BadStart);
        }
        p.expect("erive(")?;
        p.expect("[")?;
        while !p.end_of_list() {
            p.expect("(")?;
            let id = p.string()?;
            p.expect(",")?;
            let path = p.string()?;
            p.expect(",")?;
            let algo = p.string()?;
            p.expect(",")?;
            let hash = p.string()?;
            p.expect(")")?;
            let out = parse_output(store_dir, &path, &algo, &hash)?;
            drv.outputs.insert(id, out);
        }
        p.expect(",[")?;
        while !p.end_of_list() {
            p.expect("(")?;
            let path = p.path()?;
            p.expect(",")?;
            let outs = p.strings(false)?;
            p.expect(")")?;
            drv.input_drvs.insert(store_dir.parse(&path)?, outs);
        }
        p.expect(",")?;
        for s in p.strings(true)? {
            drv.input_srcs.insert(store_dir.parse(&s)?);
        }
        p.expect(",")?;
        drv.platform = p.string()?;
        p.expect(",")?;
        drv.builder = p.string()?;
        p.expect(",[")?;
        while !p.end_of_list() {
            drv.args.push(p.string()?);
        }
        p.expect(",[")?;
        while !p.end_of_list() {
            p.expect("(")?;
            let k = p.string()?;
            p.expect(",")?;
            let v = p.string()?;
            p.expect(")")?;
            drv.env.insert(k, v);
        }
        p.expect(")")?;
        if !p.s.is_empty() {
            return Err(DerivationError::Trailing);
        }
        Ok(drv)
    }

    /// For an input-addressed derivation under construction (what `builtins.derivation` does):
    /// blank every output (deferred) and its env var, hash the masked derivation modulo, then
    /// set every output path and env var. Fixed-output derivations get `env.out` set to their
    /// path. Input derivations are looked up through `inputs`.
    pub fn fill_output_paths(
        &mut self,
        store_dir: &StoreDir,
        inputs: &dyn DrvSource,
        cache: &DrvHashCache,
    ) -> Result<(), DerivationError> {
        match self.drv_type()? {
            DerivationType::FixedOutput => {
                let names: Vec<String> = self.outputs.keys().cloned().collect();
                for name in names {
                    if let Some(p) = self.output_path(store_dir, &name)? {
                        self.env.insert(name, store_dir.print(&p));
                    }
                }
                Ok(())
            }
            DerivationType::InputAddressed { .. } => {
                let names: Vec<String> = self.outputs.keys().cloned().collect();
                for name in &names {
                    self.env.insert(name.clone(), String::new());
                    self.outputs
                        .insert(name.clone(), DerivationOutput::Deferred);
                }
                let h = hash_derivation_modulo(store_dir, self, true, inputs, cache)?;
                if h.deferred {
                    return Ok(());
                }
                for name in &names {
                    let hash = h
                        .hashes
                        .get(name)
                        .ok_or_else(|| DerivationError::NoOutputHash {
                            output: name.clone(),
                            drv: self.name.clone(),
                        })?;
                    let p = store_dir.make_output_path(name, hash, &self.name)?;
                    self.env.insert(name.clone(), store_dir.print(&p));
                    self.outputs
                        .insert(name.clone(), DerivationOutput::InputAddressed(p));
                }
                Ok(())
            }
            _ => Err(DerivationError::NotInputAddressable(self.name.clone())),
        }
    }
}

/// `builtins.derivation` without writing anything (read-only evaluation, or before a store
/// write): fills in the output paths, computes the `.drv` path and memoises the derivation's
/// hash modulo in `cache`, so dependents instantiated later with the same cache never need
/// to read this derivation back (Nix does the same "required in read-only mode" memo).
pub fn instantiate_pure(
    mut drv: Derivation,
    store_dir: &StoreDir,
    source: &dyn DrvSource,
    cache: &DrvHashCache,
) -> Result<(StorePath, Derivation), DerivationError> {
    drv.fill_output_paths(store_dir, source, cache)?;
    let path = drv.drv_path(store_dir)?;
    if cache.get(&path).is_none() {
        let h = hash_derivation_modulo(store_dir, &drv, false, source, cache)?;
        cache.insert(path.clone(), h);
    }
    Ok((path, drv))
}

/// The path of a fixed output (Nix's `CAFixed::path`).
pub fn fixed_output_path(
    store_dir: &StoreDir,
    drv_name: &str,
    output: &str,
    ca: &ContentAddress,
) -> Result<StorePath, StorePathError> {
    store_dir.make_path_from_ca(
        &crate::store_path::output_path_name(drv_name, output),
        ca,
        &Default::default(),
    )
}

fn parse_output(
    store_dir: &StoreDir,
    path: &str,
    algo: &str,
    hash: &str,
) -> Result<DerivationOutput, DerivationError> {
    let validate = |p: &str| {
        if p.starts_with('/') {
            Ok(())
        } else {
            Err(DerivationError::BadPath(p.to_owned()))
        }
    };
    if !algo.is_empty() {
        let (method, rest) = ContentAddressMethod::parse_prefix(algo);
        let algo: HashAlgo = rest.parse()?;
        if hash == "impure" {
            if !path.is_empty() {
                return Err(DerivationError::ImpureWithPath);
            }
            Ok(DerivationOutput::Impure { method, algo })
        } else if !hash.is_empty() {
            validate(path)?;
            let hash = Hash::parse_non_sri_unprefixed(hash, algo)?;
            Ok(DerivationOutput::Fixed(ContentAddress { method, hash }))
        } else {
            if !path.is_empty() {
                return Err(DerivationError::FloatingWithPath);
            }
            Ok(DerivationOutput::Floating { method, algo })
        }
    } else if path.is_empty() {
        Ok(DerivationOutput::Deferred)
    } else {
        validate(path)?;
        Ok(DerivationOutput::InputAddressed(store_dir.parse(path)?))
    }
}

struct Parser<'a> {
    s: &'a str,
    #[allow(dead_code)]
    store_dir: &'a StoreDir,
}

impl Parser<'_> {
    fn expect(&mut self, lit: &str) -> Result<(), DerivationError> {
        match self.s.strip_prefix(lit) {
            Some(r) => {
                self.s = r;
                Ok(())
            }
            None => Err(DerivationError::Expected(lit.to_owned())),
        }
    }

    fn string(&mut self) -> Result<String, DerivationError> {
        self.expect("\"")?;
        let b = self.s.as_bytes();
        let mut i = 0;
        let mut escaped = false;
        while i < b.len() && b[i] != b'"' {
            if b[i] == b'\\' {
                i += 1;
                if i == b.len() {
                    return Err(DerivationError::UnterminatedString);
                }
                escaped = true;
            }
            i += 1;
        }
        // Like Nix, a missing closing quote consumes to the end (the next expect then fails).
        let content = &self.s[..i];
        self.s = if i < b.len() { &self.s[i + 1..] } else { "" };
        if !escaped {
            return Ok(content.to_owned());
        }
        let mut out = String::with_capacity(content.len());
        let mut chars = content.chars();
        while let Some(c) = chars.next() {
            if c == '\\' {
                match chars.next() {
                    Some('n') => out.push('\n'),
                    Some('r') => out.push('\r'),
                    Some('t') => out.push('\t'),
                    Some(o) => out.push(o),
                    None => return Err(DerivationError::UnterminatedString),
                }
            } else {
                out.push(c);
            }
        }
        Ok(out)
    }

    fn path(&mut self) -> Result<String, DerivationError> {
        let s = self.string()?;
        if !s.starts_with('/') {
            return Err(DerivationError::BadPath(s));
        }
        Ok(s)
    }

    fn end_of_list(&mut self) -> bool {
        if let Some(r) = self.s.strip_prefix(',') {
            self.s = r;
            false
        } else if let Some(r) = self.s.strip_prefix(']') {
            self.s = r;
            true
        } else {
            false
        }
    }

    fn strings(&mut self, paths: bool) -> Result<BTreeSet<String>, DerivationError> {
        self.expect("[")?;
        let mut res = BTreeSet::new();
        while !self.end_of_list() {
            res.insert(if paths { self.path()? } else { self.string()? });
        }
        Ok(res)
    }
}

/// Where [`hash_derivation_modulo`] gets input derivations it has not hashed yet.
pub trait DrvSource {
    fn read_derivation(&self, path: &StorePath) -> Result<Derivation, DerivationError>;
}

/// A source with no derivations (every input must already be in the cache).
pub struct NoDrvSource;

impl DrvSource for NoDrvSource {
    fn read_derivation(&self, path: &StorePath) -> Result<Derivation, DerivationError> {
        Err(DerivationError::Read {
            path: path.to_string(),
            reason: "derivation not available".to_owned(),
        })
    }
}

/// In-memory derivations keyed by path (tests, and an evaluator that has not written them).
impl DrvSource for HashMap<StorePath, Derivation> {
    fn read_derivation(&self, path: &StorePath) -> Result<Derivation, DerivationError> {
        self.get(path)
            .cloned()
            .ok_or_else(|| DerivationError::Read {
                path: path.to_string(),
                reason: "derivation not available".to_owned(),
            })
    }
}

/// Memo of `hashDerivationModulo(drv, maskOutputs = false)` by derivation path (Nix's
/// `drvHashes`). Thread-safe; share one per store.
#[derive(Default)]
pub struct DrvHashCache {
    map: Mutex<HashMap<StorePath, DrvHash>>,
}

impl DrvHashCache {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn get(&self, path: &StorePath) -> Option<DrvHash> {
        self.map
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(path)
            .cloned()
    }

    /// Record the (unmasked) hash of a derivation whose path is known; `builtins.derivation`
    /// does this right after writing a `.drv`, so dependents never re-read it.
    pub fn insert(&self, path: StorePath, h: DrvHash) {
        self.map
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(path, h);
    }

    pub fn len(&self) -> usize {
        self.map.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Hash of a derivation whose inputs are all already hashed (no recursion).
fn hash_one(
    store_dir: &StoreDir,
    drv: &Derivation,
    mask_outputs: bool,
    cache: &DrvHashCache,
) -> Result<DrvHash, DerivationError> {
    match drv.drv_type()? {
        DerivationType::FixedOutput => {
            let mut hashes = BTreeMap::new();
            for (name, out) in &drv.outputs {
                if let DerivationOutput::Fixed(ca) = out {
                    let path = fixed_output_path(store_dir, &drv.name, name, ca)?;
                    let s = format!(
                        "fixed:out:{}:{}:{}",
                        ca.method_algo(),
                        ca.hash.to_base16(),
                        store_dir.print(&path)
                    );
                    hashes.insert(name.clone(), Hash::sha256(s.as_bytes()));
                }
            }
            return Ok(DrvHash {
                hashes,
                deferred: false,
            });
        }
        DerivationType::Impure => {
            // Nix uses a fixed dummy hash for impure outputs.
            let h = Hash::sha256(b"impure");
            let hashes = drv.outputs.keys().map(|k| (k.clone(), h)).collect();
            return Ok(DrvHash {
                hashes,
                deferred: true,
            });
        }
        _ => {}
    }
    let mut deferred = matches!(drv.drv_type()?, DerivationType::Floating);
    let mut inputs: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (path, outs) in &drv.input_drvs {
        let res = cache.get(path).ok_or_else(|| DerivationError::Read {
            path: store_dir.print(path),
            reason: "input derivation was not hashed".to_owned(),
        })?;
        deferred |= res.deferred;
        for o in outs {
            let h = res
                .hashes
                .get(o)
                .ok_or_else(|| DerivationError::NoOutputHash {
                    output: o.clone(),
                    drv: drv.name.clone(),
                })?;
            inputs.entry(h.to_base16()).or_default().insert(o.clone());
        }
    }
    let h = Hash::sha256(
        drv.unparse(store_dir, mask_outputs, Some(&inputs))?
            .as_bytes(),
    );
    Ok(DrvHash {
        hashes: drv.outputs.keys().map(|k| (k.clone(), h)).collect(),
        deferred,
    })
}

/// Nix's `hashDerivationModulo`. Input derivations missing from `cache` are read through
/// `source`, hashed (unmasked) and memoised, iteratively in post-order.
pub fn hash_derivation_modulo(
    store_dir: &StoreDir,
    drv: &Derivation,
    mask_outputs: bool,
    source: &dyn DrvSource,
    cache: &DrvHashCache,
) -> Result<DrvHash, DerivationError> {
    // Iterative post-order walk: `None` = not yet expanded, `Some(drv)` = inputs pushed.
    let mut stack: Vec<(StorePath, Option<Derivation>)> = Vec::new();
    let mut in_progress: BTreeSet<StorePath> = BTreeSet::new();
    for p in drv.input_drvs.keys() {
        if cache.get(p).is_none() {
            stack.push((p.clone(), None));
        }
    }
    while let Some((path, state)) = stack.pop() {
        match state {
            None => {
                if cache.get(&path).is_some() {
                    continue;
                }
                let d = source.read_derivation(&path)?;
                let missing: Vec<StorePath> = d
                    .input_drvs
                    .keys()
                    .filter(|p| cache.get(p).is_none())
                    .cloned()
                    .collect();
                in_progress.insert(path.clone());
                stack.push((path.clone(), Some(d)));
                for p in missing {
                    if in_progress.contains(&p) {
                        return Err(DerivationError::Read {
                            path: store_dir.print(&p),
                            reason: format!(
                                "derivation graph has a cycle through '{}'",
                                store_dir.print(&path)
                            ),
                        });
                    }
                    stack.push((p, None));
                }
            }
            Some(d) => {
                in_progress.remove(&path);
                if cache.get(&path).is_none() {
                    let h = hash_one(store_dir, &d, false, cache)?;
                    tracing::trace!(drv = %path, "hashed derivation modulo");
                    cache.insert(path, h);
                }
            }
        }
    }
    hash_one(store_dir, drv, mask_outputs, cache)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_round_trips() {
        let sd = StoreDir::default();
        let mut d = Derivation {
            name: "x".into(),
            platform: "x86_64-linux".into(),
            builder: "/bin/sh".into(),
            ..Default::default()
        };
        d.outputs.insert("out".into(), DerivationOutput::Deferred);
        d.args = vec!["-c".into(), "echo \"hi\"\n\t\\ \r $x".into()];
        d.env.insert("a\"b".into(), "é\n".into());
        let t = d.to_aterm(&sd).expect("print");
        assert!(t.contains(r#""echo \"hi\"\n\t\\ \r $x""#));
        assert_eq!(Derivation::parse(&sd, t.as_bytes(), "x").expect("parse"), d);
    }

    #[test]
    fn fixed_output_attrs() {
        let (o, warn) = fixed_output(
            "sha256-ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa0=",
            None,
            Some("recursive"),
            &["out"],
        )
        .expect("valid");
        assert!(!warn);
        assert!(matches!(
            o,
            DerivationOutput::Fixed(ContentAddress {
                method: ContentAddressMethod::Recursive,
                ..
            })
        ));
        let (_, warn) = fixed_output("", Some("sha256"), None, &["out"]).expect("empty allowed");
        assert!(warn);
        assert_eq!(
            fixed_output("x", None, Some("bogus"), &["out"])
                .expect_err("mode")
                .to_string(),
            "invalid value 'bogus' for 'outputHashMode' attribute"
        );
        assert!(matches!(
            fixed_output("", Some("sha256"), None, &["out", "dev"]),
            Err(DerivationError::FixedOutputMultipleOutputs)
        ));
        assert_eq!(
            fixed_output("abc", Some("nope"), None, &["out"])
                .expect_err("no algo")
                .to_string(),
            "hash 'abc' does not include a type, nor is the type otherwise known from context"
        );
    }

    #[test]
    fn parse_errors() {
        let sd = StoreDir::default();
        assert_eq!(
            Derivation::parse(&sd, b"Xerive(", "x")
                .expect_err("bad")
                .to_string(),
            "expected string 'D'"
        );
        assert!(
            Derivation::parse(
                &sd,
                b"Derive([(\"out\",\"rel\",\"\",\"\")],[],[],\"s\",\"b\",[],[])",
                "x"
            )
            .is_err()
        );
        assert!(Derivation::parse(&sd, b"Derive([],[],[],\"s\",\"b\",[],[\"", "x").is_err());
    }
}

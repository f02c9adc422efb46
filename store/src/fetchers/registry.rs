//! Flake registries (JSON version 2): the tables that map indirect references (`nixpkgs`,
//! `nixpkgs/branch`) to direct inputs, and the lookup through the flag (command line), user,
//! system and global registries, in that order.
//!
//! Invariant: resolution follows Nix's rules — an `exact` entry matches only an identical
//! input; otherwise an entry matches when it equals the input with `ref`/`rev` dropped, and the
//! input's `ref`/`rev` are carried over to the target unless the entry's `from` fixes them.

use std::path::{Path, PathBuf};

use serde_json::Value;

use super::FetchError;
use super::attrs::{Attr, Attrs, attrs_to_json, json_to_attrs};
use super::input::Input;
use super::json::to_pretty;

/// Which registry an entry comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegistryType {
    Flag,
    User,
    System,
    Global,
    Custom,
}

/// One `from → to` mapping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryEntry {
    pub from: Input,
    pub to: Input,
    /// Attributes of `to` that are not input attributes (only `dir`).
    pub extra_attrs: Attrs,
    pub exact: bool,
}

/// One registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registry {
    pub kind: RegistryType,
    pub entries: Vec<RegistryEntry>,
}

impl Registry {
    /// An empty registry.
    pub fn new(kind: RegistryType) -> Registry {
        Registry {
            kind,
            entries: Vec::new(),
        }
    }

    /// Parse registry JSON text.
    pub fn parse(text: &str, path: &str, kind: RegistryType) -> Result<Registry, FetchError> {
        let json: Value = serde_json::from_str(text).map_err(|e| {
            FetchError::invalid(format!("cannot parse flake registry '{path}': {e}"))
        })?;
        let version = json.get("version").and_then(Value::as_i64).unwrap_or(0);
        if version != 2 {
            return Err(FetchError::invalid(format!(
                "flake registry '{path}' has unsupported version {version}"
            )));
        }
        let mut reg = Registry::new(kind);
        let flakes = match json.get("flakes") {
            None | Some(Value::Null) => return Ok(reg),
            Some(Value::Array(a)) => a,
            Some(_) => {
                return Err(FetchError::invalid(format!(
                    "flake registry '{path}': 'flakes' is not a list"
                )));
            }
        };
        for e in flakes {
            let missing = |k: &str| {
                FetchError::invalid(format!("flake registry '{path}': entry lacks '{k}'"))
            };
            let mut to = json_to_attrs(e.get("to").ok_or_else(|| missing("to"))?)?;
            let mut extra_attrs = Attrs::new();
            if let Some(d) = to.remove("dir") {
                extra_attrs.insert("dir".into(), d);
            }
            let from = json_to_attrs(e.get("from").ok_or_else(|| missing("from"))?)?;
            reg.entries.push(RegistryEntry {
                from: Input::from_attrs(&from)?,
                to: Input::from_attrs(&to)?,
                extra_attrs,
                exact: e.get("exact").and_then(Value::as_bool).unwrap_or(false),
            });
        }
        Ok(reg)
    }

    /// `Registry::read`: a missing file is an empty registry; a broken one is an empty registry
    /// plus a warning (as in Nix).
    pub fn read(path: &Path, kind: RegistryType) -> Registry {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Registry::new(kind),
            Err(e) => {
                tracing::warn!("cannot read flake registry '{}': {e}", path.display());
                return Registry::new(kind);
            }
        };
        match Registry::parse(&text, &path.display().to_string(), kind) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!("cannot read flake registry '{}': {e}", path.display());
                Registry::new(kind)
            }
        }
    }

    /// The JSON text Nix writes (`dump(2)`, no trailing newline).
    pub fn to_json_string(&self) -> String {
        let arr: Vec<Value> = self
            .entries
            .iter()
            .map(|e| {
                let mut o = serde_json::Map::new();
                o.insert("from".into(), attrs_to_json(&e.from.to_attrs()));
                let mut to = e.to.to_attrs();
                for (k, v) in &e.extra_attrs {
                    to.insert(k.clone(), v.clone());
                }
                o.insert("to".into(), attrs_to_json(&to));
                if e.exact {
                    o.insert("exact".into(), Value::Bool(true));
                }
                Value::Object(o)
            })
            .collect();
        let mut j = serde_json::Map::new();
        j.insert("version".into(), Value::from(2));
        j.insert("flakes".into(), Value::Array(arr));
        to_pretty(&Value::Object(j))
    }

    /// `Registry::write` (creates parent directories; atomic rename).
    pub fn write(&self, path: &Path) -> Result<(), FetchError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| FetchError::io(format!("creating '{}'", dir.display()), e))?;
        }
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, self.to_json_string())
            .map_err(|e| FetchError::io(format!("writing '{}'", tmp.display()), e))?;
        std::fs::rename(&tmp, path)
            .map_err(|e| FetchError::io(format!("renaming to '{}'", path.display()), e))
    }

    /// `Registry::add`.
    pub fn add(&mut self, from: Input, to: Input, extra_attrs: Attrs) {
        self.entries.push(RegistryEntry {
            from,
            to,
            extra_attrs,
            exact: false,
        });
    }

    /// `Registry::remove`: drop every entry whose `from` equals `input`.
    pub fn remove(&mut self, input: &Input) {
        self.entries.retain(|e| &e.from != input);
    }
}

/// The registries consulted for a lookup, in priority order.
#[derive(Debug, Clone, Default)]
pub struct Registries {
    pub registries: Vec<Registry>,
}

impl Registries {
    /// Flag (command-line overrides), user (`~/.config/nix/registry.json`), system
    /// (`/etc/nix/registry.json`) and global (a local file; an empty path disables it). We
    /// never download the global registry: callers pass a file.
    pub fn load(
        flag: Registry,
        user_path: Option<&Path>,
        system_path: Option<&Path>,
        global_path: Option<&Path>,
    ) -> Registries {
        let mut registries = vec![flag];
        if let Some(p) = user_path {
            registries.push(Registry::read(p, RegistryType::User));
        }
        if let Some(p) = system_path {
            registries.push(Registry::read(p, RegistryType::System));
        }
        if let Some(p) = global_path {
            registries.push(Registry::read(p, RegistryType::Global));
        }
        Registries { registries }
    }

    /// The user registry path Nix uses: `$XDG_CONFIG_HOME/nix/registry.json` or
    /// `$HOME/.config/nix/registry.json`.
    pub fn user_registry_path(env: &dyn Fn(&str) -> Option<String>) -> Option<PathBuf> {
        if let Some(x) = env("XDG_CONFIG_HOME") {
            return Some(PathBuf::from(x).join("nix/registry.json"));
        }
        env("HOME").map(|h| PathBuf::from(h).join(".config/nix/registry.json"))
    }

    /// `lookupInRegistries`: resolve an indirect input to a direct one, returning the extra
    /// attributes (`dir`) of the entry that matched last.
    pub fn lookup(
        &self,
        input: &Input,
        filter: &dyn Fn(RegistryType) -> bool,
    ) -> Result<(Input, Attrs), FetchError> {
        let mut extra = Attrs::new();
        let mut cur = input.clone();
        let mut n = 0;
        'restart: loop {
            n += 1;
            if n > 100 {
                return Err(FetchError::invalid(format!(
                    "cycle detected in flake registry for '{}'",
                    cur.display()
                )));
            }
            for reg in &self.registries {
                if !filter(reg.kind) {
                    continue;
                }
                for e in &reg.entries {
                    if e.exact {
                        if e.from == cur {
                            cur = e.to.clone();
                            extra = e.extra_attrs.clone();
                            continue 'restart;
                        }
                    } else if e.from.contains(&cur) {
                        let r = if e.from.ref_().is_none() {
                            cur.ref_()
                        } else {
                            None
                        };
                        let rev = if e.from.rev().is_none() {
                            cur.rev_hash()?
                        } else {
                            None
                        };
                        cur = e.to.apply_overrides(r, rev.as_ref())?;
                        extra = e.extra_attrs.clone();
                        continue 'restart;
                    }
                }
            }
            break;
        }
        if !cur.is_direct() {
            return Err(FetchError::invalid(format!(
                "cannot find flake '{}' in the flake registries",
                cur.display()
            )));
        }
        Ok((cur, extra))
    }

    /// `FlakeRef::resolve`: registry lookup keeping/overriding `dir`.
    pub fn resolve(
        &self,
        r: &super::FlakeRef,
        filter: &dyn Fn(RegistryType) -> bool,
    ) -> Result<super::FlakeRef, FetchError> {
        let (input, extra) = self.lookup(&r.input, filter)?;
        let subdir = match extra.get("dir") {
            Some(Attr::String(d)) => d.clone(),
            _ => r.subdir.clone(),
        };
        Ok(super::FlakeRef { input, subdir })
    }
}

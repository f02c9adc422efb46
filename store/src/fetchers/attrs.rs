//! Fetcher attributes: the untyped `{ name = string | int | bool; }` maps that flake.lock
//! `locked`/`original` objects, registry entries and `builtins.fetchTree` arguments are made of.
//!
//! Invariant: an [`Attrs`] is ordered by byte-wise key order (like Nix's `std::map`), so every
//! rendering of it (JSON, URL query) comes out in Nix's order without further sorting.

use std::collections::BTreeMap;

use super::FetchError;

/// One attribute value. Nix's `Attr` is `std::variant<std::string, uint64_t, Explicit<bool>>`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Attr {
    String(String),
    Int(u64),
    Bool(bool),
}

impl From<&str> for Attr {
    fn from(s: &str) -> Attr {
        Attr::String(s.to_owned())
    }
}
impl From<String> for Attr {
    fn from(s: String) -> Attr {
        Attr::String(s)
    }
}
impl From<u64> for Attr {
    fn from(n: u64) -> Attr {
        Attr::Int(n)
    }
}
impl From<bool> for Attr {
    fn from(b: bool) -> Attr {
        Attr::Bool(b)
    }
}

/// A sorted attribute map.
pub type Attrs = BTreeMap<String, Attr>;

/// Nix's `jsonToAttrs`: numbers become integers, strings strings, Booleans Booleans; anything
/// else is an error.
pub fn json_to_attrs(json: &serde_json::Value) -> Result<Attrs, FetchError> {
    let obj = json.as_object().ok_or_else(|| {
        FetchError::invalid(format!(
            "expected a JSON object for input attributes but got '{json}'"
        ))
    })?;
    let mut attrs = Attrs::new();
    for (k, v) in obj {
        let a = match v {
            serde_json::Value::Number(n) => match n.as_u64() {
                Some(n) => Attr::Int(n),
                None => {
                    return Err(FetchError::invalid(format!(
                        "input attribute '{k}' has unsupported number {n} in lock file"
                    )));
                }
            },
            serde_json::Value::String(s) => Attr::String(s.clone()),
            serde_json::Value::Bool(b) => Attr::Bool(*b),
            _ => {
                return Err(FetchError::invalid(
                    "unsupported input attribute type in lock file",
                ));
            }
        };
        attrs.insert(k.clone(), a);
    }
    Ok(attrs)
}

/// Nix's `attrsToJSON` (keys sorted).
pub fn attrs_to_json(attrs: &Attrs) -> serde_json::Value {
    let mut m = serde_json::Map::new();
    for (k, v) in attrs {
        let j = match v {
            Attr::String(s) => serde_json::Value::String(s.clone()),
            Attr::Int(n) => serde_json::Value::from(*n),
            Attr::Bool(b) => serde_json::Value::Bool(*b),
        };
        m.insert(k.clone(), j);
    }
    serde_json::Value::Object(m)
}

/// `attrsToJSON(attrs).dump()`: compact JSON with sorted keys, as Nix prints in messages.
pub fn attrs_to_json_string(attrs: &Attrs) -> String {
    super::json::to_compact(&attrs_to_json(attrs))
}

/// Nix's `attrsToQuery`: integers in decimal, Booleans as `1`/`0`.
pub fn attrs_to_query(attrs: &Attrs) -> BTreeMap<String, String> {
    attrs
        .iter()
        .map(|(k, v)| {
            let s = match v {
                Attr::String(s) => s.clone(),
                Attr::Int(n) => n.to_string(),
                Attr::Bool(b) => if *b { "1" } else { "0" }.to_owned(),
            };
            (k.clone(), s)
        })
        .collect()
}

/// `maybeGetStrAttr`.
pub fn maybe_get_str(attrs: &Attrs, name: &str) -> Result<Option<String>, FetchError> {
    match attrs.get(name) {
        None => Ok(None),
        Some(Attr::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(FetchError::invalid(format!(
            "input attribute '{name}' is not a string {}",
            attrs_to_json_string(attrs)
        ))),
    }
}

/// `getStrAttr`.
pub fn get_str(attrs: &Attrs, name: &str) -> Result<String, FetchError> {
    maybe_get_str(attrs, name)?
        .ok_or_else(|| FetchError::invalid(format!("input attribute '{name}' is missing")))
}

/// `maybeGetIntAttr`.
pub fn maybe_get_int(attrs: &Attrs, name: &str) -> Result<Option<u64>, FetchError> {
    match attrs.get(name) {
        None => Ok(None),
        Some(Attr::Int(n)) => Ok(Some(*n)),
        Some(_) => Err(FetchError::invalid(format!(
            "input attribute '{name}' is not an integer"
        ))),
    }
}

/// `maybeGetBoolAttr`.
pub fn maybe_get_bool(attrs: &Attrs, name: &str) -> Result<Option<bool>, FetchError> {
    match attrs.get(name) {
        None => Ok(None),
        Some(Attr::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(FetchError::invalid(format!(
            "input attribute '{name}' is not a Boolean"
        ))),
    }
}

//! The on-disk layout of an eval cache database and the encoding of cached values.
//!
//! One table, modelled on Nix's eval cache: every row is one attribute, keyed by
//! its parent row and its name (`unique(parent, name)`; the root is `(0, "")`).
//! [`CachedValue`] is the domain type; [`encode`] / [`decode`] map it to the
//! `(type, value, context)` columns.
//!
//! Invariant: `decode(encode(v)) == v` for every value, and a row that does not
//! decode (unknown type, malformed payload) is reported as an error, never
//! silently read as some other value. The layout is versioned by
//! `PRAGMA user_version` = [`SCHEMA_VERSION`]; a database with any other version
//! is discarded and rebuilt.

use std::sync::Arc;

use crate::error::CacheError;

/// Version of the table layout and value encoding, stored in `user_version`.
/// Bump it whenever either changes: old databases are then rebuilt, and it is
/// also hashed into every fingerprint.
pub const SCHEMA_VERSION: u32 = 1;

/// Creates the schema in an empty database.
pub(crate) const CREATE: &str = "
create table if not exists Attributes (
    id      integer primary key,
    parent  integer not null,
    name    text not null,
    type    integer not null,
    value   text,
    context text,
    unique (parent, name)
);
";

/// Columns the `Attributes` table must have, in order, for a database to be usable.
pub(crate) const COLUMNS: [&str; 6] = ["id", "parent", "name", "type", "value", "context"];

/// Row type codes. 0–8 follow Nix's `AttrType` numbering; 9+ are ours.
pub(crate) mod code {
    pub const PLACEHOLDER: i64 = 0;
    pub const ATTRS: i64 = 1;
    pub const STRING: i64 = 2;
    pub const MISSING: i64 = 3;
    pub const MISC: i64 = 4;
    pub const FAILED: i64 = 5;
    pub const BOOL: i64 = 6;
    pub const LIST_OF_STRINGS: i64 = 7;
    pub const INT: i64 = 8;
    pub const FLOAT: i64 = 9;
    pub const PATH: i64 = 10;
    pub const DERIVATION: i64 = 11;
}

/// What the cache knows about one attribute.
#[derive(Clone, Debug, PartialEq)]
pub enum CachedValue {
    /// The attribute exists but its value has not been cached yet. When it is an
    /// attribute set, its children may be cached individually (each child lookup
    /// then answers hit / missing / unknown).
    Placeholder,
    /// An attribute set whose complete list of names is known (stored sorted
    /// and deduplicated; shared, so cloning a large set is cheap). Children not
    /// yet cached read as [`CachedValue::Placeholder`]; names not in the list
    /// are definitively missing.
    Attrs(Arc<[String]>),
    /// A string with its context (store-path context elements as the evaluator
    /// renders them, e.g. `/nix/store/…`, `!out!/nix/store/….drv`, `=/nix/store/….drv`).
    String {
        /// The string contents.
        value: String,
        /// Context elements (empty for a plain string).
        context: Vec<String>,
    },
    /// A path value (absolute path as the evaluator prints it).
    Path(String),
    /// A Boolean.
    Bool(bool),
    /// A 64-bit integer.
    Int(i64),
    /// A float, stored bit-exactly (Nix 2.26 caches floats as "misc"; we can do better).
    Float(f64),
    /// A list whose elements are all strings without context.
    ListOfStrings(Vec<String>),
    /// An attribute set known to be a derivation (`type = "derivation"`). Its
    /// children (`drvPath`, `outPath`, `name`, `type`, …) are ordinary child rows,
    /// looked up like the children of a [`CachedValue::Placeholder`].
    Derivation,
    /// A negative answer: the parent is an attribute set without this name.
    Missing,
    /// Evaluating the attribute failed.
    Failed {
        /// The error message (first line, without the `error:` prefix).
        message: String,
        /// The full diagnostic as the evaluator would render it (may be empty
        /// when the evaluator prefers to re-evaluate to reproduce the error).
        rendered: String,
    },
    /// The value exists but is not cacheable (function, list of non-strings, …).
    Misc,
}

impl CachedValue {
    /// The row type code of this value.
    pub(crate) fn code(&self) -> i64 {
        match self {
            CachedValue::Placeholder => code::PLACEHOLDER,
            CachedValue::Attrs(_) => code::ATTRS,
            CachedValue::String { .. } => code::STRING,
            CachedValue::Missing => code::MISSING,
            CachedValue::Misc => code::MISC,
            CachedValue::Failed { .. } => code::FAILED,
            CachedValue::Bool(_) => code::BOOL,
            CachedValue::ListOfStrings(_) => code::LIST_OF_STRINGS,
            CachedValue::Int(_) => code::INT,
            CachedValue::Float(_) => code::FLOAT,
            CachedValue::Path(_) => code::PATH,
            CachedValue::Derivation => code::DERIVATION,
        }
    }

    /// True for a value whose children are looked up row by row (placeholder
    /// attribute sets and derivations).
    pub fn is_partial_attrs(&self) -> bool {
        matches!(self, CachedValue::Placeholder | CachedValue::Derivation)
    }

    /// A short name of the kind, for logs and errors.
    pub fn kind(&self) -> &'static str {
        match self {
            CachedValue::Placeholder => "placeholder",
            CachedValue::Attrs(_) => "attrs",
            CachedValue::String { .. } => "string",
            CachedValue::Missing => "missing",
            CachedValue::Misc => "misc",
            CachedValue::Failed { .. } => "failed",
            CachedValue::Bool(_) => "bool",
            CachedValue::ListOfStrings(_) => "list-of-strings",
            CachedValue::Int(_) => "int",
            CachedValue::Float(_) => "float",
            CachedValue::Path(_) => "path",
            CachedValue::Derivation => "derivation",
        }
    }
}

/// The `(type, value, context)` columns of a row.
pub(crate) struct Encoded {
    pub code: i64,
    pub value: Option<String>,
    pub context: Option<String>,
}

fn json_list(items: &[String]) -> String {
    serde_json::Value::Array(
        items
            .iter()
            .cloned()
            .map(serde_json::Value::String)
            .collect(),
    )
    .to_string()
}

fn parse_json_list(s: &str) -> Option<Vec<String>> {
    match serde_json::from_str::<serde_json::Value>(s).ok()? {
        serde_json::Value::Array(items) => items
            .into_iter()
            .map(|v| match v {
                serde_json::Value::String(s) => Some(s),
                _ => None,
            })
            .collect(),
        _ => None,
    }
}

/// Encodes a value into its row columns.
pub(crate) fn encode(v: &CachedValue) -> Encoded {
    let (value, context) = match v {
        CachedValue::Placeholder
        | CachedValue::Missing
        | CachedValue::Misc
        | CachedValue::Derivation => (None, None),
        CachedValue::Attrs(names) => (Some(json_list(names)), None),
        CachedValue::String { value, context } => (
            Some(value.clone()),
            (!context.is_empty()).then(|| json_list(context)),
        ),
        CachedValue::Path(p) => (Some(p.clone()), None),
        CachedValue::Bool(b) => (Some(if *b { "1" } else { "0" }.to_owned()), None),
        CachedValue::Int(i) => (Some(i.to_string()), None),
        // Rust's float Debug form is the shortest text that parses back to the
        // same value (including -0.0, inf and NaN).
        CachedValue::Float(f) => (Some(format!("{f:?}")), None),
        CachedValue::ListOfStrings(items) => (Some(json_list(items)), None),
        CachedValue::Failed { message, rendered } => {
            (Some(message.clone()), Some(rendered.clone()))
        }
    };
    Encoded {
        code: v.code(),
        value,
        context,
    }
}

/// Decodes row columns; `Err` carries the offending row for the log.
pub(crate) fn decode(
    code: i64,
    value: Option<String>,
    context: Option<String>,
) -> Result<CachedValue, CacheError> {
    let bad = |why: &str, value: &Option<String>| CacheError::BadRow {
        code,
        value: value.clone().unwrap_or_default(),
        reason: why.to_owned(),
    };
    let need = |value: Option<String>| value.ok_or_else(|| bad("value is NULL", &None));
    Ok(match code {
        code::PLACEHOLDER => CachedValue::Placeholder,
        code::MISSING => CachedValue::Missing,
        code::MISC => CachedValue::Misc,
        code::DERIVATION => CachedValue::Derivation,
        code::ATTRS => {
            let v = need(value)?;
            let names = parse_json_list(&v)
                .ok_or_else(|| bad("names are not a JSON list of strings", &Some(v.clone())))?;
            CachedValue::Attrs(names.into())
        }
        code::STRING => {
            let value = need(value)?;
            let context = match context {
                None => Vec::new(),
                Some(c) => parse_json_list(&c).ok_or_else(|| {
                    bad("context is not a JSON list of strings", &Some(c.clone()))
                })?,
            };
            CachedValue::String { value, context }
        }
        code::PATH => CachedValue::Path(need(value)?),
        code::BOOL => match need(value)?.as_str() {
            "1" => CachedValue::Bool(true),
            "0" => CachedValue::Bool(false),
            other => return Err(bad("bool is not 0/1", &Some(other.to_owned()))),
        },
        code::INT => {
            let v = need(value)?;
            CachedValue::Int(
                v.parse()
                    .map_err(|_| bad("not an integer", &Some(v.clone())))?,
            )
        }
        code::FLOAT => {
            let v = need(value)?;
            CachedValue::Float(
                v.parse()
                    .map_err(|_| bad("not a float", &Some(v.clone())))?,
            )
        }
        code::LIST_OF_STRINGS => {
            let v = need(value)?;
            CachedValue::ListOfStrings(
                parse_json_list(&v)
                    .ok_or_else(|| bad("not a JSON list of strings", &Some(v.clone())))?,
            )
        }
        code::FAILED => CachedValue::Failed {
            message: need(value)?,
            rendered: context.unwrap_or_default(),
        },
        _ => return Err(bad("unknown type code", &value)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(v: CachedValue) {
        let e = encode(&v);
        let back = decode(e.code, e.value, e.context).expect("decodes");
        match (&v, &back) {
            (CachedValue::Float(a), CachedValue::Float(b)) => assert_eq!(a.to_bits(), b.to_bits()),
            _ => assert_eq!(v, back),
        }
    }

    #[test]
    fn all_kinds_roundtrip() {
        for v in [
            CachedValue::Placeholder,
            CachedValue::Attrs(Arc::from(vec![])),
            CachedValue::Attrs(Arc::from(vec![
                "a".into(),
                "b\tc".into(),
                "\"q\"".into(),
                "ü".into(),
            ])),
            CachedValue::String {
                value: String::new(),
                context: vec![],
            },
            CachedValue::String {
                value: "x\ny\0z".into(),
                context: vec!["!out!/nix/store/aaa-x.drv".into(), "/nix/store/b c".into()],
            },
            CachedValue::Path("/tmp/x y".into()),
            CachedValue::Bool(true),
            CachedValue::Bool(false),
            CachedValue::Int(i64::MIN),
            CachedValue::Int(i64::MAX),
            CachedValue::Float(0.1),
            CachedValue::Float(-0.0),
            CachedValue::Float(f64::INFINITY),
            CachedValue::Float(1e300),
            CachedValue::ListOfStrings(vec![]),
            CachedValue::ListOfStrings(vec!["".into(), "a\tb".into(), "".into()]),
            CachedValue::Derivation,
            CachedValue::Missing,
            CachedValue::Failed {
                message: "boom".into(),
                rendered: "error: boom\n".into(),
            },
            CachedValue::Misc,
        ] {
            roundtrip(v);
        }
        let e = encode(&CachedValue::Float(f64::NAN));
        assert!(
            matches!(decode(e.code, e.value, e.context), Ok(CachedValue::Float(f)) if f.is_nan())
        );
    }

    #[test]
    fn malformed_rows_are_errors() {
        assert!(decode(99, None, None).is_err());
        assert!(decode(code::INT, Some("x".into()), None).is_err());
        assert!(decode(code::INT, None, None).is_err());
        assert!(decode(code::BOOL, Some("2".into()), None).is_err());
        assert!(decode(code::ATTRS, Some("[1]".into()), None).is_err());
        assert!(decode(code::STRING, Some("s".into()), Some("{".into())).is_err());
    }
}

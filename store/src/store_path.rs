//! Store paths and how Nix computes them.
//!
//! A store path is `<store dir>/<32 nix32 chars>-<name>`; the hash part is a 160-bit digest of
//! a fingerprint that includes the store directory, so the store directory is a value
//! ([`StoreDir`]) rather than a constant. This module keeps the invariant that a [`StorePath`]
//! value always has a valid hash part and a valid name (Nix's `checkName` rules), and that every
//! path it computes is byte-identical to Nix 2.26's `makeStorePath` family.

use std::collections::BTreeSet;
use std::fmt;

use thiserror::Error;

use crate::hash::{Hash, HashAlgo};
use crate::nixbase32;

/// Length of the hash part of a store path base name.
pub const HASH_PART_LEN: usize = 32;
/// Maximum length of a store path name.
pub const MAX_NAME_LEN: usize = 211;

/// Errors about store path names and store paths; messages are Nix's.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum StorePathError {
    #[error("name must not be empty")]
    EmptyName,
    #[error("name '{0}' must be no longer than 211 characters")]
    NameTooLong(String),
    #[error("name '{0}' is not valid")]
    DotName(String),
    #[error("name '{name}' is not valid: first dash-separated component must not be '{component}'")]
    DotComponent {
        name: String,
        component: &'static str,
    },
    #[error("name '{name}' contains illegal character '{ch}'")]
    IllegalChar { name: String, ch: char },
    #[error("path '{path}' is not a valid store path: {reason}")]
    BadName {
        path: String,
        reason: Box<StorePathError>,
    },
    #[error("'{0}' is too short to be a valid store path")]
    TooShort(String),
    #[error("store path '{path}' contains illegal base-32 character '{ch}'")]
    IllegalHashChar { path: String, ch: char },
    #[error("path '{0}' is not in the Nix store")]
    NotInStore(String),
    #[error("store path '{0}' is not a valid derivation path")]
    NotDerivation(String),
    #[error(
        "fixed output derivation '{0}' is not allowed to refer to other store paths.\nYou may need to use the 'unsafeDiscardReferences' derivation attribute, see the manual for more details."
    )]
    FixedOutputWithReferences(String),
    #[error("store directory '{0}' must be an absolute path without a trailing slash")]
    BadStoreDir(String),
}

/// Nix's `checkName`: validate a store path name.
pub fn check_name(name: &str) -> Result<(), StorePathError> {
    if name.is_empty() {
        return Err(StorePathError::EmptyName);
    }
    if name.len() > MAX_NAME_LEN {
        return Err(StorePathError::NameTooLong(name.to_owned()));
    }
    let b = name.as_bytes();
    if b[0] == b'.' {
        if b.len() == 1 {
            return Err(StorePathError::DotName(name.to_owned()));
        }
        if b[1] == b'-' {
            return Err(StorePathError::DotComponent {
                name: name.to_owned(),
                component: ".",
            });
        }
        if b[1] == b'.' {
            if b.len() == 2 {
                return Err(StorePathError::DotName(name.to_owned()));
            }
            if b[2] == b'-' {
                return Err(StorePathError::DotComponent {
                    name: name.to_owned(),
                    component: "..",
                });
            }
        }
    }
    for c in name.chars() {
        if !(c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.' | '_' | '?' | '=')) {
            return Err(StorePathError::IllegalChar {
                name: name.to_owned(),
                ch: c,
            });
        }
    }
    Ok(())
}

/// A store path without its directory: `<hash part>-<name>`. Ordered like Nix (by base name).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StorePath {
    base_name: String,
}

impl StorePath {
    /// Parse a base name `<hash>-<name>`.
    pub fn from_base_name(base_name: &str) -> Result<StorePath, StorePathError> {
        if base_name.len() < HASH_PART_LEN + 1
            || !base_name.is_char_boundary(HASH_PART_LEN)
            || !base_name.is_char_boundary(HASH_PART_LEN + 1)
        {
            return Err(StorePathError::TooShort(base_name.to_owned()));
        }
        for c in base_name[..HASH_PART_LEN].chars() {
            if matches!(c, 'e' | 'o' | 'u' | 't') || !(c.is_ascii_digit() || c.is_ascii_lowercase())
            {
                return Err(StorePathError::IllegalHashChar {
                    path: base_name.to_owned(),
                    ch: c,
                });
            }
        }
        // Nix does not check the separator character, only the name after it.
        let name = &base_name[HASH_PART_LEN + 1..];
        check_name(name).map_err(|e| StorePathError::BadName {
            path: base_name.to_owned(),
            reason: Box::new(e),
        })?;
        Ok(StorePath {
            base_name: base_name.to_owned(),
        })
    }

    /// Build from a 20-byte digest and a name.
    pub fn from_digest(digest: &[u8], name: &str) -> Result<StorePath, StorePathError> {
        let base_name = format!("{}-{}", nixbase32::encode(digest), name);
        check_name(name).map_err(|e| StorePathError::BadName {
            path: base_name.clone(),
            reason: Box::new(e),
        })?;
        Ok(StorePath { base_name })
    }

    /// The 32-character hash part.
    pub fn hash_part(&self) -> &str {
        &self.base_name[..HASH_PART_LEN]
    }

    /// The name after the dash.
    pub fn name(&self) -> &str {
        &self.base_name[HASH_PART_LEN + 1..]
    }

    /// `<hash>-<name>`.
    pub fn base_name(&self) -> &str {
        &self.base_name
    }

    /// Whether the name ends in `.drv`.
    pub fn is_derivation(&self) -> bool {
        self.name().ends_with(".drv")
    }
}

impl fmt::Display for StorePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.base_name)
    }
}

/// References of a content-addressed object: other paths plus an optional self-reference.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoreReferences {
    pub others: BTreeSet<StorePath>,
    pub self_ref: bool,
}

impl StoreReferences {
    pub fn is_empty(&self) -> bool {
        self.others.is_empty() && !self.self_ref
    }
}

/// How file system data is turned into bytes for content addressing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FileIngestionMethod {
    /// The contents of a single regular file.
    Flat,
    /// The NAR serialisation (`recursive = true`, `r:` prefix).
    Recursive,
}

impl FileIngestionMethod {
    /// Nix's `makeFileIngestionPrefix`: `""` or `"r:"`.
    pub fn prefix(self) -> &'static str {
        match self {
            FileIngestionMethod::Flat => "",
            FileIngestionMethod::Recursive => "r:",
        }
    }
}

/// The content-address methods that can appear in a `.drv` `hashAlgo` column or `ca` field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ContentAddressMethod {
    Text,
    Flat,
    Recursive,
}

impl ContentAddressMethod {
    /// The `.drv`-style prefix (`text:`, ``, `r:`).
    pub fn prefix(self) -> &'static str {
        match self {
            ContentAddressMethod::Text => "text:",
            ContentAddressMethod::Flat => "",
            ContentAddressMethod::Recursive => "r:",
        }
    }

    /// Split a `.drv` hashAlgo string like `r:sha256` into method and the rest.
    pub fn parse_prefix(s: &str) -> (ContentAddressMethod, &str) {
        if let Some(r) = s.strip_prefix("r:") {
            (ContentAddressMethod::Recursive, r)
        } else if let Some(r) = s.strip_prefix("text:") {
            (ContentAddressMethod::Text, r)
        } else {
            (ContentAddressMethod::Flat, s)
        }
    }

    /// The database `ca` column prefix (`text:`, `fixed:`, `fixed:r:`).
    pub fn modern_prefix(self) -> &'static str {
        match self {
            ContentAddressMethod::Text => "text:",
            ContentAddressMethod::Flat => "fixed:",
            ContentAddressMethod::Recursive => "fixed:r:",
        }
    }
}

/// A content address: method and hash (Nix's `ContentAddress`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ContentAddress {
    pub method: ContentAddressMethod,
    pub hash: Hash,
}

impl ContentAddress {
    /// The database/`path-info` rendering, e.g. `fixed:r:sha256:<nix32>`.
    pub fn render(&self) -> String {
        format!(
            "{}{}:{}",
            self.method.modern_prefix(),
            self.hash.algo(),
            self.hash.to_nix32()
        )
    }

    /// The `.drv` hashAlgo column, e.g. `r:sha256`.
    pub fn method_algo(&self) -> String {
        format!("{}{}", self.method.prefix(), self.hash.algo())
    }
}

/// The logical store directory (e.g. `/nix/store`). It is part of every store path hash.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StoreDir(String);

impl Default for StoreDir {
    fn default() -> Self {
        StoreDir("/nix/store".to_owned())
    }
}

impl fmt::Display for StoreDir {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Nix's `outputPathName`: `name` for `out`, `name-<output>` otherwise.
pub fn output_path_name(drv_name: &str, output: &str) -> String {
    if output == "out" {
        drv_name.to_owned()
    } else {
        format!("{drv_name}-{output}")
    }
}

impl StoreDir {
    /// A store directory; must be absolute, without trailing slash (Nix canonicalises it).
    pub fn new(dir: impl Into<String>) -> Result<StoreDir, StorePathError> {
        let dir = dir.into();
        if !dir.starts_with('/') || (dir.len() > 1 && dir.ends_with('/')) || dir.contains("//") {
            return Err(StorePathError::BadStoreDir(dir));
        }
        Ok(StoreDir(dir))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `<store dir>/<base name>`.
    pub fn print(&self, path: &StorePath) -> String {
        format!("{}/{}", self.0, path.base_name)
    }

    /// Nix's `parseStorePath`: the path must be directly inside the store directory (after
    /// canonicalising `.`/`..`/duplicate slashes).
    pub fn parse(&self, path: &str) -> Result<StorePath, StorePathError> {
        let canon = canon_path(path);
        let (dir, base) = match canon.rfind('/') {
            Some(0) => ("/", &canon[1..]),
            Some(p) => (&canon[..p], &canon[p + 1..]),
            None => ("", canon.as_str()),
        };
        if dir != self.0 {
            return Err(StorePathError::NotInStore(canon.clone()));
        }
        StorePath::from_base_name(base)
    }

    /// Parse a path that may point inside a store object: returns the store path and the rest
    /// (e.g. `/nix/store/abc-foo/bin/x` gives `abc-foo` and `/bin/x`).
    pub fn parse_prefix<'a>(&self, path: &'a str) -> Result<(StorePath, &'a str), StorePathError> {
        let rest = path
            .strip_prefix(self.0.as_str())
            .and_then(|r| r.strip_prefix('/'))
            .ok_or_else(|| StorePathError::NotInStore(path.to_owned()))?;
        let end = rest.find('/').unwrap_or(rest.len());
        Ok((StorePath::from_base_name(&rest[..end])?, &rest[end..]))
    }

    /// Nix's `makeStorePath(type, hash, name)`, with the hash printed as `algo:base16`.
    pub fn make_store_path(
        &self,
        ty: &str,
        hash: &Hash,
        name: &str,
    ) -> Result<StorePath, StorePathError> {
        let s = format!("{ty}:{hash}:{}:{name}", self.0);
        let h = Hash::sha256(s.as_bytes());
        StorePath::from_digest(&h.compress(20), name)
    }

    /// Nix's `makeType`: append references (printed in full) and `:self`.
    pub fn make_type(&self, ty: &str, refs: &StoreReferences) -> String {
        let mut s = ty.to_owned();
        for r in &refs.others {
            s.push(':');
            s.push_str(&self.print(r));
        }
        if refs.self_ref {
            s.push_str(":self");
        }
        s
    }

    /// Nix's `makeOutputPath`: the path of output `output` of an input-addressed derivation
    /// whose masked hash modulo is `hash`.
    pub fn make_output_path(
        &self,
        output: &str,
        hash: &Hash,
        drv_name: &str,
    ) -> Result<StorePath, StorePathError> {
        self.make_store_path(
            &format!("output:{output}"),
            hash,
            &output_path_name(drv_name, output),
        )
    }

    /// Nix's `makeFixedOutputPath` for flat/recursive ingestion. Recursive SHA-256 gives a
    /// `source` path (which may have references); everything else must have none.
    pub fn make_fixed_output_path(
        &self,
        method: FileIngestionMethod,
        hash: &Hash,
        name: &str,
        refs: &StoreReferences,
    ) -> Result<StorePath, StorePathError> {
        if method == FileIngestionMethod::Recursive && hash.algo() == HashAlgo::Sha256 {
            self.make_store_path(&self.make_type("source", refs), hash, name)
        } else {
            if !refs.is_empty() {
                return Err(StorePathError::FixedOutputWithReferences(name.to_owned()));
            }
            let payload = format!("fixed:out:{}{}:", method.prefix(), hash);
            self.make_store_path("output:out", &Hash::sha256(payload.as_bytes()), name)
        }
    }

    /// Nix's `makeTextPath`: a text object (`builtins.toFile`, `.drv` files) with references.
    pub fn make_text_path(
        &self,
        name: &str,
        hash: &Hash,
        refs: &BTreeSet<StorePath>,
    ) -> Result<StorePath, StorePathError> {
        let refs = StoreReferences {
            others: refs.clone(),
            self_ref: false,
        };
        self.make_store_path(&self.make_type("text", &refs), hash, name)
    }

    /// Text path of the given contents (SHA-256 of the bytes).
    pub fn text_path_of(
        &self,
        name: &str,
        contents: &[u8],
        refs: &BTreeSet<StorePath>,
    ) -> Result<StorePath, StorePathError> {
        self.make_text_path(name, &Hash::sha256(contents), refs)
    }

    /// Nix's `makeFixedOutputPathFromCA`.
    pub fn make_path_from_ca(
        &self,
        name: &str,
        ca: &ContentAddress,
        refs: &StoreReferences,
    ) -> Result<StorePath, StorePathError> {
        match ca.method {
            ContentAddressMethod::Text => self.make_text_path(name, &ca.hash, &refs.others),
            ContentAddressMethod::Flat => {
                self.make_fixed_output_path(FileIngestionMethod::Flat, &ca.hash, name, refs)
            }
            ContentAddressMethod::Recursive => {
                self.make_fixed_output_path(FileIngestionMethod::Recursive, &ca.hash, name, refs)
            }
        }
    }
}

/// Nix's `canonPath` without symlink resolution: collapse `//`, `.` and `..`, drop trailing `/`.
pub fn canon_path(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    let mut s = String::with_capacity(path.len());
    for p in &parts {
        s.push('/');
        s.push_str(p);
    }
    if s.is_empty() {
        s.push('/');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_rules() {
        assert!(check_name("hello-2.12.1").is_ok());
        assert_eq!(
            check_name("").expect_err("empty").to_string(),
            "name must not be empty"
        );
        assert_eq!(
            check_name("..-x").expect_err("dotdot").to_string(),
            "name '..-x' is not valid: first dash-separated component must not be '..'"
        );
        assert_eq!(
            check_name("a b").expect_err("space").to_string(),
            "name 'a b' contains illegal character ' '"
        );
        assert!(check_name(".foo").is_ok());
        assert!(check_name(&"a".repeat(212)).is_err());
    }

    #[test]
    fn parse_store_path() {
        let sd = StoreDir::default();
        let p = sd
            .parse("/nix/store/ffffffffffffffffffffffffffffffff-x")
            .expect("valid");
        assert_eq!(p.name(), "x");
        assert!(
            sd.parse("/nix/store2/ffffffffffffffffffffffffffffffff-x")
                .is_err()
        );
        assert!(
            sd.parse("/nix/store/eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee-x")
                .is_err()
        );
        assert!(sd.parse("/nix/store/short").is_err());
        let (p, rest) = sd
            .parse_prefix("/nix/store/ffffffffffffffffffffffffffffffff-x/bin/sh")
            .expect("valid");
        assert_eq!((p.name(), rest), ("x", "/bin/sh"));
    }
}

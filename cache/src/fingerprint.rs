//! Fingerprints: the identity of one eval cache database.
//!
//! A cached answer may only be reused when *everything* that could change it is
//! the same. [`Fingerprint`] is a typed record of those inputs (locked source
//! identity, lock file bytes, subdirectory, system, purity, evaluator version and
//! the cache schema version) and [`Fingerprint::id`] hashes a canonical,
//! length-prefixed encoding of it with blake3.
//!
//! Invariant: equal fingerprints give equal ids, and any change in any field
//! (including moving bytes between adjacent fields) gives a different id. The
//! encoding is versioned by a domain tag so that it can never collide with the
//! encoding of an older layout.

use std::fmt;

use crate::schema::SCHEMA_VERSION;

/// Domain-separation tag mixed into every fingerprint hash.
const DOMAIN: &str = "flaked eval-cache fingerprint v1";

/// Identity of the locked top-level source tree of a flake.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum SourceIdentity {
    /// A locked, immutable tree identified by its NAR hash (SRI form, e.g. `sha256-…`).
    NarHash(String),
    /// A git revision. `dirty` is `Some(content key)` for a dirty work tree: the
    /// freshness key of the tracked files (see [`crate::freshness`]).
    Git {
        /// The commit hash (`HEAD` for a dirty tree).
        rev: String,
        /// Content key of the dirty work tree, `None` for a clean checkout.
        dirty: Option<String>,
    },
    /// A `path:` flake (or any unlocked tree), identified by its freshness content key.
    ContentKey(String),
}

/// Everything that can change an evaluation answer of a flake.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Fingerprint {
    /// Locked identity of the top-level source.
    pub source: SourceIdentity,
    /// Exact bytes of `flake.lock` (`None` when there is no lock file; distinct
    /// from an empty file).
    pub lock_file: Option<Vec<u8>>,
    /// The flake's subdirectory within the source (`dir=`), `""` for the root.
    pub subdir: String,
    /// The evaluation system, e.g. `x86_64-linux`.
    pub system: String,
    /// Pure evaluation (`true`) or `--impure`.
    pub pure: bool,
    /// Version string of the evaluator producing the values; bump it whenever
    /// the evaluator may answer differently.
    pub evaluator_version: String,
    /// Every other setting that can change an answer (the flake reference as
    /// given, store directory, registries, …) in a canonical text form chosen
    /// by the caller; `""` when there is none.
    pub settings: String,
}

impl Fingerprint {
    /// The cache schema version this fingerprint is bound to (part of the hash).
    pub const SCHEMA_VERSION: u32 = SCHEMA_VERSION;

    /// Stable hex id (64 lowercase hex digits) of this fingerprint.
    pub fn id(&self) -> FingerprintId {
        let mut h = blake3::Hasher::new();
        field(&mut h, b"domain", DOMAIN.as_bytes());
        field(&mut h, b"schema", &Self::SCHEMA_VERSION.to_le_bytes());
        match &self.source {
            SourceIdentity::NarHash(nar) => {
                field(&mut h, b"source", b"narHash");
                field(&mut h, b"narHash", nar.as_bytes());
            }
            SourceIdentity::Git { rev, dirty } => {
                field(&mut h, b"source", b"git");
                field(&mut h, b"rev", rev.as_bytes());
                opt_field(&mut h, b"dirty", dirty.as_ref().map(|d| d.as_bytes()));
            }
            SourceIdentity::ContentKey(key) => {
                field(&mut h, b"source", b"contentKey");
                field(&mut h, b"contentKey", key.as_bytes());
            }
        }
        opt_field(&mut h, b"lock", self.lock_file.as_deref());
        field(&mut h, b"subdir", self.subdir.as_bytes());
        field(&mut h, b"system", self.system.as_bytes());
        field(&mut h, b"pure", &[u8::from(self.pure)]);
        field(&mut h, b"evaluator", self.evaluator_version.as_bytes());
        // Appended last and only when present, so ids of fingerprints without
        // settings are those of the layout before the field existed.
        if !self.settings.is_empty() {
            field(&mut h, b"settings", self.settings.as_bytes());
        }
        FingerprintId(h.finalize().to_hex().to_string())
    }
}

/// Hashes one tagged, length-prefixed field: the encoding is injective, so two
/// different field sequences can never produce the same byte stream.
fn field(h: &mut blake3::Hasher, tag: &[u8], value: &[u8]) {
    h.update(&(tag.len() as u64).to_le_bytes());
    h.update(tag);
    h.update(&(value.len() as u64).to_le_bytes());
    h.update(value);
}

fn opt_field(h: &mut blake3::Hasher, tag: &[u8], value: Option<&[u8]>) {
    match value {
        None => field(h, tag, b"\0none"),
        Some(v) => {
            field(h, tag, b"\x01some");
            field(h, tag, v);
        }
    }
}

/// The hex id of a [`Fingerprint`]; used as the database file name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FingerprintId(String);

impl FingerprintId {
    /// The 64 lowercase hex digits.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Parses a hex id (e.g. a database file stem); `None` unless it is exactly
    /// 64 lowercase hex digits.
    pub fn parse(s: &str) -> Option<FingerprintId> {
        (s.len() == 64
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
        .then(|| FingerprintId(s.to_owned()))
    }
}

impl fmt::Display for FingerprintId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Fingerprint {
        Fingerprint {
            source: SourceIdentity::NarHash("sha256-AAAA".into()),
            lock_file: Some(b"{\"nodes\":{}}".to_vec()),
            subdir: String::new(),
            system: "x86_64-linux".into(),
            pure: true,
            evaluator_version: "flaked-eval 0.1.0".into(),
            settings: String::new(),
        }
    }

    #[test]
    fn equal_inputs_equal_ids() {
        assert_eq!(base().id(), base().id());
        assert_eq!(base().id().as_str().len(), 64);
        assert!(FingerprintId::parse(base().id().as_str()).is_some());
    }

    #[test]
    fn stable_across_releases() {
        // Pinned value: a change here invalidates every cache on disk, which
        // must be a deliberate decision (bump the schema version instead).
        assert_eq!(
            base().id().as_str(),
            "7a3cbdd107dcaae04bdeff55e80e18330b758d80f5a8e0473565077ded895204"
        );
    }

    #[test]
    fn every_field_matters() {
        let b = base().id();
        let variants: Vec<Fingerprint> = vec![
            Fingerprint {
                source: SourceIdentity::NarHash("sha256-AAAB".into()),
                ..base()
            },
            Fingerprint {
                source: SourceIdentity::Git {
                    rev: "sha256-AAAA".into(),
                    dirty: None,
                },
                ..base()
            },
            Fingerprint {
                source: SourceIdentity::Git {
                    rev: "sha256-AAAA".into(),
                    dirty: Some(String::new()),
                },
                ..base()
            },
            Fingerprint {
                source: SourceIdentity::ContentKey("sha256-AAAA".into()),
                ..base()
            },
            Fingerprint {
                lock_file: None,
                ..base()
            },
            Fingerprint {
                settings: "x".into(),
                ..base()
            },
            Fingerprint {
                lock_file: Some(Vec::new()),
                ..base()
            },
            Fingerprint {
                lock_file: Some(b"{\"nodes\":{} }".to_vec()),
                ..base()
            },
            Fingerprint {
                subdir: "sub".into(),
                ..base()
            },
            Fingerprint {
                system: "aarch64-linux".into(),
                ..base()
            },
            Fingerprint {
                pure: false,
                ..base()
            },
            Fingerprint {
                evaluator_version: "flaked-eval 0.1.1".into(),
                ..base()
            },
        ];
        let mut seen = std::collections::HashSet::new();
        seen.insert(b.clone());
        for v in variants {
            let id = v.id();
            assert_ne!(id, b, "{v:?}");
            assert!(seen.insert(id), "collision for {v:?}");
        }
    }

    #[test]
    fn field_boundaries_are_unambiguous() {
        let a = Fingerprint {
            subdir: "ab".into(),
            system: "c".into(),
            ..base()
        };
        let b = Fingerprint {
            subdir: "a".into(),
            system: "bc".into(),
            ..base()
        };
        assert_ne!(a.id(), b.id());
    }

    #[test]
    fn parse_rejects_garbage() {
        assert!(FingerprintId::parse("xyz").is_none());
        assert!(FingerprintId::parse(&"A".repeat(64)).is_none());
        assert!(FingerprintId::parse(&"../".repeat(21)).is_none());
    }
}

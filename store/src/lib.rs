//! The Nix store for flaked: hash and path formats, NAR, derivations and the local store.
//!
//! The format modules (`nixbase32`, `hash`, `store_path`, `nar`, `derivation`) are pure and
//! synchronous and reproduce Nix 2.26 byte for byte; `local` is the only module with effects
//! on a store (file system + SQLite database in Nix's schema).

pub mod build;
pub mod derivation;
pub mod hash;
pub mod import_cache;
pub mod local;
pub mod nar;
pub mod nixbase32;
pub mod store_path;

pub use derivation::{Derivation, DerivationOutput, DrvHash, DrvHashCache, fixed_output};
pub use hash::{Hash, HashAlgo, HashFormat};
pub use local::{LocalStore, PathInfo};
pub use store_path::{
    ContentAddress, ContentAddressMethod, FileIngestionMethod, StoreDir, StorePath,
};
pub mod fetchers;

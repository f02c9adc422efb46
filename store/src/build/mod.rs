//! Building derivations: one build in a sandbox (`builder`, `sandbox`, `env`), output
//! processing (`refs`, `outputs`), and the shared scheduler (`pool`).
//!
//! This module exists so that `flaked` turns `.drv` files into valid store paths the way
//! Nix 2.26's local builder does (same environment, same sandbox shape, same output paths and
//! NAR hashes, same registration), with builds shared between every client of the daemon.
//! Invariant: an output path becomes valid only after its complete, canonicalised contents
//! are in place and synced; all outputs of a build are registered in one transaction; a
//! failed or cancelled build registers nothing.

pub mod builder;
pub mod env;
pub mod outputs;
pub mod pool;
pub mod refs;
pub mod roots;
pub mod sandbox;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

pub use builder::build_derivation;
pub use pool::{
    BuildEvent, BuildOptions, BuildPlan, BuildPool, BuildReport, DerivedPath, PoolStats,
};

/// Whether builds run in the namespace sandbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SandboxMode {
    /// Always sandbox (Nix's `sandbox = true`, the default on Linux).
    Enabled,
    /// Never sandbox (`sandbox = false`); a store whose physical directory differs from its
    /// logical one is still built in a sandbox, like Nix does for diverted stores.
    Disabled,
}

/// Builder configuration (the subset of `nix.conf` that local builds read).
#[derive(Debug, Clone)]
pub struct BuildSettings {
    pub sandbox: SandboxMode,
    /// `sandbox-paths`: `PATH`, `TARGET=SOURCE`, with a trailing `?` for optional ones.
    pub sandbox_paths: Vec<String>,
    /// `max-jobs`: concurrent builds in a pool.
    pub max_jobs: usize,
    /// `cores`: the builder's `NIX_BUILD_CORES`.
    pub cores: u32,
    /// `system`.
    pub system: String,
    /// `extra-platforms`.
    pub extra_platforms: BTreeSet<String>,
    /// `system-features`.
    pub system_features: BTreeSet<String>,
    /// `timeout` (none when `None`).
    pub timeout: Option<Duration>,
    /// `max-silent-time`.
    pub max_silent_time: Option<Duration>,
    /// `build-dir`: where build directories are created on the host.
    pub build_dir: PathBuf,
    /// `sandbox-build-dir`: the build directory's path inside the sandbox.
    pub sandbox_build_dir: String,
    /// `keep-failed`: keep the build directory of a failed build.
    pub keep_failed: bool,
    /// Lines of log kept for error messages (`log-lines`).
    pub log_lines: usize,
    /// `fsync-store-paths`: flush the store's file system before registering outputs (off by
    /// default, like Nix: a crash of the daemon can never register a partial output either
    /// way, because outputs are renamed into place before the registering transaction; the
    /// flush only adds durability across power loss).
    pub fsync_outputs: bool,
}

impl Default for BuildSettings {
    fn default() -> Self {
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        let mut features: BTreeSet<String> = ["benchmark", "big-parallel", "nixos-test"]
            .into_iter()
            .map(str::to_owned)
            .collect();
        if std::path::Path::new("/dev/kvm").exists() {
            features.insert("kvm".into());
        }
        BuildSettings {
            sandbox: SandboxMode::Enabled,
            sandbox_paths: Vec::new(),
            max_jobs: cores,
            cores: cores as u32,
            system: default_system().to_owned(),
            extra_platforms: BTreeSet::new(),
            system_features: features,
            timeout: None,
            max_silent_time: None,
            build_dir: std::env::temp_dir(),
            sandbox_build_dir: "/build".into(),
            keep_failed: false,
            log_lines: 25,
            fsync_outputs: false,
        }
    }
}

/// Nix's `SYSTEM` for this build of flaked.
pub fn default_system() -> &'static str {
    if cfg!(target_arch = "x86_64") {
        "x86_64-linux"
    } else if cfg!(target_arch = "aarch64") {
        "aarch64-linux"
    } else if cfg!(target_arch = "x86") {
        "i686-linux"
    } else {
        "unknown-linux"
    }
}

/// Cancels a build request when triggered (the client went away). Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct CancelToken(Arc<AtomicBool>);

impl CancelToken {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn cancel(&self) {
        self.0.store(true, Ordering::SeqCst);
    }
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// Why a build failed. Cloneable: one build's failure is reported to every requester.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BuildError {
    /// The builder exited unsuccessfully (`status` is Nix's `statusToString`).
    #[error("builder for '{drv}' {status}{}", render_tail(log_tail))]
    BuilderFailed {
        drv: String,
        status: String,
        log_tail: Vec<String>,
    },
    #[error("{0}")]
    TimedOut(String),
    #[error(
        "hash mismatch in fixed-output derivation '{drv}':\n  specified: {specified}\n     got:    {got}"
    )]
    HashMismatch {
        drv: String,
        specified: String,
        got: String,
    },
    #[error(
        "a '{platform}' with features {{{required}}} is required to build '{drv}', but I am a '{system}' with features {{{features}}}"
    )]
    WrongSystem {
        platform: String,
        required: String,
        drv: String,
        system: String,
        features: String,
    },
    #[error("{count} dependencies of derivation '{drv}' failed to build")]
    DependencyFailed { drv: String, count: usize },
    /// Output checks, sandbox set-up, bad attributes: Nix's plain `BuildError`s.
    #[error("{0}")]
    Rejected(String),
    #[error("build of '{0}' was cancelled")]
    Cancelled(String),
    #[error("{0}")]
    SandboxUnavailable(String),
    #[error("{0}")]
    Store(String),
    /// Several failures (with `keep_going`).
    #[error("{}", render_many(.0))]
    Multiple(Vec<BuildError>),
}

fn render_tail(tail: &[String]) -> String {
    if tail.is_empty() {
        return String::new();
    }
    let mut s = format!(";\nlast {} log lines:\n", tail.len());
    for l in tail {
        s.push_str("> ");
        s.push_str(l);
        s.push('\n');
    }
    s
}

fn render_many(v: &[BuildError]) -> String {
    v.iter()
        .map(|e| e.to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

impl From<crate::local::StoreError> for BuildError {
    fn from(e: crate::local::StoreError) -> Self {
        BuildError::Store(e.to_string())
    }
}

impl From<env::EnvError> for BuildError {
    fn from(e: env::EnvError) -> Self {
        BuildError::Rejected(e.to_string())
    }
}

impl From<sandbox::SandboxError> for BuildError {
    fn from(e: sandbox::SandboxError) -> Self {
        match e {
            sandbox::SandboxError::Unavailable { .. } => {
                BuildError::SandboxUnavailable(e.to_string())
            }
            other => BuildError::Rejected(other.to_string()),
        }
    }
}

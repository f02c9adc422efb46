//! The facade between the evaluator and its callers (the daemon, tests, benchmarks).
//!
//! Callers hand over a self-contained request and get back exactly the bytes `nix eval` would print,
//! or a diagnostic rendered exactly as `nix` renders it. The evaluator owns its threads and stack
//! discipline: `evaluate` blocks the calling thread and is safe to call from many threads at once.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

/// What to evaluate.
#[derive(Debug, Clone)]
pub enum EvalSource {
    /// An expression given as text (`nix eval --expr`).
    Expr(String),
    /// A file (`nix eval --file`).
    File(PathBuf),
}

/// How to print the result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputFormat {
    /// `nix eval` (Nix syntax).
    Nix,
    /// `nix eval --json`.
    Json,
    /// `nix eval --raw`.
    Raw,
}

/// Everything on the caller's side that an answer can depend on.
#[derive(Debug, Clone)]
pub struct EvalSettings {
    pub pure: bool,
    pub cwd: PathBuf,
    pub env: BTreeMap<String, String>,
    pub nix_path: Vec<String>,
    pub system: String,
    pub store_dir: String,
    pub interrupt: Option<Arc<AtomicBool>>,
}

impl Default for EvalSettings {
    fn default() -> Self {
        EvalSettings {
            pure: true,
            cwd: PathBuf::from("/"),
            env: BTreeMap::new(),
            nix_path: Vec::new(),
            system: "x86_64-linux".to_string(),
            store_dir: "/nix/store".to_string(),
            interrupt: None,
        }
    }
}

/// One evaluation request.
#[derive(Debug, Clone)]
pub struct EvalRequest {
    pub source: EvalSource,
    pub attr_path: Option<String>,
    pub output: OutputFormat,
    pub settings: EvalSettings,
}

/// A source position, 1-based.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    pub file: String,
    pub line: u32,
    pub column: u32,
}

/// One `… while evaluating …` frame of an error trace.
#[derive(Debug, Clone)]
pub struct TraceFrame {
    pub message: String,
    pub position: Option<Position>,
}

/// An evaluation error, structured and rendered.
#[derive(Debug, Clone)]
pub struct Diagnostic {
    pub message: String,
    pub position: Option<Position>,
    pub trace: Vec<TraceFrame>,
    /// Exactly what `nix` prints on stderr for this error (starts with `error:`).
    pub rendered: String,
}

/// A successful evaluation's output.
#[derive(Debug, Clone, Default)]
pub struct EvalOutput {
    /// Exactly what `nix eval` prints on stdout.
    pub stdout: Vec<u8>,
    /// Trace and warning lines, in order, as `nix` prints them on stderr.
    pub stderr: Vec<String>,
}

/// Evaluates a request. Blocking.
pub fn evaluate(req: &EvalRequest) -> Result<EvalOutput, Diagnostic> {
    // TODO(evaluator core in progress): replaced by the real evaluator.
    let _ = req;
    let message = "the evaluator is not wired in yet".to_string();
    Err(Diagnostic {
        rendered: format!("error: {message}"),
        message,
        position: None,
        trace: Vec::new(),
    })
}

//! `flaked-eval-lang FILE [--json|--raw]`: evaluates a Nix file like `nix eval --file FILE` through
//! `flaked_eval::api::evaluate` and prints exactly what the facade returns (stdout bytes; the
//! rendered diagnostic on stderr with exit code 1), so it can be timed beside the reference.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use flaked_eval::api::{EvalRequest, EvalSettings, EvalSource, OutputFormat, evaluate};

/// The evaluator allocates many small short-lived objects (thunks, frames, attribute vectors);
/// mimalloc serves and frees them markedly faster than the system allocator.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let mut file = None;
    let mut output = OutputFormat::Nix;
    for arg in std::env::args().skip(1) {
        match arg.as_str() {
            "--json" => output = OutputFormat::Json,
            "--raw" => output = OutputFormat::Raw,
            _ if file.is_none() => file = Some(PathBuf::from(arg)),
            other => {
                let _ = writeln!(std::io::stderr(), "unexpected argument {other:?}");
                return ExitCode::from(2);
            }
        }
    }
    let Some(file) = file else {
        let _ = writeln!(
            std::io::stderr(),
            "usage: flaked-eval-lang FILE [--json|--raw]"
        );
        return ExitCode::from(2);
    };
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
    let file = if file.is_absolute() {
        file
    } else {
        cwd.join(file)
    };
    let req = EvalRequest {
        source: EvalSource::File(file),
        attr_path: None,
        output,
        // `nix eval --file` is impure.
        settings: EvalSettings {
            pure: false,
            cwd,
            ..EvalSettings::default()
        },
    };
    match evaluate(&req) {
        Ok(out) => {
            let mut err = std::io::stderr();
            for line in &out.stderr {
                let _ = writeln!(err, "{line}");
            }
            let _ = std::io::stdout().write_all(&out.stdout);
            ExitCode::SUCCESS
        }
        Err(d) => {
            let mut err = std::io::stderr();
            for line in &d.log {
                let _ = writeln!(err, "{line}");
            }
            let _ = write!(err, "{}", d.rendered);
            ExitCode::from(1)
        }
    }
}

//! `feval`: a developer tool mirroring `nix eval` on top of `flaked_eval::api::evaluate`, for
//! differential testing against the reference (`feval --expr E [--json|--raw] [--impure]`,
//! `feval --file F [ATTR]`). Exit code 1 and Nix's error text on stderr on failure.

use std::io::Write;

use flaked_eval::api::{EvalRequest, EvalSettings, EvalSource, OutputFormat, evaluate};

/// The evaluator allocates many small short-lived objects (thunks, frames, attribute vectors);
/// mimalloc serves and frees them markedly faster than the system allocator.
#[global_allocator]
static GLOBAL: flaked_eval::alloc::MiMalloc = flaked_eval::alloc::MiMalloc;

fn main() {
    let mut source = None;
    let mut output = OutputFormat::Nix;
    let mut pure = None;
    let mut attr = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--expr" => source = args.next().map(EvalSource::Expr),
            "--file" => source = args.next().map(|f| EvalSource::File(f.into())),
            "--json" => output = OutputFormat::Json,
            "--raw" => output = OutputFormat::Raw,
            "--instantiate" => output = OutputFormat::Instantiate,
            "--impure" => pure = Some(false),
            other => attr = Some(other.to_string()),
        }
    }
    let Some(source) = source else {
        let _ = writeln!(
            std::io::stderr(),
            "usage: feval (--expr E | --file F) [--json|--raw] [--impure] [ATTR]"
        );
        std::process::exit(2);
    };
    let pure = pure.unwrap_or(matches!(source, EvalSource::Expr(_)));
    let settings = EvalSettings {
        pure,
        cwd: std::env::current_dir().unwrap_or_else(|_| "/".into()),
        env: std::env::vars().collect(),
        nix_path: std::env::var("NIX_PATH")
            .map(|p| {
                p.split(':')
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default(),
        ..EvalSettings::default()
    };
    let req = EvalRequest {
        source,
        attr_path: attr,
        output,
        settings,
    };
    match evaluate(&req) {
        Ok(out) => {
            for l in &out.stderr {
                let _ = writeln!(std::io::stderr(), "{l}");
            }
            let _ = std::io::stdout().write_all(&out.stdout);
        }
        Err(d) => {
            for l in &d.log {
                let _ = writeln!(std::io::stderr(), "{l}");
            }
            let _ = std::io::stderr().write_all(d.rendered.as_bytes());
            std::process::exit(1);
        }
    }
}

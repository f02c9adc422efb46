//! `feval`: a developer tool mirroring `nix eval` on top of `flaked_eval::api`, for
//! differential testing against the reference (`feval --expr E [--json|--raw] [--impure]`,
//! `feval --file F [ATTR]`). `--instantiate` prints as `nix-instantiate --eval --strict`;
//! `--instantiate --json [--strict]` as `nix-instantiate --eval --json [--strict]` (paths
//! copied to the store, lazy unless `--strict`). Exit code 1 and Nix's error text on stderr
//! on failure. One-shot: the process exits without tearing the evaluation's memory down.

use std::io::Write;

use flaked_eval::api::{EvalRequest, EvalSettings, EvalSource, OutputFormat, evaluate_and_exit};

/// The evaluator allocates many small short-lived objects (thunks, frames, attribute vectors);
/// mimalloc serves and frees them markedly faster than the system allocator.
#[global_allocator]
static GLOBAL: flaked_eval::alloc::MiMalloc = flaked_eval::alloc::MiMalloc;

fn main() {
    let mut source = None;
    let (mut json, mut raw, mut instantiate, mut strict) = (false, false, false, false);
    let mut pure = None;
    let mut attr = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--expr" => source = args.next().map(EvalSource::Expr),
            "--file" => source = args.next().map(|f| EvalSource::File(f.into())),
            "--json" => json = true,
            "--raw" => raw = true,
            "--instantiate" => instantiate = true,
            "--strict" => strict = true,
            "--impure" => pure = Some(false),
            other => attr = Some(other.to_string()),
        }
    }
    let output = match (instantiate, json, raw) {
        (true, true, _) => OutputFormat::InstantiateJson { strict },
        (true, false, _) => OutputFormat::Instantiate,
        (false, true, _) => OutputFormat::Json,
        (false, false, true) => OutputFormat::Raw,
        (false, false, false) => OutputFormat::Nix,
    };
    let Some(source) = source else {
        let _ = writeln!(
            std::io::stderr(),
            "usage: feval (--expr E | --file F) [--json|--raw] [--instantiate [--strict]] [--impure] [ATTR]"
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
    // One-shot: the process ends right after printing, without tearing the evaluation down.
    evaluate_and_exit(&req, |answer| {
        let code = match answer {
            Ok(out) => {
                let mut err = std::io::stderr().lock();
                for l in &out.stderr {
                    let _ = writeln!(err, "{l}");
                }
                let _ = std::io::stdout().lock().write_all(&out.stdout);
                0
            }
            Err(d) => {
                let mut err = std::io::stderr().lock();
                for l in &d.log {
                    let _ = writeln!(err, "{l}");
                }
                let _ = err.write_all(d.rendered.as_bytes());
                1
            }
        };
        let _ = std::io::stdout().flush();
        let _ = std::io::stderr().flush();
        code
    })
}

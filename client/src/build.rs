//! `flakectl build`: sends one `Build` request and renders its event stream as `nix build`
//! does (log lines, result symlinks, `--print-out-paths`).
//!
//! It lives apart from `main.rs` so the build command's options and output can grow without
//! touching the other commands. Invariant: it never decides what to build; it only prints the
//! daemon's events and makes the result links in its own working directory.

use std::process::ExitCode;

use clap::Args;
use flaked_proto::v1 as pb;

use crate::{CliError, EvalOpts, autostart, context, print_stderr_lines, write_stdout};

/// `flakectl build` options.
#[derive(Debug, Args)]
pub struct BuildArgs {
    #[arg(required = true)]
    installables: Vec<String>,
    /// Prefix of the result symlinks.
    #[arg(short = 'o', long, value_name = "PATH")]
    out_link: Option<String>,
    /// Create no result symlinks.
    #[arg(long)]
    no_link: bool,
    /// Only show what would be built.
    #[arg(long)]
    dry_run: bool,
    /// Print the output paths.
    #[arg(long)]
    print_out_paths: bool,
    /// Print full build logs on standard error.
    #[arg(short = 'L', long)]
    print_build_logs: bool,
    #[command(flatten)]
    opts: EvalOpts,
}

/// Runs `flakectl build`.
pub async fn run(args: BuildArgs, target: &autostart::Target) -> Result<ExitCode, CliError> {
    let BuildArgs {
        installables,
        out_link,
        no_link,
        dry_run,
        print_out_paths,
        print_build_logs,
        opts,
    } = args;
    let req = pb::BuildRequest {
        context: Some(context(&opts)?),
        installables,
        out_link: out_link.clone().unwrap_or_default(),
        no_link,
        dry_run,
    };
    let mut client = autostart::connect(target).await?;
    let mut stream = client.build(req).await?.into_inner();
    while let Some(event) = stream.message().await? {
        match event.event {
            Some(pb::build_event::Event::Log(l)) => {
                // Warnings of the evaluation (no derivation) always; build logs with -L.
                if l.drv_path.is_empty() || print_build_logs {
                    print_stderr_lines(&[l.line]);
                }
            }
            Some(pb::build_event::Event::Progress(_)) | None => {}
            Some(pb::build_event::Event::Error(d)) => {
                return Err(CliError::rendered(d.rendered));
            }
            Some(pb::build_event::Event::Result(r)) => {
                if !no_link {
                    link_results(out_link.as_deref().unwrap_or("result"), &r.paths)?;
                }
                if print_out_paths {
                    let mut text = String::new();
                    for p in &r.paths {
                        for path in p.outputs.values() {
                            text.push_str(path);
                            text.push('\n');
                        }
                    }
                    write_stdout(text.as_bytes())?;
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `result`, `result-dev`, `result-1`, … symlinks to the built outputs, as `nix build` makes them
/// (replacing existing symlinks; anything else in the way is an error).
fn link_results(prefix: &str, paths: &[pb::BuiltPath]) -> Result<(), CliError> {
    for (i, p) in paths.iter().enumerate() {
        for (output, target) in &p.outputs {
            let mut name = prefix.to_string();
            if i > 0 {
                name.push_str(&format!("-{i}"));
            }
            if output != "out" {
                name.push_str(&format!("-{output}"));
            }
            let link = std::path::Path::new(&name);
            if let Ok(meta) = std::fs::symlink_metadata(link)
                && !meta.file_type().is_symlink()
            {
                return Err(CliError::msg(format!(
                    "cannot create symlink '{name}': a file is in the way"
                )));
            }
            // A new symlink beside it, renamed over it: the link is never missing or half-made.
            let tmp = format!("{name}.tmp-{}", std::process::id());
            let _ = std::fs::remove_file(&tmp);
            std::os::unix::fs::symlink(target, &tmp)
                .and_then(|()| std::fs::rename(&tmp, link))
                .map_err(|e| {
                    let _ = std::fs::remove_file(&tmp);
                    CliError::msg(format!("cannot create symlink '{name}' to '{target}': {e}"))
                })?;
        }
    }
    Ok(())
}

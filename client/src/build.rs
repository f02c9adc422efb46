//! `flakectl build`: sends one `Build` request and renders its event stream as `nix build`
//! does: the daemon's messages (`these N derivations will be built:`, `building '…'...`,
//! errors) as they come, build logs prefixed `name> ` with `-L`, a one-line progress display
//! (`[running/done/expected built] name> last line`) when stderr is a terminal, then the
//! result links and `--print-out-paths`.
//!
//! It lives apart from `main.rs` so the build command's options and output can grow without
//! touching the other commands. Invariants: it never decides what to build or how links are
//! named (the daemon does, and registers them as GC roots first); the progress line is always
//! erased before anything else is printed on stderr, and never drawn when stderr is not a
//! terminal.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use clap::Args;
use flaked_proto::v1 as pb;

use crate::{CliError, EvalOpts, autostart, context, write_stdout};

/// `flakectl build` options.
#[derive(Debug, Args)]
pub struct BuildArgs {
    /// Installables: FLAKEREF#ATTRPATH, or with --file/--expr attribute paths (`a.b^out`).
    installables: Vec<String>,
    /// Build the derivations of this Nix file (attribute paths as installables).
    #[arg(short = 'f', long, value_name = "FILE", conflicts_with = "expr")]
    file: Option<String>,
    /// Build the derivations of this expression (attribute paths as installables).
    #[arg(long, value_name = "EXPR")]
    expr: Option<String>,
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
    /// Build at most N derivations of this command at once (also bounded by the daemon's
    /// max-jobs).
    #[arg(short = 'j', long, value_name = "N")]
    max_jobs: Option<u32>,
    /// Keep building what does not depend on a failed build.
    #[arg(long)]
    keep_going: bool,
    /// Keep the build directory of a failed build.
    #[arg(short = 'K', long)]
    keep_failed: bool,
    /// Print what was built (or, with --dry-run, would be) as JSON on standard output.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    opts: EvalOpts,
}

/// The name Nix shows for a derivation's log lines: the store path's name without `.drv`,
/// cut before its version (`DrvName`: the first `-` followed by a non-letter).
pub fn log_name(drv_path: &str) -> &str {
    let base = drv_path.rsplit('/').next().unwrap_or(drv_path);
    let name = base.split_once('-').map_or(base, |(_, n)| n);
    let name = name.strip_suffix(".drv").unwrap_or(name);
    let bytes = name.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        if b == b'-' && bytes.get(i + 1).is_some_and(|c| !c.is_ascii_alphabetic()) {
            return &name[..i];
        }
    }
    name
}

/// stderr, with a progress line at the bottom when it is a terminal.
struct Status {
    tty: bool,
    /// Whether a progress line is on the screen now.
    drawn: bool,
    progress: pb::BuildProgress,
    last: Option<(String, String)>,
    width: usize,
}

impl Status {
    fn new() -> Status {
        let tty =
            std::io::stderr().is_terminal() && std::env::var_os("TERM").is_none_or(|t| t != "dumb");
        Status {
            tty,
            drawn: false,
            progress: pb::BuildProgress::default(),
            last: None,
            width: terminal_width().unwrap_or(80),
        }
    }

    /// Prints one line above the progress line.
    fn line(&mut self, text: &str) {
        let mut err = std::io::stderr().lock();
        if self.drawn {
            let _ = err.write_all(b"\r\x1b[K");
            self.drawn = false;
        }
        let _ = err.write_all(text.as_bytes());
        if !text.ends_with('\n') {
            let _ = err.write_all(b"\n");
        }
        drop(err);
        self.draw();
    }

    fn draw(&mut self) {
        if !self.tty || self.progress.builds_expected == 0 {
            return;
        }
        let p = &self.progress;
        let mut text = format!(
            "[{}/{}/{} built]",
            p.builds_running, p.builds_done, p.builds_expected
        );
        if let Some((name, line)) = &self.last {
            text.push_str(&format!(" {name}> {line}"));
        }
        // One screen line: cut at the terminal's width (by characters; control characters of
        // a builder's output are dropped).
        let text: String = text
            .chars()
            .filter(|c| !c.is_control())
            .take(self.width.saturating_sub(1))
            .collect();
        let mut err = std::io::stderr().lock();
        let _ = err.write_all(format!("\r\x1b[K{text}").as_bytes());
        let _ = err.flush();
        self.drawn = true;
    }

    fn clear(&mut self) {
        if self.drawn {
            let _ = std::io::stderr().lock().write_all(b"\r\x1b[K");
            self.drawn = false;
        }
    }
}

/// The terminal's width, from `TIOCGWINSZ` on stderr.
fn terminal_width() -> Option<usize> {
    // SAFETY: TIOCGWINSZ fills a `winsize` we own; a failure leaves it untouched.
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::ioctl(libc::STDERR_FILENO, libc::TIOCGWINSZ, &mut ws) };
    (r == 0 && ws.ws_col > 0).then_some(ws.ws_col as usize)
}

/// Runs `flakectl build`.
pub async fn run(args: BuildArgs, target: &autostart::Target) -> Result<ExitCode, CliError> {
    let BuildArgs {
        mut installables,
        file,
        expr,
        out_link,
        no_link,
        dry_run,
        print_out_paths,
        print_build_logs,
        max_jobs,
        keep_going,
        keep_failed,
        json,
        opts,
    } = args;
    if file.is_none() && expr.is_none() && installables.is_empty() {
        // `nix build` without installables builds the flake in the current directory.
        installables.push(".".to_string());
    }
    let req = pb::BuildRequest {
        context: Some(context(&opts)?),
        installables,
        out_link: out_link.unwrap_or_default(),
        no_link,
        dry_run,
        file: file.unwrap_or_default(),
        expr: expr.unwrap_or_default(),
        keep_going,
        max_jobs: max_jobs.unwrap_or(0),
        print_build_logs,
        keep_failed,
    };
    let mut client = autostart::connect(target).await?;
    let mut stream = client.build(req).await?.into_inner();
    let mut status = Status::new();
    let result = loop {
        let event = match stream.message().await {
            Ok(Some(e)) => e,
            Ok(None) => break Err(CliError::msg("flaked ended the build without an answer")),
            Err(e) => break Err(e.into()),
        };
        match event.event {
            Some(pb::build_event::Event::Log(l)) => {
                if l.drv_path.is_empty() {
                    // The daemon's messages, printed as Nix prints them.
                    status.line(&l.line);
                } else if print_build_logs {
                    status.line(&format!("{}> {}", log_name(&l.drv_path), l.line));
                } else {
                    status.last = Some((log_name(&l.drv_path).to_string(), l.line));
                    status.draw();
                }
            }
            Some(pb::build_event::Event::Progress(p)) => {
                status.progress = p;
                status.draw();
            }
            None => {}
            Some(pb::build_event::Event::Error(d)) => break Err(CliError::rendered(d.rendered)),
            Some(pb::build_event::Event::Result(r)) => break Ok(r),
        }
    };
    status.clear();
    let r = result?;
    if json {
        write_stdout(format!("{}\n", results_json(&r.paths)).as_bytes())?;
    }
    if dry_run {
        return Ok(ExitCode::SUCCESS);
    }
    link_results(&r.paths)?;
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
    Ok(ExitCode::SUCCESS)
}

/// `nix build --json`: per installable, its derivation and outputs, and when this command built
/// it, the build's start and stop times (keys sorted, as Nix's JSON objects are).
fn results_json(paths: &[pb::BuiltPath]) -> serde_json::Value {
    paths
        .iter()
        .map(|p| {
            let mut o = serde_json::Map::new();
            o.insert("drvPath".into(), p.drv_path.clone().into());
            o.insert(
                "outputs".into(),
                p.outputs
                    .iter()
                    .map(|(n, path)| (n.clone(), serde_json::Value::from(path.clone())))
                    .collect::<serde_json::Map<_, _>>()
                    .into(),
            );
            if p.start_time != 0 {
                o.insert("startTime".into(), p.start_time.into());
            }
            if p.stop_time != 0 {
                o.insert("stopTime".into(), p.stop_time.into());
            }
            serde_json::Value::Object(o)
        })
        .collect()
}

/// Creates the result symlinks the daemon named (and registered as GC roots), replacing
/// existing symlinks into the store; anything else in the way is Nix's error.
fn link_results(paths: &[pb::BuiltPath]) -> Result<(), CliError> {
    for p in paths {
        for (output, link) in &p.links {
            let Some(target) = p.outputs.get(output) else {
                continue;
            };
            let link_path = std::path::Path::new(link);
            if let Ok(meta) = std::fs::symlink_metadata(link_path) {
                // The store directory is the output path's parent.
                let store_dir = std::path::Path::new(target).parent();
                let into_store = meta.file_type().is_symlink()
                    && std::fs::read_link(link_path)
                        .is_ok_and(|t| store_dir.is_some_and(|d| t.parent() == Some(d)));
                if !into_store {
                    return Err(CliError::msg(format!(
                        "cannot create symlink '{link}'; already exists"
                    )));
                }
            }
            // A new symlink beside it, renamed over it: the link is never missing or half-made.
            let tmp = format!("{link}.tmp-{}", std::process::id());
            let _ = std::fs::remove_file(&tmp);
            std::os::unix::fs::symlink(target, &tmp)
                .and_then(|()| std::fs::rename(&tmp, link_path))
                .map_err(|e| {
                    let _ = std::fs::remove_file(&tmp);
                    CliError::msg(format!("cannot create symlink '{link}' to '{target}': {e}"))
                })?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::log_name;

    #[test]
    fn log_names_are_nix_drv_names() {
        assert_eq!(
            log_name("/nix/store/rxfsbf9wdyzl9hrn1rx267pgvig0vy2m-f-bad1-1.0.drv"),
            "f-bad1"
        );
        assert_eq!(
            log_name("/nix/store/rxfsbf9wdyzl9hrn1rx267pgvig0vy2m-hello.drv"),
            "hello"
        );
        assert_eq!(
            log_name("/nix/store/rxfsbf9wdyzl9hrn1rx267pgvig0vy2m-bg-9-19.drv"),
            "bg"
        );
    }
}

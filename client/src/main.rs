//! `flakectl`: the thin client of flaked, shaped like the nix CLI.
//!
//! It turns a command line into one request (carrying the cwd, and for `--impure` the environment, the
//! NIX_PATH, `-I` entries and `--system`), sends it to the daemon over its Unix socket (starting the
//! daemon if none runs), and prints the answer exactly as `nix` would. Invariants: it never evaluates
//! anything itself and links nothing of the evaluator; user errors print the daemon's rendered
//! diagnostic on stderr and exit with status 1.
//!
//! Start-up is part of every command's latency (a warm `eval` is a few milliseconds end to end), so
//! the binary has its own C `main` (`#![no_main]`): it skips the Rust runtime's set-up (reading
//! /proc/self/maps for the main thread's stack guard, an alternate signal stack and SIGSEGV/SIGBUS
//! handlers), doing only what flakectl needs of it: SIGPIPE ignored, stdout flushed at exit, a panic
//! reported with status 101. The arguments still come from std (glibc passes them to its init array).
//! The common `eval` command line is parsed without clap (see `fastargs`), and an `eval` is first
//! sent without the async runtime (see `fastcall`): tokio and tonic start only when that fast path
//! gives up (no daemon answers, or anything unusual), and then handle the request as before.

#![cfg_attr(not(test), no_main)]

mod autostart;
mod build;
mod fastargs;
mod fastcall;
mod hpack;
mod search;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use flaked_proto::v1 as pb;
use flaked_proto::v1::flaked_client::FlakedClient;
use tonic::transport::Channel;

/// An error to report: printed on stderr as is (it starts with `error:` when it is ours).
pub struct CliError {
    text: String,
}

impl CliError {
    /// Our own error, in Nix's style.
    pub fn msg(message: impl std::fmt::Display) -> CliError {
        CliError {
            text: format!("error: {message}"),
        }
    }

    /// Text rendered by the daemon (a Diagnostic's `rendered`).
    fn rendered(text: String) -> CliError {
        CliError { text }
    }
}

impl From<tonic::Status> for CliError {
    fn from(s: tonic::Status) -> CliError {
        let message = s.message();
        match s.code() {
            tonic::Code::Unavailable | tonic::Code::Unknown
                if message.is_empty() || message.contains("transport") =>
            {
                CliError::msg(format!("lost the connection to flaked: {s}"))
            }
            _ if message.is_empty() => CliError::msg(format!("flaked answered {:?}", s.code())),
            _ => CliError::msg(message),
        }
    }
}

/// The flaked client.
#[derive(Debug, Parser)]
#[command(
    name = "flakectl",
    version,
    about = "Talk to the flaked daemon (commands shaped like nix)"
)]
struct Cli {
    /// The daemon's socket. Default: $FLAKED_SOCKET, $XDG_RUNTIME_DIR/flaked/socket,
    /// /run/flaked/socket (root), else ~/.cache/flaked/socket.
    #[arg(long, global = true, value_name = "PATH")]
    socket: Option<PathBuf>,
    /// Do not start a daemon when none answers (also: FLAKECTL_NO_AUTO_START=1).
    #[arg(long, global = true)]
    no_auto_start: bool,
    /// `--idle-exit` for a daemon that flakectl starts.
    #[arg(long, global = true, value_name = "DURATION", default_value = "15m")]
    daemon_idle_exit: String,
    #[command(subcommand)]
    command: Command,
}

/// Options shared by commands that evaluate.
#[derive(Debug, Args)]
struct EvalOpts {
    /// Allow access to the environment, NIX_PATH and unlocked references.
    #[arg(long)]
    impure: bool,
    /// Add a path to the Nix search path (PATH or NAME=PATH).
    #[arg(short = 'I', long = "include", value_name = "PATH")]
    include: Vec<String>,
    /// The system to evaluate for.
    #[arg(long, value_name = "SYSTEM")]
    system: Option<String>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Evaluate an expression, a file or an installable and print the value.
    Eval {
        /// An installable (FLAKEREF#ATTRPATH), or with --expr/--file the attribute path to select.
        installable: Option<String>,
        /// Evaluate this expression.
        #[arg(long, value_name = "EXPR", conflicts_with = "file")]
        expr: Option<String>,
        /// Evaluate this file.
        #[arg(short = 'f', long, value_name = "FILE")]
        file: Option<String>,
        /// Print the value as JSON.
        #[arg(long, conflicts_with = "raw")]
        json: bool,
        /// Print a string value without quotes or escaping.
        #[arg(long)]
        raw: bool,
        #[command(flatten)]
        opts: EvalOpts,
    },
    /// Build installables.
    Build(build::BuildArgs),
    /// Search packages.
    Search(search::SearchArgs),
    /// Manage flakes.
    Flake {
        #[command(subcommand)]
        command: FlakeCommand,
    },
    /// Manage the daemon.
    Daemon {
        #[command(subcommand)]
        command: DaemonCommand,
    },
}

#[derive(Debug, Subcommand)]
enum FlakeCommand {
    /// Create missing lock file entries.
    Lock {
        #[arg(default_value = ".")]
        flake_ref: String,
        /// Re-lock this input.
        #[arg(long, value_name = "INPUT")]
        update_input: Vec<String>,
        /// Override an input: INPUT FLAKEREF.
        #[arg(long, num_args = 2, value_names = ["INPUT", "FLAKEREF"])]
        override_input: Vec<String>,
        #[command(flatten)]
        opts: EvalOpts,
    },
    /// Update the lock file (all inputs, or those named).
    Update {
        inputs: Vec<String>,
        /// The flake to update.
        #[arg(long, default_value = ".")]
        flake: String,
        #[command(flatten)]
        opts: EvalOpts,
    },
    /// Show a flake's metadata.
    Metadata {
        #[arg(default_value = ".")]
        flake_ref: String,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        opts: EvalOpts,
    },
    /// Show a flake's outputs.
    Show {
        #[arg(default_value = ".")]
        flake_ref: String,
        #[arg(long)]
        json: bool,
        /// Show outputs for every system.
        #[arg(long)]
        all_systems: bool,
        /// Show legacyPackages too.
        #[arg(long)]
        legacy: bool,
        #[command(flatten)]
        opts: EvalOpts,
    },
}

#[derive(Debug, Subcommand)]
enum DaemonCommand {
    /// Show whether the daemon runs, its version, uptime and memory.
    Status,
    /// Stop the daemon gracefully.
    Stop,
}

/// The process's entry point (see the module documentation for why it is not Rust's `fn main`).
#[cfg(not(test))]
#[unsafe(no_mangle)]
pub extern "C" fn main(_argc: libc::c_int, _argv: *const *const libc::c_char) -> libc::c_int {
    // SAFETY: setting a signal's disposition to SIG_IGN has no preconditions; no other thread runs yet.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    }
    let code = match std::panic::catch_unwind(real_main) {
        // flakectl exits with 0 or 1 only.
        Ok(code) if code == ExitCode::SUCCESS => 0,
        Ok(_) => 1,
        Err(_) => 101,
    };
    let _ = std::io::stdout().flush();
    code
}

#[cfg_attr(test, allow(dead_code))]
fn real_main() -> ExitCode {
    // The common `eval` command line skips clap's set-up; anything else is clap's to parse.
    let parsed = match fastargs::parse(std::env::args_os()) {
        Some(cli) => Ok(cli),
        None => Cli::try_parse(),
    };
    let cli = match parsed {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            let mut err = std::io::stderr().lock();
            let _ = err.write_all(e.text.as_bytes());
            if !e.text.ends_with('\n') {
                let _ = err.write_all(b"\n");
            }
            ExitCode::from(1)
        }
    }
}

/// Runs `fut` on a single-threaded tokio runtime.
fn block_on<T>(fut: impl std::future::Future<Output = Result<T, CliError>>) -> Result<T, CliError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
        .map_err(|e| CliError::msg(format!("cannot start the async runtime: {e}")))?
        .block_on(fut)
}

fn context(opts: &EvalOpts) -> Result<pb::ClientContext, CliError> {
    let cwd = std::env::current_dir()
        .map_err(|e| CliError::msg(format!("cannot determine the current directory: {e}")))?;
    Ok(pb::ClientContext {
        cwd: cwd.to_string_lossy().into_owned(),
        impure: opts.impure,
        env: if opts.impure {
            std::env::vars_os()
                .map(|(k, v)| {
                    (
                        k.to_string_lossy().into_owned(),
                        v.to_string_lossy().into_owned(),
                    )
                })
                .collect()
        } else {
            Default::default()
        },
        include_paths: opts.include.clone(),
        nix_path: std::env::var_os("NIX_PATH").map(|v| v.to_string_lossy().into_owned()),
        system: opts.system.clone().unwrap_or_default(),
    })
}

fn write_stdout(bytes: &[u8]) -> Result<(), CliError> {
    let mut out = std::io::stdout().lock();
    out.write_all(bytes)
        .and_then(|()| out.flush())
        .map_err(|e| CliError::msg(format!("cannot write to stdout: {e}")))
}

fn print_stderr_lines(lines: &[String]) {
    let mut err = std::io::stderr().lock();
    for line in lines {
        let _ = err.write_all(line.as_bytes());
        if !line.ends_with('\n') {
            let _ = err.write_all(b"\n");
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode, CliError> {
    let no_auto_start = cli.no_auto_start
        || std::env::var_os("FLAKECTL_NO_AUTO_START").is_some_and(|v| !v.is_empty() && v != "0");
    let target = autostart::Target {
        socket: cli
            .socket
            .clone()
            .unwrap_or_else(flaked_proto::default_socket_path),
        auto_start: !no_auto_start,
        idle_exit: cli.daemon_idle_exit.clone(),
    };
    match cli.command {
        Command::Eval {
            installable,
            expr,
            file,
            json,
            raw,
            opts,
        } => {
            use pb::eval_request::Source;
            let (source, attr_path) = match (expr, file, installable) {
                (Some(e), None, attr) => (Source::Expr(e), attr.unwrap_or_default()),
                (None, Some(f), attr) => (Source::File(f), attr.unwrap_or_default()),
                (None, None, Some(i)) => (Source::Installable(i), String::new()),
                (None, None, None) => (Source::Installable(".".to_string()), String::new()),
                (Some(_), Some(_), _) => {
                    return Err(CliError::msg(
                        "'--expr' and '--file' cannot be used together",
                    ));
                }
            };
            let output = if json {
                pb::OutputFormat::Json
            } else if raw {
                pb::OutputFormat::Raw
            } else {
                pb::OutputFormat::Nix
            };
            let req = pb::EvalRequest {
                context: Some(context(&opts)?),
                source: Some(source),
                attr_path,
                output: output as i32,
            };
            let reply = if fast_path_enabled() {
                match fastcall::eval(
                    &target.socket,
                    &req,
                    flaked_proto::socket::MAX_RESPONSE_BYTES,
                ) {
                    Ok(fastcall::Answer::Reply(reply)) => Some(reply),
                    Ok(fastcall::Answer::Status(status)) => return Err(status.into()),
                    Err(fastcall::Fallback(why)) => {
                        if std::env::var_os("FLAKECTL_DEBUG_FAST_PATH").is_some() {
                            eprintln!("flakectl: fast path not taken: {why}");
                        }
                        None
                    }
                }
            } else {
                None
            };
            let reply = match reply {
                Some(reply) => reply,
                None => block_on(async {
                    let mut client = autostart::connect(&target).await?;
                    Ok(client.eval(req).await?.into_inner())
                })?,
            };
            print_stderr_lines(&reply.stderr);
            match reply.result {
                Some(pb::eval_response::Result::Stdout(out)) => {
                    write_stdout(&out)?;
                    Ok(ExitCode::SUCCESS)
                }
                Some(pb::eval_response::Result::Error(d)) => Err(CliError::rendered(d.rendered)),
                None => Err(CliError::msg("flaked sent an empty evaluation reply")),
            }
        }
        Command::Build(args) => block_on(build::run(args, &target)),
        Command::Search(args) => block_on(search::run(args, &target)),
        Command::Flake { command } => block_on(flake(command, &target)),
        Command::Daemon { command } => block_on(daemon(command, &target)),
    }
}

/// Whether `eval` tries the synchronous client first (`FLAKECTL_NO_FAST_PATH=1` sends every request
/// through tonic, for comparison and tests).
fn fast_path_enabled() -> bool {
    std::env::var_os("FLAKECTL_NO_FAST_PATH").is_none_or(|v| v.is_empty() || v == "0")
}

async fn flake(command: FlakeCommand, target: &autostart::Target) -> Result<ExitCode, CliError> {
    match command {
        FlakeCommand::Lock {
            flake_ref,
            update_input,
            override_input,
            opts,
        } => {
            let overrides = override_input
                .chunks(2)
                .map(|c| pb::InputOverride {
                    input: c[0].clone(),
                    flake_ref: c.get(1).cloned().unwrap_or_default(),
                })
                .collect();
            let req = pb::LockRequest {
                context: Some(context(&opts)?),
                flake_ref,
                update_all: false,
                update_inputs: update_input,
                overrides,
                dry_run: false,
            };
            lock(req, target).await
        }
        FlakeCommand::Update {
            inputs,
            flake,
            opts,
        } => {
            let req = pb::LockRequest {
                context: Some(context(&opts)?),
                flake_ref: flake,
                update_all: inputs.is_empty(),
                update_inputs: inputs,
                overrides: Vec::new(),
                dry_run: false,
            };
            lock(req, target).await
        }
        FlakeCommand::Metadata {
            flake_ref,
            json,
            opts,
        } => {
            let req = pb::FlakeMetadataRequest {
                context: Some(context(&opts)?),
                flake_ref,
                json,
            };
            let mut client = autostart::connect(target).await?;
            let reply = client.flake_metadata(req).await?.into_inner();
            print_stderr_lines(&reply.stderr);
            match reply.result {
                Some(pb::flake_metadata_response::Result::Metadata(m)) => {
                    write_stdout(if json { &m.json } else { &m.text })?;
                    Ok(ExitCode::SUCCESS)
                }
                Some(pb::flake_metadata_response::Result::Error(d)) => {
                    Err(CliError::rendered(d.rendered))
                }
                None => Err(CliError::msg("flaked sent an empty reply")),
            }
        }
        FlakeCommand::Show {
            flake_ref,
            json,
            all_systems,
            legacy,
            opts,
        } => {
            let req = pb::FlakeShowRequest {
                context: Some(context(&opts)?),
                flake_ref,
                all_systems,
                legacy,
                json,
            };
            let mut client = autostart::connect(target).await?;
            let reply = client.flake_show(req).await?.into_inner();
            print_stderr_lines(&reply.stderr);
            match reply.result {
                Some(pb::flake_show_response::Result::Shown(s)) => {
                    write_stdout(if json { &s.json } else { &s.text })?;
                    Ok(ExitCode::SUCCESS)
                }
                Some(pb::flake_show_response::Result::Error(d)) => {
                    Err(CliError::rendered(d.rendered))
                }
                None => Err(CliError::msg("flaked sent an empty reply")),
            }
        }
    }
}

async fn lock(req: pb::LockRequest, target: &autostart::Target) -> Result<ExitCode, CliError> {
    let mut client = autostart::connect(target).await?;
    let reply = client.lock(req).await?.into_inner();
    print_stderr_lines(&reply.stderr);
    match reply.result {
        Some(pb::lock_response::Result::Locked(l)) => {
            print_stderr_lines(&l.changes);
            Ok(ExitCode::SUCCESS)
        }
        Some(pb::lock_response::Result::Error(d)) => Err(CliError::rendered(d.rendered)),
        None => Err(CliError::msg("flaked sent an empty reply")),
    }
}

async fn daemon(command: DaemonCommand, target: &autostart::Target) -> Result<ExitCode, CliError> {
    // Neither command starts a daemon: asking whether one runs must not start one.
    let target = autostart::Target {
        socket: target.socket.clone(),
        auto_start: false,
        idle_exit: target.idle_exit.clone(),
    };
    let mut client: FlakedClient<Channel> = autostart::connect(&target).await?;
    match command {
        DaemonCommand::Status => {
            let s = client.status(pb::StatusRequest {}).await?.into_inner();
            let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
            let warm = if s.warm.is_empty() {
                "none".to_string()
            } else {
                s.warm
                    .iter()
                    .map(|w| format!("\n  {} ({:.1} MiB)", w.flake, mib(w.memory_bytes)))
                    .collect()
            };
            let cache = match &s.eval_cache {
                Some(c) => {
                    let lookups = c.hits + c.negative_hits + c.misses;
                    let rate = if lookups == 0 {
                        0.0
                    } else {
                        100.0 * (c.hits + c.negative_hits) as f64 / lookups as f64
                    };
                    format!(
                        "eval cache: {:.1} MiB on disk, {} lookups ({:.0}% answered: {} hits, {} known missing), {} rows written, {} rebuilt\n",
                        mib(c.disk_bytes),
                        lookups,
                        rate,
                        c.hits,
                        c.negative_hits,
                        c.rows_committed,
                        c.rebuilds
                    )
                }
                None => String::new(),
            };
            let text = format!(
                "flaked {} (pid {})\nsocket: {}{}\nuptime: {:.1}s\nmemory: {:.1} MiB resident\nrequests: {} in flight, {} served\nwarm flakes: {}\nwarm answers replayed: {}\n",
                s.version,
                s.pid,
                s.socket_path,
                if s.socket_activated {
                    " (socket-activated)"
                } else {
                    ""
                },
                s.uptime_seconds,
                s.memory_rss_bytes as f64 / (1024.0 * 1024.0),
                s.requests_in_flight,
                s.requests_served,
                warm,
                s.warm_replays
            ) + &cache;
            write_stdout(text.as_bytes())?;
        }
        DaemonCommand::Stop => {
            let r = client.shutdown(pb::ShutdownRequest {}).await?.into_inner();
            let text = format!(
                "flaked is stopping ({} request(s) still in flight)\n",
                r.requests_in_flight
            );
            write_stdout(text.as_bytes())?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

//! `flaked`: the daemon's entry point. Parses flags, resolves the configuration, obtains the socket and
//! runs the serve loop on a tokio runtime. Exit status: 0 after a clean shutdown, 1 when the daemon could
//! not start (bad configuration, socket in use) or serving failed.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use flaked_daemon::config::{Config, LogFormat, Overrides};
use flaked_daemon::service::{TestHooks, panic_message};
use flaked_daemon::{keeper, listener, server};

// The evaluator allocates many small values; mimalloc is markedly faster at that than glibc's malloc.
#[global_allocator]
static GLOBAL: flaked_eval::alloc::MiMalloc = flaked_eval::alloc::MiMalloc;

/// The flaked daemon: evaluates Nix for flakectl over gRPC on a Unix socket.
#[derive(Debug, Parser)]
#[command(name = "flaked", version)]
struct Args {
    /// Configuration file (TOML). Default: $FLAKED_CONFIG, else ~/.config/flaked/config.toml
    /// (/etc/flaked/config.toml for root), if it exists.
    #[arg(long, value_name = "PATH")]
    config: Option<PathBuf>,
    /// Socket to listen on. Default: $FLAKED_SOCKET, $XDG_RUNTIME_DIR/flaked/socket,
    /// /run/flaked/socket (root), else ~/.cache/flaked/socket.
    #[arg(long, value_name = "PATH")]
    socket: Option<PathBuf>,
    /// Permission bits of the socket file (octal). Default 0600.
    #[arg(long, value_name = "MODE")]
    socket_mode: Option<String>,
    /// Exit after this long without requests (e.g. 10m). Default: never.
    #[arg(long, value_name = "DURATION")]
    idle_exit: Option<String>,
    /// Log format on stderr: plain or json.
    #[arg(long, value_name = "FORMAT")]
    log_format: Option<String>,
    /// Log filter (e.g. info, debug, flaked_daemon=debug).
    #[arg(long, value_name = "FILTER")]
    log_level: Option<String>,
    /// Largest request accepted, in bytes (suffixes K, M, G). Default 4M.
    #[arg(long, value_name = "SIZE")]
    max_request_bytes: Option<String>,
    /// Per-request bound on evaluation time. Default 10m.
    #[arg(long, value_name = "DURATION")]
    request_timeout: Option<String>,
    /// How long in-flight requests may finish after SIGTERM. Default 10s.
    #[arg(long, value_name = "DURATION")]
    shutdown_grace: Option<String>,
    /// Evaluations that may run at once. Default: the number of CPUs.
    #[arg(long, value_name = "N")]
    eval_workers: Option<String>,
    /// Eval caches and the fetcher cache. Default: $XDG_CACHE_HOME/flaked (/var/cache/flaked for root).
    #[arg(long, value_name = "DIR")]
    cache_dir: Option<PathBuf>,
    /// Physical root of the store (its logical directory stays /nix/store). Default:
    /// $FLAKED_STORE_ROOT, / for root, else $XDG_DATA_HOME/flaked/store-root.
    #[arg(long, value_name = "DIR")]
    store_root: Option<PathBuf>,
    /// The global flake registry: a local JSON file. Default: none.
    #[arg(long, value_name = "PATH")]
    flake_registry: Option<String>,
    /// Memory budget for warm flakes (suffixes K, M, G). Default: a quarter of RAM.
    #[arg(long, value_name = "SIZE")]
    warm_memory: Option<String>,
    /// Concurrent builds. Default: the number of CPUs.
    #[arg(long, value_name = "N")]
    max_jobs: Option<String>,
    /// Host paths visible in build sandboxes, space-separated (PATH or TARGET=SOURCE, `?` suffix
    /// for optional ones), e.g. "/bin/sh=/bin/sh /lib /lib64". Default: none.
    #[arg(long, value_name = "PATHS")]
    sandbox_paths: Option<String>,
}

fn main() -> ExitCode {
    // No transparent huge pages for this process: mimalloc asks for them on its arenas, and
    // with them a page the evaluator frees keeps 2 MiB resident instead of 4 KiB, which makes
    // the daemon's resident memory far larger than what it holds (a cold search of a
    // 20,000-package flake peaked at 97 MiB with them, 71 MiB without). The setting is
    // inherited by builders; it only changes how their memory is paged.
    // SAFETY: prctl with integer arguments only.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
    // A keeper of a stopped daemon's watches (see flaked_daemon::keeper), started by the daemon.
    if std::env::args_os()
        .nth(1)
        .is_some_and(|a| a == keeper::KEEPER_ARG)
    {
        let args: Vec<String> = std::env::args_os()
            .skip(2)
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        return ExitCode::from(keeper::run_keeper(&args));
    }
    let args = Args::parse();
    // Before any thread exists: take the socket the service manager passed, if any.
    let activated = listener::from_activation();
    let env: BTreeMap<String, String> = std::env::vars().collect();
    let flags = Overrides {
        config: args.config,
        socket: args.socket,
        socket_mode: args.socket_mode,
        idle_exit: args.idle_exit,
        log_format: args.log_format,
        log_level: args.log_level,
        max_request_bytes: args.max_request_bytes,
        request_timeout: args.request_timeout,
        shutdown_grace: args.shutdown_grace,
        eval_workers: args.eval_workers,
        cache_dir: args.cache_dir,
        store_root: args.store_root,
        flake_registry: args.flake_registry,
        warm_memory: args.warm_memory,
        max_jobs: args.max_jobs,
        sandbox_paths: args.sandbox_paths,
    };
    let config = match Config::resolve(&flags, &env) {
        Ok(c) => c,
        Err(e) => {
            init_logging(LogFormat::Plain, "info");
            tracing::error!("{e}");
            return ExitCode::FAILURE;
        }
    };
    init_logging(config.log_format, &config.log_level);
    if let Some(root) = &config.store_root {
        flaked_eval::store_path::set_store_root(Some(root.clone()));
    }
    std::panic::set_hook(Box::new(|info| {
        let location = info.location().map(|l| l.to_string()).unwrap_or_default();
        tracing::error!(location, panic = %panic_message(info.payload()), "panic");
    }));

    let listener = match activated {
        Ok(Some(l)) => l,
        Ok(None) => match listener::bind(&config.socket, config.socket_mode) {
            Ok(l) => l,
            Err(e) => {
                tracing::error!("{e}");
                return ExitCode::FAILURE;
            }
        },
        Err(e) => {
            tracing::error!("{e}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(file) = &config.config_file {
        tracing::info!(file = %file.display(), "configuration file read");
    }

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(config.eval_workers + 16)
        .thread_name("flaked-rt")
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!("cannot start the async runtime: {e}");
            listener.cleanup();
            return ExitCode::FAILURE;
        }
    };
    // The serve loop runs as a task on a worker thread rather than on this thread: a connection is
    // then accepted by the worker whose I/O driver saw it, and its task starts on that worker (no
    // wake-up of this thread and hand-off back to a worker for every connection).
    let serve = server::serve(config, listener, TestHooks::from_env(&env));
    let result = runtime.block_on(async move {
        match tokio::spawn(serve).await {
            Ok(result) => result,
            Err(e) => match e.try_into_panic() {
                Ok(panic) => std::panic::resume_unwind(panic),
                Err(e) => Err(server::ServeError::Io(std::io::Error::other(e))),
            },
        }
    });
    // Evaluations that ignored their interrupt flag must not keep the process alive.
    runtime.shutdown_timeout(Duration::from_millis(200));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(format: LogFormat, filter: &str) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false);
    match format {
        LogFormat::Plain => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

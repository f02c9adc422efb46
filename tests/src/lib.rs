//! Helpers for the end-to-end tests: locate (building if needed) the real `flaked` and `flakectl`
//! binaries, start a daemon on a private socket and wait for its `READY=1`, run `flakectl` as a
//! subprocess.
//!
//! Invariant: every daemon a test starts is isolated (its own temporary socket directory, an empty
//! configuration file, no inherited `FLAKED_*` variables) and is killed when its [`Daemon`] is dropped,
//! so a failing test leaves no process behind.

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The two binaries under test.
#[derive(Debug)]
pub struct Bins {
    pub flaked: PathBuf,
    pub flakectl: PathBuf,
}

/// The binaries, built once per test process with the same profile and target directory as the test
/// itself (`cargo test` builds a package's own binaries only for that package's tests, and these live in
/// other packages). `FLAKED_BIN` and `FLAKECTL_BIN` override the lookup.
pub fn bins() -> &'static Bins {
    static BINS: OnceLock<Bins> = OnceLock::new();
    BINS.get_or_init(|| {
        if let (Some(d), Some(c)) = (
            std::env::var_os("FLAKED_BIN"),
            std::env::var_os("FLAKECTL_BIN"),
        ) {
            return Bins {
                flaked: d.into(),
                flakectl: c.into(),
            };
        }
        let exe = std::env::current_exe().expect("the test binary knows its path");
        // <target>/<profile>/deps/<test>-<hash>
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("test binaries live in <target>/<profile>/deps")
            .to_owned();
        let target_dir = profile_dir
            .parent()
            .expect("profile dir has a parent")
            .to_owned();
        let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
            Some("debug") | None => "dev".to_string(),
            Some(p) => p.to_string(),
        };
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("the tests crate lives in the workspace");
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let out = Command::new(cargo)
            .current_dir(workspace)
            // `--workspace --bins` rather than `-p flaked -p flakectl`: the same package selection
            // as the `cargo test --workspace` that runs us, hence the same feature unification, so
            // every library is reused and only the binaries are linked.
            .args([
                "build",
                "--workspace",
                "--bins",
                "--profile",
                &profile,
                "--target-dir",
            ])
            .arg(&target_dir)
            .output()
            .expect("cargo runs");
        assert!(
            out.status.success(),
            "building flaked and flakectl failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        Bins {
            flaked: profile_dir.join("flaked"),
            flakectl: profile_dir.join("flakectl"),
        }
    })
}

/// Variables that would make a daemon or client look elsewhere than the test says.
const SCRUBBED: &[&str] = &[
    "FLAKED_SOCKET",
    "FLAKED_CONFIG",
    "FLAKED_SOCKET_MODE",
    "FLAKED_IDLE_EXIT",
    "FLAKED_LOG_FORMAT",
    "FLAKED_LOG",
    "FLAKED_MAX_REQUEST_BYTES",
    "FLAKED_REQUEST_TIMEOUT",
    "FLAKED_SHUTDOWN_GRACE",
    "FLAKED_EVAL_WORKERS",
    "FLAKED_CACHE_DIR",
    "FLAKED_STORE_ROOT",
    "FLAKED_FLAKE_REGISTRY",
    "FLAKED_WARM_MEMORY",
    "FLAKED_MAX_JOBS",
    "FLAKED_SANDBOX_PATHS",
    "FLAKED_TEST_EVAL_DELAY_MS",
    "FLAKED_TEST_PANIC_EXPR",
    "FLAKED_BIN",
    "FLAKECTL_NO_AUTO_START",
    "NOTIFY_SOCKET",
    "LISTEN_PID",
    "LISTEN_FDS",
    "NIX_PATH",
];

/// A scratch directory with an empty configuration file, and a socket path inside it.
pub struct Scratch {
    pub dir: tempfile::TempDir,
}

impl Scratch {
    pub fn new() -> Scratch {
        let dir = tempfile::Builder::new()
            .prefix("flaked-e2e-")
            .tempdir_in("/tmp")
            .expect("create a temporary directory");
        std::fs::write(dir.path().join("config.toml"), "").expect("write empty config");
        Scratch { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("sock")
    }

    pub fn config(&self) -> PathBuf {
        self.dir.path().join("config.toml")
    }

    /// A command for a fresh environment: scrubbed variables, the empty configuration file.
    pub fn command(&self, program: &Path) -> Command {
        let mut cmd = Command::new(program);
        for var in SCRUBBED {
            cmd.env_remove(var);
        }
        cmd.env("FLAKED_CONFIG", self.config());
        cmd
    }

    /// `flakectl --socket SOCK ARGS…` without auto-start.
    pub fn flakectl(&self, args: &[&str]) -> Output {
        self.flakectl_cmd(args).output().expect("run flakectl")
    }

    pub fn flakectl_cmd(&self, args: &[&str]) -> Command {
        let mut cmd = self.command(&bins().flakectl);
        cmd.arg("--socket")
            .arg(self.socket())
            .arg("--no-auto-start")
            .args(args)
            .current_dir(self.path());
        cmd
    }
}

impl Default for Scratch {
    fn default() -> Self {
        Scratch::new()
    }
}

/// A running daemon, killed on drop.
pub struct Daemon {
    pub child: Child,
    pub socket: PathBuf,
    pub log: PathBuf,
}

/// How to start a daemon.
#[derive(Default)]
pub struct DaemonOpts<'a> {
    pub args: &'a [&'a str],
    pub env: &'a [(&'a str, &'a str)],
}

impl Daemon {
    /// Starts `flaked --socket <scratch>/sock`, waits for `READY=1` on a notify socket (bounded).
    pub fn start(scratch: &Scratch, opts: DaemonOpts<'_>) -> Daemon {
        Daemon::try_start(scratch, opts).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Like [`Daemon::start`], but returns the daemon's failure (exit status and log) instead of panicking.
    pub fn try_start(scratch: &Scratch, opts: DaemonOpts<'_>) -> Result<Daemon, String> {
        let socket = scratch.socket();
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let log = scratch.path().join(format!("flaked-{n}.log"));
        let notify_path = scratch.path().join(format!("notify-{n}"));
        let notify = UnixDatagram::bind(&notify_path).expect("bind notify socket");
        notify
            .set_read_timeout(Some(Duration::from_millis(50)))
            .expect("set timeout");
        let mut cmd = scratch.command(&bins().flaked);
        cmd.arg("--socket").arg(&socket);
        // Store objects and caches stay inside the scratch directory (CI runs as root, where the
        // default store root would be the real /nix/store).
        if !opts.args.contains(&"--store-root") {
            cmd.arg("--store-root")
                .arg(scratch.path().join("store-root"));
        }
        if !opts.args.contains(&"--cache-dir") {
            cmd.arg("--cache-dir").arg(scratch.path().join("cache"));
        }
        cmd.args(opts.args)
            .env("NOTIFY_SOCKET", &notify_path)
            .env("FLAKED_LOG", "debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("create log"));
        for (k, v) in opts.env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn flaked");
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut buf = [0u8; 512];
        loop {
            if let Ok(n) = notify.recv(&mut buf)
                && String::from_utf8_lossy(&buf[..n])
                    .lines()
                    .any(|l| l == "READY=1")
            {
                return Ok(Daemon { child, socket, log });
            }
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!(
                    "flaked exited ({status}) before READY=1:\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                ));
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "flaked sent no READY=1 within 30s:\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                ));
            }
        }
    }

    pub fn pid(&self) -> i32 {
        i32::try_from(self.child.id()).expect("pid fits")
    }

    /// Everything the daemon logged so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends a signal to the daemon.
    pub fn signal(&self, sig: i32) {
        // SAFETY: kill on our own child's pid.
        unsafe {
            libc::kill(self.pid(), sig);
        }
    }

    /// Waits (bounded) for the daemon to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        wait_child(&mut self.child, timeout)
    }
}

static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// Waits for a child to exit, at most `timeout`.
pub fn wait_child(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// A current-thread runtime for tests that speak gRPC directly.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("build a runtime")
}

/// A minimal client context for direct gRPC requests.
pub fn context(cwd: &Path) -> flaked_proto::v1::ClientContext {
    flaked_proto::v1::ClientContext {
        cwd: cwd.display().to_string(),
        ..Default::default()
    }
}

/// stdout and stderr of an output, as text.
pub fn texts(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Polls `f` every 10 ms until it returns true or `timeout` passes.
pub fn eventually(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Writes `text` to `path`, creating its directory.
pub fn write(path: &Path, text: &str) {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).expect("mkdir");
    }
    std::fs::write(path, text).expect("write");
}

/// Runs `git ARGS…` in `dir` with a fixed identity and branch name; panics on failure.
pub fn git(dir: &Path, args: &[&str]) {
    let out = Command::new("git")
        .current_dir(dir)
        .args([
            "-c",
            "user.name=test",
            "-c",
            "user.email=test@localhost",
            "-c",
            "commit.gpgsign=false",
            "-c",
            "init.defaultBranch=main",
        ])
        .args(args)
        .output()
        .expect("git runs");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `sandbox-paths` for `/bin/sh` and the shared libraries it loads (found with `ldd`), so that a
/// builder `/bin/sh` runs inside the sandbox of this (non-Nix) host.
pub fn shell_sandbox_paths() -> String {
    let mut out = std::collections::BTreeSet::new();
    let real = std::fs::canonicalize("/bin/sh").expect("/bin/sh exists");
    out.insert(format!("/bin/sh={}", real.display()));
    let ldd = Command::new("ldd")
        .arg("/bin/sh")
        .output()
        .expect("ldd runs");
    for line in String::from_utf8_lossy(&ldd.stdout).lines() {
        let lib = match line.split_once("=>") {
            Some((_, rest)) => rest.split_whitespace().next(),
            None => line.split_whitespace().next(),
        };
        if let Some(lib) = lib.filter(|l| l.starts_with('/')) {
            let real = std::fs::canonicalize(lib).expect("library exists");
            out.insert(format!("{lib}={}", real.display()));
        }
    }
    out.into_iter().collect::<Vec<_>>().join(" ")
}

/// Makes `fd` the child's descriptor 3, the first one a service manager passes (`LISTEN_FDS`).
pub fn pass_as_fd3(cmd: &mut Command, fd: std::os::fd::RawFd) {
    use std::os::unix::process::CommandExt;
    // SAFETY: dup2/fcntl between fork and exec are async-signal-safe.
    unsafe {
        cmd.pre_exec(move || {
            // dup2 onto itself would keep FD_CLOEXEC (Rust opens every descriptor close-on-exec).
            let ok = if fd == 3 {
                libc::fcntl(3, libc::F_SETFD, 0) == 0
            } else {
                libc::dup2(fd, 3) == 3
            };
            if ok {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
}

//! Reaching the daemon, starting it when none answers.
//!
//! Invariants: a daemon is started only when the socket does not exist or refuses connections (never
//! when it answers or denies permission); the started daemon gets `--idle-exit` so it goes away on its
//! own; waiting for it is bounded, and a failure says why, quoting the daemon's log.

use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use flaked_proto::v1::flaked_client::FlakedClient;
use tokio::net::UnixStream;
use tonic::transport::Channel;

use crate::CliError;

/// How long to wait for a started daemon to answer.
const START_TIMEOUT: Duration = Duration::from_secs(15);

/// How to reach the daemon.
pub struct Target {
    pub socket: PathBuf,
    /// Start a daemon when none answers.
    pub auto_start: bool,
    /// `--idle-exit` for a started daemon.
    pub idle_exit: String,
}

fn not_running(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
    )
}

/// Connects to the daemon, starting one if allowed and needed.
pub async fn connect(target: &Target) -> Result<FlakedClient<Channel>, CliError> {
    match UnixStream::connect(&target.socket).await {
        Ok(stream) => handshake(stream).await,
        Err(e) if not_running(&e) && target.auto_start => {
            let stream = start(target).await?;
            handshake(stream).await
        }
        Err(e) if not_running(&e) => Err(CliError::msg(format!(
            "flaked is not running (no daemon answers on '{}')",
            target.socket.display()
        ))),
        Err(e) => Err(CliError::msg(format!(
            "cannot connect to flaked at '{}': {e}",
            target.socket.display()
        ))),
    }
}

async fn handshake(stream: UnixStream) -> Result<FlakedClient<Channel>, CliError> {
    flaked_proto::connect_stream(stream)
        .await
        .map_err(|e| CliError::msg(e.to_string()))
}

/// Where to find the `flaked` binary: next to this executable, else on PATH.
fn daemon_program() -> PathBuf {
    if let Some(p) = std::env::var_os("FLAKED_BIN").filter(|v| !v.is_empty()) {
        return PathBuf::from(p);
    }
    if let Ok(exe) = std::env::current_exe()
        && let Some(dir) = exe.parent()
    {
        let candidate = dir.join("flaked");
        if candidate.is_file() {
            return candidate;
        }
    }
    PathBuf::from("flaked")
}

fn log_path(socket: &Path) -> PathBuf {
    let mut name = socket.as_os_str().to_owned();
    name.push(".log");
    PathBuf::from(name)
}

/// The last lines of the daemon's log, for an error message.
fn log_tail(path: &Path) -> String {
    let Ok(mut f) = std::fs::File::open(path) else {
        return String::new();
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = f.seek(SeekFrom::Start(len.saturating_sub(2000)));
    let mut s = String::new();
    let _ = f.read_to_string(&mut s);
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(5)..].join("\n")
}

/// Starts a daemon on the target socket and waits until it accepts connections.
async fn start(target: &Target) -> Result<UnixStream, CliError> {
    let socket = &target.socket;
    if let Some(dir) = socket.parent().filter(|d| !d.as_os_str().is_empty())
        && !dir.exists()
    {
        if let Some(grand) = dir.parent().filter(|d| !d.as_os_str().is_empty()) {
            let _ = std::fs::create_dir_all(grand);
        }
        let _ = std::fs::DirBuilder::new().mode(0o700).create(dir);
    }
    let log = log_path(socket);
    let log_file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .map_err(|e| {
            CliError::msg(format!(
                "cannot open the daemon log '{}': {e}",
                log.display()
            ))
        })?;
    let program = daemon_program();
    let mut cmd = Command::new(&program);
    cmd.arg("--socket")
        .arg(socket)
        .arg("--idle-exit")
        .arg(&target.idle_exit)
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log_file);
    // SAFETY: setsid is async-signal-safe; the daemon gets its own session so that a terminal's
    // Ctrl-C (sent to our process group) does not stop it.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    let mut child = cmd.spawn().map_err(|e| {
        CliError::msg(format!(
            "no daemon answers on '{}' and starting '{}' failed: {e}",
            socket.display(),
            program.display()
        ))
    })?;

    let started = Instant::now();
    let mut exited: Option<(std::process::ExitStatus, Instant)> = None;
    loop {
        match UnixStream::connect(socket).await {
            Ok(stream) => return Ok(stream),
            Err(e) if not_running(&e) => {}
            Err(e) => {
                return Err(CliError::msg(format!(
                    "cannot connect to the started flaked at '{}': {e}",
                    socket.display()
                )));
            }
        }
        if exited.is_none()
            && let Ok(Some(status)) = child.try_wait()
        {
            exited = Some((status, Instant::now()));
        }
        // A daemon that exited may have lost a race with another one starting on the same socket:
        // give that one a moment before reporting the failure.
        if let Some((status, when)) = exited
            && when.elapsed() > Duration::from_secs(2)
        {
            return Err(CliError::msg(format!(
                "flaked exited ({status}) before it was ready; its log '{}' ends with:\n{}",
                log.display(),
                log_tail(&log)
            )));
        }
        if started.elapsed() > START_TIMEOUT {
            return Err(CliError::msg(format!(
                "flaked did not become ready on '{}' within {}s; see its log '{}'",
                socket.display(),
                START_TIMEOUT.as_secs(),
                log.display()
            )));
        }
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
}

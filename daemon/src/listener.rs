//! Obtains the listening socket: from the service manager (socket activation) or by binding the
//! configured path, making sure that only one daemon serves a socket path.
//!
//! Invariants: a daemon that binds a path holds an exclusive `flock` on `<socket>.lock` for as long as it
//! runs, so a second daemon on the same path refuses to start; a socket file is removed only when nobody
//! holds that lock and nothing answers on it (it is stale); a regular file at the socket path is never
//! removed. A directory the daemon creates for its socket is mode 0700; the socket gets the configured
//! mode (0600 by default).

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::net::{UnixListener as StdUnixListener, UnixStream as StdUnixStream};
use std::path::{Path, PathBuf};

/// The first file descriptor passed by socket activation (`SD_LISTEN_FDS_START`).
const LISTEN_FDS_START: RawFd = 3;

/// Why the daemon could not obtain its socket.
#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    #[error("another flaked{pid} is already serving on '{path}'")]
    AlreadyRunning { path: PathBuf, pid: String },
    #[error(
        "something is already listening on '{path}' (not a flaked holding its lock file; a systemd socket unit?)"
    )]
    InUse { path: PathBuf },
    #[error("'{path}' exists and is not a socket; refusing to replace it")]
    NotASocket { path: PathBuf },
    #[error("socket path '{path}' is too long ({len} bytes; a Unix socket path has at most 107)")]
    TooLong { path: PathBuf, len: usize },
    #[error("{what} '{path}': {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("socket activation: {0}")]
    Activation(String),
}

/// A socket to serve, and what must be cleaned up when the daemon stops.
#[derive(Debug)]
pub struct Listener {
    pub listener: StdUnixListener,
    /// The socket's path (for status and logs).
    pub path: PathBuf,
    /// Whether the service manager passed the socket.
    pub activated: bool,
    /// Set when this daemon bound the path: the lock file (held open) and the socket's identity.
    owned: Option<Owned>,
}

#[derive(Debug)]
struct Owned {
    _lock: File,
    lock_path: PathBuf,
    dev: u64,
    ino: u64,
}

impl Listener {
    /// Removes the socket file this daemon created (if it is still the same file) and its lock file.
    pub fn cleanup(&self) {
        if let Some(owned) = &self.owned {
            if let Ok(meta) = std::fs::symlink_metadata(&self.path)
                && meta.dev() == owned.dev
                && meta.ino() == owned.ino
            {
                let _ = std::fs::remove_file(&self.path);
            }
            let _ = std::fs::remove_file(&owned.lock_path);
        }
    }
}

/// Takes the socket passed by the service manager, if the environment says one was passed to this
/// process. Must be called before any thread is started (it clears the `LISTEN_*` variables).
pub fn from_activation() -> Result<Option<Listener>, ListenError> {
    let pid = std::env::var("LISTEN_PID").ok();
    let fds = std::env::var("LISTEN_FDS").ok();
    let names = std::env::var("LISTEN_FDNAMES").unwrap_or_default();
    // SAFETY: called from `main` before the runtime or any other thread exists, so nothing reads the
    // environment concurrently.
    unsafe {
        std::env::remove_var("LISTEN_PID");
        std::env::remove_var("LISTEN_FDS");
        std::env::remove_var("LISTEN_FDNAMES");
    }
    let (Some(pid), Some(fds)) = (pid, fds) else {
        return Ok(None);
    };
    if pid.trim() != std::process::id().to_string() {
        return Ok(None);
    }
    let n: i32 = fds
        .trim()
        .parse()
        .map_err(|_| ListenError::Activation(format!("LISTEN_FDS is not a number: '{fds}'")))?;
    // Besides sockets, systemd passes back what the daemon kept in its file-descriptor store: the
    // watches of a stopped daemon (see crate::keeper), told apart by name.
    let names: Vec<&str> = names.split(':').collect();
    let mut sockets = Vec::new();
    for i in 0..n.max(0) {
        let fd = LISTEN_FDS_START + i;
        match names.get(i as usize) {
            Some(name) if name.starts_with(crate::keeper::STORE_PREFIX) => {
                // SAFETY: the service manager passed us ownership of this descriptor.
                let owned = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) };
                // SAFETY: fcntl on a descriptor this process owns.
                unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
                crate::keeper::stash_stored(name.to_string(), owned);
            }
            _ => sockets.push(fd),
        }
    }
    let fd = match sockets[..] {
        [] => return Ok(None),
        [fd] => fd,
        _ => {
            return Err(ListenError::Activation(format!(
                "expected exactly one socket, got {} (LISTEN_FDS={n})",
                sockets.len()
            )));
        }
    };
    // SAFETY: plain fcntl/getsockname on a descriptor number; failures are reported, nothing is assumed.
    unsafe {
        let mut addr: libc::sockaddr_un = std::mem::zeroed();
        let mut len = std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t;
        if libc::getsockname(fd, (&raw mut addr).cast(), &mut len) != 0 {
            return Err(ListenError::Activation(format!(
                "descriptor {fd} is not a socket: {}",
                std::io::Error::last_os_error()
            )));
        }
        if i32::from(addr.sun_family) != libc::AF_UNIX {
            return Err(ListenError::Activation(format!(
                "descriptor {fd} is not a Unix socket (ListenStream= must be a path)"
            )));
        }
        let flags = libc::fcntl(fd, libc::F_GETFD);
        libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC);
    }
    // SAFETY: the service manager passed us ownership of this descriptor, and it is a Unix socket.
    let listener = unsafe { StdUnixListener::from_raw_fd(fd) };
    listener
        .set_nonblocking(true)
        .map_err(|source| ListenError::Io {
            what: "cannot configure the activated socket",
            path: PathBuf::from(format!("fd {fd}")),
            source,
        })?;
    let path = listener
        .local_addr()
        .ok()
        .and_then(|a| a.as_pathname().map(Path::to_owned))
        .unwrap_or_else(|| PathBuf::from(format!("fd {fd}")));
    Ok(Some(Listener {
        listener,
        path,
        activated: true,
        owned: None,
    }))
}

/// Binds `path`: takes the instance lock, replaces a stale socket file, creates the directory (0700) if
/// needed, binds and sets the socket's permission bits to `mode`.
pub fn bind(path: &Path, mode: u32) -> Result<Listener, ListenError> {
    let len = path.as_os_str().len();
    if len > 107 {
        return Err(ListenError::TooLong {
            path: path.to_owned(),
            len,
        });
    }
    let io = |what: &'static str, p: &Path| {
        let p = p.to_owned();
        move |source| ListenError::Io {
            what,
            path: p,
            source,
        }
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
        && !dir.exists()
    {
        if let Some(grand) = dir.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(grand).map_err(io("cannot create directory", grand))?;
        }
        match std::fs::DirBuilder::new().mode(0o700).create(dir) {
            Ok(()) => {
                // The umask may have removed bits but never adds any; make the mode exact.
                std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
                    .map_err(io("cannot set the mode of", dir))?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io("cannot create directory", dir)(e)),
        }
    }

    let mut lock_name = path.as_os_str().to_owned();
    lock_name.push(".lock");
    let lock_path = PathBuf::from(lock_name);
    let mut lock = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_CLOEXEC)
        .open(&lock_path)
        .map_err(io("cannot open lock file", &lock_path))?;
    // SAFETY: flock on a descriptor we own.
    if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
            let mut pid = String::new();
            let _ = lock.read_to_string(&mut pid);
            let pid = pid.trim();
            return Err(ListenError::AlreadyRunning {
                path: path.to_owned(),
                pid: if pid.is_empty() {
                    String::new()
                } else {
                    format!(" (pid {pid})")
                },
            });
        }
        return Err(io("cannot lock", &lock_path)(err));
    }
    lock.set_len(0)
        .map_err(io("cannot write lock file", &lock_path))?;
    lock.rewind()
        .map_err(io("cannot write lock file", &lock_path))?;
    writeln!(lock, "{}", std::process::id()).map_err(io("cannot write lock file", &lock_path))?;

    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            // We hold the lock, so no flaked serves this path; but a service manager might.
            if StdUnixStream::connect(path).is_ok() {
                return Err(ListenError::InUse {
                    path: path.to_owned(),
                });
            }
            tracing::info!(socket = %path.display(), "replacing a stale socket file");
            std::fs::remove_file(path).map_err(io("cannot remove stale socket", path))?;
        }
        Ok(_) => {
            return Err(ListenError::NotASocket {
                path: path.to_owned(),
            });
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io("cannot inspect", path)(e)),
    }

    let listener = StdUnixListener::bind(path).map_err(io("cannot bind", path))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(io("cannot set the mode of", path))?;
    listener
        .set_nonblocking(true)
        .map_err(io("cannot configure socket", path))?;
    let meta = std::fs::symlink_metadata(path).map_err(io("cannot inspect", path))?;
    Ok(Listener {
        listener,
        path: path.to_owned(),
        activated: false,
        owned: Some(Owned {
            _lock: lock,
            lock_path,
            dev: meta.dev(),
            ino: meta.ino(),
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_bind_refused_stale_replaced_file_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sock = dir.path().join("sub").join("socket");
        let first = bind(&sock, 0o600).expect("first bind");
        let dir_mode = std::fs::metadata(sock.parent().expect("parent"))
            .expect("meta")
            .mode()
            & 0o777;
        assert_eq!(dir_mode, 0o700);
        assert_eq!(
            std::fs::metadata(&sock).expect("meta").mode() & 0o777,
            0o600
        );
        let err = bind(&sock, 0o600).expect_err("second bind must fail");
        assert!(err.to_string().contains("already serving"), "{err}");
        assert!(
            err.to_string().contains(&std::process::id().to_string()),
            "{err}"
        );
        // Simulate a crash: the lock goes away (the process died) but the socket file stays.
        drop(first);
        assert!(sock.exists());
        let again = bind(&sock, 0o600).expect("stale socket replaced");
        again.cleanup();
        assert!(!sock.exists());

        let file = dir.path().join("plain");
        std::fs::write(&file, "data").expect("write");
        let err = bind(&file, 0o600).expect_err("regular file");
        assert!(err.to_string().contains("not a socket"), "{err}");
        assert_eq!(std::fs::read_to_string(&file).expect("kept"), "data");
    }

    #[test]
    fn live_foreign_listener_is_not_replaced() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sock = dir.path().join("socket");
        let _foreign = StdUnixListener::bind(&sock).expect("bind");
        let err = bind(&sock, 0o600).expect_err("in use");
        assert!(err.to_string().contains("already listening"), "{err}");
    }
}

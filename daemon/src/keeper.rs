//! Keeps the inotify watches of remembered flake trees alive while the daemon restarts, so that
//! the first query after a restart needs no walk of its tree to know it did not change.
//!
//! A stopping daemon hands each tree whose watch saw no change since its identity was taken to a
//! small process of its own binary, the *keeper* (`flaked --watch-keeper`): the inotify file
//! descriptors, and what they vouch for (the tree, its identity). The kernel goes on queueing
//! events on those descriptors while no daemon runs. The next daemon connects to the keeper's
//! socket before it serves, receives the descriptors (`SCM_RIGHTS`) and reads their queues: a
//! tree whose queue holds no event is still the tree of the recorded identity.
//!
//! Invariants:
//! - only watches that saw nothing since their identity was taken are handed over, and what
//!   happens after that stays in their queues (the descriptors are the same kernel objects);
//! - the keeper holds a tree only while nothing happened in it: an event makes its descriptor
//!   readable, and the keeper closes it at once; it exits when it holds nothing, when its socket
//!   is removed or replaced (the cache directory deleted, a newer keeper), after one hand-over,
//!   or after [`KEEPER_LIFETIME`];
//! - it answers only its own user (or root), and a daemon that cannot reach it in time starts
//!   as without it: the hand-over can only make a restart faster.

use std::io::{self, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// How long a keeper waits for the next daemon at most.
pub const KEEPER_LIFETIME: Duration = Duration::from_secs(24 * 3600);

/// The most trees one hand-over carries (far below the kernel's 253 descriptors per message).
const MAX_TREES: usize = 64;

/// How long a starting daemon waits for the keeper's answer at most.
const TAKE_TIMEOUT: Duration = Duration::from_secs(2);

/// The first argument that makes `flaked` a keeper.
pub const KEEPER_ARG: &str = "--watch-keeper";

/// Version of what a keeper sends: a daemon ignores other versions.
const FORMAT: u32 = 1;

/// One tree as handed over: its watch's inotify descriptor and what the watch vouches for.
#[derive(Debug)]
pub struct KeptTree {
    /// A git work tree (`true`) or a `path:` directory.
    pub git: bool,
    pub root: PathBuf,
    /// The tree's identity when its watch was armed: HEAD commit (git) and content key.
    pub rev: Option<String>,
    pub key: String,
    /// Directories the watch covers.
    pub dirs: usize,
    pub fd: OwnedFd,
}

#[derive(Clone, Serialize, Deserialize)]
struct TreeMeta {
    git: bool,
    root: String,
    rev: Option<String>,
    key: String,
    dirs: usize,
}

/// What the daemon passes the keeper on its command line, and the keeper sends on.
#[derive(Serialize, Deserialize)]
struct Message {
    format: u32,
    trees: Vec<TreeMeta>,
    /// On the keeper's command line only: the inherited descriptors (the listening socket's,
    /// then one per tree, in order).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    fds: Vec<RawFd>,
    /// On the keeper's command line only: the inode of its socket's name, to tell it from a
    /// newer keeper's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    socket_ino: Option<u64>,
}

/// Prefix of the names under which watches are kept in systemd's file-descriptor store.
pub const STORE_PREFIX: &str = "flaked-watch-";

/// Watches systemd passed back from its file-descriptor store at start-up, with their names (see
/// `listener::from_activation`), until [`take`] takes them.
static STORED: Mutex<Vec<(String, OwnedFd)>> = Mutex::new(Vec::new());

/// Keeps a descriptor systemd passed back under `name` (a [`STORE_PREFIX`] name) for [`take`].
pub fn stash_stored(name: String, fd: OwnedFd) {
    STORED
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push((name, fd));
}

/// The socket of a keeper and the record of watches in systemd's store, in the directory `dir`.
fn paths(dir: &Path) -> (PathBuf, PathBuf) {
    (dir.join("watches.sock"), dir.join("watches.json"))
}

/// How many descriptors the service manager keeps for this daemon: `$FDSTORE`, which systemd
/// (254 and later) sets when the unit has `FileDescriptorStoreMax=`, with `$NOTIFY_SOCKET`.
fn systemd_store() -> Option<usize> {
    std::env::var_os("NOTIFY_SOCKET").filter(|v| !v.is_empty())?;
    let n: usize = std::env::var("FDSTORE").ok()?.trim().parse().ok()?;
    (n > 0).then_some(n)
}

/// Hands `trees` over for the next daemon: to systemd's file-descriptor store when the service
/// manager keeps one for this daemon (a keeper process would be stopped with the service), else
/// to a new keeper process listening in `dir` (replacing any keeper there). The descriptors stay
/// open in this process too; it is about to exit.
pub fn hand_over(dir: &Path, trees: Vec<KeptTree>) -> io::Result<()> {
    let (socket, record) = paths(dir);
    let store = systemd_store();
    // What can be described (a UTF-8 root) and carried (the store's and one message's limit).
    let limit = store.unwrap_or(MAX_TREES).min(MAX_TREES);
    let trees: Vec<KeptTree> = trees
        .into_iter()
        .filter(|t| t.root.to_str().is_some())
        .take(limit)
        .collect();
    match store {
        Some(_) => store_in_systemd(&record, trees, &crate::notify::notify_with_fds),
        None => spawn_keeper(&socket, trees),
    }
}

/// Sends a notification with descriptors to the service manager.
type Notify = dyn Fn(&str, &[RawFd]) -> io::Result<()>;

/// The record of watches kept in systemd's store: their names and what each vouches for.
#[derive(Serialize, Deserialize)]
struct StoreRecord {
    format: u32,
    trees: Vec<(String, TreeMeta)>,
}

/// Stores each tree's watch in systemd's file-descriptor store under a name of its own
/// (`FDSTORE=1`), after recording what the names stand for in `record`. The names carry a
/// generation, so that descriptors and a record of different daemons never match.
fn store_in_systemd(record: &Path, trees: Vec<KeptTree>, notify: &Notify) -> io::Result<()> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let generation = format!("{:x}-{nanos:x}", std::process::id());
    let names: Vec<String> = (0..trees.len())
        .map(|i| format!("{STORE_PREFIX}{generation}-{i}"))
        .collect();
    let text = serde_json::to_vec(&StoreRecord {
        format: FORMAT,
        trees: names.iter().cloned().zip(trees.iter().map(meta)).collect(),
    })
    .map_err(io::Error::other)?;
    if let Some(dir) = record.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = record.with_extension(format!("tmp-{}", std::process::id()));
    std::fs::write(&tmp, text).and_then(|()| std::fs::rename(&tmp, record))?;
    for (name, tree) in names.iter().zip(&trees) {
        notify(&format!("FDSTORE=1\nFDNAME={name}"), &[tree.fd.as_raw_fd()])?;
    }
    Ok(())
}

/// The watches systemd passed back (see [`stash_stored`]) that `record` describes. Each is
/// removed from the store (`FDSTOREREMOVE=1`): this daemon owns them now, and stores what it
/// still vouches for at its own shutdown.
fn take_stored(record: &Path, stored: Vec<(String, OwnedFd)>, notify: &Notify) -> Vec<KeptTree> {
    let record: Option<StoreRecord> = std::fs::read(record)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .filter(|r: &StoreRecord| r.format == FORMAT);
    let mut described: std::collections::HashMap<String, TreeMeta> = record
        .map(|r| r.trees.into_iter().collect())
        .unwrap_or_default();
    let mut trees = Vec::new();
    for (name, fd) in stored {
        let _ = notify(&format!("FDSTOREREMOVE=1\nFDNAME={name}"), &[]);
        if let Some(m) = described.remove(&name) {
            trees.push(kept(m, fd));
        }
    }
    trees
}

fn meta(t: &KeptTree) -> TreeMeta {
    TreeMeta {
        git: t.git,
        root: t.root.to_str().unwrap_or_default().to_string(),
        rev: t.rev.clone(),
        key: t.key.clone(),
        dirs: t.dirs,
    }
}

fn kept(m: TreeMeta, fd: OwnedFd) -> KeptTree {
    KeptTree {
        git: m.git,
        root: PathBuf::from(m.root),
        rev: m.rev,
        key: m.key,
        dirs: m.dirs,
        fd,
    }
}

/// Hands `trees` to a new keeper process listening at `socket` (replacing any keeper there).
fn spawn_keeper(socket: &Path, trees: Vec<KeptTree>) -> io::Result<()> {
    use std::os::unix::process::CommandExt;
    let Some(prepared) = prepare(socket, trees)? else {
        return Ok(());
    };
    let fds = prepared.fds.clone();
    let mut command = std::process::Command::new(std::env::current_exe()?);
    command
        .arg(KEEPER_ARG)
        .arg(&prepared.arg)
        .arg(socket)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        // It may outlive the daemon's working directory's file system being in use.
        .current_dir("/")
        // Its own process group: a Ctrl-C meant for the daemon's terminal does not reach it.
        .process_group(0);
    // SAFETY: only fcntl (async-signal-safe) runs between fork and exec.
    unsafe {
        command.pre_exec(move || {
            for &fd in &fds {
                if libc::fcntl(fd, libc::F_SETFD, 0) == -1 {
                    return Err(io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let spawned = command.spawn();
    // The keeper has its own copies of the descriptors now.
    drop((prepared.listener, prepared.trees));
    match spawned {
        // The keeper is not waited for: it outlives this process (and is reaped by init).
        Ok(_) => Ok(()),
        Err(e) => {
            remove_if_ours(socket, Some(prepared.socket_ino));
            Err(e)
        }
    }
}

/// A keeper's socket, bound and in place, and its command-line message.
struct Prepared {
    /// The listener and the trees, open until the keeper has inherited their descriptors.
    listener: UnixListener,
    trees: Vec<KeptTree>,
    arg: String,
    /// The descriptors the keeper inherits: the listener's, then the trees'.
    fds: Vec<RawFd>,
    socket_ino: u64,
}

/// Binds the keeper's socket at `socket` for `trees`; `None` when there is nothing to hand over
/// (any older keeper's socket is removed then: its watches are older than this daemon's).
fn prepare(socket: &Path, trees: Vec<KeptTree>) -> io::Result<Option<Prepared>> {
    if trees.is_empty() || socket.to_str().is_none() {
        let _ = std::fs::remove_file(socket);
        return Ok(None);
    }
    let dir = socket.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    // Bound under a temporary name and renamed over the old socket: the next daemon finds either
    // the old keeper (which sees its socket replaced and exits) or this one, never nothing.
    // Connections wait in the socket's backlog until the keeper accepts them.
    let tmp = socket.with_extension(format!("tmp-{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let listener = UnixListener::bind(&tmp)?;
    let socket_ino = {
        use std::os::unix::fs::MetadataExt;
        std::fs::symlink_metadata(&tmp)?.ino()
    };
    if let Err(e) = std::fs::rename(&tmp, socket) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    let mut fds = vec![listener.as_raw_fd()];
    fds.extend(trees.iter().map(|t| t.fd.as_raw_fd()));
    let message = Message {
        format: FORMAT,
        trees: trees.iter().map(meta).collect(),
        fds: fds.clone(),
        socket_ino: Some(socket_ino),
    };
    let arg = serde_json::to_string(&message).map_err(io::Error::other)?;
    Ok(Some(Prepared {
        listener,
        trees,
        arg,
        fds,
        socket_ino,
    }))
}

/// Takes the watches handed over for this daemon: those systemd passed back from its store, else
/// those a keeper listening in `dir` holds. Returns nothing when there are none, the keeper does
/// not answer in time, or what it sends cannot be read.
pub fn take(dir: &Path) -> Vec<KeptTree> {
    let (socket, record) = paths(dir);
    let stored = std::mem::take(&mut *STORED.lock().unwrap_or_else(|p| p.into_inner()));
    if !stored.is_empty() {
        return take_stored(&record, stored, &crate::notify::notify_with_fds);
    }
    match take_inner(&socket) {
        Ok(trees) => trees,
        Err(e) => {
            if e.kind() == io::ErrorKind::ConnectionRefused {
                // A keeper that died without removing its socket.
                let _ = std::fs::remove_file(&socket);
            }
            if e.kind() != io::ErrorKind::NotFound {
                tracing::debug!(socket = %socket.display(), error = %e, "no watches taken from a keeper");
            }
            Vec::new()
        }
    }
}

fn take_inner(socket: &Path) -> io::Result<Vec<KeptTree>> {
    let mut stream = UnixStream::connect(socket)?;
    stream.set_read_timeout(Some(TAKE_TIMEOUT))?;
    let (mut bytes, fds) = recv_with_fds(stream.as_raw_fd())?;
    stream.read_to_end(&mut bytes)?;
    let message: Message = serde_json::from_slice(&bytes).map_err(io::Error::other)?;
    if message.format != FORMAT || message.trees.len() != fds.len() {
        return Err(io::Error::other(format!(
            "unexpected hand-over (format {}, {} trees, {} descriptors)",
            message.format,
            message.trees.len(),
            fds.len()
        )));
    }
    Ok(message
        .trees
        .into_iter()
        .zip(fds)
        .map(|(m, fd)| kept(m, fd))
        .collect())
}

/// The keeper process's main: `args` are the message and the socket path given by
/// [`hand_over`]. Returns the exit status.
pub fn run_keeper(args: &[String]) -> u8 {
    run(args, true)
}

/// [`run_keeper`]; `own_process` when the keeper is a process of its own (tests run it on a
/// thread, where other descriptors are not its to close).
fn run(args: &[String], own_process: bool) -> u8 {
    let [message, socket] = args else {
        return 2;
    };
    let Ok(message) = serde_json::from_str::<Message>(message) else {
        return 2;
    };
    if message.fds.len() != message.trees.len() + 1 {
        return 2;
    }
    // SAFETY: the daemon passed these descriptors to this process for it to own.
    let listener = unsafe { UnixListener::from_raw_fd(message.fds[0]) };
    let mut trees: Vec<(TreeMeta, OwnedFd)> = message
        .trees
        .into_iter()
        .zip(&message.fds[1..])
        // SAFETY: as above.
        .map(|(m, &fd)| (m, unsafe { OwnedFd::from_raw_fd(fd) }))
        .collect();
    if own_process {
        close_other_descriptors(&message.fds);
    }
    let socket = PathBuf::from(socket);
    // Watches the socket's name: removed or replaced, this keeper is not the one to ask.
    let Ok(own) = inotify::Inotify::init() else {
        return 1;
    };
    let mask = inotify::WatchMask::ATTRIB
        | inotify::WatchMask::DELETE_SELF
        | inotify::WatchMask::MOVE_SELF;
    let ino = message.socket_ino;
    let ours = {
        use std::os::unix::fs::MetadataExt;
        std::fs::symlink_metadata(&socket).is_ok_and(|m| Some(m.ino()) == ino)
    };
    if !ours || own.watches().add(&socket, mask).is_err() {
        return 1;
    }
    // SAFETY: getuid cannot fail.
    let uid = unsafe { libc::getuid() };
    let deadline = Instant::now() + KEEPER_LIFETIME;
    while !trees.is_empty() {
        let mut polls = vec![
            libc::pollfd {
                fd: listener.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: own.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        polls.extend(trees.iter().map(|(_, fd)| libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        }));
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        let timeout = left.as_millis().min(i32::MAX as u128) as i32;
        // SAFETY: `polls` is a valid array of pollfd for the call's duration.
        let n = unsafe { libc::poll(polls.as_mut_ptr(), polls.len() as libc::nfds_t, timeout) };
        if n < 0 {
            if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                continue;
            }
            break;
        }
        if polls[1].revents != 0 {
            // The socket was removed or replaced: leave it to whoever did.
            return 0;
        }
        // A tree with anything queued changed: nothing of it can be vouched for any more.
        trees = trees
            .into_iter()
            .zip(&polls[2..])
            .filter(|(_, p)| p.revents == 0)
            .map(|(tree, _)| tree)
            .collect();
        if polls[0].revents != 0
            && let Ok((stream, _)) = listener.accept()
            && peer_uid(&stream).is_some_and(|peer| peer == uid || peer == 0)
        {
            let _ = send_trees(&stream, &trees);
            break;
        }
    }
    remove_if_ours(&socket, ino);
    0
}

/// Closes every descriptor but the standard ones and `keep`: the keeper may live for a day, and
/// must not hold what the daemon inherited without close-on-exec (a build tool's jobserver pipe,
/// say).
fn close_other_descriptors(keep: &[RawFd]) {
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return;
    };
    let open: Vec<RawFd> = dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    for fd in open {
        if fd > 2 && !keep.contains(&fd) {
            // SAFETY: closing a descriptor nothing in this process uses (the directory listing's
            // own is closed already; closing it again fails harmlessly).
            unsafe { libc::close(fd) };
        }
    }
}

fn send_trees(stream: &UnixStream, trees: &[(TreeMeta, OwnedFd)]) -> io::Result<()> {
    use std::io::Write;
    let message = Message {
        format: FORMAT,
        trees: trees.iter().map(|(m, _)| m.clone()).collect(),
        fds: Vec::new(),
        socket_ino: None,
    };
    let bytes = serde_json::to_vec(&message).map_err(io::Error::other)?;
    let fds: Vec<RawFd> = trees.iter().map(|(_, fd)| fd.as_raw_fd()).collect();
    let sent = send_with_fds(stream.as_raw_fd(), &bytes, &fds)?;
    (&*stream).write_all(&bytes[sent..])
}

/// Removes `socket` unless it is another keeper's by now.
fn remove_if_ours(socket: &Path, ino: Option<u64>) {
    use std::os::unix::fs::MetadataExt;
    if let (Ok(m), Some(ino)) = (std::fs::symlink_metadata(socket), ino)
        && m.ino() == ino
    {
        let _ = std::fs::remove_file(socket);
    }
}

fn peer_uid(stream: &UnixStream) -> Option<u32> {
    let mut cred: libc::ucred = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `cred`.
    let r = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    (r == 0).then_some(cred.uid)
}

/// Sends `bytes` with `fds` attached (one `SCM_RIGHTS` message) on the connected socket `sock`;
/// returns how many bytes went out (a stream socket may take fewer than all).
pub fn send_with_fds(sock: RawFd, bytes: &[u8], fds: &[RawFd]) -> io::Result<usize> {
    let fd_bytes = std::mem::size_of_val(fds) as u32;
    // SAFETY: CMSG_SPACE only computes a size.
    let space = unsafe { libc::CMSG_SPACE(fd_bytes) } as usize;
    let mut control = vec![0u8; space.max(1)];
    let mut iov = libc::iovec {
        iov_base: bytes.as_ptr() as *mut libc::c_void,
        iov_len: bytes.len(),
    };
    // SAFETY: msghdr is plain data; zeroed is a valid empty header.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if !fds.is_empty() {
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = space as _;
        // SAFETY: the control buffer holds CMSG_SPACE(fd_bytes) bytes, room for one header and
        // the descriptors.
        unsafe {
            let cmsg = libc::CMSG_FIRSTHDR(&msg);
            (*cmsg).cmsg_level = libc::SOL_SOCKET;
            (*cmsg).cmsg_type = libc::SCM_RIGHTS;
            (*cmsg).cmsg_len = libc::CMSG_LEN(fd_bytes) as _;
            std::ptr::copy_nonoverlapping(
                fds.as_ptr().cast::<u8>(),
                libc::CMSG_DATA(cmsg),
                fd_bytes as usize,
            );
        }
    }
    // SAFETY: `msg` points at live buffers for the call's duration.
    let sent = unsafe { libc::sendmsg(sock, &msg, libc::MSG_NOSIGNAL) };
    if sent < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(sent as usize)
}

/// Receives the first part of a message and the descriptors attached to it (close-on-exec).
pub fn recv_with_fds(sock: RawFd) -> io::Result<(Vec<u8>, Vec<OwnedFd>)> {
    let mut buf = vec![0u8; 64 * 1024];
    let fd_bytes = (MAX_TREES * std::mem::size_of::<RawFd>()) as u32;
    // SAFETY: CMSG_SPACE only computes a size.
    let space = unsafe { libc::CMSG_SPACE(fd_bytes) } as usize;
    let mut control = vec![0u8; space];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: as in send_with_fds.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = space as _;
    let n = loop {
        // SAFETY: `msg` points at live buffers for the call's duration.
        let n = unsafe { libc::recvmsg(sock, &mut msg, libc::MSG_CMSG_CLOEXEC) };
        if n >= 0 {
            break n as usize;
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    };
    let mut fds = Vec::new();
    // SAFETY: the kernel filled `control` with well-formed headers up to msg_controllen.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(cmsg);
                let len = (*cmsg).cmsg_len as usize - (data as usize - cmsg as usize);
                for i in 0..len / std::mem::size_of::<RawFd>() {
                    let fd = std::ptr::read_unaligned(data.cast::<RawFd>().add(i));
                    fds.push(OwnedFd::from_raw_fd(fd));
                }
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    if msg.msg_flags & libc::MSG_CTRUNC != 0 {
        return Err(io::Error::other("too many descriptors in the hand-over"));
    }
    buf.truncate(n);
    Ok((buf, fds))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::watch::TreeWatch;
    use std::os::fd::IntoRawFd;
    use std::sync::mpsc;

    /// A tree with one file, its watch handed to a keeper running on a thread of this process
    /// (as `flaked --watch-keeper` runs it), and the keeper's socket. The receiver gets the
    /// keeper's exit status.
    fn kept_tree(dir: &Path) -> (PathBuf, PathBuf, mpsc::Receiver<u8>) {
        let root = dir.join("tree");
        std::fs::create_dir_all(root.join("a/b")).expect("mkdir");
        std::fs::write(root.join("a/b/f.nix"), "1").expect("write");
        let watch = TreeWatch::new(&root).expect("watch");
        let dirs = watch.dirs();
        let tree = KeptTree {
            git: false,
            root: root.clone(),
            rev: None,
            key: "key-1".to_string(),
            dirs,
            fd: watch.into_fd().expect("unchanged"),
        };
        let socket = paths(&dir.join("trees")).0;
        let prepared = prepare(&socket, vec![tree])
            .expect("prepare")
            .expect("a tree");
        // The keeper owns the descriptors now, as after an exec.
        let _ = prepared.listener.into_raw_fd();
        for t in prepared.trees {
            let _ = t.fd.into_raw_fd();
        }
        let args = [prepared.arg, socket.to_str().expect("utf-8").to_string()];
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || tx.send(run(&args, false)));
        (root, socket, rx)
    }

    fn exited(rx: &mpsc::Receiver<u8>) -> u8 {
        rx.recv_timeout(Duration::from_secs(20))
            .expect("the keeper exits")
    }

    #[test]
    fn a_kept_watch_vouches_for_its_tree_and_still_sees_later_changes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (root, socket, rx) = kept_tree(dir.path());
        let mut kept = take(socket.parent().expect("dir"));
        assert_eq!(exited(&rx), 0, "one hand-over, then the keeper exits");
        assert!(!socket.exists(), "the keeper removes its socket");
        assert_eq!(kept.len(), 1);
        let t = kept.pop().expect("one tree");
        assert_eq!(
            (t.git, &t.root, &t.rev, t.key.as_str(), t.dirs),
            (false, &root, &None, "key-1", 3)
        );
        let mut w = TreeWatch::resumed(t.fd, t.root, t.dirs);
        assert!(!w.changed(), "nothing changed while no daemon ran");
        std::fs::write(root.join("a/b/f.nix"), "2").expect("write");
        assert!(
            w.changed(),
            "the taken-over watch still watches the whole tree"
        );
        assert!(
            take(socket.parent().expect("dir")).is_empty(),
            "nothing to take twice"
        );
    }

    #[test]
    fn a_change_while_kept_drops_the_tree_and_the_keeper_exits() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (root, socket, rx) = kept_tree(dir.path());
        std::fs::write(root.join("a/new.nix"), "x").expect("create");
        assert_eq!(exited(&rx), 0, "a keeper holding nothing exits");
        assert!(!socket.exists());
        assert!(take(socket.parent().expect("dir")).is_empty());
    }

    #[test]
    fn a_keeper_whose_socket_is_removed_or_replaced_exits() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (_root, socket, rx) = kept_tree(dir.path());
        std::fs::remove_file(&socket).expect("remove");
        // Whether it saw the removal while waiting or at its start, it exits.
        exited(&rx);

        let dir = tempfile::tempdir().expect("tempdir");
        let (_root, socket, rx) = kept_tree(dir.path());
        let other = dir.path().join("other.sock");
        let _listener = UnixListener::bind(&other).expect("bind");
        std::fs::rename(&other, &socket).expect("replace");
        exited(&rx);
        assert!(socket.exists(), "the newer socket is left alone");
    }

    #[test]
    fn watches_stored_in_systemd_come_back_by_name_and_leave_the_store() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("tree");
        std::fs::create_dir_all(root.join("a")).expect("mkdir");
        let watch = TreeWatch::new(&root).expect("watch");
        let tree = KeptTree {
            git: true,
            root: root.clone(),
            rev: Some("abc".to_string()),
            key: "key-2".to_string(),
            dirs: watch.dirs(),
            fd: watch.into_fd().expect("unchanged"),
        };
        // The service manager's notification socket, as a test sees it.
        let (manager, daemon) = std::os::unix::net::UnixDatagram::pair().expect("pair");
        let sender = daemon.as_raw_fd();
        let notify = move |state: &str, fds: &[RawFd]| {
            send_with_fds(sender, state.as_bytes(), fds).map(|_| ())
        };
        let record = dir.path().join("trees/watches.json");
        store_in_systemd(&record, vec![tree], &notify).expect("store");
        let (state, mut fds) = recv_with_fds(manager.as_raw_fd()).expect("stored");
        let state = String::from_utf8(state).expect("utf-8");
        let name = state
            .strip_prefix("FDSTORE=1\nFDNAME=")
            .expect("an FDSTORE message")
            .to_string();
        assert!(name.starts_with(STORE_PREFIX), "{name}");
        assert_eq!(fds.len(), 1);

        // The next start: systemd passes the descriptor back under its name, with a stranger.
        let stranger = std::fs::File::open(&record).expect("open");
        let stored = vec![
            (format!("{STORE_PREFIX}other-0"), OwnedFd::from(stranger)),
            (name.clone(), fds.remove(0)),
        ];
        let mut trees = take_stored(&record, stored, &notify);
        assert_eq!(trees.len(), 1, "only the recorded name is taken");
        let t = trees.pop().expect("one");
        assert_eq!(
            (t.git, &t.root, t.rev.as_deref(), t.key.as_str()),
            (true, &root, Some("abc"), "key-2")
        );
        let mut removed = Vec::new();
        for _ in 0..2 {
            let (m, fds) = recv_with_fds(manager.as_raw_fd()).expect("removal");
            assert!(fds.is_empty());
            removed.push(String::from_utf8(m).expect("utf-8"));
        }
        assert!(
            removed.contains(&format!("FDSTOREREMOVE=1\nFDNAME={name}")),
            "{removed:?}"
        );
        let mut w = TreeWatch::resumed(t.fd, t.root, t.dirs);
        assert!(!w.changed());
        std::fs::write(root.join("a/f"), "x").expect("write");
        assert!(w.changed(), "the stored watch went on watching");
    }
}

//! Starting a builder process: inside a Linux namespace sandbox, or (only when configured)
//! directly on the host.
//!
//! The sandbox is a fresh root directory prepared by the parent (mount points, `/etc` files,
//! `/dev` symlinks), then a child created with `clone(2)` in new user, mount, PID, UTS, IPC
//! and (unless the derivation is fixed-output) network namespaces. The parent maps the
//! sandbox user (uid 1000, gid 100, as Nix) to its own uid/gid; the child bind-mounts the
//! input closure and `sandbox-paths` read-only at their logical paths, mounts `/proc`, a
//! minimal `/dev`, tmpfs `/tmp` and `/dev/shm`, pivots into the root, makes it read-only,
//! drops to the sandbox user and executes the builder as PID 1 of its namespace.
//!
//! Invariants: the builder is PID 1 of a private PID namespace, so killing it (timeout,
//! cancellation, or this process dying: `PR_SET_PDEATHSIG`) kills every process it started;
//! nothing of the host is writable inside except the build directory and the sandbox's own
//! store directory (whose new entries become the outputs). Between `clone` and `execve` the
//! child only issues system calls on data prepared before the clone (no allocation, no
//! locks, no libc wrapper that synchronises with other threads, such as `setuid`), because
//! the parent is multi-threaded and the child is a raw copy of one of its threads.

use std::ffi::CString;
use std::fs;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The uid the builder runs as inside the sandbox (Nix's `sandboxUid()`).
pub const SANDBOX_UID: u32 = 1000;
/// The gid the builder runs as inside the sandbox (Nix's `sandboxGid()`).
pub const SANDBOX_GID: u32 = 100;

/// Why a sandbox could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error(
        "cannot perform a sandboxed build because user namespaces are not available ({errno}); check /proc/sys/user/max_user_namespaces (must be > 0), kernel.unprivileged_userns_clone = 1 (Debian/Ubuntu kernels) or kernel.apparmor_restrict_unprivileged_userns = 0, or set 'sandbox = false' to build without a sandbox"
    )]
    Unavailable { errno: io::Error },
    #[error("{context} '{path}': {source}")]
    Io {
        context: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("while setting up the build environment: {step}: {source}")]
    Setup { step: String, source: io::Error },
    #[error("path '{0}' contains a NUL byte")]
    Nul(String),
}

fn io_err<'a>(
    context: &'static str,
    path: &'a Path,
) -> impl FnOnce(io::Error) -> SandboxError + 'a {
    move |source| SandboxError::Io {
        context,
        path: path.to_owned(),
        source,
    }
}

fn cstr(s: &[u8]) -> Result<CString, SandboxError> {
    CString::new(s).map_err(|_| SandboxError::Nul(String::from_utf8_lossy(s).into_owned()))
}

fn cpath(p: &Path) -> Result<CString, SandboxError> {
    cstr(p.as_os_str().as_bytes())
}

/// One host path made visible inside the sandbox.
#[derive(Debug, Clone)]
pub struct Bind {
    /// Host path (physical).
    pub source: PathBuf,
    /// Absolute path inside the sandbox.
    pub target: String,
    pub read_only: bool,
    /// Skip silently when the source does not exist (`sandbox-paths` entries ending in `?`).
    pub optional: bool,
}

/// Everything needed to start a builder.
pub struct Spec {
    pub builder: String,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    /// Host directory that becomes the build directory.
    pub build_dir_host: PathBuf,
    /// Build directory path as the builder sees it (`/build` sandboxed).
    pub build_dir_inner: String,
}

/// Sandbox-specific part of a build.
pub struct SandboxSpec {
    /// Empty directory (on the store's file system) that becomes `/`.
    pub root: PathBuf,
    /// Logical store directory, e.g. `/nix/store`.
    pub store_dir: String,
    pub binds: Vec<Bind>,
    /// False for fixed-output derivations: they keep the host's network.
    pub private_network: bool,
}

/// A started builder: its pid and the read end of its combined stdout/stderr.
pub struct Child {
    pub pid: libc::pid_t,
    pub log: fs::File,
    /// Kill the whole process group instead of the pid (unsandboxed builds).
    pub group: bool,
}

impl Child {
    /// SIGKILL the builder (and with it its PID namespace or process group).
    pub fn kill(&self) {
        // SAFETY: plain kill(2) on a pid we started and have not reaped.
        unsafe {
            if self.group {
                libc::kill(-self.pid, libc::SIGKILL);
            }
            libc::kill(self.pid, libc::SIGKILL);
        }
    }

    /// Non-blocking wait: `Some(status)` once the builder has exited.
    pub fn try_wait(&self) -> io::Result<Option<i32>> {
        let mut status = 0;
        // SAFETY: waitpid on our own child with a valid status pointer.
        let r = unsafe { libc::waitpid(self.pid, &mut status, libc::WNOHANG) };
        match r {
            0 => Ok(None),
            r if r == self.pid => Ok(Some(status)),
            _ => Err(io::Error::last_os_error()),
        }
    }

    /// Blocking wait.
    pub fn wait(&self) -> io::Result<i32> {
        let mut status = 0;
        loop {
            // SAFETY: as above.
            let r = unsafe { libc::waitpid(self.pid, &mut status, 0) };
            if r == self.pid {
                return Ok(status);
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }
}

/// Nix's `statusToString`.
pub fn status_to_string(status: i32) -> String {
    if libc::WIFEXITED(status) {
        format!("failed with exit code {}", libc::WEXITSTATUS(status))
    } else if libc::WIFSIGNALED(status) {
        let sig = libc::WTERMSIG(status);
        // SAFETY: strsignal returns a pointer to a static (or thread-local) string.
        let name = unsafe {
            let p = libc::strsignal(sig);
            if p.is_null() {
                format!("signal {sig}")
            } else {
                std::ffi::CStr::from_ptr(p).to_string_lossy().into_owned()
            }
        };
        format!("failed due to signal {sig} ({name})")
    } else {
        "died abnormally".to_owned()
    }
}

fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: fds has room for the two descriptors pipe2 writes.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: pipe2 just returned these two fresh descriptors; we own them.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

fn env_block(spec: &Spec) -> Result<Vec<CString>, SandboxError> {
    spec.env
        .iter()
        .map(|(k, v)| cstr(format!("{k}={v}").as_bytes()))
        .collect()
}

fn argv(spec: &Spec) -> Result<Vec<CString>, SandboxError> {
    let mut v = vec![cstr(spec.builder.as_bytes())?];
    for a in &spec.args {
        v.push(cstr(a.as_bytes())?);
    }
    Ok(v)
}

fn ptrs(v: &[CString]) -> Vec<*const libc::c_char> {
    v.iter()
        .map(|c| c.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect()
}

/// Start the builder without any isolation (`sandbox = false`): a new process group in the
/// build directory, environment exactly `spec.env`.
pub fn spawn_unsandboxed(spec: &Spec) -> Result<Child, SandboxError> {
    use std::os::unix::process::CommandExt;
    let (r, w) = pipe().map_err(|source| SandboxError::Setup {
        step: "creating log pipe".into(),
        source,
    })?;
    let w2 = w.try_clone().map_err(|source| SandboxError::Setup {
        step: "duplicating log pipe".into(),
        source,
    })?;
    let mut cmd = std::process::Command::new(&spec.builder);
    cmd.args(&spec.args)
        .env_clear()
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .current_dir(&spec.build_dir_host)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::from(w))
        .stderr(std::process::Stdio::from(w2))
        .process_group(0);
    // SAFETY: the closure only calls setrlimit, which is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            let lim = libc::rlimit {
                rlim_cur: 0,
                rlim_max: libc::RLIM_INFINITY,
            };
            libc::setrlimit(libc::RLIMIT_CORE, &lim);
            libc::umask(0o022);
            Ok(())
        });
    }
    let child = cmd.spawn().map_err(|source| SandboxError::Setup {
        step: format!("executing '{}'", spec.builder),
        source,
    })?;
    drop(cmd);
    let pid = child.id() as libc::pid_t;
    // The pid is reaped by our own waitpid calls; forget the std handle.
    std::mem::forget(child);
    Ok(Child {
        pid,
        log: fs::File::from(r),
        group: true,
    })
}

/// Probe whether the kernel lets this process create the namespaces a sandbox needs.
pub fn namespaces_available() -> Result<(), SandboxError> {
    // Fork a child that only tries the unshare and exits.
    let flags = libc::CLONE_NEWUSER | libc::CLONE_NEWNS | libc::CLONE_NEWPID | libc::CLONE_NEWNET;
    // SAFETY: fork-like raw clone; the child only calls unshare and _exit.
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone,
            (libc::SIGCHLD | flags) as libc::c_ulong,
            0usize,
            0usize,
            0usize,
            0usize,
        )
    };
    if pid < 0 {
        return Err(SandboxError::Unavailable {
            errno: io::Error::last_os_error(),
        });
    }
    if pid == 0 {
        // SAFETY: immediate exit of the probe child.
        unsafe { libc::_exit(0) };
    }
    let mut status = 0;
    // SAFETY: reap the probe child.
    unsafe { libc::waitpid(pid as libc::pid_t, &mut status, 0) };
    Ok(())
}

fn mkdir_p(p: &Path, mode: u32) -> Result<(), SandboxError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(p)
        .map_err(io_err("creating directory", p))
}

fn inside(root: &Path, abs: &str) -> PathBuf {
    root.join(abs.trim_start_matches('/'))
}

/// Steps of the child, reported back as an index when one fails.
const STEPS: &[&str] = &[
    "waiting for the user namespace",
    "setting up the loopback interface",
    "setting the host name",
    "setting the domain name",
    "making '/' private",
    "bind mounting the sandbox root",
    "bind mounting the sandbox store directory",
    "bind mounting",
    "making a bind mount read-only",
    "mounting /proc",
    "mounting /dev/shm",
    "mounting /tmp",
    "changing into the sandbox root",
    "pivoting the root",
    "changing root",
    "unmounting the old root",
    "removing the old root mount point",
    "making the root read-only",
    "setting the group id",
    "setting the user id",
    "changing into the build directory",
    "opening /dev/null",
    "redirecting output",
    "setting the parent-death signal",
    "executing the builder",
    "mounting /dev/pts",
];

/// A bind prepared for the child: C strings of source and mount point.
struct PreparedBind {
    source: CString,
    target: CString,
    read_only: bool,
    /// Per-mount flags to keep when remounting read-only (locked in a user namespace).
    keep_flags: libc::c_ulong,
}

/// Pre-computed, allocation-free data for the child.
struct ChildPlan {
    root: CString,
    store: CString,
    binds: Vec<PreparedBind>,
    proc_: CString,
    shm: CString,
    tmp: CString,
    pts: CString,
    ptmx_link: bool,
    build_dir: CString,
    dev_null: CString,
    builder: CString,
    argv: Vec<*const libc::c_char>,
    envp: Vec<*const libc::c_char>,
    private_network: bool,
    root_flags: libc::c_ulong,
    log_w: libc::c_int,
    err_w: libc::c_int,
    sync_r: libc::c_int,
}

fn remount_flags(path: &CString) -> libc::c_ulong {
    // SAFETY: statvfs into a zeroed struct owned by this frame.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: path is a valid C string, st a valid out pointer.
    if unsafe { libc::statvfs(path.as_ptr(), &mut st) } != 0 {
        return 0;
    }
    let f = st.f_flag as libc::c_ulong;
    // The ST_* flags share the low MS_* bits except for relatime.
    let mut out = f
        & (libc::MS_NOSUID
            | libc::MS_NODEV
            | libc::MS_NOEXEC
            | libc::MS_NOATIME
            | libc::MS_NODIRATIME);
    if f & 4096 != 0 {
        out |= libc::MS_RELATIME;
    }
    out
}

/// Run in the child between clone and execve. Returns only by `_exit`/`execve`.
///
/// # Safety
/// Must only be called in the freshly cloned child; issues raw system calls only.
unsafe fn child_main(p: &ChildPlan) -> ! {
    unsafe {
        let fail = |step: usize| -> ! {
            let errno = *libc::__errno_location();
            let rec = [step as i32, errno];
            libc::write(p.err_w, rec.as_ptr() as *const libc::c_void, 8);
            libc::_exit(1);
        };
        let null = std::ptr::null::<libc::c_char>();
        // Die with the thread that started us, from the start (set again after setuid).
        libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGKILL as libc::c_ulong,
            0,
            0,
            0,
        );
        // Wait until the parent has written our uid/gid maps.
        let mut b = 0u8;
        if libc::read(p.sync_r, &mut b as *mut u8 as *mut libc::c_void, 1) != 1 {
            fail(0);
        }
        if p.private_network {
            let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
            if fd < 0 {
                fail(1);
            }
            #[repr(C)]
            struct IfReq {
                name: [u8; 16],
                flags: libc::c_short,
                pad: [u8; 22],
            }
            let mut ifr = IfReq {
                name: [0; 16],
                flags: (libc::IFF_UP | libc::IFF_LOOPBACK | libc::IFF_RUNNING) as libc::c_short,
                pad: [0; 22],
            };
            ifr.name[0] = b'l';
            ifr.name[1] = b'o';
            if libc::ioctl(fd, libc::SIOCSIFFLAGS, &ifr as *const IfReq) != 0 {
                fail(1);
            }
            libc::close(fd);
        }
        if libc::sethostname(c"localhost".as_ptr(), 9) != 0 {
            fail(2);
        }
        if libc::setdomainname(c"(none)".as_ptr(), 6) != 0 {
            fail(3);
        }
        if libc::mount(
            null,
            c"/".as_ptr(),
            null,
            libc::MS_PRIVATE | libc::MS_REC,
            std::ptr::null(),
        ) != 0
        {
            fail(4);
        }
        if libc::mount(
            p.root.as_ptr(),
            p.root.as_ptr(),
            null,
            libc::MS_BIND,
            std::ptr::null(),
        ) != 0
        {
            fail(5);
        }
        // The sandbox store stays writable (outputs appear there) when the root goes read-only.
        if libc::mount(
            p.store.as_ptr(),
            p.store.as_ptr(),
            null,
            libc::MS_BIND,
            std::ptr::null(),
        ) != 0
        {
            fail(6);
        }
        for b in &p.binds {
            if libc::mount(
                b.source.as_ptr(),
                b.target.as_ptr(),
                null,
                libc::MS_BIND | libc::MS_REC,
                std::ptr::null(),
            ) != 0
            {
                fail(7);
            }
            if b.read_only {
                let flags = libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY | b.keep_flags;
                if libc::mount(null, b.target.as_ptr(), null, flags, std::ptr::null()) != 0 {
                    fail(8);
                }
            }
        }
        if libc::mount(
            c"none".as_ptr(),
            p.proc_.as_ptr(),
            c"proc".as_ptr(),
            0,
            std::ptr::null(),
        ) != 0
        {
            fail(9);
        }
        if libc::mount(
            c"none".as_ptr(),
            p.shm.as_ptr(),
            c"tmpfs".as_ptr(),
            0,
            c"size=50%".as_ptr() as *const libc::c_void,
        ) != 0
        {
            fail(10);
        }
        if libc::mount(
            c"none".as_ptr(),
            p.tmp.as_ptr(),
            c"tmpfs".as_ptr(),
            0,
            c"mode=1777".as_ptr() as *const libc::c_void,
        ) != 0
        {
            fail(11);
        }
        // A private devpts is optional (not every kernel allows it in a user namespace).
        if p.ptmx_link {
            let _ = libc::mount(
                c"none".as_ptr(),
                p.pts.as_ptr(),
                c"devpts".as_ptr(),
                0,
                c"newinstance,mode=0620,ptmxmode=0666".as_ptr() as *const libc::c_void,
            );
        }
        if libc::chdir(p.root.as_ptr()) != 0 {
            fail(12);
        }
        // pivot_root(".", "."): the old root ends up stacked on the new one and is detached
        // right away, so no mount point for it is needed in the (reused) root.
        if libc::syscall(libc::SYS_pivot_root, c".".as_ptr(), c".".as_ptr()) != 0 {
            fail(13);
        }
        if libc::umount2(c".".as_ptr(), libc::MNT_DETACH) != 0 {
            fail(15);
        }
        if libc::chdir(c"/".as_ptr()) != 0 {
            fail(14);
        }
        let root_flags = libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY | p.root_flags;
        if libc::mount(null, c"/".as_ptr(), null, root_flags, std::ptr::null()) != 0 {
            fail(17);
        }
        libc::umask(0o022);
        // Raw system calls: glibc's setgid/setuid broadcast to every thread it believes
        // exists (the parent's, copied by clone) under its internal locks, which may be held
        // forever in this copy of the address space.
        if libc::syscall(libc::SYS_setgid, SANDBOX_GID as libc::c_long) != 0 {
            fail(18);
        }
        if libc::syscall(libc::SYS_setuid, SANDBOX_UID as libc::c_long) != 0 {
            fail(19);
        }
        if libc::chdir(p.build_dir.as_ptr()) != 0 {
            fail(20);
        }
        let devnull = libc::open(p.dev_null.as_ptr(), libc::O_RDONLY);
        if devnull < 0 {
            fail(21);
        }
        if libc::dup2(devnull, 0) < 0 || libc::dup2(p.log_w, 1) < 0 || libc::dup2(p.log_w, 2) < 0 {
            fail(22);
        }
        let lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: libc::RLIM_INFINITY,
        };
        libc::setrlimit(libc::RLIMIT_CORE, &lim);
        // Cleared by setuid, so set after it: if the daemon dies, the sandbox dies.
        if libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGKILL as libc::c_ulong,
            0,
            0,
            0,
        ) != 0
        {
            fail(23);
        }
        // No descriptor of the daemon may leak into the build.
        libc::syscall(
            libc::SYS_close_range,
            3u32,
            u32::MAX,
            4u32, /* CLOSE_RANGE_CLOEXEC */
        );
        libc::execve(p.builder.as_ptr(), p.argv.as_ptr(), p.envp.as_ptr());
        fail(24);
    }
}

fn statfs_keep_flags(p: &Path) -> libc::c_ulong {
    match cpath(p) {
        Ok(c) => remount_flags(&c),
        Err(_) => 0,
    }
}

/// Write `data` unless the file already holds exactly that (roots are reused).
fn write_file(p: &Path, data: &[u8]) -> Result<(), SandboxError> {
    if fs::read(p).is_ok_and(|old| old == data) {
        return Ok(());
    }
    fs::write(p, data).map_err(io_err("writing", p))
}

fn symlink_once(target: &str, p: &Path) -> Result<(), SandboxError> {
    match std::os::unix::fs::symlink(target, p) {
        Err(e) if e.kind() != io::ErrorKind::AlreadyExists => {
            Err(io_err("creating symbolic link", p)(e))
        }
        _ => Ok(()),
    }
}

/// Create the mount point for a bind (Nix's `doBind` preparation): directories get a
/// directory, files an empty file, symlinks are copied. Returns whether a mount is needed.
fn prepare_bind(root: &Path, b: &Bind) -> Result<bool, SandboxError> {
    let target = inside(root, &b.target);
    let md = match fs::symlink_metadata(&b.source) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound && b.optional => return Ok(false),
        Err(e) => return Err(io_err("getting attributes of path", &b.source)(e)),
    };
    if let Some(parent) = target.parent() {
        mkdir_p(parent, 0o755)?;
    }
    if md.is_dir() {
        mkdir_p(&target, 0o755)?;
        Ok(true)
    } else if md.file_type().is_symlink() {
        let t = fs::read_link(&b.source).map_err(io_err("reading symbolic link", &b.source))?;
        match std::os::unix::fs::symlink(&t, &target) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io_err("creating symbolic link", &target)(e)),
        }
        Ok(false)
    } else {
        match fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(&target)
        {
            Ok(_) => Ok(true),
            Err(e) => Err(io_err("creating mount point", &target)(e)),
        }
    }
}

/// Nix's `/etc/passwd` for the sandbox.
pub fn etc_passwd(build_dir_inner: &str) -> String {
    format!(
        "root:x:0:0:Nix build user:{b}:/noshell\nnixbld:x:{SANDBOX_UID}:{SANDBOX_GID}:Nix build user:{b}:/noshell\nnobody:x:65534:65534:Nobody:/:/noshell\n",
        b = build_dir_inner
    )
}

/// Nix's `/etc/group` for the sandbox.
pub fn etc_group() -> String {
    format!("root:x:0:\nnixbld:!:{SANDBOX_GID}:\nnogroup:x:65534:\n")
}

/// Lay out the sandbox root and start the builder in it. `root` may be a root used before
/// (see `builder`'s root cache): everything is created only if missing, so a reused root
/// costs lookups, not inode allocations; its store directory must be empty.
pub fn spawn_sandboxed(spec: &Spec, sb: &SandboxSpec) -> Result<Child, SandboxError> {
    let root = &sb.root;
    mkdir_p(root, 0o755)?;
    mkdir_p(&root.join("tmp"), 0o1777)?;
    mkdir_p(&root.join("proc"), 0o555)?;
    let etc = root.join("etc");
    mkdir_p(&etc, 0o755)?;
    write_file(
        &etc.join("passwd"),
        etc_passwd(&spec.build_dir_inner).as_bytes(),
    )?;
    write_file(&etc.join("group"), etc_group().as_bytes())?;
    let mut binds = sb.binds.clone();
    if sb.private_network {
        write_file(&etc.join("hosts"), b"127.0.0.1 localhost\n::1 localhost\n")?;
    } else {
        // Fixed-output derivations may use the network: name resolution as Nix sets it up.
        write_file(
            &etc.join("nsswitch.conf"),
            b"hosts: files dns\nservices: files\n",
        )?;
        for f in ["/etc/resolv.conf", "/etc/services", "/etc/hosts"] {
            if let Ok(real) = fs::canonicalize(f) {
                binds.push(Bind {
                    source: real,
                    target: f.to_owned(),
                    read_only: true,
                    optional: true,
                });
            }
        }
    }
    let store = inside(root, &sb.store_dir);
    mkdir_p(&store, 0o755)?;
    fs::set_permissions(&store, fs::Permissions::from_mode(0o1775))
        .map_err(io_err("changing mode of", &store))?;
    mkdir_p(&inside(root, &spec.build_dir_inner), 0o700)?;
    binds.push(Bind {
        source: spec.build_dir_host.clone(),
        target: spec.build_dir_inner.clone(),
        read_only: false,
        optional: false,
    });
    let dev = root.join("dev");
    mkdir_p(&dev.join("shm"), 0o755)?;
    mkdir_p(&dev.join("pts"), 0o755)?;
    for d in ["full", "null", "random", "tty", "urandom", "zero"] {
        binds.push(Bind {
            source: PathBuf::from(format!("/dev/{d}")),
            target: format!("/dev/{d}"),
            read_only: false,
            optional: d == "tty",
        });
    }
    for (link, target) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        let p = dev.join(link);
        symlink_once(target, &p)?;
    }
    let ptmx_link = Path::new("/dev/pts/ptmx").exists();
    if ptmx_link {
        let p = dev.join("ptmx");
        symlink_once("/dev/pts/ptmx", &p)?;
    }

    let mut prepared = Vec::new();
    for b in &binds {
        if prepare_bind(root, b)? {
            prepared.push(PreparedBind {
                source: cpath(&b.source)?,
                target: cpath(&inside(root, &b.target))?,
                read_only: b.read_only,
                keep_flags: statfs_keep_flags(&b.source),
            });
        }
    }
    let argv_c = argv(spec)?;
    let env_c = env_block(spec)?;
    let (log_r, log_w) = pipe().map_err(|source| SandboxError::Setup {
        step: "creating log pipe".into(),
        source,
    })?;
    let (err_r, err_w) = pipe().map_err(|source| SandboxError::Setup {
        step: "creating status pipe".into(),
        source,
    })?;
    let (sync_r, sync_w) = pipe().map_err(|source| SandboxError::Setup {
        step: "creating sync pipe".into(),
        source,
    })?;
    let plan = ChildPlan {
        root: cpath(root)?,
        store: cpath(&store)?,
        binds: prepared,
        proc_: cpath(&root.join("proc"))?,
        shm: cpath(&dev.join("shm"))?,
        tmp: cpath(&root.join("tmp"))?,
        pts: cpath(&dev.join("pts"))?,
        ptmx_link,
        build_dir: cstr(spec.build_dir_inner.as_bytes())?,
        dev_null: cstr(b"/dev/null")?,
        builder: cstr(spec.builder.as_bytes())?,
        argv: ptrs(&argv_c),
        envp: ptrs(&env_c),
        private_network: sb.private_network,
        root_flags: statfs_keep_flags(root),
        log_w: log_w.as_raw_fd(),
        err_w: err_w.as_raw_fd(),
        sync_r: sync_r.as_raw_fd(),
    };
    let mut flags = libc::CLONE_NEWUSER
        | libc::CLONE_NEWNS
        | libc::CLONE_NEWPID
        | libc::CLONE_NEWUTS
        | libc::CLONE_NEWIPC;
    if sb.private_network {
        flags |= libc::CLONE_NEWNET;
    }
    // SAFETY: a fork-like clone (no new stack: the child runs on a copy of ours). The child
    // only runs `child_main`, which issues system calls on `plan` and never returns.
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone,
            (libc::SIGCHLD | flags) as libc::c_ulong,
            0usize,
            0usize,
            0usize,
            0usize,
        )
    };
    if pid < 0 {
        let e = io::Error::last_os_error();
        return Err(match e.raw_os_error() {
            Some(libc::EPERM) | Some(libc::EINVAL) | Some(libc::ENOSPC) | Some(libc::EUSERS) => {
                SandboxError::Unavailable { errno: e }
            }
            _ => SandboxError::Setup {
                step: "cloning the builder process".into(),
                source: e,
            },
        });
    }
    if pid == 0 {
        // SAFETY: we are the freshly cloned child.
        unsafe { child_main(&plan) }
    }
    let pid = pid as libc::pid_t;
    let child = Child {
        pid,
        log: fs::File::from(log_r),
        group: false,
    };
    let fail = |step: String, source: io::Error| {
        child.kill();
        let _ = child.wait();
        SandboxError::Setup { step, source }
    };
    // SAFETY: getuid/getgid cannot fail.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    let proc_dir = PathBuf::from(format!("/proc/{pid}"));
    for (file, data) in [
        ("uid_map", format!("{SANDBOX_UID} {uid} 1")),
        ("setgroups", "deny".to_owned()),
        ("gid_map", format!("{SANDBOX_GID} {gid} 1")),
    ] {
        if let Err(e) = fs::write(proc_dir.join(file), data) {
            return Err(fail(format!("writing /proc/{pid}/{file}"), e));
        }
    }
    let mut sync_w = fs::File::from(sync_w);
    if let Err(e) = sync_w.write_all(b"1") {
        return Err(fail("signalling the builder".into(), e));
    }
    drop(sync_w);
    drop(sync_r);
    drop(log_w);
    drop(err_w);
    let mut rec = Vec::new();
    let mut err_r = fs::File::from(err_r);
    if let Err(e) = err_r.read_to_end(&mut rec) {
        return Err(fail("reading the builder's start-up status".into(), e));
    }
    if rec.len() >= 8 {
        let step = i32::from_ne_bytes([rec[0], rec[1], rec[2], rec[3]]) as usize;
        let errno = i32::from_ne_bytes([rec[4], rec[5], rec[6], rec[7]]);
        let _ = child.wait();
        let what = STEPS.get(step).copied().unwrap_or("setting up the sandbox");
        let what = if step == 24 {
            format!("executing '{}'", spec.builder)
        } else {
            what.to_owned()
        };
        return Err(SandboxError::Setup {
            step: what,
            source: io::Error::from_raw_os_error(errno),
        });
    }
    drop(argv_c);
    drop(env_c);
    Ok(child)
}

//! The Nix Archive (NAR) format: serialising, parsing and unpacking file system trees.
//!
//! NAR is the canonical byte form of a store object; its SHA-256 is the `narHash` and
//! recursive content addresses are computed over it. Everything here streams: a tree is walked
//! depth-first and emitted as events to a [`NarSink`], regular file contents travel in chunks
//! of at most 64 KiB, so memory use is bounded by the directory depth and the widest directory
//! listing, never by file or tree size. Invariants: [`dump_path`] emits exactly the bytes
//! `nix-store --dump` produces (entries sorted bytewise, executability from the owner `x` bit),
//! and [`parse_nar`] accepts exactly the archives Nix's `parseDump` accepts (no case hack).

use std::ffi::{OsStr, OsString};
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use thiserror::Error;

use crate::hash::{Hash, HashAlgo, Hasher, HashingWriter};

/// The magic string at the start of every NAR.
pub const NAR_MAGIC: &str = "nix-archive-1";
const CHUNK: usize = 65536;
/// Longest non-contents string accepted when parsing (names, symlink targets, tags).
const MAX_STRING: u64 = 1 << 20;
/// Deepest directory nesting accepted when parsing.
const MAX_DEPTH: usize = 4096;

/// Errors from dumping, parsing and restoring NARs.
#[derive(Debug, Error)]
pub enum NarError {
    #[error("{context} '{path}': {source}")]
    Io {
        context: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("writing NAR: {0}")]
    Sink(#[source] io::Error),
    #[error("reading NAR: {0}")]
    Read(#[source] io::Error),
    #[error("file '{0}' has an unsupported type")]
    UnsupportedType(PathBuf),
    #[error("file '{path}' changed size while it was being archived (expected {expected} bytes)")]
    SizeChanged { path: PathBuf, expected: u64 },
    #[error("bad archive: {0}")]
    BadArchive(String),
    #[error("path filter aborted while archiving '{0}'")]
    FilterAborted(PathBuf),
}

impl NarError {
    fn io(context: &'static str, path: &Path, source: io::Error) -> NarError {
        NarError::Io {
            context,
            path: path.to_owned(),
            source,
        }
    }
}

/// What kind of file system object a path is (for filters).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    Regular,
    Directory,
    Symlink,
    Unknown,
}

impl FileKind {
    /// The string `builtins.readDir` and path filters use.
    pub fn as_str(self) -> &'static str {
        match self {
            FileKind::Regular => "regular",
            FileKind::Directory => "directory",
            FileKind::Symlink => "symlink",
            FileKind::Unknown => "unknown",
        }
    }

    fn of(ft: &fs::FileType) -> FileKind {
        if ft.is_file() {
            FileKind::Regular
        } else if ft.is_dir() {
            FileKind::Directory
        } else if ft.is_symlink() {
            FileKind::Symlink
        } else {
            FileKind::Unknown
        }
    }
}

/// Returned by a path filter to abort the walk. A caller with a richer error (say, an
/// evaluation error thrown by a Nix filter function) stores it aside before returning this.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FilterAborted;

/// A path filter: called with the full path and kind of every object below the root (never
/// the root itself, like Nix); `Ok(false)` excludes the object and everything below it.
pub type PathFilter<'a> = dyn FnMut(&Path, FileKind) -> Result<bool, FilterAborted> + 'a;

/// Receiver of a file system tree in NAR order.
///
/// Events arrive depth-first; directory entries in strictly increasing bytewise name order.
/// A node is one of: `file_start, file_chunk*, file_end` / `symlink` /
/// `directory_start, (entry_start, node, entry_end)*, directory_end`.
pub trait NarSink {
    fn file_start(&mut self, executable: bool, size: u64) -> io::Result<()>;
    fn file_chunk(&mut self, data: &[u8]) -> io::Result<()>;
    fn file_end(&mut self) -> io::Result<()>;
    fn symlink(&mut self, target: &[u8]) -> io::Result<()>;
    fn directory_start(&mut self) -> io::Result<()>;
    fn entry_start(&mut self, name: &[u8]) -> io::Result<()>;
    fn entry_end(&mut self) -> io::Result<()>;
    fn directory_end(&mut self) -> io::Result<()>;
}

/// Writes NAR bytes to any [`Write`]; the magic is written before the first node.
pub struct NarWriter<W: Write> {
    out: W,
    started: bool,
    file_size: u64,
}

fn pad_len(len: u64) -> usize {
    ((8 - (len % 8)) % 8) as usize
}

impl<W: Write> NarWriter<W> {
    pub fn new(out: W) -> Self {
        NarWriter {
            out,
            started: false,
            file_size: 0,
        }
    }

    pub fn into_inner(self) -> W {
        self.out
    }

    fn str(&mut self, s: &[u8]) -> io::Result<()> {
        self.out.write_all(&(s.len() as u64).to_le_bytes())?;
        self.out.write_all(s)?;
        self.out.write_all(&[0u8; 8][..pad_len(s.len() as u64)])
    }

    fn node_start(&mut self, ty: &[u8]) -> io::Result<()> {
        if !self.started {
            self.started = true;
            self.str(NAR_MAGIC.as_bytes())?;
        }
        self.str(b"(")?;
        self.str(b"type")?;
        self.str(ty)
    }
}

impl<W: Write> NarSink for NarWriter<W> {
    fn file_start(&mut self, executable: bool, size: u64) -> io::Result<()> {
        self.node_start(b"regular")?;
        if executable {
            self.str(b"executable")?;
            self.str(b"")?;
        }
        self.str(b"contents")?;
        self.out.write_all(&size.to_le_bytes())?;
        self.file_size = size;
        Ok(())
    }
    fn file_chunk(&mut self, data: &[u8]) -> io::Result<()> {
        self.out.write_all(data)
    }
    fn file_end(&mut self) -> io::Result<()> {
        self.out.write_all(&[0u8; 8][..pad_len(self.file_size)])?;
        self.str(b")")
    }
    fn symlink(&mut self, target: &[u8]) -> io::Result<()> {
        self.node_start(b"symlink")?;
        self.str(b"target")?;
        self.str(target)?;
        self.str(b")")
    }
    fn directory_start(&mut self) -> io::Result<()> {
        self.node_start(b"directory")
    }
    fn entry_start(&mut self, name: &[u8]) -> io::Result<()> {
        self.str(b"entry")?;
        self.str(b"(")?;
        self.str(b"name")?;
        self.str(name)?;
        self.str(b"node")
    }
    fn entry_end(&mut self) -> io::Result<()> {
        self.str(b")")
    }
    fn directory_end(&mut self) -> io::Result<()> {
        self.str(b")")
    }
}

/// Feeds every event to two sinks (e.g. a hasher and a restorer in one pass).
pub struct TeeSink<'a, A: NarSink + ?Sized, B: NarSink + ?Sized>(pub &'a mut A, pub &'a mut B);

impl<A: NarSink + ?Sized, B: NarSink + ?Sized> NarSink for TeeSink<'_, A, B> {
    fn file_start(&mut self, executable: bool, size: u64) -> io::Result<()> {
        self.0.file_start(executable, size)?;
        self.1.file_start(executable, size)
    }
    fn file_chunk(&mut self, data: &[u8]) -> io::Result<()> {
        self.0.file_chunk(data)?;
        self.1.file_chunk(data)
    }
    fn file_end(&mut self) -> io::Result<()> {
        self.0.file_end()?;
        self.1.file_end()
    }
    fn symlink(&mut self, target: &[u8]) -> io::Result<()> {
        self.0.symlink(target)?;
        self.1.symlink(target)
    }
    fn directory_start(&mut self) -> io::Result<()> {
        self.0.directory_start()?;
        self.1.directory_start()
    }
    fn entry_start(&mut self, name: &[u8]) -> io::Result<()> {
        self.0.entry_start(name)?;
        self.1.entry_start(name)
    }
    fn entry_end(&mut self) -> io::Result<()> {
        self.0.entry_end()?;
        self.1.entry_end()
    }
    fn directory_end(&mut self) -> io::Result<()> {
        self.0.directory_end()?;
        self.1.directory_end()
    }
}

/// Computes the NAR hash (any algorithm) and NAR size of the events it receives.
pub struct NarHasher {
    writer: NarWriter<HashingWriter<io::Sink>>,
}

impl NarHasher {
    pub fn new(algo: HashAlgo) -> Self {
        NarHasher {
            writer: NarWriter::new(HashingWriter::new(algo, io::sink())),
        }
    }

    /// The hash of the NAR and its size in bytes.
    pub fn finish(self) -> (Hash, u64) {
        let (h, n, _) = self.writer.into_inner().finish();
        (h, n)
    }
}

impl NarSink for NarHasher {
    fn file_start(&mut self, executable: bool, size: u64) -> io::Result<()> {
        self.writer.file_start(executable, size)
    }
    fn file_chunk(&mut self, data: &[u8]) -> io::Result<()> {
        self.writer.file_chunk(data)
    }
    fn file_end(&mut self) -> io::Result<()> {
        self.writer.file_end()
    }
    fn symlink(&mut self, target: &[u8]) -> io::Result<()> {
        self.writer.symlink(target)
    }
    fn directory_start(&mut self) -> io::Result<()> {
        self.writer.directory_start()
    }
    fn entry_start(&mut self, name: &[u8]) -> io::Result<()> {
        self.writer.entry_start(name)
    }
    fn entry_end(&mut self) -> io::Result<()> {
        self.writer.entry_end()
    }
    fn directory_end(&mut self) -> io::Result<()> {
        self.writer.directory_end()
    }
}

/// Hashes only the contents of a single regular file (flat ingestion); rejects anything else.
pub struct FlatHasher {
    hasher: Option<Hasher>,
    algo: HashAlgo,
    kind_error: bool,
}

impl FlatHasher {
    pub fn new(algo: HashAlgo) -> Self {
        FlatHasher {
            hasher: None,
            algo,
            kind_error: false,
        }
    }

    /// The content hash; `None` if the object was not a single regular file.
    pub fn finish(self) -> Option<Hash> {
        if self.kind_error {
            None
        } else {
            self.hasher.map(Hasher::finish)
        }
    }
}

impl NarSink for FlatHasher {
    fn file_start(&mut self, _executable: bool, _size: u64) -> io::Result<()> {
        self.hasher = Some(Hasher::new(self.algo));
        Ok(())
    }
    fn file_chunk(&mut self, data: &[u8]) -> io::Result<()> {
        if let Some(h) = &mut self.hasher {
            h.update(data);
        }
        Ok(())
    }
    fn file_end(&mut self) -> io::Result<()> {
        Ok(())
    }
    fn symlink(&mut self, _target: &[u8]) -> io::Result<()> {
        self.kind_error = true;
        Ok(())
    }
    fn directory_start(&mut self) -> io::Result<()> {
        self.kind_error = true;
        Ok(())
    }
    fn entry_start(&mut self, _name: &[u8]) -> io::Result<()> {
        Ok(())
    }
    fn entry_end(&mut self) -> io::Result<()> {
        Ok(())
    }
    fn directory_end(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Serialise the file system object at `path` (not following a top-level symlink) to `sink`.
pub fn dump_path(
    path: &Path,
    sink: &mut dyn NarSink,
    filter: Option<&mut PathFilter<'_>>,
) -> Result<(), NarError> {
    let mut no_filter = |_: &Path, _: FileKind| Ok(true);
    let filter: &mut PathFilter<'_> = match filter {
        Some(f) => f,
        None => &mut no_filter,
    };
    let mut buf = vec![0u8; CHUNK];
    let mut p = path.to_path_buf();
    dump_rec(&mut p, sink, filter, &mut buf)
}

fn dump_rec(
    path: &mut PathBuf,
    sink: &mut dyn NarSink,
    filter: &mut PathFilter<'_>,
    buf: &mut [u8],
) -> Result<(), NarError> {
    let md =
        fs::symlink_metadata(&*path).map_err(|e| NarError::io("getting status of", path, e))?;
    let ft = md.file_type();
    if ft.is_file() {
        let executable = md.permissions().mode() & 0o100 != 0;
        let mut f = fs::File::open(&*path).map_err(|e| NarError::io("opening file", path, e))?;
        let size = md.len();
        sink.file_start(executable, size).map_err(NarError::Sink)?;
        let mut left = size;
        while left > 0 {
            let want = left.min(buf.len() as u64) as usize;
            let n = f
                .read(&mut buf[..want])
                .map_err(|e| NarError::io("reading file", path, e))?;
            if n == 0 {
                return Err(NarError::SizeChanged {
                    path: path.clone(),
                    expected: size,
                });
            }
            sink.file_chunk(&buf[..n]).map_err(NarError::Sink)?;
            left -= n as u64;
        }
        sink.file_end().map_err(NarError::Sink)?;
    } else if ft.is_symlink() {
        let target =
            fs::read_link(&*path).map_err(|e| NarError::io("reading symbolic link", path, e))?;
        sink.symlink(target.as_os_str().as_bytes())
            .map_err(NarError::Sink)?;
    } else if ft.is_dir() {
        sink.directory_start().map_err(NarError::Sink)?;
        let mut entries: Vec<(OsString, FileKind)> = Vec::new();
        for e in fs::read_dir(&*path).map_err(|e| NarError::io("opening directory", path, e))? {
            let e = e.map_err(|e| NarError::io("reading directory", path, e))?;
            let kind = e
                .file_type()
                .map(|t| FileKind::of(&t))
                .unwrap_or(FileKind::Unknown);
            entries.push((e.file_name(), kind));
        }
        entries.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
        for (name, kind) in entries {
            path.push(&name);
            let keep =
                filter(path, kind).map_err(|FilterAborted| NarError::FilterAborted(path.clone()));
            let res = match keep {
                Ok(true) => (|| {
                    sink.entry_start(name.as_bytes()).map_err(NarError::Sink)?;
                    dump_rec(path, sink, filter, buf)?;
                    sink.entry_end().map_err(NarError::Sink)
                })(),
                Ok(false) => Ok(()),
                Err(e) => Err(e),
            };
            path.pop();
            res?;
        }
        sink.directory_end().map_err(NarError::Sink)?;
    } else {
        return Err(NarError::UnsupportedType(path.clone()));
    }
    Ok(())
}

/// Write the NAR of `path` to `out` (like `nix-store --dump`).
pub fn dump_path_to(path: &Path, out: &mut dyn Write) -> Result<(), NarError> {
    let mut w = NarWriter::new(out);
    dump_path(path, &mut w, None)
}

/// SHA-256 NAR hash and NAR size of `path`, streaming.
pub fn nar_hash_path(path: &Path) -> Result<(Hash, u64), NarError> {
    let mut h = NarHasher::new(HashAlgo::Sha256);
    dump_path(path, &mut h, None)?;
    Ok(h.finish())
}

/// Hash of `path` as Nix's `hashPath`: the NAR for recursive ingestion, the file contents for
/// flat ingestion (which requires a regular file).
pub fn hash_path(path: &Path, recursive: bool, algo: HashAlgo) -> Result<Hash, NarError> {
    if recursive {
        let mut h = NarHasher::new(algo);
        dump_path(path, &mut h, None)?;
        Ok(h.finish().0)
    } else {
        let mut f = fs::File::open(path).map_err(|e| NarError::io("opening file", path, e))?;
        let (h, _) = crate::hash::hash_reader(algo, &mut f)
            .map_err(|e| NarError::io("reading file", path, e))?;
        Ok(h)
    }
}

struct NarReader<'a> {
    r: &'a mut dyn Read,
}

fn bad(msg: impl Into<String>) -> NarError {
    NarError::BadArchive(msg.into())
}

impl NarReader<'_> {
    fn u64(&mut self) -> Result<u64, NarError> {
        let mut b = [0u8; 8];
        self.r.read_exact(&mut b).map_err(NarError::Read)?;
        Ok(u64::from_le_bytes(b))
    }

    fn padding(&mut self, len: u64) -> Result<(), NarError> {
        let n = pad_len(len);
        if n > 0 {
            let mut b = [0u8; 8];
            self.r.read_exact(&mut b[..n]).map_err(NarError::Read)?;
            if b[..n].iter().any(|&x| x != 0) {
                return Err(bad("non-zero padding"));
            }
        }
        Ok(())
    }

    fn string(&mut self, max: u64) -> Result<Vec<u8>, NarError> {
        let len = self.u64()?;
        if len > max {
            return Err(bad("string is too long"));
        }
        let mut v = vec![0u8; len as usize];
        self.r.read_exact(&mut v).map_err(NarError::Read)?;
        self.padding(len)?;
        Ok(v)
    }

    fn tag(&mut self) -> Result<Vec<u8>, NarError> {
        self.string(MAX_STRING)
    }

    fn expect(&mut self, want: &str) -> Result<(), NarError> {
        let t = self.tag()?;
        if t != want.as_bytes() {
            return Err(bad(format!(
                "expected tag '{want}', got '{}'",
                String::from_utf8_lossy(&t)
            )));
        }
        Ok(())
    }

    fn contents(&mut self, sink: &mut dyn NarSink, executable: bool) -> Result<(), NarError> {
        let size = self.u64()?;
        sink.file_start(executable, size).map_err(NarError::Sink)?;
        let mut left = size;
        let mut buf = vec![0u8; CHUNK.min(size as usize)];
        while left > 0 {
            let n = left.min(buf.len() as u64) as usize;
            self.r.read_exact(&mut buf[..n]).map_err(NarError::Read)?;
            sink.file_chunk(&buf[..n]).map_err(NarError::Sink)?;
            left -= n as u64;
        }
        self.padding(size)?;
        sink.file_end().map_err(NarError::Sink)
    }
}

/// Parse a NAR from `r`, sending its tree to `sink`. Validates like Nix's `parseDump`.
/// Consumes exactly the archive's bytes from `r`.
pub fn parse_nar(r: &mut dyn Read, sink: &mut dyn NarSink) -> Result<(), NarError> {
    let mut rd = NarReader { r };
    let magic = rd.string(NAR_MAGIC.len() as u64).ok();
    if magic.as_deref() != Some(NAR_MAGIC.as_bytes()) {
        return Err(bad("input doesn't look like a Nix archive"));
    }
    // One entry per open directory: the previous entry name (for the sortedness check).
    let mut dirs: Vec<Vec<u8>> = Vec::new();
    'node: loop {
        rd.expect("(")?;
        rd.expect("type")?;
        let ty = rd.tag()?;
        let mut node_done = true;
        match ty.as_slice() {
            b"regular" => {
                let mut tag = rd.tag()?;
                let mut executable = false;
                if tag == b"executable" {
                    if !rd.tag()?.is_empty() {
                        return Err(bad("executable marker has non-empty value"));
                    }
                    executable = true;
                    tag = rd.tag()?;
                }
                if tag == b"contents" {
                    rd.contents(sink, executable)?;
                } else {
                    sink.file_start(executable, 0).map_err(NarError::Sink)?;
                    sink.file_end().map_err(NarError::Sink)?;
                }
                rd.expect(")")?;
            }
            b"symlink" => {
                rd.expect("target")?;
                let target = rd.tag()?;
                sink.symlink(&target).map_err(NarError::Sink)?;
                rd.expect(")")?;
            }
            b"directory" => {
                if dirs.len() >= MAX_DEPTH {
                    return Err(bad("NAR nesting is too deep"));
                }
                sink.directory_start().map_err(NarError::Sink)?;
                dirs.push(Vec::new());
                node_done = false;
            }
            other => {
                return Err(bad(format!(
                    "unknown file type '{}'",
                    String::from_utf8_lossy(other)
                )));
            }
        }
        loop {
            if node_done {
                if dirs.is_empty() {
                    return Ok(());
                }
                rd.expect(")")?;
                sink.entry_end().map_err(NarError::Sink)?;
            }
            let tag = rd.tag()?;
            if tag == b")" {
                sink.directory_end().map_err(NarError::Sink)?;
                dirs.pop();
                node_done = true;
                continue;
            }
            if tag != b"entry" {
                return Err(bad(format!(
                    "expected tag 'entry' or ')', got '{}'",
                    String::from_utf8_lossy(&tag)
                )));
            }
            rd.expect("(")?;
            rd.expect("name")?;
            let name = rd.tag()?;
            if name.is_empty()
                || name == b"."
                || name == b".."
                || name.contains(&b'/')
                || name.contains(&0)
            {
                return Err(bad(format!(
                    "NAR contains invalid file name '{}'",
                    String::from_utf8_lossy(&name)
                )));
            }
            let prev = dirs.last_mut().expect("inside a directory");
            if name.as_slice() <= prev.as_slice() {
                return Err(bad("NAR directory is not sorted"));
            }
            prev.clone_from(&name);
            rd.expect("node")?;
            sink.entry_start(&name).map_err(NarError::Sink)?;
            continue 'node;
        }
    }
}

/// SHA-256 hash and size of a NAR read from `r`, validating it.
pub fn nar_hash_reader(r: &mut dyn Read) -> Result<(Hash, u64), NarError> {
    let mut h = NarHasher::new(HashAlgo::Sha256);
    parse_nar(r, &mut h)?;
    Ok(h.finish())
}

/// Materialises events as files under a destination path (which must not exist yet).
///
/// With `canonicalise`, permissions become 0444/0555 (directories 0555) and modification
/// times 1 (the epoch + 1 s), as in the Nix store; directories are finalised after their
/// children.
pub struct Restorer {
    path: PathBuf,
    file: Option<fs::File>,
    canonicalise: bool,
    executable: bool,
}

impl Restorer {
    pub fn new(dest: impl Into<PathBuf>, canonicalise: bool) -> Self {
        Restorer {
            path: dest.into(),
            file: None,
            canonicalise,
            executable: false,
        }
    }

    fn err(&self, what: &str, e: io::Error) -> io::Error {
        io::Error::new(e.kind(), format!("{what} '{}': {e}", self.path.display()))
    }
}

/// Set the modification time of `path` (not following symlinks) to 1.
pub fn set_mtime_one(path: &Path) -> io::Result<()> {
    use std::ffi::CString;
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let times = [
        libc::timespec {
            tv_sec: 1,
            tv_nsec: 0,
        },
        libc::timespec {
            tv_sec: 1,
            tv_nsec: 0,
        },
    ];
    // SAFETY: `c` is a valid NUL-terminated string and `times` has the two elements utimensat
    // reads.
    let r = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

impl NarSink for Restorer {
    fn file_start(&mut self, executable: bool, _size: u64) -> io::Result<()> {
        let mode = if executable { 0o777 } else { 0o666 };
        let f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&self.path)
            .map_err(|e| self.err("creating file", e))?;
        self.file = Some(f);
        self.executable = executable;
        Ok(())
    }
    fn file_chunk(&mut self, data: &[u8]) -> io::Result<()> {
        match &mut self.file {
            Some(f) => f
                .write_all(data)
                .map_err(|e| io::Error::new(e.kind(), format!("writing file: {e}"))),
            None => Err(io::Error::other(
                "NAR restorer: file contents outside a file",
            )),
        }
    }
    fn file_end(&mut self) -> io::Result<()> {
        let f = self
            .file
            .take()
            .ok_or_else(|| io::Error::other("NAR restorer: file end outside a file"))?;
        if self.canonicalise {
            let mode = if self.executable { 0o555 } else { 0o444 };
            f.set_permissions(fs::Permissions::from_mode(mode))
                .map_err(|e| self.err("setting permissions of", e))?;
            // Through the open file (`futimens`): no second lookup of its path.
            let one = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1);
            f.set_times(fs::FileTimes::new().set_accessed(one).set_modified(one))
                .map_err(|e| self.err("setting mtime of", e))?;
        }
        Ok(())
    }
    fn symlink(&mut self, target: &[u8]) -> io::Result<()> {
        std::os::unix::fs::symlink(OsStr::from_bytes(target), &self.path)
            .map_err(|e| self.err("creating symlink", e))?;
        if self.canonicalise {
            set_mtime_one(&self.path).map_err(|e| self.err("setting mtime of", e))?;
        }
        Ok(())
    }
    fn directory_start(&mut self) -> io::Result<()> {
        fs::DirBuilder::new()
            .mode(0o777)
            .create(&self.path)
            .map_err(|e| self.err("creating directory", e))
    }
    fn entry_start(&mut self, name: &[u8]) -> io::Result<()> {
        self.path.push(OsStr::from_bytes(name));
        Ok(())
    }
    fn entry_end(&mut self) -> io::Result<()> {
        self.path.pop();
        Ok(())
    }
    fn directory_end(&mut self) -> io::Result<()> {
        if self.canonicalise {
            fs::set_permissions(&self.path, fs::Permissions::from_mode(0o555))
                .map_err(|e| self.err("setting permissions of", e))?;
            set_mtime_one(&self.path).map_err(|e| self.err("setting mtime of", e))?;
        }
        Ok(())
    }
}

/// Unpack a NAR read from `r` at `dest` (Nix's `restorePath`).
pub fn restore_nar(r: &mut dyn Read, dest: &Path) -> Result<(), NarError> {
    let mut sink = Restorer::new(dest, false);
    parse_nar(r, &mut sink)
}

/// Remove a tree even if it was made read-only (as store objects are).
pub fn remove_tree_force(path: &Path) -> io::Result<()> {
    let md = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if md.is_dir() {
        fs::set_permissions(path, fs::Permissions::from_mode(0o755))?;
        for e in fs::read_dir(path)? {
            remove_tree_force(&e?.path())?;
        }
        fs::remove_dir(path)
    } else {
        fs::remove_file(path)
    }
}

/// Re-export for callers that build names from bytes.
pub fn os_name(bytes: &[u8]) -> OsString {
    OsString::from_vec(bytes.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nar_of(path: &Path) -> Vec<u8> {
        let mut v = Vec::new();
        dump_path_to(path, &mut v).expect("dump");
        v
    }

    #[test]
    fn round_trip_tree() {
        let t = tempfile::tempdir().expect("tempdir");
        let root = t.path().join("root");
        fs::create_dir_all(root.join("a/b")).expect("mkdir");
        fs::write(root.join("a/b/file"), b"hello").expect("write");
        fs::write(root.join("empty"), b"").expect("write");
        fs::write(root.join("exe"), b"#!/bin/sh\n").expect("write");
        fs::set_permissions(root.join("exe"), fs::Permissions::from_mode(0o755)).expect("chmod");
        std::os::unix::fs::symlink("a/b/file", root.join("link")).expect("symlink");
        let nar = nar_of(&root);
        let out = t.path().join("out");
        restore_nar(&mut nar.as_slice(), &out).expect("restore");
        assert_eq!(nar_of(&out), nar);
        let (h, n) = nar_hash_reader(&mut nar.as_slice()).expect("parse");
        assert_eq!((h, n), nar_hash_path(&root).expect("hash"));
        assert_eq!(n as usize, nar.len());
    }

    #[test]
    fn rejects_garbage() {
        assert!(matches!(
            parse_nar(&mut &b"garbage!"[..], &mut NarHasher::new(HashAlgo::Sha256)),
            Err(NarError::BadArchive(_))
        ));
        let t = tempfile::tempdir().expect("tempdir");
        fs::write(t.path().join("f"), b"abc").expect("write");
        let nar = nar_of(&t.path().join("f"));
        for cut in 0..nar.len() {
            assert!(parse_nar(&mut &nar[..cut], &mut NarHasher::new(HashAlgo::Sha256)).is_err());
        }
    }

    #[test]
    fn filter_excludes() {
        let t = tempfile::tempdir().expect("tempdir");
        fs::write(t.path().join("keep"), b"1").expect("write");
        fs::write(t.path().join("drop"), b"2").expect("write");
        let mut filt = |p: &Path, _k: FileKind| Ok(!p.ends_with("drop"));
        let mut w = NarWriter::new(Vec::new());
        dump_path(t.path(), &mut w, Some(&mut filt)).expect("dump");
        let nar = w.into_inner();
        let s = String::from_utf8_lossy(&nar);
        assert!(s.contains("keep") && !s.contains("drop"));
    }
}

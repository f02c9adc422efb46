//! Post-processing of build outputs before registration: canonicalisation (Nix's
//! `canonicalisePathMetaData`), one NAR pass that yields the NAR hash, the NAR size and the
//! references, and the content hash of fixed-output paths (modulo their own hash part).
//!
//! Invariant: everything is computed from the canonicalised tree, in the same order Nix does
//! it, so the NAR hash and references equal what Nix would register for the same bytes.

use std::collections::BTreeSet;
use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use crate::hash::{Hash, HashAlgo, HashingWriter};
use crate::nar::{self, NarWriter};
use crate::store_path::{ContentAddressMethod, StorePath};

use super::refs::{ModuloHasher, RefScanner};

/// Canonicalise a freshly built tree: regular files 0444 (0555 if owner-executable),
/// directories 0555, no setuid/setgid/sticky bits, mtime 1, owned by us; anything but
/// regular files, directories and symlinks is refused.
pub fn canonicalise(path: &Path) -> Result<(), String> {
    let md = fs::symlink_metadata(path)
        .map_err(|e| format!("getting attributes of path '{}': {e}", path.display()))?;
    let ft = md.file_type();
    if !(ft.is_file() || ft.is_dir() || ft.is_symlink()) {
        return Err(format!("file '{}' has an unsupported type", path.display()));
    }
    // SAFETY: geteuid/getegid cannot fail.
    let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
    if md.uid() != uid {
        let c = std::ffi::CString::new(std::os::unix::ffi::OsStrExt::as_bytes(path.as_os_str()))
            .map_err(|_| format!("path '{}' contains a NUL byte", path.display()))?;
        // SAFETY: valid C string; lchown does not follow symlinks.
        if unsafe { libc::lchown(c.as_ptr(), uid, gid) } != 0 {
            return Err(format!(
                "changing owner of '{}' to {uid}: {}",
                path.display(),
                io::Error::last_os_error()
            ));
        }
    }
    if ft.is_dir() {
        // Make sure we can descend and remove entries while walking.
        fs::set_permissions(path, fs::Permissions::from_mode(0o755))
            .map_err(|e| format!("changing mode of '{}': {e}", path.display()))?;
        let entries = fs::read_dir(path)
            .map_err(|e| format!("reading directory '{}': {e}", path.display()))?;
        for e in entries {
            let e = e.map_err(|e| format!("reading directory '{}': {e}", path.display()))?;
            canonicalise(&e.path())?;
        }
    }
    if !ft.is_symlink() {
        let mode = md.mode() & 0o7777;
        let want = if ft.is_dir() || mode & 0o100 != 0 {
            0o555
        } else {
            0o444
        };
        fs::set_permissions(path, fs::Permissions::from_mode(want))
            .map_err(|e| format!("changing mode of '{}' to {want:o}: {e}", path.display()))?;
    }
    nar::set_mtime_one(path)
        .map_err(|e| format!("changing modification time of '{}': {e}", path.display()))?;
    Ok(())
}

/// Tees NAR bytes to the SHA-256 NAR hasher, the reference scanner and optionally the
/// fixed-output modulo hasher.
struct OutputSink<'a> {
    nar: HashingWriter<io::Sink>,
    scan: &'a mut RefScanner<StorePath>,
    modulo: Option<&'a mut ModuloHasher>,
}

impl io::Write for OutputSink<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.nar.write_all(buf)?;
        self.scan.feed(buf);
        if let Some(m) = &mut self.modulo {
            m.write_all(buf)?;
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// What the NAR pass over one output found.
pub struct Scanned {
    pub nar_hash: Hash,
    pub nar_size: u64,
    pub references: BTreeSet<StorePath>,
    /// For fixed-output derivations: the content hash (modulo the output's own hash part).
    pub ca_hash: Option<Hash>,
}

/// How a fixed-output path's content hash is computed.
pub struct FixedSpec {
    pub method: ContentAddressMethod,
    pub algo: HashAlgo,
    /// The hash part of the path the builder wrote to (Nix's scratch path).
    pub self_hash_part: String,
}

/// One pass over the canonicalised output: NAR hash and size, references among
/// `candidates`, and the fixed-output content hash.
pub fn scan_output(
    path: &Path,
    candidates: &BTreeSet<StorePath>,
    fixed: Option<&FixedSpec>,
) -> Result<Scanned, String> {
    let mut scan = RefScanner::new(
        candidates
            .iter()
            .map(|p| (p.hash_part().to_owned(), p.clone())),
    );
    let mut modulo = match fixed {
        Some(f) if f.method == ContentAddressMethod::Recursive => {
            Some(ModuloHasher::new(f.algo, &f.self_hash_part))
        }
        _ => None,
    };
    let sink = OutputSink {
        nar: HashingWriter::new(HashAlgo::Sha256, io::sink()),
        scan: &mut scan,
        modulo: modulo.as_mut(),
    };
    let mut w = NarWriter::new(sink);
    nar::dump_path(path, &mut w, None).map_err(|e| e.to_string())?;
    let sink = w.into_inner();
    let (nar_hash, nar_size, _) = sink.nar.finish();
    let ca_hash = match fixed {
        None => None,
        Some(f) => match f.method {
            ContentAddressMethod::Recursive => modulo.map(|m| m.finish()),
            ContentAddressMethod::Flat => {
                let md = fs::symlink_metadata(path)
                    .map_err(|e| format!("getting attributes of '{}': {e}", path.display()))?;
                if !md.is_file() || md.mode() & 0o100 != 0 {
                    return Err(format!(
                        "output path '{}' should be a non-executable regular file since recursive hashing is not enabled (one of outputHashMode={{flat,text}} is true)",
                        path.display()
                    ));
                }
                let mut m = ModuloHasher::new(f.algo, &f.self_hash_part);
                let mut file = fs::File::open(path)
                    .map_err(|e| format!("opening '{}': {e}", path.display()))?;
                io::copy(&mut file, &mut m)
                    .map_err(|e| format!("reading '{}': {e}", path.display()))?;
                Some(m.finish())
            }
            ContentAddressMethod::Text => {
                return Err("text-hashed fixed outputs are not supported".into());
            }
        },
    };
    Ok(Scanned {
        nar_hash,
        nar_size,
        references: scan.finish(),
        ca_hash,
    })
}

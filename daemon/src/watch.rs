//! Change detection for local flake sources, so that a warm tree is never used after its files
//! changed.
//!
//! Why inotify: checking a 20,000-file tree by metadata costs hundreds of milliseconds; reading
//! an inotify queue costs one non-blocking `read`. The kernel queues an event before the
//! writing syscall returns, so an edit that finished before a query began is always seen by
//! that query: [`TreeWatch::changed`] drains the queue synchronously instead of relying on a
//! background thread that might not have caught up yet.
//!
//! Invariants: watches are installed on every directory of the tree *before* the caller reads
//! the sources (so nothing can change unseen between the read and the first check); once a
//! change is seen the watch stays changed (a changed tree is re-opened, never "un-changed");
//! anything the watch cannot vouch for — a queue overflow, a directory it could not watch, an
//! error reading the queue — counts as a change. Reads do not count (only writes, attribute
//! changes, creations, deletions and renames), so opening the flake does not invalidate it.

use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use inotify::{EventMask, Inotify, WatchMask};

/// Watches one directory tree for modifications.
pub struct TreeWatch {
    inotify: Inotify,
    root: PathBuf,
    changed: bool,
    dirs: usize,
    buffer: Vec<u8>,
}

impl std::fmt::Debug for TreeWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TreeWatch")
            .field("root", &self.root)
            .field("changed", &self.changed)
            .field("dirs", &self.dirs)
            .finish()
    }
}

fn mask() -> WatchMask {
    WatchMask::MODIFY
        | WatchMask::ATTRIB
        | WatchMask::CLOSE_WRITE
        | WatchMask::CREATE
        | WatchMask::DELETE
        | WatchMask::DELETE_SELF
        | WatchMask::MOVED_FROM
        | WatchMask::MOVED_TO
        | WatchMask::MOVE_SELF
        | WatchMask::DONT_FOLLOW
        | WatchMask::ONLYDIR
}

impl TreeWatch {
    /// Watches every directory below `root` (symbolic links are not followed). Fails when
    /// inotify is unavailable or a watch cannot be added (e.g. `fs.inotify.max_user_watches`
    /// is exhausted); the caller then treats the tree as always changed.
    pub fn new(root: &Path) -> io::Result<TreeWatch> {
        TreeWatch::new_yielding(root, &|| ())
    }

    /// [`TreeWatch::new`], calling `yield_now` before each directory: a background walk lets
    /// more urgent work use the cores there.
    pub fn new_yielding(root: &Path, yield_now: &dyn Fn()) -> io::Result<TreeWatch> {
        let inotify = Inotify::init()?;
        let mut watch = TreeWatch {
            inotify,
            root: root.to_owned(),
            changed: false,
            dirs: 0,
            buffer: vec![0; 16 * 1024],
        };
        let mut stack = vec![root.to_owned()];
        while let Some(dir) = stack.pop() {
            yield_now();
            watch.inotify.watches().add(&dir, mask()).map_err(|e| {
                io::Error::new(e.kind(), format!("watching {}: {e}", dir.display()))
            })?;
            watch.dirs += 1;
            let entries = std::fs::read_dir(&dir)
                .map_err(|e| io::Error::new(e.kind(), format!("listing {}: {e}", dir.display())))?;
            for entry in entries {
                let entry = entry?;
                if entry.file_type()?.is_dir() {
                    stack.push(entry.path());
                }
            }
        }
        Ok(watch)
    }

    /// A watch taken over from a daemon that ran before this one (see [`crate::keeper`]): it
    /// vouches for what its previous owner's did, and anything queued since counts as a change.
    pub fn resumed(fd: OwnedFd, root: PathBuf, dirs: usize) -> TreeWatch {
        TreeWatch {
            inotify: Inotify::from(fd),
            root,
            changed: false,
            dirs,
            buffer: vec![0; 16 * 1024],
        }
    }

    /// The inotify descriptor, to hand the watch over to the next daemon; `None` when the watch
    /// saw a change (it vouches for nothing any more).
    pub fn into_fd(mut self) -> Option<OwnedFd> {
        (!self.changed()).then(|| self.inotify.into())
    }

    /// The watched root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Number of directories watched.
    pub fn dirs(&self) -> usize {
        self.dirs
    }

    /// Whether anything in the tree changed since the watch was installed. Never blocks.
    pub fn changed(&mut self) -> bool {
        if self.changed {
            return true;
        }
        loop {
            match self.inotify.read_events(&mut self.buffer) {
                Ok(events) => {
                    let mut any = false;
                    for event in events {
                        // IGNORED alone follows the removal of a watch, which itself comes with
                        // DELETE_SELF/MOVE_SELF; every other event is a change.
                        if event.mask != EventMask::IGNORED {
                            any = true;
                        }
                    }
                    if any {
                        self.changed = true;
                        return true;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    tracing::warn!(root = %self.root.display(), error = %e,
                        "cannot read the inotify queue; treating the flake as changed");
                    self.changed = true;
                    return true;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_creations_and_deletions_are_seen_reads_are_not() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        std::fs::create_dir_all(root.join("a/b")).expect("mkdir");
        std::fs::write(root.join("a/b/f.nix"), "1").expect("write");

        let mut w = TreeWatch::new(root).expect("watch");
        assert_eq!(w.dirs(), 3);
        assert!(!w.changed());
        let _ = std::fs::read(root.join("a/b/f.nix")).expect("read");
        let _ = std::fs::read_dir(root.join("a")).expect("list");
        assert!(!w.changed(), "reading must not count as a change");

        std::fs::write(root.join("a/b/f.nix"), "2").expect("write");
        assert!(w.changed(), "a write deep in the tree is seen at once");
        assert!(w.changed(), "a change stays a change");

        for action in [
            |r: &Path| std::fs::write(r.join("new.nix"), "x").expect("create"),
            |r: &Path| std::fs::remove_file(r.join("a/b/f.nix")).expect("delete"),
            |r: &Path| std::fs::rename(r.join("a/b"), r.join("a/c")).expect("rename"),
            |r: &Path| {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(
                    r.join("a/b/f.nix"),
                    std::fs::Permissions::from_mode(0o755),
                )
                .expect("chmod")
            },
        ] {
            let dir = tempfile::tempdir().expect("tempdir");
            let root = dir.path();
            std::fs::create_dir_all(root.join("a/b")).expect("mkdir");
            std::fs::write(root.join("a/b/f.nix"), "1").expect("write");
            let mut w = TreeWatch::new(root).expect("watch");
            assert!(!w.changed());
            action(root);
            assert!(w.changed());
        }
    }
}

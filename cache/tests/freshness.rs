//! Freshness key tests: stable on unchanged trees without re-hashing, and
//! sensitive to every kind of change (content, new/removed/renamed files,
//! executable bit, symlink target, empty directories, deleted tracked files).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use flaked_cache::freshness::{
    ContentKey, FileSet, GitFiles, GitSeed, KeyStats, TreeIndex, content_key,
};

/// Sets a file's mtime well outside the racy window so its index entry is trusted.
fn age(path: &Path) {
    let old = SystemTime::now() - Duration::from_secs(3600);
    fs::File::options()
        .write(true)
        .open(path)
        .expect("open")
        .set_modified(old)
        .expect("set mtime");
}

fn write_old(root: &Path, rel: &str, contents: &str) {
    let p = root.join(rel);
    fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
    fs::write(&p, contents).expect("write");
    age(&p);
}

fn tree() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("src");
    fs::create_dir(&root).expect("mkdir");
    write_old(&root, "flake.nix", "{ outputs = _: { }; }");
    write_old(&root, "lib/a.nix", "1");
    write_old(&root, "lib/b.nix", "2");
    write_old(&root, "README", "hello");
    let index = dir.path().join("index");
    (dir, root, index)
}

fn key(root: &Path, index: &Path, set: &FileSet) -> (ContentKey, KeyStats) {
    content_key(root, set, index).expect("content key")
}

#[test]
fn unchanged_tree_is_not_rehashed() {
    let (_d, root, index) = tree();
    let (k1, s1) = key(&root, &index, &FileSet::Walk);
    assert_eq!(s1.hashed_files, 4);
    assert_eq!(s1.entries, 5, "4 files + 1 directory");
    let (k2, s2) = key(&root, &index, &FileSet::Walk);
    assert_eq!(k1, k2);
    assert_eq!(s2.hashed_files, 0, "{s2:?}");
    // Without the index everything is hashed again, with the same result.
    fs::remove_file(&index).expect("rm index");
    let (k3, s3) = key(&root, &index, &FileSet::Walk);
    assert_eq!((k3, s3.hashed_files), (k1, 4));
}

#[test]
fn editing_one_file_changes_the_key_and_rehashes_only_it() {
    let (_d, root, index) = tree();
    let (k1, _) = key(&root, &index, &FileSet::Walk);
    // Same size, new content, mtime deliberately kept old: ctime still moves.
    fs::write(root.join("lib/a.nix"), "3").expect("write");
    let (k2, s2) = key(&root, &index, &FileSet::Walk);
    assert_ne!(k1, k2);
    assert_eq!(s2.hashed_files, 1);
    // A freshly modified file is "racy": re-hashed until it is old enough.
    let (k3, s3) = key(&root, &index, &FileSet::Walk);
    assert_eq!(k2, k3);
    assert_eq!(s3.hashed_files, 1);
    age(&root.join("lib/a.nix"));
    let (_, s4) = key(&root, &index, &FileSet::Walk);
    assert_eq!(s4.hashed_files, 1, "ctime changed by set_modified");
    // Restoring the old content restores the old key.
    fs::write(root.join("lib/a.nix"), "1").expect("write");
    assert_eq!(key(&root, &index, &FileSet::Walk).0, k1);
}

#[test]
fn racy_edit_within_same_timestamp_is_caught() {
    let (_d, root, index) = tree();
    let p = root.join("lib/b.nix");
    fs::write(&p, "x").expect("write");
    let mtime = fs::metadata(&p).expect("stat").modified().expect("mtime");
    let (k1, _) = key(&root, &index, &FileSet::Walk);
    // Same size, and mtime forced back to the recorded value.
    fs::write(&p, "y").expect("write");
    fs::File::options()
        .write(true)
        .open(&p)
        .expect("open")
        .set_modified(mtime)
        .expect("set mtime");
    let (k2, _) = key(&root, &index, &FileSet::Walk);
    assert_ne!(k1, k2);
}

#[test]
fn every_kind_of_change_changes_the_key() {
    let (_d, root, index) = tree();
    let mut seen = vec![key(&root, &index, &FileSet::Walk).0];
    let mut step = |what: &str, f: &dyn Fn()| {
        f();
        let k = key(&root, &index, &FileSet::Walk).0;
        assert!(!seen.contains(&k), "{what} did not change the key");
        seen.push(k);
    };
    step("new file", &|| write_old(&root, "new.nix", "n"));
    step("rename", &|| {
        fs::rename(root.join("new.nix"), root.join("new2.nix")).expect("rename")
    });
    step("chmod +x", &|| {
        fs::set_permissions(root.join("README"), fs::Permissions::from_mode(0o755)).expect("chmod")
    });
    step("empty dir", &|| {
        fs::create_dir(root.join("empty")).expect("mkdir")
    });
    step("symlink", &|| {
        std::os::unix::fs::symlink("lib/a.nix", root.join("link")).expect("symlink")
    });
    step("symlink target", &|| {
        fs::remove_file(root.join("link")).expect("rm");
        std::os::unix::fs::symlink("lib/b.nix", root.join("link")).expect("symlink")
    });
    step("delete", &|| {
        fs::remove_file(root.join("lib/b.nix")).expect("rm")
    });
    step("file becomes dir", &|| {
        fs::remove_file(root.join("README")).expect("rm");
        fs::create_dir(root.join("README")).expect("mkdir")
    });
}

#[test]
fn listed_files_only() {
    let (_d, root, index) = tree();
    let list = FileSet::List(vec![
        "flake.nix".into(),
        "lib/a.nix".into(),
        "./lib/a.nix".into(),
    ]);
    let (k1, s1) = key(&root, &index, &list);
    assert_eq!(s1.entries, 2, "deduplicated");
    // Untracked changes do not matter.
    write_old(&root, "untracked", "u");
    fs::write(root.join("lib/b.nix"), "changed").expect("write");
    assert_eq!(key(&root, &index, &list).0, k1);
    // Order does not matter.
    let reversed = FileSet::List(vec!["lib/a.nix".into(), "flake.nix".into()]);
    assert_eq!(key(&root, &index, &reversed).0, k1);
    // A tracked file deleted in the work tree changes the key.
    fs::remove_file(root.join("lib/a.nix")).expect("rm");
    let (k2, s2) = key(&root, &index, &list);
    assert_ne!(k1, k2);
    assert_eq!(s2.entries, 2);
    fs::remove_dir_all(root.join("lib")).expect("rm");
    fs::write(root.join("lib"), "now a file").expect("write");
    let (k3, _) = key(&root, &index, &list);
    assert_eq!(k2, k3, "still deleted (its parent is now a file)");
}

#[test]
fn bad_inputs_are_errors() {
    let (_d, root, index) = tree();
    for bad in ["/etc/passwd", "../x", "a/../../x", ""] {
        let err = content_key(&root, &FileSet::List(vec![bad.into()]), &index).expect_err(bad);
        assert!(err.to_string().contains("freshness"), "{err}");
    }
    let err = content_key(&root.join("flake.nix"), &FileSet::Walk, &index).expect_err("not a dir");
    assert!(err.to_string().contains("not a directory"), "{err}");
    assert!(content_key(&root.join("nope"), &FileSet::Walk, &index).is_err());
}

#[test]
fn damaged_index_is_rebuilt() {
    let (_d, root, index) = tree();
    let (k1, _) = key(&root, &index, &FileSet::Walk);
    let mut bytes = fs::read(&index).expect("read");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    fs::write(&index, &bytes).expect("write");
    let loaded = TreeIndex::load(&index);
    assert!(loaded.is_empty(), "checksum catches the damage");
    let (k2, s2) = key(&root, &index, &FileSet::Walk);
    assert_eq!(k1, k2);
    assert_eq!(s2.hashed_files, 4);
    assert_eq!(TreeIndex::load(&index).len(), 4);
}

// ---- Git index seeds -------------------------------------------------------------------------

/// The Git blob id of `data`.
fn blob_id(data: &[u8]) -> [u8; 20] {
    use sha1::Digest;
    let mut h = sha1::Sha1::new();
    h.update(format!("blob {}\0", data.len()).as_bytes());
    h.update(data);
    h.finalize().into()
}

/// What `git add` would record for the file at `path` as it is now, with `blob` as its id.
fn seed_of(path: &Path, blob: [u8; 20]) -> GitSeed {
    use std::os::unix::fs::MetadataExt;
    let m = fs::symlink_metadata(path).expect("stat");
    GitSeed {
        blob,
        size: m.size() as u32,
        mtime: (m.mtime() as u32, m.mtime_nsec() as u32),
        ctime: (m.ctime() as u32, m.ctime_nsec() as u32),
        ino: m.ino() as u32,
    }
}

fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("after the epoch")
        .as_nanos() as i64
}

const TRACKED: [&str; 4] = ["README", "flake.nix", "lib/a.nix", "lib/b.nix"];

/// The tracked files of `tree()` with index records made now (true blob ids), and an index
/// written a moment after them.
fn git_files(root: &Path) -> GitFiles {
    let files = TRACKED
        .iter()
        .map(|rel| {
            let p = root.join(rel);
            let blob = blob_id(&fs::read(&p).expect("read"));
            (PathBuf::from(rel), Some(seed_of(&p, blob)))
        })
        .collect();
    std::thread::sleep(Duration::from_millis(20));
    GitFiles {
        files,
        index_mtime_ns: Some(now_ns()),
    }
}

/// The key of the tracked files read from disk (no seeds, fresh index).
fn read_key(root: &Path) -> ContentKey {
    let files = TRACKED
        .iter()
        .map(|rel| (PathBuf::from(rel), None))
        .collect();
    let set = FileSet::Git(GitFiles {
        files,
        index_mtime_ns: None,
    });
    let (k, s) = TreeIndex::load(Path::new("/nonexistent/flaked-index"))
        .content_key(root, &set)
        .expect("content key");
    assert_eq!(s.seeded_files, 0);
    k
}

#[test]
fn git_seeds_stand_for_reading_the_files() {
    let (_d, root, index) = tree();
    let set = FileSet::Git(git_files(&root));
    let (k1, s1) = key(&root, &index, &set);
    assert_eq!((s1.seeded_files, s1.hashed_files), (4, 0), "{s1:?}");
    // The same key as reading every file: seeds and reads agree.
    assert_eq!(k1, read_key(&root));
    // Remembered: the next key neither reads nor needs the seeds.
    let (k2, s2) = key(&root, &index, &set);
    assert_eq!((k2, s2.hashed_files), (k1.clone(), 0));
    // Git's blob ids are not blake3: the plain file list keys differently.
    let list = FileSet::List(TRACKED.iter().map(PathBuf::from).collect());
    assert_ne!(key(&root, &index, &list).0, k1);
}

#[test]
fn git_seed_of_a_same_size_edit_in_the_same_second_is_not_trusted() {
    let (_d, root, index) = tree();
    let mut g = git_files(&root);
    let p = root.join("lib/a.nix");
    // Same size, same mtime as recorded: only the ctime tells the edit.
    let recorded = fs::metadata(&p).expect("stat").modified().expect("mtime");
    fs::write(&p, "7").expect("write");
    fs::File::options()
        .write(true)
        .open(&p)
        .expect("open")
        .set_modified(recorded)
        .expect("set mtime");
    g.index_mtime_ns = Some(now_ns() + 10_000_000_000);
    let (k, s) = key(&root, &index, &FileSet::Git(g));
    assert_eq!((s.seeded_files, s.hashed_files), (3, 1), "{s:?}");
    assert_eq!(k, read_key(&root));
}

#[test]
fn racily_clean_git_seeds_are_rehashed() {
    let (_d, root, index) = tree();
    let mut g = git_files(&root);
    // Every record claims other contents; racily clean entries must not be believed.
    for seed in g.files.iter_mut().filter_map(|(_, s)| s.as_mut()) {
        seed.blob = blob_id(b"something else");
    }
    // flake.nix was written first: every file's ctime is at least its ctime.
    use std::os::unix::fs::MetadataExt;
    let m = fs::metadata(root.join("flake.nix")).expect("stat");
    let mtime_ns = m.mtime() * 1_000_000_000 + m.mtime_nsec();
    let ctime_ns = m.ctime() * 1_000_000_000 + m.ctime_nsec();
    // An index written in the tick the files were modified in, within the racy window after
    // it, and in the tick of their last change (ctime).
    for index_time in [mtime_ns, mtime_ns + 1_000_000_000, ctime_ns] {
        let _ = fs::remove_file(&index);
        g.index_mtime_ns = Some(index_time);
        let (k, s) = key(&root, &index, &FileSet::Git(g.clone()));
        assert_eq!((s.seeded_files, s.hashed_files), (0, 4), "{s:?}");
        assert_eq!(k, read_key(&root));
    }
}

#[test]
fn git_seed_of_a_file_changed_after_git_add_is_not_trusted() {
    let (_d, root, index) = tree();
    let g = git_files(&root);
    let (k1, _) = key(&root, &index, &FileSet::Git(g.clone()));
    std::thread::sleep(Duration::from_millis(20));
    fs::write(root.join("flake.nix"), "{ outputs = _: { x = 1; }; }").expect("write");
    let (k2, s2) = key(&root, &index, &FileSet::Git(g.clone()));
    assert_ne!(k1, k2);
    assert_eq!(s2.hashed_files, 1, "{s2:?}");
    assert_eq!(k2, read_key(&root));
    // Also without the remembered index: the stale seed is ignored.
    fs::remove_file(&index).expect("rm index");
    let (k3, s3) = key(&root, &index, &FileSet::Git(g));
    assert_eq!((k3, s3.seeded_files, s3.hashed_files), (k2, 3, 1));
}

#[test]
fn smudged_git_seeds_are_not_trusted() {
    let (_d, root, index) = tree();
    write_old(&root, "README", "");
    let mut g = git_files(&root);
    for (rel, seed) in &mut g.files {
        if rel == Path::new("README")
            && let Some(seed) = seed
        {
            // Git's mark of a racily clean entry whose content changed: size 0, the old blob.
            assert_eq!(seed.size, 0);
            seed.blob = blob_id(b"older");
        }
    }
    let (k, s) = key(&root, &index, &FileSet::Git(g));
    assert_eq!((s.seeded_files, s.hashed_files), (3, 1), "{s:?}");
    assert_eq!(k, read_key(&root));
}

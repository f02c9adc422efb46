//! Freshness key tests: stable on unchanged trees without re-hashing, and
//! sensitive to every kind of change (content, new/removed/renamed files,
//! executable bit, symlink target, empty directories, deleted tracked files).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use flaked_cache::freshness::{ContentKey, FileSet, KeyStats, TreeIndex, content_key};

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

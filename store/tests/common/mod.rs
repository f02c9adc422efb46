//! Shared helpers for the golden tests: the golden directory and the NAR fixture tree, built
//! from the same recipe as `scripts/regen-store-goldens.sh`.
#![allow(dead_code)]

use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};

pub fn golden(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(rel)
}

pub fn read_golden(rel: &str) -> Vec<u8> {
    let p = golden(rel);
    fs::read(&p).unwrap_or_else(|e| panic!("reading golden file {}: {e}", p.display()))
}

pub fn golden_json(rel: &str) -> serde_json::Value {
    serde_json::from_slice(&read_golden(rel)).expect("golden JSON parses")
}

fn write(p: &Path, data: &[u8], mode: u32) {
    fs::write(p, data).expect("write fixture file");
    fs::set_permissions(p, fs::Permissions::from_mode(mode)).expect("chmod fixture file");
}

/// The fixture tree of the regen script, created at `t`.
pub fn build_fixture_tree(t: &Path) {
    fs::create_dir_all(t.join("dir/sub/deeper")).expect("mkdir");
    fs::create_dir_all(t.join("empty-dir")).expect("mkdir");
    write(&t.join("hello.txt"), b"hello\n", 0o644);
    write(&t.join("empty"), b"", 0o644);
    write(&t.join("script.sh"), b"#!/bin/sh\necho hi\n", 0o755);
    symlink("hello.txt", t.join("link")).expect("symlink");
    symlink("/nonexistent/target", t.join("dangling")).expect("symlink");
    write(&t.join("dir/sub/deeper/thousand"), &[b'x'; 1000], 0o755);
    write(&t.join("dir/seven"), b"1234567", 0o644);
    write(&t.join("dir/eight"), b"12345678", 0o644);
    write(&t.join("B"), b"B", 0o644);
    write(&t.join("a"), b"a", 0o644);
    write(&t.join("Z_upper"), b"Z", 0o644);
    write(&t.join("dir.ext"), b"dot", 0o644);
    write(&t.join("dir-x"), b"dash", 0o644);
    symlink("../../hello.txt", t.join("dir/sub/up")).expect("symlink");
}

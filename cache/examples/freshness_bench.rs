//! Benchmark of freshness keys: "check an unchanged N-file tree" against
//! hashing it from scratch.
//!
//! Usage: `cargo run --release -p flaked-cache --example freshness_bench -- [FILES] [TREE_DIR]`
//! (defaults: 20000 files in a temporary directory). With TREE_DIR the tree is
//! created there and kept, so that the reference (`nix hash path TREE_DIR`)
//! can be timed on the same files (see bench/cache-freshness.sh).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use flaked_cache::freshness::{FileSet, TreeIndex};

fn make_tree(root: &Path, files: usize) -> std::io::Result<u64> {
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let old = SystemTime::now() - Duration::from_secs(3600);
    let mut total = 0u64;
    for i in 0..files {
        let dir = root.join(format!("d{:03}/e{:02}", i / 1000, (i / 100) % 10));
        std::fs::create_dir_all(&dir)?;
        let size = (next() % 8192) as usize + 1;
        let bytes: Vec<u8> = (0..size).map(|_| (next() & 0x7f) as u8).collect();
        let path = dir.join(format!("f{i:05}.nix"));
        std::fs::write(&path, &bytes)?;
        std::fs::File::options()
            .write(true)
            .open(&path)?
            .set_modified(old)?;
        total += size as u64;
    }
    Ok(total)
}

/// Lower bound of any metadata check: visit every entry and lstat it.
fn bare_walk(dir: &Path) -> std::io::Result<usize> {
    let mut n = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let meta = entry.metadata()?;
        n += 1;
        if meta.is_dir() {
            n += bare_walk(&entry.path())?;
        }
    }
    Ok(n)
}

fn time<T>(f: impl FnOnce() -> T) -> (T, Duration) {
    let start = Instant::now();
    let out = f();
    (out, start.elapsed())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let files: usize = args
        .next()
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(20_000);
    let keep: Option<PathBuf> = args.next().map(PathBuf::from);
    let tmp = tempfile::tempdir()?;
    let root = keep.clone().unwrap_or_else(|| tmp.path().join("tree"));
    let index_path = tmp.path().join("index");
    let mut out = std::io::stdout().lock();

    if root.exists() {
        std::fs::remove_dir_all(&root)?;
    }
    let (bytes, t_make) = time(|| make_tree(&root, files));
    let bytes = bytes?;
    writeln!(
        out,
        "tree: {files} files, {:.1} MiB, created in {t_make:.2?} at {}",
        bytes as f64 / 1048576.0,
        root.display()
    )?;

    let mut index = TreeIndex::load(&index_path);
    let (cold, t_cold) = time(|| index.content_key(&root, &FileSet::Walk));
    let (key, stats) = cold?;
    index.save()?;
    writeln!(
        out,
        "cold (hash every file):        {t_cold:>10.2?}  hashed {} files, {} bytes",
        stats.hashed_files, stats.hashed_bytes
    )?;

    let mut warm = Vec::new();
    for _ in 0..5 {
        let (r, t) = time(|| {
            let mut index = TreeIndex::load(&index_path);
            let r = index.content_key(&root, &FileSet::Walk);
            (r, index)
        });
        let (r, mut idx) = r;
        let (k, s) = r?;
        idx.save()?;
        assert_eq!(k, key, "unchanged tree, same key");
        assert_eq!(s.hashed_files, 0, "unchanged tree, nothing re-hashed");
        warm.push(t);
    }
    warm.sort();
    writeln!(
        out,
        "check unchanged (load index + walk + stat), median of 5: {:.2?} (min {:.2?})",
        warm[2], warm[0]
    )?;

    // Breakdown: index load alone, and the floor (a bare walk + lstat of every entry).
    let mut loads = Vec::new();
    let mut floors = Vec::new();
    for _ in 0..5 {
        let (idx, t) = time(|| TreeIndex::load(&index_path));
        assert_eq!(idx.len(), files);
        loads.push(t);
        let (n, t) = time(|| bare_walk(&root));
        assert!(n? >= files);
        floors.push(t);
    }
    loads.sort();
    floors.sort();
    writeln!(
        out,
        "  of which index load, median: {:.2?}; floor (bare walk + lstat, no index), median: {:.2?}",
        loads[2], floors[2]
    )?;

    // The same through an explicit file list (the git work-tree case).
    let mut list = Vec::with_capacity(files);
    for i in 0..files {
        list.push(PathBuf::from(format!(
            "d{:03}/e{:02}/f{i:05}.nix",
            i / 1000,
            (i / 100) % 10
        )));
    }
    let set = FileSet::List(list);
    let mut idx = TreeIndex::load(&index_path);
    idx.content_key(&root, &set)?;
    idx.save()?;
    let mut listed = Vec::new();
    for _ in 0..5 {
        let ((r, _), t) = time(|| {
            let mut index = TreeIndex::load(&index_path);
            let r = index.content_key(&root, &set);
            (r, index)
        });
        assert_eq!(r?.1.hashed_files, 0);
        listed.push(t);
    }
    listed.sort();
    writeln!(
        out,
        "check unchanged, file list (git case), median of 5: {:.2?}",
        listed[2]
    )?;

    let victim = root.join("d000/e00/f00000.nix");
    std::fs::write(&victim, b"edited")?;
    let mut idx = TreeIndex::load(&index_path);
    let (r, t_edit) = time(|| idx.content_key(&root, &set));
    let (k2, s2) = r?;
    writeln!(
        out,
        "after editing one file:        {t_edit:>10.2?}  hashed {} file(s), key changed: {}",
        s2.hashed_files,
        k2 != key
    )?;
    writeln!(
        out,
        "speed-up of unchanged check vs full hash: {:.1}x",
        t_cold.as_secs_f64() / warm[2].as_secs_f64()
    )?;
    Ok(())
}

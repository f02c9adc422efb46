//! Integration tests of the SQLite eval cache: round trips through disk,
//! read-your-writes before commit, negative answers, failures, the placeholder
//! rule, attribute paths, the single-writer lock and the counters.

use std::time::Duration;

use flaked_cache::{CacheOptions, CachedValue, EvalCache, Fingerprint, Lookup, SourceIdentity};

fn fingerprint(n: &str) -> Fingerprint {
    Fingerprint {
        source: SourceIdentity::NarHash(format!("sha256-{n}")),
        lock_file: None,
        subdir: String::new(),
        system: "x86_64-linux".into(),
        pure: true,
        evaluator_version: "test".into(),
        settings: String::new(),
    }
}

fn attrs(names: &[&str]) -> CachedValue {
    CachedValue::Attrs(names.iter().map(|n| n.to_string()).collect())
}

fn slow_batches() -> CacheOptions {
    // Long delay: nothing commits unless flushed, so pending reads are exercised.
    CacheOptions {
        batch_delay: Duration::from_secs(3600),
        batch_rows: 1_000_000,
        ..CacheOptions::default()
    }
}

fn hit(l: Lookup) -> (flaked_cache::Cursor, CachedValue) {
    match l {
        Lookup::Hit(c, v) => (c, v),
        other => panic!("expected a hit, got {other:?}"),
    }
}

/// Writes a small flake-like tree.
fn populate(cache: &EvalCache) {
    let root = cache.root();
    cache.set(&root, attrs(&["packages", "lib", "checks"]));
    let packages = cache.set_child(&root, "packages", CachedValue::Placeholder);
    let sys = cache.set_child(&packages, "x86_64-linux", CachedValue::Placeholder);
    let hello = cache.set_child(&sys, "hello", CachedValue::Derivation);
    cache.set_children(
        &hello,
        vec![
            (
                "type".into(),
                CachedValue::String {
                    value: "derivation".into(),
                    context: vec![],
                },
            ),
            (
                "drvPath".into(),
                CachedValue::String {
                    value: "/nix/store/aaaa-hello.drv".into(),
                    context: vec!["=/nix/store/aaaa-hello.drv".into()],
                },
            ),
            (
                "name".into(),
                CachedValue::String {
                    value: "hello-2.12".into(),
                    context: vec![],
                },
            ),
        ],
    );
    cache.set_child(&sys, "nope", CachedValue::Missing);
    cache.set_child(
        &sys,
        "broken",
        CachedValue::Failed {
            message: "boom".into(),
            rendered: "error: boom".into(),
        },
    );
    let lib = cache.set_child(&root, "lib", attrs(&["z", "a", "a"]));
    cache.set_child(&lib, "a", CachedValue::Int(-7));
    cache.set_child(&lib, "z", CachedValue::Float(0.5));
}

fn check(cache: &EvalCache) {
    let root = cache.root();
    let (_, v) = hit(cache.get(&root));
    assert_eq!(v, attrs(&["checks", "lib", "packages"]));
    let (packages, v) = hit(cache.child(&root, "packages"));
    assert_eq!(v, CachedValue::Placeholder);
    let (sys, _) = hit(cache.child(&packages, "x86_64-linux"));
    let (hello, v) = hit(cache.child(&sys, "hello"));
    assert_eq!(v, CachedValue::Derivation);
    assert_eq!(
        hit(cache.child(&hello, "drvPath")).1,
        CachedValue::String {
            value: "/nix/store/aaaa-hello.drv".into(),
            context: vec!["=/nix/store/aaaa-hello.drv".into()]
        }
    );
    // Unknown under a partial set; Missing when recorded.
    assert_eq!(cache.child(&hello, "outPath"), Lookup::Unknown);
    assert_eq!(cache.child(&sys, "nope"), Lookup::Missing);
    assert_eq!(cache.child(&sys, "other"), Lookup::Unknown);
    assert_eq!(
        hit(cache.child(&sys, "broken")).1,
        CachedValue::Failed {
            message: "boom".into(),
            rendered: "error: boom".into()
        }
    );
    // Complete name list: absent names are definitively missing, present but
    // uncached children read as placeholders.
    assert_eq!(cache.child(&root, "apps"), Lookup::Missing);
    let (checks, v) = hit(cache.child(&root, "checks"));
    assert_eq!(v, CachedValue::Placeholder);
    assert_eq!(cache.child(&checks, "x"), Lookup::Unknown);
    let (lib, v) = hit(cache.child(&root, "lib"));
    assert_eq!(v, attrs(&["a", "z"]), "sorted and deduplicated");
    assert_eq!(hit(cache.child(&lib, "a")).1, CachedValue::Int(-7));
    assert_eq!(hit(cache.child(&lib, "z")).1, CachedValue::Float(0.5));
    // Paths.
    let (found, n) = cache.lookup_path(&["packages", "x86_64-linux", "hello", "name"]);
    assert_eq!(n, 4);
    assert_eq!(
        hit(found).1,
        CachedValue::String {
            value: "hello-2.12".into(),
            context: vec![]
        }
    );
    assert_eq!(
        cache.lookup_path(&["packages", "x86_64-linux", "nope"]),
        (Lookup::Missing, 3)
    );
    assert_eq!(cache.lookup_path(&["apps", "x"]), (Lookup::Missing, 1));
    assert_eq!(
        cache.lookup_path(&["packages", "x86_64-linux", "other", "x"]),
        (Lookup::Unknown, 3)
    );
    assert_eq!(
        cache.lookup_path(&["lib", "a", "deeper"]),
        (Lookup::Unknown, 3),
        "through an int"
    );
    assert_eq!(
        cache.lookup_path(&["packages", "x86_64-linux", "broken", "x"]),
        (Lookup::Unknown, 4)
    );
    assert_eq!(
        cache.lookup_path::<&str>(&[]),
        (cache.get(&cache.root()), 0)
    );
}

#[test]
fn reads_own_writes_before_commit_and_after_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fp = fingerprint("a").id();
    {
        let cache = EvalCache::open(dir.path(), &fp, slow_batches()).expect("open");
        assert!(cache.is_writable());
        populate(&cache);
        let s = cache.stats();
        assert_eq!(s.rows_committed, 0, "nothing committed yet: {s:?}");
        assert!(s.pending_rows > 10);
        check(&cache);
        cache.flush().expect("flush");
        let s = cache.stats();
        assert_eq!(s.pending_rows, 0);
        assert!(s.rows_committed > 10);
        assert_eq!(s.batches_committed, 1, "everything in one transaction");
        check(&cache);
    }
    // A fresh handle reads everything from disk.
    let cache = EvalCache::open(dir.path(), &fp, CacheOptions::default()).expect("reopen");
    assert_eq!(cache.stats().pending_rows, 0);
    check(&cache);
    cache.flush().expect("flush");
    assert_eq!(
        cache.stats().rows_committed,
        0,
        "check() found every row on disk"
    );
    let s = cache.stats();
    assert!(
        s.hits > 10 && s.misses >= 4 && s.negative_hits >= 4,
        "{s:?}"
    );
    assert_eq!((s.read_errors, s.write_errors, s.dropped_writes), (0, 0, 0));
}

#[test]
fn drop_commits_pending_writes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fp = fingerprint("drop").id();
    {
        let cache = EvalCache::open(dir.path(), &fp, slow_batches()).expect("open");
        populate(&cache);
    }
    let cache = EvalCache::open(dir.path(), &fp, CacheOptions::default()).expect("reopen");
    check(&cache);
}

#[test]
fn batches_commit_in_background() {
    let dir = tempfile::tempdir().expect("tempdir");
    let opts = CacheOptions {
        batch_delay: Duration::from_millis(10),
        batch_rows: 5,
        ..CacheOptions::default()
    };
    let cache = EvalCache::open(dir.path(), &fingerprint("bg").id(), opts).expect("open");
    let root = cache.root();
    for i in 0..50 {
        cache.set_child(&root, &format!("n{i}"), CachedValue::Int(i));
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while cache.stats().rows_committed < 51 {
        assert!(
            std::time::Instant::now() < deadline,
            "writer did not commit: {:?}",
            cache.stats()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(cache.stats().batches_committed >= 2);
    assert_eq!(hit(cache.child(&root, "n49")).1, CachedValue::Int(49));
}

#[test]
fn placeholders_never_overwrite_values() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fp = fingerprint("ph").id();
    let cache = EvalCache::open(dir.path(), &fp, slow_batches()).expect("open");
    let root = cache.root();
    let a = cache.set_child(&root, "a", CachedValue::Bool(true));
    let a2 = cache.set_child(&root, "a", CachedValue::Placeholder);
    assert_eq!(a, a2, "same row, same cursor");
    assert_eq!(hit(cache.child(&root, "a")).1, CachedValue::Bool(true));
    cache.flush().expect("flush");
    cache.set_child(&root, "a", CachedValue::Placeholder);
    cache.set(&a, CachedValue::Placeholder);
    cache.flush().expect("flush");
    assert_eq!(hit(cache.child(&root, "a")).1, CachedValue::Bool(true));
    // A placeholder is upgraded by a value, keeping its id (children survive).
    let b = cache.set_child(&root, "b", CachedValue::Placeholder);
    cache.set_child(&b, "c", CachedValue::Int(1));
    cache.flush().expect("flush");
    let b2 = cache.set_child(&root, "b", attrs(&["c"]));
    assert_eq!(b, b2);
    cache.flush().expect("flush");
    drop(cache);
    let cache = EvalCache::open(dir.path(), &fp, CacheOptions::default()).expect("reopen");
    let (b, v) = hit(cache.lookup_path(&["b"]).0);
    assert_eq!(v, attrs(&["c"]));
    assert_eq!(hit(cache.child(&b, "c")).1, CachedValue::Int(1));
}

#[test]
fn second_opener_is_read_only() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fp = fingerprint("ro").id();
    let writer = EvalCache::open(dir.path(), &fp, slow_batches()).expect("open");
    populate(&writer);
    writer.flush().expect("flush");
    let reader = EvalCache::open(dir.path(), &fp, CacheOptions::default()).expect("open read-only");
    assert!(!reader.is_writable());
    check_read_only(&reader);
    let root = reader.root();
    reader.set_child(&root, "new", CachedValue::Int(1));
    assert!(reader.stats().dropped_writes >= 1);
    assert_eq!(
        reader.child(&root, "new"),
        Lookup::Missing,
        "write was dropped, root names are complete"
    );
    reader
        .flush()
        .expect("flush of a read-only cache is a no-op");
    drop(writer);
    drop(reader);
    let again = EvalCache::open(dir.path(), &fp, CacheOptions::default()).expect("open");
    assert!(again.is_writable(), "lock released on drop");
}

fn check_read_only(cache: &EvalCache) {
    let root = cache.root();
    assert!(matches!(
        cache.get(&root),
        Lookup::Hit(_, CachedValue::Attrs(_))
    ));
    assert_eq!(
        hit(cache.lookup_path(&["lib", "a"]).0).1,
        CachedValue::Int(-7)
    );
    assert_eq!(
        cache.lookup_path(&["packages", "x86_64-linux", "nope"]).0,
        Lookup::Missing
    );
}

#[test]
fn fingerprints_are_separate_databases() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = EvalCache::open(dir.path(), &fingerprint("1").id(), slow_batches()).expect("open");
    let b = EvalCache::open(dir.path(), &fingerprint("2").id(), slow_batches()).expect("open");
    assert_ne!(a.path(), b.path());
    a.set_child(&a.root(), "x", CachedValue::Int(1));
    assert_eq!(b.child(&b.root(), "x"), Lookup::Unknown);
    assert!(
        a.path()
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.ends_with(".sqlite"))
    );
}

/// Four threads write overlapping subtrees; returns each thread's cursors.
fn hammer(
    cache: &EvalCache,
    prefix: &'static str,
) -> Vec<Vec<(flaked_cache::Cursor, flaked_cache::Cursor)>> {
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let cache = cache.clone();
            std::thread::spawn(move || {
                let root = cache.root();
                let mut cursors = Vec::new();
                for i in 0..200 {
                    let set =
                        cache.set_child(&root, &format!("s{}", i % 20), CachedValue::Placeholder);
                    let leaf = cache.set_child(&set, &format!("{prefix}{i}"), CachedValue::Int(i));
                    cursors.push((set, leaf));
                }
                cursors
            })
        })
        .collect();
    threads
        .into_iter()
        .map(|t| t.join().expect("thread"))
        .collect()
}

fn check_hammer(
    cache: &EvalCache,
    results: &[Vec<(flaked_cache::Cursor, flaked_cache::Cursor)>],
    prefix: &str,
) {
    // Every thread saw the same ids for the shared sets and leaves.
    for r in &results[1..] {
        assert_eq!(r, &results[0]);
    }
    cache.flush().expect("flush");
    let s = cache.stats();
    assert_eq!((s.write_errors, s.read_errors), (0, 0), "{s:?}");
    assert_eq!(s.pending_rows, 0);
    for i in 0..200 {
        let (found, _) = cache.lookup_path(&[format!("s{}", i % 20), format!("{prefix}{i}")]);
        assert_eq!(hit(found).1, CachedValue::Int(i));
    }
}

#[test]
fn concurrent_writers_agree_on_ids() {
    let dir = tempfile::tempdir().expect("tempdir");
    let opts = CacheOptions {
        batch_delay: Duration::from_millis(1),
        batch_rows: 7,
        ..CacheOptions::default()
    };
    let fp = fingerprint("conc").id();
    {
        // Parents created in this session (children tracked in memory).
        let cache = EvalCache::open(dir.path(), &fp, opts.clone()).expect("open");
        let results = hammer(&cache, "v");
        check_hammer(&cache, &results, "v");
    }
    // Parents from an earlier session (children found through the database).
    let cache = EvalCache::open(dir.path(), &fp, opts).expect("reopen");
    let results = hammer(&cache, "w");
    check_hammer(&cache, &results, "w");
    check_hammer(&cache, &hammer(&cache, "v"), "v");
    assert_eq!(
        cache.stats().rows_committed,
        200,
        "only the w-leaves are new"
    );
}

#[test]
fn walking_a_large_complete_set_is_linear() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cache = EvalCache::open(
        dir.path(),
        &fingerprint("big").id(),
        CacheOptions::default(),
    )
    .expect("open");
    let root = cache.root();
    let names: Vec<String> = (0..20_000).map(|i| format!("package-{i:05}")).collect();
    cache.set(&root, CachedValue::Attrs(names.clone().into()));
    cache.flush().expect("flush");
    let start = std::time::Instant::now();
    // Each child is a placeholder (created on first lookup), then gets a value.
    for name in &names {
        let (c, v) = hit(cache.child(&root, name));
        assert_eq!(v, CachedValue::Placeholder);
        cache.set(&c, CachedValue::Derivation);
    }
    assert_eq!(cache.child(&root, "package-99999"), Lookup::Missing);
    cache.flush().expect("flush");
    // Decoding the 20k-name list once per child would take minutes here.
    assert!(
        start.elapsed() < std::time::Duration::from_secs(60),
        "took {:?}",
        start.elapsed()
    );
    assert_eq!(
        hit(cache.child(&root, "package-12345")).1,
        CachedValue::Derivation
    );
}

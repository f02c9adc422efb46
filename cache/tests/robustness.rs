//! Damage and crash tests: garbage, truncated and page-corrupted databases are
//! set aside and rebuilt (at open and while in use), foreign schema versions are
//! replaced, and a writer killed with SIGKILL mid-batch leaves a consistent
//! database in which the committed writes are a prefix of the issued ones and
//! no `set_children` group is torn.

use std::io::{BufRead, BufReader, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use flaked_cache::{CacheOptions, CachedValue, EvalCache, Lookup};

fn opts() -> CacheOptions {
    CacheOptions {
        batch_delay: Duration::from_millis(5),
        batch_rows: 100,
        ..CacheOptions::default()
    }
}

fn set_aside_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("read dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.to_string_lossy().contains(".corrupt-"))
        .collect();
    v.sort();
    v
}

/// Creates a database with enough rows to span many pages, then closes it.
fn make_db(path: &Path, rows: i64) {
    let cache = EvalCache::open_path(path, opts()).expect("open");
    let root = cache.root();
    cache.set(&root, CachedValue::Placeholder);
    for i in 0..rows {
        cache.set_child(
            &root,
            &format!("attr{i:06}"),
            CachedValue::String {
                value: format!("{i}-{}", "x".repeat(200)),
                context: vec![],
            },
        );
    }
    cache.flush().expect("flush");
}

/// The cache must work normally after a rebuild: it starts empty and persists.
fn assert_fresh_and_working(path: &Path) {
    {
        let cache = EvalCache::open_path(path, opts()).expect("open");
        let root = cache.root();
        assert_eq!(
            cache.child(&root, "attr000001"),
            Lookup::Unknown,
            "rebuilt cache is empty"
        );
        cache.set_child(&root, "after", CachedValue::Bool(true));
        cache.flush().expect("flush");
    }
    let cache = EvalCache::open_path(path, opts()).expect("reopen");
    assert_eq!(cache.stats().rebuilds, 0);
    let root = cache.root();
    assert!(matches!(
        cache.child(&root, "after"),
        Lookup::Hit(_, CachedValue::Bool(true))
    ));
}

fn healthy(path: &Path) -> bool {
    let conn = rusqlite::Connection::open(path).expect("open");
    let v: String = conn
        .query_row("pragma quick_check", [], |r| r.get(0))
        .expect("quick_check");
    v == "ok"
}

#[test]
fn garbage_file_is_set_aside_at_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("g.sqlite");
    std::fs::write(
        &path,
        b"this is not a database at all, just some bytes ".repeat(200),
    )
    .expect("write");
    let cache = EvalCache::open_path(&path, opts()).expect("open rebuilds");
    assert_eq!(cache.stats().rebuilds, 1);
    let aside = set_aside_files(dir.path());
    assert_eq!(aside.len(), 1, "{aside:?}");
    assert!(
        std::fs::read(&aside[0])
            .expect("read")
            .starts_with(b"this is not")
    );
    drop(cache);
    assert_fresh_and_working(&path);
    assert!(healthy(&path));
}

#[test]
fn truncated_file_is_set_aside_at_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("t.sqlite");
    make_db(&path, 2000);
    let len = std::fs::metadata(&path).expect("stat").len();
    assert!(
        len > 100_000,
        "database should span many pages ({len} bytes)"
    );
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .expect("open")
        .set_len(len / 3)
        .expect("truncate");
    let cache = EvalCache::open_path(&path, opts()).expect("open rebuilds");
    assert_eq!(cache.stats().rebuilds, 1);
    assert_eq!(set_aside_files(dir.path()).len(), 1);
    drop(cache);
    assert_fresh_and_working(&path);
}

fn scribble_pages(path: &Path, from_page: u64) {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .expect("open");
    let len = f.metadata().expect("stat").len();
    let mut pos = from_page * 4096;
    while pos + 512 < len {
        f.seek(SeekFrom::Start(pos + 100)).expect("seek");
        f.write_all(&[0xA5; 300]).expect("write");
        pos += 4096;
    }
    f.sync_all().expect("sync");
}

#[test]
fn corrupted_pages_are_set_aside_at_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("c.sqlite");
    make_db(&path, 2000);
    scribble_pages(&path, 1);
    let cache = EvalCache::open_path(&path, opts()).expect("open rebuilds");
    assert_eq!(cache.stats().rebuilds, 1);
    drop(cache);
    assert_fresh_and_working(&path);
}

#[test]
fn corruption_while_in_use_rebuilds_and_answers_misses() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("live.sqlite");
    make_db(&path, 2000);
    let cache = EvalCache::open_path(&path, opts()).expect("open");
    assert_eq!(cache.stats().rebuilds, 0);
    let root = cache.root();
    scribble_pages(&path, 1);
    // Lookups on the damaged file degrade to misses, never to wrong answers.
    for i in (0..2000).step_by(97) {
        match cache.child(&root, &format!("attr{i:06}")) {
            Lookup::Unknown => {}
            Lookup::Hit(_, CachedValue::String { value, .. }) => {
                assert!(
                    value.starts_with(&format!("{i}-")),
                    "wrong value for {i}: {value}"
                )
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    let s = cache.stats();
    assert!(s.read_errors >= 1, "damage went unnoticed: {s:?}");
    // The next operation rebuilds; old cursors are stale (misses, dropped writes).
    let new_root = cache.root();
    assert_eq!(cache.stats().rebuilds, 1);
    assert_ne!(new_root, root);
    assert_eq!(cache.child(&root, "attr000000"), Lookup::Unknown);
    cache.set_child(&root, "stale", CachedValue::Int(1));
    assert!(cache.stats().dropped_writes >= 1);
    assert_eq!(cache.child(&new_root, "attr000000"), Lookup::Unknown);
    cache.set_child(&new_root, "fresh", CachedValue::Int(2));
    cache.flush().expect("flush after rebuild");
    assert_eq!(
        set_aside_files(dir.path())
            .iter()
            .filter(
                |p| !p.to_string_lossy().contains("-wal") && !p.to_string_lossy().contains("-shm")
            )
            .count(),
        1
    );
    drop(cache);
    let cache = EvalCache::open_path(&path, opts()).expect("reopen");
    assert_eq!(cache.stats().rebuilds, 0, "rebuilt database is healthy");
    let root = cache.root();
    assert!(matches!(
        cache.child(&root, "fresh"),
        Lookup::Hit(_, CachedValue::Int(2))
    ));
    assert_eq!(cache.child(&root, "stale"), Lookup::Unknown);
}

#[test]
fn foreign_schema_version_is_replaced() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("v.sqlite");
    {
        let conn = rusqlite::Connection::open(&path).expect("open");
        conn.execute_batch("create table Attributes (x); pragma user_version = 99;")
            .expect("create");
    }
    let cache = EvalCache::open_path(&path, opts()).expect("open");
    assert!(
        set_aside_files(dir.path()).is_empty(),
        "an old version is not corruption"
    );
    drop(cache);
    assert_fresh_and_working(&path);
    let conn = rusqlite::Connection::open(&path).expect("open");
    let v: u32 = conn
        .query_row("pragma user_version", [], |r| r.get(0))
        .expect("version");
    assert_eq!(v, flaked_cache::SCHEMA_VERSION);
}

#[test]
fn wrong_columns_are_set_aside() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("w.sqlite");
    {
        let conn = rusqlite::Connection::open(&path).expect("open");
        conn.execute_batch(&format!(
            "create table Attributes (id integer primary key, parent, name); pragma user_version = {};",
            flaked_cache::SCHEMA_VERSION
        ))
        .expect("create");
    }
    let cache = EvalCache::open_path(&path, opts()).expect("open");
    assert_eq!(cache.stats().rebuilds, 1);
    drop(cache);
    assert_fresh_and_working(&path);
}

// ----- SIGKILL during batched writes ----------------------------------------

const CHILD_ENV: &str = "FLAKED_CACHE_TEST_KILL_CHILD_DB";
const GROUP: usize = 20;
const READY: &str = "FLAKED-CACHE-CHILD-READY";

/// The child: writes forever in small batches until killed.
fn child_writer(path: &str) -> ! {
    let cache = EvalCache::open_path(
        Path::new(path),
        CacheOptions {
            batch_delay: Duration::from_millis(2),
            batch_rows: 64,
            ..CacheOptions::default()
        },
    )
    .expect("child open");
    let root = cache.root();
    let mut i: i64 = 0;
    let give_up = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        if i % 1000 == 0 && std::time::Instant::now() > give_up {
            // The parent should have killed us long ago; do not write forever.
            std::process::exit(3);
        }
        cache.set_child(&root, &format!("n{i:09}"), CachedValue::Int(i));
        if i % 10 == 0 {
            let group = cache.set_child(&root, &format!("g{i:09}"), CachedValue::Placeholder);
            cache.set_children(
                &group,
                (0..GROUP)
                    .map(|c| {
                        (
                            format!("c{c}"),
                            CachedValue::String {
                                value: format!("{i}/{c}"),
                                context: vec![],
                            },
                        )
                    })
                    .collect(),
            );
        }
        if i == 500 {
            cache.flush().expect("child flush");
            // On a line of its own: the harness prints "test name ... " first.
            println!("\n{READY}");
            std::io::stdout().flush().expect("stdout");
        }
        if i % 200 == 0 {
            // Keep the pending map bounded: let the writer catch up a little.
            std::thread::sleep(Duration::from_millis(1));
        }
        i += 1;
    }
}

#[test]
fn sigkill_during_batched_writes_leaves_consistent_cache() {
    if let Ok(path) = std::env::var(CHILD_ENV) {
        child_writer(&path);
    }
    let exe = std::env::current_exe().expect("current exe");
    for (round, delay_ms) in [30u64, 120, 400].into_iter().enumerate() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(format!("kill{round}.sqlite"));
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                "sigkill_during_batched_writes_leaves_consistent_cache",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, &path)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn child");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                if line.is_ok_and(|l| l.contains(READY)) {
                    let _ = tx.send(());
                    return;
                }
            }
        });
        if rx.recv_timeout(Duration::from_secs(120)).is_err() {
            child.kill().expect("kill child");
            let _ = child.wait();
            panic!("child never became ready");
        }
        std::thread::sleep(Duration::from_millis(delay_ms));
        child.kill().expect("SIGKILL child"); // Child::kill sends SIGKILL on Unix
        let status = child.wait().expect("wait");
        assert!(!status.success());

        assert!(healthy(&path), "quick_check failed after SIGKILL");
        let cache = EvalCache::open_path(&path, opts()).expect("reopen");
        assert_eq!(cache.stats().rebuilds, 0, "database was not damaged");
        drop(cache);

        let conn = rusqlite::Connection::open(&path).expect("open");
        let root: i64 = conn
            .query_row(
                "select id from Attributes where parent = 0 and name = ''",
                [],
                |r| r.get(0),
            )
            .expect("root row");
        let mut stmt = conn
            .prepare("select name, value from Attributes where parent = ?1 and name like 'n%'")
            .expect("prepare");
        let mut ns: Vec<i64> = stmt
            .query_map([root], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
            })
            .expect("query")
            .map(|r| {
                let (name, value) = r.expect("row");
                let i: i64 = value.parse().expect("int value");
                assert_eq!(name, format!("n{i:09}"));
                i
            })
            .collect();
        ns.sort_unstable();
        let k = ns.len() as i64;
        assert!(k > 500, "flushed writes are durable (round {round}: {k})");
        assert_eq!(
            ns,
            (0..k).collect::<Vec<_>>(),
            "committed writes form a prefix"
        );
        // Every group written before the last committed n-row is complete, and
        // no group anywhere is torn.
        let mut groups = conn
            .prepare(
                "select g.name, count(c.id) from Attributes g left join Attributes c on c.parent = g.id
                 where g.parent = ?1 and g.name like 'g%' group by g.id",
            )
            .expect("prepare");
        let rows: Vec<(String, i64)> = groups
            .query_map([root], |r| Ok((r.get(0)?, r.get(1)?)))
            .expect("query")
            .map(|r| r.expect("row"))
            .collect();
        for (name, children) in &rows {
            let i: i64 = name[1..].parse().expect("group index");
            assert!(
                children == &0 || children == &(GROUP as i64),
                "torn group {name}: {children} children"
            );
            if i + 1 < k {
                assert_eq!(
                    *children,
                    GROUP as i64,
                    "group {name} precedes committed row n{}",
                    k - 1
                );
            }
        }
        let indices: Vec<i64> = rows
            .iter()
            .map(|(n, _)| n[1..].parse().expect("group index"))
            .collect();
        assert!(
            indices.iter().all(|&i| i < k),
            "a group committed after a missing n-row"
        );
        let before_last = indices.iter().filter(|&&i| i < k - 1).count() as i64;
        assert_eq!(
            before_last,
            (k - 2) / 10 + 1,
            "one group per ten rows committed"
        );
        eprintln!("round {round}: killed after {delay_ms} ms with {k} rows committed");
    }
}

#[test]
fn failed_rebuild_disables_the_handle_without_wrong_answers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sub = dir.path().join("sub");
    std::fs::create_dir(&sub).expect("mkdir");
    let path = sub.join("d.sqlite");
    make_db(&path, 2000);
    let cache = EvalCache::open_path(&path, opts()).expect("open");
    let root = cache.root();
    scribble_pages(&path, 1);
    // Stop at the first failed query: the next call would rebuild.
    for i in (0..2000).step_by(97) {
        let _ = cache.child(&root, &format!("attr{i:06}"));
        if cache.stats().read_errors > 0 {
            break;
        }
    }
    assert!(cache.stats().read_errors >= 1);
    assert_eq!(cache.stats().rebuilds, 0);
    // Take the directory away: setting aside and re-creating must fail.
    std::fs::remove_dir_all(&sub).expect("rm");
    let _ = cache.root();
    let s = cache.stats();
    assert!(s.disabled, "{s:?}");
    assert!(!cache.is_writable());
    let root = cache.root();
    assert!(root.is_dead());
    assert_eq!(cache.child(&root, "attr000000"), Lookup::Unknown);
    assert_eq!(cache.lookup_path(&["attr000000"]).0, Lookup::Unknown);
    let before = cache.stats().dropped_writes;
    cache.set_child(&root, "x", CachedValue::Int(1));
    assert_eq!(cache.stats().dropped_writes, before + 1);
    cache
        .flush()
        .expect("flush of a disabled cache has nothing to commit");
}

//! End-to-end tests of the eval cache on disk: a restarted daemon answers from SQLite alone
//! (proved with `FLAKED_FORBID_EVAL=1`, under which no flake is ever opened), every answer — fresh,
//! warm or cached — is byte-for-byte the same, an edit makes the cache miss, and a corrupt
//! database is set aside without changing any answer.

use std::path::{Path, PathBuf};
use std::time::Duration;

use flaked_tests::{Daemon, DaemonOpts, Scratch, eventually, git, texts, write};

/// One answer: (stdout, stderr, success).
type Answer = (String, String, bool);

fn ask(s: &Scratch, dir: &Path, args: &[&str]) -> Answer {
    let out = s
        .flakectl_cmd(args)
        .arg("--no-auto-start")
        .current_dir(dir)
        .output()
        .expect("run flakectl");
    let (o, e) = texts(&out);
    (o, e, out.status.success())
}

fn stop(mut d: Daemon) {
    d.signal(libc::SIGTERM);
    assert!(
        d.wait_exit(Duration::from_secs(20)).is_some(),
        "daemon did not stop"
    );
}

const FLAKE: &str = r#"{
  description = "eval cache";
  outputs = { self }: let
    drv = derivation {
      name = "cached-1.0"; system = "x86_64-linux"; builder = "/bin/sh"; args = [ "-c" "echo > $out" ];
    };
  in {
    s = "hello \"world\" ${"$"}{not} \n tab\t";
    n = 42;
    neg = -7;
    f = 1.5;
    t = true;
    l = [ "a" "b c" ];
    nested.deep."with.dot" = "dotted";
    p = ./flake.nix;
    packages.x86_64-linux.hello = drv;
    packages.x86_64-linux.default = drv;
    legacyPackages.x86_64-linux.tools.x = "legacy";
    set = { a = 1; b = [ 1 2 ]; };
    fn = x: x;
    traced = builtins.trace "tracing" "value";
  };
}
"#;

/// The queries of the corpus: every kind of value, default prefixes, missing attributes.
fn corpus() -> Vec<Vec<&'static str>> {
    let mut q = Vec::new();
    for attr in [
        ".#s",
        ".#n",
        ".#neg",
        ".#f",
        ".#t",
        ".#l",
        ".#nested.deep.\"with.dot\"",
        ".#p",
        ".#hello.drvPath",
        ".#hello.outPath",
        ".#hello.name",
        ".#hello",
        ".#tools.x",
        ".#set",
        ".#fn",
        ".#traced",
        ".#missing",
        ".#nested.nope",
    ] {
        q.push(vec!["eval", attr]);
        q.push(vec!["eval", "--json", attr]);
        q.push(vec!["eval", "--raw", attr]);
    }
    q
}

/// Answers of a daemon with its own cache directory `cache`, for every query of the corpus; each
/// query asked twice (the second answer is warm or cached) and both answers returned.
fn answers(
    s: &Scratch,
    dir: &Path,
    cache: &Path,
    env: &[(&str, &str)],
    queries: &[Vec<&str>],
) -> Vec<(Answer, Answer)> {
    let cache_arg = cache.to_str().expect("utf-8 path");
    let d = Daemon::start(
        s,
        DaemonOpts {
            args: &["--cache-dir", cache_arg],
            env,
        },
    );
    let out = queries
        .iter()
        .map(|q| {
            let first = ask(s, dir, q);
            let second = ask(s, dir, q);
            // A third time: replayed when the second was a successful warm evaluation.
            let third = ask(s, dir, q);
            assert_eq!(second, third, "{q:?}: asked again, the answer changed");
            (first, second)
        })
        .collect();
    let status = ask(s, dir, &["daemon", "status"]);
    stop(d);
    let replays = replays(&status.0);
    if queries.len() > 1 {
        // A warm daemon replays a repeated successful answer without evaluating it again; a
        // restarted one replays what its eval cache answered without asking the database again.
        assert!(replays > 0, "no answer was replayed:\n{}", status.0);
    }
    out
}

/// The "warm answers replayed" count of `flakectl daemon status`.
fn replays(status: &str) -> u64 {
    status
        .lines()
        .find_map(|l| l.strip_prefix("warm answers replayed: "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no replay count in the status:\n{status}"))
}

/// Fresh answers: every query on a daemon of its own with empty caches.
fn fresh_answers(s: &Scratch, dir: &Path, queries: &[Vec<&str>]) -> Vec<Answer> {
    queries
        .iter()
        .enumerate()
        .map(|(i, q)| {
            let cache = s.path().join(format!("fresh-{i}"));
            // Nothing restarts on these caches: no keeper need hold the tree's watch for them
            // (each would hold one of the user's inotify instances until the test ends).
            let env = [("FLAKED_KEEP_WATCHES", "false")];
            let a = answers(s, dir, &cache, &env, std::slice::from_ref(q));
            a.into_iter().next().expect("one answer").0
        })
        .collect()
}

fn without_traces(a: &Answer) -> Answer {
    let stderr: String =
        a.1.lines()
            .filter(|l| !l.starts_with("trace: "))
            .map(|l| format!("{l}\n"))
            .collect();
    (a.0.clone(), stderr, a.2)
}

fn check_corpus(s: &Scratch, dir: &Path) {
    let queries = corpus();
    let fresh = fresh_answers(s, dir, &queries);
    let cache = s.path().join("cache-under-test");
    let first = answers(s, dir, &cache, &[], &queries);
    let restarted = answers(s, dir, &cache, &[("FLAKED_FORBID_EVAL", "1")], &queries);
    let mut cached_hits = 0;
    for (i, q) in queries.iter().enumerate() {
        let (cold, warm) = &first[i];
        // The first answer of this daemon (warm when an earlier query evaluated the same value).
        assert_eq!(
            without_traces(&fresh[i]),
            without_traces(cold),
            "{q:?}: first answer differs from a fresh one"
        );
        // `trace:` lines are printed when a value is evaluated; a warm value is not evaluated
        // again (which is how the warm tests tell warm from fresh), so they are all it may lack.
        assert_eq!(
            without_traces(&fresh[i]),
            *warm,
            "{q:?}: warm answer differs from a fresh one"
        );
        let (r1, r2) = &restarted[i];
        assert_eq!(r1, r2, "{q:?}: two cached answers differ");
        if r1.1.contains("evaluation is forbidden") {
            continue; // not answerable from the cache: must be something it does not keep
        }
        assert_eq!(
            &fresh[i], r1,
            "{q:?}: cached answer differs from a fresh one"
        );
        cached_hits += 1;
    }
    // Every string, number, Boolean and list in every format it prints from the cache.
    let must_hit = [
        (".#s", 3),
        (".#n", 2),
        (".#neg", 2),
        (".#f", 2),
        (".#t", 2),
        (".#l", 2),
        (".#nested.deep.\"with.dot\"", 3),
        (".#hello.drvPath", 3),
        (".#hello.outPath", 3),
        (".#hello.name", 3),
        (".#hello", 3),
        (".#tools.x", 3),
        (".#p", 1),
    ];
    for (attr, formats) in must_hit {
        let hits = queries
            .iter()
            .zip(&restarted)
            .filter(|(q, (r, _))| q[q.len() - 1] == attr && !r.1.contains("forbidden"))
            .count();
        assert_eq!(
            hits, formats,
            "{attr}: cached in {hits} formats, expected {formats}"
        );
    }
    // Traced values print on evaluation, so they are never served from the cache.
    let traced = queries
        .iter()
        .zip(&restarted)
        .filter(|(q, _)| q[q.len() - 1] == ".#traced")
        .all(|(_, (r, _))| r.1.contains("forbidden"));
    assert!(traced, "a traced value must be evaluated");
    let expected: usize = must_hit.iter().map(|(_, n)| n).sum();
    assert_eq!(cached_hits, expected, "answers that came from the cache");
}

/// A scratch directory with [`FLAKE`] in `f/`, and the path for a daemon's cache directory.
fn flake_scratch() -> (Scratch, PathBuf, PathBuf) {
    let s = Scratch::new();
    let flake = s.path().join("f");
    write(&flake.join("flake.nix"), FLAKE);
    let cache = s.path().join("cache");
    (s, flake, cache)
}

#[test]
fn path_flake_answers_from_the_cache_equal_fresh_ones() {
    let (s, flake, _) = flake_scratch();
    check_corpus(&s, &flake);
}

#[test]
fn git_flake_answers_from_the_cache_equal_fresh_ones() {
    let s = Scratch::new();
    let repo = s.path().join("repo");
    write(&repo.join("flake.nix"), FLAKE);
    git(&repo, &["init", "-q"]);
    git(&repo, &["add", "flake.nix"]);
    git(&repo, &["commit", "-q", "-m", "one"]);
    check_corpus(&s, &repo);
    // Dirty: the per-open warning is part of every answer, cached ones too.
    write(&repo.join("flake.nix"), &FLAKE.replace("n = 42", "n = 43"));
    check_corpus(&s, &repo);
}

/// A database file per fingerprint below `cache`.
fn databases(cache: &Path) -> Vec<PathBuf> {
    let dir = cache.join("eval-cache-v1");
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "sqlite"))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

#[test]
fn edits_miss_and_corrupt_databases_are_rebuilt() {
    let (s, flake, cache) = flake_scratch();
    let q = vec![vec!["eval", ".#n"]];
    let a = answers(&s, &flake, &cache, &[], &q);
    assert_eq!(a[0].0, ("42\n".to_string(), String::new(), true));

    // An edit while the daemon is down: the restarted daemon must not answer the old value.
    write(&flake.join("flake.nix"), &FLAKE.replace("n = 42", "n = 44"));
    let a = answers(&s, &flake, &cache, &[("FLAKED_FORBID_EVAL", "1")], &q);
    assert!(!a[0].0.2, "an edited flake must miss: {:?}", a[0].0);
    assert!(a[0].0.1.contains("forbidden"), "{:?}", a[0].0);
    let a = answers(&s, &flake, &cache, &[], &q);
    assert_eq!(a[0].0.0, "44\n");

    // Corrupt every database: the answer stays right, and the database is rebuilt.
    let dbs = databases(&cache);
    assert!(!dbs.is_empty(), "no database in {}", cache.display());
    for db in &dbs {
        std::fs::write(
            db,
            b"this is not a SQLite database, just garbage bytes\n".repeat(200),
        )
        .expect("corrupt");
        for ext in ["sqlite-wal", "sqlite-shm"] {
            let _ = std::fs::remove_file(db.with_extension(ext));
        }
    }
    let a = answers(&s, &flake, &cache, &[], &q);
    assert_eq!(a[0].0, ("44\n".to_string(), String::new(), true));
    assert_eq!(a[0].1, ("44\n".to_string(), String::new(), true));
    // Rebuilt: a restarted daemon answers from it again.
    let a = answers(&s, &flake, &cache, &[("FLAKED_FORBID_EVAL", "1")], &q);
    assert_eq!(a[0].0, ("44\n".to_string(), String::new(), true));
}

#[test]
fn a_restarted_daemon_takes_over_the_watches_kept_for_it() {
    let (s, flake, cache) = flake_scratch();
    let keeper = cache.join("trees/watches.sock");
    let q = vec![vec!["eval", ".#n"]];
    let a = answers(&s, &flake, &cache, &[], &q);
    assert_eq!(a[0].0.0, "42\n");
    assert!(
        keeper.exists(),
        "a stopped daemon hands its watches to a keeper"
    );

    // The next daemon takes them before it serves, and answers from its eval cache alone.
    let cache_arg = cache.to_str().expect("utf-8 path");
    let d = Daemon::start(
        &s,
        DaemonOpts {
            args: &["--cache-dir", cache_arg],
            env: &[("FLAKED_FORBID_EVAL", "1")],
        },
    );
    assert!(
        d.log_text()
            .contains("took over the watches kept across the restart"),
        "{}",
        d.log_text()
    );
    assert!(
        eventually(Duration::from_secs(10), || !keeper.exists()),
        "the keeper exits after its one hand-over"
    );
    assert_eq!(
        ask(&s, &flake, &q[0]),
        ("42\n".to_string(), String::new(), true)
    );
    // The taken-over watch still sees edits.
    write(&flake.join("flake.nix"), &FLAKE.replace("n = 42", "n = 43"));
    let a = ask(&s, &flake, &q[0]);
    assert!(
        !a.2 && a.1.contains("forbidden"),
        "an edited flake must miss: {a:?}"
    );
    stop(d);
    // The query after the edit watched and keyed the tree again: that watch is handed over.
    assert!(keeper.exists());

    // A keeper lets go of a tree edited while it holds its watch, and exits holding nothing.
    let a = answers(&s, &flake, &cache, &[], &q);
    assert_eq!(a[0].0.0, "43\n");
    assert!(keeper.exists());
    write(&flake.join("flake.nix"), &FLAKE.replace("n = 42", "n = 45"));
    assert!(
        eventually(Duration::from_secs(10), || !keeper.exists()),
        "the keeper exits once its tree changed"
    );
    let a = answers(&s, &flake, &cache, &[("FLAKED_FORBID_EVAL", "1")], &q);
    assert!(!a[0].0.2 && a[0].0.1.contains("forbidden"), "{:?}", a[0].0);
}

/// A child process killed when the test ends, passed or not.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// systemd's side of a service with `FileDescriptorStoreMax=`: the daemon stores its watches
/// (`FDSTORE=1`) on its notification socket at shutdown, gets them back as `LISTEN_FDS` with
/// their names at the next start, and removes them from the store (`FDSTOREREMOVE=1`).
#[test]
fn under_systemd_the_watches_wait_in_the_file_descriptor_store() {
    use std::os::fd::{AsRawFd, OwnedFd};
    let (s, flake, cache) = flake_scratch();
    let cache_arg = cache.to_str().expect("utf-8 path");
    let manager_path = s.path().join("manager");
    let manager = std::os::unix::net::UnixDatagram::bind(&manager_path).expect("bind");
    manager
        .set_read_timeout(Some(Duration::from_millis(100)))
        .expect("timeout");
    // The next notification, `None` when none came within the read timeout.
    let next = || match flaked_daemon::keeper::recv_with_fds(manager.as_raw_fd()) {
        Ok((msg, fds)) => Some((String::from_utf8(msg).expect("utf-8"), fds)),
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => None,
        Err(e) => panic!("cannot read the notification socket: {e}"),
    };
    // The daemon's arguments and environment as the unit gives them, its log in `log`.
    let service = |cmd: &mut std::process::Command, log: &str| {
        cmd.args(["--socket", s.socket().to_str().expect("utf-8")])
            .args(["--cache-dir", cache_arg])
            .args([
                "--store-root",
                s.path().join("store").to_str().expect("utf-8"),
            ])
            .env("NOTIFY_SOCKET", &manager_path)
            .env("FDSTORE", "16")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(s.path().join(log)).expect("log"));
    };
    let mut cmd = s.command(&flaked_tests::bins().flaked);
    service(&mut cmd, "a.log");
    let mut a = Killed(cmd.spawn().expect("spawn"));
    // Bounds both daemons' runs (the binaries are built before the clock starts).
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let mut stored: Vec<(String, OwnedFd)> = Vec::new();
    let mut ask_once = true;
    loop {
        assert!(
            std::time::Instant::now() < deadline,
            "the first daemon did not stop:\n{}",
            std::fs::read_to_string(s.path().join("a.log")).unwrap_or_default()
        );
        let Some((msg, mut fds)) = next() else {
            if flaked_tests::wait_child(&mut a.0, Duration::from_millis(1)).is_some() {
                break;
            }
            continue;
        };
        if msg.contains("READY=1") && ask_once {
            ask_once = false;
            assert_eq!(ask(&s, &flake, &["eval", ".#n"]).0, "42\n");
            // SAFETY: signalling our own child.
            unsafe { libc::kill(a.0.id() as i32, libc::SIGTERM) };
        }
        if let Some(name) = msg
            .lines()
            .find_map(|l| l.strip_prefix("FDNAME="))
            .filter(|_| msg.contains("FDSTORE=1"))
        {
            assert_eq!(fds.len(), 1, "{msg}");
            stored.push((name.to_string(), fds.remove(0)));
        }
    }
    assert_eq!(stored.len(), 1, "one tree, one stored watch: {:?}", stored);
    assert!(
        !cache.join("trees/watches.sock").exists(),
        "under systemd no keeper process is started"
    );

    // The next start gets the stored watch back as fd 3, named, and no socket (it binds its own).
    let (name, fd) = stored.pop().expect("one");
    let raw = fd.as_raw_fd();
    let log = s.path().join("b.log");
    let mut cmd = s.command(std::path::Path::new("/bin/sh"));
    cmd.arg("-c")
        .arg("name=$1; shift; LISTEN_PID=$$ LISTEN_FDS=1 LISTEN_FDNAMES=$name exec \"$0\" \"$@\"")
        .arg(&flaked_tests::bins().flaked)
        .arg(&name)
        .env("FLAKED_FORBID_EVAL", "1")
        .env("FLAKED_LOG", "debug");
    service(&mut cmd, "b.log");
    flaked_tests::pass_as_fd3(&mut cmd, raw);
    let mut b = Killed(cmd.spawn().expect("spawn"));
    drop(fd);
    let mut removed = false;
    let mut ready = false;
    while !(removed && ready) {
        assert!(
            std::time::Instant::now() < deadline,
            "the second daemon did not take its watch (removed {removed}, ready {ready}):\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        let Some((msg, _)) = next() else {
            if let Ok(Some(status)) = b.0.try_wait() {
                panic!(
                    "the second daemon exited ({status}):\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            continue;
        };
        removed |= msg == format!("FDSTOREREMOVE=1\nFDNAME={name}");
        ready |= msg.contains("READY=1");
    }
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        text.contains("took over the watches kept across the restart"),
        "{text}"
    );
    // Evaluation is forbidden: the answer comes from the eval cache, vouched for by the watch.
    assert_eq!(
        ask(&s, &flake, &["eval", ".#n"]),
        ("42\n".to_string(), String::new(), true)
    );
    // SAFETY: signalling our own child.
    unsafe { libc::kill(b.0.id() as i32, libc::SIGTERM) };
    assert!(flaked_tests::wait_child(&mut b.0, Duration::from_secs(20)).is_some());
}

#[test]
fn sigkill_during_cache_writes_leaves_a_usable_cache() {
    let s = Scratch::new();
    let flake = s.path().join("f");
    // Many attributes, so that writes are in flight when the daemon is killed.
    let mut text = String::from("{ outputs = { self }: {\n");
    for i in 0..300 {
        text.push_str(&format!("  a{i} = \"v{i}\";\n"));
    }
    text.push_str("}; }\n");
    write(&flake.join("flake.nix"), &text);
    let cache = s.path().join("cache");
    let cache_arg = cache.to_str().expect("utf-8").to_string();
    for round in 0..3 {
        let d = Daemon::start(
            &s,
            DaemonOpts {
                args: &["--cache-dir", &cache_arg],
                env: &[],
            },
        );
        for i in (round * 100)..(round * 100 + 100) {
            let (o, e, ok) = ask(&s, &flake, &["eval", &format!(".#a{i}")]);
            assert!(ok, "{e}");
            assert_eq!(o, format!("\"v{i}\"\n"));
        }
        // No graceful shutdown: whatever the writer had not committed is lost, nothing else.
        let mut d = d;
        d.signal(libc::SIGKILL);
        d.wait_exit(Duration::from_secs(20));
        let _ = std::fs::remove_file(s.socket());
    }
    // Whatever survived answers correctly; the rest is evaluated.
    let d = Daemon::start(
        &s,
        DaemonOpts {
            args: &["--cache-dir", &cache_arg],
            env: &[],
        },
    );
    for i in 0..300 {
        let (o, e, ok) = ask(&s, &flake, &["eval", &format!(".#a{i}")]);
        assert!(ok, "{e}");
        assert_eq!(o, format!("\"v{i}\"\n"));
    }
    stop(d);
    let a = answers(
        &s,
        &flake,
        &cache,
        &[("FLAKED_FORBID_EVAL", "1")],
        &[vec!["eval", ".#a299"]],
    );
    assert_eq!(a[0].0.0, "\"v299\"\n", "{:?}", a[0].0);
}

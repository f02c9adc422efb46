//! The synchronous `eval` client (`fastcall`) against a real daemon: whatever it answers must be
//! byte for byte what the tonic path answers (stdout, stderr, exit status), and whatever it cannot
//! handle must reach the tonic path, which then answers as usual.
//!
//! `FLAKECTL_NO_FAST_PATH=1` forces the tonic path; `FLAKECTL_DEBUG_FAST_PATH=1` makes flakectl say on
//! stderr when (and why) the fast path was not taken.

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use flaked_tests::{Daemon, DaemonOpts, Scratch, bins, texts};

/// Runs flakectl on `socket` with `args`; `fast` false forces the tonic path.
fn flakectl(s: &Scratch, socket: &Path, fast: bool, args: &[&str]) -> Output {
    let mut cmd = s.command(&bins().flakectl);
    cmd.arg("--socket")
        .arg(socket)
        .arg("--no-auto-start")
        .args(args)
        .current_dir(s.path())
        .env("FLAKECTL_DEBUG_FAST_PATH", "1");
    if !fast {
        cmd.env("FLAKECTL_NO_FAST_PATH", "1");
    }
    cmd.output().expect("run flakectl")
}

const NOT_TAKEN: &str = "flakectl: fast path not taken";

/// Both paths give the same stdout, stderr and status, and the fast path answered by itself.
fn same_on_both_paths(s: &Scratch, args: &[&str]) -> Output {
    let fast = flakectl(s, &s.socket(), true, args);
    let slow = flakectl(s, &s.socket(), false, args);
    let fast_err = texts(&fast).1;
    assert!(!fast_err.contains(NOT_TAKEN), "{args:?}: {fast_err}");
    assert_eq!(
        fast.status.code(),
        slow.status.code(),
        "{args:?}: {fast_err}"
    );
    assert!(fast.stdout == slow.stdout, "{args:?}: stdouts differ");
    assert_eq!(fast_err, texts(&slow).1, "{args:?}");
    fast
}

#[test]
fn a_large_reply_is_the_same_as_tonics() {
    let s = Scratch::new();
    let _d = Daemon::start(&s, DaemonOpts::default());
    let out = same_on_both_paths(&s, &["eval", "--expr", "builtins.genList (x: x) 200000"]);
    assert!(out.status.success());
    // `[ 0 1 2 … 199999 ]`: well over a MiB, many DATA frames.
    assert!(out.stdout.len() > 1_200_000, "{}", out.stdout.len());
    assert!(out.stdout.starts_with(b"[ 0 1 2 "));
    assert!(out.stdout.ends_with(b" 199999 ]\n"));

    let out = same_on_both_paths(
        &s,
        &[
            "eval",
            "--json",
            "--expr",
            "builtins.genList (x: { n = x; s = \"v${toString x}\"; }) 100000",
        ],
    );
    assert!(out.stdout.len() > 2_000_000, "{}", out.stdout.len());
    same_on_both_paths(&s, &["eval", "--raw", "--expr", "\"hi\""]);
    same_on_both_paths(&s, &["eval", "--expr", "1 + 1"]);
}

#[test]
fn an_evaluation_error_is_rendered_the_same() {
    let s = Scratch::new();
    let _d = Daemon::start(&s, DaemonOpts::default());
    let out = same_on_both_paths(&s, &["eval", "--expr", "throw \"boom\""]);
    assert_eq!(out.status.code(), Some(1));
    assert!(texts(&out).1.starts_with("error:"), "{}", texts(&out).1);
    let out = same_on_both_paths(
        &s,
        &[
            "eval",
            "--expr",
            "let f = x: x + \"a\"; in builtins.trace \"tracing\" (f 1)",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    same_on_both_paths(&s, &["eval", "--file", "does-not-exist.nix"]);
}

#[test]
fn a_grpc_status_is_reported_the_same() {
    let s = Scratch::new();
    let _d = Daemon::start(
        &s,
        DaemonOpts {
            args: &[],
            env: &[("FLAKED_TEST_PANIC_EXPR", "panic here")],
        },
    );
    let out = same_on_both_paths(&s, &["eval", "--expr", "panic here"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        texts(&out)
            .1
            .starts_with("error: flaked hit an internal error"),
        "{}",
        texts(&out).1
    );
}

/// How the proxy treats the first connection it accepts (later ones are always forwarded).
#[derive(Clone, Copy)]
enum First {
    Forward,
    /// Reads the request, then closes without answering.
    Close,
    /// Answers with a well-formed HTTP/2 response whose status is 503.
    Status503,
    /// Answers with a frame larger than the client allows.
    HugeFrame,
}

/// A Unix socket proxy in front of the daemon that counts connections.
struct Proxy {
    path: PathBuf,
    connections: Arc<AtomicUsize>,
}

impl Proxy {
    fn start(s: &Scratch, first: First, name: &str) -> Proxy {
        let path = s.path().join(name);
        let listener = UnixListener::bind(&path).expect("bind proxy");
        let upstream = s.socket();
        let connections = Arc::new(AtomicUsize::new(0));
        let count = connections.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { return };
                let n = count.fetch_add(1, Ordering::SeqCst);
                let upstream = upstream.clone();
                std::thread::spawn(move || match (n, first) {
                    (0, First::Close) => {
                        let mut buf = [0u8; 4096];
                        let _ = conn.read(&mut buf);
                    }
                    (0, First::Status503) => {
                        let mut buf = [0u8; 4096];
                        let _ = conn.read(&mut buf);
                        // SETTINGS (empty), then HEADERS on stream 1: `:status 503` (static index 14
                        // is `:status 500`; a literal without indexing on name index 8 `:status`).
                        let mut out = vec![0, 0, 0, 4, 0, 0, 0, 0, 0];
                        let block = [0x08, 3, b'5', b'0', b'3'];
                        out.extend_from_slice(&[0, 0, block.len() as u8, 1, 0x4 | 0x1, 0, 0, 0, 1]);
                        out.extend_from_slice(&block);
                        let _ = conn.write_all(&out);
                        let _ = conn.read(&mut buf);
                    }
                    (0, First::HugeFrame) => {
                        let mut buf = [0u8; 4096];
                        let _ = conn.read(&mut buf);
                        let _ = conn.write_all(&[0xff, 0xff, 0xff, 0, 0, 0, 0, 0, 1]);
                        let _ = conn.read(&mut buf);
                    }
                    _ => forward(conn, &upstream),
                });
            }
        });
        Proxy { path, connections }
    }

    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

fn forward(client: UnixStream, upstream: &Path) {
    let Ok(server) = UnixStream::connect(upstream) else {
        return;
    };
    let (Ok(mut c2), Ok(mut s2)) = (client.try_clone(), server.try_clone()) else {
        return;
    };
    let up = std::thread::spawn(move || {
        let mut client = client;
        let mut server = server;
        let _ = std::io::copy(&mut client, &mut server);
        let _ = server.shutdown(std::net::Shutdown::Write);
    });
    let _ = std::io::copy(&mut s2, &mut c2);
    let _ = c2.shutdown(std::net::Shutdown::Write);
    let _ = up.join();
}

#[test]
fn the_fast_path_uses_one_connection() {
    let s = Scratch::new();
    let _d = Daemon::start(&s, DaemonOpts::default());
    let proxy = Proxy::start(&s, First::Forward, "proxy.sock");
    let out = flakectl(&s, &proxy.path, true, &["eval", "--expr", "1 + 2"]);
    assert_eq!(texts(&out), ("3\n".to_string(), String::new()));
    assert!(out.status.success());
    assert_eq!(proxy.connections(), 1);
}

#[test]
fn what_the_fast_path_cannot_handle_goes_to_tonic() {
    let s = Scratch::new();
    let _d = Daemon::start(&s, DaemonOpts::default());
    for (i, (first, why)) in [
        (
            First::Close,
            "the connection closed before the answer was complete",
        ),
        (First::Status503, "the response status is not 200"),
        (First::HugeFrame, "exceeds the announced maximum"),
    ]
    .into_iter()
    .enumerate()
    {
        let proxy = Proxy::start(&s, first, &format!("proxy-{i}.sock"));
        let out = flakectl(&s, &proxy.path, true, &["eval", "--expr", "1 + 2"]);
        let (stdout, stderr) = texts(&out);
        assert_eq!(stdout, "3\n", "{stderr}");
        assert!(out.status.success(), "{stderr}");
        assert!(stderr.starts_with(NOT_TAKEN), "{stderr}");
        assert!(stderr.contains(why), "{stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert_eq!(proxy.connections(), 2, "the tonic path reconnected");
    }

    // No daemon at all: the fast path cannot connect, and the tonic path reports it as before.
    let missing = s.path().join("missing.sock");
    let fast = flakectl(&s, &missing, true, &["eval", "--expr", "1"]);
    let slow = flakectl(&s, &missing, false, &["eval", "--expr", "1"]);
    assert_eq!(fast.status.code(), Some(1));
    let fast_err = texts(&fast).1;
    let (debug, rest) = fast_err.split_once('\n').expect("two lines");
    assert!(debug.starts_with(NOT_TAKEN), "{fast_err}");
    assert_eq!(rest, texts(&slow).1);
    assert!(rest.starts_with("error: flaked is not running"), "{rest}");
}

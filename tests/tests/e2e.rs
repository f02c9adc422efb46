//! End-to-end tests of the service path: a real `flaked` on a temporary socket, driven by the real
//! `flakectl` binary as a subprocess (and, where a test needs to craft or inspect raw gRPC, by a direct
//! client).

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use flaked_proto::v1 as pb;
use flaked_tests::{
    Daemon, DaemonOpts, Scratch, bins, context, eventually, runtime, texts, wait_child,
};

fn status(scratch: &Scratch) -> Option<pb::StatusResponse> {
    runtime().block_on(async {
        let mut c = flaked_proto::connect(&scratch.socket()).await.ok()?;
        c.status(pb::StatusRequest {})
            .await
            .ok()
            .map(|r| r.into_inner())
    })
}

#[test]
fn eval_expression_prints_the_value() {
    let s = Scratch::new();
    let _d = Daemon::start(&s, DaemonOpts::default());
    let out = s.flakectl(&["eval", "--expr", "1 + 2"]);
    let (stdout, stderr) = texts(&out);
    assert_eq!(stdout, "3\n", "stderr: {stderr}");
    assert!(out.status.success());

    let out = s.flakectl(&["eval", "--json", "--expr", "{ a = [ 1 \"x\" ]; }"]);
    assert_eq!(
        texts(&out).0,
        "{\"a\":[1,\"x\"]}\n",
        "stderr: {}",
        texts(&out).1
    );

    let out = s.flakectl(&["eval", "--raw", "--expr", "\"hi\""]);
    assert_eq!(texts(&out).0, "hi");
}

#[test]
fn eval_error_is_rendered_like_nix_and_structured() {
    let s = Scratch::new();
    let _d = Daemon::start(&s, DaemonOpts::default());
    let out = s.flakectl(&["eval", "--expr", "throw \"boom\""]);
    let (stdout, stderr) = texts(&out);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stdout, "");
    assert!(stderr.starts_with("error:"), "{stderr}");
    assert!(stderr.contains("boom"), "{stderr}");

    // The same error, seen structurally.
    let reply = runtime().block_on(async {
        let mut c = flaked_proto::connect(&s.socket()).await.expect("connect");
        c.eval(pb::EvalRequest {
            context: Some(context(s.path())),
            source: Some(pb::eval_request::Source::Expr("throw \"boom\"".into())),
            ..Default::default()
        })
        .await
        .expect("an evaluation error is an answer, not a status")
        .into_inner()
    });
    let Some(pb::eval_response::Result::Error(d)) = reply.result else {
        panic!("expected a diagnostic, got {reply:?}");
    };
    assert_eq!(d.message, "boom");
    assert!(d.rendered.starts_with("error:"));
    assert!(
        stderr.contains(d.rendered.trim_end()),
        "flakectl prints the rendered diagnostic"
    );
}

#[test]
fn auto_start_when_no_daemon_runs_then_idle_exit() {
    let s = Scratch::new();
    let sock = s.socket();
    assert!(!sock.exists());
    let mut cmd = s.command(&bins().flakectl);
    // The daemon it starts keeps its caches and store in the scratch directory.
    cmd.env("FLAKED_CACHE_DIR", s.path().join("cache"))
        .env("FLAKED_STORE_ROOT", s.path().join("store-root"));
    let out = cmd
        .args(["--socket"])
        .arg(&sock)
        .args(["--daemon-idle-exit", "2s", "eval", "--expr", "1 + 2"])
        .current_dir(s.path())
        .output()
        .expect("run flakectl");
    let (stdout, stderr) = texts(&out);
    assert_eq!(stdout, "3\n", "stderr: {stderr}");
    let st = status(&s).expect("the started daemon answers");
    assert!(st.requests_served >= 1);
    // It was started with --idle-exit 2s: it goes away on its own and removes its socket.
    assert!(
        eventually(Duration::from_secs(15), || !sock.exists()),
        "auto-started daemon did not exit when idle"
    );
    // SAFETY: probing whether a pid exists.
    let alive = unsafe { libc::kill(st.pid as i32, 0) } == 0;
    assert!(
        !alive
            || eventually(Duration::from_secs(5), || unsafe {
                libc::kill(st.pid as i32, 0)
            } != 0)
    );
}

#[test]
fn no_daemon_and_no_auto_start_is_a_clear_error() {
    let s = Scratch::new();
    let out = s.flakectl(&["eval", "--expr", "1"]);
    let (_, stderr) = texts(&out);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr.starts_with("error: flaked is not running"),
        "{stderr}"
    );
}

#[test]
fn two_concurrent_clients_are_served_at_once() {
    let s = Scratch::new();
    let _d = Daemon::start(
        &s,
        DaemonOpts {
            args: &["--eval-workers", "2"],
            env: &[("FLAKED_TEST_EVAL_DELAY_MS", "1500")],
        },
    );
    let spawn = || {
        s.flakectl_cmd(&["eval", "--expr", "1 + 2"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn flakectl")
    };
    let a = spawn();
    let b = spawn();
    let mut max_in_flight = 0;
    eventually(Duration::from_secs(5), || {
        if let Some(st) = status(&s) {
            max_in_flight = max_in_flight.max(st.requests_in_flight);
        }
        max_in_flight >= 2
    });
    let a = a.wait_with_output().expect("a");
    let b = b.wait_with_output().expect("b");
    assert_eq!(
        max_in_flight, 2,
        "both requests were in flight at the same time"
    );
    assert_eq!(texts(&a).0, "3\n", "{}", texts(&a).1);
    assert_eq!(texts(&b).0, "3\n", "{}", texts(&b).1);
}

#[test]
fn daemon_restart_on_the_same_socket() {
    let s = Scratch::new();
    let mut d = Daemon::start(&s, DaemonOpts::default());
    let first = status(&s).expect("status").pid;
    let out = s.flakectl(&["daemon", "stop"]);
    assert!(out.status.success(), "{}", texts(&out).1);
    assert!(
        d.wait_exit(Duration::from_secs(10))
            .is_some_and(|st| st.success())
    );
    assert!(!s.socket().exists(), "a clean stop removes the socket");
    let out = s.flakectl(&["daemon", "status"]);
    assert_eq!(out.status.code(), Some(1));

    let _d2 = Daemon::start(&s, DaemonOpts::default());
    let second = status(&s).expect("status after restart").pid;
    assert_ne!(first, second);
    let out = s.flakectl(&["daemon", "status"]);
    let (stdout, _) = texts(&out);
    assert!(stdout.contains(&format!("pid {second}")), "{stdout}");
    let out = s.flakectl(&["eval", "--expr", "1 + 2"]);
    assert_eq!(texts(&out).0, "3\n", "{}", texts(&out).1);
}

#[test]
fn stale_socket_file_is_replaced() {
    let s = Scratch::new();
    // A socket file nobody listens on: what a crashed daemon leaves behind.
    drop(UnixListener::bind(s.socket()).expect("bind"));
    assert!(s.socket().exists());
    assert!(UnixStream::connect(s.socket()).is_err());
    let d = Daemon::start(&s, DaemonOpts::default());
    assert!(
        d.log_text().contains("replacing a stale socket file"),
        "{}",
        d.log_text()
    );
    assert!(status(&s).is_some());
}

#[test]
fn a_second_daemon_on_a_live_socket_is_refused() {
    let s = Scratch::new();
    let first = Daemon::start(&s, DaemonOpts::default());
    let err = Daemon::try_start(&s, DaemonOpts::default())
        .err()
        .expect("the second daemon must refuse");
    assert!(err.contains("exit status: 1"), "{err}");
    assert!(
        err.contains(&format!(
            "another flaked (pid {}) is already serving on",
            first.pid()
        )),
        "{err}"
    );
    assert_eq!(
        status(&s).expect("the first still serves").pid,
        first.pid() as u32
    );
}

#[test]
fn a_client_of_another_uid_is_refused() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: needs root to run a client as nobody");
        return;
    }
    let s = Scratch::new();
    std::fs::set_permissions(s.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    // The socket is connectable by everyone; SO_PEERCRED is what refuses.
    let d = Daemon::start(
        &s,
        DaemonOpts {
            args: &["--socket-mode", "0666"],
            env: &[],
        },
    );
    let probe = std::path::PathBuf::from(env!("CARGO_BIN_EXE_flaked-probe"));
    let as_nobody = |cmd: &mut Command| {
        // SAFETY: setgid/setuid between fork and exec; async-signal-safe.
        unsafe {
            cmd.pre_exec(|| {
                if libc::setgroups(0, std::ptr::null()) != 0
                    || libc::setgid(65534) != 0
                    || libc::setuid(65534) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    };
    let mut cmd = Command::new(&probe);
    cmd.arg(s.socket());
    as_nobody(&mut cmd);
    let out = cmd.output().expect("run probe");
    let (stdout, stderr) = texts(&out);
    assert!(
        stdout.starts_with("code=PermissionDenied"),
        "stdout: {stdout} stderr: {stderr}"
    );
    assert!(stdout.contains("comes from uid 65534"), "{stdout}");

    // flakectl run as nobody prints the refusal in Nix's style.
    let mut cmd = s.flakectl_cmd(&["eval", "--expr", "1"]);
    cmd.current_dir("/");
    as_nobody(&mut cmd);
    let out = cmd.output().expect("run flakectl as nobody");
    let (_, stderr) = texts(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.starts_with("error: flaked serves only uid 0 and root"),
        "{stderr}"
    );
    assert!(
        eventually(Duration::from_secs(5), || d
            .log_text()
            .contains("refusing a client of another user")),
        "{}",
        d.log_text()
    );
    // Root (our uid) is still served.
    let mut cmd = Command::new(&probe);
    let out = cmd.arg(s.socket()).output().expect("probe");
    assert!(texts(&out).0.starts_with("code=Ok"), "{}", texts(&out).0);
}

#[test]
fn sigterm_lets_an_in_flight_request_finish() {
    let s = Scratch::new();
    let mut d = Daemon::start(
        &s,
        DaemonOpts {
            args: &["--shutdown-grace", "20s"],
            env: &[("FLAKED_TEST_EVAL_DELAY_MS", "1500")],
        },
    );
    let client = s
        .flakectl_cmd(&["eval", "--expr", "1 + 2"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn flakectl");
    assert!(
        eventually(Duration::from_secs(5), || status(&s)
            .is_some_and(|st| st.requests_in_flight == 1)),
        "the request is in flight"
    );
    let sent = Instant::now();
    d.signal(libc::SIGTERM);
    let out = client.wait_with_output().expect("flakectl");
    assert_eq!(texts(&out).0, "3\n", "stderr: {}", texts(&out).1);
    let st = d
        .wait_exit(Duration::from_secs(20))
        .expect("the daemon exits after the request");
    assert!(st.success(), "{st}");
    assert!(sent.elapsed() < Duration::from_secs(15));
    let log = d.log_text();
    assert!(log.contains("shutting down"), "{log}");
    assert!(!s.socket().exists());
}

#[test]
fn shutdown_grace_bounds_a_request_that_does_not_finish() {
    let s = Scratch::new();
    let mut d = Daemon::start(
        &s,
        DaemonOpts {
            args: &["--shutdown-grace", "300ms"],
            env: &[("FLAKED_TEST_EVAL_DELAY_MS", "60000")],
        },
    );
    let mut client = s
        .flakectl_cmd(&["eval", "--expr", "1"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn flakectl");
    assert!(eventually(Duration::from_secs(5), || status(&s)
        .is_some_and(|st| st.requests_in_flight == 1)));
    d.signal(libc::SIGTERM);
    let st = d
        .wait_exit(Duration::from_secs(10))
        .expect("exits within the grace bound");
    assert!(st.success());
    assert!(
        d.log_text().contains("end of the shutdown grace period"),
        "{}",
        d.log_text()
    );
    let cst = wait_child(&mut client, Duration::from_secs(10)).expect("client ends");
    assert_eq!(
        cst.code(),
        Some(1),
        "the client reports the lost connection"
    );
}

#[test]
fn a_panic_in_an_evaluation_is_internal_and_the_daemon_stays_up() {
    let s = Scratch::new();
    let d = Daemon::start(
        &s,
        DaemonOpts {
            args: &[],
            env: &[("FLAKED_TEST_PANIC_EXPR", "panic here")],
        },
    );
    let code = runtime().block_on(async {
        let mut c = flaked_proto::connect(&s.socket()).await.expect("connect");
        c.eval(pb::EvalRequest {
            context: Some(context(s.path())),
            source: Some(pb::eval_request::Source::Expr("panic here".into())),
            ..Default::default()
        })
        .await
        .expect_err("a panic is an INTERNAL status")
    });
    assert_eq!(code.code(), tonic::Code::Internal);
    assert!(
        code.message().contains("the daemon is still running"),
        "{}",
        code.message()
    );
    let out = s.flakectl(&["eval", "--expr", "panic here"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        texts(&out)
            .1
            .starts_with("error: flaked hit an internal error"),
        "{}",
        texts(&out).1
    );
    assert!(status(&s).is_some(), "the daemon is still up");
    assert!(
        d.log_text().contains("evaluation panicked"),
        "{}",
        d.log_text()
    );
}

#[derive(Clone, PartialEq, prost::Message)]
struct BogusEvalRequest {
    /// Field 2 is `expr` (a string) in EvalRequest: invalid UTF-8 there is undecodable.
    #[prost(bytes = "vec", tag = "2")]
    expr: Vec<u8>,
}

#[test]
fn malformed_requests_get_clear_errors() {
    let s = Scratch::new();
    let _d = Daemon::start(&s, DaemonOpts::default());
    runtime().block_on(async {
        let mut c = flaked_proto::connect(&s.socket()).await.expect("connect");
        // Well-formed protobuf, meaningless request: no source.
        let e = c
            .eval(pb::EvalRequest {
                context: Some(context(s.path())),
                ..Default::default()
            })
            .await
            .expect_err("no source");
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        assert!(e.message().contains("no source"), "{}", e.message());
        // No context at all.
        let e = c
            .eval(pb::EvalRequest {
                source: Some(pb::eval_request::Source::Expr("1".into())),
                ..Default::default()
            })
            .await
            .expect_err("no context");
        assert_eq!(e.code(), tonic::Code::InvalidArgument);

        // Bytes that do not decode as an EvalRequest.
        let stream = tokio::net::UnixStream::connect(s.socket())
            .await
            .expect("connect");
        let channel = flaked_proto::channel_over(stream).await.expect("handshake");
        let mut grpc = tonic::client::Grpc::new(channel);
        grpc.ready().await.expect("ready");
        let codec: tonic_prost::ProstCodec<BogusEvalRequest, pb::EvalResponse> = Default::default();
        let path = tonic::codegen::http::uri::PathAndQuery::from_static("/flaked.v1.Flaked/Eval");
        let e = grpc
            .unary(
                tonic::Request::new(BogusEvalRequest {
                    expr: vec![0xff, 0xfe, 0x00],
                }),
                path,
                codec,
            )
            .await
            .expect_err("undecodable");
        assert_eq!(e.code(), tonic::Code::Internal);
        assert!(e.message().contains("failed to decode"), "{}", e.message());
    });

    // Not HTTP/2 at all.
    let mut raw = UnixStream::connect(s.socket()).expect("connect");
    let _ = raw.write_all(b"GET / HTTP/1.0\r\n\r\nthis is not gRPC\x00\x01\x02");
    drop(raw);
    assert!(status(&s).is_some(), "the daemon is unaffected");
}

#[test]
fn an_oversized_request_is_refused_and_the_daemon_is_unaffected() {
    let s = Scratch::new();
    let _d = Daemon::start(
        &s,
        DaemonOpts {
            args: &["--max-request-bytes", "64K"],
            env: &[],
        },
    );
    let big = format!("\"{}\"", "x".repeat(100 * 1024));
    let e = runtime().block_on(async {
        let mut c = flaked_proto::connect(&s.socket()).await.expect("connect");
        c.eval(pb::EvalRequest {
            context: Some(context(s.path())),
            source: Some(pb::eval_request::Source::Expr(big.clone())),
            ..Default::default()
        })
        .await
        .expect_err("too large")
    });
    // tonic refuses an over-long message before decoding it, with OUT_OF_RANGE.
    assert_eq!(e.code(), tonic::Code::OutOfRange);
    assert!(e.message().contains("too large"), "{}", e.message());
    let out = s.flakectl(&["eval", "--expr", &big]);
    assert_eq!(out.status.code(), Some(1));
    assert!(texts(&out).1.starts_with("error:"), "{}", texts(&out).1);
    assert!(status(&s).is_some(), "the daemon is unaffected");
}

#[test]
fn a_client_disconnecting_mid_request_leaves_the_daemon_unaffected() {
    let s = Scratch::new();
    let d = Daemon::start(
        &s,
        DaemonOpts {
            args: &["--eval-workers", "1"],
            env: &[("FLAKED_TEST_EVAL_DELAY_MS", "30000")],
        },
    );
    // A direct client that gives up after 300 ms: its request future is dropped, the connection closed.
    runtime().block_on(async {
        let mut c = flaked_proto::connect(&s.socket()).await.expect("connect");
        let call = c.eval(pb::EvalRequest {
            context: Some(context(s.path())),
            source: Some(pb::eval_request::Source::Expr("1".into())),
            ..Default::default()
        });
        assert!(
            tokio::time::timeout(Duration::from_millis(300), call)
                .await
                .is_err()
        );
    });
    // A flakectl killed mid-request.
    let mut client = s
        .flakectl_cmd(&["eval", "--expr", "1"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    std::thread::sleep(Duration::from_millis(300));
    let _ = client.kill();
    let _ = client.wait();
    // Both abandoned evaluations are interrupted: nothing stays in flight, and the single evaluation
    // slot is free again (a 30 s delay would otherwise hold it).
    assert!(
        eventually(Duration::from_secs(10), || status(&s)
            .is_some_and(|st| st.requests_in_flight == 0)),
        "abandoned requests are cleaned up; log:\n{}",
        d.log_text()
    );
}

#[test]
fn a_capability_not_there_yet_answers_unimplemented() {
    // ListAttrs serves installables; attributes of a bare expression are not offered yet.
    let s = Scratch::new();
    let _d = Daemon::start(&s, DaemonOpts::default());
    let e = runtime().block_on(async {
        let mut c = flaked_proto::connect(&s.socket()).await.expect("connect");
        c.list_attrs(pb::ListAttrsRequest {
            context: Some(context(s.path())),
            source: Some(pb::list_attrs_request::Source::Expr("{ a = 1; }".into())),
            attr_path: String::new(),
        })
        .await
        .expect_err("unimplemented")
    });
    assert_eq!(e.code(), tonic::Code::Unimplemented);
}

#[test]
fn status_reports_the_daemon() {
    let s = Scratch::new();
    let d = Daemon::start(&s, DaemonOpts::default());
    let out = s.flakectl(&["daemon", "status"]);
    let (stdout, stderr) = texts(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stdout.starts_with(&format!(
            "flaked {} (pid {})",
            env!("CARGO_PKG_VERSION"),
            d.pid()
        )),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("socket: {}", s.socket().display())),
        "{stdout}"
    );
    let st = status(&s).expect("status");
    assert!(st.memory_rss_bytes > 0);
    assert!(!st.socket_activated);
}

#[test]
fn socket_activation_and_idle_exit() {
    let s = Scratch::new();
    let listener = UnixListener::bind(s.socket()).expect("bind");
    let notify_path = s.path().join("notify-activation");
    let notify = std::os::unix::net::UnixDatagram::bind(&notify_path).expect("notify");
    notify
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let log = s.path().join("activated.log");
    // systemd passes the socket as fd 3 with LISTEN_PID set to the daemon's own pid: a shell's `exec`
    // keeps the pid, so `$$` is the daemon's pid.
    let mut cmd = s.command(std::path::Path::new("/bin/sh"));
    cmd.arg("-c")
        .arg("LISTEN_PID=$$ LISTEN_FDS=1 exec \"$0\" --idle-exit 1s")
        .arg(&bins().flaked)
        .env("NOTIFY_SOCKET", &notify_path)
        .env("FLAKED_CACHE_DIR", s.path().join("cache"))
        .env("FLAKED_STORE_ROOT", s.path().join("store-root"))
        .stdin(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log"));
    flaked_tests::pass_as_fd3(&mut cmd, std::os::fd::AsRawFd::as_raw_fd(&listener));
    let mut child = cmd.spawn().expect("spawn");
    let mut buf = [0u8; 256];
    let n = notify.recv(&mut buf).expect("READY=1 arrives");
    assert!(String::from_utf8_lossy(&buf[..n]).contains("READY=1"));
    drop(listener);
    let st = status(&s).expect("the activated daemon answers");
    assert!(st.socket_activated, "{st:?}");
    let exit = wait_child(&mut child, Duration::from_secs(15)).expect("idle exit");
    assert!(
        exit.success(),
        "{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    assert!(
        s.socket().exists(),
        "under socket activation the socket belongs to the service manager"
    );
}

#[test]
fn flakectl_does_not_link_the_evaluator_store_or_cache() {
    let workspace = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = Command::new(cargo)
        .current_dir(workspace)
        .args([
            "tree",
            "-p",
            "flakectl",
            "-e",
            "normal,build",
            "--prefix",
            "none",
            "--offline",
        ])
        .output()
        .expect("cargo tree");
    let tree = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(tree.starts_with("flakectl "), "{tree}");
    assert!(tree.contains("flaked-proto "), "{tree}");
    for forbidden in ["flaked-eval ", "flaked-store ", "flaked-cache ", "flaked "] {
        assert!(
            !tree.lines().any(|l| l.starts_with(forbidden)),
            "flakectl must stay thin but depends on {forbidden}:\n{tree}"
        );
    }
}

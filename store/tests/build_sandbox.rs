//! The sandbox: isolation (network, host files, writes outside the outputs), process
//! containment (background processes, timeouts), identity inside (uid, hostname, /etc, PID
//! 1), failure handling (nothing registered, build directories removed), and Nix's errors.

#[path = "build/support.rs"]
mod support;

use std::io::Read;
use std::time::{Duration, Instant};

use flaked_store::build::{BuildError, BuildOptions, BuildPool, SandboxMode};
use support::*;

fn pool_with(t: &TestStore, f: impl FnOnce(&mut flaked_store::build::BuildSettings)) -> BuildPool {
    let mut s = settings(t);
    f(&mut s);
    BuildPool::new(t.store.clone(), s)
}

fn build_one(pool: &BuildPool, drv: &flaked_store::StorePath) -> Result<(), BuildError> {
    build(pool, &[all_outputs(drv.clone())], &BuildOptions::default())
        .0
        .map(|_| ())
}

#[test]
fn identity_inside_the_sandbox() {
    let t = test_store();
    let pool = pool_with(&t, |_| {});
    let d = mk_drv(
        &t.store,
        "identity",
        "/bin/bash",
        r#"
        exec > $out
        echo "pid=$$ pwd=$(pwd) host=$(</proc/sys/kernel/hostname) domain=$(</proc/sys/kernel/domainname)"
        grep_uid() { while read -r k a b c d; do case $k in Uid:|Gid:) echo "$k $a";; esac; done < /proc/self/status; }
        grep_uid
        echo "--passwd"; echo "$(</etc/passwd)"
        echo "--group"; echo "$(</etc/group)"
        echo "--hosts"; echo "$(</etc/hosts)"
        echo "--env TMPDIR=$TMPDIR TMP=$TMP TEMP=$TEMP TEMPDIR=$TEMPDIR NIX_BUILD_TOP=$NIX_BUILD_TOP PWD=$PWD"
        echo "--dev"; for f in /dev/null /dev/zero /dev/full /dev/random /dev/urandom /dev/fd /dev/shm /tmp; do [ -e $f ] && echo "$f ok"; done
        echo "--root"; echo / /*
        "#,
        &[],
        &[],
    );
    build_one(&pool, &d).expect("build");
    let out = read_out(&t.store, &d);
    assert!(
        out.starts_with("pid=1 pwd=/build host=localhost domain=(none)\n"),
        "{out}"
    );
    assert!(out.contains("Uid: 1000\nGid: 100\n"), "{out}");
    assert!(out.contains(
        "--passwd\nroot:x:0:0:Nix build user:/build:/noshell\nnixbld:x:1000:100:Nix build user:/build:/noshell\nnobody:x:65534:65534:Nobody:/:/noshell\n"
    ), "{out}");
    assert!(
        out.contains("--group\nroot:x:0:\nnixbld:!:100:\nnogroup:x:65534:\n"),
        "{out}"
    );
    assert!(
        out.contains("--hosts\n127.0.0.1 localhost\n::1 localhost\n"),
        "{out}"
    );
    assert!(
        out.contains(
            "TMPDIR=/build TMP=/build TEMP=/build TEMPDIR=/build NIX_BUILD_TOP=/build PWD=/build"
        ),
        "{out}"
    );
    for f in [
        "/dev/null",
        "/dev/zero",
        "/dev/full",
        "/dev/random",
        "/dev/urandom",
        "/dev/fd",
        "/dev/shm",
        "/tmp",
    ] {
        assert!(out.contains(&format!("{f} ok")), "{f} missing: {out}");
    }
    // Only what the sandbox provides is at the root (the host's /home, /root, /var… are not).
    let root_line = out.lines().last().expect("root listing");
    for absent in ["/home", "/root", "/var", "/work", "/opt"] {
        assert!(
            !root_line.split(' ').any(|e| e == absent),
            "{absent} visible: {root_line}"
        );
    }
}

#[test]
fn network_is_loopback_only_except_for_fixed_output() {
    let t = test_store();
    let pool = pool_with(&t, |_| {});
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    listener.set_nonblocking(true).expect("nonblocking");
    let script = format!(
        r#"
        exec > $out
        if (echo hi > /dev/tcp/127.0.0.1/{port}) 2>/dev/null; then echo host-reachable; else echo host-unreachable; fi
        if (echo hi > /dev/tcp/1.1.1.1/53) 2>/dev/null; then echo internet; else echo no-internet; fi
        while read -r a rest; do case $a in *:) echo "if $a";; esac; done < /proc/net/dev
        "#
    );
    let d = mk_drv(&t.store, "net", "/bin/bash", &script, &[], &[]);
    build_one(&pool, &d).expect("build");
    let out = read_out(&t.store, &d);
    assert!(out.contains("host-unreachable\nno-internet\n"), "{out}");
    let ifs: Vec<&str> = out.lines().filter(|l| l.starts_with("if ")).collect();
    assert_eq!(ifs, ["if lo:"], "only a loopback interface: {out}");
    assert!(
        listener.accept().is_err(),
        "nothing reached the host listener"
    );

    // A fixed-output derivation keeps the host's network: it reaches the listener.
    let fod_script = format!(
        "if (echo hi > /dev/tcp/127.0.0.1/{port}) 2>/dev/null; then printf reached > $out; else printf unreached > $out; fi"
    );
    let fod = {
        let mut d = flaked_store::Derivation {
            name: "net-fod".into(),
            platform: "x86_64-linux".into(),
            builder: "/bin/bash".into(),
            args: vec!["-c".into(), fod_script],
            ..Default::default()
        };
        // sha256("reached")
        let h = flaked_store::Hash::sha256(b"reached").to_base16();
        let (o, _) =
            flaked_store::fixed_output(&h, Some("sha256"), Some("flat"), &["out"]).expect("fod");
        d.outputs.insert("out".into(), o);
        for (k, v) in [
            ("name", "net-fod"),
            ("builder", "/bin/bash"),
            ("system", "x86_64-linux"),
        ] {
            d.env.insert(k.into(), v.into());
        }
        t.store.instantiate(d).expect("instantiate").0
    };
    build_one(&pool, &fod).expect("fixed-output build reaches the host");
    let (mut s, _) = listener.accept().expect("the fixed-output build connected");
    let mut buf = String::new();
    s.set_nonblocking(false).expect("blocking");
    let _ = s.read_to_string(&mut buf);
    assert_eq!(buf, "hi\n");
}

#[test]
fn host_files_and_undeclared_store_paths_are_invisible() {
    let t = test_store();
    let pool = pool_with(&t, |_| {});
    let secret = t.root.join("secret.txt");
    std::fs::write(&secret, "top secret").expect("write secret");
    let undeclared = t
        .store
        .add_text("undeclared", b"not an input", &Default::default())
        .expect("add text");
    let undeclared_s = t.store.store_dir().print(&undeclared);
    let script = format!(
        r#"
        exec > $out
        if [ -e {secret} ]; then echo secret-visible; else echo secret-hidden; fi
        if [ -e {undeclared_s} ]; then echo undeclared-visible; else echo undeclared-hidden; fi
        if [ -e /etc/shadow ]; then echo shadow-visible; else echo shadow-hidden; fi
        "#,
        secret = secret.display()
    );
    let d = mk_drv(&t.store, "reader", "/bin/sh", &script, &[], &[]);
    build_one(&pool, &d).expect("build");
    assert_eq!(
        read_out(&t.store, &d),
        "secret-hidden\nundeclared-hidden\nshadow-hidden\n"
    );
    // Reading it outright fails the build.
    let d2 = mk_drv(
        &t.store,
        "reader2",
        "/bin/sh",
        &format!("/bin/cat {} > $out", secret.display()),
        &[],
        &[],
    );
    match build_one(&pool, &d2) {
        Err(BuildError::BuilderFailed {
            status, log_tail, ..
        }) => {
            assert_eq!(status, "failed with exit code 1");
            assert!(
                log_tail
                    .iter()
                    .any(|l| l.contains("No such file or directory")),
                "{log_tail:?}"
            );
        }
        other => panic!("expected a builder failure, got {other:?}"),
    }
    assert!(
        !t.store
            .is_valid_path(&out_path(&t.store, &d2))
            .expect("query")
    );
}

#[test]
fn writes_outside_the_outputs_fail_or_are_discarded() {
    let t = test_store();
    let pool = pool_with(&t, |_| {});
    let input = mk_drv(&t.store, "input", "/bin/sh", "echo input > $out", &[], &[]);
    let input_out = t.store.store_dir().print(&out_path(&t.store, &input));
    let host_marker = t.root.join("host-marker");
    let script = format!(
        r#"
        exec > $out
        for f in /etc/passwd /etc/new /bin/sh /new-at-root {input_out} {input_out}-sibling/x; do
          if (echo pwned > $f) 2>/dev/null; then echo "$f writable"; else echo "$f refused"; fi
        done
        if (echo pwned > /nix/store/junk-path) 2>/dev/null; then echo "store-entry created"; fi
        if (echo pwned > {marker}) 2>/dev/null; then echo "marker written"; else echo "marker refused"; fi
        if (echo pwned > /tmp/t) 2>/dev/null; then echo "tmp writable"; fi
        "#,
        marker = host_marker.display()
    );
    let d = mk_drv(&t.store, "writer", "/bin/sh", &script, &[], &[&input]);
    build_one(&pool, &d).expect("build");
    let out = read_out(&t.store, &d);
    for f in ["/etc/passwd", "/etc/new", "/bin/sh", "/new-at-root"] {
        assert!(out.contains(&format!("{f} refused")), "{f}: {out}");
    }
    assert!(out.contains(&format!("{input_out} refused")), "{out}");
    assert!(out.contains("marker refused"), "{out}");
    assert!(out.contains("tmp writable"), "{out}");
    // Whatever was created inside the sandbox's store stays there and is discarded.
    assert!(!exists(&host_marker));
    assert!(!exists(&t.store.real_store_dir().join("junk-path")));
    assert_eq!(read_out(&t.store, &input), "input\n");
    assert!(
        !std::fs::read("/bin/sh")
            .expect("host /bin/sh")
            .starts_with(b"pwned")
    );
}

#[test]
fn background_processes_are_killed_with_the_builder() {
    let t = test_store();
    let pool = pool_with(&t, |_| {});
    let d = mk_drv(
        &t.store,
        "bg",
        "/bin/sh",
        "/bin/sleep 987651 & echo started > $out",
        &[],
        &[],
    );
    let start = Instant::now();
    build_one(&pool, &d).expect("build");
    assert!(start.elapsed() < Duration::from_secs(20));
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        !process_running("987651"),
        "background sleep survived the build"
    );
}

#[test]
fn timeout_kills_and_registers_nothing() {
    let t = test_store();
    let pool = pool_with(&t, |s| s.timeout = Some(Duration::from_secs(1)));
    let d = mk_drv(
        &t.store,
        "slow",
        "/bin/sh",
        "echo partial > $out; /bin/sleep 987652 & /bin/sleep 987653",
        &[],
        &[],
    );
    let start = Instant::now();
    let err = build_one(&pool, &d).expect_err("must time out");
    assert!(start.elapsed() < Duration::from_secs(15));
    let printed = t.store.store_dir().print(&d);
    assert_eq!(
        err,
        BuildError::TimedOut(format!(
            "building of '{printed}^out' from .drv file timed out after 1 seconds"
        ))
    );
    assert!(
        !t.store
            .is_valid_path(&out_path(&t.store, &d))
            .expect("query")
    );
    assert!(!exists(&t.store.real_path(&out_path(&t.store, &d))));
    std::thread::sleep(Duration::from_millis(200));
    assert!(!process_running("987652") && !process_running("987653"));
    assert_eq!(
        std::fs::read_dir(t.root.join("builds"))
            .expect("builds")
            .count(),
        0,
        "build dir removed"
    );
}

#[test]
fn max_silent_time_kills_a_quiet_build() {
    let t = test_store();
    let pool = pool_with(&t, |s| s.max_silent_time = Some(Duration::from_secs(1)));
    let d = mk_drv(
        &t.store,
        "quiet",
        "/bin/sh",
        "echo hello; /bin/sleep 987654",
        &[],
        &[],
    );
    let err = build_one(&pool, &d).expect_err("must time out");
    assert!(
        err.to_string()
            .ends_with("timed out after 1 seconds of silence"),
        "{err}"
    );
}

#[test]
fn fixed_output_hash_mismatch_is_reported_and_discarded() {
    let t = test_store();
    let pool = pool_with(&t, |_| {});
    let wrong = "sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="; // sha256 of ""
    let d = mk_fod(&t.store, "mismatch", "printf hello > $out", "flat", wrong);
    let err = build_one(&pool, &d).expect_err("mismatch");
    let printed = t.store.store_dir().print(&d);
    assert_eq!(
        err.to_string(),
        format!(
            "hash mismatch in fixed-output derivation '{printed}':\n  specified: {wrong}\n     got:    sha256-LPJNul+wow4m6DsqxbninhsWHlwfp0JecwQzYpOLmCQ="
        )
    );
    let out = out_path(&t.store, &d);
    assert!(!t.store.is_valid_path(&out).expect("query"));
    assert!(!exists(&t.store.real_path(&out)));
    // Flat fixed outputs must be regular non-executable files.
    let dir = mk_fod(&t.store, "flat-dir", "/bin/mkdir $out", "flat", wrong);
    let err = build_one(&pool, &dir).expect_err("not a file");
    assert!(
        err.to_string()
            .contains("should be a non-executable regular file"),
        "{err}"
    );
}

#[test]
fn failed_builds_register_nothing_and_clean_up() {
    let t = test_store();
    let pool = pool_with(&t, |_| {});
    let d = mk_drv(
        &t.store,
        "fails",
        "/bin/sh",
        "echo one; echo two >&2; echo out > $out; exit 3",
        &[],
        &[],
    );
    let (r, events) = build(&pool, &[all_outputs(d.clone())], &BuildOptions::default());
    let printed = t.store.store_dir().print(&d);
    assert_eq!(
        r.expect_err("fails"),
        BuildError::BuilderFailed {
            drv: printed.clone(),
            status: "failed with exit code 3".into(),
            log_tail: vec!["one".into(), "two".into()],
        }
    );
    assert!(
        events.iter().any(
            |e| matches!(e, flaked_store::build::BuildEvent::Log { line, .. } if line == "two")
        )
    );
    assert!(
        events
            .iter()
            .any(|e| matches!(e, flaked_store::build::BuildEvent::Failed { .. }))
    );
    assert!(
        !t.store
            .is_valid_path(&out_path(&t.store, &d))
            .expect("query")
    );
    assert!(!exists(&t.store.real_path(&out_path(&t.store, &d))));
    assert_eq!(
        std::fs::read_dir(t.root.join("builds"))
            .expect("builds")
            .count(),
        0
    );
    // Sandbox roots kept for reuse hold nothing of the build.
    for e in std::fs::read_dir(t.store.real_store_dir())
        .expect("store")
        .flatten()
    {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with(".flaked-add-") && name.contains("-sandbox-") {
            let inner = e.path().join("nix/store");
            assert_eq!(
                std::fs::read_dir(&inner).map(|r| r.count()).unwrap_or(0),
                0,
                "{name}"
            );
        }
    }

    // keep-failed keeps the build directory.
    let pool = pool_with(&t, |s| s.keep_failed = true);
    let d2 = mk_drv(
        &t.store,
        "fails-kept",
        "/bin/sh",
        "echo data > file-in-build-dir; exit 1",
        &[],
        &[],
    );
    assert!(build_one(&pool, &d2).is_err());
    let kept: Vec<_> = std::fs::read_dir(t.root.join("builds"))
        .expect("builds")
        .flatten()
        .collect();
    assert_eq!(kept.len(), 1);
    assert_eq!(
        std::fs::read_to_string(kept[0].path().join("build/file-in-build-dir")).expect("kept file"),
        "data\n"
    );
}

#[test]
fn missing_output_and_wrong_system() {
    let t = test_store();
    let pool = pool_with(&t, |_| {});
    let d = mk_drv(&t.store, "no-output", "/bin/sh", "true", &[], &[]);
    let err = build_one(&pool, &d).expect_err("no output");
    let printed = t.store.store_dir().print(&d);
    assert!(
        err.to_string().starts_with(&format!(
            "builder for '{printed}' failed to produce output path for output 'out' at '"
        )),
        "{err}"
    );
    let arm = mk_drv_full(
        &t.store,
        "arm",
        "aarch64-linux",
        "/bin/sh",
        "true",
        &[],
        &[],
        None,
    );
    let err = build_one(&pool, &arm).expect_err("wrong system");
    let printed = t.store.store_dir().print(&arm);
    let features = pool
        .settings()
        .system_features
        .iter()
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    assert_eq!(
        err.to_string(),
        format!(
            "a 'aarch64-linux' with features {{}} is required to build '{printed}', but I am a 'x86_64-linux' with features {{{features}}}"
        )
    );
    let feat = mk_drv(
        &t.store,
        "feat",
        "/bin/sh",
        "true",
        &[("requiredSystemFeatures", "kvm gpu")],
        &[],
    );
    let err = build_one(&pool, &feat).expect_err("missing feature");
    assert!(
        err.to_string()
            .starts_with("a 'x86_64-linux' with features {gpu, kvm} is required"),
        "{err}"
    );
}

#[test]
fn stale_partial_outputs_are_replaced() {
    // What a crash between moving an output into place and registering it leaves behind.
    let t = test_store();
    let pool = pool_with(&t, |_| {});
    let d = mk_drv(
        &t.store,
        "recover",
        "/bin/sh",
        "echo complete > $out",
        &[],
        &[],
    );
    let out = out_path(&t.store, &d);
    std::fs::write(t.store.real_path(&out), "half").expect("stale output");
    assert!(!t.store.is_valid_path(&out).expect("query"));
    build_one(&pool, &d).expect("build");
    assert_eq!(read_out(&t.store, &d), "complete\n");
}

#[test]
fn sandbox_false_on_a_diverted_store_still_sandboxes() {
    // Like Nix: a store whose physical location differs from its logical one can only be
    // built into through a sandbox.
    let t = test_store();
    let pool = pool_with(&t, |s| s.sandbox = SandboxMode::Disabled);
    let d = mk_drv(
        &t.store,
        "diverted",
        "/bin/bash",
        "echo $(</proc/sys/kernel/hostname) $$ > $out",
        &[],
        &[],
    );
    build_one(&pool, &d).expect("build");
    assert_eq!(read_out(&t.store, &d), "localhost 1\n");
}

/// Child half of `a_daemon_killed_mid_build_leaves_nothing_registered`: builds the derivation
/// named by the environment in the store named by the environment (killed by the parent).
#[test]
#[ignore = "run by a_daemon_killed_mid_build_leaves_nothing_registered"]
fn crash_child() {
    let (Ok(root), Ok(drv)) = (
        std::env::var("FLAKED_CRASH_ROOT"),
        std::env::var("FLAKED_CRASH_DRV"),
    ) else {
        return;
    };
    let store = std::sync::Arc::new(
        flaked_store::LocalStore::open(
            flaked_store::StoreDir::new("/nix/store").expect("store dir"),
            &root,
        )
        .expect("open"),
    );
    let settings = flaked_store::build::BuildSettings {
        sandbox_paths: sandbox_paths(TOOLS),
        build_dir: std::path::Path::new(&root).join("builds"),
        ..Default::default()
    };
    let pool = BuildPool::new(store.clone(), settings);
    let d = sp(&store, &drv);
    let _ = build(&pool, &[all_outputs(d)], &BuildOptions::default());
}

#[test]
fn a_daemon_killed_mid_build_leaves_nothing_registered() {
    let t = test_store();
    let d = mk_drv(
        &t.store,
        "crashy",
        "/bin/sh",
        "echo partial > $out; /bin/sleep 2.987656; echo complete > $out",
        &[],
        &[],
    );
    // The child is another process: it sees the derivation once it is committed.
    t.store.flush().expect("group commit");
    let mut child = std::process::Command::new(std::env::current_exe().expect("test binary"))
        .args(["--exact", "crash_child", "--ignored", "--nocapture"])
        .env("FLAKED_CRASH_ROOT", &t.root)
        .env("FLAKED_CRASH_DRV", t.store.store_dir().print(&d))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn child");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !process_running("2.987656") {
        assert!(Instant::now() < deadline, "child build never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().expect("kill -9 the 'daemon'");
    child.wait().expect("reap");
    let deadline = Instant::now() + Duration::from_secs(5);
    while process_running("2.987656") {
        assert!(Instant::now() < deadline, "the builder outlived its daemon");
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = out_path(&t.store, &d);
    assert!(
        !t.store.is_valid_path(&out).expect("query"),
        "nothing half-built is registered"
    );
    // "Restart": a new store handle and pool build it fully.
    let store2 = std::sync::Arc::new(
        flaked_store::LocalStore::open(t.store.store_dir().clone(), &t.root).expect("reopen"),
    );
    let pool = BuildPool::new(store2.clone(), settings(&t));
    build_one(&pool, &d).expect("rebuild after the crash");
    assert_eq!(read_out(&store2, &d), "complete\n");
    // The dead process's sandbox roots were removed on open.
    let pid = child.id();
    let stale = std::fs::read_dir(t.store.real_store_dir())
        .expect("store")
        .flatten()
        .any(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with(&format!(".flaked-add-{pid}-"))
        });
    assert!(!stale, "stale sandbox root of the killed process");
}

//! Differential tests of flakes against goldens made with the reference Nix 2.26 by
//! `scripts/regen-flake-eval-goldens.sh` (see its header for the layout format and the
//! normalisation, which [`scrub`] mirrors).
//!
//! Each layout under `tests/flakes/` is copied to a temporary directory (its `setup.sh` creates
//! Git repositories there at run time) and its steps run through the facade (`flake_lock`,
//! `evaluate` with `EvalSource::Installable`, `flake_metadata`, `flake_show`). For every step,
//! stdout, stderr, the exit status and the `flake.lock` bytes afterwards must equal the
//! reference's. The tests write store objects to a private store: a store directory inside the
//! test's temporary directory, reached through a private root by a symbolic link so that logical
//! and physical store paths coincide and files inside the store can be read back.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use flaked_eval::api::{
    EvalRequest, EvalSettings, EvalSource, FlakeShowOptions, LockOptions, OutputFormat, WarmFlake,
    evaluate, flake_lock, flake_metadata, flake_show, flake_show_with,
};

struct Env {
    base: PathBuf,
    store_dir: String,
    cache: PathBuf,
}

fn env() -> &'static Env {
    static ENV: OnceLock<Env> = OnceLock::new();
    ENV.get_or_init(|| {
        remove_stale_dirs();
        let base = std::env::temp_dir().join(format!("flaked-flakes-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        let store = base.join("store");
        let root = base.join("root");
        std::fs::create_dir_all(&store).expect("create store dir");
        let link = root.join(store.strip_prefix("/").expect("absolute temp dir"));
        std::fs::create_dir_all(link.parent().expect("has parent")).expect("create root");
        std::os::unix::fs::symlink(&store, &link).expect("link the private store");
        flaked_eval::store_path::set_store_root(Some(root));
        Env {
            store_dir: store.display().to_string(),
            cache: base.join("cache"),
            base,
        }
    })
}

/// Removes the directories of earlier runs of this test binary whose process is gone (a test
/// process cannot remove its own: the tests share it until the process exits). Store objects
/// are read-only, so permissions are restored first.
fn remove_stale_dirs() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = name.strip_prefix("flaked-flakes-") else {
            continue;
        };
        if pid.parse::<u32>().is_err() || Path::new("/proc").join(pid).exists() {
            continue;
        }
        make_writable(&e.path());
        let _ = std::fs::remove_dir_all(e.path());
    }
}

fn make_writable(p: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let Ok(md) = std::fs::symlink_metadata(p) else {
        return;
    };
    if md.file_type().is_symlink() {
        return;
    }
    let mut perm = md.permissions();
    perm.set_mode(perm.mode() | 0o700);
    let _ = std::fs::set_permissions(p, perm);
    if md.is_dir()
        && let Ok(rd) = std::fs::read_dir(p)
    {
        for e in rd.flatten() {
            make_writable(&e.path());
        }
    }
}

fn settings(work: &Path) -> EvalSettings {
    let e = env();
    let registry = config_dir(work).join("nix/registry.json");
    EvalSettings {
        pure: true,
        cwd: work.to_path_buf(),
        store_dir: e.store_dir.clone(),
        flake_cache_dir: Some(e.cache.clone()),
        user_registry: registry.exists().then_some(registry),
        ..EvalSettings::default()
    }
}

/// `XDG_CONFIG_HOME` of a layout's steps: next to the copy, outside the flake's tree.
fn config_dir(work: &Path) -> PathBuf {
    PathBuf::from(format!("{}-config", work.display()))
}

fn copy_dir(from: &Path, to: &Path, top: bool) {
    std::fs::create_dir_all(to).expect("create test dir");
    let mut entries: Vec<_> = std::fs::read_dir(from)
        .expect("read layout")
        .map(|e| e.expect("dir entry"))
        .collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let name = e.file_name().to_string_lossy().into_owned();
        if top
            && matches!(
                name.as_str(),
                "expected" | "cases" | "setup.sh" | "input.lock" | "tz"
            )
        {
            continue;
        }
        let target = to.join(&name);
        if e.path().is_dir() {
            copy_dir(&e.path(), &target, false);
        } else {
            std::fs::copy(e.path(), &target).expect("copy file");
        }
    }
}

fn git_env(cmd: &mut std::process::Command, work: &Path) {
    for (k, v) in [
        ("GIT_AUTHOR_NAME", "flaked"),
        ("GIT_AUTHOR_EMAIL", "flaked@example.org"),
        ("GIT_COMMITTER_NAME", "flaked"),
        ("GIT_COMMITTER_EMAIL", "flaked@example.org"),
        ("GIT_AUTHOR_DATE", "1500000000 +0000"),
        ("GIT_COMMITTER_DATE", "1500000000 +0000"),
        ("GIT_CONFIG_NOSYSTEM", "1"),
        ("GIT_CONFIG_GLOBAL", "/dev/null"),
    ] {
        cmd.env(k, v);
    }
    cmd.env("HOME", work)
        .env("XDG_CONFIG_HOME", config_dir(work))
        .current_dir(work);
}

fn sh(work: &Path, script: &str) {
    let mut c = std::process::Command::new("sh");
    c.arg("-c").arg(script);
    git_env(&mut c, work);
    let out = c.output().expect("run sh");
    assert!(
        out.status.success(),
        "setup command failed: {script}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Replaces `<digits>` of length 10 starting with 16–19 after `prefix` by `N`.
fn scrub_last_modified(s: &str, prefix: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find(prefix) {
        out.push_str(&rest[..i + prefix.len()]);
        let tail = &rest[i + prefix.len()..];
        let digits: String = tail.chars().take_while(|c| c.is_ascii_digit()).collect();
        if digits.len() == 10 && matches!(&digits[..2], "16" | "17" | "18" | "19") {
            out.push('N');
            rest = &tail[10..];
        } else {
            rest = tail;
        }
    }
    out.push_str(rest);
    out
}

/// ` (YYYY-MM-DD)` dates from 2020 on → ` (DATE)`.
fn scrub_dates(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = String::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'('
            && i + 12 <= b.len()
            && b[i + 11] == b')'
            && &b[i + 1..i + 3] == b"20"
            && (b'2'..=b'9').contains(&b[i + 3])
            && b[i + 4].is_ascii_digit()
            && b[i + 5] == b'-'
            && b[i + 8] == b'-'
            && b[i + 6..i + 8].iter().all(u8::is_ascii_digit)
            && b[i + 9..i + 11].iter().all(u8::is_ascii_digit)
        {
            out.push_str("(DATE)");
            i += 12;
            continue;
        }
        let c = s[i..].chars().next().expect("in bounds");
        out.push(c);
        i += c.len_utf8();
    }
    out
}

/// Removes ANSI escape sequences (`ESC [ params letter`).
fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\x1b' && chars.peek() == Some(&'[') {
            chars.next();
            for c2 in chars.by_ref() {
                if c2.is_ascii_alphabetic() {
                    break;
                }
            }
            continue;
        }
        out.push(c);
    }
    out
}

/// The normalisation of the regeneration script (see its header).
fn scrub(s: &str, work: &Path) -> String {
    let s = strip_ansi(&s.replace(&work.display().to_string(), "FLAKE"));
    let store = format!("{}/", env().store_dir);
    let mut out = String::new();
    let mut rest = s.as_str();
    while let Some(i) = rest.find(&store) {
        out.push_str(&rest[..i]);
        out.push_str("/nix/store/");
        let tail = &rest[i + store.len()..];
        if tail.len() > 33 && tail.as_bytes()[32] == b'-' {
            out.push_str("HASH-");
            rest = &tail[33..];
        } else {
            rest = tail;
        }
    }
    out.push_str(rest);
    let out = scrub_last_modified(&out, "\"lastModified\":");
    let out = scrub_last_modified(&out, "\"lastModified\": ");
    let out = scrub_last_modified(&out, "lastModified=");
    let out = scrub_dates(&out);
    let lines: Vec<String> = out
        .split('\n')
        .map(|l| match l.strip_prefix("Last modified: ") {
            Some(d) if d.len() >= 4 && &d[..4] >= "2020" => "Last modified: DATE".to_string(),
            _ => l.to_string(),
        })
        .collect();
    lines.join("\n")
}

struct Answer {
    out: Vec<u8>,
    err: String,
    rc: i32,
}

fn answer(r: Result<flaked_eval::api::EvalOutput, flaked_eval::api::Diagnostic>) -> Answer {
    match r {
        Ok(o) => {
            let mut err = String::new();
            for l in &o.stderr {
                err.push_str(l);
                err.push('\n');
            }
            Answer {
                out: o.stdout,
                err,
                rc: 0,
            }
        }
        Err(d) => {
            let mut err = String::new();
            for l in &d.log {
                err.push_str(l);
                err.push('\n');
            }
            err.push_str(&d.rendered);
            Answer {
                out: Vec::new(),
                err,
                rc: 1,
            }
        }
    }
}

fn run_step(work: &Path, cmd: &str, args: &[&str], expr: Option<&str>) -> Answer {
    let mut s = settings(work);
    // A flake reference argument of lock/update/metadata/show (default `.`).
    let positional: Vec<&str> = args
        .iter()
        .copied()
        .filter(|a| !a.starts_with("--"))
        .collect();
    let flake_ref = match cmd {
        "metadata" | "metadata-text" | "show" | "show-text" => {
            positional.first().copied().unwrap_or(".")
        }
        _ => ".",
    };
    match cmd {
        "lock" | "update" => {
            let mut opts = LockOptions::default();
            let mut lock_ref = ".";
            let mut i = 0;
            while i < args.len() {
                match args[i] {
                    "--update-input" => {
                        opts.update_inputs.push(args[i + 1].to_string());
                        i += 1;
                    }
                    "--override-input" => {
                        opts.override_inputs
                            .push((args[i + 1].to_string(), args[i + 2].to_string()));
                        i += 2;
                    }
                    "--recreate-lock-file" => opts.recreate = true,
                    "--no-write-lock-file" => opts.write = false,
                    a if cmd == "update" => opts.update_inputs.push(a.to_string()),
                    a if !a.starts_with("--") => lock_ref = a,
                    a => panic!("unknown lock argument {a}"),
                }
                i += 1;
            }
            if cmd == "update" && opts.update_inputs.is_empty() {
                opts.recreate = true;
            }
            answer(flake_lock(lock_ref, &s, &opts))
        }
        "eval" => {
            let mut output = OutputFormat::Nix;
            let mut installable = None;
            for a in args {
                match *a {
                    "--json" => output = OutputFormat::Json,
                    "--raw" => output = OutputFormat::Raw,
                    "--no-write-lock-file" => s.write_lock_file = false,
                    other => installable = Some(other.to_string()),
                }
            }
            let req = EvalRequest {
                source: EvalSource::Installable(installable.expect("an installable")),
                attr_path: None,
                output,
                settings: s,
            };
            answer(evaluate(&req))
        }
        "expr" => {
            let mut output = OutputFormat::Nix;
            for a in args {
                match *a {
                    "--json" => output = OutputFormat::Json,
                    "--raw" => output = OutputFormat::Raw,
                    "--impure" => s.pure = false,
                    other => panic!("unknown expr flag {other}"),
                }
            }
            let req = EvalRequest {
                source: EvalSource::Expr(expr.expect("an expression").to_string()),
                attr_path: None,
                output,
                settings: s,
            };
            answer(evaluate(&req))
        }
        "metadata" => answer(flake_metadata(flake_ref, &s, true)),
        "metadata-text" => answer(flake_metadata(flake_ref, &s, false)),
        "show" | "show-text" if args.contains(&"--legacy") => answer(flake_show_with(
            flake_ref,
            &s,
            &FlakeShowOptions {
                json: cmd == "show",
                all_systems: args.contains(&"--all-systems"),
                legacy: true,
            },
        )),
        "show" => answer(flake_show(
            flake_ref,
            &s,
            true,
            args.contains(&"--all-systems"),
        )),
        "show-text" => answer(flake_show(
            flake_ref,
            &s,
            false,
            args.contains(&"--all-systems"),
        )),
        other => panic!("unknown step {other}"),
    }
}

fn read_opt(p: &Path) -> Option<String> {
    std::fs::read_to_string(p).ok()
}

fn run_layout(dir: &Path) -> Vec<String> {
    let mut failures = Vec::new();
    let name = dir
        .file_name()
        .expect("name")
        .to_string_lossy()
        .into_owned();
    let work = env().base.join("work").join(&name);
    let _ = std::fs::remove_dir_all(&work);
    let _ = std::fs::remove_dir_all(config_dir(&work));
    copy_dir(dir, &work, true);
    if let Ok(l) = std::fs::read(dir.join("input.lock")) {
        std::fs::write(work.join("flake.lock"), l).expect("write input lock");
    }
    if dir.join("setup.sh").exists() {
        sh(&work, &format!("sh '{}'", dir.join("setup.sh").display()));
    }
    let cases =
        read_opt(&dir.join("cases")).unwrap_or_else(|| "1 lock\n2 eval --json .#x\n".into());
    let expected = dir.join("expected");
    for line in cases.lines().filter(|l| !l.trim().is_empty()) {
        let mut parts = line.splitn(3, ' ');
        let id = parts.next().expect("id");
        let cmd = parts.next().unwrap_or("");
        let rest = parts.next().unwrap_or("");
        if cmd == "sh" {
            sh(&work, rest);
            continue;
        }
        let (flags, expr) = match rest.split_once(" :: ") {
            Some((f, e)) if cmd == "expr" => (f, Some(e)),
            _ if cmd == "expr" && rest.starts_with(":: ") => ("", Some(&rest[3..])),
            _ => (rest, None),
        };
        let args: Vec<&str> = flags.split_whitespace().collect();
        let got = run_step(&work, cmd, &args, expr);
        let what = format!("{name} step {id} ({cmd} {rest})");
        let want_rc: i32 = read_opt(&expected.join(format!("{id}.rc")))
            .and_then(|s| s.trim().parse().ok())
            .expect("expected rc");
        let want_out = read_opt(&expected.join(format!("{id}.out"))).unwrap_or_default();
        let want_err = read_opt(&expected.join(format!("{id}.err"))).unwrap_or_default();
        let got_out = scrub(&String::from_utf8_lossy(&got.out), &work);
        let got_err = scrub(&got.err, &work);
        if got.rc != want_rc {
            failures.push(format!(
                "{what}: exit {} (want {want_rc})\n  stderr: {got_err}  want: {want_err}",
                got.rc
            ));
            continue;
        }
        if got_out != want_out {
            failures.push(format!(
                "{what}: stdout differs\n  got:  {got_out}\n  want: {want_out}"
            ));
        }
        if got_err != want_err {
            failures.push(format!(
                "{what}: stderr differs\n--- got:\n{got_err}--- want:\n{want_err}---"
            ));
        }
        let got_lock = read_opt(&work.join("flake.lock")).map(|l| scrub(&l, &work));
        let want_lock = read_opt(&expected.join(format!("{id}.lock")));
        if got_lock != want_lock {
            failures.push(format!(
                "{what}: flake.lock differs\n--- got:\n{}--- want:\n{}---",
                got_lock.unwrap_or_else(|| "(none)\n".into()),
                want_lock.unwrap_or_else(|| "(none)\n".into())
            ));
        }
    }
    let _ = std::fs::remove_dir_all(&work);
    let _ = std::fs::remove_dir_all(config_dir(&work));
    failures
}

fn layouts() -> Vec<PathBuf> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/flakes");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&root)
        .expect("tests/flakes exists")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    dirs
}

/// `tests/flakes/notyetpassing.txt`: `LAYOUT STEP-ID  # reason` lines, steps known to differ
/// from Nix. They are asserted to still fail, so a fix shows up as a test failure asking to
/// remove the line.
fn not_yet_passing() -> Vec<String> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/flakes/notyetpassing.txt");
    std::fs::read_to_string(p)
        .unwrap_or_default()
        .lines()
        .map(|l| l.split('#').next().unwrap_or("").trim().to_string())
        .filter(|l| !l.is_empty())
        .collect()
}

/// The time zone a layout's steps run in (its `tz` file), if any.
fn layout_tz(dir: &Path) -> Option<String> {
    read_opt(&dir.join("tz")).map(|s| s.trim().to_string())
}

#[test]
fn flake_layouts_agree_with_nix() {
    let dirs = layouts();
    assert!(dirs.len() >= 25, "expected at least 25 layouts");
    let only = std::env::var("FLAKED_FLAKE_LAYOUT").ok();
    // A layout with a time zone runs only in a process whose TZ is that zone (the C library
    // reads TZ once per process): `layouts_with_a_time_zone_agree_with_nix` starts one.
    let tz = std::env::var("TZ").ok();
    let failures: Vec<String> = dirs
        .iter()
        .filter(|d| only.as_deref().is_none_or(|o| d.ends_with(o)))
        .filter(|d| layout_tz(d).is_none_or(|z| tz.as_deref() == Some(z.as_str())))
        .flat_map(|d| run_layout(d))
        .collect();
    let known = not_yet_passing();
    let is_known = |f: &String| {
        known.iter().any(|k| {
            f.starts_with(&format!(
                "{} step {} (",
                k.split(' ').next().unwrap_or(""),
                k.split(' ').nth(1).unwrap_or("")
            ))
        })
    };
    let unexpected: Vec<&String> = failures.iter().filter(|f| !is_known(f)).collect();
    let fixed: Vec<&String> = known
        .iter()
        .filter(|k| {
            let mut p = k.split(' ');
            let (l, s) = (p.next().unwrap_or(""), p.next().unwrap_or(""));
            only.as_deref().is_none_or(|o| o == l)
                && !failures
                    .iter()
                    .any(|f| f.starts_with(&format!("{l} step {s} (")))
        })
        .collect();
    assert!(
        unexpected.is_empty() && fixed.is_empty(),
        "{} failures:\n{}\nlisted in notyetpassing.txt but passing now: {fixed:?}",
        unexpected.len(),
        unexpected
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// Layouts with a `tz` file (the flake's own "Last modified" is local time in Nix) run in a
/// child process of this test binary with TZ set to their zone.
#[test]
fn layouts_with_a_time_zone_agree_with_nix() {
    let zoned: Vec<(PathBuf, String)> = layouts()
        .into_iter()
        .filter_map(|d| layout_tz(&d).map(|z| (d, z)))
        .collect();
    assert!(!zoned.is_empty(), "expected a layout with a time zone");
    let exe = std::env::current_exe().expect("the test binary");
    for (dir, zone) in zoned {
        let name = dir
            .file_name()
            .expect("name")
            .to_string_lossy()
            .into_owned();
        let out = std::process::Command::new(&exe)
            .args([
                "--exact",
                "flake_layouts_agree_with_nix",
                "--test-threads",
                "1",
            ])
            .env("TZ", &zone)
            .env("FLAKED_FLAKE_LAYOUT", &name)
            .output()
            .expect("run the test binary");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains("1 passed"),
            "layout {name} in TZ={zone}:\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// A warm flake answers like a one-shot evaluation, does not evaluate an attribute twice (a
/// `builtins.trace` in it prints only on the first query), lists attributes, and frees its
/// whole evaluation when closed.
#[test]
fn warm_flake_answers_from_evaluated_values() {
    let work = env().base.join("warm");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(work.join("sub")).expect("create flake");
    std::fs::write(
        work.join("flake.nix"),
        "{ inputs.sub.url = \"path:./sub\";\n  outputs = { self, sub }: rec {\n    x = builtins.trace \"computing x\" (sub.v * 2);\n    legacyPackages.x86_64-linux.p = { a = 1; f = y: y; };\n    cyc = rec { me = cyc; n = 1; };\n    slow = builtins.foldl' (a: b: a + b) 0 (builtins.genList (i: i) 1000);\n  }; }\n",
    )
    .expect("write flake");
    std::fs::write(
        work.join("sub/flake.nix"),
        "{ outputs = { self }: { v = 21; }; }\n",
    )
    .expect("write sub");
    let s = settings(&work);
    let one_shot = evaluate(&EvalRequest {
        source: EvalSource::Installable(".#x".into()),
        attr_path: None,
        output: OutputFormat::Json,
        settings: s.clone(),
    })
    .expect("one-shot evaluation");
    assert_eq!(one_shot.stdout, b"42\n");
    // The first evaluation creates the lock file (Nix's warning), then evaluates `x`.
    assert_eq!(one_shot.stderr.len(), 2, "{:?}", one_shot.stderr);
    assert!(one_shot.stderr[0].starts_with("warning: creating lock file '\""));
    assert_eq!(one_shot.stderr[1], "trace: computing x");

    let t = std::time::Instant::now();
    let warm = WarmFlake::open(".", s.clone()).expect("open warm flake");
    let open_time = t.elapsed();
    let fp = warm.fingerprint().clone();
    assert!(fp.locked_url.starts_with("path:"), "{fp:?}");
    assert!(fp.nar_hash.is_some());
    assert_eq!(
        fp.lock_file,
        std::fs::read(work.join("flake.lock")).expect("lock written")
    );
    let first = warm.eval("x", OutputFormat::Json).expect("first query");
    assert_eq!(first.stdout, one_shot.stdout);
    assert_eq!(first.stderr, vec!["trace: computing x".to_string()]);
    let t = std::time::Instant::now();
    let second = warm.eval("x", OutputFormat::Json).expect("second query");
    // Informational (not asserted): what the daemon gains per warm request.
    eprintln!(
        "warm flake: open {:?}, repeated query {:?}",
        open_time,
        t.elapsed()
    );
    assert_eq!(second.stdout, one_shot.stdout);
    assert!(
        second.stderr.is_empty(),
        "x was evaluated again: {:?}",
        second.stderr
    );
    // Default prefixes: `p` is found under legacyPackages.<system>.
    let p = warm.eval("p.a", OutputFormat::Nix).expect("prefixed query");
    assert_eq!(p.stdout, b"1\n");
    let missing = warm
        .eval("nope", OutputFormat::Json)
        .expect_err("missing attribute");
    assert!(
        missing
            .message
            .contains("does not provide attribute 'packages.x86_64-linux.nope'"),
        "{}",
        missing.message
    );
    let attrs = warm
        .list_attrs(&["legacyPackages".into(), "x86_64-linux".into(), "p".into()])
        .expect("list attrs");
    let names: Vec<(&str, &str)> = attrs
        .iter()
        .map(|a| (a.name.as_str(), a.type_name.as_str()))
        .collect();
    assert_eq!(names, vec![("a", "int"), ("f", "lambda")]);
    assert!(attrs[0].position.as_ref().is_some_and(|p| p.line == 4));
    let show = warm.show_json(false).expect("show");
    assert!(String::from_utf8_lossy(&show.stdout).starts_with("{\"cyc\":{\"type\":\"unknown\"}"));
    // An interrupted request fails; the flake stays usable.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let interrupted = warm
        .eval_interruptible("slow", OutputFormat::Json, stop)
        .expect_err("interrupted");
    assert!(
        interrupted.message.contains("interrupted"),
        "{}",
        interrupted.message
    );
    let slow = warm
        .eval("slow", OutputFormat::Json)
        .expect("not interrupted");
    assert_eq!(slow.stdout, b"499500\n");
    let cyc = warm.eval("cyc.me.me.n", OutputFormat::Json).expect("cycle");
    assert_eq!(cyc.stdout, b"1\n");
    assert!(warm.approx_memory() > 0);
    assert_eq!(
        warm.close(),
        0,
        "cells kept alive after the warm flake was closed"
    );
    let _ = std::fs::remove_dir_all(&work);
}

/// Two warm flakes are independent and can be used from several threads.
#[test]
fn warm_flakes_are_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<WarmFlake>();
    let work = env().base.join("warm-threads");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).expect("create flake");
    std::fs::write(
        work.join("flake.nix"),
        "{ outputs = { self }: { n = builtins.foldl' (a: b: a + b) 0 (builtins.genList (i: i) 1000); }; }\n",
    )
    .expect("write flake");
    let warm = std::sync::Arc::new(WarmFlake::open(".", settings(&work)).expect("open"));
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let w = warm.clone();
            std::thread::spawn(move || w.eval("n", OutputFormat::Json).expect("eval").stdout)
        })
        .collect();
    for h in handles {
        assert_eq!(h.join().expect("thread"), b"499500\n");
    }
    drop(warm);
    let _ = std::fs::remove_dir_all(&work);
}

/// A loopback HTTP server for tarball inputs: `/NAME` serves `files[NAME]`; a name starting
/// with `cut-` announces the whole file but sends only its first half, then closes.
fn serve_files(files: std::collections::HashMap<String, Vec<u8>>) -> u16 {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    let port = listener.local_addr().expect("addr").port();
    let files = std::sync::Arc::new(files);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let files = files.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().expect("clone"));
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 {
                    return;
                }
                let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
                loop {
                    let mut h = String::new();
                    if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                        break;
                    }
                }
                let name = path.trim_start_matches('/');
                match files.get(name) {
                    Some(body) => {
                        let sent = if name.starts_with("cut-") {
                            &body[..body.len() / 2]
                        } else {
                            &body[..]
                        };
                        let _ = write!(
                            stream,
                            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                            body.len()
                        );
                        let _ = stream.write_all(sent);
                    }
                    None => {
                        let _ = write!(
                            stream,
                            "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                        );
                    }
                }
                let _ = stream.flush();
                let _ = stream.shutdown(std::net::Shutdown::Both);
            });
        }
    });
    port
}

/// Every file name under `dir` (recursively), for "was it written anywhere" checks.
fn all_names(dir: &Path, out: &mut Vec<String>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        out.push(e.file_name().to_string_lossy().into_owned());
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            all_names(&e.path(), out);
        }
    }
}

/// Tarball inputs end to end through the facade against a loopback server: locking records
/// the tree's narHash and the value is read from the store; a narHash in flake.lock that the
/// download does not have is an error showing both hashes (flake.lock untouched); a server that
/// fails mid-download is a clear error that leaves nothing in the store, the fetcher cache or
/// flake.lock.
#[test]
#[allow(clippy::result_large_err)] // the facade's Diagnostic is its error type
fn tarball_inputs_over_loopback_http() {
    let base = env().base.join("tarball-http");
    let _ = std::fs::remove_dir_all(&base);
    let src = base.join("src/data");
    std::fs::create_dir_all(&src).expect("create source");
    std::fs::write(src.join("hello.txt"), "hello over http\n").expect("write");
    std::fs::write(src.join("half-written-marker.txt"), "z".repeat(300_000)).expect("write");
    let tgz = base.join("data.tar.gz");
    let st = std::process::Command::new("tar")
        .arg("czf")
        .arg(&tgz)
        .arg("-C")
        .arg(base.join("src"))
        .arg("data")
        .status()
        .expect("run tar");
    assert!(st.success());
    let bytes = std::fs::read(&tgz).expect("read tarball");
    let port = serve_files(
        [
            ("data.tar.gz".to_string(), bytes.clone()),
            ("cut-data.tar.gz".to_string(), bytes),
        ]
        .into_iter()
        .collect(),
    );
    let flake = |dir: &str, file: &str| -> PathBuf {
        let work = base.join(dir);
        std::fs::create_dir_all(&work).expect("create flake");
        std::fs::write(
            work.join("flake.nix"),
            format!(
                "{{ inputs.t = {{ url = \"http://127.0.0.1:{port}/{file}\"; flake = false; }};\n  \
                 outputs = {{ self, t }}: {{ x = builtins.readFile (t + \"/hello.txt\"); }}; }}\n"
            ),
        )
        .expect("write flake");
        work
    };
    let eval_x = |work: &Path| {
        evaluate(&EvalRequest {
            source: EvalSource::Installable(".#x".into()),
            attr_path: None,
            output: OutputFormat::Json,
            settings: settings(work),
        })
    };

    // Locking downloads, unpacks and pins the tree.
    let good = flake("good", "data.tar.gz");
    flake_lock(".", &settings(&good), &LockOptions::default()).expect("lock");
    let lock = std::fs::read_to_string(good.join("flake.lock")).expect("lock written");
    assert!(lock.contains("\"type\": \"tarball\""), "{lock}");
    let nar_hash = lock
        .lines()
        .find_map(|l| l.trim().strip_prefix("\"narHash\": \""))
        .map(|h| h.trim_end_matches(['"', ',']).to_string())
        .expect("a narHash in flake.lock");
    let out = eval_x(&good).expect("eval");
    assert_eq!(out.stdout, b"\"hello over http\\n\"\n");

    // A wrong narHash in flake.lock: both hashes shown (a locked input is final, so the message
    // is Nix's `checkLocks` one for final inputs), the lock file left as it was.
    let wrong = "sha256-AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
    let pinned = flake("pinned", "data.tar.gz");
    let bad_lock = lock.replace(&nar_hash, wrong);
    std::fs::write(pinned.join("flake.lock"), &bad_lock).expect("write lock");
    let fresh_cache = base.join("fresh-cache");
    let mut s = settings(&pinned);
    s.flake_cache_dir = Some(fresh_cache.clone());
    let d = evaluate(&EvalRequest {
        source: EvalSource::Installable(".#x".into()),
        attr_path: None,
        output: OutputFormat::Json,
        settings: s,
    })
    .expect_err("narHash mismatch");
    assert!(
        d.rendered.contains(&format!(
            "while fetching the input 'http://127.0.0.1:{port}/data.tar.gz?narHash="
        )) && d
            .rendered
            .contains("error: mismatch in field 'narHash' of input '{")
            && d.rendered.contains(&format!("\"narHash\":\"{wrong}\""))
            && d.rendered.contains(&format!("\"narHash\":\"{nar_hash}\"")),
        "{}",
        d.rendered
    );
    assert_eq!(
        std::fs::read_to_string(pinned.join("flake.lock")).expect("lock"),
        bad_lock
    );

    // A server failing mid-download.
    let cut = flake("cut", "cut-data.tar.gz");
    let cut_cache = base.join("cut-cache");
    let mut s = settings(&cut);
    s.flake_cache_dir = Some(cut_cache.clone());
    let mut before = Vec::new();
    all_names(Path::new(&env().store_dir), &mut before);
    let d = flake_lock(".", &s, &LockOptions::default()).expect_err("truncated download");
    assert!(
        d.rendered.contains(&format!(
            "unable to download 'http://127.0.0.1:{port}/cut-data.tar.gz': "
        )),
        "{}",
        d.rendered
    );
    assert!(
        !cut.join("flake.lock").exists(),
        "no lock file for a failed fetch"
    );
    let mut names = Vec::new();
    all_names(&cut_cache, &mut names);
    assert!(
        !names
            .iter()
            .any(|n| n == "half-written-marker.txt" || n == "hello.txt"),
        "partial download in the fetcher cache: {names:?}"
    );
    let tmp: Vec<_> = std::fs::read_dir(cut_cache.join("fetchers/tmp"))
        .map(|d| d.flatten().collect())
        .unwrap_or_default();
    assert!(tmp.is_empty(), "temporary files left: {tmp:?}");
    let mut after = Vec::new();
    all_names(Path::new(&env().store_dir), &mut after);
    let marker_before = before
        .iter()
        .filter(|n| *n == "half-written-marker.txt")
        .count();
    let marker_after = after
        .iter()
        .filter(|n| *n == "half-written-marker.txt")
        .count();
    assert_eq!(
        marker_before, marker_after,
        "a partial tree reached the store"
    );
    let _ = std::fs::remove_dir_all(&base);
}

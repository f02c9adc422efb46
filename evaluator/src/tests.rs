//! Unit tests of the evaluator core through the facade: laziness, cycles and memory release,
//! error rendering, printing. (The oracle-produced golden corpus lives in `evaluator/tests/`.)

use crate::api::{EvalRequest, EvalSettings, EvalSource, OutputFormat, evaluate};

fn eval_fmt(expr: &str, output: OutputFormat) -> Result<String, String> {
    let req = EvalRequest {
        source: EvalSource::Expr(expr.to_string()),
        attr_path: None,
        output,
        settings: EvalSettings::default(),
    };
    match evaluate(&req) {
        Ok(o) => Ok(String::from_utf8_lossy(&o.stdout).into_owned()),
        Err(d) => Err(d.rendered),
    }
}

fn ev(expr: &str) -> String {
    match eval_fmt(expr, OutputFormat::Nix) {
        Ok(s) => s.trim_end_matches('\n').to_string(),
        Err(e) => panic!("{expr}: {e}"),
    }
}

fn err(expr: &str) -> String {
    match eval_fmt(expr, OutputFormat::Nix) {
        Ok(s) => panic!("{expr}: expected an error, got {s}"),
        Err(e) => e,
    }
}

/// Runs `check` on its own thread (the region of mutable cells is per thread, so what a test
/// counts there is its own) with a fresh pure evaluator and the value of `src`, an expression
/// evaluated at the root with `/` as its base directory. `check` owns the evaluator, so it can
/// end the evaluation by dropping it.
pub(crate) fn with_fresh_evaluator(
    src: &'static [u8],
    check: impl FnOnce(crate::eval::Evaluator, crate::value::Value) + Send + 'static,
) {
    let h = std::thread::spawn(move || {
        let mut ev = crate::eval::Evaluator::new(crate::eval::Config::pure_for_tests());
        let e = ev
            .parse(crate::source::Origin::String, src, "/")
            .expect("parses");
        let v = ev.eval_root(&e).expect("evaluates");
        drop(e);
        check(ev, v);
    });
    h.join().expect("test thread");
}

#[test]
fn laziness() {
    assert_eq!(ev("let x = throw \"no\"; in 1"), "1");
    assert_eq!(ev("builtins.length [ (throw \"a\") (throw \"b\") ]"), "2");
    assert_eq!(ev("{ a = throw \"x\"; b = 2; }.b"), "2");
    assert_eq!(ev("(x: 1) (throw \"arg\")"), "1");
    assert_eq!(ev("({ a ? throw \"d\" }: 1) {}"), "1");
    assert_eq!(ev("builtins.attrNames { a = abort \"x\"; }"), "[ \"a\" ]");
    assert_eq!(ev("false && throw \"x\""), "false");
}

#[test]
fn recursion_and_scoping() {
    assert_eq!(ev("rec { a = b; b = 2; }.a"), "2");
    assert_eq!(
        ev("let f = n: if n == 0 then 0 else n + f (n - 1); in f 100"),
        "5050"
    );
    assert_eq!(ev("let x = 1; in with { x = 2; }; x"), "1");
    assert_eq!(ev("with { x = 1; }; with { x = 2; }; x"), "2");
    assert_eq!(ev("({ a ? b, b ? 2 }: a) {}"), "2");
    assert_eq!(ev("let a.b = 1; a.c = 2; in a"), "{ b = 1; c = 2; }");
    assert_eq!(ev("let inherit ({ a = 1; }) a; in a"), "1");
    assert_eq!(ev("let { x = 3; body = x; }"), "3");
}

#[test]
fn infinite_recursion_is_an_error_and_thunks_recover() {
    let e = err("let x = x; in x");
    assert!(
        e.starts_with("error: infinite recursion encountered\n       at «string»:1:9:"),
        "{e}"
    );
    // A failed thunk goes back to its unevaluated state: forcing it again fails the same way.
    assert_eq!(
        ev(
            "let t = throw \"x\"; a = builtins.tryEval t; b = builtins.tryEval t; in [ a.success b.success ]"
        ),
        "[ false false ]"
    );
}

#[test]
fn deep_recursion_is_a_clean_error() {
    let e = err("let f = n: 1 + f (n + 1); in f 0");
    assert!(e.contains("stack overflow; max-call-depth exceeded"), "{e}");
}

#[test]
fn static_errors_before_evaluation() {
    assert!(
        err("{ a = 1; a = 2; }")
            .starts_with("error: attribute 'a' already defined at «string»:1:3\n")
    );
    assert!(err("{x, x}: 1").starts_with("error: duplicate formal function argument 'x'\n"));
    assert!(err("x@{x}: 1").starts_with("error: duplicate formal function argument 'x'\n"));
    // Undefined variables are reported even in code that is never evaluated.
    assert!(err("if true then 1 else y").starts_with("error: undefined variable 'y'\n"));
}

#[test]
fn error_rendering_matches_nix() {
    assert_eq!(
        err("let x = { a = throw \"no\"; }; in x.a"),
        "error:\n       … while evaluating the attribute 'a'\n         at «string»:1:11:\n            1| let x = { a = throw \"no\"; }; in x.a\n             |           ^\n\n       … while calling the 'throw' builtin\n         at «string»:1:15:\n            1| let x = { a = throw \"no\"; }; in x.a\n             |               ^\n\n       error: no\n"
    );
    assert_eq!(
        err("{abc=1;}.abd"),
        "error: attribute 'abd' missing\n       at «string»:1:1:\n            1| {abc=1;}.abd\n             | ^\n       Did you mean abc?\n"
    );
}

#[test]
fn printing() {
    assert_eq!(
        ev("{ b = 1; a = [ 1.5 \"x\" null ]; }"),
        "{ a = [ 1.5 \"x\" null ]; b = 1; }"
    );
    assert_eq!(ev("let l = [ 1 ]; in [ l l ]"), "[ [ 1 ] «repeated» ]");
    assert_eq!(ev("[ 1 (throw \"a\") ]"), "[ 1 «error: a» ]");
    assert_eq!(ev("let f = x: x; in f"), "«lambda f @ «string»:1:9»");
    assert_eq!(
        ev("{ \"a b\" = 1; \"if\" = 2; }"),
        "{ \"a b\" = 1; \"if\" = 2; }"
    );
    assert_eq!(
        eval_fmt("[ 1.0 { a = \"x\"; } ]", OutputFormat::Json).as_deref(),
        Ok("[1.0,{\"a\":\"x\"}]\n")
    );
    assert_eq!(
        eval_fmt("\"a\\n\"", OutputFormat::Raw).as_deref(),
        Ok("a\n")
    );
}

#[test]
fn integer_overflow_is_an_error() {
    assert!(
        err("9223372036854775807 + 1")
            .starts_with("error: integer overflow in adding 9223372036854775807 + 1\n")
    );
}

/// The memory of an evaluation that builds cycles (rec sets, self-referencing lets, fixed points)
/// is released when the evaluation ends.
#[test]
fn cyclic_memory_is_released() {
    use crate::value::region;
    let src = b"let fix = f: let x = f x; in x; r = fix (self: { a = 1; b = self.a + 1; me = self; }); s = rec { x = s; y = [ y ]; }; in [ r.b r.me.me.b s.x.x.y ]";
    with_fresh_evaluator(src, |mut ev, v| {
        let forced = ev.force_deep(&v, crate::source::Pos::NONE).expect("forces");
        assert_eq!(
            crate::print::print_value(&mut ev, &forced).expect("prints"),
            "[ 2 2 [ [ «repeated» ] ] ]".as_bytes().to_vec()
        );
        drop(forced);
        let (thunks, envs) = region::snapshot();
        assert!(!thunks.is_empty() && !envs.is_empty());
        drop(v);
        drop(ev);
        let alive = thunks.iter().filter(|w| w.strong_count() > 0).count()
            + envs.iter().filter(|w| w.strong_count() > 0).count();
        assert_eq!(
            alive, 0,
            "cells kept alive by cycles after the evaluation ended"
        );
    });
}

/// The builtins set is prepared once per thread and reused: evaluations on one thread with
/// different settings still see their own `currentSystem`, `storeDir`, `nixPath` and
/// `getEnv`, and what one evaluation forces (`derivation`, `builtins.builtins`) or tears down
/// is not seen by the next.
#[test]
fn builtins_reused_per_thread_follow_each_evaluation() {
    use crate::eval::{Config, Evaluator};
    use crate::source::Origin;
    let h = std::thread::spawn(|| {
        let run = |pure: bool, system: &str, var: &str, text: &str| -> String {
            let config = Config {
                pure,
                cwd: "/".into(),
                env: [("FOO".to_string(), var.to_string())].into_iter().collect(),
                nix_path: vec![format!("p={var}")],
                system: system.into(),
                store_dir: "/nix/store".into(),
                interrupt: None,
            };
            let mut ev = Evaluator::new(config);
            let e = ev
                .parse(Origin::String, text.as_bytes(), "/")
                .expect("parses");
            let v = ev.eval_root(&e).expect("evaluates");
            let v = ev.force_deep(&v, crate::source::Pos::NONE).expect("forces");
            let out = crate::print::print_value(&mut ev, &v).expect("prints");
            String::from_utf8(out).expect("utf-8")
        };
        let probe = "[ builtins.currentSystem (builtins.getEnv \"FOO\") (builtins.head builtins.nixPath).path builtins.builtins.builtins.storeDir (derivation { name = \"a\"; builder = \"b\"; system = \"c\"; }).type ]";
        for _ in 0..2 {
            assert_eq!(
                run(false, "x86_64-linux", "one", probe),
                "[ \"x86_64-linux\" \"one\" \"one\" \"/nix/store\" \"derivation\" ]"
            );
            assert_eq!(
                run(false, "aarch64-darwin", "two", probe),
                "[ \"aarch64-darwin\" \"two\" \"two\" \"/nix/store\" \"derivation\" ]"
            );
        }
        assert_eq!(
            run(
                true,
                "x86_64-linux",
                "one",
                "[ (builtins.getEnv \"FOO\") (builtins ? currentSystem) ]"
            ),
            "[ \"\" false ]"
        );
        assert_eq!(
            run(false, "x86_64-linux", "one", "builtins ? currentSystem"),
            "true"
        );
    });
    h.join().expect("test thread");
}

/// The sizes the memory budget rests on (docs/evaluator.md, "Values and memory"): a value is
/// two words (lists are thin `RcSlice`s, paths `Rc<String>`), a thunk's state at most six (no
/// borrow flag), a frame with up to two inline slots eight, an IR node six (the assertion text
/// is boxed).
#[test]
fn object_sizes() {
    use std::mem::size_of;
    assert_eq!(size_of::<crate::value::Value>(), 16);
    assert!(
        size_of::<crate::value::Thunk>() <= 48,
        "thunk: {}",
        size_of::<crate::value::Thunk>()
    );
    assert!(
        size_of::<crate::value::Env>() <= 64,
        "frame: {}",
        size_of::<crate::value::Env>()
    );
    assert!(
        size_of::<crate::ir::Expr>() <= 48,
        "expr: {}",
        size_of::<crate::ir::Expr>()
    );
}

/// `nix-instantiate --eval --json`: paths are copied to the store; without `--strict` a value
/// below the top that is not evaluated yet is an error, as in Nix; with it, everything is forced.
#[test]
fn instantiate_json() {
    let lazy = OutputFormat::InstantiateJson { strict: false };
    let strict = OutputFormat::InstantiateJson { strict: true };
    assert_eq!(eval_fmt("{ a = 1; }", lazy).as_deref(), Ok("{\"a\":1}\n"));
    assert_eq!(
        eval_fmt("{ a = 1 + 1; }", strict).as_deref(),
        Ok("{\"a\":2}\n")
    );
    let e = eval_fmt("{ a = 1 + 1; }", lazy).expect_err("a thunk");
    assert!(e.contains("cannot convert a thunk to JSON"), "{e}");
    let forced = "let s = { a = 1 + 1; }; in builtins.seq s.a s";
    assert_eq!(eval_fmt(forced, lazy).as_deref(), Ok("{\"a\":2}\n"));
}

/// The thread's cache of lowered sources (`source::lowered`): evaluations after the first find
/// their files' trees again, and only ever for the same bytes and settings.
mod lowered_cache {
    use std::path::{Path, PathBuf};

    use crate::api::{EvalRequest, EvalSettings, EvalSource, OutputFormat};
    use crate::source::{self, lowered};

    /// A fresh directory for one test.
    fn scratch(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("flaked-lowered-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("creates the scratch directory");
        d
    }

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).expect("writes");
        p
    }

    fn settings(pure: bool, system: &str, home: &str) -> EvalSettings {
        EvalSettings {
            pure,
            system: system.to_string(),
            env: [("HOME".to_string(), home.to_string())]
                .into_iter()
                .collect(),
            ..EvalSettings::default()
        }
    }

    /// `nix eval -f FILE` on this thread: the printed value or the rendered error.
    fn eval_file(file: &Path, s: &EvalSettings) -> Result<String, String> {
        let req = EvalRequest {
            source: EvalSource::File(file.to_path_buf()),
            attr_path: None,
            output: OutputFormat::Nix,
            settings: s.clone(),
        };
        match crate::api::evaluate_on_this_thread(&req) {
            Ok(o) => Ok(String::from_utf8_lossy(&o.stdout).trim_end().to_string()),
            Err(d) => Err(d.rendered),
        }
    }

    /// Runs `f` on a thread of its own (a fresh cache) with enough stack.
    fn on_thread(f: impl FnOnce() + Send + 'static) {
        std::thread::Builder::new()
            .stack_size(64 << 20)
            .spawn(f)
            .expect("spawns")
            .join()
            .expect("test thread");
    }

    #[test]
    fn same_answer_cold_and_cached_and_edits_are_seen() {
        let dir = scratch("edits");
        let main = write(
            &dir,
            "main.nix",
            "let b = import ./b.nix; in { x = b.v * 2; y = b; }",
        );
        let b = write(&dir, "b.nix", "{ v = 21; w = \"a\"; }");
        on_thread(move || {
            let s = settings(false, "x86_64-linux", "/home/a");
            let cold = eval_file(&main, &s);
            assert_eq!(
                cold.as_deref(),
                Ok("{ x = 42; y = { v = 21; w = \"a\"; }; }")
            );
            assert_eq!(lowered::stats().0, 2, "both files cached");
            // Cached: the same answer, and no source read anew.
            let mark = source::mark();
            assert_eq!(eval_file(&main, &s), cold);
            assert_eq!(
                source::mark(),
                mark,
                "the second evaluation lowered nothing"
            );
            // An edit of the same size that keeps the modification time: the bytes decide.
            let mtime = std::fs::metadata(&b)
                .and_then(|m| m.modified())
                .expect("mtime");
            std::fs::write(&b, "{ v = 12; w = \"b\"; }").expect("edits");
            std::fs::File::options()
                .write(true)
                .open(&b)
                .and_then(|f| f.set_modified(mtime))
                .expect("restores the mtime");
            assert_eq!(
                eval_file(&main, &s).as_deref(),
                Ok("{ x = 24; y = { v = 12; w = \"b\"; }; }")
            );
            assert_eq!(source::mark(), mark + 1, "only the edited file was lowered");
            assert_eq!(lowered::stats().0, 2, "the old tree of b.nix was replaced");
        });
    }

    #[test]
    fn errors_from_cached_trees_keep_their_positions() {
        let dir = scratch("positions");
        let main = write(&dir, "main.nix", "let f = import ./f.nix; in\n  f.y + 1\n");
        let f = write(&dir, "f.nix", "{\n  x = 1;\n  y = throw \"boom\";\n}\n");
        on_thread(move || {
            let s = settings(false, "x86_64-linux", "/home/a");
            let cold = eval_file(&main, &s).expect_err("throws");
            // What Nix 2.26 prints (checked against the reference for these files).
            let code = "            2|   x = 1;\n            3|   y = throw \"boom\";";
            let want = format!(
                "error:\n       … while evaluating the file '{}':\n\n       … while evaluating the attribute 'y'\n         at {f}:3:3:\n{code}\n             |   ^\n            4| }}\n\n       … while calling the 'throw' builtin\n         at {f}:3:7:\n{code}\n             |       ^\n            4| }}\n\n       error: boom\n",
                main.display(),
                f = f.display()
            );
            assert_eq!(cold, want);
            // A few evaluations later, with the cache doing the work: the very same text.
            for _ in 0..3 {
                assert_eq!(eval_file(&main, &s).expect_err("throws"), cold);
            }
            // A syntax error is not cached, and is reported the same each time.
            let bad = write(&dir, "bad.nix", "{ a = 1;\n  b = ; }\n");
            let first = eval_file(&bad, &s).expect_err("syntax error");
            assert!(
                first.contains(&format!("at {}:2:7:", bad.display())),
                "{first}"
            );
            assert_eq!(eval_file(&bad, &s).expect_err("syntax error"), first);
        });
    }

    #[test]
    fn settings_that_lowering_reads_are_not_shared() {
        let dir = scratch("settings");
        let home = write(&dir, "home.nix", "toString ~/x");
        let sys = write(
            &dir,
            "sys.nix",
            "{ s = builtins.currentSystem; d = (derivation { name = \"a\"; builder = \"b\"; system = \"c\"; }).type; }",
        );
        on_thread(move || {
            let pure = eval_file(&home, &settings(true, "x86_64-linux", "/home/a"))
                .expect_err("pure mode");
            assert!(
                pure.contains("the path '~/x' can not be resolved in pure mode"),
                "{pure}"
            );
            let a = settings(false, "x86_64-linux", "/home/a");
            let b = settings(false, "x86_64-linux", "/home/b");
            assert_eq!(eval_file(&home, &a).as_deref(), Ok("\"/home/a/x\""));
            assert_eq!(eval_file(&home, &b).as_deref(), Ok("\"/home/b/x\""));
            assert_eq!(eval_file(&home, &a).as_deref(), Ok("\"/home/a/x\""));
            let again = eval_file(&home, &settings(true, "x86_64-linux", "/home/a"));
            assert_eq!(again, Err(pure));
            // One cached tree, evaluated with each evaluation's own builtins.
            let linux = Ok("{ d = \"derivation\"; s = \"x86_64-linux\"; }".to_string());
            assert_eq!(eval_file(&sys, &a), linux);
            let mark = source::mark();
            assert_eq!(
                eval_file(&sys, &settings(false, "aarch64-darwin", "/home/a")).as_deref(),
                Ok("{ d = \"derivation\"; s = \"aarch64-darwin\"; }")
            );
            assert_eq!(source::mark(), mark, "the tree was reused");
            assert_eq!(eval_file(&sys, &a), linux);
            // Pure mode has other base-environment names (no `currentSystem`): its own tree.
            let mark = source::mark();
            let pure = eval_file(&sys, &settings(true, "x86_64-linux", "/home/a")).expect("prints");
            assert!(pure.contains("attribute 'currentSystem' missing"), "{pure}");
            // (sys.nix and `derivation`'s own Nix code, both lowered anew for pure mode)
            assert_eq!(source::mark(), mark + 2, "lowered anew for pure mode");
        });
    }

    #[test]
    fn a_tiny_budget_evicts_and_deleted_files_are_dropped() {
        let dir = scratch("budget");
        let main = write(
            &dir,
            "main.nix",
            "[ (import ./a.nix) (import ./b.nix) (import ./c.nix) ]",
        );
        for (n, v) in [("a.nix", 1), ("b.nix", 2), ("c.nix", 3)] {
            write(
                &dir,
                n,
                &format!("{{ v = {v}; pad = \"{}\"; }}", "x".repeat(100)),
            );
        }
        let c = dir.join("c.nix");
        on_thread(move || {
            lowered::set_thread_budget(Some(300));
            let s = settings(false, "x86_64-linux", "/home/a");
            let want = eval_file(&main, &s).expect("evaluates");
            assert!(want.starts_with("[ { pad = "), "{want}");
            let (entries, bytes) = lowered::stats();
            assert!(bytes <= 300, "{bytes} bytes cached");
            assert!((1..4).contains(&entries), "{entries} entries");
            // Evicted trees' sources are forgotten with the evaluation; the answer is the same.
            assert!(source::text_bytes() <= 300);
            assert_eq!(eval_file(&main, &s).as_deref(), Ok(want.as_str()));
            // Without a budget everything stays; a deleted file's entry goes at the next sweep.
            lowered::set_thread_budget(None);
            assert_eq!(eval_file(&main, &s).as_deref(), Ok(want.as_str()));
            assert_eq!(lowered::stats().0, 4);
            std::fs::remove_file(&c).expect("deletes");
            lowered::sweep_missing();
            assert_eq!(lowered::stats().0, 3);
            // A zero budget caches nothing.
            lowered::set_thread_budget(Some(0));
            source::lowered::end_evaluation();
            assert_eq!(lowered::stats(), (0, 0));
            assert_eq!(source::text_bytes(), 0, "nothing pinned any more");
        });
    }

    #[test]
    fn rollback_drops_what_was_read_since_and_keeps_older_trees() {
        use crate::eval::{Config, Evaluator};
        use crate::source::Pos;
        let dir = scratch("rollback");
        let before = write(&dir, "before.nix", "{ v = 1; }");
        let since = write(&dir, "since.nix", "{\n  v = 2;\n  e = assert false; 1;\n}");
        on_thread(move || {
            let mut ev = Evaluator::new(Config::pure_for_tests());
            let load = |ev: &mut Evaluator, p: &Path| {
                crate::builtins::import::eval_file(ev, p).expect("imports")
            };
            load(&mut ev, &before);
            let cp = ev.checkpoint().expect("no checkpoint open");
            let v = load(&mut ev, &since);
            assert!(ev.import_cache.get(&since).is_some());
            drop(v);
            ev.rollback(cp, false);
            assert!(
                ev.import_cache.get(&since).is_none(),
                "the import since is undone"
            );
            assert!(
                ev.import_cache.get(&before).is_some(),
                "the import before stays"
            );
            // The tree lowered since the checkpoint is dropped with its source (a search reads
            // each file once); the one lowered before stays cached. Importing again lowers the
            // file anew, and its error points into it.
            assert_eq!(
                lowered::stats().0,
                1,
                "only the tree from before the checkpoint"
            );
            let mark = source::mark();
            let v = load(&mut ev, &since);
            assert_eq!(source::mark(), mark + 1);
            let Some(crate::value::Value::Attrs(a)) = ev.force(&v, Pos::NONE).ok() else {
                panic!("a set")
            };
            let e = a
                .get(crate::symbol::Symbol::intern("e"))
                .expect("e")
                .value
                .clone();
            let err = ev.force(&e, Pos::NONE).expect_err("throws");
            assert!(
                source::pos_string(err.0.pos).ends_with("since.nix:3:7"),
                "{}",
                source::pos_string(err.0.pos)
            );
            drop((v, a, e, err));
            drop(ev);
            source::lowered::end_evaluation();
            assert_eq!(lowered::stats().0, 2);
        });
    }
}

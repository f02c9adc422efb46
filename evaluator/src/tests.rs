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

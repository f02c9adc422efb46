//! Fuzz target: well-formed Nix expressions generated from the fuzzer's bytes, so that the evaluator
//! (not only the parser) is exercised: every construct, builtins, laziness, recursion, big numbers.
//!
//! Invariant checked: `evaluate` never panics or crashes and every diagnostic starts with `error:`.
#![no_main]

use flaked_eval::api::{EvalRequest, EvalSettings, EvalSource, OutputFormat, evaluate};
use libfuzzer_sys::fuzz_target;

/// Pulls choices out of the fuzz input; yields zeros once exhausted (so generation terminates).
struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn byte(&mut self) -> u8 {
        match self.0.split_first() {
            Some((b, rest)) => {
                self.0 = rest;
                *b
            }
            None => 0,
        }
    }
    fn pick(&mut self, n: usize) -> usize {
        self.byte() as usize % n
    }
}

const NAMES: &[&str] = &[
    "a", "b", "x", "self", "f", "or", "__curPos", "builtins", "true", "null",
];
const ATTRS: &[&str] = &[
    "a",
    "b",
    "c",
    "outPath",
    "__functor",
    "__toString",
    "type",
    "\"a b\"",
    "${\"a\"}",
];
const BUILTINS: &[&str] = &[
    "builtins.length",
    "builtins.head",
    "builtins.tail",
    "builtins.attrNames",
    "builtins.toString",
    "builtins.toJSON",
    "builtins.fromJSON",
    "builtins.typeOf",
    "builtins.seq",
    "builtins.deepSeq",
    "builtins.tryEval",
    "builtins.map",
    "builtins.filter",
    "builtins.foldl'",
    "builtins.genList",
    "builtins.elemAt",
    "builtins.concatStringsSep",
    "builtins.substring",
    "builtins.stringLength",
    "builtins.listToAttrs",
    "builtins.mapAttrs",
    "builtins.removeAttrs",
    "builtins.sort",
    "builtins.split",
    "builtins.match",
    "builtins.replaceStrings",
    "builtins.hashString \"sha256\"",
    "builtins.functionArgs",
    "builtins.isFunction",
    "builtins.compareVersions",
    "builtins.throw",
    "builtins.abort",
    "builtins.trace",
    "builtins.bitAnd",
    "builtins.div",
    "builtins.ceil",
    "builtins.genericClosure",
];
const INTS: &[&str] = &[
    "0",
    "1",
    "2",
    "-1",
    "9223372036854775807",
    "(-9223372036854775807 - 1)",
    "10000",
    "1.5",
    "0.1",
    "1.0e300",
];
const STRINGS: &[&str] = &[
    "\"\"",
    "\"a\"",
    "\"${\"x\"}y\"",
    "''\n  a\n    b\n''",
    "\"\\n\\t\\\\\"",
    "\"é日\"",
    "\"[a-z]*\"",
    "\"(\"",
];
const BINOPS: &[&str] = &[
    "+", "-", "*", "/", "==", "!=", "<", "<=", ">", ">=", "&&", "||", "->", "++", "//",
];

fn expr(b: &mut Bytes, depth: u32, out: &mut String) {
    if depth > 7 {
        out.push_str(INTS[b.pick(INTS.len())]);
        return;
    }
    let d = depth + 1;
    match b.pick(24) {
        0 => out.push_str(INTS[b.pick(INTS.len())]),
        1 => out.push_str(STRINGS[b.pick(STRINGS.len())]),
        2 => out.push_str(NAMES[b.pick(NAMES.len())]),
        3 | 4 => {
            out.push('(');
            expr(b, d, out);
            out.push(' ');
            out.push_str(BINOPS[b.pick(BINOPS.len())]);
            out.push(' ');
            expr(b, d, out);
            out.push(')');
        }
        5 => {
            out.push_str("let ");
            for _ in 0..=b.pick(3) {
                out.push_str(NAMES[b.pick(3)]);
                out.push_str(" = ");
                expr(b, d, out);
                out.push_str("; ");
            }
            out.push_str("in ");
            expr(b, d, out);
        }
        6 | 7 => {
            out.push_str(if b.pick(3) == 0 { "rec { " } else { "{ " });
            for _ in 0..b.pick(4) {
                out.push_str(ATTRS[b.pick(ATTRS.len())]);
                if b.pick(4) == 0 {
                    out.push('.');
                    out.push_str(ATTRS[b.pick(3)]);
                }
                out.push_str(" = ");
                expr(b, d, out);
                out.push_str("; ");
            }
            if b.pick(4) == 0 {
                out.push_str("inherit a; ");
            }
            out.push('}');
        }
        8 => {
            out.push('[');
            for _ in 0..b.pick(4) {
                out.push(' ');
                out.push('(');
                expr(b, d, out);
                out.push(')');
            }
            out.push_str(" ]");
        }
        9 | 10 => {
            out.push('(');
            expr(b, d, out);
            out.push_str(").");
            out.push_str(ATTRS[b.pick(ATTRS.len())]);
            if b.pick(2) == 0 {
                out.push_str(" or ");
                expr(b, d, out);
            }
        }
        11 => {
            out.push_str(match b.pick(4) {
                0 => "(x: ",
                1 => "({ a, b ? 1, ... }@x: ",
                2 => "({ a ? x, x ? 2 }: ",
                _ => "(self: ",
            });
            expr(b, d, out);
            out.push(')');
        }
        12 | 13 | 14 => {
            out.push('(');
            out.push_str(BUILTINS[b.pick(BUILTINS.len())]);
            for _ in 0..=b.pick(3) {
                out.push_str(" (");
                expr(b, d, out);
                out.push(')');
            }
            out.push(')');
        }
        15 => {
            out.push('(');
            expr(b, d, out);
            out.push_str(" (");
            expr(b, d, out);
            out.push_str("))");
        }
        16 => {
            out.push_str("(if ");
            expr(b, d, out);
            out.push_str(" then ");
            expr(b, d, out);
            out.push_str(" else ");
            expr(b, d, out);
            out.push(')');
        }
        17 => {
            out.push_str("(with ");
            expr(b, d, out);
            out.push_str("; ");
            expr(b, d, out);
            out.push(')');
        }
        18 => {
            out.push_str("(assert ");
            expr(b, d, out);
            out.push_str("; ");
            expr(b, d, out);
            out.push(')');
        }
        19 => {
            out.push_str("\"${");
            expr(b, d, out);
            out.push_str("}\"");
        }
        20 => {
            out.push('(');
            expr(b, d, out);
            out.push_str(" ? ");
            out.push_str(ATTRS[b.pick(ATTRS.len())]);
            out.push(')');
        }
        21 => {
            out.push_str(if b.pick(2) == 0 { "(!" } else { "(-" });
            expr(b, d, out);
            out.push(')');
        }
        22 => {
            // Fixed points and deep recursion.
            out.push_str(match b.pick(4) {
                0 => "(let fix = f: let x = f x; in x; in fix (self: ",
                1 => "(let f = n: if n == 0 then 0 else 1 + f (n - 1); in f ",
                2 => "(let g = x: g x; in builtins.seq ",
                _ => "(let l = builtins.genList (i: i) 20000; in builtins.foldl' (a: b: a + b) 0 l + builtins.length [ ",
            });
            expr(b, d, out);
            out.push_str(if out.ends_with("length [ ") {
                " ])"
            } else {
                ")"
            });
        }
        _ => out.push_str("./p"),
    }
}

fuzz_target!(|data: &[u8]| {
    let mut b = Bytes(data);
    let mut text = String::new();
    expr(&mut b, 0, &mut text);
    let output = if b.pick(2) == 0 {
        OutputFormat::Nix
    } else {
        OutputFormat::Json
    };
    let req = EvalRequest {
        source: EvalSource::Expr(text.clone()),
        attr_path: None,
        output,
        settings: EvalSettings {
            cwd: std::env::temp_dir(),
            ..EvalSettings::default()
        },
    };
    if let Err(d) = evaluate(&req) {
        assert!(
            d.rendered.starts_with("error:"),
            "bad diagnostic for {text:?}: {:?}",
            d.rendered
        );
    }
});

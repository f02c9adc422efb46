//! Diagnostics and serialisation builtins that need no store: warn, traceVerbose, toXML, break,
//! placeholder.
//!
//! Why it exists: `warn` reports "evaluation warning: …" on the side channel, `traceVerbose` is
//! `trace` only when `trace-verbose` is set (never in flaked: it then just returns its second
//! argument, like Nix's default), and `toXML` reproduces Nix's `printValueAsXML` (strict, no
//! locations) byte for byte: two-space indentation, attributes sorted by name, Nix's escaping.
//! Invariant: toXML forces exactly what Nix forces and collects string contexts.

use std::collections::HashSet;

use crate::builtins::Registry;
use crate::error::{EvalError, Result};
use crate::eval::Evaluator;
use crate::print::fmt_float;
use crate::source::Pos;
use crate::value::{Context, Value};

pub(crate) fn register(r: &mut Registry) {
    r.primop("__warn", 2, prim_warn);
    r.primop("__traceVerbose", 2, prim_trace_verbose);
    r.primop("__toXML", 1, prim_to_xml);
    r.primop("break", 1, prim_break);
    r.primop("placeholder", 1, prim_placeholder);
}

/// Without a debugger, `break v` is `v`.
fn prim_break(ev: &mut Evaluator, pos: Pos, args: &[Value]) -> Result<Value> {
    ev.force(&args[0], pos)
}

/// Nix's `hashPlaceholder`: "/" + nix32(sha256("nix-output:" + name)).
fn prim_placeholder(ev: &mut Evaluator, pos: Pos, args: &[Value]) -> Result<Value> {
    let name = ev.force_string_no_ctx(
        &args[0],
        pos,
        "while evaluating the first argument passed to builtins.placeholder",
    )?;
    let mut data = b"nix-output:".to_vec();
    data.extend_from_slice(&name.bytes);
    let h = flaked_store::hash::Hash::sha256(&data);
    Ok(Value::str(&format!("/{}", h.to_nix32())))
}

fn prim_warn(ev: &mut Evaluator, pos: Pos, args: &[Value]) -> Result<Value> {
    let s = ev.force_string(
        &args[0],
        pos,
        "while evaluating the first argument; the message passed to builtins.warn",
    )?;
    ev.stderr.push(crate::error::filter_ansi_escapes(&format!(
        "evaluation warning: {}",
        s.as_str_lossy()
    )));
    if ev.abort_on_warn {
        // Like Nix: not catchable by tryEval.
        return Err(EvalError::eval(
            "aborting to reveal stack trace of warning, as abort-on-warn is set",
        ));
    }
    ev.force(&args[1], pos)
}

fn prim_trace_verbose(ev: &mut Evaluator, pos: Pos, args: &[Value]) -> Result<Value> {
    ev.force(&args[1], pos)
}

struct Xml {
    out: Vec<u8>,
    depth: usize,
    stack: Vec<&'static str>,
}

impl Xml {
    fn indent(&mut self) {
        for _ in 0..self.depth {
            self.out.extend_from_slice(b"  ");
        }
    }
    fn attrs(&mut self, attrs: &[(&str, &[u8])]) {
        let mut sorted: Vec<_> = attrs.to_vec();
        sorted.sort_by(|a, b| a.0.cmp(b.0));
        for (k, v) in sorted {
            self.out.push(b' ');
            self.out.extend_from_slice(k.as_bytes());
            self.out.extend_from_slice(b"=\"");
            for &c in v {
                match c {
                    b'"' => self.out.extend_from_slice(b"&quot;"),
                    b'<' => self.out.extend_from_slice(b"&lt;"),
                    b'>' => self.out.extend_from_slice(b"&gt;"),
                    b'&' => self.out.extend_from_slice(b"&amp;"),
                    b'\n' => self.out.extend_from_slice(b"&#xA;"),
                    c => self.out.push(c),
                }
            }
            self.out.push(b'"');
        }
    }
    fn empty(&mut self, name: &str, attrs: &[(&str, &[u8])]) {
        self.indent();
        self.out.push(b'<');
        self.out.extend_from_slice(name.as_bytes());
        self.attrs(attrs);
        self.out.extend_from_slice(b" />\n");
    }
    fn open(&mut self, name: &'static str, attrs: &[(&str, &[u8])]) {
        self.indent();
        self.out.push(b'<');
        self.out.extend_from_slice(name.as_bytes());
        self.attrs(attrs);
        self.out.extend_from_slice(b">\n");
        self.stack.push(name);
        self.depth += 1;
    }
    fn close(&mut self) {
        self.depth -= 1;
        self.indent();
        let name = self.stack.pop().expect("close matches an open");
        self.out.extend_from_slice(b"</");
        self.out.extend_from_slice(name.as_bytes());
        self.out.extend_from_slice(b">\n");
    }
}

fn c_str(b: &[u8]) -> &[u8] {
    let end = b.iter().position(|c| *c == 0).unwrap_or(b.len());
    &b[..end]
}

fn xml_value(
    ev: &mut Evaluator,
    v: &Value,
    pos: Pos,
    x: &mut Xml,
    ctx: &mut Context,
    drvs: &mut HashSet<Vec<u8>>,
) -> Result<()> {
    if x.depth > 10_000 {
        return Err(EvalError::native_stack_overflow());
    }
    let v = ev.force(v, pos)?;
    match &v {
        Value::Int(i) => x.empty("int", &[("value", i.to_string().as_bytes())]),
        Value::Bool(b) => x.empty("bool", &[("value", if *b { b"true" } else { b"false" })]),
        Value::String(s) => {
            if let Some(c) = &s.context {
                ctx.extend(c.iter().cloned());
            }
            x.empty("string", &[("value", c_str(&s.bytes))]);
        }
        Value::Path(p) => x.empty("path", &[("value", p.as_bytes())]),
        Value::Null => x.empty("null", &[]),
        Value::Float(f) => x.empty("float", &[("value", fmt_float(*f).as_bytes())]),
        Value::Attrs(a) => {
            if ev.is_derivation(&v)? {
                let mut drv_path = Vec::new();
                let mut out_path = None;
                if let Some(d) = a.get(ev.syms.drv_path) {
                    let dv = ev.force(&d.value, d.pos)?;
                    if let Value::String(s) = &dv {
                        drv_path = c_str(&s.bytes).to_vec();
                    }
                }
                if let Some(o) = a.get(ev.syms.out_path) {
                    let ov = ev.force(&o.value, o.pos)?;
                    if let Value::String(s) = &ov {
                        out_path = Some(c_str(&s.bytes).to_vec());
                    }
                }
                let mut xa: Vec<(&str, &[u8])> = Vec::new();
                let has_drv = a
                    .get(ev.syms.drv_path)
                    .is_some_and(|d| matches!(ev.force(&d.value, d.pos), Ok(Value::String(_))));
                if has_drv {
                    xa.push(("drvPath", &drv_path));
                }
                if let Some(o) = &out_path {
                    xa.push(("outPath", o));
                }
                x.open("derivation", &xa);
                if !drv_path.is_empty() && drvs.insert(drv_path.clone()) {
                    xml_attrs(ev, a, x, ctx, drvs)?;
                } else {
                    x.empty("repeated", &[]);
                }
                x.close();
            } else {
                x.open("attrs", &[]);
                xml_attrs(ev, a, x, ctx, drvs)?;
                x.close();
            }
        }
        Value::List(l) => {
            x.open("list", &[]);
            for e in l.iter() {
                xml_value(ev, e, pos, x, ctx, drvs)?;
            }
            x.close();
        }
        Value::Lambda(c) => {
            x.open("function", &[]);
            match &c.def.formals {
                Some(f) => {
                    let name = c.def.arg.map(|s| s.as_string());
                    let mut pa: Vec<(&str, &[u8])> = Vec::new();
                    if let Some(n) = &name {
                        pa.push(("name", n.as_bytes()));
                    }
                    if f.ellipsis {
                        pa.push(("ellipsis", b"1"));
                    }
                    x.open("attrspat", &pa);
                    let mut names: Vec<_> = f.entries.iter().map(|e| e.name).collect();
                    names.sort_by(|a, b| a.cmp_by_name(*b));
                    for n in names {
                        x.empty("attr", &[("name", &n.bytes())]);
                    }
                    x.close();
                }
                None => {
                    let n = c.def.arg.map(|s| s.as_string()).unwrap_or_default();
                    x.empty("varpat", &[("name", n.as_bytes())]);
                }
            }
            x.close();
        }
        _ => x.empty("unevaluated", &[]),
    }
    Ok(())
}

fn xml_attrs(
    ev: &mut Evaluator,
    a: &crate::value::Attrs,
    x: &mut Xml,
    ctx: &mut Context,
    drvs: &mut HashSet<Vec<u8>>,
) -> Result<()> {
    for attr in a.sorted_by_name() {
        x.open("attr", &[("name", &attr.name.bytes())]);
        xml_value(ev, &attr.value, attr.pos, x, ctx, drvs)?;
        x.close();
    }
    Ok(())
}

fn prim_to_xml(ev: &mut Evaluator, pos: Pos, args: &[Value]) -> Result<Value> {
    let mut x = Xml {
        out: b"<?xml version='1.0' encoding='utf-8'?>\n".to_vec(),
        depth: 0,
        stack: Vec::new(),
    };
    let mut ctx = Context::new();
    let mut drvs = HashSet::new();
    x.open("expr", &[]);
    xml_value(ev, &args[0], pos, &mut x, &mut ctx, &mut drvs)?;
    x.close();
    Ok(Value::string_ctx(x.out, ctx))
}

#[cfg(test)]
mod tests {
    use crate::api::{EvalRequest, EvalSettings, EvalSource, OutputFormat, evaluate};

    fn run(expr: &str, nix_config: Option<&str>) -> Result<String, (Vec<String>, String)> {
        let mut settings = EvalSettings::default();
        if let Some(c) = nix_config {
            settings.env.insert("NIX_CONFIG".into(), c.into());
        }
        let req = EvalRequest {
            source: EvalSource::Expr(expr.into()),
            attr_path: None,
            output: OutputFormat::Nix,
            settings,
        };
        match evaluate(&req) {
            Ok(o) => Ok(String::from_utf8_lossy(&o.stdout).into_owned()),
            Err(d) => Err((d.log, d.rendered)),
        }
    }

    /// Expected output from `NIX_CONFIG='abort-on-warn = true' nix eval` (Nix 2.26).
    #[test]
    fn abort_on_warn_from_nix_config() {
        let expr = "builtins.tryEval (builtins.warn \"hi\" 1)";
        assert_eq!(
            run(expr, None),
            Ok("{ success = true; value = 1; }\n".into())
        );
        let (log, rendered) = run(expr, Some("# comment\nabort-on-warn = true\n"))
            .expect_err("abort-on-warn makes warn fail, uncatchably");
        assert_eq!(log, vec!["evaluation warning: hi".to_string()]);
        assert!(
            rendered.ends_with(
                "error: aborting to reveal stack trace of warning, as abort-on-warn is set\n"
            ),
            "{rendered}"
        );
        assert!(
            rendered.contains("… while calling the 'warn' builtin"),
            "{rendered}"
        );
        assert!(run(expr, Some("abort-on-warn = false")).is_ok());
    }
}

//! Printing values exactly as `nix eval` does: Nix syntax, `--json` and `--raw`.
//!
//! Invariant: the Nix-syntax printer follows Nix 2.26's `ValuePrinter` (attribute order by
//! name, `«repeated»` for values printed twice, `«error: …»` for nested failures, `%g`-style
//! floats); the JSON printer follows `printValueAsJSON` with nlohmann's number formatting.

use std::collections::HashSet;
use std::rc::Rc;

use crate::error::{EvalError, Result};
use crate::eval::Evaluator;
use crate::source::{self, Pos};
use crate::value::{Context, Value};

/// Nesting depth beyond which printing reports Nix's stack overflow instead of recursing.
const MAX_PRINT_DEPTH: usize = 100_000;

/// Formats a float like C++ `ostream << double` (`%g`, precision 6).
pub fn fmt_float(f: f64) -> String {
    if f.is_nan() {
        return if f.is_sign_negative() {
            "-nan".into()
        } else {
            "nan".into()
        };
    }
    if f.is_infinite() {
        return if f < 0.0 { "-inf".into() } else { "inf".into() };
    }
    if f == 0.0 {
        return if f.is_sign_negative() {
            "-0".into()
        } else {
            "0".into()
        };
    }
    let sci = format!("{:.5e}", f);
    let (mant, exp) = sci.split_once('e').expect("exponent format");
    let exp: i32 = exp.parse().expect("exponent digits");
    if !(-4..6).contains(&exp) {
        let mant = trim_zeros(mant);
        format!(
            "{}e{}{:02}",
            mant,
            if exp < 0 { '-' } else { '+' },
            exp.abs()
        )
    } else {
        let decimals = (5 - exp).max(0) as usize;
        trim_zeros(&format!("{:.*}", decimals, f)).to_string()
    }
}

fn trim_zeros(s: &str) -> &str {
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.')
    } else {
        s
    }
}

/// Formats a float as nlohmann::json does (shortest round-trip digits).
pub fn fmt_json_float(f: f64) -> String {
    if !f.is_finite() {
        return "null".into();
    }
    if f == 0.0 {
        return if f.is_sign_negative() {
            "-0.0".into()
        } else {
            "0.0".into()
        };
    }
    let neg = f < 0.0;
    let e = format!("{:e}", f.abs());
    let (mant, exp) = e.split_once('e').expect("exponent format");
    let exp: i32 = exp.parse().expect("exponent digits");
    let digits: String = mant.chars().filter(|c| *c != '.').collect();
    let len = digits.len() as i32;
    // value = 0.d1d2... * 10^n  with n = exp + 1
    let n = exp + 1;
    let k = n - len;
    let mut out = String::new();
    if neg {
        out.push('-');
    }
    if k >= 0 && n <= 15 {
        out.push_str(&digits);
        for _ in 0..k {
            out.push('0');
        }
        out.push_str(".0");
    } else if 0 < n && n <= 15 {
        out.push_str(&digits[..n as usize]);
        out.push('.');
        out.push_str(&digits[n as usize..]);
    } else if -4 < n && n <= 0 {
        out.push_str("0.");
        for _ in 0..(-n) {
            out.push('0');
        }
        out.push_str(&digits);
    } else {
        out.push_str(&digits[..1]);
        if len > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        let e = n - 1;
        out.push_str(&format!("e{}{:02}", if e < 0 { '-' } else { '+' }, e.abs()));
    }
    out
}

/// Nix's `printLiteralString`.
pub fn literal_string(s: &[u8]) -> String {
    String::from_utf8_lossy(&literal_string_bytes(s, usize::MAX)).into_owned()
}

fn literal_string_bytes(s: &[u8], max_len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len() + 2);
    out.push(b'"');
    for (i, &c) in s.iter().enumerate() {
        if i >= max_len {
            out.extend_from_slice(b"\" ");
            let n = s.len() - i;
            out.extend_from_slice(
                format!("«{} {} elided»", n, if n == 1 { "byte" } else { "bytes" }).as_bytes(),
            );
            return out;
        }
        match c {
            b'"' | b'\\' => {
                out.push(b'\\');
                out.push(c);
            }
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            b'$' if s.get(i + 1) == Some(&b'{') => out.extend_from_slice(b"\\$"),
            c => out.push(c),
        }
    }
    out.push(b'"');
    out
}

const RESERVED: [&str; 9] = [
    "if", "then", "else", "assert", "with", "let", "in", "rec", "inherit",
];

fn is_var_name(s: &[u8]) -> bool {
    if s.is_empty() {
        return false;
    }
    if let Ok(t) = std::str::from_utf8(s)
        && RESERVED.contains(&t)
    {
        return false;
    }
    let c = s[0];
    if c.is_ascii_digit() || c == b'-' || c == b'\'' {
        return false;
    }
    s.iter()
        .all(|&c| c.is_ascii_alphanumeric() || c == b'_' || c == b'-' || c == b'\'')
}

/// An attribute name as Nix prints it (quoted unless it is a plain identifier).
pub fn attr_name_string(s: &[u8]) -> String {
    let mut out = Vec::new();
    attr_name_bytes(s, &mut out);
    String::from_utf8_lossy(&out).into_owned()
}

fn attr_name_bytes(s: &[u8], out: &mut Vec<u8>) {
    if is_var_name(s) {
        out.extend_from_slice(s);
    } else {
        out.extend_from_slice(&literal_string_bytes(s, usize::MAX));
    }
}

struct Opts {
    force: bool,
    derivation_paths: bool,
    max_depth: usize,
    max_attrs: usize,
    max_items: usize,
    max_string: usize,
}

struct Printer<'a> {
    ev: Option<&'a mut Evaluator>,
    opts: Opts,
    seen: HashSet<usize>,
    total_attrs: usize,
    total_items: usize,
    out: Vec<u8>,
}

fn function_text(v: &Value) -> String {
    match v {
        Value::Lambda(c) => {
            let mut s = "«lambda".to_string();
            if let Some(n) = c.def.name {
                s.push(' ');
                s.push_str(&n.as_string());
            }
            s.push_str(" @ ");
            s.push_str(&source::pos_string(c.def.pos));
            s.push('»');
            s
        }
        Value::PrimOp(p) => format!("«primop {}»", p.name),
        Value::PrimOpApp(a) => format!("«partially applied primop {}»", a.op.name),
        _ => String::new(),
    }
}

impl Printer<'_> {
    fn print(&mut self, v: &Value, depth: usize) -> Result<()> {
        if depth > MAX_PRINT_DEPTH {
            return Err(EvalError::native_stack_overflow());
        }
        let identity = match v {
            Value::Thunk(t) => Some(Rc::as_ptr(t) as *const u8 as usize),
            _ => None,
        };
        let v = if self.opts.force {
            let ev = self.ev.as_mut().expect("forcing printer has an evaluator");
            match ev.force(v, Pos::NONE) {
                Ok(v) => v,
                Err(e) => {
                    self.out
                        .extend_from_slice(format!("«error: {}»", e.msg()).as_bytes());
                    return Ok(());
                }
            }
        } else {
            v.clone()
        };
        match &v {
            Value::Int(i) => self.out.extend_from_slice(i.to_string().as_bytes()),
            Value::Float(f) => self.out.extend_from_slice(fmt_float(*f).as_bytes()),
            Value::Bool(b) => self
                .out
                .extend_from_slice(if *b { b"true" } else { b"false" }),
            Value::Null => self.out.extend_from_slice(b"null"),
            Value::String(s) => {
                let b = literal_string_bytes(&s.bytes, self.opts.max_string);
                self.out.extend_from_slice(&b);
            }
            Value::Path(p) => self.out.extend_from_slice(p.as_bytes()),
            Value::Attrs(a) => {
                if !self.seen.insert(Rc::as_ptr(a) as *const u8 as usize) {
                    self.out.extend_from_slice("«repeated»".as_bytes());
                    return Ok(());
                }
                if self.opts.force && self.opts.derivation_paths {
                    let ev = self.ev.as_mut().expect("forcing printer has an evaluator");
                    match ev.is_derivation(&v) {
                        Ok(true) => {
                            let drv = a.get(ev.syms.drv_path).map(|x| (x.value.clone(), x.pos));
                            self.out.extend_from_slice("«derivation".as_bytes());
                            if let Some((dv, dp)) = drv {
                                let mut ctx = Context::new();
                                match ev.coerce_to_string(
                                    &dv,
                                    dp,
                                    "while evaluating the drvPath of a derivation",
                                    false,
                                    false,
                                    &mut ctx,
                                ) {
                                    Ok(s) => {
                                        self.out.push(b' ');
                                        self.out.extend_from_slice(&s);
                                    }
                                    Err(e) => {
                                        self.out.truncate(self.out.len() - "«derivation".len());
                                        self.out.extend_from_slice(
                                            format!("«error: {}»", e.msg()).as_bytes(),
                                        );
                                        return Ok(());
                                    }
                                }
                            }
                            self.out.extend_from_slice("»".as_bytes());
                            return Ok(());
                        }
                        Ok(false) => {}
                        Err(e) => {
                            self.out
                                .extend_from_slice(format!("«error: {}»", e.msg()).as_bytes());
                            return Ok(());
                        }
                    }
                }
                if depth >= self.opts.max_depth {
                    self.out.extend_from_slice(b"{ ... }");
                    return Ok(());
                }
                self.out.push(b'{');
                let mut sorted = a.sorted_by_name();
                if self.opts.max_attrs != usize::MAX {
                    sorted.sort_by_key(|x| {
                        let n = x.name.bytes();
                        !(&*n == b"type" || &*n == b"_type")
                    });
                }
                let total = sorted.len();
                for (i, attr) in sorted.into_iter().enumerate() {
                    self.out.push(b' ');
                    if self.total_attrs >= self.opts.max_attrs {
                        let n = total - i;
                        self.out.extend_from_slice(
                            format!(
                                "«{} {} elided»",
                                n,
                                if n == 1 { "attribute" } else { "attributes" }
                            )
                            .as_bytes(),
                        );
                        break;
                    }
                    attr_name_bytes(&attr.name.bytes(), &mut self.out);
                    self.out.extend_from_slice(b" = ");
                    let val = attr.value.clone();
                    self.print(&val, depth + 1)?;
                    self.out.push(b';');
                    self.total_attrs += 1;
                }
                self.out.extend_from_slice(b" }");
            }
            Value::List(l) => {
                if !l.is_empty() {
                    let id = identity.unwrap_or(l.as_ptr() as *const u8 as usize);
                    if !self.seen.insert(id) {
                        self.out.extend_from_slice("«repeated»".as_bytes());
                        return Ok(());
                    }
                }
                if depth >= self.opts.max_depth {
                    self.out.extend_from_slice(b"[ ... ]");
                    return Ok(());
                }
                self.out.push(b'[');
                let total = l.len();
                for (i, x) in l.iter().enumerate() {
                    self.out.push(b' ');
                    if self.total_items >= self.opts.max_items {
                        let n = total - i;
                        self.out.extend_from_slice(
                            format!("«{} {} elided»", n, if n == 1 { "item" } else { "items" })
                                .as_bytes(),
                        );
                        break;
                    }
                    self.print(x, depth + 1)?;
                    self.total_items += 1;
                }
                self.out.extend_from_slice(b" ]");
            }
            Value::Lambda(_) | Value::PrimOp(_) | Value::PrimOpApp(_) => {
                self.out.extend_from_slice(function_text(&v).as_bytes());
            }
            Value::Thunk(t) => {
                let bh = t.phase() == crate::value::ThunkPhase::Blackhole;
                if bh {
                    self.out
                        .extend_from_slice("«potential infinite recursion»".as_bytes());
                } else {
                    self.out.extend_from_slice("«thunk»".as_bytes());
                }
            }
        }
        Ok(())
    }
}

/// Prints a value as Nix shows it inside error messages (no forcing, limits as Nix's
/// `errorPrintOptions`).
pub fn print_error_value(v: &Value) -> String {
    let mut p = Printer {
        ev: None,
        opts: Opts {
            force: false,
            derivation_paths: false,
            max_depth: 10,
            max_attrs: 10,
            max_items: 10,
            max_string: 1024,
        },
        seen: HashSet::new(),
        total_attrs: 0,
        total_items: 0,
        out: Vec::new(),
    };
    let _ = p.print(v, 0);
    String::from_utf8_lossy(&p.out).into_owned()
}

/// Prints a value without forcing anything (unforced parts show as `«thunk»`), as `trace` does.
pub fn print_value_unforced(v: &Value) -> Vec<u8> {
    let mut p = Printer {
        ev: None,
        opts: Opts {
            force: false,
            derivation_paths: false,
            max_depth: usize::MAX,
            max_attrs: usize::MAX,
            max_items: usize::MAX,
            max_string: usize::MAX,
        },
        seen: HashSet::new(),
        total_attrs: 0,
        total_items: 0,
        out: Vec::new(),
    };
    let _ = p.print(v, 0);
    p.out
}

/// Prints a value as `nix eval` does (forcing it; nested errors shown as `«error: …»`).
pub fn print_value(ev: &mut Evaluator, v: &Value) -> Result<Vec<u8>> {
    let mut p = Printer {
        ev: Some(ev),
        opts: Opts {
            force: true,
            derivation_paths: true,
            max_depth: usize::MAX,
            max_attrs: usize::MAX,
            max_items: usize::MAX,
            max_string: usize::MAX,
        },
        seen: HashSet::new(),
        total_attrs: 0,
        total_items: 0,
        out: Vec::new(),
    };
    p.print(v, 0)?;
    Ok(p.out)
}

/// Nix's `printAmbiguous` (`nix-instantiate --eval` output): no forcing, `<CODE>` for thunks,
/// `<LAMBDA>`/`<PRIMOP>`/`<PRIMOP-APP>` for functions.
pub fn print_ambiguous(v: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    ambiguous_into(v, &mut out, &mut seen, i32::MAX);
    out
}

/// Nix 2.26 keeps lists of one or two elements inline in the value cell, so such a list's
/// identity for `«repeated»` is the cell holding it (here: the thunk it was reached through;
/// reached directly, it cannot be seen twice), while a longer list's identity is its shared
/// element array (here: the `Rc`).
fn ambiguous_into(v: &Value, out: &mut Vec<u8>, seen: &mut HashSet<usize>, depth: i32) {
    if depth <= 0 {
        out.extend_from_slice("«too deep»".as_bytes());
        return;
    }
    let cell = match v {
        Value::Thunk(t) => Some(Rc::as_ptr(t) as *const u8 as usize),
        _ => None,
    };
    let v = match v {
        Value::Thunk(t) => match t.value() {
            Some(x) => x,
            None if t.phase() == crate::value::ThunkPhase::Blackhole => {
                out.extend_from_slice("«potential infinite recursion»".as_bytes());
                return;
            }
            None => {
                out.extend_from_slice(b"<CODE>");
                return;
            }
        },
        other => other.clone(),
    };
    match &v {
        Value::Int(i) => out.extend_from_slice(i.to_string().as_bytes()),
        Value::Float(f) => out.extend_from_slice(fmt_float(*f).as_bytes()),
        Value::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        Value::Null => out.extend_from_slice(b"null"),
        Value::String(s) => out.extend_from_slice(&literal_string_bytes(&s.bytes, usize::MAX)),
        Value::Path(p) => out.extend_from_slice(p.as_bytes()),
        Value::Attrs(a) => {
            if !a.is_empty() && !seen.insert(Rc::as_ptr(a) as *const u8 as usize) {
                out.extend_from_slice("«repeated»".as_bytes());
                return;
            }
            out.extend_from_slice(b"{ ");
            for attr in a.sorted_by_name() {
                attr_name_bytes(&attr.name.bytes(), out);
                out.extend_from_slice(b" = ");
                ambiguous_into(&attr.value, out, seen, depth - 1);
                out.extend_from_slice(b"; ");
            }
            out.push(b'}');
        }
        Value::List(l) => {
            let id = match l.len() {
                0 => None,
                1 | 2 => cell,
                _ => Some(l.as_ptr() as *const u8 as usize),
            };
            if id.is_some_and(|id| !seen.insert(id)) {
                out.extend_from_slice("«repeated»".as_bytes());
                return;
            }
            out.extend_from_slice(b"[ ");
            for x in l.iter() {
                ambiguous_into(x, out, seen, depth - 1);
                out.push(b' ');
            }
            out.push(b']');
        }
        Value::Lambda(_) => out.extend_from_slice(b"<LAMBDA>"),
        Value::PrimOp(_) => out.extend_from_slice(b"<PRIMOP>"),
        Value::PrimOpApp(_) => out.extend_from_slice(b"<PRIMOP-APP>"),
        Value::Thunk(_) => out.extend_from_slice(b"<CODE>"),
    }
}

/// JSON string escaping as nlohmann::json (UTF-8 validated).
pub(crate) fn json_string(s: &[u8], out: &mut Vec<u8>) -> Result<()> {
    if let Err(e) = std::str::from_utf8(s) {
        let i = e.valid_up_to();
        return Err(EvalError::eval(format!(
            "JSON serialization error: [json.exception.type_error.316] invalid UTF-8 byte at index {}: 0x{:02X}",
            i, s[i]
        )));
    }
    out.push(b'"');
    for &c in s {
        match c {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            0x08 => out.extend_from_slice(b"\\b"),
            0x0c => out.extend_from_slice(b"\\f"),
            c if c < 0x20 => out.extend_from_slice(format!("\\u{:04x}", c).as_bytes()),
            c => out.push(c),
        }
    }
    out.push(b'"');
    Ok(())
}

/// Nix's `printValueAsJSON` (strict). Appends string contexts to `context`.
pub fn to_json(
    ev: &mut Evaluator,
    v: &Value,
    pos: Pos,
    copy_to_store: bool,
    context: &mut Context,
) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    json_into(ev, v, pos, copy_to_store, true, context, &mut out, 0)?;
    Ok(out)
}

/// `nix-instantiate --eval --json` without `--strict` (Nix's `printValueAsJSON` with
/// `strict = false`): nothing is forced except through `__toString`; a value that is still an
/// unevaluated thunk is the error "cannot convert a thunk to JSON". Paths are copied to the
/// store when `copy_to_store` (as nix-instantiate does).
pub fn to_json_lazy(
    ev: &mut Evaluator,
    v: &Value,
    pos: Pos,
    copy_to_store: bool,
    context: &mut Context,
) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    json_into(ev, v, pos, copy_to_store, false, context, &mut out, 0)?;
    Ok(out)
}

/// `v` itself, or the value of an already evaluated thunk (without forcing anything).
fn evaluated(v: &Value) -> Value {
    if let Value::Thunk(t) = v
        && let Some(x) = t.value()
    {
        return x;
    }
    v.clone()
}

#[allow(clippy::too_many_arguments)]
fn json_into(
    ev: &mut Evaluator,
    v: &Value,
    pos: Pos,
    copy_to_store: bool,
    strict: bool,
    context: &mut Context,
    out: &mut Vec<u8>,
    depth: usize,
) -> Result<()> {
    if depth > MAX_PRINT_DEPTH {
        return Err(EvalError::native_stack_overflow());
    }
    let depth = depth + 1;
    let v = if strict {
        ev.force(v, pos)?
    } else {
        evaluated(v)
    };
    match &v {
        Value::Int(i) => out.extend_from_slice(i.to_string().as_bytes()),
        Value::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        Value::Null => out.extend_from_slice(b"null"),
        Value::Float(f) => out.extend_from_slice(fmt_json_float(*f).as_bytes()),
        Value::String(s) => {
            if let Some(c) = &s.context {
                context.extend(c.iter().cloned());
            }
            let end = s
                .bytes
                .iter()
                .position(|b| *b == 0)
                .unwrap_or(s.bytes.len());
            json_string(&s.bytes[..end], out)?;
        }
        Value::Path(p) => {
            if copy_to_store {
                let sp = crate::builtins::paths::copy_path_to_store(ev, p, pos)?;
                context.insert(sp.clone());
                json_string(sp.as_bytes(), out)?;
            } else {
                json_string(p.as_bytes(), out)?;
            }
        }
        Value::Attrs(a) => {
            if let Some(f) = a.get(ev.syms.to_string) {
                let fv = f.value.clone();
                let fv = ev.force(&fv, pos)?;
                let r = ev.call(&fv, std::slice::from_ref(&v), pos)?;
                let s = ev.coerce_to_string(
                    &r,
                    pos,
                    "while evaluating the result of the `__toString` attribute",
                    false,
                    false,
                    context,
                )?;
                return json_string(&s, out);
            }
            if let Some(o) = a.get(ev.syms.out_path) {
                let (ov, op) = (o.value.clone(), o.pos);
                return json_into(ev, &ov, op, copy_to_store, strict, context, out, depth);
            }
            out.push(b'{');
            for (i, attr) in a.sorted_by_name().into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                json_string(&attr.name.bytes(), out)?;
                out.push(b':');
                let (av, ap) = (attr.value.clone(), attr.pos);
                json_into(ev, &av, ap, copy_to_store, strict, context, out, depth).map_err(
                    |e| e.with_trace(ap, format!("while evaluating attribute '{}'", attr.name)),
                )?;
            }
            out.push(b'}');
        }
        Value::List(l) => {
            out.push(b'[');
            for (i, x) in l.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                json_into(ev, x, pos, copy_to_store, strict, context, out, depth).map_err(|e| {
                    e.with_trace(pos, format!("while evaluating list element at index {i}"))
                })?;
            }
            out.push(b']');
        }
        Value::Lambda(_) | Value::PrimOp(_) | Value::PrimOpApp(_) | Value::Thunk(_) => {
            let p = match &v {
                Value::Lambda(c) => c.def.pos,
                _ => pos,
            };
            return Err(
                EvalError::type_error(format!("cannot convert {} to JSON", v.type_desc())).at(p),
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_like_cpp() {
        assert_eq!(fmt_float(1.5e10), "1.5e+10");
        assert_eq!(fmt_float(0.1), "0.1");
        assert_eq!(fmt_float(1e-7), "1e-07");
        assert_eq!(fmt_float(123456789.0), "1.23457e+08");
        assert_eq!(fmt_float(1.0 / 3.0), "0.333333");
        assert_eq!(fmt_float(1e21), "1e+21");
        assert_eq!(fmt_float(1e6), "1e+06");
        assert_eq!(fmt_float(100000.0), "100000");
        assert_eq!(fmt_float(1.0), "1");
        assert_eq!(fmt_float(1.23456789), "1.23457");
        assert_eq!(fmt_float(1e300), "1e+300");
        assert_eq!(fmt_float(999999.5), "1e+06");
        assert_eq!(fmt_float(0.0001), "0.0001");
        assert_eq!(fmt_float(-2.5), "-2.5");
    }

    #[test]
    fn json_floats_like_nlohmann() {
        assert_eq!(fmt_json_float(1e-5), "1e-05");
        assert_eq!(fmt_json_float(1.0), "1.0");
        assert_eq!(fmt_json_float(100000.0), "100000.0");
        assert_eq!(fmt_json_float(1e21), "1e+21");
        assert_eq!(fmt_json_float(0.1), "0.1");
        assert_eq!(fmt_json_float(1e15), "1e+15");
        assert_eq!(fmt_json_float(123.456), "123.456");
        assert_eq!(fmt_json_float(-0.5), "-0.5");
    }

    #[test]
    fn strings_escaped() {
        assert_eq!(
            literal_string(b"a\"\\${x}\n\t\r$"),
            "\"a\\\"\\\\\\${x}\\n\\t\\r$\""
        );
    }
}

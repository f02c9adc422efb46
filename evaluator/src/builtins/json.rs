//! `builtins.toJSON` and `builtins.fromJSON`.
//!
//! Why it exists: Nix serialises with its own printer (`printValueAsJSON`, shared with
//! `nix eval --json`, see `print::to_json`) and parses with nlohmann::json, whose value rules
//! (duplicate keys: last wins; integers beyond `i64` become errors, other numbers doubles; `-0`
//! is the integer 0) and error messages ("[json.exception.parse_error.101] parse error at line L,
//! column C: …") are reproduced here by a small recursive-descent parser. Invariant: a value is
//! produced only for input nlohmann accepts; otherwise an error carrying the offending input.

use crate::builtins::Registry;
use crate::error::{EvalError, Result};
use crate::eval::Evaluator;
use crate::print;
use crate::source::Pos;
use crate::symbol::Symbol;
use crate::value::{Attr, Attrs, Context, Value};

pub(crate) fn register(r: &mut Registry) {
    r.primop("__toJSON", 1, prim_to_json);
    r.primop("__fromJSON", 1, prim_from_json);
}

fn prim_to_json(ev: &mut Evaluator, pos: Pos, args: &[Value]) -> Result<Value> {
    let mut ctx = Context::new();
    let out = print::to_json(ev, &args[0], pos, true, &mut ctx)?;
    Ok(Value::string_ctx(out, ctx))
}

fn prim_from_json(ev: &mut Evaluator, pos: Pos, args: &[Value]) -> Result<Value> {
    let s = ev.force_string_no_ctx(
        &args[0],
        pos,
        "while evaluating the first argument passed to builtins.fromJSON",
    )?;
    parse_json(&s.bytes).map_err(|m| {
        // Nix's integer-range check runs in its SAX callback, outside the decoding frame.
        if m.starts_with("unsigned json number") || m.starts_with(NUL_MESSAGE_START) {
            EvalError::eval(m)
        } else {
            EvalError::eval(m).with_trace(pos, "while decoding a JSON string")
        }
    })
}

const NUL_MESSAGE_START: &str = "input string '";

/// Nix refuses strings with NUL bytes coming from a decoder (fromJSON, fromTOML): the message,
/// with each NUL shown as `␀`, or `None` when `bytes` has none.
pub(crate) fn nul_byte_error(bytes: &[u8]) -> Option<String> {
    bytes.contains(&0).then(|| {
        format!(
            "{NUL_MESSAGE_START}{}' cannot be represented as Nix string because it contains null bytes",
            String::from_utf8_lossy(bytes).replace('\0', "\u{2400}")
        )
    })
}

/// Parses a JSON document into a Nix value, or returns nlohmann's error message.
pub fn parse_json(s: &[u8]) -> std::result::Result<Value, String> {
    let mut p = JsonParser {
        s,
        i: 0,
        token_start: 0,
        depth: 0,
    };
    p.skip_ws();
    if p.i >= s.len() {
        return Err(p.err_at(
            "attempting to parse an empty input; check that your input string or stream contains the expected JSON",
            None,
        ));
    }
    let v = p.value("value")?;
    p.skip_ws();
    if p.i < s.len() {
        let tok = p.describe_next();
        return Err(p.syntax_err("value", &format!("{tok}; expected end of input")));
    }
    Ok(v)
}

struct JsonParser<'a> {
    s: &'a [u8],
    i: usize,
    /// Where nlohmann's `token_string` starts (for "last read").
    token_start: usize,
    depth: usize,
}

/// nlohmann's maximum nesting is bounded by the stack; ours is explicit.
const MAX_DEPTH: usize = 10_000;

impl JsonParser<'_> {
    fn skip_ws(&mut self) {
        while self.i < self.s.len() && matches!(self.s[self.i], b' ' | b'\t' | b'\n' | b'\r') {
            self.i += 1;
        }
    }

    /// (line, column) of the last character read, as nlohmann counts them.
    fn line_col(&self, upto: usize) -> (usize, usize) {
        // Reading past the end counts as one more character, as in nlohmann's lexer.
        let extra = upto.saturating_sub(self.s.len());
        let upto = upto.min(self.s.len());
        let mut line = 1;
        let mut col = 0;
        for &c in &self.s[..upto] {
            if c == b'\n' {
                line += 1;
                col = 0;
            } else {
                col += 1;
            }
        }
        (line, col + extra)
    }

    fn err_at(&self, msg: &str, last_read_upto: Option<usize>) -> String {
        // One past the end: nlohmann counts reading the end of input as a character.
        let upto = last_read_upto
            .unwrap_or(self.i + 1)
            .min(self.s.len() + 1)
            .max(1);
        let (l, c) = self.line_col(upto);
        format!("[json.exception.parse_error.101] parse error at line {l}, column {c}: {msg}")
    }

    fn last_read(&self, upto: usize) -> String {
        let upto = upto.min(self.s.len());
        let start = self.token_start.min(upto);
        let mut out = String::new();
        for &c in &self.s[start..upto] {
            if c < 0x20 {
                out.push_str(&format!("<U+{c:04X}>"));
            } else {
                out.push(c as char);
            }
        }
        out
    }

    fn syntax_err(&self, context: &str, msg: &str) -> String {
        let upto = self.i + 1;
        let lr = self.last_read(upto);
        let detail = if lr.is_empty() {
            msg.to_string()
        } else {
            // "unexpected X" messages carry "; last read" only for literal errors in nlohmann.
            msg.to_string()
        };
        let _ = lr;
        self.err_at(
            &format!("syntax error while parsing {context} - {detail}"),
            Some(upto),
        )
    }

    /// nlohmann's description of the token starting at `self.i`.
    fn describe_next(&mut self) -> String {
        match self.s.get(self.i) {
            None => "unexpected end of input".into(),
            Some(b'[') => "unexpected '['".into(),
            Some(b']') => "unexpected ']'".into(),
            Some(b'{') => "unexpected '{'".into(),
            Some(b'}') => "unexpected '}'".into(),
            Some(b',') => "unexpected ','".into(),
            Some(b':') => "unexpected ':'".into(),
            Some(b'"') => "unexpected string literal".into(),
            Some(b't') | Some(b'f') | Some(b'n') => "unexpected literal".into(),
            Some(c) if c.is_ascii_digit() || *c == b'-' => {
                // The whole number is read first.
                self.token_start = self.i;
                let mut j = self.i + 1;
                while j < self.s.len()
                    && matches!(self.s[j], b'0'..=b'9' | b'.' | b'e' | b'E' | b'+' | b'-')
                {
                    j += 1;
                }
                self.i = j.saturating_sub(1);
                "unexpected number literal".into()
            }
            Some(_) => {
                self.token_start = self.token_start.min(self.i);
                format!(
                    "invalid literal; last read: '{}'",
                    self.last_read(self.i + 1)
                )
            }
        }
    }

    fn value(&mut self, context: &str) -> std::result::Result<Value, String> {
        self.skip_ws();
        let Some(&c) = self.s.get(self.i) else {
            return Err(self.syntax_err(
                context,
                "unexpected end of input; expected '[', '{', or a literal",
            ));
        };
        match c {
            b'{' => self.object(),
            b'[' => self.array(),
            b'"' => {
                let bytes = self.string()?;
                match nul_byte_error(&bytes) {
                    Some(m) => Err(m),
                    None => Ok(Value::string(bytes)),
                }
            }
            b't' => self.literal(b"true", Value::Bool(true)),
            b'f' => self.literal(b"false", Value::Bool(false)),
            b'n' => self.literal(b"null", Value::Null),
            b'-' | b'0'..=b'9' => self.number(),
            _ => {
                let d = self.describe_next();
                if d.starts_with("invalid literal") {
                    return Err(self.syntax_err(context, &d));
                }
                Err(self.syntax_err(context, &format!("{d}; expected '[', '{{', or a literal")))
            }
        }
    }

    fn literal(&mut self, word: &[u8], v: Value) -> std::result::Result<Value, String> {
        self.token_start = self.i;
        for (k, &w) in word.iter().enumerate() {
            if self.s.get(self.i + k) != Some(&w) {
                let upto = self.i + k + 1;
                let lr = self.last_read(upto);
                self.i = upto.saturating_sub(1);
                return Err(self.err_at(
                    &format!(
                        "syntax error while parsing value - invalid literal; last read: '{lr}'"
                    ),
                    Some(upto),
                ));
            }
        }
        self.i += word.len();
        Ok(v)
    }

    fn number(&mut self) -> std::result::Result<Value, String> {
        let start = self.i;
        self.token_start = start;
        let mut j = self.i;
        if self.s[j] == b'-' {
            j += 1;
        }
        let bad = |p: &Self, j: usize, expected: &str| {
            // The offending character (or the end of input) was read.
            let upto = j + 1;
            p.err_at(
                &format!(
                    "syntax error while parsing value - invalid number; expected {expected}; last read: '{}'",
                    p.last_read(upto)
                ),
                Some(upto),
            )
        };
        let after = |p: &Self, j: usize| {
            format!(
                "digit after '{}'",
                p.s.get(j.saturating_sub(1))
                    .map(|c| *c as char)
                    .unwrap_or('-')
            )
        };
        let int_start = j;
        // JSON integers have no leading zeros: `01` is the number 0 followed by another token.
        if self.s.get(j) == Some(&b'0') {
            j += 1;
        } else {
            while j < self.s.len() && self.s[j].is_ascii_digit() {
                j += 1;
            }
        }
        if j == int_start {
            return Err(bad(self, j, &after(self, j)));
        }
        let mut is_float = false;
        if j < self.s.len() && self.s[j] == b'.' {
            is_float = true;
            j += 1;
            let f = j;
            while j < self.s.len() && self.s[j].is_ascii_digit() {
                j += 1;
            }
            if j == f {
                return Err(bad(self, j, &after(self, j)));
            }
        }
        if j < self.s.len() && matches!(self.s[j], b'e' | b'E') {
            is_float = true;
            j += 1;
            let signed = j < self.s.len() && matches!(self.s[j], b'+' | b'-');
            if signed {
                j += 1;
            }
            let f = j;
            while j < self.s.len() && self.s[j].is_ascii_digit() {
                j += 1;
            }
            if j == f {
                let expected = if signed {
                    "digit after exponent sign"
                } else {
                    "'+', '-', or digit after exponent"
                };
                return Err(bad(self, j, expected));
            }
        }
        let text = std::str::from_utf8(&self.s[start..j]).expect("ASCII digits");
        self.i = j;
        if !is_float {
            if let Ok(i) = text.parse::<i64>() {
                return Ok(Value::Int(i));
            }
            if !text.starts_with('-') && text.parse::<u64>().is_ok() {
                return Err(format!(
                    "unsigned json number {text} outside of Nix integer range"
                ));
            }
        }
        let f: f64 = text
            .parse()
            .map_err(|_| format!("invalid number '{text}'"))?;
        if f.is_infinite() {
            return Err(format!(
                "[json.exception.out_of_range.406] number overflow parsing '{text}'"
            ));
        }
        Ok(Value::Float(f))
    }

    fn hex4(&self, at: usize) -> Option<u32> {
        let h = self.s.get(at..at + 4)?;
        u32::from_str_radix(std::str::from_utf8(h).ok()?, 16).ok()
    }

    fn string(&mut self) -> std::result::Result<Vec<u8>, String> {
        self.token_start = self.i;
        let mut j = self.i + 1;
        let mut out = Vec::new();
        let invalid = |p: &Self, upto: usize, why: &str| {
            p.err_at(
                &format!(
                    "syntax error while parsing value - invalid string: {why}; last read: '{}'",
                    p.last_read(upto)
                ),
                Some(upto),
            )
        };
        loop {
            let Some(&c) = self.s.get(j) else {
                return Err(invalid(self, j + 1, "missing closing quote"));
            };
            match c {
                b'"' => {
                    self.i = j + 1;
                    return Ok(out);
                }
                b'\\' => {
                    let Some(&e) = self.s.get(j + 1) else {
                        return Err(invalid(self, j + 2, "missing closing quote"));
                    };
                    j += 2;
                    match e {
                        b'"' => out.push(b'"'),
                        b'\\' => out.push(b'\\'),
                        b'/' => out.push(b'/'),
                        b'b' => out.push(8),
                        b'f' => out.push(12),
                        b'n' => out.push(b'\n'),
                        b'r' => out.push(b'\r'),
                        b't' => out.push(b'\t'),
                        b'u' => {
                            let Some(mut cp) = self.hex4(j) else {
                                // nlohmann stops at the first non-hex character (or the end).
                                let k = (j..j + 4)
                                    .find(|&k| !self.s.get(k).is_some_and(u8::is_ascii_hexdigit))
                                    .unwrap_or(j + 4);
                                return Err(invalid(
                                    self,
                                    k + 1,
                                    "'\\u' must be followed by 4 hex digits",
                                ));
                            };
                            j += 4;
                            if (0xD800..0xDC00).contains(&cp) {
                                // As nlohmann: read `\`, then `u` (each only if the one
                                // before matched), then four hex digits, then check the range.
                                const PAIR: &str =
                                    "surrogate U+D800..U+DBFF must be followed by U+DC00..U+DFFF";
                                if self.s.get(j) != Some(&b'\\') {
                                    return Err(invalid(self, j + 1, PAIR));
                                }
                                if self.s.get(j + 1) != Some(&b'u') {
                                    return Err(invalid(self, j + 2, PAIR));
                                }
                                let Some(lo) = self.hex4(j + 2) else {
                                    let k = (j + 2..j + 6)
                                        .find(|&k| {
                                            !self.s.get(k).is_some_and(u8::is_ascii_hexdigit)
                                        })
                                        .unwrap_or(j + 6);
                                    return Err(invalid(
                                        self,
                                        k + 1,
                                        "'\\u' must be followed by 4 hex digits",
                                    ));
                                };
                                if !(0xDC00..0xE000).contains(&lo) {
                                    return Err(invalid(self, j + 6, PAIR));
                                }
                                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                                j += 6;
                            } else if (0xDC00..0xE000).contains(&cp) {
                                return Err(invalid(
                                    self,
                                    j,
                                    "surrogate U+DC00..U+DFFF must follow U+D800..U+DBFF",
                                ));
                            }
                            let ch = char::from_u32(cp).expect("surrogates handled above");
                            let mut buf = [0u8; 4];
                            out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
                        }
                        _ => {
                            return Err(invalid(self, j, "forbidden character after backslash"));
                        }
                    }
                }
                c if c < 0x20 => {
                    return Err(invalid(
                        self,
                        j + 1,
                        &format!(
                            "control character U+{c:04X} ({}) must be escaped to \\u{c:04X}{}",
                            control_name(c),
                            match c {
                                8 => " or \\b",
                                9 => " or \\t",
                                10 => " or \\n",
                                12 => " or \\f",
                                13 => " or \\r",
                                _ => "",
                            }
                        ),
                    ));
                }
                _ => {
                    // nlohmann validates UTF-8; invalid sequences are errors.
                    let len = utf8_len(&self.s[j..]);
                    if len == 0 {
                        return Err(invalid(self, j + 1, "ill-formed UTF-8 byte"));
                    }
                    out.extend_from_slice(&self.s[j..j + len]);
                    j += len;
                }
            }
        }
    }

    fn enter(&mut self) -> std::result::Result<(), String> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err("stack overflow (possible infinite recursion)".into());
        }
        Ok(())
    }

    fn array(&mut self) -> std::result::Result<Value, String> {
        self.enter()?;
        self.i += 1;
        let mut items = Vec::new();
        self.skip_ws();
        if self.s.get(self.i) == Some(&b']') {
            self.i += 1;
            self.depth -= 1;
            return Ok(Value::list(items));
        }
        loop {
            items.push(self.value("value")?);
            self.skip_ws();
            match self.s.get(self.i) {
                Some(b',') => {
                    self.i += 1;
                }
                Some(b']') => {
                    self.i += 1;
                    break;
                }
                _ => {
                    let d = self.describe_next();
                    return Err(self.syntax_err("array", &format!("{d}; expected ']'")));
                }
            }
        }
        self.depth -= 1;
        Ok(Value::list(items))
    }

    fn object(&mut self) -> std::result::Result<Value, String> {
        self.enter()?;
        self.i += 1;
        let mut attrs = Vec::new();
        self.skip_ws();
        if self.s.get(self.i) == Some(&b'}') {
            self.i += 1;
            self.depth -= 1;
            return Ok(Value::attrs(Attrs::default()));
        }
        loop {
            self.skip_ws();
            if self.s.get(self.i) != Some(&b'"') {
                let d = self.describe_next();
                return Err(self.syntax_err("object key", &format!("{d}; expected string literal")));
            }
            let k = self.string()?;
            if let Some(m) = nul_byte_error(&k) {
                return Err(m);
            }
            self.skip_ws();
            if self.s.get(self.i) != Some(&b':') {
                let d = self.describe_next();
                return Err(self.syntax_err("object separator", &format!("{d}; expected ':'")));
            }
            self.i += 1;
            let v = self.value("value")?;
            attrs.push(Attr {
                name: Symbol::intern_bytes(&k),
                value: v,
                pos: Pos::NONE,
            });
            self.skip_ws();
            match self.s.get(self.i) {
                Some(b',') => self.i += 1,
                Some(b'}') => {
                    self.i += 1;
                    break;
                }
                _ => {
                    let d = self.describe_next();
                    return Err(self.syntax_err("object", &format!("{d}; expected '}}'")));
                }
            }
        }
        self.depth -= 1;
        Ok(Value::attrs(Attrs::from_unsorted(attrs)))
    }
}

fn control_name(c: u8) -> &'static str {
    const NAMES: [&str; 32] = [
        "NUL", "SOH", "STX", "ETX", "EOT", "ENQ", "ACK", "BEL", "BS", "HT", "LF", "VT", "FF", "CR",
        "SO", "SI", "DLE", "DC1", "DC2", "DC3", "DC4", "NAK", "SYN", "ETB", "CAN", "EM", "SUB",
        "ESC", "FS", "GS", "RS", "US",
    ];
    NAMES.get(c as usize).copied().unwrap_or("?")
}

/// Length of the valid UTF-8 sequence at the start of `s` (0 if invalid).
fn utf8_len(s: &[u8]) -> usize {
    let n = match s.first() {
        Some(c) if *c < 0x80 => 1,
        Some(c) if (0xC2..0xE0).contains(c) => 2,
        Some(c) if (0xE0..0xF0).contains(c) => 3,
        Some(c) if (0xF0..0xF5).contains(c) => 4,
        _ => return 0,
    };
    match s.get(..n).map(std::str::from_utf8) {
        Some(Ok(_)) => n,
        _ => 0,
    }
}

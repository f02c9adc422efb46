//! `builtins.match` and `builtins.split`: POSIX extended regular expressions as Nix 2.26 runs
//! them (libstdc++'s `std::regex` with `std::regex::extended`).
//!
//! Why it exists: Nix's regex dialect and semantics differ from the `regex` crate's, so patterns
//! are parsed here as libstdc++'s ERE grammar (rejecting exactly what it rejects, e.g. `\d`, `a{,2}`,
//! `*a`) and translated to `regex-automata` syntax over bytes: every byte is matched as a byte
//! (no UTF-8 awareness, like `char` in C++), `.` matches any byte including newline, backslashes are
//! literal inside brackets, a quantifier after a quantifier applies to the quantified atom (`a+?` is
//! `(a+)?`, never lazy). Semantics: libstdc++ runs a depth-first search that keeps the LONGEST
//! overall match at the leftmost position, with the captures of the first path reaching that end.
//! We reproduce it by (1) finding the leftmost start (leftmost-first search), (2) the longest end
//! from that start (an anchored DFA with `MatchKind::All`), (3) the captures of the first
//! (leftmost-first priority) path spanning exactly that range. `match` is a whole-string match, so
//! only (3) is needed. Compiled regexes are cached per thread.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use regex_automata::hybrid::dfa::{Cache as DfaCache, DFA};
use regex_automata::meta::Regex;
use regex_automata::util::captures::Captures;
use regex_automata::{Anchored, Input, MatchKind};

use crate::builtins::Registry;
use crate::error::{EvalError, Result};
use crate::eval::Evaluator;
use crate::source::Pos;
use crate::value::Value;

pub(crate) fn register(r: &mut Registry) {
    r.primop("__match", 2, prim_match);
    r.primop("__split", 2, prim_split);
}

/// The translation of a POSIX ERE into `regex-syntax` syntax, or `None` if libstdc++ rejects it.
pub fn translate(re: &[u8]) -> Option<String> {
    let mut p = Parser {
        re,
        i: 0,
        groups: 0,
    };
    let out = p.alternation(0)?;
    if p.i != re.len() {
        return None;
    }
    Some(out)
}

struct Parser<'a> {
    re: &'a [u8],
    i: usize,
    groups: usize,
}

fn byte_lit(b: u8) -> String {
    format!("\\x{b:02X}")
}

/// Characters that may follow a backslash outside brackets (libstdc++'s extended special chars).
const ESCAPABLE: &[u8] = b".[\\()*+?{|^$";

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.re.get(self.i).copied()
    }

    fn alternation(&mut self, depth: usize) -> Option<String> {
        let mut out = self.branch(depth)?;
        while self.peek() == Some(b'|') {
            self.i += 1;
            out.push('|');
            out.push_str(&self.branch(depth)?);
        }
        Some(out)
    }

    fn branch(&mut self, depth: usize) -> Option<String> {
        let mut pieces: Vec<String> = Vec::new();
        // Whether the last piece can take a quantifier (an atom, not an anchor or nothing).
        let mut quantifiable = false;
        while let Some(c) = self.peek() {
            match c {
                b'|' => break,
                b')' => {
                    if depth == 0 {
                        return None;
                    }
                    break;
                }
                b'*' | b'+' | b'?' | b'{' => {
                    if !quantifiable {
                        return None;
                    }
                    self.i += 1;
                    let q = if c == b'{' {
                        self.interval()?
                    } else {
                        (c as char).to_string()
                    };
                    let last = pieces.pop().expect("quantifiable implies a piece");
                    pieces.push(format!("(?:{last}){q}"));
                }
                b'^' => {
                    self.i += 1;
                    pieces.push("^".into());
                    quantifiable = false;
                }
                b'$' => {
                    self.i += 1;
                    pieces.push("$".into());
                    quantifiable = false;
                }
                b'(' => {
                    self.i += 1;
                    self.groups += 1;
                    let inner = self.alternation(depth + 1)?;
                    if self.peek() != Some(b')') {
                        return None;
                    }
                    self.i += 1;
                    pieces.push(format!("({inner})"));
                    quantifiable = true;
                }
                b'.' => {
                    self.i += 1;
                    pieces.push("(?s-u:.)".into());
                    quantifiable = true;
                }
                b'[' => {
                    self.i += 1;
                    pieces.push(self.bracket()?);
                    quantifiable = true;
                }
                b'\\' => {
                    let n = *self.re.get(self.i + 1)?;
                    if !ESCAPABLE.contains(&n) {
                        return None;
                    }
                    self.i += 2;
                    pieces.push(byte_lit(n));
                    quantifiable = true;
                }
                _ => {
                    self.i += 1;
                    pieces.push(byte_lit(c));
                    quantifiable = true;
                }
            }
        }
        Some(pieces.concat())
    }

    /// Parses `{m}`, `{m,}`, `{m,n}` (after the `{`).
    fn interval(&mut self) -> Option<String> {
        let num = |p: &mut Self| -> Option<u32> {
            let start = p.i;
            while p.peek().is_some_and(|c| c.is_ascii_digit()) {
                p.i += 1;
            }
            if p.i == start {
                return None;
            }
            std::str::from_utf8(&p.re[start..p.i]).ok()?.parse().ok()
        };
        let m = num(self)?;
        let q = match self.peek()? {
            b'}' => format!("{{{m}}}"),
            b',' => {
                self.i += 1;
                if self.peek()? == b'}' {
                    format!("{{{m},}}")
                } else {
                    let n = num(self)?;
                    if n < m || self.peek()? != b'}' {
                        return None;
                    }
                    format!("{{{m},{n}}}")
                }
            }
            _ => return None,
        };
        self.i += 1; // '}'
        Some(q)
    }

    /// Parses a bracket expression (after the `[`) into a byte class.
    fn bracket(&mut self) -> Option<String> {
        let mut negate = false;
        if self.peek() == Some(b'^') {
            negate = true;
            self.i += 1;
        }
        let mut items: Vec<String> = Vec::new();
        let mut first = true;
        // The previous single character (a possible range start).
        let mut prev: Option<u8> = None;
        loop {
            let c = self.peek()?;
            if c == b']' && !first {
                self.i += 1;
                break;
            }
            first = false;
            if c == b'[' && matches!(self.re.get(self.i + 1), Some(b':' | b'.' | b'=')) {
                let kind = self.re[self.i + 1];
                let start = self.i + 2;
                let mut j = start;
                while j + 1 < self.re.len() && !(self.re[j] == kind && self.re[j + 1] == b']') {
                    j += 1;
                }
                if j + 1 >= self.re.len() {
                    return None;
                }
                let name = &self.re[start..j];
                self.i = j + 2;
                match kind {
                    b':' => {
                        items.push(class_ranges(name)?.to_string());
                        // A class cannot start or end a range.
                        if self.peek() == Some(b'-') && self.re.get(self.i + 1) != Some(&b']') {
                            return None;
                        }
                        prev = None;
                    }
                    _ => {
                        // Collating element / equivalence class: single characters only.
                        if name.len() != 1 {
                            return None;
                        }
                        items.push(byte_lit(name[0]));
                        prev = Some(name[0]);
                    }
                }
                continue;
            }
            if c == b'-' && prev.is_some() && self.re.get(self.i + 1).is_some_and(|n| *n != b']') {
                // A range prev-end.
                self.i += 1;
                let mut end = self.peek()?;
                if end == b'[' && self.re.get(self.i + 1) == Some(&b'.') {
                    let start = self.i + 2;
                    if self.re.get(start + 1) != Some(&b'.')
                        || self.re.get(start + 2) != Some(&b']')
                    {
                        return None;
                    }
                    end = self.re[start];
                    self.i = start + 3;
                } else if end == b'[' && self.re.get(self.i + 1) == Some(&b':') {
                    return None;
                } else {
                    self.i += 1;
                }
                let lo = prev.take().expect("checked above");
                if end < lo {
                    return None;
                }
                items.pop();
                items.push(format!("{}-{}", byte_lit(lo), byte_lit(end)));
                continue;
            }
            self.i += 1;
            items.push(byte_lit(c));
            prev = Some(c);
        }
        if items.is_empty() {
            return None;
        }
        Some(format!(
            "(?-u:[{}{}])",
            if negate { "^" } else { "" },
            items.concat()
        ))
    }
}

/// Byte ranges of a character class name in the C locale (as libstdc++'s `lookup_classname`).
fn class_ranges(name: &[u8]) -> Option<&'static str> {
    Some(match name {
        b"alpha" => r"A-Za-z",
        b"digit" | b"d" => r"0-9",
        b"alnum" => r"0-9A-Za-z",
        b"upper" => r"A-Z",
        b"lower" => r"a-z",
        b"space" | b"s" => r"\t\n\x0B\x0C\r ",
        b"blank" => r"\t ",
        b"punct" => r"!-/:-@\[-`{-~",
        b"print" => r"\x20-\x7E",
        b"graph" => r"\x21-\x7E",
        b"cntrl" => r"\x00-\x1F\x7F",
        b"xdigit" => r"0-9A-Fa-f",
        b"w" => r"0-9A-Za-z_",
        _ => return None,
    })
}

/// A compiled Nix regex.
pub struct Compiled {
    /// `(?:re)`, leftmost-first: finds the leftmost start.
    search: Regex,
    /// `(?:re)\z`, leftmost-first: captures of a match ending exactly at the haystack end.
    to_end: Regex,
    /// `(?:re)` as a lazy DFA reporting the longest match (anchored searches).
    longest: DFA,
    longest_cache: RefCell<DfaCache>,
    groups: usize,
}

thread_local! {
    static CACHE: RefCell<HashMap<Vec<u8>, Option<Rc<Compiled>>>> = RefCell::new(HashMap::new());
}

fn build(re: &[u8]) -> Option<Compiled> {
    let t = translate(re)?;
    let syntax = regex_automata::util::syntax::Config::new()
        .unicode(false)
        .utf8(false);
    let meta_cfg = Regex::config().utf8_empty(false);
    let search = Regex::builder()
        .syntax(syntax)
        .configure(meta_cfg.clone())
        .build(&format!("(?:{t})"))
        .ok()?;
    let to_end = Regex::builder()
        .syntax(syntax)
        .configure(meta_cfg)
        .build(&format!("(?:{t})\\z"))
        .ok()?;
    let longest = DFA::builder()
        .syntax(syntax)
        .configure(DFA::config().match_kind(MatchKind::All))
        .build(&format!("(?:{t})"))
        .ok()?;
    let longest_cache = RefCell::new(longest.create_cache());
    let groups = search
        .group_info()
        .group_len(regex_automata::PatternID::ZERO)
        - 1;
    Some(Compiled {
        search,
        to_end,
        longest,
        longest_cache,
        groups,
    })
}

/// Compiles (or fetches from the cache) `re`, failing with Nix's message.
pub fn compile(re: &[u8], pos: Pos) -> Result<Rc<Compiled>> {
    let c = CACHE.with(|c| {
        let mut c = c.borrow_mut();
        if let Some(x) = c.get(re) {
            return x.clone();
        }
        // The thread keeps compiled expressions: allocated apart from the evaluation's values.
        crate::alloc::long_lived(|| {
            let x = build(re).map(Rc::new);
            c.insert(re.to_vec(), x.clone());
            x
        })
    });
    c.ok_or_else(|| {
        EvalError::eval(format!(
            "invalid regular expression '{}'",
            String::from_utf8_lossy(re)
        ))
        .at(pos)
    })
}

impl Compiled {
    /// Captures of the first path matching exactly `hay[start..end]` (None if there is none).
    fn captures_exact(&self, hay: &[u8], start: usize, end: usize) -> Option<Captures> {
        let mut caps = self.to_end.create_captures();
        let input = Input::new(&hay[..end])
            .range(start..end)
            .anchored(Anchored::Yes);
        self.to_end.search_captures(&input, &mut caps);
        caps.is_match().then_some(caps)
    }

    /// The longest match end for a match starting at `start`.
    fn longest_end(&self, hay: &[u8], start: usize) -> Option<usize> {
        let input = Input::new(hay).range(start..).anchored(Anchored::Yes);
        let mut cache = self.longest_cache.borrow_mut();
        match self.longest.try_search_fwd(&mut cache, &input) {
            Ok(Some(hm)) => Some(hm.offset()),
            Ok(None) => None,
            // The lazy DFA gave up: fall back to the leftmost-first end.
            Err(_) => self.search.search(&input).map(|m| m.end()),
        }
    }

    /// The next match at or after `from` (Nix's regex_search): (start, end, captures).
    fn find_at(&self, hay: &[u8], from: usize, not_null: bool) -> Option<(usize, usize, Captures)> {
        let mut at = from;
        while at <= hay.len() {
            let input = Input::new(hay).range(at..);
            let m = self.search.search(&input)?;
            let s = m.start();
            let e = self.longest_end(hay, s).unwrap_or(m.end());
            if not_null && s == from && e == s {
                // An empty match where a non-empty one is required: try the next position.
                at = s + 1;
                continue;
            }
            let caps = self.captures_exact(hay, s, e)?;
            return Some((s, e, caps));
        }
        None
    }
}

fn group_values(hay: &[u8], caps: &Captures, groups: usize) -> Vec<Value> {
    (1..=groups)
        .map(|g| match caps.get_group(g) {
            Some(span) => Value::string(hay[span.start..span.end].to_vec()),
            None => Value::Null,
        })
        .collect()
}

fn prim_match(ev: &mut Evaluator, pos: Pos, args: &[Value]) -> Result<Value> {
    let re = ev.force_string_no_ctx(
        &args[0],
        pos,
        "while evaluating the first argument passed to builtins.match",
    )?;
    let c = compile(&re.bytes, pos)?;
    let s = ev.force_string(
        &args[1],
        pos,
        "while evaluating the second argument passed to builtins.match",
    )?;
    match c.captures_exact(&s.bytes, 0, s.bytes.len()) {
        None => Ok(Value::Null),
        Some(caps) => Ok(Value::list(group_values(&s.bytes, &caps, c.groups))),
    }
}

fn prim_split(ev: &mut Evaluator, pos: Pos, args: &[Value]) -> Result<Value> {
    let re = ev.force_string_no_ctx(
        &args[0],
        pos,
        "while evaluating the first argument passed to builtins.split",
    )?;
    let c = compile(&re.bytes, pos)?;
    let s = ev.force_string(
        &args[1],
        pos,
        "while evaluating the second argument passed to builtins.split",
    )?;
    let hay: &[u8] = &s.bytes;
    let mut out = Vec::new();
    let mut prev_end = 0;
    let mut from = 0;
    let mut not_null = false;
    // Like std::regex_iterator: after an empty match, retry at the same place requiring a
    // non-empty match, else move on by one.
    while from <= hay.len() {
        let Some((ms, me, caps)) = c.find_at(hay, from, not_null) else {
            break;
        };
        out.push(Value::string(hay[prev_end..ms].to_vec()));
        out.push(Value::list(group_values(hay, &caps, c.groups)));
        prev_end = me;
        if me == ms {
            from = me;
            not_null = true;
        } else {
            from = me;
            not_null = false;
        }
    }
    if out.is_empty() {
        return Ok(Value::list(vec![args[1].clone()]));
    }
    out.push(Value::string(hay[prev_end..].to_vec()));
    Ok(Value::list(out))
}

#[cfg(test)]
mod tests {
    use super::translate;

    #[test]
    fn rejects_like_libstdcxx() {
        for bad in [
            &b"\\d"[..],
            b"*a",
            b"a{,2}",
            b"[[:foo:]]",
            b"a{2",
            b"(a",
            b"a)",
            b"[z-a]",
            b"\\}",
        ] {
            assert!(translate(bad).is_none(), "{}", String::from_utf8_lossy(bad));
        }
        for good in [
            &b"a**"[..],
            b"(|a)",
            b"a+?",
            b"[]a]",
            b"[a-]",
            b"\\{",
            b"$a",
            b"}",
            b"]",
        ] {
            assert!(
                translate(good).is_some(),
                "{}",
                String::from_utf8_lossy(good)
            );
        }
    }
}

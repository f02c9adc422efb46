//! The evaluator's single error type and its rendering.
//!
//! An [`EvalError`] carries a kind (deciding whether `tryEval` may catch it), Nix's message, an
//! optional position and the trace frames added while it propagated (innermost first). Invariant:
//! [`EvalError::render`] produces byte-for-byte what `nix eval` (without `--show-trace`) prints on
//! stderr for the same error, including the frame truncation and duplicate-frame rules.

use std::collections::BTreeSet;

use crate::source::{self, Pos};

/// What kind of error this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// `throw` (catchable by `tryEval`).
    Throw,
    /// A failed `assert` (catchable by `tryEval`).
    Assertion,
    /// `abort`.
    Abort,
    /// A type error.
    Type,
    /// Any other evaluation error.
    Eval,
    /// A parse / lowering error.
    Parse,
    /// An undefined variable (reported before evaluation).
    UndefinedVar,
    /// Infinite recursion (a thunk forced while being evaluated).
    InfiniteRecursion,
    /// Call depth exceeded.
    StackOverflow,
    /// The native stack would overflow (Nix's "stack overflow (possible infinite recursion)",
    /// reported without any trace frames).
    NativeStackOverflow,
    /// The caller asked to stop.
    Interrupted,
    /// Reading a file failed, or access was denied.
    Io,
    /// Nix's `UsageError` (e.g. an unknown hash algorithm or format): after the error, `nix`
    /// prints "Try 'nix --help' for more information.".
    Usage,
}

impl ErrorKind {
    /// Whether `builtins.tryEval` catches this kind.
    pub fn catchable(self) -> bool {
        matches!(self, ErrorKind::Throw | ErrorKind::Assertion)
    }
}

/// One `… while …` frame.
#[derive(Debug, Clone)]
pub struct Frame {
    pub msg: String,
    pub pos: Pos,
    /// Printed even when the trace is truncated (Nix's `TracePrint::Always`).
    pub always: bool,
}

#[derive(Debug, Clone)]
pub struct ErrorInner {
    pub kind: ErrorKind,
    pub msg: String,
    pub pos: Pos,
    /// Innermost first.
    pub trace: Vec<Frame>,
    /// "Did you mean …?" candidates.
    pub suggestions: Vec<String>,
}

/// An evaluation error (boxed so that `Result<Value, EvalError>` stays small).
#[derive(Debug, Clone)]
pub struct EvalError(pub Box<ErrorInner>);

/// Result alias used throughout the evaluator.
pub type Result<T> = std::result::Result<T, EvalError>;

impl EvalError {
    /// Nix's native stack overflow error (no frames, no position).
    pub fn native_stack_overflow() -> EvalError {
        EvalError::new(
            ErrorKind::NativeStackOverflow,
            "stack overflow (possible infinite recursion)",
        )
    }
    pub fn new(kind: ErrorKind, msg: impl Into<String>) -> EvalError {
        EvalError(Box::new(ErrorInner {
            kind,
            msg: msg.into(),
            pos: Pos::NONE,
            trace: Vec::new(),
            suggestions: Vec::new(),
        }))
    }
    /// A generic evaluation error (`EvalError` in Nix).
    pub fn eval(msg: impl Into<String>) -> EvalError {
        EvalError::new(ErrorKind::Eval, msg)
    }
    /// A type error (`TypeError` in Nix).
    pub fn type_error(msg: impl Into<String>) -> EvalError {
        EvalError::new(ErrorKind::Type, msg)
    }
    pub fn kind(&self) -> ErrorKind {
        self.0.kind
    }
    pub fn msg(&self) -> &str {
        &self.0.msg
    }
    /// Sets the error's own position (Nix's `atPos`).
    pub fn at(mut self, pos: Pos) -> EvalError {
        self.0.pos = pos;
        self
    }
    /// Sets the position only if none is set yet.
    pub fn at_if_none(mut self, pos: Pos) -> EvalError {
        if self.0.pos.is_none() {
            self.0.pos = pos;
        }
        self
    }
    /// Adds an outer trace frame (Nix's `addTrace` / `withTrace`).
    pub fn with_trace(mut self, pos: Pos, msg: impl Into<String>) -> EvalError {
        if self.0.kind == ErrorKind::NativeStackOverflow {
            return self;
        }
        self.0.trace.push(Frame {
            msg: msg.into(),
            always: false,
            pos,
        });
        self
    }
    /// Adds a frame that survives truncation (Nix's `TracePrint::Always`).
    pub fn with_trace_always(mut self, pos: Pos, msg: impl Into<String>) -> EvalError {
        if self.0.kind == ErrorKind::NativeStackOverflow {
            return self;
        }
        self.0.trace.push(Frame {
            msg: msg.into(),
            pos,
            always: true,
        });
        self
    }
    pub fn with_suggestions(mut self, s: Vec<String>) -> EvalError {
        self.0.suggestions = s;
        self
    }

    /// Renders as `nix` prints it on stderr (ends with a newline).
    pub fn render(&self) -> String {
        let e = &self.0;
        let mut oss = String::new();
        if !e.trace.is_empty() {
            let mut seen: BTreeSet<(String, String)> = BTreeSet::new();
            let mut skipped: Vec<&Frame> = Vec::new();
            let mut count = 0usize;
            let mut truncate = false;
            for t in e.trace.iter().rev() {
                if t.msg.is_empty() {
                    continue;
                }
                if count > 3 {
                    truncate = true;
                }
                if !truncate || t.always {
                    let key = (source::pos_string(t.pos), t.msg.clone());
                    if seen.contains(&key) {
                        skipped.push(t);
                        continue;
                    }
                    seen.insert(key);
                    print_skipped(&mut oss, &mut count, &mut skipped, &mut seen);
                    count += 1;
                    print_trace(&mut oss, &mut count, t);
                }
            }
            print_skipped(&mut oss, &mut count, &mut skipped, &mut seen);
            if truncate {
                oss.push_str(
                    "\n(stack trace truncated; use '--show-trace' to show the full, detailed trace)\n",
                );
            }
            oss.push_str("\nerror: ");
        }
        oss.push_str(&e.msg);
        oss.push('\n');
        source::render_pos(&mut oss, "", e.pos);
        if !e.suggestions.is_empty() {
            oss.push_str(&format!("Did you mean {}?\n", english_or(&e.suggestions)));
        }
        let mut out = filter_ansi_escapes(&indent("error: ", "       ", chomp(&oss)));
        out.push('\n');
        if e.kind == ErrorKind::Usage {
            out.push_str("Try 'nix --help' for more information.\n");
        }
        out
    }
}

/// What Nix's logger does to every message it writes to a stderr that is not a terminal
/// (`filterANSIEscapes(s, filterAll = true)`): escape sequences (CSI and two-byte ones) are
/// removed, `\r` and `\a` dropped, and a tab becomes spaces up to the next multiple of 8 of the
/// number of characters written so far in the whole message (not per line, as Nix counts).
pub fn filter_ansi_escapes(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut width = 0usize;
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\u{1b}' => {
                if chars.peek() == Some(&'[') {
                    chars.next();
                    while chars
                        .next_if(|c| ('\u{30}'..='\u{3f}').contains(c))
                        .is_some()
                    {}
                    while chars
                        .next_if(|c| ('\u{20}'..='\u{2f}').contains(c))
                        .is_some()
                    {}
                    chars.next_if(|c| ('\u{40}'..='\u{7e}').contains(c));
                } else {
                    chars.next_if(|c| ('\u{40}'..='\u{5f}').contains(c));
                }
            }
            '\t' => {
                out.push(' ');
                width += 1;
                while !width.is_multiple_of(8) {
                    out.push(' ');
                    width += 1;
                }
            }
            '\r' | '\u{7}' => {}
            c => {
                out.push(c);
                width += 1;
            }
        }
    }
    out
}

fn english_or(s: &[String]) -> String {
    if s.len() == 1 {
        return s[0].clone();
    }
    let (last, init) = s.split_last().expect("non-empty");
    format!("one of {} or {}", init.join(", "), last)
}

fn print_trace(oss: &mut String, count: &mut usize, t: &Frame) {
    oss.push_str("\n… ");
    oss.push_str(&t.msg);
    oss.push('\n');
    if source::render_pos(oss, "  ", t.pos) {
        *count += 1;
    }
}

fn print_skipped(
    oss: &mut String,
    count: &mut usize,
    skipped: &mut Vec<&Frame>,
    seen: &mut BTreeSet<(String, String)>,
) {
    if !skipped.is_empty() {
        if skipped.len() <= 5 {
            for t in skipped.iter() {
                print_trace(oss, count, t);
            }
        } else {
            oss.push_str(&format!("\n({} duplicate frames omitted)\n", skipped.len()));
            seen.clear();
        }
    }
    skipped.clear();
}

fn chomp(s: &str) -> &str {
    s.trim_end_matches([' ', '\n', '\r', '\t'])
}

fn indent(first: &str, rest: &str, s: &str) -> String {
    let mut res = String::new();
    for (i, line) in s.split('\n').enumerate() {
        if i > 0 {
            res.push('\n');
        }
        let l = format!("{}{}", if i == 0 { first } else { rest }, line);
        res.push_str(chomp(&l));
    }
    res
}

impl std::fmt::Display for EvalError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0.msg)
    }
}

impl std::error::Error for EvalError {}

/// Nix's suggestion ranking (`Suggestions::bestMatches` + `trim`): Levenshtein distance, best
/// first, ties by name, at most 5, distance at most 2.
pub fn best_matches(candidates: &[String], query: &str) -> Vec<String> {
    let mut scored: Vec<(usize, &String)> = candidates
        .iter()
        .map(|c| (levenshtein(query.as_bytes(), c.as_bytes()), c))
        .filter(|(d, _)| *d <= 2)
        .collect();
    scored.sort();
    scored.into_iter().take(5).map(|(_, s)| s.clone()).collect()
}

fn levenshtein(a: &[u8], b: &[u8]) -> usize {
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for i in 1..=a.len() {
        cur[0] = i;
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            cur[j] = (prev[j] + 1).min(cur[j - 1] + 1).min(prev[j - 1] + cost);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::filter_ansi_escapes;

    /// Expected texts from Nix 2.26 writing to a pipe (`nix eval … 2>&1 | od -c`).
    #[test]
    fn ansi_escapes_are_filtered_like_nixs_logger() {
        // builtins.trace "t${ESC}[1mx${ESC}[0m\ty"
        assert_eq!(
            filter_ansi_escapes("trace: t\u{1b}[1mx\u{1b}[0m\ty"),
            "trace: tx       y"
        );
        // throw "a\tb\rc" (tab counted from the start of the message; CR dropped)
        assert_eq!(filter_ansi_escapes("error: a\tbc\r"), "error: a        bc");
        assert_eq!(filter_ansi_escapes("plain ✓ text"), "plain ✓ text");
        assert_eq!(filter_ansi_escapes("x\u{1b}Dy"), "xy");
    }
}

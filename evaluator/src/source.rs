//! Source texts and positions.
//!
//! Every parsed text (file or `--expr` string) is registered in a thread-local table; a [`Pos`] is
//! a (file index, byte offset) pair that is resolved to Nix's line/column only when an error or
//! `__curPos` needs it. Invariant: a `Pos` always refers to a registered source, and line/column
//! are computed exactly as Nix does (`\n`, `\r\n` and a lone `\r` each end a line; columns count
//! bytes of the original text, 1-based).
//!
//! A source belongs to the evaluation that registered it and is forgotten when that evaluation
//! ends ([`clear`]) or is rolled back past it ([`forget_since`]), unless it is *pinned*: the
//! thread's cache of lowered sources ([`lowered`]) pins the sources its cached trees point into, so
//! their positions keep resolving in later evaluations. File numbers are never reused, so a
//! position naming a forgotten source prints without a file instead of naming another file.
//!
//! rnix only accepts `&str`, so a source that is not valid UTF-8 is mapped losslessly before
//! parsing: each invalid byte `b` becomes the private-use character `U+10FF00 + b`, which
//! [`unmap_bytes`] turns back into the raw byte when a literal becomes a Nix string.

use std::cell::RefCell;
use std::rc::Rc;

pub mod lowered;

/// First code point of the range used to carry non-UTF-8 bytes through rnix.
const BYTE_MAP_BASE: u32 = 0x10FF00;

/// A source position: registered file index (1-based; 0 = none) and byte offset in the mapped text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Pos {
    pub file: u32,
    pub offset: u32,
}

impl Pos {
    pub const NONE: Pos = Pos { file: 0, offset: 0 };
    pub fn is_none(self) -> bool {
        self.file == 0
    }
}

/// Where a source came from, as Nix prints it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Origin {
    /// `--expr` text: printed `«string»`.
    String,
    /// A file path.
    File(String),
}

/// A registered source text.
#[derive(Debug)]
pub struct Source {
    pub origin: Origin,
    /// The text handed to rnix (UTF-8; invalid bytes mapped).
    pub text: Rc<str>,
    /// Mapped offsets of every mapped (non-UTF-8) byte, ascending.
    mapped: Vec<u32>,
    /// Byte offsets (in `text`) where each line starts: computed the first time a position in
    /// this source is resolved (most sources never print one).
    line_starts: std::cell::OnceCell<Vec<u32>>,
}

/// One registered file number.
#[derive(Debug)]
struct Slot {
    /// `None` once forgotten.
    src: Option<Rc<Source>>,
    /// Kept across evaluations and rollbacks (the lowered-source cache points into it).
    pinned: bool,
}

thread_local! {
    /// Registered sources by file number - 1.
    static SOURCES: RefCell<Vec<Slot>> = const { RefCell::new(Vec::new()) };
}

/// Converts raw bytes to the text rnix parses (see module docs).
pub fn map_bytes(raw: &[u8]) -> (String, Vec<u32>) {
    match std::str::from_utf8(raw) {
        Ok(s) => (s.to_string(), Vec::new()),
        Err(_) => {
            let mut out = String::with_capacity(raw.len() + 16);
            let mut mapped = Vec::new();
            let mut rest = raw;
            loop {
                match std::str::from_utf8(rest) {
                    Ok(s) => {
                        out.push_str(s);
                        break;
                    }
                    Err(e) => {
                        let good = e.valid_up_to();
                        out.push_str(
                            std::str::from_utf8(&rest[..good]).expect("checked valid prefix"),
                        );
                        let bad = e.error_len().unwrap_or(rest.len() - good);
                        for &b in &rest[good..good + bad] {
                            mapped.push(out.len() as u32);
                            out.push(
                                char::from_u32(BYTE_MAP_BASE + b as u32)
                                    .expect("private use range is valid"),
                            );
                        }
                        rest = &rest[good + bad..];
                    }
                }
            }
            (out, mapped)
        }
    }
}

/// Turns mapped text back into the original bytes.
pub fn unmap_bytes(s: &str) -> Vec<u8> {
    if !s.chars().any(|c| (c as u32) >= BYTE_MAP_BASE) {
        return s.as_bytes().to_vec();
    }
    let mut out = Vec::with_capacity(s.len());
    for c in s.chars() {
        let u = c as u32;
        if (BYTE_MAP_BASE..BYTE_MAP_BASE + 0x100).contains(&u) {
            out.push((u - BYTE_MAP_BASE) as u8);
        } else {
            let mut buf = [0u8; 4];
            out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
        }
    }
    out
}

/// Registers a source and returns its file index.
pub fn register(origin: Origin, raw: &[u8]) -> (u32, Rc<str>) {
    let (text, mapped) = map_bytes(raw);
    let text: Rc<str> = Rc::from(text);
    let src = Rc::new(Source {
        origin,
        text: text.clone(),
        mapped,
        line_starts: std::cell::OnceCell::new(),
    });
    let idx = SOURCES.with(|s| {
        let mut s = s.borrow_mut();
        s.push(Slot {
            src: Some(src),
            pinned: false,
        });
        s.len() as u32
    });
    (idx, text)
}

impl Source {
    /// Byte offsets where each line starts (`\n`, `\r\n` and a lone `\r` end a line).
    fn line_starts(&self) -> &[u32] {
        self.line_starts.get_or_init(|| {
            let bytes = self.text.as_bytes();
            let mut line_starts = vec![0u32];
            let mut i = 0;
            while i < bytes.len() {
                match bytes[i] {
                    b'\r' => {
                        if i + 1 < bytes.len() && bytes[i + 1] == b'\n' {
                            i += 1;
                        }
                        line_starts.push(i as u32 + 1);
                    }
                    b'\n' => line_starts.push(i as u32 + 1),
                    _ => {}
                }
                i += 1;
            }
            line_starts
        })
    }
}

/// Looks up a registered source.
pub fn source(file: u32) -> Option<Rc<Source>> {
    if file == 0 {
        return None;
    }
    SOURCES.with(|s| {
        s.borrow()
            .get(file as usize - 1)
            .and_then(|slot| slot.src.clone())
    })
}

/// Pins (`true`) or unpins a registered source: a pinned source outlives the evaluation that
/// registered it; an unpinned one is forgotten with its evaluation again.
pub(crate) fn set_pinned(file: u32, pinned: bool) {
    if file == 0 {
        return;
    }
    SOURCES.with(|s| {
        if let Some(slot) = s.borrow_mut().get_mut(file as usize - 1) {
            slot.pinned = pinned;
        }
    });
}

/// How many sources this thread has registered so far: a mark for [`forget_since`].
pub fn mark() -> usize {
    SOURCES.with(|s| s.borrow().len())
}

/// Frees the texts of the unpinned sources registered after `mark`, for an evaluation rolled
/// back to that point (nothing refers to them any more). Their numbers are not reused: a
/// position that still named one would print without a file instead of naming another file.
pub fn forget_since(mark: usize) {
    forget_unpinned(mark);
}

fn forget_unpinned(from: usize) {
    let forgotten: Vec<Rc<Source>> = SOURCES.with(|s| {
        let mut s = s.borrow_mut();
        s.iter_mut()
            .skip(from)
            .filter(|slot| !slot.pinned)
            .filter_map(|slot| slot.src.take())
            .collect()
    });
    drop(forgotten);
}

/// Bytes of source text this thread holds.
pub fn text_bytes() -> usize {
    SOURCES.with(|s| {
        s.borrow()
            .iter()
            .filter_map(|slot| slot.src.as_ref())
            .map(|src| src.text.len())
            .sum()
    })
}

/// Forgets the sources of the evaluation that ended: every source of this thread but those the
/// lowered-source cache pins (see [`lowered::end_evaluation`], which also trims that cache).
pub fn clear() {
    forget_unpinned(0);
}

/// A resolved position.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub origin: Origin,
    pub line: u32,
    pub column: u32,
    pub src: Rc<Source>,
}

impl Source {
    /// Line (1-based) and column (1-based, in original bytes) of a mapped offset.
    pub fn line_col(&self, offset: u32) -> (u32, u32) {
        let line_idx = match self.line_starts().binary_search(&offset) {
            Ok(i) => i,
            Err(i) => i - 1,
        };
        let start = self.line_starts()[line_idx];
        let col = offset - start + 1;
        // Each mapped byte occupies 4 bytes of mapped text but 1 of the original.
        let lo = self.mapped.partition_point(|&m| m < start);
        let hi = self.mapped.partition_point(|&m| m < offset);
        let col = col - 3 * (hi - lo) as u32;
        (line_idx as u32 + 1, col)
    }

    /// The text of line `line` (1-based), without its terminator, with mapped bytes shown lossily.
    pub fn line_text(&self, line: u32) -> Option<String> {
        if self.text.is_empty() {
            return None;
        }
        let i = line.checked_sub(1)? as usize;
        let start = *self.line_starts().get(i)? as usize;
        let bytes = self.text.as_bytes();
        let mut end = start;
        while end < bytes.len() && bytes[end] != b'\n' && bytes[end] != b'\r' {
            end += 1;
        }
        let raw = unmap_bytes(&self.text[start..end]);
        Some(String::from_utf8_lossy(&raw).into_owned())
    }

    pub fn origin_name(&self) -> String {
        match &self.origin {
            Origin::String => "«string»".to_string(),
            Origin::File(p) => p.clone(),
        }
    }
}

/// Resolves a position to file name, line and column.
pub fn resolve(pos: Pos) -> Option<Resolved> {
    let src = source(pos.file)?;
    let (line, column) = src.line_col(pos.offset);
    Some(Resolved {
        origin: src.origin.clone(),
        line,
        column,
        src,
    })
}

/// `FILE:LINE:COL` as Nix prints a position inside a message.
pub fn pos_string(pos: Pos) -> String {
    match resolve(pos) {
        Some(r) => format!("{}:{}:{}", r.src.origin_name(), r.line, r.column),
        None => "«none»".to_string(),
    }
}

/// Appends Nix's `at FILE:L:C:` block with code lines (prefix `indent`) to `out`; returns
/// whether a position was printed.
pub fn render_pos(out: &mut String, indent: &str, pos: Pos) -> bool {
    let Some(r) = resolve(pos) else { return false };
    out.push_str(indent);
    out.push_str(&format!(
        "at {}:{}:{}:",
        r.src.origin_name(),
        r.line,
        r.column
    ));
    if r.line > 1
        && let Some(prev) = r.src.line_text(r.line - 1)
    {
        out.push_str(&format!("\n {:>5}| {}", r.line - 1, prev));
    }
    if let Some(cur) = r.src.line_text(r.line) {
        out.push_str(&format!("\n {:>5}| {}", r.line, cur));
        if r.column > 0 {
            out.push_str("\n      |");
            for _ in 0..r.column {
                out.push(' ');
            }
            out.push('^');
        }
    }
    if let Some(next) = r.src.line_text(r.line + 1) {
        out.push_str(&format!("\n {:>5}| {}", r.line + 1, next));
    }
    out.push('\n');
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_utf8_roundtrip() {
        let raw = b"\"a\xff\xfeb\"";
        let (text, mapped) = map_bytes(raw);
        assert_eq!(mapped.len(), 2);
        assert_eq!(unmap_bytes(&text), raw.to_vec());
    }

    #[test]
    fn cr_lines() {
        let (f, _) = register(Origin::String, b"a\r\nb\rc\nd");
        let s = source(f).expect("registered");
        assert_eq!(s.line_col(0), (1, 1));
        assert_eq!(s.line_col(3), (2, 1));
        assert_eq!(s.line_col(5), (3, 1));
        assert_eq!(s.line_col(7), (4, 1));
        assert_eq!(s.line_text(2).as_deref(), Some("b"));
    }
}

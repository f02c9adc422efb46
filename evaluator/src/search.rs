//! `nix search`: walks a flake's package sets and matches derivations against regular
//! expressions, with Nix 2.26's traversal, matching and output rules.
//!
//! Traversal (as Nix's `CmdSearch`): from each existing root attribute path, derivations are
//! matched; attribute sets are entered at the roots themselves, at `packages.<system>` and
//! `legacyPackages.<system>` depth, and below `legacyPackages` only where
//! `recurseForDerivations = true`. Evaluation errors below `legacyPackages` skip the attribute;
//! elsewhere they are the command's error. Attributes are visited in name order.
//!
//! Matching: every regular expression (extended syntax, case-insensitive) must match the
//! attribute path, the derivation's name (without version) or its description (newlines
//! turned into spaces); a match of any exclusion regex hides the package. The rendered text
//! highlights every match exactly as Nix does, ANSI escapes included (Nix prints them even when
//! standard output is not a terminal).
//!
//! Index: the walk does not depend on the regular expressions (Nix forces the name and
//! description of every visited derivation before matching), so it is done once per set of
//! roots into a [`SearchIndex`] — attribute path, parsed name and description of every package,
//! in Nix's order — and every search, first or repeated, only runs its regexes over the index.
//! The index is plain data (`Send + Sync`, no evaluator values) with a text encoding, so that
//! the daemon can keep it beside a warm flake and in the eval cache on disk.
//!
//! Invariant: nothing is forced that `nix search` would not force — the `name`, `type`,
//! `meta.description` and `recurseForDerivations` of the visited attributes only — and a search
//! over an index prints exactly what a search over the values it was built from prints.

use regex_automata::meta::Regex;
use regex_automata::util::syntax;

use crate::builtins::stringsextra::parse_drv_name;
use crate::error::{ErrorKind, EvalError};
use crate::eval::Evaluator;
use crate::flake::commands::{installable_attr_paths, show_attr_paths};
use crate::source::Pos;
use crate::symbol::Symbol;
use crate::value::{Attrs, Value};

const BOLD: &str = "\x1b[0;1m";
const GREEN: &str = "\x1b[32;1m";
const NORMAL: &str = "\x1b[0m";

/// One package found by a search.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchHit {
    /// The attribute path from the flake's outputs (`legacyPackages.x86_64-linux.hello`).
    pub attr_path: String,
    /// The derivation name without its version (`parseDrvName`).
    pub pname: String,
    /// The version part of the name (`""` when none).
    pub version: String,
    /// `meta.description` with newlines turned into spaces (`""` when none).
    pub description: String,
    /// Exactly the lines `nix search` prints for this package (highlighted, newline-terminated;
    /// without the empty line Nix prints between two packages).
    pub rendered: String,
}

/// Compiled search terms.
#[derive(Debug, Clone)]
pub struct SearchQuery {
    regexes: Vec<Regex>,
    excludes: Vec<Regex>,
    /// For each regex that is a plain ASCII literal: a case-sensitive regex of its lowercase
    /// form, to find candidates in an index's [`Haystack`] in one scan.
    literals: Vec<Regex>,
}

/// The lowercase form of `re` when it is a plain ASCII literal (no metacharacter, no newline),
/// which a case-insensitive regex matches exactly where the lowercase text contains it (for
/// ASCII text).
fn ascii_literal(re: &str) -> Option<String> {
    let plain = !re.is_empty()
        && re.bytes().all(|b| {
            b.is_ascii()
                && b != b'\n'
                && !matches!(
                    b,
                    b'\\'
                        | b'.'
                        | b'+'
                        | b'*'
                        | b'?'
                        | b'('
                        | b')'
                        | b'|'
                        | b'['
                        | b']'
                        | b'{'
                        | b'}'
                        | b'^'
                        | b'$'
                )
        });
    plain.then(|| re.to_ascii_lowercase())
}

fn compile(re: &str) -> Result<Regex, String> {
    Regex::builder()
        .syntax(syntax::Config::new().case_insensitive(true))
        .build(re)
        .map_err(|e| format!("invalid regular expression '{re}': {e}"))
}

impl SearchQuery {
    /// Compiles the search and exclusion terms. At least one search term is required, as in Nix.
    pub fn new(regexes: &[String], excludes: &[String]) -> Result<SearchQuery, String> {
        if regexes.is_empty() {
            return Err(
                "Must provide at least one regex! To match all packages, use 'nix search <installable> ^'."
                    .to_string(),
            );
        }
        Ok(SearchQuery {
            regexes: regexes
                .iter()
                .map(|r| compile(r))
                .collect::<Result<_, _>>()?,
            excludes: excludes
                .iter()
                .map(|r| compile(r))
                .collect::<Result<_, _>>()?,
            literals: regexes
                .iter()
                .filter_map(|r| ascii_literal(r))
                // Without metacharacters the lowercase term is its own (case-sensitive) regex.
                .map(|l| {
                    Regex::new(&l).map_err(|e| format!("invalid regular expression '{l}': {e}"))
                })
                .collect::<Result<_, _>>()?,
        })
    }
}

/// Nix's `hiliteMatches`: every match wrapped in `prefix`…`postfix`, overlapping and adjacent
/// matches merged.
fn hilite(s: &str, mut matches: Vec<(usize, usize)>, prefix: &str, postfix: &str) -> String {
    if matches.is_empty() {
        return s.to_string();
    }
    matches.sort_by_key(|m| m.0);
    let mut out = String::with_capacity(s.len() + matches.len() * 16);
    let mut last_end = 0;
    let mut i = 0;
    while i < matches.len() {
        let (start, mut end) = matches[i];
        out.push_str(s.get(last_end..start).unwrap_or(""));
        i += 1;
        while i < matches.len() && matches[i].0 <= end {
            end = end.max(matches[i].1);
            i += 1;
        }
        out.push_str(prefix);
        out.push_str(s.get(start..end).unwrap_or(""));
        out.push_str(postfix);
        last_end = end;
    }
    out.push_str(s.get(last_end..).unwrap_or(""));
    out
}

fn matches_of(re: &Regex, s: &str) -> Vec<(usize, usize)> {
    re.find_iter(s).map(|m| (m.start(), m.end())).collect()
}

/// The attribute paths `nix search FLAKE#FRAGMENT` starts from: with a fragment, those of any
/// installable; without, the package sets themselves.
pub fn root_paths(fragment: &str, system: &str) -> Vec<String> {
    if fragment.is_empty() {
        return vec![
            format!("packages.{system}"),
            format!("legacyPackages.{system}"),
        ];
    }
    installable_attr_paths(fragment, system)
}

fn split_path(p: &str) -> Vec<String> {
    if p.is_empty() {
        Vec::new()
    } else {
        p.split('.').map(str::to_string).collect()
    }
}

/// One package of a [`SearchIndex`]: what `nix search` matches and prints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchEntry {
    /// The attribute path from the flake's outputs, joined with dots as Nix shows it.
    pub attr_path: String,
    /// The derivation name without its version (`parseDrvName`).
    pub pname: String,
    /// The version part of the name (`""` when none).
    pub version: String,
    /// `meta.description` with newlines turned into spaces (`""` when none).
    pub description: String,
}

/// Every package `nix search` visits from one set of roots, in the order it visits them.
#[derive(Debug, Clone, Default)]
pub struct SearchIndex {
    entries: Vec<SearchEntry>,
    /// Built by the first query that has a literal term.
    haystack: std::sync::OnceLock<Haystack>,
}

impl PartialEq for SearchIndex {
    fn eq(&self, other: &SearchIndex) -> bool {
        self.entries == other.entries
    }
}

impl Eq for SearchIndex {}

/// The matched fields of every ASCII entry, lowercased and joined by newlines, so that a literal
/// term is looked for in one scan instead of once per field. Entries with a non-ASCII field are
/// not in it (Unicode case folding may map their characters to ASCII ones): they are always
/// candidates.
#[derive(Debug, Clone, Default)]
struct Haystack {
    text: Vec<u8>,
    /// Offset in `text` where each entry in it starts, with its entry number; increasing.
    starts: Vec<(usize, usize)>,
    /// Entries not in `text`.
    always: Vec<usize>,
}

impl Haystack {
    fn of(entries: &[SearchEntry]) -> Haystack {
        let mut h = Haystack::default();
        for (i, e) in entries.iter().enumerate() {
            let fields = [&e.attr_path, &e.pname, &e.description];
            if !fields.iter().all(|f| f.is_ascii()) {
                h.always.push(i);
                continue;
            }
            h.starts.push((h.text.len(), i));
            for f in fields {
                h.text.extend(f.bytes().map(|b| b.to_ascii_lowercase()));
                h.text.push(b'\n');
            }
        }
        h
    }

    /// The entries (sorted) where `literal` (lowercase, without newline) occurs in some field,
    /// plus every entry not in the haystack.
    fn candidates(&self, literal: &Regex) -> Vec<usize> {
        let mut out = Vec::new();
        let mut k = 0;
        for m in literal.find_iter(&self.text) {
            while k + 1 < self.starts.len() && self.starts[k + 1].0 <= m.start() {
                k += 1;
            }
            if let Some(&(_, entry)) = self.starts.get(k)
                && out.last() != Some(&entry)
            {
                out.push(entry);
            }
        }
        out.extend(&self.always);
        out.sort_unstable();
        out.dedup();
        out
    }
}

/// First line of [`SearchIndex::encode`]'s text (bumped whenever the encoding changes).
const INDEX_HEADER: &str = "flaked-search-index-v1\n";

impl SearchIndex {
    /// An index of `entries` (in Nix's visiting order).
    pub fn new(entries: Vec<SearchEntry>) -> SearchIndex {
        SearchIndex {
            entries,
            haystack: std::sync::OnceLock::new(),
        }
    }

    /// The packages, in Nix's visiting order.
    pub fn entries(&self) -> &[SearchEntry] {
        &self.entries
    }

    /// Approximate heap bytes held by the index.
    pub fn approx_bytes(&self) -> usize {
        self.entries
            .iter()
            .map(|e| {
                e.attr_path.len()
                    + e.pname.len()
                    + e.version.len()
                    + e.description.len()
                    + std::mem::size_of::<SearchEntry>()
            })
            .sum()
    }

    /// The packages matching `query`, rendered as `nix search` prints them, in Nix's order.
    pub fn query(&self, query: &SearchQuery) -> Vec<SearchHit> {
        if query.literals.is_empty() {
            return self.entries.iter().filter_map(|e| query.hit(e)).collect();
        }
        // Every literal term must match somewhere in an entry: only the entries where each
        // occurs are candidates, and each candidate is then matched exactly.
        let haystack = self.haystack.get_or_init(|| Haystack::of(&self.entries));
        let mut candidates: Option<Vec<usize>> = None;
        for literal in &query.literals {
            let found = haystack.candidates(literal);
            candidates = Some(match candidates {
                None => found,
                Some(c) => c
                    .into_iter()
                    .filter(|i| found.binary_search(i).is_ok())
                    .collect(),
            });
        }
        candidates
            .unwrap_or_default()
            .into_iter()
            .filter_map(|i| query.hit(&self.entries[i]))
            .collect()
    }

    /// The index as text: a header line, then every field of every entry as `<byte length>:`
    /// followed by its bytes (fields may hold any character).
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(INDEX_HEADER.len() + self.approx_bytes());
        out.push_str(INDEX_HEADER);
        for e in &self.entries {
            for f in [&e.attr_path, &e.pname, &e.version, &e.description] {
                out.push_str(&f.len().to_string());
                out.push(':');
                out.push_str(f);
            }
        }
        out
    }

    /// The index [`SearchIndex::encode`] made `text` from; `None` when `text` is not one.
    pub fn decode(text: &str) -> Option<SearchIndex> {
        let mut rest = text.strip_prefix(INDEX_HEADER)?;
        let mut field = || -> Option<String> {
            let (len, tail) = rest.split_once(':')?;
            if len.is_empty() || !len.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            let len: usize = len.parse().ok()?;
            let value = tail.get(..len)?;
            rest = &tail[len..];
            Some(value.to_string())
        };
        let mut entries = Vec::new();
        while let Some(attr_path) = field() {
            entries.push(SearchEntry {
                attr_path,
                pname: field()?,
                version: field()?,
                description: field()?,
            });
        }
        rest.is_empty().then(|| SearchIndex::new(entries))
    }
}

impl SearchQuery {
    /// `entry` as Nix prints it when every regex matches its attribute path, name or
    /// description and no exclusion matches any of them; `None` otherwise.
    fn hit(&self, entry: &SearchEntry) -> Option<SearchHit> {
        let SearchEntry {
            attr_path,
            pname,
            version,
            description,
        } = entry;
        for re in &self.excludes {
            if re.is_match(attr_path) || re.is_match(pname) || re.is_match(description) {
                return None;
            }
        }
        // Cheap rejection first: most packages match no regex at all.
        for re in &self.regexes {
            if !(re.is_match(attr_path) || re.is_match(pname) || re.is_match(description)) {
                return None;
            }
        }
        let mut path_matches = Vec::new();
        let mut desc_matches = Vec::new();
        for re in &self.regexes {
            path_matches.extend(matches_of(re, attr_path));
            desc_matches.extend(matches_of(re, description));
        }
        let mut rendered = format!(
            "* {BOLD}{}{NORMAL}",
            hilite(attr_path, path_matches, GREEN, BOLD)
        );
        if !version.is_empty() {
            rendered.push_str(&format!(" ({version})"));
        }
        rendered.push('\n');
        if !description.is_empty() {
            rendered.push_str(&format!(
                "  {}\n",
                hilite(description, desc_matches, GREEN, NORMAL)
            ));
        }
        Some(SearchHit {
            attr_path: attr_path.clone(),
            pname: pname.clone(),
            version: version.clone(),
            description: description.clone(),
            rendered,
        })
    }
}

struct Walker {
    entries: Vec<SearchEntry>,
}

fn get_attr(ev: &mut Evaluator, v: &Value, name: &str) -> Result<Option<Value>, EvalError> {
    let v = ev.force(v, Pos::NONE)?;
    Ok(match &v {
        Value::Attrs(a) => a.get(Symbol::intern(name)).map(|x| x.value.clone()),
        _ => None,
    })
}

fn force_text(ev: &mut Evaluator, v: &Value, what: &str) -> Result<String, EvalError> {
    let s = ev.force_string(v, Pos::NONE, &format!("while evaluating the {what}"))?;
    Ok(String::from_utf8_lossy(&s.bytes).into_owned())
}

impl Walker {
    /// Visits the members of a root package set (evaluated before) under checkpoints: the
    /// evaluation is rolled back whenever [`THUNKS_PER_ROLLBACK`] thunks were evaluated since the
    /// last checkpoint, and at the end. So the package values the index is made from are freed
    /// as the search goes (a search needs each once), the warm flake keeps what it held before,
    /// and the peak memory of a search is that of a slice of the set, not of all of it. Only
    /// the members of a set older than the checkpoint are visited between two rollbacks: a
    /// rollback empties the frames made since, which values made since may still refer to.
    fn visit_rolled_back(
        &mut self,
        ev: &mut Evaluator,
        children: Vec<(String, Value)>,
        path: &mut Vec<String>,
    ) -> Result<(), EvalError> {
        let Some(mut cp) = ev.checkpoint() else {
            // Already under a checkpoint (not on the search's paths): visit plainly.
            for (name, child) in children {
                path.push(name);
                let r = self.visit(ev, &child, path, false);
                path.pop();
                r?;
            }
            return Ok(());
        };
        for (name, child) in children {
            path.push(name);
            let r = self.visit(ev, &child, path, false);
            path.pop();
            if let Err(e) = r {
                // The error is shown after this returns: keep the sources it points into.
                ev.rollback(cp, true);
                return Err(e);
            }
            if ev.evaluated_since_checkpoint() >= THUNKS_PER_ROLLBACK {
                ev.rollback(cp, false);
                cp = ev
                    .checkpoint()
                    .expect("the only checkpoint was just rolled back");
            }
        }
        ev.rollback(cp, false);
        Ok(())
    }

    fn visit(
        &mut self,
        ev: &mut Evaluator,
        v: &Value,
        path: &mut Vec<String>,
        initial: bool,
    ) -> Result<(), EvalError> {
        match self.visit_inner(ev, v, path, initial) {
            Err(e)
                if path.first().is_some_and(|p| p == "legacyPackages")
                    && e.kind() != ErrorKind::Interrupted =>
            {
                Ok(())
            }
            r => r,
        }
    }

    fn visit_inner(
        &mut self,
        ev: &mut Evaluator,
        v: &Value,
        path: &mut Vec<String>,
        initial: bool,
    ) -> Result<(), EvalError> {
        let v = ev.force(v, Pos::NONE)?;
        if ev.is_derivation(&v)? {
            let name = match get_attr(ev, &v, "name")? {
                Some(n) => force_text(ev, &n, "name of a derivation")?,
                None => {
                    return Err(EvalError::eval(format!(
                        "attribute 'name' missing in derivation '{}'",
                        path.join(".")
                    )));
                }
            };
            let description = match get_attr(ev, &v, "meta")? {
                Some(meta) => match get_attr(ev, &meta, "description")? {
                    Some(d) => force_text(ev, &d, "description of a package")?.replace('\n', " "),
                    None => String::new(),
                },
                None => String::new(),
            };
            let (pname, version) = parse_drv_name(name.as_bytes());
            self.entries.push(SearchEntry {
                attr_path: path.join("."),
                pname: String::from_utf8_lossy(pname).into_owned(),
                version: String::from_utf8_lossy(version).into_owned(),
                description,
            });
            return Ok(());
        }
        let top = path.first().map(String::as_str);
        let enter = path.is_empty()
            || (matches!(top, Some("legacyPackages" | "packages")) && path.len() <= 2)
            || initial
            || (top == Some("legacyPackages")
                && match get_attr(ev, &v, "recurseForDerivations")? {
                    Some(r) => ev.force_bool(
                        &r,
                        Pos::NONE,
                        "while evaluating the recurseForDerivations attribute",
                    )?,
                    None => false,
                });
        if !enter {
            return Ok(());
        }
        let Value::Attrs(attrs) = &v else {
            return Ok(());
        };
        for (name, child) in sorted_children(attrs) {
            path.push(name);
            let r = self.visit(ev, &child, path, false);
            path.pop();
            r?;
        }
        Ok(())
    }
}

/// The members of a set in the order `nix search` visits them (by name), with their names as
/// text: collected first, since visiting them evaluates (and may roll back) the set's thunks.
fn sorted_children(attrs: &Attrs) -> Vec<(String, Value)> {
    attrs
        .sorted_by_name()
        .into_iter()
        .map(|a| (a.name.as_string(), a.value.clone()))
        .collect()
}

/// The [`SearchIndex`] of `FLAKE#fragment` (the flake's `outputs`, already called): every
/// package `nix search` visits from the existing roots of `fragment`. Fails as `nix search`
/// does: no root exists, or an evaluation error outside `legacyPackages`.
pub fn build_index(
    ev: &mut Evaluator,
    outputs: &Value,
    shown_ref: &str,
    fragment: &str,
    system: &str,
) -> Result<SearchIndex, EvalError> {
    let roots = root_paths(fragment, system);
    let mut found = Vec::new();
    for root in &roots {
        let path = split_path(root);
        let mut v = outputs.clone();
        let mut ok = true;
        for name in &path {
            match get_attr(ev, &v, name)? {
                Some(x) => v = x,
                None => {
                    ok = false;
                    break;
                }
            }
        }
        if ok {
            found.push((path, v));
        }
    }
    if found.is_empty() {
        return Err(EvalError::eval(format!(
            "flake '{shown_ref}' does not provide attribute {}",
            show_attr_paths(&roots)
        )));
    }
    let mut w = Walker {
        entries: Vec::new(),
    };
    for (mut path, v) in found {
        let forced = ev
            .force(&v, Pos::NONE)
            .and_then(|v| Ok((ev.is_derivation(&v)?, v)));
        let (is_drv, v) = match forced {
            Ok(x) => x,
            // As in `visit`: below `legacyPackages`, an attribute that fails is skipped.
            Err(e)
                if path.first().is_some_and(|p| p == "legacyPackages")
                    && e.kind() != ErrorKind::Interrupted =>
            {
                continue;
            }
            Err(e) => return Err(e),
        };
        if is_drv {
            w.visit(ev, &v, &mut path, true)?;
        } else if let Value::Attrs(attrs) = &v {
            w.visit_rolled_back(ev, sorted_children(attrs), &mut path)?;
        }
    }
    Ok(SearchIndex::new(w.entries))
}

/// How many thunks a search evaluates before it rolls the evaluation back (see
/// [`Walker::visit_rolled_back`]): about 4 MiB of package values in a nixpkgs-shaped set.
const THUNKS_PER_ROLLBACK: usize = 20_000;

/// Searches the flake `outputs` (already called) from the roots of `FLAKE#fragment`.
pub fn search(
    ev: &mut Evaluator,
    outputs: &Value,
    shown_ref: &str,
    fragment: &str,
    system: &str,
    query: &SearchQuery,
) -> Result<Vec<SearchHit>, EvalError> {
    Ok(build_index(ev, outputs, shown_ref, fragment, system)?.query(query))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::value::ThunkPhase;

    #[test]
    fn hilite_merges_like_nix() {
        assert_eq!(hilite("abc", vec![], "<", ">"), "abc");
        assert_eq!(hilite("hello", vec![(1, 3), (2, 4)], "<", ">"), "h<ell>o");
        assert_eq!(hilite("hello", vec![(3, 5), (0, 1)], "<", ">"), "<h>el<lo>");
        assert_eq!(hilite("hello", vec![(0, 2), (2, 3)], "<", ">"), "<hel>lo");
        assert_eq!(hilite("x", vec![(0, 0)], "<", ">"), "<>x");
    }

    #[test]
    fn drv_names_and_roots() {
        assert_eq!(
            parse_drv_name(b"alpha-charlie-00052-3.8.3"),
            (&b"alpha-charlie"[..], &b"00052-3.8.3"[..])
        );
        assert_eq!(parse_drv_name(b"hello"), (&b"hello"[..], &b""[..]));
        assert_eq!(
            root_paths("", "x86_64-linux"),
            vec!["packages.x86_64-linux", "legacyPackages.x86_64-linux"]
        );
        assert_eq!(root_paths(".a.b", "s"), vec!["a.b"]);
        assert_eq!(
            show_attr_paths(&root_paths("hello", "s")),
            "'packages.s.hello', 'legacyPackages.s.hello' or 'hello'"
        );
        assert!(SearchQuery::new(&[], &[]).is_err());
        assert!(SearchQuery::new(&["(".into()], &[]).is_err());
    }

    fn entry(path: &str, pname: &str, version: &str, description: &str) -> SearchEntry {
        SearchEntry {
            attr_path: path.into(),
            pname: pname.into(),
            version: version.into(),
            description: description.into(),
        }
    }

    #[test]
    fn index_encoding_round_trips() {
        let ix = SearchIndex::new(vec![
            entry("legacyPackages.x.hello", "hello", "2.12", "A greeting: 1:2"),
            entry("a.\"b:c\"", "", "", ""),
            entry("ünïcode", "p\tq", "1", "multi\nline 12:x"),
        ]);
        let text = ix.encode();
        assert_eq!(SearchIndex::decode(&text), Some(ix.clone()));
        assert_eq!(
            SearchIndex::decode(&SearchIndex::default().encode()),
            Some(SearchIndex::default())
        );
        // Truncated or damaged texts are not indexes.
        for bad in [
            &text[..text.len() - 1],
            &text[1..],
            "flaked-search-index-v1\n5:abc",
            "flaked-search-index-v1\n1:a1:b1:c",
            "flaked-search-index-v1\n-1:a",
            "flaked-search-index-v1\nx",
        ] {
            assert_eq!(SearchIndex::decode(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn literal_scan_finds_what_matching_every_entry_finds() {
        let ix = SearchIndex::new(vec![
            entry("p.hello", "hello", "2.12", "A friendly greeting"),
            entry("p.kelvin", "kelvin", "", ""),
            entry("p.sign", "sign", "1", "\u{212A}elvin scale"),
            entry("p.Mixed-Case_x", "Mixed", "", "line one two"),
            entry("p.last", "last", "", "hello friendly"),
        ]);
        for (terms, excludes) in [
            (&["hello"][..], &[][..]),
            (&["KELVIN"], &[]),
            (&["elvin"], &["sign"]),
            (&["hello", "friendly"], &[]),
            (&["mixed-case_X"], &[]),
            (&["one two"], &[]),
            (&["e", "l"], &["greeting"]),
            (&["nothing"], &[]),
            (&["hello", "^p"], &[]),
            (&["o\\.t"], &[]),
            (&["x"], &[]),
        ] {
            let r: Vec<String> = terms.iter().map(|s| s.to_string()).collect();
            let e: Vec<String> = excludes.iter().map(|s| s.to_string()).collect();
            let q = SearchQuery::new(&r, &e).expect("valid");
            let slow: Vec<SearchHit> = ix.entries().iter().filter_map(|x| q.hit(x)).collect();
            assert_eq!(ix.query(&q), slow, "{terms:?} {excludes:?}");
        }
        let q = SearchQuery::new(&["KELVIN".into()], &[]).expect("valid");
        let found: Vec<String> = ix.query(&q).into_iter().map(|h| h.attr_path).collect();
        assert_eq!(found, ["p.kelvin", "p.sign"]);
    }

    #[test]
    fn index_queries_match_every_regex_and_no_exclusion() {
        let ix = SearchIndex::new(vec![
            entry("p.hello", "hello", "2.12", "A friendly greeting"),
            entry("p.cowsay", "cowsay", "3.7", "A talking cow"),
            entry("p.hello-wrapped", "hello-wrapped", "", ""),
        ]);
        let q = |r: &[&str], e: &[&str]| {
            let r: Vec<String> = r.iter().map(|s| s.to_string()).collect();
            let e: Vec<String> = e.iter().map(|s| s.to_string()).collect();
            ix.query(&SearchQuery::new(&r, &e).expect("valid"))
                .into_iter()
                .map(|h| h.attr_path)
                .collect::<Vec<_>>()
        };
        assert_eq!(q(&["hello"], &[]), ["p.hello", "p.hello-wrapped"]);
        assert_eq!(q(&["HELLO", "friendly"], &[]), ["p.hello"]);
        assert_eq!(q(&["^"], &["wrapped"]), ["p.hello", "p.cowsay"]);
        assert_eq!(q(&["a"], &["^cow"]), ["p.hello", "p.hello-wrapped"]);
        assert!(q(&["nothing"], &[]).is_empty());
        let hit = ix
            .query(&SearchQuery::new(&["cow".into()], &[]).expect("valid"))
            .pop()
            .expect("a hit");
        assert_eq!(
            hit.rendered,
            "* \x1b[0;1mp.\x1b[32;1mcow\x1b[0;1msay\x1b[0m (3.7)\n  A talking \x1b[32;1mcow\x1b[0m\n"
        );
    }

    /// A search frees the package values it evaluated (cycles included) and leaves the package
    /// set usable: every package evaluates again afterwards.
    #[test]
    fn search_rolls_package_values_back() {
        let src = br#"
              let
                mk = i: let d = { type = "derivation"; name = "p${toString i}-1.${toString i}";
                                  meta.description = "package ${toString i}"; me = d;
                                  big = builtins.genList (x: x * i) 50; }; in d;
                pkgs = builtins.listToAttrs (builtins.genList
                  (i: { name = "p${toString i}"; value = mk i; }) 3000);
              in { legacyPackages.x86_64-linux = pkgs // { broken = throw "skipped"; }; }
            "#;
        crate::tests::with_fresh_evaluator(src, |mut ev, outputs| {
            let outputs = ev.force(&outputs, Pos::NONE).expect("forces");
            // Evaluated thunks and filled frames alive (a rolled-back thunk stays registered
            // while it lives, unevaluated).
            let held = || {
                let (thunks, envs) = crate::value::region::snapshot();
                thunks
                    .iter()
                    .filter_map(std::rc::Weak::upgrade)
                    .filter(|t| t.phase() == ThunkPhase::Done)
                    .count()
                    + envs
                        .iter()
                        .filter_map(std::rc::Weak::upgrade)
                        .filter(|e| !e.is_empty())
                        .count()
            };
            let before = held();
            let index = build_index(&mut ev, &outputs, "x", "", "x86_64-linux").expect("index");
            assert_eq!(index.entries().len(), 3000);
            let e = &index.entries()[1];
            assert_eq!(
                (e.attr_path.as_str(), e.pname.as_str(), e.version.as_str()),
                ("legacyPackages.x86_64-linux.p1", "p1", "1.1")
            );
            assert_eq!(e.description, "package 1");
            let after = held();
            // Without the rollbacks every package would keep its frame and thunks alive.
            assert!(after < before + 100, "live cells {before} -> {after}");
            // The package set still evaluates, and a second search gives the same index.
            let again = build_index(&mut ev, &outputs, "x", "", "x86_64-linux").expect("again");
            assert_eq!(again, index);
            let mut v = outputs.clone();
            for name in [
                "legacyPackages",
                "x86_64-linux",
                "p5",
                "meta",
                "description",
            ] {
                v = get_attr(&mut ev, &v, name)
                    .expect("evaluates")
                    .expect("exists");
            }
            assert_eq!(
                force_text(&mut ev, &v, "description").expect("a string"),
                "package 5"
            );
        });
    }
}

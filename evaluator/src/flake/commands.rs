//! What the flake commands print: `nix flake metadata` (JSON and text), `nix flake show`
//! (JSON and text) and the attribute selection of a flake installable (`nix eval FLAKE#ATTR`).
//!
//! Invariant: every walk starts at the flake's `outputs` (the root of Nix's eval cache, not the
//! flake value with its `sourceInfo` merged in), looks attributes up without calling functions,
//! and visits attribute names in byte order, as Nix's eval cache cursors do.

use std::fmt::Write as _;
use std::path::Path;

use flaked_store::fetchers::attrs::attrs_to_json_string;
use flaked_store::fetchers::lockfile::{Edge, print_input_path};
use flaked_store::fetchers::{Attr as FAttr, FlakeRef, LockFile, NodeId};

use super::{FlakeError, LockedFlake};
use crate::error::{EvalError, best_matches};
use crate::eval::Evaluator;
use crate::source::Pos;
use crate::symbol::Symbol;
use crate::value::Value;

/// A JSON string literal (nlohmann's escaping).
pub(crate) fn json_str(s: &str) -> String {
    let mut o = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            '\n' => o.push_str("\\n"),
            '\r' => o.push_str("\\r"),
            '\t' => o.push_str("\\t"),
            '\u{8}' => o.push_str("\\b"),
            '\u{c}' => o.push_str("\\f"),
            c if (c as u32) < 0x20 => {
                let _ = write!(o, "\\u{:04x}", c as u32);
            }
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

/// A compact JSON object from already-encoded members (sorted by key like nlohmann's map).
fn json_object(mut parts: Vec<(String, String)>) -> String {
    parts.sort_by(|a, b| a.0.cmp(&b.0));
    let body: Vec<String> = parts
        .into_iter()
        .map(|(k, v)| format!("{}:{v}", json_str(&k)))
        .collect();
    format!("{{{}}}", body.join(","))
}

fn url_of(r: &FlakeRef) -> String {
    r.display()
}

/// `lockFile.toJSON()` printed compactly (`dump()`).
fn lock_json_compact(lock: &LockFile) -> String {
    flaked_store::fetchers::json::to_compact(&lock.to_json().0)
}

/// The SHA-256 fingerprint Nix prints for a locked flake (`None` when Nix prints none: an
/// unlocked lock file, or a top-level input without a content fingerprint).
pub fn fingerprint_hex(
    locked: &LockedFlake,
    settings: &flaked_store::fetchers::InputSettings,
) -> Option<String> {
    if locked.lock_file.is_unlocked(settings).is_some() {
        return None;
    }
    let input = &locked.flake.locked.input;
    let attrs = input.to_attrs();
    let base = match &input.kind {
        flaked_store::fetchers::InputKind::Git(g) => {
            let flags = format!(
                "{}{}",
                if g.submodules == Some(true) { ";s" } else { "" },
                if g.export_ignore == Some(true) {
                    ";e"
                } else {
                    ""
                }
            );
            match (&g.rev, &g.dirty_rev) {
                (Some(rev), _) => format!("{rev}{flags}"),
                (None, Some(d)) => {
                    let head = d.trim_end_matches("-dirty");
                    let repo = g.url.strip_prefix("file://")?;
                    // Nix fingerprints a dirty work tree only when it has no submodules.
                    if has_submodules(Path::new(repo)) {
                        return None;
                    }
                    format!("{head}{flags};d={}", dirty_files_hash(Path::new(repo))?)
                }
                _ => return None,
            }
        }
        _ => {
            let _ = attrs;
            return None;
        }
    };
    let mut f = format!(
        "{base};{};{}",
        locked.flake.locked.subdir,
        locked.lock_file.to_file_string().trim_end_matches('\n')
    );
    if let Some(c) = input.rev_count() {
        let _ = write!(f, ";revCount={c}");
    }
    if let Some(t) = input.last_modified() {
        let _ = write!(f, ";lastModified={t}");
    }
    Some(flaked_store::hash::Hash::sha256(f.as_bytes()).to_base16())
}

/// Whether a work tree's `.gitmodules` declares a submodule (Nix's `WorkdirInfo::submodules`).
fn has_submodules(repo: &Path) -> bool {
    let file = repo.join(".gitmodules");
    if !file.is_file() {
        return false;
    }
    std::process::Command::new("git")
        .arg("config")
        .arg("--file")
        .arg(&file)
        .args(["--get-regexp", r"^submodule\..*\.path$"])
        .output()
        .is_ok_and(|o| o.status.success() && !o.stdout.is_empty())
}

/// Nix's `writeString` serialisation: length (u64, little endian), bytes, zero padding to 8.
fn write_string(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s);
    out.resize(out.len() + (8 - s.len() % 8) % 8, 0);
}

/// The SHA-512 (hex) over a dirty work tree's modified and deleted tracked files, as Nix's Git
/// fingerprint computes it: `modified:`, the path and its NAR for each modified or added file,
/// then `deleted:` and the path for each deleted one, both in path order. The file lists come
/// from `git status` (untracked files do not count).
fn dirty_files_hash(repo: &Path) -> Option<String> {
    let out = std::process::Command::new("git")
        .arg("-C")
        .arg(repo)
        .args([
            "status",
            "--porcelain=v1",
            "-z",
            "--untracked-files=no",
            "--ignore-submodules",
            "--no-renames",
        ])
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let mut modified = std::collections::BTreeSet::new();
    let mut deleted = std::collections::BTreeSet::new();
    for entry in out.stdout.split(|b| *b == 0).filter(|e| e.len() > 3) {
        let (x, y) = (entry[0], entry[1]);
        let path = String::from_utf8_lossy(&entry[3..]).into_owned();
        if x == b'D' || y == b'D' {
            deleted.insert(path);
        } else {
            modified.insert(path);
        }
    }
    let mut buf = Vec::new();
    for f in &modified {
        write_string(&mut buf, b"modified:");
        write_string(&mut buf, format!("/{f}").as_bytes());
        flaked_store::nar::dump_path_to(&repo.join(f), &mut buf).ok()?;
    }
    for f in &deleted {
        write_string(&mut buf, b"deleted:");
        write_string(&mut buf, format!("/{f}").as_bytes());
    }
    let mut h = flaked_store::hash::Hasher::new(flaked_store::hash::HashAlgo::Sha512);
    h.update(&buf);
    Some(h.finish().to_base16())
}

/// `nix flake metadata --json` (one line, no trailing newline).
pub fn metadata_json(
    locked: &LockedFlake,
    settings: &flaked_store::fetchers::InputSettings,
) -> String {
    let f = &locked.flake;
    let mut parts: Vec<(String, String)> = Vec::new();
    if let Some(d) = &f.description {
        parts.push(("description".into(), json_str(d)));
    }
    parts.push(("originalUrl".into(), json_str(&url_of(&f.original))));
    parts.push((
        "original".into(),
        attrs_to_json_string(&f.original.to_attrs()),
    ));
    parts.push(("resolvedUrl".into(), json_str(&url_of(&f.resolved))));
    parts.push((
        "resolved".into(),
        attrs_to_json_string(&f.resolved.to_attrs()),
    ));
    parts.push(("url".into(), json_str(&url_of(&f.locked))));
    let mut locked_attrs = f.locked.to_attrs();
    if f.locked.input.is_final {
        locked_attrs.insert("__final".into(), FAttr::Bool(true));
    }
    parts.push(("locked".into(), attrs_to_json_string(&locked_attrs)));
    let input = &f.locked.input;
    if let Some(r) = input.rev() {
        parts.push(("revision".into(), json_str(r)));
    }
    if let Some(FAttr::String(d)) = input.to_attrs().get("dirtyRev") {
        parts.push(("dirtyRevision".into(), json_str(d)));
    }
    if let Some(c) = input.rev_count() {
        parts.push(("revCount".into(), c.to_string()));
    }
    if let Some(t) = input.last_modified() {
        parts.push(("lastModified".into(), t.to_string()));
    }
    parts.push(("path".into(), json_str(&f.source_store_path)));
    parts.push(("locks".into(), lock_json_compact(&locked.lock_file)));
    if let Some(fp) = fingerprint_hex(locked, settings) {
        parts.push(("fingerprint".into(), json_str(&fp)));
    }
    json_object(parts)
}

/// `YYYY-MM-DD HH:MM:SS` of a Unix time in UTC.
fn format_time(t: u64) -> String {
    let d = super::call::format_date_time(t);
    format!(
        "{}-{}-{} {}:{}:{}",
        &d[0..4],
        &d[4..6],
        &d[6..8],
        &d[8..10],
        &d[10..12],
        &d[12..14]
    )
}

/// `YYYY-MM-DD HH:MM:SS` of a Unix time in the process's local time zone, as Nix prints the
/// flake's own "Last modified" (`std::put_time(std::localtime(t), "%F %T")`): C's `localtime_r`,
/// so `TZ` (a zone name, a file, a POSIX rule; empty = UTC) and else `/etc/localtime` mean what
/// they mean to Nix. A time the C library cannot convert is shown in UTC.
pub fn format_local_time(t: u64) -> String {
    let Ok(secs) = libc::time_t::try_from(t) else {
        return format_time(t);
    };
    // SAFETY: `tm` is plain old data (integers and a pointer the C library sets), so the
    // all-zero value is valid; `localtime_r` only writes to the `tm` it is given and is
    // thread-safe.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    // SAFETY: both pointers are valid for the duration of the call.
    let r = unsafe { libc::localtime_r(&secs, &mut tm) };
    if r.is_null() {
        return format_time(t);
    }
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
        i64::from(tm.tm_year) + 1900,
        tm.tm_mon + 1,
        tm.tm_mday,
        tm.tm_hour,
        tm.tm_min,
        tm.tm_sec
    )
}

/// `nix flake metadata` (human form, as printed to a pipe: bold markers kept, as Nix's `cout`
/// does not filter them). The flake's own "Last modified" is in local time
/// ([`format_local_time`]), its inputs' dates in UTC, as in Nix.
pub fn metadata_text(
    locked: &LockedFlake,
    settings: &flaked_store::fetchers::InputSettings,
) -> String {
    const B: &str = "\x1b[1m";
    const N: &str = "\x1b[0m";
    let f = &locked.flake;
    let mut o = String::new();
    let _ = writeln!(o, "{B}Resolved URL:{N}  {}", url_of(&f.resolved));
    if f.locked.input.is_locked(settings) {
        let _ = writeln!(o, "{B}Locked URL:{N}    {}", url_of(&f.locked));
    }
    if let Some(d) = &f.description {
        let _ = writeln!(o, "{B}Description:{N}   {d}");
    }
    let _ = writeln!(o, "{B}Path:{N}          {}", f.source_store_path);
    let input = &f.locked.input;
    if let Some(r) = input.rev() {
        let _ = writeln!(o, "{B}Revision:{N}      {r}");
    }
    if let Some(FAttr::String(d)) = input.to_attrs().get("dirtyRev") {
        let _ = writeln!(o, "{B}Revision:{N}      {d}");
    }
    if let Some(c) = input.rev_count() {
        let _ = writeln!(o, "{B}Revisions:{N}     {c}");
    }
    if let Some(t) = input.last_modified() {
        let _ = writeln!(o, "{B}Last modified:{N} {}", format_local_time(t));
    }
    if let Some(fp) = fingerprint_hex(locked, settings) {
        let _ = writeln!(o, "{B}Fingerprint:{N}   {fp}");
    }
    let lock = &locked.lock_file;
    if !lock.nodes[LockFile::ROOT].inputs.is_empty() {
        let _ = writeln!(o, "{B}Inputs:{N}");
    }
    let mut visited = std::collections::HashSet::new();
    metadata_tree(lock, LockFile::ROOT, "", &mut visited, &mut o);
    o
}

fn metadata_tree(
    lock: &LockFile,
    node: NodeId,
    prefix: &str,
    visited: &mut std::collections::HashSet<NodeId>,
    o: &mut String,
) {
    const B: &str = "\x1b[1m";
    const N: &str = "\x1b[0m";
    let n = lock.nodes[node].inputs.len();
    for (i, (name, e)) in lock.nodes[node].inputs.iter().enumerate() {
        let last = i + 1 == n;
        let conn = if last { "└───" } else { "├───" };
        match e {
            Edge::Node(c) => {
                let Some(l) = &lock.nodes[*c].locked else {
                    continue;
                };
                let lm = l
                    .locked
                    .input
                    .last_modified()
                    .map(|t| format!(" ({})", format_time(t)))
                    .unwrap_or_default();
                let _ = writeln!(o, "{prefix}{conn}{B}{name}{N}: {}{lm}", l.locked.display());
                if visited.insert(*c) {
                    let next = format!("{prefix}{}", if last { "    " } else { "│   " });
                    metadata_tree(lock, *c, &next, visited, o);
                }
            }
            Edge::Follows(p) => {
                let _ = writeln!(
                    o,
                    "{prefix}{conn}{B}{name}{N} follows input '{}'",
                    print_input_path(p)
                );
            }
        }
    }
}

/// The flake's `outputs` attribute (the root of every walk).
pub fn outputs_of(ev: &mut Evaluator, flake: &Value) -> Result<Value, EvalError> {
    let a = ev.force_attrs(flake, Pos::NONE, "while parsing cached flake data")?;
    match a.get(Symbol::intern("outputs")) {
        Some(o) => Ok(o.value.clone()),
        None => Err(EvalError::eval("the flake has no 'outputs' attribute")),
    }
}

/// Looks `path` up from `root` like an eval-cache cursor: `Ok(Err(suggestions))` when an
/// attribute is missing or a value on the way is not an attribute set.
fn find_along(
    ev: &mut Evaluator,
    root: &Value,
    path: &[String],
) -> Result<Result<Value, Vec<String>>, EvalError> {
    let mut cur = root.clone();
    for name in path {
        let v = ev.force(&cur, Pos::NONE)?;
        let Value::Attrs(a) = &v else {
            return Ok(Err(Vec::new()));
        };
        match a.get(Symbol::intern(name)) {
            Some(x) => cur = x.value.clone(),
            None => {
                let names: Vec<String> = a.entries.iter().map(|x| x.name.as_string()).collect();
                return Ok(Err(best_matches(&names, name)));
            }
        }
    }
    Ok(Ok(cur))
}

/// Splits an attribute path like Nix's `parseAttrPath` (dots separate, double quotes group).
pub fn parse_attr_path(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = s.chars();
    if s.is_empty() {
        return out;
    }
    while let Some(c) = chars.next() {
        match c {
            '.' => out.push(std::mem::take(&mut cur)),
            '"' => {
                for c2 in chars.by_ref() {
                    if c2 == '"' {
                        break;
                    }
                    cur.push(c2);
                }
            }
            c => cur.push(c),
        }
    }
    out.push(cur);
    out
}

/// The attribute paths `nix eval FLAKE#FRAGMENT` tries, in order (Nix's
/// `InstallableFlake::getActualAttrPaths` with `nix eval`'s defaults).
pub fn installable_attr_paths(fragment: &str, system: &str) -> Vec<String> {
    if fragment.is_empty() {
        return vec![
            format!("packages.{system}.default"),
            format!("defaultPackage.{system}"),
        ];
    }
    if let Some(rest) = fragment.strip_prefix('.') {
        return vec![rest.to_string()];
    }
    vec![
        format!("packages.{system}.{fragment}"),
        format!("legacyPackages.{system}.{fragment}"),
        fragment.to_string(),
    ]
}

/// Nix's `showAttrPaths`: `'a', 'b' or 'c'`.
pub(crate) fn show_attr_paths(paths: &[String]) -> String {
    let mut s = String::new();
    for (n, p) in paths.iter().enumerate() {
        if n > 0 {
            s.push_str(if n + 1 == paths.len() { " or " } else { ", " });
        }
        s.push('\'');
        s.push_str(p);
        s.push('\'');
    }
    s
}

/// Selects an installable's value from the flake's `outputs`: the first of the candidate
/// attribute paths that exists (returned with the path that matched).
pub fn select_installable(
    ev: &mut Evaluator,
    outputs: &Value,
    flake_ref_shown: &str,
    fragment: &str,
    system: &str,
) -> Result<(Value, String), EvalError> {
    let paths = installable_attr_paths(fragment, system);
    let mut suggestions = Vec::new();
    for p in &paths {
        match find_along(ev, outputs, &parse_attr_path(p))? {
            Ok(v) => return Ok((v, p.clone())),
            Err(s) => suggestions.extend(s),
        }
    }
    Err(EvalError::eval(format!(
        "flake '{flake_ref_shown}' does not provide attribute {}",
        show_attr_paths(&paths)
    ))
    .with_suggestions(suggestions))
}

/// What `nix flake show` needs of the evaluation: the local system and whether to show every
/// system and `legacyPackages`.
#[derive(Debug, Clone)]
pub struct ShowOptions {
    pub system: String,
    pub all_systems: bool,
    pub legacy: bool,
}

fn attr_names(ev: &mut Evaluator, v: &Value, path: &[String]) -> Result<Vec<String>, EvalError> {
    let v = ev.force(v, Pos::NONE)?;
    let Value::Attrs(a) = &v else {
        return Err(EvalError::type_error(format!(
            "'{}' is not an attribute set",
            path.join(".")
        )));
    };
    let mut names: Vec<String> = a.entries.iter().map(|x| x.name.as_string()).collect();
    names.sort();
    Ok(names)
}

fn get_attr(
    ev: &mut Evaluator,
    v: &Value,
    name: &str,
    path: &[String],
) -> Result<Value, EvalError> {
    let v = ev.force(v, Pos::NONE)?;
    let Value::Attrs(a) = &v else {
        return Err(EvalError::type_error(format!(
            "'{}' is not an attribute set",
            path.join(".")
        )));
    };
    match a.get(Symbol::intern(name)) {
        Some(x) => Ok(x.value.clone()),
        None => {
            let mut p = path.to_vec();
            p.push(name.to_string());
            Err(EvalError::eval(format!(
                "attribute '{}' does not exist",
                p.join(".")
            )))
        }
    }
}

fn maybe_attr(ev: &mut Evaluator, v: &Value, name: &str) -> Result<Option<Value>, EvalError> {
    let v = ev.force(v, Pos::NONE)?;
    let Value::Attrs(a) = &v else {
        return Ok(None);
    };
    Ok(a.get(Symbol::intern(name)).map(|x| x.value.clone()))
}

/// An eval-cache cursor's `getString`: a string or a path, else Nix's type error naming the
/// attribute path.
fn get_string(ev: &mut Evaluator, v: &Value, path: &[String]) -> Result<String, EvalError> {
    let v = ev.force(v, Pos::NONE)?;
    match &v {
        Value::String(s) => Ok(String::from_utf8_lossy(&s.bytes).into_owned()),
        Value::Path(_) => {
            let mut ctx = crate::value::Context::new();
            let b = ev.coerce_to_string(&v, Pos::NONE, "", false, false, &mut ctx)?;
            Ok(String::from_utf8_lossy(&b).into_owned())
        }
        other => Err(EvalError::type_error(format!(
            "'{}' is not a string but {}",
            path.join("."),
            other.type_desc()
        ))),
    }
}

/// An eval-cache cursor's `isDerivation`: a set whose `type` is the string `"derivation"`; a
/// `type` that is not a string is an error (as `getString` makes it), a value that is not a set
/// is not a derivation.
fn is_derivation(ev: &mut Evaluator, v: &Value, path: &[String]) -> Result<bool, EvalError> {
    let Some(t) = maybe_attr(ev, v, "type")? else {
        return Ok(false);
    };
    let mut tp = path.to_vec();
    tp.push("type".into());
    Ok(get_string(ev, &t, &tp)? == "derivation")
}

/// One node of `nix flake show`'s walk.
enum Shown {
    Tree(Vec<(String, Shown)>),
    Leaf(Vec<(String, String)>, String),
    Omitted(String),
    /// Nothing printed (JSON: `{}`): a `legacyPackages` value deeper than a system that is not
    /// a derivation, or one whose evaluation failed before its header was printed.
    Nothing,
}

struct Show<'a> {
    ev: &'a mut Evaluator,
    opts: &'a ShowOptions,
    json: bool,
    /// Nix's progress lines (`evaluating 'a.b'...`) and warnings, in order.
    warnings: Vec<String>,
}

impl Show<'_> {
    fn has_content(&mut self, v: &Value, path: &[String], attr: &str) -> bool {
        let mut p2 = path.to_vec();
        p2.push(attr.to_string());
        let r = (|| -> Result<bool, EvalError> {
            let v2 = get_attr(self.ev, v, attr, path)?;
            let first = p2[0].as_str();
            let container = (matches!(
                first,
                "apps" | "checks" | "devShells" | "legacyPackages" | "packages"
            ) && (p2.len() == 1 || p2.len() == 2))
                || (p2.len() == 1
                    && matches!(
                        first,
                        "formatter" | "nixosConfigurations" | "nixosModules" | "overlays"
                    ));
            if container {
                for sub in attr_names(self.ev, &v2, &p2)? {
                    if self.has_content(&v2, &p2, &sub) {
                        return Ok(true);
                    }
                }
                return Ok(false);
            }
            Ok(true)
        })();
        r.unwrap_or(true)
    }

    fn recurse(&mut self, v: &Value, path: &[String]) -> Result<Shown, EvalError> {
        let mut out = Vec::new();
        // Nix prints the header before listing the attributes: under `legacyPackages` (whose
        // errors are ignored) a value that fails here still shows its header.
        let names = match attr_names(self.ev, v, path) {
            Ok(n) => n,
            Err(_) if path.first().is_some_and(|p| p == "legacyPackages") => {
                return Ok(Shown::Tree(Vec::new()));
            }
            Err(e) => return Err(e),
        };
        let mut kept = Vec::new();
        for n in names {
            if self.has_content(v, path, &n) {
                kept.push(n);
            }
        }
        for n in kept {
            let v2 = get_attr(self.ev, v, &n, path)?;
            let mut p2 = path.to_vec();
            p2.push(n.clone());
            let s = self.visit(&v2, &p2)?;
            out.push((n, s));
        }
        Ok(Shown::Tree(out))
    }

    fn show_derivation(&mut self, v: &Value, path: &[String]) -> Result<Shown, EvalError> {
        let mut np = path.to_vec();
        np.push("name".into());
        let name_v = get_attr(self.ev, v, "name", path)?;
        let name = get_string(self.ev, &name_v, &np)?;
        let mut description = None;
        if let Some(meta) = maybe_attr(self.ev, v, "meta")?
            && let Some(d) = maybe_attr(self.ev, &meta, "description")?
        {
            let mut dp = path.to_vec();
            dp.push("meta".into());
            dp.push("description".into());
            description = Some(get_string(self.ev, &d, &dp)?);
        }
        let kind = if (path.len() == 2 && path[0] == "devShell")
            || (path.len() >= 2 && path[0] == "devShells")
        {
            "development environment"
        } else if (path.len() == 3 && path[0] == "checks")
            || (!path.is_empty() && path[0] == "hydraJobs")
        {
            "derivation"
        } else {
            "package"
        };
        Ok(Shown::Leaf(
            vec![
                (
                    "description".into(),
                    json_str(&description.unwrap_or_default()),
                ),
                ("name".into(), json_str(&name)),
                ("type".into(), json_str("derivation")),
            ],
            format!("{kind} '{name}'"),
        ))
    }

    fn omitted(&mut self, path: &[String], why: &str) -> Shown {
        if self.json {
            self.warnings.push(format!(
                "warning: {} omitted (use '{why}' to show)",
                path.join(".")
            ));
        }
        Shown::Omitted(why.to_string())
    }

    fn visit(&mut self, v: &Value, path: &[String]) -> Result<Shown, EvalError> {
        self.warnings
            .push(format!("evaluating '{}'...", path.join(".")));
        let r = self.visit_inner(v, path);
        match r {
            Err(_) if !path.is_empty() && path[0] == "legacyPackages" => Ok(Shown::Nothing),
            r => r,
        }
    }

    fn visit_inner(&mut self, v: &Value, path: &[String]) -> Result<Shown, EvalError> {
        let first = path.first().map(String::as_str).unwrap_or("");
        let n = path.len();
        if n == 0
            || (n == 1
                && matches!(
                    first,
                    "defaultPackage"
                        | "devShell"
                        | "formatter"
                        | "nixosConfigurations"
                        | "nixosModules"
                        | "defaultApp"
                        | "templates"
                        | "overlays"
                ))
            || ((n == 1 || n == 2) && matches!(first, "checks" | "packages" | "devShells" | "apps"))
        {
            return self.recurse(v, path);
        }
        if (n == 2 && matches!(first, "defaultPackage" | "devShell" | "formatter"))
            || (n == 3 && matches!(first, "checks" | "packages" | "devShells"))
        {
            if !self.opts.all_systems && path[1] != self.opts.system {
                return Ok(self.omitted(path, "--all-systems"));
            }
            if is_derivation(self.ev, v, path)? {
                return self.show_derivation(v, path);
            }
            return Err(EvalError::eval("expected a derivation"));
        }
        if first == "hydraJobs" {
            if is_derivation(self.ev, v, path)? {
                return self.show_derivation(v, path);
            }
            return self.recurse(v, path);
        }
        if first == "legacyPackages" {
            if n == 1 {
                return self.recurse(v, path);
            }
            if !self.opts.legacy {
                return Ok(self.omitted(path, "--legacy"));
            }
            if !self.opts.all_systems && path[1] != self.opts.system {
                return Ok(self.omitted(path, "--all-systems"));
            }
            if is_derivation(self.ev, v, path)? {
                return self.show_derivation(v, path);
            }
            if n <= 2 {
                return self.recurse(v, path);
            }
            return Ok(Shown::Nothing);
        }
        if (n == 2 && first == "defaultApp") || (n == 3 && first == "apps") {
            let ty = maybe_attr(self.ev, v, "type")?;
            let mut description = None;
            if let Some(meta) = maybe_attr(self.ev, v, "meta")?
                && let Some(d) = maybe_attr(self.ev, &meta, "description")?
            {
                let mut dp = path.to_vec();
                dp.push("meta".into());
                dp.push("description".into());
                description = Some(get_string(self.ev, &d, &dp)?);
            }
            let is_app = match ty {
                Some(t) => {
                    let mut tp = path.to_vec();
                    tp.push("type".into());
                    get_string(self.ev, &t, &tp)? == "app"
                }
                None => false,
            };
            if !is_app {
                return Err(EvalError::eval("not an app definition"));
            }
            let mut members = vec![("type".to_string(), json_str("app"))];
            if let Some(d) = &description {
                members.push(("description".into(), json_str(d)));
            }
            let text = format!(
                "app: \x1b[1m{}\x1b[0m",
                description.as_deref().unwrap_or("no description")
            );
            return Ok(Shown::Leaf(members, text));
        }
        if (n == 1 && first == "defaultTemplate") || (n == 2 && first == "templates") {
            let d = get_attr(self.ev, v, "description", path)?;
            let mut dp = path.to_vec();
            dp.push("description".into());
            let d = get_string(self.ev, &d, &dp)?;
            return Ok(Shown::Leaf(
                vec![
                    ("description".into(), json_str(&d)),
                    ("type".into(), json_str("template")),
                ],
                format!("template: \x1b[1m{d}\x1b[0m"),
            ));
        }
        let (ty, desc) = if (n == 1 && first == "overlay") || (n == 2 && first == "overlays") {
            ("nixpkgs-overlay", "Nixpkgs overlay")
        } else if n == 2 && first == "nixosConfigurations" {
            ("nixos-configuration", "NixOS configuration")
        } else if (n == 1 && first == "nixosModule") || (n == 2 && first == "nixosModules") {
            ("nixos-module", "NixOS module")
        } else {
            ("unknown", "unknown")
        };
        Ok(Shown::Leaf(
            vec![("type".into(), json_str(ty))],
            format!("\x1b[35;1m{desc}\x1b[0m"),
        ))
    }
}

fn shown_json(s: &Shown) -> String {
    match s {
        Shown::Tree(children) => json_object(
            children
                .iter()
                .map(|(k, v)| (k.clone(), shown_json(v)))
                .collect(),
        ),
        Shown::Leaf(members, _) => json_object(members.clone()),
        Shown::Omitted(_) | Shown::Nothing => "{}".to_string(),
    }
}

fn shown_text(s: &Shown, header: &str, next_prefix: &str, out: &mut String) {
    match s {
        Shown::Tree(children) => {
            let _ = writeln!(out, "{header}");
            for (i, (name, child)) in children.iter().enumerate() {
                let last = i + 1 == children.len();
                let h = format!(
                    "\x1b[32;1m{next_prefix}{}\x1b[0m\x1b[1m{name}\x1b[0m",
                    if last { "└───" } else { "├───" }
                );
                let np = format!("{next_prefix}{}", if last { "    " } else { "│   " });
                shown_text(child, &h, &np, out);
            }
        }
        Shown::Leaf(_, text) => {
            let _ = writeln!(out, "{header}: {text}");
        }
        Shown::Omitted(why) => {
            let _ = writeln!(
                out,
                "{header} \x1b[35;1momitted\x1b[0m (use '{why}' to show)"
            );
        }
        Shown::Nothing => {}
    }
}

/// `nix flake show [--json]`: (stdout, warnings).
pub fn show(
    ev: &mut Evaluator,
    locked: &LockedFlake,
    outputs: &Value,
    opts: &ShowOptions,
    json: bool,
) -> Result<(String, Vec<String>), EvalError> {
    let mut s = Show {
        ev,
        opts,
        json,
        warnings: Vec::new(),
    };
    let tree = match s.visit(outputs, &[]) {
        Ok(t) => t,
        Err(e) => {
            // Nix has printed its progress lines and warnings before the error.
            let warnings = std::mem::take(&mut s.warnings);
            s.ev.stderr.extend(warnings);
            return Err(e);
        }
    };
    let warnings = std::mem::take(&mut s.warnings);
    if json {
        let mut o = shown_json(&tree);
        o.push('\n');
        Ok((o, warnings))
    } else {
        let mut o = String::new();
        let header = format!("\x1b[1m{}\x1b[0m", locked.flake.locked.display());
        shown_text(&tree, &header, "", &mut o);
        Ok((o, warnings))
    }
}

/// Converts a flake error to an evaluation error (keeping an evaluation error's frames).
pub fn to_eval(e: FlakeError) -> EvalError {
    e.into_eval()
}

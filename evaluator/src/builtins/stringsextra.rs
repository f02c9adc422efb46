//! String and version builtins: replaceStrings, baseNameOf, dirOf, parseDrvName,
//! compareVersions, splitVersion.
//!
//! They exist as a family because they are pure byte-string transformations with Nix's exact
//! (sometimes legacy) edge cases. Invariants: string contexts of every input that contributes to
//! the result are propagated; version components are compared exactly like Nix's `names.cc`
//! (numbers that do not fit a C `int` are not numbers).

use std::collections::HashMap;
use std::rc::Rc;

use crate::builtins::Registry;
use crate::error::{EvalError, Result};
use crate::eval::Evaluator;
use crate::source::Pos;
use crate::symbol::Symbol;
use crate::value::{Attr, Attrs, Context, NixString, Value};

pub(crate) fn register(r: &mut Registry) {
    r.primop("__replaceStrings", 3, prim_replace_strings);
    r.primop("baseNameOf", 1, prim_base_name_of);
    r.primop("dirOf", 1, prim_dir_of);
    r.primop("__parseDrvName", 1, prim_parse_drv_name);
    r.primop("__compareVersions", 2, prim_compare_versions);
    r.primop("__splitVersion", 1, prim_split_version);
}

fn add_ctx(ctx: &mut Context, s: &NixString) {
    if let Some(c) = &s.context {
        ctx.extend(c.iter().cloned());
    }
}

fn prim_replace_strings(ev: &mut Evaluator, pos: Pos, args: &[Value]) -> Result<Value> {
    let from_l = ev.force_list(
        &args[0],
        pos,
        "while evaluating the first argument passed to builtins.replaceStrings",
    )?;
    let to_l = ev.force_list(
        &args[1],
        pos,
        "while evaluating the second argument passed to builtins.replaceStrings",
    )?;
    if from_l.len() != to_l.len() {
        return Err(EvalError::eval(
            "'from' and 'to' arguments passed to builtins.replaceStrings have different lengths",
        )
        .at(pos));
    }
    let mut from = Vec::with_capacity(from_l.len());
    for x in from_l.iter() {
        from.push(ev.force_string(
            x,
            pos,
            "while evaluating one of the strings to replace passed to builtins.replaceStrings",
        )?);
    }
    let s = ev.force_string(
        &args[2],
        pos,
        "while evaluating the third argument passed to builtins.replaceStrings",
    )?;
    let mut context = Context::new();
    add_ctx(&mut context, &s);
    let mut cache: HashMap<usize, Rc<NixString>> = HashMap::new();
    let bytes = &s.bytes;
    let mut res = Vec::with_capacity(bytes.len());
    let mut p = 0;
    while p <= bytes.len() {
        let mut found = false;
        for (k, f) in from.iter().enumerate() {
            if bytes[p..].starts_with(&f.bytes) {
                found = true;
                let t = match cache.get(&k) {
                    Some(t) => t.clone(),
                    None => {
                        let t = ev.force_string(
                            &to_l[k],
                            pos,
                            "while evaluating one of the replacement strings passed to builtins.replaceStrings",
                        )?;
                        add_ctx(&mut context, &t);
                        cache.insert(k, t.clone());
                        t
                    }
                };
                res.extend_from_slice(&t.bytes);
                if f.bytes.is_empty() {
                    if p < bytes.len() {
                        res.push(bytes[p]);
                    }
                    p += 1;
                } else {
                    p += f.bytes.len();
                }
                break;
            }
        }
        if !found {
            if p < bytes.len() {
                res.push(bytes[p]);
            }
            p += 1;
        }
    }
    Ok(Value::string_ctx(res, context))
}

/// Nix's `legacyBaseNameOf`: one trailing slash is ignored.
fn legacy_base_name_of(path: &[u8]) -> &[u8] {
    if path.is_empty() {
        return path;
    }
    let mut last = path.len() - 1;
    if path[last] == b'/' && last > 0 {
        last -= 1;
    }
    let start = path[..=last]
        .iter()
        .rposition(|c| *c == b'/')
        .map(|i| i + 1)
        .unwrap_or(0);
    &path[start..=last]
}

fn prim_base_name_of(ev: &mut Evaluator, pos: Pos, args: &[Value]) -> Result<Value> {
    let mut ctx = Context::new();
    let s = ev.coerce_to_string(
        &args[0],
        pos,
        "while evaluating the first argument passed to builtins.baseNameOf",
        false,
        false,
        &mut ctx,
    )?;
    Ok(Value::string_ctx(legacy_base_name_of(&s).to_vec(), ctx))
}

/// `std::filesystem::path::parent_path` on POSIX, with Nix's "." for paths without a slash.
fn dir_of_str(p: &[u8]) -> Vec<u8> {
    if !p.contains(&b'/') {
        return b".".to_vec();
    }
    // Split into the root directory (leading slashes) and the relative part.
    let root_len = p.iter().take_while(|c| **c == b'/').count();
    let rel = &p[root_len..];
    if rel.is_empty() {
        // No relative path: the path itself.
        return p.to_vec();
    }
    // Components of the relative part (a trailing slash yields a final empty component).
    let mut comps: Vec<(usize, usize)> = Vec::new(); // (start, len) in `p`
    let mut i = root_len;
    loop {
        let start = i;
        while i < p.len() && p[i] != b'/' {
            i += 1;
        }
        comps.push((start, i - start));
        if i >= p.len() {
            break;
        }
        while i < p.len() && p[i] == b'/' {
            i += 1;
        }
        if i >= p.len() {
            comps.push((i, 0));
            break;
        }
    }
    if comps.len() >= 2 {
        let (s, l) = comps[comps.len() - 2];
        p[..s + l].to_vec()
    } else if root_len > 0 {
        // The parent is the root directory component (a single slash).
        b"/".to_vec()
    } else {
        Vec::new()
    }
}

fn prim_dir_of(ev: &mut Evaluator, pos: Pos, args: &[Value]) -> Result<Value> {
    let v = ev.force(&args[0], pos)?;
    if let Value::Path(p) = &v {
        if &**p == "/" {
            return Ok(v.clone());
        }
        let parent = match p.rfind('/') {
            Some(0) | None => "/",
            Some(i) => &p[..i],
        };
        return Ok(Value::Path(Rc::new(parent.to_string())));
    }
    let mut ctx = Context::new();
    let s = ev.coerce_to_string(
        &v,
        pos,
        "while evaluating the first argument passed to 'builtins.dirOf'",
        false,
        false,
        &mut ctx,
    )?;
    Ok(Value::string_ctx(dir_of_str(&s), ctx))
}

/// Nix's `DrvName`: the name ends at the first `-` not followed by a letter; the rest is the
/// version (`""` when there is none).
pub(crate) fn parse_drv_name(b: &[u8]) -> (&[u8], &[u8]) {
    for i in 0..b.len() {
        if b[i] == b'-' && i + 1 < b.len() && !b[i + 1].is_ascii_alphabetic() {
            return (&b[..i], &b[i + 1..]);
        }
    }
    (b, b"")
}

fn prim_parse_drv_name(ev: &mut Evaluator, pos: Pos, args: &[Value]) -> Result<Value> {
    let s = ev.force_string_no_ctx(
        &args[0],
        pos,
        "while evaluating the first argument passed to builtins.parseDrvName",
    )?;
    let (name, version) = parse_drv_name(&s.bytes);
    Ok(Value::attrs(Attrs::from_unsorted(vec![
        Attr {
            name: Symbol::intern("name"),
            value: Value::string(name.to_vec()),
            pos: Pos::NONE,
        },
        Attr {
            name: Symbol::intern("version"),
            value: Value::string(version.to_vec()),
            pos: Pos::NONE,
        },
    ])))
}

/// Nix's `nextComponent`: skips separators, then takes a run of digits or of other characters.
fn next_component<'a>(s: &'a [u8], p: &mut usize) -> &'a [u8] {
    while *p < s.len() && (s[*p] == b'.' || s[*p] == b'-') {
        *p += 1;
    }
    let start = *p;
    if *p >= s.len() {
        return &s[start..start];
    }
    if s[*p].is_ascii_digit() {
        while *p < s.len() && s[*p].is_ascii_digit() {
            *p += 1;
        }
    } else {
        while *p < s.len() && !s[*p].is_ascii_digit() && s[*p] != b'.' && s[*p] != b'-' {
            *p += 1;
        }
    }
    &s[start..*p]
}

/// `string2Int<int>`: only all-digit strings that fit a C `int`.
fn as_int(c: &[u8]) -> Option<i32> {
    if c.is_empty() {
        return None;
    }
    std::str::from_utf8(c).ok()?.parse::<i32>().ok()
}

fn components_lt(c1: &[u8], c2: &[u8]) -> bool {
    let n1 = as_int(c1);
    let n2 = as_int(c2);
    match (n1, n2) {
        (Some(a), Some(b)) => a < b,
        _ if c1.is_empty() && n2.is_some() => true,
        _ if c1 == b"pre" && c2 != b"pre" => true,
        _ if c2 == b"pre" => false,
        (_, Some(_)) => true,
        (Some(_), _) => false,
        _ => c1 < c2,
    }
}

/// Nix's `compareVersions`.
pub fn compare_versions(v1: &[u8], v2: &[u8]) -> std::cmp::Ordering {
    let (mut p1, mut p2) = (0, 0);
    while p1 < v1.len() || p2 < v2.len() {
        let c1 = next_component(v1, &mut p1);
        let c2 = next_component(v2, &mut p2);
        if components_lt(c1, c2) {
            return std::cmp::Ordering::Less;
        }
        if components_lt(c2, c1) {
            return std::cmp::Ordering::Greater;
        }
    }
    std::cmp::Ordering::Equal
}

fn prim_compare_versions(ev: &mut Evaluator, pos: Pos, args: &[Value]) -> Result<Value> {
    let a = ev.force_string_no_ctx(
        &args[0],
        pos,
        "while evaluating the first argument passed to builtins.compareVersions",
    )?;
    let b = ev.force_string_no_ctx(
        &args[1],
        pos,
        "while evaluating the second argument passed to builtins.compareVersions",
    )?;
    Ok(Value::Int(match compare_versions(&a.bytes, &b.bytes) {
        std::cmp::Ordering::Less => -1,
        std::cmp::Ordering::Equal => 0,
        std::cmp::Ordering::Greater => 1,
    }))
}

fn prim_split_version(ev: &mut Evaluator, pos: Pos, args: &[Value]) -> Result<Value> {
    let s = ev.force_string_no_ctx(
        &args[0],
        pos,
        "while evaluating the first argument passed to builtins.splitVersion",
    )?;
    let mut p = 0;
    let mut out = Vec::new();
    while p < s.bytes.len() {
        let c = next_component(&s.bytes, &mut p);
        if c.is_empty() {
            break;
        }
        out.push(Value::string(c.to_vec()));
    }
    Ok(Value::list(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dir_of_like_std_parent_path() {
        assert_eq!(dir_of_str(b"/a/b"), b"/a");
        assert_eq!(dir_of_str(b"/a/b/"), b"/a/b");
        assert_eq!(dir_of_str(b"/a"), b"/");
        assert_eq!(dir_of_str(b"a"), b".");
        assert_eq!(dir_of_str(b"a/b"), b"a");
        assert_eq!(dir_of_str(b"/"), b"/");
    }

    #[test]
    fn versions() {
        use std::cmp::Ordering::*;
        assert_eq!(compare_versions(b"1.0", b"2.3"), Less);
        assert_eq!(compare_versions(b"2.1", b"2.3"), Less);
        assert_eq!(compare_versions(b"2.3", b"2.3"), Equal);
        assert_eq!(compare_versions(b"2.5", b"2.3"), Greater);
        assert_eq!(compare_versions(b"2.3pre1", b"2.3"), Less);
        assert_eq!(compare_versions(b"2.3a", b"2.3.1"), Less);
    }
}

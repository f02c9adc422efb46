//! URLs as Nix's `parseURL` understands them (`libutil/url.cc`): a regular-expression based
//! parser that is deliberately more lenient and more literal than WHATWG URLs (no
//! normalisation, query as a sorted map, `scheme:path` without `//`).
//!
//! Invariant: [`ParsedUrl::to_string`] renders exactly what Nix's `ParsedURL::to_string` does,
//! so printed flake references are byte-identical.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::LazyLock;

use regex::Regex;

use super::FetchError;

const PCT_ENCODED: &str = "(?:%[0-9a-fA-F][0-9a-fA-F])";
const SCHEME_NAME: &str = "(?:[a-z][a-z0-9+.-]*)";
const UNRESERVED: &str = "(?:[a-zA-Z0-9-._~])";
const SUBDELIMS: &str = "(?:[!$&'\"()*+,;=])";

/// A Git ref (branch or tag name) as Nix's `refRegexS` accepts it.
pub const REF_REGEX_S: &str = r"[a-zA-Z0-9@][a-zA-Z0-9_.\/@+-]*";
/// A Git revision: 40 hex digits.
pub const REV_REGEX_S: &str = "[0-9a-fA-F]{40}";
/// A flake id.
pub const FLAKE_ID_REGEX_S: &str = "[a-zA-Z][a-zA-Z0-9_-]*";

fn ipv6_address() -> String {
    let seg = r"[0-9a-fA-F:]+(?:%\w+)?";
    format!(r"(?:\[{seg}\]|{seg})")
}
fn hostname() -> String {
    format!("(?:(?:{UNRESERVED}|{PCT_ENCODED}|{SUBDELIMS})*)")
}
fn pchar() -> String {
    format!("(?:{UNRESERVED}|{PCT_ENCODED}|{SUBDELIMS}|[:@])")
}
/// Nix's `fragmentRegex`.
pub fn fragment_regex_s() -> String {
    format!("(?:{}|[/? \"^])*", pchar())
}
/// Nix's `refAndOrRevRegex` (three groups: rev, ref, rev-after-ref).
pub fn ref_and_or_rev_regex_s() -> String {
    format!("(?:({REV_REGEX_S})|(?:({REF_REGEX_S})(?:/({REV_REGEX_S}))?))")
}

fn anchored(s: &str) -> Regex {
    Regex::new(&format!("^(?:{s})$")).expect("the regular expression is a constant that compiles")
}

static URI_REGEX: LazyLock<Regex> = LazyLock::new(|| {
    let user = format!("(?:(?:{UNRESERVED}|{PCT_ENCODED}|{SUBDELIMS}|:)*)");
    let host = format!("(?:{}|{})", ipv6_address(), hostname());
    let authority = format!("(?:{user}@)?{host}(?::[0-9]+)?");
    let segment = format!("(?:{}*)", pchar());
    let abs_path = format!("(?:(?:/{segment})*/?)");
    let path = format!("(?:{segment}(?:/{segment})*/?)");
    let query = format!("(?:{}|[/? \"])*", pchar());
    anchored(&format!(
        "(({SCHEME_NAME}):(?://({authority})({abs_path})|(/?{path})))(?:\\?({query}))?(?:#({}))?",
        fragment_regex_s()
    ))
});

pub(crate) static REF_REGEX: LazyLock<Regex> = LazyLock::new(|| anchored(REF_REGEX_S));
pub(crate) static REV_REGEX: LazyLock<Regex> = LazyLock::new(|| anchored(REV_REGEX_S));
pub(crate) static FLAKE_ID_REGEX: LazyLock<Regex> = LazyLock::new(|| anchored(FLAKE_ID_REGEX_S));
/// Searched (not anchored): any match makes a ref invalid.
pub(crate) static BAD_GIT_REF_REGEX: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"//|^[./]|/\.|\.\.|[[:cntrl:][:space:]:?^~\[]|\\|\*|\.lock$|\.lock/|@\{|[/.]$|^@$|^$",
    )
    .expect("the regular expression is a constant that compiles")
});

/// A parsed URL (`ParsedURL`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ParsedUrl {
    pub scheme: String,
    /// `Some("")` for `file:///x`, `None` for `path:/x`.
    pub authority: Option<String>,
    /// Percent-decoded.
    pub path: String,
    /// Percent-decoded, sorted by name.
    pub query: BTreeMap<String, String>,
    /// Percent-decoded.
    pub fragment: String,
}

/// `parseUrlScheme`: `tarball+https` → (`Some("tarball")`, `"https"`).
pub fn parse_url_scheme(scheme: &str) -> (Option<&str>, &str) {
    match scheme.split_once('+') {
        Some((app, transport)) => (Some(app), transport),
        None => (None, scheme),
    }
}

/// `parseURL`.
pub fn parse_url(url: &str) -> Result<ParsedUrl, FetchError> {
    let Some(m) = URI_REGEX.captures(url) else {
        return Err(FetchError::bad_url(format!("'{url}' is not a valid URL")));
    };
    let scheme = m.get(2).map_or("", |x| x.as_str()).to_owned();
    let authority = m.get(3).map(|x| x.as_str().to_owned());
    let mut path = match m.get(4) {
        Some(p) if m.get(3).is_some() => p.as_str().to_owned(),
        _ => m.get(5).map_or("", |x| x.as_str()).to_owned(),
    };
    let query = m.get(6).map_or("", |x| x.as_str());
    let fragment = m.get(7).map_or("", |x| x.as_str());
    let transport_is_file = parse_url_scheme(&scheme).1 == "file";
    if let Some(a) = &authority
        && !a.is_empty()
        && transport_is_file
    {
        return Err(FetchError::bad_url(format!(
            "file:// URL '{url}' has unexpected authority '{a}'"
        )));
    }
    if transport_is_file && path.is_empty() {
        path = "/".to_owned();
    }
    Ok(ParsedUrl {
        scheme,
        authority,
        path: percent_decode(&path)?,
        query: decode_query(query)?,
        fragment: percent_decode(fragment)?,
    })
}

/// `percentDecode`.
pub fn percent_decode(s: &str) -> Result<String, FetchError> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    let bad = || FetchError::bad_url(format!("invalid URI parameter '{s}'"));
    while i < b.len() {
        if b[i] == b'%' {
            if i + 2 >= b.len() {
                return Err(bad());
            }
            let hex = |c: u8| (c as char).to_digit(16);
            // Nix uses stoul on the two characters: a leading hex digit is required and a
            // second non-hex character just ends the number.
            let Some(d1) = hex(b[i + 1]) else {
                return Err(bad());
            };
            let v = match hex(b[i + 2]) {
                Some(d2) => d1 * 16 + d2,
                None => d1,
            };
            out.push(v as u8);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// `decodeQuery`: `a=b&c=d`; a parameter without `=` is ignored (Nix warns).
pub fn decode_query(q: &str) -> Result<BTreeMap<String, String>, FetchError> {
    let mut res = BTreeMap::new();
    for s in q.split('&').filter(|s| !s.is_empty()) {
        match s.split_once('=') {
            None => {
                tracing::warn!("dubious URI query '{s}' is missing equal sign '='");
            }
            Some((k, v)) => {
                // std::map::emplace: the first occurrence wins.
                let v = percent_decode(v)?;
                res.entry(k.to_owned()).or_insert(v);
            }
        }
    }
    Ok(res)
}

const ALLOWED_IN_QUERY: &str = ":@/?";
const ALLOWED_IN_PATH: &str = ":@/";

/// `percentEncode`: unreserved characters and `keep` stay, every other byte becomes `%XX`.
pub fn percent_encode(s: &str, keep: &str) -> String {
    let mut res = String::with_capacity(s.len());
    for &c in s.as_bytes() {
        if c.is_ascii_alphanumeric() || b"-._~".contains(&c) || keep.as_bytes().contains(&c) {
            res.push(c as char);
        } else {
            res.push_str(&format!("%{c:02X}"));
        }
    }
    res
}

/// `encodeQuery`.
pub fn encode_query(q: &BTreeMap<String, String>) -> String {
    let mut res = String::new();
    for (i, (k, v)) in q.iter().enumerate() {
        if i > 0 {
            res.push('&');
        }
        res.push_str(&percent_encode(k, ALLOWED_IN_QUERY));
        res.push('=');
        res.push_str(&percent_encode(v, ALLOWED_IN_QUERY));
    }
    res
}

impl fmt::Display for ParsedUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.scheme)?;
        f.write_str(":")?;
        if let Some(a) = &self.authority {
            write!(f, "//{a}")?;
        }
        f.write_str(&percent_encode(&self.path, ALLOWED_IN_PATH))?;
        if !self.query.is_empty() {
            write!(f, "?{}", encode_query(&self.query))?;
        }
        if !self.fragment.is_empty() {
            write!(f, "#{}", percent_encode(&self.fragment, ""))?;
        }
        Ok(())
    }
}

/// `fixGitURL`: `user@host:path` → `ssh://user@host/path`, bare paths → `file://` URLs.
pub fn fix_git_url(url: &str) -> String {
    static SCP: LazyLock<Regex> = LazyLock::new(|| anchored("([^/]*)@(.*):(.*)"));
    if !url.starts_with('/')
        && let Some(c) = SCP.captures(url)
    {
        let g = |i| c.get(i).map_or("", |m: regex::Match<'_>| m.as_str());
        return format!("ssh://{}@{}/{}", g(1), g(2), g(3));
    }
    if url.starts_with("file:") {
        return url.to_owned();
    }
    if !url.contains("://") {
        return ParsedUrl {
            scheme: "file".into(),
            authority: Some(String::new()),
            path: url.to_owned(),
            ..Default::default()
        }
        .to_string();
    }
    url.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints() {
        let u = parse_url("git+https://example.org/a%20b?ref=x&a=1#frag").expect("valid");
        assert_eq!(u.scheme, "git+https");
        assert_eq!(u.authority.as_deref(), Some("example.org"));
        assert_eq!(u.path, "/a b");
        assert_eq!(u.query.get("ref").map(String::as_str), Some("x"));
        assert_eq!(
            u.to_string(),
            "git+https://example.org/a%20b?a=1&ref=x#frag"
        );
        let p = parse_url("path:/foo").expect("valid");
        assert_eq!(p.authority, None);
        assert_eq!(p.to_string(), "path:/foo");
        assert!(parse_url("not a url").is_err());
        assert!(parse_url("file://host/x").is_err());
    }

    #[test]
    fn git_url_fixing() {
        assert_eq!(
            fix_git_url("git@github.com:a/b"),
            "ssh://git@github.com/a/b"
        );
        assert_eq!(fix_git_url("/x/y"), "file:///x/y");
        assert_eq!(fix_git_url("https://x/y"), "https://x/y");
    }
}

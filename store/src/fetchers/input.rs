//! Fetcher inputs: one typed variant per scheme Nix 2.26 knows (`path`, `git`, `github`,
//! `gitlab`, `sourcehut`, `tarball`, `file`, `indirect`), converted to and from attribute sets
//! (flake.lock `locked`/`original`, `fetchTree` arguments, registry entries) and URLs.
//!
//! Invariant: `Input::from_attrs(i.to_attrs()) == i` for every input, and every conversion
//! accepts, rejects and prints exactly what Nix's `InputScheme`s do (same attribute sets, same
//! URL renderings, same error messages).

use std::collections::BTreeMap;

use crate::hash::{Hash, HashAlgo};

use super::FetchError;
use super::attrs::{
    Attr, Attrs, attrs_to_json_string, attrs_to_query, get_str, maybe_get_bool, maybe_get_int,
    maybe_get_str,
};
use super::url::{
    BAD_GIT_REF_REGEX, FLAKE_ID_REGEX, ParsedUrl, REF_REGEX, REV_REGEX, fix_git_url, parse_url,
    parse_url_scheme,
};

/// The forges whose archives Nix downloads as tarballs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Forge {
    GitHub,
    GitLab,
    SourceHut,
}

impl Forge {
    /// The scheme name (`github`, `gitlab`, `sourcehut`).
    pub fn scheme(self) -> &'static str {
        match self {
            Forge::GitHub => "github",
            Forge::GitLab => "gitlab",
            Forge::SourceHut => "sourcehut",
        }
    }
    /// The host used when the input has no `host` attribute.
    pub fn default_host(self) -> &'static str {
        match self {
            Forge::GitHub => "github.com",
            Forge::GitLab => "gitlab.com",
            Forge::SourceHut => "git.sr.ht",
        }
    }
}

/// `type = "path"`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PathInput {
    pub path: String,
    pub rev: Option<String>,
    pub rev_count: Option<u64>,
    pub last_modified: Option<u64>,
    pub nar_hash: Option<String>,
}

/// `type = "git"`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GitInput {
    /// Always a URL (after `fixGitURL`): `file:///repo`, `https://…`, `ssh://…`.
    pub url: String,
    pub ref_: Option<String>,
    pub rev: Option<String>,
    pub shallow: Option<bool>,
    pub submodules: Option<bool>,
    pub export_ignore: Option<bool>,
    pub last_modified: Option<u64>,
    pub rev_count: Option<u64>,
    pub nar_hash: Option<String>,
    pub all_refs: Option<bool>,
    pub name: Option<String>,
    pub dirty_rev: Option<String>,
    pub dirty_short_rev: Option<String>,
    pub verify_commit: Option<bool>,
    pub keytype: Option<String>,
    pub public_key: Option<String>,
    pub public_keys: Option<String>,
}

/// `type = "github" | "gitlab" | "sourcehut"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForgeInput {
    pub forge: Forge,
    pub owner: String,
    pub repo: String,
    pub ref_: Option<String>,
    pub rev: Option<String>,
    pub nar_hash: Option<String>,
    pub last_modified: Option<u64>,
    pub host: Option<String>,
    pub tree_hash: Option<String>,
}

/// `type = "hg"` (parsed and printed; fetching Mercurial repositories is not supported).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MercurialInput {
    pub url: String,
    pub ref_: Option<String>,
    pub rev: Option<String>,
    pub rev_count: Option<u64>,
    pub nar_hash: Option<String>,
    pub name: Option<String>,
}

/// `type = "tarball" | "file"`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CurlInput {
    pub url: String,
    pub nar_hash: Option<String>,
    pub name: Option<String>,
    pub unpack: Option<bool>,
    pub rev: Option<String>,
    pub rev_count: Option<u64>,
    pub last_modified: Option<u64>,
}

/// `type = "indirect"`: a name looked up in the flake registries.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct IndirectInput {
    pub id: String,
    pub ref_: Option<String>,
    pub rev: Option<String>,
    pub nar_hash: Option<String>,
}

/// The scheme-specific part of an input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InputKind {
    Path(PathInput),
    Git(GitInput),
    Forge(ForgeInput),
    Mercurial(MercurialInput),
    Tarball(CurlInput),
    File(CurlInput),
    Indirect(IndirectInput),
    /// A `type` Nix does not know (or we do not support, e.g. `hg`): kept verbatim; most
    /// operations on it fail, as in Nix.
    Unsupported(Attrs),
}

/// A fetcher input (Nix's `fetchers::Input`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Input {
    pub kind: InputKind,
    /// `__final`: the attributes are the result of a fetch and must not change.
    pub is_final: bool,
}

/// Settings that change how inputs are interpreted or fetched.
#[derive(Debug, Clone)]
pub struct InputSettings {
    /// `trust-tarballs-from-git-forges` (default true): a forge input with a `rev` is locked
    /// even without a `narHash`.
    pub trust_tarballs_from_git_forges: bool,
    /// `allow-dirty-locks` (default false).
    pub allow_dirty_locks: bool,
}

impl Default for InputSettings {
    fn default() -> Self {
        InputSettings {
            trust_tarballs_from_git_forges: true,
            allow_dirty_locks: false,
        }
    }
}

const SCHEME_NAMES: [&str; 9] = [
    "file",
    "git",
    "github",
    "gitlab",
    "hg",
    "indirect",
    "path",
    "sourcehut",
    "tarball",
];

fn allowed_attrs(scheme: &str) -> &'static [&'static str] {
    match scheme {
        "path" => &["path", "rev", "revCount", "lastModified", "narHash"],
        "git" => &[
            "url",
            "ref",
            "rev",
            "shallow",
            "submodules",
            "exportIgnore",
            "lastModified",
            "revCount",
            "narHash",
            "allRefs",
            "name",
            "dirtyRev",
            "dirtyShortRev",
            "verifyCommit",
            "keytype",
            "publicKey",
            "publicKeys",
        ],
        "github" | "gitlab" | "sourcehut" => &[
            "owner",
            "repo",
            "ref",
            "rev",
            "narHash",
            "lastModified",
            "host",
            "treeHash",
        ],
        "tarball" | "file" => &[
            "type",
            "url",
            "narHash",
            "name",
            "unpack",
            "rev",
            "revCount",
            "lastModified",
        ],
        "indirect" => &["id", "ref", "rev", "narHash"],
        "hg" => &["url", "ref", "rev", "revCount", "narHash", "name"],
        _ => &[],
    }
}

/// Parse a revision as Nix's `Input::getRev` does and print it as `gitRev()` (lower-case hex).
pub fn parse_rev(s: &str) -> Result<Hash, FetchError> {
    match Hash::parse_any_prefixed(s) {
        Ok(h) => Ok(h),
        Err(_) => Ok(Hash::parse_any(s, Some(HashAlgo::Sha1))?),
    }
}

/// Parse a `narHash` as `Input::getNarHash` does (an empty string is the all-zero hash).
pub fn parse_nar_hash(s: &str) -> Result<Hash, FetchError> {
    let h = if s.is_empty() {
        Hash::zero(HashAlgo::Sha256)
    } else {
        Hash::parse_sri(s)?
    };
    if h.algo() != HashAlgo::Sha256 {
        return Err(FetchError::invalid("narHash must use SHA-256"));
    }
    Ok(h)
}

fn has_tarball_extension(path: &str) -> bool {
    [
        ".zip", ".tar", ".tgz", ".tar.gz", ".tar.xz", ".tar.bz2", ".tar.zst",
    ]
    .iter()
    .any(|e| path.ends_with(e))
}

fn parse_u64(s: &str) -> Option<u64> {
    // Nix's string2Int: the whole string must be a number.
    if s.is_empty() || !s.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

fn put_str(a: &mut Attrs, k: &str, v: &Option<String>) {
    if let Some(v) = v {
        a.insert(k.to_owned(), Attr::String(v.clone()));
    }
}
fn put_int(a: &mut Attrs, k: &str, v: Option<u64>) {
    if let Some(v) = v {
        a.insert(k.to_owned(), Attr::Int(v));
    }
}
fn put_bool(a: &mut Attrs, k: &str, v: Option<bool>) {
    if let Some(v) = v {
        a.insert(k.to_owned(), Attr::Bool(v));
    }
}

impl Input {
    fn new(kind: InputKind) -> Input {
        Input {
            kind,
            is_final: false,
        }
    }

    /// `Input::fromAttrs`.
    pub fn from_attrs(attrs: &Attrs) -> Result<Input, FetchError> {
        let Some(ty) = maybe_get_str(attrs, "type")? else {
            return Err(FetchError::invalid(
                "'type' attribute to specify input scheme is required but not provided",
            ));
        };
        let is_final = maybe_get_bool(attrs, "__final")?.unwrap_or(false);
        if !SCHEME_NAMES.contains(&ty.as_str()) {
            // Nix keeps unknown inputs raw but still checks the common attributes.
            maybe_get_str(attrs, "ref")?;
            maybe_get_int(attrs, "revCount")?;
            maybe_get_int(attrs, "lastModified")?;
            return Ok(Input {
                kind: InputKind::Unsupported(attrs.clone()),
                is_final,
            });
        }
        let allowed = allowed_attrs(&ty);
        for name in attrs.keys() {
            if name != "type" && name != "__final" && !allowed.contains(&name.as_str()) {
                return Err(FetchError::invalid(format!(
                    "input attribute '{name}' not supported by scheme '{ty}'"
                )));
            }
        }
        let s = |n: &str| maybe_get_str(attrs, n);
        let i = |n: &str| maybe_get_int(attrs, n);
        let b = |n: &str| maybe_get_bool(attrs, n);
        // Common checks done by Nix's fixupInput.
        s("ref")?;
        i("revCount")?;
        i("lastModified")?;
        let kind = match ty.as_str() {
            "path" => InputKind::Path(PathInput {
                path: get_str(attrs, "path")?,
                rev: s("rev")?,
                rev_count: i("revCount")?,
                last_modified: i("lastModified")?,
                nar_hash: s("narHash")?,
            }),
            "git" => {
                b("verifyCommit")?;
                let ref_ = s("ref")?;
                if let Some(r) = &ref_
                    && BAD_GIT_REF_REGEX.is_match(r)
                {
                    return Err(FetchError::bad_url(format!(
                        "invalid Git branch/tag name '{r}'"
                    )));
                }
                let url = fix_git_url(&get_str(attrs, "url")?);
                parse_url(&url)?;
                InputKind::Git(GitInput {
                    url,
                    ref_,
                    rev: s("rev")?,
                    shallow: b("shallow")?,
                    submodules: b("submodules")?,
                    export_ignore: b("exportIgnore")?,
                    last_modified: i("lastModified")?,
                    rev_count: i("revCount")?,
                    nar_hash: s("narHash")?,
                    all_refs: b("allRefs")?,
                    name: s("name")?,
                    dirty_rev: s("dirtyRev")?,
                    dirty_short_rev: s("dirtyShortRev")?,
                    verify_commit: b("verifyCommit")?,
                    keytype: s("keytype")?,
                    public_key: s("publicKey")?,
                    public_keys: s("publicKeys")?,
                })
            }
            "github" | "gitlab" | "sourcehut" => {
                let forge = match ty.as_str() {
                    "github" => Forge::GitHub,
                    "gitlab" => Forge::GitLab,
                    _ => Forge::SourceHut,
                };
                InputKind::Forge(ForgeInput {
                    forge,
                    owner: get_str(attrs, "owner")?,
                    repo: get_str(attrs, "repo")?,
                    ref_: s("ref")?,
                    rev: s("rev")?,
                    nar_hash: s("narHash")?,
                    last_modified: i("lastModified")?,
                    host: s("host")?,
                    tree_hash: s("treeHash")?,
                })
            }
            "hg" => {
                let url = get_str(attrs, "url")?;
                parse_url(&url)?;
                let ref_ = s("ref")?;
                if let Some(r) = &ref_
                    && !REF_REGEX.is_match(r)
                {
                    return Err(FetchError::bad_url(format!(
                        "invalid Mercurial branch/tag name '{r}'"
                    )));
                }
                InputKind::Mercurial(MercurialInput {
                    url,
                    ref_,
                    rev: s("rev")?,
                    rev_count: i("revCount")?,
                    nar_hash: s("narHash")?,
                    name: s("name")?,
                })
            }
            "tarball" | "file" => {
                let c = CurlInput {
                    url: get_str(attrs, "url")?,
                    nar_hash: s("narHash")?,
                    name: s("name")?,
                    unpack: b("unpack")?,
                    rev: s("rev")?,
                    rev_count: i("revCount")?,
                    last_modified: i("lastModified")?,
                };
                if ty == "tarball" {
                    InputKind::Tarball(c)
                } else {
                    InputKind::File(c)
                }
            }
            _ => {
                let id = get_str(attrs, "id")?;
                if !FLAKE_ID_REGEX.is_match(&id) {
                    return Err(FetchError::bad_url(format!(
                        "'{id}' is not a valid flake ID"
                    )));
                }
                InputKind::Indirect(IndirectInput {
                    id,
                    ref_: s("ref")?,
                    rev: s("rev")?,
                    nar_hash: s("narHash")?,
                })
            }
        };
        Ok(Input { kind, is_final })
    }

    /// `Input::toAttrs`.
    pub fn to_attrs(&self) -> Attrs {
        let mut a = Attrs::new();
        let ty = self.type_name();
        match &self.kind {
            InputKind::Unsupported(attrs) => return attrs.clone(),
            InputKind::Path(p) => {
                a.insert("path".into(), p.path.clone().into());
                put_str(&mut a, "rev", &p.rev);
                put_int(&mut a, "revCount", p.rev_count);
                put_int(&mut a, "lastModified", p.last_modified);
                put_str(&mut a, "narHash", &p.nar_hash);
            }
            InputKind::Git(g) => {
                a.insert("url".into(), g.url.clone().into());
                put_str(&mut a, "ref", &g.ref_);
                put_str(&mut a, "rev", &g.rev);
                put_bool(&mut a, "shallow", g.shallow);
                put_bool(&mut a, "submodules", g.submodules);
                put_bool(&mut a, "exportIgnore", g.export_ignore);
                put_int(&mut a, "lastModified", g.last_modified);
                put_int(&mut a, "revCount", g.rev_count);
                put_str(&mut a, "narHash", &g.nar_hash);
                put_bool(&mut a, "allRefs", g.all_refs);
                put_str(&mut a, "name", &g.name);
                put_str(&mut a, "dirtyRev", &g.dirty_rev);
                put_str(&mut a, "dirtyShortRev", &g.dirty_short_rev);
                put_bool(&mut a, "verifyCommit", g.verify_commit);
                put_str(&mut a, "keytype", &g.keytype);
                put_str(&mut a, "publicKey", &g.public_key);
                put_str(&mut a, "publicKeys", &g.public_keys);
            }
            InputKind::Forge(f) => {
                a.insert("owner".into(), f.owner.clone().into());
                a.insert("repo".into(), f.repo.clone().into());
                put_str(&mut a, "ref", &f.ref_);
                put_str(&mut a, "rev", &f.rev);
                put_str(&mut a, "narHash", &f.nar_hash);
                put_int(&mut a, "lastModified", f.last_modified);
                put_str(&mut a, "host", &f.host);
                put_str(&mut a, "treeHash", &f.tree_hash);
            }
            InputKind::Mercurial(m) => {
                a.insert("url".into(), m.url.clone().into());
                put_str(&mut a, "ref", &m.ref_);
                put_str(&mut a, "rev", &m.rev);
                put_int(&mut a, "revCount", m.rev_count);
                put_str(&mut a, "narHash", &m.nar_hash);
                put_str(&mut a, "name", &m.name);
            }
            InputKind::Tarball(c) | InputKind::File(c) => {
                a.insert("url".into(), c.url.clone().into());
                put_str(&mut a, "narHash", &c.nar_hash);
                put_str(&mut a, "name", &c.name);
                put_bool(&mut a, "unpack", c.unpack);
                put_str(&mut a, "rev", &c.rev);
                put_int(&mut a, "revCount", c.rev_count);
                put_int(&mut a, "lastModified", c.last_modified);
            }
            InputKind::Indirect(i) => {
                a.insert("id".into(), i.id.clone().into());
                put_str(&mut a, "ref", &i.ref_);
                put_str(&mut a, "rev", &i.rev);
                put_str(&mut a, "narHash", &i.nar_hash);
            }
        }
        a.insert("type".into(), ty.into());
        if self.is_final {
            a.insert("__final".into(), Attr::Bool(true));
        }
        a
    }

    /// The `type` attribute.
    pub fn type_name(&self) -> String {
        match &self.kind {
            InputKind::Path(_) => "path".into(),
            InputKind::Git(_) => "git".into(),
            InputKind::Forge(f) => f.forge.scheme().into(),
            InputKind::Mercurial(_) => "hg".into(),
            InputKind::Tarball(_) => "tarball".into(),
            InputKind::File(_) => "file".into(),
            InputKind::Indirect(_) => "indirect".into(),
            InputKind::Unsupported(a) => match a.get("type") {
                Some(Attr::String(s)) => s.clone(),
                _ => String::new(),
            },
        }
    }

    /// `Input::fromURL` on an already parsed URL. `require_tree` is true for flakes (a plain
    /// `https://…` URL then means a tarball, not a file).
    pub fn from_url(url: &ParsedUrl, require_tree: bool) -> Result<Input, FetchError> {
        // The schemes are tried in Nix's (alphabetical) registration order.
        if let Some(i) = curl_from_url(url, require_tree, false)? {
            return Ok(i);
        }
        if let Some(i) = git_from_url(url)? {
            return Ok(i);
        }
        for forge in [Forge::GitHub, Forge::GitLab] {
            if let Some(i) = forge_from_url(url, forge)? {
                return Ok(i);
            }
        }
        if let Some(i) = hg_from_url(url)? {
            return Ok(i);
        }
        if let Some(i) = indirect_from_url(url)? {
            return Ok(i);
        }
        if let Some(i) = path_from_url(url)? {
            return Ok(i);
        }
        if let Some(i) = forge_from_url(url, Forge::SourceHut)? {
            return Ok(i);
        }
        if let Some(i) = curl_from_url(url, require_tree, true)? {
            return Ok(i);
        }
        Err(FetchError::invalid(format!("input '{url}' is unsupported")))
    }

    /// `Input::fromURL` on a string.
    pub fn from_url_str(url: &str, require_tree: bool) -> Result<Input, FetchError> {
        Input::from_url(&parse_url(url)?, require_tree)
    }

    /// `Input::toURL`.
    pub fn to_url(&self) -> Result<ParsedUrl, FetchError> {
        match &self.kind {
            InputKind::Unsupported(a) => Err(FetchError::invalid(format!(
                "cannot show unsupported input '{}'",
                attrs_to_json_string(a)
            ))),
            InputKind::Path(p) => {
                let mut q = attrs_to_query(&self.to_attrs());
                q.remove("path");
                q.remove("type");
                q.remove("__final");
                Ok(ParsedUrl {
                    scheme: "path".into(),
                    authority: None,
                    path: p.path.clone(),
                    query: q,
                    fragment: String::new(),
                })
            }
            InputKind::Git(g) => {
                let mut url = parse_url(&g.url)?;
                if url.scheme != "git" {
                    url.scheme = format!("git+{}", url.scheme);
                }
                if let Some(rev) = self.rev_hash()? {
                    url.query.insert("rev".into(), rev.to_base16());
                }
                if let Some(r) = &g.ref_ {
                    url.query.insert("ref".into(), r.clone());
                }
                for (k, v) in [
                    ("shallow", g.shallow),
                    ("submodules", g.submodules),
                    ("exportIgnore", g.export_ignore),
                    ("verifyCommit", g.verify_commit),
                ] {
                    if v == Some(true) {
                        url.query.insert(k.into(), "1".into());
                    }
                }
                if let Some(pk) = &g.public_key
                    && g.public_keys.is_none()
                {
                    url.query.insert(
                        "keytype".into(),
                        g.keytype.clone().unwrap_or_else(|| "ssh-ed25519".into()),
                    );
                    url.query.insert("publicKey".into(), pk.clone());
                }
                if let Some(pks) = &g.public_keys {
                    url.query.insert("publicKeys".into(), pks.clone());
                }
                Ok(url)
            }
            InputKind::Forge(f) => {
                let mut path = format!("{}/{}", f.owner, f.repo);
                if let Some(r) = &f.ref_ {
                    path.push('/');
                    path.push_str(r);
                }
                if let Some(rev) = self.rev_hash()? {
                    path.push('/');
                    path.push_str(&rev.to_base16());
                }
                let mut query = BTreeMap::new();
                if let Some(h) = self.nar_hash_parsed()? {
                    query.insert("narHash".into(), h.to_sri());
                }
                Ok(ParsedUrl {
                    scheme: f.forge.scheme().into(),
                    authority: None,
                    path,
                    query,
                    fragment: String::new(),
                })
            }
            InputKind::Mercurial(m) => {
                let mut url = parse_url(&m.url)?;
                url.scheme = format!("hg+{}", url.scheme);
                if let Some(rev) = self.rev_hash()? {
                    url.query.insert("rev".into(), rev.to_base16());
                }
                if let Some(r) = &m.ref_ {
                    url.query.insert("ref".into(), r.clone());
                }
                Ok(url)
            }
            InputKind::Tarball(c) | InputKind::File(c) => {
                let mut url = parse_url(&c.url)?;
                if let Some(h) = self.nar_hash_parsed()? {
                    url.query.insert("narHash".into(), h.to_sri());
                }
                Ok(url)
            }
            InputKind::Indirect(i) => {
                let mut path = i.id.clone();
                if let Some(r) = &i.ref_ {
                    path.push('/');
                    path.push_str(r);
                }
                if let Some(rev) = self.rev_hash()? {
                    path.push('/');
                    path.push_str(&rev.to_base16());
                }
                Ok(ParsedUrl {
                    scheme: "flake".into(),
                    path,
                    ..Default::default()
                })
            }
        }
    }

    /// `Input::to_string`.
    pub fn to_url_string(&self) -> Result<String, FetchError> {
        Ok(self.to_url()?.to_string())
    }

    /// `to_url_string`, or the attributes as JSON when the input cannot be shown as a URL
    /// (for error messages).
    pub fn display(&self) -> String {
        self.to_url_string()
            .unwrap_or_else(|_| attrs_to_json_string(&self.to_attrs()))
    }

    /// The `rev` attribute as written.
    pub fn rev(&self) -> Option<&str> {
        match &self.kind {
            InputKind::Path(p) => p.rev.as_deref(),
            InputKind::Git(g) => g.rev.as_deref(),
            InputKind::Forge(f) => f.rev.as_deref(),
            InputKind::Mercurial(m) => m.rev.as_deref(),
            InputKind::Tarball(c) | InputKind::File(c) => c.rev.as_deref(),
            InputKind::Indirect(i) => i.rev.as_deref(),
            InputKind::Unsupported(a) => match a.get("rev") {
                Some(Attr::String(s)) => Some(s),
                _ => None,
            },
        }
    }

    /// `Input::getRev`.
    pub fn rev_hash(&self) -> Result<Option<Hash>, FetchError> {
        self.rev().map(parse_rev).transpose()
    }

    /// The `ref` attribute.
    pub fn ref_(&self) -> Option<&str> {
        match &self.kind {
            InputKind::Git(g) => g.ref_.as_deref(),
            InputKind::Forge(f) => f.ref_.as_deref(),
            InputKind::Mercurial(m) => m.ref_.as_deref(),
            InputKind::Indirect(i) => i.ref_.as_deref(),
            InputKind::Unsupported(a) => match a.get("ref") {
                Some(Attr::String(s)) => Some(s),
                _ => None,
            },
            _ => None,
        }
    }

    /// The `narHash` attribute as written.
    pub fn nar_hash(&self) -> Option<&str> {
        match &self.kind {
            InputKind::Path(p) => p.nar_hash.as_deref(),
            InputKind::Git(g) => g.nar_hash.as_deref(),
            InputKind::Forge(f) => f.nar_hash.as_deref(),
            InputKind::Mercurial(m) => m.nar_hash.as_deref(),
            InputKind::Tarball(c) | InputKind::File(c) => c.nar_hash.as_deref(),
            InputKind::Indirect(i) => i.nar_hash.as_deref(),
            InputKind::Unsupported(a) => match a.get("narHash") {
                Some(Attr::String(s)) => Some(s),
                _ => None,
            },
        }
    }

    /// `Input::getNarHash`.
    pub fn nar_hash_parsed(&self) -> Result<Option<Hash>, FetchError> {
        self.nar_hash().map(parse_nar_hash).transpose()
    }

    /// Set (or replace) the `narHash` attribute.
    pub fn set_nar_hash(&mut self, h: Option<String>) {
        match &mut self.kind {
            InputKind::Path(p) => p.nar_hash = h,
            InputKind::Git(g) => g.nar_hash = h,
            InputKind::Forge(f) => f.nar_hash = h,
            InputKind::Mercurial(m) => m.nar_hash = h,
            InputKind::Tarball(c) | InputKind::File(c) => c.nar_hash = h,
            InputKind::Indirect(i) => i.nar_hash = h,
            InputKind::Unsupported(a) => {
                match h {
                    Some(h) => a.insert("narHash".into(), Attr::String(h)),
                    None => a.remove("narHash"),
                };
            }
        }
    }

    /// `Input::getLastModified`.
    pub fn last_modified(&self) -> Option<u64> {
        match &self.kind {
            InputKind::Path(p) => p.last_modified,
            InputKind::Git(g) => g.last_modified,
            InputKind::Forge(f) => f.last_modified,
            InputKind::Tarball(c) | InputKind::File(c) => c.last_modified,
            _ => None,
        }
    }

    /// `Input::getRevCount`.
    pub fn rev_count(&self) -> Option<u64> {
        match &self.kind {
            InputKind::Path(p) => p.rev_count,
            InputKind::Git(g) => g.rev_count,
            InputKind::Mercurial(m) => m.rev_count,
            InputKind::Tarball(c) | InputKind::File(c) => c.rev_count,
            _ => None,
        }
    }

    /// `Input::getName`: the store path name (`source` unless `name` is set).
    pub fn name(&self) -> String {
        match &self.kind {
            InputKind::Git(GitInput { name: Some(n), .. })
            | InputKind::Mercurial(MercurialInput { name: Some(n), .. })
            | InputKind::Tarball(CurlInput { name: Some(n), .. })
            | InputKind::File(CurlInput { name: Some(n), .. }) => n.clone(),
            _ => "source".into(),
        }
    }

    /// `Input::isDirect`: false only for indirect (registry) inputs.
    pub fn is_direct(&self) -> bool {
        !matches!(self.kind, InputKind::Indirect(_))
    }

    /// `Input::isLocked`.
    pub fn is_locked(&self, settings: &InputSettings) -> bool {
        match &self.kind {
            InputKind::Path(p) => p.nar_hash.is_some(),
            InputKind::Git(g) => g.rev.is_some(),
            InputKind::Mercurial(m) => m.rev.is_some(),
            InputKind::Forge(f) => {
                f.rev.is_some() && (settings.trust_tarballs_from_git_forges || f.nar_hash.is_some())
            }
            InputKind::Tarball(c) | InputKind::File(c) => c.nar_hash.is_some(),
            InputKind::Indirect(_) | InputKind::Unsupported(_) => false,
        }
    }

    /// `Input::isConsideredLocked`.
    pub fn is_considered_locked(&self, settings: &InputSettings) -> bool {
        self.is_locked(settings) || (settings.allow_dirty_locks && self.nar_hash().is_some())
    }

    /// `Input::isRelative`: the relative path of a `path:` input that is not absolute.
    pub fn is_relative(&self) -> Option<&str> {
        match &self.kind {
            InputKind::Path(p) if !p.path.starts_with('/') => Some(&p.path),
            _ => None,
        }
    }

    /// `Input::applyOverrides`: set the branch/tag and/or revision.
    pub fn apply_overrides(
        &self,
        ref_: Option<&str>,
        rev: Option<&Hash>,
    ) -> Result<Input, FetchError> {
        let mut res = self.clone();
        match &mut res.kind {
            InputKind::Indirect(i) => {
                if let Some(rev) = rev {
                    i.rev = Some(rev.to_base16());
                }
                if let Some(r) = ref_ {
                    i.ref_ = Some(r.into());
                }
            }
            InputKind::Mercurial(m) => {
                if let Some(rev) = rev {
                    m.rev = Some(rev.to_base16());
                }
                if let Some(r) = ref_ {
                    m.ref_ = Some(r.into());
                }
            }
            InputKind::Forge(f) => {
                if let (Some(rev), Some(r)) = (rev, ref_) {
                    return Err(FetchError::bad_url(format!(
                        "cannot apply both a commit hash ({}) and a branch/tag name ('{r}') to input '{}'",
                        rev.to_base16(),
                        self.display()
                    )));
                }
                if let Some(rev) = rev {
                    f.rev = Some(rev.to_base16());
                    f.ref_ = None;
                }
                if let Some(r) = ref_ {
                    f.ref_ = Some(r.into());
                    f.rev = None;
                }
            }
            InputKind::Git(g) => {
                if let Some(rev) = rev {
                    g.rev = Some(rev.to_base16());
                }
                if let Some(r) = ref_ {
                    g.ref_ = Some(r.into());
                }
                if g.ref_.is_none() && g.rev.is_some() {
                    return Err(FetchError::invalid(format!(
                        "Git input '{}' has a commit hash but no branch/tag name",
                        res.display()
                    )));
                }
            }
            InputKind::Unsupported(_) => return Ok(res),
            _ => {
                if let Some(r) = ref_ {
                    return Err(FetchError::invalid(format!(
                        "don't know how to set branch/tag name of input '{}' to '{r}'",
                        self.display()
                    )));
                }
                if let Some(rev) = rev {
                    return Err(FetchError::invalid(format!(
                        "don't know how to set revision of input '{}' to '{}'",
                        self.display(),
                        rev.to_base16()
                    )));
                }
            }
        }
        Ok(res)
    }

    /// `Input::contains`: equal, or equal after dropping `ref` and `rev` from `other`.
    pub fn contains(&self, other: &Input) -> bool {
        if self == other {
            return true;
        }
        let mut a = other.to_attrs();
        a.remove("ref");
        a.remove("rev");
        a == self.to_attrs()
    }
}

fn curl_from_url(
    url: &ParsedUrl,
    require_tree: bool,
    tarball: bool,
) -> Result<Option<Input>, FetchError> {
    let (app, transport) = parse_url_scheme(&url.scheme);
    if !["file", "http", "https"].contains(&transport) {
        return Ok(None);
    }
    let valid = match app {
        Some(a) => a == if tarball { "tarball" } else { "file" },
        None if tarball => require_tree || has_tarball_extension(&url.path),
        None => !require_tree && !has_tarball_extension(&url.path),
    };
    if !valid {
        return Ok(None);
    }
    let mut u = url.clone();
    u.scheme = transport.to_owned();
    let mut c = CurlInput {
        nar_hash: url.query.get("narHash").cloned(),
        rev: url.query.get("rev").cloned(),
        rev_count: url.query.get("revCount").and_then(|s| parse_u64(s)),
        last_modified: url.query.get("lastModified").and_then(|s| parse_u64(s)),
        ..Default::default()
    };
    for p in allowed_attrs("tarball") {
        u.query.remove(*p);
    }
    c.url = u.to_string();
    Ok(Some(Input::new(if tarball {
        InputKind::Tarball(c)
    } else {
        InputKind::File(c)
    })))
}

fn git_from_url(url: &ParsedUrl) -> Result<Option<Input>, FetchError> {
    if !["git", "git+http", "git+https", "git+ssh", "git+file"].contains(&url.scheme.as_str()) {
        return Ok(None);
    }
    let mut url2 = url.clone();
    if let Some(s) = url2.scheme.strip_prefix("git+") {
        url2.scheme = s.to_owned();
    }
    url2.query.clear();
    let mut attrs = Attrs::new();
    attrs.insert("type".into(), "git".into());
    for (name, value) in &url.query {
        match name.as_str() {
            "rev" | "ref" | "keytype" | "publicKey" | "publicKeys" => {
                attrs.insert(name.clone(), value.clone().into());
            }
            "shallow" | "submodules" | "exportIgnore" | "allRefs" | "verifyCommit" => {
                attrs.insert(name.clone(), Attr::Bool(value == "1"));
            }
            _ => {
                url2.query.insert(name.clone(), value.clone());
            }
        }
    }
    attrs.insert("url".into(), url2.to_string().into());
    Input::from_attrs(&attrs).map(Some)
}

fn forge_from_url(url: &ParsedUrl, forge: Forge) -> Result<Option<Input>, FetchError> {
    if url.scheme != forge.scheme() {
        return Ok(None);
    }
    let path: Vec<&str> = url.path.split('/').filter(|s| !s.is_empty()).collect();
    let mut rev: Option<String> = None;
    let mut ref_: Option<String> = None;
    let mut host: Option<String> = None;
    let size = path.len();
    if size == 3 {
        if REV_REGEX.is_match(path[2]) {
            rev = Some(Hash::parse_any(path[2], Some(HashAlgo::Sha1))?.to_base16());
        } else if REF_REGEX.is_match(path[2]) {
            ref_ = Some(path[2].to_owned());
        } else {
            return Err(FetchError::bad_url(format!(
                "in URL '{url}', '{}' is not a commit hash or branch/tag name",
                path[2]
            )));
        }
    } else if size > 3 {
        let rs = path[2..].join("/");
        if REF_REGEX.is_match(&rs) {
            ref_ = Some(rs);
        } else {
            return Err(FetchError::bad_url(format!(
                "in URL '{url}', '{rs}' is not a branch/tag name"
            )));
        }
    } else if size < 2 {
        return Err(FetchError::bad_url(format!("URL '{url}' is invalid")));
    }
    static HOST_REGEX: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
        regex::Regex::new("^[a-zA-Z0-9.-]*$").expect("the regular expression is a constant")
    });
    for (name, value) in &url.query {
        match name.as_str() {
            "rev" => {
                if rev.is_some() {
                    return Err(FetchError::bad_url(format!(
                        "URL '{url}' contains multiple commit hashes"
                    )));
                }
                rev = Some(Hash::parse_any(value, Some(HashAlgo::Sha1))?.to_base16());
            }
            "ref" => {
                if !REF_REGEX.is_match(value) {
                    return Err(FetchError::bad_url(format!(
                        "URL '{url}' contains an invalid branch/tag name"
                    )));
                }
                if ref_.is_some() {
                    return Err(FetchError::bad_url(format!(
                        "URL '{url}' contains multiple branch/tag names"
                    )));
                }
                ref_ = Some(value.clone());
            }
            "host" => {
                if !HOST_REGEX.is_match(value) {
                    return Err(FetchError::bad_url(format!(
                        "URL '{url}' contains an invalid instance host"
                    )));
                }
                host = Some(value.clone());
            }
            _ => {}
        }
    }
    if let (Some(r), Some(rv)) = (&ref_, &rev) {
        return Err(FetchError::bad_url(format!(
            "URL '{url}' contains both a commit hash and a branch/tag name {r} {rv}"
        )));
    }
    Ok(Some(Input::new(InputKind::Forge(ForgeInput {
        forge,
        owner: path[0].to_owned(),
        repo: path[1].to_owned(),
        ref_,
        rev,
        nar_hash: url.query.get("narHash").cloned(),
        last_modified: None,
        host,
        tree_hash: None,
    }))))
}

fn hg_from_url(url: &ParsedUrl) -> Result<Option<Input>, FetchError> {
    if !["hg+http", "hg+https", "hg+ssh", "hg+file"].contains(&url.scheme.as_str()) {
        return Ok(None);
    }
    let mut url2 = url.clone();
    url2.scheme = url.scheme[3..].to_owned();
    url2.query.clear();
    let mut attrs = Attrs::new();
    attrs.insert("type".into(), "hg".into());
    for (name, value) in &url.query {
        if name == "rev" || name == "ref" {
            attrs.insert(name.clone(), value.clone().into());
        } else {
            url2.query.insert(name.clone(), value.clone());
        }
    }
    attrs.insert("url".into(), url2.to_string().into());
    Input::from_attrs(&attrs).map(Some)
}

fn indirect_from_url(url: &ParsedUrl) -> Result<Option<Input>, FetchError> {
    if url.scheme != "flake" {
        return Ok(None);
    }
    let path: Vec<&str> = url.path.split('/').filter(|s| !s.is_empty()).collect();
    let mut rev = None;
    let mut ref_ = None;
    match path.len() {
        1 => {}
        2 => {
            if REV_REGEX.is_match(path[1]) {
                rev = Some(Hash::parse_any(path[1], Some(HashAlgo::Sha1))?.to_base16());
            } else if REF_REGEX.is_match(path[1]) {
                ref_ = Some(path[1].to_owned());
            } else {
                return Err(FetchError::bad_url(format!(
                    "in flake URL '{url}', '{}' is not a commit hash or branch/tag name",
                    path[1]
                )));
            }
        }
        3 => {
            if !REF_REGEX.is_match(path[1]) {
                return Err(FetchError::bad_url(format!(
                    "in flake URL '{url}', '{}' is not a branch/tag name",
                    path[1]
                )));
            }
            ref_ = Some(path[1].to_owned());
            if !REV_REGEX.is_match(path[2]) {
                return Err(FetchError::bad_url(format!(
                    "in flake URL '{url}', '{}' is not a commit hash",
                    path[2]
                )));
            }
            rev = Some(Hash::parse_any(path[2], Some(HashAlgo::Sha1))?.to_base16());
        }
        _ => {
            return Err(FetchError::bad_url(format!(
                "GitHub URL '{url}' is invalid"
            )));
        }
    }
    let id = path[0].to_owned();
    if !FLAKE_ID_REGEX.is_match(&id) {
        return Err(FetchError::bad_url(format!(
            "'{id}' is not a valid flake ID"
        )));
    }
    Ok(Some(Input::new(InputKind::Indirect(IndirectInput {
        id,
        ref_,
        rev,
        nar_hash: None,
    }))))
}

fn path_from_url(url: &ParsedUrl) -> Result<Option<Input>, FetchError> {
    if url.scheme != "path" {
        return Ok(None);
    }
    if let Some(a) = &url.authority
        && !a.is_empty()
    {
        return Err(FetchError::invalid(format!(
            "path URL '{url}' should not have an authority ('{a}')"
        )));
    }
    let mut p = PathInput {
        path: url.path.clone(),
        ..Default::default()
    };
    for (name, value) in &url.query {
        match name.as_str() {
            "rev" => p.rev = Some(value.clone()),
            "narHash" => p.nar_hash = Some(value.clone()),
            "revCount" | "lastModified" => {
                let Some(n) = parse_u64(value) else {
                    return Err(FetchError::invalid(format!(
                        "path URL '{url}' has invalid parameter '{name}'"
                    )));
                };
                if name == "revCount" {
                    p.rev_count = Some(n);
                } else {
                    p.last_modified = Some(n);
                }
            }
            _ => {
                return Err(FetchError::invalid(format!(
                    "path URL '{url}' has unsupported parameter '{name}'"
                )));
            }
        }
    }
    Ok(Some(Input::new(InputKind::Path(p))))
}

//! Flake references (`FlakeRef`): an [`Input`] plus the subdirectory (`dir=`) holding
//! `flake.nix`, parsed from the string forms users write (`nixpkgs/branch`, `github:o/r`,
//! `git+https://…`, `.`, `/abs/path`, …) and from attribute sets (`inputs.x = { type = …; }`).
//!
//! Invariant: parsing follows Nix 2.26's order — flake id, then URL, then path — and prints
//! canonically (`to_string`) exactly as `builtins.flakeRefToString` does.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::LazyLock;

use regex::Regex;

use super::FetchError;
use super::attrs::{Attr, Attrs, maybe_get_str};
use super::input::Input;
use super::url::{
    FLAKE_ID_REGEX_S, ParsedUrl, decode_query, fragment_regex_s, parse_url, percent_decode,
    ref_and_or_rev_regex_s,
};

/// A flake reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlakeRef {
    pub input: Input,
    /// Subdirectory of the source tree containing `flake.nix` (`""` = the root).
    pub subdir: String,
}

/// How to parse a flake reference (Nix's `parseFlakeRef` parameters).
#[derive(Debug, Clone, Default)]
pub struct ParseOptions {
    /// Directory that relative paths are resolved against (`None`: relative paths are an
    /// error unless `preserve_relative_paths`). `Some` also enables the upward search for
    /// `flake.nix` and the `git+file` conversion inside Git work trees.
    pub base_dir: Option<PathBuf>,
    /// Don't require `flake.nix` to exist.
    pub allow_missing: bool,
    /// `false` for non-flake inputs (`flake = false`): a plain `https://x` is then a file.
    pub not_flake: bool,
    /// Keep relative `path:` references relative (used for flake inputs).
    pub preserve_relative_paths: bool,
}

impl ParseOptions {
    fn is_flake(&self) -> bool {
        !self.not_flake
    }
}

impl FlakeRef {
    /// `FlakeRef::to_string`: the input's URL with `dir` added to the query.
    pub fn to_url(&self) -> Result<ParsedUrl, FetchError> {
        let mut url = self.input.to_url()?;
        if !self.subdir.is_empty() {
            url.query
                .entry("dir".into())
                .or_insert_with(|| self.subdir.clone());
        }
        Ok(url)
    }

    /// `FlakeRef::toAttrs`.
    pub fn to_attrs(&self) -> Attrs {
        let mut a = self.input.to_attrs();
        if !self.subdir.is_empty() {
            a.entry("dir".into())
                .or_insert_with(|| Attr::String(self.subdir.clone()));
        }
        a
    }

    /// `FlakeRef::fromAttrs`.
    pub fn from_attrs(attrs: &Attrs) -> Result<FlakeRef, FetchError> {
        let mut a = attrs.clone();
        let dir = maybe_get_str(attrs, "dir")?;
        a.remove("dir");
        Ok(FlakeRef {
            input: Input::from_attrs(&a)?,
            subdir: dir.unwrap_or_default(),
        })
    }

    /// `parseFlakeRef`: a reference without a fragment.
    pub fn parse(url: &str, opts: &ParseOptions) -> Result<FlakeRef, FetchError> {
        let (r, fragment) = FlakeRef::parse_with_fragment(url, opts)?;
        if !fragment.is_empty() {
            return Err(FetchError::invalid(format!(
                "unexpected fragment '{fragment}' in flake reference '{url}'"
            )));
        }
        Ok(r)
    }

    /// `parseFlakeRefWithFragment`: `ref#attr.path` → (ref, `attr.path`).
    pub fn parse_with_fragment(
        url: &str,
        opts: &ParseOptions,
    ) -> Result<(FlakeRef, String), FetchError> {
        if let Some(r) = parse_flake_id_ref(url, opts)? {
            return Ok(r);
        }
        match parse_url_flake_ref(url, opts) {
            Ok(r) => return Ok(r),
            Err(e) if e.is_bad_url() => {}
            Err(e) => return Err(e),
        }
        parse_path_flake_ref(url, opts)
    }

    /// The reference of a flake input written as an attribute set in `flake.nix`
    /// (`inputs.x = { url = …; }` or `{ type = …; … }`), after the evaluator has taken out
    /// `flake`, `follows` and `inputs` and converted the other attributes (strings, Booleans,
    /// non-negative integers; `url` as given). Nix's `parseFlakeInput`: with `type` the
    /// attributes (including `url`) are an input; without, only `url` is allowed and is parsed
    /// keeping relative paths. `Ok(None)`: no reference (the caller then uses
    /// `{ type = "indirect"; id = <input name>; }` unless the input `follows`).
    pub fn from_input_attrs(attrs: &Attrs, is_flake: bool) -> Result<Option<FlakeRef>, FetchError> {
        if attrs.contains_key("type") {
            return FlakeRef::from_attrs(attrs).map(Some);
        }
        if let Some((name, _)) = attrs.iter().find(|(k, _)| k.as_str() != "url") {
            return Err(FetchError::UnexpectedInputAttr { name: name.clone() });
        }
        match maybe_get_str(attrs, "url")? {
            None => Ok(None),
            Some(url) => {
                let opts = ParseOptions {
                    base_dir: None,
                    allow_missing: true,
                    not_flake: !is_flake,
                    preserve_relative_paths: true,
                };
                FlakeRef::parse(&url, &opts).map(Some)
            }
        }
    }

    /// A display form that never fails (URL, or attributes as JSON).
    pub fn display(&self) -> String {
        self.to_url()
            .map(|u| u.to_string())
            .unwrap_or_else(|_| super::attrs::attrs_to_json_string(&self.to_attrs()))
    }
}

impl fmt::Display for FlakeRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.display())
    }
}

fn from_parsed_url(mut url: ParsedUrl, is_flake: bool) -> Result<(FlakeRef, String), FetchError> {
    let dir = url.query.remove("dir").unwrap_or_default();
    let fragment = std::mem::take(&mut url.fragment);
    Ok((
        FlakeRef {
            input: Input::from_url(&url, is_flake)?,
            subdir: dir,
        },
        fragment,
    ))
}

fn parse_flake_id_ref(
    url: &str,
    opts: &ParseOptions,
) -> Result<Option<(FlakeRef, String)>, FetchError> {
    static RE: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(&format!(
            "^(?:(({FLAKE_ID_REGEX_S})(?:/(?:{}))?)(?:#({}))?)$",
            ref_and_or_rev_regex_s(),
            fragment_regex_s()
        ))
        .expect("the regular expression is built from constants")
    });
    let Some(m) = RE.captures(url) else {
        return Ok(None);
    };
    let path = m.get(1).map_or("", |x| x.as_str()).to_owned();
    let parsed = ParsedUrl {
        scheme: "flake".into(),
        path,
        ..Default::default()
    };
    let input = Input::from_url(&parsed, opts.is_flake())?;
    let fragment = percent_decode(m.get(6).map_or("", |x| x.as_str()))?;
    Ok(Some((
        FlakeRef {
            input,
            subdir: String::new(),
        },
        fragment,
    )))
}

fn parse_url_flake_ref(url: &str, opts: &ParseOptions) -> Result<(FlakeRef, String), FetchError> {
    let mut parsed = parse_url(url)?;
    if let Some(base) = &opts.base_dir
        && (parsed.scheme == "path" || parsed.scheme == "git+file")
        && !parsed.path.starts_with('/')
    {
        parsed.path = abs_path(&parsed.path, base);
    }
    from_parsed_url(parsed, opts.is_flake())
}

/// Nix's `absPath` + `canonPath`: make absolute and remove `.`/`..`/duplicate slashes
/// (lexically; symlinks are not resolved).
pub fn abs_path(path: &str, base: &Path) -> String {
    let joined = if path.starts_with('/') {
        path.to_owned()
    } else {
        format!("{}/{path}", base.display())
    };
    canon_path(&joined)
}

/// Nix's `canonPath` without symlink resolution.
pub fn canon_path(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    format!("/{}", parts.join("/"))
}

fn dir_of(path: &str) -> String {
    match path.rfind('/') {
        Some(0) | None => "/".into(),
        Some(i) => path[..i].into(),
    }
}

fn base_name_of(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

fn parse_path_flake_ref(url: &str, opts: &ParseOptions) -> Result<(FlakeRef, String), FetchError> {
    // ([^?#]*)(\?([^#]*))?(#(.*))?
    let (before_frag, frag) = match url.find('#') {
        Some(i) => (&url[..i], Some(&url[i + 1..])),
        None => (url, None),
    };
    let (mut path, query) = match before_frag.find('?') {
        Some(i) => (before_frag[..i].to_owned(), &before_frag[i + 1..]),
        None => (before_frag.to_owned(), ""),
    };
    let mut query = decode_query(query)?;
    let fragment = percent_decode(frag.unwrap_or(""))?;

    if let Some(base) = &opts.base_dir {
        path = abs_path(&path, base);
        if opts.is_flake() {
            let meta = std::fs::symlink_metadata(&path)
                .map_err(|e| FetchError::io(format!("getting status of '{path}'"), e))?;
            if !meta.is_dir() {
                if base_name_of(&path) == "flake.nix" {
                    tracing::warn!(
                        "Path '{path}' should point at the directory containing the 'flake.nix' file, not the file itself. Pretending that you meant '{}'",
                        dir_of(&path)
                    );
                    path = dir_of(&path);
                } else {
                    return Err(FetchError::bad_url(format!(
                        "path '{path}' is not a flake (because it's not a directory)"
                    )));
                }
            }
            let exists = |p: &str| std::fs::symlink_metadata(p).is_ok();
            if !opts.allow_missing && !exists(&format!("{path}/flake.nix")) {
                tracing::info!("path '{path}' does not contain a 'flake.nix', searching up");
                use std::os::unix::fs::MetadataExt;
                let device = std::fs::symlink_metadata(&path)
                    .map_err(|e| FetchError::io(format!("getting status of '{path}'"), e))?
                    .dev();
                let mut found = false;
                while path != "/" {
                    if exists(&format!("{path}/flake.nix")) {
                        found = true;
                        break;
                    } else if exists(&format!("{path}/.git")) {
                        return Err(FetchError::invalid(format!(
                            "path '{path}' is not part of a flake (neither it nor its parent directories contain a 'flake.nix' file)"
                        )));
                    } else if std::fs::symlink_metadata(&path).map(|m| m.dev()).ok() != Some(device)
                    {
                        return Err(FetchError::invalid(format!(
                            "unable to find a flake before encountering filesystem boundary at '{path}'"
                        )));
                    }
                    path = dir_of(&path);
                }
                if !found {
                    return Err(FetchError::bad_url("could not find a flake.nix file"));
                }
            }
            if !opts.allow_missing && !exists(&format!("{path}/flake.nix")) {
                return Err(FetchError::bad_url(format!(
                    "path '{path}' is not a flake (because it doesn't contain a 'flake.nix' file)"
                )));
            }
            let mut flake_root = path.clone();
            let mut subdir = String::new();
            while flake_root != "/" {
                if exists(&format!("{flake_root}/.git")) {
                    if !subdir.is_empty() {
                        if query.contains_key("dir") {
                            return Err(FetchError::invalid(format!(
                                "flake URL '{url}' has an inconsistent 'dir' parameter"
                            )));
                        }
                        query.insert("dir".into(), subdir);
                    }
                    if exists(&format!("{flake_root}/.git/shallow")) {
                        query.insert("shallow".into(), "1".into());
                    }
                    let parsed = ParsedUrl {
                        scheme: "git+file".into(),
                        authority: Some(String::new()),
                        path: flake_root,
                        query,
                        fragment,
                    };
                    return from_parsed_url(parsed, opts.is_flake());
                }
                subdir = if subdir.is_empty() {
                    base_name_of(&flake_root).to_owned()
                } else {
                    format!("{}/{subdir}", base_name_of(&flake_root))
                };
                flake_root = dir_of(&flake_root);
            }
        }
    } else if !opts.preserve_relative_paths && !path.starts_with('/') {
        return Err(FetchError::bad_url(format!(
            "flake reference '{url}' is not an absolute path"
        )));
    }
    from_parsed_url(
        ParsedUrl {
            scheme: "path".into(),
            authority: Some(String::new()),
            path,
            query,
            fragment,
        },
        opts.is_flake(),
    )
}

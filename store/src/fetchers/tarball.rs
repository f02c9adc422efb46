//! The HTTP-based fetchers: `tarball` (download + unpack, single top-level directory
//! stripped), `file` (a single downloaded file) and the forges `github`, `gitlab`,
//! `sourcehut` (ref → rev through the forge's API, then the archive of that revision).
//!
//! Invariant: a download is streamed into a temporary file inside the fetcher cache and
//! unpacked into a temporary directory; only a complete, verified tree is renamed into the
//! cache, so a failing server leaves nothing behind. No URL is fetched when the cache can
//! answer (locked trees by `narHash`, forge revisions by `rev`, tarball URLs within the TTL).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Component, Path, PathBuf};
use std::sync::{LazyLock, Once};

use crate::hash::{Hash, HashAlgo};

use super::FetchError;
use super::attrs::{Attr, Attrs, get_str, maybe_get_int, maybe_get_str};
use super::cache::FetcherCache;
use super::fetch::{FetchSettings, nar_hash_of};
use super::input::{CurlInput, Forge, ForgeInput, Input, InputKind};
use super::url::{parse_url, percent_encode};

/// The outcome of one HTTP (or `file://`) transfer.
pub struct Download {
    /// The body, in a temporary file in the cache (deleted on drop).
    pub file: tempfile::NamedTempFile,
    pub etag: Option<String>,
    pub effective_url: String,
    /// From a `Link: <url>; rel="immutable"` header (used by tarball servers such as Flakehub).
    pub immutable_url: Option<String>,
}

fn client() -> Result<reqwest::blocking::Client, FetchError> {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        // Another component may have installed a provider already; either is fine.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
    static CLIENT: LazyLock<Result<reqwest::blocking::Client, String>> = LazyLock::new(|| {
        reqwest::blocking::Client::builder()
            .user_agent(concat!("flaked/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(std::time::Duration::from_secs(30))
            .timeout(std::time::Duration::from_secs(3600))
            .build()
            .map_err(|e| e.to_string())
    });
    CLIENT.clone().map_err(|e| FetchError::Download {
        url: String::new(),
        message: e,
    })
}

/// Download `url` (http, https or file) into a temporary file in the cache.
pub fn download(
    url: &str,
    headers: &[(String, String)],
    cache: &FetcherCache,
) -> Result<Download, FetchError> {
    let derr = |m: String| FetchError::Download {
        url: url.to_owned(),
        message: m,
    };
    let mut file = cache.temp_file()?;
    if let Some(rest) = url.strip_prefix("file://") {
        let parsed = parse_url(url)?;
        let _ = rest;
        let mut src = std::fs::File::open(&parsed.path)
            .map_err(|e| derr(format!("opening '{}': {e}", parsed.path)))?;
        std::io::copy(&mut src, file.as_file_mut()).map_err(|e| derr(e.to_string()))?;
        return Ok(Download {
            file,
            etag: None,
            effective_url: url.to_owned(),
            immutable_url: None,
        });
    }
    let mut req = client()?.get(url);
    for (k, v) in headers {
        req = req.header(k, v);
    }
    tracing::debug!("downloading '{url}'");
    let mut resp = req.send().map_err(|e| derr(error_chain(&e)))?;
    let status = resp.status();
    if !status.is_success() {
        return Err(derr(format!("HTTP error {}", status.as_u16())));
    }
    let etag = resp
        .headers()
        .get(reqwest::header::ETAG)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let immutable_url = resp
        .headers()
        .get_all(reqwest::header::LINK)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(parse_immutable_link);
    let effective_url = resp.url().to_string();
    let expected = resp.content_length();
    let n = std::io::copy(&mut resp, file.as_file_mut()).map_err(|e| derr(error_chain(&e)))?;
    if let Some(len) = expected
        && n != len
    {
        return Err(derr(format!(
            "transfer closed with {} bytes remaining",
            len - n
        )));
    }
    file.as_file_mut()
        .flush()
        .map_err(|e| derr(e.to_string()))?;
    Ok(Download {
        file,
        etag,
        effective_url,
        immutable_url,
    })
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

fn parse_immutable_link(v: &str) -> Option<String> {
    for part in v.split(',') {
        let part = part.trim();
        let (url, params) = part.split_once(';')?;
        let url = url.trim().strip_prefix('<')?.strip_suffix('>')?;
        if params
            .split(';')
            .any(|p| p.trim().replace(' ', "") == "rel=\"immutable\"")
        {
            return Some(url.to_owned());
        }
    }
    None
}

/// Unpack an archive (tar, optionally gzip/xz/zstd-compressed) into `dest`; returns the
/// largest modification time of its entries.
pub fn unpack_archive(archive: &Path, dest: &Path) -> Result<u64, FetchError> {
    let ioe = |e: std::io::Error| FetchError::io(format!("unpacking '{}'", archive.display()), e);
    let f = std::fs::File::open(archive).map_err(ioe)?;
    let mut r = BufReader::new(f);
    let magic = r.fill_buf().map_err(ioe)?.to_vec();
    let reader: Box<dyn Read> = if magic.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::read::MultiGzDecoder::new(r))
    } else if magic.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
        let mut out = Vec::new();
        lzma_rs::xz_decompress(&mut r, &mut out).map_err(|e| {
            FetchError::invalid(format!("decompressing '{}': {e}", archive.display()))
        })?;
        Box::new(std::io::Cursor::new(out))
    } else if magic.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Box::new(ruzstd::decoding::StreamingDecoder::new(r).map_err(|e| {
            FetchError::invalid(format!("decompressing '{}': {e}", archive.display()))
        })?)
    } else if magic.starts_with(b"BZh") || magic.starts_with(b"PK") {
        return Err(FetchError::invalid(format!(
            "unsupported archive format of '{}' (bzip2 and zip are not supported)",
            archive.display()
        )));
    } else {
        Box::new(r)
    };
    unpack_tar(reader, dest).map_err(|e| match e {
        FetchError::Io { context, source } => FetchError::Io {
            context: format!("{context} (unpacking '{}')", archive.display()),
            source,
        },
        e => e,
    })
}

fn unpack_tar(reader: Box<dyn Read>, dest: &Path) -> Result<u64, FetchError> {
    use std::os::unix::fs::PermissionsExt;
    let ioe = |c: &str| {
        let c = c.to_owned();
        move |e: std::io::Error| FetchError::io(c, e)
    };
    std::fs::create_dir_all(dest).map_err(ioe("creating the unpack directory"))?;
    let mut ar = tar::Archive::new(reader);
    let mut last_modified = 0u64;
    for entry in ar.entries().map_err(ioe("reading the archive"))? {
        let mut entry = entry.map_err(ioe("reading the archive"))?;
        let raw = entry
            .path()
            .map_err(ioe("reading an archive entry name"))?
            .into_owned();
        let mut rel = PathBuf::new();
        for c in raw.components() {
            match c {
                Component::Normal(n) => rel.push(n),
                Component::CurDir | Component::RootDir | Component::Prefix(_) => {}
                Component::ParentDir => {
                    return Err(FetchError::invalid(format!(
                        "archive entry '{}' points outside the archive",
                        raw.display()
                    )));
                }
            }
        }
        let header = entry.header();
        last_modified = last_modified.max(header.mtime().unwrap_or(0));
        if rel.as_os_str().is_empty() {
            continue;
        }
        let target = dest.join(&rel);
        if let Some(p) = target.parent() {
            std::fs::create_dir_all(p).map_err(ioe("creating a directory"))?;
        }
        let kind = header.entry_type();
        if !kind.is_dir()
            && let Ok(m) = std::fs::symlink_metadata(&target)
        {
            if m.is_dir() {
                crate::nar::remove_tree_force(&target).map_err(ioe("replacing an entry"))?;
            } else {
                std::fs::remove_file(&target).map_err(ioe("replacing an entry"))?;
            }
        }
        match kind {
            tar::EntryType::Directory => {
                std::fs::create_dir_all(&target).map_err(ioe("creating a directory"))?;
            }
            tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse => {
                let exec = header.mode().unwrap_or(0o644) & 0o100 != 0;
                let mut out = std::fs::File::create(&target).map_err(ioe("creating a file"))?;
                std::io::copy(&mut entry, &mut out).map_err(ioe("writing a file"))?;
                drop(out);
                let mode = if exec { 0o555 } else { 0o444 };
                std::fs::set_permissions(&target, std::fs::Permissions::from_mode(mode))
                    .map_err(ioe("setting permissions"))?;
            }
            tar::EntryType::Symlink => {
                let t = entry
                    .link_name()
                    .map_err(ioe("reading a link target"))?
                    .map(|c| c.into_owned())
                    .unwrap_or_default();
                std::os::unix::fs::symlink(&t, &target).map_err(ioe("creating a symlink"))?;
            }
            tar::EntryType::Link => {
                let t = entry
                    .link_name()
                    .map_err(ioe("reading a link target"))?
                    .map(|c| c.into_owned())
                    .unwrap_or_default();
                let src = dest.join(&t);
                std::fs::copy(&src, &target).map_err(ioe("copying a hard link"))?;
            }
            tar::EntryType::XGlobalHeader | tar::EntryType::XHeader => {}
            other => {
                tracing::warn!(
                    "ignoring archive entry '{}' of type {other:?}",
                    raw.display()
                );
            }
        }
    }
    Ok(last_modified)
}

/// Nix's `dereferenceSingletonDirectory`: a tree whose root holds exactly one directory is
/// that directory.
pub fn strip_singleton_dir(dir: &Path) -> Result<PathBuf, FetchError> {
    let entries: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| FetchError::io(format!("reading '{}'", dir.display()), e))?
        .collect::<Result<_, _>>()
        .map_err(|e| FetchError::io(format!("reading '{}'", dir.display()), e))?;
    if entries.len() == 1 {
        let p = entries[0].path();
        if std::fs::symlink_metadata(&p)
            .map(|m| m.is_dir())
            .unwrap_or(false)
        {
            return Ok(p);
        }
    }
    Ok(dir.to_path_buf())
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Download and unpack a tarball URL (cached by URL for `tarball_ttl` seconds and by NAR
/// hash forever). Returns (tree, narHash, lastModified, immutable URL).
pub fn download_tarball(
    url: &str,
    headers: &[(String, String)],
    settings: &FetchSettings,
    cache: &FetcherCache,
) -> Result<(PathBuf, Hash, u64, Option<String>), FetchError> {
    let key: Attrs = [("url".to_owned(), Attr::String(url.to_owned()))]
        .into_iter()
        .collect();
    if let Some(f) = cache.lookup_fact("tarball", &key) {
        let fresh = maybe_get_int(&f, "time")
            .ok()
            .flatten()
            .is_some_and(|t| now().saturating_sub(t) < settings.tarball_ttl);
        if fresh
            && let (Ok(h), Ok(Some(lm))) =
                (get_str(&f, "narHash"), maybe_get_int(&f, "lastModified"))
            && let Ok(hash) = Hash::parse_sri(&h)
            && let Some(tree) = cache.lookup_tree(&hash)
        {
            let imm = maybe_get_str(&f, "immutableUrl").ok().flatten();
            return Ok((tree, hash, lm, imm));
        }
    }
    let dl = download(url, headers, cache)?;
    let tmp = cache.temp_dir()?;
    let unpack = tmp.path().join("unpack");
    let lm = unpack_archive(dl.file.path(), &unpack)?;
    let root = strip_singleton_dir(&unpack)?;
    let hash = nar_hash_of(&root)?;
    let tree = cache.insert_tree(&root, &hash)?;
    let mut facts = Attrs::new();
    facts.insert("narHash".into(), Attr::String(hash.to_sri()));
    facts.insert("lastModified".into(), Attr::Int(lm));
    facts.insert("time".into(), Attr::Int(now()));
    if let Some(e) = &dl.etag {
        facts.insert("etag".into(), Attr::String(e.clone()));
    }
    if let Some(i) = &dl.immutable_url {
        facts.insert("immutableUrl".into(), Attr::String(i.clone()));
    }
    cache.upsert_fact("tarball", &key, &facts)?;
    if dl.effective_url != url {
        let key2: Attrs = [("url".to_owned(), Attr::String(dl.effective_url.clone()))]
            .into_iter()
            .collect();
        cache.upsert_fact("tarball", &key2, &facts)?;
    }
    Ok((tree, hash, lm, dl.immutable_url))
}

/// `type = "tarball"`.
pub fn fetch_tarball(
    input: &Input,
    c: &CurlInput,
    settings: &FetchSettings,
    cache: &FetcherCache,
) -> Result<(PathBuf, Hash, Input), FetchError> {
    let (tree, hash, lm, immutable) = download_tarball(&c.url, &[], settings, cache)?;
    let mut res = input.clone();
    if let Some(imm) = immutable {
        let i = Input::from_url_str(&imm, true)?;
        if !matches!(i.kind, InputKind::Tarball(_)) {
            return Err(FetchError::invalid(
                "tarball 'Link' headers that redirect to non-tarball URLs are not supported",
            ));
        }
        res = Input {
            kind: i.kind,
            is_final: input.is_final,
        };
    }
    if let InputKind::Tarball(rc) = &mut res.kind
        && lm != 0
        && rc.last_modified.is_none()
    {
        rc.last_modified = Some(lm);
    }
    Ok((tree, hash, res))
}

/// `type = "file"`: the tree is the downloaded file itself.
pub fn fetch_file(
    input: &Input,
    c: &CurlInput,
    cache: &FetcherCache,
) -> Result<(PathBuf, Hash, Input), FetchError> {
    use std::os::unix::fs::PermissionsExt;
    let dl = download(&c.url, &[], cache)?;
    let tmp = cache.temp_dir()?;
    let p = tmp.path().join("file");
    std::fs::copy(dl.file.path(), &p)
        .map_err(|e| FetchError::io(format!("copying download of '{}'", c.url), e))?;
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o444))
        .map_err(|e| FetchError::io("setting permissions", e))?;
    let hash = nar_hash_of(&p)?;
    let tree = cache.insert_tree(&p, &hash)?;
    Ok((tree, hash, input.clone()))
}

fn scheme_for(host: &str, settings: &FetchSettings) -> &'static str {
    if settings.http_hosts.iter().any(|h| h == host) {
        "http"
    } else {
        "https"
    }
}

fn auth_headers(forge: Forge, host: &str, settings: &FetchSettings) -> Vec<(String, String)> {
    let Some(token) = settings.access_tokens.get(host) else {
        return Vec::new();
    };
    match forge {
        Forge::GitHub => vec![("Authorization".into(), format!("token {token}"))],
        Forge::SourceHut => vec![("Authorization".into(), format!("Bearer {token}"))],
        Forge::GitLab => match token.split_once(':') {
            Some(("OAuth2", t)) => vec![("Authorization".into(), format!("Bearer {t}"))],
            Some(("PAT", t)) => vec![("Private-token".into(), t.to_owned())],
            Some((k, v)) => {
                tracing::warn!("Unrecognized GitLab token type {k}");
                vec![(k.to_owned(), v.to_owned())]
            }
            None => {
                tracing::warn!("Unrecognized GitLab token type {token}");
                vec![(token.clone(), String::new())]
            }
        },
    }
}

fn read_json(dl: &Download, url: &str) -> Result<serde_json::Value, FetchError> {
    let text = std::fs::read_to_string(dl.file.path())
        .map_err(|e| FetchError::io(format!("reading the response of '{url}'"), e))?;
    serde_json::from_str(&text)
        .map_err(|e| FetchError::invalid(format!("invalid JSON from '{url}': {e}")))
}

fn sha1_rev(s: &str) -> Result<String, FetchError> {
    Ok(Hash::parse_any(s, Some(HashAlgo::Sha1))?.to_base16())
}

/// Resolve a forge ref to a commit through the forge's API.
fn forge_rev_from_ref(
    f: &ForgeInput,
    r: &str,
    settings: &FetchSettings,
    cache: &FetcherCache,
) -> Result<String, FetchError> {
    let host = f
        .host
        .clone()
        .unwrap_or_else(|| f.forge.default_host().to_owned());
    let scheme = scheme_for(&host, settings);
    let headers = auth_headers(f.forge, &host, settings);
    match f.forge {
        Forge::GitHub => {
            let url = if host == "github.com" {
                format!(
                    "{scheme}://api.{host}/repos/{}/{}/commits/{r}",
                    f.owner, f.repo
                )
            } else {
                format!(
                    "{scheme}://{host}/api/v3/repos/{}/{}/commits/{r}",
                    f.owner, f.repo
                )
            };
            let j = read_json(&download(&url, &headers, cache)?, &url)?;
            let sha = j.get("sha").and_then(|s| s.as_str()).ok_or_else(|| {
                FetchError::invalid(format!("Unexpected response received from GitHub: {j}"))
            })?;
            sha1_rev(sha)
        }
        Forge::GitLab => {
            let url = format!(
                "{scheme}://{host}/api/v4/projects/{}%2F{}/repository/commits?ref_name={r}",
                f.owner, f.repo
            );
            let j = read_json(&download(&url, &headers, cache)?, &url)?;
            match j.as_array() {
                Some(a) if !a.is_empty() => match a[0].get("id").and_then(|x| x.as_str()) {
                    Some(id) => sha1_rev(id),
                    None => Err(FetchError::invalid(format!(
                        "Unexpected response received from GitLab: {j}"
                    ))),
                },
                Some(_) => Err(FetchError::invalid(
                    "No commits returned by GitLab API -- does the git ref really exist?",
                )),
                None => Err(FetchError::invalid(format!(
                    "Unexpected response received from GitLab: {j}"
                ))),
            }
        }
        Forge::SourceHut => {
            let base = format!("{scheme}://{host}/{}/{}", f.owner, f.repo);
            let display = Input {
                kind: InputKind::Forge(f.clone()),
                is_final: false,
            }
            .display();
            let target_re = if r == "HEAD" {
                let url = format!("{base}/HEAD");
                let dl = download(&url, &headers, cache)?;
                let text = std::fs::read_to_string(dl.file.path())
                    .map_err(|e| FetchError::io(format!("reading '{url}'"), e))?;
                let line = text.lines().next().unwrap_or("");
                let target = line
                    .strip_prefix("ref: ")
                    .or_else(|| line.strip_prefix("ref:"))
                    .map(|t| t.trim().to_owned())
                    .ok_or_else(|| {
                        FetchError::bad_url(format!(
                            "in '{display}', couldn't resolve HEAD ref '{r}'"
                        ))
                    })?;
                format!("^{}$", regex::escape(&target))
            } else {
                format!("^refs/(heads|tags)/{}$", regex::escape(r))
            };
            let re = regex::Regex::new(&target_re)
                .map_err(|e| FetchError::invalid(format!("invalid ref '{r}': {e}")))?;
            let url = format!("{base}/info/refs");
            let dl = download(&url, &headers, cache)?;
            let text = std::fs::read_to_string(dl.file.path())
                .map_err(|e| FetchError::io(format!("reading '{url}'"), e))?;
            for line in text.lines() {
                let mut parts = line.split_whitespace();
                if let (Some(id), Some(name)) = (parts.next(), parts.next())
                    && re.is_match(name)
                {
                    return sha1_rev(id);
                }
            }
            Err(FetchError::bad_url(format!(
                "in '{display}', couldn't find ref '{r}'"
            )))
        }
    }
}

fn forge_archive_url(
    f: &ForgeInput,
    rev: &str,
    settings: &FetchSettings,
) -> (String, Vec<(String, String)>) {
    let host = f
        .host
        .clone()
        .unwrap_or_else(|| f.forge.default_host().to_owned());
    let scheme = scheme_for(&host, settings);
    let headers = auth_headers(f.forge, &host, settings);
    let url = match f.forge {
        Forge::GitHub => {
            if host != "github.com" {
                format!(
                    "{scheme}://{host}/api/v3/repos/{}/{}/tarball/{rev}",
                    f.owner, f.repo
                )
            } else if headers.is_empty() {
                format!(
                    "{scheme}://{host}/{}/{}/archive/{rev}.tar.gz",
                    f.owner, f.repo
                )
            } else {
                format!(
                    "{scheme}://api.{host}/repos/{}/{}/tarball/{rev}",
                    f.owner, f.repo
                )
            }
        }
        Forge::GitLab => format!(
            "{scheme}://{host}/api/v4/projects/{}%2F{}/repository/archive.tar.gz?sha={rev}",
            percent_encode(&f.owner, ""),
            percent_encode(&f.repo, "")
        ),
        Forge::SourceHut => {
            format!(
                "{scheme}://{host}/{}/{}/archive/{rev}.tar.gz",
                f.owner, f.repo
            )
        }
    };
    (url, headers)
}

/// `type = "github" | "gitlab" | "sourcehut"`.
pub fn fetch_forge(
    input: &Input,
    f: &ForgeInput,
    settings: &FetchSettings,
    cache: &FetcherCache,
) -> Result<(PathBuf, Hash, Input), FetchError> {
    let rev = match input.rev_hash()? {
        Some(h) => h.to_base16(),
        None => {
            let r = f.ref_.clone().unwrap_or_else(|| "HEAD".into());
            let rev = forge_rev_from_ref(f, &r, settings, cache)?;
            tracing::debug!("HEAD revision for '{}' is {rev}", input.display());
            rev
        }
    };
    let host = f
        .host
        .clone()
        .unwrap_or_else(|| f.forge.default_host().to_owned());
    let key: Attrs = BTreeMap::from([
        (
            "forge".to_owned(),
            Attr::String(format!(
                "{}:{host}/{}/{}",
                f.forge.scheme(),
                f.owner,
                f.repo
            )),
        ),
        ("rev".to_owned(), Attr::String(rev.clone())),
    ]);
    let mut res = f.clone();
    res.ref_ = None;
    res.rev = Some(rev.clone());
    if let Some(facts) = cache.lookup_fact("gitRevToTree", &key)
        && let (Ok(h), Ok(Some(lm))) = (
            get_str(&facts, "narHash"),
            maybe_get_int(&facts, "lastModified"),
        )
        && let Ok(hash) = Hash::parse_sri(&h)
        && let Some(tree) = cache.lookup_tree(&hash)
    {
        res.last_modified = Some(lm);
        let out = Input {
            kind: InputKind::Forge(res),
            is_final: input.is_final,
        };
        return Ok((tree, hash, out));
    }
    let (url, headers) = forge_archive_url(f, &rev, settings);
    let dl = download(&url, &headers, cache)?;
    let tmp = cache.temp_dir()?;
    let unpack = tmp.path().join("unpack");
    let lm = unpack_archive(dl.file.path(), &unpack)?;
    let root = strip_singleton_dir(&unpack)?;
    let hash = nar_hash_of(&root)?;
    let tree = cache.insert_tree(&root, &hash)?;
    let mut facts = Attrs::new();
    facts.insert("narHash".into(), Attr::String(hash.to_sri()));
    facts.insert("lastModified".into(), Attr::Int(lm));
    cache.upsert_fact("gitRevToTree", &key, &facts)?;
    res.last_modified = Some(lm);
    Ok((
        tree,
        hash,
        Input {
            kind: InputKind::Forge(res),
            is_final: input.is_final,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_bytes(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, data) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_mtime(1000);
            // Write the name bytes directly so that `..` can be tested.
            let field = &mut h.as_old_mut().name;
            field[..name.len()].copy_from_slice(name.as_bytes());
            h.set_cksum();
            b.append(&h, *data).expect("append to an in-memory tar");
        }
        b.into_inner().expect("finish an in-memory tar")
    }

    fn unpack_bytes(bytes: &[u8]) -> Result<(tempfile::TempDir, u64), FetchError> {
        let dir = tempfile::tempdir().expect("tempdir");
        let archive = dir.path().join("a");
        std::fs::write(&archive, bytes).expect("write archive");
        let lm = unpack_archive(&archive, &dir.path().join("out"))?;
        Ok((dir, lm))
    }

    #[test]
    fn all_compressions_unpack_to_the_same_tree() {
        let tar = tar_bytes(&[("top/a.txt", b"a\n"), ("top/sub/b.txt", b"b\n")]);
        let gz = {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(&tar).expect("gzip");
            e.finish().expect("gzip")
        };
        let xz = {
            let mut out = Vec::new();
            lzma_rs::xz_compress(&mut std::io::Cursor::new(&tar), &mut out).expect("xz");
            out
        };
        let zst = ruzstd::encoding::compress_to_vec(
            std::io::Cursor::new(&tar),
            ruzstd::encoding::CompressionLevel::Fastest,
        );
        let mut hashes = Vec::new();
        for bytes in [&tar, &gz, &xz, &zst] {
            let (dir, lm) = unpack_bytes(bytes).expect("unpacks");
            assert_eq!(lm, 1000);
            let root = strip_singleton_dir(&dir.path().join("out")).expect("strip");
            assert!(root.ends_with("top"));
            hashes.push(nar_hash_of(&root).expect("hash"));
        }
        assert!(hashes.windows(2).all(|w| w[0] == w[1]));
    }

    #[test]
    fn entries_escaping_the_archive_are_rejected() {
        let tar = tar_bytes(&[("../evil", b"x")]);
        let e = unpack_bytes(&tar).expect_err("must fail");
        assert_eq!(
            e.to_string(),
            "archive entry '../evil' points outside the archive"
        );
        let e = unpack_bytes(b"BZh91AY&SY").expect_err("bzip2");
        assert!(e.to_string().contains("unsupported archive format"), "{e}");
        assert!(unpack_bytes(b"\x1f\x8b\x08garbage").is_err());
    }

    #[test]
    fn immutable_links_are_parsed() {
        assert_eq!(
            parse_immutable_link("<https://x/y.tar.gz?rev=1>; rel=\"immutable\""),
            Some("https://x/y.tar.gz?rev=1".to_owned())
        );
        assert_eq!(parse_immutable_link("<https://x>; rel=\"next\""), None);
    }
}

//! HTTP fetchers (`tarball`, `file`, `github`, `gitlab`, `sourcehut`) against a loopback
//! server this test starts: forge API ref resolution, archive download and unpacking, the
//! fetcher cache (a locked input is never downloaded twice), narHash verification, and
//! atomicity when the server dies mid-download. No test reaches the network.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use flaked_store::fetchers::attrs::{Attr, Attrs};
use flaked_store::fetchers::{FetchError, FetchSettings, Input, fetch};

enum Reply {
    Ok(Vec<u8>),
    NotFound,
    /// Announce `len` bytes, send `body`, then close the connection.
    Truncated {
        len: usize,
        body: Vec<u8>,
    },
}

struct Server {
    port: u16,
    requests: Arc<Mutex<Vec<String>>>,
    count: Arc<AtomicUsize>,
}

impl Server {
    fn start(route: impl Fn(&str) -> Reply + Send + Sync + 'static) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        let port = listener.local_addr().expect("addr").port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let count = Arc::new(AtomicUsize::new(0));
        let (r2, c2) = (requests.clone(), count.clone());
        let route = Arc::new(route);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let (route, r2, c2) = (route.clone(), r2.clone(), c2.clone());
                std::thread::spawn(move || serve(stream, &*route, &r2, &c2));
            }
        });
        Server {
            port,
            requests,
            count,
        }
    }
    fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
    fn count(&self) -> usize {
        self.count.load(Ordering::SeqCst)
    }
}

fn serve(
    stream: TcpStream,
    route: &dyn Fn(&str) -> Reply,
    log: &Mutex<Vec<String>>,
    count: &AtomicUsize,
) {
    let mut reader = BufReader::new(stream.try_clone().expect("clone"));
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let path = line.split_whitespace().nth(1).unwrap_or("/").to_owned();
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                break;
            }
        }
        count.fetch_add(1, Ordering::SeqCst);
        log.lock().expect("lock").push(path.clone());
        let mut s = &stream;
        match route(&path) {
            Reply::Ok(body) => {
                let _ = write!(
                    s,
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nETag: \"e1\"\r\n\r\n",
                    body.len()
                );
                let _ = s.write_all(&body);
            }
            Reply::NotFound => {
                let _ = write!(s, "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n");
            }
            Reply::Truncated { len, body } => {
                let _ = write!(s, "HTTP/1.1 200 OK\r\nContent-Length: {len}\r\n\r\n");
                let _ = s.write_all(&body);
                let _ = s.flush();
                let _ = stream.shutdown(std::net::Shutdown::Both);
                return;
            }
        }
    }
}

/// A gzip'd tarball with one top-level directory, made with the tar/flate2 crates.
fn make_tarball(top: &str, files: &[(&str, &str, u32)], mtime: u64) -> Vec<u8> {
    let mut b = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::default(),
    ));
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Directory);
    h.set_path(format!("{top}/")).expect("path");
    h.set_mode(0o755);
    h.set_size(0);
    h.set_mtime(mtime);
    h.set_cksum();
    b.append(&h, std::io::empty()).expect("append");
    for (name, content, mode) in files {
        let mut h = tar::Header::new_gnu();
        h.set_path(format!("{top}/{name}")).expect("path");
        h.set_mode(*mode);
        h.set_size(content.len() as u64);
        h.set_mtime(mtime + 10);
        h.set_cksum();
        b.append(&h, content.as_bytes()).expect("append");
    }
    b.into_inner().expect("tar").finish().expect("gzip")
}

fn input(pairs: &[(&str, Attr)]) -> Input {
    let a: Attrs = pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect();
    Input::from_attrs(&a).expect("valid input")
}
fn s(x: &str) -> Attr {
    Attr::String(x.to_owned())
}

/// Downloaded trees live on disk in the fetcher cache.
fn dir(f: &flaked_store::fetchers::Fetched) -> &Path {
    f.tree.as_path().expect("a downloaded tree is on disk")
}

fn settings(cache: &Path, server: &Server) -> FetchSettings {
    let mut st = FetchSettings::new(cache);
    st.http_hosts.push(server.host());
    st
}

/// No temporary file, no tree and no recorded fact (a fact would make a later fetch trust a
/// download that never completed).
fn cache_is_clean(cache: &Path) -> bool {
    let count = |d: &str| {
        std::fs::read_dir(cache.join("fetchers").join(d))
            .map(|d| d.count())
            .unwrap_or(0)
    };
    count("tmp") == 0 && count("trees") == 0 && count("facts") == 0
}

const REV: &str = "0123456789abcdef0123456789abcdef01234567";

#[test]
fn github_ref_resolution_download_and_cache() {
    let tarball = make_tarball(
        "owner-repo-0123456",
        &[
            ("flake.nix", "{ }\n", 0o644),
            ("bin/run", "#!/bin/sh\n", 0o755),
        ],
        1_700_000_000,
    );
    let tb = tarball.clone();
    let server = Server::start(move |path| match path {
        "/api/v3/repos/owner/repo/commits/HEAD" => Reply::Ok(
            format!("{{\"sha\": \"{REV}\", \"commit\": {{\"tree\": {{\"sha\": \"{REV}\"}}}}}}")
                .into_bytes(),
        ),
        p if p == format!("/api/v3/repos/owner/repo/tarball/{REV}") => Reply::Ok(tb.clone()),
        _ => Reply::NotFound,
    });
    let cache = tempfile::tempdir().expect("tempdir");
    let st = settings(cache.path(), &server);
    let i = input(&[
        ("type", s("github")),
        ("owner", s("owner")),
        ("repo", s("repo")),
        ("host", s(&server.host())),
    ]);
    let f = fetch(&i, &st).expect("github fetch");
    assert_eq!(f.input.rev(), Some(REV));
    assert_eq!(f.input.ref_(), None);
    assert_eq!(f.input.last_modified(), Some(1_700_000_010));
    assert!(f.input.is_final);
    assert!(
        dir(&f).join("flake.nix").exists(),
        "top-level directory stripped"
    );
    assert_eq!(server.count(), 2);
    // The locked input is never downloaded again.
    let again = fetch(&f.input, &st).expect("cached");
    assert_eq!(again.tree, f.tree);
    assert_eq!(server.count(), 2);
    // Nor is the same revision given without narHash.
    let by_rev = input(&[
        ("type", s("github")),
        ("owner", s("owner")),
        ("repo", s("repo")),
        ("host", s(&server.host())),
        ("rev", s(REV)),
    ]);
    let f2 = fetch(&by_rev, &st).expect("by rev");
    assert_eq!(f2.nar_hash, f.nar_hash);
    assert_eq!(server.count(), 2);
    // The tree hashes like the same tree on disk.
    let expected = flaked_store::fetchers::fetch::nar_hash_of(dir(&f)).expect("hash");
    assert_eq!(expected, f.nar_hash);
}

#[test]
fn gitlab_and_sourcehut_resolve_refs() {
    let tarball = make_tarball("repo-main", &[("a.txt", "a\n", 0o644)], 1_600_000_000);
    let tb = tarball.clone();
    let server = Server::start(move |path| {
        match path {
        "/api/v4/projects/grp%2Fproj/repository/commits?ref_name=main" => Reply::Ok(format!("[{{\"id\": \"{REV}\"}}]").into_bytes()),
        "/api/v4/projects/grp%2Fproj/repository/commits?ref_name=none" => Reply::Ok(b"[]".to_vec()),
        p if p == format!("/api/v4/projects/grp%2Fproj/repository/archive.tar.gz?sha={REV}") => Reply::Ok(tb.clone()),
        "/~me/hare/HEAD" => Reply::Ok(b"ref: refs/heads/trunk\n".to_vec()),
        "/~me/hare/info/refs" => Reply::Ok(format!("1111111111111111111111111111111111111111\trefs/heads/other\n{REV}\trefs/heads/trunk\n").into_bytes()),
        p if p == format!("/~me/hare/archive/{REV}.tar.gz") => Reply::Ok(tb.clone()),
        _ => Reply::NotFound,
    }
    });
    let cache = tempfile::tempdir().expect("tempdir");
    let st = settings(cache.path(), &server);
    let gl = input(&[
        ("type", s("gitlab")),
        ("owner", s("grp")),
        ("repo", s("proj")),
        ("ref", s("main")),
        ("host", s(&server.host())),
    ]);
    let f = fetch(&gl, &st).expect("gitlab");
    assert_eq!(f.input.rev(), Some(REV));
    let e = fetch(
        &input(&[
            ("type", s("gitlab")),
            ("owner", s("grp")),
            ("repo", s("proj")),
            ("ref", s("none")),
            ("host", s(&server.host())),
        ]),
        &st,
    )
    .expect_err("no commits");
    assert_eq!(
        e.to_string(),
        "No commits returned by GitLab API -- does the git ref really exist?"
    );
    let sh = input(&[
        ("type", s("sourcehut")),
        ("owner", s("~me")),
        ("repo", s("hare")),
        ("host", s(&server.host())),
    ]);
    let f2 = fetch(&sh, &st).expect("sourcehut");
    assert_eq!(f2.input.rev(), Some(REV));
    assert_eq!(f2.nar_hash, f.nar_hash);
}

#[test]
fn tarball_over_http_verifies_nar_hash() {
    let tarball = make_tarball("src", &[("x", "x\n", 0o644)], 1_500_000_000);
    let tb = tarball.clone();
    let server = Server::start(move |path| match path {
        "/x.tar.gz" => Reply::Ok(tb.clone()),
        _ => Reply::NotFound,
    });
    let cache = tempfile::tempdir().expect("tempdir");
    let st = settings(cache.path(), &server);
    let url = format!("http://{}/x.tar.gz", server.host());
    let f = fetch(&input(&[("type", s("tarball")), ("url", s(&url))]), &st).expect("tarball");
    assert_eq!(f.input.last_modified(), Some(1_500_000_010));
    let wrong = "sha256-AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
    let fresh = tempfile::tempdir().expect("tempdir");
    let st2 = settings(fresh.path(), &server);
    let e = fetch(
        &input(&[
            ("type", s("tarball")),
            ("url", s(&url)),
            ("narHash", s(wrong)),
        ]),
        &st2,
    )
    .expect_err("mismatch");
    match &e {
        FetchError::NarHashMismatch { expected, got, .. } => {
            assert_eq!(expected, wrong);
            assert_eq!(got, &f.nar_hash.to_sri());
        }
        other => panic!("expected a NAR hash mismatch, got {other}"),
    }
    assert_eq!(
        e.to_string(),
        format!(
            "NAR hash mismatch in input '{url}?narHash=sha256-AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA%3D', expected '{wrong}' but got '{}'",
            f.nar_hash.to_sri()
        )
    );
    // A file input is the downloaded file itself.
    let file = fetch(&input(&[("type", s("file")), ("url", s(&url))]), &st).expect("file");
    let mut bytes = Vec::new();
    std::fs::File::open(dir(&file))
        .expect("open")
        .read_to_end(&mut bytes)
        .expect("read");
    assert_eq!(bytes, tarball);
    let e = fetch(
        &input(&[
            ("type", s("tarball")),
            (
                "url",
                s(&format!("http://{}/missing.tar.gz", server.host())),
            ),
        ]),
        &st,
    )
    .expect_err("404");
    assert_eq!(
        e.to_string(),
        format!(
            "unable to download 'http://{}/missing.tar.gz': HTTP error 404",
            server.host()
        )
    );
}

#[test]
fn a_server_failing_mid_download_leaves_nothing() {
    let tarball = make_tarball(
        "src",
        &[("big", &"y".repeat(200_000), 0o644)],
        1_500_000_000,
    );
    let half = tarball[..tarball.len() / 2].to_vec();
    let len = tarball.len();
    let server = Server::start(move |_| Reply::Truncated {
        len,
        body: half.clone(),
    });
    let cache = tempfile::tempdir().expect("tempdir");
    let st = settings(cache.path(), &server);
    let url = format!("http://{}/big.tar.gz", server.host());
    let e = fetch(&input(&[("type", s("tarball")), ("url", s(&url))]), &st).expect_err("truncated");
    assert!(matches!(e, FetchError::Download { .. }), "{e}");
    // A clear error: Nix's "unable to download" with the URL and a reason.
    let shown = e.to_string();
    assert!(
        shown.starts_with(&format!("unable to download '{url}': ")) && shown.len() > url.len() + 24,
        "{shown}"
    );
    assert!(cache_is_clean(cache.path()), "partial download left behind");
    let gh = input(&[
        ("type", s("github")),
        ("owner", s("o")),
        ("repo", s("r")),
        ("rev", s(REV)),
        ("host", s(&server.host())),
    ]);
    let e = fetch(&gh, &st).expect_err("truncated archive");
    assert!(
        e.to_string().starts_with(&format!(
            "unable to download 'http://{}/api/v3/repos/o/r/tarball/{REV}': ",
            server.host()
        )),
        "{e}"
    );
    assert!(cache_is_clean(cache.path()), "partial archive left behind");
    assert!(server.requests.lock().expect("lock").len() >= 2);
}

/// After a failed download the same fetch succeeds once the server recovers: nothing of the
/// failed attempt is reused.
#[test]
fn a_failed_download_is_retried_from_scratch() {
    let tarball = make_tarball(
        "src",
        &[("big", &"z".repeat(100_000), 0o644)],
        1_500_000_000,
    );
    let healthy = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (tb, h2) = (tarball.clone(), healthy.clone());
    let server = Server::start(move |_| {
        if h2.load(Ordering::SeqCst) {
            Reply::Ok(tb.clone())
        } else {
            Reply::Truncated {
                len: tb.len(),
                body: tb[..tb.len() / 3].to_vec(),
            }
        }
    });
    let cache = tempfile::tempdir().expect("tempdir");
    let st = settings(cache.path(), &server);
    let url = format!("http://{}/t.tar.gz", server.host());
    let i = input(&[("type", s("tarball")), ("url", s(&url))]);
    fetch(&i, &st).expect_err("truncated");
    assert!(cache_is_clean(cache.path()));
    healthy.store(true, Ordering::SeqCst);
    let f = fetch(&i, &st).expect("the server recovered");
    let content = std::fs::read_to_string(dir(&f).join("big")).expect("read");
    assert_eq!(content.len(), 100_000);
    assert_eq!(
        flaked_store::fetchers::fetch::nar_hash_of(dir(&f)).expect("hash"),
        f.nar_hash
    );
}

/// A complete reply that is not an archive is an error naming the URL; nothing is kept.
#[test]
fn a_corrupt_archive_is_an_error_and_leaves_nothing() {
    let server = Server::start(|_| Reply::Ok(b"this is not a tarball at all".repeat(100)));
    let cache = tempfile::tempdir().expect("tempdir");
    let st = settings(cache.path(), &server);
    let url = format!("http://{}/bad.tar.gz", server.host());
    let e = fetch(&input(&[("type", s("tarball")), ("url", s(&url))]), &st).expect_err("corrupt");
    assert!(!e.to_string().is_empty(), "{e:?}");
    assert!(cache_is_clean(cache.path()), "corrupt archive left behind");
}

/// A github input pinned to a narHash the archive does not have: an error showing both hashes,
/// and the mismatching input is not recorded as fetched.
#[test]
fn github_nar_hash_mismatch_shows_both_hashes() {
    let tarball = make_tarball(
        "o-r-0123456",
        &[("flake.nix", "{ }\n", 0o644)],
        1_600_000_000,
    );
    let tb = tarball.clone();
    let server = Server::start(move |path| match path {
        p if p == format!("/api/v3/repos/o/r/tarball/{REV}") => Reply::Ok(tb.clone()),
        _ => Reply::NotFound,
    });
    let wrong = "sha256-AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
    let base = [
        ("type", s("github")),
        ("owner", s("o")),
        ("repo", s("r")),
        ("rev", s(REV)),
        ("host", s(&server.host())),
    ];
    let good_cache = tempfile::tempdir().expect("tempdir");
    let good = fetch(&input(&base), &settings(good_cache.path(), &server)).expect("github");
    let cache = tempfile::tempdir().expect("tempdir");
    let st = settings(cache.path(), &server);
    let mut pinned = base.to_vec();
    pinned.push(("narHash", s(wrong)));
    let e = fetch(&input(&pinned), &st).expect_err("mismatch");
    match &e {
        FetchError::NarHashMismatch { expected, got, .. } => {
            assert_eq!(expected, wrong);
            assert_eq!(got, &good.nar_hash.to_sri());
        }
        other => panic!("expected a NAR hash mismatch, got {other}"),
    }
    let shown = e.to_string();
    assert!(
        shown.starts_with("NAR hash mismatch in input 'github:o/r/")
            && shown.ends_with(&format!(
                "expected '{wrong}' but got '{}'",
                good.nar_hash.to_sri()
            )),
        "{shown}"
    );
    // Fetching it again still fails (the wrong pin is never satisfied from the cache).
    assert!(matches!(
        fetch(&input(&pinned), &st),
        Err(FetchError::NarHashMismatch { .. })
    ));
}

//! Local fetchers (`git+file`, `path`, `tarball` from `file://`) against the reference Nix:
//! scripts/flake-fixtures.sh builds the same repository/tree/tarball the goldens were made from
//! (fixed dates and authors give the same Git revisions), and our fetch must report the same
//! `rev`, `revCount`, `lastModified`, `dirtyRev` and `narHash` as `builtins.fetchTree` and
//! `nix flake lock` did.

use std::path::{Path, PathBuf};
use std::process::Command;

use flaked_store::fetchers::attrs::{Attr, Attrs};
use flaked_store::fetchers::{FetchSettings, Fetched, Input, fetch};
use flaked_store::store_path::StoreDir;
use serde_json::Value;

struct Fixtures {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
}

fn fixtures() -> Fixtures {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("fx");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/flake-fixtures.sh");
    let out = Command::new("bash")
        .arg(&script)
        .arg(&dir)
        .output()
        .expect("bash runs");
    assert!(
        out.status.success(),
        "fixtures failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Fixtures { _tmp: tmp, dir }
}

fn golden() -> Value {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/flake-golden/fetch.json");
    serde_json::from_str(&std::fs::read_to_string(p).expect("fetch.json")).expect("JSON")
}

fn attrs(pairs: &[(&str, Attr)]) -> Input {
    let a: Attrs = pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect();
    Input::from_attrs(&a).expect("valid input")
}

fn s(x: &str) -> Attr {
    Attr::String(x.to_owned())
}

/// The fetched tree on disk: the tree itself, or a Git commit (read from the repository's
/// objects) exported to `export` (which must not exist yet).
fn on_disk(f: &Fetched, export: &Path) -> PathBuf {
    match f.tree.as_path() {
        Some(p) => p.to_path_buf(),
        None => {
            f.tree.export_to(export).expect("export the tree");
            export.to_path_buf()
        }
    }
}

/// Compare the fields `builtins.fetchTree` reported (and its `outPath`) with our fetch.
fn check(name: &str, fetched: &Fetched, g: &Value) {
    let store = StoreDir::new("/nix/store").expect("store dir");
    let path = fetched.store_path(&store).expect("store path");
    assert_eq!(
        Some(store.print(&path).as_str()),
        g["storePath"].as_str(),
        "{name}: store path"
    );
    let got = &fetched.input;
    let a = got.to_attrs();
    for key in [
        "narHash",
        "rev",
        "lastModified",
        "revCount",
        "dirtyRev",
        "dirtyShortRev",
    ] {
        let ours = a.get(key).map(|v| match v {
            Attr::String(s) => Value::String(s.clone()),
            Attr::Int(n) => Value::from(*n),
            Attr::Bool(b) => Value::Bool(*b),
        });
        if let Some(expected) = g.get(key) {
            assert_eq!(ours.as_ref(), Some(expected), "{name}: field {key}");
        }
    }
}

#[test]
fn git_fetches_match_nix() {
    let fx = fixtures();
    let cache = tempfile::tempdir().expect("tempdir");
    let settings = FetchSettings::new(cache.path());
    let g = golden();
    let url = format!("file://{}/repo", fx.dir.display());

    let wd =
        fetch(&attrs(&[("type", s("git")), ("url", s(&url))]), &settings).expect("workdir fetch");
    check("repo-workdir", &wd, &g["repo-workdir"]);
    // As in the lock file Nix wrote: the clean work tree is locked to its branch.
    assert_eq!(wd.input.ref_(), Some("refs/heads/main"));
    assert_eq!(wd.input.rev_count(), Some(3));
    // Untracked files are invisible.
    let wd_dir = on_disk(&wd, &cache.path().join("export-wd"));
    assert!(!wd_dir.join("untracked.txt").exists());
    assert!(wd_dir.join("sub/dir/file.txt").exists());

    for (name, r) in [
        ("repo-main", "main"),
        ("repo-tag", "v1"),
        ("repo-feature", "refs/heads/feature"),
    ] {
        let f = fetch(
            &attrs(&[("type", s("git")), ("url", s(&url)), ("ref", s(r))]),
            &settings,
        )
        .unwrap_or_else(|e| panic!("{name}: {e}"));
        check(name, &f, &g[name]);
        assert_eq!(f.input.ref_(), Some(r));
    }
    let tag = fetch(
        &attrs(&[("type", s("git")), ("url", s(&url)), ("ref", s("v1"))]),
        &settings,
    )
    .expect("tag");
    assert_eq!(
        tag.input.rev_count(),
        Some(2),
        "revCount as in the golden lock file"
    );

    let rev = "9c37a80c336b585c95959b8130b96aecfeccd445";
    let f = fetch(
        &attrs(&[
            ("type", s("git")),
            ("url", s(&url)),
            ("ref", s("main")),
            ("rev", s(rev)),
        ]),
        &settings,
    )
    .expect("rev fetch");
    check("repo-rev", &f, &g["repo-rev"]);
    assert_eq!(f.input.rev_count(), Some(1));

    let dirty_url = format!("file://{}/dirty", fx.dir.display());
    let d = fetch(
        &attrs(&[("type", s("git")), ("url", s(&dirty_url))]),
        &settings,
    )
    .expect("dirty fetch");
    check("dirty", &d, &g["dirty"]);
    assert_eq!(d.input.rev(), None);
    assert!(
        !on_disk(&d, &cache.path().join("export-dirty"))
            .join("extra.txt")
            .exists(),
        "untracked file must not be visible"
    );
    assert_eq!(
        std::fs::read_to_string(on_disk(&d, &cache.path().join("x")).join("README"))
            .expect("README"),
        "modified\n"
    );

    let mut strict = settings.clone();
    strict.allow_dirty = false;
    let e = fetch(
        &attrs(&[("type", s("git")), ("url", s(&dirty_url))]),
        &strict,
    )
    .expect_err("dirty refused");
    assert_eq!(
        e.to_string(),
        format!("Git tree '{}/dirty' is dirty", fx.dir.display())
    );

    let e = fetch(
        &attrs(&[("type", s("git")), ("url", s(&url)), ("ref", s("nope"))]),
        &settings,
    )
    .expect_err("unknown ref");
    assert!(
        e.to_string().contains("resolving Git reference 'nope'"),
        "{e}"
    );
}

#[test]
fn locked_git_inputs_are_read_from_the_repository() {
    let fx = fixtures();
    let cache = tempfile::tempdir().expect("tempdir");
    let settings = FetchSettings::new(cache.path());
    let url = format!("file://{}/repo", fx.dir.display());
    let first = fetch(
        &attrs(&[("type", s("git")), ("url", s(&url)), ("ref", s("v1"))]),
        &settings,
    )
    .expect("fetch");
    assert!(first.input.is_final);
    // The commit's tree is not written out: it is read from the repository's objects, and
    // its NAR serialisation is the one of the tree as exported.
    assert_eq!(first.tree.as_path(), None);
    let exported = on_disk(&first, &cache.path().join("export"));
    assert_eq!(
        flaked_store::fetchers::fetch::nar_hash_of(&exported).expect("hash"),
        first.nar_hash
    );
    assert_eq!(
        std::fs::read_dir(cache.path().join("fetchers/trees"))
            .expect("fetcher cache")
            .count(),
        0,
        "nothing exported into the fetcher cache"
    );
    let again = fetch(&first.input, &settings).expect("locked fetch");
    assert_eq!(again.tree, first.tree);
    assert_eq!(again.input, first.input);
    // Without the repository the fetcher has nothing to read (the flake code serves a locked
    // input whose store path is valid without fetching, as Nix does).
    std::fs::remove_dir_all(fx.dir.join("repo")).expect("rm");
    fetch(&first.input, &settings).expect_err("the repository is gone");
}

#[test]
fn path_and_file_tarball_match_nix() {
    let fx = fixtures();
    let cache = tempfile::tempdir().expect("tempdir");
    let settings = FetchSettings::new(cache.path());
    let g = golden();
    let tree = fx.dir.join("tree");
    let p = fetch(
        &attrs(&[
            ("type", s("path")),
            ("path", s(&tree.display().to_string())),
        ]),
        &settings,
    )
    .expect("path");
    check("tree", &p, &g["tree"]);
    assert_eq!(p.tree.as_path(), Some(tree.as_path()));

    let url = format!("file://{}/src.tar.gz", fx.dir.display());
    let t = fetch(
        &attrs(&[("type", s("tarball")), ("url", s(&url))]),
        &settings,
    )
    .expect("tarball");
    check("tarball", &t, &g["tarball"]);
    // The single top-level directory is stripped.
    assert!(
        on_disk(&t, &cache.path().join("x"))
            .join("one.txt")
            .exists()
    );

    // A pinned narHash that does not match is an error showing both hashes.
    let wrong = "sha256-AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
    let e = fetch(
        &attrs(&[
            ("type", s("path")),
            ("path", s(&tree.display().to_string())),
            ("narHash", s(wrong)),
        ]),
        &settings,
    )
    .expect_err("mismatch");
    assert_eq!(
        e.to_string(),
        format!(
            "NAR hash mismatch in input 'path:{}?narHash=sha256-AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA%3D', expected '{wrong}' but got '{}'",
            tree.display(),
            g["tree"]["narHash"].as_str().expect("golden hash")
        )
    );
    let e = fetch(
        &attrs(&[("type", s("path")), ("path", s("rel/x"))]),
        &settings,
    )
    .expect_err("relative");
    assert_eq!(
        e.to_string(),
        "cannot fetch input 'path:rel/x' because it uses a relative path"
    );
}

/// Manual benchmark: `FLAKED_BENCH_REPO=/path/to/repo cargo test --release --test
/// fetchers_local -- --ignored --nocapture bench`. Prints cold/warm work-tree and locked
/// fetch times.
#[test]
#[ignore]
fn bench_git_fetch() {
    let Ok(repo) = std::env::var("FLAKED_BENCH_REPO") else {
        return;
    };
    // FLAKED_BENCH_CACHE: where to put the cache (file creation in /tmp can be slow).
    let cache = match std::env::var("FLAKED_BENCH_CACHE") {
        Ok(d) => tempfile::tempdir_in(d).expect("tempdir"),
        Err(_) => tempfile::tempdir().expect("tempdir"),
    };
    let settings = FetchSettings::new(cache.path());
    let t = std::time::Instant::now();
    let info = flaked_store::fetchers::git::workdir_info(Path::new(&repo)).expect("workdir info");
    println!(
        "workdir status ({} files): {:?}",
        info.files.len(),
        t.elapsed()
    );
    let t = std::time::Instant::now();
    flaked_store::fetchers::fetch::nar_hash_of(Path::new(&repo)).expect("hash");
    println!("NAR hash of the work tree (incl. .git): {:?}", t.elapsed());
    let i = attrs(&[("type", s("git")), ("url", s(&format!("file://{repo}")))]);
    for round in ["cold", "warm"] {
        let t = std::time::Instant::now();
        let f = fetch(&i, &settings).expect("fetch");
        println!(
            "workdir {round}: {:?} ({})",
            t.elapsed(),
            f.nar_hash.to_sri()
        );
    }
    let t = std::time::Instant::now();
    let f = fetch(&i, &settings).expect("fetch");
    let again = fetch(&f.input, &settings).expect("locked");
    println!(
        "workdir + locked refetch: {:?} ({})",
        t.elapsed(),
        again.nar_hash.to_sri()
    );
}

/// Repositories that are not local work trees (here: a bare clone, as a stand-in for a
/// remote URL) are fetched with `git fetch` into a cache repository, as Nix does.
#[test]
fn bare_repositories_are_fetched_into_the_cache() {
    let fx = fixtures();
    let bare = fx.dir.join("bare.git");
    let out = Command::new("git")
        .args(["clone", "--quiet", "--bare"])
        .arg(fx.dir.join("repo"))
        .arg(&bare)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .output()
        .expect("git runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cache = tempfile::tempdir().expect("tempdir");
    let settings = FetchSettings::new(cache.path());
    let g = golden();
    let url = format!("file://{}", bare.display());
    let head = fetch(&attrs(&[("type", s("git")), ("url", s(&url))]), &settings).expect("HEAD");
    check("repo-main", &head, &g["repo-main"]);
    assert_eq!(head.input.ref_(), Some("refs/heads/main"));
    assert_eq!(head.input.rev_count(), Some(3));
    // As in Nix, a bare name means a branch for remote repositories; tags need `refs/tags/`.
    assert!(
        fetch(
            &attrs(&[("type", s("git")), ("url", s(&url)), ("ref", s("v1"))]),
            &settings
        )
        .is_err()
    );
    let tag = fetch(
        &attrs(&[
            ("type", s("git")),
            ("url", s(&url)),
            ("ref", s("refs/tags/v1")),
        ]),
        &settings,
    )
    .expect("tag");
    check("repo-tag", &tag, &g["repo-tag"]);
    let rev = "9d97e74d6cdc84b2656c7655e77be300feb30aee";
    let by_rev = attrs(&[
        ("type", s("git")),
        ("url", s(&url)),
        ("ref", s("feature")),
        ("rev", s(rev)),
    ]);
    let f = fetch(&by_rev, &settings).expect("rev");
    check("repo-feature", &f, &g["repo-feature"]);
    // Once fetched, a revision is served from the cache repository even if the remote is gone.
    std::fs::remove_dir_all(&bare).expect("rm");
    let mut fresh_trees = settings.clone();
    fresh_trees.tarball_ttl = 0;
    std::fs::remove_dir_all(cache.path().join("fetchers/trees")).expect("rm trees");
    std::fs::create_dir_all(cache.path().join("fetchers/trees")).expect("mkdir trees");
    let again = fetch(&by_rev, &fresh_trees).expect("from the cache repository");
    assert_eq!(again.nar_hash, f.nar_hash);
    let e = fetch(
        &attrs(&[("type", s("git")), ("url", s(&url)), ("ref", s("nope"))]),
        &fresh_trees,
    )
    .expect_err("remote gone");
    assert!(e.to_string().contains("fetching Git repository"), "{e}");
}

#[test]
fn shallow_repositories_need_shallow_true() {
    let fx = fixtures();
    let clone = fx.dir.join("shallow");
    let out = Command::new("git")
        .args(["clone", "--quiet", "--depth=1"])
        .arg(format!("file://{}/repo", fx.dir.display()))
        .arg(&clone)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .output()
        .expect("git runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cache = tempfile::tempdir().expect("tempdir");
    let settings = FetchSettings::new(cache.path());
    let url = format!("file://{}", clone.display());
    let e = fetch(
        &attrs(&[("type", s("git")), ("url", s(&url)), ("ref", s("main"))]),
        &settings,
    )
    .expect_err("shallow refused");
    assert_eq!(
        e.to_string(),
        format!(
            "'{}' is a shallow Git repository, but shallow repositories are only allowed when `shallow = true;` is specified",
            clone.display()
        )
    );
    let f = fetch(
        &attrs(&[
            ("type", s("git")),
            ("url", s(&url)),
            ("ref", s("main")),
            ("shallow", Attr::Bool(true)),
        ]),
        &settings,
    )
    .expect("shallow allowed");
    check("repo-main", &f, &golden()["repo-main"]);
    assert_eq!(f.input.rev_count(), None, "no revCount for shallow fetches");
}

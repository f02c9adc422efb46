//! `flaked-store-tool`: a small command line front end to flaked-store, used by the
//! benchmark (`bench/store-nar-hash.sh`) and the interchange script
//! (`scripts/store-interchange.sh`). It exists so those can drive the library without the
//! daemon; it keeps the library's behaviour, adding only argument parsing and printing.

use std::collections::BTreeSet;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use flaked_store::hash::{HashAlgo, HashFormat};
use flaked_store::{FileIngestionMethod, LocalStore, StoreDir, nar};

const USAGE: &str = "usage:
  flaked-store-tool hash-path [--type ALGO] [--flat] [--base32|--sri] PATH
  flaked-store-tool dump PATH                    (NAR to stdout)
  flaked-store-tool add --root R [--store-dir D] [--flat] [--type ALGO] [--name N] PATH
  flaked-store-tool import-twice --root R PATH   (timings of a cold and a metadata-cached import)
  flaked-store-tool add-text --root R [--store-dir D] [--ref STORE-PATH]... NAME FILE
  flaked-store-tool path-info --root R [--store-dir D] STORE-PATH";

struct Opts {
    algo: HashAlgo,
    flat: bool,
    format: HashFormat,
    root: Option<PathBuf>,
    store_dir: String,
    name: Option<String>,
    refs: Vec<String>,
    rest: Vec<String>,
}

fn parse(args: &[String]) -> Result<Opts, String> {
    let mut o = Opts {
        algo: HashAlgo::Sha256,
        flat: false,
        format: HashFormat::Base16,
        root: None,
        store_dir: "/nix/store".into(),
        name: None,
        refs: vec![],
        rest: vec![],
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut val = || {
            it.next()
                .cloned()
                .ok_or_else(|| format!("option '{a}' needs a value"))
        };
        match a.as_str() {
            "--type" => o.algo = val()?.parse().map_err(|e| format!("{e}"))?,
            "--flat" => o.flat = true,
            "--base32" => o.format = HashFormat::Nix32,
            "--sri" => o.format = HashFormat::Sri,
            "--root" => o.root = Some(PathBuf::from(val()?)),
            "--store-dir" => o.store_dir = val()?,
            "--name" => o.name = Some(val()?),
            "--ref" => o.refs.push(val()?),
            _ => o.rest.push(a.clone()),
        }
    }
    Ok(o)
}

fn open(o: &Opts) -> Result<LocalStore, String> {
    let root = o.root.clone().ok_or("--root is required")?;
    let sd = StoreDir::new(o.store_dir.clone()).map_err(|e| e.to_string())?;
    LocalStore::open(sd, root).map_err(|e| e.to_string())
}

fn one(o: &Opts) -> Result<&str, String> {
    match o.rest.as_slice() {
        [p] => Ok(p),
        _ => Err(USAGE.to_string()),
    }
}

fn run(args: &[String]) -> Result<(), String> {
    let (cmd, rest) = args.split_first().ok_or(USAGE)?;
    let o = parse(rest)?;
    let mut out = io::stdout().lock();
    let w =
        |out: &mut io::StdoutLock<'_>, s: String| writeln!(out, "{s}").map_err(|e| e.to_string());
    match cmd.as_str() {
        "hash-path" => {
            let h =
                nar::hash_path(Path::new(one(&o)?), !o.flat, o.algo).map_err(|e| e.to_string())?;
            w(&mut out, h.render(o.format, o.format == HashFormat::Sri))
        }
        "dump" => {
            let mut buf = io::BufWriter::with_capacity(1 << 16, out);
            nar::dump_path_to(Path::new(one(&o)?), &mut buf).map_err(|e| e.to_string())?;
            buf.flush().map_err(|e| e.to_string())
        }
        "add" => {
            let store = open(&o)?;
            let src = PathBuf::from(one(&o)?);
            let name = match &o.name {
                Some(n) => n.clone(),
                None => src
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .ok_or("cannot derive a name")?,
            };
            let method = if o.flat {
                FileIngestionMethod::Flat
            } else {
                FileIngestionMethod::Recursive
            };
            let added = store
                .add_path(&src, &name, method, o.algo, None)
                .map_err(|e| e.to_string())?;
            w(&mut out, store.store_dir().print(&added.path))
        }
        "import-twice" => {
            let mut store = open(&o)?;
            let cache =
                std::sync::Arc::new(flaked_store::import_cache::MetadataImportCache::default());
            store.set_import_cache(cache.clone());
            let src = PathBuf::from(one(&o)?);
            let mut times = Vec::new();
            for _ in 0..2 {
                let t = std::time::Instant::now();
                let added = store
                    .add_path(
                        &src,
                        "source",
                        FileIngestionMethod::Recursive,
                        HashAlgo::Sha256,
                        None,
                    )
                    .map_err(|e| e.to_string())?;
                times.push((t.elapsed(), added.path));
            }
            w(
                &mut out,
                format!(
                    "{} cold {:?}, cached {:?} (cache hits: {})",
                    store.store_dir().print(&times[1].1),
                    times[0].0,
                    times[1].0,
                    cache.hits()
                ),
            )
        }
        "add-text" => {
            let store = open(&o)?;
            let [name, file] = o.rest.as_slice() else {
                return Err(USAGE.to_string());
            };
            let contents = std::fs::read(file).map_err(|e| format!("reading '{file}': {e}"))?;
            let refs = o
                .refs
                .iter()
                .map(|r| store.store_dir().parse(r).map_err(|e| e.to_string()))
                .collect::<Result<BTreeSet<_>, _>>()?;
            let p = store
                .add_text(name, &contents, &refs)
                .map_err(|e| e.to_string())?;
            w(&mut out, store.store_dir().print(&p))
        }
        "path-info" => {
            let store = open(&o)?;
            let p = store
                .store_dir()
                .parse(one(&o)?)
                .map_err(|e| e.to_string())?;
            let info = store
                .query_path_info(&p)
                .map_err(|e| e.to_string())?
                .ok_or("path is not valid")?;
            let refs: Vec<String> = info
                .references
                .iter()
                .map(|r| store.store_dir().print(r))
                .collect();
            w(
                &mut out,
                format!(
                    "{} {} {} [{}]",
                    store.store_dir().print(&p),
                    info.nar_hash.to_sri(),
                    info.nar_size,
                    refs.join(",")
                ),
            )
        }
        _ => Err(USAGE.to_string()),
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let _ = writeln!(io::stderr(), "error: {e}");
            ExitCode::FAILURE
        }
    }
}

//! Links the `flakectl` binary statically (and not position-independent) when the C toolchain can,
//! and leaves it dynamically linked otherwise.
//!
//! Why: a warm `flakectl eval` is a few milliseconds end to end, and the dynamic loader's work
//! (mapping and relocating libc and libgcc_s, resolving symbols) was about a tenth of it. Rust's own
//! switch for this, `-C target-feature=+crt-static`, can only be given to every crate of a build
//! (RUSTFLAGS, .cargo/config.toml), and the daemon must stay dynamic (glibc's NSS and `dlopen` need
//! the shared libc). So this script gives only the binary's link `-static -no-pie`, and a directory of
//! linker scripts named like the shared libraries rustc asks for (`libc.so`, `libgcc_s.so`, …) that
//! stand for the static archives the C compiler driver has (`libc.a`, `libgcc_eh.a`, `libgcc.a`, …),
//! i.e. the libraries that `crt-static` links. Not a static PIE: relocating itself at every start
//! (touching every page of pointers) cost a static PIE a quarter of its start-up; a client that runs
//! for milliseconds gives up ASLR of its own image (its heap, stack and mappings stay randomized).
//!
//! Invariant: it changes nothing unless every file it needs was found (a glibc Linux target built on
//! the same machine type, the driver knowing `crt1.o`, `libc.a`, `libgcc.a` and `libgcc_eh.a`), so a
//! machine without static glibc (e.g. no glibc-static package) still builds a working, dynamically
//! linked flakectl. `FLAKECTL_LINK=dynamic` opts out. Test binaries are never affected (`-bins` only).

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=FLAKECTL_LINK");
    println!("cargo:rerun-if-env-changed=RUSTC_LINKER");
    match static_link_args() {
        Ok(args) => {
            for arg in args {
                println!("cargo:rustc-link-arg-bins={arg}");
            }
        }
        Err(Skip::OptedOut) => {}
        Err(Skip::Cannot(why)) => {
            println!("cargo:warning=flakectl is linked dynamically: {why}")
        }
    }
}

/// Why the binary stays dynamically linked.
enum Skip {
    /// `FLAKECTL_LINK=dynamic`.
    OptedOut,
    /// Something needed is missing (said in a build warning).
    Cannot(String),
}

impl From<String> for Skip {
    fn from(why: String) -> Skip {
        Skip::Cannot(why)
    }
}

/// The link arguments for a static executable, or why none are given.
fn static_link_args() -> Result<Vec<String>, Skip> {
    let var = |name: &str| std::env::var(name).unwrap_or_default();
    if var("FLAKECTL_LINK") == "dynamic" {
        return Err(Skip::OptedOut);
    }
    if var("CARGO_CFG_TARGET_OS") != "linux" || var("CARGO_CFG_TARGET_ENV") != "gnu" {
        return Err(Skip::Cannot("not a glibc Linux target".into()));
    }
    if var("TARGET") != var("HOST") {
        return Err(Skip::Cannot("cross-compiling".into()));
    }
    if var("CARGO_CFG_TARGET_FEATURE")
        .split(',')
        .any(|f| f == "crt-static")
    {
        return Err(Skip::Cannot("crt-static is already on".into()));
    }
    let driver = std::env::var("RUSTC_LINKER").unwrap_or_else(|_| "cc".into());
    let find = |file: &str| -> Option<PathBuf> {
        let out = Command::new(&driver)
            .arg(format!("-print-file-name={file}"))
            .output()
            .ok()?;
        let path = PathBuf::from(String::from_utf8(out.stdout).ok()?.trim());
        (out.status.success() && path.is_absolute() && path.is_file()).then_some(path)
    };
    let need = |file: &str| find(file).ok_or_else(|| format!("'{driver}' has no {file}"));
    need("crt1.o")?;
    let libc = need("libc.a")?;
    let gcc_eh = need("libgcc_eh.a")?;
    let gcc = need("libgcc.a")?;

    let out_dir = PathBuf::from(std::env::var("OUT_DIR").map_err(|_| "no OUT_DIR".to_string())?);
    let dir = out_dir.join("static-link");
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let group = |paths: &[&Path]| {
        let list: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
        format!("GROUP ( {} )\n", list.join(" "))
    };
    let mut scripts = vec![
        ("libc.so".to_string(), group(&[&libc, &gcc_eh, &gcc])),
        ("libgcc_s.so".to_string(), group(&[&gcc_eh, &gcc])),
    ];
    // Since glibc 2.34 these are empty archives (their functions are in libc); older ones have content.
    for name in ["util", "rt", "pthread", "m", "dl"] {
        let archive = find(&format!("lib{name}.a"));
        let script = match &archive {
            Some(a) => group(&[a, &libc, &gcc_eh, &gcc]),
            None => group(&[&libc, &gcc_eh, &gcc]),
        };
        scripts.push((format!("lib{name}.so"), script));
    }
    for (name, text) in &scripts {
        let path = dir.join(name);
        std::fs::write(&path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    // `-L` applies to every `-l` of the link wherever it stands, and comes before the driver's own
    // library directories: rustc's `-lc`, `-lgcc_s`, … find the scripts above.
    Ok(vec![
        "-no-pie".into(),
        "-static".into(),
        format!("-L{}", dir.display()),
    ])
}

//! `feval`: a developer tool mirroring `nix eval` on top of `flaked_eval::api`, for
//! differential testing against the reference (`feval --expr E [--json|--raw] [--impure]`,
//! `feval --file F [ATTR]`). `--instantiate` prints as `nix-instantiate --eval --strict`;
//! `--instantiate --json [--strict]` as `nix-instantiate --eval --json [--strict]` (paths
//! copied to the store, lazy unless `--strict`). Exit code 1 and Nix's error text on stderr
//! on failure. One-shot: the process exits without tearing the evaluation's memory down.

use std::io::Write;

use flaked_eval::api::{EvalRequest, EvalSettings, EvalSource, OutputFormat, evaluate_and_exit};

/// The evaluator allocates many small short-lived objects (thunks, frames, attribute vectors);
/// mimalloc serves and frees them markedly faster than the system allocator. With
/// `FEVAL_SYSTEM_ALLOC` set in the environment, the system allocator (malloc) serves instead,
/// so that valgrind's dhat/massif can see and attribute every allocation.
#[global_allocator]
static GLOBAL: Alloc = Alloc;

struct Alloc;

/// 0: not decided yet, 1: mimalloc, 2: the system allocator. Decided by the process's first
/// allocation (on the main thread, before any other thread exists) and never changed, so every
/// block is freed by the allocator that made it.
static MODE: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(0);

#[inline]
fn system_alloc() -> bool {
    use std::sync::atomic::Ordering::Relaxed;
    match MODE.load(Relaxed) {
        1 => false,
        2 => true,
        _ => {
            // SAFETY: getenv with a NUL-terminated name; it allocates nothing.
            let sys = unsafe { !libc::getenv(c"FEVAL_SYSTEM_ALLOC".as_ptr()).is_null() };
            MODE.store(if sys { 2 } else { 1 }, Relaxed);
            sys
        }
    }
}

// SAFETY: forwards to one of two allocators, always the same one for the process (MODE).
unsafe impl std::alloc::GlobalAlloc for Alloc {
    #[inline]
    unsafe fn alloc(&self, l: std::alloc::Layout) -> *mut u8 {
        // SAFETY: forwarded as is.
        unsafe {
            if system_alloc() {
                std::alloc::System.alloc(l)
            } else {
                flaked_eval::alloc::MiMalloc.alloc(l)
            }
        }
    }
    #[inline]
    unsafe fn alloc_zeroed(&self, l: std::alloc::Layout) -> *mut u8 {
        // SAFETY: forwarded as is.
        unsafe {
            if system_alloc() {
                std::alloc::System.alloc_zeroed(l)
            } else {
                flaked_eval::alloc::MiMalloc.alloc_zeroed(l)
            }
        }
    }
    #[inline]
    unsafe fn dealloc(&self, p: *mut u8, l: std::alloc::Layout) {
        // SAFETY: forwarded to the allocator that made the block.
        unsafe {
            if system_alloc() {
                std::alloc::System.dealloc(p, l)
            } else {
                flaked_eval::alloc::MiMalloc.dealloc(p, l)
            }
        }
    }
    #[inline]
    unsafe fn realloc(&self, p: *mut u8, l: std::alloc::Layout, n: usize) -> *mut u8 {
        // SAFETY: forwarded to the allocator that made the block.
        unsafe {
            if system_alloc() {
                std::alloc::System.realloc(p, l, n)
            } else {
                flaked_eval::alloc::MiMalloc.realloc(p, l, n)
            }
        }
    }
}

fn main() {
    let mut source = None;
    let (mut json, mut raw, mut instantiate, mut strict) = (false, false, false, false);
    let mut pure = None;
    let mut attr = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--expr" => source = args.next().map(EvalSource::Expr),
            "--file" => source = args.next().map(|f| EvalSource::File(f.into())),
            "--json" => json = true,
            "--raw" => raw = true,
            "--instantiate" => instantiate = true,
            "--strict" => strict = true,
            "--impure" => pure = Some(false),
            other => attr = Some(other.to_string()),
        }
    }
    let output = match (instantiate, json, raw) {
        (true, true, _) => OutputFormat::InstantiateJson { strict },
        (true, false, _) => OutputFormat::Instantiate,
        (false, true, _) => OutputFormat::Json,
        (false, false, true) => OutputFormat::Raw,
        (false, false, false) => OutputFormat::Nix,
    };
    let Some(source) = source else {
        let _ = writeln!(
            std::io::stderr(),
            "usage: feval (--expr E | --file F) [--json|--raw] [--instantiate [--strict]] [--impure] [ATTR]"
        );
        std::process::exit(2);
    };
    let pure = pure.unwrap_or(matches!(source, EvalSource::Expr(_)));
    let settings = EvalSettings {
        pure,
        cwd: std::env::current_dir().unwrap_or_else(|_| "/".into()),
        env: std::env::vars().collect(),
        nix_path: std::env::var("NIX_PATH")
            .map(|p| {
                p.split(':')
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default(),
        ..EvalSettings::default()
    };
    let req = EvalRequest {
        source,
        attr_path: attr,
        output,
        settings,
    };
    // One-shot: the process ends right after printing, without tearing the evaluation down.
    evaluate_and_exit(&req, |answer| {
        let code = match answer {
            Ok(out) => {
                let mut err = std::io::stderr().lock();
                for l in &out.stderr {
                    let _ = writeln!(err, "{l}");
                }
                let _ = std::io::stdout().lock().write_all(&out.stdout);
                0
            }
            Err(d) => {
                let mut err = std::io::stderr().lock();
                for l in &d.log {
                    let _ = writeln!(err, "{l}");
                }
                let _ = err.write_all(d.rendered.as_bytes());
                1
            }
        };
        let _ = std::io::stdout().flush();
        let _ = std::io::stderr().flush();
        code
    })
}

//! Building one derivation whose inputs are valid: Nix's `LocalDerivationGoal` from
//! `startBuilder` to `registerOutputs`.
//!
//! Steps: check platform and features; compute the input closure; lock the output paths;
//! create the build directory and environment; start the builder (sandboxed unless
//! configured otherwise); relay its log while enforcing `timeout`, `max-silent-time` and
//! cancellation; then canonicalise, scan and hash the outputs, verify fixed-output hashes,
//! move the outputs into the store, sync once, and register all of them in one transaction.
//!
//! Invariant: nothing is registered unless every output passed every check; stale
//! unregistered entries at an output's final location are deleted (under the output's lock)
//! before being replaced; the build directory and sandbox root are removed on every path
//! out of this module (the build directory is kept on failure with `keep_failed`).

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::derivation::{Derivation, DerivationOutput};
use crate::hash::HashFormat;
use crate::local::{LocalStore, PathInfo};
use crate::nar;
use crate::store_path::{ContentAddress, StorePath};

use super::env::{self, EnvContext, ParsedAttrs};
use super::outputs::{self, FixedSpec};
use super::sandbox::{self, Bind, SandboxSpec, Spec};
use super::{BuildError, BuildSettings, SandboxMode};

static BUILD_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Parse `sandbox-paths` entries (`PATH`, `TARGET=SOURCE`, optional trailing `?`).
pub fn parse_sandbox_paths(entries: &[String]) -> Vec<Bind> {
    let mut out = Vec::new();
    for e in entries {
        let mut e = e.as_str();
        if e.is_empty() {
            continue;
        }
        let optional = e.ends_with('?');
        if optional {
            e = &e[..e.len() - 1];
        }
        let (target, source) = match e.split_once('=') {
            Some((t, s)) => (t, s),
            None => (e, e),
        };
        out.push(Bind {
            source: PathBuf::from(source),
            target: target.to_owned(),
            read_only: true,
            optional,
        });
    }
    out
}

/// Removes a directory tree when dropped (unless disarmed).
struct AutoDelete {
    path: Option<PathBuf>,
}

impl AutoDelete {
    fn new(path: PathBuf) -> Self {
        AutoDelete { path: Some(path) }
    }
    fn keep(&mut self) -> Option<PathBuf> {
        self.path.take()
    }
}

impl Drop for AutoDelete {
    fn drop(&mut self) {
        if let Some(p) = &self.path
            && let Err(e) = nar::remove_tree_force(p)
        {
            tracing::warn!(path = %p.display(), error = %e, "cannot remove build directory");
        }
    }
}

/// Sandbox roots kept for reuse, by store and root variant. Creating a root's ~40 mount
/// points, files and links for every build (and deleting them after) dominated the cost of
/// small builds (ext4 inode allocation), so a finished build's root goes back here once its
/// store directory is emptied. Roots are named `.flaked-add-<pid>-sandbox-<n>` in the store
/// directory, so `LocalStore::open` removes those of a crashed process.
fn root_cache() -> &'static std::sync::Mutex<BTreeMap<String, Vec<PathBuf>>> {
    static CACHE: std::sync::OnceLock<std::sync::Mutex<BTreeMap<String, Vec<PathBuf>>>> =
        std::sync::OnceLock::new();
    CACHE.get_or_init(Default::default)
}

fn take_root(store: &LocalStore, key: &str) -> PathBuf {
    let cached = root_cache()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get_mut(key)
        .and_then(Vec::pop);
    cached.unwrap_or_else(|| {
        let n = BUILD_COUNTER.fetch_add(1, Ordering::Relaxed);
        store
            .real_store_dir()
            .join(format!(".flaked-add-{}-sandbox-{n}", std::process::id()))
    })
}

/// Empty the root's store directory (mount points of inputs, anything the builder left) and
/// make the root available again; a root that cannot be cleaned is deleted.
fn return_root(store: &LocalStore, key: String, root: PathBuf) {
    let inner_store = root.join(store.store_dir().as_str().trim_start_matches('/'));
    let clean = match fs::read_dir(&inner_store) {
        Ok(rd) => rd
            .flatten()
            .all(|e| nar::remove_tree_force(&e.path()).is_ok()),
        Err(e) => e.kind() == io::ErrorKind::NotFound,
    };
    if clean {
        root_cache()
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(key)
            .or_default()
            .push(root);
    } else {
        drop(AutoDelete::new(root));
    }
}

/// The printed `DerivedPath::Built` form Nix uses in goal names: `drv^out1,out2`.
fn goal_name(store: &LocalStore, drv_path: &StorePath, drv: &Derivation) -> String {
    let outs: Vec<&str> = drv.outputs.keys().map(String::as_str).collect();
    format!(
        "building of '{}^{}' from .drv file",
        store.store_dir().print(drv_path),
        outs.join(",")
    )
}

/// Check `system` and `requiredSystemFeatures` like Nix's `canBuildLocally`.
pub fn check_platform(
    store: &LocalStore,
    settings: &BuildSettings,
    drv_path: &StorePath,
    drv: &Derivation,
    attrs: &ParsedAttrs<'_>,
) -> Result<(), BuildError> {
    let required = attrs.required_system_features()?;
    let builtin = drv.builder.starts_with("builtin:");
    let platform_ok = drv.platform == settings.system
        || settings.extra_platforms.contains(&drv.platform)
        || builtin;
    let features_ok = required
        .iter()
        .all(|f| settings.system_features.contains(f));
    if platform_ok && features_ok {
        return Ok(());
    }
    Err(BuildError::WrongSystem {
        platform: drv.platform.clone(),
        required: required.join(", "),
        drv: store.store_dir().print(drv_path),
        system: settings.system.clone(),
        features: settings
            .system_features
            .iter()
            .cloned()
            .collect::<Vec<_>>()
            .join(", "),
    })
}

/// The statically known output paths of a derivation.
pub fn output_paths(
    store: &LocalStore,
    drv_path: &StorePath,
    drv: &Derivation,
) -> Result<BTreeMap<String, StorePath>, BuildError> {
    let mut out = BTreeMap::new();
    for name in drv.outputs.keys() {
        match drv
            .output_path(store.store_dir(), name)
            .map_err(|e| BuildError::Rejected(e.to_string()))?
        {
            Some(p) => {
                out.insert(name.clone(), p);
            }
            None => {
                return Err(BuildError::Rejected(format!(
                    "cannot build '{}': output '{name}' is content-addressed or impure ('ca-derivations'/'impure-derivations' are not supported)",
                    store.store_dir().print(drv_path)
                )));
            }
        }
    }
    Ok(out)
}

/// Paths the build may see: the closure of the input sources and the used outputs of the
/// input derivations (which must be valid).
pub fn input_closure(
    store: &LocalStore,
    drv_path: &StorePath,
    drv: &Derivation,
) -> Result<BTreeSet<StorePath>, BuildError> {
    let mut roots: BTreeSet<StorePath> = drv.input_srcs.clone();
    for (input, wanted) in &drv.input_drvs {
        let input_drv = store.read_derivation(input)?;
        for o in wanted {
            let p = input_drv
                .output_path(store.store_dir(), o)
                .map_err(|e| BuildError::Rejected(e.to_string()))?
                .ok_or_else(|| {
                    BuildError::Rejected(format!(
                        "output '{o}' of '{}' has no statically known path",
                        store.store_dir().print(input)
                    ))
                })?;
            if !store.is_valid_path(&p)? {
                return Err(BuildError::Rejected(format!(
                    "some dependencies of '{}' are missing: '{}'",
                    store.store_dir().print(drv_path),
                    store.store_dir().print(&p)
                )));
            }
            roots.insert(p);
        }
    }
    Ok(store.closure(&roots)?)
}

/// Nix's `exportReferences`: the closure of `paths` (which must be inputs), plus the output
/// closures of the derivations in it.
fn export_references(
    store: &LocalStore,
    paths: &BTreeSet<StorePath>,
    inputs: &BTreeSet<StorePath>,
) -> Result<BTreeSet<StorePath>, BuildError> {
    for p in paths {
        if !inputs.contains(p) {
            return Err(BuildError::Rejected(format!(
                "cannot export references of path '{}' because it is not in the input closure of the derivation",
                store.store_dir().print(p)
            )));
        }
    }
    let mut out = store.closure(paths)?;
    for q in out.clone() {
        if q.is_derivation() {
            let d = store.read_derivation(&q)?;
            let outs = output_paths(store, &q, &d)?;
            out.extend(store.closure(&outs.into_values().collect())?);
        }
    }
    Ok(out)
}

/// Structured attributes: each `exportReferencesGraph.<name>` (store paths) becomes a
/// top-level `<name>` list of path infos, as Nix's `pathInfoToJSON`.
fn export_references_json(
    store: &LocalStore,
    structured: &mut serde_json::Map<String, serde_json::Value>,
    inputs: &BTreeSet<StorePath>,
) -> Result<(), BuildError> {
    use serde_json::{Value, json};
    let Some(Value::Object(graph)) = structured.get("exportReferencesGraph").cloned() else {
        return Ok(());
    };
    let sd = store.store_dir();
    for (key, value) in graph {
        let items: Vec<Value> = match value {
            Value::Array(a) => a,
            other => vec![other],
        };
        let mut roots = BTreeSet::new();
        for item in items {
            let s = item.as_str().ok_or_else(|| {
                BuildError::Rejected(format!(
                    "'exportReferencesGraph.{key}' must contain store paths"
                ))
            })?;
            let (p, _) = sd
                .parse_prefix(s)
                .map_err(|e| BuildError::Rejected(e.to_string()))?;
            roots.insert(p);
        }
        let mut list = Vec::new();
        for p in export_references(store, &roots, inputs)? {
            let info = store.query_path_info(&p)?.ok_or_else(|| {
                BuildError::Store(format!("path '{}' is not valid", sd.print(&p)))
            })?;
            let closure_size: u64 = store
                .closure(&BTreeSet::from([p.clone()]))?
                .iter()
                .map(|q| {
                    store
                        .query_path_info(q)
                        .map(|i| i.map_or(0, |i| i.nar_size))
                })
                .sum::<Result<u64, _>>()?;
            let mut o = json!({
                "narHash": info.nar_hash.render(HashFormat::Nix32, true),
                "narSize": info.nar_size,
                "references": info.references.iter().map(|r| sd.print(r)).collect::<Vec<_>>(),
                "path": sd.print(&p),
                "valid": true,
                "closureSize": closure_size,
            });
            if let (Some(ca), Value::Object(m)) = (info.ca, &mut o) {
                m.insert("ca".into(), Value::String(ca));
            }
            list.push(o);
        }
        structured.insert(key, Value::Array(list));
    }
    Ok(())
}

/// Nix's `exportReferencesGraph` for non-structured derivations: files in the build
/// directory listing the closure of the given paths in `--register-validity` format.
fn export_references_graph(
    store: &LocalStore,
    drv: &Derivation,
    inputs: &BTreeSet<StorePath>,
    dir: &Path,
) -> Result<(), BuildError> {
    let Some(s) = drv.env.get("exportReferencesGraph") else {
        return Ok(());
    };
    let toks: Vec<&str> = s.split_whitespace().collect();
    if !toks.len().is_multiple_of(2) {
        return Err(BuildError::Rejected(format!(
            "odd number of tokens in 'exportReferencesGraph': '{s}'"
        )));
    }
    for pair in toks.chunks(2) {
        let (file, path) = (pair[0], pair[1]);
        let mut chars = file.chars();
        let ok = matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
            && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
        if !ok {
            return Err(BuildError::Rejected(format!(
                "invalid file name '{file}' in 'exportReferencesGraph'"
            )));
        }
        let (p, _) = store.store_dir().parse_prefix(path).map_err(|_| {
            BuildError::Rejected(format!(
                "'exportReferencesGraph' contains a non-store path '{path}'"
            ))
        })?;
        let paths = export_references(store, &BTreeSet::from([p]), inputs)?;
        let mut text = String::new();
        for q in &paths {
            let info = store.query_path_info(q)?.ok_or_else(|| {
                BuildError::Store(format!(
                    "path '{}' is not valid",
                    store.store_dir().print(q)
                ))
            })?;
            text.push_str(&store.store_dir().print(q));
            text.push_str("\n\n");
            text.push_str(&format!("{}\n", info.references.len()));
            for r in &info.references {
                text.push_str(&store.store_dir().print(r));
                text.push('\n');
            }
        }
        let f = dir.join(file);
        fs::write(&f, text)
            .map_err(|e| BuildError::Rejected(format!("writing '{}': {e}", f.display())))?;
    }
    Ok(())
}

/// Why the log loop ended early.
enum Stop {
    Timeout(String),
    Cancelled,
}

/// Relay the builder's output line by line until it exits; enforce the time limits.
fn supervise(
    child: &sandbox::Child,
    settings: &BuildSettings,
    goal: &str,
    log: &mut dyn FnMut(&str),
    tail: &mut std::collections::VecDeque<String>,
    should_stop: &dyn Fn() -> bool,
) -> Result<Result<i32, Stop>, BuildError> {
    let fd = child.log.as_raw_fd();
    let mut buf = vec![0u8; 64 * 1024];
    let mut line: Vec<u8> = Vec::new();
    let start = Instant::now();
    let mut last_output = Instant::now();
    let mut status: Option<i32> = None;
    let mut exited_at: Option<Instant> = None;
    let mut stop: Option<Stop> = None;
    let mut emit = |line: &mut Vec<u8>, tail: &mut std::collections::VecDeque<String>| {
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        let s = String::from_utf8_lossy(line).into_owned();
        log(&s);
        if settings.log_lines > 0 {
            if tail.len() == settings.log_lines {
                tail.pop_front();
            }
            tail.push_back(s);
        }
        line.clear();
    };
    loop {
        let mut pfd = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let r = unsafe { libc::poll(&mut pfd, 1, 100) };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                child.kill();
                let _ = child.wait();
                return Err(BuildError::Rejected(format!(
                    "polling the builder's output: {e}"
                )));
            }
        }
        let mut eof = false;
        if r > 0 {
            // SAFETY: reading into our own buffer from the pipe we own.
            let n = unsafe { libc::read(fd, buf.as_mut_ptr() as *mut libc::c_void, buf.len()) };
            if n == 0 {
                eof = true;
            } else if n > 0 {
                last_output = Instant::now();
                for &b in &buf[..n as usize] {
                    if b == b'\n' {
                        emit(&mut line, tail);
                    } else {
                        line.push(b);
                    }
                }
            } else if pfd.revents & (libc::POLLHUP | libc::POLLERR) != 0 {
                eof = true;
            }
        }
        if status.is_none()
            && let Some(s) = child
                .try_wait()
                .map_err(|e| BuildError::Rejected(format!("waiting for the builder: {e}")))?
        {
            status = Some(s);
            exited_at = Some(Instant::now());
            // Unsandboxed: take down whatever the builder left behind.
            if child.group {
                // SAFETY: kill the process group we created.
                unsafe { libc::kill(-child.pid, libc::SIGKILL) };
            }
        }
        if eof {
            break;
        }
        // Processes that escaped the group may hold the pipe open; stop waiting for them.
        if let Some(t) = exited_at
            && t.elapsed() > Duration::from_secs(2)
        {
            break;
        }
        if status.is_none() && stop.is_none() {
            let now = Instant::now();
            if let Some(limit) = settings.max_silent_time
                && now.duration_since(last_output) >= limit
            {
                stop = Some(Stop::Timeout(format!(
                    "{goal} timed out after {} seconds of silence",
                    limit.as_secs()
                )));
            } else if let Some(limit) = settings.timeout
                && now.duration_since(start) >= limit
            {
                stop = Some(Stop::Timeout(format!(
                    "{goal} timed out after {} seconds",
                    limit.as_secs()
                )));
            } else if should_stop() {
                stop = Some(Stop::Cancelled);
            }
            if stop.is_some() {
                child.kill();
            }
        }
    }
    if !line.is_empty() {
        emit(&mut line, tail);
    }
    let status = match status {
        Some(s) => s,
        None => child
            .wait()
            .map_err(|e| BuildError::Rejected(format!("waiting for the builder: {e}")))?,
    };
    Ok(match stop {
        Some(s) => Err(s),
        None => Ok(status),
    })
}

/// Build one derivation whose inputs are all valid and register its outputs.
///
/// `log` receives every line the builder prints; `note` the daemon's own messages about the
/// build (`note: keeping build directory '…'`, printed as Nix prints them); `should_stop` is
/// polled (every 100 ms) and cancels the build when it returns true. Returns output name → path.
pub fn build_derivation(
    store: &LocalStore,
    settings: &BuildSettings,
    drv_path: &StorePath,
    drv: &Derivation,
    log: &mut dyn FnMut(&str),
    note: &mut dyn FnMut(String),
    should_stop: &dyn Fn() -> bool,
) -> Result<BTreeMap<String, StorePath>, BuildError> {
    let sd = store.store_dir();
    let drv_printed = sd.print(drv_path);
    let mut attrs = ParsedAttrs::new(drv, &drv_printed)?;
    check_platform(store, settings, drv_path, drv, &attrs)?;
    if drv.builder.starts_with("builtin:") {
        return Err(BuildError::Rejected(format!(
            "builder '{}' of '{drv_printed}' is a built-in builder, which flaked does not implement",
            drv.builder
        )));
    }
    let outputs = output_paths(store, drv_path, drv)?;
    let fixed = matches!(
        drv.drv_type()
            .map_err(|e| BuildError::Rejected(e.to_string()))?,
        crate::derivation::DerivationType::FixedOutput
    );

    // Lock the outputs (sorted, so concurrent builders of overlapping sets cannot deadlock).
    let mut _locks = Vec::new();
    for p in outputs.values().collect::<BTreeSet<_>>() {
        _locks.push(store.lock_path(p)?);
    }
    let mut wanted = BTreeMap::new();
    for (name, p) in &outputs {
        if !store.is_valid_path(p)? {
            wanted.insert(name.clone(), p.clone());
        }
    }
    if wanted.is_empty() {
        return Ok(outputs);
    }

    let inputs = input_closure(store, drv_path, drv)?;

    let logical_is_physical = Path::new(sd.as_str()) == store.real_store_dir();
    let sandboxed = settings.sandbox == SandboxMode::Enabled || !logical_is_physical;

    // Build directory: <build-dir>/nix-build-<name>-<pid>-<n>[/build].
    let n = BUILD_COUNTER.fetch_add(1, Ordering::Relaxed);
    let top = settings.build_dir.join(format!(
        "nix-build-{}-{}-{n}",
        drv_path.name(),
        std::process::id()
    ));
    let _ = nar::remove_tree_force(&top);
    fs::DirBuilder::new()
        .mode(0o700)
        .recursive(true)
        .create(&top)
        .map_err(|e| {
            BuildError::Rejected(format!("creating build directory '{}': {e}", top.display()))
        })?;
    let mut top_guard = AutoDelete::new(top.clone());
    let build_dir_host = if sandboxed {
        let d = top.join("build");
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&d)
            .map_err(|e| BuildError::Rejected(format!("creating '{}': {e}", d.display())))?;
        d
    } else {
        top.clone()
    };
    let build_dir_inner = if sandboxed {
        settings.sandbox_build_dir.clone()
    } else {
        build_dir_host.display().to_string()
    };
    if sandboxed && sd.as_str().starts_with(&build_dir_inner) {
        return Err(BuildError::Rejected(
            "`sandbox-build-dir` must not contain the storeDir".into(),
        ));
    }

    if let Some(structured) = &mut attrs.structured {
        export_references_json(store, structured, &inputs)?;
    }
    let printed_outputs: BTreeMap<String, String> = outputs
        .iter()
        .map(|(k, v)| (k.clone(), sd.print(v)))
        .collect();
    let impure = |name: &str| std::env::var(name).ok();
    let env = env::prepare(
        &attrs,
        &EnvContext {
            store_dir: sd.as_str(),
            cores: settings.cores,
            build_dir_inner: &build_dir_inner,
            build_dir_host: &build_dir_host,
            outputs: &printed_outputs,
            fixed_output: fixed,
            impure_env: &impure,
        },
    )?;
    if attrs.structured.is_none() {
        export_references_graph(store, drv, &inputs, &build_dir_host)?;
    }

    let spec = Spec {
        builder: drv.builder.clone(),
        args: drv.args.clone(),
        env,
        build_dir_host: build_dir_host.clone(),
        build_dir_inner: build_dir_inner.clone(),
    };

    // Where the builder's outputs appear on the host: below a (reused) sandbox root.
    let mut sandbox_root: Option<(String, PathBuf)> = None;
    let child = if sandboxed {
        let mut binds = parse_sandbox_paths(&settings.sandbox_paths);
        for p in &inputs {
            binds.push(Bind {
                source: store.real_path(p),
                target: sd.print(p),
                read_only: true,
                optional: false,
            });
        }
        // An output that is a valid path must not shadow the fresh one.
        let outs: BTreeSet<String> = printed_outputs.values().cloned().collect();
        binds.retain(|b| !outs.contains(&b.target));
        let key = format!(
            "{}|{}|{}|{}",
            store.real_store_dir().display(),
            !fixed,
            build_dir_inner,
            settings.sandbox_paths.join(" ")
        );
        let root = take_root(store, &key);
        sandbox_root = Some((key, root.clone()));
        let spawned = sandbox::spawn_sandboxed(
            &spec,
            &SandboxSpec {
                root,
                store_dir: sd.as_str().to_owned(),
                binds,
                private_network: !fixed,
            },
        );
        match spawned {
            Ok(c) => c,
            Err(e) => {
                if let Some((key, root)) = sandbox_root.take() {
                    return_root(store, key, root);
                }
                return Err(e.into());
            }
        }
    } else {
        for p in wanted.values() {
            let real = store.real_path(p);
            nar::remove_tree_force(&real).map_err(|e| {
                BuildError::Rejected(format!("deleting stale output '{}': {e}", real.display()))
            })?;
        }
        sandbox::spawn_unsandboxed(&spec)?
    };
    // Give the root back on every way out from here.
    struct RootGuard<'a>(&'a LocalStore, Option<(String, PathBuf)>);
    impl Drop for RootGuard<'_> {
        fn drop(&mut self) {
            if let Some((key, root)) = self.1.take() {
                return_root(self.0, key, root);
            }
        }
    }
    let root_dir = sandbox_root.as_ref().map(|(_, r)| r.clone());
    let _root_guard = RootGuard(store, sandbox_root);

    tracing::debug!(drv = %drv_printed, pid = child.pid, sandboxed, "builder started");
    let goal = goal_name(store, drv_path, drv);
    let mut tail = std::collections::VecDeque::new();
    let outcome = supervise(&child, settings, &goal, log, &mut tail, should_stop);
    let mut fail = |e: BuildError, top_guard: &mut AutoDelete| {
        if settings.keep_failed
            && let Some(top) = top_guard.keep()
        {
            // Readable by the user who asked for it, as Nix leaves it.
            for d in [&top, &build_dir_host] {
                let _ = fs::set_permissions(d, std::os::unix::fs::PermissionsExt::from_mode(0o755));
            }
            tracing::info!(dir = %build_dir_host.display(), "keeping build directory of failed build");
            note(format!(
                "note: keeping build directory '{}'",
                build_dir_host.display()
            ));
        }
        if !sandboxed {
            for p in wanted.values() {
                let _ = nar::remove_tree_force(&store.real_path(p));
            }
        }
        e
    };
    let status = match outcome {
        Err(e) => return Err(fail(e, &mut top_guard)),
        Ok(Err(Stop::Timeout(msg))) => return Err(fail(BuildError::TimedOut(msg), &mut top_guard)),
        Ok(Err(Stop::Cancelled)) => {
            return Err(fail(
                BuildError::Cancelled(drv_printed.clone()),
                &mut top_guard,
            ));
        }
        Ok(Ok(s)) => s,
    };
    if !(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0) {
        return Err(fail(
            BuildError::BuilderFailed {
                drv: drv_printed.clone(),
                status: sandbox::status_to_string(status),
                log_tail: tail.into_iter().collect(),
            },
            &mut top_guard,
        ));
    }

    let actual = |p: &StorePath| -> PathBuf {
        if let Some(root) = &root_dir {
            let mut r = root.clone();
            r.push(sd.as_str().trim_start_matches('/'));
            r.push(p.base_name());
            r
        } else {
            store.real_path(p)
        }
    };
    match register_outputs(
        store, settings, drv_path, drv, &outputs, &wanted, &inputs, fixed, &actual,
    ) {
        Ok(()) => {}
        Err(e) => return Err(fail(e, &mut top_guard)),
    }
    drop(top_guard);
    Ok(outputs)
}

#[allow(clippy::too_many_arguments)]
fn register_outputs(
    store: &LocalStore,
    settings: &BuildSettings,
    drv_path: &StorePath,
    drv: &Derivation,
    outputs: &BTreeMap<String, StorePath>,
    wanted: &BTreeMap<String, StorePath>,
    inputs: &BTreeSet<StorePath>,
    fixed: bool,
    actual: &dyn Fn(&StorePath) -> PathBuf,
) -> Result<(), BuildError> {
    let sd = store.store_dir();
    let drv_printed = sd.print(drv_path);
    let mut candidates: BTreeSet<StorePath> = inputs.clone();
    candidates.extend(outputs.values().cloned());
    let mut infos = Vec::new();
    for (name, path) in wanted {
        let real = actual(path);
        let md = fs::symlink_metadata(&real).map_err(|_| {
            BuildError::Rejected(format!(
                "builder for '{drv_printed}' failed to produce output path for output '{name}' at '{}'",
                real.display()
            ))
        })?;
        use std::os::unix::fs::MetadataExt;
        if !md.file_type().is_symlink() && md.mode() & 0o022 != 0 {
            return Err(BuildError::Rejected(format!(
                "suspicious ownership or permission on '{}' for output '{name}'; rejecting this build output",
                real.display()
            )));
        }
        outputs::canonicalise(&real).map_err(BuildError::Rejected)?;
        let fixed_spec = match drv.outputs.get(name) {
            Some(DerivationOutput::Fixed(ca)) if fixed => Some((
                *ca,
                FixedSpec {
                    method: ca.method,
                    algo: ca.hash.algo(),
                    self_hash_part: path.hash_part().to_owned(),
                },
            )),
            _ => None,
        };
        let scanned = outputs::scan_output(&real, &candidates, fixed_spec.as_ref().map(|f| &f.1))
            .map_err(BuildError::Rejected)?;
        let mut ca = None;
        if let Some((wanted_ca, _)) = &fixed_spec {
            let got = scanned
                .ca_hash
                .expect("scan_output computes the content hash when given a FixedSpec");
            if got != wanted_ca.hash {
                return Err(BuildError::HashMismatch {
                    drv: drv_printed.clone(),
                    specified: wanted_ca.hash.render(HashFormat::Sri, true),
                    got: got.render(HashFormat::Sri, true),
                });
            }
            if !scanned.references.is_empty() {
                let first = scanned
                    .references
                    .iter()
                    .next()
                    .map(|p| sd.print(p))
                    .unwrap_or_default();
                return Err(BuildError::Rejected(format!(
                    "fixed-output derivations must not reference store paths: '{drv_printed}' references {} distinct paths, e.g. '{first}'",
                    scanned.references.len()
                )));
            }
            ca = Some(
                ContentAddress {
                    method: wanted_ca.method,
                    hash: got,
                }
                .render(),
            );
        }
        infos.push((
            name.clone(),
            real,
            PathInfo {
                path: path.clone(),
                nar_hash: scanned.nar_hash,
                nar_size: scanned.nar_size,
                references: scanned.references,
                deriver: Some(drv_path.clone()),
                registration_time: crate::local::now(),
                ultimate: true,
                sigs: Vec::new(),
                ca,
            },
        ));
    }
    check_output_cycles(&drv_printed, outputs, &infos)?;
    // Move into place (sandboxed builds wrote below the sandbox root).
    for (_, real, info) in &infos {
        let dest = store.real_path(&info.path);
        if *real != dest {
            nar::remove_tree_force(&dest).map_err(|e| {
                BuildError::Rejected(format!("deleting stale path '{}': {e}", dest.display()))
            })?;
            move_path(real, &dest)?;
        }
    }
    let moved_back = |infos: &[(String, PathBuf, PathInfo)]| {
        for (_, _, info) in infos {
            let _ = nar::remove_tree_force(&store.real_path(&info.path));
        }
    };
    if settings.fsync_outputs
        && let Err(e) = store.sync_store()
    {
        moved_back(&infos);
        return Err(e.into());
    }
    let batch: Vec<PathInfo> = infos.iter().map(|(_, _, i)| i.clone()).collect();
    if let Err(e) = store.register_valid_paths(&batch) {
        moved_back(&infos);
        return Err(e.into());
    }
    Ok(())
}

/// Rename a canonicalised output into place. Moving a directory to another parent rewrites
/// its `..` entry, which needs write permission on it (Nix's `movePath`): open it up for the
/// rename, then restore mode 0555 and mtime 1.
fn move_path(src: &Path, dest: &Path) -> Result<(), BuildError> {
    use std::os::unix::fs::PermissionsExt;
    let err = |e: io::Error| {
        BuildError::Rejected(format!(
            "moving '{}' to '{}': {e}",
            src.display(),
            dest.display()
        ))
    };
    let is_dir = fs::symlink_metadata(src).map_err(err)?.is_dir();
    if is_dir {
        fs::set_permissions(src, fs::Permissions::from_mode(0o755)).map_err(err)?;
    }
    fs::rename(src, dest).map_err(err)?;
    if is_dir {
        fs::set_permissions(dest, fs::Permissions::from_mode(0o555)).map_err(err)?;
        nar::set_mtime_one(dest).map_err(err)?;
    }
    Ok(())
}

/// Nix refuses outputs that refer to each other in a cycle.
fn check_output_cycles(
    drv_printed: &str,
    outputs: &BTreeMap<String, StorePath>,
    infos: &[(String, PathBuf, PathInfo)],
) -> Result<(), BuildError> {
    let by_path: BTreeMap<&StorePath, &str> =
        outputs.iter().map(|(k, v)| (v, k.as_str())).collect();
    let edges: BTreeMap<&str, Vec<&str>> = infos
        .iter()
        .map(|(name, _, info)| {
            let refs = info
                .references
                .iter()
                .filter(|r| **r != info.path)
                .filter_map(|r| by_path.get(r).copied())
                .collect();
            (name.as_str(), refs)
        })
        .collect();
    // Depth-first search with colours.
    fn visit<'a>(
        n: &'a str,
        parent: &'a str,
        edges: &BTreeMap<&'a str, Vec<&'a str>>,
        state: &mut BTreeMap<&'a str, u8>,
        drv: &str,
    ) -> Result<(), BuildError> {
        match state.get(n) {
            Some(2) => return Ok(()),
            Some(1) => {
                return Err(BuildError::Rejected(format!(
                    "cycle detected in build of '{drv}' in the references of output '{n}' from output '{parent}'"
                )));
            }
            _ => {}
        }
        state.insert(n, 1);
        for m in edges.get(n).into_iter().flatten() {
            visit(m, n, edges, state, drv)?;
        }
        state.insert(n, 2);
        Ok(())
    }
    let mut state = BTreeMap::new();
    for n in edges.keys() {
        visit(n, n, &edges, &mut state, drv_printed)?;
    }
    Ok(())
}

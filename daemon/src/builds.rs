//! `nix build` in the daemon: installables → derivations (through the warm flakes, or one
//! evaluation of a `--file`/`--expr` source) → the shared builder pool
//! (`flaked_store::build::BuildPool`), with Nix's messages, progress and log lines streamed to
//! the client as they happen.
//!
//! Invariants: one pool per daemon, so concurrent clients asking for the same derivation share
//! one build; a client that goes away cancels its request (the pool kills builds nobody else
//! wants); the client creates the result symlinks in its own working directory, the daemon
//! only names them and registers each as an indirect garbage-collector root beforehand (a
//! root whose link never appears is dangling and harmless, a link without a root could be
//! collected); every line a client prints on stderr comes from here in the order Nix prints
//! it (`these N derivations will be built:`, `building '…'...`, errors of failed inputs).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use flaked_eval::api as eval;
use flaked_proto::v1 as pb;
use flaked_store::build::{
    BuildError, BuildEvent, BuildOptions, BuildPlan, BuildPool, BuildSettings, CancelToken,
    DerivedPath, roots,
};
use flaked_store::store_path::{StoreDir, StorePath};
use tokio::sync::mpsc::Sender;
use tonic::Status;

use crate::service::State;

/// Where the daemon keeps its builder pool once the first build created it.
#[derive(Default)]
pub struct PoolSlot(std::sync::OnceLock<Arc<BuildPool>>);

impl std::fmt::Debug for PoolSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0.get() {
            Some(p) => write!(f, "PoolSlot({:?})", p.stats()),
            None => f.write_str("PoolSlot(not started)"),
        }
    }
}

/// The daemon's pool, created on first use on the store the evaluator writes to.
#[allow(clippy::result_large_err)]
fn pool(state: &State, store_dir: &str) -> Result<Arc<BuildPool>, eval::Diagnostic> {
    if let Some(p) = state.builds.0.get() {
        return Ok(p.clone());
    }
    let store = flaked_eval::store_path::open_store(store_dir)
        .map_err(|e| eval::Diagnostic::plain(format!("cannot open the store: {}", e.0.msg)))?;
    let settings = BuildSettings {
        sandbox_paths: state.config.sandbox_paths.clone(),
        max_jobs: state.config.max_jobs,
        build_dir: state.config.cache_dir.join("builds"),
        ..BuildSettings::default()
    };
    if let Err(e) = std::fs::create_dir_all(&settings.build_dir) {
        return Err(eval::Diagnostic::plain(format!(
            "cannot create the build directory '{}': {e}",
            settings.build_dir.display()
        )));
    }
    Ok(state
        .builds
        .0
        .get_or_init(|| Arc::new(BuildPool::new(store, settings)))
        .clone())
}

/// Checks a request's shape before anything runs.
pub fn validate(req: &pb::BuildRequest) -> Result<(), Status> {
    if !req.file.is_empty() && !req.expr.is_empty() {
        return Err(Status::invalid_argument(
            "BuildRequest.file and BuildRequest.expr cannot both be set",
        ));
    }
    if req.installables.is_empty() && req.file.is_empty() && req.expr.is_empty() {
        return Err(Status::invalid_argument(
            "BuildRequest.installables is empty (and neither file nor expr is set)",
        ));
    }
    Ok(())
}

fn event(e: pb::build_event::Event) -> Result<pb::BuildEvent, Status> {
    Ok(pb::BuildEvent { event: Some(e) })
}

/// Sends a line for the client to print on stderr as is.
fn say(tx: &Sender<Result<pb::BuildEvent, Status>>, line: String) {
    let _ = tx.blocking_send(event(pb::build_event::Event::Log(pb::BuildLogLine {
        drv_path: String::new(),
        line,
    })));
}

/// Renders a message as Nix prints an error: `error: ` and the following lines indented under
/// the first one's text.
pub fn render_error(message: &str) -> String {
    let mut out = String::from("error: ");
    for (i, line) in message.trim_end_matches('\n').split('\n').enumerate() {
        if i > 0 {
            out.push_str("\n       ");
        }
        out.push_str(line);
    }
    out.push('\n');
    out
}

fn diagnostic(message: String) -> eval::Diagnostic {
    eval::Diagnostic {
        rendered: render_error(&message),
        message,
        position: None,
        trace: Vec::new(),
        log: Vec::new(),
    }
}

/// One derivation to build for one installable.
#[derive(Debug, Clone)]
struct Target {
    installable: String,
    drv: StorePath,
    /// Wanted outputs; empty = all.
    outputs: BTreeSet<String>,
}

/// Splits `ATTR^out,dev` into the attribute path and the outputs (`^*`: all, empty set).
fn split_outputs(installable: &str) -> (&str, Option<BTreeSet<String>>) {
    match installable.rsplit_once('^') {
        Some((attr, "*")) => (attr, Some(BTreeSet::new())),
        Some((attr, outs)) if !outs.is_empty() => (
            attr,
            Some(outs.split(',').map(str::to_owned).collect::<BTreeSet<_>>()),
        ),
        _ => (installable, None),
    }
}

/// Marks errors raised by the selection code below (they are reported without its trace).
const SENTINEL: &str = "__flaked_build__: ";

/// Nix string literal for `s`.
fn nix_string(s: &str) -> String {
    let mut out = String::from("\"");
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '$' if chars.peek() == Some(&'{') => out.push_str("\\$"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The derivations of `nix build -f FILE ATTR…` / `--expr E ATTR…`, found as Nix's
/// `InstallableAttrPath` does: select along the attribute path (auto-calling functions), then
/// `getDerivations` (a derivation; the derivations among a set's attributes, recursing into
/// sets with `recurseForDerivations`; every element of a list), outputs from `outputSpecified`,
/// `meta.outputsToInstall`, else all of them. Written as one Nix expression over the source so
/// one evaluation answers every installable; its JSON is a list per installable.
fn selection_expr(root: &str, attr_paths: &[String]) -> String {
    let mut out = String::from(
        r#"let
  S = "__flaked_build__: ";
  ac = v: if builtins.isFunction v then v { } else v;
  show = v: let t = builtins.typeOf v; in { int = "an integer"; bool = "a Boolean"; string = "a string"; path = "a path"; null = "null"; set = "a set"; list = "a list"; lambda = "a function"; float = "a float"; }.${t} or t;
  sel = p: n: v0: let v = ac v0; in
    if builtins.match "[0-9]+" n != null then
      (if builtins.isList v then
        (let i = builtins.fromJSON n; in if i < builtins.length v then builtins.elemAt v i
         else throw "${S}list index ${n} in selection path '${p}' is out of range")
       else throw "${S}the expression selected by the selection path '${p}' should be a list but is ${show v}")
    else if builtins.isAttrs v then
      (if v ? ${n} then v.${n} else throw "${S}attribute '${n}' in selection path '${p}' not found")
    else throw "${S}the expression selected by the selection path '${p}' should be a set but is ${show v}";
  isD = v: builtins.isAttrs v && (v.type or null) == "derivation";
  outs = d: if d.outputSpecified or false then [ d.outputName ]
    else if d ? meta && d.meta ? outputsToInstall then d.meta.outputsToInstall
    else d.outputs or [ "out" ];
  one = d: [ { drv = d.drvPath; outputs = outs d; } ];
  ok = n: builtins.match "[A-Za-z_][-A-Za-z0-9_+]*" n != null;
  go = v0: let v = ac v0; in
    if isD v then one v
    else if builtins.isAttrs v then builtins.concatMap (n: let x = v.${n}; in
      if !(ok n) then [ ] else if isD x then one x
      else if builtins.isAttrs x && (x.recurseForDerivations or false) then go x else [ ])
      (builtins.attrNames v)
    else if builtins.isList v then builtins.concatMap (x: if isD x then one x else go x) v
    else throw "${S}expression does not evaluate to a derivation (or a set or list of those)";
  root = "#,
    );
    out.push_str(root);
    out.push_str(";\nin [\n");
    for path in attr_paths {
        let mut e = "root".to_string();
        let p = nix_string(path);
        for attr in eval::parse_attr_path(path) {
            e = format!("(sel {p} {} {e})", nix_string(&attr));
        }
        out.push_str(&format!("  (go {e})\n"));
    }
    out.push_str("]\n");
    out
}

#[derive(serde::Deserialize)]
struct Found {
    drv: String,
    outputs: Vec<String>,
}

/// Resolves `--file`/`--expr` installables with one evaluation.
#[allow(clippy::result_large_err)]
fn resolve_source(
    req: &pb::BuildRequest,
    settings: &eval::EvalSettings,
    store_dir: &StoreDir,
    tx: &Sender<Result<pb::BuildEvent, Status>>,
) -> Result<Vec<Target>, eval::Diagnostic> {
    let root = if !req.file.is_empty() {
        let p = settings.cwd.join(&req.file);
        let p = if p.is_dir() { p.join("default.nix") } else { p };
        format!("import (/. + {})", nix_string(&p.to_string_lossy()))
    } else {
        // Embedded in the selection code: positions of errors in it are shifted by the lines
        // above it (an evaluator entry point for derivations of a source would avoid that).
        format!("(\n{}\n)", req.expr)
    };
    let installables: Vec<String> = if req.installables.is_empty() {
        vec![String::new()]
    } else {
        req.installables.clone()
    };
    let split: Vec<(&str, Option<BTreeSet<String>>)> =
        installables.iter().map(|i| split_outputs(i)).collect();
    let paths: Vec<String> = split.iter().map(|(a, _)| a.to_string()).collect();
    let mut settings = settings.clone();
    // `nix build -f`/`--expr` do not evaluate in pure mode (only flakes do).
    settings.pure = false;
    let out = eval::evaluate(&eval::EvalRequest {
        source: eval::EvalSource::Expr(selection_expr(&root, &paths)),
        attr_path: None,
        output: eval::OutputFormat::Json,
        settings,
    })
    .map_err(|mut d| {
        if let Some(i) = d.message.find(SENTINEL) {
            let mut plain = diagnostic(d.message[i + SENTINEL.len()..].to_string());
            plain.log = std::mem::take(&mut d.log);
            plain
        } else {
            d
        }
    })?;
    for line in out.stderr {
        say(tx, line);
    }
    let found: Vec<Vec<Found>> = serde_json::from_slice(&out.stdout).map_err(|e| {
        eval::Diagnostic::plain(format!(
            "internal error: unexpected answer of the installable selection: {e}"
        ))
    })?;
    let mut targets = Vec::new();
    for ((installable, (_, explicit)), drvs) in installables.iter().zip(split).zip(found) {
        // Grouped by derivation (sorted), outputs merged, as Nix does.
        let mut by_drv: BTreeMap<StorePath, BTreeSet<String>> = BTreeMap::new();
        for f in drvs {
            let drv = store_dir.parse(&f.drv).map_err(|e| {
                eval::Diagnostic::plain(format!("'{}' is not a derivation path: {e}", f.drv))
            })?;
            let outs = by_drv.entry(drv).or_default();
            match &explicit {
                Some(e) => outs.extend(e.iter().cloned()),
                None => {
                    outs.extend(f.outputs);
                    if outs.is_empty() {
                        outs.insert("out".into());
                    }
                }
            }
        }
        for (drv, outputs) in by_drv {
            targets.push(Target {
                installable: installable.clone(),
                drv,
                outputs,
            });
        }
    }
    Ok(targets)
}

/// Resolves flake installables through the warm set.
#[allow(clippy::result_large_err)]
fn resolve_flakes(
    state: &State,
    req: &pb::BuildRequest,
    settings: &eval::EvalSettings,
    store_dir: &StoreDir,
    tx: &Sender<Result<pb::BuildEvent, Status>>,
) -> Result<Vec<Target>, eval::Diagnostic> {
    let mut targets = Vec::new();
    for installable in &req.installables {
        let (base, explicit) = split_outputs(installable);
        let (drv, outputs, stderr) = state.warm.derivation(base, settings)?;
        for line in stderr {
            say(tx, line);
        }
        let path = store_dir.parse(&drv).map_err(|e| {
            eval::Diagnostic::plain(format!("'{drv}' is not a derivation path: {e}"))
        })?;
        targets.push(Target {
            installable: installable.clone(),
            drv: path,
            outputs: explicit.unwrap_or_else(|| outputs.into_iter().collect()),
        });
    }
    Ok(targets)
}

/// The order in which Nix lists derivations that will be built (`printMissing`: the reverse
/// of `topoSortPaths`, i.e. a depth-first post-order over the set sorted by path, inputs
/// visited in sorted order).
pub fn missing_order(plan: &BuildPlan) -> Vec<StorePath> {
    let mut out = Vec::with_capacity(plan.deps.len());
    let mut visited: BTreeSet<&StorePath> = BTreeSet::new();
    for start in plan.deps.keys() {
        if visited.contains(start) {
            continue;
        }
        // Iterative DFS: (node, expanded?).
        let mut stack: Vec<(&StorePath, bool)> = vec![(start, false)];
        while let Some((p, expanded)) = stack.pop() {
            if expanded {
                out.push(p.clone());
                continue;
            }
            if !visited.insert(p) {
                continue;
            }
            stack.push((p, true));
            if let Some(deps) = plan.deps.get(p) {
                // Pushed in reverse so the smallest is visited first.
                for d in deps.iter().rev() {
                    if !visited.contains(d) {
                        stack.push((d, false));
                    }
                }
            }
        }
    }
    out
}

/// Nix's `these N derivations will be built:` lines.
fn will_build_lines(sd: &StoreDir, order: &[StorePath]) -> Vec<String> {
    let mut lines = Vec::new();
    match order.len() {
        0 => return lines,
        1 => lines.push("this derivation will be built:".to_string()),
        n => lines.push(format!("these {n} derivations will be built:")),
    }
    for p in order {
        lines.push(format!("  {}", sd.print(p)));
    }
    lines
}

/// `result`, `result-1`, `result-dev`, `result-1-dev`, … (absolute) for the targets, as
/// `createOutLinks` names them: one index per built path, `-<output>` for outputs but `out`.
fn link_names(
    prefix: &Path,
    built: &[(Target, BTreeMap<String, StorePath>)],
) -> Vec<BTreeMap<String, PathBuf>> {
    built
        .iter()
        .enumerate()
        .map(|(i, (_, outputs))| {
            outputs
                .keys()
                .map(|output| {
                    let mut name = prefix.as_os_str().to_owned();
                    if i > 0 {
                        name.push(format!("-{i}"));
                    }
                    if output != "out" {
                        name.push(format!("-{output}"));
                    }
                    (output.clone(), PathBuf::from(name))
                })
                .collect()
        })
        .collect()
}

/// Builds what `req` asks for; Nix's messages, progress and logs go to `tx` as they happen.
/// Blocking.
#[allow(clippy::result_large_err)]
pub fn run(
    state: &State,
    req: &pb::BuildRequest,
    settings: &eval::EvalSettings,
    tx: &Sender<Result<pb::BuildEvent, Status>>,
) -> Result<pb::BuildResult, eval::Diagnostic> {
    let pool = pool(state, &settings.store_dir)?;
    let store = pool.store().clone();
    let sd = store.store_dir().clone();
    let targets = if req.file.is_empty() && req.expr.is_empty() {
        resolve_flakes(state, req, settings, &sd, tx)?
    } else {
        resolve_source(req, settings, &sd, tx)?
    };
    let derived: Vec<DerivedPath> = targets
        .iter()
        .map(|t| DerivedPath {
            drv: t.drv.clone(),
            outputs: t.outputs.clone(),
        })
        .collect();
    let plan = pool.plan(&derived).map_err(|e| diagnostic(e.to_string()))?;
    let order = missing_order(&plan);
    for line in will_build_lines(&sd, &order) {
        say(tx, line);
    }
    let will_build: Vec<String> = order.iter().map(|p| sd.print(p)).collect();
    if req.dry_run {
        return Ok(pb::BuildResult {
            paths: Vec::new(),
            will_build,
        });
    }

    // Derivations some other derivation of this request waits for: their failures are
    // printed when they happen (Nix logs a failed goal's error at once when it has waiters).
    let awaited: BTreeSet<StorePath> = plan.deps.values().flatten().cloned().collect();
    let print_logs = req.print_build_logs;
    let (etx, erx) = std::sync::mpsc::channel::<BuildEvent>();
    let cancel = CancelToken::new();
    let forward = {
        let tx = tx.clone();
        let cancel = cancel.clone();
        let sd = sd.clone();
        std::thread::Builder::new()
            .name("flaked-build-events".into())
            .spawn(move || {
                for ev in erx {
                    let e = match ev {
                        BuildEvent::Started { drv } => {
                            pb::build_event::Event::Log(pb::BuildLogLine {
                                drv_path: String::new(),
                                line: format!("building '{}'...", sd.print(&drv)),
                            })
                        }
                        BuildEvent::Log { drv, line } => {
                            pb::build_event::Event::Log(pb::BuildLogLine {
                                drv_path: sd.print(&drv),
                                line,
                            })
                        }
                        BuildEvent::Failed { drv, error } if awaited.contains(&drv) => {
                            pb::build_event::Event::Log(pb::BuildLogLine {
                                drv_path: String::new(),
                                line: render_error(&message(error, print_logs))
                                    .trim_end()
                                    .to_string(),
                            })
                        }
                        BuildEvent::Progress {
                            done,
                            running,
                            remaining,
                        } => pb::build_event::Event::Progress(pb::BuildProgress {
                            builds_done: done as u64,
                            builds_running: running as u64,
                            builds_expected: (done + running + remaining) as u64,
                            downloads_done: 0,
                            downloads_expected: 0,
                        }),
                        _ => continue,
                    };
                    if tx.blocking_send(event(e)).is_err() {
                        // The client went away: stop what only it wanted.
                        cancel.cancel();
                    }
                }
            })
            .map_err(|e| eval::Diagnostic::plain(format!("cannot start a thread: {e}")))?
    };
    let opts = BuildOptions {
        keep_going: req.keep_going,
        max_jobs: Some(req.max_jobs as usize).filter(|n| *n > 0),
    };
    let report = pool.build_report(&derived, &opts, etx, cancel);
    let _ = forward.join();
    let report = report.map_err(|e| diagnostic(e.to_string()))?;
    if report.cancelled {
        return Err(diagnostic("the build was cancelled".into()));
    }
    if !report.failed.is_empty() {
        return Err(failure(
            &sd,
            &targets,
            &report,
            req.keep_going,
            print_logs,
            tx,
        ));
    }

    let built: Vec<(Target, BTreeMap<String, StorePath>)> = targets
        .into_iter()
        .map(|t| {
            let outputs = report
                .plan
                .outputs
                .get(&t.drv)
                .map(|m| {
                    m.iter()
                        .filter(|(name, _)| t.outputs.is_empty() || t.outputs.contains(*name))
                        .map(|(n, p)| (n.clone(), p.clone()))
                        .collect()
                })
                .unwrap_or_default();
            (t, outputs)
        })
        .collect();
    let links = if req.no_link {
        vec![BTreeMap::new(); built.len()]
    } else {
        let prefix = if req.out_link.is_empty() {
            "result"
        } else {
            &req.out_link
        };
        let names = link_names(&settings.cwd.join(prefix), &built);
        for (link, target) in names
            .iter()
            .zip(&built)
            .flat_map(|(m, (_, outs))| m.iter().map(move |(o, l)| (l, &outs[o])))
        {
            roots::check_link(&store, link).map_err(|e| diagnostic(e.to_string()))?;
            roots::add_indirect_root(&store, link).map_err(|e| diagnostic(e.to_string()))?;
            tracing::debug!(link = %link.display(), target = %sd.print(target), "result link registered as a GC root");
        }
        names
    };
    Ok(pb::BuildResult {
        paths: built
            .into_iter()
            .zip(links)
            .map(|((t, outputs), links)| pb::BuiltPath {
                installable: t.installable,
                drv_path: sd.print(&t.drv),
                outputs: outputs
                    .iter()
                    .map(|(n, p)| (n.clone(), sd.print(p)))
                    .collect(),
                links: links
                    .into_iter()
                    .map(|(n, l)| (n, l.to_string_lossy().into_owned()))
                    .collect(),
            })
            .collect(),
        will_build,
    })
}

/// A build error's message; with `-L` the log tail is left out (the lines were printed).
fn message(error: BuildError, print_logs: bool) -> String {
    match error {
        BuildError::BuilderFailed { drv, status, .. } if print_logs => BuildError::BuilderFailed {
            drv,
            status,
            log_tail: Vec::new(),
        }
        .to_string(),
        e => e.to_string(),
    }
}

/// The error of a failed request, as `nix build` reports it (`throwBuildErrors`): one failed
/// target's error as is; with several, each one's error on its own line, then `build of '…',
/// … failed` naming them (sorted). Without `--keep-going` the targets that were never
/// finished are named too, without an error of their own.
fn failure(
    sd: &StoreDir,
    targets: &[Target],
    report: &flaked_store::build::BuildReport,
    keep_going: bool,
    print_logs: bool,
    tx: &Sender<Result<pb::BuildEvent, Status>>,
) -> eval::Diagnostic {
    // The failures of targets (in request order), and targets left unbuilt.
    let mut failed: Vec<(String, Option<String>)> = Vec::new();
    let mut seen = BTreeSet::new();
    for t in targets {
        if !seen.insert(&t.drv) {
            continue;
        }
        let name = format!(
            "{}^{}",
            sd.print(&t.drv),
            if t.outputs.is_empty() {
                "*".to_string()
            } else {
                t.outputs.iter().cloned().collect::<Vec<_>>().join(",")
            }
        );
        if let Some(e) = report.failed.get(&t.drv) {
            failed.push((name, Some(message(e.clone(), print_logs))));
        } else if !keep_going
            && report.plan.tops.contains(&t.drv)
            && !report.succeeded.contains(&t.drv)
        {
            failed.push((name, None));
        }
    }
    if failed.is_empty() {
        // A failure below the targets without a target failing (not expected: dependents
        // fail with their inputs); report the root causes.
        let msgs: Vec<String> = report
            .failed
            .values()
            .map(|e| message(e.clone(), print_logs))
            .collect();
        return diagnostic(msgs.join("\n"));
    }
    if failed.len() == 1 {
        let (name, msg) = failed.remove(0);
        return diagnostic(msg.unwrap_or_else(|| format!("build of '{name}' failed")));
    }
    for (_, msg) in &failed {
        if let Some(m) = msg {
            say(tx, render_error(m).trim_end().to_string());
        }
    }
    let names: BTreeSet<String> = failed.into_iter().map(|(n, _)| n).collect();
    diagnostic(format!(
        "build of {} failed",
        names
            .iter()
            .map(|n| format!("'{n}'"))
            .collect::<Vec<_>>()
            .join(", ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_rendered_with_nix_indentation() {
        assert_eq!(
            render_error("builder for 'x' failed with exit code 1;\nlast 1 log lines:\n> a\n"),
            "error: builder for 'x' failed with exit code 1;\n       last 1 log lines:\n       > a\n"
        );
    }

    #[test]
    fn output_specs_split_like_nix() {
        assert_eq!(split_outputs("a.b"), ("a.b", None));
        assert_eq!(split_outputs("a^*"), ("a", Some(BTreeSet::new())));
        assert_eq!(
            split_outputs("a^out,dev"),
            (
                "a",
                Some(BTreeSet::from(["out".to_string(), "dev".to_string()]))
            )
        );
    }

    #[test]
    fn nix_strings_are_escaped() {
        assert_eq!(nix_string("a\"b${c}\\$d"), r#""a\"b\${c}\\$d""#);
    }

    fn sp(s: &str) -> StorePath {
        StorePath::from_base_name(s).expect("valid")
    }

    #[test]
    fn missing_order_is_nix_post_order() {
        // c depends on b depends on a; hashes sort c < b < a.
        let a = sp("plx827l68dzbx5ajhab2kl8b52h2wih5-t-a.drv");
        let b = sp("l37apdy9zf9mg6spbp9b2gsfxpv5643k-t-b.drv");
        let c = sp("3w56sj0fyhn0bmglsrh1wx26pb7szw92-t-c.drv");
        let plan = BuildPlan {
            deps: BTreeMap::from([
                (a.clone(), BTreeSet::new()),
                (b.clone(), BTreeSet::from([a.clone()])),
                (c.clone(), BTreeSet::from([b.clone()])),
            ]),
            ..BuildPlan::default()
        };
        assert_eq!(missing_order(&plan), vec![a, b, c]);
    }
}

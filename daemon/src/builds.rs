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

/// Resolves `--file`/`--expr` installables with one evaluation.
#[allow(clippy::result_large_err)]
fn resolve_source(
    req: &pb::BuildRequest,
    settings: &eval::EvalSettings,
    store_dir: &StoreDir,
    tx: &Sender<Result<pb::BuildEvent, Status>>,
) -> Result<Vec<Target>, eval::Diagnostic> {
    let source = if !req.file.is_empty() {
        eval::EvalSource::File(settings.cwd.join(&req.file))
    } else {
        eval::EvalSource::Expr(req.expr.clone())
    };
    let installables: Vec<String> = if req.installables.is_empty() {
        vec![String::new()]
    } else {
        req.installables.clone()
    };
    let split: Vec<(&str, Option<BTreeSet<String>>)> =
        installables.iter().map(|i| split_outputs(i)).collect();
    let paths: Vec<(String, bool)> = split
        .iter()
        .map(|(a, explicit)| (a.to_string(), explicit.is_some()))
        .collect();
    let mut settings = settings.clone();
    // `nix build -f`/`--expr` do not evaluate in pure mode (only flakes do).
    settings.pure = false;
    let (found, stderr) = eval::installable_derivations(
        &eval::EvalRequest {
            source,
            attr_path: None,
            output: eval::OutputFormat::Json,
            settings,
        },
        &paths,
    )?;
    for line in stderr {
        say(tx, line);
    }
    let mut targets = Vec::new();
    for ((installable, (_, explicit)), drvs) in installables.iter().zip(split).zip(found) {
        // Grouped by derivation (sorted), outputs merged, as Nix does.
        let mut by_drv: BTreeMap<StorePath, BTreeSet<String>> = BTreeMap::new();
        for f in drvs {
            let drv = store_dir.parse(&f.drv_path).map_err(|e| {
                eval::Diagnostic::plain(format!("'{}' is not a derivation path: {e}", f.drv_path))
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
            paths: targets
                .into_iter()
                .map(|t| {
                    let outputs = selected_outputs(&plan.outputs, &t);
                    built_path(&sd, t, &outputs, BTreeMap::new(), None)
                })
                .collect(),
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
                // When each derivation's build started and ended (for `--json`).
                let mut times: BTreeMap<StorePath, (u64, u64)> = BTreeMap::new();
                for ev in erx {
                    let e = match ev {
                        BuildEvent::Started { drv } => {
                            times.insert(drv.clone(), (unix_now(), 0));
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
                        BuildEvent::Note { line, .. } => {
                            pb::build_event::Event::Log(pb::BuildLogLine {
                                drv_path: String::new(),
                                line,
                            })
                        }
                        BuildEvent::Finished { drv, .. } => {
                            if let Some(t) = times.get_mut(&drv) {
                                t.1 = unix_now();
                            }
                            continue;
                        }
                        _ => continue,
                    };
                    if tx.blocking_send(event(e)).is_err() {
                        // The client went away: stop what only it wanted.
                        cancel.cancel();
                    }
                }
                times
            })
            .map_err(|e| eval::Diagnostic::plain(format!("cannot start a thread: {e}")))?
    };
    let opts = BuildOptions {
        keep_going: req.keep_going,
        max_jobs: Some(req.max_jobs as usize).filter(|n| *n > 0),
        keep_failed: req.keep_failed,
    };
    let report = pool.build_report(&derived, &opts, etx, cancel);
    let times = forward.join().unwrap_or_default();
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
            let outputs = selected_outputs(&report.plan.outputs, &t);
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
            .map(|((t, outputs), links)| {
                let time = times.get(&t.drv).copied();
                built_path(&sd, t, &outputs, links, time)
            })
            .collect(),
        will_build,
    })
}

/// The outputs of `t`'s derivation that `t` asks for (all of them when it names none).
fn selected_outputs(
    outputs: &BTreeMap<StorePath, BTreeMap<String, StorePath>>,
    t: &Target,
) -> BTreeMap<String, StorePath> {
    outputs
        .get(&t.drv)
        .map(|m| {
            m.iter()
                .filter(|(name, _)| t.outputs.is_empty() || t.outputs.contains(*name))
                .map(|(n, p)| (n.clone(), p.clone()))
                .collect()
        })
        .unwrap_or_default()
}

/// One installable's answer; `time` is when its derivation was built by this request.
fn built_path(
    sd: &StoreDir,
    t: Target,
    outputs: &BTreeMap<String, StorePath>,
    links: BTreeMap<String, PathBuf>,
    time: Option<(u64, u64)>,
) -> pb::BuiltPath {
    let (start_time, stop_time) = time.unwrap_or_default();
    pb::BuiltPath {
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
        start_time,
        stop_time,
    }
}

/// Seconds since the Unix epoch, as Nix's build results record times.
fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
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

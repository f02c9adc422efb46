//! `nix build` in the daemon: installables → derivations (through the warm flakes) → the shared
//! builder pool (`flaked_store::build::BuildPool`), with progress and log lines streamed to the
//! client as they happen.
//!
//! Invariants: one pool per daemon, so concurrent clients asking for the same derivation share
//! one build; a client that goes away cancels its request (the pool kills builds nobody else
//! wants); result symlinks are the client's business (it owns its working directory).

use std::collections::BTreeSet;
use std::sync::Arc;

use flaked_eval::api as eval;
use flaked_proto::v1 as pb;
use flaked_store::build::{
    BuildEvent, BuildOptions, BuildPool, BuildSettings, CancelToken, DerivedPath,
};
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

fn event(e: pb::build_event::Event) -> Result<pb::BuildEvent, Status> {
    Ok(pb::BuildEvent { event: Some(e) })
}

/// Builds `installables`; progress and logs go to `tx` as they happen. Blocking.
#[allow(clippy::result_large_err)]
pub fn run(
    state: &State,
    installables: &[String],
    settings: &eval::EvalSettings,
    tx: &Sender<Result<pb::BuildEvent, Status>>,
) -> Result<pb::BuildResult, eval::Diagnostic> {
    let pool = pool(state, &settings.store_dir)?;
    let store_dir = pool.store().store_dir().clone();
    let mut wanted = Vec::new();
    for installable in installables {
        let (drv, output, stderr) = state.warm.derivation(installable, settings)?;
        for line in stderr {
            let _ = tx.blocking_send(event(pb::build_event::Event::Log(pb::BuildLogLine {
                drv_path: String::new(),
                line,
            })));
        }
        let path = store_dir.parse(&drv).map_err(|e| {
            eval::Diagnostic::plain(format!("'{drv}' is not a derivation path: {e}"))
        })?;
        wanted.push((installable.clone(), path, output));
    }
    let targets: Vec<DerivedPath> = wanted
        .iter()
        .map(|(_, drv, output)| DerivedPath {
            drv: drv.clone(),
            outputs: BTreeSet::from([output.clone()]),
        })
        .collect();

    let (etx, erx) = std::sync::mpsc::channel::<BuildEvent>();
    let cancel = CancelToken::new();
    let forward = {
        let tx = tx.clone();
        let cancel = cancel.clone();
        let store_dir = store_dir.clone();
        std::thread::Builder::new()
            .name("flaked-build-events".into())
            .spawn(move || {
                for ev in erx {
                    let e = match ev {
                        BuildEvent::Log { drv, line } => {
                            pb::build_event::Event::Log(pb::BuildLogLine {
                                drv_path: store_dir.print(&drv),
                                line,
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
    let result = pool.build(&targets, &BuildOptions::default(), etx, cancel);
    let _ = forward.join();
    let built = result.map_err(|e| eval::Diagnostic::plain(e.to_string()))?;
    Ok(pb::BuildResult {
        paths: wanted
            .into_iter()
            .map(|(installable, drv, output)| {
                let outputs = built
                    .get(&drv)
                    .map(|m| {
                        m.iter()
                            .filter(|(name, _)| **name == output)
                            .map(|(name, p)| (name.clone(), store_dir.print(p)))
                            .collect()
                    })
                    .unwrap_or_default();
                pb::BuiltPath {
                    installable,
                    drv_path: store_dir.print(&drv),
                    outputs,
                }
            })
            .collect(),
    })
}

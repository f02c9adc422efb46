//! The builder pool shared by every client of the daemon.
//!
//! A request names derivations and outputs; the pool walks their input graph (stopping at
//! derivations whose wanted outputs are already valid), and merges it into one table of
//! jobs keyed by derivation path, so a derivation requested by many clients at once is built
//! once and all of them wait on it. `max_jobs` worker threads take jobs whose inputs are
//! built, in dependency order; a failed job fails its dependents ("N dependencies of
//! derivation … failed to build"). Each request carries a [`CancelToken`]; a job is
//! cancelled (its builder killed) once every request interested in it is cancelled or has
//! returned.
//!
//! Invariants: at most one job per derivation path exists at a time; a job only starts once
//! all its inputs succeeded; at most `max_jobs` builders run at once; the state lock is never
//! held while a builder runs.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::derivation::Derivation;
use crate::local::LocalStore;
use crate::store_path::StorePath;

use super::builder::{build_derivation, output_paths};
use super::{BuildError, BuildSettings, CancelToken};

/// A derivation and the outputs wanted from it (empty set: all outputs).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct DerivedPath {
    pub drv: StorePath,
    pub outputs: BTreeSet<String>,
}

/// Per-request options.
#[derive(Debug, Clone, Default)]
pub struct BuildOptions {
    /// Keep building what does not depend on a failure (Nix's `--keep-going`).
    pub keep_going: bool,
    /// At most this many of the request's jobs run at once (the client's `-j N`); the pool's
    /// `max_jobs` bounds it too. `None` (or 0): only the pool's bound.
    pub max_jobs: Option<usize>,
    /// Keep the build directory of a failed build (Nix's `--keep-failed`); the pool's
    /// `keep_failed` setting applies too. A build shared by several requests keeps it when
    /// any of them asks.
    pub keep_failed: bool,
}

/// What a request needs built, before anything runs (`nix build --dry-run`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BuildPlan {
    /// Per target derivation, the wanted output paths (known before building).
    pub outputs: BTreeMap<StorePath, BTreeMap<String, StorePath>>,
    /// The derivations that must be built, every one after its inputs.
    pub order: Vec<StorePath>,
    /// For each derivation of `order`, its inputs that must be built too.
    pub deps: BTreeMap<StorePath, BTreeSet<StorePath>>,
    /// The targets that are not valid yet (a subset of `order`).
    pub tops: BTreeSet<StorePath>,
}

/// How a request ended, job by job (for rendering failures as Nix does).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildReport {
    pub plan: BuildPlan,
    /// The jobs of this request that had failed when it returned.
    pub failed: BTreeMap<StorePath, BuildError>,
    /// The jobs of this request that succeeded.
    pub succeeded: BTreeSet<StorePath>,
    /// The request was cancelled (its token fired) before it finished.
    pub cancelled: bool,
}

impl BuildReport {
    /// The old-style result: the outputs, or the request's failure (root causes first, then
    /// the dependency failures of targets; several with `keep_going`).
    pub fn into_result(
        self,
        sd: &crate::store_path::StoreDir,
        targets: &[DerivedPath],
    ) -> Result<BTreeMap<StorePath, BTreeMap<String, StorePath>>, BuildError> {
        if self.cancelled {
            return Err(BuildError::Cancelled(
                targets
                    .iter()
                    .map(|t| sd.print(&t.drv))
                    .collect::<Vec<_>>()
                    .join("', '"),
            ));
        }
        if self.failed.is_empty() {
            return Ok(self.plan.outputs);
        }
        let mut failures: Vec<(StorePath, BuildError)> = self.failed.into_iter().collect();
        failures.sort_by_key(|(_, e)| matches!(e, BuildError::DependencyFailed { .. }));
        let tops = &self.plan.tops;
        let errs: Vec<BuildError> = failures
            .into_iter()
            .filter(|(p, e)| !matches!(e, BuildError::DependencyFailed { .. }) || tops.contains(p))
            .map(|(_, e)| e)
            .collect();
        Err(if errs.len() == 1 {
            errs.into_iter().next().expect("one error")
        } else {
            BuildError::Multiple(errs)
        })
    }
}

/// Progress of a request, streamed to its requester.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BuildEvent {
    Started {
        drv: StorePath,
    },
    Log {
        drv: StorePath,
        line: String,
    },
    /// A message of the pool's own about a derivation's build, printed as is (e.g. `note:
    /// keeping build directory '…'`).
    Note {
        drv: StorePath,
        line: String,
    },
    Finished {
        drv: StorePath,
        outputs: BTreeMap<String, StorePath>,
    },
    Failed {
        drv: StorePath,
        error: BuildError,
    },
    /// Counts over the derivations this request needs built.
    Progress {
        done: usize,
        running: usize,
        remaining: usize,
    },
}

/// Counters for observability and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PoolStats {
    /// Builder runs (calls into the builder for a derivation with invalid outputs).
    pub builds: u64,
    pub succeeded: u64,
    pub failed: u64,
    pub cancelled: u64,
    /// Builder runs per derivation.
    pub per_drv: BTreeMap<StorePath, u64>,
}

struct Request {
    cancel: CancelToken,
    finished: AtomicBool,
    events: Sender<BuildEvent>,
    /// The request's `-j` bound (0: none).
    max_jobs: usize,
    /// The request's `--keep-failed`.
    keep_failed: bool,
    /// Jobs of this request running now.
    running: AtomicUsize,
}

impl Request {
    /// Whether one more of this request's jobs may start.
    fn has_slot(&self) -> bool {
        self.max_jobs == 0 || self.running.load(Ordering::SeqCst) < self.max_jobs
    }
    fn gone(&self) -> bool {
        self.finished.load(Ordering::SeqCst) || self.cancel.is_cancelled()
    }
    fn send(&self, e: BuildEvent) {
        if !self.gone() {
            let _ = self.events.send(e);
        }
    }
}

type Interest = Arc<Mutex<Vec<Arc<Request>>>>;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[derive(Debug, Clone)]
enum Status {
    Waiting,
    Ready,
    Running,
    Done(Result<BTreeMap<String, StorePath>, BuildError>),
}

struct Job {
    drv: Arc<Derivation>,
    deps_left: usize,
    failed_deps: usize,
    dependents: Vec<StorePath>,
    status: Status,
    interest: Interest,
}

#[derive(Default)]
struct State {
    jobs: HashMap<StorePath, Job>,
    ready: VecDeque<StorePath>,
    shutdown: bool,
    stats: PoolStats,
}

struct Inner {
    store: Arc<LocalStore>,
    settings: BuildSettings,
    state: Mutex<State>,
    /// Signalled on every job state change (workers and requesters wait on it).
    cv: Condvar,
    generation: AtomicU64,
}

/// A pool of `max_jobs` builder threads over one store. `Send + Sync`; share it in an `Arc`.
pub struct BuildPool {
    inner: Arc<Inner>,
    workers: Mutex<Vec<JoinHandle<()>>>,
}

impl BuildPool {
    pub fn new(store: Arc<LocalStore>, settings: BuildSettings) -> BuildPool {
        let inner = Arc::new(Inner {
            store,
            settings,
            state: Mutex::new(State::default()),
            cv: Condvar::new(),
            generation: AtomicU64::new(0),
        });
        let mut workers = Vec::new();
        for i in 0..inner.settings.max_jobs {
            let inner = inner.clone();
            let h = std::thread::Builder::new()
                .name(format!("flaked-builder-{i}"))
                .spawn(move || worker(inner));
            match h {
                Ok(h) => workers.push(h),
                Err(e) => tracing::error!(error = %e, "cannot start builder thread"),
            }
        }
        BuildPool {
            inner,
            workers: Mutex::new(workers),
        }
    }

    pub fn store(&self) -> &Arc<LocalStore> {
        &self.inner.store
    }

    pub fn settings(&self) -> &BuildSettings {
        &self.inner.settings
    }

    pub fn stats(&self) -> PoolStats {
        lock(&self.inner.state).stats.clone()
    }

    /// Build `targets` (blocking) and return, per derivation, the wanted output paths.
    ///
    /// Events about this request's derivations go to `events` (a dropped receiver is fine).
    /// Cancelling `cancel` makes this call return `BuildError::Cancelled` promptly; builds
    /// that no other request wants are then killed.
    pub fn build(
        &self,
        targets: &[DerivedPath],
        opts: &BuildOptions,
        events: Sender<BuildEvent>,
        cancel: CancelToken,
    ) -> Result<BTreeMap<StorePath, BTreeMap<String, StorePath>>, BuildError> {
        self.build_report(targets, opts, events, cancel)?
            .into_result(self.inner.store.store_dir(), targets)
    }

    /// What building `targets` would build, without building anything.
    pub fn plan(&self, targets: &[DerivedPath]) -> Result<BuildPlan, BuildError> {
        Ok(self.plan_with_drvs(targets)?.0)
    }

    /// [`plan`](Self::plan) and the derivations of its `order`.
    #[allow(clippy::type_complexity)]
    fn plan_with_drvs(
        &self,
        targets: &[DerivedPath],
    ) -> Result<(BuildPlan, BTreeMap<StorePath, Arc<Derivation>>), BuildError> {
        let store = &self.inner.store;
        let sd = store.store_dir();
        let mut plan = BuildPlan::default();
        let mut graph: BTreeMap<StorePath, (Arc<Derivation>, BTreeSet<StorePath>)> =
            BTreeMap::new();
        for t in targets {
            let drv = store.read_derivation(&t.drv)?;
            let all = output_paths(store, &t.drv, &drv)?;
            let mut want = BTreeMap::new();
            for (name, p) in &all {
                if t.outputs.is_empty() || t.outputs.contains(name) {
                    want.insert(name.clone(), p.clone());
                }
            }
            for o in &t.outputs {
                if !all.contains_key(o) {
                    return Err(BuildError::Rejected(format!(
                        "derivation '{}' does not have wanted outputs '{o}'",
                        sd.print(&t.drv)
                    )));
                }
            }
            plan.outputs
                .entry(t.drv.clone())
                .or_default()
                .extend(want.clone());
            let mut valid = true;
            for p in want.values() {
                if !store.is_valid_path(p)? {
                    valid = false;
                }
            }
            if !valid {
                plan.tops.insert(t.drv.clone());
                self.walk(&t.drv, drv, &mut graph, &mut plan.order)?;
            }
        }
        let mut drvs = BTreeMap::new();
        for (p, (drv, deps)) in graph {
            plan.deps.insert(p.clone(), deps);
            drvs.insert(p, drv);
        }
        Ok((plan, drvs))
    }

    /// Builds `targets` (blocking) and reports job by job how the request ended. `Err` only
    /// when the request cannot start (an unreadable derivation, a missing output, no
    /// builders); failures of builds are in the report.
    pub fn build_report(
        &self,
        targets: &[DerivedPath],
        opts: &BuildOptions,
        events: Sender<BuildEvent>,
        cancel: CancelToken,
    ) -> Result<BuildReport, BuildError> {
        let (plan, drvs) = self.plan_with_drvs(targets)?;
        let mut report = BuildReport {
            plan,
            failed: BTreeMap::new(),
            succeeded: BTreeSet::new(),
            cancelled: false,
        };
        if report.plan.order.is_empty() {
            return Ok(report);
        }
        if self.inner.settings.max_jobs == 0 {
            return Err(BuildError::Rejected(
                "unable to start any build; either increase '--max-jobs' or enable remote builds"
                    .into(),
            ));
        }
        let order = report.plan.order.clone();
        let tops = report.plan.tops.clone();

        let req = Arc::new(Request {
            cancel,
            finished: AtomicBool::new(false),
            events,
            max_jobs: opts.max_jobs.unwrap_or(0),
            keep_failed: opts.keep_failed,
            running: AtomicUsize::new(0),
        });
        let mine: Vec<StorePath> = order.clone();
        {
            let mut st = lock(&self.inner.state);
            for p in &order {
                let deps = &report.plan.deps[p];
                let drv = &drvs[p];
                let replace = match st.jobs.get(p) {
                    None => true,
                    Some(j) => matches!(j.status, Status::Done(Err(_))),
                };
                if replace {
                    let mut deps_left = 0;
                    for d in deps {
                        let dj = st
                            .jobs
                            .get_mut(d)
                            .expect("inputs are inserted before dependents");
                        match &dj.status {
                            Status::Done(Ok(_)) => {}
                            _ => {
                                deps_left += 1;
                                dj.dependents.push(p.clone());
                            }
                        }
                    }
                    let ready = deps_left == 0;
                    st.jobs.insert(
                        p.clone(),
                        Job {
                            drv: drv.clone(),
                            deps_left,
                            failed_deps: 0,
                            dependents: Vec::new(),
                            status: if ready {
                                Status::Ready
                            } else {
                                Status::Waiting
                            },
                            interest: Arc::new(Mutex::new(Vec::new())),
                        },
                    );
                    if ready {
                        st.ready.push_back(p.clone());
                    }
                }
                let j = st.jobs.get(p).expect("job was just ensured");
                lock(&j.interest).push(req.clone());
            }
            self.inner.bump();
        }

        // Wait for our jobs, reporting progress.
        let mut last_progress = None;
        loop {
            let st = lock(&self.inner.state);
            let (mut done, mut running, mut remaining) = (0, 0, 0);
            let mut any_failed = false;
            let mut tops_done = true;
            for p in &mine {
                match st.jobs.get(p).map(|j| &j.status) {
                    Some(Status::Done(Ok(_))) => done += 1,
                    Some(Status::Done(Err(_))) => {
                        done += 1;
                        any_failed = true;
                    }
                    Some(Status::Running) => {
                        running += 1;
                        if tops.contains(p) {
                            tops_done = false;
                        }
                    }
                    _ => {
                        remaining += 1;
                        if tops.contains(p) {
                            tops_done = false;
                        }
                    }
                }
            }
            let progress = (done, running, remaining);
            if last_progress != Some(progress) {
                last_progress = Some(progress);
                req.send(BuildEvent::Progress {
                    done,
                    running,
                    remaining,
                });
            }
            let stop = req.cancel.is_cancelled() || (any_failed && !opts.keep_going) || tops_done;
            if stop {
                report.cancelled = req.cancel.is_cancelled();
                for p in &mine {
                    match st.jobs.get(p).map(|j| &j.status) {
                        Some(Status::Done(Ok(_))) => {
                            report.succeeded.insert(p.clone());
                        }
                        Some(Status::Done(Err(e))) => {
                            report.failed.insert(p.clone(), e.clone());
                        }
                        _ => {}
                    }
                }
                break;
            }
            let _ = self
                .inner
                .cv
                .wait_timeout(st, Duration::from_millis(100))
                .unwrap_or_else(|e| e.into_inner());
        }

        // Withdraw interest; forget finished jobs nobody waits for.
        req.finished.store(true, Ordering::SeqCst);
        {
            let mut st = lock(&self.inner.state);
            for p in &mine {
                let remove = match st.jobs.get(p) {
                    Some(j) => {
                        let mut i = lock(&j.interest);
                        i.retain(|r| !Arc::ptr_eq(r, &req) && !r.gone());
                        i.is_empty() && matches!(j.status, Status::Done(_))
                    }
                    None => false,
                };
                if remove {
                    st.jobs.remove(p);
                }
            }
            self.inner.bump();
        }
        Ok(report)
    }

    /// Depth-first walk of the derivations needed to build `root`, in post-order.
    fn walk(
        &self,
        root: &StorePath,
        root_drv: Derivation,
        graph: &mut BTreeMap<StorePath, (Arc<Derivation>, BTreeSet<StorePath>)>,
        order: &mut Vec<StorePath>,
    ) -> Result<(), BuildError> {
        let store = &self.inner.store;
        // Explicit stack: (path, derivation, expanded?).
        let mut stack: Vec<(StorePath, Option<Derivation>, bool)> =
            vec![(root.clone(), Some(root_drv), false)];
        let mut seen: BTreeSet<StorePath> = BTreeSet::new();
        let mut loaded: BTreeMap<StorePath, Derivation> = BTreeMap::new();
        while let Some((p, drv, expanded)) = stack.pop() {
            if expanded {
                let drv = loaded.remove(&p).expect("loaded before expansion");
                let mut deps = BTreeSet::new();
                for (input, outs) in &drv.input_drvs {
                    if graph.contains_key(input) || self.needs_build(input, outs)? {
                        deps.insert(input.clone());
                    }
                }
                graph.insert(p.clone(), (Arc::new(drv), deps));
                order.push(p);
                continue;
            }
            if graph.contains_key(&p) || !seen.insert(p.clone()) {
                continue;
            }
            let drv = match drv {
                Some(d) => d,
                None => store.read_derivation(&p)?,
            };
            stack.push((p.clone(), None, true));
            for (input, outs) in &drv.input_drvs {
                if !graph.contains_key(input)
                    && !seen.contains(input)
                    && self.needs_build(input, outs)?
                {
                    stack.push((input.clone(), None, false));
                }
            }
            loaded.insert(p, drv);
        }
        Ok(())
    }

    /// Whether any of `outputs` of `drv` is not valid.
    fn needs_build(&self, drv: &StorePath, outputs: &BTreeSet<String>) -> Result<bool, BuildError> {
        let store = &self.inner.store;
        let d = store.read_derivation(drv)?;
        let paths = output_paths(store, drv, &d)?;
        for o in outputs {
            match paths.get(o) {
                Some(p) => {
                    if !store.is_valid_path(p)? {
                        return Ok(true);
                    }
                }
                None => {
                    return Err(BuildError::Rejected(format!(
                        "derivation '{}' does not have an output named '{o}'",
                        store.store_dir().print(drv)
                    )));
                }
            }
        }
        Ok(false)
    }
}

impl Drop for BuildPool {
    fn drop(&mut self) {
        {
            let mut st = lock(&self.inner.state);
            st.shutdown = true;
        }
        self.inner.cv.notify_all();
        for h in lock(&self.workers).drain(..) {
            let _ = h.join();
        }
    }
}

impl Inner {
    fn bump(&self) {
        self.generation.fetch_add(1, Ordering::Relaxed);
        self.cv.notify_all();
    }
}

fn broadcast(interest: &Interest, e: BuildEvent) {
    for r in lock(interest).iter() {
        r.send(e.clone());
    }
}

/// Record a finished job and release or fail its dependents.
fn finish(
    st: &mut State,
    sd: &crate::store_path::StoreDir,
    p: &StorePath,
    res: Result<BTreeMap<String, StorePath>, BuildError>,
) {
    let mut queue = vec![(p.clone(), res)];
    while let Some((p, res)) = queue.pop() {
        let Some(job) = st.jobs.get_mut(&p) else {
            continue;
        };
        let ok = res.is_ok();
        match &res {
            Ok(outs) => broadcast(
                &job.interest,
                BuildEvent::Finished {
                    drv: p.clone(),
                    outputs: outs.clone(),
                },
            ),
            Err(e) => broadcast(
                &job.interest,
                BuildEvent::Failed {
                    drv: p.clone(),
                    error: e.clone(),
                },
            ),
        }
        job.status = Status::Done(res);
        let dependents = std::mem::take(&mut job.dependents);
        for d in dependents {
            let Some(dj) = st.jobs.get_mut(&d) else {
                continue;
            };
            if !matches!(dj.status, Status::Waiting) {
                continue;
            }
            dj.deps_left = dj.deps_left.saturating_sub(1);
            if !ok {
                dj.failed_deps += 1;
            }
            if dj.deps_left == 0 {
                if dj.failed_deps > 0 {
                    let err = BuildError::DependencyFailed {
                        drv: sd.print(&d),
                        count: dj.failed_deps,
                    };
                    queue.push((d.clone(), Err(err)));
                } else {
                    dj.status = Status::Ready;
                    st.ready.push_back(d.clone());
                }
            }
        }
    }
}

fn worker(inner: Arc<Inner>) {
    loop {
        let (p, drv, interest, counted) = {
            let mut st = lock(&inner.state);
            loop {
                if st.shutdown {
                    return;
                }
                // The first ready job that one of its requests has a `-j` slot for (stale
                // entries and jobs nobody wants are taken too, to be dropped below).
                let pick = st.ready.iter().position(|p| match st.jobs.get(p) {
                    Some(job) if matches!(job.status, Status::Ready) => {
                        let i = lock(&job.interest);
                        let mut live = i.iter().filter(|r| !r.gone()).peekable();
                        live.peek().is_none() || live.any(|r| r.has_slot())
                    }
                    _ => true,
                });
                if let Some(p) = pick.and_then(|i| st.ready.remove(i)) {
                    let Some(job) = st.jobs.get_mut(&p) else {
                        continue;
                    };
                    if !matches!(job.status, Status::Ready) {
                        continue;
                    }
                    let wanted = lock(&job.interest).iter().any(|r| !r.gone());
                    if !wanted {
                        st.stats.cancelled += 1;
                        let msg = inner.store.store_dir().print(&p);
                        finish(
                            &mut st,
                            inner.store.store_dir(),
                            &p,
                            Err(BuildError::Cancelled(msg)),
                        );
                        inner.bump();
                        continue;
                    }
                    job.status = Status::Running;
                    let counted: Vec<Arc<Request>> = lock(&job.interest)
                        .iter()
                        .filter(|r| !r.gone())
                        .cloned()
                        .collect();
                    for r in &counted {
                        r.running.fetch_add(1, Ordering::SeqCst);
                    }
                    let out = (p.clone(), job.drv.clone(), job.interest.clone(), counted);
                    inner.bump();
                    break out;
                }
                st = inner.cv.wait(st).unwrap_or_else(|e| e.into_inner());
            }
        };
        broadcast(&interest, BuildEvent::Started { drv: p.clone() });
        let res = {
            {
                let mut st = lock(&inner.state);
                st.stats.builds += 1;
                *st.stats.per_drv.entry(p.clone()).or_default() += 1;
            }
            let mut log = |line: &str| {
                broadcast(
                    &interest,
                    BuildEvent::Log {
                        drv: p.clone(),
                        line: line.to_owned(),
                    },
                )
            };
            let mut note = |line: String| {
                broadcast(
                    &interest,
                    BuildEvent::Note {
                        drv: p.clone(),
                        line,
                    },
                )
            };
            let stop = || lock(&interest).iter().all(|r| r.gone());
            let keep_failed = lock(&interest).iter().any(|r| r.keep_failed);
            let settings = if keep_failed && !inner.settings.keep_failed {
                std::borrow::Cow::Owned(BuildSettings {
                    keep_failed: true,
                    ..inner.settings.clone()
                })
            } else {
                std::borrow::Cow::Borrowed(&inner.settings)
            };
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                build_derivation(
                    &inner.store,
                    &settings,
                    &p,
                    &drv,
                    &mut log,
                    &mut note,
                    &stop,
                )
            }))
            .unwrap_or_else(|_| {
                Err(BuildError::Rejected(format!(
                    "internal error: the builder of '{}' panicked",
                    inner.store.store_dir().print(&p)
                )))
            })
        };
        let mut st = lock(&inner.state);
        for r in &counted {
            r.running.fetch_sub(1, Ordering::SeqCst);
        }
        match &res {
            Ok(_) => st.stats.succeeded += 1,
            Err(BuildError::Cancelled(_)) => st.stats.cancelled += 1,
            Err(_) => st.stats.failed += 1,
        }
        finish(&mut st, inner.store.store_dir(), &p, res);
        inner.bump();
    }
}

//! The `flaked.v1.Flaked` service: turns requests into calls of the evaluator facade
//! (`flaked_eval::api`) and the facade's answers into replies.
//!
//! Invariants: an answer depends only on the request (its ClientContext) and never on the daemon's own
//! cwd or environment; evaluation runs off the async runtime, at most `eval_workers` at a time, each
//! inside `catch_unwind` so that a panic becomes an INTERNAL status and the daemon stays up; a request
//! whose caller goes away or whose deadline passes has its evaluation interrupted.

use std::collections::BTreeMap;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use flaked_eval::api as eval;
use flaked_proto::v1 as pb;
use tokio::sync::{Semaphore, watch};
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use crate::config::Config;
use crate::warm::WarmSet;

/// Test-only hooks, enabled by environment variables read once at startup (see docs/operations.md).
#[derive(Debug, Clone, Default)]
pub struct TestHooks {
    /// `FLAKED_TEST_EVAL_DELAY_MS`: every evaluation first waits this long (interruptibly).
    pub eval_delay: Option<Duration>,
    /// `FLAKED_TEST_PANIC_EXPR`: evaluating exactly this `--expr` text panics inside the evaluation job.
    pub panic_expr: Option<String>,
    /// `FLAKED_FORBID_EVAL=1`: no flake is ever opened, so every flake answer must come from a
    /// warm flake or the eval cache (tests prove cached answers with it).
    pub forbid_eval: bool,
}

impl TestHooks {
    /// Reads the hooks from the daemon's environment.
    pub fn from_env(env: &BTreeMap<String, String>) -> TestHooks {
        TestHooks {
            eval_delay: env
                .get("FLAKED_TEST_EVAL_DELAY_MS")
                .and_then(|v| v.parse::<u64>().ok())
                .map(Duration::from_millis),
            panic_expr: env
                .get("FLAKED_TEST_PANIC_EXPR")
                .filter(|v| !v.is_empty())
                .cloned(),
            forbid_eval: env.get("FLAKED_FORBID_EVAL").is_some_and(|v| v == "1"),
        }
    }
}

/// Why the daemon is shutting down.
pub type ShutdownReason = Option<&'static str>;

/// The daemon's shared state.
#[derive(Debug)]
pub struct State {
    pub config: Config,
    pub socket_path: PathBuf,
    pub activated: bool,
    pub started: Instant,
    pub hooks: TestHooks,
    in_flight: AtomicU32,
    served: AtomicU64,
    last_activity: Mutex<Instant>,
    evals: Arc<Semaphore>,
    shutdown: watch::Sender<ShutdownReason>,
    /// Flakes kept evaluated between requests.
    pub warm: WarmSet,
    /// The builder pool, created at the first build.
    pub builds: crate::builds::PoolSlot,
}

impl State {
    pub fn new(
        config: Config,
        socket_path: PathBuf,
        activated: bool,
        hooks: TestHooks,
        shutdown: watch::Sender<ShutdownReason>,
    ) -> State {
        let workers = config.eval_workers;
        let disk = crate::evalcache::DiskCache::new(&config.cache_dir);
        let warm = WarmSet::new(config.warm_memory as u64, Some(disk), hooks.forbid_eval);
        State {
            warm,
            builds: crate::builds::PoolSlot::default(),
            config,
            socket_path,
            activated,
            started: Instant::now(),
            hooks,
            in_flight: AtomicU32::new(0),
            served: AtomicU64::new(0),
            last_activity: Mutex::new(Instant::now()),
            evals: Arc::new(Semaphore::new(workers)),
            shutdown,
        }
    }

    /// Requests being answered now.
    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::SeqCst)
    }

    /// Time since the last request began or ended.
    pub fn idle_for(&self) -> Duration {
        self.last_activity
            .lock()
            .map(|t| t.elapsed())
            .unwrap_or_default()
    }

    fn touch(&self) {
        if let Ok(mut t) = self.last_activity.lock() {
            *t = Instant::now();
        }
    }

    /// Begins a shutdown (idempotent: the first reason wins).
    pub fn request_shutdown(&self, reason: &'static str) {
        self.shutdown.send_if_modified(|r| {
            if r.is_none() {
                *r = Some(reason);
                true
            } else {
                false
            }
        });
    }
}

/// Counts a request as in flight for as long as it lives.
struct Active(Arc<State>);

impl Active {
    fn begin(state: &Arc<State>) -> Active {
        state.in_flight.fetch_add(1, Ordering::SeqCst);
        state.touch();
        Active(state.clone())
    }
}

impl Drop for Active {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
        self.0.served.fetch_add(1, Ordering::SeqCst);
        self.0.touch();
    }
}

/// Sets the interrupt flag of an evaluation when the request future is dropped before it finished
/// (the client went away or the deadline passed).
struct InterruptOnDrop(Option<Arc<AtomicBool>>);

impl Drop for InterruptOnDrop {
    fn drop(&mut self) {
        if let Some(flag) = self.0.take() {
            flag.store(true, Ordering::SeqCst);
        }
    }
}

/// The gRPC service.
#[derive(Debug, Clone)]
pub struct FlakedService {
    pub state: Arc<State>,
}

fn unimplemented(what: &str) -> Status {
    Status::unimplemented(format!(
        "{what} is not implemented in this version of flaked yet"
    ))
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl pb::flaked_server::Flaked for FlakedService {
    async fn eval(
        &self,
        request: Request<pb::EvalRequest>,
    ) -> Result<Response<pb::EvalResponse>, Status> {
        let _active = Active::begin(&self.state);
        let req = eval_request(&self.state.config, request.into_inner())?;
        let reply = self.run_eval(req).await?;
        Ok(Response::new(reply))
    }

    async fn lock(
        &self,
        request: Request<pb::LockRequest>,
    ) -> Result<Response<pb::LockResponse>, Status> {
        let _active = Active::begin(&self.state);
        let req = request.into_inner();
        let mut settings = settings(&self.state.config, req.context.as_ref())?;
        let flake_ref = nonempty_ref(req.flake_ref);
        let opts = eval::LockOptions {
            update_inputs: req.update_inputs,
            override_inputs: req
                .overrides
                .into_iter()
                .map(|o| (o.input, o.flake_ref))
                .collect(),
            recreate: req.update_all,
            write: !req.dry_run,
        };
        let interrupt = Arc::new(AtomicBool::new(false));
        settings.interrupt = Some(interrupt.clone());
        let out = self
            .run_blocking(interrupt, move || {
                eval::flake_lock(&flake_ref, &settings, &opts)
            })
            .await?;
        Ok(Response::new(match out {
            Ok(out) => {
                let changed = out.stderr.iter().any(|l| {
                    l.starts_with("warning: creating lock file")
                        || l.starts_with("warning: updating lock file")
                });
                pb::LockResponse {
                    result: Some(pb::lock_response::Result::Locked(pb::LockResult {
                        lock_file: Vec::new(),
                        changed,
                        changes: Vec::new(),
                    })),
                    stderr: out.stderr,
                }
            }
            Err(d) => pb::LockResponse {
                stderr: d.log.clone(),
                result: Some(pb::lock_response::Result::Error(diagnostic(d))),
            },
        }))
    }

    type BuildStream = BoxStream<pb::BuildEvent>;

    async fn build(
        &self,
        request: Request<pb::BuildRequest>,
    ) -> Result<Response<Self::BuildStream>, Status> {
        let active = Active::begin(&self.state);
        let req = request.into_inner();
        crate::builds::validate(&req)?;
        let settings = settings(&self.state.config, req.context.as_ref())?;
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<pb::BuildEvent, Status>>(256);
        let state = self.state.clone();
        tokio::task::spawn_blocking(move || {
            let _active = active;
            let last = match std::panic::catch_unwind(AssertUnwindSafe(|| {
                crate::builds::run(&state, &req, &settings, &tx)
            })) {
                Ok(Ok(result)) => pb::build_event::Event::Result(result),
                Ok(Err(d)) => pb::build_event::Event::Error(diagnostic(d)),
                Err(panic) => {
                    let msg = panic_message(panic.as_ref());
                    tracing::error!(panic = %msg, "build panicked; answered INTERNAL");
                    let _ = tx.blocking_send(Err(Status::internal(format!(
                        "flaked hit an internal error (a bug) while building: {msg}; the daemon is still running"
                    ))));
                    return;
                }
            };
            let _ = tx.blocking_send(Ok(pb::BuildEvent { event: Some(last) }));
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    type SearchStream = BoxStream<pb::SearchMatch>;

    async fn search(
        &self,
        request: Request<pb::SearchRequest>,
    ) -> Result<Response<Self::SearchStream>, Status> {
        let _active = Active::begin(&self.state);
        let req = request.into_inner();
        let settings = settings(&self.state.config, req.context.as_ref())?;
        let installable = nonempty_ref(req.installable);
        let state = self.state.clone();
        let interrupt = Arc::new(AtomicBool::new(false));
        let out = self
            .run_blocking(interrupt, move || {
                crate::search::search(
                    &state.warm,
                    &installable,
                    &settings,
                    &req.regexes,
                    &req.exclude,
                )
            })
            .await?;
        let messages = crate::search::messages(out);
        Ok(Response::new(Box::pin(tokio_stream::iter(messages))))
    }

    async fn flake_show(
        &self,
        request: Request<pb::FlakeShowRequest>,
    ) -> Result<Response<pb::FlakeShowResponse>, Status> {
        let _active = Active::begin(&self.state);
        let req = request.into_inner();
        let mut settings = settings(&self.state.config, req.context.as_ref())?;
        let flake_ref = nonempty_ref(req.flake_ref);
        let options = eval::FlakeShowOptions {
            json: req.json,
            all_systems: req.all_systems,
            legacy: req.legacy,
        };
        let json = req.json;
        let interrupt = Arc::new(AtomicBool::new(false));
        settings.interrupt = Some(interrupt.clone());
        let out = self
            .run_blocking(interrupt, move || {
                eval::flake_show_with(&flake_ref, &settings, &options)
            })
            .await?;
        Ok(Response::new(match out {
            Ok(out) => pb::FlakeShowResponse {
                result: Some(pb::flake_show_response::Result::Shown(if json {
                    pb::FlakeShowResult {
                        text: Vec::new(),
                        json: out.stdout,
                    }
                } else {
                    pb::FlakeShowResult {
                        text: out.stdout,
                        json: Vec::new(),
                    }
                })),
                stderr: out.stderr,
            },
            Err(d) => pb::FlakeShowResponse {
                stderr: d.log.clone(),
                result: Some(pb::flake_show_response::Result::Error(diagnostic(d))),
            },
        }))
    }

    async fn flake_metadata(
        &self,
        request: Request<pb::FlakeMetadataRequest>,
    ) -> Result<Response<pb::FlakeMetadataResponse>, Status> {
        let _active = Active::begin(&self.state);
        let req = request.into_inner();
        let mut settings = settings(&self.state.config, req.context.as_ref())?;
        let flake_ref = nonempty_ref(req.flake_ref);
        let want_text = !req.json;
        let interrupt = Arc::new(AtomicBool::new(false));
        settings.interrupt = Some(interrupt.clone());
        let out = self
            .run_blocking(interrupt, move || {
                let json = eval::flake_metadata(&flake_ref, &settings, true)?;
                let text = if want_text {
                    Some(eval::flake_metadata(&flake_ref, &settings, false)?)
                } else {
                    None
                };
                Ok::<_, eval::Diagnostic>((json, text))
            })
            .await?;
        Ok(Response::new(match out {
            Ok((json, text)) => {
                let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap_or_default();
                let field = |k: &str| {
                    v.get(k)
                        .and_then(|x| x.as_str())
                        .unwrap_or_default()
                        .to_string()
                };
                let (text, stderr) = match text {
                    Some(t) => (t.stdout, t.stderr),
                    None => (Vec::new(), json.stderr),
                };
                pb::FlakeMetadataResponse {
                    result: Some(pb::flake_metadata_response::Result::Metadata(
                        pb::FlakeMetadata {
                            original_url: field("originalUrl"),
                            resolved_url: field("resolvedUrl"),
                            locked_url: field("lockedUrl"),
                            description: field("description"),
                            path: field("path"),
                            revision: field("revision"),
                            last_modified: v
                                .get("lastModified")
                                .and_then(|x| x.as_i64())
                                .unwrap_or_default(),
                            text,
                            json: if want_text { Vec::new() } else { json.stdout },
                        },
                    )),
                    stderr,
                }
            }
            Err(d) => pb::FlakeMetadataResponse {
                stderr: d.log.clone(),
                result: Some(pb::flake_metadata_response::Result::Error(diagnostic(d))),
            },
        }))
    }

    async fn list_attrs(
        &self,
        request: Request<pb::ListAttrsRequest>,
    ) -> Result<Response<pb::ListAttrsResponse>, Status> {
        let _active = Active::begin(&self.state);
        let req = request.into_inner();
        let settings = settings(&self.state.config, req.context.as_ref())?;
        let installable = match req.source {
            Some(pb::list_attrs_request::Source::Installable(i)) if !i.is_empty() => i,
            Some(pb::list_attrs_request::Source::Installable(_)) => {
                return Err(Status::invalid_argument(
                    "ListAttrsRequest.installable is empty",
                ));
            }
            Some(_) => {
                return Err(unimplemented(
                    "listing the attributes of an expression or a file (ListAttrs supports installables)",
                ));
            }
            None => {
                return Err(Status::invalid_argument(
                    "ListAttrsRequest has no source: set one of expr, file or installable",
                ));
            }
        };
        let state = self.state.clone();
        let attr_path = req.attr_path;
        let interrupt = Arc::new(AtomicBool::new(false));
        let out = self
            .run_blocking(interrupt, move || {
                state.warm.list_attrs(&installable, &settings, &attr_path)
            })
            .await?;
        Ok(Response::new(match out {
            Ok(attrs) => pb::ListAttrsResponse {
                attrs: attrs
                    .into_iter()
                    .map(|a| pb::AttrInfo {
                        name: a.name,
                        r#type: if a.type_name == "error" {
                            String::new()
                        } else {
                            a.type_name
                        },
                        position: a.position.map(position),
                    })
                    .collect(),
                error: None,
            },
            Err(d) => pb::ListAttrsResponse {
                attrs: Vec::new(),
                error: Some(diagnostic(d)),
            },
        }))
    }

    async fn status(
        &self,
        _request: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        let state = &self.state;
        let others = state.in_flight();
        let _active = Active::begin(state);
        Ok(Response::new(pb::StatusResponse {
            version: env!("CARGO_PKG_VERSION").to_string(),
            pid: std::process::id(),
            uptime_seconds: state.started.elapsed().as_secs_f64(),
            warm_flakes: state.warm.names(),
            memory_rss_bytes: rss_bytes(),
            requests_in_flight: others,
            requests_served: state.served.load(Ordering::SeqCst),
            socket_path: state.socket_path.display().to_string(),
            socket_activated: state.activated,
            warm: state
                .warm
                .details()
                .into_iter()
                .map(|(flake, memory_bytes)| pb::WarmFlakeInfo {
                    flake,
                    memory_bytes,
                })
                .collect(),
            eval_cache: state
                .warm
                .cache_stats()
                .map(|(s, disk_bytes)| pb::EvalCacheInfo {
                    hits: s.hits,
                    negative_hits: s.negative_hits,
                    misses: s.misses,
                    rows_committed: s.rows_committed,
                    rebuilds: s.rebuilds,
                    disk_bytes,
                }),
            warm_replays: state.warm.replays(),
        }))
    }

    async fn shutdown(
        &self,
        _request: Request<pb::ShutdownRequest>,
    ) -> Result<Response<pb::ShutdownResponse>, Status> {
        let others = self.state.in_flight();
        let _active = Active::begin(&self.state);
        tracing::info!("shutdown requested by a client");
        self.state.request_shutdown("a client asked for it");
        Ok(Response::new(pb::ShutdownResponse {
            requests_in_flight: others,
        }))
    }
}

impl FlakedService {
    /// Runs one evaluation on the blocking pool, bounded in concurrency and time.
    // The job's result type is the evaluator facade's, whose shape is fixed.
    #[allow(clippy::result_large_err)]
    async fn run_eval(&self, mut req: eval::EvalRequest) -> Result<pb::EvalResponse, Status> {
        // A warm flake's repeated answer is replayed right here, without a blocking thread.
        if let eval::EvalSource::Installable(i) = &req.source
            && self.state.hooks.eval_delay.is_none()
            && let Some(out) = self.state.warm.replay(i, &req.settings, req.output)
        {
            return Ok(pb::EvalResponse {
                result: Some(pb::eval_response::Result::Stdout(out.stdout)),
                stderr: out.stderr,
            });
        }
        let interrupt = Arc::new(AtomicBool::new(false));
        req.settings.interrupt = Some(interrupt.clone());
        let hooks = self.state.hooks.clone();
        let state = self.state.clone();
        let out = self
            .run_blocking(interrupt, move || run_job(&state, &req, &hooks))
            .await?;
        Ok(match out {
            Ok(out) => pb::EvalResponse {
                result: Some(pb::eval_response::Result::Stdout(out.stdout)),
                stderr: out.stderr,
            },
            Err(diag) => pb::EvalResponse {
                stderr: diag.log.clone(),
                result: Some(pb::eval_response::Result::Error(diagnostic(diag))),
            },
        })
    }

    /// Runs `job` on one of the evaluator's large-stack threads (the facade's blocking calls inside
    /// it run right there: one thread hand-off each way): at most `eval_workers` at once, bounded
    /// by the request timeout (after which `interrupt` is set), a panic answered as INTERNAL.
    /// `interrupt` is also set when the caller goes away before the job finished.
    async fn run_blocking<T, F>(&self, interrupt: Arc<AtomicBool>, job: F) -> Result<T, Status>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        let state = &self.state;
        let permit = state
            .evals
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| Status::unavailable("flaked is shutting down"))?;
        let mut guard = InterruptOnDrop(Some(interrupt.clone()));
        let (tx, rx) = tokio::sync::oneshot::channel();
        eval::spawn_on_eval_thread(
            move || {
                let _permit = permit;
                job()
            },
            move |r| {
                let _ = tx.send(r);
            },
        )
        .map_err(|e| {
            tracing::error!(error = %e, "cannot run an evaluation job");
            Status::internal(format!(
                "flaked cannot run this request ({e}); the daemon is still running"
            ))
        })?;
        let timeout = state.config.request_timeout;
        let outcome = tokio::time::timeout(timeout, rx).await;
        guard.0 = None;
        match outcome {
            Err(_) => {
                interrupt.store(true, Ordering::SeqCst);
                tracing::warn!(
                    ?timeout,
                    "request exceeded the request timeout; interrupted"
                );
                Err(Status::deadline_exceeded(format!(
                    "the evaluation took longer than flaked's request timeout ({}) and was interrupted",
                    human(timeout)
                )))
            }
            Ok(Err(_)) => {
                tracing::error!("evaluation job ended without an answer");
                Err(Status::internal(
                    "flaked failed while evaluating this request (the job ended without an answer); the daemon is still running",
                ))
            }
            Ok(Ok(Err(msg))) => {
                tracing::error!(panic = %msg, "evaluation panicked; answered INTERNAL");
                Err(Status::internal(format!(
                    "flaked hit an internal error (a bug) while evaluating this request: {msg}; the daemon is still running"
                )))
            }
            Ok(Ok(Ok(value))) => Ok(value),
        }
    }
}

/// The body of an evaluation job (on an evaluator thread).
// The result type is the evaluator facade's, whose shape is fixed.
#[allow(clippy::result_large_err)]
fn run_job(
    state: &State,
    req: &eval::EvalRequest,
    hooks: &TestHooks,
) -> Result<eval::EvalOutput, eval::Diagnostic> {
    if let Some(delay) = hooks.eval_delay {
        let until = Instant::now() + delay;
        while Instant::now() < until {
            if req
                .settings
                .interrupt
                .as_ref()
                .is_some_and(|f| f.load(Ordering::SeqCst))
            {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    if let (Some(p), eval::EvalSource::Expr(e)) = (&hooks.panic_expr, &req.source)
        && p == e
    {
        panic!("test hook FLAKED_TEST_PANIC_EXPR triggered");
    }
    if let eval::EvalSource::Installable(i) = &req.source {
        return state.warm.eval(i, &req.settings, req.output);
    }
    eval::evaluate(req)
}

/// Builds the facade's request from the wire request, or says what is wrong with it.
pub fn eval_request(config: &Config, req: pb::EvalRequest) -> Result<eval::EvalRequest, Status> {
    let settings = settings(config, req.context.as_ref())?;
    let source = match req.source {
        Some(pb::eval_request::Source::Expr(e)) => eval::EvalSource::Expr(e),
        Some(pb::eval_request::Source::File(f)) => {
            if f.is_empty() {
                return Err(Status::invalid_argument("EvalRequest.file is empty"));
            }
            eval::EvalSource::File(settings.cwd.join(f))
        }
        Some(pb::eval_request::Source::Installable(i)) => {
            if i.is_empty() {
                return Err(Status::invalid_argument("EvalRequest.installable is empty"));
            }
            eval::EvalSource::Installable(i)
        }
        None => {
            return Err(Status::invalid_argument(
                "EvalRequest has no source: set one of expr, file or installable",
            ));
        }
    };
    let output = match pb::OutputFormat::try_from(req.output) {
        Ok(pb::OutputFormat::Unspecified | pb::OutputFormat::Nix) => eval::OutputFormat::Nix,
        Ok(pb::OutputFormat::Json) => eval::OutputFormat::Json,
        Ok(pb::OutputFormat::Raw) => eval::OutputFormat::Raw,
        Err(_) => {
            return Err(Status::invalid_argument(format!(
                "EvalRequest.output has an unknown value {}",
                req.output
            )));
        }
    };
    Ok(eval::EvalRequest {
        source,
        attr_path: Some(req.attr_path).filter(|a| !a.is_empty()),
        output,
        settings,
    })
}

/// The evaluator settings for a client's context.
fn settings(
    config: &Config,
    ctx: Option<&pb::ClientContext>,
) -> Result<eval::EvalSettings, Status> {
    let ctx = ctx.ok_or_else(|| Status::invalid_argument("the request has no ClientContext"))?;
    let cwd = Path::new(&ctx.cwd);
    if !cwd.is_absolute() {
        return Err(Status::invalid_argument(format!(
            "ClientContext.cwd must be an absolute path, got '{}'",
            ctx.cwd
        )));
    }
    let defaults = eval::EvalSettings::default();
    let mut nix_path = ctx.include_paths.clone();
    if let Some(np) = &ctx.nix_path {
        nix_path.extend(split_nix_path(np));
    }
    Ok(eval::EvalSettings {
        pure: !ctx.impure,
        cwd: cwd.to_owned(),
        env: if ctx.impure {
            ctx.env
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        } else {
            BTreeMap::new()
        },
        nix_path,
        system: if ctx.system.is_empty() {
            defaults.system
        } else {
            ctx.system.clone()
        },
        store_dir: defaults.store_dir,
        interrupt: None,
        flake_cache_dir: Some(config.cache_dir.join("fetchers")),
        flake_registry: config.flake_registry.clone(),
        ..defaults
    })
}

/// A flake reference from a request; empty means `.` as for `nix flake …`.
fn nonempty_ref(r: String) -> String {
    if r.is_empty() { ".".to_string() } else { r }
}

/// Splits a NIX_PATH value like Nix: on `:`, except the `:` of a URL's `scheme://`.
pub fn split_nix_path(s: &str) -> Vec<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b':' {
            let elem = &s[start..i];
            let value = elem.rsplit_once('=').map_or(elem, |(_, v)| v);
            if s[i..].starts_with("://") && is_scheme(value) {
                i += 3;
                continue;
            }
            if !elem.is_empty() {
                out.push(elem.to_string());
            }
            start = i + 1;
        }
        i += 1;
    }
    if start < s.len() {
        out.push(s[start..].to_string());
    }
    out
}

fn is_scheme(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
}

fn position(p: eval::Position) -> pb::Position {
    pb::Position {
        file: p.file,
        line: p.line,
        column: p.column,
    }
}

/// The wire form of a facade diagnostic.
pub fn diagnostic(d: eval::Diagnostic) -> pb::Diagnostic {
    pb::Diagnostic {
        message: d.message,
        position: d.position.map(position),
        trace: d
            .trace
            .into_iter()
            .map(|f| pb::TraceFrame {
                message: f.message,
                position: f.position.map(position),
            })
            .collect(),
        rendered: d.rendered,
    }
}

/// The text of a panic payload.
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic without a message".to_string()
    }
}

fn human(d: Duration) -> String {
    if d.as_secs() >= 1 && d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

/// The resident set size of this process, from /proc (0 if unavailable).
fn rss_bytes() -> u64 {
    let Ok(statm) = std::fs::read_to_string("/proc/self/statm") else {
        return 0;
    };
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    pages * u64::try_from(page).unwrap_or(4096)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nix_path_splitting() {
        assert_eq!(split_nix_path("a:b=/c"), vec!["a", "b=/c"]);
        assert_eq!(
            split_nix_path("nixpkgs=https://x.org/a.tar.gz:/etc/n"),
            vec!["nixpkgs=https://x.org/a.tar.gz", "/etc/n"]
        );
        assert_eq!(split_nix_path("::/a:"), vec!["/a"]);
        assert_eq!(split_nix_path(""), Vec::<String>::new());
        assert_eq!(split_nix_path("flake:nixpkgs"), vec!["flake", "nixpkgs"]);
    }

    fn ctx(cwd: &str) -> Option<pb::ClientContext> {
        Some(pb::ClientContext {
            cwd: cwd.into(),
            impure: false,
            env: [("HOME".to_string(), "/root".to_string())].into(),
            include_paths: vec!["x=/y".into()],
            nix_path: Some("a=/b".into()),
            system: String::new(),
        })
    }

    fn test_config() -> Config {
        Config::resolve(
            &crate::config::Overrides {
                config: Some("/dev/null".into()),
                cache_dir: Some("/tmp/flaked-test-cache".into()),
                ..Default::default()
            },
            &BTreeMap::new(),
        )
        .expect("default configuration")
    }

    #[test]
    fn request_conversion() {
        let config = test_config();
        let r = eval_request(
            &config,
            pb::EvalRequest {
                context: ctx("/w"),
                source: Some(pb::eval_request::Source::File("f.nix".into())),
                attr_path: "a.b".into(),
                output: pb::OutputFormat::Json as i32,
            },
        )
        .expect("valid");
        assert!(matches!(&r.source, eval::EvalSource::File(p) if p == Path::new("/w/f.nix")));
        assert_eq!(r.attr_path.as_deref(), Some("a.b"));
        assert_eq!(r.output, eval::OutputFormat::Json);
        assert!(r.settings.pure);
        assert!(
            r.settings.env.is_empty(),
            "pure requests see no environment"
        );
        assert_eq!(r.settings.nix_path, vec!["x=/y", "a=/b"]);
        assert_eq!(r.settings.system, "x86_64-linux");

        let bad = |req: pb::EvalRequest| eval_request(&config, req).expect_err("invalid").code();
        assert_eq!(
            bad(pb::EvalRequest {
                context: ctx("/w"),
                ..Default::default()
            }),
            tonic::Code::InvalidArgument
        );
        assert_eq!(
            bad(pb::EvalRequest {
                context: ctx("rel"),
                source: Some(pb::eval_request::Source::Expr("1".into())),
                ..Default::default()
            }),
            tonic::Code::InvalidArgument
        );
        assert_eq!(
            bad(pb::EvalRequest {
                context: ctx("/w"),
                source: Some(pb::eval_request::Source::Installable(String::new())),
                ..Default::default()
            }),
            tonic::Code::InvalidArgument
        );
        assert_eq!(
            bad(pb::EvalRequest {
                context: ctx("/w"),
                source: Some(pb::eval_request::Source::Expr("1".into())),
                output: 42,
                ..Default::default()
            }),
            tonic::Code::InvalidArgument
        );
    }
}

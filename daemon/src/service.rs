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

/// Test-only hooks, enabled by environment variables read once at startup (see docs/operations.md).
#[derive(Debug, Clone, Default)]
pub struct TestHooks {
    /// `FLAKED_TEST_EVAL_DELAY_MS`: every evaluation first waits this long (interruptibly).
    pub eval_delay: Option<Duration>,
    /// `FLAKED_TEST_PANIC_EXPR`: evaluating exactly this `--expr` text panics inside the evaluation job.
    pub panic_expr: Option<String>,
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
        State {
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
        let req = eval_request(request.into_inner())?;
        let reply = self.run_eval(req).await?;
        Ok(Response::new(reply))
    }

    async fn lock(
        &self,
        _request: Request<pb::LockRequest>,
    ) -> Result<Response<pb::LockResponse>, Status> {
        let _active = Active::begin(&self.state);
        Err(unimplemented("locking flakes (Lock)"))
    }

    type BuildStream = BoxStream<pb::BuildEvent>;

    async fn build(
        &self,
        _request: Request<pb::BuildRequest>,
    ) -> Result<Response<Self::BuildStream>, Status> {
        let _active = Active::begin(&self.state);
        Err(unimplemented("building (Build)"))
    }

    type SearchStream = BoxStream<pb::SearchMatch>;

    async fn search(
        &self,
        _request: Request<pb::SearchRequest>,
    ) -> Result<Response<Self::SearchStream>, Status> {
        let _active = Active::begin(&self.state);
        Err(unimplemented("searching packages (Search)"))
    }

    async fn flake_show(
        &self,
        _request: Request<pb::FlakeShowRequest>,
    ) -> Result<Response<pb::FlakeShowResponse>, Status> {
        let _active = Active::begin(&self.state);
        Err(unimplemented("showing flake outputs (FlakeShow)"))
    }

    async fn flake_metadata(
        &self,
        _request: Request<pb::FlakeMetadataRequest>,
    ) -> Result<Response<pb::FlakeMetadataResponse>, Status> {
        let _active = Active::begin(&self.state);
        Err(unimplemented("flake metadata (FlakeMetadata)"))
    }

    async fn list_attrs(
        &self,
        _request: Request<pb::ListAttrsRequest>,
    ) -> Result<Response<pb::ListAttrsResponse>, Status> {
        let _active = Active::begin(&self.state);
        Err(unimplemented("listing attributes (ListAttrs)"))
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
            // No flake is cached in memory yet: flake evaluation is not implemented.
            warm_flakes: Vec::new(),
            memory_rss_bytes: rss_bytes(),
            requests_in_flight: others,
            requests_served: state.served.load(Ordering::SeqCst),
            socket_path: state.socket_path.display().to_string(),
            socket_activated: state.activated,
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
        let state = &self.state;
        let permit = state
            .evals
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| Status::unavailable("flaked is shutting down"))?;
        let interrupt = Arc::new(AtomicBool::new(false));
        req.settings.interrupt = Some(interrupt.clone());
        let mut guard = InterruptOnDrop(Some(interrupt.clone()));
        let hooks = state.hooks.clone();
        let job = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            std::panic::catch_unwind(AssertUnwindSafe(|| run_job(&req, &hooks)))
        });
        let timeout = state.config.request_timeout;
        let outcome = tokio::time::timeout(timeout, job).await;
        guard.0 = None;
        match outcome {
            Err(_) => {
                interrupt.store(true, Ordering::SeqCst);
                tracing::warn!(
                    ?timeout,
                    "evaluation exceeded the request timeout; interrupted"
                );
                Err(Status::deadline_exceeded(format!(
                    "the evaluation took longer than flaked's request timeout ({}) and was interrupted",
                    human(timeout)
                )))
            }
            Ok(Err(join)) => {
                tracing::error!(error = %join, "evaluation job failed");
                Err(Status::internal(format!(
                    "flaked failed while evaluating this request ({join}); the daemon is still running"
                )))
            }
            Ok(Ok(Err(panic))) => {
                let msg = panic_message(panic.as_ref());
                tracing::error!(panic = %msg, "evaluation panicked; answered INTERNAL");
                Err(Status::internal(format!(
                    "flaked hit an internal error (a bug) while evaluating this request: {msg}; the daemon is still running"
                )))
            }
            Ok(Ok(Ok(Ok(out)))) => Ok(pb::EvalResponse {
                result: Some(pb::eval_response::Result::Stdout(out.stdout)),
                stderr: out.stderr,
            }),
            Ok(Ok(Ok(Err(diag)))) => Ok(pb::EvalResponse {
                result: Some(pb::eval_response::Result::Error(diagnostic(diag))),
                stderr: Vec::new(),
            }),
        }
    }
}

/// The body of an evaluation job (on a blocking thread).
// The result type is the evaluator facade's, whose shape is fixed.
#[allow(clippy::result_large_err)]
fn run_job(
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
    eval::evaluate(req)
}

/// Builds the facade's request from the wire request, or says what is wrong with it.
pub fn eval_request(req: pb::EvalRequest) -> Result<eval::EvalRequest, Status> {
    let settings = settings(req.context.as_ref())?;
    let source = match req.source {
        Some(pb::eval_request::Source::Expr(e)) => eval::EvalSource::Expr(e),
        Some(pb::eval_request::Source::File(f)) => {
            if f.is_empty() {
                return Err(Status::invalid_argument("EvalRequest.file is empty"));
            }
            eval::EvalSource::File(settings.cwd.join(f))
        }
        Some(pb::eval_request::Source::Installable(i)) => {
            return Err(unimplemented(&format!(
                "evaluating the flake installable '{i}' (flakes)"
            )));
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
fn settings(ctx: Option<&pb::ClientContext>) -> Result<eval::EvalSettings, Status> {
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
        ..defaults
    })
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

    #[test]
    fn request_conversion() {
        let r = eval_request(pb::EvalRequest {
            context: ctx("/w"),
            source: Some(pb::eval_request::Source::File("f.nix".into())),
            attr_path: "a.b".into(),
            output: pb::OutputFormat::Json as i32,
        })
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

        let bad = |req: pb::EvalRequest| eval_request(req).expect_err("invalid").code();
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
                source: Some(pb::eval_request::Source::Installable(".#x".into())),
                ..Default::default()
            }),
            tonic::Code::Unimplemented
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

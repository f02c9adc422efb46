//! Serves the gRPC service on the listening socket until a shutdown is requested (SIGTERM, SIGINT, the
//! Shutdown RPC, or the idle timeout), then drains in-flight requests within the shutdown grace period.
//!
//! Invariants: every connection's peer credentials (SO_PEERCRED) are checked, and only the daemon's own
//! uid and root are served; once a shutdown begins no new connection is accepted; the daemon exits at
//! most `shutdown_grace` after the shutdown began, whether or not requests finished.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use flaked_proto::v1::flaked_server::FlakedServer;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::watch;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Server;
use tonic::transport::server::UdsConnectInfo;
use tonic::{Request, Status};

use crate::config::Config;
use crate::listener::Listener;
use crate::notify::notify;
use crate::service::{FlakedService, ShutdownReason, State, TestHooks};

/// Why serving failed.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot serve the socket: {0}")]
    Io(#[from] std::io::Error),
    #[error("the gRPC server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// The largest reply the daemon sends (evaluation output can be large).
const MAX_REPLY_BYTES: usize = 512 * 1024 * 1024;

/// Serves until shutdown. Returns once the daemon may exit.
pub async fn serve(config: Config, listener: Listener, hooks: TestHooks) -> Result<(), ServeError> {
    let own_uid = current_uid();
    let socket = UnixListener::from_std(listener.listener.try_clone()?)?;
    let (shutdown_tx, shutdown_rx) = watch::channel::<ShutdownReason>(None);
    let state = Arc::new(State::new(
        config.clone(),
        listener.path.clone(),
        listener.activated,
        hooks,
        shutdown_tx,
    ));

    spawn_signal_handlers(state.clone())?;
    if let Some(idle) = config.idle_exit {
        spawn_idle_watcher(state.clone(), idle);
    }

    let service = FlakedServer::new(FlakedService {
        state: state.clone(),
    })
    .max_decoding_message_size(config.max_request_bytes)
    .max_encoding_message_size(MAX_REPLY_BYTES);
    let service = InterceptedService::new(service, PeerCheck { own_uid });
    let incoming = Incoming {
        listener: socket,
        own_uid,
        backoff: None,
    };

    let mut stop = shutdown_rx.clone();
    let signal = async move {
        let reason = wait_shutdown(&mut stop).await;
        tracing::info!(
            reason,
            "shutting down: no new connections; letting in-flight requests finish"
        );
        notify("STOPPING=1");
    };
    let server = Server::builder()
        .timeout(config.request_timeout + Duration::from_secs(5))
        .serve_with_incoming_shutdown(service, incoming, signal);

    notify(&format!(
        "READY=1\nMAINPID={}\nSTATUS=serving on {}",
        std::process::id(),
        listener.path.display()
    ));
    tracing::info!(
        socket = %listener.path.display(),
        activated = listener.activated,
        pid = std::process::id(),
        version = env!("CARGO_PKG_VERSION"),
        "flaked is serving"
    );

    let mut stop = shutdown_rx.clone();
    let grace = config.shutdown_grace;
    let deadline = async move {
        wait_shutdown(&mut stop).await;
        tokio::time::sleep(grace).await;
    };
    let result = tokio::select! {
        r = server => r.map_err(ServeError::from),
        () = deadline => {
            tracing::warn!(
                in_flight = state.in_flight(),
                ?grace,
                "requests still running at the end of the shutdown grace period; exiting anyway"
            );
            Ok(())
        }
    };
    listener.cleanup();
    // Commit what the eval caches still hold in memory (their writes are batched).
    let warm_state = state.clone();
    let _ = tokio::task::spawn_blocking(move || warm_state.warm.flush()).await;
    // The watches of unchanged trees go to a keeper, so that the next daemon's first queries
    // need not walk those trees again.
    if config.keep_watches {
        let warm_state = state.clone();
        let _ = tokio::task::spawn_blocking(move || warm_state.warm.hand_over_watches()).await;
    }
    // Likewise the store's batch of objects added in the last moments.
    if let Ok(errors) = tokio::task::spawn_blocking(flaked_eval::store_path::flush_stores).await {
        for e in errors {
            tracing::error!("{e}");
        }
    }
    tracing::info!("flaked stopped");
    result
}

async fn wait_shutdown(rx: &mut watch::Receiver<ShutdownReason>) -> &'static str {
    loop {
        if let Some(reason) = *rx.borrow_and_update() {
            return reason;
        }
        if rx.changed().await.is_err() {
            return "the daemon is stopping";
        }
    }
}

fn spawn_signal_handlers(state: Arc<State>) -> std::io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::spawn(async move {
        loop {
            let name = tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = int.recv() => "SIGINT",
            };
            tracing::info!(signal = name, "received signal");
            state.request_shutdown(if name == "SIGTERM" {
                "SIGTERM"
            } else {
                "SIGINT"
            });
        }
    });
    Ok(())
}

fn spawn_idle_watcher(state: Arc<State>, idle: Duration) {
    let tick = (idle / 4).clamp(Duration::from_millis(50), Duration::from_secs(1));
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(tick).await;
            if state.in_flight() == 0 && state.idle_for() >= idle {
                tracing::info!(?idle, "idle timeout reached");
                state.request_shutdown("idle timeout");
                return;
            }
        }
    });
}

fn current_uid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// Whether a peer uid is served: the daemon's own uid and root.
fn allowed(own_uid: u32, peer_uid: u32) -> bool {
    peer_uid == own_uid || peer_uid == 0
}

/// Rejects requests from peers whose uid is not served.
#[derive(Debug, Clone, Copy)]
struct PeerCheck {
    own_uid: u32,
}

impl tonic::service::Interceptor for PeerCheck {
    fn call(&mut self, req: Request<()>) -> Result<Request<()>, Status> {
        let cred = req
            .extensions()
            .get::<UdsConnectInfo>()
            .and_then(|i| i.peer_cred);
        match cred {
            Some(c) if allowed(self.own_uid, c.uid()) => Ok(req),
            Some(c) => Err(Status::permission_denied(format!(
                "flaked serves only uid {} and root; this connection comes from uid {}",
                self.own_uid,
                c.uid()
            ))),
            None => Err(Status::permission_denied(
                "flaked cannot determine the peer credentials of this connection",
            )),
        }
    }
}

/// The stream of accepted connections. Logs refused peers; backs off briefly after an accept error
/// (e.g. out of file descriptors) instead of spinning.
struct Incoming {
    listener: UnixListener,
    own_uid: u32,
    backoff: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl tokio_stream::Stream for Incoming {
    type Item = std::io::Result<UnixStream>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if let Some(sleep) = self.backoff.as_mut() {
            ready!(sleep.as_mut().poll(cx));
            self.backoff = None;
        }
        match ready!(self.listener.poll_accept(cx)) {
            Ok((stream, _)) => {
                match stream.peer_cred() {
                    Ok(c) if allowed(self.own_uid, c.uid()) => {
                        tracing::debug!(uid = c.uid(), pid = ?c.pid(), "connection accepted");
                    }
                    Ok(c) => tracing::warn!(
                        uid = c.uid(),
                        pid = ?c.pid(),
                        "refusing a client of another user: its requests get PERMISSION_DENIED"
                    ),
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot read a connection's peer credentials")
                    }
                }
                Poll::Ready(Some(Ok(stream)))
            }
            Err(e) => {
                tracing::warn!(error = %e, "accepting a connection failed");
                self.backoff = Some(Box::pin(tokio::time::sleep(Duration::from_millis(100))));
                Poll::Ready(Some(Err(e)))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn who_is_served() {
        assert!(allowed(1000, 1000));
        assert!(allowed(1000, 0));
        assert!(!allowed(1000, 1001));
        assert!(allowed(0, 0));
        assert!(!allowed(0, 65534));
    }
}

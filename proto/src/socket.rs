//! Where the daemon's socket lives and how a client reaches it.
//!
//! Invariant: the daemon and every client resolve the default socket path with the same function
//! ([`default_socket_path`]), in the same order of precedence, so that a client started in the same
//! environment finds the daemon without being told where it is.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint, Uri};

use crate::v1::flaked_client::FlakedClient;

/// The largest message a client accepts from the daemon (evaluation output can be large).
pub const MAX_RESPONSE_BYTES: usize = 512 * 1024 * 1024;

/// The default socket path, in this order: `$FLAKED_SOCKET`; `$XDG_RUNTIME_DIR/flaked/socket`;
/// `/run/flaked/socket` when running as root; else a per-user path under the cache directory
/// (`$XDG_CACHE_HOME/flaked/socket`, `$HOME/.cache/flaked/socket`, or `/tmp/flaked-UID/socket`).
/// Empty variables count as unset. A `--socket` flag, where a program has one, comes before all of these.
pub fn default_socket_path() -> PathBuf {
    default_socket_path_with(|name| std::env::var(name).ok())
}

/// [`default_socket_path`] for the environment `env` instead of the process's own.
pub fn default_socket_path_from(env: &BTreeMap<String, String>) -> PathBuf {
    default_socket_path_with(|name| env.get(name).cloned())
}

fn default_socket_path_with(get: impl Fn(&str) -> Option<String>) -> PathBuf {
    let var = |name: &str| get(name).filter(|v| !v.is_empty());
    if let Some(p) = var("FLAKED_SOCKET") {
        return PathBuf::from(p);
    }
    if let Some(dir) = var("XDG_RUNTIME_DIR") {
        return PathBuf::from(dir).join("flaked").join("socket");
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    if euid == 0 {
        return PathBuf::from("/run/flaked/socket");
    }
    if let Some(dir) = var("XDG_CACHE_HOME") {
        return PathBuf::from(dir).join("flaked").join("socket");
    }
    if let Some(home) = var("HOME") {
        return PathBuf::from(home)
            .join(".cache")
            .join("flaked")
            .join("socket");
    }
    PathBuf::from(format!("/tmp/flaked-{euid}/socket"))
}

/// Connects to the daemon at `path`. The error is the plain `io::Error` of the socket connection when
/// no daemon answers there (so callers can tell "not running" from other failures).
pub async fn connect(path: &Path) -> Result<FlakedClient<Channel>, ConnectError> {
    let stream = UnixStream::connect(path)
        .await
        .map_err(|source| ConnectError::Socket {
            path: path.to_owned(),
            source,
        })?;
    connect_stream(stream).await
}

/// Speaks gRPC over an already connected socket. The channel does not reconnect: when the connection
/// drops, later calls fail with UNAVAILABLE.
pub async fn connect_stream(stream: UnixStream) -> Result<FlakedClient<Channel>, ConnectError> {
    Ok(FlakedClient::new(channel_over(stream).await?)
        .max_decoding_message_size(MAX_RESPONSE_BYTES)
        .max_encoding_message_size(MAX_RESPONSE_BYTES))
}

/// An HTTP/2 channel over an already connected socket (for raw gRPC calls).
pub async fn channel_over(stream: UnixStream) -> Result<Channel, ConnectError> {
    let slot = Arc::new(Mutex::new(Some(stream)));
    // The URI is required by the HTTP/2 layer but never resolved: the connector ignores it.
    Endpoint::from_static("http://flaked.local")
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let stream = slot.lock().ok().and_then(|mut s| s.take());
            async move {
                stream.map(TokioIo::new).ok_or_else(|| {
                    std::io::Error::new(
                        std::io::ErrorKind::NotConnected,
                        "the connection to flaked was closed",
                    )
                })
            }
        }))
        .await
        .map_err(ConnectError::Handshake)
}

/// Why a connection to the daemon failed.
#[derive(Debug)]
pub enum ConnectError {
    /// The socket could not be connected (no daemon, or no permission to reach it).
    Socket {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The socket connected but the HTTP/2 handshake failed.
    Handshake(tonic::transport::Error),
}

impl std::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConnectError::Socket { path, source } => {
                write!(
                    f,
                    "cannot connect to flaked at '{}': {source}",
                    path.display()
                )
            }
            ConnectError::Handshake(e) => write!(f, "cannot talk to flaked: {e}"),
        }
    }
}

impl std::error::Error for ConnectError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ConnectError::Socket { source, .. } => Some(source),
            ConnectError::Handshake(e) => Some(e),
        }
    }
}

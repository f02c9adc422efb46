//! Tells the service manager about the daemon's state (the `sd_notify` protocol): `READY=1` once the
//! socket is being served, `STOPPING=1` when a shutdown begins.
//!
//! Invariant: without `$NOTIFY_SOCKET` this is a no-op, and a failure to notify is logged, never fatal
//! (the daemon serves its socket either way).

use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};

/// Sends `state` (newline-separated `KEY=VALUE` assignments) to `$NOTIFY_SOCKET`, if set.
pub fn notify(state: &str) {
    let Some(target) = std::env::var_os("NOTIFY_SOCKET").filter(|v| !v.is_empty()) else {
        return;
    };
    let target = target.to_string_lossy().into_owned();
    if let Err(e) = send(&target, state) {
        tracing::warn!(notify_socket = %target, error = %e, "cannot notify the service manager");
    }
}

fn send(target: &str, state: &str) -> std::io::Result<()> {
    let sock = UnixDatagram::unbound()?;
    sock.send_to_addr(state.as_bytes(), &address(target)?)?;
    Ok(())
}

fn address(target: &str) -> std::io::Result<SocketAddr> {
    match target.strip_prefix('@') {
        // A leading '@' names a socket in the abstract namespace.
        Some(name) => SocketAddr::from_abstract_name(name.as_bytes()),
        None => SocketAddr::from_pathname(target),
    }
}

/// Sends `state` with the descriptors `fds` attached to `$NOTIFY_SOCKET` (`FDSTORE=1`: the
/// service manager keeps them for the next start of the service). Errors when it is not set.
pub fn notify_with_fds(state: &str, fds: &[std::os::fd::RawFd]) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let target = std::env::var_os("NOTIFY_SOCKET")
        .filter(|v| !v.is_empty())
        .ok_or_else(|| std::io::Error::other("$NOTIFY_SOCKET is not set"))?;
    let sock = UnixDatagram::unbound()?;
    sock.connect_addr(&address(&target.to_string_lossy())?)?;
    let sent = crate::keeper::send_with_fds(sock.as_raw_fd(), state.as_bytes(), fds)?;
    if sent != state.len() {
        return Err(std::io::Error::other("the notification was cut short"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sends_to_path_and_abstract_sockets() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("notify");
        let rx = UnixDatagram::bind(&path).expect("bind");
        send(path.to_str().expect("utf-8"), "READY=1").expect("send");
        let mut buf = [0u8; 64];
        let n = rx.recv(&mut buf).expect("recv");
        assert_eq!(&buf[..n], b"READY=1");

        let name = format!("flaked-test-{}", std::process::id());
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).expect("addr");
        let rx = UnixDatagram::bind_addr(&addr).expect("bind abstract");
        send(&format!("@{name}"), "STOPPING=1").expect("send");
        let n = rx.recv(&mut buf).expect("recv");
        assert_eq!(&buf[..n], b"STOPPING=1");
    }
}

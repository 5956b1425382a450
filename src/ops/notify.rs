//! The systemd notification protocol (sd_notify(3)): one datagram such as `READY=1` to the unix socket named by
//! `$NOTIFY_SOCKET` (a path, or `@name` for the abstract namespace). Without the variable nothing is sent, so the
//! same binary serves `Type=notify` units and plain use alike.

use std::os::linux::net::SocketAddrExt;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};

/// Sends `state` (e.g. `"READY=1"`) if `$NOTIFY_SOCKET` is set. Returns whether a message was sent; a failure is
/// logged with the socket's name and otherwise ignored (the service manager then times out and says so).
pub fn notify(state: &str) -> bool {
    let Some(socket) = std::env::var_os("NOTIFY_SOCKET") else {
        return false;
    };
    let name = socket.as_bytes();
    let sent = (|| {
        let addr = match name.strip_prefix(b"@") {
            Some(abstract_name) => SocketAddr::from_abstract_name(abstract_name)?,
            None => SocketAddr::from_pathname(&socket)?,
        };
        UnixDatagram::unbound()?.send_to_addr(state.as_bytes(), &addr)
    })();
    match sent {
        Ok(_) => true,
        Err(e) => {
            tracing::warn!(
                "notifying the service manager at NOTIFY_SOCKET={}: {e}",
                socket.to_string_lossy()
            );
            false
        }
    }
}

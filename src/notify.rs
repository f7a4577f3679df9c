//! systemd's readiness protocol (`sd_notify(3)`): datagrams like `READY=1`, `STATUS=...` and
//! `STOPPING=1` sent to the socket named by `$NOTIFY_SOCKET`, when systemd set one
//! (`Type=notify` units). Outside systemd it does nothing.
//!
//! A few lines of std instead of a crate: the protocol is one datagram per call, to a path or
//! (with a leading `@`) an abstract socket name.

use std::os::unix::net::UnixDatagram;

/// Sends `state` (newline-separated `KEY=VALUE` assignments) to systemd. Returns whether it
/// was sent: false outside systemd or if the socket is gone (never an error for the caller:
/// a daemon must not fail because its supervisor cannot be told something).
pub fn notify(state: &str) -> bool {
    match std::env::var_os("NOTIFY_SOCKET") {
        Some(path) => notify_to(&path, state),
        None => false,
    }
}

/// Sends `state` to the notification socket `path` (a file path, or `@name` for an abstract
/// socket).
pub fn notify_to(path: &std::ffi::OsStr, state: &str) -> bool {
    let Ok(socket) = UnixDatagram::unbound() else {
        return false;
    };
    let bytes = path.as_encoded_bytes();
    let sent = if let Some(name) = bytes.strip_prefix(b"@") {
        use std::os::linux::net::SocketAddrExt;
        std::os::unix::net::SocketAddr::from_abstract_name(name)
            .and_then(|addr| socket.send_to_addr(state.as_bytes(), &addr))
    } else {
        socket.send_to(state.as_bytes(), std::path::Path::new(&path))
    };
    sent.is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A datagram reaches the notification socket, by path and by abstract name; a socket
    /// that does not exist is reported as not sent.
    #[test]
    fn sends_to_the_notify_socket() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("notify");
        let listener = UnixDatagram::bind(&path).expect("bind");
        assert!(notify_to(path.as_os_str(), "READY=1\nSTATUS=ingesting"));
        let mut buf = [0u8; 64];
        let n = listener.recv(&mut buf).expect("received");
        assert_eq!(&buf[..n], b"READY=1\nSTATUS=ingesting");

        use std::os::linux::net::SocketAddrExt;
        let name = format!("venuetrace-test-{}", std::process::id());
        let addr =
            std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).expect("name");
        let abstract_listener = UnixDatagram::bind_addr(&addr).expect("bind abstract");
        assert!(notify_to(
            std::ffi::OsStr::new(&format!("@{name}")),
            "STOPPING=1"
        ));
        let n = abstract_listener.recv(&mut buf).expect("received");
        assert_eq!(&buf[..n], b"STOPPING=1");

        assert!(!notify_to(dir.path().join("absent").as_os_str(), "READY=1"));
    }
}

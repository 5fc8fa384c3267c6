//! The error type of the async layer.

use std::io;
use std::sync::Arc;
use tether_proto::proxy::ProxyError;
use tether_proto::{HandshakeError, ProtocolError, UsageError};

/// Everything that can go wrong with a connection. A clean close is not an error: it is
/// the [`Message::Close`](crate::Message::Close) at the end of the stream.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The peer broke the protocol; the connection was closed with the matching code.
    #[error("protocol error: {0}")]
    Protocol(#[from] ProtocolError),
    /// The opening handshake failed.
    #[error("handshake failed: {0}")]
    Handshake(#[from] HandshakeError),
    /// The API was used in a way that cannot work (for example, sending after close).
    #[error(transparent)]
    Usage(#[from] UsageError),
    /// The socket failed.
    #[error("i/o error: {0}")]
    Io(Arc<io::Error>),
    /// TLS failed: a certificate was rejected (the message names the host and the reason),
    /// or a certificate or key could not be loaded.
    #[error("tls: {0}")]
    Tls(String),
    /// The TCP connection (with its proxy tunnel, if any) could not be opened: the message
    /// says whether the name did not resolve, the connection was refused, it timed out, or
    /// the proxy failed, and names the host or proxy.
    #[error("{0}")]
    Connect(ConnectError),
    /// A proxy URL cannot be used.
    #[error(transparent)]
    Proxy(#[from] ProxyError),
    /// The opening handshake took longer than `handshake_timeout`.
    #[error("handshake timed out")]
    Timeout,
}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Self {
        Self::Io(Arc::new(e))
    }
}

/// What kind of connect failure a [`ConnectError`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConnectErrorKind {
    /// The host name did not resolve.
    Dns,
    /// The host (or the proxy) refused the TCP connection.
    Refused,
    /// The connect timeout passed.
    Timeout,
    /// The proxy refused or failed to open the tunnel.
    Proxy,
    /// Another socket error.
    Io,
}

/// A client's failure to open its TCP connection, naming the host or proxy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectError {
    kind: ConnectErrorKind,
    target: String,
    detail: String,
}

impl ConnectError {
    pub(crate) fn new(kind: ConnectErrorKind, target: &str, detail: impl std::fmt::Display) -> Self {
        Self { kind, target: target.to_owned(), detail: detail.to_string() }
    }

    /// The kind of failure.
    pub fn kind(&self) -> ConnectErrorKind {
        self.kind
    }

    /// The host and port, or the proxy, that failed.
    pub fn target(&self) -> &str {
        &self.target
    }
}

impl std::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (t, d) = (&self.target, &self.detail);
        match self.kind {
            ConnectErrorKind::Dns => write!(f, "cannot resolve host {t}: {d}"),
            ConnectErrorKind::Refused => write!(f, "connection refused by {t}"),
            ConnectErrorKind::Timeout => write!(f, "timed out after {d} connecting to {t}"),
            ConnectErrorKind::Proxy => write!(f, "{t}: {d}"),
            ConnectErrorKind::Io => write!(f, "cannot connect to {t}: {d}"),
        }
    }
}

impl std::error::Error for ConnectError {}

impl From<ConnectError> for Error {
    fn from(e: ConnectError) -> Self {
        Self::Connect(e)
    }
}

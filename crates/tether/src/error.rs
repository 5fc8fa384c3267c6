//! The error type of the async layer.

use std::io;
use std::sync::Arc;
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
    /// The opening handshake took longer than `handshake_timeout`.
    #[error("handshake timed out")]
    Timeout,
}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Self {
        Self::Io(Arc::new(e))
    }
}

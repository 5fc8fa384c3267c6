//! [`Message`]: what goes through the `Stream` and the `Sink`.

use bytes::Bytes;
use tether_proto::{CloseFrame, Utf8Bytes};

/// A WebSocket message or control frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// UTF-8 text.
    Text(Utf8Bytes),
    /// Binary data.
    Binary(Bytes),
    /// A ping. Received pings are answered automatically; they are shown for information.
    Ping(Bytes),
    /// A pong.
    Pong(Bytes),
    /// Sending: start the close handshake (`None` sends 1000). Receiving: the last item of
    /// the stream, the peer's close code and reason (`None` when the close frame had no
    /// code or the connection ended without one; see
    /// [`WebSocket::close_status`](crate::WebSocket::close_status) for the full story).
    Close(Option<CloseFrame>),
}

impl Message {
    /// A text message.
    pub fn text(s: impl Into<Utf8Bytes>) -> Self {
        Self::Text(s.into())
    }

    /// A binary message.
    pub fn binary(b: impl Into<Bytes>) -> Self {
        Self::Binary(b.into())
    }

    /// Whether this is a text or binary message (not a control frame).
    pub fn is_data(&self) -> bool {
        matches!(self, Self::Text(_) | Self::Binary(_))
    }

    /// Payload size in bytes.
    pub fn len(&self) -> usize {
        match self {
            Self::Text(t) => t.len(),
            Self::Binary(b) | Self::Ping(b) | Self::Pong(b) => b.len(),
            Self::Close(c) => c.as_ref().map_or(0, |c| 2 + c.reason.len()),
        }
    }

    /// Whether the payload is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

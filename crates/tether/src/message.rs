//! [`Message`]: what goes through the `Stream` and the `Sink`.

use bytes::Bytes;
use tether_proto::{CloseCode, CloseFrame, Event, Utf8Bytes};

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

/// What a core event is for the application; `None` for events it does not see.
pub(crate) fn from_event(event: Event) -> Option<Message> {
    Some(match event {
        Event::Text(t) => Message::Text(t),
        Event::Binary(b) => Message::Binary(b),
        Event::Ping(p) => Message::Ping(p),
        Event::Pong(p) => Message::Pong(p),
        Event::Closed(closed) => Message::Close(match closed.code {
            CloseCode::NO_STATUS | CloseCode::ABNORMAL => None,
            code => Some(CloseFrame { code, reason: closed.reason }),
        }),
        _ => return None,
    })
}

/// The code and reason a `Message::Close` sends (`None`: 1000, no reason).
pub(crate) fn close_parts(frame: Option<CloseFrame>) -> (CloseCode, String) {
    frame.map_or((CloseCode::NORMAL, String::new()), |f| (f.code, f.reason))
}

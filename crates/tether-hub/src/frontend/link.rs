//! A front-end's connection, whatever carries it: a WebSocket, or a SockJS session over
//! HTTP ([`super::sockjs`]). A front-end reads messages from [`Rx`] and writes through
//! [`Tx`]; it never learns which one it has. What many subscribers share is encoded once
//! per framing: a WebSocket frame for WebSocket connections, a JSON string for SockJS.

use super::sockjs::session::SockJsSession;
use crate::hub::event::{FrameEncoding, PartEncoding};
use crate::hub::Event;
use bytes::{Bytes, BytesMut};
use futures_util::Stream;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tether::tether_proto::error::UsageError;
use tether::{CloseCode, Error, Message, PreparedFrame, ReadHalf, Sender, WebSocket};
use tokio::sync::mpsc;

/// One connection of a front-end.
pub(crate) struct Link {
    /// Where messages go.
    pub(crate) tx: Tx,
    /// Where messages come from.
    pub(crate) rx: Rx,
}

impl From<WebSocket> for Link {
    fn from(ws: WebSocket) -> Self {
        let (write, read) = ws.split();
        Self { tx: Tx::Ws(write.sender()), rx: Rx::Ws(read) }
    }
}

/// The receiving side: a WebSocket's messages, or a SockJS session's.
pub(crate) enum Rx {
    Ws(ReadHalf),
    Session(mpsc::Receiver<Message>),
}

impl Stream for Rx {
    type Item = Result<Message, Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        match self.get_mut() {
            Self::Ws(read) => Pin::new(read).poll_next(cx),
            Self::Session(rx) => rx.poll_recv(cx).map(|m| m.map(Ok)),
        }
    }
}

/// The sending side.
#[derive(Clone)]
pub(crate) enum Tx {
    Ws(Sender),
    Session(Arc<SockJsSession>),
}

/// The error of a send on a closed SockJS session, as a WebSocket's would be.
fn closed() -> Error {
    Error::Usage(UsageError::Closed)
}

/// An encoding of text messages that many subscribers share: a WebSocket frame, and the
/// JSON string SockJS carries in its `a[…]` frames, each made once per event.
#[derive(Debug)]
pub(crate) struct TextEncoding {
    frame: FrameEncoding,
    sockjs: PartEncoding,
}

impl TextEncoding {
    pub(crate) const fn new(name: &'static str) -> Self {
        Self { frame: FrameEncoding::new(name), sockjs: PartEncoding::new(name) }
    }
}

impl Tx {
    /// Bytes queued and not yet written (or taken by a SockJS receiver).
    pub(crate) fn buffered_amount(&self) -> usize {
        match self {
            Self::Ws(s) => s.buffered_amount(),
            Self::Session(s) => s.buffered_amount(),
        }
    }

    /// Queues a message without waiting.
    ///
    /// # Errors
    ///
    /// When the connection is closing or gone.
    pub(crate) fn start_send(&self, msg: Message) -> Result<(), Error> {
        match self {
            Self::Ws(s) => s.start_send(msg),
            Self::Session(s) => s.send_text(message_text(&msg)).then_some(()).ok_or_else(closed),
        }
    }

    /// Sends a message, waiting while a WebSocket's queue is full (a SockJS session's queue
    /// is bounded by the slow-consumer policy instead).
    ///
    /// # Errors
    ///
    /// When the connection is closing or gone.
    pub(crate) async fn send(&self, msg: Message) -> Result<(), Error> {
        match self {
            Self::Ws(s) => s.send(msg).await,
            Self::Session(_) => self.start_send(msg),
        }
    }

    /// Starts the close: a close frame, or SockJS's `c[code,"reason"]`.
    ///
    /// # Errors
    ///
    /// When the connection is already closing.
    pub(crate) fn send_close(&self, code: CloseCode, reason: impl Into<String>) -> Result<(), Error> {
        match self {
            Self::Ws(s) => s.send_close(code, reason),
            Self::Session(s) => s.close(code.0, &reason.into()).then_some(()).ok_or_else(closed),
        }
    }

    /// Sends `event` as the text `encode` makes of it, encoded once per framing for every
    /// connection that uses `encoding`. Returns the bytes queued.
    ///
    /// # Errors
    ///
    /// When the connection is closing or gone.
    pub(crate) fn send_event(
        &self,
        event: &Event,
        encoding: &TextEncoding,
        encode: impl FnOnce(&Event) -> String,
    ) -> Result<usize, Error> {
        match self {
            Self::Ws(s) => event.with_frame(
                &encoding.frame,
                |e| PreparedFrame::text(&encode(e)),
                |f| s.send_prepared(f).map(|()| f.wire().len()),
            ),
            Self::Session(s) => event.with_part(
                &encoding.sockjs,
                |e| super::sockjs::frame::json_string(&encode(e)),
                |part| s.send_escaped(part.clone()).then_some(part.len()).ok_or_else(closed),
            ),
        }
    }

    /// Sends the message `head` + `part`, where `part` is shared by many connections and
    /// `escaped` gives its SockJS form: the JSON-escaped text, without quotes (made once,
    /// when first asked for).
    ///
    /// # Errors
    ///
    /// When the connection is closing or gone.
    pub(crate) fn send_joined(
        &self,
        head: &[u8],
        part: &Bytes,
        escaped: impl FnOnce() -> Bytes,
    ) -> Result<usize, Error> {
        match self {
            Self::Ws(s) => {
                let mut out = BytesMut::with_capacity(head.len() + part.len());
                out.extend_from_slice(head);
                out.extend_from_slice(part);
                let len = out.len();
                s.start_send(binary_or_text(out.freeze())).map(|()| len)
            }
            Self::Session(s) => {
                let head = super::sockjs::frame::escape(&String::from_utf8_lossy(head));
                let part = escaped();
                let mut out = BytesMut::with_capacity(head.len() + part.len() + 2);
                out.extend_from_slice(b"\"");
                out.extend_from_slice(head.as_bytes());
                out.extend_from_slice(&part);
                out.extend_from_slice(b"\"");
                let len = out.len();
                s.send_escaped(out.freeze()).then_some(len).ok_or_else(closed)
            }
        }
    }
}

/// A message's bytes as text: UTF-8 as is, anything else with replacement characters
/// (SockJS carries strings only).
fn message_text(msg: &Message) -> std::borrow::Cow<'_, str> {
    match msg {
        Message::Text(t) => std::borrow::Cow::Borrowed(t.as_str()),
        Message::Binary(b) => String::from_utf8_lossy(b),
        _ => std::borrow::Cow::Borrowed(""),
    }
}

/// Bytes as a WebSocket message: text when they are UTF-8, binary otherwise.
pub(crate) fn binary_or_text(bytes: Bytes) -> Message {
    match tether::Utf8Bytes::try_from_bytes(bytes) {
        Ok(text) => Message::Text(text),
        Err(bytes) => Message::Binary(bytes),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frontend::sockjs::session::Out;
    use crate::hub::{ClientInfo, Push};
    use std::sync::atomic::{AtomicUsize, Ordering};

    static TEXT: TextEncoding = TextEncoding::new("test");

    /// What a SockJS session has queued (after its open frame).
    fn queued(s: &SockJsSession) -> Vec<Bytes> {
        let mut cx = Context::from_waker(futures_util::task::noop_waker_ref());
        assert!(matches!(s.poll_out(&mut cx), Poll::Ready(Out::Open)));
        match s.poll_out(&mut cx) {
            Poll::Ready(Out::Messages(m)) => m,
            _ => Vec::new(),
        }
    }

    #[test]
    fn one_escape_per_event_for_every_sockjs_session() {
        let info = Arc::new(ClientInfo { client: "c1".into(), user: "u".into(), anonymous: false });
        let event = Event::new("room".into(), Push::Join(info));
        let encodes = AtomicUsize::new(0);
        let sessions: Vec<_> = (0..3).map(|_| SockJsSession::new(1 << 20).0).collect();
        for s in &sessions {
            let tx = Tx::Session(s.clone());
            tx.send_event(&event, &TEXT, |_| {
                encodes.fetch_add(1, Ordering::Relaxed);
                "{\"push\":\"\u{2028}\"}".into()
            })
            .unwrap();
        }
        assert_eq!(encodes.load(Ordering::Relaxed), 1);
        let parts: Vec<Bytes> = sessions.iter().flat_map(|s| queued(s)).collect();
        assert_eq!(&parts[0][..], b"\"{\\\"push\\\":\\\"\\u2028\\\"}\"");
        // The very same bytes, not copies.
        assert!(parts.iter().all(|p| p.as_ptr() == parts[0].as_ptr()));
    }
}

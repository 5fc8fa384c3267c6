//! A connection as a front-end sees it, whatever carries it: a WebSocket, or a session of a
//! transport that is not one (SockJS, in `frontend::sockjs`), behind an [`Outbox`]. A
//! front-end reads messages from [`Rx`] and writes through [`Tx`]; it never learns which
//! it has. What many subscribers share is encoded once per carrier: a WebSocket frame for
//! WebSockets, the outbox's form (for SockJS, the escaped JSON string) for the others.

use crate::hub::event::{FrameEncoding, PartEncoding};
use crate::hub::Event;
use bytes::{Bytes, BytesMut};
use futures_util::Stream;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tether::tether_proto::error::UsageError;
use tether::{
    CloseCode, Error, Message, PreparedFrame, ReadHalf, Sender, SharedSender, SharedWebSocket, Transport,
    WebSocket,
};
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

impl From<SharedWebSocket<Transport>> for Link {
    fn from(ws: SharedWebSocket<Transport>) -> Self {
        Self { tx: Tx::Shared(ws.sender()), rx: Rx::Shared(ws) }
    }
}

/// The receiving side: a WebSocket's messages, or those a carrier's requests deliver.
pub(crate) enum Rx {
    Ws(ReadHalf),
    /// A WebSocket the front-end's task drives by reading it; the hub writes to it
    /// straight from the publishing path.
    Shared(SharedWebSocket<Transport>),
    Channel(mpsc::Receiver<Message>),
}

impl Stream for Rx {
    type Item = Result<Message, Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        match self.get_mut() {
            Self::Ws(read) => Pin::new(read).poll_next(cx),
            Self::Shared(ws) => Pin::new(ws).poll_next(cx),
            Self::Channel(rx) => rx.poll_recv(cx).map(|m| m.map(Ok)),
        }
    }
}

/// The sending side of a carrier other than a WebSocket (a SockJS session). Messages are
/// text, queued in the carrier's own form, which must join: the form of `a + b` is the form
/// of `a` followed by the form of `b` (SockJS: JSON string contents, escaped).
pub(crate) trait Outbox: Send + Sync {
    /// Bytes queued and not yet taken by the client.
    fn buffered_amount(&self) -> usize;
    /// `text` in this carrier's form.
    fn encode(&self, text: &str) -> Bytes;
    /// Queues a message given in this carrier's form; `false` when closed (or closing now,
    /// over its limit).
    fn send_encoded(&self, message: Bytes) -> bool;
    /// Closes with `code` and `reason`; `false` if it was closed already.
    fn close(&self, code: u16, reason: &str) -> bool;
    /// Whether it takes WebSocket frames of whole messages ([`send_frame`](Self::send_frame))
    /// for what many connections share, instead of its own form (a carrier that runs over
    /// WebSocket: an Engine.IO session).
    fn takes_frames(&self) -> bool {
        false
    }
    /// Queues a message as a WebSocket frame shared by many connections; `false` when
    /// closed. Only called when [`takes_frames`](Self::takes_frames).
    fn send_frame(&self, _frame: &PreparedFrame) -> bool {
        false
    }
}

/// The sending side.
#[derive(Clone)]
pub(crate) enum Tx {
    Ws(Sender),
    Shared(SharedSender<Transport>),
    Outbox(Arc<dyn Outbox>),
}

/// The error of a send on a closed outbox, as a WebSocket's would be.
fn closed() -> Error {
    Error::Usage(UsageError::Closed)
}

/// An encoding of text messages that many subscribers share: a WebSocket frame, and an
/// outbox's form, each made once per event.
#[derive(Debug)]
pub(crate) struct TextEncoding {
    frame: FrameEncoding,
    outbox: PartEncoding,
}

impl TextEncoding {
    pub(crate) const fn new(name: &'static str) -> Self {
        Self { frame: FrameEncoding::new(name), outbox: PartEncoding::new(name) }
    }

    /// The WebSocket frame's encoding.
    pub(crate) fn frame(&self) -> &FrameEncoding {
        &self.frame
    }
}

impl Tx {
    /// Asks the CPU to bring in the connection's state before a send (see
    /// [`tether::SharedSender::prefetch`]); nothing for the other carriers, which have no
    /// such hint.
    pub(crate) fn prefetch(&self) {
        if let Self::Shared(s) = self {
            s.prefetch();
        }
    }

    /// Bytes queued and not yet written (or taken by the client).
    pub(crate) fn buffered_amount(&self) -> usize {
        match self {
            Self::Ws(s) => s.buffered_amount(),
            Self::Shared(s) => s.buffered_amount(),
            Self::Outbox(o) => o.buffered_amount(),
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
            Self::Shared(s) => s.start_send(msg),
            Self::Outbox(o) => o.send_encoded(o.encode(&message_text(&msg))).then_some(()).ok_or_else(closed),
        }
    }

    /// Sends a message, waiting while a WebSocket's queue is full (an outbox is bounded by
    /// its own limit instead).
    ///
    /// # Errors
    ///
    /// When the connection is closing or gone.
    pub(crate) async fn send(&self, msg: Message) -> Result<(), Error> {
        match self {
            Self::Ws(s) => s.send(msg).await,
            Self::Shared(s) => s.send(msg).await,
            Self::Outbox(_) => self.start_send(msg),
        }
    }

    /// Starts the close: a close frame, or the carrier's (SockJS: `c[code,"reason"]`).
    ///
    /// # Errors
    ///
    /// When the connection is already closing.
    pub(crate) fn send_close(&self, code: CloseCode, reason: impl Into<String>) -> Result<(), Error> {
        match self {
            Self::Ws(s) => s.send_close(code, reason),
            Self::Shared(s) => s.send_close(code, reason),
            Self::Outbox(o) => o.close(code.0, &reason.into()).then_some(()).ok_or_else(closed),
        }
    }

    /// Sends `event` as the text `encode` makes of it, encoded once per carrier for every
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
            Self::Outbox(o) if !o.takes_frames() => event.with_part(
                &encoding.outbox,
                |e| o.encode(&encode(e)),
                |part| o.send_encoded(part.clone()).then_some(part.len()).ok_or_else(closed),
            ),
            _ => {
                event.with_frame(&encoding.frame, |e| PreparedFrame::text(&encode(e)), |f| self.send_frame(f))
            }
        }
    }

    /// Whether it takes WebSocket frames ([`send_frame`](Self::send_frame)): a WebSocket,
    /// or an outbox that does.
    pub(crate) fn takes_frames(&self) -> bool {
        match self {
            Self::Ws(_) | Self::Shared(_) => true,
            Self::Outbox(o) => o.takes_frames(),
        }
    }

    /// Queues a frame shared by many connections; returns the bytes queued.
    pub(crate) fn send_frame(&self, f: &PreparedFrame) -> Result<usize, Error> {
        match self {
            Self::Ws(s) => s.send_prepared(f).map(|()| f.wire().len()),
            Self::Shared(s) => s.feed_prepared(f).map(|()| f.wire().len()),
            Self::Outbox(o) => o.send_frame(f).then_some(f.payload_len()).ok_or_else(closed),
        }
    }

    /// Sends the message `head` + `part`, where `part` is shared by many connections and
    /// `encoded` gives its outbox form (made once, when first asked for).
    ///
    /// # Errors
    ///
    /// When the connection is closing or gone.
    pub(crate) fn send_joined(
        &self,
        mut head: BytesMut,
        part: &Bytes,
        encoded: impl FnOnce(&dyn Outbox) -> Bytes,
    ) -> Result<usize, Error> {
        match self {
            Self::Ws(_) | Self::Shared(_) => {
                // One buffer per message: the head's, grown by the part.
                head.extend_from_slice(part);
                let len = head.len();
                let msg = binary_or_text(head.freeze());
                match self {
                    // Written with the rest of the fan-out, as `send_frame`'s frames are.
                    Self::Shared(s) => s.feed(msg),
                    _ => self.start_send(msg),
                }
                .map(|()| len)
            }
            Self::Outbox(o) => {
                let (head, part) = (o.encode(&String::from_utf8_lossy(&head)), encoded(&**o));
                let mut out = BytesMut::with_capacity(head.len() + part.len());
                out.extend_from_slice(&head);
                out.extend_from_slice(&part);
                let len = out.len();
                o.send_encoded(out.freeze()).then_some(len).ok_or_else(closed)
            }
        }
    }
}

/// A message's bytes as text: UTF-8 as is, anything else with replacement characters
/// (the carriers other than WebSocket take text only).
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
    use crate::hub::{ClientInfo, Push};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;

    static TEXT: TextEncoding = TextEncoding::new("test");

    /// An outbox that keeps what it is given, in upper case as its "form".
    #[derive(Default)]
    struct Keep(Mutex<Vec<Bytes>>);

    impl Outbox for Keep {
        fn buffered_amount(&self) -> usize {
            0
        }
        fn encode(&self, text: &str) -> Bytes {
            text.to_uppercase().into()
        }
        fn send_encoded(&self, message: Bytes) -> bool {
            self.0.lock().unwrap().push(message);
            true
        }
        fn close(&self, _: u16, _: &str) -> bool {
            true
        }
    }

    #[test]
    fn one_encode_per_event_for_every_outbox() {
        let info = Arc::new(ClientInfo { client: "c1".into(), user: "u".into(), anonymous: false });
        let event = Event::new("room".into(), Push::Join(info));
        let encodes = AtomicUsize::new(0);
        let boxes: Vec<Arc<Keep>> = (0..3).map(|_| Arc::default()).collect();
        for b in &boxes {
            let tx = Tx::Outbox(b.clone());
            tx.send_event(&event, &TEXT, |_| {
                encodes.fetch_add(1, Ordering::Relaxed);
                "joined".into()
            })
            .unwrap();
            tx.send_joined(BytesMut::from(&b"head "[..]), &Bytes::from_static(b"part"), |o| o.encode("part"))
                .unwrap();
        }
        assert_eq!(encodes.load(Ordering::Relaxed), 1);
        let first: Vec<Vec<Bytes>> = boxes.iter().map(|b| b.0.lock().unwrap().clone()).collect();
        assert_eq!(first[0], [Bytes::from_static(b"JOINED"), Bytes::from_static(b"HEAD PART")]);
        // The very same bytes for every outbox, not copies.
        assert!(first.iter().all(|m| m[0].as_ptr() == first[0][0].as_ptr()));
    }

    /// An outbox that takes WebSocket frames (as an Engine.IO session does).
    #[derive(Default)]
    struct Frames(Mutex<Vec<PreparedFrame>>);

    impl Outbox for Frames {
        fn buffered_amount(&self) -> usize {
            0
        }
        fn encode(&self, text: &str) -> Bytes {
            Bytes::copy_from_slice(text.as_bytes())
        }
        fn send_encoded(&self, _: Bytes) -> bool {
            panic!("shared messages go as frames")
        }
        fn close(&self, _: u16, _: &str) -> bool {
            true
        }
        fn takes_frames(&self) -> bool {
            true
        }
        fn send_frame(&self, frame: &PreparedFrame) -> bool {
            self.0.lock().unwrap().push(frame.clone());
            true
        }
    }

    #[test]
    fn outboxes_that_take_frames_share_one() {
        static SIO: TextEncoding = TextEncoding::new("test-frames");
        let info = Arc::new(ClientInfo { client: "c1".into(), user: "u".into(), anonymous: false });
        let event = Event::new("room".into(), Push::Join(info));
        let encodes = AtomicUsize::new(0);
        let boxes: Vec<Arc<Frames>> = (0..3).map(|_| Arc::default()).collect();
        for b in &boxes {
            let n = Tx::Outbox(b.clone())
                .send_event(&event, &SIO, |_| {
                    encodes.fetch_add(1, Ordering::Relaxed);
                    "42[\"join\"]".into()
                })
                .unwrap();
            assert_eq!(n, 10);
        }
        assert_eq!(encodes.load(Ordering::Relaxed), 1);
        let frames: Vec<PreparedFrame> = boxes.iter().map(|b| b.0.lock().unwrap()[0].clone()).collect();
        assert!(frames[0].wire().ends_with(b"42[\"join\"]"));
        assert!(frames.iter().all(|f| f.wire().as_ptr() == frames[0].wire().as_ptr()), "one frame, shared");
    }
}

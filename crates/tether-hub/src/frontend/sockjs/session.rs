//! A SockJS session: what the application sent and no receiving request has taken yet,
//! the messages from the client on their way to the application, and the receiving
//! request (at most one at a time). A receiving request is an HTTP response body
//! ([`Receiver`]) or a WebSocket ([`run_framed`]); both drain the session the same way.

use super::frame::{self, Transport};
use crate::session::link::Outbox;
use bytes::Bytes;
use futures_util::StreamExt;
use http_body::Frame as BodyFrame;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Duration;
use tether::{CloseCode, Message, WebSocket};
use tokio::sync::mpsc;
use tokio::time::{Instant, Sleep};

/// Messages from the client that may wait for the application, per session.
pub(crate) const INBOX: usize = 64;

/// The close a session gets when its receiving request went away before it ended.
pub(crate) const INTERRUPTED: (u16, &str) = (1002, "Connection interrupted");
/// The answer to a second receiving request while one is open.
pub(crate) const BUSY: (u16, &str) = (2010, "Another connection still open");

/// One SockJS session.
pub(crate) struct SockJsSession {
    state: Mutex<State>,
    /// Where the client's messages go (`None` once the session is closed).
    inbox: Mutex<Option<mpsc::Sender<Message>>>,
    /// Bytes queued for the client beyond which the session is closed (slow consumer).
    max_queued: usize,
}

struct State {
    /// Messages waiting for a receiver, as escaped JSON string contents (no quotes), and
    /// their total length.
    queue: Vec<Bytes>,
    queued: usize,
    /// Whether the open frame went out.
    opened: bool,
    /// The close frame, once the session is closed.
    closed: Option<Bytes>,
    /// Whether a receiving request is attached, and its waker.
    attached: bool,
    waker: Option<Waker>,
    /// Since when no receiver has been attached (for expiry).
    idle_since: Instant,
}

/// What a receiver takes from the session.
pub(crate) enum Out {
    /// The open frame.
    Open,
    /// Messages, as escaped JSON string contents.
    Messages(Vec<Bytes>),
    /// The close frame (`c[…]`).
    Close(Bytes),
}

/// What a new receiving request finds.
pub(crate) enum Attach {
    /// It is the session's receiver now.
    Attached,
    /// The session is closed: only its close frame.
    Closed(Bytes),
    /// Another receiver is attached.
    Busy,
}

/// The SockJS session's slow-consumer code and reason, as the hub's gate uses.
const SLOW: (u16, &str) = (crate::codes::close::SLOW_CONSUMER, "slow consumer");

impl SockJsSession {
    /// A new session and the receiving end of its client's messages.
    pub(crate) fn new(max_queued: usize) -> (Arc<Self>, mpsc::Receiver<Message>) {
        let (tx, rx) = mpsc::channel(INBOX);
        let state = State {
            queue: Vec::new(),
            queued: 0,
            opened: false,
            closed: None,
            attached: false,
            waker: None,
            idle_since: Instant::now(),
        };
        let s = Self { state: Mutex::new(state), inbox: Mutex::new(Some(tx)), max_queued };
        (Arc::new(s), rx)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Bytes waiting for a receiver.
    pub(crate) fn buffered_amount(&self) -> usize {
        self.lock().queued
    }

    /// Queues a message given as escaped JSON string contents; `false` when the session is
    /// closed (or is being closed now because it is over its queue limit).
    pub(crate) fn send_escaped(&self, literal: Bytes) -> bool {
        let mut st = self.lock();
        if st.closed.is_some() {
            return false;
        }
        if st.queued + literal.len() > self.max_queued {
            drop(st);
            tracing::info!("slow SockJS session closed");
            self.close(SLOW.0, SLOW.1);
            return false;
        }
        st.queued += literal.len();
        st.queue.push(literal);
        wake(&mut st);
        true
    }

    /// Closes the session with `code` and `reason`: receivers get `c[code,"reason"]` (after
    /// what was queued), the application's stream of messages ends. `false` if it was
    /// closed already.
    pub(crate) fn close(&self, code: u16, reason: &str) -> bool {
        let mut st = self.lock();
        if st.closed.is_some() {
            return false;
        }
        st.closed = Some(frame::close(code, reason).into());
        wake(&mut st);
        drop(st);
        self.inbox.lock().unwrap_or_else(|e| e.into_inner()).take();
        true
    }

    /// A sender of the client's messages to the application, while the session is open.
    pub(crate) fn inbox(&self) -> Option<mpsc::Sender<Message>> {
        self.inbox.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Makes a new receiving request the session's receiver, if it can be.
    pub(crate) fn attach(&self) -> Attach {
        let mut st = self.lock();
        if st.attached {
            return Attach::Busy;
        }
        if let (Some(c), true) = (&st.closed, st.queue.is_empty()) {
            return Attach::Closed(c.clone());
        }
        st.attached = true;
        Attach::Attached
    }

    /// The receiver is done (`interrupted`: it went away before it ended).
    pub(crate) fn detach(&self, interrupted: bool) {
        let mut st = self.lock();
        st.attached = false;
        st.waker = None;
        st.idle_since = Instant::now();
        drop(st);
        if interrupted {
            self.close(INTERRUPTED.0, INTERRUPTED.1);
        }
    }

    /// Whether no receiver has been attached for `delay` (the session may go).
    pub(crate) fn expired(&self, delay: Duration) -> bool {
        let st = self.lock();
        !st.attached && st.idle_since.elapsed() >= delay
    }

    /// What the attached receiver sends next, if anything is ready: the open frame first,
    /// then messages, then the close frame.
    pub(crate) fn poll_out(&self, cx: &mut Context<'_>) -> Poll<Out> {
        let mut st = self.lock();
        if !st.opened {
            st.opened = true;
            return Poll::Ready(Out::Open);
        }
        if !st.queue.is_empty() {
            st.queued = 0;
            return Poll::Ready(Out::Messages(std::mem::take(&mut st.queue)));
        }
        if let Some(c) = &st.closed {
            return Poll::Ready(Out::Close(c.clone()));
        }
        st.waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

impl Outbox for SockJsSession {
    fn buffered_amount(&self) -> usize {
        SockJsSession::buffered_amount(self)
    }
    fn encode(&self, text: &str) -> Bytes {
        frame::escape(text).into()
    }
    fn send_encoded(&self, message: Bytes) -> bool {
        self.send_escaped(message)
    }
    fn close(&self, code: u16, reason: &str) -> bool {
        SockJsSession::close(self, code, reason)
    }
}

fn wake(st: &mut State) {
    if let Some(w) = st.waker.take() {
        w.wake();
    }
}

/// The body of a receiving response: frames in the transport's envelope until the
/// response ends (after one frame when polling, at the response limit or the close when
/// streaming). Dropped before its end, it closes the session with 1002.
pub(crate) struct Receiver {
    session: Option<Arc<SockJsSession>>,
    transport: Transport,
    prelude: Option<Bytes>,
    /// Frames to send before (or, with no session, instead of) the session's.
    fixed: Vec<Bytes>,
    sent: usize,
    limit: usize,
    heartbeat: Pin<Box<Sleep>>,
    every: Duration,
    done: bool,
}

impl Receiver {
    /// A receiver attached to `session`.
    pub(crate) fn attached(
        session: Arc<SockJsSession>,
        transport: Transport,
        limit: usize,
        every: Duration,
    ) -> Self {
        let prelude = transport.prelude();
        Self {
            session: Some(session),
            transport,
            prelude,
            fixed: Vec::new(),
            sent: 0,
            limit,
            heartbeat: Box::pin(tokio::time::sleep(every)),
            every,
            done: false,
        }
    }

    /// A response of one frame (a close frame) without a session.
    pub(crate) fn only(frame: Bytes, transport: Transport) -> Self {
        let prelude = transport.prelude();
        Self {
            session: None,
            transport,
            prelude,
            fixed: vec![frame],
            sent: 0,
            limit: 0,
            heartbeat: Box::pin(tokio::time::sleep(Duration::ZERO)),
            every: Duration::ZERO,
            done: false,
        }
    }

    /// Wraps a frame and counts it; ends the response when it should end.
    fn emit(&mut self, frame: &[u8], last: bool) -> Bytes {
        let out = self.transport.wrap(frame);
        self.sent += out.len();
        if last || !self.transport.streaming() || self.sent >= self.limit {
            self.finish();
        } else {
            self.heartbeat.as_mut().reset(Instant::now() + self.every);
        }
        out
    }

    fn finish(&mut self) {
        self.done = true;
        if let Some(s) = self.session.take() {
            s.detach(false);
        }
    }
}

impl http_body::Body for Receiver {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<BodyFrame<Bytes>, Infallible>>> {
        let this = &mut *self;
        if let Some(p) = this.prelude.take() {
            return Poll::Ready(Some(Ok(BodyFrame::data(p))));
        }
        if this.done {
            return Poll::Ready(None);
        }
        if !this.fixed.is_empty() {
            let f = this.fixed.remove(0);
            let last = this.session.is_none() && this.fixed.is_empty();
            return Poll::Ready(Some(Ok(BodyFrame::data(this.emit(&f, last)))));
        }
        let Some(session) = this.session.clone() else { return Poll::Ready(None) };
        let out = match session.poll_out(cx) {
            Poll::Ready(Out::Open) => this.emit(frame::OPEN, false),
            Poll::Ready(Out::Messages(parts)) => this.emit(&frame::messages(&parts), false),
            Poll::Ready(Out::Close(c)) => this.emit(&c, true),
            Poll::Pending => match this.heartbeat.as_mut().poll(cx) {
                Poll::Ready(()) => this.emit(frame::HEARTBEAT, false),
                Poll::Pending => return Poll::Pending,
            },
        };
        Poll::Ready(Some(Ok(BodyFrame::data(out))))
    }

    fn is_end_stream(&self) -> bool {
        self.done && self.prelude.is_none()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        if let Some(s) = self.session.take() {
            // The client (or the connection) went away while this request was its
            // receiver: what was taken may be lost, so the session ends (the protocol's
            // 1002 "Connection interrupted").
            s.detach(true);
        }
    }
}

/// Runs the `websocket` transport: SockJS frames as WebSocket text messages, for a session
/// of its own that lives as long as the connection. Messages from the client are JSON
/// arrays of strings (or one string); an empty message is ignored, broken JSON ends the
/// connection at once.
pub(crate) async fn run_framed(ws: WebSocket, session: Arc<SockJsSession>, every: Duration) {
    let (write, mut read) = ws.split();
    let sender = write.sender();
    let mut beat = tokio::time::interval_at(Instant::now() + every, every);
    beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let inbox = session.inbox();
    loop {
        let out = std::future::poll_fn(|cx| session.poll_out(cx));
        tokio::select! {
            out = out => {
                let (text, last) = match out {
                    Out::Open => (frame::OPEN.to_vec(), false),
                    Out::Messages(parts) => (frame::messages(&parts), false),
                    Out::Close(c) => (c.to_vec(), true),
                };
                let text = String::from_utf8(text).unwrap_or_default();
                if sender.send(Message::text(text)).await.is_err() {
                    break;
                }
                if last {
                    let _ = sender.send_close(CloseCode::NORMAL, "");
                    // Let the close handshake finish (the read side ends with it).
                    while read.next().await.is_some() {}
                    return;
                }
            }
            _ = beat.tick() => {
                if sender.start_send(Message::text("h")).is_err() {
                    break;
                }
            }
            msg = read.next() => {
                let data = match msg {
                    Some(Ok(Message::Text(t))) => t.into_bytes(),
                    Some(Ok(Message::Binary(b))) => b,
                    Some(Ok(_)) => continue,
                    _ => break,
                };
                if data.is_empty() {
                    continue;
                }
                let Ok(messages) = frame::parse_send(&data) else {
                    tracing::debug!("broken JSON on a SockJS WebSocket: connection dropped");
                    session.close(INTERRUPTED.0, INTERRUPTED.1);
                    return;
                };
                if let Some(inbox) = &inbox {
                    for m in messages {
                        if inbox.send(Message::text(m)).await.is_err() {
                            break;
                        }
                    }
                }
            }
        }
    }
    session.close(INTERRUPTED.0, INTERRUPTED.1);
}

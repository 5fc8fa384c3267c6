//! [`SharedWebSocket`]: a [`WebSocketStream`] read by one task and written from any,
//! straight into the socket.

use crate::stream::{queue, TryWrite};
use crate::{Error, Message, WebSocketStream};
use futures_core::Stream;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use tether_proto::frame::PreparedFrame;
use tether_proto::{CloseCode, Closed, Stats};
use tokio::io::{AsyncRead, AsyncWrite};

/// A WebSocket connection read by the task that polls it and written by any task through
/// [`SharedSender`]s, for servers that push the same message to many connections (a
/// pub/sub hub's fan-out).
///
/// A send does its own write: it queues the frame and writes the socket at once, without a
/// task context, while nothing else is waiting to be written; so a delivery costs one
/// write and no task wake-up. What the socket does not take stays queued, and the reading
/// task, woken once, writes it when the socket can take more. On a socket that cannot be
/// written this way (TLS), sends queue and wake the reading task instead.
///
/// As with [`WebSocketStream`], the connection makes progress only while it is polled:
/// the reading task must keep polling (it answers pings, runs the timers and writes what
/// the socket did not take at once). It is obtained with [`WebSocketStream::into_shared`].
pub struct SharedWebSocket<S> {
    inner: Arc<Inner<S>>,
}

/// A handle that sends on a [`SharedWebSocket`]; cheap to clone, usable from any task.
pub struct SharedSender<S> {
    inner: Arc<Inner<S>>,
}

impl<S> Clone for SharedSender<S> {
    fn clone(&self) -> Self {
        Self { inner: self.inner.clone() }
    }
}

impl<S> std::fmt::Debug for SharedWebSocket<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedWebSocket")
            .field("buffered", &self.inner.buffered.load(Ordering::Relaxed))
            .finish()
    }
}

impl<S> std::fmt::Debug for SharedSender<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedSender")
            .field("buffered", &self.inner.buffered.load(Ordering::Relaxed))
            .finish()
    }
}

struct Inner<S> {
    state: Mutex<State<S>>,
    /// `buffered_amount()` as of the last operation, read without the lock.
    buffered: AtomicUsize,
}

struct State<S> {
    ws: WebSocketStream<S>,
    /// The reading task, once it has polled.
    reader: Option<Waker>,
}

impl<S> Inner<S> {
    fn lock(&self) -> MutexGuard<'_, State<S>> {
        // The state is consistent between calls: a panic cannot leave it half-changed in a
        // way that matters more than the panic itself.
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> State<S> {
    fn wake_reader(&self) {
        if let Some(w) = &self.reader {
            w.wake_by_ref();
        }
    }
}

impl<S: AsyncRead + AsyncWrite + TryWrite + Unpin> WebSocketStream<S> {
    /// This connection as a [`SharedWebSocket`]: the stream to read it, with
    /// [`SharedWebSocket::sender`] for the tasks that write to it.
    pub fn into_shared(self) -> SharedWebSocket<S> {
        let buffered = AtomicUsize::new(self.buffered_amount());
        SharedWebSocket {
            inner: Arc::new(Inner { state: Mutex::new(State { ws: self, reader: None }), buffered }),
        }
    }
}

impl<S: AsyncRead + AsyncWrite + TryWrite + Unpin> SharedWebSocket<S> {
    /// A sender for this connection.
    pub fn sender(&self) -> SharedSender<S> {
        SharedSender { inner: self.inner.clone() }
    }

    /// The subprotocol agreed in the handshake.
    pub fn protocol(&self) -> Option<String> {
        self.inner.lock().ws.protocol().map(str::to_owned)
    }

    /// Whether permessage-deflate was negotiated.
    pub fn deflate(&self) -> bool {
        self.inner.lock().ws.deflate()
    }
}

impl<S: AsyncRead + AsyncWrite + TryWrite + Unpin> Stream for SharedWebSocket<S> {
    type Item = Result<Message, Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let inner = &self.inner;
        let mut st = inner.lock();
        match &st.reader {
            Some(w) if w.will_wake(cx.waker()) => {}
            _ => st.reader = Some(cx.waker().clone()),
        }
        let r = st.ws.next_message(cx);
        inner.buffered.store(st.ws.buffered_amount(), Ordering::Relaxed);
        r
    }
}

impl<S: AsyncRead + AsyncWrite + TryWrite + Unpin> SharedSender<S> {
    /// Queues with `f`, then writes what the socket takes now; the reading task is woken
    /// for the rest.
    fn send_with(&self, f: impl FnOnce(&mut WebSocketStream<S>) -> Result<(), Error>) -> Result<(), Error> {
        let mut st = self.inner.lock();
        let st = &mut *st;
        f(&mut st.ws)?;
        // A write that fails is the reader's to report: its next poll meets the same error.
        if !matches!(st.ws.write_now(), Ok(true)) {
            st.wake_reader();
        }
        self.inner.buffered.store(st.ws.buffered_amount(), Ordering::Relaxed);
        Ok(())
    }

    /// Sends a frame encoded once for many connections.
    ///
    /// # Errors
    ///
    /// [`UsageError::Closed`](tether_proto::UsageError::Closed) once the connection is closing or closed.
    pub fn send_prepared(&self, frame: &PreparedFrame) -> Result<(), Error> {
        self.send_with(|ws| ws.core().send_prepared(frame).map_err(Error::from))
    }

    /// Sends a message without waiting, however much is queued (compressed where deflate
    /// was negotiated).
    ///
    /// # Errors
    ///
    /// [`UsageError::Closed`](tether_proto::UsageError::Closed) once the connection is closing or closed.
    pub fn start_send(&self, msg: Message) -> Result<(), Error> {
        self.send_with(|ws| queue(ws.core(), msg))
    }

    /// Sends a message, first waiting while `send_buffer_limit` bytes or more are queued.
    /// Meant for the reading task (replies to what it read): the wait is for the socket,
    /// which registers one task for writability at a time.
    ///
    /// # Errors
    ///
    /// As [`start_send`](Self::start_send), and an I/O error while waiting.
    pub async fn send(&self, msg: Message) -> Result<(), Error> {
        std::future::poll_fn(|cx| self.poll_ready(cx)).await?;
        self.start_send(msg)
    }

    fn poll_ready(&self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        let mut st = self.inner.lock();
        let limit = st.ws.send_buffer_limit();
        let r = loop {
            if st.ws.buffered_amount() < limit {
                break Poll::Ready(Ok(()));
            }
            match st.ws.poll_write_out(cx) {
                Poll::Pending => break Poll::Pending,
                Poll::Ready(Err(e)) => break Poll::Ready(Err(e.into())),
                Poll::Ready(Ok(())) => {}
            }
        };
        if r.is_ready() && st.ws.buffered_amount() > 0 {
            // This task may have taken the socket's write registration from the reader.
            st.wake_reader();
        }
        self.inner.buffered.store(st.ws.buffered_amount(), Ordering::Relaxed);
        r
    }

    /// Starts the close handshake with `code` and `reason`.
    ///
    /// # Errors
    ///
    /// [`UsageError::Closed`](tether_proto::UsageError::Closed) when a close was sent already.
    pub fn send_close(&self, code: CloseCode, reason: impl Into<String>) -> Result<(), Error> {
        let reason = reason.into();
        self.send_with(|ws| ws.core().close(code, &reason).map_err(Error::from))?;
        // The reader runs the rest: the close timeout, the end of the transport.
        self.inner.lock().wake_reader();
        Ok(())
    }

    /// Bytes queued and not yet written, as of the last operation on the connection.
    pub fn buffered_amount(&self) -> usize {
        self.inner.buffered.load(Ordering::Relaxed)
    }

    /// Counters of bytes and messages in both directions.
    pub fn stats(&self) -> Stats {
        self.inner.lock().ws.stats()
    }

    /// How the connection ended, once it has.
    pub fn close_status(&self) -> Option<Closed> {
        self.inner.lock().ws.close_status()
    }

    /// Whether the connection is closing or closed (nothing more can be sent).
    pub fn is_closed(&self) -> bool {
        !self.inner.lock().ws.is_open()
    }
}

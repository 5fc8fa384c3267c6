//! [`WebSocket`], its halves, and the cloneable [`Sender`].

use crate::driver::Command;
use crate::{Error, Message};
use futures_core::Stream;
use futures_sink::Sink;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use tether_proto::{CloseCode, Closed, Stats, UsageError};
use tokio::sync::mpsc;

/// State shared between the handles and the driver task.
#[derive(Debug)]
pub(crate) struct Shared {
    /// Bytes accepted by senders and not yet taken by the driver.
    pub(crate) queued: AtomicUsize,
    /// Bytes in the driver (protocol queue and write buffer) not yet written to the socket.
    pub(crate) pending: AtomicUsize,
    /// Above this many buffered bytes, senders wait.
    pub(crate) limit: usize,
    /// Senders waiting for room or for a flush.
    pub(crate) waiters: Mutex<Vec<Waker>>,
    pub(crate) has_waiters: AtomicBool,
    /// Set once the driver has ended.
    pub(crate) finished: AtomicBool,
    pub(crate) closed: Mutex<Option<Closed>>,
    pub(crate) protocol: Option<String>,
    pub(crate) deflate: bool,
    /// The protocol core's counters, copied by the driver after every step.
    pub(crate) stats: Mutex<Stats>,
}

impl Shared {
    pub(crate) fn new(limit: usize, protocol: Option<String>, deflate: bool) -> Self {
        Self {
            queued: AtomicUsize::new(0),
            pending: AtomicUsize::new(0),
            limit,
            waiters: Mutex::new(Vec::new()),
            has_waiters: AtomicBool::new(false),
            finished: AtomicBool::new(false),
            closed: Mutex::new(None),
            protocol,
            deflate,
            stats: Mutex::new(Stats::default()),
        }
    }

    pub(crate) fn buffered(&self) -> usize {
        self.queued.load(Ordering::Acquire) + self.pending.load(Ordering::Acquire)
    }

    /// Wakes every waiting sender; they re-check their condition.
    pub(crate) fn wake_all(&self) {
        if self.has_waiters.swap(false, Ordering::AcqRel) {
            let wakers = std::mem::take(&mut *self.waiters.lock().unwrap_or_else(|e| e.into_inner()));
            wakers.into_iter().for_each(Waker::wake);
        }
    }

    /// Parks `cx` until the driver makes progress, unless `ready` already holds.
    fn wait_until(&self, cx: &mut Context<'_>, ready: impl Fn(&Self) -> bool) -> Poll<()> {
        if ready(self) || self.finished.load(Ordering::Acquire) {
            return Poll::Ready(());
        }
        {
            let mut w = self.waiters.lock().unwrap_or_else(|e| e.into_inner());
            if !w.iter().any(|x| x.will_wake(cx.waker())) {
                w.push(cx.waker().clone());
            }
            self.has_waiters.store(true, Ordering::Release);
        }
        // Re-check: the driver may have made progress before we registered.
        if ready(self) || self.finished.load(Ordering::Acquire) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

/// A cloneable handle that sends on a connection from any task.
///
/// Sending waits while more than `send_buffer_limit` bytes are queued and unsent
/// (backpressure); [`buffered_amount`](Self::buffered_amount) tells how many there are.
#[derive(Debug, Clone)]
pub struct Sender {
    tx: mpsc::UnboundedSender<Command>,
    shared: Arc<Shared>,
}

impl Sender {
    pub(crate) fn new(tx: mpsc::UnboundedSender<Command>, shared: Arc<Shared>) -> Self {
        Self { tx, shared }
    }

    /// Queued bytes not yet written to the socket, like the browser's `bufferedAmount`.
    pub fn buffered_amount(&self) -> usize {
        self.shared.buffered()
    }

    /// Waits until there is room under the send buffer limit.
    pub fn poll_ready(&self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        let limit = self.shared.limit;
        match self.shared.wait_until(cx, |s| s.buffered() < limit) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(()) if self.shared.finished.load(Ordering::Acquire) => {
                Poll::Ready(Err(UsageError::Closed.into()))
            }
            Poll::Ready(()) => Poll::Ready(Ok(())),
        }
    }

    /// Queues a message without waiting for room. Use after [`poll_ready`](Self::poll_ready),
    /// or when going over the limit is acceptable.
    ///
    /// # Errors
    ///
    /// [`UsageError::Closed`] when the connection has ended.
    pub fn start_send(&self, msg: Message) -> Result<(), Error> {
        let cmd = match msg {
            Message::Close(frame) => {
                let (code, reason) = crate::message::close_parts(frame);
                Command::Close(code, reason)
            }
            msg => return self.enqueue(msg, true),
        };
        self.tx.send(cmd).map_err(|_| Error::Usage(UsageError::Closed))
    }

    /// Queues a data or ping/pong message, counting it in `buffered_amount`.
    fn enqueue(&self, msg: Message, compress: bool) -> Result<(), Error> {
        self.shared.queued.fetch_add(msg.len(), Ordering::AcqRel);
        self.tx.send(Command::Send(msg, compress)).map_err(|_| Error::Usage(UsageError::Closed))
    }

    /// Queues a frame encoded once for many connections ([`PreparedFrame`]), without waiting
    /// for room: the caller decides what to do with a connection whose
    /// [`buffered_amount`](Self::buffered_amount) grows too large (a hub disconnects it).
    ///
    /// [`PreparedFrame`]: tether_proto::frame::PreparedFrame
    ///
    /// # Errors
    ///
    /// [`UsageError::Closed`] when the connection has ended.
    pub fn send_prepared(&self, frame: &tether_proto::frame::PreparedFrame) -> Result<(), Error> {
        self.shared.queued.fetch_add(frame.wire().len(), Ordering::AcqRel);
        self.tx.send(Command::Prepared(frame.clone())).map_err(|_| Error::Usage(UsageError::Closed))
    }

    /// Sends a message that is never compressed, even with permessage-deflate on: for data
    /// that is already compressed, or secrets that share a message with attacker-chosen text
    /// (compression leaks their length, as in CRIME/BREACH).
    ///
    /// # Errors
    ///
    /// [`UsageError::Closed`] when the connection has ended.
    pub async fn send_uncompressed(&self, msg: Message) -> Result<(), Error> {
        std::future::poll_fn(|cx| self.poll_ready(cx)).await?;
        if !msg.is_data() {
            return self.start_send(msg);
        }
        self.enqueue(msg, false)
    }

    /// Counters of bytes and messages in both directions (wire bytes and payload bytes
    /// differ when permessage-deflate compresses).
    pub fn stats(&self) -> Stats {
        *self.shared.stats.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sends a message, waiting first while the send buffer is over its limit.
    ///
    /// # Errors
    ///
    /// [`UsageError::Closed`] when the connection has ended.
    ///
    /// # Cancel safety
    ///
    /// Cancelling before it completes sends nothing.
    pub async fn send(&self, msg: Message) -> Result<(), Error> {
        std::future::poll_fn(|cx| self.poll_ready(cx)).await?;
        self.start_send(msg)
    }

    /// Starts the close handshake with `code` and `reason`.
    ///
    /// # Errors
    ///
    /// [`UsageError::Closed`] when the connection has ended. A code that may not be sent
    /// (1005, 1006, 1015, ...) is reported on the stream as a usage error.
    pub fn send_close(&self, code: CloseCode, reason: impl Into<String>) -> Result<(), Error> {
        self.tx.send(Command::Close(code, reason.into())).map_err(|_| Error::Usage(UsageError::Closed))
    }

    /// Waits until everything queued so far has been written to the socket.
    pub fn poll_flush(&self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.shared.wait_until(cx, |s| s.buffered() == 0).map(Ok)
    }

    /// Waits until the connection has ended.
    pub fn poll_finished(&self, cx: &mut Context<'_>) -> Poll<()> {
        self.shared.wait_until(cx, |s| s.finished.load(Ordering::Acquire))
    }
}

/// The receiving half: a `Stream` of messages ending with [`Message::Close`] or an error.
#[derive(Debug)]
pub struct ReadHalf {
    rx: mpsc::Receiver<Result<Message, Error>>,
    shared: Arc<Shared>,
    /// Tells the driver when the peer's close has been read.
    tx: mpsc::UnboundedSender<Command>,
}

/// The sending half: a `Sink` of messages. [`WriteHalf::sender`] gives cloneable handles.
#[derive(Debug)]
pub struct WriteHalf {
    sender: Sender,
    close_sent: bool,
}

impl WriteHalf {
    /// A cloneable handle for sending from other tasks.
    pub fn sender(&self) -> Sender {
        self.sender.clone()
    }

    /// Queued bytes not yet written to the socket.
    pub fn buffered_amount(&self) -> usize {
        self.sender.buffered_amount()
    }
}

impl Stream for ReadHalf {
    type Item = Result<Message, Error>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let item = std::task::ready!(self.rx.poll_recv(cx));
        if let Some(Ok(Message::Close(_)) | Err(_)) = &item {
            let _ = self.tx.send(Command::CloseRead);
        }
        Poll::Ready(item)
    }
}

impl Sink<Message> for WriteHalf {
    type Error = Error;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.sender.poll_ready(cx)
    }

    fn start_send(mut self: Pin<&mut Self>, item: Message) -> Result<(), Error> {
        if matches!(item, Message::Close(_)) {
            self.close_sent = true;
        }
        self.sender.start_send(item)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.sender.poll_flush(cx)
    }

    /// Starts the close handshake (1000) unless a close was sent already, and waits until
    /// the connection has ended.
    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        if !self.close_sent {
            self.close_sent = true;
            // The driver may be gone already; that is the outcome we want.
            let _ = self.sender.send_close(CloseCode::NORMAL, "");
        }
        self.sender.poll_finished(cx).map(Ok)
    }
}

/// A WebSocket connection: a `Stream` of received [`Message`]s and a `Sink` for sending.
///
/// A background task per connection owns the socket: it answers pings, runs timers and the
/// close handshake even while the application is busy elsewhere. When the application stops
/// reading, the task stops reading the socket too (TCP applies the backpressure).
#[derive(Debug)]
pub struct WebSocket {
    read: ReadHalf,
    write: WriteHalf,
}

impl WebSocket {
    pub(crate) fn new(
        rx: mpsc::Receiver<Result<Message, Error>>,
        tx: mpsc::UnboundedSender<Command>,
        shared: Arc<Shared>,
    ) -> Self {
        let sender = Sender::new(tx.clone(), shared.clone());
        Self { read: ReadHalf { rx, shared, tx }, write: WriteHalf { sender, close_sent: false } }
    }

    /// Splits into halves usable from different tasks.
    pub fn split(self) -> (WriteHalf, ReadHalf) {
        (self.write, self.read)
    }

    /// A cloneable handle for sending from other tasks.
    pub fn sender(&self) -> Sender {
        self.write.sender()
    }

    /// Queued bytes not yet written to the socket, like the browser's `bufferedAmount`.
    pub fn buffered_amount(&self) -> usize {
        self.write.buffered_amount()
    }

    /// The subprotocol agreed in the handshake.
    pub fn protocol(&self) -> Option<&str> {
        self.read.shared.protocol.as_deref()
    }

    /// Whether permessage-deflate was negotiated.
    pub fn deflate(&self) -> bool {
        self.read.shared.deflate
    }

    /// Counters of bytes and messages in both directions.
    pub fn stats(&self) -> Stats {
        self.write.sender.stats()
    }

    /// How the connection ended (code, reason, who started the close, whether it was
    /// clean), once it has.
    pub fn close_status(&self) -> Option<Closed> {
        self.read.close_status()
    }

    /// Starts the close handshake.
    ///
    /// # Errors
    ///
    /// [`UsageError::Closed`] when the connection has ended already.
    pub fn send_close(&self, code: CloseCode, reason: impl Into<String>) -> Result<(), Error> {
        self.write.sender.send_close(code, reason)
    }
}

impl ReadHalf {
    /// How the connection ended, once it has.
    pub fn close_status(&self) -> Option<Closed> {
        self.shared.closed.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl Stream for WebSocket {
    type Item = Result<Message, Error>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        Pin::new(&mut self.read).poll_next(cx)
    }
}

impl Sink<Message> for WebSocket {
    type Error = Error;
    fn poll_ready(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        Pin::new(&mut self.write).poll_ready(cx)
    }
    fn start_send(mut self: Pin<&mut Self>, item: Message) -> Result<(), Error> {
        Pin::new(&mut self.write).start_send(item)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        Pin::new(&mut self.write).poll_flush(cx)
    }
    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        Pin::new(&mut self.write).poll_close(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync>() {}
    fn assert_send<T: Send>() {}

    #[test]
    fn handles_are_send() {
        assert_send_sync::<Sender>();
        assert_send_sync::<WriteHalf>();
        assert_send::<ReadHalf>();
        assert_send::<WebSocket>();
    }
}

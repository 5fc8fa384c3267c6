//! [`SharedWebSocket`]: a [`WebSocketStream`] read by one task and written from any,
//! straight into the socket; [`Cork`]: writes that wait for the end of a batch.

use crate::stream::{queue, TryWrite};
use crate::{Error, Message, WebSocketStream};
use futures_core::Stream;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};
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
/// the socket did not take at once). It is obtained with [`WebSocketStream::into_shared`]
/// (or [`into_corked`](WebSocketStream::into_corked), for [`SharedSender::feed_prepared`]),
/// or [`Opened::shared`](crate::Opened::shared).
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
    /// Where [`SharedSender::feed_prepared`] leaves the write.
    cork: Option<Cork>,
}

struct State<S> {
    ws: WebSocketStream<S>,
    /// The reading task, once it has polled.
    reader: Option<Waker>,
    /// Fed, and on the cork's list for its next flush.
    corked: bool,
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
        self.into_shared_with(None)
    }

    /// The same, with the [`Cork`] that [`SharedSender::feed_prepared`] leaves its writes to.
    pub fn into_corked(self, cork: &Cork) -> SharedWebSocket<S> {
        self.into_shared_with(Some(cork.clone()))
    }

    fn into_shared_with(self, cork: Option<Cork>) -> SharedWebSocket<S> {
        let buffered = AtomicUsize::new(self.buffered_amount());
        let state = Mutex::new(State { ws: self, reader: None, corked: false });
        SharedWebSocket { inner: Arc::new(Inner { state, buffered, cork }) }
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
        if r.is_pending() && !st.corked {
            // Quiet now (the reader is polled when the peer sends, on a timer, or to write
            // what a send could not): an idle connection keeps no write buffers.
            st.ws.release_output();
        }
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

    /// Queues a frame encoded once for many connections and leaves the write to the
    /// connection's [`Cork`], which writes everything fed to a connection in one go once
    /// the feeding task yields: several messages fed in a row (a burst of publications)
    /// then cost one write. Without a cork (made by
    /// [`into_shared`](WebSocketStream::into_shared)), the same as
    /// [`send_prepared`](Self::send_prepared).
    ///
    /// # Errors
    ///
    /// [`UsageError::Closed`](tether_proto::UsageError::Closed) once the connection is closing or closed.
    pub fn feed_prepared(&self, frame: &PreparedFrame) -> Result<(), Error>
    where
        S: Send + 'static,
    {
        self.feed_with(|ws| ws.core().send_prepared(frame).map_err(Error::from))
    }

    /// Queues the frames `f` gives its [`FeedBatch`], as that many
    /// [`feed_prepared`](Self::feed_prepared) calls would, under one lock of the
    /// connection: a fan-out that has several messages for a connection (a burst of
    /// publications) then takes and releases the lock once for all of them, and tells the
    /// cork once. Each of those operations is an atomic instruction, which waits for every
    /// memory access before it, so a lock per message made the fan-out wait for each
    /// message's first touch of the connection's queue in turn. `f` sees the bytes queued
    /// as it goes ([`FeedBatch::buffered_amount`]), to stop at a limit. Returns what `f`
    /// returns. `f` runs under the connection's lock: it must not send on this connection
    /// by other means (a close, say), which would wait for that lock forever; do that after.
    pub fn feed_batch<R>(&self, f: impl FnOnce(&mut FeedBatch<'_, S>) -> R) -> R
    where
        S: Send + 'static,
    {
        let mut st = self.inner.lock();
        let st = &mut *st;
        let mut batch = FeedBatch { ws: &mut st.ws, fed: 0 };
        let r = f(&mut batch);
        let fed = batch.fed;
        if fed > 0 {
            match &self.inner.cork {
                Some(cork) => {
                    cork.inner.fed.fetch_add(fed, Ordering::Relaxed);
                    if !st.corked {
                        st.corked = true;
                        cork.add(self.inner.clone());
                    }
                }
                None => {
                    // As `send_with`: the reader reports a write that fails.
                    if !matches!(st.ws.write_now(), Ok(true)) {
                        st.wake_reader();
                    }
                }
            }
        }
        self.inner.buffered.store(st.ws.buffered_amount(), Ordering::Relaxed);
        r
    }

    /// Queues a message and leaves the write to the connection's [`Cork`], as
    /// [`feed_prepared`](Self::feed_prepared) does; without a cork, the same as
    /// [`start_send`](Self::start_send).
    ///
    /// # Errors
    ///
    /// [`UsageError::Closed`](tether_proto::UsageError::Closed) once the connection is closing or closed.
    pub fn feed(&self, msg: Message) -> Result<(), Error>
    where
        S: Send + 'static,
    {
        self.feed_with(|ws| queue(ws.core(), msg))
    }

    fn feed_with(&self, f: impl FnOnce(&mut WebSocketStream<S>) -> Result<(), Error>) -> Result<(), Error>
    where
        S: Send + 'static,
    {
        let Some(cork) = &self.inner.cork else { return self.send_with(f) };
        let mut st = self.inner.lock();
        f(&mut st.ws)?;
        cork.inner.fed.fetch_add(1, Ordering::Relaxed);
        if !st.corked {
            st.corked = true;
            cork.add(self.inner.clone());
        }
        self.inner.buffered.store(st.ws.buffered_amount(), Ordering::Relaxed);
        Ok(())
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
        let mut st = self.inner.lock();
        st.ws.core().close(code, &reason)?;
        let _ = st.ws.write_now();
        // The reader runs the rest (the close timeout, the end of the transport), and
        // reports a write that failed.
        st.wake_reader();
        self.inner.buffered.store(st.ws.buffered_amount(), Ordering::Relaxed);
        Ok(())
    }

    /// Asks the CPU to bring this connection's state into its cache, without waiting: a
    /// fan-out that calls it a few connections ahead of its sends has their cache misses
    /// overlap, instead of taking them one after the other (each send's lock waits for
    /// its own). Only a hint; it changes nothing else.
    pub fn prefetch(&self) {
        // The `Arc`'s counts sit just before the value, and a send takes a reference.
        let counts = 2 * std::mem::size_of::<usize>();
        let start = Arc::as_ptr(&self.inner).cast::<u8>().wrapping_sub(counts);
        crate::prefetch::lines(start, counts + std::mem::size_of::<Inner<S>>());
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

/// Frames being queued on one connection under one lock ([`SharedSender::feed_batch`]).
pub struct FeedBatch<'a, S> {
    ws: &'a mut WebSocketStream<S>,
    fed: u64,
}

impl<S> std::fmt::Debug for FeedBatch<'_, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FeedBatch").field("fed", &self.fed).finish_non_exhaustive()
    }
}

impl<S: AsyncRead + AsyncWrite + TryWrite + Unpin> FeedBatch<'_, S> {
    /// Queues a frame encoded once for many connections, as
    /// [`SharedSender::feed_prepared`] does.
    ///
    /// # Errors
    ///
    /// [`UsageError::Closed`](tether_proto::UsageError::Closed) once the connection is closing or closed.
    pub fn prepared(&mut self, frame: &PreparedFrame) -> Result<(), Error> {
        self.ws.core().send_prepared(frame)?;
        self.fed += 1;
        Ok(())
    }

    /// Bytes queued and not yet written, this batch's included.
    pub fn buffered_amount(&self) -> usize {
        self.ws.buffered_amount()
    }
}

/// How many times a flush lets other tasks run first while they keep feeding.
const MAX_YIELDS: usize = 16;

/// Writes the [`SharedWebSocket`]s fed through it ([`SharedSender::feed_prepared`])
/// together, in a task of its own, once the tasks that fed them yield: as uWebSockets
/// corks a publication's writes until the end of its event loop's iteration. Messages fed
/// to one connection between two flushes go out in one write. Cheap to clone; made inside
/// a tokio runtime, whose task does the writes until every clone is gone.
#[derive(Clone)]
pub struct Cork {
    inner: Arc<CorkInner>,
}

impl std::fmt::Debug for Cork {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cork").finish_non_exhaustive()
    }
}

struct CorkInner {
    dirty: Mutex<Vec<Arc<dyn Flush>>>,
    /// A flush is asked for and has not started.
    scheduled: std::sync::atomic::AtomicBool,
    /// Messages fed so far: a flush waits while this grows (a burst still coming).
    fed: std::sync::atomic::AtomicU64,
    wake: Arc<tokio::sync::Notify>,
}

impl Drop for CorkInner {
    fn drop(&mut self) {
        // The flushing task finds the cork gone and ends.
        self.wake.notify_one();
    }
}

/// A connection with writes waiting for a flush.
trait Flush: Send + Sync {
    fn flush(&self);
}

impl<S: AsyncRead + AsyncWrite + TryWrite + Unpin + Send> Flush for Inner<S> {
    fn flush(&self) {
        let mut st = self.lock();
        st.corked = false;
        if !matches!(st.ws.write_now(), Ok(true)) {
            st.wake_reader();
        }
        self.buffered.store(st.ws.buffered_amount(), Ordering::Relaxed);
    }
}

impl Cork {
    /// A cork whose flushes run in a task of the current tokio runtime, as soon as the
    /// tasks that are ready have run.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime.
    pub fn new() -> Self {
        Self::with_linger(Duration::ZERO)
    }

    /// A cork that, under load, holds a flush back so that more messages join it: when the
    /// previous flush took 1 ms or more and ended less than that long ago, the next one
    /// waits until as long after it as it took, but at most `max`. Writing then takes at
    /// most about half the time, and each connection gets the messages of that wait in one
    /// write (fewer system calls per message) at the cost of up to `max` more latency;
    /// at light load (short flushes, far apart) nothing waits. `Duration::ZERO`: never
    /// wait, as [`new`](Self::new).
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime. With a linger, its task panics at its first wait if the
    /// runtime has no time driver (`enable_time`).
    pub fn with_linger(max: Duration) -> Self {
        let wake = Arc::new(tokio::sync::Notify::new());
        let inner = Arc::new(CorkInner {
            dirty: Mutex::new(Vec::new()),
            scheduled: std::sync::atomic::AtomicBool::new(false),
            fed: std::sync::atomic::AtomicU64::new(0),
            wake: wake.clone(),
        });
        let weak = Arc::downgrade(&inner);
        tokio::spawn(async move {
            let mut batch = Vec::new();
            let mut last = None;
            loop {
                wake.notified().await;
                if let Some(until) = linger_until(last, Instant::now(), max) {
                    tokio::time::sleep_until(until.into()).await;
                }
                // Let the tasks that are ready run first, while they feed more (a server
                // working through pipelined publications): what they feed joins this batch.
                if !yield_while_fed(|| weak.upgrade().map(|c| c.fed.load(Ordering::Relaxed))).await {
                    return;
                }
                let Some(cork) = weak.upgrade() else { return };
                cork.scheduled.store(false, Ordering::Release);
                std::mem::swap(
                    &mut batch,
                    &mut *cork.dirty.lock().unwrap_or_else(std::sync::PoisonError::into_inner),
                );
                drop(cork);
                let start = Instant::now();
                for conn in batch.drain(..) {
                    conn.flush();
                }
                let ended = Instant::now();
                last = Some(Flushed { ended, took: ended - start });
            }
        });
        Self { inner }
    }

    fn add(&self, conn: Arc<dyn Flush>) {
        self.inner.dirty.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(conn);
        if !self.inner.scheduled.swap(true, Ordering::AcqRel) {
            self.inner.wake.notify_one();
        }
    }
}

/// A cork's last flush: when it ended, and how long it took.
#[derive(Clone, Copy, Debug)]
struct Flushed {
    ended: Instant,
    took: Duration,
}

/// A flush shorter than this never makes the next one wait.
const BUSY_FLUSH: Duration = Duration::from_millis(1);

/// Until when a flush asked for at `now` waits ([`Cork::with_linger`]): `None` for at once.
fn linger_until(last: Option<Flushed>, now: Instant, max: Duration) -> Option<Instant> {
    let last = last?;
    if max.is_zero() || last.took < BUSY_FLUSH {
        return None;
    }
    let until = last.ended + last.took.min(max);
    (now < until).then_some(until)
}

/// Lets the tasks that are ready run before this one goes on, and again while they feed it
/// more, at most 16 times: a task that gathers what others feed it (a [`Cork`], a hub's
/// fan-out of publications) waits so for a burst to end, and handles it in one go.
/// `fed` counts what was fed so far, `None` once the gatherer is gone; then this returns
/// `false`. It never waits for I/O or a timer: the tasks it lets run are those already
/// ready.
pub async fn yield_while_fed(mut fed: impl FnMut() -> Option<u64>) -> bool {
    for _ in 0..MAX_YIELDS {
        let Some(before) = fed() else { return false };
        requeue().await;
        match fed() {
            None => return false,
            Some(now) if now == before => break,
            Some(_) => {}
        }
    }
    true
}

/// Lets the tasks already ready run before this one goes on, without polling for I/O
/// events first: the task wakes itself, so the scheduler puts it at the back of its run
/// queue. (`tokio::task::yield_now` defers the task until the driver has been polled, which
/// on a runtime with nothing else ready is one more `epoll_wait` per flush.)
async fn requeue() {
    let mut queued = false;
    std::future::poll_fn(|cx| {
        if queued {
            return Poll::Ready(());
        }
        queued = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    })
    .await;
}

impl Default for Cork {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::{linger_until, requeue, Flushed};
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};

    #[test]
    fn a_flush_waits_only_after_a_busy_one_and_at_most_as_long_as_it_took_or_the_max() {
        let ms = Duration::from_millis;
        let t0 = Instant::now();
        let max = ms(50);
        let last = |took| Some(Flushed { ended: t0, took });
        // The first flush, and any without a linger, go at once.
        assert_eq!(linger_until(None, t0, max), None);
        assert_eq!(linger_until(last(ms(20)), t0, Duration::ZERO), None);
        // A short flush (light load) never delays the next.
        assert_eq!(linger_until(last(Duration::from_micros(900)), t0, max), None);
        // After a 5 ms flush, the next waits until 5 ms after it ended...
        assert_eq!(linger_until(last(ms(5)), t0 + ms(2), max), Some(t0 + ms(5)));
        // ...unless that time has passed.
        assert_eq!(linger_until(last(ms(5)), t0 + ms(5), max), None);
        assert_eq!(linger_until(last(ms(5)), t0 + ms(9), max), None);
        // A flush longer than the max waits the max.
        assert_eq!(linger_until(last(ms(80)), t0 + ms(10), max), Some(t0 + ms(50)));
    }

    /// A flush waits for the tasks that are ready, as the cork's loop needs, and goes on
    /// without the runtime having to wait for anything (no timer, no I/O event).
    #[test]
    fn requeue_lets_the_ready_tasks_run_first() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        let order = rt.block_on(async {
            let order = Arc::new(Mutex::new(Vec::new()));
            let log = |who: &'static str, order: &Arc<Mutex<Vec<&'static str>>>| {
                order.lock().expect("log").push(who);
            };
            let (o1, o2, o3) = (order.clone(), order.clone(), order.clone());
            let flusher = tokio::spawn(async move {
                log("flusher starts", &o1);
                requeue().await;
                log("flusher goes on", &o1);
            });
            let a = tokio::spawn(async move { log("a", &o2) });
            let b = tokio::spawn(async move { log("b", &o3) });
            for t in [flusher, a, b] {
                t.await.expect("task");
            }
            Arc::try_unwrap(order).expect("one owner").into_inner().expect("log")
        });
        assert_eq!(order, ["flusher starts", "a", "b", "flusher goes on"]);
    }
}

//! [`WebSocketStream`]: a WebSocket driven by the task that polls it, and [`Transport`],
//! the plain-or-TLS socket it runs on.

use crate::limit::Permit;
use crate::message::{close_parts, from_event};
use crate::timer::Deadline;
use crate::{driver, Error, Message, WebSocket};
use bytes::{Buf, Bytes};
use futures_core::Stream;
use futures_sink::Sink;
use std::cell::RefCell;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Instant;
use tether_proto::frame::MAX_HEADER_LEN;
use tether_proto::{CloseCode, Closed, Connection, Event, Stats, UsageError};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// Reads go into one buffer per thread, so an idle connection holds no read buffer: only
/// bytes of a frame still incomplete stay with the connection (in the protocol core).
const SCRATCH: usize = 64 * 1024;
/// Above this, the write buffer is given back once written out.
const KEEP_WRITE_BUF: usize = 64 * 1024;
/// A frame this large is read straight into the connection's input buffer (no copy from
/// the scratch buffer), at most this much ahead of what has arrived.
const READ_IN_PLACE: usize = 8 * 1024;
/// Payloads this large are written from where they are (a vectored write after their
/// frame header), not copied into the write buffer.
const WRITE_IN_PLACE: usize = 8 * 1024;

/// [`WebSocketStream`]'s read hint for a message of `n` bytes with its header: no more than
/// one read takes.
fn hint(n: usize) -> u32 {
    u32::try_from(n.min(SCRATCH)).unwrap_or(u32::MAX)
}

thread_local! {
    static SCRATCH_BUF: RefCell<Box<[u8]>> = RefCell::new(vec![0u8; SCRATCH].into_boxed_slice());
    /// Frames written without a task context go through one buffer per thread, warm in the
    /// cache, instead of each connection's own (cold in a fan-out to many): only what the
    /// socket does not take at once is copied to the connection's buffer.
    static WRITE_SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// A stream after a successful opening handshake, before it is given a shell.
pub(crate) struct Upgraded<S> {
    pub(crate) io: S,
    pub(crate) conn: Connection,
    pub(crate) leftover: Vec<u8>,
    pub(crate) protocol: Option<String>,
    /// The connection's place under a listener's `max_connections`, held until the
    /// connection is dropped.
    pub(crate) permit: Option<Permit>,
}

impl<S> Upgraded<S>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    /// The same, holding a listener's place.
    pub(crate) fn with_permit(mut self, permit: Permit) -> Self {
        self.permit = Some(permit);
        self
    }

    /// A [`WebSocket`] with its own driver task.
    pub(crate) fn spawn(self) -> WebSocket {
        driver::spawn(self.io, self.conn, &self.leftover, self.protocol, self.permit)
    }

    /// A [`WebSocketStream`] driven by its caller.
    pub(crate) fn direct(mut self) -> WebSocketStream<S> {
        self.conn.handle_bytes(&self.leftover);
        WebSocketStream {
            vectored: self.io.is_write_vectored(),
            io: self.io,
            conn: self.conn,
            out: Vec::new(),
            written: 0,
            tail: None,
            read_hint: 0,
            eof: false,
            shut: false,
            write_gone: false,
            done: false,
            protocol: self.protocol.map(crate::intern::name),
            timer: Deadline::default(),
            _permit: self.permit,
        }
    }
}

/// A WebSocket connection driven by the task that polls it: a `Stream` of received
/// [`Message`]s and a `Sink` for sending, with no background task and no channels.
///
/// This is the lean shape for servers with many connections and for load generators: an
/// idle connection holds its socket and the protocol state, no read buffer. The price is
/// that the connection only makes progress while it is polled: automatic pongs, the close
/// reply and timers (ping interval, idle and close timeouts) run inside `poll_next`,
/// `poll_flush` and `poll_close`. A task that stops reading stops answering pings. Use
/// [`WebSocket`] when other tasks send on the connection or the application may be busy
/// for long between reads.
///
/// Sending with `feed` (no flush) queues the message; the next read that would wait
/// writes everything queued in one go, so an echo loop of `next` and `feed` makes one
/// write per batch of messages that arrived together.
#[derive(Debug)]
pub struct WebSocketStream<S> {
    io: S,
    conn: Connection,
    /// Encoded frames; `out[written..]` is not written yet.
    out: Vec<u8>,
    written: usize,
    /// A payload written in place, after `out` (what is left of it). Boxed: only a large
    /// payload the socket did not take whole has one, and an idle connection's size is
    /// what many idle connections cost (8 bytes, not 32, in every connection).
    tail: Option<Box<Bytes>>,
    /// Whether the socket writes several buffers at once (plain TCP does; TLS does not).
    vectored: bool,
    /// The size of the last message with its header when it was large (0 otherwise), at
    /// most what one read takes: the next one is likely as large, and read in place. (A
    /// `u32` beside the flags: an idle connection's size is what many idle connections
    /// cost.)
    read_hint: u32,
    eof: bool,
    shut: bool,
    /// A write failed because the peer is gone (it closed or reset the connection, typically
    /// after a close frame for what it refused): what it sent before is still read, its
    /// close frame first, and what would be written is dropped.
    write_gone: bool,
    /// The stream has ended (`None` was returned).
    done: bool,
    /// Shared by the connections that agreed the same one ([`crate::intern`]).
    protocol: Option<Arc<str>>,
    /// The next deadline's registration with the one timer of all connections.
    timer: Deadline,
    /// A listener's place, given back when the stream is dropped.
    _permit: Option<Permit>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> WebSocketStream<S> {
    /// The subprotocol agreed in the handshake.
    pub fn protocol(&self) -> Option<&str> {
        self.protocol.as_deref()
    }

    /// Whether permessage-deflate was negotiated.
    pub fn deflate(&self) -> bool {
        self.conn.deflate_negotiated()
    }

    /// Counters of bytes and messages in both directions.
    pub fn stats(&self) -> Stats {
        self.conn.stats()
    }

    /// Bytes queued and not yet written to the socket, like the browser's `bufferedAmount`.
    pub fn buffered_amount(&self) -> usize {
        self.conn.buffered_amount() + self.out.len() - self.written
            + self.tail.as_ref().map_or(0, |t| t.len())
    }

    /// How the connection ended, once it has.
    pub fn close_status(&self) -> Option<Closed> {
        self.conn.closed().cloned()
    }

    /// The underlying socket.
    pub fn get_ref(&self) -> &S {
        &self.io
    }

    /// Writes queued frames; `Ready(Ok)` once everything is written and flushed.
    pub(crate) fn poll_write_out(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.write_gone {
            self.drop_output();
            return Poll::Ready(Ok(()));
        }
        loop {
            if !self.refill() {
                return Pin::new(&mut self.io).poll_flush(cx);
            }
            let head = &self.out[self.written..];
            let io = Pin::new(&mut self.io);
            let n = match (&self.tail, head.is_empty()) {
                (None, _) => ready!(io.poll_write(cx, head)),
                (Some(tail), true) => ready!(io.poll_write(cx, tail)),
                (Some(tail), false) => {
                    ready!(io.poll_write_vectored(cx, &[io::IoSlice::new(head), io::IoSlice::new(tail)]))
                }
            }?;
            self.advance(n)?;
        }
    }

    /// Drops what is queued and what the core would write next (the peer is gone).
    fn drop_output(&mut self) {
        self.written = 0;
        self.out.clear();
        self.tail = None;
        while self.conn.poll_transmit_split(&mut self.out, usize::MAX).0 {
            self.out.clear();
        }
    }

    /// Whether there is something to write: what is left of the last batch, or the next
    /// batch from the core (once the last is written).
    fn refill(&mut self) -> bool {
        if self.written == self.out.len() && self.tail.is_none() {
            self.written = 0;
            self.out.clear();
            if self.out.capacity() > KEEP_WRITE_BUF {
                self.out = Vec::new();
            }
            // Without vectored writes (TLS), nothing is split off: one buffer per write.
            let split = if self.vectored { WRITE_IN_PLACE } else { usize::MAX };
            let (any, tail) = self.conn.poll_transmit_split(&mut self.out, split);
            self.tail = tail.map(Box::new);
            return any;
        }
        true
    }

    /// Marks `n` bytes written, from the buffer then the payload written in place.
    fn advance(&mut self, n: usize) -> io::Result<()> {
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        let from_head = n.min(self.out.len() - self.written);
        self.written += from_head;
        if let Some(tail) = &mut self.tail {
            tail.advance(n - from_head);
            if tail.is_empty() {
                self.tail = None;
            }
        }
        Ok(())
    }

    /// Writes what is queued without a task context, as far as the socket takes it now:
    /// `Ok(true)` when everything is written, `Ok(false)` when the socket is full or cannot
    /// be written this way (TLS); then the task that polls the stream must write the rest.
    pub(crate) fn write_now(&mut self) -> io::Result<bool>
    where
        S: TryWrite,
    {
        if self.written == self.out.len() && self.tail.is_none() && self.io.can_try_write() {
            return WRITE_SCRATCH.with_borrow_mut(|buf| self.write_through(buf));
        }
        while self.refill() {
            match try_write_parts(&self.io, &self.out[self.written..], self.tail.as_deref()) {
                None => return Ok(false),
                Some(Ok(n)) => self.advance(n)?,
                Some(Err(e)) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Some(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                Some(Err(e)) => return Err(e),
            }
        }
        Ok(true)
    }

    /// Writes the queued frames through `buf` (the thread's scratch buffer) while the socket
    /// takes them whole: `Ok(true)` when everything is written; `Ok(false)` when the socket
    /// took part (or would block, or was interrupted), and an error as the socket gave it:
    /// then what it did not take is in `out` and `tail`, for the task to write.
    fn write_through(&mut self, buf: &mut Vec<u8>) -> io::Result<bool>
    where
        S: TryWrite,
    {
        let split = if self.vectored { WRITE_IN_PLACE } else { usize::MAX };
        let r = loop {
            buf.clear();
            let (any, tail) = self.conn.poll_transmit_split(buf, split);
            if !any {
                break Ok(true);
            }
            let r = try_write_parts(&self.io, buf, tail.as_ref());
            if let Some(Ok(n)) = r {
                if n == buf.len() + tail.as_ref().map_or(0, Bytes::len) {
                    continue;
                }
            }
            // Kept as a leftover of `out` (written out before: `written` is its end), for
            // the task to write, less what the socket took.
            self.out.extend_from_slice(buf);
            self.tail = tail.map(Box::new);
            break match r {
                Some(Ok(n)) => self.advance(n).map(|()| false),
                Some(Err(e))
                    if e.kind() == io::ErrorKind::WouldBlock || e.kind() == io::ErrorKind::Interrupted =>
                {
                    Ok(false)
                }
                Some(Err(e)) => Err(e),
                None => Ok(false),
            };
        };
        if buf.capacity() > KEEP_WRITE_BUF {
            *buf = Vec::new();
        }
        r
    }

    /// Gives back the write buffers when everything is written (for a connection that is
    /// quiet now; the next message allocates them again).
    pub(crate) fn release_output(&mut self) {
        if self.written == self.out.len() && self.tail.is_none() {
            self.written = 0;
            self.out = Vec::new();
            self.conn.release_output();
        }
    }

    /// The protocol core, to queue frames on.
    pub(crate) fn core(&mut self) -> &mut Connection {
        &mut self.conn
    }

    pub(crate) fn send_buffer_limit(&self) -> usize {
        self.conn.config().send_buffer_limit
    }

    /// Whether messages may still be sent (no close sent or received).
    pub(crate) fn is_open(&self) -> bool {
        !self.done && self.conn.is_open()
    }

    /// Reads once and feeds the core; `Ok(0)` at the end. A large frame is read straight
    /// into the core's buffer; anything else into the thread's scratch buffer.
    fn poll_read_some(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let want = self.conn.input_wanted().max(self.read_hint as usize);
        let r = if want >= READ_IN_PLACE {
            self.poll_read_in_place(cx, want)
        } else {
            self.poll_read_scratch(cx)
        };
        if r.is_pending() {
            // Between messages: an idle connection keeps no input buffer.
            self.conn.release_input();
        }
        r
    }

    fn poll_read_in_place(&mut self, cx: &mut Context<'_>, want: usize) -> Poll<io::Result<usize>> {
        let buf = self.conn.input_buffer(want.min(SCRATCH));
        let read = std::pin::pin!(self.io.read_buf(buf));
        let n = ready!(read.poll(cx))?;
        self.conn.input_added(n);
        Poll::Ready(Ok(n))
    }

    fn poll_read_scratch(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let (io, conn) = (&mut self.io, &mut self.conn);
        let mut read = |buf: &mut [u8]| {
            let mut rb = ReadBuf::new(buf);
            ready!(Pin::new(&mut *io).poll_read(cx, &mut rb))?;
            conn.handle_bytes(rb.filled());
            Poll::Ready(Ok(rb.filled().len()))
        };
        SCRATCH_BUF.with(|scratch| match scratch.try_borrow_mut() {
            Ok(mut buf) => read(&mut buf),
            // Only if an I/O type polls another WebSocketStream from inside its own read.
            Err(_) => read(&mut vec![0u8; 4096]),
        })
    }

    /// Arms the timer for the core's next deadline; `Ready` when it has passed.
    fn poll_timer(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let Some(deadline) = self.conn.poll_timeout() else { return Poll::Pending };
        self.timer.poll(deadline, cx)
    }

    pub(crate) fn next_message(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Message, Error>>> {
        if self.done {
            return Poll::Ready(None);
        }
        // One clock read per poll, and none when no timer is configured or running.
        let mut now = None;
        loop {
            if self.conn.wants_time() {
                self.conn.handle_timeout(*now.get_or_insert_with(Instant::now));
            }
            match self.conn.poll_event() {
                Ok(Some(event)) => {
                    let size = match &event {
                        Event::Binary(b) => Some(b.len()),
                        Event::Text(t) => Some(t.len()),
                        _ => None,
                    };
                    if let Some(n) = size {
                        self.read_hint = if n >= READ_IN_PLACE { hint(n + MAX_HEADER_LEN) } else { 0 };
                    }
                    match from_event(event) {
                        Some(msg) => return Poll::Ready(Some(Ok(msg))),
                        None => continue,
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    self.send_failure_close(cx);
                    return Poll::Ready(Some(Err(e.into())));
                }
            }
            match self.poll_write_out(cx) {
                Poll::Ready(Ok(())) => {
                    if self.conn.should_close_transport() {
                        // RFC 6455 7.1.1: the server closes TCP first; the client after
                        // the server did, after a timeout, or on failure.
                        if !self.shut {
                            let _ = ready!(Pin::new(&mut self.io).poll_shutdown(cx));
                            self.shut = true;
                        }
                        return self.end();
                    }
                    if self.conn.is_closed() && self.eof {
                        return self.end();
                    }
                }
                Poll::Ready(Err(e)) if peer_gone(&e) && !self.eof => {
                    tracing::debug!(error = %e, "websocket write failed: reading what the peer sent");
                    self.write_gone = true;
                    self.drop_output();
                }
                Poll::Ready(Err(e)) => return self.failed(e),
                Poll::Pending => {}
            }
            if !self.eof {
                match self.poll_read_some(cx) {
                    Poll::Ready(Ok(0)) => self.handle_eof(),
                    Poll::Ready(Ok(_)) => continue,
                    Poll::Ready(Err(e)) if e.kind() == io::ErrorKind::UnexpectedEof => self.handle_eof(),
                    Poll::Ready(Err(e)) => return self.failed(e),
                    Poll::Pending => {}
                }
                if self.eof {
                    continue;
                }
            }
            if self.poll_timer(cx).is_ready() {
                continue;
            }
            return Poll::Pending;
        }
    }

    /// After a protocol error: queues the close frame with the error's code and writes it
    /// now if the socket takes it, so that it goes out even if the application stops
    /// polling on the error (the next poll finishes the job otherwise).
    fn send_failure_close(&mut self, cx: &mut Context<'_>) {
        let _ = self.conn.poll_event();
        let written = matches!(self.poll_write_out(cx), Poll::Ready(Ok(())));
        if written && self.conn.should_close_transport() && !self.shut {
            self.shut = Pin::new(&mut self.io).poll_shutdown(cx).is_ready();
        }
    }

    fn handle_eof(&mut self) {
        self.eof = true;
        self.conn.handle_eof();
    }

    /// The stream ends; buffers go back to the allocator.
    fn end(&mut self) -> Poll<Option<Result<Message, Error>>> {
        self.done = true;
        self.out = Vec::new();
        self.timer.clear();
        Poll::Ready(None)
    }

    fn failed(&mut self, e: io::Error) -> Poll<Option<Result<Message, Error>>> {
        tracing::debug!(error = %e, "websocket i/o failed");
        let was_closed = self.conn.is_closed();
        self.eof = true;
        self.conn.handle_eof();
        let _ = self.end();
        if was_closed {
            Poll::Ready(None)
        } else {
            Poll::Ready(Some(Err(e.into())))
        }
    }
}

/// An error that says the peer closed or reset the connection (both connection shapes read
/// on after a write fails so).
pub(crate) fn peer_gone(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset)
}

impl<S: AsyncRead + AsyncWrite + Unpin> Stream for WebSocketStream<S> {
    type Item = Result<Message, Error>;
    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().next_message(cx)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Sink<Message> for WebSocketStream<S> {
    type Error = Error;

    /// Ready while less than `send_buffer_limit` bytes wait to be written; otherwise
    /// writes first.
    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        let this = self.get_mut();
        if this.done || this.conn.is_closed() {
            return Poll::Ready(Err(UsageError::Closed.into()));
        }
        let limit = this.conn.config().send_buffer_limit;
        while this.buffered_amount() >= limit {
            ready!(this.poll_write_out(cx))?;
        }
        Poll::Ready(Ok(()))
    }

    fn start_send(self: Pin<&mut Self>, item: Message) -> Result<(), Error> {
        queue(&mut self.get_mut().conn, item)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(Ok(()));
        }
        this.poll_write_out(cx).map_err(Error::from)
    }

    /// Starts the close handshake (1000) unless a close was sent already, and drives the
    /// connection, discarding what still arrives, until it has ended.
    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        let this = self.get_mut();
        if this.conn.is_open() {
            let _ = this.conn.close(CloseCode::NORMAL, "");
        }
        while ready!(this.next_message(cx)).is_some() {}
        Poll::Ready(Ok(()))
    }
}

/// Queues `item` on `conn` (compressed where deflate was negotiated).
pub(crate) fn queue(conn: &mut Connection, item: Message) -> Result<(), Error> {
    let result = match item {
        Message::Text(t) => conn.send_text(t),
        Message::Binary(b) => conn.send_binary(b),
        Message::Ping(p) => conn.send_ping(p),
        Message::Pong(p) => conn.send_pong(p),
        Message::Close(frame) => {
            let (code, reason) = close_parts(frame);
            conn.close(code, &reason)
        }
    };
    result.map_err(Error::from)
}

/// A socket that can be written without a task context, from whichever task has data for
/// it ([`SharedWebSocket`](crate::SharedWebSocket)'s senders).
pub trait TryWrite {
    /// Writes what the socket takes now: `Some(Ok(n))`, `Some(Err(WouldBlock))` when it
    /// is full, `None` when this socket cannot be written this way (TLS, whose records
    /// are written from its own buffer by the task that polls it).
    fn try_write_vectored(&self, bufs: &[io::IoSlice<'_>]) -> Option<io::Result<usize>>;

    /// The same for one buffer (on Linux, `send` costs the kernel less than `writev`).
    fn try_write(&self, buf: &[u8]) -> Option<io::Result<usize>> {
        self.try_write_vectored(&[io::IoSlice::new(buf)])
    }

    /// Whether writes of this kind can succeed at all (`false` for TLS, whose writes always
    /// answer `None`): saves preparing a write that would not be made.
    fn can_try_write(&self) -> bool {
        true
    }
}

/// Writes `head` then `tail` (a payload written in place) with one call, as far as the
/// socket takes them now.
fn try_write_parts<S: TryWrite>(io: &S, head: &[u8], tail: Option<&Bytes>) -> Option<io::Result<usize>> {
    match (tail, head.is_empty()) {
        (None, _) => io.try_write(head),
        (Some(tail), true) => io.try_write(tail),
        (Some(tail), false) => io.try_write_vectored(&[io::IoSlice::new(head), io::IoSlice::new(tail)]),
    }
}

/// The flags of `TryWrite`'s `send`s: where the system has it, `MSG_NOSIGNAL`, so that a
/// send to a peer that is gone fails with `EPIPE` instead of raising `SIGPIPE`, which kills
/// a process that has not set it aside (std's and tokio's writes pass it too). On Apple's
/// systems the sockets std makes carry `SO_NOSIGPIPE` instead.
#[cfg(all(unix, not(target_vendor = "apple")))]
const SEND_FLAGS: std::ffi::c_int = libc::MSG_NOSIGNAL;
#[cfg(not(all(unix, not(target_vendor = "apple"))))]
const SEND_FLAGS: std::ffi::c_int = 0;

/// Straight to the socket, not through tokio's `try_write`: that one first reads the
/// socket's readiness, in memory of its own (a cache miss per connection in a fan-out to
/// many), to save the system call when tokio saw the socket full. A write that finds it
/// full fails with `WouldBlock` just the same, and the task that writes the rest asks
/// tokio, which then learns it.
impl TryWrite for TcpStream {
    fn try_write_vectored(&self, bufs: &[io::IoSlice<'_>]) -> Option<io::Result<usize>> {
        Some(socket2::SockRef::from(self).send_vectored_with_flags(bufs, SEND_FLAGS))
    }

    fn try_write(&self, buf: &[u8]) -> Option<io::Result<usize>> {
        Some(socket2::SockRef::from(self).send_with_flags(buf, SEND_FLAGS))
    }
}

impl TryWrite for Transport {
    fn try_write_vectored(&self, bufs: &[io::IoSlice<'_>]) -> Option<io::Result<usize>> {
        match self {
            Self::Plain(s) => TryWrite::try_write_vectored(s, bufs),
            Self::Tls(_) => None,
        }
    }

    fn try_write(&self, buf: &[u8]) -> Option<io::Result<usize>> {
        match self {
            Self::Plain(s) => TryWrite::try_write(s, buf),
            Self::Tls(_) => None,
        }
    }

    fn can_try_write(&self) -> bool {
        matches!(self, Self::Plain(_))
    }
}

/// A TCP socket, with or without TLS: what [`Incoming`](crate::Incoming) and
/// [`connect_direct`](crate::connect_direct) give a [`WebSocketStream`].
#[derive(Debug)]
#[allow(clippy::large_enum_variant)]
pub enum Transport {
    /// `ws://`.
    Plain(TcpStream),
    /// `wss://`, server or client side.
    Tls(Box<tokio_rustls::TlsStream<TcpStream>>),
}

impl Transport {
    /// The TCP socket, under TLS or not: for addresses and socket options.
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Self::Plain(s) => s,
            Self::Tls(s) => s.get_ref().0,
        }
    }
}

impl AsyncRead for Transport {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Transport {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }
    fn is_write_vectored(&self) -> bool {
        match self {
            Self::Plain(s) => s.is_write_vectored(),
            Self::Tls(s) => s.is_write_vectored(),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_flush(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::TryWrite;
    use std::io;
    use std::time::Duration;

    /// A write to a peer that is gone is an error the caller sees, and on Linux it is
    /// asked for without `SIGPIPE` (the test harness ignores the signal, as every Rust
    /// program does by default, so the flag itself is what is checked).
    #[tokio::test]
    async fn a_direct_write_to_a_peer_that_is_gone_fails_without_a_signal() {
        #[cfg(target_os = "linux")]
        assert_eq!(super::SEND_FLAGS & libc::MSG_NOSIGNAL, libc::MSG_NOSIGNAL);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = tokio::net::TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        assert_eq!(TryWrite::try_write(&client, b"hello").unwrap().unwrap(), 5);
        drop(server);
        // The first send after the close gets a reset back; a later one fails.
        let mut failed = None;
        for _ in 0..100 {
            match TryWrite::try_write(&client, b"more").unwrap() {
                Ok(_) => tokio::time::sleep(Duration::from_millis(10)).await,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => {
                    failed = Some(e.kind());
                    break;
                }
            }
        }
        let kind = failed.expect("writes to a closed peer kept succeeding");
        assert!(matches!(kind, io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset), "{kind:?}");
        let vectored =
            TryWrite::try_write_vectored(&client, &[io::IoSlice::new(b"a"), io::IoSlice::new(b"b")]);
        assert!(vectored.unwrap().is_err());
    }
}

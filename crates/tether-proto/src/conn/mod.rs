//! [`Connection`]: the RFC 6455 state machine after the handshake.

use crate::close::{CloseCode, Closed, Initiator};
use crate::config::Config;
use crate::deflate::{Codec, DeflateParams, Inflated};
use crate::error::{ProtocolError, UsageError};
use crate::frame::{apply_mask, FrameHeader, OpCode, MAX_HEADER_LEN};
use crate::text::Utf8Bytes;
use crate::utf8::Utf8Validator;
use bytes::{Buf, Bytes, BytesMut};
use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;
use std::time::Instant;

mod recv;
mod send;

/// Which end of the connection this is. Decides the masking rules (RFC 6455 5.1) and who
/// closes TCP first (RFC 6455 7.1.1: the server).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Masks what it sends, refuses masked frames.
    Client,
    /// Refuses unmasked frames, closes TCP first.
    Server,
}

/// What the connection reports to the application.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// A complete text message.
    Text(Utf8Bytes),
    /// A complete binary message.
    Binary(Bytes),
    /// A ping arrived (the pong is already queued).
    Ping(Bytes),
    /// A pong arrived.
    Pong(Bytes),
    /// The connection ended; this is the last event.
    Closed(Closed),
}

/// A source of masking keys for the client role. RFC 6455 5.3 wants them unpredictable,
/// so the I/O layer passes one backed by the operating system's random source.
pub type MaskSource = Box<dyn FnMut() -> [u8; 4] + Send>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Open,
    /// We sent a close frame and wait for the peer's.
    CloseSent,
    /// The peer sent a close frame; ours follows on the next `poll_event` (or at
    /// `close_timeout`), so that what the application sends in reaction to the messages
    /// before the close still goes out first. Sending is allowed until then.
    CloseReceived,
    /// The peer broke the protocol; our close frame follows on the next `poll_event` (or at
    /// `close_timeout`), for the same reason as in `CloseReceived`.
    Failing,
    /// Both close frames exchanged, the peer dropped TCP, or we failed the connection.
    Closed,
}

/// A data frame whose payload is still arriving.
struct FrameInProgress {
    header: FrameHeader,
    remaining: u64,
}

/// A message whose frames are still arriving.
struct MessageInProgress {
    text: bool,
    /// The payload so far (uncompressed messages).
    buf: BytesMut,
    /// The inflated payload so far (compressed messages).
    inflated: Inflated,
    /// How much of `inflated` the UTF-8 validator has seen.
    checked: usize,
    compressed: bool,
    utf8: Utf8Validator,
}

struct OutFrame {
    opcode: OpCode,
    /// The payload, or for a prepared frame the whole frame.
    payload: Bytes,
    rsv1: bool,
    prepared: bool,
}

/// Frames waiting to be sent, oldest first: the first in place, any after it on the heap. A
/// connection that has one frame at a time to send (a reply, a subscriber's publication at
/// light load) then allocates nothing for it, and an idle connection keeps nothing.
#[derive(Default)]
struct OutQueue {
    /// The oldest frame; `None` only when the queue is empty.
    head: Option<OutFrame>,
    rest: VecDeque<OutFrame>,
}

impl OutQueue {
    fn push_back(&mut self, frame: OutFrame) {
        if self.head.is_none() {
            self.head = Some(frame);
        } else {
            self.rest.push_back(frame);
        }
    }

    fn pop_front(&mut self) -> Option<OutFrame> {
        let frame = self.head.take()?;
        // Mostly nothing follows: the head is then left empty, with no call into the deque.
        if !self.rest.is_empty() {
            self.head = self.rest.pop_front();
        }
        Some(frame)
    }

    fn is_empty(&self) -> bool {
        self.head.is_none()
    }

    /// Gives back the heap part's memory when it holds nothing.
    fn release(&mut self) {
        if self.rest.is_empty() && self.rest.capacity() > 0 {
            self.rest = VecDeque::new();
        }
    }
}

/// Counters of one connection: what crossed the wire and what the application saw.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Bytes fed to `handle_bytes`.
    pub bytes_received: u64,
    /// Bytes handed out by `poll_transmit`.
    pub bytes_sent: u64,
    /// Text and binary messages received.
    pub messages_received: u64,
    /// Text and binary messages queued for sending.
    pub messages_sent: u64,
    /// Payload bytes of messages received, after inflating.
    pub payload_received: u64,
    /// Payload bytes of messages queued for sending, before compressing.
    pub payload_sent: u64,
    /// Messages received compressed.
    pub compressed_received: u64,
    /// Messages sent compressed.
    pub compressed_sent: u64,
}

/// [`Stats`]' counters that every connection keeps.
#[derive(Debug, Clone, Copy, Default)]
struct Counts {
    bytes_received: u64,
    bytes_sent: u64,
    messages_received: u64,
    messages_sent: u64,
    payload_received: u64,
    payload_sent: u64,
}

impl OutFrame {
    fn wire_len(&self, masked: bool) -> usize {
        let len = self.payload.len();
        if self.prepared {
            return len;
        }
        let head = match len {
            0..=125 => 2,
            126..=0xFFFF => 4,
            _ => 10,
        };
        head + if masked { 4 } else { 0 } + len
    }
}

/// One WebSocket connection after the opening handshake, without I/O.
///
/// # Driving it
///
/// ```text
///   loop {
///       conn.handle_timeout(now);                 // first, on every wake-up
///       bytes read from the peer -> conn.handle_bytes(&bytes)   (or handle_eof() at EOF)
///       while let Some(event) = conn.poll_event()? { deliver(event) }
///       app commands -> conn.send_text / send_binary / send_ping / close
///       while conn.poll_transmit(&mut buf) { write buf to the peer }
///       if conn.should_close_transport() { close the socket; break }
///       sleep until conn.poll_timeout() or more input
///   }
/// ```
///
/// Reading never writes: automatic pongs and the close reply are queued and come out of
/// [`poll_transmit`](Self::poll_transmit). At most `max_pending_pongs` (32) pongs are queued;
/// past that the oldest is dropped (RFC 6455 5.5.3 allows answering only the latest ping), so a ping flood cannot
/// grow memory.
///
/// When the peer's close frame arrives, or the peer breaks the protocol, the event is
/// reported first and our close frame is queued by the *next* `poll_event` call (or at
/// `close_timeout`): what the application sends in reaction to the messages before it
/// still goes out ahead of the close, as it would if the application had read them one by
/// one from a blocking socket.
pub struct Connection {
    role: Role,
    config: Arc<Config>,
    state: State,
    inbuf: BytesMut,
    frame: Option<FrameInProgress>,
    /// Boxed: only a message that arrives in pieces or compressed has one, and an idle
    /// connection's size is what many idle connections cost.
    message: Option<Box<MessageInProgress>>,
    out: OutQueue,
    /// Pongs owed, oldest first; never empty when there. Boxed: most connections never owe
    /// one, and an idle connection's size is what many idle connections cost (the box is 8
    /// bytes in every connection, the queue 32; only a connection that owes pongs pays for
    /// the extra allocation).
    #[allow(clippy::box_collection)]
    pending_pongs: Option<Box<VecDeque<Bytes>>>,
    buffered: usize,
    /// Boxed again (a `MaskSource` is a fat pointer): only clients have one, and the eight
    /// bytes saved keep a server's shared connection in a smaller allocation size.
    mask: Option<Box<MaskSource>>,
    /// Boxed: only a closing connection has one.
    closed: Option<Box<Closed>>,
    closed_reported: bool,
    failed: bool,
    // Timers. The core never reads the clock: `handle_timeout` brings the time.
    activity: bool,
    last_activity: Option<Instant>,
    next_ping: Option<Instant>,
    arm_close_timer: bool,
    close_deadline: Option<Instant>,
    close_transport: bool,
    ping_counter: u64,
    /// Boxed: most connections have no compression, and an idle connection's size is
    /// what many idle connections cost.
    deflate: Option<Box<Codec>>,
    /// [`Stats`] but for the compressed messages, which the codec counts (a connection
    /// without compression has no use for those counters).
    counts: Counts,
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("role", &self.role)
            .field("state", &self.state)
            .field("buffered", &self.buffered)
            .finish_non_exhaustive()
    }
}

impl Connection {
    /// A server-side connection.
    ///
    /// A server with many connections passes one `Arc<Config>` to all of them.
    pub fn server(config: impl Into<Arc<Config>>) -> Self {
        Self::new(Role::Server, config.into(), None)
    }

    /// A client-side connection; `mask` gives a fresh masking key for every frame sent.
    pub fn client(config: impl Into<Arc<Config>>, mask: MaskSource) -> Self {
        Self::new(Role::Client, config.into(), Some(Box::new(mask)))
    }

    fn new(role: Role, config: Arc<Config>, mask: Option<Box<MaskSource>>) -> Self {
        Self {
            role,
            config,
            state: State::Open,
            inbuf: BytesMut::new(),
            frame: None,
            message: None,
            out: OutQueue::default(),
            pending_pongs: None,
            buffered: 0,
            mask,
            closed: None,
            closed_reported: false,
            failed: false,
            activity: false,
            last_activity: None,
            next_ping: None,
            arm_close_timer: false,
            close_deadline: None,
            close_transport: false,
            ping_counter: 0,
            deflate: None,
            counts: Counts::default(),
        }
    }

    /// Turns on permessage-deflate with what the handshake agreed (`None` leaves it off).
    /// Nothing is allocated until the first compressed message in either direction.
    pub fn with_deflate(mut self, params: Option<DeflateParams>) -> Self {
        self.deflate = params.map(|p| Box::new(Codec::new(p)));
        self
    }

    /// Whether permessage-deflate was negotiated.
    pub fn deflate_negotiated(&self) -> bool {
        self.deflate.is_some()
    }

    /// Whether the compressor and the decompressor have been allocated.
    pub fn deflate_allocated(&self) -> (bool, bool) {
        self.deflate.as_deref().map_or((false, false), Codec::allocated)
    }

    /// Counters of bytes and messages in both directions.
    pub fn stats(&self) -> Stats {
        let c = &self.counts;
        let (compressed_received, compressed_sent) =
            self.deflate.as_deref().map_or((0, 0), |d| (d.compressed_received, d.compressed_sent));
        Stats {
            bytes_received: c.bytes_received,
            bytes_sent: c.bytes_sent,
            messages_received: c.messages_received,
            messages_sent: c.messages_sent,
            payload_received: c.payload_received,
            payload_sent: c.payload_sent,
            compressed_received,
            compressed_sent,
        }
    }

    /// This connection's role.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Feeds bytes received from the peer. Parsing happens in [`poll_event`](Self::poll_event).
    pub fn handle_bytes(&mut self, data: &[u8]) {
        // After the peer's close frame, or once failed, nothing more is read (RFC 6455 1.4:
        // no data after a close frame; 7.1.7: a failed connection is not read further).
        if !matches!(self.state, State::Open | State::CloseSent) || data.is_empty() {
            return;
        }
        self.activity = true;
        self.counts.bytes_received += data.len() as u64;
        self.inbuf.extend_from_slice(data);
    }

    /// For a shell that reads straight into the connection, saving the copy that
    /// [`handle_bytes`](Self::handle_bytes) makes: the input buffer, with room for at least
    /// `additional` more bytes. Only append to it, then report how much with
    /// [`input_added`](Self::input_added).
    pub fn input_buffer(&mut self, additional: usize) -> &mut BytesMut {
        self.inbuf.reserve(additional);
        &mut self.inbuf
    }

    /// `n` bytes were appended to the [`input_buffer`](Self::input_buffer) (dropped again
    /// when the connection reads no more, as with [`handle_bytes`](Self::handle_bytes)).
    pub fn input_added(&mut self, n: usize) {
        if !matches!(self.state, State::Open | State::CloseSent) {
            let keep = self.inbuf.len().saturating_sub(n);
            self.inbuf.truncate(keep);
            return;
        }
        if n > 0 {
            self.activity = true;
            self.counts.bytes_received += n as u64;
        }
    }

    /// Bytes still missing from the frame being received, once its header is here (0
    /// before): how much room a shell reading straight into the connection should make.
    pub fn input_wanted(&self) -> usize {
        self.frame.as_ref().map_or(0, |f| {
            usize::try_from(f.remaining).unwrap_or(usize::MAX).saturating_sub(self.inbuf.len())
        })
    }

    /// Lets go of the input buffer's memory when it holds nothing (between messages, so
    /// that an idle connection keeps no buffer). Also when it has no room left: emptied by
    /// handing out its last message, it still holds a share of that message's allocation.
    pub fn release_input(&mut self) {
        if self.inbuf.is_empty() {
            self.inbuf = BytesMut::new();
        }
    }

    /// Gives back the memory of the outgoing queues when nothing waits in them, so that
    /// an idle connection holds none (a shell calls it when the connection goes quiet).
    pub fn release_output(&mut self) {
        self.out.release();
    }

    /// The peer closed its side of TCP. Without a close handshake this ends the connection
    /// with 1006 (RFC 6455 7.1.5).
    pub fn handle_eof(&mut self) {
        if self.state != State::Closed {
            self.finish(Closed {
                code: CloseCode::ABNORMAL,
                reason: String::new(),
                initiator: Initiator::Remote,
                clean: false,
            });
        }
        // Nothing more will come: a client waiting for the server's TCP close is done too.
        self.close_transport = true;
    }

    /// Whether [`handle_timeout`](Self::handle_timeout) has anything to do: a timer is
    /// configured or running. When false, a shell may skip reading the clock.
    pub fn wants_time(&self) -> bool {
        self.arm_close_timer
            || self.close_deadline.is_some()
            || (self.state == State::Open
                && (self.config.idle_timeout.is_some() || self.config.ping_interval.is_some()))
    }

    /// Brings the time: call it on every wake-up, before the other calls (or only when
    /// [`wants_time`](Self::wants_time) says so).
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.activity || self.last_activity.is_none() {
            self.activity = false;
            self.last_activity = Some(now);
        }
        if self.arm_close_timer {
            self.arm_close_timer = false;
            self.close_deadline = Some(now + self.config.close_timeout);
        }
        if let Some(deadline) = self.close_deadline {
            if now >= deadline {
                self.close_deadline = None;
                match self.state {
                    State::CloseReceived => return self.reply_close(),
                    State::Failing => return self.send_failure_close(),
                    _ => {}
                }
                if self.state == State::CloseSent {
                    // RFC 6455 7.1.1: the peer did not answer our close in time.
                    let (code, reason) = (CloseCode::ABNORMAL, "close timeout".to_owned());
                    self.finish(Closed { code, reason, initiator: Initiator::Local, clean: false });
                }
                self.close_transport = true;
            }
        }
        if self.state != State::Open {
            return;
        }
        if let (Some(idle), Some(last)) = (self.config.idle_timeout, self.last_activity) {
            if now >= last + idle {
                let _ = self.close(CloseCode::GOING_AWAY, "idle timeout");
                self.close_deadline = Some(now + self.config.close_timeout);
                self.arm_close_timer = false;
                return;
            }
        }
        if let Some(interval) = self.config.ping_interval {
            match self.next_ping {
                None => self.next_ping = Some(now + interval),
                Some(at) if now >= at => {
                    self.ping_counter += 1;
                    let payload = Bytes::copy_from_slice(&self.ping_counter.to_be_bytes());
                    let _ = self.send_ping(payload);
                    self.next_ping = Some(now + interval);
                }
                Some(_) => {}
            }
        }
    }

    /// The next moment [`handle_timeout`](Self::handle_timeout) has work to do.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut next = self.close_deadline;
        let mut consider = |t: Option<Instant>| {
            if let Some(t) = t {
                next = Some(next.map_or(t, |n| n.min(t)));
            }
        };
        if self.state == State::Open {
            consider(self.next_ping);
            if let (Some(idle), Some(last)) = (self.config.idle_timeout, self.last_activity) {
                consider(Some(last + idle));
            }
        }
        next
    }

    /// Queues the answer to the peer's close frame, echoing its status code (RFC 6455 5.5.1).
    fn reply_close(&mut self) {
        let Some(closed) = self.closed.as_deref().cloned() else { return };
        let reply = if closed.code == CloseCode::NO_STATUS {
            Bytes::new()
        } else {
            Bytes::copy_from_slice(&closed.code.0.to_be_bytes())
        };
        self.queue(OpCode::Close, reply);
        self.finish(closed);
    }

    /// Enters the closed state; the client then gives the server `close_timeout` to close
    /// TCP before closing it itself.
    fn finish(&mut self, closed: Closed) {
        self.state = State::Closed;
        self.closed = Some(Box::new(closed));
        self.frame = None;
        self.message = None;
        self.inbuf = BytesMut::new();
        self.close_deadline = None;
        self.arm_close_timer = self.role == Role::Client;
    }

    /// Fails the connection (RFC 6455 7.1.7): queue a close frame with the error's code
    /// unless one was already sent, and stop reading.
    fn fail(&mut self, err: &ProtocolError) {
        let closed = Closed {
            code: err.close_code(),
            reason: err.to_string(),
            initiator: Initiator::Local,
            clean: false,
        };
        self.failed = true;
        if self.state == State::Open {
            // The close frame is queued by the next `poll_event` (see `State::Failing`).
            self.state = State::Failing;
            self.closed = Some(Box::new(closed));
            self.frame = None;
            self.message = None;
            self.inbuf = BytesMut::new();
            self.arm_close_timer = true;
        } else {
            self.finish(closed);
            self.arm_close_timer = false;
        }
    }

    fn send_failure_close(&mut self) {
        let Some(closed) = self.closed.as_deref().cloned() else { return };
        self.queue(OpCode::Close, close_payload(closed.code, &closed.reason));
        self.finish(closed);
        self.arm_close_timer = false;
    }

    /// Whether the connection has ended (a close handshake, a failure, EOF or a timeout).
    pub fn is_closed(&self) -> bool {
        self.state == State::Closed
    }

    /// Whether messages may still be sent.
    pub fn is_open(&self) -> bool {
        matches!(self.state, State::Open | State::CloseReceived | State::Failing)
    }

    /// Whether the peer's close frame arrived, or the peer broke the protocol, and our close
    /// frame waits for the next [`poll_event`](Self::poll_event).
    pub fn is_close_pending(&self) -> bool {
        matches!(self.state, State::CloseReceived | State::Failing)
    }

    /// How the connection ended, once it has.
    pub fn closed(&self) -> Option<&Closed> {
        self.closed.as_deref()
    }

    /// Whether the I/O layer should close the socket now: everything queued has been
    /// transmitted and either this is the server after the close handshake (RFC 6455 7.1.1:
    /// the server closes TCP first), the connection failed, or a timeout expired.
    pub fn should_close_transport(&self) -> bool {
        if self.state != State::Closed || !self.out.is_empty() || self.pending_pongs.is_some() {
            return false;
        }
        self.close_transport || self.failed || self.role == Role::Server
    }
}

fn parse_close_payload(payload: &[u8]) -> Result<(CloseCode, String), ProtocolError> {
    match payload {
        [] => Ok((CloseCode::NO_STATUS, String::new())),
        [_] => Err(ProtocolError::InvalidClosePayload),
        [a, b, reason @ ..] => {
            let code = CloseCode(u16::from_be_bytes([*a, *b]));
            if !code.is_sendable() {
                return Err(ProtocolError::InvalidCloseCode(code.0));
            }
            let reason = std::str::from_utf8(reason).map_err(|_| ProtocolError::InvalidUtf8)?;
            Ok((code, reason.to_owned()))
        }
    }
}

fn close_payload(code: CloseCode, reason: &str) -> Bytes {
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let mut v = Vec::with_capacity(2 + end);
    v.extend_from_slice(&code.0.to_be_bytes());
    v.extend_from_slice(&reason.as_bytes()[..end]);
    Bytes::from(v)
}

#[cfg(test)]
mod tests {
    use super::{OutFrame, OutQueue};
    use crate::frame::OpCode;
    use bytes::Bytes;
    use proptest::prelude::*;
    use std::collections::VecDeque;

    fn frame(n: u32) -> OutFrame {
        OutFrame {
            opcode: OpCode::Binary,
            payload: Bytes::from(n.to_be_bytes().to_vec()),
            rsv1: false,
            prepared: false,
        }
    }

    proptest! {
        /// Whatever the pushes and pops, the queue gives the frames back in the order they
        /// came, as a plain `VecDeque` does, and holds no heap memory once emptied and released.
        #[test]
        fn the_out_queue_is_first_in_first_out(ops in proptest::collection::vec(any::<bool>(), 0..200)) {
            let (mut queue, mut model) = (OutQueue::default(), VecDeque::new());
            for (n, push) in (0u32..).zip(ops) {
                if push {
                    queue.push_back(frame(n));
                    model.push_back(n);
                } else {
                    let got = queue.pop_front().map(|f| u32::from_be_bytes(f.payload[..].try_into().unwrap()));
                    prop_assert_eq!(got, model.pop_front());
                }
                prop_assert_eq!(queue.is_empty(), model.is_empty());
            }
            while let Some(f) = queue.pop_front() {
                prop_assert_eq!(Some(u32::from_be_bytes(f.payload[..].try_into().unwrap())), model.pop_front());
            }
            prop_assert!(model.is_empty());
            queue.release();
            prop_assert_eq!(queue.rest.capacity(), 0);
        }
    }
}

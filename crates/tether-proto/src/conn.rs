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
use std::time::Instant;

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
    payload: Bytes,
    rsv1: bool,
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

impl OutFrame {
    fn wire_len(&self, masked: bool) -> usize {
        let len = self.payload.len();
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
    config: Config,
    state: State,
    inbuf: BytesMut,
    frame: Option<FrameInProgress>,
    message: Option<MessageInProgress>,
    out: VecDeque<OutFrame>,
    pending_pongs: VecDeque<Bytes>,
    buffered: usize,
    mask: Option<MaskSource>,
    closed: Option<Closed>,
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
    deflate: Option<Codec>,
    stats: Stats,
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
    pub fn server(config: Config) -> Self {
        Self::new(Role::Server, config, None)
    }

    /// A client-side connection; `mask` gives a fresh masking key for every frame sent.
    pub fn client(config: Config, mask: MaskSource) -> Self {
        Self::new(Role::Client, config, Some(mask))
    }

    fn new(role: Role, config: Config, mask: Option<MaskSource>) -> Self {
        Self {
            role,
            config,
            state: State::Open,
            inbuf: BytesMut::new(),
            frame: None,
            message: None,
            out: VecDeque::new(),
            pending_pongs: VecDeque::new(),
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
            stats: Stats::default(),
        }
    }

    /// Turns on permessage-deflate with what the handshake agreed (`None` leaves it off).
    /// Nothing is allocated until the first compressed message in either direction.
    pub fn with_deflate(mut self, params: Option<DeflateParams>) -> Self {
        self.deflate = params.map(Codec::new);
        self
    }

    /// Whether permessage-deflate was negotiated.
    pub fn deflate_negotiated(&self) -> bool {
        self.deflate.is_some()
    }

    /// Whether the compressor and the decompressor have been allocated.
    pub fn deflate_allocated(&self) -> (bool, bool) {
        self.deflate.as_ref().map_or((false, false), Codec::allocated)
    }

    /// Counters of bytes and messages in both directions.
    pub fn stats(&self) -> Stats {
        self.stats
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
        self.stats.bytes_received += data.len() as u64;
        self.inbuf.extend_from_slice(data);
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

    /// Brings the time: call it on every wake-up, before the other calls.
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

    /// The next event, parsed from the bytes fed so far.
    ///
    /// # Errors
    ///
    /// A [`ProtocolError`] when the peer broke the protocol. The connection is then failed
    /// (RFC 6455 7.1.7): a close frame with the error's code is queued, no more events come,
    /// and [`should_close_transport`](Self::should_close_transport) turns true once it is sent.
    pub fn poll_event(&mut self) -> Result<Option<Event>, ProtocolError> {
        match self.state {
            State::CloseReceived => self.reply_close(),
            State::Failing => self.send_failure_close(),
            _ => {}
        }
        match self.parse() {
            Ok(Some(event)) => Ok(Some(event)),
            Ok(None) => Ok(self.take_closed().map(Event::Closed)),
            Err(err) => {
                self.fail(&err);
                Err(err)
            }
        }
    }

    fn take_closed(&mut self) -> Option<Closed> {
        if self.closed_reported || self.failed {
            return None;
        }
        let closed = self.closed.clone()?;
        self.closed_reported = true;
        Some(closed)
    }

    fn parse(&mut self) -> Result<Option<Event>, ProtocolError> {
        loop {
            if matches!(self.state, State::Closed | State::CloseReceived | State::Failing) {
                return Ok(None);
            }
            let header = match &self.frame {
                Some(f) => f.header,
                None => {
                    let Some((header, len)) = FrameHeader::parse(&self.inbuf)? else {
                        return Ok(None);
                    };
                    self.check_header(&header)?;
                    if header.opcode.is_control() {
                        let total = len + header.payload_len as usize;
                        if self.inbuf.len() < total {
                            return Ok(None);
                        }
                        self.inbuf.advance(len);
                        let mut payload = self.inbuf.split_to(header.payload_len as usize);
                        if let Some(key) = header.mask {
                            apply_mask(&mut payload, key, 0);
                        }
                        match self.handle_control(header.opcode, payload.freeze())? {
                            Some(event) => return Ok(Some(event)),
                            None => continue,
                        }
                    }
                    self.inbuf.advance(len);
                    self.frame = Some(FrameInProgress { header, remaining: header.payload_len });
                    header
                }
            };
            if let Some(event) = self.take_payload(header)? {
                return Ok(Some(event));
            }
            if self.frame.is_some() {
                return Ok(None); // waiting for more of this frame's payload
            }
        }
    }

    fn check_header(&self, h: &FrameHeader) -> Result<(), ProtocolError> {
        // RFC 6455 5.2: "MUST be 0 unless an extension is negotiated that defines meanings
        // for non-zero values". permessage-deflate defines RSV1, on a message's first frame
        // only (RFC 7692 6.1).
        if h.rsv2 || h.rsv3 || (h.rsv1 && self.deflate.is_none()) {
            return Err(ProtocolError::ReservedBits);
        }
        if h.rsv1 && !matches!(h.opcode, OpCode::Text | OpCode::Binary) {
            return Err(ProtocolError::UnexpectedRsv1);
        }
        // RFC 6455 5.1: servers refuse unmasked frames, clients refuse masked ones.
        match (self.role, h.mask.is_some()) {
            (Role::Server, false) => return Err(ProtocolError::UnmaskedClientFrame),
            (Role::Client, true) => return Err(ProtocolError::MaskedServerFrame),
            _ => {}
        }
        if h.opcode.is_control() {
            // RFC 6455 5.5: "All control frames MUST have a payload length of 125 bytes or
            // less and MUST NOT be fragmented."
            if !h.fin {
                return Err(ProtocolError::FragmentedControlFrame);
            }
            if h.payload_len > 125 {
                return Err(ProtocolError::ControlFrameTooLong);
            }
            return Ok(());
        }
        if h.payload_len > self.config.max_frame_size as u64 {
            return Err(ProtocolError::FrameTooLarge {
                size: h.payload_len,
                limit: self.config.max_frame_size,
            });
        }
        // The limit applies to what the application receives: for a compressed message that
        // is the inflated size, checked while inflating.
        let compressed = self.message.as_ref().map_or(h.rsv1, |m| m.compressed);
        let so_far = self.message.as_ref().map_or(0, |m| m.buf.len() as u64);
        if !compressed && so_far + h.payload_len > self.config.max_message_size as u64 {
            return Err(ProtocolError::MessageTooLarge { limit: self.config.max_message_size });
        }
        // RFC 6455 5.4: continuation only inside a fragmented message, and no new message
        // until the open one is finished.
        match (h.opcode, self.message.is_some()) {
            (OpCode::Continuation, false) => Err(ProtocolError::UnexpectedContinuation),
            (OpCode::Text | OpCode::Binary, true) => Err(ProtocolError::ExpectedContinuation),
            _ => Ok(()),
        }
    }

    /// Moves as much of the current data frame's payload as has arrived into the message.
    fn take_payload(&mut self, header: FrameHeader) -> Result<Option<Event>, ProtocolError> {
        let Some(frame) = self.frame.as_mut() else { return Ok(None) };
        let len = header.payload_len as usize;
        // Fast path: a whole single-frame message is here; hand out a slice of the input
        // buffer without copying.
        if self.message.is_none()
            && header.fin
            && !header.rsv1
            && frame.remaining == header.payload_len
            && self.inbuf.len() >= len
        {
            self.frame = None;
            let mut payload = self.inbuf.split_to(len);
            if let Some(key) = header.mask {
                apply_mask(&mut payload, key, 0);
            }
            return self.deliver(header.opcode == OpCode::Text, payload);
        }
        let take = (frame.remaining as usize).min(self.inbuf.len());
        if take == 0 && frame.remaining > 0 {
            return Ok(None);
        }
        let offset = (header.payload_len - frame.remaining) as usize;
        frame.remaining -= take as u64;
        let done = frame.remaining == 0;
        let mut chunk = self.inbuf.split_to(take);
        if let Some(key) = header.mask {
            apply_mask(&mut chunk, key, offset);
        }
        let message = self.message.get_or_insert_with(|| MessageInProgress {
            text: header.opcode == OpCode::Text,
            buf: BytesMut::new(),
            inflated: Inflated::default(),
            checked: 0,
            compressed: header.rsv1,
            utf8: Utf8Validator::new(),
        });
        let limit = self.config.max_message_size;
        if message.compressed {
            let Some(codec) = self.deflate.as_mut() else { return Err(ProtocolError::ReservedBits) };
            codec.decompress(&chunk, &mut message.inflated, limit)?;
            if done && header.fin {
                codec.finish_message(&mut message.inflated, limit)?;
            }
            // RFC 6455 8.1 with Autobahn 6.4.x: refuse invalid UTF-8 as soon as it is seen,
            // not when the message ends; for compressed text, as soon as it is inflated.
            let utf8 = &mut message.utf8;
            if message.text && !message.inflated.each_since(message.checked, |b| utf8.feed(b).is_ok()) {
                return Err(ProtocolError::InvalidUtf8);
            }
            message.checked = message.inflated.len();
        } else {
            if message.text && message.utf8.feed(&chunk).is_err() {
                return Err(ProtocolError::InvalidUtf8);
            }
            if message.buf.is_empty() {
                message.buf = chunk;
            } else {
                message.buf.unsplit(chunk);
            }
        }
        if !done {
            return Ok(None);
        }
        self.frame = None;
        if !header.fin {
            return Ok(None);
        }
        let Some(mut message) = self.message.take() else { return Ok(None) };
        if message.text && message.utf8.finish().is_err() {
            return Err(ProtocolError::InvalidUtf8);
        }
        if message.compressed {
            self.stats.compressed_received += 1;
            let payload = message.inflated.into_bytes();
            return Ok(Some(self.count_delivery(message.text, payload)));
        }
        self.deliver_validated(message.text, message.buf)
    }

    fn deliver(&mut self, text: bool, payload: BytesMut) -> Result<Option<Event>, ProtocolError> {
        if text && std::str::from_utf8(&payload).is_err() {
            return Err(ProtocolError::InvalidUtf8);
        }
        self.deliver_validated(text, payload)
    }

    fn deliver_validated(&mut self, text: bool, payload: BytesMut) -> Result<Option<Event>, ProtocolError> {
        Ok(Some(self.count_delivery(text, payload.freeze())))
    }

    fn count_delivery(&mut self, text: bool, payload: Bytes) -> Event {
        self.stats.messages_received += 1;
        self.stats.payload_received += payload.len() as u64;
        if text {
            Event::Text(Utf8Bytes::from_validated(payload))
        } else {
            Event::Binary(payload)
        }
    }

    fn handle_control(&mut self, opcode: OpCode, payload: Bytes) -> Result<Option<Event>, ProtocolError> {
        match opcode {
            OpCode::Ping => {
                if self.state == State::Open {
                    if self.pending_pongs.len() >= self.config.max_pending_pongs.max(1) {
                        if let Some(old) = self.pending_pongs.pop_front() {
                            self.buffered -= old.len() + MAX_HEADER_LEN;
                        }
                    }
                    self.buffered += payload.len() + MAX_HEADER_LEN;
                    self.pending_pongs.push_back(payload.clone());
                }
                Ok(Some(Event::Ping(payload)))
            }
            OpCode::Pong => Ok(Some(Event::Pong(payload))),
            _ => {
                let (code, reason) = parse_close_payload(&payload)?;
                if self.state == State::Open {
                    // RFC 6455 5.5.1: answer with a close frame "as soon as practical";
                    // the reply is queued by the next `poll_event` (see `CloseReceived`).
                    self.closed = Some(Closed { code, reason, initiator: Initiator::Remote, clean: true });
                    self.closed_reported = true;
                    self.state = State::CloseReceived;
                    self.message = None;
                    self.frame = None;
                    self.inbuf = BytesMut::new();
                    self.arm_close_timer = true;
                    return Ok(self.closed.clone().map(Event::Closed));
                }
                self.finish(Closed { code, reason, initiator: Initiator::Local, clean: true });
                Ok(self.take_closed().map(Event::Closed))
            }
        }
    }

    /// Queues the answer to the peer's close frame, echoing its status code (RFC 6455 5.5.1).
    fn reply_close(&mut self) {
        let Some(closed) = self.closed.clone() else { return };
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
        self.closed = Some(closed);
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
            self.closed = Some(closed);
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
        let Some(closed) = self.closed.clone() else { return };
        self.queue(OpCode::Close, close_payload(closed.code, &closed.reason));
        self.finish(closed);
        self.arm_close_timer = false;
    }

    fn queue(&mut self, opcode: OpCode, payload: Bytes) {
        self.queue_frame(OutFrame { opcode, payload, rsv1: false });
    }

    fn queue_frame(&mut self, frame: OutFrame) {
        self.buffered += frame.wire_len(self.role == Role::Client);
        self.out.push_back(frame);
    }

    fn check_open(&self) -> Result<(), UsageError> {
        if matches!(self.state, State::Open | State::CloseReceived | State::Failing) {
            Ok(())
        } else {
            Err(UsageError::Closed)
        }
    }

    /// Queues a text message.
    ///
    /// # Errors
    ///
    /// [`UsageError::Closed`] once the close handshake has started.
    pub fn send_text(&mut self, text: Utf8Bytes) -> Result<(), UsageError> {
        self.send_data(OpCode::Text, text.into_bytes(), true)
    }

    /// Queues a text message that is never compressed (for data already compressed, or
    /// secrets next to attacker-chosen text: compression leaks their length, as in CRIME).
    ///
    /// # Errors
    ///
    /// [`UsageError::Closed`] once the close handshake has started.
    pub fn send_text_uncompressed(&mut self, text: Utf8Bytes) -> Result<(), UsageError> {
        self.send_data(OpCode::Text, text.into_bytes(), false)
    }

    /// Queues a binary message.
    ///
    /// # Errors
    ///
    /// [`UsageError::Closed`] once the close handshake has started.
    pub fn send_binary(&mut self, data: Bytes) -> Result<(), UsageError> {
        self.send_data(OpCode::Binary, data, true)
    }

    /// Queues a binary message that is never compressed.
    ///
    /// # Errors
    ///
    /// [`UsageError::Closed`] once the close handshake has started.
    pub fn send_binary_uncompressed(&mut self, data: Bytes) -> Result<(), UsageError> {
        self.send_data(OpCode::Binary, data, false)
    }

    fn send_data(&mut self, opcode: OpCode, payload: Bytes, compress: bool) -> Result<(), UsageError> {
        self.check_open()?;
        self.stats.messages_sent += 1;
        self.stats.payload_sent += payload.len() as u64;
        let frame = match self.deflate.as_mut() {
            // RFC 7692 6: RSV1 on the (only) frame marks it compressed.
            Some(codec) if compress && codec.wants(payload.len()) => {
                self.stats.compressed_sent += 1;
                OutFrame { opcode, payload: Bytes::from(codec.compress(&payload)), rsv1: true }
            }
            _ => OutFrame { opcode, payload, rsv1: false },
        };
        self.queue_frame(frame);
        Ok(())
    }

    /// Queues a ping.
    ///
    /// # Errors
    ///
    /// [`UsageError::ControlFrameTooLong`] over 125 bytes; [`UsageError::Closed`] once closing.
    pub fn send_ping(&mut self, payload: Bytes) -> Result<(), UsageError> {
        self.send_control(OpCode::Ping, payload)
    }

    /// Queues an unsolicited pong (a heartbeat that expects no answer, RFC 6455 5.5.3).
    ///
    /// # Errors
    ///
    /// [`UsageError::ControlFrameTooLong`] over 125 bytes; [`UsageError::Closed`] once closing.
    pub fn send_pong(&mut self, payload: Bytes) -> Result<(), UsageError> {
        self.send_control(OpCode::Pong, payload)
    }

    fn send_control(&mut self, opcode: OpCode, payload: Bytes) -> Result<(), UsageError> {
        if payload.len() > 125 {
            return Err(UsageError::ControlFrameTooLong);
        }
        self.check_open()?;
        self.queue(opcode, payload);
        Ok(())
    }

    /// Starts the close handshake: queues a close frame; messages already queued go first.
    ///
    /// # Errors
    ///
    /// [`UsageError::InvalidCloseCode`] for a code that may not be sent (1005, 1006, 1015,
    /// ...); [`UsageError::ControlFrameTooLong`] when the reason is over 123 bytes;
    /// [`UsageError::Closed`] when closing already.
    pub fn close(&mut self, code: CloseCode, reason: &str) -> Result<(), UsageError> {
        if !code.is_sendable() {
            return Err(UsageError::InvalidCloseCode(code.0));
        }
        if reason.len() > 123 {
            return Err(UsageError::ControlFrameTooLong);
        }
        match self.state {
            State::CloseReceived => {
                self.reply_close();
                return Ok(());
            }
            State::Failing => {
                self.send_failure_close();
                return Ok(());
            }
            _ => {}
        }
        self.check_open()?;
        self.queue(OpCode::Close, close_payload(code, reason));
        self.state = State::CloseSent;
        self.arm_close_timer = true;
        Ok(())
    }

    /// Appends the next frames to send to `buf` (a pending pong first, then queued frames in
    /// order), stopping once `buf` holds 64 KiB or more. Returns whether it appended anything.
    pub fn poll_transmit(&mut self, buf: &mut Vec<u8>) -> bool {
        const SOFT_LIMIT: usize = 64 * 1024;
        let start = buf.len();
        while let Some(pong) = self.pending_pongs.pop_front() {
            self.buffered -= pong.len() + MAX_HEADER_LEN;
            self.encode(OpCode::Pong, false, &pong, buf);
        }
        while buf.len() < SOFT_LIMIT {
            let Some(frame) = self.out.pop_front() else { break };
            self.buffered -= frame.wire_len(self.role == Role::Client);
            self.encode(frame.opcode, frame.rsv1, &frame.payload, buf);
        }
        self.stats.bytes_sent += (buf.len() - start) as u64;
        buf.len() > start
    }

    fn encode(&mut self, opcode: OpCode, rsv1: bool, payload: &[u8], buf: &mut Vec<u8>) {
        let mask = self.mask.as_mut().map(|m| m());
        let header = FrameHeader {
            fin: true,
            rsv1,
            rsv2: false,
            rsv3: false,
            opcode,
            mask,
            payload_len: payload.len() as u64,
        };
        let mut head = [0u8; MAX_HEADER_LEN];
        let n = header.encode(&mut head);
        buf.extend_from_slice(&head[..n]);
        let at = buf.len();
        buf.extend_from_slice(payload);
        if let Some(key) = mask {
            apply_mask(&mut buf[at..], key, 0);
        }
    }

    /// Bytes queued in this connection and not yet handed to [`poll_transmit`]
    /// (the browser's `bufferedAmount`, counting frame headers).
    ///
    /// [`poll_transmit`]: Self::poll_transmit
    pub fn buffered_amount(&self) -> usize {
        self.buffered
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
        self.closed.as_ref()
    }

    /// Whether the I/O layer should close the socket now: everything queued has been
    /// transmitted and either this is the server after the close handshake (RFC 6455 7.1.1:
    /// the server closes TCP first), the connection failed, or a timeout expired.
    pub fn should_close_transport(&self) -> bool {
        if self.state != State::Closed || !self.out.is_empty() || !self.pending_pongs.is_empty() {
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

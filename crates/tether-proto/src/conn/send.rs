//! The sending side of [`Connection`]: application commands and what goes on the wire.

use super::*;

impl Connection {
    pub(super) fn queue(&mut self, opcode: OpCode, payload: Bytes) {
        self.queue_frame(OutFrame { opcode, payload, rsv1: false, prepared: false });
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
        self.counts.messages_sent += 1;
        self.counts.payload_sent += payload.len() as u64;
        let frame = match self.deflate.as_mut() {
            // RFC 7692 6: RSV1 on the (only) frame marks it compressed.
            Some(codec) if compress && codec.wants(payload.len()) => {
                codec.compressed_sent += 1;
                OutFrame {
                    opcode,
                    payload: Bytes::from(codec.compress(&payload)),
                    rsv1: true,
                    prepared: false,
                }
            }
            _ => OutFrame { opcode, payload, rsv1: false, prepared: false },
        };
        self.queue_frame(frame);
        Ok(())
    }

    /// Queues a frame encoded once for many connections. With permessage-deflate and no
    /// context takeover on our side it goes compressed, compressed once for all such
    /// connections (see [`PreparedFrame`](crate::frame::PreparedFrame)); otherwise it goes
    /// uncompressed (RFC 7692 lets any message), and the compression context is untouched.
    ///
    /// # Errors
    ///
    /// [`UsageError::Closed`] once closing; [`UsageError::ClientPrepared`] on a client,
    /// whose frames must each be masked with a fresh key.
    pub fn send_prepared(&mut self, frame: &crate::frame::PreparedFrame) -> Result<(), UsageError> {
        self.check_open()?;
        if self.role == Role::Client {
            return Err(UsageError::ClientPrepared);
        }
        self.counts.messages_sent += 1;
        self.counts.payload_sent += frame.payload_len() as u64;
        let shared = self.deflate.as_deref_mut().and_then(|codec| {
            let (bits, level) = codec.shares(frame.payload_len())?;
            let compressed = frame.deflated(bits, level)?;
            codec.compressed_sent += 1;
            Some(compressed)
        });
        let payload = shared.unwrap_or_else(|| frame.wire()).clone();
        self.queue_frame(OutFrame { opcode: OpCode::Binary, payload, rsv1: false, prepared: true });
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
    #[inline]
    pub fn poll_transmit(&mut self, buf: &mut Vec<u8>) -> bool {
        self.has_output() && self.transmit(buf, usize::MAX).0
    }

    /// Like [`poll_transmit`](Self::poll_transmit), for a shell with vectored writes: it
    /// stops at the first frame whose payload is `min_split` bytes or more and needs no
    /// masking (a server's, or one encoded once for many connections), appends only that
    /// frame's header, and returns its payload uncopied, to be written right after `buf`.
    /// Returns whether there is anything to write, and that payload.
    #[inline]
    pub fn poll_transmit_split(&mut self, buf: &mut Vec<u8>, min_split: usize) -> (bool, Option<Bytes>) {
        if !self.has_output() {
            return (false, None);
        }
        self.transmit(buf, min_split)
    }

    /// Whether anything waits to be transmitted. Inlined into the shells' write loops, whose
    /// last call (after the socket took everything) then costs no call into [`transmit`].
    #[inline]
    fn has_output(&self) -> bool {
        !self.out.is_empty() || self.pending_pongs.is_some()
    }

    fn transmit(&mut self, buf: &mut Vec<u8>, min_split: usize) -> (bool, Option<Bytes>) {
        const SOFT_LIMIT: usize = 64 * 1024;
        let start = buf.len();
        if let Some(pongs) = self.pending_pongs.take() {
            for pong in pongs.iter() {
                self.buffered -= pong.len() + MAX_HEADER_LEN;
                self.encode(OpCode::Pong, false, pong, buf);
            }
        }
        let mut split = None;
        while buf.len() < SOFT_LIMIT {
            let Some(frame) = self.out.pop_front() else { break };
            self.buffered -= frame.wire_len(self.role == Role::Client);
            let whole = frame.payload.len() >= min_split && (frame.prepared || self.mask.is_none());
            if whole {
                if !frame.prepared {
                    self.encode_header(frame.opcode, frame.rsv1, None, frame.payload.len(), buf);
                }
                split = Some(frame.payload);
                break;
            }
            if frame.prepared {
                buf.extend_from_slice(&frame.payload);
            } else {
                self.encode(frame.opcode, frame.rsv1, &frame.payload, buf);
            }
        }
        let tail = split.as_ref().map_or(0, Bytes::len);
        self.counts.bytes_sent += (buf.len() - start + tail) as u64;
        (buf.len() > start || split.is_some(), split)
    }

    fn encode_header(
        &self,
        opcode: OpCode,
        rsv1: bool,
        mask: Option<[u8; 4]>,
        len: usize,
        buf: &mut Vec<u8>,
    ) {
        let header =
            FrameHeader { fin: true, rsv1, rsv2: false, rsv3: false, opcode, mask, payload_len: len as u64 };
        let mut head = [0u8; MAX_HEADER_LEN];
        let n = header.encode(&mut head);
        buf.extend_from_slice(&head[..n]);
    }

    fn encode(&mut self, opcode: OpCode, rsv1: bool, payload: &[u8], buf: &mut Vec<u8>) {
        let mask = self.mask.as_mut().map(|m| m());
        self.encode_header(opcode, rsv1, mask, payload.len(), buf);
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
}

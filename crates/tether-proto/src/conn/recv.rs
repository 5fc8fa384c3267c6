//! The receiving side of [`Connection`]: frame parsing, message assembly, control frames.

use super::*;

impl Connection {
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
        let closed = self.closed.as_deref().cloned()?;
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
        // A binary single-frame message waits until it is all here, then goes out in one
        // piece without copying (text is checked for UTF-8 as it comes, to fail fast).
        if self.message.is_none()
            && header.fin
            && !header.rsv1
            && header.opcode == OpCode::Binary
            && frame.remaining == header.payload_len
        {
            // Room for what is missing, but no more than 64 KiB ahead of what has arrived:
            // a peer that announces a large frame and sends nothing gets no large buffer.
            self.inbuf.reserve((len - self.inbuf.len()).min(64 * 1024));
            return Ok(None);
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
        let message = self.message.get_or_insert_with(|| {
            Box::new(MessageInProgress {
                text: header.opcode == OpCode::Text,
                buf: BytesMut::new(),
                inflated: Inflated::default(),
                checked: 0,
                compressed: header.rsv1,
                utf8: Utf8Validator::new(),
            })
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
        let Some(message) = self.message.take() else { return Ok(None) };
        let mut message = *message;
        if message.text && message.utf8.finish().is_err() {
            return Err(ProtocolError::InvalidUtf8);
        }
        if message.compressed {
            if let Some(codec) = self.deflate.as_deref_mut() {
                codec.compressed_received += 1;
            }
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
        self.counts.messages_received += 1;
        self.counts.payload_received += payload.len() as u64;
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
                    let pongs = self.pending_pongs.get_or_insert_with(Box::default);
                    if pongs.len() >= self.config.max_pending_pongs.max(1) {
                        if let Some(old) = pongs.pop_front() {
                            self.buffered -= old.len() + MAX_HEADER_LEN;
                        }
                    }
                    self.buffered += payload.len() + MAX_HEADER_LEN;
                    pongs.push_back(payload.clone());
                }
                Ok(Some(Event::Ping(payload)))
            }
            OpCode::Pong => Ok(Some(Event::Pong(payload))),
            _ => {
                let (code, reason) = parse_close_payload(&payload)?;
                if self.state == State::Open {
                    // RFC 6455 5.5.1: answer with a close frame "as soon as practical";
                    // the reply is queued by the next `poll_event` (see `CloseReceived`).
                    self.closed =
                        Some(Box::new(Closed { code, reason, initiator: Initiator::Remote, clean: true }));
                    self.closed_reported = true;
                    self.state = State::CloseReceived;
                    self.message = None;
                    self.frame = None;
                    self.inbuf = BytesMut::new();
                    self.arm_close_timer = true;
                    return Ok(self.closed.as_deref().cloned().map(Event::Closed));
                }
                self.finish(Closed { code, reason, initiator: Initiator::Local, clean: true });
                Ok(self.take_closed().map(Event::Closed))
            }
        }
    }
}

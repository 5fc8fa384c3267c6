//! The sending side every front-end's outlet shares: a connection's [`Sender`] under the
//! hub's slow-consumer policy. Past `max_queued_bytes` unsent, the connection gets close
//! 4008 "slow consumer" and nothing more is queued; bytes sent count in the hub's metrics.

use super::link::{Outbox, TextEncoding, Tx};
use crate::codes::close;
use crate::hub::Event;
use crate::metrics::Metrics;
use bytes::Bytes;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tether::{CloseCode, Message};

/// A connection's sender with the slow-consumer policy.
pub(crate) struct SendGate {
    sender: Tx,
    max_queued: usize,
    closing: AtomicBool,
    metrics: Arc<Metrics>,
}

impl SendGate {
    /// A gate over `sender` that tolerates `max_queued` unsent bytes.
    pub(crate) fn new(sender: Tx, max_queued: usize, metrics: Arc<Metrics>) -> Self {
        Self { sender, max_queued, closing: AtomicBool::new(false), metrics }
    }

    /// Whether the connection may take more; the first time it may not, starts its close.
    fn admit(&self) -> bool {
        if self.closing.load(Ordering::Relaxed) {
            return false;
        }
        if self.sender.buffered_amount() > self.max_queued {
            self.closing.store(true, Ordering::Relaxed);
            tracing::info!(queued = self.sender.buffered_amount(), "slow consumer disconnected");
            let _ = self.sender.send_close(CloseCode(close::SLOW_CONSUMER), "slow consumer");
            return false;
        }
        true
    }

    fn sent(&self, ok: bool, bytes: usize) -> bool {
        if ok {
            self.metrics.bytes_out.fetch_add(bytes as u64, Ordering::Relaxed);
        }
        ok
    }

    /// Queues `event` as the text `encode` makes, encoded once per framing for every
    /// connection using `encoding`. `false` when the connection is closing, too slow, or gone.
    pub(crate) fn send_event(
        &self,
        event: &Event,
        encoding: &TextEncoding,
        encode: impl FnOnce(&Event) -> String,
    ) -> bool {
        self.admit() && self.counted(self.sender.send_event(event, encoding, encode))
    }

    /// Queues the message `head` + `part`, `part` shared by many connections (`encoded`:
    /// its form in an outbox, made once). `false` as for [`send_event`](Self::send_event).
    pub(crate) fn send_joined(
        &self,
        head: bytes::BytesMut,
        part: &Bytes,
        encoded: impl FnOnce(&dyn Outbox) -> Bytes,
    ) -> bool {
        self.admit() && self.counted(self.sender.send_joined(head, part, encoded))
    }

    /// Whether the connection takes WebSocket frames ([`send_frame`](Self::send_frame)).
    pub(crate) fn takes_frames(&self) -> bool {
        self.sender.takes_frames()
    }

    /// Queues a frame that other connections may share. `false` as for
    /// [`send_event`](Self::send_event).
    pub(crate) fn send_frame(&self, frame: &tether::PreparedFrame) -> bool {
        self.admit() && self.counted(self.sender.send_frame(frame))
    }

    fn counted(&self, r: Result<usize, tether::Error>) -> bool {
        match r {
            Ok(n) => self.sent(true, n),
            Err(_) => false,
        }
    }

    /// Queues a message without waiting. `false` as for [`send_prepared`](Self::send_prepared).
    pub(crate) fn send(&self, msg: Message) -> bool {
        let len = msg.len();
        self.admit() && self.sent(self.sender.start_send(msg).is_ok(), len)
    }

    /// Asks the CPU to bring in the connection's state (see [`tether::SharedSender::prefetch`]).
    pub(crate) fn prefetch(&self) {
        self.sender.prefetch();
    }

    /// Closes the connection with `code` and `reason`; nothing more is queued.
    pub(crate) fn disconnect(&self, code: u16, reason: &str) {
        self.closing.store(true, Ordering::Relaxed);
        let _ = self.sender.send_close(CloseCode(code), reason.to_owned());
    }
}

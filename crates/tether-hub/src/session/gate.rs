//! The sending side every front-end's outlet shares: a connection's [`Sender`] under the
//! hub's slow-consumer policy. Past `max_queued_bytes` unsent, the connection gets close
//! 4008 "slow consumer" and nothing more is queued; bytes sent count in the hub's metrics.

use crate::codes::close;
use crate::metrics::Metrics;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tether::{CloseCode, Message, PreparedFrame, Sender};

/// A connection's sender with the slow-consumer policy.
pub(crate) struct SendGate {
    sender: Sender,
    max_queued: usize,
    closing: AtomicBool,
    metrics: Arc<Metrics>,
}

impl SendGate {
    /// A gate over `sender` that tolerates `max_queued` unsent bytes.
    pub(crate) fn new(sender: Sender, max_queued: usize, metrics: Arc<Metrics>) -> Self {
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

    /// Queues a frame encoded once for many connections. `false` when the connection is
    /// closing, too slow, or gone.
    pub(crate) fn send_prepared(&self, frame: &PreparedFrame) -> bool {
        self.admit() && self.sent(self.sender.send_prepared(frame).is_ok(), frame.wire().len())
    }

    /// Queues a message without waiting. `false` as for [`send_prepared`](Self::send_prepared).
    pub(crate) fn send(&self, msg: Message) -> bool {
        let len = msg.len();
        self.admit() && self.sent(self.sender.start_send(msg).is_ok(), len)
    }

    /// Closes the connection with `code` and `reason`; nothing more is queued.
    pub(crate) fn disconnect(&self, code: u16, reason: &str) {
        self.closing.store(true, Ordering::Relaxed);
        let _ = self.sender.send_close(CloseCode(code), reason.to_owned());
    }
}

//! [`Config`]: every limit and timer of a connection, with its default.

use crate::deflate::DeflateConfig;
use crate::handshake::HandshakeLimits;
use std::time::Duration;

/// Limits and timers of one connection. Every field has a default; see `docs/OPERATIONS.md`
/// for the table.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Config {
    /// Largest frame payload accepted; a larger one closes with 1009. Default 16 MiB.
    pub max_frame_size: usize,
    /// Largest message (all fragments together) accepted; a larger one closes with 1009.
    /// Default 64 MiB.
    pub max_message_size: usize,
    /// Send a ping this often while the connection is open. Default: off.
    pub ping_interval: Option<Duration>,
    /// Close with 1001 when nothing has been received for this long. Default: off.
    pub idle_timeout: Option<Duration>,
    /// How long to wait for the peer's close frame after ours, and (client) for the server to
    /// close TCP after the close handshake. Default 5 s.
    pub close_timeout: Duration,
    /// How long the opening handshake may take (enforced by the I/O layer). Default 10 s.
    pub handshake_timeout: Duration,
    /// Limits on the handshake head.
    pub handshake: HandshakeLimits,
    /// Queued, unsent bytes above which sending waits (backpressure, enforced by the I/O
    /// layer). Default 1 MiB.
    pub send_buffer_limit: usize,
    /// Pongs queued at most while the peer pings faster than we write; past this the oldest
    /// is dropped (RFC 6455 5.5.3 allows answering only the latest ping). Default 32.
    pub max_pending_pongs: usize,
    /// permessage-deflate (RFC 7692): `None` (the default) neither offers nor accepts it.
    pub deflate: Option<DeflateConfig>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            max_frame_size: 16 << 20,
            max_message_size: 64 << 20,
            ping_interval: None,
            idle_timeout: None,
            close_timeout: Duration::from_secs(5),
            handshake_timeout: Duration::from_secs(10),
            handshake: HandshakeLimits::default(),
            send_buffer_limit: 1 << 20,
            max_pending_pongs: 32,
            deflate: None,
        }
    }
}

impl Config {
    /// Sets [`Config::max_frame_size`].
    pub fn with_max_frame_size(mut self, v: usize) -> Self {
        self.max_frame_size = v;
        self
    }
    /// Sets [`Config::max_message_size`].
    pub fn with_max_message_size(mut self, v: usize) -> Self {
        self.max_message_size = v;
        self
    }
    /// Sets [`Config::ping_interval`].
    pub fn with_ping_interval(mut self, v: Option<Duration>) -> Self {
        self.ping_interval = v;
        self
    }
    /// Sets [`Config::idle_timeout`].
    pub fn with_idle_timeout(mut self, v: Option<Duration>) -> Self {
        self.idle_timeout = v;
        self
    }
    /// Sets [`Config::close_timeout`].
    pub fn with_close_timeout(mut self, v: Duration) -> Self {
        self.close_timeout = v;
        self
    }
    /// Sets [`Config::handshake_timeout`].
    pub fn with_handshake_timeout(mut self, v: Duration) -> Self {
        self.handshake_timeout = v;
        self
    }
    /// Sets [`Config::handshake`].
    pub fn with_handshake_limits(mut self, v: HandshakeLimits) -> Self {
        self.handshake = v;
        self
    }
    /// Sets [`Config::max_pending_pongs`] (at least 1).
    pub fn with_max_pending_pongs(mut self, v: usize) -> Self {
        self.max_pending_pongs = v.max(1);
        self
    }
    /// Sets [`Config::deflate`].
    pub fn with_deflate(mut self, v: Option<DeflateConfig>) -> Self {
        self.deflate = v;
        self
    }
    /// Sets [`Config::send_buffer_limit`].
    pub fn with_send_buffer_limit(mut self, v: usize) -> Self {
        self.send_buffer_limit = v;
        self
    }
}

//! Flags shared by every subcommand that opens connections.

use std::time::Duration;
use tether::{Config, DeflateConfig, HandshakeLimits};

/// Connection limits, timers and compression, each a knob over [`Config`]'s default.
#[derive(Debug, clap::Args)]
pub(crate) struct LimitArgs {
    /// Use permessage-deflate compression: offer it (connect) or accept it (echo). On by
    /// default, as in browsers: text compresses well and the peer may still decline.
    #[arg(long, overrides_with = "no_deflate")]
    pub(crate) deflate: bool,
    /// Turn permessage-deflate off.
    #[arg(long, overrides_with = "deflate")]
    pub(crate) no_deflate: bool,
    /// Largest message accepted, in bytes (larger closes with 1009).
    #[arg(long, default_value_t = Config::default().max_message_size)]
    pub(crate) max_message_size: usize,
    /// Largest frame accepted, in bytes (larger closes with 1009).
    #[arg(long, default_value_t = Config::default().max_frame_size)]
    pub(crate) max_frame_size: usize,
    /// Send a ping every this many seconds (0: off).
    #[arg(long, default_value_t = 0.0)]
    pub(crate) ping_interval: f64,
    /// Close with 1001 after this many seconds without receiving anything (0: off).
    #[arg(long, default_value_t = 0.0)]
    pub(crate) idle_timeout: f64,
    /// Seconds to wait for the peer's close frame.
    #[arg(long, default_value_t = Config::default().close_timeout.as_secs_f64())]
    pub(crate) close_timeout: f64,
    /// Largest handshake head (request line and headers), in bytes (larger gets HTTP 431).
    #[arg(long, default_value_t = Config::default().handshake.max_bytes)]
    pub(crate) max_handshake_bytes: usize,
    /// Most header lines in the handshake (more gets HTTP 431).
    #[arg(long, default_value_t = Config::default().handshake.max_headers)]
    pub(crate) max_headers: usize,
    /// Queued, unsent bytes per connection above which sending waits.
    #[arg(long, default_value_t = Config::default().send_buffer_limit)]
    pub(crate) send_buffer_limit: usize,
    /// Seconds the opening handshake may take.
    #[arg(long, default_value_t = Config::default().handshake_timeout.as_secs_f64())]
    pub(crate) handshake_timeout: f64,
}

fn secs(v: f64, name: &str) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(v)
        .map_err(|_| anyhow::anyhow!("--{name} must be a non-negative number of seconds"))
}

fn optional(v: f64, name: &str) -> anyhow::Result<Option<Duration>> {
    Ok(Some(secs(v, name)?).filter(|d| !d.is_zero()))
}

impl LimitArgs {
    pub(crate) fn to_config(&self) -> anyhow::Result<Config> {
        Ok(Config::default()
            .with_max_message_size(self.max_message_size)
            .with_max_frame_size(self.max_frame_size)
            .with_ping_interval(optional(self.ping_interval, "ping-interval")?)
            .with_idle_timeout(optional(self.idle_timeout, "idle-timeout")?)
            .with_close_timeout(secs(self.close_timeout, "close-timeout")?)
            .with_handshake_timeout(secs(self.handshake_timeout, "handshake-timeout")?)
            .with_handshake_limits(HandshakeLimits {
                max_bytes: self.max_handshake_bytes,
                max_headers: self.max_headers,
            })
            .with_send_buffer_limit(self.send_buffer_limit)
            .with_deflate((!self.no_deflate).then(DeflateConfig::default)))
    }
}

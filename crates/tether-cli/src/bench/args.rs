//! The flags of `tether bench`.

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub(crate) enum Mode {
    /// Echo throughput and latency: every connection sends, waits for the echo, sends again.
    Echo,
    /// Hub fan-out: every connection subscribes (tether.json) to one of --channels channels;
    /// one publisher posts --rate publications/s through the server API; delivery rate and
    /// publish-to-delivery latency.
    Fanout,
    /// Handshake rate: each of --connections workers opens a connection, closes it (close
    /// handshake) and starts again; handshakes/s and opening-handshake latency.
    Handshake,
    /// Connection ramp: open --connections connections at --open-rate per second, hold them
    /// idle for --duration, then close them; with --server-pid, the server's memory per
    /// connection (RSS growth divided by connections held).
    Ramp,
}

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// ws:// or wss:// URL of the server.
    pub(crate) url: String,
    /// What to measure.
    #[arg(long, value_enum, default_value_t = Mode::Echo)]
    pub(crate) mode: Mode,
    /// Connections to open.
    #[arg(short = 'c', long, default_value_t = 100)]
    pub(crate) connections: usize,
    /// Message payload size in bytes.
    #[arg(short = 's', long, default_value_t = 20)]
    pub(crate) size: usize,
    /// Send binary messages (default: text).
    #[arg(long)]
    pub(crate) binary: bool,
    /// Messages in flight per connection.
    #[arg(short = 'k', long, default_value_t = 1)]
    pub(crate) in_flight: usize,
    /// Seconds to run (after every connection is open).
    #[arg(short = 'd', long, default_value_t = 10.0)]
    pub(crate) duration: f64,
    /// Stop after this many echoes (or handshakes) in total, if sooner than --duration.
    #[arg(long)]
    pub(crate) count: Option<u64>,
    /// Offer permessage-deflate (off by default: measure the framing, not zlib).
    #[arg(long)]
    pub(crate) deflate: bool,
    /// Print the result as one JSON object instead of a table.
    #[arg(long)]
    pub(crate) json: bool,
    /// No progress lines on stderr.
    #[arg(short = 'q', long)]
    pub(crate) quiet: bool,
    /// Fan-out: channels the subscribers are spread over.
    #[arg(long, default_value_t = 1)]
    pub(crate) channels: usize,
    /// Fan-out: channel name prefix (a namespace that allows anonymous subscribers and no
    /// join/leave events: `ticker` with `tether serve --demo`, or bench/hub.toml); channels
    /// are PREFIX0, PREFIX1, ...
    #[arg(long, default_value = "ticker:bench")]
    pub(crate) channel_prefix: String,
    /// Fan-out: publications per second, over all channels.
    #[arg(long, default_value_t = 10.0)]
    pub(crate) rate: f64,
    /// Fan-out: subscribers speak STOMP 1.2 (`v12.stomp`, `/topic/CHANNEL`) instead of
    /// tether.json.
    #[arg(long)]
    pub(crate) stomp: bool,
    /// Fan-out: subscribers speak Socket.IO over WebSocket (`/socket.io/?EIO=4`, the event
    /// `subscribe` with an ack, `publication` events), as socket.io-client does against
    /// `tether serve` or bench/node/socketio_fanout.mjs.
    #[arg(long, conflicts_with = "stomp")]
    pub(crate) socketio: bool,
    /// Fan-out: spread the subscribers over these hub nodes' URLs (repeatable; the
    /// publisher stays on URL) [default: URL].
    #[arg(long = "subscribe-url", value_name = "URL")]
    pub(crate) subscribe_urls: Vec<String>,
    /// Fan-out: the hub's server API key.
    #[arg(long, env = "TETHER_API_KEY", hide_env_values = true)]
    pub(crate) api_key: Option<String>,
    /// Ramp: connections opened per second.
    #[arg(long, default_value_t = 1000.0)]
    pub(crate) open_rate: f64,
    /// Ramp: the server's process id, to report its memory (RSS from /proc) per connection.
    #[arg(long, value_name = "PID")]
    pub(crate) server_pid: Option<u32>,
    /// Local address to connect from (repeatable; connections take them in turn): several
    /// 127.0.0.x addresses get past the ephemeral-port limit of one.
    #[arg(long = "local-addr", value_name = "IP")]
    pub(crate) local_addrs: Vec<std::net::IpAddr>,
    /// Trust only the CA certificates in this PEM file for wss://.
    #[arg(long, value_name = "FILE", conflicts_with = "insecure")]
    pub(crate) ca: Option<std::path::PathBuf>,
    /// Do not check the server's certificate (development only).
    #[arg(long)]
    pub(crate) insecure: bool,
}

//! `tether serve`'s settings: the raw flags (with their `TETHER_*` environment variables,
//! which clap reads) and the `--config` TOML file, resolved into one checked [`Settings`]
//! by [`resolve`], a pure function (no files, no sockets), tested below. The first source
//! that sets a value wins: flag or variable, then the file, then the default.

use anyhow::bail;
use serde::Deserialize;
use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;
use tether::OriginPolicy;
use tether_hub::broker::redis::RedisOptions;
use tether_hub::{HubOptions, NamespaceOptions, QueueLimits, SockJsOptions, SocketIoOptions, StompOptions};
use tether_socketio::engine::Cors;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// TOML configuration file (see docs/OPERATIONS.md); flags and TETHER_* variables
    /// override what it sets.
    #[arg(long, env = "TETHER_CONFIG", value_name = "FILE")]
    pub(crate) config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:8080].
    #[arg(long, env = "TETHER_LISTEN")]
    listen: Option<String>,
    /// Key for the server API (header "Authorization: apikey KEY"); without one the API is off.
    #[arg(long, env = "TETHER_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// Origins browsers may connect from (repeatable or comma-separated); "*" for any
    /// [default: the page's own host].
    #[arg(long = "allow-origin", env = "TETHER_ALLOW_ORIGIN", value_delimiter = ',')]
    allow_origins: Vec<String>,
    /// Origins whose pages may call the server API from a browser (CORS; repeatable or
    /// comma-separated); "*" for any [default: none].
    #[arg(long = "cors-origin", env = "TETHER_CORS_ORIGIN", value_delimiter = ',')]
    cors_origins: Vec<String>,
    /// A second address for the server API, /metrics and /healthz only (plain HTTP); the
    /// public address then no longer serves the API and metrics [default: none].
    #[arg(long, env = "TETHER_ADMIN_LISTEN", value_name = "ADDR")]
    admin_listen: Option<String>,
    /// Speak HTTP/1.1 only: no HTTP/2 (ALPN h2, h2c) and so no WebSocket over HTTP/2.
    #[arg(long, env = "TETHER_NO_HTTP2")]
    no_http2: bool,
    /// Streams one HTTP/2 connection may have open at once (each WebSocket over HTTP/2 is
    /// one) [default: 256].
    #[arg(long, env = "TETHER_HTTP2_MAX_STREAMS")]
    http2_max_streams: Option<u32>,
    /// No SockJS endpoints (/sockjs and /stomp-sockjs): WebSocket clients only.
    #[arg(long, env = "TETHER_NO_SOCKJS")]
    no_sockjs: bool,
    /// SockJS sessions open at once per SockJS endpoint; more get 503 [default: 10000].
    #[arg(long, env = "TETHER_SOCKJS_MAX_SESSIONS")]
    sockjs_max_sessions: Option<usize>,
    /// No Socket.IO endpoint (/socket.io/): socket.io-client apps cannot connect.
    #[arg(long, env = "TETHER_NO_SOCKETIO")]
    no_socketio: bool,
    /// Engine.IO sessions (Socket.IO clients) open at once; more get 503 [default: 10000].
    #[arg(long, env = "TETHER_SOCKETIO_MAX_SESSIONS")]
    socketio_max_sessions: Option<usize>,
    /// Largest server API request body in bytes; larger ones get 413 [default: 1048576].
    #[arg(long, env = "TETHER_MAX_BODY_SIZE")]
    max_body_size: Option<usize>,
    /// Open TCP connections at most (WebSocket or HTTP); more are answered 503 and
    /// closed [default: the open-files limit less 1088].
    #[arg(long, env = "TETHER_MAX_CONNECTIONS")]
    max_connections: Option<usize>,
    /// Connections not yet upgraded (reading a request, plain HTTP) at most; more are
    /// closed at once [default: 1024].
    #[arg(long, env = "TETHER_MAX_HANDSHAKES")]
    max_handshakes: Option<usize>,
    /// WebSocket connections per client IP at most [default: 1000].
    #[arg(long, env = "TETHER_MAX_CONNECTIONS_PER_IP")]
    max_connections_per_ip: Option<usize>,
    /// Seconds between WebSocket pings to each client (0: off) [default: 25].
    #[arg(long, env = "TETHER_PING_INTERVAL", value_name = "SECS")]
    ping_interval: Option<f64>,
    /// Seconds without anything from a client (not even a pong) before it is closed with
    /// 1001 (0: off) [default: 60].
    #[arg(long, env = "TETHER_IDLE_TIMEOUT", value_name = "SECS")]
    idle_timeout: Option<f64>,
    /// Channels one connection may subscribe to [default: 128].
    #[arg(long, env = "TETHER_MAX_CHANNELS_PER_CONNECTION")]
    max_channels_per_connection: Option<usize>,
    /// Largest client message in bytes; larger ones close the connection with 1009
    /// [default: 65536].
    #[arg(long, env = "TETHER_MAX_MESSAGE_SIZE")]
    max_message_size: Option<usize>,
    /// Unsent bytes per connection before it is disconnected as a slow consumer (close
    /// code 4008) [default: 4194304].
    #[arg(long, env = "TETHER_MAX_QUEUED_BYTES")]
    max_queued_bytes: Option<usize>,
    /// Accept permessage-deflate from clients that offer it (browsers do), answering
    /// server_no_context_takeover and client_no_context_takeover: no connection keeps a
    /// compressor between messages, and each publication is compressed once for all.
    #[arg(long, env = "TETHER_DEFLATE")]
    deflate: bool,
    /// Under load, hold the fan-out's writes back up to this many milliseconds so that each
    /// subscriber gets several publications in one write: less CPU per delivery, more
    /// latency. Only after a round of writes that took 1 ms or more, and at most as long as
    /// it took [default: 0, never; at most 1000].
    #[arg(long, env = "TETHER_FANOUT_LINGER_MS")]
    fanout_linger_ms: Option<u64>,
    /// Secret (32 bytes or more) that checks HS256 connection tokens.
    #[arg(long, env = "TETHER_TOKEN_HMAC_SECRET", hide_env_values = true, value_name = "SECRET")]
    token_hmac_secret: Option<String>,
    /// PEM file with the RSA public key that checks RS256 connection tokens.
    #[arg(long, env = "TETHER_TOKEN_RSA_PUBLIC_KEY", value_name = "FILE")]
    token_rsa_public_key: Option<PathBuf>,
    /// Share channels, history and presence with other nodes through Redis:
    /// redis://[user:password@]host:port[/db], rediss:// (TLS), or
    /// redis+sentinel://host:port[,host:port…]/service[/db] [default: memory, one node].
    #[arg(long, env = "TETHER_BROKER", value_name = "URL")]
    broker: Option<String>,
    /// The demo: serve the demo page at /, add the namespaces `chat` (anonymous clients
    /// chat) and `ticker` (anonymous subscribers) unless the config file names its own, and
    /// publish demo prices to ticker:prices twice a second.
    #[arg(long, env = "TETHER_DEMO")]
    demo: bool,
    /// Print a starting config file, every key commented with its default, and exit.
    #[arg(long)]
    pub(crate) print_config: bool,
    #[command(flatten)]
    tls: crate::tls::TlsArgs,
}

/// The `--config` file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileConfig {
    listen: Option<String>,
    api_key: Option<String>,
    allow_origins: Option<Vec<String>>,
    cors_origins: Option<Vec<String>>,
    admin_listen: Option<String>,
    http2: Option<bool>,
    http2_max_streams: Option<u32>,
    max_body_size: Option<usize>,
    max_connections: Option<usize>,
    max_handshakes: Option<usize>,
    max_connections_per_ip: Option<usize>,
    ping_interval: Option<f64>,
    idle_timeout: Option<f64>,
    max_channels_per_connection: Option<usize>,
    max_message_size: Option<usize>,
    max_queued_bytes: Option<usize>,
    deflate: Option<bool>,
    fanout_linger_ms: Option<u64>,
    demo: Option<bool>,
    token_hmac_secret: Option<String>,
    token_rsa_public_key: Option<PathBuf>,
    /// Options of channels without a namespace.
    default_namespace: Option<FileNamespace>,
    /// Namespaces by name; replaces the built-in `chat` and `ticker` when present.
    namespaces: Option<HashMap<String, FileNamespace>>,
    /// The STOMP front-end.
    stomp: Option<FileStomp>,
    /// The SockJS endpoints.
    sockjs: Option<FileSockJs>,
    /// The Socket.IO endpoint.
    socketio: Option<FileSocketIo>,
    /// Work queues (STOMP `/queue/...`).
    queues: Option<FileQueues>,
    /// `memory` or a Redis URL.
    broker: Option<String>,
    /// Settings of the Redis broker.
    redis: Option<FileRedis>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileRedis {
    prefix: Option<String>,
    presence_ttl_ms: Option<u64>,
    meta_ttl_seconds: Option<u64>,
    command_timeout_ms: Option<u64>,
    max_backoff_ms: Option<u64>,
}

impl FileConfig {
    /// The HS256 secret the file names.
    pub(crate) fn token_hmac_secret(&self) -> Option<&str> {
        self.token_hmac_secret.as_deref()
    }
}

impl FileRedis {
    fn apply(&self, mut o: RedisOptions) -> anyhow::Result<RedisOptions> {
        let ms = |name: &str, v: Option<u64>, d: Duration| -> anyhow::Result<Duration> {
            match v {
                Some(0) => bail!("redis {name} must be at least 1"),
                Some(v) => Ok(Duration::from_millis(v)),
                None => Ok(d),
            }
        };
        if let Some(p) = &self.prefix {
            if p.is_empty() || p.contains(['{', '}', ' ']) {
                bail!("redis prefix {p:?} must be non-empty, without braces or spaces");
            }
            o.prefix = p.clone();
        }
        o.presence_ttl = ms("presence_ttl_ms", self.presence_ttl_ms, o.presence_ttl)?;
        o.meta_ttl =
            ms("meta_ttl_seconds", self.meta_ttl_seconds.map(|s| s.saturating_mul(1000)), o.meta_ttl)?;
        o.command_timeout = ms("command_timeout_ms", self.command_timeout_ms, o.command_timeout)?;
        o.max_backoff = ms("max_backoff_ms", self.max_backoff_ms, o.max_backoff)?;
        Ok(o)
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileStomp {
    max_frame_size: Option<usize>,
    max_headers: Option<usize>,
    max_header_length: Option<usize>,
    heart_beat_send_ms: Option<u64>,
    heart_beat_receive_ms: Option<u64>,
    max_transaction_frames: Option<usize>,
}

impl FileStomp {
    fn apply(&self, mut o: StompOptions) -> anyhow::Result<StompOptions> {
        let l = &mut o.limits;
        l.max_frame_size = positive("stomp max_frame_size", self.max_frame_size.unwrap_or(l.max_frame_size))?;
        l.max_headers = positive("stomp max_headers", self.max_headers.unwrap_or(l.max_headers))?;
        l.max_header_length =
            positive("stomp max_header_length", self.max_header_length.unwrap_or(l.max_header_length))?;
        o.heart_beat = (
            self.heart_beat_send_ms.unwrap_or(o.heart_beat.0),
            self.heart_beat_receive_ms.unwrap_or(o.heart_beat.1),
        );
        o.max_transaction_frames = positive(
            "stomp max_transaction_frames",
            self.max_transaction_frames.unwrap_or(o.max_transaction_frames),
        )?;
        Ok(o)
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSockJs {
    prefix: Option<String>,
    stomp_prefix: Option<String>,
    websocket: Option<bool>,
    cookie_needed: Option<bool>,
    response_limit: Option<usize>,
    heartbeat: Option<f64>,
    disconnect_delay: Option<f64>,
    max_sessions: Option<usize>,
    max_queued_bytes: Option<usize>,
    max_body_size: Option<usize>,
    sockjs_url: Option<String>,
}

/// A SockJS prefix: `""` for none, else a path starting with `/`, without a trailing `/`.
fn sockjs_prefix(name: &str, v: Option<String>, default: &str) -> anyhow::Result<Option<String>> {
    let p = v.unwrap_or_else(|| default.to_owned());
    if p.is_empty() {
        return Ok(None);
    }
    if !p.starts_with('/') || p.ends_with('/') || p.contains(['?', '#', ' ']) {
        bail!("sockjs {name} {p:?} must be a path like \"/sockjs\" (or \"\" for none)");
    }
    Ok(Some(p))
}

/// The SockJS settings: the file's `[sockjs]`, flags over it; queued bytes default to the
/// hub's `max_queued_bytes`.
fn resolve_sockjs(
    file: Option<&FileSockJs>,
    off: bool,
    max_sessions: Option<usize>,
    max_queued: usize,
) -> anyhow::Result<(Option<String>, Option<String>, SockJsOptions)> {
    let none = FileSockJs::default();
    let f = file.unwrap_or(&none);
    let mut o = SockJsOptions::default();
    let (prefix, stomp_prefix) = if off {
        (None, None)
    } else {
        (
            sockjs_prefix("prefix", f.prefix.clone(), "/sockjs")?,
            sockjs_prefix("stomp_prefix", f.stomp_prefix.clone(), "/stomp-sockjs")?,
        )
    };
    if prefix.is_some() && prefix == stomp_prefix {
        bail!("sockjs prefix and stomp_prefix must differ");
    }
    o.websocket = f.websocket.unwrap_or(o.websocket);
    o.cookie_needed = f.cookie_needed.unwrap_or(o.cookie_needed);
    o.response_limit = positive("sockjs response_limit", f.response_limit.unwrap_or(o.response_limit))?;
    o.heartbeat = seconds("sockjs heartbeat", f.heartbeat, o.heartbeat)?
        .ok_or_else(|| anyhow::anyhow!("sockjs heartbeat must be more than 0"))?;
    o.disconnect_delay = seconds("sockjs disconnect_delay", f.disconnect_delay, o.disconnect_delay)?
        .ok_or_else(|| anyhow::anyhow!("sockjs disconnect_delay must be more than 0"))?;
    o.max_sessions =
        positive("sockjs max_sessions", max_sessions.or(f.max_sessions).unwrap_or(o.max_sessions))?;
    o.max_queued_bytes = positive("sockjs max_queued_bytes", f.max_queued_bytes.unwrap_or(max_queued))?;
    o.max_body_size = positive("sockjs max_body_size", f.max_body_size.unwrap_or(o.max_body_size))?;
    if let Some(url) = &f.sockjs_url {
        o.sockjs_url = url.clone();
    }
    Ok((prefix, stomp_prefix, o))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSocketIo {
    prefix: Option<String>,
    ping_interval: Option<f64>,
    ping_timeout: Option<f64>,
    max_payload: Option<usize>,
    max_sessions: Option<usize>,
    max_buffered: Option<usize>,
    connect_timeout: Option<f64>,
    polling: Option<bool>,
    websocket: Option<bool>,
    cors_origins: Option<Vec<String>>,
}

/// The Socket.IO settings: the file's `[socketio]`, flags over it; queued bytes default to
/// the hub's `max_queued_bytes`.
fn resolve_socketio(
    file: Option<&FileSocketIo>,
    off: bool,
    max_sessions: Option<usize>,
    max_queued: usize,
) -> anyhow::Result<(Option<String>, SocketIoOptions)> {
    let none = FileSocketIo::default();
    let f = file.unwrap_or(&none);
    let mut o = SocketIoOptions::default();
    let p = f.prefix.clone().unwrap_or_else(|| "/socket.io/".to_owned());
    let prefix = if off || p.is_empty() {
        None
    } else if !p.starts_with('/') || p.contains(['?', '#', ' ']) {
        bail!("socketio prefix {p:?} must be a path like \"/socket.io/\" (or \"\" for none)");
    } else {
        Some(p)
    };
    let e = &mut o.engine;
    let must = |name: &str, d: Option<Duration>| {
        d.ok_or_else(|| anyhow::anyhow!("socketio {name} must be more than 0"))
    };
    e.ping_interval =
        must("ping_interval", seconds("socketio ping_interval", f.ping_interval, e.ping_interval)?)?;
    e.ping_timeout = must("ping_timeout", seconds("socketio ping_timeout", f.ping_timeout, e.ping_timeout)?)?;
    e.max_payload = positive("socketio max_payload", f.max_payload.unwrap_or(e.max_payload))?;
    e.max_sessions =
        positive("socketio max_sessions", max_sessions.or(f.max_sessions).unwrap_or(e.max_sessions))?;
    e.max_buffered = positive("socketio max_buffered", f.max_buffered.unwrap_or(max_queued))?;
    e.polling = f.polling.unwrap_or(e.polling);
    e.websocket = f.websocket.unwrap_or(e.websocket);
    if !e.polling && !e.websocket {
        bail!("socketio needs polling or websocket (or prefix = \"\" for no Socket.IO)");
    }
    e.cors = match f.cors_origins.as_deref() {
        None | Some([]) => Cors::None,
        Some(list) if list.iter().any(|o| o == "*") => Cors::Any,
        Some(list) => Cors::Origins(list.to_vec()),
    };
    o.connect_timeout =
        must("connect_timeout", seconds("socketio connect_timeout", f.connect_timeout, o.connect_timeout)?)?;
    Ok((prefix, o))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileQueues {
    max_messages: Option<usize>,
    max_queues: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileNamespace {
    history_size: Option<usize>,
    history_ttl_seconds: Option<u64>,
    presence: Option<bool>,
    join_leave: Option<bool>,
    allow_publish: Option<bool>,
    allow_anonymous: Option<bool>,
}

impl FileNamespace {
    fn apply(&self, mut ns: NamespaceOptions) -> NamespaceOptions {
        ns.history_size = self.history_size.unwrap_or(ns.history_size);
        ns.history_ttl = self.history_ttl_seconds.map_or(ns.history_ttl, Duration::from_secs);
        ns.presence = self.presence.unwrap_or(ns.presence);
        ns.join_leave = self.join_leave.unwrap_or(ns.join_leave);
        ns.allow_publish = self.allow_publish.unwrap_or(ns.allow_publish);
        ns.allow_anonymous = self.allow_anonymous.unwrap_or(ns.allow_anonymous);
        ns
    }
}

/// The demo's namespaces (with `--demo` and no `[namespaces]` in the file): `chat` (the
/// demo's rooms, anonymous clients publish) and `ticker` (server-published).
fn demo_namespaces() -> HashMap<String, NamespaceOptions> {
    let ticker = NamespaceOptions {
        history_size: 20,
        history_ttl: Duration::from_secs(60),
        allow_anonymous: true,
        ..NamespaceOptions::default()
    };
    HashMap::from([("chat".to_owned(), NamespaceOptions::chat()), ("ticker".to_owned(), ticker)])
}

/// What `tether serve --print-config` prints: a starting config file with every key, each
/// commented out with its default (or an example where there is none). A test checks that
/// every key it names is real.
pub(crate) const TEMPLATE: &str = r#"# tether serve configuration (TOML). Flags and TETHER_* variables override these keys.
# Every key is commented out with its default; uncomment what you change.
# `tether check-config FILE` checks a file and prints the settings it resolves to.

# Address to listen on.
# listen = "127.0.0.1:8080"

# Key for the server API (header "Authorization: apikey KEY"), 16 characters or more.
# Without one the API is off (403).
# api_key = "change-me-to-a-long-random-key"

# Origins browsers may connect from; ["*"] for any. Default: the page's own host.
# allow_origins = ["https://app.example.com"]

# Origins whose pages may call the server API from a browser (CORS); ["*"] for any.
# Default: none (no CORS headers).
# cors_origins = ["https://admin.example.com"]
# A second address for the server API, /metrics and /healthz only; the public address
# then no longer serves them. Default: none (all on `listen`).
# admin_listen = "127.0.0.1:9090"
# HTTP/2 (ALPN h2 with TLS, h2c with prior knowledge) and WebSocket over HTTP/2 (RFC 8441).
# http2 = true
# Streams one HTTP/2 connection may have open at once (each WebSocket over HTTP/2 is one).
# http2_max_streams = 256
# Largest server API request body in bytes (larger: 413).
# max_body_size = 1048576

# Open TCP connections at most; more get 503. Default: the open-files limit less 1088.
# max_connections = 10000
# Connections not yet upgraded (reading a request, plain HTTP) at most.
# max_handshakes = 1024
# WebSocket connections per client IP at most.
# max_connections_per_ip = 1000

# Seconds between pings to each client, and seconds of silence before a client is closed
# with 1001 (0 turns either off).
# ping_interval = 25
# idle_timeout = 60

# Channels one connection may subscribe to.
# max_channels_per_connection = 128
# Largest client message in bytes (larger: close 1009).
# max_message_size = 65536
# Unsent bytes per connection before it is closed as a slow consumer (4008).
# max_queued_bytes = 4194304
# permessage-deflate for clients that offer it (browsers do), without context takeover on
# either side: each publication is compressed once for every such subscriber.
# deflate = false
# Under load (a round of fan-out writes took 1 ms or more), hold the next round back up to
# this many milliseconds, so that each subscriber gets several publications in one write:
# less CPU per delivery, more latency. 0: never (at most 1000).
# fanout_linger_ms = 0

# The demo page, the demo namespaces (when [namespaces] is absent) and the demo prices.
# demo = false

# Keys that check connection tokens (JWT): an HS256 secret of 32 bytes or more, and/or
# the PEM file of an RS256 public key. Without them every token is refused.
# token_hmac_secret = "change-me-to-a-secret-of-32-bytes-or-more"
# token_rsa_public_key = "/etc/tether/issuer-public.pem"

# "memory" (one node), or Redis to share channels between nodes: redis://host:port[/db],
# rediss:// (TLS), redis+sentinel://host:port[,host:port]/service[/db].
# broker = "redis://127.0.0.1:6379"

# Channels without a namespace ("news", not "chat:news"). All false or 0 by default:
# token holders subscribe, only the server API publishes, nothing is kept.
# [default_namespace]
# history_size = 0
# history_ttl_seconds = 300
# presence = false
# join_leave = false
# allow_publish = false
# allow_anonymous = false

# Namespaces by name: a channel "chat:lobby" is in "chat"; a channel in a namespace not
# listed is refused. The keys are those of [default_namespace]; this one is the demo's chat.
# [namespaces.chat]
# history_size = 100
# history_ttl_seconds = 600
# presence = true
# join_leave = true
# allow_publish = true
# allow_anonymous = true

# STOMP (at /stomp, and at /ws with a v1x.stomp subprotocol).
# [stomp]
# max_frame_size = 65536
# max_headers = 64
# max_header_length = 8192
# heart_beat_send_ms = 10000
# heart_beat_receive_ms = 10000
# max_transaction_frames = 1000

# SockJS, for browsers where WebSocket does not get through: tether.json at `prefix`,
# STOMP at `stomp_prefix` ("" turns either off; --no-sockjs turns both off).
# [sockjs]
# prefix = "/sockjs"
# stomp_prefix = "/stomp-sockjs"
# websocket = true
# cookie_needed = false
# response_limit = 131072
# heartbeat = 25
# disconnect_delay = 5
# max_sessions = 10000
# max_queued_bytes = 4194304
# max_body_size = 65536
# sockjs_url = "https://cdn.jsdelivr.net/npm/sockjs-client@1/dist/sockjs.min.js"

# Socket.IO (socket.io-client 4.x): tether.json's commands as events at `prefix` ("" or
# --no-socketio turns it off). cors_origins: pages of other origins that may poll ("*": any).
# [socketio]
# prefix = "/socket.io/"
# ping_interval = 25
# ping_timeout = 20
# max_payload = 1000000
# max_sessions = 10000
# max_buffered = 4194304
# connect_timeout = 45
# polling = true
# websocket = true
# cors_origins = []

# Work queues (STOMP /queue/NAME).
# [queues]
# max_messages = 10000
# max_queues = 10000

# The Redis broker's settings (when broker names Redis).
# [redis]
# prefix = "tether"
# presence_ttl_ms = 30000
# meta_ttl_seconds = 86400
# command_timeout_ms = 2000
# max_backoff_ms = 5000
"#;

/// A number of seconds from a flag or the file, `default` without one; 0 turns it off.
fn seconds(name: &str, v: Option<f64>, default: Duration) -> anyhow::Result<Option<Duration>> {
    let Some(v) = v else { return Ok(Some(default)) };
    let d = Duration::try_from_secs_f64(v)
        .map_err(|_| anyhow::anyhow!("{name} must be a non-negative number of seconds"))?;
    Ok(Some(d).filter(|d| !d.is_zero()))
}

fn positive(name: &str, v: usize) -> anyhow::Result<usize> {
    if v == 0 {
        bail!("{name} must be at least 1");
    }
    Ok(v)
}

/// Everything `tether serve` needs to start, checked.
#[derive(Debug)]
pub(crate) struct Settings {
    pub(crate) listen: String,
    pub(crate) api_key: Option<String>,
    pub(crate) origin: OriginPolicy,
    pub(crate) cors_origins: Vec<String>,
    pub(crate) admin_listen: Option<String>,
    pub(crate) http2: bool,
    pub(crate) http2_max_streams: u32,
    pub(crate) max_body_size: usize,
    pub(crate) max_connections: usize,
    pub(crate) max_handshakes: usize,
    pub(crate) max_connections_per_ip: usize,
    pub(crate) max_message_size: usize,
    /// permessage-deflate offered, without context takeover.
    pub(crate) deflate: bool,
    /// How long the fan-out's writes may wait under load (zero: never).
    pub(crate) fanout_linger: Duration,
    /// `None`: off.
    pub(crate) ping_interval: Option<Duration>,
    /// `None`: off.
    pub(crate) idle_timeout: Option<Duration>,
    pub(crate) hub: HubOptions,
    pub(crate) stomp: StompOptions,
    pub(crate) sockjs_prefix: Option<String>,
    pub(crate) sockjs_stomp_prefix: Option<String>,
    pub(crate) sockjs: SockJsOptions,
    pub(crate) socketio_prefix: Option<String>,
    pub(crate) socketio: SocketIoOptions,
    pub(crate) demo: bool,
    pub(crate) token_hmac_secret: Option<String>,
    pub(crate) token_rsa_public_key: Option<PathBuf>,
    /// The Redis broker's settings; `None` for the memory broker.
    pub(crate) redis: Option<RedisOptions>,
    pub(crate) tls: crate::tls::TlsArgs,
}

impl Settings {
    /// The settings as `tether check-config` prints them: TOML with every key resolved
    /// (secrets shown as set or not, never printed).
    pub(crate) fn describe(&self) -> String {
        use std::fmt::Write as _;
        let secs = |d: Option<Duration>| d.map_or(0.0, |d| d.as_secs_f64());
        let secret = |v: bool| if v { "\"(set)\"" } else { "\"(none)\"" };
        let mut out = String::new();
        let _ = writeln!(out, "listen = {:?}", self.listen);
        let _ = writeln!(
            out,
            "api_key = {}  # the server API is {}",
            secret(self.api_key.is_some()),
            if self.api_key.is_some() { "on" } else { "off" }
        );
        let origins = match &self.origin {
            OriginPolicy::Any => "[\"*\"]".to_owned(),
            OriginPolicy::AllowList(list) => format!("{list:?}"),
            OriginPolicy::SameHost => "[]  # the page's own host".to_owned(),
            other => format!("[]  # {other:?}"),
        };
        let _ = writeln!(out, "allow_origins = {origins}");
        let _ = writeln!(out, "cors_origins = {:?}", self.cors_origins);
        match &self.admin_listen {
            Some(addr) => _ = writeln!(out, "admin_listen = {addr:?}"),
            None => out.push_str("# admin_listen: none, the API and metrics are on `listen`\n"),
        }
        let _ = writeln!(out, "http2 = {}", self.http2);
        let _ = writeln!(out, "http2_max_streams = {}", self.http2_max_streams);
        let _ = writeln!(out, "max_body_size = {}", self.max_body_size);
        let _ = writeln!(out, "max_connections = {}", self.max_connections);
        let _ = writeln!(out, "max_handshakes = {}", self.max_handshakes);
        let _ = writeln!(out, "max_connections_per_ip = {}", self.max_connections_per_ip);
        let _ = writeln!(out, "ping_interval = {}", secs(self.ping_interval));
        let _ = writeln!(out, "idle_timeout = {}", secs(self.idle_timeout));
        let _ = writeln!(out, "max_channels_per_connection = {}", self.hub.max_channels_per_connection);
        let _ = writeln!(out, "max_message_size = {}", self.max_message_size);
        let _ = writeln!(out, "max_queued_bytes = {}", self.hub.max_queued_bytes);
        let _ = writeln!(out, "deflate = {}", self.deflate);
        let _ = writeln!(out, "fanout_linger_ms = {}", self.fanout_linger.as_millis());
        let _ = writeln!(out, "demo = {}", self.demo);
        let _ = writeln!(out, "token_hmac_secret = {}", secret(self.token_hmac_secret.is_some()));
        match &self.token_rsa_public_key {
            Some(path) => _ = writeln!(out, "token_rsa_public_key = {:?}", path.display().to_string()),
            None => _ = writeln!(out, "token_rsa_public_key = \"(none)\""),
        }
        if self.token_hmac_secret.is_none() && self.token_rsa_public_key.is_none() {
            out.push_str("# no token keys: every token is refused, only anonymous clients connect\n");
        }
        let _ = writeln!(out, "broker = {:?}", self.redis.as_ref().map_or("memory", |r| r.url.as_str()));
        let namespace = |out: &mut String, header: &str, ns: &NamespaceOptions| {
            let _ = writeln!(out, "\n[{header}]");
            let _ = writeln!(out, "history_size = {}", ns.history_size);
            let _ = writeln!(out, "history_ttl_seconds = {}", ns.history_ttl.as_secs());
            let _ = writeln!(out, "presence = {}", ns.presence);
            let _ = writeln!(out, "join_leave = {}", ns.join_leave);
            let _ = writeln!(out, "allow_publish = {}", ns.allow_publish);
            let _ = writeln!(out, "allow_anonymous = {}", ns.allow_anonymous);
        };
        namespace(&mut out, "default_namespace", &self.hub.default_namespace);
        let mut names: Vec<&String> = self.hub.namespaces.keys().collect();
        names.sort();
        if names.is_empty() {
            out.push_str("\n# no namespaces: a channel \"ns:name\" is refused\n");
        }
        for name in names {
            namespace(&mut out, &format!("namespaces.{name}"), &self.hub.namespaces[name]);
        }
        let l = &self.stomp.limits;
        let _ = writeln!(
            out,
            "\n[stomp]\nmax_frame_size = {}\nmax_headers = {}\nmax_header_length = {}",
            l.max_frame_size, l.max_headers, l.max_header_length
        );
        let _ = writeln!(
            out,
            "heart_beat_send_ms = {}\nheart_beat_receive_ms = {}",
            self.stomp.heart_beat.0, self.stomp.heart_beat.1
        );
        let _ = writeln!(out, "max_transaction_frames = {}", self.stomp.max_transaction_frames);
        let j = &self.sockjs;
        let _ = writeln!(
            out,
            "\n[sockjs]\nprefix = {:?}\nstomp_prefix = {:?}",
            self.sockjs_prefix.as_deref().unwrap_or(""),
            self.sockjs_stomp_prefix.as_deref().unwrap_or("")
        );
        let _ = writeln!(out, "websocket = {}\ncookie_needed = {}", j.websocket, j.cookie_needed);
        let _ = writeln!(out, "response_limit = {}", j.response_limit);
        let _ = writeln!(out, "heartbeat = {}", j.heartbeat.as_secs_f64());
        let _ = writeln!(out, "disconnect_delay = {}", j.disconnect_delay.as_secs_f64());
        let _ = writeln!(out, "max_sessions = {}\nmax_queued_bytes = {}", j.max_sessions, j.max_queued_bytes);
        let _ = writeln!(out, "max_body_size = {}\nsockjs_url = {:?}", j.max_body_size, j.sockjs_url);
        let e = &self.socketio.engine;
        let _ = writeln!(out, "\n[socketio]\nprefix = {:?}", self.socketio_prefix.as_deref().unwrap_or(""));
        let _ = writeln!(
            out,
            "ping_interval = {}\nping_timeout = {}",
            e.ping_interval.as_secs_f64(),
            e.ping_timeout.as_secs_f64()
        );
        let _ = writeln!(
            out,
            "max_payload = {}\nmax_sessions = {}\nmax_buffered = {}",
            e.max_payload, e.max_sessions, e.max_buffered
        );
        let _ = writeln!(out, "connect_timeout = {}", self.socketio.connect_timeout.as_secs_f64());
        let _ = writeln!(out, "polling = {}\nwebsocket = {}", e.polling, e.websocket);
        let origins = match &e.cors {
            Cors::Any => vec!["*".to_owned()],
            Cors::Origins(list) => list.clone(),
            _ => Vec::new(),
        };
        let _ = writeln!(out, "cors_origins = {origins:?}");
        let q = &self.hub.queue_limits;
        let _ = writeln!(out, "\n[queues]\nmax_messages = {}\nmax_queues = {}", q.max_messages, q.max_queues);
        if let Some(r) = &self.redis {
            let _ = writeln!(
                out,
                "\n[redis]\nprefix = {:?}\npresence_ttl_ms = {}",
                r.prefix,
                r.presence_ttl.as_millis()
            );
            let _ = writeln!(
                out,
                "meta_ttl_seconds = {}\ncommand_timeout_ms = {}",
                r.meta_ttl.as_secs(),
                r.command_timeout.as_millis()
            );
            let _ = writeln!(out, "max_backoff_ms = {}", r.max_backoff.as_millis());
        }
        out
    }
}

/// Resolves the flags and the file into checked settings.
pub(crate) fn resolve(args: Args, file: FileConfig) -> anyhow::Result<Settings> {
    let listen = args.listen.or(file.listen).unwrap_or_else(|| "127.0.0.1:8080".into());
    let api_key = args.api_key.or(file.api_key).filter(|k| !k.is_empty());
    if api_key.as_ref().is_some_and(|k| k.len() < 16) {
        bail!("api key must be at least 16 characters");
    }
    let origins = if args.allow_origins.is_empty() {
        file.allow_origins.unwrap_or_default()
    } else {
        args.allow_origins
    };
    let origin = match origins.as_slice() {
        [] => OriginPolicy::SameHost,
        [any] if any == "*" => OriginPolicy::Any,
        list => OriginPolicy::AllowList(list.to_vec()),
    };
    let defaults = tether::ServerConfig::default();
    let cors_origins =
        if args.cors_origins.is_empty() { file.cors_origins.unwrap_or_default() } else { args.cors_origins };
    let admin_listen = args.admin_listen.or(file.admin_listen).filter(|a| !a.is_empty());
    let http2 = !args.no_http2 && file.http2.unwrap_or(true);
    let http2_max_streams = args.http2_max_streams.or(file.http2_max_streams).unwrap_or(256);
    if http2_max_streams == 0 {
        bail!("http2 max streams must be at least 1");
    }
    let max_body_size = positive(
        "max body size",
        args.max_body_size.or(file.max_body_size).unwrap_or(defaults.max_body_size),
    )?;
    let max_connections = positive(
        "max connections",
        args.max_connections.or(file.max_connections).unwrap_or(defaults.max_connections),
    )?;
    let max_handshakes = positive(
        "max handshakes",
        args.max_handshakes.or(file.max_handshakes).unwrap_or(defaults.max_handshakes),
    )?;
    let max_per_ip = positive(
        "max connections per ip",
        args.max_connections_per_ip.or(file.max_connections_per_ip).unwrap_or(1_000),
    )?;
    let max_channels = positive(
        "max channels per connection",
        args.max_channels_per_connection.or(file.max_channels_per_connection).unwrap_or(128),
    )?;
    let max_message =
        positive("max message size", args.max_message_size.or(file.max_message_size).unwrap_or(64 * 1024))?;
    let max_queued =
        positive("max queued bytes", args.max_queued_bytes.or(file.max_queued_bytes).unwrap_or(4 << 20))?;
    let demo = args.demo || file.demo.unwrap_or(false);
    let deflate = args.deflate || file.deflate.unwrap_or(false);
    let fanout_linger_ms = args.fanout_linger_ms.or(file.fanout_linger_ms).unwrap_or(0);
    if fanout_linger_ms > 1000 {
        bail!("fanout linger must be at most 1000 ms, not {fanout_linger_ms}");
    }
    let fanout_linger = Duration::from_millis(fanout_linger_ms);
    // Without `--demo` and without namespaces in the file there are none: channels without
    // a namespace only, for token holders, published by the server API.
    let namespaces = match &file.namespaces {
        Some(list) => {
            list.iter().map(|(name, ns)| (name.clone(), ns.apply(NamespaceOptions::default()))).collect()
        }
        None if demo => demo_namespaces(),
        None => HashMap::new(),
    };
    for name in namespaces.keys() {
        if name.is_empty() || name.contains(':') {
            bail!("namespace name {name:?} must be non-empty and without ':'");
        }
    }
    let default_namespace = file
        .default_namespace
        .as_ref()
        .map_or_else(NamespaceOptions::default, |ns| ns.apply(NamespaceOptions::default()));
    let stomp =
        file.stomp.as_ref().map_or(Ok(StompOptions::default()), |s| s.apply(StompOptions::default()))?;
    let (sockjs_prefix, sockjs_stomp_prefix, sockjs) =
        resolve_sockjs(file.sockjs.as_ref(), args.no_sockjs, args.sockjs_max_sessions, max_queued)?;
    let (socketio_prefix, socketio) =
        resolve_socketio(file.socketio.as_ref(), args.no_socketio, args.socketio_max_sessions, max_queued)?;
    let mut queue_limits = QueueLimits::default();
    if let Some(q) = &file.queues {
        queue_limits.max_messages =
            positive("queues max_messages", q.max_messages.unwrap_or(queue_limits.max_messages))?;
        queue_limits.max_queues =
            positive("queues max_queues", q.max_queues.unwrap_or(queue_limits.max_queues))?;
    }
    let hub_options = HubOptions {
        default_namespace,
        namespaces,
        max_channels_per_connection: max_channels,
        max_queued_bytes: max_queued,
        queue_limits,
        ..HubOptions::default()
    };

    let ping =
        seconds("ping interval", args.ping_interval.or(file.ping_interval), tether_hub::http::PING_INTERVAL)?;
    let idle =
        seconds("idle timeout", args.idle_timeout.or(file.idle_timeout), tether_hub::http::IDLE_TIMEOUT)?;
    let broker = args.broker.or(file.broker).filter(|b| b != "memory");
    let redis = match broker {
        None => None,
        Some(url) => {
            if !["redis://", "rediss://", "redis+sentinel://"].iter().any(|s| url.starts_with(s)) {
                bail!("broker {url:?} must be \"memory\" or a redis://, rediss:// or redis+sentinel:// URL");
            }
            let options = RedisOptions::new(url);
            Some(match &file.redis {
                Some(r) => r.apply(options)?,
                None => options,
            })
        }
    };
    Ok(Settings {
        listen,
        api_key,
        origin,
        cors_origins,
        admin_listen,
        http2,
        http2_max_streams,
        max_body_size,
        max_connections,
        max_handshakes,
        max_connections_per_ip: max_per_ip,
        max_message_size: max_message,
        deflate,
        fanout_linger,
        ping_interval: ping,
        idle_timeout: idle,
        hub: hub_options,
        stomp,
        sockjs_prefix,
        sockjs_stomp_prefix,
        sockjs,
        socketio_prefix,
        socketio,
        demo,
        token_hmac_secret: args.token_hmac_secret.or(file.token_hmac_secret),
        token_rsa_public_key: args.token_rsa_public_key.or(file.token_rsa_public_key),
        redis,
        tls: args.tls,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: Args,
    }

    fn args(flags: &[&str]) -> Args {
        Cli::try_parse_from(std::iter::once("serve").chain(flags.iter().copied())).unwrap().args
    }

    fn file(toml_text: &str) -> FileConfig {
        toml::from_str(toml_text).unwrap()
    }

    fn error(flags: &[&str], toml_text: &str) -> String {
        resolve(args(flags), file(toml_text)).unwrap_err().to_string()
    }

    #[test]
    fn defaults_without_flags_or_file() {
        let s = resolve(args(&[]), FileConfig::default()).unwrap();
        assert_eq!(s.listen, "127.0.0.1:8080");
        assert_eq!(s.api_key, None);
        assert_eq!(s.origin, OriginPolicy::SameHost);
        assert_eq!((s.max_connections_per_ip, s.max_message_size), (1_000, 64 * 1024));
        assert_eq!(s.ping_interval, Some(tether_hub::http::PING_INTERVAL));
        assert_eq!(s.idle_timeout, Some(tether_hub::http::IDLE_TIMEOUT));
        assert_eq!(s.hub.max_channels_per_connection, 128);
        assert_eq!(s.hub.max_queued_bytes, 4 << 20);
        // No demo, no namespaces: nothing anonymous clients may use.
        assert!(s.hub.namespaces.is_empty());
        assert!(!s.hub.default_namespace.allow_anonymous && !s.hub.default_namespace.allow_publish);
        assert!(s.redis.is_none());
        assert!(!s.demo && !s.deflate);
        assert!(s.cors_origins.is_empty() && s.admin_listen.is_none() && s.http2);
        assert_eq!(s.max_body_size, 1 << 20);
    }

    #[test]
    fn fanout_linger_from_the_flag_or_the_file_and_bounded() {
        assert_eq!(resolve(args(&[]), FileConfig::default()).unwrap().fanout_linger, Duration::ZERO);
        let s = resolve(args(&["--fanout-linger-ms", "20"]), FileConfig::default()).unwrap();
        assert_eq!(s.fanout_linger, Duration::from_millis(20));
        assert!(s.describe().contains("fanout_linger_ms = 20"));
        let s = resolve(args(&[]), file("fanout_linger_ms = 5")).unwrap();
        assert_eq!(s.fanout_linger, Duration::from_millis(5));
        // The flag wins over the file.
        let s = resolve(args(&["--fanout-linger-ms", "0"]), file("fanout_linger_ms = 5")).unwrap();
        assert_eq!(s.fanout_linger, Duration::ZERO);
        let e = resolve(args(&["--fanout-linger-ms", "1001"]), FileConfig::default()).unwrap_err();
        assert!(e.to_string().contains("at most 1000 ms"), "{e}");
    }

    #[test]
    fn deflate_from_the_flag_or_the_file() {
        assert!(resolve(args(&["--deflate"]), FileConfig::default()).unwrap().deflate);
        let s = resolve(args(&[]), file("deflate = true")).unwrap();
        assert!(s.deflate);
        assert!(s.describe().contains("deflate = true"));
        assert!(!resolve(args(&[]), file("deflate = false")).unwrap().deflate);
    }

    #[test]
    fn sockjs_settings() {
        let s = resolve(args(&[]), FileConfig::default()).unwrap();
        assert_eq!(
            (s.sockjs_prefix.as_deref(), s.sockjs_stomp_prefix.as_deref()),
            (Some("/sockjs"), Some("/stomp-sockjs"))
        );
        assert_eq!((s.sockjs.max_sessions, s.sockjs.max_body_size), (10_000, 64 * 1024));
        assert_eq!(s.sockjs.max_queued_bytes, s.hub.max_queued_bytes);
        let toml =
            "max_queued_bytes = 1000\n[sockjs]\nprefix = \"/rt\"\nstomp_prefix = \"\"\nmax_sessions = 5\n\
                    max_body_size = 100\ndisconnect_delay = 0.5\ncookie_needed = true\nwebsocket = false\n";
        let s = resolve(args(&["--sockjs-max-sessions", "7"]), file(toml)).unwrap();
        assert_eq!((s.sockjs_prefix.as_deref(), s.sockjs_stomp_prefix.as_deref()), (Some("/rt"), None));
        assert_eq!(
            (s.sockjs.max_sessions, s.sockjs.max_body_size, s.sockjs.max_queued_bytes),
            (7, 100, 1000)
        );
        assert_eq!(s.sockjs.disconnect_delay, Duration::from_millis(500));
        assert!(s.sockjs.cookie_needed && !s.sockjs.websocket);
        let s = resolve(args(&["--no-sockjs"]), file(toml)).unwrap();
        assert_eq!((s.sockjs_prefix, s.sockjs_stomp_prefix), (None, None));
        assert!(error(&[], "[sockjs]\nprefix = \"sockjs/\"\n").contains("must be a path"));
        assert!(error(&[], "[sockjs]\nstomp_prefix = \"/sockjs\"\n").contains("must differ"));
        assert!(error(&["--sockjs-max-sessions", "0"], "").contains("sockjs max_sessions"));
        assert!(error(&[], "[sockjs]\nheartbeat = 0\n").contains("sockjs heartbeat"));
    }

    #[test]
    fn socketio_settings() {
        let s = resolve(args(&[]), FileConfig::default()).unwrap();
        assert_eq!(s.socketio_prefix.as_deref(), Some("/socket.io/"));
        let e = &s.socketio.engine;
        assert_eq!(
            (e.max_sessions, e.max_payload, e.max_buffered),
            (10_000, 1_000_000, s.hub.max_queued_bytes)
        );
        assert_eq!((e.ping_interval, e.ping_timeout), (Duration::from_secs(25), Duration::from_secs(20)));
        assert_eq!(e.cors, Cors::None);
        let toml =
            "[socketio]\nprefix = \"/sio/\"\nping_interval = 0.5\nmax_sessions = 5\nmax_payload = 100\n\
                    connect_timeout = 2\npolling = false\ncors_origins = [\"https://a.example\"]\n";
        let s = resolve(args(&["--socketio-max-sessions", "7"]), file(toml)).unwrap();
        let e = &s.socketio.engine;
        assert_eq!(s.socketio_prefix.as_deref(), Some("/sio/"));
        assert_eq!((e.max_sessions, e.max_payload, e.ping_interval), (7, 100, Duration::from_millis(500)));
        assert_eq!(s.socketio.connect_timeout, Duration::from_secs(2));
        assert!(!e.polling && e.websocket);
        assert_eq!(e.cors, Cors::Origins(vec!["https://a.example".into()]));
        assert_eq!(resolve(args(&["--no-socketio"]), file(toml)).unwrap().socketio_prefix, None);
        assert_eq!(resolve(args(&[]), file("[socketio]\nprefix = \"\"\n")).unwrap().socketio_prefix, None);
        assert!(error(&[], "[socketio]\nprefix = \"socket.io\"\n").contains("must be a path"));
        assert!(error(&["--socketio-max-sessions", "0"], "").contains("socketio max_sessions"));
        assert!(error(&[], "[socketio]\nping_timeout = 0\n").contains("socketio ping_timeout"));
        assert!(
            error(&[], "[socketio]\npolling = false\nwebsocket = false\n").contains("polling or websocket")
        );
    }

    #[test]
    fn the_demo_brings_its_namespaces_unless_the_file_names_some() {
        let s = resolve(args(&["--demo"]), FileConfig::default()).unwrap();
        let mut names: Vec<&str> = s.hub.namespaces.keys().map(String::as_str).collect();
        names.sort_unstable();
        assert_eq!(names, ["chat", "ticker"]);
        assert!(s.hub.namespaces["chat"].allow_anonymous && s.hub.namespaces["chat"].allow_publish);
        let s = resolve(args(&["--demo"]), file("[namespaces.news]\n")).unwrap();
        assert_eq!(s.hub.namespaces.keys().collect::<Vec<_>>(), ["news"]);
    }

    /// The starting file `--print-config` prints parses as it is (all commented), and with
    /// every key uncommented it parses too: each key it names exists, with a valid value.
    #[test]
    fn the_printed_config_names_real_keys() {
        let commented = file(TEMPLATE);
        assert!(commented.listen.is_none() && commented.namespaces.is_none());
        let open: String = TEMPLATE
            .lines()
            .map(|l| l.strip_prefix("# ").filter(|k| k.starts_with('[') || k.contains(" = ")).unwrap_or(l))
            .map(|l| format!("{l}\n"))
            .collect();
        let all = file(&open);
        let s = resolve(args(&[]), all).unwrap();
        // The values it shows are the defaults (examples where there is none).
        let d = resolve(args(&[]), FileConfig::default()).unwrap();
        assert_eq!(
            (s.listen, s.max_handshakes, s.max_connections_per_ip),
            (d.listen, d.max_handshakes, 1000)
        );
        assert_eq!(
            (s.ping_interval, s.idle_timeout, s.max_message_size),
            (d.ping_interval, d.idle_timeout, d.max_message_size)
        );
        assert_eq!(
            (s.hub.max_channels_per_connection, s.hub.max_queued_bytes),
            (128, d.hub.max_queued_bytes)
        );
        assert_eq!(
            (s.hub.default_namespace, s.hub.queue_limits),
            (d.hub.default_namespace, d.hub.queue_limits)
        );
        assert_eq!(s.hub.namespaces["chat"], NamespaceOptions::chat());
        assert_eq!(s.stomp, d.stomp);
        let (redis, default) = (s.redis.unwrap(), RedisOptions::new(String::new()));
        assert_eq!(
            (redis.prefix, redis.presence_ttl, redis.meta_ttl),
            (default.prefix, default.presence_ttl, default.meta_ttl)
        );
        assert_eq!(
            (redis.command_timeout, redis.max_backoff),
            (default.command_timeout, default.max_backoff)
        );
        assert!(s.api_key.is_some() && !s.demo);
        assert_eq!((s.http2, s.max_body_size, s.http2_max_streams), (d.http2, d.max_body_size, 256));
        assert_eq!(s.admin_listen.as_deref(), Some("127.0.0.1:9090"));
        let keys = open.lines().filter(|l| l.contains(" = ") && !l.starts_with('#')).count();
        assert!(keys >= 40, "{keys} keys uncommented");
    }

    #[test]
    fn a_flag_wins_over_the_file_and_the_file_over_the_default() {
        let f = "listen = \"127.0.0.1:9001\"\nmax_channels_per_connection = 7\nping_interval = 5\n";
        let s = resolve(args(&["--listen", "127.0.0.1:9002"]), file(f)).unwrap();
        assert_eq!(s.listen, "127.0.0.1:9002");
        assert_eq!(s.hub.max_channels_per_connection, 7);
        assert_eq!(s.ping_interval, Some(Duration::from_secs(5)));
        let s = resolve(args(&["--allow-origin", "https://a.example,https://b.example"]), file(f)).unwrap();
        assert_eq!(s.listen, "127.0.0.1:9001");
        assert_eq!(
            s.origin,
            OriginPolicy::AllowList(vec!["https://a.example".into(), "https://b.example".into()])
        );
        assert_eq!(
            resolve(args(&["--allow-origin", "*"]), FileConfig::default()).unwrap().origin,
            OriginPolicy::Any
        );
    }

    #[test]
    fn zero_turns_timers_off_and_bad_values_are_refused() {
        let s =
            resolve(args(&["--ping-interval", "0", "--idle-timeout", "0"]), FileConfig::default()).unwrap();
        assert_eq!((s.ping_interval, s.idle_timeout), (None, None));
        assert!(error(&["--ping-interval=-1"], "").contains("non-negative number of seconds"));
        assert!(error(&["--max-message-size", "0"], "").contains("at least 1"));
        assert!(error(&["--api-key", "short"], "").contains("at least 16 characters"));
        assert!(error(&[], "[namespaces.\"a:b\"]\n").contains("without ':'"));
        assert!(error(&[], "[stomp]\nmax_frame_size = 0\n").contains("stomp max_frame_size"));
    }

    #[test]
    fn namespaces_in_the_file_replace_the_built_in_ones() {
        let s =
            resolve(args(&[]), file("[namespaces.news]\nhistory_size = 5\nallow_publish = true\n")).unwrap();
        let names: Vec<&str> = s.hub.namespaces.keys().map(String::as_str).collect();
        assert_eq!(names, ["news"]);
        let news = &s.hub.namespaces["news"];
        assert_eq!((news.history_size, news.allow_publish, news.presence), (5, true, false));
    }

    /// What `check-config` prints is a config file that resolves to the same settings.
    #[test]
    fn the_description_reads_back_as_the_same_settings() {
        let f = "allow_origins = [\"https://a.example\"]\nping_interval = 5\nbroker = \"redis://127.0.0.1:6390\"\n[namespaces.news]\nhistory_size = 5\n[redis]\nprefix = \"app\"\n";
        let s = resolve(args(&[]), file(f)).unwrap();
        let text = s.describe();
        // Secrets are never printed; put back what they stand for before reading it again.
        assert!(text.contains("api_key = \"(none)\""), "{text}");
        let back = text
            .replace("api_key = \"(none)\"", "")
            .replace("token_hmac_secret = \"(none)\"", "")
            .replace("token_rsa_public_key = \"(none)\"", "");
        let again = resolve(args(&[]), file(&back)).unwrap();
        assert_eq!(again.describe(), text);
        assert_eq!((again.origin, again.ping_interval), (s.origin, s.ping_interval));
        assert_eq!((again.hub, again.stomp), (s.hub, s.stomp));
        assert_eq!(again.redis.unwrap().prefix, "app");
    }

    #[test]
    fn brokers() {
        assert!(resolve(args(&["--broker", "memory"]), FileConfig::default()).unwrap().redis.is_none());
        let f = "[redis]\nprefix = \"app\"\npresence_ttl_ms = 900\n";
        let redis = resolve(args(&["--broker", "redis://127.0.0.1:6390"]), file(f)).unwrap().redis.unwrap();
        assert_eq!((redis.url.as_str(), redis.prefix.as_str()), ("redis://127.0.0.1:6390", "app"));
        assert_eq!(redis.presence_ttl, Duration::from_millis(900));
        assert!(error(&["--broker", "http://127.0.0.1"], "").contains("must be \"memory\""));
        assert!(error(&["--broker", "redis://h"], "[redis]\nprefix = \"a b\"\n").contains("prefix"));
    }
}

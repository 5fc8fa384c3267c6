//! `tether bridge`: TCP and UDP sockets over WebSocket, both ways.
//!
//! - `--listen ws[s]://ADDR/ --to tcp://HOST:PORT` (or `udp://`): each WebSocket gets its
//!   own connection (or UDP socket) to the target; binary messages carry the bytes.
//! - `--listen tcp://ADDR --to ws[s]://…` (or `--listen udp://ADDR`): each TCP client (or
//!   UDP peer) gets its own WebSocket to the URL, through the proxy the environment names.
//!
//! A bridge forwards only to targets it was given (`--to`, `--route`, `--routes-file`); a
//! client picks one of them by name (`?token=NAME` or `/NAME`), never by address.

mod pump;
mod routes;
mod sockets;
mod websocket;

use anyhow::{bail, Context as _};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Where to listen: ws://ADDR/ or wss://ADDR/ (WebSocket clients, to sockets), or
    /// tcp://ADDR or udp://ADDR (socket clients, to a WebSocket).
    #[arg(long, value_name = "URL")]
    pub(crate) listen: String,
    /// The target: tcp://HOST:PORT or udp://HOST:PORT when listening for WebSocket (the
    /// default route), ws[s]://… when listening on a socket.
    #[arg(long, value_name = "URL")]
    pub(crate) to: Option<String>,
    /// A named target (repeatable): a client asks for it with ?token=NAME or the path /NAME.
    #[arg(long = "route", value_name = "NAME=URL")]
    pub(crate) routes: Vec<String>,
    /// A file of named targets, one per line: `NAME: HOST:PORT` (websockify's token file,
    /// TCP) or `NAME=URL`; `#` starts a comment.
    #[arg(long, value_name = "FILE")]
    pub(crate) routes_file: Option<PathBuf>,
    /// WebSocket clients must present this token (`Authorization: Bearer TOKEN` or
    /// `?access_token=TOKEN`).
    #[arg(long, env = "TETHER_BRIDGE_ACCESS_TOKEN", hide_env_values = true, value_name = "TOKEN")]
    pub(crate) access_token: Option<String>,
    /// WebSocket clients must present a JWT signed with this secret (HS256, 32 bytes or
    /// more), as the hub's; a `channels` claim limits the routes it may use.
    #[arg(long, env = "TETHER_TOKEN_HMAC_SECRET", hide_env_values = true, value_name = "SECRET")]
    pub(crate) token_hmac_secret: Option<String>,
    /// As --token-hmac-secret, with this RSA public key (PEM file, RS256).
    #[arg(long, value_name = "FILE")]
    pub(crate) token_rsa_public_key: Option<PathBuf>,
    /// Origins browsers may connect from (repeatable); "*" for any [default: the bridge's
    /// own host, so that a page elsewhere cannot reach the targets through a visitor's
    /// browser].
    #[arg(long = "allow-origin", value_delimiter = ',')]
    pub(crate) allow_origins: Vec<String>,
    /// Seconds a connection to a target (or to the WebSocket URL) may take.
    #[arg(long, default_value_t = 10.0, value_name = "SECS")]
    pub(crate) connect_timeout: f64,
    /// Seconds without a byte either way before a bridged connection is closed (0: never;
    /// UDP sessions of a udp:// listener always end after this, 60 s when 0).
    #[arg(long, default_value_t = 0.0, value_name = "SECS")]
    pub(crate) idle_timeout: f64,
    /// Accept text messages as data (their UTF-8 bytes) when no subprotocol says otherwise,
    /// instead of closing with 1003.
    #[arg(long)]
    pub(crate) text: bool,
    /// WebSocket connections bridged at once (a ws:// or wss:// listener); more are answered
    /// 503 [default: half the open-files limit less 1088: each uses two sockets].
    #[arg(long, value_name = "N")]
    pub(crate) max_connections: Option<usize>,
    /// Datagrams that may wait for one UDP peer's WebSocket (a udp:// listener); more are
    /// dropped, as UDP may.
    #[arg(long, default_value_t = 256, value_name = "DATAGRAMS")]
    pub(crate) udp_queue: usize,
    /// Trust this PEM CA for wss:// targets (besides the built-in roots).
    #[arg(long, value_name = "FILE")]
    pub(crate) ca: Option<PathBuf>,
    #[command(flatten)]
    pub(crate) tls: crate::tls::TlsArgs,
    /// Largest message, in bytes, either way (larger closes with 1009).
    #[arg(long, default_value_t = 1 << 20, value_name = "BYTES")]
    pub(crate) max_message_size: usize,
    /// Use permessage-deflate (off by default: bridged bytes are often compressed already).
    #[arg(long)]
    pub(crate) deflate: bool,
}

/// Seconds from a flag; 0 is `None` where `zero_is_none`.
fn seconds(name: &str, v: f64) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(v)
        .map_err(|_| anyhow::anyhow!("--{name} must be a non-negative number of seconds"))
}

/// The settings every side of a bridge shares.
#[derive(Debug, Clone)]
pub(crate) struct Common {
    pub(crate) connect_timeout: Duration,
    pub(crate) idle_timeout: Option<Duration>,
    pub(crate) text: bool,
    pub(crate) config: tether::Config,
    /// Turns true on Ctrl-C or SIGTERM: every bridged WebSocket is closed with 1001.
    pub(crate) stopping: tokio::sync::watch::Receiver<bool>,
}

pub(crate) async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let connect_timeout = seconds("connect-timeout", args.connect_timeout)?;
    if connect_timeout.is_zero() {
        bail!("--connect-timeout must be more than 0");
    }
    let idle = seconds("idle-timeout", args.idle_timeout)?;
    if args.max_message_size == 0 || args.udp_queue == 0 || args.max_connections == Some(0) {
        bail!("--max-message-size, --max-connections and --udp-queue must be at least 1");
    }
    let config = tether::Config::default()
        .with_max_message_size(args.max_message_size)
        .with_max_frame_size(args.max_message_size)
        .with_deflate(args.deflate.then(tether::DeflateConfig::default));
    let (stop, stopping) = tokio::sync::watch::channel(false);
    let common = Common {
        connect_timeout,
        idle_timeout: Some(idle).filter(|d| !d.is_zero()),
        text: args.text,
        config,
        stopping,
    };
    let (scheme, _) = args.listen.split_once("://").with_context(|| {
        format!("--listen {:?} must be a URL: ws://ADDR/, wss://ADDR/, tcp://ADDR or udp://ADDR", args.listen)
    })?;
    let scheme = scheme.to_owned();
    let serving = async {
        match scheme.as_str() {
            "ws" | "wss" => websocket::run(args, common).await,
            "tcp" | "udp" => sockets::run(args, common).await,
            other => bail!("--listen scheme {other:?}: expected ws, wss, tcp or udp"),
        }
    };
    tokio::select! {
        result = serving => return result,
        () = crate::stop::shutdown_signal() => {}
    }
    // The listener is gone; each bridged connection holds a receiver until it has closed
    // (so the count is of receivers, not of connections: it is not logged).
    let _ = stop.send(true);
    tracing::info!("shutting down: closing WebSockets with 1001");
    crate::stop::drain(|| stop.receiver_count()).await;
    Ok(ExitCode::SUCCESS)
}

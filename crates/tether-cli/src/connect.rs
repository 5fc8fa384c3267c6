//! `tether connect`: an interactive client in the spirit of wscat and websocat.

use crate::limits::LimitArgs;
use anyhow::bail;
use futures_util::StreamExt;
use std::io::Write as _;
use std::process::ExitCode;
use tether::tether_proto::HandshakeError;
use tether::tls::ClientTrust;
use tether::{ClientConfig, CloseCode, Error, Message};
use tokio::io::AsyncBufReadExt;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// ws:// URL to connect to.
    url: String,
    /// Extra request header, "Name: value" (repeatable).
    #[arg(short = 'H', long = "header")]
    headers: Vec<String>,
    /// Subprotocol to offer (repeatable, most preferred first).
    #[arg(long = "subprotocol")]
    subprotocols: Vec<String>,
    /// Origin header to send.
    #[arg(long)]
    origin: Option<String>,
    /// Send stdin lines as binary messages instead of text.
    #[arg(long)]
    binary: bool,
    /// Trust only the CA certificates in this PEM file for wss:// (a private or test CA).
    #[arg(long, value_name = "FILE", conflicts_with = "insecure")]
    ca: Option<std::path::PathBuf>,
    /// Do not check the server's certificate at all (development only).
    #[arg(long)]
    insecure: bool,
    /// Follow at most this many redirects (301, 302, 303, 307, 308); 0 follows none.
    /// A redirect from wss:// to ws:// is never followed.
    #[arg(long, default_value_t = 5)]
    max_redirects: usize,
    /// Connect through this proxy: http://[user:pass@]host:port (HTTP CONNECT),
    /// socks5://… (name resolved here) or socks5h://… (resolved by the proxy). Without it,
    /// the proxy comes from https_proxy / http_proxy / all_proxy (or their upper-case forms);
    /// hosts in no_proxy / NO_PROXY are always reached directly.
    #[arg(long, value_name = "URL", conflicts_with = "no_proxy")]
    proxy: Option<String>,
    /// Connect directly, ignoring the proxy environment variables.
    #[arg(long)]
    no_proxy: bool,
    /// Seconds allowed for name resolution, the TCP connect and the proxy tunnel.
    #[arg(long, value_name = "SECS", default_value_t = 10.0)]
    connect_timeout: f64,
    /// Print pings and pongs received, on stderr.
    #[arg(long)]
    show_ping: bool,
    #[command(flatten)]
    limits: LimitArgs,
}

pub(crate) async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let mut config =
        ClientConfig::default().with_config(args.limits.to_config()?).with_max_redirects(args.max_redirects);
    if let Some(ca) = &args.ca {
        config = config
            .with_trust(ClientTrust::Ca(tether::tls::load_certs(ca).map_err(|e| anyhow::anyhow!("{e}"))?));
    }
    if args.insecure {
        eprintln!(
            "warning: --insecure: the server's certificate is not checked; anyone on the path can read and change this connection"
        );
        config = config.with_trust(ClientTrust::Insecure);
    }
    if let Some(p) = &args.proxy {
        config = config.with_proxy(tether::Proxy::url(p).map_err(|e| anyhow::anyhow!("--proxy: {e}"))?);
    } else if args.no_proxy {
        config = config.with_proxy(tether::Proxy::None);
    }
    if !(args.connect_timeout.is_finite() && args.connect_timeout > 0.0) {
        bail!("--connect-timeout must be a positive number of seconds");
    }
    config = config.with_connect_timeout(std::time::Duration::from_secs_f64(args.connect_timeout));
    for h in &args.headers {
        let Some((name, value)) = h.split_once(':') else {
            bail!("header {h:?} must look like \"Name: value\"");
        };
        config = config.with_header(name.trim(), value.trim());
    }
    for p in &args.subprotocols {
        config = config.with_protocol(p);
    }
    if let Some(o) = &args.origin {
        config = config.with_origin(o);
    }
    let (ws, response) = match tether::connect_with(&args.url, &config).await {
        Ok(ok) => ok,
        Err(e) => bail!(describe_connect_error(&args.url, &e)),
    };
    let protocol = response.protocol.as_ref().map(|p| format!(" (subprotocol {p})")).unwrap_or_default();
    let deflate = if response.deflate.is_some() { " with permessage-deflate" } else { "" };
    eprintln!("connected to {}{protocol}{deflate}", args.url);
    let (write, mut read) = ws.split();
    let sender = write.sender();
    let binary = args.binary;
    // stdin -> messages; at EOF, close with 1000.
    let input = tokio::spawn(async move {
        let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            let msg = if binary { Message::binary(line.into_bytes()) } else { Message::text(line) };
            if sender.send(msg).await.is_err() {
                return;
            }
        }
        let _ = sender.send_close(CloseCode::NORMAL, "");
    });
    let mut stdout = std::io::stdout().lock();
    let mut exit = ExitCode::SUCCESS;
    while let Some(item) = read.next().await {
        match item {
            Ok(Message::Text(t)) => {
                let _ = writeln!(stdout, "{t}");
            }
            Ok(Message::Binary(b)) => {
                let _ = stdout.write_all(&b);
                let _ = writeln!(stdout);
            }
            Ok(Message::Ping(p)) if args.show_ping => eprintln!("ping ({} bytes)", p.len()),
            Ok(Message::Pong(p)) if args.show_ping => eprintln!("pong ({} bytes)", p.len()),
            Ok(Message::Ping(_) | Message::Pong(_)) => {}
            Ok(Message::Close(_)) => {}
            Err(e) => {
                eprintln!("error: {e}");
                exit = ExitCode::FAILURE;
            }
        }
        let _ = stdout.flush();
    }
    input.abort();
    drop(write);
    if let Some(c) = read.close_status() {
        if c.clean {
            eprintln!("closed: {} {}", c.code, c.reason);
        } else {
            eprintln!("connection lost: {} {}", c.code, c.reason);
            exit = ExitCode::FAILURE;
        }
    }
    Ok(exit)
}

fn describe_connect_error(url: &str, e: &Error) -> String {
    match e {
        Error::Handshake(HandshakeError::UnexpectedStatus { status, reason, body, .. }) => {
            let first_line = body.lines().next().unwrap_or("");
            if first_line.is_empty() {
                format!("server rejected the handshake: HTTP {status} {reason}")
            } else {
                format!("server rejected the handshake: HTTP {status} {reason}: {first_line}")
            }
        }
        Error::Handshake(HandshakeError::InvalidUrl(why)) => format!("invalid url {url:?}: {why}"),
        Error::Connect(e) => e.to_string(),
        Error::Proxy(e) => format!("proxy: {e}"),
        Error::Io(io) => format!("cannot connect to {url}: {io}"),
        Error::Timeout => format!("timed out connecting to {url}"),
        Error::Tls(message) => message.clone(),
        other => format!("cannot connect to {url}: {other}"),
    }
}

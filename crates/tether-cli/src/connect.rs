//! `tether connect`: an interactive client in the spirit of wscat and websocat.

use crate::limits::LimitArgs;
use anyhow::bail;
use futures_util::StreamExt;
use std::io::{IsTerminal as _, Write as _};
use std::process::ExitCode;
use tether::tether_proto::HandshakeError;
use tether::tls::ClientTrust;
use tether::{ClientConfig, CloseCode, ConnectErrorKind, Error, Message};
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
    /// Keep the connection open after standard input ends, printing what arrives until the
    /// server closes or Ctrl-C (websocat -n, wscat -w).
    #[arg(short = 'n', long)]
    no_exit: bool,
    /// Try WebSocket over HTTP/2 first (RFC 8441: ALPN h2 for wss://, h2c with prior
    /// knowledge for ws://), falling back to HTTP/1.1 when the server does not take it.
    #[arg(long)]
    http2: bool,
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
    if args.insecure && args.url.starts_with("wss:") {
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
    config = config.with_http2(args.http2);
    let (ws, response) = match tether::connect_with(&args.url, &config).await {
        Ok(ok) => ok,
        Err(e) => {
            eprintln!("error: {}", describe_connect_error(&args.url, &e));
            let usage = matches!(e, Error::Handshake(HandshakeError::InvalidUrl(_)));
            return Ok(if usage { ExitCode::from(2) } else { ExitCode::FAILURE });
        }
    };
    let protocol = response.protocol.as_ref().map(|p| format!(" (subprotocol {p})")).unwrap_or_default();
    let deflate = if response.deflate.is_some() { " with permessage-deflate" } else { "" };
    let over = if response.http2 { " over HTTP/2" } else { "" };
    // On a terminal, what arrives is marked "< " and what is sent "> "; in a pipe the output
    // is the messages alone.
    let marks = std::io::stdout().is_terminal();
    let typed = marks && std::io::stdin().is_terminal();
    eprintln!("connected to {}{over}{protocol}{deflate}", args.url);
    if marks {
        eprintln!("(\"> \" sent, \"< \" received; Ctrl-C or Ctrl-D to close)");
    }
    let (write, mut read) = ws.split();
    let sender = write.sender();
    let (binary, no_exit) = (args.binary, args.no_exit);
    // stdin -> messages; at EOF, close with 1000 (unless --no-exit).
    let input = tokio::spawn(async move {
        let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            if typed {
                // Put the marker on the line the terminal echoed: up one line, clear it.
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "\x1b[1A\x1b[2K> {line}");
                let _ = out.flush();
            } else if marks {
                println!("> {line}");
            }
            let msg = if binary { Message::binary(line.into_bytes()) } else { Message::text(line) };
            if sender.send(msg).await.is_err() {
                return;
            }
        }
        if !no_exit {
            let _ = sender.send_close(CloseCode::NORMAL, "");
        }
    });
    let closer = write.sender();
    let mut exit = ExitCode::SUCCESS;
    let mut interrupted = false;
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        let item = tokio::select! {
            item = read.next() => item,
            // Ctrl-C: close with 1000 and read on until the server answers (or until
            // --close-timeout, after which the connection ends as lost).
            _ = &mut ctrl_c, if !interrupted => {
                interrupted = true;
                input.abort();
                let _ = closer.send_close(CloseCode::NORMAL, "");
                continue;
            }
        };
        let Some(item) = item else { break };
        let mut stdout = std::io::stdout().lock();
        let mark = if marks { "< " } else { "" };
        match item {
            Ok(Message::Text(t)) => {
                let _ = writeln!(stdout, "{mark}{t}");
            }
            Ok(Message::Binary(b)) => {
                let _ = stdout.write_all(mark.as_bytes());
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
        Error::Handshake(HandshakeError::InvalidUrl(why)) => {
            let hint = match url.split_once("://") {
                Some(("http", rest)) => format!(" (did you mean ws://{rest}?)"),
                Some(("https", rest)) => format!(" (did you mean wss://{rest}?)"),
                _ => String::new(),
            };
            format!("invalid url {url:?}: {why}{hint}")
        }
        // The server closed or answered what is not HTTP: a TLS server reading plain text.
        // (A TLS server answers a plain request with an alert, or by closing.)
        Error::Handshake(HandshakeError::MalformedHttp(_) | HandshakeError::HttpVersion)
            if url.starts_with("ws:") =>
        {
            format!("the server at {url} did not answer with HTTP/1.1 (a TLS server? try wss:// instead of ws://)")
        }
        Error::Connect(e) if e.kind() == ConnectErrorKind::Refused => {
            let what = if e.target().starts_with("proxy ") { "proxy" } else { "server" };
            format!("{e} (is the {what} running, and on that port?)")
        }
        Error::Connect(e) if e.kind() == ConnectErrorKind::Dns => format!("{e} (check the host name)"),
        Error::Connect(e) => e.to_string(),
        Error::Proxy(e) => format!("proxy: {e}"),
        Error::Io(io) => format!("cannot connect to {url}: {io}"),
        Error::Timeout => format!("timed out connecting to {url}"),
        Error::Tls(message) => message.clone(),
        other => format!("cannot connect to {url}: {other}"),
    }
}

//! `tether echo`: the first example of every WebSocket tutorial.

use crate::limits::LimitArgs;
use crate::stop::{Registration, Stop};
use anyhow::Context as _;
use futures_util::{SinkExt, StreamExt};
use std::future::Future;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use tether::{
    CloseCode, CloseFrame, HttpResponse, Listener, Message, OriginPolicy, ServerConfig, Transport,
    WebSocketStream,
};

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:9001")]
    listen: String,
    /// Subprotocols to accept, most preferred first (repeatable).
    #[arg(long = "subprotocol")]
    subprotocols: Vec<String>,
    /// Accept only these Origins (repeatable); default: any origin.
    #[arg(long = "allow-origin")]
    allow_origins: Vec<String>,
    /// Open TCP connections at most; more are answered 503 and closed [default: the
    /// open-files limit less 1088].
    #[arg(long)]
    max_connections: Option<usize>,
    /// Connections not yet upgraded at most; more are closed at once.
    #[arg(long, default_value_t = tether::ServerConfig::default().max_handshakes)]
    max_handshakes: usize,
    #[command(flatten)]
    tls: crate::tls::TlsArgs,
    #[command(flatten)]
    limits: LimitArgs,
    /// Serve the SockJS protocol's test services instead (/echo, /disabled_websocket_echo,
    /// /cookie_needed_echo, /close), to run a SockJS conformance suite against.
    #[arg(long, conflicts_with_all = ["subprotocols", "allow_origins", "tls_cert"])]
    sockjs: bool,
    /// Serve the Socket.IO project's conformance fixture instead (an Engine.IO echo at
    /// /engine.io/, a Socket.IO server at /socket.io/), to run its protocol test suites
    /// against.
    #[arg(long, conflicts_with_all = ["subprotocols", "allow_origins", "tls_cert", "sockjs"])]
    socketio: bool,
}

pub(crate) async fn run(args: Args) -> anyhow::Result<ExitCode> {
    if args.sockjs {
        return sockjs(&args.listen).await;
    }
    if args.socketio {
        return socketio(&args.listen).await;
    }
    let mut config =
        ServerConfig::default().with_config(args.limits.to_config()?).with_protocols(args.subprotocols);
    if let Some(n) = args.max_connections {
        anyhow::ensure!(n > 0, "--max-connections must be at least 1");
        config = config.with_max_connections(n);
    }
    anyhow::ensure!(args.max_handshakes > 0, "--max-handshakes must be at least 1");
    config = config.with_max_handshakes(args.max_handshakes);
    if !args.allow_origins.is_empty() {
        config = config.with_origin(OriginPolicy::AllowList(args.allow_origins));
    }
    let (config, tls) = args.tls.apply(config)?;
    let scheme = if tls { "wss" } else { "ws" };
    let listener = Listener::bind(&args.listen, config)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let addr = listener.local_addr()?;
    tracing::info!("echo server listening on {scheme}://{addr}/");
    // Ctrl-C or SIGTERM: every connection is closed with 1001, then the server exits.
    let stop = Arc::new(Stop::default());
    let shutdown = crate::stop::shutdown_signal();
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        let incoming = match accepted {
            Ok(i) => i,
            Err(e) => {
                // Typically out of file descriptors: back off instead of spinning.
                tracing::warn!("accept failed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        tokio::spawn(serve(incoming, stop.clone()));
    }
    drop(listener);
    stop.stop();
    tracing::info!(connections = stop.live(), "shutting down: closing connections with 1001");
    // Each connection is registered until it has closed; wait for them, a while.
    crate::stop::drain(|| stop.live()).await;
    Ok(ExitCode::SUCCESS)
}

/// A page that opens a WebSocket to this server (same origin, so `wss://` when served over
/// TLS) and echoes what is typed: a quick check from any browser.
const PAGE: &str = include_str!("echo.html");

/// `GET /`: the page; any other plain request: 404. Upgrades on any path are echoed.
async fn route(req: tether::HttpRequest) -> HttpResponse {
    tracing::info!(peer = ?req.remote_addr, method = %req.head.method, path = %req.head.path, "http request");
    match (req.head.method.as_str(), req.head.path.as_str()) {
        ("GET" | "HEAD", "/") => {
            HttpResponse::new(200, "text/html; charset=utf-8", PAGE).with_header("Cache-Control", "no-store")
        }
        (_, "/") => HttpResponse::text(405, "only GET here").with_header("Allow", "GET, HEAD"),
        _ => HttpResponse::text(404, "not found: the page is at /, WebSocket on any path"),
    }
}

async fn serve(incoming: tether::Incoming, stop: Arc<Stop>) {
    let peer = incoming.remote_addr();
    let (ws, request) = match incoming.serve_direct(|_| Ok(()), route).await {
        Ok(Some(ok)) => ok,
        Ok(None) => return,
        Err(e) => {
            tracing::info!(%peer, "handshake refused: {e}");
            return;
        }
    };
    tracing::info!(%peer, path = %request.path, protocol = ?ws.protocol(), deflate = ws.deflate(), "connected");
    // The connection gets a task of its own, whose future holds the socket and little else:
    // the handshake's state, sized into this task's future, ends here.
    tokio::spawn(echo(ws, peer, request.path, Registration::new(stop)));
}

// Not an `async fn`: that would move its arguments into the future twice (once as
// arguments, once as locals), doubling the size every idle connection costs.
#[allow(clippy::manual_async_fn)]
fn echo(
    mut ws: WebSocketStream<Transport>,
    peer: SocketAddr,
    path: String,
    mut registration: Registration,
) -> impl Future<Output = ()> {
    async move {
        loop {
            let mut next = ws.next();
            let item = match std::future::poll_fn(|cx| registration.poll_unless_stopped(&mut next, cx)).await
            {
                Some(Some(item)) => item,
                Some(None) => break,
                None => {
                    // The server is stopping: 1001, then the peer's answer (the registration
                    // lasts until then: the server waits for it). Boxed: this rare path's
                    // state stays out of every connection's future.
                    Box::pin(goodbye(&mut ws)).await;
                    break;
                }
            };
            match item {
                // `feed` queues without flushing: the next read that would wait writes every
                // echo queued so far in one go.
                Ok(msg) if msg.is_data() => {
                    if ws.feed(msg).await.is_err() {
                        break;
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::info!(%peer, "connection failed: {e}");
                    break;
                }
            }
        }
        let s = ws.stats();
        let (code, reason, initiator, clean) = match ws.close_status() {
            Some(c) => (c.code.0, c.reason, format!("{:?}", c.initiator), c.clean),
            None => (1006, String::new(), "Remote".to_owned(), false),
        };
        tracing::info!(
            %peer, %path, code, %reason, %initiator, clean,
            messages_in = s.messages_received, payload_in = s.payload_received, wire_in = s.bytes_received,
            compressed_in = s.compressed_received, payload_out = s.payload_sent, wire_out = s.bytes_sent,
            "closed"
        );
    }
}

/// Closes with 1001 "server shutting down" and waits for the answer.
async fn goodbye(ws: &mut WebSocketStream<Transport>) {
    let bye = CloseFrame { code: CloseCode::GOING_AWAY, reason: "server shutting down".into() };
    if ws.send(Message::Close(Some(bye))).await.is_ok() {
        while ws.next().await.is_some() {}
    }
}

/// `tether echo --sockjs`: the SockJS test services over plain HTTP.
async fn sockjs(listen: &str) -> anyhow::Result<ExitCode> {
    let server = tether_hub::frontend::sockjs::TestServer::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let addr = server.local_addr()?;
    tracing::info!(
        "SockJS test services on http://{addr}/echo, /disabled_websocket_echo, /cookie_needed_echo, /close"
    );
    server.run(crate::stop::shutdown_signal()).await;
    Ok(ExitCode::SUCCESS)
}

/// `tether echo --socketio`: the Socket.IO conformance fixture over plain HTTP.
async fn socketio(listen: &str) -> anyhow::Result<ExitCode> {
    let server = tether_socketio::TestServer::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let addr = server.local_addr()?;
    tracing::info!("Socket.IO test fixture on http://{addr}/engine.io/ (Engine.IO echo) and /socket.io/");
    server.run(crate::stop::shutdown_signal()).await;
    Ok(ExitCode::SUCCESS)
}

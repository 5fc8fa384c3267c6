//! The hub's network side: the demo page, the WebSocket endpoints (`/ws`, `/stomp`), the
//! server API (`/api/*`), `/healthz` and `/metrics`, on one port (and the API and metrics
//! on an admin port when asked); connection limits; graceful shutdown.
//!
//! Each connection's first request is looked at by tether's listener
//! ([`tether::Incoming::upgrade_or_http`]): an HTTP/1.1 WebSocket handshake, the hub's
//! busiest request, is upgraded there, with tether's light handshake and connection;
//! everything else (plain HTTP/1.x, HTTP/2 by ALPN or prior knowledge) is served by hyper
//! ([`service`]), WebSocket over HTTP/2 (RFC 8441) included. docs/DESIGN.md says why.

pub(crate) mod api;
mod service;
pub(crate) mod web;

pub use api::{check_api_body, ApiParseError};

use crate::frontend::socketio::{self, SocketIoOptions};
use crate::frontend::sockjs::{self, SockJsOptions};
use crate::frontend::stomp::StompOptions;
use crate::frontend::{self, Context};
use crate::hub::Hub;
use crate::session::admit::{Counts, Slot};
use crate::session::auth::{Authenticator, NoTokens};
use crate::session::link::Link;
use crate::session::{Door, Session};
use futures_util::future::BoxFuture;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tether::{Accepted, Listener, Reject, ServerConfig, WebSocket};

/// How the hub serves.
#[derive(Clone)]
pub struct ServeOptions {
    /// Address to listen on.
    pub listen: String,
    /// WebSocket and TLS settings (limits, origin policy, certificates), and the
    /// listener's limits: `max_connections` (TCP connections, beyond them 503) and
    /// `max_handshakes`.
    pub server: ServerConfig,
    /// Key for the server API (`Authorization: apikey KEY`); `None` disables the API.
    pub api_key: Option<String>,
    /// WebSocket connections per client IP address at most (503 beyond).
    pub max_connections_per_ip: usize,
    /// How long shutdown waits for connections to close after sending 1001.
    pub shutdown_timeout: Duration,
    /// Token checks for `connect`.
    pub auth: Arc<dyn Authenticator>,
    /// Settings of the STOMP front-end.
    pub stomp: StompOptions,
    /// Whether to serve the demo page at `/` (off by default: a production hub serves
    /// only its endpoints).
    pub demo_page: bool,
    /// A second address serving only the server API, `/metrics` and `/healthz` (plain
    /// HTTP/1.1 and h2c); when set, the public port no longer serves the API and metrics.
    pub admin_listen: Option<String>,
    /// Origins whose pages may call the server API from a browser (CORS): exact origins
    /// such as `https://admin.example.com`, or `*` for any. Empty (the default): no CORS.
    pub cors_origins: Vec<String>,
    /// Whether to speak HTTP/2 (ALPN `h2` on TLS, h2c with prior knowledge) and advertise
    /// WebSocket over HTTP/2 (RFC 8441) on it. Default on.
    pub http2: bool,
    /// Streams one HTTP/2 connection may have open at once (each WebSocket over HTTP/2 is
    /// one; `SETTINGS_MAX_CONCURRENT_STREAMS`). Default 256.
    pub http2_max_streams: u32,
    /// Where SockJS sessions speak `tether.json` (`None`: no SockJS for it). Default
    /// `/sockjs`.
    pub sockjs_prefix: Option<String>,
    /// Where SockJS sessions speak STOMP, as Spring serves STOMP over SockJS (`None`: no
    /// SockJS for it). Default `/stomp-sockjs`.
    pub sockjs_stomp_prefix: Option<String>,
    /// Settings of both SockJS endpoints.
    pub sockjs: SockJsOptions,
    /// Where socket.io-client connects (`None`: no Socket.IO). Default `/socket.io/`.
    pub socketio_prefix: Option<String>,
    /// Settings of the Socket.IO endpoint.
    pub socketio: SocketIoOptions,
    /// Under load, how long at most the fan-out's writes wait for more publications to
    /// join them ([`tether::Cork::with_linger`]): less CPU per delivery, more latency.
    /// Default zero: they never wait.
    pub fanout_linger: Duration,
}

/// How often the hub pings each WebSocket client by default: browsers and libraries answer
/// on their own, and the answer keeps a live but quiet connection from the idle timeout.
pub const PING_INTERVAL: Duration = Duration::from_secs(25);

/// How long a client may send nothing at all (not even a pong) before it is closed with
/// 1001 by default: a peer that vanished without a FIN, or one that holds a connection
/// open without speaking, is let go.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// permessage-deflate as the hub offers it when turned on: without context takeover on
/// either side, so that no connection keeps a compressor or a decompressor between
/// messages (they are borrowed per message from a per-thread pool), and a publication is
/// compressed once for every subscriber whose window allows it (`PreparedFrame`).
pub fn deflate() -> tether::DeflateConfig {
    tether::DeflateConfig::default()
        .with_server_no_context_takeover(true)
        .with_client_no_context_takeover(true)
}

/// The WebSocket subprotocols the hub speaks, preferred first (every front-end's, in the
/// order they are registered: `tether.json`, then STOMP 1.2, 1.1 and 1.0).
pub fn protocols() -> Vec<&'static str> {
    frontend::subprotocols()
}

impl std::fmt::Debug for ServeOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServeOptions")
            .field("listen", &self.listen)
            .field("api_key", &self.api_key.as_ref().map(|_| "***"))
            .field("max_connections", &self.server.max_connections)
            .field("max_connections_per_ip", &self.max_connections_per_ip)
            .field("admin_listen", &self.admin_listen)
            .field("cors_origins", &self.cors_origins)
            .field("http2", &self.http2)
            .field("http2_max_streams", &self.http2_max_streams)
            .finish_non_exhaustive()
    }
}

impl Default for ServeOptions {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".into(),
            server: ServerConfig::default()
                .with_config(
                    tether::Config::default()
                        .with_ping_interval(Some(PING_INTERVAL))
                        .with_idle_timeout(Some(IDLE_TIMEOUT)),
                )
                .with_protocols(protocols())
                .with_origin(tether::OriginPolicy::SameHost),
            api_key: None,
            max_connections_per_ip: 1_000,
            shutdown_timeout: Duration::from_secs(5),
            auth: Arc::new(NoTokens),
            stomp: StompOptions::default(),
            demo_page: false,
            admin_listen: None,
            cors_origins: Vec::new(),
            http2: true,
            http2_max_streams: 256,
            sockjs_prefix: Some("/sockjs".into()),
            sockjs_stomp_prefix: Some("/stomp-sockjs".into()),
            sockjs: SockJsOptions::default(),
            fanout_linger: Duration::ZERO,
            socketio_prefix: Some("/socket.io/".into()),
            socketio: SocketIoOptions::default(),
        }
    }
}

/// What every connection's task shares.
pub(crate) struct Shared {
    pub(crate) hub: Arc<Hub>,
    pub(crate) options: ServeOptions,
    /// The listener's configuration, with the one `Config` every connection points to.
    pub(crate) server: Arc<ServerConfig>,
    /// The SockJS endpoints.
    pub(crate) sockjs: Vec<Arc<sockjs::Endpoint>>,
    /// The Socket.IO endpoint.
    pub(crate) socketio: Option<Arc<socketio::Endpoint>>,
    /// Where the fan-out's writes to fast-path WebSockets wait for the end of a batch.
    cork: tether::Cork,
    counts: Arc<Counts>,
    /// What every front-end gets.
    cx: Context,
}

/// The WebSocket endpoints' paths, for answers that name them.
pub(crate) const ENDPOINTS: &str =
    "the WebSocket endpoints are /ws and /stomp (and SockJS's websocket transports)";

impl Shared {
    /// What a front-end gets to serve a connection.
    pub(crate) fn context(&self) -> Context {
        self.cx.clone()
    }

    /// Admits a WebSocket to `path` from `ip`: a front-end's path, within the per-IP limit.
    pub(crate) fn admit(&self, path: &str, ip: IpAddr) -> Result<Slot, Reject> {
        let front = frontend::registered().iter().any(|f| f.path() == path);
        if !front && self.sockjs_route(path).is_none() && self.socketio_at(path).is_none() {
            return Err(Reject::new(404, ENDPOINTS));
        }
        self.counts.take_ip(ip, self.options.max_connections_per_ip).ok_or_else(|| {
            self.hub.metrics.refused.fetch_add(1, Ordering::Relaxed);
            Reject::new(503, "too many connections from this address")
        })
    }

    /// The Socket.IO endpoint, if `path` is its.
    pub(crate) fn socketio_at(&self, path: &str) -> Option<&Arc<socketio::Endpoint>> {
        self.socketio.as_ref().filter(|e| e.matches(path))
    }

    /// The SockJS endpoint and WebSocket route `path` names, if it names one.
    fn sockjs_route(&self, path: &str) -> Option<(&Arc<sockjs::Endpoint>, sockjs::WsRoute)> {
        self.sockjs.iter().find_map(|e| Some((e, e.websocket_route(path)?)))
    }

    /// What runs an upgraded WebSocket with the front-end for its subprotocol or path, to
    /// await or to spawn: the front-end's boxed future, whose session holds the
    /// connection's place, and nothing else, so that an idle connection's task is small.
    pub(crate) fn websocket_task(
        &self,
        ws: NewSocket,
        path: &str,
        http2: bool,
        slot: Slot,
    ) -> BoxFuture<'static, ()> {
        let metrics = &self.hub.metrics;
        metrics.connections_total.fetch_add(1, Ordering::Relaxed);
        if http2 { &metrics.websocket_http2 } else { &metrics.websocket_http1 }
            .fetch_add(1, Ordering::Relaxed);
        let protocol = ws.protocol();
        if let Some((endpoint, route)) = self.sockjs_route(path) {
            let endpoint = endpoint.clone();
            return Box::pin(async move {
                endpoint.run_websocket(ws.into_websocket(), route).await;
                drop(slot);
            });
        }
        match frontend::pick(protocol.as_deref(), path) {
            Some(front) => {
                let session = Session::new(self.cx.door.clone(), Some(slot));
                front.serve(ws.into_link(&self.cork), session, self.context(), protocol)
            }
            // Admitted paths all have a front-end; the place is given back at once.
            None => Box::pin(std::future::ready(())),
        }
    }
}

/// An upgraded WebSocket: running in its own task already (upgraded through hyper), or
/// opened on the fast path with its shape still to choose.
pub(crate) enum NewSocket {
    Task(WebSocket),
    Opened(tether::Opened),
}

impl NewSocket {
    fn protocol(&self) -> Option<String> {
        match self {
            Self::Task(ws) => ws.protocol(),
            Self::Opened(o) => o.protocol(),
        }
        .map(str::to_owned)
    }

    fn into_websocket(self) -> WebSocket {
        match self {
            Self::Task(ws) => ws,
            Self::Opened(o) => o.spawn(),
        }
    }

    /// A front-end's connection. On the fast path, a [`tether::SharedWebSocket`]: the
    /// front-end's task reads it, and the hub's fan-out queues each delivery on it and
    /// leaves the write to `cork`, which writes every connection that was fed once the
    /// publishing task yields: one write per connection for a burst of publications, and
    /// no task between the publisher and the socket.
    fn into_link(self, cork: &tether::Cork) -> Link {
        match self {
            Self::Task(ws) => Link::from(ws),
            Self::Opened(o) => Link::from(o.direct().into_corked(cork)),
        }
    }
}

/// A running hub server.
pub struct Server {
    listener: Listener,
    admin: Option<tokio::net::TcpListener>,
    shared: Arc<Shared>,
}

impl Server {
    /// Binds the listener (and the admin listener, when set).
    ///
    /// # Errors
    ///
    /// When an address cannot be bound.
    pub async fn bind(hub: Arc<Hub>, options: ServeOptions) -> Result<Self, tether::Error> {
        let mut server = options.server.clone();
        if let (Some(tls), true) = (&server.tls, options.http2) {
            // Offer HTTP/2 first: browsers then open WebSockets on the page's connection.
            let mut tls = (**tls).clone();
            tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
            server = server.with_tls(Arc::new(tls));
        }
        let listener = Listener::bind(&options.listen, server).await?;
        let admin = match &options.admin_listen {
            Some(addr) => Some(tokio::net::TcpListener::bind(addr).await?),
            None => None,
        };
        let _ = hub.metrics.listener.set(listener.stats());
        let server = listener.config().clone();
        let stomp = Arc::new(options.stomp);
        let door = Arc::new(Door { hub: hub.clone(), auth: options.auth.clone() });
        let cx = Context { door, stomp };
        let origins = Some(server.origin.clone());
        let sockjs = [(&options.sockjs_prefix, "/ws"), (&options.sockjs_stomp_prefix, "/stomp")]
            .into_iter()
            .filter_map(|(prefix, path)| {
                let prefix = prefix.as_deref().filter(|p| !p.is_empty())?;
                let front = frontend::pick(None, path)?;
                let app = sockjs::App::Front(front, cx.clone());
                Some(sockjs::Endpoint::new(prefix, options.sockjs.clone(), app, origins.clone()))
            })
            .collect();
        let socketio = options.socketio_prefix.as_deref().filter(|p| !p.is_empty()).map(|prefix| {
            // What the hub's WebSocket port takes from a client is what Engine.IO tells
            // clients they may send.
            let mut o = options.socketio.clone();
            o.engine.max_payload = o.engine.max_payload.min(server.config.max_message_size);
            socketio::Endpoint::new(prefix, o, cx.clone(), server.origin.clone())
        });
        let cork = tether::Cork::with_linger(options.fanout_linger);
        let shared =
            Arc::new(Shared { hub, options, server, sockjs, socketio, cork, counts: Arc::default(), cx });
        Ok(Self { listener, admin, shared })
    }

    /// The bound address.
    ///
    /// # Errors
    ///
    /// From the socket.
    pub fn local_addr(&self) -> Result<SocketAddr, tether::Error> {
        self.listener.local_addr()
    }

    /// The admin listener's address, when there is one.
    ///
    /// # Errors
    ///
    /// From the socket.
    pub fn admin_addr(&self) -> Result<Option<SocketAddr>, tether::Error> {
        Ok(self.admin.as_ref().map(tokio::net::TcpListener::local_addr).transpose()?)
    }

    /// Serves until `shutdown` completes, then stops accepting, closes every connection with
    /// 1001 and waits up to `shutdown_timeout` for them to finish.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let Self { listener, admin, shared } = self;
        let sweeper = {
            let hub = shared.hub.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_secs(10));
                loop {
                    tick.tick().await;
                    hub.sweep();
                }
            })
        };
        let admin = admin.map(|admin| tokio::spawn(serve_admin(admin, shared.clone())));
        tokio::pin!(shutdown);
        loop {
            let incoming = tokio::select! {
                () = &mut shutdown => break,
                accepted = listener.accept() => accepted,
            };
            let incoming = match incoming {
                Ok(i) => i,
                Err(e) => {
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            tokio::spawn(connection(incoming, shared.clone()));
        }
        sweeper.abort();
        if let Some(admin) = admin {
            admin.abort();
        }
        let mut n = shared.hub.disconnect_all(1001, "server shutting down");
        n += shared.sockjs.iter().map(|e| e.close_all(1001, "server shutting down")).sum::<usize>();
        n += shared.socketio.as_ref().map_or(0, |e| e.close_all());
        tracing::info!(connections = n, "shutting down: closing connections with 1001");
        let deadline = tokio::time::Instant::now() + shared.options.shutdown_timeout;
        let counts = &shared.counts;
        while counts.total() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let left = counts.total();
        if left > 0 {
            tracing::warn!(connections = left, "shutdown timeout: dropping the rest");
        }
    }
}

/// The admin listener: the server API, metrics and health, over hyper.
async fn serve_admin(admin: tokio::net::TcpListener, shared: Arc<Shared>) {
    loop {
        match admin.accept().await {
            Ok((stream, peer)) => {
                let _ = stream.set_nodelay(true);
                tokio::spawn(service::serve(stream, shared.clone(), service::Surface::Admin, peer, None));
            }
            Err(e) => {
                tracing::warn!("admin accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn connection(incoming: tether::Incoming, shared: Arc<Shared>) {
    let peer = incoming.remote_addr();
    let mut slot = None;
    let mut socketio = None;
    let check = |req: &tether::Request| {
        if let Some(endpoint) = shared.socketio_at(&req.path) {
            // Engine.IO's checks (version, transport, session) answer before the 101.
            let target = endpoint.websocket_target(req.query.as_deref()).map_err(|refused| {
                Reject::new(refused.status(), "engine.io").with_body("application/json", refused.body())
            })?;
            socketio = Some((endpoint.clone(), target));
        }
        slot = Some(shared.admit(&req.path, peer.ip())?);
        Ok(())
    };
    match incoming.upgrade_or_http(check).await {
        Ok(Accepted::WebSocket(ws, request)) => {
            tracing::debug!(%peer, path = %request.path, "websocket connected");
            // Each runs in a task of its own, and this one ends: its state, sized for the
            // handshake and the HTTP connection, is not kept for the WebSocket's life.
            match (slot, socketio) {
                (Some(slot), Some((endpoint, target))) => {
                    let uri = match &request.query {
                        Some(q) => format!("{}?{q}", request.path),
                        None => request.path.clone(),
                    };
                    let uri = uri.parse().unwrap_or_default();
                    shared.hub.metrics.connections_total.fetch_add(1, Ordering::Relaxed);
                    shared.hub.metrics.websocket_http1.fetch_add(1, Ordering::Relaxed);
                    let headers = request.headers;
                    tokio::spawn(async move {
                        endpoint.serve_websocket(ws.spawn(), target, uri, headers).await;
                        drop(slot);
                    });
                }
                (Some(slot), None) => {
                    // The front-end's future, boxed: tokio's task cells are 128-byte
                    // aligned, and a cell holding a box takes 128 bytes where one holding
                    // the future inline would take more, for as long as the connection lives.
                    tokio::spawn(shared.websocket_task(NewSocket::Opened(ws), &request.path, false, slot));
                }
                (None, _) => {}
            }
        }
        Ok(Accepted::Http(conn)) => {
            let http2 = conn.is_http2();
            if http2 && !shared.options.http2 {
                // Prior knowledge of an HTTP/2 this hub does not speak: nothing to answer in.
                tracing::debug!(%peer, "http/2 preface with http2 off: connection closed");
                return;
            }
            let surface = service::Surface::Public { admin_elsewhere: shared.options.admin_listen.is_some() };
            // Boxed: hyper's connection state is large, and inline it would be part of
            // every connection task's future, WebSocket ones on the fast path included.
            Box::pin(service::serve(conn, shared, surface, peer, Some(http2))).await;
        }
        Ok(_) => {}
        Err(e) => tracing::debug!(%peer, "request failed: {e}"),
    }
}

//! The hub's network side on one port: the demo page, the WebSocket endpoint (`/ws`), the
//! server API (`/api/*`), `/healthz` and `/metrics`; connection limits; graceful shutdown.

pub(crate) mod web;

use crate::codes::{close, http_status};
use crate::frontend::json::{clients_json, publications_json};
use crate::frontend::stomp::StompOptions;
use crate::frontend::{self, Context};
use crate::hub::Hub;
use crate::session::auth::{same_secret, Authenticator, NoTokens};
use bytes::Bytes;
use serde::Deserialize;
use serde_json::value::RawValue;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tether::{HttpRequest, HttpResponse, Listener, Reject, ServerConfig};

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
}

/// How often the hub pings each WebSocket client by default: browsers and libraries answer
/// on their own, and the answer keeps a live but quiet connection from the idle timeout.
pub const PING_INTERVAL: Duration = Duration::from_secs(25);

/// How long a client may send nothing at all (not even a pong) before it is closed with
/// 1001 by default: a peer that vanished without a FIN, or one that holds a connection
/// open without speaking, is let go.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

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
        }
    }
}

/// Counts of open connections, total and per IP, released on drop of a [`Slot`].
#[derive(Default)]
struct Counts {
    total: AtomicUsize,
    per_ip: Mutex<HashMap<IpAddr, usize>>,
}

struct Slot {
    counts: Arc<Counts>,
    ip: Option<IpAddr>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.counts.total.fetch_sub(1, Ordering::AcqRel);
        if let Some(ip) = self.ip {
            let mut map = self.counts.per_ip.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(n) = map.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    map.remove(&ip);
                }
            }
        }
    }
}

impl Counts {
    fn take_ip(self: &Arc<Self>, ip: IpAddr, limit: usize) -> Option<Slot> {
        let mut map = self.per_ip.lock().unwrap_or_else(|e| e.into_inner());
        let n = map.entry(ip).or_default();
        if *n >= limit {
            return None;
        }
        *n += 1;
        self.total.fetch_add(1, Ordering::AcqRel);
        Some(Slot { counts: self.clone(), ip: Some(ip) })
    }
}

/// A running hub server.
pub struct Server {
    listener: Listener,
    hub: Arc<Hub>,
    options: Arc<ServeOptions>,
}

impl Server {
    /// Binds the listener.
    ///
    /// # Errors
    ///
    /// When the address cannot be bound.
    pub async fn bind(hub: Arc<Hub>, options: ServeOptions) -> Result<Self, tether::Error> {
        let listener = Listener::bind(&options.listen, options.server.clone()).await?;
        let _ = hub.metrics.listener.set(listener.stats());
        Ok(Self { listener, hub, options: Arc::new(options) })
    }

    /// The bound address.
    ///
    /// # Errors
    ///
    /// From the socket.
    pub fn local_addr(&self) -> Result<SocketAddr, tether::Error> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` completes, then stops accepting, closes every connection with
    /// 1001 and waits up to `shutdown_timeout` for them to finish.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let counts = Arc::new(Counts::default());
        let sweeper = {
            let hub = self.hub.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_secs(10));
                loop {
                    tick.tick().await;
                    hub.sweep();
                }
            })
        };
        tokio::pin!(shutdown);
        loop {
            let incoming = tokio::select! {
                () = &mut shutdown => break,
                accepted = self.listener.accept() => accepted,
            };
            let incoming = match incoming {
                Ok(i) => i,
                Err(e) => {
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let (hub, options, counts) = (self.hub.clone(), self.options.clone(), counts.clone());
            tokio::spawn(connection(incoming, hub, options, counts));
        }
        sweeper.abort();
        let n = self.hub.disconnect_all(1001, "server shutting down");
        tracing::info!(connections = n, "shutting down: closing connections with 1001");
        let deadline = tokio::time::Instant::now() + self.options.shutdown_timeout;
        while counts.total.load(Ordering::Acquire) > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let left = counts.total.load(Ordering::Acquire);
        if left > 0 {
            tracing::warn!(connections = left, "shutdown timeout: dropping the rest");
        }
    }
}

async fn connection(
    incoming: tether::Incoming,
    hub: Arc<Hub>,
    options: Arc<ServeOptions>,
    counts: Arc<Counts>,
) {
    let peer = incoming.remote_addr();
    let mut slot = None;
    let check = |req: &tether::Request| {
        if !frontend::registered().iter().any(|f| f.path() == req.path) {
            return Err(Reject::new(404, "the WebSocket endpoints are /ws and /stomp"));
        }
        match counts.take_ip(peer.ip(), options.max_connections_per_ip) {
            Some(s) => {
                slot = Some(s);
                Ok(())
            }
            None => {
                hub.metrics.refused.fetch_add(1, Ordering::Relaxed);
                Err(Reject::new(503, "too many connections from this address"))
            }
        }
    };
    let route = |req: HttpRequest| {
        let (hub, options) = (hub.clone(), options.clone());
        async move { route(req, &hub, &options).await }
    };
    match incoming.serve(check, route).await {
        Ok(Some((ws, request))) => {
            hub.metrics.connections_total.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(%peer, path = %request.path, "websocket connected");
            let protocol = ws.protocol().map(str::to_owned);
            if let Some(front) = frontend::pick(protocol.as_deref(), &request.path) {
                let cx = Context { hub: hub.clone(), auth: options.auth.clone(), stomp: options.stomp };
                front.serve(ws, cx, protocol).await;
            }
            drop(slot);
        }
        Ok(None) => {}
        Err(e) => tracing::debug!(%peer, "request failed: {e}"),
    }
}

/// What `/` answers without the demo page.
const NO_PAGE: &str = "tether hub: no page here (the demo page is served with --demo). Endpoints: \
WebSocket /ws (tether.json) and /stomp (STOMP), server API /api/, /healthz, /metrics.";

fn json_response(status: u16, body: String) -> HttpResponse {
    HttpResponse::new(status, "application/json", body)
}

fn api_error(status: u16, message: &str) -> HttpResponse {
    json_response(status, format!("{{\"error\":{}}}", serde_json::to_string(message).unwrap_or_default()))
}

async fn route(req: HttpRequest, hub: &Hub, options: &ServeOptions) -> HttpResponse {
    let path = req.head.path.as_str();
    let method = req.head.method.as_str();
    if let Some(api) = path.strip_prefix("/api/") {
        hub.metrics.api_requests.fetch_add(1, Ordering::Relaxed);
        return server_api(api, &req, hub, options).await;
    }
    match (method, path) {
        ("GET" | "HEAD", "/healthz") if hub.broker_up() => HttpResponse::text(200, "ok"),
        ("GET" | "HEAD", "/healthz") => HttpResponse::text(503, "broker unavailable"),
        ("GET" | "HEAD", "/metrics") => {
            HttpResponse::new(200, "text/plain; version=0.0.4", hub.metrics.render(&hub.namespace_counts()))
        }
        ("GET" | "HEAD", _) => match web::asset(path).filter(|_| options.demo_page) {
            Some((content_type, body)) => {
                HttpResponse::new(200, content_type, body).with_header("Cache-Control", "no-cache")
            }
            None if path == "/" => HttpResponse::text(404, NO_PAGE),
            None => HttpResponse::text(404, "not found"),
        },
        _ => HttpResponse::text(405, "method not allowed").with_header("Allow", "GET, HEAD"),
    }
}

#[derive(Deserialize)]
struct ApiPublish<'a> {
    channel: String,
    #[serde(borrow)]
    data: &'a RawValue,
}

#[derive(Deserialize)]
struct ApiBroadcast<'a> {
    channels: Vec<String>,
    #[serde(borrow)]
    data: &'a RawValue,
}

#[derive(Deserialize)]
struct ApiChannel {
    channel: String,
}

#[derive(Deserialize)]
struct ApiHistory {
    channel: String,
    limit: Option<usize>,
    since: Option<u64>,
}

#[derive(Deserialize)]
struct ApiDisconnect {
    user: String,
}

fn position_json(offset: u64, epoch: &str) -> String {
    format!("{{\"offset\":{offset},\"epoch\":{}}}", serde_json::to_string(epoch).unwrap_or_default())
}

/// The server API: POST JSON, `Authorization: apikey KEY`, JSON answers.
async fn server_api(name: &str, req: &HttpRequest, hub: &Hub, options: &ServeOptions) -> HttpResponse {
    let Some(key) = &options.api_key else {
        return api_error(403, "the server API is disabled: start the server with --api-key");
    };
    let given = req.head.headers.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or("");
    let ok = given.strip_prefix("apikey ").is_some_and(|k| same_secret(k.trim().as_bytes(), key.as_bytes()));
    if !ok {
        return api_error(401, "missing or wrong API key (header Authorization: apikey KEY)");
    }
    if req.head.method != "POST" {
        return api_error(405, "the server API takes POST with a JSON body").with_header("Allow", "POST");
    }
    let call = match parse_api(name, &req.body) {
        Ok(call) => call,
        Err(ApiParseError::UnknownMethod) => return api_error(404, UNKNOWN_API_METHOD),
        Err(ApiParseError::Body(e)) => return api_error(400, &format!("invalid body: {e}")),
    };
    match call {
        ApiCall::Publish(p) => {
            match hub.publish(&p.channel, Bytes::copy_from_slice(p.data.get().as_bytes()), None).await {
                Ok(pos) => {
                    json_response(200, format!("{{\"result\":{}}}", position_json(pos.offset, &pos.epoch)))
                }
                Err(e) => api_error(http_status(&e), &e.to_string()),
            }
        }
        ApiCall::Broadcast(b) => {
            let data = Bytes::copy_from_slice(b.data.get().as_bytes());
            let mut out = String::from("{\"result\":{\"responses\":[");
            for (i, channel) in b.channels.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                match hub.publish(channel, data.clone(), None).await {
                    Ok(pos) => {
                        out.push_str(&format!("{{\"result\":{}}}", position_json(pos.offset, &pos.epoch)))
                    }
                    Err(e) => {
                        let _ = write!(
                            out,
                            "{{\"error\":{}}}",
                            serde_json::to_string(&e.to_string()).unwrap_or_default()
                        );
                    }
                }
            }
            out.push_str("]}}");
            json_response(200, out)
        }
        ApiCall::Presence(p) => match hub.presence(&p.channel, None).await {
            Ok(list) => json_response(200, format!("{{\"result\":{{\"clients\":{}}}}}", clients_json(&list))),
            Err(e) => api_error(http_status(&e), &e.to_string()),
        },
        ApiCall::History(h) => {
            match hub.history(&h.channel, h.limit.unwrap_or(usize::MAX), h.since, None).await {
                Ok((pos, events)) => json_response(
                    200,
                    format!(
                        "{{\"result\":{{\"offset\":{},\"epoch\":{},\"publications\":{}}}}}",
                        pos.offset,
                        serde_json::to_string(&*pos.epoch).unwrap_or_default(),
                        publications_json(&events)
                    ),
                ),
                Err(e) => api_error(http_status(&e), &e.to_string()),
            }
        }
        ApiCall::Disconnect(d) => {
            let n = hub.disconnect_user(&d.user, close::DISCONNECTED, "disconnected by the server");
            json_response(200, format!("{{\"result\":{{\"disconnected\":{n}}}}}"))
        }
        ApiCall::Channels => {
            let mut out = String::from("{\"result\":{\"channels\":[");
            for (i, (channel, subs)) in hub.channels().iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                let _ = write!(
                    out,
                    "{{\"channel\":{},\"subscribers\":{subs}}}",
                    serde_json::to_string(channel).unwrap_or_default()
                );
            }
            out.push_str("]}}");
            json_response(200, out)
        }
    }
}

const UNKNOWN_API_METHOD: &str =
    "unknown API method (publish, broadcast, presence, history, disconnect, channels)";

/// A server API call with its parsed body.
enum ApiCall<'a> {
    Publish(ApiPublish<'a>),
    Broadcast(ApiBroadcast<'a>),
    Presence(ApiChannel),
    History(ApiHistory),
    Disconnect(ApiDisconnect),
    Channels,
}

/// Why a server API request could not be read.
#[derive(Debug)]
pub enum ApiParseError {
    /// No such method (HTTP 404).
    UnknownMethod,
    /// The body is not the method's JSON shape (HTTP 400).
    Body(serde_json::Error),
}

/// Reads a server API request body for method `name` (an empty body is `{}`).
fn parse_api<'a>(name: &str, body: &'a [u8]) -> Result<ApiCall<'a>, ApiParseError> {
    fn json<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, ApiParseError> {
        let body = if body.is_empty() { &b"{}"[..] } else { body };
        serde_json::from_slice(body).map_err(ApiParseError::Body)
    }
    Ok(match name {
        "publish" => ApiCall::Publish(json(body)?),
        "broadcast" => ApiCall::Broadcast(json(body)?),
        "presence" => ApiCall::Presence(json(body)?),
        "history" => ApiCall::History(json(body)?),
        "disconnect" => ApiCall::Disconnect(json(body)?),
        "channels" => ApiCall::Channels,
        _ => return Err(ApiParseError::UnknownMethod),
    })
}

/// Reads a server API request body the way the hub does, without running it (for the fuzz
/// target and tests).
///
/// # Errors
///
/// [`ApiParseError`]: the method is unknown or the body is not its JSON shape.
pub fn check_api_body(name: &str, body: &[u8]) -> Result<(), ApiParseError> {
    parse_api(name, body).map(|_| ())
}

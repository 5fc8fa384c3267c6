//! What the hub serves through hyper: every request that is not an HTTP/1.1 WebSocket
//! handshake opening a connection (those take tether's fast path in [`super`]), over
//! HTTP/1.1 and HTTP/2. WebSocket over HTTP/2 (extended CONNECT, RFC 8441) and later
//! upgrades on a kept-alive HTTP/1.1 connection go through [`tether::hyper::upgrade`], with
//! the same rules, limits and front-ends as the fast path.

use super::api::{self, Answer};
use super::{web, Shared, ENDPOINTS};
use crate::frontend;
use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode, Version};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncWrite};

/// A response body: whole, or streamed (SockJS).
pub(crate) type Body = UnsyncBoxBody<Bytes, Infallible>;

/// What a listener serves.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Surface {
    /// The public port: page, WebSocket, health, and the API and metrics unless an admin
    /// listener has them.
    Public { admin_elsewhere: bool },
    /// The admin port: the API, metrics and health only.
    Admin,
}

impl Surface {
    fn public(self) -> bool {
        matches!(self, Self::Public { .. })
    }
    fn admin(self) -> bool {
        matches!(self, Self::Admin | Self::Public { admin_elsewhere: false })
    }
}

/// Serves one connection with hyper until it ends. `http2`: the version tether saw the
/// client start with (`None`: let hyper tell).
pub(crate) async fn serve<I>(
    io: I,
    shared: Arc<Shared>,
    surface: Surface,
    peer: SocketAddr,
    http2: Option<bool>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let timeout = shared.server.config.handshake_timeout;
    let (allow_h2, max_streams) = (shared.options.http2, shared.options.http2_max_streams);
    let ping = shared.server.config.ping_interval;
    let service = hyper::service::service_fn(move |req| {
        let shared = shared.clone();
        async move { Ok::<_, Infallible>(handle(req, &shared, surface, peer).await) }
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(timeout);
    builder.http2().timer(TokioTimer::new()).max_concurrent_streams(max_streams);
    // HTTP/2 PINGs at the WebSocket ping interval: a peer that vanished without a FIN is
    // let go with its connection (and every WebSocket stream on it).
    builder.http2().keep_alive_interval(ping);
    if surface.public() {
        // Every WebSocket route of this port takes extended CONNECT, so it may be
        // advertised (a browser then opens its WebSockets on the page's connection).
        builder.http2().enable_connect_protocol();
    }
    let builder = match (http2, allow_h2) {
        (Some(true), _) => builder.http2_only(),
        (Some(false), _) | (None, false) => builder.http1_only(),
        (None, true) => builder,
    };
    if let Err(e) = builder.serve_connection_with_upgrades(TokioIo::new(io), service).await {
        tracing::debug!(%peer, "http connection ended: {e}");
    }
}

async fn handle(
    req: Request<Incoming>,
    shared: &Arc<Shared>,
    surface: Surface,
    peer: SocketAddr,
) -> Response<Body> {
    let path = req.uri().path();
    if surface.public() {
        if let Some(endpoint) = shared.sockjs.iter().find(|e| e.matches(path)) {
            return endpoint.handle(req, &shared.server).await;
        }
        if let Some(endpoint) = shared.socketio_at(path) {
            return endpoint.handle(req).await;
        }
        if frontend::registered().iter().any(|f| f.path() == path) {
            return websocket(req, shared, peer);
        }
        if is_websocket_attempt(&req) {
            shared.hub.metrics.refused.fetch_add(1, Ordering::Relaxed);
            return text(404, ENDPOINTS);
        }
    }
    if path.starts_with("/api/") {
        if !surface.admin() {
            return text(404, "not found (the server API is on the admin listener)");
        }
        // The method's name, borrowed from a copy of the URI (a reference count, where a
        // copy of the name would be an allocation per request) while the request moves on.
        let uri = req.uri().clone();
        let name = uri.path().strip_prefix("/api/").unwrap_or_default();
        return server_api(req, name, shared).await;
    }
    let (hub, options) = (&shared.hub, &shared.options);
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut r = text(405, "method not allowed");
        r.headers_mut().insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    match path {
        "/healthz" if hub.broker_up() => text(200, "ok"),
        "/healthz" => text(503, "broker unavailable"),
        "/metrics" if surface.admin() => {
            let mut text = hub.metrics.render(&hub.namespace_counts());
            text.push_str(
                "# HELP tether_sockjs_sessions Open SockJS sessions (HTTP transports), by prefix.\n",
            );
            text.push_str("# TYPE tether_sockjs_sessions gauge\n");
            for e in &shared.sockjs {
                text.push_str(&format!(
                    "tether_sockjs_sessions{{prefix=\"{}\"}} {}\n",
                    e.prefix(),
                    e.session_count()
                ));
            }
            if let Some(e) = &shared.socketio {
                text.push_str(
                    "# HELP tether_socketio_sessions Open Engine.IO sessions (Socket.IO clients).\n",
                );
                text.push_str("# TYPE tether_socketio_sessions gauge\n");
                text.push_str(&format!(
                    "tether_socketio_sessions{{prefix=\"{}\"}} {}\n",
                    e.prefix(),
                    e.session_count()
                ));
            }
            full(200, "text/plain; version=0.0.4", text)
        }
        _ if !surface.public() => text(404, "not found"),
        _ => match web::asset(path).filter(|_| options.demo_page) {
            Some((content_type, body)) => {
                let mut r = full(200, content_type, body);
                r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
                r
            }
            None if path == "/" => text(404, NO_PAGE),
            None => text(404, "not found"),
        },
    }
}

/// What `/` answers without the demo page.
const NO_PAGE: &str = "tether hub: no page here (the demo page is served with --demo). Endpoints: \
WebSocket /ws (tether.json) and /stomp (STOMP), SockJS /sockjs (tether.json) and /stomp-sockjs \
(STOMP) unless configured otherwise, server API /api/, /healthz, /metrics.";

/// A WebSocket request to a front-end's path: HTTP/1.1 upgrade or HTTP/2 extended CONNECT.
fn websocket(mut req: Request<Incoming>, shared: &Arc<Shared>, peer: SocketAddr) -> Response<Body> {
    let path = req.uri().path().to_owned();
    let slot = match shared.admit(&path, peer.ip()) {
        Ok(slot) => slot,
        Err(r) => return text(r.status, &r.reason),
    };
    match tether::hyper::upgrade(&mut req, &shared.server) {
        Ok((response, pending)) => {
            let http2 = req.version() == Version::HTTP_2;
            let shared = shared.clone();
            tokio::spawn(async move {
                match pending.await {
                    Ok(ws) => {
                        tracing::debug!(%peer, %path, http2, "websocket connected");
                        shared.websocket_task(super::NewSocket::Task(ws), &path, http2, slot).await;
                    }
                    Err(e) => tracing::debug!(%peer, "websocket upgrade failed: {e}"),
                }
            });
            response.map(|b| b.boxed_unsync())
        }
        Err(refusal) => {
            shared.hub.metrics.refused.fetch_add(1, Ordering::Relaxed);
            refusal.map(|b| b.boxed_unsync())
        }
    }
}

/// Whether a request is a WebSocket handshake attempt of either HTTP version: tether-proto's
/// rule for HTTP/1.1, or an HTTP/2 CONNECT.
fn is_websocket_attempt<B>(req: &Request<B>) -> bool {
    req.method() == Method::CONNECT || tether::tether_proto::handshake::is_websocket_attempt(req.headers())
}

/// The server API, with CORS for the configured origins.
async fn server_api(req: Request<Incoming>, name: &str, shared: &Shared) -> Response<Body> {
    shared.hub.metrics.api_requests.fetch_add(1, Ordering::Relaxed);
    let origin = req.headers().get(header::ORIGIN).cloned();
    let allowed = origin.filter(|o| cors_allows(&shared.options.cors_origins, o));
    if req.method() == Method::OPTIONS {
        return preflight(&req, allowed);
    }
    let answer = api_answer(req, name, shared).await;
    let mut r = full(answer.status, "application/json", answer.body);
    if let Some(allow) = answer.allow {
        r.headers_mut().insert(header::ALLOW, HeaderValue::from_static(allow));
    }
    if let Some(origin) = allowed {
        r.headers_mut().insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        r.headers_mut().insert(header::VARY, HeaderValue::from_static("Origin"));
    }
    r
}

async fn api_answer(req: Request<Incoming>, name: &str, shared: &Shared) -> Answer {
    let Some(key) = &shared.options.api_key else {
        return Answer::error(403, "the server API is disabled: start the server with --api-key");
    };
    let given = req.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    if !api::authorized(key, given) {
        return Answer::error(401, "missing or wrong API key (header Authorization: apikey KEY)");
    }
    if req.method() != Method::POST {
        let mut a = Answer::error(405, "the server API takes POST with a JSON body");
        a.allow = Some("POST, OPTIONS");
        return a;
    }
    let limit = shared.server.max_body_size;
    // Any transfer encoding (Content-Length, chunked, HTTP/2 DATA frames), up to the limit.
    let body = match Limited::new(req.into_body(), limit).collect().await {
        Ok(body) => body.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            return Answer::error(413, &format!("request body over the limit of {limit} bytes"));
        }
        Err(e) => return Answer::error(400, &format!("cannot read the request body: {e}")),
    };
    api::call(name, &body, &shared.hub).await
}

/// Whether `origin` may call the API from a browser.
fn cors_allows(allowed: &[String], origin: &HeaderValue) -> bool {
    let Ok(origin) = origin.to_str() else { return false };
    allowed.iter().any(|a| a == "*" || a.eq_ignore_ascii_case(origin))
}

/// The answer to an `OPTIONS` request (a CORS preflight when it has an `Origin`).
fn preflight<B>(req: &Request<B>, allowed: Option<HeaderValue>) -> Response<Body> {
    let mut r = empty(204);
    let h = r.headers_mut();
    h.insert(header::ALLOW, HeaderValue::from_static("POST, OPTIONS"));
    if !req.headers().contains_key(header::ORIGIN) {
        return r;
    }
    let Some(origin) = allowed else {
        return full(403, "application/json", Answer::error(403, "origin not allowed (cors_origins)").body);
    };
    h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    h.insert(header::ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static("POST"));
    h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, HeaderValue::from_static("authorization, content-type"));
    h.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("600"));
    h.insert(header::VARY, HeaderValue::from_static("Origin"));
    r
}

fn full(status: u16, content_type: &'static str, body: impl Into<Bytes>) -> Response<Body> {
    let mut r = Response::new(Full::new(body.into()).boxed_unsync());
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

fn empty(status: u16) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::new()).boxed_unsync());
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    r
}

fn text(status: u16, text: &str) -> Response<Body> {
    full(status, "text/plain; charset=utf-8", format!("{text}\n"))
}

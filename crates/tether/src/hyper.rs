//! WebSocket upgrades in a hyper server (feature `hyper`): HTTP/1.1 (RFC 6455) and HTTP/2
//! extended CONNECT (RFC 8441).
//!
//! [`upgrade`] checks a `hyper::Request` against the same rules as tether's own listener
//! (they live in [`tether_proto::handshake`]), applies the [`ServerConfig`]'s origin policy,
//! subprotocols and permessage-deflate, and returns the answer for hyper to send (`101` on
//! HTTP/1.1, `200` on HTTP/2) and a future that gives the [`WebSocket`] once hyper hands over
//! the connection (or the HTTP/2 stream):
//!
//! ```no_run
//! # use std::sync::Arc;
//! # async fn handle(mut req: hyper::Request<hyper::body::Incoming>, config: Arc<tether::ServerConfig>)
//! #     -> Result<hyper::Response<http_body_util::Full<bytes::Bytes>>, std::convert::Infallible> {
//! use futures_util::{SinkExt, StreamExt};
//! match tether::hyper::upgrade(&mut req, &config) {
//!     Ok((response, upgrade)) => {
//!         tokio::spawn(async move {
//!             let Ok(mut ws) = upgrade.await else { return };
//!             while let Some(Ok(msg)) = ws.next().await {
//!                 if msg.is_data() && ws.send(msg).await.is_err() {
//!                     break;
//!                 }
//!             }
//!         });
//!         Ok(response)
//!     }
//!     Err(refusal) => Ok(refusal),
//! }
//! # }
//! ```
//!
//! hyper's HTTP/1 connection must be served `with_upgrades()`; for HTTP/2, browsers use
//! extended CONNECT only where the server's settings allow it
//! (`hyper::server::conn::http2::Builder::enable_connect_protocol`): turn it on only when
//! every WebSocket route of the server goes through [`upgrade`].

use crate::upgrade::Upgrade;
use crate::{Error, ServerConfig, WebSocket};
use bytes::Bytes;
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use tether_proto::deflate;
use tether_proto::handshake::{accept_key, HttpRequest, Request};
use tether_proto::{HandshakeError, Role};

/// What [`upgrade`] answers: a response with an empty or short plain-text body.
pub type Response = ::hyper::Response<Full<Bytes>>;

/// The upgraded connection, once hyper has sent the `101` and handed it over.
pub struct Pending {
    pub(crate) on_upgrade: ::hyper::upgrade::OnUpgrade,
    pub(crate) settings: Option<Settings>,
    pub(crate) request: Request,
}

/// What the handshake settled, for the connection once it is handed over.
pub(crate) struct Settings {
    config: std::sync::Arc<tether_proto::Config>,
    protocol: Option<String>,
    deflate: Option<deflate::DeflateParams>,
}

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pending").finish_non_exhaustive()
    }
}

impl Pending {
    /// The checked request (path, query, headers, offered subprotocols), before awaiting.
    pub fn request(&self) -> &Request {
        &self.request
    }
}

impl Future for Pending {
    type Output = Result<WebSocket, Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let upgraded = match Pin::new(&mut self.on_upgrade).poll(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Ok(u)) => u,
            Poll::Ready(Err(e)) => {
                return Poll::Ready(Err(Error::Io(std::sync::Arc::new(std::io::Error::other(e)))))
            }
        };
        let Some(s) = self.settings.take() else {
            return Poll::Ready(Err(Error::Usage(tether_proto::UsageError::Closed)));
        };
        let ws = Upgrade::new(TokioIo::new(upgraded), Role::Server)
            .config(s.config)
            .protocol(s.protocol)
            .deflate(s.deflate)
            .spawn();
        Poll::Ready(Ok(ws))
    }
}

/// Checks `req` as a WebSocket handshake (RFC 6455 4.2.1, tether's rules and `config`:
/// origin policy, subprotocols, permessage-deflate, limits) and answers it.
///
/// # Errors
///
/// The refusal to send instead: 400, 403, 405, 426 or 505 with a short reason (the same
/// statuses tether's own listener answers).
#[allow(clippy::result_large_err)]
pub fn upgrade<B>(
    req: &mut ::hyper::Request<B>,
    config: &ServerConfig,
) -> Result<(Response, Pending), Response> {
    let h2 = req.version() == ::hyper::Version::HTTP_2;
    let protocol = req.extensions().get::<::hyper::ext::Protocol>().map(::hyper::ext::Protocol::as_str);
    let checked = check(req.method(), req.uri(), req.version(), req.headers(), protocol)
        .and_then(|checked| config.origin.check(&checked).map(|()| checked))
        .map_err(|e| refusal(&e))?;
    let (response, settings) = answer(&checked, h2, config)?;
    let on_upgrade = ::hyper::upgrade::on(req);
    Ok((response, Pending { on_upgrade, settings: Some(settings), request: checked }))
}

/// The answer to a checked request (origin policy applied): `101` or `200` with the
/// negotiated subprotocol and extension, and what the connection needs once upgraded.
#[allow(clippy::result_large_err)]
pub(crate) fn answer(
    checked: &Request,
    h2: bool,
    config: &ServerConfig,
) -> Result<(Response, Settings), Response> {
    let (protocol, deflate) = config.negotiate(checked);
    // HTTP/1.1: 101 with the accept key (RFC 6455 4.2.2). HTTP/2: 200, no key, no
    // Upgrade or Connection (RFC 8441 5).
    let mut response = if h2 {
        ::hyper::Response::builder().status(200)
    } else {
        ::hyper::Response::builder()
            .status(101)
            .header("upgrade", "websocket")
            .header("connection", "Upgrade")
            .header("sec-websocket-accept", accept_key(checked.key.as_bytes()))
    };
    if let Some(p) = &protocol {
        response = response.header("sec-websocket-protocol", p.as_str());
    }
    if let Some((_, answer)) = &deflate {
        response = response.header("sec-websocket-extensions", answer.as_str());
    }
    let response =
        response.body(Full::new(Bytes::new())).map_err(|_| plain(500, "cannot build the answer"))?;
    let settings =
        Settings { config: config.shared_config(), protocol, deflate: deflate.map(|(params, _)| params) };
    Ok((response, settings))
}

/// The RFC 6455 (HTTP/1.1) or RFC 8441 (HTTP/2) checks, through tether-proto's, on a parsed
/// request head; `protocol`: HTTP/2's `:protocol`. The origin policy is the caller's.
pub(crate) fn check(
    method: &::hyper::Method,
    uri: &::hyper::Uri,
    version: ::hyper::Version,
    headers: &::hyper::HeaderMap,
    protocol: Option<&str>,
) -> Result<Request, HandshakeError> {
    let version = match version {
        ::hyper::Version::HTTP_11 => 1,
        ::hyper::Version::HTTP_10 => 0,
        ::hyper::Version::HTTP_2 => 2,
        _ => return Err(HandshakeError::HttpVersion),
    };
    let mut headers = headers.clone();
    // HTTP/2 carries the host as `:authority` (in the URI), not as a `Host` header; the
    // origin policy compares against it.
    if let (None, Some(authority)) = (headers.get(::hyper::header::HOST), uri.authority()) {
        if let Ok(host) = ::hyper::header::HeaderValue::from_str(authority.as_str()) {
            headers.insert(::hyper::header::HOST, host);
        }
    }
    let head = HttpRequest {
        method: method.as_str().to_owned(),
        path: uri.path().to_owned(),
        query: uri.query().map(str::to_owned),
        version,
        headers,
    };
    if version == 2 {
        head.into_h2_upgrade(protocol)
    } else {
        head.into_upgrade()
    }
}

pub(crate) fn refusal(e: &HandshakeError) -> Response {
    let mut r = plain(e.status(), &e.to_string());
    if e.status() == 426 {
        r.headers_mut().insert("sec-websocket-version", ::hyper::header::HeaderValue::from_static("13"));
        r.headers_mut().insert("upgrade", ::hyper::header::HeaderValue::from_static("websocket"));
    }
    r
}

pub(crate) fn plain(status: u16, reason: &str) -> Response {
    let mut r = ::hyper::Response::new(Full::new(Bytes::from(format!("{reason}\n"))));
    *r.status_mut() = ::hyper::StatusCode::from_u16(status).unwrap_or(::hyper::StatusCode::BAD_REQUEST);
    r.headers_mut()
        .insert("content-type", ::hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"));
    r
}

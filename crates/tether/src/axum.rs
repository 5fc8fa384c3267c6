//! An axum extractor (feature `axum`): [`WebSocketUpgrade`], in the shape axum users know,
//! with tether's rules, limits, subprotocols, origin policy and permessage-deflate, over
//! HTTP/1.1 (upgrade) and HTTP/2 (extended CONNECT, RFC 8441; `axum::serve` advertises it).
//!
//! ```no_run
//! use axum::{routing::any, Router};
//! use futures_util::{SinkExt, StreamExt};
//! use tether::axum::WebSocketUpgrade;
//!
//! async fn ws(upgrade: WebSocketUpgrade) -> axum::response::Response {
//!     upgrade.protocols(["chat"]).on_upgrade(|mut socket| async move {
//!         while let Some(Ok(msg)) = socket.next().await {
//!             if msg.is_data() && socket.send(msg).await.is_err() {
//!                 break;
//!             }
//!         }
//!     })
//! }
//!
//! # async fn run() {
//! // `any`, not `get`: over HTTP/2 the handshake is a CONNECT request.
//! let app = Router::new().route("/ws", any(ws));
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await.unwrap();
//! axum::serve(listener, app).await.unwrap();
//! # }
//! ```

use crate::hyper::{answer, check, plain, refusal, Pending};
use crate::{Config, OriginPolicy, ServerConfig, WebSocket};
use axum_core::body::Body;
use axum_core::extract::FromRequestParts;
use axum_core::response::Response;
use http::request::Parts;
use std::future::Future;
use tether_proto::handshake::Request;

/// A WebSocket handshake, checked by the RFC 6455 / RFC 8441 rules when extracted (a request
/// that is not one gets 400, 405 or 426); [`on_upgrade`](Self::on_upgrade) applies the
/// origin policy, picks the subprotocol and the extension, and answers.
#[derive(Debug)]
pub struct WebSocketUpgrade {
    request: Request,
    http2: bool,
    on_upgrade: Option<::hyper::upgrade::OnUpgrade>,
    config: ServerConfig,
}

impl<S: Send + Sync> FromRequestParts<S> for WebSocketUpgrade {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let protocol = parts.extensions.get::<::hyper::ext::Protocol>().map(::hyper::ext::Protocol::as_str);
        let request = check(&parts.method, &parts.uri, parts.version, &parts.headers, protocol)
            .map_err(|e| refusal(&e).map(Body::new))?;
        let on_upgrade = parts.extensions.remove::<::hyper::upgrade::OnUpgrade>();
        Ok(Self {
            request,
            http2: parts.version == http::Version::HTTP_2,
            on_upgrade,
            config: ServerConfig::default(),
        })
    }
}

impl WebSocketUpgrade {
    /// The checked request: path, query, headers, offered subprotocols and extensions.
    pub fn request(&self) -> &Request {
        &self.request
    }

    /// Whether the handshake came over HTTP/2.
    pub fn is_http2(&self) -> bool {
        self.http2
    }

    /// The subprotocols this endpoint speaks, most preferred first.
    pub fn protocols<I: IntoIterator<Item = P>, P: Into<String>>(mut self, protocols: I) -> Self {
        self.config = self.config.with_protocols(protocols);
        self
    }

    /// The connection's limits and timers, and permessage-deflate (`Config::with_deflate`).
    pub fn config(mut self, config: Config) -> Self {
        self.config = self.config.with_config(config);
        self
    }

    /// Which `Origin`s are accepted (default: any; browsers' pages from other sites can
    /// then connect: set `SameHost` or an allow-list where cookies or other ambient
    /// credentials matter).
    pub fn origin(mut self, origin: OriginPolicy) -> Self {
        self.config = self.config.with_origin(origin);
        self
    }

    /// All of the above at once, from a [`ServerConfig`] (its listener settings, such as
    /// TLS and connection limits, are axum's business and are ignored).
    pub fn server_config(mut self, config: &ServerConfig) -> Self {
        self.config = config.clone();
        self
    }

    /// Answers the handshake (`101`, or `200` on HTTP/2) and runs `callback` with the
    /// [`WebSocket`] once the connection is handed over; or answers the refusal (403 for
    /// an origin the policy refuses). The response may be given more headers (a cookie)
    /// before it is returned.
    pub fn on_upgrade<F, Fut>(self, callback: F) -> Response
    where
        F: FnOnce(WebSocket) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        if let Err(e) = self.config.origin.check(&self.request) {
            return refusal(&e).map(Body::new);
        }
        let Some(on_upgrade) = self.on_upgrade else {
            return plain(500, "this connection cannot be upgraded (HTTP/1 must be served with upgrades)")
                .map(Body::new);
        };
        let (response, settings) = match answer(&self.request, self.http2, &self.config) {
            Ok(ok) => ok,
            Err(refused) => return refused.map(Body::new),
        };
        let pending = Pending { on_upgrade, settings: Some(settings), request: self.request };
        tokio::spawn(async move {
            match pending.await {
                Ok(ws) => callback(ws).await,
                Err(e) => tracing::debug!("websocket upgrade failed: {e}"),
            }
        });
        response.map(Body::new)
    }
}

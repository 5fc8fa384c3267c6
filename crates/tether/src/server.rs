//! The server side: upgrading accepted streams, and a listener helper.

use crate::handoff::{Accepted, HttpConnection};
use crate::limit::{self, Kind, ListenerStats, Permit};
use crate::stream::{Transport, Upgraded};
use crate::{Error, WebSocket, WebSocketStream};
use bytes::Bytes;
use http::HeaderMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tether_proto::handshake::{
    accept_response, check_field, h2_preface, head_ready, http_response, parse_http_request, reject_response,
    reject_response_with_body, select_protocol, HttpRequest as HttpHead, OriginPolicy, Request,
};
use tether_proto::{deflate, Config, Connection, HandshakeError};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, ToSocketAddrs};

/// How much a read during the handshake asks for.
const READ_CHUNK: usize = 2048;

/// How a server accepts connections.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ServerConfig {
    /// Limits and timers of each connection.
    pub config: Config,
    /// Subprotocols this server speaks, most preferred first.
    pub protocols: Vec<String>,
    /// Which `Origin`s are accepted.
    pub origin: OriginPolicy,
    /// TLS for `wss://` (see [`crate::tls`]); `None` serves plain `ws://`.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Largest body of a plain HTTP request handled by [`Incoming::serve`]; larger ones get
    /// 413. Default 1 MiB.
    pub max_body_size: usize,
    /// Connections a [`Listener`] holds at most, upgraded or not; a connection beyond them
    /// is answered `503 Service Unavailable` and closed, and the open ones keep working.
    /// Default: the process's open-files limit less `max_handshakes` and 64 (10,000 where
    /// that limit cannot be read).
    pub max_connections: usize,
    /// Connections a [`Listener`] holds that are not upgraded yet (reading a request head,
    /// serving plain HTTP, or being refused) at most; beyond them a new connection is
    /// closed at once, without an answer. Bounds what slow or silent clients can hold.
    /// Default 1024.
    pub max_handshakes: usize,
    /// After an early refusal (400, 403, 404, 405, 408, 413, 426, 431, 503, ...), how long
    /// the server keeps reading and discarding what the client still sends before it
    /// closes ("lingering close"): closing with unread bytes would make the client's
    /// kernel see a reset and drop the answer unread. Default 2 s.
    pub linger_time: Duration,
    /// How many bytes a lingering close reads and discards at most. Default 16 MiB.
    pub linger_bytes: usize,
    /// `config`, shared by every connection of a [`Listener`] (set when it binds).
    shared: Option<Arc<Config>>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            config: Config::default(),
            protocols: Vec::new(),
            origin: OriginPolicy::default(),
            tls: None,
            max_body_size: 1 << 20,
            max_connections: limit::default_max_connections(),
            max_handshakes: limit::DEFAULT_MAX_HANDSHAKES,
            linger_time: Duration::from_secs(2),
            linger_bytes: 16 << 20,
            shared: None,
        }
    }
}

impl ServerConfig {
    /// Sets the connection limits and timers.
    pub fn with_config(mut self, config: Config) -> Self {
        self.config = config;
        self
    }
    /// Sets the subprotocols, most preferred first.
    pub fn with_protocols<I: IntoIterator<Item = S>, S: Into<String>>(mut self, p: I) -> Self {
        self.protocols = p.into_iter().map(Into::into).collect();
        self
    }
    /// Serves TLS with this configuration.
    pub fn with_tls(mut self, tls: Arc<rustls::ServerConfig>) -> Self {
        self.tls = Some(tls);
        self
    }
    /// Sets the origin policy.
    pub fn with_origin(mut self, origin: OriginPolicy) -> Self {
        self.origin = origin;
        self
    }
    /// Sets the largest body of a plain HTTP request.
    pub fn with_max_body_size(mut self, bytes: usize) -> Self {
        self.max_body_size = bytes;
        self
    }
    /// Sets the most connections a listener holds.
    pub fn with_max_connections(mut self, n: usize) -> Self {
        self.max_connections = n;
        self
    }
    /// Sets the most connections a listener holds that are not upgraded yet.
    pub fn with_max_handshakes(mut self, n: usize) -> Self {
        self.max_handshakes = n;
        self
    }
    /// Sets how long, and for how many bytes at most, a refused connection is drained
    /// before it is closed.
    pub fn with_linger(mut self, time: Duration, bytes: usize) -> Self {
        self.linger_time = time;
        self.linger_bytes = bytes;
        self
    }
}

/// A plain (not upgrade) HTTP request, with its body, for [`Incoming::serve`].
#[derive(Debug, Clone)]
pub struct HttpRequest {
    /// Method, path, query, version and headers.
    pub head: HttpHead,
    /// The body (`Content-Length` bytes; empty without one).
    pub body: Bytes,
    /// The peer's address.
    pub remote_addr: Option<SocketAddr>,
}

/// An answer to a plain HTTP request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpResponse {
    /// Status code.
    pub status: u16,
    /// Headers besides `Content-Length` and `Connection`, which are set for you.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Bytes,
}

impl HttpResponse {
    /// A response with `status`, `Content-Type: content_type` and `body`.
    pub fn new(status: u16, content_type: &str, body: impl Into<Bytes>) -> Self {
        Self { status, headers: vec![("Content-Type".into(), content_type.into())], body: body.into() }
    }
    /// A plain-text response (a line ending is added).
    pub fn text(status: u16, text: &str) -> Self {
        Self::new(status, "text/plain; charset=utf-8", format!("{text}\n"))
    }
    /// Adds a header.
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }
}

/// The application's refusal of a request: an HTTP status, a short reason (the plain-text
/// body), and optionally headers (`WWW-Authenticate`, `Retry-After`, ...) and a body of
/// its own.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Reject {
    /// HTTP status, e.g. 401 or 404.
    pub status: u16,
    /// Short plain-text reason, sent as the body unless [`with_body`](Self::with_body) set
    /// one.
    pub reason: String,
    /// Headers and a body of the application's, boxed: most refusals have neither, and a
    /// check returns `Result<(), Reject>` on every handshake.
    extra: Option<Box<RejectExtra>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct RejectExtra {
    headers: HeaderMap,
    body: Option<(String, Bytes)>,
}

impl Reject {
    /// A refusal with `status` and `reason`.
    pub fn new(status: u16, reason: impl Into<String>) -> Self {
        Self { status, reason: reason.into(), extra: None }
    }

    /// Adds a header to the refusal.
    pub fn with_header(mut self, name: http::HeaderName, value: http::HeaderValue) -> Self {
        self.extra.get_or_insert_with(Box::default).headers.append(name, value);
        self
    }

    /// Sends `body` with `content_type` instead of the plain-text reason (which stays for
    /// logs and errors).
    pub fn with_body(mut self, content_type: impl Into<String>, body: impl Into<Bytes>) -> Self {
        self.extra.get_or_insert_with(Box::default).body = Some((content_type.into(), body.into()));
        self
    }

    /// The headers [`with_header`](Self::with_header) added.
    pub fn headers(&self) -> Option<&HeaderMap> {
        self.extra.as_ref().map(|e| &e.headers)
    }

    /// The content type and body [`with_body`](Self::with_body) set.
    pub fn body(&self) -> Option<(&str, &Bytes)> {
        self.extra.as_ref().and_then(|e| e.body.as_ref()).map(|(t, b)| (t.as_str(), b))
    }
}

/// The application's acceptance of a handshake, from an async check
/// ([`Incoming::upgrade_async`], [`accept_async`]): headers to add to the `101` answer
/// (`Set-Cookie`, ...) and, optionally, the subprotocol to answer with (one the client
/// offered), instead of the first of [`ServerConfig::protocols`] the client offered.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Accept {
    /// Headers to add to the answer.
    pub headers: HeaderMap,
    /// The subprotocol to answer with.
    pub protocol: Option<String>,
}

impl Accept {
    /// Accepts with nothing added.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a header to the answer.
    pub fn with_header(mut self, name: http::HeaderName, value: http::HeaderValue) -> Self {
        self.headers.append(name, value);
        self
    }

    /// Answers with this subprotocol (it must be one the client offered).
    pub fn with_protocol(mut self, protocol: impl Into<String>) -> Self {
        self.protocol = Some(protocol.into());
        self
    }
}

/// Headers the handshake answer sets itself; an [`Accept`] may not set them.
const ANSWER_HEADERS: [http::HeaderName; 5] = [
    http::header::UPGRADE,
    http::header::CONNECTION,
    http::header::SEC_WEBSOCKET_ACCEPT,
    http::header::SEC_WEBSOCKET_PROTOCOL,
    http::header::SEC_WEBSOCKET_EXTENSIONS,
];

/// A synchronous check as an async one that accepts with nothing added.
fn sync_check<F>(check: F) -> impl FnOnce(&Request) -> std::future::Ready<Result<Accept, Reject>>
where
    F: FnOnce(&Request) -> Result<(), Reject>,
{
    move |req| std::future::ready(check(req).map(|()| Accept::default()))
}

/// Upgrades a stream with the default [`ServerConfig`], accepting every valid request.
///
/// # Errors
///
/// [`Error::Handshake`] (after answering with the matching HTTP status), [`Error::Timeout`]
/// or [`Error::Io`].
pub async fn accept<S>(stream: S) -> Result<WebSocket, Error>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    accept_with(stream, None, &ServerConfig::default(), |_| Ok(())).await.map(|(ws, _)| ws)
}

/// Upgrades a stream. `check` sees the validated request (path, query, headers, remote
/// address) and may refuse it with a status of its choice. Every refusal, ours or the
/// application's, is answered with an HTTP status and a reason before the socket is closed.
///
/// # Errors
///
/// As [`accept`].
pub async fn accept_with<S, F>(
    stream: S,
    remote_addr: Option<SocketAddr>,
    config: &ServerConfig,
    check: F,
) -> Result<(WebSocket, Request), Error>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    F: FnOnce(&Request) -> Result<(), Reject>,
{
    let (upgraded, request) = accept_upgraded(stream, remote_addr, config, sync_check(check), None).await?;
    Ok((upgraded.spawn(), request))
}

/// Upgrades a stream, with an async `check` that may take its time (a database, another
/// service) and may add headers to the answer or choose the subprotocol ([`Accept`]), or
/// refuse with a status, headers and a body ([`Reject`]). The check has
/// `config.handshake_timeout`; past it the request is answered 503.
///
/// # Errors
///
/// As [`accept`].
pub async fn accept_async<S, F, Fut>(
    stream: S,
    remote_addr: Option<SocketAddr>,
    config: &ServerConfig,
    check: F,
) -> Result<(WebSocket, Request), Error>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    F: FnOnce(&Request) -> Fut,
    Fut: Future<Output = Result<Accept, Reject>>,
{
    let limit = Some(config.config.handshake_timeout);
    let (upgraded, request) = accept_upgraded(stream, remote_addr, config, check, limit).await?;
    Ok((upgraded.spawn(), request))
}

/// Upgrades a stream into a [`WebSocketStream`], driven by its caller; otherwise as
/// [`accept_with`].
///
/// # Errors
///
/// As [`accept`].
pub async fn accept_direct<S, F>(
    stream: S,
    remote_addr: Option<SocketAddr>,
    config: &ServerConfig,
    check: F,
) -> Result<(WebSocketStream<S>, Request), Error>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    F: FnOnce(&Request) -> Result<(), Reject>,
{
    let (upgraded, request) = accept_upgraded(stream, remote_addr, config, sync_check(check), None).await?;
    Ok((upgraded.direct(), request))
}

async fn accept_upgraded<S, F, Fut>(
    mut stream: S,
    remote_addr: Option<SocketAddr>,
    config: &ServerConfig,
    check: F,
    limit: Option<Duration>,
) -> Result<(Upgraded<S>, Request), Error>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    F: FnOnce(&Request) -> Fut,
    Fut: Future<Output = Result<Accept, Reject>>,
{
    let timeout = config.config.handshake_timeout;
    let mut buf = Vec::new();
    let read = async {
        match read_head(&mut stream, &mut buf, config).await? {
            Some((head, len)) => Ok((head.into_upgrade()?, len)),
            None => Err(HandshakeError::MalformedHttp("connection closed during handshake").into()),
        }
    };
    let (request, len) = match tokio::time::timeout(timeout, read).await {
        Ok(Ok(read)) => read,
        Ok(Err(Error::Handshake(e))) => return Err(refuse(&mut stream, e, config).await),
        Ok(Err(e)) => return Err(e),
        Err(_) => {
            let e = HandshakeError::Rejected { status: 408, reason: "handshake timed out".into() };
            refuse(&mut stream, e, config).await;
            return Err(Error::Timeout);
        }
    };
    buf.drain(..len);
    upgrade_parsed(stream, request, buf, remote_addr, config, check, limit).await
}

/// Finishes an upgrade whose request is read and valid: origin policy, the application's
/// check, subprotocol and extension choice, and the 101 answer.
async fn upgrade_parsed<S, F, Fut>(
    mut stream: S,
    mut request: Request,
    leftover: Vec<u8>,
    remote_addr: Option<SocketAddr>,
    config: &ServerConfig,
    check: F,
    limit: Option<Duration>,
) -> Result<(Upgraded<S>, Request), Error>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    F: FnOnce(&Request) -> Fut,
    Fut: Future<Output = Result<Accept, Reject>>,
{
    request.remote_addr = remote_addr;
    if let Err(e) = config.origin.check(&request) {
        return Err(refuse(&mut stream, e, config).await);
    }
    // An async check gets the handshake time; a synchronous one needs no timer.
    let decided = match limit {
        None => Ok(check(&request).await),
        Some(limit) => tokio::time::timeout(limit, check(&request)).await,
    };
    let accept = match decided {
        Ok(Ok(accept)) => accept,
        Ok(Err(r)) => return Err(refuse_app(&mut stream, r, config).await),
        Err(_) => {
            let r = Reject::new(503, "the server did not decide on the request in time");
            return Err(refuse_app(&mut stream, r, config).await);
        }
    };
    let (mut protocol, deflate) = config.negotiate(&request);
    if let Some(chosen) = accept.protocol {
        if !request.protocols.contains(&chosen) {
            tracing::error!(protocol = %chosen.escape_debug(), "the check chose a subprotocol the client did not offer; answering 500");
            let r = Reject::new(500, "internal error: the server chose a subprotocol that was not offered");
            return Err(refuse_app(&mut stream, r, config).await);
        }
        protocol = Some(chosen);
    }
    if let Some(name) = ANSWER_HEADERS.iter().find(|h| accept.headers.contains_key(*h)) {
        tracing::error!(header = %name, "the check set a header the handshake sets itself; answering 500");
        let r = Reject::new(500, "internal error: the answer had a header the handshake sets");
        return Err(refuse_app(&mut stream, r, config).await);
    }
    let extensions = deflate.as_ref().map(|(_, answer)| answer.as_str());
    let response = accept_response(&request, protocol.as_deref(), extensions, &accept.headers);
    stream.write_all(&response).await?;
    let conn = Connection::server(config.shared_config()).with_deflate(deflate.map(|(params, _)| params));
    Ok((Upgraded { io: stream, conn, leftover, protocol, permit: None }, request))
}

impl ServerConfig {
    /// What this server answers a checked request with: the subprotocol it picks, and the
    /// permessage-deflate parameters with the `Sec-WebSocket-Extensions` answer, if it
    /// accepts the offer. Every way in (the listener, [`crate::hyper`]) answers alike.
    pub(crate) fn negotiate(
        &self,
        request: &Request,
    ) -> (Option<String>, Option<(deflate::DeflateParams, String)>) {
        let protocol = select_protocol(&request.protocols, &self.protocols).map(str::to_owned);
        let deflate =
            self.config.deflate.as_ref().and_then(|d| deflate::server_accept(&request.extensions, d));
        (protocol, deflate)
    }

    /// The connections' `Config`: one shared by every connection of a [`Listener`], else a
    /// fresh copy.
    pub(crate) fn shared_config(&self) -> Arc<Config> {
        self.shared.clone().unwrap_or_else(|| Arc::new(self.config.clone()))
    }
}

/// Serves plain HTTP requests on a connection (keep-alive), until one asks for an upgrade
/// (then upgraded as by [`accept_with`]) or the connection ends.
async fn serve_stream<S, C, R, Fut>(
    mut stream: S,
    remote_addr: Option<SocketAddr>,
    config: &ServerConfig,
    check: C,
    mut route: R,
) -> Result<Option<(Upgraded<S>, Request)>, Error>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    C: FnOnce(&Request) -> Result<(), Reject>,
    R: FnMut(HttpRequest) -> Fut,
    Fut: Future<Output = HttpResponse>,
{
    let timeout = config.config.handshake_timeout;
    let mut buf = Vec::new();
    let mut served = 0usize;
    loop {
        let (head, len) = match tokio::time::timeout(timeout, read_head(&mut stream, &mut buf, config)).await
        {
            Ok(Ok(Some(read))) => read,
            // The peer closed between requests, or stayed idle after one: a normal end.
            Ok(Ok(None)) => return Ok(None),
            Err(_) if served > 0 && buf.is_empty() => return Ok(None),
            Ok(Err(Error::Handshake(e))) => return Err(refuse(&mut stream, e, config).await),
            Ok(Err(e)) => return Err(e),
            Err(_) => {
                let e = HandshakeError::Rejected { status: 408, reason: "request timed out".into() };
                refuse(&mut stream, e, config).await;
                return Err(Error::Timeout);
            }
        };
        let rest = buf.split_off(len);
        buf = rest;
        // A request with `Sec-WebSocket-Key` or `-Version` is a handshake attempt even
        // without `Upgrade: websocket`: it is checked as one (and refused with 426 or 400)
        // rather than answered with whatever page lives at its path.
        if head.is_websocket_attempt() {
            let request = match head.into_upgrade() {
                Ok(r) => r,
                Err(e) => return Err(refuse(&mut stream, e, config).await),
            };
            return upgrade_parsed(stream, request, buf, remote_addr, config, sync_check(check), None)
                .await
                .map(Some);
        }
        let body_len = match head.content_length() {
            Ok(n) if n > config.max_body_size => {
                let why = format!("request body of {n} bytes over the limit of {}", config.max_body_size);
                let e = HandshakeError::Rejected { status: 413, reason: why };
                return Err(refuse(&mut stream, e, config).await);
            }
            Ok(n) => n,
            Err(e) => return Err(refuse(&mut stream, e, config).await),
        };
        let read_body = async {
            while buf.len() < body_len {
                buf.reserve((body_len - buf.len()).min(READ_CHUNK));
                if stream.read_buf(&mut buf).await? == 0 {
                    return Err(Error::from(HandshakeError::MalformedHttp("connection closed in the body")));
                }
            }
            Ok(())
        };
        match tokio::time::timeout(timeout, read_body).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err(Error::Timeout),
        }
        let rest = buf.split_off(body_len);
        let body = Bytes::from(std::mem::replace(&mut buf, rest));
        let (keep_alive, head_only) = (head.keep_alive(), head.method == "HEAD");
        let mut response = route(HttpRequest { head, body, remote_addr }).await;
        if let Some((name, _)) = response.headers.iter().find(|(n, v)| check_field(n, v).is_err()) {
            // A header built from user input with a line break in it would split the
            // response (CWE-113): nothing of it is sent.
            tracing::error!(header = %name.escape_debug(), "route answered with a header that cannot be sent; answering 500");
            response = HttpResponse::text(500, "internal error: the response had an invalid header");
        }
        let headers: Vec<(&str, &str)> =
            response.headers.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
        stream
            .write_all(&http_response(response.status, &headers, &response.body, keep_alive, head_only))
            .await?;
        served += 1;
        if !keep_alive {
            let _ = stream.shutdown().await;
            return Ok(None);
        }
    }
}

/// Reads until `buf` shows whether the client starts with the HTTP/2 preface (`true`) or
/// not (`false`, possibly with `buf` still empty when the peer closed).
async fn read_preface<S: AsyncRead + Unpin>(stream: &mut S, buf: &mut Vec<u8>) -> Result<bool, Error> {
    loop {
        if let Some(h2) = h2_preface(buf) {
            return Ok(h2);
        }
        buf.reserve(READ_CHUNK);
        if stream.read_buf(buf).await? == 0 {
            return Ok(false);
        }
    }
}

/// Reads until `buf` holds a whole request head. `Ok(None)`: the peer closed before sending
/// anything.
async fn read_head<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut Vec<u8>,
    config: &ServerConfig,
) -> Result<Option<(HttpHead, usize)>, Error> {
    let limits = &config.config.handshake;
    let mut searched = 0;
    loop {
        // Parsed only once whole (or at the limit): a head trickling in a byte per read
        // costs linear work, not a parse per read.
        if head_ready(buf, &mut searched, limits) {
            if let Some(parsed) = parse_http_request(buf, limits)? {
                return Ok(Some(parsed));
            }
        }
        // Straight into the heap buffer: a stack array here would be part of every
        // connection task's future, for the connection's whole life.
        buf.reserve(READ_CHUNK);
        let n = match stream.read_buf(buf).await {
            Ok(n) => n,
            // A TLS peer closing without close_notify between requests (browsers do).
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && buf.is_empty() => 0,
            Err(e) => return Err(e.into()),
        };
        if n == 0 {
            if buf.is_empty() {
                return Ok(None);
            }
            return Err(HandshakeError::MalformedHttp("connection closed during the request head").into());
        }
    }
}

/// Answers an early refusal with its status, then closes the way the client can read it:
/// see [`linger`].
async fn refuse<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    e: HandshakeError,
    config: &ServerConfig,
) -> Error {
    let reason = match &e {
        HandshakeError::Rejected { reason, .. } => reason.clone(),
        other => other.to_string(),
    };
    // The reason may quote the request; a body cannot split the head, but keep it one line.
    let reason = reason.replace(['\r', '\n'], " ");
    let _ = stream.write_all(&reject_response(e.status(), &reason, &HeaderMap::new())).await;
    linger(stream, config).await;
    Error::Handshake(e)
}

/// Answers the application's refusal (its status, headers and body), then closes as
/// [`refuse`] does.
async fn refuse_app<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    r: Reject,
    config: &ServerConfig,
) -> Error {
    let none = HeaderMap::new();
    let headers = r.headers().unwrap_or(&none);
    let answer = match r.body() {
        Some((content_type, body)) if check_field("Content-Type", content_type).is_ok() => {
            reject_response_with_body(r.status, content_type, body, headers)
        }
        Some(_) => {
            tracing::error!("a refusal's content type cannot be sent; answering 500");
            reject_response(500, "internal error: the refusal had an invalid content type", &none)
        }
        None => reject_response(r.status, &r.reason.replace(['\r', '\n'], " "), headers),
    };
    let _ = stream.write_all(&answer).await;
    linger(stream, config).await;
    Error::Handshake(HandshakeError::Rejected { status: r.status, reason: r.reason })
}

/// Lingering close: shuts the write side (the answer is followed by a FIN), then reads and
/// discards what the client is still sending, for at most `linger_time` and `linger_bytes`,
/// until it closes its side. Closing at once while request bytes are still arriving makes
/// the kernel send a reset, and the client's kernel then drops our answer unread (the
/// client of a 1 MiB header line would see "connection reset" instead of 431).
async fn linger<S: AsyncRead + AsyncWrite + Unpin>(stream: &mut S, config: &ServerConfig) {
    let drain = async {
        let _ = stream.shutdown().await;
        // Allocated only here, on the refusal path: a buffer in the future would be part
        // of every connection's state.
        let mut scratch = vec![0u8; READ_CHUNK * 4];
        let mut left = config.linger_bytes;
        while left > 0 {
            match stream.read(&mut scratch).await {
                Ok(0) | Err(_) => break,
                Ok(n) => left = left.saturating_sub(n),
            }
        }
    };
    let _ = tokio::time::timeout(config.linger_time, drain).await;
}

/// A TCP listener that hands out connections ready to upgrade.
///
/// ```no_run
/// # async fn run() -> Result<(), tether::Error> {
/// use futures_util::{SinkExt, StreamExt};
/// let listener = tether::Listener::bind("127.0.0.1:9001", tether::ServerConfig::default()).await?;
/// loop {
///     let incoming = listener.accept().await?;
///     tokio::spawn(async move {
///         let Ok((mut ws, _request)) = incoming.upgrade().await else { return };
///         while let Some(Ok(msg)) = ws.next().await {
///             if msg.is_data() && ws.send(msg).await.is_err() { break }
///         }
///     });
/// }
/// # }
/// ```
///
/// It enforces [`ServerConfig::max_connections`] and [`ServerConfig::max_handshakes`]:
/// a connection over the first is answered 503 and closed by the listener itself, one over
/// the second is closed at once, and neither is handed out.
#[derive(Debug)]
pub struct Listener {
    inner: TcpListener,
    config: std::sync::Arc<ServerConfig>,
    stats: Arc<ListenerStats>,
}

impl Listener {
    /// Binds to `addr`.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when the address cannot be bound.
    pub async fn bind(addr: impl ToSocketAddrs, config: ServerConfig) -> Result<Self, Error> {
        let mut config = config;
        config.shared = Some(Arc::new(config.config.clone()));
        let inner = TcpListener::bind(addr).await?;
        Ok(Self { inner, config: Arc::new(config), stats: Arc::default() })
    }

    /// The configuration its connections share (with the one [`Config`] they all point
    /// to): for answering upgrades that come another way, such as [`crate::hyper`], alike.
    pub fn config(&self) -> &Arc<ServerConfig> {
        &self.config
    }

    /// The counts of connections held and refused, live.
    pub fn stats(&self) -> Arc<ListenerStats> {
        self.stats.clone()
    }

    /// The bound address.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] from the socket.
    pub fn local_addr(&self) -> Result<SocketAddr, Error> {
        Ok(self.inner.local_addr()?)
    }

    /// Waits for the next TCP connection. Upgrade it in its own task, so that a slow client
    /// does not hold up the others.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] from `accept` (for example, out of file descriptors).
    pub async fn accept(&self) -> Result<Incoming, Error> {
        let config = &self.config;
        loop {
            let (stream, addr) = self.inner.accept().await?;
            let Some(handshake) = Permit::try_take(&self.stats, Kind::Handshake, config.max_handshakes)
            else {
                // Nothing more may be held, not even to answer: close at once.
                limit::count_dropped(&self.stats);
                tracing::warn!(peer = %addr, max = config.max_handshakes, "connection closed: too many handshakes in progress");
                continue;
            };
            let Some(permit) = Permit::try_take(&self.stats, Kind::Connection, config.max_connections) else {
                limit::count_refused_busy(&self.stats);
                tracing::warn!(peer = %addr, max = config.max_connections, "connection refused with 503: too many connections");
                tokio::spawn(refuse_busy(stream, handshake, config.clone()));
                continue;
            };
            let _ = stream.set_nodelay(true);
            return Ok(Incoming { stream, addr, config: config.clone(), permit, handshake });
        }
    }
}

/// Answers a connection over `max_connections` with 503 and closes it with a lingering
/// close, holding a handshake place meanwhile (so that refusals, too, are bounded). Over
/// TLS there is no answer short of a TLS handshake, which a server at its limit should not
/// spend: the connection is closed.
async fn refuse_busy(mut stream: TcpStream, handshake: Permit, config: Arc<ServerConfig>) {
    if config.tls.is_none() {
        let mut extra = HeaderMap::new();
        extra.insert(http::header::RETRY_AFTER, http::HeaderValue::from_static("1"));
        let answer = reject_response(503, "too many connections, try again later", &extra);
        let _ = tokio::time::timeout(config.linger_time, stream.write_all(&answer)).await;
        linger(&mut stream, &config).await;
    }
    drop(handshake);
}

/// An accepted TCP connection, not yet upgraded.
#[derive(Debug)]
pub struct Incoming {
    stream: TcpStream,
    addr: SocketAddr,
    config: std::sync::Arc<ServerConfig>,
    /// The connection's place under `max_connections`, for its whole life.
    permit: Permit,
    /// Its place under `max_handshakes`, given back once upgraded.
    handshake: Permit,
}

impl Incoming {
    /// The peer's address.
    pub fn remote_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Runs the handshake, accepting every valid request.
    ///
    /// # Errors
    ///
    /// As [`accept`].
    pub async fn upgrade(self) -> Result<(WebSocket, Request), Error> {
        self.upgrade_with(|_| Ok(())).await
    }

    /// Serves plain HTTP requests with `route` (keep-alive, bodies up to
    /// `max_body_size`) until one asks for a WebSocket upgrade, which is then run as by
    /// [`upgrade_with`](Self::upgrade_with) with `check`. `Ok(None)`: the connection ended
    /// without an upgrade. One port can so serve a page, an API and WebSocket.
    ///
    /// # Errors
    ///
    /// As [`accept`].
    pub async fn serve<C, R, Fut>(self, check: C, route: R) -> Result<Option<(WebSocket, Request)>, Error>
    where
        C: FnOnce(&Request) -> Result<(), Reject>,
        R: FnMut(HttpRequest) -> Fut,
        Fut: Future<Output = HttpResponse>,
    {
        Ok(Box::pin(self.serve_upgraded(check, route)).await?.map(|(u, r)| (u.spawn(), r)))
    }

    /// As [`serve`](Self::serve), for a [`WebSocketStream`] driven by its caller.
    ///
    /// # Errors
    ///
    /// As [`accept`].
    pub async fn serve_direct<C, R, Fut>(
        self,
        check: C,
        route: R,
    ) -> Result<Option<(WebSocketStream<Transport>, Request)>, Error>
    where
        C: FnOnce(&Request) -> Result<(), Reject>,
        R: FnMut(HttpRequest) -> Fut,
        Fut: Future<Output = HttpResponse>,
    {
        // Boxed: the handshake's state (TLS included) is freed once done instead of
        // staying in the caller's future, which lives as long as the connection.
        Ok(Box::pin(self.serve_upgraded(check, route)).await?.map(|(u, r)| (u.direct(), r)))
    }

    async fn serve_upgraded<C, R, Fut>(
        self,
        check: C,
        route: R,
    ) -> Result<Option<(Upgraded<Transport>, Request)>, Error>
    where
        C: FnOnce(&Request) -> Result<(), Reject>,
        R: FnMut(HttpRequest) -> Fut,
        Fut: Future<Output = HttpResponse>,
    {
        let (addr, config) = (Some(self.addr), self.config.clone());
        let (stream, permit, handshake) = self.transport().await?;
        let served = serve_stream(stream, addr, &config, check, route).await?;
        drop(handshake);
        Ok(served.map(|(upgraded, request)| (upgraded.with_permit(permit), request)))
    }

    /// Looks at the first request on the connection. A WebSocket handshake (HTTP/1.1) is
    /// checked with `check`, answered and upgraded here, as by
    /// [`upgrade_with`](Self::upgrade_with); anything else (a plain HTTP/1.x request, or
    /// HTTP/2: ALPN `h2` on TLS, or the connection preface on plain TCP) comes back as an
    /// [`HttpConnection`] holding the bytes read so far, for an HTTP server such as hyper
    /// to serve from the start. A server so keeps tether's light WebSocket handshake and
    /// connection on its busiest path and a full HTTP stack for everything else.
    ///
    /// # Errors
    ///
    /// As [`accept`]: a request head that cannot be read is refused with its status.
    pub async fn upgrade_or_http<F>(self, check: F) -> Result<Accepted, Error>
    where
        F: FnOnce(&Request) -> Result<(), Reject>,
    {
        // Boxed, as in `serve_direct`.
        Box::pin(self.sniffed(check)).await
    }

    async fn sniffed<F>(self, check: F) -> Result<Accepted, Error>
    where
        F: FnOnce(&Request) -> Result<(), Reject>,
    {
        let (addr, config) = (self.addr, self.config.clone());
        let (mut stream, permit, handshake) = self.transport().await?;
        if let Transport::Tls(tls) = &stream {
            if tls.get_ref().1.alpn_protocol() == Some(b"h2") {
                return Ok(Accepted::Http(HttpConnection::new(stream, Vec::new(), true, addr, permit)));
            }
        }
        let mut buf = Vec::new();
        let read = async {
            if read_preface(&mut stream, &mut buf).await? {
                return Ok(None);
            }
            match read_head(&mut stream, &mut buf, &config).await? {
                Some(read) => Ok(Some(read)),
                None => Err(HandshakeError::MalformedHttp("connection closed before a request").into()),
            }
        };
        let head = match tokio::time::timeout(config.config.handshake_timeout, read).await {
            Ok(Ok(Some((head, len)))) if head.is_websocket_attempt() => (head, len),
            Ok(Ok(Some(_))) => {
                return Ok(Accepted::Http(HttpConnection::new(stream, buf, false, addr, permit)))
            }
            Ok(Ok(None)) => return Ok(Accepted::Http(HttpConnection::new(stream, buf, true, addr, permit))),
            Ok(Err(Error::Handshake(e))) => return Err(refuse(&mut stream, e, &config).await),
            Ok(Err(e)) => return Err(e),
            Err(_) => {
                let e = HandshakeError::Rejected { status: 408, reason: "request timed out".into() };
                refuse(&mut stream, e, &config).await;
                return Err(Error::Timeout);
            }
        };
        let (head, len) = head;
        let request = match head.into_upgrade() {
            Ok(r) => r,
            Err(e) => return Err(refuse(&mut stream, e, &config).await),
        };
        buf.drain(..len);
        let (upgraded, request) =
            upgrade_parsed(stream, request, buf, Some(addr), &config, sync_check(check), None).await?;
        drop(handshake);
        Ok(Accepted::WebSocket(crate::handoff::Opened(Box::new(upgraded.with_permit(permit))), request))
    }

    /// Runs the handshake; `check` may refuse the request.
    ///
    /// # Errors
    ///
    /// As [`accept`].
    pub async fn upgrade_with<F>(self, check: F) -> Result<(WebSocket, Request), Error>
    where
        F: FnOnce(&Request) -> Result<(), Reject>,
    {
        let (upgraded, request) = Box::pin(self.upgraded(check)).await?;
        Ok((upgraded.spawn(), request))
    }

    /// Runs the handshake with an async `check`, as [`accept_async`]: it may take its time,
    /// add headers to the answer and choose the subprotocol, or refuse with a status,
    /// headers and a body.
    ///
    /// ```no_run
    /// # async fn run(incoming: tether::Incoming) -> Result<(), tether::Error> {
    /// use tether::{Accept, Reject};
    /// let (ws, request) = incoming
    ///     .upgrade_async(|req| {
    ///         let token = req.query.clone().unwrap_or_default();
    ///         async move {
    ///             // e.g. look the token up in a database
    ///             if token != "token=secret" {
    ///                 return Err(Reject::new(401, "no entry")
    ///                     .with_body("application/json", r#"{"error":"no entry"}"#));
    ///             }
    ///             Ok(Accept::new().with_header(
    ///                 http::header::SET_COOKIE,
    ///                 http::HeaderValue::from_static("session=1; HttpOnly"),
    ///             ))
    ///         }
    ///     })
    ///     .await?;
    /// # drop((ws, request)); Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`accept`].
    pub async fn upgrade_async<F, Fut>(self, check: F) -> Result<(WebSocket, Request), Error>
    where
        F: FnOnce(&Request) -> Fut,
        Fut: Future<Output = Result<Accept, Reject>>,
    {
        let run = async move {
            let (addr, config) = (Some(self.addr), self.config.clone());
            let (stream, permit, handshake) = self.transport().await?;
            let limit = Some(config.config.handshake_timeout);
            let (upgraded, request) = accept_upgraded(stream, addr, &config, check, limit).await?;
            drop(handshake);
            Ok::<_, Error>((upgraded.with_permit(permit), request))
        };
        let (upgraded, request) = Box::pin(run).await?;
        Ok((upgraded.spawn(), request))
    }

    /// As [`upgrade_with`](Self::upgrade_with), for a [`WebSocketStream`] driven by its
    /// caller.
    ///
    /// # Errors
    ///
    /// As [`accept`].
    pub async fn upgrade_direct<F>(self, check: F) -> Result<(WebSocketStream<Transport>, Request), Error>
    where
        F: FnOnce(&Request) -> Result<(), Reject>,
    {
        // Boxed, as in `serve_direct`.
        let (upgraded, request) = Box::pin(self.upgraded(check)).await?;
        Ok((upgraded.direct(), request))
    }

    async fn upgraded<F>(self, check: F) -> Result<(Upgraded<Transport>, Request), Error>
    where
        F: FnOnce(&Request) -> Result<(), Reject>,
    {
        let (addr, config) = (Some(self.addr), self.config.clone());
        let (stream, permit, handshake) = self.transport().await?;
        let (upgraded, request) = accept_upgraded(stream, addr, &config, sync_check(check), None).await?;
        drop(handshake);
        Ok((upgraded.with_permit(permit), request))
    }

    /// The socket, after the TLS handshake when the listener has TLS, with its places.
    async fn transport(self) -> Result<(Transport, Permit, Permit), Error> {
        let Some(tls) = self.config.tls.clone() else {
            return Ok((Transport::Plain(self.stream), self.permit, self.handshake));
        };
        let stream = tls_accept(self.stream, self.addr, tls, self.config.config.handshake_timeout).await?;
        Ok((Transport::Tls(Box::new(tokio_rustls::TlsStream::Server(stream))), self.permit, self.handshake))
    }
}

/// The server's TLS handshake, with its own deadline (the WebSocket or HTTP exchange then
/// gets its own).
async fn tls_accept(
    stream: TcpStream,
    addr: SocketAddr,
    tls: Arc<rustls::ServerConfig>,
    timeout: std::time::Duration,
) -> Result<tokio_rustls::server::TlsStream<TcpStream>, Error> {
    tokio::time::timeout(timeout, tokio_rustls::TlsAcceptor::from(tls).accept(stream))
        .await
        .map_err(|_| Error::Timeout)?
        .map_err(|e| Error::Tls(format!("tls handshake with {addr} failed: {e}")))
}

//! The server side: upgrading accepted streams, and a listener helper.

use crate::{driver, Error, WebSocket};
use http::HeaderMap;
use std::net::SocketAddr;
use std::sync::Arc;
use tether_proto::handshake::{
    accept_response, parse_request, reject_response, select_protocol, OriginPolicy, Request,
};
use tether_proto::{deflate, Config, Connection, HandshakeError};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, ToSocketAddrs};

/// How a server accepts connections.
#[derive(Debug, Clone, Default)]
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
}

/// The application's refusal of a request: an HTTP status and a short reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reject {
    /// HTTP status, e.g. 401 or 404.
    pub status: u16,
    /// Short plain-text reason, sent as the body.
    pub reason: String,
}

impl Reject {
    /// A refusal with `status` and `reason`.
    pub fn new(status: u16, reason: impl Into<String>) -> Self {
        Self { status, reason: reason.into() }
    }
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
    mut stream: S,
    remote_addr: Option<SocketAddr>,
    config: &ServerConfig,
    check: F,
) -> Result<(WebSocket, Request), Error>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    F: FnOnce(&Request) -> Result<(), Reject>,
{
    let timeout = config.config.handshake_timeout;
    let (request, leftover) = match tokio::time::timeout(timeout, read_request(&mut stream, config)).await {
        Ok(Ok(read)) => read,
        Ok(Err(Error::Handshake(e))) => return Err(refuse(&mut stream, e).await),
        Ok(Err(e)) => return Err(e),
        Err(_) => {
            let _ = stream.write_all(&reject_response(408, "handshake timed out", &HeaderMap::new())).await;
            let _ = stream.shutdown().await;
            return Err(Error::Timeout);
        }
    };
    let mut request = request;
    request.remote_addr = remote_addr;
    if let Err(e) = config.origin.check(&request) {
        return Err(refuse(&mut stream, e).await);
    }
    if let Err(r) = check(&request) {
        let e = HandshakeError::Rejected { status: r.status, reason: r.reason };
        return Err(refuse(&mut stream, e).await);
    }
    let protocol = select_protocol(&request.protocols, &config.protocols).map(str::to_owned);
    let deflate = config.config.deflate.as_ref().and_then(|d| deflate::server_accept(&request.extensions, d));
    let extensions = deflate.as_ref().map(|(_, answer)| answer.as_str());
    let response = accept_response(&request, protocol.as_deref(), extensions, &HeaderMap::new());
    stream.write_all(&response).await?;
    let conn = Connection::server(config.config.clone()).with_deflate(deflate.map(|(params, _)| params));
    Ok((driver::spawn(stream, conn, &leftover, protocol), request))
}

async fn read_request<S: AsyncRead + Unpin>(
    stream: &mut S,
    config: &ServerConfig,
) -> Result<(Request, Vec<u8>), Error> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 2048];
    loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(HandshakeError::MalformedHttp("connection closed during handshake").into());
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some((request, len)) = parse_request(&buf, &config.config.handshake)? {
            return Ok((request, buf.split_off(len)));
        }
    }
}

async fn refuse<S: AsyncWrite + Unpin>(stream: &mut S, e: HandshakeError) -> Error {
    let reason = match &e {
        HandshakeError::Rejected { reason, .. } => reason.clone(),
        other => other.to_string(),
    };
    let _ = stream.write_all(&reject_response(e.status(), &reason, &HeaderMap::new())).await;
    let _ = stream.shutdown().await;
    Error::Handshake(e)
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
#[derive(Debug)]
pub struct Listener {
    inner: TcpListener,
    config: std::sync::Arc<ServerConfig>,
}

impl Listener {
    /// Binds to `addr`.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when the address cannot be bound.
    pub async fn bind(addr: impl ToSocketAddrs, config: ServerConfig) -> Result<Self, Error> {
        Ok(Self { inner: TcpListener::bind(addr).await?, config: std::sync::Arc::new(config) })
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
        let (stream, addr) = self.inner.accept().await?;
        let _ = stream.set_nodelay(true);
        Ok(Incoming { stream, addr, config: self.config.clone() })
    }
}

/// An accepted TCP connection, not yet upgraded.
#[derive(Debug)]
pub struct Incoming {
    stream: TcpStream,
    addr: SocketAddr,
    config: std::sync::Arc<ServerConfig>,
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

    /// Runs the handshake; `check` may refuse the request.
    ///
    /// # Errors
    ///
    /// As [`accept`].
    pub async fn upgrade_with<F>(self, check: F) -> Result<(WebSocket, Request), Error>
    where
        F: FnOnce(&Request) -> Result<(), Reject>,
    {
        let Some(tls) = self.config.tls.clone() else {
            return accept_with(self.stream, Some(self.addr), &self.config, check).await;
        };
        // The TLS handshake has its own deadline, then the WebSocket handshake its own.
        let timeout = self.config.config.handshake_timeout;
        let stream = tokio::time::timeout(timeout, tokio_rustls::TlsAcceptor::from(tls).accept(self.stream))
            .await
            .map_err(|_| Error::Timeout)?
            .map_err(|e| Error::Tls(format!("tls handshake with {} failed: {e}", self.addr)))?;
        accept_with(stream, Some(self.addr), &self.config, check).await
    }
}

//! The client side: `connect` by URL.

use crate::stream::{Transport, Upgraded};
use crate::tls::{self, ClientTrust};
use crate::{dial, Error, Proxy, WebSocket, WebSocketStream};
use std::net::IpAddr;
use std::time::Duration;
use tether_proto::handshake::{head_ready, ClientHandshake, ClientOptions, Response, Url};
use tether_proto::{Config, Connection, HandshakeError, MaskSource};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// How a client connects.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ClientConfig {
    /// Limits and timers of the connection.
    pub config: Config,
    /// Subprotocols, origin and extra headers for the request.
    pub options: ClientOptions,
    /// Which server certificates `wss://` trusts.
    pub trust: ClientTrust,
    /// Redirects (301, 302, 303, 307, 308) followed at most; 0 follows none. Default 5.
    /// A redirect from `wss://` to `ws://` is never followed.
    pub max_redirects: usize,
    /// Which proxy to go through. Default [`Proxy::FromEnv`].
    pub proxy: Proxy,
    /// Time allowed for name resolution, the TCP connect and the proxy tunnel together.
    /// Default 10 s. (TLS and the WebSocket handshake then have `config.handshake_timeout`.)
    pub connect_timeout: Duration,
    /// The local address to connect from (the port is chosen by the system). Default: the
    /// system's choice. Spreading connections over several source addresses (127.0.0.x)
    /// gets past the ephemeral-port limit of one address.
    pub local_addr: Option<IpAddr>,
    /// Try WebSocket over HTTP/2 first (RFC 8441; feature `http2`): `wss://` offers ALPN
    /// `h2`, `ws://` speaks h2c with prior knowledge; when the server does not take it (no
    /// HTTP/2, or no `SETTINGS_ENABLE_CONNECT_PROTOCOL`), the client connects again over
    /// HTTP/1.1. Used by [`connect_with`] ([`connect_direct`] always speaks HTTP/1.1).
    /// Default off.
    #[cfg(feature = "http2")]
    pub http2: bool,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            config: Config::default(),
            options: ClientOptions::default(),
            trust: ClientTrust::default(),
            max_redirects: 5,
            proxy: Proxy::default(),
            connect_timeout: Duration::from_secs(10),
            local_addr: None,
            #[cfg(feature = "http2")]
            http2: false,
        }
    }
}

impl ClientConfig {
    /// Sets the connection limits and timers.
    pub fn with_config(mut self, config: Config) -> Self {
        self.config = config;
        self
    }
    /// Adds a subprotocol to offer.
    pub fn with_protocol(mut self, p: impl Into<String>) -> Self {
        self.options.protocols.push(p.into());
        self
    }
    /// Sets the `Origin` header.
    pub fn with_origin(mut self, origin: impl Into<String>) -> Self {
        self.options.origin = Some(origin.into());
        self
    }
    /// Sets how many redirects are followed (0: none).
    pub fn with_max_redirects(mut self, n: usize) -> Self {
        self.max_redirects = n;
        self
    }
    /// Sets the proxy.
    pub fn with_proxy(mut self, proxy: Proxy) -> Self {
        self.proxy = proxy;
        self
    }
    /// Sets the connect timeout (resolution, TCP connect and proxy tunnel).
    pub fn with_connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }
    /// Sets the local address to connect from.
    pub fn with_local_addr(mut self, ip: IpAddr) -> Self {
        self.local_addr = Some(ip);
        self
    }
    /// Sets which server certificates `wss://` trusts.
    pub fn with_trust(mut self, trust: ClientTrust) -> Self {
        self.trust = trust;
        self
    }
    /// Tries WebSocket over HTTP/2 first (see [`ClientConfig::http2`]).
    #[cfg(feature = "http2")]
    pub fn with_http2(mut self, on: bool) -> Self {
        self.http2 = on;
        self
    }
    /// Adds a header to the request.
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.options.headers.push((name.into(), value.into()));
        self
    }
}

/// Connects to a `ws://` or `wss://` URL with the default configuration.
///
/// # Errors
///
/// [`Error::Handshake`] for a bad URL or a refused handshake (with the server's status),
/// [`Error::Connect`] when the TCP connection or the proxy tunnel cannot be opened,
/// [`Error::Proxy`] for a bad proxy URL in the environment, [`Error::Tls`],
/// [`Error::Timeout`] when the handshake takes too long.
pub async fn connect(url: &str) -> Result<(WebSocket, Response), Error> {
    connect_with(url, &ClientConfig::default()).await
}

/// Connects to a `ws://` or `wss://` URL.
///
/// # Errors
///
/// As [`connect`].
pub async fn connect_with(url: &str, config: &ClientConfig) -> Result<(WebSocket, Response), Error> {
    #[cfg(feature = "http2")]
    if config.http2 {
        return follow_redirects(url, config, |url| async move { connect_once_h2(&url, config).await }).await;
    }
    let (upgraded, response) = connect_upgraded(url, config).await?;
    Ok((upgraded.spawn(), response))
}

/// Connects to a `ws://` or `wss://` URL, for a [`WebSocketStream`] driven by its caller
/// (no background task): the lean shape for load generators and many connections.
///
/// # Errors
///
/// As [`connect`].
pub async fn connect_direct(
    url: &str,
    config: &ClientConfig,
) -> Result<(WebSocketStream<Transport>, Response), Error> {
    // Boxed: the handshake's state is freed once done instead of staying in the caller's
    // future for the connection's life.
    let (upgraded, response) = Box::pin(connect_upgraded(url, config)).await?;
    Ok((upgraded.direct(), response))
}

async fn connect_upgraded(
    url: &str,
    config: &ClientConfig,
) -> Result<(Upgraded<Transport>, Response), Error> {
    follow_redirects(url, config, |url| async move { connect_once(&url, config).await }).await
}

/// Runs `once` for `url`, and again for each redirect's target, up to `max_redirects`.
async fn follow_redirects<T, F, Fut>(url: &str, config: &ClientConfig, mut once: F) -> Result<T, Error>
where
    F: FnMut(Url) -> Fut,
    Fut: std::future::Future<Output = Result<T, Error>>,
{
    let mut url = Url::parse(url)?;
    // Bad headers are the caller's error, found before anything is dialled or sent.
    config.options.check()?;
    let mut hops = 0;
    loop {
        let err = match once(url.clone()).await {
            Err(Error::Handshake(e)) if config.max_redirects > 0 && e.redirect_location().is_some() => e,
            other => return other,
        };
        let location = err.redirect_location().unwrap_or_default();
        if hops == config.max_redirects {
            let why = format!("more than {} redirects (last to {location})", config.max_redirects);
            return Err(HandshakeError::Redirect(why).into());
        }
        hops += 1;
        url = url.redirect(location)?;
        tracing::debug!(to = %url.to_url_string(), "following redirect");
    }
}

async fn connect_once(url: &Url, config: &ClientConfig) -> Result<(Upgraded<Transport>, Response), Error> {
    let stream = dial::open(url, &config.proxy, config.local_addr, config.connect_timeout).await?;
    let timeout = config.config.handshake_timeout;
    if !url.secure {
        return handshake_upgraded(Transport::Plain(stream), url, config).await;
    }
    let connector = tokio_rustls::TlsConnector::from(tls::client_config(&config.trust)?);
    let name = tls::server_name(&url.host)?;
    let stream = tokio::time::timeout(timeout, connector.connect(name, stream))
        .await
        .map_err(|_| Error::Timeout)?
        .map_err(|e| tls::describe_handshake_failure(&url.host, e))?;
    handshake_upgraded(Transport::Tls(Box::new(tokio_rustls::TlsStream::Client(stream))), url, config).await
}

/// One attempt over HTTP/2 (TLS with ALPN `h2`, or h2c), then over HTTP/1.1 on a fresh
/// connection if the server does not take WebSockets over HTTP/2.
#[cfg(feature = "http2")]
async fn connect_once_h2(url: &Url, config: &ClientConfig) -> Result<(WebSocket, Response), Error> {
    let stream = dial::open(url, &config.proxy, config.local_addr, config.connect_timeout).await?;
    let attempt = if url.secure {
        let mut tls = (*tls::client_config(&config.trust)?).clone();
        tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(tls));
        let name = tls::server_name(&url.host)?;
        let stream = tokio::time::timeout(config.config.handshake_timeout, connector.connect(name, stream))
            .await
            .map_err(|_| Error::Timeout)?
            .map_err(|e| tls::describe_handshake_failure(&url.host, e))?;
        if stream.get_ref().1.alpn_protocol() != Some(b"h2") {
            // The server chose HTTP/1.1: upgrade on this connection.
            let transport = Transport::Tls(Box::new(tokio_rustls::TlsStream::Client(stream)));
            let (upgraded, response) = handshake_upgraded(transport, url, config).await?;
            return Ok((upgraded.spawn(), response));
        }
        crate::h2::connect(stream, url, config).await?
    } else {
        crate::h2::connect(stream, url, config).await?
    };
    match attempt {
        crate::h2::Attempt::Connected(ws, response) => Ok((ws, response)),
        crate::h2::Attempt::NotOffered(why) => {
            tracing::debug!(url = %url.to_url_string(), "{why}: connecting again over HTTP/1.1");
            let (upgraded, response) = connect_once(url, config).await?;
            Ok((upgraded.spawn(), response))
        }
    }
}

/// Runs the client handshake over an already connected stream.
///
/// # Errors
///
/// As [`connect`].
pub async fn client_handshake<S>(
    stream: S,
    url: &Url,
    config: &ClientConfig,
) -> Result<(WebSocket, Response), Error>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (upgraded, response) = handshake_upgraded(stream, url, config).await?;
    Ok((upgraded.spawn(), response))
}

async fn handshake_upgraded<S>(
    mut stream: S,
    url: &Url,
    config: &ClientConfig,
) -> Result<(Upgraded<S>, Response), Error>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut options = config.options.clone();
    options.deflate = config.config.deflate.clone();
    let (handshake, request) = ClientHandshake::new(url, random_nonce(), options)?;
    let exchange = async {
        stream.write_all(&request).await?;
        let mut buf = Vec::new();
        let mut searched = 0;
        loop {
            buf.reserve(2048);
            if stream.read_buf(&mut buf).await? == 0 {
                return Err(Error::Handshake(HandshakeError::MalformedHttp(
                    "connection closed during handshake",
                )));
            }
            // Parsed once whole (or at the limit), as the server does.
            if !head_ready(&buf, &mut searched, &config.options.limits) {
                continue;
            }
            if let Some((response, len)) = handshake.parse_response(&buf)? {
                return Ok((response, buf.split_off(len)));
            }
        }
    };
    let (response, leftover) = tokio::time::timeout(config.config.handshake_timeout, exchange)
        .await
        .map_err(|_| Error::Timeout)??;
    let conn =
        Connection::client(config.config.clone(), mask_source()).with_deflate(response.deflate.clone());
    let protocol = response.protocol.clone();
    Ok((Upgraded { io: stream, conn, leftover, protocol, permit: None }, response))
}

fn random_nonce() -> [u8; 16] {
    let mut nonce = [0u8; 16];
    fill_random(&mut nonce);
    nonce
}

/// Masking keys from the operating system's random source, fetched 64 keys at a time so
/// that sending does not make a system call per frame.
pub(crate) fn mask_source() -> MaskSource {
    let mut pool = [0u8; 256];
    let mut pos = pool.len();
    Box::new(move || {
        if pos == pool.len() {
            fill_random(&mut pool);
            pos = 0;
        }
        let key = [pool[pos], pool[pos + 1], pool[pos + 2], pool[pos + 3]];
        pos += 4;
        key
    })
}

fn fill_random(buf: &mut [u8]) {
    if getrandom::getrandom(buf).is_err() {
        // The OS source is unavailable (extremely rare). Fall back to the std hasher's
        // per-process random keys so that keys still differ between connections.
        use std::hash::{BuildHasher, Hasher};
        let state = std::collections::hash_map::RandomState::new();
        for (i, chunk) in buf.chunks_mut(8).enumerate() {
            let mut h = state.build_hasher();
            h.write_usize(i);
            let v = h.finish().to_ne_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

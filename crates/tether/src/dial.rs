//! Opening the TCP connection of a client: name resolution, connect, and the tunnel through
//! an HTTP `CONNECT` or SOCKS5 proxy, all under one connect timeout.

use crate::error::{ConnectError, ConnectErrorKind};
use crate::Error;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;
use tether_proto::handshake::Url;
use tether_proto::proxy::{self, socks5, ProxyKind, ProxyUrl};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// Which proxy a client goes through.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Proxy {
    /// The one the environment names, as curl reads it: `https_proxy`/`HTTPS_PROXY` for
    /// `wss://`, `http_proxy`/`HTTP_PROXY` for `ws://`, else `all_proxy`/`ALL_PROXY`; hosts
    /// listed in `no_proxy`/`NO_PROXY` are reached directly. The default.
    #[default]
    FromEnv,
    /// Always connect directly.
    None,
    /// This proxy, except for hosts in `no_proxy`/`NO_PROXY`.
    Url(ProxyUrl),
}

impl Proxy {
    /// A proxy from a URL: `http://[user:pass@]host:port` (HTTP `CONNECT`),
    /// `socks5://…` (target resolved here) or `socks5h://…` (resolved by the proxy).
    ///
    /// # Errors
    ///
    /// [`Error::Proxy`] naming what is wrong with the URL.
    pub fn url(url: &str) -> Result<Self, Error> {
        Ok(Self::Url(ProxyUrl::parse(url)?))
    }

    /// The proxy to use for `url`, if any, reading the environment where asked to.
    fn choose(&self, url: &Url) -> Result<Option<ProxyUrl>, Error> {
        let var = |name: &str| std::env::var(name).ok();
        match self {
            Self::None => Ok(None),
            Self::FromEnv => Ok(proxy::proxy_from_env(url.secure, &url.host, url.port, var)?),
            Self::Url(_) if proxy::bypassed_by_env(&url.host, url.port, var) => Ok(None),
            Self::Url(p) => Ok(Some(p.clone())),
        }
    }
}

/// Opens the TCP connection for `url`, directly or through a tunnel, within `timeout`.
/// With `local`, the socket is bound to that address first (port chosen by the system).
pub(crate) async fn open(
    url: &Url,
    proxy: &Proxy,
    local: Option<IpAddr>,
    timeout: Duration,
) -> Result<TcpStream, Error> {
    let via = proxy.choose(url)?;
    let target = match &via {
        Some(p) => format!("proxy {p}"),
        None => host_port(&url.host, url.port),
    };
    let work = async {
        match &via {
            None => tcp(&url.host, url.port, local, &target).await,
            Some(p) => {
                let mut stream = tcp(&p.host, p.port, local, &target).await?;
                tunnel(&mut stream, p, url).await.map_err(|e| match e {
                    Error::Proxy(detail) => {
                        ConnectError::new(ConnectErrorKind::Proxy, &target, detail).into()
                    }
                    Error::Io(io) => ConnectError::new(ConnectErrorKind::Proxy, &target, io).into(),
                    other => other,
                })?;
                Ok(stream)
            }
        }
    };
    match tokio::time::timeout(timeout, work).await {
        Ok(result) => {
            let stream = result?;
            let _ = stream.set_nodelay(true);
            if let Some(p) = &via {
                tracing::debug!(proxy = %p, to = %host_port(&url.host, url.port), "tunnel open");
            }
            Ok(stream)
        }
        Err(_) => Err(ConnectError::new(ConnectErrorKind::Timeout, &target, format!("{timeout:?}")).into()),
    }
}

fn host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

async fn resolve(host: &str, port: u16, target: &str) -> Result<Vec<SocketAddr>, Error> {
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| ConnectError::new(ConnectErrorKind::Dns, host, e.to_string()))?
        .collect();
    if addrs.is_empty() {
        return Err(ConnectError::new(ConnectErrorKind::Dns, target, "no addresses").into());
    }
    Ok(addrs)
}

/// Tries each address in turn and reports the last failure.
async fn tcp(host: &str, port: u16, local: Option<IpAddr>, target: &str) -> Result<TcpStream, Error> {
    let mut last = None;
    for addr in resolve(host, port, target).await? {
        let attempt = match local {
            None => TcpStream::connect(addr).await,
            // Only addresses of the local address's family can be reached from it.
            Some(ip) if ip.is_ipv4() != addr.is_ipv4() => continue,
            Some(ip) => connect_from(ip, addr).await,
        };
        match attempt {
            Ok(s) => return Ok(s),
            Err(e) => last = Some(e),
        }
    }
    let e = last.unwrap_or_else(|| std::io::Error::other("no address"));
    let kind = if e.kind() == std::io::ErrorKind::ConnectionRefused {
        ConnectErrorKind::Refused
    } else {
        ConnectErrorKind::Io
    };
    Err(ConnectError::new(kind, target, e.to_string()).into())
}

async fn connect_from(local: IpAddr, addr: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = if local.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    socket.bind(SocketAddr::new(local, 0))?;
    socket.connect(addr).await
}

async fn tunnel(stream: &mut TcpStream, p: &ProxyUrl, url: &Url) -> Result<(), Error> {
    match p.kind {
        ProxyKind::Http => {
            stream.write_all(&proxy::connect_request(&url.host, url.port, p.auth.as_ref())).await?;
            // Read the answer a little at a time so that nothing after its head is taken
            // from the tunnel (the server speaks only after our request, but be exact).
            let mut buf = Vec::with_capacity(256);
            let mut byte = [0u8; 1];
            loop {
                if stream.read(&mut byte).await? == 0 {
                    return Err(proxy::ProxyError::Malformed("connection closed before the answer").into());
                }
                buf.push(byte[0]);
                // A head can only end at a line end; past 16 KiB the parser refuses it.
                let worth_parsing = byte[0] == b'\n' || buf.len() > 16 * 1024;
                if worth_parsing && proxy::parse_connect_response(&buf)?.is_some() {
                    return Ok(());
                }
            }
        }
        ProxyKind::Socks5 { remote_dns } => {
            let with_password = p.auth.is_some();
            stream.write_all(&socks5::greeting(with_password)).await?;
            let mut two = [0u8; 2];
            stream.read_exact(&mut two).await?;
            if socks5::parse_method(two, with_password)? == socks5::Method::UserPass {
                let (user, pass) = p.auth.as_ref().map(|(u, p)| (u.as_str(), p.as_str())).unwrap_or(("", ""));
                stream.write_all(&socks5::auth_request(user, pass)?).await?;
                stream.read_exact(&mut two).await?;
                socks5::parse_auth(two)?;
            }
            let resolved;
            let target = match url.host.parse() {
                Ok(ip) => socks5::Target::Ip(ip),
                Err(_) if remote_dns => socks5::Target::Name(&url.host),
                Err(_) => {
                    resolved = resolve(&url.host, url.port, &host_port(&url.host, url.port)).await?;
                    socks5::Target::Ip(resolved[0].ip())
                }
            };
            stream.write_all(&socks5::connect_request(&target, url.port)?).await?;
            let mut buf = Vec::with_capacity(32);
            let mut chunk = [0u8; 1];
            loop {
                if stream.read(&mut chunk).await? == 0 {
                    return Err(proxy::ProxyError::Malformed("connection closed before the answer").into());
                }
                buf.push(chunk[0]);
                if socks5::parse_connect_reply(&buf)?.is_some() {
                    return Ok(());
                }
            }
        }
    }
}

//! Clients through real proxies on loopback (tinyproxy for HTTP CONNECT, microsocks for
//! SOCKS5), connect failures by kind, and the connect timeout.

mod common;

use common::certs::{ca, leaf, Ca};
use common::proxies::{self, PASSWORD, PROXY_SOURCE, USER};
use futures_util::{SinkExt, StreamExt};
use std::net::IpAddr;
use std::time::{Duration, Instant};
use tether::tls::{self, ClientTrust};
use tether::{ClientConfig, ConnectErrorKind, Error, Listener, Message, Proxy, ServerConfig};

/// A server (plain, or TLS with a certificate for localhost and 127.0.0.1 from `ca`) whose
/// first message on every connection is the peer's IP address, then an echo.
async fn server(ca: Option<&Ca>) -> u16 {
    let mut config = ServerConfig::default();
    if let Some(ca) = ca {
        let (chain, key) = leaf(ca, &["localhost", "127.0.0.1"], false);
        config = config.with_tls(tls::server_config(chain, key).unwrap());
    }
    let listener = Listener::bind("127.0.0.1:0", config).await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok(incoming) = listener.accept().await {
            tokio::spawn(async move {
                let peer = incoming.remote_addr().ip();
                let Ok((mut ws, _)) = incoming.upgrade().await else { return };
                if ws.send(Message::text(peer.to_string())).await.is_err() {
                    return;
                }
                while let Some(Ok(msg)) = ws.next().await {
                    if msg.is_data() && ws.send(msg).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    port
}

/// Connects, checks the echo, and returns the peer address the server saw.
async fn round_trip(url: &str, config: &ClientConfig) -> Result<IpAddr, Error> {
    let (mut ws, _) = tether::connect_with(url, config).await?;
    let Some(Ok(Message::Text(peer))) = ws.next().await else { panic!("no greeting") };
    ws.send(Message::text("through")).await?;
    assert_eq!(ws.next().await.unwrap()?, Message::text("through"));
    ws.close().await?;
    Ok(peer.parse().unwrap())
}

fn via(proxy: &str, ca: &Ca) -> ClientConfig {
    ClientConfig::default()
        .with_proxy(Proxy::url(proxy).unwrap())
        .with_trust(ClientTrust::Ca(vec![ca.cert.der().clone()]))
}

fn connect_error(result: Result<IpAddr, Error>) -> (ConnectErrorKind, String) {
    match result {
        Err(Error::Connect(e)) => (e.kind(), e.to_string()),
        Err(other) => panic!("expected a connect error, got {other}"),
        Ok(peer) => panic!("expected a connect error, connected (peer {peer})"),
    }
}

#[tokio::test]
async fn http_connect_proxy_carries_ws_and_wss() {
    let Some(proxy) = proxies::tinyproxy(false) else { return };
    let ca = ca();
    let (plain, secure) = (server(None).await, server(Some(&ca)).await);
    let config = via(&format!("http://127.0.0.1:{}", proxy.port), &ca);
    for url in [
        format!("ws://127.0.0.1:{plain}/"),
        format!("wss://localhost:{secure}/"),
        format!("wss://127.0.0.1:{secure}/"),
    ] {
        assert_eq!(round_trip(&url, &config).await.unwrap(), PROXY_SOURCE, "{url}");
    }
    // Without the proxy, the server sees the client itself.
    let direct = via(&format!("http://127.0.0.1:{}", proxy.port), &ca).with_proxy(Proxy::None);
    assert_eq!(
        round_trip(&format!("ws://127.0.0.1:{plain}/"), &direct).await.unwrap().to_string(),
        "127.0.0.1"
    );
}

#[tokio::test]
async fn http_connect_proxy_with_basic_auth() {
    let Some(proxy) = proxies::tinyproxy(true) else { return };
    let ca = ca();
    let port = server(Some(&ca)).await;
    let url = format!("wss://localhost:{port}/");
    let good = via(&format!("http://{USER}:{PASSWORD}@127.0.0.1:{}", proxy.port), &ca);
    assert_eq!(round_trip(&url, &good).await.unwrap(), PROXY_SOURCE);
    // tinyproxy asks for credentials with 407 and answers wrong ones with 401.
    for (creds, status) in [("", "407 Proxy Authentication Required"), ("alice:wrong@", "401 Unauthorized")] {
        let config = via(&format!("http://{creds}127.0.0.1:{}", proxy.port), &ca);
        let (kind, message) = connect_error(round_trip(&url, &config).await);
        assert_eq!(kind, ConnectErrorKind::Proxy);
        assert_eq!(
            message,
            format!("proxy http://127.0.0.1:{}: proxy refused the tunnel: HTTP {status}", proxy.port)
        );
    }
}

#[tokio::test]
async fn socks5_proxy_carries_ws_and_wss() {
    let Some(proxy) = proxies::microsocks(false) else { return };
    let ca = ca();
    let (plain, secure) = (server(None).await, server(Some(&ca)).await);
    // socks5: we resolve "localhost"; socks5h: the proxy does.
    for scheme in ["socks5", "socks5h"] {
        let config = via(&format!("{scheme}://127.0.0.1:{}", proxy.port), &ca);
        for url in [format!("ws://127.0.0.1:{plain}/"), format!("wss://localhost:{secure}/")] {
            assert_eq!(round_trip(&url, &config).await.unwrap(), PROXY_SOURCE, "{scheme} {url}");
        }
    }
}

#[tokio::test]
async fn socks5_proxy_with_username_and_password() {
    let Some(proxy) = proxies::microsocks(true) else { return };
    let ca = ca();
    let port = server(None).await;
    let url = format!("ws://127.0.0.1:{port}/");
    let good = via(&format!("socks5://{USER}:{PASSWORD}@127.0.0.1:{}", proxy.port), &ca);
    assert_eq!(round_trip(&url, &good).await.unwrap(), PROXY_SOURCE);
    let target = format!("proxy socks5://127.0.0.1:{}", proxy.port);
    let (kind, message) = connect_error(
        round_trip(&url, &via(&format!("socks5://alice:bad@127.0.0.1:{}", proxy.port), &ca)).await,
    );
    assert_eq!(kind, ConnectErrorKind::Proxy);
    assert_eq!(message, format!("{target}: socks5 proxy rejected the username and password"));
    let (kind, message) =
        connect_error(round_trip(&url, &via(&format!("socks5://127.0.0.1:{}", proxy.port), &ca)).await);
    assert_eq!(kind, ConnectErrorKind::Proxy);
    assert_eq!(
        message,
        format!(
            "{target}: socks5 proxy accepts none of our authentication methods (it may want a username and password)"
        )
    );
}

#[tokio::test]
async fn socks5_proxy_reports_a_refused_target() {
    let Some(proxy) = proxies::microsocks(false) else { return };
    let ca = ca();
    // Nothing listens on port 1.
    let config = via(&format!("socks5://127.0.0.1:{}", proxy.port), &ca);
    let (kind, message) = connect_error(round_trip("ws://127.0.0.1:1/", &config).await);
    assert_eq!(kind, ConnectErrorKind::Proxy);
    assert!(message
        .starts_with(&format!("proxy socks5://127.0.0.1:{}: socks5 proxy could not connect", proxy.port)));
}

#[tokio::test]
async fn connect_failures_name_host_and_kind() {
    let config = ClientConfig::default().with_proxy(Proxy::None);
    let (kind, message) = connect_error(round_trip("ws://127.0.0.1:1/", &config).await);
    assert_eq!((kind, message.as_str()), (ConnectErrorKind::Refused, "connection refused by 127.0.0.1:1"));
    let (kind, message) = connect_error(round_trip("ws://no-such-host.invalid/", &config).await);
    assert_eq!(kind, ConnectErrorKind::Dns);
    assert!(message.starts_with("cannot resolve host no-such-host.invalid: "), "{message}");
    // A proxy that is not there.
    let config = config.with_proxy(Proxy::url("http://127.0.0.1:1").unwrap());
    let (kind, message) = connect_error(round_trip("ws://127.0.0.1:9/", &config).await);
    assert_eq!(
        (kind, message.as_str()),
        (ConnectErrorKind::Refused, "connection refused by proxy http://127.0.0.1:1")
    );
    // Bad proxy URLs are refused up front, naming the URL without its password.
    let err = Proxy::url("https://u:pw@127.0.0.1:1").unwrap_err().to_string();
    assert_eq!(
        err,
        "invalid proxy url \"https://u:***@127.0.0.1:1\": https:// proxies are not supported (use http:// or socks5://)"
    );
}

#[tokio::test]
async fn connect_timeout_covers_a_silent_proxy() {
    // A "proxy" that accepts the TCP connection and then says nothing.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = silent.local_addr().unwrap().port();
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            held.push(s);
        }
    });
    for scheme in ["http", "socks5"] {
        let config = ClientConfig::default()
            .with_proxy(Proxy::url(&format!("{scheme}://127.0.0.1:{port}")).unwrap())
            .with_connect_timeout(Duration::from_millis(300));
        let start = Instant::now();
        let (kind, message) = connect_error(round_trip("ws://127.0.0.1:9/", &config).await);
        let took = start.elapsed();
        assert_eq!(kind, ConnectErrorKind::Timeout);
        assert_eq!(message, format!("timed out after 300ms connecting to proxy {scheme}://127.0.0.1:{port}"));
        assert!(took >= Duration::from_millis(300) && took < Duration::from_secs(5), "{took:?}");
    }
    hold.abort();
}

#[tokio::test]
async fn connect_timeout_covers_a_full_accept_queue() {
    // A listener whose accept queue is full and never drained: the kernel drops further SYNs,
    // so a TCP connect to it hangs until our timeout.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(0).unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut fillers = Vec::new();
    for _ in 0..8 {
        match tokio::time::timeout(
            Duration::from_millis(200),
            tokio::net::TcpStream::connect(("127.0.0.1", port)),
        )
        .await
        {
            Ok(Ok(s)) => fillers.push(s),
            _ => break,
        }
    }
    let config =
        ClientConfig::default().with_proxy(Proxy::None).with_connect_timeout(Duration::from_millis(400));
    let (kind, message) = connect_error(round_trip(&format!("ws://127.0.0.1:{port}/"), &config).await);
    assert_eq!(kind, ConnectErrorKind::Timeout);
    assert_eq!(message, format!("timed out after 400ms connecting to 127.0.0.1:{port}"));
    drop(listener);
}

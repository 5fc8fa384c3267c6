//! `tether::axum::WebSocketUpgrade` under `axum::serve`, over HTTP/1.1 and HTTP/2 (h2c):
//! tether's client both ways (subprotocol, permessage-deflate, a cookie added to the
//! answer), the handler's own refusal with a status and a body, the origin policy, a
//! request that is not a handshake, and a bad `:protocol` from hyper's HTTP/2 client.
#![cfg(all(feature = "axum", feature = "http2"))]

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::Router;
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::Empty;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::net::SocketAddr;
use std::time::Duration;
use tether::axum::WebSocketUpgrade;
use tether::{ClientConfig, Config, DeflateConfig, Message, OriginPolicy, Proxy};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const WAIT: Duration = Duration::from_secs(10);

async fn echo(upgrade: WebSocketUpgrade, query: axum::extract::RawQuery) -> Response {
    // The handler decides first, as asynchronously as it likes; a refusal is any response.
    tokio::time::sleep(Duration::from_millis(5)).await;
    if query.0.as_deref() == Some("deny") {
        return (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            "{\"error\":\"no entry\"}",
        )
            .into_response();
    }
    let http2 = upgrade.is_http2();
    let mut response = upgrade
        .protocols(["chat"])
        .config(Config::default().with_deflate(Some(DeflateConfig::default())))
        .origin(OriginPolicy::SameHost)
        .on_upgrade(move |mut ws| async move {
            while let Some(Ok(msg)) = ws.next().await {
                let msg = match msg {
                    Message::Text(t) if t.as_str() == "version?" => {
                        Message::text(if http2 { "HTTP/2" } else { "HTTP/1.1" })
                    }
                    other => other,
                };
                if msg.is_data() && ws.send(msg).await.is_err() {
                    break;
                }
            }
        });
    response.headers_mut().insert(header::SET_COOKIE, HeaderValue::from_static("seen=1"));
    response
}

async fn app() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = Router::new().route("/ws", any(echo));
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

fn client() -> ClientConfig {
    ClientConfig::default()
        .with_proxy(Proxy::None)
        .with_config(Config::default().with_deflate(Some(DeflateConfig::default())))
        .with_protocol("chat")
}

#[tokio::test]
async fn the_extractor_over_http1_and_http2() {
    let addr = app().await;
    for http2 in [false, true] {
        let config = client().with_http2(http2);
        let (mut ws, response) =
            tokio::time::timeout(WAIT, tether::connect_with(&format!("ws://{addr}/ws"), &config))
                .await
                .unwrap()
                .unwrap();
        assert_eq!(response.http2, http2);
        assert_eq!(response.protocol.as_deref(), Some("chat"));
        assert!(response.deflate.is_some() && ws.deflate());
        assert_eq!(response.headers["set-cookie"], "seen=1");
        ws.send(Message::text("version?")).await.unwrap();
        let version = tokio::time::timeout(WAIT, ws.next()).await.unwrap().unwrap().unwrap();
        assert_eq!(version, Message::text(if http2 { "HTTP/2" } else { "HTTP/1.1" }));
        let text = "through axum ".repeat(2000);
        ws.send(Message::text(text.clone())).await.unwrap();
        assert_eq!(
            tokio::time::timeout(WAIT, ws.next()).await.unwrap().unwrap().unwrap(),
            Message::text(text.clone())
        );
        assert!(ws.stats().bytes_sent < text.len() as u64 / 10, "{:?}", ws.stats());
        ws.close().await.unwrap();

        // The handler's refusal: its status and body.
        let err = tether::connect_with(&format!("ws://{addr}/ws?deny"), &config).await.unwrap_err();
        assert!(err.to_string().contains("401"), "{err}");
        // The origin policy: a page of another site.
        let err = tether::connect_with(
            &format!("ws://{addr}/ws"),
            &config.clone().with_origin("http://evil.example"),
        )
        .await
        .unwrap_err();
        assert!(err.to_string().contains("403"), "{err}");
    }
}

#[tokio::test]
async fn refusals_over_http1_as_raw_requests() {
    let addr = app().await;
    let raw = |request: String| async move {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(request.as_bytes()).await.unwrap();
        let mut out = Vec::new();
        let _ = tokio::time::timeout(WAIT, s.read_to_end(&mut out)).await;
        String::from_utf8_lossy(&out).into_owned()
    };
    let handshake = |extra: &str| {
        format!(
            "GET /ws?deny HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade, close\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n{extra}\r\n"
        )
    };
    let answer = raw(handshake("Sec-WebSocket-Version: 13\r\n")).await;
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    assert!(answer.ends_with("{\"error\":\"no entry\"}"), "{answer}");
    // Not a handshake at all (no version): refused by the extractor before the handler.
    let answer = raw(handshake("")).await;
    assert!(answer.starts_with("HTTP/1.1 426") || answer.starts_with("HTTP/1.1 400"), "{answer}");
    let answer = raw(format!("GET /ws HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")).await;
    assert!(answer.starts_with("HTTP/1.1 4"), "{answer}");
}

#[tokio::test]
async fn a_bad_protocol_over_http2_is_refused() {
    let addr = app().await;
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp)).await.unwrap();
    tokio::spawn(conn);
    let request = |protocol: &'static str, version: &str| {
        hyper::Request::builder()
            .method(hyper::Method::CONNECT)
            .uri(format!("http://{addr}/ws"))
            .extension(hyper::ext::Protocol::from_static(protocol))
            .header("sec-websocket-version", version)
            .body(Empty::<Bytes>::new())
            .unwrap()
    };
    // The server's SETTINGS (ENABLE_CONNECT_PROTOCOL) may not have arrived yet.
    let mut status = None;
    for _ in 0..100 {
        sender.ready().await.unwrap();
        if let Ok(res) = sender.send_request(request("webtransport", "13")).await {
            status = Some(res.status());
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(status, Some(hyper::StatusCode::BAD_REQUEST));
    let res = sender.send_request(request("websocket", "8")).await.unwrap();
    assert_eq!(res.status(), 426);
    assert_eq!(res.headers()["sec-websocket-version"], "13");
}

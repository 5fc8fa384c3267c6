//! The hub's HTTP on hyper: WebSocket over HTTP/2 (RFC 8441, h2c) beside the HTTP/1.1 fast
//! path, counted by version; the server API with chunked bodies and over HTTP/2, its body
//! limit, CORS, and the admin listener; a WebSocket upgrade after a plain request on one
//! kept-alive connection.

mod common;

use bytes::Bytes;
use common::{namespaces, start, start_with, Client, KEY, WAIT};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Sends `request` on a fresh connection and reads the answer until the server closes.
async fn raw(addr: SocketAddr, request: &[u8]) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(request).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(WAIT, s.read_to_end(&mut out)).await.unwrap().unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

/// Sends `request` on a fresh connection and reads the answer's head only.
async fn head(addr: SocketAddr, request: &[u8]) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(request).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8];
        tokio::time::timeout(WAIT, s.read_exact(&mut byte)).await.unwrap().unwrap();
        head.push(byte[0]);
    }
    String::from_utf8(head).unwrap()
}

fn header<'a>(answer: &'a str, name: &str) -> Option<&'a str> {
    let head = answer.split("\r\n\r\n").next()?;
    head.lines().find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

async fn metrics(addr: SocketAddr) -> String {
    raw(addr, b"GET /metrics HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n").await
}

/// An h2c connection (prior knowledge) from hyper's client.
async fn h2(addr: SocketAddr) -> hyper::client::conn::http2::SendRequest<Full<Bytes>> {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp)).await.unwrap();
    tokio::spawn(conn);
    sender
}

/// A tether.json WebSocket over an HTTP/2 stream (extended CONNECT).
async fn h2_websocket(
    sender: &mut hyper::client::conn::http2::SendRequest<Full<Bytes>>,
    addr: SocketAddr,
) -> Client {
    let req = hyper::Request::builder()
        .method(hyper::Method::CONNECT)
        .uri(format!("http://{addr}/ws"))
        .version(hyper::Version::HTTP_2)
        .extension(hyper::ext::Protocol::from_static("websocket"))
        .header("sec-websocket-version", "13")
        .header("sec-websocket-protocol", "tether.json")
        .header("origin", format!("http://{addr}"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    // The server's SETTINGS (ENABLE_CONNECT_PROTOCOL) may not have arrived yet.
    let mut res = None;
    for _ in 0..100 {
        sender.ready().await.unwrap();
        match sender.send_request(req.clone()).await {
            Ok(r) => {
                res = Some(r);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
    let mut res = res.expect("the hub never allowed extended CONNECT");
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["sec-websocket-protocol"], "tether.json");
    let stream = hyper::upgrade::on(&mut res).await.unwrap();
    let ws = tether::Upgrade::new(TokioIo::new(stream), tether::tether_proto::Role::Client)
        .protocol(Some("tether.json".into()))
        .spawn();
    Client { ws, next: 1, pushes: Default::default() }
}

#[tokio::test]
async fn websocket_over_http2_beside_http1_counted_by_version() {
    let hub = start().await;
    let mut sender = h2(hub.addr).await;
    // Two WebSockets on one HTTP/2 connection, and one over HTTP/1.1.
    let mut a = h2_websocket(&mut sender, hub.addr).await;
    let mut b = h2_websocket(&mut sender, hub.addr).await;
    let mut c = Client::connect(hub.addr, "carol").await;
    assert_eq!(a.ok("connect", json!({"name": "ann"})).await["user"], "ann");
    b.ok("connect", json!({"name": "bob"})).await;
    for x in [&mut a, &mut b, &mut c] {
        x.ok("subscribe", json!({"channel": "chat:h2"})).await;
    }
    a.ok("publish", json!({"channel": "chat:h2", "data": {"text": "over h2"}})).await;
    for x in [&mut b, &mut c] {
        let mut push = x.push().await;
        while push.get("pub").is_none() {
            push = x.push().await;
        }
        assert_eq!(push["pub"]["data"]["text"], "over h2");
    }
    // The API over the same HTTP/2 connection.
    let req = hyper::Request::builder()
        .method("POST")
        .uri(format!("http://{}/api/history", hub.addr))
        .header("authorization", format!("apikey {KEY}"))
        .body(Full::new(Bytes::from(json!({"channel": "chat:h2"}).to_string())))
        .unwrap();
    let res = sender.send_request(req).await.unwrap();
    assert_eq!(res.status(), 200);
    let body: Value = serde_json::from_slice(&res.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(body["result"]["publications"][0]["data"]["text"], "over h2", "{body}");
    let m = metrics(hub.addr).await;
    assert!(m.contains("tether_websocket_sessions_total{http=\"2\"} 2"), "{m}");
    assert!(m.contains("tether_websocket_sessions_total{http=\"1.1\"} 1"), "{m}");
    // A WebSocket closed over HTTP/2 ends its stream, not the connection.
    drop(a);
    let m = async {
        loop {
            if metrics(hub.addr).await.contains("tether_connections 2\n") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(WAIT, m).await.unwrap();
    b.ok("presence", json!({"channel": "chat:h2"})).await;
}

#[tokio::test]
async fn http2_refusals_and_a_bad_protocol() {
    let hub = start().await;
    let mut sender = h2(hub.addr).await;
    let connect = |path: &str, protocol: &'static str, version: &str| {
        hyper::Request::builder()
            .method(hyper::Method::CONNECT)
            .uri(format!("http://{}{path}", hub.addr))
            .extension(hyper::ext::Protocol::from_static(protocol))
            .header("sec-websocket-version", version)
            .body(Full::new(Bytes::new()))
            .unwrap()
    };
    // Wait for the server's SETTINGS by a plain request first.
    let ok =
        hyper::Request::get(format!("http://{}/healthz", hub.addr)).body(Full::new(Bytes::new())).unwrap();
    assert_eq!(sender.send_request(ok).await.unwrap().status(), 200);
    let res = sender.send_request(connect("/ws", "webtransport", "13")).await.unwrap();
    assert_eq!(res.status(), 400);
    let res = sender.send_request(connect("/ws", "websocket", "8")).await.unwrap();
    assert_eq!(
        (res.status().as_u16(), &res.headers()["sec-websocket-version"]),
        (426, &"13".parse().unwrap())
    );
    let res = sender.send_request(connect("/elsewhere", "websocket", "13")).await.unwrap();
    assert_eq!(res.status(), 404);
}

#[tokio::test]
async fn chunked_api_bodies_and_the_body_limit() {
    let hub = start_with(namespaces(), |o| o.server.max_body_size = 64).await;
    let body = json!({"channel": "chat:c", "data": 1}).to_string();
    let (one, two) = body.split_at(10);
    let request = format!(
        "POST /api/publish HTTP/1.1\r\nHost: h\r\nAuthorization: apikey {KEY}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n{:x}\r\n{one}\r\n{:x}\r\n{two}\r\n0\r\n\r\n",
        one.len(),
        two.len()
    );
    let answer = raw(hub.addr, request.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("\"offset\":1"), "{answer}");
    // Over the limit, chunked or not: 413.
    let big = format!("{{\"channel\":\"chat:c\",\"data\":\"{}\"}}", "x".repeat(100));
    let request = format!(
        "POST /api/publish HTTP/1.1\r\nHost: h\r\nAuthorization: apikey {KEY}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n{:x}\r\n{big}\r\n0\r\n\r\n",
        big.len()
    );
    let answer = raw(hub.addr, request.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 413") && answer.contains("limit of 64 bytes"), "{answer}");
    let request = format!(
        "POST /api/publish HTTP/1.1\r\nHost: h\r\nAuthorization: apikey {KEY}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{big}",
        big.len()
    );
    let answer = raw(hub.addr, request.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert_eq!(hub.hub.channels().len(), 0, "nothing subscribed, nothing kept");
}

#[tokio::test]
async fn cors_for_the_configured_origins() {
    let hub = start_with(namespaces(), |o| o.cors_origins = vec!["https://admin.example".into()]).await;
    let preflight = |origin: &str| {
        format!(
            "OPTIONS /api/publish HTTP/1.1\r\nHost: h\r\nOrigin: {origin}\r\nAccess-Control-Request-Method: POST\r\nAccess-Control-Request-Headers: authorization, content-type\r\nConnection: close\r\n\r\n"
        )
    };
    let answer = raw(hub.addr, preflight("https://admin.example").as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 204"), "{answer}");
    assert_eq!(header(&answer, "access-control-allow-origin"), Some("https://admin.example"));
    assert_eq!(header(&answer, "access-control-allow-methods"), Some("POST"));
    assert!(header(&answer, "access-control-allow-headers").is_some_and(|h| h.contains("authorization")));
    let answer = raw(hub.addr, preflight("https://evil.example").as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
    assert_eq!(header(&answer, "access-control-allow-origin"), None);
    // The call itself carries the header for an allowed origin only.
    let call = |origin: &str| {
        let body = json!({"channel": "chat:cors", "data": 1}).to_string();
        format!(
            "POST /api/publish HTTP/1.1\r\nHost: h\r\nOrigin: {origin}\r\nAuthorization: apikey {KEY}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
    };
    let answer = raw(hub.addr, call("https://admin.example").as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert_eq!(header(&answer, "access-control-allow-origin"), Some("https://admin.example"));
    let answer = raw(hub.addr, call("https://evil.example").as_bytes()).await;
    assert_eq!(header(&answer, "access-control-allow-origin"), None);
    // Without cors_origins (the default), no CORS header at all.
    let plain = start().await;
    let answer = raw(plain.addr, preflight("https://admin.example").as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
}

#[tokio::test]
async fn the_admin_listener_has_the_api_and_metrics_the_public_port_does_not() {
    let hub = start_with(namespaces(), |o| o.admin_listen = Some("127.0.0.1:0".into())).await;
    let admin = hub.admin.expect("an admin address");
    let public = raw(hub.addr, format!("POST /api/channels HTTP/1.1\r\nHost: h\r\nAuthorization: apikey {KEY}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").as_bytes()).await;
    assert!(public.starts_with("HTTP/1.1 404"), "{public}");
    assert!(metrics(hub.addr).await.starts_with("HTTP/1.1 404"));
    let (status, body) =
        common::api(admin, "publish", json!({"channel": "chat:a", "data": 1}), Some(KEY)).await;
    assert_eq!((status, &body["result"]["offset"]), (200, &json!(1)));
    let m = metrics(admin).await;
    assert!(m.starts_with("HTTP/1.1 200") && m.contains("tether_publications_total 1"), "{m}");
    // Health on both; WebSocket and the page on the public port only.
    for addr in [hub.addr, admin] {
        let h = raw(addr, b"GET /healthz HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n").await;
        assert!(h.starts_with("HTTP/1.1 200"), "{h}");
    }
    let ws = head(
        admin,
        b"GET /ws HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    .await;
    assert!(ws.starts_with("HTTP/1.1 404"), "{ws}");
    let mut c = Client::connect(hub.addr, "ann").await;
    c.ok("subscribe", json!({"channel": "chat:a"})).await;
}

/// A plain request first, then a WebSocket upgrade on the same kept-alive connection: the
/// upgrade goes through hyper and works as on the fast path.
#[tokio::test]
async fn an_upgrade_after_a_plain_request_on_one_connection() {
    let hub = start().await;
    let mut s = tokio::net::TcpStream::connect(hub.addr).await.unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: h\r\n\r\n").await.unwrap();
    let mut buf = vec![0u8; 1024];
    let n = tokio::time::timeout(WAIT, s.read(&mut buf)).await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).ends_with("\r\n\r\nok\n"));
    let key = "dGhlIHNhbXBsZSBub25jZQ==";
    let request = format!(
        "GET /ws HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: tether.json\r\n\r\n",
        hub.addr
    );
    s.write_all(request.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8];
        tokio::time::timeout(WAIT, s.read_exact(&mut byte)).await.unwrap().unwrap();
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert_eq!(header(&head, "sec-websocket-accept"), Some("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="));
    let ws = tether::Upgrade::new(s, tether::tether_proto::Role::Client)
        .protocol(Some("tether.json".into()))
        .spawn();
    let mut c = Client { ws, next: 1, pushes: Default::default() };
    assert_eq!(c.ok("connect", json!({"name": "kept"})).await["user"], "kept");
    let m = metrics(hub.addr).await;
    assert!(m.contains("tether_websocket_sessions_total{http=\"1.1\"} 1"), "{m}");
}

/// `http2_max_streams` is what the hub announces (SETTINGS_MAX_CONCURRENT_STREAMS); with
/// HTTP/2 off, the hub closes a connection that starts with the HTTP/2 preface.
#[tokio::test]
async fn http2_max_streams_and_http2_off() {
    let hub = start_with(namespaces(), |o| o.http2_max_streams = 3).await;
    let tcp = tokio::net::TcpStream::connect(hub.addr).await.unwrap();
    let (sender, mut connection) = h2::client::handshake(tcp).await.unwrap();
    let mut ping = connection.ping_pong().unwrap();
    tokio::spawn(async move {
        let _ = connection.await;
    });
    // The server's SETTINGS come first: once a PING is answered they are known.
    tokio::time::timeout(WAIT, ping.ping(h2::Ping::opaque())).await.unwrap().unwrap();
    let sender = sender.ready().await.unwrap();
    assert_eq!(sender.current_max_send_streams(), 3);
    assert!(sender.is_extended_connect_protocol_enabled());

    let off = start_with(namespaces(), |o| o.http2 = false).await;
    let answer = raw(off.addr, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await;
    assert!(answer.is_empty(), "{answer:?}");
}

/// A kept-alive HTTP/1.1 connection that goes quiet after a request, and one that never
/// finishes its head, are closed after the handshake time.
#[tokio::test]
async fn idle_and_slow_http_connections_are_closed() {
    let hub = start_with(namespaces(), |o| {
        o.server.config = o.server.config.clone().with_handshake_timeout(Duration::from_millis(300))
    })
    .await;
    let mut s = tokio::net::TcpStream::connect(hub.addr).await.unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: h\r\n\r\n").await.unwrap();
    let mut out = Vec::new();
    let read = tokio::time::timeout(WAIT, s.read_to_end(&mut out)).await;
    assert!(read.is_ok(), "the idle connection was not closed");
    assert!(String::from_utf8_lossy(&out).ends_with("\r\n\r\nok\n"));
    // A head that starts with a plain request and never ends.
    let mut s = tokio::net::TcpStream::connect(hub.addr).await.unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: h\r\n").await.unwrap();
    let mut out = Vec::new();
    let read = tokio::time::timeout(WAIT, s.read_to_end(&mut out)).await;
    assert!(read.is_ok(), "the slow head was not closed");
}

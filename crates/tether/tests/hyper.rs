//! `tether::hyper::upgrade` in a real hyper server: over HTTP/1.1 with tether's client and
//! raw requests (subprotocol, permessage-deflate, plain requests beside upgrades, refusals
//! with their statuses), and over HTTP/2 with hyper's own client sending RFC 8441 extended
//! CONNECT (subprotocol, deflate, a bad `:protocol` refused).
#![cfg(feature = "hyper")]

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tether::{ClientConfig, Config, DeflateConfig, Message, OriginPolicy, Proxy, ServerConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const WAIT: Duration = Duration::from_secs(10);

/// A hyper server: `/ws` upgrades (echo), anything else answers "plain".
async fn server(config: ServerConfig) -> SocketAddr {
    server_with(config, true).await
}

/// As [`server`]; `connect_protocol`: whether HTTP/2 connections advertise extended CONNECT.
async fn server_with(config: ServerConfig, connect_protocol: bool) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let config = Arc::new(config);
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { return };
            let config = config.clone();
            let service = service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
                let config = config.clone();
                async move {
                    if req.uri().path() != "/ws" {
                        return Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from("plain"))));
                    }
                    Ok(match tether::hyper::upgrade(&mut req, &config) {
                        Ok((response, pending)) => {
                            tokio::spawn(async move {
                                let mut ws = pending.await.unwrap();
                                while let Some(Ok(msg)) = ws.next().await {
                                    if msg.is_data() && ws.send(msg).await.is_err() {
                                        break;
                                    }
                                }
                            });
                            response
                        }
                        Err(refusal) => refusal,
                    })
                }
            });
            tokio::spawn(async move {
                // HTTP/2 by prior knowledge (the client's preface), else HTTP/1.1.
                let mut preface = [0u8; 3];
                let h2 = matches!(tcp.peek(&mut preface).await, Ok(3) if &preface == b"PRI");
                if h2 {
                    let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
                    if connect_protocol {
                        builder.enable_connect_protocol();
                    }
                    let _ = builder.serve_connection(TokioIo::new(tcp), service).await;
                } else {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), service)
                        .with_upgrades()
                        .await;
                }
            });
        }
    });
    addr
}

#[tokio::test]
async fn tether_client_through_hyper_with_subprotocol_and_deflate() {
    let deflate = Config::default().with_deflate(Some(DeflateConfig::default()));
    let addr =
        server(ServerConfig::default().with_config(deflate.clone()).with_protocols(["chat", "superchat"]))
            .await;
    let client =
        ClientConfig::default().with_proxy(Proxy::None).with_config(deflate).with_protocol("superchat");
    let url = format!("ws://{addr}/ws");
    let (mut ws, response) =
        tokio::time::timeout(WAIT, tether::connect_with(&url, &client)).await.unwrap().unwrap();
    assert_eq!(response.protocol.as_deref(), Some("superchat"));
    assert!(response.deflate.is_some() && ws.deflate());
    let text = "through hyper ".repeat(500);
    ws.send(Message::text(text.clone())).await.unwrap();
    let back = tokio::time::timeout(WAIT, ws.next()).await.unwrap().unwrap().unwrap();
    assert_eq!(back, Message::text(text.clone()));
    assert!(ws.stats().bytes_sent < text.len() as u64 / 10, "{:?}", ws.stats());
    ws.close().await.unwrap();
}

/// Sends `request` on a fresh connection and returns the answer's head and body.
async fn raw(addr: SocketAddr, request: &str) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    let mut out = vec![0u8; 4096];
    let n = tokio::time::timeout(WAIT, s.read(&mut out)).await.unwrap().unwrap();
    String::from_utf8_lossy(&out[..n]).into_owned()
}

#[tokio::test]
async fn refusals_have_the_statuses_of_tether_s_own_listener() {
    let config =
        ServerConfig::default().with_origin(OriginPolicy::AllowList(vec!["https://ok.example".into()]));
    let addr = server(config).await;
    let head = |extra: &str| {
        format!(
            "GET /ws HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n{extra}Sec-WebSocket-Version: 13\r\n\r\n"
        )
    };
    let key = "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";
    // RFC 6455 1.3's example key gives its accept value.
    let ok = raw(addr, &head(key)).await;
    assert!(ok.starts_with("HTTP/1.1 101"), "{ok}");
    assert!(ok.to_ascii_lowercase().contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo="), "{ok}");
    let bad_key = raw(addr, &head("Sec-WebSocket-Key: short\r\n")).await;
    assert!(bad_key.starts_with("HTTP/1.1 400") && bad_key.contains("sec-websocket-key"), "{bad_key}");
    let evil = raw(addr, &head(&format!("{key}Origin: https://evil.example\r\n"))).await;
    assert!(evil.starts_with("HTTP/1.1 403"), "{evil}");
    let v8 = raw(addr, &head(key).replace("Version: 13", "Version: 8")).await;
    assert!(
        v8.starts_with("HTTP/1.1 426") && v8.to_ascii_lowercase().contains("sec-websocket-version: 13"),
        "{v8}"
    );
    let post = raw(addr, &head(key).replace("GET", "POST")).await;
    assert!(post.starts_with("HTTP/1.1 405"), "{post}");
    // Plain requests beside the upgrades.
    let plain = raw(addr, "GET / HTTP/1.1\r\nHost: h\r\n\r\n").await;
    assert!(plain.starts_with("HTTP/1.1 200") && plain.ends_with("plain"), "{plain}");
}

/// An HTTP/2 connection (h2c, prior knowledge) from hyper's client, and one extended
/// CONNECT on it: the response and the stream.
async fn h2_connect(
    addr: SocketAddr,
    protocol: &'static str,
    headers: &[(&str, String)],
) -> hyper::Response<hyper::body::Incoming> {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp)).await.unwrap();
    tokio::spawn(conn);
    let mut req = hyper::Request::builder()
        .method(hyper::Method::CONNECT)
        .uri(format!("http://{addr}/ws"))
        .version(hyper::Version::HTTP_2)
        .extension(hyper::ext::Protocol::from_static(protocol));
    for (name, value) in headers {
        req = req.header(*name, value.as_str());
    }
    let req = req.body(http_body_util::Empty::<Bytes>::new()).unwrap();
    // The server's SETTINGS (with ENABLE_CONNECT_PROTOCOL) may not have arrived yet.
    for _ in 0..100 {
        sender.ready().await.unwrap();
        match sender.send_request(req.clone()).await {
            Ok(res) => return res,
            Err(e) => {
                assert!(e.to_string().contains("connect") || e.is_user(), "{e:?}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    panic!("extended CONNECT never allowed");
}

#[tokio::test]
async fn extended_connect_over_http2_with_subprotocol_and_deflate() {
    let deflate = DeflateConfig::default();
    let config = Config::default().with_deflate(Some(deflate.clone()));
    let addr = server(ServerConfig::default().with_config(config.clone()).with_protocols(["chat"])).await;
    let offer = tether::tether_proto::deflate::client_offer(&deflate);
    let mut res = h2_connect(
        addr,
        "websocket",
        &[
            ("sec-websocket-version", "13".into()),
            ("sec-websocket-protocol", "superchat, chat".into()),
            ("sec-websocket-extensions", offer),
            ("origin", format!("http://{addr}")),
        ],
    )
    .await;
    // RFC 8441 5: a 2xx, without the HTTP/1.1 upgrade headers or an accept key.
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["sec-websocket-protocol"], "chat");
    assert!(res.headers().get("sec-websocket-accept").is_none() && res.headers().get("upgrade").is_none());
    let answer = res.headers()["sec-websocket-extensions"].as_bytes().to_vec();
    let params = tether::tether_proto::deflate::client_accept(
        &tether::tether_proto::handshake::parse_extensions([answer.as_slice()]).unwrap(),
        &deflate,
    )
    .unwrap();
    assert!(params.is_some());
    let stream = hyper::upgrade::on(&mut res).await.unwrap();
    let mut ws = tether::Upgrade::new(TokioIo::new(stream), tether::tether_proto::Role::Client)
        .config(config)
        .protocol(Some("chat".into()))
        .deflate(params)
        .spawn();
    let text = "over an HTTP/2 stream ".repeat(400);
    ws.send(Message::text(text.clone())).await.unwrap();
    let back = tokio::time::timeout(WAIT, ws.next()).await.unwrap().unwrap().unwrap();
    assert_eq!(back, Message::text(text.clone()));
    assert!(ws.stats().bytes_sent < text.len() as u64 / 10, "{:?}", ws.stats());
    ws.send(Message::binary(vec![7u8; 3])).await.unwrap();
    let back = tokio::time::timeout(WAIT, ws.next()).await.unwrap().unwrap().unwrap();
    assert_eq!(back, Message::binary(vec![7u8; 3]));
}

#[tokio::test]
async fn http2_refusals() {
    let addr = server(ServerConfig::default()).await;
    // Another :protocol is not a WebSocket: 400.
    let res = h2_connect(addr, "webtransport", &[("sec-websocket-version", "13".into())]).await;
    assert_eq!(res.status(), 400);
    // Another WebSocket version: 426 with the one spoken.
    let res = h2_connect(addr, "websocket", &[("sec-websocket-version", "8".into())]).await;
    assert_eq!(res.status(), 426);
    assert_eq!(res.headers()["sec-websocket-version"], "13");
}

/// tether's client over HTTP/2 (h2c with prior knowledge), with a subprotocol and
/// permessage-deflate, on a hyper server that advertises extended CONNECT.
#[cfg(feature = "http2")]
#[tokio::test]
async fn tether_client_over_http2() {
    let deflate = Config::default().with_deflate(Some(DeflateConfig::default()));
    let addr = server(ServerConfig::default().with_config(deflate.clone()).with_protocols(["chat"])).await;
    let client = ClientConfig::default()
        .with_proxy(Proxy::None)
        .with_config(deflate)
        .with_protocol("superchat")
        .with_protocol("chat")
        .with_http2(true);
    let url = format!("ws://{addr}/ws");
    // Several at once: each is one stream of its own HTTP/2 connection.
    let mut sockets = Vec::new();
    for _ in 0..3 {
        let (ws, response) =
            tokio::time::timeout(WAIT, tether::connect_with(&url, &client)).await.unwrap().unwrap();
        assert!(response.http2, "not over HTTP/2");
        assert_eq!(response.protocol.as_deref(), Some("chat"));
        assert!(response.deflate.is_some() && ws.deflate());
        sockets.push(ws);
    }
    for (i, ws) in sockets.iter_mut().enumerate() {
        // Bigger than the initial HTTP/2 window (64 KiB), uncompressed, to cross flow control.
        let text = format!("{i} over HTTP/2 ").repeat(20_000);
        ws.send(Message::text(text.clone())).await.unwrap();
        let big = Message::binary((0..200_000u32).map(|n| (n * 7 % 251) as u8).collect::<Vec<u8>>());
        ws.send(big.clone()).await.unwrap();
        assert_eq!(
            tokio::time::timeout(WAIT, ws.next()).await.unwrap().unwrap().unwrap(),
            Message::text(text)
        );
        assert_eq!(tokio::time::timeout(WAIT, ws.next()).await.unwrap().unwrap().unwrap(), big);
    }
    for mut ws in sockets {
        ws.close().await.unwrap();
        // The close handshake completes (the server's close comes back), then the stream ends.
        while let Some(m) = tokio::time::timeout(WAIT, ws.next()).await.unwrap() {
            if m.is_err() {
                break;
            }
        }
    }
}

/// Asked for HTTP/2, tether's client falls back to HTTP/1.1 when the server speaks HTTP/2
/// without extended CONNECT, and when it does not speak HTTP/2 at all (tether's own
/// listener, which answers the preface with 400).
#[cfg(feature = "http2")]
#[tokio::test]
async fn http2_falls_back_to_http1() {
    let client = ClientConfig::default().with_proxy(Proxy::None).with_http2(true);
    let no_connect = server_with(ServerConfig::default(), false).await;
    let (mut ws, response) =
        tokio::time::timeout(WAIT, tether::connect_with(&format!("ws://{no_connect}/ws"), &client))
            .await
            .unwrap()
            .unwrap();
    assert!(!response.http2);
    ws.send(Message::text("fallback")).await.unwrap();
    assert_eq!(
        tokio::time::timeout(WAIT, ws.next()).await.unwrap().unwrap().unwrap(),
        Message::text("fallback")
    );

    let listener = tether::Listener::bind("127.0.0.1:0", ServerConfig::default()).await.unwrap();
    let plain = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let incoming = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let Ok((mut ws, _)) = incoming.upgrade().await else { return };
                while let Some(Ok(msg)) = ws.next().await {
                    if msg.is_data() && ws.send(msg).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    let (mut ws, response) =
        tokio::time::timeout(WAIT, tether::connect_with(&format!("ws://{plain}/"), &client))
            .await
            .unwrap()
            .unwrap();
    assert!(!response.http2);
    ws.send(Message::text("plain")).await.unwrap();
    assert_eq!(
        tokio::time::timeout(WAIT, ws.next()).await.unwrap().unwrap().unwrap(),
        Message::text("plain")
    );
    // A refusal over HTTP/2 is the server's status, as over HTTP/1.1.
    let addr = server(
        ServerConfig::default().with_origin(OriginPolicy::AllowList(vec!["https://a.example".into()])),
    )
    .await;
    let err =
        tether::connect_with(&format!("ws://{addr}/ws"), &client.clone().with_origin("https://b.example"))
            .await
            .unwrap_err();
    assert!(err.to_string().contains("403"), "{err}");
}

//! `tether::hyper::upgrade` in a real hyper HTTP/1.1 server: tether's client and raw
//! requests against it (subprotocol, permessage-deflate, plain requests beside upgrades,
//! refusals with their statuses).
#![cfg(feature = "hyper")]

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tether::{ClientConfig, Config, DeflateConfig, Message, OriginPolicy, Proxy, ServerConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const WAIT: Duration = Duration::from_secs(10);

/// A hyper server: `/ws` upgrades (echo), anything else answers "plain".
async fn server(config: ServerConfig) -> SocketAddr {
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
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), service)
                    .with_upgrades()
                    .await;
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

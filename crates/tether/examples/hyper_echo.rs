//! A WebSocket echo server inside a hyper server, over HTTP/1.1 (upgrade) and HTTP/2
//! (extended CONNECT, RFC 8441, h2c with prior knowledge), with permessage-deflate and a
//! subprotocol (`echo`) offered. Every other path gets a plain-text answer.
//!
//! usage: cargo run -p tether --features hyper --example hyper_echo [ADDR]
//! (ADDR defaults to 127.0.0.1:9002; it prints `listening on ws://ADDR/ws`)

use futures_util::{SinkExt, StreamExt};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use std::convert::Infallible;
use std::sync::Arc;
use tether::{Config, DeflateConfig, ServerConfig};

async fn handle(
    mut req: Request<Incoming>,
    config: Arc<ServerConfig>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if req.uri().path() != "/ws" {
        return Ok(Response::new(Full::new(Bytes::from("a WebSocket echo lives at /ws\n"))));
    }
    // 101 (HTTP/1.1) or 200 (HTTP/2) with the negotiated subprotocol and extension, or the
    // refusal (400, 403, 426...) to send instead.
    match tether::hyper::upgrade(&mut req, &config) {
        Ok((response, pending)) => {
            tokio::spawn(async move {
                let Ok(mut ws) = pending.await else { return };
                while let Some(Ok(msg)) = ws.next().await {
                    if msg.is_data() && ws.send(msg).await.is_err() {
                        break;
                    }
                }
            });
            Ok(response)
        }
        Err(refusal) => Ok(refusal),
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:9002".into());
    let config = Arc::new(
        ServerConfig::default()
            .with_config(Config::default().with_deflate(Some(DeflateConfig::default())))
            .with_protocols(["echo"])
            // Browsers only from pages of this server (clients without Origin pass).
            .with_origin(tether::OriginPolicy::SameHost),
    );
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("listening on ws://{}/ws", listener.local_addr()?);
    loop {
        let (tcp, _) = listener.accept().await?;
        let config = config.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| handle(req, config.clone()));
            let mut builder = auto::Builder::new(TokioExecutor::new());
            // Every WebSocket route here goes through tether::hyper::upgrade, so browsers may
            // be told to open WebSockets on HTTP/2 connections.
            builder.http2().enable_connect_protocol();
            let _ = builder.serve_connection_with_upgrades(TokioIo::new(tcp), service).await;
        });
    }
}

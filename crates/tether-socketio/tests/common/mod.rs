//! Helpers: a raw HTTP/1.1 client (one connection per request), and a WebSocket reader
//! with timeouts.

#![allow(dead_code, unreachable_pub)]

use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::{BodyExt, Full};
use hyper::{HeaderMap, Method, Request, StatusCode};
use std::net::SocketAddr;
use std::time::Duration;
use tether::{Message, WebSocket};

pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

impl Answer {
    /// The JSON of a 400 answer: its `code`.
    pub fn code(&self) -> i64 {
        let v: serde_json::Value = serde_json::from_str(&self.body).expect("JSON error body");
        v["code"].as_i64().expect("code")
    }
}

pub async fn request(
    addr: SocketAddr,
    method: Method,
    path: &str,
    body: &str,
    headers: &[(&str, &str)],
) -> Answer {
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (mut send, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await.expect("handshake");
    tokio::spawn(conn);
    let mut req = Request::builder().method(method).uri(path).header("host", addr.to_string());
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(Full::new(Bytes::from(body.to_owned()))).expect("request");
    let resp = send.send_request(req).await.expect("response");
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.expect("body").to_bytes();
    Answer { status: parts.status, headers: parts.headers, body: String::from_utf8_lossy(&body).into_owned() }
}

pub async fn get(addr: SocketAddr, path: &str) -> Answer {
    request(addr, Method::GET, path, "", &[]).await
}

pub async fn post(addr: SocketAddr, path: &str, body: &str) -> Answer {
    request(addr, Method::POST, path, body, &[]).await
}

/// Opens a polling session at `base` (`/engine.io/`): its sid.
pub async fn open_polling(addr: SocketAddr, base: &str) -> String {
    let a = get(addr, &format!("{base}?EIO=4&transport=polling")).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    let open: serde_json::Value =
        serde_json::from_str(a.body.strip_prefix('0').expect("open packet")).unwrap();
    open["sid"].as_str().unwrap().to_owned()
}

pub async fn ws(addr: SocketAddr, path_and_query: &str) -> WebSocket {
    let (ws, _) = tether::connect(&format!("ws://{addr}{path_and_query}")).await.expect("websocket");
    ws
}

/// The next data message (text as a string, binary as `bin:` and its bytes in hex); `None`
/// when the connection ends first, or after `secs`.
pub async fn next(ws: &mut WebSocket, secs: u64) -> Option<String> {
    loop {
        match tokio::time::timeout(Duration::from_secs(secs), ws.next()).await.ok()?? {
            Ok(Message::Text(t)) => return Some(t.as_str().to_owned()),
            Ok(Message::Binary(b)) => {
                return Some(format!("bin:{}", b.iter().map(|x| format!("{x:02x}")).collect::<String>()))
            }
            Ok(Message::Close(_)) | Err(_) => return None,
            Ok(_) => {}
        }
    }
}

/// The next message that is not a ping (`2`).
pub async fn next_data(ws: &mut WebSocket, secs: u64) -> Option<String> {
    loop {
        let m = next(ws, secs).await?;
        if m != "2" {
            return Some(m);
        }
    }
}

/// Whether the server ends the connection within `secs` (pings skipped).
pub async fn closes(ws: &mut WebSocket, secs: u64) -> bool {
    let end = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        match tokio::time::timeout_at(end, ws.next()).await {
            Err(_) => return false,
            Ok(None | Some(Err(_)) | Some(Ok(Message::Close(_)))) => return true,
            Ok(Some(Ok(_))) => {}
        }
    }
}

pub async fn send(ws: &mut WebSocket, text: &str) {
    futures_util::SinkExt::send(ws, Message::text(text)).await.expect("send");
}

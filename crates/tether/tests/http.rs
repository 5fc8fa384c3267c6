//! One port for plain HTTP and WebSocket: `Incoming::serve` answers requests (keep-alive,
//! bodies, limits) until one asks for an upgrade.

use futures_util::{SinkExt, StreamExt};
use std::time::Duration;
use tether::{HttpRequest, HttpResponse, Listener, Message, Reject, ServerConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn route(req: HttpRequest) -> HttpResponse {
    match (req.head.method.as_str(), req.head.path.as_str()) {
        ("GET" | "HEAD", "/") => HttpResponse::new(200, "text/html", "<p>page</p>"),
        ("POST", "/echo") => HttpResponse::new(200, "application/octet-stream", req.body),
        _ => HttpResponse::text(404, "not found"),
    }
}

/// A server on `config` that routes plain requests and echoes WebSocket messages. Returns
/// its address.
async fn server(config: ServerConfig) -> std::net::SocketAddr {
    let listener = Listener::bind("127.0.0.1:0", config).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok(incoming) = listener.accept().await {
            tokio::spawn(async move {
                let check = |r: &tether::Request| {
                    if r.path == "/ws" {
                        Ok(())
                    } else {
                        Err(Reject::new(404, "no websocket here"))
                    }
                };
                let Ok(Some((mut ws, _))) = incoming.serve(check, route).await else { return };
                while let Some(Ok(msg)) = ws.next().await {
                    if msg.is_data() && ws.send(msg).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    addr
}

/// Reads one response with a Content-Length body; returns the head and the body.
async fn response(s: &mut TcpStream) -> (String, Vec<u8>) {
    let head = response_head(s).await;
    let len: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase().strip_prefix("content-length: ").map(|v| v.trim().parse().unwrap())
        })
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).await.unwrap();
    (head, body)
}

/// Reads a response head only (the answer to HEAD).
async fn response_head(s: &mut TcpStream) -> String {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        assert_eq!(
            s.read(&mut byte).await.unwrap(),
            1,
            "closed in the head: {:?}",
            String::from_utf8_lossy(&buf)
        );
        buf.push(byte[0]);
    }
    String::from_utf8(buf).unwrap()
}

async fn closed(s: &mut TcpStream) -> bool {
    let mut rest = Vec::new();
    matches!(tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut rest)).await, Ok(Ok(0)))
}

#[tokio::test]
async fn keep_alive_requests_then_an_upgrade_on_the_same_connection() {
    let addr = server(ServerConfig::default()).await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    // Two requests in one write (pipelined), then a third with a body.
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\nGET /nope HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let (head, body) = response(&mut s).await;
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n") && head.contains("Content-Type: text/html"), "{head}");
    assert!(!head.contains("Connection: close"));
    assert_eq!(body, b"<p>page</p>");
    let (head, body) = response(&mut s).await;
    assert!(head.starts_with("HTTP/1.1 404 Not Found\r\n"), "{head}");
    assert_eq!(body, b"not found\n");
    s.write_all(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhel").await.unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    s.write_all(b"lo").await.unwrap();
    assert_eq!(response(&mut s).await.1, b"hello");
    // HEAD: the GET head without the body.
    s.write_all(b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let head = response_head(&mut s).await;
    assert!(head.contains("Content-Length: 11"), "{head}");
    // Now the upgrade, on the same TCP connection; nothing of the HEAD body may precede it.
    let url = tether::Url::parse(&format!("ws://{addr}/ws")).unwrap();
    let (mut ws, _) = tether::client_handshake(s, &url, &tether::ClientConfig::default()).await.unwrap();
    ws.send(Message::text("after http")).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("after http"));
    ws.close().await.unwrap();
}

#[tokio::test]
async fn upgrades_are_checked_and_refusable() {
    let addr = server(ServerConfig::default()).await;
    let err = tether::connect(&format!("ws://{addr}/elsewhere")).await.unwrap_err().to_string();
    assert!(err.contains("404"), "{err}");
    let (mut ws, _) = tether::connect(&format!("ws://{addr}/ws")).await.unwrap();
    ws.close().await.unwrap();
    // An upgrade request missing its key is refused with 400, as by accept.
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\r\n")
        .await
        .unwrap();
    assert!(response(&mut s).await.0.starts_with("HTTP/1.1 400 "));
}

#[tokio::test]
async fn http_1_0_and_connection_close_end_the_connection() {
    let addr = server(ServerConfig::default()).await;
    for request in [&b"GET / HTTP/1.0\r\n\r\n"[..], b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"]
    {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(request).await.unwrap();
        let (head, body) = response(&mut s).await;
        assert!(head.contains("Connection: close") && body == b"<p>page</p>", "{head}");
        assert!(closed(&mut s).await);
    }
}

#[tokio::test]
async fn body_limit_and_unsupported_bodies() {
    let addr = server(ServerConfig::default().with_max_body_size(10)).await;
    let cases: [(&[u8], &str); 3] = [
        (b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\n", "HTTP/1.1 413 "),
        (b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n", "HTTP/1.1 400 "),
        (b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: ten\r\n\r\n", "HTTP/1.1 400 "),
    ];
    for (request, status) in cases {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(request).await.unwrap();
        let (head, body) = response(&mut s).await;
        assert!(head.starts_with(status), "{head}");
        if status.contains("413") {
            assert_eq!(body, b"request body of 11 bytes over the limit of 10\n");
        }
        assert!(closed(&mut s).await);
    }
    // Exactly at the limit is fine.
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n0123456789").await.unwrap();
    assert_eq!(response(&mut s).await.1, b"0123456789");
}

#[tokio::test]
async fn idle_keep_alive_connections_are_closed_and_slow_heads_get_408() {
    let config = tether::Config::default().with_handshake_timeout(Duration::from_millis(200));
    let addr = server(ServerConfig::default().with_config(config)).await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    response(&mut s).await;
    // Idle after a response: closed quietly.
    assert!(closed(&mut s).await);
    // Half a head: 408.
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHo").await.unwrap();
    assert!(response(&mut s).await.0.starts_with("HTTP/1.1 408 "));
}

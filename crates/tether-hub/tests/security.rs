//! The hub against the attacks WebSocket servers have shipped fixes for: cross-site
//! WebSocket hijacking, idle connections that hold a place forever, and injection into the
//! headers the hub writes. Each test names the limit it proves and the default that sets it.

mod common;

use common::*;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A raw upgrade request with a session cookie and `origin`; the status line of the answer.
async fn handshake_status(addr: std::net::SocketAddr, origin: &str) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "GET /ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Protocol: tether.json\r\nCookie: session=the-victims-session\r\n\
         Origin: {origin}\r\n\r\n"
    );
    s.write_all(request.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n") && s.read(&mut b).await.unwrap() == 1 {
        head.push(b[0]);
    }
    String::from_utf8_lossy(&head).trim().to_owned()
}

/// Cross-site WebSocket hijacking: a page on another site opens a WebSocket to the hub in
/// the victim's browser, which adds the victim's cookies. The origin policy (default: the
/// page's own host, `--allow-origin` to widen) refuses it with 403 before any hub code runs;
/// the hub's own page, and non-browser clients (no Origin), get in.
#[tokio::test]
async fn cross_site_websocket_hijacking_with_cookies_is_refused() {
    let hub = start().await;
    let addr = hub.addr;
    assert!(handshake_status(addr, "https://evil.example").await.starts_with("HTTP/1.1 403 "));
    assert!(handshake_status(addr, "null").await.starts_with("HTTP/1.1 403 "));
    // A look-alike host with our host as a prefix or suffix is another origin.
    assert!(handshake_status(addr, &format!("http://{addr}.evil.example"))
        .await
        .starts_with("HTTP/1.1 403 "));
    assert!(handshake_status(addr, &format!("http://evil.example/{addr}"))
        .await
        .starts_with("HTTP/1.1 403 "));
    assert!(handshake_status(addr, &format!("http://{addr}")).await.starts_with("HTTP/1.1 101 "));
    // An allow list lets exactly its origins in.
    let listed = start_with(namespaces(), |o| {
        o.server.origin = tether::OriginPolicy::AllowList(vec!["https://app.example".into()]);
    })
    .await;
    assert!(handshake_status(listed.addr, "https://app.example").await.starts_with("HTTP/1.1 101 "));
    assert!(handshake_status(listed.addr, "https://app.example.evil").await.starts_with("HTTP/1.1 403 "));
    assert!(handshake_status(listed.addr, &format!("http://{}", listed.addr))
        .await
        .starts_with("HTTP/1.1 403 "));
}

/// Slowloris on an upgraded connection: a client that completes the handshake and then
/// sends nothing, not even a pong, is closed with 1001 after the idle timeout (default 60 s,
/// with pings every 25 s that a live client answers; 600 ms and 200 ms here).
#[tokio::test]
async fn an_upgraded_connection_that_stays_silent_is_closed_with_1001() {
    let defaults = tether_hub::ServeOptions::default().server.config;
    assert_eq!(defaults.ping_interval, Some(Duration::from_secs(25)));
    assert_eq!(defaults.idle_timeout, Some(Duration::from_secs(60)));
    let hub = start_with(namespaces(), |o| {
        o.server.config = o
            .server
            .config
            .clone()
            .with_ping_interval(Some(Duration::from_millis(200)))
            .with_idle_timeout(Some(Duration::from_millis(600)));
    })
    .await;
    let mut s = TcpStream::connect(hub.addr).await.unwrap();
    let request = format!(
        "GET /ws HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        hub.addr
    );
    s.write_all(request.as_bytes()).await.unwrap();
    let mut wire = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut wire)).await.unwrap().unwrap();
    let head_end = wire.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    assert!(wire.starts_with(b"HTTP/1.1 101 "));
    // Frames: pings (0x89) first, then the close (0x88) with 1001.
    let frames = &wire[head_end..];
    let mut at = 0;
    let (mut pings, mut close) = (0, None);
    while at + 2 <= frames.len() {
        let (op, len) = (frames[at] & 0x0f, usize::from(frames[at + 1] & 0x7f));
        match op {
            0x9 => pings += 1,
            0x8 => close = Some(u16::from_be_bytes([frames[at + 2], frames[at + 3]])),
            _ => {}
        }
        at += 2 + len;
    }
    assert!(pings >= 1, "no ping before the close");
    assert_eq!(close, Some(1001));
}

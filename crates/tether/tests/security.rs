//! Regression tests for security findings (issue 18) and for the classes of vulnerability
//! WebSocket servers have shipped. Each test names the limit it proves and the default that
//! sets it; docs/OPERATIONS.md ("Security") lists them.

use futures_util::{SinkExt, StreamExt};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tether::{
    ClientConfig, Config, HttpRequest, HttpResponse, Listener, ListenerStats, Message, ServerConfig,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const UPGRADE: &str = "Upgrade: websocket\r\nConnection: Upgrade\r\n\
    Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n";

async fn route(req: HttpRequest) -> HttpResponse {
    match req.head.path.as_str() {
        "/" => HttpResponse::new(200, "text/html", "<p>page</p>"),
        // A route that builds a header from request input, as a redirect would.
        "/go" => HttpResponse::text(302, "moved").with_header(
            "Location",
            format!("/to?{}", req.head.query.unwrap_or_default().replace("%0A", "\n")),
        ),
        _ => HttpResponse::text(404, "not found"),
    }
}

/// A server that serves `route` and echoes WebSocket messages on any path.
async fn server(config: ServerConfig) -> (SocketAddr, Arc<ListenerStats>) {
    let listener = Listener::bind("127.0.0.1:0", config).await.unwrap();
    let (addr, stats) = (listener.local_addr().unwrap(), listener.stats());
    tokio::spawn(async move {
        while let Ok(incoming) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(Some((mut ws, _))) = incoming.serve(|_| Ok(()), route).await else { return };
                while let Some(Ok(msg)) = ws.next().await {
                    if msg.is_data() && ws.send(msg).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    (addr, stats)
}

/// Everything the server sends until it closes (or 10 s pass).
async fn read_all(s: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
    out
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// CWE-93: CR/LF in the URL or in a header given to the client never reaches the wire; the
/// caller gets an error and the server sees no connection at all.
#[tokio::test]
async fn client_header_injection_is_an_error_before_anything_is_sent() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let base = ClientConfig::default().with_proxy(tether::Proxy::None);
    let cases = [
        (format!("ws://{addr}/a\r\nX-Injected: 1"), base.clone()),
        (format!("ws://{addr}/?q=1\r\nX-Injected: 1"), base.clone()),
        (format!("ws://{addr}/a b"), base.clone()),
        (format!("ws://{addr}/"), base.clone().with_header("X-User", "ann\r\nX-Injected: 1")),
        (format!("ws://{addr}/"), base.clone().with_header("X-User\r\nX-Injected", "1")),
        (format!("ws://{addr}/"), base.clone().with_header("Host", "other.example")),
        (format!("ws://{addr}/"), base.clone().with_origin("http://a\nX-Injected: 1")),
        (format!("ws://{addr}/"), base.clone().with_protocol("chat\r\nX-Injected: 1")),
    ];
    for (url, config) in cases {
        let err = tether::connect_with(&url, &config).await.unwrap_err();
        assert!(matches!(err, tether::Error::Handshake(_)), "{url:?}: {err}");
    }
    let accepted = tokio::time::timeout(Duration::from_millis(300), listener.accept()).await;
    assert!(accepted.is_err(), "a connection reached the server");
}

/// CWE-113: a route answering with a header that holds a line break gets 500 instead of a
/// split response.
#[tokio::test]
async fn a_route_header_with_a_line_break_is_answered_500_not_split() {
    let (addr, _) = server(ServerConfig::default()).await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /go?x%0ASet-Cookie:%20evil=1 HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let answer = text(&read_all(&mut s).await);
    assert!(answer.starts_with("HTTP/1.1 500 "), "{answer}");
    assert!(!answer.to_ascii_lowercase().contains("set-cookie"), "{answer}");
    // The same route without the line break works.
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /go?x HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n").await.unwrap();
    assert!(text(&read_all(&mut s).await).starts_with("HTTP/1.1 302 "));
}

/// Lingering close: a client still sending an 8 MiB header line when the server refuses it
/// (limit: `handshake.max_bytes`, 16 KiB) finishes sending and reads the 431, instead of a
/// broken pipe or a reset. The server drains up to `linger_bytes` (16 MiB) for up to
/// `linger_time` (2 s). (On loopback here the socket buffers absorb up to about 3 MiB, so
/// a smaller request would pass even without lingering.)
#[tokio::test]
async fn an_oversized_request_head_still_gets_its_431() {
    let (addr, _) = server(ServerConfig::default()).await;
    let head = format!("GET / HTTP/1.1\r\nHost: h\r\nX-Big: {}\r\n\r\n", "a".repeat(8 << 20));
    let answer = send_then_read(addr, head.into_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 431 "), "{answer:?}");
}

/// The same for an 8 MiB body over `max_body_size` (default 1 MiB) that is being sent: 413.
#[tokio::test]
async fn an_oversized_body_still_gets_its_413() {
    let (addr, _) = server(ServerConfig::default()).await;
    let body = vec![b'x'; 8 << 20];
    let mut request =
        format!("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
    request.extend_from_slice(&body);
    let answer = send_then_read(addr, request).await;
    assert!(answer.starts_with("HTTP/1.1 413 "), "{answer:?}");
}

/// Sends the whole of `request`, then reads the answer, as curl and most clients do; the
/// answer, or the error that ended the exchange.
async fn send_then_read(addr: SocketAddr, request: Vec<u8>) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let exchange = async {
        s.write_all(&request).await.map_err(|e| format!("write failed: {e}"))?;
        let mut answer = Vec::new();
        s.read_to_end(&mut answer).await.map_err(|e| format!("read failed: {e}"))?;
        Ok::<_, String>(text(&answer))
    };
    match tokio::time::timeout(Duration::from_secs(10), exchange).await {
        Ok(Ok(answer)) | Ok(Err(answer)) => answer,
        Err(_) => "timed out".into(),
    }
}

/// RFC 6455 4.2.1: a GET with `Sec-WebSocket-Key` or `Sec-WebSocket-Version` is a handshake
/// attempt; without `Upgrade: websocket` it is refused (426, naming version 13), not
/// answered with the page at its path.
#[tokio::test]
async fn a_handshake_without_upgrade_is_refused_not_served_as_a_page() {
    let (addr, _) = server(ServerConfig::default()).await;
    let no_upgrade = UPGRADE.replace("Upgrade: websocket\r\n", "");
    let cases = [
        (format!("GET / HTTP/1.1\r\nHost: h\r\n{no_upgrade}\r\n"), "HTTP/1.1 426 "),
        (format!("GET / HTTP/1.1\r\nHost: h\r\n{}\r\n", UPGRADE.replace(": 13", ": 8")), "HTTP/1.1 426 "),
        ("GET / HTTP/1.1\r\nHost: h\r\nSec-WebSocket-Version: 13\r\n\r\n".to_owned(), "HTTP/1.1 426 "),
        ("GET / HTTP/1.1\r\nHost: h\r\nSec-WebSocket-Key: x\r\n\r\n".to_owned(), "HTTP/1.1 426 "),
        (
            format!(
                "GET / HTTP/1.1\r\nHost: h\r\n{}\r\n",
                UPGRADE.replace("dGhlIHNhbXBsZSBub25jZQ==", "short")
            ),
            "HTTP/1.1 400 ",
        ),
    ];
    for (request, status) in cases {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(request.as_bytes()).await.unwrap();
        let answer = text(&read_all(&mut s).await);
        assert!(answer.starts_with(status), "{request:?} -> {answer}");
        assert!(!answer.contains("<p>page</p>"), "{answer}");
        if status.contains("426") {
            assert!(answer.contains("Sec-WebSocket-Version: 13\r\n"), "{answer}");
        }
    }
    // Without those headers it is a page request.
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n").await.unwrap();
    assert!(text(&read_all(&mut s).await).contains("<p>page</p>"));
}

/// Header count: more than `handshake.max_headers` (64) lines get 431.
#[tokio::test]
async fn more_headers_than_the_limit_get_431() {
    let (addr, _) = server(ServerConfig::default()).await;
    let many: String = (0..65).map(|i| format!("X-{i}: v\r\n")).collect();
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET / HTTP/1.1\r\nHost: h\r\n{many}\r\n").as_bytes()).await.unwrap();
    assert!(text(&read_all(&mut s).await).starts_with("HTTP/1.1 431 "));
}

/// Header parsing cost: a head that trickles in one byte per write is still handled (it is
/// parsed once whole; the linear cost itself is proved in tether-proto's
/// `head_end_search_is_linear_for_a_head_sent_byte_by_byte`).
#[tokio::test]
async fn a_head_sent_one_byte_at_a_time_is_upgraded() {
    let (addr, _) = server(ServerConfig::default()).await;
    let filler: String = (0..40).map(|i| format!("X-Filler-{i}: {}\r\n", "a".repeat(40))).collect();
    let head = format!("GET /ws HTTP/1.1\r\nHost: h\r\n{UPGRADE}{filler}\r\n");
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.set_nodelay(true).unwrap();
    for b in head.as_bytes() {
        s.write_all(&[*b]).await.unwrap();
    }
    let mut answer = vec![0u8; 12];
    s.read_exact(&mut answer).await.unwrap();
    assert_eq!(&answer, b"HTTP/1.1 101");
}

/// Frames after a raw handshake: what the server sends back until it closes.
async fn upgraded_raw(addr: SocketAddr, config_note: &str) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET /ws HTTP/1.1\r\nHost: h\r\n{UPGRADE}\r\n").as_bytes()).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut b = [0u8; 1];
        assert_eq!(s.read(&mut b).await.unwrap(), 1, "{config_note}");
        head.push(b[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 101"), "{}", text(&head));
    s
}

/// The close code of the first close frame in `wire` (unmasked server frames).
fn close_code(wire: &[u8]) -> Option<u16> {
    let mut at = 0;
    while at + 2 <= wire.len() {
        let (op, len7) = (wire[at] & 0x0f, (wire[at + 1] & 0x7f) as usize);
        let (len, hdr) = match len7 {
            126 => (u16::from_be_bytes([wire[at + 2], wire[at + 3]]) as usize, 4),
            127 => return None,
            n => (n, 2),
        };
        if op == 0x8 && len >= 2 {
            return Some(u16::from_be_bytes([wire[at + hdr], wire[at + hdr + 1]]));
        }
        at += hdr + len;
    }
    None
}

/// Unbounded frame size and 64-bit length overflow: a frame header announcing 2^62 bytes
/// is closed with 1009 (limit `max_frame_size`, 16 MiB) before any payload is read or
/// allocated, and one with the length's top bit set (RFC 6455 5.2) with 1002.
#[tokio::test]
async fn enormous_and_overflowing_frame_lengths_are_closed_at_the_header() {
    let (addr, _) = server(ServerConfig::default()).await;
    for (len, code) in [(1u64 << 62, 1009), (u64::MAX, 1002), ((16 << 20) + 1, 1009)] {
        let mut s = upgraded_raw(addr, "frame length").await;
        let mut frame = vec![0x82, 0x80 | 127];
        frame.extend_from_slice(&len.to_be_bytes());
        frame.extend_from_slice(&[1, 2, 3, 4]);
        s.write_all(&frame).await.unwrap();
        assert_eq!(close_code(&read_all(&mut s).await), Some(code), "length {len}");
    }
}

/// Unbounded message size: fragments that each fit but together pass `max_message_size`
/// (default 64 MiB; 1 KiB here) are closed with 1009 as soon as the sum passes it.
#[tokio::test]
async fn a_message_growing_past_the_limit_in_fragments_is_closed_with_1009() {
    let config = Config::default().with_max_message_size(1024);
    let (addr, _) = server(ServerConfig::default().with_config(config)).await;
    let mut s = upgraded_raw(addr, "fragments").await;
    for i in 0..20 {
        let op = if i == 0 { 0x02 } else { 0x00 };
        let mut frame = vec![op, 0x80 | 100, 0, 0, 0, 0];
        frame.extend_from_slice(&[7u8; 100]);
        if s.write_all(&frame).await.is_err() {
            break;
        }
    }
    assert_eq!(close_code(&read_all(&mut s).await), Some(1009));
}

/// Connection limit: beyond `max_connections` (default: the open-files limit less 1088) a
/// new connection is answered 503 with `Retry-After` and closed; the open ones keep
/// working, and a place that frees up is used again.
#[tokio::test]
async fn connections_over_the_limit_get_503_and_the_open_ones_keep_working() {
    let (addr, stats) = server(ServerConfig::default().with_max_connections(3)).await;
    let url = format!("ws://{addr}/ws");
    let config = ClientConfig::default().with_proxy(tether::Proxy::None);
    let mut open = Vec::new();
    for _ in 0..3 {
        open.push(tether::connect_with(&url, &config).await.unwrap().0);
    }
    for _ in 0..10 {
        let err = tether::connect_with(&url, &config).await.unwrap_err().to_string();
        assert!(err.contains("503"), "{err}");
    }
    assert_eq!(stats.refused_busy(), 10);
    for ws in &mut open {
        ws.send(Message::text("still here")).await.unwrap();
        assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("still here"));
    }
    open.pop().unwrap().close().await.unwrap();
    // The freed place is taken again once the server has seen the close.
    let mut again = None;
    for _ in 0..100 {
        match tether::connect_with(&url, &config).await {
            Ok((ws, _)) => {
                again = Some(ws);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
    assert!(again.is_some(), "no place freed after a close");
    assert_eq!(stats.connections(), 3);
}

/// A flood of half-open (silent) connections: beyond `max_handshakes` (default 1024; 20
/// here) they are closed at once, never more than that many are held, upgraded
/// connections keep working, and the held ones are answered 408 after
/// `handshake_timeout` (default 10 s; 1 s here), after which new clients get in.
#[tokio::test]
async fn a_flood_of_silent_connections_is_bounded_by_max_handshakes() {
    let config = Config::default().with_handshake_timeout(Duration::from_secs(1));
    let server_config = ServerConfig::default().with_config(config).with_max_handshakes(20);
    let (addr, stats) = server(server_config).await;
    let client = ClientConfig::default().with_proxy(tether::Proxy::None);
    let (mut ws, _) = tether::connect_with(&format!("ws://{addr}/ws"), &client).await.unwrap();
    let mut silent = Vec::new();
    for _ in 0..300 {
        silent.push(TcpStream::connect(addr).await.unwrap());
    }
    // Wait until the listener has taken all 300 from the backlog.
    for _ in 0..200 {
        if stats.dropped() + stats.handshakes() as u64 >= 300 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(stats.handshakes() <= 20, "{} handshakes held", stats.handshakes());
    assert!(stats.dropped() >= 280, "{} dropped", stats.dropped());
    ws.send(Message::text("during the flood")).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("during the flood"));
    // The held ones get 408 after the handshake timeout, the others were closed.
    let mut timed_out = 0;
    for mut s in silent {
        if text(&read_all(&mut s).await).starts_with("HTTP/1.1 408 ") {
            timed_out += 1;
        }
    }
    assert!((1..=20).contains(&timed_out), "{timed_out} answered 408");
    let (mut late, _) = tether::connect_with(&format!("ws://{addr}/ws"), &client).await.unwrap();
    late.send(Message::text("after")).await.unwrap();
    assert_eq!(late.next().await.unwrap().unwrap(), Message::text("after"));
}

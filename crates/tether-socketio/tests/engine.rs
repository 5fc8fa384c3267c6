//! Engine.IO v4, rule by rule, from the protocol's documentation
//! (github.com/socketio/engine.io-protocol): the handshake, the error answers, polling
//! payloads, heartbeats, the close rules, the upgrade, CORS, and this server's limits.

mod common;

use common::*;
use hyper::{Method, StatusCode};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tether_socketio::engine::packet::{Data, Frame};
use tether_socketio::engine::{Cors, Engine, EngineConfig};

const BASE: &str = "/engine.io/";

fn config() -> EngineConfig {
    let mut c = EngineConfig::default();
    c.ping_interval = Duration::from_millis(300);
    c.ping_timeout = Duration::from_millis(200);
    c
}

/// An echo server (every message sent back) with `config`.
async fn server(config: EngineConfig) -> (SocketAddr, Arc<Engine>) {
    let engine = Engine::new(config, |mut conn| {
        tokio::spawn(async move {
            while let Some(data) = conn.messages.recv().await {
                let frame = match data {
                    Data::Text(t) if t.as_str() == "flood" => {
                        // Sends until the session is closed for going over max_buffered.
                        let mut n = 0;
                        while conn.socket.send_text(&"x".repeat(1000)) {
                            n += 1;
                            assert!(n < 100_000, "never closed");
                        }
                        continue;
                    }
                    Data::Text(t) => Frame::message(&t),
                    Data::Binary(b) => Frame::Binary(b),
                };
                if !conn.socket.send(&[frame]) {
                    break;
                }
            }
        });
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(tether_socketio::serve_engine(listener, BASE, engine.clone(), std::future::pending()));
    (addr, engine)
}

fn q(sid: &str) -> String {
    format!("{BASE}?EIO=4&transport=polling&sid={sid}")
}

#[tokio::test]
async fn polling_handshake_has_the_five_fields() {
    let (addr, _) = server(config()).await;
    let a = get(addr, &format!("{BASE}?EIO=4&transport=polling")).await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.headers["content-type"], "text/plain; charset=UTF-8");
    let open: serde_json::Value = serde_json::from_str(a.body.strip_prefix('0').unwrap()).unwrap();
    let mut keys: Vec<&str> = open.as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["maxPayload", "pingInterval", "pingTimeout", "sid", "upgrades"]);
    assert_eq!(open["upgrades"], serde_json::json!(["websocket"]));
    assert_eq!((open["pingInterval"].as_u64(), open["pingTimeout"].as_u64()), (Some(300), Some(200)));
    assert_eq!(open["maxPayload"].as_u64(), Some(1_000_000));
}

#[tokio::test]
async fn bad_requests_get_400_with_the_protocol_codes() {
    let (addr, _) = server(config()).await;
    let cases = [
        (Method::GET, format!("{BASE}?transport=polling"), 5),
        (Method::GET, format!("{BASE}?EIO=abc&transport=polling"), 5),
        (Method::GET, format!("{BASE}?EIO=3&transport=polling"), 5),
        (Method::GET, format!("{BASE}?EIO=4"), 0),
        (Method::GET, format!("{BASE}?EIO=4&transport=abc"), 0),
        (Method::POST, format!("{BASE}?EIO=4&transport=polling"), 2),
        (Method::PUT, format!("{BASE}?EIO=4&transport=polling"), 2),
        (Method::GET, format!("{BASE}?EIO=4&transport=polling&sid=nope"), 1),
        (Method::POST, format!("{BASE}?EIO=4&transport=polling&sid=nope"), 1),
        (Method::GET, format!("{BASE}?EIO=4&transport=websocket"), 3),
    ];
    for (method, path, code) in cases {
        let a = request(addr, method.clone(), &path, "", &[]).await;
        assert_eq!((a.status, a.code()), (StatusCode::BAD_REQUEST, code), "{method} {path}: {}", a.body);
    }
}

#[tokio::test]
async fn polling_payloads_join_packets_and_carry_binary_as_base64() {
    let (addr, _) = server(config()).await;
    let sid = open_polling(addr, BASE).await;
    let a = post(addr, &q(&sid), "4hello\u{1e}4é\u{1e}bAQIDBA==").await;
    assert_eq!((a.status, a.body.as_str()), (StatusCode::OK, "ok"));
    assert_eq!(a.headers["content-type"], "text/html");
    assert_eq!(get(addr, &q(&sid)).await.body, "4hello\u{1e}4é\u{1e}bAQIDBA==");
}

#[tokio::test]
async fn a_bad_packet_closes_the_session() {
    let (addr, _) = server(config()).await;
    let sid = open_polling(addr, BASE).await;
    assert_eq!(post(addr, &q(&sid), "abc").await.status, StatusCode::BAD_REQUEST);
    assert_eq!(get(addr, &q(&sid)).await.status, StatusCode::BAD_REQUEST);
    let sid = open_polling(addr, BASE).await;
    assert_eq!(post(addr, &q(&sid), "b!!!").await.status, StatusCode::BAD_REQUEST, "bad base64");
    assert_eq!(get(addr, &q(&sid)).await.status, StatusCode::BAD_REQUEST);
    let mut ws = ws(addr, &format!("{BASE}?EIO=4&transport=websocket")).await;
    assert!(next(&mut ws, 2).await.unwrap().starts_with('0'));
    send(&mut ws, "abc").await;
    assert!(closes(&mut ws, 2).await);
}

#[tokio::test]
async fn overlapping_polls() {
    let (addr, _) = server(config()).await;
    let sid = open_polling(addr, BASE).await;
    let path = q(&sid);
    let p = path.clone();
    let first = tokio::spawn(async move { get(addr, &p).await });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let second = get(addr, &path).await;
    assert!(second.status == StatusCode::BAD_REQUEST, "{}", second.status);
    let first = first.await.unwrap();
    assert_eq!((first.status, first.body.as_str()), (StatusCode::OK, "1"), "the pending poll gets close");
    assert_eq!(get(addr, &path).await.status, StatusCode::BAD_REQUEST, "and the session is gone");
}

#[tokio::test]
async fn the_server_pings_and_closes_without_a_pong() {
    let (addr, engine) = server(config()).await;
    let sid = open_polling(addr, BASE).await;
    for _ in 0..3 {
        assert_eq!(get(addr, &q(&sid)).await.body, "2");
        assert_eq!(post(addr, &q(&sid), "3").await.body, "ok");
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(get(addr, &q(&sid)).await.status, StatusCode::BAD_REQUEST, "no pong: closed");
    assert_eq!(engine.session_count(), 0);

    let mut ws = ws(addr, &format!("{BASE}?EIO=4&transport=websocket")).await;
    assert!(next(&mut ws, 2).await.unwrap().starts_with('0'));
    assert_eq!(next(&mut ws, 2).await.as_deref(), Some("2"));
    send(&mut ws, "3").await;
    assert_eq!(next(&mut ws, 2).await.as_deref(), Some("2"));
    assert!(closes(&mut ws, 2).await, "no pong: closed");
}

#[tokio::test]
async fn a_client_close_ends_a_pending_poll_with_noop() {
    let (addr, _) = server(config()).await;
    let sid = open_polling(addr, BASE).await;
    let path = q(&sid);
    let p = path.clone();
    let pending = tokio::spawn(async move { get(addr, &p).await });
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(post(addr, &path, "1").await.status, StatusCode::OK);
    assert_eq!(pending.await.unwrap().body, "6");
    assert_eq!(get(addr, &path).await.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn websocket_only_sessions_offer_no_upgrade_and_echo_binary() {
    let (addr, _) = server(config()).await;
    let mut ws = ws(addr, &format!("{BASE}?EIO=4&transport=websocket")).await;
    let open = next(&mut ws, 2).await.unwrap();
    let open: serde_json::Value = serde_json::from_str(open.strip_prefix('0').unwrap()).unwrap();
    assert_eq!(open["upgrades"], serde_json::json!([]));
    send(&mut ws, "4hello").await;
    assert_eq!(next_data(&mut ws, 2).await.as_deref(), Some("4hello"));
    futures_util::SinkExt::send(&mut ws, tether::Message::binary(vec![1u8, 2, 3])).await.unwrap();
    assert_eq!(next_data(&mut ws, 2).await.as_deref(), Some("bin:010203"));
    send(&mut ws, "1").await;
    assert!(closes(&mut ws, 2).await, "a close packet ends it");
}

#[tokio::test]
async fn upgrade_from_polling_to_websocket() {
    let (addr, _) = server(config()).await;
    let sid = open_polling(addr, BASE).await;
    // Something is waiting for the next poll: it must not be lost by the upgrade.
    assert_eq!(post(addr, &q(&sid), "4before").await.body, "ok");
    let mut socket = ws(addr, &format!("{BASE}?EIO=4&transport=websocket&sid={sid}")).await;
    send(&mut socket, "2probe").await;
    assert_eq!(next(&mut socket, 2).await.as_deref(), Some("3probe"));
    assert_eq!(get(addr, &q(&sid)).await.body, "4before", "queued packets go first");
    assert_eq!(get(addr, &q(&sid)).await.body, "6", "then noop during the upgrade");
    let path = q(&sid);
    let pending = tokio::spawn(async move { get(addr, &path).await });
    tokio::time::sleep(Duration::from_millis(50)).await;
    send(&mut socket, "5").await;
    assert_eq!(pending.await.unwrap().body, "6", "a poll pending at the upgrade ends with noop");
    send(&mut socket, "4hello").await;
    assert_eq!(next_data(&mut socket, 2).await.as_deref(), Some("4hello"));
    assert_eq!(get(addr, &q(&sid)).await.status, StatusCode::BAD_REQUEST, "polling is over");
    assert_eq!(post(addr, &q(&sid), "4x").await.status, StatusCode::BAD_REQUEST);
    let mut second = ws(addr, &format!("{BASE}?EIO=4&transport=websocket&sid={sid}")).await;
    assert!(closes(&mut second, 2).await, "a second WebSocket for the session is closed");
    send(&mut socket, "4still").await;
    assert_eq!(next_data(&mut socket, 2).await.as_deref(), Some("4still"));
}

#[tokio::test]
async fn a_failed_upgrade_leaves_polling_working() {
    let (addr, _) = server(config()).await;
    let sid = open_polling(addr, BASE).await;
    let mut socket = ws(addr, &format!("{BASE}?EIO=4&transport=websocket&sid={sid}")).await;
    send(&mut socket, "4not a probe").await;
    assert!(closes(&mut socket, 2).await);
    assert_eq!(post(addr, &q(&sid), "4x").await.body, "ok");
    assert_eq!(get(addr, &q(&sid)).await.body, "4x");
}

#[tokio::test]
async fn a_payload_over_max_payload_gets_413_and_ends_the_session() {
    let mut c = config();
    c.max_payload = 100;
    let (addr, _) = server(c).await;
    let sid = open_polling(addr, BASE).await;
    assert_eq!(post(addr, &q(&sid), &format!("4{}", "x".repeat(99))).await.body, "ok", "at the limit");
    let a = post(addr, &q(&sid), &format!("4{}", "x".repeat(100))).await;
    assert_eq!(a.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(get(addr, &q(&sid)).await.status, StatusCode::BAD_REQUEST);
    let mut socket = ws(addr, &format!("{BASE}?EIO=4&transport=websocket")).await;
    assert!(next(&mut socket, 2).await.unwrap().contains("\"maxPayload\":100"));
    send(&mut socket, &format!("4{}", "x".repeat(200))).await;
    assert!(closes(&mut socket, 2).await, "a WebSocket message over it: closed");
}

#[tokio::test]
async fn sessions_over_max_sessions_get_503() {
    let mut c = config();
    c.max_sessions = 2;
    let (addr, _) = server(c).await;
    open_polling(addr, BASE).await;
    open_polling(addr, BASE).await;
    let a = get(addr, &format!("{BASE}?EIO=4&transport=polling")).await;
    assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test]
async fn a_session_over_max_buffered_is_closed() {
    let mut c = config();
    c.max_buffered = 50_000;
    c.ping_interval = Duration::from_secs(30);
    let (addr, engine) = server(c).await;
    let sid = open_polling(addr, BASE).await;
    assert_eq!(post(addr, &q(&sid), "4flood").await.body, "ok");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(get(addr, &q(&sid)).await.status, StatusCode::BAD_REQUEST, "closed");
    assert_eq!(engine.session_count(), 0);
}

#[tokio::test]
async fn cors_echoes_an_allowed_origin_with_credentials() {
    let mut c = config();
    c.cors = Cors::Origins(vec!["http://app.example".to_owned()]);
    let (addr, _) = server(c).await;
    let path = format!("{BASE}?EIO=4&transport=polling");
    let a = request(addr, Method::GET, &path, "", &[("origin", "http://app.example")]).await;
    assert_eq!(a.headers["access-control-allow-origin"], "http://app.example");
    assert_eq!(a.headers["access-control-allow-credentials"], "true");
    let a = request(addr, Method::GET, &path, "", &[("origin", "http://evil.example")]).await;
    assert!(a.headers.get("access-control-allow-origin").is_none());
    let a = request(
        addr,
        Method::OPTIONS,
        &path,
        "",
        &[("origin", "http://app.example"), ("access-control-request-headers", "content-type")],
    )
    .await;
    assert_eq!(a.status, StatusCode::NO_CONTENT);
    assert_eq!(a.headers["access-control-allow-headers"], "content-type");
    assert_eq!(a.headers["access-control-allow-origin"], "http://app.example");

    let (addr, _) = server(config()).await;
    let a = request(addr, Method::GET, &path, "", &[("origin", "http://app.example")]).await;
    assert!(a.headers.get("access-control-allow-origin").is_none(), "no CORS by default");
}

#[tokio::test]
async fn shutdown_closes_every_session() {
    let (addr, engine) = server(config()).await;
    let sid = open_polling(addr, BASE).await;
    let mut socket = ws(addr, &format!("{BASE}?EIO=4&transport=websocket")).await;
    assert!(next(&mut socket, 2).await.is_some());
    assert_eq!(engine.session_count(), 2);
    engine.close_all();
    assert!(closes(&mut socket, 2).await);
    let a = get(addr, &q(&sid)).await;
    assert_eq!((a.status, a.body.as_str()), (StatusCode::OK, "1"), "the next poll gets close");
    assert_eq!(get(addr, &q(&sid)).await.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn a_request_that_goes_away_leaves_the_session_usable() {
    use tokio::io::AsyncWriteExt;
    let (addr, _) = server(config()).await;
    let sid = open_polling(addr, BASE).await;
    // A POST whose client leaves halfway through its body.
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!("POST {} HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n4half", q(&sid));
    s.write_all(head.as_bytes()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    drop(s);
    // A GET that leaves while it waits.
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {} HTTP/1.1\r\nHost: x\r\n\r\n", q(&sid)).as_bytes()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    drop(s);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(post(addr, &q(&sid), "4x").await.body, "ok", "not taken for a second POST");
    assert_eq!(get(addr, &q(&sid)).await.body, "4x", "nor a second GET");
}

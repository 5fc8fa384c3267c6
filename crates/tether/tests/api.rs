//! The async API over loopback TCP: accept/connect, halves, the cloneable sender,
//! backpressure, handshake refusals and the close handshake.

use futures_util::{SinkExt, StreamExt};
use std::time::Duration;
use tether::tether_proto::HandshakeError;
use tether::{
    ClientConfig, CloseCode, CloseFrame, Config, Error, Initiator, Listener, Message, OriginPolicy, Reject,
    ServerConfig,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Starts a server whose connections echo data messages; returns its ws:// URL.
async fn echo_server(config: ServerConfig) -> String {
    let listener = Listener::bind("127.0.0.1:0", config).await.unwrap();
    let url = format!("ws://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok(incoming) = listener.accept().await {
            tokio::spawn(async move {
                let Ok((mut ws, request)) = incoming
                    .upgrade_with(|req| {
                        if req.path == "/forbidden" {
                            Err(Reject::new(403, "no entry"))
                        } else {
                            Ok(())
                        }
                    })
                    .await
                else {
                    return;
                };
                if request.path == "/close-me" {
                    ws.send_close(CloseCode(4001), "server says bye").unwrap();
                }
                while let Some(Ok(msg)) = ws.next().await {
                    if msg.is_data() && ws.send(msg).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    url
}

async fn raw_request(url: &str, request: &str) -> String {
    let addr = url.trim_start_matches("ws://");
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out).await;
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn echo_text_binary_and_one_mebibyte() {
    let url = echo_server(ServerConfig::default()).await;
    let (mut ws, _) = tether::connect(&format!("{url}/echo?x=1")).await.unwrap();
    let big: Vec<u8> = (0..1 << 20).map(|i| (i % 251) as u8).collect();
    for msg in [Message::text("héllo"), Message::binary(vec![0u8, 1, 2, 255]), Message::binary(big)] {
        ws.send(msg.clone()).await.unwrap();
        assert_eq!(ws.next().await.unwrap().unwrap(), msg);
    }
    ws.close().await.unwrap();
    let status = ws.close_status().unwrap();
    assert_eq!((status.code, status.initiator, status.clean), (CloseCode::NORMAL, Initiator::Local, true));
}

#[tokio::test]
async fn ping_is_answered_with_pong() {
    let url = echo_server(ServerConfig::default()).await;
    let (mut ws, _) = tether::connect(&url).await.unwrap();
    ws.send(Message::Ping("are you there".into())).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::Pong("are you there".into()));
}

#[tokio::test]
async fn close_with_code_and_reason_started_by_server() {
    let url = echo_server(ServerConfig::default()).await;
    let (mut ws, _) = tether::connect(&format!("{url}/close-me")).await.unwrap();
    let frame = CloseFrame { code: CloseCode(4001), reason: "server says bye".into() };
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::Close(Some(frame)));
    assert!(ws.next().await.is_none(), "the stream ends after the close");
    let status = ws.close_status().unwrap();
    assert_eq!((status.initiator, status.clean), (Initiator::Remote, true));
    assert!(ws.send(Message::text("late")).await.is_err());
}

#[tokio::test]
async fn split_halves_and_many_senders() {
    let url = echo_server(ServerConfig::default()).await;
    let (ws, _) = tether::connect(&url).await.unwrap();
    let (write, mut read) = ws.split();
    let sender = write.sender();
    let tasks: Vec<_> = (0..8)
        .map(|t| {
            let sender = sender.clone();
            tokio::spawn(async move {
                for i in 0..50 {
                    sender.send(Message::text(format!("{t}:{i}"))).await.unwrap();
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let mut seen = std::collections::HashMap::<u32, u32>::new();
    for _ in 0..400 {
        let Message::Text(t) = read.next().await.unwrap().unwrap() else { panic!() };
        let (task, i) = t.split_once(':').unwrap();
        let (task, i): (u32, u32) = (task.parse().unwrap(), i.parse().unwrap());
        // Each task's messages arrive whole and in its own order.
        let next = seen.entry(task).or_default();
        assert_eq!(*next, i);
        *next += 1;
    }
    assert_eq!(seen.len(), 8);
}

#[tokio::test]
async fn send_waits_when_the_peer_does_not_read() {
    // A server that upgrades and then never reads.
    let listener = Listener::bind("127.0.0.1:0", ServerConfig::default()).await.unwrap();
    let url = format!("ws://{}", listener.local_addr().unwrap());
    let (hold_tx, hold_rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let (_ws, _) = listener.accept().await.unwrap().upgrade().await.unwrap();
        let _ = hold_rx.await;
    });
    let config = ClientConfig::default().with_config(Config::default().with_send_buffer_limit(256 * 1024));
    let (ws, _) = tether::connect_with(&url, &config).await.unwrap();
    let sender = ws.sender();
    let chunk = bytes::Bytes::from(vec![7u8; 64 * 1024]);
    let mut sent = 0usize;
    // Bounded: the kernel buffers a few MiB at most, so this stops long before 4096 sends.
    let blocked = loop {
        match tokio::time::timeout(Duration::from_millis(300), sender.send(Message::Binary(chunk.clone())))
            .await
        {
            Ok(r) => {
                r.unwrap();
                sent += 1;
                assert!(sent < 4096, "send never applied backpressure");
            }
            Err(_) => break true,
        }
    };
    assert!(blocked);
    assert!(sender.buffered_amount() >= 256 * 1024, "buffered {}", sender.buffered_amount());
    drop(hold_tx);
}

#[tokio::test]
async fn subprotocol_follows_server_preference() {
    let url = echo_server(ServerConfig::default().with_protocols(["superchat", "chat"])).await;
    let config = ClientConfig::default().with_protocol("chat").with_protocol("superchat");
    let (ws, resp) = tether::connect_with(&url, &config).await.unwrap();
    assert_eq!(resp.protocol.as_deref(), Some("superchat"));
    assert_eq!(ws.protocol(), Some("superchat"));
    let config = ClientConfig::default().with_protocol("mqtt");
    let (ws, _) = tether::connect_with(&url, &config).await.unwrap();
    assert_eq!(ws.protocol(), None);
}

#[tokio::test]
async fn refusals_are_http_statuses() {
    let url = echo_server(
        ServerConfig::default().with_origin(OriginPolicy::AllowList(vec!["http://good.example".into()])),
    )
    .await;
    let err = tether::connect(&format!("{url}/forbidden")).await.unwrap_err();
    assert!(matches!(err, Error::Handshake(HandshakeError::UnexpectedStatus { status: 403, .. })), "{err}");
    let bad_origin = ClientConfig::default().with_origin("http://evil.example");
    let err = tether::connect_with(&url, &bad_origin).await.unwrap_err();
    assert!(matches!(err, Error::Handshake(HandshakeError::UnexpectedStatus { status: 403, .. })), "{err}");
    let good_origin = ClientConfig::default().with_origin("http://good.example");
    assert!(tether::connect_with(&url, &good_origin).await.is_ok());

    let plain = raw_request(&url, "GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(plain.starts_with("HTTP/1.1 426 Upgrade Required\r\n"), "{plain}");
    let v8 = raw_request(
        &url,
        "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\n\r\n",
    )
    .await;
    assert!(v8.starts_with("HTTP/1.1 426") && v8.contains("Sec-WebSocket-Version: 13\r\n"), "{v8}");
    let post = raw_request(&url, "POST / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(post.starts_with("HTTP/1.1 405"), "{post}");
    let huge = format!("GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n", "a".repeat(20_000));
    assert!(raw_request(&url, &huge).await.starts_with("HTTP/1.1 431"));
}

#[tokio::test]
async fn handshake_timeout_answers_408() {
    let config = Config::default().with_handshake_timeout(Duration::from_millis(200));
    let url = echo_server(ServerConfig::default().with_config(config)).await;
    // Sends half a request, then nothing.
    let reply = raw_request(&url, "GET / HTTP/1.1\r\nHost: x\r\n").await;
    assert!(reply.starts_with("HTTP/1.1 408"), "{reply}");
}

#[tokio::test]
async fn message_limit_closes_with_1009() {
    let config = Config::default().with_max_message_size(1000);
    let url = echo_server(ServerConfig::default().with_config(config)).await;
    let (mut ws, _) = tether::connect(&url).await.unwrap();
    ws.send(Message::binary(vec![0u8; 1001])).await.unwrap();
    let frame = CloseFrame {
        code: CloseCode::MESSAGE_TOO_BIG,
        reason: "message exceeds the limit of 1000 bytes".into(),
    };
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::Close(Some(frame)));
}

#[tokio::test]
async fn idle_timeout_closes_with_1001() {
    let config = Config::default().with_idle_timeout(Some(Duration::from_millis(200)));
    let url = echo_server(ServerConfig::default().with_config(config)).await;
    let (mut ws, _) = tether::connect(&url).await.unwrap();
    let Some(Ok(Message::Close(Some(frame)))) = ws.next().await else { panic!("expected a close") };
    assert_eq!((frame.code, frame.reason.as_str()), (CloseCode::GOING_AWAY, "idle timeout"));
}

#[tokio::test]
async fn keepalive_pings_reach_the_client() {
    let config = Config::default().with_ping_interval(Some(Duration::from_millis(50)));
    let url = echo_server(ServerConfig::default().with_config(config)).await;
    let (mut ws, _) = tether::connect(&url).await.unwrap();
    assert!(matches!(ws.next().await, Some(Ok(Message::Ping(_)))));
}

/// A client connected over an in-memory stream to a server (in a task) that echoes the
/// first message, then reads until the end.
async fn in_memory_echo_once() -> (tether::WebSocket, tokio::task::JoinHandle<()>) {
    let (a, b) = tokio::io::duplex(64 * 1024);
    let server = tokio::spawn(async move {
        let mut ws = tether::accept(b).await.unwrap();
        let msg = ws.next().await.unwrap().unwrap();
        ws.send(msg).await.unwrap();
        while ws.next().await.is_some() {}
    });
    let url = tether::Url::parse("ws://localhost/").unwrap();
    let (ws, _) = tether::client_handshake(a, &url, &ClientConfig::default()).await.unwrap();
    (ws, server)
}

#[tokio::test]
async fn accept_over_an_in_memory_stream() {
    let (mut ws, server) = in_memory_echo_once().await;
    ws.send(Message::text("over duplex")).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("over duplex"));
    ws.close().await.unwrap();
    server.await.unwrap();
}

#[tokio::test]
async fn connect_errors() {
    assert!(matches!(
        tether::connect("http://x").await,
        Err(Error::Handshake(HandshakeError::InvalidUrl(_)))
    ));
    // Port 1 on loopback: nothing listens there.
    let direct = ClientConfig::default().with_proxy(tether::Proxy::None);
    assert!(matches!(
        tether::connect_with("ws://127.0.0.1:1/", &direct).await,
        Err(Error::Connect(e)) if e.kind() == tether::ConnectErrorKind::Refused
    ));
}

#[tokio::test]
async fn server_closes_tcp_even_if_the_app_never_reads() {
    let config = Config::default().with_close_timeout(Duration::from_millis(100));
    let listener = Listener::bind("127.0.0.1:0", ServerConfig::default().with_config(config)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (hold_tx, hold_rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        // Upgrades, then keeps the WebSocket without ever reading it.
        let (_ws, _) = listener.accept().await.unwrap().upgrade().await.unwrap();
        let _ = hold_rx.await;
    });
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(
        b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    .await
    .unwrap();
    // A masked close frame, code 1000, mask key 0 (so the payload is sent as is).
    s.write_all(&[0x88, 0x82, 0, 0, 0, 0, 0x03, 0xe8]).await.unwrap();
    let mut out = Vec::new();
    // read_to_end returns only once the server has closed the socket; the timeout guards a hang.
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await.unwrap().unwrap();
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 101"), "{text}");
    assert!(out.ends_with(&[0x88, 0x02, 0x03, 0xe8]), "the close reply is the last thing sent: {out:x?}");
    drop(hold_tx);
}

/// The async check: it awaits (here a timer, in life a database), adds a header to the 101
/// and picks the subprotocol; or refuses with a status, headers and a JSON body; a check
/// that takes longer than the handshake timeout is answered 503.
#[tokio::test]
async fn an_async_check_sets_headers_picks_the_protocol_or_refuses_with_a_body() {
    use tether::Accept;
    let config = ServerConfig::default()
        .with_protocols(["a", "b"])
        .with_config(Config::default().with_handshake_timeout(Duration::from_millis(300)));
    let listener = Listener::bind("127.0.0.1:0", config).await.unwrap();
    let url = format!("ws://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok(incoming) = listener.accept().await {
            tokio::spawn(async move {
                let Ok((mut ws, _)) = incoming
                    .upgrade_async(|req| {
                        let path = req.path.clone();
                        async move {
                            tokio::time::sleep(Duration::from_millis(20)).await;
                            match path.as_str() {
                                "/slow" => {
                                    tokio::time::sleep(Duration::from_secs(5)).await;
                                    Ok(Accept::new())
                                }
                                "/private" => Err(Reject::new(401, "who are you")
                                    .with_header(
                                        http::header::WWW_AUTHENTICATE,
                                        http::HeaderValue::from_static("Bearer"),
                                    )
                                    .with_body("application/json", r#"{"error":"who are you"}"#)),
                                "/bad-protocol" => Ok(Accept::new().with_protocol("c")),
                                _ => Ok(Accept::new().with_protocol("b").with_header(
                                    http::header::SET_COOKIE,
                                    http::HeaderValue::from_static("session=42; HttpOnly"),
                                )),
                            }
                        }
                    })
                    .await
                else {
                    return;
                };
                while let Some(Ok(msg)) = ws.next().await {
                    if msg.is_data() && ws.send(msg).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    // The server prefers "a", the check picks "b"; the cookie comes with the 101.
    let client =
        ClientConfig::default().with_protocol("a").with_protocol("b").with_proxy(tether::Proxy::None);
    let (mut ws, response) = tether::connect_with(&format!("{url}/"), &client).await.unwrap();
    assert_eq!(response.protocol.as_deref(), Some("b"));
    assert_eq!(response.headers["set-cookie"], "session=42; HttpOnly");
    ws.send(Message::text("in")).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("in"));
    let handshake = |path: &str| {
        format!(
            "GET {path} HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
             Sec-WebSocket-Protocol: a, b\r\n\r\n"
        )
    };
    let answer = raw_request(&url, &handshake("/private")).await;
    assert!(answer.starts_with("HTTP/1.1 401 Unauthorized\r\n"), "{answer}");
    assert!(
        answer.contains("\r\nWWW-Authenticate: Bearer\r\n")
            || answer.contains("\r\nwww-authenticate: Bearer\r\n"),
        "{answer}"
    );
    assert!(answer.contains("Content-Type: application/json\r\n"), "{answer}");
    assert!(answer.ends_with("\r\n\r\n{\"error\":\"who are you\"}"), "{answer}");
    let err = tether::connect_with(&format!("{url}/private"), &client).await.unwrap_err();
    assert!(matches!(err, Error::Handshake(HandshakeError::UnexpectedStatus { status: 401, .. })), "{err}");
    // A subprotocol the client did not offer is the server's mistake: 500, not a 101.
    let answer = raw_request(&url, &handshake("/bad-protocol")).await;
    assert!(answer.starts_with("HTTP/1.1 500 "), "{answer}");
    let answer = raw_request(&url, &handshake("/slow")).await;
    assert!(answer.starts_with("HTTP/1.1 503 "), "{answer}");
}

/// The server answers a close at once even when its application reads the close (on
/// another thread) before the connection's task has gone round its loop: that task used to
/// wait for the next wake-up (the close timeout) before queuing its reply. Many rounds on a
/// two-thread runtime, each bounded well under the close timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_close_reply_does_not_wait_for_the_close_timeout() {
    for round in 0..1_000 {
        let (mut ws, server) = in_memory_echo_once().await;
        ws.send(Message::text("hello")).await.unwrap();
        assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("hello"));
        ws.send_close(CloseCode::NORMAL, "").unwrap();
        let closed =
            tokio::time::timeout(Duration::from_secs(2), async { while ws.next().await.is_some() {} }).await;
        assert!(closed.is_ok(), "round {round}: no close reply within 2 s (the close timeout is 5 s)");
        let status = ws.close_status().expect("closed");
        assert!(status.clean && status.code == CloseCode::NORMAL, "round {round}: {status:?}");
        server.await.unwrap();
    }
}

/// A server that refuses a message while the client is still sending it: it sends its close
/// frame (1009) and closes TCP with the rest unread (a reset). Its URL and task.
async fn refusing_server() -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let mut b = [0u8; 1];
            s.read_exact(&mut b).await.unwrap();
            head.push(b[0]);
        }
        let head = String::from_utf8(head).unwrap();
        let key = head
            .lines()
            .find_map(|l| l.split_once(':').filter(|(k, _)| k.eq_ignore_ascii_case("sec-websocket-key")))
            .expect("a key")
            .1
            .trim();
        let accept = tether::tether_proto::handshake::accept_key(key.as_bytes());
        let answer = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
        );
        s.write_all(answer.as_bytes()).await.unwrap();
        // The client is sending: some of its message has arrived, most has not.
        let mut some = vec![0u8; 4096];
        s.read_exact(&mut some).await.unwrap();
        let reason = b"too big";
        let mut close = vec![0x88, 2 + reason.len() as u8, 0x03, 0xF1];
        close.extend_from_slice(reason);
        s.write_all(&close).await.unwrap();
        // Dropped with unread data: the kernel answers with a reset.
        drop(s);
    });
    (url, server)
}

/// 16 MiB: more than the socket buffers take while the server does not read.
const TOO_BIG: usize = 16 << 20;

/// The client's write fails, and it still reads the close frame that came before the reset:
/// the application sees the server's code, not a broken pipe.
#[tokio::test]
async fn a_close_frame_before_a_reset_is_read_though_the_write_failed() {
    let (url, server) = refusing_server().await;
    let (mut ws, _) = tether::connect(&url).await.unwrap();
    let sent =
        tokio::time::timeout(Duration::from_secs(10), ws.send(Message::binary(vec![0u8; TOO_BIG]))).await;
    assert!(sent.is_ok(), "the send did not end when the peer went away");
    server.await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(10), ws.next()).await.unwrap();
    let frame = CloseFrame { code: CloseCode::MESSAGE_TOO_BIG, reason: "too big".into() };
    assert_eq!(got.unwrap().unwrap(), Message::Close(Some(frame)));
}

/// The same with the connection driven by its caller (`WebSocketStream`): the failed send
/// reports its error, and the next read the close frame.
#[tokio::test]
async fn a_close_frame_before_a_reset_is_read_though_the_write_failed_direct() {
    let (url, server) = refusing_server().await;
    let (mut ws, _) = tether::connect_direct(&url, &ClientConfig::default()).await.unwrap();
    let sent =
        tokio::time::timeout(Duration::from_secs(10), ws.send(Message::binary(vec![0u8; TOO_BIG]))).await;
    let sent = sent.expect("the send did not end when the peer went away");
    server.await.unwrap();
    if let Err(e) = sent {
        assert!(e.to_string().contains("reset") || e.to_string().contains("pipe"), "{e}");
    }
    let got = tokio::time::timeout(Duration::from_secs(10), ws.next()).await.unwrap();
    let frame = CloseFrame { code: CloseCode::MESSAGE_TOO_BIG, reason: "too big".into() };
    assert_eq!(got.unwrap().unwrap(), Message::Close(Some(frame)));
}

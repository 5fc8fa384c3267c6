//! `WebSocketStream`, the WebSocket driven by its caller: echo in both shapes, batching,
//! automatic pongs, the close handshake both ways, timers, bad input, and connecting from a
//! chosen local address.

use futures_util::{SinkExt, StreamExt};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;
use tether::{
    ClientConfig, CloseCode, CloseFrame, Config, Error, Initiator, Listener, Message, ServerConfig,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A server whose connections are `WebSocketStream`s echoing data messages with `feed`;
/// `/close-me` is closed by the server with 4001. Peers' addresses go to the channel.
async fn direct_echo(config: ServerConfig) -> (String, tokio::sync::mpsc::UnboundedReceiver<SocketAddr>) {
    let listener = Listener::bind("127.0.0.1:0", config).await.unwrap();
    let url = format!("ws://{}", listener.local_addr().unwrap());
    let (peers, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok(incoming) = listener.accept().await {
            let _ = peers.send(incoming.remote_addr());
            tokio::spawn(async move {
                let Ok((mut ws, request)) = incoming.upgrade_direct(|_| Ok(())).await else { return };
                if request.path == "/close-me" {
                    let bye = CloseFrame { code: CloseCode(4001), reason: "server says bye".into() };
                    ws.send(Message::Close(Some(bye))).await.unwrap();
                }
                while let Some(Ok(msg)) = ws.next().await {
                    if msg.is_data() && ws.feed(msg).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    (url, rx)
}

#[tokio::test]
async fn echo_batches_and_large_messages_both_shapes() {
    let (url, _) = direct_echo(ServerConfig::default()).await;
    // A direct client.
    let (mut ws, _) = tether::connect_direct(&url, &ClientConfig::default()).await.unwrap();
    let big: Vec<u8> = (0..1 << 20).map(|i| (i % 251) as u8).collect();
    ws.send(Message::binary(big.clone())).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::binary(big));
    // 200 messages fed without a flush go out with the next flush, and come back in order.
    for i in 0..200 {
        ws.feed(Message::text(format!("m{i}"))).await.unwrap();
    }
    assert!(ws.buffered_amount() > 0);
    ws.flush().await.unwrap();
    for i in 0..200 {
        assert_eq!(ws.next().await.unwrap().unwrap(), Message::text(format!("m{i}")));
    }
    assert_eq!(ws.stats().messages_received, 201);
    // Large and small, text and binary, several in flight: large ones are read and written
    // in place, the others through the buffers; all come back whole and in order.
    let sizes = [20_000usize, 10, 70_000, 9_000, 1, 300_000, 16_384, 8_191];
    let sent: Vec<Message> =
        sizes
            .iter()
            .enumerate()
            .map(|(i, n)| {
                if i % 2 == 0 {
                    Message::binary(vec![i as u8; *n])
                } else {
                    Message::text("é".repeat(n / 2))
                }
            })
            .collect();
    for m in &sent {
        ws.feed(m.clone()).await.unwrap();
    }
    ws.flush().await.unwrap();
    for m in &sent {
        assert_eq!(&ws.next().await.unwrap().unwrap(), m);
    }
    ws.close().await.unwrap();
    let closed = ws.close_status().unwrap();
    assert_eq!((closed.code, closed.initiator, closed.clean), (CloseCode::NORMAL, Initiator::Local, true));
    assert!(ws.next().await.is_none());
    // A driver-task client against the same direct server.
    let (mut ws, _) = tether::connect(&url).await.unwrap();
    ws.send(Message::text("hello")).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("hello"));
}

#[tokio::test]
async fn pings_are_answered_while_the_server_reads() {
    let (url, _) = direct_echo(ServerConfig::default()).await;
    let (mut ws, _) = tether::connect_direct(&url, &ClientConfig::default()).await.unwrap();
    ws.send(Message::Ping("are you there".into())).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::Pong("are you there".into()));
}

#[tokio::test]
async fn server_started_close_reaches_a_direct_client() {
    let (url, _) = direct_echo(ServerConfig::default()).await;
    let (mut ws, _) =
        tether::connect_direct(&format!("{url}/close-me"), &ClientConfig::default()).await.unwrap();
    let frame = CloseFrame { code: CloseCode(4001), reason: "server says bye".into() };
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::Close(Some(frame)));
    // The reply goes out and the server closes TCP: the stream ends.
    assert!(tokio::time::timeout(Duration::from_secs(5), ws.next()).await.unwrap().is_none());
    let closed = ws.close_status().unwrap();
    assert_eq!((closed.initiator, closed.clean), (Initiator::Remote, true));
    // Sending after the end is a usage error, not a panic.
    assert!(matches!(ws.send(Message::text("late")).await, Err(Error::Usage(_))));
}

#[tokio::test]
async fn idle_timeout_runs_inside_the_read() {
    let config = ServerConfig::default()
        .with_config(Config::default().with_idle_timeout(Some(Duration::from_millis(200))));
    let (url, _) = direct_echo(config).await;
    let (mut ws, _) = tether::connect_direct(&url, &ClientConfig::default()).await.unwrap();
    let next = tokio::time::timeout(Duration::from_secs(5), ws.next()).await.unwrap();
    let Some(Ok(Message::Close(Some(frame)))) = next else { panic!("expected a close, got {next:?}") };
    assert_eq!(frame.code, CloseCode::GOING_AWAY);
}

#[tokio::test]
async fn unmasked_frame_fails_the_direct_server_with_1002() {
    let (url, _) = direct_echo(ServerConfig::default()).await;
    let addr = url.trim_start_matches("ws://");
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(
        b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    .await
    .unwrap();
    // An unmasked text frame "hi", which a server must refuse (RFC 6455 5.1).
    s.write_all(&[0x81, 0x02, b'h', b'i']).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await.unwrap().unwrap();
    let head_end = out.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    assert!(out.starts_with(b"HTTP/1.1 101"));
    let frame = &out[head_end..];
    assert_eq!(frame[0], 0x88, "a close frame: {frame:?}");
    assert_eq!(u16::from_be_bytes([frame[2], frame[3]]), 1002);
}

#[tokio::test]
async fn connects_from_the_chosen_local_address() {
    let (url, mut peers) = direct_echo(ServerConfig::default()).await;
    let ip: IpAddr = "127.0.0.2".parse().unwrap();
    let (mut ws, _) =
        tether::connect_direct(&url, &ClientConfig::default().with_local_addr(ip)).await.unwrap();
    assert_eq!(peers.recv().await.unwrap().ip(), ip);
    assert_eq!(ws.get_ref().tcp().local_addr().unwrap().ip(), ip);
    ws.send(Message::text("from .2")).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("from .2"));
    // An address of another family cannot reach an IPv4 server: a connect error.
    let v6 = ClientConfig::default().with_local_addr("::1".parse().unwrap());
    assert!(matches!(tether::connect_direct(&url, &v6).await, Err(Error::Connect(_))));
}

//! `SharedWebSocket`: read by one task, written from others straight into the socket;
//! what the socket does not take at once is written by the reading task later, in order,
//! over plain TCP and over TLS (where sends queue and wake the reader); with a `Cork`,
//! fed frames are written once the feeding task yields.

use futures_util::{SinkExt, StreamExt};
mod common;

use common::certs::{ca, leaf};
use std::time::Duration;
use tether::tls::{self, ClientTrust};
use tether::{
    Accepted, ClientConfig, CloseCode, Cork, Initiator, Listener, Message, PreparedFrame, ServerConfig,
};
use tokio::sync::mpsc;

/// A server whose connections are `SharedWebSocket`s. Its reading task echoes data
/// messages; `burst N SIZE` makes another task send N numbered binary frames of SIZE bytes
/// (prepared frames) and then the text `done` (with a cork: feeds them all, `done` too,
/// without yielding); `batch N SIZE` the same frames in one `feed_batch`; `close` makes another task close with 4008. When a connection's
/// stream ends, its close status goes to the channel.
async fn shared_server(
    config: ServerConfig,
    corked: bool,
) -> (u16, mpsc::UnboundedReceiver<Option<tether::Closed>>) {
    let cork = corked.then(Cork::new);
    let listener = Listener::bind("127.0.0.1:0", config).await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (ended, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok(incoming) = listener.accept().await {
            let (ended, cork) = (ended.clone(), cork.clone());
            tokio::spawn(async move {
                let Ok(Accepted::WebSocket(opened, _)) = incoming.upgrade_or_http(|_| Ok(())).await else {
                    return;
                };
                let mut ws = match &cork {
                    Some(cork) => opened.direct().into_corked(cork),
                    None => opened.shared(),
                };
                let sender = ws.sender();
                while let Some(Ok(msg)) = ws.next().await {
                    let text = match &msg {
                        Message::Text(t) => t.as_str().to_owned(),
                        _ => String::new(),
                    };
                    if let Some(args) = text.strip_prefix("burst ") {
                        let mut args = args.split(' ').map(|a| a.parse::<usize>().unwrap());
                        let (n, size) = (args.next().unwrap(), args.next().unwrap());
                        let sender = sender.clone();
                        tokio::spawn(async move {
                            for i in 0..n {
                                let mut payload = vec![(i % 251) as u8; size];
                                payload[..4].copy_from_slice(&(i as u32).to_be_bytes());
                                let frame = PreparedFrame::binary(&payload);
                                if corked {
                                    sender.feed_prepared(&frame).unwrap();
                                } else {
                                    sender.send_prepared(&frame).unwrap();
                                }
                            }
                            if corked {
                                sender.feed_prepared(&PreparedFrame::text("done")).unwrap();
                            } else {
                                sender.start_send(Message::text("done")).unwrap();
                            }
                        });
                    } else if let Some(args) = text.strip_prefix("batch ") {
                        // The same frames in one `feed_batch`, `done` in a second one; the
                        // batch sees each frame's bytes join what is queued.
                        let mut args = args.split(' ').map(|a| a.parse::<usize>().unwrap());
                        let (n, size) = (args.next().unwrap(), args.next().unwrap());
                        let sender = sender.clone();
                        tokio::spawn(async move {
                            sender.feed_batch(|b| {
                                for i in 0..n {
                                    let mut payload = vec![(i % 251) as u8; size];
                                    payload[..4].copy_from_slice(&(i as u32).to_be_bytes());
                                    let frame = PreparedFrame::binary(&payload);
                                    let before = b.buffered_amount();
                                    b.prepared(&frame).unwrap();
                                    assert_eq!(b.buffered_amount(), before + frame.wire().len());
                                }
                            });
                            sender.feed_batch(|b| b.prepared(&PreparedFrame::text("done")).unwrap());
                        });
                    } else if text == "close" {
                        let sender = sender.clone();
                        tokio::spawn(
                            async move { sender.send_close(CloseCode(4008), "slow consumer").unwrap() },
                        );
                    } else if msg.is_data() {
                        sender.send(msg).await.unwrap();
                    }
                }
                let _ = ended.send(sender.close_status());
            });
        }
    });
    (port, rx)
}

/// Reads a burst of `n` frames of `size` bytes and its `done`, checking order and content;
/// each within 10 s (a write left queued with nobody to write it stalls forever).
async fn read_burst<S>(ws: &mut S, n: usize, size: usize)
where
    S: futures_util::Stream<Item = Result<Message, tether::Error>> + Unpin,
{
    for i in 0..n {
        let next = tokio::time::timeout(Duration::from_secs(10), ws.next()).await;
        let Ok(Some(Ok(Message::Binary(b)))) = next else { panic!("frame {i} missing") };
        assert_eq!(b.len(), size);
        assert_eq!(u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize, i, "out of order");
        assert!(b[4..].iter().all(|&x| x == (i % 251) as u8));
    }
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("done"));
}

#[tokio::test]
async fn sends_from_another_task_arrive_in_order_with_the_replies() {
    let (port, _) = shared_server(ServerConfig::default(), false).await;
    let url = format!("ws://127.0.0.1:{port}/");
    let (mut ws, _) = tether::connect(&url).await.unwrap();
    ws.send(Message::text("hello")).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("hello"));
    ws.send(Message::text("burst 2000 100")).await.unwrap();
    read_burst(&mut ws, 2000, 100).await;
    // A ping is answered by the reading task.
    ws.send(Message::Ping("p".into())).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::Pong("p".into()));
    ws.close().await.unwrap();
}

#[tokio::test]
async fn what_the_socket_does_not_take_is_written_once_the_peer_reads() {
    let (port, _) = shared_server(ServerConfig::default(), false).await;
    let (mut ws, _) =
        tether::connect_direct(&format!("ws://127.0.0.1:{port}/"), &ClientConfig::default()).await.unwrap();
    // 16 MiB: far more than the socket buffers hold while this client does not read.
    ws.send(Message::text("burst 256 65536")).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    read_burst(&mut ws, 256, 65536).await;
    // The same with small frames (copied into one buffer per write, not written in place):
    // the socket takes part of a write, and the rest must follow it whole and in order.
    ws.send(Message::text("burst 16384 1000")).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    read_burst(&mut ws, 16384, 1000).await;
    ws.send(Message::text("after")).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("after"));
    ws.close().await.unwrap();
}

#[tokio::test]
async fn a_close_from_another_task_ends_the_stream_with_its_code() {
    let (port, mut ended) = shared_server(ServerConfig::default(), false).await;
    let (mut ws, _) = tether::connect(&format!("ws://127.0.0.1:{port}/")).await.unwrap();
    ws.send(Message::text("close")).await.unwrap();
    let Some(Ok(Message::Close(Some(frame)))) = ws.next().await else { panic!("no close frame") };
    assert_eq!((frame.code, frame.reason.as_str()), (CloseCode(4008), "slow consumer"));
    assert!(ws.next().await.is_none());
    let closed = tokio::time::timeout(Duration::from_secs(5), ended.recv()).await.unwrap().unwrap().unwrap();
    assert_eq!((closed.code, closed.initiator), (CloseCode(4008), Initiator::Local));
}

#[tokio::test]
async fn over_tls_sends_queue_and_the_reader_writes_them() {
    let ca = ca();
    let (chain, key) = leaf(&ca, &["localhost"], false);
    let config = ServerConfig::default().with_tls(tls::server_config(chain, key).unwrap());
    let (port, _) = shared_server(config, false).await;
    let client = ClientConfig::default().with_trust(ClientTrust::Ca(vec![ca.cert.der().clone()]));
    let (mut ws, _) = tether::connect_with(&format!("wss://localhost:{port}/"), &client).await.unwrap();
    ws.send(Message::text("burst 300 5000")).await.unwrap();
    read_burst(&mut ws, 300, 5000).await;
    ws.send(Message::text("close")).await.unwrap();
    let Some(Ok(Message::Close(Some(frame)))) = ws.next().await else { panic!("no close frame") };
    assert_eq!(frame.code, CloseCode(4008));
}

#[tokio::test]
async fn fed_frames_go_out_when_the_feeding_task_yields_in_order_with_the_rest() {
    let (port, _) = shared_server(ServerConfig::default(), true).await;
    let (mut ws, _) =
        tether::connect_direct(&format!("ws://127.0.0.1:{port}/"), &ClientConfig::default()).await.unwrap();
    ws.send(Message::text("burst 3000 50")).await.unwrap();
    read_burst(&mut ws, 3000, 50).await;
    // More than the socket takes while the client waits: the rest is written by the
    // reading task once the client reads.
    ws.send(Message::text("burst 256 65536")).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    read_burst(&mut ws, 256, 65536).await;
    ws.send(Message::text("burst 16384 1000")).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    read_burst(&mut ws, 16384, 1000).await;
    ws.send(Message::text("echo")).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("echo"));
    ws.close().await.unwrap();
}

#[tokio::test]
async fn frames_of_one_batch_go_out_in_order_with_a_cork_and_without() {
    for corked in [true, false] {
        let (port, _) = shared_server(ServerConfig::default(), corked).await;
        let (mut ws, _) =
            tether::connect_direct(&format!("ws://127.0.0.1:{port}/"), &ClientConfig::default())
                .await
                .unwrap();
        ws.send(Message::text("batch 2000 50")).await.unwrap();
        read_burst(&mut ws, 2000, 50).await;
        // More than the socket takes while the client waits: the reading task writes the
        // rest once the client reads.
        ws.send(Message::text("batch 128 65536")).await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        read_burst(&mut ws, 128, 65536).await;
        ws.send(Message::text("echo")).await.unwrap();
        assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("echo"));
        ws.close().await.unwrap();
    }
}

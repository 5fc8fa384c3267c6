//! `Upgrade`: a WebSocket over a connection whose handshake happened elsewhere, here an
//! in-memory pipe with the negotiation done by hand through tether_proto's functions.

use futures_util::{SinkExt, StreamExt};
use std::time::Duration;
use tether::tether_proto::deflate::{client_accept, client_offer, server_accept};
use tether::tether_proto::handshake::parse_extensions;
use tether::tether_proto::Role;
use tether::{CloseCode, Config, DeflateConfig, Message, Upgrade};

const WAIT: Duration = Duration::from_secs(10);

#[tokio::test]
async fn both_ends_over_a_pipe_with_subprotocol_and_leftover() {
    let (a, b) = tokio::io::duplex(64 * 1024);
    let mut server = Upgrade::new(a, Role::Server).protocol(Some("chat".into())).spawn();
    // The client's first frame was read by "the HTTP layer" with the head: a masked text
    // frame "hi" (RFC 6455 5.7's example, masked).
    let early = vec![0x81, 0x82, 0x37, 0xfa, 0x21, 0x3d, 0x5f, 0x93];
    let (c, d) = tokio::io::duplex(64 * 1024);
    let mut from_leftover = Upgrade::new(c, Role::Server).leftover(early).direct();
    drop(d);
    let got = tokio::time::timeout(WAIT, from_leftover.next()).await.unwrap();
    assert_eq!(got.unwrap().unwrap(), Message::text("hi"));
    let mut client = Upgrade::new(b, Role::Client).protocol(Some("chat".into())).direct();
    assert_eq!((server.protocol(), client.protocol()), (Some("chat"), Some("chat")));
    client.send(Message::text("hello")).await.unwrap();
    let got = tokio::time::timeout(WAIT, server.next()).await.unwrap().unwrap().unwrap();
    assert_eq!(got, Message::text("hello"));
    server.send(Message::binary(vec![1u8, 2, 3])).await.unwrap();
    let got = tokio::time::timeout(WAIT, client.next()).await.unwrap().unwrap().unwrap();
    assert_eq!(got, Message::binary(vec![1u8, 2, 3]));
    // The client closes while the server reads on; both see a clean close.
    let drain = async {
        while let Some(m) = tokio::time::timeout(WAIT, server.next()).await.unwrap() {
            m.unwrap();
        }
    };
    let (closed, ()) = tokio::join!(client.close(), drain);
    closed.unwrap();
    assert!(client.close_status().unwrap().clean);
    let status = server.close_status().unwrap();
    assert!(status.clean && status.code == CloseCode::NORMAL, "{status:?}");
}

#[tokio::test]
async fn deflate_agreed_elsewhere_compresses_both_ways() {
    let config = DeflateConfig::default();
    // The offer and the answer as an HTTP layer would pass them.
    let offer = parse_extensions([client_offer(&config).as_bytes()]).unwrap();
    let (server_params, answer) = server_accept(&offer, &config).unwrap();
    let client_params = client_accept(&parse_extensions([answer.as_bytes()]).unwrap(), &config).unwrap();
    assert!(client_params.is_some());
    let (a, b) = tokio::io::duplex(64 * 1024);
    let limits = Config::default().with_max_message_size(1 << 20);
    let mut server =
        Upgrade::new(a, Role::Server).config(limits.clone()).deflate(Some(server_params)).spawn();
    let mut client = Upgrade::new(b, Role::Client).config(limits).deflate(client_params).spawn();
    assert!(server.deflate() && client.deflate());
    let text = "compress me ".repeat(2000);
    client.send(Message::text(text.clone())).await.unwrap();
    let got = tokio::time::timeout(WAIT, server.next()).await.unwrap().unwrap().unwrap();
    assert_eq!(got, Message::text(text.clone()));
    server.send(got).await.unwrap();
    let back = tokio::time::timeout(WAIT, client.next()).await.unwrap().unwrap().unwrap();
    assert_eq!(back, Message::text(text.clone()));
    // It went compressed: far fewer bytes on the wire than the payload.
    let stats = client.stats();
    assert!(stats.bytes_sent < text.len() as u64 / 10, "{stats:?}");
}

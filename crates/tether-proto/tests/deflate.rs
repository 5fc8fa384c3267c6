//! permessage-deflate through the public API: negotiated with the public functions, then
//! messages compressed by one connection, re-fragmented at random, and inflated by the other.

mod common;

use bytes::Bytes;
use common::{events, transmit};
use proptest::prelude::*;
use tether_proto::deflate::{client_accept, client_offer, server_accept, DeflateConfig};
use tether_proto::frame::{apply_mask, FrameHeader, OpCode, MAX_HEADER_LEN};
use tether_proto::handshake::parse_extensions;
use tether_proto::{CloseCode, Config, Connection, Event, ProtocolError};

/// A client and a server that negotiated permessage-deflate through the real handshake
/// functions: `client_cfg` offers, `server_cfg` answers.
fn pair(client_cfg: DeflateConfig, server_cfg: DeflateConfig) -> (Connection, Connection) {
    let offer = client_offer(&client_cfg);
    let (server_params, answer) =
        server_accept(&parse_extensions([offer.as_bytes()]).unwrap(), &server_cfg).expect("accepted");
    let client_params =
        client_accept(&parse_extensions([answer.as_bytes()]).unwrap(), &client_cfg).unwrap().expect("agreed");
    let mut n = 0u8;
    let client = Connection::client(
        Config::default(),
        Box::new(move || {
            n = n.wrapping_add(7);
            [n, 1, 2, 3]
        }),
    )
    .with_deflate(Some(client_params));
    let server = Connection::server(Config::default()).with_deflate(Some(server_params));
    (client, server)
}

/// Re-encodes a client's frames, splitting each data frame's (compressed) payload at `cuts`.
fn refragment(wire: &[u8], cuts: &[usize]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut rest = wire;
    let mut k = 0;
    while let Some((h, n)) = FrameHeader::parse(rest).unwrap() {
        let len = h.payload_len as usize;
        let mut payload = rest[n..n + len].to_vec();
        apply_mask(&mut payload, h.mask.unwrap(), 0);
        rest = &rest[n + len..];
        let mut bounds: Vec<usize> = cuts.iter().map(|c| c % (len + 1)).collect();
        bounds.extend([0, len]);
        bounds.sort_unstable();
        bounds.dedup();
        if bounds.len() == 1 {
            bounds.push(0);
        }
        let pieces: Vec<&[u8]> = bounds.windows(2).map(|w| &payload[w[0]..w[1]]).collect();
        for (i, piece) in pieces.iter().enumerate() {
            k += 1;
            let header = FrameHeader {
                fin: i + 1 == pieces.len(),
                rsv1: i == 0 && h.rsv1,
                rsv2: false,
                rsv3: false,
                opcode: if i == 0 { h.opcode } else { OpCode::Continuation },
                mask: Some([k as u8, 9, 8, 7]),
                payload_len: piece.len() as u64,
            };
            let mut head = [0u8; MAX_HEADER_LEN];
            let hn = header.encode(&mut head);
            out.extend_from_slice(&head[..hn]);
            let at = out.len();
            out.extend_from_slice(piece);
            apply_mask(&mut out[at..], header.mask.unwrap(), 0);
        }
    }
    assert!(rest.is_empty());
    out
}

#[derive(Debug, Clone)]
struct Msg {
    text: bool,
    body: Vec<u8>,
}

/// Messages that compress (a small alphabet, repeated) and some that do not.
fn message() -> impl Strategy<Value = Msg> {
    let compressible = proptest::collection::vec(prop::sample::select(b"ab {}:\",0123".to_vec()), 0..3000);
    let random = proptest::collection::vec(any::<u8>(), 0..500);
    (any::<bool>(), prop_oneof![compressible, random]).prop_map(|(text, body)| {
        let body = if text { String::from_utf8_lossy(&body).into_owned().into_bytes() } else { body };
        Msg { text, body }
    })
}

fn expected(m: &Msg) -> Event {
    if m.text {
        Event::Text(String::from_utf8(m.body.clone()).unwrap().into())
    } else {
        Event::Binary(Bytes::from(m.body.clone()))
    }
}

fn send(c: &mut Connection, m: &Msg) {
    if m.text {
        c.send_text(String::from_utf8(m.body.clone()).unwrap().into()).unwrap();
    } else {
        c.send_binary(Bytes::from(m.body.clone())).unwrap();
    }
}

proptest! {

    #[test]
    fn compress_then_inflate_is_identity(
        msgs in proptest::collection::vec(message(), 1..8),
        client_nct in any::<bool>(),
        server_nct in any::<bool>(),
        cuts in proptest::collection::vec(0usize..4000, 0..4),
        chunk in 1usize..200,
    ) {
        let client_cfg = DeflateConfig::default().with_client_no_context_takeover(client_nct).with_threshold(0);
        let server_cfg = DeflateConfig::default().with_server_no_context_takeover(server_nct).with_threshold(0);
        let (mut client, mut server) = pair(client_cfg, server_cfg);
        // Client to server, re-fragmented and fed in pieces.
        for m in &msgs {
            send(&mut client, m);
        }
        let wire = refragment(&transmit(&mut client), &cuts);
        let mut got = Vec::new();
        for piece in wire.chunks(chunk) {
            server.handle_bytes(piece);
            got.extend(events(&mut server));
        }
        prop_assert_eq!(got, msgs.iter().map(|m| Ok(expected(m))).collect::<Vec<_>>());
        prop_assert_eq!(client.stats().compressed_sent, msgs.len() as u64);
        // Server to client.
        for m in &msgs {
            send(&mut server, m);
        }
        client.handle_bytes(&transmit(&mut server));
        prop_assert_eq!(events(&mut client), msgs.iter().map(|m| Ok(expected(m))).collect::<Vec<_>>());
    }
}

#[test]
fn compression_is_used_and_threshold_and_opt_out_apply() {
    let cfg = DeflateConfig::default();
    let (mut client, mut server) = pair(cfg.clone(), cfg);
    assert_eq!(client.deflate_allocated(), (false, false), "nothing allocated before the first message");
    let text = "{\"price\": 101.5, \"symbol\": \"ACME\"} ".repeat(100);
    client.send_text(text.clone().into()).unwrap();
    client.send_text("short".into()).unwrap(); // under the 64-byte threshold
    client.send_text_uncompressed(text.clone().into()).unwrap();
    let wire = transmit(&mut client);
    assert_eq!(client.deflate_allocated(), (true, false));
    server.handle_bytes(&wire);
    assert_eq!(events(&mut server).len(), 3);
    let s = server.stats();
    assert_eq!((s.messages_received, s.compressed_received), (3, 1));
    assert_eq!(s.payload_received, 2 * text.len() as u64 + 5);
    // The compressed copy is a small fraction of the uncompressed one.
    assert!(s.bytes_received < text.len() as u64 + 200, "{s:?}");
}

#[test]
fn rsv1_rules() {
    // RSV1 without negotiation: 1002.
    let mut plain = Connection::server(Config::default());
    plain.handle_bytes(&[0xc1, 0x80, 0, 0, 0, 0]);
    let err = plain.poll_event().unwrap_err();
    assert_eq!((err.clone(), err.close_code()), (ProtocolError::ReservedBits, CloseCode::PROTOCOL_ERROR));
    // With deflate: RSV1 on a continuation or a control frame is 1002 too.
    let (_, mut server) = pair(DeflateConfig::default(), DeflateConfig::default());
    server.handle_bytes(&[0x41, 0x80, 0, 0, 0, 0, 0xc0, 0x80, 0, 0, 0, 0]);
    assert_eq!(server.poll_event(), Err(ProtocolError::UnexpectedRsv1));
    let (_, mut server) = pair(DeflateConfig::default(), DeflateConfig::default());
    server.handle_bytes(&[0xc9, 0x80, 0, 0, 0, 0]);
    assert_eq!(server.poll_event(), Err(ProtocolError::UnexpectedRsv1));
    // RFC 7692 7.2.3.1, both forms, as a server reading a client (masked with a zero key).
    let (_, mut server) = pair(DeflateConfig::default(), DeflateConfig::default());
    server.handle_bytes(&[0xc1, 0x87, 0, 0, 0, 0, 0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00]);
    server.handle_bytes(&[
        0x41, 0x83, 0, 0, 0, 0, 0xf2, 0x48, 0xcd, 0x80, 0x84, 0, 0, 0, 0, 0xc9, 0xc9, 0x07, 0x00,
    ]);
    assert_eq!(events(&mut server), vec![Ok(Event::Text("Hello".into())), Ok(Event::Text("Hello".into()))]);
}

#[test]
fn corrupt_compressed_data_closes_with_1007() {
    let (_, mut server) = pair(DeflateConfig::default(), DeflateConfig::default());
    server.handle_bytes(&[0xc2, 0x83, 0, 0, 0, 0, 0xff, 0xff, 0xff]);
    let err = server.poll_event().unwrap_err();
    assert_eq!(err.close_code(), CloseCode::INVALID_PAYLOAD);
}

/// What the client got, as texts.
fn texts(client: &mut Connection) -> Vec<String> {
    events(client)
        .into_iter()
        .map(|e| match e {
            Ok(Event::Text(t)) => t.as_str().to_owned(),
            other => panic!("not a text: {other:?}"),
        })
        .collect()
}

#[test]
fn a_prepared_frame_is_compressed_once_for_every_connection_without_context_takeover() {
    let fresh = DeflateConfig::default().with_server_no_context_takeover(true);
    let text = "{\"channel\":\"prices\",\"data\":{\"price\":101.5,\"symbol\":\"ACME\"}} ".repeat(40);
    let frame = tether_proto::frame::PreparedFrame::text(&text);
    let mut wires = Vec::new();
    for _ in 0..3 {
        let (mut client, mut server) = pair(DeflateConfig::default(), fresh.clone());
        server.send_prepared(&frame).unwrap();
        let wire = transmit(&mut server);
        assert_eq!(wire[0], 0xc1, "FIN, RSV1, text");
        assert!(wire.len() < frame.wire().len() / 4, "{} of {}", wire.len(), frame.wire().len());
        assert_eq!(server.stats().compressed_sent, 1);
        assert_eq!(server.stats().payload_sent, text.len() as u64);
        assert_eq!(server.deflate_allocated(), (false, false), "no compressor kept");
        client.handle_bytes(&wire);
        assert_eq!(texts(&mut client), [text.as_str()]);
        wires.push(wire);
    }
    assert!(wires.windows(2).all(|w| w[0] == w[1]), "the same compressed frame for each");

    // Context takeover on the server: uncompressed, and the context stays usable for what
    // the connection compresses itself before and after.
    let (mut client, mut server) = pair(DeflateConfig::default(), DeflateConfig::default());
    server.send_text(text.clone().into()).unwrap();
    server.send_prepared(&frame).unwrap();
    server.send_text(text.clone().into()).unwrap();
    let wire = transmit(&mut server);
    assert_eq!(server.stats().compressed_sent, 2);
    client.handle_bytes(&wire);
    assert_eq!(texts(&mut client), [text.as_str(); 3]);

    // A client that allows the server a smaller window than the frame was compressed with
    // gets it uncompressed; a frame compressed first for the small window serves both.
    let small = DeflateConfig::default().with_server_max_window_bits(10);
    let (mut client, mut server) = pair(small.clone(), fresh.clone());
    server.send_prepared(&frame).unwrap();
    let wire = transmit(&mut server);
    assert_eq!((wire[0], server.stats().compressed_sent), (0x81, 0));
    client.handle_bytes(&wire);
    assert_eq!(texts(&mut client), [text.as_str()]);
    let other = tether_proto::frame::PreparedFrame::text(&text);
    for client_cfg in [small, DeflateConfig::default()] {
        let (mut client, mut server) = pair(client_cfg, fresh.clone());
        server.send_prepared(&other).unwrap();
        let wire = transmit(&mut server);
        assert_eq!((wire[0], server.stats().compressed_sent), (0xc1, 1));
        client.handle_bytes(&wire);
        assert_eq!(texts(&mut client), [text.as_str()]);
    }

    // Under the threshold, or not made shorter by compressing: uncompressed.
    let (mut client, mut server) = pair(DeflateConfig::default(), fresh.clone());
    let mut x = 0x2545_f491_4f6c_dd1d_u64;
    let random: Vec<u8> = (0..300)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    server.send_prepared(&tether_proto::frame::PreparedFrame::text("short")).unwrap();
    server.send_prepared(&tether_proto::frame::PreparedFrame::binary(&random)).unwrap();
    let wire = transmit(&mut server);
    client.handle_bytes(&wire);
    assert_eq!(
        events(&mut client),
        [Ok(Event::Text("short".into())), Ok(Event::Binary(Bytes::from(random)))]
    );
    assert_eq!(server.stats().compressed_sent, 0);
}

#[test]
fn without_context_takeover_no_codec_state_is_kept_between_messages() {
    let fresh =
        DeflateConfig::default().with_server_no_context_takeover(true).with_client_no_context_takeover(true);
    let (mut client, mut server) = pair(DeflateConfig::default(), fresh);
    let text = "abcabcabc ".repeat(50);
    for _ in 0..3 {
        client.send_text(text.clone().into()).unwrap();
        server.handle_bytes(&transmit(&mut client));
        assert_eq!(texts(&mut server), [text.as_str()]);
        server.send_text(text.clone().into()).unwrap();
        client.handle_bytes(&transmit(&mut server));
        assert_eq!(texts(&mut client), [text.as_str()]);
        assert_eq!(server.deflate_allocated(), (false, false));
    }
    assert_eq!((server.stats().compressed_sent, server.stats().compressed_received), (3, 3));
    // A message split across frames and reads keeps its decompressor until it ends.
    client.send_text(text.clone().into()).unwrap();
    let wire = refragment(&transmit(&mut client), &[3, 7]);
    let (a, b) = wire.split_at(wire.len() / 2);
    server.handle_bytes(a);
    assert!(texts(&mut server).is_empty());
    server.handle_bytes(b);
    assert_eq!(texts(&mut server), [text.as_str()]);
    assert_eq!(server.deflate_allocated(), (false, false));
}

//! Properties: encode then decode round-trips; decoding does not depend on how the input
//! is split; the fast mask equals the naive one.

use bytes::Bytes;
use proptest::prelude::*;
use tether_proto::frame::{apply_mask, apply_mask_naive, FrameHeader, OpCode, MAX_HEADER_LEN};
use tether_proto::{Config, Connection, Event, ProtocolError};

fn opcode() -> impl Strategy<Value = OpCode> {
    prop_oneof![
        Just(OpCode::Continuation),
        Just(OpCode::Text),
        Just(OpCode::Binary),
        Just(OpCode::Close),
        Just(OpCode::Ping),
        Just(OpCode::Pong),
    ]
}

fn header() -> impl Strategy<Value = FrameHeader> {
    let len = prop_oneof![0u64..=125, 126u64..=0xFFFF, 0x10000u64..=(1 << 63) - 1];
    (any::<[bool; 4]>(), opcode(), proptest::option::of(any::<[u8; 4]>()), len).prop_map(
        |([fin, rsv1, rsv2, rsv3], opcode, mask, payload_len)| FrameHeader {
            fin,
            rsv1,
            rsv2,
            rsv3,
            opcode,
            mask,
            payload_len,
        },
    )
}

/// A message as the client sends it: text or binary, split into frames, with pings between.
#[derive(Debug, Clone)]
struct Msg {
    text: bool,
    body: Vec<u8>,
    cuts: Vec<usize>,
    ping_after_first: bool,
}

fn message() -> impl Strategy<Value = Msg> {
    (
        any::<bool>(),
        proptest::collection::vec(any::<u8>(), 0..300),
        proptest::collection::vec(0usize..300, 0..4),
        any::<bool>(),
    )
        .prop_map(|(text, body, cuts, ping_after_first)| {
            let body = if text { String::from_utf8_lossy(&body).into_owned().into_bytes() } else { body };
            Msg { text, body, cuts, ping_after_first }
        })
}

fn encode_frame(out: &mut Vec<u8>, fin: bool, opcode: OpCode, payload: &[u8], key: [u8; 4]) {
    let h = FrameHeader {
        fin,
        rsv1: false,
        rsv2: false,
        rsv3: false,
        opcode,
        mask: Some(key),
        payload_len: payload.len() as u64,
    };
    let mut head = [0u8; MAX_HEADER_LEN];
    let n = h.encode(&mut head);
    out.extend_from_slice(&head[..n]);
    let at = out.len();
    out.extend_from_slice(payload);
    apply_mask(&mut out[at..], key, 0);
}

/// The frames a message is split into (at least one).
fn frames(m: &Msg) -> Vec<&[u8]> {
    let mut bounds: Vec<usize> = m.cuts.iter().map(|c| c % (m.body.len() + 1)).collect();
    bounds.push(0);
    bounds.push(m.body.len());
    bounds.sort_unstable();
    bounds.dedup();
    if bounds.len() == 1 {
        return vec![&m.body[..]];
    }
    bounds.windows(2).map(|w| &m.body[w[0]..w[1]]).collect()
}

/// Whether a ping goes between the first and second frame (only for fragmented messages).
fn has_inner_ping(m: &Msg) -> bool {
    m.ping_after_first && frames(m).len() > 1
}

fn wire(msgs: &[Msg]) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, m) in msgs.iter().enumerate() {
        let key = [i as u8, 0xA5, 0x0F, 0x77];
        let frames = frames(m);
        for (j, f) in frames.iter().enumerate() {
            let opcode = if j > 0 {
                OpCode::Continuation
            } else if m.text {
                OpCode::Text
            } else {
                OpCode::Binary
            };
            encode_frame(&mut out, j + 1 == frames.len(), opcode, f, key);
            if j == 0 && has_inner_ping(m) {
                encode_frame(&mut out, true, OpCode::Ping, b"p", key);
            }
        }
    }
    out
}

fn decode(chunks: &[&[u8]]) -> Vec<Result<Event, ProtocolError>> {
    let mut s = Connection::server(Config::default());
    let mut out = Vec::new();
    for chunk in chunks {
        s.handle_bytes(chunk);
        loop {
            match s.poll_event() {
                Ok(Some(e)) => out.push(Ok(e)),
                Ok(None) => break,
                Err(e) => {
                    out.push(Err(e));
                    break;
                }
            }
        }
    }
    out
}

proptest! {
    #[test]
    fn header_round_trip(h in header()) {
        let mut buf = [0u8; MAX_HEADER_LEN];
        let n = h.encode(&mut buf);
        prop_assert_eq!(n, h.encoded_len());
        prop_assert_eq!(FrameHeader::parse(&buf[..n]).unwrap(), Some((h, n)));
        prop_assert_eq!(FrameHeader::parse(&buf[..n - 1]).unwrap(), None);
    }

    #[test]
    fn mask_equals_naive(data in proptest::collection::vec(any::<u8>(), 0..300), key in any::<[u8; 4]>(), offset in 0usize..16) {
        let (mut a, mut b) = (data.clone(), data);
        apply_mask(&mut a, key, offset);
        apply_mask_naive(&mut b, key, offset);
        prop_assert_eq!(a, b);
    }

    #[test]
    fn messages_round_trip(msgs in proptest::collection::vec(message(), 1..6)) {
        let events = decode(&[&wire(&msgs)]);
        let expected: Vec<Result<Event, ProtocolError>> = msgs.iter().flat_map(|m| {
            let mut v = Vec::new();
            if has_inner_ping(m) {
                v.push(Ok(Event::Ping(Bytes::from_static(b"p"))));
            }
            v.push(Ok(if m.text {
                Event::Text(String::from_utf8(m.body.clone()).unwrap().into())
            } else {
                Event::Binary(Bytes::from(m.body.clone()))
            }));
            v
        }).collect();
        prop_assert_eq!(events, expected);
    }

    #[test]
    fn any_split_decodes_the_same(msgs in proptest::collection::vec(message(), 1..4), cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..8)) {
        let bytes = wire(&msgs);
        let whole = decode(&[&bytes]);
        let mut at: Vec<usize> = cuts.iter().map(|i| i.index(bytes.len() + 1)).collect();
        at.sort_unstable();
        let mut chunks = Vec::new();
        let mut prev = 0;
        for a in at {
            chunks.push(&bytes[prev..a]);
            prev = a;
        }
        chunks.push(&bytes[prev..]);
        prop_assert_eq!(&decode(&chunks), &whole);
        let singles: Vec<&[u8]> = bytes.chunks(1).collect();
        prop_assert_eq!(&decode(&singles), &whole);
    }

    #[test]
    fn arbitrary_input_never_panics(data in proptest::collection::vec(any::<u8>(), 0..400), split in any::<prop::sample::Index>()) {
        let at = split.index(data.len() + 1);
        let whole = decode(&[&data]);
        prop_assert_eq!(decode(&[&data[..at], &data[at..]]), whole);
    }
}

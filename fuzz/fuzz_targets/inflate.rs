//! The inflate path with a size limit: a server with permessage-deflate negotiated gets the
//! fuzzer's bytes as the payloads of compressed (RSV1) frames. It never panics, never hands
//! out a message over the limit, and refuses what it cannot take with 1007 or 1009 (or 1002
//! for a framing error).
#![no_main]
use libfuzzer_sys::fuzz_target;
use tether_proto::deflate::{server_accept, client_offer, DeflateConfig};
use tether_proto::frame::{FrameHeader, OpCode, MAX_HEADER_LEN};
use tether_proto::handshake::parse_extensions;
use tether_proto::{Config, Connection, Event};

const LIMIT: usize = 1 << 14;

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else { return };
    let deflate = DeflateConfig::default().with_client_no_context_takeover(flags & 1 != 0);
    let offer = parse_extensions([client_offer(&deflate).as_bytes()]).unwrap();
    let (params, _) = server_accept(&offer, &deflate).unwrap();
    let config = Config::default().with_max_message_size(LIMIT).with_max_frame_size(LIMIT);
    let mut conn = Connection::server(config).with_deflate(Some(params));
    // The input, cut into up to four frames of one message (or of several, by the flags).
    let pieces = usize::from(flags >> 1 & 3) + 1;
    let step = rest.len().div_ceil(pieces).max(1);
    let mut wire = Vec::new();
    for (i, chunk) in rest.chunks(step).enumerate() {
        let last = (i + 1) * step >= rest.len();
        let header = FrameHeader {
            fin: last || flags & 8 != 0,
            rsv1: i == 0 || flags & 8 != 0,
            rsv2: false,
            rsv3: false,
            opcode: if i == 0 || flags & 8 != 0 { if flags & 16 != 0 { OpCode::Text } else { OpCode::Binary } } else { OpCode::Continuation },
            mask: Some([1, 2, 3, 4]),
            payload_len: chunk.len() as u64,
        };
        let mut h = [0u8; MAX_HEADER_LEN];
        let n = header.encode(&mut h);
        wire.extend_from_slice(&h[..n]);
        wire.extend(chunk.iter().enumerate().map(|(j, b)| b ^ [1, 2, 3, 4][j % 4]));
    }
    conn.handle_bytes(&wire);
    loop {
        match conn.poll_event() {
            Ok(Some(Event::Text(t))) => assert!(t.len() <= LIMIT),
            Ok(Some(Event::Binary(b))) => assert!(b.len() <= LIMIT),
            Ok(Some(_)) => {}
            Ok(None) => break,
            Err(e) => {
                assert!([1002, 1007, 1009].contains(&e.close_code().0), "{e}");
                break;
            }
        }
    }
});

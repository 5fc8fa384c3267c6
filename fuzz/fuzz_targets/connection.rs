//! A connection fed arbitrary bytes, in two pieces, in either role, with or without
//! permessage-deflate: never panics, stays within its limits, and accounts for its queue.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tether_proto::deflate::{client_accept, client_offer, server_accept, DeflateConfig};
use tether_proto::handshake::parse_extensions;
use tether_proto::{Config, Connection, Event};

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else { return };
    let split = rest.len().min(usize::from(flags >> 3) * 8);
    let config = Config::default().with_max_message_size(1 << 16).with_max_frame_size(1 << 15);
    let mut conn = if flags & 1 == 0 {
        Connection::server(config.clone())
    } else {
        Connection::client(config.clone(), Box::new(|| [1, 2, 3, 4]))
    };
    if flags & 2 != 0 {
        let deflate = DeflateConfig::default().with_server_no_context_takeover(flags & 4 != 0);
        let offer = parse_extensions([client_offer(&deflate).as_bytes()]).unwrap();
        let (server_params, answer) = server_accept(&offer, &deflate).unwrap();
        let answer = parse_extensions([answer.as_bytes()]).unwrap();
        let client_params = client_accept(&answer, &deflate).unwrap();
        conn = conn.with_deflate(if flags & 1 == 0 { Some(server_params) } else { client_params });
    }
    for piece in [&rest[..split], &rest[split..]] {
        conn.handle_bytes(piece);
        loop {
            match conn.poll_event() {
                Ok(Some(Event::Text(t))) => {
                    assert!(t.len() <= 1 << 16);
                    let _ = conn.send_text(t);
                }
                Ok(Some(Event::Binary(b))) => {
                    assert!(b.len() <= 1 << 16);
                    let _ = conn.send_binary(b);
                }
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => break,
            }
        }
    }
    conn.handle_eof();
    let _ = conn.poll_event();
    let mut out = Vec::new();
    while conn.poll_transmit(&mut out) {}
    assert_eq!(conn.buffered_amount(), 0);
});

//! Any HTTP/1.x request head, as the server reads it before it knows whether it is an
//! upgrade: never panics, errors carry a 4xx/5xx status, and the incremental search for the
//! head's end never misses a head that httparse sees as complete (else a server would wait
//! for bytes that never come).
#![no_main]
use libfuzzer_sys::fuzz_target;
use tether_proto::handshake::{find_head_end, parse_http_request, HandshakeLimits};

fuzz_target!(|data: &[u8]| {
    let limits = HandshakeLimits { max_bytes: 4096, max_headers: 32 };
    match parse_http_request(data, &limits) {
        Ok(Some((head, len))) => {
            assert!(len <= data.len());
            // Searched in two steps, as reads would deliver it.
            let mut searched = 0;
            let half = len / 2;
            let found = find_head_end(&data[..half], &mut searched)
                .or_else(|| find_head_end(&data[..len], &mut searched));
            assert!(found.is_some_and(|end| end <= len), "head of {len} bytes not found");
            let _ = head.content_length();
            let _ = head.keep_alive();
            let attempt = head.is_websocket_attempt();
            match head.into_upgrade() {
                Ok(req) => assert!(attempt && !req.key.is_empty()),
                Err(e) => assert!((400..600).contains(&e.status())),
            }
        }
        Ok(None) => assert!(data.len() < limits.max_bytes),
        Err(e) => assert!((400..600).contains(&e.status())),
    }
});

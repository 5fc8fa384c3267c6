//! The proxies' answers, as the client reads them: an HTTP CONNECT reply and a SOCKS5
//! method choice, auth answer and connect reply. Never panics; a tunnel is only reported
//! open with a length inside what was read.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tether_proto::proxy::{parse_connect_response, socks5};

fuzz_target!(|data: &[u8]| {
    if let Ok(Some(n)) = parse_connect_response(data) {
        assert!(n <= data.len());
    }
    if let Ok(Some(n)) = socks5::parse_connect_reply(data) {
        assert!(n <= data.len());
    }
    if let [a, b, ..] = *data {
        let _ = socks5::parse_method([a, b], data.len() % 2 == 0);
        let _ = socks5::parse_auth([a, b]);
    }
});

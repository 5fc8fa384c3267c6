//! Upgrade requests: arbitrary bytes give a request, "need more", or an error with an HTTP
//! status; an accepted request always yields an answer.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tether_proto::deflate::{server_accept, DeflateConfig};
use tether_proto::handshake::{accept_response, parse_request, reject_response, HandshakeLimits};

fuzz_target!(|data: &[u8]| {
    let limits = HandshakeLimits { max_bytes: 4096, max_headers: 32 };
    match parse_request(data, &limits) {
        Ok(Some((req, len))) => {
            assert!(len <= data.len());
            let deflate = server_accept(&req.extensions, &DeflateConfig::default());
            let ext = deflate.as_ref().map(|(_, a)| a.as_str());
            let _ = accept_response(&req, req.protocols.first().map(String::as_str), ext, &Default::default());
        }
        Ok(None) => assert!(data.len() < limits.max_bytes),
        Err(e) => {
            let status = e.status();
            assert!((400..600).contains(&status));
            let _ = reject_response(status, &e.to_string(), &Default::default());
        }
    }
});

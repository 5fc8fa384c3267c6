//! Server answers, as the client sees them: arbitrary bytes never panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tether_proto::deflate::DeflateConfig;
use tether_proto::handshake::{ClientHandshake, ClientOptions, Url};

fuzz_target!(|data: &[u8]| {
    let url = Url::parse("ws://example.com/chat").unwrap();
    let options = ClientOptions {
        protocols: vec!["chat".into()],
        deflate: Some(DeflateConfig::default()),
        ..Default::default()
    };
    let (hs, _) = ClientHandshake::new(&url, *b"the sample nonce", options).unwrap();
    let _ = hs.parse_response(data);
});

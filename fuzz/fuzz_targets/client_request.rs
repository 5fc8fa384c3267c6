//! The client's request from a URL and a header given by the caller (both from the fuzzer):
//! either an error before any request exists, or a request that our own server parser reads
//! back with exactly the headers asked for: nothing in a URL or a header value can add a
//! header (CWE-93).
#![no_main]
use libfuzzer_sys::fuzz_target;
use tether_proto::handshake::{parse_http_request, ClientHandshake, ClientOptions, HandshakeLimits, Url};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let mut parts = text.splitn(3, '\u{1}');
    let (url, name, value) = (parts.next().unwrap_or(""), parts.next().unwrap_or("x"), parts.next().unwrap_or(""));
    let Ok(url) = Url::parse(url) else { return };
    let options = ClientOptions { headers: vec![(name.to_owned(), value.to_owned())], ..Default::default() };
    let Ok((_, request)) = ClientHandshake::new(&url, [7; 16], options) else { return };
    let limits = HandshakeLimits { max_bytes: 1 << 20, max_headers: 64 };
    let (head, len) = parse_http_request(&request, &limits).unwrap().unwrap();
    assert_eq!(len, request.len());
    // Host, Upgrade, Connection, Key, Version and the one extra header: six.
    assert_eq!(head.headers.len(), 6, "{:?}", String::from_utf8_lossy(&request));
    let got = head.headers.get(name).unwrap();
    assert_eq!(got.as_bytes(), value.trim().as_bytes());
    let resource = match &head.query {
        Some(q) => format!("{}?{q}", head.path),
        None => head.path.clone(),
    };
    assert_eq!(resource, url.resource);
});

//! WebSocket URLs and redirects: parsing never panics, and an accepted URL always makes a
//! request (its fields hold nothing that cannot be written into one).
#![no_main]
use libfuzzer_sys::fuzz_target;
use tether_proto::handshake::{ClientHandshake, ClientOptions, Url};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let (first, location) = text.split_once('\u{1}').unwrap_or((text, "/"));
    let Ok(url) = Url::parse(first) else { return };
    assert!(url.check().is_ok(), "{url:?}");
    assert!(!url.resource.bytes().any(|b| b.is_ascii_control() || b == b' '));
    assert!(ClientHandshake::new(&url, [0; 16], ClientOptions::default()).is_ok());
    assert_eq!(Url::parse(&url.to_url_string()).as_ref(), Ok(&url));
    if let Ok(next) = url.redirect(location) {
        assert!(next.check().is_ok());
        assert!(!(url.secure && !next.secure));
    }
});

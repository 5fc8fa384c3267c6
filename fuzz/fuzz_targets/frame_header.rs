//! Frame headers: parsing arbitrary bytes never panics, and what parses re-encodes to the
//! same header.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tether_proto::frame::{FrameHeader, MAX_HEADER_LEN};

fuzz_target!(|data: &[u8]| {
    if let Ok(Some((header, _))) = FrameHeader::parse(data) {
        let mut buf = [0u8; MAX_HEADER_LEN];
        let n = header.encode(&mut buf);
        assert_eq!(FrameHeader::parse(&buf[..n]), Ok(Some((header, n))));
    }
});

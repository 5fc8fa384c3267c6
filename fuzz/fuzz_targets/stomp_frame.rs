//! The STOMP frame decoder (tether-hub) on arbitrary bytes, in every version, in two
//! pieces: never panics, keeps its limits, and what it decodes encodes again.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tether_hub::stomp::frame::{Decoder, Limits, Version};

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else { return };
    let version = [Version::V1_0, Version::V1_1, Version::V1_2][usize::from(flags % 3)];
    let limits = Limits { max_frame_size: 4096, max_headers: 16, max_header_length: 512 };
    let mut decoder = Decoder::new(version, limits);
    let split = rest.len().min(usize::from(flags >> 2) * 4);
    for piece in [&rest[..split], &rest[split..]] {
        decoder.push(piece);
        loop {
            match decoder.next_frame() {
                Ok(Some(frame)) => {
                    assert!(frame.headers.len() <= 16);
                    assert!(frame.body.len() <= 4096);
                    let _ = frame.to_bytes(version);
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
});

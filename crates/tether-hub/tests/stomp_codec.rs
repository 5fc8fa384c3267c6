//! Property tests of the STOMP frame codec: what the encoder writes, the decoder reads back
//! the same, for every version, however the bytes are cut into pieces.

use bytes::Bytes;
use proptest::prelude::*;
use tether_hub::stomp::frame::{Command, Decoder, Frame, Limits, Version};

fn version() -> impl Strategy<Value = Version> {
    prop_oneof![Just(Version::V1_0), Just(Version::V1_1), Just(Version::V1_2)]
}

fn command() -> impl Strategy<Value = Command> {
    prop_oneof![
        Just(Command::Connect),
        Just(Command::Send),
        Just(Command::Subscribe),
        Just(Command::Ack),
        Just(Command::Message),
        Just(Command::Receipt),
        Just(Command::Error),
        Just(Command::Connected),
    ]
}

/// Headers a frame of `command` can carry in `version`: anything where values are escaped
/// (1.1 and 1.2 outside CONNECT/CONNECTED), and where they are not, what needs no escape
/// (no line breaks; no colon in names; 1.0 drops spaces after the colon).
fn headers(verbatim: bool) -> BoxedStrategy<Vec<(String, String)>> {
    let (name, value) = if verbatim {
        ("[a-z][a-z0-9-]{0,8}", "([!-~][ -~]{0,12})?")
    } else {
        ("[a-z:\\\\\n\r é-]{1,8}", "[ -~:\\\\\n\ré✓]{0,12}")
    };
    proptest::collection::vec((name, value), 0..5)
        .prop_filter("content-length is the codec's", |h| h.iter().all(|(n, _)| n != "content-length"))
        .boxed()
}

fn frame() -> impl Strategy<Value = (Version, Frame)> {
    (version(), command()).prop_flat_map(|(v, c)| {
        let verbatim = v == Version::V1_0 || matches!(c, Command::Connect | Command::Connected);
        (headers(verbatim), proptest::collection::vec(any::<u8>(), 0..40))
            .prop_map(move |(headers, body)| (v, Frame { command: c, headers, body: Bytes::from(body) }))
    })
}

/// What decoding the encoding gives: the frame plus the `content-length` the encoder adds.
fn expected(f: &Frame) -> Frame {
    let mut f = f.clone();
    if !f.body.is_empty() {
        f.headers.push(("content-length".into(), f.body.len().to_string()));
    }
    f
}

/// Decodes `pieces` as the server does: after each piece, the frames it completed, then a
/// decoder that holds nothing of a frame is dropped, and the next piece goes to a new one.
fn decode(version: Version, pieces: &[&[u8]]) -> Vec<Frame> {
    let mut d = Decoder::new(version, Limits::default());
    let mut out = Vec::new();
    for p in pieces {
        d.push(p);
        while let Some(f) = d.next_frame().expect("valid input") {
            out.push(f);
        }
        if d.is_idle() {
            d = Decoder::new(version, Limits::default());
        }
    }
    assert_eq!(d.buffered(), 0);
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn encode_decode_round_trip((v, f) in frame()) {
        prop_assert_eq!(decode(v, &[&f.to_bytes(v)]), vec![expected(&f)]);
    }

    /// Two frames with heart-beat EOLs around them, cut at every point: the same frames.
    #[test]
    fn every_split_gives_the_same_frames((v, a) in frame(), b in headers(true)) {
        let b = Frame { command: Command::Send, headers: b, body: Bytes::new() };
        let eol: &[u8] = if v == Version::V1_2 { b"\r\n" } else { b"\n" };
        let mut input = eol.to_vec();
        input.extend_from_slice(&a.to_bytes(v));
        input.extend_from_slice(eol);
        input.extend_from_slice(&b.to_bytes(v));
        input.extend_from_slice(b"\n\n");
        let want = vec![expected(&a), b.clone()];
        for cut in 0..=input.len() {
            let (x, y) = input.split_at(cut);
            prop_assert_eq!(&decode(v, &[x, y]), &want, "cut at {}", cut);
        }
        // And byte by byte.
        let bytes: Vec<&[u8]> = input.chunks(1).collect();
        prop_assert_eq!(decode(v, &bytes), want);
    }

    /// Arbitrary bytes never panic the decoder; they give frames, an error, or a wait.
    #[test]
    fn arbitrary_input_never_panics(input in proptest::collection::vec(any::<u8>(), 0..200), v in version()) {
        let mut d = Decoder::new(v, Limits { max_frame_size: 100, max_headers: 4, max_header_length: 30 });
        d.push(&input);
        while let Ok(Some(_)) = d.next_frame() {}
    }
}

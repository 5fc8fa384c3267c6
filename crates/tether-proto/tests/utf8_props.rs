//! The incremental UTF-8 validator against `std::str::from_utf8`, on arbitrary input split
//! at arbitrary places. `Utf8Bytes`' one `unsafe` block (`from_utf8_unchecked` in text.rs)
//! rests on this validator: a text message is handed out as `str` without a second check
//! once `feed` and `finish` accepted it, so the two must never disagree.

use proptest::prelude::*;
use tether_proto::utf8::Utf8Validator;

/// Bytes that are often valid UTF-8 and often almost so: valid text of every width, with
/// random bytes, truncations and edge-case sequences mixed in.
fn mostly_text() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        any::<String>().prop_map(String::into_bytes),
        proptest::collection::vec(any::<u8>(), 0..8),
        Just(b"\xf4\x8f\xbf\xbf".to_vec()), // U+10FFFF, the last code point
        Just(b"\xf4\x90\x80\x80".to_vec()), // above it
        Just(b"\xed\xa0\x80".to_vec()),     // a surrogate
        Just(b"\xe0\x80\xaf".to_vec()),     // overlong
        Just(b"\xf0\x9d\x84".to_vec()),     // a truncated 4-byte sequence
        Just(b"\xc2".to_vec()),
    ];
    proptest::collection::vec(piece, 0..12).prop_map(|p| p.concat())
}

/// Feeds `bytes` cut at `cuts` (taken modulo the length); whether the validator accepted
/// the whole, and whether it refused a piece before the end (fail fast).
fn feed_split(bytes: &[u8], cuts: &[usize]) -> (bool, bool) {
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
    points.sort_unstable();
    let mut v = Utf8Validator::new();
    let mut from = 0;
    for to in points.into_iter().chain([bytes.len()]) {
        if v.feed(&bytes[from..to]).is_err() {
            return (false, true);
        }
        from = to;
    }
    (v.finish().is_ok(), false)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4096))]

    #[test]
    fn agrees_with_std_on_every_split(bytes in mostly_text(), cuts in proptest::collection::vec(any::<usize>(), 0..6)) {
        let expected = std::str::from_utf8(&bytes).is_ok();
        let (accepted, _) = feed_split(&bytes, &cuts);
        prop_assert_eq!(accepted, expected);
    }

    #[test]
    fn one_byte_at_a_time_agrees_with_std_and_fails_no_later_than_std(bytes in mostly_text()) {
        let mut v = Utf8Validator::new();
        let mut failed_at = None;
        for (i, b) in bytes.iter().enumerate() {
            if v.feed(std::slice::from_ref(b)).is_err() {
                failed_at = Some(i);
                break;
            }
        }
        let accepted = failed_at.is_none() && v.finish().is_ok();
        match std::str::from_utf8(&bytes) {
            Ok(_) => prop_assert!(accepted),
            Err(e) => {
                prop_assert!(!accepted);
                // A definite error is reported at the latest at the byte that follows the
                // sequence std names (the byte that shows the sequence cannot go on).
                if let (Some(at), Some(len)) = (failed_at, e.error_len()) {
                    prop_assert!(at <= e.valid_up_to() + len, "failed at {} of {:x?}", at, bytes);
                }
                if e.error_len().is_some() {
                    prop_assert!(failed_at.is_some());
                }
            }
        }
    }

    #[test]
    fn a_refused_prefix_is_never_valid_whatever_follows(bytes in mostly_text(), more in mostly_text()) {
        let mut v = Utf8Validator::new();
        if v.feed(&bytes).is_err() {
            let mut whole = bytes.clone();
            whole.extend_from_slice(&more);
            prop_assert!(std::str::from_utf8(&whole).is_err());
        }
    }
}

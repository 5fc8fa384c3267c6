//! Incremental UTF-8 validation that fails as soon as the bytes can no longer be valid
//! (Autobahn 6.4.x: a text message is refused mid-frame, before the rest arrives).

/// Validates UTF-8 fed in arbitrary pieces.
///
/// `std::str::from_utf8` already tells a truncated-but-valid-so-far tail
/// (`error_len() == None`) from a definite error, including overlong forms, surrogates and
/// code points above U+10FFFF after their second byte; we carry the tail (at most three
/// bytes) into the next piece.
#[derive(Debug, Default, Clone)]
pub struct Utf8Validator {
    partial: [u8; 4],
    partial_len: u8,
}

/// The bytes are not, and cannot become, valid UTF-8.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvalidUtf8;

impl Utf8Validator {
    /// A validator at the start of a message.
    pub fn new() -> Self {
        Self::default()
    }

    /// Checks the next piece of the message.
    pub fn feed(&mut self, mut data: &[u8]) -> Result<(), InvalidUtf8> {
        while self.partial_len > 0 {
            let Some((&b, rest)) = data.split_first() else { return Ok(()) };
            data = rest;
            self.partial[usize::from(self.partial_len)] = b;
            self.partial_len += 1;
            match std::str::from_utf8(&self.partial[..usize::from(self.partial_len)]) {
                Ok(_) => self.partial_len = 0,
                Err(e) if e.error_len().is_some() => return Err(InvalidUtf8),
                Err(_) => {}
            }
        }
        match std::str::from_utf8(data) {
            Ok(_) => Ok(()),
            Err(e) if e.error_len().is_some() => Err(InvalidUtf8),
            Err(e) => {
                let tail = &data[e.valid_up_to()..];
                self.partial[..tail.len()].copy_from_slice(tail);
                self.partial_len = tail.len() as u8;
                Ok(())
            }
        }
    }

    /// Checks that the message does not end inside a code point.
    pub fn finish(&mut self) -> Result<(), InvalidUtf8> {
        let complete = self.partial_len == 0;
        self.partial_len = 0;
        if complete {
            Ok(())
        } else {
            Err(InvalidUtf8)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_all_splits(bytes: &[u8]) -> (bool, Option<usize>) {
        let whole = std::str::from_utf8(bytes).is_ok();
        // First byte index at which a one-byte-at-a-time feed fails.
        let mut v = Utf8Validator::new();
        let mut fail_at = None;
        for (i, b) in bytes.iter().enumerate() {
            if v.feed(std::slice::from_ref(b)).is_err() {
                fail_at = Some(i);
                break;
            }
        }
        if fail_at.is_none() && v.finish().is_err() {
            fail_at = Some(bytes.len());
        }
        for split in 0..=bytes.len() {
            let mut v = Utf8Validator::new();
            let ok = v.feed(&bytes[..split]).is_ok() && v.feed(&bytes[split..]).is_ok() && v.finish().is_ok();
            assert_eq!(ok, whole, "split at {split} of {bytes:x?}");
        }
        (fail_at.is_none(), fail_at)
    }

    #[test]
    fn valid_text() {
        assert_eq!(check_all_splits("κόσμε Hello-µ@ßöäüàá-UTF-8!! 𝄞".as_bytes()), (true, None));
    }

    #[test]
    fn fails_fast_on_impossible_prefix() {
        // Autobahn 6.4.1: U+10FFFF + 1 is refused at its second byte.
        let (_, at) = check_all_splits(b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xf4\x90\x80\x80edited");
        assert_eq!(at, Some(12));
        // A surrogate (ED A0 80) is refused at its second byte.
        assert_eq!(check_all_splits(b"ab\xed\xa0\x80").1, Some(3));
        // Overlong encodings are refused at their first or second byte.
        assert_eq!(check_all_splits(b"\xc0\xaf").1, Some(0));
        assert_eq!(check_all_splits(b"\xe0\x80\xaf").1, Some(1));
    }

    #[test]
    fn truncated_at_end() {
        assert_eq!(check_all_splits(b"abc\xe2\x82").1, Some(5));
    }
}

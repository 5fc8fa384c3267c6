//! [`Utf8Bytes`]: a text payload, validated once and then shared without copies.
//!
//! This is the one module that allows `unsafe`: turning validated bytes into `&str` without
//! validating them a second time on every read. The invariant is kept by the only
//! constructors, which validate (or take a `String`, which is valid by its own invariant).
#![allow(unsafe_code)]

use bytes::Bytes;
use std::fmt;
use std::ops::Deref;

/// A reference-counted, immutable UTF-8 string backed by [`Bytes`].
#[derive(Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Utf8Bytes(Bytes);

impl Utf8Bytes {
    /// An empty string.
    pub const fn new() -> Self {
        Self(Bytes::new())
    }

    /// A string from static text, without a copy.
    pub const fn from_static(s: &'static str) -> Self {
        Self(Bytes::from_static(s.as_bytes()))
    }

    /// Validates `bytes`.
    ///
    /// # Errors
    ///
    /// Gives the bytes back when they are not valid UTF-8.
    pub fn try_from_bytes(bytes: Bytes) -> Result<Self, Bytes> {
        if std::str::from_utf8(&bytes).is_ok() {
            Ok(Self(bytes))
        } else {
            Err(bytes)
        }
    }

    /// Wraps bytes the caller has already validated as a whole (the connection does this for
    /// every text message). Crate-private so that the invariant cannot be broken from outside.
    pub(crate) fn from_validated(bytes: Bytes) -> Self {
        debug_assert!(std::str::from_utf8(&bytes).is_ok());
        Self(bytes)
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        // SAFETY: every constructor checks that the bytes are UTF-8 (or takes them from a
        // `str`/`String`), and `Bytes` is immutable, so they stay valid.
        unsafe { std::str::from_utf8_unchecked(&self.0) }
    }

    /// The underlying bytes.
    pub fn as_bytes(&self) -> &Bytes {
        &self.0
    }

    /// Gives up the UTF-8 guarantee and returns the bytes.
    pub fn into_bytes(self) -> Bytes {
        self.0
    }
}

impl Deref for Utf8Bytes {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl From<String> for Utf8Bytes {
    fn from(s: String) -> Self {
        Self(Bytes::from(s))
    }
}

impl From<&str> for Utf8Bytes {
    fn from(s: &str) -> Self {
        Self(Bytes::copy_from_slice(s.as_bytes()))
    }
}

impl fmt::Debug for Utf8Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for Utf8Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn matches_std(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let std_ok = std::str::from_utf8(&bytes).map(str::to_owned);
            match Utf8Bytes::try_from_bytes(Bytes::from(bytes)) {
                Ok(u) => prop_assert_eq!(Ok(u.as_str().to_owned()), std_ok),
                Err(_) => prop_assert!(std_ok.is_err()),
            }
        }
    }
}

//! The `Sec-WebSocket-Extensions` grammar (RFC 6455 9.1):
//! `extension *( ";" param [ "=" ( token / quoted-string ) ] )`, comma-separated offers.

use crate::error::HandshakeError;

/// One extension offer or response: a name and its parameters in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Extension {
    /// The extension token, e.g. `permessage-deflate`.
    pub name: String,
    /// Parameters, with their value (unquoted) if they had one.
    pub params: Vec<(String, Option<String>)>,
}

fn is_tchar(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c)
}

struct Cursor<'a> {
    s: &'a [u8],
    i: usize,
}

impl Cursor<'_> {
    fn skip_ws(&mut self) {
        while matches!(self.s.get(self.i), Some(b' ' | b'\t')) {
            self.i += 1;
        }
    }

    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn token(&mut self) -> Result<String, HandshakeError> {
        self.skip_ws();
        let start = self.i;
        while self.peek().is_some_and(is_tchar) {
            self.i += 1;
        }
        if start == self.i {
            return Err(HandshakeError::MalformedExtensions);
        }
        Ok(String::from_utf8_lossy(&self.s[start..self.i]).into_owned())
    }

    fn quoted(&mut self) -> Result<String, HandshakeError> {
        self.i += 1; // opening quote
        let mut out = Vec::new();
        loop {
            match self.peek() {
                None => return Err(HandshakeError::MalformedExtensions),
                Some(b'"') => {
                    self.i += 1;
                    break;
                }
                Some(b'\\') => {
                    let c = self.s.get(self.i + 1).ok_or(HandshakeError::MalformedExtensions)?;
                    out.push(*c);
                    self.i += 2;
                }
                Some(c) => {
                    out.push(c);
                    self.i += 1;
                }
            }
        }
        // RFC 6455 9.1: a quoted value must still be a token once unescaped.
        if out.is_empty() || !out.iter().copied().all(is_tchar) {
            return Err(HandshakeError::MalformedExtensions);
        }
        Ok(String::from_utf8_lossy(&out).into_owned())
    }
}

/// Parses the values of one or more `Sec-WebSocket-Extensions` headers.
///
/// # Errors
///
/// [`HandshakeError::MalformedExtensions`] when a value does not follow the grammar.
pub fn parse_extensions<'a>(
    values: impl IntoIterator<Item = &'a [u8]>,
) -> Result<Vec<Extension>, HandshakeError> {
    let mut out = Vec::new();
    for value in values {
        let mut c = Cursor { s: value, i: 0 };
        loop {
            c.skip_ws();
            if c.peek().is_none() {
                break;
            }
            if c.peek() == Some(b',') {
                // Empty list elements are allowed by the #rule.
                c.i += 1;
                continue;
            }
            let mut ext = Extension { name: c.token()?, params: Vec::new() };
            loop {
                c.skip_ws();
                match c.peek() {
                    None => break,
                    Some(b',') => {
                        c.i += 1;
                        break;
                    }
                    Some(b';') => {
                        c.i += 1;
                        let name = c.token()?;
                        c.skip_ws();
                        let value = if c.peek() == Some(b'=') {
                            c.i += 1;
                            c.skip_ws();
                            Some(if c.peek() == Some(b'"') { c.quoted()? } else { c.token()? })
                        } else {
                            None
                        };
                        ext.params.push((name, value));
                    }
                    Some(_) => return Err(HandshakeError::MalformedExtensions),
                }
            }
            out.push(ext);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Vec<Extension>, HandshakeError> {
        parse_extensions([s.as_bytes()])
    }

    #[test]
    fn several_offers_with_params() {
        let e = parse(
            "permessage-deflate; client_max_window_bits; server_max_window_bits=10, \
             permessage-deflate;client_max_window_bits=\"12\", x-foo",
        )
        .unwrap();
        assert_eq!(e.len(), 3);
        assert_eq!(e[0].name, "permessage-deflate");
        assert_eq!(
            e[0].params,
            vec![
                ("client_max_window_bits".into(), None),
                ("server_max_window_bits".into(), Some("10".into()))
            ]
        );
        assert_eq!(e[1].params, vec![("client_max_window_bits".into(), Some("12".into()))]);
        assert_eq!(e[2], Extension { name: "x-foo".into(), params: vec![] });
    }

    #[test]
    fn several_header_lines() {
        let e = parse_extensions([&b"a"[..], b"b; c=d"]).unwrap();
        assert_eq!(e.iter().map(|e| e.name.as_str()).collect::<Vec<_>>(), ["a", "b"]);
    }

    #[test]
    fn malformed() {
        for bad in ["; a", "a; =b", "a; b=\"unterminated", "a; b=\"sp ace\"", "a b", "a; b=\"\""] {
            assert_eq!(parse(bad), Err(HandshakeError::MalformedExtensions), "{bad}");
        }
    }

    #[test]
    fn escaped_quoted_value() {
        let e = parse("a; b=\"1\\0\"").unwrap();
        assert_eq!(e[0].params[0].1.as_deref(), Some("10"));
    }
}

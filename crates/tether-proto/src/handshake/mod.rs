//! The opening handshake (RFC 6455 4) as pure functions: bytes in, a parsed request or
//! response out; the caller decides; bytes out.

mod client;
mod extensions;
mod server;
mod url;

pub use client::{ClientHandshake, ClientOptions, Response};
pub use extensions::{parse_extensions, Extension};
pub use server::{
    accept_response, h2_preface, http_response, is_websocket_attempt, parse_http_request, parse_request,
    reject_response, reject_response_with_body, select_protocol, HttpRequest, OriginPolicy, Request,
};
pub use url::Url;

use crate::error::HandshakeError;
use base64::Engine as _;
use http::HeaderMap;
use sha1::{Digest, Sha1};

/// The GUID of RFC 6455 1.3, appended to the key before hashing.
const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// Limits on the handshake head, with their defaults.
#[derive(Debug, Clone)]
pub struct HandshakeLimits {
    /// Largest request or response head, in bytes. Default 16 KiB.
    pub max_bytes: usize,
    /// Most header lines. Default 64.
    pub max_headers: usize,
}

impl Default for HandshakeLimits {
    fn default() -> Self {
        Self { max_bytes: 16 * 1024, max_headers: 64 }
    }
}

/// `Sec-WebSocket-Accept` for a `Sec-WebSocket-Key` (RFC 6455 1.3, 4.2.2).
pub fn accept_key(key: &[u8]) -> String {
    let mut sha = Sha1::new();
    sha.update(key);
    sha.update(GUID.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(sha.finalize())
}

/// Encodes 16 random bytes as a `Sec-WebSocket-Key`.
pub fn encode_key(nonce: [u8; 16]) -> String {
    base64::engine::general_purpose::STANDARD.encode(nonce)
}

fn decodes_to_16_bytes(key: &[u8]) -> bool {
    matches!(base64::engine::general_purpose::STANDARD.decode(key), Ok(v) if v.len() == 16)
}

/// Iterates the comma-separated, trimmed, non-empty elements of every `name` header.
fn list_values<'a>(headers: &'a HeaderMap, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|s| !s.is_empty())
}

/// Whether a comma-list header holds `token`, compared without case.
fn has_token(headers: &HeaderMap, name: &str, token: &str) -> bool {
    list_values(headers, name).any(|t| t.eq_ignore_ascii_case(token))
}

fn to_header_map(raw: &[httparse::Header<'_>]) -> Result<HeaderMap, HandshakeError> {
    let mut map = HeaderMap::with_capacity(raw.len());
    for h in raw {
        let name = http::HeaderName::from_bytes(h.name.as_bytes())
            .map_err(|_| HandshakeError::MalformedHttp("bad header name"))?;
        let value = http::HeaderValue::from_bytes(h.value)
            .map_err(|_| HandshakeError::MalformedHttp("bad header value"))?;
        map.append(name, value);
    }
    Ok(map)
}

/// Checks that a header can be written into a request or response as it is (RFC 9110 5):
/// the name is a token, and the value has no CR, LF, NUL or other control character but
/// tab. A value from user input with a line break in it would otherwise add headers of that
/// user's choosing (CWE-93, CWE-113).
///
/// # Errors
///
/// What is wrong, in a few words.
pub fn check_field(name: &str, value: &str) -> Result<(), &'static str> {
    if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
        return Err("the name is not a token (RFC 9110 5.1)");
    }
    if http::HeaderValue::from_str(value).is_err() {
        return Err("the value holds a line break or another control character");
    }
    Ok(())
}

/// Whether a head in `buf` is worth parsing: its end has arrived ([`find_head_end`], from
/// `searched` on), it has reached the size limit, or its first byte cannot begin an HTTP
/// message (a TLS ClientHello on a plain port begins with 0x16): the parse then refuses it
/// at once, instead of after the handshake timeout.
pub fn head_ready(buf: &[u8], searched: &mut usize, limits: &HandshakeLimits) -> bool {
    let not_http = buf.first().is_some_and(|&b| !b.is_ascii_graphic() && b != b'\r' && b != b'\n');
    not_http || find_head_end(buf, searched).is_some() || buf.len() >= limits.max_bytes
}

/// Finds the end of an HTTP head (the empty line: `\n\r\n` or `\n\n`) in `buf`,
/// searching only from where the last call stopped (`searched`, 0 at first) less the two
/// bytes a terminator may straddle. A shell calls it after every read and parses the head
/// only once it is complete (or at the size limit), so the work for a head that arrives
/// one byte per read is linear in its size rather than quadratic.
pub fn find_head_end(buf: &[u8], searched: &mut usize) -> Option<usize> {
    let start = (*searched).saturating_sub(2).min(buf.len());
    let mut at = start;
    while let Some(i) = buf[at..].iter().position(|&b| b == b'\n').map(|i| at + i) {
        match (buf.get(i + 1), buf.get(i + 2)) {
            (Some(b'\n'), _) => return Some(i + 2),
            (Some(b'\r'), Some(b'\n')) => return Some(i + 3),
            _ => at = i + 1,
        }
    }
    *searched = buf.len();
    None
}

/// Applies the size limit to httparse's verdict on a request or response head: its length
/// once complete, `None` while more bytes may still complete it within the limit.
fn head_len(
    parsed: httparse::Result<usize>,
    buf_len: usize,
    limits: &HandshakeLimits,
) -> Result<Option<usize>, HandshakeError> {
    match parsed {
        Ok(httparse::Status::Complete(n)) if n <= limits.max_bytes => Ok(Some(n)),
        Ok(httparse::Status::Partial) if buf_len < limits.max_bytes => Ok(None),
        Ok(_) => Err(HandshakeError::TooLarge(limits.max_bytes)),
        Err(httparse::Error::TooManyHeaders) => Err(HandshakeError::TooManyHeaders(limits.max_headers)),
        Err(httparse::Error::Version) => Err(HandshakeError::HttpVersion),
        Err(_) => Err(HandshakeError::MalformedHttp("unparseable head")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tls_client_hello_is_refused_without_waiting_for_a_head() {
        let limits = HandshakeLimits::default();
        let hello = [0x16, 0x03, 0x01, 0x02, 0x00, 0x01];
        assert!(head_ready(&hello, &mut 0, &limits));
        assert!(matches!(parse_http_request(&hello, &limits), Err(HandshakeError::MalformedHttp(_))));
        // An HTTP head, whole or not yet, and the empty lines RFC 9112 lets come first.
        assert!(!head_ready(b"GET / HTTP/1.1\r\nHost: h\r\n", &mut 0, &limits));
        assert!(!head_ready(b"\r\nGET / HTTP/1.1\r\n", &mut 0, &limits));
    }

    #[test]
    fn rfc6455_1_3_accept_key() {
        assert_eq!(accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }

    /// Header parsing cost: a 16 KiB head that arrives one byte per read is searched in
    /// linear time (each byte looked at a few times), not re-parsed from the start at
    /// every read.
    #[test]
    fn head_end_search_is_linear_for_a_head_sent_byte_by_byte() {
        let mut head = b"GET / HTTP/1.1\r\nHost: h\r\n".to_vec();
        while head.len() < 16 * 1024 {
            head.extend_from_slice(b"X-Filler: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n");
        }
        head.extend_from_slice(b"\r\n");
        let (mut searched, mut examined) = (0usize, 0usize);
        for len in 1..=head.len() {
            examined += len - searched.saturating_sub(2).min(len);
            let found = find_head_end(&head[..len], &mut searched);
            assert_eq!(found, (len == head.len()).then_some(head.len()), "at {len}");
        }
        assert!(examined <= 3 * head.len(), "{examined} bytes examined for a {}-byte head", head.len());
        // Bare LF line ends too, and a terminator split over reads.
        let mut searched = 0;
        assert_eq!(find_head_end(b"GET / HTTP/1.1\nHost: h\n", &mut searched), None);
        assert_eq!(find_head_end(b"GET / HTTP/1.1\nHost: h\n\n", &mut searched), Some(24));
    }

    #[test]
    fn key_must_decode_to_16_bytes() {
        assert!(decodes_to_16_bytes(b"dGhlIHNhbXBsZSBub25jZQ=="));
        assert!(!decodes_to_16_bytes(b"dGhlIHNhbXBsZQ=="));
        assert!(!decodes_to_16_bytes(b"not base64!"));
    }
}

//! Client side of the opening handshake (RFC 6455 4.1).

use super::{
    accept_key, check_field, encode_key, has_token, head_len, parse_extensions, to_header_map, Extension,
    HandshakeLimits, Url,
};
use crate::deflate::{self, DeflateConfig, DeflateParams};
use crate::error::HandshakeError;
use http::HeaderMap;

/// What the client asks for besides the URL.
#[derive(Debug, Clone, Default)]
pub struct ClientOptions {
    /// Subprotocols to offer, in order of preference.
    pub protocols: Vec<String>,
    /// The `Origin` header to send, if any.
    pub origin: Option<String>,
    /// Extra headers (authorization, cookies, ...).
    pub headers: Vec<(String, String)>,
    /// Limits on the server's answer.
    pub limits: HandshakeLimits,
    /// Offer permessage-deflate with these preferences (`tether` fills this from
    /// `Config::deflate`).
    pub deflate: Option<DeflateConfig>,
}

/// Headers the handshake writes itself: a second copy from the caller would make the
/// request ambiguous (two `Host`s is the classic smuggling shape), so it is refused.
const HANDSHAKE_HEADERS: [&str; 7] = [
    "host",
    "upgrade",
    "connection",
    "sec-websocket-key",
    "sec-websocket-version",
    "sec-websocket-protocol",
    "sec-websocket-extensions",
];

impl ClientOptions {
    /// Checks that every subprotocol, the origin and every extra header can be written into
    /// a request as they are (RFC 9110 5: a name is a token; a value has no CR, LF, NUL or
    /// other control character but tab; RFC 6455 4.1: a subprotocol is a token). A value
    /// from user input with a line break in it would otherwise add headers of the user's
    /// choosing to the request (CWE-93).
    ///
    /// # Errors
    ///
    /// [`HandshakeError::InvalidRequestHeader`] naming the first bad one.
    pub fn check(&self) -> Result<(), HandshakeError> {
        let bad = |name: &str, why| Err(HandshakeError::InvalidRequestHeader { name: name.to_owned(), why });
        for p in &self.protocols {
            if p.is_empty() || http::HeaderName::from_bytes(p.as_bytes()).is_err() {
                return bad(
                    "Sec-WebSocket-Protocol",
                    "a subprotocol must be a non-empty token (RFC 6455 4.1)",
                );
            }
        }
        if let Some(origin) = &self.origin {
            if let Err(why) = check_field("Origin", origin) {
                return bad("Origin", why);
            }
        }
        for (name, value) in &self.headers {
            if let Err(why) = check_field(name, value) {
                return bad(name, why);
            }
            if HANDSHAKE_HEADERS.iter().any(|h| h.eq_ignore_ascii_case(name)) {
                return bad(name, "the handshake sets this header itself");
            }
        }
        Ok(())
    }
}

/// The server's accepted answer.
#[derive(Debug, Clone)]
pub struct Response {
    /// Every header, as sent.
    pub headers: HeaderMap,
    /// The subprotocol the server chose, one we offered.
    pub protocol: Option<String>,
    /// The extensions the server accepted.
    pub extensions: Vec<Extension>,
    /// What was agreed for permessage-deflate, if the server accepted our offer.
    pub deflate: Option<DeflateParams>,
    /// Whether the WebSocket runs on an HTTP/2 stream (RFC 8441) rather than an upgraded
    /// HTTP/1.1 connection.
    pub http2: bool,
}

/// A client handshake in progress: the request was built, the answer is awaited.
#[derive(Debug, Clone)]
pub struct ClientHandshake {
    key: String,
    options: ClientOptions,
}

impl ClientHandshake {
    /// Builds the upgrade request for `url`. `nonce` must be 16 fresh random bytes
    /// (RFC 6455 4.1); the caller supplies them so the core has no randomness of its own.
    ///
    /// # Errors
    ///
    /// [`HandshakeError::InvalidUrl`] or [`HandshakeError::InvalidRequestHeader`] when the
    /// URL's fields or the options hold something that cannot be written into a request
    /// as it is (see [`ClientOptions::check`]); no request is built then.
    pub fn new(
        url: &Url,
        nonce: [u8; 16],
        options: ClientOptions,
    ) -> Result<(Self, Vec<u8>), HandshakeError> {
        url.check()?;
        options.check()?;
        let key = encode_key(nonce);
        let mut out = format!(
            "GET {} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n",
            url.resource,
            url.host_header()
        );
        if !options.protocols.is_empty() {
            out.push_str("Sec-WebSocket-Protocol: ");
            out.push_str(&options.protocols.join(", "));
            out.push_str("\r\n");
        }
        if let Some(d) = &options.deflate {
            out.push_str("Sec-WebSocket-Extensions: ");
            out.push_str(&deflate::client_offer(d));
            out.push_str("\r\n");
        }
        if let Some(origin) = &options.origin {
            out.push_str("Origin: ");
            out.push_str(origin);
            out.push_str("\r\n");
        }
        for (name, value) in &options.headers {
            out.push_str(name);
            out.push_str(": ");
            out.push_str(value.trim());
            out.push_str("\r\n");
        }
        out.push_str("\r\n");
        Ok((Self { key, options }, out.into_bytes()))
    }

    /// Builds the extended CONNECT request of a WebSocket over HTTP/2 for `url` (RFC 8441
    /// 4-5): method `CONNECT`, the URL's scheme (`http`/`https`), authority and path,
    /// `sec-websocket-version: 13`, the offered subprotocols and extensions, `origin` and the
    /// extra headers; no key. The `:protocol websocket` pseudo-header is the HTTP/2
    /// library's to add (h2's `ext::Protocol`).
    ///
    /// # Errors
    ///
    /// As [`ClientHandshake::new`].
    pub fn new_h2(url: &Url, options: ClientOptions) -> Result<(Self, http::Request<()>), HandshakeError> {
        url.check()?;
        options.check()?;
        let scheme = if url.secure { "https" } else { "http" };
        let uri = format!("{scheme}://{}{}", url.host_header(), url.resource);
        let bad = |name: &str| HandshakeError::InvalidRequestHeader {
            name: name.to_owned(),
            why: "cannot be sent over HTTP/2",
        };
        let mut req =
            http::Request::builder().method(http::Method::CONNECT).uri(uri).version(http::Version::HTTP_2);
        req = req.header("sec-websocket-version", "13");
        if !options.protocols.is_empty() {
            req = req.header("sec-websocket-protocol", options.protocols.join(", "));
        }
        if let Some(d) = &options.deflate {
            req = req.header("sec-websocket-extensions", deflate::client_offer(d));
        }
        if let Some(origin) = &options.origin {
            req = req.header("origin", origin.as_str());
        }
        for (name, value) in &options.headers {
            // HTTP/2 field names are lower case; connection-specific fields are not allowed.
            let lower = name.to_ascii_lowercase();
            if ["connection", "keep-alive", "proxy-connection", "transfer-encoding", "te"]
                .contains(&lower.as_str())
            {
                return Err(bad(name));
            }
            req = req.header(lower, value.trim());
        }
        let req = req.body(()).map_err(|_| bad("uri"))?;
        Ok((Self { key: String::new(), options }, req))
    }

    /// Checks the server's answer to [`new_h2`](Self::new_h2)'s request: a 2xx status (RFC
    /// 8441 5), then the subprotocol and extensions as for HTTP/1.1.
    ///
    /// # Errors
    ///
    /// Another status ([`HandshakeError::UnexpectedStatus`], with `location`), or a
    /// subprotocol or extension that was not offered.
    pub fn check_h2_response(&self, status: u16, headers: HeaderMap) -> Result<Response, HandshakeError> {
        if !(200..300).contains(&status) {
            let location =
                headers.get(http::header::LOCATION).and_then(|v| v.to_str().ok()).map(str::to_owned);
            return Err(HandshakeError::UnexpectedStatus {
                status,
                reason: String::new(),
                location,
                body: String::new(),
            });
        }
        let mut response = self.accepted(headers)?;
        response.http2 = true;
        Ok(response)
    }

    /// Parses and checks the server's answer from the start of `buf`.
    ///
    /// Returns `Ok(None)` while the head is incomplete, otherwise the response and the length
    /// of the head; bytes after it are the first frames.
    ///
    /// # Errors
    ///
    /// A status other than 101 ([`HandshakeError::UnexpectedStatus`]), a wrong or missing
    /// `Upgrade`, `Connection` or `Sec-WebSocket-Accept`, or a subprotocol or extension that
    /// was not offered (RFC 6455 4.1, "the client MUST _Fail the WebSocket Connection_").
    pub fn parse_response(&self, buf: &[u8]) -> Result<Option<(Response, usize)>, HandshakeError> {
        let limits = &self.options.limits;
        let mut raw = vec![httparse::EMPTY_HEADER; limits.max_headers];
        let mut resp = httparse::Response::new(&mut raw);
        let Some(len) = head_len(resp.parse(buf), buf.len(), limits)? else { return Ok(None) };
        let status = resp.code.unwrap_or(0);
        let headers = to_header_map(resp.headers)?;
        if status != 101 {
            let reason = resp.reason.unwrap_or("").to_owned();
            let location =
                headers.get(http::header::LOCATION).and_then(|v| v.to_str().ok()).map(str::to_owned);
            let excerpt = &buf[len..buf.len().min(len + 200)];
            let body = String::from_utf8_lossy(excerpt).trim().to_owned();
            return Err(HandshakeError::UnexpectedStatus { status, reason, location, body });
        }
        if !has_token(&headers, "upgrade", "websocket") {
            return Err(HandshakeError::Header("upgrade"));
        }
        if !has_token(&headers, "connection", "upgrade") {
            return Err(HandshakeError::Header("connection"));
        }
        let expected = accept_key(self.key.as_bytes());
        if headers.get("sec-websocket-accept").map(|v| v.as_bytes()) != Some(expected.as_bytes()) {
            return Err(HandshakeError::AcceptMismatch);
        }
        Ok(Some((self.accepted(headers)?, len)))
    }

    /// The subprotocol and extensions of an answer, checked against what was offered.
    fn accepted(&self, headers: HeaderMap) -> Result<Response, HandshakeError> {
        let protocol = match headers.get("sec-websocket-protocol") {
            None => None,
            Some(v) => {
                let p = v.to_str().map_err(|_| HandshakeError::Header("sec-websocket-protocol"))?.trim();
                if !self.options.protocols.iter().any(|o| o == p) {
                    return Err(HandshakeError::UnofferedProtocol(p.to_owned()));
                }
                Some(p.to_owned())
            }
        };
        let extensions =
            parse_extensions(headers.get_all("sec-websocket-extensions").iter().map(|v| v.as_bytes()))?;
        let deflate = match &self.options.deflate {
            Some(config) => deflate::client_accept(&extensions, config)?,
            None => match extensions.first() {
                Some(ext) => return Err(HandshakeError::UnofferedExtension(ext.name.clone())),
                None => None,
            },
        };
        Ok(Response { headers, protocol, extensions, deflate, http2: false })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NONCE: [u8; 16] = *b"the sample nonce";

    fn handshake(protocols: &[&str]) -> (ClientHandshake, String) {
        let url = Url::parse("ws://server.example.com/chat?x=1").unwrap();
        let options = ClientOptions {
            protocols: protocols.iter().map(|s| s.to_string()).collect(),
            origin: Some("http://example.com".into()),
            headers: vec![("Authorization".into(), "Bearer t".into())],
            ..Default::default()
        };
        let (hs, bytes) = ClientHandshake::new(&url, NONCE, options).unwrap();
        (hs, String::from_utf8(bytes).unwrap())
    }

    fn answer(extra: &str) -> String {
        format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n{extra}\r\n"
        )
    }

    #[test]
    fn request_is_rfc_example() {
        let (_, req) = handshake(&["chat", "superchat"]);
        assert!(req.starts_with("GET /chat?x=1 HTTP/1.1\r\nHost: server.example.com\r\n"));
        assert!(req.contains("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"));
        assert!(req.contains("Sec-WebSocket-Protocol: chat, superchat\r\n"));
        assert!(req.contains("Origin: http://example.com\r\n"));
        assert!(req.contains("Authorization: Bearer t\r\n"));
        // Our own server parser accepts it.
        let parsed = crate::handshake::parse_request(req.as_bytes(), &HandshakeLimits::default());
        assert!(parsed.unwrap().is_some());
    }

    /// CWE-93: a value with a line break, from user input, must not add request headers.
    #[test]
    fn header_injection_is_refused_before_a_request_is_built() {
        let url = Url::parse("ws://h/").unwrap();
        let bad_options = [
            ClientOptions {
                headers: vec![("X-Name".into(), "a\r\nX-Injected: 1".into())],
                ..Default::default()
            },
            ClientOptions {
                headers: vec![("X-Name".into(), "a\nX-Injected: 1".into())],
                ..Default::default()
            },
            ClientOptions { headers: vec![("X-Name".into(), "a\0b".into())], ..Default::default() },
            ClientOptions { headers: vec![("X-Bad\r\nX-Injected".into(), "1".into())], ..Default::default() },
            ClientOptions { headers: vec![("X Bad".into(), "1".into())], ..Default::default() },
            ClientOptions { headers: vec![("".into(), "1".into())], ..Default::default() },
            ClientOptions { headers: vec![("Host".into(), "evil.example".into())], ..Default::default() },
            ClientOptions { origin: Some("http://a\r\nX-Injected: 1".into()), ..Default::default() },
            ClientOptions { protocols: vec!["chat\r\nX-Injected: 1".into()], ..Default::default() },
            ClientOptions { protocols: vec!["chat, superchat".into()], ..Default::default() },
            ClientOptions { protocols: vec!["".into()], ..Default::default() },
        ];
        for options in bad_options {
            let err = ClientHandshake::new(&url, NONCE, options.clone()).unwrap_err();
            assert!(matches!(err, HandshakeError::InvalidRequestHeader { .. }), "{options:?}: {err}");
        }
        let mut url = Url::parse("ws://h/").unwrap();
        url.resource = "/\r\nX-Injected: 1".into();
        let err = ClientHandshake::new(&url, NONCE, ClientOptions::default()).unwrap_err();
        assert!(matches!(err, HandshakeError::InvalidUrl(_)), "{err}");
        // What is allowed still goes through: tabs and non-ASCII-free visible text, tokens.
        let fine = ClientOptions {
            headers: vec![("X-Trace".into(), "a\tb c=d; e".into())],
            protocols: vec!["v12.stomp".into()],
            ..Default::default()
        };
        assert!(ClientHandshake::new(&url_ok(), NONCE, fine).is_ok());
    }

    fn url_ok() -> Url {
        Url::parse("ws://h/").unwrap()
    }

    #[test]
    fn accepts_valid_answer() {
        let (hs, _) = handshake(&["chat", "superchat"]);
        let a = answer("Sec-WebSocket-Protocol: chat\r\n");
        let (resp, n) = hs.parse_response(a.as_bytes()).unwrap().unwrap();
        assert_eq!((resp.protocol.as_deref(), n), (Some("chat"), a.len()));
        for i in 0..a.len() {
            assert!(hs.parse_response(&a.as_bytes()[..i]).unwrap().is_none());
        }
    }

    #[test]
    fn answer_size_limit() {
        let url = Url::parse("ws://h/").unwrap();
        let options =
            ClientOptions { limits: HandshakeLimits { max_bytes: 64, max_headers: 8 }, ..Default::default() };
        let (hs, _) = ClientHandshake::new(&url, NONCE, options).unwrap();
        assert_eq!(hs.parse_response(answer("").as_bytes()).unwrap_err(), HandshakeError::TooLarge(64));
    }

    #[test]
    fn refuses_bad_answers() {
        let (hs, _) = handshake(&["chat"]);
        let bad_accept = answer("").replace("s3pP", "AAAA");
        assert_eq!(hs.parse_response(bad_accept.as_bytes()).unwrap_err(), HandshakeError::AcceptMismatch);
        let err = hs.parse_response(answer("Sec-WebSocket-Protocol: mqtt\r\n").as_bytes()).unwrap_err();
        assert_eq!(err, HandshakeError::UnofferedProtocol("mqtt".into()));
        let err = hs
            .parse_response(answer("Sec-WebSocket-Extensions: permessage-deflate\r\n").as_bytes())
            .unwrap_err();
        assert_eq!(err, HandshakeError::UnofferedExtension("permessage-deflate".into()));
        let err =
            hs.parse_response(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 7\r\n\r\nno entry").unwrap_err();
        let expected = HandshakeError::UnexpectedStatus {
            status: 403,
            reason: "Forbidden".into(),
            location: None,
            body: "no entry".into(),
        };
        assert_eq!(err, expected);
        let err = hs.parse_response(b"HTTP/1.1 302 Found\r\nLocation: /elsewhere\r\n\r\n").unwrap_err();
        assert!(
            matches!(err, HandshakeError::UnexpectedStatus { status: 302, location: Some(l), .. } if l == "/elsewhere")
        );
        let no_upgrade = answer("").replace("Upgrade: websocket\r\n", "");
        assert_eq!(hs.parse_response(no_upgrade.as_bytes()).unwrap_err(), HandshakeError::Header("upgrade"));
    }
}

//! Server side of the opening handshake (RFC 6455 4.2).

use super::{
    accept_key, decodes_to_16_bytes, has_token, head_len, list_values, parse_extensions, to_header_map,
    Extension, HandshakeLimits,
};
use crate::error::HandshakeError;
use http::HeaderMap;
use std::fmt::Write as _;
use std::net::SocketAddr;

/// A client's upgrade request that passed every check of RFC 6455 4.2.1.
///
/// The application sees the path, query, headers and (when the shell knows it) the remote
/// address, and accepts or rejects with a status of its choice.
#[derive(Debug, Clone)]
pub struct Request {
    /// The path, without the query.
    pub path: String,
    /// The query string after `?`, if any.
    pub query: Option<String>,
    /// Every header, as sent.
    pub headers: HeaderMap,
    /// The `Sec-WebSocket-Key`.
    pub key: String,
    /// The subprotocols the client offered, in its order.
    pub protocols: Vec<String>,
    /// The extensions the client offered, in its order.
    pub extensions: Vec<Extension>,
    /// The peer's address, filled in by the I/O layer when it has one.
    pub remote_addr: Option<SocketAddr>,
}

impl Request {
    /// The `Origin` header, if present and printable.
    pub fn origin(&self) -> Option<&str> {
        self.headers.get(http::header::ORIGIN).and_then(|v| v.to_str().ok())
    }

    /// The `Host` header.
    pub fn host(&self) -> Option<&str> {
        self.headers.get(http::header::HOST).and_then(|v| v.to_str().ok())
    }
}

/// Any HTTP/1.x request head: what a server sees before it knows whether the request is an
/// upgrade (a server that also serves pages or an API routes on it).
#[derive(Debug, Clone)]
pub struct HttpRequest {
    /// The method, e.g. `GET`.
    pub method: String,
    /// The path, without the query.
    pub path: String,
    /// The query string after `?`, if any.
    pub query: Option<String>,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub version: u8,
    /// Every header, as sent.
    pub headers: HeaderMap,
}

/// Whether request headers make a WebSocket handshake attempt (HTTP/1.1): `Upgrade:
/// websocket`, or a `Sec-WebSocket-Key` or `Sec-WebSocket-Version` header without it. For an
/// HTTP server that parses heads itself (hyper), the same rule as
/// [`HttpRequest::is_websocket_attempt`].
pub fn is_websocket_attempt(headers: &HeaderMap) -> bool {
    has_token(headers, "upgrade", "websocket")
        || headers.contains_key("sec-websocket-key")
        || headers.contains_key("sec-websocket-version")
}

/// Whether a connection starts with the HTTP/2 connection preface (RFC 9113 3.4, prior
/// knowledge): `Some(true)` for `PRI `, which no HTTP/1 method is; `Some(false)` when `buf`
/// cannot be its start; `None` while too short to tell.
pub fn h2_preface(buf: &[u8]) -> Option<bool> {
    const START: &[u8] = b"PRI ";
    if buf.len() >= START.len() {
        Some(buf.starts_with(START))
    } else if START.starts_with(buf) {
        None
    } else {
        Some(false)
    }
}

impl HttpRequest {
    /// Whether the request asks for a WebSocket upgrade (`Upgrade: websocket`).
    pub fn is_upgrade(&self) -> bool {
        has_token(&self.headers, "upgrade", "websocket")
    }

    /// Whether the request is a WebSocket handshake attempt: `Upgrade: websocket`, or a
    /// `Sec-WebSocket-Key` or `Sec-WebSocket-Version` header without it. An attempt is
    /// checked as a handshake ([`into_upgrade`](Self::into_upgrade): 426 without
    /// `Upgrade`, 400 for a bad key) and is never answered as a plain request.
    pub fn is_websocket_attempt(&self) -> bool {
        is_websocket_attempt(&self.headers)
    }

    /// Whether the connection stays open after the answer: HTTP/1.1 without
    /// `Connection: close`, or HTTP/1.0 with `Connection: keep-alive`.
    pub fn keep_alive(&self) -> bool {
        if self.version == 1 {
            !has_token(&self.headers, "connection", "close")
        } else {
            has_token(&self.headers, "connection", "keep-alive")
        }
    }

    /// The body length from `Content-Length` (0 without one).
    ///
    /// # Errors
    ///
    /// [`HandshakeError::Header`] for an unparseable or repeated `Content-Length`, and for
    /// `Transfer-Encoding` (chunked bodies are not supported: 411 would be the honest answer,
    /// and 400 is what we send).
    pub fn content_length(&self) -> Result<usize, HandshakeError> {
        if self.headers.contains_key(http::header::TRANSFER_ENCODING) {
            return Err(HandshakeError::Header("transfer-encoding"));
        }
        let mut values = self.headers.get_all(http::header::CONTENT_LENGTH).iter();
        match (values.next(), values.next()) {
            (None, _) => Ok(0),
            (Some(v), None) => v
                .to_str()
                .ok()
                .and_then(|v| v.trim().parse().ok())
                .ok_or(HandshakeError::Header("content-length")),
            _ => Err(HandshakeError::Header("content-length")),
        }
    }

    /// Checks the head as an upgrade request (RFC 6455 4.2.1).
    ///
    /// # Errors
    ///
    /// A [`HandshakeError`] whose [`status`](HandshakeError::status) is the answer to send.
    pub fn into_upgrade(self) -> Result<Request, HandshakeError> {
        // RFC 6455 4.2.1: "An HTTP/1.1 or higher GET request".
        if self.method != "GET" {
            return Err(HandshakeError::MethodNotAllowed);
        }
        if self.version != 1 {
            return Err(HandshakeError::HttpVersion);
        }
        let headers = self.headers;
        if !headers.contains_key(http::header::HOST) {
            return Err(HandshakeError::Header("host"));
        }
        if !has_token(&headers, "upgrade", "websocket") {
            return Err(HandshakeError::NotUpgrade);
        }
        if !has_token(&headers, "connection", "upgrade") {
            return Err(HandshakeError::Header("connection"));
        }
        // RFC 6455 4.2.2: on a version we do not speak, answer 426 with the versions we do.
        if headers.get("sec-websocket-version").map(|v| v.as_bytes()) != Some(b"13") {
            return Err(HandshakeError::UnsupportedVersion);
        }
        let key = match headers.get("sec-websocket-key") {
            Some(k) if decodes_to_16_bytes(k.as_bytes()) => {
                k.to_str().map_err(|_| HandshakeError::Header("sec-websocket-key"))?.to_owned()
            }
            _ => return Err(HandshakeError::Header("sec-websocket-key")),
        };
        let protocols = list_values(&headers, "sec-websocket-protocol").map(str::to_owned).collect();
        let extensions =
            parse_extensions(headers.get_all("sec-websocket-extensions").iter().map(|v| v.as_bytes()))?;
        let (path, query) = (self.path, self.query);
        Ok(Request { path, query, headers, key, protocols, extensions, remote_addr: None })
    }
}

impl HttpRequest {
    /// Checks an HTTP/2 request as a WebSocket bootstrap (RFC 8441 4 and 5): an extended
    /// `CONNECT` whose `:protocol` (given here, as the HTTP/2 layer decoded it) is
    /// `websocket`, with `Sec-WebSocket-Version: 13`. There is no key and no accept value,
    /// and neither `Upgrade` nor `Connection` (HTTP/2 forbids them); subprotocols and
    /// extensions are read as in HTTP/1.1. The answer is a 2xx, not a 101.
    ///
    /// # Errors
    ///
    /// 405 for another method, 400 for a missing or other `:protocol`, 426 for another
    /// WebSocket version, 400 for malformed extensions.
    pub fn into_h2_upgrade(self, protocol: Option<&str>) -> Result<Request, HandshakeError> {
        if self.method != "CONNECT" {
            return Err(HandshakeError::MethodNotAllowed);
        }
        if !protocol.is_some_and(|p| p.eq_ignore_ascii_case("websocket")) {
            return Err(HandshakeError::Header(":protocol"));
        }
        let headers = self.headers;
        if headers.get("sec-websocket-version").map(|v| v.as_bytes()) != Some(b"13") {
            return Err(HandshakeError::UnsupportedVersion);
        }
        let protocols = list_values(&headers, "sec-websocket-protocol").map(str::to_owned).collect();
        let extensions =
            parse_extensions(headers.get_all("sec-websocket-extensions").iter().map(|v| v.as_bytes()))?;
        let (path, query) = (self.path, self.query);
        Ok(Request { path, query, headers, key: String::new(), protocols, extensions, remote_addr: None })
    }
}

/// Parses any HTTP/1.x request head from the start of `buf`, within `limits`.
///
/// Returns `Ok(None)` while the head is incomplete, otherwise the head and its length.
///
/// # Errors
///
/// A [`HandshakeError`] whose [`status`](HandshakeError::status) is the answer to send:
/// 431 over the limits, 505 for another HTTP version, 400 for a malformed head.
pub fn parse_http_request(
    buf: &[u8],
    limits: &HandshakeLimits,
) -> Result<Option<(HttpRequest, usize)>, HandshakeError> {
    let mut raw = vec![httparse::EMPTY_HEADER; limits.max_headers];
    let mut req = httparse::Request::new(&mut raw);
    let Some(len) = head_len(req.parse(buf), buf.len(), limits)? else { return Ok(None) };
    let method = req.method.unwrap_or("GET").to_owned();
    let version = req.version.unwrap_or(1);
    let target = req.path.unwrap_or("/");
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p.to_owned(), Some(q.to_owned())),
        None => (target.to_owned(), None),
    };
    let headers = to_header_map(req.headers)?;
    Ok(Some((HttpRequest { method, path, query, version, headers }, len)))
}

/// Parses and validates an upgrade request from the start of `buf`.
///
/// Returns `Ok(None)` while the head is incomplete, otherwise the request and the length of
/// the head. Bytes after the head (a client may pipeline its first frames) are the caller's.
///
/// # Errors
///
/// A [`HandshakeError`] whose [`status`](HandshakeError::status) is the answer to send.
pub fn parse_request(
    buf: &[u8],
    limits: &HandshakeLimits,
) -> Result<Option<(Request, usize)>, HandshakeError> {
    match parse_http_request(buf, limits)? {
        None => Ok(None),
        Some((head, len)) => Ok(Some((head.into_upgrade()?, len))),
    }
}

/// A complete HTTP/1.1 answer with a body (`Content-Length` set), for servers that answer
/// plain requests beside upgrades. `keep_alive: false` adds `Connection: close`;
/// `head_only` (the answer to HEAD) keeps the head of the GET answer and leaves out the
/// body (RFC 9110 9.3.2).
pub fn http_response(
    status: u16,
    headers: &[(&str, &str)],
    body: &[u8],
    keep_alive: bool,
    head_only: bool,
) -> Vec<u8> {
    let phrase =
        http::StatusCode::from_u16(status).ok().and_then(|s| s.canonical_reason()).unwrap_or("Status");
    let mut out = format!("HTTP/1.1 {status} {phrase}\r\nContent-Length: {}\r\n", body.len());
    if !keep_alive {
        out.push_str("Connection: close\r\n");
    }
    for (name, value) in headers {
        let _ = write!(out, "{name}: {value}\r\n");
    }
    out.push_str("\r\n");
    let mut bytes = out.into_bytes();
    if !head_only {
        bytes.extend_from_slice(body);
    }
    bytes
}

/// Picks the subprotocol: the first of the server's `preferred` (its own order of
/// preference) that the client offered. `None` means no `Sec-WebSocket-Protocol` in the
/// answer, which RFC 6455 allows even when the client offered some.
pub fn select_protocol<'a, S: AsRef<str>>(offered: &[String], preferred: &'a [S]) -> Option<&'a str> {
    preferred.iter().map(AsRef::as_ref).find(|p| offered.iter().any(|o| o == p))
}

/// Which `Origin` values the server accepts.
///
/// A request without `Origin` comes from a non-browser client, which could send any Origin
/// it liked; the policy exists to stop other web pages from using a visitor's browser, so
/// such requests pass every policy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum OriginPolicy {
    /// Any origin.
    #[default]
    Any,
    /// Only these origins (`scheme://host[:port]`, compared without case).
    AllowList(Vec<String>),
    /// Only an origin whose host and port equal the `Host` header.
    SameHost,
}

impl OriginPolicy {
    /// Whether a request from `origin` to `host` (its `Host` header or `:authority`) passes:
    /// the rule of [`check`](Self::check), for requests other than a WebSocket handshake
    /// (SockJS's HTTP transports, say).
    pub fn allows(&self, origin: &str, host: Option<&str>) -> bool {
        match self {
            Self::Any => true,
            Self::AllowList(list) => list.iter().any(|o| o.eq_ignore_ascii_case(origin)),
            Self::SameHost => {
                let authority = origin.split_once("://").map_or(origin, |(_, rest)| rest);
                host.is_some_and(|h| h.eq_ignore_ascii_case(authority))
            }
        }
    }

    /// Checks a request.
    ///
    /// # Errors
    ///
    /// [`HandshakeError::OriginRejected`] (403) when the origin is not allowed.
    pub fn check(&self, req: &Request) -> Result<(), HandshakeError> {
        let Some(origin) = req.origin() else { return Ok(()) };
        if self.allows(origin, req.host()) {
            Ok(())
        } else {
            Err(HandshakeError::OriginRejected)
        }
    }
}

/// The `101 Switching Protocols` answer (RFC 6455 4.2.2).
pub fn accept_response(
    req: &Request,
    protocol: Option<&str>,
    extensions: Option<&str>,
    extra: &HeaderMap,
) -> Vec<u8> {
    let mut out = String::with_capacity(160);
    out.push_str("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n");
    let _ = write!(out, "Sec-WebSocket-Accept: {}\r\n", accept_key(req.key.as_bytes()));
    if let Some(p) = protocol {
        let _ = write!(out, "Sec-WebSocket-Protocol: {p}\r\n");
    }
    if let Some(e) = extensions {
        let _ = write!(out, "Sec-WebSocket-Extensions: {e}\r\n");
    }
    let mut bytes = out.into_bytes();
    write_extra(&mut bytes, extra);
    bytes.extend_from_slice(b"\r\n");
    bytes
}

/// An HTTP error answer with a short plain-text reason, closing the connection.
/// For 426 it carries `Sec-WebSocket-Version: 13` and `Upgrade: websocket` (RFC 6455 4.2.2).
pub fn reject_response(status: u16, reason: &str, extra: &HeaderMap) -> Vec<u8> {
    reject_response_with_body(status, "text/plain; charset=utf-8", format!("{reason}\n").as_bytes(), extra)
}

/// As [`reject_response`], with a body of the caller's (`content_type`, `body`): an
/// application's refusal in JSON, say.
pub fn reject_response_with_body(status: u16, content_type: &str, body: &[u8], extra: &HeaderMap) -> Vec<u8> {
    let phrase =
        http::StatusCode::from_u16(status).ok().and_then(|s| s.canonical_reason()).unwrap_or("Error");
    let mut out = format!(
        "HTTP/1.1 {status} {phrase}\r\nContent-Type: {content_type}\r\n\
         Content-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    if status == 426 {
        out.push_str("Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n");
    }
    if status == 405 {
        out.push_str("Allow: GET\r\n");
    }
    let mut bytes = out.into_bytes();
    write_extra(&mut bytes, extra);
    bytes.extend_from_slice(b"\r\n");
    bytes.extend_from_slice(body);
    bytes
}

fn write_extra(out: &mut Vec<u8>, extra: &HeaderMap) {
    for (name, value) in extra {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_http2_preface_is_told_from_http1_heads() {
        assert_eq!(h2_preface(b""), None);
        assert_eq!(h2_preface(b"PR"), None);
        assert_eq!(h2_preface(b"PRI * HTTP/2.0\r\n"), Some(true));
        assert_eq!(h2_preface(b"GET / HTTP/1.1\r\n"), Some(false));
        assert_eq!(h2_preface(b"PU"), Some(false));
        assert_eq!(h2_preface(b"PRIX"), Some(false));
    }

    const GOOD: &str = "GET /chat?room=1 HTTP/1.1\r\nHost: server.example.com\r\nUpgrade: websocket\r\n\
        Connection: keep-alive, Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
        Origin: http://example.com\r\nSec-WebSocket-Protocol: chat, superchat\r\n\
        Sec-WebSocket-Version: 13\r\n\r\n";

    fn parse(s: &str) -> Result<Option<(Request, usize)>, HandshakeError> {
        parse_request(s.as_bytes(), &HandshakeLimits::default())
    }

    #[test]
    fn rfc6455_example_request() {
        let (req, n) = parse(GOOD).unwrap().unwrap();
        assert_eq!(n, GOOD.len());
        assert_eq!(req.path, "/chat");
        assert_eq!(req.query.as_deref(), Some("room=1"));
        assert_eq!(req.protocols, ["chat", "superchat"]);
        assert_eq!(req.origin(), Some("http://example.com"));
        let resp = String::from_utf8(accept_response(&req, Some("chat"), None, &HeaderMap::new())).unwrap();
        assert!(resp.starts_with("HTTP/1.1 101 Switching Protocols\r\n"));
        assert!(resp.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
        assert!(resp.contains("Sec-WebSocket-Protocol: chat\r\n"));
        assert!(resp.ends_with("\r\n\r\n"));
    }

    #[test]
    fn incomplete_then_complete_for_every_prefix() {
        for i in 0..GOOD.len() {
            assert!(parse(&GOOD[..i]).unwrap().is_none(), "prefix {i}");
        }
    }

    #[test]
    fn case_insensitive_tokens_and_lists() {
        let s = GOOD
            .replace("Upgrade: websocket", "upgrade: WebSocket")
            .replace("keep-alive, Upgrade", "keep-alive,UPGRADE");
        assert!(parse(&s).unwrap().is_some());
    }

    #[test]
    fn rejections_carry_statuses() {
        let cases: [(String, u16); 9] = [
            (GOOD.replace("GET", "POST"), 405),
            (GOOD.replace("HTTP/1.1", "HTTP/1.0"), 505),
            (GOOD.replace("Host: server.example.com\r\n", ""), 400),
            (GOOD.replace("Upgrade: websocket\r\n", ""), 426),
            (GOOD.replace("keep-alive, Upgrade", "keep-alive"), 400),
            (GOOD.replace("Version: 13", "Version: 8"), 426),
            (GOOD.replace("dGhlIHNhbXBsZSBub25jZQ==", "dGhlIHNhbXBsZQ=="), 400),
            (
                GOOD.replace(
                    "Sec-WebSocket-Version: 13\r\n",
                    "Sec-WebSocket-Extensions: ;\r\nSec-WebSocket-Version: 13\r\n",
                ),
                400,
            ),
            ("GARBAGE\r\n\r\n".to_owned(), 400),
        ];
        for (req, status) in cases {
            let err = parse(&req).unwrap_err();
            assert_eq!(err.status(), status, "{err}: {req}");
        }
    }

    #[test]
    fn size_and_header_limits() {
        let limits = HandshakeLimits { max_bytes: 64, max_headers: 4 };
        let err = parse_request(GOOD.as_bytes(), &limits).unwrap_err();
        assert_eq!(err.status(), 431);
        let limits = HandshakeLimits { max_bytes: 4096, max_headers: 4 };
        assert_eq!(parse_request(GOOD.as_bytes(), &limits).unwrap_err(), HandshakeError::TooManyHeaders(4));
        // An endless head with no terminator is refused once it reaches the limit.
        let endless = "GET / HTTP/1.1\r\nX: ".to_owned() + &"a".repeat(100);
        let limits = HandshakeLimits { max_bytes: 64, max_headers: 4 };
        assert_eq!(parse_request(endless.as_bytes(), &limits).unwrap_err(), HandshakeError::TooLarge(64));
    }

    #[test]
    fn reject_426_names_the_version() {
        let r = String::from_utf8(reject_response(426, "unsupported websocket version", &HeaderMap::new()))
            .unwrap();
        assert!(r.starts_with("HTTP/1.1 426 Upgrade Required\r\n"));
        assert!(r.contains("Sec-WebSocket-Version: 13\r\n"));
        assert!(r.ends_with("\r\n\r\nunsupported websocket version\n"));
    }

    #[test]
    fn protocol_choice_follows_server_preference() {
        let offered = vec!["chat".to_owned(), "superchat".to_owned()];
        assert_eq!(select_protocol(&offered, &["superchat", "chat"]), Some("superchat"));
        assert_eq!(select_protocol(&offered, &["chat", "superchat"]), Some("chat"));
        assert_eq!(select_protocol(&offered, &["mqtt"]), None);
        assert_eq!(select_protocol::<&str>(&[], &["chat"]), None);
    }

    #[test]
    fn origin_policies() {
        let (req, _) = parse(GOOD).unwrap().unwrap();
        assert!(OriginPolicy::Any.check(&req).is_ok());
        assert!(OriginPolicy::AllowList(vec!["HTTP://example.com".into()]).check(&req).is_ok());
        assert_eq!(
            OriginPolicy::AllowList(vec!["https://example.com".into()]).check(&req),
            Err(HandshakeError::OriginRejected)
        );
        assert!(OriginPolicy::SameHost.check(&req).is_err());
        let same = GOOD.replace("http://example.com", "https://server.example.com");
        let (req, _) = parse(&same).unwrap().unwrap();
        assert!(OriginPolicy::SameHost.check(&req).is_ok());
        let none = GOOD.replace("Origin: http://example.com\r\n", "");
        let (req, _) = parse(&none).unwrap().unwrap();
        assert!(OriginPolicy::SameHost.check(&req).is_ok());
    }

    #[test]
    fn rfc8441_extended_connect() {
        let h2 = |method: &str, extra: &[(&'static str, &str)]| {
            let mut headers = HeaderMap::new();
            for (n, v) in extra {
                headers.insert(*n, v.parse().unwrap());
            }
            HttpRequest { method: method.into(), path: "/chat".into(), query: None, version: 2, headers }
        };
        let v13 = [("sec-websocket-version", "13"), ("sec-websocket-protocol", "chat, superchat")];
        let ok = h2("CONNECT", &v13).into_h2_upgrade(Some("websocket")).unwrap();
        assert_eq!((ok.path.as_str(), ok.key.as_str()), ("/chat", ""));
        assert_eq!(ok.protocols, ["chat", "superchat"]);
        let status = |r: Result<Request, HandshakeError>| r.unwrap_err().status();
        assert_eq!(status(h2("GET", &v13).into_h2_upgrade(Some("websocket"))), 405);
        assert_eq!(status(h2("CONNECT", &v13).into_h2_upgrade(Some("webtransport"))), 400);
        assert_eq!(status(h2("CONNECT", &v13).into_h2_upgrade(None)), 400);
        assert_eq!(
            status(h2("CONNECT", &[("sec-websocket-version", "8")]).into_h2_upgrade(Some("websocket"))),
            426
        );
    }
}

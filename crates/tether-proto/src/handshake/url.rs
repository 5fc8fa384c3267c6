//! The `ws://` and `wss://` URLs of RFC 6455 3.

use crate::error::HandshakeError;

/// A parsed WebSocket URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Url {
    /// `wss://`.
    pub secure: bool,
    /// Host name or address; an IPv6 address is kept without brackets.
    pub host: String,
    /// Port: explicit, or 80 for ws and 443 for wss.
    pub port: u16,
    /// Path and query, starting with `/`.
    pub resource: String,
}

impl Url {
    /// Parses `ws[s]://host[:port][/path][?query]` with a real URI parser (`http::Uri`,
    /// RFC 3986): a character that may not appear in a URL (a space, CR, LF or another
    /// control character) is an error, so nothing from a URL can add a line to the request.
    ///
    /// # Errors
    ///
    /// [`HandshakeError::InvalidUrl`] naming what is wrong: a scheme other than ws/wss, a
    /// missing host, a bad port, a character outside RFC 3986, or a fragment (RFC 6455 3
    /// forbids them).
    pub fn parse(s: &str) -> Result<Self, HandshakeError> {
        // RFC 6455 3: "Fragment identifiers are meaningless in the context of WebSocket URIs
        // and MUST NOT be used". http::Uri drops a fragment silently, so look first.
        if s.contains('#') {
            return Err(HandshakeError::InvalidUrl("fragments are not allowed"));
        }
        if !s.contains("://") {
            return Err(HandshakeError::InvalidUrl("missing scheme (ws:// or wss://)"));
        }
        let uri: http::Uri = s.parse().map_err(|_| {
            HandshakeError::InvalidUrl(
                "not a valid URL (spaces, line breaks and other control characters must be percent-encoded)",
            )
        })?;
        let secure = match uri.scheme_str() {
            Some(s) if s.eq_ignore_ascii_case("ws") => false,
            Some(s) if s.eq_ignore_ascii_case("wss") => true,
            _ => return Err(HandshakeError::InvalidUrl("scheme must be ws or wss")),
        };
        let authority = uri.authority().ok_or(HandshakeError::InvalidUrl("missing host"))?;
        if authority.as_str().contains('@') {
            return Err(HandshakeError::InvalidUrl("user info is not supported"));
        }
        let host = authority.host();
        let after_host = &authority.as_str()[host.len()..];
        let bracketed = host.starts_with('[');
        let host = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
        if host.is_empty() {
            return Err(HandshakeError::InvalidUrl("missing host"));
        }
        if !valid_host(host) || (bracketed && !host.contains(':')) {
            return Err(HandshakeError::InvalidUrl(
                "bad host (a name, an IPv4 address or a bracketed IPv6 address)",
            ));
        }
        // The port's text after the host (http's `port()` hides one that is out of range).
        let port = match after_host {
            "" => Some(if secure { 443 } else { 80 }),
            p => p.strip_prefix(':').and_then(|p| p.parse::<u16>().ok()).filter(|&p| p != 0),
        };
        let port = port.ok_or(HandshakeError::InvalidUrl("bad port"))?;
        let resource = match uri.path_and_query().map(|pq| pq.as_str()).unwrap_or("") {
            "" => "/".to_owned(),
            q if q.starts_with('?') => format!("/{q}"),
            pq => pq.to_owned(),
        };
        Ok(Self { secure, host: host.to_owned(), port, resource })
    }

    /// Checks fields that may have been set by hand: the resource must be an RFC 3986 path
    /// and query starting with `/`, the host a valid authority.
    ///
    /// # Errors
    ///
    /// [`HandshakeError::InvalidUrl`].
    pub fn check(&self) -> Result<(), HandshakeError> {
        let resource_ok = self.resource.starts_with('/')
            && !self.resource.contains('#')
            && self.resource.parse::<http::uri::PathAndQuery>().is_ok();
        if !resource_ok {
            return Err(HandshakeError::InvalidUrl("the path and query are not a valid URL resource"));
        }
        if !valid_host(&self.host) || self.host_header().parse::<http::uri::Authority>().is_err() {
            return Err(HandshakeError::InvalidUrl("the host is not a valid host name or address"));
        }
        Ok(())
    }

    /// Where a redirect's `Location` leads from this URL: an absolute `ws`/`wss`/`http`/
    /// `https` URL (http maps to ws, https to wss) or a path on the same host.
    ///
    /// # Errors
    ///
    /// [`HandshakeError::Redirect`] from `wss://` to `ws://` (a downgrade: never followed), or
    /// for a `Location` that is not a usable URL.
    pub fn redirect(&self, location: &str) -> Result<Url, HandshakeError> {
        let target = if location.starts_with('/') {
            Url { resource: location.to_owned(), ..self.clone() }
        } else {
            let lower = location.to_ascii_lowercase();
            let mapped = if lower.starts_with("http://") {
                format!("ws://{}", &location[7..])
            } else if lower.starts_with("https://") {
                format!("wss://{}", &location[8..])
            } else {
                location.to_owned()
            };
            Url::parse(&mapped)
                .map_err(|e| HandshakeError::Redirect(format!("unusable location {location:?}: {e}")))?
        };
        target
            .check()
            .map_err(|e| HandshakeError::Redirect(format!("unusable location {location:?}: {e}")))?;
        if self.secure && !target.secure {
            return Err(HandshakeError::Redirect(format!("from wss:// to ws:// ({location})")));
        }
        Ok(target)
    }

    /// The URL as text.
    pub fn to_url_string(&self) -> String {
        format!(
            "{}://{}{}",
            if self.secure { "wss" } else { "ws" },
            self.host_header_with_port(),
            self.resource
        )
    }

    fn host_header_with_port(&self) -> String {
        let host = if self.host.contains(':') { format!("[{}]", self.host) } else { self.host.clone() };
        format!("{host}:{}", self.port)
    }

    /// The `Host` header value: the port is left out when it is the scheme's default.
    pub fn host_header(&self) -> String {
        let host = if self.host.contains(':') { format!("[{}]", self.host) } else { self.host.clone() };
        let default = if self.secure { 443 } else { 80 };
        if self.port == default {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }
}

/// A host a WebSocket URL may name: an IPv6 address (kept without brackets), or a DNS name
/// or IPv4 address made of letters, digits, `-`, `.`, `_` and `~`. RFC 3986's reg-name
/// allows more (percent-encoding, sub-delims), none of which names a host a socket can
/// reach, and all of which would have to be written into `Host` as they are.
fn valid_host(host: &str) -> bool {
    if host.contains(':') {
        host.parse::<std::net::Ipv6Addr>().is_ok()
    } else {
        !host.is_empty() && host.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses() {
        let u = Url::parse("ws://example.com").unwrap();
        assert_eq!((u.secure, u.host.as_str(), u.port, u.resource.as_str()), (false, "example.com", 80, "/"));
        let u = Url::parse("wss://example.com/a/b?x=1&y").unwrap();
        assert_eq!((u.secure, u.port, u.resource.as_str()), (true, 443, "/a/b?x=1&y"));
        let u = Url::parse("ws://127.0.0.1:9001?q").unwrap();
        assert_eq!((u.port, u.resource.as_str(), u.host_header().as_str()), (9001, "/?q", "127.0.0.1:9001"));
        let u = Url::parse("ws://[::1]:8080/x").unwrap();
        assert_eq!((u.host.as_str(), u.port, u.host_header().as_str()), ("::1", 8080, "[::1]:8080"));
        assert_eq!(Url::parse("WS://h:80/").unwrap().host_header(), "h");
    }

    #[test]
    fn hand_made_fields_are_checked() {
        let mut u = Url::parse("ws://h/ok").unwrap();
        assert!(u.check().is_ok());
        u.resource = "/a\r\nX-Injected: 1".into();
        assert!(u.check().is_err());
        let mut u = Url::parse("ws://h/ok").unwrap();
        u.host = "h\r\nX-Injected: 1".into();
        assert!(u.check().is_err());
    }

    #[test]
    fn redirects() {
        let here = Url::parse("ws://a.example:8080/x?y").unwrap();
        assert_eq!(here.redirect("/z").unwrap().to_url_string(), "ws://a.example:8080/z");
        assert_eq!(here.redirect("ws://b.example/q").unwrap().to_url_string(), "ws://b.example:80/q");
        assert_eq!(here.redirect("https://c.example/").unwrap().to_url_string(), "wss://c.example:443/");
        let secure = Url::parse("wss://a.example/").unwrap();
        assert!(matches!(secure.redirect("ws://a.example/"), Err(HandshakeError::Redirect(_))));
        assert!(matches!(secure.redirect("http://a.example/"), Err(HandshakeError::Redirect(_))));
        assert_eq!(secure.redirect("/other").unwrap().to_url_string(), "wss://a.example:443/other");
        assert!(matches!(here.redirect("ftp://x/"), Err(HandshakeError::Redirect(_))));
    }

    #[test]
    fn rejects() {
        for bad in [
            "http://x",
            "x",
            "ws://",
            "ws://:80",
            "ws://h:0",
            "ws://h:99999",
            "ws://h:p",
            "ws://h/#f",
            "ws://u@h",
            "ws://[::1",
            "ws://h:",
            "ws://h/a b",
            "ws://h/\r\nX-Injected: 1",
            "ws://h/?q=\nX-Injected: 1",
            "ws://h\r\nX: 1/",
            // Found by the `url` fuzz target: text after a bracketed host that is not a port,
            // and hosts that cannot be written into `Host`.
            "ws://[%%%hhhhh!]0&5/%%%%%%%%hhh0~q",
            "ws://[%0%hh!]:45/05/0",
            "ws://%41/",
            "ws://a!b/",
            "ws://[::1]x/",
            "ws://[not-v6]/",
        ] {
            assert!(matches!(Url::parse(bad), Err(HandshakeError::InvalidUrl(_))), "{bad}");
        }
    }
}

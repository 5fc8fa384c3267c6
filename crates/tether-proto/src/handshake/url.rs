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
    /// Parses `ws[s]://host[:port][/path][?query]`.
    ///
    /// # Errors
    ///
    /// [`HandshakeError::InvalidUrl`] naming what is wrong: a scheme other than ws/wss, a
    /// missing host, a bad port, or a fragment (RFC 6455 3 forbids them).
    pub fn parse(s: &str) -> Result<Self, HandshakeError> {
        let (scheme, rest) =
            s.split_once("://").ok_or(HandshakeError::InvalidUrl("missing scheme (ws:// or wss://)"))?;
        let secure = match scheme.to_ascii_lowercase().as_str() {
            "ws" => false,
            "wss" => true,
            _ => return Err(HandshakeError::InvalidUrl("scheme must be ws or wss")),
        };
        if rest.contains('#') {
            return Err(HandshakeError::InvalidUrl("fragments are not allowed"));
        }
        let split = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, resource) = rest.split_at(split);
        let resource = if resource.is_empty() {
            "/".to_owned()
        } else if resource.starts_with('?') {
            format!("/{resource}")
        } else {
            resource.to_owned()
        };
        if authority.contains('@') {
            return Err(HandshakeError::InvalidUrl("user info is not supported"));
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (host, after) = v6.split_once(']').ok_or(HandshakeError::InvalidUrl("unclosed ["))?;
            let port = match after {
                "" => None,
                p => Some(p.strip_prefix(':').ok_or(HandshakeError::InvalidUrl("bad port"))?),
            };
            (host, port)
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            }
        };
        if host.is_empty() {
            return Err(HandshakeError::InvalidUrl("missing host"));
        }
        let port = match port {
            None => {
                if secure {
                    443
                } else {
                    80
                }
            }
            Some(p) => {
                p.parse::<u16>().ok().filter(|&p| p != 0).ok_or(HandshakeError::InvalidUrl("bad port"))?
            }
        };
        Ok(Self { secure, host: host.to_owned(), port, resource })
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
        ] {
            assert!(matches!(Url::parse(bad), Err(HandshakeError::InvalidUrl(_))), "{bad}");
        }
    }
}

//! Client proxies, sans IO: proxy URLs, the environment variables that choose them
//! (`HTTPS_PROXY`, `HTTP_PROXY`, `ALL_PROXY`, `NO_PROXY` and their lower-case forms), the
//! HTTP `CONNECT` exchange (RFC 9110 9.3.6) and the SOCKS5 exchange (RFC 1928, with the
//! username/password method of RFC 1929).
//!
//! The I/O layer opens the TCP connection to the proxy, writes what these functions build
//! and feeds what it reads to their parsers, which answer "need more bytes" with `None`.

use base64::Engine as _;
use std::net::IpAddr;

/// Why a proxy could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProxyError {
    /// The proxy URL cannot be used.
    #[error("invalid proxy url {url:?}: {why}")]
    InvalidUrl {
        /// The URL as given, with any password hidden.
        url: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// The HTTP proxy answered `CONNECT` with a status other than 2xx.
    #[error("proxy refused the tunnel: HTTP {status} {reason}")]
    Refused {
        /// The proxy's status code (407: it wants credentials, or did not accept ours).
        status: u16,
        /// The proxy's reason phrase.
        reason: String,
    },
    /// The SOCKS5 proxy does not accept any authentication method we offer.
    #[error("socks5 proxy accepts none of our authentication methods{}", if *.offered_password { "" } else { " (it may want a username and password)" })]
    NoAcceptableMethod {
        /// Whether we offered username/password.
        offered_password: bool,
    },
    /// The SOCKS5 proxy rejected the username and password.
    #[error("socks5 proxy rejected the username and password")]
    AuthFailed,
    /// The SOCKS5 proxy could not make the connection.
    #[error("socks5 proxy could not connect: {0}")]
    SocksReply(&'static str),
    /// The proxy's answer is not valid for the protocol.
    #[error("malformed answer from proxy: {0}")]
    Malformed(&'static str),
}

/// How to speak to a proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyKind {
    /// HTTP `CONNECT` tunnel (`http://`; default port 80).
    Http,
    /// SOCKS5 (`socks5://` resolves the target name locally, `socks5h://` lets the proxy
    /// resolve it; default port 1080).
    Socks5 {
        /// Whether the proxy resolves the target host name.
        remote_dns: bool,
    },
}

/// A parsed proxy URL: `http://[user:pass@]host[:port]`, `socks5://…` or `socks5h://…`.
/// A URL without a scheme is taken as `http://`, as curl does.
#[derive(Clone, PartialEq, Eq)]
pub struct ProxyUrl {
    /// The protocol.
    pub kind: ProxyKind,
    /// Host name or address (an IPv6 address without brackets).
    pub host: String,
    /// Port.
    pub port: u16,
    /// Username and password, percent-decoded.
    pub auth: Option<(String, String)>,
}

impl std::fmt::Debug for ProxyUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the password.
        f.debug_struct("ProxyUrl")
            .field("kind", &self.kind)
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.auth.as_ref().map(|(u, _)| u))
            .finish()
    }
}

impl std::fmt::Display for ProxyUrl {
    /// The URL without credentials.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scheme = match self.kind {
            ProxyKind::Http => "http",
            ProxyKind::Socks5 { remote_dns: false } => "socks5",
            ProxyKind::Socks5 { remote_dns: true } => "socks5h",
        };
        if self.host.contains(':') {
            write!(f, "{scheme}://[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{scheme}://{}:{}", self.host, self.port)
        }
    }
}

impl ProxyUrl {
    /// Parses a proxy URL.
    ///
    /// # Errors
    ///
    /// [`ProxyError::InvalidUrl`] for an unsupported scheme (`https://` proxies among them),
    /// a missing host, a bad port or bad percent-encoding in the credentials.
    pub fn parse(s: &str) -> Result<Self, ProxyError> {
        let invalid = |why| ProxyError::InvalidUrl { url: hide_password(s), why };
        let (scheme, rest) = match s.split_once("://") {
            Some((scheme, rest)) => (scheme.to_ascii_lowercase(), rest),
            None => ("http".to_owned(), s),
        };
        let (kind, default_port) = match scheme.as_str() {
            "http" => (ProxyKind::Http, 80),
            "socks5" => (ProxyKind::Socks5 { remote_dns: false }, 1080),
            "socks5h" => (ProxyKind::Socks5 { remote_dns: true }, 1080),
            "https" => return Err(invalid("https:// proxies are not supported (use http:// or socks5://)")),
            _ => return Err(invalid("scheme must be http, socks5 or socks5h")),
        };
        // Anything after the authority (a trailing "/") is ignored, as curl does.
        let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
        let (userinfo, hostport) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, authority),
        };
        let auth = match userinfo {
            None => None,
            Some(u) => {
                let (user, pass) = u.split_once(':').unwrap_or((u, ""));
                let user = percent_decode(user).ok_or(invalid("bad percent-encoding in the username"))?;
                let pass = percent_decode(pass).ok_or(invalid("bad percent-encoding in the password"))?;
                Some((user, pass))
            }
        };
        let (host, port) = split_host_port(hostport).ok_or(invalid("bad host or port"))?;
        if host.is_empty() {
            return Err(invalid("missing host"));
        }
        let port = match port {
            None => default_port,
            Some(p) => p.parse::<u16>().ok().filter(|&p| p != 0).ok_or(invalid("bad port"))?,
        };
        Ok(Self { kind, host: host.to_owned(), port, auth })
    }
}

fn split_host_port(s: &str) -> Option<(&str, Option<&str>)> {
    if let Some(v6) = s.strip_prefix('[') {
        let (host, after) = v6.split_once(']')?;
        match after {
            "" => Some((host, None)),
            p => Some((host, Some(p.strip_prefix(':')?))),
        }
    } else {
        match s.rsplit_once(':') {
            Some((h, p)) => Some((h, Some(p))),
            None => Some((s, None)),
        }
    }
}

fn hide_password(s: &str) -> String {
    match (s.find("://"), s.rfind('@')) {
        (Some(start), Some(at)) if at > start => match s[start + 3..at].split_once(':') {
            Some((user, _)) => format!("{}{user}:***{}", &s[..start + 3], &s[at..]),
            None => s.to_owned(),
        },
        _ => s.to_owned(),
    }
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Which proxy the environment chooses for a connection to `host:port`, given a way to
/// read variables (`std::env::var` in the I/O layer, a map in tests).
///
/// `wss://` uses `https_proxy`, then `HTTPS_PROXY`; `ws://` uses `http_proxy`, then
/// `HTTP_PROXY`; both fall back to `all_proxy`, then `ALL_PROXY`. An empty variable counts
/// as unset. `no_proxy` (or `NO_PROXY`) lists hosts that are reached directly; see
/// [`NoProxy`].
///
/// # Errors
///
/// [`ProxyError::InvalidUrl`] when the chosen variable does not hold a usable proxy URL
/// (rather than silently connecting directly).
pub fn proxy_from_env(
    secure: bool,
    host: &str,
    port: u16,
    var: impl Fn(&str) -> Option<String>,
) -> Result<Option<ProxyUrl>, ProxyError> {
    let chosen = if secure { env_pair(&var, "https_proxy") } else { env_pair(&var, "http_proxy") };
    let Some(url) = chosen.or_else(|| env_pair(&var, "all_proxy")) else { return Ok(None) };
    if bypassed_by_env(host, port, &var) {
        return Ok(None);
    }
    ProxyUrl::parse(url.trim()).map(Some)
}

/// Whether `no_proxy` (or `NO_PROXY`) lists `host:port`, which is then reached directly
/// whatever proxy was chosen.
pub fn bypassed_by_env(host: &str, port: u16, var: impl Fn(&str) -> Option<String>) -> bool {
    env_pair(&var, "no_proxy").is_some_and(|list| NoProxy::parse(&list).matches(host, port))
}

/// The lower-case variable, else its upper-case form; empty counts as unset.
fn env_pair(var: &impl Fn(&str) -> Option<String>, lower: &str) -> Option<String> {
    let get = |name: &str| var(name).filter(|v| !v.trim().is_empty());
    get(lower).or_else(|| get(&lower.to_ascii_uppercase()))
}

/// A `NO_PROXY` list: comma- or space-separated entries, each `*` (every host), a host name
/// (matching it and its subdomains; a leading `.` or `*.` is allowed), an IP address, or an
/// IP network in CIDR form; any entry may end with `:port`. Matching ignores case.
#[derive(Debug, Clone, Default)]
pub struct NoProxy {
    entries: Vec<NoProxyEntry>,
}

#[derive(Debug, Clone)]
enum NoProxyEntry {
    All,
    Domain(String, Option<u16>),
    Network(IpAddr, u8, Option<u16>),
}

impl NoProxy {
    /// Parses a list; entries that cannot be understood are skipped.
    pub fn parse(list: &str) -> Self {
        let mut entries = Vec::new();
        for raw in list.split([',', ' ']).map(str::trim).filter(|e| !e.is_empty()) {
            if raw == "*" {
                entries.push(NoProxyEntry::All);
                continue;
            }
            let (addr, bits) = match raw.split_once('/') {
                Some((a, b)) => (a, b.parse::<u8>().ok()),
                None => (raw, None),
            };
            if let Ok(ip) = strip_brackets(addr).parse::<IpAddr>() {
                let max = if ip.is_ipv4() { 32 } else { 128 };
                entries.push(NoProxyEntry::Network(ip, bits.unwrap_or(max).min(max), None));
                continue;
            }
            let (name, port) = match split_host_port(raw) {
                Some((h, Some(p))) => match p.parse::<u16>() {
                    Ok(p) => (h, Some(p)),
                    Err(_) => continue,
                },
                Some((h, None)) => (h, None),
                None => continue,
            };
            if let Ok(ip) = name.parse::<IpAddr>() {
                let max = if ip.is_ipv4() { 32 } else { 128 };
                entries.push(NoProxyEntry::Network(ip, max, port));
                continue;
            }
            let name = name.trim_start_matches('*').trim_start_matches('.').to_ascii_lowercase();
            if !name.is_empty() {
                entries.push(NoProxyEntry::Domain(name, port));
            }
        }
        Self { entries }
    }

    /// Whether `host:port` is to be reached without a proxy.
    pub fn matches(&self, host: &str, port: u16) -> bool {
        let host = strip_brackets(host).trim_end_matches('.').to_ascii_lowercase();
        let ip = host.parse::<IpAddr>().ok();
        self.entries.iter().any(|e| match e {
            NoProxyEntry::All => true,
            NoProxyEntry::Domain(name, p) => {
                p.is_none_or(|p| p == port)
                    && (host == *name
                        || (host.ends_with(name.as_str())
                            && host.as_bytes()[host.len() - name.len() - 1] == b'.'))
            }
            NoProxyEntry::Network(net, bits, p) => {
                p.is_none_or(|p| p == port) && ip.is_some_and(|ip| in_network(ip, *net, *bits))
            }
        })
    }
}

fn strip_brackets(s: &str) -> &str {
    s.strip_prefix('[').and_then(|s| s.strip_suffix(']')).unwrap_or(s)
}

fn in_network(ip: IpAddr, net: IpAddr, bits: u8) -> bool {
    let (a, b, width) = match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(b)) => (u128::from(u32::from(a)), u128::from(u32::from(b)), 32),
        (IpAddr::V6(a), IpAddr::V6(b)) => (u128::from(a), u128::from(b), 128),
        _ => return false,
    };
    if bits == 0 {
        return true;
    }
    let shift = width - u32::from(bits);
    (a >> shift) == (b >> shift)
}

/// The `CONNECT` request that opens a tunnel to `host:port`, with `Proxy-Authorization:
/// Basic` when `auth` is given.
pub fn connect_request(host: &str, port: u16, auth: Option<&(String, String)>) -> Vec<u8> {
    let authority = if host.contains(':') { format!("[{host}]:{port}") } else { format!("{host}:{port}") };
    let mut req = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n");
    if let Some((user, pass)) = auth {
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
        req.push_str(&format!("Proxy-Authorization: Basic {token}\r\n"));
    }
    req.push_str("\r\n");
    req.into_bytes()
}

/// Parses the proxy's answer to `CONNECT`. `Ok(None)`: need more bytes; `Ok(Some(n))`: the
/// tunnel is open and the answer took the first `n` bytes.
///
/// # Errors
///
/// [`ProxyError::Refused`] for a status other than 2xx, [`ProxyError::Malformed`] for
/// something that is not an HTTP response (or whose head exceeds 16 KiB).
pub fn parse_connect_response(buf: &[u8]) -> Result<Option<usize>, ProxyError> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut resp = httparse::Response::new(&mut headers);
    match resp.parse(buf) {
        Ok(httparse::Status::Complete(len)) => {
            let status = resp.code.unwrap_or(0);
            if (200..300).contains(&status) {
                Ok(Some(len))
            } else {
                Err(ProxyError::Refused { status, reason: resp.reason.unwrap_or("").to_owned() })
            }
        }
        Ok(httparse::Status::Partial) if buf.len() > 16 * 1024 => {
            Err(ProxyError::Malformed("response head over 16 KiB"))
        }
        Ok(httparse::Status::Partial) => Ok(None),
        Err(_) => Err(ProxyError::Malformed("not an HTTP response")),
    }
}

/// SOCKS5, step by step: greeting, optional username/password, then the connect request.
pub mod socks5 {
    use super::ProxyError;
    use std::net::IpAddr;

    const VERSION: u8 = 5;
    const NO_AUTH: u8 = 0;
    const USER_PASS: u8 = 2;

    /// Where the proxy should connect: an address we resolved, or a name it resolves.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub enum Target<'a> {
        /// An IP address.
        Ip(IpAddr),
        /// A host name (at most 255 bytes).
        Name(&'a str),
    }

    /// The method a proxy chose in answer to the greeting.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Method {
        /// No authentication.
        NoAuth,
        /// Username and password (RFC 1929) follow.
        UserPass,
    }

    /// The greeting: the methods we offer (username/password only when we have one).
    pub fn greeting(with_password: bool) -> Vec<u8> {
        if with_password {
            vec![VERSION, 2, NO_AUTH, USER_PASS]
        } else {
            vec![VERSION, 1, NO_AUTH]
        }
    }

    /// Parses the two-byte answer to the greeting.
    ///
    /// # Errors
    ///
    /// [`ProxyError::NoAcceptableMethod`] or [`ProxyError::Malformed`].
    pub fn parse_method(answer: [u8; 2], offered_password: bool) -> Result<Method, ProxyError> {
        match answer {
            [VERSION, NO_AUTH] => Ok(Method::NoAuth),
            [VERSION, USER_PASS] if offered_password => Ok(Method::UserPass),
            [VERSION, _] => Err(ProxyError::NoAcceptableMethod { offered_password }),
            _ => Err(ProxyError::Malformed("not a socks5 proxy")),
        }
    }

    /// The username/password request (RFC 1929 2).
    ///
    /// # Errors
    ///
    /// [`ProxyError::InvalidUrl`] when either is longer than 255 bytes.
    pub fn auth_request(user: &str, pass: &str) -> Result<Vec<u8>, ProxyError> {
        let too_long =
            ProxyError::InvalidUrl { url: String::new(), why: "socks5 credentials over 255 bytes" };
        let (u, p) = (u8::try_from(user.len()), u8::try_from(pass.len()));
        let (Ok(ulen), Ok(plen)) = (u, p) else { return Err(too_long) };
        let mut out = vec![1, ulen];
        out.extend_from_slice(user.as_bytes());
        out.push(plen);
        out.extend_from_slice(pass.as_bytes());
        Ok(out)
    }

    /// Parses the two-byte answer to the username/password request.
    ///
    /// # Errors
    ///
    /// [`ProxyError::AuthFailed`].
    pub fn parse_auth(answer: [u8; 2]) -> Result<(), ProxyError> {
        match answer {
            [_, 0] => Ok(()),
            _ => Err(ProxyError::AuthFailed),
        }
    }

    /// The CONNECT request for `target:port`.
    ///
    /// # Errors
    ///
    /// [`ProxyError::InvalidUrl`] for a host name over 255 bytes.
    pub fn connect_request(target: &Target<'_>, port: u16) -> Result<Vec<u8>, ProxyError> {
        let mut out = vec![VERSION, 1, 0];
        match target {
            Target::Ip(IpAddr::V4(a)) => {
                out.push(1);
                out.extend_from_slice(&a.octets());
            }
            Target::Ip(IpAddr::V6(a)) => {
                out.push(4);
                out.extend_from_slice(&a.octets());
            }
            Target::Name(name) => {
                let Ok(len) = u8::try_from(name.len()) else {
                    return Err(ProxyError::InvalidUrl {
                        url: String::new(),
                        why: "host name over 255 bytes",
                    });
                };
                out.push(3);
                out.push(len);
                out.extend_from_slice(name.as_bytes());
            }
        }
        out.extend_from_slice(&port.to_be_bytes());
        Ok(out)
    }

    /// Parses the answer to CONNECT. `Ok(None)`: need more bytes; `Ok(Some(n))`: connected,
    /// and the answer took the first `n` bytes.
    ///
    /// # Errors
    ///
    /// [`ProxyError::SocksReply`] naming the proxy's reason, or [`ProxyError::Malformed`].
    pub fn parse_connect_reply(buf: &[u8]) -> Result<Option<usize>, ProxyError> {
        if buf.len() < 5 {
            return Ok(None);
        }
        if buf[0] != VERSION {
            return Err(ProxyError::Malformed("bad socks5 reply version"));
        }
        let why = match buf[1] {
            0 => None,
            1 => Some("general failure"),
            2 => Some("connection not allowed by ruleset"),
            3 => Some("network unreachable"),
            4 => Some("host unreachable"),
            5 => Some("connection refused"),
            6 => Some("TTL expired"),
            7 => Some("command not supported"),
            8 => Some("address type not supported"),
            _ => Some("unknown error"),
        };
        if let Some(why) = why {
            return Err(ProxyError::SocksReply(why));
        }
        let addr_len = match buf[3] {
            1 => 4,
            4 => 16,
            3 => 1 + usize::from(buf[4]),
            _ => return Err(ProxyError::Malformed("bad socks5 address type")),
        };
        let total = 4 + addr_len + 2;
        Ok((buf.len() >= total).then_some(total))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn proxy_urls() {
        let p = ProxyUrl::parse("http://u%40x:p%3Aw@proxy.example:3128/").unwrap();
        assert_eq!(p.kind, ProxyKind::Http);
        assert_eq!((p.host.as_str(), p.port), ("proxy.example", 3128));
        assert_eq!(p.auth, Some(("u@x".into(), "p:w".into())));
        assert_eq!(p.to_string(), "http://proxy.example:3128");
        assert!(!format!("{p:?}").contains("p:w"));
        let p = ProxyUrl::parse("proxy:8080").unwrap();
        assert_eq!((p.kind, p.port), (ProxyKind::Http, 8080));
        let p = ProxyUrl::parse("socks5h://[::1]").unwrap();
        assert_eq!((p.kind, p.host.as_str(), p.port), (ProxyKind::Socks5 { remote_dns: true }, "::1", 1080));
        assert_eq!(ProxyUrl::parse("SOCKS5://h:1").unwrap().kind, ProxyKind::Socks5 { remote_dns: false });
        for bad in ["ftp://h", "https://h", "http://", "http://h:0", "http://h:x", "http://u:%zz@h"] {
            assert!(ProxyUrl::parse(bad).is_err(), "{bad}");
        }
        let err = ProxyUrl::parse("ftp://me:secret@h").unwrap_err().to_string();
        assert!(err.contains("me:***@h") && !err.contains("secret"), "{err}");
    }

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> =
            pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn environment_choice() {
        let pick = |secure, host, vars: &[(&str, &str)]| {
            proxy_from_env(secure, host, 443, env(vars)).unwrap().map(|p| p.host)
        };
        assert_eq!(pick(true, "a", &[("HTTPS_PROXY", "s"), ("HTTP_PROXY", "p")]), Some("s".into()));
        assert_eq!(pick(false, "a", &[("HTTPS_PROXY", "s"), ("HTTP_PROXY", "p")]), Some("p".into()));
        assert_eq!(pick(true, "a", &[("https_proxy", "low"), ("HTTPS_PROXY", "up")]), Some("low".into()));
        assert_eq!(pick(true, "a", &[("https_proxy", ""), ("HTTPS_PROXY", "up")]), Some("up".into()));
        assert_eq!(pick(true, "a", &[("ALL_PROXY", "all")]), Some("all".into()));
        assert_eq!(pick(false, "a", &[("all_proxy", "all")]), Some("all".into()));
        assert_eq!(pick(true, "a", &[("HTTP_PROXY", "p")]), None);
        assert_eq!(pick(true, "a.corp", &[("HTTPS_PROXY", "s"), ("NO_PROXY", "corp")]), None);
        assert_eq!(pick(true, "a.corp", &[("HTTPS_PROXY", "s"), ("no_proxy", ".corp")]), None);
        assert_eq!(pick(true, "acorp", &[("HTTPS_PROXY", "s"), ("NO_PROXY", "corp")]), Some("s".into()));
        assert!(proxy_from_env(true, "a", 1, env(&[("HTTPS_PROXY", "ftp://x")])).is_err());
    }

    #[test]
    fn no_proxy_entries() {
        let n = NoProxy::parse("localhost, .example.com,*.internal ,10.0.0.0/8, ::1, [fd00::]/8, api.x:8443");
        assert!(n.matches("localhost", 80));
        assert!(n.matches("LOCALHOST.", 80));
        assert!(n.matches("example.com", 80) && n.matches("www.example.com", 80));
        assert!(!n.matches("badexample.com", 80));
        assert!(n.matches("db.internal", 1));
        assert!(n.matches("10.1.2.3", 1) && !n.matches("11.1.2.3", 1));
        assert!(n.matches("::1", 1) && n.matches("[::1]", 1));
        assert!(n.matches("fd12::5", 1));
        assert!(n.matches("api.x", 8443) && !n.matches("api.x", 443));
        assert!(!n.matches("127.0.0.1", 80));
        assert!(NoProxy::parse("*").matches("anything", 1));
        assert!(NoProxy::parse("127.0.0.1").matches("127.0.0.1", 9));
        assert!(!NoProxy::parse("").matches("a", 1));
    }

    #[test]
    fn connect_exchange() {
        let auth = ("user".to_owned(), "pass".to_owned());
        let req = String::from_utf8(connect_request("::1", 443, Some(&auth))).unwrap();
        assert_eq!(
            req,
            "CONNECT [::1]:443 HTTP/1.1\r\nHost: [::1]:443\r\nProxy-Authorization: Basic dXNlcjpwYXNz\r\n\r\n"
        );
        assert_eq!(parse_connect_response(b"HTTP/1.1 200 Connection established\r\n"), Ok(None));
        assert_eq!(parse_connect_response(b"HTTP/1.0 200 OK\r\n\r\nxx"), Ok(Some(19)));
        assert_eq!(
            parse_connect_response(b"HTTP/1.1 407 Proxy Authentication Required\r\n\r\n"),
            Err(ProxyError::Refused { status: 407, reason: "Proxy Authentication Required".into() })
        );
        assert!(matches!(parse_connect_response(b"SSH-2.0-x\r\n\r\n"), Err(ProxyError::Malformed(_))));
    }

    #[test]
    fn socks5_exchange() {
        use socks5::*;
        assert_eq!(greeting(false), [5, 1, 0]);
        assert_eq!(greeting(true), [5, 2, 0, 2]);
        assert_eq!(parse_method([5, 0], false), Ok(Method::NoAuth));
        assert_eq!(parse_method([5, 2], true), Ok(Method::UserPass));
        assert_eq!(
            parse_method([5, 0xff], false),
            Err(ProxyError::NoAcceptableMethod { offered_password: false })
        );
        assert!(parse_method([4, 0], false).is_err());
        assert_eq!(auth_request("ab", "c").unwrap(), [1, 2, b'a', b'b', 1, b'c']);
        assert!(auth_request(&"x".repeat(256), "").is_err());
        assert_eq!(parse_auth([1, 1]), Err(ProxyError::AuthFailed));
        let ip = Target::Ip("127.0.0.1".parse().unwrap());
        assert_eq!(connect_request(&ip, 80).unwrap(), [5, 1, 0, 1, 127, 0, 0, 1, 0, 80]);
        assert_eq!(connect_request(&Target::Name("ab"), 1).unwrap(), [5, 1, 0, 3, 2, b'a', b'b', 0, 1]);
        assert_eq!(parse_connect_reply(&[5, 0, 0, 1, 0, 0, 0]), Ok(None));
        assert_eq!(parse_connect_reply(&[5, 0, 0, 1, 1, 2, 3, 4, 0, 80, 9]), Ok(Some(10)));
        assert_eq!(parse_connect_reply(&[5, 0, 0, 3, 1, b'a', 0, 80]), Ok(Some(8)));
        assert_eq!(parse_connect_reply(&[5, 5, 0, 1, 0]), Err(ProxyError::SocksReply("connection refused")));
    }
}

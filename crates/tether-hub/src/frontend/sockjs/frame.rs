//! SockJS's frames and their envelopes, as the protocol defines them ("Framing accepted by
//! the client"): `o` open, `h` heartbeat, `a[…]` messages, `c[code,"reason"]` close; each
//! transport's envelope around a frame; and the JSON string escaping SockJS servers must do.

use bytes::{BufMut, Bytes, BytesMut};
use std::fmt::Write as _;

/// The open frame.
pub(crate) const OPEN: &[u8] = b"o";
/// The heartbeat frame.
pub(crate) const HEARTBEAT: &[u8] = b"h";

/// Whether SockJS servers must send `c` as `\uXXXX`: JSON's control characters, and the
/// ranges browsers mangle on some transports (the protocol's `escapable_by_server`).
fn escapable(c: char) -> bool {
    matches!(c, '\u{0}'..='\u{1f}' | '\u{200c}'..='\u{200f}' | '\u{2028}'..='\u{202f}'
        | '\u{2060}'..='\u{206f}' | '\u{fff0}'..='\u{ffff}')
}

/// `s` escaped for the inside of a JSON string (no quotes), as a SockJS server sends it:
/// `"` and `\` escaped, `\n`, `\r`, `\t`, `\b`, `\f` as such, and every other escapable
/// character as `\u` with four lowercase hex digits. Everything else goes as is (UTF-8).
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    let mut plain = 0;
    for (i, c) in s.char_indices() {
        let short = match c {
            '"' => "\\\"",
            '\\' => "\\\\",
            '\n' => "\\n",
            '\r' => "\\r",
            '\t' => "\\t",
            '\u{8}' => "\\b",
            '\u{c}' => "\\f",
            c if escapable(c) => "",
            _ => continue,
        };
        out.push_str(&s[plain..i]);
        if short.is_empty() {
            let _ = write!(out, "\\u{:04x}", u32::from(c));
        } else {
            out.push_str(short);
        }
        plain = i + c.len_utf8();
    }
    out.push_str(&s[plain..]);
    out
}

/// `s` as a JSON string literal (quotes included), escaped as [`escape`] does.
pub(crate) fn json_string(s: &str) -> Bytes {
    let e = escape(s);
    let mut out = BytesMut::with_capacity(e.len() + 2);
    out.put_u8(b'"');
    out.put_slice(e.as_bytes());
    out.put_u8(b'"');
    out.freeze()
}

/// The messages frame `a["m1","m2",…]` of escaped string contents.
pub(crate) fn messages(parts: &[Bytes]) -> Vec<u8> {
    let len: usize = parts.iter().map(|p| p.len() + 3).sum();
    let mut out = Vec::with_capacity(len + 3);
    out.extend_from_slice(b"a[");
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.push(b'"');
        out.extend_from_slice(p);
        out.push(b'"');
    }
    out.push(b']');
    out
}

/// The close frame `c[code,"reason"]`.
pub(crate) fn close(code: u16, reason: &str) -> Vec<u8> {
    let mut out = format!("c[{code},").into_bytes();
    out.extend_from_slice(&json_string(reason));
    out.push(b']');
    out
}

/// The transports that answer over HTTP, each with its envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Transport {
    /// `xhr`: one frame per POST, then the response ends.
    XhrPolling,
    /// `xhr_streaming`: frames on one POST response until the response limit.
    XhrStreaming,
    /// `eventsource`: Server-Sent Events on a GET.
    EventSource,
    /// `htmlfile`: `<script>` blocks calling the page's callback, on a GET.
    HtmlFile(String),
    /// `jsonp`: one frame per GET as a call of the callback.
    JsonpPolling(String),
}

/// The head of the `htmlfile` page; `{}` is the callback.
const HTMLFILE_HEAD: &str = r#"<!doctype html>
<html><head>
  <meta http-equiv="X-UA-Compatible" content="IE=edge" />
  <meta http-equiv="Content-Type" content="text/html; charset=UTF-8" />
</head><body><h2>Don't panic!</h2>
  <script>
    document.domain = document.domain;
    var c = parent.{};
    c.start();
    function p(d) {c.message(d);};
    window.onload = function() {c.stop();};
  </script>"#;

impl Transport {
    /// Whether the response goes on after a frame (until the response limit).
    pub(crate) fn streaming(&self) -> bool {
        matches!(self, Self::XhrStreaming | Self::EventSource | Self::HtmlFile(_))
    }

    /// The response's content type.
    pub(crate) fn content_type(&self) -> &'static str {
        match self {
            Self::XhrPolling | Self::XhrStreaming | Self::JsonpPolling(_) => {
                "application/javascript; charset=UTF-8"
            }
            Self::EventSource => "text/event-stream",
            Self::HtmlFile(_) => "text/html; charset=UTF-8",
        }
    }

    /// What a streaming response starts with, before any frame (browsers and proxies
    /// buffer the first bytes of a response; these push the frames through).
    pub(crate) fn prelude(&self) -> Option<Bytes> {
        match self {
            Self::XhrStreaming => {
                let mut p = vec![b'h'; 2048];
                p.push(b'\n');
                Some(p.into())
            }
            Self::EventSource => Some(Bytes::from_static(b"\r\n")),
            Self::HtmlFile(callback) => {
                let mut page = HTMLFILE_HEAD.replace("{}", callback);
                // Padded past 1 KiB, which some browsers wait for before they run scripts.
                while page.len() < 1024 {
                    page.push(' ');
                }
                page.push_str("\r\n\r\n");
                Some(page.into())
            }
            Self::XhrPolling | Self::JsonpPolling(_) => None,
        }
    }

    /// `frame` in this transport's envelope.
    pub(crate) fn wrap(&self, frame: &[u8]) -> Bytes {
        let text = || String::from_utf8_lossy(frame);
        let mut out = BytesMut::with_capacity(frame.len() + 24);
        match self {
            Self::XhrPolling | Self::XhrStreaming => {
                out.put_slice(frame);
                out.put_u8(b'\n');
            }
            Self::EventSource => {
                out.put_slice(b"data: ");
                out.put_slice(frame);
                out.put_slice(b"\r\n\r\n");
            }
            Self::HtmlFile(_) => {
                // `<` escaped too: a message holding `</script>` must not end the block.
                let s = escape(&text()).replace('<', "\\u003c");
                out.put_slice(b"<script>\np(\"");
                out.put_slice(s.as_bytes());
                out.put_slice(b"\");\n</script>\r\n");
            }
            Self::JsonpPolling(callback) => {
                out.put_slice(b"/**/");
                out.put_slice(callback.as_bytes());
                out.put_u8(b'(');
                out.put_slice(&json_string(&text()));
                out.put_slice(b");\r\n");
            }
        }
        out.freeze()
    }
}

/// Checks a `c` callback parameter: present, and only `[a-zA-Z0-9-_.]`. The error is the
/// body of the protocol's 500 answer.
pub(crate) fn callback(query: Option<&str>) -> Result<String, &'static str> {
    let value = query
        .into_iter()
        .flat_map(|q| q.split('&'))
        .find_map(|kv| kv.strip_prefix("c="))
        .map(percent_decode)
        .filter(|c| !c.is_empty())
        .ok_or("\"callback\" parameter required")?;
    if value.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')) {
        Ok(value)
    } else {
        Err("invalid \"callback\" parameter")
    }
}

/// Decodes `%XX` escapes and `+` (form encoding); invalid escapes stay as they are.
pub(crate) fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = b.get(i + 1..i + 3).filter(|h| h.iter().all(u8::is_ascii_hexdigit));
                match hex.and_then(|h| u8::from_str_radix(std::str::from_utf8(h).ok()?, 16).ok()) {
                    Some(v) => {
                        out.push(v);
                        i += 3;
                        continue;
                    }
                    None => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The messages of a client's send: a JSON array of strings (or, over WebSocket, one
/// string). `Err` is the protocol's answer text.
pub(crate) fn parse_send(body: &[u8]) -> Result<Vec<String>, &'static str> {
    if body.is_empty() {
        return Err("Payload expected.");
    }
    serde_json::from_slice::<Vec<String>>(body)
        .or_else(|_| serde_json::from_slice::<String>(body).map(|s| vec![s]))
        .map_err(|_| "Broken JSON encoding.")
}

/// The payload of a `jsonp_send`: the form field `d`, or the whole body when it is not a
/// form. `Err` is the protocol's answer text.
pub(crate) fn jsonp_payload(body: &[u8], form: bool) -> Result<Vec<String>, &'static str> {
    if !form {
        return parse_send(body);
    }
    let body = std::str::from_utf8(body).map_err(|_| "Broken JSON encoding.")?;
    let d = body.split('&').find_map(|kv| kv.strip_prefix("d=")).map(percent_decode).unwrap_or_default();
    parse_send(d.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn frames() {
        assert_eq!(close(3000, "Go away!"), b"c[3000,\"Go away!\"]");
        let parts = [Bytes::from(escape("a")), Bytes::from(escape("b\"c"))];
        assert_eq!(messages(&parts), b"a[\"a\",\"b\\\"c\"]");
        assert_eq!(&Transport::XhrPolling.wrap(OPEN)[..], b"o\n");
        assert_eq!(&Transport::EventSource.wrap(b"a[\"x\"]")[..], b"data: a[\"x\"]\r\n\r\n");
        assert_eq!(
            &Transport::JsonpPolling("cb".into()).wrap(b"a[\"x\"]")[..],
            b"/**/cb(\"a[\\\"x\\\"]\");\r\n"
        );
        assert_eq!(
            &Transport::HtmlFile("cb".into()).wrap(b"a[\"</script>\"]")[..],
            b"<script>\np(\"a[\\\"\\u003c/script>\\\"]\");\n</script>\r\n"
        );
        let prelude = Transport::HtmlFile("cb".into()).prelude().unwrap();
        assert!(prelude.len() > 1024 && prelude.starts_with(b"<!doctype html>"));
        assert_eq!(Transport::XhrStreaming.prelude().unwrap().len(), 2049);
    }

    #[test]
    fn escaping_as_the_protocol_asks() {
        assert_eq!(escape("  \u{0}\n\r "), "  \\u0000\\n\\r ");
        assert_eq!(
            escape("\u{200c}\u{2028}\u{2060}\u{fff0}\u{ffff}é😀"),
            "\\u200c\\u2028\\u2060\\ufff0\\uffffé😀"
        );
        assert_eq!(escape("a\"b\\c\u{1f}"), "a\\\"b\\\\c\\u001f");
        // What the server must escape, from the protocol's test: every char of these ranges.
        for c in (0x100u32..0x10000).filter_map(char::from_u32) {
            let e = escape(&c.to_string());
            assert_eq!(e.starts_with("\\u"), escapable(c), "{c:?}");
        }
    }

    #[test]
    fn callbacks_and_payloads() {
        assert_eq!(callback(Some("c=%63allback")), Ok("callback".into()));
        assert_eq!(callback(Some("t=1&c=a.b-c_9")), Ok("a.b-c_9".into()));
        assert_eq!(callback(None), Err("\"callback\" parameter required"));
        for bad in ["c=%20", "c=*", "c=abc(", "c=abc%28"] {
            assert_eq!(callback(Some(bad)), Err("invalid \"callback\" parameter"), "{bad}");
        }
        assert_eq!(parse_send(b"[\"a\",\"b\"]"), Ok(vec!["a".into(), "b".into()]));
        assert_eq!(parse_send(b"\"a\""), Ok(vec!["a".into()]));
        assert_eq!(parse_send(b"[]"), Ok(vec![]));
        assert_eq!(parse_send(b""), Err("Payload expected."));
        assert_eq!(parse_send(b"[\"x"), Err("Broken JSON encoding."));
        assert_eq!(jsonp_payload(b"d=%5B%22x%22%5D", true), Ok(vec!["x".into()]));
        assert_eq!(jsonp_payload(b"d=%5B%22x", true), Err("Broken JSON encoding."));
        for empty in [&b""[..], b"d=", b"p=p"] {
            assert_eq!(jsonp_payload(empty, true), Err("Payload expected."));
        }
        assert_eq!(jsonp_payload(b"[\"%61bc\"]", false), Ok(vec!["%61bc".into()]));
        assert_eq!(percent_decode("a%2"), "a%2");
    }

    proptest! {
        /// What a client decodes is what the server escaped, for any string.
        #[test]
        fn escape_round_trips(s in "\\PC*|[\\u{0}-\\u{40}\\u{2000}-\\u{2070}\\u{fff0}-\\u{ffff}]*") {
            let literal = json_string(&s);
            let back: String = serde_json::from_slice(&literal).unwrap();
            prop_assert_eq!(back, s);
        }

        /// Whatever a client sends, the parsers answer (messages or the protocol's error),
        /// never panic; a callback that passes is only `[a-zA-Z0-9-_.]`.
        #[test]
        fn parsers_take_anything(body in proptest::collection::vec(any::<u8>(), 0..64), form: bool, q in "\\PC{0,24}") {
            let _ = parse_send(&body);
            let _ = jsonp_payload(&body, form);
            if let Ok(c) = callback(Some(&q)) {
                prop_assert!(c.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)));
            }
        }
    }
}

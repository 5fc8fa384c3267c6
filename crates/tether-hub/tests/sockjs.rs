//! SockJS, checked rule by rule against the protocol's documentation (sockjs-protocol 0.3.3,
//! the literate test suite that defines it): the test services (`/echo`,
//! `/disabled_websocket_echo`, `/cookie_needed_echo`, `/close`) of `TestServer`, then the
//! hub's SockJS endpoints carrying tether.json and STOMP with the hub's rules and limits.
//! Every exchange is read off the wire, so status lines, headers and chunking are checked
//! as a client sees them.

mod common;

use common::{start_with, Client, WAIT};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::time::Duration;
use tether::{ClientConfig, Message};
use tether_hub::frontend::sockjs::TestServer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A raw HTTP/1.x connection: requests out, answers read exactly as they come.
struct Conn {
    s: TcpStream,
    buf: Vec<u8>,
}

/// An answer's head.
#[derive(Debug)]
struct Head {
    version: String,
    status: u16,
    headers: Vec<(String, String)>,
}

impl Head {
    fn get(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
    fn chunked(&self) -> bool {
        self.get("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
    }
}

/// A whole answer.
#[derive(Debug)]
struct Answer {
    head: Head,
    body: String,
}

impl Answer {
    fn get(&self, name: &str) -> Option<&str> {
        self.head.get(name)
    }
    fn status(&self) -> u16 {
        self.head.status
    }
}

impl Conn {
    async fn open(addr: SocketAddr) -> Self {
        Self { s: TcpStream::connect(addr).await.unwrap(), buf: Vec::new() }
    }

    async fn send(&mut self, method: &str, path: &str, version: &str, headers: &[(&str, &str)], body: &[u8]) {
        let mut req = format!("{method} {path} HTTP/{version}\r\nHost: 127.0.0.1\r\n");
        for (n, v) in headers {
            req.push_str(&format!("{n}: {v}\r\n"));
        }
        if !body.is_empty() || method == "POST" {
            req.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        req.push_str("\r\n");
        let mut bytes = req.into_bytes();
        bytes.extend_from_slice(body);
        self.s.write_all(&bytes).await.unwrap();
    }

    /// Reads more bytes; `false` at the end of the connection.
    async fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 8192];
        let n =
            tokio::time::timeout(WAIT, self.s.read(&mut chunk)).await.expect("read timed out").unwrap_or(0);
        self.buf.extend_from_slice(&chunk[..n]);
        n > 0
    }

    async fn head(&mut self) -> Head {
        let end = loop {
            if let Some(i) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i;
            }
            assert!(self.fill().await, "connection closed before the head");
        };
        let text = String::from_utf8(self.buf.drain(..end + 4).collect()).unwrap();
        let mut lines = text.split("\r\n");
        let status_line = lines.next().unwrap();
        let mut parts = status_line.splitn(3, ' ');
        let version = parts.next().unwrap().trim_start_matches("HTTP/").to_owned();
        let status = parts.next().unwrap().parse().unwrap();
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        Head { version, status, headers }
    }

    /// Reads exactly `n` bytes.
    async fn exact(&mut self, n: usize) -> Vec<u8> {
        while self.buf.len() < n {
            assert!(self.fill().await, "connection closed early");
        }
        self.buf.drain(..n).collect()
    }

    /// One chunk of a chunked body (`""` for the last).
    async fn chunk(&mut self) -> String {
        let line = loop {
            if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                break i;
            }
            assert!(self.fill().await, "connection closed in a chunk");
        };
        let size = usize::from_str_radix(std::str::from_utf8(&self.buf[..line]).unwrap().trim(), 16).unwrap();
        self.buf.drain(..line + 2);
        let data = self.exact(size + 2).await;
        String::from_utf8(data[..size].to_vec()).unwrap()
    }

    /// Whether the server closed the connection (after what is buffered).
    async fn closed(&mut self) -> bool {
        self.buf.is_empty() && !self.fill().await
    }

    /// A body by its framing: Content-Length, chunked, or to the end of the connection.
    async fn body(&mut self, head: &Head) -> String {
        if let Some(n) = head.get("content-length") {
            return String::from_utf8(self.exact(n.parse().unwrap()).await).unwrap();
        }
        if head.chunked() {
            let mut out = String::new();
            loop {
                let c = self.chunk().await;
                if c.is_empty() {
                    return out;
                }
                out.push_str(&c);
            }
        }
        if matches!(head.status, 204 | 304) {
            return String::new();
        }
        while self.fill().await {}
        String::from_utf8(std::mem::take(&mut self.buf)).unwrap()
    }

    /// Streaming: the next piece of a chunked body.
    async fn next(&mut self) -> String {
        self.chunk().await
    }
}

async fn request(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Answer {
    let mut c = Conn::open(addr).await;
    c.send(method, path, "1.1", headers, body.as_bytes()).await;
    let head = c.head().await;
    let body = c.body(&head).await;
    Answer { head, body }
}

async fn get(addr: SocketAddr, path: &str) -> Answer {
    request(addr, "GET", path, &[], "").await
}

async fn post(addr: SocketAddr, path: &str, body: &str) -> Answer {
    request(addr, "POST", path, &[], body).await
}

/// Starts a streaming or long-polling request; returns the connection after the head.
async fn open_stream(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)]) -> (Conn, Head) {
    let mut c = Conn::open(addr).await;
    c.send(method, path, "1.1", headers, b"").await;
    let head = c.head().await;
    (c, head)
}

fn sid() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    format!("s{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}

async fn test_server() -> SocketAddr {
    let server = TestServer::bind("127.0.0.1:0").await.unwrap();
    let addr = server.local_addr().unwrap();
    tokio::spawn(server.run(std::future::pending()));
    addr
}

const NO_CACHE: &str = "no-store, no-cache, no-transform, must-revalidate, max-age=0";

fn content_type(a: &Answer) -> String {
    a.get("content-type").unwrap_or_default().replace(' ', "")
}

fn check_cors(a: &Answer, origin: Option<&str>) {
    match origin {
        Some(o) => {
            assert_eq!(a.get("access-control-allow-origin"), Some(o));
            assert_eq!(a.get("access-control-allow-credentials"), Some("true"));
        }
        None => {
            assert_eq!(a.get("access-control-allow-origin"), Some("*"));
            assert_eq!(a.get("access-control-allow-credentials"), None);
        }
    }
}

fn check_not_cached(a: &Answer) {
    assert_eq!(a.get("cache-control"), Some(NO_CACHE));
    assert!(a.get("expires").is_none() && a.get("last-modified").is_none());
}

async fn check_options(addr: SocketAddr, path: &str, methods: &str) {
    for origin in ["test", "null"] {
        let a = request(
            addr,
            "OPTIONS",
            path,
            &[("Access-Control-Request-Method", methods), ("Origin", origin)],
            "",
        )
        .await;
        assert!(a.status() == 204 || a.status() == 200, "{a:?}");
        let cc = a.get("cache-control").unwrap();
        assert!(cc.contains("public") && cc.contains("max-age=31536000"), "{cc}");
        assert!(a.get("expires").is_some());
        assert!(a.get("access-control-max-age").unwrap().parse::<u64>().unwrap() > 1_000_000);
        for m in methods.split(',') {
            assert!(a.get("access-control-allow-methods").unwrap().contains(m.trim()));
        }
        assert!(a.body.is_empty());
        check_cors(&a, Some(origin));
    }
}

#[tokio::test]
async fn greeting_iframe_and_info() {
    let addr = test_server().await;
    for url in ["/echo", "/echo/"] {
        let a = get(addr, url).await;
        assert_eq!((a.status(), a.body.as_str()), (200, "Welcome to SockJS!\n"));
        assert_eq!(content_type(&a), "text/plain;charset=UTF-8");
        assert!(a.get("set-cookie").is_none());
    }
    for suffix in ["/a", "/a.html", "//", "///", "/a/a", "/a/a/", "/a/"] {
        assert_eq!(get(addr, &format!("/echo{suffix}")).await.status(), 404, "{suffix}");
    }
    // The iframe page: any version in its name, cacheable, with a stable ETag.
    for suffix in [
        "/iframe.html",
        "/iframe-a.html",
        "/iframe-.html",
        "/iframe-0.1.2.html",
        "/iframe-0.1.2abc-dirty.2144.html",
        "/iframe-a.html?t=1234",
    ] {
        let a = get(addr, &format!("/echo{suffix}")).await;
        assert_eq!(a.status(), 200, "{suffix}");
        assert_eq!(content_type(&a), "text/html;charset=UTF-8");
        assert!(a.get("cache-control").unwrap().contains("max-age=31536000"));
        assert!(a.get("expires").is_some() && a.get("etag").is_some() && a.get("last-modified").is_none());
        assert!(a.body.starts_with("<!DOCTYPE html>") && a.body.contains("SockJS.bootstrap_iframe();"));
        assert!(a.body.contains("<script src=\"https://"), "a sockjs_url");
        assert!(a.get("set-cookie").is_none());
    }
    for suffix in
        ["/iframe.htm", "/iframe", "/IFRAME.HTML", "/IFRAME", "/iframe.HTML", "/iframe.xml", "/iframe-/.html"]
    {
        assert_eq!(get(addr, &format!("/echo{suffix}")).await.status(), 404, "{suffix}");
    }
    let (a, b) = (get(addr, "/echo/iframe.html").await, get(addr, "/echo/iframe.html").await);
    let etag = a.get("etag").unwrap();
    assert_eq!(Some(etag), b.get("etag"));
    let c = request(addr, "GET", "/echo/iframe.html", &[("If-None-Match", etag)], "").await;
    assert_eq!(c.status(), 304);
    assert!(c.get("content-type").is_none() && c.body.is_empty());

    // /info
    let a = request(addr, "GET", "/echo/info", &[("Origin", "test")], "").await;
    assert_eq!(a.status(), 200);
    assert_eq!(content_type(&a), "application/json;charset=UTF-8");
    assert!(a.get("set-cookie").is_none());
    check_not_cached(&a);
    check_cors(&a, Some("test"));
    let info: Value = serde_json::from_str(&a.body).unwrap();
    assert_eq!(
        (&info["websocket"], &info["cookie_needed"], &info["origins"]),
        (&json!(true), &json!(false), &json!(["*:*"]))
    );
    let again: Value = serde_json::from_str(&get(addr, "/echo/info").await.body).unwrap();
    assert!(info["entropy"].is_u64() && info["entropy"] != again["entropy"]);
    check_options(addr, "/echo/info", "OPTIONS, GET").await;
    let n = request(
        addr,
        "OPTIONS",
        "/echo/info",
        &[("Origin", "null"), ("Access-Control-Request-Method", "POST")],
        "",
    )
    .await;
    assert_eq!((n.status(), n.get("access-control-allow-origin")), (204, Some("null")));
    let off: Value = serde_json::from_str(&get(addr, "/disabled_websocket_echo/info").await.body).unwrap();
    assert_eq!(off["websocket"], json!(false));
    let cookie = get(addr, "/cookie_needed_echo/info").await;
    assert!(cookie.get("set-cookie").is_none());
    assert_eq!(serde_json::from_str::<Value>(&cookie.body).unwrap()["cookie_needed"], json!(true));
}

#[tokio::test]
async fn sessions_and_xhr_polling() {
    let addr = test_server().await;
    // Any server and session value; not empty ones, dotted ones, or other shapes.
    for part in ["/a/a", "/_/_", "/1/1x", "/abcdefgh_i-j%20/abcdefg_i-j%20"] {
        let a = post(addr, &format!("/echo{part}{}/xhr", sid()), "").await;
        assert_eq!((a.status(), a.body.as_str()), (200, "o\n"), "{part}");
    }
    for bad in ["//", "/a./a", "/a/a.", "/./.", "/", "///"] {
        assert_eq!(get(addr, &format!("/echo{bad}/xhr")).await.status(), 404, "{bad}");
        assert_eq!(post(addr, &format!("/echo{bad}/xhr"), "").await.status(), 404, "{bad}");
    }
    // The session is named by its session part alone; the server part is for balancers.
    let id = sid();
    assert_eq!(post(addr, &format!("/echo/000/{id}/xhr"), "").await.body, "o\n");
    let a = post(addr, &format!("/echo/000/{id}/xhr_send"), "[\"a\"]").await;
    assert_eq!((a.status(), a.body.as_str()), (204, ""));
    assert_eq!(post(addr, &format!("/echo/999/{id}/xhr"), "").await.body, "a[\"a\"]\n");

    // The transport's headers.
    let url = format!("/echo/000/{}", sid());
    let a = request(addr, "POST", &format!("{url}/xhr"), &[("Origin", "test")], "").await;
    assert_eq!(a.body, "o\n");
    assert_eq!(content_type(&a), "application/javascript;charset=UTF-8");
    check_cors(&a, Some("test"));
    check_not_cached(&a);
    let a = request(addr, "POST", &format!("{url}/xhr_send"), &[("Origin", "test")], "[\"x\"]").await;
    assert_eq!((a.status(), a.body.as_str()), (204, ""));
    assert_eq!(content_type(&a), "text/plain;charset=UTF-8");
    check_cors(&a, Some("test"));
    check_not_cached(&a);
    assert_eq!(post(addr, &format!("{url}/xhr"), "").await.body, "a[\"x\"]\n");
    check_options(addr, "/echo/abc/abc/xhr", "OPTIONS, POST").await;
    check_options(addr, "/echo/abc/abc/xhr_send", "OPTIONS, POST").await;
    let with = |h: &'static str| {
        [("Origin", "test"), ("Access-Control-Request-Method", "POST"), ("Access-Control-Request-Headers", h)]
    };
    let a = request(addr, "OPTIONS", &format!("{url}/xhr"), &with("a, b, c"), "").await;
    assert_eq!(a.get("access-control-allow-headers"), Some("a, b, c"));
    let a = request(addr, "OPTIONS", &format!("{url}/xhr"), &with(""), "").await;
    assert!(a.get("access-control-allow-headers").is_none());

    // Unknown sessions, bad payloads, any content type, empty frames.
    assert_eq!(post(addr, &format!("/echo/000/{}/xhr_send", sid()), "[\"x\"]").await.status(), 404);
    let url = format!("/echo/000/{}", sid());
    assert_eq!(post(addr, &format!("{url}/xhr"), "").await.body, "o\n");
    let a = post(addr, &format!("{url}/xhr_send"), "[\"x").await;
    assert!(a.status() == 500 && a.body.contains("Broken JSON encoding."), "{a:?}");
    let a = post(addr, &format!("{url}/xhr_send"), "").await;
    assert!(a.status() == 500 && a.body.contains("Payload expected."), "{a:?}");
    assert_eq!(post(addr, &format!("{url}/xhr_send"), "[]").await.status(), 204);
    let types = [
        "text/plain",
        "T",
        "application/json",
        "application/xml",
        "",
        "application/json; charset=utf-8",
        "text/xml",
    ];
    for ct in types {
        let a = request(addr, "POST", &format!("{url}/xhr_send"), &[("Content-Type", ct)], "[\"a\"]").await;
        assert_eq!(a.status(), 204, "{ct}");
    }
    let want = format!("a[{}]\n", vec!["\"a\""; types.len()].join(","));
    assert_eq!(post(addr, &format!("{url}/xhr"), "").await.body, want);
    // Wrong methods.
    let a = get(addr, &format!("{url}/xhr")).await;
    assert_eq!((a.status(), a.get("allow")), (405, Some("OPTIONS, POST")));
}

#[tokio::test]
async fn one_receiver_at_a_time_and_closing() {
    let addr = test_server().await;
    let url = format!("/echo/000/{}", sid());
    assert_eq!(post(addr, &format!("{url}/xhr"), "").await.body, "o\n");
    // A poll waits; a second one gets 2010 and the first is untouched.
    let (mut first, head) = open_stream(addr, "POST", &format!("{url}/xhr"), &[]).await;
    assert_eq!(head.status, 200);
    let second = post(addr, &format!("{url}/xhr"), "").await;
    assert_eq!((second.status(), second.body.as_str()), (200, "c[2010,\"Another connection still open\"]\n"));
    post(addr, &format!("{url}/xhr_send"), "[\"late\"]").await;
    assert_eq!(first.body(&head).await, "a[\"late\"]\n");

    // Aborting the receiving request ends the session: 1002 (or a new session).
    let (first, _) = open_stream(addr, "POST", &format!("{url}/xhr"), &[]).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    drop(first);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(post(addr, &format!("{url}/xhr"), "").await.body, "c[1002,\"Connection interrupted\"]\n");

    // The same for streaming: 2010 to the second, which then ends.
    let url = format!("/echo/000/{}", sid());
    let (mut r1, _) = open_stream(addr, "POST", &format!("{url}/xhr_streaming"), &[]).await;
    assert_eq!(r1.next().await, format!("{}\n", "h".repeat(2048)));
    assert_eq!(r1.next().await, "o\n");
    let (mut r2, _) = open_stream(addr, "POST", &format!("{url}/xhr_streaming"), &[]).await;
    r2.next().await;
    assert_eq!(r2.next().await, "c[2010,\"Another connection still open\"]\n");
    assert_eq!(r2.next().await, "");
    drop(r1);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (mut r3, _) = open_stream(addr, "POST", &format!("{url}/xhr_streaming"), &[]).await;
    r3.next().await;
    assert_eq!(r3.next().await, "c[1002,\"Connection interrupted\"]\n");

    // A server close: every request gets the close frame until the session expires;
    // a streaming response ends after it.
    let url = format!("/close/000/{}", sid());
    assert_eq!(post(addr, &format!("{url}/xhr"), "").await.body, "o\n");
    for _ in 0..2 {
        assert_eq!(post(addr, &format!("{url}/xhr"), "").await.body, "c[3000,\"Go away!\"]\n");
    }
    let url = format!("/close/000/{}", sid());
    let (mut r1, _) = open_stream(addr, "POST", &format!("{url}/xhr_streaming"), &[]).await;
    r1.next().await;
    assert_eq!(r1.next().await, "o\n");
    assert_eq!(r1.next().await, "c[3000,\"Go away!\"]\n");
    assert_eq!(r1.next().await, "");
    let (mut r2, _) = open_stream(addr, "POST", &format!("{url}/xhr_streaming"), &[]).await;
    r2.next().await;
    assert_eq!(r2.next().await, "c[3000,\"Go away!\"]\n");
    assert_eq!(r2.next().await, "");
    let a = get(addr, &format!("/close/000/{}/jsonp?c=x", sid())).await;
    assert_eq!(a.body, "/**/x(\"o\");\r\n");
}

#[tokio::test]
async fn streaming_transports_and_their_limit() {
    let addr = test_server().await;
    // xhr_streaming: 2 KiB prelude, frames with newlines, 4096 bytes per response here.
    let url = format!("/echo/000/{}", sid());
    let (mut r, head) =
        open_stream(addr, "POST", &format!("{url}/xhr_streaming"), &[("Origin", "test")]).await;
    assert!(head.chunked() && head.get("content-length").is_none());
    let a = Answer { head, body: String::new() };
    assert_eq!(content_type(&a), "application/javascript;charset=UTF-8");
    check_cors(&a, Some("test"));
    check_not_cached(&a);
    assert_eq!(r.next().await, format!("{}\n", "h".repeat(2048)));
    assert_eq!(r.next().await, "o\n");
    let msg = format!("\"{}\"", "x".repeat(128));
    for _ in 0..31 {
        assert_eq!(post(addr, &format!("{url}/xhr_send"), &format!("[{msg}]")).await.status(), 204);
        assert_eq!(r.next().await, format!("a[{msg}]\n"));
    }
    assert_eq!(r.next().await, "", "the response ends past the limit");
    check_options(addr, "/echo/abc/abc/xhr_streaming", "OPTIONS, POST").await;

    // eventsource
    let url = format!("/echo/000/{}", sid());
    let (mut r, head) = open_stream(addr, "GET", &format!("{url}/eventsource"), &[]).await;
    assert_eq!(head.get("content-type"), Some("text/event-stream"));
    assert_eq!(head.get("cache-control"), Some(NO_CACHE));
    assert_eq!(r.next().await, "\r\n");
    assert_eq!(r.next().await, "data: o\r\n\r\n");
    post(addr, &format!("{url}/xhr_send"), "[\"x\"]").await;
    assert_eq!(r.next().await, "data: a[\"x\"]\r\n\r\n");
    post(addr, &format!("{url}/xhr_send"), r#"["  \u0000\n\r "]"#).await;
    assert_eq!(r.next().await, "data: a[\"  \\u0000\\n\\r \"]\r\n\r\n");
    drop(r);
    let url = format!("/echo/000/{}", sid());
    let (mut r, _) = open_stream(addr, "GET", &format!("{url}/eventsource"), &[]).await;
    r.next().await;
    r.next().await;
    let msg = format!("\"{}\"", "x".repeat(4096));
    post(addr, &format!("{url}/xhr_send"), &format!("[{msg}]")).await;
    assert_eq!(r.next().await, format!("data: a[{msg}]\r\n\r\n"));
    assert_eq!(r.next().await, "");

    // htmlfile
    let url = format!("/echo/000/{}", sid());
    let (mut r, head) = open_stream(addr, "GET", &format!("{url}/htmlfile?c=%63allback"), &[]).await;
    assert_eq!(head.get("content-type").unwrap().replace(' ', ""), "text/html;charset=UTF-8");
    assert_eq!(head.get("cache-control"), Some(NO_CACHE));
    let page = r.next().await;
    assert!(page.len() > 1024 && page.trim().starts_with("<!doctype html>"));
    assert!(page.contains("var c = parent.callback;") && page.trim().ends_with("</script>"));
    assert_eq!(r.next().await, "<script>\np(\"o\");\n</script>\r\n");
    post(addr, &format!("{url}/xhr_send"), "[\"x\"]").await;
    assert_eq!(r.next().await, "<script>\np(\"a[\\\"x\\\"]\");\n</script>\r\n");
    let big = "x".repeat(4096);
    post(addr, &format!("{url}/xhr_send"), &format!("[\"{big}\"]")).await;
    assert_eq!(r.next().await, format!("<script>\np(\"a[\\\"{big}\\\"]\");\n</script>\r\n"));
    assert_eq!(r.next().await, "");
    for (transport, path) in [("htmlfile", "/echo/a/a/htmlfile"), ("jsonp", "/echo/a/a/jsonp")] {
        let a = get(addr, path).await;
        assert!(a.status() == 500 && a.body.contains("\"callback\" parameter required"), "{transport}");
        for cb in ["%20", "*", "abc(", "abc%28"] {
            let a = get(addr, &format!("{path}?c={cb}")).await;
            assert!(
                a.status() == 500 && a.body.contains("invalid \"callback\" parameter"),
                "{transport} {cb}"
            );
        }
    }
}

#[tokio::test]
async fn jsonp_polling() {
    let addr = test_server().await;
    let form = [("Content-Type", "application/x-www-form-urlencoded")];
    let url = format!("/echo/000/{}", sid());
    let a = get(addr, &format!("{url}/jsonp?c=%63allback")).await;
    assert_eq!((a.status(), a.body.as_str()), (200, "/**/callback(\"o\");\r\n"));
    assert_eq!(content_type(&a), "application/javascript;charset=UTF-8");
    check_not_cached(&a);
    let a = request(addr, "POST", &format!("{url}/jsonp_send"), &form, "d=%5B%22x%22%5D").await;
    assert_eq!((a.status(), a.body.as_str()), (200, "ok"));
    assert_eq!(content_type(&a), "text/plain;charset=UTF-8");
    check_not_cached(&a);
    assert_eq!(
        get(addr, &format!("{url}/jsonp?c=%63allback")).await.body,
        "/**/callback(\"a[\\\"x\\\"]\");\r\n"
    );
    // Bad payloads, then a good one and a raw (non-form) one.
    let a = request(addr, "POST", &format!("{url}/jsonp_send"), &form, "d=%5B%22x").await;
    assert!(a.status() == 500 && a.body.contains("Broken JSON encoding."));
    for data in ["", "d=", "p=p"] {
        let a = request(addr, "POST", &format!("{url}/jsonp_send"), &form, data).await;
        assert!(a.status() == 500 && a.body.contains("Payload expected."), "{data}");
    }
    assert_eq!(request(addr, "POST", &format!("{url}/jsonp_send"), &form, "d=%5B%5D").await.body, "ok");
    assert_eq!(
        request(addr, "POST", &format!("{url}/jsonp_send"), &form, "d=%5B%22abc%22%5D").await.body,
        "ok"
    );
    let a =
        request(addr, "POST", &format!("{url}/jsonp_send"), &[("Content-Type", "text/plain")], "[\"%61bc\"]")
            .await;
    assert_eq!(a.body, "ok");
    assert_eq!(
        get(addr, &format!("{url}/jsonp?c=x")).await.body,
        "/**/x(\"a[\\\"abc\\\",\\\"%61bc\\\"]\");\r\n"
    );
    let url = format!("/close/000/{}", sid());
    assert_eq!(get(addr, &format!("{url}/jsonp?c=x")).await.body, "/**/x(\"o\");\r\n");
    for _ in 0..2 {
        assert_eq!(
            get(addr, &format!("{url}/jsonp?c=x")).await.body,
            "/**/x(\"c[3000,\\\"Go away!\\\"]\");\r\n"
        );
    }
}

#[tokio::test]
async fn jsessionid_cookie() {
    let addr = test_server().await;
    let cookie = |a: &Answer| a.get("set-cookie").map(str::to_owned);
    let url = format!("/cookie_needed_echo/000/{}", sid());
    let a = post(addr, &format!("{url}/xhr"), "").await;
    assert_eq!((a.body.as_str(), cookie(&a).as_deref()), ("o\n", Some("JSESSIONID=dummy; path=/")));
    let url = format!("/cookie_needed_echo/000/{}", sid());
    let a = request(addr, "POST", &format!("{url}/xhr"), &[("Cookie", "JSESSIONID=abcdef")], "").await;
    assert_eq!(cookie(&a).as_deref(), Some("JSESSIONID=abcdef; path=/"));
    for (method, t) in [("POST", "xhr_streaming"), ("GET", "eventsource"), ("GET", "htmlfile?c=cb")] {
        let (_c, head) =
            open_stream(addr, method, &format!("/cookie_needed_echo/000/{}/{t}", sid()), &[]).await;
        assert_eq!(head.get("set-cookie"), Some("JSESSIONID=dummy; path=/"), "{t}");
    }
    let url = format!("/cookie_needed_echo/000/{}", sid());
    let a = get(addr, &format!("{url}/jsonp?c=cb")).await;
    assert_eq!(cookie(&a).as_deref(), Some("JSESSIONID=dummy; path=/"));
    let form = [("Content-Type", "application/x-www-form-urlencoded")];
    let a = request(addr, "POST", &format!("{url}/jsonp_send"), &form, "d=%5B%22x%22%5D").await;
    assert_eq!((a.body.as_str(), cookie(&a).as_deref()), ("ok", Some("JSESSIONID=dummy; path=/")));
    // Not on the echo service.
    assert!(cookie(&post(addr, &format!("/echo/000/{}/xhr", sid()), "").await).is_none());
}

async fn ws(addr: SocketAddr, path: &str) -> tether::WebSocket {
    tether::connect(&format!("ws://{addr}{path}")).await.unwrap().0
}

async fn text(ws: &mut tether::WebSocket) -> Option<String> {
    match tokio::time::timeout(WAIT, ws.next()).await.unwrap() {
        Some(Ok(Message::Text(t))) => Some(t.to_string()),
        Some(Ok(Message::Close(_))) => None,
        Some(Ok(other)) => panic!("unexpected {other:?}"),
        _ => None,
    }
}

#[tokio::test]
async fn websocket_transports() {
    let addr = test_server().await;
    // Plain HTTP on a websocket URL.
    assert_eq!(get(addr, "/echo/0/0/websocket").await.status(), 400);
    let a =
        request(addr, "GET", "/echo/0/0/websocket", &[("Upgrade", "WebSocket"), ("Connection", "close")], "")
            .await;
    assert_eq!(a.status(), 400);
    for h in [&[("Upgrade", "WebSocket"), ("Connection", "Upgrade")][..], &[]] {
        let a = request(addr, "POST", "/echo/0/0/websocket", h, "").await;
        assert_eq!((a.status(), a.get("content-type"), a.body.as_str()), (405, None, ""));
        assert!(a.get("allow").is_some());
    }
    assert_eq!(get(addr, "/disabled_websocket_echo/0/0/websocket").await.status(), 404);

    // Framed: o, a[...] per message, empty and [] ignored.
    let path = format!("/echo/000/{}/websocket", sid());
    let mut w = ws(addr, &path).await;
    assert_eq!(text(&mut w).await.as_deref(), Some("o"));
    for m in ["", "[]", "[\"a\"]"] {
        w.send(Message::text(m)).await.unwrap();
    }
    assert_eq!(text(&mut w).await.as_deref(), Some("a[\"a\"]"));
    // The same session id twice at once: two sessions.
    let mut w2 = ws(addr, &path).await;
    assert_eq!(text(&mut w2).await.as_deref(), Some("o"));
    w2.send(Message::text("[\"b\"]")).await.unwrap();
    assert_eq!(text(&mut w2).await.as_deref(), Some("a[\"b\"]"));
    // Broken JSON ends the connection.
    w.send(Message::text("[\"a")).await.unwrap();
    assert_eq!(text(&mut w).await, None);
    // The close service: o, c[3000,"Go away!"], then the connection closes.
    let mut c = ws(addr, &format!("/close/000/{}/websocket", sid())).await;
    assert_eq!(text(&mut c).await.as_deref(), Some("o"));
    assert_eq!(text(&mut c).await.as_deref(), Some("c[3000,\"Go away!\"]"));
    assert_eq!(text(&mut c).await, None);

    // Raw: plain messages, and a close frame with the reason.
    let mut raw = ws(addr, "/echo/websocket").await;
    raw.send(Message::text("Hello world!\u{ffff}")).await.unwrap();
    assert_eq!(text(&mut raw).await.as_deref(), Some("Hello world!\u{ffff}"));
    let mut raw = ws(addr, "/close/websocket").await;
    assert_eq!(text(&mut raw).await, None);
    let closed = raw.close_status().unwrap();
    assert_eq!((closed.code.0, closed.reason.as_str()), (3000, "Go away!"));
}

#[tokio::test]
async fn json_encoding_both_ways() {
    let addr = test_server().await;
    let url = format!("/echo/000/{}", sid());
    assert_eq!(post(addr, &format!("{url}/xhr"), "").await.body, "o\n");
    // Every character the server must escape, sent raw; it comes back escaped.
    let escapable =
        |c: u32| matches!(c, 0x200c..=0x200f | 0x2028..=0x202f | 0x2060..=0x206f | 0xfff0..=0xffff);
    let chars: String = (255u32..65536).filter(|c| escapable(*c)).filter_map(char::from_u32).collect();
    let escaped: String = (255u32..65536).filter(|c| escapable(*c)).map(|c| format!("\\u{c:04x}")).collect();
    assert_eq!(post(addr, &format!("{url}/xhr_send"), &format!("[\"{chars}\"]")).await.status(), 204);
    let body = post(addr, &format!("{url}/xhr"), "").await.body;
    assert_eq!(&body.trim()[2..body.trim().len() - 1], format!("\"{escaped}\""));
    // What a client escapes is decoded.
    let sent: String =
        (0x300u32..0x370).chain(0x2000..0x2100).chain(0xfff0..0x10000).filter_map(char::from_u32).collect();
    let literal = sent.chars().map(|c| format!("\\u{:04x}", u32::from(c))).collect::<String>();
    assert_eq!(post(addr, &format!("{url}/xhr_send"), &format!("[\"{literal}\"]")).await.status(), 204);
    let body = post(addr, &format!("{url}/xhr"), "").await.body;
    let got: Vec<String> = serde_json::from_str(&body.trim()[1..]).unwrap();
    assert_eq!(got, [sent]);
}

#[tokio::test]
async fn http_1_0_and_1_1() {
    let addr = test_server().await;
    // HTTP/1.0: a whole answer with Content-Length, no chunking.
    let mut c = Conn::open(addr).await;
    c.send("GET", "/echo", "1.0", &[("Connection", "Keep-Alive")], b"").await;
    let head = c.head().await;
    assert!(!head.chunked());
    assert_eq!(head.get("content-length"), Some("19"));
    assert_eq!(c.body(&head).await, "Welcome to SockJS!\n");
    // HTTP/1.0 streaming: neither chunked nor a length; the end of the body is the end of
    // the connection.
    let mut c = Conn::open(addr).await;
    c.send(
        "POST",
        &format!("/close/000/{}/xhr_streaming", sid()),
        "1.0",
        &[("Connection", "Keep-Alive")],
        b"",
    )
    .await;
    let head = c.head().await;
    assert_eq!(head.status, 200);
    assert!(!head.chunked() && head.get("content-length").is_none(), "{head:?}");
    assert_eq!(c.exact(2049).await[0], b'h');
    assert_eq!(c.exact(2).await, b"o\n");
    assert_eq!(c.exact(19).await, b"c[3000,\"Go away!\"]\n");
    assert!(c.closed().await);
    // HTTP/1.1: keep-alive, and streaming chunked.
    let mut c = Conn::open(addr).await;
    c.send("GET", "/echo", "1.1", &[("Connection", "Keep-Alive")], b"").await;
    let head = c.head().await;
    assert_eq!(head.version, "1.1");
    assert_eq!(c.body(&head).await, "Welcome to SockJS!\n");
    c.send("GET", "/echo", "1.1", &[], b"").await;
    assert_eq!(c.head().await.status, 200);
    let mut c = Conn::open(addr).await;
    c.send("POST", &format!("/close/000/{}/xhr_streaming", sid()), "1.1", &[], b"").await;
    let head = c.head().await;
    assert!(head.chunked() && head.get("content-length").is_none());
    assert!(c.chunk().await.starts_with('h'));
    assert_eq!(c.chunk().await, "o\n");
    assert_eq!(c.chunk().await, "c[3000,\"Go away!\"]\n");
    assert_eq!(c.chunk().await, "");
}

// The hub's SockJS endpoints.

/// A tether.json client over SockJS xhr-polling.
struct Polling {
    addr: SocketAddr,
    url: String,
    pending: std::collections::VecDeque<Value>,
}

impl Polling {
    async fn open(addr: SocketAddr, prefix: &str) -> Self {
        let url = format!("{prefix}/000/{}", sid());
        assert_eq!(post(addr, &format!("{url}/xhr"), "").await.body, "o\n");
        Self { addr, url, pending: Default::default() }
    }

    async fn send(&self, msg: &str) {
        let body = serde_json::to_string(&[msg]).unwrap();
        assert_eq!(post(self.addr, &format!("{}/xhr_send", self.url), &body).await.status(), 204);
    }

    /// The next frame's text (messages are queued one by one).
    async fn poll(&self) -> String {
        post(self.addr, &format!("{}/xhr", self.url), "").await.body
    }

    async fn recv(&mut self) -> Value {
        while self.pending.is_empty() {
            let frame = self.poll().await;
            let frame = frame.trim_end();
            if frame == "h" {
                continue;
            }
            let list: Vec<String> = serde_json::from_str(frame.strip_prefix('a').expect(frame)).unwrap();
            self.pending.extend(list.iter().map(|m| serde_json::from_str::<Value>(m).unwrap()));
        }
        self.pending.pop_front().unwrap()
    }
}

#[tokio::test]
async fn the_hub_over_sockjs() {
    let hub = start_with(common::namespaces(), |o| {
        o.sockjs.disconnect_delay = Duration::from_millis(300);
        o.sockjs.max_sessions = 3;
        o.sockjs.max_body_size = 1024;
    })
    .await;
    let addr = hub.addr;
    let info = get(addr, "/sockjs/info").await;
    assert_eq!(serde_json::from_str::<Value>(&info.body).unwrap()["websocket"], json!(true));

    // A SockJS client and a WebSocket client chat in one channel.
    let mut sj = Polling::open(addr, "/sockjs").await;
    sj.send(r#"{"id":1,"connect":{"name":"poll"}}"#).await;
    assert_eq!(sj.recv().await["result"]["user"], json!("poll"));
    sj.send(r#"{"id":2,"subscribe":{"channel":"chat:x"}}"#).await;
    let sub = sj.recv().await;
    assert_eq!(sub["id"], json!(2));
    let mut wsc = Client::connect(addr, "ws").await;
    wsc.ok("subscribe", json!({"channel": "chat:x"})).await;
    wsc.ok("publish", json!({"channel": "chat:x", "data": {"text": "hi \u{2028}<"}})).await;
    let mut push = sj.recv().await;
    while push["push"]["join"].is_object() {
        push = sj.recv().await;
    }
    assert_eq!(push["push"]["pub"]["data"], json!({"text": "hi \u{2028}<"}));
    sj.send(r#"{"id":3,"publish":{"channel":"chat:x","data":"from sockjs"}}"#).await;
    // Its own publication may come before or after the reply.
    while sj.recv().await["id"] != json!(3) {}
    // The WebSocket client gets its own publication first, then the SockJS client's.
    assert_eq!(wsc.push().await["pub"]["data"]["text"], json!("hi \u{2028}<"));
    assert_eq!(wsc.push().await["pub"]["data"], json!("from sockjs"));
    // Over the framed websocket transport too.
    let mut w = ws(addr, &format!("/sockjs/000/{}/websocket", sid())).await;
    assert_eq!(text(&mut w).await.as_deref(), Some("o"));
    w.send(Message::text(serde_json::to_string(&[r#"{"id":1,"connect":{}}"#]).unwrap())).await.unwrap();
    let frame = text(&mut w).await.unwrap();
    let list: Vec<String> = serde_json::from_str(&frame[1..]).unwrap();
    assert_eq!(serde_json::from_str::<Value>(&list[0]).unwrap()["id"], json!(1));

    // Limits: sessions (503 beyond), xhr_send bodies (413 beyond).
    let _b = Polling::open(addr, "/sockjs").await;
    let _c = Polling::open(addr, "/stomp-sockjs").await;
    // The limit is per endpoint: the STOMP one has room, the JSON one is full.
    let _d = Polling::open(addr, "/sockjs").await;
    assert_eq!(post(addr, &format!("/sockjs/000/{}/xhr", sid()), "").await.status(), 503);
    let big = format!("[\"{}\"]", "x".repeat(2000));
    assert_eq!(post(addr, &format!("{}/xhr_send", sj.url), &big).await.status(), 413);

    // A page of another origin is refused (the hub's WebSocket origin policy).
    for origin in ["http://evil.example", "null"] {
        let a = request(addr, "POST", &format!("/sockjs/000/{}/xhr", sid()), &[("Origin", origin)], "").await;
        assert_eq!(a.status(), 403, "{origin}");
    }
    // The page's own origin (the Host these requests name) passes, and meets the full table.
    let a =
        request(addr, "POST", &format!("/sockjs/000/{}/xhr", sid()), &[("Origin", "http://127.0.0.1")], "")
            .await;
    assert_eq!(a.status(), 503);

    // Expiry: without a receiving request for the disconnect delay the session ends, and
    // so does its hub connection; the WebSocket and SockJS-over-WebSocket ones stay.
    let connections = || hub.hub.metrics.connections.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(connections(), 3);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(connections(), 2);
    assert_eq!(sj.poll().await, "o\n", "a new session under the old id");
    let metrics = get(addr, "/metrics").await.body;
    assert!(metrics.contains("tether_sockjs_sessions{prefix=\"/sockjs\"} 1"), "{metrics}");
}

#[tokio::test]
async fn recovery_and_slow_consumers_over_sockjs() {
    let hub = start_with(common::namespaces(), |o| {
        o.sockjs.max_queued_bytes = 4096;
    })
    .await;
    let addr = hub.addr;
    let mut sj = Polling::open(addr, "/sockjs").await;
    sj.send(r#"{"id":1,"connect":{}}"#).await;
    sj.recv().await;
    sj.send(r#"{"id":2,"subscribe":{"channel":"chat:r"}}"#).await;
    let sub = sj.recv().await;
    let (epoch, offset) = (sub["result"]["epoch"].clone(), sub["result"]["offset"].as_u64().unwrap());
    let mut publisher = Client::connect(addr, "p").await;
    publisher.ok("publish", json!({"channel": "chat:r", "data": 1})).await;
    publisher.ok("publish", json!({"channel": "chat:r", "data": 2})).await;
    // A new session recovers what the old one missed.
    let mut again = Polling::open(addr, "/sockjs").await;
    again.send(r#"{"id":1,"connect":{}}"#).await;
    again.recv().await;
    let cmd =
        json!({"id": 2, "subscribe": {"channel": "chat:r", "recover": {"offset": offset, "epoch": epoch}}});
    again.send(&cmd.to_string()).await;
    let rec = again.recv().await;
    assert_eq!(rec["result"]["recovered"], json!(true));
    assert_eq!(rec["result"]["publications"].as_array().unwrap().len(), 2);

    // The first session never polls: past 4 KiB queued it is closed with 4008.
    for i in 0..40 {
        publisher.ok("publish", json!({"channel": "chat:r", "data": "x".repeat(100 + i)})).await;
    }
    let mut frames = String::new();
    for _ in 0..3 {
        frames = sj.poll().await;
        if frames.starts_with('c') {
            break;
        }
    }
    assert_eq!(frames, "c[4008,\"slow consumer\"]\n");
}

#[tokio::test]
async fn stomp_over_sockjs() {
    let hub = start_with(common::namespaces(), |_| {}).await;
    let addr = hub.addr;
    let url = format!("/stomp-sockjs/000/{}", sid());
    let (mut stream, _) = open_stream(addr, "POST", &format!("{url}/xhr_streaming"), &[]).await;
    stream.next().await;
    assert_eq!(stream.next().await, "o\n");
    let send = |frame: &str| serde_json::to_string(&[frame]).unwrap();
    let frames = [
        "CONNECT\naccept-version:1.2\nhost:h\nheart-beat:0,0\n\n\0",
        "SUBSCRIBE\nid:sub-0\ndestination:/topic/chat:s\n\n\0",
        "SEND\ndestination:/topic/chat:s\ncontent-type:text/plain\n\nhello\0",
    ];
    for f in frames {
        assert_eq!(post(addr, &format!("{url}/xhr_send"), &send(f)).await.status(), 204);
    }
    let mut got = String::new();
    while !got.contains("MESSAGE") {
        let chunk = stream.next().await;
        assert!(!chunk.is_empty(), "the stream ended: {got}");
        got.push_str(&chunk);
    }
    let frames: Vec<String> = got
        .lines()
        .filter(|l| l.starts_with('a'))
        .flat_map(|l| serde_json::from_str::<Vec<String>>(&l[1..]).unwrap())
        .collect();
    assert!(frames[0].starts_with("CONNECTED\n"), "{frames:?}");
    let message = frames.iter().find(|f| f.starts_with("MESSAGE\n")).unwrap();
    assert!(message.contains("subscription:sub-0\n") && message.ends_with("\n\nhello\0"), "{message:?}");
}

#[tokio::test]
async fn sockjs_can_be_turned_off() {
    let hub = start_with(common::namespaces(), |o| {
        o.sockjs_prefix = None;
        o.sockjs.websocket = false;
    })
    .await;
    assert_eq!(get(hub.addr, "/sockjs/info").await.status(), 404);
    let info: Value = serde_json::from_str(&get(hub.addr, "/stomp-sockjs/info").await.body).unwrap();
    assert_eq!(info["websocket"], json!(false));
    let url = format!("ws://{}/stomp-sockjs/000/{}/websocket", hub.addr, sid());
    assert!(tether::connect_with(&url, &ClientConfig::default()).await.is_err());
}

#[tokio::test]
async fn heartbeats_on_idle_receivers() {
    let hub = start_with(common::namespaces(), |o| o.sockjs.heartbeat = Duration::from_millis(100)).await;
    let addr = hub.addr;
    let url = format!("/sockjs/000/{}", sid());
    assert_eq!(post(addr, &format!("{url}/xhr"), "").await.body, "o\n");
    // A poll with nothing to say ends with a heartbeat; a stream sends them as it goes.
    assert_eq!(post(addr, &format!("{url}/xhr"), "").await.body, "h\n");
    let (mut s, _) = open_stream(addr, "GET", &format!("{url}/eventsource"), &[]).await;
    assert_eq!(s.next().await, "\r\n");
    for _ in 0..3 {
        assert_eq!(s.next().await, "data: h\r\n\r\n");
    }
    // Over the websocket transport too.
    let mut w = ws(addr, &format!("/sockjs/000/{}/websocket", sid())).await;
    assert_eq!(text(&mut w).await.as_deref(), Some("o"));
    assert_eq!(text(&mut w).await.as_deref(), Some("h"));
}

/// Many sessions at once, each with its own stream and sends interleaved with the others':
/// every session gets exactly its own messages, in order.
#[tokio::test]
async fn many_sessions_at_once() {
    let addr = test_server().await;
    let mut tasks = Vec::new();
    for n in 0..40 {
        tasks.push(tokio::spawn(async move {
            let url = format!("/echo/000/{}", sid());
            let (mut stream, _) = open_stream(addr, "POST", &format!("{url}/xhr_streaming"), &[]).await;
            stream.next().await;
            assert_eq!(stream.next().await, "o\n");
            let mut got = Vec::new();
            for i in 0..10 {
                let body = serde_json::to_string(&[format!("{n}-{i}")]).unwrap();
                assert_eq!(post(addr, &format!("{url}/xhr_send"), &body).await.status(), 204);
            }
            while got.len() < 10 {
                let frame = stream.next().await;
                let list: Vec<String> =
                    serde_json::from_str(frame.trim_end().strip_prefix('a').unwrap()).unwrap();
                got.extend(list);
            }
            assert_eq!(got, (0..10).map(|i| format!("{n}-{i}")).collect::<Vec<_>>());
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

/// Shutdown: a connected SockJS client and one that never sent `connect` both get
/// `c[1001,"server shutting down"]` on their open stream, which then ends.
#[tokio::test]
async fn shutdown_closes_sockjs_sessions_with_1001() {
    let mut hub = start_with(common::namespaces(), |_| {}).await;
    let addr = hub.addr;
    let mut streams = Vec::new();
    for connect in [true, false] {
        let url = format!("/sockjs/000/{}", sid());
        let (mut s, _) = open_stream(addr, "POST", &format!("{url}/xhr_streaming"), &[]).await;
        s.next().await;
        assert_eq!(s.next().await, "o\n");
        if connect {
            post(addr, &format!("{url}/xhr_send"), r#"["{\"id\":1,\"connect\":{}}"]"#).await;
            assert!(s.next().await.contains("\\\"id\\\":1"));
        }
        streams.push(s);
    }
    let _ = hub.stop.take().unwrap().send(());
    for mut s in streams {
        assert_eq!(s.next().await, "c[1001,\"server shutting down\"]\n");
        assert_eq!(s.next().await, "");
    }
}

//! SockJS: the hub's front-ends where WebSocket does not get through. A SockJS endpoint
//! under a prefix speaks the published SockJS protocol (the one sockjs-client 1.x,
//! sockjs-node and Spring speak): the greeting, `/info`, `/iframe.html`, sessions at
//! `/<server>/<session>/<transport>` over the transports `websocket`, `xhr`, `xhr_send`,
//! `xhr_streaming`, `eventsource`, `htmlfile`, `jsonp` and `jsonp_send`, and the raw
//! `/websocket`. Each session carries one front-end's protocol (`tether.json` or STOMP)
//! through the same [`Link`] a WebSocket gives it.
//!
//! [`TestServer`] serves the four services the protocol's own test suite expects.

pub(crate) mod frame;
pub(crate) mod session;

use super::{Context as FrontContext, FrontEnd};
use crate::session::link::{Link, Rx, Tx};
use bytes::Bytes;
use frame::Transport;
use futures_util::future::BoxFuture;
use futures_util::StreamExt;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use session::{Attach, Receiver, SockJsSession};
use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, SystemTime};
use tether::{CloseCode, Message, OriginPolicy, ServerConfig, WebSocket};

pub use frame::escape;

/// A response body.
pub(crate) type Body = UnsyncBoxBody<Bytes, Infallible>;

/// Settings of one SockJS endpoint.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct SockJsOptions {
    /// Whether the `websocket` transports are offered (`/info` says so). Default on.
    pub websocket: bool,
    /// Whether session responses set the `JSESSIONID` cookie, for load balancers that
    /// keep a client on one node by it (`/info` says `cookie_needed`). Default off.
    pub cookie_needed: bool,
    /// Bytes a streaming response carries before it ends and the client opens the next
    /// one (so that the browser can free what it read). Default 128 KiB.
    pub response_limit: usize,
    /// How often a receiving request gets a heartbeat frame when nothing else is sent.
    /// Default 25 s.
    pub heartbeat: Duration,
    /// How long a session lives without a receiving request. Default 5 s.
    pub disconnect_delay: Duration,
    /// Sessions open at once per endpoint (503 beyond). Default 10,000.
    pub max_sessions: usize,
    /// Bytes queued for a session's client beyond which the session is closed with 4008
    /// "slow consumer". Default 4 MiB (the hub's `max_queued_bytes`).
    pub max_queued_bytes: usize,
    /// Largest body of an `xhr_send` or `jsonp_send` (413 beyond). Default 64 KiB.
    pub max_body_size: usize,
    /// The sockjs-client script the `iframe.html` page loads.
    pub sockjs_url: String,
}

impl Default for SockJsOptions {
    fn default() -> Self {
        Self {
            websocket: true,
            cookie_needed: false,
            response_limit: 128 * 1024,
            heartbeat: Duration::from_secs(25),
            disconnect_delay: Duration::from_secs(5),
            max_sessions: 10_000,
            max_queued_bytes: 4 << 20,
            max_body_size: 64 * 1024,
            sockjs_url: "https://cdn.jsdelivr.net/npm/sockjs-client@1/dist/sockjs.min.js".into(),
        }
    }
}

/// What a SockJS session runs.
#[derive(Clone)]
pub(crate) enum App {
    /// Sends every message back (test mode).
    Echo,
    /// Closes every session at once with 3000 "Go away!" (test mode).
    Close,
    /// A hub front-end.
    Front(&'static dyn FrontEnd, FrontContext),
}

impl App {
    fn run(&self, link: Link) -> BoxFuture<'static, ()> {
        match self {
            Self::Echo => Box::pin(async move {
                let Link { tx, mut rx } = link;
                while let Some(Ok(m)) = rx.next().await {
                    if m.is_data() && tx.send(m).await.is_err() {
                        break;
                    }
                }
            }),
            Self::Close => Box::pin(async move {
                let Link { tx, mut rx } = link;
                let _ = tx.send_close(CloseCode(3000), "Go away!");
                while rx.next().await.is_some() {}
            }),
            Self::Front(front, cx) => {
                front.serve(link, crate::session::Session::new(cx.door.clone(), None), cx.clone(), None)
            }
        }
    }
}

/// The WebSocket routes of an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WsRoute {
    /// `/websocket`: plain WebSocket messages, no SockJS framing.
    Raw,
    /// `/<server>/<session>/websocket`: SockJS frames.
    Framed,
}

/// One SockJS endpoint: its prefix, settings, application and sessions.
pub(crate) struct Endpoint {
    prefix: String,
    options: SockJsOptions,
    app: App,
    /// Which browser origins may use it (the hub's WebSocket origin policy); `None`: any.
    origins: Option<OriginPolicy>,
    sessions: Mutex<HashMap<String, Arc<SockJsSession>>>,
    iframe: Bytes,
    etag: HeaderValue,
}

const NO_CACHE: &str = "no-store, no-cache, no-transform, must-revalidate, max-age=0";
const ONE_YEAR: &str = "public, max-age=31536000";

impl Endpoint {
    /// An endpoint under `prefix` (no trailing slash), sweeping its idle sessions.
    pub(crate) fn new(
        prefix: &str,
        options: SockJsOptions,
        app: App,
        origins: Option<OriginPolicy>,
    ) -> Arc<Self> {
        let iframe = iframe_page(&options.sockjs_url);
        let hash = iframe
            .bytes()
            .fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
        let etag =
            HeaderValue::from_str(&format!("\"{hash:016x}\"")).unwrap_or(HeaderValue::from_static("\"0\""));
        let ep = Arc::new(Self {
            prefix: prefix.trim_end_matches('/').to_owned(),
            options,
            app,
            origins,
            sessions: Mutex::new(HashMap::new()),
            iframe: iframe.into(),
            etag,
        });
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(sweep(Arc::downgrade(&ep)));
        }
        ep
    }

    fn sessions(&self) -> MutexGuard<'_, HashMap<String, Arc<SockJsSession>>> {
        self.sessions.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sessions open now.
    pub(crate) fn session_count(&self) -> usize {
        self.sessions().len()
    }

    /// The endpoint's prefix.
    pub(crate) fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The part of `path` under this endpoint's prefix (`""` for the prefix itself).
    fn rest<'a>(&self, path: &'a str) -> Option<&'a str> {
        let rest = path.strip_prefix(self.prefix.as_str())?;
        (rest.is_empty() || rest.starts_with('/')).then_some(rest)
    }

    /// Whether this endpoint answers `path`.
    pub(crate) fn matches(&self, path: &str) -> bool {
        self.rest(path).is_some()
    }

    /// The WebSocket route `path` names, if it names one (and WebSocket is on).
    pub(crate) fn websocket_route(&self, path: &str) -> Option<WsRoute> {
        let rest = self.rest(path)?;
        if !self.options.websocket {
            return None;
        }
        if rest == "/websocket" {
            return Some(WsRoute::Raw);
        }
        match session_path(rest) {
            Some((_, "websocket")) => Some(WsRoute::Framed),
            _ => None,
        }
    }

    /// Runs an upgraded WebSocket on `route`.
    pub(crate) async fn run_websocket(&self, ws: WebSocket, route: WsRoute) {
        match route {
            WsRoute::Raw => self.app.run(Link::from(ws)).await,
            WsRoute::Framed => {
                let (session, rx) = SockJsSession::new(self.options.max_queued_bytes);
                let app = self.app.run(Link { tx: Tx::Outbox(session.clone()), rx: Rx::Channel(rx) });
                let app = tokio::spawn(app);
                session::run_framed(ws, session, self.options.heartbeat).await;
                let _ = app.await;
            }
        }
    }

    /// Answers a request under the prefix (`server`: the WebSocket settings for the
    /// `websocket` transports over hyper).
    pub(crate) async fn handle(
        self: &Arc<Self>,
        mut req: Request<Incoming>,
        server: &ServerConfig,
    ) -> Response<Body> {
        let Some(rest) = self.rest(req.uri().path()).map(str::to_owned) else {
            return plain(404, "Not found.");
        };
        let origin = req.headers().get(header::ORIGIN).cloned();
        if let (Some(policy), Some(o)) = (&self.origins, &origin) {
            let host = req.headers().get(header::HOST).and_then(|h| h.to_str().ok());
            let host = host.or_else(|| req.uri().authority().map(|a| a.as_str()));
            // As for a WebSocket handshake: `null` (a sandboxed frame, a file) passes only a
            // policy that lists it or allows any origin.
            if !policy.allows(o.to_str().unwrap_or(""), host) {
                return plain(403, "Origin not allowed.");
            }
        }
        let method = req.method().clone();
        match rest.as_str() {
            "" | "/" => {
                if method != Method::GET && method != Method::HEAD {
                    return not_allowed("GET, HEAD");
                }
                plain(200, "Welcome to SockJS!")
            }
            "/info" => match method {
                Method::GET => self.info(origin.as_ref()),
                Method::OPTIONS => options(&req, origin.as_ref(), "OPTIONS, GET"),
                _ => not_allowed("OPTIONS, GET"),
            },
            "/websocket" => self.websocket(&mut req, server, WsRoute::Raw),
            r if is_iframe(r) => {
                if method != Method::GET && method != Method::HEAD {
                    return not_allowed("GET, HEAD");
                }
                self.iframe(&req)
            }
            r => {
                let Some((id, transport)) = session_path(r) else { return plain(404, "Not found.") };
                let id = id.to_owned();
                self.session_request(req, &id, transport, origin, server).await
            }
        }
    }

    async fn session_request(
        self: &Arc<Self>,
        mut req: Request<Incoming>,
        id: &str,
        transport: &str,
        origin: Option<HeaderValue>,
        server: &ServerConfig,
    ) -> Response<Body> {
        let method = req.method().clone();
        let post_only = matches!(transport, "xhr" | "xhr_send" | "xhr_streaming");
        if post_only && method == Method::OPTIONS {
            return options(&req, origin.as_ref(), "OPTIONS, POST");
        }
        let query = req.uri().query().map(str::to_owned);
        let transport = match (transport, &method) {
            ("websocket", _) => return self.websocket(&mut req, server, WsRoute::Framed),
            ("xhr_send", &Method::POST) => return self.send(req, id, origin, false).await,
            ("jsonp_send", &Method::POST) => return self.send(req, id, origin, true).await,
            ("xhr", &Method::POST) => Transport::XhrPolling,
            ("xhr_streaming", &Method::POST) => Transport::XhrStreaming,
            ("eventsource", &Method::GET) => Transport::EventSource,
            ("htmlfile" | "jsonp", &Method::GET) => match frame::callback(query.as_deref()) {
                Ok(c) if transport == "htmlfile" => Transport::HtmlFile(c),
                Ok(c) => Transport::JsonpPolling(c),
                Err(e) => return plain(500, e),
            },
            (_, _) if post_only || transport == "jsonp_send" => return not_allowed("OPTIONS, POST"),
            ("eventsource" | "htmlfile" | "jsonp", _) => return not_allowed("GET"),
            _ => return plain(404, "Not found."),
        };
        self.receive(&req, id, transport, origin)
    }

    /// `/info`: what the client needs to pick a transport.
    fn info(&self, origin: Option<&HeaderValue>) -> Response<Body> {
        let mut b = [0u8; 4];
        let _ = getrandom::getrandom(&mut b);
        let body = serde_json::json!({
            "websocket": self.options.websocket,
            "cookie_needed": self.options.cookie_needed,
            "origins": ["*:*"],
            "entropy": u32::from_be_bytes(b),
        });
        let mut r = full(200, "application/json; charset=UTF-8", body.to_string());
        no_cache(r.headers_mut());
        cors(r.headers_mut(), origin);
        r
    }

    fn iframe<B>(&self, req: &Request<B>) -> Response<Body> {
        let mut r = if req.headers().get(header::IF_NONE_MATCH) == Some(&self.etag) {
            status(304)
        } else {
            full(200, "text/html; charset=UTF-8", self.iframe.clone())
        };
        let h = r.headers_mut();
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static(ONE_YEAR));
        h.insert(header::EXPIRES, expires());
        h.insert(header::ETAG, self.etag.clone());
        r
    }

    /// The `Set-Cookie` of a session response, when cookies are needed: the client's
    /// `JSESSIONID`, or `dummy`.
    fn cookie<B>(&self, req: &Request<B>, h: &mut HeaderMap) {
        if !self.options.cookie_needed {
            return;
        }
        let given = req
            .headers()
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .find_map(|kv| kv.trim().strip_prefix("JSESSIONID="))
            .unwrap_or("dummy");
        if let Ok(v) = HeaderValue::from_str(&format!("JSESSIONID={given}; path=/")) {
            h.insert(header::SET_COOKIE, v);
        }
    }

    /// A receiving request: the session's receiver, or its close frame, or 2010.
    fn receive<B>(
        self: &Arc<Self>,
        req: &Request<B>,
        id: &str,
        transport: Transport,
        origin: Option<HeaderValue>,
    ) -> Response<Body> {
        let session = {
            let mut sessions = self.sessions();
            match sessions.get(id) {
                Some(s) => s.clone(),
                None if sessions.len() >= self.options.max_sessions => {
                    return plain(503, "Too many sessions.");
                }
                None => {
                    let (s, rx) = SockJsSession::new(self.options.max_queued_bytes);
                    sessions.insert(id.to_owned(), s.clone());
                    let app = self.app.run(Link { tx: Tx::Outbox(s.clone()), rx: Rx::Channel(rx) });
                    let s2 = s.clone();
                    tokio::spawn(async move {
                        app.await;
                        // The application is done: its session is too (a no-op if it closed it).
                        s2.close(3000, "Go away!");
                    });
                    s
                }
            }
        };
        let content_type = transport.content_type();
        let body = match session.attach() {
            Attach::Attached => {
                Receiver::attached(session, transport, self.options.response_limit, self.options.heartbeat)
            }
            Attach::Closed(c) => Receiver::only(c, transport),
            Attach::Busy => Receiver::only(frame::close(session::BUSY.0, session::BUSY.1).into(), transport),
        };
        let mut r = Response::new(body.boxed_unsync());
        let h = r.headers_mut();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        no_cache(h);
        cors(h, origin.as_ref());
        self.cookie(req, h);
        r
    }

    /// `xhr_send` and `jsonp_send`: messages from the client.
    async fn send(
        &self,
        req: Request<Incoming>,
        id: &str,
        origin: Option<HeaderValue>,
        jsonp: bool,
    ) -> Response<Body> {
        let Some(session) = self.sessions().get(id).cloned() else { return plain(404, "Not found.") };
        let mut headers = HeaderMap::new();
        self.cookie(&req, &mut headers);
        let form = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
        let limit = self.options.max_body_size;
        let body = match Limited::new(req.into_body(), limit).collect().await {
            Ok(b) => b.to_bytes(),
            Err(e) if e.is::<http_body_util::LengthLimitError>() => {
                return plain(413, &format!("Payload over the limit of {limit} bytes."));
            }
            Err(e) => return plain(400, &format!("Cannot read the payload: {e}")),
        };
        let parsed = if jsonp { frame::jsonp_payload(&body, form) } else { frame::parse_send(&body) };
        let messages = match parsed {
            Ok(m) => m,
            Err(e) => return plain(500, e),
        };
        if let Some(inbox) = session.inbox() {
            for m in messages {
                // Waits while the application is behind: the client's next send waits too.
                if inbox.send(Message::text(m)).await.is_err() {
                    break;
                }
            }
        }
        // jsonp_send answers "ok" (some browsers mishandle 204), xhr_send 204; both with a
        // text content type (Firefox guesses XML otherwise).
        let mut r = if jsonp { full(200, "text/plain; charset=UTF-8", "ok") } else { status(204) };
        let h = r.headers_mut();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=UTF-8"));
        no_cache(h);
        cors(h, origin.as_ref());
        h.extend(headers);
        r
    }

    /// The `websocket` transports over hyper (HTTP/1.1 upgrade or HTTP/2 CONNECT).
    fn websocket<B>(
        self: &Arc<Self>,
        req: &mut Request<B>,
        server: &ServerConfig,
        route: WsRoute,
    ) -> Response<Body> {
        if !self.options.websocket {
            return plain(404, "Not found.");
        }
        let m = req.method();
        if m != Method::GET && m != Method::CONNECT {
            return not_allowed("GET");
        }
        if m == Method::GET {
            let has = |name: header::HeaderName, token: &str| {
                req.headers()
                    .get_all(name)
                    .iter()
                    .filter_map(|v| v.to_str().ok())
                    .any(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
            };
            if !has(header::UPGRADE, "websocket") {
                return plain(400, "Can \"Upgrade\" only to \"WebSocket\".");
            }
            if !has(header::CONNECTION, "upgrade") {
                return plain(400, "\"Connection\" must be \"Upgrade\".");
            }
        }
        match tether::hyper::upgrade(req, server) {
            Ok((response, pending)) => {
                let ep = self.clone();
                tokio::spawn(async move {
                    match pending.await {
                        Ok(ws) => ep.run_websocket(ws, route).await,
                        Err(e) => tracing::debug!("SockJS websocket upgrade failed: {e}"),
                    }
                });
                response.map(|b| b.boxed_unsync())
            }
            Err(refusal) => refusal.map(|b| b.boxed_unsync()),
        }
    }

    /// Closes every session (shutdown).
    pub(crate) fn close_all(&self, code: u16, reason: &str) -> usize {
        let sessions: Vec<_> = self.sessions().values().cloned().collect();
        sessions.iter().filter(|s| s.close(code, reason)).count()
    }
}

/// Drops sessions that had no receiving request for the disconnect delay, while the
/// endpoint lives; their applications see the end of their messages.
async fn sweep(ep: Weak<Endpoint>) {
    let period = {
        let Some(ep) = ep.upgrade() else { return };
        (ep.options.disconnect_delay / 4).clamp(Duration::from_millis(20), Duration::from_secs(1))
    };
    loop {
        tokio::time::sleep(period).await;
        let Some(ep) = ep.upgrade() else { return };
        let delay = ep.options.disconnect_delay;
        let gone: Vec<Arc<SockJsSession>> = {
            let mut sessions = ep.sessions();
            let ids: Vec<String> =
                sessions.iter().filter(|(_, s)| s.expired(delay)).map(|(k, _)| k.clone()).collect();
            ids.iter().filter_map(|id| sessions.remove(id)).collect()
        };
        for s in gone {
            s.close(session::INTERRUPTED.0, session::INTERRUPTED.1);
        }
    }
}

/// `/<server>/<session>/<transport>`: the session id and transport, when the server and
/// session parts are non-empty and have no dots.
fn session_path(rest: &str) -> Option<(&str, &str)> {
    let mut parts = rest.strip_prefix('/')?.split('/');
    let (server, session, transport) = (parts.next()?, parts.next()?, parts.next()?);
    let ok = |s: &str| !s.is_empty() && !s.contains('.');
    (parts.next().is_none() && ok(server) && ok(session) && !transport.is_empty())
        .then_some((session, transport))
}

/// `/iframe.html` and its versioned names (`/iframe-0.1.2.html`).
fn is_iframe(rest: &str) -> bool {
    rest.strip_prefix("/iframe")
        .and_then(|r| r.strip_suffix(".html"))
        .is_some_and(|v| v.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'z' | b'-' | b'.' | b'_')))
}

fn iframe_page(sockjs_url: &str) -> String {
    let url = sockjs_url.replace('"', "%22");
    format!(
        r#"<!DOCTYPE html>
<html>
<head>
  <meta http-equiv="X-UA-Compatible" content="IE=edge" />
  <meta http-equiv="Content-Type" content="text/html; charset=UTF-8" />
  <script src="{url}"></script>
  <script>
    document.domain = document.domain;
    SockJS.bootstrap_iframe();
  </script>
</head>
<body>
  <h2>Don't panic!</h2>
  <p>This is a SockJS hidden iframe. It's used for cross domain magic.</p>
</body>
</html>"#
    )
}

fn status(code: u16) -> Response<Body> {
    let mut r = Response::new(Empty::new().boxed_unsync());
    *r.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    r
}

fn full(code: u16, content_type: &'static str, body: impl Into<Bytes>) -> Response<Body> {
    let mut r = Response::new(Full::new(body.into()).boxed_unsync());
    *r.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

fn plain(code: u16, text: &str) -> Response<Body> {
    full(code, "text/plain; charset=UTF-8", format!("{text}\n"))
}

/// 405 with `Allow`, no body, no content type.
fn not_allowed(allow: &'static str) -> Response<Body> {
    let mut r = status(405);
    r.headers_mut().insert(header::ALLOW, HeaderValue::from_static(allow));
    r
}

fn no_cache(h: &mut HeaderMap) {
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(NO_CACHE));
}

/// CORS for any origin, with credentials (cookies) when the request names its origin.
fn cors(h: &mut HeaderMap, origin: Option<&HeaderValue>) {
    match origin {
        Some(o) => {
            h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, o.clone());
            h.insert(header::ACCESS_CONTROL_ALLOW_CREDENTIALS, HeaderValue::from_static("true"));
            h.insert(header::VARY, HeaderValue::from_static("Origin"));
        }
        None => {
            h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
        }
    }
}

/// The answer to `OPTIONS`: cacheable for a year, with CORS.
fn options<B>(req: &Request<B>, origin: Option<&HeaderValue>, methods: &'static str) -> Response<Body> {
    let mut r = status(204);
    let h = r.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(ONE_YEAR));
    h.insert(header::EXPIRES, expires());
    h.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("31536000"));
    h.insert(header::ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static(methods));
    h.insert(header::ALLOW, HeaderValue::from_static(methods));
    if let Some(asked) = req.headers().get(header::ACCESS_CONTROL_REQUEST_HEADERS).filter(|v| !v.is_empty()) {
        h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, asked.clone());
    }
    cors(h, origin);
    r
}

/// A year from now, as an HTTP date.
fn expires() -> HeaderValue {
    let t = SystemTime::now() + Duration::from_secs(31_536_000);
    HeaderValue::from_str(&http_date(t)).unwrap_or(HeaderValue::from_static("Thu, 01 Jan 2037 00:00:00 GMT"))
}

/// `t` as an IMF-fixdate (RFC 9110 5.6.7): `Sun, 06 Nov 1994 08:49:37 GMT`.
fn http_date(t: SystemTime) -> String {
    let secs = t.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Days since 1970-01-01 to a civil date (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    const WEEKDAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] =
        ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    format!(
        "{}, {day:02} {} {year} {:02}:{:02}:{:02} GMT",
        WEEKDAYS[(days % 7) as usize],
        MONTHS[(month - 1) as usize],
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// The four services the SockJS protocol's test suite expects, on one port: `/echo`
/// (echo, response limit 4096 bytes), `/disabled_websocket_echo` (no WebSocket),
/// `/cookie_needed_echo` (`JSESSIONID` set), `/close` (every session closed at once with
/// 3000 "Go away!"). For checking conformance (`tether echo --sockjs`), not for production.
pub struct TestServer {
    listener: tokio::net::TcpListener,
    endpoints: Arc<Vec<Arc<Endpoint>>>,
}

impl TestServer {
    /// Binds `addr` (say `127.0.0.1:8081`).
    ///
    /// # Errors
    ///
    /// When the address cannot be bound.
    pub async fn bind(addr: &str) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let test = SockJsOptions { response_limit: 4096, ..SockJsOptions::default() };
        let endpoints = vec![
            Endpoint::new("/echo", test.clone(), App::Echo, None),
            Endpoint::new(
                "/disabled_websocket_echo",
                SockJsOptions { websocket: false, ..test.clone() },
                App::Echo,
                None,
            ),
            Endpoint::new(
                "/cookie_needed_echo",
                SockJsOptions { cookie_needed: true, ..test.clone() },
                App::Echo,
                None,
            ),
            Endpoint::new("/close", test, App::Close, None),
        ];
        Ok(Self { listener, endpoints: Arc::new(endpoints) })
    }

    /// The bound address.
    ///
    /// # Errors
    ///
    /// From the socket.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` completes.
    pub async fn run(self, shutdown: impl std::future::Future<Output = ()>) {
        let server = Arc::new(ServerConfig::default());
        tokio::pin!(shutdown);
        loop {
            let (stream, _) = tokio::select! {
                () = &mut shutdown => return,
                a = self.listener.accept() => match a {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!("accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let _ = stream.set_nodelay(true);
            let (endpoints, server) = (self.endpoints.clone(), server.clone());
            let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let (endpoints, server) = (endpoints.clone(), server.clone());
                async move {
                    let path = req.uri().path();
                    let r = match endpoints.iter().find(|e| e.matches(path)) {
                        Some(ep) => ep.handle(req, &server).await,
                        None => plain(404, "Not found: the services are /echo, /disabled_websocket_echo, /cookie_needed_echo and /close."),
                    };
                    Ok::<_, Infallible>(r)
                }
            });
            tokio::spawn(async move {
                let builder =
                    hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
                let io = hyper_util::rt::TokioIo::new(stream);
                let _ = builder.serve_connection_with_upgrades(io, service).await;
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        assert_eq!(session_path("/000/abc/xhr"), Some(("abc", "xhr")));
        assert_eq!(session_path("/a/a%20b/xhr_send"), Some(("a%20b", "xhr_send")));
        for bad in ["//", "/a./a/xhr", "/a/a./xhr", "/./././xhr", "/xhr", "///xhr", "/a/b/c/d", "/a/b/"] {
            assert_eq!(session_path(bad), None, "{bad}");
        }
        for ok in ["/iframe.html", "/iframe-a.html", "/iframe-.html", "/iframe-0.1.2abc-dirty.2144.html"] {
            assert!(is_iframe(ok), "{ok}");
        }
        for bad in ["/iframe.htm", "/iframe", "/IFRAME.HTML", "/iframe.HTML", "/iframe.xml", "/iframe-/.html"]
        {
            assert!(!is_iframe(bad), "{bad}");
        }
    }

    #[test]
    fn dates() {
        assert_eq!(
            http_date(SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_777)),
            "Sun, 06 Nov 1994 08:49:37 GMT"
        );
        assert_eq!(
            http_date(SystemTime::UNIX_EPOCH + Duration::from_secs(951_782_400)),
            "Tue, 29 Feb 2000 00:00:00 GMT"
        );
    }
}

//! An Engine.IO v4 server: sessions over HTTP long-polling and WebSocket, the upgrade from
//! one to the other, heartbeats, and the protocol's error answers.
//!
//! [`Engine::handle`] answers every request under the engine's path (say `/engine.io/`);
//! each new session is handed to the engine's handler as a [`Connection`]: the messages the
//! client sends, and an [`EngineSocket`] to send and close with.

pub mod packet;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{
    HeaderValue, ACCESS_CONTROL_ALLOW_CREDENTIALS, ACCESS_CONTROL_ALLOW_ORIGIN, CONTENT_TYPE,
};
use hyper::{HeaderMap, Method, Request, Response, StatusCode, Uri};
use packet::{Data, Frame, Packet};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;
use tether::{CloseCode, Message, Sender, Utf8Bytes, WebSocket};
use tokio::sync::{mpsc, watch, Notify};

/// The body of every answer.
pub type Body = Full<Bytes>;

/// Which origins may use the server from a browser page of another origin (CORS).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Cors {
    /// No CORS headers: pages of other origins cannot read the answers.
    #[default]
    None,
    /// Any origin, with credentials (the request's `Origin` is echoed).
    Any,
    /// These origins (`https://example.com`), with credentials.
    Origins(Vec<String>),
}

impl Cors {
    fn allows(&self, origin: &str) -> bool {
        match self {
            Self::None => false,
            Self::Any => true,
            Self::Origins(list) => list.iter().any(|o| o.eq_ignore_ascii_case(origin)),
        }
    }
}

/// The settings of an Engine.IO server.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct EngineConfig {
    /// How often the server pings (25 s); sent to the client in the open packet.
    pub ping_interval: Duration,
    /// How long a ping waits for its pong before the session is closed (20 s).
    pub ping_timeout: Duration,
    /// The largest payload the client may send (1,000,000 bytes): a polling request body, or
    /// a WebSocket message. Over it: 413, or close 1009, and the session ends.
    pub max_payload: usize,
    /// How long an upgrade to WebSocket may take between its handshake and its `5` (10 s).
    pub upgrade_timeout: Duration,
    /// Sessions open at once (10,000); a handshake over it gets 503.
    pub max_sessions: usize,
    /// Bytes queued for a session and not yet taken by the client (4 MiB); a session over it
    /// is closed (a client that does not keep up).
    pub max_buffered: usize,
    /// Whether clients may use HTTP long-polling.
    pub polling: bool,
    /// Whether clients may use WebSocket.
    pub websocket: bool,
    /// CORS for the polling requests of pages of other origins.
    pub cors: Cors,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            ping_interval: Duration::from_secs(25),
            ping_timeout: Duration::from_secs(20),
            max_payload: 1_000_000,
            upgrade_timeout: Duration::from_secs(10),
            max_sessions: 10_000,
            max_buffered: 4 << 20,
            polling: true,
            websocket: true,
            cors: Cors::None,
        }
    }
}

/// The protocol's error codes, in a 400 answer's JSON body.
#[derive(Debug, Clone, Copy)]
enum Refusal {
    TransportUnknown,
    SessionUnknown,
    BadMethod,
    BadRequest,
    Version,
}

impl Refusal {
    fn parts(self) -> (u8, &'static str) {
        match self {
            Self::TransportUnknown => (0, "Transport unknown"),
            Self::SessionUnknown => (1, "Session ID unknown"),
            Self::BadMethod => (2, "Bad handshake method"),
            Self::BadRequest => (3, "Bad request"),
            Self::Version => (5, "Unsupported protocol version"),
        }
    }

    fn answer(self) -> Response<Body> {
        full(StatusCode::BAD_REQUEST, "application/json", Refused(self).body())
    }
}

/// A refusal of the protocol: a 400 with a JSON body `{"code":N,"message":"…"}`.
#[derive(Debug)]
pub struct Refused(Refusal);

impl Refused {
    /// The HTTP status.
    pub fn status(&self) -> u16 {
        400
    }

    /// The JSON body.
    pub fn body(&self) -> String {
        let (code, message) = self.0.parts();
        format!("{{\"code\":{code},\"message\":\"{message}\"}}")
    }
}

/// What a checked WebSocket handshake is for ([`Engine::websocket_target`]).
#[derive(Debug)]
pub struct WebSocketTarget(Option<Target>);

#[derive(Debug)]
enum Target {
    New,
    Upgrade(Arc<Session>),
    Busy,
}

impl Drop for WebSocketTarget {
    fn drop(&mut self) {
        // Never served (the handshake failed after the check): the session may upgrade
        // again.
        if let Some(Target::Upgrade(s)) = self.0.take() {
            s.state().upgrade = Upgrade::None;
        }
    }
}

/// A new session, for the engine's handler.
#[derive(Debug)]
pub struct Connection {
    /// To send and close with.
    pub socket: EngineSocket,
    /// The client's messages, in order; ends when the session does.
    pub messages: mpsc::Receiver<Data>,
    /// The URI of the request that opened the session (its query has the client's
    /// parameters).
    pub uri: Uri,
    /// The headers of that request (cookies, authorization, origin).
    pub headers: HeaderMap,
}

type Handler = Box<dyn Fn(Connection) + Send + Sync>;

/// An Engine.IO server.
pub struct Engine {
    config: EngineConfig,
    ws: Arc<tether::ServerConfig>,
    sessions: Mutex<HashMap<Arc<str>, Arc<Session>>>,
    handler: Handler,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").field("config", &self.config).finish_non_exhaustive()
    }
}

impl Engine {
    /// A server with `config` that hands every new session to `handler`.
    pub fn new(config: EngineConfig, handler: impl Fn(Connection) + Send + Sync + 'static) -> Arc<Self> {
        let mut limits = tether::Config::default();
        limits.max_message_size = config.max_payload;
        let ws = tether::ServerConfig::default().with_config(limits).with_origin(tether::OriginPolicy::Any);
        Arc::new(Self { config, ws: Arc::new(ws), sessions: Mutex::default(), handler: Box::new(handler) })
    }

    /// The settings.
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// Sessions open now.
    pub fn session_count(&self) -> usize {
        self.sessions().len()
    }

    /// Closes every session (a server shutting down).
    pub fn close_all(&self) {
        let all: Vec<_> = self.sessions().values().cloned().collect();
        for s in all {
            s.close(Reason::Server);
        }
    }

    fn sessions(&self) -> MutexGuard<'_, HashMap<Arc<str>, Arc<Session>>> {
        self.sessions.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Answers a request of the engine's path.
    pub async fn handle(self: &Arc<Self>, req: Request<Incoming>) -> Response<Body> {
        let origin = req.headers().get(hyper::header::ORIGIN).cloned();
        let mut response = self.route(req).await;
        if let Some(origin) = origin.filter(|o| o.to_str().is_ok_and(|o| self.config.cors.allows(o))) {
            let h = response.headers_mut();
            h.insert(ACCESS_CONTROL_ALLOW_ORIGIN, origin);
            h.insert(ACCESS_CONTROL_ALLOW_CREDENTIALS, HeaderValue::from_static("true"));
            h.append(hyper::header::VARY, HeaderValue::from_static("Origin"));
        }
        response
    }

    async fn route(self: &Arc<Self>, mut req: Request<Incoming>) -> Response<Body> {
        let query = Query::parse(req.uri().query().unwrap_or(""));
        let polling = match query.transport.as_deref() {
            Some("polling") if self.config.polling => true,
            Some("websocket") if self.config.websocket => false,
            _ => return Refusal::TransportUnknown.answer(),
        };
        if query.eio.as_deref() != Some("4") {
            return Refusal::Version.answer();
        }
        if req.method() == Method::OPTIONS && self.config.cors != Cors::None {
            return preflight(req.headers());
        }
        match (query.sid, polling) {
            (None, _) if req.method() != Method::GET => Refusal::BadMethod.answer(),
            (None, true) => self.open_polling(&req),
            (_, false) if !is_upgrade(&req) => Refusal::BadRequest.answer(),
            (_, false) => self.open_websocket(&mut req),
            (Some(sid), true) => {
                let Some(session) = self.sessions().get(sid.as_str()).cloned() else {
                    return Refusal::SessionUnknown.answer();
                };
                if req.method() == Method::GET {
                    session.poll().await
                } else if req.method() == Method::POST {
                    session.post(req.into_body()).await
                } else {
                    Refusal::BadMethod.answer()
                }
            }
        }
    }

    /// A new session, registered, with its heartbeat running, handed to the handler;
    /// `None` over `max_sessions`.
    fn create(
        self: &Arc<Self>,
        sid: Arc<str>,
        ws: Option<Sender>,
        uri: Uri,
        headers: HeaderMap,
    ) -> Option<Arc<Session>> {
        let (tx, rx) = mpsc::channel(128);
        let (closed, _) = watch::channel(false);
        let session = Arc::new(Session {
            sid,
            engine: Arc::downgrade(self),
            state: Mutex::new(State {
                queue: VecDeque::new(),
                queued: 0,
                polling: false,
                posting: false,
                upgrade: Upgrade::None,
                ws,
                closed: None,
                awaiting_pong: false,
                kept: false,
                incoming: Some(tx),
            }),
            wake: Notify::new(),
            pong: Notify::new(),
            closed,
        });
        {
            let mut sessions = self.sessions();
            if sessions.len() >= self.config.max_sessions {
                return None;
            }
            sessions.insert(session.sid.clone(), session.clone());
        }
        tokio::spawn(heartbeat(
            Arc::downgrade(&session),
            self.config.ping_interval,
            self.config.ping_timeout,
        ));
        (self.handler)(Connection { socket: EngineSocket(session.clone()), messages: rx, uri, headers });
        Some(session)
    }

    fn open_packet(&self, sid: &str, websocket_only: bool) -> Frame {
        let upgrades = if websocket_only || !self.config.websocket { "[]" } else { "[\"websocket\"]" };
        let json = format!(
            "{{\"sid\":\"{sid}\",\"upgrades\":{upgrades},\"pingInterval\":{},\"pingTimeout\":{},\"maxPayload\":{}}}",
            self.config.ping_interval.as_millis(),
            self.config.ping_timeout.as_millis(),
            self.config.max_payload
        );
        Packet::Open(Utf8Bytes::from(json)).to_frame()
    }

    fn open_polling(self: &Arc<Self>, req: &Request<Incoming>) -> Response<Body> {
        let Some(session) = self.create(new_sid(), None, req.uri().clone(), req.headers().clone()) else {
            return too_many();
        };
        let open = self.open_packet(&session.sid, false);
        full(StatusCode::OK, "text/plain; charset=UTF-8", packet::encode_payload([&open]))
    }

    /// Checks the query of a WebSocket handshake (`EIO=4&transport=websocket`, and a `sid`
    /// that names a polling session to upgrade, or none): what to serve once upgraded, or
    /// the protocol's refusal. For servers that upgrade the connection themselves before
    /// handing it over ([`serve_websocket`](Self::serve_websocket)); [`handle`](Self::handle)
    /// does both for hyper requests.
    ///
    /// # Errors
    ///
    /// The 400 answer (unknown transport or sid, bad version) to send instead of the 101.
    pub fn websocket_target(&self, query: &str) -> Result<WebSocketTarget, Refused> {
        let query = Query::parse(query);
        if query.transport.as_deref() != Some("websocket") || !self.config.websocket {
            return Err(Refused(Refusal::TransportUnknown));
        }
        if query.eio.as_deref() != Some("4") {
            return Err(Refused(Refusal::Version));
        }
        let Some(sid) = query.sid else { return Ok(WebSocketTarget(Some(Target::New))) };
        let Some(session) = self.sessions().get(sid.as_str()).cloned() else {
            return Err(Refused(Refusal::SessionUnknown));
        };
        // One upgrade, from polling only: another WebSocket for the session is opened and
        // closed at once (as engine.io does), the session going on undisturbed.
        let mut st = session.state();
        if st.closed.is_some() || st.ws.is_some() || st.upgrade != Upgrade::None {
            return Ok(WebSocketTarget(Some(Target::Busy)));
        }
        st.upgrade = Upgrade::Started;
        drop(st);
        Ok(WebSocketTarget(Some(Target::Upgrade(session))))
    }

    /// Serves an upgraded WebSocket as `target` says: a new session (`uri` and `headers` of
    /// its handshake go to the handler), the upgrade of a polling session, or a close.
    pub async fn serve_websocket(
        self: &Arc<Self>,
        ws: WebSocket,
        mut target: WebSocketTarget,
        uri: Uri,
        headers: HeaderMap,
    ) {
        match target.0.take() {
            Some(Target::Upgrade(session)) => session.run_upgrade(ws, self.config.upgrade_timeout).await,
            Some(Target::New) => {
                let (write, read) = ws.split();
                let sender = write.sender();
                let Some(session) = self.create_ws(sender.clone(), uri, headers) else {
                    let _ = sender.send_close(CloseCode(1013), "too many sessions");
                    return;
                };
                session.run_ws(read).await;
            }
            Some(Target::Busy) | None => {
                let _ = ws.send_close(CloseCode(1008), "session already upgraded or upgrading");
                let (_write, mut read) = ws.split();
                // Until the client answers the close (the driver times out otherwise).
                while futures_util::StreamExt::next(&mut read).await.is_some() {}
            }
        }
    }

    fn open_websocket(self: &Arc<Self>, req: &mut Request<Incoming>) -> Response<Body> {
        let target = match self.websocket_target(req.uri().query().unwrap_or("")) {
            Ok(t) => t,
            Err(refused) => return refused.0.answer(),
        };
        let (response, pending) = match tether::hyper::upgrade(req, &self.ws) {
            Ok(ok) => ok,
            Err(refusal) => return refusal,
        };
        let engine = self.clone();
        let (uri, headers) = (req.uri().clone(), req.headers().clone());
        tokio::spawn(async move {
            if let Ok(ws) = pending.await {
                engine.serve_websocket(ws, target, uri, headers).await;
            }
        });
        response
    }

    fn create_ws(self: &Arc<Self>, sender: Sender, uri: Uri, headers: HeaderMap) -> Option<Arc<Session>> {
        // The open packet goes first, before the handler can send anything.
        let sid = new_sid();
        let _ = sender.start_send(self.open_packet(&sid, true).to_ws());
        self.create(sid, Some(sender), uri, headers)
    }
}

/// The query parameters the protocol uses.
#[derive(Default)]
struct Query {
    eio: Option<String>,
    transport: Option<String>,
    sid: Option<String>,
}

impl Query {
    fn parse(query: &str) -> Self {
        let mut q = Self::default();
        for pair in query.split('&') {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let slot = match k {
                "EIO" => &mut q.eio,
                "transport" => &mut q.transport,
                "sid" => &mut q.sid,
                _ => continue,
            };
            slot.get_or_insert_with(|| v.to_owned());
        }
        q
    }
}

/// A WebSocket handshake: an HTTP/1.1 upgrade, or HTTP/2's extended CONNECT.
fn is_upgrade<B>(req: &Request<B>) -> bool {
    req.method() == Method::CONNECT
        || req
            .headers()
            .get(hyper::header::UPGRADE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

fn new_sid() -> Arc<str> {
    use base64::Engine as _;
    let mut bytes = [0u8; 15];
    // A failed randomness source leaves zeros; the clock then keeps ids apart.
    if getrandom::getrandom(&mut bytes).is_err() {
        let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        bytes.copy_from_slice(&t.as_nanos().to_le_bytes()[..15]);
    }
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes).into()
}

fn full(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Response<Body> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    r.headers_mut().insert(hyper::header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

fn too_many() -> Response<Body> {
    full(StatusCode::SERVICE_UNAVAILABLE, "text/plain; charset=UTF-8", "too many sessions")
}

fn preflight(req: &HeaderMap) -> Response<Body> {
    let mut r = full(StatusCode::NO_CONTENT, "text/plain; charset=UTF-8", Bytes::new());
    let h = r.headers_mut();
    h.insert(hyper::header::ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static("GET, POST"));
    if let Some(asked) = req.get(hyper::header::ACCESS_CONTROL_REQUEST_HEADERS) {
        h.insert(hyper::header::ACCESS_CONTROL_ALLOW_HEADERS, asked.clone());
    }
    h.insert(hyper::header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("86400"));
    r
}

/// Where an upgrade to WebSocket stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Upgrade {
    None,
    /// The WebSocket is open, its probe not yet answered.
    Started,
    /// The probe was answered: polls get `6` until the `5`.
    Probed,
}

/// Why a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reason {
    /// The client sent `1`.
    ClientClose,
    /// The transport broke or sent something the protocol does not allow.
    Transport,
    /// No pong in time.
    PingTimeout,
    /// A second poll while one is pending, or a second send.
    Overlap,
    /// More queued than `max_buffered`.
    Overflow,
    /// The application (or shutdown).
    Server,
}

struct State {
    /// What waits for a poll (polling only).
    queue: VecDeque<Frame>,
    queued: usize,
    /// A GET is waiting.
    polling: bool,
    /// A POST is being read.
    posting: bool,
    upgrade: Upgrade,
    /// The WebSocket, once there is one (from the start, or after the upgrade).
    ws: Option<Sender>,
    /// Set when closed: what a poll pending then gets last (`1`, or `6` when the client
    /// closed).
    closed: Option<Frame>,
    awaiting_pong: bool,
    /// Closed by the server while no poll was pending: kept until the next poll takes
    /// what is queued and the `1`.
    kept: bool,
    /// To the application, until closed.
    incoming: Option<mpsc::Sender<Data>>,
}

struct Session {
    sid: Arc<str>,
    engine: Weak<Engine>,
    state: Mutex<State>,
    /// Wakes the pending poll.
    wake: Notify,
    /// A pong arrived.
    pong: Notify,
    closed: watch::Sender<bool>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session").field("sid", &self.sid).finish_non_exhaustive()
    }
}

impl Session {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn max_buffered(&self) -> usize {
        self.engine.upgrade().map_or(usize::MAX, |e| e.config.max_buffered)
    }

    /// Queues or sends frames, in order and together; `false` once closed.
    fn send(&self, frames: &[Frame]) -> bool {
        let over = {
            let mut st = self.state();
            if st.closed.is_some() {
                return false;
            }
            if let Some(ws) = &st.ws {
                for f in frames {
                    let sent = match f {
                        Frame::Prepared(p) => ws.send_prepared(p),
                        f => ws.start_send(f.to_ws()),
                    };
                    if sent.is_err() {
                        return false;
                    }
                }
                ws.buffered_amount() > self.max_buffered()
            } else {
                for f in frames {
                    st.queued += f.polling_len();
                    st.queue.push_back(f.clone());
                }
                self.wake.notify_one();
                st.queued > self.max_buffered()
            }
        };
        if over {
            self.close(Reason::Overflow);
            return false;
        }
        true
    }

    fn close(&self, reason: Reason) {
        let (ws, kept) = {
            let mut st = self.state();
            if st.closed.is_some() {
                return;
            }
            st.closed = Some(if reason == Reason::ClientClose { Frame::NOOP } else { Frame::CLOSE });
            st.incoming = None;
            st.kept = reason == Reason::Server && st.ws.is_none() && !st.polling;
            (st.ws.take(), st.kept)
        };
        if let Some(engine) = self.engine.upgrade() {
            if kept {
                // The next poll takes the last packets; one that never comes is not waited
                // for longer than a pong would be.
                let (engine, sid) = (Arc::downgrade(&engine), self.sid.clone());
                let wait = engine.upgrade().map_or(Duration::ZERO, |e| e.config.ping_timeout);
                tokio::spawn(async move {
                    tokio::time::sleep(wait).await;
                    if let Some(e) = engine.upgrade() {
                        e.sessions().remove(&sid);
                    }
                });
            } else {
                engine.sessions().remove(&self.sid);
            }
        }
        if let Some(ws) = ws {
            let (code, why) = match reason {
                Reason::Overflow => (CloseCode(4008), "client too slow"),
                Reason::PingTimeout => (CloseCode(1001), "ping timeout"),
                Reason::Transport | Reason::Overlap => (CloseCode(1002), "protocol error"),
                Reason::ClientClose | Reason::Server => (CloseCode(1000), ""),
            };
            let _ = ws.send_close(code, why);
        }
        tracing::debug!(sid = %self.sid, ?reason, "engine.io session closed");
        self.wake.notify_one();
        let _ = self.closed.send(true);
    }

    /// A GET: what is queued, or wait until something is.
    async fn poll(self: &Arc<Self>) -> Response<Body> {
        {
            let mut st = self.state();
            if (st.closed.is_some() && !st.kept) || st.ws.is_some() {
                return Refusal::SessionUnknown.answer();
            }
            if st.polling {
                drop(st);
                self.close(Reason::Overlap);
                return Refusal::BadRequest.answer();
            }
            st.polling = true;
        }
        let _busy = InFlight { session: self, flag: |st| &mut st.polling };
        loop {
            let woken = self.wake.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            {
                let mut st = self.state();
                let mut frames: Vec<Frame> = st.queue.drain(..).collect();
                st.queued = 0;
                if let Some(last) = &st.closed {
                    frames.push(last.clone());
                    if std::mem::take(&mut st.kept) {
                        if let Some(e) = self.engine.upgrade() {
                            e.sessions().remove(&self.sid);
                        }
                    }
                } else if frames.is_empty() && (st.upgrade == Upgrade::Probed || st.ws.is_some()) {
                    frames.push(Frame::NOOP);
                }
                if !frames.is_empty() {
                    return full(
                        StatusCode::OK,
                        "text/plain; charset=UTF-8",
                        packet::encode_payload(&frames),
                    );
                }
            }
            woken.await;
        }
    }

    /// A POST: the client's packets.
    async fn post(self: &Arc<Self>, body: Incoming) -> Response<Body> {
        {
            let mut st = self.state();
            if st.closed.is_some() || st.ws.is_some() {
                return Refusal::SessionUnknown.answer();
            }
            if st.posting {
                drop(st);
                self.close(Reason::Overlap);
                return Refusal::BadRequest.answer();
            }
            st.posting = true;
        }
        let _busy = InFlight { session: self, flag: |st| &mut st.posting };
        let max = self.engine.upgrade().map_or(0, |e| e.config.max_payload);
        let body = Limited::new(body, max).collect().await;
        let answer = match body {
            Err(e) if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() => {
                self.close(Reason::Transport);
                full(StatusCode::PAYLOAD_TOO_LARGE, "text/plain; charset=UTF-8", "payload too large")
            }
            // The body broke off (the client went away): the request ends, not the session,
            // as with engine.io; what it had sent is dropped, since its answer never came.
            Err(_) => Refusal::BadRequest.answer(),
            Ok(body) => match packet::decode_payload(body.to_bytes()) {
                Err(_) => {
                    self.close(Reason::Transport);
                    Refusal::BadRequest.answer()
                }
                Ok(packets) => {
                    for p in packets {
                        if !self.receive(p).await {
                            break;
                        }
                    }
                    full(StatusCode::OK, "text/html", "ok")
                }
            },
        };
        answer
    }

    /// One packet from the client; `false` when the session ended with it.
    async fn receive(&self, packet: Packet) -> bool {
        match packet {
            Packet::Message(data) => {
                let tx = self.state().incoming.clone();
                match tx {
                    Some(tx) => tx.send(data).await.is_ok(),
                    None => false,
                }
            }
            Packet::Pong(_) => {
                let mut st = self.state();
                if st.awaiting_pong {
                    st.awaiting_pong = false;
                    self.pong.notify_one();
                }
                true
            }
            Packet::Close => {
                self.close(Reason::ClientClose);
                false
            }
            Packet::Noop => true,
            // Pings come from the server in v4; open and upgrade have no place here.
            Packet::Open(_) | Packet::Ping(_) | Packet::Upgrade => {
                self.close(Reason::Transport);
                false
            }
        }
    }

    /// Reads a WebSocket session until it ends.
    async fn run_ws(self: &Arc<Self>, mut read: tether::ReadHalf) {
        use futures_util::StreamExt;
        let mut closed = self.closed.subscribe();
        loop {
            let msg = tokio::select! {
                m = read.next() => m,
                _ = closed.wait_for(|c| *c) => return,
            };
            let packet = match msg {
                Some(Ok(Message::Text(t))) => match Packet::decode_text(t) {
                    Ok(p) => p,
                    Err(_) => break self.close(Reason::Transport),
                },
                Some(Ok(Message::Binary(b))) => Packet::Message(Data::Binary(b)),
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => break self.close(Reason::Transport),
            };
            if !self.receive(packet).await {
                break;
            }
        }
    }

    /// The upgrade of a polling session: `2probe` answered `3probe`, then `5`.
    async fn run_upgrade(self: &Arc<Self>, ws: WebSocket, timeout: Duration) {
        use futures_util::StreamExt;
        let (write, mut read) = ws.split();
        let sender = write.sender();
        let done = tokio::time::timeout(timeout, async {
            loop {
                match read.next().await {
                    Some(Ok(Message::Text(t))) => match t.as_str() {
                        "2probe" => {
                            let _ = sender.start_send(Message::text("3probe"));
                            self.state().upgrade = Upgrade::Probed;
                            self.wake.notify_one();
                        }
                        "5" if self.state().upgrade == Upgrade::Probed => return true,
                        _ => return false,
                    },
                    Some(Ok(Message::Binary(_))) | Some(Err(_)) | None => return false,
                    Some(Ok(_)) => {}
                }
            }
        })
        .await;
        if done != Ok(true) {
            self.state().upgrade = Upgrade::None;
            let _ = sender.send_close(CloseCode(1002), "upgrade failed");
            return;
        }
        {
            let mut st = self.state();
            if st.closed.is_some() {
                drop(st);
                let _ = sender.send_close(CloseCode(1000), "");
                return;
            }
            // What waited for a poll goes first, then everything else straight out.
            for f in st.queue.drain(..) {
                let _ = match &f {
                    Frame::Prepared(p) => sender.send_prepared(p),
                    f => sender.start_send(f.to_ws()),
                };
            }
            st.queued = 0;
            st.upgrade = Upgrade::None;
            st.ws = Some(sender);
        }
        self.wake.notify_one();
        self.run_ws(read).await;
    }
}

/// Clears a request's flag (`polling`, `posting`) when the request ends, however it ends:
/// hyper drops the request's future when the client goes away.
struct InFlight<'a> {
    session: &'a Session,
    flag: fn(&mut State) -> &mut bool,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        *(self.flag)(&mut self.session.state()) = false;
    }
}

/// Pings every `interval`; closes the session when a pong takes longer than `timeout`.
async fn heartbeat(session: Weak<Session>, interval: Duration, timeout: Duration) {
    let Some(mut closed) = session.upgrade().map(|s| s.closed.subscribe()) else { return };
    loop {
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            _ = closed.wait_for(|c| *c) => return,
        }
        let Some(s) = session.upgrade() else { return };
        s.state().awaiting_pong = true;
        if !s.send(&[Frame::PING]) {
            return;
        }
        tokio::select! {
            () = s.pong.notified() => {}
            () = tokio::time::sleep(timeout) => {
                if s.state().awaiting_pong {
                    s.close(Reason::PingTimeout);
                }
                return;
            }
            _ = closed.wait_for(|c| *c) => return,
        }
    }
}

/// A session, to send on and close.
#[derive(Clone)]
pub struct EngineSocket(Arc<Session>);

impl std::fmt::Debug for EngineSocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("EngineSocket").field(&self.0.sid).finish()
    }
}

impl EngineSocket {
    /// The session id.
    pub fn sid(&self) -> &str {
        &self.0.sid
    }

    /// Sends frames in order and together (a packet and its attachments); `false` when the
    /// session is closed (or was closed now, for going over `max_buffered`).
    pub fn send(&self, frames: &[Frame]) -> bool {
        self.0.send(frames)
    }

    /// Sends a text message.
    pub fn send_text(&self, text: &str) -> bool {
        self.send(&[Frame::message(text)])
    }

    /// Waits until what was sent so far over WebSocket is written to the socket (at once
    /// over polling, where the client takes it when it polls).
    pub async fn flush(&self) {
        let ws = self.0.state().ws.clone();
        if let Some(ws) = ws {
            let _ = std::future::poll_fn(|cx| ws.poll_flush(cx)).await;
        }
    }

    /// Bytes queued and not yet taken by the client.
    pub fn buffered_amount(&self) -> usize {
        let st = self.0.state();
        st.ws.as_ref().map_or(st.queued, Sender::buffered_amount)
    }

    /// Whether the session runs over WebSocket now.
    pub fn is_websocket(&self) -> bool {
        self.0.state().ws.is_some()
    }

    /// Whether the session has ended.
    pub fn is_closed(&self) -> bool {
        self.0.state().closed.is_some()
    }

    /// Ends the session: a pending or the next poll gets `1`, a WebSocket is closed.
    pub fn close(&self) {
        self.0.close(Reason::Server);
    }

    /// Waits until the session has ended.
    pub async fn closed(&self) {
        let mut rx = self.0.closed.subscribe();
        let _ = rx.wait_for(|c| *c).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Args, Config, SocketIo};

    /// One broadcast, one encoding: every recipient queues the same bytes.
    #[tokio::test]
    async fn a_broadcast_is_encoded_once_for_every_recipient() {
        let io = SocketIo::new(Config::default());
        let ns = io.ns("/", |_| {});
        let engine = io.engine().clone();
        let mut sessions = Vec::new();
        for _ in 0..3 {
            let s = engine.create(new_sid(), None, Uri::from_static("/"), HeaderMap::new()).unwrap();
            assert!(s.receive(Packet::Message(Data::Text(Utf8Bytes::from("0")))).await);
            sessions.push(s);
        }
        for _ in 0..100 {
            if ns.socket_count() == 3 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(ns.emit("news", &Args::one("hello").unwrap()), 3);
        let queued: Vec<Frame> = sessions.iter().map(|s| s.state().queue.back().cloned().unwrap()).collect();
        let Frame::Prepared(first) = &queued[0] else { panic!("a prepared frame") };
        assert!(first.wire().ends_with(b"42[\"news\",\"hello\"]"));
        for f in &queued {
            let Frame::Prepared(p) = f else { panic!("a prepared frame") };
            assert_eq!(p.wire().as_ptr(), first.wire().as_ptr(), "the same buffer");
        }
    }
}

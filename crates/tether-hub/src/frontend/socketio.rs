//! Socket.IO on the hub (socket.io-client 4.x at `/socket.io/`): tether.json's commands as
//! events with acknowledgements, its pushes as events (docs/PROTOCOL.md, "Socket.IO").
//!
//! The client connects to the main namespace with `auth: { token, name }` (tether.json's
//! `connect`); `subscribe`, `unsubscribe`, `publish`, `presence`, `history`, `refresh` and
//! `ping` are events whose acknowledgement carries the command's `{"result":…}` or
//! `{"error":…}`; publications, joins and leaves arrive as the events `publication`, `join`
//! and `leave` with the channel first. The commands run through the JSON front-end's own
//! handler (`json::handle`), so the two cannot disagree; each push is encoded once for
//! every Socket.IO subscriber. Engine.IO (polling, WebSocket, the upgrade, heartbeats) is
//! `tether-socketio`'s.

use super::json::{self, Dialect};
use super::Context;
use crate::hub::{Event, Outlet, Push};
use crate::session::gate::SendGate;
use crate::session::link::{Outbox, TextEncoding, Tx};
use crate::session::{sleep_until_or_forever, Session, EXPIRED};
use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::{HeaderMap, Request, Response, Uri};
use serde_json::value::RawValue;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tether::{CloseCode, OriginPolicy, PreparedFrame, Utf8Bytes, WebSocket};
use tether_socketio::engine::packet::{Data, Frame};
use tether_socketio::engine::{Connection, Engine, EngineConfig, EngineSocket, Refused, WebSocketTarget};
use tether_socketio::parser::{Decoder, Packet, PacketType};

/// Socket.IO's settings on the hub.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct SocketIoOptions {
    /// Engine.IO: heartbeat (25 s / 20 s), `max_payload` (1,000,000 bytes), sessions
    /// (10,000), bytes queued per session (the hub's `max_queued_bytes` unless set), CORS.
    pub engine: EngineConfig,
    /// How long a connection may take to send its CONNECT (45 s).
    pub connect_timeout: Duration,
}

impl Default for SocketIoOptions {
    fn default() -> Self {
        Self { engine: EngineConfig::default(), connect_timeout: Duration::from_secs(45) }
    }
}

/// Pushes as Socket.IO events: `42["publication","<channel>",{…}]`, encoded once per event.
static ENCODING: TextEncoding = TextEncoding::new("socket.io");

static DIALECT: Dialect = Dialect { outlet: |gate| Arc::new(SocketIoOutlet { gate }) };

struct SocketIoOutlet {
    gate: SendGate,
}

impl Outlet for SocketIoOutlet {
    fn push(&self, event: &Arc<Event>) -> bool {
        self.gate.send_event(event, &ENCODING, encode_push)
    }

    fn disconnect(&self, code: u16, reason: &str) {
        self.gate.disconnect(code, reason);
    }
}

/// The Engine.IO message of an event's push: `42["publication","chat",{"offset":…}]`.
fn encode_push(event: &Event) -> String {
    let mut out = String::with_capacity(96 + event.publication().map_or(0, |p| p.data.len()));
    out.push_str("42[");
    let (name, info) = match &event.push {
        Push::Publication(_) => ("\"publication\",", None),
        Push::Join(info) => ("\"join\",", Some(info)),
        Push::Leave(info) => ("\"leave\",", Some(info)),
    };
    out.push_str(name);
    json::push_str(&mut out, &event.channel);
    out.push(',');
    match info {
        Some(info) => json::push_info(&mut out, info),
        None => json::push_publication(&mut out, event),
    }
    out.push(']');
    out
}

/// An Engine.IO session as the session layer's outbox: messages are whole Engine.IO text
/// packets already; what many subscribers share goes as one prepared WebSocket frame (its
/// payload over polling).
struct EngineOutbox(EngineSocket);

impl Outbox for EngineOutbox {
    fn buffered_amount(&self) -> usize {
        self.0.buffered_amount()
    }

    fn encode(&self, text: &str) -> Bytes {
        Bytes::copy_from_slice(text.as_bytes())
    }

    fn send_encoded(&self, message: Bytes) -> bool {
        // Made from a `str` by `encode`: the check cannot fail.
        Utf8Bytes::try_from_bytes(message).is_ok_and(|t| self.0.send(&[Frame::Text(t)]))
    }

    fn takes_frames(&self) -> bool {
        true
    }

    /// The frame as is over WebSocket, its text over polling.
    fn send_frame(&self, frame: &PreparedFrame) -> bool {
        self.0.send(&[Frame::Prepared(frame.clone())])
    }

    /// Tells the client why (`closing`, with the code and reason), then ends the Engine.IO
    /// session: socket.io-client sees "transport close" and reconnects.
    fn close(&self, code: u16, reason: &str) -> bool {
        if self.0.is_closed() {
            return false;
        }
        let why = serde_json::json!({ "code": code, "reason": reason });
        let _ = self.0.send(&[Frame::message(&format!("2[\"closing\",{why}]"))]);
        self.0.close();
        true
    }
}

/// The hub's Socket.IO endpoint.
pub(crate) struct Endpoint {
    prefix: String,
    engine: Arc<Engine>,
    /// Which browser origins may use it (the hub's WebSocket origin policy).
    origins: OriginPolicy,
}

impl Endpoint {
    pub(crate) fn new(
        prefix: &str,
        options: SocketIoOptions,
        cx: Context,
        origins: OriginPolicy,
    ) -> Arc<Self> {
        let timeout = options.connect_timeout;
        let engine = Engine::new(options.engine, move |conn| {
            tokio::spawn(serve_connection(conn, cx.clone(), timeout));
        });
        let prefix = if prefix.ends_with('/') { prefix.to_owned() } else { format!("{prefix}/") };
        Arc::new(Self { prefix, engine, origins })
    }

    /// Whether `path` is the endpoint's (`/socket.io/`, or without the last slash).
    pub(crate) fn matches(&self, path: &str) -> bool {
        path == self.prefix || path == self.prefix.trim_end_matches('/')
    }

    pub(crate) fn prefix(&self) -> &str {
        &self.prefix
    }

    pub(crate) fn session_count(&self) -> usize {
        self.engine.session_count()
    }

    pub(crate) fn close_all(&self) -> usize {
        let n = self.engine.session_count();
        self.engine.close_all();
        n
    }

    /// A request through hyper (polling, and WebSockets over HTTP/2 or a kept-alive
    /// connection): the hub's origin policy first, as for every WebSocket and SockJS request
    /// (`null`, from a sandboxed frame or a file, passes only a policy that lists it).
    pub(crate) async fn handle(
        &self,
        req: Request<Incoming>,
    ) -> Response<UnsyncBoxBody<Bytes, std::convert::Infallible>> {
        if let Some(origin) = req.headers().get(hyper::header::ORIGIN) {
            let host = req.headers().get(hyper::header::HOST).and_then(|h| h.to_str().ok());
            let host = host.or_else(|| req.uri().authority().map(|a| a.as_str()));
            if !self.origins.allows(origin.to_str().unwrap_or(""), host) {
                let body = http_body_util::Full::new(Bytes::from_static(b"Origin not allowed.\n"));
                let mut r = Response::new(body.boxed_unsync());
                *r.status_mut() = hyper::StatusCode::FORBIDDEN;
                return r;
            }
        }
        self.engine.handle(req).await.map(BodyExt::boxed_unsync)
    }

    /// A WebSocket handshake on the fast path: what to serve, or the 400 to answer.
    pub(crate) fn websocket_target(&self, query: Option<&str>) -> Result<WebSocketTarget, Refused> {
        self.engine.websocket_target(query.unwrap_or(""))
    }

    pub(crate) async fn serve_websocket(
        &self,
        ws: WebSocket,
        target: WebSocketTarget,
        uri: Uri,
        headers: HeaderMap,
    ) {
        self.engine.serve_websocket(ws, target, uri, headers).await;
    }
}

/// Why a connection ends early.
fn connect_error(nsp: &str, message: &str, code: Option<u16>) -> Frame {
    let data = code.map(|code| serde_json::json!({ "code": code }));
    Frame::message(&Packet::connect_error(nsp, message, data).encode())
}

/// tether.json's command for an event, from its arguments: `subscribe("chat")` or
/// `subscribe({channel: "chat", recover: {…}})`, `publish("chat", data)`, and so on.
fn command(name: &str, args: &[Box<RawValue>]) -> Option<String> {
    let arg = |i: usize| args.get(i).map(|a| a.get());
    let is_str = |a: &str| a.starts_with('"');
    let params = match (name, arg(0)) {
        ("ping", _) => "{}".to_owned(),
        ("subscribe" | "unsubscribe" | "presence" | "history", Some(c)) if is_str(c) => {
            format!("{{\"channel\":{c}}}")
        }
        ("publish", Some(c)) if is_str(c) => {
            format!("{{\"channel\":{c},\"data\":{}}}", arg(1).unwrap_or("null"))
        }
        ("refresh", Some(t)) if is_str(t) => format!("{{\"token\":{t}}}"),
        ("subscribe" | "unsubscribe" | "presence" | "history" | "publish" | "refresh", Some(p)) => {
            p.to_owned()
        }
        _ => return None,
    };
    Some(format!("{{\"{name}\":{params}}}"))
}

/// The Engine.IO message that acknowledges `id` with a reply: `43<id>[<reply>]`.
fn ack(id: u64, reply: &str) -> String {
    format!("43{id}[{reply}]")
}

/// Runs one Socket.IO connection (an Engine.IO session) until it ends.
async fn serve_connection(mut conn: Connection, cx: Context, connect_timeout: Duration) {
    let tx = Tx::Outbox(Arc::new(EngineOutbox(conn.socket.clone())));
    let mut session = Session::new(cx.door, None);
    let metrics = session.metrics().clone();
    let mut decoder = Decoder::new(0);
    let mut connected = false;
    let deadline = tokio::time::Instant::now() + connect_timeout;
    loop {
        let data = tokio::select! {
            d = conn.messages.recv() => d,
            () = tokio::time::sleep_until(deadline), if !connected => break,
            () = sleep_until_or_forever(session.deadline()), if connected => {
                let _ = tx.send_close(CloseCode(EXPIRED.0), EXPIRED.1);
                session.expiry_handled();
                continue;
            }
        };
        let Some(data) = data else { break };
        if let Data::Text(t) = &data {
            metrics.bytes_in.fetch_add(t.len() as u64, Ordering::Relaxed);
        }
        // The hub's data is JSON: the decoder takes no attachments, so binary is refused.
        let packet = match decoder.feed(data) {
            Ok(Some(p)) => p,
            Ok(None) => continue,
            Err(e) => {
                tracing::debug!(sid = conn.socket.sid(), "socket.io: {e}; closing");
                break;
            }
        };
        match packet.kind {
            PacketType::Connect if packet.nsp != "/" => {
                let _ = conn.socket.send(&[connect_error(&packet.nsp, "Invalid namespace", None)]);
            }
            PacketType::Connect if !connected => {
                let auth = packet.data.as_ref().map_or("{}", |d| d.get());
                let text = format!("{{\"connect\":{auth}}}");
                let Some(reply) = json::handle(&text, &tx, &mut session, &DIALECT, &|r| r).await else {
                    break;
                };
                let v: serde_json::Value = serde_json::from_str(&reply.text).unwrap_or_default();
                if reply.error {
                    let message = v["error"]["message"].as_str().unwrap_or("refused");
                    let code = v["error"]["code"].as_u64().and_then(|c| u16::try_from(c).ok());
                    let _ = conn.socket.send(&[connect_error("/", message, code)]);
                    continue;
                }
                let mut body = v["result"].as_object().cloned().unwrap_or_default();
                let sid = body.get("client").cloned().unwrap_or_default();
                body.insert("sid".to_owned(), sid);
                let answer = Packet::new(
                    PacketType::Connect,
                    "/",
                    RawValue::from_string(serde_json::Value::Object(body).to_string()).ok(),
                );
                connected = true;
                if !conn.socket.send(&[Frame::message(&answer.encode())]) {
                    break;
                }
            }
            PacketType::Event if connected && packet.nsp == "/" => {
                metrics.commands.fetch_add(1, Ordering::Relaxed);
                let args: Vec<Box<RawValue>> =
                    packet.data.as_ref().and_then(|d| serde_json::from_str(d.get()).ok()).unwrap_or_default();
                let name = args
                    .first()
                    .and_then(|n| serde_json::from_str::<String>(n.get()).ok())
                    .unwrap_or_default();
                let frame = |r: String| packet.id.map_or(String::new(), |id| ack(id, &r));
                let reply = match command(&name, &args[1.min(args.len())..]) {
                    Some(text) => json::handle(&text, &tx, &mut session, &DIALECT, &frame).await,
                    None => {
                        metrics.command_errors.fetch_add(1, Ordering::Relaxed);
                        let message = format!("unknown event {name:?}");
                        let text =
                            serde_json::json!({ "error": { "code": 104, "message": message } }).to_string();
                        Some(json::Reply { text, error: true })
                    }
                };
                if let Some(reply) = reply {
                    if reply.error {
                        metrics.command_errors.fetch_add(1, Ordering::Relaxed);
                    }
                    if let Some(id) = packet.id {
                        let text = ack(id, &reply.text);
                        metrics.bytes_out.fetch_add(text.len() as u64, Ordering::Relaxed);
                        if !conn.socket.send(&[Frame::Text(Utf8Bytes::from(text))]) {
                            break;
                        }
                    }
                }
            }
            // Leaving the main namespace ends the hub session.
            PacketType::Disconnect if connected && packet.nsp == "/" => break,
            // Acks from the client (the hub asks for none), a second CONNECT, anything
            // before CONNECT, CONNECT_ERROR, binary packets: not what the protocol allows.
            _ => {
                tracing::debug!(sid = conn.socket.sid(), kind = ?packet.kind, "socket.io: unexpected packet; closing");
                break;
            }
        }
    }
    session.end();
    conn.socket.close();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(s: &str) -> Box<RawValue> {
        RawValue::from_string(s.to_owned()).unwrap()
    }

    #[test]
    fn events_become_commands() {
        assert_eq!(
            command("subscribe", &[raw("\"chat\"")]).as_deref(),
            Some("{\"subscribe\":{\"channel\":\"chat\"}}")
        );
        assert_eq!(
            command("subscribe", &[raw("{\"channel\":\"c\",\"recover\":{\"offset\":1,\"epoch\":\"e\"}}")])
                .as_deref(),
            Some("{\"subscribe\":{\"channel\":\"c\",\"recover\":{\"offset\":1,\"epoch\":\"e\"}}}")
        );
        assert_eq!(
            command("publish", &[raw("\"c\""), raw("{\"t\":1}")]).as_deref(),
            Some("{\"publish\":{\"channel\":\"c\",\"data\":{\"t\":1}}}")
        );
        assert_eq!(command("ping", &[]).as_deref(), Some("{\"ping\":{}}"));
        assert_eq!(
            command("refresh", &[raw("\"tok\"")]).as_deref(),
            Some("{\"refresh\":{\"token\":\"tok\"}}")
        );
        assert_eq!(command("connect", &[raw("{}")]), None, "connect is the CONNECT packet's");
        assert_eq!(command("nope", &[raw("1")]), None);
        assert_eq!(command("subscribe", &[]), None);
    }
}

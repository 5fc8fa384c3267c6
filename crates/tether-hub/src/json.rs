//! The `tether.json` protocol: JSON commands with request ids, replies, and pushes
//! (docs/PROTOCOL.md). One task per connection reads commands; pushes come from the hub
//! through a [`JsonOutlet`], each event encoded once for every JSON subscriber.

use crate::auth::Authenticator;
use crate::gate::SendGate;
use crate::hub::{Access, ClientId, ClientInfo, Event, Hub, HubError, Outlet, Push, StreamPosition};
use crate::metrics::Metrics;
use bytes::Bytes;
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::value::RawValue;
use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::SystemTime;
use tether::{CloseCode, Message, PreparedFrame, Sender, WebSocket};

/// The subprotocol name.
pub const PROTOCOL: &str = "tether.json";

/// The event cache slot of this front-end.
const SLOT: usize = 0;

/// Close codes the hub uses (4000-4999 are for applications, RFC 6455 7.4.2).
pub mod close {
    /// The connection fell behind: more than `max_queued_bytes` unsent.
    pub const SLOW_CONSUMER: u16 = 4008;
    /// Disconnected through the server API.
    pub const DISCONNECTED: u16 = 4010;
    /// The token is invalid.
    pub const INVALID_TOKEN: u16 = 4001;
    /// The token expired and was not refreshed in time.
    pub const TOKEN_EXPIRED: u16 = 4002;
    /// This node missed publications it cannot fill from history (after losing its
    /// connection to the broker): reconnect and resubscribe with recovery.
    pub const INSUFFICIENT_STATE: u16 = 4011;
}

/// Error codes of replies.
pub mod code {
    /// Something failed inside the server.
    pub const INTERNAL: u16 = 100;
    /// No `connect` yet, or a bad token.
    pub const UNAUTHORIZED: u16 = 101;
    /// The channel's namespace does not exist, or the name is empty or too long.
    pub const UNKNOWN_CHANNEL: u16 = 102;
    /// The namespace or the token does not allow this.
    pub const PERMISSION_DENIED: u16 = 103;
    /// No such command.
    pub const METHOD_NOT_FOUND: u16 = 104;
    /// Already subscribed.
    pub const ALREADY_SUBSCRIBED: u16 = 105;
    /// A limit was reached (channels per connection).
    pub const LIMIT_EXCEEDED: u16 = 106;
    /// The command is not valid JSON or misses a field.
    pub const BAD_REQUEST: u16 = 107;
    /// Not available in this namespace (presence or history off).
    pub const NOT_AVAILABLE: u16 = 108;
    /// The token has expired.
    pub const TOKEN_EXPIRED: u16 = 109;
    /// Not subscribed to the channel.
    pub const NOT_SUBSCRIBED: u16 = 110;
    /// `connect` sent twice.
    pub const ALREADY_CONNECTED: u16 = 111;
    /// The broker (Redis) cannot be reached: nothing was done; try again later.
    pub const UNAVAILABLE: u16 = 112;
}

fn hub_code(e: &HubError) -> u16 {
    match e {
        HubError::UnknownChannel => code::UNKNOWN_CHANNEL,
        HubError::PermissionDenied => code::PERMISSION_DENIED,
        HubError::AlreadySubscribed => code::ALREADY_SUBSCRIBED,
        HubError::NotSubscribed => code::NOT_SUBSCRIBED,
        HubError::LimitExceeded => code::LIMIT_EXCEEDED,
        HubError::NotAvailable => code::NOT_AVAILABLE,
        HubError::Unavailable => code::UNAVAILABLE,
    }
}

/// Delivers hub events to one JSON connection, disconnecting it when it falls behind.
pub struct JsonOutlet {
    gate: SendGate,
}

impl JsonOutlet {
    /// An outlet over `sender` that tolerates `max_queued` unsent bytes.
    pub fn new(sender: Sender, max_queued: usize, metrics: Arc<Metrics>) -> Self {
        Self { gate: SendGate::new(sender, max_queued, metrics) }
    }
}

impl Outlet for JsonOutlet {
    fn push(&self, event: &Arc<Event>) -> bool {
        self.gate.send_prepared(event.encoded(SLOT, |e| PreparedFrame::text(&encode_push(e))))
    }

    fn disconnect(&self, code: u16, reason: &str) {
        self.gate.disconnect(code, reason);
    }
}

/// Appends a JSON string literal.
fn push_str(out: &mut String, s: &str) {
    // serde_json escapes exactly as JSON requires; a String cannot fail to serialize.
    out.push_str(&serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into()));
}

fn push_info(out: &mut String, info: &ClientInfo) {
    out.push_str("{\"client\":");
    push_str(out, &info.client);
    out.push_str(",\"user\":");
    push_str(out, &info.user);
    out.push('}');
}

/// `{"offset":N,"data":…,"info":{…}}`
fn push_publication(out: &mut String, event: &Event) {
    let Some(p) = event.publication() else { return };
    let _ = write!(out, "{{\"offset\":{},\"data\":", p.offset);
    out.push_str(std::str::from_utf8(&p.data).unwrap_or("null"));
    if let Some(info) = &p.info {
        out.push_str(",\"info\":");
        push_info(out, info);
    }
    out.push('}');
}

/// The push message of an event.
pub fn encode_push(event: &Event) -> String {
    let mut out = String::with_capacity(96 + event.publication().map_or(0, |p| p.data.len()));
    out.push_str("{\"push\":{\"channel\":");
    push_str(&mut out, &event.channel);
    match &event.push {
        Push::Publication(_) => {
            out.push_str(",\"pub\":");
            push_publication(&mut out, event);
        }
        Push::Join(info) => {
            out.push_str(",\"join\":");
            push_info(&mut out, info);
        }
        Push::Leave(info) => {
            out.push_str(",\"leave\":");
            push_info(&mut out, info);
        }
    }
    out.push_str("}}");
    out
}

/// `,"expires":SECONDS` (Unix time) when the token expires.
fn push_expires(out: &mut String, expires: Option<SystemTime>) {
    if let Some(t) = expires {
        let secs = t.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let _ = write!(out, ",\"expires\":{secs}");
    }
}

/// A list of publications as a JSON array.
pub fn publications_json(events: &[Arc<Event>]) -> String {
    let mut out = String::from("[");
    for (i, e) in events.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        push_publication(&mut out, e);
    }
    out.push(']');
    out
}

/// Presence as a JSON array of client infos.
pub fn clients_json(clients: &[Arc<ClientInfo>]) -> String {
    let mut out = String::from("[");
    for (i, c) in clients.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        push_info(&mut out, c);
    }
    out.push(']');
    out
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Command<'a> {
    id: Option<u64>,
    connect: Option<ConnectCmd>,
    subscribe: Option<SubscribeCmd>,
    unsubscribe: Option<ChannelCmd>,
    #[serde(borrow)]
    publish: Option<PublishCmd<'a>>,
    presence: Option<ChannelCmd>,
    history: Option<HistoryCmd>,
    ping: Option<serde::de::IgnoredAny>,
    refresh: Option<RefreshCmd>,
}

#[derive(Deserialize)]
struct RefreshCmd {
    token: String,
}

#[derive(Deserialize)]
struct ConnectCmd {
    token: Option<String>,
    name: Option<String>,
}

#[derive(Deserialize)]
struct SubscribeCmd {
    channel: String,
    recover: Option<RecoverCmd>,
}

#[derive(Deserialize)]
struct RecoverCmd {
    offset: u64,
    epoch: String,
}

#[derive(Deserialize)]
struct ChannelCmd {
    channel: String,
}

#[derive(Deserialize)]
struct PublishCmd<'a> {
    channel: String,
    #[serde(borrow)]
    data: &'a RawValue,
}

#[derive(Deserialize)]
struct HistoryCmd {
    channel: String,
    limit: Option<usize>,
    since: Option<u64>,
}

/// A reply to send, and whether it reports an error.
struct Reply {
    text: String,
    error: bool,
}

/// Replies: `{"id":N,"result":{…}}` or `{"id":N,"error":{"code":C,"message":"…"}}`.
fn result(id: Option<u64>, body: &str) -> Reply {
    let text = match id {
        Some(id) => format!("{{\"id\":{id},\"result\":{body}}}"),
        None => format!("{{\"result\":{body}}}"),
    };
    Reply { text, error: false }
}

fn error(id: Option<u64>, code: u16, message: &str) -> Reply {
    let mut m = String::new();
    push_str(&mut m, message);
    let text = match id {
        Some(id) => format!("{{\"id\":{id},\"error\":{{\"code\":{code},\"message\":{m}}}}}"),
        None => format!("{{\"error\":{{\"code\":{code},\"message\":{m}}}}}"),
    };
    Reply { text, error: true }
}

/// Runs one `tether.json` connection until it closes.
pub async fn serve_connection(ws: WebSocket, hub: Arc<Hub>, auth: Arc<dyn Authenticator>) {
    let (write, mut read) = ws.split();
    let sender = write.sender();
    let mut session = Session { client: None, expires: None };
    let metrics = hub.metrics.clone();
    loop {
        // A connection whose token expires must refresh it in time.
        let deadline = session.expires.map(|t| {
            let left = t.duration_since(SystemTime::now()).unwrap_or_default();
            tokio::time::Instant::now() + left
        });
        let item = tokio::select! {
            item = read.next() => item,
            () = sleep_until_or_forever(deadline) => {
                let _ = sender.send_close(CloseCode(close::TOKEN_EXPIRED), "token expired");
                session.expires = None;
                continue;
            }
        };
        let Some(item) = item else { break };
        let msg = match item {
            Ok(m) => m,
            Err(e) => {
                tracing::debug!("connection failed: {e}");
                break;
            }
        };
        let text = match msg {
            Message::Text(t) => t,
            Message::Binary(_) => {
                let reply = error(None, code::BAD_REQUEST, "binary messages are not part of tether.json");
                metrics.command_errors.fetch_add(1, Ordering::Relaxed);
                let _ = sender.send(Message::text(reply.text)).await;
                continue;
            }
            _ => continue,
        };
        metrics.commands.fetch_add(1, Ordering::Relaxed);
        metrics.bytes_in.fetch_add(text.len() as u64, Ordering::Relaxed);
        let reply = handle(&text, &hub, &*auth, &sender, &mut session).await;
        if let Some(reply) = reply {
            if reply.error {
                metrics.command_errors.fetch_add(1, Ordering::Relaxed);
            }
            metrics.bytes_out.fetch_add(reply.text.len() as u64, Ordering::Relaxed);
            if sender.send(Message::text(reply.text)).await.is_err() {
                break;
            }
        }
    }
    if let Some((id, _)) = session.client {
        hub.disconnect(id);
    }
}

async fn sleep_until_or_forever(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// Why a client command could not be read: the reply's id (when one could be read), error
/// code and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandError {
    /// The command's `id`, if the text had a readable one.
    pub id: Option<u64>,
    /// The error code of the reply (107 bad request, 104 method not found).
    pub code: u16,
    /// The reply's message.
    pub message: String,
}

/// Reads a client command as the hub does: the JSON shape, then the one-method rule.
fn decode_command(text: &str) -> Result<Command<'_>, CommandError> {
    let cmd: Command<'_> = serde_json::from_str(text).map_err(|e| {
        let id = serde_json::from_str::<serde_json::Value>(text).ok().and_then(|v| v.get("id")?.as_u64());
        let unknown = e.to_string().starts_with("unknown field");
        let code = if unknown { code::METHOD_NOT_FOUND } else { code::BAD_REQUEST };
        CommandError { id, code, message: format!("invalid command: {e}") }
    })?;
    let methods = [
        cmd.connect.is_some(),
        cmd.subscribe.is_some(),
        cmd.unsubscribe.is_some(),
        cmd.publish.is_some(),
        cmd.presence.is_some(),
        cmd.history.is_some(),
        cmd.ping.is_some(),
        cmd.refresh.is_some(),
    ];
    if methods.iter().filter(|m| **m).count() != 1 {
        let message = "a command has exactly one method".to_owned();
        return Err(CommandError { id: cmd.id, code: code::BAD_REQUEST, message });
    }
    Ok(cmd)
}

/// Checks a client command's text the way the hub reads it, without running it (for the
/// fuzz target and tests): its `id` when it is a valid command.
///
/// # Errors
///
/// The [`CommandError`] the client would be answered with.
pub fn check_command(text: &str) -> Result<Option<u64>, CommandError> {
    decode_command(text).map(|c| c.id)
}

/// A connection's state between commands.
struct Session {
    client: Option<(ClientId, Arc<ClientInfo>)>,
    /// When the token runs out, unless refreshed.
    expires: Option<SystemTime>,
}

/// Handles one command; returns the reply to send, if it was not queued already.
async fn handle(
    text: &str,
    hub: &Arc<Hub>,
    auth: &dyn Authenticator,
    sender: &Sender,
    session: &mut Session,
) -> Option<Reply> {
    let cmd = match decode_command(text) {
        Ok(c) => c,
        Err(e) => return Some(error(e.id, e.code, &e.message)),
    };
    let id = cmd.id;
    if cmd.ping.is_some() {
        return Some(result(id, "{}"));
    }
    if let Some(c) = cmd.connect {
        if session.client.is_some() {
            return Some(error(id, code::ALREADY_CONNECTED, "already connected"));
        }
        let (user, access) = match c.token.as_deref() {
            Some(token) => match auth.authenticate(token) {
                Ok(identity) => {
                    session.expires = identity.expires;
                    (identity.user, identity.access)
                }
                Err((code, message)) => return Some(error(id, code, &message)),
            },
            None => (c.name.unwrap_or_default(), Access { anonymous: true, channels: None }),
        };
        let outlet =
            Arc::new(JsonOutlet::new(sender.clone(), hub.options().max_queued_bytes, hub.metrics.clone()));
        let (cid, info) = hub.connect(user, access, outlet);
        let mut body = String::from("{\"client\":");
        push_str(&mut body, &info.client);
        body.push_str(",\"user\":");
        push_str(&mut body, &info.user);
        body.push_str(",\"version\":");
        push_str(&mut body, env!("CARGO_PKG_VERSION"));
        push_expires(&mut body, session.expires);
        body.push('}');
        session.client = Some((cid, info));
        return Some(result(id, &body));
    }
    let Some((cid, info)) = session.client.clone() else {
        return Some(error(id, code::UNAUTHORIZED, "send connect first"));
    };
    if let Some(r) = cmd.refresh {
        let identity = match auth.authenticate(&r.token) {
            Ok(identity) => identity,
            Err((code, message)) => return Some(error(id, code, &message)),
        };
        if identity.user != info.user || info.user.is_empty() {
            return Some(error(id, code::UNAUTHORIZED, "the new token is for another user"));
        }
        hub.set_access(cid, identity.access);
        session.expires = identity.expires;
        let mut body = String::from("{");
        push_expires(&mut body, session.expires);
        body.push('}');
        return Some(result(id, &body.replacen("{,", "{", 1)));
    }
    if let Some(s) = cmd.subscribe {
        let recover = s.recover.map(|r| StreamPosition { offset: r.offset, epoch: r.epoch.into() });
        let queued = hub
            .subscribe(cid, &s.channel, recover, |sub| {
                // Queued under the hub's lock: the reply and the missed publications go out
                // before any newer event on this channel.
                let mut body = String::from("{\"epoch\":");
                push_str(&mut body, &sub.epoch);
                let _ = write!(body, ",\"offset\":{}", sub.offset);
                if sub.recovering {
                    let _ = write!(body, ",\"recovered\":{}", sub.recovered);
                    body.push_str(",\"publications\":");
                    body.push_str(&publications_json(&sub.publications));
                }
                body.push('}');
                let reply = result(id, &body).text;
                hub.metrics.bytes_out.fetch_add(reply.len() as u64, Ordering::Relaxed);
                let _ = sender.start_send(Message::text(reply));
            })
            .await;
        return match queued {
            Ok(()) => None,
            Err(e) => Some(error(id, hub_code(&e), &e.to_string())),
        };
    }
    if let Some(u) = cmd.unsubscribe {
        return Some(match hub.unsubscribe(cid, &u.channel) {
            Ok(()) => result(id, "{}"),
            Err(e) => error(id, hub_code(&e), &e.to_string()),
        });
    }
    if let Some(p) = cmd.publish {
        let data = Bytes::copy_from_slice(p.data.get().as_bytes());
        return Some(match hub.publish_from(cid, &p.channel, data).await {
            Ok(pos) => {
                let mut body = format!("{{\"offset\":{},\"epoch\":", pos.offset);
                push_str(&mut body, &pos.epoch);
                body.push('}');
                result(id, &body)
            }
            Err(e) => error(id, hub_code(&e), &e.to_string()),
        });
    }
    if let Some(p) = cmd.presence {
        return Some(match hub.presence(&p.channel, Some(cid)).await {
            Ok(list) => result(id, &format!("{{\"clients\":{}}}", clients_json(&list))),
            Err(e) => error(id, hub_code(&e), &e.to_string()),
        });
    }
    if let Some(h) = cmd.history {
        let limit = h.limit.unwrap_or(usize::MAX);
        return Some(match hub.history(&h.channel, limit, h.since, Some(cid)).await {
            Ok((pos, events)) => {
                let mut body = String::from("{\"epoch\":");
                push_str(&mut body, &pos.epoch);
                let _ = write!(
                    body,
                    ",\"offset\":{},\"publications\":{}}}",
                    pos.offset,
                    publications_json(&events)
                );
                result(id, &body)
            }
            Err(e) => error(id, hub_code(&e), &e.to_string()),
        });
    }
    Some(error(id, code::INTERNAL, "unhandled command"))
}

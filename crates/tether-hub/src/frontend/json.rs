//! The `tether.json` protocol: JSON commands with request ids, replies, and pushes
//! (docs/PROTOCOL.md). One task per connection reads commands; pushes come from the hub
//! through a [`JsonOutlet`], each event encoded once for every JSON subscriber.

use super::{Context, FrontEnd};
use crate::codes::{auth_code, reply as code, reply_code};
use crate::hub::{ClientInfo, Event, Outlet, Push, StreamPosition};
use crate::session::gate::SendGate;
use crate::session::link::{Link, TextEncoding, Tx};
use crate::session::{next_or_deadline, Deadlines, Session, Woke, EXPIRED};
use bytes::Bytes;
use futures_util::future::BoxFuture;
use serde::Deserialize;
use serde_json::value::RawValue;
use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::SystemTime;
use tether::{CloseCode, Message};

/// The subprotocol name.
pub const PROTOCOL: &str = "tether.json";

/// This front-end's encoding: one frame per event, shared by every JSON subscriber.
static ENCODING: TextEncoding = TextEncoding::new("tether.json");

/// Delivers hub events to one JSON connection, disconnecting it when it falls behind.
struct JsonOutlet {
    gate: SendGate,
}

impl Outlet for JsonOutlet {
    fn push(&self, event: &Arc<Event>) -> bool {
        self.gate.send_event(event, &ENCODING, encode_push)
    }

    fn push_all(&self, events: &[Arc<Event>], wants: &dyn Fn(&Event) -> bool) -> (u64, bool) {
        self.gate.send_events(events, wants, &ENCODING, encode_push)
    }

    fn disconnect(&self, code: u16, reason: &str) {
        self.gate.disconnect(code, reason);
    }

    fn prefetch(&self) {
        self.gate.prefetch();
    }
}

/// Appends a JSON string literal.
pub(crate) fn push_str(out: &mut String, s: &str) {
    // A string with nothing JSON escapes (a quote, a backslash, a control character) goes
    // in as it is, with no string made for it: channel names, client ids and user names
    // mostly are such.
    if !s.bytes().any(|b| b < 0x20 || b == b'"' || b == b'\\') {
        out.reserve(s.len() + 2);
        out.push('"');
        out.push_str(s);
        out.push('"');
        return;
    }
    // serde_json escapes exactly as JSON requires; a String cannot fail to serialize.
    out.push_str(&serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into()));
}

pub(crate) fn push_info(out: &mut String, info: &ClientInfo) {
    out.push('{');
    push_info_fields(out, info);
    out.push('}');
}

/// `"client":…,"user":…` and `"anonymous":true` for a client without a token.
fn push_info_fields(out: &mut String, info: &ClientInfo) {
    out.push_str("\"client\":");
    push_str(out, &info.client);
    out.push_str(",\"user\":");
    push_str(out, &info.user);
    if info.anonymous {
        out.push_str(",\"anonymous\":true");
    }
}

/// `{"offset":N,"data":…,"info":{…}}`
pub(crate) fn push_publication(out: &mut String, event: &Event) {
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
pub(crate) fn encode_push(event: &Event) -> String {
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
pub(crate) fn publications_json(events: &[Arc<Event>]) -> String {
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
pub(crate) fn clients_json(clients: &[Arc<ClientInfo>]) -> String {
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
pub(crate) struct Reply {
    pub(crate) text: String,
    pub(crate) error: bool,
}

/// How a front-end that runs tether.json's commands (this one, Socket.IO's) frames what
/// they answer and push.
pub(crate) struct Dialect {
    /// The outlet of a connected session's pushes.
    pub(crate) outlet: fn(SendGate) -> Arc<dyn Outlet>,
}

/// tether.json's own: replies as they are, pushes as `{"push":…}`.
static JSON: Dialect = Dialect { outlet: |gate| Arc::new(JsonOutlet { gate }) };

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

/// The `tether.json` front-end: on `/ws`, and the default there without a subprotocol.
pub(crate) struct Json;

impl FrontEnd for Json {
    fn subprotocols(&self) -> &'static [&'static str] {
        &[PROTOCOL]
    }

    fn path(&self) -> &'static str {
        "/ws"
    }

    fn serve(&self, link: Link, session: Session, _: Context, _: Option<String>) -> BoxFuture<'static, ()> {
        Box::pin(serve_connection(link, session))
    }
}

/// Runs one `tether.json` connection until it closes.
///
/// Laid out for idle connections, which are most of them: the async block captures what it
/// keeps (an `async fn` would also keep its arguments), a message is taken apart before
/// anything is awaited (so it is not kept across waits), and a command and a reply's send
/// are boxed while they run. The future is 168 bytes where it was 672.
fn serve_connection(
    link: Link,
    mut session: Session,
) -> impl std::future::Future<Output = ()> + Send + 'static {
    let Link { tx: sender, rx: mut read } = link;
    let mut deadline = Deadlines::<1>::default();
    async move {
        loop {
            // Only the send's box is kept across the send: the command and the reply are
            // gone by then (a binding lives to the end of its block, awaited or not).
            let send = {
                // A connection whose token expires must refresh it in time.
                deadline.set(0, session.deadline());
                let text = match next_or_deadline(&mut read, &mut deadline).await {
                    Woke::Deadline(_) => {
                        let _ = sender.send_close(CloseCode(EXPIRED.0), EXPIRED.1);
                        session.expiry_handled();
                        continue;
                    }
                    Woke::Next(None) => break,
                    Woke::Next(Some(Err(e))) => {
                        tracing::debug!("connection failed: {e}");
                        break;
                    }
                    Woke::Next(Some(Ok(Message::Text(t)))) => Ok(t),
                    Woke::Next(Some(Ok(Message::Binary(_)))) => Err(()),
                    Woke::Next(Some(Ok(_))) => continue,
                };
                // Borrowed, not moved: a moved-out value would be a second copy kept across
                // the command's wait.
                let reply = match &text {
                    Ok(text) => {
                        session.metrics().commands.fetch_add(1, Ordering::Relaxed);
                        session.metrics().bytes_in.fetch_add(text.len() as u64, Ordering::Relaxed);
                        match Box::pin(handle(text, &sender, &mut session, &JSON, &|r| r)).await {
                            Some(reply) => reply,
                            None => continue,
                        }
                    }
                    Err(()) => error(None, code::BAD_REQUEST, "binary messages are not part of tether.json"),
                };
                if reply.error {
                    session.metrics().command_errors.fetch_add(1, Ordering::Relaxed);
                }
                session.metrics().bytes_out.fetch_add(reply.text.len() as u64, Ordering::Relaxed);
                Box::pin(sender.send(Message::text(reply.text)))
            };
            if send.await.is_err() {
                break;
            }
        }
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

/// Handles one command; returns the reply to send, if it was not queued already (framed by
/// `frame` then: a subscription's reply goes out under the hub's lock, before any newer
/// event of its channel).
pub(crate) async fn handle(
    text: &str,
    sender: &Tx,
    session: &mut Session,
    dialect: &Dialect,
    frame: &(dyn Fn(String) -> String + Sync),
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
        if session.info().is_some() {
            return Some(error(id, code::ALREADY_CONNECTED, "already connected"));
        }
        let identity = match session.authenticate(c.token.as_deref(), c.name.as_deref().unwrap_or_default()) {
            Ok(identity) => identity,
            Err(e) => return Some(error(id, auth_code(&e), &e.message)),
        };
        let outlet = (dialect.outlet)(session.gate(sender.clone()));
        let info = session.connect(identity, outlet);
        let mut body = String::from("{");
        push_info_fields(&mut body, &info);
        body.push_str(",\"version\":");
        push_str(&mut body, env!("CARGO_PKG_VERSION"));
        push_expires(&mut body, session.expires());
        body.push('}');
        return Some(result(id, &body));
    }
    if session.info().is_none() {
        return Some(error(id, code::UNAUTHORIZED, "send connect first"));
    }
    if let Some(r) = cmd.refresh {
        if let Err(e) = session.refresh(&r.token) {
            return Some(error(id, auth_code(&e), &e.message));
        }
        let mut body = String::from("{");
        push_expires(&mut body, session.expires());
        body.push('}');
        return Some(result(id, &body.replacen("{,", "{", 1)));
    }
    if let Some(s) = cmd.subscribe {
        let recover = s.recover.map(|r| StreamPosition { offset: r.offset, epoch: r.epoch.into() });
        let metrics = session.metrics();
        let queued = session
            .subscribe(&s.channel, recover, |sub| {
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
                let reply = frame(result(id, &body).text);
                metrics.bytes_out.fetch_add(reply.len() as u64, Ordering::Relaxed);
                let _ = sender.start_send(Message::text(reply));
            })
            .await;
        return match queued {
            Ok(()) => None,
            Err(e) => Some(error(id, reply_code(&e), &e.to_string())),
        };
    }
    if let Some(u) = cmd.unsubscribe {
        return Some(match session.unsubscribe(&u.channel) {
            Ok(()) => result(id, "{}"),
            Err(e) => error(id, reply_code(&e), &e.to_string()),
        });
    }
    if let Some(p) = cmd.publish {
        let data = Bytes::copy_from_slice(p.data.get().as_bytes());
        return Some(match session.publish(&p.channel, data).await {
            Ok(pos) => {
                let mut body = format!("{{\"offset\":{},\"epoch\":", pos.offset);
                push_str(&mut body, &pos.epoch);
                body.push('}');
                result(id, &body)
            }
            Err(e) => error(id, reply_code(&e), &e.to_string()),
        });
    }
    if let Some(p) = cmd.presence {
        return Some(match session.presence(&p.channel).await {
            Ok(list) => result(id, &format!("{{\"clients\":{}}}", clients_json(&list))),
            Err(e) => error(id, reply_code(&e), &e.to_string()),
        });
    }
    if let Some(h) = cmd.history {
        let limit = h.limit.unwrap_or(usize::MAX);
        return Some(match session.history(&h.channel, limit, h.since).await {
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
            Err(e) => error(id, reply_code(&e), &e.to_string()),
        });
    }
    Some(error(id, code::INTERNAL, "unhandled command"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// `push_str` writes what serde_json writes for any string, the plain ones it copies
        /// as they are and the ones with something to escape.
        #[test]
        fn push_str_writes_what_serde_json_writes(
            prefix in "[a-z]{0,3}",
            s in "\\PC*|[\\u{0}-\\u{7f}]*|[\"\\\\a\\u{1f}\\u{7f}\\u{e9}]*",
        ) {
            let mut out = prefix.clone();
            push_str(&mut out, &s);
            prop_assert_eq!(out, format!("{prefix}{}", serde_json::to_string(&s).unwrap()));
        }
    }

    #[test]
    fn push_str_escapes_quotes_backslashes_and_control_characters() {
        let mut out = String::new();
        push_str(&mut out, "ticker:a");
        push_str(&mut out, "a\"b\\c\nd\u{1}");
        assert_eq!(out, r#""ticker:a""a\"b\\c\nd\u0001""#);
    }
}

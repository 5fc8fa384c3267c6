//! The server API: `POST /api/<method>` with a JSON body and `Authorization: apikey KEY`,
//! JSON answers built with serde (`{"result":…}` or `{"error":"…"}`).

use crate::codes::{close, http_status};
use crate::hub::{ClientInfo, Event, Hub, StreamPosition};
use crate::session::auth::same_secret;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::sync::Arc;

/// An API answer: status and JSON body.
pub(crate) struct Answer {
    pub(crate) status: u16,
    pub(crate) body: Vec<u8>,
    /// `Allow` for a 405.
    pub(crate) allow: Option<&'static str>,
}

impl Answer {
    fn json<T: Serialize>(status: u16, value: &T) -> Self {
        // Our own types, with string keys only: serialization cannot fail.
        let body = serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec());
        Self { status, body, allow: None }
    }

    fn result<T: Serialize>(value: T) -> Self {
        Self::json(200, &Reply { result: value })
    }

    pub(crate) fn error(status: u16, message: &str) -> Self {
        Self::json(status, &ErrorReply { error: message })
    }
}

#[derive(Serialize)]
struct Reply<T> {
    result: T,
}

#[derive(Serialize)]
struct ErrorReply<'a> {
    error: &'a str,
}

#[derive(Serialize)]
struct Position<'a> {
    offset: u64,
    epoch: &'a str,
}

impl<'a> From<&'a StreamPosition> for Position<'a> {
    fn from(p: &'a StreamPosition) -> Self {
        Self { offset: p.offset, epoch: &p.epoch }
    }
}

/// One answer of a broadcast: its position or its error.
#[derive(Serialize)]
#[serde(rename_all = "lowercase")]
enum Outcome<'a> {
    Result(Position<'a>),
    Error(String),
}

#[derive(Serialize)]
struct Client<'a> {
    client: &'a str,
    user: &'a str,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    anonymous: bool,
}

impl<'a> From<&'a ClientInfo> for Client<'a> {
    fn from(c: &'a ClientInfo) -> Self {
        Self { client: &c.client, user: &c.user, anonymous: c.anonymous }
    }
}

#[derive(Serialize)]
struct PublicationOut<'a> {
    offset: u64,
    data: Box<RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    info: Option<Client<'a>>,
}

impl<'a> PublicationOut<'a> {
    fn of(event: &'a Event) -> Option<Self> {
        let p = event.publication()?;
        // Data is stored as the publisher's JSON text; anything else reads as null.
        let data = std::str::from_utf8(&p.data)
            .ok()
            .and_then(|s| RawValue::from_string(s.to_owned()).ok())
            .unwrap_or_default();
        Some(Self { offset: p.offset, data, info: p.info.as_deref().map(Client::from) })
    }
}

#[derive(Serialize)]
struct Presence<'a> {
    clients: Vec<Client<'a>>,
}

#[derive(Serialize)]
struct History<'a> {
    offset: u64,
    epoch: &'a str,
    publications: Vec<PublicationOut<'a>>,
}

#[derive(Serialize)]
struct Broadcast<'a> {
    responses: Vec<Outcome<'a>>,
}

#[derive(Serialize)]
struct Disconnected {
    disconnected: usize,
}

#[derive(Serialize)]
struct ChannelCount<'a> {
    channel: &'a str,
    subscribers: usize,
}

#[derive(Serialize)]
struct Channels<'a> {
    channels: Vec<ChannelCount<'a>>,
}

#[derive(Deserialize)]
struct ApiPublish<'a> {
    /// Borrowed from the body unless it has escapes (no string made per publication).
    #[serde(borrow)]
    channel: Cow<'a, str>,
    #[serde(borrow)]
    data: &'a RawValue,
}

#[derive(Deserialize)]
struct ApiBroadcast<'a> {
    channels: Vec<String>,
    #[serde(borrow)]
    data: &'a RawValue,
}

#[derive(Deserialize)]
struct ApiChannel {
    channel: String,
}

#[derive(Deserialize)]
struct ApiHistory {
    channel: String,
    limit: Option<usize>,
    since: Option<u64>,
}

#[derive(Deserialize)]
struct ApiDisconnect {
    user: String,
}

/// Whether `authorization` carries the API key.
pub(crate) fn authorized(key: &str, authorization: Option<&str>) -> bool {
    authorization
        .and_then(|v| v.strip_prefix("apikey "))
        .is_some_and(|k| same_secret(k.trim().as_bytes(), key.as_bytes()))
}

/// Runs API method `name` with its request `body` (the key is checked by the caller).
pub(crate) async fn call(name: &str, body: &[u8], hub: &Hub) -> Answer {
    let call = match parse_api(name, body) {
        Ok(call) => call,
        Err(ApiParseError::UnknownMethod) => return Answer::error(404, UNKNOWN_API_METHOD),
        Err(ApiParseError::Body(e)) => return Answer::error(400, &format!("invalid body: {e}")),
    };
    match call {
        ApiCall::Publish(p) => {
            match hub.publish(&p.channel, Bytes::copy_from_slice(p.data.get().as_bytes()), None).await {
                Ok(pos) => Answer::result(Position::from(&pos)),
                Err(e) => Answer::error(http_status(&e), &e.to_string()),
            }
        }
        ApiCall::Broadcast(b) => {
            let data = Bytes::copy_from_slice(b.data.get().as_bytes());
            let mut positions = Vec::with_capacity(b.channels.len());
            for channel in &b.channels {
                positions.push(hub.publish(channel, data.clone(), None).await.map_err(|e| e.to_string()));
            }
            let responses = positions
                .iter()
                .map(|r| match r {
                    Ok(pos) => Outcome::Result(Position::from(pos)),
                    Err(e) => Outcome::Error(e.clone()),
                })
                .collect();
            Answer::result(Broadcast { responses })
        }
        ApiCall::Presence(p) => match hub.presence(&p.channel, None).await {
            Ok(list) => {
                Answer::result(Presence { clients: list.iter().map(|c| Client::from(&**c)).collect() })
            }
            Err(e) => Answer::error(http_status(&e), &e.to_string()),
        },
        ApiCall::History(h) => {
            match hub.history(&h.channel, h.limit.unwrap_or(usize::MAX), h.since, None).await {
                Ok((pos, events)) => Answer::result(History {
                    offset: pos.offset,
                    epoch: &pos.epoch,
                    publications: events.iter().filter_map(|e: &Arc<Event>| PublicationOut::of(e)).collect(),
                }),
                Err(e) => Answer::error(http_status(&e), &e.to_string()),
            }
        }
        ApiCall::Disconnect(d) => {
            let n = hub.disconnect_user(&d.user, close::DISCONNECTED, "disconnected by the server");
            Answer::result(Disconnected { disconnected: n })
        }
        ApiCall::Channels => {
            let list = hub.channels();
            Answer::result(Channels {
                channels: list
                    .iter()
                    .map(|(channel, subscribers)| ChannelCount { channel, subscribers: *subscribers })
                    .collect(),
            })
        }
    }
}

const UNKNOWN_API_METHOD: &str =
    "unknown API method (publish, broadcast, presence, history, disconnect, channels)";

/// A server API call with its parsed body.
enum ApiCall<'a> {
    Publish(ApiPublish<'a>),
    Broadcast(ApiBroadcast<'a>),
    Presence(ApiChannel),
    History(ApiHistory),
    Disconnect(ApiDisconnect),
    Channels,
}

/// Why a server API request could not be read.
#[derive(Debug)]
pub enum ApiParseError {
    /// No such method (HTTP 404).
    UnknownMethod,
    /// The body is not the method's JSON shape (HTTP 400).
    Body(serde_json::Error),
}

/// Reads a server API request body for method `name` (an empty body is `{}`).
fn parse_api<'a>(name: &str, body: &'a [u8]) -> Result<ApiCall<'a>, ApiParseError> {
    fn json<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, ApiParseError> {
        let body = if body.is_empty() { &b"{}"[..] } else { body };
        serde_json::from_slice(body).map_err(ApiParseError::Body)
    }
    Ok(match name {
        "publish" => ApiCall::Publish(json(body)?),
        "broadcast" => ApiCall::Broadcast(json(body)?),
        "presence" => ApiCall::Presence(json(body)?),
        "history" => ApiCall::History(json(body)?),
        "disconnect" => ApiCall::Disconnect(json(body)?),
        "channels" => ApiCall::Channels,
        _ => return Err(ApiParseError::UnknownMethod),
    })
}

/// Reads a server API request body the way the hub does, without running it (for the fuzz
/// target and tests).
///
/// # Errors
///
/// [`ApiParseError`]: the method is unknown or the body is not its JSON shape.
pub fn check_api_body(name: &str, body: &[u8]) -> Result<(), ApiParseError> {
    parse_api(name, body).map(|_| ())
}

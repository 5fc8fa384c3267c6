//! STOMP 1.0, 1.1 and 1.2 over WebSocket (docs/PROTOCOL.md, "STOMP").
//!
//! `/topic/<channel>` is the hub channel `<channel>`: STOMP and `tether.json` clients share
//! it, with its history and presence. `/queue/<name>` is a work queue (`hub::queue`).
//! One task per connection reads frames; topic messages come from the hub through a
//! [`StompOutlet`], whose shared part (everything but the `subscription` header) is encoded
//! once per event and STOMP version.

pub mod frame;

use super::{Context, FrontEnd};
use crate::codes::close;
use crate::hub::event::PartEncoding;
use crate::hub::queue::{AckMode, Delivery, QueueError, QueueOutlet};
use crate::hub::{push_each, Event, HubError, Outlet, StreamPosition};
use crate::session::gate::SendGate;
use crate::session::link::{binary_or_text as message, Link, Outbox, Tx};
use crate::session::{next_or_deadline, Deadlines, Session, Woke, EXPIRED};
use bytes::{Bytes, BytesMut};
use frame::{write_header, Command, Decoder, Frame, FrameError, Limits, Version};
use futures_util::future::BoxFuture;
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tether::{CloseCode, Message};

/// The WebSocket subprotocols of STOMP, newest first.
pub const PROTOCOLS: [&str; 3] = ["v12.stomp", "v11.stomp", "v10.stomp"];

/// The path where a connection without a subprotocol speaks STOMP.
pub const PATH: &str = "/stomp";

/// Settings of the STOMP front-end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StompOptions {
    /// Frame size, header count and header line limits.
    pub limits: Limits,
    /// Heart-beats the server offers, in milliseconds: how often it can send one, and how
    /// often it wants one (0: never). A peer silent for twice the negotiated interval is
    /// disconnected.
    pub heart_beat: (u64, u64),
    /// Frames held in open transactions at most, per connection.
    pub max_transaction_frames: usize,
}

impl Default for StompOptions {
    fn default() -> Self {
        Self { limits: Limits::default(), heart_beat: (10_000, 10_000), max_transaction_frames: 1_000 }
    }
}

/// This front-end's encodings: the shared part of a topic `MESSAGE`, one per version
/// (header escaping differs).
static ENCODINGS: [PartEncoding; 3] =
    [PartEncoding::new("stomp 1.0"), PartEncoding::new("stomp 1.1"), PartEncoding::new("stomp 1.2")];

/// The same parts in an outbox's form (SockJS sessions': JSON-escaped).
static OUTBOX_ENCODINGS: [PartEncoding; 3] = [
    PartEncoding::new("stomp 1.0 outbox"),
    PartEncoding::new("stomp 1.1 outbox"),
    PartEncoding::new("stomp 1.2 outbox"),
];

fn outbox_encoding(version: Version) -> &'static PartEncoding {
    &OUTBOX_ENCODINGS[version as usize]
}

fn encoding(version: Version) -> &'static PartEncoding {
    match version {
        Version::V1_0 => &ENCODINGS[0],
        Version::V1_1 => &ENCODINGS[1],
        Version::V1_2 => &ENCODINGS[2],
    }
}

/// A topic publication's body for STOMP: a JSON string as its text, anything else as JSON.
fn topic_body(data: &Bytes) -> (Bytes, &'static str) {
    if data.first() == Some(&b'"') {
        if let Ok(s) = serde_json::from_slice::<String>(data) {
            return (Bytes::from(s), "text/plain;charset=utf-8");
        }
    }
    (data.clone(), "application/json")
}

/// Everything of a topic `MESSAGE` after its `subscription` header.
fn encode_topic_part(event: &Event, version: Version) -> Bytes {
    let Some(p) = event.publication() else { return Bytes::new() };
    let (body, content_type) = topic_body(&p.data);
    let esc = (version >= Version::V1_1).then_some(version);
    let mut out = BytesMut::with_capacity(160 + body.len());
    let id = format!("t{}-{}", p.offset, event.channel);
    write_header(&mut out, "destination", &format!("/topic/{}", event.channel), esc);
    write_header(&mut out, "message-id", &id, esc);
    write_header(&mut out, "ack", &id, esc);
    write_header(&mut out, "offset", &p.offset.to_string(), esc);
    if let Some(info) = &p.info {
        write_header(&mut out, "publisher-client", &info.client, esc);
        write_header(&mut out, "publisher-user", &info.user, esc);
        if info.anonymous {
            write_header(&mut out, "publisher-anonymous", "true", esc);
        }
    }
    write_header(&mut out, "content-type", content_type, esc);
    write_header(&mut out, "content-length", &body.len().to_string(), esc);
    out.extend_from_slice(b"\n");
    out.extend_from_slice(&body);
    out.extend_from_slice(b"\0");
    out.freeze()
}

thread_local! {
    /// The last topic MESSAGEs made as WebSocket frames, one per position in a batch of
    /// events ([`StompOutlet::push_all`]; a single event is position 0): for which event (a
    /// weak reference: the event's data is let go, its address is not reused while it is
    /// compared), STOMP version and subscription id. A fan-out goes through a channel's
    /// subscribers in one go on one thread, each taking the same events in the same
    /// order, so every subscriber after the first with the same id and version queues the
    /// same frames. At most [`SHARED_SLOTS`] are kept, and those past the last batch's
    /// length are let go when a new batch starts.
    static SHARED_FRAME: std::cell::RefCell<Vec<Option<SharedFrame>>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// How many positions of a batch [`SHARED_FRAME`] keeps a frame for; a longer batch's later
/// events share the positions (modulo), and may miss.
const SHARED_SLOTS: usize = 128;

/// See [`SHARED_FRAME`].
type SharedFrame = (std::sync::Weak<Event>, Version, Id, tether::PreparedFrame);

/// Delivers topic events and queue messages to one STOMP connection, disconnecting it
/// (close code 4008) when it falls behind.
struct StompOutlet {
    gate: SendGate,
    version: Version,
    /// Topic subscriptions.
    topics: Mutex<Topics>,
}

/// A name compared by a key held inline when it is short (15 bytes or less, as channel
/// names and subscription ids mostly are): a fan-out compares each subscriber's names
/// without reading the strings, which live in allocations of their own.
#[derive(Clone, Debug)]
struct Name {
    /// The bytes and the length + 1 for a short name; zeros for a long one. Two words, not
    /// a `u128`: aligned to 8 bytes, not 16, which would pad every outlet.
    key: Key,
    name: Arc<str>,
}

/// See [`Name`].
type Key = [u64; 2];

impl Name {
    fn new(name: Arc<str>) -> Self {
        Self { key: short_key(&name), name }
    }

    fn is(&self, key: Key, name: &str) -> bool {
        if self.key != [0; 2] || key != [0; 2] {
            self.key == key
        } else {
            &*self.name == name
        }
    }
}

fn short_key(name: &str) -> Key {
    if name.len() > 15 {
        return [0; 2];
    }
    let mut b = [0u8; 16];
    b[..name.len()].copy_from_slice(name.as_bytes());
    b[15] = name.len() as u8 + 1;
    let k = u128::from_le_bytes(b);
    [k as u64, (k >> 64) as u64]
}

/// A subscription id: a short one (15 bytes or less, as ids mostly are: stomp.js's are
/// `sub-0`, `sub-1`, ...) all in its key, as a [`Name`]'s, so a subscription takes no
/// allocation of its own; a longer one as a string. An enum of the two is 24 bytes, and a
/// list's inline first id 24 too, in every outlet.
#[derive(Clone, Debug)]
enum Id {
    Short(Key),
    Long(Arc<str>),
}

impl Id {
    fn new(id: &str) -> Self {
        match short_key(id) {
            [0, 0] => Self::Long(id.into()),
            key => Self::Short(key),
        }
    }

    fn is(&self, key: Key, id: &str) -> bool {
        match self {
            Self::Short(k) => *k == key,
            Self::Long(long) => key == [0; 2] && &**long == id,
        }
    }

    fn same(&self, other: &Id) -> bool {
        match (self, other) {
            (Self::Short(a), Self::Short(b)) => a == b,
            (Self::Long(a), Self::Long(b)) => a == b,
            _ => false,
        }
    }

    /// Calls `f` with the id as a string.
    fn with_str<R>(&self, f: impl FnOnce(&str) -> R) -> R {
        match self {
            Self::Long(long) => f(long),
            Self::Short(key) => {
                let bytes = (u128::from(key[0]) | (u128::from(key[1]) << 64)).to_le_bytes();
                let len = usize::from(bytes[15]).saturating_sub(1).min(15);
                // The bytes of a `str` cut at its end: valid UTF-8.
                f(std::str::from_utf8(&bytes[..len]).unwrap_or_default())
            }
        }
    }
}

/// A short list that holds its first item inline. Most STOMP connections subscribe to one
/// topic with one id: a fan-out then finds both in the outlet itself, without following a
/// pointer to another allocation (a cache miss per subscriber at 10,000 of them).
#[derive(Debug)]
struct Few<T> {
    /// `None` only when the list is empty.
    first: Option<T>,
    /// The others, boxed: one pointer where a `Vec` is three words, in every outlet.
    #[allow(clippy::box_collection, reason = "a thin pointer; most lists have one item")]
    rest: Option<Box<Vec<T>>>,
}

impl<T> Default for Few<T> {
    fn default() -> Self {
        Self { first: None, rest: None }
    }
}

impl<T> Few<T> {
    fn one(item: T) -> Self {
        Self { first: Some(item), rest: None }
    }

    fn others(&self) -> &[T] {
        self.rest.as_deref().map_or(&[], Vec::as_slice)
    }

    fn iter(&self) -> impl Iterator<Item = &T> {
        self.first.iter().chain(self.others())
    }

    fn find_mut(&mut self, mut f: impl FnMut(&T) -> bool) -> Option<&mut T> {
        let rest = self.rest.as_deref_mut().map_or(&mut [][..], Vec::as_mut_slice);
        self.first.iter_mut().chain(rest).find(|t| f(t))
    }

    fn is_empty(&self) -> bool {
        self.first.is_none()
    }

    fn push(&mut self, item: T) {
        match self.first {
            None => self.first = Some(item),
            Some(_) => self.rest.get_or_insert_default().push(item),
        }
    }

    /// Keeps the items for which `keep` says true, in order.
    fn retain(&mut self, mut keep: impl FnMut(&T) -> bool) {
        let mut all = std::mem::take(self).into_items().filter(|t| keep(t));
        self.first = all.next();
        let rest: Vec<T> = all.collect();
        self.rest = (!rest.is_empty()).then(|| Box::new(rest));
    }

    fn into_items(self) -> impl Iterator<Item = T> {
        self.first.into_iter().chain(self.rest.map(|r| *r).unwrap_or_default())
    }
}

/// A connection's topic subscriptions: channel, then the subscription ids on it.
#[derive(Default)]
struct Topics(Few<(Name, Few<Id>)>);

impl Topics {
    fn get(&self, channel: &str) -> Option<&Few<Id>> {
        let key = short_key(channel);
        self.0.iter().find(|(c, _)| c.is(key, channel)).map(|(_, ids)| ids)
    }

    fn get_mut(&mut self, channel: &str) -> Option<&mut Few<Id>> {
        let key = short_key(channel);
        self.0.find_mut(|(c, _)| c.is(key, channel)).map(|(_, ids)| ids)
    }

    fn insert(&mut self, channel: Arc<str>, ids: Few<Id>) {
        match self.get_mut(&channel) {
            Some(old) => *old = ids,
            None => self.0.push((Name::new(channel), ids)),
        }
    }

    /// The number of subscriptions.
    fn len(&self) -> usize {
        self.0.iter().map(|(_, ids)| ids.iter().count()).sum()
    }

    fn has_id(&self, id: &str) -> bool {
        let key = short_key(id);
        self.0.iter().any(|(_, ids)| ids.iter().any(|i| i.is(key, id)))
    }

    /// Removes subscription `id`: its channel, and whether it was the channel's last.
    fn remove_id(&mut self, id: &str) -> Option<(Arc<str>, bool)> {
        let key = short_key(id);
        let (channel, ids) = self.0.find_mut(|(_, ids)| ids.iter().any(|i| i.is(key, id)))?;
        ids.retain(|i| !i.is(key, id));
        let (channel, last) = (channel.name.clone(), ids.is_empty());
        if last {
            self.0.retain(|(c, _)| !Arc::ptr_eq(&c.name, &channel));
        }
        Some((channel, last))
    }
}

impl StompOutlet {
    fn new(gate: SendGate, version: Version) -> Self {
        Self { gate, version, topics: Mutex::new(Topics::default()) }
    }

    fn topics(&self) -> std::sync::MutexGuard<'_, Topics> {
        self.topics.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues a frame without waiting; `false` when the connection is closing or too slow.
    fn send(&self, bytes: Bytes) -> bool {
        self.gate.send(message(bytes))
    }

    /// Sends a topic event to one subscription: its own head, then the part every
    /// subscriber shares (encoded once per version, and once more for SockJS). Over
    /// WebSocket, the whole frame is shared too by the subscribers that follow with the
    /// same subscription id (clients number their subscriptions alike: stomp.js's first is
    /// `sub-0` everywhere): see [`SHARED_FRAME`].
    fn send_event(&self, sub: &Id, event: &Arc<Event>) -> bool {
        let v = self.version;
        if self.gate.takes_frames() {
            return self.gate.send_frame(&self.shared_frame(0, sub, event));
        }
        event.with_part(
            encoding(v),
            |e| encode_topic_part(e, v),
            |part| {
                // Sized for the whole message: over WebSocket the part is appended in place.
                let head = sub.with_str(|subscription| {
                    let mut head = BytesMut::with_capacity(part.len() + subscription.len() + 24);
                    head.extend_from_slice(b"MESSAGE\n");
                    write_header(&mut head, "subscription", subscription, (v >= Version::V1_1).then_some(v));
                    head
                });
                let encoded = |o: &dyn Outbox| {
                    let encode = |_: &Event| o.encode(&String::from_utf8_lossy(part));
                    event.with_part(outbox_encoding(v), encode, Bytes::clone)
                };
                self.gate.send_joined(head, part, encoded)
            },
        )
    }
}

impl StompOutlet {
    /// The MESSAGE frame of `event` for subscription `sub`, shared with the subscribers
    /// before this one that had the same id and version (see [`SHARED_FRAME`]); `slot` is
    /// the event's position in its batch.
    fn shared_frame(&self, slot: usize, sub: &Id, event: &Arc<Event>) -> tether::PreparedFrame {
        let v = self.version;
        let slot = slot % SHARED_SLOTS;
        SHARED_FRAME.with(|frames| {
            let mut frames = frames.borrow_mut();
            if frames.len() <= slot {
                frames.resize_with(slot + 1, || None);
            }
            if let Some((e, ver, id, frame)) = &frames[slot] {
                if std::ptr::eq(e.as_ptr(), Arc::as_ptr(event)) && *ver == v && id.same(sub) {
                    return frame.clone();
                }
            }
            let frame = event.with_part(
                encoding(v),
                |e| encode_topic_part(e, v),
                |part| {
                    sub.with_str(|subscription| {
                        let mut whole = BytesMut::with_capacity(part.len() + subscription.len() + 24);
                        whole.extend_from_slice(b"MESSAGE\n");
                        write_header(
                            &mut whole,
                            "subscription",
                            subscription,
                            (v >= Version::V1_1).then_some(v),
                        );
                        whole.extend_from_slice(part);
                        match std::str::from_utf8(&whole) {
                            Ok(text) => tether::PreparedFrame::text(text),
                            Err(_) => tether::PreparedFrame::binary(&whole),
                        }
                    })
                },
            );
            frames[slot] = Some((Arc::downgrade(event), v, sub.clone(), frame.clone()));
            frame
        })
    }

    /// Forgets the shared frames past a new batch's length (see [`SHARED_FRAME`]).
    fn new_batch(events: &[Arc<Event>]) {
        SHARED_FRAME.with(|frames| {
            let mut frames = frames.borrow_mut();
            let first_is_new = match frames.first() {
                Some(Some((e, ..))) => {
                    events.first().is_some_and(|f| !std::ptr::eq(e.as_ptr(), Arc::as_ptr(f)))
                }
                _ => true,
            };
            if first_is_new {
                frames.truncate(events.len().min(SHARED_SLOTS));
            }
        });
    }
}

impl Outlet for StompOutlet {
    fn push(&self, event: &Arc<Event>) -> bool {
        // Join and leave events are for tether.json; STOMP has no frame for them.
        if event.publication().is_none() {
            return true;
        }
        let topics = self.topics();
        let Some(subs) = topics.get(&event.channel) else { return true };
        // Bound to a name: the iterator borrows from the guard, which must outlive it.
        let sent = subs.iter().all(|id| self.send_event(id, event));
        sent
    }

    fn push_all(&self, events: &[Arc<Event>], wants: &dyn Fn(&Event) -> bool) -> (u64, bool) {
        let topics = self.topics();
        // Over a WebSocket written from the publishing path, the whole batch under one
        // lock of the connection; elsewhere one event at a time.
        let batched = self.gate.batch(|batch| {
            Self::new_batch(events);
            let mut queued = 0;
            for (slot, event) in events.iter().enumerate() {
                if !wants(event) {
                    continue;
                }
                // As `push`: only publications, to each subscription of their channel.
                if let (Some(_), Some(subs)) = (event.publication(), topics.get(&event.channel)) {
                    for id in subs.iter() {
                        if !batch.send_frame(&self.shared_frame(slot, id, event)) {
                            return (queued, false);
                        }
                    }
                }
                queued += 1;
            }
            (queued, true)
        });
        drop(topics);
        batched.unwrap_or_else(|| push_each(events, wants, |e| self.push(e)))
    }

    fn disconnect(&self, code: u16, reason: &str) {
        self.gate.disconnect(code, reason);
    }

    fn prefetch(&self) {
        self.gate.prefetch();
    }
}

impl QueueOutlet for StompOutlet {
    fn deliver(&self, subscription: &str, d: &Delivery) -> bool {
        let v = self.version;
        let id = format!("q{}", d.tag);
        let mut f = Frame::new(Command::Message)
            .header("subscription", subscription)
            .header("message-id", id.clone())
            .header("destination", format!("/queue/{}", d.queue))
            .header("ack", id);
        if d.redelivered {
            f = f.header("redelivered", "true");
        }
        f.headers.extend(d.message.headers.iter().cloned());
        f = f.header("content-length", d.message.body.len().to_string()).body(d.message.body.clone());
        let mut out = BytesMut::with_capacity(128 + f.body.len());
        f.encode(v, &mut out);
        self.send(out.freeze())
    }
}

/// Why a connection ends with an ERROR frame.
#[derive(Debug)]
struct Fail {
    /// The `message` header: short.
    message: String,
    /// The body: the details.
    detail: String,
    /// The WebSocket close code that follows.
    close: u16,
    /// Extra headers (`version` on a version mismatch).
    headers: Vec<(String, String)>,
}

impl Fail {
    fn protocol(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            detail: String::new(),
            close: close::PROTOCOL_ERROR,
            headers: Vec::new(),
        }
    }

    fn policy(message: impl Into<String>) -> Self {
        Self { message: message.into(), detail: String::new(), close: close::POLICY, headers: Vec::new() }
    }

    fn detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = detail.into();
        self
    }
}

impl From<FrameError> for Fail {
    fn from(e: FrameError) -> Self {
        let close = match e {
            FrameError::TooLarge { .. }
            | FrameError::TooManyHeaders { .. }
            | FrameError::HeaderTooLong { .. } => close::TOO_BIG,
            _ => close::PROTOCOL_ERROR,
        };
        Self { message: e.to_string(), detail: String::new(), close, headers: Vec::new() }
    }
}

fn hub_fail(what: &str, e: &HubError) -> Fail {
    Fail::policy(format!("{what}: {e}"))
}

fn queue_fail(what: &str, e: &QueueError) -> Fail {
    let close = match e {
        QueueError::Full(..) | QueueError::TooManyQueues(_) | QueueError::Unavailable => close::POLICY,
        _ => close::PROTOCOL_ERROR,
    };
    Fail { message: format!("{what}: {e}"), detail: String::new(), close, headers: Vec::new() }
}

/// Where a destination leads.
#[derive(Debug)]
enum Dest {
    Topic(Arc<str>),
    Queue(Box<str>),
}

fn destination(frame: &Frame) -> Result<Dest, Fail> {
    let d = required(frame, "destination")?;
    if let Some(ch) = d.strip_prefix("/topic/") {
        return Ok(Dest::Topic(ch.into()));
    }
    if let Some(q) = d.strip_prefix("/queue/") {
        return Ok(Dest::Queue(q.into()));
    }
    Err(Fail::protocol(format!("unknown destination {d:?}"))
        .detail("destinations are /topic/<channel> (a hub channel) or /queue/<name> (a work queue)"))
}

fn required<'a>(frame: &'a Frame, name: &str) -> Result<&'a str, Fail> {
    frame.get(name).ok_or_else(|| Fail::protocol(format!("{} frame without a {name} header", frame.command)))
}

/// The hub data of a topic SEND: JSON as given when it is JSON (or says so), text as a
/// JSON string.
fn topic_data(frame: &Frame) -> Result<Bytes, Fail> {
    let content_type = frame.get("content-type").unwrap_or("");
    let is_json = |b: &[u8]| serde_json::from_slice::<serde::de::IgnoredAny>(b).is_ok();
    if content_type.starts_with("application/json") {
        if !is_json(&frame.body) {
            return Err(Fail::protocol("body is not valid JSON (content-type application/json)"));
        }
        return Ok(frame.body.clone());
    }
    if !(content_type.is_empty() || content_type.starts_with("text/")) {
        return Err(Fail::protocol(format!("a topic carries text or JSON, not {content_type}"))
            .detail("send binary data to a /queue/ destination"));
    }
    let Ok(text) = std::str::from_utf8(&frame.body) else {
        return Err(Fail::protocol("a topic carries text or JSON: the body is not UTF-8")
            .detail("send binary data to a /queue/ destination"));
    };
    if content_type.is_empty() && !text.trim().is_empty() && is_json(text.as_bytes()) {
        return Ok(frame.body.clone());
    }
    Ok(serde_json::to_string(text).unwrap_or_default().into())
}

/// Headers of a SEND that travel with a queue message.
fn forwarded(frame: &Frame) -> Vec<(String, String)> {
    const OWN: [&str; 9] = [
        "destination",
        "transaction",
        "receipt",
        "content-length",
        "message-id",
        "subscription",
        "ack",
        "redelivered",
        "session",
    ];
    let mut out: Vec<(String, String)> = Vec::new();
    for (n, v) in &frame.headers {
        if !OWN.contains(&n.as_str()) && !out.iter().any(|(m, _)| m == n) {
            out.push((n.clone(), v.clone()));
        }
    }
    out
}

/// A connection's state.
struct Conn {
    session: Session,
    /// The front-end's settings, one for all connections.
    options: Arc<StompOptions>,
    sender: Tx,
    /// The newest version the subprotocol allows.
    cap: Version,
    version: Version,
    outlet: Option<Arc<StompOutlet>>,
    /// Queue subscriptions (topic subscriptions are in the outlet).
    queues: QueueSubscriptions,
    /// Open transactions and the frames they hold. Boxed, as most connections never open
    /// one: the box is 8 bytes in every connection, the map 48.
    #[allow(clippy::box_collection)]
    transactions: Option<Box<HashMap<String, Vec<Frame>>>>,
    transaction_frames: usize,
    /// The negotiated heart-beats, in milliseconds (0: none): four bytes each where an
    /// `Option<Duration>` is sixteen, in every connection.
    heart_beat_in: u32,
    heart_beat_out: u32,
}

impl Conn {
    /// How often the client must send something, if it must.
    fn heart_beat_in(&self) -> Option<Duration> {
        beat(self.heart_beat_in)
    }

    /// How often we send a heart-beat, if we do.
    fn heart_beat_out(&self) -> Option<Duration> {
        beat(self.heart_beat_out)
    }
}

fn beat(ms: u32) -> Option<Duration> {
    (ms != 0).then(|| Duration::from_millis(ms.into()))
}

/// A connection's queue subscriptions by id: a list, as they are few (at most
/// `max_channels_per_connection`, 128 by default, with the topic subscriptions), and boxed,
/// as most connections have none. Topic subscriptions are only in the outlet's [`Topics`],
/// which the fan-out reads: a second list of them took about 50 bytes in every subscribed
/// connection.
#[derive(Default)]
#[allow(clippy::box_collection, reason = "a thin pointer; most connections have no queue")]
struct QueueSubscriptions(Option<Box<Vec<Box<str>>>>);

impl QueueSubscriptions {
    fn ids(&self) -> &[Box<str>] {
        self.0.as_deref().map_or(&[], Vec::as_slice)
    }

    fn contains(&self, id: &str) -> bool {
        self.ids().iter().any(|i| **i == *id)
    }

    /// Adds `id` (which the caller checked is not there yet).
    fn insert(&mut self, id: &str) {
        let list = self.0.get_or_insert_default();
        list.reserve_exact(1);
        list.push(id.into());
    }

    fn remove(&mut self, id: &str) -> bool {
        let Some(list) = self.0.as_deref_mut() else { return false };
        let Some(at) = list.iter().position(|i| **i == *id) else { return false };
        list.swap_remove(at);
        if list.is_empty() {
            self.0 = None;
        }
        true
    }
}

/// The STOMP front-end: its subprotocols anywhere, and `/stomp` without one.
pub(crate) struct Stomp;

impl FrontEnd for Stomp {
    fn subprotocols(&self) -> &'static [&'static str] {
        &PROTOCOLS
    }

    fn path(&self) -> &'static str {
        PATH
    }

    fn serve(
        &self,
        link: Link,
        session: Session,
        cx: Context,
        subprotocol: Option<String>,
    ) -> BoxFuture<'static, ()> {
        Box::pin(serve_connection(link, session, cx.stomp, subprotocol.as_deref()))
    }
}

/// Runs one STOMP connection until it closes. `subprotocol` is the negotiated one (it caps
/// the version), `None` on the `/stomp` path without one.
///
/// Laid out for idle connections, as tether.json's is: the async block captures what it
/// keeps, one poll function waits for the next message or the first of the timers (the
/// heart-beats both ways and the token's expiry, in one box and only while one is set) instead of a
/// `select!`, and a command's handling and an ERROR's send are boxed while they run. The
/// future is 480 bytes where it was 2,016.
fn serve_connection(
    link: Link,
    session: Session,
    options: Arc<StompOptions>,
    subprotocol: Option<&str>,
) -> impl std::future::Future<Output = ()> + Send + 'static {
    let cap = subprotocol.and_then(Version::from_subprotocol).unwrap_or(Version::V1_2);
    let Link { tx: sender, rx: mut read } = link;
    // Boxed, and only while it holds part of a frame: an idle connection has none.
    let mut decoder: Option<Box<Decoder>> = None;
    let mut session = Conn {
        session,
        options,
        sender,
        cap,
        version: Version::V1_2,
        outlet: None,
        queues: QueueSubscriptions::default(),
        transactions: None,
        transaction_frames: 0,
        heart_beat_in: 0,
        heart_beat_out: 0,
    };
    // Timers: nothing heard from the client for twice its heart-beat, the token's expiry,
    // and our own heart-beat.
    let mut timers = Deadlines::<3>::default();
    async move {
        let mut closing = false;
        let mut last_read = tokio::time::Instant::now();
        loop {
            timers.set(SILENT, session.heart_beat_in().filter(|_| !closing).map(|d| last_read + d * 2));
            timers.set(EXPIRY, session.session.deadline().filter(|_| !closing));
            // What woke the loop is consumed in this block, before anything else is awaited
            // (a value matched on is kept to the end of its block, awaited or not).
            let error = {
                let woke = next_or_deadline(&mut read, &mut timers).await;
                let data = match woke {
                    Woke::Deadline(SILENT) => {
                        let ms = session.heart_beat_in;
                        let fail =
                            Fail { close: close::HEARTBEAT_TIMEOUT, ..Fail::protocol("heart-beat timeout") }
                                .detail(format!(
                                    "nothing received for twice the heart-beat interval of {ms} ms"
                                ));
                        Err(fail)
                    }
                    Woke::Deadline(EXPIRY) => Err(Fail { close: EXPIRED.0, ..Fail::policy(EXPIRED.1) }),
                    Woke::Deadline(_) => {
                        let next = tokio::time::Instant::now();
                        timers.set(BEAT, session.heart_beat_out().filter(|_| !closing).map(|d| next + d));
                        if !closing && session.sender.start_send(Message::text("\n")).is_err() {
                            break;
                        }
                        continue;
                    }
                    Woke::Next(None) => break,
                    Woke::Next(Some(Ok(Message::Text(t)))) => Ok(t.into_bytes()),
                    Woke::Next(Some(Ok(Message::Binary(b)))) => Ok(b),
                    Woke::Next(Some(Ok(_))) => continue,
                    Woke::Next(Some(Err(e))) => {
                        tracing::debug!("STOMP connection failed: {e}");
                        break;
                    }
                };
                match data {
                    Ok(data) => {
                        last_read = tokio::time::Instant::now();
                        if closing {
                            continue;
                        }
                        session.session.metrics().bytes_in.fetch_add(data.len() as u64, Ordering::Relaxed);
                        // Before CONNECT, the version is 1.2's (CONNECT reads the same in all).
                        let limits = session.options.limits;
                        decoder
                            .get_or_insert_with(|| Box::new(Decoder::new(session.version, limits)))
                            .push(&data);
                        None
                    }
                    // Boxed: kept across the ERROR's send, it would be laid out in every
                    // connection's task.
                    Err(fail) => Some(Box::new(fail)),
                }
            };
            closing = match error {
                Some(fail) => {
                    Box::pin(session.error(*fail, None)).await;
                    true
                }
                None => match decoder.as_deref_mut() {
                    Some(d) => Box::pin(handle_frames(&mut session, d, &mut timers)).await,
                    None => false,
                },
            };
            // Between frames: an idle connection keeps no decoder.
            if decoder.as_deref().is_some_and(Decoder::is_idle) {
                decoder = None;
            }
        }
    }
}

/// Handles the frames `decoder` holds, in order; returns whether the connection is now
/// closing (after a DISCONNECT or an ERROR).
async fn handle_frames(session: &mut Conn, decoder: &mut Decoder, timers: &mut Deadlines<3>) -> bool {
    loop {
        let frame = match decoder.next_frame() {
            Ok(Some(frame)) => frame,
            Ok(None) => return false,
            Err(e) => {
                session.error(e.into(), None).await;
                return true;
            }
        };
        session.session.metrics().commands.fetch_add(1, Ordering::Relaxed);
        let receipt = frame.get("receipt").map(str::to_owned);
        match session.handle(frame).await {
            Ok(Step::Continue) => {}
            Ok(Step::Connected) => {
                decoder.set_version(session.version);
                let next = tokio::time::Instant::now();
                timers.set(BEAT, session.heart_beat_out().map(|d| next + d));
            }
            Ok(Step::Disconnect) => {
                // The session ends here: its queue messages go back now, not when the client
                // gets round to closing.
                session.session.end();
                let _ = session.sender.send_close(CloseCode::NORMAL, "");
                return true;
            }
            Err(fail) => {
                session.error(fail, receipt).await;
                return true;
            }
        }
    }
}

/// [`serve_connection`]'s timers, by their index in the wait.
const SILENT: usize = 0;
const EXPIRY: usize = 1;
const BEAT: usize = 2;

/// What the loop does after a frame.
enum Step {
    Continue,
    Connected,
    Disconnect,
}

impl Conn {
    async fn send(&self, frame: &Frame) {
        let bytes = frame.to_bytes(self.version);
        self.session.metrics().bytes_out.fetch_add(bytes.len() as u64, Ordering::Relaxed);
        let _ = self.sender.send(message(bytes)).await;
    }

    /// Sends an ERROR frame, then closes.
    async fn error(&self, fail: Fail, receipt: Option<String>) {
        self.session.metrics().command_errors.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(message = %fail.message, "STOMP error");
        let mut f = Frame::new(Command::Error).header("message", fail.message.clone());
        if let Some(r) = receipt {
            f = f.header("receipt-id", r);
        }
        f.headers.extend(fail.headers);
        f = f.header("content-type", "text/plain");
        let body = if fail.detail.is_empty() { fail.message.clone() } else { fail.detail };
        self.send(&f.body(body)).await;
        let mut reason = fail.message;
        while reason.len() > 120 {
            reason.pop();
        }
        let _ = self.sender.send_close(CloseCode(fail.close), reason);
    }

    fn client(&self) -> Result<Arc<StompOutlet>, Fail> {
        self.outlet.clone().ok_or_else(|| Fail::protocol("send CONNECT first"))
    }

    async fn handle(&mut self, frame: Frame) -> Result<Step, Fail> {
        let receipt = frame.get("receipt").map(str::to_owned);
        let settles = matches!(frame.command, Command::Ack | Command::Nack | Command::Commit);
        let step = match frame.command {
            Command::Connect | Command::Stomp => return self.connect(&frame).await.map(|()| Step::Connected),
            Command::Disconnect => Step::Disconnect,
            Command::Send | Command::Ack | Command::Nack => {
                self.client()?;
                if let Some(tx) = frame.get("transaction") {
                    self.hold(tx.to_owned(), frame)?;
                } else {
                    self.apply(&frame).await?;
                }
                Step::Continue
            }
            Command::Subscribe => {
                self.subscribe(&frame).await?;
                Step::Continue
            }
            Command::Unsubscribe => {
                self.unsubscribe(&frame)?;
                Step::Continue
            }
            Command::Begin => {
                self.client()?;
                let tx = required(&frame, "transaction")?;
                let open = self.transactions.get_or_insert_with(Box::default);
                if open.contains_key(tx) {
                    return Err(Fail::protocol(format!("transaction {tx:?} has already begun")));
                }
                open.insert(tx.to_owned(), Vec::new());
                Step::Continue
            }
            Command::Commit | Command::Abort => {
                self.client()?;
                let tx = required(&frame, "transaction")?;
                let held =
                    self.transactions.as_mut().and_then(|open| open.remove(tx)).ok_or_else(|| {
                        Fail::protocol(format!("no transaction {tx:?} to {}", frame.command))
                    })?;
                if self.transactions.as_ref().is_some_and(|open| open.is_empty()) {
                    self.transactions = None;
                }
                self.transaction_frames -= held.len();
                if frame.command == Command::Commit {
                    for f in &held {
                        self.apply(f).await?;
                    }
                }
                Step::Continue
            }
            Command::Connected | Command::Message | Command::Receipt | Command::Error => {
                return Err(Fail::protocol(format!("{} is a server frame", frame.command)));
            }
        };
        if let Some(r) = receipt {
            if settles {
                // The receipt says the ACK or NACK took effect, in the broker too.
                self.session.settled().await;
            }
            self.send(&Frame::new(Command::Receipt).header("receipt-id", r)).await;
        }
        Ok(step)
    }

    async fn connect(&mut self, frame: &Frame) -> Result<(), Fail> {
        if self.outlet.is_some() {
            return Err(Fail::protocol("already connected"));
        }
        let offered: Vec<Version> = match frame.get("accept-version") {
            None => vec![Version::V1_0],
            Some(list) => list.split(',').filter_map(Version::parse).collect(),
        };
        let Some(version) = offered.into_iter().filter(|v| *v <= self.cap).max() else {
            let supported: Vec<&str> =
                Version::ALL.iter().filter(|v| **v <= self.cap).map(|v| v.as_str()).collect();
            let mut fail = Fail::protocol("unsupported STOMP version")
                .detail(format!("this server speaks STOMP {}", supported.join(", ")));
            fail.headers.push(("version".into(), supported.join(",")));
            return Err(fail);
        };
        self.version = version;
        let token = frame.get("passcode").filter(|p| !p.is_empty()).or_else(|| {
            frame
                .get("Authorization")
                .or_else(|| frame.get("authorization"))
                .map(|a| a.strip_prefix("Bearer ").or_else(|| a.strip_prefix("bearer ")).unwrap_or(a).trim())
        });
        let identity = self
            .session
            .authenticate(token, frame.get("login").unwrap_or_default())
            .map_err(|e| Fail::policy("authentication failed").detail(e.message))?;
        let (sx, sy) = self.options.heart_beat;
        if version >= Version::V1_1 {
            if let Some(hb) = frame.get("heart-beat") {
                let parsed = hb
                    .split_once(',')
                    .and_then(|(a, b)| Some((a.trim().parse::<u64>().ok()?, b.trim().parse::<u64>().ok()?)));
                let Some((cx, cy)) = parsed else {
                    return Err(Fail::protocol(format!("invalid heart-beat header {hb:?}")));
                };
                // In milliseconds, at most `u32::MAX` (49 days): 0 is none.
                let rate =
                    |a: u64, b: u64| if a == 0 || b == 0 { 0 } else { a.max(b).min(u32::MAX.into()) as u32 };
                self.heart_beat_out = rate(sx, cy);
                self.heart_beat_in = rate(cx, sy);
            }
        }
        let outlet = Arc::new(StompOutlet::new(self.session.gate(self.sender.clone()), version));
        let info = self.session.connect(identity, outlet.clone());
        let mut reply = Frame::new(Command::Connected);
        if version >= Version::V1_1 {
            reply = reply.header("version", version.as_str()).header("heart-beat", format!("{sx},{sy}"));
        }
        reply = reply
            .header("server", concat!("tether/", env!("CARGO_PKG_VERSION")))
            .header("session", info.client.clone());
        if !info.user.is_empty() {
            reply = reply.header("user-name", info.user.clone());
        }
        self.outlet = Some(outlet);
        self.send(&reply).await;
        Ok(())
    }

    /// Holds a frame in its transaction until COMMIT.
    fn hold(&mut self, tx: String, frame: Frame) -> Result<(), Fail> {
        if self.transaction_frames >= self.options.max_transaction_frames {
            return Err(Fail::policy(format!(
                "too many frames in transactions (limit {})",
                self.options.max_transaction_frames
            )));
        }
        let held = self
            .transactions
            .as_mut()
            .and_then(|open| open.get_mut(&tx))
            .ok_or_else(|| Fail::protocol(format!("no transaction {tx:?}")))?;
        held.push(frame);
        self.transaction_frames += 1;
        Ok(())
    }

    /// Carries out a SEND, ACK or NACK.
    async fn apply(&self, frame: &Frame) -> Result<(), Fail> {
        self.client()?;
        match frame.command {
            Command::Send => match destination(frame)? {
                Dest::Topic(ch) => {
                    let data = topic_data(frame)?;
                    self.session
                        .publish(&ch, data)
                        .await
                        .map_err(|e| hub_fail(&format!("cannot send to /topic/{ch}"), &e))?;
                }
                Dest::Queue(q) => {
                    let what = format!("cannot send to /queue/{q}");
                    self.session
                        .queue_send(&q, frame.body.clone(), forwarded(frame))
                        .await
                        .map_err(|e| hub_fail(&what, &e))?
                        .map_err(|e| queue_fail(&what, &e))?;
                }
            },
            _ => {
                let ack_id = frame
                    .get("id")
                    .or_else(|| frame.get("message-id"))
                    .ok_or_else(|| Fail::protocol(format!("{} frame without an id header", frame.command)))?;
                if let Some(tag) = ack_id.strip_prefix('q').and_then(|t| t.parse::<u64>().ok()) {
                    let r = self.session.queue_settle(tag, frame.command == Command::Ack);
                    r.map_err(|e| queue_fail(&format!("cannot {}", frame.command), &e))?;
                } else if !ack_id.starts_with('t') {
                    return Err(Fail::protocol(format!("{} of unknown message {ack_id:?}", frame.command)));
                }
                // Topic messages are not redelivered: their ACK and NACK have nothing to do.
            }
        }
        Ok(())
    }

    async fn subscribe(&mut self, frame: &Frame) -> Result<(), Fail> {
        let outlet = self.client()?;
        let dest = destination(frame)?;
        let sub_id = match frame.get("id") {
            Some(id) => id.to_owned(),
            None if self.version == Version::V1_0 => required(frame, "destination")?.to_owned(),
            None => return Err(Fail::protocol("SUBSCRIBE frame without an id header")),
        };
        let (used, count) = {
            let topics = outlet.topics();
            (self.queues.contains(&sub_id) || topics.has_id(&sub_id), self.queues.ids().len() + topics.len())
        };
        if used {
            return Err(Fail::protocol(format!("subscription id {sub_id:?} is already in use")));
        }
        let limit = self.session.max_channels();
        if count >= limit {
            return Err(Fail::policy(format!("too many subscriptions (limit {limit})")));
        }
        let mode = match frame.get("ack").unwrap_or("auto") {
            "auto" => AckMode::Auto,
            "client" => AckMode::Cumulative,
            "client-individual" => AckMode::Individual,
            other => return Err(Fail::protocol(format!("unknown ack mode {other:?}"))),
        };
        let id = Id::new(&sub_id);
        match &dest {
            Dest::Topic(ch) => {
                let what = format!("cannot subscribe to /topic/{ch}");
                if let Some(subs) = outlet.topics().get_mut(ch) {
                    subs.push(id);
                    return Ok(());
                }
                let history = match frame.get("history").map(str::parse::<usize>) {
                    None => 0,
                    Some(Ok(n)) => n,
                    Some(Err(_)) => return Err(Fail::protocol("history header is not a number")),
                };
                // Past publications first, then whatever came between reading them and
                // subscribing (recovered from that position), then live ones.
                let (recover, past) = match history {
                    0 => (None, Vec::new()),
                    n => match self.session.replay(ch, n).await {
                        Ok((pos, events)) if !pos.epoch.is_empty() => (Some(pos), events),
                        Ok(_) | Err(HubError::NotAvailable) => (None, Vec::new()),
                        Err(e) => return Err(hub_fail(&what, &e)),
                    },
                };
                let recovering = recover.is_some();
                self.session
                    .subscribe(
                        ch,
                        recover.map(|p| StreamPosition { offset: p.offset, epoch: p.epoch }),
                        |s| {
                            // The hub's name for the channel, not this frame's copy: one
                            // allocation for all the channel's subscribers.
                            outlet.topics().insert(s.channel.clone(), Few::one(id.clone()));
                            if !recovering || s.recovered {
                                for e in past.iter().chain(&s.publications) {
                                    outlet.send_event(&id, e);
                                }
                            }
                        },
                    )
                    .await
                    .map_err(|e| hub_fail(&what, &e))?;
            }
            Dest::Queue(q) => {
                let what = format!("cannot subscribe to /queue/{q}");
                self.session
                    .queue_subscribe(&sub_id, q, mode, outlet)
                    .map_err(|e| hub_fail(&what, &e))?
                    .map_err(|e| queue_fail(&what, &e))?;
                self.queues.insert(&sub_id);
            }
        }
        Ok(())
    }

    fn unsubscribe(&mut self, frame: &Frame) -> Result<(), Fail> {
        let outlet = self.client()?;
        let sub_id = match frame.get("id") {
            Some(id) => id.to_owned(),
            // 1.0 may name the subscription by its destination.
            None if self.version == Version::V1_0 => required(frame, "destination")?.to_owned(),
            None => return Err(Fail::protocol("UNSUBSCRIBE frame without an id header")),
        };
        if self.queues.remove(&sub_id) {
            // The queue may have dropped the consumer already (its connection closing).
            let _ = self.session.queue_unsubscribe(&sub_id);
            return Ok(());
        }
        let removed = outlet.topics().remove_id(&sub_id);
        match removed {
            Some((channel, true)) => {
                let _ = self.session.unsubscribe(&channel);
            }
            Some((_, false)) => {}
            None => return Err(Fail::protocol(format!("no subscription {sub_id:?}"))),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::{short_key, Few, Id, Topics};
    use std::sync::Arc;

    fn ids(few: &Few<Id>) -> Vec<String> {
        few.iter().map(|n| n.with_str(str::to_owned)).collect()
    }

    #[test]
    fn an_id_of_15_bytes_or_less_is_held_in_its_key_alone() {
        for id in [
            "",
            "0",
            "sub-0",
            "fifteen-bytes-x",
            "é-ünïcode",
            "sixteen-bytes-xx",
            "a-much-longer-subscription-id",
        ] {
            let short = id.len() <= 15;
            let held = Id::new(id);
            assert_eq!(matches!(held, Id::Short(_)), short, "{id:?}");
            assert_eq!(held.with_str(str::to_owned), id);
            assert!(held.is(short_key(id), id) && held.same(&Id::new(id)));
            assert!(!held.is(short_key("other"), "other") && !held.same(&Id::new("other")));
        }
        // A long id never matches a short one's key, nor the reverse.
        assert!(!Id::new("sixteen-bytes-xx").same(&Id::new("sixteen-bytes-x")));
    }

    #[test]
    fn a_few_keeps_order_through_pushes_and_removals() {
        let mut few = Few::default();
        assert!(few.is_empty());
        for id in ["sub-0", "sub-1", "a-subscription-id-longer-than-15"] {
            few.push(Id::new(id));
        }
        assert_eq!(ids(&few), ["sub-0", "sub-1", "a-subscription-id-longer-than-15"]);
        // Removing the inline first item moves the next one in.
        few.retain(|n| !n.is(short_key("sub-0"), "sub-0"));
        assert_eq!(ids(&few), ["sub-1", "a-subscription-id-longer-than-15"]);
        assert_eq!(few.first.as_ref().map(|n| n.with_str(str::to_owned)), Some("sub-1".into()));
        few.retain(|_| false);
        assert!(few.is_empty() && few.rest.is_none());
        few.push(Id::new("again"));
        assert_eq!(ids(&few), ["again"]);
    }

    #[test]
    fn topics_find_each_channel_by_short_and_long_names() {
        let mut topics = Topics::default();
        let long: Arc<str> = "a-channel-name-longer-than-15-bytes".into();
        for ch in ["news", &long, "ticker:1"] {
            topics.insert(ch.into(), Few::one(Id::new(&format!("id-{ch}"))));
        }
        assert_eq!(ids(topics.get("news").expect("news")), ["id-news"]);
        assert_eq!(ids(topics.get(&long).expect("long")), [format!("id-{long}")]);
        topics.get_mut("ticker:1").expect("ticker").push(Id::new("second"));
        assert_eq!(ids(topics.get("ticker:1").expect("ticker")), ["id-ticker:1", "second"]);
        assert_eq!(topics.len(), 4);
        assert!(topics.has_id("second") && topics.has_id(&format!("id-{long}")) && !topics.has_id("id-gone"));
        // A channel's last id takes the channel with it; another one leaves it.
        assert_eq!(topics.remove_id("id-news"), Some(("news".into(), true)));
        assert!(topics.get("news").is_none());
        assert_eq!(topics.remove_id("second"), Some(("ticker:1".into(), false)));
        assert_eq!(ids(topics.get("ticker:1").expect("ticker")), ["id-ticker:1"]);
        assert_eq!(topics.remove_id(&format!("id-{long}")), Some((long.clone(), true)));
        assert_eq!(topics.remove_id("second"), None);
        assert!(topics.get(&long).is_none() && topics.get("ticker:1").is_some());
        assert!(topics.get("ticker:2").is_none());
        assert_eq!(topics.len(), 1);
    }
}

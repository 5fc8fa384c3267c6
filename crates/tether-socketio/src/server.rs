//! The Socket.IO server: namespaces, sockets, events, acknowledgements and rooms, on
//! Engine.IO sessions.

use crate::engine::packet::Frame;
use crate::engine::{Body, Connection, Engine, EngineConfig, EngineSocket};
use crate::parser::{Decoder, Packet, PacketType};
use bytes::Bytes;
use futures_util::FutureExt as _;
use hyper::body::Incoming;
use hyper::{HeaderMap, Request, Response, Uri};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::value::RawValue;
use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, RwLock, Weak};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

type BoxFuture = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// The settings of a Socket.IO server.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Config {
    /// The Engine.IO settings (heartbeat, payload size, transports, CORS).
    pub engine: EngineConfig,
    /// How long a new connection may take to join a namespace before it is closed (45 s).
    pub connect_timeout: Duration,
    /// The most binary attachments one packet may have (10); more closes the connection.
    pub max_attachments: usize,
    /// Connection state recovery (off by default, as in socket.io): a client that comes back
    /// soon after its transport was lost gets its id, its rooms and the broadcasts it missed.
    pub recovery: Option<Recovery>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            engine: EngineConfig::default(),
            connect_timeout: Duration::from_secs(45),
            max_attachments: 10,
            recovery: None,
        }
    }
}

/// The settings of connection state recovery (socket.io 4.6's `connectionStateRecovery`).
///
/// With it, the CONNECT answer carries a private id (`pid`), and every broadcast event
/// carries an offset as its last argument, which socket.io-client remembers. A socket whose
/// transport is lost is kept for `max_disconnection_duration`; a client that reconnects in
/// time with its `pid` and last offset gets the same socket id and rooms back, then every
/// broadcast it missed, in order ([`Socket::recovered`] is true). Events sent to one socket
/// (`Socket::emit`) and events with an ack are not replayed, as in socket.io.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Recovery {
    /// How long a lost socket and the broadcasts it may miss are kept (2 minutes).
    pub max_disconnection_duration: Duration,
    /// Whether a recovered socket skips the middleware (true).
    pub skip_middlewares: bool,
    /// The most broadcasts kept per namespace for replay (10,000); older ones go first.
    pub max_packets: usize,
}

impl Default for Recovery {
    fn default() -> Self {
        Self {
            max_disconnection_duration: Duration::from_secs(120),
            skip_middlewares: true,
            max_packets: 10_000,
        }
    }
}

/// What recovery keeps per namespace: recent broadcasts, and the sockets that were lost.
#[derive(Default)]
struct RecoveryLog {
    prefix: String,
    next: u64,
    packets: VecDeque<Logged>,
    lost: HashMap<String, Lost>,
}

/// A broadcast, as replayed: its frames (the offset included) and whom it was for.
struct Logged {
    offset: String,
    at: Instant,
    frames: Vec<Frame>,
    rooms: Vec<String>,
    except: Vec<String>,
    except_socket: Option<Arc<str>>,
}

impl Logged {
    fn is_for(&self, sid: &Arc<str>, rooms: &HashSet<String>) -> bool {
        self.except_socket.as_ref() != Some(sid)
            && !self.except.iter().any(|r| rooms.contains(r))
            && (self.rooms.is_empty() || self.rooms.iter().any(|r| rooms.contains(r)))
    }
}

/// A socket whose transport was lost.
struct Lost {
    sid: Arc<str>,
    rooms: HashSet<String>,
    at: Instant,
}

impl RecoveryLog {
    fn prune(&mut self, config: &Recovery) {
        let now = Instant::now();
        let keep = |at: Instant| now.duration_since(at) <= config.max_disconnection_duration;
        while self.packets.front().is_some_and(|p| !keep(p.at)) || self.packets.len() > config.max_packets {
            self.packets.pop_front();
        }
        self.lost.retain(|_, l| keep(l.at));
    }

    /// The lost socket `pid` and what it missed after `offset`, if both are still known.
    fn restore(&mut self, config: &Recovery, pid: &str, offset: &str) -> Option<(Lost, Vec<Frame>)> {
        self.prune(config);
        let lost = self.lost.remove(pid)?;
        let from = self.packets.iter().position(|p| p.offset == offset)?;
        let missed = self
            .packets
            .iter()
            .skip(from + 1)
            .filter(|p| p.is_for(&lost.sid, &lost.rooms))
            .flat_map(|p| p.frames.iter().cloned())
            .collect();
        Some((lost, missed))
    }
}

/// The arguments of an event or an acknowledgement: JSON values, and binary attachments that
/// the JSON refers to with placeholders (added by [`Args::binary`]).
#[derive(Debug, Clone, Default)]
pub struct Args {
    json: Vec<Box<RawValue>>,
    binary: Vec<Bytes>,
}

impl Args {
    /// No arguments.
    pub fn new() -> Self {
        Self::default()
    }

    /// One argument, `value` as JSON.
    ///
    /// # Errors
    ///
    /// When `value` cannot be written as JSON (a map with non-string keys, say).
    pub fn one<T: Serialize + ?Sized>(value: &T) -> Result<Self, serde_json::Error> {
        Self::new().arg(value)
    }

    /// Adds `value` as JSON.
    ///
    /// # Errors
    ///
    /// When `value` cannot be written as JSON.
    pub fn arg<T: Serialize + ?Sized>(mut self, value: &T) -> Result<Self, serde_json::Error> {
        self.json.push(serde_json::value::to_raw_value(value)?);
        Ok(self)
    }

    /// Adds JSON as it is.
    pub fn raw(mut self, value: Box<RawValue>) -> Self {
        self.json.push(value);
        self
    }

    /// Adds a binary argument (sent as an attachment; the other side gets a buffer).
    pub fn binary(mut self, data: impl Into<Bytes>) -> Self {
        let num = self.binary.len();
        self.binary.push(data.into());
        let placeholder = format!("{{\"_placeholder\":true,\"num\":{num}}}");
        self.json.push(RawValue::from_string(placeholder).unwrap_or_else(|_| null()));
        self
    }

    /// The JSON arguments (binary ones as placeholders).
    pub fn json(&self) -> &[Box<RawValue>] {
        &self.json
    }

    /// The attachments, in placeholder order.
    pub fn attachments(&self) -> &[Bytes] {
        &self.binary
    }

    /// Argument `i` read as `T`.
    ///
    /// # Errors
    ///
    /// When there is no such argument, or it is not a `T`.
    pub fn get<T: DeserializeOwned>(&self, i: usize) -> Result<T, serde_json::Error> {
        let raw = self.json.get(i).map_or("null", |r| r.get());
        serde_json::from_str(raw)
    }

    /// The JSON array `[prefix, args...]`.
    fn array(&self, prefix: Option<&str>) -> Box<RawValue> {
        let mut out = String::from("[");
        if let Some(p) = prefix {
            out.push_str(p);
        }
        for (i, a) in self.json.iter().enumerate() {
            if i > 0 || prefix.is_some() {
                out.push(',');
            }
            out.push_str(a.get());
        }
        out.push(']');
        RawValue::from_string(out).unwrap_or_else(|_| null())
    }
}

fn null() -> Box<RawValue> {
    RawValue::from_string("null".to_owned()).expect("null is JSON")
}

/// A packet's frames: its text, then its attachments.
fn frames(packet: &Packet) -> Vec<Frame> {
    let mut out = Vec::with_capacity(1 + packet.attachments.len());
    out.push(Frame::message(&packet.encode()));
    out.extend(packet.attachments.iter().cloned().map(Frame::Binary));
    out
}

/// A broadcast's frames: the text's WebSocket frame encoded once for every recipient.
fn shared_frames(packet: &Packet) -> Vec<Frame> {
    let mut out = frames(packet);
    out[0] = Frame::prepared_message(&packet.encode());
    out
}

fn event_packet(nsp: &str, event: &str, args: &Args, id: Option<u64>) -> Packet {
    let name = serde_json::to_string(event).unwrap_or_else(|_| "\"\"".to_owned());
    let kind = if args.binary.is_empty() { PacketType::Event } else { PacketType::BinaryEvent };
    let mut p = Packet::new(kind, nsp, Some(args.array(Some(&name))));
    p.id = id;
    p.attachments.clone_from(&args.binary);
    p
}

/// A Socket.IO server. Cloning gives another handle to the same server.
#[derive(Clone)]
pub struct SocketIo(Arc<Server>);

struct Server {
    config: Config,
    namespaces: RwLock<HashMap<String, Namespace>>,
    engine: OnceLock<Arc<Engine>>,
}

impl std::fmt::Debug for SocketIo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SocketIo").field("config", &self.0.config).finish_non_exhaustive()
    }
}

impl SocketIo {
    /// A server with `config` and no namespace yet.
    pub fn new(config: Config) -> Self {
        let server = Arc::new(Server { config, namespaces: RwLock::default(), engine: OnceLock::new() });
        let weak = Arc::downgrade(&server);
        let engine = Engine::new(server.config.engine.clone(), move |conn| {
            if let Some(server) = weak.upgrade() {
                tokio::spawn(run_client(server, conn));
            }
        });
        let _ = server.engine.set(engine);
        Self(server)
    }

    /// Adds the namespace `path` (`/`, `/chat`): `on_connect` runs for every socket that
    /// joins it, after the middleware let it in; it registers the socket's handlers.
    pub fn ns(&self, path: &str, on_connect: impl Fn(Socket) + Send + Sync + 'static) -> Namespace {
        let ns = Namespace(Arc::new(NsInner {
            name: path.to_owned(),
            on_connect: Box::new(on_connect),
            middleware: RwLock::default(),
            sockets: RwLock::default(),
            rooms: RwLock::default(),
            recovery: self.0.config.recovery.clone(),
            log: Mutex::new(RecoveryLog { prefix: new_id()[..6].to_owned(), ..RecoveryLog::default() }),
        }));
        self.0
            .namespaces
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(path.to_owned(), ns.clone());
        ns
    }

    /// The namespace `path`, if there is one.
    pub fn of(&self, path: &str) -> Option<Namespace> {
        self.0.namespaces.read().unwrap_or_else(std::sync::PoisonError::into_inner).get(path).cloned()
    }

    /// The Engine.IO server underneath.
    pub fn engine(&self) -> &Arc<Engine> {
        self.0.engine.get().expect("set in new")
    }

    /// Answers a request of the server's path (say `/socket.io/`).
    pub async fn handle(&self, req: Request<Incoming>) -> Response<Body> {
        self.engine().handle(req).await
    }
}

type Middleware =
    Arc<dyn Fn(Handshake) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send>> + Send + Sync>;

/// What a client sent to join a namespace, for middleware.
#[derive(Debug, Clone)]
pub struct Handshake {
    /// The `auth` payload of the CONNECT packet (`{}` when it had none).
    pub auth: Arc<RawValue>,
    /// The URI of the request that opened the connection.
    pub uri: Uri,
    /// Its headers.
    pub headers: HeaderMap,
}

/// A namespace: its sockets and rooms.
#[derive(Clone)]
pub struct Namespace(Arc<NsInner>);

struct NsInner {
    name: String,
    on_connect: Box<dyn Fn(Socket) + Send + Sync>,
    middleware: RwLock<Vec<Middleware>>,
    sockets: RwLock<HashMap<Arc<str>, Socket>>,
    rooms: RwLock<HashMap<String, HashSet<Arc<str>>>>,
    recovery: Option<Recovery>,
    log: Mutex<RecoveryLog>,
}

impl NsInner {
    fn log(&self) -> MutexGuard<'_, RecoveryLog> {
        self.log.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl std::fmt::Debug for Namespace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Namespace").field(&self.0.name).finish()
    }
}

impl Namespace {
    /// The namespace's path.
    pub fn name(&self) -> &str {
        &self.0.name
    }

    /// Adds a middleware: it sees every [`Handshake`] before the socket joins, and refuses it
    /// with an error message (the client gets CONNECT_ERROR with `{"message": ...}`).
    pub fn middleware<F, Fut>(&self, f: F) -> &Self
    where
        F: Fn(Handshake) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), String>> + Send + 'static,
    {
        let f: Middleware = Arc::new(move |h| Box::pin(f(h)));
        self.0.middleware.write().unwrap_or_else(std::sync::PoisonError::into_inner).push(f);
        self
    }

    /// Sockets connected now.
    pub fn socket_count(&self) -> usize {
        self.0.sockets.read().unwrap_or_else(std::sync::PoisonError::into_inner).len()
    }

    /// The sockets in `room`.
    pub fn to(&self, room: impl Into<String>) -> Broadcast {
        Broadcast::new(self.0.clone()).to(room)
    }

    /// Emits to every socket of the namespace; returns how many it went to.
    pub fn emit(&self, event: &str, args: &Args) -> usize {
        Broadcast::new(self.0.clone()).emit(event, args)
    }
}

/// A broadcast being aimed: rooms to include (none: everyone), rooms and a socket to leave
/// out. One encoding is shared by every recipient.
#[derive(Debug)]
pub struct Broadcast {
    ns: Arc<NsInner>,
    rooms: Vec<String>,
    except: Vec<String>,
    except_socket: Option<Arc<str>>,
}

impl std::fmt::Debug for NsInner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Namespace").field("name", &self.name).finish_non_exhaustive()
    }
}

impl Broadcast {
    fn new(ns: Arc<NsInner>) -> Self {
        Self { ns, rooms: Vec::new(), except: Vec::new(), except_socket: None }
    }

    /// Also the sockets of `room`.
    pub fn to(mut self, room: impl Into<String>) -> Self {
        self.rooms.push(room.into());
        self
    }

    /// Not the sockets of `room`.
    pub fn except(mut self, room: impl Into<String>) -> Self {
        self.except.push(room.into());
        self
    }

    /// Sends the event; returns how many sockets it went to.
    pub fn emit(self, event: &str, args: &Args) -> usize {
        let Some(recovery) = &self.ns.recovery else {
            return self.send(&shared_frames(&event_packet(&self.ns.name, event, args, None)));
        };
        // With recovery: the offset goes last, and the broadcast into the log. The log stays
        // locked while sending, so that offsets reach every socket in log order.
        let mut log = self.ns.log();
        log.next += 1;
        let offset = format!("{}-{}", log.prefix, log.next);
        let mut with_offset = args.clone();
        with_offset.json.push(serde_json::value::to_raw_value(&offset).unwrap_or_else(|_| null()));
        let frames = shared_frames(&event_packet(&self.ns.name, event, &with_offset, None));
        log.packets.push_back(Logged {
            offset,
            at: Instant::now(),
            frames: frames.clone(),
            rooms: self.rooms.clone(),
            except: self.except.clone(),
            except_socket: self.except_socket.clone(),
        });
        log.prune(recovery);
        self.send(&frames)
    }

    fn send(&self, frames: &[Frame]) -> usize {
        let targets: Vec<Socket> = {
            let sockets = self.ns.sockets.read().unwrap_or_else(std::sync::PoisonError::into_inner);
            let rooms = self.ns.rooms.read().unwrap_or_else(std::sync::PoisonError::into_inner);
            let excluded: HashSet<&Arc<str>> = self
                .except
                .iter()
                .filter_map(|r| rooms.get(r))
                .flatten()
                .chain(self.except_socket.iter())
                .collect();
            let chosen: Box<dyn Iterator<Item = &Arc<str>>> = if self.rooms.is_empty() {
                Box::new(sockets.keys())
            } else {
                let set: HashSet<&Arc<str>> =
                    self.rooms.iter().filter_map(|r| rooms.get(r)).flatten().collect();
                Box::new(set.into_iter())
            };
            chosen.filter(|id| !excluded.contains(id)).filter_map(|id| sockets.get(id).cloned()).collect()
        };
        targets.iter().filter(|s| s.0.engine.send(frames)).count()
    }
}

type EventHandler = Arc<dyn Fn(Socket, Event) -> BoxFuture + Send + Sync>;
type DisconnectHandler = Box<dyn FnOnce(Socket, &'static str) + Send>;

/// One client in one namespace.
#[derive(Clone)]
pub struct Socket(Arc<SocketInner>);

struct SocketInner {
    id: Arc<str>,
    ns: Arc<NsInner>,
    engine: EngineSocket,
    handshake: Handshake,
    handlers: RwLock<HashMap<String, EventHandler>>,
    on_disconnect: Mutex<Option<DisconnectHandler>>,
    acks: Mutex<HashMap<u64, oneshot::Sender<Args>>>,
    next_ack: AtomicU64,
    rooms: Mutex<HashSet<String>>,
    connected: AtomicBool,
    /// The private id that recovery knows the socket by.
    pid: Option<String>,
    recovered: bool,
}

impl std::fmt::Debug for Socket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Socket").field("id", &self.0.id).field("ns", &self.0.ns.name).finish_non_exhaustive()
    }
}

/// Why waiting for an acknowledgement failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AckError {
    /// No answer in time.
    #[error("no acknowledgement in time")]
    Timeout,
    /// The socket disconnected first (or was not connected).
    #[error("socket disconnected")]
    Disconnected,
}

/// An event from a client.
#[derive(Debug)]
pub struct Event {
    name: String,
    args: Args,
    ack: Option<AckSender>,
}

impl Event {
    /// The event's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its arguments.
    pub fn args(&self) -> &Args {
        &self.args
    }

    /// Argument `i` read as `T`.
    ///
    /// # Errors
    ///
    /// When there is no such argument, or it is not a `T`.
    pub fn get<T: DeserializeOwned>(&self, i: usize) -> Result<T, serde_json::Error> {
        self.args.get(i)
    }

    /// The acknowledgement the client asked for, if it did (once).
    pub fn take_ack(&mut self) -> Option<AckSender> {
        self.ack.take()
    }

    /// The arguments, owned.
    pub fn into_args(self) -> Args {
        self.args
    }
}

/// Answers an event's acknowledgement.
#[derive(Debug)]
pub struct AckSender {
    socket: Socket,
    id: u64,
}

impl AckSender {
    /// Sends the acknowledgement with `args`; `false` if the socket is gone.
    pub fn send(self, args: &Args) -> bool {
        let kind = if args.binary.is_empty() { PacketType::Ack } else { PacketType::BinaryAck };
        let mut p = Packet::new(kind, &self.socket.0.ns.name, Some(args.array(None)));
        p.id = Some(self.id);
        p.attachments.clone_from(&args.binary);
        self.socket.send_packet(&p)
    }
}

impl Socket {
    /// The socket's id (also a room it is in).
    pub fn id(&self) -> &str {
        &self.0.id
    }

    /// Its namespace's path.
    pub fn ns(&self) -> &str {
        &self.0.ns.name
    }

    /// Its namespace (to broadcast to every socket, this one included).
    pub fn namespace(&self) -> Namespace {
        Namespace(self.0.ns.clone())
    }

    /// What the client sent to connect.
    pub fn handshake(&self) -> &Handshake {
        &self.0.handshake
    }

    /// The Engine.IO session (one per client, shared by its namespaces).
    pub fn engine(&self) -> &EngineSocket {
        &self.0.engine
    }

    /// Whether the socket was recovered: the same id and rooms as before its transport was
    /// lost, and the broadcasts it missed replayed (with [`Config::recovery`]).
    pub fn recovered(&self) -> bool {
        self.0.recovered
    }

    /// Whether it is connected.
    pub fn connected(&self) -> bool {
        self.0.connected.load(Ordering::Acquire)
    }

    /// Handles the event `name` with `handler`. An event nobody handles is dropped.
    pub fn on<F, Fut>(&self, name: &str, handler: F)
    where
        F: Fn(Socket, Event) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let h: EventHandler = Arc::new(move |s, e| Box::pin(handler(s, e)));
        self.0.handlers.write().unwrap_or_else(std::sync::PoisonError::into_inner).insert(name.to_owned(), h);
    }

    /// Runs `handler` once the socket has disconnected, with the reason (`client namespace
    /// disconnect`, `server namespace disconnect`, `transport close`).
    pub fn on_disconnect(&self, handler: impl FnOnce(Socket, &'static str) + Send + 'static) {
        *self.0.on_disconnect.lock().unwrap_or_else(std::sync::PoisonError::into_inner) =
            Some(Box::new(handler));
    }

    fn send_packet(&self, p: &Packet) -> bool {
        self.connected() && self.0.engine.send(&frames(p))
    }

    /// Emits `event` with `args`; `false` if the socket is gone.
    pub fn emit(&self, event: &str, args: &Args) -> bool {
        self.send_packet(&event_packet(&self.0.ns.name, event, args, None))
    }

    /// Emits `event` with `args` and waits for the client's acknowledgement.
    ///
    /// # Errors
    ///
    /// [`AckError::Timeout`] after `timeout`, [`AckError::Disconnected`] if the socket goes.
    pub async fn emit_with_ack(&self, event: &str, args: &Args, timeout: Duration) -> Result<Args, AckError> {
        let id = self.0.next_ack.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.0.acks.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(id, tx);
        if !self.send_packet(&event_packet(&self.0.ns.name, event, args, Some(id))) {
            self.0.acks.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(&id);
            return Err(AckError::Disconnected);
        }
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(args)) => Ok(args),
            Ok(Err(_)) => Err(AckError::Disconnected),
            Err(_) => {
                self.0.acks.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(&id);
                Err(AckError::Timeout)
            }
        }
    }

    /// Joins `room`.
    pub fn join(&self, room: impl Into<String>) {
        let room = room.into();
        if !self.connected() {
            return;
        }
        self.0
            .ns
            .rooms
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(room.clone())
            .or_default()
            .insert(self.0.id.clone());
        self.rooms().insert(room);
    }

    /// Leaves `room`.
    pub fn leave(&self, room: &str) {
        let mut rooms = self.0.ns.rooms.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(members) = rooms.get_mut(room) {
            members.remove(&self.0.id);
            if members.is_empty() {
                rooms.remove(room);
            }
        }
        drop(rooms);
        self.rooms().remove(room);
    }

    fn rooms(&self) -> MutexGuard<'_, HashSet<String>> {
        self.0.rooms.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The rooms it is in.
    pub fn room_names(&self) -> Vec<String> {
        self.rooms().iter().cloned().collect()
    }

    /// The other sockets of `room` (not this one).
    pub fn to(&self, room: impl Into<String>) -> Broadcast {
        let mut b = Broadcast::new(self.0.ns.clone()).to(room);
        b.except_socket = Some(self.0.id.clone());
        b
    }

    /// Every other socket of the namespace.
    pub fn broadcast(&self) -> Broadcast {
        let mut b = Broadcast::new(self.0.ns.clone());
        b.except_socket = Some(self.0.id.clone());
        b
    }

    /// Leaves the namespace, telling the client (DISCONNECT); with `close`, ends the whole
    /// connection (every namespace).
    pub fn disconnect(&self, close: bool) {
        if self.connected() {
            let _ = self.0.engine.send(&frames(&Packet::new(PacketType::Disconnect, &self.0.ns.name, None)));
        }
        self.gone("server namespace disconnect");
        if close {
            self.0.engine.close();
        }
    }

    /// Removes the socket from its namespace and rooms, fails its pending acks, and runs its
    /// disconnect handler. Once.
    fn gone(&self, reason: &'static str) {
        if !self.0.connected.swap(false, Ordering::AcqRel) {
            return;
        }
        let rooms: Vec<String> = self.rooms().drain().collect();
        if let (Some(recovery), Some(pid), "transport close") = (&self.0.ns.recovery, &self.0.pid, reason) {
            let mut log = self.0.ns.log();
            log.prune(recovery);
            let kept =
                Lost { sid: self.0.id.clone(), rooms: rooms.iter().cloned().collect(), at: Instant::now() };
            log.lost.insert(pid.clone(), kept);
        }
        {
            let mut all = self.0.ns.rooms.write().unwrap_or_else(std::sync::PoisonError::into_inner);
            for r in rooms {
                if let Some(m) = all.get_mut(&r) {
                    m.remove(&self.0.id);
                    if m.is_empty() {
                        all.remove(&r);
                    }
                }
            }
        }
        self.0.ns.sockets.write().unwrap_or_else(std::sync::PoisonError::into_inner).remove(&self.0.id);
        self.0.acks.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clear();
        let handler = self.0.on_disconnect.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
        if let Some(h) = handler {
            h(self.clone(), reason);
        }
    }

    /// An event or an ack from the client.
    fn on_packet(&self, p: Packet) {
        let args = |data: Option<Box<RawValue>>, attachments: Vec<Bytes>| {
            let json: Vec<Box<RawValue>> =
                data.and_then(|d| serde_json::from_str(d.get()).ok()).unwrap_or_default();
            Args { json, binary: attachments }
        };
        match p.kind {
            PacketType::Event | PacketType::BinaryEvent => {
                let mut all = args(p.data, p.attachments);
                if all.json.is_empty() {
                    return;
                }
                let first = all.json.remove(0);
                // A number is a valid event name too (socket.io-parser allows it).
                let name =
                    serde_json::from_str::<String>(first.get()).unwrap_or_else(|_| first.get().to_owned());
                let handler = self
                    .0
                    .handlers
                    .read()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .get(&name)
                    .cloned();
                let Some(handler) = handler else { return };
                let ack = p.id.map(|id| AckSender { socket: self.clone(), id });
                let mut fut = handler(self.clone(), Event { name, args: all, ack });
                // Handlers that finish at once run in order, here; the rest go on in a task.
                if (&mut fut).now_or_never().is_none() {
                    tokio::spawn(fut);
                }
            }
            PacketType::Ack | PacketType::BinaryAck => {
                let Some(id) = p.id else { return };
                let waiting =
                    self.0.acks.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(&id);
                if let Some(tx) = waiting {
                    let _ = tx.send(args(p.data, p.attachments));
                }
            }
            _ => {}
        }
    }
}

fn new_id() -> Arc<str> {
    use base64::Engine as _;
    let mut bytes = [0u8; 15];
    let _ = getrandom::getrandom(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes).into()
}

/// One client: its Engine.IO session, the namespaces it joined, packets read in order.
async fn run_client(server: Arc<Server>, mut conn: Connection) {
    let mut decoder = Decoder::new(server.config.max_attachments);
    let mut sockets: HashMap<String, Socket> = HashMap::new();
    let mut ever_connected = false;
    let deadline = tokio::time::sleep(server.config.connect_timeout);
    tokio::pin!(deadline);
    let weak: Weak<Server> = Arc::downgrade(&server);
    drop(server);
    loop {
        let data = tokio::select! {
            d = conn.messages.recv() => d,
            () = &mut deadline, if !ever_connected => {
                conn.socket.close();
                break;
            }
        };
        let Some(data) = data else { break };
        let packet = match decoder.feed(data) {
            Ok(Some(p)) => p,
            Ok(None) => continue,
            Err(e) => {
                tracing::debug!(sid = conn.socket.sid(), "socket.io: {e}; closing");
                conn.socket.close();
                break;
            }
        };
        sockets.retain(|_, s| s.connected());
        let known = sockets.get(&packet.nsp).cloned();
        match (packet.kind, known) {
            (PacketType::Connect, None) => {
                let Some(server) = weak.upgrade() else { break };
                if let Some(s) = connect(&server, &conn, packet).await {
                    ever_connected = true;
                    sockets.insert(s.ns().to_owned(), s);
                }
            }
            (PacketType::Disconnect, Some(s)) => s.gone("client namespace disconnect"),
            (
                PacketType::Event | PacketType::BinaryEvent | PacketType::Ack | PacketType::BinaryAck,
                Some(s),
            ) => {
                s.on_packet(packet);
            }
            // CONNECT to a namespace already joined, anything else for one not joined, or a
            // CONNECT_ERROR (only servers send it): the state is not what the protocol allows.
            _ => {
                tracing::debug!(sid = conn.socket.sid(), "socket.io: packet in an invalid state; closing");
                conn.socket.close();
                break;
            }
        }
    }
    conn.socket.close();
    for s in sockets.values() {
        s.gone("transport close");
    }
}

/// A CONNECT: the namespace, its middleware, then the socket.
async fn connect(server: &Server, conn: &Connection, packet: Packet) -> Option<Socket> {
    let ns =
        server.namespaces.read().unwrap_or_else(std::sync::PoisonError::into_inner).get(&packet.nsp).cloned();
    let refuse = |message: &str| {
        let _ = conn.socket.send(&frames(&Packet::connect_error(&packet.nsp, message, None)));
    };
    let Some(ns) = ns else {
        refuse("Invalid namespace");
        return None;
    };
    let auth: Arc<RawValue> = packet.data.map_or_else(
        || Arc::from(RawValue::from_string("{}".to_owned()).unwrap_or_else(|_| null())),
        Arc::from,
    );
    let handshake = Handshake { auth, uri: conn.uri.clone(), headers: conn.headers.clone() };
    let restored = ns.0.recovery.as_ref().and_then(|config| {
        #[derive(serde::Deserialize)]
        struct Ids {
            pid: String,
            offset: String,
        }
        let ids: Ids = serde_json::from_str(handshake.auth.get()).ok()?;
        ns.0.log().restore(config, &ids.pid, &ids.offset).map(|(lost, missed)| (ids.pid, lost, missed))
    });
    let recovered = restored.is_some();
    let skip = recovered && ns.0.recovery.as_ref().is_some_and(|r| r.skip_middlewares);
    if !skip {
        let middleware = ns.0.middleware.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        for m in middleware {
            if let Err(message) = m(handshake.clone()).await {
                refuse(&message);
                return None;
            }
        }
    }
    let (id, pid, rooms, missed) = match restored {
        Some((pid, lost, missed)) => (lost.sid, Some(pid), lost.rooms, missed),
        None => (new_id(), ns.0.recovery.as_ref().map(|_| new_id().to_string()), HashSet::new(), Vec::new()),
    };
    let socket = Socket(Arc::new(SocketInner {
        id: id.clone(),
        ns: ns.0.clone(),
        engine: conn.socket.clone(),
        handshake,
        handlers: RwLock::default(),
        on_disconnect: Mutex::default(),
        acks: Mutex::default(),
        next_ack: AtomicU64::new(0),
        rooms: Mutex::default(),
        connected: AtomicBool::new(true),
        pid: pid.clone(),
        recovered,
    }));
    ns.0.sockets
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .insert(id.clone(), socket.clone());
    socket.join(id.to_string());
    for room in rooms {
        socket.join(room);
    }
    let reply = match &pid {
        Some(pid) => serde_json::json!({ "sid": &*id, "pid": pid }).to_string(),
        None => serde_json::json!({ "sid": &*id }).to_string(),
    };
    if !socket.send_packet(&Packet::new(PacketType::Connect, &ns.0.name, RawValue::from_string(reply).ok())) {
        socket.gone("transport close");
        return None;
    }
    if !missed.is_empty() {
        let _ = conn.socket.send(&missed);
    }
    (ns.0.on_connect)(socket.clone());
    Some(socket)
}

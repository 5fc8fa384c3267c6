//! The hub core: channels with offsets, epochs and history; subscriptions with recovery;
//! presence with join/leave events; fan-out to bounded per-connection outlets.
//!
//! The core knows no wire format. Front-ends (the JSON protocol, later STOMP) hand it an
//! [`Outlet`] per connection and encode each [`Event`] once per front-end, in the event's
//! own cache slot, so that one publication is encoded once whatever the subscriber count.

use crate::metrics::Metrics;
use crate::options::{HubOptions, NamespaceOptions};
use crate::queue::{QueueError, Queues};
use bytes::Bytes;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
use std::time::Instant;
use tether::PreparedFrame;

#[cfg(feature = "redis")]
#[path = "hub_redis.rs"]
mod redis_mode;

/// A connection's id within this hub.
pub type ClientId = u64;

/// Who a client is, as others see it in presence, join/leave and publications.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientInfo {
    /// The connection's id (unique in this hub).
    pub client: String,
    /// The user (the token's `sub`, or the name an anonymous client chose; may be empty).
    pub user: String,
}

/// What a connection may do, from its token (or anonymous).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Access {
    /// Whether the client connected without a token.
    pub anonymous: bool,
    /// Channels the token limits the client to (`None`: any the namespaces allow).
    pub channels: Option<Vec<String>>,
}

/// One message in a channel: its place in the channel's stream and its data.
#[derive(Debug, Clone)]
pub struct Publication {
    /// Position in the channel (1 for the first publication of an epoch).
    pub offset: u64,
    /// The channel's epoch when it was published.
    pub epoch: Arc<str>,
    /// The data, as the publisher sent it (for the JSON protocol: a JSON value's text).
    pub data: Bytes,
    /// The publishing client, if a client published.
    pub info: Option<Arc<ClientInfo>>,
}

/// What the hub sends to subscribers.
#[derive(Debug, Clone)]
pub enum Push {
    /// A publication.
    Publication(Publication),
    /// A client subscribed.
    Join(Arc<ClientInfo>),
    /// A client unsubscribed or disconnected.
    Leave(Arc<ClientInfo>),
}

/// Number of front-ends that can cache a whole WebSocket frame of an event.
pub const ENCODING_SLOTS: usize = 2;

/// Number of front-ends (or versions of one) that can cache a part of a message: for
/// protocols where each subscriber's message differs in a few bytes (a STOMP `MESSAGE`
/// names the subscription), the part shared by all.
pub const PART_SLOTS: usize = 3;

/// A [`Push`] in a channel, with a cache of its encodings (one slot per front-end).
#[derive(Debug)]
pub struct Event {
    /// The channel.
    pub channel: Arc<str>,
    /// What happened.
    pub push: Push,
    /// When it was published (for history expiry).
    pub time: Instant,
    encoded: [OnceLock<PreparedFrame>; ENCODING_SLOTS],
    parts: [OnceLock<Bytes>; PART_SLOTS],
}

impl Event {
    fn new(channel: Arc<str>, push: Push) -> Arc<Self> {
        Arc::new(Self {
            channel,
            push,
            time: Instant::now(),
            encoded: Default::default(),
            parts: Default::default(),
        })
    }

    /// The frame of this event for the front-end using `slot`, encoded on first use.
    pub fn encoded(&self, slot: usize, encode: impl FnOnce(&Event) -> PreparedFrame) -> &PreparedFrame {
        self.encoded[slot].get_or_init(|| encode(self))
    }

    /// The shared part of this event's message for the front-end using part `slot`,
    /// encoded on first use.
    pub fn encoded_part(&self, slot: usize, encode: impl FnOnce(&Event) -> Bytes) -> &Bytes {
        self.parts[slot].get_or_init(|| encode(self))
    }

    /// The publication, if this event is one.
    pub fn publication(&self) -> Option<&Publication> {
        match &self.push {
            Push::Publication(p) => Some(p),
            _ => None,
        }
    }
}

/// Where the hub delivers a connection's events. Implemented by each front-end.
pub trait Outlet: Send + Sync {
    /// Queues `event` for the connection. Returns `false` when the connection is too far
    /// behind (the outlet has then started disconnecting it) or gone.
    fn push(&self, event: &Arc<Event>) -> bool;
    /// Disconnects the connection with a close code and reason.
    fn disconnect(&self, code: u16, reason: &str);
}

/// Why the hub refused a command. Front-ends map these to their error codes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HubError {
    /// The channel's namespace does not exist, or the name is empty or too long.
    #[error("unknown channel")]
    UnknownChannel,
    /// The namespace or the token does not allow this.
    #[error("permission denied")]
    PermissionDenied,
    /// Already subscribed to this channel.
    #[error("already subscribed")]
    AlreadySubscribed,
    /// Not subscribed to this channel.
    #[error("not subscribed")]
    NotSubscribed,
    /// Too many channels for one connection.
    #[error("limit exceeded")]
    LimitExceeded,
    /// The namespace has presence (or history) off.
    #[error("not available in this namespace")]
    NotAvailable,
    /// The broker (Redis) cannot be reached: nothing was done; try again.
    #[error("broker unavailable")]
    Unavailable,
}

/// The hub's answer to a subscribe.
#[derive(Debug, Clone)]
pub struct Subscribed {
    /// The channel's epoch.
    pub epoch: Arc<str>,
    /// The channel's current offset.
    pub offset: u64,
    /// Whether the subscriber asked for recovery and got every missed publication.
    pub recovered: bool,
    /// Whether recovery was asked for.
    pub recovering: bool,
    /// The missed publications, oldest first (empty unless recovered).
    pub publications: Vec<Arc<Event>>,
}

/// A channel's stream position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamPosition {
    /// Offset of the last publication.
    pub offset: u64,
    /// The channel's epoch: when it changes, offsets start again and history is gone.
    pub epoch: Arc<str>,
}

struct Channel {
    /// The epoch; with a broker, that of the last publication this node saw ("" before the
    /// first).
    epoch: Arc<str>,
    /// The last offset (with a broker: the last one this node saw).
    offset: u64,
    history: VecDeque<Arc<Event>>,
    subscribers: HashMap<ClientId, Subscriber>,
    /// Subscribers waiting for the broker, and what arrived for them meanwhile.
    pending: HashMap<ClientId, Pending>,
    /// While this node fills a gap from the broker's history: what arrived meanwhile.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    syncing: Option<Vec<Arc<Event>>>,
}

impl Channel {
    fn new(epoch: Arc<str>) -> Self {
        Self {
            epoch,
            offset: 0,
            history: VecDeque::new(),
            subscribers: HashMap::new(),
            pending: HashMap::new(),
            syncing: None,
        }
    }

    fn unused(&self) -> bool {
        self.subscribers.is_empty() && self.pending.is_empty() && self.history.is_empty()
    }
}

/// A subscription: who, and where its events go (so a fan-out needs no second lookup).
struct Subscriber {
    info: Arc<ClientInfo>,
    outlet: Arc<dyn Outlet>,
    /// With a broker: the position the subscriber was told at subscribe time; it already
    /// has (or did not ask for) publications up to it.
    base: Option<(Arc<str>, u64)>,
}

impl Subscriber {
    /// Whether `event` is news to this subscriber: not its own join or leave, nor a
    /// publication at or before its base.
    fn wants(&self, event: &Event) -> bool {
        match &event.push {
            Push::Publication(p) => {
                !matches!(&self.base, Some((epoch, offset)) if *epoch == p.epoch && p.offset <= *offset)
            }
            Push::Join(info) | Push::Leave(info) => info.client != self.info.client,
        }
    }
}

/// A subscriber waiting for the broker's answer.
#[cfg_attr(not(feature = "redis"), allow(dead_code))]
struct Pending {
    info: Arc<ClientInfo>,
    outlet: Arc<dyn Outlet>,
    buffer: Vec<Arc<Event>>,
}

struct Client {
    info: Arc<ClientInfo>,
    access: Access,
    outlet: Arc<dyn Outlet>,
    channels: HashSet<Arc<str>>,
}

#[derive(Default)]
struct State {
    channels: HashMap<Arc<str>, Channel>,
    clients: HashMap<ClientId, Client>,
    /// Whether a broker decides epochs (a new channel's epoch is then unknown here).
    brokered: bool,
}

impl State {
    /// The channel named `name`, created (with a new epoch) if it does not exist, and its
    /// shared name.
    fn open_channel(&mut self, name: &str) -> (Arc<str>, &mut Channel) {
        let key: Arc<str> = match self.channels.get_key_value(name) {
            Some((k, _)) => k.clone(),
            None => name.into(),
        };
        let brokered = self.brokered;
        let ch = self
            .channels
            .entry(key.clone())
            .or_insert_with(|| Channel::new(if brokered { "".into() } else { new_epoch() }));
        (key, ch)
    }
}

/// The in-memory hub (the `memory` broker): one process, every channel in memory.
pub struct Hub {
    state: Mutex<State>,
    options: HubOptions,
    next_client: AtomicU64,
    queues: Queues,
    /// Counters for `/metrics`.
    pub metrics: Arc<Metrics>,
    /// Prefix of client ids (empty without a broker; the node's id with one).
    node: String,
    /// This hub, for the tasks it starts (set when made with a broker).
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    me: Weak<Hub>,
    #[cfg(feature = "redis")]
    redis: Option<Arc<crate::redis_broker::RedisBroker>>,
    #[cfg(feature = "redis")]
    redis_queues: Option<Arc<crate::redis_queue::RedisQueues>>,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub").field("options", &self.options).finish_non_exhaustive()
    }
}

/// A fresh epoch: 8 random bytes as hex.
pub(crate) fn new_epoch() -> Arc<str> {
    let mut b = [0u8; 8];
    if getrandom::getrandom(&mut b).is_err() {
        let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        b = (t.as_nanos() as u64).to_le_bytes();
    }
    b.iter().map(|x| format!("{x:02x}")).collect::<String>().into()
}

/// Pushes `event` to every subscriber but `except`; returns those too slow to take it (their
/// outlet is already disconnecting them).
fn deliver(
    subscribers: &HashMap<ClientId, Subscriber>,
    except: Option<ClientId>,
    event: &Arc<Event>,
    metrics: &Metrics,
) -> Vec<ClientId> {
    let mut slow = Vec::new();
    let mut delivered = 0;
    for (id, sub) in subscribers {
        if Some(*id) == except || !sub.wants(event) {
            continue;
        }
        if sub.outlet.push(event) {
            delivered += 1;
        } else {
            slow.push(*id);
        }
    }
    metrics.delivered.fetch_add(delivered, Ordering::Relaxed);
    slow
}

impl Hub {
    /// A hub with `options`.
    pub fn new(options: HubOptions) -> Self {
        let metrics = Arc::new(Metrics::default());
        metrics.broker_up.store(1, Ordering::Relaxed);
        Self {
            state: Mutex::new(State::default()),
            queues: Queues::new(options.queue_limits),
            options,
            next_client: AtomicU64::new(1),
            metrics,
            node: String::new(),
            me: Weak::new(),
            #[cfg(feature = "redis")]
            redis: None,
            #[cfg(feature = "redis")]
            redis_queues: None,
        }
    }

    /// Whether the broker is reachable (always, for the memory broker).
    pub fn broker_up(&self) -> bool {
        self.metrics.broker_up.load(Ordering::Relaxed) == 1
    }

    /// The hub's options.
    pub fn options(&self) -> &HubOptions {
        &self.options
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn namespace(&self, channel: &str) -> Result<&NamespaceOptions, HubError> {
        if channel.is_empty() || channel.len() > self.options.max_channel_length {
            return Err(HubError::UnknownChannel);
        }
        self.options.namespace_of(channel).ok_or(HubError::UnknownChannel)
    }

    /// Registers a connection. `user` may be empty.
    pub fn connect(
        &self,
        user: String,
        access: Access,
        outlet: Arc<dyn Outlet>,
    ) -> (ClientId, Arc<ClientInfo>) {
        let id = self.next_client.fetch_add(1, Ordering::Relaxed);
        let info = Arc::new(ClientInfo { client: format!("{}c{id}", self.node), user });
        let client = Client { info: info.clone(), access, outlet, channels: HashSet::new() };
        self.lock().clients.insert(id, client);
        self.metrics.connections.fetch_add(1, Ordering::Relaxed);
        (id, info)
    }

    /// Replaces a connection's access (after a token refresh).
    pub fn set_access(&self, client: ClientId, access: Access) {
        if let Some(c) = self.lock().clients.get_mut(&client) {
            c.access = access;
        }
    }

    /// The work queues.
    pub fn queues(&self) -> &Queues {
        &self.queues
    }

    /// Adds a message to the work queue `queue` (in Redis, with that broker, for a consumer
    /// on any node).
    ///
    /// # Errors
    ///
    /// [`QueueError::Full`], [`QueueError::TooManyQueues`] or [`QueueError::Unavailable`].
    pub async fn queue_send(
        &self,
        queue: &str,
        body: Bytes,
        headers: Vec<(String, String)>,
    ) -> Result<(), QueueError> {
        #[cfg(feature = "redis")]
        if let Some(redis) = &self.redis_queues {
            let r = redis.send(queue, &body, &headers, self.options.queue_limits.max_messages).await;
            if r == Err(QueueError::Unavailable) {
                self.metrics.broker_errors.fetch_add(1, Ordering::Relaxed);
            }
            return r;
        }
        self.queues.send(queue, body, headers)
    }

    /// Returns once every ACK and NACK so far has reached the broker (at once with the
    /// memory broker).
    pub async fn queues_settled(&self) {
        #[cfg(feature = "redis")]
        if let Some(redis) = &self.redis_queues {
            redis.flush().await;
        }
    }

    /// Whether `client` may consume from (or, with `send`, send to) the queue `name`.
    /// Queues follow the rules of the namespace their name is in, like channels.
    ///
    /// # Errors
    ///
    /// [`HubError::UnknownChannel`] or [`HubError::PermissionDenied`].
    pub fn check_queue(&self, client: ClientId, name: &str, send: bool) -> Result<(), HubError> {
        let ns = self.namespace(name)?;
        let state = self.lock();
        let c = state.clients.get(&client).ok_or(HubError::PermissionDenied)?;
        if send {
            return self.may_publish(c, name);
        }
        if !Self::allowed(&c.access, ns, name) {
            return Err(HubError::PermissionDenied);
        }
        Ok(())
    }

    /// Removes a connection from every channel (with leave events), every queue (its
    /// unacknowledged messages go back) and from the hub.
    pub fn disconnect(&self, client: ClientId) {
        self.queues.disconnect(client);
        let mut state = self.lock();
        let Some(c) = state.clients.remove(&client) else { return };
        self.metrics.connections.fetch_sub(1, Ordering::Relaxed);
        for channel in c.channels {
            self.leave(&mut state, &channel, client);
        }
    }

    fn leave(&self, state: &mut State, channel: &Arc<str>, client: ClientId) {
        let Some(ch) = state.channels.get_mut(channel) else { return };
        let info = match (ch.subscribers.remove(&client), ch.pending.remove(&client)) {
            (Some(sub), _) => {
                self.metrics.subscriptions.fetch_sub(1, Ordering::Relaxed);
                sub.info
            }
            (None, Some(p)) => p.info,
            (None, None) => return,
        };
        let join_leave = self.options.namespace_of(channel).is_some_and(|ns| ns.join_leave);
        if join_leave && !state.brokered {
            let event = Event::new(channel.clone(), Push::Leave(info.clone()));
            let slow = deliver(&ch.subscribers, None, &event, &self.metrics);
            self.drop_slow(state, slow);
        }
        self.maybe_drop_channel(state, channel);
        self.left(channel, info);
    }

    /// Tells the broker (if any) that `info` left `channel`.
    fn left(&self, _channel: &Arc<str>, _info: Arc<ClientInfo>) {
        #[cfg(feature = "redis")]
        self.left_redis(_channel, Some(_info));
    }

    /// Drops a channel with no subscribers and no history left: its next use starts a new
    /// epoch.
    fn maybe_drop_channel(&self, state: &mut State, channel: &Arc<str>) {
        if state.channels.get(channel).is_some_and(Channel::unused) {
            state.channels.remove(channel);
        }
    }

    fn allowed(access: &Access, ns: &NamespaceOptions, channel: &str) -> bool {
        if access.anonymous && !ns.allow_anonymous {
            return false;
        }
        access.channels.as_ref().map_or(true, |list| list.iter().any(|c| c == channel))
    }

    /// Subscribes a connection, recovering from `recover` when given. `on_subscribed` runs
    /// before any later event reaches the connection's outlet, so a front-end that queues
    /// its reply there keeps the order: reply, missed publications, then new events.
    ///
    /// # Errors
    ///
    /// [`HubError`] for an unknown channel, no permission, a second subscription or too
    /// many channels.
    pub async fn subscribe(
        &self,
        client: ClientId,
        channel: &str,
        recover: Option<StreamPosition>,
        on_subscribed: impl FnOnce(&Subscribed),
    ) -> Result<(), HubError> {
        #[cfg(feature = "redis")]
        if let Some(broker) = &self.redis {
            return self.subscribe_redis(broker, client, channel, recover, on_subscribed).await;
        }
        self.subscribe_memory(client, channel, recover, on_subscribed)
    }

    fn subscribe_memory(
        &self,
        client: ClientId,
        channel: &str,
        recover: Option<StreamPosition>,
        on_subscribed: impl FnOnce(&Subscribed),
    ) -> Result<(), HubError> {
        let ns = self.namespace(channel)?;
        let mut state = self.lock();
        let state = &mut *state;
        let c = self.may_subscribe(state, client, ns, channel)?;
        let sub = Subscriber { info: c.info.clone(), outlet: c.outlet.clone(), base: None };
        let (name, ch) = state.open_channel(channel);
        expire(ch, ns, Instant::now());
        let mut result = Subscribed {
            epoch: ch.epoch.clone(),
            offset: ch.offset,
            recovered: false,
            recovering: recover.is_some(),
            publications: Vec::new(),
        };
        if let Some(pos) = recover {
            if pos.epoch == ch.epoch && pos.offset <= ch.offset {
                let first =
                    ch.history.front().and_then(|e| e.publication()).map_or(ch.offset + 1, |p| p.offset);
                if pos.offset + 1 >= first {
                    result.publications = ch
                        .history
                        .iter()
                        .filter(|e| e.publication().is_some_and(|p| p.offset > pos.offset))
                        .cloned()
                        .collect();
                    result.recovered = true;
                }
            }
            self.count_recovery(result.recovered);
        }
        let slow = if ns.join_leave {
            let event = Event::new(name.clone(), Push::Join(sub.info.clone()));
            deliver(&ch.subscribers, None, &event, &self.metrics)
        } else {
            Vec::new()
        };
        ch.subscribers.insert(client, sub);
        self.metrics.subscriptions.fetch_add(1, Ordering::Relaxed);
        if let Some(c) = state.clients.get_mut(&client) {
            c.channels.insert(name);
        }
        on_subscribed(&result);
        self.drop_slow(state, slow);
        Ok(())
    }

    /// Unsubscribes a connection (with a leave event where the namespace has them).
    ///
    /// # Errors
    ///
    /// [`HubError::NotSubscribed`].
    pub fn unsubscribe(&self, client: ClientId, channel: &str) -> Result<(), HubError> {
        let mut state = self.lock();
        let c = state.clients.get_mut(&client).ok_or(HubError::NotSubscribed)?;
        let name = c.channels.take(channel).ok_or(HubError::NotSubscribed)?;
        self.leave(&mut state, &name, client);
        Ok(())
    }

    /// The client, if it may subscribe to `channel` (in namespace `ns`): allowed, not
    /// subscribed already, under the channel limit.
    fn may_subscribe<'a>(
        &self,
        state: &'a State,
        client: ClientId,
        ns: &NamespaceOptions,
        channel: &str,
    ) -> Result<&'a Client, HubError> {
        let c = state.clients.get(&client).ok_or(HubError::PermissionDenied)?;
        if !Self::allowed(&c.access, ns, channel) {
            return Err(HubError::PermissionDenied);
        }
        if c.channels.contains(channel) {
            return Err(HubError::AlreadySubscribed);
        }
        if c.channels.len() >= self.options.max_channels_per_connection {
            return Err(HubError::LimitExceeded);
        }
        Ok(c)
    }

    fn count_recovery(&self, recovered: bool) {
        let counter = if recovered { &self.metrics.recovered } else { &self.metrics.recovery_failed };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// The publishing client's info, if it may publish to `channel`.
    fn publisher(&self, state: &State, client: ClientId, channel: &str) -> Result<Arc<ClientInfo>, HubError> {
        let c = state.clients.get(&client).ok_or(HubError::PermissionDenied)?;
        self.may_publish(c, channel)?;
        Ok(c.info.clone())
    }

    fn may_publish(&self, c: &Client, channel: &str) -> Result<(), HubError> {
        let ns = self.namespace(channel)?;
        if !ns.allow_publish || !Self::allowed(&c.access, ns, channel) {
            return Err(HubError::PermissionDenied);
        }
        Ok(())
    }

    /// Whether `client` may publish to `channel`.
    ///
    /// # Errors
    ///
    /// [`HubError::UnknownChannel`] or [`HubError::PermissionDenied`].
    pub fn check_publish(&self, client: ClientId, channel: &str) -> Result<(), HubError> {
        self.publisher(&self.lock(), client, channel).map(|_| ())
    }

    /// Publishes `data` to `channel` for a client: checked against the namespace and the
    /// client's access, then as [`publish`](Self::publish), with the client's info.
    ///
    /// # Errors
    ///
    /// [`HubError::UnknownChannel`] or [`HubError::PermissionDenied`].
    pub async fn publish_from(
        &self,
        client: ClientId,
        channel: &str,
        data: Bytes,
    ) -> Result<StreamPosition, HubError> {
        #[cfg(feature = "redis")]
        if let Some(broker) = &self.redis {
            let info = self.publisher(&self.lock(), client, channel)?;
            return self.publish_redis(broker, channel, data, Some(info)).await;
        }
        let mut state = self.lock();
        let info = self.publisher(&state, client, channel)?;
        self.publish_locked(&mut state, channel, data, Some(info))
    }

    /// Counts a broker failure.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    fn counted<T>(&self, r: Result<T, HubError>) -> Result<T, HubError> {
        if r.as_ref().is_err_and(|e| *e == HubError::Unavailable) {
            self.metrics.broker_errors.fetch_add(1, Ordering::Relaxed);
        }
        r
    }

    /// Publishes `data` to `channel`: appended to history (where kept) and pushed to every
    /// subscriber, in offset order. For the server API, which may publish anywhere in a
    /// known namespace; clients go through [`publish_from`](Self::publish_from).
    ///
    /// # Errors
    ///
    /// [`HubError::UnknownChannel`].
    pub async fn publish(
        &self,
        channel: &str,
        data: Bytes,
        info: Option<Arc<ClientInfo>>,
    ) -> Result<StreamPosition, HubError> {
        #[cfg(feature = "redis")]
        if let Some(broker) = &self.redis {
            return self.publish_redis(broker, channel, data, info).await;
        }
        self.publish_locked(&mut self.lock(), channel, data, info)
    }

    fn publish_locked(
        &self,
        state: &mut State,
        channel: &str,
        data: Bytes,
        info: Option<Arc<ClientInfo>>,
    ) -> Result<StreamPosition, HubError> {
        let ns = self.namespace(channel)?;
        let keeps_history = ns.history_size > 0;
        let exists = state.channels.contains_key(channel);
        self.metrics.published.fetch_add(1, Ordering::Relaxed);
        if !exists && !keeps_history {
            // Nobody listens and nothing is kept: the offset still moves, in a channel
            // that exists only for this publication.
            return Ok(StreamPosition { offset: 1, epoch: new_epoch() });
        }
        let (name, ch) = state.open_channel(channel);
        expire(ch, ns, Instant::now());
        ch.offset += 1;
        let position = StreamPosition { offset: ch.offset, epoch: ch.epoch.clone() };
        let publication = Publication { offset: ch.offset, epoch: ch.epoch.clone(), data, info };
        let event = Event::new(name.clone(), Push::Publication(publication));
        if keeps_history {
            ch.history.push_back(event.clone());
            while ch.history.len() > ns.history_size {
                ch.history.pop_front();
            }
        }
        let slow = deliver(&ch.subscribers, None, &event, &self.metrics);
        self.drop_slow(state, slow);
        if !exists {
            self.maybe_drop_channel(state, &name);
        }
        Ok(position)
    }

    /// Drops connections that fell behind from every channel at once (no leave events:
    /// their outlets are already closing them); presence no longer lists them.
    fn drop_slow(&self, state: &mut State, slow: Vec<ClientId>) {
        for id in slow {
            let Some(c) = state.clients.remove(&id) else { continue };
            self.metrics.slow_disconnects.fetch_add(1, Ordering::Relaxed);
            self.metrics.connections.fetch_sub(1, Ordering::Relaxed);
            for channel in c.channels {
                if let Some(ch) = state.channels.get_mut(&channel) {
                    if ch.subscribers.remove(&id).is_some() {
                        self.metrics.subscriptions.fetch_sub(1, Ordering::Relaxed);
                    }
                    ch.pending.remove(&id);
                }
                self.maybe_drop_channel(state, &channel);
                self.left(&channel, c.info.clone());
            }
        }
    }

    /// Checks that `asker` (a client; `None` for the server API) is subscribed to `channel`.
    fn check_asker(state: &State, asker: Option<ClientId>, channel: &str) -> Result<(), HubError> {
        match asker {
            Some(id) if !state.clients.get(&id).is_some_and(|c| c.channels.contains(channel)) => {
                Err(HubError::NotSubscribed)
            }
            _ => Ok(()),
        }
    }

    /// Who is subscribed to `channel`. A client (`asker`) must be subscribed itself; the
    /// server API (`None`) may ask about any channel.
    ///
    /// # Errors
    ///
    /// [`HubError::UnknownChannel`], [`HubError::NotAvailable`] where presence is off, or
    /// [`HubError::NotSubscribed`].
    pub async fn presence(
        &self,
        channel: &str,
        asker: Option<ClientId>,
    ) -> Result<Vec<Arc<ClientInfo>>, HubError> {
        if !self.namespace(channel)?.presence {
            return Err(HubError::NotAvailable);
        }
        #[cfg(feature = "redis")]
        if let Some(broker) = &self.redis {
            Self::check_asker(&self.lock(), asker, channel)?;
            return self.counted(broker.presence(channel).await);
        }
        let state = self.lock();
        Self::check_asker(&state, asker, channel)?;
        let mut list: Vec<Arc<ClientInfo>> = state
            .channels
            .get(channel)
            .map(|ch| ch.subscribers.values().map(|s| s.info.clone()).collect())
            .unwrap_or_default();
        list.sort_by(|a, b| a.client.cmp(&b.client));
        Ok(list)
    }

    /// The last `limit` publications of `channel` after offset `since` (all kept ones when
    /// `since` is `None`), with the channel's position. `asker` as for
    /// [`presence`](Self::presence).
    ///
    /// # Errors
    ///
    /// [`HubError::UnknownChannel`], [`HubError::NotAvailable`] without history, or
    /// [`HubError::NotSubscribed`].
    pub async fn history(
        &self,
        channel: &str,
        limit: usize,
        since: Option<u64>,
        asker: Option<ClientId>,
    ) -> Result<(StreamPosition, Vec<Arc<Event>>), HubError> {
        let ns = self.namespace(channel)?;
        if ns.history_size == 0 {
            return Err(HubError::NotAvailable);
        }
        #[cfg(feature = "redis")]
        if let Some(broker) = &self.redis {
            Self::check_asker(&self.lock(), asker, channel)?;
            return self.history_redis(broker, channel, limit, since, ns).await;
        }
        let mut state = self.lock();
        Self::check_asker(&state, asker, channel)?;
        let Some(ch) = state.channels.get_mut(channel) else {
            return Ok((StreamPosition { offset: 0, epoch: "".into() }, Vec::new()));
        };
        expire(ch, ns, Instant::now());
        let pos = StreamPosition { offset: ch.offset, epoch: ch.epoch.clone() };
        let kept: Vec<Arc<Event>> = ch
            .history
            .iter()
            .filter(|e| since.map_or(true, |s| e.publication().is_some_and(|p| p.offset > s)))
            .cloned()
            .collect();
        let skip = kept.len().saturating_sub(limit);
        Ok((pos, kept.into_iter().skip(skip).collect()))
    }

    /// Every channel with subscribers or history, with its subscriber count, by name.
    pub fn channels(&self) -> Vec<(String, usize)> {
        let state = self.lock();
        let mut list: Vec<(String, usize)> =
            state.channels.iter().map(|(name, ch)| (name.to_string(), ch.subscribers.len())).collect();
        list.sort();
        list
    }

    /// Channels in use and subscriptions per namespace ("" for the default one), by name.
    pub fn namespace_counts(&self) -> Vec<(String, usize, usize)> {
        let state = self.lock();
        let mut counts: HashMap<&str, (usize, usize)> = HashMap::new();
        for (name, ch) in &state.channels {
            let e = counts.entry(HubOptions::namespace_name(name)).or_default();
            e.0 += 1;
            e.1 += ch.subscribers.len();
        }
        let mut rows: Vec<(String, usize, usize)> =
            counts.into_iter().map(|(ns, (c, s))| (ns.to_owned(), c, s)).collect();
        rows.sort();
        rows
    }

    /// Disconnects every connection that `select` picks with `code` and `reason`; returns
    /// how many.
    fn disconnect_where(&self, select: impl Fn(&Client) -> bool, code: u16, reason: &str) -> usize {
        let outlets: Vec<Arc<dyn Outlet>> =
            self.lock().clients.values().filter(|c| select(c)).map(|c| c.outlet.clone()).collect();
        for o in &outlets {
            o.disconnect(code, reason);
        }
        outlets.len()
    }

    /// Disconnects every connection of `user` with `code` and `reason`; returns how many.
    pub fn disconnect_user(&self, user: &str, code: u16, reason: &str) -> usize {
        self.disconnect_where(|c| c.info.user == user, code, reason)
    }

    /// Disconnects every connection (shutdown).
    pub fn disconnect_all(&self, code: u16, reason: &str) -> usize {
        self.disconnect_where(|_| true, code, reason)
    }

    /// Drops expired history everywhere, and channels left with nothing (a periodic task
    /// calls this; a dropped channel starts a new epoch when used again).
    pub fn sweep(&self) {
        let mut state = self.lock();
        let now = Instant::now();
        let options = &self.options;
        state.channels.retain(|name, ch| {
            if let Some(ns) = options.namespace_of(name) {
                expire(ch, ns, now);
            }
            !ch.unused()
        });
    }
}

/// Drops publications older than the namespace's TTL.
fn expire(ch: &mut Channel, ns: &NamespaceOptions, now: Instant) {
    while ch.history.front().is_some_and(|e| now.duration_since(e.time) > ns.history_ttl) {
        ch.history.pop_front();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    /// Runs a memory-hub future (it never waits).
    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
    }

    fn subscribe(hub: &Hub, id: ClientId, channel: &str) -> Result<(), HubError> {
        block_on(hub.subscribe(id, channel, None, |_| {}))
    }

    /// Counts encodes, as a front-end's outlet would encode.
    struct Counting {
        encodes: Arc<AtomicUsize>,
        frames: Mutex<Vec<PreparedFrame>>,
    }

    impl Outlet for Counting {
        fn push(&self, event: &Arc<Event>) -> bool {
            let frame = event.encoded(0, |_| {
                self.encodes.fetch_add(1, Ordering::Relaxed);
                PreparedFrame::binary(b"encoded")
            });
            self.frames.lock().unwrap().push(frame.clone());
            true
        }
        fn disconnect(&self, _: u16, _: &str) {}
    }

    #[test]
    fn a_publication_is_encoded_once_for_all_subscribers() {
        let mut options = HubOptions::default();
        options.default_namespace.allow_anonymous = true;
        let hub = Hub::new(options);
        let encodes = Arc::new(AtomicUsize::new(0));
        let mut outlets = Vec::new();
        for _ in 0..100 {
            let outlet = Arc::new(Counting { encodes: encodes.clone(), frames: Mutex::new(Vec::new()) });
            let access = Access { anonymous: true, channels: None };
            let (id, _) = hub.connect(String::new(), access, outlet.clone());
            subscribe(&hub, id, "room").unwrap();
            outlets.push(outlet);
        }
        block_on(hub.publish("room", Bytes::from_static(b"1"), None)).unwrap();
        assert_eq!(encodes.load(Ordering::Relaxed), 1);
        // Every outlet holds the very same bytes (a shared buffer, not a copy).
        let first = outlets[0].frames.lock().unwrap()[0].wire().as_ptr();
        assert!(outlets.iter().all(|o| o.frames.lock().unwrap()[0].wire().as_ptr() == first));
    }

    #[test]
    fn tokens_limit_channels() {
        let mut options = HubOptions::default();
        options.default_namespace.allow_publish = true;
        let hub = Hub::new(options);
        let outlet = Arc::new(Counting { encodes: Arc::default(), frames: Mutex::new(Vec::new()) });
        let access = Access { anonymous: false, channels: Some(vec!["mine".into()]) };
        let (id, _) = hub.connect("u".into(), access, outlet);
        assert_eq!(subscribe(&hub, id, "other"), Err(HubError::PermissionDenied));
        assert_eq!(hub.check_publish(id, "other"), Err(HubError::PermissionDenied));
        subscribe(&hub, id, "mine").unwrap();
        hub.check_publish(id, "mine").unwrap();
    }
}

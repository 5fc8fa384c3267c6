//! The local fan-out: which connections of this node subscribe to what, and what reaches
//! them, in order. Every publication, join and leave comes from the broker through
//! [`BrokerEvents`], whichever broker it is; the hub never delivers its own publications
//! directly, so every subscriber sees one order.
//!
//! - A subscriber is first *pending*: the node subscribes to the channel in the broker,
//!   then reads the position (and what to recover). What arrives meanwhile is buffered; at
//!   the end the reply goes out, then the buffered events after the position, then live
//!   ones.
//! - The node tracks the last offset it saw per channel. A publication that skips offsets,
//!   or comes in a new epoch, or a reconnect to the broker, makes the node *sync* the
//!   channel: it buffers new events, reads what it missed from history, delivers it in
//!   order, then the buffer. If history cannot fill the gap, the channel's subscribers here
//!   are closed with 4011 so that they resubscribe and recover (or learn they cannot).
//!
//! Lock order: a broker may hold its own lock while it calls [`BrokerEvents`], which take
//! the hub's state lock; so the hub never calls the broker while it holds that lock, and
//! broker calls that follow an event are run after it (see [`Shared::after`]).

use super::event::{ClientId, ClientInfo, Event, HubError, Publication, Push, StreamPosition};
use super::queue::{Arrival, QueueError, Queues};
use super::{Access, Outlet, Subscribed};
use crate::broker::{BoxFuture, Broker, BrokerEvents, Entry, Read, Since, Unused};
use crate::codes::close;
use crate::metrics::Metrics;
use crate::options::HubOptions;
use bytes::Bytes;
use futures_util::FutureExt as _;
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

pub(super) struct Channel {
    /// The epoch of the last publication this node saw ("" before the first).
    pub(super) epoch: Arc<str>,
    /// The last offset this node saw.
    pub(super) offset: u64,
    pub(super) subscribers: HashMap<ClientId, Subscriber>,
    /// Subscribers waiting for the broker, and what arrived for them meanwhile.
    pub(super) pending: HashMap<ClientId, Pending>,
    /// While this node fills a gap from the broker's history: what arrived meanwhile.
    syncing: Option<Vec<Arc<Event>>>,
    /// Events taken in order and not yet pushed to `subscribers` (see [`Shared::pump`]).
    batch: Vec<Arc<Event>>,
}

impl Channel {
    fn new() -> Self {
        Self {
            epoch: "".into(),
            offset: 0,
            subscribers: HashMap::new(),
            pending: HashMap::new(),
            syncing: None,
            batch: Vec::new(),
        }
    }

    /// Pushes the batch to the subscribers; returns those too slow to take it.
    fn settle(&mut self, metrics: &Metrics) -> Vec<ClientId> {
        if self.batch.is_empty() {
            return Vec::new();
        }
        let slow = deliver(&self.subscribers, &self.batch, metrics);
        // Cleared, not dropped: a busy channel batches again soon, in the same room.
        self.batch.clear();
        slow
    }

    pub(super) fn unused(&self) -> bool {
        self.subscribers.is_empty() && self.pending.is_empty()
    }
}

/// A subscription: who, and where its events go (so a fan-out needs no second lookup).
pub(super) struct Subscriber {
    pub(super) info: Arc<ClientInfo>,
    outlet: Arc<dyn Outlet>,
    /// The position the subscriber was told at subscribe time; it already has (or did not
    /// ask for) publications up to it.
    base: (Arc<str>, u64),
}

impl Subscriber {
    /// Whether `event` is news to this subscriber: not its own join or leave, nor a
    /// publication at or before its base.
    fn wants(&self, event: &Event) -> bool {
        match &event.push {
            // The offset first: a live publication is past the base, so the epochs (strings)
            // are compared only for what was read at subscribe time.
            Push::Publication(p) => !(p.offset <= self.base.1 && self.base.0 == p.epoch),
            Push::Join(info) | Push::Leave(info) => info.client != self.info.client,
        }
    }
}

/// A subscriber waiting for the broker's answer.
pub(super) struct Pending {
    pub(super) info: Arc<ClientInfo>,
    outlet: Arc<dyn Outlet>,
    buffer: Vec<Arc<Event>>,
}

pub(super) struct Client {
    pub(super) info: Arc<ClientInfo>,
    pub(super) access: Access,
    pub(super) outlet: Arc<dyn Outlet>,
    pub(super) channels: ChannelSet,
}

/// The channels one client is in: a few, so a list (a hash set's table costs an idle
/// connection more than the names it holds), exactly as long as it is (a `Vec`'s first
/// push makes room for four, and its capacity is one more word in every connection).
#[derive(Default)]
pub(super) struct ChannelSet(Box<[Arc<str>]>);

impl ChannelSet {
    pub(super) fn insert(&mut self, name: Arc<str>) {
        if !self.contains(&name) {
            let mut list = std::mem::take(&mut self.0).into_vec();
            list.reserve_exact(1);
            list.push(name);
            self.0 = list.into_boxed_slice();
        }
    }

    pub(super) fn contains(&self, name: &str) -> bool {
        self.0.iter().any(|c| &**c == name)
    }

    /// Removes `name`, returning the name as stored.
    pub(super) fn take(&mut self, name: &str) -> Option<Arc<str>> {
        let at = self.0.iter().position(|c| &**c == name)?;
        let mut list = std::mem::take(&mut self.0).into_vec();
        let name = list.swap_remove(at);
        self.0 = list.into_boxed_slice();
        Some(name)
    }

    pub(super) fn remove(&mut self, name: &str) {
        let _ = self.take(name);
    }

    pub(super) fn len(&self) -> usize {
        self.0.len()
    }
}

impl IntoIterator for ChannelSet {
    type Item = Arc<str>;
    type IntoIter = std::vec::IntoIter<Arc<str>>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.into_vec().into_iter()
    }
}

#[derive(Default)]
pub(super) struct State {
    pub(super) channels: HashMap<Arc<str>, Channel>,
    pub(super) clients: HashMap<ClientId, Client>,
    /// The channels with a batch, in the order their batches began; not empty while a
    /// pump task is on its way.
    batched: Vec<Arc<str>>,
}

impl State {
    /// The channel named `name`, created if it does not exist, and its shared name.
    pub(super) fn open_channel(&mut self, name: &str) -> (Arc<str>, &mut Channel) {
        let key: Arc<str> = match self.channels.get_key_value(name) {
            Some((k, _)) => k.clone(),
            None => name.into(),
        };
        let ch = self.channels.entry(key.clone()).or_insert_with(Channel::new);
        (key, ch)
    }
}

/// A client that left a channel here: what the broker must hear after the lock is gone.
pub(super) struct Leaving {
    channel: Arc<str>,
    /// `None` for a subscriber that never joined (its subscribe failed).
    info: Option<Arc<ClientInfo>>,
}

/// Whether `entries` are exactly the publications `from + 1 ..= to`.
fn contiguous(entries: &[Entry], from: u64, to: u64) -> bool {
    to >= from
        && entries.len() as u64 == to - from
        && entries.iter().zip(from + 1..).all(|(e, want)| e.offset == want)
}

pub(super) fn entry_event(channel: &Arc<str>, epoch: &Arc<str>, e: Entry) -> Arc<Event> {
    let p = Publication { offset: e.offset, epoch: epoch.clone(), data: e.data, info: e.info };
    Event::new(channel.clone(), Push::Publication(p))
}

/// Pushes `events`, in order, to every subscriber that wants them; returns those too slow
/// to take them (their outlet is already disconnecting them).
fn deliver(
    subscribers: &HashMap<ClientId, Subscriber>,
    events: &[Arc<Event>],
    metrics: &Metrics,
) -> Vec<ClientId> {
    let mut slow = Vec::new();
    let delivered = match events {
        [event] => deliver_one(subscribers, event, &mut slow),
        _ => deliver_batch(subscribers, events, &mut slow),
    };
    metrics.delivered.fetch_add(delivered, Ordering::Relaxed);
    slow
}

/// [`deliver`] of one event; returns how many subscribers took it.
fn deliver_one(
    subscribers: &HashMap<ClientId, Subscriber>,
    event: &Arc<Event>,
    slow: &mut Vec<ClientId>,
) -> u64 {
    let mut delivered = 0;
    each_prefetched(subscribers, |id, sub| match offer(sub, event) {
        Some(true) => delivered += 1,
        Some(false) => slow.push(*id),
        None => {}
    });
    delivered
}

/// Runs `f` on each subscriber, asking for what the next ones' pushes touch ahead of them.
/// Each push takes a few cache misses (the outlet, then the connection it points to), and
/// its locks make them wait one after the other; asked for ahead, they overlap: the outlet
/// `OUTLET_AHEAD` subscribers ahead, its connection `CONNECTION_AHEAD`.
#[inline]
fn each_prefetched(subscribers: &HashMap<ClientId, Subscriber>, mut f: impl FnMut(&ClientId, &Subscriber)) {
    let mut outlets = subscribers.values();
    let mut connections = subscribers.values();
    // The first ones too, before the first push: a channel has often fewer subscribers
    // than the distance.
    for s in outlets.by_ref().take(OUTLET_AHEAD) {
        tether::prefetch::value(&*s.outlet);
    }
    for s in connections.by_ref().take(CONNECTION_AHEAD) {
        s.outlet.prefetch();
    }
    for (id, sub) in subscribers {
        if let Some(s) = outlets.next() {
            tether::prefetch::value(&*s.outlet);
        }
        if let Some(s) = connections.next() {
            s.outlet.prefetch();
        }
        f(id, sub);
    }
}

/// Pushes `event` to `sub` if it wants it: `None` if not, else whether it took it (one that
/// did not is too slow: its outlet is disconnecting it).
#[inline]
fn offer(sub: &Subscriber, event: &Arc<Event>) -> Option<bool> {
    sub.wants(event).then(|| sub.outlet.push(event))
}

/// [`deliver`] of several events: each subscriber gets all of them in one go
/// ([`Outlet::push_all`]), in order, and none after one it could not take. One call per
/// subscriber, not one per event: a WebSocket outlet then takes the connection's lock once
/// for the whole batch, and the connection's state is fetched from memory once (10,000
/// connections' state is more than the cache holds). The events' encodings are made by the
/// first subscriber and shared by the rest.
fn deliver_batch(
    subscribers: &HashMap<ClientId, Subscriber>,
    events: &[Arc<Event>],
    slow: &mut Vec<ClientId>,
) -> u64 {
    let mut delivered = 0;
    each_prefetched(subscribers, |id, sub| {
        let (queued, took_all) = sub.outlet.push_all(events, &|e| sub.wants(e));
        delivered += queued;
        if !took_all {
            slow.push(*id);
        }
    });
    delivered
}

/// A channel with fewer subscribers than this delivers each event at once, unbatched.
const BATCH_FROM: usize = 64;

/// How far ahead of its push a subscriber's outlet is asked for.
const OUTLET_AHEAD: usize = 8;
/// How far ahead of its push a subscriber's connection is asked for (its outlet, asked for
/// earlier, tells where it is).
const CONNECTION_AHEAD: usize = 4;

/// Runs the hub's [`pump`](Shared::pump) when dropped (see [`Shared::spawn_pump`]).
struct PumpOnDrop(Weak<Shared>);

thread_local! {
    /// While this thread is in [`Shared::spawn_pump`]'s `spawn`: whether the task was dropped
    /// there and then (a runtime that is shutting down drops what is spawned at once).
    static SPAWNING: std::cell::Cell<Option<bool>> = const { std::cell::Cell::new(None) };
}

impl Drop for PumpOnDrop {
    fn drop(&mut self) {
        // Dropped inside `spawn_pump`, whose caller holds the state lock that a pump takes:
        // it settles the batch itself instead.
        if SPAWNING.with(|s| s.get().is_some()) {
            SPAWNING.with(|s| s.set(Some(true)));
            return;
        }
        if let Some(shared) = self.0.upgrade() {
            shared.pump();
        }
    }
}

/// Polls a broker call once and, if it is not done, finishes it in a task (the memory
/// broker is always done at once; a remote broker goes on in the background).
fn run_soon(fut: BoxFuture<'static, ()>) {
    let mut fut = fut;
    if (&mut fut).now_or_never().is_none() {
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(fut);
        }
    }
}

/// Adds this node's subscribers to presence again, three times per `ttl`, while the hub
/// lives, so that they stay listed while the clients of a node that died drop out.
async fn refresh_presence(shared: Weak<Shared>, ttl: Duration) {
    let period = (ttl / 3).max(Duration::from_millis(100));
    loop {
        tokio::time::sleep(period).await;
        let Some(s) = shared.upgrade() else { return };
        let broker = s.broker.clone();
        let entries = s.local_presence();
        drop(s);
        for (channel, list) in entries {
            if broker.presence_add(&channel, &list).await.is_err() {
                // The broker is unreachable: the next round tries again.
                break;
            }
        }
    }
}

/// The hub's state, shared with the broker's tasks.
pub(crate) struct Shared {
    state: Mutex<State>,
    pub(super) options: HubOptions,
    pub(super) metrics: Arc<Metrics>,
    pub(super) broker: Arc<dyn Broker>,
    pub(super) queues: Queues,
    me: Weak<Shared>,
    /// Events batched so far (see [`pump`](Self::pump)).
    batched_events: std::sync::atomic::AtomicU64,
}

impl Shared {
    /// The hub's state over `broker`; the broker starts handing events to it.
    pub(super) fn start(options: HubOptions, broker: Arc<dyn Broker>, metrics: Arc<Metrics>) -> Arc<Self> {
        let queues = Queues::new(options.queue_limits);
        if let Some(store) = broker.queue_store() {
            queues.set_store(store);
        }
        let shared = Arc::new_cyclic(|me| Self {
            state: Mutex::new(State::default()),
            options,
            metrics,
            broker: broker.clone(),
            queues,
            me: me.clone(),
            batched_events: std::sync::atomic::AtomicU64::new(0),
        });
        let events: Weak<dyn BrokerEvents> = Arc::downgrade(&shared) as Weak<dyn BrokerEvents>;
        broker.start(events);
        if let Some(ttl) = broker.presence_ttl() {
            match tokio::runtime::Handle::try_current() {
                Ok(rt) => {
                    rt.spawn(refresh_presence(Arc::downgrade(&shared), ttl));
                }
                Err(_) => tracing::warn!("no tokio runtime: presence entries will not be refreshed"),
            }
        }
        shared
    }

    /// This node's subscribers, by channel, in channels with presence.
    fn local_presence(&self) -> Vec<(Arc<str>, Vec<Arc<ClientInfo>>)> {
        let state = self.lock();
        state
            .channels
            .iter()
            .filter(|(name, _)| self.options.namespace_of(name).is_some_and(|ns| ns.presence))
            .map(|(name, ch)| (name.clone(), ch.subscribers.values().map(|s| s.info.clone()).collect()))
            .collect()
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts a broker failure.
    pub(super) fn counted<T>(&self, r: Result<T, HubError>) -> Result<T, HubError> {
        if r.as_ref().is_err_and(|e| *e == HubError::Unavailable) {
            self.metrics.broker_errors.fetch_add(1, Ordering::Relaxed);
        }
        r
    }

    pub(super) fn count_recovery(&self, recovered: bool) {
        let counter = if recovered { &self.metrics.recovered } else { &self.metrics.recovery_failed };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Makes `client` a pending subscriber of `channel` (checked by the caller).
    pub(super) fn add_pending(&self, state: &mut State, client: ClientId, channel: &str) -> Arc<str> {
        let Some(c) = state.clients.get(&client) else { return channel.into() };
        let (info, outlet) = (c.info.clone(), c.outlet.clone());
        let (name, ch) = state.open_channel(channel);
        ch.pending.insert(client, Pending { info, outlet, buffer: Vec::new() });
        if let Some(c) = state.clients.get_mut(&client) {
            c.channels.insert(name.clone());
        }
        name
    }

    /// Undoes [`add_pending`](Self::add_pending) after the broker failed.
    pub(super) fn drop_pending(&self, client: ClientId, name: &Arc<str>) {
        let mut state = self.lock();
        if let Some(c) = state.clients.get_mut(&client) {
            c.channels.remove(name);
        }
        if let Some(ch) = state.channels.get_mut(name) {
            ch.pending.remove(&client);
        }
        let gone = self.maybe_drop_channel(&mut state, name);
        drop(state);
        // It never joined: no leave to announce, only the node's own subscription to give
        // up if no one else here wants the channel.
        if gone {
            self.after(vec![Leaving { channel: name.clone(), info: None }], true);
        }
    }

    /// The end of a subscribe: the reply, what waited, then live events. Returns false if
    /// the client went away meanwhile.
    pub(super) fn finish_subscribe(
        &self,
        client: ClientId,
        name: &Arc<str>,
        recover: Option<StreamPosition>,
        read: Read,
        on_subscribed: impl FnOnce(&Subscribed),
    ) -> bool {
        let mut guard = self.lock();
        let state = &mut *guard;
        // The client may have gone meanwhile; its disconnect cleaned up.
        let Some(ch) = state.channels.get_mut(name) else { return false };
        let Some(pending) = ch.pending.remove(&client) else { return false };
        let pos = read.position;
        if ch.epoch.is_empty() {
            // Nothing arrived yet: every publication up to the position was answered before
            // the read.
            ch.epoch = pos.epoch.clone();
            ch.offset = pos.offset;
        }
        let mut result = Subscribed {
            channel: name.clone(),
            epoch: pos.epoch.clone(),
            offset: pos.offset,
            recovered: false,
            recovering: recover.is_some(),
            publications: Vec::new(),
        };
        if let Some(want) = &recover {
            if want.epoch == pos.epoch && contiguous(&read.entries, want.offset, pos.offset) {
                result.publications =
                    read.entries.into_iter().map(|e| entry_event(name, &pos.epoch, e)).collect();
                result.recovered = true;
            }
            self.count_recovery(result.recovered);
        }
        on_subscribed(&result);
        let sub = Subscriber { info: pending.info, outlet: pending.outlet, base: (pos.epoch, pos.offset) };
        // What is batched is in the buffer too: it goes to the others first, then this
        // subscriber gets it from the buffer, once.
        let mut slow = ch.settle(&self.metrics);
        for e in &pending.buffer {
            if offer(&sub, e) == Some(false) {
                slow.push(client);
                break;
            }
        }
        ch.subscribers.insert(client, sub);
        self.metrics.subscriptions.fetch_add(1, Ordering::Relaxed);
        let leaving = self.drop_slow(state, slow);
        drop(guard);
        self.after(leaving, true);
        true
    }

    /// Takes `client` out of `channel` here; what the broker must hear about it.
    pub(super) fn leave(&self, state: &mut State, channel: &Arc<str>, client: ClientId) -> Option<Leaving> {
        let ch = state.channels.get_mut(channel)?;
        let info = match (ch.subscribers.remove(&client), ch.pending.remove(&client)) {
            (Some(sub), _) => {
                self.metrics.subscriptions.fetch_sub(1, Ordering::Relaxed);
                sub.info
            }
            (None, Some(p)) => p.info,
            (None, None) => return None,
        };
        self.maybe_drop_channel(state, channel);
        Some(Leaving { channel: channel.clone(), info: Some(info) })
    }

    /// Drops connections that fell behind from every channel at once (no leave events for
    /// them: their outlets are already closing them); presence no longer lists them.
    pub(super) fn drop_slow(&self, state: &mut State, slow: Vec<ClientId>) -> Vec<Leaving> {
        let mut leaving = Vec::new();
        for id in slow {
            let Some(c) = state.clients.remove(&id) else { continue };
            self.metrics.slow_disconnects.fetch_add(1, Ordering::Relaxed);
            self.metrics.connections.fetch_sub(1, Ordering::Relaxed);
            for channel in c.channels {
                leaving.extend(self.leave(state, &channel, id));
            }
        }
        leaving
    }

    /// Drops a channel with no subscribers left; returns whether it did.
    pub(super) fn maybe_drop_channel(&self, state: &mut State, channel: &Arc<str>) -> bool {
        if state.channels.get(channel).is_some_and(Channel::unused) {
            state.channels.remove(channel);
            return true;
        }
        false
    }

    /// Tells the broker about clients that left (presence, leave events) and gives up
    /// channels no one here wants. `now`: the caller holds no broker lock (not inside a
    /// [`BrokerEvents`] call), so the memory broker's answers take effect before it returns.
    pub(super) fn after(&self, leaving: Vec<Leaving>, now: bool) {
        if leaving.is_empty() {
            return;
        }
        let Some(shared) = self.me.upgrade() else { return };
        let fut: BoxFuture<'static, ()> = Box::pin(async move {
            for Leaving { channel, info } in leaving {
                let ns = shared.options.namespace_of(&channel).cloned().unwrap_or_default();
                if let Some(info) = info {
                    if ns.presence {
                        shared.broker.presence_remove(&channel, &info.client).await;
                    }
                    if ns.join_leave {
                        shared.broker.announce(&channel, false, &info).await;
                    }
                }
                let still_unused: Unused<'_> = Box::new(|| !shared.lock().channels.contains_key(&channel));
                shared.broker.unsubscribe(&channel, still_unused).await;
            }
        });
        if now {
            run_soon(fut);
        } else if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(fut);
        }
    }

    /// Delivers `event` here, unless the channel is syncing (then it waits) or it shows a
    /// gap (then syncing starts). Returns the subscribers that fell behind.
    fn apply(&self, state: &mut State, name: &Arc<str>, event: Arc<Event>) -> Vec<ClientId> {
        let Some(ch) = state.channels.get_mut(name) else { return Vec::new() };
        if let Some(buffer) = &mut ch.syncing {
            buffer.push(event);
            return Vec::new();
        }
        if let Some(p) = event.publication() {
            if !ch.epoch.is_empty() {
                if p.epoch == ch.epoch && p.offset <= ch.offset {
                    return Vec::new();
                }
                if p.epoch != ch.epoch || p.offset != ch.offset + 1 {
                    ch.syncing = Some(vec![event]);
                    self.spawn_sync(name.clone());
                    return Vec::new();
                }
            }
            ch.epoch = p.epoch.clone();
            ch.offset = p.offset;
        }
        for p in ch.pending.values_mut() {
            p.buffer.push(event.clone());
        }
        if ch.batch.is_empty() && ch.subscribers.len() < BATCH_FROM {
            // A small channel: its few connections stay in the cache anyway, and a task
            // would cost more than the batch saves.
            return deliver(&ch.subscribers, std::slice::from_ref(&event), &self.metrics);
        }
        ch.batch.push(event);
        self.batched_events.fetch_add(1, Ordering::Relaxed);
        if ch.batch.len() == 1 {
            // The first batch since the last pump starts one.
            if state.batched.is_empty() && !self.spawn_pump() {
                // No runtime to pump in: at once.
                return ch.settle(&self.metrics);
            }
            state.batched.push(name.clone());
        }
        Vec::new()
    }

    /// Pushes every channel's batch to its subscribers; returns those too slow.
    fn settle_all(&self, state: &mut State) -> Vec<ClientId> {
        let mut slow = Vec::new();
        for name in std::mem::take(&mut state.batched) {
            if let Some(ch) = state.channels.get_mut(&name) {
                slow.extend(ch.settle(&self.metrics));
            }
        }
        slow
    }

    /// Starts a task that runs [`pump`](Self::pump) once the tasks that are ready have run;
    /// false outside a tokio runtime. The pump runs even if the task is dropped first (its
    /// runtime shutting down): nothing batched is left behind, and the next event can start
    /// another.
    ///
    /// False too when the runtime is shutting down: it drops the task inside `spawn`, while
    /// the caller holds the state lock, so the task cannot pump then; the caller settles.
    fn spawn_pump(&self) -> bool {
        let Ok(rt) = tokio::runtime::Handle::try_current() else { return false };
        let pump = PumpOnDrop(self.me.clone());
        SPAWNING.with(|s| s.set(Some(false)));
        rt.spawn(async move {
            let fed = || pump.0.upgrade().map(|s| s.batched_events.load(Ordering::Relaxed));
            tether::yield_while_fed(fed).await;
            drop(pump);
        });
        let dropped = SPAWNING.with(|s| s.take()) == Some(true);
        !dropped
    }

    /// Pushes `channel`'s batch to its subscribers now, ahead of the fan-out task: a client's
    /// publication reaches its own subscription before the client hears that it was
    /// published (with a broker that answers only after it delivered, as the memory one).
    pub(super) fn settle_now(&self, channel: &str) {
        self.settle_with(|state| {
            state.channels.get_mut(channel).map(|ch| ch.settle(&self.metrics)).unwrap_or_default()
        });
    }

    /// Pushes what the broker's events batched to the subscribers. The events of a burst (a
    /// publisher's pipelined requests, a busy broker connection's reads) are batched until
    /// the tasks that are ready have run, then go out together: a subscriber takes all of
    /// them in a row ([`deliver`]), and its connection writes them in one go. Alone, an event
    /// waits only for that.
    fn pump(&self) {
        self.settle_with(|state| self.settle_all(state));
    }

    /// Runs `settle` under the state lock, then drops the subscribers it found too slow.
    fn settle_with(&self, settle: impl FnOnce(&mut State) -> Vec<ClientId>) {
        let mut guard = self.lock();
        let slow = settle(&mut guard);
        let leaving = self.drop_slow(&mut guard, slow);
        drop(guard);
        self.after(leaving, true);
    }

    /// An event from the broker for `channel`.
    fn on_event(&self, channel: &str, push: Push) {
        let mut guard = self.lock();
        let state = &mut *guard;
        let Some((name, _)) = state.channels.get_key_value(channel) else { return };
        let name = name.clone();
        let event = Event::new(name.clone(), push);
        let slow = self.apply(state, &name, event);
        let leaving = self.drop_slow(state, slow);
        drop(guard);
        self.after(leaving, false);
    }

    fn spawn_sync(&self, name: Arc<str>) {
        if let (Some(shared), Ok(rt)) = (self.me.upgrade(), tokio::runtime::Handle::try_current()) {
            rt.spawn(async move { shared.sync(name).await });
        }
    }

    /// Fills what this node missed of `name` from history, then delivers what waited.
    async fn sync(self: Arc<Self>, name: Arc<str>) {
        let Some(ns) = self.options.namespace_of(&name).cloned() else { return };
        let Some((epoch, offset)) = self.lock().channels.get(&name).map(|ch| (ch.epoch.clone(), ch.offset))
        else {
            return;
        };
        let since = if epoch.is_empty() { Since::Nothing } else { Since::CatchUp(&epoch, offset) };
        let read = self.counted(self.broker.read(&name, since, &ns).await);
        let (outlets, leaving) = self.finish_sync(&name, read);
        self.after(leaving, true);
        if let Some(outlets) = outlets {
            for o in outlets {
                o.disconnect(close::INSUFFICIENT_STATE, "missed publications; resubscribe and recover");
            }
            let still_unused: Unused<'_> = Box::new(|| !self.lock().channels.contains_key(&name));
            self.broker.unsubscribe(&name, still_unused).await;
        }
    }

    /// Delivers what a sync read, then what waited. If the read cannot fill the gap, drops
    /// the channel here and returns its subscribers' outlets, to be closed.
    fn finish_sync(
        &self,
        name: &Arc<str>,
        read: Result<Read, HubError>,
    ) -> (Option<Vec<Arc<dyn Outlet>>>, Vec<Leaving>) {
        let mut guard = self.lock();
        let state = &mut *guard;
        let Some(ch) = state.channels.get_mut(name) else { return (None, Vec::new()) };
        // Another sync of this channel finished first.
        let Some(waiting) = ch.syncing.take() else { return (None, Vec::new()) };
        let filled = read.ok().and_then(|r| {
            let pos = r.position;
            if ch.epoch.is_empty() {
                ch.epoch = pos.epoch.clone();
                ch.offset = pos.offset;
                return Some(Vec::new());
            }
            let from = if pos.epoch == ch.epoch { ch.offset } else { 0 };
            let entries: Vec<Entry> = r.entries.into_iter().filter(|e| e.offset > from).collect();
            contiguous(&entries, from, pos.offset).then(|| {
                ch.epoch = pos.epoch.clone();
                ch.offset = pos.offset;
                entries.into_iter().map(|e| entry_event(name, &pos.epoch, e)).collect::<Vec<_>>()
            })
        });
        let Some(missed) = filled else {
            tracing::warn!(channel = %name, "missed publications that history cannot fill: closing subscribers");
            let outlets: Vec<Arc<dyn Outlet>> = ch
                .subscribers
                .values()
                .map(|s| s.outlet.clone())
                .chain(ch.pending.values().map(|p| p.outlet.clone()))
                .collect();
            state.channels.remove(name);
            return (Some(outlets), Vec::new());
        };
        // What was batched before the gap goes first.
        let mut slow = ch.settle(&self.metrics);
        for event in missed {
            for p in ch.pending.values_mut() {
                p.buffer.push(event.clone());
            }
            slow.extend(deliver(&ch.subscribers, std::slice::from_ref(&event), &self.metrics));
        }
        for event in waiting {
            slow.extend(self.apply(state, name, event));
        }
        (None, self.drop_slow(state, slow))
    }

    /// The ids of this node's clients start with the broker's node prefix.
    pub(super) fn client_id(&self, id: ClientId) -> String {
        format!("{}c{id}", self.broker.node())
    }
}

impl BrokerEvents for Shared {
    fn publication(&self, channel: &str, publication: Publication) {
        self.on_event(channel, Push::Publication(publication));
    }

    fn join(&self, channel: &str, info: Arc<ClientInfo>) {
        if self.options.namespace_of(channel).is_some_and(|ns| ns.join_leave) {
            self.on_event(channel, Push::Join(info));
        }
    }

    fn leave(&self, channel: &str, info: Arc<ClientInfo>) {
        if self.options.namespace_of(channel).is_some_and(|ns| ns.join_leave) {
            self.on_event(channel, Push::Leave(info));
        }
    }

    fn connected(&self) {
        self.metrics.broker_up.store(1, Ordering::Relaxed);
        let names: Vec<Arc<str>> = {
            let mut state = self.lock();
            for ch in state.channels.values_mut() {
                ch.syncing.get_or_insert_with(Vec::new);
            }
            state.channels.keys().cloned().collect()
        };
        if names.is_empty() {
            return;
        }
        let (Some(shared), Ok(rt)) = (self.me.upgrade(), tokio::runtime::Handle::try_current()) else {
            return;
        };
        rt.spawn(async move {
            if let Err(e) = shared.broker.subscribe_all(&names).await {
                tracing::warn!("broker: cannot subscribe again: {e}");
            }
            for name in names {
                shared.clone().sync(name).await;
            }
        });
    }

    fn lost(&self) {
        self.metrics.broker_up.store(0, Ordering::Relaxed);
    }

    fn queue_message(
        &self,
        queue: &str,
        body: Bytes,
        headers: Vec<(String, String)>,
    ) -> Result<(), QueueError> {
        self.queues.send(queue, body, headers)
    }

    fn queue_arrivals(&self, queue: &str, arrivals: Vec<Arrival>) {
        self.queues.arrive(queue, arrivals);
    }
}

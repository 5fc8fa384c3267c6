//! The `memory` broker (the default): one process, every channel's offset, epoch, history
//! and presence in memory. It answers at once, and hands each publication to the hub core
//! while it holds the channel's stream, so the hub sees publications in offset order.
//!
//! A channel's stream lives while this node subscribes to it or its history holds
//! anything; after that, its next use starts a new epoch.

use super::{
    Answer, BoxFuture, Broker, BrokerEvents, Entry, Headers, Ns, Outgoing, Queued, Read, Since, Unused,
};
use crate::hub::event::{new_epoch, ClientInfo, Publication, StreamPosition};
use crate::hub::queue::{QueueError, Store};
use crate::options::{HubOptions, NamespaceOptions};
use bytes::Bytes;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::future::ready;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
use std::time::{Duration, Instant};

struct Kept {
    time: Instant,
    offset: u64,
    info: Option<Arc<ClientInfo>>,
    data: Bytes,
}

struct Stream {
    epoch: Arc<str>,
    offset: u64,
    history: VecDeque<Kept>,
    /// Whether the hub core receives this channel's events.
    subscribed: bool,
}

impl Stream {
    fn new() -> Self {
        Self { epoch: new_epoch(), offset: 0, history: VecDeque::new(), subscribed: false }
    }

    /// Drops publications older than `ttl`.
    fn expire(&mut self, ttl: Duration, now: Instant) {
        while self.history.front().is_some_and(|k| now.duration_since(k.time) > ttl) {
            self.history.pop_front();
        }
    }
}

/// A presence entry and until when it counts (`None`: until removed).
type Present = (Arc<ClientInfo>, Option<Instant>);

/// The memory broker.
pub(crate) struct MemoryBroker {
    streams: Mutex<HashMap<Arc<str>, Stream>>,
    /// Presence, under a lock of its own: it is changed while a publication is handed on.
    presence: Mutex<HashMap<Arc<str>, BTreeMap<String, Present>>>,
    /// How long a presence entry counts without a refresh (`None`: until removed; one
    /// process has no node that can die alone).
    presence_ttl: Option<Duration>,
    events: OnceLock<Weak<dyn BrokerEvents>>,
}

impl std::fmt::Debug for MemoryBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryBroker").finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl MemoryBroker {
    /// A memory broker; presence entries count for `presence_ttl` after their last
    /// refresh, or until removed when `None`.
    pub(crate) fn new(presence_ttl: Option<Duration>) -> Self {
        Self {
            streams: Mutex::new(HashMap::new()),
            presence: Mutex::new(HashMap::new()),
            presence_ttl,
            events: OnceLock::new(),
        }
    }

    fn events(&self) -> Option<Arc<dyn BrokerEvents>> {
        self.events.get().and_then(Weak::upgrade)
    }

    fn publish_now(
        &self,
        channel: &str,
        data: Bytes,
        info: Option<Arc<ClientInfo>>,
        ns: &NamespaceOptions,
    ) -> StreamPosition {
        let mut streams = lock(&self.streams);
        if ns.history_size == 0 && !streams.contains_key(channel) {
            // Nobody listens and nothing is kept: the offset still moves, in a stream that
            // exists only for this publication.
            return StreamPosition { offset: 1, epoch: new_epoch() };
        }
        // Looked up by the name first: the key (an allocation) is made only for a new stream.
        let stream = match streams.get_mut(channel) {
            Some(s) => s,
            None => streams.entry(channel.into()).or_insert_with(Stream::new),
        };
        let now = Instant::now();
        stream.expire(ns.history_ttl, now);
        stream.offset += 1;
        let (offset, epoch) = (stream.offset, stream.epoch.clone());
        if ns.history_size > 0 {
            stream.history.push_back(Kept { time: now, offset, info: info.clone(), data: data.clone() });
            while stream.history.len() > ns.history_size {
                stream.history.pop_front();
            }
        }
        if stream.subscribed {
            if let Some(events) = self.events() {
                // Under the streams' lock: the hub sees this channel's publications in order.
                events.publication(channel, Publication { offset, epoch: epoch.clone(), data, info });
            }
        }
        StreamPosition { offset, epoch }
    }

    fn read_now(&self, channel: &str, since: Since<'_>, ns: &NamespaceOptions) -> Read {
        let mut streams = lock(&self.streams);
        let stream = match streams.get_mut(channel) {
            Some(s) => s,
            // The history API asks about any channel: one never used has no epoch yet.
            None if matches!(since, Since::Offset(_)) => {
                return Read {
                    position: StreamPosition { offset: 0, epoch: "".into() },
                    entries: Vec::new(),
                };
            }
            None => streams.entry(channel.into()).or_insert_with(Stream::new),
        };
        stream.expire(ns.history_ttl, Instant::now());
        let position = StreamPosition { offset: stream.offset, epoch: stream.epoch.clone() };
        let after = match since {
            Since::Nothing => None,
            Since::Offset(o) => Some(o),
            Since::Position(e, o) => (e == &*stream.epoch).then_some(o),
            Since::CatchUp(e, o) => Some(if e == &*stream.epoch { o } else { 0 }),
        };
        let entries = match after {
            Some(after) if ns.history_size > 0 => stream
                .history
                .iter()
                .filter(|k| k.offset > after)
                .map(|k| Entry { offset: k.offset, info: k.info.clone(), data: k.data.clone() })
                .collect(),
            _ => Vec::new(),
        };
        Read { position, entries }
    }

    fn presence_now(&self, channel: &str) -> Vec<Arc<ClientInfo>> {
        let mut presence = lock(&self.presence);
        let Some(entries) = presence.get_mut(channel) else { return Vec::new() };
        let now = Instant::now();
        entries.retain(|_, (_, deadline)| deadline.is_none_or(|d| d > now));
        let list = entries.values().map(|(info, _)| info.clone()).collect();
        if entries.is_empty() {
            presence.remove(channel);
        }
        list
    }
}

impl Broker for MemoryBroker {
    fn start(&self, events: Weak<dyn BrokerEvents>) {
        if self.events.set(events).is_ok() {
            if let Some(events) = self.events() {
                events.connected();
            }
        }
    }

    fn node(&self) -> &str {
        ""
    }

    fn presence_ttl(&self) -> Option<Duration> {
        self.presence_ttl
    }

    fn publish<'a>(&'a self, channel: &'a str, msg: Outgoing, ns: Ns<'a>) -> Answer<'a, StreamPosition> {
        Box::pin(ready(Ok(self.publish_now(channel, msg.data, msg.info, ns))))
    }

    fn subscribe<'a>(&'a self, channel: &'a Arc<str>) -> Answer<'a, ()> {
        lock(&self.streams).entry(channel.clone()).or_insert_with(Stream::new).subscribed = true;
        Box::pin(ready(Ok(())))
    }

    fn subscribe_all<'a>(&'a self, channels: &'a [Arc<str>]) -> Answer<'a, ()> {
        let mut streams = lock(&self.streams);
        for channel in channels {
            streams.entry(channel.clone()).or_insert_with(Stream::new).subscribed = true;
        }
        Box::pin(ready(Ok(())))
    }

    fn unsubscribe<'a>(&'a self, channel: &'a Arc<str>, still_unused: Unused<'a>) -> BoxFuture<'a, ()> {
        let mut streams = lock(&self.streams);
        if let Some(stream) = streams.get_mut(channel) {
            if stream.subscribed && still_unused() {
                stream.subscribed = false;
                if stream.history.is_empty() {
                    streams.remove(channel);
                }
            }
        }
        Box::pin(ready(()))
    }

    fn read<'a>(&'a self, channel: &'a str, since: Since<'a>, ns: Ns<'a>) -> Answer<'a, Read> {
        Box::pin(ready(Ok(self.read_now(channel, since, ns))))
    }

    fn announce<'a>(&'a self, channel: &'a str, join: bool, info: &'a ClientInfo) -> BoxFuture<'a, ()> {
        if let Some(events) = self.events() {
            let info = Arc::new(info.clone());
            if join {
                events.join(channel, info);
            } else {
                events.leave(channel, info);
            }
        }
        Box::pin(ready(()))
    }

    fn presence_add<'a>(&'a self, channel: &'a str, clients: &'a [Arc<ClientInfo>]) -> Answer<'a, ()> {
        if !clients.is_empty() {
            let deadline = self.presence_ttl.map(|ttl| Instant::now() + ttl);
            let mut presence = lock(&self.presence);
            let entries = presence.entry(channel.into()).or_default();
            for c in clients {
                entries.insert(c.client.to_string(), (c.clone(), deadline));
            }
        }
        Box::pin(ready(Ok(())))
    }

    fn presence_remove<'a>(&'a self, channel: &'a str, client: &'a str) -> BoxFuture<'a, ()> {
        let mut presence = lock(&self.presence);
        if let Some(entries) = presence.get_mut(channel) {
            entries.remove(client);
            if entries.is_empty() {
                presence.remove(channel);
            }
        }
        Box::pin(ready(()))
    }

    fn presence<'a>(&'a self, channel: &'a str) -> Answer<'a, Vec<Arc<ClientInfo>>> {
        Box::pin(ready(Ok(self.presence_now(channel))))
    }

    fn queue_send<'a>(&'a self, queue: &'a str, body: Bytes, headers: Headers, _max: usize) -> Queued<'a> {
        // One node: the hub's own queues hold the messages (and apply the limit).
        let sent = match self.events() {
            Some(events) => events.queue_message(queue, body, headers),
            None => Err(QueueError::Unavailable),
        };
        Box::pin(ready(sent))
    }

    fn queue_store(&self) -> Option<Arc<dyn Store>> {
        None
    }

    fn queues_settled(&self) -> BoxFuture<'_, ()> {
        Box::pin(ready(()))
    }

    fn sweep(&self, options: &HubOptions) {
        let now = Instant::now();
        lock(&self.streams).retain(|name, s| {
            if let Some(ns) = options.namespace_of(name) {
                s.expire(ns.history_ttl, now);
            }
            s.subscribed || !s.history.is_empty()
        });
    }
}

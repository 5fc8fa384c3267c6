//! The hub with the `redis` broker: what reaches this node's subscribers, and when.
//!
//! Redis decides offsets and epochs and carries every publication, join and leave to every
//! node (see [`redis_broker`](crate::redis_broker)). A node never delivers its own
//! publications directly: they come back through Pub/Sub like everyone else's, so all
//! subscribers see one order.
//!
//! - A subscriber is first *pending*: the node subscribes to the channel in Redis, then reads
//!   the position (and what to recover). What arrives meanwhile is buffered; at the end the
//!   reply goes out, then the buffered events after the position, then live ones.
//! - The node tracks the last offset it saw per channel. A publication that skips offsets,
//!   or comes in a new epoch, or a reconnect to Redis, makes the node *sync* the channel:
//!   it buffers new events, reads what it missed from history, delivers it in order, then
//!   the buffer. If history cannot fill the gap, the channel's subscribers here are closed
//!   with 4011 so that they resubscribe and recover (or learn they cannot).

use super::*;
use crate::redis_broker::{Entry, RedisBroker, RedisOptions, Remote, Since};
use crate::redis_queue::RedisQueues;

/// Whether `entries` are exactly the publications `from + 1 ..= to`.
fn contiguous(entries: &[Entry], from: u64, to: u64) -> bool {
    to >= from
        && entries.len() as u64 == to - from
        && entries.iter().zip(from + 1..).all(|(e, want)| e.offset == want)
}

fn entry_event(channel: &Arc<str>, epoch: &Arc<str>, e: Entry) -> Arc<Event> {
    let p = Publication { offset: e.offset, epoch: epoch.clone(), data: e.data, info: e.info };
    Event::new(channel.clone(), Push::Publication(p))
}

impl Hub {
    /// A hub whose channels, history and presence are shared with other nodes through
    /// Redis. Connects in the background (see [`broker_up`](Self::broker_up)); must be
    /// called inside a tokio runtime.
    ///
    /// # Errors
    ///
    /// An invalid Redis URL.
    pub fn with_redis(options: HubOptions, redis: RedisOptions) -> Result<Arc<Self>, String> {
        let broker = Arc::new(RedisBroker::new(redis)?);
        let node = new_epoch();
        let queues = RedisQueues::new(broker.clone(), &node[..8]);
        let hub = Arc::new_cyclic(|me| {
            let mut hub = Self::new(options);
            hub.me = me.clone();
            hub.node = format!("{}.", &node[..8]);
            hub.redis = Some(broker.clone());
            hub.queues.set_store(queues.store());
            hub.redis_queues = Some(queues.clone());
            hub.lock().brokered = true;
            hub.metrics.broker_up.store(0, Ordering::Relaxed);
            hub
        });
        broker.start(Arc::downgrade(&hub));
        queues.start(Arc::downgrade(&hub));
        Ok(hub)
    }

    /// The Redis broker, if this hub has one.
    pub fn redis(&self) -> Option<&RedisBroker> {
        self.redis.as_deref()
    }

    pub(super) async fn subscribe_redis(
        &self,
        broker: &RedisBroker,
        client: ClientId,
        channel: &str,
        recover: Option<StreamPosition>,
        on_subscribed: impl FnOnce(&Subscribed),
    ) -> Result<(), HubError> {
        let ns = self.namespace(channel)?;
        let (name, info) = {
            let mut guard = self.lock();
            let state = &mut *guard;
            let c = self.may_subscribe(state, client, ns, channel)?;
            let (info, outlet) = (c.info.clone(), c.outlet.clone());
            let (name, ch) = state.open_channel(channel);
            ch.pending.insert(client, Pending { info: info.clone(), outlet, buffer: Vec::new() });
            if let Some(c) = state.clients.get_mut(&client) {
                c.channels.insert(name.clone());
            }
            (name, info)
        };
        let since = match &recover {
            Some(p) => Since::Position(&p.epoch, p.offset),
            None => Since::Nothing,
        };
        let read = async {
            broker.ensure_subscribed(&name).await?;
            let read = broker.read(&name, since, ns).await?;
            if ns.presence {
                broker.presence_add(&name, std::slice::from_ref(&info)).await?;
            }
            Ok(read)
        }
        .await;
        let read = match self.counted(read) {
            Ok(r) => r,
            Err(e) => {
                let mut state = self.lock();
                if let Some(c) = state.clients.get_mut(&client) {
                    c.channels.remove(&name);
                }
                if let Some(ch) = state.channels.get_mut(&name) {
                    ch.pending.remove(&client);
                }
                self.maybe_drop_channel(&mut state, &name);
                drop(state);
                // It never joined: no leave to announce, only the node's own subscription
                // to give up if no one else here wants the channel.
                self.left_redis(&name, None);
                return Err(e);
            }
        };
        if self.finish_subscribe(client, &name, recover, read, on_subscribed) && ns.join_leave {
            broker.announce(&name, true, &info).await;
        }
        Ok(())
    }

    /// The end of a subscribe: the reply, what waited, then live events. Returns false if
    /// the client went away meanwhile.
    fn finish_subscribe(
        &self,
        client: ClientId,
        name: &Arc<str>,
        recover: Option<StreamPosition>,
        read: crate::redis_broker::Read,
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
            // the read (one connection carries both, in order).
            ch.epoch = pos.epoch.clone();
            ch.offset = pos.offset;
        }
        let mut result = Subscribed {
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
        let sub =
            Subscriber { info: pending.info, outlet: pending.outlet, base: Some((pos.epoch, pos.offset)) };
        let mut slow = Vec::new();
        for e in &pending.buffer {
            if sub.wants(e) && !sub.outlet.push(e) {
                slow.push(client);
                break;
            }
        }
        ch.subscribers.insert(client, sub);
        self.metrics.subscriptions.fetch_add(1, Ordering::Relaxed);
        self.drop_slow(state, slow);
        true
    }

    pub(super) async fn publish_redis(
        &self,
        broker: &RedisBroker,
        channel: &str,
        data: Bytes,
        info: Option<Arc<ClientInfo>>,
    ) -> Result<StreamPosition, HubError> {
        let ns = self.namespace(channel)?;
        let pos = self.counted(broker.publish(channel, &data, info.as_deref(), ns).await)?;
        self.metrics.published.fetch_add(1, Ordering::Relaxed);
        Ok(pos)
    }

    pub(super) async fn history_redis(
        &self,
        broker: &RedisBroker,
        channel: &str,
        limit: usize,
        since: Option<u64>,
        ns: &NamespaceOptions,
    ) -> Result<(StreamPosition, Vec<Arc<Event>>), HubError> {
        let read = self.counted(broker.read(channel, Since::Offset(since.unwrap_or(0)), ns).await)?;
        let name: Arc<str> = channel.into();
        let skip = read.entries.len().saturating_sub(limit);
        let epoch = read.position.epoch.clone();
        let events = read.entries.into_iter().skip(skip).map(|e| entry_event(&name, &epoch, e)).collect();
        Ok((read.position, events))
    }

    /// After `info` left `channel` here: tells other nodes, takes it out of presence, and
    /// unsubscribes the node when no one here is left.
    pub(super) fn left_redis(&self, channel: &Arc<str>, info: Option<Arc<ClientInfo>>) {
        let (Some(broker), Some(hub)) = (self.redis.clone(), self.me.upgrade()) else { return };
        let Some(ns) = self.options.namespace_of(channel) else { return };
        let (presence, join_leave) = (ns.presence, ns.join_leave);
        let channel = channel.clone();
        tokio::spawn(async move {
            if let Some(info) = info {
                if presence {
                    broker.presence_remove(&channel, &info.client).await;
                }
                if join_leave {
                    broker.announce(&channel, false, &info).await;
                }
            }
            broker.release(&channel, || !hub.lock().channels.contains_key(&channel)).await;
        });
    }

    /// A message from Redis for `channel` (called in the connection's task).
    pub(crate) fn on_remote(&self, channel: &str, remote: Remote) {
        let mut guard = self.lock();
        let state = &mut *guard;
        let Some((name, _)) = state.channels.get_key_value(channel) else { return };
        let name = name.clone();
        let push = match remote {
            Remote::Publication { epoch, offset, info, data } => {
                Push::Publication(Publication { offset, epoch, data, info })
            }
            Remote::Join(info) => Push::Join(info),
            Remote::Leave(info) => Push::Leave(info),
        };
        let event = Event::new(name.clone(), push);
        let slow = self.apply_remote(state, &name, event);
        self.drop_slow(state, slow);
    }

    /// Delivers `event` here, unless the channel is syncing (then it waits) or it shows a
    /// gap (then syncing starts). Returns the subscribers that fell behind.
    fn apply_remote(&self, state: &mut State, name: &Arc<str>, event: Arc<Event>) -> Vec<ClientId> {
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
        deliver(&ch.subscribers, None, &event, &self.metrics)
    }

    fn spawn_sync(&self, name: Arc<str>) {
        if let Some(hub) = self.me.upgrade() {
            tokio::spawn(async move { hub.sync(name).await });
        }
    }

    /// Fills what this node missed of `name` from history, then delivers what waited.
    async fn sync(self: Arc<Self>, name: Arc<str>) {
        let Some(broker) = self.redis.clone() else { return };
        let Some(ns) = self.options.namespace_of(&name).cloned() else { return };
        let Some((epoch, offset)) = self.lock().channels.get(&name).map(|ch| (ch.epoch.clone(), ch.offset))
        else {
            return;
        };
        let since = if epoch.is_empty() { Since::Nothing } else { Since::CatchUp(&epoch, offset) };
        let read = self.counted(broker.read(&name, since, &ns).await);
        if let Some(outlets) = self.finish_sync(&name, read) {
            for o in outlets {
                o.disconnect(
                    crate::json::close::INSUFFICIENT_STATE,
                    "missed publications; resubscribe and recover",
                );
            }
            broker.release(&name, || !self.lock().channels.contains_key(&name)).await;
        }
    }

    /// Delivers what a sync read, then what waited. If the read cannot fill the gap, drops
    /// the channel here and returns its subscribers' outlets, to be closed.
    fn finish_sync(
        &self,
        name: &Arc<str>,
        read: Result<crate::redis_broker::Read, HubError>,
    ) -> Option<Vec<Arc<dyn Outlet>>> {
        let mut guard = self.lock();
        let state = &mut *guard;
        let ch = state.channels.get_mut(name)?;
        // Another sync of this channel finished first.
        let waiting = ch.syncing.take()?;
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
            return Some(outlets);
        };
        let mut slow = Vec::new();
        for event in missed {
            for p in ch.pending.values_mut() {
                p.buffer.push(event.clone());
            }
            slow.extend(deliver(&ch.subscribers, None, &event, &self.metrics));
        }
        for event in waiting {
            slow.extend(self.apply_remote(state, name, event));
        }
        self.drop_slow(state, slow);
        None
    }

    /// After (re)connecting to Redis: subscribes again to every channel in use here and
    /// syncs each one.
    pub(crate) fn broker_connected(&self) {
        let (Some(broker), Some(hub)) = (self.redis.clone(), self.me.upgrade()) else { return };
        let names: Vec<Arc<str>> = {
            let mut state = self.lock();
            for ch in state.channels.values_mut() {
                ch.syncing.get_or_insert_with(Vec::new);
            }
            state.channels.keys().cloned().collect()
        };
        tokio::spawn(async move {
            if let Err(e) = broker.subscribe_all(&names).await {
                tracing::warn!("redis: cannot subscribe again: {e}");
            }
            for name in names {
                hub.clone().sync(name).await;
            }
        });
    }

    /// Every subscriber here, by channel, in channels with presence (for the refresh).
    pub(crate) fn presence_entries(&self) -> Vec<(Arc<str>, Vec<Arc<ClientInfo>>)> {
        let state = self.lock();
        state
            .channels
            .iter()
            .filter(|(name, _)| self.options.namespace_of(name).is_some_and(|ns| ns.presence))
            .map(|(name, ch)| (name.clone(), ch.subscribers.values().map(|s| s.info.clone()).collect()))
            .collect()
    }
}

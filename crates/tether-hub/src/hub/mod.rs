//! The hub core: channels with offsets, epochs and history; subscriptions with recovery;
//! presence with join/leave events; work queues; fan-out to bounded per-connection outlets.
//!
//! The core knows no wire format and no particular broker. Front-ends hand it an [`Outlet`]
//! per connection (through the session layer) and encode each [`Event`] once per registered
//! encoding; a [`Broker`] keeps what nodes share and hands events back to the local fan-out
//! ([`fanout`]). Who may do what is decided here, once for every front-end.

pub mod event;
mod fanout;
pub(crate) mod queue;

use crate::broker::memory::MemoryBroker;
use crate::broker::{Broker, Outgoing, Since};
use crate::metrics::Metrics;
use crate::options::{HubOptions, NamespaceOptions};
use bytes::Bytes;
pub use event::{Access, ClientId, ClientInfo, Event, HubError, Publication, Push, StreamPosition};
use fanout::{entry_event, Client, Shared, State};
pub use queue::QueueLimits;
use queue::{AckMode, QueueError, QueueOutlet};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Where the hub delivers a connection's events. Implemented by each front-end.
pub(crate) trait Outlet: Send + Sync {
    /// Queues `event` for the connection. Returns `false` when the connection is too far
    /// behind (the outlet has then started disconnecting it) or gone.
    fn push(&self, event: &Arc<Event>) -> bool;
    /// Queues, in order, each of `events` that `wants` lets through, as [`push`](Self::push)
    /// would one after the other, stopping at the first the connection does not take.
    /// Returns how many it queued, and `false` if it stopped (the outlet has then started
    /// disconnecting the connection, or it is gone).
    fn push_all(&self, events: &[Arc<Event>], wants: &dyn Fn(&Event) -> bool) -> (u64, bool) {
        push_each(events, wants, |e| self.push(e))
    }
    /// Disconnects the connection with a close code and reason.
    fn disconnect(&self, code: u16, reason: &str);
    /// Asks the CPU to bring in what a [`push`](Self::push) will touch, without waiting: a
    /// fan-out calls it a few subscribers ahead. Only a hint.
    fn prefetch(&self) {}
}

/// [`Outlet::push_all`] one event at a time: `push` each of `events` that `wants` lets
/// through, stopping at the first it refuses. Returns how many it pushed, and whether it
/// pushed every one.
pub(crate) fn push_each(
    events: &[Arc<Event>],
    wants: &dyn Fn(&Event) -> bool,
    mut push: impl FnMut(&Arc<Event>) -> bool,
) -> (u64, bool) {
    let mut pushed = 0;
    for event in events.iter().filter(|e| wants(e)) {
        if !push(event) {
            return (pushed, false);
        }
        pushed += 1;
    }
    (pushed, true)
}

/// The hub's answer to a subscribe.
#[derive(Debug, Clone)]
pub(crate) struct Subscribed {
    /// The channel's name as the hub holds it: one allocation for all its subscribers.
    pub(crate) channel: Arc<str>,
    /// The channel's epoch.
    pub(crate) epoch: Arc<str>,
    /// The channel's current offset.
    pub(crate) offset: u64,
    /// Whether the subscriber asked for recovery and got every missed publication.
    pub(crate) recovered: bool,
    /// Whether recovery was asked for.
    pub(crate) recovering: bool,
    /// The missed publications, oldest first (empty unless recovered).
    pub(crate) publications: Vec<Arc<Event>>,
}

/// A broker for [`Hub::with_broker`]: the memory broker ([`Default`]) or another one
/// (see [`crate::broker`]).
#[derive(Debug, Clone)]
pub struct BrokerHandle(pub(crate) Arc<dyn Broker>);

impl Default for BrokerHandle {
    /// The memory broker: one process, every channel in memory.
    fn default() -> Self {
        Self(Arc::new(MemoryBroker::new(None)))
    }
}

/// The hub: channels, presence, history and queues over a broker.
pub struct Hub {
    shared: Arc<Shared>,
    next_client: AtomicU64,
    /// Counters for `/metrics`.
    pub metrics: Arc<Metrics>,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub")
            .field("options", &self.shared.options)
            .field("broker", &self.shared.broker)
            .finish_non_exhaustive()
    }
}

impl Hub {
    /// A hub with `options` and the memory broker.
    pub fn new(options: HubOptions) -> Self {
        Self::with_broker(options, BrokerHandle::default())
    }

    /// A hub with `options` over `broker`. A broker that connects somewhere starts doing so
    /// in the background (see [`broker_up`](Self::broker_up)), and must be given inside a
    /// tokio runtime.
    pub fn with_broker(options: HubOptions, broker: BrokerHandle) -> Self {
        let metrics = Arc::new(Metrics::default());
        let shared = Shared::start(options, broker.0, metrics.clone());
        Self { shared, next_client: AtomicU64::new(1), metrics }
    }

    /// Whether the broker is reachable (always, for the memory broker).
    pub fn broker_up(&self) -> bool {
        self.metrics.broker_up.load(Ordering::Relaxed) == 1
    }

    /// The hub's options.
    pub fn options(&self) -> &HubOptions {
        &self.shared.options
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.shared.lock()
    }

    fn namespace(&self, channel: &str) -> Result<&NamespaceOptions, HubError> {
        let options = &self.shared.options;
        if channel.is_empty() || channel.len() > options.max_channel_length {
            return Err(HubError::UnknownChannel);
        }
        options.namespace_of(channel).ok_or(HubError::UnknownChannel)
    }

    /// Registers a connection. `user` may be empty.
    pub(crate) fn connect(
        &self,
        user: String,
        access: Access,
        outlet: Arc<dyn Outlet>,
    ) -> (ClientId, Arc<ClientInfo>) {
        let id = self.next_client.fetch_add(1, Ordering::Relaxed);
        let info = Arc::new(ClientInfo {
            client: self.shared.client_id(id).into(),
            user: user.into(),
            anonymous: access.anonymous,
        });
        let client = Client { info: info.clone(), access, outlet, channels: Default::default() };
        self.lock().clients.insert(id, client);
        self.metrics.connections.fetch_add(1, Ordering::Relaxed);
        (id, info)
    }

    /// Replaces a connection's access (after a token refresh).
    pub(crate) fn set_access(&self, client: ClientId, access: Access) {
        if let Some(c) = self.lock().clients.get_mut(&client) {
            c.access = access;
        }
    }

    /// Removes a connection from every channel (with leave events), every queue (its
    /// unacknowledged messages go back) and from the hub.
    pub(crate) fn disconnect(&self, client: ClientId) {
        self.shared.queues.disconnect(client);
        let mut state = self.lock();
        let Some(c) = state.clients.remove(&client) else { return };
        self.metrics.connections.fetch_sub(1, Ordering::Relaxed);
        let mut leaving = Vec::new();
        for channel in c.channels {
            leaving.extend(self.shared.leave(&mut state, &channel, client));
        }
        drop(state);
        self.shared.after(leaving, true);
    }

    fn allowed(access: &Access, ns: &NamespaceOptions, channel: &str) -> bool {
        if access.anonymous && !ns.allow_anonymous {
            return false;
        }
        access.channels.as_ref().is_none_or(|list| list.iter().any(|c| c == channel))
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
        if c.channels.len() >= self.shared.options.max_channels_per_connection {
            return Err(HubError::LimitExceeded);
        }
        Ok(c)
    }

    /// Subscribes a connection, recovering from `recover` when given. `on_subscribed` runs
    /// before any later event reaches the connection's outlet, so a front-end that queues
    /// its reply there keeps the order: reply, missed publications, then new events.
    pub(crate) async fn subscribe(
        &self,
        client: ClientId,
        channel: &str,
        recover: Option<StreamPosition>,
        on_subscribed: impl FnOnce(&Subscribed),
    ) -> Result<(), HubError> {
        let ns = self.namespace(channel)?;
        let (name, info) = {
            let mut guard = self.lock();
            let state = &mut *guard;
            let info = self.may_subscribe(state, client, ns, channel)?.info.clone();
            (self.shared.add_pending(state, client, channel), info)
        };
        let since = match &recover {
            Some(p) => Since::Position(&p.epoch, p.offset),
            None => Since::Nothing,
        };
        let broker = &self.shared.broker;
        let read = async {
            broker.subscribe(&name).await?;
            let read = broker.read(&name, since, ns).await?;
            if ns.presence {
                broker.presence_add(&name, std::slice::from_ref(&info)).await?;
            }
            Ok(read)
        }
        .await;
        let read = match self.shared.counted(read) {
            Ok(r) => r,
            Err(e) => {
                self.shared.drop_pending(client, &name);
                return Err(e);
            }
        };
        if self.shared.finish_subscribe(client, &name, recover, read, on_subscribed) && ns.join_leave {
            broker.announce(&name, true, &info).await;
        }
        Ok(())
    }

    /// Unsubscribes a connection (with a leave event where the namespace has them).
    pub(crate) fn unsubscribe(&self, client: ClientId, channel: &str) -> Result<(), HubError> {
        let mut state = self.lock();
        let c = state.clients.get_mut(&client).ok_or(HubError::NotSubscribed)?;
        let name = c.channels.take(channel).ok_or(HubError::NotSubscribed)?;
        let leaving = self.shared.leave(&mut state, &name, client);
        drop(state);
        self.shared.after(leaving.into_iter().collect(), true);
        Ok(())
    }

    /// The publishing client's info, if it may publish to `channel`.
    fn publisher(&self, client: ClientId, channel: &str) -> Result<Arc<ClientInfo>, HubError> {
        let state = self.lock();
        let c = state.clients.get(&client).ok_or(HubError::PermissionDenied)?;
        let ns = self.namespace(channel)?;
        if !ns.allow_publish || !Self::allowed(&c.access, ns, channel) {
            return Err(HubError::PermissionDenied);
        }
        Ok(c.info.clone())
    }

    /// Whether `client` may publish to `channel`.
    #[cfg(test)]
    fn check_publish(&self, client: ClientId, channel: &str) -> Result<(), HubError> {
        self.publisher(client, channel).map(|_| ())
    }

    /// Publishes `data` to `channel` for a client: checked against the namespace and the
    /// client's access, then as [`publish`](Self::publish), with the client's info. What
    /// the broker delivered of it meanwhile reaches the subscribers here before this returns
    /// (so the client's own subscription has it before the answer), where the server API's
    /// publications are batched until the tasks that are ready have run.
    pub(crate) async fn publish_from(
        &self,
        client: ClientId,
        channel: &str,
        data: Bytes,
    ) -> Result<StreamPosition, HubError> {
        let info = self.publisher(client, channel)?;
        let pos = self.publish(channel, data, Some(info)).await;
        // Its answer goes out after the publication reached this client's own subscription.
        self.shared.settle_now(channel);
        pos
    }

    /// Publishes `data` to `channel`: appended to history (where kept) and pushed to every
    /// subscriber, in offset order. For the server API, which may publish anywhere in a
    /// known namespace; clients go through the session layer.
    ///
    /// # Errors
    ///
    /// [`HubError::UnknownChannel`], or [`HubError::Unavailable`] when the broker cannot
    /// be reached.
    pub async fn publish(
        &self,
        channel: &str,
        data: Bytes,
        info: Option<Arc<ClientInfo>>,
    ) -> Result<StreamPosition, HubError> {
        let ns = self.namespace(channel)?;
        let message = Outgoing { data, info };
        let pos = self.shared.counted(self.shared.broker.publish(channel, message, ns).await)?;
        self.metrics.published.fetch_add(1, Ordering::Relaxed);
        Ok(pos)
    }

    /// Checks that `asker` (a client; `None` for the server API) is subscribed to `channel`.
    fn check_asker(&self, asker: Option<ClientId>, channel: &str) -> Result<(), HubError> {
        match asker {
            Some(id) if !self.lock().clients.get(&id).is_some_and(|c| c.channels.contains(channel)) => {
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
    /// [`HubError::UnknownChannel`], [`HubError::NotAvailable`] where presence is off,
    /// [`HubError::NotSubscribed`], or [`HubError::Unavailable`].
    pub async fn presence(
        &self,
        channel: &str,
        asker: Option<ClientId>,
    ) -> Result<Vec<Arc<ClientInfo>>, HubError> {
        if !self.namespace(channel)?.presence {
            return Err(HubError::NotAvailable);
        }
        self.check_asker(asker, channel)?;
        let mut list = self.shared.counted(self.shared.broker.presence(channel).await)?;
        list.sort_by(|a, b| a.client.cmp(&b.client));
        Ok(list)
    }

    /// The last `limit` publications of `channel` after offset `since` (all kept ones when
    /// `since` is `None`), with the channel's position. `asker` as for
    /// [`presence`](Self::presence).
    ///
    /// # Errors
    ///
    /// [`HubError::UnknownChannel`], [`HubError::NotAvailable`] without history,
    /// [`HubError::NotSubscribed`], or [`HubError::Unavailable`].
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
        self.check_asker(asker, channel)?;
        let since = Since::Offset(since.unwrap_or(0));
        let read = self.shared.counted(self.shared.broker.read(channel, since, ns).await)?;
        let name: Arc<str> = channel.into();
        let skip = read.entries.len().saturating_sub(limit);
        let epoch = read.position.epoch.clone();
        let events = read.entries.into_iter().skip(skip).map(|e| entry_event(&name, &epoch, e)).collect();
        Ok((read.position, events))
    }

    /// Whether `client` may consume from (or, with `send`, send to) the queue `name`.
    /// Queues follow the rules of the namespace their name is in, like channels.
    fn check_queue(&self, client: ClientId, name: &str, send: bool) -> Result<(), HubError> {
        let ns = self.namespace(name)?;
        let state = self.lock();
        let c = state.clients.get(&client).ok_or(HubError::PermissionDenied)?;
        if !Self::allowed(&c.access, ns, name) || (send && !ns.allow_publish) {
            return Err(HubError::PermissionDenied);
        }
        Ok(())
    }

    /// Adds a message to the work queue `queue` for `client`: checked as for a channel,
    /// then kept by the broker for a consumer on any node.
    pub(crate) async fn queue_send(
        &self,
        client: ClientId,
        queue: &str,
        body: Bytes,
        headers: Vec<(String, String)>,
    ) -> Result<Result<(), QueueError>, HubError> {
        self.check_queue(client, queue, true)?;
        let max = self.shared.options.queue_limits.max_messages;
        let sent = self.shared.broker.queue_send(queue, body, headers, max).await;
        if sent == Err(QueueError::Unavailable) {
            self.metrics.broker_errors.fetch_add(1, Ordering::Relaxed);
        }
        Ok(sent)
    }

    /// Makes `client`'s subscription `subscription` a consumer of `queue`.
    pub(crate) fn queue_subscribe(
        &self,
        client: ClientId,
        subscription: &str,
        queue: &str,
        mode: AckMode,
        outlet: Arc<dyn QueueOutlet>,
    ) -> Result<Result<(), QueueError>, HubError> {
        self.check_queue(client, queue, false)?;
        Ok(self.shared.queues.subscribe(client, subscription, queue, mode, outlet))
    }

    /// Ends a queue subscription (its unacknowledged messages go back).
    pub(crate) fn queue_unsubscribe(&self, client: ClientId, subscription: &str) -> Result<(), QueueError> {
        self.shared.queues.unsubscribe(client, subscription)
    }

    /// Acknowledges (`ack`) or gives back a queue message the client holds.
    pub(crate) fn queue_settle(&self, client: ClientId, tag: u64, ack: bool) -> Result<(), QueueError> {
        let queues = &self.shared.queues;
        if ack {
            queues.ack(client, tag)
        } else {
            queues.nack(client, tag)
        }
    }

    /// Returns once every queue settlement so far has taken effect in the broker (for a
    /// front-end's receipts).
    pub(crate) async fn settled(&self) {
        self.shared.broker.queues_settled().await;
    }

    /// Messages waiting in the local queue `queue` (for tests and metrics).
    pub fn queue_waiting(&self, queue: &str) -> usize {
        self.shared.queues.waiting(queue)
    }

    /// Every channel with subscribers here, with its subscriber count, by name.
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

    /// Disconnects every connection of the authenticated user `user` with `code` and
    /// `reason`; returns how many. Anonymous clients that chose the name `user` are not
    /// that user and stay connected.
    pub fn disconnect_user(&self, user: &str, code: u16, reason: &str) -> usize {
        self.disconnect_where(|c| !c.info.anonymous && *c.info.user == *user, code, reason)
    }

    /// Disconnects every connection (shutdown).
    pub fn disconnect_all(&self, code: u16, reason: &str) -> usize {
        self.disconnect_where(|_| true, code, reason)
    }

    /// Drops expired history everywhere, and channels left with nothing (a periodic task
    /// calls this; a dropped channel starts a new epoch when used again).
    pub fn sweep(&self) {
        self.shared.broker.sweep(&self.shared.options);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use event::FrameEncoding;
    use std::sync::atomic::AtomicUsize;
    use std::sync::Mutex;
    use tether::PreparedFrame;

    static TEST: FrameEncoding = FrameEncoding::new("test");

    /// Runs a memory-hub future (it never waits).
    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
    }

    /// Runs `f`, then lets the hub's fan-out task run (it goes once the tasks that are
    /// ready have run), until `done` holds; fails after 1,000 turns.
    fn block_on_until<F: std::future::Future>(f: F, done: impl Fn() -> bool) -> F::Output {
        block_on(async {
            let out = f.await;
            for _ in 0..1_000 {
                if done() {
                    return out;
                }
                tokio::task::yield_now().await;
            }
            panic!("the fan-out did not run");
        })
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
            let encode = |_: &Event| {
                self.encodes.fetch_add(1, Ordering::Relaxed);
                PreparedFrame::binary(b"encoded")
            };
            let frame = event.with_frame(&TEST, encode, PreparedFrame::clone);
            self.frames.lock().unwrap().push(frame);
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
        let all_have_it = || outlets.iter().all(|o| o.frames.lock().unwrap().len() == 1);
        block_on_until(hub.publish("room", Bytes::from_static(b"1"), None), all_have_it).unwrap();
        assert_eq!(encodes.load(Ordering::Relaxed), 1);
        // Every outlet holds the very same bytes (a shared buffer, not a copy).
        let first = outlets[0].frames.lock().unwrap()[0].wire().as_ptr();
        assert!(outlets.iter().all(|o| o.frames.lock().unwrap()[0].wire().as_ptr() == first));
    }

    /// Takes publications until it holds `room` of them, then refuses (a slow consumer).
    struct Bounded {
        offsets: Mutex<Vec<u64>>,
        room: usize,
        refused: AtomicUsize,
    }

    impl Outlet for Bounded {
        fn push(&self, event: &Arc<Event>) -> bool {
            let mut offsets = self.offsets.lock().unwrap();
            if offsets.len() == self.room {
                self.refused.fetch_add(1, Ordering::Relaxed);
                return false;
            }
            offsets.extend(event.publication().map(|p| p.offset));
            true
        }
        fn disconnect(&self, _: u16, _: &str) {}
    }

    /// `n` outlets subscribed to `channel`; the one at `slow` (if any) takes 5 publications.
    fn bounded_subscribers(hub: &Hub, channel: &str, n: usize, slow: Option<usize>) -> Vec<Arc<Bounded>> {
        let outlets: Vec<Arc<Bounded>> = (0..n)
            .map(|i| {
                let room = if Some(i) == slow { 5 } else { usize::MAX };
                Arc::new(Bounded { offsets: Mutex::new(Vec::new()), room, refused: AtomicUsize::new(0) })
            })
            .collect();
        for o in &outlets {
            let access = Access { anonymous: true, channels: None };
            let (id, _) = hub.connect(String::new(), access, o.clone());
            subscribe(hub, id, channel).unwrap();
        }
        outlets
    }

    /// A burst of publications goes out as one batch (each subscriber taking every
    /// publication in a row, `Outlet::push_all`): each subscriber gets each one once, in
    /// order; one that cannot keep up is asked once, gets nothing after, and leaves the
    /// channel.
    #[test]
    fn a_burst_reaches_every_subscriber_in_order_and_a_slow_one_leaves() {
        let mut options = HubOptions::default();
        options.default_namespace.allow_anonymous = true;
        let hub = Hub::new(options);
        // Enough subscribers for the channel's events to be batched (where the slow one comes
        // in the fan-out depends on the map's order).
        let outlets = bounded_subscribers(&hub, "burst", 150, Some(70));
        let everyone_done = || outlets.iter().all(|o| o.offsets.lock().unwrap().len() >= 20.min(o.room));
        let burst = async {
            // The memory broker never waits: all 20 are batched before the fan-out runs.
            for i in 0..20 {
                hub.publish("burst", Bytes::from(format!("{i}")), None).await.unwrap();
            }
        };
        block_on_until(burst, everyone_done);
        let all: Vec<u64> = (1..=20).collect();
        for (i, o) in outlets.iter().enumerate() {
            let got = o.offsets.lock().unwrap().clone();
            if i == 70 {
                assert_eq!(got, all[..5], "the slow subscriber");
                assert_eq!(o.refused.load(Ordering::Relaxed), 1, "asked once after it refused");
            } else {
                assert_eq!(got, all, "subscriber {i}");
            }
        }
        assert_eq!(hub.channels(), [("burst".to_string(), 149)]);
    }

    /// A runtime that ends before its fan-out task ran leaves nothing batched behind: the
    /// events go out as the task is dropped, and the next runtime's events too.
    #[test]
    fn a_batch_is_delivered_when_its_runtime_ends_first() {
        let mut options = HubOptions::default();
        options.default_namespace.allow_anonymous = true;
        let hub = Hub::new(options);
        // Enough subscribers for the channel's events to be batched.
        let outlets = bounded_subscribers(&hub, "ends", 100, None);
        // `block_on` returns as soon as the publish is answered, and drops its runtime with
        // the fan-out task not yet run.
        block_on(hub.publish("ends", Bytes::from_static(b"1"), None)).unwrap();
        assert!(outlets.iter().all(|o| *o.offsets.lock().unwrap() == [1]));
        block_on(hub.publish("ends", Bytes::from_static(b"2"), None)).unwrap();
        assert!(outlets.iter().all(|o| *o.offsets.lock().unwrap() == [1, 2]));
    }

    /// An event that comes while the runtime shuts down (a connection's task, dropped then,
    /// leaves its channels) is delivered, once: the pump task the event starts is dropped
    /// inside `spawn` while the hub's state is locked, and the hub settles the batch itself
    /// (its pump there locked the state again, and the shutdown hung).
    #[test]
    fn an_event_while_the_runtime_shuts_down_is_delivered() {
        let mut options = HubOptions::default();
        options.default_namespace.allow_anonymous = true;
        let hub = Arc::new(Hub::new(options));
        let outlets = bounded_subscribers(&hub, "down", 100, None);
        /// Publishes when dropped, as a session's end announces a leave.
        struct PublishOnDrop(Arc<Hub>);
        impl Drop for PublishOnDrop {
            fn drop(&mut self) {
                let publish = self.0.publish("down", Bytes::from_static(b"1"), None);
                assert!(futures_util::FutureExt::now_or_never(publish)
                    .expect("the memory broker never waits")
                    .is_ok());
            }
        }
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let guard = PublishOnDrop(hub.clone());
        rt.spawn(async move {
            let _guard = guard;
            std::future::pending::<()>().await;
        });
        rt.block_on(tokio::task::yield_now());
        let (done, ended) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            drop(rt);
            let _ = done.send(());
        });
        assert!(ended.recv_timeout(std::time::Duration::from_secs(10)).is_ok(), "the shutdown hung");
        assert!(outlets.iter().all(|o| *o.offsets.lock().unwrap() == [1]));
    }

    #[test]
    fn tokens_limit_channels() {
        let mut options = HubOptions::default();
        options.default_namespace.allow_publish = true;
        let hub = Hub::new(options);
        let outlet = Arc::new(Counting { encodes: Arc::default(), frames: Mutex::new(Vec::new()) });
        let access = Access { anonymous: false, channels: Some(Box::new(["mine".into()])) };
        let (id, _) = hub.connect("u".into(), access, outlet);
        assert_eq!(subscribe(&hub, id, "other"), Err(HubError::PermissionDenied));
        assert_eq!(hub.check_publish(id, "other"), Err(HubError::PermissionDenied));
        subscribe(&hub, id, "mine").unwrap();
        hub.check_publish(id, "mine").unwrap();
    }
}

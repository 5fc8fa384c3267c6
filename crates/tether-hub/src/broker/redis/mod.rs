//! The `redis` broker (feature `redis`): Redis holds what every node must agree on, and
//! carries publications between nodes. This module only talks to Redis; the hub core keeps
//! each node's own subscribers and decides what reaches them (crate::hub::fanout), as
//! with every broker.
//!
//! What lives in Redis, per channel `C` (with prefix `P`, `tether` by default):
//!
//! | key | type | what |
//! |---|---|---|
//! | `P:{C}:m` | hash | `e`: the epoch, `o`: the last offset; expires `meta_ttl` after the last use |
//! | `P:{C}:h` | stream | history: entry id `offset-1`, fields `t` (ms), `i` (publisher), `d` (data) |
//! | `P:{C}:p` | hash | presence: client id to publisher info |
//! | `P:{C}:x` | sorted set | presence expiry: client id scored by its deadline (ms) |
//!
//! and a Pub/Sub channel `P.C` that carries every publication (with its offset and epoch),
//! join and leave. One Lua script appends a publication to history, moves the offset and
//! publishes it, so every node sees a channel's publications in offset order, and a client
//! can recover on any node.
//!
//! Each node keeps one multiplexed RESP3 connection: commands, and Pub/Sub pushes for the
//! channels this node has subscribers in. When it drops, the node reconnects with backoff,
//! subscribes again, and the hub fills whatever it missed from history.

mod conn;
pub(crate) mod queue;
mod sentinel;
mod wire;

use super::{Answer, BoxFuture, Broker, BrokerEvents, Headers, Ns, Outgoing, Queued, Read, Since, Unused};
use crate::hub::event::{new_epoch, ClientInfo, StreamPosition};
use crate::hub::queue::Store;
use crate::hub::BrokerHandle;
use crate::options::HubOptions;
use bytes::Bytes;
use conn::RedisBroker;
use queue::RedisQueues;
use std::sync::{Arc, Weak};
use std::time::Duration;
pub(crate) use wire::{as_array, as_bytes, as_str, millis};

/// Settings of the `redis` broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisOptions {
    /// `redis://[user:password@]host:port[/db]`, `rediss://` for TLS, or
    /// `redis+sentinel://[user:password@]host:port[,host:port…]/service[/db]` for the master
    /// that Redis Sentinel names (asked again at every reconnect, so a failover is followed).
    pub url: String,
    /// Prefix of every key and Pub/Sub channel, so that several hubs can share a Redis.
    pub prefix: String,
    /// How long a client stays in presence after its node last refreshed it: a node that
    /// dies takes its clients out of presence after this long.
    pub presence_ttl: Duration,
    /// How long a channel's epoch and offset outlive its last publication or subscription.
    pub meta_ttl: Duration,
    /// How long a command may take before it counts as failed.
    pub command_timeout: Duration,
    /// Longest wait between two attempts to reconnect.
    pub max_backoff: Duration,
}

impl RedisOptions {
    /// Defaults for `url`: prefix `tether`, presence 30 s, channel state 24 h, commands 2 s,
    /// backoff up to 5 s.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            prefix: "tether".into(),
            presence_ttl: Duration::from_secs(30),
            meta_ttl: Duration::from_secs(24 * 3600),
            command_timeout: Duration::from_secs(2),
            max_backoff: Duration::from_secs(5),
        }
    }
}

/// A hub broker over Redis: checks the URL now; connects in the background once the hub
/// starts it (inside a tokio runtime), and again after every loss.
///
/// # Errors
///
/// An invalid Redis URL.
pub fn broker(options: RedisOptions) -> Result<BrokerHandle, String> {
    let conn = Arc::new(RedisBroker::new(options)?);
    let node = new_epoch();
    let queues = RedisQueues::new(conn.clone(), &node[..8]);
    Ok(BrokerHandle(Arc::new(Redis { node: format!("{}.", &node[..8]), conn, queues })))
}

/// The Redis broker: channels on [`RedisBroker`], queues on [`RedisQueues`].
struct Redis {
    /// This node's client id prefix.
    node: String,
    conn: Arc<RedisBroker>,
    queues: Arc<RedisQueues>,
}

impl std::fmt::Debug for Redis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redis").field("node", &self.node).field("conn", &self.conn).finish_non_exhaustive()
    }
}

impl Broker for Redis {
    fn start(&self, events: Weak<dyn BrokerEvents>) {
        if let Some(h) = events.upgrade() {
            h.lost();
        }
        self.conn.start(events.clone());
        self.queues.start(events);
    }

    fn node(&self) -> &str {
        &self.node
    }

    fn presence_ttl(&self) -> Option<Duration> {
        Some(self.conn.options().presence_ttl)
    }

    fn publish<'a>(&'a self, channel: &'a str, msg: Outgoing, ns: Ns<'a>) -> Answer<'a, StreamPosition> {
        Box::pin(async move { self.conn.publish(channel, &msg.data, msg.info.as_deref(), ns).await })
    }

    fn subscribe<'a>(&'a self, channel: &'a Arc<str>) -> Answer<'a, ()> {
        Box::pin(self.conn.ensure_subscribed(channel))
    }

    fn subscribe_all<'a>(&'a self, channels: &'a [Arc<str>]) -> Answer<'a, ()> {
        Box::pin(self.conn.subscribe_all(channels))
    }

    fn unsubscribe<'a>(&'a self, channel: &'a Arc<str>, still_unused: Unused<'a>) -> BoxFuture<'a, ()> {
        Box::pin(self.conn.release(channel, still_unused))
    }

    fn read<'a>(&'a self, channel: &'a str, since: Since<'a>, ns: Ns<'a>) -> Answer<'a, Read> {
        Box::pin(self.conn.read(channel, since, ns))
    }

    fn announce<'a>(&'a self, channel: &'a str, join: bool, info: &'a ClientInfo) -> BoxFuture<'a, ()> {
        Box::pin(self.conn.announce(channel, join, info))
    }

    fn presence_add<'a>(&'a self, channel: &'a str, clients: &'a [Arc<ClientInfo>]) -> Answer<'a, ()> {
        Box::pin(self.conn.presence_add(channel, clients))
    }

    fn presence_remove<'a>(&'a self, channel: &'a str, client: &'a str) -> BoxFuture<'a, ()> {
        Box::pin(self.conn.presence_remove(channel, client))
    }

    fn presence<'a>(&'a self, channel: &'a str) -> Answer<'a, Vec<Arc<ClientInfo>>> {
        Box::pin(self.conn.presence(channel))
    }

    fn queue_send<'a>(&'a self, queue: &'a str, body: Bytes, headers: Headers, max: usize) -> Queued<'a> {
        Box::pin(async move { self.queues.send(queue, &body, &headers, max).await })
    }

    fn queue_store(&self) -> Option<Arc<dyn Store>> {
        Some(self.queues.store())
    }

    fn queues_settled(&self) -> BoxFuture<'_, ()> {
        Box::pin(self.queues.flush())
    }

    fn sweep(&self, _options: &HubOptions) {
        // Redis expires history and channel state itself.
    }
}

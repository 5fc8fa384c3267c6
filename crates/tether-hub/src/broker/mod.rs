//! Brokers: where channels' offsets, epochs, history and presence live, and how
//! publications, joins and leaves reach every node. The hub core talks to a broker through
//! [`Broker`] only, and a broker hands what it carries back through [`BrokerEvents`]; the
//! memory broker (one process) and a broker shared by many nodes take the same path, so
//! delivery, gap detection and recovery are written once, in the hub core.
//!
//! A broker imports the hub's data types ([`crate::hub::event`]) and options, never the hub
//! core or a front-end.

pub(crate) mod memory;
#[cfg(feature = "redis")]
pub mod redis;

use crate::hub::event::{ClientInfo, HubError, Publication, StreamPosition};
use crate::hub::queue::{Arrival, QueueError, Store};
use crate::options::{HubOptions, NamespaceOptions};
use bytes::Bytes;
use std::sync::{Arc, Weak};
use std::time::Duration;

/// A broker's answer, later.
pub(crate) use futures_util::future::BoxFuture;

/// A broker's answer that may be a hub error.
pub(crate) type Answer<'a, T> = BoxFuture<'a, Result<T, HubError>>;

/// A broker's answer to a queue send.
pub(crate) type Queued<'a> = BoxFuture<'a, Result<(), QueueError>>;

/// The options of a channel's namespace.
pub(crate) type Ns<'a> = &'a NamespaceOptions;

/// Headers that travel with a queue message.
pub(crate) type Headers = Vec<(String, String)>;

/// Asked while no other subscription change runs: whether no one on this node wants a
/// channel any more.
pub(crate) type Unused<'a> = Box<dyn FnOnce() -> bool + Send + 'a>;

/// What a publish carries.
#[derive(Debug, Clone)]
pub(crate) struct Outgoing {
    /// The data.
    pub(crate) data: Bytes,
    /// The publishing client, if a client published.
    pub(crate) info: Option<Arc<ClientInfo>>,
}

/// A publication read from history.
#[derive(Debug)]
pub(crate) struct Entry {
    pub(crate) offset: u64,
    pub(crate) info: Option<Arc<ClientInfo>>,
    pub(crate) data: Bytes,
}

/// A channel's position and the publications after a given offset.
#[derive(Debug)]
pub(crate) struct Read {
    pub(crate) position: StreamPosition,
    pub(crate) entries: Vec<Entry>,
}

/// Where a read starts.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Since<'a> {
    /// No publications, only the position.
    Nothing,
    /// After `offset`, whatever the epoch (the history API).
    Offset(u64),
    /// After `offset` if the epoch is still `epoch`; nothing if it changed (recovery).
    Position(&'a str, u64),
    /// After `offset` if the epoch is still `epoch`; from the start of the new epoch if it
    /// changed (a node catching up after it lost its connection).
    CatchUp(&'a str, u64),
}

/// What the hub core asks of a broker. Calls come without the hub's lock held; a broker
/// may call [`BrokerEvents`] from inside any of them.
pub(crate) trait Broker: Send + Sync + std::fmt::Debug {
    /// Starts the broker's work (connecting, reading), handing what it receives to
    /// `events` while they live. Called once, inside a tokio runtime for brokers that
    /// need one.
    fn start(&self, events: Weak<dyn BrokerEvents>);

    /// The prefix of this node's client ids ("" when there is one node).
    fn node(&self) -> &str;

    /// How long a presence entry counts after it was last added: the hub core refreshes
    /// its own subscribers' entries three times per period, so that the clients of a node
    /// that dies drop out. `None`: entries count until removed.
    fn presence_ttl(&self) -> Option<Duration>;

    /// Publishes to `channel`: a new offset, history (where the namespace keeps it), and
    /// [`BrokerEvents::publication`] on every node that subscribed to the channel, in
    /// offset order.
    fn publish<'a>(&'a self, channel: &'a str, msg: Outgoing, ns: Ns<'a>) -> Answer<'a, StreamPosition>;

    /// Makes this node receive `channel`'s events, unless it does already.
    fn subscribe<'a>(&'a self, channel: &'a Arc<str>) -> Answer<'a, ()>;

    /// Makes this node receive every channel in `channels` (after a reconnect).
    fn subscribe_all<'a>(&'a self, channels: &'a [Arc<str>]) -> Answer<'a, ()>;

    /// Stops this node receiving `channel`'s events if `still_unused` says no one here
    /// wants them (asked while no other subscription change of the node runs).
    fn unsubscribe<'a>(&'a self, channel: &'a Arc<str>, still_unused: Unused<'a>) -> BoxFuture<'a, ()>;

    /// `channel`'s position (giving it an epoch if it has none) and the publications
    /// `since` asks for, oldest first.
    fn read<'a>(&'a self, channel: &'a str, since: Since<'a>, ns: Ns<'a>) -> Answer<'a, Read>;

    /// Announces a join (or a leave) to every node ([`BrokerEvents::join`]); best effort.
    fn announce<'a>(&'a self, channel: &'a str, join: bool, info: &'a ClientInfo) -> BoxFuture<'a, ()>;

    /// Adds (or refreshes) clients in `channel`'s presence.
    fn presence_add<'a>(&'a self, channel: &'a str, clients: &'a [Arc<ClientInfo>]) -> Answer<'a, ()>;

    /// Takes a client out of `channel`'s presence; best effort.
    fn presence_remove<'a>(&'a self, channel: &'a str, client: &'a str) -> BoxFuture<'a, ()>;

    /// Everyone in `channel`'s presence, on every node, by client id.
    fn presence<'a>(&'a self, channel: &'a str) -> Answer<'a, Vec<Arc<ClientInfo>>>;

    /// Adds a message to the work queue `queue` (for a consumer on any node; at most `max`
    /// held).
    fn queue_send<'a>(&'a self, queue: &'a str, body: Bytes, headers: Headers, max: usize) -> Queued<'a>;

    /// Where this node's queues keep messages that several nodes share, if anywhere.
    fn queue_store(&self) -> Option<Arc<dyn Store>>;

    /// Returns once every queue ACK and NACK so far has taken effect in the broker.
    fn queues_settled(&self) -> BoxFuture<'_, ()>;

    /// Drops what expired (history, by the namespaces' TTLs); called periodically.
    fn sweep(&self, options: &HubOptions);
}

/// What a broker hands back to the hub core: the events of the channels this node
/// subscribed to, and the state of its connection. (The memory broker, alone in the default
/// build, has no connection to lose and no shared store: some methods serve only brokers
/// behind features.)
#[allow(dead_code)]
pub(crate) trait BrokerEvents: Send + Sync {
    /// A publication in `channel`.
    fn publication(&self, channel: &str, publication: Publication);
    /// A client subscribed to `channel` (on some node).
    fn join(&self, channel: &str, info: Arc<ClientInfo>);
    /// A client left `channel` (on some node).
    fn leave(&self, channel: &str, info: Arc<ClientInfo>);
    /// The broker is reachable (again): the node subscribes again to its channels and
    /// catches up from history.
    fn connected(&self);
    /// The broker became unreachable.
    fn lost(&self);
    /// A message for a queue that this node alone holds (the memory broker).
    fn queue_message(
        &self,
        queue: &str,
        body: Bytes,
        headers: Vec<(String, String)>,
    ) -> Result<(), QueueError>;
    /// Messages a shared store handed to this node's consumers of `queue`.
    fn queue_arrivals(&self, queue: &str, arrivals: Vec<Arrival>);
}

#[cfg(test)]
mod tests;

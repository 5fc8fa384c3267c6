//! Work queues: each message goes to one consumer, round robin; a consumer that acknowledges
//! by hand holds its messages until it ACKs them, and gets them taken back (to the head of
//! the queue, marked redelivered) when it NACKs them, unsubscribes or disconnects.
//!
//! Like channels, queues know no wire format: a front-end (STOMP) hands in a
//! [`QueueOutlet`] per consumer and encodes each delivery itself.
//!
//! With a [`Store`] (a broker shared by several nodes), messages live in the store, shared by every node:
//! this node holds only what it took for its own consumers, tells the store which messages
//! were handled, and hands back what no consumer here wants any more.

use bytes::Bytes;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use super::event::ClientId;

/// Limits of the queues.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueLimits {
    /// Messages one queue holds at most, waiting and unacknowledged together; a send to a
    /// full queue is refused.
    pub max_messages: usize,
    /// Queues at most (a queue exists while it has messages or consumers).
    pub max_queues: usize,
}

impl Default for QueueLimits {
    fn default() -> Self {
        Self { max_messages: 10_000, max_queues: 10_000 }
    }
}

/// How a consumer acknowledges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AckMode {
    /// A message counts as handled once sent.
    Auto,
    /// An ACK or NACK covers that message and every earlier one of the consumer.
    Cumulative,
    /// An ACK or NACK covers only that message.
    Individual,
}

/// A message in a queue.
#[derive(Debug)]
pub(crate) struct QueueMessage {
    /// The queue's own sequence number (unique in the hub; for logs).
    #[allow(dead_code)]
    pub(crate) id: u64,
    /// The body.
    pub body: Bytes,
    /// Headers the sender gave that travel with the message (such as `content-type`).
    pub headers: Vec<(String, String)>,
    /// Where the message is kept in the [`Store`] (none in memory).
    pub(crate) key: Option<Arc<str>>,
}

/// A message taken from the [`Store`] for this node's consumers.
#[derive(Debug)]
pub(crate) struct Arrival {
    pub(crate) key: Arc<str>,
    pub(crate) body: Bytes,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) redelivered: bool,
}

/// Where queue messages are kept when several nodes share them (a shared broker). Calls
/// come under the queues' lock, in order, and must not block.
pub(crate) trait Store: Send + Sync {
    /// This node starts (`true`) or stops consuming `queue`.
    fn consume(&self, queue: &Arc<str>, on: bool);
    /// These messages were handled: the store forgets them.
    fn done(&self, queue: &Arc<str>, keys: Vec<Arc<str>>);
    /// No consumer here wants these messages any more (with whether each was delivered
    /// before): the store gives them to other nodes.
    fn give_back(&self, queue: &Arc<str>, messages: Vec<(Arc<QueueMessage>, bool)>);
}

/// One delivery of a message to a consumer.
#[derive(Debug, Clone)]
pub(crate) struct Delivery {
    /// The delivery tag, unique in the hub: what the consumer ACKs or NACKs.
    pub tag: u64,
    /// The queue.
    pub queue: Arc<str>,
    /// The message.
    pub message: Arc<QueueMessage>,
    /// Whether the message was delivered before (and NACKed or abandoned).
    pub redelivered: bool,
}

/// Where a queue sends a consumer's messages.
pub(crate) trait QueueOutlet: Send + Sync {
    /// Sends `delivery` to the subscription `subscription`. Returns `false` when the
    /// connection is gone or closing; the message then goes to another consumer.
    fn deliver(&self, subscription: &str, delivery: &Delivery) -> bool;
}

/// Why a queue operation was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum QueueError {
    /// The queue holds `max_messages` already.
    #[error("queue {0} is full ({1} messages)")]
    Full(String, usize),
    /// There are `max_queues` queues already.
    #[error("too many queues ({0})")]
    TooManyQueues(usize),
    /// The subscription id is in use on this connection.
    #[error("subscription id {0:?} is already in use")]
    DuplicateSubscription(String),
    /// No such subscription on this connection.
    #[error("no subscription {0:?}")]
    NoSubscription(String),
    /// The tag is not a message this connection holds unacknowledged.
    #[error("no unacknowledged message {0}")]
    UnknownTag(u64),
    /// The broker that keeps the queue cannot be reached: the message was not
    /// taken; try again.
    #[error("broker unavailable")]
    Unavailable,
}

struct Pending {
    message: Arc<QueueMessage>,
    redelivered: bool,
}

struct Consumer {
    client: ClientId,
    subscription: Arc<str>,
    mode: AckMode,
    outlet: Arc<dyn QueueOutlet>,
    /// Delivered and not yet acknowledged, by tag.
    unacked: BTreeMap<u64, Arc<QueueMessage>>,
}

#[derive(Default)]
struct Queue {
    pending: VecDeque<Pending>,
    consumers: Vec<Consumer>,
    /// The consumer that gets the next message.
    next: usize,
    /// Whether the [`Store`] was told that this node consumes the queue.
    consumed: bool,
}

impl Queue {
    fn held(&self) -> usize {
        self.pending.len() + self.consumers.iter().map(|c| c.unacked.len()).sum::<usize>()
    }
}

#[derive(Default)]
struct State {
    queues: HashMap<Arc<str>, Queue>,
    /// Which queue a delivery tag is in.
    tags: HashMap<u64, Arc<str>>,
    /// Which queue each (client, subscription) consumes.
    subscriptions: HashMap<(ClientId, Arc<str>), Arc<str>>,
    next_id: u64,
}

/// The hub's work queues (in memory).
pub(crate) struct Queues {
    state: Mutex<State>,
    limits: QueueLimits,
    store: OnceLock<Arc<dyn Store>>,
}

impl std::fmt::Debug for Queues {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queues").field("limits", &self.limits).finish_non_exhaustive()
    }
}

impl Queues {
    /// Empty queues with `limits`.
    pub(crate) fn new(limits: QueueLimits) -> Self {
        Self { state: Mutex::new(State::default()), limits, store: OnceLock::new() }
    }

    /// Keeps messages in `store` from now on (set once, before any use).
    pub(crate) fn set_store(&self, store: Arc<dyn Store>) {
        let _ = self.store.set(store);
    }

    fn store(&self) -> Option<&dyn Store> {
        self.store.get().map(|s| &**s)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn open<'a>(&self, state: &'a mut State, name: &str) -> Result<(Arc<str>, &'a mut Queue), QueueError> {
        if !state.queues.contains_key(name) && state.queues.len() >= self.limits.max_queues {
            return Err(QueueError::TooManyQueues(self.limits.max_queues));
        }
        let key: Arc<str> = match state.queues.get_key_value(name) {
            Some((k, _)) => k.clone(),
            None => name.into(),
        };
        Ok((key.clone(), state.queues.entry(key).or_default()))
    }

    /// Adds a message to `queue` and hands it to a consumer if one is ready.
    ///
    /// # Errors
    ///
    /// [`QueueError::Full`] or [`QueueError::TooManyQueues`].
    pub(crate) fn send(
        &self,
        queue: &str,
        body: Bytes,
        headers: Vec<(String, String)>,
    ) -> Result<(), QueueError> {
        let mut state = self.lock();
        let state = &mut *state;
        state.next_id += 1;
        let id = state.next_id;
        let max = self.limits.max_messages;
        let (name, q) = self.open(state, queue)?;
        if q.held() >= max {
            let empty = q.consumers.is_empty() && q.pending.is_empty();
            if empty {
                state.queues.remove(&name);
            }
            return Err(QueueError::Full(queue.to_owned(), max));
        }
        q.pending.push_back(Pending {
            message: Arc::new(QueueMessage { id, body, headers, key: None }),
            redelivered: false,
        });
        self.dispatch(state, &name);
        Ok(())
    }

    /// Hands messages taken from the store to this node's consumers of `queue`; gives them
    /// straight back when there are none (any more).
    pub(crate) fn arrive(&self, queue: &str, messages: Vec<Arrival>) {
        let mut state = self.lock();
        let state = &mut *state;
        let first = state.next_id + 1;
        state.next_id += messages.len() as u64;
        let pending = messages.into_iter().zip(first..).map(|(a, id)| Pending {
            message: Arc::new(QueueMessage { id, body: a.body, headers: a.headers, key: Some(a.key) }),
            redelivered: a.redelivered,
        });
        let name = state
            .queues
            .get_key_value(queue)
            .filter(|(_, q)| !q.consumers.is_empty())
            .map(|(k, _)| k.clone());
        match name.and_then(|n| Some((state.queues.get_mut(&n)?, n))) {
            Some((q, name)) => {
                q.pending.extend(pending);
                self.dispatch(state, &name);
            }
            None => {
                if let Some(store) = self.store() {
                    store.give_back(&queue.into(), pending.map(|p| (p.message, p.redelivered)).collect());
                }
            }
        }
    }

    /// Adds a consumer of `queue` for `client`'s `subscription`.
    ///
    /// # Errors
    ///
    /// [`QueueError::DuplicateSubscription`] or [`QueueError::TooManyQueues`].
    pub(crate) fn subscribe(
        &self,
        client: ClientId,
        subscription: &str,
        queue: &str,
        mode: AckMode,
        outlet: Arc<dyn QueueOutlet>,
    ) -> Result<(), QueueError> {
        let mut state = self.lock();
        let state = &mut *state;
        let subscription: Arc<str> = subscription.into();
        if state.subscriptions.contains_key(&(client, subscription.clone())) {
            return Err(QueueError::DuplicateSubscription(subscription.to_string()));
        }
        let (name, q) = self.open(state, queue)?;
        q.consumers.push(Consumer {
            client,
            subscription: subscription.clone(),
            mode,
            outlet,
            unacked: BTreeMap::new(),
        });
        if let (false, Some(store)) = (q.consumed, self.store()) {
            q.consumed = true;
            store.consume(&name, true);
        }
        state.subscriptions.insert((client, subscription), name.clone());
        self.dispatch(state, &name);
        Ok(())
    }

    /// Removes a consumer; its unacknowledged messages go back to the head of the queue.
    ///
    /// # Errors
    ///
    /// [`QueueError::NoSubscription`].
    pub(crate) fn unsubscribe(&self, client: ClientId, subscription: &str) -> Result<(), QueueError> {
        let mut state = self.lock();
        let key = (client, Arc::<str>::from(subscription));
        let name = state
            .subscriptions
            .remove(&key)
            .ok_or_else(|| QueueError::NoSubscription(subscription.to_owned()))?;
        self.remove_consumer(&mut state, &name, client, subscription);
        Ok(())
    }

    /// Removes every consumer of `client` (it disconnected).
    pub(crate) fn disconnect(&self, client: ClientId) {
        let mut state = self.lock();
        let mine: Vec<(Arc<str>, Arc<str>)> = state
            .subscriptions
            .iter()
            .filter(|((c, _), _)| *c == client)
            .map(|((_, s), q)| (s.clone(), q.clone()))
            .collect();
        for (sub, queue) in mine {
            state.subscriptions.remove(&(client, sub.clone()));
            self.remove_consumer(&mut state, &queue, client, &sub);
        }
    }

    fn remove_consumer(&self, state: &mut State, queue: &Arc<str>, client: ClientId, subscription: &str) {
        let Some(q) = state.queues.get_mut(queue) else { return };
        let Some(i) = q.consumers.iter().position(|c| c.client == client && &*c.subscription == subscription)
        else {
            return;
        };
        let consumer = q.consumers.remove(i);
        if q.next > i {
            q.next -= 1;
        }
        for (tag, message) in consumer.unacked.into_iter().rev() {
            state.tags.remove(&tag);
            q.pending.push_front(Pending { message, redelivered: true });
        }
        self.dispatch(state, queue);
    }

    /// Acknowledges the delivery `tag` of `client` (and, for a cumulative consumer, every
    /// earlier one of the same consumer).
    ///
    /// # Errors
    ///
    /// [`QueueError::UnknownTag`] when the client holds no such delivery.
    pub(crate) fn ack(&self, client: ClientId, tag: u64) -> Result<(), QueueError> {
        self.settle(client, tag, false)
    }

    /// Gives the delivery `tag` back (and, for a cumulative consumer, every earlier one):
    /// to the head of the queue, marked redelivered, for the next consumer in turn.
    ///
    /// # Errors
    ///
    /// [`QueueError::UnknownTag`] when the client holds no such delivery.
    pub(crate) fn nack(&self, client: ClientId, tag: u64) -> Result<(), QueueError> {
        self.settle(client, tag, true)
    }

    fn settle(&self, client: ClientId, tag: u64, requeue: bool) -> Result<(), QueueError> {
        let mut state = self.lock();
        let state = &mut *state;
        let name = state.tags.get(&tag).cloned().ok_or(QueueError::UnknownTag(tag))?;
        let q = state.queues.get_mut(&name).ok_or(QueueError::UnknownTag(tag))?;
        let consumer = q
            .consumers
            .iter_mut()
            .find(|c| c.client == client && c.unacked.contains_key(&tag))
            .ok_or(QueueError::UnknownTag(tag))?;
        let settled: Vec<(u64, Arc<QueueMessage>)> = match consumer.mode {
            AckMode::Cumulative => {
                let rest = consumer.unacked.split_off(&(tag + 1));
                std::mem::replace(&mut consumer.unacked, rest).into_iter().collect()
            }
            _ => consumer.unacked.remove_entry(&tag).into_iter().collect(),
        };
        let mut done = Vec::new();
        for (t, message) in settled.into_iter().rev() {
            state.tags.remove(&t);
            if requeue {
                q.pending.push_front(Pending { message, redelivered: true });
            } else {
                done.extend(message.key.clone());
            }
        }
        if let (false, Some(store)) = (done.is_empty(), self.store()) {
            store.done(&name, done);
        }
        self.dispatch(state, &name);
        Ok(())
    }

    /// Hands waiting messages to consumers in turn; drops the queue when it is left empty.
    /// With a store, a queue left without consumers gives its messages back to the store.
    fn dispatch(&self, state: &mut State, name: &Arc<str>) {
        let Some(q) = state.queues.get_mut(name) else { return };
        let store = self.store();
        let mut done = Vec::new();
        while !q.pending.is_empty() && !q.consumers.is_empty() {
            let i = q.next % q.consumers.len();
            q.next = i + 1;
            let Some(Pending { message, redelivered }) = q.pending.pop_front() else { break };
            state.next_id += 1;
            let delivery = Delivery { tag: state.next_id, queue: name.clone(), message, redelivered };
            let consumer = &mut q.consumers[i];
            if consumer.mode != AckMode::Auto {
                consumer.unacked.insert(delivery.tag, delivery.message.clone());
                state.tags.insert(delivery.tag, name.clone());
            }
            let delivered = consumer.outlet.deliver(&consumer.subscription, &delivery);
            if delivered && consumer.mode == AckMode::Auto {
                done.extend(delivery.message.key.clone());
            }
            if !delivered {
                // The connection is going: the message goes to someone else, and the
                // consumer stops getting any until its session removes it.
                let gone = q.consumers.remove(i);
                q.next = i;
                state.subscriptions.remove(&(gone.client, gone.subscription.clone()));
                state.tags.remove(&delivery.tag);
                q.pending.push_front(Pending { message: delivery.message, redelivered });
                for (tag, message) in gone.unacked.into_iter().rev() {
                    if tag != delivery.tag {
                        state.tags.remove(&tag);
                        q.pending.push_front(Pending { message, redelivered: true });
                    }
                }
            }
        }
        if let Some(store) = store {
            if !done.is_empty() {
                store.done(name, done);
            }
            if q.consumers.is_empty() {
                if q.consumed {
                    q.consumed = false;
                    store.consume(name, false);
                }
                let back: Vec<_> = q.pending.drain(..).map(|p| (p.message, p.redelivered)).collect();
                if !back.is_empty() {
                    store.give_back(name, back);
                }
            }
        }
        if q.pending.is_empty() && q.consumers.is_empty() {
            state.queues.remove(name);
        }
    }

    /// Messages waiting (not delivered) in `queue`.
    pub(crate) fn waiting(&self, queue: &str) -> usize {
        self.lock().queues.get(queue).map_or(0, |q| q.pending.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Recorder {
        got: Mutex<Vec<(String, u64, Bytes, bool)>>,
        refuse: std::sync::atomic::AtomicBool,
    }

    impl QueueOutlet for Recorder {
        fn deliver(&self, subscription: &str, d: &Delivery) -> bool {
            if self.refuse.load(std::sync::atomic::Ordering::Relaxed) {
                return false;
            }
            self.got.lock().unwrap().push((
                subscription.into(),
                d.tag,
                d.message.body.clone(),
                d.redelivered,
            ));
            true
        }
    }

    fn bodies(r: &Recorder) -> Vec<String> {
        r.got.lock().unwrap().iter().map(|(_, _, b, _)| String::from_utf8_lossy(b).into_owned()).collect()
    }

    fn send(q: &Queues, name: &str, body: &'static str) {
        q.send(name, Bytes::from_static(body.as_bytes()), Vec::new()).unwrap();
    }

    #[test]
    fn round_robin_and_waiting_messages() {
        let q = Queues::new(QueueLimits::default());
        send(&q, "jobs", "1");
        send(&q, "jobs", "2");
        assert_eq!(q.waiting("jobs"), 2);
        let (a, b) = (Arc::new(Recorder::default()), Arc::new(Recorder::default()));
        q.subscribe(1, "s", "jobs", AckMode::Auto, a.clone()).unwrap();
        assert_eq!(bodies(&a), ["1", "2"]);
        q.subscribe(2, "s", "jobs", AckMode::Auto, b.clone()).unwrap();
        for body in ["3", "4", "5", "6"] {
            send(&q, "jobs", body);
        }
        assert_eq!(bodies(&a).len() + bodies(&b).len(), 6);
        assert_eq!(bodies(&b).len(), 2);
    }

    #[test]
    fn nack_and_disconnect_redeliver() {
        let q = Queues::new(QueueLimits::default());
        let a = Arc::new(Recorder::default());
        q.subscribe(1, "s", "jobs", AckMode::Individual, a.clone()).unwrap();
        send(&q, "jobs", "x");
        send(&q, "jobs", "y");
        let tags: Vec<u64> = a.got.lock().unwrap().iter().map(|g| g.1).collect();
        q.nack(1, tags[0]).unwrap();
        // Back to the only consumer, marked redelivered, with a new tag.
        let last = a.got.lock().unwrap().last().cloned().unwrap();
        assert_eq!((&last.2[..], last.3), (&b"x"[..], true));
        assert_eq!(q.ack(1, tags[0]), Err(QueueError::UnknownTag(tags[0])));
        q.ack(1, last.1).unwrap();
        // y is still held; when its consumer goes, the next one gets it.
        let b = Arc::new(Recorder::default());
        q.subscribe(2, "t", "jobs", AckMode::Cumulative, b.clone()).unwrap();
        assert!(bodies(&b).is_empty());
        q.disconnect(1);
        assert_eq!(bodies(&b), ["y"]);
        assert!(b.got.lock().unwrap()[0].3);
    }

    #[test]
    fn cumulative_ack_covers_earlier_messages() {
        let q = Queues::new(QueueLimits::default());
        let a = Arc::new(Recorder::default());
        q.subscribe(1, "s", "jobs", AckMode::Cumulative, a.clone()).unwrap();
        for body in ["1", "2", "3"] {
            send(&q, "jobs", body);
        }
        let tags: Vec<u64> = a.got.lock().unwrap().iter().map(|g| g.1).collect();
        q.ack(1, tags[1]).unwrap();
        assert_eq!(q.ack(1, tags[0]), Err(QueueError::UnknownTag(tags[0])));
        q.unsubscribe(1, "s").unwrap();
        assert_eq!(q.waiting("jobs"), 1);
    }

    #[test]
    fn a_closing_consumer_loses_nothing() {
        let q = Queues::new(QueueLimits::default());
        let (a, b) = (Arc::new(Recorder::default()), Arc::new(Recorder::default()));
        q.subscribe(1, "s", "jobs", AckMode::Auto, a.clone()).unwrap();
        q.subscribe(2, "s", "jobs", AckMode::Auto, b.clone()).unwrap();
        a.refuse.store(true, std::sync::atomic::Ordering::Relaxed);
        for body in ["1", "2", "3"] {
            send(&q, "jobs", body);
        }
        assert_eq!(bodies(&b), ["1", "2", "3"]);
    }

    /// What the queues told their store.
    #[derive(Default)]
    struct Log(Mutex<Vec<String>>);

    impl Store for Log {
        fn consume(&self, queue: &Arc<str>, on: bool) {
            self.0.lock().unwrap().push(format!("consume {queue} {on}"));
        }
        fn done(&self, queue: &Arc<str>, keys: Vec<Arc<str>>) {
            self.0.lock().unwrap().push(format!("done {queue} {}", keys.join(",")));
        }
        fn give_back(&self, queue: &Arc<str>, messages: Vec<(Arc<QueueMessage>, bool)>) {
            let m: Vec<String> = messages
                .iter()
                .map(|(m, r)| format!("{}{}", m.key.as_deref().unwrap_or("?"), if *r { "r" } else { "" }))
                .collect();
            self.0.lock().unwrap().push(format!("back {queue} {}", m.join(",")));
        }
    }

    fn arrival(key: &str, redelivered: bool) -> Arrival {
        Arrival { key: key.into(), body: Bytes::from(key.to_owned()), headers: Vec::new(), redelivered }
    }

    #[test]
    fn a_store_hears_what_was_handled_and_gets_back_what_no_one_here_wants() {
        let q = Queues::new(QueueLimits::default());
        let log = Arc::new(Log::default());
        q.set_store(log.clone());
        let taken = |log: &Log| std::mem::take(&mut *log.0.lock().unwrap());
        // Nobody here consumes: what arrives goes straight back, as it came.
        q.arrive("jobs", vec![arrival("1-0", false), arrival("2-0", true)]);
        assert_eq!(taken(&log), ["back jobs 1-0,2-0r"]);
        let (a, b) = (Arc::new(Recorder::default()), Arc::new(Recorder::default()));
        q.subscribe(1, "s", "jobs", AckMode::Auto, a.clone()).unwrap();
        q.subscribe(2, "s", "jobs", AckMode::Individual, b.clone()).unwrap();
        assert_eq!(taken(&log), ["consume jobs true"]);
        // Round robin: an auto consumer's message is done when sent, the other's when ACKed.
        q.arrive("jobs", vec![arrival("3-0", false), arrival("4-0", true), arrival("5-0", false)]);
        assert_eq!(bodies(&a), ["3-0", "5-0"]);
        assert_eq!(bodies(&b), ["4-0"]);
        assert!(b.got.lock().unwrap()[0].3, "redelivered travels with the message");
        assert_eq!(taken(&log), ["done jobs 3-0,5-0"]);
        q.arrive("jobs", vec![arrival("6-0", false)]);
        assert_eq!(bodies(&b), ["4-0", "6-0"]);
        let tags: Vec<u64> = b.got.lock().unwrap().iter().map(|g| g.1).collect();
        q.ack(2, tags[0]).unwrap();
        assert_eq!(taken(&log), ["done jobs 4-0"]);
        // The last consumers leave: the held message goes back, marked delivered before.
        q.unsubscribe(1, "s").unwrap();
        assert!(taken(&log).is_empty());
        q.disconnect(2);
        assert_eq!(taken(&log), ["consume jobs false", "back jobs 6-0r"]);
        assert_eq!(q.waiting("jobs"), 0);
    }

    #[test]
    fn limits() {
        let q = Queues::new(QueueLimits { max_messages: 2, max_queues: 1 });
        send(&q, "a", "1");
        send(&q, "a", "2");
        assert_eq!(q.send("a", Bytes::new(), Vec::new()), Err(QueueError::Full("a".into(), 2)));
        assert_eq!(q.send("b", Bytes::new(), Vec::new()), Err(QueueError::TooManyQueues(1)));
        // Unacknowledged messages count too.
        let a = Arc::new(Recorder::default());
        q.subscribe(1, "s", "a", AckMode::Individual, a.clone()).unwrap();
        assert_eq!(q.send("a", Bytes::new(), Vec::new()), Err(QueueError::Full("a".into(), 2)));
        let tag = a.got.lock().unwrap()[0].1;
        q.ack(1, tag).unwrap();
        send(&q, "a", "3");
    }
}

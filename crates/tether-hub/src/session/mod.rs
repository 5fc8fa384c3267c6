//! The session layer: one connection's life in the hub, whatever its wire format. Every
//! front-end goes through a [`Session`] to authenticate (a token, or anonymous where the
//! namespaces allow), to act on channels and queues under the hub's permissions, to keep
//! its token fresh (expiry and refresh), and to send under the slow-consumer policy
//! ([`gate`]); when the session ends, the hub forgets the connection. A front-end only
//! translates its wire format to these calls and back.

pub(crate) mod admit;
pub mod auth;
pub(crate) mod gate;
pub(crate) mod link;

use crate::codes::close;
use crate::hub::queue::{AckMode, QueueError, QueueOutlet};
use crate::hub::{Access, ClientId, ClientInfo, Event, Hub, HubError, Outlet, StreamPosition, Subscribed};
use crate::metrics::Metrics;
use admit::Slot;
use auth::{AuthError, Authenticator, Identity};
use bytes::Bytes;
use futures_util::Stream;
use gate::SendGate;
use link::Tx;
use std::future::Future;
use std::num::NonZeroU64;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The close code and reason of a connection whose token ran out.
pub(crate) const EXPIRED: (u16, &str) = (close::TOKEN_EXPIRED, "token expired");

/// What every session of a server goes through: the hub and the authenticator, shared
/// (one pointer in each session where the two took three).
pub(crate) struct Door {
    pub(crate) hub: Arc<Hub>,
    pub(crate) auth: Arc<dyn Authenticator>,
}

/// One connection's session. Dropping it takes the connection out of the hub (its
/// channels, with leave events, and its queues, whose unacknowledged messages go back) and
/// gives back its place among the server's connections. 56 bytes, in every connection.
pub(crate) struct Session {
    door: Arc<Door>,
    client: Option<(ClientId, Arc<ClientInfo>)>,
    /// When the token runs out, unless refreshed: nanoseconds since the Unix epoch.
    expires: Option<NonZeroU64>,
    /// The connection's place (counted per address), where the server counts it.
    _slot: Option<Slot>,
}

impl Session {
    /// A session not yet connected, holding the connection's place `slot` until it ends.
    pub(crate) fn new(door: Arc<Door>, slot: Option<Slot>) -> Self {
        Self { door, client: None, expires: None, _slot: slot }
    }

    fn set_expires(&mut self, at: Option<SystemTime>) {
        self.expires = at.map(|t| {
            // Before the epoch is long past: 1 ns after it.
            let nanos = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
            NonZeroU64::new(u64::try_from(nanos).unwrap_or(u64::MAX)).unwrap_or(NonZeroU64::MIN)
        });
    }

    /// The hub's counters.
    pub(crate) fn metrics(&self) -> &Arc<Metrics> {
        &self.door.hub.metrics
    }

    /// Channels one connection may use at once.
    pub(crate) fn max_channels(&self) -> usize {
        self.door.hub.options().max_channels_per_connection
    }

    /// A sender under the hub's slow-consumer policy.
    pub(crate) fn gate(&self, sender: Tx) -> SendGate {
        SendGate::new(sender, self.door.hub.options().max_queued_bytes, self.door.hub.metrics.clone())
    }

    /// Who the client is: from its token, or anonymous under `name` (what an anonymous
    /// client may do is up to each namespace).
    pub(crate) fn authenticate(&self, token: Option<&str>, name: &str) -> Result<Identity, AuthError> {
        match token {
            Some(token) => self.door.auth.authenticate(token),
            None => Ok(Identity {
                user: name.to_owned(),
                access: Access { anonymous: true, channels: None },
                expires: None,
            }),
        }
    }

    /// Joins the hub as `identity`, with `outlet` for what the hub pushes.
    pub(crate) fn connect(&mut self, identity: Identity, outlet: Arc<dyn Outlet>) -> Arc<ClientInfo> {
        self.set_expires(identity.expires);
        let (id, info) = self.door.hub.connect(identity.user, identity.access, outlet);
        self.client = Some((id, info.clone()));
        info
    }

    /// The client, once connected.
    pub(crate) fn info(&self) -> Option<&Arc<ClientInfo>> {
        self.client.as_ref().map(|(_, info)| info)
    }

    fn id(&self) -> Result<ClientId, HubError> {
        self.client.as_ref().map(|(id, _)| *id).ok_or(HubError::PermissionDenied)
    }

    /// When the token expires, if it does.
    pub(crate) fn expires(&self) -> Option<SystemTime> {
        self.expires.map(|n| UNIX_EPOCH + Duration::from_nanos(n.get()))
    }

    /// When the session must end unless refreshed, on tokio's clock.
    pub(crate) fn deadline(&self) -> Option<tokio::time::Instant> {
        self.expires().map(|t| {
            let left = t.duration_since(SystemTime::now()).unwrap_or_default();
            tokio::time::Instant::now() + left
        })
    }

    /// Forgets the expiry (once the front-end has begun closing the connection for it).
    pub(crate) fn expiry_handled(&mut self) {
        self.expires = None;
    }

    /// Replaces the token with a new one for the same user.
    pub(crate) fn refresh(&mut self, token: &str) -> Result<(), AuthError> {
        let identity = self.door.auth.authenticate(token)?;
        let Some((id, info)) = &self.client else {
            return Err(AuthError::invalid("not connected"));
        };
        if info.anonymous {
            return Err(AuthError::invalid(
                "an anonymous connection has no token to refresh; connect with a token",
            ));
        }
        if *identity.user != *info.user || info.user.is_empty() {
            return Err(AuthError::invalid("the new token is for another user"));
        }
        self.door.hub.set_access(*id, identity.access);
        self.set_expires(identity.expires);
        Ok(())
    }

    /// Subscribes to `channel` (see [`Hub::subscribe`] for `on_subscribed`).
    pub(crate) async fn subscribe(
        &self,
        channel: &str,
        recover: Option<StreamPosition>,
        on_subscribed: impl FnOnce(&Subscribed),
    ) -> Result<(), HubError> {
        self.door.hub.subscribe(self.id()?, channel, recover, on_subscribed).await
    }

    /// Unsubscribes from `channel`.
    pub(crate) fn unsubscribe(&self, channel: &str) -> Result<(), HubError> {
        self.door.hub.unsubscribe(self.id().map_err(|_| HubError::NotSubscribed)?, channel)
    }

    /// Publishes to `channel` as this client.
    pub(crate) async fn publish(&self, channel: &str, data: Bytes) -> Result<StreamPosition, HubError> {
        self.door.hub.publish_from(self.id()?, channel, data).await
    }

    /// Who is in `channel` (the client must be subscribed to it).
    pub(crate) async fn presence(&self, channel: &str) -> Result<Vec<Arc<ClientInfo>>, HubError> {
        self.door.hub.presence(channel, Some(self.id()?)).await
    }

    /// `channel`'s history (the client must be subscribed to it).
    pub(crate) async fn history(
        &self,
        channel: &str,
        limit: usize,
        since: Option<u64>,
    ) -> Result<(StreamPosition, Vec<Arc<Event>>), HubError> {
        self.door.hub.history(channel, limit, since, Some(self.id()?)).await
    }

    /// `channel`'s latest publications, without being subscribed (what a front-end that
    /// replays history on subscribe reads first).
    pub(crate) async fn replay(
        &self,
        channel: &str,
        limit: usize,
    ) -> Result<(StreamPosition, Vec<Arc<Event>>), HubError> {
        self.id()?;
        self.door.hub.history(channel, limit, None, None).await
    }

    /// Adds a message to the work queue `queue`.
    pub(crate) async fn queue_send(
        &self,
        queue: &str,
        body: Bytes,
        headers: Vec<(String, String)>,
    ) -> Result<Result<(), QueueError>, HubError> {
        self.door.hub.queue_send(self.id()?, queue, body, headers).await
    }

    /// Makes subscription `subscription` a consumer of `queue`.
    pub(crate) fn queue_subscribe(
        &self,
        subscription: &str,
        queue: &str,
        mode: AckMode,
        outlet: Arc<dyn QueueOutlet>,
    ) -> Result<Result<(), QueueError>, HubError> {
        self.door.hub.queue_subscribe(self.id()?, subscription, queue, mode, outlet)
    }

    /// Ends a queue subscription.
    pub(crate) fn queue_unsubscribe(&self, subscription: &str) -> Result<(), QueueError> {
        let id = self.id().map_err(|_| QueueError::NoSubscription(subscription.to_owned()))?;
        self.door.hub.queue_unsubscribe(id, subscription)
    }

    /// Acknowledges (`ack`) or gives back a queue message.
    pub(crate) fn queue_settle(&self, tag: u64, ack: bool) -> Result<(), QueueError> {
        let id = self.id().map_err(|_| QueueError::UnknownTag(tag))?;
        self.door.hub.queue_settle(id, tag, ack)
    }

    /// Returns once what this session settled has taken effect in the broker.
    pub(crate) async fn settled(&self) {
        self.door.hub.settled().await;
    }

    /// Leaves the hub now (the connection may still be closing).
    pub(crate) fn end(&mut self) {
        if let Some((id, _)) = self.client.take() {
            self.door.hub.disconnect(id);
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.end();
    }
}

/// A connection's deadlines (`N` of them, each optional), kept across waits. They are
/// served by one registration with `tether`'s timer (the one thread behind every
/// connection's pings and timeouts) for the earliest of them, and boxed, only while one is
/// set: most connections have none, and a STOMP client with heart-beats both ways and a
/// token that expires has three. A boxed tokio `Sleep` for each took 112 bytes of heap;
/// here three take one allocation of 48 bytes.
pub(crate) struct Deadlines<const N: usize>(Option<Box<Times<N>>>);

struct Times<const N: usize> {
    /// Nanoseconds after [`base`] (8 bytes where an `Option<Instant>` takes 16); 0: none.
    at: [u64; N],
    timer: tether::timer::Deadline,
}

/// What [`Times`] count from: the first deadline's setting in this process.
fn base() -> std::time::Instant {
    static BASE: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    *BASE.get_or_init(std::time::Instant::now)
}

impl<const N: usize> Default for Deadlines<N> {
    fn default() -> Self {
        Self(None)
    }
}

impl<const N: usize> Deadlines<N> {
    /// Sets deadline `i` (`None`: none).
    pub(crate) fn set(&mut self, i: usize, deadline: Option<tokio::time::Instant>) {
        let Some(d) = deadline else {
            if let Some(times) = &mut self.0 {
                times.at[i] = 0;
                if times.at.iter().all(|&at| at == 0) {
                    self.0 = None;
                }
            }
            return;
        };
        // A time before the base (it is never later than now) is due at once: 1.
        let nanos = d.into_std().saturating_duration_since(base()).as_nanos();
        let at = u64::try_from(nanos).unwrap_or(u64::MAX).max(1);
        let times = self
            .0
            .get_or_insert_with(|| Box::new(Times { at: [0; N], timer: tether::timer::Deadline::new() }));
        times.at[i] = at;
    }

    /// `Ready` with the index of the first deadline (in order) that has passed; until one
    /// has, the task of `cx` is woken at the earliest.
    fn poll(&mut self, cx: &mut std::task::Context<'_>) -> Poll<usize> {
        let Some(times) = &mut self.0 else { return Poll::Pending };
        let Some(earliest) = times.at.iter().copied().filter(|&at| at != 0).min() else {
            return Poll::Pending;
        };
        let instant = |at: u64| base() + std::time::Duration::from_nanos(at);
        if times.timer.poll(instant(earliest), cx).is_pending() {
            return Poll::Pending;
        }
        // The timer is ready only once `earliest` has passed, so one is found.
        let now = std::time::Instant::now();
        Poll::Ready(times.at.iter().position(|&at| at != 0 && instant(at) <= now).unwrap_or_default())
    }
}

/// What a connection woke for.
pub(crate) enum Woke<T> {
    /// The next item of its stream (`None`: the stream ended).
    Next(Option<T>),
    /// The deadline at this index passed (the first one, if several did).
    Deadline(usize),
}

/// The next item of `read`, or the first of `deadlines` to pass, whichever comes first:
/// one poll function rather than a `select!`, whose futures and branch state would take
/// room in every idle connection's task (and a `poll_fn` itself, not an `async fn` around
/// one, which would hold the arguments twice).
pub(crate) fn next_or_deadline<'a, S: Stream + Unpin, const N: usize>(
    read: &'a mut S,
    deadlines: &'a mut Deadlines<N>,
) -> impl Future<Output = Woke<S::Item>> + 'a {
    std::future::poll_fn(move |cx| {
        if let Poll::Ready(item) = Pin::new(&mut *read).poll_next(cx) {
            return Poll::Ready(Woke::Next(item));
        }
        deadlines.poll(cx).map(Woke::Deadline)
    })
}

/// Waits until `deadline`, or forever without one (a `select!` arm for optional timers).
/// The timer is boxed: inline, it would be laid out in every connection's task, most of
/// which have no deadline.
pub(crate) async fn sleep_until_or_forever(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => Box::pin(tokio::time::sleep_until(d)).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::{next_or_deadline, Deadlines, Woke};
    use std::time::Duration;
    use tokio::time::Instant;

    /// A stream that never yields: only the deadlines can end a wait.
    fn silent() -> futures_util::stream::Pending<()> {
        futures_util::stream::pending()
    }

    #[test]
    fn a_session_keeps_its_expiry_to_the_nanosecond_in_56_bytes() {
        use super::{Door, Session};
        use crate::hub::Hub;
        use crate::options::HubOptions;
        use crate::session::auth::NoTokens;
        use std::sync::Arc;
        use std::time::{SystemTime, UNIX_EPOCH};
        let door =
            Arc::new(Door { hub: Arc::new(Hub::new(HubOptions::default())), auth: Arc::new(NoTokens) });
        let mut session = Session::new(door, None);
        assert_eq!(session.expires(), None);
        let at = UNIX_EPOCH + Duration::new(1_900_000_000, 123_456_789);
        session.set_expires(Some(at));
        assert_eq!(session.expires(), Some(at));
        // Long past is still an expiry, not none.
        session.set_expires(Some(UNIX_EPOCH - Duration::from_secs(5)));
        assert!(session.expires().is_some_and(|t| t <= SystemTime::now()));
        assert_eq!(session.deadline().map(|d| d <= Instant::now()), Some(true));
        session.expiry_handled();
        assert_eq!(session.deadline(), None);
        #[cfg(target_pointer_width = "64")]
        assert_eq!(std::mem::size_of::<Session>(), 56);
    }

    #[tokio::test]
    async fn the_earliest_deadline_wakes_and_is_named_by_its_index() {
        let mut d = Deadlines::<3>::default();
        let start = Instant::now();
        d.set(0, Some(start + Duration::from_secs(3600)));
        d.set(2, Some(start + Duration::from_millis(30)));
        let woke = next_or_deadline(&mut silent(), &mut d).await;
        assert!(matches!(woke, Woke::Deadline(2)), "the passed deadline is named");
        assert!(start.elapsed() >= Duration::from_millis(30), "not before its time");
        assert!(start.elapsed() < Duration::from_secs(60));
    }

    #[tokio::test]
    async fn a_deadline_moved_later_is_kept_to_its_new_time() {
        let mut d = Deadlines::<1>::default();
        let start = Instant::now();
        d.set(0, Some(start + Duration::from_millis(20)));
        // Registered for 20 ms, then moved to 80 ms: the early registration must not end
        // the wait.
        let first =
            tokio::time::timeout(Duration::from_millis(5), next_or_deadline(&mut silent(), &mut d)).await;
        assert!(first.is_err(), "nothing is due after 5 ms");
        d.set(0, Some(start + Duration::from_millis(80)));
        let woke = next_or_deadline(&mut silent(), &mut d).await;
        assert!(matches!(woke, Woke::Deadline(0)));
        assert!(start.elapsed() >= Duration::from_millis(80), "woke at {:?}", start.elapsed());
    }

    #[tokio::test]
    async fn cleared_deadlines_never_wake_and_free_their_box() {
        let mut d = Deadlines::<2>::default();
        let soon = Instant::now() + Duration::from_millis(10);
        d.set(0, Some(soon));
        d.set(1, Some(soon));
        assert!(d.0.is_some());
        d.set(0, None);
        assert!(d.0.is_some(), "one is still set");
        d.set(1, None);
        assert!(d.0.is_none(), "no deadline, no allocation");
        let wait =
            tokio::time::timeout(Duration::from_millis(60), next_or_deadline(&mut silent(), &mut d)).await;
        assert!(wait.is_err(), "a cleared deadline does not end the wait");
    }

    #[tokio::test]
    async fn the_stream_comes_first() {
        let mut d = Deadlines::<1>::default();
        d.set(0, Some(Instant::now()));
        let mut ready = futures_util::stream::iter([7]);
        assert!(matches!(next_or_deadline(&mut ready, &mut d).await, Woke::Next(Some(7))));
        assert!(matches!(next_or_deadline(&mut silent(), &mut d).await, Woke::Deadline(0)));
    }
}

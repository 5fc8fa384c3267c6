//! What flows through the hub: clients, publications and the events that carry them to
//! subscribers, with a cache of each event's encodings, one per registered encoding.
//! Brokers, the hub core and front-ends all use these types; they depend on nothing else.

use bytes::Bytes;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;
use tether::PreparedFrame;

/// A connection's id within this hub.
pub type ClientId = u64;

/// Who a client is, as others see it in presence, join/leave and publications.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientInfo {
    /// The connection's id (unique in this hub). Boxed strings, not `String`s: every
    /// connection has one of these, and a `String`'s capacity is a word more.
    pub client: Box<str>,
    /// The user (the token's `sub`, or the name an anonymous client chose; may be empty).
    pub user: Box<str>,
    /// Whether the client connected without a token: its `user` is only a display name it
    /// chose, never the same person as an authenticated user of that name.
    pub anonymous: bool,
}

/// What a connection may do, from its token (or anonymous).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Access {
    /// Whether the client connected without a token.
    pub anonymous: bool,
    /// Channels the token limits the client to (`None`: any the namespaces allow). A boxed
    /// slice: two words, not three, in every connection's entry in the hub.
    pub channels: Option<Box<[String]>>,
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

/// A channel's stream position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamPosition {
    /// Offset of the last publication.
    pub offset: u64,
    /// The channel's epoch: when it changes, offsets start again and history is gone.
    pub epoch: Arc<str>,
}

/// Why the hub refused a command. Front-ends map these to their codes (see
/// [`codes`](crate::codes)).
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
    /// The broker cannot be reached: nothing was done; try again.
    #[error("broker unavailable")]
    Unavailable,
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

static FRAME_ENCODINGS: AtomicUsize = AtomicUsize::new(0);
static PART_ENCODINGS: AtomicUsize = AtomicUsize::new(0);

/// What an encoding caches: whole frames or shared parts; each kind numbers its encodings.
pub trait EncodingKind: sealed::Sealed {
    /// The counter that hands out this kind's numbers.
    #[doc(hidden)]
    fn registry() -> &'static AtomicUsize;
}

mod sealed {
    pub trait Sealed {}
}

/// Whole WebSocket frames: an event encoded once, sent as is to every subscriber.
#[derive(Debug)]
pub enum Frame {}

/// The part of a message that all subscribers share, for protocols where each
/// subscriber's message differs in a few bytes (a STOMP `MESSAGE` names the subscription).
#[derive(Debug)]
pub enum Part {}

impl sealed::Sealed for Frame {}
impl sealed::Sealed for Part {}

impl EncodingKind for Frame {
    fn registry() -> &'static AtomicUsize {
        &FRAME_ENCODINGS
    }
}

impl EncodingKind for Part {
    fn registry() -> &'static AtomicUsize {
        &PART_ENCODINGS
    }
}

/// A front-end's encoding: declared once, as a `static`, by the front-end; every event
/// caches one encoding per declared encoding, made by the first subscriber that needs it
/// and shared by all the others. Numbers are handed out on first use, not by hand.
#[derive(Debug)]
pub struct Encoding<K: EncodingKind> {
    name: &'static str,
    slot: OnceLock<usize>,
    kind: PhantomData<K>,
}

/// An encoding of whole frames.
pub type FrameEncoding = Encoding<Frame>;
/// An encoding of shared parts.
pub type PartEncoding = Encoding<Part>;

impl<K: EncodingKind> Encoding<K> {
    /// An encoding named `name` (for debugging).
    pub const fn new(name: &'static str) -> Self {
        Self { name, slot: OnceLock::new(), kind: PhantomData }
    }

    /// The encoding's name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    fn slot(&self) -> usize {
        *self.slot.get_or_init(|| K::registry().fetch_add(1, Ordering::Relaxed))
    }
}

/// A [`Push`] in a channel, with a cache of its encodings.
#[derive(Debug)]
pub struct Event {
    /// The channel.
    pub channel: Arc<str>,
    /// What happened.
    pub push: Push,
    /// When it was made.
    pub time: Instant,
    /// One cell per frame encoding registered when the event was first encoded.
    frames: OnceLock<Box<[OnceLock<PreparedFrame>]>>,
    parts: OnceLock<Box<[OnceLock<Bytes>]>>,
}

/// The cell of encoding number `slot`, making the cells on first use: one per encoding
/// registered by then, which includes `slot`'s (an encoding registers before it encodes).
fn cell<'a, T>(
    cells: &'a OnceLock<Box<[OnceLock<T>]>>,
    slot: usize,
    registry: &AtomicUsize,
) -> Option<&'a OnceLock<T>> {
    cells.get_or_init(|| (0..registry.load(Ordering::Relaxed)).map(|_| OnceLock::new()).collect()).get(slot)
}

impl Event {
    /// A new event (its caches empty).
    pub(crate) fn new(channel: Arc<str>, push: Push) -> Arc<Self> {
        Arc::new(Self {
            channel,
            push,
            time: Instant::now(),
            frames: OnceLock::new(),
            parts: OnceLock::new(),
        })
    }

    /// Runs `use_frame` on the frame of this event in `encoding`, encoded on first use and
    /// shared after.
    pub fn with_frame<R>(
        &self,
        encoding: &FrameEncoding,
        encode: impl FnOnce(&Event) -> PreparedFrame,
        use_frame: impl FnOnce(&PreparedFrame) -> R,
    ) -> R {
        match cell(&self.frames, encoding.slot(), &FRAME_ENCODINGS) {
            Some(cell) => use_frame(cell.get_or_init(|| encode(self))),
            // An encoding first used after another encoded this event: not cached.
            None => use_frame(&encode(self)),
        }
    }

    /// Runs `use_part` on the shared part of this event's message in `encoding`, encoded on
    /// first use.
    pub fn with_part<R>(
        &self,
        encoding: &PartEncoding,
        encode: impl FnOnce(&Event) -> Bytes,
        use_part: impl FnOnce(&Bytes) -> R,
    ) -> R {
        match cell(&self.parts, encoding.slot(), &PART_ENCODINGS) {
            Some(cell) => use_part(cell.get_or_init(|| encode(self))),
            None => use_part(&encode(self)),
        }
    }

    /// The publication, if this event is one.
    pub fn publication(&self) -> Option<&Publication> {
        match &self.push {
            Push::Publication(p) => Some(p),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    static A: FrameEncoding = FrameEncoding::new("a");
    static B: FrameEncoding = FrameEncoding::new("b");
    static P: PartEncoding = PartEncoding::new("p");

    #[test]
    fn each_registered_encoding_has_its_own_cell() {
        // B is registered before A encodes: both get a cell.
        let _ = B.slot();
        let info = Arc::new(ClientInfo { client: "c1".into(), user: "".into(), anonymous: true });
        let event = Event::new("ch".into(), Push::Join(info));
        let a1 = event.with_frame(&A, |_| PreparedFrame::text("a"), PreparedFrame::clone);
        let a2 = event.with_frame(&A, |_| PreparedFrame::text("not used"), PreparedFrame::clone);
        let b = event.with_frame(&B, |_| PreparedFrame::text("b"), PreparedFrame::clone);
        assert_eq!(a1.wire().as_ptr(), a2.wire().as_ptr());
        assert_ne!(a1.wire(), b.wire());
        let p1 = event.with_part(&P, |_| Bytes::from_static(b"p"), Bytes::clone);
        assert_eq!(p1, event.with_part(&P, |_| Bytes::new(), Bytes::clone));
    }
}

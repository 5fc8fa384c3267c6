//! Engine.IO v4 packets and payloads.
//!
//! A packet is a type digit and data: `0` open, `1` close, `2` ping, `3` pong, `4` message,
//! `5` upgrade, `6` noop. Over WebSocket, a packet is one frame: a text frame is the digit and
//! the data, a binary frame is a message whose data is binary. Over HTTP long-polling, a
//! payload joins packets with the record separator (0x1e), and a binary message is written
//! `b` and its base64.

use base64::Engine as _;
use bytes::{BufMut, Bytes, BytesMut};
use tether::Utf8Bytes;

/// The record separator between the packets of a polling payload.
pub const SEPARATOR: u8 = 0x1e;

/// The data of a message packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Data {
    /// Text (UTF-8).
    Text(Utf8Bytes),
    /// Binary.
    Binary(Bytes),
}

impl Data {
    /// Its length in bytes.
    pub fn len(&self) -> usize {
        match self {
            Self::Text(t) => t.len(),
            Self::Binary(b) => b.len(),
        }
    }

    /// Whether it is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One Engine.IO packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet {
    /// `0`: the handshake, JSON (sent by the server only).
    Open(Utf8Bytes),
    /// `1`: the end of the session.
    Close,
    /// `2`: a ping, with its data (`probe` during an upgrade).
    Ping(Utf8Bytes),
    /// `3`: the answer to a ping, with the ping's data.
    Pong(Utf8Bytes),
    /// `4`: a message.
    Message(Data),
    /// `5`: the end of an upgrade to WebSocket.
    Upgrade,
    /// `6`: nothing (ends a pending poll during an upgrade).
    Noop,
}

/// Why a packet could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// An empty packet.
    #[error("empty packet")]
    Empty,
    /// A type that is not 0-6.
    #[error("unknown packet type {0:?}")]
    UnknownType(char),
    /// A `b` packet whose base64 does not decode.
    #[error("invalid base64 in a binary packet")]
    Base64,
    /// A polling payload that is not UTF-8.
    #[error("payload is not UTF-8")]
    Utf8,
}

impl Packet {
    /// The type digit.
    pub fn type_char(&self) -> char {
        match self {
            Self::Open(_) => '0',
            Self::Close => '1',
            Self::Ping(_) => '2',
            Self::Pong(_) => '3',
            Self::Message(_) => '4',
            Self::Upgrade => '5',
            Self::Noop => '6',
        }
    }

    /// A text packet (a WebSocket text frame, or one packet of a polling payload that does
    /// not start with `b`).
    ///
    /// # Errors
    ///
    /// [`DecodeError::Empty`] or [`DecodeError::UnknownType`].
    pub fn decode_text(text: Utf8Bytes) -> Result<Self, DecodeError> {
        let Some(&first) = text.as_bytes().first() else { return Err(DecodeError::Empty) };
        let data = || {
            // The rest after an ASCII digit is still UTF-8.
            Utf8Bytes::try_from_bytes(text.as_bytes().slice(1..)).unwrap_or_else(|_| Utf8Bytes::new())
        };
        Ok(match first {
            b'0' => Self::Open(data()),
            b'1' => Self::Close,
            b'2' => Self::Ping(data()),
            b'3' => Self::Pong(data()),
            b'4' => Self::Message(Data::Text(data())),
            b'5' => Self::Upgrade,
            b'6' => Self::Noop,
            _ => return Err(DecodeError::UnknownType(text.as_str().chars().next().unwrap_or('?'))),
        })
    }

    /// One packet of a polling payload: `b` and base64 for binary, else as
    /// [`decode_text`](Self::decode_text).
    ///
    /// # Errors
    ///
    /// As `decode_text`, and [`DecodeError::Base64`].
    pub fn decode_polling(text: Utf8Bytes) -> Result<Self, DecodeError> {
        if let Some(b64) = text.as_str().strip_prefix('b') {
            let bytes =
                base64::engine::general_purpose::STANDARD.decode(b64).map_err(|_| DecodeError::Base64)?;
            return Ok(Self::Message(Data::Binary(Bytes::from(bytes))));
        }
        Self::decode_text(text)
    }

    /// The packet as it is queued and sent: over WebSocket a frame, over polling a piece of
    /// a payload.
    pub fn to_frame(&self) -> Frame {
        match self {
            Self::Message(Data::Binary(b)) => Frame::Binary(b.clone()),
            other => {
                let mut out = String::with_capacity(1 + other.data_len());
                out.push(other.type_char());
                if let Self::Open(d) | Self::Ping(d) | Self::Pong(d) | Self::Message(Data::Text(d)) = other {
                    out.push_str(d);
                }
                Frame::Text(Utf8Bytes::from(out))
            }
        }
    }

    /// The packet as a WebSocket message: text for all but a binary message.
    pub fn to_ws(&self) -> tether::Message {
        self.to_frame().to_ws()
    }

    fn data_len(&self) -> usize {
        match self {
            Self::Open(d) | Self::Ping(d) | Self::Pong(d) => d.len(),
            Self::Message(d) => d.len(),
            _ => 0,
        }
    }
}

/// A packet ready to send, shared as is by every connection it goes to: the text form (the
/// type digit and the data), the same over WebSocket and in a polling payload, or the bytes
/// of a binary message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A text packet: `4hello`, `2`, `0{...}`.
    Text(Utf8Bytes),
    /// A binary message.
    Binary(Bytes),
    /// A text packet with its WebSocket frame encoded once for every session it goes to
    /// (a broadcast): WebSocket sessions queue the frame, polling ones its payload.
    Prepared(tether::PreparedFrame),
}

impl Frame {
    /// The close packet, `1`.
    pub const CLOSE: Self = Self::Text(Utf8Bytes::from_static("1"));
    /// A ping, `2`.
    pub const PING: Self = Self::Text(Utf8Bytes::from_static("2"));
    /// The noop packet, `6`.
    pub const NOOP: Self = Self::Text(Utf8Bytes::from_static("6"));

    /// The message packet `4<text>`.
    pub fn message(text: &str) -> Self {
        let mut out = String::with_capacity(1 + text.len());
        out.push('4');
        out.push_str(text);
        Self::Text(Utf8Bytes::from(out))
    }

    /// The message packet `4<text>`, its WebSocket frame encoded once for many sessions.
    pub fn prepared_message(text: &str) -> Self {
        let mut out = String::with_capacity(1 + text.len());
        out.push('4');
        out.push_str(text);
        Self::Prepared(tether::PreparedFrame::text(&out))
    }

    /// The text of a prepared frame (its payload, no copy).
    fn prepared_text(p: &tether::PreparedFrame) -> Bytes {
        let wire = p.wire();
        wire.slice(wire.len() - p.payload_len()..)
    }

    /// As a WebSocket message (no copy, but for a prepared frame, whose text is checked
    /// again: send those with `Sender::send_prepared`).
    pub fn to_ws(&self) -> tether::Message {
        match self {
            Self::Text(t) => tether::Message::Text(t.clone()),
            Self::Binary(b) => tether::Message::Binary(b.clone()),
            Self::Prepared(p) => tether::Message::Text(
                Utf8Bytes::try_from_bytes(Self::prepared_text(p)).unwrap_or_else(|_| Utf8Bytes::new()),
            ),
        }
    }

    /// Appends the polling form: the text as is, `b` and base64 for binary.
    pub fn encode_polling(&self, out: &mut BytesMut) {
        match self {
            Self::Text(t) => out.put_slice(t.as_bytes()),
            Self::Prepared(p) => out.put_slice(&Self::prepared_text(p)),
            Self::Binary(b) => {
                out.put_u8(b'b');
                let start = out.len();
                out.resize(start + base64_len(b.len()), 0);
                let _ = base64::engine::general_purpose::STANDARD.encode_slice(b, &mut out[start..]);
            }
        }
    }

    /// Its size in the polling form.
    pub fn polling_len(&self) -> usize {
        match self {
            Self::Text(t) => t.len(),
            Self::Binary(b) => 1 + base64_len(b.len()),
            Self::Prepared(p) => p.payload_len(),
        }
    }
}

fn base64_len(n: usize) -> usize {
    n.div_ceil(3).saturating_mul(4)
}

/// Reads a polling payload: packets joined by 0x1e.
///
/// # Errors
///
/// [`DecodeError::Utf8`] for a body that is not UTF-8, or a packet's error.
pub fn decode_payload(body: Bytes) -> Result<Vec<Packet>, DecodeError> {
    let text = Utf8Bytes::try_from_bytes(body).map_err(|_| DecodeError::Utf8)?;
    let bytes = text.as_bytes();
    let mut packets = Vec::new();
    let mut start = 0;
    // 0x1e is ASCII, so every piece between separators is UTF-8 too.
    for end in memchr_all(bytes).chain(std::iter::once(bytes.len())) {
        let piece = Utf8Bytes::try_from_bytes(bytes.slice(start..end)).map_err(|_| DecodeError::Utf8)?;
        packets.push(Packet::decode_polling(piece)?);
        start = end + 1;
    }
    Ok(packets)
}

fn memchr_all(bytes: &[u8]) -> impl Iterator<Item = usize> + '_ {
    bytes.iter().enumerate().filter(|(_, &b)| b == SEPARATOR).map(|(i, _)| i)
}

/// Writes packets as one polling payload.
pub fn encode_payload<'a>(frames: impl IntoIterator<Item = &'a Frame>) -> Bytes {
    let mut out = BytesMut::new();
    for (i, f) in frames.into_iter().enumerate() {
        if i > 0 {
            out.put_u8(SEPARATOR);
        }
        f.encode_polling(&mut out);
    }
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn text(s: &str) -> Utf8Bytes {
        Utf8Bytes::from(s)
    }

    #[test]
    fn reads_every_type() {
        assert_eq!(Packet::decode_text(text("1")), Ok(Packet::Close));
        assert_eq!(Packet::decode_text(text("2probe")), Ok(Packet::Ping(text("probe"))));
        assert_eq!(Packet::decode_text(text("3")), Ok(Packet::Pong(text(""))));
        assert_eq!(Packet::decode_text(text("4héllo")), Ok(Packet::Message(Data::Text(text("héllo")))));
        assert_eq!(Packet::decode_text(text("5")), Ok(Packet::Upgrade));
        assert_eq!(Packet::decode_text(text("6")), Ok(Packet::Noop));
        assert_eq!(Packet::decode_text(text("")), Err(DecodeError::Empty));
        assert_eq!(Packet::decode_text(text("abc")), Err(DecodeError::UnknownType('a')));
        assert_eq!(Packet::decode_text(text("7")), Err(DecodeError::UnknownType('7')));
        assert_eq!(Packet::decode_text(text("é")), Err(DecodeError::UnknownType('é')));
    }

    #[test]
    fn payload_with_text_and_binary() {
        let packets = decode_payload(Bytes::from_static(b"4hello\x1ebAQIDBA==")).unwrap();
        assert_eq!(
            packets,
            vec![
                Packet::Message(Data::Text(text("hello"))),
                Packet::Message(Data::Binary(Bytes::from_static(&[1, 2, 3, 4])))
            ]
        );
        let frames: Vec<Frame> = packets.iter().map(Packet::to_frame).collect();
        assert_eq!(&encode_payload(&frames)[..], b"4hello\x1ebAQIDBA==");
        assert_eq!(decode_payload(Bytes::from_static(b"bAQ!")), Err(DecodeError::Base64));
        assert_eq!(decode_payload(Bytes::from_static(b"4a\x1e")), Err(DecodeError::Empty));
        assert_eq!(decode_payload(Bytes::from_static(b"4\xff")), Err(DecodeError::Utf8));
    }

    #[test]
    fn prepared_frames_carry_the_same_text() {
        let p = Frame::prepared_message("x\u{e9}");
        let mut out = BytesMut::new();
        p.encode_polling(&mut out);
        assert_eq!(&out[..], "4x\u{e9}".as_bytes());
        assert_eq!(p.polling_len(), out.len());
        assert_eq!(p.to_ws(), tether::Message::text("4x\u{e9}"));
    }

    #[test]
    fn websocket_forms() {
        assert_eq!(Packet::Message(Data::Text(text("x"))).to_ws(), tether::Message::text("4x"));
        assert_eq!(
            Packet::Message(Data::Binary(Bytes::from_static(&[1]))).to_ws(),
            tether::Message::binary(Bytes::from_static(&[1]))
        );
        assert_eq!(Packet::Pong(text("probe")).to_ws(), tether::Message::text("3probe"));
    }

    fn packet() -> impl Strategy<Value = Packet> {
        let s = || any::<String>().prop_map(|s| Utf8Bytes::from(s.as_str()));
        prop_oneof![
            s().prop_map(Packet::Open),
            Just(Packet::Close),
            s().prop_map(Packet::Ping),
            s().prop_map(Packet::Pong),
            // A separator inside a text message would split it: Engine.IO forbids it there
            // (the client never sends one unescaped, see the proptest below).
            any::<String>()
                .prop_filter("no separator", |s| !s.contains('\u{1e}'))
                .prop_map(|s| Packet::Message(Data::Text(Utf8Bytes::from(s.as_str())))),
            proptest::collection::vec(any::<u8>(), 0..64)
                .prop_map(|b| Packet::Message(Data::Binary(b.into()))),
            Just(Packet::Upgrade),
            Just(Packet::Noop),
        ]
    }

    proptest! {
        #[test]
        fn payloads_round_trip(packets in proptest::collection::vec(packet(), 1..8)) {
            // Only messages and pings may carry a separator-free text; open/ping/pong data
            // with a separator would split as well, so keep them clean.
            let packets: Vec<Packet> = packets.into_iter().filter(|p| !matches!(p,
                Packet::Open(d) | Packet::Ping(d) | Packet::Pong(d) if d.contains('\u{1e}'))).collect();
            prop_assume!(!packets.is_empty());
            let frames: Vec<Frame> = packets.iter().map(Packet::to_frame).collect();
            let wire = encode_payload(&frames);
            let len: usize = frames.iter().map(Frame::polling_len).sum::<usize>() + frames.len() - 1;
            prop_assert_eq!(wire.len(), len);
            prop_assert_eq!(decode_payload(wire).unwrap(), packets);
        }

        #[test]
        fn websocket_round_trip(p in packet()) {
            let back = match p.to_ws() {
                tether::Message::Text(t) => Packet::decode_text(t).unwrap(),
                tether::Message::Binary(b) => Packet::Message(Data::Binary(b)),
                other => panic!("unexpected {other:?}"),
            };
            prop_assert_eq!(back, p);
        }

        #[test]
        fn any_payload_is_an_answer_not_a_panic(body in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode_payload(Bytes::from(body));
        }
    }
}
